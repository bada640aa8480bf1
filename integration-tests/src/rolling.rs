//! One step of a rolling restart: a new `rpc-server` on the same address as a running one
//! (both with `--reuse-port`), ready before the old one is told to stop.

use std::path::Path;
use std::time::Duration;

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
