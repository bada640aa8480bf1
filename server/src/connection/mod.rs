//! One client connection, from handshake to close, in the one task that owns its socket:
//! handshake → event loop (read frame → check tag → decode → dispatch → queue answer →
//! write) → goodbye, last writes, and a close that lets the client read them (`linger.rs`).
//!
//! - [`handshake`]: the handshake, raced against eviction and the per-step deadline;
//! - [`event_loop`]: the loop and what it waits for;
//! - [`dispatch`]: decoding a frame and running its call, in place or in a task;
//! - [`calls`]: the calls running in tasks, and the channel their results come back on;
//! - [`outgoing`]: the answers queued and the batch being written;
//! - [`timers`]: keepalive, idle, drain and write deadlines;
//! - [`close`]: why a connection ends.

mod calls;
mod close;
mod dispatch;
mod event_loop;
mod handshake;
mod outgoing;
mod timers;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use async_io::Async;
use rpckit_proto::ServerMessage;
use tracing::info;

use self::event_loop::Connection;
use self::outgoing::Outgoing;
use crate::admission::Ticket;
use crate::linger::linger_and_close;
use crate::log_limit::WarnReason;
use crate::log_summary::limited;
use crate::metrics::CallOutcome;
use crate::server::Shared;
use crate::service::Service;
use crate::shutdown::ShutdownSignal;

/// After the last answers (and a `Goodbye`) are written, how long the server waits for the
/// client to close its side, discarding what it still sends, before closing: closing with
/// unread bytes would reset the connection and could discard what the client has not read.
pub(crate) const CLOSE_LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and discarded in that time: calls the client sent before it read the
/// `Goodbye`, including what waits in the socket's receive buffer, which the kernel grows to
/// several MiB for a fast sender (up to `net.ipv4.tcp_rmem`'s maximum, 6 MiB by default).
const CLOSE_READ_LIMIT: usize = 64 << 20;

/// Runs one connection to its end. Never panics on peer input; logs why it closed.
pub(crate) async fn serve<S: Service>(
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    shared: &Shared<S>,
    shutdown: ShutdownSignal,
    ticket: Ticket,
) {
    // Boxed: the handshake's state lives only while it runs, not in every connection's task
    // for the connection's whole life.
    let handshake = Box::pin(handshake::authenticate(&stream, peer, shared, ticket));
    let Some(session) = handshake.await else {
        return;
    };
    let key_id = Arc::new(session.key_id.clone());
    let (mut reader, writer) = session.split();
    reader.set_budget(shared.buffer_budget.clone());
    let (sealer, _, unwritten) = writer.into_parts();
    // The ServerProof is still unwritten only if frames came with the client's proof
    // (PROTOCOL.md §3.5): it leaves with their answers.
    let calls_with_proof = !unwritten.is_empty();
    let suite = reader.suite();
    info!(%peer, key_id = %key_id, %suite, calls_with_proof, "authenticated");
    let out = Outgoing::new(sealer, unwritten, shared.config.max_queued);
    let mut conn = Connection::new(shared, peer, key_id.clone(), out);
    let close = conn.run(&mut reader, &stream, shutdown).await;
    // Nothing more is read: the read buffer, and its charge to the shared budget, go back now.
    drop(reader);
    // Calls still running are cancelled; none of them answers after the connection's end.
    conn.calls.cancel_all(CallOutcome::Cancelled);
    // Every call has had its one answer queued: the goodbye is the last message
    // (PROTOCOL.md §9.6).
    if close.says_goodbye() {
        let _ = conn
            .out
            .push_unbounded(&ServerMessage::<S::Response>::Goodbye);
    }
    let flushed = if close.may_write() {
        conn.out.finish(&stream, shared.config.write_timeout).await
    } else {
        Ok(())
    };
    if close.may_write() && flushed.is_ok() {
        // Boxed: the linger's read buffer lives only while it runs, not in every connection's
        // task for the connection's whole life.
        Box::pin(linger_and_close(&stream, CLOSE_LINGER, CLOSE_READ_LIMIT)).await;
    } else {
        let _ = stream.get_ref().shutdown(Shutdown::Both);
    }
    let limiter = &shared.log_limit;
    match flushed {
        _ if close.is_fault() => {
            limited!(limiter, close.warn_reason(), warn, %peer, key_id = %key_id, "closed: {close}")
        }
        Ok(()) => info!(%peer, key_id = %key_id, "closed: {close}"),
        Err(e) => {
            let reason = WarnReason::ConnectionFault;
            limited!(limiter, reason, warn, %peer, key_id = %key_id, "closed: {close}; last write: {e}")
        }
    }
}
