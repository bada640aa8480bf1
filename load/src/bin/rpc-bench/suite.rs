//! The kit against the raw reference (`make bench`), and what every mode shares (setup, the
//! rounds, publishing the tables). All: W6 first on fresh servers, then paired rounds.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::procs;
use crate::results::{cpu_table, main_table, missed, Results, Row, Target};
use crate::runner::{round_order, sha256_mb_per_sec, Bench, Side};
use crate::stats::fmt;
use crate::workload::{parse_list, selected_loads, LOAD, W7_CONNS};
use crate::Opts;

/// Workload target of the kit against the reference: kit ÷ ref must reach this.
fn target(n: u8) -> Option<f64> {
    match n {
        1 => Some(0.92),
        2 => Some(0.80),
        3 => Some(0.90),
        4 => Some(0.80),
        5 => Some(0.90),
        _ => None,
    }
}

/// A `≥ factor×` target.
pub fn at_least(factor: f64, of: &str) -> Target {
    Some((format!("≥ {factor}× {of}"), Box::new(move |r| r >= factor)))
}

/// The directory of the binaries under test: `--bin-dir`, else this binary's.
pub fn bin_dir(opts: &Opts) -> Result<PathBuf, String> {
    match &opts.bin_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(std::env::current_exe()
            .map_err(|e| e.to_string())?
            .parent()
            .ok_or("binary has no directory")?
            .to_path_buf()),
    }
}

/// What every mode sets up: checks, output directory (`sub` of it, if given), fd limit, the
/// selected workloads.
pub fn prepare(
    opts: &Opts,
    sub: Option<&str>,
    default_rounds: usize,
    default_workloads: &str,
) -> Result<(Bench, usize, Vec<u8>), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let exe_dir = exe.parent().ok_or("binary has no directory")?.to_path_buf();
    let mut out = opts
        .out
        .clone()
        .unwrap_or_else(|| exe_dir.parent().unwrap_or(&exe_dir).join("bench"));
    if let Some(sub) = sub {
        out.push(sub);
    }
    let rounds = opts.rounds.unwrap_or(default_rounds);
    if rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if !(opts.secs > 0.0 && opts.secs <= 3600.0 && (0.0..=3600.0).contains(&opts.warmup)) {
        return Err("--secs must be in (0, 3600] and --warmup in [0, 3600]".into());
    }
    let workloads = parse_list(opts.workloads.as_deref().unwrap_or(default_workloads))?;
    if std::process::Command::new("taskset")
        .arg("-V")
        .output()
        .is_err()
    {
        return Err("taskset (util-linux) is needed to pin processes to CPUs".into());
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err("needs at least 2 CPUs (servers on one, clients on another)".into());
    }
    let need = opts.idle_conns.max(W7_CONNS) + 1024;
    let have = procs::raise_fd_limit(65536)?;
    if have < need {
        return Err(format!(
            "open-file limit is {have}, too low for {need} (run as root, or lower --idle-conns)"
        ));
    }
    let bench = Bench::new(out, opts.secs, opts.warmup, opts.client_cpu)?;
    Ok((bench, rounds, workloads))
}

/// Runs W6 on every side, then `rounds` rounds of the selected load workloads, each workload
/// on every side back to back (the side going first rotating, see [`round_order`]); `extra`
/// gives a side's extra arguments for a workload, one list per run (a second list makes a
/// second row, `w<n>d`). Returns the results and, if W6 ran, each side's KiB per connection.
pub fn run_rounds(
    bench: &mut Bench,
    sides: &mut [Side],
    rounds: usize,
    selected: &[u8],
    idle_conns: u64,
    extra: impl Fn(&Side, u8) -> Vec<Vec<&'static str>>,
) -> Result<(Results, Option<Vec<f64>>), String> {
    let mut results = Results::default();
    let w6 = if selected.contains(&6) {
        let mut kib = Vec::new();
        for side in sides.iter_mut() {
            let name = format!("w6-{}", side.label);
            kib.push(side.idle(bench, idle_conns, &name)?.0);
        }
        Some(kib)
    } else {
        None
    };
    for round in 1..=rounds {
        eprintln!("bench: round {round} of {rounds}");
        for w in LOAD.iter().filter(|w| selected.contains(&w.n)) {
            for i in round_order(sides.len(), round) {
                let side = &mut sides[i];
                for (i, args) in extra(side, w.n).iter().enumerate() {
                    // The first variant is the workload itself; more are extra rows (W5d).
                    let tag = if i == 0 {
                        format!("w{}", w.n)
                    } else {
                        format!("w{}d", w.n)
                    };
                    let name = format!("{tag}-{}", side.label);
                    let run = side.load(bench, w, args, &format!("{name}-r{round}"))?;
                    results.push(&name, run);
                }
            }
        }
    }
    Ok((results, w6))
}

/// Prints the tables and writes `latest.md` and `summary.json`.
pub fn publish(
    bench: &Bench,
    title: &str,
    header: &[String],
    tables: &[Vec<String>],
    notes: &[String],
    summary: Value,
) -> Result<(), String> {
    let mut md = vec![format!("# {title}"), String::new()];
    md.extend(header.iter().map(|h| format!("- {h}")));
    println!();
    for h in header {
        println!("{h}");
    }
    for t in tables {
        println!();
        md.push(String::new());
        for line in t {
            println!("{line}");
            md.push(line.clone());
        }
    }
    println!();
    md.push(String::new());
    for n in notes {
        println!("{n}");
        md.push(format!("{n}\n"));
    }
    println!(
        "\nresults: {}/latest.md, {}/*.json",
        bench.out.display(),
        bench.out.display()
    );
    let commands = std::fs::read_to_string(bench.out.join("commands.txt")).unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    md.push("Commands run (`$TMP` is a temporary directory; load runs once per round):".into());
    md.extend(["".into(), "```".into()]);
    md.extend(
        commands
            .lines()
            .filter(|c| seen.insert(c.to_string()))
            .map(String::from),
    );
    md.extend(["```".into(), String::new()]);
    std::fs::write(bench.out.join("latest.md"), md.join("\n")).map_err(|e| e.to_string())?;
    bench.save("summary", &summary)
}

/// The knobs of a run as `rpc-bench` arguments, every one explicit, so that a header's
/// command line reproduces the run (`selected`: the workloads, if the mode takes any).
pub fn knobs(opts: &Opts, rounds: usize, selected: Option<&[u8]>) -> String {
    let mut out = format!(
        "--rounds {rounds} --secs {} --warmup {}",
        opts.secs, opts.warmup
    );
    if let Some(selected) = selected {
        let list: Vec<String> = selected.iter().map(u8::to_string).collect();
        out.push_str(&format!(" --workloads {}", list.join(",")));
        if selected.contains(&6) {
            out.push_str(&format!(" --idle-conns {}", opts.idle_conns));
        }
    }
    out.push_str(&format!(
        " --server-cpu {} --client-cpu {}",
        opts.server_cpu, opts.client_cpu
    ));
    out
}

/// The run's circumstances, for the table header.
pub fn header(command: &str, opts: &Opts, rounds: usize) -> Vec<String> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    vec![
        format!("command: {command}"),
        format!("machine: {} CPUs ({cpu}); load average now {}", std::thread::available_parallelism().map_or(0, |n| n.get()), load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")),
        format!("pinning: servers on CPU {}, load clients on CPU {}; {} s measured after {} s warmup per run; {rounds} paired rounds, the side going first alternating (rotating among three or more); values are medians over rounds, ratios medians of per-round ratios", opts.server_cpu, opts.client_cpu, opts.secs, opts.warmup),
    ]
}

/// The W6 row: KiB per idle connection of each side, target ≤ 8 KiB for the tested one.
pub fn w6_row(kib: (f64, f64), errors: (u64, u64), conns: u64) -> Row {
    let mut row = Row::new(
        format!("W6 memory ({conns} idle conns)"),
        "KiB/conn",
        vec![kib.0],
        vec![kib.1],
        errors,
        None,
    );
    row.target = "≤ 8 KiB/conn".into();
    row.pass = Some(kib.0 <= 8.0 && errors.0 == 0);
    row
}

/// `make bench`: the kit against the raw reference. Returns the targets missed.
pub fn kit_vs_reference(opts: &Opts) -> Result<Vec<String>, String> {
    let (mut bench, rounds, selected) = prepare(opts, None, 5, "1,2,3,4,5,6,7")?;
    let bin_dir = bin_dir(opts)?;
    let kit = Side::kit("kit", &bin_dir, opts.server_cpu, &mut bench)?;
    let reference = Side::reference(&bin_dir, opts.server_cpu, &mut bench)?;
    let sha = sha256_mb_per_sec(&mut bench, &kit.client.clone(), opts.server_cpu)?;
    // W4 twice on the kit: the default (encrypting) suite, then the integrity-only suite.
    let extra = |side: &Side, n: u8| match (side.raw, n) {
        (false, 4) => vec![vec![], vec!["--suite", "hmac-sha256"]],
        _ => vec![vec![]],
    };
    let (results, w6) = run_rounds(
        &mut bench,
        &mut [kit, reference],
        rounds,
        &selected,
        opts.idle_conns,
        extra,
    )?;

    let r = &results;
    let p = |key: &'static str| move |rep: &Value| rep["latency_us"][key].as_f64().unwrap_or(0.0);
    let errs = |w: &str| (r.errors(&format!("{w}-kit")), r.errors(&format!("{w}-ref")));
    let mut rows = Vec::new();
    if selected.contains(&1) {
        rows.push(Row::new(
            "W1 latency p50",
            "µs",
            r.per_round("w1-kit", p("p50")),
            r.per_round("w1-ref", p("p50")),
            errs("w1"),
            None,
        ));
        rows.push(Row::new(
            "W1 latency p99",
            "µs",
            r.per_round("w1-kit", p("p99")),
            r.per_round("w1-ref", p("p99")),
            errs("w1"),
            Some(("≤ 1.2× ref".into(), Box::new(|x| x <= 1.2))),
        ));
    }
    let mut w3_ratio = f64::NAN;
    for w in LOAD.iter().filter(|w| selected.contains(&w.n)) {
        let (kit_name, ref_name) = (format!("w{}-kit", w.n), format!("w{}-ref", w.n));
        let kits = r.per_round(&kit_name, |x| w.metric.of(x));
        let refs = r.per_round(&ref_name, |x| w.metric.of(x));
        let tag = format!("w{}", w.n);
        match w.n {
            4 => {
                rows.push(Row::new(
                    w.label,
                    "MB/s",
                    kits,
                    refs.clone(),
                    errs(&tag),
                    target(4).and_then(|f| at_least(f, "ref")),
                ));
                rows.push(Row::new(
                    "W4 bulk, integrity-only suite [a]",
                    "MB/s",
                    r.per_round("w4d-kit", |x| w.metric.of(x)),
                    refs,
                    (r.errors("w4d-kit"), r.errors("w4-ref")),
                    None,
                ));
            }
            7 => {
                let row = Row::new(w.label, w.metric.unit(), kits, refs, errs(&tag), None);
                let ratio = row.ratio();
                let mut row = row;
                row.target = "≥ 0.9 × W3's ratio".into();
                row.pass = Some(ratio >= 0.9 * w3_ratio && row.errors == (0, 0));
                rows.push(row);
            }
            n => {
                let row = Row::new(
                    w.label,
                    w.metric.unit(),
                    kits,
                    refs,
                    errs(&tag),
                    target(n).and_then(|f| at_least(f, "ref")),
                );
                if n == 3 {
                    w3_ratio = row.ratio();
                }
                rows.push(row);
            }
        }
    }
    if let Some(kib) = &w6 {
        rows.push(w6_row((kib[0], kib[1]), (0, 0), opts.idle_conns));
    }
    let failed = missed(&rows);
    let loads = selected_loads(&selected);
    let tables = vec![
        main_table(&rows, "kit", "reference"),
        cpu_table(&results, &loads, &["kit", "ref"]),
    ];
    let notes = vec![
        format!("[a] The kit's clients offer the default encrypting suite (AES-256-GCM where the CPU has AES); the integrity-only row runs the same load with --suite hmac-sha256 (HMAC-SHA256 tags; SHA-256 here: {} MB/s on one core), without a target.", fmt(sha)),
        "W5: the kit's client defaults; each churn connection's call rides with the handshake's proof once the server has proven the key to the process (all but the first).".to_owned(),
        "W6: (server VmRSS while holding − before) ÷ connections held, once, first, on fresh servers. CPU µs/call: CPU time of the server (/proc/PID/stat) and of the load client (its rusage) over the whole client run × window ÷ wall ÷ calls counted, median over rounds.".to_owned(),
        "A target fails if either side counted errors in any round.".to_owned(),
    ];
    let head = header(
        &format!(
            "make bench (rpc-bench {})",
            knobs(opts, rounds, Some(&selected))
        ),
        opts,
        rounds,
    );
    let summary = json!({ "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(), "sha256_mb_per_sec": sha, "failed": failed, "w6_kib_per_conn": w6 });
    publish(
        &bench,
        "rpckit benchmark: kit vs raw reference",
        &head,
        &tables,
        &notes,
        summary,
    )?;
    Ok(failed)
}
