//! Exact under churn (issue 17): bursts of short TCP connections from two real users, each
//! with a source address of its own, to a server that closes first (so each client socket
//! is gone the moment the connection ends, and its conntrack entry lingers in TIME_WAIT
//! with no socket to name its owner). The owner mark (`netledger setup`'s rule writing the
//! sender's uid into the entry's mark) names the owner instead.
//!
//! The kernel's numbers, independent of the mark:
//! - per user, nftables counters in the host: `ip saddr ADDRESS` in the output hook and
//!   `ip daddr ADDRESS` in the input hook, ADDRESS being the user's own, which only that
//!   user's connections use (outgoing from it, incoming to the user's server on it). Both
//!   count the IP length of the same packets conntrack counts. Not `meta skuid`: a socket
//!   its process closed is orphaned (no file, so no uid) while it still sends what was
//!   queued, its FIN's retransmissions and its last ACK; `meta skuid` missed 251 B per
//!   incoming connection of a loaded burst that way, which conntrack counts;
//! - the entries still in the table (`conntrack -L -o extended`), by source address.
//!
//! Topology: `common::Inet` (host 198.51.100.1 ── veth ── inet 198.51.100.2), plus
//! 198.51.100.11 and .12 on the host for the two users, and `nl_traffic server-closes` on
//! inet port 9100. Everything is removed by the guards.

use crate::common;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Instant;

use common::*;

const PORT: u16 = 9100;
/// The port of each user's own server on the host.
const IN_PORT: u16 = 9200;

/// The topology, two users with their addresses, and the kernel's per-user counters.
struct Churn {
    t: Inet,
    _server: Proc,
    /// Each user's own server (on its address, port 9200), closing first too.
    _servers: Vec<Proc>,
    users: Vec<(TestUser, &'static str)>,
    bin: SharedBin,
}

impl Churn {
    fn new(prefix: &str) -> Churn {
        let t = Inet::new(prefix, 120);
        let tb = traffic_bin();
        let mut server = Proc::spawn("closing server", {
            let mut c = t.inet.cmd(&tb.path);
            c.args(["server-closes", "tcp", &format!("0.0.0.0:{PORT}")]);
            c
        });
        server.expect("listening");
        // Room for many connections a second: the server's TIME_WAIT sockets pile up.
        t.inet
            .sh("sysctl -qw net.ipv4.tcp_max_syn_backlog=4096 net.core.somaxconn=4096");
        let users = vec![
            (TestUser::new(&format!("{prefix}a")), "198.51.100.11"),
            (TestUser::new(&format!("{prefix}b")), "198.51.100.12"),
        ];
        let mut rules = String::from(
            "table inet nlcount {\n chain out {\n  type filter hook output priority 10; policy accept;\n",
        );
        for (u, addr) in &users {
            rules.push_str(&format!(
                "  ip saddr {addr} counter comment \"tx {}\"\n",
                u.uid
            ));
        }
        rules.push_str("  ct state invalid counter comment \"invalid-out\"\n");
        rules.push_str(" }\n chain in {\n  type filter hook input priority 10; policy accept;\n");
        rules.push_str("  ct state invalid counter comment \"invalid-in\"\n");
        for (u, addr) in &users {
            t.host.ip(&format!("addr add {addr}/24 dev hi"));
            rules.push_str(&format!(
                "  ip daddr {addr} counter comment \"rx {}\"\n",
                u.uid
            ));
        }
        rules.push_str(" }\n}\n");
        nft_load(&t.host, &rules);
        let servers = users
            .iter()
            .map(|(u, addr)| {
                let mut s = Proc::spawn(&format!("{}'s server", u.name), {
                    let mut c = u.cmd(&t.host, &tb.path);
                    c.args(["server-closes", "tcp", &format!("{addr}:{IN_PORT}")]);
                    c
                });
                s.expect("listening");
                s
            })
            .collect();
        t.host
            .sh("sysctl -qw net.ipv4.tcp_max_syn_backlog=4096 net.core.somaxconn=4096");
        Churn {
            t,
            _server: server,
            _servers: servers,
            users,
            bin: burst_bin(),
        }
    }

    /// Each user runs `procs` processes of 4 threads making `count` connections each
    /// (100 B up, 1,000 B down), while one process in the "internet" makes `count`
    /// connections to each user's server (1,000 B up, 100 B down); returns (connections,
    /// seconds) once all are done.
    fn burst(&self, procs: usize, count: usize) -> (usize, f64) {
        self.burst_with(procs, count, true)
    }

    /// [`Churn::burst`], with or without the incoming connections.
    fn burst_with(&self, procs: usize, count: usize, incoming: bool) -> (usize, f64) {
        let t0 = Instant::now();
        let mut running = Vec::new();
        for (u, addr) in self.users.iter().filter(|_| incoming) {
            let mut c = self.t.inet.cmd(&self.bin.path);
            c.args([
                &format!("{addr}:{IN_PORT}"),
                &count.to_string(),
                "1000",
                "100",
                "--parallel",
                "4",
                "--server-closes",
            ]);
            running.push(Proc::spawn(&format!("connections to {}", u.name), c));
        }
        for (u, addr) in &self.users {
            for _ in 0..procs {
                let mut c = u.cmd(&self.t.host, &self.bin.path);
                c.args([
                    &format!("198.51.100.2:{PORT}"),
                    &count.to_string(),
                    "100",
                    "1000",
                    "--parallel",
                    "4",
                    "--from",
                    addr,
                    "--server-closes",
                ]);
                running.push(Proc::spawn(&format!("{} burst", u.name), c));
            }
        }
        for mut p in running {
            p.expect_containing("done ");
            p.wait_ok();
        }
        let secs = t0.elapsed().as_secs_f64();
        let n = (procs + usize::from(incoming)) * count * self.users.len();
        eprintln!(
            "burst: {n} connections in {secs:.2} s ({:.0}/s)",
            n as f64 / secs
        );
        (n, secs)
    }

    /// Per uid, what nftables counted: (rx, tx) bytes.
    fn nft_counters(&self) -> HashMap<u32, Usage> {
        let out = run(self
            .t
            .host
            .cmd("nft")
            .args(["-j", "list", "table", "inet", "nlcount"]));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut m: HashMap<u32, Usage> = HashMap::new();
        for r in v["nftables"].as_array().unwrap() {
            let Some(rule) = r.get("rule") else { continue };
            let comment = rule["comment"].as_str().unwrap_or("");
            let Some((dir, uid)) = comment.split_once(' ') else {
                continue;
            };
            let Ok(uid) = uid.parse::<u32>() else {
                continue;
            };
            let bytes = rule["expr"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|e| e.get("counter").and_then(|c| c["bytes"].as_u64()))
                .unwrap();
            let u = m.entry(uid).or_default();
            match dir {
                "rx" => u.rx_bytes += bytes,
                _ => u.tx_bytes += bytes,
            }
        }
        m
    }

    /// Per uid, the counters of the entries in the table now, by the user's address.
    fn table_sums(&self) -> HashMap<u32, Usage> {
        let entries = conntrack_entries(&self.t.host);
        let mut m = HashMap::new();
        for (u, addr) in &self.users {
            let addr: IpAddr = addr.parse().unwrap();
            let out = outgoing_usage(entries.iter().filter(|e| e.orig.src == addr));
            // Incoming: what the user's server received is the original direction.
            let inc = outgoing_usage(entries.iter().filter(|e| e.orig.dst == addr));
            m.insert(
                u.uid,
                Usage {
                    rx_bytes: out.rx_bytes + inc.tx_bytes,
                    tx_bytes: out.tx_bytes + inc.rx_bytes,
                },
            );
        }
        m
    }

    /// Wait until every connection of the bursts is over (its counters final).
    fn wait_closed(&self) {
        let addrs: Vec<IpAddr> = self.users.iter().map(|(_, a)| a.parse().unwrap()).collect();
        wait_for(
            "the bursts' connections to finish closing",
            std::time::Duration::from_secs(30),
            || {
                let open = unclosed_tcp_entries(&self.t.host);
                let ours = |e: &CtEntry| addrs.contains(&e.orig.src) || addrs.contains(&e.orig.dst);
                (!open.iter().any(ours)).then_some(())
            },
        );
    }

    fn uids(&self) -> Vec<u32> {
        self.users.iter().map(|(u, _)| u.uid).collect()
    }
}

/// Load an nftables ruleset in `ns`.
fn nft_load(ns: &Netns, rules: &str) {
    use std::io::Write;
    let mut c = ns
        .cmd("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "nft -f failed on:\n{rules}");
}

fn snapshot(ns: &Netns, db: &Path) -> String {
    let out = run(ns.cmd(bin()).arg("--db").arg(db).arg("snapshot"));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn unattributed(got: &HashMap<Option<u32>, Usage>) -> u64 {
    got.get(&None).map_or(0, |u| u.rx_bytes + u.tx_bytes)
}

#[test]
fn daemon_is_exact_per_user_through_a_burst_against_nftables_counters() {
    if !require_root("daemon_is_exact_per_user_through_a_burst_against_nftables_counters") {
        return;
    }
    let _serial = one_burst_at_a_time();
    let c = Churn::new("nlcd");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("daemon.db");
    let daemon = Daemon::start(&c.t.host, &db, &["--interval", "5s"], &[]);
    c.burst(4, 3000);
    c.wait_closed();
    daemon.wait_for_a_whole_pass();
    let err = daemon.stop();
    let stopped = err
        .lines()
        .rfind(|l| l.contains("stopped after"))
        .unwrap_or("");
    eprintln!("{stopped}");
    let got = top_by_uid(&c.t.host, &db);
    let want = c.nft_counters();
    let stats = c.t.host.sh("conntrack -S");
    eprintln!("{}", String::from_utf8_lossy(&stats.stdout));
    let ruleset = c.t.host.sh("nft list table inet nlcount");
    eprintln!("{}", String::from_utf8_lossy(&ruleset.stdout));
    for uid in c.uids() {
        let g = got.get(&Some(uid)).copied().unwrap_or_default();
        eprintln!("uid {uid}: netledger {g:?}, nftables {:?}", want[&uid]);
        assert_eq!(g, want[&uid], "uid {uid}: the daemon against nftables");
    }
    assert_eq!(unattributed(&got), 0, "unattributed bytes: {got:?}");
}

#[test]
fn timer_charges_every_entry_still_in_the_table_to_its_user() {
    if !require_root("timer_charges_every_entry_still_in_the_table_to_its_user") {
        return;
    }
    let _serial = one_burst_at_a_time();
    let c = Churn::new("nlct");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("timer.db");
    snapshot(&c.t.host, &db);
    c.burst(4, 2500);
    c.wait_closed();
    let said = snapshot(&c.t.host, &db);
    let table = c.table_sums();
    let got = top_by_uid(&c.t.host, &db);
    let nft = c.nft_counters();
    eprintln!("{}", said.trim());
    for uid in c.uids() {
        let g = got.get(&Some(uid)).copied().unwrap_or_default();
        let (t, n) = (table[&uid], nft[&uid]);
        let left = (n.rx_bytes + n.tx_bytes) - (t.rx_bytes + t.tx_bytes);
        eprintln!(
            "uid {uid}: netledger {g:?}, entries in the table {t:?}, nftables {n:?}: {left} B \
             in entries that left the table (a new connection reused their tuple)"
        );
        assert_eq!(
            g, t,
            "uid {uid}: the timer against the entries in the table"
        );
    }
    assert_eq!(unattributed(&got), 0, "unattributed bytes: {got:?}");
    assert!(
        said.contains("charged by owner mark"),
        "the pass says what the mark charged: {said}"
    );
}

#[test]
fn a_foreign_mark_is_detected_reported_once_and_charges_nothing() {
    if !require_root("a_foreign_mark_is_detected_reported_once_and_charges_nothing") {
        return;
    }
    let _serial = one_burst_at_a_time();
    let c = Churn::new("nlcf");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("timer.db");
    let (alice, bob) = (&c.users[0].0, &c.users[1].0);

    // 1. Someone outside nftables (here `conntrack -U`) writes a uid-looking mark into a
    // live connection's entry: its socket says otherwise.
    let tb = traffic_bin();
    let mut held = Proc::spawn("alice's connection", {
        let mut cmd = alice.cmd(&c.t.host, &tb.path);
        cmd.args([
            "client",
            "tcp",
            "198.51.100.2:9000",
            "100",
            "1000",
            "--bind",
            "45999",
        ]);
        cmd
    });
    held.expect("ready");
    run(c.t.host.cmd("conntrack").args([
        "-U",
        "-f",
        "ipv4",
        "-p",
        "tcp",
        "--sport",
        "45999",
        "--mark",
        &format!("{}", 0x8000_0000u32 | 4242),
    ]));
    let first = snapshot(&c.t.host, &db);
    eprintln!("{}", first.trim());
    assert!(
        first.contains("a conntrack mark disagrees") && first.contains("4242"),
        "the disagreement is said: {first}"
    );
    // From now on marks name nobody: bob's burst, whose sockets are gone, is not charged
    // to him, nor to any uid a mark holds.
    c.burst_with(1, 200, false);
    c.wait_closed();
    let second = snapshot(&c.t.host, &db);
    assert!(
        !second.contains("disagrees"),
        "said once, not again: {second}"
    );
    let got = top_by_uid(&c.t.host, &db);
    assert!(
        !got.contains_key(&Some(4242)),
        "charged by a foreign mark: {got:?}"
    );
    assert!(
        unattributed(&got) > 0,
        "socketless flows are unattributed: {got:?}"
    );
    held.go();
    held.wait_ok();

    // 2. `netledger setup` re-arms; a foreign nftables rule that marks first is found in
    // the ruleset, said once, and its marks (42, not a uid) charge nobody.
    run(c.t.host.cmd(bin()).arg("setup"));
    nft_load(
        &c.t.host,
        "table ip nlforeign {\n chain out {\n  type filter hook output priority -150; policy accept;\n  ct mark set 42\n }\n}\n",
    );
    let third = snapshot(&c.t.host, &db);
    eprintln!("{}", third.trim());
    let before = top_by_uid(&c.t.host, &db);
    assert!(
        third.contains("another rule writes the conntrack mark")
            && third.contains("table ip nlforeign chain out: ct mark set"),
        "the foreign rule is said: {third}"
    );
    c.burst_with(1, 200, false);
    c.wait_closed();
    let fourth = snapshot(&c.t.host, &db);
    assert!(
        !fourth.contains("another rule writes"),
        "said once, not again: {fourth}"
    );
    let after = top_by_uid(&c.t.host, &db);
    assert!(
        !after.contains_key(&Some(42)),
        "charged by a foreign mark: {after:?}"
    );
    for uid in [alice.uid, bob.uid] {
        assert_eq!(
            before.get(&Some(uid)),
            after.get(&Some(uid)),
            "uid {uid} charged for socketless flows while a foreign rule marks"
        );
    }
}

#[test]
fn owner_mark_false_leaves_the_rule_out_and_setup_puts_it_back() {
    if !require_root("owner_mark_false_leaves_the_rule_out_and_setup_puts_it_back") {
        return;
    }
    let _serial = one_burst_at_a_time();
    let ns = Netns::new("nlcs");
    let dir = tempfile::tempdir().unwrap();
    let off = dir.path().join("off.toml");
    std::fs::write(&off, "owner_mark = false\n").unwrap();
    let setup = |config: Option<&Path>| {
        let mut c = ns.cmd(bin());
        if let Some(p) = config {
            c.arg("--config").arg(p);
        }
        let out = run(c.arg("setup"));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let table = || {
        let out = run(ns.cmd("nft").args(["list", "table", "inet", "netledger"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    const RULE: &str = "ct mark set meta skuid | 2147483648";
    const RULES: usize = 3;
    let said = setup(Some(&off));
    assert!(!table().contains(RULE), "{said}\n{}", table());
    let said = setup(None);
    assert!(said.contains("added the owner-mark rule"), "{said}");
    assert!(
        table().contains(RULE) && table().contains("ct mark 0x00000000"),
        "only an unset mark is written:\n{}",
        table()
    );
    let said = setup(None);
    assert_eq!(table().matches(RULE).count(), RULES, "added once: {said}");
    let said = setup(Some(&off));
    assert!(said.contains("removed the owner-mark rule"), "{said}");
    assert!(!table().contains(RULE), "{}", table());
    run(ns.cmd(bin()).args(["setup", "--undo"]));
}
