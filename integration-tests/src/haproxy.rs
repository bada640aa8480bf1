//! A real `haproxy` (Debian's package) in front of test servers, run from the documented
//! configuration `docs/haproxy.cfg` with its addresses replaced by the test's: the frontend
//! takes a listening socket the test made on 127.0.0.1:0 (`bind fd@N`, so no port is guessed
//! and none can collide), each `server` line points at a test server and its metrics port.
//! Runs in the foreground (`-db`); killed on drop.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::TempDir;

/// The documented configuration.
pub fn documented_config() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/haproxy.cfg");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `haproxy` binary: on the PATH, else Debian's `/usr/sbin/haproxy`.
pub fn binary() -> PathBuf {
    let on_path = Command::new("haproxy")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        "haproxy".into()
    } else {
        "/usr/sbin/haproxy".into()
    }
}

/// `config` (the documented one) with the frontend bound to file descriptor `fd` and the
/// `server` lines pointing at `backends` (each an rpc address and its metrics port), in order.
/// Panics if the documented lines it replaces are not there, so that the documentation and
/// the test cannot drift apart.
pub fn render(config: &str, fd: i32, backends: &[(SocketAddr, u16)]) -> String {
    let mut out = replace_once(config, "bind :7878", &format!("bind fd@{fd}"));
    for (i, (addr, metrics_port)) in backends.iter().enumerate() {
        let n = i + 1;
        let documented = format!("server rpc{n} 10.0.0.1{n}:7878 check port 9100");
        let tested = format!("server rpc{n} {addr} check port {metrics_port}");
        out = replace_once(&out, &documented, &tested);
    }
    out
}

/// `text` with its one occurrence of `from` replaced by `to`.
fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "docs/haproxy.cfg should hold {from:?} once"
    );
    text.replacen(from, to, 1)
}

/// A running `haproxy`, killed on drop.
#[derive(Debug)]
pub struct HaProxy {
    /// The process.
    child: Child,
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Every line it printed (logs and alerts).
    log: Arc<Mutex<Vec<String>>>,
    /// New lines as they come.
    lines: mpsc::Receiver<String>,
    /// Holds the configuration file.
    _dir: TempDir,
}

impl HaProxy {
    /// Starts haproxy with the documented configuration in front of `backends` (rpc address,
    /// metrics port), on a listening socket on 127.0.0.1 that it inherits.
    pub fn start(backends: &[(SocketAddr, u16)]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the frontend");
        let addr = listener.local_addr().expect("frontend address");
        let socket = socket2::Socket::from(listener);
        // Inherited by haproxy; the test's own copy is closed once it has started.
        socket.set_cloexec(false).expect("clear close-on-exec");
        let dir = TempDir::new("haproxy");
        let path = dir.path().join("haproxy.cfg");
        let config = render(&documented_config(), socket.as_raw_fd(), backends);
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let mut child = Command::new(binary())
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run haproxy (Debian package `haproxy`)");
        drop(socket);
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        read_lines(stdout, log.clone(), tx.clone());
        read_lines(stderr, log.clone(), tx);
        HaProxy {
            child,
            addr,
            log,
            lines,
            _dir: dir,
        }
    }

    /// Waits for a line containing `needle` after those seen by earlier waits; panics with
    /// the log after `timeout`, or if haproxy has exited.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let end = Instant::now() + timeout;
        // Bounded: each turn takes one line, and the time limit ends the wait.
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => {
                    let exited = self.child.try_wait().ok().flatten();
                    panic!(
                        "haproxy: no line with {needle:?} within {timeout:?} (exited: \
                         {exited:?}); its output:\n{}",
                        self.log_text()
                    );
                }
            }
        }
    }

    /// Everything it printed so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `from` line by line on a thread of its own into `log` and `tx`.
fn read_lines(
    from: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    tx: mpsc::Sender<String>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines().map_while(Result::ok) {
            log.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
}
