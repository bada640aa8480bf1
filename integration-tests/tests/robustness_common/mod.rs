//! Shared by the `robustness_*.rs` and `live_proptest.rs` test files: raw frames, raw
//! handshake bytes, and reading a socket until the server closes it.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use async_std::net::TcpStream as AsyncStream;
use rpckit_integration_tests::{ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, NONCE_LEN};
use rpckit_proto::message::decode_server;
use rpckit_proto::{ClientMessage, Refusal, RpcError, ServerMessage, SessionReader, SessionWriter};
use serde::ser::SerializeTuple;

/// Generous bound for anything that should happen "at once".
pub const PROMPT: Duration = Duration::from_secs(10);

/// Bytes that bincode writes as they are, with no length prefix: lets a test put any bytes
/// after an envelope header in a correctly tagged frame.
#[derive(Debug, Clone)]
pub struct Raw(pub Vec<u8>);

impl serde::Serialize for Raw {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for b in &self.0 {
            t.serialize_element(b)?;
        }
        t.end()
    }
}

/// A call without deadline.
pub fn call(id: u64, request: Request) -> ClientMessage<Request> {
    ClientMessage::Call {
        id,
        deadline: None,
        request,
    }
}

/// Queues `msgs` as tagged frames and writes them in one flush.
pub async fn send(writer: &mut SessionWriter<AsyncStream>, msgs: &[ClientMessage<Request>]) {
    for m in msgs {
        writer.push_client(m).expect("encode client message");
    }
    writer.flush().await.expect("write frames");
}

/// Sends a call whose body is `body` exactly (any bytes), as one tagged frame.
pub async fn send_raw_call(writer: &mut SessionWriter<AsyncStream>, id: u64, body: &[u8]) {
    writer
        .push_client(&ClientMessage::Call {
            id,
            deadline: None,
            request: Raw(body.to_vec()),
        })
        .expect("encode raw call");
    writer.flush().await.expect("write raw call");
}

/// What the server sent, with the response body decoded as the demo `Response`.
pub type Got = ServerMessage<Response>;

/// Reads the next server message: `Ok(None)` at a clean end of stream, `Err` on a broken
/// stream (reset, truncated, bad tag).
pub async fn recv(reader: &mut SessionReader<AsyncStream>) -> Result<Option<Got>, String> {
    let payload = match reader.recv().await {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let msg = decode_server::<Response>(payload).map_err(|e| format!("undecodable: {e}"))?;
    Ok(Some(
        msg.map_response(|r| r.expect("response body decodes")),
    ))
}

/// Reads server messages until the reply to `id`, skipping pings and other replies. Panics if
/// the stream ends first.
pub async fn reply_to(
    reader: &mut SessionReader<AsyncStream>,
    id: u64,
) -> Result<Response, RpcError> {
    for _ in 0..100_000 {
        match recv(reader).await {
            Ok(Some(ServerMessage::Reply { id: got, result })) if got == id => return result,
            Ok(Some(_)) => continue,
            other => panic!("stream ended before the reply to call {id}: {other:?}"),
        }
    }
    panic!("no reply to call {id} within 100,000 messages")
}

/// Reads until the server ends the session: returns how it ended (`Ok(())` for a clean end
/// of stream, `Err(why)` for a reset or broken frame) and every message before that.
pub async fn until_closed(
    reader: &mut SessionReader<AsyncStream>,
) -> (Vec<Got>, Result<(), String>) {
    let mut got = Vec::new();
    for _ in 0..100_000 {
        match recv(reader).await {
            Ok(Some(m)) => got.push(m),
            Ok(None) => return (got, Ok(())),
            Err(e) => return (got, Err(e)),
        }
    }
    panic!("server sent over 100,000 messages without closing")
}

/// The 7 bytes of a refusal: `RPCK 01 02 <status>`.
pub fn refusal(reason: Refusal) -> Vec<u8> {
    handshake::server_refusal(reason).to_vec()
}

/// A blocking TCP connection with a read timeout.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PROMPT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until end of stream (or a reset), at most `limit` long and `max` bytes. Returns the
/// bytes and whether the stream really ended (false: the time or byte limit came first).
pub fn read_to_end(s: &mut TcpStream, limit: Duration, max: usize) -> (Vec<u8>, bool) {
    let end = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while out.len() < max {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            return (out, false);
        };
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (out, false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // Reset by the server: the stream ended too.
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

/// Reads exactly `n` bytes (panics on end of stream or after the read timeout).
pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n];
    s.read_exact(&mut out).expect("read");
    out
}

/// A ClientHello with a fresh random nonce.
pub fn hello(key: &TestKey) -> ([u8; NONCE_LEN], Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    handshake::os_random(&mut nonce);
    (nonce, handshake::client_hello(&nonce, &key.id))
}

/// Sends a hello on a blocking socket and reads the 40-byte ServerHello; returns the
/// server's nonce.
pub fn hello_exchange(s: &mut TcpStream, key: &TestKey, nonce_c: &[u8; NONCE_LEN]) -> [u8; 32] {
    s.write_all(&handshake::client_hello(nonce_c, &key.id))
        .unwrap();
    let sh = read_n(s, 40);
    assert_eq!(
        &sh[..7],
        b"RPCK\x01\x02\x00",
        "server hello accepts: {sh:02x?}"
    );
    let mut nonce_s = [0u8; 32];
    nonce_s.copy_from_slice(&sh[8..40]);
    nonce_s
}

/// A ClientProof message (type byte 3, then `proof`).
pub fn proof_msg(proof: &[u8]) -> Vec<u8> {
    let mut m = vec![handshake::TYPE_CLIENT_PROOF];
    m.extend_from_slice(proof);
    m
}

/// The encoded body of a demo request.
pub fn body(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    rpckit_proto::codec::encode_into(&mut out, request, u64::MAX).unwrap();
    out
}

/// A fresh authenticated client answers a ping (the server is alive and serving).
pub fn assert_serving(addr: SocketAddr, key: &TestKey) {
    let client = rpckit_integration_tests::client(addr, key, Default::default());
    let answer = async_std::task::block_on(client.call(Request::Ping));
    assert_eq!(answer.expect("ping answered"), Response::Pong);
    async_std::task::block_on(client.close());
}

/// Socket options of an async-std stream (async-std is built without its `AsFd` impls).
pub fn sockopts<R>(stream: &AsyncStream, f: impl FnOnce(socket2::SockRef<'_>) -> R) -> R {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: `stream` owns the descriptor and outlives the borrow, which ends with `f`.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    f(socket2::SockRef::from(&fd))
}

/// Makes closing `stream` send a reset (RST) instead of a FIN.
pub fn set_linger_zero(stream: &AsyncStream) {
    sockopts(stream, |s| s.set_linger(Some(Duration::ZERO))).expect("SO_LINGER 0");
}

/// Sends SIGTERM and asserts that the shutdown line counts no call in flight and that the
/// server exits 0 within `limit`.
#[track_caller]
pub fn stop_with_no_call_in_flight(server: &mut ServerProcess, limit: Duration) {
    server.signal(libc::SIGTERM);
    let line = server.expect_log("shutting down", limit);
    assert!(line.contains("calls_in_flight=0"), "{line}");
    assert_eq!(server.wait_exit(limit).and_then(|s| s.code()), Some(0));
}
