//! The `Client`: calls over one multiplexed connection, shared by any number of tasks, with
//! timeouts, cancellation, and reconnection after the connection is lost.
//!
//! Retry rule: a call is sent again on a new connection only if it provably never ran: it was
//! still queued in this process when the connection died, or it was unanswered when the server
//! said `Goodbye` (a server answers every call it read before saying goodbye). A call that was
//! written when the connection died otherwise fails with [`CallError::OutcomeUnknown`],
//! because the server may have run it; a call the server answered `ShuttingDown` was not run
//! and may be retried by the caller.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpckit_proto::timer::{self, Sleep};
use rpckit_proto::{KeyId, SecretKey};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info};

use crate::config::ClientConfig;
use crate::connection::{Connection, Deadline, Failure, OpenFailure};
use crate::error::{CallError, ConnectError};

/// A client of one server, for the service's `Req`/`Resp` enums.
///
/// Cheap to share: wrap it in an `Arc` and call from many tasks at once; calls are
/// multiplexed over one connection by id and answered in any order.
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
pub struct Client<Req, Resp: Send + 'static> {
    /// Where to connect.
    addr: String,
    /// Our key id.
    key_id: KeyId,
    /// Our key.
    key: SecretKey,
    /// Settings.
    config: ClientConfig,
    /// The connection calls go to, if one is up.
    current: Mutex<Option<Arc<Connection<Resp>>>>,
    /// Held while (re)connecting, so concurrent callers make one connection, not many.
    connecting: async_lock::Mutex<()>,
    /// The request type this client sends.
    _request: PhantomData<fn(Req)>,
}

impl<Req, Resp: Send + 'static> std::fmt::Debug for Client<Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .field("key_id", &self.key_id)
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
        let connection =
            Connection::open(&client.addr, &client.key_id, &client.key, &client.config).await?;
        *client.lock_current() = Some(Arc::new(connection));
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
            addr: addr.into(),
            key_id,
            key,
            config: config.bounded(),
            current: Mutex::new(None),
            connecting: async_lock::Mutex::new(()),
            _request: PhantomData,
        }
    }

    /// Calls with the configured timeout ([`ClientConfig::call_timeout`]).
    pub async fn call(&self, request: Req) -> Result<Resp, CallError> {
        self.call_with_timeout(request, self.config.call_timeout)
            .await
    }

    /// Calls with `timeout` (`None`, or one too long to represent: wait for ever). The timeout
    /// is also the deadline the server enforces. Dropping the returned future cancels the call
    /// on the server. The future never holds a write half done: what the socket does not take
    /// at once is written by a task of its own, so neither dropping the future nor holding it
    /// unpolled holds up the connection.
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
                    self.forget(&connection);
                    request = back;
                }
            }
        }
    }

    /// Whether a usable connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.lock_current().as_ref().is_some_and(|c| c.usable())
    }

    /// Says goodbye and closes the connection, waiting (up to the write timeout) until the
    /// goodbye is written. Calls in flight that were written end with an error
    /// (`OutcomeUnknown`); those not written yet are sent again on a new connection, as is a
    /// later call.
    pub async fn close(&self) {
        let connection = self.lock_current().take();
        if let Some(connection) = connection {
            connection.goodbye().await;
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<Arc<Connection<Resp>>>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a new connection the one calls go to; `pipelined`: its first call went out with
    /// the handshake.
    fn publish(&self, connection: Connection<Resp>, pipelined: bool) -> Arc<Connection<Resp>> {
        info!(addr = %self.addr, first_call_in_handshake = pipelined, "connected");
        let connection = Arc::new(connection);
        *self.lock_current() = Some(connection.clone());
        connection
    }

    fn forget(&self, connection: &Arc<Connection<Resp>>) {
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
        let connecting = timer::until(deadline, self.connecting.lock())
            .await
            .ok_or_else(timed_out)?;
        if let Some(c) = self.lock_current().as_ref().filter(|c| c.usable()) {
            return Ok(Route::On(c.clone(), request));
        }
        let mut request = request;
        loop {
            if *reconnects > self.config.reconnect_attempts {
                return Err(CallError::Connect(ConnectError::Io {
                    addr: self.addr.clone(),
                    source: std::io::Error::other(format!(
                        "gave up after {} reconnect attempts",
                        self.config.reconnect_attempts
                    )),
                }));
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
                Sleep::after(delay).await;
            }
            *reconnects += 1;
            let failed = if self.config.pipeline_first_call {
                let this_try = this_try(deadline, timeout, false)?;
                let (addr, id, key) = (&self.addr, &self.key_id, &self.key);
                // Boxed, here and below: connecting is rare, and its future would otherwise
                // sit inside every call's future (a test's thousand calls overflowed a stack).
                let open = Box::pin(Connection::open_with_call(
                    addr,
                    id,
                    key,
                    &self.config,
                    request,
                    this_try,
                ));
                match timer::until(deadline, open).await.ok_or_else(timed_out)? {
                    Ok((connection, first)) => {
                        let connection = self.publish(connection, true);
                        drop(connecting);
                        let outcome = connection.first_answer(first).await;
                        return Ok(Route::Rode(connection, outcome));
                    }
                    Err(OpenFailure::NotSent(e, back)) => {
                        request = back;
                        e
                    }
                    Err(OpenFailure::Failed(e)) => return Err(CallError::Connect(e)),
                    Err(OpenFailure::OutcomeUnknown(e)) => {
                        return Err(CallError::OutcomeUnknown(format!(
                            "the call left with the handshake, which then failed: {e}"
                        )))
                    }
                }
            } else {
                let open = Box::pin(Connection::open(
                    &self.addr,
                    &self.key_id,
                    &self.key,
                    &self.config,
                ));
                match timer::until(deadline, open).await.ok_or_else(timed_out)? {
                    Ok(connection) => {
                        let connection = self.publish(connection, false);
                        return Ok(Route::On(connection, request));
                    }
                    Err(e) => e,
                }
            };
            if !failed.is_transient() || *reconnects > self.config.reconnect_attempts {
                return Err(CallError::Connect(failed));
            }
            debug!(addr = %self.addr, error = %failed, attempt = *reconnects, "connect failed");
        }
    }
}

/// How a call reaches the server.
enum Route<Req, Resp: Send + 'static> {
    /// To be sent on this connection, which was up already (no wait).
    Up(Arc<Connection<Resp>>, Req),
    /// To be sent on this connection, found or made after waiting.
    On(Arc<Connection<Resp>>, Req),
    /// Sent with the handshake of this new connection, and how it ended.
    Rode(Arc<Connection<Resp>>, Result<Resp, Failure<Req>>),
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

/// Delay before reconnect attempt `attempt` (1-based): a random duration up to
/// `initial * 2^(attempt-1)`, capped at `max` ("full jitter").
fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    let mut random = [0u8; 8];
    rpckit_proto::handshake::os_random(&mut random);
    let fraction = (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64;
    exp.mul_f64(fraction).max(Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_grows() {
        let initial = Duration::from_millis(50);
        let max = Duration::from_secs(5);
        for attempt in 1..40 {
            let d = backoff(attempt, initial, max);
            assert!(d <= max, "attempt {attempt}: {d:?}");
            let cap = initial.saturating_mul(1 << (attempt - 1).min(20)).min(max);
            assert!(d <= cap.max(Duration::from_millis(1)));
        }
    }

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
