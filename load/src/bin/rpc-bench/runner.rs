//! One side of a comparison (a server and the load client that drives it) and the runs made
//! against it: a load run (report, wall time, server and client CPU) or an idle run (server
//! memory per held connection). Every run is bounded; every command goes to `commands.txt`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::procs::{self, describe, pinned, run_client, Server};
use crate::workload::Workload;

/// Where the runs write and how long they last.
#[derive(Debug)]
pub struct Bench {
    /// `target/bench`: reports and tables.
    pub out: PathBuf,
    /// Scratch directory (keyring, logs), removed on drop.
    pub work: PathBuf,
    /// The keyring every kit server and client uses.
    pub keyring: PathBuf,
    /// Measured seconds per run.
    pub secs: f64,
    /// Warmup seconds per run.
    pub warmup: f64,
    /// CPU the load clients are pinned to.
    pub client_cpu: usize,
    /// `commands.txt`.
    commands: std::fs::File,
}

impl Bench {
    /// Creates the output and scratch directories and a throwaway keyring.
    pub fn new(out: PathBuf, secs: f64, warmup: f64, client_cpu: usize) -> Result<Self, String> {
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        for entry in std::fs::read_dir(&out)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".json") || name == "latest.md" {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let work = std::env::temp_dir().join(format!("rpckit-bench.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
        let keyring = work.join("keyring");
        let id = rpckit_proto::KeyId::new("bench").map_err(|e| e.to_string())?;
        rpckit_keyfile::write_new_key_file(&keyring, &id).map_err(|e| e.to_string())?;
        let commands =
            std::fs::File::create(out.join("commands.txt")).map_err(|e| e.to_string())?;
        Ok(Bench {
            out,
            work,
            keyring,
            secs,
            warmup,
            client_cpu,
            commands,
        })
    }

    /// Appends `cmd` to `commands.txt`, the scratch directory shown as `$TMP`.
    pub fn record(&mut self, cmd: &Command) {
        let line = describe(cmd).replace(&self.work.display().to_string(), "$TMP");
        let _ = writeln!(self.commands, "{line}");
    }

    /// Writes `value` to `<out>/<name>.json`.
    pub fn save(&self, name: &str, value: &Value) -> Result<(), String> {
        let path = self.out.join(format!("{name}.json"));
        let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Longest a load run may take before it is killed.
    fn limit(&self) -> Duration {
        Duration::from_secs_f64(self.secs + self.warmup + 60.0)
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// A server and the client binary that loads it.
#[derive(Debug)]
pub struct Side {
    /// `kit`, `ref`, `old` or `new`.
    pub label: &'static str,
    /// The server.
    pub server: Server,
    /// The `rpc-client` binary.
    pub client: PathBuf,
    /// Whether the server is the raw reference (`bench --raw`).
    pub raw: bool,
}

impl Side {
    /// Starts `rpc-server` from `bin_dir` pinned to `cpu`, with the limits the bench needs.
    pub fn kit(
        label: &'static str,
        bin_dir: &Path,
        cpu: usize,
        bench: &mut Bench,
    ) -> Result<Self, String> {
        Side::kit_with(label, bin_dir, cpu, bench, &[])
    }

    /// As [`Side::kit`], with `extra` arguments for `rpc-server`.
    pub fn kit_with(
        label: &'static str,
        bin_dir: &Path,
        cpu: usize,
        bench: &mut Bench,
        extra: &[&str],
    ) -> Result<Self, String> {
        let binary = bin_dir.join("rpc-server");
        let mut args: Vec<String> = [
            "--listen",
            "127.0.0.1:0",
            "--keyring",
            &bench.keyring.display().to_string(),
            "--log-level",
            "warn",
            "--max-connections",
            "20000",
            "--max-unauthenticated",
            "1000",
            "--max-in-flight",
            "1024",
        ]
        .map(String::from)
        .to_vec();
        // Every connection of a run comes from 127.0.0.1 at once; an old build has no
        // per-source cap.
        if has_flag(&binary, PER_SOURCE_FLAG) {
            args.extend([PER_SOURCE_FLAG.to_owned(), "1000".to_owned()]);
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let mut cmd = pinned(cpu, &binary, &args);
        // Every suite: an old build's rpc-client offers hmac-sha256, which today's default
        // refuses (a server that does not know RPC_SUITE ignores it); today's rpc-client
        // offers its default encrypting suite unless told otherwise.
        cmd.env("RPC_SUITE", "any");
        bench.record(&cmd);
        let log = bench.work.join(format!("{label}-server.err"));
        let server = Server::start(
            &format!("{label}-server"),
            cmd,
            "rpc-server listening on ",
            log,
        )?;
        Ok(Side {
            label,
            server,
            client: bin_dir.join("rpc-client"),
            raw: false,
        })
    }

    /// Starts `rpc-raw-reference` from `bin_dir` pinned to `cpu`.
    pub fn reference(bin_dir: &Path, cpu: usize, bench: &mut Bench) -> Result<Self, String> {
        let args = ["--listen", "127.0.0.1:0"].map(String::from).to_vec();
        let cmd = pinned(cpu, &bin_dir.join("rpc-raw-reference"), &args);
        bench.record(&cmd);
        let log = bench.work.join("ref-server.err");
        let server = Server::start("ref-server", cmd, "rpc-raw-reference listening on ", log)?;
        Ok(Side {
            label: "ref",
            server,
            client: bin_dir.join("rpc-client"),
            raw: true,
        })
    }

    /// `rpc-client --keyring K --addr A bench [--raw] ARGS... --json`, pinned.
    fn bench_command(&self, bench: &Bench, args: &[String]) -> Command {
        let mut full: Vec<String> = vec![
            "--keyring".into(),
            bench.keyring.display().to_string(),
            "--addr".into(),
            self.server.addr.clone(),
            "bench".into(),
        ];
        if self.raw {
            full.push("--raw".into());
        }
        full.extend(args.iter().cloned());
        full.push("--json".into());
        pinned(bench.client_cpu, &self.client, &full)
    }

    /// One load run of `w` (plus `extra` arguments), saved as `<name>.json` and
    /// `<name>-cpu.json`; returns the report and the CPU record.
    pub fn load(
        &mut self,
        bench: &mut Bench,
        w: &Workload,
        extra: &[&str],
        name: &str,
    ) -> Result<(Value, Value), String> {
        self.server.check_alive()?;
        let mut args = vec![
            "--duration".to_owned(),
            bench.secs.to_string(),
            "--warmup".to_owned(),
            bench.warmup.to_string(),
        ];
        args.extend(w.args.iter().chain(extra).map(|a| a.to_string()));
        let cmd = self.bench_command(bench, &args);
        bench.record(&cmd);
        eprintln!("bench: {name}");
        let server_before = procs::cpu_secs(self.server.pid())?;
        let run = run_client(
            cmd,
            bench.limit(),
            &bench.work.join(format!("{name}.err")),
            |_| Ok(()),
        );
        let run = run.map_err(|e| {
            let alive = self.server.check_alive().err().unwrap_or_default();
            format!("{name}: {e}{alive}")
        })?;
        let server_cpu = procs::cpu_secs(self.server.pid())? - server_before;
        let report: Value = serde_json::from_str(&run.lines.join("\n"))
            .map_err(|e| format!("{name}: report is not JSON: {e}"))?;
        let cpu = json!({
            "wall_secs": run.wall_secs,
            "server_cpu_secs": server_cpu,
            "client_cpu_secs": run.cpu_secs,
        });
        bench.save(name, &report)?;
        bench.save(&format!("{name}-cpu"), &cpu)?;
        Ok((report, cpu))
    }

    /// W6: holds `conns` idle connections; the server's VmRSS before and while they are held,
    /// saved as `<name>.json` (the client's report) and `<name>-rss.json`. Returns KiB per
    /// held connection.
    pub fn idle(
        &mut self,
        bench: &mut Bench,
        conns: u64,
        name: &str,
    ) -> Result<(f64, Value), String> {
        self.server.check_alive()?;
        let args = [
            "--idle",
            "--conns",
            &conns.to_string(),
            "--duration",
            &bench.secs.to_string(),
        ]
        .map(String::from);
        let cmd = self.bench_command(bench, &args);
        bench.record(&cmd);
        eprintln!("bench: {name} ({conns} idle connections)");
        let pid = self.server.pid();
        let before = procs::rss_kib(pid)?;
        let mut held_kib = 0;
        let mut holding = String::new();
        let limit = Duration::from_secs_f64(bench.secs + 300.0);
        let run = run_client(
            cmd,
            limit,
            &bench.work.join(format!("{name}.err")),
            |line| {
                if !line.starts_with("holding ") {
                    return Err(format!(
                        "no 'holding N idle connections' line (got {line:?})"
                    ));
                }
                holding = line.to_owned();
                held_kib = procs::rss_kib(pid)?;
                Ok(())
            },
        )
        .map_err(|e| format!("{name}: {e}"))?;
        let report: Value = serde_json::from_str(&run.lines[1..].join("\n"))
            .map_err(|e| format!("{name}: report is not JSON: {e}"))?;
        let held = report["connections_held"].as_u64().unwrap_or(0);
        let rss =
            json!({ "rss_before_kib": before, "rss_held_kib": held_kib, "holding_line": holding });
        bench.save(name, &report)?;
        bench.save(&format!("{name}-rss"), &rss)?;
        let per_conn = if held > 0 {
            (held_kib as f64 - before as f64) / held as f64
        } else {
            f64::NAN
        };
        Ok((per_conn, json!({ "report": report, "rss": rss })))
    }
}

/// This machine's SHA-256 speed on `cpu`, MB/s (`rpc-client bench --sha256`).
pub fn sha256_mb_per_sec(bench: &mut Bench, client: &Path, cpu: usize) -> Result<f64, String> {
    let cmd = pinned(
        cpu,
        client,
        &["bench", "--sha256", "--json"].map(String::from),
    );
    bench.record(&cmd);
    eprintln!("bench: sha256");
    let run = run_client(
        cmd,
        Duration::from_secs(60),
        &bench.work.join("sha256.err"),
        |_| Ok(()),
    )?;
    let value: Value = serde_json::from_str(&run.lines.join("\n")).map_err(|e| e.to_string())?;
    bench.save("sha256", &value)?;
    Ok(value["sha256_bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6)
}

/// The order in which `sides` sides run in `round` (from 1): the one going first rotates, so
/// with two sides they alternate.
pub fn round_order(sides: usize, round: usize) -> impl Iterator<Item = usize> {
    (0..sides).map(move |i| (i + round.saturating_sub(1)) % sides)
}

/// `rpc-server`'s cap on connections in the handshake from one address.
const PER_SOURCE_FLAG: &str = "--max-unauthenticated-per-source";

/// Whether `binary --help` lists `flag`.
fn has_flag(binary: &Path, flag: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
}
