//! `netledger report`: usage per period and user.

use std::io::Write;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::report::{self, table};
use crate::settings::{Format, Report, Settings};
use crate::store::query::PeriodRow;

/// Print usage per period.
pub fn run(s: &Settings, args: &Report) -> Result<()> {
    let (since, until) = (args.window.since, args.window.until);
    let mut store = open_for_reading(&s.db)?;
    // Months are billing cycles (`cycle_day`).
    store.set_cycle_day(args.cycle_day);
    let uid = args
        .user
        .as_deref()
        .map(|u| resolve_user(&store, u))
        .transpose()?;
    let rows = store.periods(args.period, since, until, uid, args.output.utc)?;
    let covered = store.covered(since, until, chrono::Utc::now().timestamp())?;
    let records: Vec<_> = rows
        .iter()
        .map(|r| report::with_covered(report::period_record(r), &covered))
        .collect();
    let mut out = std::io::stdout().lock();
    match args.output.format {
        Format::Json => report::write_json(&mut out, &records)?,
        Format::Csv => {
            let header = report::header_of(report::with_covered(
                report::period_record(&PeriodRow {
                    period: String::new(),
                    uid: None,
                    user: None,
                    traffic: Default::default(),
                }),
                &covered,
            ));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            report::write_csv(&mut out, &header, &records)?;
        }
        Format::Table => {
            out.write_all(table::covered_line(&covered, args.output.utc).as_bytes())?;
            out.write_all(table::period_table(&rows, args.output.bytes).as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}
