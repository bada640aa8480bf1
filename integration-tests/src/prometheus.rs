//! Reading what the metrics listener serves: one sample's value from a scrape, and
//! Prometheus's own `promtool` to check a scrape's format or a rules file.

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// The value of the sample `series` (the name with its labels exactly as the server writes
/// them, e.g. `rpckit_calls_total{method="echo",outcome="ok"}`) in a Prometheus text-format
/// `body`, or `None` if it has no such sample.
pub fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Runs `promtool <args>` with `stdin` as its input. `None` (and a `SKIPPED` note on stderr)
/// if promtool is not installed: it comes with the Debian package `prometheus`, which
/// `.ci/run` installs.
pub fn promtool(args: &[&str], stdin: &[u8]) -> Option<Output> {
    let Ok(mut child) = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: promtool is not installed (Debian package `prometheus`)");
        return None;
    };
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).expect("write to promtool");
    }
    Some(child.wait_with_output().expect("wait for promtool"))
}
