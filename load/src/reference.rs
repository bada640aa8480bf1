//! The raw reference server that rpckit is measured against (binary `rpc-raw-reference`).
//!
//! It speaks the simplest possible protocol: every frame is a 4-byte big-endian
//! length followed by that many payload bytes, and every request frame is
//! answered by a frame of the same length holding the ASCII-uppercased payload.
//! There is no serialization, no authentication and no request tags: responses
//! come back in request order. Whatever rpckit costs on top of this server is
//! the price of its framing, sessions and dispatch.
//!
//! Design points that the benchmarks compare against:
//! * one async-std task per connection, `TCP_NODELAY` set;
//! * pipelined requests are handled in order: after each read every complete
//!   frame already buffered is answered, all answers go out with one write;
//! * responses are built in place (a response frame is the request frame with
//!   its payload uppercased) in a read buffer that each executor thread shares
//!   among its connections (a read and its answers are one synchronous step),
//!   so an idle connection owns no heap buffer unless it once carried frames
//!   split across reads; buffers grown beyond 128 KiB for big frames are freed
//!   once drained.
//!
//! The binary binds, prints exactly one line, `rpc-raw-reference listening on <ADDR>`, to
//! stdout, then calls [`run`] until SIGINT or SIGTERM, and exits with status 0.

use std::cell::RefCell;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use async_io::Async;
use futures_lite::AsyncWriteExt;

/// Pause after a failed accept before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Largest payload accepted in one frame; a longer frame closes the connection.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Size of the per-thread read buffer.
const SCRATCH_READ: usize = 16 * 1024;

/// Smallest heap buffer allocated for a frame that spans reads.
const CARRY_MIN: usize = 4 * 1024;

/// Buffers whose capacity grew above this are freed once drained, so that a
/// connection that once carried a big frame does not keep it while idle; smaller
/// ones (up to a 64 KiB frame) are kept to avoid reallocating on every bulk call.
const KEEP_CAPACITY: usize = 128 * 1024;

/// Length of the frame header: a big-endian `u32` payload length.
const HEADER: usize = 4;

thread_local! {
    /// The read buffer of every connection this thread serves. A read into it and the answers
    /// to what it holds are one synchronous step (no `await` in between), so the connections
    /// can share it; zeroed once, not on every read.
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_READ]);
}

/// What one read from the socket came to.
enum Step {
    /// Nothing to read yet.
    Waiting,
    /// The peer closed, or sent a frame longer than [`MAX_FRAME`]: the connection ends.
    End,
    /// Data was read and every complete frame in it answered.
    Served,
}

/// Accepts connections on `listener`, each served by a task of its own, until `shutdown`
/// completes. A failed accept (typically EMFILE under a connection flood) is reported on
/// stderr and retried after a short pause.
pub async fn run(listener: Async<TcpListener>, shutdown: impl Future<Output = ()>) {
    let accept_loop = async move {
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    async_std::task::spawn(async move {
                        // Errors only end this connection; the server has nothing to report.
                        let _ = handle_connection(stream).await;
                    });
                }
                Err(e) => {
                    eprintln!("rpc-raw-reference: accept failed: {e}");
                    async_io::Timer::after(ACCEPT_BACKOFF).await;
                }
            }
        }
    };
    futures_lite::future::or(shutdown, accept_loop).await
}

/// Serves one connection until the peer closes it, an I/O error occurs or a
/// frame is too long.
///
/// Answers are produced in place: a response frame is the request frame with
/// its payload uppercased, so the complete frames of each read are uppercased
/// where they lie and written straight back. Reads go to the thread's shared
/// read buffer, so a connection owns heap memory only while a frame spans
/// several reads (`carry`) or the socket refuses part of an answer (`out`).
async fn handle_connection(stream: Async<TcpStream>) -> io::Result<()> {
    stream.get_ref().set_nodelay(true)?;
    // Start of an incomplete frame: `carry[..filled]`.
    let mut carry: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    // Answers the socket did not take at once.
    let mut out: Vec<u8> = Vec::new();
    let mut busy_rounds = 0u32;

    loop {
        let got_data = if filled == 0 {
            match serve_from_scratch(stream.get_ref(), &mut carry, &mut filled, &mut out)? {
                Step::Waiting => false,
                Step::End => return Ok(()),
                Step::Served => true,
            }
        } else {
            // `answer_in_place` already rejected oversized headers, so `need` is bounded.
            let need = frame_total(&carry[..filled])
                .unwrap_or(HEADER)
                .max(filled + 1);
            if carry.len() < need {
                carry.resize(need, 0);
            }
            match read_now(stream.get_ref(), &mut carry[filled..])? {
                None => false,
                Some(0) => return Ok(()),
                Some(n) => {
                    filled += n;
                    let Some(done) = answer_in_place(&mut carry[..filled]) else {
                        return Ok(());
                    };
                    send_now(stream.get_ref(), &carry[..done], &mut out)?;
                    carry.copy_within(done..filled, 0);
                    filled -= done;
                    true
                }
            }
        };

        if !out.is_empty() {
            (&stream).write_all(&out).await?;
            out.clear();
            release_if_big(&mut out);
        }
        if got_data {
            // Stay fair to other connections when one keeps the socket full.
            busy_rounds += 1;
            if busy_rounds.is_multiple_of(32) {
                futures_lite::future::yield_now().await;
            }
        } else {
            if filled == 0 {
                release_if_big(&mut carry);
            }
            busy_rounds = 0;
            stream.readable().await?;
        }
    }
}

/// Reads what the socket has into the thread's read buffer, answers every complete frame in
/// it (the rest of the answer, if the socket does not take it all, goes to `out`), and keeps
/// the start of an incomplete frame in `carry[..filled]` (`filled` is 0 on entry).
fn serve_from_scratch(
    stream: &TcpStream,
    carry: &mut Vec<u8>,
    filled: &mut usize,
    out: &mut Vec<u8>,
) -> io::Result<Step> {
    SCRATCH.with_borrow_mut(|chunk| {
        let n = match read_now(stream, chunk)? {
            None => return Ok(Step::Waiting),
            Some(0) => return Ok(Step::End),
            Some(n) => n,
        };
        let Some(done) = answer_in_place(&mut chunk[..n]) else {
            return Ok(Step::End); // oversized frame
        };
        let rest = &chunk[done..n];
        if !rest.is_empty() {
            let need = frame_total(rest)
                .unwrap_or(HEADER)
                .max(rest.len())
                .max(CARRY_MIN);
            if carry.len() < need {
                carry.resize(need, 0);
            }
            carry[..rest.len()].copy_from_slice(rest);
            *filled = rest.len();
        }
        send_now(stream, &chunk[..done], out)?;
        Ok(Step::Served)
    })
}

/// One non-blocking read: `None` if nothing is available yet, `Some(0)` at end of stream.
fn read_now(mut stream: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match stream.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes as much of `data` as the socket takes now; the rest is appended to `out`.
fn send_now(mut stream: &TcpStream, data: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    let mut sent = 0;
    while sent < data.len() {
        match stream.write(&data[sent..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    out.extend_from_slice(&data[sent..]);
    Ok(())
}

/// Uppercases the payload of every complete frame at the start of `buf` and returns how many
/// bytes those frames span; `None` if a frame header announces more than [`MAX_FRAME`].
fn answer_in_place(buf: &mut [u8]) -> Option<usize> {
    let mut pos = 0;
    while let Some(total) = frame_total(&buf[pos..]) {
        if total - HEADER > MAX_FRAME {
            return None;
        }
        if buf.len() - pos < total {
            break;
        }
        buf[pos + HEADER..pos + total].make_ascii_uppercase();
        pos += total;
    }
    Some(pos)
}

/// Total length (header included) of the frame starting at `buf`, if its header is complete.
fn frame_total(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER] = buf.get(..HEADER)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize + HEADER)
}

/// Frees `buf` if it grew beyond [`KEEP_CAPACITY`]; called only when it holds no data.
fn release_if_big(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}
