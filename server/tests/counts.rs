//! The server's connection counts are exact as a client sees them: once `Client::connect`
//! has returned, its connection is counted open and no longer counted as unauthenticated
//! (the server counts it out before it sends its proof), so a client that opens connections
//! one after another never finds an earlier one still holding a slot of
//! `max_unauthenticated`; and once `Server::run` has returned, every connection is counted
//! out.
//!
//! It runs `rpckit_server::Server` in-process, to read its counts, on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::within;
use rpckit_client::{Client, ClientConfig};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{KeyId, Keyring, SecretKey};
use rpckit_server::{DemoService, Server, ServerConfig};

const STEP: Duration = Duration::from_secs(30);

#[test]
fn a_connected_client_is_counted_authenticated_and_a_stopped_server_counts_none() {
    const CONNECTIONS: usize = 200;
    let id = KeyId::new("counts").unwrap();
    let key = SecretKey::generate();
    let mut ring = Keyring::new();
    ring.insert(id.clone(), key.clone());
    let listener =
        within(STEP, async_std::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        // One slot: a connection still counted after its handshake would refuse the next.
        max_unauthenticated: 1,
        ..ServerConfig::default()
    };
    let server = Server::new(DemoService, ring, config);
    let stats = server.stats();
    let (stop_tx, stop_rx) = async_std::channel::bounded::<()>(1);
    let running = std::thread::spawn(move || {
        async_std::task::block_on(server.run(listener, async move {
            let _ = stop_rx.recv().await;
        }))
    });

    let clients = within(STEP, async {
        let mut clients = Vec::new();
        for n in 1..=CONNECTIONS {
            let client = Client::<Request, Response>::connect(
                addr.to_string(),
                id.clone(),
                key.clone(),
                ClientConfig {
                    reconnect_attempts: 0,
                    ..ClientConfig::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("connection {n}: {e}"));
            let now = stats.snapshot();
            assert_eq!(
                now.unauthenticated, 0,
                "connection {n} still counted in its handshake"
            );
            assert_eq!(now.connections, n, "connections open after connection {n}");
            clients.push(client);
        }
        assert_eq!(
            clients[0].call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
        clients
    });

    drop(stop_tx);
    let result = running.join().expect("server thread did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(stats.snapshot().connections, 0, "connections left counted");
    drop(clients);
}
