//! Client settings, each with its default.

use std::time::Duration;

use rpckit_proto::{Suite, DEFAULT_MAX_FRAME};

use crate::deadline::MAX_DURATION;

/// Settings of a [`crate::Client`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Time allowed for TCP connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Time allowed for the whole handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Largest frame sent or accepted, in bytes. Default 8 MiB.
    pub max_frame: u32,
    /// Timeout of [`crate::Client::call`]; also sent to the server as the call's deadline.
    /// `None` waits for ever. Default 30 s.
    pub call_timeout: Option<Duration>,
    /// Calls that may wait to be written behind a write in progress (a large request, a
    /// server reading slowly): a few (at most 16) queued for the connection's task, the rest
    /// taken by it (their deadlines kept). Once this many wait, further callers wait for
    /// room, no longer than their own deadlines. Default 1,024.
    pub max_queued: usize,
    /// After this long without hearing from the server, ping it. Default 30 s.
    pub keepalive_interval: Duration,
    /// A ping not answered within this time means the server is dead: calls in flight fail
    /// with [`crate::CallError::OutcomeUnknown`]. Default 10 s.
    pub keepalive_timeout: Duration,
    /// Time a write may go without progress (the server taking no bytes) before the
    /// connection is declared dead. Default 10 s.
    pub write_timeout: Duration,
    /// Further connection attempts a call makes after a failed one, when the failure can pass
    /// (see [`crate::ConnectError::is_transient`]; 0: one attempt per call, no retries).
    /// Default 8.
    pub reconnect_attempts: u32,
    /// First reconnect delay; doubles on each attempt, with full jitter. Default 50 ms.
    pub reconnect_initial_backoff: Duration,
    /// Longest reconnect delay. Default 5 s.
    pub reconnect_max_backoff: Duration,
    /// The suite offered to the server (PROTOCOL.md §3.1, §6). Default
    /// [`Suite::preferred`]: an encrypting suite, AES-256-GCM where the CPU has AES
    /// instructions, ChaCha20-Poly1305 elsewhere. [`Suite::HmacSha256`] authenticates every
    /// frame without encrypting it; a server accepts it only when told to. The client never
    /// falls back to another suite when the server refuses this one.
    pub suite: Suite,
    /// Send the call that opens a connection in the same write as the handshake's proof
    /// (PROTOCOL.md §3.5), before the server has proven that it holds the key, on **every**
    /// new connection. A new connection then costs one round trip less (TCP connect, then two
    /// round trips in all).
    ///
    /// Under an encrypting suite the client already does this by default towards a server
    /// that has proven the key to this process before (a reconnect, a pool, a churn loop):
    /// a server without the key can then neither read nor forge the call. A first-ever
    /// connection waits for the server's proof, so a wrong key reads as an authentication
    /// failure. Set this to send the first call with the proof even then (and under the
    /// integrity-only suite, where an impostor sees the request).
    ///
    /// Once a call has left with the proof, any failure of the handshake (a refusal, which
    /// nothing authenticates, a bad server proof, a lost connection) ends it with
    /// [`crate::CallError::OutcomeUnknown`]: the server may have run it. If the caller drops it
    /// or its timeout passes before the server's proof came, the new connection is dropped
    /// and the server may still run it. Default `false`.
    pub pipeline_first_call: bool,
    /// A client of several endpoints (an address list, or a name with several addresses)
    /// resolves the names in its list again this often, keeping the connections of
    /// addresses that stay. Default 30 s.
    pub resolve_interval: Duration,
    /// A client of several endpoints eases one that comes back after a failure in over this
    /// long: its share of new calls grows from a tenth to all of it (zero: at once).
    /// Default 10 s.
    pub slow_start: Duration,
}

impl ClientConfig {
    /// This configuration with every duration cut to 100 years, which [`crate::Client`]
    /// applies: a timeout that long is as good as none, and deadlines computed from it cannot
    /// overflow the clock.
    pub fn bounded(mut self) -> Self {
        for d in [
            &mut self.connect_timeout,
            &mut self.handshake_timeout,
            &mut self.keepalive_interval,
            &mut self.keepalive_timeout,
            &mut self.write_timeout,
            &mut self.reconnect_initial_backoff,
            &mut self.reconnect_max_backoff,
            &mut self.resolve_interval,
            &mut self.slow_start,
        ] {
            *d = (*d).min(MAX_DURATION);
        }
        // The call timeout has its own rule: one too long for the clock means none.
        self
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            connect_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            max_frame: DEFAULT_MAX_FRAME,
            call_timeout: Some(Duration::from_secs(30)),
            max_queued: 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            reconnect_attempts: 8,
            reconnect_initial_backoff: Duration::from_millis(50),
            reconnect_max_backoff: Duration::from_secs(5),
            suite: Suite::preferred(),
            pipeline_first_call: false,
            resolve_interval: Duration::from_secs(30),
            slow_start: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_every_duration_and_keeps_the_rest() {
        let huge = ClientConfig {
            connect_timeout: Duration::MAX,
            handshake_timeout: Duration::MAX,
            call_timeout: Some(Duration::MAX),
            keepalive_interval: Duration::MAX,
            keepalive_timeout: Duration::MAX,
            write_timeout: Duration::MAX,
            reconnect_initial_backoff: Duration::MAX,
            reconnect_max_backoff: Duration::MAX,
            resolve_interval: Duration::MAX,
            slow_start: Duration::MAX,
            ..ClientConfig::default()
        }
        .bounded();
        let now = std::time::Instant::now();
        for d in [
            huge.connect_timeout,
            huge.handshake_timeout,
            huge.keepalive_interval,
            huge.keepalive_timeout,
            huge.write_timeout,
            huge.reconnect_initial_backoff,
            huge.reconnect_max_backoff,
            huge.resolve_interval,
            huge.slow_start,
        ] {
            assert_eq!(d, MAX_DURATION);
            assert!(now.checked_add(d + d).is_some());
        }
        assert_eq!(
            huge.call_timeout,
            Some(Duration::MAX),
            "its own rule applies"
        );
        let default = ClientConfig::default();
        assert_eq!(
            format!("{:?}", default.clone().bounded()),
            format!("{default:?}")
        );
    }
}
