//! A call that finishes just as the shutdown grace period ends gets exactly one answer, and
//! the goodbye is the last message on the connection (PROTOCOL.md §9.1, §9.6).
//!
//! The race this pins down: when the grace period is over, the read loop answers every call
//! still in its table with `ShuttingDown` and says goodbye, while a call task that finished at
//! the same moment (on another executor thread, or woken by the same event) queues its own
//! answer. This test makes the two meet every time, on any number of threads: its handler
//! becomes ready without waking its task, so the task is polled again only when the read
//! loop cancels it at the end of the grace period, and then finds its handler ready.
//!
//! It runs `rpckit_server::Server` in-process (the stock demo service has no such handler)
//! on 127.0.0.1:0 and speaks to it through a raw session, so it sees every message.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::{
    ClientMessage, KeyId, Keyring, RpcError, SecretKey, ServerMessage, SessionReader,
};
use rpckit_server::{CallContext, Server, ServerConfig, Service};
use serde::{Deserialize, Serialize};

const STEP: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_millis(300);

#[derive(Debug, Serialize, Deserialize)]
enum Req {
    /// Answers `Pong` at once.
    Ping,
    /// Answers `Released` once the test has released it (see [`Released`]).
    Held,
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
enum Resp {
    Pong,
    Released,
}

/// Ready once the flag is set, but never wakes its task: it is polled again only when its
/// task is woken for another reason.
struct Released(Arc<AtomicBool>);

impl Future for Released {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.0.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

struct Holding {
    release: Arc<AtomicBool>,
}

impl Service for Holding {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, request: Req, _ctx: CallContext) -> Result<Resp, RpcError> {
        match request {
            Req::Ping => Ok(Resp::Pong),
            Req::Held => {
                Released(self.release.clone()).await;
                Ok(Resp::Released)
            }
        }
    }
}

/// Runs `fut`, failing the test if it takes longer than `limit`.
fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    async_std::task::block_on(async {
        futures_lite::future::or(async { Some(fut.await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await
    })
    .unwrap_or_else(|| panic!("test step did not finish within {limit:?}"))
}

/// The next message on the raw session, or `None` at a clean end of stream.
async fn next<R: futures_lite::io::AsyncRead + Unpin>(
    reader: &mut SessionReader<R>,
) -> Option<ServerMessage<Resp>> {
    let payload = reader.recv().await.expect("read a frame")?;
    let message = decode_server::<Resp>(payload).expect("decodable message");
    Some(match message {
        ServerMessage::Reply { id, result } => ServerMessage::Reply {
            id,
            result: result.map(|body| body.expect("decodable response")),
        },
        ServerMessage::Ping { nonce } => ServerMessage::Ping { nonce },
        ServerMessage::Pong { nonce } => ServerMessage::Pong { nonce },
        ServerMessage::GoingAway { grace } => ServerMessage::GoingAway { grace },
        ServerMessage::Goodbye => ServerMessage::Goodbye,
    })
}

fn call(id: u64, request: Req) -> ClientMessage<Req> {
    ClientMessage::Call {
        id,
        deadline: None,
        request,
    }
}

#[test]
fn a_call_finishing_as_the_grace_period_ends_gets_one_answer_and_goodbye_comes_last() {
    let id = KeyId::new("grace").unwrap();
    let key = SecretKey::generate();
    let mut ring = Keyring::new();
    ring.insert(id.clone(), key.clone());
    let release = Arc::new(AtomicBool::new(false));

    let listener =
        within(STEP, async_std::net::TcpListener::bind("127.0.0.1:0")).expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().unwrap();
    let config = ServerConfig {
        grace_period: GRACE,
        ..ServerConfig::default()
    };
    let server = Server::new(
        Holding {
            release: release.clone(),
        },
        ring,
        config,
    );
    let (stop_tx, stop_rx) = async_std::channel::bounded::<()>(1);
    let running = std::thread::spawn(move || {
        async_std::task::block_on(server.run(listener, async move {
            let _ = stop_rx.recv().await;
        }))
    });

    let seen = within(STEP, async {
        let stream = async_std::net::TcpStream::connect(addr)
            .await
            .expect("connect");
        let session = handshake::connect(
            stream.clone(),
            stream.clone(),
            &id,
            &key,
            &HandshakeConfig::default(),
        )
        .await
        .expect("handshake");
        let (mut reader, mut writer) = session.split();

        // The Ping's answer proves the server has read call 1, so that call waits in its own
        // task (its handler was not ready on the first poll).
        writer.push_client(&call(1, Req::Held)).unwrap();
        writer.push_client(&call(2, Req::Ping)).unwrap();
        writer.flush().await.unwrap();
        assert_eq!(
            next(&mut reader).await,
            Some(ServerMessage::Reply {
                id: 2,
                result: Ok(Resp::Pong)
            })
        );

        // From now on the handler is ready, but nothing wakes its task until the grace
        // period is over and the read loop cancels it.
        release.store(true, Ordering::SeqCst);
        stop_tx.send(()).await.expect("server still running");
        assert_eq!(
            next(&mut reader).await,
            Some(ServerMessage::GoingAway { grace: GRACE })
        );

        // Everything else until the end of the stream (bounded: the step's time limit, and
        // at most a few more messages than the two expected).
        let mut seen = Vec::new();
        while let Some(message) = next(&mut reader).await {
            seen.push(message);
            assert!(seen.len() <= 8, "too many messages: {seen:?}");
        }
        seen
    });

    assert_eq!(
        seen,
        vec![
            ServerMessage::Reply {
                id: 1,
                result: Err(RpcError::ShuttingDown)
            },
            ServerMessage::Goodbye,
        ],
        "call 1 must be answered exactly once, and nothing may follow the goodbye"
    );
    let result = running.join().expect("server thread did not panic");
    assert!(result.is_ok(), "{result:?}");
}
