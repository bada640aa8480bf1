//! An authenticated session: what both sides hold after the handshake, used to read and write
//! frames whose integrity and order are protected by a tag.
//!
//! Every frame after the handshake is `length (u32 BE) | payload | tag (32 bytes)`, where
//! `tag = HMAC-SHA256(direction key, seq (u64 BE) | payload)` and `seq` counts the frames sent
//! in that direction from 0. Both sides count, so a frame that is injected, replayed,
//! reordered, altered or dropped fails the tag check of the next frame. The tag is checked
//! before the payload is decoded; a frame that fails it ends the session. Bodies are *not*
//! encrypted.

use std::io;

use futures_lite::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use hmac::{KeyInit, Mac};
use serde::Serialize;

use crate::codec::EncodeError;
use crate::frame::{self, FrameError, FrameLimits, FrameReader, LEN_PREFIX};
use crate::keyring::KeyId;
use crate::message::{self, ClientMessage, ServerMessage};

/// Length of the tag at the end of every authenticated frame.
pub const TAG_LEN: usize = 32;

/// Output buffers larger than this are given back after a flush.
const KEEP_WRITE_BUFFER: usize = 64 * 1024;

pub(crate) type HmacSha256 = hmac::Hmac<sha2::Sha256>;

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
    /// 2^64 frames were sent or received in one direction; the session must end.
    #[error("sequence number exhausted")]
    SequenceExhausted,
    /// A message could not be encoded within the frame limit.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Writing failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// Computes tags for one direction: a pre-keyed HMAC state cloned per frame, and the counter.
#[derive(Clone)]
pub(crate) struct Tagger {
    /// HMAC-SHA256 keyed with the direction's session key.
    mac: HmacSha256,
    /// Sequence number of the next frame.
    seq: u64,
}

impl Tagger {
    pub(crate) fn new(key: &[u8; 32]) -> Self {
        Tagger {
            // HMAC accepts keys of any length, so this cannot fail.
            mac: <HmacSha256 as KeyInit>::new_from_slice(key).expect("HMAC takes any key length"),
            seq: 0,
        }
    }

    fn state(&self, payload: &[u8]) -> HmacSha256 {
        let mut mac = self.mac.clone();
        mac.update(&self.seq.to_be_bytes());
        mac.update(payload);
        mac
    }

    fn advance(&mut self) -> Result<(), SessionError> {
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(SessionError::SequenceExhausted)?;
        Ok(())
    }

    /// Tag for `payload` at the current sequence number; advances the counter.
    pub(crate) fn seal(&mut self, payload: &[u8]) -> Result<[u8; TAG_LEN], SessionError> {
        let tag = self.state(payload).finalize().into_bytes();
        self.advance()?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Checks `payload | tag` (constant-time) and returns the payload; advances the counter.
    pub(crate) fn open<'a>(&mut self, body: &'a [u8]) -> Result<&'a [u8], SessionError> {
        let seq = self.seq;
        let split = body
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(SessionError::BadTag { seq })?;
        let (payload, tag) = body.split_at(split);
        self.state(payload)
            .verify_slice(tag)
            .map_err(|_| SessionError::BadTag { seq })?;
        self.advance()?;
        Ok(payload)
    }
}

impl std::fmt::Debug for Tagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tagger")
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

/// The receiving half of a session: reads frames and checks their tags.
#[derive(Debug)]
pub struct SessionReader<R> {
    /// Frames from the peer.
    frames: FrameReader<R>,
    /// Verifies the peer's tags.
    tags: Tagger,
}

impl<R: AsyncRead + Unpin> SessionReader<R> {
    pub(crate) fn new(mut frames: FrameReader<R>, key: &[u8; 32], max_frame: u32) -> Self {
        frames.set_limits(FrameLimits {
            min: TAG_LEN as u32,
            max: max_frame,
        });
        SessionReader {
            frames,
            tags: Tagger::new(key),
        }
    }

    /// Reads the next frame, checks its tag, and returns its payload.
    ///
    /// `Ok(None)`: the peer closed the stream at a frame boundary (without a goodbye, which
    /// the caller should treat as an unauthenticated close). Cancel-safe.
    pub async fn recv(&mut self) -> Result<Option<&[u8]>, SessionError> {
        match self.frames.next_frame().await? {
            None => Ok(None),
            Some(body) => self.tags.open(body).map(Some),
        }
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

/// Encodes messages into tagged frames appended to a caller's buffer, counting sequence
/// numbers: the sending half of a session without the stream, for writers that manage their
/// own buffering and flushing.
///
/// Frames must reach the peer in the order they were sealed.
#[derive(Debug)]
pub struct FrameSealer {
    /// Tags our frames.
    tags: Tagger,
    /// Largest frame (length field) we may send.
    max_frame: u32,
}

impl FrameSealer {
    /// Appends one frame whose payload `encode` writes within the given byte limit. On error
    /// `out` is left as it was.
    fn push(
        &mut self,
        out: &mut Vec<u8>,
        encode: impl FnOnce(&mut Vec<u8>, u64) -> Result<(), EncodeError>,
    ) -> Result<(), SessionError> {
        let start = out.len();
        frame::push_len(out, 0);
        let payload_start = out.len();
        let limit = u64::from(self.max_frame).saturating_sub(TAG_LEN as u64);
        if let Err(e) = encode(out, limit) {
            out.truncate(start);
            return Err(e.into());
        }
        let tag = match self.tags.seal(&out[payload_start..]) {
            Ok(tag) => tag,
            Err(e) => {
                out.truncate(start);
                return Err(e);
            }
        };
        out.extend_from_slice(&tag);
        let len = (out.len() - payload_start) as u32;
        out[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }

    /// Appends a client message to `out` as one tagged frame.
    pub fn push_client<Req: Serialize>(
        &mut self,
        out: &mut Vec<u8>,
        msg: &ClientMessage<Req>,
    ) -> Result<(), SessionError> {
        self.push(out, |out, limit| message::encode_client(out, msg, limit))
    }

    /// Appends a server message to `out` as one tagged frame.
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
}

impl<W> SessionWriter<W> {
    /// Splits into the sealer, the stream and any bytes sealed but not yet written (which
    /// must be written before anything sealed later).
    pub fn into_parts(self) -> (FrameSealer, W, Vec<u8>) {
        (self.sealer, self.io, self.buf)
    }
}

impl<W: AsyncWrite + Unpin> SessionWriter<W> {
    pub(crate) fn new(io: W, key: &[u8; 32], max_frame: u32, pending: Vec<u8>) -> Self {
        SessionWriter {
            io,
            sealer: FrameSealer {
                tags: Tagger::new(key),
                max_frame,
            },
            buf: pending,
        }
    }

    /// Queues a client message as one tagged frame (written on the next flush).
    pub fn push_client<Req: Serialize>(
        &mut self,
        msg: &ClientMessage<Req>,
    ) -> Result<(), SessionError> {
        self.sealer.push_client(&mut self.buf, msg)
    }

    /// Queues a server message as one tagged frame (written on the next flush).
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
    pub async fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
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
mod tests {
    use super::*;

    fn frame_of(tags: &mut Tagger, payload: &[u8]) -> Vec<u8> {
        let mut body = payload.to_vec();
        body.extend_from_slice(&tags.seal(payload).unwrap());
        body
    }

    #[test]
    fn tampered_replayed_and_reordered_frames_fail() {
        let key = [7u8; 32];
        let mut tx = Tagger::new(&key);
        let f0 = frame_of(&mut tx, b"zero");
        let f1 = frame_of(&mut tx, b"one");
        let f2 = frame_of(&mut tx, b"two");

        // In order: fine.
        let mut rx = Tagger::new(&key);
        assert_eq!(rx.open(&f0).unwrap(), b"zero");
        assert_eq!(rx.open(&f1).unwrap(), b"one");

        // Replay of f1 after f1.
        assert!(matches!(
            rx.clone().open(&f1),
            Err(SessionError::BadTag { seq: 2 })
        ));

        // Reordered: f1 first.
        let mut rx = Tagger::new(&key);
        assert!(rx.open(&f1).is_err());

        // Dropped: f0 then f2.
        let mut rx = Tagger::new(&key);
        rx.open(&f0).unwrap();
        assert!(rx.open(&f2).is_err());

        // Tampered payload or tag.
        for i in 0..f0.len() {
            let mut bad = f0.clone();
            bad[i] ^= 0x01;
            assert!(Tagger::new(&key).open(&bad).is_err(), "flip at byte {i}");
        }

        // Another key.
        assert!(Tagger::new(&[8u8; 32]).open(&f0).is_err());

        // Too short to hold a tag.
        assert!(Tagger::new(&key).open(&[0u8; 31]).is_err());
    }
}
