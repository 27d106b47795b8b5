//! `netledger setup`: make conntrack track and count in this network namespace.

use std::path::Path;

use anyhow::Result;

use crate::prereq;

/// Apply the prerequisites and say what changed.
pub fn run() -> Result<()> {
    let changes = prereq::setup(Path::new("/proc"))?;
    if changes.is_empty() {
        eprintln!("netledger: already set up (accounting on, table inet netledger present)");
    }
    for c in changes {
        eprintln!("netledger: {c}");
    }
    Ok(())
}
