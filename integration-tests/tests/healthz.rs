//! The metrics listener's health check, as a load balancer sees it: `/healthz` answers 200
//! while the server serves; from the first SIGTERM it answers 503, while for `--drain-delay`
//! the RPC port goes on accepting and answering as usual; the metrics listener keeps
//! answering through the drain that follows, until the process exits 0.

use std::net::Shutdown;
use std::time::Duration;

use rpckit_client::ClientConfig;
use rpckit_integration_tests::{
    client, http_get, next_message, raw_session, send_and_sync, within, ServerProcess, TestKey,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, ServerMessage};

const STEP: Duration = Duration::from_secs(30);

#[test]
fn healthz_turns_503_at_the_first_signal_while_the_drain_delay_still_serves() {
    let key = TestKey::new("health-drain");
    // The delay only has to outlast one new connection and call on a busy machine.
    let mut server = ServerProcess::start(
        &key.path,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--drain-delay",
            "10s",
            "--grace-period",
            "60s",
        ],
    );
    let metrics = server
        .metrics_addr
        .expect("the metrics line before the ready line");
    assert!(
        metrics.ip().is_loopback() && metrics.port() != 0,
        "{metrics}"
    );
    let healthz = http_get(metrics, "/healthz");
    assert_eq!((healthz.status, healthz.body.as_str()), (200, "serving\n"));

    within(STEP, async {
        // A call that holds the drain open until the test closes its connection: the Pong
        // after it proves the server has read it.
        let (stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let slow = ClientMessage::Call {
            id: 1,
            deadline: None,
            request: Request::Sleep { ms: 600_000 },
        };
        let before = send_and_sync(&mut reader, &mut writer, &[slow]).await;
        assert!(before.is_empty(), "{before:?}");

        server.signal(libc::SIGTERM);
        server.expect_log("draining soon", STEP);
        let healthz = http_get(metrics, "/healthz");
        assert_eq!((healthz.status, healthz.body.as_str()), (503, "draining\n"));
        // The RPC port still accepts a new connection and answers its call.
        let mut config = ClientConfig::default();
        config.reconnect_attempts = 0;
        let lib = client(server.addr, &key, config);
        assert_eq!(
            lib.call(Request::Uppercase("still here".into()))
                .await
                .expect("a call in the drain delay"),
            Response::Uppercase("STILL HERE".into())
        );
        lib.close().await;

        // Then the drain proper: the metrics listener still answers while the slow call
        // holds it open.
        server.expect_log("shutting down: no new connections; draining", STEP);
        assert_eq!(
            next_message(&mut reader).await,
            ServerMessage::GoingAway {
                grace: Duration::from_secs(60)
            }
        );
        let healthz = http_get(metrics, "/healthz");
        assert_eq!((healthz.status, healthz.body.as_str()), (503, "draining\n"));
        let scrape = http_get(metrics, "/metrics");
        assert_eq!(scrape.status, 200);
        assert!(
            scrape.body.lines().any(|l| l == "rpckit_draining 1"),
            "{}",
            scrape.body
        );
        // Cancelling the last call ends the drain; closing our side lets the connection go.
        writer
            .push_client(&ClientMessage::<Request>::Cancel { id: 1 })
            .unwrap();
        writer.flush().await.unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
    });
    let status = server
        .wait_exit(STEP)
        .unwrap_or_else(|| panic!("rpc-server did not exit; log:\n{}", server.log_text()));
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
}

#[test]
fn without_metrics_listen_there_is_no_metrics_line() {
    let key = TestKey::new("health-off");
    let mut server = ServerProcess::start(&key.path, &[]);
    assert_eq!(server.metrics_addr, None);
    server.stop(STEP);
}
