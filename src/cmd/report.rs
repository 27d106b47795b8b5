//! `netledger report`: usage per period and user.

use std::io::Write;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::report::{self, table};
use crate::settings::{Format, Report, Settings};
use crate::store::query::{Covered, PeriodRow};
use crate::store::Store;

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
    let covered = store.covered(since, until, chrono::Utc::now().timestamp())?;
    let record = |r: &PeriodRow| report::with_covered(report::period_record(r), &covered);
    let (period, utc) = (args.period, args.output.utc);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Rows are written as they are read (the table's: see `table`).
    match args.output.format {
        Format::Json => {
            let mut array = report::JsonArray::new(&mut out);
            store.periods_each(period, since, until, uid, utc, |r| {
                array.push_period(&report::PeriodJson::new(&r, &covered))?;
                anyhow::Ok(())
            })?;
            array.finish()?;
        }
        Format::Csv => {
            let header = report::header_of(record(&PeriodRow {
                period: String::new(),
                uid: None,
                user: None,
                traffic: Default::default(),
            }));
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            report::write_csv_header(&mut out, &header)?;
            store.periods_each(period, since, until, uid, utc, |r| {
                report::write_csv_row(&mut out, &header, &record(&r))?;
                anyhow::Ok(())
            })?;
        }
        Format::Table => table(&store, args, uid, &covered, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// The most bytes of rows `report`'s table keeps to write them without reading them again
/// ([`table::write_period_table`]): a year of days for 200 users is about 7 MiB.
const KEPT_BYTES: usize = 16 << 20;

/// The table, its rows read in one read transaction (when they are read twice, both reads
/// see the same rows).
fn table(
    store: &Store,
    args: &Report,
    uid: Option<u32>,
    covered: &Covered,
    out: &mut impl Write,
) -> Result<()> {
    let (since, until) = (args.window.since, args.window.until);
    let (period, utc) = (args.period, args.output.utc);
    let first = table::covered_line(covered, utc);
    store.in_one_read(|store| {
        table::write_period_table(out, &first, args.output.bytes, KEPT_BYTES, |f| {
            store.periods_each(period, since, until, uid, utc, f)
        })
    })
}
