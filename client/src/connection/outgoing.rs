//! The connection task's outgoing bytes: frames sealed in order into one buffer and written
//! with as few writes as the socket allows, which calls' frames have started to leave, and
//! the write timeout (a write that makes no progress for that long fails).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_io::Timer;
use futures_lite::io::AsyncWrite;
use futures_lite::FutureExt;
use rpckit_proto::{ClientMessage, FrameSealer, SessionError, TcpSocket};
use serde::Serialize;

/// Written bytes at the front of the buffer are dropped once there are this many and they
/// are at least half of it.
const COMPACT_AT: usize = 64 * 1024;

/// A buffer whose capacity grew past this is given back once it is written out.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why writing failed.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// The socket failed.
    Io(io::Error),
    /// No byte was taken for the write timeout.
    Stalled(Duration),
}

/// Sealed frames not yet written.
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Seals our frames (tag and sequence number).
    sealer: FrameSealer,
    /// Sealed frames; `buf[written..]` is still to be written.
    buf: Vec<u8>,
    /// How much of `buf` the socket took.
    written: usize,
    /// Calls whose frames none of has been written yet: where each frame starts, and its id.
    unstarted: VecDeque<(usize, u64)>,
    /// How long a write may go without progress.
    write_timeout: Duration,
    /// Set while the socket takes nothing: fires at the write timeout.
    stall: Option<Timer>,
    /// Whether the socket took less than everything and is being waited on; shared with the
    /// connection's handle, whose callers then keep their own deadlines.
    blocked: Arc<AtomicBool>,
}

impl Outgoing {
    /// An empty queue that seals with `sealer`, after `unwritten` bytes the handshake sealed
    /// (a call that rode with it).
    pub(crate) fn new(
        sealer: FrameSealer,
        unwritten: Vec<u8>,
        write_timeout: Duration,
        blocked: Arc<AtomicBool>,
    ) -> Self {
        Outgoing {
            sealer,
            buf: unwritten,
            written: 0,
            unstarted: VecDeque::new(),
            write_timeout,
            stall: None,
            blocked,
        }
    }

    /// Whether everything sealed has been written.
    pub(crate) fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    /// Whether a write is waiting for the socket to take more.
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Seals call `id`'s message. On error nothing is queued.
    pub(crate) fn seal_call<Req: Serialize>(
        &mut self,
        id: u64,
        message: &ClientMessage<&Req>,
    ) -> Result<(), SessionError> {
        let start = self.buf.len();
        self.sealer.push_client(&mut self.buf, message)?;
        self.unstarted.push_back((start, id));
        Ok(())
    }

    /// Seals a control message (cancel, ping, pong, goodbye).
    pub(crate) fn seal(&mut self, message: &ClientMessage<()>) -> Result<(), SessionError> {
        self.sealer.push_client(&mut self.buf, message)
    }

    /// Writes what the socket takes; `started` hears of every call whose frame began to
    /// leave. Ready once everything is written, or on failure.
    pub(crate) fn poll_write(
        &mut self,
        cx: &mut Context<'_>,
        socket: &TcpSocket,
        mut started: impl FnMut(u64),
    ) -> Poll<Result<(), WriteError>> {
        while !self.is_empty() {
            match Pin::new(&mut &*socket).poll_write(cx, &self.buf[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(WriteError::Io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.stall = None;
                    while let Some(&(start, id)) = self.unstarted.front() {
                        if start >= self.written {
                            break;
                        }
                        self.unstarted.pop_front();
                        started(id);
                    }
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(WriteError::Io(e))),
                Poll::Pending => return self.stalled(cx),
            }
        }
        self.blocked.store(false, Ordering::Relaxed);
        self.buf.clear();
        self.written = 0;
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
        Poll::Ready(Ok(()))
    }

    /// The socket is full: keeps the write timeout (counted from the last progress), and
    /// drops written bytes from a buffer that keeps growing behind a slow write.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), WriteError>> {
        self.blocked.store(true, Ordering::Relaxed);
        if self.stall.is_none() {
            self.stall = Some(Timer::after(self.write_timeout));
            if self.written >= COMPACT_AT && self.written * 2 >= self.buf.len() {
                self.buf.drain(..self.written);
                for (start, _) in &mut self.unstarted {
                    *start -= self.written;
                }
                self.written = 0;
            }
        }
        let timed_out = self.stall.as_mut().is_some_and(|t| t.poll(cx).is_ready());
        if timed_out {
            Poll::Ready(Err(WriteError::Stalled(self.write_timeout)))
        } else {
            Poll::Pending
        }
    }
}
