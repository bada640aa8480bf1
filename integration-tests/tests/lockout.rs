//! Robustness catalogue case 39 (issue 20), against the real `rpc-server`: a flood of idle
//! unauthenticated connections, from the real client's own address or from another, does not
//! lock the real client out. The flood is held open while the client connects and calls; the
//! server evicts idle connections to make room (see `server/src/admission/`). The handshake
//! and hello deadlines are long, so the idle connections keep their places only by the
//! admission policy, not because they time out.

mod robustness_common;

use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::time::Duration;

use rpckit_client::{Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{cli, connect_from, within, ServerProcess, TestKey, STOP_TIMEOUT};
use rpckit_proto::demo::{Request, Response};

const STEP: Duration = Duration::from_secs(60);
const FLOOD: usize = 1000;
const PER_SOURCE: usize = 16;
/// Most a 1,000-connection idle flood may add to the server's resident memory.
const MAX_FLOOD_RSS_KIB: u64 = 8 * 1024;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn server(key: &TestKey, per_source: usize, extra: &[&str]) -> ServerProcess {
    let per_source = per_source.to_string();
    let mut args = vec![
        "--handshake-timeout",
        "120s",
        "--hello-timeout",
        "120s",
        "--max-unauthenticated-per-source",
        &per_source,
    ];
    args.extend_from_slice(extra);
    ServerProcess::start(&key.path, &args)
}

/// Opens `n` silent connections from `from`, and waits until the server has made room for
/// each past the first `kept` by evicting one. Returns them, held open by the caller.
fn flood(server: &ServerProcess, from: IpAddr, n: usize, kept: usize) -> Vec<TcpStream> {
    let held: Vec<TcpStream> = (0..n)
        .map(|i| connect_from(from, server.addr).unwrap_or_else(|e| panic!("flood {i}: {e}")))
        .collect();
    server.expect_log_count("evicted an unauthenticated connection", n - kept, STEP);
    held
}

/// The real client: connects (counting attempts, each one a fresh connection with no retry
/// inside) and makes a call. Returns how many attempts it took.
fn real_client_calls(server: &ServerProcess, key: &TestKey) -> usize {
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.reconnect_attempts = 0;
        client_config
    };
    within(STEP, async {
        for attempt in 1..=2 {
            let connected = Client::<Request, Response>::connect(
                server.addr.to_string(),
                key.id.clone(),
                key.key.clone(),
                config.clone(),
            )
            .await;
            let client = match connected {
                Ok(client) => client,
                Err(ConnectError::Handshake(e)) if attempt == 1 => {
                    eprintln!("first attempt failed: {e}");
                    continue;
                }
                Err(e) => panic!("attempt {attempt}: {e}\n{}", server.log_text()),
            };
            let answer = client.call(Request::Uppercase("lockout".into())).await;
            assert_eq!(
                answer.expect("the real client's call"),
                Response::Uppercase("LOCKOUT".into())
            );
            client.close().await;
            return attempt;
        }
        unreachable!("the loop returns or panics")
    })
}

/// The flood's cost, then the real client through the library and the CLI.
fn assert_real_client_served(server: &ServerProcess, key: &TestKey, rss_before: u64) {
    let rss_after = server.rss_kib().expect("server RSS");
    let grew = rss_after.saturating_sub(rss_before);
    eprintln!("server VmRSS {rss_before} KiB -> {rss_after} KiB under the flood (+{grew} KiB)");
    assert!(
        grew <= MAX_FLOOD_RSS_KIB,
        "the flood cost {grew} KiB of resident memory"
    );
    let attempts = real_client_calls(server, key);
    eprintln!("the real client connected in {attempts} attempt(s)");
    assert!(attempts <= 2, "at most one reconnect");
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "rpc-client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn case_39_thousand_idle_from_the_clients_own_address_do_not_lock_it_out() {
    let key = TestKey::new("lockout");
    let server = server(&key, PER_SOURCE, &[]);
    let rss_before = server.rss_kib().expect("server RSS");
    let held = flood(&server, LOCALHOST, FLOOD, PER_SOURCE);
    assert_real_client_served(&server, &key, rss_before);
    drop(held);
}

#[test]
fn case_39_thousand_idle_from_another_address_do_not_lock_the_client_out() {
    let key = TestKey::new("lockout");
    let mut server = server(&key, PER_SOURCE, &[]);
    let rss_before = server.rss_kib().expect("server RSS");
    let held = flood(&server, OTHER_HOST, FLOOD, PER_SOURCE);
    assert_real_client_served(&server, &key, rss_before);
    // The client's source had room: nothing of the flood was evicted for it. Counted once
    // the server has stopped, when its log is complete (closing the flood evicts nothing).
    drop(held);
    server.stop(STOP_TIMEOUT);
    assert_eq!(
        server.log_count("evicted an unauthenticated connection"),
        FLOOD - PER_SOURCE,
        "{}",
        server.log_text()
    );
}

#[test]
fn case_39_a_full_table_evicts_from_the_biggest_source_for_another_source() {
    let key = TestKey::new("lockout");
    // One source may fill the whole table.
    let server = server(&key, 50, &["--max-unauthenticated", "50"]);
    let rss_before = server.rss_kib().expect("server RSS");
    let held = flood(&server, OTHER_HOST, 200, 50);
    assert_real_client_served(&server, &key, rss_before);
    assert!(
        server.wait_for_log_count("evicted an unauthenticated connection", 151, STEP),
        "the client took a flood connection's place"
    );
    drop(held);
}
