//! The servers that have proven the key to this process: an address, a key id and a suite
//! whose handshake once completed. Towards these, under an encrypting suite, a new
//! connection's first call rides with the handshake's proof by default
//! ([`crate::ClientConfig::pipeline_first_call`]).
//!
//! Process-wide, so that a client made anew for each connection (a churn loop) benefits as
//! much as a long-lived one. Bounded: past [`MAX_PROVEN`] entries nothing more is noted, and
//! those servers' first calls simply wait for the proof.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, OnceLock};

use rpckit_proto::Suite;

use crate::connect::Target;

/// Most servers noted.
pub(crate) const MAX_PROVEN: usize = 4096;

/// One server, as a client reaches it: address, key id, a fingerprint of the key (so that a
/// new key under the same id, or a new server on a reused port, is not taken as proven), suite.
type Entry = (String, String, u64, u8);

fn table() -> MutexGuard<'static, HashSet<Entry>> {
    static PROVEN: OnceLock<Mutex<HashSet<Entry>>> = OnceLock::new();
    PROVEN
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        // A set of strings is valid whatever a panicking holder left half done.
        .unwrap_or_else(|e| e.into_inner())
}

fn entry(target: &Target, suite: Suite) -> Entry {
    // SipHash keyed at random once per process: the fingerprint says nothing outside it.
    static KEYS: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let fingerprint = KEYS
        .get_or_init(Default::default)
        .hash_one(target.key.expose());
    (
        target.addr.clone(),
        target.key_id.as_str().to_owned(),
        fingerprint,
        suite.code(),
    )
}

/// Notes that the server at `target` proved the key under `suite`.
pub(crate) fn note(target: &Target, suite: Suite) {
    let mut table = table();
    if table.len() < MAX_PROVEN {
        table.insert(entry(target, suite));
    }
}

/// Forgets `target` (its handshake failed: the next connection waits for the proof again).
pub(crate) fn forget(target: &Target, suite: Suite) {
    table().remove(&entry(target, suite));
}

/// Whether the server at `target` has proven the key under `suite` to this process.
pub(crate) fn has_proven(target: &Target, suite: Suite) -> bool {
    table().contains(&entry(target, suite))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpckit_proto::{KeyId, SecretKey};

    #[test]
    fn noted_servers_are_known_per_address_key_and_suite_until_forgotten() {
        let target = Target {
            addr: "127.0.0.1:1".into(),
            key_id: KeyId::new("proven-test").unwrap(),
            key: SecretKey::new(vec![1; 32]).unwrap(),
        };
        assert!(!has_proven(&target, Suite::Aes256Gcm));
        note(&target, Suite::Aes256Gcm);
        assert!(has_proven(&target, Suite::Aes256Gcm));
        assert!(!has_proven(&target, Suite::ChaCha20Poly1305));
        let other_key = Target {
            key: SecretKey::new(vec![2; 32]).unwrap(),
            ..target
        };
        assert!(!has_proven(&other_key, Suite::Aes256Gcm));
        let target = Target {
            key: SecretKey::new(vec![1; 32]).unwrap(),
            ..other_key
        };
        forget(&target, Suite::Aes256Gcm);
        assert!(!has_proven(&target, Suite::Aes256Gcm));
    }
}
