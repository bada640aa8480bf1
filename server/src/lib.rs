//! # rpckit-server: serve a [`Service`] over authenticated, framed TCP
//!
//! A [`Server`] accepts connections, runs the handshake (proto's
//! [`rpckit_proto::handshake`]) with a deadline, then gives each authenticated connection one
//! task that owns its socket: it reads frames and dispatches each call (a handler that answers
//! at once is answered in place, one that has to wait gets a task of its own and hands its
//! result back through a channel), and writes the answers, everything ready in one write.
//! Limits and timeouts are in [`ServerConfig`].
//!
//! Read it in the order a call flows: [`Server::run`] (`server.rs`; `listen.rs` binds the
//! listener) → `accept.rs` (caps, penalties; `proxy_header.rs` reads a trusted proxy's PROXY
//! header; `admission/` decides which unauthenticated connection gives way to a new one;
//! `refuse.rs` turns peers away) → `connection/` (handshake, event loop, dispatch, answers).
//! `keyring_handle.rs` holds the keys, replaceable while the server runs (key rotation);
//! `log_summary.rs` puts connection-level warnings through `log_limit.rs`'s per-reason rate
//! limit and logs what it held back. `spawn.rs` is the one place that names the runtime
//! (async-std).
//!
//! The stock `rpc-server` binary serves [`DemoService`]; your own service is any type that
//! implements [`Service`] for your own serde request/response enums.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod accept;
mod admission;
mod config;
mod connection;
mod demo;
pub mod fd_limit;
mod keyring_handle;
mod linger;
mod listen;
pub mod log_limit;
mod log_summary;
pub mod metrics;
mod penalty;
mod proxy_header;
mod refuse;
mod server;
mod service;
mod shutdown;
mod spawn;
mod stats;

pub use config::ServerConfig;
pub use demo::{DemoService, MAX_SLEEP_MS};
pub use ipnet::IpNet;
pub use keyring_handle::KeyringHandle;
pub use listen::bind_listener;
pub use server::Server;
pub use service::{CallContext, Service};
pub use stats::{ServerStats, StatsSnapshot};

/// The README's Rust example is compiled as a doctest so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
