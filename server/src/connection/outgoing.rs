//! The connection's outgoing side, owned by its task: answers are sealed into frames in a
//! queue; when the task is ready to write, the whole queue becomes the next batch and leaves
//! in as few writes as the socket allows, so a burst of answers costs one write.
//!
//! Both sides are bounded: at most `max_queued` messages may wait behind a batch still being
//! written (past it the peer is taken not to be reading), and the event loop stops reading
//! while [`FLUSH_BYTES`] wait (see [`Outgoing::queued_bytes`]). The write timeout is measured
//! from the batch's start or its last progress ([`Outgoing::stalled_since`]).

use std::io;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use rpckit_proto::{FrameSealer, ServerMessage, SessionError};
use serde::Serialize;

use super::close::Close;

/// Once this much is queued, a batch starts even mid-burst, and reading pauses while a batch
/// is under way.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// Batch buffers larger than this are given back once written, so idle connections stay small.
const KEEP_BUFFER: usize = 64 * 1024;

/// Why a message was not queued.
#[derive(Debug)]
pub(crate) enum PushError {
    /// The message cannot be encoded within the frame limit; nothing was queued and the
    /// connection is unharmed.
    Encode(SessionError),
    /// The connection cannot go on.
    Close(Close),
}

/// Sealed frames waiting to be written, and the batch being written.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Seals frames in sequence order: the order they are queued, which is the order they
    /// are written.
    sealer: FrameSealer,
    /// Frames sealed since the current batch was taken; they leave with the next one.
    queued: Vec<u8>,
    /// Messages in `queued`.
    queued_messages: usize,
    /// The batch being written; `batch[..sent]` has been handed to the socket.
    batch: Vec<u8>,
    /// Bytes of `batch` written.
    sent: usize,
    /// When the batch began or last made progress; `None` with no batch.
    progress_at: Option<Instant>,
    /// Most messages that may wait behind a batch.
    max_queued: usize,
}

impl Outgoing {
    /// An empty outgoing side; `unwritten` (bytes the handshake sealed but did not write) goes
    /// first.
    pub(crate) fn new(sealer: FrameSealer, unwritten: Vec<u8>, max_queued: usize) -> Self {
        Outgoing {
            sealer,
            queued: unwritten,
            queued_messages: 0,
            batch: Vec::new(),
            sent: 0,
            progress_at: None,
            max_queued: max_queued.max(1),
        }
    }

    /// Seals `msg` into the queue. Fails the connection if `max_queued` messages already wait.
    pub(crate) fn push<R: Serialize>(&mut self, msg: &ServerMessage<R>) -> Result<(), PushError> {
        if self.queued_messages >= self.max_queued {
            return Err(PushError::Close(Close::NotReading(self.queued_messages)));
        }
        self.push_unbounded(msg)
    }

    /// Seals `msg` into the queue whatever its length: for the few messages the close path
    /// sends (the `ShuttingDown` answers, at most one per call in flight, and the goodbye).
    pub(crate) fn push_unbounded<R: Serialize>(
        &mut self,
        msg: &ServerMessage<R>,
    ) -> Result<(), PushError> {
        match self.sealer.push_server(&mut self.queued, msg) {
            Ok(()) => {
                self.queued_messages += 1;
                Ok(())
            }
            Err(e @ SessionError::Encode(_)) => Err(PushError::Encode(e)),
            Err(e) => Err(PushError::Close(Close::Seal(e))),
        }
    }

    /// Whether the sealing key has used half of its limits (see [`FrameSealer::should_rekey`]).
    pub(crate) fn should_rekey(&self) -> bool {
        self.sealer.should_rekey()
    }

    /// Bytes queued behind the current batch.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.len()
    }

    /// Makes the queue the next batch if no batch is under way. Returns whether there is
    /// anything to write.
    pub(crate) fn take(&mut self) -> bool {
        if self.batch.is_empty() && !self.queued.is_empty() {
            std::mem::swap(&mut self.batch, &mut self.queued);
            self.queued_messages = 0;
            self.sent = 0;
            self.progress_at = Some(Instant::now());
        }
        !self.batch.is_empty()
    }

    /// The part of the batch not written yet.
    pub(crate) fn unsent(&self) -> &[u8] {
        self.batch.get(self.sent..).unwrap_or_default()
    }

    /// Records that the socket took `n` more bytes of the batch.
    pub(crate) fn sent(&mut self, n: usize) {
        self.sent += n;
        if self.sent < self.batch.len() {
            self.progress_at = Some(Instant::now());
            return;
        }
        self.batch.clear();
        if self.batch.capacity() > KEEP_BUFFER {
            self.batch = Vec::new();
        }
        self.sent = 0;
        self.progress_at = None;
    }

    /// When the batch under way began or last made progress, if one is under way.
    pub(crate) fn stalled_since(&self) -> Option<Instant> {
        self.progress_at
    }

    /// Writes everything queued and the batch under way, each write bounded by `timeout`:
    /// the connection's last words.
    pub(crate) async fn finish(
        &mut self,
        stream: &Async<TcpStream>,
        timeout: Duration,
    ) -> Result<(), Close> {
        while self.take() {
            let mut writer = stream;
            let write = async { Some(writer.write(self.unsent()).await) };
            let stalled = async {
                Timer::after(timeout).await;
                None
            };
            match future::or(write, stalled).await {
                None => return Err(Close::WriteStalled(timeout)),
                Some(Ok(0)) => return Err(Close::WriteFailed(io::ErrorKind::WriteZero.into())),
                Some(Ok(n)) => self.sent(n),
                Some(Err(e)) => return Err(Close::WriteFailed(e)),
            }
        }
        Ok(())
    }
}
