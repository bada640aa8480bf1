//! The accept loop: takes connections, applies the per-address penalties and the connection
//! cap, gets each one a place among the unauthenticated connections (`admission/`, which may
//! evict another to make room), and gives each admitted connection a task of its own. A
//! trusted proxy's connection gets its task first: it reads the PROXY header
//! (`proxy_header.rs`), and the client's real address then meets the penalties and admission.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use rpckit_proto::Refusal;
use tracing::{debug, warn};

use crate::admission::{Admit, Cap, Ticket};
use crate::connection;
use crate::log_limit::WarnReason;
use crate::log_summary::limited;
use crate::metrics::{HandshakeOutcome, RefusalReason, ServerMetrics};
use crate::proxy_header::read_proxy_header;
use crate::refuse::refuse;
use crate::server::Shared;
use crate::service::Service;
use crate::shutdown::ShutdownSignal;
use crate::spawn::spawn;

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
                limited!(&shared.log_limit, WarnReason::AcceptFailed, warn, error = %e, "accept failed; backing off");
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Takes the connections the kernel has already queued on `listener` without waiting (at most
/// `limit`), so that closing the listener does not reset them: with `SO_REUSEPORT` a client
/// connecting to the shared port may have been queued here just before the drain. They are
/// served like any other; the drain that follows tells them at once that the server is going
/// away, and their clients go to another server.
pub(crate) fn accept_queued<S: Service>(
    shared: &Arc<Shared<S>>,
    listener: &Async<TcpListener>,
    signal: &ShutdownSignal,
    running: &async_channel::Sender<()>,
    limit: usize,
) -> usize {
    let mut taken = 0;
    while taken < limit {
        // The listener is non-blocking: this fails with `WouldBlock` once the queue is empty.
        let Ok((stream, peer)) = listener.get_ref().accept() else {
            break;
        };
        taken += 1;
        match Async::new(stream) {
            Ok(stream) => admit(shared, stream, peer, signal, running),
            Err(e) => warn!(%peer, error = %e, "cannot set up the accepted socket"),
        }
    }
    taken
}

/// Decides what to do with a new connection: refuse it, or spawn its task. A trusted proxy's
/// connection is counted and gets its task at once; the task reads the PROXY header and then
/// decides with the client's real address.
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
    let proxied = shared.config.is_trusted_proxy(peer.ip());
    let ticket = if proxied {
        capacity(shared, peer).map(|()| None)
    } else {
        refusal(shared, peer, &stream).map(Some)
    };
    let ticket = match ticket {
        Ok(ticket) => ticket,
        Err(reason) => return turn_away(shared, stream, reason),
    };
    let shared = shared.clone();
    let signal = signal.clone();
    let running = running.clone();
    // Count the connection before its task starts, so a burst of accepts sees it; the count
    // goes down when the task ends, even by a panic (in a user's serde code, say).
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.record(ServerMetrics::connection_accepted);
    spawn(async move {
        // Locals drop in reverse order, on return and on unwind alike: the count goes down
        // before `running` tells `run` this task has ended, so a drained server never reports
        // a connection still counted.
        let _running = running;
        let _open = OpenConnection(&shared);
        let (stream, client, ticket) = match ticket {
            Some(ticket) => (stream, peer, ticket),
            None => match behind_proxy(&shared, stream, peer).await {
                Some(admitted) => admitted,
                None => return,
            },
        };
        connection::serve(stream, client, &shared, signal, ticket).await;
    });
}

/// For a connection from trusted proxy `proxy`: reads its PROXY header and places the client
/// it names (or the proxy itself, for a LOCAL header). `None` once the connection has been
/// refused or closed.
async fn behind_proxy<S: Service>(
    shared: &Arc<Shared<S>>,
    stream: Arc<Async<TcpStream>>,
    proxy: SocketAddr,
) -> Option<(Arc<Async<TcpStream>>, SocketAddr, Ticket)> {
    let client = match read_proxy_header(&stream, shared.config.hello_timeout).await {
        Ok(client) => client.unwrap_or(proxy),
        Err(e) => {
            shared
                .stats
                .handshake_failures
                .fetch_add(1, Ordering::Relaxed);
            shared.record(|m| m.handshake(HandshakeOutcome::ProtocolError));
            limited!(&shared.log_limit, WarnReason::BadProxyHeader, warn, %proxy, reason = %e, "closed: a trusted proxy's connection without a valid PROXY header");
            let _ = stream.get_ref().shutdown(Shutdown::Both);
            return None;
        }
    };
    debug!(%client, %proxy, "PROXY header read");
    let placed = penalty(shared, client).and_then(|()| place(shared, client, &stream));
    match placed {
        Ok(ticket) => Some((stream, client, ticket)),
        Err(reason) => {
            turn_away(shared, stream, reason);
            None
        }
    }
}

/// Counts a refused connection and tells its peer why (`refuse.rs`).
fn turn_away<S: Service>(shared: &Arc<Shared<S>>, stream: Arc<Async<TcpStream>>, reason: Refusal) {
    shared.stats.refused.fetch_add(1, Ordering::Relaxed);
    // Nothing else holds the socket of a refused connection.
    if let Ok(stream) = Arc::try_unwrap(stream) {
        refuse(shared, stream, reason);
    }
}

/// The new connection's place among the unauthenticated ones, or why it is refused (logged).
fn refusal<S>(
    shared: &Shared<S>,
    peer: SocketAddr,
    stream: &Arc<Async<TcpStream>>,
) -> Result<Ticket, Refusal> {
    penalty(shared, peer)?;
    capacity(shared, peer)?;
    place(shared, peer, stream)
}

/// Refuses an address penalised for failed authentications.
fn penalty<S>(shared: &Shared<S>, peer: SocketAddr) -> Result<(), Refusal> {
    let now = Instant::now();
    if let Some(until) = shared.penalties.refused(peer.ip(), now) {
        let secs_left = until.saturating_duration_since(now).as_secs();
        shared.record(|m| m.connection_refused(RefusalReason::Penalised));
        limited!(&shared.log_limit, WarnReason::RefusedPenalised, warn, %peer, secs_left, "refused: address penalised after failed authentications");
        return Err(Refusal::RateLimited);
    }
    Ok(())
}

/// Refuses a connection past `max_connections`.
fn capacity<S>(shared: &Shared<S>, peer: SocketAddr) -> Result<(), Refusal> {
    let limit = shared.config.max_connections;
    if shared.stats.connections.load(Ordering::Relaxed) >= limit {
        shared.record(|m| m.connection_refused(RefusalReason::ConnectionLimit));
        limited!(&shared.log_limit, WarnReason::RefusedConnectionLimit, warn, %peer, limit, "refused: connection limit reached");
        return Err(Refusal::Busy);
    }
    Ok(())
}

/// A place among the unauthenticated connections, perhaps by evicting another (`admission/`).
fn place<S>(
    shared: &Shared<S>,
    peer: SocketAddr,
    stream: &Arc<Async<TcpStream>>,
) -> Result<Ticket, Refusal> {
    let config = &shared.config;
    match shared
        .admission
        .admit(peer, Some(stream.clone()), Instant::now())
    {
        Admit::Admitted { ticket, evicted } => {
            if let Some(evicted) = evicted {
                limited!(&shared.log_limit, WarnReason::EvictedUnauthenticated, info, %peer, %evicted, "evicted an unauthenticated connection to make room");
            }
            Ok(ticket)
        }
        Admit::Refused(Cap::PerSource) => {
            shared.record(|m| m.connection_refused(RefusalReason::Unauthenticated));
            limited!(&shared.log_limit, WarnReason::RefusedUnauthenticated, warn, %peer, limit = ?config.max_unauthenticated_per_source, "refused: this source's unauthenticated connections are all past their hello");
            Err(Refusal::Busy)
        }
        Admit::Refused(Cap::Total) => {
            shared.record(|m| m.connection_refused(RefusalReason::Unauthenticated));
            limited!(&shared.log_limit, WarnReason::RefusedUnauthenticated, warn, %peer, limit = config.max_unauthenticated, "refused: unauthenticated connections are all past their hello");
            Err(Refusal::Busy)
        }
    }
}

/// Counts an admitted connection as open, in the stats and the metrics, until its task ends,
/// even by a panic: dropping it takes back what `admit` counted before spawning the task.
struct OpenConnection<'a, S>(&'a Shared<S>);

impl<S> Drop for OpenConnection<'_, S> {
    fn drop(&mut self) {
        self.0.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.0.record(ServerMetrics::connection_closed);
    }
}
