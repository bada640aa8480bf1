//! The read half of a raw-protocol connection: one growing buffer, frames handed out by range.

use async_std::io::ReadExt;
use async_std::net::TcpStream;

use super::MAX_FRAME;
use crate::BenchError;

/// Smallest read buffer allocated.
const MIN_READ_BUFFER: usize = 4 * 1024;

/// Read half of a connection with its frame buffer.
pub(super) struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unconsumed data is `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Reader {
    /// A reader with an empty buffer.
    pub(super) fn new(stream: TcpStream) -> Self {
        Reader {
            stream,
            buf: Vec::new(),
            start: 0,
            end: 0,
        }
    }

    /// The bytes of a frame payload returned by [`Reader::next_frame`], until the next read.
    pub(super) fn frame(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads until a whole frame is buffered; returns its payload's range in `buf` and consumes it.
    pub(super) async fn next_frame(&mut self) -> Result<std::ops::Range<usize>, BenchError> {
        loop {
            let avail = self.end - self.start;
            if avail >= 4 {
                let mut header = [0u8; 4];
                header.copy_from_slice(&self.buf[self.start..self.start + 4]);
                let len = u32::from_be_bytes(header) as usize;
                if len > MAX_FRAME {
                    return Err(BenchError::new(
                        "bad_response_length",
                        format!("response frame of {len} bytes exceeds {MAX_FRAME}"),
                    ));
                }
                if avail >= 4 + len {
                    let payload = self.start + 4..self.start + 4 + len;
                    self.start += 4 + len;
                    if self.start == self.end {
                        self.start = 0;
                        self.end = 0;
                    }
                    return Ok(payload);
                }
                self.make_room(4 + len);
            } else {
                self.make_room(4);
            }
            let n = self
                .stream
                .read(&mut self.buf[self.end..])
                .await
                .map_err(|e| BenchError::io("io", &e))?;
            if n == 0 {
                return Err(BenchError::new(
                    "connection_closed",
                    "server closed the connection before answering",
                ));
            }
            self.end += n;
        }
    }

    /// Makes sure a frame of `frame_len` bytes fits from `start` and there is room to read.
    fn make_room(&mut self, frame_len: usize) {
        if self.start + frame_len <= self.buf.len() && self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if frame_len > self.buf.len() || self.end == self.buf.len() {
            // Room for two frames, so pipelined answers rarely need moving.
            let new_len = frame_len
                .saturating_mul(2)
                .max(self.end + 1)
                .max(MIN_READ_BUFFER);
            self.buf.resize(new_len, 0);
        }
    }
}
