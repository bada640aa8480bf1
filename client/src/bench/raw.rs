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
use std::sync::Mutex;
use std::task::{Poll, Waker};

use async_std::io::{ReadExt, WriteExt};
use async_std::net::TcpStream;

use super::{BenchConfig, BenchError, BenchReport, Connection, Driver};

/// Largest response payload accepted (same limit as the server's).
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Payloads up to this size are copied behind the header and sent with one write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Smallest read buffer allocated.
const MIN_READ_BUFFER: usize = 4 * 1024;

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

/// Read half of a connection with its frame buffer.
struct Reader {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unconsumed data is `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Reader {
    /// Reads until a whole frame is buffered; returns its payload's range in `buf` and consumes it.
    async fn next_frame(&mut self) -> Result<std::ops::Range<usize>, BenchError> {
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

/// Hands out turns to read responses in request order.
pub struct Turnstile {
    state: Mutex<TurnState>,
}

struct TurnState {
    /// Sequence number whose response is read next.
    next: u64,
    poisoned: bool,
    /// Calls waiting for their turn: (sequence number, waker).
    waiters: Vec<(u64, Waker)>,
}

impl Default for Turnstile {
    fn default() -> Self {
        Turnstile {
            state: Mutex::new(TurnState {
                next: 0,
                poisoned: false,
                waiters: Vec::new(),
            }),
        }
    }
}

impl std::fmt::Debug for Turnstile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.lock();
        f.debug_struct("Turnstile")
            .field("next", &st.next)
            .field("poisoned", &st.poisoned)
            .field("waiting", &st.waiters.len())
            .finish()
    }
}

impl Turnstile {
    fn lock(&self) -> std::sync::MutexGuard<'_, TurnState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `seq` is the next response to read; `Err` once poisoned.
    pub async fn wait(&self, seq: u64) -> Result<(), ()> {
        std::future::poll_fn(|cx| {
            let mut st = self.lock();
            if st.poisoned {
                return Poll::Ready(Err(()));
            }
            if st.next == seq {
                return Poll::Ready(Ok(()));
            }
            match st.waiters.iter_mut().find(|(s, _)| *s == seq) {
                Some((_, w)) => w.clone_from(cx.waker()),
                None => st.waiters.push((seq, cx.waker().clone())),
            }
            Poll::Pending
        })
        .await
    }

    /// Passes the turn to the next sequence number and wakes its waiter.
    pub fn advance(&self) {
        let waker = {
            let mut st = self.lock();
            st.next += 1;
            let next = st.next;
            st.waiters
                .iter()
                .position(|(s, _)| *s == next)
                .map(|i| st.waiters.swap_remove(i).1)
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Fails every current and future waiter.
    pub fn poison(&self) {
        let waiters = {
            let mut st = self.lock();
            st.poisoned = true;
            std::mem::take(&mut st.waiters)
        };
        for (_, w) in waiters {
            w.wake();
        }
    }
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
            reader: async_std::sync::Mutex::new(Reader {
                stream,
                buf: Vec::new(),
                start: 0,
                end: 0,
            }),
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
            let resp = &r.buf[range];
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Starts an in-process raw server on 127.0.0.1:0; `uppercase: false` echoes unchanged.
    async fn start_listener(uppercase: bool) -> SocketAddr {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        async_std::task::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                async_std::task::spawn(async move {
                    let _ = s.set_nodelay(true);
                    let mut buf = Vec::new();
                    loop {
                        let mut h = [0u8; 4];
                        if s.read_exact(&mut h).await.is_err() {
                            return;
                        }
                        buf.resize(u32::from_be_bytes(h) as usize, 0);
                        if s.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        if uppercase {
                            buf.make_ascii_uppercase();
                        }
                        if s.write_all(&h).await.is_err() || s.write_all(&buf).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn short(conns: usize, depth: usize) -> BenchConfig {
        BenchConfig {
            conns,
            depth,
            duration: 0.3,
            warmup: 0.05,
            ..BenchConfig::default()
        }
    }

    #[async_std::test]
    async fn bench_against_in_process_listener() {
        let addr = start_listener(true).await.to_string();
        let cfg = BenchConfig {
            payload: 100,
            ..short(2, 4)
        };
        let rep = run_raw(&addr, &cfg).await.unwrap();
        assert!(rep.calls > 0, "{rep:?}");
        assert_eq!(rep.errors, 0, "{rep:?}");
        assert_eq!(rep.bytes, rep.calls * 200);
        assert_eq!(rep.latency_us.samples, rep.calls);
        assert_eq!(
            (rep.connections, rep.depth, rep.driver.as_str()),
            (2, 4, "raw")
        );
    }

    #[async_std::test]
    async fn churn_against_in_process_listener() {
        let addr = start_listener(true).await.to_string();
        let cfg = BenchConfig {
            churn: true,
            ..short(2, 8)
        };
        let rep = run_raw(&addr, &cfg).await.unwrap();
        assert!(rep.calls > 0, "{rep:?}");
        // One connection per call, give or take the calls straddling the window edges.
        assert!(rep.connects.abs_diff(rep.calls) <= 2 * 2, "{rep:?}");
        assert!(rep.connections_per_sec.is_some());
        assert_eq!(rep.errors, 0, "{rep:?}");
        assert_eq!(rep.depth, 1);
    }

    #[async_std::test]
    async fn idle_holds_every_connection_then_closes_them() {
        let addr = start_listener(true).await.to_string();
        // More than one batch of CONNECT_PARALLEL attempts.
        let cfg = BenchConfig {
            conns: crate::bench::CONNECT_PARALLEL + 6,
            duration: 0.1,
            idle: true,
            ..BenchConfig::default()
        };
        let mut announced = None;
        let rep = crate::bench::run_idle(RawDriver::new(), &addr, &cfg, |n| announced = Some(n))
            .await
            .unwrap();
        assert_eq!(announced, Some(cfg.conns));
        assert!(rep.idle, "{rep:?}");
        assert_eq!(rep.connections_held, Some(cfg.conns as u64), "{rep:?}");
        assert_eq!(rep.connect_errors, Some(0), "{rep:?}");
        assert_eq!(rep.calls, cfg.conns as u64, "one probe call each: {rep:?}");
        assert_eq!(rep.errors, 0, "{rep:?}");
    }

    #[async_std::test]
    async fn idle_with_wrong_answers_holds_nothing() {
        let addr = start_listener(false).await.to_string();
        let cfg = BenchConfig {
            conns: 3,
            duration: 0.1,
            idle: true,
            ..BenchConfig::default()
        };
        let err = crate::bench::run(RawDriver::new(), &addr, &cfg)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), "bad_response_data", "{err}");
    }

    #[async_std::test]
    async fn wrong_answers_are_counted_as_errors() {
        let addr = start_listener(false).await.to_string();
        let rep = run_raw(&addr, &short(1, 2)).await.unwrap();
        assert_eq!(rep.calls, 0, "{rep:?}");
        assert!(
            rep.errors_by_kind
                .get("bad_response_data")
                .copied()
                .unwrap_or(0)
                > 0,
            "{rep:?}"
        );
    }

    #[async_std::test]
    async fn unreachable_server_is_an_error() {
        // Bind then close to get a port that is (almost certainly) not listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        let err = run_raw(&addr, &short(1, 1)).await.unwrap_err();
        assert!(err.kind().starts_with("connect"), "{err}");
    }

    #[test]
    fn turnstile_wakes_only_the_next_in_line() {
        let t = Turnstile::default();
        let w1 = Arc::new(CountWake(AtomicUsize::new(0)));
        let w2 = Arc::new(CountWake(AtomicUsize::new(0)));
        let mut f1 = Box::pin(t.wait(1));
        let mut f2 = Box::pin(t.wait(2));
        let waker1 = Waker::from(w1.clone());
        let waker2 = Waker::from(w2.clone());
        let mut cx1 = std::task::Context::from_waker(&waker1);
        let mut cx2 = std::task::Context::from_waker(&waker2);
        assert!(f1.as_mut().poll(&mut cx1).is_pending());
        assert!(f2.as_mut().poll(&mut cx2).is_pending());
        t.advance(); // 0 -> 1
        assert_eq!(w1.0.load(Ordering::SeqCst), 1);
        assert_eq!(w2.0.load(Ordering::SeqCst), 0);
        assert_eq!(f1.as_mut().poll(&mut cx1), Poll::Ready(Ok(())));
        t.poison();
        assert_eq!(w2.0.load(Ordering::SeqCst), 1);
        assert_eq!(f2.as_mut().poll(&mut cx2), Poll::Ready(Err(())));
    }
}
