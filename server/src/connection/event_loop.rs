//! The connection's event loop, run by the one task that owns the socket. Each turn hands
//! back the answers of calls that finished, then waits for the first of: the socket taking
//! more of the batch being written, a frame, a call task's result, the shutdown, or the
//! timer; and handles it. Nothing else touches the socket, so nothing is shared and nothing
//! is locked.

use std::convert::Infallible;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

use async_io::Async;
use futures_lite::future::{self, FutureExt};
use futures_lite::io::AsyncWriteExt;
use rpckit_proto::{KeyId, RpcError, ServerMessage, SessionError, SessionReader};
use tracing::info;

use super::calls::{Calls, Finished};
use super::close::Close;
use super::dispatch::reply;
use super::outgoing::{Outgoing, PushError, FLUSH_BYTES};
use super::timers::{Due, Timers};
use crate::metrics::{CallOutcome, ServerMetrics};
use crate::server::Shared;
use crate::service::Service;
use crate::shutdown::ShutdownSignal;

/// The session's reading half over the connection's socket.
pub(super) type Reader<'a> = SessionReader<&'a Async<TcpStream>>;

/// One authenticated connection, as its task holds it.
pub(super) struct Connection<'s, S: Service> {
    /// What all connections share.
    pub(super) shared: &'s Shared<S>,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// The key id it authenticated with.
    pub(super) key_id: Arc<KeyId>,
    /// Answers waiting to be written, and the batch being written.
    pub(super) out: Outgoing,
    /// Calls running in tasks of their own.
    pub(super) calls: Calls<'s, S::Response>,
    /// Keepalive, idle, drain and write deadlines.
    pub(super) timers: Timers,
    /// Cleared once the peer has half-closed.
    reading: bool,
    /// Set once `GoingAway` went out because the session keys have used half of their
    /// limits: the connection closes, with a goodbye, as soon as no call is in flight.
    rekeying: bool,
    /// Set while reading pauses because answers wait to be written (a queue stall).
    read_paused: bool,
    /// Bytes read and not yet added to the metrics: they are added with each write, so a
    /// frame costs no shared atomic of its own.
    unreported_in: u64,
}

/// What the loop waits for.
enum Event<'a, R> {
    /// The socket took this many more bytes of the batch, or failed.
    Wrote(io::Result<usize>),
    /// A frame (verified payload), end of stream, or a read error.
    Frame(Result<Option<&'a [u8]>, SessionError>),
    /// A call task's result, for a call still on the table.
    Finished(Finished<R>),
    /// The server is shutting down.
    Shutdown,
    /// The timer fired.
    Timer,
}

impl<'s, S: Service> Connection<'s, S> {
    /// A connection authenticated just now.
    pub(super) fn new(
        shared: &'s Shared<S>,
        peer: SocketAddr,
        key_id: Arc<KeyId>,
        out: Outgoing,
    ) -> Self {
        Connection {
            shared,
            peer,
            key_id,
            out,
            calls: Calls::new(shared.stats.clone(), shared.metrics.as_ref()),
            timers: Timers::new(Instant::now()),
            reading: true,
            rekeying: false,
            read_paused: false,
            unreported_in: 0,
        }
    }

    /// Adds the bytes read and written since the last report to the metrics, if they are on.
    pub(super) fn report_bytes(&mut self, written: usize) {
        let read = std::mem::take(&mut self.unreported_in);
        self.shared.record(|m| {
            m.bytes_received(read);
            m.bytes_sent(written as u64);
        });
    }

    /// Runs the connection until it must close, and says why.
    pub(super) async fn run(
        &mut self,
        reader: &mut Reader<'_>,
        stream: &Async<TcpStream>,
        shutdown: ShutdownSignal,
    ) -> Close {
        let overhead = reader.frame_overhead() as u64;
        let close = match self.serve_events(reader, stream, shutdown, overhead).await {
            Ok(never) => match never {},
            Err(close) => close,
        };
        self.report_bytes(0);
        close
    }

    async fn serve_events(
        &mut self,
        reader: &mut Reader<'_>,
        stream: &Async<TcpStream>,
        shutdown: ShutdownSignal,
        frame_overhead: u64,
    ) -> Result<Infallible, Close> {
        let config = &self.shared.config;
        // Made once: waiting on the shutdown signal registers a listener, and doing that for
        // every event would cost an allocation each time.
        let mut stop = Box::pin(shutdown.wait());
        loop {
            // Results first: a peer that keeps the socket busy must not starve them (the wait
            // below prefers the socket).
            self.reply_finished()?;
            if self.timers.draining() && self.calls.is_empty() {
                return Err(if self.reading {
                    Close::Drained
                } else {
                    Close::HalfClosedDone
                });
            }
            // Two integer compares per direction: cheap enough for every turn.
            if !self.rekeying && (reader.should_rekey() || self.out.should_rekey()) {
                self.start_rekey()?;
            }
            if self.rekeying && self.calls.is_empty() {
                return Err(Close::KeysUsedUp);
            }
            let wake =
                self.timers
                    .next_wake(config, self.calls.is_empty(), self.out.stalled_since());
            self.timers.arm(wake);
            // Checked before waiting, so a peer that keeps frames coming cannot starve them.
            // Such a peer keeps `last_received` current; at other times the timer fires.
            let event = if !self.timers.draining() && shutdown.fired() {
                Event::Shutdown
            } else if self.timers.last_received >= wake {
                Event::Timer
            } else {
                self.next_event(reader, stream, stop.as_mut()).await
            };
            match event {
                Event::Wrote(Ok(0)) => {
                    return Err(Close::WriteFailed(io::ErrorKind::WriteZero.into()))
                }
                Event::Wrote(Ok(n)) => {
                    self.out.sent(n);
                    self.report_bytes(n);
                }
                Event::Wrote(Err(e)) => return Err(Close::WriteFailed(e)),
                Event::Frame(Ok(Some(payload))) => {
                    self.timers.received(Instant::now());
                    self.unreported_in += payload.len() as u64 + frame_overhead;
                    self.on_frame(payload)?;
                }
                Event::Frame(Ok(None)) => {
                    if self.calls.is_empty() {
                        return Err(Close::PeerClosed);
                    }
                    // Half-closed: finish the calls in flight, then close.
                    self.reading = false;
                    self.timers.start_drain(config.grace_period);
                }
                Event::Frame(Err(e)) => return Err(Close::read(e)),
                Event::Finished(finished) => reply(&mut self.out, finished.id, finished.result)?,
                Event::Shutdown => {
                    self.timers.start_drain(config.grace_period);
                    if !self.rekeying {
                        self.going_away()?;
                    }
                }
                Event::Timer => self.on_timer()?,
            }
        }
    }

    /// Waits for the next event. Writes go first: whatever is ready leaves in one write,
    /// except while more complete frames are buffered (their answers join the batch, up to
    /// [`FLUSH_BYTES`]). Reading pauses while that much waits behind a batch under way.
    async fn next_event<'r>(
        &mut self,
        reader: &'r mut Reader<'_>,
        stream: &Async<TcpStream>,
        stop: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Event<'r, S::Response> {
        let batching = reader.has_buffered_frame() && self.out.queued_bytes() < FLUSH_BYTES;
        let writing = !batching && self.out.take() || !self.out.unsent().is_empty();
        let paused = self.out.queued_bytes() >= FLUSH_BYTES;
        let reading = self.reading && !paused;
        if paused && self.reading && !self.read_paused {
            self.shared.record(ServerMetrics::queue_stall);
        }
        self.read_paused = paused;
        let calls_running = !self.calls.is_empty();
        let draining = self.timers.draining();
        let Connection {
            out, calls, timers, ..
        } = self;
        let write = async {
            if !writing {
                return future::pending().await;
            }
            let mut writer = stream;
            Event::Wrote(writer.write(out.unsent()).await)
        };
        let frame = async {
            if !reading {
                return future::pending().await;
            }
            Event::Frame(reader.recv().await)
        };
        let finished = async {
            if !calls_running {
                return future::pending().await;
            }
            Event::Finished(calls.finished().await)
        };
        let stopping = async {
            if draining {
                return future::pending().await;
            }
            stop.await;
            Event::Shutdown
        };
        let tick = async {
            timers.tick().await;
            Event::Timer
        };
        write.or(frame).or(finished).or(stopping).or(tick).await
    }

    /// The session keys have used half of their limits (PROTOCOL.md §6.2): tells the client
    /// to move to a new connection, which brings new keys. Unlike a shutdown's drain, calls
    /// that arrive meanwhile (sent before the client heard) still run, and there is no
    /// deadline: the connection ends with a goodbye once no call is in flight, and the other
    /// half of the limits is left for that.
    fn start_rekey(&mut self) -> Result<(), Close> {
        self.rekeying = true;
        info!(peer = %self.peer, key_id = %self.key_id, "session keys at half their limit: going away");
        if self.timers.draining() {
            // A shutdown or a half-close drains already.
            return Ok(());
        }
        self.going_away()
    }

    /// Queues `GoingAway` with the grace period: the client moves to a new connection.
    fn going_away(&mut self) -> Result<(), Close> {
        let notice = ServerMessage::<S::Response>::GoingAway {
            grace: self.shared.config.grace_period,
        };
        self.out.push(&notice).map_err(fatal)
    }

    /// Queues the answers of the calls whose results have arrived, without waiting.
    pub(super) fn reply_finished(&mut self) -> Result<(), Close> {
        while let Some(finished) = self.calls.try_finished() {
            reply(&mut self.out, finished.id, finished.result)?;
        }
        Ok(())
    }

    /// Handles a timer tick.
    fn on_timer(&mut self) -> Result<(), Close> {
        let config = &self.shared.config;
        let due = self.timers.due(
            config,
            Instant::now(),
            self.calls.is_empty(),
            self.out.stalled_since(),
        );
        match due {
            Due::Nothing => Ok(()),
            Due::WriteStalled => Err(Close::WriteStalled(config.write_timeout)),
            Due::GraceOver => {
                // Calls whose result has arrived keep it; the rest are answered ShuttingDown
                // and their tasks cancelled: whatever they finish from now on is dropped.
                self.reply_finished()?;
                let left = self.calls.cancel_all(CallOutcome::ShuttingDown);
                for &id in &left {
                    let answer = ServerMessage::<S::Response>::Reply {
                        id,
                        result: Err(RpcError::ShuttingDown),
                    };
                    self.out.push_unbounded(&answer).map_err(fatal)?;
                }
                Err(Close::GraceOver(left.len()))
            }
            Due::Unresponsive => Err(Close::Unresponsive(config.keepalive_timeout)),
            Due::Ping(nonce) => {
                let ping = ServerMessage::<S::Response>::Ping { nonce };
                self.out.push(&ping).map_err(fatal)
            }
            Due::Idle => Err(Close::Idle(config.idle_timeout)),
        }
    }
}

/// A control message that cannot be queued ends the connection (one that does not encode is
/// a bug: they are small and fixed).
pub(super) fn fatal(e: PushError) -> Close {
    match e {
        PushError::Close(close) => close,
        PushError::Encode(e) => Close::Seal(e),
    }
}
