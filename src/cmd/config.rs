//! `netledger config`: the settings in effect, or the documented default file.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use crate::cli::{Cli, ConfigArgs};
use crate::config::{FileConfig, DEFAULT_TOML};

/// Print the configuration.
pub fn run(cli: &Cli, args: &ConfigArgs) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if args.default {
        out.write_all(DEFAULT_TOML.as_bytes())?;
        return Ok(());
    }
    // The built-in defaults are the documented file's values, so they cannot drift apart.
    let d = FileConfig::parse(DEFAULT_TOML, Path::new("(built-in defaults)"))?;
    let f = &cli.file;
    let e = &cli.env;
    let nets = e
        .local_networks
        .as_ref()
        .or(f.local_networks.as_ref())
        .or(d.local_networks.as_ref())
        .map(|v| v.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>())
        .unwrap_or_default()
        .join(", ");
    let names = e.names.as_ref().or(f.names.as_ref()).or(d.names.as_ref());
    let dur = |v: Option<std::time::Duration>| v.map(short_duration).unwrap_or_default();
    let retention = f.retention().map_err(anyhow::Error::msg)?;
    writeln!(
        out,
        "# settings in effect (defaults < file < NETLEDGER_* < flags)"
    )?;
    writeln!(out, "db = \"{}\"", cli.db.display())?;
    writeln!(out, "local_networks = [{nets}]")?;
    writeln!(
        out,
        "names = \"{}\"",
        names.map(|p| p.display().to_string()).unwrap_or_default()
    )?;
    writeln!(
        out,
        "prune_after = {}",
        f.prune_after.or(d.prune_after).unwrap_or_default()
    )?;
    writeln!(
        out,
        "lock_timeout = \"{}\"",
        dur(f.lock_timeout.or(d.lock_timeout))
    )?;
    writeln!(out, "interval = \"{}\"", dur(f.interval.or(d.interval)))?;
    writeln!(
        out,
        "connection_log = {}",
        f.connection_log.or(d.connection_log).unwrap_or_default()
    )?;
    let (delegating, grace) = f.delegation(&[], None).map_err(anyhow::Error::msg)?;
    let uids: Vec<String> = delegating.uids().iter().map(u32::to_string).collect();
    writeln!(out, "delegating_uids = [{}]", uids.join(", "))?;
    writeln!(out, "delegate_grace = \"{}\"", short_duration(grace))?;
    if let Some(addr) = f.metrics_listen.or(d.metrics_listen) {
        writeln!(out, "metrics_listen = \"{addr}\"")?;
    }
    writeln!(out, "\n[retention]")?;
    writeln!(out, "raw = \"{}\"", dur(Some(retention.raw)))?;
    writeln!(out, "hourly = \"{}\"", dur(Some(retention.hourly)))?;
    writeln!(out, "hourly_top = {}", retention.hourly_top)?;
    match retention.daily {
        Some(keep) => writeln!(out, "daily = \"{}\"", dur(Some(keep)))?,
        None => writeln!(out, "daily = \"forever\"")?,
    }
    writeln!(
        out,
        "connections = \"{}\"",
        dur(Some(retention.connections))
    )?;
    out.flush()?;
    Ok(())
}

/// A duration in the largest whole unit (`90d`, `10s`), as the file is written.
fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
