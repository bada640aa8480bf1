//! The first call riding with the handshake (`ClientConfig::pipeline_first_call`,
//! PROTOCOL.md §3.5): against the real `rpc-server` through the client library and through
//! proto's `connect_pipelined` on a raw socket, and against fake servers that fail the
//! handshake before and after the call left, to check what the caller is told; and a call's
//! timeout bounding the connection it has to make (pipelined or not).

use std::sync::Arc;
use std::time::Duration;

use async_std::io::{ReadExt, WriteExt};
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::{ClientMessage, KeyId, SecretKey, ServerMessage};

const STEP: Duration = Duration::from_secs(10);

fn pipelining() -> ClientConfig {
    let mut client_config = ClientConfig::default();
    client_config.pipeline_first_call = true;
    client_config
}

fn lazy(
    addr: impl ToString,
    id: &KeyId,
    key: &SecretKey,
    config: ClientConfig,
) -> Client<Request, Response> {
    Client::lazy(addr.to_string(), id.clone(), key.clone(), config)
}

#[test]
fn first_call_rides_with_the_handshake_and_the_connection_carries_on() {
    let key = TestKey::new("pipe");
    let server = ServerProcess::start(&key.path, &[]);
    let client = Arc::new(lazy(server.addr, &key.id, &key.key, pipelining()));
    assert!(
        !client.is_connected(),
        "a lazy client connects on its first call"
    );

    // Twenty callers at once on a client with no connection yet: one opens it with its call
    // in the handshake, the others wait for it and go on the same connection.
    let answers = within(STEP, async {
        let calls = (0..20).map(|i| {
            let client = client.clone();
            async_std::task::spawn(async move {
                client.call(Request::Uppercase(format!("call {i}"))).await
            })
        });
        let mut answers = Vec::new();
        for call in calls.collect::<Vec<_>>() {
            answers.push(call.await);
        }
        answers
    });
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(
            answer.expect("answered"),
            Response::Uppercase(format!("CALL {i}"))
        );
    }
    assert!(client.is_connected());
    // One connection, and the server found the call with the proof.
    authenticated_with_calls(&server, 1);

    // After a close, the next call opens a new connection the same way.
    within(STEP, client.close());
    let again = within(STEP, client.call(Request::Ping));
    assert_eq!(again.expect("answered"), Response::Pong);
    authenticated_with_calls(&server, 2);

    // A client with the default settings, under the default encrypting suite, lets its call
    // ride too: this server has proven the key to this process.
    let default = lazy(server.addr, &key.id, &key.key, ClientConfig::default());
    assert_eq!(
        within(STEP, default.call(Request::Ping)).expect("answered"),
        Response::Pong
    );
    server.expect_log_count("calls_with_proof=true", 3, STEP);

    // Towards a server that never proved the key to this process, a default client sends
    // its first call only after the server's proof; its next connection lets the call ride.
    let fresh = ServerProcess::start(&key.path, &[]);
    for _ in 0..2 {
        let default = lazy(fresh.addr, &key.id, &key.key, ClientConfig::default());
        assert_eq!(
            within(STEP, default.call(Request::Ping)).expect("answered"),
            Response::Pong
        );
        within(STEP, default.close());
    }
    fresh.expect_log_count("authenticated", 2, STEP);
    assert_eq!(
        fresh.log_count("calls_with_proof=false"),
        1,
        "{}",
        fresh.log_text()
    );
    assert_eq!(
        fresh.log_count("calls_with_proof=true"),
        1,
        "{}",
        fresh.log_text()
    );
}

/// Waits until the server has logged `n` authentications, and checks that in every one of
/// them calls came with the client's proof.
fn authenticated_with_calls(server: &ServerProcess, n: usize) {
    server.expect_log_count("authenticated", n, STEP);
    server.expect_log_count("calls_with_proof=true", n, STEP);
}

#[test]
fn raw_call_sent_with_the_proof_is_answered_behind_the_server_proof() {
    let key = TestKey::new("pipe");
    let server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let stream = async_std::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        let call = ClientMessage::Call {
            id: 1,
            deadline: Some(Duration::from_secs(5)),
            request: Request::Uppercase("early".into()),
        };
        let (session, pushed) = handshake::connect_pipelined(
            stream.clone(),
            stream.clone(),
            &key.id,
            &key.key,
            &HandshakeConfig::default(),
            |w| w.push_client(&call),
        )
        .await
        .expect("handshake");
        pushed.expect("the call fits in a frame");
        let (mut reader, _writer) = session.split();
        let payload = reader.recv().await.expect("read").expect("a frame");
        match decode_server::<Response>(payload).expect("decodes") {
            ServerMessage::Reply {
                id: 1,
                result: Ok(Ok(Response::Uppercase(text))),
            } => assert_eq!(text, "EARLY"),
            other => panic!("unexpected {other:?}"),
        }
    });
    authenticated_with_calls(&server, 1);
}

#[test]
fn a_refused_proof_is_outcome_unknown_once_the_call_rode_and_auth_when_it_waited() {
    let key = TestKey::new("pipe");
    let server = ServerProcess::start(&key.path, &[]);
    let wrong = SecretKey::new(vec![0x5A; 32]).expect("a valid key");
    // The call left with the proof: the refusal is not authenticated, so the client cannot
    // tell it from a forged one hiding a call the server ran (robustness case 41).
    let impostor = lazy(server.addr, &key.id, &wrong, pipelining());
    match within(STEP, impostor.call(Request::Ping)) {
        Err(CallError::OutcomeUnknown(_)) => {}
        other => panic!("want OutcomeUnknown, got {other:?}"),
    }
    // By default a first-ever connection waits for the server's proof: a wrong key is an
    // authentication failure, and nothing was sent.
    let waiting = lazy(server.addr, &key.id, &wrong, ClientConfig::default());
    match within(STEP, waiting.call(Request::Ping)) {
        Err(CallError::Connect(ConnectError::Auth(_))) => {}
        other => panic!("want an authentication failure, got {other:?}"),
    }
    let good = lazy(server.addr, &key.id, &key.key, pipelining());
    assert_eq!(
        within(STEP, good.call(Request::Ping)).expect("answered"),
        Response::Pong
    );
}

#[test]
fn case_41_a_forged_refusal_after_the_call_rode_is_outcome_unknown() {
    let key = TestKey::new("pipe");
    within(STEP, async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        // A relay's view: it answers the hello, takes the proof and the call (which it could
        // pass to the real server), and forges a refusal of the proof.
        let forger = async_std::task::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf).await.expect("read the hello");
            let suite = rpckit_proto::Suite::from_code(buf[6]).expect("a known suite");
            stream
                .write_all(&handshake::server_hello_for(suite, &[7; 32]))
                .await
                .expect("write the hello");
            let n = stream.read(&mut buf).await.expect("read the proof");
            let forged = [
                handshake::TYPE_SERVER_PROOF,
                rpckit_proto::Refusal::AuthFailed.code(),
            ];
            stream.write_all(&forged).await.expect("write the refusal");
            n
        });
        let client = lazy(addr, &key.id, &key.key, {
            let mut client_config = pipelining();
            client_config.reconnect_attempts = 0;
            client_config
        });
        let outcome = client.call(Request::Uppercase("ran?".into())).await;
        assert!(forger.await > 33, "the call came in the proof's write");
        match outcome {
            Err(CallError::OutcomeUnknown(_)) => {}
            other => panic!("want OutcomeUnknown, never a connect error, got {other:?}"),
        }
    });
}

/// A fake server that reads the ClientHello, then (with `hello`) answers with a ServerHello
/// and reads the client's next write, and then closes the connection without a ServerProof.
async fn fake_server_closing(
    hello: bool,
) -> (std::net::SocketAddr, async_std::task::JoinHandle<usize>) {
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let task = async_std::task::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buf = [0u8; 4096];
        // The ClientHello: fixed part (7 + 32 + 1 bytes) and a key id, in one write.
        let n = stream.read(&mut buf).await.expect("read the hello");
        if !hello {
            return n;
        }
        // Accepting whichever suite the client offers (byte 6 of the hello).
        let suite = rpckit_proto::Suite::from_code(buf[6]).expect("a known suite");
        stream
            .write_all(&handshake::server_hello_for(suite, &[7; 32]))
            .await
            .expect("write the hello");
        // The proof, with the call behind it.
        stream.read(&mut buf).await.expect("read the proof")
    });
    (addr, task)
}

#[test]
fn connection_lost_after_the_call_left_is_outcome_unknown_and_before_is_a_connect_error() {
    let key = TestKey::new("pipe");
    let config = {
        let mut client_config = pipelining();
        client_config.reconnect_attempts = 0;
        client_config
    };
    within(STEP, async {
        // Closed after the proof and the call were written: the server may have run it.
        let (addr, server) = fake_server_closing(true).await;
        let client = lazy(addr, &key.id, &key.key, config.clone());
        let outcome = client.call(Request::Uppercase("maybe".into())).await;
        let proof_and_call = server.await;
        assert!(
            proof_and_call > 33,
            "the call came in the proof's write ({proof_and_call} bytes)"
        );
        match outcome {
            Err(CallError::OutcomeUnknown(_)) => {}
            other => panic!("want OutcomeUnknown, got {other:?}"),
        }

        // Closed before the ServerHello: the call never left, so it is a connect error.
        let (addr, server) = fake_server_closing(false).await;
        let client = lazy(addr, &key.id, &key.key, config.clone());
        let outcome = client.call(Request::Uppercase("never".into())).await;
        server.await;
        match outcome {
            Err(CallError::Connect(_)) => {}
            other => panic!("want a connect error, got {other:?}"),
        }
    });
}

#[test]
fn a_call_timeout_bounds_connecting_to_a_server_that_never_answers_the_hello() {
    let key = TestKey::new("pipe");
    within(STEP, async {
        // Accepts connections and holds them without a word: only the handshake timeout
        // (10 s by default) would end the wait, but the call's timeout comes first.
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let silent = async_std::task::spawn(async move {
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(listener.accept().await.expect("accept"));
            }
            held
        });
        for pipeline_first_call in [false, true] {
            let mut config = ClientConfig::default();
            config.call_timeout = Some(Duration::from_millis(300));
            config.reconnect_attempts = 0;
            config.pipeline_first_call = pipeline_first_call;
            let client = lazy(addr, &key.id, &key.key, config);
            let started = std::time::Instant::now();
            let outcome = client.call(Request::Ping).await;
            let took = started.elapsed();
            assert!(
                matches!(outcome, Err(CallError::Timeout(_))),
                "pipelined {pipeline_first_call}: {outcome:?}"
            );
            assert!(
                took < Duration::from_secs(5),
                "pipelined {pipeline_first_call}: waited {took:?}, past the call's timeout"
            );
        }
        drop(silent.await);
    });
}
