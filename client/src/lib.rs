//! # rpckit-client: call an rpckit server
//!
//! [`Client::connect`] opens a TCP connection, runs the mutual handshake (the server proves it
//! holds the key too), and returns a client whose [`Client::call`] can be used from many tasks
//! at once: calls are multiplexed over the one connection by id. Each call has a timeout that
//! the server also enforces as a deadline; dropping a call cancels it on the server. If the
//! connection dies, every call in flight ends at once with a typed [`CallError`], and the next
//! call reconnects with backoff.
//!
//! The [`bench`] module is the load generator behind `rpc-client bench`.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

pub mod bench;
mod client;
mod config;
mod connection;
mod error;
mod oneshot;

pub use client::Client;
pub use config::ClientConfig;
pub use error::{CallError, ConnectError};
