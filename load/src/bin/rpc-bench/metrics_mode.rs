//! `rpc-bench metrics`: the cost of the server's metrics. One build, two servers: one started
//! with `--metrics-listen 127.0.0.1:0` (metrics recorded on every call, as an operator runs
//! it), one without, in the same paired rounds as `ab`; each workload passes when the median
//! of per-round on ÷ off is at least 0.95 (issue 20: "W1–W3 stay ≥ 0.95× of metrics off").

use std::path::Path;

use crate::pair::{kit_pair, KitPair};
use crate::Opts;

/// What metrics-on must keep of metrics-off's throughput, per workload.
const TARGET: f64 = 0.95;

/// Runs the comparison with the binaries in `bin_dir`; returns the workloads that missed it.
pub fn metrics_on_vs_off(opts: &Opts, bin_dir: &Path) -> Result<Vec<String>, String> {
    kit_pair(
        opts,
        &KitPair {
            test: ("on", bin_dir, &["--metrics-listen", "127.0.0.1:0"]),
            base: ("off", bin_dir, &[]),
            target: TARGET,
            defaults: (20, "1,2,3"),
            sub: Some("metrics"),
            title: "rpckit benchmark: metrics on vs off",
            command: "rpc-bench metrics".to_owned(),
            note: format!(
                "{}: one build, two servers: `on` with --metrics-listen 127.0.0.1:0 (not \
                 scraped during the runs), `off` without. Each its own rpc-client; W5 with \
                 --pipeline-first-call on both. A row fails on metrics-on's errors only.",
                bin_dir.display()
            ),
        },
    )
}
