//! One authenticated connection, as its users see it: a handle that hands calls to the
//! connection's task through a bounded channel and waits for each answer on a oneshot.
//!
//! The task ([`task`]) owns the socket: it writes every frame and reads every answer, keeps
//! the call table, deadlines and keepalive; no lock is shared with it. A call that finds the
//! channel full (`max_queued` calls wait behind a slow write) waits for room, no longer than
//! its deadline. Dropping a call's future tells the task, which cancels the call on the
//! server if it was sent.

mod alarm;
mod intake;
mod outgoing;
mod task;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_channel::{Receiver, Sender, TrySendError};
use async_io::Timer;
use futures_channel::oneshot;
use futures_lite::future;
use rpckit_proto::{FrameSealer, SessionReader, SocketReader, TcpSocket};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::calls::{Calls, Outcome, Reply};
use crate::config::ClientConfig;
use crate::deadline::{self, Deadline};
use crate::error::{CallError, ConnectionLost};

/// Most calls waiting in the channel to the connection's task.
const CHANNEL_SLOTS: usize = 16;

/// How a call on one connection failed.
#[derive(Debug)]
pub(crate) enum Failure<Req> {
    /// The call provably never ran; here is its request back, for another connection.
    NotSent(Req),
    /// The server answered `ShuttingDown` (it did not run the call); here is its request
    /// back, for another server.
    ShuttingDown(Req),
    /// A final outcome for the caller.
    Error(CallError),
}

/// A call handed to the connection's task.
#[derive(Debug)]
pub(crate) struct Envelope<Req, Resp> {
    /// Its id on this connection.
    id: u64,
    /// The request.
    request: Req,
    /// When the caller stops waiting.
    deadline: Option<Deadline>,
    /// Where its outcome goes.
    reply: Reply<Req, Resp>,
}

/// What a handle tells the connection's task besides calls.
#[derive(Debug)]
pub(crate) enum Control {
    /// The caller of call `id` stopped waiting.
    Cancel(u64),
    /// Say goodbye: no further calls; the task ends once the goodbye is written.
    Goodbye,
    /// End now, without waiting for anything to be written.
    Abort,
}

/// The handle of one authenticated connection.
#[derive(Debug)]
pub(crate) struct Connection<Req, Resp> {
    /// Calls for the task; bounded, closed once the connection takes no new calls.
    requests: Sender<Envelope<Req, Resp>>,
    /// Cancels and goodbye for the task; unbounded, but each call adds at most one cancel.
    control: Sender<Control>,
    /// Closed when the task ends.
    ended: Receiver<()>,
    /// Next call id.
    next_id: AtomicU64,
    /// How long a goodbye may take to be written.
    write_timeout: Duration,
    /// Set by the task while a write waits for the socket: a call handed over then may wait
    /// in the channel past its deadline, so its caller keeps the deadline itself.
    blocked: Arc<AtomicBool>,
}

impl<Req, Resp> Drop for Connection<Req, Resp> {
    fn drop(&mut self) {
        // The last user is gone: say goodbye (calls still waiting hold no handle).
        let _ = self.control.try_send(Control::Goodbye);
    }
}

impl<Req, Resp> Connection<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// Starts the task of an authenticated session, whose table already holds `calls`
    /// (a call that rode with the handshake) and whose next call id is `next_id`.
    pub(crate) fn start(
        socket: TcpSocket,
        reader: SessionReader<SocketReader>,
        sealer: FrameSealer,
        unwritten: Vec<u8>,
        calls: Calls<Req, Resp>,
        next_id: u64,
        config: &ClientConfig,
    ) -> Self {
        // A few of `max_queued` wait in the channel, the rest in the task behind a write in
        // progress (where the task keeps their deadlines). The channel stays small: it
        // allocates its whole ring up front, and each call takes the ring's next slot, so a
        // large ring cycles through memory that is cold again when it comes round.
        let capacity = config.max_queued.div_ceil(2).clamp(1, CHANNEL_SLOTS);
        let held = config.max_queued.saturating_sub(capacity);
        let (requests, requests_rx) = async_channel::bounded(capacity);
        let (control, control_rx) = async_channel::unbounded();
        let (ended_tx, ended) = async_channel::bounded(1);
        let blocked = Arc::new(AtomicBool::new(false));
        let owner = task::Owner::new(
            socket,
            reader,
            outgoing::Outgoing::new(sealer, unwritten, config.write_timeout, blocked.clone()),
            calls,
            task::Inbox {
                requests: requests_rx,
                control: control_rx,
                held,
                _ended: ended_tx,
            },
            config,
        );
        async_std::task::spawn(owner.run());
        Connection {
            requests,
            control,
            ended,
            next_id: AtomicU64::new(next_id),
            write_timeout: config.write_timeout,
            blocked,
        }
    }
}

impl<Req, Resp> Connection<Req, Resp> {
    /// Whether new calls may be sent on this connection.
    pub(crate) fn usable(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Says goodbye and waits (up to the write timeout) until the task has written it and
    /// closed the connection. Calls not written yet come back as not sent.
    pub(crate) async fn goodbye(&self) {
        let _ = self.control.try_send(Control::Goodbye);
        if deadline::within(self.write_timeout, self.ended.recv())
            .await
            .is_none()
        {
            let _ = self.control.try_send(Control::Abort);
        }
    }

    /// Makes one call; the time `deadline` leaves also travels to the server as the call's
    /// deadline.
    pub(crate) async fn call(
        &self,
        request: Req,
        deadline: Option<Deadline>,
    ) -> Result<Resp, Failure<Req>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        let envelope = Envelope {
            id,
            request,
            deadline,
            reply,
        };
        match self.requests.try_send(envelope) {
            Ok(()) => {}
            Err(TrySendError::Closed(envelope)) => return Err(Failure::NotSent(envelope.request)),
            Err(TrySendError::Full(envelope)) => {
                // Boxed: rare, and it would otherwise sit in every call's future.
                Box::pin(self.wait_for_room(envelope)).await?
            }
        }
        match deadline {
            // Boxed: rare, and it would otherwise sit in every call's future.
            Some(d) if self.blocked.load(Ordering::Relaxed) => {
                Box::pin(self.wait_until(id, answer, d)).await
            }
            _ => self.wait(id, answer).await,
        }
    }

    /// [`Connection::wait`], giving up at `deadline` (the task may not take the call before
    /// then); the task is then told to cancel the call, or drops it unsent.
    async fn wait_until(
        &self,
        id: u64,
        answer: oneshot::Receiver<Outcome<Req, Resp>>,
        deadline: Deadline,
    ) -> Result<Resp, Failure<Req>> {
        let timed_out = async {
            Timer::at(deadline.at).await;
            Err(Failure::Error(CallError::Timeout(deadline.left)))
        };
        future::or(self.wait(id, answer), timed_out).await
    }

    /// Waits until the channel takes `envelope`, no longer than its deadline.
    async fn wait_for_room(&self, envelope: Envelope<Req, Resp>) -> Result<(), Failure<Req>> {
        let timeout = envelope.deadline;
        // The deadline first: a call whose time is up does not slip in at the last moment.
        let expired = async {
            match timeout {
                Some(d) => {
                    Timer::at(d.at).await;
                    None
                }
                None => future::pending().await,
            }
        };
        let sent = future::or(expired, async { Some(self.requests.send(envelope).await) }).await;
        match sent {
            Some(Ok(())) => Ok(()),
            Some(Err(closed)) => Err(Failure::NotSent(closed.0.request)),
            None => Err(Failure::Error(CallError::Timeout(
                timeout.map_or(Duration::ZERO, |d| d.left),
            ))),
        }
    }

    /// Waits for call `id`'s outcome on `answer`; if this future is dropped first, the task
    /// is told to cancel the call.
    pub(crate) async fn wait(
        &self,
        id: u64,
        answer: oneshot::Receiver<Outcome<Req, Resp>>,
    ) -> Result<Resp, Failure<Req>> {
        let mut cancel = CancelOnDrop {
            control: &self.control,
            id: Some(id),
        };
        let outcome = answer.await;
        cancel.id = None;
        match outcome {
            Ok(Outcome::Done(result)) => result.map_err(Failure::Error),
            Ok(Outcome::NotSent(request)) => Err(Failure::NotSent(request)),
            Ok(Outcome::ShuttingDown(request)) => Err(Failure::ShuttingDown(request)),
            Err(oneshot::Canceled) => Err(Failure::Error(CallError::OutcomeUnknown(
                ConnectionLost::TaskEnded,
            ))),
        }
    }
}

/// Tells the connection's task that the caller of call `id` stopped waiting, unless the
/// call ended first.
struct CancelOnDrop<'a> {
    /// The task's control channel.
    control: &'a Sender<Control>,
    /// The call, while its caller waits.
    id: Option<u64>,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            let _ = self.control.try_send(Control::Cancel(id));
        }
    }
}
