//! Program names for the owners NEW events found, at a bounded cost.
//!
//! sock_diag names a socket's uid and inode, not its process: the process is found by
//! reading `/proc/PID/fd`. A walk of every process costs milliseconds (measured: ~6 ms
//! for ~100 processes on the test VM, release build), far too much to do per event at
//! thousands of connections a second. Three things keep it cheap:
//! - a connection a server answers is looked for first in the processes holding the
//!   server's socket (the listener that accepted it, or the unconnected UDP socket), one
//!   directory each: those processes are learnt once per server socket, by a walk made at
//!   once when a server is first seen ([`SERVER_WALK_SHARE`] bounds these walks), and kept
//!   while the socket lives. A server that lives on — a web, mail or git server, a prefork
//!   server whose workers share one listener — so gets every connection named, however
//!   short: one whose socket closed before it was looked for is named after the processes
//!   holding the listener, when they run one program;
//! - the processes started last (fork or exec, announced by the kernel's process events
//!   connector: [`super::recent`]) of the flow's user are read next, newest first, one
//!   directory each: a process that makes one connection and exits within milliseconds is
//!   only ever found this way, at once, before it exits ([`RECENT_SHARE`] bounds them);
//! - the processes that recently held a user's sockets are tried next, one directory
//!   each (a client making many connections keeps its pid): tens of microseconds;
//! - a walk of every process runs for what is left, at most every [`FULL_WALK_EVERY`] and
//!   at most [`FULL_WALK_SHARE`] of the time (a host with many processes and descriptors
//!   makes each walk longer, so they are spaced further apart), and teaches the second
//!   step which processes to try.
//!
//! The uid never depends on this; only the program name of a client's connection is missed
//! when its socket closes before it is looked for.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::L4;
use crate::sources::sockdiag::SockDiag;

use super::recent::{self, proc_owner, status_fsuid, Recent};
use crate::sources::proc_events::ProcEvents;

use crate::sources::processes::{
    children, parse_socket_link, scan_socket_holders, scan_socket_owners, Holder,
};

/// Least time between two walks of every process.
pub const FULL_WALK_EVERY: Duration = Duration::from_millis(250);
/// Largest share of the time spent walking every process (1/50: 2% of a core).
pub const FULL_WALK_SHARE: u32 = 50;
/// Largest share of the time spent walking every process to learn a new server socket's
/// holders (1/20: 5% of a core). No least interval: the first connection of a server is
/// named at once; a user who opens listener after listener only costs names, never uids.
pub const SERVER_WALK_SHARE: u32 = 20;
/// Largest share of the time spent reading the newest processes' descriptors (1/20: 5%
/// of a core): a user whose flows come from processes not started lately costs reads of
/// the newest ones at each batch. The time is earned as it passes, up to
/// [`RECENT_CREDIT`] ahead, so a burst of new processes is read at once.
pub const RECENT_SHARE: u32 = 20;
/// The most reading time earned ahead.
const RECENT_CREDIT: Duration = Duration::from_millis(20);
/// Processes started at most this long before a batch are read for it.
const RECENT_FOR: Duration = Duration::from_secs(10);
/// Newest processes whose uid is read per batch, and of those, the user's whose
/// descriptors are read.
const RECENT_LOOK: usize = 64;
const RECENT_READ: usize = 16;
/// Processes remembered per user.
const CANDIDATES_PER_UID: usize = 8;
/// Children of a server's process read for a connection it handed to one (the newest
/// are not favoured: `children` lists them in the kernel's order).
const CHILDREN_READ: usize = 64;
/// Server sockets whose holders are remembered before the table is dropped (a host has a
/// few; a user opening listener after listener only makes them be learnt again).
const SERVERS_MAX: usize = 1024;
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
    /// Wanted sockets found closed before a costly read or walk for them.
    pub closed: u64,
}

/// The server socket behind a wanted socket, when a server answers its flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The wanted socket is the server's own: a listener (the connection was not accepted
    /// yet when its NEW was read) or an unconnected UDP socket.
    Itself,
    /// The wanted socket was accepted from the TCP listener of this local end.
    Listener(SocketAddr),
}

/// A socket whose program is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// Its inode.
    pub inode: u64,
    /// Its owner.
    pub uid: u32,
    /// The server socket behind it, if a server answers its flow.
    pub server: Option<Server>,
    /// Its ends, when sock_diag can look it up again (a TCP or UDP socket of the daemon's
    /// namespace): a walk of every process is not made for a socket closed since.
    pub ends: Option<Ends>,
}

/// A socket's transport and ends, as sock_diag found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// TCP or UDP.
    pub l4: L4,
    /// Its local end.
    pub local: SocketAddr,
    /// Its remote end.
    pub remote: SocketAddr,
}

/// Whether the socket of these ends is still open with this inode.
pub type OpenCheck = Box<dyn FnMut(&Ends, u64) -> bool + Send>;

/// The open check of the namespace the daemon runs in: one exact sock_diag request. A
/// closed socket is gone, or orphaned (TIME_WAIT, FIN_WAIT: inode 0), or another one has
/// its ends: no process holds it any more. When the lookup cannot be made, open.
fn sock_diag_open_check() -> OpenCheck {
    let mut diag: Option<SockDiag> = None;
    Box::new(move |ends: &Ends, inode: u64| {
        if diag.is_none() {
            diag = SockDiag::open().ok();
        }
        let Some(d) = diag.as_mut() else {
            return true;
        };
        match d.lookup(ends.l4, ends.local, ends.remote) {
            Ok(found) => found.is_some_and(|s| s.inode == inode),
            Err(_) => true,
        }
    })
}

/// The processes holding one server socket, learnt by a walk.
#[derive(Debug, Clone, Default)]
struct Holders {
    /// (pid, program) in ascending pid order. PID 1 is left out: systemd holds every
    /// socket it activates, and hands the connections to other programs.
    procs: Vec<(u32, String)>,
}

impl Holders {
    fn new(found: &[Holder]) -> Holders {
        Holders {
            procs: found
                .iter()
                .filter(|h| h.pid != 1 && !h.program.is_empty())
                .map(|h| (h.pid, h.program.clone()))
                .collect(),
        }
    }

    /// Their program, when they all run one.
    fn program(&self) -> Option<&str> {
        let (_, first) = self.procs.first()?;
        self.procs
            .iter()
            .all(|(_, p)| p == first)
            .then_some(first.as_str())
    }
}

/// Finds the listening socket of a local end: its inode.
pub type ListenerLookup = Box<dyn FnMut(SocketAddr) -> Option<u64> + Send>;

/// The listener lookup of the namespace the daemon runs in: one exact sock_diag request
/// (the socket is opened at the first lookup).
fn sock_diag_listener() -> ListenerLookup {
    let mut diag: Option<SockDiag> = None;
    Box::new(move |local: SocketAddr| {
        if diag.is_none() {
            diag = SockDiag::open().ok();
        }
        let any = match local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let s = diag
            .as_mut()?
            .lookup(L4::Tcp, local, SocketAddr::new(any, 0))
            .ok()??;
        s.has_owner().then_some(s.inode)
    })
}

/// Finds the programs holding socket inodes.
pub struct Namer {
    proc_root: PathBuf,
    /// inode → (program, pid of the process found holding it).
    cache: HashMap<u64, (String, u32)>,
    candidates: HashMap<u32, VecDeque<u32>>,
    /// Server socket inode → the processes holding it.
    servers: HashMap<u64, Holders>,
    /// Local end → the inode of its listener, as last looked up.
    listeners: HashMap<SocketAddr, u64>,
    find_listener: ListenerLookup,
    /// Whether a wanted socket is still open, before a walk of every process for it.
    is_open: OpenCheck,
    /// When the next walk of every process may run.
    next_full: Option<Instant>,
    /// When the next walk for new server sockets may run.
    next_server_walk: Option<Instant>,
    /// The kernel's announcements of new processes, when it makes them.
    events: Option<ProcEvents>,
    /// The processes started last, from `events`.
    recent: Recent,
    /// Reading time earned for the newest processes (negative: owed), and when it was
    /// last counted.
    recent_credit: (i64, Instant),
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
            servers: HashMap::new(),
            listeners: HashMap::new(),
            find_listener: sock_diag_listener(),
            is_open: sock_diag_open_check(),
            next_full: None,
            next_server_walk: None,
            events: None,
            recent: Recent::default(),
            recent_credit: (RECENT_CREDIT.as_nanos() as i64, Instant::now()),
            work: Work::default(),
        }
    }

    /// The same, reading the processes `events` announce first for a user's new sockets.
    pub fn with_process_events(mut self, events: Option<ProcEvents>) -> Namer {
        self.events = events;
        self
    }

    /// Whether new processes are announced ([`Namer::with_process_events`]).
    pub fn has_process_events(&self) -> bool {
        self.events.is_some()
    }

    /// Read the announcements of new processes queued so far.
    pub fn drain_events(&mut self) {
        if let Some(events) = &mut self.events {
            if !recent::drain(events, &mut self.recent) {
                self.events = None;
            }
        }
    }

    /// The same, with another way to tell whether a socket is still open (tests).
    pub fn with_open_check(mut self, check: OpenCheck) -> Namer {
        self.is_open = check;
        self
    }

    /// The same, with another way to find a local end's listener (tests).
    pub fn with_listener_lookup(mut self, find: ListenerLookup) -> Namer {
        self.find_listener = find;
        self
    }

    /// Forget everything learnt (SIGHUP).
    pub fn clear(&mut self) {
        self.cache.clear();
        self.candidates.clear();
        self.servers.clear();
        self.listeners.clear();
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

    /// The programs of those `wanted` sockets that can be found now.
    pub fn name(&mut self, wanted: &[Wanted]) -> HashMap<u64, String> {
        if self.cache.len() > CACHE_MAX {
            self.cache.clear();
        }
        if self.servers.len() > SERVERS_MAX {
            self.servers.clear();
            self.listeners.clear();
        }
        // Every process announced up to now: those behind these sockets among them.
        self.drain_events();
        let mut found = HashMap::new();
        let mut left: HashMap<u64, u32> = HashMap::new();
        // (wanted inode, its server's inode, the listener's local end)
        let mut served = Vec::new();
        let ends: HashMap<u64, Ends> = wanted
            .iter()
            .filter_map(|w| Some((w.inode, w.ends?)))
            .collect();
        for w in wanted {
            if let Some((p, _)) = self.cache.get(&w.inode) {
                found.insert(w.inode, p.clone());
                continue;
            }
            left.insert(w.inode, w.uid);
            let server = match w.server {
                Some(Server::Itself) => Some((w.inode, w.inode, None)),
                Some(Server::Listener(end)) => self
                    .listener_of(end)
                    .map(|listener| (w.inode, listener, Some(end))),
                None => None,
            };
            served.extend(server);
        }
        // 1. The processes holding the server sockets.
        let mut closed = HashMap::new();
        if !served.is_empty() {
            self.learn_servers(&served, &mut left, &mut found);
            closed = self.in_servers(&served, &mut left, &mut found);
        }
        // 2. The users' processes started last (they may exit at any moment). Sockets
        //    closed since their NEW are set aside in `shut` before anything costlier: no
        //    process holds them (a walk is long: on a loaded host, hundreds of ms).
        let mut shut = None;
        self.in_recent(&ends, &mut shut, &mut left, &mut found);
        // 3. The processes that held the same users' sockets before.
        self.in_candidates(&mut left, &mut found);
        // 4. Every process, now and then, for the sockets still open.
        if !left.is_empty() && self.walk_due() {
            if shut.is_none() {
                shut = Some(self.take_closed(&ends, &mut left));
            }
            if !left.is_empty() {
                let inodes: HashSet<u64> = left.keys().copied().collect();
                self.full_walk(&inodes, &mut left, &mut found);
            }
        }
        left.extend(shut.unwrap_or_default());
        // 5. Connections no process holds any more (or one these steps did not reach, such
        //    as a child the server handed it to): named after their server's processes.
        for (ino, program) in closed {
            if left.remove(&ino).is_some() {
                found.insert(ino, program);
            }
        }
        found
    }

    /// The inode of the listener of `end`, as looked up before or now.
    fn listener_of(&mut self, end: SocketAddr) -> Option<u64> {
        if let Some(ino) = self.listeners.get(&end) {
            return Some(*ino);
        }
        let ino = (self.find_listener)(end)?;
        self.listeners.insert(end, ino);
        Some(ino)
    }

    /// One walk of every process for the holders of server sockets not known yet (and the
    /// wanted sockets still open), when the walks' share of the time allows.
    fn learn_servers(
        &mut self,
        served: &[(u64, u64, Option<SocketAddr>)],
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) {
        let unknown: HashSet<u64> = served
            .iter()
            .map(|(_, server, _)| *server)
            .filter(|s| !self.servers.contains_key(s))
            .collect();
        let due = self.next_server_walk.is_none_or(|t| Instant::now() >= t);
        if unknown.is_empty() || !due {
            return;
        }
        let started = Instant::now();
        self.work.full_walks += 1;
        let open: HashSet<u64> = left.keys().copied().collect();
        let scan = scan_socket_holders(&self.proc_root, &open, &unknown);
        self.next_server_walk = Some(started + started.elapsed() * SERVER_WALK_SHARE);
        for ino in unknown {
            let holders = scan.holders.get(&ino).map(Vec::as_slice).unwrap_or(&[]);
            self.servers.insert(ino, Holders::new(holders));
        }
        for (ino, owner) in scan.owners {
            // A server socket itself is named after all its holders, by in_servers.
            if self.servers.contains_key(&ino) {
                continue;
            }
            if !owner.program.is_empty() && left.remove(&ino).is_some() {
                self.cache.insert(ino, (owner.program.clone(), owner.pid));
                found.insert(ino, owner.program);
            }
        }
    }

    /// The wanted sockets found in their servers' processes, one directory each. Returns,
    /// for those not found there, their server's program when its processes run one.
    fn in_servers(
        &mut self,
        served: &[(u64, u64, Option<SocketAddr>)],
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) -> HashMap<u64, String> {
        let mut closed = HashMap::new();
        for (ino, server, end) in served {
            if !left.contains_key(ino) {
                continue;
            }
            let Some(holders) = self.servers.get(server) else {
                continue;
            };
            let named = holders.program().map(str::to_owned);
            if ino == server {
                // A listener or an unconnected socket: its holders' program, and its first
                // holder remembered as the process holding it (a service's pending flows
                // are looked for among that process's children: sshd's sessions).
                if let (Some(p), Some((pid, _))) = (named, holders.procs.first()) {
                    self.cache.insert(*ino, (p.clone(), *pid));
                    left.remove(ino);
                    found.insert(*ino, p);
                }
                continue;
            }
            let pids: Vec<u32> = holders.procs.iter().map(|(pid, _)| *pid).collect();
            let mut gone = false;
            for pid in &pids {
                if !left.contains_key(ino) {
                    break;
                }
                gone |= self.read_process(*pid, left, found).is_none();
            }
            // A server that hands each connection to a child of its own (sshd, an
            // inetd-style server): that child holds it.
            for pid in pids.iter().filter(|_| !gone) {
                let children = children(&self.proc_root, *pid);
                for child in children.into_iter().take(CHILDREN_READ) {
                    if !left.contains_key(ino) {
                        break;
                    }
                    self.read_process(child, left, found);
                }
            }
            if !left.contains_key(ino) {
                continue;
            }
            // Closed already, or the listener is not the one learnt: a holder exited, or
            // another socket listens on that end now. Learn it again next time.
            let same = !gone && end.is_some_and(|e| (self.find_listener)(e) == Some(*server));
            if !same {
                self.servers.remove(server);
                if let Some(e) = end {
                    self.listeners.remove(e);
                }
            } else if let Some(p) = named {
                closed.insert(*ino, p);
            }
        }
        closed
    }

    /// The wanted sockets found among the processes started last, newest first: those of
    /// each wanted socket's user (its uid now), [`RECENT_READ`] at most per user. One found
    /// holding a socket becomes a candidate of its user.
    fn in_recent(
        &mut self,
        ends: &HashMap<u64, Ends>,
        shut: &mut Option<HashMap<u64, u32>>,
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) {
        let started = Instant::now();
        if self.recent.is_empty() || left.is_empty() || !self.recent_allowed(started) {
            return;
        }
        let since = started.checked_sub(RECENT_FOR).unwrap_or(started);
        let newest = self.recent.newest(since, RECENT_LOOK);
        // The owner of /proc/PID first (one stat); those it shows as root's (root's, or
        // not dumpable after a change of uid) afterwards, by their status.
        let mut read: HashMap<u32, usize> = HashMap::new();
        let mut rooted = Vec::new();
        for pid in newest {
            match proc_owner(&self.proc_root, pid) {
                Some(0) => rooted.push(pid),
                Some(uid) => self.read_recent(pid, uid, &mut read, left, found),
                None => {}
            }
        }
        if !rooted.is_empty() && !left.is_empty() {
            *shut = Some(self.take_closed(ends, left));
        }
        for pid in rooted {
            if left.is_empty() {
                break;
            }
            if let Some(uid) = status_fsuid(&self.proc_root, pid) {
                self.read_recent(pid, uid, &mut read, left, found);
            }
        }
        self.recent_credit.0 -= started.elapsed().as_nanos() as i64;
    }

    /// The wanted sockets closed since their NEW (no process holds them), taken out of
    /// `left`: one sock_diag lookup each (those without ends are kept).
    fn take_closed(
        &mut self,
        ends: &HashMap<u64, Ends>,
        left: &mut HashMap<u64, u32>,
    ) -> HashMap<u64, u32> {
        let closed: Vec<u64> = left
            .keys()
            .copied()
            .filter(|ino| ends.get(ino).is_some_and(|e| !(self.is_open)(e, *ino)))
            .collect();
        self.work.closed += closed.len() as u64;
        closed
            .into_iter()
            .filter_map(|ino| Some((ino, left.remove(&ino)?)))
            .collect()
    }

    /// Whether reading time is left for the newest processes (it is earned at
    /// 1/[`RECENT_SHARE`] of the time since last counted, up to [`RECENT_CREDIT`]).
    fn recent_allowed(&mut self, now: Instant) -> bool {
        let (credit, at) = self.recent_credit;
        let earned = (now.saturating_duration_since(at) / RECENT_SHARE).as_nanos() as i64;
        let credit = credit
            .saturating_add(earned)
            .min(RECENT_CREDIT.as_nanos() as i64);
        self.recent_credit = (credit, now);
        credit > 0
    }

    /// Read new process `pid` of `uid` when a wanted socket is `uid`'s and fewer than
    /// [`RECENT_READ`] of its processes were read (`read` counts them per uid).
    fn read_recent(
        &mut self,
        pid: u32,
        uid: u32,
        read: &mut HashMap<u32, usize>,
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) {
        let n = read.entry(uid).or_default();
        if *n >= RECENT_READ || !left.values().any(|u| *u == uid) {
            return;
        }
        *n += 1;
        let before = left.len();
        if self.read_process(pid, left, found).is_some() && left.len() < before {
            self.remember(uid, pid);
        }
    }

    /// The wanted sockets found in the processes that held the same users' sockets before.
    fn in_candidates(&mut self, left: &mut HashMap<u64, u32>, found: &mut HashMap<u64, String>) {
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
                if self.read_process(pid, left, found).is_none() {
                    // Gone (or not ours to read): forget it.
                    if let Some(c) = self.candidates.get_mut(&uid) {
                        c.retain(|p| *p != pid);
                    }
                }
            }
        }
    }

    /// Read one process's descriptors: every wanted socket it holds moves from `left` to
    /// `found`. None when its directory cannot be read (gone, or not ours to read).
    fn read_process(
        &mut self,
        pid: u32,
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) -> Option<()> {
        let dir = self.proc_root.join(pid.to_string());
        self.work.process_walks += 1;
        let fds = std::fs::read_dir(dir.join("fd")).ok()?;
        let mut program = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(ino) = parse_socket_link(target.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            if let Some(uid) = left.remove(&ino) {
                let p = program.get_or_insert_with(|| program_name(&dir)).clone();
                if p.is_empty() {
                    // Exited since its descriptors were read: no name to give.
                    left.insert(ino, uid);
                    continue;
                }
                self.cache.insert(ino, (p.clone(), pid));
                found.insert(ino, p);
            }
        }
        Some(())
    }

    /// A walk of every process for the wanted sockets left; it teaches the candidates.
    fn full_walk(
        &mut self,
        inodes: &HashSet<u64>,
        left: &mut HashMap<u64, u32>,
        found: &mut HashMap<u64, String>,
    ) {
        let started = Instant::now();
        self.work.full_walks += 1;
        let scan = scan_socket_owners(&self.proc_root, inodes);
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
}

#[cfg(test)]
mod tests;
