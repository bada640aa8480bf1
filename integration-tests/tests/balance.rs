//! A client over several servers (real `rpc-server` processes on 127.0.0.1:0): calls spread
//! over them; a killed server costs only the calls in flight there; a draining one fails no
//! call (its calls finish there, or are answered `ShuttingDown` and go elsewhere); a restarted
//! one is eased back in.

use std::time::Duration;

use async_std::task;
use rpckit_client::{CallError, Client, ClientConfig, EndpointState, EndpointStats};
use rpckit_integration_tests::{addr_list, calls_total, client, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};

const STEP: Duration = Duration::from_secs(60);
const EXIT_WAIT: Duration = Duration::from_secs(30);

fn start_three(key: &TestKey, extra: &[&str]) -> Vec<ServerProcess> {
    (0..3)
        .map(|_| ServerProcess::start(&key.path, extra))
        .collect()
}

fn stats_of(client: &Client<Request, Response>, server: &ServerProcess) -> EndpointStats {
    let addr = server.addr.to_string();
    client
        .endpoint_stats()
        .into_iter()
        .find(|s| s.addr == addr)
        .expect("an endpoint per server")
}

/// Runs `total` pings over `callers` concurrent tasks; every one must succeed.
async fn pings(client: &Client<Request, Response>, callers: usize, total: usize) {
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let client = client.clone();
            let mine = total / callers + usize::from(i < total % callers);
            task::spawn(async move {
                for _ in 0..mine {
                    assert_eq!(
                        client.call(Request::Ping).await.expect("ping"),
                        Response::Pong
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
}

/// Starts `n` `Sleep { ms }` calls, each in a task of its own, and waits until all of them
/// are in flight.
fn sleepers(
    client: &Client<Request, Response>,
    n: usize,
    ms: u64,
) -> Vec<task::JoinHandle<Result<Response, CallError>>> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            task::spawn(async move { client.call(Request::Sleep { ms }).await })
        })
        .collect();
    within(STEP, async {
        // Bounded: one look per task turn, and the step's time limit.
        while client
            .endpoint_stats()
            .iter()
            .map(|s| s.in_flight)
            .sum::<usize>()
            < n
        {
            task::yield_now().await;
        }
    });
    tasks
}

#[test]
fn calls_spread_over_three_servers() {
    let key = TestKey::new("balance-spread");
    let servers = start_three(&key, &[]);
    let client = client(addr_list(&servers), &key, ClientConfig::default());
    const TOTAL: usize = 3000;
    within(STEP, pings(&client, 24, TOTAL));

    let stats = client.endpoint_stats();
    assert_eq!(stats.len(), 3);
    assert_eq!(stats.iter().map(|s| s.calls).sum::<u64>(), TOTAL as u64);
    for s in &stats {
        // A third each, give or take a generous margin.
        assert!((600..=1400).contains(&s.calls), "uneven spread: {stats:?}");
        assert_eq!(s.state, EndpointState::Healthy);
        assert_eq!(s.in_flight, 0);
    }
    // The servers' own counts agree: each says how many calls it ran when it drains.
    for mut server in servers {
        assert_eq!(
            server.log_count("authenticated"),
            1,
            "{}",
            server.log_text()
        );
        server.signal(libc::SIGTERM);
        let drained = server
            .wait_for_log("drained: every connection closed", STEP)
            .unwrap_or_else(|| panic!("no drain line:\n{}", server.log_text()));
        let ran = calls_total(&drained);
        let sent = stats_of(&client, &server).calls;
        assert_eq!(ran, sent, "{drained}");
        assert_eq!(server.wait_exit(EXIT_WAIT).and_then(|s| s.code()), Some(0));
    }
}

#[test]
fn a_killed_server_costs_only_the_calls_in_flight_there() {
    let key = TestKey::new("balance-kill");
    let servers = start_three(&key, &[]);
    let client = client(addr_list(&servers), &key, ClientConfig::default());
    within(STEP, pings(&client, 6, 60));
    let victim = &servers[1];

    let running = sleepers(&client, 12, 1500);
    let there = stats_of(&client, victim);
    assert!(there.in_flight > 0, "no call went to the victim: {there:?}");
    victim.signal(libc::SIGKILL);

    let mut unknown = 0;
    within(STEP, async {
        for t in running {
            match t.await {
                Ok(Response::Slept { .. }) => {}
                Err(CallError::OutcomeUnknown(_)) => unknown += 1,
                other => panic!("a call not in flight on the killed server failed: {other:?}"),
            }
        }
    });
    assert!(
        unknown <= there.in_flight,
        "{unknown} outcome-unknown calls, {} in flight on the killed server",
        there.in_flight
    );

    // Later calls go to the two others, and all succeed.
    let before = stats_of(&client, victim).calls;
    within(STEP, pings(&client, 12, 600));
    assert_eq!(
        stats_of(&client, victim).calls,
        before,
        "a call was sent to the dead server"
    );
    let spread = client.endpoint_stats();
    assert_eq!(spread.iter().map(|s| s.in_flight).sum::<usize>(), 0);
}

#[test]
fn a_draining_server_fails_no_call_and_a_restarted_one_is_eased_back_in() {
    let key = TestKey::new("balance-drain");
    let mut servers = start_three(&key, &[]);
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.reconnect_max_backoff = Duration::from_millis(200);
        client_config
    };
    let client = client(addr_list(&servers), &key, config);
    within(STEP, pings(&client, 6, 60));

    let running = sleepers(&client, 12, 1000);
    let victim_addr = servers[1].addr;
    let there = stats_of(&client, &servers[1]);
    assert!(there.in_flight > 0, "no call went to the victim: {there:?}");
    servers[1].signal(libc::SIGTERM);
    servers[1]
        .wait_for_log("shutting down", STEP)
        .unwrap_or_else(|| panic!("no drain log line:\n{}", servers[1].log_text()));

    // Calls during the drain all succeed (none goes to the draining server), and so do the
    // calls that were in flight there.
    within(STEP, pings(&client, 12, 600));
    within(STEP, async {
        for t in running {
            assert!(matches!(t.await, Ok(Response::Slept { .. })));
        }
    });
    let status = servers[1]
        .wait_exit(EXIT_WAIT)
        .expect("drained server exits");
    assert_eq!(status.code(), Some(0));

    // Restarted on the same port: it gets calls again, eased in (a share that starts small).
    servers[1] = ServerProcess::start_at(&victim_addr.to_string(), &key.path, &[]);
    let before = stats_of(&client, &servers[1]).calls;
    let state_when_back = within(STEP, async {
        // Bounded by the step's time limit; each round is a batch of real calls.
        loop {
            pings(&client, 24, 240).await;
            let now = stats_of(&client, &servers[1]);
            if now.calls > before {
                return now.state;
            }
        }
    });
    assert_eq!(state_when_back, EndpointState::Recovering);
}

#[test]
fn calls_answered_shutting_down_go_to_another_server() {
    let key = TestKey::new("balance-shutting-down");
    let mut servers = start_three(&key, &["--grace-period", "100ms"]);
    let client = client(addr_list(&servers), &key, ClientConfig::default());
    within(STEP, pings(&client, 6, 60));

    // Calls too long for the victim's grace period: it answers them ShuttingDown, and the
    // client sends them to the other two, where they finish.
    let running = sleepers(&client, 12, 1500);
    let there = stats_of(&client, &servers[1]);
    assert!(there.in_flight > 0, "no call went to the victim: {there:?}");
    servers[1].signal(libc::SIGTERM);
    within(STEP, async {
        for t in running {
            match t.await {
                Ok(Response::Slept { .. }) => {}
                other => panic!("a call failed: {other:?}"),
            }
        }
    });
    let status = servers[1]
        .wait_exit(EXIT_WAIT)
        .expect("drained server exits");
    assert_eq!(status.code(), Some(0));
    assert!(
        servers[1].log_contains("answered ShuttingDown"),
        "{}",
        servers[1].log_text()
    );
}
