//! Counting during a run: latency histograms and counters, sharded.
//!
//! Worker tasks record into a [`Recorder`], which is split into a few
//! mutex-protected shards so that tasks on different threads rarely touch the
//! same lock. Latencies go into an `hdrhistogram` in nanoseconds with 3
//! significant figures and are reported in microseconds. Only calls that
//! complete inside the measurement window (after the warmup, before the
//! deadline) count toward calls, bytes and latency; errors count whenever they
//! happen.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use crate::BenchError;
use hdrhistogram::Histogram;

/// Highest latency the histograms track exactly (one hour, in nanoseconds); longer ones are clamped.
const MAX_TRACKED_NS: u64 = 3_600_000_000_000;

/// Significant figures kept by the latency histograms.
const SIGFIGS: u8 = 3;

/// Creates an empty latency histogram in nanoseconds.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // Bounds are constants that hdrhistogram accepts; fall back to auto-resize if it ever refuses.
    Histogram::new_with_bounds(1, MAX_TRACKED_NS, SIGFIGS)
        .or_else(|_| Histogram::new(SIGFIGS))
        .unwrap_or_else(|_| unreachable!("hdrhistogram accepts 3 significant figures"))
}

/// Per-shard counters.
struct Shard {
    hist: Histogram<u64>,
    calls: u64,
    bytes: u64,
    connects: u64,
    /// Calls completed at any time, warmup included (progress display only).
    calls_total: u64,
    errors_total: u64,
    /// Error label -> (count, first message seen).
    errors: HashMap<String, (u64, String)>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            hist: new_histogram(),
            calls: 0,
            bytes: 0,
            connects: 0,
            calls_total: 0,
            errors_total: 0,
            errors: HashMap::new(),
        }
    }
}

/// Thread-safe sink for call results during a run.
pub struct Recorder {
    shards: Box<[Mutex<Shard>]>,
    window_start: Instant,
    window_end: Instant,
}

/// Counts so far, for the progress line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Calls completed, warmup included.
    pub calls: u64,
    /// Errors recorded.
    pub errors: u64,
}

/// Everything a [`Recorder`] collected, merged.
#[derive(Debug)]
pub struct Totals {
    /// Latencies of the counted calls, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Calls completed inside the window.
    pub calls: u64,
    /// Request plus response payload bytes of those calls.
    pub bytes: u64,
    /// Connections opened inside the window.
    pub connects: u64,
    /// Errors by label: (count, first message).
    pub errors: BTreeMap<String, (u64, String)>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("shards", &self.shards.len())
            .field("window_start", &self.window_start)
            .field("window_end", &self.window_end)
            .finish_non_exhaustive()
    }
}

impl Recorder {
    /// A recorder counting calls that complete in `[window_start, window_end]`, with about
    /// `shards` independent locks.
    pub fn new(shards: usize, window_start: Instant, window_end: Instant) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| Mutex::new(Shard::new()))
            .collect();
        Recorder {
            shards,
            window_start,
            window_end,
        }
    }

    /// Number of shards; workers pass any index, it is reduced modulo this.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, index: usize) -> MutexGuard<'_, Shard> {
        let m = &self.shards[index % self.shards.len()];
        // A panic while holding the lock cannot leave the counters inconsistent in a harmful way.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn in_window(&self, t: Instant) -> bool {
        t >= self.window_start && t <= self.window_end
    }

    /// Records a successful call that started at `started`, finished at `finished` and moved
    /// `bytes` payload bytes (request plus response).
    pub fn record_call(&self, shard: usize, started: Instant, finished: Instant, bytes: u64) {
        let counted = self.in_window(finished);
        let ns = u64::try_from(finished.saturating_duration_since(started).as_nanos())
            .unwrap_or(u64::MAX);
        let mut s = self.shard(shard);
        s.calls_total += 1;
        if counted {
            s.calls += 1;
            s.bytes += bytes;
            s.hist.saturating_record(ns.max(1));
        }
    }

    /// Records a connection opened at `at`.
    pub fn record_connect(&self, shard: usize, at: Instant) {
        if self.in_window(at) {
            self.shard(shard).connects += 1;
        }
    }

    /// Records a failed call or connection attempt under its label.
    pub fn record_error(&self, shard: usize, err: &BenchError) {
        self.record_errors(shard, err, 1);
    }

    /// Records `count` failures with the same label and message.
    pub fn record_errors(&self, shard: usize, err: &BenchError, count: u64) {
        let mut s = self.shard(shard);
        s.errors_total += count;
        if let Some(entry) = s.errors.get_mut(err.kind()) {
            entry.0 += count;
        } else {
            s.errors
                .insert(err.kind().to_owned(), (count, err.message().to_owned()));
        }
    }

    /// Counts so far (takes every shard lock briefly).
    pub fn snapshot(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for i in 0..self.shards.len() {
            let s = self.shard(i);
            snap.calls += s.calls_total;
            snap.errors += s.errors_total;
        }
        snap
    }

    /// Merges all shards.
    pub fn totals(&self) -> Totals {
        let mut t = Totals {
            hist: new_histogram(),
            calls: 0,
            bytes: 0,
            connects: 0,
            errors: BTreeMap::new(),
        };
        for i in 0..self.shards.len() {
            let s = self.shard(i);
            // Same bounds on both sides, so adding cannot fail; if it did, keep the counts anyway.
            let _ = t.hist.add(&s.hist);
            t.calls += s.calls;
            t.bytes += s.bytes;
            t.connects += s.connects;
            for (kind, (count, msg)) in &s.errors {
                let e = t
                    .errors
                    .entry(kind.clone())
                    .or_insert_with(|| (0, msg.clone()));
                e.0 += count;
            }
        }
        t
    }
}
