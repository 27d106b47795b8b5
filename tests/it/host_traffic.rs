//! Traffic between two ends on this host is local, whatever the address: a user's
//! download from a server (run by root) on the host's own public address goes over `lo`
//! and never leaves the host, so it is excluded (kept apart), charged to nobody — in
//! one-shot passes and in the daemon, over IPv4 and IPv6.
//!
//! Topology: `common::Inet`; the server listens in the host namespace on
//! 198.51.100.1:8080 and [2001:db8::1]:8080 (addresses of the host's veth).

use crate::common;

use std::path::Path;

use common::*;

/// Excluded bytes over every pass, from the `passes` table.
fn excluded_total(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT coalesce(sum(excluded_rx_bytes + excluded_tx_bytes), 0) FROM passes",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Two downloads (IPv4, IPv6) by `user` from the host's own server, each alive across a
/// call of `between` (a pass), then closed. Returns conntrack's bytes of both flows.
fn downloads_from_the_host(net: &Inet, user: &TestUser, mut between: impl FnMut()) -> u64 {
    let tb = traffic_bin();
    let mut clients: Vec<Proc> = ["198.51.100.1:8080", "[2001:db8::1]:8080"]
        .iter()
        .map(|peer| {
            let mut c = user.cmd(&net.host, &tb.path);
            c.args(["client", "tcp", peer, "1000", "250000"]);
            let mut p = Proc::spawn(&format!("client to {peer}"), c);
            p.expect("ready");
            p
        })
        .collect();
    between();
    for c in &mut clients {
        c.go();
        c.expect("done");
    }
    clients.into_iter().for_each(Proc::wait_ok);
    let flows: Vec<CtEntry> = conntrack_entries(&net.host)
        .into_iter()
        .filter(|e| e.proto == "tcp" && e.orig.dport == 8080)
        .collect();
    assert_eq!(flows.len(), 2, "{flows:?}");
    flows.iter().map(|e| e.orig.bytes + e.reply.bytes).sum()
}

#[test]
fn traffic_to_the_hosts_own_address_is_local_not_internet() {
    if !require_root("traffic_to_the_hosts_own_address_is_local_not_internet") {
        return;
    }
    let net = Inet::new("nlo", 120);
    let tb = traffic_bin();
    // root's server on the host's own addresses.
    let mut server = Proc::spawn("host server", {
        let mut c = net.host.cmd(&tb.path);
        c.args(["server", "tcp", "[::]:8080"]);
        c
    });
    server.expect("listening");
    let alice = TestUser::new("nloa");
    let dir = tempfile::tempdir().unwrap();

    // One-shot passes.
    let db = dir.path().join("timer.db");
    let snapshot = || {
        run(net.host.cmd(bin()).arg("--db").arg(&db).arg("snapshot"));
    };
    snapshot();
    let truth = downloads_from_the_host(&net, &alice, snapshot);
    snapshot();
    let got = top_by_uid(&net.host, &db);
    assert!(got.is_empty(), "nothing is internet traffic: {got:?}");
    assert_eq!(excluded_total(&db), truth, "all of it excluded local");

    // The daemon: the same downloads, charged by its passes and the DESTROY events.
    run(net.host.cmd("conntrack").arg("-F"));
    let db = dir.path().join("daemon.db");
    let daemon = Daemon::start(&net.host, &db, &["--interval", "1s"], &[]);
    let truth = downloads_from_the_host(&net, &alice, || daemon.wait_for_a_whole_pass());
    daemon.stop();
    let got = top_by_uid(&net.host, &db);
    assert!(
        got.is_empty(),
        "daemon: nothing is internet traffic: {got:?}"
    );
    assert_eq!(
        excluded_total(&db),
        truth,
        "daemon: all of it excluded local"
    );
}
