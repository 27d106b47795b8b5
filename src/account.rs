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
mod tests;
