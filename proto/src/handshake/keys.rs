//! Session keys (PROTOCOL.md §5.2): one HKDF-SHA256 Extract over the shared secret with both
//! nonces as salt, then one Expand per suite, direction and purpose, each with its own label.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::proof::transcript_hash;
use super::NONCE_LEN;
use crate::keyring::{KeyId, SecretKey};
use crate::session::aead::IV_LEN;
use crate::session::DirectionKey;
use crate::suite::Suite;

/// HKDF info prefix of suite 1's client-to-server key.
const INFO_C2S: &[u8] = b"rpckit-v1 c2s";
/// HKDF info prefix of suite 1's server-to-client key.
const INFO_S2C: &[u8] = b"rpckit-v1 s2c";
/// HKDF labels of the encrypting suites' keys and IVs.
const AEAD_C2S_KEY: &[u8] = b"rpckit-v1 aead c2s key";
/// See [`AEAD_C2S_KEY`].
const AEAD_C2S_IV: &[u8] = b"rpckit-v1 aead c2s iv";
/// See [`AEAD_C2S_KEY`].
const AEAD_S2C_KEY: &[u8] = b"rpckit-v1 aead s2c key";
/// See [`AEAD_C2S_KEY`].
const AEAD_S2C_IV: &[u8] = b"rpckit-v1 aead s2c iv";

/// Suite 1's two session keys, derived from the shared key and both nonces. Zeroized on drop.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    /// Tags frames from client to server.
    pub client_to_server: [u8; 32],
    /// Tags frames from server to client.
    pub server_to_client: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

/// An encrypting suite's keys and IVs, one of each per direction. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AeadKeys {
    /// Seals frames from client to server.
    pub client_to_server_key: [u8; 32],
    /// IV of the client-to-server nonces.
    pub client_to_server_iv: [u8; IV_LEN],
    /// Seals frames from server to client.
    pub server_to_client_key: [u8; 32],
    /// IV of the server-to-client nonces.
    pub server_to_client_iv: [u8; IV_LEN],
}

impl std::fmt::Debug for AeadKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKeys(..)")
    }
}

/// HKDF-Extract with salt = nonce_c | nonce_s and IKM = the shared key.
fn extract(key: &SecretKey, nonce_c: &[u8; NONCE_LEN], nonce_s: &[u8; NONCE_LEN]) -> Hkdf<Sha256> {
    let mut salt = [0u8; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(nonce_c);
    salt[NONCE_LEN..].copy_from_slice(nonce_s);
    Hkdf::<Sha256>::new(Some(&salt), key.expose())
}

/// HKDF-Expand of `N` bytes with info = the concatenation of `info`.
fn expand<const N: usize>(hk: &Hkdf<Sha256>, info: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    // At most 32 bytes, far below HKDF-SHA256's 8160-byte maximum, so this cannot fail.
    hk.expand_multi_info(info, &mut out)
        .expect("32 bytes is a valid HKDF output length");
    out
}

/// Suite 1: HKDF-SHA256, salt = nonce_c | nonce_s, IKM = the shared key, info = direction
/// label | key id length | key id, 32 bytes per direction.
pub fn derive_session_keys(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> SessionKeys {
    let hk = extract(key, nonce_c, nonce_s);
    let id = key_id.as_str().as_bytes();
    let len = [id.len() as u8];
    SessionKeys {
        client_to_server: expand(&hk, &[INFO_C2S, &len, id]),
        server_to_client: expand(&hk, &[INFO_S2C, &len, id]),
    }
}

/// Suites 2 and 3: the same Extract, then info = label | suite byte | transcript hash, with
/// one label per direction and purpose: a 32-byte key and a 12-byte IV per direction.
pub fn derive_aead_keys(
    suite: Suite,
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> AeadKeys {
    let hk = extract(key, nonce_c, nonce_s);
    let suite_byte = [suite.code()];
    let th = transcript_hash(suite, key_id, nonce_c, nonce_s);
    AeadKeys {
        client_to_server_key: expand(&hk, &[AEAD_C2S_KEY, &suite_byte, &th]),
        client_to_server_iv: expand(&hk, &[AEAD_C2S_IV, &suite_byte, &th]),
        server_to_client_key: expand(&hk, &[AEAD_S2C_KEY, &suite_byte, &th]),
        server_to_client_iv: expand(&hk, &[AEAD_S2C_IV, &suite_byte, &th]),
    }
}

/// Both directions' keying material for `suite`: (client to server, server to client).
pub(crate) fn direction_keys(
    suite: Suite,
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> (DirectionKey, DirectionKey) {
    if suite == Suite::HmacSha256 {
        let keys = derive_session_keys(key, key_id, nonce_c, nonce_s);
        return (
            DirectionKey::hmac(&keys.client_to_server),
            DirectionKey::hmac(&keys.server_to_client),
        );
    }
    let keys = derive_aead_keys(suite, key, key_id, nonce_c, nonce_s);
    (
        DirectionKey {
            suite,
            key: keys.client_to_server_key,
            iv: keys.client_to_server_iv,
        },
        DirectionKey {
            suite,
            key: keys.server_to_client_key,
            iv: keys.server_to_client_iv,
        },
    )
}
