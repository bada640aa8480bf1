//! Your own methods with rpckit: a key-value service with its own request and response enums,
//! served by `rpckit_server::Server` and called with `rpckit_client::Client`.
//!
//! Run it with `cargo run -p rpckit-server --example custom_service`. It starts the server on
//! 127.0.0.1 (a free port), makes a few calls, and shuts the server down. The shared key is
//! made at random for this run; a real deployment loads a keyring file instead.

use std::collections::HashMap;
use std::sync::Mutex;

use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_proto::{KeyId, Keyring, RpcError, SecretKey};
use rpckit_server::{CallContext, Server, ServerConfig, Service};
use serde::{Deserialize, Serialize};

/// Requests of the key-value service. Add new methods at the end only: bincode names
/// variants by their position.
#[derive(Debug, Serialize, Deserialize)]
enum KvRequest {
    Put { key: String, value: String },
    Get { key: String },
}

/// Answers of the key-value service.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum KvResponse {
    Stored,
    Value(Option<String>),
}

/// The service: a map behind a lock.
#[derive(Default)]
struct KvService {
    map: Mutex<HashMap<String, String>>,
}

impl Service for KvService {
    type Request = KvRequest;
    type Response = KvResponse;

    async fn call(&self, request: KvRequest, ctx: CallContext) -> Result<KvResponse, RpcError> {
        let mut map = self
            .map
            .lock()
            .map_err(|_| RpcError::Internal("map lock poisoned".into()))?;
        match request {
            KvRequest::Put { key, .. } if key.is_empty() => Err(RpcError::Application(format!(
                "call {}: empty key from {}",
                ctx.id, ctx.key_id
            ))),
            KvRequest::Put { key, value } => {
                map.insert(key, value);
                Ok(KvResponse::Stored)
            }
            KvRequest::Get { key } => Ok(KvResponse::Value(map.get(&key).cloned())),
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    async_std::task::block_on(async {
        let key_id = KeyId::new("example")?;
        let key = SecretKey::generate();
        let mut keyring = Keyring::new();
        keyring.insert(key_id.clone(), key.clone());

        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = async_channel::bounded::<()>(1);
        let server = Server::new(KvService::default(), keyring, ServerConfig::default());
        let serving = async_std::task::spawn(server.run(listener, async move {
            let _ = stopped.recv().await;
        }));

        let client: Client<KvRequest, KvResponse> =
            Client::connect(addr.to_string(), key_id, key, ClientConfig::default()).await?;
        let put = KvRequest::Put {
            key: "colour".into(),
            value: "green".into(),
        };
        assert_eq!(client.call(put).await?, KvResponse::Stored);
        let got = client
            .call(KvRequest::Get {
                key: "colour".into(),
            })
            .await?;
        println!("get colour -> {got:?}");
        assert_eq!(got, KvResponse::Value(Some("green".into())));
        match client
            .call(KvRequest::Put {
                key: String::new(),
                value: "x".into(),
            })
            .await
        {
            Err(CallError::Rpc(RpcError::Application(message))) => println!("refused: {message}"),
            other => return Err(format!("expected an application error, got {other:?}").into()),
        }

        client.close().await;
        stop.close();
        serving.await?;
        Ok(())
    })
}
