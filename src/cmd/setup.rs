//! `netledger setup`: make conntrack track and count in this network namespace, or undo
//! that (`--undo`).

use std::path::Path;

use anyhow::Result;

use crate::prereq;

/// Apply (or undo) the prerequisites and say what changed.
pub fn run(undo: bool) -> Result<()> {
    let proc_root = Path::new("/proc");
    if undo {
        let done = prereq::undo(proc_root)?;
        if done.is_empty() {
            eprintln!(
                "netledger: nothing to undo: no table inet netledger, and no sysctl changed by \
                 netledger in this network namespace"
            );
        }
        for d in done {
            eprintln!("netledger: {d}");
        }
        return Ok(());
    }
    let changes = prereq::setup(proc_root)?;
    if changes.is_empty() {
        eprintln!("netledger: already set up (accounting on, table inet netledger present)");
    }
    for c in changes {
        eprintln!("netledger: {c}");
    }
    Ok(())
}
