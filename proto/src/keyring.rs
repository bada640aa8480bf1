//! Shared keys: key ids, secrets, the keyring a server looks keys up in, and the keyring file.
//!
//! A keyring file is UTF-8 text, one key per line: `<key-id> <secret as hex>`; blank lines and
//! lines starting with `#` are ignored. Each client service gets its own key id; rotating a key
//! means adding a line with a new id, moving clients to it, then removing the old line — both
//! keys are valid in between. Secrets are never compiled into the code: they come from such a
//! file (written by `keygen`, mode 0600) or from the environment.

use std::collections::HashMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

/// Longest key id, in bytes.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Shortest secret accepted, in bytes (128 bits).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest secret accepted, in bytes.
pub const MAX_SECRET_LEN: usize = 64;
/// Length of secrets made by [`SecretKey::generate`].
pub const GENERATED_SECRET_LEN: usize = 32;

/// Why a key id, secret or keyring file was refused.
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
    /// A line of the keyring file is not `<key-id> <hex secret>`.
    #[error("{path}:{line}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The file holds no key.
    #[error("{0}: no key in keyring file")]
    Empty(String),
    /// The file or the keyring has no key with that id.
    #[error("no key with id {0:?} in the keyring")]
    NotFound(String),
    /// The keyring file already has a key with that id.
    #[error("{path}: already has a key with id {id:?}")]
    DuplicateId {
        /// The file.
        path: String,
        /// The key id.
        id: String,
    },
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
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

    /// Parses keyring text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, KeyError> {
        let mut ring = Keyring::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parse_err = |reason: String| KeyError::Parse {
                path: origin.to_owned(),
                line: index + 1,
                reason,
            };
            let mut fields = line.split_whitespace();
            let (Some(id), Some(secret), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(parse_err("expected `<key-id> <hex secret>`".into()));
            };
            let id = KeyId::new(id).map_err(|e| parse_err(e.to_string()))?;
            let key = SecretKey::from_hex(secret).map_err(|e| parse_err(e.to_string()))?;
            if ring.get(&id).is_some() {
                return Err(parse_err(format!("key id {id} appears twice")));
            }
            ring.insert(id, key);
        }
        if ring.is_empty() {
            return Err(KeyError::Empty(origin.to_owned()));
        }
        Ok(ring)
    }

    /// Reads a keyring file, under a shared lock (see [`add_new_key`]).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let text = read_locked(path).map_err(|source| KeyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Keyring::parse(&text, &path.display().to_string())
    }

    /// Renders the keyring in the file format.
    pub fn to_file_text(&self) -> String {
        let mut text = String::from("# rpckit keyring: <key-id> <hex secret>, one per line\n");
        for id in &self.order {
            if let Some(key) = self.keys.get(id) {
                text.push_str(&format!("{id} {}\n", key.to_hex()));
            }
        }
        text
    }
}

/// Environment variable that holds one secret, in hex, instead of a keyring file.
pub const KEY_ENV: &str = "RPC_KEY";

/// Environment variable naming the key id of the secret in [`KEY_ENV`].
pub const KEY_ID_ENV: &str = "RPC_KEY_ID";

/// The key given in the environment, if [`KEY_ENV`] is set: its id is `id`, else
/// [`KEY_ID_ENV`], else `default`. Errors name the variable at fault.
pub fn key_from_env(id: Option<&str>) -> Option<Result<(KeyId, SecretKey), String>> {
    let hex = std::env::var(KEY_ENV).ok()?;
    let id = match id {
        Some(id) => id.to_owned(),
        None => std::env::var(KEY_ID_ENV).unwrap_or_else(|_| "default".into()),
    };
    Some(
        KeyId::new(&id)
            .map_err(|e| format!("key id: {e}"))
            .and_then(|id| {
                let key = SecretKey::from_hex(&hex).map_err(|e| format!("{KEY_ENV}: {e}"))?;
                Ok((id, key))
            }),
    )
}

/// Where `rpc-server` and `rpc-client` look for the keyring when no path is given:
/// `$XDG_CONFIG_HOME/rpckit/keyring`, else `$HOME/.config/rpckit/keyring`, else
/// `.rpckit/keyring` in the current directory.
pub fn default_keyring_path() -> std::path::PathBuf {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty("XDG_CONFIG_HOME") {
        return std::path::PathBuf::from(dir).join("rpckit").join("keyring");
    }
    if let Some(home) = nonempty("HOME") {
        return std::path::PathBuf::from(home)
            .join(".config")
            .join("rpckit")
            .join("keyring");
    }
    std::path::PathBuf::from(".rpckit").join("keyring")
}

/// Whether a key file has any permission bit for group or others (Unix mode `& 0o077`):
/// readable, writable or executable by users other than its owner.
pub fn readable_by_others(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o077 != 0)
            .unwrap_or(false)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Reads the keyring file at `path` under a shared lock, so that an [`add_new_key`] running
/// at the same time is seen whole or not at all. A file system that cannot lock is read
/// without one: a server must not fail to start over a guard against a rare race.
fn read_locked(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let _ = file.lock_shared();
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// Creates a new keyring file at `path` holding one fresh random key named `id`, with mode
/// 0600, creating missing parent directories (mode 0700). Fails if the file exists (an
/// [`KeyError::Io`] of kind `AlreadyExists`).
///
/// The file appears whole or not at all: it is written and synced under a temporary name in
/// the same directory, then linked to `path`, which fails if `path` exists. Two runs racing to
/// create the same keyring leave one file, the winner's, and the loser gets `AlreadyExists`;
/// a server starting meanwhile never reads a half-written key.
pub fn write_new_key_file(path: &Path, id: &KeyId) -> Result<SecretKey, KeyError> {
    let io_err = |source| KeyError::Io {
        path: path.display().to_string(),
        source,
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent).map_err(io_err)?;
    }
    let key = SecretKey::generate();
    let mut ring = Keyring::new();
    ring.insert(id.clone(), key.clone());
    let file_name = path.file_name().unwrap_or_else(|| "keyring".as_ref());
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".{}.{:016x}.tmp",
        std::process::id(),
        rand::random::<u64>()
    ));
    let temp = parent.unwrap_or_else(|| Path::new(".")).join(temp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(ring.to_file_text().as_bytes())?;
        file.sync_all()?;
        std::fs::hard_link(&temp, path)
    });
    // The temporary name goes whatever happened; once linked, `path` holds the file.
    let _ = std::fs::remove_file(&temp);
    written.map_err(io_err)?;
    Ok(key)
}

/// A key made by [`add_new_key`].
#[derive(Debug)]
pub struct AddedKey {
    /// The new key.
    pub key: SecretKey,
    /// Whether the keyring file was made for it (else it was added to an existing one).
    pub created_file: bool,
}

/// Adds a fresh random key named `id` to the keyring file at `path` and returns it. A file
/// that does not exist is created as by [`write_new_key_file`]. An existing file must parse
/// (it may hold comments only) and have no key `id` yet; the new key is appended as one line,
/// and nothing else in the file changes (its mode included).
///
/// The check and the append happen under an exclusive lock on the file (and
/// [`Keyring::load`] reads under a shared one), so runs adding keys at the same time cannot
/// both add the same id, and a reader sees each line whole. (On a file system that cannot
/// lock files, both go ahead without the lock.)
pub fn add_new_key(path: &Path, id: &KeyId) -> Result<AddedKey, KeyError> {
    let origin = path.display().to_string();
    let io_err = |source| KeyError::Io {
        path: origin.clone(),
        source,
    };
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
    };
    let mut file = match open() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            match write_new_key_file(path, id) {
                Ok(key) => {
                    return Ok(AddedKey {
                        key,
                        created_file: true,
                    })
                }
                // Another run created it meanwhile: add to that one.
                Err(KeyError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    open().map_err(io_err)?
                }
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(io_err(e)),
        Ok(file) => file,
    };
    // Best effort, as in `read_locked`: where the file system cannot lock, adding works as
    // it did without the lock.
    let _ = file.lock();
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io_err)?;
    match Keyring::parse(&text, &origin) {
        Ok(ring) if ring.get(id).is_some() => {
            return Err(KeyError::DuplicateId {
                path: origin,
                id: id.to_string(),
            })
        }
        Ok(_) | Err(KeyError::Empty(_)) => {}
        Err(e) => return Err(e),
    }
    let key = SecretKey::generate();
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let line = format!("{separator}{id} {}\n", key.to_hex());
    file.write_all(line.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err)?;
    Ok(AddedKey {
        key,
        created_file: false,
    })
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
    fn keyring_file_round_trip() {
        let text = "# comment\n\nalpha 000102030405060708090a0b0c0d0e0f\nbeta 101112131415161718191a1b1c1d1e1f\n";
        let ring = Keyring::parse(text, "test").unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.first().unwrap().0.as_str(), "alpha");
        let again = Keyring::parse(&ring.to_file_text(), "again").unwrap();
        let beta = KeyId::new("beta").unwrap();
        assert_eq!(again.get(&beta), ring.get(&beta));
    }

    #[test]
    fn bad_keyrings_are_refused_with_the_line() {
        for (text, line) in [
            ("alpha\n", 1),
            ("alpha 00\n", 1),
            ("# c\nalpha zz\n", 2),
            ("bad/id 000102030405060708090a0b0c0d0e0f\n", 1),
            (
                "a 000102030405060708090a0b0c0d0e0f\na 000102030405060708090a0b0c0d0e0f\n",
                2,
            ),
        ] {
            match Keyring::parse(text, "t") {
                Err(KeyError::Parse { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Keyring::parse("# nothing\n", "t"),
            Err(KeyError::Empty(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = SecretKey::generate();
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }

    #[cfg(unix)]
    #[test]
    fn new_key_file_is_private_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rpckit-keytest-{}", std::process::id()));
        let path = dir.join("sub").join("keyring");
        let id = KeyId::new("dev").unwrap();
        let key = write_new_key_file(&path, &id).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!readable_by_others(&path));
        assert_eq!(Keyring::load(&path).unwrap().get(&id), Some(&key));
        match write_new_key_file(&path, &id) {
            Err(KeyError::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists)
            }
            other => panic!("want AlreadyExists, got {other:?}"),
        }
        assert_eq!(Keyring::load(&path).unwrap().get(&id), Some(&key));
        // No temporary file is left beside it, after a success or a refusal.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["keyring"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Runs `run(0..n)` on `n` threads released together, and returns their results in order.
    fn at_once<T: Send>(n: usize, run: impl Fn(usize) -> T + Sync) -> Vec<T> {
        let start = std::sync::Barrier::new(n);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..n)
                .map(|i| {
                    let (start, run) = (&start, &run);
                    scope.spawn(move || {
                        start.wait();
                        run(i)
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    #[cfg(unix)]
    #[test]
    fn keys_added_at_the_same_time_to_a_missing_file_all_land_once() {
        const RUNS: usize = 8;
        let dir = std::env::temp_dir().join(format!("rpckit-racekey-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("keyring");
        let added = at_once(RUNS, |i| {
            add_new_key(&path, &KeyId::new(&format!("svc{i}")).unwrap()).unwrap()
        });
        // One run created the file; every other one added its key to it, none was lost.
        assert_eq!(added.iter().filter(|a| a.created_file).count(), 1);
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.len(), RUNS);
        for (i, a) in added.iter().enumerate() {
            let id = KeyId::new(&format!("svc{i}")).unwrap();
            assert_eq!(ring.get(&id), Some(&a.key));
        }
        // The same id from every run at once: exactly one adds it.
        let dup = KeyId::new("shared").unwrap();
        let outcomes = at_once(RUNS, |_| match add_new_key(&path, &dup) {
            Ok(_) => true,
            Err(KeyError::DuplicateId { .. }) => false,
            Err(e) => panic!("{e}"),
        });
        assert_eq!(outcomes.iter().filter(|added| **added).count(), 1);
        assert_eq!(Keyring::load(&path).unwrap().len(), RUNS + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_added_to_an_existing_file_once_per_id() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rpckit-addkey-{}", std::process::id()));
        let path = dir.join("keyring");
        let (dev, billing) = (KeyId::new("dev").unwrap(), KeyId::new("billing").unwrap());
        // Created when missing, private.
        let first = add_new_key(&path, &dev).unwrap().key;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second id is appended; the first key is unchanged.
        let second = add_new_key(&path, &billing).unwrap().key;
        let ring = Keyring::load(&path).unwrap();
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.get(&dev), Some(&first));
        assert_eq!(ring.get(&billing), Some(&second));
        // The same id again is refused, and the file is left as it was.
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(
            add_new_key(&path, &billing),
            Err(KeyError::DuplicateId { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        // A last line without its newline, and a file of comments only, are fine.
        std::fs::write(&path, "# keys\ndev 000102030405060708090a0b0c0d0e0f").unwrap();
        add_new_key(&path, &billing).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().len(), 2);
        std::fs::write(&path, "# no keys yet\n").unwrap();
        add_new_key(&path, &dev).unwrap();
        assert_eq!(Keyring::load(&path).unwrap().len(), 1);
        // A file that does not parse is not touched.
        std::fs::write(&path, "not a keyring line\n").unwrap();
        assert!(matches!(
            add_new_key(&path, &dev),
            Err(KeyError::Parse { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"not a keyring line\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
