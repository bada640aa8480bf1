//! Per-address penalties for failed authentications: an address that fails authentication too
//! often within a window is refused for a while, so a password-guessing storm from one source
//! costs it time and does not cost other clients anything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once; past it, the stalest entries are forgotten.
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
    records: Mutex<HashMap<IpAddr, Record>>,
}

impl Penalties {
    pub(crate) fn new(limit: u32, window: Duration, penalty: Duration) -> Self {
        Penalties {
            limit,
            window,
            penalty,
            records: Mutex::new(HashMap::new()),
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
        if records.len() >= MAX_TRACKED && !records.contains_key(&ip) {
            let window = self.window;
            records.retain(|_, r| {
                now.duration_since(r.window_start) < window
                    || r.refused_until.is_some_and(|t| t > now)
            });
            if records.len() >= MAX_TRACKED {
                records.clear();
            }
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
    fn zero_limit_disables() {
        let p = Penalties::new(0, Duration::from_secs(10), Duration::from_secs(30));
        let ip: IpAddr = [127, 0, 0, 2].into();
        for _ in 0..10 {
            assert!(p.record_failure(ip, Instant::now()).is_none());
        }
    }
}
