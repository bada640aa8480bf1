//! Medians, paired ratios and number formatting for the tables.

/// The median of the values that are numbers; NaN if there are none.
pub fn median(values: &[f64]) -> f64 {
    let mut xs: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    if xs.len() % 2 == 1 {
        xs[mid]
    } else {
        (xs[mid - 1] + xs[mid]) / 2.0
    }
}

/// Per-round ratios `a[k] / b[k]` (NaN where `b[k]` is 0).
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| if *y != 0.0 { x / y } else { f64::NAN })
        .collect()
}

/// A value with a sensible number of digits.
pub fn fmt(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A ratio with three decimals.
pub fn fmt_ratio(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.3}")
    }
}

/// The per-round ratios: each, for up to 9 rounds; their range otherwise.
pub fn fmt_rounds(rs: &[f64]) -> String {
    if rs.len() <= 9 {
        return rs
            .iter()
            .map(|r| fmt_ratio(*r))
            .collect::<Vec<_>>()
            .join(" ");
    }
    let mut xs: Vec<f64> = rs.iter().copied().filter(|x| !x.is_nan()).collect();
    xs.sort_by(f64::total_cmp);
    match (xs.get(xs.len() / 4), xs.get(xs.len() * 3 / 4)) {
        (Some(q1), Some(q3)) => format!("IQR {}–{}", fmt_ratio(*q1), fmt_ratio(*q3)),
        _ => "n/a".into(),
    }
}

/// A markdown table with padded columns.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |", padded.join(" | "))
    };
    let mut out = vec![line(head.to_vec())];
    out.push(format!(
        "|{}|",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("|")
    ));
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_skip_nan() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, f64::NAN, 2.0, 3.0]), 2.5);
        assert!(median(&[f64::NAN]).is_nan());
        assert!(ratios(&[1.0], &[0.0])[0].is_nan());
        assert_eq!(ratios(&[1.0, 3.0], &[2.0, 3.0]), [0.5, 1.0]);
    }

    #[test]
    fn table_pads_columns() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t[0], "| a   | bb |");
        assert_eq!(t[2], "| xxx | y  |");
    }
}
