//! The connection task's timer and keepalive state: one `async_io::Timer` set for the
//! earliest call deadline or keepalive check, instead of one timer per call.

use std::time::{Duration, Instant};

use async_io::Timer;

/// Keepalive state.
pub(super) struct Keepalive {
    /// Ping after this long without hearing from the server.
    pub(super) interval: Duration,
    /// Give up on a ping not answered within this.
    pub(super) timeout: Duration,
    /// When the server was last heard from.
    pub(super) last_heard: Instant,
    /// When our ping unanswered so far left.
    pub(super) ping_sent: Option<Instant>,
    /// The last ping's nonce.
    pub(super) nonce: u64,
}

impl Keepalive {
    /// When the next keepalive check is due.
    pub(super) fn due(&self) -> Instant {
        match self.ping_sent {
            Some(sent) => sent + self.timeout,
            None => self.last_heard + self.interval,
        }
    }
}

/// The task's one timer, set for the earliest of the call deadlines and the keepalive check.
/// It moves only to ring earlier (moving a timer wakes the reactor); a ring that comes early
/// finds nothing to do and sets it again.
pub(super) struct Alarm {
    /// The timer.
    pub(super) timer: Timer,
    /// When it is set to ring; `None` once it has rung.
    pub(super) at: Option<Instant>,
}

impl Alarm {
    /// Makes the alarm ring at `at` at the latest.
    pub(super) fn ring_by(&mut self, at: Instant) {
        if self.at.is_none_or(|armed| at < armed) {
            self.timer.set_at(at);
            self.at = Some(at);
        }
    }
}
