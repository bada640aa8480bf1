//! The `Client`: calls over multiplexed connections to one server or several, shared by any
//! number of tasks, with timeouts, cancellation, and reconnection after a connection is lost.
//!
//! A call reads top to bottom: [`Client::call`] → pick an endpoint ([`crate::balance`]: the
//! only one, or the less loaded of two) → [`route`] (its connection that is up, or a new one,
//! [`crate::connect`]) → [`Connection::call`] (hands the call to the connection's task and
//! waits for its answer) → the task (`connection/task.rs`) writes it, reads the answer and
//! hands it back.
//!
//! Retry rule: a call is sent again only if it provably never ran: it was not yet written
//! when the connection died, or it was unanswered when the server said `Goodbye` (a server
//! answers every call it read before saying goodbye), or (with several endpoints) the server
//! answered `ShuttingDown`. A call that was written when the connection died otherwise fails
//! with [`CallError::OutcomeUnknown`], because the server may have run it. With one endpoint a
//! `ShuttingDown` answer is the caller's to retry; with several, the call goes to another
//! endpoint, and so does one whose endpoint cannot be connected to (that endpoint is ejected
//! and tried again after a backoff).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use rpckit_proto::{KeyId, RpcError, SecretKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use crate::balance::{self, Balancer, Endpoint, EndpointStats};
use crate::config::ClientConfig;
use crate::connect;
use crate::connection::Failure;
use crate::error::{CallError, ConnectError};
use crate::route::{gave_up, route, this_try, Detour, Route};

/// A client of one server or several, for the service's `Req`/`Resp` enums.
///
/// Cheap to clone: clones share the connections, and any number of tasks may call at once;
/// calls are multiplexed over one connection per server by id and answered in any order.
/// Given several servers, each call goes to the less loaded of two picked at random (see
/// [`Client::connect`] and [`Client::endpoint_stats`]).
///
/// ```no_run
/// use rpckit_client::{Client, ClientConfig};
/// use rpckit_proto::demo::{Request, Response};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let keyring = rpckit_keyfile::load(&rpckit_keyfile::default_keyring_path())?;
/// let (id, key) = keyring.first().ok_or("empty keyring")?;
/// let client: Client<Request, Response> =
///     Client::connect("127.0.0.1:7878", id.clone(), key.clone(), ClientConfig::default()).await?;
/// let answer = client.call(Request::Uppercase("hello".into())).await?;
/// assert_eq!(answer, Response::Uppercase("HELLO".into()));
/// # Ok(()) }
/// ```
pub struct Client<Req, Resp> {
    /// What every clone shares.
    inner: Arc<Inner<Req, Resp>>,
}

/// The state a [`Client`]'s clones share.
struct Inner<Req, Resp> {
    /// The servers, and as whom to connect.
    balancer: Balancer<Req, Resp>,
    /// Settings.
    config: ClientConfig,
}

impl<Req, Resp> Clone for Client<Req, Resp> {
    fn clone(&self) -> Self {
        Client {
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Resp> std::fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.inner.balancer.list)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Client<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Connects to `addr` (`host:port`) and authenticates with `key_id`/`key`, checking that
    /// the server holds the key too.
    ///
    /// `addr` may also list several servers, `host:port,host:port,...`, and a name may
    /// resolve to several addresses: the client then has one endpoint per address and
    /// balances calls over them (see [`Client::endpoint_stats`]). It connects to every one
    /// and fails only if none can be connected to (with the first endpoint's error); the
    /// others are tried again later, with backoff.
    pub async fn connect(
        addr: impl Into<String>,
        key_id: KeyId,
        key: SecretKey,
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        let client = Client::lazy(addr, key_id, key, config);
        let inner = &client.inner;
        let set = inner.balancer.endpoints(&inner.config).await;
        if let [only] = &set[..] {
            let connection = connect::open(&only.target, &inner.config).await?;
            only.publish(Arc::new(connection));
            return Ok(client);
        }
        let opening: Vec<_> = set
            .iter()
            .map(|endpoint| {
                let (inner, endpoint) = (inner.clone(), endpoint.clone());
                async_std::task::spawn(async move {
                    let opened = connect::open(&endpoint.target, &inner.config).await;
                    match opened {
                        Ok(connection) => {
                            endpoint.connected(Instant::now());
                            endpoint.publish(Arc::new(connection));
                            Ok(())
                        }
                        Err(e) => {
                            endpoint.eject(&inner.config, Instant::now());
                            Err(e)
                        }
                    }
                })
            })
            .collect();
        let mut first_error = None;
        let mut any = false;
        for opened in opening {
            match opened.await {
                Ok(()) => any = true,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if !any => Err(e),
            _ => Ok(client),
        }
    }

    /// A client of `addr` that connects on its first call rather than now; a failure to
    /// connect is then that call's [`CallError::Connect`]. With
    /// [`ClientConfig::pipeline_first_call`], the call that opens a connection travels with
    /// the handshake, so it costs one round trip less. `addr` may list several servers, as
    /// for [`Client::connect`].
    ///
    /// ```no_run
    /// use rpckit_client::{Client, ClientConfig};
    /// use rpckit_proto::demo::{Request, Response};
    /// use rpckit_proto::{KeyId, SecretKey};
    ///
    /// # async fn demo(id: KeyId, key: SecretKey) -> Result<(), rpckit_client::CallError> {
    /// let mut config = ClientConfig::default();
    /// config.pipeline_first_call = true;
    /// let client: Client<Request, Response> = Client::lazy("127.0.0.1:7878", id, key, config);
    /// // Connects, and the call rides with the handshake's proof.
    /// let answer = client.call(Request::Uppercase("hello".into())).await?;
    /// assert_eq!(answer, Response::Uppercase("HELLO".into()));
    /// # Ok(()) }
    /// ```
    pub fn lazy(
        addr: impl Into<String>,
        key_id: KeyId,
        key: SecretKey,
        config: ClientConfig,
    ) -> Self {
        Client {
            inner: Arc::new(Inner {
                balancer: Balancer::new(addr.into(), key_id, key),
                config: config.bounded(),
            }),
        }
    }

    /// Calls with the configured timeout ([`ClientConfig::call_timeout`]).
    pub async fn call(&self, request: Req) -> Result<Resp, CallError> {
        self.call_with_timeout(request, self.inner.config.call_timeout)
            .await
    }

    /// Calls with `timeout` (`None`, or one too long to represent: wait for ever). The timeout
    /// is also the deadline the server enforces. Dropping the returned future cancels the call
    /// on the server. The connection's task does all the writing, so neither dropping the
    /// future nor holding it unpolled holds up the connection.
    pub async fn call_with_timeout(
        &self,
        request: Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, CallError> {
        // A timeout too long for an `Instant` (`Duration::MAX`, say) means no timeout.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let config = &self.inner.config;
        let mut request = request;
        let mut reconnects = 0u32;
        let mut first_try = true;
        // Moves to another endpoint of a call whose connection took no new calls.
        let mut moves = 0u32;
        loop {
            let set = self.inner.balancer.endpoints(config).await;
            let alone = set.len() == 1;
            let endpoint = match &set[..] {
                [only] => only.clone(),
                _ => Box::pin(self.inner.pick(&set, deadline, timeout)).await?,
            };
            let _in_flight = endpoint.begin();
            let routed = route(
                &endpoint,
                config,
                request,
                deadline,
                timeout,
                &mut reconnects,
                alone,
            )
            .await;
            let route = match routed {
                Ok(route) => route,
                Err(Detour::Fail(e)) => {
                    // A failure that cannot pass (authentication, not an rpckit server) keeps
                    // later calls away from this endpoint for a while.
                    if !alone && matches!(&e, CallError::Connect(c) if !c.is_transient()) {
                        endpoint.eject(config, Instant::now());
                    }
                    return Err(e);
                }
                Err(Detour::Elsewhere(back, e)) => {
                    debug!(addr = %endpoint.target.addr, error = %e, "endpoint ejected");
                    endpoint.eject(config, Instant::now());
                    request = back;
                    continue;
                }
            };
            endpoint.sent();
            // The usual case, a connection that was up already: the call has all of its
            // timeout left.
            let fresh = first_try && matches!(route, Route::Up(..));
            first_try = false;
            let (connection, outcome) = match route {
                Route::Up(connection, request) | Route::On(connection, request) => {
                    let this_try = this_try(deadline, timeout, fresh)?;
                    let outcome = connection.call(request, this_try).await;
                    (connection, outcome)
                }
                Route::Rode(connection, outcome) => (connection, outcome),
            };
            let back = match outcome {
                Ok(response) => return Ok(response),
                Err(Failure::Error(CallError::Timeout(_))) => {
                    return Err(CallError::Timeout(timeout.unwrap_or_default()))
                }
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::ShuttingDown(_)) if alone => {
                    return Err(CallError::Rpc(RpcError::ShuttingDown))
                }
                Err(Failure::ShuttingDown(back)) => {
                    debug!(addr = %endpoint.target.addr, "answered ShuttingDown; sending it elsewhere");
                    back
                }
                Err(Failure::NotSent(back)) => {
                    debug!("call not sent before the connection closed; sending it again");
                    back
                }
            };
            request = back;
            endpoint.forget(&connection);
            if !alone {
                // Dead, or draining: no new calls there until its backoff has passed.
                endpoint.eject(config, Instant::now());
                moves += 1;
                if moves > config.reconnect_attempts.saturating_add(set.len() as u32) {
                    return Err(gave_up(
                        moves,
                        ConnectError::Io {
                            addr: endpoint.target.addr.clone(),
                            source: std::io::ErrorKind::ConnectionAborted.into(),
                        },
                    ));
                }
            }
        }
    }

    /// Whether a usable connection is up right now (to any endpoint).
    pub fn is_connected(&self) -> bool {
        self.inner
            .balancer
            .current()
            .iter()
            .any(|e| e.usable().is_some())
    }

    /// What each endpoint has done so far, in the order of the address list (a name counts
    /// once for each address it resolved to).
    pub fn endpoint_stats(&self) -> Vec<EndpointStats> {
        let now = Instant::now();
        self.inner
            .balancer
            .current()
            .iter()
            .map(|e| e.stats(now, self.inner.config.slow_start))
            .collect()
    }

    /// Says goodbye and closes the connections, waiting (up to the write timeout) until each
    /// goodbye is written. Calls in flight that were written end with an error
    /// (`OutcomeUnknown`); those not written yet are sent again on a new connection, as is a
    /// later call.
    pub async fn close(&self) {
        for endpoint in self.inner.balancer.current().iter() {
            if let Some(connection) = endpoint.take() {
                connection.goodbye().await;
            }
        }
    }
}

impl<Req, Resp> Inner<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// The endpoint of `set` (two or more) for the next call; if every one is ejected, waits
    /// for the first to come back, within the call's deadline.
    async fn pick(
        &self,
        set: &[Arc<Endpoint<Req, Resp>>],
        deadline: Option<Instant>,
        timeout: Option<Duration>,
    ) -> Result<Arc<Endpoint<Req, Resp>>, CallError> {
        // Each wait ends an ejection; a bound keeps a clock gone wrong from spinning.
        for _ in 0..=set.len().saturating_mul(64) {
            match balance::pick(set, &self.config) {
                Ok(endpoint) => return Ok(endpoint),
                Err(back_at) => {
                    if deadline.is_some_and(|d| back_at >= d) {
                        return Err(CallError::Timeout(timeout.unwrap_or_default()));
                    }
                    Timer::at(back_at).await;
                }
            }
        }
        Err(CallError::Timeout(timeout.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_future_stays_small() {
        // Callers keep many call futures at once (on a stack, or one per task): connecting is
        // boxed so that its futures do not sit in every call's. Unboxed, a call's future was
        // 6.5 KB and a test holding a thousand of them overflowed its thread's stack.
        use rpckit_proto::demo::{Request, Response};
        let id = KeyId::new("size").unwrap();
        let key = SecretKey::new(vec![1; 32]).unwrap();
        let client: Client<Request, Response> =
            Client::lazy("127.0.0.1:1", id, key, ClientConfig::default());
        let call = client.call(Request::Ping);
        assert!(
            std::mem::size_of_val(&call) <= 2048,
            "{} bytes",
            std::mem::size_of_val(&call)
        );
    }

    #[test]
    fn client_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Client<rpckit_proto::demo::Request, rpckit_proto::demo::Response>>();
    }
}
