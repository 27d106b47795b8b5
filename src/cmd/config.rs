//! `netledger config`: the settings in effect, or the documented default file.

use std::io::Write;

use anyhow::Result;

use crate::cli::{Cli, ConfigArgs};
use crate::config::DEFAULT_TOML;

/// Print the configuration.
pub fn run(cli: &Cli, args: &ConfigArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.default {
        out.write_all(DEFAULT_TOML.as_bytes())?;
        return Ok(());
    }
    let f = &cli.file;
    let nets = |v: &Option<Vec<ipnet::IpNet>>| match v {
        Some(v) => format!(
            "[{}]",
            v.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "(defaults)".into(),
    };
    // The effective values that do not depend on a subcommand's flags.
    writeln!(
        out,
        "# settings in effect (defaults < file < NETLEDGER_* < flags)"
    )?;
    writeln!(out, "db = \"{}\"", cli.db.display())?;
    writeln!(out, "local_networks = {}", nets(&f.local_networks))?;
    let or = |v: Option<String>, d: &str| v.unwrap_or_else(|| d.to_string());
    writeln!(
        out,
        "names = \"{}\"",
        or(
            f.names.as_ref().map(|p| p.display().to_string()),
            crate::report::names::DEFAULT_NAMES
        )
    )?;
    writeln!(out, "prune_after = {}", f.prune_after.unwrap_or(3))?;
    let dur = |d: Option<std::time::Duration>, dflt: &str| {
        d.map(|d| humantime::format_duration(d).to_string())
            .unwrap_or_else(|| dflt.to_string())
    };
    writeln!(out, "lock_timeout = \"{}\"", dur(f.lock_timeout, "5s"))?;
    writeln!(out, "interval = \"{}\"", dur(f.interval, "10s"))?;
    writeln!(out, "connection_log = {}", f.connection_log.unwrap_or(true))?;
    out.flush()?;
    Ok(())
}
