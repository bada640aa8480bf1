//! Robustness catalogue, "Resource exhaustion" (cases 23–27) and the connection caps, against
//! the real `rpc-server`.

mod robustness_common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use robustness_common::*;
use rpckit_client::{Client, ClientConfig, ConnectError};
use rpckit_integration_tests::{cli, client, raw_session, within, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::{HandshakeError, Refusal};

const STEP: Duration = Duration::from_secs(30);

fn connect(
    server: &ServerProcess,
    key: &TestKey,
) -> Result<Client<Request, Response>, ConnectError> {
    within(
        STEP,
        Client::connect(
            server.addr.to_string(),
            key.id.clone(),
            key.key.clone(),
            ClientConfig::default(),
        ),
    )
}

#[test]
fn case_23_flood_of_idle_unauthenticated_connections_is_capped_real_client_served() {
    let key = TestKey::new("exh");
    let server = ServerProcess::start(
        &key.path,
        &[
            "--max-unauthenticated",
            "50",
            "--max-unauthenticated-per-source",
            "50",
            "--handshake-timeout",
            "120s",
            "--hello-timeout",
            "120s",
        ],
    );
    // An authenticated client, connected before the flood, calls all through it.
    let good = Arc::new(client(server.addr, &key, ClientConfig::default()));
    // `connect` returned with the server's proof, and the server counts a connection out of
    // the unauthenticated ones before it sends its proof: this one does not count against
    // the cap that the flood below fills exactly.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (good, stop, answered) = (good.clone(), stop.clone(), answered.clone());
        std::thread::spawn(move || {
            for i in 0..1_000_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let text = format!("call {i}");
                let answer = async_std::task::block_on(good.call(Request::Uppercase(text.clone())));
                assert_eq!(
                    answer.expect("call during the flood"),
                    Response::Uppercase(text.to_uppercase())
                );
                answered.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let mut idle = Vec::new();
    let busy = refusal(Refusal::Busy);
    for i in 0..1000 {
        idle.push(tcp(server.addr));
        if i >= 50 {
            // Past the cap: the oldest idle connection gives way, told RPCK 01 02 05.
            let (got, ended) = read_to_end(&mut idle[i - 50], STEP, 64);
            assert!(ended, "connection {} closed", i - 50);
            assert_eq!(got, busy, "connection {}", i - 50);
        }
        if i % 100 == 0 {
            // The real client is served in the middle of the flood.
            let answer = async_std::task::block_on(good.call(Request::Ping));
            assert_eq!(answer.expect("call during the flood"), Response::Pong);
        }
    }
    // A new client is admitted while the cap is full of idle connections.
    let c = connect(&server, &key).expect("a new client is admitted during the flood");
    assert_eq!(
        async_std::task::block_on(c.call(Request::Ping)).unwrap(),
        Response::Pong
    );
    stop.store(true, Ordering::Relaxed);
    caller.join().expect("caller thread: every call answered");
    assert!(answered.load(Ordering::Relaxed) > 0);
    drop(idle);
}

#[test]
fn case_23_total_connection_cap_refuses_the_next_client_busy_not_a_hang() {
    let key = TestKey::new("exh");
    let server = ServerProcess::start(&key.path, &["--max-connections", "3"]);
    let clients: Vec<_> = (0..3)
        .map(|_| client(server.addr, &key, ClientConfig::default()))
        .collect();
    for c in &clients {
        assert_eq!(
            async_std::task::block_on(c.call(Request::Ping)).unwrap(),
            Response::Pong
        );
    }
    // The 4th: a typed refusal, at once.
    match connect(&server, &key) {
        Err(ConnectError::Handshake(HandshakeError::Refused(Refusal::Busy))) => {}
        other => panic!("want Handshake(Refused(Busy)), got {other:?}"),
    }
    // The CLI: exit 3 and one clear line.
    let started = Instant::now();
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.contains("busy"), "says why: {stderr:?}");
    assert!(server.wait_for_log_count("refused: connection limit reached", 1, STEP));
    // Existing clients carry on.
    for c in &clients {
        assert_eq!(
            async_std::task::block_on(c.call(Request::Ping)).unwrap(),
            Response::Pong
        );
    }
}

#[test]
fn case_24_accept_failing_with_emfile_backs_off_and_recovers() {
    let key = TestKey::new("exh");
    let mut server = ServerProcess::start(
        &key.path,
        &[
            "--handshake-timeout",
            "120s",
            "--hello-timeout",
            "120s",
            "--max-unauthenticated-per-source",
            "100",
        ],
    );
    let status = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(server.pid().to_string())
        .arg("--nofile=64:64")
        .status()
        .expect("run prlimit");
    assert!(status.success(), "prlimit failed");

    // Silent connections until the server runs out of descriptors; the rest wait in the
    // listen backlog.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tcp(server.addr));
    }
    let line = server
        .wait_for_log("accept failed; backing off", STEP)
        .expect("accept failure is logged");
    assert!(
        line.contains("Too many open files") || line.contains("os error 24"),
        "{line}"
    );

    // No busy loop: each failure is followed by a backoff of 100 ms, so the 1st and the 6th
    // failure are at least 500 ms apart by the server's own clock (the time in its log lines;
    // the test's clock would count the lag of the thread that reads the log too). The log's
    // clock is the wall clock, which NTP may slew a little: 450 ms is the bound.
    assert!(server.wait_for_log_count("accept failed; backing off", 6, STEP));
    let failures: Vec<f64> = server
        .log_text()
        .lines()
        .filter(|l| l.contains("accept failed; backing off"))
        .map(|l| seconds_of_day(l).unwrap_or_else(|| panic!("no time in {l:?}")))
        .collect();
    let apart = (failures[5] - failures[0]).rem_euclid(86_400.0);
    assert!(
        apart >= 0.45,
        "accept loop spins: 6 failures within {apart:.3} s"
    );
    assert!(!server.has_exited(), "the server must not exit");

    // Descriptors come back: a new client is served, and the process is still there.
    drop(held);
    assert_serving(server.addr, &key);
    assert!(!server.has_exited());
}

/// The time of day, in seconds, at the start of a log line (`2026-11-28T22:58:34.822421Z ...`).
fn seconds_of_day(line: &str) -> Option<f64> {
    let time = line.split_whitespace().next()?.split_once('T')?.1;
    let time = time.strip_suffix('Z')?;
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}

/// Waits (bounded) until the server's descriptor count is at most `want`; /proc has no
/// event to wait on, so this re-reads it a bounded number of times.
fn fds_settle(server: &ServerProcess, want: usize) -> usize {
    let mut now = server.open_fds().unwrap();
    for _ in 0..500 {
        if now <= want {
            break;
        }
        // Waits for any log line, at most 10 ms.
        let _ = server.wait_for_log("\u{0}never", Duration::from_millis(10));
        now = server.open_fds().unwrap();
    }
    now
}

/// One connect, handshake and close; `how` picks the way of closing.
async fn cycle(server: &ServerProcess, key: &TestKey, how: usize) {
    use futures_lite::io::AsyncWriteExt;
    match how % 4 {
        0 => {
            let (_s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            send(&mut w, &[rpckit_proto::ClientMessage::Goodbye]).await;
        }
        1 => {
            // FIN (both ways) with a short call in flight: the server finishes it, then closes.
            let (s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            send(&mut w, &[call(1, Request::Sleep { ms: 20 })]).await;
            drop(w);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        2 => {
            // RST after the handshake, with a long call in flight (cancelled by the close).
            let (s, session) = raw_session(server.addr, key).await;
            let (_r, mut w) = session.split();
            send(&mut w, &[call(1, Request::Sleep { ms: 60_000 })]).await;
            set_linger_zero(&s);
            drop(w);
            drop(s);
        }
        _ => {
            // Half a hello, then close.
            let (_, bytes) = hello(key);
            let mut s = async_std::net::TcpStream::connect(server.addr)
                .await
                .unwrap();
            s.write_all(&bytes[..10]).await.unwrap();
        }
    }
}

#[test]
fn case_25_connect_and_close_at_high_rate_returns_fds_and_memory_to_baseline() {
    let key = TestKey::new("exh");
    let server = ServerProcess::start(&key.path, &["--max-unauthenticated", "1000"]);
    let base_fds = server.open_fds().unwrap();
    // Warm up, so lazily allocated state is in the baseline.
    for i in 0..8 {
        within(STEP, cycle(&server, &key, i));
    }
    assert!(server.wait_for_log_count("closed:", 6, STEP));
    assert!(server.wait_for_log_count("handshake failed", 2, STEP));
    let base_rss = server.rss_kib().unwrap();

    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(Duration::from_secs(90), async {
            let mut spent = [Duration::ZERO; 4];
            for i in 0..500 {
                let t = Instant::now();
                cycle(&server, &key, i).await;
                spent[i % 4] += t.elapsed();
            }
            eprintln!("TIMING {spent:?}");
        })
    }));
    if r.is_err() {
        eprintln!("LOG\n{}", server.log_text());
        panic!();
    }
    // Every connection of the storm has ended (375 authenticated, 125 mid-hello).
    assert!(
        server.wait_for_log_count("closed:", 6 + 375, STEP),
        "{}",
        server.log_text()
    );
    assert!(server.wait_for_log_count("handshake failed", 2 + 125, STEP));
    let fds = fds_settle(&server, base_fds);
    assert_eq!(fds, base_fds, "descriptors back to baseline");
    let rss = server.rss_kib().unwrap();
    assert!(
        rss < base_rss + 32 * 1024,
        "memory back near baseline: {base_rss} KiB -> {rss} KiB"
    );
    assert_serving(server.addr, &key);
}

#[test]
fn case_26_client_that_never_reads_is_disconnected_others_unaffected() {
    let key = Arc::new(TestKey::new("exh"));
    let server = ServerProcess::start(
        &key.path,
        &["--max-queued", "4", "--write-timeout", "500ms"],
    );
    let other = client(server.addr, &key, ClientConfig::default());
    let (progress_tx, progress_rx) = mpsc::channel();
    let hog = {
        let (addr, key) = (server.addr, key.clone());
        std::thread::spawn(move || {
            within(Duration::from_secs(60), async move {
                let (stream, session) = raw_session(addr, &key).await;
                let _ = sockopts(&stream, |s| s.set_recv_buffer_size(4096));
                // Keep the reading half, and never read it.
                let (_never_read, mut writer) = session.split();
                let payload = vec![0x5A; 64 * 1024];
                let mut sent = 0u64;
                for id in 0..4000u64 {
                    writer
                        .push_client(&call(id, Request::Echo(payload.clone())))
                        .unwrap();
                    if writer.flush().await.is_err() {
                        break;
                    }
                    sent += 1;
                    if sent == 1 {
                        let _ = progress_tx.send(());
                    }
                }
                sent
            })
        })
    };
    // Others are served while the hog fills its queues...
    progress_rx
        .recv_timeout(STEP)
        .expect("the hog sent 300 calls");
    let answer = async_std::task::block_on(other.call(Request::Uppercase("meanwhile".into())));
    assert_eq!(answer.unwrap(), Response::Uppercase("MEANWHILE".into()));
    // ...and the hog is dropped.
    server
        .wait_for_log_any(&["not reading", "no write progress"], STEP)
        .filter(|line| line.contains("closed"))
        .unwrap_or_else(|| panic!("hog not disconnected:\n{}", server.log_text()));
    let sent = hog.join().expect("hog thread");
    assert!(
        sent < 4000,
        "the server stopped taking the hog's calls after {sent}"
    );
    let answer = async_std::task::block_on(other.call(Request::Ping));
    assert_eq!(answer.unwrap(), Response::Pong);
    assert_serving(server.addr, &key);
}

#[test]
fn case_27_concurrent_max_size_frames_are_bounded_by_the_global_buffer_budget() {
    const MAX_FRAME: usize = 1 << 20;
    // Room for at most four frame-sized read buffers.
    const BUDGET: usize = 4 << 20;
    const FIT: usize = BUDGET / MAX_FRAME;
    const CONNECTIONS: usize = 16;
    let key = TestKey::new("exh");
    let server = ServerProcess::start(
        &key.path,
        &[
            "--max-frame",
            &MAX_FRAME.to_string(),
            "--max-buffer-memory",
            &BUDGET.to_string(),
        ],
    );
    let base = server.rss_kib().unwrap();
    // An Echo whose call frame is exactly the limit (25 bytes of envelope, a 16-byte AEAD tag).
    let payload = vec![0xC3u8; MAX_FRAME - 41];
    let answered = within(Duration::from_secs(60), async {
        // Every connection sends the first half of a max-size frame, so the server must
        // buffer the whole frame for each of them at once.
        let mut conns = Vec::new();
        for _ in 0..CONNECTIONS {
            let (stream, session) = raw_session(server.addr, &key).await;
            let (reader, mut writer) = session.split();
            writer
                .push_client(&call(1, Request::Echo(payload.clone())))
                .unwrap();
            assert_eq!(writer.pending(), 4 + MAX_FRAME, "max-size frame");
            let (_, _, frame) = writer.into_parts();
            let mut s = stream.clone();
            use futures_lite::io::AsyncWriteExt;
            s.write_all(&frame[..MAX_FRAME / 2]).await.unwrap();
            conns.push((stream, reader, frame));
        }
        // All but the few that fit are over the budget and closed; the process is not.
        assert!(
            server.wait_for_log_count("exceed the budget", CONNECTIONS - FIT, STEP),
            "{}",
            server.log_text()
        );
        let peak = server.rss_kib().unwrap();
        assert!(
            peak < base + (BUDGET as u64 / 1024) + 64 * 1024,
            "RSS {base} KiB -> {peak} KiB with a budget of {BUDGET} bytes"
        );
        // Small calls need no budget: others are served meanwhile.
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut r, mut w) = session.split();
        send(&mut w, &[call(1, Request::Ping)]).await;
        assert_eq!(reply_to(&mut r, 1).await, Ok(Response::Pong));

        // Those that fit finish their frames and get their answers.
        let mut answered = 0;
        for (stream, mut reader, frame) in conns {
            let mut s = stream.clone();
            use futures_lite::io::AsyncWriteExt;
            if s.write_all(&frame[MAX_FRAME / 2..]).await.is_err() {
                continue;
            }
            match recv(&mut reader).await {
                Ok(Some(rpckit_proto::ServerMessage::Reply { id: 1, result })) => {
                    assert_eq!(result, Ok(Response::Echo(payload.clone())));
                    answered += 1;
                }
                // Closed for the budget.
                Ok(None) | Err(_) => {}
                Ok(Some(other)) => panic!("unexpected {other:?}"),
            }
        }
        answered
    });
    assert!(
        (1..=FIT).contains(&answered),
        "{answered} max-size frames served at once with room for {FIT}"
    );
    // Every other connection was closed for the budget, and for nothing else.
    assert!(server.wait_for_log_count("exceed the budget", CONNECTIONS - answered, STEP));
    assert_eq!(
        server.log_count("exceed the budget"),
        CONNECTIONS - answered
    );
    // Their buffers went back to the budget when they closed: a max-size call fits again.
    // Those answered, and the small call's connection, were closed by this side; the server
    // gives a buffer back as soon as it has read the end of stream, before it logs the close.
    assert!(server.wait_for_log_count("closed: peer closed the connection", answered + 1, STEP));
    within(STEP, async {
        let (_s, session) = raw_session(server.addr, &key).await;
        let (mut r, mut w) = session.split();
        send(&mut w, &[call(1, Request::Echo(payload.clone()))]).await;
        assert_eq!(
            reply_to(&mut r, 1).await,
            Ok(Response::Echo(payload.clone()))
        );
    });
}
