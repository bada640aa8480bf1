//! What a benchmark run does: connections, depth, timing, payload and mode, with the limits
//! every value is checked against.

use std::time::Duration;

use crate::BenchError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
