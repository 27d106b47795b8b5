//! `netledger summary`: constat's daily overview. Per user, protocol, service (port name
//! from /etc/services) and remote (name from the lookup file): connections started that
//! day, how many are still open, and the average and longest duration of the finished
//! ones ([`crate::store::summary`]).
//!
//! The TCP connections the live conntrack table shows closed (TIME_WAIT, CLOSE) are
//! finished but not logged yet (see [`crate::live::waiting`]): counted in N and apart.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use chrono::Utc;

use crate::cmd::common;
use crate::live::waiting::{self, Over, Waiting};
use crate::model::FlowKey;
use crate::report::names::{RemoteNames, Services};
use crate::report::{self, Labels};
use crate::settings::{Settings, Summary};

/// Print the summary.
pub fn run(s: &Settings, args: &Summary) -> Result<()> {
    let store = common::open_for_reading(&s.db)?;
    common::require_connection_log(&store)?;
    let (start, end, date) = (args.window.since, args.window.until, args.date);
    let uid = args
        .user
        .as_deref()
        .map(|u| common::resolve_user(&store, u))
        .transpose()?;
    let labels = Labels {
        remotes: RemoteNames::load(&args.names.path, args.names.required)?,
        services: Services::system(),
    };
    // Still open: flows alive at the last sighting that began that day, unless the live
    // table shows them closed.
    let live = waiting::live_table().map(|d| waiting::waiting(&d, Utc::now().timestamp_millis()));
    let summary = store.day_summary(start, end, uid, &|key| closed(&live, key))?;
    if !s.quiet {
        let live_error = live.as_ref().err().map(|e| e as &dyn std::fmt::Display);
        if let Some(note) = report::summary::summary_note(&summary, live_error, args.utc) {
            eprintln!("netledger: {note}");
        }
    }
    let mut names = common::UserNames::new(Some(&store));
    let mut user = |u| names.name(u);
    // Buffered: stdout alone writes each line apart, and `--json` is a line a field.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if args.json {
        report::summary::write_summary_json(&mut out, &summary, date, &labels, &mut user)?;
    } else {
        let table = report::summary::summary_table(&summary, date, &labels, &mut user);
        out.write_all(table.as_bytes())?;
    }
    out.flush()?;
    Ok(())
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
