//! One client connection, from handshake to close, in the one task that owns its socket:
//! handshake → event loop (read frame → check tag → decode → dispatch → queue answer →
//! write) → goodbye, last writes and close.
//!
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
mod outgoing;
mod timers;

use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Async;
use rpckit_proto::handshake::{self, HandshakeConfig, ProofVerdict};
use rpckit_proto::{HandshakeError, ServerMessage, SuitePolicy};
use tracing::{info, warn};

use self::event_loop::Connection;
use self::outgoing::Outgoing;
use crate::refuse::linger_and_close;
use crate::server::Shared;
use crate::service::Service;
use crate::shutdown::ShutdownSignal;
use crate::stats::AdoptedGauge;

/// After a failed handshake, how long the server keeps reading (and discarding) what the peer
/// sent, so that closing does not reset the connection before the peer reads the refusal.
const HANDSHAKE_FAILURE_LINGER: Duration = Duration::from_millis(500);

/// Runs one connection to its end. Never panics on peer input; logs why it closed.
pub(crate) async fn serve<S: Service>(
    stream: Async<TcpStream>,
    peer: SocketAddr,
    shared: &Shared<S>,
    shutdown: ShutdownSignal,
) {
    // The accept loop counted this connection as unauthenticated before spawning us.
    let unauthenticated = AdoptedGauge(&shared.stats.unauthenticated);
    let config = HandshakeConfig {
        timeout: shared.config.handshake_timeout,
        max_frame: shared.config.max_frame,
    };
    // Both happen once the proof is checked, before the peer hears the verdict: a failed
    // proof counts against the address, so the client cannot come back before its failure
    // counts; and the connection leaves the unauthenticated count, so a client that has the
    // server's proof can open its next connection without finding this one still counted.
    // A handshake that ends before its proof is checked never calls back; the gauge then
    // leaves the count with the handshake's future, as this statement ends.
    let mut penalised = false;
    let policy = SuitePolicy {
        accept: shared.config.suites,
        key_limits: shared.config.key_limits,
        ..SuitePolicy::default()
    };
    let on_verdict = |verdict| {
        drop(unauthenticated);
        if verdict == ProofVerdict::Rejected {
            penalised = shared
                .penalties
                .record_failure(peer.ip(), Instant::now())
                .is_some();
        }
    };
    let session = handshake::accept_with_policy(
        &stream,
        &stream,
        &shared.keyring,
        &config,
        &policy,
        on_verdict,
    )
    .await;
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            handshake_failed(shared, peer, &e, penalised);
            linger_and_close(&stream, HANDSHAKE_FAILURE_LINGER).await;
            return;
        }
    };
    shared.penalties.record_success(peer.ip());
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
    conn.calls.cancel_all();
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
    let _ = stream.get_ref().shutdown(Shutdown::Both);
    match flushed {
        _ if close.is_fault() => warn!(%peer, key_id = %key_id, "closed: {close}"),
        Ok(()) => info!(%peer, key_id = %key_id, "closed: {close}"),
        Err(e) => warn!(%peer, key_id = %key_id, "closed: {close}; last write: {e}"),
    }
}

/// Counts and logs a failed handshake; `penalised`: the failure put the address under penalty.
fn handshake_failed<S>(shared: &Shared<S>, peer: SocketAddr, e: &HandshakeError, penalised: bool) {
    shared
        .stats
        .handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    if penalised {
        warn!(%peer, reason = %e, penalty_secs = shared.config.auth_penalty.as_secs(), "handshake failed; address penalised")
    } else {
        warn!(%peer, reason = %e, "handshake failed");
    }
}
