//! `rpc-server` raises its soft limit on open files to the hard limit at start, and says so
//! (issue 20: the soft limit is often 1,024 while `--max-connections` defaults to 10,000).

use std::time::Duration;

use rlimit::Resource;
use rpckit_integration_tests::{ServerProcess, TestKey};

/// The soft and hard "Max open files" of process `pid`, from /proc.
fn open_files_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    let soft = fields.next().expect("soft").to_owned();
    let hard = fields.next().expect("hard").to_owned();
    (soft, hard)
}

#[test]
fn the_server_raises_its_open_file_limit_to_the_hard_limit() {
    // This test binary is a process of its own: lower its soft limit below the hard one, so
    // that the server it starts inherits a limit it has to raise.
    let (_, hard) = Resource::NOFILE.get().expect("read the limit");
    let soft = 256.min(hard);
    Resource::NOFILE
        .set(soft, hard)
        .expect("lower the soft limit");
    let key = TestKey::new("fdlimit");
    let server = ServerProcess::start(&key.path, &[]);
    let (server_soft, server_hard) = open_files_limits(server.pid());
    assert_eq!(
        server_soft, server_hard,
        "soft limit raised to the hard one"
    );
    if soft < hard {
        server.expect_log("raised the open-file limit", Duration::from_secs(10));
    }
}
