//! `rpc-client health` against the real `rpc-server`: 0 for a healthy server, and `call`'s
//! exit codes otherwise (4 wrong key, 3 nothing listening, 6 a server that never answers),
//! with one short line each.

use std::net::TcpListener;
use std::process::Output;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rpckit_integration_tests::{bin, cli, DeadPort, ServerProcess, TestKey};

/// `rpc-client`'s exit codes (`cli/src/main.rs`).
const EXIT_CONNECT: i32 = 3;
const EXIT_AUTH: i32 = 4;
const EXIT_TIMEOUT: i32 = 6;

/// The exit code and the one line the probe printed (stdout on success, stderr otherwise).
fn outcome(out: &Output) -> (Option<i32>, String) {
    let printed = if out.status.success() {
        &out.stdout
    } else {
        &out.stderr
    };
    let text = String::from_utf8_lossy(printed).into_owned();
    assert_eq!(text.lines().count(), 1, "one line: {text:?}");
    (out.status.code(), text)
}

#[test]
fn a_healthy_server_exits_0_with_one_line() {
    let key = TestKey::new("health");
    let server = ServerProcess::start(&key.path, &[]);
    let (code, line) = outcome(&cli(server.addr, &key.path, &["health"]));
    assert_eq!(code, Some(0), "{line}");
    assert!(
        line.starts_with("ok: ") && line.contains("answered ping in"),
        "{line}"
    );
    // The probe is an authenticated client that says goodbye: no failed handshake.
    server.expect_log("closed: client said goodbye", Duration::from_secs(10));
    assert_eq!(
        server.log_count("handshake failed"),
        0,
        "{}",
        server.log_text()
    );
}

#[test]
fn a_wrong_key_exits_with_the_auth_code() {
    let key = TestKey::new("health");
    let other = TestKey::new("health");
    let server = ServerProcess::start(&key.path, &[]);
    let (code, line) = outcome(&cli(server.addr, &other.path, &["health"]));
    assert_eq!(code, Some(EXIT_AUTH), "{line}");
    assert!(line.contains("authentication failed"), "{line}");
}

#[test]
fn nothing_listening_exits_with_the_connect_code() {
    let key = TestKey::new("health");
    let dead = DeadPort::new();
    let (code, line) = outcome(&cli(dead.addr(), &key.path, &["health"]));
    assert_eq!(code, Some(EXIT_CONNECT), "{line}");
}

#[test]
fn a_server_that_never_answers_exits_with_the_timeout_code_in_time() {
    let key = TestKey::new("health");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    // Accepts the probe's connection and holds it open without a word.
    let (held_tx, held_rx) = mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            let _ = held_tx.send(stream);
        }
    });
    // Built before the clock starts: the first use in a test process may build the binaries.
    let _ = bin("rpc-client");
    let started = Instant::now();
    let (code, line) = outcome(&cli(addr, &key.path, &["health", "--timeout", "1s"]));
    let took = started.elapsed();
    assert_eq!(code, Some(EXIT_TIMEOUT), "{line}");
    assert!(line.contains("timed out"), "{line}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert!(
        held_rx.recv_timeout(Duration::from_secs(10)).is_ok(),
        "the probe connected"
    );
}
