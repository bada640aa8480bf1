//! One authenticated connection to a server: callers send on it directly through a shared
//! [`Outbox`] (calls ready together leave in one write), a reader task matches answers to
//! calls by id and keeps the connection alive, and a table holds the calls in flight.
//!
//! The reader task also keeps the calls' timeouts: one timer per connection, set for the
//! earliest of the next keepalive check and the earliest call deadline, instead of one timer
//! per call (a per-call timer costs an insertion into and a removal from the process-wide
//! timer table, under its lock, on every call). Neither the reader task nor a caller waits
//! on a slow socket: each writes what the socket takes at once, and leaves the rest of a
//! write to a task of its own, so answers are read and deadlines kept while a large write
//! drags on.
//!
//! When the connection dies every call in flight ends at once: a call already handed to the
//! socket gets [`CallError::OutcomeUnknown`]; a call that never left this process comes back
//! as [`Failure::NotSent`] with its request, so the [`crate::Client`] can send it again on a
//! new connection.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::{future, FutureExt};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::timer::{self, Sleep};
use rpckit_proto::{
    ClientMessage, HandshakeError, KeyId, Outbox, OutboxError, SecretKey, ServerMessage, Session,
    SessionError, SessionReader, SocketReader, TcpSocket,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::{CallError, ConnectError};
use crate::oneshot;

/// How a call on one connection failed.
#[derive(Debug)]
pub(crate) enum Failure<Req> {
    /// The call never left this process; here is its request back.
    NotSent(Req),
    /// A final outcome for the caller.
    Error(CallError),
}

/// Why [`Connection::open_with_call`] failed, and what became of its call.
#[derive(Debug)]
pub(crate) enum OpenFailure<Req> {
    /// The call never left this process; here is its request back.
    NotSent(ConnectError, Req),
    /// The call left with the handshake's proof, and the server refused the proof or proved
    /// not to hold the key: no genuine server ran it.
    Failed(ConnectError),
    /// The call left with the proof and the connection failed before the server's proof came:
    /// the server may have run it.
    OutcomeUnknown(ConnectError),
}

/// The call that [`Connection::open_with_call`] sent with the handshake.
pub(crate) struct FirstCall<Req, Resp> {
    /// Its id.
    id: u64,
    /// Where its outcome arrives, or why it could not be sent (the connection is fine).
    answer: Result<oneshot::Receiver<Outcome<Resp>>, CallError>,
    /// Its request, handed back if the server closes without having run it.
    request: Req,
}

/// What the connection tells a waiting caller.
enum Outcome<Resp> {
    /// The answer, or a final error.
    Done(Result<Resp, CallError>),
    /// The connection died before the call was handed to the socket.
    NotSent,
}

/// A call waiting for its answer.
struct PendingCall<Resp> {
    /// Where its outcome goes.
    reply: oneshot::Sender<Outcome<Resp>>,
    /// Whether its frame is in the outbox: only then is there anything for the server to
    /// cancel (and a Cancel pushed now follows the call on the wire).
    queued: bool,
    /// Whether its frame was handed to the socket (then its outcome is unknown if the
    /// connection dies).
    written: bool,
    /// When the caller stops waiting, and the timeout that set it.
    deadline: Option<Deadline>,
}

/// When a call times out.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Deadline {
    /// The instant the call times out.
    pub(crate) at: Instant,
    /// The time left at the call's start: sent to the server as the call's relative deadline,
    /// and reported in [`CallError::Timeout`].
    pub(crate) left: Duration,
}

/// The reader task's one timer, shared so that a caller can move it earlier for its deadline.
struct Alarm {
    /// Wakes the reader task (the only task that polls it).
    timer: Sleep,
    /// When it is set to fire; `None` once it has fired.
    at: Option<Instant>,
}

impl Alarm {
    /// Makes the alarm fire at `at` at the latest. Moving a timer takes the process-wide timer
    /// table's lock, so it moves only when it must fire earlier: a wake-up that comes early
    /// finds nothing to do and sets it again.
    fn ring_by(&mut self, at: Instant) {
        if self.at.is_none_or(|armed| at < armed) {
            self.timer.set_at(at);
            self.at = Some(at);
        }
    }
}

/// The table of calls in flight, and whether the connection is still alive.
struct Calls<Resp> {
    /// Why the connection closed, once it has.
    closed: Option<String>,
    /// Calls by id.
    by_id: HashMap<u64, PendingCall<Resp>, BuildHasherDefault<IdHasher>>,
    /// The reader task's timer.
    alarm: Alarm,
}

impl<Resp> Calls<Resp> {
    /// An empty table, for a live connection.
    fn new() -> Self {
        Calls {
            closed: None,
            by_id: HashMap::default(),
            alarm: Alarm {
                timer: Sleep::never(),
                at: None,
            },
        }
    }

    /// Enters call `id`, whose outcome goes to `reply`, and moves the alarm for its deadline.
    fn add(
        &mut self,
        id: u64,
        reply: oneshot::Sender<Outcome<Resp>>,
        written: bool,
        deadline: Option<Deadline>,
    ) {
        self.by_id.insert(
            id,
            PendingCall {
                reply,
                queued: written,
                written,
                deadline,
            },
        );
        if let Some(deadline) = deadline {
            // The reader task ends this call at its deadline.
            self.alarm.ring_by(deadline.at);
        }
    }

    /// Ends every call whose deadline is not after `now` with [`CallError::Timeout`], sets
    /// the alarm for the earliest deadline left, and returns the ids of the timed-out calls
    /// whose frames are queued or written (the server should be told to cancel them: a
    /// queued frame cannot be taken back). A call timed out before its caller queued it is
    /// cancelled by that caller, after its frame.
    fn expire(&mut self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        let due: Vec<u64> = self
            .by_id
            .iter()
            .filter(|(_, call)| call.deadline.is_some_and(|d| d.at <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let Some(call) = self.by_id.remove(&id) else {
                continue;
            };
            if call.queued {
                expired.push(id);
            }
            let left = call.deadline.map_or(Duration::ZERO, |d| d.left);
            call.reply
                .send(Outcome::Done(Err(CallError::Timeout(left))));
        }
        let earliest = self
            .by_id
            .values()
            .filter_map(|call| call.deadline.map(|d| d.at))
            .min();
        if let Some(at) = earliest {
            self.alarm.ring_by(at);
        }
        expired
    }
}

/// Hashes the call table's keys: ids this client hands out itself, one after the other (a
/// reply whose id is not in the table is ignored), so no defence against chosen keys is
/// needed, and SipHash would cost more than the rest of the table's work. A multiplicative
/// hash spreads the consecutive ids over the high bits the table looks at.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(byte)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, id: u64) {
        self.0 = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// State shared by the callers and the reader task.
struct State<Resp> {
    /// Calls in flight.
    calls: Mutex<Calls<Resp>>,
    /// Everything we send.
    outbox: Outbox<TcpSocket>,
    /// Set when the server said it is going away: no new calls here.
    going_away: AtomicBool,
    /// Closed when the connection dies, to wake the reader task and waiters.
    dead: (Sender<()>, Receiver<()>),
}

impl<Resp> State<Resp> {
    fn calls(&self) -> MutexGuard<'_, Calls<Resp>> {
        // Nothing holding this lock can panic halfway through an update; keep going.
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_dead(&self) -> bool {
        self.dead.1.is_closed()
    }

    async fn wait_dead(&self) {
        let _ = self.dead.1.recv().await;
    }

    /// Marks the connection dead: every call in flight ends now, written ones with
    /// `OutcomeUnknown`, the others handed back as not sent.
    fn close(&self, reason: &str) {
        self.close_with(reason, false);
    }

    /// Like [`State::close`]; with `none_ran` (the server said `Goodbye`, which it sends only
    /// after answering every call it read) every call still waiting is handed back as not
    /// sent, written or not.
    fn close_with(&self, reason: &str, none_ran: bool) {
        self.outbox.close(reason);
        {
            let mut calls = self.calls();
            if calls.closed.is_some() {
                return;
            }
            calls.closed = Some(reason.to_owned());
            for (_, call) in calls.by_id.drain() {
                let outcome = if call.written && !none_ran {
                    Outcome::Done(Err(CallError::OutcomeUnknown(reason.to_owned())))
                } else {
                    Outcome::NotSent
                };
                call.reply.send(outcome);
            }
        }
        self.dead.0.close();
        let _ = self.outbox.io().shutdown(Shutdown::Both);
    }

    /// Writes what is queued; marks the calls it writes as written; closes on failure, and
    /// when this future is dropped in the middle of a write (part of a frame may have left,
    /// so nothing more can be sent: the calls in flight end now rather than at their
    /// deadlines).
    async fn flush(&self) -> Result<(), OutboxError> {
        let mut interrupted = CloseOnDrop(Some(self));
        let flushed = self
            .outbox
            .flush(|ids| {
                let mut calls = self.calls();
                for id in ids {
                    if let Some(call) = calls.by_id.get_mut(id) {
                        call.written = true;
                    }
                }
            })
            .await;
        interrupted.0 = None;
        if let Err(e) = &flushed {
            self.close(&e.to_string());
        }
        flushed
    }

    /// Has what is queued (the caller's own message among it) written without holding up the
    /// caller: writes it here if the socket takes it at once (the usual case), and otherwise
    /// leaves the write to a task of its own. A caller with a deadline thus never waits on a
    /// slow socket (its deadline is the reader task's to keep), and a call future held without
    /// being polled holds up no one's writes.
    async fn flush_own(self: &Arc<Self>) -> Result<(), OutboxError>
    where
        Resp: Send + 'static,
    {
        let state = self.clone();
        let mut writing = Box::pin(async move { state.flush().await });
        match futures_lite::future::poll_once(&mut writing).await {
            Some(done) => done,
            None => {
                async_std::task::spawn(writing);
                Ok(())
            }
        }
    }

    /// Writes what is queued from a task of its own (for the reader task, which must go
    /// back to reading).
    fn flush_detached(self: &Arc<Self>)
    where
        Resp: Send + 'static,
    {
        let state = self.clone();
        async_std::task::spawn(async move {
            let _ = state.flush().await;
        });
    }

    /// Queues a control message and writes it out in a task of its own (for callers that
    /// cannot wait, such as `Drop`).
    fn send_detached<Req: Serialize>(self: &Arc<Self>, message: ClientMessage<Req>)
    where
        Resp: Send + 'static,
    {
        if self.outbox.push_client(&message, None).is_ok() {
            self.flush_detached();
        }
    }

    /// Says goodbye and closes: no call may follow the goodbye (the server reads nothing
    /// after it; later callers get theirs back as not sent, for a new connection), and the
    /// connection closes once the goodbye is written, or after the write timeout (another
    /// task may be the writer, and closing stops it).
    async fn say_goodbye(self: &Arc<Self>, reason: &str)
    where
        Resp: Send + 'static,
    {
        self.outbox.stop_calls();
        if let Ok(ticket) = self.outbox.push_client::<()>(&ClientMessage::Goodbye, None) {
            if self.flush_own().await.is_ok() {
                let limit = self.outbox.write_timeout();
                timer::within(limit, self.outbox.written(ticket)).await;
            }
        }
        self.close(reason);
    }

    /// Notes that call `id`'s frame is in the outbox (from now on, cancelling it means telling
    /// the server). If the reader timed the call out (or the connection closed) before, the
    /// server is told to cancel it here, after the frame.
    fn mark_queued(&self, id: u64) {
        let gone = match self.calls().by_id.get_mut(&id) {
            Some(call) => {
                call.queued = true;
                false
            }
            None => true,
        };
        if gone {
            let _ = self
                .outbox
                .push_client(&ClientMessage::<()>::Cancel { id }, None);
        }
    }

    /// Waits until call `id`, refused for want of room (`max_queued` calls wait behind a write
    /// in progress), may be pushed again, no longer than its deadline. It leaves the table
    /// meanwhile, so that the reader's expiry neither times it out nor cancels it on the
    /// server while it is not sent, and comes back with the time it has left.
    async fn wait_for_room(self: &Arc<Self>, id: u64, deadline: Option<Deadline>) -> Room
    where
        Resp: Send + 'static,
    {
        let Some(parked) = self.calls().by_id.remove(&id) else {
            // Timed out or the connection closed: its outcome is waiting.
            return Room::Answered;
        };
        // The queue must be on its way even if every caller that queued a frame is held
        // unpolled before writing it.
        self.flush_detached();
        let waited = timer::until(deadline.map(|d| d.at), self.outbox.room()).await;
        // Time left for the server too, now that it starts later.
        let left = match deadline {
            Some(d) => match d.at.checked_duration_since(Instant::now()) {
                Some(left) if waited.is_some() && !left.is_zero() => {
                    Some(Deadline { at: d.at, left })
                }
                _ => return Room::TimedOut(d.left),
            },
            None => None,
        };
        let mut calls = self.calls();
        if calls.closed.is_some() {
            return Room::Closed;
        }
        calls.add(id, parked.reply, false, left);
        Room::Go(left)
    }
}

/// How [`State::wait_for_room`] ended.
enum Room {
    /// The call is back in the table: push it again, with this deadline.
    Go(Option<Deadline>),
    /// Its outcome is already waiting for it (timed out, or the connection closed).
    Answered,
    /// Its deadline passed first (the time it had at its start).
    TimedOut(Duration),
    /// The connection closed meanwhile; nothing was sent.
    Closed,
}

/// Closes the connection if dropped while armed: see [`State::flush`].
struct CloseOnDrop<'a, Resp>(Option<&'a State<Resp>>);

impl<Resp> Drop for CloseOnDrop<'_, Resp> {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            state.close("a write was interrupted");
        }
    }
}

/// One authenticated connection.
pub(crate) struct Connection<Resp: Send + 'static> {
    state: Arc<State<Resp>>,
    /// Next call id.
    next_id: AtomicU64,
}

impl<Resp: Send + 'static> Drop for Connection<Resp> {
    fn drop(&mut self) {
        // Say goodbye and close; calls still waiting hold no reference to this handle.
        let state = self.state.clone();
        async_std::task::spawn(async move {
            state.say_goodbye("client closed the connection").await;
        });
    }
}

impl<Resp> Connection<Resp>
where
    Resp: DeserializeOwned + Send + 'static,
{
    /// Connects, authenticates, and starts the reader task.
    pub(crate) async fn open(
        addr: &str,
        key_id: &KeyId,
        key: &SecretKey,
        config: &ClientConfig,
    ) -> Result<Self, ConnectError> {
        let stream = connect_within(addr, config.connect_timeout).await?;
        let hs = handshake_config(config);
        let session = handshake::connect(stream.reader(), &stream, key_id, key, &hs)
            .await
            .map_err(|e| handshake_error(addr, e))?;
        Ok(Self::start(session, &stream, config, Calls::new(), 1))
    }

    /// Connects and authenticates like [`Connection::open`], sending `request` in the same
    /// write as the handshake's proof (PROTOCOL.md §3.5), so that it costs no round trip of
    /// its own; then waits for its answer. The call leaves before the server has proven that
    /// it holds the key: see [`ClientConfig::pipeline_first_call`].
    pub(crate) async fn open_with_call<Req: Serialize>(
        addr: &str,
        key_id: &KeyId,
        key: &SecretKey,
        config: &ClientConfig,
        request: Req,
        deadline: Option<Deadline>,
    ) -> Result<(Self, FirstCall<Req, Resp>), OpenFailure<Req>> {
        let stream = match connect_within(addr, config.connect_timeout).await {
            Ok(stream) => stream,
            Err(error) => return Err(OpenFailure::NotSent(error, request)),
        };
        const ID: u64 = 1;
        // Set when the handshake queues the call behind its proof (just before writing it).
        let mut handed = false;
        let hs = handshake_config(config);
        let handshake =
            handshake::connect_pipelined(stream.reader(), &stream, key_id, key, &hs, |w| {
                let pushed = w.push_client(&call_message(ID, deadline, &request));
                // Not encodable (too large, say): nothing of it goes out.
                handed = pushed.is_ok();
                pushed
            })
            .await;
        let (session, pushed) = match handshake {
            Ok(done) => done,
            Err(e) => {
                // A server that refused the proof ran nothing; an impostor is not the server.
                let ran_nothing = matches!(
                    e,
                    HandshakeError::Refused(_) | HandshakeError::BadServerProof
                );
                let failed = handshake_error(addr, e);
                return Err(if !handed {
                    OpenFailure::NotSent(failed, request)
                } else if ran_nothing {
                    OpenFailure::Failed(failed)
                } else {
                    // Handed to the socket: a genuine server may have run it.
                    OpenFailure::OutcomeUnknown(failed)
                });
            }
        };
        let mut calls = Calls::new();
        let answer = match pushed {
            Ok(()) => {
                let (reply, answer) = oneshot::oneshot();
                calls.add(ID, reply, true, deadline);
                Ok(answer)
            }
            // Not encodable (too large for a frame, say): the handshake went on without it.
            Err(e) => Err(CallError::Encode(e.to_string())),
        };
        let connection = Self::start(session, &stream, config, calls, ID + 1);
        Ok((
            connection,
            FirstCall {
                id: ID,
                answer,
                request,
            },
        ))
    }

    /// Starts the reader task of an authenticated session whose call table is `calls`.
    fn start(
        session: Session<SocketReader, &TcpSocket>,
        stream: &TcpSocket,
        config: &ClientConfig,
        calls: Calls<Resp>,
        next_id: u64,
    ) -> Self {
        let (reader, writer) = session.split();
        let (sealer, _, unwritten) = writer.into_parts();
        let state = Arc::new(State {
            calls: Mutex::new(calls),
            outbox: Outbox::new(
                sealer,
                stream.clone(),
                unwritten,
                config.write_timeout,
                config.max_queued,
            ),
            going_away: AtomicBool::new(false),
            dead: async_channel::bounded(1),
        });
        {
            let state = state.clone();
            let (interval, timeout) = (config.keepalive_interval, config.keepalive_timeout);
            async_std::task::spawn(async move {
                let (reason, goodbye) = read_loop(reader, &state, interval, timeout).await;
                debug!(%reason, "connection closed");
                state.close_with(&reason, goodbye);
            });
        }
        Connection {
            state,
            next_id: AtomicU64::new(next_id),
        }
    }

    /// Whether new calls may be sent on this connection.
    pub(crate) fn usable(&self) -> bool {
        !self.state.is_dead() && !self.state.going_away.load(Ordering::Relaxed)
    }

    /// Says goodbye and closes the connection, waiting (up to the write timeout) until the
    /// goodbye is written.
    pub(crate) async fn goodbye(&self) {
        self.state.say_goodbye("client said goodbye").await;
    }

    /// Makes one call; the time `deadline` leaves also travels to the server as the call's
    /// deadline.
    pub(crate) async fn call<Req: Serialize>(
        &self,
        request: Req,
        deadline: Option<Deadline>,
    ) -> Result<Resp, Failure<Req>> {
        let state = &self.state;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::oneshot();
        let others_in_flight = {
            let mut calls = state.calls();
            if calls.closed.is_some() {
                return Err(Failure::NotSent(request));
            }
            calls.add(id, reply, false, deadline);
            calls.by_id.len() > 1
        };
        // Whatever ends this call early (the caller dropping the future) cancels it.
        let mut guard = CancelGuard {
            state,
            id,
            armed: true,
        };
        let mut deadline = deadline;
        let queued = loop {
            match state
                .outbox
                .push_client(&call_message(id, deadline, &request), Some(id))
            {
                Ok(_) => {
                    state.mark_queued(id);
                    break true;
                }
                Err(OutboxError::Full(_)) => match state.wait_for_room(id, deadline).await {
                    Room::Go(left) => deadline = left,
                    Room::Answered => break false,
                    Room::TimedOut(left) => {
                        guard.forget();
                        return Err(Failure::Error(CallError::Timeout(left)));
                    }
                    Room::Closed => {
                        guard.forget();
                        return Err(Failure::NotSent(request));
                    }
                },
                Err(OutboxError::Closing) => {
                    // The connection is saying goodbye: this call goes to a new one.
                    guard.forget();
                    return Err(Failure::NotSent(request));
                }
                Err(OutboxError::Encode(e)) => {
                    guard.forget();
                    return Err(Failure::Error(CallError::Encode(e)));
                }
                Err(e) => {
                    // Closing answers every call in flight, this one included (not sent).
                    state.close(&e.to_string());
                    break false;
                }
            }
        };
        // Become the writer if no one is writing: what the socket takes at once is written
        // here, the rest by a task (`flush_own`). A failure closes the connection, which
        // answers this call.
        if others_in_flight {
            // Other callers on this connection are likely about to send too (answers arrive
            // in batches and wake them together): let them queue their frames first, so one
            // write carries them all.
            futures_lite::future::yield_now().await;
        }
        if queued {
            let _ = state.flush_own().await;
        }
        wait(guard, answer, request).await
    }

    /// Waits for the answer to the call [`Connection::open_with_call`] sent with the handshake.
    pub(crate) async fn first_answer<Req>(
        &self,
        first: FirstCall<Req, Resp>,
    ) -> Result<Resp, Failure<Req>> {
        let FirstCall {
            id,
            answer,
            request,
        } = first;
        let answer = answer.map_err(Failure::Error)?;
        let guard = CancelGuard {
            state: &self.state,
            id,
            armed: true,
        };
        wait(guard, answer, request).await
    }
}

/// Waits for a call's outcome: the answer, a final error, or `Timeout` from the reader task at
/// the deadline (which then has removed the call and told the server to cancel it). `guard`
/// cancels the call if this future is dropped first; `request` comes back if it was not sent.
async fn wait<Req, Resp: Send + 'static>(
    mut guard: CancelGuard<'_, Resp>,
    answer: oneshot::Receiver<Outcome<Resp>>,
    request: Req,
) -> Result<Resp, Failure<Req>> {
    let outcome = answer.await;
    guard.armed = false;
    match outcome {
        Some(Outcome::Done(result)) => result.map_err(Failure::Error),
        Some(Outcome::NotSent) => Err(Failure::NotSent(request)),
        None => Err(Failure::Error(CallError::OutcomeUnknown(
            "connection closed".into(),
        ))),
    }
}

/// Cancels a call whose caller stopped waiting: forgets it and tells the server to stop its
/// handler. A call not written yet is queued and cannot be taken back, so it is told too (the
/// Cancel follows the call on the wire).
struct CancelGuard<'a, Resp: Send + 'static> {
    state: &'a Arc<State<Resp>>,
    id: u64,
    armed: bool,
}

impl<Resp: Send + 'static> CancelGuard<'_, Resp> {
    /// Ends the call here, with nothing to cancel: it leaves the table, and the guard is off.
    fn forget(&mut self) {
        self.armed = false;
        self.state.calls().by_id.remove(&self.id);
    }
}

impl<Resp: Send + 'static> Drop for CancelGuard<'_, Resp> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let removed = self.state.calls().by_id.remove(&self.id);
        if removed.is_some_and(|call| call.queued) {
            self.state
                .send_detached::<()>(ClientMessage::Cancel { id: self.id });
        }
    }
}

/// Reads answers and control messages until the connection ends; returns why it ended, and
/// whether the server said `Goodbye` (so no unanswered call ran).
async fn read_loop<Resp: DeserializeOwned + Send + 'static>(
    mut reader: SessionReader<SocketReader>,
    state: &Arc<State<Resp>>,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
) -> (String, bool) {
    enum Event<'a> {
        Frame(Result<Option<&'a [u8]>, SessionError>),
        Timer,
        Dead,
    }
    let mut last_received = Instant::now();
    let mut ping_sent: Option<Instant> = None;
    let mut nonce = 0u64;
    // Made once: waiting on the channel registers a listener, which would otherwise cost an
    // allocation per frame.
    let mut dead = Box::pin(state.wait_dead());
    loop {
        let keepalive = match ping_sent {
            Some(sent) => sent + keepalive_timeout,
            None => last_received + keepalive_interval,
        };
        state.calls().alarm.ring_by(keepalive);
        let event = async { Event::Frame(reader.recv().await) }
            .or(future::poll_fn(|cx| {
                let mut calls = state.calls();
                let rang = Pin::new(&mut calls.alarm.timer).poll(cx).is_ready();
                if rang {
                    calls.alarm.at = None;
                    Poll::Ready(Event::Timer)
                } else {
                    Poll::Pending
                }
            }))
            .or(async {
                dead.as_mut().await;
                Event::Dead
            })
            .await;
        match event {
            Event::Frame(Ok(Some(payload))) => {
                let message = match decode_server::<Resp>(payload) {
                    Ok(message) => message,
                    Err(e) => return (format!("undecodable message from server: {e}"), false),
                };
                match message {
                    ServerMessage::Reply { id, result } => {
                        let outcome = match result {
                            Ok(Ok(response)) => Ok(response),
                            Ok(Err(e)) => Err(CallError::Decode(e.to_string())),
                            Err(rpc) => Err(CallError::Rpc(rpc)),
                        };
                        // Bound first: the table's lock must not be held across the yield.
                        let call = state.calls().by_id.remove(&id);
                        if let Some(call) = call {
                            call.reply.send(Outcome::Done(outcome));
                            if !reader.has_buffered_frame() {
                                // Let the caller just woken run before this task goes back
                                // to the socket: re-arming the read costs a system call,
                                // and the caller's next request should not wait behind it.
                                future::yield_now().await;
                            }
                        }
                    }
                    ServerMessage::Ping { nonce } => {
                        // Written by a task of its own: this one must get back to reading.
                        let pong = ClientMessage::<()>::Pong { nonce };
                        if state.outbox.push_client(&pong, None).is_err() {
                            return ("cannot answer the server's ping".into(), false);
                        }
                        state.flush_detached();
                    }
                    ServerMessage::Pong { .. } => {}
                    ServerMessage::GoingAway { grace } => {
                        debug!(?grace, "server is going away");
                        state.going_away.store(true, Ordering::Relaxed);
                    }
                    ServerMessage::Goodbye => return ("server said goodbye".into(), true),
                }
                // Taken after the frame is handled, so that reading the clock does not delay
                // the caller woken by an answer (keepalive needs no finer time).
                last_received = Instant::now();
                ping_sent = None;
            }
            Event::Frame(Ok(None)) => return ("server closed the connection".into(), false),
            Event::Frame(Err(e)) => return (format!("connection failed: {e}"), false),
            Event::Timer => {
                let now = Instant::now();
                let timed_out = state.calls().expire(now);
                if !timed_out.is_empty() {
                    for id in timed_out {
                        let cancel = ClientMessage::<()>::Cancel { id };
                        if state.outbox.push_client(&cancel, None).is_err() {
                            return ("cannot cancel a call that timed out".into(), false);
                        }
                    }
                    state.flush_detached();
                }
                match ping_sent {
                    Some(sent) if now >= sent + keepalive_timeout => {
                        return (format!("server unresponsive: no answer to keepalive within {keepalive_timeout:?}"), false);
                    }
                    None if now >= last_received + keepalive_interval => {
                        nonce += 1;
                        ping_sent = Some(now);
                        let ping = ClientMessage::<()>::Ping { nonce };
                        if state.outbox.push_client(&ping, None).is_err() {
                            return ("cannot send keepalive".into(), false);
                        }
                        state.flush_detached();
                    }
                    _ => {}
                }
            }
            Event::Dead => return ("closed".into(), false),
        }
    }
}

/// The `Call` message of call `id`, borrowing its request (which stays the caller's, to be
/// handed back if the call is never sent).
fn call_message<Req>(id: u64, deadline: Option<Deadline>, request: &Req) -> ClientMessage<&Req> {
    ClientMessage::Call {
        id,
        deadline: deadline.map(|d| d.left),
        request,
    }
}

/// The handshake's limits from the client's settings.
fn handshake_config(config: &ClientConfig) -> HandshakeConfig {
    HandshakeConfig {
        timeout: config.handshake_timeout,
        max_frame: config.max_frame,
    }
}

/// Connects to `addr` within `timeout`.
async fn connect_within(addr: &str, timeout: Duration) -> Result<TcpSocket, ConnectError> {
    match timer::within(timeout, connect(addr)).await {
        Some(connected) => connected.map_err(|source| ConnectError::Io {
            addr: addr.to_owned(),
            source,
        }),
        None => Err(ConnectError::Timeout {
            addr: addr.to_owned(),
            after: timeout,
        }),
    }
}

/// The [`ConnectError`] for a failed handshake with `addr`.
fn handshake_error(addr: &str, e: HandshakeError) -> ConnectError {
    match e {
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
    }
}

/// Resolves `addr` (`host:port`) and connects to the first address that answers.
async fn connect(addr: &str) -> std::io::Result<TcpSocket> {
    // A numeric address needs no resolver (which would hop to a blocking thread).
    if let Ok(numeric) = addr.parse::<std::net::SocketAddr>() {
        return TcpSocket::connect(numeric).await;
    }
    let mut last = None;
    for candidate in async_std::net::ToSocketAddrs::to_socket_addrs(addr).await? {
        match TcpSocket::connect(candidate).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolved to nothing",
        )
    }))
}
