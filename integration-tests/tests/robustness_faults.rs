//! Robustness catalogue, "Faults" (cases 28–34): resets, half-closes, vanished peers and
//! keepalive (both sides), a peer killed while the server writes, restart, SIGTERM drain, and
//! the CLI against a dead or wrong server, against the real `rpc-server`.

mod robustness_common;

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use robustness_common::*;
use rpckit_client::{CallError, Client, ClientConfig, ConnectionLost};
use rpckit_integration_tests::{
    cli, client, raw_session, within, DeadPort, ServerProcess, TestKey,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::{Keyring, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(20);

/// A call frame (already sealed) that the test writes in pieces.
fn sealed_call(
    writer: rpckit_proto::SessionWriter<async_std::net::TcpStream>,
    id: u64,
    request: Request,
) -> Vec<u8> {
    let mut writer = writer;
    writer.push_client(&call(id, request)).unwrap();
    let (_, _, bytes) = writer.into_parts();
    bytes
}

/// Re-reads the server's descriptor count until it is at most `want` (a bounded number of
/// times: /proc has no event to wait on).
fn fds_settle(server: &ServerProcess, want: usize) -> usize {
    let mut now = server.open_fds().unwrap();
    for _ in 0..500 {
        if now <= want {
            break;
        }
        let _ = server.wait_for_log("\u{0}never", Duration::from_millis(10));
        now = server.open_fds().unwrap();
    }
    now
}

#[test]
fn case_28_reset_mid_frame_ends_that_connection_server_keeps_serving() {
    let key = TestKey::new("faults");
    let mut server = ServerProcess::start(&key.path, &[]);
    let base_fds = server.open_fds().unwrap();
    within(STEP, async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let (_reader, writer) = session.split();
        let frame = sealed_call(writer, 1, Request::Echo(vec![9; 4096]));
        let mut s = stream.clone();
        s.write_all(&frame[..frame.len() / 2]).await.unwrap();
        s.flush().await.unwrap();
        // SO_LINGER 0: closing sends RST instead of FIN.
        set_linger_zero(&stream);
        drop(s);
        drop(stream);
    });
    let line = server
        .wait_for_log("closed:", STEP)
        .expect("the connection's task ends");
    assert!(
        line.contains("reset") || line.contains("read failed"),
        "closed because of the reset: {line}"
    );
    assert_eq!(
        fds_settle(&server, base_fds),
        base_fds,
        "its socket is closed"
    );
    assert_serving(server.addr, &key);
    server.assert_not_logged("panicked");
}

#[test]
fn case_29_fin_after_a_partial_frame_is_closed_promptly() {
    let key = TestKey::new("faults");
    // Long timers: the close must come from the FIN.
    let server = ServerProcess::start(&key.path, &["--handshake-timeout", "60s"]);
    within(STEP, async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, writer) = session.split();
        let frame = sealed_call(writer, 1, Request::Echo(vec![9; 1000]));
        let mut s = stream.clone();
        s.write_all(&frame[..frame.len() / 2]).await.unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        let (got, end) = until_closed(&mut reader).await;
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(end, Ok(()), "a clean close, not a hang");
    });
    assert!(server
        .wait_for_log("connection closed in the middle of a frame", STEP)
        .is_some());

    // The same before the handshake: half a hello, then FIN.
    let mut s = tcp(server.addr);
    let (_, hello_bytes) = hello(&key);
    std::io::Write::write_all(&mut s, &hello_bytes[..20]).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let (bytes, ended) = read_to_end(&mut s, STEP, 1 << 16);
    assert!(ended && bytes.is_empty(), "closed at once: {bytes:?}");
    assert!(server
        .wait_for_log("peer closed the connection during the handshake", STEP)
        .is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_29_half_closed_socket_still_gets_its_answer_then_close() {
    let key = TestKey::new("faults");
    let server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // The server is stopped while the calls and the FIN are sent, so it reads them
        // together: the end of stream comes while the Sleep is running, however busy the
        // machine.
        server.freeze();
        send(
            &mut writer,
            &[
                call(1, Request::Sleep { ms: 1000 }),
                call(2, Request::Uppercase("half".into())),
            ],
        )
        .await;
        stream.shutdown(Shutdown::Write).unwrap();
        server.signal(libc::SIGCONT);
        let (got, end) = until_closed(&mut reader).await;
        assert_eq!(end, Ok(()));
        let mut answers = HashMap::new();
        for m in &got {
            if let ServerMessage::Reply { id, result } = m {
                assert!(
                    answers.insert(*id, result.clone()).is_none(),
                    "one answer per id"
                );
            }
        }
        assert_eq!(answers[&1], Ok(Response::Slept { ms: 1000 }));
        assert_eq!(answers[&2], Ok(Response::Uppercase("HALF".into())));
        assert_eq!(got.last(), Some(&ServerMessage::Goodbye), "{got:?}");
    });
    assert!(server
        .wait_for_log("peer closed its side; calls finished", STEP)
        .is_some());
}

#[test]
fn case_30_frozen_peer_is_detected_by_keepalive_and_closed() {
    let key = TestKey::new("faults");
    let server = ServerProcess::start(
        &key.path,
        &[
            "--keepalive-interval",
            "300ms",
            "--keepalive-timeout",
            "300ms",
        ],
    );
    let started = Instant::now();
    let (_stream, session) = within(STEP, raw_session(server.addr, &key));
    // The peer neither reads nor writes from here on.
    let line = server
        .wait_for_log("unresponsive", STEP)
        .unwrap_or_else(|| panic!("not reaped:\n{}", server.log_text()));
    assert!(line.contains("closed"), "{line}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "ping, then its timeout: {took:?}"
    );
    // What it would have read: the ping, then the end.
    let (mut reader, _w) = session.split();
    let (got, _) = within(STEP, until_closed(&mut reader));
    assert!(
        matches!(got.first(), Some(ServerMessage::Ping { .. })),
        "{got:?}"
    );
    assert_serving(server.addr, &key);
}

#[test]
fn case_30_authenticated_slowloris_dribbling_a_frame_is_dropped() {
    let key = TestKey::new("faults");
    let server = ServerProcess::start(
        &key.path,
        &[
            "--keepalive-interval",
            "300ms",
            "--keepalive-timeout",
            "300ms",
            "--idle-timeout",
            "1s",
        ],
    );
    within(Duration::from_secs(30), async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, writer) = session.split();
        // ~160 bytes: 16 s at one byte per 100 ms.
        let frame = sealed_call(writer, 1, Request::Echo(vec![1; 100]));
        let (closed_tx, closed_rx) = async_std::channel::bounded(1);
        async_std::task::spawn(async move {
            let r = until_closed(&mut reader).await;
            let _ = closed_tx.send((Instant::now(), r)).await;
        });
        let started = Instant::now();
        let mut s = stream.clone();
        let mut sent = 0;
        let mut closed = None;
        for b in &frame {
            if s.write_all(&[*b]).await.is_err() {
                break;
            }
            sent += 1;
            // Pace the drip by waiting for the close itself, one interval at a time.
            closed = futures_lite::future::or(async { closed_rx.recv().await.ok() }, async {
                async_io::Timer::after(Duration::from_millis(100)).await;
                None
            })
            .await;
            if closed.is_some() {
                break;
            }
        }
        let (at, (got, _)) = match closed {
            Some(c) => c,
            None => closed_rx.recv().await.expect("reader ends"),
        };
        assert!(
            sent < frame.len(),
            "dropped mid-frame, after {sent} of {} bytes",
            frame.len()
        );
        assert!(
            !got.iter().any(|m| matches!(m, ServerMessage::Reply { .. })),
            "{got:?}"
        );
        let took = at - started;
        // Dropped at the keepalive (or idle) limit, far sooner than the dribble would take.
        assert!(took < Duration::from_secs(8), "{took:?}");
    });
    assert!(server
        .wait_for_log_any(&["unresponsive", "idle for"], STEP)
        .is_some());
    assert_serving(server.addr, &key);
}

#[test]
fn case_30_idle_connection_is_closed_after_the_idle_timeout() {
    let key = TestKey::new("faults");
    let server = ServerProcess::start(&key.path, &["--idle-timeout", "500ms"]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // Taken before the call is sent: the server's idle clock starts when it reads the
        // call, later, so the goodbye cannot come sooner than the idle timeout after this.
        let started = Instant::now();
        send(&mut writer, &[call(1, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 1).await, Ok(Response::Pong));
        // Then nothing: the server says goodbye and closes at the idle timeout.
        let (got, end) = until_closed(&mut reader).await;
        assert_eq!(end, Ok(()));
        assert_eq!(got, vec![ServerMessage::Goodbye]);
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
    });
    let line = server
        .wait_for_log("idle for 500ms", STEP)
        .expect("reaped when idle");
    assert!(line.contains("closed"), "{line}");
}

#[test]
fn case_30_client_keepalive_detects_a_silent_server_outcome_unknown() {
    let key = TestKey::new("faults");
    let mut ring = Keyring::new();
    ring.insert(key.id.clone(), key.key.clone());
    let result = within(STEP, async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        // A fake server: authenticates, then neither reads nor writes.
        let (hold_tx, hold_rx) = async_std::channel::bounded::<()>(1);
        async_std::task::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let session = handshake::accept(
                stream.clone(),
                stream.clone(),
                &ring,
                &HandshakeConfig::default(),
            )
            .await
            .expect("fake server handshake");
            let _ = hold_rx.recv().await;
            drop(session);
        });
        // The first ping goes 2 s after connecting, so the call below is written before it
        // even on a busy machine; then 200 ms without a pong ends the connection.
        let config = {
            let mut client_config = ClientConfig::default();
            client_config.keepalive_interval = Duration::from_secs(2);
            client_config.keepalive_timeout = Duration::from_millis(200);
            client_config.call_timeout = None;
            client_config.reconnect_attempts = 0;
            client_config
        };
        let c: Client<Request, Response> =
            Client::connect(addr.to_string(), key.id.clone(), key.key.clone(), config)
                .await
                .expect("connects to the fake server");
        let started = Instant::now();
        let r = c.call(Request::Ping).await;
        drop(hold_tx);
        (r, started.elapsed())
    });
    match result {
        (Err(CallError::OutcomeUnknown(ConnectionLost::Unresponsive(_))), took) => {
            assert!(
                took < Duration::from_secs(10),
                "detected, not hung: {took:?}"
            );
        }
        other => panic!("want OutcomeUnknown, got {other:?}"),
    }
}

#[test]
fn case_31_peer_killed_while_the_server_writes_is_handled() {
    let key = TestKey::new("faults");
    let mut server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (stream, session) = raw_session(server.addr, &key).await;
        let _ = sockopts(&stream, |s| s.set_recv_buffer_size(4096));
        let (_reader, mut writer) = session.split();
        let calls: Vec<_> = (0..8)
            .map(|id| call(id, Request::Echo(vec![0x77; 1 << 20])))
            .collect();
        send(&mut writer, &calls).await;
        // The answers are being written: wait for their first bytes.
        let mut s = stream.clone();
        let mut first = [0u8; 64];
        s.read_exact(&mut first).await.unwrap();
        // Killed: RST while 8 MiB of answers are still on their way.
        set_linger_zero(&stream);
        drop(writer);
        drop(s);
        drop(stream);
    });
    let line = server
        .wait_for_log("closed:", STEP)
        .expect("connection ends");
    assert!(
        [
            "write failed",
            "reset",
            "Broken pipe",
            "read failed",
            "connection closed"
        ]
        .iter()
        .any(|w| line.contains(w)),
        "{line}"
    );
    assert!(!server.has_exited(), "no SIGPIPE death");
    assert_serving(server.addr, &key);
    assert!(!server.has_exited());
}

#[test]
fn case_32_server_restart_client_reconnects_with_a_full_handshake() {
    let key = TestKey::new("faults");
    let mut first = ServerProcess::start(&key.path, &[]);
    let addr = first.addr;
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.reconnect_attempts = 2;
        client_config.reconnect_initial_backoff = Duration::from_millis(10);
        client_config.reconnect_max_backoff = Duration::from_millis(50);
        client_config
    };
    let c = client(addr, &key, config);
    assert_eq!(
        async_std::task::block_on(c.call(Request::Ping)).unwrap(),
        Response::Pong
    );

    first.signal(libc::SIGTERM);
    let status = first.wait_exit(STEP).expect("first server exits");
    assert!(status.success(), "{status:?}");

    // While it is down: a typed error, not a hang.
    match within(STEP, c.call(Request::Ping)) {
        Err(CallError::Connect(_)) => {}
        other => panic!("want a connect error while the server is down, got {other:?}"),
    }

    // A new server on the same port; the same client's next call gets through.
    let second = ServerProcess::start_at(&addr.to_string(), &key.path, &[]);
    assert_eq!(second.addr, addr);
    let answer = within(STEP, c.call(Request::Uppercase("back".into())));
    assert_eq!(answer.unwrap(), Response::Uppercase("BACK".into()));
    assert!(
        second.wait_for_log("authenticated", STEP).is_some(),
        "a full handshake with the new server"
    );
}

#[test]
fn case_33_sigterm_drains_calls_in_flight_and_exits_zero() {
    let key = Arc::new(TestKey::new("faults"));
    let mut server = ServerProcess::start(&key.path, &["--grace-period", "5s"]);
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.reconnect_attempts = 1;
        client_config.reconnect_initial_backoff = Duration::from_millis(10);
        client_config
    };
    let c = Arc::new(client(server.addr, &key, config));

    // Library client: three sleeps and a ping sent in this order on one connection; the ping's
    // answer proves the sleeps are running.
    let (ping_tx, ping_rx) = std::sync::mpsc::channel();
    let library = {
        let c = c.clone();
        std::thread::spawn(move || {
            within(STEP, async {
                let sleeps = futures_lite::future::zip(
                    futures_lite::future::zip(
                        c.call(Request::Sleep { ms: 1000 }),
                        c.call(Request::Sleep { ms: 1000 }),
                    ),
                    futures_lite::future::zip(c.call(Request::Sleep { ms: 1000 }), async {
                        let pong = c.call(Request::Ping).await;
                        let _ = ping_tx.send(());
                        pong
                    }),
                );
                let ((a, b), (d, pong)) = sleeps.await;
                (vec![a, b, d], pong)
            })
        })
    };

    within(STEP, async {
        // Raw session: three sleeps, then a ping call whose answer proves they are running.
        // Call 6 outlasts the grace period, so the connection is still draining (and reads
        // call 5) however long the signal takes to arrive; it is answered `ShuttingDown`.
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        send(
            &mut writer,
            &[
                call(1, Request::Sleep { ms: 1000 }),
                call(2, Request::Sleep { ms: 1000 }),
                call(3, Request::Sleep { ms: 1000 }),
                call(6, Request::Sleep { ms: 600_000 }),
                call(4, Request::Ping),
            ],
        )
        .await;
        let mut outcomes: HashMap<u64, Vec<Result<Response, RpcError>>> = HashMap::new();
        let mut going_away = false;
        let mut late_sent = false;
        let mut goodbye = false;
        for _ in 0..100 {
            match recv(&mut reader).await {
                Ok(Some(ServerMessage::Reply { id, result })) => {
                    if id == 4 {
                        ping_rx.recv_timeout(STEP).expect("library ping answered");
                        server.signal(libc::SIGTERM);
                    }
                    outcomes.entry(id).or_default().push(result);
                }
                Ok(Some(ServerMessage::GoingAway { grace })) => {
                    assert_eq!(grace, Duration::from_secs(5));
                    going_away = true;
                    // A call after GoingAway is refused, not run.
                    send(&mut writer, &[call(5, Request::Ping)]).await;
                    late_sent = true;
                }
                Ok(Some(ServerMessage::Goodbye)) => goodbye = true,
                Ok(Some(ServerMessage::Ping { .. } | ServerMessage::Pong { .. })) => {}
                Ok(None) => break,
                Err(e) => panic!("broken stream: {e}"),
            }
        }
        assert!(going_away && late_sent && goodbye);
        for id in 1..=3 {
            assert_eq!(
                outcomes[&id],
                vec![Ok(Response::Slept { ms: 1000 })],
                "call {id}"
            );
        }
        assert_eq!(outcomes[&4], vec![Ok(Response::Pong)]);
        assert_eq!(outcomes[&5], vec![Err(RpcError::ShuttingDown)]);
        assert_eq!(outcomes[&6], vec![Err(RpcError::ShuttingDown)]);
        assert_eq!(outcomes.len(), 6, "every call exactly one outcome");
    });

    let (sleeps, pong) = library.join().expect("library caller");
    assert_eq!(pong.unwrap(), Response::Pong);
    for r in sleeps {
        assert_eq!(r.unwrap(), Response::Slept { ms: 1000 });
    }
    // After GoingAway, the library client does not use that connection; its call is refused.
    match within(STEP, c.call(Request::Ping)) {
        Err(CallError::Connect(_)) | Err(CallError::Rpc(RpcError::ShuttingDown)) => {}
        other => panic!("want a refusal after shutdown, got {other:?}"),
    }
    let status = server.wait_exit(STEP).expect("server exits");
    assert_eq!(status.code(), Some(0));
    // The library's connection closed as soon as its calls were done; the raw one when the
    // grace period was over, with its endless call answered `ShuttingDown`.
    server.expect_log_count("closed: drained for shutdown", 1, STEP);
    server.expect_log_count("grace period over; 1 calls answered ShuttingDown", 1, STEP);
    assert!(server.wait_for_log_count("drained", 1, STEP));
}

#[test]
fn case_34_cli_against_dead_silent_or_wrong_key_server_fails_with_one_line() {
    let key = TestKey::new("faults");
    let one_line = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
        assert!(out.stdout.is_empty());
        stderr
    };

    // Dead: nothing listens on the port.
    let dead = DeadPort::new();
    let started = Instant::now();
    let out = cli(
        dead.addr(),
        &key.path,
        &["--connect-timeout", "2s", "call", "ping"],
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    one_line(&out);

    // Silent: a listener that never accepts; the CLI gives up at its timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let out = cli(
        silent.local_addr().unwrap(),
        &key.path,
        &["--connect-timeout", "1s", "call", "ping"],
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    one_line(&out);
    drop(silent);

    // Wrong key.
    let server = ServerProcess::start(&key.path, &[]);
    let other = TestKey::new("faults");
    let out = cli(server.addr, &other.path, &["call", "ping"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let line = one_line(&out);
    assert!(line.contains("authentication"), "{line}");
    // And the right key works against the same server.
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
