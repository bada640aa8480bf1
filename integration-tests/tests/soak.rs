//! Soak: many clients calling for `SOAK_SECS` seconds (default 3 here; `make soak` runs 60 in
//! release mode) while fault injectors hit the same server with garbage, silent and
//! half-finished handshakes, tampered frames, resets mid-frame and abandoned calls.
//!
//! Every call made must end in exactly one outcome (an answer or a typed error): calls lost
//! must be 0. The server's memory at the end must not have grown without bound. The report is
//! printed (`-- --nocapture` to see it).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rpckit_client::{CallError, ClientConfig};
use rpckit_integration_tests::{client, raw_session, ServerProcess, TestKey};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::ClientMessage;

/// Small deterministic generator (xorshift64*), seeded per task.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Default)]
struct Tally {
    made: AtomicU64,
    answered: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Tally {
    fn error(&self, e: &CallError) {
        let kind = match e {
            CallError::Rpc(rpc) => format!("rpc: {rpc}"),
            CallError::Timeout(_) => "timeout".into(),
            CallError::OutcomeUnknown(_) => "outcome unknown".into(),
            CallError::Connect(_) => "connect".into(),
            CallError::Decode(_) => "decode".into(),
            CallError::Encode(_) => "encode".into(),
            _ => "other".into(),
        };
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }
    fn error_total(&self) -> u64 {
        self.errors.lock().unwrap().values().sum()
    }
}

fn soak_secs() -> f64 {
    std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

#[test]
fn soak_with_faults_loses_no_call() {
    let secs = soak_secs();
    let key = Arc::new(TestKey::new("soak"));
    let server = ServerProcess::start(
        &key.path,
        &[
            "--max-in-flight",
            "64",
            "--auth-failure-limit",
            "0",
            "--log-level",
            "warn",
        ],
    );
    let addr = server.addr;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let faults = Arc::new(AtomicU64::new(0));

    // Warm up so the baseline includes the runtime's own allocations.
    let warm = client(addr, &key, ClientConfig::default());
    for _ in 0..100 {
        async_std::task::block_on(warm.call(Request::Ping)).expect("warm-up call");
    }
    let rss_start = server.rss_kib().unwrap_or(0);

    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut workers = Vec::new();
    for n in 0..16u64 {
        let (tally, key_id, secret) = (tally.clone(), key.id.clone(), key.key.clone());
        workers.push(std::thread::spawn(move || {
            async_std::task::block_on(async move {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n + 1));
                let config = {
                    let mut client_config = ClientConfig::default();
                    client_config.call_timeout = Some(Duration::from_secs(5));
                    client_config
                };
                let client = match rpckit_client::Client::<Request, Response>::connect(
                    addr.to_string(),
                    key_id,
                    secret,
                    config,
                )
                .await
                {
                    Ok(c) => c,
                    Err(e) => panic!("worker {n} cannot connect: {e}"),
                };
                // Bounded by time and by count.
                let mut count = 0u64;
                while Instant::now() < end && count < 5_000_000 {
                    count += 1;
                    let (request, expect) = match rng.below(10) {
                        0 => (Request::Sleep { ms: rng.below(20) }, None),
                        1..=4 => {
                            let bytes: Vec<u8> =
                                (0..rng.below(2048)).map(|_| rng.next() as u8).collect();
                            (Request::Echo(bytes.clone()), Some(Response::Echo(bytes)))
                        }
                        _ => {
                            let text = format!("call {n} {count}");
                            let upper = text.to_uppercase();
                            (Request::Uppercase(text), Some(Response::Uppercase(upper)))
                        }
                    };
                    tally.made.fetch_add(1, Ordering::Relaxed);
                    if rng.below(50) == 0 {
                        // An abandoned call: the caller gives up almost at once (cancellation).
                        let outcome = client
                            .call_with_timeout(
                                Request::Sleep { ms: 1_000 },
                                Some(Duration::from_millis(1)),
                            )
                            .await;
                        match outcome {
                            Ok(_) => {
                                tally.answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => tally.error(&e),
                        }
                        continue;
                    }
                    match client.call(request).await {
                        Ok(answer) => {
                            if let Some(expected) = expect {
                                assert_eq!(
                                    answer, expected,
                                    "worker {n}: answer for another request"
                                );
                            }
                            tally.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => tally.error(&e),
                    }
                }
                client.close().await;
            })
        }));
    }

    // Fault injectors.
    let mut injectors = Vec::new();
    for n in 0..3u64 {
        let (stop, faults, key) = (stop.clone(), faults.clone(), key.clone());
        injectors.push(std::thread::spawn(move || {
            let mut rng = Rng(0xDEAD_BEEF ^ (n + 7));
            let mut count = 0;
            while !stop.load(Ordering::Relaxed) && count < 100_000 {
                count += 1;
                faults.fetch_add(1, Ordering::Relaxed);
                match rng.below(5) {
                    0 => {
                        // Random garbage, then close.
                        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                            let junk: Vec<u8> =
                                (0..rng.below(300) + 1).map(|_| rng.next() as u8).collect();
                            let _ = s.write_all(&junk);
                        }
                    }
                    1 => {
                        // Half a hello, then vanish.
                        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                            let _ = s.write_all(b"RPCK\x01\x01\x01");
                        }
                    }
                    2 => {
                        // An authenticated connection that sends a tampered frame.
                        async_std::task::block_on(async {
                            let (stream, mut session) = raw_session(addr, &key).await;
                            let _ = session.writer.push_client(&ClientMessage::Call {
                                id: 1,
                                deadline: None,
                                request: Request::Ping,
                            });
                            let _ = session.writer.flush().await;
                            // Now garbage in place of the next frame's tag.
                            let _ = futures_lite::io::AsyncWriteExt::write_all(
                                &mut &stream,
                                &[0, 0, 0, 40, 1, 2, 3],
                            )
                            .await;
                        });
                    }
                    3 => {
                        // Reset in the middle of a frame.
                        async_std::task::block_on(async {
                            let Ok(std_stream) = std::net::TcpStream::connect(addr) else {
                                return;
                            };
                            let _ = socket2::SockRef::from(&std_stream)
                                .set_linger(Some(Duration::ZERO));
                            let stream = async_std::net::TcpStream::from(std_stream);
                            let config = rpckit_proto::HandshakeConfig::default();
                            if rpckit_proto::handshake::connect(
                                stream.clone(),
                                stream.clone(),
                                &key.id,
                                &key.key,
                                &config,
                            )
                            .await
                            .is_ok()
                            {
                                let _ = futures_lite::io::AsyncWriteExt::write_all(
                                    &mut &stream,
                                    &[0, 0, 1, 0, 9, 9],
                                )
                                .await;
                            }
                            // Dropping the socket with linger 0 sends a reset.
                        });
                    }
                    _ => {
                        // A client that connects, makes one call and drops everything.
                        let c = client(addr, &key, ClientConfig::default());
                        let _ = async_std::task::block_on(c.call(Request::Ping));
                    }
                }
            }
        }));
    }

    let deadline = end + Duration::from_secs(30);
    for worker in workers {
        // Workers stop by themselves at `end`; a hung call would keep one alive past it.
        assert!(Instant::now() < deadline, "workers did not stop in time");
        worker.join().expect("worker panicked");
    }
    stop.store(true, Ordering::Relaxed);
    for injector in injectors {
        injector.join().expect("injector panicked");
    }

    // The server still serves after all of it.
    assert_eq!(
        async_std::task::block_on(warm.call(Request::Ping)).expect("server still serves"),
        Response::Pong
    );
    let rss_end = server.rss_kib().unwrap_or(0);

    let made = tally.made.load(Ordering::Relaxed);
    let answered = tally.answered.load(Ordering::Relaxed);
    let errors = tally.error_total();
    let lost = made - answered - errors;
    println!(
        "soak: {secs} s, 16 clients, {} faults injected",
        faults.load(Ordering::Relaxed)
    );
    println!("  calls made      {made}");
    println!("  calls answered  {answered}");
    println!("  typed errors    {errors}");
    for (kind, n) in tally.errors.lock().unwrap().iter() {
        println!("    {kind}: {n}");
    }
    println!("  calls lost      {lost}");
    println!("  server RSS      {rss_start} KiB at start, {rss_end} KiB at end");
    assert!(made > 0);
    assert_eq!(lost, 0, "every call must end in an answer or a typed error");
    // Memory must not grow without bound: allow the allocator's high-water mark, not a leak
    // proportional to the calls made.
    assert!(
        rss_end < rss_start * 3 + 64 * 1024,
        "server RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
