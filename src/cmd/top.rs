//! `netledger top`: the top talkers in a period.

use std::io::Write;

use anyhow::Result;

use crate::cli::{Cli, TopArgs};
use crate::report;
use crate::store::query::TopQuery;
use crate::store::{OpenOptions, Store};
use crate::timespec::parse_time;

/// Print the top talkers.
pub fn run(cli: &Cli, args: &TopArgs) -> Result<()> {
    let now = chrono::Utc::now();
    let since = parse_time(&args.since, now, args.utc)?;
    let until = match &args.until {
        Some(u) => parse_time(u, now, args.utc)?,
        // Rows are stamped with their pass's start: include the current second.
        None => now.timestamp() + 1,
    };
    let store = Store::open(
        &cli.db,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    )?;
    let report = store.top(&TopQuery {
        since,
        until,
        by: args.by,
        limit: args.limit,
    })?;
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report::top_json(&report, args.by))?;
        writeln!(out)?;
    } else {
        out.write_all(report::table::top_table(&report, args.by, args.bytes).as_bytes())?;
    }
    out.flush()?;
    Ok(())
}
