//! Deltas against saved flow state: what each pass charges, and the state it leaves.
//!
//! A flow's identity is (zone, original tuple, conntrack id). Each pass charges
//! `current − last seen` per direction; a flow seen for the first time charges its full
//! counters; a counter that went down was reset (zeroed by another tool, or the entry was
//! re-created) and charges its current value. A flow missing from a dump is kept (dumps
//! can skip entries) and pruned only after it stayed gone for `prune_after` passes.
//!
//! A flow on a delegating service's socket that no user's process holds yet ([`Via::Pending`],
//! sshd before the login completed) is *held back* while it is young: nothing is charged,
//! and its state keeps the counters last seen with none of them charged. The first pass
//! that finds its owner (a user's process holds it, the grace ran out, or the flow ended)
//! charges everything from zero to that owner, so the login handshake goes to the user too
//! and every byte still lands once. A held flow that vanishes is charged, when it is pruned,
//! with the counters last seen, like any flow.
//!
//! Everything here is pure: the caller loads the state, calls [`account_pass`], and writes
//! the returned plan in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::attribute::{
    Attributed, Attribution, Cgroup, Container, Direction, Reason, Verdict, Via,
};
use crate::model::{Counters, FastSet, Flow, FlowKey};

/// What the store remembers of a flow between passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowState {
    /// The flow's identity.
    pub key: FlowKey,
    /// Original-direction counters at the last sighting.
    pub orig: Counters,
    /// Reply-direction counters at the last sighting.
    pub reply: Counters,
    /// Who it was charged to, when a live socket was last seen (sticky).
    pub attribution: Option<Attribution>,
    /// Epoch seconds of the first sighting.
    pub first_seen: i64,
    /// Epoch seconds of the last sighting.
    pub last_seen: i64,
    /// Consecutive passes the flow has been missing from the dump.
    pub missing: u32,
    /// When the flow whose counters these are began (conntrack's timestamp, ns since the
    /// epoch), when the kernel said.
    pub start_ns: Option<u64>,
}

impl FlowState {
    /// Whether `flow`, seen under this state's key, is another flow than the one saved:
    /// conntrack's id is a hash of the entry's address and tuple, so a new connection on
    /// the same tuple, in the memory of the entry it replaced, comes back with the same id.
    /// Told apart by their starts. A state without one that nothing was charged against
    /// yet (made by a NEW event: dated when the event was read, after its flow began) by
    /// that date: a flow that began more than a second after it is another.
    pub fn replaced_by(&self, flow: &Flow) -> bool {
        let uncharged = self.orig.bytes == 0 && self.reply.bytes == 0;
        match (self.start_ns, flow.start_ns) {
            (Some(saved), Some(seen)) => saved != seen,
            (None, Some(seen)) if uncharged => (seen / 1_000_000_000) as i64 > self.first_seen + 1,
            _ => false,
        }
    }

    /// Whether its charge is held back ([`Via::Pending`]): then its counters are the last
    /// seen and none of them was charged.
    pub fn is_held(&self) -> bool {
        self.attribution
            .as_ref()
            .is_some_and(|a| a.via == Via::Pending)
    }
}

/// Counters charged for one direction pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Delta {
    /// Original-direction delta.
    pub orig: Counters,
    /// Reply-direction delta.
    pub reply: Counters,
    /// Whether either direction was reset (counter went down).
    pub reset: bool,
}

fn counter_delta(prev: Counters, cur: Counters) -> (Counters, bool) {
    if cur.bytes < prev.bytes || cur.packets < prev.packets {
        (cur, true)
    } else {
        (
            Counters {
                packets: cur.packets - prev.packets,
                bytes: cur.bytes - prev.bytes,
            },
            false,
        )
    }
}

/// The delta rule for one flow: full counters on first sighting, `cur − prev` after,
/// the current value when a counter went down.
pub fn delta(prev: Option<(Counters, Counters)>, orig: Counters, reply: Counters) -> Delta {
    match prev {
        None => Delta {
            orig,
            reply,
            reset: false,
        },
        Some((po, pr)) => {
            let (o, ro) = counter_delta(po, orig);
            let (r, rr) = counter_delta(pr, reply);
            Delta {
                orig: o,
                reply: r,
                reset: ro || rr,
            }
        }
    }
}

/// Which bucket a usage row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Charged to `uid`.
    User,
    /// Counted, owner unknown (`reason` says why).
    Unattributed,
    /// Remote end in a local network: charged to nobody.
    Excluded,
}

impl Kind {
    /// Name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Unattributed => "unattributed",
            Kind::Excluded => "excluded",
        }
    }
}

/// The grouping key of a usage row within a pass.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    /// Bucket.
    pub kind: Kind,
    /// Owner (for `User`, and `Excluded` when known).
    pub uid: Option<u32>,
    /// Program holding the socket, when known.
    pub program: Option<String>,
    /// The cgroup of the socket's creator, when known (with the program; never on
    /// unattributed traffic).
    pub cgroup: Option<Cgroup>,
    /// Why unattributed; on a user's row, why a service's socket was charged to its own uid
    /// ([`Reason::AmbiguousHolders`]).
    pub reason: Option<Reason>,
    /// The delegating uid whose socket the traffic went through, when charged to a holder.
    pub via: Option<u32>,
    /// The container whose socket it was found through (never with `via`); `None` for the
    /// host's own sockets and for unattributed traffic.
    pub container: Option<Container>,
    /// IP protocol number.
    pub protocol: u8,
    /// Initiating side, when known.
    pub direction: Option<Direction>,
    /// The far end's address.
    pub remote: IpAddr,
    /// Service port (remote port for outgoing, local port for incoming).
    pub port: u16,
}

/// Bytes and packets in both directions, from this host's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Traffic {
    /// Received bytes.
    pub rx_bytes: u64,
    /// Sent bytes.
    pub tx_bytes: u64,
    /// Received packets.
    pub rx_packets: u64,
    /// Sent packets.
    pub tx_packets: u64,
}

impl Traffic {
    /// Map a flow delta to rx/tx. Outgoing and forwarded flows send the original
    /// direction; incoming flows receive it.
    pub fn from_delta(d: &Delta, direction: Option<Direction>) -> Traffic {
        let (tx, rx) = match direction {
            Some(Direction::In) => (d.reply, d.orig),
            Some(Direction::Out) | None => (d.orig, d.reply),
        };
        Traffic {
            rx_bytes: rx.bytes,
            tx_bytes: tx.bytes,
            rx_packets: rx.packets,
            tx_packets: tx.packets,
        }
    }

    /// A flow's counters so far as rx/tx (zero when it has none): what it carried since
    /// it began, as the open-connection list and the connection log show it.
    pub fn of_counters(
        orig: Option<Counters>,
        reply: Option<Counters>,
        direction: Option<Direction>,
    ) -> Traffic {
        let d = delta(None, orig.unwrap_or_default(), reply.unwrap_or_default());
        Traffic::from_delta(&d, direction)
    }

    /// Add another amount.
    pub fn add(&mut self, o: &Traffic) {
        self.rx_bytes += o.rx_bytes;
        self.tx_bytes += o.tx_bytes;
        self.rx_packets += o.rx_packets;
        self.tx_packets += o.tx_packets;
    }

    /// rx + tx bytes.
    pub fn bytes(&self) -> u64 {
        self.rx_bytes + self.tx_bytes
    }

    /// Whether nothing was counted.
    pub fn is_zero(&self) -> bool {
        *self == Traffic::default()
    }
}

/// Per-pass totals, so that attributed + unattributed + excluded = counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Flows in the dump.
    pub flows: u64,
    /// Flows seen for the first time.
    pub new_flows: u64,
    /// Flows without counters (created while accounting was off): nothing to charge.
    pub flows_without_counters: u64,
    /// Flows whose counters went down this pass.
    pub resets: u64,
    /// Flows that replaced a saved one under the same key, left for the next pass (the
    /// daemon: the saved one's DESTROY is on its way).
    pub replaced: u64,
    /// Flows pruned from the state.
    pub pruned: u64,
    /// Flows whose charge is held back (pending on a service's socket); their bytes are
    /// counted by the pass that charges them.
    pub held: u64,
    /// Charged to users.
    pub attributed: Traffic,
    /// Counted, owner unknown.
    pub unattributed: Traffic,
    /// Local traffic, charged to nobody.
    pub excluded: Traffic,
}

impl Totals {
    /// All bytes conntrack counted since the last pass.
    pub fn counted_bytes(&self) -> u64 {
        self.attributed.bytes() + self.unattributed.bytes() + self.excluded.bytes()
    }
}

/// What one pass writes: usage rows, and the new flow state.
#[derive(Debug, Default)]
pub struct PassPlan {
    /// Usage aggregated per key (rows with zero traffic are left out).
    pub usage: BTreeMap<UsageKey, Traffic>,
    /// Flow states to insert or replace.
    pub upserts: Vec<FlowState>,
    /// Flows to forget.
    pub deletes: Vec<FlowKey>,
    /// Flows missing from this dump that are kept, with their new `missing` count.
    pub missing: Vec<(FlowKey, u32)>,
    /// Totals.
    pub totals: Totals,
}

impl PassPlan {
    /// Names of the uids charged in this plan, from `name_of` (None when the account no
    /// longer resolves).
    pub fn user_names(
        &self,
        name_of: &dyn Fn(u32) -> Option<String>,
    ) -> Vec<(u32, Option<String>)> {
        // The services traffic came through are named too (reports show `via`).
        let uids: std::collections::BTreeSet<u32> = self
            .usage
            .keys()
            .flat_map(|k| [k.uid, k.via])
            .flatten()
            .collect();
        uids.into_iter().map(|uid| (uid, name_of(uid))).collect()
    }
}

/// How pending flows are held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hold {
    /// Seconds a pending flow may be held, from its start (conntrack's timestamp, else its
    /// first sighting). 0 holds nothing: a pending flow is the service's own at once.
    pub grace: i64,
    /// The flows ended (DESTROY events): there is nothing left to wait for.
    pub ended: bool,
    /// A DESTROY event comes for every saved flow (the daemon): a flow that replaced a
    /// saved one under its key ([`FlowState::replaced_by`]) is left alone until the saved
    /// one's DESTROY charged and forgot it. Without events (the timer) it is charged from
    /// zero at once, and what the replaced one moved since the last pass is not seen.
    pub destroys_follow: bool,
    /// With `destroys_follow`: the DESTROY of an entry that ended before this time (ns
    /// since the epoch, the clock of conntrack's timestamps) may have been lost — before
    /// the daemon subscribed, or in an overrun — and every one not lost was stored before
    /// the pass. A flow that replaced a saved one and began before it is charged from zero
    /// at once: the saved one ended before that, and its DESTROY, not stored, was lost (what
    /// it moved since the last pass is lost with it, as the overrun warning says).
    pub destroys_lost_before: Option<u64>,
}

impl Hold {
    /// Whether `flow`, which replaced a saved flow under its key, is left alone until
    /// the saved one's DESTROY charged and forgot it.
    fn awaits_destroy(&self, flow: &Flow) -> bool {
        let lost = flow
            .start_ns
            .zip(self.destroys_lost_before)
            .is_some_and(|(start, before)| start < before);
        self.destroys_follow && !lost
    }
}

/// [`account`] holding nothing back (every pending flow is its service's own at once).
pub fn account_pass<S: BuildHasher>(
    now: i64,
    flows: &[Flow],
    attributed: &[Attributed],
    prev: &HashMap<FlowKey, FlowState, S>,
    prune_after: u32,
) -> PassPlan {
    account(now, flows, attributed, prev, prune_after, Hold::default())
}

/// The usage key and the owner to remember of a verdict.
fn usage_key(flow: &Flow, at: &Attributed) -> UsageKey {
    let owner = |a: &Attribution| {
        let reason = (a.via == Via::Ambiguous).then_some(Reason::AmbiguousHolders);
        (Some(a.uid), a.program.clone(), reason, a.via.through())
    };
    let (kind, (uid, program, reason, via)) = match &at.verdict {
        Verdict::User(a) => (Kind::User, owner(a)),
        Verdict::Excluded(a) => (
            Kind::Excluded,
            a.as_ref().map_or((None, None, None, None), owner),
        ),
        Verdict::Unattributed(r) => (Kind::Unattributed, (None, None, Some(*r), None)),
    };
    let container = at.attribution().and_then(|a| a.container.clone());
    let cgroup = at.attribution().and_then(|a| a.cgroup.clone());
    UsageKey {
        kind,
        uid,
        program,
        cgroup,
        reason,
        via,
        container,
        protocol: flow.orig.proto,
        direction: at.direction,
        remote: at.remote,
        port: at.port,
    }
}

/// A pending verdict settled: the service's own.
fn settle(at: &Attributed) -> Attributed {
    let own = |a: &Attribution| Attribution {
        via: Via::Own,
        ..a.clone()
    };
    Attributed {
        verdict: match &at.verdict {
            Verdict::User(a) => Verdict::User(own(a)),
            Verdict::Excluded(a) => Verdict::Excluded(a.as_ref().map(own)),
            v => v.clone(),
        },
        ..at.clone()
    }
}

/// What a held flow that vanished is charged when it is pruned: its counters last seen,
/// to its socket's uid (the service's own). Only the original tuple is kept, so an
/// incoming flow's port is the one it was addressed to (before any DNAT).
fn held_charge(s: &FlowState) -> Option<(UsageKey, Traffic)> {
    let a = s.attribution.as_ref().filter(|_| s.is_held())?;
    let o = &s.key.orig;
    let remote = match a.direction {
        Direction::Out => o.dst,
        Direction::In => o.src,
    };
    let key = UsageKey {
        kind: Kind::User,
        uid: Some(a.uid),
        program: a.program.clone(),
        cgroup: a.cgroup.clone(),
        reason: None,
        via: None,
        container: a.container.clone(),
        protocol: o.proto,
        direction: Some(a.direction),
        remote,
        port: o.dport,
    };
    let d = delta(None, s.orig, s.reply);
    Some((key, Traffic::from_delta(&d, Some(a.direction))))
}

/// One flow as the accounting reads it: the flow, where its bytes go, and its saved
/// state (None: seen for the first time, or charged from zero).
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    /// The flow, with its counters now.
    pub flow: &'a Flow,
    /// Its verdict this pass.
    pub attributed: &'a Attributed,
    /// Its saved state, looked up under its key.
    pub saved: Option<&'a FlowState>,
}

/// The rules of one accounting: when it is, how long a vanished flow is kept, how
/// pending flows are held back.
#[derive(Debug, Clone, Copy)]
pub struct Ledger {
    /// Epoch seconds stamped on what is written.
    pub now: i64,
    /// Consecutive passes a flow missing from the dump is kept before it is pruned.
    pub prune_after: u32,
    /// How pending flows are held back.
    pub hold: Hold,
}

/// Account one pass. `flows[i]` was attributed as `attributed[i]`; `prev` is the saved
/// state; flows of `prev` absent from `flows` are aged and pruned after `prune_after`
/// consecutive misses. A pending flow charged to a user is held back while `hold` allows
/// it and it has never been charged (first sighting, or held since).
pub fn account<S: BuildHasher>(
    now: i64,
    flows: &[Flow],
    attributed: &[Attributed],
    prev: &HashMap<FlowKey, FlowState, S>,
    prune_after: u32,
    hold: Hold,
) -> PassPlan {
    assert_eq!(flows.len(), attributed.len());
    let seen: Vec<Seen> = flows
        .iter()
        .zip(attributed)
        .map(|(flow, attributed)| Seen {
            flow,
            attributed,
            saved: prev.get(&flow.key()),
        })
        .collect();
    let rules = Ledger {
        now,
        prune_after,
        hold,
    };
    account_with(&rules, &seen, prev, false)
}

/// [`account`] of flows with their saved state looked up already, for flows with
/// distinct keys (a conntrack dump's).
pub fn account_seen<S: BuildHasher>(
    rules: &Ledger,
    seen: &[Seen],
    prev: &HashMap<FlowKey, FlowState, S>,
) -> PassPlan {
    account_with(rules, seen, prev, true)
}

fn account_with<S: BuildHasher>(
    rules: &Ledger,
    seen: &[Seen],
    prev: &HashMap<FlowKey, FlowState, S>,
    distinct: bool,
) -> PassPlan {
    let mut plan = PassPlan::default();
    for s in seen {
        charge(&mut plan, rules, s);
    }
    // With distinct keys, when every saved flow was in the dump none is missing.
    let every_saved_seen =
        distinct && seen.iter().filter(|s| s.saved.is_some()).count() == prev.len();
    if !every_saved_seen {
        let keys: FastSet<FlowKey> = seen.iter().map(|s| s.flow.key()).collect();
        age_missing(&mut plan, rules.prune_after, prev, &keys);
    }
    plan.deletes.sort();
    plan.missing.sort();
    plan
}

/// Charge one flow of the dump into `plan`, and plan the state it leaves.
fn charge(plan: &mut PassPlan, rules: &Ledger, s: &Seen) {
    let (flow, hold, now) = (s.flow, rules.hold, rules.now);
    plan.totals.flows += 1;
    let (Some(orig), Some(reply)) = (flow.orig_counters, flow.reply_counters) else {
        plan.totals.flows_without_counters += 1;
        return;
    };
    let replaced = s.saved.is_some_and(|o| o.replaced_by(flow));
    if replaced && hold.awaits_destroy(flow) {
        plan.totals.replaced += 1;
        return;
    }
    let old = s.saved.filter(|_| !replaced);
    if old.is_none() {
        plan.totals.new_flows += 1;
    }
    let held_before = old.is_some_and(FlowState::is_held);
    let pending = s
        .attributed
        .attribution()
        .is_some_and(|a| a.via == Via::Pending);
    let state = |at: &Attributed, start_ns| FlowState {
        key: flow.key(),
        orig,
        reply,
        attribution: at.attribution().cloned(),
        first_seen: old.map_or(now, |o| o.first_seen),
        last_seen: now,
        missing: 0,
        start_ns,
    };
    let start_ns = flow.start_ns.or(old.and_then(|o| o.start_ns));
    if pending && held(s, old, held_before, rules) {
        plan.totals.held += 1;
        plan.upserts.push(state(s.attributed, start_ns));
        return;
    }
    let settled;
    let at = if pending {
        settled = settle(s.attributed);
        &settled
    } else {
        s.attributed
    };
    // A held flow's saved counters were never charged: it is charged from zero.
    let charged_before = old.filter(|_| !held_before).map(|o| (o.orig, o.reply));
    let d = delta(charged_before, orig, reply);
    plan.totals.resets += u64::from(d.reset);
    let traffic = Traffic::from_delta(&d, at.direction);
    match at.verdict {
        Verdict::User(_) => plan.totals.attributed.add(&traffic),
        Verdict::Unattributed(_) => plan.totals.unattributed.add(&traffic),
        Verdict::Excluded(_) => plan.totals.excluded.add(&traffic),
    }
    // The usage key (with its program) is built only for a flow that carried traffic.
    if !traffic.is_zero() {
        plan.usage
            .entry(usage_key(flow, at))
            .or_default()
            .add(&traffic);
    }
    let unchanged = old.is_some_and(|o| {
        o.orig == orig
            && o.reply == reply
            && o.attribution.as_ref() == at.attribution()
            && o.missing == 0
            && o.start_ns == start_ns
    });
    if !unchanged {
        plan.upserts.push(state(at, start_ns));
    }
}

/// Whether a pending flow charged to a user is held back now: it was never charged
/// (first sighting, or held since), has not ended, and is younger than the grace.
fn held(s: &Seen, old: Option<&FlowState>, held_before: bool, rules: &Ledger) -> bool {
    if !matches!(s.attributed.verdict, Verdict::User(_))
        || !(old.is_none() || held_before)
        || rules.hold.ended
    {
        return false;
    }
    let start = s
        .flow
        .start_ns
        .map(|ns| (ns / 1_000_000_000) as i64)
        .or(old.map(|o| o.first_seen))
        .unwrap_or(rules.now);
    rules.now - start < rules.hold.grace
}

/// Age the saved flows missing from the dump (`seen` holds the dump's keys): pruned after
/// `prune_after` passes, a held one charged then with its counters last seen.
fn age_missing<S: BuildHasher>(
    plan: &mut PassPlan,
    prune_after: u32,
    prev: &HashMap<FlowKey, FlowState, S>,
    seen: &FastSet<FlowKey>,
) {
    for (key, s) in prev {
        if seen.contains(key) {
            continue;
        }
        let missing = s.missing + 1;
        if missing >= prune_after {
            plan.deletes.push(*key);
            plan.totals.pruned += 1;
            if let Some((k, traffic)) = held_charge(s) {
                plan.totals.attributed.add(&traffic);
                if !traffic.is_zero() {
                    plan.usage.entry(k).or_default().add(&traffic);
                }
            }
        } else {
            plan.missing.push((*key, missing));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testkit::counters as c;

    fn flow(id: u32, orig: Counters, reply: Counters) -> Flow {
        let tcp = ("198.51.100.1:40000", "198.51.100.2:80");
        Flow {
            id,
            orig_counters: Some(orig),
            reply_counters: Some(reply),
            ..crate::testkit::flow(crate::testkit::TCP, tcp, None)
        }
    }

    fn alice() -> Attributed {
        Attributed {
            verdict: Verdict::User(Attribution {
                cgroup: None,
                uid: 1001,
                program: None,
                direction: Direction::Out,
                via: Default::default(),
                container: None,
            }),
            direction: Some(Direction::Out),
            remote: "198.51.100.2".parse().unwrap(),
            port: 80,
        }
    }

    /// Run passes over `dumps`, carrying the state like the store would; return the
    /// per-pass totals of alice's traffic.
    fn run(dumps: &[Vec<Flow>]) -> (Vec<Traffic>, HashMap<FlowKey, FlowState>) {
        let mut state: HashMap<FlowKey, FlowState> = HashMap::new();
        let mut out = vec![];
        for (i, flows) in dumps.iter().enumerate() {
            let at: Vec<_> = flows.iter().map(|_| alice()).collect();
            let plan = account_pass(i as i64, flows, &at, &state, 3);
            for s in plan.upserts {
                state.insert(s.key, s);
            }
            for (k, n) in plan.missing {
                state.get_mut(&k).unwrap().missing = n;
            }
            for k in plan.deletes {
                state.remove(&k);
            }
            out.push(plan.totals.attributed);
        }
        (out, state)
    }

    fn t(tx: u64, rx: u64, txp: u64, rxp: u64) -> Traffic {
        Traffic {
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: rxp,
            tx_packets: txp,
        }
    }

    #[test]
    fn first_sighting_charges_full_counters_then_steady_deltas() {
        let (got, _) = run(&[
            vec![flow(1, c(2, 100), c(3, 1000))],
            vec![flow(1, c(5, 400), c(9, 5000))],
            vec![flow(1, c(5, 400), c(9, 5000))],
        ]);
        assert_eq!(
            got,
            vec![t(100, 1000, 2, 3), t(300, 4000, 3, 6), t(0, 0, 0, 0)]
        );
    }

    #[test]
    fn counter_that_went_down_is_a_reset_and_charges_current() {
        let (got, _) = run(&[
            vec![flow(1, c(5, 400), c(9, 5000))],
            vec![flow(1, c(1, 60), c(9, 5100))],
        ]);
        // orig was zeroed (charges 60); reply went on (charges +100).
        assert_eq!(got[1], t(60, 100, 1, 0));
    }

    #[test]
    fn recreated_entry_with_new_id_is_a_new_flow() {
        let (got, state) = run(&[
            vec![flow(1, c(5, 400), c(9, 5000))],
            vec![flow(2, c(1, 60), c(1, 70))],
        ]);
        assert_eq!(got[1], t(60, 70, 1, 1));
        assert_eq!(state.len(), 2, "old id kept until pruned");
    }

    /// Issue 30: a new connection on the same tuple, in the memory of the entry it
    /// replaced, comes back under the same key. Its start tells it apart: the timer charges
    /// it from zero (not as more of the old one's), the daemon leaves it for the next pass
    /// while the old one's DESTROY, on its way, charges against the saved counters.
    #[test]
    fn a_replacement_under_the_same_key_is_told_apart_by_its_start() {
        let started = |f: Flow, s: u64| Flow {
            start_ns: Some(s * 1_000_000_000),
            ..f
        };
        let old = started(flow(7, c(5, 400), c(9, 5000)), 1000);
        let saved = FlowState {
            start_ns: old.start_ns,
            ..state(&old, (400, 5000), alice(), 1000)
        };
        let prev: HashMap<FlowKey, FlowState> = [(saved.key, saved.clone())].into();
        // Fewer bytes than saved (a reset, before) and more (a delta, before).
        for new in [c(1, 60), c(20, 9000)] {
            let replacement = started(flow(7, new, c(1, 70)), 1003);
            let timer = Hold::default();
            let p = account(
                1004,
                std::slice::from_ref(&replacement),
                &[alice()],
                &prev,
                3,
                timer,
            );
            let want = t(new.bytes, 70, new.packets, 1);
            assert_eq!(p.totals.attributed, want, "from zero");
            assert_eq!(p.upserts[0].start_ns, replacement.start_ns);
            let daemon = Hold {
                destroys_follow: true,
                ..Hold::default()
            };
            let p = account(1004, &[replacement], &[alice()], &prev, 3, daemon);
            assert!(p.usage.is_empty() && p.upserts.is_empty(), "{p:?}");
            assert!(p.missing.is_empty() && p.deletes.is_empty(), "{p:?}");
            assert_eq!(p.totals.replaced, 1);
        }
        // The same flow seen again: a delta, as ever.
        let again = started(flow(7, c(6, 500), c(10, 5100)), 1000);
        let p = account(1004, &[again], &[alice()], &prev, 3, Hold::default());
        assert_eq!(p.totals.attributed, t(100, 100, 5, 9));
        // A state a NEW event made (no start, nothing charged) is another flow's when the
        // flow seen began over a second after the event was read; not when it began before.
        let from_new = FlowState {
            orig: c(0, 0),
            reply: c(0, 0),
            ..state(&old, (0, 0), alice(), 1001)
        };
        assert!(!from_new.replaced_by(&started(flow(7, c(0, 0), c(0, 0)), 1000)));
        assert!(!from_new.replaced_by(&started(flow(7, c(0, 0), c(0, 0)), 1002)));
        assert!(from_new.replaced_by(&started(flow(7, c(0, 0), c(0, 0)), 1003)));
        // Nor a state already charged (saved before schema 11, its start unknown).
        assert!(!saved_without_start(&old).replaced_by(&started(flow(7, c(0, 0), c(0, 0)), 1900)));
    }

    /// Issue 24: the daemon's receive buffer overran; the saved flow's DESTROY, and its
    /// replacement's NEW, were lost. A replacement that began before the overrun's queue was
    /// read to its end (every DESTROY not lost was stored then) is charged at once, from
    /// zero; one that began after waits for the saved one's DESTROY, which is on its way.
    #[test]
    fn a_replacement_of_a_flow_whose_destroy_was_lost_is_charged_at_once() {
        let started = |f: Flow, s: u64| Flow {
            start_ns: Some(s * 1_000_000_000),
            ..f
        };
        let old = started(flow(7, c(5, 400), c(9, 5000)), 1000);
        let saved = FlowState {
            start_ns: old.start_ns,
            ..state(&old, (400, 5000), alice(), 1000)
        };
        let prev: HashMap<FlowKey, FlowState> = [(saved.key, saved)].into();
        let replacement = started(flow(7, c(20, 1_679), c(30, 201_568)), 1003);
        let unattributed = Attributed {
            verdict: Verdict::Unattributed(Reason::NoSocket),
            ..alice()
        };
        let daemon = |lost_before_s: Option<u64>| Hold {
            destroys_follow: true,
            destroys_lost_before: lost_before_s.map(|s| s * 1_000_000_000),
            ..Hold::default()
        };
        let pass = |hold| {
            let at = std::slice::from_ref(&unattributed);
            account(1010, std::slice::from_ref(&replacement), at, &prev, 3, hold)
        };
        // Lost before it began (the daemon subscribed or drained its queue at 1005).
        let p = pass(daemon(Some(1005)));
        assert_eq!(p.totals.replaced, 0);
        assert_eq!(
            p.totals.unattributed,
            t(1_679, 201_568, 20, 30),
            "from zero"
        );
        assert_eq!(p.totals.attributed, Traffic::default(), "nothing to alice");
        assert_eq!(p.upserts.len(), 1);
        let s = &p.upserts[0];
        assert_eq!(
            (s.start_ns, s.attribution.as_ref()),
            (replacement.start_ns, None)
        );
        assert_eq!((s.first_seen, s.reply.bytes), (1010, 201_568));
        // Began after the queue was drained, or no overrun: the saved one's DESTROY comes.
        for hold in [daemon(Some(1003)), daemon(None)] {
            let p = pass(hold);
            assert_eq!(p.totals.replaced, 1);
            assert!(p.usage.is_empty() && p.upserts.is_empty(), "{p:?}");
        }
    }

    fn saved_without_start(f: &Flow) -> FlowState {
        state(f, (400, 5000), alice(), 1000)
    }

    /// `account_seen` (the pass's: saved states looked up once, no set of seen flows when
    /// every saved flow is in the dump) plans exactly what `account` plans.
    #[test]
    fn account_seen_plans_what_account_plans() {
        let old = |id, n| FlowState {
            key: flow(id, c(0, 0), c(0, 0)).key(),
            orig: c(n, 100 * n),
            reply: c(n, 200 * n),
            attribution: alice().attribution().cloned(),
            first_seen: 0,
            last_seen: 10,
            missing: 0,
            start_ns: None,
        };
        let prev: HashMap<FlowKey, FlowState> = [old(1, 1), old(2, 2), old(3, 3), old(4, 4)]
            .into_iter()
            .map(|s| (s.key, s))
            .collect();
        let every = vec![
            flow(1, c(1, 100), c(1, 200)),
            flow(2, c(3, 300), c(3, 600)),
            flow(3, c(3, 300), c(3, 600)),
            flow(4, c(4, 400), c(4, 800)),
            flow(5, c(5, 500), c(5, 500)),
        ];
        // Every saved flow seen; one missing (4); two missing and one new only.
        for flows in [
            every.clone(),
            every[..3].to_vec(),
            vec![every[0].clone(), every[4].clone()],
        ] {
            let attributed = vec![alice(); flows.len()];
            let seen: Vec<Seen> = flows
                .iter()
                .zip(&attributed)
                .map(|(flow, attributed)| Seen {
                    flow,
                    attributed,
                    saved: prev.get(&flow.key()),
                })
                .collect();
            let want = account(20, &flows, &attributed, &prev, 3, Hold::default());
            let rules = Ledger {
                now: 20,
                prune_after: 3,
                hold: Hold::default(),
            };
            let got = account_seen(&rules, &seen, &prev);
            assert_eq!(got.usage, want.usage);
            assert_eq!(got.upserts, want.upserts);
            assert_eq!(got.deletes, want.deletes);
            assert_eq!(got.missing, want.missing);
            assert_eq!(got.totals, want.totals);
        }
    }

    #[test]
    fn missing_then_back_continues_from_last_seen() {
        let (got, _) = run(&[
            vec![flow(1, c(1, 100), c(1, 100))],
            vec![],
            vec![flow(1, c(2, 250), c(3, 400))],
        ]);
        assert_eq!(
            got,
            vec![t(100, 100, 1, 1), t(0, 0, 0, 0), t(150, 300, 1, 2)]
        );
    }

    #[test]
    fn pruned_only_after_staying_gone() {
        let one = vec![flow(1, c(1, 100), c(1, 100))];
        let (_, s) = run(&[one.clone(), vec![], vec![]]);
        assert_eq!(s.len(), 1, "gone twice: kept");
        assert_eq!(s.values().next().unwrap().missing, 2);
        let (_, s) = run(&[one, vec![], vec![], vec![]]);
        assert!(s.is_empty(), "gone three times: pruned");
    }

    #[test]
    fn flow_without_counters_charges_nothing_and_is_counted() {
        let mut f = flow(1, c(0, 0), c(0, 0));
        f.orig_counters = None;
        f.reply_counters = None;
        let plan = account_pass(0, &[f], &[alice()], &HashMap::new(), 3);
        assert_eq!(plan.totals.flows_without_counters, 1);
        assert!(plan.usage.is_empty());
        assert!(plan.upserts.is_empty());
    }

    #[test]
    fn unchanged_flow_is_not_rewritten() {
        let f = flow(1, c(1, 100), c(1, 100));
        let p1 = account_pass(0, std::slice::from_ref(&f), &[alice()], &HashMap::new(), 3);
        let state: HashMap<_, _> = p1.upserts.into_iter().map(|s| (s.key, s)).collect();
        let p2 = account_pass(1, &[f], &[alice()], &state, 3);
        assert!(p2.upserts.is_empty());
        assert!(p2.usage.is_empty());
    }

    #[test]
    fn incoming_flow_receives_the_original_direction() {
        let d = delta(None, c(2, 100), c(3, 900));
        assert_eq!(
            Traffic::from_delta(&d, Some(Direction::In)),
            t(900, 100, 3, 2)
        );
        assert_eq!(
            Traffic::from_delta(&d, Some(Direction::Out)),
            t(100, 900, 2, 3)
        );
    }

    const ROOT: u32 = 0;
    const ALICE: u32 = 1001;

    /// An sshd session (incoming, port 22) attributed with `via`.
    fn ssh(uid: u32, via: Via, excluded: bool) -> Attributed {
        let a = Attribution {
            cgroup: None,
            uid,
            program: Some("sshd".into()),
            direction: Direction::In,
            via,
            container: None,
        };
        Attributed {
            verdict: if excluded {
                Verdict::Excluded(Some(a))
            } else {
                Verdict::User(a)
            },
            direction: Some(Direction::In),
            remote: "198.51.100.2".parse().unwrap(),
            port: 22,
        }
    }

    fn state(f: &Flow, counters: (u64, u64), a: Attributed, first_seen: i64) -> FlowState {
        FlowState {
            key: f.key(),
            orig: c(1, counters.0),
            reply: c(1, counters.1),
            attribution: a.attribution().cloned(),
            first_seen,
            last_seen: first_seen,
            missing: 0,
            start_ns: None,
        }
    }

    /// What a pass at second 100 with a 5 s grace does with a session now at 1000/9000
    /// bytes (in/out). `old` is its saved state (first seen at `seen`), `start` conntrack's
    /// start second. Returns (held back?, bytes charged, key of the charge).
    fn pass_at_100(
        old: Option<FlowState>,
        at: Attributed,
        start: Option<i64>,
        ended: bool,
    ) -> (bool, u64, Option<UsageKey>) {
        let mut f = flow(1, c(10, 1000), c(20, 9000));
        f.start_ns = start.map(|s| s as u64 * 1_000_000_000);
        let prev: HashMap<_, _> = old.into_iter().map(|s| (s.key, s)).collect();
        let plan = account(
            100,
            &[f],
            &[at],
            &prev,
            3,
            Hold {
                grace: 5,
                ended,
                destroys_follow: false,
                destroys_lost_before: None,
            },
        );
        let held = plan.totals.held == 1;
        if held {
            assert!(plan.usage.is_empty(), "nothing is charged while held");
            let s = &plan.upserts[0];
            assert_eq!(
                (s.orig.bytes, s.reply.bytes),
                (1000, 9000),
                "last seen kept"
            );
            assert!(s.is_held());
        }
        let key = plan.usage.keys().next().cloned();
        (held, plan.usage.values().map(Traffic::bytes).sum(), key)
    }

    #[rstest::rstest]
    // A young session no user's process holds yet: held back, from either clock.
    #[case::first_sighting_young(None, Via::Pending, false, None, false, true, 0)]
    #[case::young_by_conntrack_start(None, Via::Pending, false, Some(97), false, true, 0)]
    // Old enough: the service's own, everything at once.
    #[case::first_sighting_old_by_conntrack(
        None,
        Via::Pending,
        false,
        Some(90),
        false,
        false,
        10_000
    )]
    // The flow ended: nothing left to wait for.
    #[case::ended_young(None, Via::Pending, false, Some(99), true, false, 10_000)]
    // Local traffic charges nobody: never held.
    #[case::excluded_is_not_held(None, Via::Pending, true, None, false, false, 10_000)]
    // Found: the user is charged everything from the first byte.
    #[case::first_sighting_found(None, Via::Delegated(ROOT), false, None, false, false, 10_000)]
    fn hold_back_rule_first_sighting(
        #[case] old: Option<FlowState>,
        #[case] v: Via,
        #[case] excluded: bool,
        #[case] start: Option<i64>,
        #[case] ended: bool,
        #[case] want_held: bool,
        #[case] want_bytes: u64,
    ) {
        let uid = if matches!(v, Via::Delegated(_)) {
            ALICE
        } else {
            ROOT
        };
        let (held, bytes, _) = pass_at_100(old, ssh(uid, v, excluded), start, ended);
        assert_eq!((held, bytes), (want_held, want_bytes));
    }

    #[rstest::rstest]
    // Held since second 98 (100 and 900 bytes last seen, none charged): still young.
    #[case::held_still_young(98, Via::Pending, None, true, 0, None)]
    // The user's process now holds it: everything from zero, to the user, via root.
    #[case::held_then_found(98, Via::Delegated(ROOT), None, false, 10_000, Some(ALICE))]
    // Grace ran out: everything from zero to root.
    #[case::held_past_grace(90, Via::Pending, None, false, 10_000, Some(ROOT))]
    #[case::held_ambiguous(98, Via::Ambiguous, None, false, 10_000, Some(ROOT))]
    fn hold_back_rule_held_flow(
        #[case] seen: i64,
        #[case] v: Via,
        #[case] start: Option<i64>,
        #[case] want_held: bool,
        #[case] want_bytes: u64,
        #[case] charged_to: Option<u32>,
    ) {
        let f = flow(1, c(1, 100), c(1, 900));
        let old = state(&f, (100, 900), ssh(ROOT, Via::Pending, false), seen);
        let uid = if matches!(v, Via::Delegated(_)) {
            ALICE
        } else {
            ROOT
        };
        let (held, bytes, key) = pass_at_100(Some(old), ssh(uid, v, false), start, false);
        assert_eq!((held, bytes), (want_held, want_bytes));
        assert_eq!(key.as_ref().and_then(|k| k.uid), charged_to);
        if let Some(k) = key {
            let want_via = matches!(v, Via::Delegated(_)).then_some(ROOT);
            assert_eq!(k.via, want_via);
            let want_reason = (v == Via::Ambiguous).then_some(Reason::AmbiguousHolders);
            assert_eq!(k.reason, want_reason);
        }
    }

    #[test]
    fn a_flow_already_charged_is_never_held_and_goes_on_from_its_counters() {
        // Charged before (unattributed: its socket was not there yet), now on root's
        // socket with no user holding it: settled as root's own, from the charged counters.
        let f = flow(1, c(1, 100), c(1, 900));
        let mut un = ssh(ROOT, Via::Direct, false);
        un.verdict = Verdict::Unattributed(Reason::NoSocket);
        let old = state(&f, (100, 900), un, 98);
        let (held, bytes, key) =
            pass_at_100(Some(old), ssh(ROOT, Via::Pending, false), None, false);
        assert!(!held);
        assert_eq!(bytes, 10_000 - 1_000);
        assert_eq!(key.unwrap().uid, Some(ROOT));
    }

    #[test]
    fn a_held_flow_that_vanishes_is_charged_its_last_counters_when_pruned() {
        let f = flow(1, c(3, 300), c(4, 4000));
        let mut prev = HashMap::new();
        let s = state(&f, (300, 4000), ssh(ROOT, Via::Pending, false), 98);
        prev.insert(s.key, s);
        let hold = Hold {
            grace: 5,
            ended: false,
            destroys_follow: false,
            destroys_lost_before: None,
        };
        let plan = account(100, &[], &[], &prev, 3, hold);
        assert!(plan.usage.is_empty(), "missing once: kept, not charged");
        prev.values_mut().for_each(|s| s.missing = 2);
        let plan = account(160, &[], &[], &prev, 3, hold);
        assert_eq!(plan.deletes.len(), 1);
        let (k, t) = plan.usage.iter().next().unwrap();
        assert_eq!((k.uid, k.via, k.port), (Some(ROOT), None, 80));
        // Incoming (its direction): the original direction is what it received.
        assert_eq!((t.rx_bytes, t.tx_bytes), (300, 4000));
        assert_eq!(plan.totals.attributed.bytes(), 4300);
    }

    #[test]
    fn settled_state_is_stored_with_its_via() {
        let f = flow(1, c(1, 100), c(1, 900));
        let plan = account_pass(
            0,
            &[f],
            &[ssh(ALICE, Via::Delegated(ROOT), false)],
            &HashMap::new(),
            3,
        );
        let a = plan.upserts[0].attribution.clone().unwrap();
        assert_eq!((a.uid, a.via), (ALICE, Via::Delegated(ROOT)));
        // With no grace a pending flow is the service's own at once.
        let f = flow(2, c(1, 100), c(1, 900));
        let plan = account_pass(
            0,
            &[f],
            &[ssh(ROOT, Via::Pending, false)],
            &HashMap::new(),
            3,
        );
        assert_eq!(plan.upserts[0].attribution.as_ref().unwrap().via, Via::Own);
        assert_eq!(plan.totals.attributed.bytes(), 1000);
    }

    #[test]
    fn totals_reconcile_across_buckets() {
        let f1 = flow(1, c(1, 100), c(1, 200));
        let f2 = flow(2, c(1, 10), c(1, 20));
        let f3 = flow(3, c(1, 1), c(1, 2));
        let mut ex = alice();
        ex.verdict = Verdict::Excluded(None);
        let mut un = alice();
        un.verdict = Verdict::Unattributed(Reason::NoSocket);
        let plan = account_pass(0, &[f1, f2, f3], &[alice(), ex, un], &HashMap::new(), 3);
        assert_eq!(plan.totals.attributed.bytes(), 300);
        assert_eq!(plan.totals.excluded.bytes(), 30);
        assert_eq!(plan.totals.unattributed.bytes(), 3);
        assert_eq!(plan.totals.counted_bytes(), 333);
        let usage_sum: u64 = plan.usage.values().map(|t| t.bytes()).sum();
        assert_eq!(usage_sum, 333);
    }
}
