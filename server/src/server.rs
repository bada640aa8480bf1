//! The server: what its connections share, and `run`, which serves a listener until a
//! shutdown future completes and then drains every connection.

use std::future::Future;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::future;
use rpckit_proto::{BufferBudget, Keyring};
use tracing::{info, warn};

use crate::accept::{accept_loop, accept_queued};
use crate::admission::Admission;
use crate::config::ServerConfig;
use crate::connection;
use crate::keyring_handle::KeyringHandle;
use crate::log_limit::LogLimiter;
use crate::log_summary::SummaryTicker;
use crate::metrics::ServerMetrics;
use crate::penalty::Penalties;
use crate::service::Service;
use crate::shutdown::shutdown_channel;
use crate::stats::ServerStats;

/// What every connection task of one server shares.
#[derive(Debug)]
pub(crate) struct Shared<S> {
    /// The service calls are dispatched to.
    pub(crate) service: Arc<S>,
    /// Keys clients may authenticate with, replaceable while the server runs.
    pub(crate) keyring: KeyringHandle,
    /// Limits and timeouts.
    pub(crate) config: ServerConfig,
    /// Live counters.
    pub(crate) stats: Arc<ServerStats>,
    /// Failed-handshake penalties by address.
    pub(crate) penalties: Penalties,
    /// Connections not authenticated yet, their caps and who gives way to whom.
    pub(crate) admission: Arc<Admission>,
    /// Refusals being sent now.
    pub(crate) refusals: AtomicUsize,
    /// Read-buffer memory shared by all connections.
    pub(crate) buffer_budget: Arc<BufferBudget>,
    /// Prometheus metrics, if the embedder asked for them ([`Server::with_metrics`]);
    /// `None` costs the data path nothing but a branch.
    pub(crate) metrics: Option<ServerMetrics>,
    /// Rate limits on connection-level warnings (`log_summary.rs`).
    pub(crate) log_limit: Arc<LogLimiter>,
}

impl<S> Shared<S> {
    /// Records on the metrics, if there are any (one branch when there are none).
    #[inline]
    pub(crate) fn record(&self, record: impl FnOnce(&ServerMetrics)) {
        if let Some(metrics) = &self.metrics {
            record(metrics);
        }
    }
}

/// An rpckit server for one [`Service`].
///
/// ```no_run
/// use rpckit_server::{DemoService, Server, ServerConfig};
/// use rpckit_proto::Keyring;
///
/// # async fn run(keyring: Keyring) -> std::io::Result<()> {
/// let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
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
    /// Durations longer than 100 years are cut to that ([`ServerConfig::bounded`]).
    pub fn new(service: S, keyring: Keyring, config: ServerConfig) -> Self {
        let config = config.bounded();
        let penalties = Penalties::new(
            config.auth_failure_limit,
            config.auth_failure_window,
            config.auth_penalty,
        );
        let buffer_budget = BufferBudget::new(config.max_buffer_memory);
        let log_limit = Arc::new(LogLimiter::new(
            config.log_burst,
            config.log_window,
            Instant::now(),
        ));
        let stats = Arc::new(ServerStats::default());
        let admission = Arc::new(Admission::new(
            config.max_unauthenticated,
            config
                .max_unauthenticated_per_source
                .map_or(config.max_unauthenticated, |n| {
                    n.min(config.max_unauthenticated)
                }),
            stats.clone(),
        ));
        Server {
            shared: Arc::new(Shared {
                service: Arc::new(service),
                keyring: KeyringHandle::new(keyring, stats.clone()),
                config,
                stats,
                penalties,
                admission,
                refusals: AtomicUsize::new(0),
                buffer_budget,
                metrics: None,
                log_limit,
            }),
        }
    }

    /// This server, recording into `metrics` (off by default). Serve them to scrapers and
    /// load balancers with [`crate::metrics::serve_http`] on a listener of their own: build
    /// them with the service's method names, keep a clone for the listener, and let it run
    /// until the process exits, so `/healthz` answers 503 through the whole drain.
    ///
    /// ```no_run
    /// use rpckit_server::metrics::{serve_http, HttpConfig, ServerMetrics};
    /// use rpckit_server::{DemoService, Server, ServerConfig, Service};
    /// use rpckit_proto::Keyring;
    ///
    /// # async fn run(keyring: Keyring) -> Result<(), Box<dyn std::error::Error>> {
    /// let metrics = ServerMetrics::new(DemoService::METHOD_NAMES)?;
    /// let http = async_io::Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 9100))?;
    /// async_std::task::spawn(serve_http(
    ///     http,
    ///     metrics.clone(),
    ///     HttpConfig::default(),
    ///     std::future::pending::<()>(),
    /// ));
    /// let server = Server::new(DemoService, keyring, ServerConfig::default()).with_metrics(metrics);
    /// let listener = std::net::TcpListener::bind("127.0.0.1:7878")?;
    /// server.run(listener, std::future::pending::<()>()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_metrics(mut self, metrics: ServerMetrics) -> Self {
        // `shared` is shared only once `run` starts, so this always finds it unshared.
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.metrics = Some(metrics);
        }
        self
    }

    /// The metrics this server records into, if it was given any ([`Server::with_metrics`]).
    pub fn metrics(&self) -> Option<&ServerMetrics> {
        self.shared.metrics.as_ref()
    }

    /// The server's live counters.
    pub fn stats(&self) -> Arc<ServerStats> {
        self.shared.stats.clone()
    }

    /// A handle on the server's keyring, to rotate keys while it runs (before or during
    /// [`Server::run`]): new handshakes use the new keys at once.
    pub fn keyring_handle(&self) -> KeyringHandle {
        self.shared.keyring.clone()
    }

    /// Serves connections from `listener` until `shutdown` completes; then marks the metrics
    /// draining (`/healthz` answers 503), goes on serving as usual for
    /// [`ServerConfig::drain_delay`], and then stops accepting
    /// (connections the kernel had already queued are taken, then the listener is closed),
    /// tells every client it is going away, lets calls in flight finish within the grace
    /// period, and returns once every connection has closed, or after the grace period plus
    /// the write timeout plus two seconds (one of them for the close, see `linger.rs`),
    /// whichever comes first (a warning is logged if connections were left).
    ///
    /// The listener is a plain `std` one (it is made non-blocking here); connections and calls
    /// run as tasks on async-std's executor. Fails only if the listener cannot be registered
    /// with the reactor.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let listener = Async::new(listener)?;
        // Sums up suppressed warnings each window until `run` returns.
        let _summaries = SummaryTicker::start(self.shared.log_limit.clone());
        let (trigger, signal) = shutdown_channel();
        // Each connection task holds a clone of `running`; `ended` fails once all are gone.
        let (running, ended) = async_channel::bounded::<()>(1);
        let delay = self.shared.config.drain_delay;
        future::or(
            accept_loop(&self.shared, &listener, &signal, &running),
            async {
                shutdown.await;
                if let Some(metrics) = &self.shared.metrics {
                    metrics.set_draining(true);
                }
                if !delay.is_zero() {
                    info!(
                        ?delay,
                        "draining soon: health check answers 503; serving as usual for the drain delay"
                    );
                    Timer::after(delay).await;
                }
            },
        )
        .await;
        let queued = accept_queued(
            &self.shared,
            &listener,
            &signal,
            &running,
            self.shared.config.max_connections,
        );
        drop(listener);
        let stats = self.shared.stats.snapshot();
        info!(
            connections = stats.connections,
            calls_in_flight = stats.calls_in_flight,
            queued,
            "shutting down: no new connections; draining"
        );
        trigger.fire();
        drop(running);
        let config = &self.shared.config;
        // Connections finish within the grace period plus the time to write the last answers
        // and the linger before the close; the margin only guards against a bug keeping this
        // process alive for ever.
        let limit = config.grace_period
            + config.write_timeout
            + connection::CLOSE_LINGER
            + Duration::from_secs(1);
        let drained = future::or(
            async {
                let _ = ended.recv().await;
                true
            },
            async {
                Timer::after(limit).await;
                false
            },
        )
        .await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DemoService;

    #[test]
    fn a_connection_task_stays_small() {
        // Every connection's task holds its whole future for the connection's life, so its
        // size is most of what an idle connection costs (W6 in docs/PERFORMANCE.md).
        let server = Server::new(DemoService, Keyring::new(), ServerConfig::default());
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, peer) = listener.accept().unwrap();
        let stream = std::sync::Arc::new(Async::new(accepted).unwrap());
        let (_trigger, signal) = shutdown_channel();
        let crate::admission::Admit::Admitted { ticket, .. } =
            server
                .shared
                .admission
                .admit(peer, Some(stream.clone()), std::time::Instant::now())
        else {
            panic!("an empty table admits");
        };
        let task = connection::serve(stream, peer, &server.shared, signal, ticket);
        let size = std::mem::size_of_val(&task);
        // The handshake's state is boxed and not counted here: it lives only while it runs.
        assert!(size <= 2560, "a connection's future is {size} bytes");
    }
}
