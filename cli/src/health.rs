//! `rpc-client health`: a probe for containers and scripts. It connects, completes the
//! handshake and waits for the answer to one `Ping`, all within `--timeout`, and prints one
//! line: `ok: ADDR answered ping in N ms` on stdout, or why not on stderr. The exit code is
//! `call`'s: 0 healthy, 3 cannot connect, 4 authentication failed, 6 no answer in time, and
//! so on (see `main.rs`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use rpckit_proto::demo::{Request, Response};

use crate::call::{call_failure, connect, fail, EXIT_LOCAL, EXIT_SERVER_ERROR};
use crate::{keys, parse_duration, Target};

/// Arguments of `health`.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Time allowed for connect, handshake and the ping together.
    #[arg(long, env = "RPC_HEALTH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
}

/// Runs the probe and maps its outcome to `call`'s exit codes.
pub fn run(target: &Target, args: HealthArgs) -> ExitCode {
    let (key_id, key) = match keys::load(target) {
        Ok(found) => found,
        Err(e) => return fail(EXIT_LOCAL, e),
    };
    // `--connect-timeout` may shorten the connect, never lengthen the probe.
    let connect_within = target.connect_timeout.min(args.timeout);
    let started = Instant::now();
    let outcome = async_std::task::block_on(async {
        let client = connect(target, key_id, key, connect_within, args.timeout).await?;
        // The ping gets what is left of the probe's time.
        let left = args.timeout.saturating_sub(started.elapsed());
        let answer = client.call_with_timeout(Request::Ping, Some(left)).await;
        client.close().await;
        answer
    });
    match outcome {
        Ok(Response::Pong) => {
            println!(
                "ok: {} answered ping in {} ms",
                target.addr,
                started.elapsed().as_millis()
            );
            ExitCode::SUCCESS
        }
        Ok(other) => fail(
            EXIT_SERVER_ERROR,
            format!("unexpected answer to ping: {other:?}"),
        ),
        Err(e) => call_failure(&e),
    }
}
