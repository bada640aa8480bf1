//! The outgoing side of a connection, shared by every task that sends on it. Whoever produces
//! a message encodes and tags it straight into one buffer; whoever then finds no write in
//! progress writes the buffer out and keeps writing until it is empty. Messages that are ready
//! together leave in one write, and sending costs no task switch and no channel.
//!
//! The buffer is bounded: if `max_queued` messages pile up behind one write, the peer is not
//! reading fast enough, and the outbox fails. A write that makes no progress within the write
//! timeout fails it too; after that, every push and flush returns the error and the caller
//! closes the connection.

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
    /// Too many messages wait behind a write that makes no progress: the peer is not reading.
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
}

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
    /// Messages in `pending`.
    queued: usize,
    /// Whether a writer is writing.
    writing: bool,
    /// Set once the outbox can no longer send.
    failed: Option<OutboxError>,
}

/// The outgoing side of one connection over `W` (shared writers such as `&TcpStream`).
#[derive(Debug)]
pub struct Outbox<W> {
    state: Mutex<State>,
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
                queued: 0,
                writing: false,
                failed: None,
            }),
            io,
            write_timeout,
            max_queued: max_queued.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid buffers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(
        &self,
        mark: Option<u64>,
        seal: impl FnOnce(&mut FrameSealer, &mut Vec<u8>) -> Result<(), SessionError>,
    ) -> Result<(), OutboxError> {
        let mut guard = self.state();
        let st = &mut *guard;
        if let Some(failed) = &st.failed {
            return Err(failed.clone());
        }
        if st.queued >= self.max_queued {
            let error = OutboxError::NotReading(st.queued);
            st.failed = Some(error.clone());
            return Err(error);
        }
        match seal(&mut st.sealer, &mut st.pending) {
            Ok(()) => {}
            Err(SessionError::Encode(e)) => return Err(OutboxError::Encode(e.to_string())),
            Err(e) => {
                let error = OutboxError::Closed(e.to_string());
                st.failed = Some(error.clone());
                return Err(error);
            }
        }
        st.queued += 1;
        if let Some(mark) = mark {
            st.marks.push(mark);
        }
        Ok(())
    }

    /// Seals a server message into the buffer; it leaves on the next flush.
    pub fn push_server<Resp: Serialize>(
        &self,
        msg: &ServerMessage<Resp>,
    ) -> Result<(), OutboxError> {
        self.push(None, |sealer, out| sealer.push_server(out, msg))
    }

    /// Seals a client message into the buffer; it leaves on the next flush. A `mark` (a call
    /// id, say) is handed to the `taken` callback of the flush that writes this message, so
    /// the caller knows which messages may have reached the peer.
    pub fn push_client<Req: Serialize>(
        &self,
        msg: &ClientMessage<Req>,
        mark: Option<u64>,
    ) -> Result<(), OutboxError> {
        self.push(mark, |sealer, out| sealer.push_client(out, msg))
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
    /// have left): callers should let it finish; it is bounded by the write timeout.
    pub async fn flush(&self, mut taken: impl FnMut(&[u64])) -> Result<(), OutboxError> {
        loop {
            let (mut batch, mut marks) = {
                let mut guard = self.state();
                let st = &mut *guard;
                if let Some(failed) = &st.failed {
                    return Err(failed.clone());
                }
                if st.writing || st.pending.is_empty() {
                    return Ok(());
                }
                st.writing = true;
                st.queued = 0;
                let mut batch = std::mem::take(&mut st.spare);
                std::mem::swap(&mut batch, &mut st.pending);
                let spare_marks = std::mem::take(&mut st.spare_marks);
                let marks = std::mem::replace(&mut st.marks, spare_marks);
                // Reported before the lock is let go: a `close` that comes after this batch
                // was taken then finds its messages reported as (maybe) sent, never as unsent.
                if !marks.is_empty() {
                    taken(&marks);
                }
                (batch, marks)
            };
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
            if let Err(e) = written {
                let error = OutboxError::WriteFailed(e);
                st.failed = Some(error.clone());
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

/// Fails the outbox if a flush is dropped in the middle of a write.
struct Interrupted<'a, W>(Option<&'a Outbox<W>>);

impl<W> Drop for Interrupted<'_, W> {
    fn drop(&mut self) {
        if let Some(outbox) = self.0 {
            let mut st = outbox.state.lock().unwrap_or_else(|e| e.into_inner());
            st.writing = false;
            st.failed
                .get_or_insert(OutboxError::WriteFailed("a write was interrupted".into()));
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
        let (ours, peer) = UnixStream::pair().unwrap();
        let writer = SessionWriter::new(Vec::<u8>::new(), &[1; 32], DEFAULT_MAX_FRAME, Vec::new());
        let (sealer, _, unwritten) = writer.into_parts();
        let outbox = Outbox::new(sealer, ours, unwritten, Duration::from_secs(5), 16);
        (outbox, peer)
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
