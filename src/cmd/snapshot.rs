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
                write_metrics(&open_for_reading(&s.db)?, path, snap)?;
            }
            return Ok(());
        }
        other => other?,
    };
    for line in crate::store::gaps::record_kept_gaps(&mut store, &a.pass.proc_root)? {
        if !s.quiet {
            eprintln!("netledger: {line}");
        }
    }
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
        write_metrics(&store, path, snap)?;
    }
    Ok(())
}

/// The metrics of `store` (with the units `snap` asks for), written to `path` for
/// node_exporter's textfile collector.
fn write_metrics(store: &Store, path: &std::path::Path, snap: &Snapshot) -> Result<()> {
    let now = chrono::Utc::now().timestamp();
    let data = store.metrics_with(&snap.metrics_units, now)?;
    let text = encode(&data, env!("CARGO_PKG_VERSION"), None);
    write_textfile(path, text.as_bytes(), snap.textfile_access)
}
