//! `netledger connections`: the connections open right now (ipclog's `ipc`), from a live
//! conntrack dump joined with the socket tables, like one pass but stored nowhere
//! ([`crate::live`]; rendered by [`crate::report::connections`]).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use crate::account::FlowState;
use crate::cmd::common;
use crate::live;
use crate::model::{FastMap, FlowKey};
use crate::pass::observe;
use crate::report::{self, connections};
use crate::settings::{Connections, Settings};
use crate::store::{OpenOptions, Store, StoreError};

/// List the open connections.
pub fn run(s: &Settings, args: &Connections) -> Result<()> {
    let (prev, store) = saved_owners(&s.db)?;
    let uid = match &args.user {
        Some(u) => Some(user_id(store.as_ref(), u)?),
        None => None,
    };
    let obs = observe(&args.proc_root, &prev, &args.nets, &args.delegating)
        .context("reading the open connections")?;
    let rows = live::open_connections(&obs.flows, uid, args.all);
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
    // Names from the system only, as the kernel knows the owners now.
    let mut names = common::UserNames::new(None);
    let mut user = |u| names.name(u);
    let mut out = std::io::stdout().lock();
    if args.json {
        let records: Vec<_> = rows
            .iter()
            .map(|r| connections::connection_record(r, now_ns, &mut user))
            .collect();
        report::write_json(&mut out, &records)?;
    } else {
        let table = connections::connections_table(&rows, now_ns, args.bytes, &mut user);
        out.write_all(table.as_bytes())?;
    }
    out.flush()?;
    Ok(())
}

/// Owners remembered by passes and the daemon: a flow whose socket is gone (TIME_WAIT)
/// keeps the owner it had. No database yet is fine: live sockets still name owners.
fn saved_owners(db: &Path) -> Result<(FastMap<FlowKey, FlowState>, Option<Store>)> {
    let opened = Store::open(
        db,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    );
    match opened {
        Ok(store) => Ok((store.load_state()?, Some(store))),
        Err(StoreError::Missing { .. }) => Ok((FastMap::default(), None)),
        Err(e) => Err(e.into()),
    }
}

/// `--user` as a uid: through the database when there is one, else the system's users.
fn user_id(store: Option<&Store>, user: &str) -> Result<u32> {
    match store {
        Some(store) => common::resolve_user(store, user),
        None => match user.parse::<u32>() {
            Ok(uid) => Ok(uid),
            Err(_) => crate::sources::users::uid_of(user).with_context(|| {
                format!("unknown user {user:?}: give a user name or a numeric uid")
            }),
        },
    }
}
