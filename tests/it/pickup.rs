//! A connection whose conntrack entry is deleted while it lives (`conntrack -D`/`-F`, an
//! early drop, a firewall reload): its next packets make the kernel pick it up in a new
//! entry, often only its closing packets, seen when the socket is already in TIME_WAIT and
//! names no owner. The new entry belongs to the owner of the connection that had the
//! 4-tuple; nothing of it is unattributed — with the daemon and with one-shot passes.
//!
//! Topology: `common::Inet`; `nl_burst` connections that download, then stay idle for
//! `--hold-ms` (when their entries are deleted), then close.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::*;

const FROM: u16 = 45300;
const N: usize = 3;

/// What the client end (198.51.100.1) of `e` sent and received, whichever way round the
/// kernel recorded it (a picked-up entry starts with whichever packet came first).
fn client_side(entries: &[CtEntry]) -> Usage {
    entries.iter().fold(Usage::default(), |u, e| {
        let (tx, rx) = if e.orig.src.to_string() == "198.51.100.1" {
            (e.orig.bytes, e.reply.bytes)
        } else {
            (e.reply.bytes, e.orig.bytes)
        };
        Usage {
            rx_bytes: u.rx_bytes + rx,
            tx_bytes: u.tx_bytes + tx,
        }
    })
}

fn ours(e: &CtEntry) -> bool {
    let port = |a: u16| (FROM..FROM + N as u16).contains(&a);
    e.proto == "tcp" && (port(e.orig.sport) || port(e.orig.dport))
}

/// `N` downloads by `user`, whose entries are deleted while they sit idle, after
/// `before_delete` ran; returns the deleted entries as the kernel had them just before.
fn downloads_with_deleted_entries(
    net: &Inet,
    user: &TestUser,
    before_delete: impl FnOnce(),
) -> Vec<CtEntry> {
    let bb = burst_bin();
    let mut c = user.cmd(&net.host, &bb.path);
    c.args(["198.51.100.2:9000", &N.to_string(), "100", "200000"])
        .args(["--bind-from", &FROM.to_string(), "--hold-ms", "3000"])
        .args(["--parallel", &N.to_string()]);
    let mut b = Proc::spawn("downloads", c);
    // Every download done and idle: the entries carry all the data.
    wait_for("the downloads", Duration::from_secs(20), || {
        let e: Vec<CtEntry> = conntrack_entries(&net.host)
            .into_iter()
            .filter(ours)
            .collect();
        (e.len() == N && e.iter().all(|e| e.reply.bytes > 200_000)).then_some(())
    });
    before_delete();
    let deleted: Vec<CtEntry> = conntrack_entries(&net.host)
        .into_iter()
        .filter(ours)
        .collect();
    run(net
        .host
        .cmd("conntrack")
        .args(["-D", "-p", "tcp", "--dport", "9000"]));
    b.expect_containing("done ");
    b.wait_ok();
    deleted
}

fn unattributed(net: &Inet, db: &Path) -> Option<Usage> {
    top_by_uid(&net.host, db).get(&None).copied()
}

#[test]
fn picked_up_entries_are_charged_to_the_connections_owner_by_the_daemon() {
    if !require_root("picked_up_entries_are_charged_to_the_connections_owner_by_the_daemon") {
        return;
    }
    let net = Inet::new("nlp", 2);
    let capture = DestroyCapture::start(&net.host);
    let alice = TestUser::new("nlpa");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let daemon = Daemon::start(&net.host, &db, &["--interval", "1s"], &[]);
    let deleted = downloads_with_deleted_entries(&net, &alice, || {});
    // The deleted entries end (their DESTROY carries their final counters); the picked-up
    // ones hold the closing packets (an ACK of 52 B each, in an entry that lingers).
    let ended = capture.wait(N, ours);
    assert_eq!(
        client_side(&ended),
        client_side(&deleted),
        "no packet between"
    );
    let picked = wait_for("the picked-up entries", Duration::from_secs(20), || {
        let e: Vec<CtEntry> = conntrack_entries(&net.host)
            .into_iter()
            .filter(ours)
            .collect();
        (e.len() == N).then_some(e)
    });
    let (a, b) = (client_side(&ended), client_side(&picked));
    let truth = Usage {
        rx_bytes: a.rx_bytes + b.rx_bytes,
        tx_bytes: a.tx_bytes + b.tx_bytes,
    };
    wait_for(
        "the picked-up entries charged",
        Duration::from_secs(30),
        || {
            let got = top_by_uid(&net.host, &db);
            (got.get(&Some(alice.uid)).copied() == Some(truth)).then_some(())
        },
    );
    daemon.stop();
    assert_eq!(unattributed(&net, &db), None, "nothing unattributed");
    let got = top_by_uid(&net.host, &db);
    assert_eq!(got.get(&Some(alice.uid)).copied(), Some(truth), "{got:?}");
}

#[test]
fn picked_up_entries_are_charged_to_the_connections_owner_by_passes() {
    if !require_root("picked_up_entries_are_charged_to_the_connections_owner_by_passes") {
        return;
    }
    let net = Inet::new("nlq", 120);
    let alice = TestUser::new("nlqa");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let snapshot = || {
        run(net.host.cmd(bin()).arg("--db").arg(&db).arg("snapshot"));
    };
    snapshot();
    // A pass sees the idle connections (their owner, all their bytes) before the deletion;
    // the next one comes after they closed, their sockets in TIME_WAIT.
    let deleted = downloads_with_deleted_entries(&net, &alice, snapshot);
    snapshot();
    let picked: Vec<CtEntry> = conntrack_entries(&net.host)
        .into_iter()
        .filter(ours)
        .collect();
    assert_eq!(picked.len(), N, "{picked:?}");
    let got = top_by_uid(&net.host, &db);
    assert_eq!(
        unattributed(&net, &db),
        None,
        "nothing unattributed: {got:?}"
    );
    let (a, b) = (client_side(&deleted), client_side(&picked));
    let truth = Usage {
        rx_bytes: a.rx_bytes + b.rx_bytes,
        tx_bytes: a.tx_bytes + b.tx_bytes,
    };
    assert_eq!(got.get(&Some(alice.uid)).copied(), Some(truth), "{got:?}");
}
