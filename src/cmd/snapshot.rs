//! `netledger snapshot`: one accounting pass, then exit.

use anyhow::Result;

use crate::attribute::LocalNets;
use crate::cli::{Cli, SnapshotArgs};
use crate::cmd::common;
use crate::pass::{run_pass, MarkTrust, PassConfig};
use crate::prereq;
use crate::store::{OpenOptions, Role, Store, StoreError};

/// Source rows one pass may roll up (a few tens of ms); a backlog clears over passes.
const ROLLUP_BUDGET: u64 = 50_000;

/// The local-network exclusion the flags ask for.
pub fn local_nets(args: &SnapshotArgs) -> LocalNets {
    if args.count_local {
        LocalNets::new([])
    } else if args.local_nets.is_empty() {
        LocalNets::defaults()
    } else {
        LocalNets::new(args.local_nets.iter().copied())
    }
}

/// Run one pass.
pub fn run(cli: &Cli, args: &SnapshotArgs) -> Result<()> {
    let proc_root = args.proc_root.as_path();
    let owner_mark = common::owner_mark(&cli.file);
    let needs = prereq::Needs {
        no_owner_mark: !owner_mark,
        ..Default::default()
    };
    for change in prereq::ensure_with(proc_root, !args.no_setup, needs)? {
        eprintln!("netledger: {change}");
    }
    let opened = Store::open(
        &cli.db,
        &OpenOptions {
            busy_timeout: args.lock_timeout,
            role: Role::Snapshot,
            ..OpenOptions::default()
        },
    );
    let mut store = match opened {
        // The timer and the daemon both enabled: the daemon charges every flow, so this
        // pass would only charge them twice. Not an error, said once per run.
        Err(e @ StoreError::DaemonRunning { .. }) => {
            if !cli.quiet {
                eprintln!("netledger: {e}");
            }
            return Ok(());
        }
        other => other?,
    };
    #[cfg(feature = "test-hooks")]
    {
        store.pause_before_commit = std::env::var("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
    }
    let (delegating, delegate_grace) = cli
        .file
        .delegation(&args.delegating_uids, args.delegate_grace)
        .map_err(anyhow::Error::msg)?;
    let cfg = PassConfig {
        proc_root: args.proc_root.clone(),
        nets: local_nets(args),
        prune_after: args.prune_after,
        delegating,
        delegate_grace,
        marks: MarkTrust::new(owner_mark, proc_root),
    };
    let outcome = run_pass(&mut store, &cfg, "snapshot")?;
    if !cli.quiet {
        eprintln!("{}", outcome.summary());
    }
    let retention = cli.file.retention().map_err(anyhow::Error::msg)?;
    let rolled = store.roll_up(outcome.record.started_at, &retention, ROLLUP_BUDGET)?;
    tracing::info!("retention: {rolled}");
    Ok(())
}
