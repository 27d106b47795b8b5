use super::*;
use crate::model::TCP_TIME_WAIT;
use crate::testkit::sa;
use std::path::PathBuf;

fn fixture(scenario: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/proc")
        .join(scenario)
}

fn fixture_text(scenario: &str, table: &str) -> String {
    let path = fixture(scenario).join("net").join(table);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn find<'a>(t: &'a SocketTable, proto: L4, local: &str, remote: &str) -> &'a Socket {
    let (local, remote) = (sa(local), sa(remote));
    let hits: Vec<_> = t
        .sockets
        .iter()
        .filter(|s| s.proto == proto && s.local == local && s.remote == remote)
        .collect();
    assert_eq!(hits.len(), 1, "{proto:?} {local} -> {remote}: {hits:?}");
    hits[0]
}

/// The fixtures were captured on x86_64; parse them as little-endian on any host.
fn parse_fixture(scenario: &str, table: &str, proto: L4) -> SocketTable {
    parse_table(&fixture_text(scenario, table), proto, Endian::Little, table)
}

#[test]
fn netns_mixed_has_every_row_and_no_bad_lines() {
    for (table, proto, rows) in [
        ("tcp", L4::Tcp, 9),
        ("tcp6", L4::Tcp, 6),
        ("udp", L4::Udp, 2),
        ("udp6", L4::Udp, 3),
    ] {
        let t = parse_fixture("netns-mixed", table, proto);
        assert_eq!(t.sockets.len(), rows, "{table}");
        assert!(t.bad_lines.is_empty(), "{table}: {:?}", t.bad_lines);
        assert!(t.sockets.iter().all(|s| s.proto == proto));
    }
}

#[test]
fn netns_mixed_tcp_v4_rows() {
    let t = parse_fixture("netns-mixed", "tcp", L4::Tcp);
    let listen = find(&t, L4::Tcp, "0.0.0.0:8080", "0.0.0.0:0");
    assert_eq!((listen.state, listen.uid, listen.inode), (0x0A, 0, 8557));
    let nobody = find(&t, L4::Tcp, "0.0.0.0:8081", "0.0.0.0:0");
    assert_eq!((nobody.uid, nobody.inode), (65534, 7620));
    let out = find(&t, L4::Tcp, "198.51.100.1:56750", "198.51.100.2:9000");
    assert_eq!((out.state, out.inode), (0x01, 8565));
    let accepted = find(&t, L4::Tcp, "198.51.100.1:8080", "198.51.100.2:51416");
    assert_eq!(accepted.inode, 8895);
    let lo = find(&t, L4::Tcp, "127.0.0.1:58984", "127.0.0.1:7000");
    assert_eq!(lo.inode, 8560);
}

#[test]
fn time_wait_and_unaccepted_rows_have_no_owner() {
    let t = parse_fixture("netns-mixed", "tcp", L4::Tcp);
    let tw = find(&t, L4::Tcp, "198.51.100.1:37520", "198.51.100.2:9002");
    assert_eq!(tw.state, TCP_TIME_WAIT);
    assert_eq!((tw.uid, tw.inode), (0, 0));
    assert!(!tw.has_owner());
    // Still in the listener's accept queue: established, but no socket inode yet.
    let queued = find(&t, L4::Tcp, "198.51.100.1:8080", "198.51.100.2:51432");
    assert_eq!((queued.state, queued.inode), (0x01, 0));
    assert!(!queued.has_owner());
}

#[test]
fn netns_mixed_tcp6_rows_and_mapped_becomes_ipv4() {
    let t = parse_fixture("netns-mixed", "tcp6", L4::Tcp);
    let listen = find(&t, L4::Tcp, "[::]:8443", "[::]:0");
    assert_eq!((listen.state, listen.inode), (0x0A, 8558));
    assert_eq!(find(&t, L4::Tcp, "[::1]:7001", "[::]:0").inode, 8562);
    let v6 = find(&t, L4::Tcp, "[2001:db8::1]:57598", "[2001:db8::2]:9001");
    assert_eq!((v6.state, v6.inode), (0x01, 8567));
    // AF_INET6 socket connected to ::ffff:198.51.100.2: both ends canonicalised to IPv4.
    let mapped = find(&t, L4::Tcp, "198.51.100.1:56766", "198.51.100.2:9000");
    assert!(mapped.local.is_ipv4() && mapped.remote.is_ipv4());
    assert_eq!(mapped.inode, 8738);
    // `::` is not mapped and stays IPv6.
    assert!(t
        .sockets
        .iter()
        .filter(|s| s.state == 0x0A)
        .all(|s| s.remote.is_ipv6()));
}

#[test]
fn udplite_rows_read_as_udp_does() {
    let t = parse_fixture("udplite", "udplite", L4::UdpLite);
    assert!(t.bad_lines.is_empty(), "{:?}", t.bad_lines);
    assert_eq!(t.sockets.len(), 2);
    let unconnected = find(&t, L4::UdpLite, "0.0.0.0:5000", "0.0.0.0:0");
    assert_eq!(
        (unconnected.state, unconnected.uid, unconnected.inode),
        (0x07, 65534, 3245922)
    );
    let connected = find(&t, L4::UdpLite, "198.51.100.1:39175", "198.51.100.2:5353");
    assert_eq!((connected.state, connected.inode), (0x01, 3245923));
    let t6 = parse_fixture("udplite", "udplite6", L4::UdpLite);
    assert_eq!(t6.sockets.len(), 2);
    let bound = find(&t6, L4::UdpLite, "[2001:db8::1]:5001", "[::]:0");
    assert_eq!((bound.state, bound.inode), (0x07, 3245924));
    assert_eq!(
        find(
            &t6,
            L4::UdpLite,
            "[2001:db8::1]:50124",
            "[2001:db8::2]:5353"
        )
        .inode,
        3245925
    );
}

#[test]
fn ping_socket_rows_have_the_echo_id_as_their_port() {
    let t = read_ping_sockets(&fixture("icmp")).unwrap();
    assert!(t.bad_lines.is_empty(), "{:?}", t.bad_lines);
    assert_eq!(t.sockets.len(), 5);
    let protos: Vec<L4> = t.sockets.iter().map(|s| s.proto).collect();
    assert_eq!(
        protos,
        [L4::Icmp, L4::Icmp, L4::Icmp, L4::Icmpv6, L4::Icmpv6]
    );
    // Unconnected, its id chosen at its first sendto (62547 = 0xF453).
    let sent = find(&t, L4::Icmp, "0.0.0.0:62547", "0.0.0.0:0");
    assert_eq!((sent.state, sent.uid, sent.inode), (0x07, 65534, 49885));
    let connected = find(&t, L4::Icmp, "198.51.100.1:62548", "198.51.100.2:0");
    assert_eq!((connected.state, connected.inode), (0x01, 49887));
    // Bound to an id of the user's choosing (0x1234).
    assert_eq!(
        find(&t, L4::Icmp, "198.51.100.1:4660", "0.0.0.0:0").inode,
        49886
    );
    assert_eq!(find(&t, L4::Icmpv6, "[::]:62549", "[::]:0").inode, 49888);
    let v6 = find(&t, L4::Icmpv6, "[2001:db8::1]:62550", "[2001:db8::2]:0");
    assert_eq!((v6.state, v6.inode), (0x01, 49889));
    // The other tables do not read them, and no ping table is no error.
    assert!(
        read_sockets(&fixture("icmp")).is_err(),
        "no tcp table there"
    );
    let none = read_ping_sockets(&fixture("udplite")).unwrap();
    assert_eq!(none, SocketTable::default());
}

#[test]
fn ping_sockets_name_the_sender_of_an_echo_by_its_id() {
    use crate::model::Flow;
    use crate::testkit::{flow_of, mirror, tuple};
    let pings = PingSockets::new(read_ping_sockets(&fixture("icmp")).unwrap().sockets);
    // An echo request from `src` (its id as the port) to `dst` (port 0).
    let echo = |src: &str, dst: &str| {
        let proto = if sa(src).is_ipv4() { 1 } else { 58 };
        let orig = tuple(proto, src, dst);
        flow_of(orig, mirror(&orig))
    };
    let host: [IpAddr; 2] = [
        "198.51.100.1".parse().unwrap(),
        "2001:db8::1".parse().unwrap(),
    ];
    let here = |ip: IpAddr| host.contains(&ip);
    let inode = |f: &Flow| pings.owner_of(f, here).map(|s| s.inode);
    assert_eq!(
        inode(&echo("198.51.100.1:62547", "198.51.100.2:0")),
        Some(49885)
    );
    assert_eq!(
        inode(&echo("198.51.100.1:62548", "198.51.100.2:0")),
        Some(49887)
    );
    assert_eq!(
        inode(&echo("198.51.100.1:4660", "203.0.113.9:0")),
        Some(49886)
    );
    assert_eq!(
        inode(&echo("[2001:db8::1]:62549", "[2001:db8::2]:0")),
        Some(49888)
    );
    assert_eq!(
        inode(&echo("[2001:db8::1]:62550", "[2001:db8::2]:0")),
        Some(49889)
    );
    // Connected elsewhere, another address, another family, another id, not from here.
    assert_eq!(inode(&echo("198.51.100.1:62548", "203.0.113.9:0")), None);
    assert_eq!(inode(&echo("198.51.100.7:4660", "198.51.100.2:0")), None);
    assert_eq!(inode(&echo("[2001:db8::1]:62547", "[2001:db8::2]:0")), None);
    assert_eq!(inode(&echo("198.51.100.1:62549", "198.51.100.2:0")), None);
    assert_eq!(
        pings.owner_of(&echo("198.51.100.1:62547", "198.51.100.2:0"), |_| false),
        None
    );

    // Two owners' sockets sharing an id (both set SO_REUSEADDR): no owner, as the
    // pass's index says (ambiguous); a connected one of them still names its own.
    let sock = |local: &str, remote: &str, uid: u32, inode: u64| Socket {
        proto: L4::Icmp,
        local: sa(local),
        remote: sa(remote),
        state: 7,
        uid,
        inode,
        cgroup: 0,
    };
    let shared = PingSockets::new(vec![
        sock("0.0.0.0:777", "0.0.0.0:0", 1001, 1),
        sock("0.0.0.0:777", "0.0.0.0:0", 1002, 2),
        sock("0.0.0.0:777", "198.51.100.9:0", 1003, 3),
    ]);
    let owner = |f: &Flow| shared.owner_of(f, here).map(|s| s.inode);
    assert_eq!(owner(&echo("198.51.100.1:777", "198.51.100.2:0")), None);
    assert_eq!(owner(&echo("198.51.100.1:777", "198.51.100.9:0")), Some(3));
    let same = PingSockets::new(vec![
        sock("0.0.0.0:777", "0.0.0.0:0", 1001, 1),
        sock("198.51.100.1:777", "0.0.0.0:0", 1001, 2),
    ]);
    assert_eq!(
        same.owner_of(&echo("198.51.100.1:777", "198.51.100.2:0"), here)
            .map(|s| s.uid),
        Some(1001)
    );
}

#[test]
fn netns_mixed_udp_rows() {
    let t = parse_fixture("netns-mixed", "udp", L4::Udp);
    let unconnected = find(&t, L4::Udp, "0.0.0.0:5000", "0.0.0.0:0");
    assert_eq!((unconnected.state, unconnected.inode), (0x07, 8743));
    let connected = find(&t, L4::Udp, "198.51.100.1:42810", "198.51.100.2:5353");
    assert_eq!((connected.state, connected.inode), (0x01, 8742));

    let t6 = parse_fixture("netns-mixed", "udp6", L4::Udp);
    let bound = find(&t6, L4::Udp, "[2001:db8::1]:5001", "[::]:0");
    assert_eq!((bound.state, bound.inode), (0x07, 8744));
    assert_eq!(
        find(&t6, L4::Udp, "[2001:db8::1]:58380", "[2001:db8::2]:5353").inode,
        8745
    );
    assert_eq!(
        find(&t6, L4::Udp, "198.51.100.1:45097", "198.51.100.2:5353").inode,
        8746
    );
}

#[test]
fn read_sockets_reads_all_four_tables_in_order() {
    let t = read_sockets(&fixture("netns-mixed")).unwrap();
    assert_eq!(t.sockets.len(), 9 + 6 + 2 + 3);
    assert!(t.bad_lines.is_empty());
    let protos: Vec<L4> = t.sockets.iter().map(|s| s.proto).collect();
    assert_eq!(&protos[..15], &[L4::Tcp; 15]);
    assert_eq!(&protos[15..], &[L4::Udp; 5]);
}

#[test]
fn malformed_line_is_reported_with_its_line_number_and_others_survive() {
    let text = fixture_text("malformed-line", "tcp");
    let t = parse_table(&text, L4::Tcp, Endian::Little, "malformed-line/net/tcp");
    assert_eq!(t.sockets.len(), 9, "every real row survives");
    assert_eq!(t.bad_lines.len(), 1, "{:?}", t.bad_lines);
    let bad = &t.bad_lines[0];
    assert_eq!(bad.file, "malformed-line/net/tcp");
    assert_eq!(bad.line, 5);
    assert_eq!(bad.text, text.lines().nth(4).unwrap().trim_end());
    assert_eq!(bad.reason, "bad remote address");
    // Rows after the bad line are still there.
    find(&t, L4::Tcp, "198.51.100.1:8080", "198.51.100.2:51432");
}

#[test]
fn read_sockets_keeps_going_past_a_malformed_line() {
    let t = read_sockets(&fixture("malformed-line")).unwrap();
    assert_eq!(t.sockets.len(), 20);
    assert_eq!(t.bad_lines.len(), 1);
    assert!(t.bad_lines[0].file.ends_with("malformed-line/net/tcp"));
    assert_eq!(t.bad_lines[0].line, 5);
}

#[test]
fn big_endian_sample_gives_the_same_rows_as_its_little_endian_source() {
    for (table, proto) in [("tcp", L4::Tcp), ("tcp6", L4::Tcp)] {
        let le = parse_fixture("netns-mixed", table, proto);
        let be = parse_table(
            &fixture_text("big-endian", table),
            proto,
            Endian::Big,
            table,
        );
        assert!(be.bad_lines.is_empty());
        assert_eq!(be.sockets, le.sockets, "{table}");
        // And reading it with the wrong byte order does give different addresses.
        let wrong = parse_table(
            &fixture_text("big-endian", table),
            proto,
            Endian::Little,
            table,
        );
        assert_ne!(wrong.sockets, le.sockets);
    }
}

#[test]
fn endian_decodes_loopback_both_ways() {
    let row = |addr: &str| {
        format!(
            "   0: {addr}:0050 {addr}:1F90 01 00000000:00000000 00:00000000 00000000  1000 0 42 1"
        )
    };
    let le = parse_table(&row("0100007F"), L4::Tcp, Endian::Little, "le");
    let be = parse_table(&row("7F000001"), L4::Tcp, Endian::Big, "be");
    assert_eq!(le.sockets[0].local, sa("127.0.0.1:80"));
    assert_eq!(le.sockets, be.sockets);
    assert_eq!((le.sockets[0].uid, le.sockets[0].inode), (1000, 42));
}

#[test]
fn missing_ipv6_tables_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("net")).unwrap();
    for table in ["tcp", "udp"] {
        std::fs::copy(
            fixture("netns-mixed").join("net").join(table),
            dir.path().join("net").join(table),
        )
        .unwrap();
    }
    let t = read_sockets(dir.path()).unwrap();
    assert_eq!(t.sockets.len(), 9 + 2);
    assert!(t.sockets.iter().all(|s| s.local.is_ipv4()));
}

#[test]
fn missing_tcp_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let err = read_sockets(dir.path()).unwrap_err();
    match &err {
        SocketsError::Missing { path, .. } => assert_eq!(*path, dir.path().join("net/tcp")),
        other => panic!("expected Missing, got {other:?}"),
    }
    assert!(err.to_string().contains("net/tcp"), "{err}");
}

#[test]
fn unreadable_table_is_an_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where a file should be: open succeeds, read fails (EISDIR) even as root.
    std::fs::create_dir_all(dir.path().join("net/tcp")).unwrap();
    match read_sockets(dir.path()).unwrap_err() {
        SocketsError::Read { path, .. } => assert_eq!(path, dir.path().join("net/tcp")),
        other => panic!("expected Read, got {other:?}"),
    }
}

#[test]
fn reads_this_machines_own_tables() {
    let t = read_sockets(Path::new("/proc")).unwrap();
    assert!(t.bad_lines.is_empty(), "{:?}", t.bad_lines);
}

#[test]
fn udp_state_other_than_1_or_7_is_kept() {
    // procfs rejects the whole file on this; it is a valid row for us.
    let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
                \x20 7: 016433C6:1388 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 0\n";
    let t = parse_table(text, L4::Udp, Endian::Little, "udp");
    assert!(t.bad_lines.is_empty());
    assert_eq!(t.sockets[0].state, 0x0A);
    assert_eq!(t.sockets[0].local, sa("198.51.100.1:5000"));
}

#[test]
fn bad_lines_each_get_a_reason() {
    let good = "   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8559 1";
    let cases = [
        ("   0: 0100007F:1B58", "missing remote address"),
        ("   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0", "missing timeout field"),
        ("   0: 0100007G:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", "bad local address"),
        ("   0: 0100007F:1B58 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", "local and remote addresses differ in length"),
        ("   0: 0100007F:11B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1", "bad local address"),
        ("   0: 0100007F:1B58 00000000:0000 100 00000000:00000000 00:00000000 00000000 0 0 1 1", "bad st field"),
        ("   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 -1 0 1 1", "bad uid field"),
        ("   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 4294967296 0 1 1", "bad uid field"),
        ("   0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 +1 1", "bad inode field"),
        ("garbage", "sl field is not `N:`"),
    ];
    for (line, reason) in cases {
        let text = format!("{good}\n{line}\n{good}\n");
        let t = parse_table(&text, L4::Tcp, Endian::Little, "t");
        assert_eq!(t.sockets.len(), 2, "{line}");
        assert_eq!(t.bad_lines.len(), 1, "{line}");
        assert_eq!(t.bad_lines[0].line, 2, "{line}");
        assert_eq!(t.bad_lines[0].reason, reason, "{line}");
    }
}

#[test]
fn forty_thousand_rows_parse_and_round_trip() {
    // Correctness at scale; the timing lives in a benchmark, not in a test.
    let mut text = fixture_text("netns-mixed", "tcp")
        .lines()
        .next()
        .unwrap()
        .to_owned();
    text.push('\n');
    for i in 0..40_000u32 {
        let port = 1024 + (i % 60_000);
        text.push_str(&format!(
            "{i:5}: 016433C6:{port:04X} 026433C6:01BB 01 00000000:00000000 00:00000000 00000000  1000        0 {} 1 0000000000000000 20 0 0 10 -1\n",
            100_000 + i
        ));
    }
    let t = parse_table(&text, L4::Tcp, Endian::Little, "big");
    assert_eq!(t.sockets.len(), 40_000);
    assert!(t.bad_lines.is_empty());
    assert_eq!(t.sockets[39_999].inode, 139_999);
    assert_eq!(t.sockets[7].local, sa("198.51.100.1:1031"));
}
