//! The processes a benchmark starts: servers pinned with `taskset` (ready line awaited, killed
//! on drop) and load-client runs bounded by a time limit, with the CPU time each used.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server gets to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables removed from every process started (they would change what runs).
const CLEARED_ENV: [&str; 5] = [
    "RUST_LOG",
    "RPC_KEY",
    "RPC_KEY_ID",
    "RPC_ADDR",
    "RPC_LOG_LEVEL",
];

/// `taskset -c CPU PROGRAM ARGS...` with a cleaned environment.
pub fn pinned(cpu: usize, program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program).args(args);
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

/// The command line of `cmd`, for `commands.txt`.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running server, killed on drop.
#[derive(Debug)]
pub struct Server {
    /// Name for messages (`kit-server`, `old-server`, ...).
    pub name: String,
    /// The process.
    child: Child,
    /// The address from its ready line.
    pub addr: String,
    /// Its stderr, for the message if it dies.
    log: PathBuf,
}

impl Server {
    /// Starts `cmd`, stderr to `log`, and waits for a stdout line starting with `prefix`.
    pub fn start(
        name: &str,
        mut cmd: Command,
        prefix: &'static str,
        log: PathBuf,
    ) -> Result<Self, String> {
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout pipe")?;
        let (tx, rx) = mpsc::channel();
        // Keeps reading after the ready line, so the server never writes into a closed pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix(prefix) {
                    let _ = tx.send(addr.trim().to_owned());
                }
            }
        });
        let mut server = Server {
            name: name.to_owned(),
            child,
            addr: String::new(),
            log,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => {
                server.addr = addr;
                Ok(server)
            }
            Err(_) => Err(format!(
                "{name} printed no ready line within {READY_TIMEOUT:?}\n{}",
                server.log_tail()
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the server has exited.
    pub fn check_alive(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} is gone: {status}\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The last lines of its stderr.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a bounded client run produced.
#[derive(Debug)]
pub struct ClientRun {
    /// Its stdout lines.
    pub lines: Vec<String>,
    /// Wall time of the run, seconds.
    pub wall_secs: f64,
    /// CPU time (user + system) the client used, seconds.
    pub cpu_secs: f64,
}

/// Runs `cmd` to completion within `limit` (killed past it). `on_first_line` is called with
/// the first stdout line as soon as it arrives (idle runs read the server's memory then).
pub fn run_client(
    mut cmd: Command,
    limit: Duration,
    stderr_log: &Path,
    on_first_line: impl FnOnce(&str) -> Result<(), String>,
) -> Result<ClientRun, String> {
    let err =
        std::fs::File::create(stderr_log).map_err(|e| format!("{}: {e}", stderr_log.display()))?;
    let cpu_before = children_cpu_secs()?;
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", describe(&cmd)))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = start + limit;
    let mut lines = Vec::new();
    let mut first = Some(on_first_line);
    let outcome = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(f) = first.take() {
                    if let Err(e) = f(&line) {
                        break Err(e);
                    }
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                break Err(format!("still running after {limit:?}, killed"))
            }
        }
    };
    if outcome.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    let wall_secs = start.elapsed().as_secs_f64();
    let cpu_secs = children_cpu_secs()? - cpu_before;
    let stderr = || {
        let mut text = String::new();
        let _ = std::fs::File::open(stderr_log).and_then(|mut f| f.read_to_string(&mut text));
        text
    };
    outcome.map_err(|e| format!("{}: {e}\n{}", describe(&cmd), stderr()))?;
    if !status.success() {
        return Err(format!("{} failed: {status}\n{}", describe(&cmd), stderr()));
    }
    Ok(ClientRun {
        lines,
        wall_secs,
        cpu_secs,
    })
}

/// Clock ticks per second of the times in /proc (`getconf CLK_TCK`; 100 on Linux).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(pid: &str) -> Result<Vec<u64>, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    let rest = text
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or(format!("{path}: no command name"))?;
    // Field 3 (the state) is a letter: keep it as 0 so that indexes stay the man page's - 3.
    Ok(rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect())
}

/// User + system CPU time of process `pid` so far (all threads), seconds.
pub fn cpu_secs(pid: u32) -> Result<f64, String> {
    let f = stat_fields(&pid.to_string())?;
    // utime and stime are fields 14 and 15.
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / clock_ticks()),
        _ => Err(format!("/proc/{pid}/stat: too few fields")),
    }
}

/// User + system CPU time of this process's waited-for children so far, seconds
/// (cutime + cstime, fields 16 and 17 of /proc/self/stat).
fn children_cpu_secs() -> Result<f64, String> {
    let f = stat_fields("self")?;
    match (f.get(13), f.get(14)) {
        (Some(u), Some(s)) => Ok((u + s) as f64 / clock_ticks()),
        _ => Err("/proc/self/stat: too few fields".into()),
    }
}

/// VmRSS of process `pid`, KiB.
pub fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or(format!("{path}: no VmRSS"))
}

/// Raises this process's open-file limit (inherited by everything it starts) to `want`, or to
/// the hard limit if that is lower and cannot be raised, with `prlimit`; returns the limit now.
pub fn raise_fd_limit(want: u64) -> Result<u64, String> {
    let current = || -> Result<(u64, u64), String> {
        let text = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .ok_or("no open-file limit")?;
        let nums: Vec<u64> = line
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match nums[..] {
            [soft, hard, ..] => Ok((soft, hard)),
            _ => Ok((u64::MAX, u64::MAX)), // "unlimited"
        }
    };
    let (soft, hard) = current()?;
    if soft >= want {
        return Ok(soft);
    }
    let pid = std::process::id().to_string();
    let set = |soft: u64, hard: u64| {
        Command::new("prlimit")
            .args(["--pid", &pid, &format!("--nofile={soft}:{hard}")])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !set(want, want.max(hard)) {
        set(hard.min(want), hard);
    }
    Ok(current()?.0)
}
