//! `netledger job ID`: what one Slurm job moved, in and out, per user and remote — the
//! traffic of the sockets created in its cgroups (`…slurmstepd.scope/job_ID/…`), for a
//! prolog or epilog script or `sacct`-like use.

use anyhow::Result;

use super::common::{open_for_reading, print_top, resolve_cgroups};
use crate::report::names::{RemoteNames, Services};
use crate::report::Labels;
use crate::settings::{Job, Settings};
use crate::store::by_cgroup::Only;
use crate::store::query::{By, TopQuery};

/// Every row: a job talks to few remotes, and a script wants them all.
const ROWS: usize = 1_000_000;

/// Print the job's traffic; an error (exit 1) when the database knows no socket of it.
pub fn run(s: &Settings, args: &Job) -> Result<()> {
    let store = open_for_reading(&s.db)?;
    let ids = resolve_cgroups(&store, &Only::Job(args.id))?;
    let until = args.window.until;
    // Without --since, from the first stored row (all that is kept per cgroup, below).
    let since = match args.since_given {
        true => args.window.since,
        false => store.first_usage(until)?.unwrap_or(until - 1),
    };
    let q = TopQuery {
        since,
        until,
        by: vec![By::Job, By::Remote],
        uid: None,
        limit: ROWS,
    };
    let report = store.top_in(&q, Some(&ids))?;
    let mut covered = store.covered(
        report.keys_from.unwrap_or(since),
        until,
        chrono::Utc::now().timestamp(),
    )?;
    // Asked for everything, the answer is all that is kept per cgroup: nothing to say.
    covered.asked_since = match args.since_given {
        true => since,
        false => covered.since,
    };
    covered.keys_from = report.keys_from.filter(|_| args.since_given);
    let labels = Labels {
        remotes: RemoteNames::load(&args.names.path, args.names.required)?,
        services: Services::default(),
    };
    print_top(
        &report,
        &q.by,
        &[By::Remote],
        &labels,
        &covered,
        &args.output,
    )
}
