//! The keys a running server accepts, replaceable while it runs: key rotation without a
//! restart. Each handshake reads the keyring once, when it starts (an `Arc` clone under a read
//! lock, never on the per-call path); [`KeyringHandle::replace`] and
//! [`KeyringHandle::reload`] swap in a new one, which every handshake that starts afterwards
//! uses. Connections already authenticated are not touched: a connection whose key was
//! removed keeps running until it closes (its client's next connection is refused).

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, RwLock};

use rpckit_keyfile::KeyfileError;
use rpckit_proto::Keyring;
use tracing::{info, warn};

use crate::stats::ServerStats;

/// A handle on a server's keyring (from [`crate::Server::keyring_handle`]); clones share it.
#[derive(Debug, Clone)]
pub struct KeyringHandle {
    /// The keyring in force; a handshake takes a clone of the `Arc` when it starts.
    current: Arc<RwLock<Arc<Keyring>>>,
    /// Where reloads are counted (`keyring_reloads`, `keyring_reload_failures`).
    stats: Arc<ServerStats>,
}

impl KeyringHandle {
    /// A handle holding `keyring`, counting reloads in `stats`.
    pub(crate) fn new(keyring: Keyring, stats: Arc<ServerStats>) -> Self {
        KeyringHandle {
            current: Arc::new(RwLock::new(Arc::new(keyring))),
            stats,
        }
    }

    /// The keys in force now.
    pub fn current(&self) -> Arc<Keyring> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `keyring` in force: handshakes that start from now on use it; connections already
    /// authenticated keep running, whatever key they used. Counted as a reload in
    /// [`crate::StatsSnapshot::keyring_reloads`] and logged with the key ids (never the
    /// secrets). An empty keyring is accepted here and refuses every client.
    pub fn replace(&self, keyring: Keyring) {
        let ids = key_ids(&keyring);
        self.swap(keyring);
        info!(keys = ?ids, "keyring replaced");
    }

    /// Reads the keyring file at `path` and puts it in force, as [`KeyringHandle::replace`].
    /// A file that cannot be read, does not parse or holds no key is refused: the keys in
    /// force stay, the failure is logged and counted in
    /// [`crate::StatsSnapshot::keyring_reload_failures`], and returned.
    pub fn reload(&self, path: &Path) -> Result<(), KeyfileError> {
        match rpckit_keyfile::load(path) {
            Ok(keyring) => {
                let ids = key_ids(&keyring);
                self.swap(keyring);
                info!(path = %path.display(), keys = ?ids, "keyring reloaded");
                if rpckit_keyfile::readable_by_others(path) {
                    warn!(path = %path.display(), "keyring file is readable by other users; run chmod 600 on it");
                }
                Ok(())
            }
            Err(e) => {
                self.stats
                    .keyring_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!(path = %path.display(), error = %e, "keyring reload failed; the keys in force stay");
                Err(e)
            }
        }
    }

    /// Swaps `keyring` in and counts the reload.
    fn swap(&self, keyring: Keyring) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keyring);
        self.stats.keyring_reloads.fetch_add(1, Ordering::Relaxed);
    }
}

/// The key ids of `keyring`, for a log line.
fn key_ids(keyring: &Keyring) -> Vec<String> {
    keyring.ids().map(|id| id.as_str().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpckit_proto::{KeyId, SecretKey};

    fn ring(ids: &[&str]) -> Keyring {
        let mut ring = Keyring::new();
        for id in ids {
            ring.insert(KeyId::new(id).unwrap(), SecretKey::generate());
        }
        ring
    }

    fn ids(handle: &KeyringHandle) -> Vec<String> {
        key_ids(&handle.current())
    }

    #[test]
    fn replace_is_seen_by_every_clone_and_counted() {
        let stats = Arc::new(ServerStats::default());
        let handle = KeyringHandle::new(ring(&["old"]), stats.clone());
        let clone = handle.clone();
        let before = handle.current();
        clone.replace(ring(&["new"]));
        assert_eq!(ids(&handle), ["new"]);
        assert_eq!(
            key_ids(&before),
            ["old"],
            "a handshake's copy stays as it was"
        );
        let s = stats.snapshot();
        assert_eq!((s.keyring_reloads, s.keyring_reload_failures), (1, 0));
    }

    #[test]
    fn a_file_that_does_not_parse_keeps_the_keys_in_force() {
        let dir = std::env::temp_dir().join(format!("rpckit-ring-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keyring");
        let stats = Arc::new(ServerStats::default());
        let handle = KeyringHandle::new(ring(&["old"]), stats.clone());

        std::fs::write(&path, "this is not a keyring line\n").unwrap();
        assert!(matches!(
            handle.reload(&path),
            Err(KeyfileError::Parse { .. })
        ));
        std::fs::write(&path, "# only a comment\n").unwrap();
        assert!(matches!(handle.reload(&path), Err(KeyfileError::Empty(_))));
        assert!(handle.reload(&dir.join("missing")).is_err());
        assert_eq!(ids(&handle), ["old"]);

        std::fs::write(&path, rpckit_keyfile::to_file_text(&ring(&["a", "b"]))).unwrap();
        handle.reload(&path).unwrap();
        let mut now = ids(&handle);
        now.sort();
        assert_eq!(now, ["a", "b"]);
        let s = stats.snapshot();
        assert_eq!((s.keyring_reloads, s.keyring_reload_failures), (1, 3));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
