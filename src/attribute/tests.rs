use super::*;
use crate::testkit::{flow, sock, TCP, UDP};
use rstest::rstest;

const ALICE: u32 = 1001;
const BOB: u32 = 1002;
const HOST4: &str = "198.51.100.1";

#[test]
fn local_nets_masks_agree_with_ipnet() {
    let nets = LocalNets::new(
        [
            "10.1.2.3/8",
            "192.168.0.0/16",
            "0.0.0.0/0",
            "fc00::/7",
            "2001:db8::1/128",
        ]
        .iter()
        .map(|s| s.parse::<IpNet>().unwrap()),
    );
    for list in [nets.clone(), LocalNets::defaults(), LocalNets::new([])] {
        for ip in [
            "10.255.0.1",
            "11.0.0.1",
            "192.168.4.4",
            "192.169.0.0",
            "198.51.100.2",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "fd00::1",
            "fe00::1",
            "2001:db8::1",
            "2001:db8::2",
            "::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:198.51.100.2",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let canon = crate::model::canonical_ip(ip);
            let by_ipnet = if canon.is_unspecified() || canon == IpAddr::V4(Ipv4Addr::BROADCAST) {
                !list.nets().is_empty()
            } else {
                list.nets().iter().any(|n| n.contains(&canon))
            };
            assert_eq!(list.contains(ip), by_ipnet, "{ip} in {:?}", list.nets());
        }
    }
}

fn owners() -> HashMap<u64, Owner> {
    [(
        100,
        Owner {
            pid: 42,
            program: "curl".into(),
        },
    )]
    .into_iter()
    .collect()
}

fn user(uid: u32, dir: Direction) -> Verdict {
    Verdict::User(Attribution {
        cgroup: None,
        uid,
        program: (uid == ALICE).then(|| "curl".to_string()),
        direction: dir,
        via: Via::Direct,
        container: None,
    })
}

fn join(sockets: &[Socket], f: &Flow, prior: Option<&Attribution>, nets: &LocalNets) -> Attributed {
    let o = owners();
    let idx = SocketIndex::new(sockets, &o, [HOST4.parse().unwrap()]);
    attribute(f, &idx, prior, nets)
}

fn marked(mut f: Flow, mark: u32) -> Flow {
    f.mark = mark;
    f
}

fn by_marks(sockets: &[Socket], f: &Flow, marks: bool) -> Verdict {
    let o = owners();
    let idx = SocketIndex::new(sockets, &o, [HOST4.parse().unwrap()])
        .with_delegation(&DELEGATING_ROOT, None)
        .with_marks(marks);
    attribute(f, &idx, None, &LocalNets::defaults()).verdict
}

static DELEGATING_ROOT: std::sync::LazyLock<Delegating> =
    std::sync::LazyLock::new(|| Delegating::new([0]));

#[test]
fn a_socketless_flow_is_charged_to_its_mark_only_when_marks_are_believed() {
    let mark = crate::owner_mark::mark_of(BOB);
    let out = marked(
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None),
        mark,
    );
    let mine = |dir| {
        Verdict::User(Attribution {
            cgroup: None,
            uid: BOB,
            program: None,
            direction: dir,
            via: Via::Direct,
            container: None,
        })
    };
    assert_eq!(by_marks(&[], &out, true), mine(Direction::Out));
    assert_eq!(
        by_marks(&[], &out, false),
        Verdict::Unattributed(Reason::NoSocket)
    );
    // An incoming connection: the local server's first answer marked it.
    let inc = marked(
        flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
        mark,
    );
    assert_eq!(by_marks(&[], &inc, true), mine(Direction::In));
    // Not netledger's mark (high bit clear), and a delegating uid's: nobody.
    let foreign = marked(out.clone(), 42);
    assert_eq!(
        by_marks(&[], &foreign, true),
        Verdict::Unattributed(Reason::NoSocket)
    );
    let root = marked(out.clone(), crate::owner_mark::mark_of(0));
    assert_eq!(
        by_marks(&[], &root, true),
        Verdict::Unattributed(Reason::NoSocket)
    );
    // A live socket wins over the mark.
    let s = [sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:443",
        ALICE,
        100,
    )];
    assert_eq!(by_marks(&s, &out, true), user(ALICE, Direction::Out));
}

#[test]
fn a_mark_beats_an_unconnected_socket_that_shares_the_local_port() {
    // alice's UDP flow from port 5000, her socket gone; bob's socket took up *:5000.
    let s = [sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200)];
    let f = marked(
        flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
        crate::owner_mark::mark_of(ALICE),
    );
    let alice = Verdict::User(Attribution {
        cgroup: None,
        uid: ALICE,
        program: None,
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    });
    assert_eq!(by_marks(&s, &f, true), alice);
    assert_eq!(by_marks(&s, &f, false), user(BOB, Direction::Out));
    // Two owners share the port: the mark still names one.
    let both = [
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", 0, 300),
    ];
    assert_eq!(by_marks(&both, &f, true), alice);
}

#[test]
fn other_protocols_are_charged_to_their_mark() {
    // alice's ping (an unprivileged ICMP socket), and root's: root's ping is root's.
    let ping = flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None);
    for uid in [ALICE, 0] {
        let f = marked(ping.clone(), crate::owner_mark::mark_of(uid));
        let want = Verdict::User(Attribution {
            cgroup: None,
            uid,
            program: None,
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        });
        assert_eq!(by_marks(&[], &f, true), want);
        assert_eq!(
            by_marks(&[], &f, false),
            Verdict::Unattributed(Reason::Protocol)
        );
    }
    // UDP-Lite, answered by alice's server: incoming.
    let lite = marked(
        flow(136, ("198.51.100.2:5000", "198.51.100.1:6000"), None),
        crate::owner_mark::mark_of(ALICE),
    );
    assert!(matches!(
        by_marks(&[], &lite, true),
        Verdict::User(Attribution {
            uid: ALICE,
            direction: Direction::In,
            ..
        })
    ));
    // No mark, or not netledger's: by protocol, as before.
    assert_eq!(
        by_marks(&[], &marked(ping, 42), true),
        Verdict::Unattributed(Reason::Protocol)
    );
}

#[test]
fn a_ping_is_charged_through_its_ping_socket_by_echo_id() {
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    // Ping sockets as /proc/net/icmp{,6} list them: the port is the echo id.
    let sockets = [
        sock(L4::Icmp, "0.0.0.0:62547", "0.0.0.0:0", ALICE, 100),
        sock(L4::Icmp, "198.51.100.1:62548", "198.51.100.2:0", BOB, 200),
        sock(L4::Icmpv6, "[::]:62549", "[::]:0", BOB, 300),
        sock(L4::Icmp, "0.0.0.0:7", "0.0.0.0:0", 0, 400),
    ];
    let o = owners();
    let host = [HOST4.parse().unwrap(), "2001:db8::1".parse().unwrap()];
    let idx = SocketIndex::new(&sockets, &o, host)
        .with_delegation(&DELEGATING_ROOT, None)
        .with_marks(false);
    let verdict = |f: &Flow| attribute(f, &idx, None, &LocalNets::new([])).verdict;
    let out = |uid: u32, program: Option<&str>| {
        Verdict::User(Attribution {
            cgroup: None,
            uid,
            program: program.map(str::to_string),
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        })
    };
    // Unconnected (the wildcard local address), connected (exact), ICMPv6.
    let unconnected = flow(ICMP, ("198.51.100.1:62547", "198.51.100.2:0"), None);
    assert_eq!(verdict(&unconnected), out(ALICE, Some("curl")));
    let connected = flow(ICMP, ("198.51.100.1:62548", "198.51.100.2:0"), None);
    assert_eq!(verdict(&connected), out(BOB, None));
    let v6 = flow(ICMPV6, ("[2001:db8::1]:62549", "[2001:db8::2]:0"), None);
    assert_eq!(verdict(&v6), out(BOB, None));
    // Root's ping socket is root's own, not a service's socket waiting for a holder.
    let roots = flow(ICMP, ("198.51.100.1:7", "198.51.100.2:0"), None);
    assert_eq!(verdict(&roots), out(0, None));
    assert_eq!(idx.delegated_socket(&roots), None);
    // Another id, the other family's table, or no ping socket at all: by protocol.
    for f in [
        flow(ICMP, ("198.51.100.1:62546", "198.51.100.2:0"), None),
        flow(ICMPV6, ("[2001:db8::1]:62547", "[2001:db8::2]:0"), None),
        flow(ICMP, ("198.51.100.1:0", "198.51.100.2:0"), None),
    ] {
        assert_eq!(
            verdict(&f),
            Verdict::Unattributed(Reason::Protocol),
            "{f:?}"
        );
    }
    // R pings this host with alice's id: the kernel answers, no ping socket does.
    let incoming = flow(ICMP, ("198.51.100.2:62547", "198.51.100.1:0"), None);
    assert_eq!(idx.socket_inode(&incoming), None);
    assert_eq!(verdict(&incoming), Verdict::Unattributed(Reason::Protocol));
    // The id is the echo's, not a port: the reported port stays 0.
    assert_eq!(
        attribute(&unconnected, &idx, None, &LocalNets::new([])).port,
        0
    );
    // With marks on, alice's mark and her socket agree; a ping socket's mark is never
    // held against it as another tool's (an ICMP entry outlives its socket).
    let m = marked(unconnected.clone(), crate::owner_mark::mark_of(ALICE));
    assert_eq!(mark_check(&m, &idx), None);
    let m = marked(connected.clone(), crate::owner_mark::mark_of(ALICE));
    assert_eq!(mark_check(&m, &idx), None);
}

#[test]
fn ping_sockets_added_to_built_maps_are_joined() {
    let mut sockets = vec![sock(L4::Udp, "0.0.0.0:62547", "0.0.0.0:0", BOB, 200)];
    let mut maps = SocketMaps::new(&sockets, [HOST4.parse().unwrap()]);
    let ping = flow(1, ("198.51.100.1:62547", "198.51.100.2:0"), None);
    let o = owners();
    {
        let idx = SocketIndex::with_maps(&sockets, &o, SocketMaps::new(&sockets, []));
        assert_eq!(
            idx.socket_inode(&ping),
            None,
            "a UDP port is not an echo id"
        );
    }
    sockets.push(sock(L4::Icmp, "0.0.0.0:62547", "0.0.0.0:0", ALICE, 100));
    maps.add(&sockets, 1);
    let idx = SocketIndex::with_maps(&sockets, &o, maps);
    assert_eq!(idx.socket_inode(&ping), Some(100));
    let udp = flow(UDP, ("198.51.100.1:62547", "198.51.100.2:53"), None);
    assert_eq!(idx.socket_inode(&udp), Some(200));
}

#[test]
fn a_subordinate_uid_is_charged_to_the_owner_of_its_range() {
    // alice's rootless user namespace: her socket fchown'ed to one of her subordinate
    // uids, after its first packet (marked as hers) or before (marked as the sub uid).
    const SUB: u32 = 100_999;
    let subuids = SubUids::parse(&format!("alice:100000:65536\n{BOB}:300000:65536\n"), &|n| {
        (n == "alice").then_some(ALICE)
    });
    let s = [sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:443",
        SUB,
        100,
    )];
    let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
    let o = owners();
    let plain = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]);
    let idx = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]).with_subuids(&subuids);
    let got = attribute(&f, &idx, None, &LocalNets::defaults());
    assert!(matches!(
        got.verdict,
        Verdict::User(Attribution { uid: ALICE, .. })
    ));
    let before = attribute(&f, &plain, None, &LocalNets::defaults());
    assert!(matches!(
        before.verdict,
        Verdict::User(Attribution { uid: SUB, .. })
    ));
    for mark in [ALICE, SUB] {
        let m = marked(f.clone(), crate::owner_mark::mark_of(mark));
        assert_eq!(mark_check(&m, &idx), Some(MarkCheck::Agrees), "mark {mark}");
    }
    // Another user's range is not alice's.
    let bobs = marked(f.clone(), crate::owner_mark::mark_of(300_005));
    assert!(matches!(
        mark_check(&bobs, &idx),
        Some(MarkCheck::Disagrees { .. })
    ));
    // Her socket gone: the mark of a sub uid names her.
    let none = SocketIndex::new(&[], &o, [HOST4.parse().unwrap()])
        .with_subuids(&subuids)
        .with_marks(true);
    let m = marked(f, crate::owner_mark::mark_of(SUB));
    let got = attribute(&m, &none, None, &LocalNets::defaults());
    assert!(matches!(
        got.verdict,
        Verdict::User(Attribution { uid: ALICE, .. })
    ));
}

#[test]
fn a_mark_is_checked_against_the_live_socket() {
    let s = [sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:443",
        ALICE,
        100,
    )];
    let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
    let o = owners();
    let idx = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]);
    let check = |mark| mark_check(&marked(f.clone(), mark), &idx);
    assert_eq!(check(0), None);
    assert_eq!(
        check(crate::owner_mark::mark_of(ALICE)),
        Some(MarkCheck::Agrees)
    );
    assert_eq!(
        check(crate::owner_mark::mark_of(BOB)),
        Some(MarkCheck::Disagrees {
            socket_uid: Some(ALICE)
        })
    );
    assert_eq!(check(42), Some(MarkCheck::Disagrees { socket_uid: None }));
    // A UDP entry may outlive its socket, and another user's may take up its ports.
    let u = [sock(
        L4::Udp,
        "198.51.100.1:5000",
        "198.51.100.2:53",
        ALICE,
        100,
    )];
    let uidx = SocketIndex::new(&u, &o, [HOST4.parse().unwrap()]);
    let q = flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None);
    assert_eq!(
        mark_check(&marked(q.clone(), crate::owner_mark::mark_of(BOB)), &uidx),
        None
    );
    assert_eq!(
        mark_check(&marked(q, 42), &uidx),
        Some(MarkCheck::Disagrees { socket_uid: None })
    );
    // An incoming connection accepted by a worker of another uid than the listener's
    // (nginx: root listens, `nobody` accepts): the SYN-ACK, sent for the listener,
    // marked it with the listener's uid. Not a disagreement; another uid still is.
    const NOBODY: u32 = 65534;
    let mut listener = sock(L4::Tcp, "0.0.0.0:80", "0.0.0.0:0", 0, 400);
    listener.state = crate::model::SocketState::Listen.raw();
    let web = [
        listener.clone(),
        sock(
            L4::Tcp,
            "198.51.100.1:80",
            "198.51.100.2:50000",
            NOBODY,
            401,
        ),
    ];
    let widx = SocketIndex::new(&web, &o, [HOST4.parse().unwrap()]);
    let inc = flow(TCP, ("198.51.100.2:50000", "198.51.100.1:80"), None);
    let wcheck = |mark| mark_check(&marked(inc.clone(), mark), &widx);
    assert_eq!(
        wcheck(crate::owner_mark::mark_of(0)),
        Some(MarkCheck::Agrees)
    );
    assert_eq!(
        wcheck(crate::owner_mark::mark_of(NOBODY)),
        Some(MarkCheck::Agrees)
    );
    assert_eq!(
        wcheck(crate::owner_mark::mark_of(BOB)),
        Some(MarkCheck::Disagrees {
            socket_uid: Some(0)
        })
    );
    // The listener closed since: nothing to hold the mark against.
    let alone = SocketIndex::new(&web[1..], &o, [HOST4.parse().unwrap()]);
    assert_eq!(
        mark_check(&marked(inc.clone(), crate::owner_mark::mark_of(0)), &alone),
        None
    );
    // No socket to compare with: a mark that could be netledger's says nothing.
    let none = SocketIndex::new(&[], &o, [HOST4.parse().unwrap()]);
    let g = marked(f.clone(), crate::owner_mark::mark_of(BOB));
    assert_eq!(mark_check(&g, &none), None);
}

#[test]
fn a_picked_up_entry_continues_the_owner_of_the_deleted_one_either_way_round() {
    let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
    let alice = Attribution {
        cgroup: None,
        uid: ALICE,
        program: Some("curl".into()),
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    };
    let mut c = Continued::default();
    c.remember(&f.orig, &alice, 100);
    assert_eq!(c.owner_of(&f.orig), Some(alice.clone()));
    // The first packet after the deletion came from the server.
    let back = flow(TCP, ("198.51.100.2:443", "198.51.100.1:40000"), None);
    let got = c.owner_of(&back.orig).unwrap();
    assert_eq!((got.uid, got.direction), (ALICE, Direction::In));
    // Charged the right way round: the reply of the reversed entry is what alice sent.
    let other = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:443"), None);
    assert_eq!(c.owner_of(&other.orig), None);
    c.forget_before(101);
    assert!(c.is_empty());
}

#[rstest]
#[case::outgoing_tcp_exact(
    vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", ALICE, 100)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
    user(ALICE, Direction::Out), "198.51.100.2", 80)]
#[case::incoming_to_own_server_exact_reply_tuple(
    vec![sock(L4::Tcp, "198.51.100.1:8080", "198.51.100.2:50000", BOB, 200)],
    flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
    user(BOB, Direction::In), "198.51.100.2", 8080)]
#[case::incoming_dnat_reply_tuple_holds(
    // Client hit 203.0.113.7:80, DNAT to the local 198.51.100.1:8080 server.
    vec![sock(L4::Tcp, "198.51.100.1:8080", "192.0.2.9:50000", BOB, 200)],
    flow(TCP, ("192.0.2.9:50000", "203.0.113.7:80"), Some(("198.51.100.1:8080", "192.0.2.9:50000"))),
    user(BOB, Direction::In), "192.0.2.9", 8080)]
#[case::v6_outgoing(
    vec![sock(L4::Tcp, "[2001:db8::1]:40000", "[2001:db8::2]:443", ALICE, 100)],
    flow(TCP, ("[2001:db8::1]:40000", "[2001:db8::2]:443"), None),
    user(ALICE, Direction::Out), "2001:db8::2", 443)]
#[case::tcp_socket_does_not_match_udp_flow(
    vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:53", ALICE, 100)],
    flow(UDP, ("198.51.100.1:40000", "198.51.100.2:53"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 53)]
#[case::connected_udp_exact(
    vec![sock(L4::Udp, "198.51.100.1:5000", "198.51.100.2:53", ALICE, 100)],
    flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
    user(ALICE, Direction::Out), "198.51.100.2", 53)]
#[case::unconnected_udp_bound_address(
    vec![sock(L4::Udp, "198.51.100.1:5000", "0.0.0.0:0", ALICE, 100)],
    flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
    user(ALICE, Direction::Out), "198.51.100.2", 53)]
#[case::unconnected_udp_wildcard(
    vec![sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100)],
    flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
    user(ALICE, Direction::Out), "198.51.100.2", 53)]
#[case::dual_stack_listener_serves_ipv4(
    vec![sock(L4::Tcp, "[::]:8080", "[::]:0", BOB, 200)],
    flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
    user(BOB, Direction::In), "198.51.100.2", 8080)]
#[case::exact_beats_bound(
    vec![
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
        sock(L4::Udp, "198.51.100.1:5000", "198.51.100.2:53", ALICE, 100),
    ],
    flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
    user(ALICE, Direction::Out), "198.51.100.2", 53)]
#[case::time_wait_is_not_root(
    vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", 0, 0)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 80)]
#[case::a_listener_on_the_remote_port_is_not_the_owner(
    // alice's download from R:8888, her socket gone, while bob listens on *:8888.
    vec![sock(L4::Tcp, "0.0.0.0:8888", "0.0.0.0:0", BOB, 200)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.2:8888"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 8888)]
#[case::a_udp_socket_on_the_remote_port_is_not_the_owner(
    vec![sock(L4::Udp, "0.0.0.0:53", "0.0.0.0:0", BOB, 200)],
    flow(UDP, ("198.51.100.1:40000", "198.51.100.2:53"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 53)]
#[case::a_listener_starts_no_connection(
    vec![sock(L4::Tcp, "0.0.0.0:40000", "0.0.0.0:0", BOB, 200)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 80)]
#[case::an_address_bound_with_freebind_is_not_the_hosts(
    // bob's listener bound with IP_FREEBIND to R's address: a flow to R is not local.
    vec![sock(L4::Tcp, "198.51.100.2:7777", "0.0.0.0:0", BOB, 200)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.2:9000"), None),
    Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 9000)]
#[case::reuseport_different_owners_is_ambiguous(
    vec![
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100),
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
    ],
    flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None),
    Verdict::Unattributed(Reason::Ambiguous), "198.51.100.2", 5000)]
#[case::forwarded_has_no_socket(
    vec![],
    flow(TCP, ("203.0.113.5:40000", "192.0.2.80:443"), None),
    Verdict::Unattributed(Reason::Forwarded), "192.0.2.80", 443)]
#[case::icmp_is_unattributed_by_protocol(
    vec![],
    flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None),
    Verdict::Unattributed(Reason::Protocol), "198.51.100.2", 0)]
#[case::loopback_excluded(
    vec![sock(L4::Tcp, "127.0.0.1:40000", "127.0.0.1:80", ALICE, 100)],
    flow(TCP, ("127.0.0.1:40000", "127.0.0.1:80"), None),
    Verdict::Excluded(Some(Attribution { uid: ALICE, program: Some("curl".into()), direction: Direction::Out, via: Via::Direct, container: None, cgroup: None })),
    "127.0.0.1", 80)]
#[case::lan_excluded_even_without_socket(
    vec![],
    flow(TCP, ("198.51.100.1:40000", "10.9.0.2:80"), None),
    Verdict::Excluded(None), "10.9.0.2", 80)]
#[case::lan_icmp_excluded(
    vec![],
    flow(1, ("198.51.100.1:0", "10.9.0.2:0"), None),
    Verdict::Excluded(None), "10.9.0.2", 0)]
#[case::to_the_hosts_own_public_address_excluded(
    vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.1:8080", ALICE, 100),
         sock(L4::Tcp, "198.51.100.1:8080", "198.51.100.1:40000", 0, 300)],
    flow(TCP, ("198.51.100.1:40000", "198.51.100.1:8080"), None),
    Verdict::Excluded(Some(Attribution { uid: ALICE, program: Some("curl".into()), direction: Direction::Out, via: Via::Direct, container: None, cgroup: None })),
    "198.51.100.1", 8080)]
#[case::dnat_to_the_host_itself_excluded(
    // A local client to 203.0.113.7:443, DNAT'd in OUTPUT to this host's 8443.
    vec![],
    flow(TCP, ("198.51.100.1:40000", "203.0.113.7:443"), Some(("198.51.100.1:8443", "198.51.100.1:40000"))),
    Verdict::Excluded(None), "203.0.113.7", 443)]
#[case::forwarded_lan_to_internet_not_excluded(
    vec![],
    flow(TCP, ("10.9.0.2:40000", "192.0.2.80:443"), None),
    Verdict::Unattributed(Reason::Forwarded), "192.0.2.80", 443)]
fn join_shapes(
    #[case] sockets: Vec<Socket>,
    #[case] f: Flow,
    #[case] want: Verdict,
    #[case] remote: &str,
    #[case] port: u16,
) {
    let got = join(&sockets, &f, None, &LocalNets::defaults());
    assert_eq!(got.verdict, want);
    assert_eq!(got.remote, remote.parse::<IpAddr>().unwrap());
    assert_eq!(got.port, port);
}

#[test]
fn gone_socket_keeps_prior_attribution() {
    let prior = Attribution {
        cgroup: None,
        uid: ALICE,
        program: Some("curl".into()),
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    };
    // Only a TIME_WAIT row (uid 0, inode 0) is left: it must not turn the flow into root's.
    let tw = vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", 0, 0)];
    let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None);
    let got = join(&tw, &f, Some(&prior), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(prior.clone()));
    let got = join(&[], &f, Some(&prior), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(prior));
}

#[test]
fn live_socket_beats_prior() {
    let prior = Attribution {
        cgroup: None,
        uid: BOB,
        program: None,
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    };
    let s = vec![sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "198.51.100.2:80",
        ALICE,
        100,
    )];
    let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None);
    let got = join(&s, &f, Some(&prior), &LocalNets::defaults());
    assert_eq!(got.verdict, user(ALICE, Direction::Out));
}

#[test]
fn kept_program_survives_when_processes_were_not_looked_up() {
    let s = vec![sock(
        L4::Tcp,
        "198.51.100.1:40001",
        "198.51.100.2:80",
        ALICE,
        300,
    )];
    let f = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None);
    let kept = Attribution {
        cgroup: None,
        uid: ALICE,
        program: Some("firefox".into()),
        direction: Direction::Out,
        via: Via::Direct,
        container: None,
    };
    // Inode 300 has no known process (not scanned this pass): the kept program stays.
    let got = join(&s, &f, Some(&kept), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(kept.clone()));
    // A socket now owned by another uid does not inherit the old program.
    let s = vec![sock(
        L4::Tcp,
        "198.51.100.1:40001",
        "198.51.100.2:80",
        BOB,
        300,
    )];
    let got = join(&s, &f, Some(&kept), &LocalNets::defaults());
    assert_eq!(
        got.verdict,
        Verdict::User(Attribution {
            cgroup: None,
            uid: BOB,
            program: None,
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        })
    );
    // The socket a new flow would be named through is the one to look up.
    let o = owners();
    let idx = SocketIndex::new(&s, &o, []);
    assert_eq!(idx.socket_inode(&f), Some(300));
    let icmp = flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None);
    assert_eq!(idx.socket_inode(&icmp), None);
}

const ROOT: u32 = 0;
const WWW: u32 = 33;

fn holder(pid: u32, uid: u32, program: &str) -> Holder {
    Holder {
        pid,
        uid,
        program: program.into(),
    }
}

fn via(uid: u32, program: Option<&str>, via: Via) -> Attribution {
    Attribution {
        cgroup: None,
        uid,
        program: program.map(Into::into),
        direction: Direction::In,
        via,
        container: None,
    }
}

#[rstest]
#[case::sshd_monitor_and_users_session(
    vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")],
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::order_of_holders_does_not_matter(
    vec![holder(701, ALICE, "sshd"), holder(700, ROOT, "sshd")],
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::the_users_lowest_pid_names_the_program(
    vec![holder(900, ALICE, "sftp-server"), holder(800, ALICE, "sshd"), holder(10, ROOT, "init")],
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::only_the_service_before_login_is_pending(
    vec![holder(700, ROOT, "sshd"), holder(650, ROOT, "sshd")],
    via(ROOT, Some("sshd"), Via::Pending))]
#[case::two_users_are_ambiguous(
    vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "a"), holder(702, BOB, "b")],
    via(ROOT, Some("sshd"), Via::Ambiguous))]
#[case::another_delegating_uid_is_no_user(
    vec![holder(700, WWW, "php-fpm"), holder(701, ALICE, "php")],
    via(ALICE, Some("php"), Via::Delegated(ROOT)))]
#[case::nobody_left_holding_it(vec![], via(ROOT, None, Via::Pending))]
fn delegation_rule(#[case] holders: Vec<Holder>, #[case] want: Attribution) {
    let d = Delegating::new([ROOT, WWW]);
    assert_eq!(delegate(ROOT, &holders, &d, Direction::In), want);
}

/// An sshd session: the accepted socket (root's) of an incoming connection to port 22.
fn ssh_flow() -> (Vec<Socket>, Flow) {
    (
        vec![
            sock(L4::Tcp, "198.51.100.1:22", "198.51.100.2:50000", ROOT, 500),
            sock(L4::Tcp, "0.0.0.0:22", "0.0.0.0:0", ROOT, 400),
        ],
        flow(TCP, ("198.51.100.2:50000", "198.51.100.1:22"), None),
    )
}

#[rstest]
#[case::a_users_process_holds_it(
    Some(vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")]), None,
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::not_looked_up_and_never_attributed_is_pending(None, None, via(ROOT, None, Via::Pending))]
#[case::looked_up_before_the_login_is_pending(
    Some(vec![holder(700, ROOT, "sshd")]), None, via(ROOT, Some("sshd"), Via::Pending))]
#[case::settled_is_kept_without_looking(
    None,
    Some(via(ALICE, Some("sshd"), Via::Delegated(ROOT))),
    via(ALICE, Some("sshd"), Via::Delegated(ROOT))
)]
#[case::settled_is_kept_even_when_looked_up(
    Some(vec![holder(701, BOB, "sshd")]), Some(via(ALICE, Some("sshd"), Via::Delegated(ROOT))),
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::the_services_own_stays_so(
    Some(vec![holder(701, BOB, "sshd")]), Some(via(ROOT, Some("sshd"), Via::Own)),
    via(ROOT, Some("sshd"), Via::Own))]
#[case::root_kept_from_before_delegation_stays_roots(
    None,
    Some(via(ROOT, Some("sshd"), Via::Direct)),
    via(ROOT, Some("sshd"), Via::Direct)
)]
#[case::pending_found_later(
    Some(vec![holder(701, ALICE, "sshd")]), Some(via(ROOT, Some("sshd"), Via::Pending)),
    via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
#[case::pending_not_looked_up_stays_pending(
    None,
    Some(via(ROOT, Some("sshd"), Via::Pending)),
    via(ROOT, Some("sshd"), Via::Pending)
)]
fn join_through_a_delegating_socket(
    #[case] holders: Option<Vec<Holder>>,
    #[case] prior: Option<Attribution>,
    #[case] want: Attribution,
) {
    let (sockets, f) = ssh_flow();
    let none = HashMap::new();
    let d = Delegating::new([ROOT]);
    let held: Option<HashMap<u64, Vec<Holder>>> = holders.map(|h| [(500, h)].into());
    let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
        .with_delegation(&d, held.as_ref());
    assert_eq!(idx.delegated_socket(&f).map(|s| s.inode), Some(500));
    let got = attribute(&f, &idx, prior.as_ref(), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(want));
}

#[test]
fn the_services_own_looked_at_again_goes_to_the_user_now_holding_it() {
    // A login slower than the grace: settled as root's own, then alice's session
    // process holds the socket. Only a socket looked at again is charged anew.
    let (sockets, f) = ssh_flow();
    let none = HashMap::new();
    let d = Delegating::new([ROOT]);
    let held: HashMap<u64, Vec<Holder>> = [(
        500,
        vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")],
    )]
    .into();
    let own = via(ROOT, Some("sshd"), Via::Own);
    let again: HashSet<u64> = [500].into();
    let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
        .with_delegation(&d, Some(&held))
        .with_recheck(&again);
    let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
    assert_eq!(
        got.verdict,
        Verdict::User(via(ALICE, Some("sshd"), Via::Delegated(ROOT)))
    );
    // Still only the service's processes: its own, as it was.
    let only_root: HashMap<u64, Vec<Holder>> = [(500, vec![holder(700, ROOT, "sshd")])].into();
    let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
        .with_delegation(&d, Some(&only_root))
        .with_recheck(&again);
    let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(own.clone()));
    // Not looked at again: its own, whoever holds it.
    let nothing = HashSet::new();
    let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
        .with_delegation(&d, Some(&held))
        .with_recheck(&nothing);
    let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(own));
}

#[test]
fn without_delegating_uids_or_for_other_uids_the_socket_uid_is_charged() {
    let (sockets, f) = ssh_flow();
    let none = HashMap::new();
    let held: HashMap<u64, Vec<Holder>> = [(500, vec![holder(701, ALICE, "sshd")])].into();
    // Delegation off: root, as before.
    let off = Delegating::new([]);
    let idx = SocketIndex::new(&sockets, &none, []).with_delegation(&off, Some(&held));
    assert_eq!(idx.delegated_socket(&f), None);
    let got = attribute(&f, &idx, None, &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(via(ROOT, None, Via::Direct)));
    // A socket of a uid that delegates nothing is its own, whoever holds it.
    let d = Delegating::new([WWW]);
    let idx = SocketIndex::new(&sockets, &none, []).with_delegation(&d, Some(&held));
    let got = attribute(&f, &idx, None, &LocalNets::defaults());
    assert_eq!(got.verdict, Verdict::User(via(ROOT, None, Via::Direct)));
}

#[rstest]
#[case(None, Via::Direct)]
#[case(Some(0), Via::Delegated(0))]
#[case(Some(33), Via::Delegated(33))]
#[case(Some(-1), Via::Own)]
#[case(Some(-2), Via::Ambiguous)]
#[case(Some(-3), Via::Pending)]
fn via_codes_round_trip(#[case] code: Option<i64>, #[case] v: Via) {
    assert_eq!(Via::from_code(code), v);
    assert_eq!(v.code(), code);
}

#[test]
fn counting_local_charges_lan_to_its_user() {
    let s = vec![sock(
        L4::Tcp,
        "198.51.100.1:40000",
        "10.9.0.2:80",
        ALICE,
        100,
    )];
    let f = flow(TCP, ("198.51.100.1:40000", "10.9.0.2:80"), None);
    let got = join(&s, &f, None, &LocalNets::new([]));
    assert_eq!(got.verdict, user(ALICE, Direction::Out));
}

/// Sockets added to an index's maps (a pass's second socket read) are indexed as one
/// build over all of them would: a same-port socket of another owner makes the bound
/// address ambiguous, a new exact socket is found, the first ones keep their places.
#[test]
fn maps_extended_with_more_sockets_equal_one_build_over_all() {
    let sockets = vec![
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100),
        sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", ALICE, 101),
        sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
        sock(L4::Tcp, "198.51.100.1:40001", "198.51.100.2:80", BOB, 201),
    ];
    let none = HashMap::new();
    let host = || [HOST4.parse::<IpAddr>().unwrap()];
    let mut maps = SocketMaps::new(&sockets[..2], host());
    maps.add(&sockets, 2);
    let extended = SocketIndex::with_maps(&sockets, &none, maps);
    let whole = SocketIndex::new(&sockets, &none, host());
    for f in [
        flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None),
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
        flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None),
        flow(TCP, ("198.51.100.1:40002", "198.51.100.2:80"), None),
    ] {
        assert_eq!(extended.lookup(&f), whole.lookup(&f));
    }
    let udp = flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None);
    assert_eq!(extended.lookup(&udp), Lookup::Ambiguous);
    let bobs = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None);
    assert_eq!(extended.socket_inode(&bobs), Some(201));
}

#[test]
fn custom_local_nets_replace_defaults() {
    let nets = LocalNets::new(["198.51.100.0/24".parse().unwrap()]);
    assert!(nets.contains("198.51.100.9".parse().unwrap()));
    assert!(!nets.contains("10.0.0.1".parse().unwrap()));
    // IPv4-mapped addresses compare as IPv4.
    assert!(nets.contains("::ffff:198.51.100.9".parse().unwrap()));
    assert!(LocalNets::defaults().contains("::ffff:127.0.0.1".parse().unwrap()));
    assert!(LocalNets::defaults().contains("ff02::1".parse().unwrap()));
    assert!(!LocalNets::defaults().contains("2001:db8::1".parse().unwrap()));
}
