//! Per-address penalties for failed authentications: an address that fails authentication too
//! often within a window is refused for a while, so a password-guessing storm from one source
//! costs it time and does not cost other clients anything.
//!
//! The table is bounded. When it is full and a new address fails, entries whose window and
//! penalty are both over are dropped; if none is, the one entry that matters least makes
//! room: one still counting failures (not penalised) with the fewest of them, else the
//! penalty nearest its end. Penalised addresses are never all forgiven at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Record {
    /// Failures counted in the current window.
    failures: u32,
    /// Start of the current window.
    window_start: Instant,
    /// Refused until then, if penalised.
    refused_until: Option<Instant>,
}

/// Failed-handshake counts by source address.
#[derive(Debug)]
pub(crate) struct Penalties {
    limit: u32,
    window: Duration,
    penalty: Duration,
    /// Most addresses tracked at once ([`MAX_TRACKED`]).
    max_tracked: usize,
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Penalties {
    pub(crate) fn new(limit: u32, window: Duration, penalty: Duration) -> Self {
        Penalties {
            limit,
            window,
            penalty,
            max_tracked: MAX_TRACKED,
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Frees at least one place in a full table: drops what has run out, or else the entry
    /// that matters least (see the module doc).
    fn make_room(&self, records: &mut HashMap<IpAddr, Record>, now: Instant) {
        let window = self.window;
        records.retain(|_, r| {
            now.duration_since(r.window_start) < window || r.refused_until.is_some_and(|t| t > now)
        });
        if records.len() < self.max_tracked {
            return;
        }
        // Not penalised sorts before penalised; then fewest failures, or nearest end.
        let least = records
            .iter()
            .min_by_key(|(_, r)| match r.refused_until {
                None => (false, r.failures, r.window_start),
                Some(until) => (true, 0, until),
            })
            .map(|(ip, _)| *ip);
        if let Some(least) = least {
            records.remove(&least);
        }
    }

    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Record>> {
        // A panic while holding this lock leaves only counters behind: keep using them.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `ip` is refused right now; if so, until when.
    pub(crate) fn refused(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        if self.limit == 0 {
            return None;
        }
        let records = self.records();
        records
            .get(&ip)
            .and_then(|r| r.refused_until)
            .filter(|until| *until > now)
    }

    /// Counts a failed handshake from `ip`. Returns `Some(until)` when this failure starts a
    /// penalty.
    pub(crate) fn record_failure(&self, ip: IpAddr, now: Instant) -> Option<Instant> {
        if self.limit == 0 {
            return None;
        }
        let mut records = self.records();
        if records.len() >= self.max_tracked && !records.contains_key(&ip) {
            self.make_room(&mut records, now);
        }
        let record = records.entry(ip).or_insert(Record {
            failures: 0,
            window_start: now,
            refused_until: None,
        });
        if now.duration_since(record.window_start) >= self.window {
            record.failures = 0;
            record.window_start = now;
        }
        record.failures = record.failures.saturating_add(1);
        if record.failures >= self.limit {
            let until = now + self.penalty;
            record.refused_until = Some(until);
            record.failures = 0;
            record.window_start = now;
            return Some(until);
        }
        None
    }

    /// Forgets failures of `ip` after it authenticated.
    pub(crate) fn record_success(&self, ip: IpAddr) {
        if self.limit == 0 {
            return;
        }
        let mut records = self.records();
        if records.get(&ip).is_some_and(|r| r.refused_until.is_none()) {
            records.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_after_the_limit_and_forgives_after_the_penalty() {
        let p = Penalties::new(3, Duration::from_secs(60), Duration::from_secs(30));
        let ip: IpAddr = [127, 0, 0, 2].into();
        let other: IpAddr = [127, 0, 0, 3].into();
        let t0 = Instant::now();
        assert!(p.record_failure(ip, t0).is_none());
        assert!(p.record_failure(ip, t0).is_none());
        assert!(p.refused(ip, t0).is_none());
        assert!(p.record_failure(ip, t0).is_some());
        assert!(p.refused(ip, t0 + Duration::from_secs(1)).is_some());
        assert!(p.refused(other, t0).is_none());
        assert!(p.refused(ip, t0 + Duration::from_secs(31)).is_none());
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let p = Penalties::new(2, Duration::from_secs(10), Duration::from_secs(30));
        let ip: IpAddr = [127, 0, 0, 2].into();
        let t0 = Instant::now();
        assert!(p.record_failure(ip, t0).is_none());
        assert!(p.record_failure(ip, t0 + Duration::from_secs(11)).is_none());
        assert!(p.record_failure(ip, t0 + Duration::from_secs(12)).is_some());
    }

    #[test]
    fn a_full_table_keeps_every_penalty_and_drops_the_least_failed() {
        let mut p = Penalties::new(2, Duration::from_secs(60), Duration::from_secs(30));
        p.max_tracked = 4;
        let t0 = Instant::now();
        let ip = |n: u8| IpAddr::from([127, 0, 0, n]);
        // Three penalised, one with a single failure.
        for n in 1..=3 {
            p.record_failure(ip(n), t0);
            assert!(p.record_failure(ip(n), t0).is_some());
        }
        p.record_failure(ip(4), t0);
        // Newcomers fill the table over and over: the penalties stand.
        for n in 10..100 {
            p.record_failure(ip(n), t0);
        }
        for n in 1..=3 {
            assert!(p.refused(ip(n), t0).is_some(), "127.0.0.{n} still refused");
        }
        assert!(p.records().len() <= 4);
        // All penalised and full: the penalty nearest its end makes room, one at a time.
        let q = Penalties {
            max_tracked: 2,
            ..Penalties::new(1, Duration::from_secs(60), Duration::from_secs(30))
        };
        q.record_failure(ip(1), t0);
        q.record_failure(ip(2), t0 + Duration::from_secs(1));
        q.record_failure(ip(3), t0 + Duration::from_secs(2));
        let at = t0 + Duration::from_secs(2);
        assert!(q.refused(ip(1), at).is_none(), "nearest its end made room");
        assert!(q.refused(ip(2), at).is_some());
        assert!(q.refused(ip(3), at).is_some());
    }

    #[test]
    fn zero_limit_disables() {
        let p = Penalties::new(0, Duration::from_secs(10), Duration::from_secs(30));
        let ip: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..10 {
            assert!(p.record_failure(ip, Instant::now()).is_none());
        }
    }
}
