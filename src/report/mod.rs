//! Rendering only: tables, JSON and CSV for the reports. No queries here.
//!
//! Every report is first turned into records — ordered field maps with stable snake_case
//! names and integer byte counts — so JSON and CSV carry the same fields by construction.

pub mod connections;
pub mod live;
pub mod log;
pub mod metrics;
pub mod names;
pub mod quota;
pub mod summary;
pub mod table;

use std::io::{self, Write};

use serde_json::{json, Map, Value};

use crate::account::Traffic;
use crate::store::query::{By, Covered, PeriodRow, TopRow, UsageRecord};
use names::{protocol_name, RemoteNames, Services};

pub use crate::units::human_bytes;

/// `s` made safe for a terminal: every text output passes the names it did not make
/// (programs, users, containers, remote names) through here, so that no user can move
/// the cursor, recolour, clear or forge lines in what an administrator reads (issue 24:
/// an executable named `a\x1b[2K\rroot …`). C0 controls, DEL and C1 controls become
/// `\n`, `\r`, `\t`, `\e` or `\xHH` (C1 as `\u{HH}`), the bidirectional overrides and
/// isolates (U+202A–U+202E, U+2066–U+2069, which reorder what follows them) `\u{HHHH}`,
/// and a backslash `\\`, so that an escape in the output always means one in the name.
/// JSON and CSV keep the true bytes.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x80 && unsafe_char(c) => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One output record: ordered field name → value.
pub type Record = Map<String, Value>;

/// How to name things in reports.
#[derive(Debug, Default, Clone)]
pub struct Labels {
    /// Remote address names.
    pub remotes: RemoteNames,
    /// Port names.
    pub services: Services,
}

/// A JSON object built with `json!` as a record.
fn object(v: Value) -> Record {
    match v {
        Value::Object(m) => m,
        other => unreachable!("a record is a JSON object, not {other}"),
    }
}

fn traffic_fields(m: &mut Record, t: &Traffic) {
    m.insert("rx_bytes".into(), json!(t.rx_bytes));
    m.insert("tx_bytes".into(), json!(t.tx_bytes));
    m.insert("rx_packets".into(), json!(t.rx_packets));
    m.insert("tx_packets".into(), json!(t.tx_packets));
    m.insert("total_bytes".into(), json!(t.bytes()));
}

/// One `top` row as a record: `uid` (null when unattributed), `user`, the `--by` keys
/// (`via` and `via_user` for `--by via`, `container` for `--by container`: null for the
/// host's traffic), `reason`, bytes and packets.
pub fn top_record(row: &TopRow, by: &[By], labels: &Labels) -> Record {
    let mut m = Map::new();
    m.insert("uid".into(), json!(row.uid));
    m.insert("user".into(), json!(row.user));
    if by.contains(&By::Program) {
        m.insert("program".into(), json!(row.program));
    }
    if by.contains(&By::Remote) {
        m.insert("remote".into(), json!(row.remote));
        let name = row.remote.as_deref().and_then(|r| labels.remotes.name(r));
        m.insert("remote_name".into(), json!(name));
    }
    if by.contains(&By::Port) {
        let (p, port) = (row.protocol.unwrap_or(0), row.port.unwrap_or(0));
        m.insert("protocol".into(), json!(protocol_name(p)));
        m.insert("port".into(), json!(port));
        m.insert("service".into(), json!(labels.services.name(p, port)));
    }
    if by.contains(&By::Via) {
        m.insert("via".into(), json!(row.via));
        m.insert("via_user".into(), json!(row.via_user));
    }
    if by.contains(&By::Container) {
        m.insert("container".into(), json!(row.container));
    }
    m.insert("reason".into(), json!(row.reason));
    traffic_fields(&mut m, &row.traffic);
    m
}

/// One `report` row as a record.
pub fn period_record(row: &PeriodRow) -> Record {
    let mut m = Map::new();
    m.insert("period".into(), json!(row.period));
    m.insert("uid".into(), json!(row.uid));
    m.insert("user".into(), json!(row.user));
    traffic_fields(&mut m, &row.traffic);
    m
}

/// One stored usage row as a record (`export`).
pub fn usage_record(r: &UsageRecord) -> Record {
    let mut m = Map::new();
    m.insert("ts".into(), json!(r.ts));
    let time = chrono::DateTime::from_timestamp(r.ts, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    m.insert("time".into(), json!(time));
    m.insert("kind".into(), json!(r.kind));
    m.insert("uid".into(), json!(r.uid));
    m.insert("user".into(), json!(r.user));
    m.insert("program".into(), json!(r.program));
    m.insert("reason".into(), json!(r.reason));
    m.insert("protocol".into(), json!(protocol_name(r.protocol)));
    m.insert("direction".into(), json!(r.direction));
    m.insert("remote".into(), json!(r.remote));
    m.insert("port".into(), json!(r.port));
    traffic_fields(&mut m, &r.traffic);
    // Last, so that the columns before it keep their places in CSV.
    m.insert("via".into(), json!(r.via));
    m.insert("container".into(), json!(r.container));
    m.insert("container_uid".into(), json!(r.container_uid));
    m
}

/// Append the span the numbers cover ([`Covered`]) to a record: `covered_since` and
/// `covered_until`, epoch seconds. Every row of a report carries them, so that `--json`
/// stays an array of rows and a script sees when a period was widened to whole buckets.
pub fn with_covered(mut m: Record, c: &Covered) -> Record {
    m.insert("covered_since".into(), json!(c.since));
    m.insert("covered_until".into(), json!(c.until));
    m
}

/// Records as a pretty JSON array.
pub fn write_json(out: &mut impl Write, records: &[Record]) -> io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, records)?;
    writeln!(out)
}

/// Records as JSON Lines, one object per line.
pub fn write_jsonl(out: &mut impl Write, records: &[Record]) -> io::Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)?;
        writeln!(out)?;
    }
    Ok(())
}

/// Records as CSV (RFC 4180) with a header line; `header` names the columns even when
/// there are no records. Null is an empty field.
pub fn write_csv(out: &mut impl Write, header: &[&str], records: &[Record]) -> io::Result<()> {
    writeln!(out, "{}", header.join(","))?;
    for r in records {
        let fields: Vec<String> = header
            .iter()
            .map(|h| match r.get(*h) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => csv_field(s),
                Some(v) => csv_field(&v.to_string()),
            })
            .collect();
        writeln!(out, "{}", fields.join(","))?;
    }
    Ok(())
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The column names of a record kind, for CSV headers of empty reports.
pub fn header_of(sample: Record) -> Vec<String> {
    sample.keys().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn terminal_safe_escapes_every_control_and_keeps_the_rest() {
        assert!(matches!(
            terminal_safe("curl é ü 名前"),
            std::borrow::Cow::Borrowed("curl é ü 名前")
        ));
        assert_eq!(
            terminal_safe("a\x1b[2K\rroot\nfake\t\x07\x7f\u{85}\u{9b}31m"),
            "a\\e[2K\\rroot\\nfake\\t\\x07\\x7f\\u{85}\\u{9b}31m"
        );
        assert_eq!(
            terminal_safe("x\u{202e}gpj.exe\u{2066}"),
            "x\\u{202e}gpj.exe\\u{2066}"
        );
        assert_eq!(
            terminal_safe("a\\e"),
            "a\\\\e",
            "a backslash is never an escape"
        );
        assert_eq!(terminal_safe("\0"), "\\x00");
    }
}
