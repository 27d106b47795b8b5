//! `netledger setup --undo`: removes the nftables table and puts back the sysctls that
//! `setup`, `snapshot` and `run` changed, to the values they had, in the network namespace
//! it runs in; idempotent. Each test uses network namespaces of its own.

use crate::common;

use std::process::Output;

use common::*;

const SYSCTLS: [&str; 3] = [
    "nf_conntrack_acct",
    "nf_conntrack_events",
    "nf_conntrack_timestamp",
];

/// A namespace where the conntrack sysctls exist (the module is loaded; a table using
/// conntrack that is deleted again) and hold `values`, and no netledger table.
fn namespace(prefix: &str, values: [&str; 3]) -> Netns {
    let ns = Netns::new(prefix);
    ns.sh(
        "nft 'add table inet t; add chain inet t out { type filter hook output priority 0; }; \
         add rule inet t out ct state new'
         nft delete table inet t",
    );
    for (name, v) in SYSCTLS.iter().zip(values) {
        ns.sh(&format!("sysctl -qw net.netfilter.{name}={v}"));
    }
    ns
}

fn sysctls(ns: &Netns) -> [String; 3] {
    SYSCTLS.map(|name| {
        let o = run(ns
            .cmd("sysctl")
            .args(["-n", &format!("net.netfilter.{name}")]));
        String::from_utf8_lossy(&o.stdout).trim().to_owned()
    })
}

fn table_present(ns: &Netns) -> bool {
    ns.cmd("nft")
        .args(["list", "table", "inet", "netledger"])
        .output()
        .unwrap()
        .status
        .success()
}

fn netledger(ns: &Netns, args: &[&str]) -> Output {
    let o = ns.cmd(bin()).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "netledger {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn undo_restores_what_setup_and_the_daemon_changed() {
    if !require_root("undo_restores_what_setup_and_the_daemon_changed") {
        return;
    }
    let ns = namespace("nlua", ["0", "0", "0"]);
    let other = namespace("nlub", ["0", "0", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");

    netledger(&ns, &["setup"]);
    assert!(table_present(&ns));
    // Accounting, and start times (a reused tuple's new entry told from the saved one).
    assert_eq!(sysctls(&ns), ["1", "0", "1"]);
    // Setup again changes nothing and must not forget the values from before the first.
    netledger(&ns, &["setup"]);
    // The daemon sets events too.
    let daemon = Daemon::start(&ns, &db, &["--interval", "60s"], &[]);
    daemon.stop();
    assert_eq!(sysctls(&ns), ["1", "1", "1"]);
    // Another namespace, set up too, is not touched by the undo in this one.
    netledger(&other, &["--db", db.to_str().unwrap(), "snapshot"]);
    assert_eq!(sysctls(&other), ["1", "0", "1"]);

    let o = netledger(&ns, &["setup", "--undo"]);
    let err = stderr(&o);
    assert!(!table_present(&ns), "table removed: {err}");
    assert_eq!(sysctls(&ns), ["0", "0", "0"], "{err}");
    assert!(err.contains("table inet netledger"), "{err}");
    assert!(err.contains("net.netfilter.nf_conntrack_acct=0"), "{err}");
    assert!(err.contains("net.netfilter.nf_conntrack_events=0"), "{err}");
    assert!(
        err.contains("net.netfilter.nf_conntrack_timestamp=0"),
        "{err}"
    );

    // Idempotent: nothing left to undo, nothing changed, exit 0.
    let o = netledger(&ns, &["setup", "--undo"]);
    assert!(stderr(&o).contains("nothing to undo"), "{}", stderr(&o));
    assert_eq!(sysctls(&ns), ["0", "0", "0"]);
    assert!(!table_present(&ns));

    assert!(table_present(&other));
    assert_eq!(sysctls(&other), ["1", "0", "1"]);
    netledger(&other, &["setup", "--undo"]);
    assert!(!table_present(&other));
    assert_eq!(sysctls(&other), ["0", "0", "0"]);
}

#[test]
fn undo_leaves_values_changed_since_setup_and_ones_setup_did_not_change() {
    if !require_root("undo_leaves_values_changed_since_setup_and_ones_setup_did_not_change") {
        return;
    }
    // Accounting already on: setup leaves it, and so must the undo.
    let ns = namespace("nluc", ["1", "2", "0"]);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let daemon = Daemon::start(&ns, &db, &["--interval", "60s"], &[]);
    daemon.stop();
    assert_eq!(sysctls(&ns), ["1", "1", "1"]);
    // The admin changes timestamps after setup: theirs, not netledger's, to restore.
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_timestamp=0");
    let o = netledger(&ns, &["setup", "--undo"]);
    let err = stderr(&o);
    assert_eq!(sysctls(&ns), ["1", "2", "0"], "{err}");
    assert!(err.contains("net.netfilter.nf_conntrack_events=2"), "{err}");
    assert!(
        err.contains("nf_conntrack_timestamp"),
        "says what it left: {err}"
    );
    assert!(!table_present(&ns));
}

#[test]
fn undo_needs_cap_net_admin() {
    if !require_root("undo_needs_cap_net_admin") {
        return;
    }
    let ns = namespace("nlud", ["0", "0", "0"]);
    netledger(&ns, &["setup"]);
    let user = TestUser::new("nlud");
    let o = user
        .cmd(&ns, bin())
        .args(["setup", "--undo"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("CAP_NET_ADMIN"), "{}", stderr(&o));
    assert!(table_present(&ns));
    assert_eq!(sysctls(&ns), ["1", "0", "1"]);
}
