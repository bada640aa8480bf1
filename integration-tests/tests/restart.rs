//! Restarts without a gap (robustness case 44, the part without a proxy): a second
//! `rpc-server --reuse-port` takes the port while the first drains, and no call is lost or
//! answered twice; and the server's close after `Goodbye` never resets a connection whose
//! client is still sending, so the client reads every answer and the goodbye.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_integration_tests::{client, next_message, raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(60);
const EXIT_WAIT: Duration = Duration::from_secs(30);
/// Bound on the calls one loop of a test makes.
const MAX_CALLS: usize = 100_000;
/// Size of the calls a client sends while the server drains: large, so that the server has
/// bytes unread whenever it stops reading.
const PAYLOAD: usize = 64 * 1024;

/// Calls `Echo(payload)` until it is answered; a `ShuttingDown` answer means the call was not
/// run (PROTOCOL.md §9.5), so it is sent again. Returns how many times it was refused so.
async fn echo(client: &Client<Request, Response>, payload: Vec<u8>) -> usize {
    for refused in 0..MAX_CALLS {
        match client.call(Request::Echo(payload.clone())).await {
            Ok(answer) => {
                assert_eq!(answer, Response::Echo(payload), "answer to another call");
                return refused;
            }
            Err(CallError::Rpc(RpcError::ShuttingDown)) => continue,
            Err(e) => panic!("call failed: {e}"),
        }
    }
    panic!("refused {MAX_CALLS} times");
}

#[test]
fn a_second_server_on_the_same_port_takes_over_without_a_failed_call() {
    let key = TestKey::new("restart");
    let mut old = ServerProcess::start(&key.path, &["--reuse-port"]);
    let addr = old.addr;
    // Connected before the new server exists, so its connection is the old server's.
    let lib = client(addr, &key, ClientConfig::default());
    let new = ServerProcess::start_at(&addr.to_string(), &key.path, &["--reuse-port"]);

    within(STEP, async {
        // Calls in flight on the old server when it is told to stop; the Ping answered after
        // them proves it has read them.
        let slow: Vec<_> = (0..4)
            .map(|_| Box::pin(lib.call(Request::Sleep { ms: 300 })))
            .collect();
        let mut slow = slow;
        for call in &mut slow {
            assert!(future::poll_once(call).await.is_none());
        }
        assert_eq!(lib.call(Request::Ping).await.expect("ping"), Response::Pong);
        old.signal(libc::SIGTERM);

        let exited = Arc::new(AtomicBool::new(false));
        let refused = AtomicUsize::new(0);
        let fresh_connections = AtomicUsize::new(0);
        let waiter = {
            let exited = exited.clone();
            std::thread::spawn(move || {
                let status = old.wait_exit(EXIT_WAIT);
                exited.store(true, Ordering::SeqCst);
                (status, old.log_text())
            })
        };
        // The same client keeps calling through the drain and after it.
        let keep_calling = async {
            let mut after_exit = 0;
            for i in 0..MAX_CALLS {
                let n = echo(&lib, format!("call {i}").into_bytes()).await;
                refused.fetch_add(n, Ordering::Relaxed);
                if exited.load(Ordering::SeqCst) {
                    after_exit += 1;
                    if after_exit == 20 {
                        return;
                    }
                }
            }
        };
        // New clients keep connecting: the old listener's queue is taken before it closes,
        // and after that the kernel sends every connection to the new server.
        let keep_connecting = async {
            let mut after_exit = 0;
            for i in 0..MAX_CALLS {
                let fresh: Client<Request, Response> = Client::lazy(
                    addr.to_string(),
                    key.id.clone(),
                    key.key.clone(),
                    ClientConfig::default(),
                );
                let n = echo(&fresh, format!("fresh {i}").into_bytes()).await;
                refused.fetch_add(n, Ordering::Relaxed);
                fresh_connections.fetch_add(1, Ordering::Relaxed);
                if exited.load(Ordering::SeqCst) {
                    after_exit += 1;
                    if after_exit == 5 {
                        return;
                    }
                }
            }
        };
        let in_flight = async {
            for call in slow {
                assert_eq!(
                    call.await.expect("a call in flight at SIGTERM is answered"),
                    Response::Slept { ms: 300 }
                );
            }
        };
        future::zip(in_flight, future::zip(keep_calling, keep_connecting)).await;
        let (status, old_log) = waiter.join().expect("waiter thread");
        let status = status.expect("the old server exits");
        assert_eq!(status.code(), Some(0), "old server's log:\n{old_log}");
        assert!(
            new.log_count("authenticated") > 0,
            "the new server served no one; its log:\n{}",
            new.log_text()
        );
        eprintln!(
            "fresh connections: {}, calls answered ShuttingDown and sent again: {}",
            fresh_connections.load(Ordering::Relaxed),
            refused.load(Ordering::Relaxed)
        );
    });
}

#[test]
fn a_client_still_sending_through_the_drain_reads_every_answer_and_the_goodbye() {
    let key = TestKey::new("clean-close");
    let server = ServerProcess::start(&key.path, &[]);
    let addr = server.addr;
    within(STEP, async {
        let (stream, session) = raw_session(addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // A call that keeps the drain going while the client sends more; the Pong after it
        // proves the server has read it.
        let sleep = ClientMessage::Call {
            id: 0,
            deadline: None,
            request: Request::Sleep { ms: 300 },
        };
        writer.push_client(&sleep).expect("encode");
        writer
            .push_client(&ClientMessage::<Request>::Ping { nonce: 1 })
            .expect("encode");
        writer.flush().await.expect("send");
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::Pong { nonce: 1 }
        );
        server.signal(libc::SIGTERM);

        let goodbye = AtomicBool::new(false);
        // Sends large calls without pause, so the server always has unread bytes, until it
        // sees the goodbye; then closes its side, as a client does. A server that closed with
        // those bytes unread would reset the connection and fail the write under way.
        let send = async {
            for id in 1..MAX_CALLS as u64 {
                if goodbye.load(Ordering::SeqCst) {
                    break;
                }
                let call = ClientMessage::Call {
                    id,
                    deadline: None,
                    request: Request::Echo(vec![7; PAYLOAD]),
                };
                writer.push_client(&call).expect("encode");
                writer
                    .flush()
                    .await
                    .expect("the server reads until the client closes");
                future::yield_now().await;
            }
            stream
                .shutdown(std::net::Shutdown::Write)
                .expect("half-close");
        };
        let receive = async {
            let mut answered = HashSet::new();
            loop {
                let payload = match reader.recv().await {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(e) => panic!(
                        "the connection broke (goodbye seen: {}, {} answers): {e}",
                        goodbye.load(Ordering::SeqCst),
                        answered.len()
                    ),
                };
                let message = rpckit_proto::message::decode_server::<Response>(payload)
                    .expect("decodable message")
                    .map_response(|body| body.expect("decodable response"));
                assert!(
                    !goodbye.load(Ordering::SeqCst),
                    "a message after the goodbye"
                );
                match message {
                    ServerMessage::Reply { id, result } => {
                        assert!(answered.insert(id), "call {id} answered twice");
                        match result {
                            Ok(Response::Slept { ms: 300 }) => assert_eq!(id, 0),
                            Ok(Response::Echo(body)) => assert_eq!(body.len(), PAYLOAD),
                            Err(RpcError::ShuttingDown) => {}
                            other => panic!("unexpected answer {other:?}"),
                        }
                    }
                    ServerMessage::GoingAway { .. } => {}
                    ServerMessage::Goodbye => goodbye.store(true, Ordering::SeqCst),
                    other => panic!("unexpected message {other:?}"),
                }
            }
            answered
        };
        let ((), answered) = future::zip(send, receive).await;
        assert!(goodbye.load(Ordering::SeqCst), "no goodbye before the end");
        // The server answers every call it read before its goodbye, and reads in order: the
        // ids answered are all the first ones, the sleeping call's among them.
        let n = answered.len() as u64;
        assert!(
            (0..n).all(|id| answered.contains(&id)),
            "a gap among the answers"
        );
        assert!(n > 1, "only {n} answers");
    });
    let mut server = server;
    assert_eq!(server.wait_exit(EXIT_WAIT).and_then(|s| s.code()), Some(0));
}
