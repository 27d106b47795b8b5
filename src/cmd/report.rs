//! `netledger report`: usage per period and user.

use std::io::Write;

use anyhow::Result;

use super::common::{bounds, open_for_reading, resolve_user};
use crate::cli::{Cli, ReportArgs};
use crate::report::{self, table};
use crate::store::query::{Period, PeriodRow};

/// Print usage per period.
pub fn run(cli: &Cli, args: &ReportArgs) -> Result<()> {
    let default_since = match args.period {
        Period::Hour => "24h",
        Period::Day => "30d",
        Period::Week => "84d",
        Period::Month => "365d",
    };
    let since = args.since.as_deref().unwrap_or(default_since);
    let (since, until) = bounds(since, args.until.as_deref(), args.output.utc)?;
    let mut store = open_for_reading(cli)?;
    // Months are billing cycles (`cycle_day`).
    let cycle_day = match &cli.file.cycle_day {
        Some(d) => u8::try_from(*d.get_ref()).unwrap_or(1),
        None => 1,
    };
    store.set_cycle_day(cycle_day);
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
    if args.output.json {
        report::write_json(&mut out, &records)?;
    } else if args.output.csv {
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
    } else {
        out.write_all(table::covered_line(&covered, args.output.utc).as_bytes())?;
        out.write_all(table::period_table(&rows, args.output.bytes).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
