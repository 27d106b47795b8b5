//! `netledger config`: the settings in effect, or the documented default file.

use std::io::Write;

use anyhow::Result;

use crate::config::DEFAULT_TOML;
use crate::settings::{ConfigShow, Settings};
use crate::store::metrics::UnitSeries;

/// Print the configuration.
pub fn run(s: &Settings, c: &ConfigShow) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if c.default {
        out.write_all(DEFAULT_TOML.as_bytes())?;
        return Ok(());
    }
    let d = &c.daemon;
    let nets: Vec<String> = d
        .pass
        .nets
        .nets()
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect();
    let dur = |v: std::time::Duration| short_duration(v);
    writeln!(
        out,
        "# settings in effect (defaults < file < NETLEDGER_* < flags)"
    )?;
    writeln!(out, "db = \"{}\"", s.db.display())?;
    writeln!(out, "local_networks = [{}]", nets.join(", "))?;
    writeln!(out, "names = \"{}\"", c.names.path.display())?;
    writeln!(out, "prune_after = {}", d.pass.prune_after)?;
    writeln!(out, "lock_timeout = \"{}\"", dur(d.lock_timeout))?;
    writeln!(out, "interval = \"{}\"", dur(d.interval))?;
    writeln!(out, "connection_log = {}", d.connection_log)?;
    writeln!(out, "connection_log_local = {}", d.log_limits.local)?;
    writeln!(out, "connection_log_rate = {}", d.log_limits.rate)?;
    writeln!(out, "connection_log_burst = {}", d.log_limits.burst)?;
    let uids: Vec<String> = d
        .pass
        .delegating
        .uids()
        .iter()
        .map(u32::to_string)
        .collect();
    writeln!(out, "delegating_uids = [{}]", uids.join(", "))?;
    writeln!(out, "delegate_grace = \"{}\"", dur(d.pass.delegate_grace))?;
    writeln!(out, "owner_mark = {}", d.pass.marks.enabled())?;
    if let Some(addr) = d.metrics_listen {
        writeln!(out, "metrics_listen = \"{addr}\"")?;
    }
    if let Some(path) = &c.metrics_textfile {
        writeln!(out, "metrics_textfile = \"{}\"", path.display())?;
    }
    writeln!(
        out,
        "metrics_textfile_mode = \"{:04o}\"",
        c.textfile_access.mode
    )?;
    if let Some(gid) = c.textfile_access.gid {
        writeln!(out, "metrics_textfile_group = {gid}")?;
    }
    let retention = &d.retention;
    match &d.metrics_units {
        UnitSeries::Off => {}
        UnitSeries::Top(n) => writeln!(out, "metrics_units = {n}")?,
        UnitSeries::Units(names) => {
            let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
            writeln!(out, "metrics_units = [{}]", names.join(", "))?;
        }
    }
    writeln!(out, "\n[retention]")?;
    writeln!(out, "raw = \"{}\"", dur(retention.raw))?;
    writeln!(out, "hourly = \"{}\"", dur(retention.hourly))?;
    writeln!(out, "hourly_top = {}", retention.hourly_top)?;
    match retention.daily {
        Some(keep) => writeln!(out, "daily = \"{}\"", dur(keep))?,
        None => writeln!(out, "daily = \"forever\"")?,
    }
    writeln!(out, "connections = \"{}\"", dur(retention.connections))?;
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
