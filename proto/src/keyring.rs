//! Shared keys in memory: key ids, secrets, and the keyring a server looks keys up in.
//!
//! Each client service gets its own key id; rotating a key means adding a key with a new id,
//! moving clients to it, then removing the old one — both keys are valid in between. Secrets
//! are never compiled into the code. Reading and writing keyring files, and keys from the
//! environment, are the `rpckit-keyfile` crate's job.

use std::collections::HashMap;
use std::fmt;

/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Shortest secret accepted, in bytes (128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 64;
/// Length of secrets made by [`SecretKey::generate`].
pub const GENERATED_SECRET_LEN: usize = 32;

/// Why a key id or secret was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key id is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid key id {0:?}: use 1 to 64 characters from A-Z a-z 0-9 . _ -")]
    InvalidKeyId(String),
    /// The secret is too short or too long.
    #[error("secret of {0} bytes: a secret must have {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes")]
    BadSecretLength(usize),
    /// The secret is not hex.
    #[error("secret is not valid hex")]
    BadHex,
}

/// A validated key id: 1 to 64 bytes of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// Validates `id`.
    pub fn new(id: &str) -> Result<Self, KeyError> {
        let valid = !id.is_empty()
            && id.len() <= MAX_KEY_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if valid {
            Ok(KeyId(id.to_owned()))
        } else {
            Err(KeyError::InvalidKeyId(id.to_owned()))
        }
    }

    /// Validates raw bytes read from the wire.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        match std::str::from_utf8(bytes) {
            Ok(s) => KeyId::new(s),
            Err(_) => Err(KeyError::InvalidKeyId(
                String::from_utf8_lossy(bytes).into_owned(),
            )),
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A shared secret. Its `Debug` output does not show the bytes, and its bytes are zeroized
/// when it is dropped (each clone zeroizes its own copy).
#[derive(Clone, PartialEq, Eq, zeroize::ZeroizeOnDrop)]
pub struct SecretKey(Vec<u8>);

impl SecretKey {
    /// Wraps raw secret bytes (16 to 64 of them).
    pub fn new(bytes: Vec<u8>) -> Result<Self, KeyError> {
        if (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&bytes.len()) {
            Ok(SecretKey(bytes))
        } else {
            Err(KeyError::BadSecretLength(bytes.len()))
        }
    }

    /// Parses a hex secret (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadHex)?;
        SecretKey::new(bytes)
    }

    /// A new random secret of [`GENERATED_SECRET_LEN`] bytes from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; GENERATED_SECRET_LEN];
        crate::handshake::os_random(&mut bytes);
        SecretKey(bytes)
    }

    /// The secret as hex, for writing a key file.
    pub fn to_hex(&self) -> String {
        hex::encode(&self.0)
    }

    /// The raw secret.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// The keys a server accepts, by key id.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    /// Keys by id, in file order for listing.
    keys: HashMap<KeyId, SecretKey>,
    /// Ids in the order they were added.
    order: Vec<KeyId>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds or replaces the key `id`.
    pub fn insert(&mut self, id: KeyId, key: SecretKey) {
        if self.keys.insert(id.clone(), key).is_none() {
            self.order.push(id);
        }
    }

    /// The key with this id.
    pub fn get(&self, id: &KeyId) -> Option<&SecretKey> {
        self.keys.get(id)
    }

    /// Key ids in the order they were added.
    pub fn ids(&self) -> impl Iterator<Item = &KeyId> {
        self.order.iter()
    }

    /// The first key added, if any (a client's default when no id is named).
    pub fn first(&self) -> Option<(&KeyId, &SecretKey)> {
        let id = self.order.first()?;
        Some((id, self.keys.get(id)?))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_validated() {
        assert!(KeyId::new("billing-2026.a_b").is_ok());
        assert!(KeyId::new("").is_err());
        assert!(KeyId::new("has space").is_err());
        assert!(KeyId::new(&"x".repeat(65)).is_err());
        assert!(KeyId::from_bytes(&[0xff]).is_err());
    }

    #[test]
    fn secrets_are_validated() {
        assert!(SecretKey::from_hex("000102030405060708090a0b0c0d0e0f").is_ok());
        assert!(matches!(
            SecretKey::from_hex("00"),
            Err(KeyError::BadSecretLength(1))
        ));
        assert!(matches!(SecretKey::from_hex("zz"), Err(KeyError::BadHex)));
        let key = SecretKey::generate();
        assert_eq!(SecretKey::from_hex(&key.to_hex()).unwrap(), key);
    }

    #[test]
    fn keyring_keeps_insertion_order() {
        let mut ring = Keyring::new();
        assert!(ring.is_empty() && ring.first().is_none());
        let (a, b) = (KeyId::new("a").unwrap(), KeyId::new("b").unwrap());
        ring.insert(b.clone(), SecretKey::generate());
        ring.insert(a.clone(), SecretKey::generate());
        ring.insert(b.clone(), SecretKey::generate());
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.ids().collect::<Vec<_>>(), [&b, &a]);
        assert_eq!(ring.first().unwrap().0, &b);
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SecretKey::generate();
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
