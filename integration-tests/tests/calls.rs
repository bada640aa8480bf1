//! Calls through the client library against the real `rpc-server`: many connections at once,
//! answers matched to their calls, answers out of order on one connection, cancellation,
//! deadlines and the typed errors the server answers with.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_integration_tests::{
    accept_raw_session, client, within, ServerProcess, TestKey, STOP_TIMEOUT,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::RpcError;

const CONNECTIONS: usize = 100;
const CALLS_PER_CONNECTION: usize = 50;

#[test]
fn hundred_connections_each_get_their_own_answers() {
    let key = TestKey::new("calls-many");
    let mut server = ServerProcess::start(&key.path, &[]);
    let addr = server.addr.to_string();

    let answers = within(Duration::from_secs(90), async {
        let mut connections = Vec::new();
        for c in 0..CONNECTIONS {
            let (addr, id, secret) = (addr.clone(), key.id.clone(), key.key.clone());
            connections.push(async_std::task::spawn(async move {
                let client =
                    Client::<Request, Response>::connect(addr, id, secret, ClientConfig::default())
                        .await
                        .unwrap_or_else(|e| panic!("connection {c}: {e}"));
                let client = Arc::new(client);
                // Every call of this connection in flight at once, multiplexed by id.
                let calls: Vec<_> = (0..CALLS_PER_CONNECTION)
                    .map(|i| {
                        let client = client.clone();
                        async_std::task::spawn(async move {
                            let text = format!("conn {c} call {i}: ünïque-{c}-{i}");
                            let answer = client.call(Request::Uppercase(text.clone())).await;
                            (text, answer)
                        })
                    })
                    .collect();
                let mut answers = Vec::with_capacity(calls.len());
                for call in calls {
                    answers.push(call.await);
                }
                client.close().await;
                answers
            }));
        }
        let mut all = Vec::with_capacity(CONNECTIONS * CALLS_PER_CONNECTION);
        for connection in connections {
            all.extend(connection.await);
        }
        all
    });

    assert_eq!(answers.len(), CONNECTIONS * CALLS_PER_CONNECTION);
    let mut distinct = std::collections::HashSet::new();
    for (text, answer) in answers {
        match answer {
            Ok(Response::Uppercase(got)) => assert_eq!(got, text.to_uppercase(), "for {text:?}"),
            other => panic!("call {text:?}: {other:?}"),
        }
        assert!(distinct.insert(text), "payloads are unique");
    }
    server.assert_not_logged("handshake failed");
}

#[test]
fn answers_arrive_out_of_order_on_one_connection() {
    let key = TestKey::new("calls-order");
    let server = ServerProcess::start(&key.path, &[]);
    let client = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        let mut sleep = Box::pin(client.call(Request::Sleep { ms: 2000 }));
        // One poll queues the Sleep call on the connection, ahead of the Echo below.
        assert!(future::poll_once(&mut sleep).await.is_none());
        let echo = client
            .call(Request::Echo(b"overtakes the sleep".to_vec()))
            .await;
        assert_eq!(
            echo.expect("echo answered"),
            Response::Echo(b"overtakes the sleep".to_vec())
        );
        // The Echo, sent second, was answered while the Sleep, sent first, is still running.
        assert!(
            future::poll_once(&mut sleep).await.is_none(),
            "the Sleep was answered before the Echo"
        );
        assert_eq!(
            sleep.await.expect("sleep answered"),
            Response::Slept { ms: 2000 }
        );
    });
    assert!(client.is_connected());
}

#[test]
fn dropping_a_call_cancels_it_on_the_server() {
    let key = TestKey::new("calls-cancel");
    let server = ServerProcess::start(&key.path, &[]);
    let client = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        let mut sleep = Box::pin(client.call(Request::Sleep { ms: 600_000 }));
        assert!(future::poll_once(&mut sleep).await.is_none());
        // Answered after the Sleep frame was read, so the Sleep is running on the server.
        assert_eq!(
            client.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
        drop(sleep);
        // The connection goes on.
        assert_eq!(
            client
                .call(Request::Uppercase("after cancel".into()))
                .await
                .expect("call"),
            Response::Uppercase("AFTER CANCEL".into())
        );
    });
    server.expect_log("call cancelled by client", Duration::from_secs(10));
}

#[test]
fn a_call_held_without_being_polled_does_not_stall_its_connection() {
    // A call polled once and then held without being polled must not keep its connection
    // from reading: the keepalive pongs (and other calls' answers) still have to be read.
    // A client whose lone caller reads the socket itself for its own answer gets this wrong
    // unless the reader task can take the socket back.
    let key = TestKey::new("calls-held");
    let server = ServerProcess::start(&key.path, &[]);
    // Pings every 100 ms; a pong may take up to 2 s (a busy machine can hold a round trip up
    // for hundreds of milliseconds), so only pongs left unread end the connection.
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.keepalive_interval = Duration::from_millis(100);
        client_config.keepalive_timeout = Duration::from_secs(2);
        client_config
    };
    let held = client(server.addr, &key, config);
    let other = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        let mut sleep = Box::pin(held.call(Request::Sleep { ms: 3000 }));
        assert!(future::poll_once(&mut sleep).await.is_none());
        // Time passes on another connection, with the Sleep held and not polled: longer than
        // interval + timeout (2.1 s), so the server would be declared unresponsive if nobody
        // read the pongs.
        assert_eq!(
            other
                .call(Request::Sleep { ms: 2500 })
                .await
                .expect("other"),
            Response::Slept { ms: 2500 }
        );
        assert_eq!(
            sleep.await.expect("the held call is answered"),
            Response::Slept { ms: 3000 }
        );
        assert_eq!(
            held.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
    });
}

#[test]
fn server_errors_arrive_as_typed_errors() {
    let key = TestKey::new("calls-errors");
    let server = ServerProcess::start(&key.path, &[]);
    let client = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        // Over MAX_SLEEP_MS: the handler's own error.
        match client.call(Request::Sleep { ms: 3_600_001 }).await {
            Err(CallError::Rpc(RpcError::Application(message))) => assert_eq!(
                message,
                "sleep of 3600001 ms is over the limit of 3600000 ms"
            ),
            other => panic!("expected an Application error, got {other:?}"),
        }

        // The longest allowed Sleep is accepted: it runs until the call's deadline.
        match client
            .call_with_timeout(
                Request::Sleep { ms: 3_600_000 },
                Some(Duration::from_millis(300)),
            )
            .await
        {
            Err(CallError::Timeout(after)) => assert_eq!(after, Duration::from_millis(300)),
            Err(CallError::Rpc(RpcError::DeadlineExceeded)) => {}
            other => panic!("expected a timeout, got {other:?}"),
        }

        // The connection is still good.
        assert_eq!(
            client.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
    });
}

#[test]
fn calls_over_max_in_flight_are_refused_overloaded() {
    let key = TestKey::new("calls-overload");
    let server = ServerProcess::start(&key.path, &["--max-in-flight", "1"]);
    let busy = client(server.addr, &key, ClientConfig::default());
    let other = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        let mut sleep = Box::pin(busy.call(Request::Sleep { ms: 1500 }));
        assert!(future::poll_once(&mut sleep).await.is_none());
        // Read after the Sleep, while it runs: over the limit of this connection.
        match busy.call(Request::Ping).await {
            Err(CallError::Rpc(RpcError::Overloaded)) => {}
            other => panic!("expected Overloaded, got {other:?}"),
        }
        // The limit is per connection.
        assert_eq!(
            other.call(Request::Ping).await.expect("other connection"),
            Response::Pong
        );
        assert_eq!(
            sleep.await.expect("sleep answered"),
            Response::Slept { ms: 1500 }
        );
    });
}

/// A server closes an idle connection with an authenticated goodbye; the client's next calls
/// go out on a new connection by themselves (a call caught by the goodbye was not run, so it
/// is sent again rather than failed).
#[test]
fn calls_after_an_idle_close_reconnect_by_themselves() {
    const STEP: Duration = Duration::from_secs(10);
    let key = TestKey::new("idle");
    let mut server = ServerProcess::start(&key.path, &["--idle-timeout", "300ms"]);
    // Each call that opens a connection travels with the handshake's proof, so the server
    // reads it before its idle clock can run out, however slowly the test itself runs.
    let client: Client<Request, Response> =
        Client::lazy(server.addr.to_string(), key.id.clone(), key.key.clone(), {
            let mut client_config = ClientConfig::default();
            client_config.pipeline_first_call = true;
            client_config
        });
    for round in 0..3 {
        let text = format!("round {round}");
        let answer = within(STEP, client.call(Request::Uppercase(text.clone())));
        assert_eq!(
            answer.expect("call succeeds"),
            Response::Uppercase(text.to_uppercase())
        );
        server
            .wait_for_log("idle for", STEP)
            .unwrap_or_else(|| panic!("no idle close; log:\n{}", server.log_text()));
    }
    // Three connections were authenticated: one per call, each after an idle close but the
    // first. (No more: stopped, the log is complete.)
    server.stop(STOP_TIMEOUT);
    assert_eq!(
        server.log_count("authenticated"),
        3,
        "{}",
        server.log_text()
    );
}

/// The retry rule at its edge: a server that reads a call and says `Goodbye` without answering
/// it has not run it (a server answers every call it read before its goodbye), so the client
/// sends it again on a new connection instead of failing it with `OutcomeUnknown`.
#[test]
fn a_call_unanswered_at_goodbye_is_sent_again_on_a_new_connection() {
    use rpckit_proto::message::decode_client;
    use rpckit_proto::{ClientMessage, ServerMessage};

    let key = TestKey::new("goodbye");
    let (id, secret) = (key.id.clone(), key.key.clone());
    within(Duration::from_secs(20), async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        // A fake server: connection 1 reads the call and says goodbye; connection 2 answers.
        let server = async_std::task::spawn(async move {
            let mut seen = Vec::new();
            for connection in 0..2 {
                let mut session = accept_raw_session(&listener, &id, &secret).await;
                let payload = session.reader.recv().await.expect("read").expect("a frame");
                let Ok(ClientMessage::Call {
                    id,
                    request: Ok(request),
                    ..
                }) = decode_client::<Request>(payload)
                else {
                    panic!("expected a call");
                };
                seen.push(request.clone());
                let reply = if connection == 0 {
                    ServerMessage::<Response>::Goodbye
                } else {
                    let Request::Uppercase(text) = request else {
                        panic!("unexpected request")
                    };
                    ServerMessage::Reply {
                        id,
                        result: Ok(Response::Uppercase(text.to_uppercase())),
                    }
                };
                session.writer.push_server(&reply).expect("encode");
                session.writer.flush().await.expect("write");
            }
            seen
        });
        let client: Client<Request, Response> = Client::connect(
            addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        )
        .await
        .expect("connect");
        let answer = client.call(Request::Uppercase("again".into())).await;
        assert_eq!(
            answer.expect("answered on the second connection"),
            Response::Uppercase("AGAIN".into())
        );
        let seen = server.await;
        assert_eq!(seen, vec![Request::Uppercase("again".into()); 2]);
    });
}

/// Resumes a stopped server when dropped, so a failing assertion cannot leave it stopped.
struct Stopped<'a>(&'a ServerProcess);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        self.0.signal(libc::SIGCONT);
    }
}

#[test]
fn the_client_times_out_a_call_the_server_never_answers() {
    let key = TestKey::new("calls-frozen");
    let server = ServerProcess::start(&key.path, &[]);
    let client = client(server.addr, &key, ClientConfig::default());

    within(Duration::from_secs(30), async {
        assert_eq!(
            client.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
        // A stopped server reads nothing and answers nothing: only the client's own timer
        // can end these calls.
        server.freeze();
        let stopped = Stopped(&server);
        // A call with a long timeout goes first, so the connection's timer is set for it;
        // the short call after it must move the timer earlier.
        let mut long = Box::pin(client.call_with_timeout(
            Request::Uppercase("after the thaw".into()),
            Some(Duration::from_secs(25)),
        ));
        assert!(future::poll_once(&mut long).await.is_none());
        let started = std::time::Instant::now();
        let short = client
            .call_with_timeout(Request::Ping, Some(Duration::from_millis(300)))
            .await;
        let took = started.elapsed();
        match short {
            Err(CallError::Timeout(after)) => assert_eq!(after, Duration::from_millis(300)),
            other => panic!("expected the client's timeout, got {other:?}"),
        }
        assert!(
            took >= Duration::from_millis(300),
            "timed out early: {took:?}"
        );
        assert!(
            took < Duration::from_secs(10),
            "the short timeout waited for the long one: {took:?}"
        );

        // Thawed, the server answers the long call, and the connection is still good.
        drop(stopped);
        assert_eq!(
            long.await.expect("the long call"),
            Response::Uppercase("AFTER THE THAW".into())
        );
        assert_eq!(
            client.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
    });
}

/// A call dropped before it was written never runs: if the connection's task had not taken
/// it yet, it is never sent; if its frame was already sealed (frames are sealed in sequence
/// and cannot be taken back), a `Cancel` follows it on the wire. Against a fake server that
/// records what it reads.
#[test]
fn a_call_dropped_before_its_frame_is_written_is_cancelled_on_the_server() {
    use rpckit_proto::message::decode_client;
    use rpckit_proto::{ClientMessage, ServerMessage};

    let key = TestKey::new("drop-queued");
    let (id, secret) = (key.id.clone(), key.key.clone());
    within(Duration::from_secs(20), async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        // The fake server records the ids of the calls and cancels it reads, answers nothing
        // but the call echoing "last", and stops there (at most 16 messages).
        let server = async_std::task::spawn(async move {
            let mut session = accept_raw_session(&listener, &id, &secret).await;
            let mut seen = Vec::new();
            for _ in 0..16 {
                let payload = session.reader.recv().await.expect("read").expect("a frame");
                match decode_client::<Request>(payload).expect("decodable") {
                    ClientMessage::Call {
                        id,
                        request: Ok(Request::Echo(text)),
                        ..
                    } if text == b"last" => {
                        seen.push(format!("call {id}"));
                        let reply = ServerMessage::Reply {
                            id,
                            result: Ok(Response::Echo(text)),
                        };
                        session.writer.push_server(&reply).expect("encode");
                        session.writer.flush().await.expect("write");
                        break;
                    }
                    ClientMessage::Call { id, .. } => seen.push(format!("call {id}")),
                    ClientMessage::Cancel { id } => seen.push(format!("cancel {id}")),
                    _ => {}
                }
            }
            seen
        });
        let client: Client<Request, Response> = Client::connect(
            addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        )
        .await
        .expect("connect");
        // Call 1 stays in flight (never answered); call 2 is handed to the connection, then
        // dropped before its answer.
        let mut first = Box::pin(client.call(Request::Echo(b"first".to_vec())));
        assert!(future::poll_once(&mut first).await.is_none());
        let mut second = Box::pin(client.call(Request::Echo(b"second".to_vec())));
        assert!(future::poll_once(&mut second).await.is_none());
        drop(second);
        let last = client.call(Request::Echo(b"last".to_vec())).await;
        assert_eq!(last.expect("last call"), Response::Echo(b"last".to_vec()));
        let seen = server.await;
        let cancelled = ["call 1", "call 2", "cancel 2", "call 3"];
        let never_sent = ["call 1", "call 3"];
        assert!(seen == cancelled || seen == never_sent, "{seen:?}");
        drop(first);
    });
}
