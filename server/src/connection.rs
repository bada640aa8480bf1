//! One client connection, from handshake to close: the data path reads top to bottom —
//! handshake → read frame → check tag → decode → dispatch to a task per call → encode →
//! write frame — plus the connection's own timers (idle, keepalive, drain).
//!
//! The read loop owns the table of calls in flight; call tasks report back when they finish,
//! and every message to the client goes through one writer task that batches what is ready
//! into as few writes as possible.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender, TrySendError};
use async_std::net::TcpStream;
use futures_lite::future;
use futures_lite::FutureExt;
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_client;
use rpckit_proto::{
    ClientMessage, HandshakeError, KeyId, RpcError, ServerMessage, SessionError, SessionReader,
    SessionWriter,
};
use tracing::{debug, info, warn};

use crate::server::Shared;
use crate::service::{CallContext, Service};
use crate::shutdown::ShutdownSignal;

/// The writer flushes once this many bytes are queued, even if more messages are ready.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// Runs one connection to its end. Never panics on peer input; logs why it closed.
pub(crate) async fn serve<S: Service>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Shared<S>,
    shutdown: ShutdownSignal,
) {
    // The accept loop counted this connection as unauthenticated before spawning us.
    let unauthenticated = AdoptedGauge(&shared.stats.unauthenticated);
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, error = %e, "cannot set TCP_NODELAY");
    }
    let config = HandshakeConfig {
        timeout: shared.config.handshake_timeout,
        max_frame: shared.config.max_frame,
    };
    let session = handshake::accept(stream.clone(), stream.clone(), &shared.keyring, &config).await;
    drop(unauthenticated);
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            handshake_failed(shared, peer, &e);
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    shared.penalties.record_success(peer.ip());
    let key_id = Arc::new(session.key_id.clone());
    info!(%peer, key_id = %key_id, "authenticated");
    let (mut reader, writer) = session.split();
    reader.set_budget(shared.buffer_budget.clone());

    let (out_tx, out_rx) = async_channel::bounded(shared.config.max_queued.max(1));
    let writer_task = {
        let stream = stream.clone();
        let write_timeout = shared.config.write_timeout;
        async_std::task::spawn(async move {
            let result = write_loop(writer, out_rx, write_timeout).await;
            if let Err(reason) = &result {
                // Unblock the read loop, which may be waiting on a peer that reads nothing.
                let _ = stream.shutdown(Shutdown::Both);
                debug!(%peer, %reason, "writer stopped");
            }
            result
        })
    };

    let (done_tx, done_rx) = async_channel::unbounded();
    let mut conn = Connection {
        shared,
        peer,
        key_id: key_id.clone(),
        out: out_tx,
        done_tx,
        done_rx,
        calls: HashMap::new(),
        next_token: 0,
    };
    let reason = conn.read_loop(reader, shutdown).await;
    conn.cancel_all();
    drop(conn);
    // The writer ends after the last queued message (or at its write timeout).
    let writer_result = writer_task.await;
    let _ = stream.shutdown(Shutdown::Both);
    match (reason, writer_result) {
        (Close::Clean(why), Ok(())) => info!(%peer, key_id = %key_id, "closed: {why}"),
        (Close::Clean(why), Err(w)) => warn!(%peer, key_id = %key_id, "closed: {why}; writer: {w}"),
        (Close::Fault(why), _) => warn!(%peer, key_id = %key_id, "closed: {why}"),
    }
}

fn handshake_failed<S>(shared: &Shared<S>, peer: SocketAddr, e: &HandshakeError) {
    shared
        .stats
        .handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    if e.is_auth_failure() {
        match shared.penalties.record_failure(peer.ip(), Instant::now()) {
            Some(_) => {
                warn!(%peer, reason = %e, penalty_secs = shared.config.auth_penalty.as_secs(), "handshake failed; address penalised")
            }
            None => warn!(%peer, reason = %e, "handshake failed"),
        }
    } else {
        warn!(%peer, reason = %e, "handshake failed");
    }
}

/// Decrements a gauge that someone else incremented, when dropped.
struct AdoptedGauge<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for AdoptedGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the read loop ended.
enum Close {
    /// An orderly end: goodbye, drain, idle timeout, peer closed at a frame boundary.
    Clean(String),
    /// A fault: bad frame, bad tag, dead peer, queue overflow.
    Fault(String),
}

/// A call in flight, as the read loop tracks it.
struct InFlight {
    /// Distinguishes this call from an earlier call that used the same id.
    token: u64,
    /// Dropping this cancels the call's task.
    _cancel: Sender<()>,
    /// Keeps the server-wide in-flight gauge up while the call runs.
    _gauge: GaugeHandle,
}

/// An owned in-flight gauge (the server stats outlive every connection).
struct GaugeHandle(Arc<crate::stats::ServerStats>);

impl GaugeHandle {
    fn new(stats: &Arc<crate::stats::ServerStats>) -> Self {
        stats.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        GaugeHandle(stats.clone())
    }
}

impl Drop for GaugeHandle {
    fn drop(&mut self) {
        self.0.calls_in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.calls_total.fetch_add(1, Ordering::Relaxed);
    }
}

/// Events the read loop waits for.
enum Event<'a> {
    /// A frame (verified payload), end of stream, or a read error.
    Frame(Result<Option<&'a [u8]>, SessionError>),
    /// A call task finished: (id, token).
    Done(u64, u64),
    /// The server is shutting down.
    Shutdown,
    /// A timer of the loop is due.
    Timer,
}

struct Connection<'s, S: Service> {
    shared: &'s Shared<S>,
    peer: SocketAddr,
    key_id: Arc<KeyId>,
    /// Messages for the writer task.
    out: Sender<ServerMessage<S::Response>>,
    /// Call tasks report (id, token) here when they end.
    done_tx: Sender<(u64, u64)>,
    /// Where the read loop hears of them.
    done_rx: Receiver<(u64, u64)>,
    /// Calls in flight by id.
    calls: HashMap<u64, InFlight>,
    /// Next call token.
    next_token: u64,
}

impl<S: Service> Connection<'_, S> {
    async fn read_loop(
        &mut self,
        mut reader: SessionReader<TcpStream>,
        shutdown: ShutdownSignal,
    ) -> Close {
        let config = &self.shared.config;
        let mut last_received = Instant::now();
        let mut last_call = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut ping_nonce = 0u64;
        // Set when the server drains or the peer half-closed: no new calls, finish by then.
        let mut drain_until: Option<Instant> = None;
        let mut reading = true;

        loop {
            // Take finished calls off the table first: a peer that keeps the socket busy must
            // not starve them (the select below prefers frames).
            while let Ok((id, token)) = self.done_rx.try_recv() {
                self.finished(id, token);
            }
            if drain_until.is_some() && self.calls.is_empty() {
                let _ = self.send(ServerMessage::Goodbye);
                return Close::Clean(if reading {
                    "drained for shutdown".into()
                } else {
                    "peer closed its side; calls finished".into()
                });
            }
            let wake = match drain_until {
                Some(deadline) => deadline,
                None => {
                    let keepalive = match ping_sent {
                        Some(sent) => sent + config.keepalive_timeout,
                        None => last_received + config.keepalive_interval,
                    };
                    if self.calls.is_empty() {
                        keepalive.min(last_call + config.idle_timeout)
                    } else {
                        keepalive
                    }
                }
            };
            // Checked before waiting, so a peer that keeps frames coming cannot starve them.
            let due = if drain_until.is_none() && shutdown.fired() {
                Some(Event::Shutdown)
            } else if Instant::now() >= wake {
                Some(Event::Timer)
            } else {
                None
            };
            let event = match due {
                Some(event) => event,
                None => {
                    let frame = async {
                        if reading {
                            Event::Frame(reader.recv().await)
                        } else {
                            future::pending().await
                        }
                    };
                    let done = async {
                        match self.done_rx.recv().await {
                            Ok((id, token)) => Event::Done(id, token),
                            Err(_) => future::pending().await,
                        }
                    };
                    let stop = async {
                        if drain_until.is_none() {
                            shutdown.wait().await;
                            Event::Shutdown
                        } else {
                            future::pending().await
                        }
                    };
                    let timer = async {
                        async_io::Timer::at(wake).await;
                        Event::Timer
                    };
                    frame.or(done).or(stop).or(timer).await
                }
            };

            match event {
                Event::Frame(Ok(Some(payload))) => {
                    last_received = Instant::now();
                    ping_sent = None;
                    let message = match decode_client::<S::Request>(payload) {
                        Ok(message) => message,
                        Err(e) => return Close::Fault(format!("undecodable envelope: {e}")),
                    };
                    let sent = match message {
                        ClientMessage::Call {
                            id,
                            deadline,
                            request,
                        } => {
                            last_call = last_received;
                            self.on_call(id, deadline, request, drain_until.is_some())
                        }
                        ClientMessage::Cancel { id } => {
                            if self.calls.remove(&id).is_some() {
                                debug!(peer = %self.peer, id, "call cancelled by client");
                            }
                            Ok(())
                        }
                        ClientMessage::Ping { nonce } => self.send(ServerMessage::Pong { nonce }),
                        ClientMessage::Pong { .. } => Ok(()),
                        ClientMessage::Goodbye => {
                            return Close::Clean("client said goodbye".into())
                        }
                    };
                    if let Err(close) = sent {
                        return close;
                    }
                }
                Event::Frame(Ok(None)) => {
                    if self.calls.is_empty() {
                        return Close::Clean("peer closed the connection".into());
                    }
                    // Half-closed: finish the calls in flight, then close.
                    reading = false;
                    drain_until.get_or_insert(Instant::now() + config.grace_period);
                }
                Event::Frame(Err(e)) => return Close::Fault(read_fault(&e)),
                Event::Done(id, token) => self.finished(id, token),
                Event::Shutdown => {
                    drain_until = Some(Instant::now() + config.grace_period);
                    if let Err(close) = self.send(ServerMessage::GoingAway {
                        grace: config.grace_period,
                    }) {
                        return close;
                    }
                }
                Event::Timer => {
                    let now = Instant::now();
                    if let Some(deadline) = drain_until {
                        if now >= deadline {
                            let left = self.calls.len();
                            for id in std::mem::take(&mut self.calls).into_keys() {
                                let _ = self.send(ServerMessage::Reply {
                                    id,
                                    result: Err(RpcError::ShuttingDown),
                                });
                            }
                            let _ = self.send(ServerMessage::Goodbye);
                            return Close::Clean(format!(
                                "grace period over; {left} calls answered ShuttingDown"
                            ));
                        }
                        continue;
                    }
                    if let Some(sent) = ping_sent {
                        if now >= sent + config.keepalive_timeout {
                            return Close::Fault(format!(
                                "peer unresponsive: no answer to keepalive within {:?}",
                                config.keepalive_timeout
                            ));
                        }
                    } else if now >= last_received + config.keepalive_interval {
                        ping_nonce += 1;
                        ping_sent = Some(now);
                        if let Err(close) = self.send(ServerMessage::Ping { nonce: ping_nonce }) {
                            return close;
                        }
                    }
                    if self.calls.is_empty() && now >= last_call + config.idle_timeout {
                        let _ = self.send(ServerMessage::Goodbye);
                        return Close::Clean(format!("idle for {:?}", config.idle_timeout));
                    }
                }
            }
        }
    }

    /// Admits, refuses or answers a call at once.
    fn on_call(
        &mut self,
        id: u64,
        deadline: Option<Duration>,
        request: Result<S::Request, rpckit_proto::DecodeError>,
        draining: bool,
    ) -> Result<(), Close> {
        let refusal = if draining {
            Some(RpcError::ShuttingDown)
        } else if self.calls.contains_key(&id) {
            Some(RpcError::Protocol(format!(
                "call id {id} is already in flight"
            )))
        } else if self.calls.len() >= self.shared.config.max_in_flight {
            Some(RpcError::Overloaded)
        } else {
            None
        };
        let request = match (refusal, request) {
            (Some(error), _) => {
                return self.send(ServerMessage::Reply {
                    id,
                    result: Err(error),
                })
            }
            (None, Err(e)) => {
                debug!(peer = %self.peer, id, error = %e, "undecodable request");
                return self.send(ServerMessage::Reply {
                    id,
                    result: Err(RpcError::UnknownMethod(e.to_string())),
                });
            }
            (None, Ok(request)) => request,
        };
        let ctx = CallContext {
            id,
            peer: self.peer,
            key_id: self.key_id.clone(),
            deadline: deadline.map(|d| Instant::now() + d),
        };
        let token = self.next_token;
        self.next_token += 1;
        let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
        self.calls.insert(
            id,
            InFlight {
                token,
                _cancel: cancel_tx,
                _gauge: GaugeHandle::new(&self.shared.stats),
            },
        );
        let service = self.shared.service.clone();
        let out = self.out.clone();
        let done = self.done_tx.clone();
        async_std::task::spawn(async move {
            let work = run_call(service, request, ctx);
            let cancelled = async {
                // Nothing is sent: this returns when the read loop drops the sender.
                let _ = cancel_rx.recv().await;
                None
            };
            if let Some(result) = async { Some(work.await) }.or(cancelled).await {
                let _ = out.send(ServerMessage::Reply { id, result }).await;
            }
            let _ = done.try_send((id, token));
        });
        Ok(())
    }

    /// Queues a message for the writer without waiting. A full queue means the client is not
    /// reading what it asked for: it is disconnected.
    fn send(&self, message: ServerMessage<S::Response>) -> Result<(), Close> {
        match self.out.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Close::Fault(format!(
                "client is not reading: {} messages queued",
                self.shared.config.max_queued
            ))),
            Err(TrySendError::Closed(_)) => Err(Close::Fault("writer stopped".into())),
        }
    }

    /// Takes a finished call off the table, unless its id was reused since.
    fn finished(&mut self, id: u64, token: u64) {
        if self.calls.get(&id).is_some_and(|c| c.token == token) {
            self.calls.remove(&id);
        }
    }

    /// Cancels every call in flight.
    fn cancel_all(&mut self) {
        self.calls.clear();
    }
}

/// Runs the handler under the call's deadline, turning a panic into an error.
async fn run_call<S: Service>(
    service: Arc<S>,
    request: S::Request,
    ctx: CallContext,
) -> Result<S::Response, RpcError> {
    let deadline = ctx.deadline;
    let handler = async {
        match AssertUnwindSafe(service.call(request, ctx))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "handler panicked".into());
                warn!(panic = %what, "handler panicked");
                Err(RpcError::Internal(format!("handler panicked: {what}")))
            }
        }
    };
    match deadline {
        None => handler.await,
        Some(at) => {
            handler
                .or(async {
                    async_io::Timer::at(at).await;
                    Err(RpcError::DeadlineExceeded)
                })
                .await
        }
    }
}

fn read_fault(e: &SessionError) -> String {
    match e {
        SessionError::Frame(rpckit_proto::FrameError::Io(io)) => format!("read failed: {io}"),
        other => format!("bad input: {other}"),
    }
}

/// The writer task: takes every message that is ready, encodes and tags it into one buffer,
/// and writes the buffer with one flush. Ends after a `Goodbye`, when every sender is gone,
/// or when a write makes no progress within `write_timeout`.
async fn write_loop<R: serde::Serialize>(
    mut writer: SessionWriter<TcpStream>,
    rx: Receiver<ServerMessage<R>>,
    write_timeout: Duration,
) -> Result<(), String> {
    while let Ok(first) = rx.recv().await {
        let mut goodbye = false;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            goodbye |= matches!(message, ServerMessage::Goodbye);
            push(&mut writer, message)?;
            if goodbye || writer.pending() >= FLUSH_THRESHOLD {
                break;
            }
            next = rx.try_recv().ok();
        }
        let flushed = writer
            .flush()
            .or(async {
                async_io::Timer::after(write_timeout).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "write timed out",
                ))
            })
            .await;
        if let Err(e) = flushed {
            return Err(if e.kind() == std::io::ErrorKind::TimedOut {
                format!("client stopped reading: no write progress within {write_timeout:?}")
            } else {
                format!("write failed: {e}")
            });
        }
        if goodbye {
            break;
        }
    }
    Ok(())
}

/// Encodes one message; a reply too large for a frame becomes an error reply for its id.
fn push<R: serde::Serialize>(
    writer: &mut SessionWriter<TcpStream>,
    message: ServerMessage<R>,
) -> Result<(), String> {
    match writer.push_server(&message) {
        Ok(()) => Ok(()),
        Err(SessionError::Encode(e)) => match message {
            ServerMessage::Reply { id, .. } => {
                let error = RpcError::Internal(format!("response cannot be sent: {e}"));
                writer
                    .push_server(&ServerMessage::<R>::Reply {
                        id,
                        result: Err(error),
                    })
                    .map_err(|e| format!("cannot encode error reply: {e}"))
            }
            _ => Err(format!("cannot encode message: {e}")),
        },
        Err(e) => Err(format!("cannot send: {e}")),
    }
}
