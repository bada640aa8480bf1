//! SIGTERM: the server stops accepting, tells every client it is going away, refuses calls
//! sent after that, lets calls in flight finish (or answers them `ShuttingDown` when the grace
//! period is over), says goodbye, and exits 0.

use std::time::Duration;

use futures_lite::future;
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{
    cli, client, next_message, raw_session, send_and_sync, within, ServerProcess, TestKey,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(30);
const EXIT_WAIT: Duration = Duration::from_secs(30);

fn call(id: u64, request: Request) -> ClientMessage<Request> {
    ClientMessage::Call {
        id,
        deadline: None,
        request,
    }
}

fn no_reconnect() -> ClientConfig {
    let mut client_config = ClientConfig::default();
    client_config.reconnect_attempts = 0;
    client_config
}

#[test]
fn sigterm_lets_a_slow_call_finish_then_exits_0() {
    let key = TestKey::new("shutdown-drain");
    let mut server = ServerProcess::start(&key.path, &[]);
    let addr = server.addr;
    let lib = client(addr, &key, no_reconnect());

    within(STEP, async {
        // A slow call through the library; the Ping answered after it proves the server has
        // read it, so it is running when the signal comes (4 s leaves room for a busy machine
        // between here and the signal).
        let mut slow = Box::pin(lib.call(Request::Sleep { ms: 4000 }));
        assert!(future::poll_once(&mut slow).await.is_none());
        assert_eq!(lib.call(Request::Ping).await.expect("ping"), Response::Pong);

        // A slow call on a raw session too, which lets the test see every message.
        let (_stream, session) = raw_session(addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let raw_slow = call(1, Request::Sleep { ms: 4000 });
        let before = send_and_sync(&mut reader, &mut writer, &[raw_slow]).await;
        assert!(before.is_empty(), "{before:?}");

        server.signal(libc::SIGTERM);
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::GoingAway {
                grace: Duration::from_secs(10)
            }
        );

        // A call sent after the notice is refused, not run.
        writer
            .push_client(&call(2, Request::Echo(b"too late".to_vec())))
            .unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::Reply {
                id: 2,
                result: Err(RpcError::ShuttingDown)
            }
        );

        // The listener is closed: a new connection is refused.
        match Client::<Request, Response>::connect(
            addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            no_reconnect(),
        )
        .await
        {
            Err(ConnectError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused => {}
            other => panic!("expected the new connection refused by the OS, got {other:?}"),
        }

        // Both slow calls finish with their answers.
        assert_eq!(
            slow.await.expect("slow call answered"),
            Response::Slept { ms: 4000 }
        );
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::Reply {
                id: 1,
                result: Ok(Response::Slept { ms: 4000 })
            }
        );
        assert_eq!(next_message(&mut reader).await, ServerMessage::Goodbye);
        assert!(reader.recv().await.expect("clean end").is_none());
    });

    // The CLI cannot connect either (exit 3), whether or not the process is gone yet.
    let out = cli(addr, &key.path, &["call", "ping"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");

    // In the order the server logs them (the log is read by another thread, so wait).
    server.expect_log("signal received: draining", STEP);
    server.expect_log("drained: every connection closed", STEP);
    server.expect_log("rpc_server: stopped", STEP);
    let status = server.wait_exit(EXIT_WAIT).expect("rpc-server exits");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

#[test]
fn grace_period_over_answers_calls_shutting_down_then_exits_0() {
    let key = TestKey::new("shutdown-grace");
    let mut server = ServerProcess::start(&key.path, &["--grace-period", "300ms"]);
    let addr = server.addr;
    let lib = client(addr, &key, no_reconnect());

    within(STEP, async {
        let mut endless = Box::pin(lib.call_with_timeout(Request::Sleep { ms: 600_000 }, None));
        assert!(future::poll_once(&mut endless).await.is_none());
        assert_eq!(lib.call(Request::Ping).await.expect("ping"), Response::Pong);

        // An idle connection: told, then closed at once.
        let (_stream, session) = raw_session(addr, &key).await;
        let (mut reader, mut writer) = session.split();
        writer
            .push_client(&ClientMessage::<Request>::Ping { nonce: 1 })
            .unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::Pong { nonce: 1 }
        );

        server.signal(libc::SIGTERM);
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::GoingAway {
                grace: Duration::from_millis(300)
            }
        );
        assert_eq!(next_message(&mut reader).await, ServerMessage::Goodbye);
        assert!(reader.recv().await.expect("clean end").is_none());

        // The call that outlives the grace period is answered ShuttingDown (so it may be
        // retried elsewhere), not left hanging.
        match endless.await {
            Err(CallError::Rpc(RpcError::ShuttingDown)) => {}
            other => panic!("expected ShuttingDown, got {other:?}"),
        }
    });

    server.expect_log("grace period over; 1 calls answered ShuttingDown", STEP);
    server.expect_log("drained: every connection closed", STEP);
    let status = server.wait_exit(EXIT_WAIT).expect("rpc-server exits");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

#[test]
fn sigterm_with_no_connections_exits_0() {
    let key = TestKey::new("shutdown-idle");
    let mut server = ServerProcess::start(&key.path, &[]);
    server.signal(libc::SIGTERM);
    server.expect_log("drained: every connection closed", STEP);
    let status = server.wait_exit(EXIT_WAIT).expect("rpc-server exits");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

#[test]
fn a_second_signal_exits_without_waiting_for_calls() {
    let key = TestKey::new("shutdown-twice");
    // A grace period far longer than the test may take.
    let mut server = ServerProcess::start(&key.path, &["--grace-period", "600s"]);
    let lib = client(server.addr, &key, no_reconnect());

    let mut endless = Box::pin(lib.call_with_timeout(Request::Sleep { ms: 600_000 }, None));
    within(STEP, async {
        assert!(future::poll_once(&mut endless).await.is_none());
        assert_eq!(lib.call(Request::Ping).await.expect("ping"), Response::Pong);
    });

    server.signal(libc::SIGTERM);
    server.expect_log("signal received: draining", STEP);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(EXIT_WAIT).unwrap_or_else(|| {
        panic!(
            "still draining after a second SIGTERM:\n{}",
            server.log_text()
        )
    });
    assert_eq!(status.code(), Some(1), "{}", server.log_text());
    server.expect_log(
        "second signal: exiting without waiting for calls in flight",
        STEP,
    );

    // The abandoned call ends: the connection is gone.
    match within(STEP, endless) {
        Err(CallError::OutcomeUnknown(_)) => {}
        other => panic!("expected OutcomeUnknown, got {other:?}"),
    }
}
