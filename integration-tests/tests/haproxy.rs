//! Robustness case 44 behind a real HAProxy, run from the documented `docs/haproxy.cfg`: three
//! `rpc-server`s behind it (`send-proxy-v2` to servers that trust 127.0.0.1, `/healthz` checks
//! on their metrics ports), steady load from clients of HAProxy's one address, and a rolling
//! restart as an operator does it: SIGTERM to a server started with `--drain-delay`, so that
//! its `/healthz` answers 503 and HAProxy takes it out of rotation before it drains; once it
//! has exited, a new process on the same ports, back in rotation when its checks pass. No call
//! fails, each runs exactly once, none ends "outcome unknown".

use std::net::SocketAddr;
use std::time::Duration;

use rpckit_client::{Client, ClientConfig};
use rpckit_integration_tests::haproxy::HaProxy;
use rpckit_integration_tests::rolling::finish;
use rpckit_integration_tests::steady_load::SteadyLoad;
use rpckit_integration_tests::{ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};

/// Longest any one wait of this test may take.
const STEP: Duration = Duration::from_secs(30);
/// Clients of HAProxy's address, each with one connection through it.
const CLIENTS: usize = 6;
/// Worker threads per client, each with one call in flight at a time.
const WORKERS_PER_CLIENT: usize = 8;
/// Calls answered between the steps of the test, to show the load goes on.
const PROGRESS: u64 = 300;
/// How long a stopped server keeps serving with `/healthz` at 503: longer than HAProxy takes
/// to see two failed checks 500 ms apart (`inter 500ms fall 2`).
const DRAIN_DELAY: &str = "2s";

/// Starts `rpc-server` on `listen` and its metrics on `metrics`, as HAProxy's backends are.
fn backend(key: &TestKey, listen: &str, metrics: &str) -> ServerProcess {
    let flags = [
        "--trusted-proxies",
        "127.0.0.1",
        "--metrics-listen",
        metrics,
        "--drain-delay",
        DRAIN_DELAY,
    ];
    ServerProcess::start_at(listen, &key.path, &flags)
}

/// A server's metrics address.
fn metrics_of(server: &ServerProcess) -> SocketAddr {
    server
        .metrics_addr
        .expect("the server prints its metrics address")
}

#[test]
fn a_rolling_restart_behind_haproxy_fails_no_call() {
    let key = TestKey::new("haproxy");
    let mut servers: Vec<_> = (0..3)
        .map(|_| backend(&key, "127.0.0.1:0", "127.0.0.1:0"))
        .collect();
    let backends: Vec<_> = servers
        .iter()
        .map(|s| (s.addr, metrics_of(s).port()))
        .collect();
    let mut haproxy = HaProxy::start(&backends);
    let clients: Vec<Client<Request, Response>> = (0..CLIENTS)
        .map(|_| {
            async_std::task::block_on(Client::connect(
                haproxy.addr.to_string(),
                key.id.clone(),
                key.key.clone(),
                ClientConfig::default(),
            ))
            .unwrap_or_else(|e| {
                panic!(
                    "connect through haproxy: {e}; its output:\n{}",
                    haproxy.log_text()
                )
            })
        })
        .collect();
    let load = SteadyLoad::start(&clients, WORKERS_PER_CLIENT);
    load.wait_for_progress(PROGRESS, STEP);

    let mut ran = 0;
    for (i, server) in servers.iter_mut().enumerate() {
        let name = format!("rpc_servers/rpc{}", i + 1);
        let (addr, metrics) = (server.addr.to_string(), metrics_of(server).to_string());
        server.signal(libc::SIGTERM);
        haproxy.wait_for(&format!("{name} is DOWN"), STEP);
        ran += server.drain_and_count_calls(true, STEP);
        *server = backend(&key, &addr, &metrics);
        haproxy.wait_for(&format!("{name} is UP"), STEP);
        load.wait_for_progress(PROGRESS, STEP);
    }
    finish(
        "rolling restart behind HAProxy",
        load,
        &mut servers,
        ran,
        STEP,
    );
}
