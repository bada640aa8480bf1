//! `rpc-server --metrics-listen`: known calls, handshakes and probes against the real binary,
//! then a scrape of `/metrics` that Prometheus's `promtool check metrics` accepts and whose
//! counters are exactly what the test did. A key-less probe of `/healthz` (a load balancer's)
//! goes to the metrics port and never counts as a handshake.

use std::time::Duration;

use rpckit_client::ClientConfig;
use rpckit_integration_tests::{
    client, http_get, promtool, raw_session, raw_session_offering, sample, send_and_sync, within,
    ServerProcess, TestKey,
};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{ClientMessage, RpcError, ServerMessage, Suite};

const STEP: Duration = Duration::from_secs(30);

/// The value of `series` in `body`, 0 if it is absent; panics with the body if it is not
/// `expected`.
#[track_caller]
fn expect(body: &str, series: &str, expected: f64) {
    let value = sample(body, series).unwrap_or(0.0);
    assert_eq!(value, expected, "{series} in:\n{body}");
}

#[test]
fn a_scrape_passes_promtool_and_counts_what_the_test_did() {
    let key = TestKey::new("metrics");
    let mut server = ServerProcess::start(
        &key.path,
        &["--metrics-listen", "127.0.0.1:0", "--max-in-flight", "1"],
    );
    let metrics = server.metrics_addr.expect("a metrics line");

    // Load balancer probes, without a key, on the metrics port.
    for _ in 0..3 {
        assert_eq!(http_get(metrics, "/healthz").status, 200);
    }

    let mut config = ClientConfig::default();
    config.reconnect_attempts = 0;
    let lib = client(server.addr, &key, config);
    within(STEP, async {
        for word in ["a", "b", "c"] {
            let answer = lib.call(Request::Uppercase(word.into())).await.unwrap();
            assert_eq!(answer, Response::Uppercase(word.to_uppercase()));
        }
        for _ in 0..2 {
            let answer = lib.call(Request::Echo(b"xy".to_vec())).await.unwrap();
            assert_eq!(answer, Response::Echo(b"xy".to_vec()));
        }

        // With --max-in-flight 1: a slow call in flight, then an echo refused Overloaded,
        // then the slow call cancelled; the Pong after it proves the server has read it all.
        let (_stream, session) = raw_session(server.addr, &key).await;
        let (mut reader, mut writer) = session.split();
        let call = |id, request| ClientMessage::Call {
            id,
            deadline: None,
            request,
        };
        let messages = [
            call(1, Request::Sleep { ms: 600_000 }),
            call(2, Request::Echo(b"no room".to_vec())),
            ClientMessage::<Request>::Cancel { id: 1 },
        ];
        let before = send_and_sync(&mut reader, &mut writer, &messages).await;
        assert_eq!(
            before,
            [ServerMessage::Reply {
                id: 2,
                result: Err(RpcError::Overloaded)
            }]
        );

        // The right key id with a wrong secret: a failed proof.
        let wrong = TestKey::new("metrics");
        assert!(
            raw_session_offering(server.addr, &wrong, Suite::preferred())
                .await
                .is_err(),
            "a wrong key is refused"
        );
    });
    server.expect_log("handshake failed", STEP);

    let scrape = http_get(metrics, "/metrics");
    assert_eq!(scrape.status, 200);
    let body = scrape.body;
    if let Some(out) = promtool(&["check", "metrics"], body.as_bytes()) {
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}\n{body}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let calls = |method: &str, outcome: &str| {
        format!("rpckit_calls_total{{method=\"{method}\",outcome=\"{outcome}\"}}")
    };
    expect(&body, &calls("uppercase", "ok"), 3.0);
    expect(&body, &calls("echo", "ok"), 2.0);
    expect(&body, &calls("echo", "overloaded"), 1.0);
    expect(&body, &calls("sleep", "cancelled"), 1.0);
    expect(&body, &calls("ping", "ok"), 0.0);
    expect(
        &body,
        "rpckit_call_duration_seconds_count{method=\"uppercase\"}",
        3.0,
    );
    expect(
        &body,
        "rpckit_call_duration_seconds_count{method=\"echo\"}",
        2.0,
    );
    expect(
        &body,
        "rpckit_call_duration_seconds_count{method=\"sleep\"}",
        1.0,
    );
    expect(&body, "rpckit_calls_in_flight", 0.0);
    // The probes never touched the RPC port: three connections, two good keys, one wrong.
    expect(&body, "rpckit_connections_accepted_total", 3.0);
    expect(&body, "rpckit_handshakes_total{outcome=\"ok\"}", 2.0);
    expect(&body, "rpckit_handshakes_total{outcome=\"bad_proof\"}", 1.0);
    for outcome in [
        "unknown_key",
        "timeout",
        "protocol_error",
        "peer_closed",
        "evicted",
    ] {
        expect(
            &body,
            &format!("rpckit_handshakes_total{{outcome=\"{outcome}\"}}"),
            0.0,
        );
    }
    for reason in ["connection_limit", "too_many_unauthenticated", "penalised"] {
        expect(
            &body,
            &format!("rpckit_connections_refused_total{{reason=\"{reason}\"}}"),
            0.0,
        );
    }
    expect(&body, "rpckit_draining", 0.0);
    for bytes in ["rpckit_received_bytes_total", "rpckit_sent_bytes_total"] {
        assert!(
            sample(&body, bytes).unwrap_or(0.0) > 0.0,
            "{bytes}:\n{body}"
        );
    }
    assert!(
        sample(&body, "process_open_fds").unwrap_or(0.0) > 0.0,
        "{body}"
    );
    within(STEP, lib.close());
    server.stop(STEP);
}

#[test]
fn the_documented_alert_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/alerts.yml");
    if let Some(out) = promtool(&["check", "rules", rules], b"") {
        assert!(
            out.status.success(),
            "promtool check rules {rules}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
