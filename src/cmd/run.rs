//! `netledger run`: the daemon, with the settings resolved at start and again from the
//! configuration file on SIGHUP.

use anyhow::Result;

use crate::daemon;
use crate::settings::{Run, Settings};

/// Run the daemon until SIGTERM/SIGINT.
pub fn run(s: &Settings, r: &Run) -> Result<()> {
    daemon::run(&s.db, r.daemon.clone(), || Ok(r.reload.reload()?))
}
