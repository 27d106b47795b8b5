//! The daemon's accounting pass: [`crate::pass::run_pass_with`], where a flow whose NEW
//! event found its owner, but whose owner the writer has not stored yet, takes that owner
//! as its kept attribution. Otherwise it would be charged as unattributed if its socket
//! closed before the pass read the socket tables.

use anyhow::Result;

use crate::pass::{run_pass_with, PassConfig, PassOutcome};
use crate::store::Store;

use super::listen::Fresh;

/// Run one pass against `store`, recorded with `mode` (`run`, `resync`, `final`).
pub fn run_pass(
    store: &mut Store,
    cfg: &PassConfig,
    fresh: &Fresh,
    mode: &'static str,
) -> Result<PassOutcome> {
    // The lock is taken per flow, briefly: the listener keeps adding owners meanwhile.
    let known = |key: &crate::model::FlowKey| {
        let map = fresh.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).cloned()
    };
    run_pass_with(store, cfg, mode, &known)
}
