//! `netledger top`: the top talkers in a period.

use anyhow::Result;

use super::common::{open_for_reading, print_top, resolve_cgroups, resolve_user};
use crate::report::names::{RemoteNames, Services};
use crate::report::Labels;
use crate::settings::{Settings, Top};
use crate::store::query::{By, TopQuery};

/// Print the top talkers.
pub fn run(s: &Settings, args: &Top) -> Result<()> {
    let (since, until) = (args.window.since, args.window.until);
    let store = open_for_reading(&s.db)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| resolve_user(&store, u))
        .transpose()?;
    let only = args
        .only
        .as_ref()
        .map(|o| resolve_cgroups(&store, o))
        .transpose()?;
    let by = args.by.clone();
    let q = TopQuery {
        since,
        until,
        by: by.clone(),
        uid,
        limit: args.limit,
    };
    let report = store.top_in(&q, only.as_deref())?;
    let labels = Labels {
        remotes: RemoteNames::load(&args.names.path, args.names.required)?,
        services: if by.contains(&By::Port) {
            Services::system()
        } else {
            Services::default()
        },
    };
    // Grouped by what the daily tier does not keep, the part of the window after it.
    let mut covered = store.covered(
        report.keys_from.unwrap_or(since),
        until,
        chrono::Utc::now().timestamp(),
    )?;
    covered.asked_since = since;
    covered.keys_from = report.keys_from;
    print_top(&report, &by, &by, &labels, &covered, &args.output)
}
