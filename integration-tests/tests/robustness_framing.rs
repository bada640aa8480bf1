//! Robustness catalogue, "Framing" (cases 1–12), against the real `rpc-server`.
//!
//! Frames after the handshake are `len (u32 BE) | payload | tag (32)`; the tests write them by
//! hand on an authenticated raw session, or write raw bytes before the handshake.

mod robustness_common;

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncWrite, AsyncWriteExt};
use robustness_common::*;
use rpckit_integration_tests::{raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::{ClientMessage, Refusal, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(20);
/// RSS growth allowed while a test sends hostile lengths (the point is "not the declared size").
const RSS_SLACK_KIB: u64 = 64 * 1024;

fn server(key: &TestKey, extra: &[&str]) -> ServerProcess {
    ServerProcess::start(&key.path, extra)
}

fn rss(server: &ServerProcess) -> u64 {
    server.rss_kib().expect("server RSS readable")
}

/// Writes raw bytes on an authenticated session and returns how the server ended it.
fn raw_bytes_after_handshake(
    server: &ServerProcess,
    key: &TestKey,
    bytes: &[u8],
) -> (Vec<ServerMessage<Response>>, Result<(), String>) {
    within(STEP, async {
        let (stream, session) = raw_session(server.addr, key).await;
        let (mut reader, _writer) = session.split();
        let mut s = stream.clone();
        // The server may close before all is written: that is fine.
        let _ = s.write_all(bytes).await;
        let _ = s.flush().await;
        until_closed(&mut reader).await
    })
}

#[test]
fn case_01_length_zero_frame_is_rejected_without_spin_or_panic() {
    let key = TestKey::new("framing");
    let mut server = server(&key, &[]);
    let started = Instant::now();
    let (got, _end) = raw_bytes_after_handshake(&server, &key, &[0, 0, 0, 0]);
    assert!(got.is_empty(), "no answer to a zero-length frame: {got:?}");
    assert!(
        server
            .wait_for_log("frame length 0 is below the minimum", STEP)
            .is_some(),
        "log names the zero length:\n{}",
        server.log_text()
    );
    // Closed by the rule, not by an idle or keepalive timer (300 s / 30 s by default).
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_serving(server.addr, &key);
    server.assert_not_logged("panicked");
}

#[test]
fn case_02_length_0xffffffff_without_body_closes_at_once_without_allocating() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    let before = rss(&server);
    let (got, _) = raw_bytes_after_handshake(&server, &key, &[0xFF; 4]);
    assert!(got.is_empty());
    assert!(server
        .wait_for_log("frame length 4294967295 exceeds the limit", STEP)
        .is_some());
    let after = rss(&server);
    assert!(
        after < before + RSS_SLACK_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_serving(server.addr, &key);
}

#[test]
fn case_03_length_max_plus_one_is_rejected_before_the_body() {
    let key = TestKey::new("framing");
    let server = server(&key, &["--max-frame", "4096"]);
    // Only the prefix: the server must not wait for 4097 body bytes.
    let (got, _) = raw_bytes_after_handshake(&server, &key, &4097u32.to_be_bytes());
    assert!(got.is_empty());
    assert!(server
        .wait_for_log("frame length 4097 exceeds the limit of 4096", STEP)
        .is_some());

    // A complete, correctly tagged frame of max + 1 bytes is rejected too.
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        writer
            .push_client(&call(1, Request::Echo(vec![7; 4056])))
            .unwrap();
        assert_eq!(writer.pending(), 4 + 4097, "frame is max + 1");
        writer.flush().await.unwrap();
        let (got, _) = until_closed(&mut reader).await;
        assert!(got.is_empty(), "never dispatched: {got:?}");
    });
    assert!(server
        .wait_for_log("frame length 4097 exceeds the limit of 4096", STEP)
        .is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_04_length_exactly_max_is_accepted() {
    let key = TestKey::new("framing");
    let server = server(&key, &["--max-frame", "4096"]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let payload = vec![0xA5; 4055];
        writer
            .push_client(&call(1, Request::Echo(payload.clone())))
            .unwrap();
        assert_eq!(writer.pending(), 4 + 4096, "frame is exactly max");
        writer.flush().await.unwrap();
        assert_eq!(reply_to(&mut reader, 1).await, Ok(Response::Echo(payload)));
        // And the connection goes on.
        send(&mut writer, &[call(2, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 2).await, Ok(Response::Pong));
    });
}

/// Log lines that mention `peer` (its `ip:port`).
fn lines_about(server: &ServerProcess, peer: &str) -> usize {
    server.log_count(peer)
}

#[test]
fn case_05_random_garbage_is_closed_quickly_without_panic_or_log_flood() {
    let key = TestKey::new("framing");
    // A long handshake deadline: a close must come from the garbage, not from the timer.
    let mut server = server(&key, &["--handshake-timeout", "60s"]);
    let mut garbage = vec![0u8; 4096];
    handshake::os_random(&mut garbage);
    garbage[0] = b'X'; // not the first byte of "RPCK"

    // Before the handshake.
    let mut s = tcp(server.addr);
    let peer = s.local_addr().unwrap().to_string();
    let started = Instant::now();
    let _ = s.write_all(&garbage);
    let (bytes, ended) = read_to_end(&mut s, STEP, 1 << 20);
    assert!(ended, "server closed the connection");
    assert!(started.elapsed() < Duration::from_secs(15));
    assert_eq!(
        bytes,
        refusal(Refusal::BadMagic),
        "a BadMagic refusal, nothing else"
    );
    assert!(server.wait_for_log("not an rpckit peer", STEP).is_some());
    assert!(
        lines_about(&server, &peer) <= 2,
        "log flood:\n{}",
        server.log_text()
    );

    // After the handshake: garbage where frames should be.
    let (got, _) = within(STEP, async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let peer = stream.local_addr().unwrap().to_string();
        let (mut reader, _w) = session.split();
        let mut w = stream.clone();
        // A length that the garbage completes, so the frame is read whole and its tag fails.
        let mut garbage = garbage.clone();
        garbage[..4].copy_from_slice(&2048u32.to_be_bytes());
        let _ = w.write_all(&garbage).await;
        let r = until_closed(&mut reader).await;
        // Let the server finish logging the close.
        assert!(server.wait_for_log("closed: bad input", STEP).is_some());
        assert!(
            lines_about(&server, &peer) <= 3,
            "log flood:\n{}",
            server.log_text()
        );
        r
    });
    assert!(got.is_empty());
    assert_serving(server.addr, &key);
    server.assert_not_logged("panicked");
}

#[test]
fn case_06_http_tls_and_ssh_bytes_are_refused_without_large_allocation() {
    let key = TestKey::new("framing");
    let server = server(&key, &["--handshake-timeout", "60s"]);
    let before = rss(&server);
    let tls: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa, 0xbb, 0xcc,
    ];
    let probes: [(&str, &[u8]); 3] = [
        ("http", b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        ("tls", tls),
        ("ssh", b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3\r\n"),
    ];
    for (name, probe) in probes {
        let mut s = tcp(server.addr);
        s.write_all(probe).unwrap();
        let (bytes, ended) = read_to_end(&mut s, STEP, 1 << 20);
        assert!(ended, "{name}: closed");
        assert_eq!(
            bytes,
            refusal(Refusal::BadMagic),
            "{name}: BadMagic refusal"
        );
    }
    // After the handshake, "GET " read as a length is about 1.2 GB.
    let (got, _) = raw_bytes_after_handshake(&server, &key, b"GET / HTTP/1.1\r\n\r\n");
    assert!(got.is_empty());
    assert!(server
        .wait_for_log("frame length 1195725856 exceeds the limit", STEP)
        .is_some());
    let after = rss(&server);
    assert!(
        after < before + RSS_SLACK_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
    assert_serving(server.addr, &key);
}

#[test]
fn case_07_undecodable_body_or_unknown_variant_gets_a_typed_error() {
    let key = TestKey::new("framing");
    let mut server = server(&key, &[]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // Unknown request variant 200.
        send_raw_call(&mut writer, 7, &200u32.to_le_bytes()).await;
        match reply_to(&mut reader, 7).await {
            Err(RpcError::UnknownMethod(_)) => {}
            other => panic!("want UnknownMethod for id 7, got {other:?}"),
        }
        // A body cut short (Sleep without its u64).
        send_raw_call(&mut writer, 8, &[3, 0, 0, 0, 1, 2]).await;
        assert!(matches!(
            reply_to(&mut reader, 8).await,
            Err(RpcError::UnknownMethod(_))
        ));
        // The connection goes on.
        send(&mut writer, &[call(9, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 9).await, Ok(Response::Pong));

        // An envelope header no client message has (variant 5): the connection ends.
        writer
            .push_server(&ServerMessage::<Response>::Goodbye)
            .unwrap();
        writer.flush().await.unwrap();
        let (got, _) = until_closed(&mut reader).await;
        assert!(got.is_empty(), "{got:?}");
    });
    assert!(server.wait_for_log("undecodable envelope", STEP).is_some());
    assert_serving(server.addr, &key);
    server.assert_not_logged("panicked");
}

#[test]
fn case_08_trailing_bytes_after_a_valid_message_are_rejected() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // A valid Ping body plus one byte.
        let mut b = body(&Request::Ping);
        b.push(0);
        send_raw_call(&mut writer, 1, &b).await;
        assert!(matches!(
            reply_to(&mut reader, 1).await,
            Err(RpcError::UnknownMethod(_))
        ));
        // A valid Uppercase body plus bytes.
        let mut b = body(&Request::Uppercase("abc".into()));
        b.extend_from_slice(b"xyz");
        send_raw_call(&mut writer, 2, &b).await;
        assert!(matches!(
            reply_to(&mut reader, 2).await,
            Err(RpcError::UnknownMethod(_))
        ));
        // A control message (Goodbye, header variant 4) followed by 8 stray bytes: the
        // client-side `GoingAway` encoding is exactly that.
        writer
            .push_server(&ServerMessage::<Response>::GoingAway {
                grace: Duration::from_millis(5),
            })
            .unwrap();
        writer.flush().await.unwrap();
        let (got, _) = until_closed(&mut reader).await;
        assert!(got.is_empty(), "{got:?}");
    });
    assert!(server.wait_for_log("trailing bytes", STEP).is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_09_huge_vec_or_string_length_in_a_small_frame_is_a_bounded_error() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    let before = rss(&server);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        for (id, variant) in [(1u64, 0u32), (2, 1)] {
            // Echo (byte string) and Uppercase (String) claiming 2^64 - 1 bytes.
            let mut b = variant.to_le_bytes().to_vec();
            b.extend_from_slice(&u64::MAX.to_le_bytes());
            b.extend_from_slice(b"only a few bytes");
            send_raw_call(&mut writer, id, &b).await;
            assert!(
                matches!(
                    reply_to(&mut reader, id).await,
                    Err(RpcError::UnknownMethod(_))
                ),
                "call {id}"
            );
        }
        send(&mut writer, &[call(3, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 3).await, Ok(Response::Pong));
    });
    let after = rss(&server);
    assert!(
        after < before + RSS_SLACK_KIB,
        "RSS grew from {before} KiB to {after} KiB"
    );
}

/// Writes at most one byte per `write` call.
struct OneByte {
    inner: async_std::net::TcpStream,
    writes: Arc<AtomicUsize>,
}

impl AsyncWrite for OneByte {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let n = buf.len().min(1);
        let r = Pin::new(&mut self.inner).poll_write(cx, &buf[..n]);
        if let Poll::Ready(Ok(k)) = &r {
            if *k > 0 {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

#[test]
fn case_10_stream_written_one_byte_per_write_gives_the_same_result() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    let writes = Arc::new(AtomicUsize::new(0));
    within(STEP, async {
        let stream = async_std::net::TcpStream::connect(server.addr)
            .await
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let w = OneByte {
            inner: stream.clone(),
            writes: writes.clone(),
        };
        // The handshake itself goes one byte per write too.
        let session = handshake::connect(
            stream.clone(),
            w,
            &key.id,
            &key.key,
            &HandshakeConfig::default(),
        )
        .await
        .expect("dribbled handshake succeeds");
        let (mut reader, mut writer) = session.split();
        let msgs = [
            call(1, Request::Uppercase("one byte at a time".into())),
            call(2, Request::Echo(vec![1, 2, 3, 4, 5])),
            call(3, Request::Ping),
        ];
        for m in &msgs {
            writer.push_client(m).unwrap();
        }
        let frame_bytes = writer.pending();
        writer.flush().await.unwrap();
        assert_eq!(
            reply_to(&mut reader, 1).await,
            Ok(Response::Uppercase("ONE BYTE AT A TIME".into()))
        );
        assert_eq!(
            reply_to(&mut reader, 2).await,
            Ok(Response::Echo(vec![1, 2, 3, 4, 5]))
        );
        assert_eq!(reply_to(&mut reader, 3).await, Ok(Response::Pong));
        // Hello (40 + id) + proof (33) + frames, all one byte per write.
        let hello = 40 + key.id.as_str().len();
        assert_eq!(writes.load(Ordering::Relaxed), hello + 33 + frame_bytes);
    });
}

#[test]
fn case_11_many_frames_in_one_write_are_all_processed_in_order() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // A long call, then its cancel: only processing in order cancels it.
        writer
            .push_client(&call(1000, Request::Sleep { ms: 60_000 }))
            .unwrap();
        writer
            .push_client(&ClientMessage::<Request>::Cancel { id: 1000 })
            .unwrap();
        for i in 0..200u64 {
            writer
                .push_client(&call(i, Request::Echo(i.to_le_bytes().to_vec())))
                .unwrap();
        }
        writer.push_client(&call(500, Request::Ping)).unwrap();
        writer.flush().await.unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..201 {
            match recv(&mut reader).await {
                Ok(Some(ServerMessage::Reply { id: 500, result })) => {
                    assert_eq!(result, Ok(Response::Pong));
                    assert!(seen.insert(500));
                }
                Ok(Some(ServerMessage::Reply { id, result })) => {
                    assert!(id < 200, "unexpected reply to {id}: {result:?}");
                    assert_eq!(result, Ok(Response::Echo(id.to_le_bytes().to_vec())));
                    assert!(seen.insert(id), "one answer per id");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(seen.len(), 201);
    });
    assert!(server
        .wait_for_log("call cancelled by client", STEP)
        .is_some());
}

#[test]
fn case_12_invalid_utf8_in_a_string_is_a_decode_error() {
    let key = TestKey::new("framing");
    let server = server(&key, &[]);
    within(STEP, async {
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let mut b = 1u32.to_le_bytes().to_vec(); // Uppercase
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&[0xC3, 0x28]); // invalid UTF-8
        send_raw_call(&mut writer, 1, &b).await;
        match reply_to(&mut reader, 1).await {
            Err(RpcError::UnknownMethod(why)) => assert!(why.contains("utf"), "{why}"),
            other => panic!("want UnknownMethod, got {other:?}"),
        }
        send(&mut writer, &[call(2, Request::Uppercase("ok".into()))]).await;
        assert_eq!(
            reply_to(&mut reader, 2).await,
            Ok(Response::Uppercase("OK".into()))
        );
    });
}
