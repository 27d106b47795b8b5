//! `netledger export`: stored usage rows as JSON Lines or CSV.

use std::io::Write;

use anyhow::Result;

use super::common::open_for_reading;
use crate::cli::ExportFormat;
use crate::report;
use crate::settings::{Export, Settings};

/// Write the usage rows of a period to stdout.
pub fn run(s: &Settings, args: &Export) -> Result<()> {
    let (since, until) = (args.window.since, args.window.until);
    let store = open_for_reading(&s.db)?;
    let covered = store.covered(since, until, chrono::Utc::now().timestamp())?;
    // Each row is written as it is read: a busy host stores over a million a day.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = report::UsageWriter::new(&covered);
    match args.format {
        ExportFormat::Jsonl => store.usage_rows_each(since, until, |r| {
            rows.jsonl(&mut out, &r)?;
            anyhow::Ok(())
        })?,
        ExportFormat::Csv => {
            report::write_csv_header(&mut out, &report::usage_keys())?;
            store.usage_rows_each(since, until, |r| {
                rows.csv(&mut out, &r)?;
                anyhow::Ok(())
            })?;
        }
    }
    out.flush()?;
    Ok(())
}
