//! `rpc-server`: the rpckit daemon serving the demo service (Echo, Uppercase, Ping, Sleep).
//!
//! First create a key (once): `rpc-server keygen`. Then run `rpc-server`; it prints
//! `rpc-server listening on ADDR` once it accepts connections. Call it with
//! `rpc-client call uppercase hello`. SIGINT or SIGTERM drains and exits 0; a second signal
//! exits 1 at once, without waiting for calls in flight. With `--metrics-listen ADDR` it
//! serves Prometheus metrics and `/healthz` there and prints `rpc-server metrics on ADDR`
//! before the ready line. SIGHUP reloads the keyring file.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use futures_lite::StreamExt;
use rpckit_keyfile::Keygen;
use rpckit_proto::{KeyId, KeyLimits, Keyring, SuiteSet};
use rpckit_server::metrics::{serve_http, HttpConfig, ServerMetrics};
use rpckit_server::{
    bind_listener, DemoService, IpNet, KeyringHandle, Server, ServerConfig, Service,
};
use tracing::{error, info, warn};

#[derive(Parser, Debug)]
#[command(
    name = "rpc-server",
    version,
    about = "rpckit RPC server: framed bincode over TCP, authenticated and encrypted"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Add a new random key to a keyring file (created with mode 0600 if missing), for the
    /// server and its clients.
    Keygen(KeygenArgs),
}

#[derive(Args, Debug)]
struct KeygenArgs {
    /// Keyring file to add the key to, created if missing [default: $XDG_CONFIG_HOME/rpckit/keyring or ~/.config/rpckit/keyring]
    #[arg(long, env = "RPC_KEYRING")]
    keyring: Option<PathBuf>,
    /// Id of the new key (refused if the keyring already has it).
    #[arg(long, env = "RPC_KEY_ID", default_value = "default")]
    key_id: String,
    /// Do nothing (and succeed) if the file already exists.
    #[arg(long)]
    if_missing: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed in the ready line).
    #[arg(long, env = "RPC_LISTEN", default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Keyring file: lines of `<key-id> <hex secret>` [default: $XDG_CONFIG_HOME/rpckit/keyring or ~/.config/rpckit/keyring]. Alternatively put one key in the environment: RPC_KEY (hex) with RPC_KEY_ID.
    #[arg(long, env = "RPC_KEYRING")]
    keyring: Option<PathBuf>,
    /// Not accepted: a secret on the command line shows in `ps`. Use --keyring or RPC_KEY.
    #[arg(long, hide = true)]
    key: Option<String>,
    /// Log format.
    #[arg(long, env = "RPC_LOG_FORMAT", value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter); RUST_LOG wins if set.
    #[arg(long, env = "RPC_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Deadline for the whole handshake.
    #[arg(long, env = "RPC_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    handshake_timeout: Duration,
    /// Deadline for each client step of the handshake: the hello after the connect, the proof after the hello's answer.
    #[arg(long, env = "RPC_HELLO_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    hello_timeout: Duration,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, env = "RPC_MAX_FRAME", default_value_t = rpckit_proto::DEFAULT_MAX_FRAME)]
    max_frame: u32,
    /// Memory all connections' read buffers may hold together, in bytes; a connection whose frame does not fit is closed.
    #[arg(long, env = "RPC_MAX_BUFFER_MEMORY", default_value_t = 1 << 30)]
    max_buffer_memory: usize,
    /// Connections open at once; past it new ones are refused (Busy).
    #[arg(long, env = "RPC_MAX_CONNECTIONS", default_value_t = 10_000)]
    max_connections: usize,
    /// Connections still in the handshake; when full, a new one evicts one that has not sent its hello (worst source first, then oldest).
    #[arg(long, env = "RPC_MAX_UNAUTHENTICATED", default_value_t = 100)]
    max_unauthenticated: usize,
    /// Connections still in the handshake from one address (IPv6: one /64); at the cap, a new one evicts that source's oldest without a hello [default: --max-unauthenticated].
    #[arg(long, env = "RPC_MAX_UNAUTHENTICATED_PER_SOURCE")]
    max_unauthenticated_per_source: Option<usize>,
    /// Calls in flight per connection; past it calls are answered Overloaded.
    #[arg(long, env = "RPC_MAX_IN_FLIGHT", default_value_t = 256)]
    max_in_flight: usize,
    /// Messages queued for one connection; a client that does not read is disconnected when full.
    #[arg(long, env = "RPC_MAX_QUEUED", default_value_t = 1024)]
    max_queued: usize,
    /// Time a write may take to make progress before the client is dropped.
    #[arg(long, env = "RPC_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    write_timeout: Duration,
    /// Close connections with no call for this long.
    #[arg(long, env = "RPC_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Ping a client after this long without traffic from it.
    #[arg(long, env = "RPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    keepalive_interval: Duration,
    /// Drop a client that does not answer a ping within this time.
    #[arg(long, env = "RPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    keepalive_timeout: Duration,
    /// On SIGTERM/SIGINT, time calls in flight get to finish.
    #[arg(long, env = "RPC_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    grace_period: Duration,
    /// On the first SIGTERM/SIGINT, /healthz answers 503 at once but the server goes on accepting and serving as usual for this long before it drains, so a load balancer stops sending new connections before the listener closes.
    #[arg(long, env = "RPC_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    drain_delay: Duration,
    /// Serve Prometheus metrics (GET /metrics) and a health check for load balancers (GET /healthz: 200 serving, 503 draining) over HTTP on this address; port 0 picks a free port (printed as `rpc-server metrics on ADDR` before the ready line) [default: off]
    #[arg(long, env = "RPC_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Failed authentications (unknown key id or wrong key) from one address (within --auth-failure-window) before it is refused for --auth-penalty; 0 disables.
    #[arg(long, env = "RPC_AUTH_FAILURE_LIMIT", default_value_t = 5)]
    auth_failure_limit: u32,
    /// Window over which failed authentications are counted.
    #[arg(long, env = "RPC_AUTH_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    auth_failure_window: Duration,
    /// How long a penalised address is refused.
    #[arg(long, env = "RPC_AUTH_PENALTY", default_value = "30s", value_parser = parse_duration)]
    auth_penalty: Duration,
    /// Proxies whose connections start with a PROXY protocol v2 header naming the real client (comma-separated networks, e.g. 10.0.0.0/8,192.0.2.7/32); their connections without one are closed [default: none, no PROXY headers are accepted]
    #[arg(long, env = "RPC_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    trusted_proxies: Vec<IpNet>,
    /// Bind with SO_REUSEPORT, so a new rpc-server can listen on the same port while this one drains (a restart without refused connections).
    #[arg(long, env = "RPC_REUSE_PORT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    reuse_port: bool,
    /// Frame-protection suites clients may use: `encrypted` (AES-256-GCM and ChaCha20-Poly1305, every frame encrypted), `any` (also hmac-sha256: frames authenticated but in clear), or a comma list of aes-256-gcm, chacha20-poly1305, hmac-sha256. A client offering another suite is refused (status 9).
    #[arg(long, env = "RPC_SUITE", default_value = "encrypted", value_parser = |s: &str| s.parse::<SuiteSet>())]
    suite: SuiteSet,
    /// Drain a connection (GoingAway; its client reconnects with new keys) once either session key has sealed half this many frames. Only lowers the suite's own limit (AES-256-GCM 2^32 frames). For tests and to bound what one key protects.
    #[arg(long, env = "RPC_KEY_MAX_FRAMES", default_value_t = u64::MAX, hide_default_value = true)]
    key_max_frames: u64,
    /// As --key-max-frames, in payload bytes (AES-256-GCM's own limit: 2^38).
    #[arg(long, env = "RPC_KEY_MAX_BYTES", default_value_t = u64::MAX, hide_default_value = true)]
    key_max_bytes: u64,
    /// Connection-level warnings (refusals, evictions, failed handshakes, faults) logged one by one per reason in each --log-window; the rest go to debug and one summary line per reason says how many were not logged.
    #[arg(long, env = "RPC_LOG_BURST", default_value_t = 5)]
    log_burst: u32,
    /// The window of --log-burst.
    #[arg(long, env = "RPC_LOG_WINDOW", default_value = "10s", value_parser = parse_duration)]
    log_window: Duration,
}

/// A network in CIDR form, or a single address (a /32 or /128).
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a network like 10.0.0.0/8"))
}

impl ServeArgs {
    fn config(&self) -> ServerConfig {
        let mut server_config = ServerConfig::default();
        server_config.handshake_timeout = self.handshake_timeout;
        server_config.hello_timeout = self.hello_timeout;
        server_config.max_frame = self.max_frame;
        server_config.max_buffer_memory = self.max_buffer_memory;
        server_config.max_connections = self.max_connections;
        server_config.max_unauthenticated = self.max_unauthenticated;
        server_config.max_unauthenticated_per_source = self.max_unauthenticated_per_source;
        server_config.max_in_flight = self.max_in_flight;
        server_config.max_queued = self.max_queued;
        server_config.write_timeout = self.write_timeout;
        server_config.idle_timeout = self.idle_timeout;
        server_config.keepalive_interval = self.keepalive_interval;
        server_config.keepalive_timeout = self.keepalive_timeout;
        server_config.grace_period = self.grace_period;
        server_config.drain_delay = self.drain_delay;
        server_config.auth_failure_limit = self.auth_failure_limit;
        server_config.auth_failure_window = self.auth_failure_window;
        server_config.auth_penalty = self.auth_penalty;
        server_config.trusted_proxies = self.trusted_proxies.clone();
        server_config.suites = self.suite;
        server_config.log_burst = self.log_burst;
        server_config.log_window = self.log_window;
        server_config.key_limits = Some(KeyLimits {
            max_frames: self.key_max_frames,
            max_bytes: self.key_max_bytes,
        });
        server_config
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen(args)) => keygen(args),
        None => serve(cli.serve),
    }
}

fn keygen(args: KeygenArgs) -> ExitCode {
    let path = args
        .keyring
        .unwrap_or_else(rpckit_keyfile::default_keyring_path);
    let exists_message = || println!("keyring {} already exists; not touched", path.display());
    // Checked first, so that a keyring in a directory we may not write to is still left alone.
    if args.if_missing && path.exists() {
        exists_message();
        return ExitCode::SUCCESS;
    }
    let id = match KeyId::new(&args.key_id) {
        Ok(id) => id,
        Err(e) => {
            eprintln!("rpc-server: {e}");
            return ExitCode::from(2);
        }
    };
    match rpckit_keyfile::keygen(&path, &id, args.if_missing) {
        Ok(Keygen::Added { readable_by_others }) => {
            println!("added new key \"{id}\" to {}", path.display());
            if readable_by_others {
                eprintln!(
                    "rpc-server: warning: {} is readable by group or others (chmod 600 it)",
                    path.display()
                );
            }
            ExitCode::SUCCESS
        }
        Ok(Keygen::Created) => {
            println!("wrote new key \"{id}\" to {} (mode 0600)", path.display());
            ExitCode::SUCCESS
        }
        Ok(_) => {
            exists_message();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-server: cannot write key: {e}");
            ExitCode::from(1)
        }
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

/// The keys to accept: RPC_KEY from the environment, or the keyring file (whose path comes
/// back too, for reloads).
fn load_keys(args: &ServeArgs) -> Result<(Keyring, Option<PathBuf>), String> {
    if let Some(found) = rpckit_keyfile::key_from_env(None) {
        let (id, key) = found.map_err(|e| e.to_string())?;
        let mut ring = Keyring::new();
        ring.insert(id, key);
        return Ok((ring, None));
    }
    let path = args
        .keyring
        .clone()
        .unwrap_or_else(rpckit_keyfile::default_keyring_path);
    let ring = rpckit_keyfile::load(&path).map_err(|e| {
        format!(
            "{e}\n  create a key with `rpc-server keygen --keyring {}`, or set RPC_KEY",
            path.display()
        )
    })?;
    if rpckit_keyfile::readable_by_others(&path) {
        warn!(path = %path.display(), "keyring file is readable by other users; run chmod 600 on it");
    }
    Ok((ring, Some(path)))
}

/// On each SIGHUP, reloads the keyring file (`keyring`, `None` when the key came from
/// RPC_KEY) into `handle`. Never returns (so it can race a future of any output); does not
/// touch the drain's signals.
async fn reload_on_hangup<T>(
    mut hangups: async_signal::Signals,
    handle: KeyringHandle,
    keyring: Option<PathBuf>,
) -> T {
    while let Some(Ok(_)) = hangups.next().await {
        match &keyring {
            // Logged and counted by the handle; a file that does not parse leaves the keys.
            Some(path) => {
                info!(path = %path.display(), "SIGHUP: reloading the keyring");
                let _ = handle.reload(path);
            }
            None => info!("SIGHUP: the key comes from RPC_KEY; nothing to reload"),
        }
    }
    std::future::pending().await
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

/// A `humantime` duration (`500ms`, `10s`, `2m`, `1h`) no longer than 100 years.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))?;
    if d > Duration::from_secs(100 * 365 * 24 * 3600) {
        return Err(format!(
            "{text} is longer than the longest allowed, 100 years"
        ));
    }
    Ok(d)
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
