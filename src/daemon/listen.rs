//! The listener thread: conntrack NEW and DESTROY events in, owners attached, batches out
//! to the writer.
//!
//! A NEW event arrives while the flow's socket still exists, so the owner is looked up at
//! once with sock_diag (one exact hash lookup in the kernel, microseconds) rather than by
//! reading `/proc/net/*`. Program names need `/proc/PID/fd`: a second thread, the namer,
//! looks them up per batch at a bounded cost ([`super::programs`]), so no walk ever
//! delays a lookup; the processes the kernel announced last (the process events connector,
//! [`super::recent`]) are read first, so one that connects once and exits at once is found. The uid never depends on that walk; only the program name is missed
//! when a socket closes before it is looked for.
//!
//! A NEW whose socket is a delegating service's (sshd's, root's) and no user's process
//! holds yet is looked after by the namer ([`super::claims`]) until one does.
//!
//! Nothing here touches the database: the writer does, so a slow disk never delays a
//! lookup. The owners found are also published in `fresh` at once, so a pass that runs
//! before the writer stored them still charges the flow to its owner.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attribute::{
    attribute, attribute_through, mark_check, Attribution, Continued, Delegating, LocalNets,
    SocketIndex, Verdict, Via,
};
use crate::model::{canonical_ip, CtTcpState, Flow, FlowKey, Socket, L4};
use crate::owner_mark::trust::MarkTrust;
use crate::sources::conntrack::{self, EventKind, EventSocket, Events};
use crate::sources::interfaces;
use crate::sources::netlink;
use crate::sources::sockdiag::SockDiag;
use crate::sources::sockets::PingSockets;

use super::batch::Resolved;
use super::claims::{Claims, CLAIM_CHECK};
use super::programs::{Ends, Namer, Server, Wanted};
use super::recent::{self, DRAIN_EVERY};

/// Owners found by NEW events and not yet stored, shared with the writer's passes.
pub type Fresh = Arc<Mutex<HashMap<FlowKey, Attribution>>>;

/// A batch on its way from the listener to the namer: the events, and for each owner
/// found, its index in `events` and its socket.
struct Unnamed {
    events: Vec<Resolved>,
    inodes: Vec<(usize, Wanted)>,
    /// Indexes in `events` of the NEW events whose owner is pending (a service's socket
    /// no user's process holds yet).
    claims: Vec<usize>,
    skipped: usize,
}

/// What the listener hands the namer: batches to name, or news for the writer.
enum ToNamer {
    Batch(Unnamed),
    Pass(ToWriter),
}

/// What the listener tells the writer (through the namer, so order is kept).
#[derive(Debug)]
pub enum ToWriter {
    /// Events, in arrival order.
    Batch {
        /// The events with owners attached.
        events: Vec<Resolved>,
        /// Malformed messages skipped.
        skipped: usize,
    },
    /// The kernel dropped events (`ENOBUFS`): the writer resynchronises from a dump.
    Overrun {
        /// Events dropped since the previous overrun, from `/proc/net/netlink` (None when
        /// that file could not be read).
        lost: Option<u64>,
        /// The receive buffer after growing it.
        buffer: usize,
        /// Every event of what the kernel did before this time (ns since the epoch) was
        /// sent before this message, or lost: taken before the read that found the queue
        /// empty.
        lost_before_ns: u64,
    },
    /// The event socket failed; the daemon stops.
    Failed(conntrack::ConntrackError),
}

/// Counters of the listener's work, read by the writer for its summary lines.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events received.
    pub events: AtomicU64,
    /// NEW events.
    pub news: AtomicU64,
    /// NEW events whose owner was found.
    pub owned: AtomicU64,
    /// NEW events whose program was found too.
    pub programs: AtomicU64,
    /// sock_diag lookups made.
    pub lookups: AtomicU64,
    /// sock_diag lookups that failed (not "no such socket": the kernel refused).
    pub lookup_errors: AtomicU64,
    /// Nanoseconds spent finding the owners of NEW events (sock_diag and the join).
    pub lookup_ns: AtomicU64,
    /// Nanoseconds spent walking /proc for program names.
    pub scan_ns: AtomicU64,
    /// Single-process descriptor directories read for program names.
    pub process_walks: AtomicU64,
    /// Walks of every process for program names.
    pub full_walks: AtomicU64,
    /// Overruns (ENOBUFS).
    pub overruns: AtomicU64,
    /// Flows on a service's socket whose user was found after their NEW event.
    pub claimed: AtomicU64,
    /// NEW events whose owner only the owner mark named (the socket was gone).
    pub by_mark: AtomicU64,
}

/// What [`Listener::resolve`] gathers over one batch of events.
struct Batch {
    /// When the batch was read, ms since the epoch.
    at_ms: i64,
    out: Vec<Resolved>,
    /// (index in `out`, socket) of the owners found, for the program names.
    owned: Vec<(usize, Wanted)>,
    /// Indexes in `out` of the flows whose service waits for its user's process.
    claims: Vec<usize>,
    /// Owners continued from a deleted entry (no socket, so no program to look up).
    continued: Vec<(FlowKey, Attribution)>,
    /// Whether owner marks may be trusted (until a check says otherwise).
    use_marks: bool,
    /// Time spent looking owners up.
    lookup: Duration,
    /// The ping sockets, read at the batch's first ICMP NEW (sock_diag lists none): every
    /// socket of these events existed before they were read.
    pings: Option<PingSockets>,
}

/// Everything the listener thread owns.
pub struct Listener {
    /// The subscribed event socket (subscribed before the daemon's first dump).
    pub socket: EventSocket,
    /// Lookups of single sockets.
    pub diag: SockDiag,
    /// The cgroups of the sockets found, named (the lookup gives each socket's id): a
    /// connection from a process that exits at once is still its cgroup's.
    pub cgroups: crate::pass::cgroups::CgroupNames,
    /// proc root for program names and `/proc/net/netlink`.
    pub proc_root: PathBuf,
    /// Local networks (an owner's flow to them is still attributed, for the log).
    pub nets: LocalNets,
    /// Uids of services whose sockets are charged through the processes holding them.
    pub delegating: Delegating,
    /// How long a NEW on such a socket is looked after for a user's process.
    pub delegate_grace: Duration,
    /// Largest receive buffer to grow to after overruns.
    pub max_buffer: usize,
    /// Owners not yet stored, shared with passes.
    pub fresh: Fresh,
    /// Work counters.
    pub stats: Arc<Stats>,
    /// Set by the writer to stop: the listener drains what is queued, sends it, and ends.
    pub stop: Arc<AtomicBool>,
    /// Set by the writer on SIGHUP: re-read host addresses, drop the program cache.
    pub reload: Arc<AtomicBool>,
    /// Owners of connections whose entry was destroyed while they lived, for the entry
    /// the kernel picks up when their next packet passes.
    pub continued: Continued,
    /// Whether owner marks are believed (shared with the writer's passes).
    pub marks: Arc<MarkTrust>,
    /// Owners of new flows in containers.
    pub containers: crate::containers::Finder,
}

/// How long the owner of a connection whose entry was destroyed while it lived is kept
/// for a picked-up entry: its socket's TIME_WAIT (60 s, TCP_TIMEWAIT_LEN) with a margin.
const CONTINUED_FOR: i64 = 120;

/// How long one wait for events lasts before the stop flag is looked at again.
const WAIT: Duration = Duration::from_millis(200);
/// Most datagrams read before they are handed on (bounds a batch's latency).
const MAX_BATCH: usize = 4096;
/// Host addresses are re-read this often (DHCP, new interfaces).
const HOST_REFRESH: Duration = Duration::from_secs(5);

impl Listener {
    /// Run until stopped or failed; every batch goes to `tx` (after the namer thread,
    /// started here, added program names).
    pub fn run(mut self, tx: Sender<ToWriter>) {
        let (to_namer, from_listener) = std::sync::mpsc::channel();
        let namer = {
            let (proc_root, fresh, stats) = (
                self.proc_root.clone(),
                self.fresh.clone(),
                self.stats.clone(),
            );
            let reload = self.reload.clone();
            let (delegating, grace) = (self.delegating.clone(), self.delegate_grace);
            // The processes the kernel starts, as it announces them.
            let events = recent::open(&proc_root);
            std::thread::Builder::new()
                .name("namer".into())
                .spawn(move || {
                    let claims = Claims::new(proc_root.clone(), delegating, grace);
                    let namer = Namer::new(proc_root).with_process_events(events);
                    name_programs(from_listener, tx, namer, fresh, stats, reload, claims)
                })
        };
        match namer {
            Ok(namer) => {
                self.listen(to_namer);
                let _ = namer.join();
            }
            Err(e) => tracing::error!("cannot start the program-naming thread: {e}"),
        }
    }

    fn listen(&mut self, tx: Sender<ToNamer>) {
        let netlink = self.proc_root.join("net/netlink");
        let inode = self.socket.inode();
        let read_drops = || {
            let text = std::fs::read_to_string(&netlink).ok()?;
            netlink::drops(&text, inode?)
        };
        let mut drops_seen = read_drops().unwrap_or(0);
        // Set by an overrun: the grown buffer, reported once the queue is drained.
        let mut buffer_after: Option<usize> = None;
        let mut host = interfaces::host_addrs();
        let mut host_read = Instant::now();
        loop {
            let stopping = self.stop.load(Ordering::SeqCst);
            if host_read.elapsed() > HOST_REFRESH {
                host = interfaces::host_addrs();
                host_read = Instant::now();
            }
            let mut events = Events::default();
            let wait = if stopping { Duration::ZERO } else { WAIT };
            // Whatever happened before this read is read by it (or was lost) when it
            // finds the queue empty.
            let read_from = now_ns();
            let got = match self.socket.receive(wait, MAX_BATCH, &mut events) {
                Ok(got) => got,
                Err(e) => {
                    let _ = tx.send(ToNamer::Pass(ToWriter::Failed(e)));
                    return;
                }
            };
            let n = events.events.len();
            if n > 0 || events.skipped_messages > 0 {
                self.stats.events.fetch_add(n as u64, Ordering::Relaxed);
                let mut batch = self.resolve(events.events, &host);
                batch.skipped = events.skipped_messages;
                if tx.send(ToNamer::Batch(batch)).is_err() {
                    return;
                }
            }
            if got.overrun {
                // Grow the buffer now; report once the queue is drained: until then the
                // socket stays congested and the kernel goes on dropping (and counting).
                self.stats.overruns.fetch_add(1, Ordering::Relaxed);
                let now = self.socket.receive_buffer();
                let want = (now * 4).clamp(4 << 20, self.max_buffer.max(now));
                buffer_after = Some(self.socket.set_receive_buffer(want).unwrap_or(now));
                continue;
            }
            // Fewer datagrams than asked for: the queue is empty.
            let drained = got.datagrams < MAX_BATCH;
            if let Some(buffer) = buffer_after.filter(|_| drained) {
                buffer_after = None;
                let drops = read_drops();
                let lost = drops.map(|d| d.saturating_sub(drops_seen));
                drops_seen = drops.unwrap_or(drops_seen);
                if tx
                    .send(ToNamer::Pass(ToWriter::Overrun {
                        lost,
                        buffer,
                        lost_before_ns: read_from,
                    }))
                    .is_err()
                {
                    return;
                }
            }
            if stopping && got.datagrams == 0 {
                return;
            }
        }
    }

    /// Attach owners to NEW events (sock_diag, now) and publish them in `fresh`.
    fn resolve(&mut self, events: Vec<conntrack::Event>, host: &HashSet<IpAddr>) -> Unnamed {
        let mut b = Batch {
            at_ms: chrono::Utc::now().timestamp_millis(),
            out: Vec::with_capacity(events.len()),
            owned: Vec::new(),
            claims: Vec::new(),
            continued: Vec::new(),
            use_marks: self.marks.usable_now(),
            lookup: Duration::ZERO,
            pings: None,
        };
        let subuids = crate::sources::netns::SubUids::host();
        for e in events {
            match e.kind {
                EventKind::New => self.resolve_new(e, host, &subuids, &mut b),
                EventKind::Destroy => {
                    if destroyed_while_alive(&e) {
                        // The socket still lives: its owner is the connection's, for the
                        // entry the kernel makes at its next packet.
                        let found = self.owner_socket(&e.flow, host, &mut b.pings);
                        self.cgroups.learn(found.iter().map(|s| s.cgroup));
                        if let Some(a) = self.owner_through(&e.flow, found.as_ref(), host, &subuids)
                        {
                            self.continued.remember(&e.flow.orig, &a, b.at_ms / 1000);
                        }
                    }
                    b.out.push(Resolved::Destroy {
                        flow: e.flow,
                        tcp_state: e.tcp_state,
                        left: e.timeout,
                        at_ms: b.at_ms,
                    })
                }
                // Not subscribed; harmless if it ever comes.
                EventKind::Update => {}
            }
        }
        self.continued.forget_before(b.at_ms / 1000 - CONTINUED_FOR);
        self.stats
            .lookup_ns
            .fetch_add(b.lookup.as_nanos() as u64, Ordering::Relaxed);
        self.stats
            .owned
            .fetch_add(b.owned.len() as u64, Ordering::Relaxed);
        self.publish(&b.out, &b.owned, b.continued);
        Unnamed {
            events: b.out,
            inodes: b.owned,
            claims: b.claims,
            skipped: 0,
        }
    }

    /// A NEW event: its owner through its socket (sock_diag, now), its mark, a container's
    /// socket, or the connection it continues; pushed to `b.out`.
    fn resolve_new(
        &mut self,
        e: conntrack::Event,
        host: &HashSet<IpAddr>,
        subuids: &crate::sources::netns::SubUids,
        b: &mut Batch,
    ) {
        let t0 = Instant::now();
        self.stats.news.fetch_add(1, Ordering::Relaxed);
        let found = self.owner_socket(&e.flow, host, &mut b.pings);
        self.cgroups.learn(found.iter().map(|s| s.cgroup));
        let none = HashMap::new();
        let idx = SocketIndex::new(found.as_slice(), &none, host.iter().copied())
            .with_delegation(&self.delegating, None)
            .with_subuids(subuids)
            .with_cgroups(self.cgroups.names());
        // The mark against the socket that sent the first packet, now.
        if let Some(c) = mark_check(&e.flow, &idx) {
            self.marks.check(c, &e.flow);
            b.use_marks = b.use_marks && self.marks.usable_now();
        }
        let by_mark =
            found.is_none() && b.use_marks && crate::owner_mark::uid_of(e.flow.mark).is_some();
        let mut at = (found.is_some() || by_mark)
            .then(|| attribute(&e.flow, &idx.with_marks(b.use_marks), None, &self.nets));
        // No socket of the host's: a container's, when its inner end is in one.
        let mut inode = found
            .as_ref()
            .map(|s| (s.inode, server_of(&e.flow, s), ends_of(s)));
        if at.is_none() {
            if let Some((a, i)) = self.containers.owner(&e.flow, host, &self.nets) {
                inode = Some((i, None, None));
                at = Some(a);
            }
        }
        let owner = at.as_ref().and_then(|a| a.attribution().cloned());
        if let (true, Some(a)) = (by_mark, &owner) {
            // Gone before its NEW was read: the mark alone names its owner.
            self.stats.by_mark.fetch_add(1, Ordering::Relaxed);
            b.continued.push((e.flow.key(), a.clone()));
        }
        // Picked up after its entry was deleted, its socket already closing.
        let owner = match (owner, e.picked_up) {
            (None, true) => {
                let a = self.continued.owner_of(&e.flow.orig);
                if let Some(a) = &a {
                    b.continued.push((e.flow.key(), a.clone()));
                }
                a
            }
            (owner, _) => owner,
        };
        if let (Some(a), Some((inode, server, ends))) = (&owner, inode) {
            let uid = a.uid;
            let w = Wanted {
                inode,
                uid,
                server,
                ends,
            };
            b.owned.push((b.out.len(), w));
            // Local traffic is charged to nobody: not worth the holders' walk.
            let charged = at
                .as_ref()
                .is_some_and(|at| matches!(at.verdict, Verdict::User(_)));
            if a.via == Via::Pending && charged {
                b.claims.push(b.out.len());
            }
        }
        b.lookup += t0.elapsed();
        b.out.push(Resolved::New {
            flow: e.flow,
            owner,
            at_ms: b.at_ms,
        });
    }

    /// The owners found (`owned` indexes `out`) and continued, in `fresh` for the writer.
    fn publish(
        &self,
        out: &[Resolved],
        owned: &[(usize, Wanted)],
        continued: Vec<(FlowKey, Attribution)>,
    ) {
        let mut fresh = self.fresh.lock().unwrap_or_else(|p| p.into_inner());
        for (i, _) in owned {
            if let Resolved::New {
                flow,
                owner: Some(a),
                ..
            } = &out[*i]
            {
                fresh.insert(flow.key(), a.clone());
            }
        }
        fresh.extend(continued);
    }

    /// The attribution of `flow` through its owning socket, if one was found and it is
    /// settled (not a service's socket still waiting for its user's process).
    fn owner_through(
        &self,
        flow: &Flow,
        socket: Option<&Socket>,
        host: &HashSet<IpAddr>,
        subuids: &crate::sources::netns::SubUids,
    ) -> Option<Attribution> {
        let socket = socket?;
        attribute_through(flow, socket, host, &self.delegating, subuids, &self.nets)
            .filter(|a| a.via != Via::Pending)
            .map(|a| Attribution {
                cgroup: self.cgroups.names().get(&socket.cgroup).cloned(),
                ..a
            })
    }

    /// The socket that owns `flow`, if a live one does ([`SockDiag::owner_socket`]; a ping
    /// socket from `pings`, read from `/proc/net/icmp{,6}` when first needed).
    fn owner_socket(
        &mut self,
        flow: &Flow,
        host: &HashSet<IpAddr>,
        pings: &mut Option<PingSockets>,
    ) -> Option<Socket> {
        if L4::from_ipproto(flow.orig.proto).is_some_and(L4::is_ping) {
            let pings = pings.get_or_insert_with(|| PingSockets::read(&self.proc_root));
            let here = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
            return pings.owner_of(flow, here).cloned();
        }
        let mut asked = 0;
        let errors = &self.stats.lookup_errors;
        let found = self.diag.owner_socket(flow, host, &mut asked, &mut |e| {
            // Once loudly (it names the module to load), then quietly: passes still find
            // the owners of flows whose sockets live long enough.
            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("{e}: owners of new flows are left to the passes until it works");
            } else {
                tracing::debug!(error = %e, "sock_diag lookup failed");
            }
        });
        self.stats.lookups.fetch_add(asked, Ordering::Relaxed);
        found
    }
}

/// The owners of services' flows found since their NEW events: published in `fresh` and
/// sent to the writer after everything sent before (so after their NEW events).
fn send_claimed(
    claims: &mut Claims,
    namer: &mut Namer,
    tx: &Sender<ToWriter>,
    fresh: &Fresh,
    stats: &Stats,
) -> bool {
    let events = claims.check(namer);
    if events.is_empty() {
        return true;
    }
    {
        let mut fresh = fresh.lock().unwrap_or_else(|p| p.into_inner());
        for e in &events {
            if let Resolved::New {
                flow,
                owner: Some(a),
                ..
            } = e
            {
                fresh.insert(flow.key(), a.clone());
            }
        }
    }
    stats.claimed.store(claims.found, Ordering::Relaxed);
    stats
        .full_walks
        .store(namer.work.full_walks, Ordering::Relaxed);
    tx.send(ToWriter::Batch { events, skipped: 0 }).is_ok()
}

/// The namer thread: program names for the owners of each batch, by one walk of
/// `/proc/PID/fd` for the inodes not cached yet; then on to the writer, in order. Between
/// batches, it looks after the flows of services' sockets ([`Claims`]).
fn name_programs(
    rx: std::sync::mpsc::Receiver<ToNamer>,
    tx: Sender<ToWriter>,
    mut namer: Namer,
    fresh: Fresh,
    stats: Arc<Stats>,
    reload: Arc<AtomicBool>,
    mut claims: Claims,
) {
    // A message that ended a coalesced batch, to handle next.
    let mut held: Option<ToNamer> = None;
    loop {
        let msg = match held.take() {
            Some(m) => m,
            None if claims.is_empty() && !namer.has_process_events() => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
            None => match rx.recv_timeout(if claims.is_empty() {
                DRAIN_EVERY
            } else {
                CLAIM_CHECK
            }) {
                Ok(m) => m,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    // Idle: the queue of process events read, so it never fills.
                    namer.drain_events();
                    if !claims.is_empty()
                        && !send_claimed(&mut claims, &mut namer, &tx, &fresh, &stats)
                    {
                        return;
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            },
        };
        let mut batch = match msg {
            ToNamer::Pass(m) => {
                if tx.send(m).is_err() {
                    return;
                }
                continue;
            }
            ToNamer::Batch(b) => b,
        };
        held = coalesce(&mut batch, &rx);
        if reload.swap(false, Ordering::SeqCst) {
            namer.clear();
        }
        if !batch.inodes.is_empty() {
            name_batch(&mut namer, &mut batch, &fresh, &stats);
        }
        claim(&batch, &mut namer, &mut claims);
        let out = ToWriter::Batch {
            events: batch.events,
            skipped: batch.skipped,
        };
        if tx.send(out).is_err() {
            return;
        }
        if !claims.is_empty() && !send_claimed(&mut claims, &mut namer, &tx, &fresh, &stats) {
            return;
        }
    }
}

/// In a burst the listener sends many small batches: every one already queued is added to
/// `batch`, so one walk of /proc serves them all. Returns the message that ended the run,
/// to handle next.
fn coalesce(batch: &mut Unnamed, rx: &std::sync::mpsc::Receiver<ToNamer>) -> Option<ToNamer> {
    while let Ok(more) = rx.try_recv() {
        match more {
            ToNamer::Batch(b) => {
                let base = batch.events.len();
                batch
                    .inodes
                    .extend(b.inodes.into_iter().map(|(i, w)| (base + i, w)));
                batch.claims.extend(b.claims.into_iter().map(|i| base + i));
                batch.events.extend(b.events);
                batch.skipped += b.skipped;
            }
            other => return Some(other),
        }
    }
    None
}

/// The programs of the batch's owners, from one walk of /proc, into its events and into
/// `fresh` (where the writer has not taken them yet).
fn name_batch(namer: &mut Namer, batch: &mut Unnamed, fresh: &Fresh, stats: &Stats) {
    let t = Instant::now();
    let wanted: Vec<Wanted> = batch.inodes.iter().map(|(_, w)| *w).collect();
    let programs = namer.name(&wanted);
    stats
        .scan_ns
        .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    stats
        .process_walks
        .store(namer.work.process_walks, Ordering::Relaxed);
    stats
        .full_walks
        .store(namer.work.full_walks, Ordering::Relaxed);
    let mut fresh = fresh.lock().unwrap_or_else(|p| p.into_inner());
    for (i, w) in &batch.inodes {
        let Some(p) = programs.get(&w.inode) else {
            continue;
        };
        if let Resolved::New {
            flow,
            owner: Some(a),
            ..
        } = &mut batch.events[*i]
        {
            a.program = Some(p.clone());
            stats.programs.fetch_add(1, Ordering::Relaxed);
            // The writer may have stored and dropped it already: only update.
            if let Some(f) = fresh.get_mut(&flow.key()) {
                f.program = Some(p.clone());
            }
        }
    }
}

/// The batch's flows whose service waits for its user's process join `claims` (with the
/// holder found by the walk, if any); its ended flows leave.
fn claim(batch: &Unnamed, namer: &mut Namer, claims: &mut Claims) {
    for i in &batch.claims {
        if let Resolved::New {
            flow,
            owner: Some(a),
            at_ms,
        } = &batch.events[*i]
        {
            let inode = batch.inodes.iter().find(|(j, _)| j == i).map(|x| x.1.inode);
            let holder = inode.and_then(|ino| namer.holder_pid(ino));
            claims.add(flow.clone(), a.clone(), *at_ms, holder);
        }
    }
    for e in &batch.events {
        if let Resolved::Destroy { flow, .. } = e {
            claims.ended(&flow.key());
        }
    }
}

/// The server socket behind `socket`, the socket found for `flow`: itself when it is a
/// listener or an unconnected socket; the listener of its local end when it answers the
/// flow (an accepted TCP connection: its local end is the reply tuple's source).
fn server_of(flow: &Flow, socket: &Socket) -> Option<Server> {
    if socket.remote.port() == 0 && socket.remote.ip().is_unspecified() {
        return Some(Server::Itself);
    }
    let answers = socket.local.port() == flow.reply.sport
        && canonical_ip(socket.local.ip()) == canonical_ip(flow.reply.src);
    (socket.proto == L4::Tcp && answers).then_some(Server::Listener(socket.local))
}

/// Now, in ns since the epoch: the clock of conntrack's timestamps.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The ends of `socket` for the namer to look it up again (TCP and UDP sockets; a ping
/// socket is not in sock_diag's tables).
fn ends_of(socket: &Socket) -> Option<Ends> {
    matches!(socket.proto, L4::Tcp | L4::Udp).then_some(Ends {
        l4: socket.proto,
        local: socket.local,
        remote: socket.remote,
    })
}

/// Whether a DESTROY event ended a TCP entry whose connection still lived (removed by
/// `conntrack -D`/`-F`, early drop, a reload), not one that closed or expired.
fn destroyed_while_alive(e: &conntrack::Event) -> bool {
    e.flow.orig.proto == crate::model::IPPROTO_TCP
        && e.tcp_state.is_some_and(|s| {
            !matches!(
                s,
                CtTcpState::TimeWait | CtTcpState::Close | CtTcpState::None
            )
        })
}
