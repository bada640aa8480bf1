//! One authenticated connection to a server: a writer task that batches outgoing messages, a
//! reader task that matches answers to calls by id and keeps the connection alive, and the
//! table of calls in flight.
//!
//! When the connection dies every call in flight ends at once: a call already written gets
//! [`CallError::OutcomeUnknown`]; a call that never left this process comes back as
//! [`Failure::NotSent`] with its request, so the [`crate::Client`] can send it again on a new
//! connection.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_std::net::TcpStream;
use futures_lite::FutureExt;
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::{
    ClientMessage, HandshakeError, KeyId, SecretKey, ServerMessage, SessionError, SessionReader,
    SessionWriter,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::{CallError, ConnectError};

/// The writer flushes once this many bytes are queued, even if more messages are ready.
const FLUSH_THRESHOLD: usize = 256 * 1024;

/// How a call on one connection failed.
#[derive(Debug)]
pub(crate) enum Failure<Req> {
    /// The call never left this process; here is its request back.
    NotSent(Req),
    /// A final outcome for the caller.
    Error(CallError),
}

/// What the connection tells a waiting caller.
enum Outcome<Req, Resp> {
    /// The answer, or a final error.
    Done(Result<Resp, CallError>),
    /// The connection died before the call was written.
    NotSent(Req),
}

/// A call waiting for its answer.
struct PendingCall<Req, Resp> {
    /// Where its outcome goes.
    reply: Sender<Outcome<Req, Resp>>,
    /// Whether its frame was handed to the socket (then its outcome is unknown if the
    /// connection dies).
    written: bool,
}

/// The table of calls in flight, and whether the connection is still alive.
struct Calls<Req, Resp> {
    /// Why the connection closed, once it has.
    closed: Option<String>,
    /// Calls by id.
    by_id: HashMap<u64, PendingCall<Req, Resp>>,
}

/// State shared by the callers and the two tasks.
struct State<Req, Resp> {
    /// Calls in flight.
    calls: Mutex<Calls<Req, Resp>>,
    /// Set when the server said it is going away: no new calls here.
    going_away: AtomicBool,
    /// Closed when the connection dies, to wake both tasks.
    dead: (Sender<()>, Receiver<()>),
    /// Messages for the writer task.
    out: Sender<ClientMessage<Req>>,
}

impl<Req, Resp> State<Req, Resp> {
    fn calls(&self) -> MutexGuard<'_, Calls<Req, Resp>> {
        // Nothing holding this lock can panic halfway through an update; keep going.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_dead(&self) -> bool {
        self.dead.1.is_closed()
    }

    /// Marks the connection dead: calls already written fail now; unwritten ones are handed
    /// back by the writer task.
    fn close(&self, reason: &str) {
        {
            let mut calls = self.calls();
            if calls.closed.is_some() {
                return;
            }
            calls.closed = Some(reason.to_owned());
            calls.by_id.retain(|_, call| {
                if call.written {
                    let _ = call
                        .reply
                        .try_send(Outcome::Done(Err(CallError::OutcomeUnknown(
                            reason.to_owned(),
                        ))));
                }
                !call.written
            });
        }
        self.dead.0.close();
        self.out.close();
    }

    async fn wait_dead(&self) {
        let _ = self.dead.1.recv().await;
    }
}

/// One authenticated connection.
pub(crate) struct Connection<Req, Resp> {
    state: Arc<State<Req, Resp>>,
    /// Next call id.
    next_id: AtomicU64,
}

impl<Req, Resp> Drop for Connection<Req, Resp> {
    fn drop(&mut self) {
        // Say goodbye; the writer closes the socket after it.
        let _ = self.state.out.try_send(ClientMessage::Goodbye);
    }
}

impl<Req, Resp> Connection<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Connects, authenticates, and starts the connection's tasks.
    pub(crate) async fn open(
        addr: &str,
        key_id: &KeyId,
        key: &SecretKey,
        config: &ClientConfig,
    ) -> Result<Self, ConnectError> {
        let connect = async {
            TcpStream::connect(addr)
                .await
                .map_err(|source| ConnectError::Io {
                    addr: addr.to_owned(),
                    source,
                })
        };
        let timeout = config.connect_timeout;
        let stream = connect
            .or(async {
                async_io::Timer::after(timeout).await;
                Err(ConnectError::Timeout {
                    addr: addr.to_owned(),
                    after: timeout,
                })
            })
            .await?;
        let _ = stream.set_nodelay(true);
        let hs = HandshakeConfig {
            timeout: config.handshake_timeout,
            max_frame: config.max_frame,
        };
        let session = handshake::connect(stream.clone(), stream.clone(), key_id, key, &hs)
            .await
            .map_err(|e| match e {
                HandshakeError::Timeout(after) => ConnectError::Timeout {
                    addr: addr.to_owned(),
                    after,
                },
                HandshakeError::Io(source) => ConnectError::Io {
                    addr: addr.to_owned(),
                    source,
                },
                e if e.is_auth_failure() => ConnectError::Auth(e),
                e => ConnectError::Handshake(e),
            })?;
        let (reader, writer) = session.split();
        let (out_tx, out_rx) = async_channel::bounded(config.max_queued.max(1));
        let state = Arc::new(State {
            calls: Mutex::new(Calls {
                closed: None,
                by_id: HashMap::new(),
            }),
            going_away: AtomicBool::new(false),
            dead: async_channel::bounded(1),
            out: out_tx,
        });
        {
            let state = state.clone();
            let stream = stream.clone();
            let write_timeout = config.write_timeout;
            async_std::task::spawn(async move {
                write_loop(writer, out_rx, &state, write_timeout).await;
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
        {
            let state = state.clone();
            let (interval, timeout) = (config.keepalive_interval, config.keepalive_timeout);
            async_std::task::spawn(async move {
                let reason = read_loop(reader, &state, interval, timeout).await;
                debug!(%reason, "connection closed");
                state.close(&reason);
                let _ = stream.shutdown(Shutdown::Both);
            });
        }
        Ok(Connection {
            state,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends a goodbye and waits until the connection has closed, for at most `limit`.
    pub(crate) async fn goodbye(&self, limit: Duration) {
        let _ = self.state.out.try_send(ClientMessage::Goodbye);
        self.state
            .wait_dead()
            .or(async {
                async_io::Timer::after(limit).await;
            })
            .await;
    }

    /// Whether new calls may be sent on this connection.
    pub(crate) fn usable(&self) -> bool {
        !self.state.is_dead() && !self.state.going_away.load(Ordering::Relaxed)
    }

    /// Makes one call; `timeout` also travels to the server as the call's deadline.
    pub(crate) async fn call(
        &self,
        request: Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, Failure<Req>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = async_channel::bounded(1);
        {
            let mut calls = self.state.calls();
            if calls.closed.is_some() {
                return Err(Failure::NotSent(request));
            }
            calls.by_id.insert(
                id,
                PendingCall {
                    reply,
                    written: false,
                },
            );
        }
        // Whatever ends this call early (timeout, or the caller dropping the future) cancels it.
        let mut guard = CancelGuard {
            state: &self.state,
            id,
            armed: true,
        };
        let exchange = async {
            let message = ClientMessage::Call {
                id,
                deadline: timeout,
                request,
            };
            if let Err(unsent) = self.state.out.send(message).await {
                guard.armed = false;
                self.state.calls().by_id.remove(&id);
                return match unsent.into_inner() {
                    ClientMessage::Call { request, .. } => Err(Failure::NotSent(request)),
                    _ => Err(Failure::Error(CallError::OutcomeUnknown(
                        "connection closed".into(),
                    ))),
                };
            }
            match answer.recv().await {
                Ok(Outcome::Done(result)) => result.map_err(Failure::Error),
                Ok(Outcome::NotSent(request)) => Err(Failure::NotSent(request)),
                Err(_) => Err(Failure::Error(CallError::OutcomeUnknown(
                    "connection closed".into(),
                ))),
            }
        };
        let result = match timeout {
            None => exchange.await,
            Some(after) => {
                exchange
                    .or(async {
                        async_io::Timer::after(after).await;
                        Err(Failure::Error(CallError::Timeout(after)))
                    })
                    .await
            }
        };
        if !matches!(result, Err(Failure::Error(CallError::Timeout(_)))) {
            guard.armed = false;
        }
        result
    }
}

/// Cancels a call whose caller stopped waiting: forgets it and, if it was already sent, tells
/// the server to stop its handler.
struct CancelGuard<'a, Req, Resp> {
    state: &'a State<Req, Resp>,
    id: u64,
    armed: bool,
}

impl<Req, Resp> Drop for CancelGuard<'_, Req, Resp> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self.state.calls().by_id.remove(&self.id);
        if removed.is_some_and(|call| call.written) {
            // Best effort: if the queue is full the server's deadline ends the call anyway.
            let _ = self
                .state
                .out
                .try_send(ClientMessage::Cancel { id: self.id });
        }
    }
}

/// Takes every ready message, encodes and tags it into one buffer, writes it with one flush.
async fn write_loop<Req: Serialize, Resp>(
    mut writer: SessionWriter<TcpStream>,
    rx: Receiver<ClientMessage<Req>>,
    state: &State<Req, Resp>,
    write_timeout: Duration,
) {
    let reason = loop {
        let first = rx.recv().or(async {
            state.wait_dead().await;
            Err(async_channel::RecvError)
        });
        let Ok(first) = first.await else {
            break "closed".to_owned();
        };
        if state.is_dead() {
            // Hand the message back below with the rest of the queue.
            hand_back(state, first);
            break "closed".to_owned();
        }
        let mut goodbye = false;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            goodbye |= matches!(message, ClientMessage::Goodbye);
            push(&mut writer, state, message);
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
                    "no write progress",
                ))
            })
            .or(async {
                state.wait_dead().await;
                Err(std::io::Error::other("connection closed"))
            })
            .await;
        if let Err(e) = flushed {
            break format!("write failed: {e}");
        }
        if goodbye {
            break "client said goodbye".to_owned();
        }
    };
    state.close(&reason);
    rx.close();
    while let Ok(message) = rx.try_recv() {
        hand_back(state, message);
    }
}

/// Encodes one outgoing message; marks a call written, or fails it if it cannot be encoded.
fn push<Req: Serialize, Resp>(
    writer: &mut SessionWriter<TcpStream>,
    state: &State<Req, Resp>,
    message: ClientMessage<Req>,
) {
    let ClientMessage::Call { id, .. } = message else {
        if let Err(e) = writer.push_client(&message) {
            debug!(error = %e, "cannot encode control message");
        }
        return;
    };
    let mut calls = state.calls();
    let Some(call) = calls.by_id.get_mut(&id) else {
        // The caller gave up before the call was written: do not send it.
        return;
    };
    match writer.push_client(&message) {
        Ok(()) => call.written = true,
        Err(e) => {
            if let Some(call) = calls.by_id.remove(&id) {
                let error = match e {
                    SessionError::Encode(e) => CallError::Encode(e.to_string()),
                    other => CallError::Encode(other.to_string()),
                };
                let _ = call.reply.try_send(Outcome::Done(Err(error)));
            }
        }
    }
}

/// Gives an unsent call's request back to its caller.
fn hand_back<Req, Resp>(state: &State<Req, Resp>, message: ClientMessage<Req>) {
    if let ClientMessage::Call { id, request, .. } = message {
        if let Some(call) = state.calls().by_id.remove(&id) {
            let _ = call.reply.try_send(Outcome::NotSent(request));
        }
    }
}

/// Reads answers and control messages until the connection ends; returns why it ended.
async fn read_loop<Req, Resp: DeserializeOwned>(
    mut reader: SessionReader<TcpStream>,
    state: &State<Req, Resp>,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
) -> String {
    enum Event<'a> {
        Frame(Result<Option<&'a [u8]>, SessionError>),
        Timer,
        Dead,
    }
    let mut last_received = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut nonce = 0u64;
    loop {
        let wake = match ping_sent {
            Some(sent) => sent + keepalive_timeout,
            None => last_received + keepalive_interval,
        };
        let event = async { Event::Frame(reader.recv().await) }
            .or(async {
                async_io::Timer::at(wake).await;
                Event::Timer
            })
            .or(async {
                state.wait_dead().await;
                Event::Dead
            })
            .await;
        match event {
            Event::Frame(Ok(Some(payload))) => {
                last_received = Instant::now();
                ping_sent = None;
                let message = match decode_server::<Resp>(payload) {
                    Ok(message) => message,
                    Err(e) => return format!("undecodable message from server: {e}"),
                };
                match message {
                    ServerMessage::Reply { id, result } => {
                        let outcome = match result {
                            Ok(Ok(response)) => Ok(response),
                            Ok(Err(e)) => Err(CallError::Decode(e.to_string())),
                            Err(rpc) => Err(CallError::Rpc(rpc)),
                        };
                        if let Some(call) = state.calls().by_id.remove(&id) {
                            let _ = call.reply.try_send(Outcome::Done(outcome));
                        }
                    }
                    ServerMessage::Ping { nonce } => {
                        let _ = state.out.try_send(ClientMessage::Pong { nonce });
                    }
                    ServerMessage::Pong { .. } => {}
                    ServerMessage::GoingAway { grace } => {
                        debug!(?grace, "server is going away");
                        state.going_away.store(true, Ordering::Relaxed);
                    }
                    ServerMessage::Goodbye => return "server said goodbye".into(),
                }
            }
            Event::Frame(Ok(None)) => return "server closed the connection".into(),
            Event::Frame(Err(e)) => return format!("connection failed: {e}"),
            Event::Timer => {
                if ping_sent.is_some() {
                    return format!(
                        "server unresponsive: no answer to keepalive within {keepalive_timeout:?}"
                    );
                }
                nonce += 1;
                ping_sent = Some(Instant::now());
                let _ = state.out.try_send(ClientMessage::Ping { nonce });
            }
            Event::Dead => return "closed".into(),
        }
    }
}
