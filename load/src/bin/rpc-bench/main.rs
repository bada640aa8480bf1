//! `rpc-bench`: the benchmark behind `make bench`.
//!
//! Default mode: the kit (`rpc-server` loaded by `rpc-client bench`) against the raw reference
//! (`rpc-raw-reference` loaded by `rpc-client bench --raw`), same engine, same run. `ab` mode:
//! an old build of the kit against a new one, each its own server and client. `suites` mode:
//! the encrypting suites against the integrity-only one, same binaries. `spread` mode: one
//! server against three behind the client's balancing. `metrics` mode: one build with its
//! metrics on against the same build with them off.
//!
//! Servers are pinned to one CPU (`taskset -c`) and load clients to another; every wait on a
//! process is a wait on its ready line or its exit, and every client run is bounded. W6 (idle
//! memory) runs first on fresh servers, then W1–W5 and W7 in paired rounds (the two sides of
//! a workload back to back, the order alternating), judged by the median of per-round ratios.
//! Tables go to stdout and `target/bench/latest.md`; commands to `target/bench/commands.txt`;
//! raw reports to `target/bench/*.json`. Everything started is killed on exit.

mod metrics_mode;
mod pair;
mod procs;
mod results;
mod runner;
mod spread;
mod stats;
mod suite;
mod suite_ab;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Command line of `rpc-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "rpc-bench",
    about = "Benchmark the kit against the raw reference, an old build against a new one, or the encrypting suites against the integrity-only one"
)]
struct Cli {
    #[command(flatten)]
    opts: Opts,
    #[command(subcommand)]
    mode: Option<Mode>,
}

/// Options of every mode.
#[derive(Debug, Args)]
pub struct Opts {
    /// Measured seconds per run.
    #[arg(long, global = true, env = "BENCH_SECS", default_value_t = 3.0)]
    pub secs: f64,
    /// Warmup seconds per run (not measured).
    #[arg(long, global = true, env = "BENCH_WARMUP", default_value_t = 1.0)]
    pub warmup: f64,
    /// Paired rounds of each load workload [default: 5; ab: 20; suites: 5].
    #[arg(long, global = true, env = "BENCH_ROUNDS")]
    pub rounds: Option<usize>,
    /// Workloads to run: numbers 1-7 separated by commas or spaces (6 is idle memory, run
    /// once first) [default: 1,2,3,4,5,6,7; ab: 1,2,3,4,5,6; suites: 1,2,3,4,5].
    #[arg(long, global = true, env = "BENCH_WORKLOADS")]
    pub workloads: Option<String>,
    /// Idle connections held for W6.
    #[arg(long, global = true, env = "BENCH_IDLE_CONNS", default_value_t = 5000)]
    pub idle_conns: u64,
    /// CPU the servers are pinned to.
    #[arg(long, global = true, env = "BENCH_SERVER_CPU", default_value_t = 0)]
    pub server_cpu: usize,
    /// CPU the load clients are pinned to.
    #[arg(long, global = true, env = "BENCH_CLIENT_CPU", default_value_t = 1)]
    pub client_cpu: usize,
    /// Exit 1 if a target is missed (else exit 0 once everything ran).
    #[arg(long, global = true, env = "BENCH_STRICT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false)]
    pub strict: bool,
    /// Directory of `rpc-server`, `rpc-client` and `rpc-raw-reference` [default: this binary's].
    #[arg(long, global = true)]
    pub bin_dir: Option<PathBuf>,
    /// Where reports and tables go [default: `bench` beside the binaries' directory, i.e.
    /// target/bench; suites: its `suites` directory].
    #[arg(long, global = true)]
    pub out: Option<PathBuf>,
}

/// The modes besides the default (kit against the raw reference).
#[derive(Debug, Subcommand)]
enum Mode {
    /// Old build against new build: each DIR holds `rpc-server` and `rpc-client`; reports the
    /// median of per-round new ÷ old ratios per workload (target ≥ 0.90) and W6 KiB per idle
    /// connection of both.
    Ab {
        /// Directory of the old build's binaries.
        #[arg(long)]
        old: PathBuf,
        /// Directory of the new build's binaries.
        #[arg(long)]
        new: PathBuf,
    },
    /// The encrypting suites against the integrity-only one (`hmac-sha256`), same binaries,
    /// same run: reports per workload the medians and the median of per-round ratios
    /// encrypted ÷ integrity-only (target ≥ 0.95 on W1–W3 and W5; W4 reported).
    Suites {
        /// Encrypting suites to compare with hmac-sha256, separated by commas:
        /// aes-256-gcm, chacha20-poly1305, or encrypted (also: any) for the client's default.
        #[arg(long, env = "RPC_SUITE", default_value = "encrypted")]
        suite: String,
    },
    /// One server against three (`rpc-client bench --addr a,b,c --conns 12 --depth 32`, all
    /// servers on the server CPU): median calls/s of each, the median 3 ÷ 1 ratio (target
    /// ≥ 0.90) and how evenly the three got calls (target ±15 %).
    Spread,
    /// Metrics on against metrics off: one build's rpc-server started with and without
    /// `--metrics-listen`; reports the median of per-round on ÷ off ratios per workload
    /// (target ≥ 0.95) [default workloads: 1,2,3; rounds: 20].
    Metrics,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One executor thread per process, kit and reference alike (inherited by every child).
    if std::env::var_os("ASYNC_STD_THREAD_COUNT").is_none() {
        std::env::set_var("ASYNC_STD_THREAD_COUNT", "1");
    }
    let outcome = match cli.mode {
        None => suite::kit_vs_reference(&cli.opts),
        Some(Mode::Ab { old, new }) => pair::old_vs_new(&cli.opts, &old, &new),
        Some(Mode::Suites { suite }) => suite_ab::parse_encrypting(&suite)
            .and_then(|suites| suite_ab::encrypted_vs_integrity(&cli.opts, &suites)),
        Some(Mode::Spread) => spread::one_vs_three(&cli.opts),
        Some(Mode::Metrics) => suite::bin_dir(&cli.opts)
            .and_then(|dir| metrics_mode::metrics_on_vs_off(&cli.opts, &dir)),
    };
    match outcome {
        Ok(failed) if failed.is_empty() => ExitCode::SUCCESS,
        Ok(failed) => {
            eprintln!("targets missed: {}", failed.join("; "));
            if cli.opts.strict {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("rpc-bench: {e}");
            ExitCode::from(1)
        }
    }
}
