//! The connection's clocks: keepalive, idle timeout, drain deadline and write timeout, kept
//! as instants and served by one `async_io::Timer`.
//!
//! The deadlines move with every frame; re-arming the timer each time would cost a reactor
//! operation per frame. So the timer is moved only when it must fire earlier than it is set
//! for; when it fires early, [`Timers::due`] finds nothing due and the loop sets it again.

use std::time::{Duration, Instant};

use async_io::Timer;

use crate::config::ServerConfig;

/// What a timer tick found due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing yet.
    Nothing,
    /// A write made no progress within the write timeout.
    WriteStalled,
    /// The drain's grace period is over.
    GraceOver,
    /// The keepalive ping went unanswered.
    Unresponsive,
    /// Time to ping the peer, with this nonce.
    Ping(u64),
    /// No call in flight and none received for the idle timeout.
    Idle,
}

/// The connection's deadlines and its one timer.
#[derive(Debug)]
pub(crate) struct Timers {
    /// Fires at `armed`.
    timer: Timer,
    /// When `timer` is set to fire, if set.
    armed: Option<Instant>,
    /// When the last frame arrived (or the connection was authenticated).
    pub(crate) last_received: Instant,
    /// When the last call arrived (or the connection was authenticated).
    pub(crate) last_call: Instant,
    /// When the unanswered ping was sent, if one is out.
    ping_sent: Option<Instant>,
    /// Nonce of the last ping.
    ping_nonce: u64,
    /// Set when the server drains or the peer half-closed: no new calls, finish by then.
    drain_until: Option<Instant>,
}

impl Timers {
    /// Clocks for a connection authenticated `now`.
    pub(crate) fn new(now: Instant) -> Self {
        Timers {
            timer: Timer::never(),
            armed: None,
            last_received: now,
            last_call: now,
            ping_sent: None,
            ping_nonce: 0,
            drain_until: None,
        }
    }

    /// Records a frame received at `now`: it answers any ping.
    pub(crate) fn received(&mut self, now: Instant) {
        self.last_received = now;
        self.ping_sent = None;
    }

    /// Starts the drain, ending `grace` from now (an earlier drain's end stands).
    pub(crate) fn start_drain(&mut self, grace: Duration) {
        self.drain_until.get_or_insert(Instant::now() + grace);
    }

    /// Whether the connection drains (no new calls).
    pub(crate) fn draining(&self) -> bool {
        self.drain_until.is_some()
    }

    /// The next instant something may be due. `calls_idle`: no call in flight;
    /// `write_since`: when the write under way began or last made progress.
    pub(crate) fn next_wake(
        &self,
        config: &ServerConfig,
        calls_idle: bool,
        write_since: Option<Instant>,
    ) -> Instant {
        let wake = match self.drain_until {
            Some(deadline) => deadline,
            None => {
                let keepalive = match self.ping_sent {
                    Some(sent) => sent + config.keepalive_timeout,
                    None => self.last_received + config.keepalive_interval,
                };
                if calls_idle {
                    keepalive.min(self.last_call + config.idle_timeout)
                } else {
                    keepalive
                }
            }
        };
        match write_since {
            Some(since) => wake.min(since + config.write_timeout),
            None => wake,
        }
    }

    /// Makes sure the timer fires no later than `wake`.
    pub(crate) fn arm(&mut self, wake: Instant) {
        if self.armed.is_none_or(|at| wake < at) {
            self.timer.set_at(wake);
            self.armed = Some(wake);
        }
    }

    /// Waits until the timer fires.
    pub(crate) async fn tick(&mut self) {
        (&mut self.timer).await;
        self.armed = None;
    }

    /// What is due at `now` (the first of them), after a tick. A ping found due is recorded
    /// as sent.
    pub(crate) fn due(
        &mut self,
        config: &ServerConfig,
        now: Instant,
        calls_idle: bool,
        write_since: Option<Instant>,
    ) -> Due {
        self.armed = None;
        if write_since.is_some_and(|since| now >= since + config.write_timeout) {
            return Due::WriteStalled;
        }
        if let Some(deadline) = self.drain_until {
            return if now >= deadline {
                Due::GraceOver
            } else {
                Due::Nothing
            };
        }
        match self.ping_sent {
            Some(sent) if now >= sent + config.keepalive_timeout => return Due::Unresponsive,
            Some(_) => {}
            None if now >= self.last_received + config.keepalive_interval => {
                self.ping_nonce += 1;
                self.ping_sent = Some(now);
                return Due::Ping(self.ping_nonce);
            }
            None => {}
        }
        if calls_idle && now >= self.last_call + config.idle_timeout {
            return Due::Idle;
        }
        Due::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            write_timeout: Duration::from_secs(5),
            grace_period: Duration::from_secs(10),
            ..ServerConfig::default()
        }
    }

    #[test]
    fn keepalive_pings_then_gives_up() {
        let config = config();
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        assert_eq!(
            timers.next_wake(&config, true, None),
            t0 + Duration::from_secs(30)
        );
        assert_eq!(
            timers.due(&config, t0 + Duration::from_secs(29), true, None),
            Due::Nothing
        );
        let ping_at = t0 + Duration::from_secs(30);
        assert_eq!(timers.due(&config, ping_at, true, None), Due::Ping(1));
        assert_eq!(
            timers.next_wake(&config, true, None),
            ping_at + Duration::from_secs(10)
        );
        assert_eq!(
            timers.due(&config, ping_at + Duration::from_secs(10), true, None),
            Due::Unresponsive
        );
        // Anything received answers the ping.
        timers.received(ping_at + Duration::from_secs(1));
        assert_eq!(
            timers.due(&config, ping_at + Duration::from_secs(10), true, None),
            Due::Nothing
        );
    }

    #[test]
    fn idle_only_without_calls_and_a_stalled_write_comes_first() {
        let config = ServerConfig {
            idle_timeout: Duration::from_secs(20),
            ..config()
        };
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(timers.next_wake(&config, true, None), later);
        assert_eq!(timers.due(&config, later, false, None), Due::Nothing);
        assert_eq!(timers.due(&config, later, true, None), Due::Idle);
        assert_eq!(
            timers.next_wake(&config, true, Some(t0)),
            t0 + Duration::from_secs(5)
        );
        assert_eq!(
            timers.due(&config, later, true, Some(t0)),
            Due::WriteStalled
        );
    }

    #[test]
    fn a_drain_replaces_keepalive_and_idle() {
        let config = config();
        let t0 = Instant::now();
        let mut timers = Timers::new(t0);
        timers.start_drain(Duration::from_secs(10));
        assert!(timers.draining());
        let end = timers.next_wake(&config, true, None);
        assert!(end >= t0 + Duration::from_secs(10));
        assert_eq!(
            timers.due(&config, end - Duration::from_millis(1), true, None),
            Due::Nothing
        );
        assert_eq!(timers.due(&config, end, true, None), Due::GraceOver);
    }
}
