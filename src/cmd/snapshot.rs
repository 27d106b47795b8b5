//! `netledger snapshot`: one accounting pass, then exit.

use anyhow::Result;

use super::common::{open_for_reading, write_textfile};
use crate::pass::run_pass;
use crate::prereq;
use crate::report::metrics::encode;
use crate::settings::{Settings, Snapshot};
use crate::store::{OpenOptions, Role, Store, StoreError};

/// Source rows one pass may roll up (a few tens of ms); a backlog clears over passes.
const ROLLUP_BUDGET: u64 = 50_000;

/// Run one pass, then write the metrics textfile if one is set.
pub fn run(s: &Settings, snap: &Snapshot) -> Result<()> {
    let a = &snap.accounting;
    let needs = prereq::Needs {
        no_owner_mark: !a.pass.marks.enabled(),
        ..Default::default()
    };
    for change in prereq::ensure_with(&a.pass.proc_root, a.setup, needs)? {
        eprintln!("netledger: {change}");
    }
    let opened = Store::open(
        &s.db,
        &OpenOptions {
            busy_timeout: a.lock_timeout,
            role: Role::Snapshot,
            ..OpenOptions::default()
        },
    );
    let mut store = match opened {
        // The timer and the daemon both enabled: the daemon charges every flow, so this
        // pass would only charge them twice. Not an error, said once per run.
        Err(e @ StoreError::DaemonRunning { .. }) => {
            if !s.quiet {
                eprintln!("netledger: {e}");
            }
            // The daemon keeps the database current: the textfile still follows it.
            if let Some(path) = &snap.metrics_textfile {
                write_metrics(&open_for_reading(&s.db)?, path)?;
            }
            return Ok(());
        }
        other => other?,
    };
    record_kept_gap(&mut store, &a.pass.proc_root, s.quiet)?;
    let outcome = run_pass(&mut store, &a.pass, "snapshot")?;
    if !s.quiet {
        eprintln!("{}", outcome.summary());
    }
    let rolled = store.roll_up(outcome.record.started_at, &a.retention, ROLLUP_BUDGET)?;
    tracing::info!("retention: {rolled}");
    // Quotas after the commit: the hook (waited for, so that it is not cut off when the
    // timer's service ends) and the view files.
    let mut watcher = crate::quota::Watcher::new(a.quota.clone(), false);
    for hook in watcher.after_commit(&mut store, outcome.record.started_at) {
        hook.wait();
    }
    if let Some(path) = &snap.metrics_textfile {
        write_metrics(&store, path)?;
    }
    Ok(())
}

/// The metrics of `store`, written to `path` for node_exporter's textfile collector.
fn write_metrics(store: &Store, path: &std::path::Path) -> Result<()> {
    let text = encode(&store.metrics()?, env!("CARGO_PKG_VERSION"), None);
    write_textfile(path, text.as_bytes())
}

/// The gaps setup found (its table deleted or re-created, accounting switched off, since
/// it last set up this namespace; kept in `/run` by `prereq`): each recorded once, with
/// how long accounting may have been off, at most since the last pass ended, and said in
/// one line.
fn record_kept_gap(store: &mut Store, proc_root: &std::path::Path, quiet: bool) -> Result<()> {
    let kept = crate::firewall::kept_gaps(proc_root);
    if kept.is_empty() {
        return Ok(());
    }
    let last = store.last_pass_end()?;
    for (cause, at) in kept {
        let what = match cause.as_str() {
            "table-gone" => {
                "nftables table inet netledger was gone (deleted: a `flush ruleset` or a \
                 firewall reload?) and was put back"
            }
            "acct-off" => {
                "conntrack accounting had been switched off (net.netfilter.nf_conntrack_acct=0: \
                 flows created then carry no counters) and was switched on again"
            }
            _ => "nftables table inet netledger had been deleted and made again",
        };
        let detail = match last {
            Some(l) => format!(
                "{what}: accounting may have been off for up to {} s, between the last pass \
                 ({}) and {}",
                (at - l).max(0),
                crate::firewall::utc(l),
                crate::firewall::utc(at)
            ),
            None => format!(
                "{what} at {}: accounting may have been off before (no earlier pass in this \
                 database)",
                crate::firewall::utc(at)
            ),
        };
        let gap = crate::firewall::Gap {
            cause,
            detected_at: at,
            off_ms: last.map(|l| (at - l).max(0) * 1000),
            detail,
        };
        if store.record_gap(&gap, true)? && !quiet {
            eprintln!("netledger: {}", gap.detail);
        }
    }
    Ok(())
}
