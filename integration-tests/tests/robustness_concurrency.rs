//! Robustness catalogue, "Concurrency" (cases 35, 36, 38), against the real `rpc-server`.
//! Case 37 (a panicking handler) needs a service that panics: see
//! `server/tests/panic_handler.rs`.

mod robustness_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_lite::future;
use futures_lite::io::AsyncWriteExt;
use robustness_common::*;
use rpckit_client::ClientConfig;
use rpckit_integration_tests::{client, raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake;
use rpckit_proto::{ClientMessage, Refusal, ServerMessage};

const STEP: Duration = Duration::from_secs(30);

#[test]
fn case_35_thousand_concurrent_callers_each_get_their_own_answer() {
    const CONNECTIONS: usize = 50;
    const PER_CONNECTION: usize = 20;
    let key = Arc::new(TestKey::new("conc"));
    let server = ServerProcess::start(&key.path, &[]);
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|_| Arc::new(client(server.addr, &key, ClientConfig::default())))
        .collect();
    let answered = within(Duration::from_secs(60), async {
        let mut tasks = Vec::new();
        for (c, cl) in clients.iter().enumerate() {
            for i in 0..PER_CONNECTION {
                let cl = cl.clone();
                tasks.push(async_std::task::spawn(async move {
                    let tag = format!("conn {c} call {i}");
                    // Different methods and sizes, so answers finish in mixed order.
                    let request = match i % 3 {
                        0 => Request::Echo(tag.repeat(1 + i).into_bytes()),
                        1 => Request::Uppercase(tag.clone()),
                        _ => Request::Sleep {
                            ms: (c * 7 + i * 13) as u64 % 50,
                        },
                    };
                    let want = match &request {
                        Request::Echo(b) => Response::Echo(b.clone()),
                        Request::Uppercase(t) => Response::Uppercase(t.to_uppercase()),
                        Request::Sleep { ms } => Response::Slept { ms: *ms },
                        Request::Ping => Response::Pong,
                    };
                    let got = cl.call(request).await.expect("call answered");
                    assert_eq!(got, want, "{tag}");
                }));
            }
        }
        let n = tasks.len();
        for t in tasks {
            t.await;
        }
        n
    });
    assert_eq!(answered, CONNECTIONS * PER_CONNECTION);

    // The same on raw sessions, where the test picks the ids: 20 scattered ids in flight at
    // once per connection, answered out of order, each answer carrying its own id.
    within(STEP, async {
        let mut sessions = Vec::new();
        for _ in 0..5 {
            sessions.push(raw_session(server.addr, &key).await);
        }
        for (n, (_s, session)) in sessions.iter_mut().enumerate() {
            let (reader, writer) = (&mut session.reader, &mut session.writer);
            let mut want = HashMap::new();
            for k in 0..20u64 {
                let id = k.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(n as u32);
                let ms = 60 - 3 * k; // later calls finish first
                want.insert(id, Response::Slept { ms });
                writer
                    .push_client(&call(id, Request::Sleep { ms }))
                    .unwrap();
            }
            writer.flush().await.unwrap();
            for _ in 0..20 {
                match recv(reader).await {
                    Ok(Some(ServerMessage::Reply { id, result })) => {
                        let expected = want.remove(&id).expect("an id we sent, answered once");
                        assert_eq!(result, Ok(expected), "id {id:#x}");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert!(want.is_empty());
        }
    });
}

#[test]
fn case_36_one_slow_handler_does_not_block_other_calls_or_connections() {
    let key = TestKey::new("conc");
    let server = ServerProcess::start(&key.path, &[]);
    let other = client(server.addr, &key, ClientConfig::default());
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // A handler that will not finish during this test...
        send(&mut writer, &[call(1, Request::Sleep { ms: 60_000 })]).await;
        // ...while 50 calls on the same connection, and 50 on another, are all answered.
        for id in 2..52u64 {
            send(
                &mut writer,
                &[call(id, Request::Uppercase(format!("x{id}")))],
            )
            .await;
            match recv(&mut reader).await {
                Ok(Some(ServerMessage::Reply { id: got, result })) => {
                    assert_eq!(got, id, "the slow call did not answer first");
                    assert_eq!(result, Ok(Response::Uppercase(format!("X{id}"))));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert_eq!(other.call(Request::Ping).await.unwrap(), Response::Pong);
        }
        // Many slow calls at once do not block fast ones either (no blocking on the executor).
        let many: Vec<_> = (100..300u64)
            .map(|id| call(id, Request::Sleep { ms: 60_000 }))
            .collect();
        send(&mut writer, &many).await;
        send(&mut writer, &[call(2, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 2).await, Ok(Response::Pong));
        let pongs = future::zip(other.call(Request::Ping), other.call(Request::Ping)).await;
        assert_eq!(pongs.0.unwrap(), Response::Pong);
        assert_eq!(pongs.1.unwrap(), Response::Pong);
    });
}

/// One connect-and-close of the storm; `how` picks the way of closing.
async fn storm_cycle(server: &ServerProcess, key: &TestKey, how: usize) {
    match how % 5 {
        0 => {
            // Goodbye with a call in flight.
            let (_s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            send(
                &mut w,
                &[
                    call(1, Request::Sleep { ms: 60_000 }),
                    ClientMessage::Goodbye,
                ],
            )
            .await;
        }
        1 => {
            // RST with calls in flight.
            let (s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            send(
                &mut w,
                &[
                    call(1, Request::Sleep { ms: 60_000 }),
                    call(2, Request::Sleep { ms: 60_000 }),
                ],
            )
            .await;
            set_linger_zero(&s);
        }
        2 => {
            // FIN in the middle of a frame.
            let (s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            w.push_client(&call(1, Request::Ping)).unwrap();
            let (_, _, frame) = w.into_parts();
            let mut s2 = s.clone();
            s2.write_all(&frame[..frame.len() - 5]).await.unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        }
        3 => {
            // RST in the middle of the hello.
            let s = async_std::net::TcpStream::connect(server.addr)
                .await
                .unwrap();
            let (_, bytes) = hello(key);
            let mut s2 = s.clone();
            s2.write_all(&bytes[..7]).await.unwrap();
            set_linger_zero(&s);
        }
        _ => {
            // Connect and close without a byte.
            drop(
                async_std::net::TcpStream::connect(server.addr)
                    .await
                    .unwrap(),
            );
        }
    }
}

#[test]
fn case_38_connect_close_storm_counters_and_permits_return_to_baseline() {
    const UNAUTH: usize = 4;
    const CONNS: usize = 8;
    let key = TestKey::new("conc");
    let mut server = ServerProcess::start(
        &key.path,
        &[
            "--max-unauthenticated",
            &UNAUTH.to_string(),
            "--max-connections",
            &CONNS.to_string(),
            "--grace-period",
            "2s",
        ],
    );
    within(Duration::from_secs(60), async {
        for i in 0..500 {
            storm_cycle(&server, &key, i).await;
            // Keep under the caps: each cycle's end is logged before the next starts.
            assert!(
                server
                    .wait_for_log_any(&["closed:", "handshake failed"], STEP)
                    .is_some(),
                "cycle {i} ended:\n{}",
                server.log_text()
            );
        }
    });
    assert_eq!(
        server.log_count("closed:") + server.log_count("handshake failed"),
        500
    );

    let busy = refusal(Refusal::Busy);
    // Unauthenticated table back to empty: UNAUTH silent connections fill it, so the next
    // one takes the place of the oldest, which is told Busy (each left then authenticates).
    let mut silent: Vec<_> = (0..UNAUTH).map(|_| tcp(server.addr)).collect();
    let extra = tcp(server.addr);
    assert_eq!(read_n(&mut silent[0], 7), busy, "unauthenticated cap");
    silent[0] = extra;
    for s in &mut silent {
        let (nc, _) = hello(&key);
        let ns = hello_exchange(s, &key, &nc);
        std::io::Write::write_all(
            s,
            &proof_msg(&handshake::client_proof(&key.key, &key.id, &nc, &ns)),
        )
        .unwrap();
        assert_eq!(read_n(s, 2), [4, 0], "admitted, so the gauge had room");
    }
    // Connection gauge back to zero: CONNS - UNAUTH more authenticate, the next is refused.
    let more: Vec<_> = (UNAUTH..CONNS)
        .map(|_| within(STEP, raw_session(server.addr, &key)))
        .collect();
    let mut extra = tcp(server.addr);
    assert_eq!(read_n(&mut extra, 7), busy, "connection cap");
    drop((silent, more, extra));

    // No call of the storm is still counted in flight.
    stop_with_no_call_in_flight(&mut server, STEP);
}
