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
mod tests {
    use super::*;
    use crate::account::Kind;
    use crate::attribute::Direction;
    use crate::model::{Counters, CtStatus, CtTcpState};
    use crate::testkit;

    const ALICE: u32 = 1001;

    fn flow(id: u32, sport: u16, counters: Option<(u64, u64)>) -> Flow {
        let local = format!("198.51.100.1:{sport}");
        Flow {
            id,
            orig_counters: counters.map(|(o, _)| testkit::counters(10, o)),
            reply_counters: counters.map(|(_, r)| testkit::counters(20, r)),
            start_ns: Some(1_780_000_000_000_000_000),
            stop_ns: Some(1_780_000_000_250_000_000),
            ..testkit::flow(testkit::TCP, (&local, "198.51.100.2:9000"), None)
        }
    }

    fn alice() -> Attribution {
        Attribution {
            cgroup: None,
            uid: ALICE,
            program: Some("curl".into()),
            direction: Direction::Out,
            via: Default::default(),
            container: None,
        }
    }

    fn plan(events: &[Resolved], prev: &HashMap<FlowKey, FlowState>) -> EventWrite {
        let nets = LocalNets::defaults();
        let timeouts = Timeouts {
            tcp_time_wait: 1,
            ..Timeouts::default()
        };
        let host: HashSet<IpAddr> = ["198.51.100.1".parse().unwrap()].into_iter().collect();
        plan_batch(
            events,
            prev,
            &BatchConfig {
                user_name: &|uid| Some(format!("user{uid}")),
                nets: &nets,
                host: &host,
                log: true,
                log_local: false,
                log_budget: u64::MAX,
                now: 1_780_000_001,
                skipped_messages: 0,
                timeouts: &timeouts,
                marks: true,
            },
        )
    }

    fn user_bytes(w: &EventWrite) -> (u64, u64) {
        w.plan
            .usage
            .iter()
            .filter(|(k, _)| k.kind == Kind::User && k.uid == Some(ALICE))
            .fold((0, 0), |(rx, tx), (_, t)| {
                (rx + t.rx_bytes, tx + t.tx_bytes)
            })
    }

    #[test]
    fn new_and_destroy_in_one_flush_charge_the_owner_and_write_no_state() {
        let events = [
            Resolved::New {
                flow: flow(1, 40000, None),
                owner: Some(alice()),
                at_ms: 1_780_000_000_001,
            },
            Resolved::Destroy {
                flow: flow(1, 40000, Some((600, 20_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_300,
            },
        ];
        let w = plan(&events, &HashMap::new());
        assert_eq!(user_bytes(&w), (20_000, 600));
        assert!(w.attributions.is_empty());
        assert!(
            w.plan.deletes.is_empty(),
            "nothing saved, nothing to delete"
        );
        assert_eq!(w.log.len(), 1);
        let c = &w.log[0];
        assert_eq!((c.uid, c.direction), (Some(ALICE), Some(Direction::Out)));
        assert_eq!(c.duration_ms(), 250, "kernel timestamps win");
        assert_eq!(c.program.as_deref(), Some("curl"));
    }

    /// Issue 14: a container's flow (its NEW found the owner in the container) is charged
    /// and logged with its container, as a saved one is after a pass found it.
    #[test]
    fn a_container_flow_is_charged_and_logged_with_its_container() {
        let docker = crate::attribute::Container {
            name: "docker-3f2a".into(),
            inner_uid: 1000,
        };
        let inside = Attribution {
            container: Some(docker.clone()),
            ..alice()
        };
        let events = [
            Resolved::New {
                flow: flow(1, 40000, None),
                owner: Some(inside.clone()),
                at_ms: 1_780_000_000_001,
            },
            Resolved::Destroy {
                flow: flow(1, 40000, Some((600, 20_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_300,
            },
            Resolved::Destroy {
                flow: flow(2, 40001, Some((60, 2_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_300,
            },
        ];
        let saved = FlowState {
            key: flow(2, 40001, None).key(),
            orig: Counters::default(),
            reply: Counters::default(),
            attribution: Some(inside),
            first_seen: 1_780_000_000,
            last_seen: 1_780_000_000,
            missing: 0,
            start_ns: None,
        };
        let prev = HashMap::from([(saved.key, saved)]);
        let w = plan(&events, &prev);
        let charged: Vec<_> = w
            .plan
            .usage
            .iter()
            .map(|(k, t)| (k.uid, k.container.clone(), t.tx_bytes))
            .collect();
        assert_eq!(charged, [(Some(ALICE), Some(docker.clone()), 660)]);
        assert_eq!(w.log.len(), 2);
        assert!(w.log.iter().all(|c| c.container.as_ref() == Some(&docker)));
    }

    #[test]
    fn a_destroy_without_a_known_owner_is_charged_to_its_owner_mark() {
        let mut f = flow(3, 40003, Some((700, 30_000)));
        f.mark = crate::owner_mark::mark_of(ALICE);
        let events = [Resolved::Destroy {
            flow: f,
            tcp_state: None,
            left: None,
            at_ms: 1_780_000_000_300,
        }];
        let w = plan(&events, &HashMap::new());
        assert_eq!(user_bytes(&w), (30_000, 700));
        assert_eq!(w.plan.totals.unattributed.bytes(), 0);
        assert_eq!(w.log[0].uid, Some(ALICE));
    }

    #[test]
    fn a_key_destroyed_twice_in_one_flush_charges_both_flows() {
        // Conntrack ids hash the entry's address and tuple: a TIME_WAIT entry replaced by
        // a new connection on the same tuple may come back in the same memory, with the
        // same id, and be replaced again within one flush.
        let events = [
            Resolved::New {
                flow: flow(7, 40007, None),
                owner: Some(alice()),
                at_ms: 1_780_000_000_001,
            },
            Resolved::Destroy {
                flow: flow(7, 40007, Some((100, 1_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_300,
            },
            Resolved::New {
                flow: flow(7, 40007, None),
                owner: Some(alice()),
                at_ms: 1_780_000_000_400,
            },
            Resolved::Destroy {
                flow: flow(7, 40007, Some((200, 2_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_700,
            },
        ];
        let saved: HashMap<FlowKey, FlowState> = [(
            flow(7, 40007, None).key(),
            FlowState {
                key: flow(7, 40007, None).key(),
                orig: Counters {
                    packets: 1,
                    bytes: 60,
                },
                reply: Counters {
                    packets: 1,
                    bytes: 60,
                },
                attribution: Some(alice()),
                first_seen: 1_780_000_000,
                last_seen: 1_780_000_000,
                missing: 0,
                start_ns: None,
            },
        )]
        .into_iter()
        .collect();
        // The first flow from what the last pass charged, the second from zero.
        let w = plan(&events, &saved);
        assert_eq!(user_bytes(&w), (1_000 - 60 + 2_000, 100 - 60 + 200));
        assert_eq!(w.log.len(), 2, "both connections logged");
        assert_eq!(w.plan.deletes.len(), 1);
        assert!(w.attributions.is_empty());
    }

    /// Issue 30 (the churn test's flake): conntrack made a new entry on the same tuple in
    /// the memory of the one it replaced, so both have one key. A pass read the table
    /// while the old one's DESTROY was still on its way.
    #[test]
    fn a_replacement_under_the_same_key_never_takes_the_saved_counters_of_the_other() {
        let at = |f: Flow, s: u64| Flow {
            start_ns: Some(s * 1_000_000_000),
            ..f
        };
        let saved = |f: &Flow, bytes: (u64, u64), first_seen| FlowState {
            key: f.key(),
            orig: Counters {
                packets: 1,
                bytes: bytes.0,
            },
            reply: Counters {
                packets: 1,
                bytes: bytes.1,
            },
            attribution: Some(alice()),
            first_seen,
            last_seen: first_seen,
            missing: 0,
            start_ns: f.start_ns,
        };
        // The old flow's owner mark names alice (case 2 has no saved owner for it).
        let old = Flow {
            mark: crate::owner_mark::mark_of(ALICE),
            ..at(flow(9, 40009, Some((500, 9_000))), 1_780_000_000)
        };
        let new = at(flow(9, 40009, Some((300, 7_000))), 1_780_000_004);
        let destroy = |f: &Flow| Resolved::Destroy {
            flow: f.clone(),
            tcp_state: None,
            left: None,
            at_ms: 1_780_000_006_000,
        };
        // 1. The state is the old flow's (the pass left the new one alone): its DESTROY
        //    charges final − saved and forgets it; the new one's NEW saves its owner.
        let prev = HashMap::from([(old.key(), saved(&old, (100, 2_000), 1_780_000_000))]);
        let events = [
            destroy(&old),
            Resolved::New {
                flow: flow(9, 40009, None),
                owner: Some(alice()),
                at_ms: 1_780_000_004_000,
            },
        ];
        let w = plan(&events, &prev);
        assert_eq!(user_bytes(&w), (7_000, 400));
        assert_eq!(w.plan.deletes, vec![old.key()]);
        assert_eq!(w.attributions.len(), 1);
        // 2. The state is the new flow's (a NEW saved the old one's owner, then a pass
        //    charged the new one, 300/7,000, from zero before the old one's DESTROY came):
        //    the old one is charged from zero and the new one's state stays; its own
        //    DESTROY, in the same flush, charges against it.
        let prev = HashMap::from([(new.key(), saved(&new, (300, 7_000), 1_780_000_004))]);
        let later = at(flow(9, 40009, Some((350, 7_500))), 1_780_000_004);
        let w = plan(&[destroy(&old), destroy(&later)], &prev);
        assert_eq!(user_bytes(&w), (9_000 + 500, 500 + 50));
        assert_eq!(w.plan.deletes, vec![new.key()]);
        let w = plan(&[destroy(&old)], &prev);
        assert_eq!(user_bytes(&w), (9_000, 500));
        assert!(w.plan.deletes.is_empty(), "the new flow's state is kept");
    }

    #[test]
    fn destroy_charges_final_minus_saved_and_forgets_the_flow() {
        let f = flow(2, 40001, Some((1_000, 50_000)));
        let saved = FlowState {
            key: f.key(),
            orig: Counters {
                packets: 4,
                bytes: 400,
            },
            reply: Counters {
                packets: 8,
                bytes: 30_000,
            },
            attribution: Some(alice()),
            first_seen: 1_779_999_990,
            last_seen: 1_780_000_000,
            missing: 0,
            start_ns: None,
        };
        let prev: HashMap<_, _> = [(f.key(), saved)].into_iter().collect();
        let w = plan(
            &[Resolved::Destroy {
                flow: f.clone(),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_500,
            }],
            &prev,
        );
        assert_eq!(user_bytes(&w), (20_000, 600));
        assert_eq!(w.plan.deletes, vec![f.key()]);
        assert!(w.plan.upserts.iter().all(|s| s.key == f.key()));
        assert_eq!(w.plan.totals.attributed.bytes(), 20_600);
    }

    #[test]
    fn new_alone_stores_the_owner_with_zero_counters() {
        let w = plan(
            &[Resolved::New {
                flow: flow(3, 40002, None),
                owner: Some(alice()),
                at_ms: 1_780_000_000_900,
            }],
            &HashMap::new(),
        );
        assert_eq!(w.attributions.len(), 1);
        let s = &w.attributions[0];
        assert_eq!((s.orig.bytes, s.reply.bytes), (0, 0));
        assert_eq!(s.attribution, Some(alice()));
        assert_eq!(s.first_seen, 1_780_000_000);
        assert!(w.plan.usage.is_empty() && w.log.is_empty());
    }

    #[test]
    fn destroy_without_owner_is_unattributed_and_without_counters_charges_nothing() {
        let w = plan(
            &[
                Resolved::Destroy {
                    flow: flow(4, 40003, Some((100, 200))),
                    tcp_state: None,
                    left: None,
                    at_ms: 1,
                },
                Resolved::Destroy {
                    flow: flow(5, 40004, None),
                    tcp_state: None,
                    left: None,
                    at_ms: 2,
                },
            ],
            &HashMap::new(),
        );
        assert_eq!(w.plan.totals.unattributed.bytes(), 300);
        assert_eq!(w.plan.totals.flows_without_counters, 1);
        assert_eq!(w.log.len(), 2, "both connections are logged");
        assert_eq!(w.log[0].uid, None);
        assert_eq!(
            w.log[0].direction,
            Some(Direction::Out),
            "from host addresses"
        );
    }

    #[test]
    fn end_is_stop_minus_the_timeout_that_ran_after_the_close() {
        use crate::model::CtTcpState;
        const TCP_TIME_WAIT: CtTcpState = CtTcpState::TimeWait;
        let t = Timeouts::default();
        let mut f = flow(7, 40006, Some((1, 1)));
        // Started at S, closed 3 s later, TIME_WAIT ran out 120 s after that.
        f.start_ns = Some(1_780_000_000_000_000_000);
        f.stop_ns = Some(1_780_000_123_000_000_000);
        let end = end_of(&f, Some(TCP_TIME_WAIT), None, 0, &t);
        assert_eq!(end - 1_780_000_000_000, 3_000);
        // Killed with `conntrack -D` while established: STOP is the end.
        assert_eq!(
            end_of(&f, Some(CtTcpState::Established), None, 0, &t) - 1_780_000_000_000,
            123_000
        );
        // Killed 10 s into TIME_WAIT of a 1 s connection: the DESTROY event says 110 s
        // were left, so the expiry would have been at 121 s and the last packet at 1 s.
        f.stop_ns = Some(1_780_000_011_000_000_000);
        let end = end_of(&f, Some(TCP_TIME_WAIT), Some(110), 0, &t);
        assert_eq!(end - 1_780_000_000_000, 1_000);
        // The same from a kernel that does not say what was left: subtracting the
        // timeout would put the end 109 s before the start, which no expiry does, so the
        // entry was removed early and STOP is the latest end there is.
        let end = end_of(&f, Some(TCP_TIME_WAIT), None, 0, &t);
        assert_eq!(end - 1_780_000_000_000, 11_000);
        // No kernel timestamps: when the event arrived.
        f.stop_ns = None;
        assert_eq!(end_of(&f, Some(CtTcpState::TimeWait), None, 42, &t), 42);
    }

    /// Regression (issue 18): one-query UDP flows of 1–2 ms were logged as lasting the
    /// whole UDP timeout (29,998 ms) when STOP − timeout landed a jiffy before their start.
    #[test]
    fn expiry_a_jiffy_before_the_start_is_a_flow_that_ended_at_once() {
        let t = Timeouts::default();
        let mut f = flow(8, 40007, Some((68, 68)));
        f.orig.proto = crate::model::IPPROTO_UDP;
        f.status = 0x20a; // SEEN_REPLY | CONFIRMED | DYING, not ASSURED: the 30 s timeout
        let start = 1_780_000_000_000_i64;
        f.start_ns = Some(start as u64 * 1_000_000);
        for (stop_after_ms, duration) in [
            (30_000 - 2, 0), // a jiffy early: ended at once
            (30_000 - 4, 0),
            (30_000, 0),
            (30_000 + 3, 3), // a jiffy late (or a 3 ms flow)
            (30_000 + 1_500, 1_500),
        ] {
            f.stop_ns = Some((start + stop_after_ms) as u64 * 1_000_000);
            let end = end_of(&f, None, None, 0, &t);
            assert_eq!(end - start, duration, "STOP at start + {stop_after_ms} ms");
        }
        // Assured (still active 2 s after its start): the stream timeout ran.
        f.status |= CtStatus::ASSURED.0;
        f.stop_ns = Some((start + 125_000) as u64 * 1_000_000);
        assert_eq!(end_of(&f, None, None, 0, &t) - start, 5_000);
        // A NAT-clash entry's timeout is its own: STOP.
        f.status |= CtStatus::NAT_CLASH.0;
        assert_eq!(end_of(&f, None, None, 0, &t) - start, 125_000);
    }

    #[test]
    fn the_timeout_of_each_final_state_and_the_cases_without_one() {
        let t = Timeouts::default();
        let mut f = flow(9, 40008, Some((60, 0)));
        let start = 1_780_000_000_000_i64;
        f.start_ns = Some(start as u64 * 1_000_000);
        let at = |f: &Flow, stop_after_ms: i64, state: Option<CtTcpState>| {
            let mut f = f.clone();
            f.stop_ns = Some((start + stop_after_ms) as u64 * 1_000_000);
            end_of(&f, state, None, 0, &t) - start
        };
        // A SYN to a silent host, retransmitted until 63 s: SYN_SENT expired 120 s later.
        assert_eq!(at(&f, 183_000, Some(CtTcpState::SynSent)), 63_000);
        // RST: CLOSE, 10 s.
        assert_eq!(at(&f, 10_050, Some(CtTcpState::Close)), 50);
        // LAST_ACK, 30 s.
        assert_eq!(at(&f, 30_200, Some(CtTcpState::LastAck)), 200);
        // ESTABLISHED: 5 days, or 300 s with unacknowledged data; unknown, so STOP.
        assert_eq!(at(&f, 300_020, Some(CtTcpState::Established)), 300_020);
        // A state's timeout raised above the caps is not known either.
        let raised = Timeouts {
            tcp_time_wait: 600,
            ..t
        };
        assert_eq!(raised.after(&f, Some(CtTcpState::TimeWait)), None);
        assert_eq!(t.after(&f, Some(CtTcpState::TimeWait)), Some(120));
        // A fixed or offloaded timeout is not refreshed by packets.
        f.status = CtStatus::FIXED_TIMEOUT.0;
        assert_eq!(at(&f, 120_100, Some(CtTcpState::TimeWait)), 120_100);
        // ICMPv6 has a timeout of its own.
        f.status = 0;
        f.orig.proto = 58;
        let v6 = Timeouts { icmpv6: 5, ..t };
        assert_eq!(v6.after(&f, None), Some(5));
    }

    fn via(uid: u32, v: Via) -> Attribution {
        Attribution {
            cgroup: None,
            uid,
            program: Some("sshd".into()),
            direction: Direction::Out,
            via: v,
            container: None,
        }
    }

    #[test]
    fn a_users_process_found_after_new_takes_the_whole_flow_in_one_flush() {
        // NEW (the service's, pending), the namer's later owner, then the end.
        let events = [
            Resolved::New {
                flow: flow(8, 40008, None),
                owner: Some(via(0, Via::Pending)),
                at_ms: 1_780_000_000_001,
            },
            Resolved::New {
                flow: flow(8, 40008, None),
                owner: Some(via(ALICE, Via::Delegated(0))),
                at_ms: 1_780_000_000_001,
            },
            Resolved::Destroy {
                flow: flow(8, 40008, Some((600, 20_000))),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_300,
            },
        ];
        let w = plan(&events, &HashMap::new());
        assert_eq!(user_bytes(&w), (20_000, 600));
        let k = w.plan.usage.keys().next().unwrap();
        assert_eq!(k.via, Some(0));
        assert_eq!((w.log[0].uid, w.log[0].via), (Some(ALICE), Some(0)));
    }

    #[test]
    fn a_held_flow_that_ends_is_charged_from_zero_to_its_owner() {
        let f = flow(9, 40009, Some((1_000, 50_000)));
        // Held back: the counters saved are the last seen (none charged).
        let held = FlowState {
            key: f.key(),
            orig: Counters {
                packets: 4,
                bytes: 400,
            },
            reply: Counters {
                packets: 8,
                bytes: 30_000,
            },
            attribution: Some(via(0, Via::Pending)),
            first_seen: 1_779_999_999,
            last_seen: 1_780_000_000,
            missing: 0,
            start_ns: None,
        };
        let prev: HashMap<_, _> = [(f.key(), held.clone())].into_iter().collect();
        let end = Resolved::Destroy {
            flow: f.clone(),
            tcp_state: None,
            left: None,
            at_ms: 1_780_000_000_500,
        };
        // No user's process was found: the service's own, every byte of it.
        let w = plan(std::slice::from_ref(&end), &prev);
        assert_eq!(w.plan.totals.attributed.bytes(), 51_000);
        let k = w.plan.usage.keys().next().unwrap();
        assert_eq!((k.uid, k.via), (Some(0), None));
        assert_eq!(w.plan.totals.held, 0);
        // Its user found in the same flush: the user's, every byte of it.
        let found = Resolved::New {
            flow: flow(9, 40009, None),
            owner: Some(via(ALICE, Via::Delegated(0))),
            at_ms: 1_780_000_000_100,
        };
        let w = plan(&[found, end], &prev);
        assert_eq!(user_bytes(&w), (50_000, 1_000));
    }

    /// Issue 24: a flood of connections must not fill the disk. Local flows are not
    /// logged unless asked for, the rest at most the budget; every one is still charged.
    #[test]
    fn local_flows_and_flows_over_the_budget_are_charged_and_counted_not_logged() {
        let mut lo = flow(20, 40020, Some((100, 100)));
        for t in [&mut lo.orig, &mut lo.reply] {
            t.src = "127.0.0.1".parse().unwrap();
            t.dst = "127.0.0.1".parse().unwrap();
        }
        let mut events = vec![Resolved::Destroy {
            flow: lo,
            tcp_state: None,
            left: None,
            at_ms: 1,
        }];
        for i in 0..3 {
            events.push(Resolved::Destroy {
                flow: flow(21 + i, 40021 + i as u16, Some((10, 20))),
                tcp_state: None,
                left: None,
                at_ms: 2,
            });
        }
        let nets = LocalNets::defaults();
        let timeouts = Timeouts::default();
        let host: HashSet<IpAddr> = ["198.51.100.1".parse().unwrap()].into_iter().collect();
        let cfg = |log_local, log_budget| BatchConfig {
            user_name: &|_| None,
            nets: &nets,
            host: &host,
            log: true,
            log_local,
            log_budget,
            now: 1_780_000_001,
            skipped_messages: 0,
            timeouts: &timeouts,
            marks: false,
        };
        let w = plan_batch(&events, &HashMap::new(), &cfg(false, 2));
        assert_eq!(w.log.len(), 2);
        assert!(w.log.iter().all(|c| !c.orig.dst.is_loopback()));
        assert_eq!(
            w.not_logged,
            NotLogged {
                local: 1,
                over_limit: 1,
                over_limit_by: [(None, 1)].into()
            }
        );
        assert_eq!(w.plan.totals.excluded.bytes(), 200, "charged all the same");
        assert_eq!(w.plan.totals.unattributed.bytes(), 90);
        let w = plan_batch(&events, &HashMap::new(), &cfg(true, 10));
        assert_eq!((w.log.len(), w.not_logged), (4, NotLogged::default()));
    }

    /// Issue 24 (upgrade): a ping saved before echo ids were in its key (source port 0)
    /// that ends before the upgraded daemon's first pass is charged against that state at
    /// its DESTROY, which forgets it; not from zero again.
    #[test]
    fn a_ping_saved_under_its_old_key_is_charged_against_it_at_its_destroy() {
        let ping = Flow {
            id: 5,
            orig_counters: Some(testkit::counters(4, 5_600)),
            reply_counters: Some(testkit::counters(4, 5_600)),
            ..testkit::flow(1, ("198.51.100.1:4242", "198.51.100.2:0"), None)
        };
        let mut old = ping.key();
        old.orig.sport = 0;
        let saved = FlowState {
            key: old,
            orig: testkit::counters(1, 1_400),
            reply: testkit::counters(1, 1_400),
            attribution: Some(alice()),
            first_seen: 1_779_999_990,
            last_seen: 1_780_000_000,
            missing: 0,
            start_ns: None,
        };
        let prev = HashMap::from([(old, saved)]);
        let end = Resolved::Destroy {
            flow: ping.clone(),
            tcp_state: None,
            left: None,
            at_ms: 1_780_000_000_500,
        };
        let ends = std::slice::from_ref(&end);
        assert_eq!(destroyed_keys(ends), vec![ping.key(), old]);
        let w = plan(ends, &prev);
        assert_eq!(user_bytes(&w), (4_200, 4_200));
        assert_eq!(w.plan.totals.unattributed.bytes(), 0);
        assert_eq!(w.plan.deletes, vec![old]);
        // A TCP flow's port-0 key is another flow's.
        let tcp = flow(6, 40005, Some((1, 1)));
        let d = Resolved::Destroy {
            flow: tcp.clone(),
            tcp_state: None,
            left: None,
            at_ms: 1,
        };
        assert_eq!(destroyed_keys(&[d]), vec![tcp.key()]);
    }

    #[test]
    fn destroyed_keys_are_unique() {
        let d = Resolved::Destroy {
            flow: flow(6, 40005, Some((1, 1))),
            tcp_state: None,
            left: None,
            at_ms: 1,
        };
        assert_eq!(destroyed_keys(&[d.clone(), d]).len(), 1);
    }
}
