//! Every call gets at most one answer, and none after it was cancelled or after the goodbye
//! (PROTOCOL.md §9.1, §9.3, §9.6), even when its handler finishes at the very moment the
//! server ends the call another way:
//!
//! - when the shutdown grace period ends, the read loop answers every call still in its table
//!   `ShuttingDown` and says goodbye;
//! - when the client cancels a call, the read loop drops it (and the client may reuse its id).
//!
//! A call task that finishes at the same moment (on another executor thread, or woken by the
//! same event) would queue its own answer too. These tests make the two meet every time, on
//! any number of threads: once the call's own task has polled the handler and found it
//! pending, the handler becomes ready without waking its task, so the task is polled again
//! only when the read loop cancels it, and then finds its handler ready.
//!
//! It runs `rpckit_server::Server` in-process (the stock demo service has no such handler)
//! on 127.0.0.1:0 and speaks to it through a raw session, so it sees every message.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use common::{within, InProcess};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::message::decode_server;
use rpckit_proto::{ClientMessage, RpcError, ServerMessage, Session, SessionReader, SessionWriter};
use rpckit_server::{CallContext, ServerConfig, Service};
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
/// task is woken for another reason. Each poll that finds it pending is reported on the
/// channel.
struct Released {
    release: Arc<AtomicBool>,
    pending: async_std::channel::Sender<()>,
}

impl Future for Released {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        if self.release.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            let _ = self.pending.try_send(());
            Poll::Pending
        }
    }
}

struct Holding {
    release: Arc<AtomicBool>,
    pending: async_std::channel::Sender<()>,
}

impl Service for Holding {
    type Request = Req;
    type Response = Resp;

    async fn call(&self, request: Req, _ctx: CallContext) -> Result<Resp, RpcError> {
        match request {
            Req::Ping => Ok(Resp::Pong),
            Req::Held => {
                Released {
                    release: self.release.clone(),
                    pending: self.pending.clone(),
                }
                .await;
                Ok(Resp::Released)
            }
        }
    }
}

/// The next message on the raw session, or `None` at a clean end of stream.
async fn next<R: futures_lite::io::AsyncRead + Unpin>(
    reader: &mut SessionReader<R>,
) -> Option<ServerMessage<Resp>> {
    let payload = reader.recv().await.expect("read a frame")?;
    let message = decode_server::<Resp>(payload).expect("decodable message");
    Some(message.map_response(|body| body.expect("decodable response")))
}

/// A server on 127.0.0.1:0 serving [`Holding`] with `config`, and a raw authenticated
/// session to it.
fn start(
    release: &Arc<AtomicBool>,
    pending: &async_std::channel::Sender<()>,
    config: ServerConfig,
) -> (
    InProcess,
    Session<async_std::net::TcpStream, async_std::net::TcpStream>,
) {
    let holding = Holding {
        release: release.clone(),
        pending: pending.clone(),
    };
    let server = InProcess::start("one-answer", holding, config);
    let session = within(STEP, async {
        let stream = async_std::net::TcpStream::connect(server.addr)
            .await
            .expect("connect");
        handshake::connect(
            stream.clone(),
            stream,
            &server.id,
            &server.key,
            &HandshakeConfig::default(),
        )
        .await
        .expect("handshake")
    });
    (server, session)
}

/// Sends call 1 (`Held`) and call 2 (`Ping`), and returns once call 1 waits in its own task:
/// the read loop polls a handler once in place and, if it is pending, gives it a task, whose
/// first poll may come at any time after (late, on a busy machine). So this waits for two
/// pending polls, the read loop's and the task's; from then on only a wake-up of the task
/// polls the handler again.
async fn hold_call_1<R, W>(
    reader: &mut SessionReader<R>,
    writer: &mut SessionWriter<W>,
    pending: &async_std::channel::Receiver<()>,
) where
    R: futures_lite::io::AsyncRead + Unpin,
    W: futures_lite::io::AsyncWrite + Unpin,
{
    writer.push_client(&call(1, Req::Held)).unwrap();
    writer.push_client(&call(2, Req::Ping)).unwrap();
    writer.flush().await.unwrap();
    assert_eq!(
        next(reader).await,
        Some(ServerMessage::Reply {
            id: 2,
            result: Ok(Resp::Pong)
        })
    );
    for _ in 0..2 {
        pending.recv().await.expect("the handler is polled");
    }
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
    let release = Arc::new(AtomicBool::new(false));
    let (pending_tx, pending) = async_std::channel::unbounded();
    let config = {
        let mut server_config = ServerConfig::default();
        server_config.grace_period = GRACE;
        server_config
    };
    let (server, session) = start(&release, &pending_tx, config);

    let seen = within(STEP, async {
        let (mut reader, mut writer) = session.split();
        hold_call_1(&mut reader, &mut writer, &pending).await;

        // From now on the handler is ready, but nothing wakes its task until the grace
        // period is over and the read loop cancels it.
        release.store(true, Ordering::SeqCst);
        server.shut_down();
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
    let result = server.stop();
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn a_call_finishing_as_it_is_cancelled_sends_nothing_and_its_id_can_be_reused() {
    let release = Arc::new(AtomicBool::new(false));
    let (pending_tx, pending) = async_std::channel::unbounded();
    let (server, session) = start(&release, &pending_tx, ServerConfig::default());

    let seen = within(STEP, async {
        let (mut reader, mut writer) = session.split();
        hold_call_1(&mut reader, &mut writer, &pending).await;

        // The handler is ready from now on; the Cancel wakes its task. A new call with the
        // same id goes in the same write.
        release.store(true, Ordering::SeqCst);
        writer
            .push_client(&ClientMessage::<Req>::Cancel { id: 1 })
            .unwrap();
        writer.push_client(&call(1, Req::Ping)).unwrap();
        writer.flush().await.unwrap();
        // Call 3 is sent once the new call 1 is answered; everything up to its answer is kept.
        let mut seen = Vec::new();
        let mut sent_3 = false;
        while let Some(message) = next(&mut reader).await {
            let last = matches!(message, ServerMessage::Reply { id: 3, .. });
            if !sent_3 && matches!(message, ServerMessage::Reply { id: 1, .. }) {
                writer.push_client(&call(3, Req::Ping)).unwrap();
                writer.flush().await.unwrap();
                sent_3 = true;
            }
            seen.push(message);
            assert!(seen.len() <= 8, "too many messages: {seen:?}");
            if last {
                break;
            }
        }
        seen
    });

    assert_eq!(
        seen,
        vec![
            ServerMessage::Reply {
                id: 1,
                result: Ok(Resp::Pong)
            },
            ServerMessage::Reply {
                id: 3,
                result: Ok(Resp::Pong)
            },
        ],
        "the cancelled call 1 must send nothing; the new call 1 gets its own answer"
    );
    let result = server.stop();
    assert!(result.is_ok(), "{result:?}");
}
