//! Strikes against sources whose connections missed a handshake deadline or sent a malformed
//! hello: such a source's connections are evicted first when the unauthenticated table is
//! full. A strike never refuses anyone (only failed proofs do, in `penalty.rs`): a real
//! client sharing the address of a misbehaving one is still admitted.
//!
//! The table is bounded: when it is full, strikes older than [`MEMORY`] are dropped, and if
//! none is, the entry with the fewest strikes (the oldest of those) makes room. It is never
//! cleared all at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::source::Source;

/// How long a source's strikes are remembered after its last one.
pub(crate) const MEMORY: Duration = Duration::from_secs(60);
/// Most sources tracked at once.
const MAX_TRACKED: usize = 4096;

/// One source's strikes.
#[derive(Debug, Clone, Copy)]
struct Record {
    /// Strikes since the record was last stale.
    count: u32,
    /// When the last one came.
    last: Instant,
}

/// Strikes by source, bounded.
#[derive(Debug, Default)]
pub(crate) struct Strikes {
    /// Records by source.
    records: HashMap<Source, Record>,
}

impl Strikes {
    /// Strikes against `source` that are still remembered at `now`.
    pub(crate) fn get(&self, source: Source, now: Instant) -> u32 {
        self.records
            .get(&source)
            .filter(|r| now.duration_since(r.last) < MEMORY)
            .map_or(0, |r| r.count)
    }

    /// Counts a strike against `source` at `now`.
    pub(crate) fn record(&mut self, source: Source, now: Instant) {
        self.record_bounded(source, now, MAX_TRACKED);
    }

    fn record_bounded(&mut self, source: Source, now: Instant, max: usize) {
        if self.records.len() >= max && !self.records.contains_key(&source) {
            self.records
                .retain(|_, r| now.duration_since(r.last) < MEMORY);
            if self.records.len() >= max {
                let least = self
                    .records
                    .iter()
                    .min_by_key(|(_, r)| (r.count, r.last))
                    .map(|(s, _)| *s);
                if let Some(least) = least {
                    self.records.remove(&least);
                }
            }
        }
        let record = self.records.entry(source).or_insert(Record {
            count: 0,
            last: now,
        });
        if now.duration_since(record.last) >= MEMORY {
            record.count = 0;
        }
        record.count = record.count.saturating_add(1);
        record.last = now;
    }

    /// Sources tracked.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.records.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn source(n: u32) -> Source {
        Source::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)))
    }

    #[test]
    fn strikes_add_up_and_fade() {
        let mut s = Strikes::default();
        let t0 = Instant::now();
        s.record(source(1), t0);
        s.record(source(1), t0);
        assert_eq!(s.get(source(1), t0), 2);
        assert_eq!(s.get(source(2), t0), 0);
        assert_eq!(s.get(source(1), t0 + MEMORY), 0);
        s.record(source(1), t0 + MEMORY);
        assert_eq!(s.get(source(1), t0 + MEMORY), 1);
    }

    #[test]
    fn a_full_table_drops_the_least_struck_and_keeps_the_rest() {
        let mut s = Strikes::default();
        let t0 = Instant::now();
        for n in 0..4 {
            for _ in 0..=n {
                s.record_bounded(source(n), t0, 4);
            }
        }
        s.record_bounded(source(9), t0, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s.get(source(0), t0), 0, "the least struck made room");
        for n in 1..4 {
            assert_eq!(s.get(source(n), t0), n + 1, "source {n} kept");
        }
        assert_eq!(s.get(source(9), t0), 1);
    }
}
