//! `rpc-raw-reference`: the raw reference server that rpckit is measured against
//! (`rpckit_load::reference`: length-prefixed frames answered with the uppercased payload).
//!
//! Once listening it prints exactly one line, `rpc-raw-reference listening on <ADDR>`, to
//! stdout. It exits with status 0 on SIGINT or SIGTERM.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};

use async_io::Async;
use clap::Parser;
use futures_lite::StreamExt;

/// Command-line options of the raw reference server.
#[derive(Debug, Parser)]
#[command(
    name = "rpc-raw-reference",
    version,
    about = "Raw reference server: length-prefixed frames answered with the uppercased payload"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() {
    let args = Args::parse();
    // Serve from a task on the executor and let the main thread only wait, as `rpc-server`
    // does: with `block_on` here the main thread would run the accept loop and take turns with
    // the executor's thread at the reactor, handing work between threads on every event.
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    async_std::task::spawn(async move {
        let _ = tx.send(serve(args).await);
    });
    let code = rx.recv().unwrap_or(101);
    std::process::exit(code);
}

/// Binds, announces the address, then serves until SIGINT/SIGTERM. Returns the exit code.
async fn serve(args: Args) -> i32 {
    let listener = match Async::<TcpListener>::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rpc-raw-reference: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let local = match listener.get_ref().local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rpc-raw-reference: cannot read local address: {e}");
            return 1;
        }
    };
    let mut signals =
        match async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term]) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("rpc-raw-reference: cannot install signal handlers: {e}");
                return 1;
            }
        };
    {
        let mut out = std::io::stdout().lock();
        if writeln!(out, "rpc-raw-reference listening on {local}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }
    // Either a signal arrived or the stream ended; both mean shut down.
    let shutdown = async move {
        let _ = signals.next().await;
    };
    rpckit_load::reference::run(listener, shutdown).await;
    0
}
