//! Where a call goes on one endpoint: the connection that is up there, or a new one
//! ([`crate::connect`]), which with [`ClientConfig::pipeline_first_call`] carries the call in
//! its handshake.
//!
//! A client of one endpoint tries again there, with exponential backoff and jitter, up to
//! [`ClientConfig::reconnect_attempts`] times. A client of several makes one attempt per
//! endpoint and hands a call whose connection could not be made back to the balancer
//! ([`Detour::Elsewhere`]), which ejects the endpoint and picks another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_io::Timer;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::{debug, info};

use crate::balance::Endpoint;
use crate::config::ClientConfig;
use crate::connect::{self, OpenFailure, Target};
use crate::connection::{Connection, Failure};
use crate::deadline::{self, Deadline};
use crate::error::{CallError, ConnectError, ConnectionLost};
use crate::retry::backoff;

/// How a call reaches the server.
pub(crate) enum Route<Req, Resp> {
    /// To be sent on this connection, which was up already (no wait).
    Up(Arc<Connection<Req, Resp>>, Req),
    /// To be sent on this connection, found or made after waiting.
    On(Arc<Connection<Req, Resp>>, Req),
    /// Sent with the handshake of this new connection, and how it ended.
    Rode(Arc<Connection<Req, Resp>>, Result<Resp, Failure<Req>>),
}

/// Why a call found no route on an endpoint.
pub(crate) enum Detour<Req> {
    /// The call ends with this error.
    Fail(CallError),
    /// No connection could be made here, for a reason that may pass; the call never left
    /// (here is its request back) and may go to another endpoint.
    Elsewhere(Req, ConnectError),
}

/// Whether the call that opens a new connection to `target` rides with the handshake's proof:
/// when asked to, or under an encrypting suite towards a server that has proven the key to
/// this process before ([`ClientConfig::pipeline_first_call`]).
fn pipelines_first_call(target: &Target, config: &ClientConfig) -> bool {
    config.pipeline_first_call
        || (config.suite.is_encrypted() && crate::proven::has_proven(target, config.suite))
}

/// Makes a new connection `endpoint`'s current one; `pipelined`: its first call went out with
/// the handshake.
fn publish<Req, Resp>(
    endpoint: &Endpoint<Req, Resp>,
    connection: Connection<Req, Resp>,
    pipelined: bool,
) -> Arc<Connection<Req, Resp>> {
    info!(addr = %endpoint.target.addr, first_call_in_handshake = pipelined, "connected");
    endpoint.connected(Instant::now());
    let connection = Arc::new(connection);
    endpoint.publish(connection.clone());
    connection
}

/// Where `request` goes on `endpoint`: the usable connection, or a new one. `alone`: the
/// endpoint is the client's only one, so connecting is retried here with backoff; otherwise
/// one attempt is made and a failure that may pass is a [`Detour::Elsewhere`].
pub(crate) async fn route<Req, Resp>(
    endpoint: &Endpoint<Req, Resp>,
    config: &ClientConfig,
    request: Req,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    reconnects: &mut u32,
    alone: bool,
) -> Result<Route<Req, Resp>, Detour<Req>>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    if let Some(c) = endpoint.usable() {
        return Ok(Route::Up(c, request));
    }
    // Connecting counts against the call's timeout too.
    let timed_out = || Detour::Fail(CallError::Timeout(timeout.unwrap_or_default()));
    // Another caller may be connecting (and backing off) under a deadline later than
    // ours: wait for it no longer than our own.
    let connecting = deadline::until(deadline, endpoint.connecting.lock())
        .await
        .ok_or_else(timed_out)?;
    if let Some(c) = endpoint.usable() {
        return Ok(Route::On(c, request));
    }
    let target = &endpoint.target;
    let mut request = request;
    let mut last: Option<ConnectError> = None;
    loop {
        let attempts = config.reconnect_attempts;
        if *reconnects > attempts {
            // Each connection closed before the call could be sent on it.
            let last = last.unwrap_or_else(|| ConnectError::Io {
                addr: target.addr.clone(),
                source: std::io::ErrorKind::ConnectionAborted.into(),
            });
            return Err(Detour::Fail(gave_up(*reconnects, last)));
        }
        if *reconnects > 0 && alone {
            let delay = backoff(
                *reconnects,
                config.reconnect_initial_backoff,
                config.reconnect_max_backoff,
            );
            if let Some(d) = deadline {
                if Instant::now().checked_add(delay).is_none_or(|t| t >= d) {
                    return Err(Detour::Fail(CallError::Timeout(
                        d.saturating_duration_since(Instant::now()),
                    )));
                }
            }
            Timer::after(delay).await;
        }
        *reconnects += 1;
        let failed = if pipelines_first_call(target, config) {
            let this_try = this_try(deadline, timeout, false).map_err(Detour::Fail)?;
            // Boxed, here and below: connecting is rare, and its future would otherwise
            // sit inside every call's future (a test's thousand calls overflowed a stack).
            let open = Box::pin(connect::open_with_call(target, config, request, this_try));
            match deadline::until(deadline, open)
                .await
                .ok_or_else(timed_out)?
            {
                Ok((connection, first)) => {
                    let connection = publish(endpoint, connection, true);
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
                    return Err(Detour::Fail(CallError::OutcomeUnknown(
                        ConnectionLost::Handshake(Arc::new(e)),
                    )))
                }
            }
        } else {
            let open = Box::pin(connect::open(target, config));
            match deadline::until(deadline, open)
                .await
                .ok_or_else(timed_out)?
            {
                Ok(connection) => {
                    let connection = publish(endpoint, connection, false);
                    return Ok(Route::On(connection, request));
                }
                Err(e) => e,
            }
        };
        if !failed.is_transient() {
            return Err(Detour::Fail(CallError::Connect(failed)));
        }
        debug!(addr = %target.addr, error = %failed, attempt = *reconnects, "connect failed");
        if !alone {
            return Err(Detour::Elsewhere(request, failed));
        }
        if *reconnects > attempts {
            return Err(Detour::Fail(gave_up(*reconnects, failed)));
        }
        last = Some(failed);
    }
}

/// The error of a call that made `attempts` connection attempts, the last failing with
/// `last`: that failure itself if there was only the one attempt.
pub(crate) fn gave_up(attempts: u32, last: ConnectError) -> CallError {
    CallError::Connect(if attempts <= 1 {
        last
    } else {
        ConnectError::GaveUp {
            attempts,
            last: Box::new(last),
        }
    })
}

/// The deadline of one try of a call due by `deadline` (made from `timeout`), or `Timeout` if
/// it has passed. `fresh`: the try starts as the deadline was made, with all of the timeout
/// left (a clock read would only say so).
pub(crate) fn this_try(
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
