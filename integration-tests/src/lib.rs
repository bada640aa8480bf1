//! Helpers for tests that drive the real `rpc-server` and `rpc-client` binaries: start a
//! server on port 0 and wait for its ready line, watch its log for events, send it signals,
//! run the CLI, and open raw or authenticated connections; start the raw reference server.
//!
//! [`bin`] builds the binaries from the current sources once per test process, so
//! `cargo test` alone never runs a stale `rpc-server` or `rpc-client`.

#![forbid(unsafe_code)]

pub mod haproxy;
mod http_get;
mod prometheus;
pub mod rolling;
pub mod steady_load;

pub use http_get::{http_get, HttpAnswer};
pub use prometheus::{promtool, sample};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rpckit_client::{Client, ClientConfig};
use rpckit_keyfile::write_new_key_file;
use rpckit_proto::demo::{Request, Response};
use rpckit_proto::handshake::{self, HandshakeConfig};
use rpckit_proto::keyring::{KeyId, Keyring, SecretKey};
use rpckit_proto::{HandshakeError, Session, Suite, SuitePolicy};

/// How long a server gets to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`ServerProcess::assert_not_logged`] gives the server to drain and exit after
/// SIGTERM, and its log reader to reach the end of the log.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The most log lines one wait for a log event reads before giving up, whatever its time
/// limit: a server that floods its log cannot keep a test waiting turn after turn. No test's
/// server writes near this many lines.
pub const MAX_LOG_LINES_PER_WAIT: usize = 1_000_000;

/// Path of one of the workspace's binaries (`rpc-server`, `rpc-client`, `rpc-raw-reference`),
/// built from the current sources: the first call in a test process runs
/// `cargo build --workspace --bins` with the test's profile and target directory (a no-op when
/// they are up to date), so a test never runs a stale binary. Panics if the build fails.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BUILT.get_or_init(build_binaries) {
        Ok(dir) => dir.join(name),
        Err(e) => panic!("{e}"),
    }
}

/// Builds the workspace's binaries for the profile this test was built with, into the target
/// directory it was built in, and returns `<target>/<profile>`.
fn build_binaries() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("test executable path: {e}"))?;
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("test executable does not live in target/<profile>/deps")?;
    let target_dir = profile_dir
        .parent()
        .ok_or("test executable does not live in target/<profile>/deps")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("target profile directory name is not UTF-8")?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("integration-tests lives in the workspace root")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(&cargo);
    build
        .current_dir(workspace)
        .args(["build", "--workspace", "--bins", "--quiet", "--target-dir"])
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run {cargo:?} to build the binaries: {e}"))?;
    if !status.success() {
        return Err(format!(
            "`cargo build --workspace --bins` ({profile}) failed with {status}: the tests need \
             the current rpc-server, rpc-client and rpc-raw-reference"
        ));
    }
    Ok(profile_dir.to_path_buf())
}

/// A private temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(label: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("rpckit-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A keyring file with one fresh key, in its own temp dir.
#[derive(Debug)]
pub struct TestKey {
    /// Holds the file.
    pub dir: TempDir,
    /// The keyring file.
    pub path: PathBuf,
    /// The key id.
    pub id: KeyId,
    /// The secret.
    pub key: SecretKey,
}

impl TestKey {
    /// A new random key named `id`.
    pub fn new(id: &str) -> Self {
        let dir = TempDir::new("key");
        let path = dir.path().join("keyring");
        let id = KeyId::new(id).expect("valid key id");
        let key = write_new_key_file(&path, &id).expect("write key file");
        TestKey { dir, path, id, key }
    }

    /// A keyring file holding several of these keys (for servers that accept many clients).
    pub fn combined(keys: &[&TestKey]) -> (TempDir, PathBuf) {
        let dir = TempDir::new("ring");
        let mut ring = Keyring::new();
        for k in keys {
            ring.insert(k.id.clone(), k.key.clone());
        }
        let path = dir.path().join("keyring");
        std::fs::write(&path, rpckit_keyfile::to_file_text(&ring)).expect("write keyring");
        (dir, path)
    }
}

/// Reads a child's stdout on a thread of its own and sends each line (a server prints its
/// ready line, and any address lines before it, there).
fn stdout_lines(stdout: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // Read on when nobody listens, so the child never blocks on a full pipe.
            let _ = tx.send(line);
        }
    });
    rx
}

/// Addresses a process printed on stdout up to its ready line `<ready><addr>`: the ready
/// line's address, and the address of the first line `<other><addr>` before it, if `other`
/// is given and there is one.
/// `None` if no ready line came within [`READY_TIMEOUT`] (or stdout ended first).
fn ready_addresses(
    lines: &mpsc::Receiver<String>,
    ready: &str,
    other: Option<&str>,
) -> Option<(SocketAddr, Option<SocketAddr>)> {
    let end = Instant::now() + READY_TIMEOUT;
    let mut other_addr = None;
    // Bounded: a process prints a handful of lines before its ready line.
    for _ in 0..1_000 {
        let left = end.checked_duration_since(Instant::now())?;
        let line = lines.recv_timeout(left).ok()?;
        if let Some(addr) = line.strip_prefix(ready) {
            let addr = addr
                .trim()
                .parse()
                .expect("ready line names a socket address");
            return Some((addr, other_addr));
        }
        if let Some(addr) = other.and_then(|o| line.strip_prefix(o)) {
            other_addr = other_addr.or_else(|| addr.trim().parse().ok());
        }
    }
    None
}

/// A running `rpc-raw-reference` (the raw server `make bench` measures the kit against),
/// killed on drop.
#[derive(Debug)]
pub struct RawReference {
    /// The process.
    child: Child,
    /// The address from its ready line.
    pub addr: SocketAddr,
}

impl RawReference {
    /// Starts `rpc-raw-reference --listen 127.0.0.1:0` and waits for its ready line.
    pub fn start() -> Self {
        let mut child = Command::new(bin("rpc-raw-reference"))
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rpc-raw-reference");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = stdout_lines(stdout);
        match ready_addresses(&lines, "rpc-raw-reference listening on ", None) {
            Some((addr, _)) => RawReference { child, addr },
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("rpc-raw-reference printed no ready line within {READY_TIMEOUT:?}");
            }
        }
    }
}

impl Drop for RawReference {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a server's stderr on a thread of its own: appends each line to `log` and sends it on
/// the returned line channel; once stderr ends (the process and every holder of its stderr are
/// gone) or cannot be read, sends on the second channel whether every line was read. Lines
/// that are not UTF-8 are kept, lossily converted, so no line ends the reading early.
fn log_reader(
    stderr: ChildStderr,
    log: Arc<Mutex<Vec<String>>>,
) -> (mpsc::Receiver<String>, mpsc::Receiver<std::io::Result<()>>) {
    let (line_tx, line_rx) = mpsc::channel();
    let (end_tx, end_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stderr = BufReader::new(stderr);
        let mut buf = Vec::new();
        let end = loop {
            buf.clear();
            match stderr.read_until(b'\n', &mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => {
                    let text = String::from_utf8_lossy(&buf);
                    let line = text.trim_end_matches(['\n', '\r']).to_owned();
                    log.lock().unwrap().push(line.clone());
                    let _ = line_tx.send(line);
                }
                Err(e) => break Err(e),
            }
        };
        let _ = end_tx.send(end);
    });
    (line_rx, end_rx)
}

/// A running `rpc-server` process. Killed on drop.
#[derive(Debug)]
pub struct ServerProcess {
    /// The process, until a wait takes it.
    child: Option<Child>,
    /// Its pid (for signals and /proc).
    pid: u32,
    /// Its exit status, once seen.
    exited: Option<ExitStatus>,
    /// The exit status from the thread that owns the child, while an earlier wait that timed
    /// out left it waiting.
    exit_rx: Option<mpsc::Receiver<std::io::Result<ExitStatus>>>,
    /// The address from its ready line.
    pub addr: SocketAddr,
    /// The metrics listener's address (`rpc-server metrics on ADDR`, printed before the ready
    /// line when started with `--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// Every stderr (log) line so far.
    log: Arc<Mutex<Vec<String>>>,
    /// New log lines as they come.
    log_rx: mpsc::Receiver<String>,
    /// Once the log reader has reached the end of stderr: `Ok` if it read every line.
    log_end_rx: mpsc::Receiver<std::io::Result<()>>,
    /// Whether `log` holds every line the process wrote (its reader has reached the end).
    log_complete: bool,
}

impl ServerProcess {
    /// Starts `rpc-server --listen 127.0.0.1:0 --keyring <keyring>` plus `extra` flags, and
    /// waits for the ready line.
    pub fn start(keyring: &Path, extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0", keyring, extra)
    }

    /// Like [`ServerProcess::start`] but listening on `listen` (for example the fixed
    /// `127.0.0.1:<port>` of a server that was stopped, to restart it on the same port).
    pub fn start_at(listen: &str, keyring: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(listen, keyring, extra, &[])
    }

    /// Like [`ServerProcess::start_at`], with `env` added to the server's environment (for
    /// example `RPC_KEY`, which takes precedence over `--keyring`).
    pub fn start_with_env(
        listen: &str,
        keyring: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut cmd = Command::new(bin("rpc-server"));
        cmd.arg("--listen")
            .arg(listen)
            .arg("--keyring")
            .arg(keyring)
            .args(extra)
            .env_remove("RPC_KEY")
            .env_remove("RUST_LOG")
            .env("RPC_LOG_LEVEL", "debug")
            // rpc-client and the client library offer hmac-sha256, which the server's default
            // (`encrypted`) refuses; a `--suite` in `extra` takes precedence.
            .env("RPC_SUITE", "any")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn rpc-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");

        let log = Arc::new(Mutex::new(Vec::new()));
        let (log_rx, log_end_rx) = log_reader(stderr, log.clone());
        let lines = stdout_lines(stdout);
        let ready = ready_addresses(
            &lines,
            "rpc-server listening on ",
            Some("rpc-server metrics on "),
        );
        let (addr, metrics_addr) = match ready {
            Some(addrs) => addrs,
            None => {
                let _ = child.kill();
                let log = log.lock().unwrap().join("\n");
                panic!("rpc-server printed no ready line within {READY_TIMEOUT:?}; log:\n{log}");
            }
        };
        let pid = child.id();
        ServerProcess {
            child: Some(child),
            pid,
            exited: None,
            exit_rx: None,
            addr,
            metrics_addr,
            log,
            log_rx,
            log_end_rx,
            log_complete: false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for a log line containing `needle` that arrives after the lines already seen by
    /// earlier waits. Returns the line, or `None` after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        self.wait_for_line(timeout, |line| line.contains(needle))
    }

    /// [`ServerProcess::wait_for_log`] that panics, with the log, when no such line comes
    /// within `timeout`. Returns the line.
    #[track_caller]
    pub fn expect_log(&self, needle: &str, timeout: Duration) -> String {
        self.wait_for_log(needle, timeout)
            .unwrap_or_else(|| panic!("no log line with {needle:?}; log:\n{}", self.log_text()))
    }

    /// Waits for the next log line (after those seen by earlier waits) that satisfies `wanted`.
    /// `None` after `timeout`, or after [`MAX_LOG_LINES_PER_WAIT`] lines none of which did.
    fn wait_for_line(&self, timeout: Duration, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let end = Instant::now() + timeout;
        for _ in 0..MAX_LOG_LINES_PER_WAIT {
            let left = end.checked_duration_since(Instant::now())?;
            match self.log_rx.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Some(line),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    }

    /// Waits for a log line containing any of `needles` (after the lines already seen by
    /// earlier waits). Returns the line, or `None` after `timeout`.
    pub fn wait_for_log_any(&self, needles: &[&str], timeout: Duration) -> Option<String> {
        self.wait_for_line(timeout, |line| needles.iter().any(|n| line.contains(n)))
    }

    /// Waits until at least `n` log lines so far contain `needle`; `false` after `timeout` or
    /// after [`MAX_LOG_LINES_PER_WAIT`] new lines. Woken by each new log line, not by polling.
    pub fn wait_for_log_count(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        for _ in 0..MAX_LOG_LINES_PER_WAIT {
            if self.log_count(needle) >= n {
                return true;
            }
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                break;
            };
            if self.log_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        self.log_count(needle) >= n
    }

    /// Waits (up to `timeout`) until `n` log lines contain `needle`, then asserts that exactly
    /// `n` do; panics with the log otherwise. The log is filled by another thread, so a line
    /// the server has written may not be in it yet: count only after waiting.
    pub fn expect_log_count(&self, needle: &str, n: usize, timeout: Duration) {
        assert!(
            self.wait_for_log_count(needle, n, timeout),
            "fewer than {n} log lines with {needle:?}:\n{}",
            self.log_text()
        );
        assert_eq!(
            self.log_count(needle),
            n,
            "log lines with {needle:?}:\n{}",
            self.log_text()
        );
    }

    /// Whether any log line so far contains `needle`. The log is read by another thread, so a
    /// line the server has written may not be in it yet: to check that something was *not*
    /// logged, use [`ServerProcess::assert_not_logged`], which first waits for the whole log.
    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Number of log lines so far that contain `needle` (a lower bound until
    /// [`ServerProcess::stop`] has returned: see [`ServerProcess::log_contains`]).
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// The whole log so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Stops the process with SIGSTOP and returns once every one of its threads is stopped.
    ///
    /// `kill` returns when the signal is sent, not when it has taken effect: on a busy
    /// machine a thread of the server can go on running (and answer a call) for a while
    /// after. /proc has no event to wait on, so this re-reads each thread's state a bounded
    /// number of times, 1 ms apart (at most 10 s in all), and panics if the process never
    /// stops or has died.
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
        let deadline = Instant::now() + Duration::from_secs(10);
        for _ in 0..10_000 {
            match self.thread_states() {
                Threads::Stopped => return,
                Threads::Gone => panic!(
                    "rpc-server (pid {}) is gone; log:\n{}",
                    self.pid,
                    self.log_text()
                ),
                Threads::Running => {}
            }
            if Instant::now() >= deadline {
                break;
            }
            // Not a wait for the log: that would take lines off it that a later wait expects.
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("rpc-server (pid {}) did not stop after SIGSTOP", self.pid);
    }

    /// Whether every thread of the process is stopped (`T`, or `t` under a debugger), some
    /// still run, or the process is dead (`Z`/`X`, or no /proc entry).
    fn thread_states(&self) -> Threads {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid)) else {
            return Threads::Gone;
        };
        let mut seen = 0;
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses and may hold spaces.
            match stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
            {
                Some('T' | 't') => seen += 1,
                Some('Z' | 'X') => return Threads::Gone,
                // Running, sleeping, or a thread that has just exited (no stat left).
                _ => return Threads::Running,
            }
        }
        if seen > 0 {
            Threads::Stopped
        } else {
            Threads::Gone
        }
    }

    /// Waits for the process to exit, up to `timeout` (woken by the exit itself, not by
    /// polling). A wait that timed out can be repeated.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.exited {
            return Some(status);
        }
        if self.exit_rx.is_none() {
            let mut child = self.child.take()?;
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(child.wait());
            });
            self.exit_rx = Some(rx);
        }
        match self.exit_rx.as_ref()?.recv_timeout(timeout) {
            Ok(Ok(status)) => {
                self.exited = Some(status);
                self.exit_rx = None;
                Some(status)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.exit_rx = None;
                None
            }
        }
    }

    /// Stops the server and waits until its log is complete: sends SIGTERM (unless it has
    /// exited already), waits up to `timeout` for it to drain and exit, then for the log
    /// reader to reach the end of its stderr. From then on the log holds every line the
    /// process ever wrote, so a line that is not in it was never logged. Returns the exit
    /// status; panics, with the log, if either wait times out or stderr could not be read.
    pub fn stop(&mut self, timeout: Duration) -> ExitStatus {
        if !self.has_exited() {
            self.signal(libc::SIGTERM);
        }
        self.wait_end(timeout)
    }

    /// Like [`ServerProcess::stop`] without the signal, for a server already told to stop:
    /// waits up to `timeout` for it to exit and for the end of its log.
    pub fn wait_end(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        let Some(status) = self.wait_exit(timeout) else {
            panic!(
                "rpc-server (pid {}) did not exit within {timeout:?}; log:\n{}",
                self.pid,
                self.log_text()
            );
        };
        if !self.log_complete {
            let left = end.saturating_duration_since(Instant::now());
            match self.log_end_rx.recv_timeout(left) {
                Ok(Ok(())) => self.log_complete = true,
                Ok(Err(e)) => panic!("cannot read rpc-server's log: {e}"),
                Err(_) => panic!(
                    "rpc-server's log did not end within {timeout:?}; log so far:\n{}",
                    self.log_text()
                ),
            }
        }
        status
    }

    /// Asserts that no line the server ever logged contains `needle`. A log line the reader
    /// thread has not read yet would slip past a plain [`ServerProcess::log_contains`], so this
    /// first stops the server and waits for the end of its log ([`ServerProcess::stop`], up to
    /// [`STOP_TIMEOUT`]): call it when the test is done with the server.
    pub fn assert_not_logged(&mut self, needle: &str) {
        self.stop(STOP_TIMEOUT);
        assert!(
            !self.log_contains(needle),
            "a log line contains {needle:?}:\n{}",
            self.log_text()
        );
    }

    /// Whether the process has exited (without waiting).
    pub fn has_exited(&mut self) -> bool {
        if self.exited.is_some() {
            return true;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => {
                self.exited = Some(status);
                true
            }
            Some(_) => false,
            // A waiter thread owns the child: ask it without waiting.
            None => self.wait_exit(Duration::ZERO).is_some(),
        }
    }

    /// Drains the server and returns how many calls it ran: sends SIGTERM (unless it has
    /// exited already, or `signalled`: the caller sent it), waits for it to exit 0 and for its
    /// whole log ([`ServerProcess::stop`]), and reads `calls_total` from its
    /// `drained: every connection closed` line. Panics, with the log, if it exits otherwise or
    /// has no such line.
    pub fn drain_and_count_calls(&mut self, signalled: bool, timeout: Duration) -> u64 {
        let status = if signalled {
            self.wait_end(timeout)
        } else {
            self.stop(timeout)
        };
        assert_eq!(status.code(), Some(0), "log:\n{}", self.log_text());
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|l| l.contains("drained: every connection closed"))
            .unwrap_or_else(|| panic!("no drain line in the log:\n{}", log.join("\n")));
        calls_total(line)
    }

    /// Resident memory of the process in KiB (Linux).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// Open file descriptors of the process (Linux).
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .ok()
            .map(|d| d.count())
    }
}

/// What [`ServerProcess::freeze`] sees of the process's threads.
enum Threads {
    /// Every thread is stopped.
    Stopped,
    /// At least one is not stopped yet.
    Running,
    /// The process has exited.
    Gone,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        match self.child.take() {
            Some(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            None if self.exited.is_none() => {
                // A waiter thread owns the child; kill it by pid.
                let _ = Command::new("kill")
                    .arg("-9")
                    .arg(self.pid.to_string())
                    .status();
            }
            None => {}
        }
    }
}

/// The `calls_total` field of a server's `drained: every connection closed` line: the calls
/// whose handler ran (answered or cancelled) over the process's life.
pub fn calls_total(line: &str) -> u64 {
    let digits: String = line
        .split("calls_total")
        .nth(1)
        .unwrap_or_else(|| panic!("no calls_total in {line:?}"))
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count in {line:?}"))
}

/// The servers' addresses as a client's address list, `a,b,c`.
pub fn addr_list(servers: &[ServerProcess]) -> String {
    servers
        .iter()
        .map(|s| s.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `rpc-client --addr <addr> --keyring <keyring> <args>` and returns its output; `addr`
/// is one address or an address list (`a,b,c`, see [`addr_list`]).
pub fn cli(addr: impl ToString, keyring: &Path, args: &[&str]) -> Output {
    Command::new(bin("rpc-client"))
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--keyring")
        .arg(keyring)
        .args(args)
        .env_remove("RPC_KEY")
        .env_remove("RPC_KEY_ID")
        .stdin(Stdio::null())
        .output()
        .expect("run rpc-client")
}

/// A client library connection for the demo service; `addr` is one address or an address
/// list (`a,b,c`, see [`addr_list`]).
pub fn client(
    addr: impl ToString,
    key: &TestKey,
    config: ClientConfig,
) -> Client<Request, Response> {
    async_std::task::block_on(Client::connect(
        addr.to_string(),
        key.id.clone(),
        key.key.clone(),
        config,
    ))
    .expect("client connects")
}

/// An authenticated raw session (proto's handshake over an async-std socket, offering the
/// encrypting suite this CPU runs fastest), for tests that write frames by hand.
pub async fn raw_session(
    addr: SocketAddr,
    key: &TestKey,
) -> (
    async_std::net::TcpStream,
    Session<async_std::net::TcpStream, async_std::net::TcpStream>,
) {
    raw_session_offering(addr, key, Suite::preferred())
        .await
        .expect("handshake")
}

/// Like [`raw_session`], offering `suite`; the handshake's error is the caller's to check.
pub async fn raw_session_offering(
    addr: SocketAddr,
    key: &TestKey,
    suite: Suite,
) -> Result<
    (
        async_std::net::TcpStream,
        Session<async_std::net::TcpStream, async_std::net::TcpStream>,
    ),
    HandshakeError,
> {
    let stream = async_std::net::TcpStream::connect(addr)
        .await
        .expect("connect");
    let policy = SuitePolicy {
        offer: suite,
        ..SuitePolicy::default()
    };
    let (session, ()) = handshake::connect_with_policy(
        stream.clone(),
        stream.clone(),
        &key.id,
        &key.key,
        &HandshakeConfig::default(),
        &policy,
        |_| (),
    )
    .await?;
    Ok((stream, session))
}

/// The server side of a fake server: accepts one connection on `listener` and runs the
/// handshake with a keyring holding the key `id`/`secret`, accepting every suite, for tests
/// that script what the server sends.
pub async fn accept_raw_session(
    listener: &async_std::net::TcpListener,
    id: &KeyId,
    secret: &SecretKey,
) -> Session<async_std::net::TcpStream, async_std::net::TcpStream> {
    let mut keyring = Keyring::new();
    keyring.insert(id.clone(), secret.clone());
    let (stream, _) = listener.accept().await.expect("accept");
    handshake::accept_with_policy(
        stream.clone(),
        stream,
        &keyring,
        &HandshakeConfig::default(),
        &SuitePolicy::integrity(),
        |_| {},
    )
    .await
    .expect("handshake")
}

/// Runs `fut` on async-std, failing the test if it takes longer than `limit`.
pub fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    async_std::task::block_on(async {
        futures_lite::future::or(async { Some(fut.await) }, async {
            async_io::Timer::after(limit).await;
            None
        })
        .await
    })
    .unwrap_or_else(|| panic!("test step did not finish within {limit:?}"))
}

/// A port on 127.0.0.1 where nothing listens, held for as long as this value lives: a socket
/// bound to it that never listens, so a connection to it is refused at once, and no other
/// process can take the port meanwhile (as it could a port bound and then released).
pub struct DeadPort {
    _socket: socket2::Socket,
    addr: SocketAddr,
}

impl DeadPort {
    /// Binds a fresh port on 127.0.0.1 without listening on it.
    pub fn new() -> Self {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        socket
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .expect("bind 127.0.0.1:0");
        let addr = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .expect("bound address");
        DeadPort {
            _socket: socket,
            addr,
        }
    }

    /// The address: connecting to it is refused.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Default for DeadPort {
    fn default() -> Self {
        Self::new()
    }
}

/// A TCP connection to `addr` from the source address `from` (another loopback address,
/// such as 127.0.0.2, to act as a different client host).
pub fn connect_from(
    from: std::net::IpAddr,
    addr: SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect(&addr.into())?;
    Ok(socket.into())
}

/// Sends `messages` on a raw session, then a Ping, and reads up to its Pong: once the Pong
/// is back the server has read every message before it. Returns what the server sent before
/// the Pong (answers, refusals), in order.
pub async fn send_and_sync<R, W>(
    reader: &mut rpckit_proto::SessionReader<R>,
    writer: &mut rpckit_proto::SessionWriter<W>,
    messages: &[rpckit_proto::ClientMessage<Request>],
) -> Vec<rpckit_proto::ServerMessage<Response>>
where
    R: futures_lite::io::AsyncRead + Unpin,
    W: futures_lite::io::AsyncWrite + Unpin,
{
    const SYNC: u64 = 0x5e4d;
    for message in messages {
        writer.push_client(message).expect("seal a message");
    }
    writer
        .push_client(&rpckit_proto::ClientMessage::<Request>::Ping { nonce: SYNC })
        .expect("seal the ping");
    writer.flush().await.expect("write");
    let mut before = Vec::new();
    // Bounded: a server answers each message at most once, and the Pong comes after them.
    for _ in 0..=messages.len() {
        match next_message(reader).await {
            rpckit_proto::ServerMessage::Pong { nonce: SYNC } => return before,
            other => before.push(other),
        }
    }
    panic!("no Pong after {} messages: {before:?}", messages.len());
}

/// The next message from the server on a raw session, its response body decoded; panics (the
/// test fails) on end of stream or an undecodable message.
pub async fn next_message<R: futures_lite::io::AsyncRead + Unpin>(
    reader: &mut rpckit_proto::SessionReader<R>,
) -> rpckit_proto::ServerMessage<Response> {
    let payload = reader
        .recv()
        .await
        .expect("read a frame")
        .expect("a frame, not end of stream");
    rpckit_proto::message::decode_server::<Response>(payload)
        .expect("decodable message")
        .map_response(|body| body.expect("decodable response"))
}
