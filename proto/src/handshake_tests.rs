//! Tests of the handshake and of the session right after it, driving the real
//! `accept`/`connect` (and their fixed-nonce variants) over real loopback sockets (TCP on
//! 127.0.0.1 or a Unix socket pair), with a real peer or with hand-written bytes.
//!
//! Every failure is checked for its own typed error (with `matches!`), and where the server
//! answers, for the exact bytes it sends back. No test sleeps to synchronise: each side is an
//! async future and the two are polled together; every test runs under a watchdog so that a
//! hang fails instead of blocking the suite.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_std::net::{TcpListener, TcpStream};
use async_std::os::unix::net::UnixStream;
use futures_lite::future::zip;
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::demo::{Request, Response};
use crate::frame::{split_frame, FrameError, FrameLimits, DEFAULT_MAX_FRAME};
use crate::handshake::{
    accept, accept_reporting, accept_with_nonce, client_hello, client_proof, connect,
    connect_policy_with_nonce, connect_with_nonce, derive_session_keys, nonce, os_random,
    server_hello, server_proof, server_refusal, HandshakeConfig, HandshakeError, ProofVerdict,
    Refusal, SessionKeys, MAGIC, NONCE_LEN, TYPE_CLIENT_HELLO, TYPE_CLIENT_PROOF,
    TYPE_SERVER_HELLO, TYPE_SERVER_PROOF,
};
use crate::keyring::{KeyId, SecretKey};
use crate::message::{decode_client, decode_server, ClientMessage, ServerMessage};
use crate::session::{Session, SessionError, SessionWriter};
use crate::suite::SuitePolicy;
use crate::test_support::{id, key, ring, run, Recorder};

const NONCE_C: [u8; NONCE_LEN] = [0x11; NONCE_LEN];
const NONCE_S: [u8; NONCE_LEN] = [0x22; NONCE_LEN];
/// Short handshake deadline for the timeout tests.
const SHORT: Duration = Duration::from_millis(200);

type Unix = Session<UnixStream, UnixStream>;
type Recorded = Session<UnixStream, Recorder<UnixStream>>;

// ---------------------------------------------------------------------------------------------
// Helpers

fn other_key() -> SecretKey {
    SecretKey::new(vec![0xAB; 32]).unwrap()
}

fn config() -> HandshakeConfig {
    HandshakeConfig::default()
}

fn short_config() -> HandshakeConfig {
    HandshakeConfig {
        timeout: SHORT,
        ..HandshakeConfig::default()
    }
}

fn integrity() -> SuitePolicy {
    SuitePolicy::integrity()
}

fn pair() -> (UnixStream, UnixStream) {
    UnixStream::pair().unwrap()
}

/// A ClientHello with every field chosen by the test (possibly invalid).
fn raw_hello(version: u8, msg_type: u8, suite: u8, id_len: u8, id: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&[version, msg_type, suite]);
    out.extend_from_slice(&NONCE_C);
    out.push(id_len);
    out.extend_from_slice(id);
    out
}

/// The 7-byte ServerHello refusal.
fn refusal(reason: Refusal) -> Vec<u8> {
    server_refusal(reason).to_vec()
}

/// A ClientProof message carrying `proof`.
fn proof_msg(proof: &[u8]) -> Vec<u8> {
    let mut out = vec![TYPE_CLIENT_PROOF];
    out.extend_from_slice(proof);
    out
}

/// The accepting ServerProof message for the fixed nonces and `key`.
fn server_proof_msg(key: &SecretKey) -> Vec<u8> {
    let mut out = vec![TYPE_SERVER_PROOF, 0];
    out.extend_from_slice(&server_proof(key, &id(), &NONCE_C, &NONCE_S));
    out
}

async fn write(stream: &UnixStream, bytes: &[u8]) {
    let mut w = stream;
    w.write_all(bytes).await.unwrap();
    w.flush().await.unwrap();
}

async fn read_n(stream: &UnixStream, n: usize) -> Vec<u8> {
    let mut r = stream;
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf).await.unwrap();
    buf
}

/// Everything the peer sends until it closes (a reset after close counts as closed).
async fn read_until_closed(stream: &UnixStream) -> Vec<u8> {
    let mut r = stream;
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    for _ in 0..10_000 {
        match r.read(&mut buf).await {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed: {e}"),
        }
    }
    panic!("peer neither closed nor stopped sending");
}

/// Runs `accept_with_nonce` (fixed server nonce) against a raw client script. Returns the
/// server's result and every byte the server wrote. When the handshake fails, also checks that
/// the server closed the connection.
async fn server_vs_script<F, Fut>(script: F) -> (Result<Recorded, HandshakeError>, Vec<u8>)
where
    F: FnOnce(UnixStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, server) = pair();
    let ring = ring();
    let config = config();
    let (writer, log) = Recorder::new(server.clone());
    let client_side = async {
        script(client.clone()).await;
        client
    };
    let (result, client) = zip(
        accept_with_nonce(server, writer, &ring, &config, NONCE_S, |_| {}),
        client_side,
    )
    .await;
    let sent = log.bytes();
    if result.is_err() {
        // The server dropped the socket: the client reads what it had not read yet, then EOF.
        let rest = read_until_closed(&client).await;
        assert!(
            sent.ends_with(&rest),
            "the client got bytes the server did not write"
        );
    }
    (result, sent)
}

/// Runs `connect_with_nonce` (fixed client nonce, key `key`) against a raw server script.
async fn client_vs_script<F, Fut>(key: &SecretKey, script: F) -> Result<Unix, HandshakeError>
where
    F: FnOnce(UnixStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let (client, server) = pair();
    let config = config();
    let (result, ()) = zip(
        connect_with_nonce(client.clone(), client, &id(), key, &config, NONCE_C),
        script(server),
    )
    .await;
    result
}

/// Splits a byte string made of whole frames into the frames (prefix included).
fn split_frames(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for _ in 0..1000 {
        if bytes.is_empty() {
            return frames;
        }
        let len = split_frame(bytes, FrameLimits::default())
            .unwrap()
            .expect("whole frames");
        let (frame, rest) = bytes.split_at(4 + len);
        frames.push(frame.to_vec());
        bytes = rest;
    }
    panic!("too many frames");
}

/// Tagged frames carrying `msgs`, as the client would send them with session key `key`.
fn client_frames(key: &[u8; 32], msgs: &[ClientMessage<Request>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    futures_lite::future::block_on(async {
        let mut writer = SessionWriter::new(&mut out, key, DEFAULT_MAX_FRAME, Vec::new());
        for msg in msgs {
            writer.push_client(msg).unwrap();
        }
        writer.flush().await.unwrap();
    });
    split_frames(&out)
}

/// Tagged frames carrying `msgs`, as the server would send them with session key `key`.
fn server_frames(key: &[u8; 32], msgs: &[ServerMessage<Response>]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    futures_lite::future::block_on(async {
        let mut writer = SessionWriter::new(&mut out, key, DEFAULT_MAX_FRAME, Vec::new());
        for msg in msgs {
            writer.push_server(msg).unwrap();
        }
        writer.flush().await.unwrap();
    });
    split_frames(&out)
}

fn call(id: u64, text: &str) -> ClientMessage<Request> {
    ClientMessage::Call {
        id,
        deadline: None,
        request: Request::Uppercase(text.into()),
    }
}

/// Asserts that `payload` is the call `call(id, text)`.
fn assert_call(payload: &[u8], want_id: u64, text: &str) {
    match decode_client::<Request>(payload).unwrap() {
        ClientMessage::Call {
            id,
            deadline: None,
            request: Ok(Request::Uppercase(s)),
        } => {
            assert_eq!(id, want_id);
            assert_eq!(s, text);
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A stream wrapper that reads and writes at most one byte per call.
#[derive(Debug)]
struct OneByte<S>(S);

impl<S: AsyncRead + Unpin> AsyncRead for OneByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.0).poll_read(cx, &mut buf[..n])
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for OneByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = buf.len().min(1);
        Pin::new(&mut self.0).poll_write(cx, &buf[..n])
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

/// A completed handshake with the fixed nonces, plus raw handles on both sockets for
/// injecting bytes, and the session keys both sides derived.
struct Established {
    client: Unix,
    server: Unix,
    /// Writes here reach the server as if the client had sent them.
    client_raw: UnixStream,
    /// Writes here reach the client as if the server had sent them.
    server_raw: UnixStream,
    keys: SessionKeys,
}

async fn established() -> Established {
    let (a, b) = pair();
    let (ring, config) = (ring(), config());
    let (client, server) = zip(
        connect_with_nonce(a.clone(), a.clone(), &id(), &key(), &config, NONCE_C),
        accept_with_nonce(b.clone(), b.clone(), &ring, &config, NONCE_S, |_| {}),
    )
    .await;
    Established {
        client: client.unwrap(),
        server: server.unwrap(),
        client_raw: a,
        server_raw: b,
        keys: derive_session_keys(&key(), &id(), &NONCE_C, &NONCE_S),
    }
}

// ---------------------------------------------------------------------------------------------
// Success

#[test]
fn accept_reporting_reports_each_verdict_before_the_client_hears_of_it() {
    run(async {
        let (ring, config) = (ring(), config());
        let other_key = SecretKey::new(vec![9u8; 32]).unwrap();
        let unknown_id = KeyId::new("nobody").unwrap();
        for (client_id, client_key, verdict) in [
            (id(), key(), ProofVerdict::Accepted),
            (id(), other_key.clone(), ProofVerdict::Rejected),
            (unknown_id, other_key, ProofVerdict::Rejected),
        ] {
            let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
            // A second handle on the client's socket, to see whether the refusal has arrived.
            let probe = a.try_clone().unwrap();
            probe.set_nonblocking(true).unwrap();
            let (a, b) = (UnixStream::from(a), UnixStream::from(b));
            let reported = std::cell::Cell::new(None);
            let server_side = accept_reporting(b.clone(), b.clone(), &ring, &config, |v| {
                // The client has not been told yet: after the ServerHello (read by the client
                // before it sent its proof), nothing waits unread on its socket.
                match std::io::Read::read(&mut &probe, &mut [0u8; 8]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    other => panic!("reported after the client heard: {other:?}"),
                }
                reported.set(Some(v));
            });
            let client_side = connect(a.clone(), a.clone(), &client_id, &client_key, &config);
            let (server, client) = zip(server_side, client_side).await;
            assert_eq!(reported.get(), Some(verdict), "key id {client_id}");
            let fails = verdict == ProofVerdict::Rejected;
            assert_eq!(server.is_err(), fails);
            assert_eq!(client.is_err(), fails);
        }
    });
}

#[test]
fn handshake_over_tcp_then_calls_and_replies_both_ways() {
    run(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (ring, config) = (ring(), config());
        let server_side = async {
            let (stream, _) = listener.accept().await.unwrap();
            accept(stream.clone(), stream, &ring, &config).await
        };
        let client_side = async {
            let stream = TcpStream::connect(addr).await.unwrap();
            connect(stream.clone(), stream, &id(), &key(), &config).await
        };
        let (server, client) = zip(server_side, client_side).await;
        let (mut server, mut client) = (server.unwrap(), client.unwrap());
        assert_eq!(server.key_id, id());
        assert_eq!(client.key_id, id());

        // Two calls, the second with a deadline, in one flush.
        client.writer.push_client(&call(1, "hello")).unwrap();
        client
            .writer
            .push_client(&ClientMessage::Call {
                id: 2,
                deadline: Some(Duration::from_millis(1500)),
                request: Request::Echo(vec![1, 2, 3]),
            })
            .unwrap();
        client.writer.flush().await.unwrap();

        let payload = server.reader.recv().await.unwrap().unwrap();
        assert_call(payload, 1, "hello");
        let payload = server.reader.recv().await.unwrap().unwrap();
        match decode_client::<Request>(payload).unwrap() {
            ClientMessage::Call {
                id: 2,
                deadline: Some(d),
                request: Ok(Request::Echo(bytes)),
            } => {
                assert_eq!(d, Duration::from_millis(1500));
                assert_eq!(bytes, [1, 2, 3]);
            }
            other => panic!("unexpected {other:?}"),
        }

        // Replies out of order, and a server ping.
        server
            .writer
            .push_server(&ServerMessage::Reply {
                id: 2,
                result: Ok(Response::Echo(vec![1, 2, 3])),
            })
            .unwrap();
        server
            .writer
            .push_server(&ServerMessage::Reply {
                id: 1,
                result: Ok(Response::Uppercase("HELLO".into())),
            })
            .unwrap();
        server
            .writer
            .push_server(&ServerMessage::<Response>::Ping { nonce: 77 })
            .unwrap();
        server.writer.flush().await.unwrap();

        let mut seen = Vec::new();
        for _ in 0..3 {
            let payload = client.reader.recv().await.unwrap().unwrap();
            match decode_server::<Response>(payload).unwrap() {
                ServerMessage::Reply {
                    id,
                    result: Ok(Ok(resp)),
                } => seen.push((id, Some(resp))),
                ServerMessage::Ping { nonce } => {
                    assert_eq!(nonce, 77);
                    seen.push((0, None));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(
            seen,
            vec![
                (2, Some(Response::Echo(vec![1, 2, 3]))),
                (1, Some(Response::Uppercase("HELLO".into()))),
                (0, None),
            ]
        );

        // Pong, then a tagged goodbye, then the close.
        client
            .writer
            .push_client(&ClientMessage::<Request>::Pong { nonce: 77 })
            .unwrap();
        client
            .writer
            .push_client(&ClientMessage::<Request>::Goodbye)
            .unwrap();
        client.writer.flush().await.unwrap();
        // `close` on async-io streams only flushes; dropping both halves closes the socket.
        drop(client);
        let payload = server.reader.recv().await.unwrap().unwrap();
        assert!(matches!(
            decode_client::<Request>(payload).unwrap(),
            ClientMessage::Pong { nonce: 77 }
        ));
        let payload = server.reader.recv().await.unwrap().unwrap();
        assert!(matches!(
            decode_client::<Request>(payload).unwrap(),
            ClientMessage::Goodbye
        ));
        assert!(server.reader.recv().await.unwrap().is_none());
    });
}

#[test]
fn dribbled_handshake_one_byte_per_read_and_write_still_succeeds() {
    run(async {
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let (client, server) = zip(
            connect(OneByte(a.clone()), OneByte(a), &id(), &key(), &config),
            accept(OneByte(b.clone()), OneByte(b), &ring, &config),
        )
        .await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());

        client.writer.push_client(&call(5, "drip")).unwrap();
        client.writer.flush().await.unwrap();
        assert_call(server.reader.recv().await.unwrap().unwrap(), 5, "drip");

        server
            .writer
            .push_server(&ServerMessage::Reply {
                id: 5,
                result: Ok(Response::Uppercase("DRIP".into())),
            })
            .unwrap();
        server.writer.flush().await.unwrap();
        let payload = client.reader.recv().await.unwrap().unwrap();
        assert!(matches!(
            decode_server::<Response>(payload).unwrap(),
            ServerMessage::Reply { id: 5, result: Ok(Ok(Response::Uppercase(s))) } if s == "DRIP"
        ));
    });
}

#[test]
fn hand_written_client_dribbling_one_byte_per_write_is_accepted() {
    run(async {
        let keys = derive_session_keys(&key(), &id(), &NONCE_C, &NONCE_S);
        let (result, _) = server_vs_script(|c| async move {
            for byte in client_hello(&NONCE_C, &id()) {
                write(&c, &[byte]).await;
            }
            assert_eq!(read_n(&c, 40).await, server_hello(&NONCE_S));
            let proof = proof_msg(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S));
            for byte in proof {
                write(&c, &[byte]).await;
            }
            assert_eq!(read_n(&c, 34).await, server_proof_msg(&key()));
            for byte in client_frames(&keys.client_to_server, &[call(9, "x")]).concat() {
                write(&c, &[byte]).await;
            }
        })
        .await;
        let mut server = result.unwrap();
        assert_call(server.reader.recv().await.unwrap().unwrap(), 9, "x");
    });
}

// ---------------------------------------------------------------------------------------------
// Credentials

#[test]
fn wrong_key_fails_on_both_sides() {
    run(async {
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let (client, server) = zip(
            connect_with_nonce(a.clone(), a, &id(), &other_key(), &config, NONCE_C),
            accept_with_nonce(b.clone(), b, &ring, &config, NONCE_S, |_| {}),
        )
        .await;
        let server = server.unwrap_err();
        assert!(matches!(&server, HandshakeError::BadClientProof(k) if k == "test-key"));
        assert!(server.is_auth_failure());
        let client = client.unwrap_err();
        assert!(matches!(
            client,
            HandshakeError::Refused(Refusal::AuthFailed)
        ));
        assert!(client.is_auth_failure());
    });
}

#[test]
fn unknown_key_id_fails_on_both_sides() {
    run(async {
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let nobody = KeyId::new("nobody").unwrap();
        let (client, server) = zip(
            connect_with_nonce(a.clone(), a, &nobody, &key(), &config, NONCE_C),
            accept_with_nonce(b.clone(), b, &ring, &config, NONCE_S, |_| {}),
        )
        .await;
        assert!(matches!(
            server,
            Err(HandshakeError::UnknownKeyId(ref k)) if k == "nobody"
        ));
        assert!(matches!(
            client,
            Err(HandshakeError::Refused(Refusal::AuthFailed))
        ));
    });
}

#[test]
fn unknown_key_id_and_wrong_key_look_identical_on_the_wire() {
    run(async {
        let script = |key_id: &'static str, key: SecretKey| {
            move |c: UnixStream| async move {
                let key_id = KeyId::new(key_id).unwrap();
                write(&c, &client_hello(&NONCE_C, &key_id)).await;
                let _ = read_n(&c, 40).await;
                write(
                    &c,
                    &proof_msg(&client_proof(&key, &key_id, &NONCE_C, &NONCE_S)),
                )
                .await;
            }
        };
        let (unknown, unknown_bytes) = server_vs_script(script("nobody", key())).await;
        let (wrong, wrong_bytes) = server_vs_script(script("test-key", other_key())).await;
        assert!(matches!(unknown, Err(HandshakeError::UnknownKeyId(_))));
        assert!(matches!(wrong, Err(HandshakeError::BadClientProof(_))));
        let mut expected = server_hello(&NONCE_S);
        expected.extend_from_slice(&[TYPE_SERVER_PROOF, Refusal::AuthFailed.code()]);
        assert_eq!(unknown_bytes, expected);
        assert_eq!(wrong_bytes, expected);
    });
}

// ---------------------------------------------------------------------------------------------
// ClientHello checks

#[test]
fn http_request_is_refused_with_bad_magic() {
    run(async {
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::BadMagic { got }) if &got == b"GET "
        ));
        assert_eq!(sent, [b'R', b'P', b'C', b'K', 0x01, 0x02, 0x01]);
        assert_eq!(sent, refusal(Refusal::BadMagic));
    });
}

#[test]
fn bad_magic_is_refused_after_four_bytes() {
    run(async {
        // Only four bytes, and the client keeps the connection open: the server must not wait
        // for a whole hello before refusing.
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, b"SSH-").await;
        })
        .await;
        assert!(matches!(result, Err(HandshakeError::BadMagic { got }) if &got == b"SSH-"));
        assert_eq!(sent, refusal(Refusal::BadMagic));
    });
}

#[test]
fn each_bad_field_is_refused_as_soon_as_its_byte_has_arrived() {
    run(async {
        // A hello cut short right after the bad field, the connection kept open: the server
        // must not wait for the rest of the hello (or its deadline) before refusing.
        let cases: [(&[u8], Refusal); 3] = [
            (b"RPCK\x02", Refusal::UnsupportedVersion),
            (b"RPCK\x01\x03", Refusal::Malformed),
            (b"RPCK\x01\x01\x04", Refusal::UnsupportedSuite),
        ];
        for (prefix, want) in cases {
            let (result, sent) = server_vs_script(|c| async move {
                write(&c, prefix).await;
            })
            .await;
            let refused = match &result {
                Err(HandshakeError::UnsupportedVersion { got: 2 }) => Refusal::UnsupportedVersion,
                Err(HandshakeError::UnexpectedMessage { got: 3, .. }) => Refusal::Malformed,
                Err(HandshakeError::UnsupportedSuite { got: 4 }) => Refusal::UnsupportedSuite,
                other => panic!("{prefix:02x?}: got {other:?}"),
            };
            assert_eq!(refused, want, "{prefix:02x?}");
            assert_eq!(sent, refusal(want), "{prefix:02x?}");
        }
    });
}

#[test]
fn wrong_client_version_is_refused() {
    run(async {
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &raw_hello(2, TYPE_CLIENT_HELLO, 1, 8, b"test-key")).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnsupportedVersion { got: 2 })
        ));
        assert_eq!(sent, refusal(Refusal::UnsupportedVersion));
        assert_eq!(sent[4], 1, "the refusal carries the server's version");
    });
}

#[test]
fn client_rejects_a_server_answering_version_2() {
    run(async {
        // Accepting hello with version 2.
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            let mut hello = server_hello(&NONCE_S);
            hello[4] = 2;
            write(&s, &hello).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnsupportedVersion { got: 2 })
        ));

        // Refusal from a version-2 server that does not speak version 1.
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, &[b'R', b'P', b'C', b'K', 2, TYPE_SERVER_HELLO, 2]).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::Refused(Refusal::UnsupportedVersion))
        ));
    });
}

#[test]
fn unsupported_suite_is_refused_both_ways() {
    run(async {
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &raw_hello(1, TYPE_CLIENT_HELLO, 4, 8, b"test-key")).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnsupportedSuite { got: 4 })
        ));
        assert_eq!(sent, refusal(Refusal::UnsupportedSuite));

        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            let mut hello = server_hello(&NONCE_S);
            hello[7] = 9;
            write(&s, &hello).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnsupportedSuite { got: 9 })
        ));
    });
}

#[test]
fn wrong_type_byte_in_client_hello_is_malformed() {
    run(async {
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &raw_hello(1, TYPE_CLIENT_PROOF, 1, 8, b"test-key")).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnexpectedMessage {
                expected: TYPE_CLIENT_HELLO,
                got: TYPE_CLIENT_PROOF
            })
        ));
        assert_eq!(sent, refusal(Refusal::Malformed));
    });
}

#[test]
fn key_id_length_0_and_65_and_bad_characters_are_malformed() {
    run(async {
        let long = vec![b'a'; 65];
        let cases: Vec<(u8, Vec<u8>)> = vec![
            (0, Vec::new()),
            (65, long),
            (255, vec![b'a'; 255]),
            (6, b"bad/id".to_vec()),
            (4, vec![0xff, 0xfe, b'a', b'b']),
        ];
        for (len, id_bytes) in cases {
            let hello = raw_hello(1, TYPE_CLIENT_HELLO, 1, len, &id_bytes);
            let (result, sent) = server_vs_script(|c| async move {
                write(&c, &hello).await;
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::Malformed(_))),
                "length {len}: {result:?}"
            );
            assert_eq!(sent, refusal(Refusal::Malformed), "length {len}");
        }
    });
}

#[test]
fn key_id_of_64_bytes_is_accepted_as_a_length() {
    run(async {
        let long_id = "k".repeat(64);
        let (result, sent) = server_vs_script(|c| async move {
            let id = KeyId::new(&long_id).unwrap();
            write(&c, &client_hello(&NONCE_C, &id)).await;
            let _ = read_n(&c, 40).await;
            write(&c, &proof_msg(&[0u8; 32])).await;
        })
        .await;
        // It gets as far as the proof: an unknown id, not a malformed hello.
        assert!(matches!(result, Err(HandshakeError::UnknownKeyId(ref k)) if k.len() == 64));
        assert_eq!(&sent[..40], server_hello(&NONCE_S));
    });
}

#[test]
fn hello_cut_short_is_closed_without_an_answer() {
    run(async {
        let hello = client_hello(&NONCE_C, &id());
        for cut in [0, 3, 4, 6, 39, 40, hello.len() - 1] {
            let part = hello[..cut].to_vec();
            let (result, sent) = server_vs_script(|c| async move {
                write(&c, &part).await;
                c.shutdown(Shutdown::Write).unwrap();
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::Closed)),
                "cut at {cut}: {result:?}"
            );
            assert!(sent.is_empty(), "cut at {cut}");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// ClientProof checks

#[test]
fn proof_of_0_1_31_or_32_bytes_then_eof_is_closed() {
    run(async {
        let proof = proof_msg(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S));
        for n in [0, 1, 31, 32] {
            let part = proof[..n].to_vec();
            let (result, sent) = server_vs_script(|c| async move {
                write(&c, &client_hello(&NONCE_C, &id())).await;
                let _ = read_n(&c, 40).await;
                write(&c, &part).await;
                c.shutdown(Shutdown::Write).unwrap();
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::Closed)),
                "{n} bytes: {result:?}"
            );
            assert_eq!(sent, server_hello(&NONCE_S), "{n} bytes: no refusal");
        }
    });
}

#[test]
fn proof_message_with_a_wrong_type_byte_is_unexpected() {
    run(async {
        // 33 bytes: a wrong type byte then the right proof.
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            let mut msg = vec![0x05];
            msg.extend_from_slice(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S));
            write(&c, &msg).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnexpectedMessage {
                expected: TYPE_CLIENT_PROOF,
                got: 0x05
            })
        ));
        let mut expected = server_hello(&NONCE_S);
        expected.extend_from_slice(&[TYPE_SERVER_PROOF, Refusal::Malformed.code()]);
        assert_eq!(sent, expected);
    });
}

#[test]
fn second_client_hello_instead_of_the_proof_is_unexpected() {
    run(async {
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            write(&c, &client_hello(&NONCE_C, &id())).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnexpectedMessage {
                expected: TYPE_CLIENT_PROOF,
                got: b'R'
            })
        ));
        let mut expected = server_hello(&NONCE_S);
        expected.extend_from_slice(&[TYPE_SERVER_PROOF, Refusal::Malformed.code()]);
        assert_eq!(sent, expected);
    });
}

#[test]
fn extra_bytes_after_the_proof_belong_to_the_session_and_must_verify() {
    run(async {
        let proof = proof_msg(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S));

        // A 33-byte proof (one byte too many): the extra byte starts a frame that never ends.
        let extra = [proof.clone(), vec![0x00]].concat();
        let (result, _) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            write(&c, &extra).await;
            let _ = read_n(&c, 34).await;
            c.shutdown(Shutdown::Write).unwrap();
        })
        .await;
        let mut server = result.unwrap();
        assert!(matches!(
            server.reader.recv().await,
            Err(SessionError::Frame(FrameError::Truncated {
                have: 1,
                need: 4
            }))
        ));

        // A length below the tag size.
        let extra = [proof.clone(), vec![0, 0, 0, 5]].concat();
        let (result, _) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            write(&c, &extra).await;
        })
        .await;
        assert!(matches!(
            result.unwrap().reader.recv().await,
            Err(SessionError::Frame(FrameError::TooShort {
                len: 5,
                min: 32
            }))
        ));

        // A well-formed but untagged frame.
        let mut extra = proof.clone();
        extra.extend_from_slice(&40u32.to_be_bytes());
        extra.extend_from_slice(&[0u8; 40]);
        let (result, _) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            write(&c, &extra).await;
        })
        .await;
        assert!(matches!(
            result.unwrap().reader.recv().await,
            Err(SessionError::BadTag { seq: 0 })
        ));
    });
}

#[test]
fn tampered_proof_is_rejected_at_every_byte() {
    run(async {
        let good = client_proof(&key(), &id(), &NONCE_C, &NONCE_S);
        for i in 0..good.len() {
            let mut bad = good;
            bad[i] ^= 1 << (i % 8);
            let (result, sent) = server_vs_script(|c| async move {
                write(&c, &client_hello(&NONCE_C, &id())).await;
                let _ = read_n(&c, 40).await;
                write(&c, &proof_msg(&bad)).await;
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::BadClientProof(_))),
                "flip in byte {i}: {result:?}"
            );
            assert_eq!(sent[40..], [TYPE_SERVER_PROOF, Refusal::AuthFailed.code()]);
        }
    });
}

#[test]
fn proof_replayed_from_an_earlier_connection_is_rejected() {
    run(async {
        let (ring, config) = (ring(), config());

        // Connection 1: a genuine client, recorded on the wire.
        let (a, b) = pair();
        let (recorder, log) = Recorder::new(a.clone());
        let (client, server) = zip(
            connect(a, recorder, &id(), &key(), &config),
            accept(b.clone(), b, &ring, &config),
        )
        .await;
        client.unwrap();
        server.unwrap();
        let recorded = log.bytes();
        assert_eq!(recorded.len(), 48 + 33, "hello and proof");
        assert_eq!(recorded[48], TYPE_CLIENT_PROOF);

        // Connection 2: the attacker replays the whole recorded transcript. The server picks a
        // fresh nonce, so the old proof cannot verify.
        let (a, b) = pair();
        let attacker = async {
            write(&a, &recorded[..48]).await;
            let _ = read_n(&a, 40).await;
            write(&a, &recorded[48..]).await;
            a
        };
        let (server, a) = zip(accept(b.clone(), b, &ring, &config), attacker).await;
        assert!(matches!(server, Err(HandshakeError::BadClientProof(_))));
        assert_eq!(
            read_until_closed(&a).await,
            [TYPE_SERVER_PROOF, Refusal::AuthFailed.code()]
        );
    });
}

#[test]
fn reflected_server_proof_is_rejected_as_client_proof() {
    run(async {
        // The server-role proof over the same nonces, sent as the client's.
        let (result, sent) = server_vs_script(|c| async move {
            write(&c, &client_hello(&NONCE_C, &id())).await;
            let _ = read_n(&c, 40).await;
            write(
                &c,
                &proof_msg(&server_proof(&key(), &id(), &NONCE_C, &NONCE_S)),
            )
            .await;
        })
        .await;
        assert!(matches!(result, Err(HandshakeError::BadClientProof(_))));
        assert_eq!(sent[40..], [TYPE_SERVER_PROOF, Refusal::AuthFailed.code()]);
    });
}

// ---------------------------------------------------------------------------------------------
// Server checks done by the client

#[test]
fn impostor_server_with_another_key_fails_its_proof() {
    run(async {
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, &server_hello(&NONCE_S)).await;
            let _ = read_n(&s, 33).await;
            write(&s, &server_proof_msg(&other_key())).await;
        })
        .await;
        let err = result.unwrap_err();
        assert!(matches!(err, HandshakeError::BadServerProof));
        assert!(err.is_auth_failure());
    });
}

#[test]
fn server_reflecting_the_client_proof_fails() {
    run(async {
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, &server_hello(&NONCE_S)).await;
            let proof = read_n(&s, 33).await;
            let mut answer = vec![TYPE_SERVER_PROOF, 0];
            answer.extend_from_slice(&proof[1..]);
            write(&s, &answer).await;
        })
        .await;
        assert!(matches!(result, Err(HandshakeError::BadServerProof)));
    });
}

#[test]
fn client_rejects_non_rpckit_and_out_of_order_servers() {
    run(async {
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        })
        .await;
        assert!(matches!(result, Err(HandshakeError::BadMagic { got }) if &got == b"HTTP"));

        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            let mut hello = server_hello(&NONCE_S);
            hello[5] = TYPE_SERVER_PROOF;
            write(&s, &hello).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnexpectedMessage {
                expected: TYPE_SERVER_HELLO,
                got: TYPE_SERVER_PROOF
            })
        ));

        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, &server_hello(&NONCE_S)).await;
            let _ = read_n(&s, 33).await;
            write(&s, &server_hello(&NONCE_S)).await;
        })
        .await;
        assert!(matches!(
            result,
            Err(HandshakeError::UnexpectedMessage {
                expected: TYPE_SERVER_PROOF,
                got: b'R'
            })
        ));

        // The server hangs up in the middle of its hello.
        let result = client_vs_script(&key(), |s| async move {
            let _ = read_n(&s, 48).await;
            write(&s, &server_hello(&NONCE_S)[..20]).await;
        })
        .await;
        assert!(matches!(result, Err(HandshakeError::Closed)));
    });
}

#[test]
fn every_refusal_status_reaches_the_client_in_both_positions() {
    run(async {
        for code in [1u8, 2, 3, 4, 5, 6, 7, 8, 9, 10, 200, 255] {
            let reason = Refusal::from_code(code);
            assert_eq!(reason.code(), code);
            if code > 9 {
                assert_eq!(reason, Refusal::Other(code));
            }

            let result = client_vs_script(&key(), |s| async move {
                let _ = read_n(&s, 48).await;
                write(&s, &server_refusal(reason)).await;
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::Refused(r)) if r == reason),
                "hello status {code}"
            );

            let result = client_vs_script(&key(), |s| async move {
                let _ = read_n(&s, 48).await;
                write(&s, &server_hello(&NONCE_S)).await;
                let _ = read_n(&s, 33).await;
                write(&s, &[TYPE_SERVER_PROOF, code]).await;
            })
            .await;
            assert!(
                matches!(result, Err(HandshakeError::Refused(r)) if r == reason),
                "proof status {code}"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Deadlines

#[test]
fn silent_client_times_out() {
    run(async {
        let (a, b) = pair();
        let result = accept(b.clone(), b, &ring(), &short_config()).await;
        assert!(matches!(result, Err(HandshakeError::Timeout(d)) if d == SHORT));
        drop(a);
    });
}

#[test]
fn client_that_stops_after_its_hello_times_out() {
    run(async {
        let (a, b) = pair();
        write(&a, &client_hello(&NONCE_C, &id())).await;
        let result = accept(b.clone(), b, &ring(), &short_config()).await;
        assert!(matches!(result, Err(HandshakeError::Timeout(_))));
        drop(a);
    });
}

#[test]
fn silent_server_times_out() {
    run(async {
        let (a, b) = pair();
        let result = connect(a.clone(), a, &id(), &key(), &short_config()).await;
        assert!(matches!(result, Err(HandshakeError::Timeout(d)) if d == SHORT));
        drop(b);
    });
}

#[test]
fn server_that_never_sends_its_proof_times_out() {
    run(async {
        let (a, b) = pair();
        // The server's hello is already waiting; its proof never comes.
        write(&b, &server_hello(&NONCE_S)).await;
        let result = connect(a.clone(), a, &id(), &key(), &short_config()).await;
        assert!(matches!(result, Err(HandshakeError::Timeout(_))));
        drop(b);
    });
}

// ---------------------------------------------------------------------------------------------
// Nonces

#[test]
fn ten_thousand_nonces_are_distinct() {
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        assert!(seen.insert(nonce()), "repeated handshake nonce");
    }
    let mut seen = HashSet::new();
    for _ in 0..10_000 {
        let mut n = [0u8; NONCE_LEN];
        os_random(&mut n);
        assert_ne!(n, [0u8; NONCE_LEN]);
        assert!(seen.insert(n), "repeated os_random output");
    }
}

// ---------------------------------------------------------------------------------------------
// The session right after the handshake

#[test]
fn frames_built_from_the_derived_keys_are_accepted() {
    run(async {
        let mut e = established().await;
        let frames = client_frames(&e.keys.client_to_server, &[call(1, "a"), call(2, "b")]);
        write(&e.client_raw, &frames.concat()).await;
        assert_call(e.server.reader.recv().await.unwrap().unwrap(), 1, "a");
        assert_call(e.server.reader.recv().await.unwrap().unwrap(), 2, "b");
        // The genuine client writer has sent nothing yet, so its next frame carries seq 0; the
        // server, now expecting seq 2, rejects it: injected frames cannot go unnoticed.
        e.client.writer.push_client(&call(3, "c")).unwrap();
        e.client.writer.flush().await.unwrap();
        assert!(matches!(
            e.server.reader.recv().await,
            Err(SessionError::BadTag { seq: 2 })
        ));
    });
}

#[test]
fn tampered_frame_is_rejected() {
    run(async {
        let probe = client_frames(&[0; 32], &[call(1, "hello")]).remove(0);
        // Flip a bit in the first and last payload byte and the first and last tag byte.
        for pos in [4, probe.len() - 33, probe.len() - 32, probe.len() - 1] {
            let mut e = established().await;
            let mut frame = client_frames(&e.keys.client_to_server, &[call(1, "hello")]).remove(0);
            frame[pos] ^= 0x01;
            write(&e.client_raw, &frame).await;
            assert!(
                matches!(
                    e.server.reader.recv().await,
                    Err(SessionError::BadTag { seq: 0 })
                ),
                "flip at byte {pos}"
            );
        }
    });
}

#[test]
fn replayed_frame_is_rejected() {
    run(async {
        let mut e = established().await;
        let frame = client_frames(&e.keys.client_to_server, &[call(1, "once")]).remove(0);
        write(&e.client_raw, &frame).await;
        assert_call(e.server.reader.recv().await.unwrap().unwrap(), 1, "once");
        write(&e.client_raw, &frame).await;
        assert!(matches!(
            e.server.reader.recv().await,
            Err(SessionError::BadTag { seq: 1 })
        ));
    });
}

#[test]
fn reordered_frames_are_rejected() {
    run(async {
        let mut e = established().await;
        let frames = client_frames(
            &e.keys.client_to_server,
            &[call(1, "first"), call(2, "second")],
        );
        write(
            &e.client_raw,
            &[frames[1].clone(), frames[0].clone()].concat(),
        )
        .await;
        assert!(matches!(
            e.server.reader.recv().await,
            Err(SessionError::BadTag { seq: 0 })
        ));
    });
}

#[test]
fn dropped_frame_makes_the_next_one_fail() {
    run(async {
        let mut e = established().await;
        let frames = client_frames(
            &e.keys.client_to_server,
            &[call(1, "first"), call(2, "second")],
        );
        write(&e.client_raw, &frames[1]).await;
        assert!(matches!(
            e.server.reader.recv().await,
            Err(SessionError::BadTag { seq: 0 })
        ));
    });
}

#[test]
fn frame_reflected_to_its_sender_is_rejected() {
    run(async {
        let mut e = established().await;
        // A genuine server frame, sent back to the server as if the client had sent it.
        let frame = server_frames(
            &e.keys.server_to_client,
            &[ServerMessage::Ping { nonce: 1 }],
        )
        .remove(0);
        write(&e.client_raw, &frame).await;
        assert!(matches!(
            e.server.reader.recv().await,
            Err(SessionError::BadTag { seq: 0 })
        ));
    });
}

#[test]
fn tampered_server_frame_is_rejected_by_the_client() {
    run(async {
        let mut e = established().await;
        let mut frame = server_frames(
            &e.keys.server_to_client,
            &[ServerMessage::Reply {
                id: 1,
                result: Ok(Response::Uppercase("HELLO".into())),
            }],
        )
        .remove(0);
        let last = frame.len() - 33;
        frame[last] ^= 0x20; // 'O' -> 'o'
        write(&e.server_raw, &frame).await;
        assert!(matches!(
            e.client.reader.recv().await,
            Err(SessionError::BadTag { seq: 0 })
        ));
    });
}

#[test]
fn frame_pipelined_with_the_proof_is_read_by_the_session() {
    run(async {
        // With the fixed server nonce the client can compute everything up front: hello, proof
        // and two tagged calls go out in a single write, before the server has read anything.
        let keys = derive_session_keys(&key(), &id(), &NONCE_C, &NONCE_S);
        let mut all = client_hello(&NONCE_C, &id());
        all.extend_from_slice(&proof_msg(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S)));
        all.extend_from_slice(
            &client_frames(
                &keys.client_to_server,
                &[call(1, "early"), call(2, "later")],
            )
            .concat(),
        );
        let (a, b) = pair();
        write(&a, &all).await;
        let (w, log) = Recorder::new(b.clone());
        let mut server = accept_with_nonce(b, w, &ring(), &config(), NONCE_S, |_| {})
            .await
            .unwrap();
        assert!(
            server.reader.has_buffered_frame(),
            "the frames arrived with the proof and must still be buffered"
        );
        assert_call(server.reader.recv().await.unwrap().unwrap(), 1, "early");
        assert_call(server.reader.recv().await.unwrap().unwrap(), 2, "later");

        // The ServerProof waited in the writer: it leaves with the first answers, in one write.
        assert_eq!(log.writes().len(), 1, "only the ServerHello so far");
        let answer = ServerMessage::<Response>::Pong { nonce: 1 };
        server.writer.push_server(&answer).unwrap();
        server.writer.flush().await.unwrap();
        let mut want = server_proof_msg(&key());
        want.extend_from_slice(&server_frames(&keys.server_to_client, &[answer])[0]);
        assert_eq!(
            log.writes(),
            [server_hello(&NONCE_S).to_vec(), want.clone()]
        );
        assert_eq!(read_n(&a, 40).await, server_hello(&NONCE_S));
        assert_eq!(read_n(&a, want.len()).await, want);
    });
}

#[test]
fn call_written_together_with_the_proof_is_read_by_the_session() {
    run(async {
        // The usual case with a random server nonce: read the hello, then write the proof and
        // the first tagged call in one write.
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let client_side = async {
            write(&a, &client_hello(&NONCE_C, &id())).await;
            let hello = read_n(&a, 40).await;
            let nonce_s: [u8; NONCE_LEN] = hello[8..].try_into().unwrap();
            let keys = derive_session_keys(&key(), &id(), &NONCE_C, &nonce_s);
            let mut out = proof_msg(&client_proof(&key(), &id(), &NONCE_C, &nonce_s));
            out.extend_from_slice(&client_frames(&keys.client_to_server, &[call(7, "now")])[0]);
            write(&a, &out).await;
            let mut reply = vec![TYPE_SERVER_PROOF, 0];
            reply.extend_from_slice(&server_proof(&key(), &id(), &NONCE_C, &nonce_s));
            assert_eq!(read_n(&a, 34).await, reply);
        };
        let server_side = async {
            let mut server = accept(b.clone(), b, &ring, &config).await.unwrap();
            assert_call(server.reader.recv().await.unwrap().unwrap(), 7, "now");
            // The ServerProof leaves with the first flush.
            server.writer.flush().await.unwrap();
        };
        zip(server_side, client_side).await;
    });
}

#[test]
fn connect_pipelined_sends_its_first_frames_in_the_proofs_write() {
    run(async {
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let (w, log) = Recorder::new(a.clone());
        let server_side = async {
            let mut server = accept_with_nonce(b.clone(), b, &ring, &config, NONCE_S, |_| {})
                .await
                .unwrap();
            // The server reads them as the session's first frames (sequence numbers 0 and 1).
            assert_call(server.reader.recv().await.unwrap().unwrap(), 7, "now");
            assert_call(server.reader.recv().await.unwrap().unwrap(), 8, "too");
            server
                .writer
                .push_server(&ServerMessage::<Response>::Pong { nonce: 7 })
                .unwrap();
            server.writer.flush().await.unwrap();
        };
        let (client, ()) = zip(
            connect_policy_with_nonce(a, w, &id(), &key(), &config, &integrity(), NONCE_C, |w| {
                w.push_client(&call(7, "now"))?;
                w.push_client(&call(8, "too"))
            }),
            server_side,
        )
        .await;
        let (mut client, pushed) = client.unwrap();
        pushed.unwrap();
        // The answer came behind the ServerProof.
        let payload = client.reader.recv().await.unwrap().unwrap();
        assert!(matches!(
            decode_server::<Response>(payload).unwrap(),
            ServerMessage::Pong { nonce: 7 }
        ));

        // Two writes: the hello, then the proof with both frames behind it.
        let writes = log.writes();
        assert_eq!(writes.len(), 2, "{writes:?}");
        assert_eq!(writes[0], client_hello(&NONCE_C, &id()));
        let proof = proof_msg(&client_proof(&key(), &id(), &NONCE_C, &NONCE_S));
        let keys = derive_session_keys(&key(), &id(), &NONCE_C, &NONCE_S);
        let frames = client_frames(&keys.client_to_server, &[call(7, "now"), call(8, "too")]);
        assert_eq!(writes[1], [proof, frames.concat()].concat());
    });
}

#[test]
fn connect_pipelined_against_a_wrong_key_fails_and_the_server_runs_nothing() {
    run(async {
        let (a, b) = pair();
        let (ring, config) = (ring(), config());
        let (client, server) = zip(
            connect_policy_with_nonce(
                a.clone(),
                a,
                &id(),
                &other_key(),
                &config,
                &integrity(),
                NONCE_C,
                |w| w.push_client(&call(7, "now")),
            ),
            accept_with_nonce(b.clone(), b, &ring, &config, NONCE_S, |_| {}),
        )
        .await;
        assert!(matches!(
            client.map(|_| ()),
            Err(HandshakeError::Refused(Refusal::AuthFailed))
        ));
        assert!(matches!(server, Err(HandshakeError::BadClientProof(_))));
    });
}

#[test]
fn frame_pipelined_with_the_server_proof_is_read_by_the_client() {
    run(async {
        let keys = derive_session_keys(&key(), &id(), &NONCE_C, &NONCE_S);
        let result = client_vs_script(&key(), |s| async move {
            assert_eq!(read_n(&s, 48).await, client_hello(&NONCE_C, &id()));
            write(&s, &server_hello(&NONCE_S)).await;
            let _ = read_n(&s, 33).await;
            let mut out = server_proof_msg(&key());
            out.extend_from_slice(
                &server_frames(&keys.server_to_client, &[ServerMessage::Ping { nonce: 42 }])[0],
            );
            write(&s, &out).await;
        })
        .await;
        let mut client = result.unwrap();
        let payload = client.reader.recv().await.unwrap().unwrap();
        assert!(matches!(
            decode_server::<Response>(payload).unwrap(),
            ServerMessage::Ping { nonce: 42 }
        ));
    });
}
