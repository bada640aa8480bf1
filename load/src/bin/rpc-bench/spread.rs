//! `rpc-bench spread`: the balancer's cost. The same `rpc-client bench --conns 12 --depth 32`
//! against one `rpc-server` and against three (`--addr a,b,c`), all servers pinned to the
//! same CPU (so it measures the client-side balancing's overhead, not scaling), in paired
//! rounds whose order alternates. Prints calls/s of each side per round and their medians, the
//! median of the per-round ratios three ÷ one (target ≥ 0.90), and how the three servers'
//! calls spread (target: each within ±15 % of a third), with the exact commands. A third run
//! per round balances over three endpoints that are all the one server (`a,a,a`): the
//! balancing client's own cost, without three processes sharing the server CPU.

use serde_json::{json, Value};

use crate::procs::{describe, pinned, run_client};
use crate::runner::{round_order, Bench, Side};
use crate::stats::{fmt, fmt_ratio, fmt_rounds, median, ratios, table};
use crate::suite::{bin_dir, header, knobs, prepare};
use crate::Opts;

/// What the issue asks of three servers against one.
const RATIO_TARGET: f64 = 0.90;
/// Largest share of calls one server may be off a third by, in percent.
const SPREAD_TARGET_PCT: f64 = 15.0;
/// The load: `rpc-client bench` arguments besides the address, duration and warmup.
const LOAD: [&str; 4] = ["--conns", "12", "--depth", "32"];

/// One run's calls/s and the calls each endpoint got.
struct Run {
    calls_per_sec: f64,
    errors: u64,
    by_endpoint: Vec<(String, u64)>,
}

/// Runs `rpc-client bench` with [`LOAD`] against `addrs` (one address or a list), from
/// `side`'s client binary; saves the report as `<name>.json`.
fn run(bench: &mut Bench, side: &Side, addrs: &str, name: &str) -> Result<Run, String> {
    let mut args: Vec<String> = vec![
        "--keyring".into(),
        bench.keyring.display().to_string(),
        "--addr".into(),
        addrs.into(),
        "bench".into(),
    ];
    args.extend(LOAD.map(String::from));
    args.extend([
        "--duration".into(),
        bench.secs.to_string(),
        "--warmup".into(),
        bench.warmup.to_string(),
        "--json".into(),
    ]);
    let cmd = pinned(bench.client_cpu, &side.client, &args);
    bench.record(&cmd);
    eprintln!("bench: {name}: {}", describe(&cmd));
    let limit = std::time::Duration::from_secs_f64(bench.secs + bench.warmup + 60.0);
    let out = run_client(cmd, limit, &bench.work.join(format!("{name}.err")), |_| {
        Ok(())
    })
    .map_err(|e| format!("{name}: {e}"))?;
    let report: Value = serde_json::from_str(&out.lines.join("\n"))
        .map_err(|e| format!("{name}: report is not JSON: {e}"))?;
    bench.save(name, &report)?;
    let by_endpoint = report["calls_by_endpoint"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(addr, n)| (addr.clone(), n.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        calls_per_sec: report["calls_per_sec"].as_f64().unwrap_or(0.0),
        errors: report["errors"].as_u64().unwrap_or(0),
        by_endpoint,
    })
}

/// How far the busiest and the idlest endpoint are from an even share, in percent of it
/// (the larger of the two); NaN without calls.
fn spread_pct(by_endpoint: &[(String, u64)]) -> f64 {
    let total: u64 = by_endpoint.iter().map(|(_, n)| n).sum();
    if by_endpoint.is_empty() || total == 0 {
        return f64::NAN;
    }
    let even = total as f64 / by_endpoint.len() as f64;
    by_endpoint
        .iter()
        .map(|(_, n)| ((*n as f64 - even) / even * 100.0).abs())
        .fold(0.0, f64::max)
}

/// `rpc-bench spread`: prints the table; returns the targets missed.
pub fn one_vs_three(opts: &Opts) -> Result<Vec<String>, String> {
    let (mut bench, rounds, _) = prepare(opts, Some("spread"), 5, "1")?;
    let bin_dir = bin_dir(opts)?;
    let cpu = opts.server_cpu;
    let mut one = Side::kit("one", &bin_dir, cpu, &mut bench)?;
    let mut three = Side::kit("three-a", &bin_dir, cpu, &mut bench)?;
    let others = [
        Side::kit("three-b", &bin_dir, cpu, &mut bench)?,
        Side::kit("three-c", &bin_dir, cpu, &mut bench)?,
    ];
    let list = std::iter::once(&three)
        .chain(&others)
        .map(|s| s.server.addr.clone())
        .collect::<Vec<_>>()
        .join(",");

    let (mut ones, mut threes, mut spreads) = (Vec::new(), Vec::new(), Vec::new());
    let mut alone = Vec::new();
    let mut errors = 0;
    let mut rows = Vec::new();
    for round in 1..=rounds {
        eprintln!("bench: round {round} of {rounds}");
        for i in round_order(3, round) {
            let side = if i == 2 { &mut three } else { &mut one };
            side.server.check_alive()?;
            match i {
                0 => {
                    let addr = side.server.addr.clone();
                    let r = run(&mut bench, side, &addr, &format!("spread-one-r{round}"))?;
                    errors += r.errors;
                    ones.push(r.calls_per_sec);
                }
                1 => {
                    let addr = side.server.addr.clone();
                    let same = [addr.as_str(); 3].join(",");
                    let r = run(&mut bench, side, &same, &format!("spread-alone-r{round}"))?;
                    errors += r.errors;
                    alone.push(r.calls_per_sec);
                }
                _ => {
                    let r = run(&mut bench, side, &list, &format!("spread-three-r{round}"))?;
                    errors += r.errors;
                    threes.push(r.calls_per_sec);
                    spreads.push(spread_pct(&r.by_endpoint));
                    let shares: Vec<String> = r
                        .by_endpoint
                        .iter()
                        .map(|(a, n)| format!("{a}: {n}"))
                        .collect();
                    rows.push((round, shares.join(", ")));
                }
            }
        }
    }
    let per_round = ratios(&threes, &ones);
    let ratio = median(&per_round);
    let alone_per_round = ratios(&alone, &ones);
    let worst_spread = spreads.iter().copied().fold(0.0, f64::max);

    let load = format!(
        "rpc-client --addr a,b,c bench {} --duration {} --warmup {}",
        LOAD.join(" "),
        bench.secs,
        bench.warmup
    );
    let command = format!("rpc-bench spread {}", knobs(opts, rounds, None));
    let mut out = header(&command, opts, rounds);
    out.push(format!(
        "load: {load} (and the same against one server, and over a,a,a: three endpoints that are the one server)"
    ));
    out.push(String::new());
    out.extend(table(
        &[
            "round",
            "1 server calls/s",
            "3 servers calls/s",
            "3 ÷ 1",
            "a,a,a calls/s",
            "a,a,a ÷ 1",
            "spread ±%",
            "calls per endpoint",
        ],
        &(0..rounds)
            .map(|i| {
                vec![
                    (i + 1).to_string(),
                    fmt(ones.get(i).copied().unwrap_or(f64::NAN)),
                    fmt(threes.get(i).copied().unwrap_or(f64::NAN)),
                    fmt_ratio(per_round.get(i).copied().unwrap_or(f64::NAN)),
                    fmt(alone.get(i).copied().unwrap_or(f64::NAN)),
                    fmt_ratio(alone_per_round.get(i).copied().unwrap_or(f64::NAN)),
                    fmt(spreads.get(i).copied().unwrap_or(f64::NAN)),
                    rows.get(i).map(|r| r.1.clone()).unwrap_or_default(),
                ]
            })
            .collect::<Vec<_>>(),
    ));
    out.push(String::new());
    out.push(format!(
        "median calls/s: 1 server {}, 3 servers {}; median 3 ÷ 1 ratio {} (rounds: {}; target ≥ {RATIO_TARGET}); widest spread ±{} % (target ±{SPREAD_TARGET_PCT} %); errors {errors}",
        fmt(median(&ones)),
        fmt(median(&threes)),
        fmt_ratio(ratio),
        fmt_rounds(&per_round),
        fmt(worst_spread),
    ));
    out.push(format!(
        "the balancing client alone (a,a,a on one server) ÷ one server: median {} (rounds: {}); reported, no target",
        fmt_ratio(median(&alone_per_round)),
        fmt_rounds(&alone_per_round),
    ));
    for line in &out {
        println!("{line}");
    }
    let md = bench.out.join("spread.md");
    std::fs::write(&md, out.join("\n") + "\n").map_err(|e| format!("{}: {e}", md.display()))?;
    bench.save(
        "spread-summary",
        &json!({
            "one_calls_per_sec": ones, "three_calls_per_sec": threes, "ratios": per_round,
            "alone_calls_per_sec": alone, "alone_ratios": alone_per_round,
            "median_ratio": ratio, "spread_pct": spreads, "errors": errors,
        }),
    )?;

    let mut missed = Vec::new();
    if ratio.is_nan() || ratio < RATIO_TARGET {
        missed.push(format!(
            "3 ÷ 1 servers {} < {RATIO_TARGET}",
            fmt_ratio(ratio)
        ));
    }
    if worst_spread.is_nan() || worst_spread > SPREAD_TARGET_PCT {
        missed.push(format!(
            "spread ±{} % > ±{SPREAD_TARGET_PCT} %",
            fmt(worst_spread)
        ));
    }
    if errors > 0 {
        missed.push(format!("{errors} errors"));
    }
    drop(others);
    Ok(missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_the_widest_distance_from_an_even_share() {
        let e =
            |n: &[u64]| -> Vec<(String, u64)> { n.iter().map(|&n| (String::new(), n)).collect() };
        assert_eq!(spread_pct(&e(&[100, 100, 100])), 0.0);
        assert!((spread_pct(&e(&[115, 100, 85])) - 15.0).abs() < 1e-9);
        assert!((spread_pct(&e(&[50, 125, 125])) - 50.0).abs() < 1e-9);
        assert!(spread_pct(&e(&[0, 0, 0])).is_nan());
    }
}
