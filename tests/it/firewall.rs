//! netledger and the admin's firewall (issue 25), with real nft, real traffic and the
//! kernel's own counters, in namespaces the tests make:
//! - the ruleset round trip (`nft list ruleset > f && nft -c -f f && nft -f f`) with the
//!   owner-mark rules installed, on this machine's nft: it must load back (nft ≥ 1.0.8),
//!   or `setup` must say it will not and the safe way to save must work (nft ≤ 1.0.7);
//! - a `flush ruleset` and a reload of Debian's default `/etc/nftables.conf` while the
//!   daemon runs: the table is back within a second, said in one line, counted in the
//!   metrics, and a download after each is charged to the byte;
//! - a timer pass after its table was flushed says how long accounting may have been off;
//! - accounting switched off and a notrack rule: said once, counted, and what they cost
//!   measured against nftables counters of the same traffic.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Debian 12's default `/etc/nftables.conf`: `flush ruleset`, then an empty `inet filter`.
const DEBIAN_CONF: &str = include_str!("../../fixtures/nftables/debian-12-nftables.conf");

/// A table laid out as firewalld makes it, loaded as `firewall-cmd --reload` does (its
/// table deleted and made again); see the file for where it comes from.
const FIREWALLD_LIKE: &str = include_str!("../../fixtures/nftables/firewalld-like.nft");

/// The documented way to save the admin's own tables only (docs/operations.md, "netledger
/// and your firewall").
const SAVE_OWN_TABLES: &str = "{ echo 'flush ruleset'; nft list tables | grep -v '^table inet netledger$' | while read -r _ family name; do nft list table \"$family\" \"$name\"; done; }";

fn nft_version() -> (u32, u32, u32) {
    let out = run(Command::new("nft").arg("--version"));
    netledger::prereq::firewall::parse_nft_version(&String::from_utf8_lossy(&out.stdout))
        .expect("nft --version")
}

/// `nft ARGS` in `ns`: (success, stdout, stderr).
fn nft(ns: &Netns, args: &[&str]) -> (bool, String, String) {
    let out = ns.cmd("nft").args(args).output().expect("nft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Load `text` with `nft -f` in `ns`; must succeed.
fn nft_load(ns: &Netns, text: &str) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), text).unwrap();
    let (ok, _, err) = nft(ns, &["-f", f.path().to_str().unwrap()]);
    assert!(ok, "nft -f failed: {err}\n{text}");
}

/// The bytecode of table `inet netledger`, without the handles (which a reload changes).
fn bytecode(ns: &Netns) -> String {
    let (ok, out, err) = nft(
        ns,
        &["--debug=netlink", "list", "table", "inet", "netledger"],
    );
    assert!(ok, "{err}");
    out.lines()
        .take_while(|l| !l.starts_with("table "))
        .map(|l| {
            if l.starts_with("inet netledger ") {
                // "inet netledger output 5 3": table, family, chain, then handles.
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn saved_ruleset_loads_back_or_setup_says_how_to_save() {
    if !require_root("saved_ruleset_loads_back_or_setup_says_how_to_save") {
        return;
    }
    let ns = Netns::new("nlfr");
    // The admin's firewall first, as Debian boots it; then netledger.
    nft_load(&ns, DEBIAN_CONF);
    let setup = run(ns.cmd(bin()).arg("setup"));
    let said = String::from_utf8_lossy(&setup.stderr).into_owned();
    let (ok, saved, err) = nft(&ns, &["list", "ruleset"]);
    assert!(ok, "{err}");
    assert!(saved.contains("ct mark set meta skuid"), "{saved}");
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &saved).unwrap();
    let path = file.path().to_str().unwrap();
    let version = nft_version();
    eprintln!("nft {version:?}; setup said:\n{said}");
    let (checked, _, check_err) = nft(&ns, &["-c", "-f", path]);
    if version >= (1, 0, 8) {
        assert!(
            checked,
            "nft -c -f of the saved ruleset failed: {check_err}"
        );
        assert!(!said.contains("cannot load back"), "{said}");
        // Loaded back as a boot would (an empty ruleset first): the same rules, to the
        // expression, as netledger made them.
        let before = bytecode(&ns);
        let fresh = Netns::new("nlfr");
        let (loaded, _, err) = nft(&fresh, &["-f", path]);
        assert!(loaded, "nft -f of the saved ruleset failed: {err}");
        assert_eq!(bytecode(&fresh), before);
        assert!(before.contains("[ meta load skuid => reg 1 ]"), "{before}");
    } else {
        // This nft cannot read back what it prints: the file fails as a whole, and setup
        // said so, with the way out.
        assert!(
            !checked,
            "nft {version:?} loaded the owner-mark rules back?"
        );
        assert!(check_err.contains("datatype mismatch"), "{check_err}");
        assert!(
            said.contains("cannot load back the owner-mark rules")
                && said.contains("save only your own tables"),
            "setup did not warn:\n{said}"
        );
        // It says so again at every setup, not only the first.
        let again = run(ns.cmd(bin()).arg("setup"));
        assert!(String::from_utf8_lossy(&again.stderr).contains("cannot load back"));
    }
    // The documented way to save works on every version: the admin's tables, not netledger's.
    let own = ns.sh(SAVE_OWN_TABLES);
    let own = String::from_utf8_lossy(&own.stdout).into_owned();
    assert!(own.starts_with("flush ruleset\n"), "{own}");
    assert!(own.contains("table inet filter"), "{own}");
    assert!(!own.contains("netledger"), "{own}");
    std::fs::write(file.path(), &own).unwrap();
    let (ok, _, err) = nft(&ns, &["-c", "-f", path]);
    assert!(ok, "the saved own tables do not load: {err}\n{own}");
}

/// A download of `down` bytes (twice: the client's two requests) by `user` from the inet
/// server.
fn download(t: &Inet, user: &TestUser, tb: &Path, down: u64) {
    let mut c = Proc::spawn("download", {
        let mut c = user.cmd(&t.host, tb);
        c.args([
            "client",
            "tcp",
            "198.51.100.2:9000",
            "100",
            &down.to_string(),
        ]);
        c
    });
    c.expect("ready");
    c.go();
    c.expect("done");
    c.wait_ok();
}

/// `netledger metrics` of `db`, the value of `series` (0 when absent).
fn metric(ns: &Netns, db: &Path, series: &str) -> f64 {
    let out = run(ns.cmd(bin()).arg("--db").arg(db).arg("metrics"));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Wait until table `inet netledger` is back with its owner-mark rules.
fn wait_table_back(ns: &Netns) {
    wait_for("table inet netledger back", Duration::from_secs(5), || {
        let (ok, out, _) = nft(ns, &["list", "table", "inet", "netledger"]);
        (ok && out.matches("ct mark set meta skuid").count() == 3).then_some(())
    });
}

#[test]
fn flush_and_reload_while_the_daemon_runs_are_put_back_and_charged_exactly() {
    if !require_root("flush_and_reload_while_the_daemon_runs_are_put_back_and_charged_exactly") {
        return;
    }
    let t = Inet::new("nlfd", 2);
    let tb = traffic_bin();
    let alice = TestUser::new("nlfa");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    let capture = DestroyCapture::start(&t.host);
    let daemon = Daemon::start(&t.host, &db, &["--interval", "1s"], &[]);
    let to_server = |e: &CtEntry| e.orig.dport == 9000;

    // 1. `nft flush ruleset`: the table is gone, then back, said in one line.
    let t0 = std::time::Instant::now();
    let (ok, _, err) = nft(&t.host, &["flush", "ruleset"]);
    assert!(ok, "{err}");
    wait_for(
        "the daemon's line about the flush",
        Duration::from_secs(5),
        || daemon.stderr().contains("was deleted").then_some(()),
    );
    wait_table_back(&t.host);
    eprintln!("table back {:?} after the flush", t0.elapsed());
    download(&t, &alice, &tb.path, 2_000_000);

    // 1b. Its chains emptied (`nft flush chain`) and the owner-mark rules deleted: put back.
    let (ok, _, err) = nft(&t.host, &["flush", "chain", "inet", "netledger", "input"]);
    assert!(ok, "{err}");
    wait_for(
        "the daemon's line about the chain",
        Duration::from_secs(5),
        || {
            daemon
                .stderr()
                .contains("lost a chain or its ct rule")
                .then_some(())
        },
    );
    let (ok, _, err) = nft(&t.host, &["flush", "chain", "inet", "netledger", "output"]);
    assert!(ok, "{err}");
    wait_table_back(&t.host);
    let (_, table, _) = nft(&t.host, &["list", "table", "inet", "netledger"]);
    assert_eq!(table.matches("ct state new").count(), 2, "{table}");

    // The next pass's line names them.
    daemon.wait_for_a_whole_pass();
    let passes = daemon.stderr();
    let line = passes
        .lines()
        .find(|l| l.contains("(run, ") && l.contains("; accounting gaps since the last pass: "))
        .unwrap_or_else(|| panic!("no pass line names the gaps:\n{passes}"));
    assert!(line.contains("table-gone "), "{line}");

    // 2. Debian's default configuration loaded (`systemctl restart nftables`).
    nft_load(&t.host, DEBIAN_CONF);
    wait_for(
        "the daemon's line about the reload",
        Duration::from_secs(5),
        || (daemon.stderr().matches("was deleted").count() >= 2).then_some(()),
    );
    wait_table_back(&t.host);
    let (_, tables, _) = nft(&t.host, &["list", "tables"]);
    assert!(tables.contains("table inet filter"), "{tables}");
    download(&t, &alice, &tb.path, 3_000_000);

    // Two connections (a client makes its two requests on one), each ended: their DESTROY
    // counters are the truth.
    let destroyed = capture.wait(2, to_server);
    wait_entries_gone(&t.host, "the downloads", to_server);
    wait_for("2 logged connections", Duration::from_secs(30), || {
        (connection_log(&t.host, &db, &[]).len() >= 2).then_some(())
    });
    let err = daemon.stop();
    let truth = outgoing_usage(&destroyed);
    let got = top_by_uid(&t.host, &db);
    eprintln!(
        "alice: charged {:?}, conntrack {truth:?}",
        got.get(&Some(alice.uid))
    );
    assert!(
        truth.rx_bytes > 10_000_000,
        "conntrack did not count: {truth:?}"
    );
    assert_eq!(got.get(&Some(alice.uid)).copied(), Some(truth));
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("nftables table inet netledger"))
        .collect();
    // The flush, each chain emptied, the reload: one line each.
    assert_eq!(lines.len(), 4, "one line per deletion:\n{err}");
    for l in &lines {
        assert!(l.contains("by nft (pid "), "{l}");
        // Put back within a second of the kernel's notification.
        let ms: u64 = l
            .split("put back after ")
            .nth(1)
            .and_then(|r| r.split(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no time in {l}"));
        assert!(ms < 1000, "{l}");
    }
    assert_eq!(
        metric(
            &t.host,
            &db,
            "netledger_accounting_gaps_total{cause=\"table-gone\"}"
        ),
        4.0
    );
    let secs = metric(
        &t.host,
        &db,
        "netledger_accounting_gap_seconds_total{cause=\"table-gone\"}",
    );
    assert!(secs > 0.0 && secs < 4.0, "gap seconds {secs}");
}

#[test]
fn a_timer_pass_says_how_long_its_table_was_gone() {
    if !require_root("a_timer_pass_says_how_long_its_table_was_gone") {
        return;
    }
    let ns = Netns::new("nlft");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    // As the shipped timer runs: setup as root, then the pass without setup.
    let tick = || {
        let s = run(ns.cmd(bin()).arg("setup"));
        let p = run(ns
            .cmd(bin())
            .arg("--db")
            .arg(&db)
            .args(["snapshot", "--no-setup"]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&s.stderr),
            String::from_utf8_lossy(&p.stderr)
        )
    };
    let first = tick();
    assert!(!first.contains("may have been off"), "{first}");
    std::thread::sleep(Duration::from_millis(1100));
    let (ok, _, err) = nft(&ns, &["flush", "ruleset"]);
    assert!(ok, "{err}");
    let after = tick();
    assert!(after.contains("was deleted (put back now)"), "{after}");
    let line = after
        .lines()
        .find(|l| l.contains("accounting may have been off for up to"))
        .unwrap_or_else(|| panic!("the pass did not say how long:\n{after}"));
    assert!(line.contains("between the last pass"), "{line}");
    // Said and counted once, not at every later pass.
    let later = tick();
    assert!(!later.contains("may have been off"), "{later}");
    assert_eq!(
        metric(
            &ns,
            &db,
            "netledger_accounting_gaps_total{cause=\"table-gone\"}"
        ),
        1.0
    );

    // Accounting switched off by someone: setup switches it on again, the pass says how
    // long it may have been off.
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_acct=0");
    let acct = tick();
    assert!(
        acct.contains("had been switched off since netledger set it up"),
        "{acct}"
    );
    assert!(
        acct.contains("conntrack accounting had been switched off")
            && acct.contains("accounting may have been off for up to"),
        "{acct}"
    );
    assert_eq!(
        metric(
            &ns,
            &db,
            "netledger_accounting_gaps_total{cause=\"acct-off\"}"
        ),
        1.0
    );

    // Deleted and made again by someone else (the table without netledger's rules, as
    // `contrib/netledger.nft` holds it): another handle.
    let (ok, _, err) = nft(&ns, &["delete", "table", "inet", "netledger"]);
    assert!(ok, "{err}");
    nft_load(&ns, include_str!("../../contrib/netledger.nft"));
    let again = tick();
    assert!(again.contains("deleted and made again"), "{again}");
    assert_eq!(
        metric(
            &ns,
            &db,
            "netledger_accounting_gaps_total{cause=\"table-recreated\"}"
        ),
        1.0
    );

    // Flushed while no daemon ran: the daemon's start says it as a timer's pass does.
    let (ok, _, err) = nft(&ns, &["flush", "ruleset"]);
    assert!(ok, "{err}");
    let daemon = Daemon::start(&ns, &db, &["--interval", "60s"], &[]);
    let err = daemon.stop();
    assert!(
        err.contains("was gone (deleted") && err.contains("accounting may have been off for up to"),
        "{err}"
    );
    assert_eq!(
        metric(
            &ns,
            &db,
            "netledger_accounting_gaps_total{cause=\"table-gone\"}"
        ),
        2.0
    );
}

/// Bytes of the download traffic as nftables counts it in `ns`'s table `ip truth`: the IP
/// length of every packet to and from the inet server, as conntrack would count them.
fn truth_bytes(ns: &Netns) -> u64 {
    let (ok, out, err) = nft(ns, &["-j", "list", "table", "ip", "truth"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .flat_map(|r| r["expr"].as_array().unwrap().iter())
        .filter_map(|e| e.get("counter")?.get("bytes")?.as_u64())
        .sum()
}

fn alice_total(ns: &Netns, db: &Path, uid: u32) -> u64 {
    top_by_uid(ns, db)
        .get(&Some(uid))
        .map_or(0, |u| u.rx_bytes + u.tx_bytes)
}

#[test]
fn accounting_off_and_notrack_are_said_counted_and_their_cost_measured() {
    if !require_root("accounting_off_and_notrack_are_said_counted_and_their_cost_measured") {
        return;
    }
    let t = Inet::new("nlfo", 2);
    let tb = traffic_bin();
    let alice = TestUser::new("nlfo");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    nft_load(
        &t.host,
        "table ip truth {
            chain o { type filter hook output priority 10; ip daddr 198.51.100.2 tcp dport 9000 counter; }
            chain i { type filter hook input priority 10; ip saddr 198.51.100.2 tcp sport 9000 counter; }
        }",
    );
    let daemon = Daemon::start(&t.host, &db, &["--interval", "1s"], &[]);
    let to_server = |e: &CtEntry| e.orig.dport == 9000;

    // 1. Accounting switched off by someone: said at the next pass; a download then is
    //    charged nothing (its entry has no counters).
    t.host.sh("sysctl -qw net.netfilter.nf_conntrack_acct=0");
    wait_for(
        "the daemon's line about accounting",
        Duration::from_secs(10),
        || {
            daemon
                .stderr()
                .contains("accounting was switched off")
                .then_some(())
        },
    );
    let t0 = truth_bytes(&t.host);
    download(&t, &alice, &tb.path, 1_000_000);
    wait_tcp_closed(&t.host);
    let acct_cost = truth_bytes(&t.host) - t0;
    t.host.sh("sysctl -qw net.netfilter.nf_conntrack_acct=1");
    wait_entries_gone(&t.host, "the download without counters", to_server);
    daemon.wait_for_a_whole_pass();
    let charged_acct = alice_total(&t.host, &db, alice.uid);

    // 2. A notrack rule covering the traffic: said when it is added; a download then has
    //    no conntrack entry at all.
    nft_load(
        &t.host,
        "table ip raw {
            chain pre { type filter hook prerouting priority raw; ip saddr 198.51.100.2 tcp sport 9000 notrack; }
            chain out { type filter hook output priority raw; ip daddr 198.51.100.2 tcp dport 9000 notrack; }
        }",
    );
    wait_for(
        "the daemon's line about notrack",
        Duration::from_secs(5),
        || daemon.stderr().contains("a notrack rule").then_some(()),
    );
    let t1 = truth_bytes(&t.host);
    download(&t, &alice, &tb.path, 1_000_000);
    let notrack_cost = truth_bytes(&t.host) - t1;
    assert!(conntrack_entries(&t.host).iter().all(|e| !to_server(e)));
    daemon.wait_for_a_whole_pass();
    let charged_notrack = alice_total(&t.host, &db, alice.uid) - charged_acct;

    // 3. Both undone: counted again, to the byte.
    let (ok, _, err) = nft(&t.host, &["delete", "table", "ip", "raw"]);
    assert!(ok, "{err}");
    let capture = DestroyCapture::start(&t.host);
    download(&t, &alice, &tb.path, 1_000_000);
    let truth = outgoing_usage(&capture.wait(1, to_server));
    wait_for("the last download charged", Duration::from_secs(30), || {
        let c = alice_total(&t.host, &db, alice.uid);
        (c > charged_acct + charged_notrack).then_some(())
    });
    let err = daemon.stop();
    let charged_after = alice_total(&t.host, &db, alice.uid) - charged_acct - charged_notrack;
    eprintln!(
        "accounting off: {acct_cost} B of a 2 MB download (nftables counters), {charged_acct} B \
         charged; notrack: {notrack_cost} B, {charged_notrack} B charged; after: {charged_after} \
         B charged, conntrack {} B",
        truth.rx_bytes + truth.tx_bytes
    );
    assert!(acct_cost > 2_000_000 && notrack_cost > 2_000_000);
    assert_eq!((charged_acct, charged_notrack), (0, 0));
    assert_eq!(charged_after, truth.rx_bytes + truth.tx_bytes);
    assert_eq!(
        err.matches("accounting was switched off").count(),
        1,
        "{err}"
    );
    assert_eq!(err.matches("a notrack rule").count(), 1, "{err}");
    for cause in ["acct-off", "notrack"] {
        let series = format!("netledger_accounting_gaps_total{{cause=\"{cause}\"}}");
        assert_eq!(metric(&t.host, &db, &series), 1.0, "{series}");
    }
}

/// What an admin's host carries besides netledger, loaded in `ns`: Debian's default
/// configuration with a few filter rules, a firewalld-like table, iptables-nft rules, a
/// Docker-like set of NAT and filter chains (as dockerd writes them through iptables-nft),
/// and iptables-legacy rules.
fn admins_firewall(ns: &Netns) {
    nft_load(
        ns,
        &DEBIAN_CONF.replace(
            "type filter hook input priority filter;",
            "type filter hook input priority filter; ct state established,related accept; \
             iif lo accept; tcp sport 9000 accept",
        ),
    );
    nft_load(ns, FIREWALLD_LIKE);
    ns.sh(
        "iptables-nft -A OUTPUT -p tcp --dport 9000 -j ACCEPT
         iptables-nft -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
         iptables-nft -t mangle -A OUTPUT -p tcp --dport 9000 -j MARK --set-mark 7
         iptables-nft -t nat -N DOCKER
         iptables-nft -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
         iptables-nft -t nat -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
         iptables-nft -t nat -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
         iptables-nft -t nat -A DOCKER -i docker0 -j RETURN
         iptables-nft -t nat -A DOCKER ! -i docker0 -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
         iptables-nft -N DOCKER-USER
         iptables-nft -N DOCKER
         iptables-nft -P FORWARD DROP
         iptables-nft -A FORWARD -j DOCKER-USER
         iptables-nft -A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
         iptables-nft -A FORWARD -o docker0 -j DOCKER
         iptables-nft -A DOCKER-USER -j RETURN
         iptables-nft -A DOCKER -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp --dport 80 -j ACCEPT
         iptables-legacy -A OUTPUT -p tcp --dport 9000 -j ACCEPT
         iptables-legacy -A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT",
    );
}

/// The admin's rulesets, nftables and iptables-legacy; `stateless` leaves out counters.
fn rulesets(ns: &Netns, stateless: bool) -> String {
    let args: &[&str] = if stateless {
        &["-s", "list", "ruleset"]
    } else {
        &["list", "ruleset"]
    };
    let (ok, out, err) = nft(ns, args);
    assert!(ok, "{err}");
    let legacy = ns.sh("iptables-legacy -S; iptables-legacy -t nat -S");
    format!("{out}\n{}", String::from_utf8_lossy(&legacy.stdout))
}

#[test]
fn coexists_with_admins_rulesets_and_undo_leaves_them_as_they_were() {
    if !require_root("coexists_with_admins_rulesets_and_undo_leaves_them_as_they_were") {
        return;
    }
    let t = Inet::new("nlfc", 2);
    let tb = traffic_bin();
    let alice = TestUser::new("nlfc");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("n.db");
    // The admin's firewall, with netledger not there yet.
    run(t.host.cmd(bin()).args(["setup", "--undo"]));
    admins_firewall(&t.host);
    let before = rulesets(&t.host, false);
    assert!(
        before.contains("DOCKER") && before.contains("table inet filter"),
        "{before}"
    );

    // Set up and undone at once: the admin's ruleset byte for byte, counters included.
    let said = run(t.host.cmd(bin()).arg("setup"));
    let said = String::from_utf8_lossy(&said.stderr).into_owned();
    assert!(!said.contains("another rule writes"), "{said}");
    run(t.host.cmd(bin()).args(["setup", "--undo"]));
    assert_eq!(rulesets(&t.host, false), before);

    // Set up again, the daemon running, traffic through every table: exact.
    let before_stateless = rulesets(&t.host, true);
    run(t.host.cmd(bin()).arg("setup"));
    let capture = DestroyCapture::start(&t.host);
    let daemon = Daemon::start(&t.host, &db, &["--interval", "60s"], &[]);
    download(&t, &alice, &tb.path, 2_000_000);
    // The admin reloads iptables rules (iptables-nft-restore replaces its tables) and
    // Debian's configuration; netledger's table stays or comes back.
    t.host.sh("iptables-nft-save | iptables-nft-restore");
    admins_firewall_reload(&t.host);
    wait_table_back(&t.host);
    download(&t, &alice, &tb.path, 2_000_000);
    let to_server = |e: &CtEntry| e.orig.dport == 9000;
    let truth = outgoing_usage(&capture.wait(2, to_server));
    wait_entries_gone(&t.host, "the downloads", to_server);
    wait_for("2 logged connections", Duration::from_secs(30), || {
        (connection_log(&t.host, &db, &[]).len() >= 2).then_some(())
    });
    let err = daemon.stop();
    let got = top_by_uid(&t.host, &db);
    eprintln!(
        "alice: charged {:?}, conntrack {truth:?}",
        got.get(&Some(alice.uid))
    );
    assert!(truth.rx_bytes > 4_000_000, "{truth:?}");
    assert_eq!(got.get(&Some(alice.uid)).copied(), Some(truth), "{err}");
    assert!(!err.contains("owner marks not used: another rule"), "{err}");

    // Undone: the admin's ruleset as it is now (they reloaded it) less netledger's table,
    // byte for byte (counters aside: traffic moved them).
    let with_netledger = rulesets(&t.host, true);
    let start = with_netledger
        .find("table inet netledger {")
        .expect("netledger's table");
    let end = start + with_netledger[start..].find("\n}\n").unwrap() + 3;
    let expected = format!("{}{}", &with_netledger[..start], &with_netledger[end..]);
    run(t.host.cmd(bin()).args(["setup", "--undo"]));
    assert_eq!(rulesets(&t.host, true), expected);
    assert_ne!(expected, before_stateless, "the reloads changed nothing?");
}

/// `firewall-cmd --reload`, then `systemctl restart nftables` with the admin's
/// configuration, then their iptables rules again (as iptables-persistent would restore
/// them), all while netledger runs.
fn admins_firewall_reload(ns: &Netns) {
    // `firewall-cmd --reload` first: only its own table.
    nft_load(ns, FIREWALLD_LIKE);
    let saved = ns.sh("iptables-nft-save");
    nft_load(ns, DEBIAN_CONF);
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), &saved.stdout).unwrap();
    run(ns.cmd("iptables-nft-restore").arg(f.path()));
}
