//! The processes started last, as the kernel announces them ([`ProcEvents`]), for the
//! namer: a process that makes one connection and exits within milliseconds is gone long
//! before a walk of every process is due (at most every 250 ms, and ~6 ms long), so the
//! namer reads the descriptors of the newest processes of the flow's user first
//! ([`super::programs`]).
//!
//! Only pids and the time they were started (or exec'd) are kept: nothing is read at an
//! event, so a host that starts thousands of processes a second (a build) costs one
//! `recv` per event. The uid of a process is read when a flow's user is looked for, and a
//! name is only ever given to a socket found among a process's descriptors, read after
//! the find — never from this table. That is also why no start time guards pid reuse
//! here: a reused pid is announced anew (a fork), and a process that is not the one
//! started only costs a read.

use std::collections::VecDeque;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sources::proc_events::{ProcEvent, ProcEvents};

/// Processes remembered (the newest); a busy host starts hundreds a second, and only
/// those started just before a flow are wanted.
const KEPT: usize = 512;
/// How long a wait for events lasts before the stop flag is looked at again.
const WAIT: Duration = Duration::from_millis(200);

/// The newest processes, newest first.
#[derive(Debug, Default)]
pub struct Recent {
    procs: VecDeque<(u32, Instant)>,
}

/// The table, shared by the thread that fills it and the namer.
pub type SharedRecent = Arc<Mutex<Recent>>;

impl Recent {
    /// Process `pid` was started or exec'd at `at` (pure).
    pub fn started(&mut self, pid: u32, at: Instant) {
        if let Some(i) = self.procs.iter().position(|(p, _)| *p == pid) {
            self.procs.remove(i);
        }
        self.procs.push_front((pid, at));
        self.procs.truncate(KEPT);
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

/// Open the process events socket, and start the thread that fills a [`Recent`] table
/// from it until `stop`. None (logged once, with the reason) when the kernel's process
/// events cannot be had: program names then come from walks alone, as before.
pub fn start(proc_root: &Path, stop: Arc<AtomicBool>) -> Option<SharedRecent> {
    let events = match ProcEvents::open(proc_root) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::info!(
                "process events connector unavailable ({e}; needs root and CONFIG_PROC_EVENTS): \
                 programs of processes that live milliseconds are named less often"
            );
            return None;
        }
    };
    let recent = SharedRecent::default();
    let table = recent.clone();
    let spawned = std::thread::Builder::new()
        .name("procevents".into())
        .spawn(move || watch(events, &table, &stop));
    match spawned {
        Ok(_) => Some(recent),
        Err(e) => {
            tracing::warn!("cannot start the process events thread: {e}");
            None
        }
    }
}

/// Fill `recent` from `events` until `stop` is set or the socket fails.
fn watch(mut events: ProcEvents, recent: &Mutex<Recent>, stop: &AtomicBool) {
    let mut got = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        got.clear();
        if let Err(e) = events.receive(WAIT, &mut got) {
            tracing::warn!("process events: {e}; programs of short-lived processes are named by walks only from now on");
            return;
        }
        if got.is_empty() {
            continue;
        }
        let now = Instant::now();
        let mut table = recent.lock().unwrap_or_else(|p| p.into_inner());
        for ev in &got {
            let (ProcEvent::Fork { pid } | ProcEvent::Exec { pid }) = ev;
            table.started(*pid, now);
        }
    }
}

/// The uid a socket that process `pid` creates now is charged to (its fsuid), if it
/// still runs: the owner of `/proc/PID` (its effective uid) read first; a process that
/// changed its credentials is not dumpable and shows as root's there, so its `status` is
/// read then.
pub fn fs_uid(proc_root: &Path, pid: u32) -> Option<u32> {
    let dir: PathBuf = proc_root.join(pid.to_string());
    let owner = std::fs::metadata(&dir).ok()?.uid();
    if owner != 0 {
        return Some(owner);
    }
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
        assert_eq!(fs_uid(Path::new("/proc"), me), Some(euid));
        assert_eq!(fs_uid(Path::new("/proc"), u32::MAX), None);
    }
}
