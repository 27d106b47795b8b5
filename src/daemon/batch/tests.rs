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
