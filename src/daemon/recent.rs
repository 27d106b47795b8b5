//! The processes started last, as the kernel announces them ([`ProcEvents`]), for the
//! namer: a process that makes one connection and exits within milliseconds is gone long
//! before a walk of every process is due (at most every 250 ms, and ~6 ms long), so the
//! namer reads the descriptors of the newest processes of the flow's user first
//! ([`super::programs`]).
//!
//! The namer reads the events itself, when a batch of NEW events reaches it (and every
//! [`DRAIN_EVERY`] when idle, so the socket's queue never fills): a process's fork and
//! exec are queued on the socket before it can connect, so the process behind a NEW is in
//! the table when it is looked for, however late another thread would have been scheduled.
//!
//! Only pids and the time they were started (or exec'd) are kept: nothing is read at an
//! event, so a host that starts thousands of processes a second (a build) costs a `recv`
//! per event. The uid of a process is read when a flow's user is looked for, and a name is
//! only ever given to a socket found among a process's descriptors, read after the find —
//! never from this table. That is also why no start time guards pid reuse here: a reused
//! pid is announced anew (a fork), and a process that is not the one started only costs a
//! read.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sources::proc_events::{ProcEvent, ProcEvents};

/// Processes remembered (the newest); a busy host starts hundreds a second, and only
/// those started just before a flow are wanted.
const KEPT: usize = 512;
/// The events are read at least this often.
pub const DRAIN_EVERY: Duration = Duration::from_millis(200);

/// The newest processes, newest first.
#[derive(Debug, Default)]
pub struct Recent {
    procs: VecDeque<(u32, Instant)>,
}

impl Recent {
    /// Process `pid` was started or exec'd at `at` (pure).
    pub fn started(&mut self, pid: u32, at: Instant) {
        if let Some(i) = self.procs.iter().position(|(p, _)| *p == pid) {
            self.procs.remove(i);
        }
        self.procs.push_front((pid, at));
        self.procs.truncate(KEPT);
    }

    /// Whether no process was announced yet.
    pub fn is_empty(&self) -> bool {
        self.procs.is_empty()
    }

    /// The pids of at most `max` processes started at or after `since`, newest first
    /// (pure).
    pub fn newest(&self, since: Instant, max: usize) -> Vec<u32> {
        self.procs
            .iter()
            .take_while(|(_, at)| *at >= since)
            .take(max)
            .map(|(p, _)| *p)
            .collect()
    }
}

/// The process events socket, subscribed; None (logged once, with the reason) when the
/// kernel's process events cannot be had: program names then come from walks alone.
pub fn open(proc_root: &Path) -> Option<ProcEvents> {
    ProcEvents::open(proc_root)
        .inspect_err(|e| {
            tracing::info!(
                "process events connector unavailable ({e}; needs root and CONFIG_PROC_EVENTS): \
                 programs of processes that live milliseconds are named less often"
            );
        })
        .ok()
}

/// Every event queued on `events` into `recent`, now. False when the socket failed (it
/// should then be dropped).
pub fn drain(events: &mut ProcEvents, recent: &mut Recent) -> bool {
    let mut got = Vec::new();
    if let Err(e) = events.receive(Duration::ZERO, &mut got) {
        tracing::warn!(
            "process events: {e}; programs of short-lived processes are named by walks only \
             from now on"
        );
        return false;
    }
    let now = Instant::now();
    for ProcEvent::Fork { pid } | ProcEvent::Exec { pid } in got {
        recent.started(pid, now);
    }
    true
}

/// The owner of `/proc/PID`: the effective uid of process `pid` (the fsuid, which its
/// new sockets are charged to, follows it), or root when the process is not dumpable
/// (after a change of its uids, until it execs); None when it is gone.
pub fn proc_owner(proc_root: &Path, pid: u32) -> Option<u32> {
    Some(
        std::fs::metadata(proc_root.join(pid.to_string()))
            .ok()?
            .uid(),
    )
}

/// The filesystem uid of process `pid`, from its `status`; None when it is gone.
pub fn status_fsuid(proc_root: &Path, pid: u32) -> Option<u32> {
    let dir: PathBuf = proc_root.join(pid.to_string());
    parse_status_fsuid(&std::fs::read(dir.join("status")).ok()?)
}

/// The filesystem uid (the fourth) of the `Uid:` line of a `/proc/PID/status` text (pure).
pub fn parse_status_fsuid(status: &[u8]) -> Option<u32> {
    let line = status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"Uid:"))?;
    let fs = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .nth(3)?;
    std::str::from_utf8(fs).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_within_the_window_and_an_exec_moves_a_process_up() {
        let t0 = Instant::now();
        let mut r = Recent::default();
        r.started(10, t0);
        r.started(11, t0 + Duration::from_millis(5));
        r.started(12, t0 + Duration::from_millis(10));
        assert_eq!(r.newest(t0, 10), [12, 11, 10]);
        assert_eq!(r.newest(t0 + Duration::from_millis(5), 10), [12, 11]);
        assert_eq!(r.newest(t0, 2), [12, 11]);
        // 10 execs its program: the newest now, once.
        r.started(10, t0 + Duration::from_millis(20));
        assert_eq!(r.newest(t0, 10), [10, 12, 11]);
        for p in 0..(KEPT as u32 + 5) {
            r.started(1000 + p, t0 + Duration::from_millis(30));
        }
        assert_eq!(r.procs.len(), KEPT);
    }

    #[test]
    fn the_fsuid_is_the_fourth_of_the_uid_line() {
        let status = b"Name:\tx\nUmask:\t0022\nUid:\t0\t1000\t1000\t1001\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_fsuid(status), Some(1001));
        assert_eq!(parse_status_fsuid(b"Name:\tx\nUid:\t0\t0\n"), None);
        assert_eq!(parse_status_fsuid(b"Name:\tx\n"), None);
    }

    #[test]
    fn this_process_uid_is_read() {
        let me = std::process::id();
        let euid = rustix::process::geteuid().as_raw();
        assert_eq!(proc_owner(Path::new("/proc"), me), Some(euid));
        assert_eq!(status_fsuid(Path::new("/proc"), me), Some(euid));
        assert_eq!(proc_owner(Path::new("/proc"), u32::MAX), None);
        assert_eq!(status_fsuid(Path::new("/proc"), u32::MAX), None);
    }
}
