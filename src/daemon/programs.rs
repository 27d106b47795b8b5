//! Program names for the owners NEW events found, at a bounded cost.
//!
//! sock_diag names a socket's uid and inode, not its process: the process is found by
//! reading `/proc/PID/fd`. A walk of every process costs milliseconds (measured: ~6 ms
//! for ~100 processes on the test VM, release build), far too much to do per event at
//! thousands of connections a second. Two things keep it cheap:
//! - the processes that recently held a user's sockets are tried first, one directory
//!   each (a client making many connections keeps its pid): tens of microseconds;
//! - a walk of every process runs for what is left, at most every [`FULL_WALK_EVERY`] and
//!   at most [`FULL_WALK_SHARE`] of the time (a host with many processes and descriptors
//!   makes each walk longer, so they are spaced further apart), and teaches the first step
//!   which processes to try.
//!
//! The uid never depends on this; only the program name is missed when a socket closes
//! before it is looked for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::sources::processes::{
    parse_socket_link, scan_socket_holders, scan_socket_owners, Holder,
};

/// Least time between two walks of every process.
pub const FULL_WALK_EVERY: Duration = Duration::from_millis(250);
/// Largest share of the time spent walking every process (1/50: 2% of a core).
pub const FULL_WALK_SHARE: u32 = 50;
/// Processes remembered per user.
const CANDIDATES_PER_UID: usize = 8;
/// Cached inode → program entries before the cache is dropped. A socket's inode comes back
/// only while the socket lives (an unconnected UDP socket talking to many peers makes a
/// flow per peer), so a small cache serves, and a large one only grows the daemon's memory
/// under a steady stream of short connections (seen in the soak test).
const CACHE_MAX: usize = 4096;

/// What a [`Namer`] did, for the daemon's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Single-process directories read.
    pub process_walks: u64,
    /// Walks of every process.
    pub full_walks: u64,
}

/// Finds the programs holding socket inodes.
pub struct Namer {
    proc_root: PathBuf,
    /// inode → (program, pid of the process found holding it).
    cache: HashMap<u64, (String, u32)>,
    candidates: HashMap<u32, VecDeque<u32>>,
    /// When the next walk of every process may run.
    next_full: Option<Instant>,
    /// Work done so far.
    pub work: Work,
}

/// Basename of `exe` (without ` (deleted)`), else `comm`: the same rule as
/// [`crate::sources::processes`].
fn program_name(pid_dir: &Path) -> String {
    if let Ok(exe) = std::fs::read_link(pid_dir.join("exe")) {
        if let Some(base) = exe.file_name() {
            let base = base.to_string_lossy();
            return base.strip_suffix(" (deleted)").unwrap_or(&base).to_owned();
        }
    }
    std::fs::read(pid_dir.join("comm"))
        .map(|c| String::from_utf8_lossy(&c).trim().to_owned())
        .unwrap_or_default()
}

impl Namer {
    /// A namer reading `proc_root`.
    pub fn new(proc_root: PathBuf) -> Namer {
        Namer {
            proc_root,
            cache: HashMap::new(),
            candidates: HashMap::new(),
            next_full: None,
            work: Work::default(),
        }
    }

    /// Forget everything learnt (SIGHUP).
    pub fn clear(&mut self) {
        self.cache.clear();
        self.candidates.clear();
    }

    fn remember(&mut self, uid: u32, pid: u32) {
        let c = self.candidates.entry(uid).or_default();
        c.retain(|p| *p != pid);
        c.push_front(pid);
        c.truncate(CANDIDATES_PER_UID);
    }

    /// The process last found holding `inode` (by [`Namer::name`]).
    pub fn holder_pid(&self, inode: u64) -> Option<u32> {
        self.cache.get(&inode).map(|(_, pid)| *pid)
    }

    /// Whether a walk of every process may run now.
    pub fn walk_due(&self) -> bool {
        self.next_full.is_none_or(|t| Instant::now() >= t)
    }

    /// Every process holding each of `inodes`, by a walk of every process (counted against
    /// the same budget as the walks for program names).
    pub fn holders(&mut self, inodes: &HashSet<u64>) -> HashMap<u64, Vec<Holder>> {
        let started = Instant::now();
        self.work.full_walks += 1;
        let scan = scan_socket_holders(&self.proc_root, &HashSet::new(), inodes);
        let took = started.elapsed();
        self.next_full = Some(started + FULL_WALK_EVERY.max(took * FULL_WALK_SHARE));
        scan.holders
    }

    /// The programs of those `(inode, uid)` that can be found now.
    pub fn name(&mut self, wanted: &[(u64, u32)]) -> HashMap<u64, String> {
        if self.cache.len() > CACHE_MAX {
            self.cache.clear();
        }
        let mut found = HashMap::new();
        let mut left: HashMap<u64, u32> = HashMap::new();
        for (ino, uid) in wanted {
            match self.cache.get(ino) {
                Some((p, _)) => {
                    found.insert(*ino, p.clone());
                }
                None => {
                    left.insert(*ino, *uid);
                }
            }
        }
        // 1. The processes that held the same users' sockets before.
        let uids: HashSet<u32> = left.values().copied().collect();
        for uid in uids {
            let pids: Vec<u32> = self
                .candidates
                .get(&uid)
                .map(|c| c.iter().copied().collect())
                .unwrap_or_default();
            for pid in pids {
                if !left.values().any(|u| *u == uid) {
                    break;
                }
                let dir = self.proc_root.join(pid.to_string());
                self.work.process_walks += 1;
                let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
                    // Gone (or not ours to read): forget it.
                    if let Some(c) = self.candidates.get_mut(&uid) {
                        c.retain(|p| *p != pid);
                    }
                    continue;
                };
                let mut program = None;
                for fd in fds.flatten() {
                    let Ok(target) = std::fs::read_link(fd.path()) else {
                        continue;
                    };
                    let Some(ino) = parse_socket_link(target.as_os_str().as_encoded_bytes()) else {
                        continue;
                    };
                    if left.remove(&ino).is_some() {
                        let p = program.get_or_insert_with(|| program_name(&dir)).clone();
                        self.cache.insert(ino, (p.clone(), pid));
                        found.insert(ino, p);
                    }
                }
            }
        }
        // 2. Every process, now and then.
        let due = self.next_full.is_none_or(|t| Instant::now() >= t);
        if !left.is_empty() && due {
            let started = Instant::now();
            self.work.full_walks += 1;
            let inodes: HashSet<u64> = left.keys().copied().collect();
            let scan = scan_socket_owners(&self.proc_root, &inodes);
            let took = started.elapsed();
            self.next_full = Some(started + FULL_WALK_EVERY.max(took * FULL_WALK_SHARE));
            for (ino, owner) in scan.owners {
                if owner.program.is_empty() {
                    continue;
                }
                if let Some(uid) = left.remove(&ino) {
                    self.remember(uid, owner.pid);
                }
                self.cache.insert(ino, (owner.program.clone(), owner.pid));
                found.insert(ino, owner.program);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A fake proc tree with one process holding `socket:[ino]` descriptors.
    fn tree(pid: u32, inodes: &[u64], exe: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(pid.to_string());
        std::fs::create_dir_all(p.join("fd")).unwrap();
        for (i, ino) in inodes.iter().enumerate() {
            symlink(format!("socket:[{ino}]"), p.join("fd").join(i.to_string())).unwrap();
        }
        symlink(exe, p.join("exe")).unwrap();
        d
    }

    #[test]
    fn full_walk_teaches_the_process_then_one_directory_suffices() {
        let d = tree(4242, &[100, 101], "/usr/bin/curl");
        let mut n = Namer::new(d.path().to_owned());
        let got = n.name(&[(100, 1001)]);
        assert_eq!(got.get(&100).map(String::as_str), Some("curl"));
        assert_eq!(n.work.full_walks, 1);
        // A new socket of the same user: found in the remembered process, no full walk
        // (and none would be due yet anyway).
        let p = d.path().join("4242/fd/9");
        symlink("socket:[102]", p).unwrap();
        let got = n.name(&[(102, 1001)]);
        assert_eq!(got.get(&102).map(String::as_str), Some("curl"));
        assert_eq!((n.work.full_walks, n.work.process_walks), (1, 1));
        // Cached.
        assert_eq!(n.name(&[(101, 1001)]).len(), 1);
    }

    #[test]
    fn full_walks_are_rate_limited() {
        let d = tree(7, &[1], "/bin/sh");
        let mut n = Namer::new(d.path().to_owned());
        assert!(n.name(&[(555, 1)]).is_empty());
        assert!(n.name(&[(556, 1)]).is_empty());
        assert_eq!(n.work.full_walks, 1, "the second walk was not due");
    }
}
