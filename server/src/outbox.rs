//! A connection's outgoing side. Whoever produces a message — the read loop or a call task —
//! encodes and tags it straight into one shared buffer; whoever then finds no write in
//! progress writes the buffer out, and keeps writing until it is empty. Replies that are ready
//! together leave in one write, and a fast call costs no task switch on the way out.
//!
//! The buffer is bounded: if `max_queued` messages pile up while a write cannot make progress,
//! the client is not reading what it asked for, and the connection is failed.

use std::io;
use std::net::Shutdown;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_std::net::TcpStream;
use futures_lite::io::AsyncWriteExt;
use futures_lite::FutureExt;
use rpckit_proto::{FrameSealer, RpcError, ServerMessage, SessionError};
use serde::Serialize;

/// Buffers larger than this are given back once written.
const KEEP_BUFFER: usize = 16 * 1024;
/// The read loop writes out what it has queued once this much is waiting, even mid-burst.
pub(crate) const FLUSH_BYTES: usize = 64 * 1024;

/// Why the outbox refused a message.
#[derive(Debug, Clone)]
pub(crate) enum OutboxError {
    /// Too many messages wait for a write that makes no progress: the client is not reading.
    NotReading(usize),
    /// Writing failed or timed out, or the connection is closing.
    Closed(String),
}

impl std::fmt::Display for OutboxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OutboxError::NotReading(n) => write!(f, "client is not reading: {n} messages queued"),
            OutboxError::Closed(why) => f.write_str(why),
        }
    }
}

struct State {
    /// Seals frames in sequence order (the order they enter `pending`).
    sealer: FrameSealer,
    /// Frames sealed and not yet taken by a writer.
    pending: Vec<u8>,
    /// An empty buffer to swap in when a writer takes `pending`.
    spare: Vec<u8>,
    /// Messages in `pending`.
    queued: usize,
    /// Whether a writer is writing.
    writing: bool,
    /// Set once the outbox can no longer write.
    failed: Option<OutboxError>,
}

/// The outgoing side of one connection.
pub(crate) struct Outbox {
    state: Mutex<State>,
    stream: TcpStream,
    write_timeout: Duration,
    max_queued: usize,
}

impl Outbox {
    pub(crate) fn new(
        sealer: FrameSealer,
        stream: TcpStream,
        write_timeout: Duration,
        max_queued: usize,
    ) -> Self {
        Outbox {
            state: Mutex::new(State {
                sealer,
                pending: Vec::new(),
                spare: Vec::new(),
                queued: 0,
                writing: false,
                failed: None,
            }),
            stream,
            write_timeout,
            max_queued: max_queued.max(1),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding this lock; a poisoned lock still holds valid buffers.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seals `message` into the buffer (it leaves on the next flush). A reply too large for a
    /// frame becomes an `Internal` error for its call.
    pub(crate) fn push<R: Serialize>(&self, message: &ServerMessage<R>) -> Result<(), OutboxError> {
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
        match st.sealer.push_server(&mut st.pending, message) {
            Ok(()) => {}
            Err(SessionError::Encode(e)) => {
                let ServerMessage::Reply { id, .. } = message else {
                    return Err(OutboxError::Closed(format!("cannot encode message: {e}")));
                };
                let error = RpcError::Internal(format!("response cannot be sent: {e}"));
                st.sealer
                    .push_server(
                        &mut st.pending,
                        &ServerMessage::<R>::Reply {
                            id: *id,
                            result: Err(error),
                        },
                    )
                    .map_err(|e| OutboxError::Closed(format!("cannot encode error reply: {e}")))?;
            }
            Err(e) => return Err(OutboxError::Closed(format!("cannot send: {e}"))),
        }
        st.queued += 1;
        Ok(())
    }

    /// Bytes waiting to be written.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.state().pending.len()
    }

    /// Writes everything sealed so far, unless a write is already under way (that writer
    /// picks it up). Fails the outbox, and shuts the socket, if a write fails or makes no
    /// progress within the write timeout.
    pub(crate) async fn flush(&self) -> Result<(), OutboxError> {
        loop {
            let mut batch = {
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
                batch
            };
            let written = self.write(&batch).await;
            batch.clear();
            let mut st = self.state();
            st.writing = false;
            if batch.capacity() <= KEEP_BUFFER {
                st.spare = batch;
            }
            if let Err(e) = written {
                let error = OutboxError::Closed(e);
                st.failed = Some(error.clone());
                drop(st);
                let _ = self.stream.shutdown(Shutdown::Both);
                return Err(error);
            }
        }
    }

    async fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let mut stream = &self.stream;
        let timeout = self.write_timeout;
        stream
            .write_all(bytes)
            .or(async {
                async_io::Timer::after(timeout).await;
                Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out"))
            })
            .await
            .map_err(|e| {
                if e.kind() == io::ErrorKind::TimedOut {
                    format!("client stopped reading: no write progress within {timeout:?}")
                } else {
                    format!("write failed: {e}")
                }
            })
    }

    /// Refuses further messages (the connection is closing).
    pub(crate) fn close(&self) {
        let mut st = self.state();
        if st.failed.is_none() {
            st.failed = Some(OutboxError::Closed("connection closed".into()));
        }
    }
}
