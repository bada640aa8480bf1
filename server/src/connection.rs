//! One client connection, from handshake to close. The data path reads top to bottom:
//! handshake → read frame → check tag → decode → dispatch → encode → write frame, plus the
//! connection's own timers (idle, keepalive, drain).
//!
//! Dispatch first polls the handler once in place: a call that can answer at once (most do)
//! costs no task and no channel. A call that has to wait moves to a task of its own, racing
//! its deadline and a cancel signal, and reports back to the read loop when it ends. Answers go
//! out through the connection's [`Outbox`], which coalesces whatever is ready into one write.

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use futures_lite::io::AsyncReadExt;
use futures_lite::{FutureExt, StreamExt};
use rpckit_proto::handshake::{self, HandshakeConfig, ProofVerdict};
use rpckit_proto::message::decode_client;
use rpckit_proto::timer::{self, Sleep};
use rpckit_proto::{
    ClientMessage, DecodeError, HandshakeError, KeyId, Outbox, OutboxError, RpcError,
    ServerMessage, SessionError, SessionReader, SocketReader, TcpSocket,
};
use tracing::{debug, info, warn};

use crate::server::Shared;
use crate::service::{CallContext, Service};
use crate::shutdown::ShutdownSignal;
use crate::stats::ServerStats;

/// The read loop writes out what it has queued once this much is waiting, even mid-burst.
const FLUSH_BYTES: usize = 64 * 1024;

/// After a failed handshake, how long the server keeps reading (and discarding) what the peer
/// sent, so that closing does not reset the connection before the peer reads the refusal.
const HANDSHAKE_FAILURE_LINGER: Duration = Duration::from_millis(500);

/// Runs one connection to its end. Never panics on peer input; logs why it closed.
pub(crate) async fn serve<S: Service>(
    stream: TcpSocket,
    peer: SocketAddr,
    shared: &Shared<S>,
    shutdown: ShutdownSignal,
) {
    // The accept loop counted this connection as unauthenticated before spawning us.
    let unauthenticated = AdoptedGauge(&shared.stats.unauthenticated);
    let config = HandshakeConfig {
        timeout: shared.config.handshake_timeout,
        max_frame: shared.config.max_frame,
    };
    // Both happen once the proof is checked, before the peer hears the verdict: a failed
    // proof counts against the address, so the client cannot come back before its failure
    // counts; and the connection leaves the unauthenticated count, so a client that has the
    // server's proof can open its next connection without finding this one still counted.
    // A handshake that ends before its proof is checked never calls back; the gauge then
    // leaves the count with the handshake's future, as this statement ends.
    let mut penalised = false;
    let session = handshake::accept_reporting(
        stream.reader(),
        &stream,
        &shared.keyring,
        &config,
        |verdict| {
            drop(unauthenticated);
            if verdict == ProofVerdict::Rejected {
                penalised = shared
                    .penalties
                    .record_failure(peer.ip(), Instant::now())
                    .is_some();
            }
        },
    )
    .await;
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            handshake_failed(shared, peer, &e, penalised);
            linger_and_close(&stream, HANDSHAKE_FAILURE_LINGER).await;
            return;
        }
    };
    shared.penalties.record_success(peer.ip());
    let key_id = Arc::new(session.key_id.clone());
    let (mut reader, writer) = session.split();
    reader.set_budget(shared.buffer_budget.clone());
    let (sealer, _, unwritten) = writer.into_parts();
    // The ServerProof is still unwritten only if frames came with the client's proof
    // (PROTOCOL.md §3.5): it leaves with their answers.
    let calls_with_proof = !unwritten.is_empty();
    info!(%peer, key_id = %key_id, calls_with_proof, "authenticated");
    let outbox = Arc::new(Outbox::new(
        sealer,
        stream.clone(),
        unwritten,
        shared.config.write_timeout,
        shared.config.max_queued,
    ));

    let (done_tx, done_rx) = async_channel::unbounded();
    let mut conn = Connection {
        shared,
        peer,
        key_id: key_id.clone(),
        outbox: outbox.clone(),
        done_tx,
        done_rx: Box::pin(done_rx),
        calls: HashMap::new(),
        next_token: 0,
    };
    let reason = conn.read_loop(&mut reader, shutdown).await;
    // Nothing more is read: the read buffer, and its charge to the shared budget, go back now
    // rather than after the last writes (and before the close is logged).
    drop(reader);
    // Calls still running are cancelled, and none of them answers after the connection's end
    // (a client's goodbye, a fault).
    conn.calls.clear();
    // A call task frees its slot before it writes its answer, so it may still be writing
    // (and a flush here would return at once, leaving the rest to it). Each task holds a
    // `done` sender until its write is over (bounded while it makes progress; cancelled tasks
    // end at once): wait for all of them before the last flush and the close.
    let tasks = conn.done_rx.clone();
    drop(conn);
    while tasks.recv().await.is_ok() {}
    // Every call now has its one answer queued and no task is left to queue another: the
    // goodbye is the last message (PROTOCOL.md §9.6).
    if let Close::Goodbye(_) = reason {
        let _ = outbox.push_server(&ServerMessage::<S::Response>::Goodbye);
    }
    // Whatever was queued last (the goodbye, the last answers) still goes out.
    let flushed = outbox.flush(|_| {}).await;
    outbox.close("connection closed");
    let _ = stream.shutdown(Shutdown::Both);
    match (reason, flushed) {
        (Close::Clean(why) | Close::Goodbye(why), Ok(())) => {
            info!(%peer, key_id = %key_id, "closed: {why}")
        }
        (Close::Clean(why) | Close::Goodbye(why), Err(e)) => {
            warn!(%peer, key_id = %key_id, "closed: {why}; last write: {e}")
        }
        (Close::Fault(why), _) => warn!(%peer, key_id = %key_id, "closed: {why}"),
    }
}

/// Counts and logs a failed handshake; `penalised`: the failure put the address under penalty.
fn handshake_failed<S>(shared: &Shared<S>, peer: SocketAddr, e: &HandshakeError, penalised: bool) {
    shared
        .stats
        .handshake_failures
        .fetch_add(1, Ordering::Relaxed);
    if penalised {
        warn!(%peer, reason = %e, penalty_secs = shared.config.auth_penalty.as_secs(), "handshake failed; address penalised")
    } else {
        warn!(%peer, reason = %e, "handshake failed");
    }
}

/// Half-closes, then reads and discards what the peer still sends (at most 16 KiB, for at most
/// `linger`), so that a refusal already written is not lost to a reset; then closes.
pub(crate) async fn linger_and_close(stream: &TcpSocket, linger: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let drain = async {
        let mut sink = [0u8; 512];
        let mut total = 0usize;
        let mut reader = stream.reader();
        while total < 16 * 1024 {
            match reader.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    };
    timer::within(linger, drain).await;
    let _ = stream.shutdown(Shutdown::Both);
}

/// Decrements a gauge that someone else incremented, when dropped.
pub(crate) struct AdoptedGauge<'a>(pub(crate) &'a AtomicUsize);

impl Drop for AdoptedGauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the read loop ended.
enum Close {
    /// An orderly end the peer started: it said goodbye, or closed at a frame boundary.
    Clean(String),
    /// An orderly end on the server's side (a drain is over, the connection was idle, or the
    /// peer half-closed and its last call has ended):
    /// every call has been answered or claimed for `ShuttingDown`. The server says goodbye
    /// once the last call task has ended, so nothing follows the goodbye.
    Goodbye(String),
    /// A fault: bad frame, bad tag, dead peer, client not reading.
    Fault(String),
}

impl From<OutboxError> for Close {
    fn from(e: OutboxError) -> Self {
        Close::Fault(e.to_string())
    }
}

/// A call running in a task of its own, as the read loop tracks it.
struct InFlight {
    /// Distinguishes this call from an earlier call that used the same id.
    token: u64,
    /// Dropping this cancels the call's task.
    _cancel: Sender<()>,
    /// Set by whoever ends the call first: its task (with the handler's result) or the read
    /// loop (`ShuttingDown` when the grace period is over; and any call taken off the table,
    /// see `Drop`). The loser sends nothing, so each call gets at most one answer.
    answered: Arc<AtomicBool>,
    /// Keeps the server-wide in-flight gauge up while the call runs.
    _gauge: InFlightGauge,
}

impl Drop for InFlight {
    /// A call taken off the table (cancelled by the client, answered `ShuttingDown`, or left
    /// at the connection's end) is claimed before its task is cancelled: a handler finishing
    /// right now sends nothing (the client may reuse the id for a new call).
    fn drop(&mut self) {
        self.answered.store(true, Ordering::Release);
    }
}

/// Counts a call in the server's in-flight gauge while it lives.
struct InFlightGauge(Arc<ServerStats>);

impl InFlightGauge {
    fn new(stats: &Arc<ServerStats>) -> Self {
        stats.calls_in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGauge(stats.clone())
    }
}

impl Drop for InFlightGauge {
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

/// The handler's future, boxed so it can move into a task if it does not finish at once.
type CallFuture<R> = Pin<Box<dyn std::future::Future<Output = Result<R, RpcError>> + Send>>;

struct Connection<'s, S: Service> {
    shared: &'s Shared<S>,
    peer: SocketAddr,
    key_id: Arc<KeyId>,
    /// Where answers go.
    outbox: Arc<Outbox<TcpSocket>>,
    /// Call tasks report (id, token) here when they end.
    done_tx: Sender<(u64, u64)>,
    /// Where the read loop hears of them (pinned: it is polled as a stream, which keeps its
    /// listener between waits).
    done_rx: Pin<Box<Receiver<(u64, u64)>>>,
    /// Calls running in tasks, by id.
    calls: HashMap<u64, InFlight>,
    /// Next call token.
    next_token: u64,
}

impl<S: Service> Connection<'_, S> {
    async fn read_loop(
        &mut self,
        reader: &mut SessionReader<SocketReader>,
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
        // One timer for the loop, moved only when it must fire earlier (or has fired): the
        // deadlines move with every frame, and re-arming a timer per frame costs.
        let mut timer = Sleep::never();
        let mut armed: Option<Instant> = None;
        // Made once: waiting on the shutdown signal registers a listener, and doing that for
        // every frame would cost an allocation each time.
        let mut stop = Box::pin(shutdown.wait());

        loop {
            // Take finished calls off the table first: a peer that keeps the socket busy must
            // not starve them (the select below prefers frames).
            self.take_finished();
            if drain_until.is_some() && self.calls.is_empty() {
                return Close::Goodbye(if reading {
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
            if armed.is_none_or(|at| wake < at) {
                timer.set_at(wake);
                armed = Some(wake);
            }
            // Checked before waiting, so a peer that keeps frames coming cannot starve them.
            // Such a peer keeps `last_received` current; at other times the timer below fires.
            let due = if drain_until.is_none() && shutdown.fired() {
                Some(Event::Shutdown)
            } else if last_received >= wake {
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
                    // The receiver keeps its listener between calls to `next`; with no call in
                    // a task there is nothing to hear of.
                    let tasks_running = !self.calls.is_empty();
                    let done = async {
                        if !tasks_running {
                            return future::pending().await;
                        }
                        match self.done_rx.next().await {
                            Some((id, token)) => Event::Done(id, token),
                            None => future::pending().await,
                        }
                    };
                    let stopping = async {
                        if drain_until.is_none() {
                            stop.as_mut().await;
                            Event::Shutdown
                        } else {
                            future::pending().await
                        }
                    };
                    let tick = async {
                        (&mut timer).await;
                        Event::Timer
                    };
                    frame.or(done).or(stopping).or(tick).await
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
                    let handled = match message {
                        ClientMessage::Call {
                            id,
                            deadline,
                            request,
                        } => {
                            last_call = last_received;
                            // The deadline counts from the frame's arrival; one too far off
                            // for the clock to represent means none.
                            let deadline = deadline.and_then(|d| last_received.checked_add(d));
                            self.on_call(id, deadline, request, drain_until.is_some())
                        }
                        ClientMessage::Cancel { id } => {
                            if self.calls.remove(&id).is_some() {
                                debug!(peer = %self.peer, id, "call cancelled by client");
                            }
                            Ok(())
                        }
                        ClientMessage::Ping { nonce } => {
                            self.outbox
                                .push_server(&ServerMessage::<S::Response>::Pong { nonce })
                        }
                        ClientMessage::Pong { .. } => Ok(()),
                        ClientMessage::Goodbye => {
                            return Close::Clean("client said goodbye".into())
                        }
                    };
                    if let Err(e) = handled {
                        return e.into();
                    }
                    // Answer a burst with one write: flush once no complete frame is left to
                    // read, or once enough has piled up.
                    if !reader.has_buffered_frame() || self.outbox.pending_bytes() >= FLUSH_BYTES {
                        if let Err(e) = self.outbox.flush(|_| {}).await {
                            return e.into();
                        }
                        // A call task may be the one writing: read no more until it has taken
                        // what piled up, so answers made here cannot outrun a client that
                        // reads slowly (each wait lasts while the write makes progress; the
                        // shutdown signal and the timers are seen once it is over).
                        while self.outbox.pending_bytes() >= FLUSH_BYTES {
                            self.outbox.drained_below(FLUSH_BYTES).await;
                            if let Err(e) = self.outbox.flush(|_| {}).await {
                                return e.into();
                            }
                        }
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
                    let notice = ServerMessage::<S::Response>::GoingAway {
                        grace: config.grace_period,
                    };
                    if let Err(e) = self.outbox.push_server(&notice) {
                        return e.into();
                    }
                    if let Err(e) = self.outbox.flush(|_| {}).await {
                        return e.into();
                    }
                }
                Event::Timer => {
                    armed = None;
                    let now = Instant::now();
                    if let Some(deadline) = drain_until {
                        if now >= deadline {
                            let mut left = 0;
                            for (id, call) in std::mem::take(&mut self.calls) {
                                // A task that already answered (its `done` not read yet)
                                // keeps its answer; one that finishes from now on sends none.
                                if call.answered.swap(true, Ordering::AcqRel) {
                                    continue;
                                }
                                left += 1;
                                let _ =
                                    self.outbox
                                        .push_server(&ServerMessage::<S::Response>::Reply {
                                            id,
                                            result: Err(RpcError::ShuttingDown),
                                        });
                            }
                            return Close::Goodbye(format!(
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
                        let ping = ServerMessage::<S::Response>::Ping { nonce: ping_nonce };
                        if let Err(e) = self.outbox.push_server(&ping) {
                            return e.into();
                        }
                        if let Err(e) = self.outbox.flush(|_| {}).await {
                            return e.into();
                        }
                    }
                    if self.calls.is_empty() && now >= last_call + config.idle_timeout {
                        return Close::Goodbye(format!("idle for {:?}", config.idle_timeout));
                    }
                }
            }
        }
    }

    /// Admits, refuses or answers a call. A handler that answers at once is answered here; one
    /// that has to wait moves to a task of its own.
    fn on_call(
        &mut self,
        id: u64,
        deadline: Option<Instant>,
        request: Result<S::Request, DecodeError>,
        draining: bool,
    ) -> Result<(), OutboxError> {
        // Free the slots of calls that have answered, so that a client that sends its next
        // call as soon as it sees an answer is not refused for a slot already free.
        self.take_finished();
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
                return self
                    .outbox
                    .push_server(&ServerMessage::<S::Response>::Reply {
                        id,
                        result: Err(error),
                    })
            }
            (None, Err(e)) => {
                debug!(peer = %self.peer, id, error = %e, "undecodable request");
                let error = RpcError::UnknownMethod(e.to_string());
                return self
                    .outbox
                    .push_server(&ServerMessage::<S::Response>::Reply {
                        id,
                        result: Err(error),
                    });
            }
            (None, Ok(request)) => request,
        };
        let ctx = CallContext {
            id,
            peer: self.peer,
            key_id: self.key_id.clone(),
            deadline,
        };
        let service = self.shared.service.clone();
        let mut handler: CallFuture<S::Response> =
            Box::pin(guarded(async move { service.call(request, ctx).await }));
        // One poll in place. A handler that is not ready registers this no-op waker, and
        // registers its task's waker again at the task's first poll, so nothing is lost.
        let mut first = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(result) = handler.as_mut().poll(&mut first) {
            self.shared
                .stats
                .calls_total
                .fetch_add(1, Ordering::Relaxed);
            return reply(&self.outbox, id, result);
        }
        self.spawn_call(id, handler, deadline);
        Ok(())
    }

    /// Runs a call that has to wait in its own task, under its deadline and cancel signal.
    fn spawn_call(&mut self, id: u64, handler: CallFuture<S::Response>, deadline: Option<Instant>) {
        let token = self.next_token;
        self.next_token += 1;
        let (cancel_tx, cancel_rx) = async_channel::bounded::<()>(1);
        let answered = Arc::new(AtomicBool::new(false));
        self.calls.insert(
            id,
            InFlight {
                token,
                _cancel: cancel_tx,
                answered: answered.clone(),
                _gauge: InFlightGauge::new(&self.shared.stats),
            },
        );
        let outbox = self.outbox.clone();
        let done = self.done_tx.clone();
        async_std::task::spawn(async move {
            let work = async {
                Some(
                    timer::until(deadline, handler)
                        .await
                        .unwrap_or(Err(RpcError::DeadlineExceeded)),
                )
            };
            let cancelled = async {
                // Nothing is sent: this returns when the read loop drops the sender.
                let _ = cancel_rx.recv().await;
                None
            };
            let result = work.or(cancelled).await;
            // Claim the call, free its slot, then queue its answer and write: the client cannot
            // see the answer (and send its next call, maybe with the same id) before the slot
            // is free. A call the read loop has claimed (cancelled, or answered
            // `ShuttingDown` when the grace period was over) gets nothing more.
            let result = result.filter(|_| !answered.swap(true, Ordering::AcqRel));
            let _ = done.try_send((id, token));
            let queued = result.map(|result| reply(&outbox, id, result));
            let sent = match queued {
                Some(Ok(())) => outbox.flush(|_| {}).await,
                Some(Err(e)) => Err(e),
                None => Ok(()),
            };
            if sent.is_err() {
                // Wake the read loop: this connection cannot send any more.
                let _ = outbox.io().shutdown(Shutdown::Both);
            }
        });
    }

    /// Takes every call whose task has reported its end off the table. With none in the table
    /// (every fast call) the channel is not touched: what it may hold then is stale (calls
    /// cancelled or drained) and can wait.
    fn take_finished(&mut self) {
        if self.calls.is_empty() {
            return;
        }
        while let Ok((id, token)) = self.done_rx.try_recv() {
            self.finished(id, token);
        }
    }

    /// Takes a finished call off the table, unless its id was reused since.
    fn finished(&mut self, id: u64, token: u64) {
        if self.calls.get(&id).is_some_and(|c| c.token == token) {
            self.calls.remove(&id);
        }
    }
}

/// Queues the answer to call `id`; an answer too large for a frame becomes an `Internal`
/// error for that call instead.
fn reply<R: serde::Serialize>(
    outbox: &Outbox<TcpSocket>,
    id: u64,
    result: Result<R, RpcError>,
) -> Result<(), OutboxError> {
    match outbox.push_server(&ServerMessage::Reply { id, result }) {
        Err(OutboxError::Encode(e)) => {
            let error = RpcError::Internal(format!("response cannot be sent: {e}"));
            outbox.push_server(&ServerMessage::<R>::Reply {
                id,
                result: Err(error),
            })
        }
        other => other,
    }
}

/// Runs a handler, turning a panic into an error for its call.
async fn guarded<R>(
    handler: impl std::future::Future<Output = Result<R, RpcError>>,
) -> Result<R, RpcError> {
    match AssertUnwindSafe(handler).catch_unwind().await {
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
}

fn read_fault(e: &SessionError) -> String {
    match e {
        SessionError::Frame(rpckit_proto::FrameError::Io(io)) => format!("read failed: {io}"),
        other => format!("bad input: {other}"),
    }
}
