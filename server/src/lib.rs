//! # rpckit-server: serve a [`Service`] over authenticated, framed TCP
//!
//! A [`Server`] accepts connections, runs the handshake (proto's
//! [`rpckit_proto::handshake`]) with a deadline, then gives each authenticated connection one
//! task that reads frames and dispatches each call: a handler that answers at once is answered
//! in place, one that has to wait gets a task of its own. Answers leave through the
//! connection's [`rpckit_proto::Outbox`], which puts everything ready into one write. Limits
//! and timeouts are in [`ServerConfig`].
//!
//! The stock `rpc-server` binary serves [`DemoService`]; your own service is any type that
//! implements [`Service`] for your own serde request/response enums.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod config;
mod connection;
mod demo;
pub mod fd_limit;
pub mod log_limit;
pub mod metrics;
mod penalty;
mod server;
mod service;
mod shutdown;
mod stats;

pub use config::ServerConfig;
pub use demo::{DemoService, MAX_SLEEP_MS};
pub use server::Server;
pub use service::{CallContext, Service};
pub use stats::{ServerStats, StatsSnapshot};

/// The README's Rust example is compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
