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
    let covered = store.covered(since, until, chrono::Utc::now().timestamp())?;
    let record = |r: &PeriodRow| report::with_covered(report::period_record(r), &covered);
    let (period, utc) = (args.period, args.output.utc);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Rows are written as they are read.
    match args.output.format {
        Format::Json => {
            let mut array = report::JsonArray::new(&mut out);
            store.periods_each(period, since, until, uid, utc, |r| {
                array.push(&report::PeriodJson::new(&r, &covered))?;
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
        // The table aligns its columns over all rows: they are read twice (measured,
        // then written), in one read transaction so that both reads see the same rows.
        Format::Table => store.in_one_read(|store| {
            let mut t = table::PeriodTable::new(args.output.bytes);
            store.periods_each(period, since, until, uid, utc, |r| {
                t.measure(&r);
                anyhow::Ok(())
            })?;
            out.write_all(table::covered_line(&covered, utc).as_bytes())?;
            out.write_all(t.head().as_bytes())?;
            store.periods_each(period, since, until, uid, utc, |r| {
                out.write_all(t.row(&r).as_bytes())?;
                anyhow::Ok(())
            })?;
            out.write_all(t.foot().as_bytes())?;
            anyhow::Ok(())
        })?,
    }
    out.flush()?;
    Ok(())
}
