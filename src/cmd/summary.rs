//! `netledger summary`: constat's daily overview. Per user, protocol, service (port name
//! from /etc/services) and remote (name from the lookup file): connections started that
//! day, how many are still open, and the average and longest duration of the finished
//! ones.
//!
//! Finished connections come from the connection log (the daemon's); open ones from the
//! saved flow state, i.e. the flows the last pass or event saw alive, less the TCP
//! connections the live conntrack table shows closed (TIME_WAIT, CLOSE): those are
//! finished but not logged yet (see [`crate::cmd::waiting`]), counted in N and apart.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{Days, Local, NaiveDate, TimeZone, Utc};
use serde_json::json;

use crate::attribute::Direction;
use crate::cli::{Cli, SummaryArgs};
use crate::cmd::common;
use crate::cmd::waiting;
use crate::report::names::{protocol_name, RemoteNames, Services, DEFAULT_NAMES};
use crate::timespec::parse_time;

/// A summary row's grouping key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Owner (None: unknown).
    pub uid: Option<u32>,
    /// IP protocol number.
    pub protocol: u8,
    /// Service port (remote port of outgoing connections, local of incoming).
    pub port: u16,
    /// Remote address.
    pub remote: String,
}

/// A summary row's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Connections started that day (finished or still open).
    pub count: u64,
    /// Of those, still open.
    pub open: u64,
    /// Of those, closed but not in the log yet (their conntrack entries linger): no
    /// duration yet.
    pub pending: u64,
    /// Sum of the finished ones' durations, ms.
    pub total_ms: i64,
    /// Longest finished duration, ms.
    pub max_ms: i64,
    /// Bytes received and sent by the finished ones.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

impl Row {
    /// Average duration of the logged connections, seconds.
    pub fn avg_seconds(&self) -> f64 {
        let finished = self.count - self.open - self.pending;
        if finished == 0 {
            0.0
        } else {
            self.total_ms as f64 / finished as f64 / 1000.0
        }
    }
}

/// `[start, end)` of the day `spec` names, epoch seconds (23 or 25 hours across DST).
fn day_bounds(spec: &str, utc: bool) -> Result<(i64, i64, NaiveDate)> {
    let now = Utc::now();
    let start = parse_time(spec, now, utc)?;
    let date = if utc {
        Utc.timestamp_opt(start, 0).single().map(|t| t.date_naive())
    } else {
        Local
            .timestamp_opt(start, 0)
            .single()
            .map(|t| t.date_naive())
    }
    .ok_or_else(|| {
        anyhow::anyhow!("cannot read date {spec:?}: use a date (2026-11-01), today or yesterday")
    })?;
    let next = date
        .checked_add_days(Days::new(1))
        .ok_or_else(|| anyhow::anyhow!("date {spec:?} is out of range"))?;
    let day_start = parse_time(&date.format("%Y-%m-%d").to_string(), now, utc)?;
    let day_end = parse_time(&next.format("%Y-%m-%d").to_string(), now, utc)?;
    Ok((day_start, day_end, date))
}

/// Print the summary.
pub fn run(cli: &Cli, args: &SummaryArgs) -> Result<()> {
    let store = common::open_for_reading(cli)?;
    if !store.has_connection_log()? {
        anyhow::bail!(
            "{} has no connection log yet: it is written by `netledger run` (any netledger \
             command that writes, such as `snapshot`, upgrades the database)",
            cli.db.display()
        );
    }
    let (start, end, date) = day_bounds(&args.date, args.utc)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| common::resolve_user(&store, u))
        .transpose()?;
    let (names_path, explicit): (PathBuf, bool) =
        match args.names.as_ref().or(cli.file.names.as_ref()) {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_NAMES), false),
        };
    let remotes = RemoteNames::load(Path::new(&names_path), explicit)?;
    let services = Services::system();

    let mut rows: BTreeMap<Key, Row> = BTreeMap::new();
    // Finished: started that day, ended then or later.
    for c in store.connection_log(start * 1000, i64::MAX)? {
        if c.start_ms < start * 1000 || c.start_ms >= end * 1000 {
            continue;
        }
        if uid.is_some() && c.uid != uid {
            continue;
        }
        let (remote, port) = match c.direction {
            Some(Direction::In) => (c.orig.src, c.reply.sport),
            _ => (c.orig.dst, c.orig.dport),
        };
        let t = crate::cmd::connections::traffic(c.orig_counters, c.reply_counters, c.direction);
        let r = rows
            .entry(Key {
                uid: c.uid,
                protocol: c.orig.proto,
                port,
                remote: remote.to_string(),
            })
            .or_default();
        r.count += 1;
        r.total_ms += c.duration_ms();
        r.max_ms = r.max_ms.max(c.duration_ms());
        r.rx_bytes += t.rx_bytes;
        r.tx_bytes += t.tx_bytes;
    }
    // Still open: flows alive at the last sighting that began that day, unless the live
    // table shows them closed.
    let now_ms = Utc::now().timestamp_millis();
    let live = waiting::live_table().map(|d| waiting::waiting(&d, now_ms));
    let (mut pending, mut pending_until) = (0u64, None::<i64>);
    for s in store.load_state()?.values() {
        if s.missing > 0 || s.first_seen < start || s.first_seen >= end {
            continue;
        }
        let closed = live.as_ref().ok().and_then(|w| {
            w.get(&s.key)
                .filter(|w| w.over == waiting::Over::ClosedTcp)
                .map(|w| w.expires_ms)
        });
        let owner = s.attribution.as_ref();
        if uid.is_some() && owner.map(|a| a.uid) != uid {
            continue;
        }
        let o = &s.key.orig;
        // Only the original tuple is saved: an incoming flow's service port is its
        // pre-NAT destination port.
        let remote = match owner.map(|a| a.direction) {
            Some(Direction::In) => o.src,
            _ => o.dst,
        };
        let r = rows
            .entry(Key {
                uid: owner.map(|a| a.uid),
                protocol: o.proto,
                port: o.dport,
                remote: remote.to_string(),
            })
            .or_default();
        r.count += 1;
        match closed {
            Some(expires) => {
                r.pending += 1;
                pending += 1;
                pending_until = pending_until.max(expires);
            }
            None => r.open += 1,
        }
    }
    if !cli.quiet {
        match &live {
            Ok(_) if pending > 0 => eprintln!(
                "netledger: {pending} of these connections are closed but not logged yet \
                 (counted in N, not in OPEN, AVGTM or MAXTM){}",
                pending_until.map_or(String::new(), |ms| format!(
                    "; their conntrack entries expire by {}",
                    waiting::clock(ms, args.utc)
                ))
            ),
            Err(e) if rows.values().any(|r| r.open > 0) => eprintln!(
                "netledger: OPEN counts every flow the last pass saw alive, TCP connections \
                 closed since (TIME_WAIT) included; to leave those out, {e}"
            ),
            _ => {}
        }
    }

    let user = |uid: Option<u32>| -> String {
        match uid {
            None => "-".into(),
            Some(u) => store
                .user_name(u)
                .ok()
                .flatten()
                .or_else(|| {
                    users::get_user_by_uid(u).map(|x| x.name().to_string_lossy().into_owned())
                })
                .unwrap_or_else(|| u.to_string()),
        }
    };
    let service = |k: &Key| {
        services
            .name(k.protocol, k.port)
            .map_or_else(|| k.port.to_string(), str::to_string)
    };
    let remote = |k: &Key| remotes.name(&k.remote).unwrap_or(&k.remote).to_string();
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = rows
            .iter()
            .map(|(k, r)| {
                json!({
                    "date": date.format("%Y-%m-%d").to_string(),
                    "uid": k.uid,
                    "user": k.uid.map(|u| user(Some(u))),
                    "protocol": protocol_name(k.protocol),
                    "port": k.port,
                    "service": service(k),
                    "remote": k.remote,
                    "remote_name": remotes.name(&k.remote),
                    "count": r.count,
                    "open": r.open,
                    "pending": r.pending,
                    "avg_seconds": (r.avg_seconds() * 10.0).round() / 10.0,
                    "max_seconds": r.max_ms / 1000,
                    "rx_bytes": r.rx_bytes,
                    "tx_bytes": r.tx_bytes,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    writeln!(out, "connections started on {}", date.format("%Y-%m-%d"))?;
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|(k, r)| {
            [
                user(k.uid),
                protocol_name(k.protocol),
                service(k),
                remote(k),
                r.count.to_string(),
                r.open.to_string(),
                format!("{:.1}", r.avg_seconds()),
                (r.max_ms / 1000).to_string(),
            ]
        })
        .collect();
    let header = [
        "USER", "PROT", "SERVICE", "REMOTE", "N", "OPEN", "AVGTM", "MAXTM",
    ];
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &table {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .enumerate()
            .map(|(i, (c, w))| {
                if i >= 4 {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        parts.join("  ").trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &table {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    out.flush()?;
    Ok(())
}
