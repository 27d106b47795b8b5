//! `netledger top`: the top talkers in a period.

use std::io::Write;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::report::names::{RemoteNames, Services};
use crate::report::{self, table, Labels};
use crate::settings::{Format, Settings, Top};
use crate::store::query::{By, TopQuery, TopRow};

/// Print the top talkers.
pub fn run(s: &Settings, args: &Top) -> Result<()> {
    let (since, until) = (args.window.since, args.window.until);
    let store = open_for_reading(&s.db)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| resolve_user(&store, u))
        .transpose()?;
    let by = args.by.clone();
    let report = store.top(&TopQuery {
        since,
        until,
        by: by.clone(),
        uid,
        limit: args.limit,
    })?;
    let labels = Labels {
        remotes: RemoteNames::load(&args.names.path, args.names.required)?,
        services: if by.contains(&By::Port) {
            Services::system()
        } else {
            Services::default()
        },
    };
    // Grouped by what the daily tier does not keep, the part of the window after it.
    let mut covered = store.covered(
        report.keys_from.unwrap_or(since),
        until,
        chrono::Utc::now().timestamp(),
    )?;
    covered.asked_since = since;
    covered.keys_from = report.keys_from;
    let records: Vec<_> = report
        .rows
        .iter()
        .map(|r| report::with_covered(report::top_record(r, &by, &labels), &covered))
        .collect();
    let mut out = std::io::stdout().lock();
    match args.output.format {
        Format::Json => report::write_json(&mut out, &records)?,
        Format::Csv => {
            let header = report::header_of(report::with_covered(
                report::top_record(&empty_row(), &by, &labels),
                &covered,
            ));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            report::write_csv(&mut out, &header, &records)?;
        }
        Format::Table => {
            out.write_all(table::covered_line(&covered, args.output.utc).as_bytes())?;
            out.write_all(table::top_table(&report, &by, &labels, args.output.bytes).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

fn empty_row() -> TopRow {
    TopRow {
        uid: None,
        user: None,
        program: None,
        remote: None,
        protocol: None,
        port: None,
        reason: None,
        via: None,
        via_user: None,
        container: None,
        traffic: Default::default(),
    }
}
