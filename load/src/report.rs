//! The result of a run: latency percentiles, rates, errors by kind; as JSON or a short
//! human-readable block.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::recorder::Totals;

/// Latency distribution of the counted calls, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Number of latencies recorded.
    pub samples: u64,
    /// Smallest latency.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest latency.
    pub max: f64,
}

impl LatencySummary {
    /// Summarizes a histogram of nanosecond values into microseconds (all zero when empty).
    pub fn from_nanos(hist: &Histogram<u64>) -> Self {
        if hist.is_empty() {
            return LatencySummary::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        LatencySummary {
            samples: hist.len(),
            min: us(hist.min()),
            mean: hist.mean() / 1000.0,
            p50: us(hist.value_at_quantile(0.50)),
            p90: us(hist.value_at_quantile(0.90)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
        }
    }
}

/// Result of one benchmark run; serializes to the `--json` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    /// Protocol driver that ran, e.g. `raw` or `rpckit`.
    pub driver: String,
    /// Server address as given.
    pub target: String,
    /// Method called.
    pub method: String,
    /// Concurrent connections (churn: concurrent connect/call/close loops).
    pub connections: usize,
    /// Calls in flight per connection (1 in churn mode).
    pub depth: usize,
    /// Request payload size in bytes.
    pub payload_bytes: usize,
    /// Whether every call used a fresh connection.
    pub churn: bool,
    /// Idle mode: connections were opened, probed with one call each and held without
    /// traffic; `calls` and `latency_us` then describe the probe calls, and `calls_per_sec`
    /// and `mb_per_sec` are 0.
    pub idle: bool,
    /// Idle mode: connections opened, probed and held for the whole `duration_secs`; absent
    /// otherwise.
    pub connections_held: Option<u64>,
    /// Idle mode: connection attempts that failed (connect, handshake or timeout) or whose
    /// probe call failed; absent otherwise.
    pub connect_errors: Option<u64>,
    /// Warmup length in seconds (not measured).
    pub warmup_secs: f64,
    /// Length of the measurement window in seconds.
    pub duration_secs: f64,
    /// Calls that succeeded inside the window.
    pub calls: u64,
    /// `calls / duration_secs`.
    pub calls_per_sec: f64,
    /// Request plus response payload bytes of the counted calls.
    pub bytes: u64,
    /// `bytes / duration_secs / 1e6` (decimal megabytes, payload only, no framing).
    pub mb_per_sec: f64,
    /// Connections opened inside the window.
    pub connects: u64,
    /// `connects / duration_secs` in churn mode; absent otherwise.
    pub connections_per_sec: Option<f64>,
    /// Total failed calls and connection attempts (whole run, warmup included).
    pub errors: u64,
    /// Failures by label.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// First message seen for each label.
    pub error_samples: BTreeMap<String, String>,
    /// Latency of the counted calls (churn: connect + call + close), microseconds.
    pub latency_us: LatencySummary,
    /// Against several servers (`--addr a,b,c`): calls each endpoint got over the whole run
    /// (warmup included), by address; empty (and absent from the JSON) otherwise.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub calls_by_endpoint: BTreeMap<String, u64>,
}

/// What the engine knows about a run besides its counters.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Driver name.
    pub driver: String,
    /// Target address as given.
    pub target: String,
    /// Method called.
    pub method: String,
    /// Connections (or churn loops).
    pub connections: usize,
    /// Depth actually used.
    pub depth: usize,
    /// Payload size.
    pub payload_bytes: usize,
    /// Churn mode.
    pub churn: bool,
    /// Idle mode and what it held; `None` in the other modes.
    pub idle: Option<IdleCounts>,
    /// Warmup length.
    pub warmup: Duration,
    /// Measurement window length.
    pub window: Duration,
}

/// What an idle run held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdleCounts {
    /// Connections opened, probed and held for the whole hold.
    pub held: u64,
    /// Connection attempts or probe calls that failed.
    pub connect_errors: u64,
}

impl BenchReport {
    /// Builds the report from merged counters.
    pub fn from_totals(info: RunInfo, totals: &Totals) -> Self {
        let secs = info.window.as_secs_f64();
        let rated = info.idle.is_none() && secs > 0.0;
        let per_sec = |n: u64| if rated { n as f64 / secs } else { 0.0 };
        BenchReport {
            driver: info.driver,
            target: info.target,
            method: info.method,
            connections: info.connections,
            depth: info.depth,
            payload_bytes: info.payload_bytes,
            churn: info.churn,
            idle: info.idle.is_some(),
            connections_held: info.idle.map(|i| i.held),
            connect_errors: info.idle.map(|i| i.connect_errors),
            warmup_secs: info.warmup.as_secs_f64(),
            duration_secs: secs,
            calls: totals.calls,
            calls_per_sec: per_sec(totals.calls),
            bytes: totals.bytes,
            mb_per_sec: per_sec(totals.bytes) / 1e6,
            connects: totals.connects,
            connections_per_sec: info.churn.then(|| per_sec(totals.connects)),
            errors: totals.errors.values().map(|(n, _)| n).sum(),
            errors_by_kind: totals
                .errors
                .iter()
                .map(|(k, (n, _))| (k.clone(), *n))
                .collect(),
            error_samples: totals
                .errors
                .iter()
                .map(|(k, (_, m))| (k.clone(), m.clone()))
                .collect(),
            latency_us: LatencySummary::from_nanos(&totals.hist),
            calls_by_endpoint: BTreeMap::new(),
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize report: {e}\"}}"))
    }

    /// The short human-readable block printed by [`BenchReport::print_human`].
    pub fn human(&self) -> String {
        let l = &self.latency_us;
        let mut out = format!(
            "bench {} {} method={} conns={} depth={} payload={}B{} duration={:.2}s warmup={:.2}s\n",
            self.driver,
            self.target,
            self.method,
            self.connections,
            self.depth,
            self.payload_bytes,
            if self.churn {
                " churn"
            } else if self.idle {
                " idle"
            } else {
                ""
            },
            self.duration_secs,
            self.warmup_secs,
        );
        if let (Some(held), Some(failed)) = (self.connections_held, self.connect_errors) {
            out.push_str(&format!(
                "  idle       held {held} connections for {:.2}s, connect errors {failed}\n",
                self.duration_secs
            ));
            out.push_str(&format!(
                "  probes     {} calls, errors {}\n",
                self.calls, self.errors
            ));
        } else {
            out.push_str(&format!(
                "  calls      {} ({:.0} calls/s), errors {}\n",
                self.calls, self.calls_per_sec, self.errors
            ));
            out.push_str(&format!(
                "  throughput {:.2} MB/s (request+response payload)\n",
                self.mb_per_sec
            ));
        }
        if let Some(cps) = self.connections_per_sec {
            out.push_str(&format!(
                "  churn      {} connections ({:.0} connections/s)\n",
                self.connects, cps
            ));
        }
        out.push_str(&format!(
            "  latency us p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}  (mean {:.1})\n",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        ));
        let spread: u64 = self.calls_by_endpoint.values().sum();
        for (addr, n) in &self.calls_by_endpoint {
            let share = if spread > 0 {
                *n as f64 * 100.0 / spread as f64
            } else {
                0.0
            };
            out.push_str(&format!(
                "  endpoint   {addr}: {n} calls ({share:.1} %, warmup included)\n"
            ));
        }
        for (kind, n) in &self.errors_by_kind {
            let sample = self
                .error_samples
                .get(kind)
                .map(String::as_str)
                .unwrap_or("");
            out.push_str(&format!("  error      {kind}: {n} (e.g. {sample})\n"));
        }
        out
    }

    /// Prints [`BenchReport::human`] to stdout.
    pub fn print_human(&self) {
        print!("{}", self.human());
    }

    /// Prints the report to stdout: JSON if `json`, else the human-readable block.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            self.print_human();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::{new_histogram, Recorder, Snapshot};
    use crate::BenchError;
    use std::time::Instant;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= b.abs() * 0.001 + 1e-9
    }

    #[test]
    fn percentiles_from_known_samples() {
        let mut h = new_histogram();
        // 1..=1000 microseconds, one each.
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let s = LatencySummary::from_nanos(&h);
        assert_eq!(s.samples, 1000);
        assert!(close(s.min, 1.0), "{s:?}");
        assert!(close(s.p50, 500.0), "{s:?}");
        assert!(close(s.p90, 900.0), "{s:?}");
        assert!(close(s.p99, 990.0), "{s:?}");
        assert!(close(s.p999, 999.0), "{s:?}");
        assert!(close(s.max, 1000.0), "{s:?}");
        assert!(close(s.mean, 500.5), "{s:?}");
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        assert_eq!(
            LatencySummary::from_nanos(&new_histogram()),
            LatencySummary::default()
        );
    }

    #[test]
    fn recorder_counts_only_the_window_and_merges_shards() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let end = t0 + Duration::from_secs(3);
        let r = Recorder::new(4, start, end);
        // Warmup call: not counted.
        r.record_call(0, t0, t0 + Duration::from_millis(10), 10);
        // Counted calls on several shards, latency 100 us and 300 us.
        for i in 0..10 {
            let s = start + Duration::from_millis(100 * i);
            let lat = if i % 2 == 0 { 100 } else { 300 };
            r.record_call(i as usize, s, s + Duration::from_micros(lat), 10);
        }
        // After the deadline: not counted.
        r.record_call(1, end, end + Duration::from_millis(1), 10);
        r.record_connect(2, start + Duration::from_millis(5));
        r.record_connect(2, t0);
        r.record_error(3, &BenchError::new("x", "first"));
        r.record_error(0, &BenchError::new("x", "second"));
        r.record_errors(1, &BenchError::new("y", "why"), 3);

        assert_eq!(
            r.snapshot(),
            Snapshot {
                calls: 12,
                errors: 5
            }
        );
        let t = r.totals();
        assert_eq!(t.calls, 10);
        assert_eq!(t.bytes, 100);
        assert_eq!(t.connects, 1);
        assert_eq!(t.errors["x"].0, 2);
        assert_eq!(t.errors["y"], (3, "why".to_owned()));

        let info = RunInfo {
            driver: "raw".into(),
            target: "127.0.0.1:1".into(),
            method: "uppercase".into(),
            connections: 1,
            depth: 1,
            payload_bytes: 5,
            churn: true,
            idle: None,
            warmup: Duration::from_secs(1),
            window: Duration::from_secs(2),
        };
        let rep = BenchReport::from_totals(info.clone(), &t);
        assert!(close(rep.calls_per_sec, 5.0));
        assert!(close(rep.mb_per_sec, 50.0 / 1e6));
        assert_eq!(rep.connections_per_sec, Some(0.5));
        assert_eq!(rep.errors, 5);
        assert!(close(rep.latency_us.p50, 100.0));
        assert!(close(rep.latency_us.max, 300.0));
        let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
        assert_eq!(json["calls"], 10);
        assert_eq!(json["errors_by_kind"]["y"], 3);
        assert!(rep.human().contains("connections/s"));
        assert!(json.get("calls_by_endpoint").is_none());
        let mut spread = rep.clone();
        spread.calls_by_endpoint.insert("127.0.0.1:1".into(), 3);
        spread.calls_by_endpoint.insert("127.0.0.1:2".into(), 1);
        let json: serde_json::Value = serde_json::from_str(&spread.to_json()).unwrap();
        assert_eq!(json["calls_by_endpoint"]["127.0.0.1:2"], 1);
        assert!(spread
            .human()
            .contains("endpoint   127.0.0.1:1: 3 calls (75.0 %"));
        assert!(!rep.idle && rep.connections_held.is_none());

        let idle = RunInfo {
            churn: false,
            idle: Some(IdleCounts {
                held: 7,
                connect_errors: 2,
            }),
            ..info
        };
        let rep = BenchReport::from_totals(idle, &t);
        assert!(rep.idle);
        assert_eq!(rep.calls, 10);
        assert_eq!((rep.calls_per_sec, rep.mb_per_sec), (0.0, 0.0));
        assert_eq!(rep.connections_held, Some(7));
        assert_eq!(rep.connect_errors, Some(2));
        let json: serde_json::Value = serde_json::from_str(&rep.to_json()).unwrap();
        assert_eq!(json["connections_held"], 7);
        assert!(rep.human().contains("held 7 connections"));
    }
}
