//! Issue 24: the daemon's receive buffer overran, then bob's connection took up the tuple
//! of alice's ended one, in its memory (the same conntrack id: the same key). Each order
//! of the events lost, heard and dumped, run through the pure stages of the daemon's
//! passes and flushes with the state carried as the store carries it: every byte lands
//! once, and none of bob's on alice.
//!
//! The loss a CI run found: her DESTROY and his NEW were lost; the resync pass found his
//! entry under her saved key and, waiting for her DESTROY, charged it nothing; so did
//! every pass after, until the daemon stopped.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use super::batch::{plan_batch, BatchConfig, Resolved};
use crate::account::{account_seen, FlowState, Hold, Ledger, PassPlan, Seen, Traffic};
use crate::attribute::{Attribution, Direction, LocalNets, SocketIndex, Via};
use crate::model::{Flow, FlowKey};
use crate::pass::record::{add_known, attribute_all, look_up, FlowRecord};
use crate::sources::conntrack::{Entry, Timeouts};
use crate::testkit::{counters, flow, TCP};

const ALICE: u32 = 1001;
const HOST: &str = "198.51.100.1";
const S: u64 = 1_000_000_000;

/// The one tuple both use, conntrack id 9, begun at `start` s, with its counters out
/// and in.
fn entry(start: u64, out: (u64, u64), back: (u64, u64)) -> Flow {
    Flow {
        id: 9,
        orig_counters: Some(counters(out.0, out.1)),
        reply_counters: Some(counters(back.0, back.1)),
        start_ns: Some(start * S),
        ..flow(TCP, ("198.51.100.1:45600", "198.51.100.2:9100"), None)
    }
}

fn alice() -> Attribution {
    Attribution {
        cgroup: None,
        uid: ALICE,
        program: None,
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    }
}

/// What the charges add up to: alice's, and unattributed, as (out, in) bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Charged {
    alice: (u64, u64),
    unattributed: (u64, u64),
    others: u64,
}

/// The saved state, as the store keeps it, and what was charged.
#[derive(Default)]
struct Ledgered {
    state: HashMap<FlowKey, FlowState>,
    charged: Charged,
}

impl Ledgered {
    fn add(&mut self, plan: &PassPlan) {
        let c = &mut self.charged;
        for (k, t) in &plan.usage {
            let sum = |to: &mut (u64, u64), t: &Traffic| {
                to.0 += t.tx_bytes;
                to.1 += t.rx_bytes;
            };
            match k.uid {
                Some(ALICE) => sum(&mut c.alice, t),
                None if k.reason.is_some() => sum(&mut c.unattributed, t),
                _ => c.others += t.bytes(),
            }
        }
    }

    /// A daemon's pass at `now` s over `dump`, no socket alive, owner marks off; DESTROY
    /// events of entries that ended before `lost_before` s may have been lost.
    fn pass(&mut self, now: i64, dump: &[Flow], known: Option<Attribution>, lost_before: u64) {
        let prev = &self.state;
        let entries: Vec<Entry> = dump.iter().map(|f| Entry::from(f.clone())).collect();
        let mut recs: Vec<FlowRecord> = entries
            .iter()
            .map(|e| FlowRecord::new(e, prev.get(&e.flow.key())))
            .collect();
        add_known(&mut recs, &|_| known.clone());
        let none = HashMap::new();
        let idx = SocketIndex::new(&[], &none, [HOST.parse().unwrap()]);
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &LocalNets::defaults());
        let seen: Vec<Seen> = recs.iter().map(FlowRecord::seen).collect();
        let rules = Ledger {
            now,
            prune_after: 3,
            hold: Hold {
                destroys_follow: true,
                destroys_lost_before: Some(lost_before * S),
                ..Hold::default()
            },
        };
        let plan = account_seen(&rules, &seen, prev);
        self.add(&plan);
        for s in plan.upserts {
            self.state.insert(s.key, s);
        }
        for (k, n) in plan.missing {
            self.state.get_mut(&k).expect("a saved flow").missing = n;
        }
        for k in plan.deletes {
            self.state.remove(&k);
        }
    }

    /// A flush of DESTROY events (as the store writes one: it only deletes states).
    fn flush(&mut self, ended: &[Flow]) {
        let events: Vec<Resolved> = ended
            .iter()
            .map(|f| Resolved::Destroy {
                flow: f.clone(),
                tcp_state: None,
                left: None,
                at_ms: 1_780_000_000_000,
            })
            .collect();
        let prev: HashMap<FlowKey, FlowState> = ended
            .iter()
            .filter_map(|f| Some((f.key(), self.state.get(&f.key())?.clone())))
            .collect();
        let (nets, timeouts) = (LocalNets::defaults(), Timeouts::default());
        let host: HashSet<IpAddr> = [HOST.parse().unwrap()].into();
        let cfg = BatchConfig {
            user_name: &|_| None,
            nets: &nets,
            host: &host,
            log: false,
            log_local: false,
            log_budget: 0,
            now: 1_780_000_000,
            skipped_messages: 0,
            timeouts: &timeouts,
            marks: false,
        };
        let w = plan_batch(&events, &prev, &cfg);
        self.add(&w.plan);
        for k in &w.plan.deletes {
            self.state.remove(k);
        }
    }
}

/// Alice's entry as the pass before the overrun saw it, and as it ended (52 B more each
/// way, its last ACKs); bob's, begun at 1010 s, as the passes see it and as it ends.
struct Entries {
    hers_seen: Flow,
    hers_ended: Flow,
    his: Flow,
    his_ended: Flow,
}

fn entries() -> Entries {
    Entries {
        hers_seen: entry(1000, (6, 400), (9, 300_120)),
        hers_ended: entry(1000, (7, 452), (10, 300_172)),
        his: entry(1010, (20, 1_679), (30, 201_568)),
        his_ended: entry(1010, (21, 1_731), (31, 201_620)),
    }
}

/// A pass saw alice's entry, found by her NEW (`fresh`); then the overrun.
fn before_the_overrun(e: &Entries) -> Ledgered {
    let mut l = Ledgered::default();
    l.pass(1005, std::slice::from_ref(&e.hers_seen), Some(alice()), 0);
    assert_eq!(l.charged.alice, (400, 300_120));
    l
}

/// Her DESTROY and his NEW lost; his entry began (1010 s) before the listener read its
/// queue to the end (1011 s): the resync pass charges it, unattributed (his socket is
/// gone, marks are off), and the final pass nothing more. Before the fix it charged it
/// nothing, and nor did the final pass: his entry was charged to nobody.
#[test]
fn her_destroy_and_his_new_lost_his_entry_is_charged_once_by_the_resync_pass() {
    let e = entries();
    let mut l = before_the_overrun(&e);
    l.pass(1012, std::slice::from_ref(&e.his), None, 1011);
    l.pass(1013, std::slice::from_ref(&e.his), None, 1011);
    let want = Charged {
        alice: (400, 300_120),
        unattributed: (1_679, 201_568),
        others: 0,
    };
    assert_eq!(l.charged, want, "the daemon stopped here");
    // Or it went on: his DESTROY charges what he moved since, once.
    l.flush(std::slice::from_ref(&e.his_ended));
    assert_eq!(l.charged.unattributed, (1_731, 201_620));
    assert_eq!((l.charged.alice, l.charged.others), (want.alice, 0));
    assert!(l.state.is_empty(), "{:?}", l.state);
}

/// His entry began after the listener drained its queue: her DESTROY was not lost, only
/// late. The resync pass leaves his entry for it; it charges her last bytes to her, and
/// the next pass charges his entry from zero.
#[test]
fn her_destroy_heard_after_the_resync_pass_charges_her_and_then_his_entry_is_charged() {
    let e = entries();
    let mut l = before_the_overrun(&e);
    l.pass(1012, std::slice::from_ref(&e.his), None, 1009);
    assert_eq!(l.charged.unattributed, (0, 0), "left for her DESTROY");
    l.flush(std::slice::from_ref(&e.hers_ended));
    l.pass(1013, std::slice::from_ref(&e.his), None, 1009);
    let want = Charged {
        alice: (452, 300_172),
        unattributed: (1_679, 201_568),
        others: 0,
    };
    assert_eq!(l.charged, want);
}

/// His entry ended before the resync pass's dump: the dump has neither. His DESTROY,
/// heard, charges it from zero (her saved state is not his); hers, lost, leaves her the
/// pass before's charge, and her state is pruned. (Had his DESTROY been lost too, no
/// pass nor event would ever have shown his entry: that loss is the overrun's, said in
/// its warning.)
#[test]
fn his_entry_gone_before_the_resync_pass_is_charged_by_his_destroy_from_zero() {
    let e = entries();
    let mut l = before_the_overrun(&e);
    l.pass(1012, &[], None, 1011);
    l.flush(std::slice::from_ref(&e.his_ended));
    for now in 1013..1016 {
        l.pass(now, &[], None, 1011);
    }
    let want = Charged {
        alice: (400, 300_120),
        unattributed: (1_731, 201_620),
        others: 0,
    };
    assert_eq!(l.charged, want);
    assert!(l.state.is_empty(), "her state pruned: {:?}", l.state);
}
