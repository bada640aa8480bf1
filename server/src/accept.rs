//! The accept loop: takes connections, applies the per-address penalties and the connection
//! cap, gets each one a place among the unauthenticated connections (`admission/`, which may
//! evict another to make room), and gives each admitted connection a task of its own.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use rpckit_proto::Refusal;
use tracing::{info, warn};

use crate::admission::{Admit, Cap, Ticket};
use crate::connection;
use crate::refuse::refuse;
use crate::server::Shared;
use crate::service::Service;
use crate::shutdown::ShutdownSignal;
use crate::spawn::spawn;
use crate::stats::AdoptedGauge;

/// Pause after `accept` fails (for example out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections for ever (the caller stops it by dropping it). Each connection task
/// holds a clone of `running` until it ends.
pub(crate) async fn accept_loop<S: Service>(
    shared: &Arc<Shared<S>>,
    listener: &Async<TcpListener>,
    signal: &ShutdownSignal,
    running: &async_channel::Sender<()>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => admit(shared, stream, peer, signal, running),
            Err(e) => {
                warn!(error = %e, "accept failed; backing off");
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Decides what to do with a new connection: refuse it, or spawn its task.
fn admit<S: Service>(
    shared: &Arc<Shared<S>>,
    stream: Async<TcpStream>,
    peer: SocketAddr,
    signal: &ShutdownSignal,
    running: &async_channel::Sender<()>,
) {
    if let Err(e) = stream.get_ref().set_nodelay(true) {
        warn!(%peer, error = %e, "cannot set up the accepted socket");
        return;
    }
    // No `ShuttingDown` refusal here: the listener closes when the drain starts, so a
    // connection made after that is refused by the OS and the port is free for a new
    // instance at once.
    let stream = Arc::new(stream);
    let ticket = match refusal(shared, peer, &stream) {
        Ok(ticket) => ticket,
        Err(reason) => {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            // Nothing else holds the socket of a refused connection.
            if let Ok(stream) = Arc::try_unwrap(stream) {
                refuse(shared, stream, reason);
            }
            return;
        }
    };
    let shared = shared.clone();
    let signal = signal.clone();
    let running = running.clone();
    // Count the connection before its task starts, so a burst of accepts sees it; the count
    // goes down when the task ends, even by a panic (in a user's serde code, say).
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    spawn(async move {
        // Locals drop in reverse order, on return and on unwind alike: the count goes down
        // before `running` tells `run` this task has ended, so a drained server never reports
        // a connection still counted.
        let _running = running;
        let _counted = AdoptedGauge(&shared.stats.connections);
        connection::serve(stream, peer, &shared, signal, ticket).await;
    });
}

/// The new connection's place among the unauthenticated ones, or why it is refused (logged).
fn refusal<S>(
    shared: &Shared<S>,
    peer: SocketAddr,
    stream: &Arc<Async<TcpStream>>,
) -> Result<Ticket, Refusal> {
    let config = &shared.config;
    let now = Instant::now();
    if let Some(until) = shared.penalties.refused(peer.ip(), now) {
        let secs_left = until.saturating_duration_since(now).as_secs();
        warn!(%peer, secs_left, "refused: address penalised after failed authentications");
        return Err(Refusal::RateLimited);
    }
    if shared.stats.connections.load(Ordering::Relaxed) >= config.max_connections {
        warn!(%peer, limit = config.max_connections, "refused: connection limit reached");
        return Err(Refusal::Busy);
    }
    match shared.admission.admit(peer, Some(stream.clone()), now) {
        Admit::Admitted { ticket, evicted } => {
            if let Some(evicted) = evicted {
                info!(%peer, %evicted, "evicted an unauthenticated connection to make room");
            }
            Ok(ticket)
        }
        Admit::Refused(Cap::PerSource) => {
            warn!(%peer, limit = ?config.max_unauthenticated_per_source, "refused: this source's unauthenticated connections are all past their hello");
            Err(Refusal::Busy)
        }
        Admit::Refused(Cap::Total) => {
            warn!(%peer, limit = config.max_unauthenticated, "refused: unauthenticated connections are all past their hello");
            Err(Refusal::Busy)
        }
    }
}
