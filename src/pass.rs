//! One accounting pass: observe the kernel, attribute every flow, account the deltas
//! against the saved state, and store the result in one transaction.
//!
//! `snapshot` runs one; the daemon runs one per interval. The stages stay pure
//! (`attribute`, `account`); this module only wires them to the kernel and the store.

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{debug, info, warn};

use crate::account::{account_saved, FlowState, Hold, PassPlan, Totals};
use crate::attribute::{
    attribute, attribute_looked, mark_check_looked, Attributed, Attribution, Continued, Delegating,
    Direction, LocalNets, Lookup, MarkCheck, Reason, SocketIndex, SocketMaps, Verdict, Via,
};
use crate::containers::{self, Containers};
use crate::model::{FastMap, FastSet, Flow, FlowKey, Socket, SocketState, L4};
use crate::owner_mark;
use crate::prereq::{self, PrereqError};
use crate::sources::netns::SubUids;
use crate::sources::processes::{
    last_pid, scan_pids_owners, scan_socket_holders, scan_users_holders, NewPids,
};
use crate::sources::sockdiag::SockDiag;
use crate::sources::sockets::{ping_sockets_for, read_sockets, SocketTable};
use crate::sources::{conntrack, interfaces};
use crate::store::{PassRecord, Store};
use crate::units::human_bytes;

/// What a pass needs to know besides the store.
#[derive(Debug, Clone)]
pub struct PassConfig {
    /// Root of the proc filesystem (sockets and processes).
    pub proc_root: PathBuf,
    /// Networks whose traffic is charged to nobody.
    pub nets: LocalNets,
    /// Passes a vanished flow is remembered before it is pruned.
    pub prune_after: u32,
    /// Uids of services whose sockets are charged through the processes holding them.
    pub delegating: Delegating,
    /// How long a young flow on such a socket that no user's process holds yet is held
    /// back before it is called the service's own.
    pub delegate_grace: Duration,
    /// Whether flows' owner marks are believed (shared with the daemon's listener).
    pub marks: Arc<MarkTrust>,
    /// A DESTROY event comes for every flow (the daemon): see [`Hold::destroys_follow`].
    pub destroys_follow: bool,
}

impl PassConfig {
    /// How the accounting holds back pending flows (whole seconds: passes are dated so).
    pub fn hold(&self) -> Hold {
        Hold {
            grace: self.delegate_grace.as_secs() as i64,
            ended: false,
            destroys_follow: self.destroys_follow,
        }
    }
}

/// What the kernel showed in one pass, joined.
pub struct Observation {
    /// Socket rows (first read plus sockets found on a re-read).
    pub sockets: SocketTable,
    /// The conntrack dump.
    pub dump: conntrack::Dump,
    /// `attributed[i]` is the verdict for `dump.flows[i]`.
    pub attributed: Vec<Attributed>,
    /// Flows charged to a user this pass named only by their owner mark (no socket, no
    /// kept attribution).
    pub by_mark: usize,
    /// Flows charged to a user, and of those, with a program name.
    pub charged: usize,
    /// See `charged`.
    pub named: usize,
}

/// The result of a stored pass.
#[derive(Debug, Clone)]
pub struct PassOutcome {
    /// Pass id in the database.
    pub id: i64,
    /// What was recorded about the pass.
    pub record: PassRecord,
    /// Its totals.
    pub totals: Totals,
    /// Wall time it took.
    pub took: Duration,
    /// Flows charged by their owner mark alone.
    pub by_mark: usize,
    /// Flows charged to a user, and of those, with a program name.
    pub charged: usize,
    /// See `charged`.
    pub named: usize,
}

impl PassOutcome {
    /// The one-line summary printed after a pass.
    pub fn summary(&self) -> String {
        let (rec, t) = (&self.record, &self.totals);
        format!(
            "netledger: pass {}: {} sockets, {} flows ({} new, {} without counters); \
             users {} ({} B), unattributed {} ({} B), excluded local {} ({} B); {:.0?}; \
             {} flows charged by owner mark, programs named for {} of {} charged flows",
            self.id,
            rec.sockets,
            t.flows,
            t.new_flows,
            t.flows_without_counters,
            human_bytes(t.attributed.bytes()),
            t.attributed.bytes(),
            human_bytes(t.unattributed.bytes()),
            t.unattributed.bytes(),
            human_bytes(t.excluded.bytes()),
            t.excluded.bytes(),
            self.took,
            self.by_mark,
            self.named,
            self.charged,
        )
    }
}

/// Wall time per stage of a pass, logged at `info` (`-v`) to show where a pass goes.
/// A stage run on the main thread while another thread read the kernel is shown as
/// `name=…ms(beside)`: its time is not on the pass's critical path.
#[derive(Debug, Default)]
pub struct Stages {
    last: Option<Instant>,
    laps: Vec<(&'static str, Duration, bool)>,
}

impl Stages {
    /// Start timing the first stage.
    pub fn start() -> Stages {
        Stages {
            last: Some(Instant::now()),
            laps: Vec::new(),
        }
    }

    /// Close the stage that just ended.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            self.laps.push((name, now - last, false));
        }
    }

    /// Take the laps of `other` (run on another thread meanwhile) and stage `name`, which
    /// took `took` beside them; the next stage starts where `other` ended.
    pub fn beside(&mut self, other: Stages, name: &'static str, took: Duration) {
        self.laps.extend(other.laps);
        self.laps.push((name, took, true));
        self.last = other.last.or(self.last);
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d, beside)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let beside = if *beside { "(beside)" } else { "" };
            write!(f, "{sep}{name}={:.1}ms{beside}", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}

/// Run one pass against `store`.
pub fn run_pass(store: &mut Store, cfg: &PassConfig, mode: &'static str) -> Result<PassOutcome> {
    run_pass_with(store, cfg, mode, &|_| None)
}

/// [`run_pass`], with owners known from elsewhere for flows the store has no attribution
/// for yet (the daemon's owners found at a flow's NEW event and not written yet): they
/// count as the flow's kept attribution. `known` is asked after the dump, only for flows
/// without a saved attribution.
pub fn run_pass_with(
    store: &mut Store,
    cfg: &PassConfig,
    mode: &'static str,
    known: &dyn Fn(&FlowKey) -> Option<Attribution>,
) -> Result<PassOutcome> {
    let t0 = Instant::now();
    let mut stages = Stages::start();
    let started_at = chrono::Utc::now().timestamp();
    // Another thread reads the kernel (sockets, then the conntrack dump's datagrams, as
    // received) while this one loads the saved state, then decodes the datagrams: the
    // kernel fills the next ones meanwhile.
    cfg.marks.refresh();
    let (prev, sockets, read, decoded, ruleset) = std::thread::scope(|s| {
        let (socket_tx, socket_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = s.spawn(move || {
            let mut stages = Stages::start();
            let sockets = socket_table(&cfg.proc_root);
            stages.lap("sockets");
            let read = sockets.is_ok();
            // Only fails when the other side is gone (a panic).
            let _ = socket_tx.send(sockets);
            if !read {
                return (Ok(()), stages);
            }
            let read = conntrack::dump_datagrams(|datagram| {
                let _ = tx.send(datagram);
            })
            .context("dumping the conntrack table");
            stages.lap("dump");
            (read, stages)
        });
        let loading = Instant::now();
        let prev = store.load_state();
        let loaded = loading.elapsed();
        // The first index's maps, built while the dump is coming. Nothing received: the
        // reader panicked (resumed below).
        let sockets = socket_rx.recv().ok();
        let indexing = Instant::now();
        let sockets = sockets.map(|read| {
            read.map(|sockets| {
                let maps = socket_maps(&sockets);
                (sockets, maps)
            })
        });
        let indexed = indexing.elapsed();
        let mut decoder = conntrack::Decoder::new();
        let mut decoded = Ok(());
        // The ruleset, read by `nft` beside the rest of the pass as soon as a flow with
        // netledger's mark shows up (see `observe_read`).
        let mut ruleset = None;
        let mut looked = 0;
        for datagram in rx {
            if decoded.is_ok() {
                decoded = decoder.feed(&datagram);
            }
            let flows = decoder.flows();
            if ruleset.is_none()
                && flows[looked..]
                    .iter()
                    .any(|f| owner_mark::uid_of(f.mark).is_some())
                && cfg.marks.wants_ruleset()
            {
                ruleset = Some(std::thread::spawn(owner_mark::ruleset_state));
            }
            looked = flows.len();
        }
        let (read, kernel) = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        stages.beside(kernel, "load_state", loaded);
        stages.beside(Stages::default(), "index", indexed);
        stages.lap("decode");
        let sockets = sockets.expect("the reader sends the sockets before it ends");
        (
            prev,
            sockets,
            read,
            decoded.map(|()| decoder.finish()),
            ruleset,
        )
    });
    let prev = prev?;
    let (sockets, maps) = sockets?;
    read?;
    let dump = decoded.context("dumping the conntrack table")?;
    not_tracking(&sockets, &dump)?;
    let olds = saved_states(&dump, &prev);
    let obs = observe_read(
        &cfg.proc_root,
        sockets,
        maps,
        dump,
        ruleset,
        &olds,
        &prev,
        known,
        &cfg.nets,
        &cfg.delegating,
        &cfg.marks,
        &mut stages,
    )?;
    let plan = account_saved(
        started_at,
        &obs.dump.flows,
        &obs.attributed,
        &olds,
        &prev,
        cfg.prune_after,
        cfg.hold(),
    );
    if plan.totals.replaced > 0 {
        debug!(
            flows = plan.totals.replaced,
            "left for the next pass: a new entry under a saved flow's key, whose DESTROY is on its way"
        );
    }
    if plan.totals.held > 0 {
        info!(
            flows = plan.totals.held,
            "held back: on a service's socket no user's process holds yet"
        );
    }
    let users = user_names(&plan, &crate::sources::users::name_of);
    stages.lap("account");
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
    stages.lap("write");
    info!("pass stages: {stages}");
    Ok(PassOutcome {
        id,
        record,
        totals: plan.totals,
        took: t0.elapsed(),
        by_mark: obs.by_mark,
        charged: obs.charged,
        named: obs.named,
    })
}

/// Read sockets, conntrack and processes, and attribute every flow.
///
/// Sockets are read before the dump, so a socket closed in between still shows. A flow
/// born after the socket read has no socket row yet: when a new TCP/UDP flow to or from
/// this host finds no socket, the socket tables are read once more and such flows retried.
pub fn observe<S: BuildHasher>(
    proc_root: &Path,
    prev: &HashMap<FlowKey, FlowState, S>,
    nets: &LocalNets,
    delegating: &Delegating,
) -> Result<Observation> {
    observe_timed(
        proc_root,
        prev,
        &|_| None,
        nets,
        delegating,
        &MarkTrust::off(),
        &mut Stages::default(),
    )
}

/// [`observe`], with owners `known` from elsewhere for flows without a settled saved
/// attribution, closing a lap of `stages` after each stage.
pub fn observe_timed<S: BuildHasher>(
    proc_root: &Path,
    prev: &HashMap<FlowKey, FlowState, S>,
    known: &dyn Fn(&FlowKey) -> Option<Attribution>,
    nets: &LocalNets,
    delegating: &Delegating,
    marks: &MarkTrust,
    stages: &mut Stages,
) -> Result<Observation> {
    let (sockets, dump) = read_kernel(proc_root, stages)?;
    let olds = saved_states(&dump, prev);
    let maps = socket_maps(&sockets);
    observe_read(
        proc_root, sockets, maps, dump, None, &olds, prev, known, nets, delegating, marks, stages,
    )
}

/// The addresses of this host, and the maps of the first index over `sockets`.
fn socket_maps(sockets: &SocketTable) -> (HashSet<IpAddr>, SocketMaps) {
    let host = interfaces::host_addrs();
    let maps = SocketMaps::new(&sockets.sockets, host.iter().copied());
    (host, maps)
}

/// The saved state of each flow of `dump` (`[i]` for `dump.flows[i]`): looked up once,
/// for the attribution and the accounting both.
fn saved_states<'p, S: BuildHasher>(
    dump: &conntrack::Dump,
    prev: &'p HashMap<FlowKey, FlowState, S>,
) -> Vec<Option<&'p FlowState>> {
    dump.flows.iter().map(|f| prev.get(&f.key())).collect()
}

/// What the kernel shows: the socket tables, read before the conntrack dump (so a socket
/// closed in between still shows). Fails when the dump is empty while established TCP
/// connections exist (conntrack does not track this namespace).
fn read_kernel(proc_root: &Path, stages: &mut Stages) -> Result<(SocketTable, conntrack::Dump)> {
    let sockets = socket_table(proc_root)?;
    stages.lap("sockets");
    let dump = conntrack::dump().context("dumping the conntrack table")?;
    stages.lap("dump");
    not_tracking(&sockets, &dump)?;
    Ok((sockets, dump))
}

/// Fails when the dump is empty while established TCP connections exist: conntrack
/// does not track this namespace.
fn not_tracking(sockets: &SocketTable, dump: &conntrack::Dump) -> Result<()> {
    if dump.flows.is_empty() {
        let established = sockets
            .sockets
            .iter()
            .filter(|s| s.proto == L4::Tcp && s.socket_state() == Some(SocketState::Established))
            .filter(|s| !s.local.ip().is_loopback())
            .count();
        if established > 0 {
            return Err(PrereqError::NotTracking { established }.into());
        }
    }
    Ok(())
}

/// [`observe_timed`] past the kernel reads: the processes, the attribution, the retry.
#[allow(clippy::too_many_arguments)]
fn observe_read<S: BuildHasher>(
    proc_root: &Path,
    mut sockets: SocketTable,
    (host, mut maps): (HashSet<IpAddr>, SocketMaps),
    dump: conntrack::Dump,
    ruleset: Option<std::thread::JoinHandle<Result<(), String>>>,
    olds: &[Option<&FlowState>],
    prev: &HashMap<FlowKey, FlowState, S>,
    known: &dyn Fn(&FlowKey) -> Option<Attribution>,
    nets: &LocalNets,
    delegating: &Delegating,
    marks: &MarkTrust,
    stages: &mut Stages,
) -> Result<Observation> {
    // The ruleset is read only when some flow carries a mark netledger writes: asked now,
    // by `nft` running beside the stages below, and taken when the marks are weighed.
    let marked = dump
        .flows
        .iter()
        .any(|f| owner_mark::uid_of(f.mark).is_some());
    let ruleset = ruleset.or_else(|| {
        (marked && marks.wants_ruleset()).then(|| std::thread::spawn(owner_mark::ruleset_state))
    });
    let saved = |i: usize| olds[i].and_then(|s| s.attribution.as_ref());
    let pending = |a: Option<&Attribution>| a.is_none_or(|a| a.via == Via::Pending);
    let mut extra: FastMap<FlowKey, Attribution> = dump
        .flows
        .iter()
        .enumerate()
        .filter(|(i, _)| pending(saved(*i)))
        .filter_map(|(_, f)| known(&f.key()).map(|a| (f.key(), a)))
        .collect();
    continue_picked_up(&dump, prev, &mut extra);
    // What a flow already had; an owner found meanwhile for a held flow (the daemon's
    // looks at a service's socket) beats its saved pending one.
    let prior = |(i, f): (usize, &Flow)| match saved(i) {
        Some(s) if s.via != Via::Pending => Some(s),
        s if extra.is_empty() => s,
        s => match extra.get(&f.key()) {
            Some(k) if s.is_none() || k.via != Via::Pending => Some(k),
            _ => s,
        },
    };
    // Looked up once per flow: the stages below read it several times.
    let priors: Vec<Option<&Attribution>> = dump.flows.iter().enumerate().map(prior).collect();
    // Ping sockets (`/proc/net/icmp{,6}`) only when an ICMP flow from here has no owner yet.
    let ownerless = dump.flows.iter().zip(&priors).filter(|(_, p)| p.is_none());
    let here = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
    if let Some(pings) = ping_sockets_for(proc_root, ownerless.map(|(f, _)| f), here) {
        let from = sockets.sockets.len();
        sockets.append(pings);
        maps.add(&sockets.sockets, from);
    }
    // Programs are looked up only for the sockets of flows not attributed before: a flow
    // keeps the program it had, so a steady-state pass walks no /proc/PID/fd at all. Every
    // holder is looked up for a delegating service's sockets of flows not settled yet (new
    // or held back), unless their traffic is local (charged to nobody).
    let no_owners = HashMap::new();
    let idx = SocketIndex::with_maps(&sockets.sockets, &no_owners, maps)
        .with_delegation(delegating, None);
    let wanted: HashSet<u64> = dump
        .flows
        .iter()
        .zip(&priors)
        .filter(|(_, p)| p.is_none())
        .filter_map(|(f, _)| idx.socket_inode(f))
        .collect();
    let mut every = delegated_inodes(&dump.flows, &idx, &priors, nets, None);
    // A user's process that has come to hold a service's own socket was started since the
    // last look (sshd forks the session's process at the login): only those are read, and
    // of them only users' descriptors; a walk of every process for flows held back sees
    // everything anyway. A look, for every such socket, when one of their flows moved
    // (idle ones have nothing to charge: a later look still sees every process started
    // since this one); none started since: nothing to look at.
    let own_moved = dump.flows.iter().zip(&priors).zip(olds).any(|((f, p), o)| {
        p.is_some_and(|a| a.via == Via::Own && a.direction == Direction::In)
            && o.is_some_and(|o| {
                Some(o.orig) != f.orig_counters || Some(o.reply) != f.reply_counters
            })
    });
    let look = own_moved.then(|| LastLook::read(proc_root));
    let recheck = match &look {
        Some(l) if !l.pids.is_empty() || !every.is_empty() => {
            own_inodes(&dump.flows, &idx, &priors, nets)
        }
        _ => HashSet::new(),
    };
    let mut scan = match look {
        None => scan_socket_holders(proc_root, &wanted, &every),
        Some(look) => {
            let scan = if every.is_empty() {
                let mut scan = scan_socket_holders(proc_root, &wanted, &every);
                let skip = |uid| delegating.contains(uid);
                let users = scan_users_holders(proc_root, &recheck, &skip, look.pids);
                scan.holders.extend(users.holders);
                scan.processes += users.processes;
                scan.vanished += users.vanished;
                scan.denied += users.denied;
                scan
            } else {
                every.extend(recheck.iter().copied());
                scan_socket_holders(proc_root, &wanted, &every)
            };
            look.done();
            scan
        }
    };
    stages.lap("processes");
    let attribute_with = |idx: &SocketIndex| {
        dump.flows
            .iter()
            .zip(&priors)
            .map(|(f, p)| attribute(f, idx, *p, nets))
            .collect::<Vec<_>>()
    };
    // A uid of a subordinate range (a user's rootless user namespace) is its owner's.
    let subuids = SubUids::host();
    let idx = idx
        .with_owners(&scan.owners)
        .with_delegation(delegating, Some(&scan.holders))
        .with_subuids(&subuids)
        .with_recheck(&recheck);
    // Each flow's socket, looked up once for the marks' check and the attribution.
    let looks: Vec<Lookup> = dump.flows.iter().map(|f| idx.lookup(f)).collect();
    // Every mark is held against its flow's live socket before any is believed.
    for (f, looked) in dump.flows.iter().zip(&looks) {
        if let Some(c) = mark_check_looked(f, &idx, looked) {
            marks.check(c, f.mark, || describe(f));
        }
    }
    let use_marks = marked
        && marks.usable_with(|| match ruleset {
            Some(nft) => nft.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => owner_mark::ruleset_state(),
        });
    let idx = idx.with_marks(use_marks);
    let mut attributed: Vec<Attributed> = dump
        .flows
        .iter()
        .zip(&priors)
        .zip(&looks)
        .map(|((f, p), looked)| attribute_looked(f, &idx, looked, *p, nets))
        .collect();
    // Charged by the mark alone: no kept owner, no socket named, yet a user's. Counted on
    // this index: the retry below replaces only unattributed verdicts.
    let by_mark = if use_marks {
        dump.flows
            .iter()
            .zip(&priors)
            .zip(&attributed)
            .filter(|((f, p), a)| {
                p.is_none()
                    && matches!(a.verdict, Verdict::User(_))
                    && idx.socket_inode(f).is_none()
            })
            .count()
    } else {
        0
    };
    stages.lap("attribute");
    let retry = olds.iter().zip(&attributed).any(|(old, a)| {
        matches!(a.verdict, Verdict::Unattributed(Reason::NoSocket)) && old.is_none()
    });
    if retry {
        let again = socket_table(proc_root)?;
        let known: HashSet<u64> = live_inodes(&sockets.sockets);
        let fresh: HashSet<u64> = live_inodes(&again.sockets)
            .difference(&known)
            .copied()
            .collect();
        if !fresh.is_empty() {
            let idx = SocketIndex::new(&again.sockets, &no_owners, host.iter().copied())
                .with_delegation(delegating, None);
            let every = delegated_inodes(&dump.flows, &idx, &priors, nets, Some(&fresh));
            let more = scan_socket_holders(proc_root, &fresh, &every);
            scan.owners.extend(more.owners);
            scan.holders.extend(more.holders);
            scan.vanished += more.vanished;
            scan.denied += more.denied;
            // Keep the first read's rows (sockets closed since still count) and add the
            // rows of the new sockets.
            sockets.sockets.extend(
                again
                    .sockets
                    .into_iter()
                    .filter(|s| fresh.contains(&s.inode)),
            );
            let idx = SocketIndex::new(&sockets.sockets, &scan.owners, host.iter().copied())
                .with_delegation(delegating, Some(&scan.holders))
                .with_subuids(&subuids)
                .with_recheck(&recheck)
                .with_marks(use_marks);
            let second = attribute_with(&idx);
            for (a, b) in attributed.iter_mut().zip(second) {
                if matches!(a.verdict, Verdict::Unattributed(_)) {
                    *a = b;
                }
            }
        }
        stages.lap("retry");
    }
    // Flows the host's sockets do not explain, seen for the first time: a container's?
    // (Only on the live proc filesystem: namespaces are asked of the kernel.)
    let is_host = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
    let candidates: Vec<(usize, IpAddr)> = dump
        .flows
        .iter()
        .zip(&attributed)
        .enumerate()
        .filter(|(i, (_, a))| {
            matches!(
                a.verdict,
                Verdict::Unattributed(Reason::Forwarded | Reason::NoSocket)
            ) && olds[*i].is_none()
        })
        .filter_map(|(i, (f, _))| containers::inner_end(f, &is_host).map(|ip| (i, ip)))
        .collect();
    if !candidates.is_empty() && proc_root == Path::new("/proc") {
        let placed = in_containers(proc_root, &dump.flows, &candidates, &mut attributed, nets);
        debug!(
            candidates = candidates.len(),
            placed, "flows looked for in containers"
        );
        stages.lap("containers");
    }
    if scan.denied > 0 && prereq::can_read_all_fds(proc_root) {
        // Even CAP_SYS_PTRACE cannot open some (a VM's or container's init): expected.
        debug!(
            processes = scan.denied,
            "processes whose descriptors could not be read"
        );
    } else if scan.denied > 0 {
        warn!(
            processes = scan.denied,
            "could not read other users' /proc/PID/fd (needs CAP_SYS_PTRACE and \
             CAP_DAC_READ_SEARCH): their programs are unknown, their uids are not affected"
        );
    }
    let charged: Vec<&Attribution> = attributed
        .iter()
        .filter_map(|a| match &a.verdict {
            Verdict::User(a) => Some(a),
            _ => None,
        })
        .collect();
    let named = charged.iter().filter(|a| a.program.is_some()).count();
    info!(
        sockets = sockets.sockets.len(),
        bad_lines = sockets.bad_lines.len(),
        flows = dump.flows.len(),
        processes = scan.processes,
        by_mark,
        charged = charged.len(),
        named,
        "observed"
    );
    Ok(Observation {
        sockets,
        dump,
        by_mark,
        charged: charged.len(),
        named,
        attributed,
    })
}

/// Attribute the flows `candidates` names (index into `flows`, inner address) through the
/// sockets of the container holding their inner address, replacing their verdicts in
/// `attributed` where a socket names an owner. Returns how many it placed.
fn in_containers(
    proc_root: &Path,
    flows: &[Flow],
    candidates: &[(usize, IpAddr)],
    attributed: &mut [Attributed],
    nets: &LocalNets,
) -> usize {
    static WARNED: AtomicBool = AtomicBool::new(false);
    let paths = containers::Paths {
        proc_root: proc_root.to_path_buf(),
        ..containers::Paths::default()
    };
    let found = match Containers::read(&paths) {
        Ok(c) => c,
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!("could not look into other network namespaces ({e}): traffic of containers stays unattributed");
            }
            return 0;
        }
    };
    if found.denied > 0
        && !prereq::can_read_all_fds(proc_root)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        warn!(
            processes = found.denied,
            "could not read the network namespace of other users' processes (needs \
             CAP_SYS_PTRACE): traffic of the containers they run stays unattributed"
        );
    }
    let placed: Vec<(usize, usize)> = candidates
        .iter()
        .filter_map(|&(i, ip)| found.holding(ip).map(|s| (i, s)))
        .collect();
    if placed.is_empty() {
        return 0;
    }
    let spaces: HashSet<usize> = placed.iter().map(|&(_, s)| s).collect();
    let batch: Vec<(&Flow, usize)> = placed.iter().map(|&(i, s)| (&flows[i], s)).collect();
    let t0 = Instant::now();
    let sockets = containers::Sockets::find(&found, proc_root, &batch, &mut HashMap::new());
    debug!(took = ?t0.elapsed(), "containers' sockets read");
    if sockets.from_proc > 0 && !WARNED.swap(true, Ordering::Relaxed) {
        info!(
            namespaces = sockets.from_proc,
            "containers' sockets read from /proc/PID/net (without CAP_SYS_ADMIN no sock_diag \
             socket can be opened in them): slower, and the daemon misses connections shorter \
             than that read"
        );
    }
    let wanted: HashSet<u64> = placed
        .iter()
        .filter_map(|&(i, s)| sockets.socket_inode(&found, s, &flows[i]))
        .collect();
    // Their programs: only the containers' own processes hold their sockets.
    let pids: Vec<u32> = spaces
        .iter()
        .flat_map(|&s| found.spaces()[s].ns.pids.iter().copied())
        .collect();
    let owners = scan_pids_owners(proc_root, &pids, &wanted).owners;
    debug!(took = ?t0.elapsed(), "containers' owners read");
    let subuids = SubUids::read(&paths.subuid);
    let got = sockets.attribute(&found, &batch, &owners, nets, &subuids, proc_root);
    let mut n = 0;
    for (&(i, _), g) in placed.iter().zip(got) {
        match g {
            Some(g) => {
                attributed[i] = g;
                n += 1;
            }
            // A container's flow whose socket is gone (or was never seen there): not
            // forwarded for other machines.
            None => {
                if let Verdict::Unattributed(r @ Reason::Forwarded) = &mut attributed[i].verdict {
                    *r = Reason::NoSocket;
                }
            }
        }
    }
    n
}

/// A flow in a warning: `tcp 198.51.100.1:40000 -> 198.51.100.2:443`.
pub fn describe(f: &Flow) -> String {
    let proto = L4::from_ipproto(f.orig.proto).map_or("ip", |l| match l {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
        L4::UdpLite => "udplite",
        L4::Icmp => "icmp",
        L4::Icmpv6 => "icmpv6",
    });
    format!("{proto} {} -> {}", f.orig.src_sa(), f.orig.dst_sa())
}

/// Entries the kernel picked up in the middle of a connection whose earlier entry was
/// deleted (see [`Continued`]) continue that entry's owner: the earlier entry is still in
/// the saved state, missing from this dump. Added to `extra`, the owners known besides
/// the saved state.
fn continue_picked_up<S: BuildHasher>(
    dump: &conntrack::Dump,
    prev: &HashMap<FlowKey, FlowState, S>,
    extra: &mut FastMap<FlowKey, Attribution>,
) {
    let picked: Vec<&Flow> = dump
        .flows
        .iter()
        .zip(&dump.picked_up)
        .filter(|(f, p)| **p && !prev.contains_key(&f.key()) && !extra.contains_key(&f.key()))
        .map(|(f, _)| f)
        .collect();
    if picked.is_empty() {
        return;
    }
    let present: FastSet<FlowKey> = dump.flows.iter().map(Flow::key).collect();
    let mut ended = Continued::default();
    for (k, s) in prev {
        if let (Some(a), false) = (&s.attribution, present.contains(k)) {
            ended.remember(&k.orig, a, s.last_seen);
        }
    }
    for f in picked {
        if let Some(a) = ended.owner_of(&f.orig) {
            extra.insert(f.key(), a);
        }
    }
}

/// Every TCP and UDP socket of this namespace: over sock_diag netlink when reading the
/// live `/proc` (the kernel hands over binary records instead of formatting text: about
/// half the cost at 40,000 sockets), else — another proc root, or sock_diag unavailable —
/// from the `/proc/net` tables, the fixture-tested path.
fn socket_table(proc_root: &Path) -> Result<SocketTable> {
    if proc_root == Path::new("/proc") {
        match SockDiag::open().and_then(|mut sd| sd.dump_all()) {
            Ok(sockets) => {
                return Ok(SocketTable {
                    sockets,
                    bad_lines: Vec::new(),
                })
            }
            Err(e) => debug!("sock_diag dump failed, reading /proc/net instead: {e}"),
        }
    }
    read_sockets(proc_root).context("reading socket tables")
}

/// The inodes of the delegating sockets whose every holder a pass looks up: those of the
/// flows without a settled attribution (new, or held back) whose traffic is charged to
/// someone (local traffic is not: it is not worth a walk of every process). `only`
/// restricts them to some inodes.
fn delegated_inodes(
    flows: &[Flow],
    idx: &SocketIndex,
    priors: &[Option<&Attribution>],
    nets: &LocalNets,
    only: Option<&HashSet<u64>>,
) -> HashSet<u64> {
    flows
        .iter()
        .zip(priors)
        .filter(|(_, p)| p.is_none_or(|a| a.via == Via::Pending))
        .filter_map(|(f, p)| Some((f, *p, idx.delegated_socket(f)?.inode)))
        .filter(|(_, _, ino)| only.is_none_or(|o| o.contains(ino)))
        .filter(|(f, p, _)| !matches!(attribute(f, idx, *p, nets).verdict, Verdict::Excluded(_)))
        .map(|(_, _, ino)| ino)
        .collect()
}

/// The processes started since the last look at the holders of services' own sockets:
/// the last pid given out then is kept next to the namespace's setup state, for the next
/// pass or timer run.
struct LastLook {
    pids: NewPids,
    file: Option<PathBuf>,
}

impl LastLook {
    fn read(proc_root: &Path) -> LastLook {
        let file = prereq::state_path(proc_root).map(|p| p.with_extension("last-pid"));
        let after = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok());
        let pids = match last_pid(proc_root) {
            Some(upto) => NewPids { after, upto },
            // Unknown: every process, and nothing kept.
            None => NewPids {
                after: None,
                upto: 0,
            },
        };
        LastLook { pids, file }
    }

    /// The look is over: the next one reads what was started after this one began.
    fn done(self) {
        let Some(f) = &self.file else { return };
        if self.pids.upto == 0 {
            let _ = std::fs::remove_file(f);
        } else {
            let _ = std::fs::create_dir_all(prereq::STATE_DIR);
            let _ = std::fs::write(f, format!("{}\n", self.pids.upto));
        }
    }
}

/// The connected sockets of incoming flows settled as a delegating service's own: looked
/// at again for a user's process holding them now (a login slower than `delegate_grace`:
/// a slow `ProxyCommand`, a held-up PAM step), so that what they move from then on is that
/// user's. Outgoing ones and local traffic are not.
fn own_inodes(
    flows: &[Flow],
    idx: &SocketIndex,
    priors: &[Option<&Attribution>],
    nets: &LocalNets,
) -> HashSet<u64> {
    flows
        .iter()
        .zip(priors)
        .filter(|(_, p)| p.is_some_and(|a| a.via == Via::Own && a.direction == Direction::In))
        .filter(|(f, _)| !nets.contains(f.orig.src))
        .filter_map(|(f, _)| idx.delegated_socket(f))
        .filter(|s| !(s.remote.port() == 0 && s.remote.ip().is_unspecified()))
        .map(|s| s.inode)
        .collect()
}

fn live_inodes(sockets: &[Socket]) -> HashSet<u64> {
    sockets
        .iter()
        .filter(|s| s.has_owner())
        .map(|s| s.inode)
        .collect()
}

/// Names of the uids charged in this pass, from `name_of` (None when the account no longer
/// resolves).
pub fn user_names(
    plan: &PassPlan,
    name_of: &dyn Fn(u32) -> Option<String>,
) -> Vec<(u32, Option<String>)> {
    // The services traffic came through are named too (reports show `via`).
    let uids: std::collections::BTreeSet<u32> = plan
        .usage
        .keys()
        .flat_map(|k| [k.uid, k.via])
        .flatten()
        .collect();
    uids.into_iter().map(|uid| (uid, name_of(uid))).collect()
}

/// Whether flows' owner marks may charge flows no socket names ([`owner_mark`]): the
/// switch is on, netledger's rule is installed and the only writer of the mark in the
/// ruleset, and no mark has disagreed with its flow's live socket. A disagreement is said
/// once and kept (in memory, and in a file under [`prereq::STATE_DIR`] for the next timer
/// run) until `netledger setup` runs again: the marks are not used meanwhile, whatever
/// the ruleset says, because a writer outside nftables (tc, eBPF, `conntrack -U`) would
/// not show there.
#[derive(Debug)]
pub struct MarkTrust {
    enabled: bool,
    /// Where the reason last said is kept (one file per network namespace).
    file: Option<PathBuf>,
    state: Mutex<TrustState>,
}

#[derive(Debug, Default)]
struct TrustState {
    /// The ruleset's verdict when last looked at (None: not looked yet).
    ruleset: Option<Result<(), String>>,
    /// Whether the ruleset is to be looked at again before marks are next used.
    stale: bool,
    /// The first disagreement seen, for good.
    disagreed: Option<String>,
    /// The reasons said so far, here or by an earlier run (so each is said once).
    said: Vec<String>,
    /// Marks checked against live sockets, and those that agreed.
    checked: u64,
    agreed: u64,
}

/// The first words of a kept disagreement in the state file.
const DISAGREES: &str = "a conntrack mark disagrees";

impl MarkTrust {
    /// The trust of a process in the network namespace of `proc_root`, off when not
    /// `enabled` (`owner_mark = false`). Reads a disagreement an earlier run kept.
    pub fn new(enabled: bool, proc_root: &Path) -> Arc<MarkTrust> {
        let file = prereq::state_path(proc_root).map(|p| p.with_extension("owner-mark"));
        let said: Vec<String> = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let disagreed = said.iter().find(|s| s.starts_with(DISAGREES)).cloned();
        Arc::new(MarkTrust {
            enabled,
            file,
            state: Mutex::new(TrustState {
                disagreed,
                said,
                ..TrustState::default()
            }),
        })
    }

    /// Marks never used (for read-only views and tests).
    pub fn off() -> Arc<MarkTrust> {
        Arc::new(MarkTrust {
            enabled: false,
            file: None,
            state: Mutex::new(TrustState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrustState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Have the ruleset looked at again (`nft -j list ruleset`) the next time marks are
    /// about to be used ([`MarkTrust::usable`]): each pass. Lazily, so a pass that fails
    /// before (no CAP_NET_ADMIN) or needs no mark runs no `nft`.
    pub fn refresh(&self) {
        self.lock().stale = true;
    }

    /// Whether the switch is on (`owner_mark`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether marks charge flows now, looking at the ruleset first when a refresh asked.
    pub fn usable(&self) -> bool {
        self.usable_with(owner_mark::ruleset_state)
    }

    /// Whether [`MarkTrust::usable`] would look at the ruleset now (so that a pass may
    /// have `nft` read it beforehand, meanwhile).
    pub fn wants_ruleset(&self) -> bool {
        let st = self.lock();
        self.enabled && (st.stale || st.ruleset.is_none())
    }

    /// [`MarkTrust::usable`], with the ruleset's verdict from `ruleset` (called only when
    /// the ruleset is to be looked at).
    pub fn usable_with(&self, ruleset: impl FnOnce() -> Result<(), String>) -> bool {
        if !self.enabled {
            return false;
        }
        let stale = {
            let st = self.lock();
            st.stale || st.ruleset.is_none()
        };
        if stale {
            let verdict = ruleset();
            let mut st = self.lock();
            if let Err(reason) = &verdict {
                let reason = reason.clone();
                self.say(&mut st, reason);
            }
            st.ruleset = Some(verdict);
            st.stale = false;
        }
        self.usable_now()
    }

    /// [`MarkTrust::usable`] as last looked at, never running `nft` (the daemon's
    /// listener and flushes, which must not wait for it).
    pub fn usable_now(&self) -> bool {
        let st = self.lock();
        self.enabled && st.disagreed.is_none() && matches!(st.ruleset, Some(Ok(())))
    }

    /// Take what a mark said against its flow's live socket; `flow` describes the flow.
    pub fn check(&self, check: MarkCheck, mark: u32, flow: impl FnOnce() -> String) {
        if !self.enabled {
            return;
        }
        let mut st = self.lock();
        st.checked += 1;
        match check {
            MarkCheck::Agrees => st.agreed += 1,
            MarkCheck::Disagrees { .. } if st.disagreed.is_some() => {}
            MarkCheck::Disagrees { socket_uid } => {
                let named = match owner_mark::uid_of(mark) {
                    Some(uid) => format!("mark {mark:#x}, uid {uid}"),
                    None => format!("mark {mark:#x}"),
                };
                let against = match socket_uid {
                    Some(uid) => format!("its socket's uid is {uid}"),
                    None => "netledger never writes it".into(),
                };
                let reason = format!(
                    "{DISAGREES} ({named} on {}, {against}): another tool writes the mark, so \
                     netledger stops charging flows by it (find the writer, or set owner_mark = \
                     false; `netledger setup` re-arms)",
                    flow()
                );
                st.disagreed = Some(reason.clone());
                self.say(&mut st, reason);
            }
        }
    }

    /// (marks checked against live sockets, of which agreed) so far.
    pub fn checked(&self) -> (u64, u64) {
        let st = self.lock();
        (st.checked, st.agreed)
    }

    /// Warn about `reason` unless it was said before (here or by an earlier run).
    fn say(&self, st: &mut TrustState, reason: String) {
        if st.said.contains(&reason) {
            return;
        }
        warn!("owner marks not used: {reason}");
        st.said.push(reason);
        if let Some(f) = &self.file {
            let _ = std::fs::create_dir_all(prereq::STATE_DIR);
            let _ = std::fs::write(f, st.said.join("\n") + "\n");
        }
    }

    /// Forget a kept disagreement (`netledger setup`).
    pub fn rearm(proc_root: &Path) {
        if let Some(f) = prereq::state_path(proc_root).map(|p| p.with_extension("owner-mark")) {
            let _ = std::fs::remove_file(f);
        }
    }
}
