//! `summary`'s output: a day's connections per user, protocol, service and remote
//! ([`crate::store::summary`]) as records (`--json`) or a table, and the note on stderr
//! about the connections closed but not logged yet. Pure: user names come from the caller.

use std::fmt::Display;

use chrono::NaiveDate;
use serde_json::json;

use super::log::clock;
use super::names::protocol_name;
use super::table::Table;
use super::{object, JsonArray, Labels, Record};
use crate::store::summary::{DaySummary, Key};

fn service(k: &Key, labels: &Labels) -> String {
    labels
        .services
        .name(k.protocol, k.port)
        .map_or_else(|| k.port.to_string(), str::to_string)
}

/// The summary's rows as records (`summary --json`); `user` names a uid.
pub fn summary_records(
    s: &DaySummary,
    date: NaiveDate,
    labels: &Labels,
    user: &mut dyn FnMut(u32) -> String,
) -> Vec<Record> {
    s.rows
        .iter()
        .map(|(k, r)| {
            object(json!({
                "date": date.format("%Y-%m-%d").to_string(),
                "uid": k.uid,
                "user": k.uid.map(&mut *user),
                "protocol": protocol_name(k.protocol),
                "port": k.port,
                "service": service(k, labels),
                "remote": k.remote,
                "remote_name": labels.remotes.name(&k.remote),
                "count": r.count,
                "open": r.open,
                "pending": r.pending,
                "avg_seconds": (r.avg_seconds() * 10.0).round() / 10.0,
                "max_seconds": r.max_ms / 1000,
                "rx_bytes": r.rx_bytes,
                "tx_bytes": r.tx_bytes,
            }))
        })
        .collect()
}

/// One summary row as JSON: the fields of a [`summary_records`] record in its order,
/// serialized without building the record (a busy day has thousands of rows).
#[derive(serde::Serialize)]
struct SummaryJson<'a> {
    date: &'a str,
    uid: Option<u32>,
    user: Option<String>,
    protocol: String,
    port: u16,
    service: String,
    remote: &'a str,
    remote_name: Option<&'a str>,
    count: u64,
    open: u64,
    pending: u64,
    avg_seconds: f64,
    max_seconds: i64,
    rx_bytes: u64,
    tx_bytes: u64,
}

/// `summary --json`: the bytes of [`write_json`](super::write_json) of
/// [`summary_records`], written a row at a time.
pub fn write_summary_json(
    out: &mut impl std::io::Write,
    s: &DaySummary,
    date: NaiveDate,
    labels: &Labels,
    user: &mut dyn FnMut(u32) -> String,
) -> std::io::Result<()> {
    let date = date.format("%Y-%m-%d").to_string();
    let mut array = JsonArray::new(out);
    for (k, r) in &s.rows {
        array.push(&SummaryJson {
            date: &date,
            uid: k.uid,
            user: k.uid.map(&mut *user),
            protocol: protocol_name(k.protocol).into_owned(),
            port: k.port,
            service: service(k, labels),
            remote: &k.remote,
            remote_name: labels.remotes.name(&k.remote),
            count: r.count,
            open: r.open,
            pending: r.pending,
            avg_seconds: (r.avg_seconds() * 10.0).round() / 10.0,
            max_seconds: r.max_ms / 1000,
            rx_bytes: r.rx_bytes,
            tx_bytes: r.tx_bytes,
        })?;
    }
    array.finish()?;
    Ok(())
}

/// The summary as a title line and a table: count, still open, average and longest
/// duration in seconds.
pub fn summary_table(
    s: &DaySummary,
    date: NaiveDate,
    labels: &Labels,
    user: &mut dyn FnMut(u32) -> String,
) -> String {
    let header = [
        "USER", "PROT", "SERVICE", "REMOTE", "N", "OPEN", "AVGTM", "MAXTM",
    ];
    let mut t = Table::new(header.map(String::from).to_vec(), 4);
    for (k, r) in &s.rows {
        t.push(vec![
            k.uid.map_or_else(|| "-".into(), &mut *user),
            protocol_name(k.protocol).into_owned(),
            service(k, labels),
            labels
                .remotes
                .name(&k.remote)
                .unwrap_or(&k.remote)
                .to_string(),
            r.count.to_string(),
            r.open.to_string(),
            format!("{:.1}", r.avg_seconds()),
            (r.max_ms / 1000).to_string(),
        ]);
    }
    format!(
        "connections started on {}\n{}",
        date.format("%Y-%m-%d"),
        t.render()
    )
}

/// What `summary` says on stderr (pure): how many connections are closed but not logged
/// yet and when their entries expire; or, when the live table could not be read
/// (`live_error`) and some flows count as open, that TIME_WAIT ones may be among them.
pub fn summary_note(s: &DaySummary, live_error: Option<&dyn Display>, utc: bool) -> Option<String> {
    match live_error {
        None if s.pending > 0 => Some(format!(
            "{} of these connections are closed but not logged yet \
             (counted in N, not in OPEN, AVGTM or MAXTM){}",
            s.pending,
            s.pending_until.map_or(String::new(), |ms| format!(
                "; their conntrack entries expire by {}",
                clock(ms, utc)
            ))
        )),
        Some(e) if s.rows.values().any(|r| r.open > 0) => Some(format!(
            "OPEN counts every flow the last pass saw alive, TCP connections \
             closed since (TIME_WAIT) included; to leave those out, {e}"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::summary::Row;

    fn summary(open: u64, pending: u64, pending_until: Option<i64>) -> DaySummary {
        let mut s = DaySummary {
            pending,
            pending_until,
            ..DaySummary::default()
        };
        let key = Key {
            uid: Some(1001),
            protocol: 6,
            port: 443,
            remote: "198.51.100.2".into(),
        };
        s.rows.insert(
            key,
            Row {
                count: open + pending,
                open,
                pending,
                ..Row::default()
            },
        );
        s
    }

    /// `summary --json` written a row at a time is the records' JSON to the byte: users
    /// named and not, the unknown owner, names that JSON escapes, averages of every kind.
    #[test]
    fn the_summary_as_json_is_its_records_to_the_byte() {
        let mut s = DaySummary::default();
        for i in 0..40u64 {
            let key = Key {
                uid: [None, Some(0), Some(1001), Some(u32::MAX)][(i % 4) as usize],
                protocol: [6, 17, 1, 58, 132][(i % 5) as usize],
                port: [443, 0, 65535, 22][(i % 4) as usize],
                remote: ["198.51.100.2", "2001:db8::1", "203.0.113.9"][(i % 3) as usize].into(),
            };
            let count = i * 7 + 1;
            let row = Row {
                count,
                open: i % 3,
                pending: (i % 2).min(count - i % 3),
                total_ms: (i as i64) * 12_345 - 3,
                max_ms: (i as i64) * 9_999,
                rx_bytes: u64::MAX / (i + 1),
                tx_bytes: i,
            };
            s.rows.insert(key, row);
        }
        let date = NaiveDate::from_ymd_opt(2026, 12, 31).unwrap();
        let labels = Labels::default();
        let mut name = |u: u32| match u {
            0 => "root".to_string(),
            u => format!("u\"{u}\n\u{1}é"),
        };
        let mut want = vec![];
        crate::report::write_json(&mut want, &summary_records(&s, date, &labels, &mut name))
            .unwrap();
        let mut got = vec![];
        write_summary_json(&mut got, &s, date, &labels, &mut name).unwrap();
        assert_eq!(
            String::from_utf8(got).unwrap(),
            String::from_utf8(want).unwrap()
        );
        let (mut empty, mut none) = (vec![], vec![]);
        let nothing = DaySummary::default();
        crate::report::write_json(
            &mut none,
            &summary_records(&nothing, date, &labels, &mut name),
        )
        .unwrap();
        write_summary_json(&mut empty, &nothing, date, &labels, &mut name).unwrap();
        assert_eq!(empty, none);
    }

    #[test]
    fn the_note_says_what_is_pending_or_why_open_may_include_closed_ones() {
        let pending = summary(1, 2, Some(1_773_144_000_000));
        assert_eq!(
            summary_note(&pending, None, true).unwrap(),
            "2 of these connections are closed but not logged yet (counted in N, not in \
             OPEN, AVGTM or MAXTM); their conntrack entries expire by 12:00:00"
        );
        assert_eq!(summary_note(&summary(1, 0, None), None, true), None);
        let e = "run it as root";
        let text = summary_note(&summary(1, 0, None), Some(&e), true).unwrap();
        assert!(
            text.starts_with("OPEN counts every flow the last pass saw alive")
                && text.ends_with("to leave those out, run it as root"),
            "{text}"
        );
        assert_eq!(summary_note(&summary(0, 0, None), Some(&e), true), None);
    }
}
