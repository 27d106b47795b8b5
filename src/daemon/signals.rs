//! SIGTERM/SIGINT (stop) and SIGHUP (reload) as flags the daemon's loops poll.
//!
//! The handlers only store to atomics (async-signal-safe, signal-safety(7)). They are
//! installed without `SA_RESTART`, so a blocking `poll` in the listener returns `EINTR` at
//! once; the writer waits at most [`super::TICK`] at a time, so it notices within that.
//! No crate is needed for two flags.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    match sig {
        libc::SIGHUP => RELOAD.store(true, Ordering::SeqCst),
        _ => STOP.store(true, Ordering::SeqCst),
    }
}

/// Install the handlers for SIGTERM, SIGINT and SIGHUP.
pub fn install() -> std::io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value; the handler
        // is an extern "C" fn that only touches atomics.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether a stop was asked for (it stays asked for).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// Whether a reload was asked for since the last call (clears the request).
pub fn take_reload() -> bool {
    RELOAD.swap(false, Ordering::SeqCst)
}
