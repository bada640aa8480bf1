//! `rpc-client bench`: load a running server with the kit's client (or, with `--raw`, a
//! running `rpc-raw-reference` with the raw protocol) and report calls/s, MB/s, latency
//! percentiles and errors by kind. `--idle` instead opens `--conns` connections, proves each
//! with one call, prints `holding N idle connections`, holds them silently for `--duration`
//! seconds and closes them (for measuring the server's memory per idle connection).
//! With `--addr a,b,c` the run balances over all the servers and the report shows the calls
//! each one got. It keeps `--conns` TCP connections with `--depth` calls in flight on each,
//! as against one server: `conns / n` clients (rounded up) of the `n` servers, each with
//! `depth × n` calls in flight, which it spreads over its `n` connections. (`--churn` and
//! `--idle` keep one client of all the servers per benchmark connection.)

use std::process::ExitCode;

use clap::Args;
use rpckit_load::{measure_sha256_throughput, run, run_raw, BenchConfig, KitDriver};

use crate::{keys, Target};

/// Arguments of `bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Drive an `rpc-raw-reference` server with the raw protocol (no auth, no tags, no serde)
    /// instead of an rpckit server.
    #[arg(long)]
    raw: bool,
    /// Only measure this machine's SHA-256 throughput over 64 KiB buffers for one second and
    /// print it (frame tags cost hashing); no server is needed.
    #[arg(long, conflicts_with = "raw")]
    sha256: bool,
    /// rpckit only: each connection's first call travels with the handshake's proof
    /// (`ClientConfig::pipeline_first_call`), so a new connection costs one round trip less;
    /// the call leaves before the server has proven that it holds the key.
    #[arg(long, conflicts_with = "raw")]
    pipeline_first_call: bool,
    #[command(flatten)]
    config: BenchConfig,
}

/// Runs the benchmark; exit 0 if it ran (errors during the run are in the report).
pub fn run_bench(target: &Target, args: BenchArgs) -> ExitCode {
    if args.sha256 {
        let bytes_per_sec = measure_sha256_throughput(std::time::Duration::from_secs(1));
        if args.config.json {
            println!(
                "{}",
                serde_json::json!({ "sha256_bytes_per_sec": bytes_per_sec })
            );
        } else {
            println!(
                "sha256 over 64 KiB buffers: {:.0} MB/s",
                bytes_per_sec / 1e6
            );
        }
        return ExitCode::SUCCESS;
    }
    // Out-of-range arguments are a local error (exit 1), not a failure to connect.
    if let Err(e) = args.config.validate() {
        eprintln!("rpc-client: bench: {e}");
        return ExitCode::from(crate::call::EXIT_LOCAL);
    }
    // Several servers: the engine is given the first, and each connection balances over all.
    let list: Vec<&str> = target
        .addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    let several = list.len() > 1;
    if several && args.raw {
        eprintln!("rpc-client: bench: --raw takes one address");
        return ExitCode::from(crate::call::EXIT_LOCAL);
    }
    let first = list.first().copied().unwrap_or(target.addr.as_str());
    let mut tally = None;
    // With several servers in steady mode: the TCP connections and the calls in flight on
    // each, for the report (the engine counts clients, and calls in flight per client).
    let mut balanced = None;
    let result = if args.raw {
        async_std::task::block_on(run_raw(&target.addr, &args.config))
    } else {
        let (key_id, key) = match keys::load(target) {
            Ok(found) => found,
            Err(e) => {
                eprintln!("rpc-client: {e}");
                return ExitCode::from(crate::call::EXIT_LOCAL);
            }
        };
        let mut driver = KitDriver::new(&args.config.method, key_id, key)
            .pipeline_first_call(args.pipeline_first_call)
            .churn(args.config.churn)
            .suite(target.suite());
        let mut config = args.config.clone();
        if several {
            driver = driver.balance_over(&target.addr);
            tally = Some(driver.endpoint_tally());
            if !config.churn && !config.idle {
                let n = list.len();
                config.conns = config.conns.div_ceil(n).max(1);
                config.depth = config.depth.saturating_mul(n);
                balanced = Some((config.conns * n, args.config.depth));
            }
        }
        async_std::task::block_on(run(driver, first, &config))
    };
    match result {
        Ok(mut report) => {
            if let Some(tally) = tally {
                report.target = target.addr.clone();
                report.calls_by_endpoint = tally.snapshot();
            }
            if let Some((connections, depth)) = balanced {
                report.connections = connections;
                report.depth = depth;
            }
            report.print(args.config.json);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rpc-client: bench: {e}");
            ExitCode::from(crate::call::EXIT_CONNECT)
        }
    }
}
