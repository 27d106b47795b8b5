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

/// A pretty JSON array written a record at a time, as it is read: the same bytes as
/// [`write_json`] of all the records at once, in memory that does not grow with them.
pub struct JsonArray<W: Write> {
    out: W,
    first: bool,
}

impl<W: Write> JsonArray<W> {
    /// Start the array (nothing is written before the first record or the end).
    pub fn new(out: W) -> JsonArray<W> {
        JsonArray { out, first: true }
    }

    /// Write one record as the array's next element.
    pub fn push(&mut self, record: &Record) -> io::Result<()> {
        let open: &[u8] = if self.first { b"[\n  " } else { b",\n  " };
        self.first = false;
        self.out.write_all(open)?;
        // serde_json's pretty printer indents an element of the top-level array by one
        // level: its own lines, shifted by two spaces. A newline in JSON text is always
        // structural (strings escape theirs), so shifting every line after the first is
        // exactly that indentation.
        serde_json::to_writer_pretty(Indented(&mut self.out), record)?;
        Ok(())
    }

    /// Close the array and end the line; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let close: &[u8] = if self.first { b"[]\n" } else { b"\n]\n" };
        self.out.write_all(close)?;
        Ok(self.out)
    }
}

/// A writer that indents every line after the first by two spaces.
struct Indented<W: Write>(W);

impl<W: Write> Write for Indented<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        for (i, line) in buf.split(|b| *b == b'\n').enumerate() {
            if i > 0 {
                self.0.write_all(b"\n  ")?;
            }
            self.0.write_all(line)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
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
    write_csv_header(out, header)?;
    for r in records {
        write_csv_row(out, header, r)?;
    }
    Ok(())
}

/// The header line of [`write_csv`], for writing its rows one at a time
/// ([`write_csv_row`]) as they are read.
pub fn write_csv_header(out: &mut impl Write, header: &[&str]) -> io::Result<()> {
    writeln!(out, "{}", header.join(","))
}

/// One record as a line of [`write_csv`] under `header`.
pub fn write_csv_row(out: &mut impl Write, header: &[&str], r: &Record) -> io::Result<()> {
    let fields: Vec<String> = header
        .iter()
        .map(|h| match r.get(*h) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => csv_field(s),
            Some(v) => csv_field(&v.to_string()),
        })
        .collect();
    writeln!(out, "{}", fields.join(","))
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
    use super::*;

    #[test]
    fn a_json_array_written_a_record_at_a_time_is_write_json_to_the_byte() {
        let records: Vec<Record> = (0..3)
            .map(|i| {
                object(json!({
                    "n": i,
                    "text": "line\nbreak, \"quoted\"",
                    "nested": {"a": [1, 2], "b": {}, "c": [], "d": null},
                    "list": [{"x": i}],
                }))
            })
            .collect();
        for n in 0..=records.len() {
            let mut whole = vec![];
            write_json(&mut whole, &records[..n]).unwrap();
            let mut array = JsonArray::new(vec![]);
            for r in &records[..n] {
                array.push(r).unwrap();
            }
            let streamed = array.finish().unwrap();
            assert_eq!(
                String::from_utf8(streamed).unwrap(),
                String::from_utf8(whole).unwrap(),
                "{n} records"
            );
        }
    }
}
