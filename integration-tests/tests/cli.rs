//! `rpc-client call` against the real `rpc-server`: what it prints and every exit code
//! (0 ok, 1 local error, 2 usage, 3 cannot connect, 4 auth failed, 5 server error, 6 timeout).

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rpckit_integration_tests::{bin, cli, DeadPort, ServerProcess, TestKey};

/// The process's exit code, with its output in the message if it has none.
fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("rpc-client killed by a signal: {out:?}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("stdout is UTF-8")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts exit code `want` and returns stdout.
#[track_caller]
fn expect_code(out: &Output, want: i32) -> String {
    assert_eq!(
        code(out),
        want,
        "exit code; stdout {:?}, stderr {:?}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

#[test]
fn call_prints_the_answer_and_exits_0() {
    let key = TestKey::new("cli-ok");
    let server = ServerProcess::start(&key.path, &[]);
    let run = |args: &[&str]| cli(server.addr, &key.path, args);

    let out = run(&["call", "uppercase", "hello"]);
    assert_eq!(expect_code(&out, 0), "HELLO\n");
    assert_eq!(stderr(&out), "");

    assert_eq!(
        expect_code(&run(&["call", "echo", "hi there"]), 0),
        "hi there\n"
    );
    // Several words are joined with one space.
    assert_eq!(
        expect_code(&run(&["call", "echo", "hi", "there"]), 0),
        "hi there\n"
    );
    assert_eq!(
        expect_code(&run(&["call", "uppercase", "straße é"]), 0),
        "STRASSE É\n"
    );
    assert_eq!(expect_code(&run(&["call", "ping"]), 0), "pong\n");
    assert_eq!(
        expect_code(&run(&["call", "sleep", "1"]), 0),
        "slept 1 ms\n"
    );
    // One connection per call, each authenticated.
    server.expect_log_count("authenticated", 6, Duration::from_secs(10));
}

#[test]
fn method_names_are_case_insensitive() {
    let key = TestKey::new("cli-case");
    let server = ServerProcess::start(&key.path, &[]);
    let run = |args: &[&str]| cli(server.addr, &key.path, args);

    assert_eq!(
        expect_code(&run(&["call", "UPPERCASE", "hello"]), 0),
        "HELLO\n"
    );
    assert_eq!(
        expect_code(&run(&["call", "UpperCase", "mixed Case"]), 0),
        "MIXED CASE\n"
    );
    assert_eq!(expect_code(&run(&["call", "Echo", "As Is"]), 0), "As Is\n");
    assert_eq!(expect_code(&run(&["call", "PiNg"]), 0), "pong\n");
    assert_eq!(
        expect_code(&run(&["call", "SLEEP", "2"]), 0),
        "slept 2 ms\n"
    );
}

#[test]
fn json_output_is_one_object_per_answer() {
    let key = TestKey::new("cli-json");
    let server = ServerProcess::start(&key.path, &[]);
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        all.push("--json");
        let out = cli(server.addr, &key.path, &all);
        let text = expect_code(&out, 0);
        assert_eq!(text.lines().count(), 1, "one line: {text:?}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
    };
    assert_eq!(
        json(&["uppercase", "hello"]),
        serde_json::json!({ "uppercase": "HELLO" })
    );
    assert_eq!(
        json(&["echo", "hi there"]),
        serde_json::json!({ "echo": "hi there" })
    );
    assert_eq!(json(&["ping"]), serde_json::json!({ "ping": "pong" }));
    assert_eq!(
        json(&["sleep", "3"]),
        serde_json::json!({ "sleep": { "slept_ms": 3 } })
    );
}

#[test]
fn local_and_usage_errors_exit_1_and_2_without_calling() {
    let key = TestKey::new("cli-local");
    let mut server = ServerProcess::start(&key.path, &[]);
    let run = |args: &[&str]| cli(server.addr, &key.path, args);

    let out = run(&["call", "frobnicate", "x"]);
    assert_eq!(expect_code(&out, 1), "");
    assert!(
        stderr(&out).contains("unknown method \"frobnicate\""),
        "{}",
        stderr(&out)
    );
    // Bad arguments of known methods are local errors too.
    assert_eq!(expect_code(&run(&["call", "sleep", "soon"]), 1), "");
    assert_eq!(expect_code(&run(&["call", "sleep"]), 1), "");
    assert_eq!(expect_code(&run(&["call", "ping", "extra"]), 1), "");
    // A keyring that does not exist.
    let missing = key.dir.path().join("no-such-keyring");
    let out = cli(server.addr, &missing, &["call", "ping"]);
    assert_eq!(expect_code(&out, 1), "");
    // A key id the keyring does not hold is found missing locally, before connecting.
    let out = run(&["--key-id", "not-in-ring", "call", "ping"]);
    assert_eq!(expect_code(&out, 1), "");
    // Usage errors (clap): no method, unknown flag, a timeout past the longest allowed.
    assert_eq!(expect_code(&run(&["call"]), 2), "");
    assert_eq!(
        expect_code(&run(&["call", "ping", "--no-such-flag"]), 2),
        ""
    );
    let out = run(&["call", "--timeout", "1000000y", "ping"]);
    assert_eq!(expect_code(&out, 2), "");
    assert!(stderr(&out).contains("longest allowed"), "{}", stderr(&out));
    // The server refuses such a setting at start, before listening. (Its first line of
    // output, or the end of it, ends the wait: a server that accepted the setting would print
    // its ready line and go on serving, and is killed.)
    let mut refused = std::process::Command::new(rpckit_integration_tests::bin("rpc-server"))
        .args([
            "--idle-timeout",
            "1000000y",
            "--listen",
            "127.0.0.1:0",
            "--keyring",
        ])
        .arg(&key.path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run rpc-server");
    let mut first_line = String::new();
    if let Some(stdout) = refused.stdout.take() {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first_line);
    }
    if !first_line.is_empty() {
        let _ = refused.kill();
    }
    let out = refused.wait_with_output().expect("rpc-server ends");
    assert!(first_line.is_empty(), "it started: {first_line}");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("longest allowed"), "{}", stderr(&out));

    // None of these reached the server. (A connection that did would be logged before the
    // call below, which is the only one.)
    assert_eq!(expect_code(&run(&["call", "ping"]), 0), "pong\n");
    server.expect_log_count("authenticated", 1, Duration::from_secs(10));
    server.assert_not_logged("handshake failed");
}

#[test]
fn dead_server_exits_3() {
    let key = TestKey::new("cli-dead");
    let dead = DeadPort::new();
    let addr = dead.addr();
    // A long connect timeout: refusal must be reported as such (3), not waited out (6).
    let out = cli(
        addr,
        &key.path,
        &["--connect-timeout", "60s", "call", "ping"],
    );
    assert_eq!(expect_code(&out, 3), "");
    assert!(
        stderr(&out).contains(&format!("cannot connect to {addr}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn wrong_key_and_unknown_key_id_exit_4() {
    let key = TestKey::new("cli-auth");
    let server = ServerProcess::start(&key.path, &[]);

    // Same key id, another secret.
    let impostor = TestKey::new("cli-auth");
    let out = cli(server.addr, &impostor.path, &["call", "ping"]);
    assert_eq!(expect_code(&out, 4), "");
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    server.expect_log("did not verify", Duration::from_secs(10));

    // A key id the server does not know.
    let stranger = TestKey::new("cli-stranger");
    let out = cli(server.addr, &stranger.path, &["call", "ping"]);
    assert_eq!(expect_code(&out, 4), "");
    assert!(
        stderr(&out).contains("authentication failed"),
        "{}",
        stderr(&out)
    );
    server.expect_log("unknown key id", Duration::from_secs(10));

    // The right key still works from the same address.
    let out = cli(server.addr, &key.path, &["call", "uppercase", "still here"]);
    assert_eq!(expect_code(&out, 0), "STILL HERE\n");
}

#[test]
fn repeated_auth_failures_with_the_limit_disabled_are_not_penalised() {
    let key = TestKey::new("cli-nolimit");
    let mut server = ServerProcess::start(&key.path, &["--auth-failure-limit", "0"]);
    let impostor = TestKey::new("cli-nolimit");
    // More than the default limit of 5: each is still an authentication failure, not a
    // rate-limit refusal.
    for _ in 0..7 {
        let out = cli(server.addr, &impostor.path, &["call", "ping"]);
        assert_eq!(expect_code(&out, 4), "");
        assert!(
            stderr(&out).contains("server refused the connection: authentication failed"),
            "{}",
            stderr(&out)
        );
    }
    let out = cli(server.addr, &key.path, &["call", "echo", "fine"]);
    assert_eq!(expect_code(&out, 0), "fine\n");
    server.expect_log("authenticated", Duration::from_secs(10));
    server.assert_not_logged("address penalised");
}

#[test]
fn server_error_exits_5() {
    let key = TestKey::new("cli-app");
    let server = ServerProcess::start(&key.path, &[]);
    let out = cli(server.addr, &key.path, &["call", "sleep", "99999999"]);
    assert_eq!(expect_code(&out, 5), "");
    assert!(
        stderr(&out).contains(
            "server error: application error: sleep of 99999999 ms is over the limit of 3600000 ms"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn timeout_exits_6() {
    let key = TestKey::new("cli-timeout");
    let server = ServerProcess::start(&key.path, &[]);
    let out = cli(
        server.addr,
        &key.path,
        &["call", "sleep", "5000", "--timeout", "200ms"],
    );
    assert_eq!(expect_code(&out, 6), "");
    // Whichever side noticed first: the server's deadline or the client's own timer.
    let err = stderr(&out);
    assert!(
        err.contains("deadline exceeded") || err.contains("no answer within"),
        "{err}"
    );
    // The server is fine afterwards.
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    assert_eq!(expect_code(&out, 0), "pong\n");
}

/// `rpc-client --addr ADDR --keyring <missing> call ...` with the key in the environment.
fn cli_env(addr: SocketAddr, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(bin("rpc-client"));
    cmd.arg("--addr")
        .arg(addr.to_string())
        // Not read when RPC_KEY is set: proves the key came from the environment.
        .arg("--keyring")
        .arg("/nonexistent/rpckit/keyring")
        .args(args)
        .env_remove("RPC_KEY")
        .env_remove("RPC_KEY_ID")
        .env_remove("RPC_KEYRING")
        .env_remove("RPC_ADDR")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rpc-client")
}

#[test]
fn rpc_key_from_the_environment() {
    let key = TestKey::new("cli-env");
    let server = ServerProcess::start(&key.path, &[]);
    let hex = key.key.to_hex();

    let out = cli_env(
        server.addr,
        &[("RPC_KEY", &hex), ("RPC_KEY_ID", "cli-env")],
        &["call", "uppercase", "from env"],
    );
    assert_eq!(expect_code(&out, 0), "FROM ENV\n");

    // The id may come from --key-id instead.
    let out = cli_env(
        server.addr,
        &[("RPC_KEY", &hex)],
        &["--key-id", "cli-env", "call", "echo", "flag id"],
    );
    assert_eq!(expect_code(&out, 0), "flag id\n");

    // Without an id the key is offered as "default", which this server does not know.
    let out = cli_env(server.addr, &[("RPC_KEY", &hex)], &["call", "ping"]);
    assert_eq!(expect_code(&out, 4), "");

    // The right id with another secret.
    let other = TestKey::new("cli-env");
    let out = cli_env(
        server.addr,
        &[("RPC_KEY", &other.key.to_hex()), ("RPC_KEY_ID", "cli-env")],
        &["call", "ping"],
    );
    assert_eq!(expect_code(&out, 4), "");

    // Not hex: a local error.
    let out = cli_env(
        server.addr,
        &[("RPC_KEY", "not hex at all"), ("RPC_KEY_ID", "cli-env")],
        &["call", "ping"],
    );
    assert_eq!(expect_code(&out, 1), "");
}
