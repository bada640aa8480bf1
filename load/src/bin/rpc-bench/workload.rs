//! The workloads: what each one asks of `rpc-client bench`, and which number it is judged by.

use serde_json::Value;

/// One workload of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Workload {
    /// Its number: W1..W7 (W6 is the idle-memory run, measured apart).
    pub n: u8,
    /// Label for the table.
    pub label: &'static str,
    /// `rpc-client bench` arguments besides duration and warmup.
    pub args: &'static [&'static str],
    /// The number it is judged by, and its unit.
    pub metric: Metric,
}

/// What a workload's result is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `calls_per_sec`.
    Calls,
    /// `mb_per_sec`.
    Megabytes,
    /// `connections_per_sec`.
    Connections,
}

impl Metric {
    /// The value in a `--json` report (0 when absent).
    pub fn of(self, report: &Value) -> f64 {
        let key = match self {
            Metric::Calls => "calls_per_sec",
            Metric::Megabytes => "mb_per_sec",
            Metric::Connections => "connections_per_sec",
        };
        report[key].as_f64().unwrap_or(0.0)
    }

    /// Unit for the table.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::Calls => "calls/s",
            Metric::Megabytes => "MB/s",
            Metric::Connections => "conns/s",
        }
    }
}

/// The load workloads (W6, idle memory, is run apart).
pub const LOAD: [Workload; 6] = [
    Workload {
        n: 1,
        label: "W1 latency (1 conn, depth 1)",
        args: &[
            "--conns",
            "1",
            "--depth",
            "1",
            "--method",
            "uppercase",
            "--payload",
            "5",
        ],
        metric: Metric::Calls,
    },
    Workload {
        n: 2,
        label: "W2 multiplexed (1 conn, depth 32)",
        args: &[
            "--conns",
            "1",
            "--depth",
            "32",
            "--method",
            "uppercase",
            "--payload",
            "5",
        ],
        metric: Metric::Calls,
    },
    Workload {
        n: 3,
        label: "W3 fan-in (64 conns, depth 1)",
        args: &[
            "--conns",
            "64",
            "--depth",
            "1",
            "--method",
            "uppercase",
            "--payload",
            "5",
        ],
        metric: Metric::Calls,
    },
    Workload {
        n: 4,
        label: "W4 bulk (echo 64 KiB, 4 conns)",
        args: &[
            "--conns",
            "4",
            "--depth",
            "1",
            "--method",
            "echo",
            "--payload",
            "65536",
        ],
        metric: Metric::Megabytes,
    },
    Workload {
        n: 5,
        label: "W5 churn (8 loops)",
        args: &[
            "--conns",
            "8",
            "--churn",
            "--method",
            "uppercase",
            "--payload",
            "5",
        ],
        metric: Metric::Connections,
    },
    Workload {
        n: 7,
        label: "W7 fan-in at scale (2000 conns, depth 1)",
        args: &[
            "--conns",
            "2000",
            "--depth",
            "1",
            "--method",
            "uppercase",
            "--payload",
            "5",
        ],
        metric: Metric::Calls,
    },
];

/// Connections W7 opens (the open-file limit must allow them).
pub const W7_CONNS: u64 = 2000;

/// The load workloads among `selected`, in order.
pub fn selected_loads(selected: &[u8]) -> Vec<Workload> {
    LOAD.iter()
        .filter(|w| selected.contains(&w.n))
        .copied()
        .collect()
}

/// Parses a workload list: numbers 1-7 separated by commas or spaces.
pub fn parse_list(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for word in text.split([',', ' ']).filter(|w| !w.is_empty()) {
        match word.parse::<u8>() {
            Ok(n @ 1..=7) => {
                if !out.contains(&n) {
                    out.push(n);
                }
            }
            _ => return Err(format!("workloads are numbers 1-7, got {word:?}")),
        }
    }
    if out.is_empty() {
        return Err("no workload selected".into());
    }
    out.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_with_commas_or_spaces() {
        assert_eq!(parse_list("1,2, 3").unwrap(), [1, 2, 3]);
        assert_eq!(parse_list("7 1 1").unwrap(), [1, 7]);
        assert!(parse_list("8").is_err());
        assert!(parse_list("").is_err());
    }
}
