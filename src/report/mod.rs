//! Rendering only: tables, JSON and CSV for the reports. No queries here.
//!
//! Every report is first turned into records — ordered field maps with stable snake_case
//! names and integer byte counts — so JSON and CSV carry the same fields by construction.

pub mod connections;
pub mod live;
pub mod log;
pub mod log_json;
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
/// host's traffic; `cgroup`, `unit`, `job`: null where none applies), `reason`, bytes and
/// packets.
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
    if by.contains(&By::Cgroup) {
        m.insert("cgroup".into(), json!(row.cgroup));
    }
    if by.contains(&By::Unit) {
        m.insert("unit".into(), json!(row.unit));
    }
    if by.contains(&By::Job) {
        m.insert("job".into(), json!(row.job));
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

/// One `report` row as JSON: the fields of [`with_covered`]`(`[`period_record`]`(row), c)`
/// in the same order, written without building the record (a year of days is tens of
/// thousands of rows) by [`JsonArray::push_period`].
pub struct PeriodJson<'a> {
    period: &'a str,
    uid: Option<u32>,
    user: Option<&'a str>,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_packets: u64,
    tx_packets: u64,
    total_bytes: u64,
    covered_since: i64,
    covered_until: i64,
}

impl<'a> PeriodJson<'a> {
    /// The row and the span its report covers.
    pub fn new(row: &'a PeriodRow, c: &Covered) -> PeriodJson<'a> {
        let t = &row.traffic;
        PeriodJson {
            period: &row.period,
            uid: row.uid,
            user: row.user.as_deref(),
            rx_bytes: t.rx_bytes,
            tx_bytes: t.tx_bytes,
            rx_packets: t.rx_packets,
            tx_packets: t.tx_packets,
            total_bytes: t.bytes(),
            covered_since: c.since,
            covered_until: c.until,
        }
    }

    /// The row as an element of [`JsonArray`]: the bytes serde_json's pretty printer
    /// writes for its record one level in, without its machinery (strings through
    /// serde_json, for their escapes).
    fn write_element(&self, out: &mut Vec<u8>) -> io::Result<()> {
        out.extend_from_slice(b"  {\n    \"period\": ");
        serde_json::to_writer(&mut *out, self.period)?;
        out.extend_from_slice(b",\n    \"uid\": ");
        match self.uid {
            Some(uid) => write_uint(out, uid.into())?,
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\n    \"user\": ");
        match self.user {
            Some(user) => serde_json::to_writer(&mut *out, user)?,
            None => out.extend_from_slice(b"null"),
        }
        for (key, n) in [
            ("rx_bytes", self.rx_bytes),
            ("tx_bytes", self.tx_bytes),
            ("rx_packets", self.rx_packets),
            ("tx_packets", self.tx_packets),
            ("total_bytes", self.total_bytes),
        ] {
            write_key(out, key);
            write_uint(out, n)?;
        }
        for (key, n) in [
            ("covered_since", self.covered_since),
            ("covered_until", self.covered_until),
        ] {
            write_key(out, key);
            write_int(out, n)?;
        }
        out.extend_from_slice(b"\n  }");
        Ok(())
    }
}

/// `,` and the next field's key (plain ASCII: nothing to escape) of a [`PeriodJson`].
fn write_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\n    \"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\": ");
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
    // The socket creator's cgroup, its systemd unit and Slurm job (migration 0016).
    m.insert("cgroup".into(), json!(r.cgroup));
    m.insert("unit".into(), json!(r.unit));
    m.insert("job".into(), json!(r.job));
    m
}

/// A field's value, for writing a record's fields without building the record (the rows of
/// `export`, millions of them: building each as a map cost more than reading it).
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Int(i64),
    UInt(u64),
    Str(&'a str),
    Null,
}

/// The fields of [`with_covered`]`(`[`usage_record`]`(r), c)`, in its order, given the
/// row's `time` and `protocol` as that writes them.
fn usage_fields<'a>(
    r: &'a UsageRecord,
    time: Option<&'a str>,
    protocol: &'a str,
    c: &Covered,
) -> [(&'static str, Field<'a>); 24] {
    let text = |s: &'a Option<String>| s.as_deref().map_or(Field::Null, Field::Str);
    let id = |u: Option<u32>| u.map_or(Field::Null, |u| Field::Int(u.into()));
    let t = &r.traffic;
    [
        ("ts", Field::Int(r.ts)),
        ("time", time.map_or(Field::Null, Field::Str)),
        ("kind", Field::Str(&r.kind)),
        ("uid", id(r.uid)),
        ("user", text(&r.user)),
        ("program", text(&r.program)),
        ("reason", text(&r.reason)),
        ("protocol", Field::Str(protocol)),
        ("direction", text(&r.direction)),
        ("remote", Field::Str(&r.remote)),
        ("port", Field::Int(r.port.into())),
        ("rx_bytes", Field::UInt(t.rx_bytes)),
        ("tx_bytes", Field::UInt(t.tx_bytes)),
        ("rx_packets", Field::UInt(t.rx_packets)),
        ("tx_packets", Field::UInt(t.tx_packets)),
        ("total_bytes", Field::UInt(t.bytes())),
        ("via", id(r.via)),
        ("container", text(&r.container)),
        ("container_uid", id(r.container_uid)),
        ("cgroup", text(&r.cgroup)),
        ("unit", text(&r.unit)),
        ("job", r.job.map_or(Field::Null, Field::UInt)),
        ("covered_since", Field::Int(c.since)),
        ("covered_until", Field::Int(c.until)),
    ]
}

/// `ts` as [`usage_record`]'s `time`: `%Y-%m-%dT%H:%M:%SZ` (formatted by hand for the years
/// of four digits, the hot path; by chrono otherwise).
fn usage_time(ts: i64) -> Option<String> {
    use chrono::{Datelike, Timelike};
    let t = chrono::DateTime::from_timestamp(ts, 0)?;
    if !(0..=9999).contains(&t.year()) {
        return Some(t.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    Some(format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    ))
}

/// Writes `export`'s rows without building their records, remembering the text of the
/// last row's time (the rows come in time order, thousands to a bucket).
pub struct UsageWriter<'c> {
    covered: &'c Covered,
    /// The last row's `ts` and [`usage_time`] of it.
    time: Option<(i64, Option<String>)>,
}

impl<'c> UsageWriter<'c> {
    /// Rows of a period covering `covered`.
    pub fn new(covered: &'c Covered) -> UsageWriter<'c> {
        UsageWriter {
            covered,
            time: None,
        }
    }

    /// [`usage_time`] of `ts`, formatted once for a run of rows of one time.
    fn time(&mut self, ts: i64) -> Option<&str> {
        if self.time.as_ref().is_none_or(|(at, _)| *at != ts) {
            self.time = Some((ts, usage_time(ts)));
        }
        self.time.as_ref().and_then(|(_, t)| t.as_deref())
    }

    /// One row as a JSON line: the bytes of [`write_jsonl`] of
    /// [`with_covered`]`(`[`usage_record`]`(r), c)`.
    pub fn jsonl(&mut self, out: &mut impl Write, r: &UsageRecord) -> io::Result<()> {
        let protocol = protocol_name(r.protocol);
        let c = self.covered;
        out.write_all(b"{")?;
        for (i, (key, value)) in usage_fields(r, self.time(r.ts), &protocol, c)
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.write_all(b",")?;
            }
            // The keys are plain ASCII: nothing to escape.
            out.write_all(b"\"")?;
            out.write_all(key.as_bytes())?;
            out.write_all(b"\":")?;
            match value {
                Field::Int(n) => write_int(out, *n)?,
                Field::UInt(n) => write_uint(out, *n)?,
                Field::Str(s) => serde_json::to_writer(&mut *out, s)?,
                Field::Null => out.write_all(b"null")?,
            }
        }
        out.write_all(b"}\n")
    }

    /// One row as a CSV line: the bytes of [`write_csv_row`] of
    /// [`with_covered`]`(`[`usage_record`]`(r), c)` under its own keys.
    pub fn csv(&mut self, out: &mut impl Write, r: &UsageRecord) -> io::Result<()> {
        let protocol = protocol_name(r.protocol);
        let c = self.covered;
        for (i, (_, value)) in usage_fields(r, self.time(r.ts), &protocol, c)
            .iter()
            .enumerate()
        {
            if i > 0 {
                out.write_all(b",")?;
            }
            match value {
                Field::Int(n) => write_int(out, *n)?,
                Field::UInt(n) => write_uint(out, *n)?,
                Field::Str(s) if s.contains([',', '"', '\n', '\r']) => {
                    write!(out, "\"{}\"", s.replace('"', "\"\""))?
                }
                Field::Str(s) => out.write_all(s.as_bytes())?,
                Field::Null => {}
            }
        }
        out.write_all(b"\n")
    }
}

/// `n` in decimal, as `Display` and serde_json write it (with serde_json's own formatter,
/// without the formatting machinery: a row of `export` has a dozen numbers).
fn write_uint(out: &mut impl Write, n: u64) -> io::Result<()> {
    out.write_all(itoa::Buffer::new().format(n).as_bytes())
}

fn write_int(out: &mut impl Write, n: i64) -> io::Result<()> {
    out.write_all(itoa::Buffer::new().format(n).as_bytes())
}

/// The keys of an `export` row, in order (the CSV header).
pub fn usage_keys() -> [&'static str; 24] {
    usage_fields(&UsageRecord::default(), None, "", &Covered::default()).map(|(k, _)| k)
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
    /// The element being written, reused.
    buf: Vec<u8>,
}

impl<W: Write> JsonArray<W> {
    /// Start the array (nothing is written before the first record or the end).
    pub fn new(out: W) -> JsonArray<W> {
        JsonArray {
            out,
            first: true,
            buf: Vec::new(),
        }
    }

    /// Write one record (a [`Record`], or a value that serializes as one) as the
    /// array's next element.
    pub fn push(&mut self, record: &impl serde::Serialize) -> io::Result<()> {
        // serde_json's pretty printer writes an element of an array one level in: the
        // element is an array of just it, less that array's "[\n" and "\n]".
        self.buf.clear();
        serde_json::to_writer_pretty(&mut self.buf, std::slice::from_ref(record))?;
        self.buf.truncate(self.buf.len() - 2);
        self.buf.drain(..2);
        self.write_element()
    }

    /// Write one `report` row as the array's next element: the bytes of [`Self::push`]
    /// of its record.
    pub fn push_period(&mut self, row: &PeriodJson) -> io::Result<()> {
        self.buf.clear();
        row.write_element(&mut self.buf)?;
        self.write_element()
    }

    /// The element in `buf`, after the array's opening or the comma before it.
    fn write_element(&mut self) -> io::Result<()> {
        let open: &[u8] = if self.first { b"[\n" } else { b",\n" };
        self.first = false;
        self.out.write_all(open)?;
        self.out.write_all(&self.buf)
    }

    /// Close the array and end the line; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let close: &[u8] = if self.first { b"[]\n" } else { b"\n]\n" };
        self.out.write_all(close)?;
        Ok(self.out)
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

    /// Export rows written field by field are the records' JSON lines and CSV lines to the
    /// byte: every field set and unset, text that JSON and CSV must escape, times of every
    /// kind (before 1970, after 9999, beyond chrono's range).
    #[test]
    fn export_rows_written_without_records_are_the_records_bytes() {
        let covered = Covered {
            since: 1_797_000_000,
            until: 1_797_003_600,
            asked_since: 1_797_000_017,
            asked_until: 1_797_003_600,
            since_step: Some(300),
            until_step: None,
            keys_from: None,
        };
        let text = |s: &str| Some(s.to_string());
        let full = UsageRecord {
            ts: 1_797_000_300,
            kind: "user".into(),
            uid: Some(1000),
            user: text("alice"),
            program: text("fire,fox \"nightly\"\n\u{1}é"),
            reason: text("no-socket"),
            protocol: 6,
            direction: text("out"),
            remote: "2001:db8::1".into(),
            port: 443,
            via: Some(0),
            container: text("docker-abc"),
            container_uid: Some(u32::MAX),
            cgroup: text("/system.slice/slurmstepd.scope/job_42/step_0"),
            unit: text("slurmstepd.scope"),
            job: Some(42),
            traffic: crate::account::Traffic {
                rx_bytes: u64::MAX / 2,
                tx_bytes: 7,
                rx_packets: 0,
                tx_packets: u64::MAX,
            },
        };
        let empty = UsageRecord {
            ts: -1,
            kind: "unattributed".into(),
            uid: None,
            user: None,
            program: None,
            reason: None,
            protocol: 250,
            direction: None,
            remote: String::new(),
            port: 0,
            via: None,
            container: None,
            container_uid: None,
            cgroup: None,
            unit: None,
            job: None,
            traffic: Default::default(),
        };
        let header = header_of(with_covered(usage_record(&empty), &covered));
        let header: Vec<&str> = header.iter().map(String::as_str).collect();
        let fields: Vec<&str> = usage_fields(&empty, None, "", &covered)
            .iter()
            .map(|(k, _)| *k)
            .collect();
        assert_eq!(fields, header);
        assert_eq!(usage_keys().to_vec(), header, "the CSV header");
        // One writer of each for all the rows: a time's text is kept from row to row.
        let (mut jsonl, mut csv) = (UsageWriter::new(&covered), UsageWriter::new(&covered));
        for ts in [
            1_797_000_300,
            1_797_000_300,
            -1,
            0,
            -62_167_219_201,
            253_402_300_800,
            i64::MAX,
        ] {
            for r in [&full, &empty] {
                let r = UsageRecord { ts, ..r.clone() };
                let record = with_covered(usage_record(&r), &covered);
                let (mut want, mut got) = (vec![], vec![]);
                write_jsonl(&mut want, std::slice::from_ref(&record)).unwrap();
                jsonl.jsonl(&mut got, &r).unwrap();
                assert_eq!(
                    String::from_utf8(got),
                    String::from_utf8(want),
                    "JSON, {ts}"
                );
                let (mut want, mut got) = (vec![], vec![]);
                write_csv_row(&mut want, &header, &record).unwrap();
                csv.csv(&mut got, &r).unwrap();
                assert_eq!(String::from_utf8(got), String::from_utf8(want), "CSV, {ts}");
            }
        }
    }

    /// A `report` row serialized as [`PeriodJson`] is its record to the byte, in a JSON
    /// array as `write_json` writes records.
    #[test]
    fn a_period_row_as_json_is_its_record_to_the_byte() {
        let c = Covered {
            since: -5,
            until: 1_797_003_600,
            ..Covered::default()
        };
        let rows = [
            PeriodRow {
                period: "2026-11-21 14:00".into(),
                uid: Some(1000),
                user: Some("al\"ice\n\u{7f}é".into()),
                traffic: Traffic {
                    rx_bytes: u64::MAX / 2,
                    tx_bytes: 3,
                    rx_packets: 0,
                    tx_packets: 7,
                },
            },
            PeriodRow {
                period: String::new(),
                uid: None,
                user: None,
                traffic: Traffic::default(),
            },
        ];
        let records: Vec<Record> = rows
            .iter()
            .map(|r| with_covered(period_record(r), &c))
            .collect();
        let mut expected = vec![];
        write_json(&mut expected, &records).unwrap();
        let mut array = JsonArray::new(vec![]);
        for r in &rows {
            array.push_period(&PeriodJson::new(r, &c)).unwrap();
        }
        let got = array.finish().unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

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
