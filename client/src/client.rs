//! The `Client`: calls over one multiplexed connection, shared by any number of tasks, with
//! timeouts, cancellation, and reconnection after the connection is lost.
//!
//! A call reads top to bottom: [`Client::call`] → `route` (the connection that is up, or a
//! new one, [`crate::connect`]) → [`Connection::call`] (hands the call to the connection's
//! task and waits for its answer) → the task (`connection/task.rs`) writes it, reads the
//! answer and hands it back.
//!
//! Retry rule: a call is sent again on a new connection only if it provably never ran: it was
//! not yet written when the connection died, or it was unanswered when the server said
//! `Goodbye` (a server answers every call it read before saying goodbye). A call that was
//! written when the connection died otherwise fails with [`CallError::OutcomeUnknown`],
//! because the server may have run it; a call the server answered `ShuttingDown` was not run
//! and may be retried by the caller.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_io::Timer;
use rpckit_proto::{KeyId, SecretKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info};

use crate::config::ClientConfig;
use crate::connect::{self, OpenFailure, Target};
use crate::connection::{Connection, Failure};
use crate::deadline::{self, Deadline};
use crate::error::{CallError, ConnectError, ConnectionLost};
use crate::retry::backoff;

/// A client of one server, for the service's `Req`/`Resp` enums.
///
/// Cheap to clone: clones share the connection, and any number of tasks may call at once;
/// calls are multiplexed over one connection by id and answered in any order.
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
    /// Where to connect, and as whom.
    target: Target,
    /// Settings.
    config: ClientConfig,
    /// The connection calls go to, if one is up.
    current: Mutex<Option<Arc<Connection<Req, Resp>>>>,
    /// Held while (re)connecting, so concurrent callers make one connection, not many.
    connecting: async_lock::Mutex<()>,
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
            .field("addr", &self.inner.target.addr)
            .field("key_id", &self.inner.target.key_id)
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
    pub async fn connect(
        addr: impl Into<String>,
        key_id: KeyId,
        key: SecretKey,
        config: ClientConfig,
    ) -> Result<Self, ConnectError> {
        let client = Client::lazy(addr, key_id, key, config);
        let connection = connect::open(&client.inner.target, &client.inner.config).await?;
        *client.inner.lock_current() = Some(Arc::new(connection));
        Ok(client)
    }

    /// A client of `addr` that connects on its first call rather than now; a failure to
    /// connect is then that call's [`CallError::Connect`]. With
    /// [`ClientConfig::pipeline_first_call`], the call that opens a connection travels with
    /// the handshake, so it costs one round trip less.
    ///
    /// ```no_run
    /// use rpckit_client::{Client, ClientConfig};
    /// use rpckit_proto::demo::{Request, Response};
    /// use rpckit_proto::{KeyId, SecretKey};
    ///
    /// # async fn demo(id: KeyId, key: SecretKey) -> Result<(), rpckit_client::CallError> {
    /// let config = ClientConfig {
    ///     pipeline_first_call: true,
    ///     ..ClientConfig::default()
    /// };
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
                target: Target {
                    addr: addr.into(),
                    key_id,
                    key,
                },
                config: config.bounded(),
                current: Mutex::new(None),
                connecting: async_lock::Mutex::new(()),
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
        let mut request = request;
        let mut reconnects = 0u32;
        let mut first_try = true;
        loop {
            let route = self
                .inner
                .route(request, deadline, timeout, &mut reconnects)
                .await?;
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
            match outcome {
                Ok(response) => return Ok(response),
                Err(Failure::Error(CallError::Timeout(_))) => {
                    return Err(CallError::Timeout(timeout.unwrap_or_default()))
                }
                Err(Failure::Error(e)) => return Err(e),
                Err(Failure::NotSent(back)) => {
                    debug!("call not sent before the connection closed; sending it again");
                    self.inner.forget(&connection);
                    request = back;
                }
            }
        }
    }

    /// Whether a usable connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner
            .lock_current()
            .as_ref()
            .is_some_and(|c| c.usable())
    }

    /// Says goodbye and closes the connection, waiting (up to the write timeout) until the
    /// goodbye is written. Calls in flight that were written end with an error
    /// (`OutcomeUnknown`); those not written yet are sent again on a new connection, as is a
    /// later call.
    pub async fn close(&self) {
        let connection = self.inner.lock_current().take();
        if let Some(connection) = connection {
            connection.goodbye().await;
        }
    }
}

impl<Req, Resp> Inner<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Whether the call that opens a new connection rides with the handshake's proof: when
    /// asked to, or under an encrypting suite towards a server that has proven the key to
    /// this process before ([`ClientConfig::pipeline_first_call`]).
    fn pipelines_first_call(&self) -> bool {
        let config = &self.config;
        config.pipeline_first_call
            || (config.suite.is_encrypted()
                && crate::proven::has_proven(&self.target, config.suite))
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection<Req, Resp>>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a new connection the one calls go to; `pipelined`: its first call went out with
    /// the handshake.
    fn publish(
        &self,
        connection: Connection<Req, Resp>,
        pipelined: bool,
    ) -> Arc<Connection<Req, Resp>> {
        info!(addr = %self.target.addr, first_call_in_handshake = pipelined, "connected");
        let connection = Arc::new(connection);
        *self.lock_current() = Some(connection.clone());
        connection
    }

    fn forget(&self, connection: &Arc<Connection<Req, Resp>>) {
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
            current.take();
        }
    }

    /// Where `request` goes: the usable connection, or a new one (connecting with exponential
    /// backoff and jitter), which with [`ClientConfig::pipeline_first_call`] carries the call
    /// in its handshake.
    async fn route(
        &self,
        request: Req,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        reconnects: &mut u32,
    ) -> Result<Route<Req, Resp>, CallError> {
        if let Some(c) = self.lock_current().as_ref().filter(|c| c.usable()) {
            return Ok(Route::Up(c.clone(), request));
        }
        // Connecting counts against the call's timeout too.
        let timed_out = || CallError::Timeout(timeout.unwrap_or_default());
        // Another caller may be connecting (and backing off) under a deadline later than
        // ours: wait for it no longer than our own.
        let connecting = deadline::until(deadline, self.connecting.lock())
            .await
            .ok_or_else(timed_out)?;
        if let Some(c) = self.lock_current().as_ref().filter(|c| c.usable()) {
            return Ok(Route::On(c.clone(), request));
        }
        let mut request = request;
        let mut last: Option<ConnectError> = None;
        loop {
            let attempts = self.config.reconnect_attempts;
            if *reconnects > attempts {
                // Each connection closed before the call could be sent on it.
                let last = last.unwrap_or_else(|| ConnectError::Io {
                    addr: self.target.addr.clone(),
                    source: std::io::ErrorKind::ConnectionAborted.into(),
                });
                return Err(gave_up(*reconnects, last));
            }
            if *reconnects > 0 {
                let delay = backoff(
                    *reconnects,
                    self.config.reconnect_initial_backoff,
                    self.config.reconnect_max_backoff,
                );
                if let Some(d) = deadline {
                    if Instant::now().checked_add(delay).is_none_or(|t| t >= d) {
                        return Err(CallError::Timeout(
                            d.saturating_duration_since(Instant::now()),
                        ));
                    }
                }
                Timer::after(delay).await;
            }
            *reconnects += 1;
            let failed = if self.pipelines_first_call() {
                let this_try = this_try(deadline, timeout, false)?;
                // Boxed, here and below: connecting is rare, and its future would otherwise
                // sit inside every call's future (a test's thousand calls overflowed a stack).
                let open = Box::pin(connect::open_with_call(
                    &self.target,
                    &self.config,
                    request,
                    this_try,
                ));
                match deadline::until(deadline, open)
                    .await
                    .ok_or_else(timed_out)?
                {
                    Ok((connection, first)) => {
                        let connection = self.publish(connection, true);
                        drop(connecting);
                        let outcome = match first {
                            Ok(first) => connection.wait(first.id, first.answer).await,
                            Err(e) => Err(Failure::Error(e)),
                        };
                        return Ok(Route::Rode(connection, outcome));
                    }
                    Err(OpenFailure::NotSent(e, back)) => {
                        request = back;
                        e
                    }
                    Err(OpenFailure::OutcomeUnknown(e)) => {
                        return Err(CallError::OutcomeUnknown(ConnectionLost::Handshake(
                            Arc::new(e),
                        )))
                    }
                }
            } else {
                let open = Box::pin(connect::open(&self.target, &self.config));
                match deadline::until(deadline, open)
                    .await
                    .ok_or_else(timed_out)?
                {
                    Ok(connection) => {
                        let connection = self.publish(connection, false);
                        return Ok(Route::On(connection, request));
                    }
                    Err(e) => e,
                }
            };
            if !failed.is_transient() {
                return Err(CallError::Connect(failed));
            }
            if *reconnects > attempts {
                return Err(gave_up(*reconnects, failed));
            }
            debug!(addr = %self.target.addr, error = %failed, attempt = *reconnects, "connect failed");
            last = Some(failed);
        }
    }
}

/// The error of a call that made `attempts` connection attempts, the last failing with
/// `last`: that failure itself if there was only the one attempt.
fn gave_up(attempts: u32, last: ConnectError) -> CallError {
    CallError::Connect(if attempts <= 1 {
        last
    } else {
        ConnectError::GaveUp {
            attempts,
            last: Box::new(last),
        }
    })
}

/// How a call reaches the server.
enum Route<Req, Resp> {
    /// To be sent on this connection, which was up already (no wait).
    Up(Arc<Connection<Req, Resp>>, Req),
    /// To be sent on this connection, found or made after waiting.
    On(Arc<Connection<Req, Resp>>, Req),
    /// Sent with the handshake of this new connection, and how it ended.
    Rode(Arc<Connection<Req, Resp>>, Result<Resp, Failure<Req>>),
}

/// The deadline of one try of a call due by `deadline` (made from `timeout`), or `Timeout` if
/// it has passed. `fresh`: the try starts as the deadline was made, with all of the timeout
/// left (a clock read would only say so).
fn this_try(
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    fresh: bool,
) -> Result<Option<Deadline>, CallError> {
    let (Some(at), Some(timeout)) = (deadline, timeout) else {
        return Ok(None);
    };
    let left = if fresh {
        Some(timeout)
    } else {
        at.checked_duration_since(Instant::now())
    };
    match left {
        Some(left) if !left.is_zero() => Ok(Some(Deadline { at, left })),
        _ => Err(CallError::Timeout(timeout)),
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
