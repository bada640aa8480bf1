//! Input the server must survive: bad credentials (and the per-address penalty), an impostor
//! server, frames split or batched in unusual ways, an oversized length, bytes of another
//! protocol, a tampered frame and an unknown method. Each is refused or handled while other
//! connections keep working.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use rpckit_client::{Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{
    cli, client, connect_from, next_message, raw_session, within, ServerProcess, TestKey,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::{
    ClientMessage, HandshakeError, KeyId, Refusal, RpcError, SecretKey, ServerMessage, Session,
    SessionReader, SessionWriter, Suite,
};

const STEP: Duration = Duration::from_secs(30);
const LOG_WAIT: Duration = Duration::from_secs(10);

/// Asserts that `client` still answers, with a payload naming `when`.
#[track_caller]
fn assert_alive(client: &Client<Request, Response>, when: &str) {
    let text = format!("still working {when}");
    let answer = within(STEP, client.call(Request::Uppercase(text.clone())));
    assert_eq!(
        answer.unwrap_or_else(|e| panic!("{when}: {e}")),
        Response::Uppercase(text.to_uppercase())
    );
}

/// Reads until `n` replies have arrived; returns them by call id.
async fn replies<R: AsyncRead + Unpin>(
    reader: &mut SessionReader<R>,
    n: usize,
) -> HashMap<u64, Result<Response, RpcError>> {
    let mut got = HashMap::new();
    // Bounded: at most a few keepalive pings besides the replies.
    for _ in 0..n + 8 {
        if got.len() == n {
            break;
        }
        match next_message(reader).await {
            ServerMessage::Reply { id, result } => {
                assert!(got.insert(id, result).is_none(), "two replies for id {id}");
            }
            ServerMessage::Ping { .. } => {}
            other => panic!("expected a reply, got {other:?}"),
        }
    }
    assert_eq!(got.len(), n, "replies: {got:?}");
    got
}

fn call(id: u64, request: Request) -> ClientMessage<Request> {
    ClientMessage::Call {
        id,
        deadline: None,
        request,
    }
}

/// Asserts that the server closed this session: end of stream, no more frames.
async fn assert_closed<R: AsyncRead + Unpin>(reader: &mut SessionReader<R>) {
    match reader.recv().await {
        Ok(None) => {}
        Ok(Some(payload)) => panic!(
            "expected the connection closed, got a frame: {:?}",
            decode_server::<Response>(payload)
        ),
        Err(e) => panic!("expected the connection closed, got {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials

/// Runs the client side of the handshake from source address `from`.
async fn handshake_from(
    from: &str,
    addr: SocketAddr,
    id: &KeyId,
    key: &SecretKey,
) -> Result<Session<TcpStream, TcpStream>, HandshakeError> {
    let from: IpAddr = from.parse().expect("an IP address");
    let stream = connect_from(from, addr).unwrap_or_else(|e| panic!("connect from {from}: {e}"));
    let stream = TcpStream::from(stream);
    handshake::connect(stream.clone(), stream, id, key, &HandshakeConfig::default()).await
}

#[test]
fn bad_credentials_are_refused_while_other_clients_keep_working() {
    let key = TestKey::new("bad-auth");
    let server = ServerProcess::start(&key.path, &[]);
    let good = client(server.addr, &key, ClientConfig::default());
    assert_alive(&good, "before the failures");

    let wrong_key = SecretKey::generate();
    let unknown_id = KeyId::new("no-such-key").unwrap();
    // The default limit: 5 failures from one address within the window start a penalty.
    for i in 0..5 {
        let (id, secret, expected_log) = if i % 2 == 0 {
            (&key.id, &wrong_key, "did not verify")
        } else {
            (&unknown_id, &key.key, "unknown key id")
        };
        let text = format!("during failure {i}");
        let (answer, refused) = within(
            STEP,
            future_zip(
                good.call(Request::Uppercase(text.clone())),
                handshake_from("127.0.0.2", server.addr, id, secret),
            ),
        );
        assert_eq!(
            answer.expect("good client answered during the failure"),
            Response::Uppercase(text.to_uppercase())
        );
        match refused {
            Err(HandshakeError::Refused(Refusal::AuthFailed)) => {}
            other => panic!("failure {i}: expected Refused(AuthFailed), got {other:?}"),
        }
        let line = server.expect_log("handshake failed", LOG_WAIT);
        assert!(line.contains("127.0.0.2"), "{line}");
        assert!(line.contains(expected_log), "{line}");
        // The fifth failure, and only it, starts the penalty.
        assert_eq!(line.contains("address penalised"), i == 4, "{line}");
    }

    // 127.0.0.2 is now refused outright, even with the right key.
    match within(
        STEP,
        handshake_from("127.0.0.2", server.addr, &key.id, &key.key),
    ) {
        Err(HandshakeError::Refused(Refusal::RateLimited)) => {}
        other => panic!("expected Refused(RateLimited), got {other:?}"),
    }
    server.expect_log("refused: address penalised", LOG_WAIT);

    // Other addresses are not: the established client, a new one from 127.0.0.1, and one from
    // 127.0.0.3.
    assert_alive(&good, "after the penalty");
    let fresh = client(server.addr, &key, ClientConfig::default());
    assert_alive(&fresh, "on a new connection");
    let session = within(
        STEP,
        handshake_from("127.0.0.3", server.addr, &key.id, &key.key),
    )
    .expect("127.0.0.3 is not penalised");
    within(STEP, async {
        let (mut reader, mut writer) = session.split();
        writer
            .push_client(&call(1, Request::Echo(b"from .3".to_vec())))
            .unwrap();
        writer.flush().await.unwrap();
        let got = replies(&mut reader, 1).await;
        assert_eq!(got[&1], Ok(Response::Echo(b"from .3".to_vec())));
    });
    server.expect_log_count("did not verify", 3, STEP);
    server.expect_log_count("unknown key id", 2, STEP);
}

/// `futures_lite::future::zip`, named for readability above.
fn future_zip<A: std::future::Future, B: std::future::Future>(
    a: A,
    b: B,
) -> impl std::future::Future<Output = (A::Output, B::Output)> {
    futures_lite::future::zip(a, b)
}

/// A fake server that holds `wrong` under the client's key id: it completes the handshake but
/// its proof is made with the wrong key. Serves `n` connections.
fn impostor_server(wrong: SecretKey, n: usize) -> (SocketAddr, async_std::task::JoinHandle<()>) {
    let listener = within(STEP, TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let task = async_std::task::spawn(async move {
        for _ in 0..n {
            let (mut s, _) = listener.accept().await.expect("accept");
            // ClientHello: magic, version, type, suite, nonce (32), key id length, key id.
            let mut hello = [0u8; 40];
            s.read_exact(&mut hello).await.expect("client hello");
            assert_eq!(&hello[..4], b"RPCK");
            let mut id = vec![0u8; usize::from(hello[39])];
            s.read_exact(&mut id).await.expect("key id");
            let id = KeyId::from_bytes(&id).expect("key id");
            let mut nonce_c = [0u8; 32];
            nonce_c.copy_from_slice(&hello[7..39]);
            let nonce_s = [0x5a; 32];
            // Whichever suite the client offers.
            let suite = Suite::from_code(hello[6]).expect("a known suite");
            s.write_all(&handshake::server_hello_for(suite, &nonce_s))
                .await
                .expect("server hello");
            let mut proof = [0u8; 33];
            s.read_exact(&mut proof).await.expect("client proof");
            // Accept whatever the client proved, and answer with a proof under the wrong key.
            let mut finish = vec![handshake::TYPE_SERVER_PROOF, handshake::STATUS_OK];
            let proof = handshake::server_proof_for(suite, &wrong, &id, &nonce_c, &nonce_s);
            finish.extend_from_slice(&proof);
            s.write_all(&finish).await.expect("server proof");
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        }
    });
    (addr, task)
}

#[test]
fn client_refuses_a_server_holding_a_different_key() {
    let key = TestKey::new("bad-impostor");
    let (addr, fake) = impostor_server(SecretKey::generate(), 2);

    let connected = within(
        STEP,
        Client::<Request, Response>::connect(
            addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        ),
    );
    match connected {
        Err(ConnectError::Auth(HandshakeError::BadServerProof)) => {}
        other => panic!("expected Auth(BadServerProof), got {other:?}"),
    }

    // The CLI reports it as an authentication failure.
    let out = cli(addr, &key.path, &["call", "ping"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("server failed to prove it holds the key (impostor or different key)"),
        "{out:?}"
    );
    within(STEP, fake);

    // The real server with another key under the same id refuses first, in its proof step.
    let other = TestKey::new("bad-impostor");
    let server = ServerProcess::start(&other.path, &[]);
    let connected = within(
        STEP,
        Client::<Request, Response>::connect(
            server.addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        ),
    );
    match connected {
        Err(ConnectError::Auth(HandshakeError::Refused(Refusal::AuthFailed))) => {}
        other => panic!("expected Auth(Refused(AuthFailed)), got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// What a [`Wire`] does with the bytes written to it.
enum Mode {
    /// Forward them.
    Pass,
    /// Forward one byte per write.
    Dribble,
    /// Keep them here instead of sending them.
    Capture(Vec<u8>),
}

/// A writer in front of a socket whose behaviour the test switches between frames.
struct Wire {
    stream: TcpStream,
    mode: Arc<Mutex<Mode>>,
}

impl AsyncWrite for Wire {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let mut mode = this.mode.lock().unwrap();
        match &mut *mode {
            Mode::Pass => Pin::new(&mut this.stream).poll_write(cx, buf),
            Mode::Dribble => {
                let one = &buf[..buf.len().min(1)];
                Pin::new(&mut this.stream).poll_write(cx, one)
            }
            Mode::Capture(kept) => {
                kept.extend_from_slice(buf);
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}

/// An authenticated session whose writes go through a [`Wire`] starting in `mode`.
async fn wire_session(
    addr: SocketAddr,
    key: &TestKey,
    mode: Mode,
) -> (TcpStream, Arc<Mutex<Mode>>, Session<TcpStream, Wire>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    // Each dribbled byte leaves in its own segment.
    stream.set_nodelay(true).expect("nodelay");
    let mode = Arc::new(Mutex::new(mode));
    let wire = Wire {
        stream: stream.clone(),
        mode: mode.clone(),
    };
    let session = handshake::connect(
        stream.clone(),
        wire,
        &key.id,
        &key.key,
        &HandshakeConfig::default(),
    )
    .await
    .expect("handshake");
    (stream, mode, session)
}

#[test]
fn frames_batched_in_one_write_or_dribbled_byte_by_byte_are_read() {
    let key = TestKey::new("bad-framing");
    let mut server = ServerProcess::start(&key.path, &[]);

    within(STEP, async {
        // Three frames in one write.
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        writer
            .push_client(&call(1, Request::Echo(b"first".to_vec())))
            .unwrap();
        writer
            .push_client(&call(2, Request::Uppercase("second".into())))
            .unwrap();
        writer.push_client(&call(3, Request::Ping)).unwrap();
        writer.flush().await.unwrap();
        let got = replies(&mut reader, 3).await;
        assert_eq!(got[&1], Ok(Response::Echo(b"first".to_vec())));
        assert_eq!(got[&2], Ok(Response::Uppercase("SECOND".into())));
        assert_eq!(got[&3], Ok(Response::Pong));

        // A normal handshake, then two frames one byte per write.
        let (_stream, mode, session) = wire_session(server.addr, &key, Mode::Pass).await;
        let (mut reader, mut writer) = session.split();
        *mode.lock().unwrap() = Mode::Dribble;
        for (id, text) in [(7, "dribbled"), (8, "byte by byte")] {
            writer
                .push_client(&call(id, Request::Uppercase(text.into())))
                .unwrap();
            writer.flush().await.unwrap();
            let got = replies(&mut reader, 1).await;
            assert_eq!(got[&id], Ok(Response::Uppercase(text.to_uppercase())));
        }

        // The whole session dribbled, handshake included.
        let (_stream, _mode, session) = wire_session(server.addr, &key, Mode::Dribble).await;
        let (mut reader, mut writer) = session.split();
        writer
            .push_client(&call(1, Request::Echo(vec![0, 1, 2, 255])))
            .unwrap();
        writer.flush().await.unwrap();
        let got = replies(&mut reader, 1).await;
        assert_eq!(got[&1], Ok(Response::Echo(vec![0, 1, 2, 255])));
    });
    server.assert_not_logged("bad input");
}

#[test]
fn oversized_length_header_closes_only_that_connection() {
    let key = TestKey::new("bad-length");
    let server = ServerProcess::start(&key.path, &[]);
    let good = client(server.addr, &key, ClientConfig::default());
    assert_alive(&good, "before");

    within(STEP, async {
        let (bystander_stream, bystander) = raw_session(server.addr, &key).await;
        let (mut by_reader, mut by_writer) = bystander.split();

        let (mut stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, _writer) = session.split();
        stream.write_all(&[0xFF, 0xFF, 0xFF, 0xFF]).await.unwrap();
        stream.flush().await.unwrap();
        assert_closed(&mut reader).await;

        // The other raw connection is unaffected.
        by_writer
            .push_client(&call(1, Request::Uppercase("bystander".into())))
            .unwrap();
        by_writer.flush().await.unwrap();
        let got = replies(&mut by_reader, 1).await;
        assert_eq!(got[&1], Ok(Response::Uppercase("BYSTANDER".into())));
        drop(bystander_stream);
    });
    server.expect_log(
        "closed: bad input: frame length 4294967295 exceeds the limit of 8388608 bytes",
        LOG_WAIT,
    );
    assert_alive(&good, "after");
}

#[test]
fn non_protocol_bytes_get_the_bad_magic_refusal() {
    let key = TestKey::new("bad-http");
    let server = ServerProcess::start(&key.path, &[]);
    let good = client(server.addr, &key, ClientConfig::default());
    assert_alive(&good, "before");

    let mut http = std::net::TcpStream::connect(server.addr).expect("connect");
    http.set_read_timeout(Some(STEP)).unwrap();
    // One write, so the server has read all of it when it closes (no reset).
    http.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    http.read_to_end(&mut answer)
        .expect("the refusal, then end of stream");
    assert_eq!(answer, b"RPCK\x01\x02\x01");
    assert_eq!(answer, handshake::server_refusal(Refusal::BadMagic));
    let line = server.expect_log("handshake failed", LOG_WAIT);
    assert!(line.contains("not an rpckit peer"), "{line}");

    assert_alive(&good, "after");
    // A bad magic is not an authentication failure: no penalty for the address.
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn tampered_frame_closes_that_connection() {
    let key = TestKey::new("bad-tamper");
    let server = ServerProcess::start(&key.path, &[]);
    let good = client(server.addr, &key, ClientConfig::default());
    assert_alive(&good, "before");

    within(STEP, async {
        let (mut stream, mode, session) = wire_session(server.addr, &key, Mode::Pass).await;
        let (mut reader, mut writer) = session.split();
        // Frame 0 is fine.
        writer
            .push_client(&call(1, Request::Echo(b"untouched".to_vec())))
            .unwrap();
        writer.flush().await.unwrap();
        let got = replies(&mut reader, 1).await;
        assert_eq!(got[&1], Ok(Response::Echo(b"untouched".to_vec())));

        // Frame 1 is captured, one bit of its payload flipped, then sent.
        *mode.lock().unwrap() = Mode::Capture(Vec::new());
        writer
            .push_client(&call(2, Request::Echo(b"tampered".to_vec())))
            .unwrap();
        writer.flush().await.unwrap();
        let mut bytes = match std::mem::replace(&mut *mode.lock().unwrap(), Mode::Pass) {
            Mode::Capture(bytes) => bytes,
            _ => unreachable!(),
        };
        let at = bytes
            .windows(8)
            .position(|w| w == b"tampered")
            .expect("payload in the frame");
        bytes[at + 1] ^= 0x20; // "tAmpered": still a valid request, but not what was tagged
        stream.write_all(&bytes).await.unwrap();
        stream.flush().await.unwrap();
        assert_closed(&mut reader).await;
    });
    server.expect_log("closed: bad input: frame 1 failed authentication", LOG_WAIT);
    assert_alive(&good, "after");
}

#[test]
fn unknown_method_is_answered_and_the_connection_goes_on() {
    /// A newer client's request enum: the demo's four methods plus one the server lacks.
    #[derive(serde::Serialize)]
    #[allow(dead_code)]
    enum NewerRequest {
        Echo(Vec<u8>),
        Uppercase(String),
        Ping,
        Sleep { ms: u64 },
        Teleport(String),
    }

    let key = TestKey::new("bad-method");
    let server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer): (_, SessionWriter<TcpStream>) = session.split();
        writer
            .push_client(&ClientMessage::Call {
                id: 41,
                deadline: None,
                request: NewerRequest::Teleport("mars".into()),
            })
            .unwrap();
        writer
            .push_client(&ClientMessage::Call {
                id: 42,
                deadline: None,
                request: NewerRequest::Uppercase("known".into()),
            })
            .unwrap();
        writer.flush().await.unwrap();
        let got = replies(&mut reader, 2).await;
        match &got[&41] {
            Err(RpcError::UnknownMethod(_)) => {}
            other => panic!("expected UnknownMethod, got {other:?}"),
        }
        assert_eq!(got[&42], Ok(Response::Uppercase("KNOWN".into())));
    });
}
