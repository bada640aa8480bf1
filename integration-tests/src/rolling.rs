//! A rolling restart: one step (a new `rpc-server` on the same address as a running one, both
//! with `--reuse-port`, ready before the old one is told to stop), and its end (the load
//! stopped, the servers drained, every call accounted for exactly once).

use std::path::Path;
use std::time::Duration;

use crate::steady_load::{SteadyLoad, Tally};
use crate::ServerProcess;

/// Replaces `server` with a new process listening on the same address (`extra` must hold
/// `--reuse-port`): starts it and waits for its ready line, then sends the old one SIGTERM and
/// waits for it to drain and exit 0. Returns the calls the old one ran.
pub fn roll_over(
    server: &mut ServerProcess,
    keyring: &Path,
    extra: &[&str],
    timeout: Duration,
) -> u64 {
    let new = ServerProcess::start_at(&server.addr.to_string(), keyring, extra);
    let mut old = std::mem::replace(server, new);
    old.drain_and_count_calls(false, timeout)
}

/// Ends a rolling restart under `load`: stops the load, drains the servers now running and
/// checks that no call failed, none ended "outcome unknown", none was answered twice, and that
/// the servers ran exactly the calls answered (`ran_by_old`: what the replaced ones ran).
/// Prints the counts under `label`; returns the tally and the calls each server now running
/// ran.
pub fn finish(
    label: &str,
    load: SteadyLoad,
    servers: &mut [ServerProcess],
    ran_by_old: u64,
    timeout: Duration,
) -> (Tally, Vec<u64>) {
    let tally = load.stop();
    let ran_by_new: Vec<u64> = servers
        .iter_mut()
        .map(|s| s.drain_and_count_calls(false, timeout))
        .collect();
    println!(
        "{label}: {} calls made, {} failed ({} outcome unknown), {} answered ShuttingDown and \
         sent again; calls run by the new servers: {:?}",
        tally.started,
        tally.not_answered(),
        tally.outcome_unknown,
        tally.resent_after_shutting_down,
        ran_by_new
    );
    assert!(tally.failed.is_empty(), "failed calls: {:?}", tally.failed);
    assert_eq!(tally.outcome_unknown, 0, "{tally:?}");
    assert!(tally.answered_twice.is_empty(), "{tally:?}");
    // Exactly once on the servers' side too: every handler run is an answer the load saw.
    let ran = ran_by_old + ran_by_new.iter().sum::<u64>();
    assert_eq!(ran, tally.answered, "calls run by the servers vs answered");
    (tally, ran_by_new)
}
