//! `netledger setup`: make conntrack track and count in this network namespace, or undo
//! that (`--undo`).

use std::path::Path;

use anyhow::Result;

use crate::owner_mark::trust::MarkTrust;
use crate::prereq;

/// Apply (or undo) the prerequisites and say what changed; `owner_mark` installs the
/// owner-mark rules (else removes them).
pub fn run(undo: bool, owner_mark: bool) -> Result<()> {
    let proc_root = Path::new("/proc");
    // A disagreement kept by an earlier run is forgotten: setup (or undo) starts afresh.
    MarkTrust::rearm(proc_root);
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
    let needs = prereq::Needs {
        no_owner_mark: !owner_mark,
        ..Default::default()
    };
    let changes = prereq::setup_with(proc_root, needs)?;
    if owner_mark {
        if let Err(reason) = crate::owner_mark::ruleset_state() {
            eprintln!(
                "netledger: warning: {reason}: flows whose socket is gone are not charged by \
                 their mark"
            );
        }
    }
    // Said at every setup, not only when the rules are added: the admin who saves the
    // ruleset later must have heard it.
    let warning = owner_mark
        .then(crate::prereq::firewall::nft_version)
        .flatten()
        .and_then(crate::prereq::firewall::round_trip_warning);
    if let Some(w) = warning.filter(|w| !changes.contains(w)) {
        eprintln!("netledger: {w}");
    }
    if changes.is_empty() {
        eprintln!("netledger: already set up (accounting on, table inet netledger present)");
    }
    for c in changes {
        eprintln!("netledger: {c}");
    }
    Ok(())
}
