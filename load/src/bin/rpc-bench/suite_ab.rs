//! `rpc-bench suites`: the encrypting suites against the integrity-only one, same binaries,
//! same run.
//!
//! Each suite gets a server of its own (the same `rpc-server`, accepting every suite) and its
//! load clients offer it with `--suite`; the rounds, medians and tables are those of the other
//! modes. Judged per workload by the median of per-round ratios encrypted ÷ integrity-only:
//! W1–W3 and W5 must reach 0.95, W4 (and W7, W6 if selected) are reported. W5 runs twice: with
//! each suite's client defaults (under an encrypting suite a churn connection's call rides
//! with the proof once the server has proven the key; under `hmac-sha256` it waits for the
//! proof), and with `--pipeline-first-call` on both, which leaves only the suites' own cost.

use serde_json::{json, Value};

use rpckit_proto::Suite;

use crate::results::{cpu_table, main_table, missed, Results, Row};
use crate::runner::Side;
use crate::suite::{at_least, bin_dir, header, knobs, prepare, publish, run_rounds, w6_row};
use crate::workload::selected_loads;
use crate::Opts;

/// The suite every encrypting suite is compared with.
const BASELINE: Suite = Suite::HmacSha256;

/// Encrypted ÷ integrity-only must reach this on the workloads that have a target.
const TARGET: f64 = 0.95;

/// Workloads judged against [`TARGET`]; the others are reported.
const JUDGED: [u8; 4] = [1, 2, 3, 5];

/// Parses `--suite` of this mode: comma-separated suite names, or `encrypted`/`any` for the
/// client's default encrypting suite (as `rpc-client --suite` reads them). The integrity-only
/// suite is the baseline, run always, and cannot be listed.
pub fn parse_encrypting(list: &str) -> Result<Vec<Suite>, String> {
    let mut out = Vec::new();
    for word in list.split(',').map(str::trim) {
        let suite = if ["encrypted", "any"]
            .iter()
            .any(|w| word.eq_ignore_ascii_case(w))
        {
            Suite::preferred()
        } else {
            Suite::from_name(word).ok_or_else(|| {
                format!("unknown suite {word:?}: aes-256-gcm, chacha20-poly1305 or encrypted")
            })?
        };
        if !suite.is_encrypted() {
            return Err(format!(
                "{suite} is the baseline every encrypting suite is compared with; list encrypting suites"
            ));
        }
        if !out.contains(&suite) {
            out.push(suite);
        }
    }
    Ok(out)
}

/// The equivalent command line of this run, every knob explicit.
fn command(opts: &Opts, suites: &[Suite], rounds: usize, selected: &[u8]) -> String {
    let names: Vec<&str> = suites.iter().map(|s| s.name()).collect();
    format!(
        "rpc-bench suites --suite {} {}",
        names.join(","),
        knobs(opts, rounds, Some(selected))
    )
}

/// The rows of one encrypting suite against the baseline.
fn rows_of(r: &Results, suite: Suite, selected: &[u8]) -> Vec<Row> {
    let (enc, int) = (suite.name(), BASELINE.name());
    let run = |w: &str, side: &str| format!("{w}-{side}");
    let errs = |w: &str| (r.errors(&run(w, enc)), r.errors(&run(w, int)));
    let mut rows = Vec::new();
    if selected.contains(&1) {
        let p50 = |rep: &Value| rep["latency_us"]["p50"].as_f64().unwrap_or(0.0);
        rows.push(Row::new(
            "W1 latency p50",
            "µs",
            r.per_round(&run("w1", enc), p50),
            r.per_round(&run("w1", int), p50),
            errs("w1"),
            None,
        ));
    }
    for w in selected_loads(selected) {
        let judged = JUDGED.contains(&w.n);
        let tag = format!("w{}", w.n);
        let mut variants = vec![(w.label.to_owned(), tag.clone())];
        if w.n == 5 {
            variants.push((format!("{}, both pipelined [b]", w.label), tag + "d"));
        }
        for (label, tag) in variants {
            rows.push(Row::new(
                label,
                w.metric.unit(),
                r.per_round(&run(&tag, enc), |x| w.metric.of(x)),
                r.per_round(&run(&tag, int), |x| w.metric.of(x)),
                errs(&tag),
                if judged { at_least(TARGET, int) } else { None },
            ));
        }
    }
    rows
}

/// `rpc-bench suites`: every suite of `suites` against `hmac-sha256`. Returns the targets
/// missed.
pub fn encrypted_vs_integrity(opts: &Opts, suites: &[Suite]) -> Result<Vec<String>, String> {
    let (mut bench, rounds, selected) = prepare(opts, Some("suites"), 5, "1,2,3,4,5")?;
    let bin_dir = bin_dir(opts)?;
    let mut sides = Vec::new();
    for suite in suites.iter().chain([&BASELINE]) {
        sides.push(Side::kit(
            suite.name(),
            &bin_dir,
            opts.server_cpu,
            &mut bench,
        )?);
    }
    // Each side's clients offer its suite; W5 once more with the first call pipelined on both.
    let extra = |side: &Side, n: u8| {
        let offer = vec!["--suite", side.label];
        if n == 5 {
            vec![
                offer.clone(),
                [&offer[..], &["--pipeline-first-call"]].concat(),
            ]
        } else {
            vec![offer]
        }
    };
    let (results, w6) = run_rounds(
        &mut bench,
        &mut sides,
        rounds,
        &selected,
        opts.idle_conns,
        extra,
    )?;

    let mut tables = Vec::new();
    let mut failed = Vec::new();
    let mut summary = Vec::new();
    for (i, suite) in suites.iter().enumerate() {
        let mut rows = rows_of(&results, *suite, &selected);
        if let Some(kib) = &w6 {
            rows.push(w6_row((kib[i], kib[suites.len()]), (0, 0), opts.idle_conns));
        }
        failed.extend(
            missed(&rows)
                .into_iter()
                .map(|row| format!("{suite}: {row}")),
        );
        summary.push(json!({ "suite": suite.name(), "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>() }));
        tables.push(main_table(&rows, suite.name(), BASELINE.name()));
    }
    let labels: Vec<&str> = sides.iter().map(|s| s.label).collect();
    tables.push(cpu_table(&results, &selected_loads(&selected), &labels));

    let notes = vec![
        format!("Every side is the same rpc-server (accepting every suite) loaded by the same rpc-client bench, which offers the side's suite with --suite; each suite has a server of its own. Target: encrypted ÷ {} ≥ {TARGET} on W1–W3 and W5 (median of per-round ratios); W4 and W7 are reported.", BASELINE.name()),
        "W5: each suite with its client's defaults: under an encrypting suite a churn connection's call rides with the proof once the server has proven the key to the process; under hmac-sha256 it waits for the proof, one round trip more. [b]: both with --pipeline-first-call, so only the suites' own cost differs.".to_owned(),
        "A target fails if either side counted errors in any round.".to_owned(),
    ];
    let head = header(&command(opts, suites, rounds, &selected), opts, rounds);
    let summary =
        json!({ "suites": summary, "failed": failed, "w6_kib_per_conn": w6, "sides": labels });
    publish(
        &bench,
        "rpckit benchmark: encrypting suites vs integrity-only",
        &head,
        &tables,
        &notes,
        summary,
    )?;
    Ok(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_lists_parse_like_the_clients_flag() {
        assert_eq!(parse_encrypting("encrypted").unwrap(), [Suite::preferred()]);
        assert_eq!(
            parse_encrypting("chacha20-poly1305, AES-256-GCM,aes-256-gcm").unwrap(),
            [Suite::ChaCha20Poly1305, Suite::Aes256Gcm]
        );
        assert!(parse_encrypting("hmac-sha256").is_err());
        assert!(parse_encrypting("aes-128-gcm").is_err());
        assert!(parse_encrypting("").is_err());
    }
}
