//! Test hooks (the `test-hooks` feature only, never in a release): a pause inside a write
//! transaction, just before its commit, so that a test can SIGKILL the process there.
//!
//! `NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS` pauses each pass (`snapshot`, and the daemon's
//! passes), `NETLEDGER_TEST_PAUSE_IN_FLUSH_MS` each event flush of `netledger run`. Each
//! pause says on stderr `netledger: test hook: pausing before commit for D (pass|flush)`
//! and, once committed, `netledger: test hook: committed (pass|flush)`: a process killed
//! after the first line and before the second died inside that transaction.

use std::time::Duration;

/// The pause named by the environment variable `var` (milliseconds), if set and > 0.
pub(super) fn pause(var: &str) -> Option<Duration> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&ms: &u64| ms > 0)
        .map(Duration::from_millis)
}

/// Sleep `pause` inside the open transaction of `what` ("pass" or "flush").
pub(super) fn pause_before_commit(pause: Option<Duration>, what: &str) {
    if let Some(d) = pause {
        eprintln!("netledger: test hook: pausing before commit for {d:?} ({what})");
        std::thread::sleep(d);
    }
}

/// Say that the transaction of `what` committed (after a pause only).
pub(super) fn committed(pause: Option<Duration>, what: &str) {
    if pause.is_some() {
        eprintln!("netledger: test hook: committed ({what})");
    }
}
