//! `netledger run`: the daemon's settings from the flags and the configuration file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::attribute::LocalNets;
use crate::cli::{Cli, RunArgs};
use crate::cmd::common;
use crate::config::{FileConfig, DEFAULT_CONFIG};
use crate::daemon::{self, DaemonConfig};
use crate::pass::{MarkTrust, PassConfig};

/// The default pass interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Events that make a flush at once, whatever the flush interval.
const FLUSH_EVENTS: usize = 5000;
/// Largest event receive buffer the daemon grows to after overruns.
const MAX_EVENT_BUFFER: usize = 64 << 20;

/// The daemon's settings: a flag (or its environment variable) wins over the file, the
/// file over the built-in default.
pub fn config(cli: &Cli, args: &RunArgs, file: &FileConfig) -> Result<DaemonConfig> {
    let nets = if args.count_local {
        LocalNets::new([])
    } else if !args.local_nets.is_empty() {
        LocalNets::new(args.local_nets.iter().copied())
    } else if let Some(nets) = &file.local_networks {
        LocalNets::new(nets.iter().copied())
    } else {
        LocalNets::defaults()
    };
    let retention = file.retention().map_err(anyhow::Error::msg)?;
    let (delegating, delegate_grace) = file
        .delegation(&args.delegating_uids, args.delegate_grace)
        .map_err(anyhow::Error::msg)?;
    Ok(DaemonConfig {
        pass: PassConfig {
            proc_root: args.proc_root.clone(),
            nets,
            prune_after: args.prune_after.or(file.prune_after).unwrap_or(3),
            delegating,
            delegate_grace,
            marks: MarkTrust::new(common::owner_mark(file), &args.proc_root),
        },
        interval: args.interval.or(file.interval).unwrap_or(DEFAULT_INTERVAL),
        flush_interval: args.flush_interval,
        flush_events: FLUSH_EVENTS,
        connection_log: !args.no_connection_log && file.connection_log.unwrap_or(true),
        event_buffer: args.event_buffer,
        max_event_buffer: MAX_EVENT_BUFFER,
        setup: !args.no_setup,
        lock_timeout: args
            .lock_timeout
            .or(file.lock_timeout)
            .unwrap_or(Duration::from_secs(5)),
        quiet: cli.quiet,
        retention,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
    })
}

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let cfg = config(cli, args, &cli.file)?;
    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    daemon::run(&cli.db, cfg, || {
        let file = FileConfig::load(&path, explicit)?;
        config(cli, args, &file)
    })
}
