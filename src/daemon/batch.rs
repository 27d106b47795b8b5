//! What one flush of conntrack events writes: pure, so every shape is tested without a
//! kernel.
//!
//! - A NEW event with an owner becomes a flow-state attribution (zero counters for a flow
//!   not yet known, so its first charge is its full counters, exactly like a first
//!   sighting in a pass).
//! - A DESTROY event charges `final − last charged` (the saved state's counters; the full
//!   final counters for a flow never charged), through the same delta rule and the same
//!   join as a pass ([`account_seen`], [`attribute`]), then forgets the flow and logs it.
//! - A NEW and its DESTROY in the same flush write no state at all: the DESTROY uses the
//!   NEW's owner directly.
//!
//! Because every DESTROY charges against the saved state and deletes it in the same
//! transaction, a DESTROY can never be charged twice, whatever passes ran in between.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::account::{account_seen, FlowState, Hold, Ledger, PassPlan, Seen};
use crate::attribute::{attribute, Attributed, Attribution, LocalNets, SocketIndex, Verdict, Via};
use crate::model::{Flow, FlowKey};
use crate::pass::record::{key_before_echo_ids, saved_state};
use crate::sources::conntrack::Timeouts;
use crate::sources::processes::Owner;
use crate::store::connections::{EventWrite, LoggedConnection, NotLogged};
use crate::store::PassRecord;

/// A conntrack event after the listener handled it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A flow began; `owner` is who its socket belonged to at that moment, if any.
    New {
        /// The flow (no counters).
        flow: Flow,
        /// The owner found through sock_diag (and the program through /proc, if found).
        owner: Option<Attribution>,
        /// When the event was received, ms since the epoch.
        at_ms: i64,
    },
    /// A flow ended, with its final counters.
    Destroy {
        /// The flow.
        flow: Flow,
        /// Its final TCP state, when it is TCP.
        tcp_state: Option<crate::model::CtTcpState>,
        /// The whole seconds its entry had left (CTA_TIMEOUT): present when it was removed
        /// before it expired.
        left: Option<u32>,
        /// When the event was received, ms since the epoch.
        at_ms: i64,
    },
}

impl Resolved {
    /// The flow's identity.
    pub fn key(&self) -> FlowKey {
        match self {
            Resolved::New { flow, .. } | Resolved::Destroy { flow, .. } => flow.key(),
        }
    }
}

/// The keys whose saved state a flush must read: the destroyed flows' (and an echo's
/// under the key it had before echo ids, [`key_before_echo_ids`]).
pub fn destroyed_keys(events: &[Resolved]) -> Vec<FlowKey> {
    let mut seen = HashSet::new();
    events
        .iter()
        .filter_map(|e| match e {
            Resolved::Destroy { flow, .. } => Some(flow.key()),
            Resolved::New { .. } => None,
        })
        .flat_map(|k| [Some(k), key_before_echo_ids(&k)])
        .flatten()
        .filter(|k| seen.insert(*k))
        .collect()
}

/// Settings of a flush.
pub struct BatchConfig<'a> {
    /// The name of a uid (the system's user database; a table in tests), so that planning
    /// stays pure.
    pub user_name: &'a dyn Fn(u32) -> Option<String>,
    /// Local networks (charged to nobody).
    pub nets: &'a LocalNets,
    /// This host's addresses (the direction of flows without an owner).
    pub host: &'a HashSet<IpAddr>,
    /// Keep the connection log.
    pub log: bool,
    /// Log connections charged to nobody as local too.
    pub log_local: bool,
    /// Connections this flush may log at most (the rest are counted in `not_logged`).
    pub log_budget: u64,
    /// Epoch seconds stamped on the usage rows.
    pub now: i64,
    /// Malformed event messages skipped since the last flush.
    pub skipped_messages: u64,
    /// Conntrack's timeouts, to date a connection's end.
    pub timeouts: &'a Timeouts,
    /// Charge a destroyed flow without a known owner by its owner mark.
    pub marks: bool,
}

/// How far before its start STOP − timeout may land for an entry that expired (or was
/// removed with under a second left, which DESTROY events do not report): a jiffy (at
/// most 10 ms) for an expiry, under a second for such a removal. Further back, the entry
/// cannot have expired: it was removed early by a kernel that does not report the time
/// left, and its end is unknown between its start and STOP.
const EXPIRY_SLACK_MS: i64 = 1000;

/// When a destroyed flow's connection ended — its last packet — in ms since the epoch
/// (see [`Timeouts`]); without kernel timestamps, when the event arrived. `left` is the
/// DESTROY event's CTA_TIMEOUT.
fn end_of(
    flow: &Flow,
    tcp_state: Option<crate::model::CtTcpState>,
    left: Option<u32>,
    at_ms: i64,
    t: &Timeouts,
) -> i64 {
    let Some(stop) = flow.stop_ns.map(ns_to_ms) else {
        return at_ms;
    };
    let Some(timeout) = t.after(flow, tcp_state) else {
        return stop;
    };
    let start = flow.start_ns.map_or(i64::MIN, ns_to_ms);
    let timeout_ms = i64::try_from(timeout).unwrap_or(i64::MAX / 2_000) * 1000;
    let last = match left {
        // Removed early: the expiry was STOP + left (+ under 1 s).
        Some(left) => stop - timeout_ms + i64::from(left) * 1000,
        None if stop - timeout_ms < start.saturating_sub(EXPIRY_SLACK_MS) => return stop,
        // Expired: STOP is the expiry, to within a jiffy.
        None => stop - timeout_ms,
    };
    // Never before the start (the jiffy), never after STOP (a timeout lowered since).
    last.max(start).min(stop)
}

/// A NEW event of the flush: the owner it found and when it arrived (ms).
type NewSeen = (Option<Attribution>, i64);

fn ns_to_ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

/// One DESTROY of a flush, carried through the planning: the flow, when its connection
/// ended, the NEW of the same flush it consumed, its saved state, its verdict.
struct Destroyed<'a> {
    flow: &'a Flow,
    end_ms: i64,
    new: Option<NewSeen>,
    /// The saved state, when it is this flow's (else the flow is charged from zero).
    saved: Option<&'a FlowState>,
    attributed: Attributed,
}

impl Destroyed<'_> {
    fn seen(&self) -> Seen<'_> {
        Seen {
            flow: self.flow,
            attributed: &self.attributed,
            saved: self.saved,
        }
    }
}

/// The NEW events of a flush (their owners, and their keys in arrival order: a later
/// DESTROY consumes its NEW) and its DESTROYs, attributed.
struct Gathered<'a> {
    news: HashMap<FlowKey, NewSeen>,
    new_order: Vec<FlowKey>,
    destroys: Vec<Destroyed<'a>>,
}

/// Plan one flush (pure). `prev` holds the saved state of the destroyed flows (read by
/// the store inside the write transaction).
pub fn plan_batch(
    events: &[Resolved],
    prev: &HashMap<FlowKey, FlowState>,
    cfg: &BatchConfig,
) -> EventWrite {
    let no_owners: HashMap<u64, Owner> = HashMap::new();
    let subuids = crate::sources::netns::SubUids::host();
    let idx = SocketIndex::new(&[], &no_owners, cfg.host.iter().copied())
        .with_subuids(&subuids)
        .with_marks(cfg.marks);
    let Gathered {
        news,
        new_order,
        destroys,
    } = gather(events, prev, cfg, &idx);
    let plan = account_destroys(&destroys, prev, cfg.now);
    let (log, not_logged) = if cfg.log {
        log_destroys(&destroys, cfg)
    } else {
        (Vec::new(), NotLogged::default())
    };
    let attributions = new_order
        .iter()
        .filter_map(|k| {
            let (owner, at_ms) = news.get(k)?;
            Some(FlowState {
                key: *k,
                orig: Default::default(),
                reply: Default::default(),
                attribution: Some(owner.clone()?),
                first_seen: at_ms / 1000,
                last_seen: at_ms / 1000,
                missing: 0,
                start_ns: None,
            })
        })
        .collect();
    let users = plan.user_names(cfg.user_name);
    EventWrite {
        record: PassRecord {
            started_at: cfg.now,
            mode: "events",
            sockets: 0,
            bad_lines: 0,
            skipped_messages: cfg.skipped_messages,
        },
        plan,
        users,
        attributions,
        log,
        not_logged,
    }
}

/// The events of a flush in order: the NEW owners, and every DESTROY with the NEW it
/// consumed, whether the saved state in `prev` is its flow's, and its verdict on `idx`.
fn gather<'a>(
    events: &'a [Resolved],
    prev: &'a HashMap<FlowKey, FlowState>,
    cfg: &BatchConfig,
    idx: &SocketIndex,
) -> Gathered<'a> {
    let mut g = Gathered {
        news: HashMap::new(),
        new_order: Vec::new(),
        destroys: Vec::new(),
    };
    let mut consumed: HashSet<FlowKey> = HashSet::new();
    for e in events {
        match e {
            Resolved::New { flow, owner, at_ms } => {
                let k = flow.key();
                if g.news.insert(k, (owner.clone(), *at_ms)).is_none() {
                    g.new_order.push(k);
                }
            }
            Resolved::Destroy {
                flow,
                tcp_state,
                left,
                at_ms,
            } => {
                let k = flow.key();
                let new = g.news.remove(&k);
                let end_ms = end_of(flow, *tcp_state, *left, *at_ms, cfg.timeouts);
                // Conntrack's id is a hash of the entry's address and tuple: a replacement
                // entry of the same tuple in the same memory has the same key. The saved
                // state is this flow's unless it is another's (FlowState::replaced_by: a
                // pass saved the replacement, which began after this one) or an earlier
                // DESTROY of this flush used it (this one began after that one's end);
                // such a flow was never charged or saved: it is charged from zero.
                let saved = saved_state(prev, flow)
                    .filter(|s| !s.replaced_by(flow))
                    .filter(|s| consumed.insert(s.key));
                let from_new = new.as_ref().and_then(|(a, _)| a.as_ref());
                // A held flow whose owner was found since (in this flush) takes that owner.
                let prior = match (saved.and_then(|s| s.attribution.as_ref()), from_new) {
                    (Some(s), Some(n)) if s.via == Via::Pending => Some(n),
                    (s, n) => s.or(n),
                };
                let attributed = attribute(flow, idx, prior, cfg.nets);
                g.destroys.push(Destroyed {
                    flow,
                    end_ms,
                    new,
                    saved,
                    attributed,
                });
            }
        }
    }
    g
}

/// Charge the DESTROYs: those whose saved state is their flow's against it, the others
/// from zero. Every destroyed flow is seen, so nothing of `prev` is aged or pruned. A flow
/// held back (pending) has ended: it is charged now, from zero, to the owner it has.
fn account_destroys(
    destroys: &[Destroyed],
    prev: &HashMap<FlowKey, FlowState>,
    now: i64,
) -> PassPlan {
    let rules = Ledger {
        now,
        prune_after: u32::MAX,
        hold: Hold {
            grace: 0,
            ended: true,
            destroys_follow: true,
            destroys_lost_before: None,
        },
    };
    let part = |own: bool| -> Vec<Seen> {
        destroys
            .iter()
            .filter(|d| d.saved.is_some() == own)
            .map(Destroyed::seen)
            .collect()
    };
    let against = part(true);
    let mut plan = account_seen(&rules, &against, prev);
    let again = part(false);
    if !again.is_empty() {
        let more = account_seen(&rules, &again, &HashMap::new());
        for (k, t) in more.usage {
            plan.usage.entry(k).or_default().add(&t);
        }
        let (t, m) = (&mut plan.totals, more.totals);
        t.flows += m.flows;
        t.new_flows += m.new_flows;
        t.flows_without_counters += m.flows_without_counters;
        t.resets += m.resets;
        t.held += m.held;
        t.attributed.add(&m.attributed);
        t.unattributed.add(&m.unattributed);
        t.excluded.add(&m.excluded);
    }
    // A saved state another flow's DESTROY did not use stays, for that flow.
    plan.deletes = against.iter().filter_map(|s| Some(s.saved?.key)).collect();
    plan
}

/// The connections logged: local flows (a flood to 127.0.0.1 costs a user nothing) are
/// left out unless asked for, and the rest up to the budget: both counted, never charged
/// differently.
fn log_destroys(destroys: &[Destroyed], cfg: &BatchConfig) -> (Vec<LoggedConnection>, NotLogged) {
    let mut not_logged = NotLogged::default();
    let mut taken = 0u64;
    let log = destroys
        .iter()
        .filter(|d| {
            let at = &d.attributed;
            let local = matches!(at.verdict, Verdict::Excluded(_));
            if local && !cfg.log_local {
                not_logged.local += 1;
                return false;
            }
            if taken >= cfg.log_budget {
                not_logged.over_limit += 1;
                let uid = at.attribution().map(|a| a.uid);
                *not_logged.over_limit_by.entry(uid).or_default() += 1;
                return false;
            }
            taken += 1;
            true
        })
        .map(logged)
        .collect();
    (log, not_logged)
}

/// A DESTROY as its connection is logged.
fn logged(d: &Destroyed) -> LoggedConnection {
    let (flow, end_ms) = (d.flow, d.end_ms);
    let start_ms = flow
        .start_ns
        .map(ns_to_ms)
        .or_else(|| d.new.as_ref().map(|(_, t)| *t))
        .or_else(|| d.saved.map(|s| s.first_seen * 1000))
        .unwrap_or(end_ms)
        .min(end_ms);
    let owner = d.attributed.attribution();
    LoggedConnection {
        start_ms,
        end_ms,
        orig: flow.orig,
        reply: flow.reply,
        direction: d.attributed.direction,
        uid: owner.map(|a| a.uid),
        program: owner.and_then(|a| a.program.clone()),
        orig_counters: flow.orig_counters,
        reply_counters: flow.reply_counters,
        zone: flow.zone,
        via: owner.and_then(|a| a.via.through()),
        container: owner.and_then(|a| a.container.clone()),
        cgroup: owner.and_then(|a| a.cgroup.clone()),
    }
}

#[cfg(test)]
mod tests;
