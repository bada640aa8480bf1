//! The server's rules for call ids, deadlines and the client's goodbye (PROTOCOL.md §9.1,
//! §9.2, §9.6), on raw authenticated sessions against the real `rpc-server`: a call id
//! reused while in flight ends the connection with no second answer (catalogue case 43); a
//! deadline of 0 ms is already expired, for fast and slow handlers alike; a goodbye stops the
//! calls in flight and the server sends what it had queued, then closes without a goodbye of
//! its own.

mod robustness_common;

use std::time::Duration;

use robustness_common::*;
use rpckit_integration_tests::{raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage};

const STEP: Duration = Duration::from_secs(20);

#[test]
fn case_43_call_id_reused_in_flight_closes_the_connection_with_no_second_answer() {
    let key = TestKey::new("rules");
    let mut server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        // An id reused after its answer has arrived is a new call.
        send(&mut writer, &[call(3, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 3).await, Ok(Response::Pong));
        send(&mut writer, &[call(3, Request::Ping)]).await;
        assert_eq!(reply_to(&mut reader, 3).await, Ok(Response::Pong));
        // Reused while the first call with it still runs: the connection ends, and neither
        // call with id 7 is ever answered; the call before it is.
        send(
            &mut writer,
            &[
                call(7, Request::Sleep { ms: 60_000 }),
                call(8, Request::Ping),
                call(7, Request::Ping),
            ],
        )
        .await;
        let (got, end) = until_closed(&mut reader).await;
        assert_eq!(end, Ok(()), "a clean close");
        let ids: Vec<u64> = got
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Reply { id, .. } => Some(*id),
                _ => None,
            })
            .collect();
        assert_eq!(ids, [8], "only call 8 is answered: {got:?}");
        assert!(
            !got.iter().any(|m| matches!(m, ServerMessage::Goodbye)),
            "a protocol error, not an orderly close: {got:?}"
        );
    });
    server.expect_log("call id 7 reused while in flight", STEP);
    // The sleeping call was stopped with its connection.
    stop_with_no_call_in_flight(&mut server, STEP);
}

#[test]
fn a_zero_deadline_is_already_expired_for_fast_and_slow_handlers() {
    let key = TestKey::new("rules");
    let server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let expired = |id, request| ClientMessage::Call {
            id,
            deadline: Some(Duration::ZERO),
            request,
        };
        send(
            &mut writer,
            &[
                expired(1, Request::Ping),
                expired(2, Request::Sleep { ms: 1 }),
                // A deadline that has not passed: the call runs.
                ClientMessage::Call {
                    id: 3,
                    deadline: Some(Duration::from_secs(60)),
                    request: Request::Ping,
                },
            ],
        )
        .await;
        assert_eq!(
            reply_to(&mut reader, 1).await,
            Err(RpcError::DeadlineExceeded)
        );
        assert_eq!(
            reply_to(&mut reader, 2).await,
            Err(RpcError::DeadlineExceeded)
        );
        assert_eq!(reply_to(&mut reader, 3).await, Ok(Response::Pong));
    });
}

#[test]
fn a_client_goodbye_stops_calls_in_flight_and_the_server_closes_without_its_own() {
    let key = TestKey::new("rules");
    let mut server = ServerProcess::start(&key.path, &[]);
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        send(
            &mut writer,
            &[
                call(1, Request::Sleep { ms: 60_000 }),
                call(2, Request::Ping),
                ClientMessage::Goodbye,
            ],
        )
        .await;
        // The answer queued before the goodbye is sent; the sleeping call gets none; no
        // goodbye comes back.
        let (got, end) = until_closed(&mut reader).await;
        assert_eq!(end, Ok(()), "a clean close");
        assert_eq!(
            got,
            [ServerMessage::Reply {
                id: 2,
                result: Ok(Response::Pong)
            }]
        );
    });
    server.expect_log("closed: client said goodbye", STEP);
    stop_with_no_call_in_flight(&mut server, STEP);
}
