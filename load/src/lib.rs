//! # rpckit-load: the load tool behind `rpc-client bench` and `make bench`
//!
//! Two halves: a load generator that drives either the kit or the raw reference through the
//! same engine, and [`reference`], the raw reference server itself (binary
//! `rpc-raw-reference`). The `rpc-bench` binary runs the whole comparison (`make bench`).
//!
//! Read it in the order a run goes: [`config`] (what to run) → [`engine`] (connection slots,
//! workers, deadline; [`idle`] for idle mode; [`connect`] for bounded connects) → a
//! [`Driver`] ([`kit`] or [`raw`]) → [`recorder`] (counters and histograms) → [`report`].
//!
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
//! # async fn demo() -> Result<(), rpckit_load::BenchError> {
//! use rpckit_load::{run_raw, BenchConfig};
//! let cfg = BenchConfig { conns: 4, depth: 8, duration: 2.0, ..BenchConfig::default() };
//! let report = run_raw("127.0.0.1:7000", &cfg).await?;
//! report.print(cfg.json);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod config;
pub mod connect;
pub mod driver;
pub mod engine;
pub mod error;
pub mod idle;
pub mod kit;
pub mod progress;
pub mod raw;
pub mod recorder;
pub mod reference;
pub mod report;
pub mod sha;

pub use config::{
    BenchConfig, CLOSE_TIMEOUT, CONNECT_PARALLEL, CONNECT_TIMEOUT, HARD_STOP_GRACE,
    IDLE_OPEN_TIMEOUT, MAX_CONNS, MAX_DEPTH, MAX_PAYLOAD, MAX_SECONDS, METHODS, PROBE_TIMEOUT,
};
pub use driver::{make_payload, Connection, Driver};
pub use engine::run;
pub use error::BenchError;
pub use idle::run_idle;
pub use kit::{EndpointTally, KitConnection, KitDriver};
pub use raw::{run_raw, RawDriver};
pub use report::{BenchReport, IdleCounts, LatencySummary};
pub use sha::measure_sha256_throughput;
