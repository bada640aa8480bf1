//! Rotating keys in an embedding program: `Server::keyring_handle().replace(..)` while the
//! server runs. New handshakes use the new keyring at once; a connection authenticated with
//! a key that was removed keeps running; the swap is counted in the server's stats.
//!
//! It runs `rpckit_server::Server` in-process on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::{within, InProcess};
use rpckit_client::{CallError, Client, ClientConfig, ConnectError};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{KeyId, Keyring, SecretKey};
use rpckit_server::{DemoService, ServerConfig};

const STEP: Duration = Duration::from_secs(30);

async fn connect(
    server: &InProcess,
    id: &KeyId,
    key: &SecretKey,
) -> Result<Client<Request, Response>, ConnectError> {
    let mut config = ClientConfig::default();
    config.reconnect_attempts = 0;
    Client::connect(server.addr.to_string(), id.clone(), key.clone(), config).await
}

#[test]
fn a_replaced_keyring_is_used_by_new_handshakes_and_spares_connections_already_open() {
    let server = InProcess::start("before", DemoService, ServerConfig::default());
    let new_id = KeyId::new("after").unwrap();
    let new_key = SecretKey::generate();

    within(STEP, async {
        let held = connect(&server, &server.id, &server.key)
            .await
            .expect("old key");
        let mut ring = Keyring::new();
        ring.insert(new_id.clone(), new_key.clone());
        server.keyring.replace(ring);
        assert_eq!(server.keyring.current().len(), 1);

        let fresh = connect(&server, &new_id, &new_key).await.expect("new key");
        assert_eq!(
            fresh.call(Request::Ping).await.expect("ping"),
            Response::Pong
        );
        match connect(&server, &server.id, &server.key).await {
            Err(ConnectError::Auth(_)) => {}
            Err(e) => panic!("old key refused for another reason: {e}"),
            Ok(_) => panic!("old key still accepted"),
        }
        // The connection authenticated before the swap keeps running.
        let answer: Result<Response, CallError> = held.call(Request::Ping).await;
        assert_eq!(answer.expect("held connection"), Response::Pong);
        held.close().await;
        fresh.close().await;
    });
    let stats = server.stats.snapshot();
    assert_eq!(
        (stats.keyring_reloads, stats.keyring_reload_failures),
        (1, 0)
    );
    server.stop().expect("server stops");
}
