//! Framing: every message travels as a 4-byte big-endian length followed by exactly that many
//! bytes. This module turns a byte stream into frames whatever the chunking (one byte per read,
//! or several frames in one read) and enforces the length bounds *before* buffering a body.
//!
//! [`split_frame`] is the pure, sans-I/O core; [`FrameReader`] drives it over any
//! `futures-io` [`AsyncRead`].

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_lite::io::{AsyncRead, AsyncReadExt};

/// Size of the length prefix in front of every frame.
pub const LEN_PREFIX: usize = 4;

/// Default upper bound on a frame's length field: 8 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 8 * 1024 * 1024;

/// Read buffer size an idle or lightly used connection keeps (enough for any handshake message
/// and any small call), so that thousands of idle connections cost little memory.
const SMALL_BUFFER: usize = 512;

/// Read buffer size used once traffic arrives faster than [`SMALL_BUFFER`] can take it.
const BIG_BUFFER: usize = 64 * 1024;

/// Bounds on the length field of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Smallest accepted length field. Authenticated frames must at least hold their tag.
    pub min: u32,
    /// Largest accepted length field. Default [`DEFAULT_MAX_FRAME`].
    pub max: u32,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            min: 0,
            max: DEFAULT_MAX_FRAME,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The length field is larger than the configured limit. Raised as soon as the four length
    /// bytes have arrived, before anything of that size is allocated or read.
    #[error("frame length {len} exceeds the limit of {max} bytes")]
    TooLarge {
        /// The length the peer declared.
        len: u32,
        /// The configured limit.
        max: u32,
    },
    /// The length field is smaller than the protocol allows (see [`FrameLimits::min`]).
    #[error("frame length {len} is below the minimum of {min} bytes")]
    TooShort {
        /// The length the peer declared.
        len: u32,
        /// The minimum.
        min: u32,
    },
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({have} of {need} bytes received)")]
    Truncated {
        /// Bytes of the frame (prefix included) that arrived.
        have: usize,
        /// Bytes the frame needed.
        need: usize,
    },
    /// Buffering this frame would take the shared read-buffer budget past its limit (many
    /// large frames arriving at once); the connection is dropped rather than the process.
    #[error("read buffers of all connections would exceed the budget of {limit} bytes ({need} more needed)")]
    OverBudget {
        /// Bytes this reader asked for.
        need: usize,
        /// The budget.
        limit: usize,
    },
    /// The underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

/// A limit on the memory that the read buffers of many [`FrameReader`]s may hold together
/// beyond their small idle buffer, so that many concurrent maximum-size frames cannot exhaust
/// memory.
#[derive(Debug)]
pub struct BufferBudget {
    /// Most bytes charged at once.
    limit: usize,
    /// Bytes charged now.
    used: AtomicUsize,
}

impl BufferBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(BufferBudget {
            limit,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }
}

/// Looks for one complete frame at the start of `buf`.
///
/// Returns `Ok(Some(len))` when `buf` starts with a length prefix and all `len` body bytes
/// (the frame occupies `buf[..LEN_PREFIX + len]`, its body `buf[LEN_PREFIX..LEN_PREFIX + len]`),
/// `Ok(None)` when more bytes are needed, and an error as soon as the prefix is present and out
/// of bounds.
pub fn split_frame(buf: &[u8], limits: FrameLimits) -> Result<Option<usize>, FrameError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(*prefix);
    if len > limits.max {
        return Err(FrameError::TooLarge {
            len,
            max: limits.max,
        });
    }
    if len < limits.min {
        return Err(FrameError::TooShort {
            len,
            min: limits.min,
        });
    }
    let len = len as usize;
    Ok((buf.len() - LEN_PREFIX >= len).then_some(len))
}

/// Appends a length prefix for a body of `len` bytes.
///
/// # Panics
/// If `len` does not fit in `u32`; callers bound bodies by the frame limit first.
pub fn push_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).expect("frame bodies are bounded by a u32 limit");
    out.extend_from_slice(&len.to_be_bytes());
}

/// Reads frames from a byte stream, buffering what it has read beyond the current frame.
///
/// Every complete frame already buffered is returned before the stream is read again. The
/// buffer starts small, grows only to hold a frame the limits allow, and is given back once a
/// burst of traffic has been drained, so idle connections stay cheap.
///
/// Cancel safety: dropping a pending [`FrameReader::next_frame`] loses nothing; the next call
/// resumes where it stopped.
#[derive(Debug)]
pub struct FrameReader<R> {
    /// The byte stream.
    io: R,
    /// Storage; `buf[start..end]` holds bytes read but not yet consumed.
    buf: Vec<u8>,
    /// Start of unconsumed bytes.
    start: usize,
    /// End of valid bytes.
    end: usize,
    /// Length (prefix included) of the frame handed out by the last `next_frame`, consumed at
    /// the start of the next call.
    pending: usize,
    /// Size of the last read, to tell a burst (keep the big buffer) from a trickle.
    last_read: usize,
    /// Length bounds.
    limits: FrameLimits,
    /// Shared budget that buffers larger than the small one are charged to, if any.
    budget: Option<Arc<BufferBudget>>,
    /// Bytes of `buf` charged to the budget.
    charged: usize,
}

impl<R> Drop for FrameReader<R> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.give(self.charged);
        }
    }
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Wraps `io` with the given limits.
    pub fn new(io: R, limits: FrameLimits) -> Self {
        FrameReader {
            io,
            buf: Vec::new(),
            start: 0,
            end: 0,
            pending: 0,
            last_read: 0,
            limits,
            budget: None,
            charged: 0,
        }
    }

    /// Charges buffers larger than the small idle one to `budget` from now on.
    pub fn set_budget(&mut self, budget: Arc<BufferBudget>) {
        if let Some(old) = self.budget.take() {
            old.give(std::mem::take(&mut self.charged));
        }
        self.budget = Some(budget);
    }

    /// The current limits.
    pub fn limits(&self) -> FrameLimits {
        self.limits
    }

    /// Changes the limits for the frames that follow (the handshake uses small ones).
    pub fn set_limits(&mut self, limits: FrameLimits) {
        self.limits = limits;
    }

    /// Bytes read from the stream and not yet consumed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start + self.pending..self.end]
    }

    /// Whether a complete frame is already buffered (so `next_frame` will not touch the stream).
    pub fn has_complete_frame(&self) -> bool {
        matches!(split_frame(self.buffered(), self.limits), Ok(Some(_)))
    }

    /// Reads the next frame and returns its body.
    ///
    /// `Ok(None)` means the stream ended cleanly at a frame boundary.
    pub async fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        Ok(self.next_frame_mut().await?.map(|body| &*body))
    }

    /// [`FrameReader::next_frame`], with the body writable in place (to decrypt it).
    pub async fn next_frame_mut(&mut self) -> Result<Option<&mut [u8]>, FrameError> {
        self.consume_pending();
        let body = loop {
            let have = self.end - self.start;
            match split_frame(&self.buf[self.start..self.end], self.limits)? {
                Some(len) => {
                    self.pending = LEN_PREFIX + len;
                    break self.start + LEN_PREFIX..self.start + LEN_PREFIX + len;
                }
                None => {
                    let need = match self.buf[self.start..self.end].first_chunk::<LEN_PREFIX>() {
                        Some(prefix) => LEN_PREFIX + u32::from_be_bytes(*prefix) as usize,
                        None => LEN_PREFIX,
                    };
                    if !self.read_more(need).await? {
                        if have == 0 {
                            return Ok(None);
                        }
                        return Err(FrameError::Truncated { have, need });
                    }
                }
            }
        };
        Ok(Some(&mut self.buf[body]))
    }

    /// Makes sure at least `n` unconsumed bytes are buffered, reading as needed.
    ///
    /// Returns `Ok(false)` if the stream ended first. Used by the handshake, whose messages are
    /// fixed-layout rather than framed.
    pub(crate) async fn fill(&mut self, n: usize) -> Result<bool, FrameError> {
        self.consume_pending();
        while self.end - self.start < n {
            if !self.read_more(n).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Consumes `n` buffered bytes (after [`FrameReader::fill`]).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    fn consume_pending(&mut self) {
        let n = std::mem::take(&mut self.pending);
        self.consume(n);
    }

    /// Reads once from the stream so that a message of `need` bytes (counted from `start`) fits.
    /// Returns `Ok(false)` at end of stream.
    async fn read_more(&mut self, need: usize) -> Result<bool, FrameError> {
        self.make_room(need)?;
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        self.last_read = n;
        Ok(n > 0)
    }

    /// Arranges storage so that `need` bytes from `start` fit, and at least one byte can be read.
    fn make_room(&mut self, need: usize) -> Result<(), FrameError> {
        let have = self.end - self.start;
        if have == 0 && self.buf.len() > SMALL_BUFFER && self.last_read < SMALL_BUFFER {
            // The burst is over: give the big buffer back.
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
            self.recharge(0)?;
        }
        let want = need.max(have + 1);
        if self.start + want <= self.buf.len() {
            return Ok(());
        }
        if want <= self.buf.len() {
            // Enough room if the unconsumed bytes move to the front.
            self.buf.copy_within(self.start..self.end, 0);
        } else {
            let size = if self.buf.is_empty() && want <= SMALL_BUFFER {
                SMALL_BUFFER
            } else {
                want.max(BIG_BUFFER)
            };
            self.recharge(size)?;
            let mut grown = vec![0u8; size];
            grown[..have].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = grown;
        }
        self.start = 0;
        self.end = have;
        Ok(())
    }

    /// Moves the budget charge to what a buffer of `size` bytes costs (nothing if small).
    fn recharge(&mut self, size: usize) -> Result<(), FrameError> {
        let Some(budget) = &self.budget else {
            return Ok(());
        };
        let cost = if size > SMALL_BUFFER { size } else { 0 };
        if cost > self.charged {
            if !budget.try_take(cost - self.charged) {
                return Err(FrameError::OverBudget {
                    need: cost - self.charged,
                    limit: budget.limit,
                });
            }
        } else {
            budget.give(self.charged - cost);
        }
        self.charged = cost;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    /// A reader that hands out its data in fixed-size chunks.
    struct Chunked {
        data: Vec<u8>,
        pos: usize,
        chunk: usize,
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = self.chunk.min(buf.len()).min(self.data.len() - self.pos);
            let pos = self.pos;
            buf[..n].copy_from_slice(&self.data[pos..pos + n]);
            self.pos += n;
            std::task::Poll::Ready(Ok(n))
        }
    }

    fn framed(bodies: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for body in bodies {
            push_len(&mut out, body.len());
            out.extend_from_slice(body);
        }
        out
    }

    fn read_all(
        data: Vec<u8>,
        chunk: usize,
        limits: FrameLimits,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        block_on(async {
            let mut reader = FrameReader::new(
                Chunked {
                    data,
                    pos: 0,
                    chunk,
                },
                limits,
            );
            let mut frames = Vec::new();
            while let Some(body) = reader.next_frame().await? {
                frames.push(body.to_vec());
            }
            Ok(frames)
        })
    }

    #[test]
    fn every_chunking_gives_the_same_frames() {
        let big = vec![7u8; 70_000];
        let bodies: Vec<&[u8]> = vec![b"hello", b"", b"x", &big, b"world"];
        let data = framed(&bodies);
        for chunk in [
            1,
            2,
            3,
            4,
            5,
            7,
            64,
            511,
            512,
            513,
            4096,
            70_003,
            data.len(),
        ] {
            let frames = read_all(data.clone(), chunk, FrameLimits::default()).unwrap();
            assert_eq!(frames, bodies, "chunk size {chunk}");
        }
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let bodies: Vec<&[u8]> = vec![b"first frame", b"second", b"third!"];
        let data = framed(&bodies);
        for cut in 0..=data.len() {
            let (a, b) = data.split_at(cut);
            let frames = block_on(async {
                let stream = futures_lite::io::AsyncReadExt::chain(
                    Cursor::new(a.to_vec()),
                    Cursor::new(b.to_vec()),
                );
                let mut reader = FrameReader::new(stream, FrameLimits::default());
                let mut frames = Vec::new();
                while let Some(body) = reader.next_frame().await.unwrap() {
                    frames.push(body.to_vec());
                }
                frames
            });
            assert_eq!(frames, bodies, "cut at {cut}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_before_the_body() {
        // 0xFFFFFFFF with no body: rejected from the 4 prefix bytes alone.
        let err = read_all(vec![0xFF; 4], 1, FrameLimits::default()).unwrap_err();
        assert!(matches!(
            err,
            FrameError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_FRAME
            }
        ));
        // max + 1.
        let limits = FrameLimits { min: 0, max: 100 };
        let err = read_all(101u32.to_be_bytes().to_vec(), 4, limits).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 101, max: 100 }));
        // "GET " read as a length.
        let err = read_all(b"GET / HTTP/1.1\r\n".to_vec(), 16, FrameLimits::default()).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { .. }));
    }

    #[test]
    fn exactly_max_is_accepted() {
        let limits = FrameLimits { min: 0, max: 100 };
        let body = vec![1u8; 100];
        let frames = read_all(framed(&[&body]), 33, limits).unwrap();
        assert_eq!(frames, vec![body]);
    }

    #[test]
    fn below_min_is_rejected() {
        let limits = FrameLimits { min: 32, max: 100 };
        let err = read_all(framed(&[b"short"]), 64, limits).unwrap_err();
        assert!(matches!(err, FrameError::TooShort { len: 5, min: 32 }));
    }

    #[test]
    fn truncated_frame_is_an_error_and_clean_end_is_none() {
        let mut data = framed(&[b"complete", b"cut short"]);
        data.truncate(data.len() - 3);
        let err = read_all(data, 5, FrameLimits::default()).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { have: 10, need: 13 }));
        let err = read_all(vec![0, 0], 5, FrameLimits::default()).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { have: 2, need: 4 }));
        assert!(read_all(Vec::new(), 5, FrameLimits::default())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn buffers_are_charged_to_the_shared_budget() {
        block_on(async {
            let budget = BufferBudget::new(100_000);
            let big = vec![1u8; 70_000];
            let mut first = FrameReader::new(
                Chunked {
                    data: framed(&[&big, b"x"]),
                    pos: 0,
                    chunk: 100_000,
                },
                FrameLimits::default(),
            );
            first.set_budget(budget.clone());
            assert_eq!(first.next_frame().await.unwrap().unwrap().len(), 70_000);
            assert!(budget.used() >= 70_000);
            // A second large frame at the same time does not fit.
            let mut second = FrameReader::new(
                Chunked {
                    data: framed(&[&big]),
                    pos: 0,
                    chunk: 100_000,
                },
                FrameLimits::default(),
            );
            second.set_budget(budget.clone());
            assert!(matches!(
                second.next_frame().await,
                Err(FrameError::OverBudget { .. })
            ));
            drop(first);
            drop(second);
            assert_eq!(budget.used(), 0);
        });
    }

    #[test]
    fn buffer_shrinks_after_a_burst() {
        block_on(async {
            let big = vec![1u8; 200_000];
            let data = framed(&[&big, b"small"]);
            let mut reader = FrameReader::new(
                Chunked {
                    data,
                    pos: 0,
                    chunk: 100,
                },
                FrameLimits::default(),
            );
            assert_eq!(reader.next_frame().await.unwrap().unwrap().len(), 200_000);
            assert_eq!(reader.next_frame().await.unwrap().unwrap(), b"small");
            assert!(reader.next_frame().await.unwrap().is_none());
            assert!(reader.buf.len() <= SMALL_BUFFER);
        });
    }
}
