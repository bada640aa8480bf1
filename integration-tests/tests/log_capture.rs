//! The test harness's log capture: once [`ServerProcess::stop`] returns, the log holds every
//! line the server wrote, so a check that something was *not* logged cannot pass just because
//! the reader thread had not read the line yet.

use rpckit_integration_tests::{ServerProcess, TestKey, STOP_TIMEOUT};

#[test]
fn a_stopped_servers_log_holds_its_last_line() {
    let key = TestKey::new("logcap");
    let mut server = ServerProcess::start(&key.path, &[]);
    let status = server.stop(STOP_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    // "stopped" is the last line the server writes before it exits.
    let log = server.log_text();
    assert!(
        log.lines().last().is_some_and(|l| l.contains("stopped")),
        "{log}"
    );
    // Stopping again is a no-op that returns the same status.
    assert_eq!(server.stop(STOP_TIMEOUT), status);
}

#[test]
#[should_panic(expected = "a log line contains \"stopped\"")]
fn assert_not_logged_sees_a_line_written_just_before_exit() {
    let key = TestKey::new("logcap");
    let mut server = ServerProcess::start(&key.path, &[]);
    server.assert_not_logged("stopped");
}
