//! The two proofs (PROTOCOL.md §5.1): HMAC-SHA256 under the shared secret over a label, the
//! role, the suite and what identifies this handshake.
//!
//! Suite 1 keeps its original input (key id and both nonces); the encrypting suites use the
//! SHA-256 transcript of both hellos instead. Both cover every byte of both hellos that can
//! vary (the rest are constants each side checks), so a relay that rewrites the suite byte,
//! the key id or a nonce makes both proofs fail. Suite 1's input is kept so that it stays
//! byte-compatible with peers that speak only suite 1.

use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::hello::{client_hello_for, server_hello_for};
use super::{NONCE_LEN, PROOF_LEN};
use crate::keyring::{KeyId, SecretKey};
use crate::session::HmacSha256;
use crate::suite::Suite;

/// Label at the start of every proof input.
const PROOF_LABEL: &[u8] = b"rpckit-v1 proof";
/// Role byte of the client's proof.
pub(crate) const ROLE_CLIENT: u8 = b'C';
/// Role byte of the server's proof.
pub(crate) const ROLE_SERVER: u8 = b'S';

/// SHA-256 of the ClientHello followed by the accepting ServerHello, as they are on the wire
/// for `suite`, `key_id` and the two nonces.
pub fn transcript_hash(
    suite: Suite,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(client_hello_for(suite, nonce_c, key_id));
    hash.update(server_hello_for(suite, nonce_s));
    hash.finalize().into()
}

/// The bytes a proof covers: label, role, suite, then for suite 1 the key id and both
/// nonces, for the other suites the transcript hash.
pub(crate) fn proof_input(
    suite: Suite,
    role: u8,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> Vec<u8> {
    let id = key_id.as_str().as_bytes();
    let mut out = Vec::with_capacity(PROOF_LABEL.len() + 3 + id.len() + 2 * NONCE_LEN);
    out.extend_from_slice(PROOF_LABEL);
    out.push(role);
    out.push(suite.code());
    if suite == Suite::HmacSha256 {
        out.push(id.len() as u8);
        out.extend_from_slice(id);
        out.extend_from_slice(nonce_c);
        out.extend_from_slice(nonce_s);
    } else {
        out.extend_from_slice(&transcript_hash(suite, key_id, nonce_c, nonce_s));
    }
    out
}

pub(crate) fn proof_mac(
    key: &SecretKey,
    suite: Suite,
    role: u8,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac =
        <HmacSha256 as KeyInit>::new_from_slice(key.expose()).expect("HMAC takes any key length");
    mac.update(&proof_input(suite, role, key_id, nonce_c, nonce_s));
    mac
}

/// The client's proof under suite 1.
pub fn client_proof(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    client_proof_for(Suite::HmacSha256, key, key_id, nonce_c, nonce_s)
}

/// The server's proof under suite 1.
pub fn server_proof(
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    server_proof_for(Suite::HmacSha256, key, key_id, nonce_c, nonce_s)
}

/// The client's proof under `suite`: HMAC-SHA256 under the shared key of the client-role
/// proof input.
pub fn client_proof_for(
    suite: Suite,
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    proof_mac(key, suite, ROLE_CLIENT, key_id, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}

/// The server's proof under `suite`: HMAC-SHA256 under the shared key of the server-role
/// proof input.
pub fn server_proof_for(
    suite: Suite,
    key: &SecretKey,
    key_id: &KeyId,
    nonce_c: &[u8; NONCE_LEN],
    nonce_s: &[u8; NONCE_LEN],
) -> [u8; PROOF_LEN] {
    proof_mac(key, suite, ROLE_SERVER, key_id, nonce_c, nonce_s)
        .finalize()
        .into_bytes()
        .into()
}
