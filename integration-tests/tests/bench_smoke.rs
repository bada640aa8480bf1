//! Smoke test of `rpc-client bench` (the engine behind `make bench`) against the real
//! `rpc-server` and `rpc-raw-reference`: every mode runs, prints parseable JSON, makes calls and
//! counts no errors. No wall-clock thresholds: this checks that the bench works, not how fast.

use std::net::SocketAddr;
use std::process::Output;

use rpckit_integration_tests::{cli, DeadPort, RawReference, ServerProcess, TestKey};
use serde_json::Value;

/// Runs `rpc-client bench <args>` against `addr`, expects exit 0, and returns stdout.
#[track_caller]
fn bench(addr: SocketAddr, key: &TestKey, args: &[&str]) -> String {
    let mut full = vec!["bench"];
    full.extend_from_slice(args);
    let out: Output = cli(addr, &key.path, &full);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rpc-client {full:?} failed: {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Parses the JSON report that ends `stdout` (idle mode prints a line before it).
#[track_caller]
fn report(stdout: &str) -> Value {
    let start = stdout
        .find('{')
        .unwrap_or_else(|| panic!("no JSON report in {stdout:?}"));
    serde_json::from_str(&stdout[start..])
        .unwrap_or_else(|e| panic!("report is not JSON ({e}): {stdout:?}"))
}

/// Asserts the report counted calls and no errors, and returns it.
#[track_caller]
fn assert_clean(stdout: &str, driver: &str) -> Value {
    let r = report(stdout);
    assert_eq!(r["driver"], driver, "{r:#}");
    assert!(r["calls"].as_u64().unwrap_or(0) > 0, "no calls: {r:#}");
    assert_eq!(r["errors"].as_u64(), Some(0), "errors: {r:#}");
    r
}

const SHORT: [&str; 5] = ["--duration", "0.5", "--warmup", "0.1", "--json"];

#[test]
fn bench_runs_against_the_kit_server() {
    let key = TestKey::new("bench-smoke");
    let server = ServerProcess::start(&key.path, &[]);

    let r = assert_clean(&bench(server.addr, &key, &SHORT), "rpckit");
    assert_eq!(r["connections"], 1);
    assert!(
        r["latency_us"]["p99"].as_f64().unwrap_or(0.0) > 0.0,
        "{r:#}"
    );

    let mut args = SHORT.to_vec();
    args.extend(["--conns", "2", "--depth", "8", "--method", "echo"]);
    args.extend(["--payload", "4096"]);
    let r = assert_clean(&bench(server.addr, &key, &args), "rpckit");
    assert_eq!(r["bytes"].as_u64(), r["calls"].as_u64().map(|c| c * 8192));

    let mut args = SHORT.to_vec();
    args.extend(["--conns", "2", "--churn"]);
    let r = assert_clean(&bench(server.addr, &key, &args), "rpckit");
    assert!(r["connects"].as_u64().unwrap_or(0) > 0, "{r:#}");

    // Churn with each call riding its connection's handshake: every connection answered.
    args.push("--pipeline-first-call");
    let r = assert_clean(&bench(server.addr, &key, &args), "rpckit");
    assert_eq!(r["connects"].as_u64(), r["calls"].as_u64(), "{r:#}");
}

#[test]
fn bench_arguments_out_of_range_are_a_local_error_before_any_connect() {
    // Nothing listens at the address: a bad argument must be reported as such (exit 1), not as
    // the failure to connect (exit 3) that trying would give.
    let key = TestKey::new("bench-smoke");
    let dead = DeadPort::new();
    for bad in [
        &["--conns", "0"][..],
        &["--depth", "0"][..],
        &["--duration", "0"][..],
        &["--payload", "100000000"][..],
    ] {
        let mut full = vec!["bench"];
        full.extend_from_slice(bad);
        let out = cli(dead.addr(), &key.path, &full);
        assert_eq!(out.status.code(), Some(1), "{bad:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("must"), "{bad:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{bad:?}: {stderr}");
    }
}

#[test]
fn bench_with_lazy_connections_still_fails_fast_without_a_server() {
    // With --pipeline-first-call nothing connects before the first call; the probe call made
    // before the clock starts finds the dead address, as a plain connect would.
    let key = TestKey::new("bench-smoke");
    let dead = DeadPort::new();
    for extra in [&[][..], &["--pipeline-first-call"][..]] {
        let mut full = vec!["bench"];
        full.extend_from_slice(&SHORT);
        full.extend_from_slice(extra);
        let out = cli(dead.addr(), &key.path, &full);
        assert_eq!(out.status.code(), Some(3), "{extra:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot"), "{extra:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{extra:?}: no report expected");
    }
}

#[test]
fn bench_runs_against_the_raw_reference() {
    let key = TestKey::new("bench-smoke-raw");
    let reference = RawReference::start();

    let mut args = vec!["--raw"];
    args.extend(SHORT);
    assert_clean(&bench(reference.addr, &key, &args), "raw");

    args.extend(["--conns", "2", "--depth", "8", "--payload", "4096"]);
    assert_clean(&bench(reference.addr, &key, &args), "raw");
}

#[test]
fn idle_holds_connections_against_both_servers() {
    let key = TestKey::new("bench-smoke-idle");
    let server = ServerProcess::start(&key.path, &[]);
    let reference = RawReference::start();
    let idle = ["--idle", "--conns", "20", "--duration", "0.5", "--json"];

    for (addr, raw, driver) in [
        (server.addr, false, "rpckit"),
        (reference.addr, true, "raw"),
    ] {
        let mut args = idle.to_vec();
        if raw {
            args.push("--raw");
        }
        let stdout = bench(addr, &key, &args);
        assert_eq!(
            stdout.lines().next(),
            Some("holding 20 idle connections"),
            "{stdout}"
        );
        let r = assert_clean(&stdout, driver);
        assert_eq!(r["idle"], true, "{r:#}");
        assert_eq!(r["connections_held"], 20, "{r:#}");
        assert_eq!(r["connect_errors"], 0, "{r:#}");
        assert_eq!(r["calls"], 20, "one probe call per connection: {r:#}");
    }
}
