//! What the rounds collected, per workload and side, and the rows and tables made from it.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::stats::{fmt, fmt_ratio, fmt_rounds, median, ratios, table};
use crate::workload::Workload;

/// Reports and CPU records by run name (`w3-kit`, `w5d-kit`, ...), one per round.
#[derive(Debug, Default)]
pub struct Results {
    /// (report, cpu) per round.
    pub runs: BTreeMap<String, Vec<(Value, Value)>>,
}

impl Results {
    /// Adds round results for `name`.
    pub fn push(&mut self, name: &str, run: (Value, Value)) {
        self.runs.entry(name.to_owned()).or_default().push(run);
    }

    /// `get` of every round of `name`.
    pub fn per_round(&self, name: &str, get: impl Fn(&Value) -> f64) -> Vec<f64> {
        self.runs
            .get(name)
            .map(|r| r.iter().map(|(rep, _)| get(rep)).collect())
            .unwrap_or_default()
    }

    /// Errors of every round of `name`, summed.
    pub fn errors(&self, name: &str) -> u64 {
        self.runs
            .get(name)
            .map(|r| {
                r.iter()
                    .map(|(rep, _)| rep["errors"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Median over rounds of (server, client) CPU µs per counted call of `name`.
    pub fn cpu_per_call(&self, name: &str) -> (f64, f64) {
        let rounds = self.runs.get(name).map(Vec::as_slice).unwrap_or_default();
        let per_call = |key: &str| {
            let values: Vec<f64> = rounds
                .iter()
                .map(|(rep, cpu)| {
                    let wall = cpu["wall_secs"].as_f64().unwrap_or(f64::NAN);
                    let calls = rep["calls"]
                        .as_f64()
                        .filter(|c| *c > 0.0)
                        .unwrap_or(f64::NAN);
                    let window = rep["duration_secs"].as_f64().unwrap_or(f64::NAN);
                    cpu[key].as_f64().unwrap_or(f64::NAN) / wall * window / calls * 1e6
                })
                .collect();
            median(&values)
        };
        (per_call("server_cpu_secs"), per_call("client_cpu_secs"))
    }
}

/// A target as shown, and the test of a ratio against it.
pub type Target = Option<(String, Box<dyn Fn(f64) -> bool>)>;

/// One row of the main table.
#[derive(Debug)]
pub struct Row {
    /// What it measures.
    pub name: String,
    /// Unit of the values.
    pub unit: &'static str,
    /// The side measured (kit, new), per round.
    pub test: Vec<f64>,
    /// The side it is compared with (ref, old), per round.
    pub base: Vec<f64>,
    /// The target, as shown.
    pub target: String,
    /// Whether the median ratio meets the target (`None`: no target).
    pub pass: Option<bool>,
    /// Errors of the test and the base side.
    pub errors: (u64, u64),
}

impl Row {
    /// A row whose ratio is judged by `ok`.
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        test: Vec<f64>,
        base: Vec<f64>,
        errors: (u64, u64),
        target: Target,
    ) -> Self {
        let ratio = median(&ratios(&test, &base));
        let (target, pass) = match target {
            Some((text, ok)) => (text, Some(ok(ratio) && errors == (0, 0))),
            None => ("—".to_owned(), None),
        };
        Row {
            name: name.into(),
            unit,
            test,
            base,
            target,
            pass,
            errors,
        }
    }

    /// Median of the per-round ratios.
    pub fn ratio(&self) -> f64 {
        median(&ratios(&self.test, &self.base))
    }

    /// The row as table cells.
    fn cells(&self) -> Vec<String> {
        let single = self.test.len() <= 1 && self.base.len() <= 1;
        vec![
            self.name.clone(),
            format!("{} {}", fmt(median(&self.test)), self.unit),
            format!("{} {}", fmt(median(&self.base)), self.unit),
            format!("{}×", fmt_ratio(self.ratio())),
            if single {
                "—".into()
            } else {
                fmt_rounds(&ratios(&self.test, &self.base))
            },
            self.target.clone(),
            match self.pass {
                Some(true) => "PASS".into(),
                Some(false) => "FAIL".into(),
                None => "—".into(),
            },
            format!("{}/{}", self.errors.0, self.errors.1),
        ]
    }

    /// The row for `summary.json`.
    pub fn to_json(&self) -> Value {
        let num = |v: f64| if v.is_nan() { Value::Null } else { json!(v) };
        json!({
            "workload": self.name,
            "unit": self.unit,
            "test_median": num(median(&self.test)),
            "base_median": num(median(&self.base)),
            "ratio": num(self.ratio()),
            "per_round": ratios(&self.test, &self.base).into_iter().map(num).collect::<Vec<_>>(),
            "target": self.target,
            "result": match self.pass { Some(true) => "pass", Some(false) => "FAIL", None => "-" },
            "errors": [self.errors.0, self.errors.1],
        })
    }
}

/// The names of the rows that missed their target.
pub fn missed(rows: &[Row]) -> Vec<String> {
    rows.iter()
        .filter(|r| r.pass == Some(false))
        .map(|r| r.name.clone())
        .collect()
}

/// The main table; `test` and `base` name the two sides (kit, ref).
pub fn main_table(rows: &[Row], test: &str, base: &str) -> Vec<String> {
    let ratio = format!("{test} ÷ {base}");
    let errors = format!("errors {test}/{base}");
    let head = [
        "workload",
        test,
        base,
        &ratio,
        "per round",
        "target",
        "result",
        &errors,
    ];
    table(&head, &rows.iter().map(Row::cells).collect::<Vec<_>>())
}

/// CPU µs per call, server and client, of each side (`kit`, `ref`, ...) for each load workload
/// that ran on all of them.
pub fn cpu_table(results: &Results, workloads: &[Workload], sides: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for w in workloads {
        let mut cells = vec![w.label.to_owned()];
        for side in sides {
            let name = format!("w{}-{side}", w.n);
            if !results.runs.contains_key(&name) {
                continue;
            }
            let (srv, cli) = results.cpu_per_call(&name);
            cells.push(format!("{} / {}", fmt(srv), fmt(cli)));
        }
        if cells.len() == sides.len() + 1 {
            rows.push(cells);
        }
    }
    let heads: Vec<String> = sides
        .iter()
        .map(|s| format!("{s} CPU µs/call server / client"))
        .collect();
    let mut head = vec!["run"];
    head.extend(heads.iter().map(String::as_str));
    table(&head, &rows)
}
