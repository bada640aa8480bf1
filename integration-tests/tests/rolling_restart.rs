//! Robustness case 44 with client-side balancing: three `rpc-server`s under steady load from
//! clients of all three addresses (several connections, many calls in flight, each call with a
//! payload of its own). A rolling restart (a new process on each port in turn, `--reuse-port`,
//! ready before the old one gets SIGTERM) fails no call and runs each exactly once; a server
//! killed with SIGKILL costs at most the calls in flight there, and every call started after
//! the kill is answered by the others.

use std::time::Duration;

use rpckit_client::{Client, ClientConfig};
use rpckit_integration_tests::rolling::{finish, roll_over};
use rpckit_integration_tests::steady_load::SteadyLoad;
use rpckit_integration_tests::{addr_list, client, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};

/// Longest any one wait of these tests may take.
const STEP: Duration = Duration::from_secs(30);
/// Clients, each with a connection to every server.
const CLIENTS: usize = 4;
/// Worker threads per client, each with one call in flight at a time.
const WORKERS_PER_CLIENT: usize = 12;
/// Calls answered between the steps of a test, to show the load goes on.
const PROGRESS: u64 = 300;

fn clients(servers: &[ServerProcess], key: &TestKey) -> Vec<Client<Request, Response>> {
    let list = addr_list(servers);
    (0..CLIENTS)
        .map(|_| client(&list, key, ClientConfig::default()))
        .collect()
}

#[test]
fn a_rolling_restart_under_client_side_balancing_fails_no_call() {
    let key = TestKey::new("rolling");
    let reuse = ["--reuse-port"];
    let mut servers: Vec<_> = (0..3)
        .map(|_| ServerProcess::start(&key.path, &reuse))
        .collect();
    let clients = clients(&servers, &key);
    let load = SteadyLoad::start(&clients, WORKERS_PER_CLIENT);
    load.wait_for_progress(PROGRESS, STEP);

    let mut ran = 0;
    for server in &mut servers {
        ran += roll_over(server, &key.path, &reuse, STEP);
        load.wait_for_progress(PROGRESS, STEP);
    }
    let (tally, ran_by_new) = finish(
        "rolling restart, client-side balancing",
        load,
        &mut servers,
        ran,
        STEP,
    );
    // A client of several servers sends a call answered ShuttingDown elsewhere by itself.
    assert_eq!(tally.resent_after_shutting_down, 0, "{tally:?}");
    assert!(
        ran_by_new.iter().sum::<u64>() > 0,
        "the new servers got no call"
    );
}

#[test]
fn a_server_killed_under_load_costs_at_most_its_calls_in_flight() {
    let key = TestKey::new("rolling-kill");
    let mut servers: Vec<_> = (0..3)
        .map(|_| ServerProcess::start(&key.path, &[]))
        .collect();
    let clients = clients(&servers, &key);
    let load = SteadyLoad::start(&clients, WORKERS_PER_CLIENT);
    load.wait_for_progress(PROGRESS, STEP);

    // Frozen, the victim answers nothing: calls sent to it stay in flight there while the
    // others go on. Then every worker not stuck there parks, so that the count of calls in
    // flight on the victim (summed over the clients) holds still when it is killed.
    let victim = servers[1].addr.to_string();
    let in_flight_on_victim = || {
        clients
            .iter()
            .flat_map(|c| c.endpoint_stats())
            .filter(|s| s.addr == victim)
            .map(|s| s.in_flight)
            .sum::<usize>()
    };
    servers[1].freeze();
    load.wait_for_progress(PROGRESS, STEP);
    load.pause(STEP, in_flight_on_victim);
    let stuck = in_flight_on_victim();
    assert!(stuck > 0, "no call was in flight on the victim");
    servers[1].signal(libc::SIGKILL);
    load.mark();
    load.resume();
    load.wait_for_progress(PROGRESS, STEP);
    let tally = load.stop();

    println!(
        "SIGKILL under client-side balancing: {} calls made, {} failed ({} outcome unknown, \
         {} calls in flight on the killed server); {} calls started after the kill, {} of them \
         not answered",
        tally.started,
        tally.not_answered(),
        tally.outcome_unknown,
        stuck,
        tally.started_after_mark,
        tally.not_answered_after_mark
    );
    assert!(tally.failed.is_empty(), "failed calls: {:?}", tally.failed);
    assert!(
        tally.outcome_unknown <= stuck as u64,
        "{} outcome unknown, {stuck} in flight on the killed server",
        tally.outcome_unknown
    );
    assert!(tally.started_after_mark > 0);
    assert_eq!(tally.not_answered_after_mark, 0, "{tally:?}");
    assert!(tally.answered_twice.is_empty(), "{tally:?}");
    assert_eq!(tally.resent_after_shutting_down, 0, "{tally:?}");
    let mut killed = servers.remove(1);
    assert!(killed.wait_exit(STEP).is_some(), "the victim did not die");
}
