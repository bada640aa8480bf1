//! Connecting for a call. Which failures the client retries: a refusal for now (busy, shutting
//! down, rate-limited: statuses 5–7) is tried again up to `reconnect_attempts` times; a
//! refusal that cannot change by waiting (another version or suite, a malformed hello) fails
//! the call at once (PROTOCOL.md §4). And a call whose connection is being made by another
//! call waits for it no longer than its own timeout.
//!
//! Against fake servers on 127.0.0.1:0: one that refuses every hello with one status and
//! counts the connections it got, one that never answers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_std::net::TcpListener;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{within, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake;
use rpckit_proto::{HandshakeError, Refusal};

const STEP: Duration = Duration::from_secs(30);
const ATTEMPTS: u32 = 3;

/// A fake server that answers every ClientHello with `refusal` and closes; returns its address
/// and the number of connections it has answered so far. It stops after 100 connections.
fn refusing_server(refusal: Refusal) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = within(STEP, TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    async_std::task::spawn(async move {
        for _ in 0..100 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            // ClientHello: magic, version, type, suite, nonce (32), key id length, key id.
            let mut hello = [0u8; 40];
            if s.read_exact(&mut hello).await.is_err() {
                continue;
            }
            let mut id = vec![0u8; usize::from(hello[39])];
            if s.read_exact(&mut id).await.is_err() {
                continue;
            }
            // Counted before the refusal leaves, so a client that has read it was counted.
            count.fetch_add(1, Ordering::SeqCst);
            let _ = s.write_all(&handshake::server_refusal(refusal)).await;
        }
    });
    (addr, answered)
}

/// One call through a client that may reconnect `ATTEMPTS` times, quickly.
fn call_once(addr: std::net::SocketAddr, key: &TestKey) -> Result<Response, CallError> {
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.reconnect_attempts = ATTEMPTS;
        client_config.reconnect_initial_backoff = Duration::from_millis(5);
        client_config.reconnect_max_backoff = Duration::from_millis(20);
        client_config
    };
    let client: Client<Request, Response> =
        Client::lazy(addr.to_string(), key.id.clone(), key.key.clone(), config);
    within(STEP, client.call(Request::Ping))
}

#[test]
fn refusals_for_now_are_retried_and_the_others_fail_at_once() {
    let key = TestKey::new("reconnect");
    for refusal in [Refusal::Busy, Refusal::ShuttingDown, Refusal::RateLimited] {
        let (addr, answered) = refusing_server(refusal);
        match call_once(addr, &key) {
            Err(CallError::Connect(ConnectError::GaveUp { attempts, last })) => {
                assert_eq!(attempts, 1 + ATTEMPTS, "{refusal:?}: attempts reported");
                match *last {
                    ConnectError::Handshake(HandshakeError::Refused(r)) if r == refusal => {}
                    other => panic!("{refusal:?}: expected that refusal last, got {other:?}"),
                }
            }
            other => panic!("{refusal:?}: expected to give up after retries, got {other:?}"),
        }
        let tries = answered.load(Ordering::SeqCst);
        assert_eq!(tries, 1 + ATTEMPTS as usize, "{refusal:?}: tries");
    }
    for refusal in [
        Refusal::BadMagic,
        Refusal::UnsupportedVersion,
        Refusal::UnsupportedSuite,
        Refusal::Malformed,
        Refusal::Other(42),
    ] {
        let (addr, answered) = refusing_server(refusal);
        match call_once(addr, &key) {
            Err(CallError::Connect(ConnectError::Handshake(HandshakeError::Refused(r))))
                if r == refusal => {}
            other => panic!("{refusal:?}: expected that refusal, got {other:?}"),
        }
        assert_eq!(answered.load(Ordering::SeqCst), 1, "{refusal:?}: tries");
    }
    // A wrong key is not retried either (it is an authentication failure).
    let (addr, answered) = refusing_server(Refusal::AuthFailed);
    match call_once(addr, &key) {
        Err(CallError::Connect(ConnectError::Auth(_))) => {}
        other => panic!("AuthFailed: expected an authentication failure, got {other:?}"),
    }
    assert_eq!(answered.load(Ordering::SeqCst), 1, "AuthFailed: tries");
}

#[test]
fn a_call_waiting_for_another_calls_connect_gives_up_at_its_own_deadline() {
    let key = TestKey::new("reconnect-wait");
    // A fake server that accepts, reports each connection, and never answers the hello.
    let listener = within(STEP, TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (accepted_tx, accepted_rx) = async_std::channel::bounded::<()>(4);
    let silent = async_std::task::spawn(async move {
        let mut held = Vec::new();
        for _ in 0..4 {
            let Ok((s, _)) = listener.accept().await else {
                break;
            };
            held.push(s);
            let _ = accepted_tx.send(()).await;
        }
        held
    });
    let config = {
        let mut client_config = ClientConfig::default();
        client_config.handshake_timeout = Duration::from_secs(120);
        client_config.call_timeout = Some(Duration::from_secs(120));
        client_config
    };
    let client: Client<Request, Response> =
        Client::lazy(addr.to_string(), key.id.clone(), key.key.clone(), config);
    within(STEP, async {
        // Call A connects, and waits for a hello that never comes, for up to two minutes.
        let slow = client.call(Request::Ping);
        let quick = async {
            // Once the server has A's connection, A holds the right to connect.
            accepted_rx.recv().await.expect("A connected");
            client
                .call_with_timeout(Request::Ping, Some(Duration::from_millis(200)))
                .await
        };
        // B must end, with its own timeout, while A is still waiting.
        let first =
            futures_lite::future::or(async { Err(quick.await) }, async { Ok(slow.await) }).await;
        match first {
            Err(Err(CallError::Timeout(t))) => assert_eq!(t, Duration::from_millis(200)),
            Err(other) => panic!("B: expected its own timeout, got {other:?}"),
            Ok(a) => panic!("A ended first ({a:?}): B waited for A's connect"),
        }
    });
    drop(client);
    within(STEP, silent.cancel());
}
