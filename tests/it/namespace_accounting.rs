//! The exactness scenario: real users making real traffic in network namespaces this test
//! builds, accounted by the real binary, compared to the byte with the kernel's own
//! conntrack counters (`conntrack -L -o extended`).
//!
//! Topology (all namespaces made here, removed by guards):
//!   host  198.51.100.1/24 2001:db8::1/64 ── veth ── inet 198.51.100.2/24 2001:db8::2/64
//!   host  10.77.0.1/24                    ── veth ── lan  10.77.0.2/24
//! netledger runs in `host`; the users' programs run there under their own uids.

use crate::common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use common::*;

/// Who owns a flow, by the ports the scenario hands out: each user's clients bind their
/// own local ports, and each user's server listens on its own port.
struct Plan {
    /// (uid, first local port, last local port) for outgoing flows.
    client_ports: Vec<(u32, u16, u16)>,
    /// (uid, listening port) for incoming flows.
    server_ports: Vec<(u32, u16)>,
}

/// The host namespace's addresses.
const HOST_ADDRS: [&str; 3] = ["198.51.100.1", "2001:db8::1", "10.77.0.1"];

fn is_local(ip: IpAddr) -> bool {
    let nets: Vec<ipnet::IpNet> = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    nets.iter().any(|n| n.contains(&ip))
}

/// Expected per-uid (rx, tx) from conntrack's own counters, and the local bytes that
/// must be excluded.
fn expected(entries: &[CtEntry], plan: &Plan) -> (HashMap<u32, Usage>, u64) {
    let mut users: HashMap<u32, Usage> = HashMap::new();
    let mut excluded = 0;
    for e in entries {
        let (o, r) = (&e.orig, &e.reply);
        // Outgoing flows start at this host; an incoming client's ephemeral port may fall
        // in a user's range by chance, so the source address decides first.
        let from_host = o.src.is_loopback() || HOST_ADDRS.contains(&o.src.to_string().as_str());
        let outgoing = plan
            .client_ports
            .iter()
            .find(|(_, lo, hi)| from_host && (*lo..=*hi).contains(&o.sport))
            .map(|(uid, _, _)| *uid);
        let incoming = plan
            .server_ports
            .iter()
            .find(|(_, p)| *p == o.dport)
            .map(|(uid, _)| *uid);
        let remote = if incoming.is_some() { o.src } else { o.dst };
        if is_local(remote) {
            excluded += o.bytes + r.bytes;
            continue;
        }
        match (outgoing, incoming) {
            (Some(uid), _) => {
                let u = users.entry(uid).or_default();
                u.tx_bytes += o.bytes;
                u.rx_bytes += r.bytes;
            }
            (None, Some(uid)) => {
                let u = users.entry(uid).or_default();
                u.rx_bytes += o.bytes;
                u.tx_bytes += r.bytes;
            }
            (None, None) => panic!("flow the scenario did not make: {e:?}"),
        }
    }
    (users, excluded)
}

fn snapshot(ns: &Netns, db: &Path) -> String {
    let out = run(ns.cmd(bin()).arg("snapshot").arg("--db").arg(db));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// (attributed, unattributed, excluded) bytes of every pass, oldest first.
fn pass_totals(db: &Path) -> Vec<(u64, u64, u64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(
            "SELECT attributed_rx_bytes + attributed_tx_bytes,
                    unattributed_rx_bytes + unattributed_tx_bytes,
                    excluded_rx_bytes + excluded_tx_bytes FROM passes ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn assert_exact(host: &Netns, db: &Path, plan: &Plan, users: &[&TestUser], when: &str) {
    let entries = conntrack_entries(host);
    let (want, want_excluded) = expected(&entries, plan);
    let got = top_by_uid(host, db);
    for u in users {
        let w = want.get(&u.uid).copied().unwrap_or_default();
        let g = got.get(&Some(u.uid)).copied().unwrap_or_default();
        eprintln!(
            "{when}: {} (uid {}): netledger rx {} tx {} | conntrack rx {} tx {}",
            u.name, u.uid, g.rx_bytes, g.tx_bytes, w.rx_bytes, w.tx_bytes
        );
        assert!(
            w.rx_bytes > 0 && w.tx_bytes > 0,
            "{when}: {} made no traffic?",
            u.name
        );
        assert_eq!(g, w, "{when}: {} differs from conntrack's counters", u.name);
    }
    assert_eq!(
        got.get(&None).copied().unwrap_or_default(),
        Usage::default(),
        "{when}: nothing in this scenario is unattributable"
    );
    let excluded: u64 = pass_totals(db).iter().map(|p| p.2).sum();
    eprintln!("{when}: excluded local: netledger {excluded} | conntrack {want_excluded}");
    assert_eq!(excluded, want_excluded, "{when}: excluded local bytes");
}

struct Topology {
    host: Netns,
    inet: Netns,
    lan: Netns,
}

fn topology() -> Topology {
    let host = Netns::new("nlh");
    let inet = Netns::new("nli");
    let lan = Netns::new("nll");
    host.veth(
        "hi",
        &["198.51.100.1/24", "2001:db8::1/64"],
        &inet,
        "ih",
        &["198.51.100.2/24", "2001:db8::2/64"],
    );
    host.veth("hl", &["10.77.0.1/24"], &lan, "lh", &["10.77.0.2/24"]);
    Topology { host, inet, lan }
}

#[test]
fn namespace_accounting_is_exact_per_user() {
    if !require_root("namespace_accounting_is_exact_per_user") {
        return;
    }
    let t = topology();
    let tb = traffic_bin();
    let traffic = tb.path.clone();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let (alice, bob, carol) = (
        TestUser::new("nla"),
        TestUser::new("nlb"),
        TestUser::new("nlc"),
    );

    // Servers: the "internet" host answers TCP (v4+v6) and UDP (v4+v6); a LAN host answers TCP.
    let mut servers = vec![];
    for (ns, what, args) in [
        (&t.inet, "inet tcp", ["server", "tcp", "[::]:9000"]),
        (&t.inet, "inet udp", ["server", "udp", "[::]:9001"]),
        (&t.lan, "lan tcp", ["server", "tcp", "0.0.0.0:9000"]),
    ] {
        let mut p = Proc::spawn(what, {
            let mut c = ns.cmd(&traffic);
            c.args(args);
            c
        });
        p.expect("listening");
        servers.push(p);
    }

    // First pass: sets up accounting and tracking in the namespace (as root, no --no-setup).
    let first = snapshot(&t.host, &db);
    assert!(
        first.contains("nf_conntrack_acct=1"),
        "setup not reported: {first}"
    );

    let plan = Plan {
        client_ports: vec![
            (alice.uid, 41000, 41999),
            (bob.uid, 42000, 42999),
            (carol.uid, 43000, 43999),
        ],
        server_ports: vec![(carol.uid, 43080), (bob.uid, 42010)],
    };
    // Each user's own programs: (user, what, args).
    let client = |u: &TestUser, what: &str, args: &[&str]| {
        let mut c = u.cmd(&t.host, &traffic);
        c.args(args);
        Proc::spawn(&format!("{} {what}", u.name), c)
    };
    let mut own_servers = vec![
        client(
            &carol,
            "own server",
            &["serve-once", "tcp", "0.0.0.0:43080"],
        ),
        client(
            &bob,
            "loopback server",
            &["serve-once", "tcp", "127.0.0.1:42010"],
        ),
    ];
    for s in &mut own_servers {
        s.expect("listening");
    }
    let mut clients = vec![
        // alice: a download over IPv4, TCP through an AF_INET6 socket to an IPv4-mapped
        // address, and LAN traffic (excluded).
        client(
            &alice,
            "tcp4 download",
            &[
                "client",
                "tcp",
                "198.51.100.2:9000",
                "10000",
                "300000",
                "--bind",
                "41001",
            ],
        ),
        client(
            &alice,
            "tcp mapped",
            &[
                "client",
                "tcp",
                "198.51.100.2:9000",
                "5000",
                "50000",
                "--bind",
                "41002",
                "--v6sock",
            ],
        ),
        client(
            &alice,
            "lan",
            &[
                "client",
                "tcp",
                "10.77.0.2:9000",
                "7000",
                "9000",
                "--bind",
                "41003",
            ],
        ),
        // bob: an upload over native IPv6, connected UDP, and loopback (excluded).
        client(
            &bob,
            "tcp6 upload",
            &[
                "client",
                "tcp",
                "[2001:db8::2]:9000",
                "200000",
                "2000",
                "--bind",
                "42001",
            ],
        ),
        client(
            &bob,
            "udp connected",
            &[
                "client",
                "udp",
                "198.51.100.2:9001",
                "1000",
                "1200",
                "--bind",
                "42002",
            ],
        ),
        client(
            &bob,
            "loopback",
            &[
                "client",
                "tcp",
                "127.0.0.1:42010",
                "3000",
                "4000",
                "--bind",
                "42011",
            ],
        ),
        // carol: unconnected UDP (sendto) over IPv4 and IPv6.
        client(
            &carol,
            "udp sendto",
            &[
                "client",
                "udp-sendto",
                "198.51.100.2:9001",
                "500",
                "1300",
                "--bind",
                "43001",
            ],
        ),
        client(
            &carol,
            "udp6 sendto",
            &[
                "client",
                "udp-sendto",
                "[2001:db8::2]:9001",
                "600",
                "900",
                "--bind",
                "43002",
            ],
        ),
    ];
    // carol's own server gets an incoming connection from the internet host.
    clients.push({
        let mut c = t.inet.cmd(&traffic);
        c.args([
            "client",
            "tcp",
            "198.51.100.1:43080",
            "3000",
            "70000",
            "--bind",
            "50080",
        ]);
        Proc::spawn("inet → carol's server", c)
    });
    for c in &mut clients {
        c.expect("ready");
    }

    // A pass while every socket is alive, then the second half of the traffic.
    snapshot(&t.host, &db);
    for c in &mut clients {
        c.go();
    }
    for mut c in clients {
        c.expect("done");
        c.wait_ok();
    }
    for s in own_servers {
        s.wait_ok();
    }
    wait_tcp_closed(&t.host);

    // After everything closed: the flows' sockets are gone or in TIME_WAIT.
    snapshot(&t.host, &db);
    let users = [&alice, &bob, &carol];
    assert_exact(&t.host, &db, &plan, &users, "after close");

    // A further pass with no traffic charges nothing.
    let before = top_by_uid(&t.host, &db);
    snapshot(&t.host, &db);
    assert_eq!(
        top_by_uid(&t.host, &db),
        before,
        "idle pass changed the totals"
    );
    assert_eq!(
        pass_totals(&db).last().copied(),
        Some((0, 0, 0)),
        "idle pass charged something"
    );

    // A pass killed with SIGKILL part-way (inside its transaction), then re-run.
    let mut more = client(
        &alice,
        "tcp4 after kill",
        &[
            "client",
            "tcp",
            "198.51.100.2:9000",
            "20000",
            "40000",
            "--bind",
            "41004",
        ],
    );
    more.expect("ready");
    let passes_before = pass_totals(&db).len();
    // stderr joins stdout so the test sees the pass reach its pause; `exec` keeps the pid.
    let mut killed = t.host.cmd("sh");
    killed
        .args(["-c", "exec \"$0\" snapshot --db \"$1\" 2>&1"])
        .arg(bin())
        .arg(&db)
        .env("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS", "20000");
    let mut killed = Proc::spawn("snapshot to be killed", killed);
    killed.expect_containing("pausing before commit");
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(killed.pid() as i32, libc::SIGKILL) }, 0);
    drop(killed);
    assert_eq!(
        pass_totals(&db).len(),
        passes_before,
        "killed pass committed"
    );
    // Re-run at once (the timer's next tick), then let the flow finish.
    snapshot(&t.host, &db);
    more.go();
    more.expect("done");
    more.wait_ok();
    wait_tcp_closed(&t.host);
    snapshot(&t.host, &db);
    assert_exact(&t.host, &db, &plan, &users, "after a killed pass");
    drop(servers);
}
