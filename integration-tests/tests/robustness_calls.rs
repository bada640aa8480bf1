//! Robustness of calls on one connection, against the real `rpc-server`: the in-flight cap
//! (catalogue case 35: past the cap a caller is told at once), deadlines (case 36: a slow
//! handler cannot hold its caller past the deadline), and cancellation returning the in-flight
//! permits (case 38).

mod robustness_common;

use std::time::{Duration, Instant};

use futures_lite::future;
use robustness_common::*;
use rpckit_client::{CallError, ClientConfig};
use rpckit_integration_tests::{client, raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(20);

#[test]
fn case_35_in_flight_cap_answers_a_third_concurrent_sleep_overloaded_at_once() {
    let key = TestKey::new("calls");
    let server = ServerProcess::start(&key.path, &["--max-in-flight", "2"]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        send(
            &mut writer,
            &[
                call(1, Request::Sleep { ms: 60_000 }),
                call(2, Request::Sleep { ms: 60_000 }),
                call(3, Request::Sleep { ms: 60_000 }),
            ],
        )
        .await;
        // The third is refused at once: its answer comes while the other two still sleep.
        match recv(&mut reader).await {
            Ok(Some(ServerMessage::Reply { id: 3, result })) => {
                assert_eq!(result, Err(RpcError::Overloaded))
            }
            other => panic!("want Overloaded for call 3 first, got {other:?}"),
        }
        // While the cap is full, any new call is refused the same way.
        send(&mut writer, &[call(4, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 4).await, Err(RpcError::Overloaded));
    });

    // The library client sees the same typed error.
    let c = client(server.addr, &key, ClientConfig::default());
    within(STEP, async {
        let mut a = Box::pin(c.call_with_timeout(Request::Sleep { ms: 60_000 }, None));
        let mut b = Box::pin(c.call_with_timeout(Request::Sleep { ms: 60_000 }, None));
        // One poll each queues them, in order, ahead of the third.
        assert!(future::poll_once(&mut a).await.is_none());
        assert!(future::poll_once(&mut b).await.is_none());
        match c.call(Request::Sleep { ms: 60_000 }).await {
            Err(CallError::Rpc(RpcError::Overloaded)) => {}
            other => panic!("want Overloaded, got {other:?}"),
        }
    });
}

#[test]
fn case_36_deadline_ends_a_slow_call_on_time_client_and_server_side() {
    let key = TestKey::new("calls");
    let server = ServerProcess::start(&key.path, &[]);
    let c = client(server.addr, &key, ClientConfig::default());
    // The client's timeout, also sent as the deadline.
    let started = Instant::now();
    let r = within(
        STEP,
        c.call_with_timeout(
            Request::Sleep { ms: 5000 },
            Some(Duration::from_millis(200)),
        ),
    );
    let took = started.elapsed();
    match r {
        Err(CallError::Timeout(_)) | Err(CallError::Rpc(RpcError::DeadlineExceeded)) => {}
        other => panic!("want Timeout or DeadlineExceeded, got {other:?}"),
    }
    assert!(took >= Duration::from_millis(190), "{took:?}");
    assert!(
        took < Duration::from_millis(2500),
        "did not wait for the handler: {took:?}"
    );

    // The server enforces the deadline by itself: a raw call with a 200 ms deadline and no
    // client-side timer is answered DeadlineExceeded, long before the 5 s sleep.
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let started = Instant::now();
        send(
            &mut writer,
            &[ClientMessage::Call {
                id: 1,
                deadline: Some(Duration::from_millis(200)),
                request: Request::Sleep { ms: 5000 },
            }],
        )
        .await;
        assert_eq!(
            reply_to(&mut reader, 1).await,
            Err(RpcError::DeadlineExceeded)
        );
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(190) && took < Duration::from_millis(2500),
            "{took:?}"
        );
        // The connection is fine afterwards.
        send(&mut writer, &[call(2, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 2).await, Ok(Response::Pong));
    });
}

#[test]
fn case_36_deadline_too_far_to_represent_means_none_not_a_crash() {
    // A deadline the server's clock cannot represent (u64::MAX ms from now) must not crash
    // the connection task: the call is served as if it had no deadline.
    let key = TestKey::new("calls");
    let server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        for (id, request, want) in [
            (1, Request::Ping, Response::Pong),
            (2, Request::Sleep { ms: 1 }, Response::Slept { ms: 1 }),
        ] {
            send(
                &mut writer,
                &[ClientMessage::Call {
                    id,
                    deadline: Some(Duration::from_millis(u64::MAX)),
                    request,
                }],
            )
            .await;
            assert_eq!(reply_to(&mut reader, id).await, Ok(want));
        }
    });
    // The server is still there for everyone.
    let c = client(server.addr, &key, ClientConfig::default());
    assert_eq!(
        within(STEP, c.call(Request::Ping)).ok(),
        Some(Response::Pong)
    );
}

#[test]
fn case_38_cancelled_calls_return_their_in_flight_permits() {
    let key = TestKey::new("calls");
    let server = ServerProcess::start(&key.path, &["--max-in-flight", "2"]);
    let c = client(server.addr, &key, ClientConfig::default());
    within(STEP, async {
        let mut a = Box::pin(c.call_with_timeout(Request::Sleep { ms: 60_000 }, None));
        let mut b = Box::pin(c.call_with_timeout(Request::Sleep { ms: 60_000 }, None));
        assert!(future::poll_once(&mut a).await.is_none());
        assert!(future::poll_once(&mut b).await.is_none());
        // Both permits are taken: a third is Overloaded.
        match c.call(Request::Sleep { ms: 10 }).await {
            Err(CallError::Rpc(RpcError::Overloaded)) => {}
            other => panic!("want Overloaded while two sleep, got {other:?}"),
        }
        // Dropping the calls cancels them on the server.
        drop(a);
        drop(b);
        // Two new calls are admitted (not Overloaded): the count went back to zero.
        let (x, y) = future::zip(
            c.call(Request::Sleep { ms: 10 }),
            c.call(Request::Sleep { ms: 10 }),
        )
        .await;
        assert_eq!(x.unwrap(), Response::Slept { ms: 10 });
        assert_eq!(y.unwrap(), Response::Slept { ms: 10 });
    });
    assert!(
        server.wait_for_log_count("call cancelled by client", 2, STEP),
        "{}",
        server.log_text()
    );

    // Calls that time out on the client are cancelled too, and free their permits.
    within(STEP, async {
        let short = Some(Duration::from_millis(100));
        let (x, y) = future::zip(
            c.call_with_timeout(Request::Sleep { ms: 60_000 }, short),
            c.call_with_timeout(Request::Sleep { ms: 60_000 }, short),
        )
        .await;
        for r in [x, y] {
            assert!(
                matches!(
                    r,
                    Err(CallError::Timeout(_)) | Err(CallError::Rpc(RpcError::DeadlineExceeded))
                ),
                "{r:?}"
            );
        }
        let (x, y) = future::zip(c.call(Request::Ping), c.call(Request::Ping)).await;
        assert_eq!(x.unwrap(), Response::Pong);
        assert_eq!(y.unwrap(), Response::Pong);
    });
}
