//! `rpc-client`: call an rpckit server from the command line, or load it with `bench`.
//!
//! First start a server (`make run`, or `rpc-server`). Then:
//! `rpc-client call uppercase hello` prints `HELLO`; `rpc-client health` exits 0 if the
//! server completes a handshake and answers a ping within `--timeout` (a container probe).
//!
//! Exit codes: 0 success, 1 local error (key file, arguments), 2 usage, 3 cannot connect,
//! 4 authentication failed (either way), 5 the server answered with an error, 6 timeout,
//! 7 connection lost after the call was sent (outcome unknown).

mod bench;
mod call;
mod health;
mod keys;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use rpckit_proto::Suite;

#[derive(Parser, Debug)]
#[command(
    name = "rpc-client",
    version,
    about = "Call an rpckit server, or benchmark it"
)]
struct Cli {
    #[command(flatten)]
    target: Target,
    #[command(subcommand)]
    command: Command,
}

/// Where and how to connect.
#[derive(Args, Debug, Clone)]
pub struct Target {
    /// Server address (host:port), or several (host:port,host:port,...): calls then go to
    /// the less loaded of two picked at random, and one that fails or drains is avoided.
    #[arg(
        long,
        global = true,
        env = "RPC_ADDR",
        default_value = "127.0.0.1:7878"
    )]
    pub addr: String,
    /// Keyring file [default: $XDG_CONFIG_HOME/rpckit/keyring or ~/.config/rpckit/keyring]. Alternatively RPC_KEY (hex) in the environment.
    #[arg(long, global = true, env = "RPC_KEYRING")]
    pub keyring: Option<std::path::PathBuf>,
    /// Key id to authenticate with [default: the first key in the keyring].
    #[arg(long, global = true, env = "RPC_KEY_ID")]
    pub key_id: Option<String>,
    /// Time allowed for TCP connect plus handshake.
    #[arg(long, global = true, env = "RPC_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Suite to offer: aes-256-gcm, chacha20-poly1305 (both encrypt), hmac-sha256
    /// (integrity only, if the server allows it), or encrypted (also: any) for the default:
    /// aes-256-gcm where the CPU has AES instructions, else chacha20-poly1305. Never falls
    /// back to another suite when refused.
    #[arg(long, global = true, env = "RPC_SUITE", default_value = "encrypted", value_parser = parse_suite)]
    pub suite: SuiteChoice,
}

/// The suite `--suite` names, or `None` for the client's default.
#[derive(Debug, Clone, Copy)]
pub struct SuiteChoice(Option<Suite>);

impl Target {
    /// The suite to offer: the one asked for, or the client's default.
    pub fn suite(&self) -> Suite {
        self.suite.0.unwrap_or_else(Suite::preferred)
    }
}

/// Parses `--suite`: a suite name, or `encrypted`/`any` (the words `rpc-server --suite`
/// takes, so one `RPC_SUITE` can serve both) for the default.
fn parse_suite(name: &str) -> Result<SuiteChoice, String> {
    if ["encrypted", "any"]
        .iter()
        .any(|w| name.eq_ignore_ascii_case(w))
    {
        return Ok(SuiteChoice(None));
    }
    Suite::from_name(name)
        .map(|s| SuiteChoice(Some(s)))
        .ok_or_else(|| {
            let names: Vec<&str> = Suite::ALL.iter().map(|s| s.name()).collect();
            format!(
                "unknown suite {name:?}: one of {}, or encrypted",
                names.join(", ")
            )
        })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Call one method: echo TEXT..., uppercase TEXT..., ping, sleep MS (case-insensitive).
    Call(call::CallArgs),
    /// Load the server: --conns C connections, --depth D calls in flight each, for
    /// --duration seconds after --warmup; --churn opens a new connection per call. Reports
    /// calls/s, MB/s, latency percentiles (HDR histogram) and errors by kind.
    Bench(bench::BenchArgs),
    /// Probe the server: exit 0 if it completes a handshake and answers a ping within
    /// --timeout (default 2s), else the exit code `call` would give. Prints one line.
    Health(health::HealthArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Call(args) => call::run(&cli.target, args),
        Command::Bench(args) => bench::run_bench(&cli.target, args),
        Command::Health(args) => health::run(&cli.target, args),
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
