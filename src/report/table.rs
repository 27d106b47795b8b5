//! Aligned text tables.

use std::fmt::Write as _;

use super::human_bytes;
use crate::account::Traffic;
use crate::store::query::{By, TopReport, TopRow};

fn who(row: &TopRow) -> String {
    match (row.uid, &row.user) {
        (Some(uid), Some(name)) => format!("{name} ({uid})"),
        (Some(uid), None) => uid.to_string(),
        (None, _) => format!(
            "(unattributed{})",
            row.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        ),
    }
}

fn key(row: &TopRow, by: By) -> Option<String> {
    match by {
        By::User => None,
        By::Program => Some(row.program.clone().unwrap_or_else(|| "?".into())),
        By::Remote => Some(row.remote.clone().unwrap_or_default()),
        By::Port => Some(format!(
            "{}/{}",
            row.protocol.as_deref().unwrap_or("?"),
            row.port.unwrap_or(0)
        )),
    }
}

/// Render `top` as an aligned table with a totals line and the excluded local traffic.
pub fn top_table(report: &TopReport, by: By, exact: bool) -> String {
    let fmt = |n: u64| if exact { n.to_string() } else { human_bytes(n) };
    let key_title = match by {
        By::User => None,
        By::Program => Some("PROGRAM"),
        By::Remote => Some("REMOTE"),
        By::Port => Some("PORT"),
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["USER".to_string()];
    head.extend(key_title.map(str::to_string));
    head.extend(["RX".into(), "TX".into(), "TOTAL".into()]);
    rows.push(head);
    let mut total = Traffic::default();
    for r in &report.rows {
        total.add(&r.traffic);
        let mut line = vec![who(r)];
        line.extend(key(r, by));
        line.extend([
            fmt(r.traffic.rx_bytes),
            fmt(r.traffic.tx_bytes),
            fmt(r.traffic.bytes()),
        ]);
        rows.push(line);
    }
    let pad = if key_title.is_some() { 1 } else { 0 };
    let mut line = vec!["total".to_string()];
    line.extend(std::iter::repeat_n(String::new(), pad));
    line.extend([fmt(total.rx_bytes), fmt(total.tx_bytes), fmt(total.bytes())]);
    rows.push(line);
    let mut line = vec!["(excluded local)".to_string()];
    line.extend(std::iter::repeat_n(String::new(), pad));
    let e = &report.excluded;
    line.extend([fmt(e.rx_bytes), fmt(e.tx_bytes), fmt(e.bytes())]);
    rows.push(line);

    let cols = rows[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let mut s = String::new();
        for (c, cell) in r.iter().enumerate() {
            // Text columns left-aligned, numbers right-aligned.
            if c < cols - 3 {
                let _ = write!(s, "{cell:<w$}  ", w = widths[c]);
            } else {
                let _ = write!(s, "{cell:>w$}  ", w = widths[c]);
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}
