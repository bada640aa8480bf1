//! `rpc-raw-reference`: the raw reference server that rpckit is measured against.
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
//! * an idle connection owns no buffer memory beyond small retained buffers:
//!   buffers start empty, and buffers grown for big frames are freed once
//!   drained.
//!
//! Once listening it prints exactly one line, `rpc-raw-reference listening on
//! <ADDR>`, to stdout. It exits with status 0 on SIGINT or SIGTERM.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use async_io::Async;
use clap::Parser;
use futures_lite::{AsyncWriteExt, StreamExt};

/// Largest payload accepted in one frame; a longer frame closes the connection.
const MAX_FRAME: usize = 8 * 1024 * 1024;

/// Size of the read buffer allocated when a connection first receives data.
const INITIAL_READ_CAPACITY: usize = 4 * 1024;

/// Buffers whose capacity grew above this are freed once drained, so that a
/// connection that once carried a big frame does not keep it while idle.
const KEEP_CAPACITY: usize = 16 * 1024;

/// Length of the frame header: a big-endian `u32` payload length.
const HEADER: usize = 4;

/// Command-line options of the raw reference server.
#[derive(Debug, Parser)]
#[command(
    name = "rpc-raw-reference",
    version,
    about = "Raw reference server: length-prefixed frames answered with the uppercased payload"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
}

fn main() {
    let args = Args::parse();
    let code = async_std::task::block_on(serve(args));
    std::process::exit(code);
}

/// Binds, announces the address, then accepts until SIGINT/SIGTERM. Returns the exit code.
async fn serve(args: Args) -> i32 {
    let listener = match Async::<TcpListener>::bind(args.listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rpc-raw-reference: cannot listen on {}: {e}", args.listen);
            return 1;
        }
    };
    let local = match listener.get_ref().local_addr() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rpc-raw-reference: cannot read local address: {e}");
            return 1;
        }
    };
    let signals = match async_signal::Signals::new([
        async_signal::Signal::Int,
        async_signal::Signal::Term,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rpc-raw-reference: cannot install signal handlers: {e}");
            return 1;
        }
    };
    {
        let mut out = io::stdout().lock();
        if writeln!(out, "rpc-raw-reference listening on {local}")
            .and_then(|()| out.flush())
            .is_err()
        {
            return 1;
        }
    }

    let wait_signal = async move {
        let mut signals = signals;
        // Either a signal arrived or the stream ended; both mean shut down.
        let _ = signals.next().await;
        0
    };
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
                    // Typically EMFILE under connection floods: back off briefly and go on.
                    eprintln!("rpc-raw-reference: accept failed: {e}");
                    async_io::Timer::after(std::time::Duration::from_millis(10)).await;
                }
            }
        }
    };
    futures_lite::future::or(wait_signal, accept_loop).await
}

/// Serves one connection until the peer closes it, an I/O error occurs or a
/// frame is too long.
async fn handle_connection(stream: Async<TcpStream>) -> io::Result<()> {
    stream.get_ref().set_nodelay(true)?;
    // Received bytes not yet answered; `input[..filled]` is valid data.
    let mut input: Vec<u8> = Vec::new();
    let mut filled = 0usize;
    // Responses to write in one go.
    let mut output: Vec<u8> = Vec::new();

    loop {
        if input.len() == filled {
            // Grow: at least the initial capacity, or double, or what the pending frame needs.
            let need = pending_frame_len(&input[..filled]).unwrap_or(0);
            let target = (filled + 1)
                .max(INITIAL_READ_CAPACITY)
                .max(input.len() * 2)
                .max(need)
                .min(MAX_FRAME + HEADER)
                .max(filled + 1);
            input.resize(target, 0);
        }
        let n = match stream.get_ref().read(&mut input[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if filled == 0 {
                    release_if_big(&mut input);
                }
                release_if_big(&mut output);
                stream.readable().await?;
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        filled += n;

        // Answer every complete frame in the buffer.
        let mut pos = 0usize;
        while let Some(len) = pending_frame_len(&input[pos..filled]) {
            let len = len - HEADER;
            if len > MAX_FRAME {
                return Ok(());
            }
            if filled - pos < HEADER + len {
                break;
            }
            let frame = &input[pos..pos + HEADER + len];
            let start = output.len();
            output.extend_from_slice(frame);
            output[start + HEADER..].make_ascii_uppercase();
            pos += HEADER + len;
        }
        // A header announcing an oversized frame closes the connection at once.
        if let Some(len) = pending_frame_len(&input[pos..filled]) {
            if len - HEADER > MAX_FRAME {
                return Ok(());
            }
        }
        if pos > 0 {
            input.copy_within(pos..filled, 0);
            filled -= pos;
        }
        if !output.is_empty() {
            (&stream).write_all(&output).await?;
            output.clear();
        }
    }
}

/// Total length (header included) of the frame starting at `buf`, if its header is complete.
fn pending_frame_len(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER] = buf.get(..HEADER)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize + HEADER)
}

/// Frees `buf` if it grew beyond [`KEEP_CAPACITY`]; called only when it holds no data.
fn release_if_big(buf: &mut Vec<u8>) {
    if buf.capacity() > KEEP_CAPACITY {
        *buf = Vec::new();
    }
}
