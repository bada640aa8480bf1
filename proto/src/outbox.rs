//! The outgoing side of a connection, shared by every task that sends on it. Whoever produces
//! a message encodes and tags it straight into one buffer; whoever then finds no write in
//! progress writes the buffer out ([`Outbox::flush`], until it is empty). Messages that are
//! ready together leave in one write, and sending costs no task switch and no channel.
//!
//! The buffer is bounded: while `max_queued` messages wait behind one write, a server's
//! answers fail the outbox (the peer is not reading fast enough), and a client's calls are
//! refused with [`OutboxError::Full`] until a writer takes the queue ([`Outbox::room`]). A
//! write that makes no progress within the write timeout fails the outbox; after that, every
//! push and flush returns the error and the caller closes the connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use futures_lite::io::{AsyncWrite, AsyncWriteExt};
use serde::Serialize;

use crate::message::{ClientMessage, ServerMessage};
use crate::session::{FrameSealer, SessionError};

/// Write buffers larger than this are given back once written.
const KEEP_BUFFER: usize = 16 * 1024;

/// Marks lists longer than this (in entries) are given back once written.
const KEEP_MARKS: usize = 1024;

/// Why the outbox cannot take or send a message.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// Too many messages wait to be written (the queue's limit is reached): the peer is not
    /// reading fast enough.
    #[error("peer is not reading: {0} messages queued")]
    NotReading(usize),
    /// A write failed or made no progress within the write timeout.
    #[error("{0}")]
    WriteFailed(String),
    /// The connection is closing.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The message could not be encoded (for example it is larger than the frame limit); the
    /// outbox is unharmed.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// A call was not queued: `max_queued` messages already wait behind a write in progress.
    /// The outbox is unharmed; wait for [`Outbox::room`] and push again.
    #[error("{0} messages already wait to be written")]
    Full(usize),
    /// A call was not queued: the connection is saying goodbye ([`Outbox::stop_calls`]).
    #[error("the connection is saying goodbye")]
    Closing,
}

/// A message's place in the outbox's order, from [`Outbox::push_client`]: hand it to
/// [`Outbox::written`] to wait until that message is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Ticket(u64);

#[derive(Debug)]
struct State {
    /// Seals frames in sequence order: the order they enter `pending`.
    sealer: FrameSealer,
    /// Frames sealed and not yet taken by a writer.
    pending: Vec<u8>,
    /// Marks of the messages in `pending` (see [`Outbox::push_client`]).
    marks: Vec<u64>,
    /// An empty marks list to swap in when a writer takes `marks` (no allocation per call).
    spare_marks: Vec<u64>,
    /// An empty buffer to swap in when a writer takes `pending`.
    spare: Vec<u8>,
    /// Messages pushed since the start; of those, taken by writers (the others are in
    /// `pending`), and written (see [`Ticket`]).
    pushed: u64,
    taken: u64,
    written: u64,
    /// Set by [`Outbox::stop_calls`]: calls are refused from now on.
    closing: bool,
    /// Whether a writer is writing.
    writing: bool,
    /// Set once the outbox can no longer send.
    failed: Option<OutboxError>,
}

impl State {
    /// Messages in `pending`.
    fn queued(&self) -> usize {
        usize::try_from(self.pushed - self.taken).unwrap_or(usize::MAX)
    }
}

/// The outgoing side of one connection over `W` (shared writers such as `&TcpStream`).
#[derive(Debug)]
pub struct Outbox<W> {
    state: Mutex<State>,
    /// Notified whenever a writer takes the queue, a write ends, or the outbox fails, if
    /// anyone waits ([`Outbox::wake`]).
    changed: event_listener::Event,
    /// Tasks in [`Outbox::wait_for`]. The event allocates its state at its first use, and
    /// most connections never wait: they never pay for it (W6 in docs/PERFORMANCE.md).
    waiters: AtomicUsize,
    io: W,
    write_timeout: Duration,
    max_queued: usize,
}

impl<W> Outbox<W>
where
    for<'a> &'a W: AsyncWrite,
{
    /// An outbox writing to `io` frames sealed by `sealer`. `unwritten` are bytes already
    /// sealed that must go first (see [`crate::SessionWriter::into_parts`]).
    pub fn new(
        sealer: FrameSealer,
        io: W,
        unwritten: Vec<u8>,
        write_timeout: Duration,
        max_queued: usize,
    ) -> Self {
        Outbox {
            state: Mutex::new(State {
                sealer,
                pending: unwritten,
                marks: Vec::new(),
                spare_marks: Vec::new(),
                spare: Vec::new(),
                pushed: 0,
                taken: 0,
                written: 0,
                closing: false,
                writing: false,
                failed: None,
            }),
            changed: event_listener::Event::new(),
            waiters: AtomicUsize::new(0),
            io,
            write_timeout,
            max_queued: max_queued.max(1),
        }
    }

    fn push(
        &self,
        mark: Option<u64>,
        when_full: WhenFull,
        seal: impl FnOnce(&mut FrameSealer, &mut Vec<u8>) -> Result<(), SessionError>,
    ) -> Result<Ticket, OutboxError> {
        let mut guard = self.state();
        let st = &mut *guard;
        if let Some(failed) = &st.failed {
            return Err(failed.clone());
        }
        if st.closing && mark.is_some() {
            return Err(OutboxError::Closing);
        }
        if st.queued() >= self.max_queued {
            match when_full {
                WhenFull::Fail => {
                    let error = OutboxError::NotReading(st.queued());
                    st.failed = Some(error.clone());
                    drop(guard);
                    self.wake();
                    return Err(error);
                }
                WhenFull::Refuse => return Err(OutboxError::Full(st.queued())),
                WhenFull::Take => {}
            }
        }
        match seal(&mut st.sealer, &mut st.pending) {
            Ok(()) => {}
            Err(SessionError::Encode(e)) => return Err(OutboxError::Encode(e.to_string())),
            Err(e) => {
                let error = OutboxError::Closed(e.to_string());
                st.failed = Some(error.clone());
                drop(guard);
                self.wake();
                return Err(error);
            }
        }
        st.pushed += 1;
        if let Some(mark) = mark {
            st.marks.push(mark);
        }
        Ok(Ticket(st.pushed))
    }

    /// Seals a server message into the buffer; it leaves on the next flush. While
    /// `max_queued` messages wait behind a write, the peer is taken not to be reading: the
    /// outbox fails with [`OutboxError::NotReading`].
    pub fn push_server<Resp: Serialize>(
        &self,
        msg: &ServerMessage<Resp>,
    ) -> Result<(), OutboxError> {
        self.push(None, WhenFull::Fail, |sealer, out| {
            sealer.push_server(out, msg)
        })
        .map(|_| ())
    }

    /// Seals a client message into the buffer; it leaves on the next flush. A `mark` (a call
    /// id, say) is handed to the `taken` callback of the flush that writes this message, so
    /// the caller knows which messages may have reached the peer. A marked message (a call)
    /// is refused with [`OutboxError::Full`] while `max_queued` messages wait behind a write;
    /// an unmarked one (a control message: there are few) is always taken.
    pub fn push_client<Req: Serialize>(
        &self,
        msg: &ClientMessage<Req>,
        mark: Option<u64>,
    ) -> Result<Ticket, OutboxError> {
        let when_full = if mark.is_some() {
            WhenFull::Refuse
        } else {
            WhenFull::Take
        };
        self.push(mark, when_full, |sealer, out| sealer.push_client(out, msg))
    }

    /// Refuses calls (marked messages) from now on with [`OutboxError::Closing`]; control
    /// messages still go in. For a goodbye: nothing may follow it that the peer would not read.
    pub fn stop_calls(&self) {
        self.state().closing = true;
    }

    /// Waits until the message of `ticket` has been written (`Ok`), or the outbox has failed.
    /// It does not write: someone must be flushing.
    pub async fn written(&self, ticket: Ticket) -> Result<(), OutboxError> {
        self.wait_for(|st| st.failed.is_some() || st.written >= ticket.0)
            .await;
        let st = self.state();
        match &st.failed {
            Some(failed) if st.written < ticket.0 => Err(failed.clone()),
            _ => Ok(()),
        }
    }

    /// Waits until a call may be queued again (a writer took the queue) or the outbox failed.
    pub async fn room(&self) {
        self.wait_for(|st| st.failed.is_some() || st.queued() < self.max_queued)
            .await
    }

    /// Waits until fewer than `bytes` wait to be written, no write is under way (so a flush
    /// would write them), or the outbox failed: lets a producer keep pace with the writes.
    pub async fn drained_below(&self, bytes: usize) {
        self.wait_for(|st| st.failed.is_some() || !st.writing || st.pending.len() < bytes)
            .await
    }

    async fn wait_for(&self, ready: impl Fn(&State) -> bool) {
        if ready(&self.state()) {
            return;
        }
        // Counted before listening, and the state checked after: a change made before the
        // count was seen is found by the check; one made after it is notified.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _counted = Waiting(&self.waiters);
        loop {
            let listener = self.changed.listen();
            if ready(&self.state()) {
                return;
            }
            listener.await;
        }
    }

    /// The write timeout it was made with.
    pub fn write_timeout(&self) -> Duration {
        self.write_timeout
    }

    /// Bytes waiting to be written.
    pub fn pending_bytes(&self) -> usize {
        self.state().pending.len()
    }

    /// Writes everything sealed so far, unless a write is already under way (that writer picks
    /// it up). Before each write, `taken` gets the marks of the messages in it; it runs under
    /// the outbox's lock, so it must not push, flush or close.
    ///
    /// Dropping this future in the middle of a write fails the outbox (part of a frame may
    /// have left): callers should let it finish; it lasts while the write makes progress
    /// (each step bounded by the write timeout).
    pub async fn flush(&self, mut taken: impl FnMut(&[u64])) -> Result<(), OutboxError> {
        loop {
            let (mut batch, mut marks, through) = {
                let mut guard = self.state();
                let st = &mut *guard;
                if let Some(failed) = &st.failed {
                    return Err(failed.clone());
                }
                if st.writing || st.pending.is_empty() {
                    return Ok(());
                }
                st.writing = true;
                st.taken = st.pushed;
                let through = st.taken;
                let mut batch = std::mem::take(&mut st.spare);
                std::mem::swap(&mut batch, &mut st.pending);
                let spare_marks = std::mem::take(&mut st.spare_marks);
                let marks = std::mem::replace(&mut st.marks, spare_marks);
                // Reported before the lock is let go: a `close` that comes after this batch
                // was taken then finds its messages reported as (maybe) sent, never as unsent.
                if !marks.is_empty() {
                    taken(&marks);
                }
                (batch, marks, through)
            };
            // A call refused for want of room may go in now.
            self.wake();
            // If this future is dropped mid-write, part of a frame may be on the wire: the
            // connection cannot go on.
            let mut interrupted = Interrupted(Some(self));
            let written = self.write(&batch).await;
            interrupted.0 = None;
            batch.clear();
            marks.clear();
            let mut st = self.state();
            st.writing = false;
            if batch.capacity() <= KEEP_BUFFER {
                st.spare = batch;
            }
            if marks.capacity() <= KEEP_MARKS {
                st.spare_marks = marks;
            }
            let failed = match written {
                Ok(()) => {
                    st.written = through;
                    None
                }
                Err(e) => {
                    let error = OutboxError::WriteFailed(e);
                    st.failed = Some(error.clone());
                    Some(error)
                }
            };
            drop(st);
            self.wake();
            if let Some(error) = failed {
                return Err(error);
            }
        }
    }

    /// Writes all of `bytes`. The write timeout bounds each step, not the whole: a peer that
    /// reads slowly but steadily is not cut off; one that takes nothing for that long is.
    async fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let mut io = &self.io;
        let timeout = self.write_timeout;
        let stalled = || format!("peer stopped reading: no write progress within {timeout:?}");
        let mut rest = bytes;
        while !rest.is_empty() {
            match crate::timer::within(timeout, io.write(rest)).await {
                None => return Err(stalled()),
                Some(Err(e)) => return Err(format!("write failed: {e}")),
                Some(Ok(0)) => return Err("write failed: the socket took no bytes".into()),
                Some(Ok(n)) => rest = rest.get(n..).unwrap_or_default(),
            }
        }
        // A bounded step that is ready at once (as a socket's flush always is) reads no clock.
        match crate::timer::within(timeout, io.flush()).await {
            None => Err(stalled()),
            Some(Err(e)) => Err(format!("write failed: {e}")),
            Some(Ok(())) => Ok(()),
        }
    }

    /// Refuses everything from now on: the connection is closing.
    pub fn close(&self, reason: &str) {
        let mut st = self.state();
        if st.failed.is_none() {
            st.failed = Some(OutboxError::Closed(reason.to_owned()));
        }
        drop(st);
        self.wake();
    }

    /// Whether the outbox has failed or been closed.
    pub fn is_closed(&self) -> bool {
        self.state().failed.is_some()
    }

    /// The stream it writes to.
    pub fn io(&self) -> &W {
        &self.io
    }
}

impl<W> Outbox<W> {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid buffers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells waiters the state changed; called after the state lock is let go.
    fn wake(&self) {
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.changed.notify(usize::MAX);
        }
    }
}

/// Takes a waiter off [`Outbox::waiters`] when its wait ends or is dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a push does while `max_queued` messages wait behind a write.
#[derive(Clone, Copy)]
enum WhenFull {
    /// Fail the outbox: the peer is not reading.
    Fail,
    /// Refuse this message with [`OutboxError::Full`].
    Refuse,
    /// Take it anyway.
    Take,
}

/// Fails the outbox if a flush is dropped in the middle of a write.
struct Interrupted<'a, W>(Option<&'a Outbox<W>>);

impl<W> Drop for Interrupted<'_, W> {
    fn drop(&mut self) {
        if let Some(outbox) = self.0 {
            let mut st = outbox.state();
            st.writing = false;
            st.failed
                .get_or_insert(OutboxError::WriteFailed("a write was interrupted".into()));
            drop(st);
            outbox.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::DEFAULT_MAX_FRAME;
    use crate::session::SessionWriter;
    use async_std::os::unix::net::UnixStream;

    /// An outbox writing to one end of a socket pair, and the other end.
    fn outbox() -> (Outbox<UnixStream>, UnixStream) {
        outbox_queuing(16)
    }

    /// Like [`outbox`], with `max_queued` messages allowed behind a write.
    fn outbox_queuing(max_queued: usize) -> (Outbox<UnixStream>, UnixStream) {
        let (ours, peer) = UnixStream::pair().unwrap();
        let writer = SessionWriter::new(Vec::<u8>::new(), &[1; 32], DEFAULT_MAX_FRAME, Vec::new());
        let (sealer, _, unwritten) = writer.into_parts();
        let outbox = Outbox::new(sealer, ours, unwritten, Duration::from_secs(5), max_queued);
        (outbox, peer)
    }

    /// A call big enough that writing it blocks until the peer reads (socket buffers are far
    /// smaller).
    fn big_call(id: u64) -> ClientMessage<serde_bytes::ByteBuf> {
        ClientMessage::Call {
            id,
            deadline: None,
            request: serde_bytes::ByteBuf::from(vec![7u8; 4 << 20]),
        }
    }

    /// Reads and discards everything from `peer` until it closes (in a thread of its own).
    fn drain(peer: UnixStream) -> std::thread::JoinHandle<usize> {
        std::thread::spawn(move || {
            futures_lite::future::block_on(async {
                let mut total = 0;
                let mut buf = vec![0u8; 64 * 1024];
                let mut peer = &peer;
                while let Ok(n @ 1..) =
                    futures_lite::io::AsyncReadExt::read(&mut peer, &mut buf).await
                {
                    total += n;
                }
                total
            })
        })
    }

    #[test]
    fn calls_wait_for_room_behind_a_stuck_write_while_control_messages_go_in() {
        futures_lite::future::block_on(async {
            let (outbox, peer) = outbox_queuing(2);
            outbox.push_client(&big_call(1), Some(1)).unwrap();
            let mut flushing = Box::pin(outbox.flush(|_| {}));
            assert!(futures_lite::future::poll_once(&mut flushing)
                .await
                .is_none());
            // Another caller's flush returns at once: a writer is at work, and takes what
            // is queued behind its write when that write is done.
            outbox.push_client(&big_call(2), Some(2)).unwrap();
            outbox.flush(|_| {}).await.unwrap();
            outbox.push_client(&big_call(3), Some(3)).unwrap();
            // Two wait behind the write: a third call is refused, the outbox unharmed.
            assert!(matches!(
                outbox.push_client(&big_call(4), Some(4)),
                Err(OutboxError::Full(2))
            ));
            assert!(!outbox.is_closed());
            // A control message still goes in.
            outbox
                .push_client(&ClientMessage::<()>::Cancel { id: 3 }, None)
                .unwrap();
            let mut room = Box::pin(outbox.room());
            assert!(futures_lite::future::poll_once(&mut room).await.is_none());
            // Once the first write is done, its writer takes the queue: there is room again
            // while it writes what it took.
            let reader = drain(peer);
            let mut flushed_first = false;
            futures_lite::future::or(room, async {
                flushing.as_mut().await.unwrap();
                flushed_first = true;
            })
            .await;
            assert!(
                !flushed_first,
                "no room until the writer had written it all"
            );
            outbox.push_client(&big_call(4), Some(4)).unwrap();
            flushing.as_mut().await.unwrap();
            drop(flushing);
            outbox.flush(|_| {}).await.unwrap();
            assert_eq!(outbox.pending_bytes(), 0);
            drop(outbox);
            assert!(reader.join().unwrap() > 16 << 20);
        });
    }

    #[test]
    fn after_stop_calls_only_control_messages_go_in_and_written_waits_for_the_write() {
        futures_lite::future::block_on(async {
            let (outbox, peer) = outbox();
            outbox.push_client(&big_call(1), Some(1)).unwrap();
            outbox.stop_calls();
            assert!(matches!(
                outbox.push_client(&big_call(2), Some(2)),
                Err(OutboxError::Closing)
            ));
            let bye = outbox
                .push_client(&ClientMessage::<()>::Goodbye, None)
                .unwrap();
            // Not written yet: `written` waits, also once a writer has taken it and is
            // still writing.
            let mut written = Box::pin(outbox.written(bye));
            assert!(futures_lite::future::poll_once(&mut written)
                .await
                .is_none());
            let mut flushing = Box::pin(outbox.flush(|_| {}));
            assert!(futures_lite::future::poll_once(&mut flushing)
                .await
                .is_none());
            assert_eq!(outbox.pending_bytes(), 0, "taken by the writer");
            assert!(futures_lite::future::poll_once(&mut written)
                .await
                .is_none());
            let reader = drain(peer);
            flushing.await.unwrap();
            written.await.unwrap();
            drop(outbox);
            assert!(reader.join().unwrap() > 4 << 20);
        });
    }

    #[test]
    fn server_answers_piling_up_behind_a_stuck_write_fail_the_outbox() {
        futures_lite::future::block_on(async {
            let (outbox, _peer) = outbox_queuing(2);
            let big = ServerMessage::Reply {
                id: 1,
                result: Ok(serde_bytes::ByteBuf::from(vec![7u8; 4 << 20])),
            };
            outbox.push_server(&big).unwrap();
            let mut flushing = Box::pin(outbox.flush(|_| {}));
            assert!(futures_lite::future::poll_once(&mut flushing)
                .await
                .is_none());
            outbox.push_server(&big).unwrap();
            outbox.push_server(&big).unwrap();
            assert!(matches!(
                outbox.push_server(&big),
                Err(OutboxError::NotReading(2))
            ));
            assert!(outbox.is_closed());
        });
    }

    #[test]
    fn each_flush_reports_the_marks_of_what_it_wrote_and_only_once() {
        futures_lite::future::block_on(async {
            let (outbox, _peer) = outbox();
            for round in 0..3u64 {
                let ping = ClientMessage::<()>::Ping { nonce: round };
                outbox.push_client(&ping, Some(round * 10)).unwrap();
                outbox.push_client(&ping, None).unwrap();
                outbox.push_client(&ping, Some(round * 10 + 1)).unwrap();
                let mut seen = Vec::new();
                outbox
                    .flush(|marks| seen.extend_from_slice(marks))
                    .await
                    .unwrap();
                assert_eq!(seen, [round * 10, round * 10 + 1]);
                // Nothing is left: another flush writes nothing and reports nothing.
                outbox
                    .flush(|marks| panic!("marks reported twice: {marks:?}"))
                    .await
                    .unwrap();
            }
        });
    }
}
