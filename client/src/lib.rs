//! # rpckit-client: call an rpckit server
//!
//! [`Client::connect`] opens a TCP connection, runs the mutual handshake (the server proves it
//! holds the key too), and returns a client whose [`Client::call`] can be used from many tasks
//! at once: calls are multiplexed over the one connection by id. Each call has a timeout that
//! the server also enforces as a deadline; dropping a call tells the server to cancel it. If the
//! connection dies, every call in flight ends at once with a typed [`CallError`], and the next
//! call reconnects with backoff.
//!
//! Given several servers (`"a:1,b:2,c:3"`, or a name with several addresses), the client keeps
//! a connection to each and sends every call to the less loaded of two picked at random,
//! avoiding servers that failed or are draining ([`Client::endpoint_stats`];
//! docs/OPERATIONS.md, "Scaling out").
//!
//! Each connection has one task on the async-std executor that owns its socket: it writes
//! every call and reads every answer, handing each to its caller. A caller that is itself a
//! task on that executor (`async_std::task::spawn`) is resumed on the same thread; a caller
//! blocked in `block_on` on a thread of its own is woken across threads for every answer,
//! which in a one-call-at-a-time loop costs about a quarter of the calls per second. For a
//! single call it does not matter.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

mod balance;
mod calls;
mod client;
mod config;
mod connect;
mod connection;
mod deadline;
mod error;
mod proven;
mod retry;
mod route;

pub use balance::{EndpointState, EndpointStats};
pub use client::Client;
pub use config::ClientConfig;
pub use error::{CallError, ConnectError, ConnectionLost};
