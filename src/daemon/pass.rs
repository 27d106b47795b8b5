//! The daemon's accounting pass: [`crate::pass`]'s observe → attribute → account → store,
//! with one addition. A flow whose NEW event found its owner, but whose owner the writer
//! has not stored yet, would otherwise be charged as unattributed if its socket closed
//! before the pass read the socket tables: such flows take the owner from `fresh`.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::account::account_pass;
use crate::attribute::{attribute, SocketIndex};
use crate::pass::{observe, user_names, PassConfig, PassOutcome};
use crate::sources::interfaces;
use crate::sources::processes::Owner;
use crate::store::{PassRecord, Store};

use super::listen::Fresh;

/// Run one pass against `store`, recorded with `mode` (`run`, `resync`, `final`).
pub fn run_pass(
    store: &mut Store,
    cfg: &PassConfig,
    fresh: &Fresh,
    mode: &'static str,
) -> Result<PassOutcome> {
    let t0 = Instant::now();
    let started_at = chrono::Utc::now().timestamp();
    let prev = store.load_state()?;
    let mut obs = observe(&cfg.proc_root, &prev, &cfg.nets)?;
    {
        let fresh = fresh.lock().unwrap_or_else(|p| p.into_inner());
        if !fresh.is_empty() {
            let none: HashMap<u64, Owner> = HashMap::new();
            let idx = SocketIndex::new(&obs.sockets.sockets, &none, interfaces::host_addrs());
            for (flow, at) in obs.dump.flows.iter().zip(obs.attributed.iter_mut()) {
                if at.attribution().is_some() {
                    continue;
                }
                if let Some(owner) = fresh.get(&flow.key()) {
                    *at = attribute(flow, &idx, Some(owner), &cfg.nets);
                }
            }
        }
    }
    let plan = account_pass(
        started_at,
        &obs.dump.flows,
        &obs.attributed,
        &prev,
        cfg.prune_after,
    );
    let users = user_names(&plan);
    let record = PassRecord {
        started_at,
        mode,
        sockets: obs.sockets.sockets.len() as u64,
        bad_lines: obs.sockets.bad_lines.len() as u64,
        skipped_messages: obs.dump.skipped_messages as u64,
    };
    let id = store
        .write_pass(&record, &plan, &users)
        .with_context(|| format!("writing pass to {}", store.path().display()))?;
    Ok(PassOutcome {
        id,
        record,
        totals: plan.totals,
        took: t0.elapsed(),
    })
}
