//! Driver for the raw reference protocol served by `rpc-raw-reference`.
//!
//! Wire format: each frame is a 4-byte big-endian payload length followed by
//! the payload. The server answers every request frame, in order, with a frame
//! of the same length holding the ASCII-uppercased payload. There are no tags,
//! so `depth` calls in flight on one connection are pipelined: a call takes a
//! sequence number while it writes its request (under the writer lock, so wire
//! order equals sequence order), then waits for its turn in a [`Turnstile`] and
//! reads the next response frame itself. Calls allocate nothing once the
//! connection buffers have grown to the payload size.
//!
//! Any error poisons the connection: every call waiting on it fails with
//! `connection_broken`, and the engine reconnects. A call future dropped before
//! it finished also poisons the connection, since the stream is then out of step.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use async_std::io::WriteExt;
use async_std::net::TcpStream;

mod reader;
mod turnstile;

use reader::Reader;
pub use turnstile::Turnstile;

use crate::{BenchConfig, BenchError, BenchReport, Connection, Driver};

/// Largest response payload accepted (same limit as the server's).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Payloads up to this size are copied behind the header and sent with one write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Runs the benchmark described by `cfg` against a raw reference server at `addr`.
///
/// For the raw protocol `uppercase` and `echo` do the same work (the server
/// always uppercases); the payload is lowercase letters, so answers are verified.
pub async fn run_raw(addr: &str, cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    super::run(RawDriver::new(), addr, cfg).await
}

/// Opens [`RawConnection`]s; see the module documentation for the protocol.
#[derive(Debug, Clone, Default)]
pub struct RawDriver {
    _private: (),
}

impl RawDriver {
    /// A raw-protocol driver.
    pub fn new() -> Self {
        RawDriver::default()
    }
}

impl Driver for RawDriver {
    type Conn = RawConnection;

    fn name(&self) -> &str {
        "raw"
    }

    async fn connect(&self, addr: SocketAddr) -> Result<RawConnection, BenchError> {
        RawConnection::connect(addr).await
    }
}

/// Write half of a connection.
struct Writer {
    stream: TcpStream,
    /// Header and (small) payload of the request being sent.
    scratch: Vec<u8>,
    /// Sequence number of the next request written.
    next_seq: u64,
}

/// One raw-protocol connection carrying pipelined calls.
pub struct RawConnection {
    writer: async_std::sync::Mutex<Writer>,
    reader: async_std::sync::Mutex<Reader>,
    turn: Turnstile,
    broken: AtomicBool,
}

/// Poisons the connection if a call ends (error or drop) without being disarmed.
struct PoisonGuard<'a> {
    conn: &'a RawConnection,
    armed: bool,
}

impl Drop for PoisonGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.poison();
        }
    }
}

impl std::fmt::Debug for RawConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawConnection")
            .field("turn", &self.turn)
            .field("broken", &self.broken.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl RawConnection {
    /// Connects to `addr` and sets `TCP_NODELAY`.
    pub async fn connect(addr: SocketAddr) -> Result<RawConnection, BenchError> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::io("connect", &e).no_connection())?;
        stream
            .set_nodelay(true)
            .map_err(|e| BenchError::io("connect", &e).no_connection())?;
        Ok(RawConnection {
            writer: async_std::sync::Mutex::new(Writer {
                stream: stream.clone(),
                scratch: Vec::new(),
                next_seq: 0,
            }),
            reader: async_std::sync::Mutex::new(Reader::new(stream)),
            turn: Turnstile::default(),
            broken: AtomicBool::new(false),
        })
    }

    fn poison(&self) {
        self.broken.store(true, Ordering::Release);
        self.turn.poison();
    }

    fn broken_error() -> BenchError {
        BenchError::new(
            "connection_broken",
            "an earlier call on this connection failed",
        )
    }

    /// Writes one request frame; returns its sequence number.
    async fn send(&self, payload: &[u8]) -> Result<u64, BenchError> {
        let len = u32::try_from(payload.len())
            .ok()
            .filter(|&l| l as usize <= MAX_FRAME)
            .ok_or_else(|| BenchError::new("payload_too_large", "payload exceeds 8 MiB"))?;
        let mut w = self.writer.lock().await;
        if self.broken.load(Ordering::Acquire) {
            return Err(Self::broken_error());
        }
        let seq = w.next_seq;
        w.next_seq += 1;
        let header = len.to_be_bytes();
        let io_err = |e: io::Error| BenchError::io("io", &e);
        let Writer {
            stream, scratch, ..
        } = &mut *w;
        if payload.len() <= COALESCE_LIMIT {
            scratch.clear();
            scratch.extend_from_slice(&header);
            scratch.extend_from_slice(payload);
            stream.write_all(scratch).await.map_err(io_err)?;
        } else {
            stream.write_all(&header).await.map_err(io_err)?;
            stream.write_all(payload).await.map_err(io_err)?;
        }
        Ok(seq)
    }
}

impl Connection for RawConnection {
    fn is_alive(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
    }

    async fn call<'a>(&'a self, payload: &'a [u8]) -> Result<usize, BenchError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(Self::broken_error());
        }
        let mut guard = PoisonGuard {
            conn: self,
            armed: true,
        };
        let seq = self.send(payload).await?;
        if self.turn.wait(seq).await.is_err() {
            guard.armed = false; // already poisoned
            return Err(Self::broken_error());
        }
        let n = {
            let mut r = self.reader.lock().await;
            let range = r.next_frame().await?;
            let resp = r.frame(range);
            if resp.len() != payload.len() {
                return Err(BenchError::new(
                    "bad_response_length",
                    format!(
                        "sent {} bytes, got {} bytes back",
                        payload.len(),
                        resp.len()
                    ),
                ));
            }
            if !resp
                .iter()
                .zip(payload)
                .all(|(got, sent)| *got == sent.to_ascii_uppercase())
            {
                return Err(BenchError::new(
                    "bad_response_data",
                    "response is not the uppercased request",
                ));
            }
            resp.len()
        };
        self.turn.advance();
        guard.armed = false;
        Ok(n)
    }
}
