//! Manual check of the benchmark engine against `rpc-raw-reference`.
//!
//! `cargo run --release -p rpckit-client --example raw_bench -- 127.0.0.1:PORT --conns 4 --depth 8`

use clap::Parser;
use rpckit_client::bench::{measure_sha256_throughput, run_raw, BenchConfig};

/// Runs the raw-protocol benchmark against ADDR.
#[derive(Parser)]
struct Cli {
    /// Address of a running rpc-raw-reference.
    addr: String,
    /// Also measure local SHA-256 throughput.
    #[arg(long)]
    sha: bool,
    #[command(flatten)]
    bench: BenchConfig,
}

fn main() {
    let cli = Cli::parse();
    if cli.sha {
        let bps = measure_sha256_throughput(std::time::Duration::from_secs(1));
        println!("sha256 over 64 KiB buffers: {:.0} MB/s", bps / 1e6);
    }
    match async_std::task::block_on(run_raw(&cli.addr, &cli.bench)) {
        Ok(report) => report.print(cli.bench.json),
        Err(e) => {
            eprintln!("raw_bench: {e}");
            std::process::exit(1);
        }
    }
}
