//! `rpc-client --addr a,b,c` against real `rpc-server` processes: `call` goes through a
//! client of all of them (a dead one in the list costs nothing), and `bench` reports the calls
//! each one got.

use std::process::Output;

use rpckit_integration_tests::{addr_list, cli, DeadPort, ServerProcess, TestKey};
use serde_json::Value;

#[track_caller]
fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn call_over_a_list_with_a_dead_server_in_it_succeeds() {
    let key = TestKey::new("balance-cli-call");
    let a = ServerProcess::start(&key.path, &[]);
    let b = ServerProcess::start(&key.path, &[]);
    let dead = DeadPort::new();
    let list = format!("{},{},{}", a.addr, dead.addr(), b.addr);
    for _ in 0..4 {
        let out = cli(&list, &key.path, &["call", "uppercase", "hello"]);
        assert_eq!(stdout_of(&out).trim(), "HELLO");
    }
}

#[test]
fn bench_over_three_servers_reports_calls_per_endpoint() {
    let key = TestKey::new("balance-cli-bench");
    let servers: Vec<_> = (0..3)
        .map(|_| ServerProcess::start(&key.path, &[]))
        .collect();
    let list = addr_list(&servers);
    let args = [
        "bench",
        "--conns",
        "3",
        "--depth",
        "4",
        "--duration",
        "0.5",
        "--warmup",
        "0.1",
        "--json",
    ];
    let stdout = stdout_of(&cli(&list, &key.path, &args));
    let start = stdout.find('{').expect("a JSON report");
    let report: Value = serde_json::from_str(&stdout[start..]).expect("JSON");
    assert_eq!(report["errors"].as_u64(), Some(0), "{report:#}");
    assert_eq!(report["target"], list.as_str(), "{report:#}");
    // As many TCP connections, and calls in flight on each, as against one server.
    assert_eq!(report["connections"], 3, "{report:#}");
    assert_eq!(report["depth"], 4, "{report:#}");
    let calls = report["calls"].as_u64().unwrap_or(0);
    assert!(calls > 0, "{report:#}");
    let by_endpoint = report["calls_by_endpoint"]
        .as_object()
        .unwrap_or_else(|| panic!("no calls_by_endpoint: {report:#}"));
    assert_eq!(by_endpoint.len(), 3, "{report:#}");
    let mut total = 0;
    for server in &servers {
        let n = by_endpoint[&server.addr.to_string()].as_u64().unwrap_or(0);
        assert!(n > 0, "{report:#}");
        total += n;
    }
    // The endpoints' counts cover the warmup and the probe as well as the window.
    assert!(total >= calls, "{report:#}");
}
