//! Property test against a live `rpc-server`: random and mutated byte streams before the
//! handshake, and random frames (garbage, bad tags, correctly tagged random payloads, valid
//! calls, frames cut short) after it. After every case: the server closed that connection
//! (no hang), answers a fresh client, keeps serving a client connected since the start, and
//! its memory stays bounded. Catalogue cases 5, 7, 9, 10, 11 and 17 in random combinations.

mod robustness_common;

use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use robustness_common::*;
use rpckit_client::ClientConfig;
use rpckit_integration_tests::{client, raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(20);
/// RSS growth allowed over the whole run.
const RSS_SLACK_KIB: u64 = 96 * 1024;

/// One piece of what a peer writes after the handshake.
#[derive(Debug, Clone)]
enum Chunk {
    /// Bytes as they are.
    Garbage(Vec<u8>),
    /// A length prefix and a body (an untagged or wrongly tagged frame).
    LenPrefixed(u32, Vec<u8>),
    /// A correctly tagged call whose body is random bytes.
    RawCall(u64, Option<u64>, Vec<u8>),
    /// A correctly tagged frame with another envelope shape (see `shaped`).
    Shaped(u8, u64, Vec<u8>),
    /// A valid call.
    Valid(u64, Request),
    /// A valid cancel.
    Cancel(u64),
    /// A valid ping.
    Ping(u64),
    /// A valid call cut short after some of its bytes; nothing follows it.
    Cut(u64, Request, usize),
}

/// What one case sends.
#[derive(Debug, Clone)]
enum Input {
    /// Random bytes instead of a hello.
    Pre(Vec<u8>),
    /// A valid hello with bytes flipped, maybe truncated, maybe followed by more bytes.
    Hello(Vec<(usize, u8)>, Option<usize>, Vec<u8>),
    /// An authenticated session, then these pieces.
    Post(Vec<Chunk>),
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        vec(any::<u8>(), 0..64).prop_map(Request::Echo),
        "\\PC{0,20}".prop_map(Request::Uppercase),
        Just(Request::Ping),
        (0u64..30).prop_map(|ms| Request::Sleep { ms }),
    ]
}

fn chunk() -> impl Strategy<Value = Chunk> {
    prop_oneof![
        vec(any::<u8>(), 0..256).prop_map(Chunk::Garbage),
        (
            prop_oneof![0u32..64, 0u32..70_000, any::<u32>()],
            vec(any::<u8>(), 0..128)
        )
            .prop_map(|(l, b)| Chunk::LenPrefixed(l, b)),
        (any::<u64>(), option::of(0u64..100), vec(any::<u8>(), 0..64))
            .prop_map(|(id, d, b)| Chunk::RawCall(id, d, b)),
        (0u8..6, any::<u64>(), vec(any::<u8>(), 0..64))
            .prop_map(|(k, id, b)| Chunk::Shaped(k, id, b)),
        (any::<u64>(), request()).prop_map(|(id, r)| Chunk::Valid(id, r)),
        any::<u64>().prop_map(Chunk::Cancel),
        any::<u64>().prop_map(Chunk::Ping),
        (any::<u64>(), request(), any::<usize>()).prop_map(|(id, r, at)| Chunk::Cut(id, r, at)),
    ]
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..512).prop_map(Input::Pre),
        1 => (
            vec((0usize..128, 1u8..=255), 0..4),
            option::of(0usize..120),
            vec(any::<u8>(), 0..64)
        )
            .prop_map(|(m, t, e)| Input::Hello(m, t, e)),
        2 => vec(chunk(), 1..12).prop_map(Input::Post),
    ]
}

/// Seals a frame whose payload starts with another envelope header: a call with random body
/// (0), a cancel with trailing bytes (1), a ping (2), a pong (3), a goodbye with trailing
/// bytes (4), an unknown header (5).
fn shaped(
    writer: &mut rpckit_proto::SessionWriter<async_std::net::TcpStream>,
    kind: u8,
    id: u64,
    tail: Vec<u8>,
) {
    let msg: ServerMessage<Raw> = match kind {
        0 => ServerMessage::Reply {
            id,
            result: Ok(Raw(tail)),
        },
        1 => ServerMessage::Reply {
            id,
            result: Err(RpcError::Application(String::from_utf8_lossy(&tail).into())),
        },
        2 => ServerMessage::Ping { nonce: id },
        3 => ServerMessage::Pong { nonce: id },
        4 => ServerMessage::GoingAway {
            grace: Duration::from_millis(id % 1000),
        },
        _ => ServerMessage::Goodbye,
    };
    writer.push_server(&msg).unwrap();
}

/// Reads what the server sends until it closes; `None` if it does not close in time.
async fn read_until_closed(stream: &async_std::net::TcpStream) -> Option<Vec<u8>> {
    let mut s = stream.clone();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while out.len() < (8 << 20) {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
        false
    };
    let closed = futures_lite::future::or(read, async {
        async_io::Timer::after(STEP).await;
        false
    })
    .await;
    closed.then_some(out)
}

/// Runs one case; returns what the server sent before closing.
async fn run_case(server: &ServerProcess, key: &TestKey, input: &Input) -> Option<Vec<u8>> {
    match input {
        Input::Pre(bytes) => {
            let stream = async_std::net::TcpStream::connect(server.addr)
                .await
                .unwrap();
            let _ = (&stream).write_all(bytes).await;
            let _ = stream.shutdown(std::net::Shutdown::Write);
            read_until_closed(&stream).await
        }
        Input::Hello(flips, truncate, extra) => {
            let (_, mut bytes) = hello(key);
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x;
            }
            if let Some(t) = truncate {
                bytes.truncate(*t);
            }
            bytes.extend_from_slice(extra);
            let stream = async_std::net::TcpStream::connect(server.addr)
                .await
                .unwrap();
            let _ = (&stream).write_all(&bytes).await;
            let _ = stream.shutdown(std::net::Shutdown::Write);
            read_until_closed(&stream).await
        }
        Input::Post(chunks) => {
            let (stream, session) = raw_session(server.addr, key).await;
            let (_reader, writer) = session.split();
            let mut writer = Some(writer);
            let mut s = stream.clone();
            for chunk in chunks {
                let Some(w) = writer.as_mut() else { break };
                let raw: Option<Vec<u8>> = match chunk.clone() {
                    Chunk::Garbage(b) => Some(b),
                    Chunk::LenPrefixed(len, b) => {
                        let mut out = len.to_be_bytes().to_vec();
                        out.extend_from_slice(&b);
                        Some(out)
                    }
                    Chunk::RawCall(id, d, b) => {
                        w.push_client(&ClientMessage::Call {
                            id,
                            deadline: d.map(Duration::from_millis),
                            request: Raw(b),
                        })
                        .unwrap();
                        None
                    }
                    Chunk::Shaped(k, id, b) => {
                        shaped(w, k, id, b);
                        None
                    }
                    Chunk::Valid(id, r) => {
                        w.push_client(&call(id, r)).unwrap();
                        None
                    }
                    Chunk::Cancel(id) => {
                        w.push_client(&ClientMessage::<Request>::Cancel { id })
                            .unwrap();
                        None
                    }
                    Chunk::Ping(nonce) => {
                        w.push_client(&ClientMessage::<Request>::Ping { nonce })
                            .unwrap();
                        None
                    }
                    Chunk::Cut(id, r, at) => {
                        let mut w = writer.take().unwrap();
                        w.push_client(&call(id, r)).unwrap();
                        let (_, _, bytes) = w.into_parts();
                        let at = at % bytes.len().max(1);
                        Some(bytes[..at].to_vec())
                    }
                };
                let written = match (raw, writer.as_mut()) {
                    (Some(bytes), _) => s.write_all(&bytes).await,
                    (None, Some(w)) => w.flush().await,
                    (None, None) => Ok(()),
                };
                if written.is_err() {
                    break; // the server already closed: fine
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Write);
            read_until_closed(&stream).await
        }
    }
}

#[test]
fn live_server_survives_random_and_mutated_input_before_and_after_the_handshake() {
    let key = TestKey::new("live");
    let mut server = ServerProcess::start(
        &key.path,
        &[
            "--handshake-timeout",
            "2s",
            "--grace-period",
            "1s",
            "--max-frame",
            "65536",
            // Random bytes fail authentication on purpose: do not penalise 127.0.0.1.
            "--auth-failure-limit",
            "0",
        ],
    );
    let base_rss = server.rss_kib().unwrap();
    let bystander = client(server.addr, &key, ClientConfig::default());
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let max_rss = std::cell::Cell::new(base_rss);
    let result = runner.run(&input(), |input| {
        let sent = within(Duration::from_secs(60), run_case(&server, &key, &input));
        prop_assert!(sent.is_some(), "server did not close the connection");
        let sent = sent.unwrap();
        if let Input::Pre(_) | Input::Hello(..) = input {
            // Nothing, a 7-byte refusal, or a ServerHello (and maybe a ServerProof status).
            prop_assert!(
                sent.is_empty() || (sent.len() >= 7 && sent.starts_with(b"RPCK\x01\x02")),
                "unexpected answer before the handshake: {sent:02x?}"
            );
        }
        // The server answers a fresh client, and one connected since the start.
        let fresh = within(STEP, async {
            let (_s, session) = raw_session(server.addr, &key).await;
            let (mut r, mut w) = session.split();
            send(&mut w, &[call(1, Request::Ping)]).await;
            reply_to(&mut r, 1).await
        });
        prop_assert_eq!(fresh, Ok(Response::Pong));
        let answer = within(STEP, bystander.call(Request::Uppercase("still".into())));
        prop_assert_eq!(
            answer.map_err(|e| TestCaseError::fail(e.to_string()))?,
            Response::Uppercase("STILL".into())
        );
        let rss = server
            .rss_kib()
            .ok_or_else(|| TestCaseError::fail("server gone"))?;
        max_rss.set(max_rss.get().max(rss));
        prop_assert!(
            rss < base_rss + RSS_SLACK_KIB,
            "RSS {} KiB -> {} KiB",
            base_rss,
            rss
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\nserver log:\n{}", server.log_text());
    }
    server.assert_not_logged("panicked");
    eprintln!(
        "RSS {base_rss} KiB at start, at most {} KiB during the run",
        max_rss.get()
    );
}
