//! SIGTERM/SIGINT (stop) and SIGHUP (reload) as flags the daemon's loops poll.
//!
//! The handlers (signal-hook's) only store to atomics (async-signal-safe,
//! signal-safety(7)). A blocking `poll` in the listener returns `EINTR` at once (poll is
//! never restarted after a handler, whatever `SA_RESTART` says: signal(7)); the writer
//! waits at most [`super::TICK`] at a time, so it notices within that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static RELOAD: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag(cell: &OnceLock<Arc<AtomicBool>>) -> &Arc<AtomicBool> {
    cell.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Install the handlers for SIGTERM, SIGINT and SIGHUP.
pub fn install() -> std::io::Result<()> {
    signal_hook::flag::register(SIGTERM, Arc::clone(flag(&STOP)))?;
    signal_hook::flag::register(SIGINT, Arc::clone(flag(&STOP)))?;
    signal_hook::flag::register(SIGHUP, Arc::clone(flag(&RELOAD)))?;
    Ok(())
}

/// Whether a stop was asked for (it stays asked for).
pub fn stop_requested() -> bool {
    flag(&STOP).load(Ordering::SeqCst)
}

/// Whether a reload was asked for since the last call (clears the request).
pub fn take_reload() -> bool {
    flag(&RELOAD).swap(false, Ordering::SeqCst)
}
