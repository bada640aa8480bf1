//! Case 45: keys rotated while the real `rpc-server` runs. SIGHUP reloads the keyring file:
//! a key added is accepted at once, a key removed is refused to new connections while a
//! connection already authenticated with it keeps running (the documented choice), and a
//! file that does not parse is refused with the old keys still in force. SIGHUP never starts
//! the drain. With the key from RPC_KEY there is nothing to reload.

use std::path::Path;
use std::time::Duration;

use rpckit_client::ClientConfig;
use rpckit_integration_tests::{cli, client, ServerProcess, TempDir, TestKey, STOP_TIMEOUT};
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::Keyring;

/// `rpc-client`'s exit code for a failed authentication (`cli/src/main.rs`).
const EXIT_AUTH: i32 = 4;
/// How long the server gets to log a reload.
const STEP: Duration = Duration::from_secs(20);

/// Replaces the keyring file at `path` with `text` the way an operator's tooling should:
/// written beside it, then renamed over it, so the server never reads half a file.
fn replace_file(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write the new keyring");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename the new keyring into place");
}

/// The keyring file text holding `keys`.
fn ring_text(keys: &[&TestKey]) -> String {
    let mut ring = Keyring::new();
    for k in keys {
        ring.insert(k.id.clone(), k.key.clone());
    }
    rpckit_keyfile::to_file_text(&ring)
}

/// `rpc-client call ping` with `key`'s keyring: its exit code.
fn ping_with(server: &ServerProcess, key: &TestKey) -> Option<i32> {
    let out = cli(server.addr, &key.path, &["call", "ping"]);
    out.status.code()
}

/// Sends SIGHUP and waits for the reload's outcome line.
fn hangup(server: &ServerProcess, outcome: &str) {
    server.signal(libc::SIGHUP);
    assert!(
        server.wait_for_log(outcome, STEP).is_some(),
        "no {outcome:?} after SIGHUP:\n{}",
        server.log_text()
    );
}

#[test]
fn case_45_sighup_adds_and_removes_keys_and_a_broken_file_keeps_the_old_ones() {
    let old = TestKey::new("old");
    let new = TestKey::new("new");
    let dir = TempDir::new("rotate");
    let path = dir.path().join("keyring");
    replace_file(&path, &ring_text(&[&old]));
    let mut server = ServerProcess::start(&path, &[]);

    // A connection authenticated with the old key, kept through every reload.
    let held = client(server.addr, &old, ClientConfig::default());
    let ping = || async_std::task::block_on(held.call(Request::Ping));
    assert!(matches!(ping(), Ok(Response::Pong)));
    assert_eq!(ping_with(&server, &new), Some(EXIT_AUTH), "not known yet");

    // 1. Add the new key: accepted at once, the old one still too.
    replace_file(&path, &ring_text(&[&old, &new]));
    hangup(&server, "keyring reloaded");
    assert_eq!(ping_with(&server, &new), Some(0), "{}", server.log_text());
    assert_eq!(ping_with(&server, &old), Some(0));

    // 2. Remove the old key: new connections with it are refused; the one already
    // authenticated with it keeps running.
    replace_file(&path, &ring_text(&[&new]));
    hangup(&server, "keyring reloaded");
    assert_eq!(ping_with(&server, &old), Some(EXIT_AUTH));
    assert_eq!(ping_with(&server, &new), Some(0));
    assert!(matches!(ping(), Ok(Response::Pong)), "existing connection");

    // 3. A file that does not parse: refused, the keys in force stay.
    replace_file(&path, "new not-hex-at-all\n");
    hangup(&server, "keyring reload failed");
    assert_eq!(ping_with(&server, &new), Some(0));
    assert_eq!(ping_with(&server, &old), Some(EXIT_AUTH));
    assert!(matches!(ping(), Ok(Response::Pong)), "existing connection");

    // SIGHUP never started the drain: the server stops on SIGTERM, exit 0, as usual.
    assert!(!server.log_contains("draining"), "{}", server.log_text());
    drop(held);
    assert_eq!(server.stop(STOP_TIMEOUT).code(), Some(0));
    let log = server.log_text();
    assert_eq!(server.log_count("signal received: draining"), 1, "{log}");
    assert!(
        log.contains(r#"keys=["new"]"#),
        "reload names the key ids: {log}"
    );
    assert!(!log.contains(&new.key.to_hex()), "no secret in the log");
}

#[test]
fn sighup_with_the_key_from_rpc_key_has_nothing_to_reload() {
    let key = TestKey::new("env");
    let hex = key.key.to_hex();
    let mut server = ServerProcess::start_with_env(
        "127.0.0.1:0",
        // RPC_KEY takes precedence: the file is never read.
        &key.dir.path().join("no-such-keyring"),
        &[],
        &[("RPC_KEY", &hex), ("RPC_KEY_ID", "env")],
    );
    hangup(&server, "nothing to reload");
    assert_eq!(ping_with(&server, &key), Some(0));
    assert_eq!(server.stop(STOP_TIMEOUT).code(), Some(0));
}
