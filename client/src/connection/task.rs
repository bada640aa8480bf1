//! The connection's task: the one owner of the socket. It loops over one event at a time:
//!
//! 1. take what is ready: cancels and goodbye, then the calls waiting in the channel (all of
//!    them, so that calls made together leave in one write), sealing each into the outgoing
//!    buffer and entering it in the call table;
//! 2. wait for the next event: the write progressing, a frame from the server, a call or a
//!    control message, or the alarm (the earliest call deadline or keepalive check);
//! 3. handle it: hand an answer to its caller, answer a ping, time calls out, ping an idle
//!    server.
//!
//! It reads while a write is under way, so two peers writing large frames to each other do
//! not deadlock; behind a blocked write it takes calls only up to `held`, unsealed (one that
//! times out there is never sent), and the channel's bound holds back the rest. When the
//! connection ends, every call in flight ends with it (see [`Calls::end_all`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_io::Timer;
use futures_lite::future::{self, FutureExt};
use rpckit_proto::message::decode_server;
use rpckit_proto::{
    ClientMessage, DecodeError, ServerMessage, SessionError, SessionReader, SocketReader, TcpSocket,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use super::alarm::{Alarm, Keepalive};
use super::outgoing::{Outgoing, WriteError};
use super::{Control, Envelope};
use crate::calls::{Calls, Outcome};
use crate::config::ClientConfig;
use crate::error::{CallError, ConnectionLost};

/// How the task hears from the connection's handle.
#[derive(Debug)]
pub(super) struct Inbox<Req, Resp> {
    /// Calls to send.
    pub(super) requests: Receiver<Envelope<Req, Resp>>,
    /// Cancels and goodbye.
    pub(super) control: Receiver<Control>,
    /// Most calls sealed behind a write in progress before the task stops taking calls.
    pub(super) held: usize,
    /// Dropped when the task ends.
    pub(super) _ended: Sender<()>,
}

/// Why the connection ended.
pub(super) struct End {
    /// What the calls in flight are told.
    pub(super) lost: ConnectionLost,
    /// The server said goodbye: it answered every call it read, so no unanswered call ran.
    pub(super) none_ran: bool,
}

impl End {
    pub(super) fn lost(lost: ConnectionLost) -> Self {
        End {
            lost,
            none_ran: false,
        }
    }
}

/// What woke the task.
enum Event<Req, Resp> {
    /// Everything sealed was written, or writing failed.
    Wrote(Result<(), WriteError>),
    /// A message from the server, or why none can come.
    Frame(Result<ServerMessage<Result<Resp, DecodeError>>, End>),
    /// A call to send (`None`: the channel is closed and empty).
    Request(Option<Envelope<Req, Resp>>),
    /// A control message (`None`: every handle is gone).
    Control(Option<Control>),
    /// The alarm rang.
    Alarm,
}

/// The task's state: the socket and everything about the calls on it.
pub(super) struct Owner<Req, Resp> {
    /// The socket (writes); `reader` reads from it.
    pub(super) socket: TcpSocket,
    /// Frames from the server.
    pub(super) reader: SessionReader<SocketReader>,
    /// Frames to the server.
    pub(super) out: Outgoing,
    /// Calls whose frames are sealed.
    pub(super) calls: Calls<Req, Resp>,
    /// Calls taken while a write is blocked, not sealed yet (at most `inbox.held`).
    pub(super) waiting: VecDeque<Envelope<Req, Resp>>,
    /// Calls and control messages from the handle.
    pub(super) inbox: Inbox<Req, Resp>,
    /// Deadlines and keepalive.
    pub(super) alarm: Alarm,
    /// Keepalive state.
    pub(super) keepalive: Keepalive,
    /// Saying goodbye: the task ends once everything is written.
    pub(super) goodbye: bool,
    /// Ids of calls that timed out (reused between alarms).
    pub(super) expired: Vec<u64>,
}

impl<Req, Resp> Owner<Req, Resp>
where
    Req: Serialize + Send + 'static,
    Resp: DeserializeOwned + Send + 'static,
{
    /// The task of a connection.
    pub(super) fn new(
        socket: TcpSocket,
        reader: SessionReader<SocketReader>,
        out: Outgoing,
        calls: Calls<Req, Resp>,
        inbox: Inbox<Req, Resp>,
        config: &ClientConfig,
    ) -> Self {
        Owner {
            socket,
            reader,
            out,
            calls,
            waiting: VecDeque::new(),
            inbox,
            alarm: Alarm {
                timer: Timer::never(),
                at: None,
            },
            keepalive: Keepalive {
                interval: config.keepalive_interval,
                timeout: config.keepalive_timeout,
                last_heard: Instant::now(),
                ping_sent: None,
                nonce: 0,
            },
            goodbye: false,
            expired: Vec::new(),
        }
    }

    /// Runs the connection until it ends, then ends every call in flight.
    pub(super) async fn run(mut self) {
        // A call that rode with the handshake has its deadline already.
        let end = match self.expire_calls(Instant::now()) {
            Ok(()) => self.serve().await,
            Err(end) => end,
        };
        debug!(reason = %end.lost, "connection closed");
        self.not_sent();
        self.calls.end_all(&end.lost, end.none_ran);
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }

    /// The event loop; returns why the connection ended.
    async fn serve(&mut self) -> End {
        loop {
            if let Err(end) = self.step().await {
                return end;
            }
        }
    }

    /// Takes what is ready, waits for one event and handles it.
    async fn step(&mut self) -> Result<(), End> {
        self.take_ready()?;
        self.alarm.ring_by(self.keepalive.due());
        match self.next_event().await {
            Event::Wrote(Ok(())) if self.goodbye => Err(End::lost(ConnectionLost::ClientClosed)),
            Event::Wrote(Ok(())) => Ok(()),
            Event::Wrote(Err(WriteError::Io(e))) => Err(End::lost(ConnectionLost::Write(e.into()))),
            Event::Wrote(Err(WriteError::Stalled(after))) => {
                Err(End::lost(ConnectionLost::WriteStalled(after)))
            }
            Event::Frame(message) => self.on_frame(message?).await,
            Event::Request(Some(envelope)) => {
                // Cancels sent before this call go before it on the wire (the server frees
                // their slots before it counts this call); a goodbye goes after it.
                let goodbye = self.take_control()?;
                self.take(envelope, &mut None)?;
                if goodbye {
                    self.on_control(Some(Control::Goodbye))?;
                }
                Ok(())
            }
            Event::Request(None) => Ok(()),
            Event::Control(control) => self.on_control(control),
            Event::Alarm => self.on_alarm(),
        }
    }

    /// Waits for the next event.
    async fn next_event(&mut self) -> Event<Req, Resp> {
        let taking = self.taking_calls();
        let requests_open = !(self.inbox.requests.is_closed() && self.inbox.requests.is_empty());
        let control_open = !(self.inbox.control.is_closed() && self.inbox.control.is_empty());
        let Owner {
            socket,
            reader,
            out,
            calls,
            inbox,
            alarm,
            ..
        } = self;
        let write = future::poll_fn(|cx| {
            if out.is_empty() {
                return std::task::Poll::Pending;
            }
            out.poll_write(cx, socket, |id| calls.mark_written(id))
                .map(Event::Wrote)
        });
        let read = async {
            Event::Frame(match reader.recv().await {
                Ok(Some(payload)) => decode_server::<Resp>(payload)
                    .map_err(|e| End::lost(ConnectionLost::Undecodable(e.into()))),
                Ok(None) => Err(End::lost(ConnectionLost::ServerClosed)),
                Err(SessionError::SequenceExhausted) => {
                    Err(End::lost(ConnectionLost::SequenceExhausted))
                }
                Err(e) => Err(End::lost(ConnectionLost::Read(e.into()))),
            })
        };
        let request = async {
            if taking && requests_open {
                Event::Request(inbox.requests.recv().await.ok())
            } else {
                future::pending().await
            }
        };
        let control = async {
            if control_open {
                Event::Control(inbox.control.recv().await.ok())
            } else {
                future::pending().await
            }
        };
        let ring = async {
            (&mut alarm.timer).await;
            alarm.at = None;
            Event::Alarm
        };
        write.or(read).or(request).or(control).or(ring).await
    }

    /// Seals a control message.
    pub(super) fn seal(&mut self, message: &ClientMessage<()>) -> Result<(), End> {
        self.out
            .seal(message)
            .map_err(|_| End::lost(ConnectionLost::SequenceExhausted))
    }

    /// Handles a message from the server.
    async fn on_frame(
        &mut self,
        message: ServerMessage<Result<Resp, DecodeError>>,
    ) -> Result<(), End> {
        match message {
            ServerMessage::Reply { id, result } => {
                let result = match result {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(e)) => Err(CallError::Decode(e)),
                    Err(rpc) => Err(CallError::Rpc(rpc)),
                };
                if self.calls.answer(id, result) && !self.reader.has_buffered_frame() {
                    // Let the caller just woken run before this task waits again: its next
                    // call then goes out in this task's next turn, without a wake-up.
                    future::yield_now().await;
                }
            }
            ServerMessage::Ping { nonce } => self.seal(&ClientMessage::Pong { nonce })?,
            ServerMessage::Pong { .. } => {}
            ServerMessage::GoingAway { grace } => {
                debug!(?grace, "server is going away");
                // No new calls here; those already in the channel still go.
                self.inbox.requests.close();
            }
            ServerMessage::Goodbye => {
                return Err(End {
                    lost: ConnectionLost::ServerClosed,
                    none_ran: true,
                })
            }
        }
        // Read after the frame is handled, so that the caller it woke is not delayed.
        self.keepalive.last_heard = Instant::now();
        self.keepalive.ping_sent = None;
        Ok(())
    }

    /// Handles a control message.
    pub(super) fn on_control(&mut self, control: Option<Control>) -> Result<(), End> {
        match control {
            Some(Control::Cancel(id)) => {
                if self.calls.cancel(id) {
                    self.seal(&ClientMessage::Cancel { id })?;
                }
            }
            // Every handle gone says goodbye too.
            Some(Control::Goodbye) | None if !self.goodbye => {
                self.goodbye = true;
                // Calls not sealed yet go to another connection.
                self.not_sent();
                self.seal(&ClientMessage::Goodbye)?;
            }
            Some(Control::Goodbye) => {}
            None => {
                // Every handle is gone and the goodbye is on its way: nothing more will come.
                return Ok(());
            }
            Some(Control::Abort) => return Err(End::lost(ConnectionLost::ClientClosed)),
        }
        Ok(())
    }

    /// Times out calls past their deadlines, and keeps the server alive or gives up on it.
    fn on_alarm(&mut self) -> Result<(), End> {
        let now = Instant::now();
        self.expire_calls(now)?;
        let keepalive = &mut self.keepalive;
        match keepalive.ping_sent {
            Some(sent) if now >= sent + keepalive.timeout => {
                Err(End::lost(ConnectionLost::Unresponsive(keepalive.timeout)))
            }
            None if now >= keepalive.last_heard + keepalive.interval => {
                keepalive.nonce += 1;
                keepalive.ping_sent = Some(now);
                let nonce = keepalive.nonce;
                self.seal(&ClientMessage::Ping { nonce })
            }
            _ => Ok(()),
        }
    }

    /// Times out the calls whose deadlines passed by `now`, telling the server to cancel
    /// them (their frames are sealed, and cannot be taken back), and sets the alarm for the
    /// earliest deadline left.
    fn expire_calls(&mut self, now: Instant) -> Result<(), End> {
        let mut expired = std::mem::take(&mut self.expired);
        if let Some(at) = self.calls.expire(now, &mut expired) {
            self.alarm.ring_by(at);
        }
        // Waiting calls time out unsent.
        let due = |e: &Envelope<Req, Resp>| e.deadline.is_some_and(|d| d.at <= now);
        if self.waiting.iter().any(due) {
            let (late, kept) = self.waiting.drain(..).partition(due);
            self.waiting = kept;
            for envelope in late {
                let left = envelope.deadline.map_or(Duration::ZERO, |d| d.left);
                let _ = envelope
                    .reply
                    .send(Outcome::Done(Err(CallError::Timeout(left))));
            }
        }
        if let Some(at) = self
            .waiting
            .iter()
            .filter_map(|e| e.deadline.map(|d| d.at))
            .min()
        {
            self.alarm.ring_by(at);
        }
        for id in expired.drain(..) {
            self.seal(&ClientMessage::Cancel { id })?;
        }
        self.expired = expired;
        Ok(())
    }
}
