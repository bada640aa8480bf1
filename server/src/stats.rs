//! Live counters of a running server, shared by the accept loop and every connection.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters of a running server. Read them with [`ServerStats::snapshot`].
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections open (authenticated or not).
    pub(crate) connections: AtomicUsize,
    /// Connections whose client's proof is not checked yet (in the handshake).
    pub(crate) unauthenticated: AtomicUsize,
    /// Calls whose handler is running, over all connections.
    pub(crate) calls_in_flight: AtomicUsize,
    /// Calls whose handler ran, to an answer or cancelled, since start (calls refused before
    /// their handler ran, such as `Overloaded` or an undecodable request, are not counted).
    pub(crate) calls_total: AtomicU64,
    /// Handshakes that failed since start.
    pub(crate) handshake_failures: AtomicU64,
    /// Connections refused before the handshake (caps, penalties) since start.
    pub(crate) refused: AtomicU64,
    /// Unauthenticated connections evicted to make room for new ones since start.
    pub(crate) evicted: AtomicU64,
    /// Keyrings put in force while running (reloaded or replaced) since start.
    pub(crate) keyring_reloads: AtomicU64,
    /// Keyring reloads refused (the file could not be read or parsed) since start.
    pub(crate) keyring_reload_failures: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open.
    pub connections: usize,
    /// Connections whose client's proof is not checked yet (in the handshake).
    pub unauthenticated: usize,
    /// Calls whose handler is running.
    pub calls_in_flight: usize,
    /// Calls whose handler ran, to an answer or cancelled, since start (calls refused before
    /// their handler ran are not counted).
    pub calls_total: u64,
    /// Handshakes that failed since start.
    pub handshake_failures: u64,
    /// Connections refused before the handshake since start.
    pub refused: u64,
    /// Unauthenticated connections evicted to make room for new ones since start
    /// (`ServerConfig::max_unauthenticated`).
    pub evicted: u64,
    /// Keyrings put in force while running ([`crate::KeyringHandle`]) since start.
    pub keyring_reloads: u64,
    /// Keyring reloads refused since start: the keys in force stayed.
    pub keyring_reload_failures: u64,
}

impl ServerStats {
    /// Reads all counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            connections: self.connections.load(Ordering::Relaxed),
            unauthenticated: self.unauthenticated.load(Ordering::Relaxed),
            calls_in_flight: self.calls_in_flight.load(Ordering::Relaxed),
            calls_total: self.calls_total.load(Ordering::Relaxed),
            handshake_failures: self.handshake_failures.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            keyring_reloads: self.keyring_reloads.load(Ordering::Relaxed),
            keyring_reload_failures: self.keyring_reload_failures.load(Ordering::Relaxed),
        }
    }
}
