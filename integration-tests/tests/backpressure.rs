//! A server that reads slowly holds up the client's writes. Calls made meanwhile queue behind
//! the write in progress; once `max_queued` of them wait, further callers wait for room (no
//! longer than their own deadlines) instead of the connection being given up as "not
//! reading"; a large call's write goes on in a task of its own, so a call future held
//! without being polled stalls no one; a goodbye still leaves after what was queued before
//! it; and every call is answered once the server reads again.
//!
//! Against a fake server on 127.0.0.1:0 that starts reading only when the test says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_std::channel::Sender;
use async_std::task::JoinHandle;
use futures_lite::future;
use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_integration_tests::{within, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_client;
use rpckit_proto::Keyring;
use rpckit_proto::{ClientMessage, ServerMessage};

const STEP: Duration = Duration::from_secs(30);
/// The big call's payload: far more than the fake server's small receive window and the
/// client's send buffer hold, so its write blocks; within the 8 MiB frame limit.
const BIG: usize = 7 << 20;
/// Small calls made while the big one is being written (more than `max_queued`).
const SMALL: usize = 12;
/// The most messages the fake server reads.
const MAX_MESSAGES: usize = 256;

/// A fake server on 127.0.0.1:0: it completes the handshake, then reads nothing until `go`;
/// then it reads until the end of the stream, answering the first `answers` calls (each
/// with its payload). Returns what it read, in order: `call N`, `cancel N`, `goodbye`; and a
/// channel that says when the first bytes after the handshake arrived (the client's
/// connection has taken its first call and is writing it).
fn slow_server(
    key: &TestKey,
    answers: usize,
) -> (
    SocketAddr,
    Sender<()>,
    JoinHandle<Vec<String>>,
    async_std::channel::Receiver<()>,
) {
    let (id, secret) = (key.id.clone(), key.key.clone());
    // A small receive buffer (inherited by the accepted socket) keeps the client's send
    // window small, so the big call's write blocks however the kernel's buffers are tuned.
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
    socket
        .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    socket.listen(16).expect("listen");
    let listener = async_std::net::TcpListener::from(std::net::TcpListener::from(socket));
    let addr = listener.local_addr().expect("address");
    let (go_tx, go_rx) = async_std::channel::bounded::<()>(1);
    let (arrived_tx, arrived) = async_std::channel::bounded::<()>(1);
    let server = async_std::task::spawn(async move {
        let mut keyring = Keyring::new();
        keyring.insert(id, secret);
        let (stream, _) = listener.accept().await.expect("accept");
        let probe = stream.clone();
        let config = HandshakeConfig::default();
        let mut session = handshake::accept(stream.clone(), stream, &keyring, &config)
            .await
            .expect("handshake");
        let _ = probe.peek(&mut [0u8; 1]).await;
        let _ = arrived_tx.try_send(());
        go_rx.recv().await.expect("go");
        let (mut seen, mut answered) = (Vec::new(), 0);
        while seen.len() < MAX_MESSAGES {
            let Ok(Some(payload)) = session.reader.recv().await else {
                break;
            };
            match decode_client::<Request>(payload).expect("decodable") {
                ClientMessage::Call {
                    id,
                    request: Ok(Request::Echo(bytes)),
                    ..
                } if answered < answers => {
                    seen.push(format!("call {id}"));
                    let reply = ServerMessage::Reply {
                        id,
                        result: Ok(Response::Echo(bytes)),
                    };
                    session.writer.push_server(&reply).expect("encode");
                    session.writer.flush().await.expect("write");
                    answered += 1;
                }
                ClientMessage::Call { id, .. } => seen.push(format!("call {id}")),
                ClientMessage::Cancel { id } => seen.push(format!("cancel {id}")),
                ClientMessage::Goodbye => seen.push("goodbye".to_owned()),
                _ => {}
            }
        }
        seen
    });
    (addr, go_tx, server, arrived)
}

async fn connect(
    addr: SocketAddr,
    key: &TestKey,
    config: ClientConfig,
) -> Arc<Client<Request, Response>> {
    let client = Client::connect(addr.to_string(), key.id.clone(), key.key.clone(), config)
        .await
        .expect("connect");
    Arc::new(client)
}

/// The big call, polled once here: its write has started and blocks (the server reads
/// nothing yet). The future is returned unpolled from then on.
async fn start_big(
    client: &Arc<Client<Request, Response>>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = Result<Response, CallError>>>> {
    let caller = client.clone();
    let mut big = Box::pin(async move { caller.call(Request::Echo(vec![1; BIG])).await });
    assert!(future::poll_once(&mut big).await.is_none());
    big
}

/// A client whose connection queues at most two frames behind a write under way.
fn room_for_two() -> ClientConfig {
    let mut client_config = ClientConfig::default();
    client_config.max_queued = 2;
    client_config
}

/// Echo calls of `"{label} {i}"` for each `i` in `ids`, each polled once (so each is queued,
/// or waits for room) and returned unanswered.
async fn start_echoes<'a>(
    client: &'a Client<Request, Response>,
    label: &str,
    ids: std::ops::Range<usize>,
) -> Vec<std::pin::Pin<Box<impl std::future::Future<Output = Result<Response, CallError>> + 'a>>> {
    let mut calls: Vec<_> = ids
        .map(|i| Box::pin(client.call(Request::Echo(format!("{label} {i}").into_bytes()))))
        .collect();
    for call in &mut calls {
        assert!(future::poll_once(call).await.is_none());
    }
    calls
}

#[test]
fn calls_wait_for_room_behind_a_blocked_write_and_all_are_answered() {
    let key = TestKey::new("backpressure");
    let (addr, go, server, _) = slow_server(&key, 1 + SMALL);
    within(STEP, async {
        let client = connect(addr, &key, room_for_two()).await;
        let big = start_big(&client).await;
        // Every small call is started (each queues or waits for room), none answered.
        let small = start_echoes(&client, "small", 0..SMALL).await;
        assert!(client.is_connected(), "the connection was given up");

        go.send(()).await.expect("server waiting");
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
        client.close().await;
        assert_eq!(
            server.await.len(),
            1 + SMALL + 1,
            "the calls and the goodbye"
        );
    });
}

#[test]
fn a_call_waiting_for_room_gives_up_at_its_deadline_and_is_never_sent() {
    let key = TestKey::new("backpressure-late");
    let (addr, go, server, arrived) = slow_server(&key, 3);
    within(STEP, async {
        let client = connect(addr, &key, room_for_two()).await;
        let big = start_big(&client).await;
        // The connection has taken the big call and is writing it.
        arrived.recv().await.expect("the big call's first bytes");
        // Calls 2 and 3 fill the queue behind the big call's write.
        let queued = start_echoes(&client, "queued", 2..4).await;
        // Call 4 finds no room, and its deadline passes while it waits.
        let late = client
            .call_with_timeout(
                Request::Echo(b"late".to_vec()),
                Some(Duration::from_millis(100)),
            )
            .await;
        assert!(matches!(late, Err(CallError::Timeout(_))), "{late:?}");

        go.send(()).await.expect("server waiting");
        big.await.expect("big call answered");
        for call in queued {
            call.await.expect("queued call answered");
        }
        client.close().await;
        // The late call never left the client, and there was nothing to cancel.
        assert_eq!(server.await, ["call 1", "call 2", "call 3", "goodbye"]);
    });
}

#[test]
fn a_large_call_held_unpolled_does_not_stall_the_connection() {
    let key = TestKey::new("backpressure-held");
    let (addr, go, server, _) = slow_server(&key, 2);
    within(STEP, async {
        let client = connect(addr, &key, ClientConfig::default()).await;
        // Polled once, then held: its write must go on without it.
        let big = start_big(&client).await;
        go.send(()).await.expect("server waiting");
        assert_eq!(
            client
                .call(Request::Echo(b"small".to_vec()))
                .await
                .expect("small call"),
            Response::Echo(b"small".to_vec())
        );
        assert!(
            matches!(big.await, Ok(Response::Echo(b)) if b.len() == BIG),
            "big call"
        );
        client.close().await;
        assert_eq!(server.await, ["call 1", "call 2", "goodbye"]);
    });
}

#[test]
fn close_while_another_call_is_writing_still_says_goodbye() {
    let key = TestKey::new("backpressure-bye");
    let (addr, go, server, _) = slow_server(&key, 0);
    within(STEP, async {
        let client = connect(addr, &key, ClientConfig::default()).await;
        let big = async_std::task::spawn(start_big(&client).await);
        // The client is closed while the big call's write is under way.
        let mut closing = Box::pin(client.close());
        assert!(future::poll_once(&mut closing).await.is_none());
        go.send(()).await.expect("server waiting");
        closing.await;
        assert_eq!(server.await, ["call 1", "goodbye"]);
        // The big call was written and never answered: its outcome is unknown.
        assert!(
            matches!(big.await, Err(CallError::OutcomeUnknown(_))),
            "the big call should end OutcomeUnknown"
        );
    });
}
