use super::*;
use crate::attribute::Delegating;
use crate::model::{Counters, Socket, L4};
use crate::testkit::{counters, flow, sock, TCP, UDP};

const ALICE: u32 = 1001;
const BOB: u32 = 1002;
const ROOT: u32 = 0;
const HOST: &str = "198.51.100.1";

fn who(uid: u32, via: Via, direction: Direction) -> Attribution {
    Attribution {
        cgroup: None,
        uid,
        program: None,
        direction,
        via,
        container: None,
    }
}

fn out(uid: u32, via: Via) -> Attribution {
    who(uid, via, Direction::Out)
}

fn state(f: &Flow, attribution: Option<Attribution>) -> FlowState {
    FlowState {
        key: f.key(),
        orig: Counters::default(),
        reply: Counters::default(),
        attribution,
        first_seen: 0,
        last_seen: 5,
        missing: 0,
        start_ns: None,
    }
}

/// Outgoing TCP from the host's port `sport` to 198.51.100.2:443.
fn tcp_out(sport: u16) -> Flow {
    flow(TCP, (&format!("{HOST}:{sport}"), "198.51.100.2:443"), None)
}

fn index<'a>(
    sockets: &'a [Socket],
    none: &'a HashMap<u64, crate::sources::processes::Owner>,
) -> SocketIndex<'a> {
    SocketIndex::new(sockets, none, [HOST.parse().unwrap()])
}

fn dump_of(entries: Vec<Entry>) -> Dump {
    Dump {
        entries,
        ..Dump::default()
    }
}

/// `f` as an entry of a dump, picked up or not, with no TCP state or timeout.
fn entry(f: &Flow, picked_up: bool) -> Entry {
    Entry {
        picked_up,
        ..Entry::from(f.clone())
    }
}

#[test]
fn records_carry_each_flow_with_its_saved_state_and_go_back_in_order() {
    let (a, b) = (tcp_out(40000), tcp_out(40001));
    let prev: HashMap<FlowKey, FlowState> =
        [(a.key(), state(&a, Some(out(ALICE, Via::Direct))))].into();
    let dump = dump_of(vec![entry(&a, false), entry(&b, true)]);
    let mut recs = records(&dump, &prev);
    assert_eq!((recs[0].flow, recs[1].flow), (&a, &b));
    assert_eq!(recs[0].saved, prev.get(&a.key()));
    assert_eq!((recs[1].saved, recs[1].entry.picked_up), (None, true));
    let none = HashMap::new();
    let sockets = [sock(
        L4::Tcp,
        "198.51.100.1:40001",
        "198.51.100.2:443",
        BOB,
        7,
    )];
    let idx = index(&sockets, &none);
    look_up(&mut recs, &idx);
    attribute_all(&mut recs, &idx, &LocalNets::defaults());
    let observed = observed(recs);
    assert_eq!(observed[1].entry, dump.entries[1]);
    assert_eq!(
        observed[0].at.verdict,
        Verdict::User(out(ALICE, Via::Direct))
    );
    assert_eq!(observed[1].at.verdict, Verdict::User(out(BOB, Via::Direct)));
}

/// Issue 24: bob's connection took up the tuple of alice's, whose entry ended, in the
/// memory of hers (the same conntrack id, so the same key); her saved state is still
/// there (its DESTROY lost, or on its way). It is not his: her owner is not his, his
/// own owner found at NEW is, and a lookup that fails leaves him unattributed.
#[test]
fn another_flows_saved_state_under_the_same_key_names_no_owner() {
    let at = |f: Flow, s: u64| Flow {
        start_ns: Some(s * 1_000_000_000),
        ..f
    };
    let hers = at(tcp_out(45600), 1000);
    let his = at(tcp_out(45600), 1010);
    let mut saved = state(&hers, Some(out(ALICE, Via::Direct)));
    (saved.start_ns, saved.orig) = (hers.start_ns, crate::testkit::counters(5, 400));
    let none = HashMap::new();
    let sockets: [Socket; 0] = [];
    let idx = index(&sockets, &none);
    let (his, hers) = (entry(&his, false), entry(&hers, false));
    let verdict = |known: Option<Attribution>| {
        let mut recs = vec![FlowRecord::new(&his, Some(&saved))];
        add_known(&mut recs, &|_| known.clone());
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &LocalNets::defaults());
        assert_eq!(
            recs[0].saved,
            Some(&saved),
            "the accounting sees the replacement"
        );
        (recs[0].own_saved(), recs[0].verdict().verdict.clone())
    };
    assert_eq!(
        verdict(None),
        (None, Verdict::Unattributed(Reason::NoSocket))
    );
    let bob = out(BOB, Via::Direct);
    assert_eq!(verdict(Some(bob.clone())), (None, Verdict::User(bob)));
    // Her own entry, seen again, keeps her.
    let mut recs = vec![FlowRecord::new(&hers, Some(&saved))];
    attribute_all(&mut recs, &idx, &LocalNets::defaults());
    assert_eq!(
        recs[0].verdict().verdict,
        Verdict::User(out(ALICE, Via::Direct))
    );
}

/// An ICMP echo saved before the echo id was in its key (port 0) keeps its state.
#[test]
fn a_ping_saved_under_its_old_key_keeps_its_state() {
    let ping = flow(1, ("198.51.100.1:4242", "198.51.100.2:0"), None);
    let mut old_key = ping.key();
    old_key.orig.sport = 0;
    let mut before = state(&ping, Some(out(ALICE, Via::Direct)));
    before.key = old_key;
    before.orig = crate::testkit::counters(3, 300);
    let prev: HashMap<FlowKey, FlowState> = [(old_key, before)].into();
    let dump = dump_of(vec![entry(&ping, false)]);
    assert_eq!(records(&dump, &prev)[0].saved, prev.get(&old_key));
    // Not for TCP: a port 0 key is another flow.
    let t = tcp_out(40000);
    let mut k = t.key();
    k.orig.sport = 0;
    let prev: HashMap<FlowKey, FlowState> = [(k, state(&t, None))].into();
    assert_eq!(
        records(&dump_of(vec![entry(&t, false)]), &prev)[0].saved,
        None
    );
}

#[test]
fn a_settled_saved_owner_beats_one_known_besides_and_a_known_one_beats_a_pending_one() {
    let f = tcp_out(40000);
    let e = entry(&f, false);
    let saved = |a| state(&f, Some(a));
    let (settled, pending) = (
        saved(out(ALICE, Via::Direct)),
        saved(out(ROOT, Via::Pending)),
    );
    let rec = |s: Option<&FlowState>, known: Option<Attribution>| {
        let mut r = FlowRecord::new(&e, s);
        r.known = known.map(Box::new);
        r.prior().cloned()
    };
    let bob = out(BOB, Via::Delegated(ROOT));
    let still_pending = out(BOB, Via::Pending);
    assert_eq!(
        rec(Some(&settled), Some(bob.clone())),
        Some(out(ALICE, Via::Direct))
    );
    assert_eq!(rec(Some(&pending), Some(bob.clone())), Some(bob.clone()));
    assert_eq!(
        rec(Some(&pending), Some(still_pending.clone())),
        Some(out(ROOT, Via::Pending))
    );
    assert_eq!(rec(None, Some(still_pending.clone())), Some(still_pending));
    assert_eq!(rec(Some(&pending), None), Some(out(ROOT, Via::Pending)));
    assert_eq!(rec(None, None), None);
}

#[test]
fn owners_known_besides_are_asked_only_for_flows_not_settled() {
    let (a, b, c) = (tcp_out(40000), tcp_out(40001), tcp_out(40002));
    let (sa, sb) = (
        state(&a, Some(out(ALICE, Via::Direct))),
        state(&b, Some(out(ROOT, Via::Pending))),
    );
    let (ea, eb, ec) = (entry(&a, false), entry(&b, false), entry(&c, false));
    let mut recs = vec![
        FlowRecord::new(&ea, Some(&sa)),
        FlowRecord::new(&eb, Some(&sb)),
        FlowRecord::new(&ec, None),
    ];
    let asked = std::cell::RefCell::new(Vec::new());
    add_known(&mut recs, &|k| {
        asked.borrow_mut().push(k.orig.sport);
        Some(out(BOB, Via::Direct))
    });
    assert_eq!(*asked.borrow(), [40001, 40002]);
    assert_eq!(recs[0].known, None);
    assert_eq!(recs[2].prior(), Some(&out(BOB, Via::Direct)));
}

#[test]
fn a_picked_up_entry_continues_the_owner_of_the_ended_one_turned_when_reversed() {
    let ended = tcp_out(40000);
    let mut prev: HashMap<FlowKey, FlowState> = HashMap::new();
    prev.insert(ended.key(), state(&ended, Some(out(ALICE, Via::Direct))));
    // Picked up the other way round (the first packet after the deletion was the
    // reply), under a new id.
    let back = Flow {
        id: 9,
        ..flow(TCP, ("198.51.100.2:443", "198.51.100.1:40000"), None)
    };
    let fresh = Flow {
        id: 10,
        ..tcp_out(40005)
    };
    let (back, fresh) = (entry(&back, true), entry(&fresh, true));
    let mut recs = vec![FlowRecord::new(&back, None), FlowRecord::new(&fresh, None)];
    continue_picked_up(&mut recs, &prev);
    let turned = who(ALICE, Via::Direct, Direction::In);
    assert_eq!(recs[0].known.as_deref(), Some(&turned));
    assert_eq!(recs[1].known, None);
    // The ended entry still in the dump: not ended, nothing continued.
    let ended = entry(&ended, false);
    let again = FlowRecord::new(&ended, prev.get(&ended.flow.key()));
    let mut recs = vec![again, FlowRecord::new(&back, None)];
    continue_picked_up(&mut recs, &prev);
    assert_eq!(recs[1].known, None);
}

#[test]
fn programs_are_wanted_only_for_flows_without_an_owner_before() {
    let (a, b) = (tcp_out(40000), tcp_out(40001));
    let sa = state(&a, Some(out(ALICE, Via::Direct)));
    let sockets = [
        sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            ALICE,
            100,
        ),
        sock(L4::Tcp, "198.51.100.1:40001", "198.51.100.2:443", BOB, 200),
    ];
    let none = HashMap::new();
    let idx = index(&sockets, &none);
    let (ea, eb) = (entry(&a, false), entry(&b, false));
    let mut recs = vec![FlowRecord::new(&ea, Some(&sa)), FlowRecord::new(&eb, None)];
    look_up(&mut recs, &idx);
    assert_eq!(wanted_inodes(&recs, &idx), [200].into());
}

/// An sshd session: the accepted socket (root's, inode 500) of a flow to port 22.
fn ssh() -> (Vec<Socket>, Flow) {
    (
        vec![sock(
            L4::Tcp,
            "198.51.100.1:22",
            "198.51.100.2:50000",
            ROOT,
            500,
        )],
        flow(TCP, ("198.51.100.2:50000", "198.51.100.1:22"), None),
    )
}

#[test]
fn every_holder_is_looked_up_for_a_services_socket_until_its_flow_settles() {
    let (sockets, f) = ssh();
    let none = HashMap::new();
    let d = Delegating::new([ROOT]);
    let idx = index(&sockets, &none).with_delegation(&d, None);
    let nets = LocalNets::defaults();
    let e = entry(&f, false);
    let inodes = |saved: Option<&FlowState>| {
        let mut recs = vec![FlowRecord::new(&e, saved)];
        look_up(&mut recs, &idx);
        (
            delegated_inodes(&recs, &idx, &nets, None),
            own_inodes(&recs, &idx, &nets),
        )
    };
    let (new, _) = inodes(None);
    assert_eq!(new, [500].into());
    let held = state(&f, Some(who(ROOT, Via::Pending, Direction::In)));
    assert_eq!(inodes(Some(&held)).0, [500].into());
    let settled = state(&f, Some(who(ALICE, Via::Delegated(ROOT), Direction::In)));
    assert_eq!(inodes(Some(&settled)), (HashSet::new(), HashSet::new()));
    // The service's own: looked at again (when it moved) for a login slower than
    // the grace.
    let own = state(&f, Some(who(ROOT, Via::Own, Direction::In)));
    assert_eq!(inodes(Some(&own)), (HashSet::new(), [500].into()));
    let still = vec![FlowRecord::new(&e, Some(&own))];
    assert!(!own_moved(&still), "zero counters, as saved");
    let moved = Flow {
        orig_counters: Some(counters(3, 300)),
        ..f.clone()
    };
    let moved = entry(&moved, false);
    assert!(own_moved(&[FlowRecord::new(&moved, Some(&own))]));
    // Only `only`'s inodes, when asked.
    let mut recs = vec![FlowRecord::new(&e, None)];
    look_up(&mut recs, &idx);
    assert!(delegated_inodes(&recs, &idx, &nets, Some(&[501].into())).is_empty());
}

#[test]
fn a_flow_born_after_the_socket_read_is_retried_on_the_index_extended_with_new_sockets() {
    let (a, b) = (tcp_out(40000), tcp_out(40001));
    let mut sockets = vec![sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:443",
        ALICE,
        100,
    )];
    let none = HashMap::new();
    let nets = LocalNets::defaults();
    let (ea, eb) = (entry(&a, false), entry(&b, false));
    let mut recs = vec![FlowRecord::new(&ea, None), FlowRecord::new(&eb, None)];
    let maps = {
        let idx = index(&sockets, &none);
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &nets);
        idx.into_maps()
    };
    assert!(needs_retry(&recs));
    assert_eq!(
        recs[1].verdict().verdict,
        Verdict::Unattributed(Reason::NoSocket)
    );
    // The second read's new socket is added to the same maps, not indexed anew.
    let mut maps = maps;
    sockets.push(sock(
        L4::Tcp,
        "198.51.100.1:40001",
        "198.51.100.2:443",
        BOB,
        200,
    ));
    maps.add(&sockets, 1);
    let idx = SocketIndex::with_maps(&sockets, &none, maps);
    look_up(&mut recs, &idx);
    reattribute(&mut recs, &idx, &nets);
    assert!(!needs_retry(&recs));
    assert_eq!(
        recs[0].verdict().verdict,
        Verdict::User(out(ALICE, Via::Direct))
    );
    assert_eq!(
        recs[1].verdict().verdict,
        Verdict::User(out(BOB, Via::Direct))
    );
    assert_eq!(charged_named(&recs), (2, 0));
}

#[test]
fn a_new_flow_no_host_socket_explains_is_a_container_candidate() {
    let host: HashSet<IpAddr> = [HOST.parse().unwrap()].into();
    let is_host = |ip: IpAddr| host.contains(&ip);
    let none = HashMap::new();
    let nets = LocalNets::new([]);
    // Forwarded from a container's address, and a new flow to the host without socket.
    let fwd = flow(TCP, ("203.0.113.9:40000", "198.51.100.2:443"), None);
    let to_host = flow(UDP, ("198.51.100.2:5353", "198.51.100.1:9999"), None);
    let known = tcp_out(40000);
    let saved = state(&to_host, None);
    let (fwd, known, to_host) = (
        entry(&fwd, false),
        entry(&known, false),
        entry(&to_host, false),
    );
    let mut recs = vec![
        FlowRecord::new(&fwd, None),
        FlowRecord::new(&known, None),
        FlowRecord::new(&to_host, Some(&saved)),
    ];
    let sockets = [sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:443",
        ALICE,
        100,
    )];
    let idx = index(&sockets, &none);
    look_up(&mut recs, &idx);
    attribute_all(&mut recs, &idx, &nets);
    let got: Vec<(u16, IpAddr)> = container_candidates(&mut recs, &is_host)
        .into_iter()
        .map(|(r, ip)| (r.flow.orig.sport, ip))
        .collect();
    // The saved one was looked for when it was new.
    assert_eq!(got, [(40000, "203.0.113.9".parse().unwrap())]);
}

#[test]
fn a_flow_charged_by_its_mark_alone_is_counted() {
    let marked = Flow {
        mark: crate::owner_mark::mark_of(ALICE),
        ..tcp_out(40000)
    };
    let none = HashMap::new();
    let sockets: [Socket; 0] = [];
    let idx = index(&sockets, &none).with_marks(true);
    let marked = entry(&marked, false);
    let mut recs = vec![FlowRecord::new(&marked, None)];
    look_up(&mut recs, &idx);
    attribute_all(&mut recs, &idx, &LocalNets::defaults());
    assert_eq!(recs[0].look, Lookup::Unmatched);
    assert_eq!(by_mark(&recs), 1);
    // The same on a kept attribution is not the mark's doing.
    let saved = state(&marked.flow, Some(out(ALICE, Via::Direct)));
    recs[0].saved = Some(&saved);
    assert_eq!(by_mark(&recs), 0);
}
