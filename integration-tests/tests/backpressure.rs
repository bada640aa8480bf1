//! A server that reads slowly holds up the client's writes. Calls made meanwhile queue behind
//! the write in progress; once `max_queued` of them wait, further callers wait for room (no
//! longer than their own deadlines) instead of the connection being given up as "not
//! reading", and every call is answered once the server reads again.
//!
//! Against a fake server on 127.0.0.1:0 that starts reading only when the test says so.

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
