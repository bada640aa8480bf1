//! `rpc-server`'s command line: the subcommands, every serving flag with its environment
//! variable and default, and how the flags become a [`ServerConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use rpckit_proto::{KeyLimits, SuiteSet};
use rpckit_server::{IpNet, ServerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "rpc-server",
    version,
    about = "rpckit RPC server: framed bincode over TCP, authenticated and encrypted"
)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    #[command(flatten)]
    pub(crate) serve: ServeArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Add a new random key to a keyring file (created with mode 0600 if missing), for the
    /// server and its clients.
    Keygen(KeygenArgs),
}

#[derive(Args, Debug)]
pub(crate) struct KeygenArgs {
    /// Keyring file to add the key to, created if missing [default: $XDG_CONFIG_HOME/rpckit/keyring or ~/.config/rpckit/keyring]
    #[arg(long, env = "RPC_KEYRING")]
    pub(crate) keyring: Option<PathBuf>,
    /// Id of the new key (refused if the keyring already has it).
    #[arg(long, env = "RPC_KEY_ID", default_value = "default")]
    pub(crate) key_id: String,
    /// Do nothing (and succeed) if the file already exists.
    #[arg(long)]
    pub(crate) if_missing: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    /// Address to listen on; port 0 picks a free port (printed in the ready line).
    #[arg(long, env = "RPC_LISTEN", default_value = "127.0.0.1:7878")]
    pub(crate) listen: SocketAddr,
    /// Keyring file: lines of `<key-id> <hex secret>` [default: $XDG_CONFIG_HOME/rpckit/keyring or ~/.config/rpckit/keyring]. Alternatively put one key in the environment: RPC_KEY (hex) with RPC_KEY_ID.
    #[arg(long, env = "RPC_KEYRING")]
    pub(crate) keyring: Option<PathBuf>,
    /// Not accepted: a secret on the command line shows in `ps`. Use --keyring or RPC_KEY.
    #[arg(long, hide = true)]
    pub(crate) key: Option<String>,
    /// Log format.
    #[arg(long, env = "RPC_LOG_FORMAT", value_enum, default_value = "human")]
    pub(crate) log_format: LogFormat,
    /// Log level or filter (error, warn, info, debug, trace, or a tracing filter); RUST_LOG wins if set.
    #[arg(long, env = "RPC_LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Deadline for the whole handshake.
    #[arg(long, env = "RPC_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) handshake_timeout: Duration,
    /// Deadline for each client step of the handshake: the hello after the connect, the proof after the hello's answer.
    #[arg(long, env = "RPC_HELLO_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub(crate) hello_timeout: Duration,
    /// Largest frame accepted or sent, in bytes.
    #[arg(long, env = "RPC_MAX_FRAME", default_value_t = rpckit_proto::DEFAULT_MAX_FRAME)]
    pub(crate) max_frame: u32,
    /// Memory all connections' read buffers may hold together, in bytes; a connection whose frame does not fit is closed.
    #[arg(long, env = "RPC_MAX_BUFFER_MEMORY", default_value_t = 1 << 30)]
    pub(crate) max_buffer_memory: usize,
    /// Connections open at once; past it new ones are refused (Busy).
    #[arg(long, env = "RPC_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub(crate) max_connections: usize,
    /// Connections still in the handshake; when full, a new one evicts one that has not sent its hello (worst source first, then oldest).
    #[arg(long, env = "RPC_MAX_UNAUTHENTICATED", default_value_t = 100)]
    pub(crate) max_unauthenticated: usize,
    /// Connections still in the handshake from one address (IPv6: one /64); at the cap, a new one evicts that source's oldest without a hello [default: --max-unauthenticated].
    #[arg(long, env = "RPC_MAX_UNAUTHENTICATED_PER_SOURCE")]
    pub(crate) max_unauthenticated_per_source: Option<usize>,
    /// Calls in flight per connection; past it calls are answered Overloaded.
    #[arg(long, env = "RPC_MAX_IN_FLIGHT", default_value_t = 256)]
    pub(crate) max_in_flight: usize,
    /// Messages queued for one connection; a client that does not read is disconnected when full.
    #[arg(long, env = "RPC_MAX_QUEUED", default_value_t = 1024)]
    pub(crate) max_queued: usize,
    /// Time a write may take to make progress before the client is dropped.
    #[arg(long, env = "RPC_WRITE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) write_timeout: Duration,
    /// Close connections with no call for this long.
    #[arg(long, env = "RPC_IDLE_TIMEOUT", default_value = "300s", value_parser = parse_duration)]
    pub(crate) idle_timeout: Duration,
    /// Ping a client after this long without traffic from it.
    #[arg(long, env = "RPC_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub(crate) keepalive_interval: Duration,
    /// Drop a client that does not answer a ping within this time.
    #[arg(long, env = "RPC_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub(crate) keepalive_timeout: Duration,
    /// On SIGTERM/SIGINT, time calls in flight get to finish.
    #[arg(long, env = "RPC_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    pub(crate) grace_period: Duration,
    /// On the first SIGTERM/SIGINT, /healthz answers 503 at once but the server goes on accepting and serving as usual for this long before it drains, so a load balancer stops sending new connections before the listener closes.
    #[arg(long, env = "RPC_DRAIN_DELAY", default_value = "0s", value_parser = parse_duration)]
    pub(crate) drain_delay: Duration,
    /// Serve Prometheus metrics (GET /metrics) and a health check for load balancers (GET /healthz: 200 serving, 503 draining) over HTTP on this address; port 0 picks a free port (printed as `rpc-server metrics on ADDR` before the ready line) [default: off]
    #[arg(long, env = "RPC_METRICS_LISTEN")]
    pub(crate) metrics_listen: Option<SocketAddr>,
    /// Failed authentications (unknown key id or wrong key) from one address (within --auth-failure-window) before it is refused for --auth-penalty; 0 disables.
    #[arg(long, env = "RPC_AUTH_FAILURE_LIMIT", default_value_t = 5)]
    pub(crate) auth_failure_limit: u32,
    /// Window over which failed authentications are counted.
    #[arg(long, env = "RPC_AUTH_FAILURE_WINDOW", default_value = "60s", value_parser = parse_duration)]
    pub(crate) auth_failure_window: Duration,
    /// How long a penalised address is refused.
    #[arg(long, env = "RPC_AUTH_PENALTY", default_value = "30s", value_parser = parse_duration)]
    pub(crate) auth_penalty: Duration,
    /// Proxies whose connections start with a PROXY protocol v2 header naming the real client (comma-separated networks, e.g. 10.0.0.0/8,192.0.2.7/32); their connections without one are closed [default: none, no PROXY headers are accepted]
    #[arg(long, env = "RPC_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_network)]
    pub(crate) trusted_proxies: Vec<IpNet>,
    /// Bind with SO_REUSEPORT, so a new rpc-server can listen on the same port while this one drains (a restart without refused connections).
    #[arg(long, env = "RPC_REUSE_PORT", value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::SetTrue)]
    pub(crate) reuse_port: bool,
    /// Frame-protection suites clients may use: `encrypted` (AES-256-GCM and ChaCha20-Poly1305, every frame encrypted), `any` (also hmac-sha256: frames authenticated but in clear), or a comma list of aes-256-gcm, chacha20-poly1305, hmac-sha256. A client offering another suite is refused (status 9).
    #[arg(long, env = "RPC_SUITE", default_value = "encrypted", value_parser = |s: &str| s.parse::<SuiteSet>())]
    pub(crate) suite: SuiteSet,
    /// Drain a connection (GoingAway; its client reconnects with new keys) once either session key has sealed half this many frames. Only lowers the suite's own limit (AES-256-GCM 2^32 frames). For tests and to bound what one key protects.
    #[arg(long, env = "RPC_KEY_MAX_FRAMES", default_value_t = u64::MAX, hide_default_value = true)]
    pub(crate) key_max_frames: u64,
    /// As --key-max-frames, in payload bytes (AES-256-GCM's own limit: 2^38).
    #[arg(long, env = "RPC_KEY_MAX_BYTES", default_value_t = u64::MAX, hide_default_value = true)]
    pub(crate) key_max_bytes: u64,
    /// Connection-level warnings (refusals, evictions, failed handshakes, faults) logged one by one per reason in each --log-window; the rest go to debug and one summary line per reason says how many were not logged.
    #[arg(long, env = "RPC_LOG_BURST", default_value_t = 5)]
    pub(crate) log_burst: u32,
    /// The window of --log-burst.
    #[arg(long, env = "RPC_LOG_WINDOW", default_value = "10s", value_parser = parse_duration)]
    pub(crate) log_window: Duration,
}

/// A network in CIDR form, or a single address (a /32 or /128).
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or a network like 10.0.0.0/8"))
}

impl ServeArgs {
    pub(crate) fn config(&self) -> ServerConfig {
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
