//! Rates from successive observations, in memory: what `live` charges per refresh.
//!
//! The same delta rules as a pass ([`crate::account::account`]) against flow state kept
//! in memory instead of the database, so `live` writes nothing and can run beside the
//! timer or the daemon. The first observation is the baseline: it charges nothing, later
//! ones charge what moved since. Flows that ended between two refreshes (conntrack
//! DESTROY events, which carry the final counters) are charged their final counters less
//! what was seen of them, then forgotten; so a connection opened and closed between two
//! refreshes still counts, and one seen before counts once.

use std::collections::{BTreeMap, HashMap};

use super::Observed;
use crate::account::{
    account, account_seen, FlowState, Hold, Kind, Ledger, Seen, Totals, Traffic, UsageKey,
};
use crate::attribute::{Attributed, Attribution};
use crate::model::{Flow, FlowKey};

/// Refreshes a flow may be missing from the dump before it is forgotten (dumps can skip
/// entries; a flow that ended is normally forgotten at its DESTROY event).
const PRUNE_AFTER: u32 = 3;

/// What moved in one refresh.
#[derive(Debug, Clone, Default)]
pub struct Moved {
    /// Traffic per usage key (owner, program, remote, …), as a pass would store it.
    pub usage: BTreeMap<UsageKey, Traffic>,
    /// Totals: attributed, unattributed, excluded; flows.
    pub totals: Totals,
    /// Flows that ended since the previous refresh and were charged from their events.
    pub ended: u64,
}

impl Moved {
    fn add(&mut self, usage: BTreeMap<UsageKey, Traffic>, t: &Totals) {
        for (k, v) in usage {
            self.usage.entry(k).or_default().add(&v);
        }
        self.totals.attributed.add(&t.attributed);
        self.totals.unattributed.add(&t.unattributed);
        self.totals.excluded.add(&t.excluded);
        self.totals.resets += t.resets;
    }

    /// Traffic of one bucket.
    pub fn of_kind(&self, kind: Kind) -> Traffic {
        match kind {
            Kind::User => self.totals.attributed,
            Kind::Unattributed => self.totals.unattributed,
            Kind::Excluded => self.totals.excluded,
        }
    }
}

/// The flow state between refreshes.
#[derive(Debug, Default)]
pub struct Meter {
    state: HashMap<FlowKey, FlowState>,
    primed: bool,
}

impl Meter {
    /// A meter with no baseline yet.
    pub fn new() -> Meter {
        Meter::default()
    }

    /// What is remembered of the flows: their counters last seen and owners (the `prev`
    /// of the next observation, so a flow whose socket closed keeps its owner).
    pub fn state(&self) -> &HashMap<FlowKey, FlowState> {
        &self.state
    }

    /// The owner remembered for a flow.
    pub fn owner(&self, key: &FlowKey) -> Option<&Attribution> {
        self.state.get(key).and_then(|s| s.attribution.as_ref())
    }

    /// Take one refresh: `ended` are the flows whose DESTROY came since the previous
    /// refresh (final counters; each with its verdict), then the dump's flows, each with
    /// its verdict (`observed`). Returns `None` for the first call (the baseline: nothing
    /// moved yet that can be told from what moved before).
    pub fn refresh(
        &mut self,
        now: i64,
        ended: &[(Flow, Attributed)],
        observed: &[Observed],
    ) -> Option<Moved> {
        let mut moved = Moved::default();
        if self.primed {
            for (flow, at) in ended {
                let key = flow.key();
                // Only this flow's state, so `account` ages no other.
                let prev: HashMap<FlowKey, FlowState> = self
                    .state
                    .remove(&key)
                    .map(|s| (key, s))
                    .into_iter()
                    .collect();
                let plan = account(
                    now,
                    std::slice::from_ref(flow),
                    std::slice::from_ref(at),
                    &prev,
                    PRUNE_AFTER,
                    Hold::default(),
                );
                moved.add(plan.usage, &plan.totals);
                moved.ended += 1;
            }
        }
        let ledger = Ledger {
            now,
            prune_after: PRUNE_AFTER,
            hold: Hold::default(),
        };
        // A dump's keys are distinct (it is de-duplicated by key).
        let seen: Vec<Seen> = observed
            .iter()
            .map(|o| Seen {
                flow: &o.entry.flow,
                attributed: &o.at,
                saved: self.state.get(&o.entry.flow.key()),
            })
            .collect();
        let plan = account_seen(&ledger, &seen, &self.state);
        for s in plan.upserts {
            self.state.insert(s.key, s);
        }
        for k in &plan.deletes {
            self.state.remove(k);
        }
        for (k, n) in &plan.missing {
            if let Some(s) = self.state.get_mut(k) {
                s.missing = *n;
            }
        }
        moved.totals.flows = plan.totals.flows;
        moved.add(plan.usage, &plan.totals);
        let first = !self.primed;
        self.primed = true;
        (!first).then_some(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::{Direction, Reason, Verdict, Via};
    use crate::sources::conntrack::Entry;
    use crate::testkit::{counters, flow as flow_of, TCP};

    /// Flow `id` from the host's port `sport` to 198.51.100.2:443, `tx` bytes up and
    /// `rx` down (one packet each way).
    fn flow(id: u32, sport: u16, tx: u64, rx: u64) -> Flow {
        Flow {
            id,
            orig_counters: Some(counters(1, tx)),
            reply_counters: Some(counters(1, rx)),
            ..flow_of(
                TCP,
                (&format!("198.51.100.1:{sport}"), "198.51.100.2:443"),
                None,
            )
        }
    }

    /// `f` in a dump, attributed `at`.
    fn seen(f: Flow, at: Attributed) -> Observed {
        Observed {
            entry: Entry::from(f),
            at,
        }
    }

    fn alice() -> Attributed {
        Attributed {
            verdict: Verdict::User(Attribution {
                cgroup: None,
                uid: 1001,
                program: Some("curl".into()),
                direction: Direction::Out,
                via: Via::Direct,
                container: None,
            }),
            direction: Some(Direction::Out),
            remote: "198.51.100.2".parse().unwrap(),
            port: 443,
        }
    }

    fn nobody() -> Attributed {
        Attributed {
            verdict: Verdict::Unattributed(Reason::NoSocket),
            ..alice()
        }
    }

    fn user_bytes(m: &Moved, uid: Option<u32>) -> (u64, u64) {
        m.usage
            .iter()
            .filter(|(k, _)| k.uid == uid)
            .fold((0, 0), |(r, t), (_, v)| (r + v.rx_bytes, t + v.tx_bytes))
    }

    #[test]
    fn baseline_charges_nothing_then_deltas_then_ended_flows_their_final_counters_once() {
        let mut m = Meter::new();
        // Baseline: a flow that already moved 1000/5000 before live started.
        assert!(m
            .refresh(100, &[], &[seen(flow(1, 40000, 1000, 5000), alice())])
            .is_none());
        // It moves 200 up, 700 down; a new flow moves 10/20 in full.
        let r = m
            .refresh(
                101,
                &[],
                &[
                    seen(flow(1, 40000, 1200, 5700), alice()),
                    seen(flow(2, 40001, 10, 20), nobody()),
                ],
            )
            .unwrap();
        assert_eq!(user_bytes(&r, Some(1001)), (700, 200));
        assert_eq!(user_bytes(&r, None), (20, 10));
        assert_eq!(r.totals.attributed.bytes(), 900);
        assert_eq!(r.totals.flows, 2);
        // Flow 1 ends (DESTROY: final 1300/5800) and is gone from the dump; flow 3 opened
        // and closed in between, never dumped (final 40/60): both count, once.
        let ended = [
            (flow(1, 40000, 1300, 5800), alice()),
            (flow(3, 40002, 40, 60), alice()),
        ];
        let r = m
            .refresh(102, &ended, &[seen(flow(2, 40001, 10, 20), nobody())])
            .unwrap();
        assert_eq!(user_bytes(&r, Some(1001)), (100 + 60, 100 + 40));
        assert_eq!(user_bytes(&r, None), (0, 0));
        assert_eq!(r.ended, 2);
        assert!(m.state().keys().all(|k| k.id == 2), "ended flows forgotten");
        // Nothing moved: nothing charged, and the ended flows do not come back.
        let r = m
            .refresh(103, &[], &[seen(flow(2, 40001, 10, 20), nobody())])
            .unwrap();
        assert!(r.usage.is_empty(), "{:?}", r.usage);
    }

    #[test]
    fn flows_ending_before_the_baseline_are_not_charged() {
        let mut m = Meter::new();
        let ended = [(flow(3, 40002, 40, 60), alice())];
        assert!(m.refresh(100, &ended, &[]).is_none());
        let r = m.refresh(101, &[], &[]).unwrap();
        assert!(r.usage.is_empty());
    }

    #[test]
    fn a_flow_missing_from_a_dump_is_not_charged_again_when_it_comes_back() {
        let mut m = Meter::new();
        m.refresh(100, &[], &[seen(flow(1, 40000, 100, 100), alice())]);
        let r = m.refresh(101, &[], &[]).unwrap();
        assert!(r.usage.is_empty());
        let r = m
            .refresh(102, &[], &[seen(flow(1, 40000, 150, 100), alice())])
            .unwrap();
        assert_eq!(user_bytes(&r, Some(1001)), (0, 50));
    }
}
