//! The accept loop: takes connections, applies the connection caps and per-address penalties,
//! gives each admitted connection its own task, and drains them all on shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Async;
use async_std::net::TcpListener;
use futures_lite::io::AsyncWriteExt;
use rpckit_proto::handshake::server_refusal;
use rpckit_proto::timer::{self, Sleep};
use rpckit_proto::{BufferBudget, Keyring, Refusal, TcpSocket};
use tracing::{info, warn};

use crate::config::ServerConfig;
use crate::connection::{self, AdoptedGauge};
use crate::penalty::Penalties;
use crate::service::Service;
use crate::shutdown::{shutdown_channel, ShutdownSignal};
use crate::stats::ServerStats;

/// Refusals being sent at once; past it a connection to refuse is just closed.
const MAX_REFUSALS_IN_PROGRESS: usize = 256;
/// Time a refused peer gets to read the refusal.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// Pause after `accept` fails (for example out of file descriptors), so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection task of one server shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    /// The service calls are dispatched to.
    pub(crate) service: Arc<S>,
    /// Keys clients may authenticate with.
    pub(crate) keyring: Keyring,
    /// Limits and timeouts.
    pub(crate) config: ServerConfig,
    /// Live counters.
    pub(crate) stats: Arc<ServerStats>,
    /// Failed-handshake penalties by address.
    pub(crate) penalties: Penalties,
    /// Refusals being sent now.
    refusals: AtomicUsize,
    /// Read-buffer memory shared by all connections.
    pub(crate) buffer_budget: Arc<BufferBudget>,
}

/// An rpckit server for one [`Service`].
///
/// ```no_run
/// use rpckit_server::{DemoService, Server, ServerConfig};
/// use rpckit_proto::Keyring;
///
/// # async fn run(keyring: Keyring) -> std::io::Result<()> {
/// let listener = async_std::net::TcpListener::bind("127.0.0.1:0").await?;
/// let server = Server::new(DemoService, keyring, ServerConfig::default());
/// // Runs until the future completes (a signal, say), then drains and returns.
/// server.run(listener, std::future::pending::<()>()).await
/// # }
/// ```
#[derive(Debug)]
pub struct Server<S> {
    shared: Arc<Shared<S>>,
}

impl<S: Service> Server<S> {
    /// A server for `service` accepting the keys in `keyring`.
    /// Durations longer than [`rpckit_proto::timer::MAX_DURATION`] are cut to it.
    pub fn new(service: S, keyring: Keyring, config: ServerConfig) -> Self {
        let config = config.bounded();
        let penalties = Penalties::new(
            config.auth_failure_limit,
            config.auth_failure_window,
            config.auth_penalty,
        );
        let buffer_budget = BufferBudget::new(config.max_buffer_memory);
        Server {
            shared: Arc::new(Shared {
                service: Arc::new(service),
                keyring,
                config,
                stats: Arc::new(ServerStats::default()),
                penalties,
                refusals: AtomicUsize::new(0),
                buffer_budget,
            }),
        }
    }

    /// The server's live counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// Serves connections from `listener` until `shutdown` completes; then stops accepting
    /// (the listener is closed), tells every client it is going away, lets calls in flight
    /// finish within the grace period, and returns once every connection has closed, or after
    /// the grace period plus the write timeout plus one second, whichever comes first (a
    /// warning is logged if connections were left).
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let (trigger, signal) = shutdown_channel();
        // Each connection task holds a clone of `done_tx`; `done_rx` fails once all are gone.
        let (done_tx, done_rx) = async_channel::bounded::<()>(1);
        // Accept through async-io directly, so each connection's socket is the kit's own
        // `TcpSocket` (see `rpckit_proto::transport`).
        let listener = Async::new(std::net::TcpListener::try_from(listener)?)?;
        let accept = async {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accept failed; backing off");
                        Sleep::after(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                self.admit(stream, peer, &signal, &done_tx);
            }
        };
        futures_lite::future::or(accept, shutdown).await;
        drop(listener);
        let stats = self.shared.stats.snapshot();
        info!(
            connections = stats.connections,
            calls_in_flight = stats.calls_in_flight,
            "shutting down: no new connections; draining"
        );
        trigger.fire();
        drop(done_tx);
        let config = &self.shared.config;
        // Connections finish within the grace period plus the time to write the last answers;
        // the margin only guards against a bug keeping this process alive for ever.
        let limit = config.grace_period + config.write_timeout + Duration::from_secs(1);
        let drained = timer::within(limit, done_rx.recv()).await.is_some();
        let stats = self.shared.stats.snapshot();
        if drained {
            info!(
                calls_total = stats.calls_total,
                calls_in_flight = stats.calls_in_flight,
                "drained: every connection closed"
            );
        } else {
            warn!(
                connections = stats.connections,
                "drain did not finish in time"
            );
        }
        Ok(())
    }

    /// Decides what to do with a new connection and spawns its task.
    fn admit(
        &self,
        stream: Async<std::net::TcpStream>,
        peer: SocketAddr,
        signal: &ShutdownSignal,
        done: &async_channel::Sender<()>,
    ) {
        let shared = &self.shared;
        let stats = shared.stats.snapshot();
        // No `ShuttingDown` refusal here: the listener closes when the drain starts, so a
        // connection made after that is refused by the OS and the port is free for a new
        // instance at once.
        let refusal = if let Some(until) = shared.penalties.refused(peer.ip(), Instant::now()) {
            warn!(%peer, secs_left = until.saturating_duration_since(Instant::now()).as_secs(), "refused: address penalised after failed authentications");
            Some(Refusal::RateLimited)
        } else if stats.connections >= shared.config.max_connections {
            warn!(%peer, limit = shared.config.max_connections, "refused: connection limit reached");
            Some(Refusal::Busy)
        } else if stats.unauthenticated >= shared.config.max_unauthenticated {
            warn!(%peer, limit = shared.config.max_unauthenticated, "refused: too many unauthenticated connections");
            Some(Refusal::Busy)
        } else {
            None
        };
        let stream = match TcpSocket::new(stream) {
            Ok(stream) => stream,
            Err(e) => {
                warn!(%peer, error = %e, "cannot set up the accepted socket");
                return;
            }
        };
        if let Some(reason) = refusal {
            shared.stats.refused.fetch_add(1, Ordering::Relaxed);
            self.refuse(stream, reason);
            return;
        }
        let shared = shared.clone();
        let signal = signal.clone();
        let done = done.clone();
        // Count the connection before its task starts, so a burst of accepts sees it; the
        // count goes down when the task ends, even by a panic (in a user's serde code, say).
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared.stats.unauthenticated.fetch_add(1, Ordering::Relaxed);
        async_std::task::spawn(async move {
            // Locals drop in reverse order, on return and on unwind alike: the count goes
            // down before `done` tells `run` this task has ended, so a drained server never
            // reports a connection still counted.
            let _done = done;
            let _counted = AdoptedGauge(&shared.stats.connections);
            connection::serve(stream, peer, &shared, signal).await;
        });
    }

    /// Tells a peer why it is refused, then closes. Bounded in time and in number.
    fn refuse(&self, stream: TcpSocket, reason: Refusal) {
        let shared = self.shared.clone();
        if shared.refusals.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSALS_IN_PROGRESS {
            shared.refusals.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        async_std::task::spawn(async move {
            // The whole refusal, written and lingered over, takes at most REFUSAL_LINGER.
            let refused = async {
                let written = async {
                    (&stream).write_all(&server_refusal(reason)).await?;
                    (&stream).flush().await
                };
                if written.await.is_ok() {
                    connection::linger_and_close(&stream, REFUSAL_LINGER).await;
                }
            };
            timer::within(REFUSAL_LINGER, refused).await;
            let _ = stream.shutdown(std::net::Shutdown::Both);
            shared.refusals.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DemoService;

    #[test]
    fn a_connection_task_stays_small() {
        // Every connection's task holds its whole future for the connection's life, so its
        // size is most of what an idle connection costs (W6 in docs/PERFORMANCE.md). It is
        // ≈ 3.2 KB; when bounding a wait in time held the bounded future twice, it was 5.4 KB.
        let server = Server::new(DemoService, Keyring::new(), ServerConfig::default());
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let stream = TcpSocket::new(Async::new(accepted).unwrap()).unwrap();
        let (_trigger, signal) = shutdown_channel();
        let task = connection::serve(stream, peer, &server.shared, signal);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 3584, "a connection's future is {size} bytes");
    }
}
