//! An authenticated session: what both sides hold after the handshake, used to read and write
//! frames whose integrity and order are protected, and under suites 2 and 3 also their
//! contents.
//!
//! Every frame after the handshake is `length (u32 BE) | payload | tag`. Under suite 1
//! ([`integrity`]) the payload is in clear and `tag = HMAC-SHA256(direction key, seq (u64 BE)
//! | payload)`; under suites 2 and 3 ([`aead`]) the payload is encrypted with an AEAD whose
//! nonce is the direction's IV XOR `seq` and whose associated data is the length header.
//! `seq` counts the frames sent in that direction from 0 ([`direction`]). Both sides count,
//! so a frame that is injected, replayed, reordered, altered or dropped fails the check of the
//! next frame. The check comes before the payload is decoded; a frame that fails it ends the
//! session.

pub mod aead;
mod direction;
pub mod integrity;

use std::io;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use serde::Serialize;

use crate::codec::EncodeError;
use crate::frame::{self, FrameError, FrameLimits, FrameReader};
use crate::keyring::KeyId;
use crate::message::{self, ClientMessage, ServerMessage};
use crate::suite::Suite;

pub(crate) use direction::{Direction, DirectionKey};
pub(crate) use integrity::HmacSha256;
pub use integrity::TAG_LEN;

/// Output buffers larger than this are given back after a flush.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

/// Why a session could not go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// Reading a frame failed (bad length, truncated, I/O).
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A frame's tag did not verify: it was altered, injected, replayed, reordered, or one
    /// before it was dropped.
    #[error("frame {seq} failed authentication (altered, replayed, reordered or injected)")]
    BadTag {
        /// The sequence number the frame was checked against.
        seq: u64,
    },
    /// 2^64 - 1 frames were sent or received in one direction; the session must end rather
    /// than reuse a sequence number (an AEAD nonce).
    #[error("sequence number exhausted")]
    SequenceExhausted,
    /// The direction's key has sealed as much as its suite safely allows
    /// ([`crate::KeyLimits`]); the session must end and a new one be made.
    #[error("the session key reached its usage limit; reconnect for new keys")]
    KeyLimitReached,
    /// Sealing or opening failed earlier in this direction; nothing more is sealed or opened.
    #[error("the session failed earlier in this direction")]
    Poisoned,
    /// A message could not be encoded within the frame limit.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// The receiving half of a session: reads frames, checks their tags (and decrypts them).
#[derive(Debug)]
pub struct SessionReader<R> {
    /// Frames from the peer.
    frames: FrameReader<R>,
    /// Checks (and opens) the peer's frames.
    opener: Direction,
}

impl<R: AsyncRead + Unpin> SessionReader<R> {
    pub(crate) fn with_direction(
        mut frames: FrameReader<R>,
        opener: Direction,
        max_frame: u32,
    ) -> Self {
        frames.set_limits(FrameLimits {
            min: opener.overhead() as u32,
            max: max_frame,
        });
        SessionReader { frames, opener }
    }

    /// Reads the next frame, checks its tag (decrypting it under an encrypting suite), and
    /// returns its payload.
    ///
    /// `Ok(None)`: the peer closed the stream at a frame boundary (without a goodbye, which
    /// the caller should treat as an unauthenticated close). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<&[u8]>, SessionError> {
        match self.frames.next_frame_mut().await? {
            None => Ok(None),
            Some(body) => self.opener.open(body).map(Some),
        }
    }

    /// The suite protecting the frames.
    pub fn suite(&self) -> Suite {
        self.opener.suite()
    }

    /// Bytes each frame takes on the wire beyond the payload [`SessionReader::recv`]
    /// returns: the length prefix and the tag.
    pub fn frame_overhead(&self) -> usize {
        crate::frame::LEN_PREFIX + self.opener.overhead()
    }

    /// Whether the peer's key has used half of its limits ([`crate::KeyLimits`]): the
    /// connection should be drained and replaced before frames start failing with
    /// [`SessionError::KeyLimitReached`].
    pub fn should_rekey(&self) -> bool {
        self.opener.should_rekey()
    }

    /// Charges this reader's large buffers to a budget shared with other connections.
    pub fn set_budget(&mut self, budget: std::sync::Arc<crate::frame::BufferBudget>) {
        self.frames.set_budget(budget);
    }

    /// Whether a complete frame is already buffered, so `recv` will not wait on the peer.
    pub fn has_buffered_frame(&self) -> bool {
        self.frames.has_complete_frame()
    }

    /// The largest frame accepted.
    pub fn max_frame(&self) -> u32 {
        self.frames.limits().max
    }
}

/// Encodes messages into protected frames appended to a caller's buffer, counting sequence
/// numbers: the sending half of a session without the stream, for writers that manage their
/// own buffering and flushing.
///
/// Frames must reach the peer in the order they were sealed. A sealer is not `Clone` (a copy
/// would reuse sequence numbers, under an AEAD nonces), and once sealing fails (sequence
/// number or key limit reached) it seals nothing more:
///
/// ```compile_fail
/// fn copy(sealer: &rpckit_proto::FrameSealer) -> rpckit_proto::FrameSealer {
///     sealer.clone()
/// }
/// ```
#[derive(Debug)]
pub struct FrameSealer {
    /// Protects our frames.
    sealer: Direction,
    /// Largest frame (length field) we may send.
    max_frame: u32,
}

impl FrameSealer {
    pub(crate) fn new(sealer: Direction, max_frame: u32) -> Self {
        FrameSealer { sealer, max_frame }
    }

    /// Appends one frame whose payload `encode` writes within the given byte limit. On error
    /// `out` is left as it was; an encoding error (a message too large) leaves the sealer
    /// usable, a sealing error poisons it.
    fn push(
        &mut self,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<(), EncodeError>,
    ) -> Result<(), SessionError> {
        let start = out.len();
        frame::push_len(out, 0);
        let limit = u64::from(self.max_frame).saturating_sub(self.sealer.overhead() as u64);
        if let Err(e) = encode(out, limit) {
            out.truncate(start);
            return Err(e.into());
        }
        self.sealer.seal(out, start)
    }

    /// Appends a client message to `out` as one protected frame.
    pub fn push_client<Req: Serialize>(
        &mut self,
        out: &mut Vec<u8>,
        msg: &ClientMessage<Req>,
    ) -> Result<(), SessionError> {
        self.push(out, |out, limit| message::encode_client(out, msg, limit))
    }

    /// Appends a server message to `out` as one protected frame.
    pub fn push_server<Resp: Serialize>(
        &mut self,
        out: &mut Vec<u8>,
        msg: &ServerMessage<Resp>,
    ) -> Result<(), SessionError> {
        self.push(out, |out, limit| message::encode_server(out, msg, limit))
    }

    /// The largest frame we may send.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// The suite protecting the frames.
    pub fn suite(&self) -> Suite {
        self.sealer.suite()
    }

    /// Whether our key has used half of its limits ([`crate::KeyLimits`]): the connection
    /// should be drained and replaced (a new handshake makes new keys) before sealing fails
    /// with [`SessionError::KeyLimitReached`].
    pub fn should_rekey(&self) -> bool {
        self.sealer.should_rekey()
    }

    /// Starts the sequence number at `seq`, to reach its end in a test.
    #[cfg(test)]
    pub(crate) fn set_seq(&mut self, seq: u64) {
        self.sealer.set_seq(seq);
    }
}

/// The sending half of a session: encodes messages into tagged frames in a buffer, and writes
/// the buffer out in one go on [`SessionWriter::flush`].
#[derive(Debug)]
pub struct SessionWriter<W> {
    /// The byte stream.
    io: W,
    /// Seals our frames.
    sealer: FrameSealer,
    /// Frames encoded and not yet written.
    buf: Vec<u8>,
    /// A write failed: the stream is at an unknown point, nothing more is written.
    failed: bool,
}

impl<W> SessionWriter<W> {
    /// Splits into the sealer, the stream and any bytes sealed but not yet written (which
    /// must be written before anything sealed later).
    pub fn into_parts(self) -> (FrameSealer, W, Vec<u8>) {
        (self.sealer, self.io, self.buf)
    }
}

impl<W: AsyncWrite + Unpin> SessionWriter<W> {
    /// A suite-1 writer keyed with `key` (tests build sessions by hand with it).
    #[cfg(test)]
    pub(crate) fn new(io: W, key: &[u8; 32], max_frame: u32, pending: Vec<u8>) -> Self {
        let direction = Direction::new(&DirectionKey::hmac(key), crate::KeyLimits::UNLIMITED);
        Self::with_direction(io, direction, max_frame, pending)
    }

    pub(crate) fn with_direction(
        io: W,
        sealer: Direction,
        max_frame: u32,
        pending: Vec<u8>,
    ) -> Self {
        SessionWriter {
            io,
            sealer: FrameSealer::new(sealer, max_frame),
            buf: pending,
            failed: false,
        }
    }

    /// Queues a client message as one protected frame (written on the next flush).
    pub fn push_client<Req: Serialize>(
        &mut self,
        msg: &ClientMessage<Req>,
    ) -> Result<(), SessionError> {
        self.sealer.push_client(&mut self.buf, msg)
    }

    /// Queues a server message as one protected frame (written on the next flush).
    pub fn push_server<Resp: Serialize>(
        &mut self,
        msg: &ServerMessage<Resp>,
    ) -> Result<(), SessionError> {
        self.sealer.push_server(&mut self.buf, msg)
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Writes everything queued with as few writes as the stream allows, then flushes.
    ///
    /// A write that fails leaves the stream at an unknown point of a frame: the writer then
    /// drops what it had queued and fails every later flush, rather than write it again.
    pub async fn flush(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write of this session failed"));
        }
        if !self.buf.is_empty() {
            if let Err(e) = self.io.write_all(&self.buf).await {
                self.failed = true;
                self.buf = Vec::new();
                return Err(e);
            }
            self.buf.clear();
            if self.buf.capacity() > KEEP_WRITE_BUFFER {
                self.buf = Vec::new();
            }
        }
        self.io.flush().await
    }

    /// Closes the write side of the stream.
    pub async fn close(&mut self) -> io::Result<()> {
        self.io.close().await
    }

    /// The largest frame we may send.
    pub fn max_frame(&self) -> u32 {
        self.sealer.max_frame
    }

    /// The suite protecting the frames.
    pub fn suite(&self) -> Suite {
        self.sealer.suite()
    }

    /// See [`FrameSealer::should_rekey`].
    pub fn should_rekey(&self) -> bool {
        self.sealer.should_rekey()
    }
}

/// Both halves of an authenticated session and the key id the client proved.
#[derive(Debug)]
pub struct Session<R, W> {
    /// Receiving half.
    pub reader: SessionReader<R>,
    /// Sending half.
    pub writer: SessionWriter<W>,
    /// The key id the client authenticated with.
    pub key_id: KeyId,
}

impl<R, W> Session<R, W> {
    /// Splits the session so that reading and writing can happen in different tasks.
    pub fn split(self) -> (SessionReader<R>, SessionWriter<W>) {
        (self.reader, self.writer)
    }
}

#[cfg(test)]
mod tests;
