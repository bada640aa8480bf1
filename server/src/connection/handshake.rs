//! A connection's handshake, as the server runs it: proto's handshake raced against the
//! connection's eviction and its per-step deadline (`hello_timeout`), holding its place among
//! the unauthenticated connections (an admission [`Ticket`]) until the client's proof is
//! checked. Failures are counted, logged, and struck against or penalise the source.

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_io::Async;
use futures_lite::future;
use rpckit_proto::handshake::{self, server_refusal, HandshakeConfig, ProofVerdict};
use rpckit_proto::{HandshakeError, Refusal, Session, SuitePolicy};
use tracing::debug;

use crate::admission::{HelloWatch, Stall, Ticket};
use crate::linger::linger_and_close;
use crate::log_limit::WarnReason;
use crate::log_summary::limited;
use crate::metrics::HandshakeOutcome;
use crate::server::Shared;

/// After a failed handshake, how long the server keeps reading (and discarding) what the peer
/// sent, so that closing does not reset the connection before the peer reads the refusal.
const HANDSHAKE_FAILURE_LINGER: Duration = Duration::from_millis(500);
/// Most bytes read and discarded while lingering after a failed handshake.
const HANDSHAKE_FAILURE_READ_LIMIT: usize = 16 * 1024;

/// The session of an authenticated connection over its socket.
pub(super) type Authenticated<'a> = Session<&'a Async<TcpStream>, HelloWatch<&'a Async<TcpStream>>>;

/// How the handshake ended.
// Made once per connection and taken apart at once: boxing the session would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
enum Ended<'a> {
    /// Proto's handshake finished, or failed.
    Done(Result<Authenticated<'a>, HandshakeError>),
    /// Another connection took this one's place.
    Evicted,
    /// A client step was late.
    Stalled(Stall),
}

/// Runs the handshake on a connection admitted with `ticket`. Returns the session, or `None`
/// once a failure has been handled (told the peer what it may know, closed, logged).
pub(super) async fn authenticate<'a, S>(
    stream: &'a Async<TcpStream>,
    peer: SocketAddr,
    shared: &Shared<S>,
    ticket: Ticket,
) -> Option<Authenticated<'a>> {
    let config = {
        let mut handshake_config = HandshakeConfig::default();
        handshake_config.timeout = shared.config.handshake_timeout;
        handshake_config.max_frame = shared.config.max_frame;
        handshake_config
    };
    let policy = SuitePolicy {
        accept: shared.config.suites,
        key_limits: shared.config.key_limits,
        ..SuitePolicy::default()
    };
    let progress = ticket.progress.clone();
    let evicted = ticket.evicted();
    // Read once per handshake: a keyring reloaded from now on is used by the next one.
    let keyring = shared.keyring.current();
    let writer = HelloWatch::new(stream, progress.clone());
    // Both happen once the proof is checked, before the peer hears the verdict: a failed
    // proof counts against the address, so the client cannot come back before its failure
    // counts; and the connection leaves the unauthenticated table, so a client that has the
    // server's proof can open its next connection without finding this one still counted.
    // A handshake that ends before its proof is checked never calls back; the ticket then
    // leaves the table with the handshake's future, as this statement ends.
    let mut penalised = false;
    let penalised_ref = &mut penalised;
    let progress_ref = &progress;
    // Built inside the async block: a future made outside and moved in takes its room twice.
    let done = async move {
        let verdict = |verdict| {
            progress_ref.proof_checked();
            drop(ticket);
            if verdict == ProofVerdict::Rejected {
                *penalised_ref = shared
                    .penalties
                    .record_failure(peer.ip(), Instant::now())
                    .is_some();
            }
        };
        Ended::Done(
            handshake::accept_with_policy(stream, writer, &keyring, &config, &policy, verdict)
                .await,
        )
    };
    let evicted = async {
        evicted.await;
        Ended::Evicted
    };
    let stalled = async { Ended::Stalled(progress.stalled(shared.config.hello_timeout).await) };
    let ended = future::or(done, future::or(evicted, stalled)).await;
    let error = match ended {
        Ended::Done(Ok(session)) => {
            shared.penalties.record_success(peer.ip());
            shared.record(|m| m.handshake(HandshakeOutcome::Ok));
            return Some(session);
        }
        Ended::Evicted => {
            debug!(%peer, "evicted before its hello was answered");
            shared.record(|m| m.handshake(HandshakeOutcome::Evicted));
            if !progress.hello_answered() {
                // One try on the non-blocking socket, whose buffer is empty: the peer may
                // read why, and nothing waits on it.
                let _ = stream.get_ref().write(&server_refusal(Refusal::Busy));
            }
            let _ = stream.get_ref().shutdown(Shutdown::Both);
            return None;
        }
        Ended::Stalled(stall) => {
            shared.admission.strike(peer, Instant::now());
            shared.record(|m| m.handshake(HandshakeOutcome::Timeout));
            failed(shared, peer, &stall, WarnReason::HandshakeTimeout, false);
            let _ = stream.get_ref().shutdown(Shutdown::Both);
            return None;
        }
        Ended::Done(Err(e)) => e,
    };
    if strikes_the_source(&error) {
        shared.admission.strike(peer, Instant::now());
    }
    shared.record(|m| m.handshake(outcome(&error)));
    failed(shared, peer, &error, warn_reason(&error), penalised);
    linger_and_close(
        stream,
        HANDSHAKE_FAILURE_LINGER,
        HANDSHAKE_FAILURE_READ_LIMIT,
    )
    .await;
    None
}

/// Whether a failure counts against its source when something must be evicted: a missed
/// deadline or a malformed hello. Failed proofs are penalised instead; a peer that leaves is
/// neither.
fn strikes_the_source(e: &HandshakeError) -> bool {
    matches!(
        e,
        HandshakeError::Timeout(_)
            | HandshakeError::BadMagic { .. }
            | HandshakeError::UnsupportedVersion { .. }
            | HandshakeError::UnsupportedSuite { .. }
            | HandshakeError::Malformed(_)
            | HandshakeError::UnexpectedMessage { .. }
    )
}

/// The metrics' name for how a handshake failed.
fn outcome(e: &HandshakeError) -> HandshakeOutcome {
    match e {
        HandshakeError::Timeout(_) => HandshakeOutcome::Timeout,
        HandshakeError::Closed | HandshakeError::Io(_) => HandshakeOutcome::PeerClosed,
        HandshakeError::UnknownKeyId(_) => HandshakeOutcome::UnknownKey,
        HandshakeError::BadClientProof(_) => HandshakeOutcome::BadProof,
        _ => HandshakeOutcome::ProtocolError,
    }
}

/// The log budget a failed handshake is counted against.
fn warn_reason(e: &HandshakeError) -> WarnReason {
    match e {
        HandshakeError::Timeout(_) => WarnReason::HandshakeTimeout,
        HandshakeError::BadMagic { .. }
        | HandshakeError::UnsupportedVersion { .. }
        | HandshakeError::Malformed(_)
        | HandshakeError::UnexpectedMessage { .. } => WarnReason::HandshakeMalformed,
        HandshakeError::UnsupportedSuite { .. } | HandshakeError::SuiteNotAllowed { .. } => {
            WarnReason::HandshakeSuite
        }
        HandshakeError::UnknownKeyId(_) => WarnReason::HandshakeUnknownKey,
        HandshakeError::BadClientProof(_) => WarnReason::HandshakeBadProof,
        _ => WarnReason::HandshakeFailed,
    }
}

/// Counts and logs (within `kind`'s log budget) a failed handshake; `penalised`: the failure
/// put the address under penalty.
fn failed<S>(
    shared: &Shared<S>,
    peer: SocketAddr,
    reason: &dyn std::fmt::Display,
    kind: WarnReason,
    penalised: bool,
) {
    shared
        .stats
        .handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    if penalised {
        limited!(&shared.log_limit, kind, warn, %peer, reason = %reason, penalty_secs = shared.config.auth_penalty.as_secs(), "handshake failed; address penalised")
    } else {
        limited!(&shared.log_limit, kind, warn, %peer, reason = %reason, "handshake failed");
    }
}
