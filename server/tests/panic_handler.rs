//! Robustness catalogue case 37: a panic inside one handler fails that call with
//! `RpcError::Internal`; other calls, other connections and the server carry on.
//!
//! The stock demo service has no method that panics, so this runs `rpckit_server::Server`
//! in-process with a service of its own, on 127.0.0.1:0.

mod common;

use std::time::Duration;

use common::{within, InProcess};
use rpckit_client::{CallError, Client, ClientConfig};
use rpckit_proto::RpcError;
use rpckit_server::{CallContext, ServerConfig, Service};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    /// Answers `Fine(n)`.
    Fine(u32),
    /// Panics as soon as it is polled.
    Boom,
    /// Panics after waiting a little (in the call's own task).
    BoomLater,
    /// Panics in `call` itself, before it returns its future.
    BoomBeforeFuture,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Resp {
    Fine(u32),
}

struct Panicky;

impl Service for Panicky {
    type Request = Req;
    type Response = Resp;

    fn call(
        &self,
        request: Req,
        _ctx: CallContext,
    ) -> impl std::future::Future<Output = Result<Resp, RpcError>> + Send {
        if let Req::BoomBeforeFuture = request {
            panic!("boom on purpose, before the future");
        }
        async move {
            match request {
                Req::Fine(n) => Ok(Resp::Fine(n)),
                Req::Boom => panic!("boom on purpose"),
                Req::BoomLater => {
                    async_io::Timer::after(Duration::from_millis(20)).await;
                    panic!("later boom on purpose")
                }
                Req::BoomBeforeFuture => unreachable!("handled above"),
            }
        }
    }
}

#[test]
fn case_37_panic_in_one_handler_fails_that_call_only_server_survives() {
    let server = InProcess::start("panic", Panicky, ServerConfig::default());
    let connect = || {
        Client::<Req, Resp>::connect(
            server.addr.to_string(),
            server.id.clone(),
            server.key.clone(),
            ClientConfig::default(),
        )
    };
    within(Duration::from_secs(30), async {
        let client = connect().await.expect("connect");
        // Panics and normal calls interleaved on one connection, all in flight together.
        let ((boom, before), (fine, (later, fine2))) = futures_lite::future::zip(
            futures_lite::future::zip(client.call(Req::Boom), client.call(Req::BoomBeforeFuture)),
            futures_lite::future::zip(
                client.call(Req::Fine(7)),
                futures_lite::future::zip(client.call(Req::BoomLater), client.call(Req::Fine(8))),
            ),
        )
        .await;
        for (what, r) in [
            ("Boom", boom),
            ("BoomBeforeFuture", before),
            ("BoomLater", later),
        ] {
            match r {
                Err(CallError::Rpc(RpcError::Internal(why))) => {
                    assert!(why.contains("boom on purpose"), "{what}: {why}")
                }
                other => panic!("{what}: want Internal, got {other:?}"),
            }
        }
        assert_eq!(fine.unwrap(), Resp::Fine(7));
        assert_eq!(fine2.unwrap(), Resp::Fine(8));

        // The same connection and a new one go on working.
        assert_eq!(client.call(Req::Fine(9)).await.unwrap(), Resp::Fine(9));
        let other = connect().await.expect("a new connection after the panics");
        assert_eq!(other.call(Req::Fine(10)).await.unwrap(), Resp::Fine(10));
        assert!(matches!(
            other.call(Req::Boom).await,
            Err(CallError::Rpc(RpcError::Internal(_)))
        ));
        assert_eq!(other.call(Req::Fine(11)).await.unwrap(), Resp::Fine(11));
        client.close().await;
        other.close().await;
    });
    let stats = server.stats.clone();
    assert_eq!(
        stats.snapshot().calls_in_flight,
        0,
        "no call left counted in flight"
    );

    // The server is alive and shuts down cleanly, every connection counted out.
    let result = server.stop();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(stats.snapshot().connections, 0, "connections left counted");
}
