//! Server limits and timeouts, each with its default. `docs/OPERATIONS.md` says what each one
//! protects against and what a peer sees when it trips.

use std::time::Duration;

use ipnet::IpNet;
use rpckit_proto::{KeyLimits, SuiteSet, DEFAULT_MAX_FRAME};

/// Longest duration a setting keeps (100 years): as good as no limit, and deadlines computed
/// from it still fit the clock.
const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Limits and timeouts of a [`crate::Server`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Deadline for the whole handshake, not reset by each byte. Default 10 s.
    pub handshake_timeout: Duration,
    /// Deadline for each step the client takes in the handshake: its hello must arrive within
    /// this time of the accept, and its proof within this time of the hello's answer. A
    /// connection that misses it is closed and its source address goes first the next time
    /// an unauthenticated connection must be evicted. `handshake_timeout` still bounds the
    /// whole. Default 3 s.
    pub hello_timeout: Duration,
    /// Largest frame accepted or sent after the handshake, in bytes. Default 8 MiB.
    pub max_frame: u32,
    /// Memory that read buffers of all connections may hold together beyond their small
    /// idle buffers; a connection whose next frame does not fit is closed. Default 1 GiB.
    pub max_buffer_memory: usize,
    /// Connections open at once; past it new connections are refused with `Busy`.
    /// Default 10,000.
    pub max_connections: usize,
    /// Connections whose client's proof is not checked yet. When it is full, a new
    /// connection takes the place of one that has not had its hello answered yet (evicted:
    /// told `Busy` and closed): one from the source with the most recent handshake failures
    /// (timeouts, malformed hellos), then from the source with the most unauthenticated
    /// connections, then the oldest. A new connection is refused `Busy` only if every one of
    /// them is past its hello. A connection leaves this count when its proof is checked,
    /// before the client is told. Default 100.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one source address (an IPv4 address, or an IPv6
    /// /64). A new connection from a source at this cap takes the place of that source's
    /// oldest connection whose hello has not been answered yet (nor waits unread), and is
    /// refused `Busy` only if there is none. Set it above the connections one client host
    /// opens at once (a pool, a load tool): a client's connection whose hello is still on its
    /// way can be evicted. Default `None`: the same as `max_unauthenticated`, so no source is
    /// held to less than the whole table (a full table already evicts from the biggest source
    /// first).
    pub max_unauthenticated_per_source: Option<usize>,
    /// Calls in flight on one connection; past it a call is answered `Overloaded` at once.
    /// Default 256.
    pub max_in_flight: usize,
    /// Messages waiting to be written to one connection; a client that sends calls but does
    /// not read the answers is disconnected when it fills up. Default 1,024.
    pub max_queued: usize,
    /// Time a write may go without progress (the peer taking no bytes) before the peer is
    /// dropped. Default 10 s.
    pub write_timeout: Duration,
    /// A connection with no call in flight and no call received for this long is closed.
    /// Default 300 s.
    pub idle_timeout: Duration,
    /// After this long without receiving anything the server pings the client. Default 30 s.
    pub keepalive_interval: Duration,
    /// A ping not answered (by anything) within this time means the peer is dead. Default 10 s.
    pub keepalive_timeout: Duration,
    /// On shutdown, time calls in flight get to finish before they are answered
    /// `ShuttingDown`. Default 10 s.
    pub grace_period: Duration,
    /// On shutdown, time the server goes on accepting and serving as usual before it drains,
    /// while its metrics already say it is draining (`/healthz` answers 503): a load balancer
    /// that checks `/healthz` stops sending new connections before the listener closes.
    /// Default 0 (drain at once).
    pub drain_delay: Duration,
    /// Failed authentications (unknown key id or wrong key) from one IP address within
    /// `auth_failure_window` after which the address is refused (`RateLimited`) for
    /// `auth_penalty`. Other handshake failures (bad magic, a malformed hello, a timeout) do
    /// not count. Default 5.
    pub auth_failure_limit: u32,
    /// Window over which failed authentications are counted. Default 60 s.
    pub auth_failure_window: Duration,
    /// How long an address that hit `auth_failure_limit` is refused. Default 30 s.
    pub auth_penalty: Duration,
    /// Proxies (HAProxy, a load balancer) whose connections start with a PROXY protocol v2
    /// header naming the real client: from an address in one of these networks the header is
    /// required (a connection without a valid one is closed), and its source address replaces
    /// the proxy's for admission, penalties and logs; a LOCAL header (a health check) keeps
    /// the proxy's address. From any other address a PROXY header is a malformed hello.
    /// Default empty: no PROXY headers are accepted.
    pub trusted_proxies: Vec<IpNet>,
    /// Frame-protection suites a client may use; one offering another is refused with status
    /// 9 (`SuiteNotAllowed`). Default [`SuiteSet::ENCRYPTED`] (AES-256-GCM and
    /// ChaCha20-Poly1305): the integrity-only suite 1 (HMAC-SHA256, frames in clear) only
    /// where it is asked for.
    pub suites: SuiteSet,
    /// Lower limits on what one session key may seal than its suite's own (an override never
    /// raises them). A connection whose keys have used half of either limit is drained with
    /// `GoingAway` and the client moves to a new connection with new keys, so this only makes
    /// that happen sooner: for tests, or to bound how much one key protects. Default `None`
    /// (AES-256-GCM: 2^32 frames, 2^38 bytes; the others: the sequence number).
    pub key_limits: Option<KeyLimits>,
}

impl ServerConfig {
    /// Whether connections from `ip` come through a trusted proxy (see `trusted_proxies`).
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// This configuration with every duration cut to 100 years, which
    /// [`crate::Server::new`] applies: a timeout that long is as good as none, and deadlines
    /// computed from it cannot overflow the clock.
    pub fn bounded(mut self) -> Self {
        for d in [
            &mut self.handshake_timeout,
            &mut self.hello_timeout,
            &mut self.write_timeout,
            &mut self.idle_timeout,
            &mut self.keepalive_interval,
            &mut self.keepalive_timeout,
            &mut self.grace_period,
            &mut self.drain_delay,
            &mut self.auth_failure_window,
            &mut self.auth_penalty,
        ] {
            *d = (*d).min(MAX_DURATION);
        }
        self
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(3),
            max_frame: DEFAULT_MAX_FRAME,
            max_buffer_memory: 1 << 30,
            max_connections: 10_000,
            max_unauthenticated: 100,
            max_unauthenticated_per_source: None,
            max_in_flight: 256,
            max_queued: 1024,
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            grace_period: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            auth_failure_limit: 5,
            auth_failure_window: Duration::from_secs(60),
            auth_penalty: Duration::from_secs(30),
            trusted_proxies: Vec::new(),
            suites: SuiteSet::ENCRYPTED,
            key_limits: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_proxies_match_by_network_and_mapped_ipv4() {
        let config = ServerConfig {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            ..ServerConfig::default()
        };
        for trusted in ["10.1.2.3", "::ffff:10.9.9.9", "::1"] {
            assert!(
                config.is_trusted_proxy(trusted.parse().unwrap()),
                "{trusted}"
            );
        }
        for other in ["11.0.0.1", "127.0.0.1", "::2"] {
            assert!(!config.is_trusted_proxy(other.parse().unwrap()), "{other}");
        }
        assert!(!ServerConfig::default().is_trusted_proxy("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn bounded_cuts_every_duration_and_keeps_the_rest() {
        let huge = ServerConfig {
            handshake_timeout: Duration::MAX,
            hello_timeout: Duration::MAX,
            write_timeout: Duration::MAX,
            idle_timeout: Duration::MAX,
            keepalive_interval: Duration::MAX,
            keepalive_timeout: Duration::MAX,
            grace_period: Duration::MAX,
            drain_delay: Duration::MAX,
            auth_failure_window: Duration::MAX,
            auth_penalty: Duration::MAX,
            ..ServerConfig::default()
        }
        .bounded();
        let now = std::time::Instant::now();
        for d in [
            huge.handshake_timeout,
            huge.hello_timeout,
            huge.write_timeout,
            huge.idle_timeout,
            huge.keepalive_interval,
            huge.keepalive_timeout,
            huge.grace_period,
            huge.drain_delay,
            huge.auth_failure_window,
            huge.auth_penalty,
        ] {
            assert_eq!(d, MAX_DURATION);
            // Deadlines from it fit the clock, with room to add another.
            assert!(now.checked_add(d + d).is_some());
        }
        let default = ServerConfig::default();
        assert_eq!(default.suites, SuiteSet::ENCRYPTED, "encrypted by default");
        assert_eq!(
            format!("{:?}", default.clone().bounded()),
            format!("{default:?}")
        );
    }
}
