//! Logs that cannot be flooded: a per-reason rate limit on connection-level warnings.
//!
//! In each window (10 s, say) the first `per_window` events of a reason are logged one by
//! one; the rest are only counted. When the window rolls over, the caller gets a [`Summary`]
//! of the window it closed ("refused 946 connections: too many unauthenticated, in the last
//! 10 s (936 not logged one by one)"), either from the next event of that reason or from
//! [`LogLimiter::tick`], which the server runs periodically so a flood that stops is still
//! summed up. The clock is passed in (`now`), so tests drive it by hand.
//!
//! The hot path is one atomic load and one compare-and-swap per event: each reason keeps its
//! window number and its count in one `AtomicU64`, so no event is lost or counted twice in a
//! window that another thread is rolling over.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why a connection-level warning is logged: each reason has its own budget per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WarnReason {
    /// A connection refused: the connection limit was reached.
    RefusedConnectionLimit,
    /// A connection refused: too many connections have not authenticated yet.
    RefusedUnauthenticated,
    /// A connection refused: its address is penalised after failed authentications.
    RefusedPenalised,
    /// An unauthenticated connection evicted to make room for a new one.
    EvictedUnauthenticated,
    /// A handshake failed: a deadline (hello, proof, whole handshake) passed.
    HandshakeTimeout,
    /// A handshake failed: the hello was malformed (bad magic, version, layout, type).
    HandshakeMalformed,
    /// A handshake failed: the client named a key id the keyring does not hold.
    HandshakeUnknownKey,
    /// A handshake failed: the client's proof did not verify (a wrong key).
    HandshakeBadProof,
    /// A handshake failed: the suite offered is unknown or not allowed.
    HandshakeSuite,
    /// A handshake failed for another reason (the peer left, an i/o error).
    HandshakeFailed,
    /// A trusted proxy's connection came without a valid PROXY header.
    BadProxyHeader,
    /// A connection closed for bad input or a protocol error after authentication.
    BadInput,
    /// A connection closed for another fault after authentication (peer unresponsive, not
    /// reading, an i/o error).
    ConnectionFault,
    /// `accept()` failed (for example EMFILE).
    AcceptFailed,
}

impl WarnReason {
    /// Every reason, in the order of [`WarnReason::index`].
    pub const ALL: [WarnReason; 14] = [
        WarnReason::RefusedConnectionLimit,
        WarnReason::RefusedUnauthenticated,
        WarnReason::RefusedPenalised,
        WarnReason::EvictedUnauthenticated,
        WarnReason::HandshakeTimeout,
        WarnReason::HandshakeMalformed,
        WarnReason::HandshakeUnknownKey,
        WarnReason::HandshakeBadProof,
        WarnReason::HandshakeSuite,
        WarnReason::HandshakeFailed,
        WarnReason::BadProxyHeader,
        WarnReason::BadInput,
        WarnReason::ConnectionFault,
        WarnReason::AcceptFailed,
    ];

    /// Position in [`WarnReason::ALL`] (the order the variants are declared in).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short name for the reason, as the `reason` field of a summary line.
    pub fn name(self) -> &'static str {
        match self {
            WarnReason::RefusedConnectionLimit => "refused_connection_limit",
            WarnReason::RefusedUnauthenticated => "refused_unauthenticated",
            WarnReason::RefusedPenalised => "refused_penalised",
            WarnReason::EvictedUnauthenticated => "evicted_unauthenticated",
            WarnReason::HandshakeTimeout => "handshake_timeout",
            WarnReason::HandshakeMalformed => "handshake_malformed",
            WarnReason::HandshakeUnknownKey => "handshake_unknown_key",
            WarnReason::HandshakeBadProof => "handshake_bad_proof",
            WarnReason::HandshakeSuite => "handshake_suite",
            WarnReason::HandshakeFailed => "handshake_failed",
            WarnReason::BadProxyHeader => "bad_proxy_header",
            WarnReason::BadInput => "bad_input",
            WarnReason::ConnectionFault => "connection_fault",
            WarnReason::AcceptFailed => "accept_failed",
        }
    }

    /// What `n` events of this reason were, for a summary line. Worded so that a summary
    /// does not contain the text of the one-by-one lines it stands for.
    fn describe(self, n: u64) -> String {
        match self {
            WarnReason::RefusedConnectionLimit => {
                format!("refused {n} connections: connection limit reached")
            }
            WarnReason::RefusedUnauthenticated => {
                format!("refused {n} connections: too many unauthenticated")
            }
            WarnReason::RefusedPenalised => {
                format!("refused {n} connections: source penalised for failed authentications")
            }
            WarnReason::EvictedUnauthenticated => {
                format!("evicted {n} unauthenticated connections to make room")
            }
            WarnReason::HandshakeTimeout => format!("{n} handshakes failed: timed out"),
            WarnReason::HandshakeMalformed => format!("{n} handshakes failed: malformed hello"),
            WarnReason::HandshakeUnknownKey => {
                format!("{n} handshakes failed: key id not in the keyring")
            }
            WarnReason::HandshakeBadProof => format!("{n} handshakes failed: wrong key"),
            WarnReason::HandshakeSuite => {
                format!("{n} handshakes failed: suite unknown or not allowed")
            }
            WarnReason::HandshakeFailed => format!("{n} handshakes failed"),
            WarnReason::BadProxyHeader => {
                format!("closed {n} trusted proxy connections: no valid PROXY header")
            }
            WarnReason::BadInput => format!("closed {n} connections: bad input"),
            WarnReason::ConnectionFault => {
                format!("closed {n} connections: faults (unresponsive, not reading, i/o)")
            }
            WarnReason::AcceptFailed => format!("accept failed {n} times"),
        }
    }
}

/// What to do with one event: log it, or only count it; and, if this event closed the
/// previous window of its reason, the summary of that window to log first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Decision {
    /// Whether to log this event one by one.
    pub log: bool,
    /// The closed window's summary, when some of its events were not logged.
    pub summary: Option<Summary>,
}

/// One closed window of one reason in which some events were not logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The reason.
    pub reason: WarnReason,
    /// Every event of the window.
    pub total: u64,
    /// Those that were only counted, not logged.
    pub suppressed: u64,
    /// The window's length.
    pub window: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, in the last {} ({} not logged one by one)",
            self.reason.describe(self.total),
            window_text(self.window),
            self.suppressed
        )
    }
}

/// "10 s", "1.5 s": a window length for a summary line.
fn window_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{} s", d.as_secs_f64())
    }
}

/// The per-reason rate limiter. Share it (`Arc`) between the accept loop and connection tasks.
#[derive(Debug)]
pub struct LogLimiter {
    /// Events of one reason logged one by one per window.
    per_window: u64,
    /// The window's length (at least 1 ms).
    window: Duration,
    /// Windows are numbered from this instant.
    origin: Instant,
    /// Per reason: window number in the high 32 bits, events in that window in the low 32.
    slots: [AtomicU64; WarnReason::ALL.len()],
}

/// The low 32 bits of a slot: events counted in its window.
const COUNT_MASK: u64 = u32::MAX as u64;

impl LogLimiter {
    /// A limiter that logs the first `per_window` events of each reason in each `window`
    /// (shorter than 1 ms counts as 1 ms), numbering windows from `origin` (usually
    /// `Instant::now()` at start).
    pub fn new(per_window: u32, window: Duration, origin: Instant) -> Self {
        LogLimiter {
            per_window: u64::from(per_window),
            window: window.max(Duration::from_millis(1)),
            origin,
            slots: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The instant windows are numbered from: window `n` ends at `origin + (n + 1) * window`.
    pub fn origin(&self) -> Instant {
        self.origin
    }

    /// The number of the window `now` falls in (saturating at the 32-bit limit, far past any
    /// run: 2^32 windows of 1 ms are 49 days, of 10 s 1,361 years).
    fn window_of(&self, now: Instant) -> u64 {
        let n = now.saturating_duration_since(self.origin).as_nanos() / self.window.as_nanos();
        u64::try_from(n).unwrap_or(u64::MAX).min(COUNT_MASK)
    }

    /// Counts one event of `reason` at `now` and says whether to log it.
    pub fn event(&self, reason: WarnReason, now: Instant) -> Decision {
        let slot = &self.slots[reason.index()];
        let window = self.window_of(now);
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let (slot_window, count) = (current >> 32, current & COUNT_MASK);
            // An event stamped in an older window than the slot's (a thread that read the
            // clock before another rolled the window over) counts in the slot's window.
            let (next, before, closed) = if window > slot_window {
                ((window << 32) | 1, 0, Some(count))
            } else {
                let count = (count + 1).min(COUNT_MASK);
                ((slot_window << 32) | count, count - 1, None)
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Decision {
                        log: before < self.per_window,
                        summary: closed.and_then(|total| self.summary(reason, total)),
                    }
                }
                Err(seen) => current = seen,
            }
        }
    }

    /// Closes every reason's window that `now` has left and returns the summaries of those in
    /// which events went unlogged. Run it about once per window.
    pub fn tick(&self, now: Instant) -> Vec<Summary> {
        let window = self.window_of(now);
        let mut out = Vec::new();
        for reason in WarnReason::ALL {
            let slot = &self.slots[reason.index()];
            let mut current = slot.load(Ordering::Relaxed);
            while current >> 32 < window {
                match slot.compare_exchange_weak(
                    current,
                    window << 32,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        out.extend(self.summary(reason, current & COUNT_MASK));
                        break;
                    }
                    Err(seen) => current = seen,
                }
            }
        }
        out
    }

    /// The summary of a closed window that held `total` events, if some were not logged.
    fn summary(&self, reason: WarnReason, total: u64) -> Option<Summary> {
        (total > self.per_window).then(|| Summary {
            reason,
            total,
            suppressed: total - self.per_window,
            window: self.window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_S: Duration = Duration::from_secs(10);

    fn logged(limiter: &LogLimiter, reason: WarnReason, now: Instant, n: usize) -> usize {
        (0..n)
            .filter(|_| {
                let d = limiter.event(reason, now);
                assert_eq!(d.summary, None);
                d.log
            })
            .count()
    }

    #[test]
    fn the_first_n_per_window_are_logged_the_rest_summed_up_by_the_next_event() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(10, TEN_S, t0);
        let r = WarnReason::RefusedUnauthenticated;
        assert_eq!(logged(&limiter, r, t0, 946), 10);
        assert_eq!(logged(&limiter, r, t0 + Duration::from_millis(9_999), 1), 0);

        let next = limiter.event(r, t0 + TEN_S);
        assert!(next.log, "a new window logs again");
        let summary = next.summary.expect("the closed window is summed up");
        assert_eq!((summary.total, summary.suppressed), (947, 937));
        assert_eq!(
            summary.to_string(),
            "refused 947 connections: too many unauthenticated, in the last 10 s \
             (937 not logged one by one)"
        );
    }

    #[test]
    fn reasons_have_separate_budgets() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(2, TEN_S, t0);
        assert_eq!(logged(&limiter, WarnReason::HandshakeFailed, t0, 5), 2);
        assert_eq!(logged(&limiter, WarnReason::BadInput, t0, 5), 2);
        let summaries = limiter.tick(t0 + TEN_S);
        assert_eq!(summaries.len(), 2);
        assert_eq!(summaries[0].reason, WarnReason::HandshakeFailed);
        assert!(summaries[0]
            .to_string()
            .starts_with("5 handshakes failed, in the last 10 s"));
        assert_eq!(summaries[1].reason, WarnReason::BadInput);
    }

    #[test]
    fn tick_sums_up_a_flood_that_stopped_once_and_only_once() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(3, TEN_S, t0);
        let r = WarnReason::AcceptFailed;
        assert_eq!(logged(&limiter, r, t0, 8), 3);
        assert!(
            limiter.tick(t0 + Duration::from_secs(5)).is_empty(),
            "window still open"
        );
        let summaries = limiter.tick(t0 + Duration::from_secs(12));
        assert_eq!(
            summaries,
            vec![Summary {
                reason: r,
                total: 8,
                suppressed: 5,
                window: TEN_S
            }]
        );
        assert!(limiter.tick(t0 + Duration::from_secs(15)).is_empty());
        assert!(limiter.tick(t0 + Duration::from_secs(25)).is_empty());
        // The event after the tick opened a fresh window: no summary, logged.
        let d = limiter.event(r, t0 + Duration::from_secs(26));
        assert_eq!(
            d,
            Decision {
                log: true,
                summary: None
            }
        );
    }

    #[test]
    fn a_window_within_budget_has_no_summary() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(3, TEN_S, t0);
        let r = WarnReason::RefusedPenalised;
        assert_eq!(logged(&limiter, r, t0, 3), 3);
        let d = limiter.event(r, t0 + TEN_S);
        assert_eq!(
            d,
            Decision {
                log: true,
                summary: None
            }
        );
        assert!(limiter.tick(t0 + 3 * TEN_S).is_empty());
    }

    #[test]
    fn an_event_stamped_before_the_slots_window_counts_in_that_window() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(1, TEN_S, t0);
        let r = WarnReason::RefusedConnectionLimit;
        assert!(limiter.event(r, t0 + TEN_S).log);
        // A late thread with an old clock reading: counted, not logged, no summary.
        assert_eq!(
            limiter.event(r, t0),
            Decision {
                log: false,
                summary: None
            }
        );
        let summaries = limiter.tick(t0 + 2 * TEN_S);
        assert_eq!(summaries[0].total, 2);
        assert_eq!(
            summaries[0].to_string().split(',').next(),
            Some("refused 2 connections: connection limit reached")
        );
    }

    #[test]
    fn events_from_many_threads_are_each_counted_once() {
        let t0 = Instant::now();
        let limiter = std::sync::Arc::new(LogLimiter::new(5, TEN_S, t0));
        let r = WarnReason::HandshakeFailed;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let limiter = limiter.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| limiter.event(r, t0).log).count())
            })
            .collect();
        let logged: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(logged, 5);
        let s = limiter.tick(t0 + TEN_S);
        assert_eq!((s[0].total, s[0].suppressed), (40_000, 39_995));
    }

    #[test]
    fn every_reason_has_its_own_slot_in_order() {
        for (i, reason) in WarnReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "{reason:?}");
        }
        let names: std::collections::HashSet<_> =
            WarnReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(names.len(), WarnReason::ALL.len());
    }

    #[test]
    fn odd_window_lengths_read_well() {
        let t0 = Instant::now();
        let limiter = LogLimiter::new(0, Duration::from_millis(1500), t0);
        assert!(!limiter.event(WarnReason::BadInput, t0).log);
        let s = limiter.tick(t0 + Duration::from_secs(2));
        assert_eq!(
            s[0].to_string(),
            "closed 1 connections: bad input, in the last 1.5 s (1 not logged one by one)"
        );
    }
}
