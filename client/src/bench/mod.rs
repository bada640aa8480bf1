//! Load generator shared by `rpc-client bench` and the raw reference comparison.
//!
//! The engine opens `conns` connections and keeps `depth` calls in flight on
//! each of them for `warmup + duration` seconds, then reports throughput and
//! latency percentiles (see [`BenchReport`]). What a "connection" and a "call"
//! are is up to a [`Driver`]: [`raw::RawDriver`] speaks the length-prefixed
//! uppercase protocol of `rpc-raw-reference`, and the rpckit client plugs in
//! the same way, so both are measured by exactly the same loop.
//!
//! * Steady mode: every connection slot is shared by `depth` worker tasks,
//!   each calling [`Connection::call`] in a loop. A failed call drops the
//!   connection; the slot reconnects and the workers carry on.
//! * Churn mode (`--churn`): `conns` workers each loop on connect, one call,
//!   close; `depth` is ignored and latency covers the whole cycle.
//! * Idle mode (`--idle`): opens `conns` connections (64 attempts at a time),
//!   makes one call on each to prove it works, prints `holding N idle
//!   connections` to stdout, holds them for `duration` seconds without any
//!   traffic, then closes them. It measures nothing itself: it is there so that
//!   the server's memory per idle connection can be read while they are held.
//!
//! Calls that complete during the warmup are not counted; errors are counted
//! over the whole run. Every loop stops by itself at the deadline, and tasks
//! still stuck [`HARD_STOP_GRACE`] after it are cancelled and reported.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rpckit_client::bench::BenchError> {
//! use rpckit_client::bench::{run_raw, BenchConfig};
//! let cfg = BenchConfig { conns: 4, depth: 8, duration: 2.0, ..BenchConfig::default() };
//! let report = run_raw("127.0.0.1:7000", &cfg).await?;
//! report.print(cfg.json);
//! # Ok(()) }
//! ```

pub mod kit;
pub mod progress;
pub mod raw;
pub mod sha;
pub mod stats;

mod engine;

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

pub use engine::{run, run_idle};
pub use kit::{KitConnection, KitDriver};
pub use raw::{run_raw, RawDriver};
pub use sha::measure_sha256_throughput;
pub use stats::{BenchReport, IdleCounts, LatencySummary};

/// Longest time one connection attempt may take before it counts as a `connect_timeout` error.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connection attempts made at the same time when opening many connections at once.
pub const CONNECT_PARALLEL: usize = 64;

/// Idle mode: longest time the probe call on a fresh connection may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle mode: longest time spent opening the connections; attempts not started by then are
/// counted as `idle_open_timeout` errors.
pub const IDLE_OPEN_TIMEOUT: Duration = Duration::from_secs(120);

/// Idle mode: longest time closing one connection may take.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long after the deadline the engine waits for in-flight calls before cancelling them.
pub const HARD_STOP_GRACE: Duration = Duration::from_secs(5);

/// Largest accepted `--payload` (the raw reference rejects frames above 8 MiB).
pub const MAX_PAYLOAD: usize = 8 * 1024 * 1024;

/// Largest accepted `--conns`.
pub const MAX_CONNS: usize = 100_000;

/// Largest accepted `--depth`.
pub const MAX_DEPTH: usize = 65_536;

/// Longest accepted `--duration` or `--warmup`, in seconds (one day).
pub const MAX_SECONDS: f64 = 86_400.0;

/// Methods a benchmark can call.
pub const METHODS: [&str; 2] = ["uppercase", "echo"];

/// What to run: connections, concurrency, timing, payload and output format.
///
/// Usable as a `clap` argument group (`#[command(flatten)]`) or built directly;
/// [`Default`] gives the same values as the command-line defaults.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct BenchConfig {
    /// Number of concurrent connections (in churn mode: concurrent connect/call/close loops).
    /// Default: 1.
    #[arg(long = "conns", default_value_t = 1)]
    pub conns: usize,

    /// Calls kept in flight on each connection (pipelined or multiplexed); ignored with --churn.
    /// Default: 1.
    #[arg(long = "depth", default_value_t = 1)]
    pub depth: usize,

    /// Measured duration in seconds, after the warmup. Default: 10.
    #[arg(long = "duration", default_value_t = 10.0, value_name = "SECONDS")]
    pub duration: f64,

    /// Warmup in seconds before measuring; calls completed during it are not counted.
    /// Default: 1.
    #[arg(long = "warmup", default_value_t = 1.0, value_name = "SECONDS")]
    pub warmup: f64,

    /// Method to call: `uppercase` or `echo`. Default: uppercase.
    #[arg(long = "method", default_value = "uppercase",
          value_parser = clap::builder::PossibleValuesParser::new(METHODS))]
    pub method: String,

    /// Request payload size in bytes; "hello" followed by lowercase letters. Default: 5 ("hello").
    #[arg(long = "payload", default_value_t = 5, value_name = "BYTES")]
    pub payload: usize,

    /// Churn mode: every call opens a new connection, makes one call and closes it.
    /// Default: off.
    #[arg(long = "churn")]
    pub churn: bool,

    /// Idle mode: open --conns connections, make one call on each, print `holding N idle
    /// connections`, hold them for --duration seconds without traffic, then close them and
    /// report how many were held and how many failed to connect. --depth and --warmup are
    /// ignored. Default: off.
    #[arg(long = "idle", conflicts_with = "churn")]
    pub idle: bool,

    /// Print the report as JSON instead of the human-readable block. Default: off.
    #[arg(long = "json")]
    pub json: bool,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            conns: 1,
            depth: 1,
            duration: 10.0,
            warmup: 1.0,
            method: "uppercase".to_owned(),
            payload: 5,
            churn: false,
            idle: false,
            json: false,
        }
    }
}

impl BenchConfig {
    /// Checks the limits ([`MAX_CONNS`], [`MAX_DEPTH`], [`MAX_PAYLOAD`], [`MAX_SECONDS`], [`METHODS`]).
    pub fn validate(&self) -> Result<(), BenchError> {
        let invalid = |msg: String| Err(BenchError::new("invalid_config", msg));
        if self.conns == 0 || self.conns > MAX_CONNS {
            return invalid(format!(
                "--conns must be 1..={MAX_CONNS}, got {}",
                self.conns
            ));
        }
        if self.depth == 0 || self.depth > MAX_DEPTH {
            return invalid(format!(
                "--depth must be 1..={MAX_DEPTH}, got {}",
                self.depth
            ));
        }
        if self.payload > MAX_PAYLOAD {
            return invalid(format!("--payload must be at most {MAX_PAYLOAD} bytes"));
        }
        if !METHODS.contains(&self.method.as_str()) {
            return invalid(format!(
                "--method must be one of {}, got {:?}",
                METHODS.join(", "),
                self.method
            ));
        }
        seconds("--duration", self.duration)?;
        seconds("--warmup", self.warmup)?;
        if self.duration <= 0.0 {
            return invalid("--duration must be greater than 0".to_owned());
        }
        if self.idle && self.churn {
            return invalid("--idle and --churn cannot be combined".to_owned());
        }
        Ok(())
    }

    /// The measured duration as a [`Duration`] (errors if negative, not finite or too long).
    pub fn duration(&self) -> Result<Duration, BenchError> {
        seconds("--duration", self.duration)
    }

    /// The warmup as a [`Duration`] (errors if negative, not finite or too long).
    pub fn warmup(&self) -> Result<Duration, BenchError> {
        seconds("--warmup", self.warmup)
    }
}

/// Converts a number of seconds from the command line into a [`Duration`].
fn seconds(flag: &str, secs: f64) -> Result<Duration, BenchError> {
    if !(0.0..=MAX_SECONDS).contains(&secs) {
        return Err(BenchError::new(
            "invalid_config",
            format!("{flag} must be between 0 and {MAX_SECONDS} seconds, got {secs}"),
        ));
    }
    Duration::try_from_secs_f64(secs)
        .map_err(|e| BenchError::new("invalid_config", format!("{flag}: {e}")))
}

/// Builds the request payload: `"hello"` then `a..z` repeated, cut to `len` bytes.
///
/// Only ASCII lowercase letters, so an uppercased answer can be checked byte by byte.
pub fn make_payload(len: usize) -> Vec<u8> {
    b"hello"
        .iter()
        .chain(b"abcdefghijklmnopqrstuvwxyz".iter().cycle())
        .take(len)
        .copied()
        .collect()
}

/// A failed call or connection attempt, with a short label used to count errors by kind.
///
/// Labels are short and stable, e.g. `connect:ConnectionRefused`, `io:ConnectionReset`,
/// `connection_closed`, `bad_response_data`, `connection_broken`, `hard_stop`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchError {
    kind: Cow<'static, str>,
    message: String,
    /// Whether no connection could be made (see [`BenchError::no_connection`]).
    no_connection: bool,
}

impl BenchError {
    /// An error with the counting label `kind` and a human-readable `message`.
    pub fn new(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        BenchError {
            kind: kind.into(),
            message: message.into(),
            no_connection: false,
        }
    }

    /// This error, marked as a failure to make a connection (connect, handshake,
    /// authentication) rather than of a call on one.
    pub fn no_connection(mut self) -> Self {
        self.no_connection = true;
        self
    }

    /// Whether no connection could be made.
    pub fn is_no_connection(&self) -> bool {
        self.no_connection
    }

    /// An I/O error labelled `<context>:<ErrorKind>`, e.g. `io:ConnectionReset`.
    pub fn io(context: &str, err: &std::io::Error) -> Self {
        BenchError::new(
            format!("{context}:{:?}", err.kind()),
            format!("{context}: {err}"),
        )
    }

    /// The label errors are counted under.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The human-readable description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.kind)
    }
}

impl std::error::Error for BenchError {}

/// Opens benchmark connections to a server; one implementation per protocol.
///
/// The engine calls [`Driver::connect`] once per connection slot (and again after
/// a connection failed, or for every call in churn mode), with a timeout of
/// [`CONNECT_TIMEOUT`] around it.
pub trait Driver: Send + Sync + 'static {
    /// The connection type this driver opens.
    type Conn: Connection;

    /// Short name of the protocol for the report, e.g. `raw` or `rpckit`.
    fn name(&self) -> &str;

    /// Opens one connection to `addr`, ready for calls (handshake done), or one that opens on
    /// its first call, if the driver sends that call with the handshake.
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> impl Future<Output = Result<Self::Conn, BenchError>> + Send;

    /// Called once before an idle run that holds connections for `hold`: a driver whose
    /// connections send keepalive traffic on their own should space it out beyond `hold`.
    /// Default: nothing.
    fn prepare_idle(&mut self, hold: Duration) {
        let _ = hold;
    }
}

/// One open connection that accepts concurrent calls.
///
/// The engine shares a connection between `depth` tasks (through an `Arc`), so
/// `call` takes `&self` and must allow that many calls in flight at once:
/// pipelined in order on one socket, or multiplexed by tag.
///
/// The engine drops a `call` future before it completes only at the hard stop
/// (after which the connection is dropped too) and when the probe call it makes
/// before the clock starts takes longer than its timeout. After a call in the
/// measured run returned an error, the engine stops using the connection and
/// opens a new one; a probe that failed without a connection failure is only
/// counted, and its connection is used for the run.
pub trait Connection: Send + Sync + 'static {
    /// Sends `payload`, waits for and verifies the answer, and returns the
    /// number of payload bytes received.
    fn call<'a>(
        &'a self,
        payload: &'a [u8],
    ) -> impl Future<Output = Result<usize, BenchError>> + Send + 'a;

    /// Whether the connection still looks usable without sending anything (idle mode checks
    /// this after the hold). Default: `true` (the driver cannot tell).
    fn is_alive(&self) -> bool {
        true
    }

    /// Closes the connection politely (idle mode, after the hold). Default: drops it.
    fn close(self) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        drop(self);
        std::future::ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_hello_then_letters() {
        assert_eq!(make_payload(0), b"");
        assert_eq!(make_payload(5), b"hello");
        assert_eq!(make_payload(8), b"helloabc");
        let big = make_payload(1000);
        assert_eq!(big.len(), 1000);
        assert!(big.iter().all(u8::is_ascii_lowercase));
    }

    #[test]
    fn default_config_matches_cli_defaults() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchConfig,
        }
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.bench, BenchConfig::default());
        let cli = Cli::parse_from([
            "x",
            "--conns",
            "3",
            "--depth",
            "7",
            "--duration",
            "0.5",
            "--method",
            "echo",
            "--payload",
            "64",
            "--churn",
            "--json",
        ]);
        assert_eq!(cli.bench.conns, 3);
        assert_eq!(cli.bench.depth, 7);
        assert_eq!(cli.bench.method, "echo");
        assert!(cli.bench.churn && cli.bench.json);
        assert!(Cli::try_parse_from(["x", "--method", "nope"]).is_err());
        let cli = Cli::parse_from(["x", "--idle", "--conns", "20"]);
        assert!(cli.bench.idle && !cli.bench.churn);
        assert!(Cli::try_parse_from(["x", "--idle", "--churn"]).is_err());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let ok = BenchConfig::default();
        assert!(ok.validate().is_ok());
        for bad in [
            BenchConfig {
                conns: 0,
                ..ok.clone()
            },
            BenchConfig {
                depth: 0,
                ..ok.clone()
            },
            BenchConfig {
                duration: 0.0,
                ..ok.clone()
            },
            BenchConfig {
                duration: f64::NAN,
                ..ok.clone()
            },
            BenchConfig {
                warmup: -1.0,
                ..ok.clone()
            },
            BenchConfig {
                payload: MAX_PAYLOAD + 1,
                ..ok.clone()
            },
            BenchConfig {
                method: "x".into(),
                ..ok.clone()
            },
            BenchConfig {
                idle: true,
                churn: true,
                ..ok.clone()
            },
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.kind(), "invalid_config");
        }
    }
}
