//! `netledger summary`: constat's daily overview. Per user, protocol, service (port name
//! from /etc/services) and remote (name from the lookup file): connections started that
//! day, how many are still open, and the average and longest duration of the finished
//! ones ([`crate::store::summary`]).
//!
//! The TCP connections the live conntrack table shows closed (TIME_WAIT, CLOSE) are
//! finished but not logged yet (see [`crate::live::waiting`]): counted in N and apart.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;
use chrono::{Days, Local, NaiveDate, TimeZone, Utc};

use crate::cli::{Cli, SummaryArgs};
use crate::cmd::common;
use crate::live::waiting::{self, Over, Waiting};
use crate::model::FlowKey;
use crate::report::names::{RemoteNames, Services, DEFAULT_NAMES};
use crate::report::{self, Labels};
use crate::timespec::parse_time;

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
    common::require_connection_log(&store)?;
    let (start, end, date) = day_bounds(&args.date, args.utc)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| common::resolve_user(&store, u))
        .transpose()?;
    let labels = labels(cli, args)?;
    // Still open: flows alive at the last sighting that began that day, unless the live
    // table shows them closed.
    let live = waiting::live_table().map(|d| waiting::waiting(&d, Utc::now().timestamp_millis()));
    let summary = store.day_summary(start, end, uid, &|key| closed(&live, key))?;
    if !cli.quiet {
        let live_error = live.as_ref().err().map(|e| e as &dyn std::fmt::Display);
        if let Some(note) = report::summary::summary_note(&summary, live_error, args.utc) {
            eprintln!("netledger: {note}");
        }
    }
    let mut names = common::UserNames::new(Some(&store));
    let mut user = |u| names.name(u);
    let mut out = std::io::stdout().lock();
    if args.json {
        let records = report::summary::summary_records(&summary, date, &labels, &mut user);
        report::write_json(&mut out, &records)?;
    } else {
        let table = report::summary::summary_table(&summary, date, &labels, &mut user);
        out.write_all(table.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// How the summary names remotes (the lookup file) and ports (/etc/services).
fn labels(cli: &Cli, args: &SummaryArgs) -> Result<Labels> {
    let (names_path, explicit): (PathBuf, bool) =
        match args.names.as_ref().or(cli.file.names.as_ref()) {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_NAMES), false),
        };
    Ok(Labels {
        remotes: RemoteNames::load(Path::new(&names_path), explicit)?,
        services: Services::system(),
    })
}

/// When the live table (if it could be read) shows `key` closed: `Some` with when its
/// entry expires.
fn closed<E>(live: &Result<HashMap<FlowKey, Waiting>, E>, key: &FlowKey) -> Option<Option<i64>> {
    live.as_ref().ok().and_then(|w| {
        w.get(key)
            .filter(|w| w.over == Over::ClosedTcp)
            .map(|w| w.expires_ms)
    })
}
