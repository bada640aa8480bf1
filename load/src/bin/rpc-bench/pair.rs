//! Two kits against each other, each its own `rpc-server` and `rpc-client`: an old build
//! against a new one (`ab`), or one build run two ways (`metrics`), in paired rounds with the
//! shared setup, rounds and tables of `suite.rs`.

use std::path::Path;

use serde_json::json;

use crate::results::{cpu_table, main_table, missed, Row};
use crate::runner::Side;
use crate::suite::{at_least, header, knobs, prepare, publish, run_rounds, w6_row};
use crate::workload::{selected_loads, LOAD};
use crate::Opts;

/// Two kits in paired rounds, each its own `rpc-server` and `rpc-client`: two builds
/// (`ab`), or one build run two ways (`metrics`).
#[derive(Debug)]
pub struct KitPair<'a> {
    /// The side judged: label, binaries' directory, extra `rpc-server` arguments.
    pub test: (&'static str, &'a Path, &'a [&'a str]),
    /// The side it is judged against.
    pub base: (&'static str, &'a Path, &'a [&'a str]),
    /// Each load workload passes when the median of per-round test ÷ base is at least this.
    pub target: f64,
    /// Rounds and workloads when not given.
    pub defaults: (usize, &'a str),
    /// Output subdirectory, so that one mode does not overwrite another's tables.
    pub sub: Option<&'a str>,
    /// Title of the published tables.
    pub title: &'a str,
    /// The command line without the knobs, for the header ([`knobs`] adds them).
    pub command: String,
    /// What the reader should know about the two sides.
    pub note: String,
}

/// `ab`: the old build against the new one (target ≥ 0.90). Returns the targets missed.
pub fn old_vs_new(opts: &Opts, old_dir: &Path, new_dir: &Path) -> Result<Vec<String>, String> {
    kit_pair(
        opts,
        &KitPair {
            test: ("new", new_dir, &[]),
            base: ("old", old_dir, &[]),
            target: 0.90,
            defaults: (20, "1,2,3,4,5,6"),
            sub: None,
            title: "rpckit benchmark: old build vs new build",
            command: format!(
                "rpc-bench ab --old {} --new {}",
                old_dir.display(),
                new_dir.display()
            ),
            note: format!("old: {}; new: {}. Each side is its own rpc-server and rpc-client; W5 with --pipeline-first-call on both. W6 KiB/conn of the new build against 8 KiB. A row fails on the new build's errors only; the old build's are shown.", old_dir.display(), new_dir.display()),
        },
    )
}

/// Runs a [`KitPair`] and publishes its tables; returns the workloads that missed the target.
pub fn kit_pair(opts: &Opts, pair: &KitPair<'_>) -> Result<Vec<String>, String> {
    let (mut bench, rounds, selected) = prepare(opts, pair.sub, pair.defaults.0, pair.defaults.1)?;
    let (tl, bl) = (pair.test.0, pair.base.0);
    let test = Side::kit_with(tl, pair.test.1, opts.server_cpu, &mut bench, pair.test.2)?;
    let base = Side::kit_with(bl, pair.base.1, opts.server_cpu, &mut bench, pair.base.2)?;
    let extra = |_: &Side, n: u8| {
        if n == 5 {
            vec![vec!["--pipeline-first-call"]]
        } else {
            vec![vec![]]
        }
    };
    let (results, w6) = run_rounds(
        &mut bench,
        &mut [test, base],
        rounds,
        &selected,
        opts.idle_conns,
        extra,
    )?;
    let r = &results;
    let mut rows = Vec::new();
    for w in LOAD.iter().filter(|w| selected.contains(&w.n)) {
        let (t_name, b_name) = (format!("w{}-{tl}", w.n), format!("w{}-{bl}", w.n));
        let mut row = Row::new(
            w.label,
            w.metric.unit(),
            r.per_round(&t_name, |x| w.metric.of(x)),
            r.per_round(&b_name, |x| w.metric.of(x)),
            (r.errors(&t_name), r.errors(&b_name)),
            at_least(pair.target, bl),
        );
        // Judged on the test side: errors of the base are reported, not held against it.
        row.pass = Some(row.ratio() >= pair.target && row.errors.0 == 0);
        rows.push(row);
    }
    if let Some(kib) = &w6 {
        rows.push(w6_row((kib[0], kib[1]), (0, 0), opts.idle_conns));
    }
    let failed = missed(&rows);
    let loads = selected_loads(&selected);
    let tables = vec![
        main_table(&rows, tl, bl),
        cpu_table(&results, &loads, &[tl, bl]),
    ];
    let notes = vec![pair.note.clone()];
    let command = format!("{} {}", pair.command, knobs(opts, rounds, Some(&selected)));
    let head = header(&command, opts, rounds);
    let summary = json!({ "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(), "failed": failed, "w6_kib_per_conn": w6 });
    publish(&bench, pair.title, &head, &tables, &notes, summary)?;
    Ok(failed)
}
