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

use common::{within, InProcess};
use rpckit_client::{Client, ClientConfig};
use rpckit_proto::demo::{Request, Response};
use rpckit_server::{DemoService, ServerConfig};

const STEP: Duration = Duration::from_secs(30);

#[test]
fn a_connected_client_is_counted_authenticated_and_a_stopped_server_counts_none() {
    const CONNECTIONS: usize = 200;
    let config = {
        let mut server_config = ServerConfig::default();
        // One slot: a connection still counted after its handshake would refuse the next.
        server_config.max_unauthenticated = 1;
        server_config
    };
    let server = InProcess::start("counts", DemoService, config);
    let stats = server.stats.clone();

    let clients = within(STEP, async {
        let mut clients = Vec::new();
        for n in 1..=CONNECTIONS {
            let client = Client::<Request, Response>::connect(
                server.addr.to_string(),
                server.id.clone(),
                server.key.clone(),
                {
                    let mut client_config = ClientConfig::default();
                    client_config.reconnect_attempts = 0;
                    client_config
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

    let result = server.stop();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(stats.snapshot().connections, 0, "connections left counted");
    drop(clients);
}
