//! One accounting pass: observe the kernel, attribute every flow, account the deltas
//! against the saved state, and store the result in one transaction.
//!
//! `snapshot` runs one; the daemon runs one per interval. The walk of a pass:
//!
//! 1. the kernel reads ([`read_beside`]): the socket tables, then the conntrack dump, on
//!    another thread while this one loads the saved state and indexes the sockets;
//! 2. one [`FlowRecord`] per flow ([`record`]) carried through the stages of [`walk`]:
//!    saved state and owners known besides, the live socket looked up once on the pass's
//!    one [`SocketIndex`], the processes ([`holders`]), the marks, the verdict, a retry
//!    for flows born after the socket read, the containers' sockets ([`in_containers`]);
//! 3. the accounting of the records ([`account_seen`]) and the write.
//!
//! The stages stay pure (`attribute`, `account`, [`record`]); this module only wires them
//! to the kernel and the store.

pub mod cgroups;
mod holders;
mod in_containers;
pub mod record;

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tracing::{debug, info};

use crate::account::{account_seen, FlowState, Hold, Ledger, PassPlan, Seen, Totals};
use crate::attribute::{Attribution, Delegating, LocalNets, SocketIndex, SocketMaps};
use crate::live::Observed;
use crate::model::{FastMap, FlowKey, SocketState, L4};
use crate::owner_mark::{self, trust::MarkTrust};
use crate::prereq::PrereqError;
use crate::sources::conntrack::{self, ConntrackError};
use crate::sources::interfaces;
use crate::sources::netns::SubUids;
use crate::sources::sockdiag::SockDiag;
use crate::sources::sockets::{ping_sockets_for, read_sockets, SocketTable};
use crate::stages::Stages;
use crate::store::{PassRecord, Store};
use crate::units::human_bytes;

use cgroups::CgroupNames;
use holders::Holders;
use record::FlowRecord;

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
    /// The daemon: see [`Hold::destroys_lost_before`] (set by the daemon before each pass).
    pub destroys_lost_before: Option<u64>,
    /// The sockets' cgroups named so far, kept from pass to pass.
    pub cgroups: Arc<Mutex<CgroupNames>>,
}

impl PassConfig {
    /// How the accounting holds back pending flows (whole seconds: passes are dated so).
    pub fn hold(&self) -> Hold {
        Hold {
            grace: self.delegate_grace.as_secs() as i64,
            ended: false,
            destroys_follow: self.destroys_follow,
            destroys_lost_before: self.destroys_lost_before,
        }
    }
}

/// What the kernel showed in one pass, joined, for the read-only views (`connections`,
/// `live`): each entry of the dump with its verdict, in dump order.
pub struct Observation {
    /// Socket rows (first read plus sockets found on a re-read).
    pub sockets: SocketTable,
    /// The conntrack dump's entries, each with its verdict.
    pub flows: Vec<Observed>,
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
    cfg.marks.refresh();
    let (prev, read, dump) = read_beside(store, cfg, &mut stages)?;
    let rules = Rules {
        proc_root: &cfg.proc_root,
        nets: &cfg.nets,
        delegating: &cfg.delegating,
        marks: &cfg.marks,
        known,
        subuids: SubUids::host(),
        cgroups: Some(&cfg.cgroups),
    };
    let walked = walk(read, &dump, &prev, &rules, &mut stages)?;
    let ledger = Ledger {
        now: started_at,
        prune_after: cfg.prune_after,
        hold: cfg.hold(),
    };
    let seen: Vec<Seen> = walked.records.iter().map(FlowRecord::seen).collect();
    let plan = account_seen(&ledger, &seen, &prev);
    log_plan(&plan);
    let users = plan.user_names(&crate::sources::users::name_of);
    stages.lap("account");
    let record = PassRecord {
        started_at,
        mode,
        sockets: walked.sockets.sockets.len() as u64,
        bad_lines: walked.sockets.bad_lines.len() as u64,
        skipped_messages: dump.skipped_messages as u64,
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
        by_mark: walked.by_mark,
        charged: walked.charged,
        named: walked.named,
    })
}

/// Say what a plan left for later.
fn log_plan(plan: &PassPlan) {
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
}

/// What the kernel showed besides the conntrack dump: the socket tables (read before the
/// dump, so a socket closed in between still shows), the pass's index's maps over them,
/// and `nft` reading the ruleset meanwhile when a flow with netledger's mark showed up.
struct Read {
    sockets: SocketTable,
    /// This host's interface addresses.
    host: HashSet<IpAddr>,
    maps: SocketMaps,
    ruleset: Option<Ruleset>,
}

/// `nft` reading the ruleset beside a pass: its verdict on the owner marks.
type Ruleset = JoinHandle<Result<(), String>>;

/// The saved state, what the kernel shows, and the conntrack dump. Another thread reads the kernel (sockets,
/// then the conntrack dump's datagrams, as received) while this one loads the saved state
/// and indexes the sockets, then decodes the datagrams: the kernel fills the next ones
/// meanwhile.
fn read_beside(
    store: &Store,
    cfg: &PassConfig,
    stages: &mut Stages,
) -> Result<(FastMap<FlowKey, FlowState>, Read, conntrack::Dump)> {
    let (prev, sockets, read, (decoded, ruleset)) = std::thread::scope(|s| {
        let (socket_tx, socket_rx) = std::sync::mpsc::channel();
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let reader = s.spawn(move || read_kernel_to(&cfg.proc_root, socket_tx, tx));
        let loading = Instant::now();
        let prev = store.load_state();
        let loaded = loading.elapsed();
        // The first index's maps, built while the dump is coming. Nothing received: the
        // reader panicked (resumed below).
        let sockets = socket_rx.recv().ok();
        let indexing = Instant::now();
        let sockets = sockets.map(|read| {
            read.map(|sockets| {
                let (host, maps) = socket_maps(&sockets);
                (sockets, host, maps)
            })
        });
        let indexed = indexing.elapsed();
        let decoded = decode(rx, &cfg.marks);
        let (read, kernel) = reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        stages.beside(kernel, "load_state", loaded);
        stages.beside(Stages::default(), "index", indexed);
        stages.lap("decode");
        let sockets = sockets.expect("the reader sends the sockets before it ends");
        (prev, sockets, read, decoded)
    });
    let prev = prev?;
    let (sockets, host, maps) = sockets?;
    read?;
    let dump = decoded.context("dumping the conntrack table")?;
    not_tracking(&sockets, &dump)?;
    let read = Read {
        sockets,
        host,
        maps,
        ruleset,
    };
    Ok((prev, read, dump))
}

/// The reader thread of [`read_beside`]: the socket tables to `sockets`, then the
/// conntrack dump's datagrams to `datagrams`, as received.
fn read_kernel_to(
    proc_root: &Path,
    sockets: Sender<Result<SocketTable>>,
    datagrams: Sender<Vec<u8>>,
) -> (Result<()>, Stages) {
    let mut stages = Stages::start();
    let table = socket_table(proc_root);
    stages.lap("sockets");
    let read = table.is_ok();
    // Only fails when the other side is gone (a panic).
    let _ = sockets.send(table);
    if !read {
        return (Ok(()), stages);
    }
    let read = conntrack::dump_datagrams(|datagram| {
        let _ = datagrams.send(datagram);
    })
    .context("dumping the conntrack table");
    stages.lap("dump");
    (read, stages)
}

/// The dump decoded from its datagrams as they come; and the ruleset, read by `nft` beside
/// the rest of the pass as soon as a flow with netledger's mark shows up (see [`walk`]).
fn decode(
    datagrams: Receiver<Vec<u8>>,
    marks: &MarkTrust,
) -> (Result<conntrack::Dump, ConntrackError>, Option<Ruleset>) {
    let mut decoder = conntrack::Decoder::new();
    let mut decoded = Ok(());
    let mut ruleset = None;
    let mut looked = 0;
    for datagram in datagrams {
        if decoded.is_ok() {
            decoded = decoder.feed(&datagram);
        }
        let entries = decoder.entries();
        if ruleset.is_none()
            && entries[looked..]
                .iter()
                .any(|e| owner_mark::uid_of(e.flow.mark).is_some())
            && marks.wants_ruleset()
        {
            ruleset = Some(std::thread::spawn(owner_mark::ruleset_state));
        }
        looked = entries.len();
    }
    (decoded.map(|()| decoder.finish()), ruleset)
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
    let (host, maps) = socket_maps(&sockets);
    let read = Read {
        sockets,
        host,
        maps,
        ruleset: None,
    };
    let rules = Rules {
        proc_root,
        nets,
        delegating,
        marks,
        known,
        subuids: SubUids::host(),
        cgroups: None,
    };
    let Walked {
        sockets,
        records,
        by_mark,
        charged,
        named,
    } = walk(read, &dump, prev, &rules, stages)?;
    let flows = record::observed(records);
    Ok(Observation {
        sockets,
        flows,
        by_mark,
        charged,
        named,
    })
}

/// What the stages of a pass read besides the kernel, the same for the whole pass.
struct Rules<'a> {
    /// Root of the proc filesystem (sockets and processes).
    proc_root: &'a Path,
    /// Networks whose traffic is charged to nobody.
    nets: &'a LocalNets,
    /// Uids of services whose sockets are charged through the processes holding them.
    delegating: &'a Delegating,
    /// Whether flows' owner marks are believed.
    marks: &'a MarkTrust,
    /// Owners known besides the saved state ([`run_pass_with`]).
    known: &'a dyn Fn(&FlowKey) -> Option<Attribution>,
    /// Subordinate uid ranges: a uid in one (a user's rootless user namespace) is its
    /// owner's.
    subuids: Arc<SubUids>,
    /// Names of the sockets' cgroup ids (none for the read-only views).
    cgroups: Option<&'a Mutex<CgroupNames>>,
}

/// A pass walked: every flow's record, with its verdict.
struct Walked<'s> {
    /// Socket rows (first read plus sockets found on a re-read).
    sockets: SocketTable,
    records: Vec<FlowRecord<'s>>,
    /// Flows charged to a user named only by their owner mark.
    by_mark: usize,
    /// Flows charged to a user, and of those, with a program name.
    charged: usize,
    named: usize,
}

/// Ping sockets (`/proc/net/icmp{,6}`, which sock_diag does not list) added to the pass's
/// sockets and index, read only when an ICMP flow from here has no owner yet.
fn add_ping_sockets(
    records: &[record::FlowRecord],
    host: &HashSet<IpAddr>,
    proc_root: &Path,
    sockets: &mut SocketTable,
    maps: &mut SocketMaps,
) {
    let ownerless = records
        .iter()
        .filter(|r| r.prior().is_none())
        .map(|r| r.flow);
    let here = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
    if let Some(pings) = ping_sockets_for(proc_root, ownerless, here) {
        let from = sockets.sockets.len();
        sockets.append(pings);
        maps.add(&sockets.sockets, from);
    }
}

/// The walk of a pass past the kernel reads: one record per flow through the stages (see
/// [`record`]), on one socket index.
fn walk<'s, S: BuildHasher>(
    read: Read,
    dump: &'s conntrack::Dump,
    prev: &'s HashMap<FlowKey, FlowState, S>,
    rules: &Rules,
    stages: &mut Stages,
) -> Result<Walked<'s>> {
    let Read {
        mut sockets,
        host,
        mut maps,
        ruleset,
    } = read;
    let mut records = record::records(dump, prev);
    record::add_known(&mut records, rules.known);
    record::continue_picked_up(&mut records, prev);
    add_ping_sockets(&records, &host, rules.proc_root, &mut sockets, &mut maps);
    let (marked, ruleset) = ask_ruleset(&records, ruleset, rules.marks);
    let mut cgroups = named_cgroups(rules, &sockets.sockets);
    let unnamed = FastMap::default();
    let names = cgroups.as_deref().map_or(&unnamed, CgroupNames::names);
    // The pass's one index. Programs are looked up only for the sockets of flows not
    // attributed before, and every holder of a delegating service's sockets of flows not
    // settled yet (see `holders`); the owners and holders found are then filled in.
    let no_owners = HashMap::new();
    let idx = SocketIndex::with_maps(&sockets.sockets, &no_owners, maps)
        .with_delegation(rules.delegating, None)
        .with_cgroups(names);
    record::look_up(&mut records, &idx);
    stages.lap("lookup");
    let mut holders = holders::look(&records, &idx, rules);
    stages.lap("processes");
    let idx = holders.fill(idx, rules);
    // Every mark is held against its flow's live socket before any is believed.
    record::check_marks(&records, &idx, rules.marks);
    let use_marks = marked
        && rules.marks.usable_with(|| match ruleset {
            Some(nft) => nft.join().unwrap_or_else(|p| std::panic::resume_unwind(p)),
            None => owner_mark::ruleset_state(),
        });
    let idx = idx.with_marks(use_marks);
    record::attribute_all(&mut records, &idx, rules.nets);
    // Counted on this index: the retry below replaces only unattributed verdicts.
    let by_mark = if use_marks {
        record::by_mark(&records)
    } else {
        0
    };
    stages.lap("attribute");
    if record::needs_retry(&records) {
        let maps = idx.into_maps();
        let again = Again {
            holders: &mut holders,
            cgroups: cgroups.as_deref_mut(),
            use_marks,
        };
        retry(&mut sockets, maps, &mut records, again, rules)?;
        stages.lap("retry");
    }
    look_in_containers(&mut records, &host, rules, stages);
    holders.warn_denied(rules.proc_root);
    let (charged, named) = record::charged_named(&records);
    info!(
        sockets = sockets.sockets.len(),
        bad_lines = sockets.bad_lines.len(),
        flows = records.len(),
        processes = holders.scan.processes,
        by_mark,
        charged,
        named,
        "observed"
    );
    Ok(Walked {
        sockets,
        records,
        by_mark,
        charged,
        named,
    })
}

/// The pass's cgroup names, with the ids of `sockets` learnt; held for the walk (one pass
/// at a time names cgroups). None for the read-only views.
fn named_cgroups<'r>(
    rules: &Rules<'r>,
    sockets: &[crate::model::Socket],
) -> Option<std::sync::MutexGuard<'r, CgroupNames>> {
    let mut names = rules.cgroups?.lock().unwrap_or_else(|p| p.into_inner());
    names.learn(sockets.iter().map(|s| s.cgroup));
    Some(names)
}

/// Whether some flow carries a mark netledger writes, and then `nft` reading the ruleset
/// (asked now, running beside the stages that follow, taken when the marks are weighed)
/// unless it was asked already (`ruleset`) or need not be.
fn ask_ruleset(
    records: &[FlowRecord],
    ruleset: Option<Ruleset>,
    marks: &MarkTrust,
) -> (bool, Option<Ruleset>) {
    let marked = records
        .iter()
        .any(|r| owner_mark::uid_of(r.flow.mark).is_some());
    let ruleset = ruleset.or_else(|| {
        (marked && marks.wants_ruleset()).then(|| std::thread::spawn(owner_mark::ruleset_state))
    });
    (marked, ruleset)
}

/// Flows the host's sockets do not explain, seen for the first time: a container's?
/// (Only on the live proc filesystem: namespaces are asked of the kernel.)
fn look_in_containers(
    records: &mut [FlowRecord],
    host: &HashSet<IpAddr>,
    rules: &Rules,
    stages: &mut Stages,
) {
    if rules.proc_root != Path::new("/proc") {
        return;
    }
    let is_host = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
    let candidates = record::container_candidates(records, &is_host);
    if !candidates.is_empty() {
        let n = candidates.len();
        let placed = in_containers::place(rules.proc_root, candidates, rules.nets);
        debug!(candidates = n, placed, "flows looked for in containers");
        stages.lap("containers");
    }
}

/// A flow born after the socket read has no socket row yet: the socket tables are read
/// once more, and the sockets new since the first read (their rows added to `sockets`,
/// whose rows closed since still count) added to the pass's index (`maps`, extended, not
/// built again); the holders of the new sockets are looked up, and the unattributed flows
/// attributed again.
fn retry(
    sockets: &mut SocketTable,
    mut maps: SocketMaps,
    records: &mut [FlowRecord],
    again: Again,
    rules: &Rules,
) -> Result<()> {
    let Again {
        holders,
        mut cgroups,
        use_marks,
    } = again;
    let again = socket_table(rules.proc_root)?;
    let known = live_inodes(&sockets.sockets);
    let fresh: HashSet<u64> = live_inodes(&again.sockets)
        .difference(&known)
        .copied()
        .collect();
    if fresh.is_empty() {
        return Ok(());
    }
    let from = sockets.sockets.len();
    sockets.sockets.extend(
        again
            .sockets
            .into_iter()
            .filter(|s| fresh.contains(&s.inode)),
    );
    maps.add(&sockets.sockets, from);
    if let Some(c) = cgroups.as_mut() {
        c.learn(sockets.sockets[from..].iter().map(|s| s.cgroup));
    }
    let unnamed = FastMap::default();
    let names = cgroups.as_deref().map_or(&unnamed, CgroupNames::names);
    let no_owners = HashMap::new();
    let idx = SocketIndex::with_maps(&sockets.sockets, &no_owners, maps)
        .with_delegation(rules.delegating, None)
        .with_cgroups(names);
    record::look_up(records, &idx);
    holders.look_fresh(records, &idx, rules, &fresh);
    let idx = holders.fill(idx, rules).with_marks(use_marks);
    record::reattribute(records, &idx, rules.nets);
    Ok(())
}

/// What [`retry`] carries on from the first attribution: the holders looked up, the
/// cgroups named, whether marks are believed.
struct Again<'h, 'c> {
    holders: &'h mut Holders,
    cgroups: Option<&'c mut CgroupNames>,
    use_marks: bool,
}

fn live_inodes(sockets: &[crate::model::Socket]) -> HashSet<u64> {
    sockets
        .iter()
        .filter(|s| s.has_owner())
        .map(|s| s.inode)
        .collect()
}

/// The addresses of this host, and the maps of the pass's index over `sockets`.
fn socket_maps(sockets: &SocketTable) -> (HashSet<IpAddr>, SocketMaps) {
    let host = interfaces::host_addrs();
    let maps = SocketMaps::new(&sockets.sockets, host.iter().copied());
    (host, maps)
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
    if dump.entries.is_empty() {
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
