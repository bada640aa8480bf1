//! A server that reads slowly holds up the client's writes. Calls made meanwhile queue behind
//! the write in progress; once `max_queued` of them wait, further callers wait for room (no
//! longer than their own deadlines) instead of the connection being given up as "not
//! reading", and every call is answered once the server reads again.
//!
//! Against a fake server on 127.0.0.1:0 that starts reading only when the test says so.

use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_integration_tests::{within, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_client;
use rpckit_proto::{ClientMessage, Keyring, ServerMessage};

const STEP: Duration = Duration::from_secs(30);
/// The big call's payload: far more than the socket buffers hold, so its write blocks.
const BIG: usize = 4 << 20;
/// Small calls made while the big one is being written (more than `max_queued`).
const SMALL: usize = 12;

#[test]
fn calls_wait_for_room_behind_a_blocked_write_and_all_are_answered() {
    let key = TestKey::new("backpressure");
    let mut keyring = Keyring::new();
    keyring.insert(key.id.clone(), key.key.clone());
    within(STEP, async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (go_tx, go_rx) = async_std::channel::bounded::<()>(1);
        // The fake server: handshake, then nothing until `go`; then it answers every call
        // with its own payload, until it has answered 1 + SMALL of them.
        let server = async_std::task::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut session = handshake::accept(
                stream.clone(),
                stream.clone(),
                &keyring,
                &HandshakeConfig::default(),
            )
            .await
            .expect("handshake");
            go_rx.recv().await.expect("go");
            let mut answered = 0;
            while answered < 1 + SMALL {
                let payload = session.reader.recv().await.expect("read").expect("a frame");
                if let ClientMessage::Call {
                    id,
                    request: Ok(Request::Echo(bytes)),
                    ..
                } = decode_client::<Request>(payload).expect("decodable")
                {
                    let reply = ServerMessage::Reply {
                        id,
                        result: Ok(Response::Echo(bytes)),
                    };
                    session.writer.push_server(&reply).expect("encode");
                    session.writer.flush().await.expect("write");
                    answered += 1;
                }
            }
            answered
        });

        let config = ClientConfig {
            max_queued: 2,
            ..ClientConfig::default()
        };
        let client: Client<Request, Response> =
            Client::connect(addr.to_string(), key.id.clone(), key.key.clone(), config)
                .await
                .expect("connect");
        // The big call's write starts and blocks: the server reads nothing yet.
        let mut big = Box::pin(client.call(Request::Echo(vec![1; BIG])));
        assert!(future::poll_once(&mut big).await.is_none());
        // Every small call is started (each queues or waits for room), none answered.
        let mut small: Vec<_> = (0..SMALL)
            .map(|i| Box::pin(client.call(Request::Echo(format!("small {i}").into_bytes()))))
            .collect();
        for call in &mut small {
            assert!(future::poll_once(call).await.is_none());
        }
        assert!(client.is_connected(), "the connection was given up");

        go_tx.send(()).await.expect("server waiting");
        let big = big.await;
        assert!(
            matches!(&big, Ok(Response::Echo(b)) if b.len() == BIG),
            "big call: {:?}",
            big.as_ref().map(|_| "answer").map_err(CallError::to_string)
        );
        for (i, call) in small.into_iter().enumerate() {
            assert_eq!(
                call.await.expect("small call answered"),
                Response::Echo(format!("small {i}").into_bytes())
            );
        }
        assert_eq!(server.await, 1 + SMALL);
    });
}

#[test]
fn close_while_another_call_is_writing_still_says_goodbye() {
    let key = TestKey::new("backpressure-bye");
    let mut keyring = Keyring::new();
    keyring.insert(key.id.clone(), key.key.clone());
    within(STEP, async {
        let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let (go_tx, go_rx) = async_std::channel::bounded::<()>(1);
        // The fake server: handshake, then nothing until `go`; then it reads to the end of
        // the stream (at most 64 messages) and says what it got.
        let server = async_std::task::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut session = handshake::accept(
                stream.clone(),
                stream.clone(),
                &keyring,
                &HandshakeConfig::default(),
            )
            .await
            .expect("handshake");
            go_rx.recv().await.expect("go");
            let mut seen = Vec::new();
            for _ in 0..64 {
                match session.reader.recv().await {
                    Ok(Some(payload)) => match decode_client::<Request>(payload) {
                        Ok(ClientMessage::Call { id, .. }) => seen.push(format!("call {id}")),
                        Ok(ClientMessage::Goodbye) => seen.push("goodbye".to_owned()),
                        Ok(_) => {}
                        Err(e) => panic!("undecodable: {e}"),
                    },
                    _ => break,
                }
            }
            seen
        });
        let client: Arc<Client<Request, Response>> = Arc::new(
            Client::connect(
                addr.to_string(),
                key.id.clone(),
                key.key.clone(),
                ClientConfig::default(),
            )
            .await
            .expect("connect"),
        );
        // The big call's write starts and blocks (polled once here, it is the writer); a
        // task of its own then keeps it going.
        let caller = client.clone();
        let mut big = Box::pin(async move { caller.call(Request::Echo(vec![1; BIG])).await });
        assert!(future::poll_once(&mut big).await.is_none());
        let big = async_std::task::spawn(big);
        // The client is closed while that write is under way.
        let mut closing = Box::pin(client.close());
        assert!(future::poll_once(&mut closing).await.is_none());
        go_tx.send(()).await.expect("server waiting");
        closing.await;
        assert_eq!(server.await, ["call 1", "goodbye"]);
        // The big call was written and never answered: its outcome is unknown.
        assert!(
            matches!(big.await, Err(CallError::OutcomeUnknown(_))),
            "the big call should end OutcomeUnknown"
        );
    });
}
