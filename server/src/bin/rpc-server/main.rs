//! `rpc-server`: the rpckit daemon serving the demo service (Echo, Uppercase, Ping, Sleep).
//!
//! First create a key (once): `rpc-server keygen`. Then run `rpc-server`; it prints
//! `rpc-server listening on ADDR` once it accepts connections. Call it with
//! `rpc-client call uppercase hello`. SIGINT or SIGTERM drains and exits 0; a second signal
//! exits 1 at once, without waiting for calls in flight. With `--metrics-listen ADDR` it
//! serves Prometheus metrics and `/healthz` there and prints `rpc-server metrics on ADDR`
//! before the ready line. SIGHUP reloads the keyring file.
//!
//! `args.rs` holds the command line, `keys.rs` the keys; this file runs the server: logging,
//! the listeners, the signals and the executor.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use futures_lite::StreamExt;
use rpckit_server::metrics::{serve_http, HttpConfig, ServerMetrics};
use rpckit_server::{bind_listener, DemoService, Server, Service};
use tracing::{error, info, warn};

mod args;
mod keys;

use args::{Cli, Command, LogFormat, ServeArgs};
use keys::{keygen, load_keys, reload_on_hangup};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen(args)) => keygen(args),
        None => serve(cli.serve),
    }
}

fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format, &args.log_level);
    if args.key.is_some() {
        error!("refusing --key: a secret on the command line is visible to every user in `ps`; use --keyring FILE or the RPC_KEY environment variable");
        return ExitCode::from(2);
    }
    let (keys, keyring_path) = match load_keys(&args) {
        Ok(found) => found,
        Err(e) => {
            error!("cannot load keys: {e}");
            return ExitCode::from(1);
        }
    };
    let ids: Vec<&str> = keys.ids().map(|id| id.as_str()).collect();
    info!(keys = ?ids, "keys loaded");
    let config = args.config();
    raise_fd_limit(config.max_connections);
    run_on_executor(async move {
        let signals = match async_signal::Signals::new([
            async_signal::Signal::Term,
            async_signal::Signal::Int,
        ]) {
            Ok(signals) => signals,
            Err(e) => {
                error!("cannot install signal handlers: {e}");
                return ExitCode::from(1);
            }
        };
        let hangups = match async_signal::Signals::new([async_signal::Signal::Hup]) {
            Ok(hangups) => hangups,
            Err(e) => {
                error!("cannot install the SIGHUP handler: {e}");
                return ExitCode::from(1);
            }
        };
        let listener = match bind_listener(args.listen, args.reuse_port) {
            Ok(listener) => listener,
            Err(e) => {
                error!(listen = %args.listen, "cannot listen: {e}");
                return ExitCode::from(1);
            }
        };
        let addr = match listener.local_addr() {
            Ok(addr) => addr,
            Err(e) => {
                error!("cannot read the listening address: {e}");
                return ExitCode::from(1);
            }
        };
        let metrics = match args.metrics_listen.map(start_metrics).transpose() {
            Ok(metrics) => metrics,
            Err(e) => {
                error!(metrics_listen = ?args.metrics_listen, "cannot serve metrics: {e}");
                return ExitCode::from(1);
            }
        };
        info!(%addr, suites = %config.suites, reuse_port = args.reuse_port, trusted_proxies = ?args.trusted_proxies, "listening");
        // The ready line: scripts and tests wait for it.
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "rpc-server listening on {addr}");
        let _ = stdout.flush();

        let mut server = Server::new(DemoService, keys, config);
        if let Some(metrics) = metrics {
            server = server.with_metrics(metrics);
        }
        let reloads = reload_on_hangup(hangups, server.keyring_handle(), keyring_path);
        let mut signals = signals;
        // The first signal starts the drain; a second one ends the process without waiting.
        let (first_tx, first_rx) = async_channel::bounded::<()>(1);
        let watch = async {
            if let Some(Ok(signal)) = signals.next().await {
                info!(
                    ?signal,
                    "signal received: draining (send it again to exit at once)"
                );
            }
            first_tx.close();
            match signals.next().await {
                Some(Ok(signal)) => signal,
                _ => std::future::pending().await,
            }
        };
        let shutdown = async move {
            let _ = first_rx.recv().await;
        };
        let run =
            futures_lite::future::or(async { Ok(server.run(listener, shutdown).await) }, reloads);
        let second_signal = async { Err(watch.await) };
        let result = futures_lite::future::or(run, second_signal).await;
        match result {
            Ok(Ok(())) => {
                info!("stopped");
                ExitCode::SUCCESS
            }
            Ok(Err(e)) => {
                error!("server failed: {e}");
                ExitCode::from(1)
            }
            Err(signal) => {
                warn!(
                    ?signal,
                    "second signal: exiting without waiting for calls in flight"
                );
                ExitCode::from(1)
            }
        }
    })
}

/// Binds the metrics listener on `addr`, prints `rpc-server metrics on ADDR` (before the ready
/// line), and serves it on a task of its own until the process exits, so load balancers see
/// `/healthz` answer 503 through the whole drain.
fn start_metrics(addr: SocketAddr) -> Result<ServerMetrics, String> {
    let metrics = ServerMetrics::new(DemoService::METHOD_NAMES).map_err(|e| e.to_string())?;
    let listener =
        async_io::Async::<std::net::TcpListener>::bind(addr).map_err(|e| e.to_string())?;
    let bound = listener.get_ref().local_addr().map_err(|e| e.to_string())?;
    info!(addr = %bound, "serving metrics and /healthz");
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "rpc-server metrics on {bound}");
    let _ = stdout.flush();
    let served = metrics.clone();
    async_std::task::spawn(async move {
        let forever = std::future::pending::<()>();
        if let Err(e) = serve_http(listener, served, HttpConfig::default(), forever).await {
            error!("metrics listener failed: {e}");
        }
    });
    Ok(metrics)
}

/// Runs `future` to completion as a task on the async-std executor and blocks this thread
/// until it is done. The main thread then only waits on a channel, instead of running the
/// accept loop and polling the reactor itself: with `block_on` here, two threads (this one and
/// the executor's) would take turns at the reactor and hand every new connection and every
/// readiness event from one to the other, a thread switch each time.
fn run_on_executor<T: Send + 'static>(
    future: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    async_std::task::spawn(async move {
        let _ = tx.send(future.await);
    });
    match rx.recv() {
        Ok(value) => value,
        // The task only drops the sender after sending, unless it panicked.
        Err(_) => std::process::exit(101),
    }
}

/// Raises the soft limit on open files to the hard limit (often 1,024 against 10,000
/// connections by default), and warns if it stays below what `max_connections` needs.
fn raise_fd_limit(max_connections: usize) {
    let needed = rpckit_server::fd_limit::fds_needed(max_connections);
    match rpckit_server::fd_limit::raise_nofile_limit() {
        Ok(limit) => {
            if limit.raised() {
                info!(
                    from = limit.before,
                    to = limit.soft,
                    "raised the open-file limit"
                );
            }
            if !limit.covers(needed) {
                warn!(limit = limit.soft, needed, "the open-file limit is below what --max-connections needs; connections past it will be refused by accept");
            }
        }
        Err(e) => warn!(needed, "cannot raise the open-file limit: {e}"),
    }
}
