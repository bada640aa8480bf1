//! The engine end to end against an in-process raw server on 127.0.0.1:0: steady, churn and
//! idle runs count calls and errors as they should; wrong answers and a dead port are errors.

use std::net::SocketAddr;

use async_std::io::{ReadExt, WriteExt};
use rpckit_load::{run_raw, BenchConfig, RawDriver};

/// Starts an in-process raw server on 127.0.0.1:0; `uppercase: false` echoes unchanged.
async fn start_listener(uppercase: bool) -> SocketAddr {
    let listener = async_std::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    async_std::task::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            async_std::task::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = Vec::new();
                loop {
                    let mut h = [0u8; 4];
                    if s.read_exact(&mut h).await.is_err() {
                        return;
                    }
                    buf.resize(u32::from_be_bytes(h) as usize, 0);
                    if s.read_exact(&mut buf).await.is_err() {
                        return;
                    }
                    if uppercase {
                        buf.make_ascii_uppercase();
                    }
                    if s.write_all(&h).await.is_err() || s.write_all(&buf).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn short(conns: usize, depth: usize) -> BenchConfig {
    BenchConfig {
        conns,
        depth,
        duration: 0.3,
        warmup: 0.05,
        ..BenchConfig::default()
    }
}

#[async_std::test]
async fn bench_against_in_process_listener() {
    let addr = start_listener(true).await.to_string();
    let cfg = BenchConfig {
        payload: 100,
        ..short(2, 4)
    };
    let rep = run_raw(&addr, &cfg).await.unwrap();
    assert!(rep.calls > 0, "{rep:?}");
    assert_eq!(rep.errors, 0, "{rep:?}");
    assert_eq!(rep.bytes, rep.calls * 200);
    assert_eq!(rep.latency_us.samples, rep.calls);
    assert_eq!(
        (rep.connections, rep.depth, rep.driver.as_str()),
        (2, 4, "raw")
    );
}

#[async_std::test]
async fn churn_against_in_process_listener() {
    let addr = start_listener(true).await.to_string();
    let cfg = BenchConfig {
        churn: true,
        ..short(2, 8)
    };
    let rep = run_raw(&addr, &cfg).await.unwrap();
    assert!(rep.calls > 0, "{rep:?}");
    // One connection per call, give or take the calls straddling the window edges.
    assert!(rep.connects.abs_diff(rep.calls) <= 2 * 2, "{rep:?}");
    assert!(rep.connections_per_sec.is_some());
    assert_eq!(rep.errors, 0, "{rep:?}");
    assert_eq!(rep.depth, 1);
}

#[async_std::test]
async fn idle_holds_every_connection_then_closes_them() {
    let addr = start_listener(true).await.to_string();
    // More than one batch of CONNECT_PARALLEL attempts.
    let cfg = BenchConfig {
        conns: rpckit_load::CONNECT_PARALLEL + 6,
        duration: 0.1,
        idle: true,
        ..BenchConfig::default()
    };
    let mut announced = None;
    let rep = rpckit_load::run_idle(RawDriver::new(), &addr, &cfg, |n| announced = Some(n))
        .await
        .unwrap();
    assert_eq!(announced, Some(cfg.conns));
    assert!(rep.idle, "{rep:?}");
    assert_eq!(rep.connections_held, Some(cfg.conns as u64), "{rep:?}");
    assert_eq!(rep.connect_errors, Some(0), "{rep:?}");
    assert_eq!(rep.calls, cfg.conns as u64, "one probe call each: {rep:?}");
    assert_eq!(rep.errors, 0, "{rep:?}");
}

#[async_std::test]
async fn idle_with_wrong_answers_holds_nothing() {
    let addr = start_listener(false).await.to_string();
    let cfg = BenchConfig {
        conns: 3,
        duration: 0.1,
        idle: true,
        ..BenchConfig::default()
    };
    let err = rpckit_load::run(RawDriver::new(), &addr, &cfg)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "bad_response_data", "{err}");
}

#[async_std::test]
async fn wrong_answers_are_counted_as_errors() {
    let addr = start_listener(false).await.to_string();
    let rep = run_raw(&addr, &short(1, 2)).await.unwrap();
    assert_eq!(rep.calls, 0, "{rep:?}");
    assert!(
        rep.errors_by_kind
            .get("bad_response_data")
            .copied()
            .unwrap_or(0)
            > 0,
        "{rep:?}"
    );
}

#[async_std::test]
async fn unreachable_server_is_an_error() {
    // Bind then close to get a port that is (almost certainly) not listening.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    drop(l);
    let err = run_raw(&addr, &short(1, 1)).await.unwrap_err();
    assert!(err.kind().starts_with("connect"), "{err}");
}
