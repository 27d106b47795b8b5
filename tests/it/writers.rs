//! One writer per database, however an admin runs netledger: a second daemon is refused
//! at once naming the first; a snapshot while a daemon runs says so and charges nothing;
//! two snapshots take turns. In every case each user's totals equal the kernel's own
//! counters to the byte and the connection log has each connection once.
//!
//! Topology: `common::Inet` (host 198.51.100.1 ── veth ── inet 198.51.100.2:9000).

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

/// `netledger --db DB ARGS` in `ns`, with a deadline: a writer that should have been
/// refused at once but runs instead is a failure, not a hang.
fn netledger(ns: &Netns, db: &Path, args: &[&str], limit: Duration) -> std::process::Output {
    let mut child = ns
        .cmd(bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "netledger {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// The logged connections of `uid`, counted per local port.
fn logged_ports(ns: &Netns, db: &Path, uid: u32) -> HashMap<u64, usize> {
    let mut ports = HashMap::new();
    for c in connection_log(ns, db, &[]) {
        if c["uid"].as_u64() == Some(u64::from(uid)) {
            *ports
                .entry(c["orig"]["sport"].as_u64().unwrap())
                .or_default() += 1;
        }
    }
    ports
}

fn in_ports(from: u16, count: u16) -> impl Fn(&CtEntry) -> bool {
    move |e| {
        e.orig.src.to_string() == "198.51.100.1" && (from..from + count).contains(&e.orig.sport)
    }
}

#[test]
fn second_daemon_is_refused_and_snapshots_defer_to_the_daemon() {
    if !require_root("second_daemon_is_refused_and_snapshots_defer_to_the_daemon") {
        return;
    }
    let net = Inet::new("nlw", 2);
    let bb = burst_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let capture = DestroyCapture::start(&net.host);
    let alice = TestUser::new("nlwa");

    let daemon = Daemon::start(&net.host, &db, &["--interval", "1s"], &[]);
    // A second daemon (a hand-started one beside the service) exits 1 at once, naming
    // the first.
    let second = netledger(&net.host, &db, &["run"], Duration::from_secs(10));
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "second daemon: {err}");
    assert!(
        err.contains(&format!("pid {}", daemon.pid())) && err.lines().count() == 1,
        "second daemon must name the first in one line: {err}"
    );

    // Three ~100 kB downloads that live across the daemon's passes, with minutely-style
    // snapshots (the timer enabled too) running through them.
    let mut c = alice.cmd(&net.host, &bb.path);
    c.args(["198.51.100.2:9000", "3", "100", "100000"]).args([
        "--bind-from",
        "45100",
        "--hold-ms",
        "1500",
    ]);
    let mut b = Proc::spawn("alice burst", c);
    for _ in 0..3 {
        let o = netledger(&net.host, &db, &["snapshot"], Duration::from_secs(10));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "snapshot beside the daemon: {err}");
        assert!(
            err.contains(&format!(
                "netledger run (pid {}) is accounting",
                daemon.pid()
            )) && err.lines().count() == 1,
            "snapshot beside the daemon must say so in one line: {err}"
        );
        // The next snapshot after one of the daemon's passes (every second).
        let n = daemon.passes();
        wait_for("a pass of the daemon", Duration::from_secs(30), || {
            (daemon.passes() > n).then_some(())
        });
    }
    b.expect_containing("done ");
    b.wait_ok();

    let truth = outgoing_usage(&capture.wait(3, in_ports(45100, 3)));
    wait_for("3 logged connections", Duration::from_secs(30), || {
        let _ = conntrack_entries(&net.host); // evict expired entries: their DESTROY
        (logged_ports(&net.host, &db, alice.uid).len() >= 3).then_some(())
    });
    daemon.stop();
    let got = top_by_uid(&net.host, &db);
    assert_eq!(got.get(&Some(alice.uid)).copied(), Some(truth), "{got:?}");
    assert_eq!(got.get(&None), None, "nothing unattributed: {got:?}");
    let ports = logged_ports(&net.host, &db, alice.uid);
    assert_eq!(
        ports,
        (45100..45103).map(|p| (p, 1)).collect::<HashMap<_, _>>(),
        "each connection logged once"
    );
    let unowned = connection_log(&net.host, &db, &[])
        .into_iter()
        .filter(|c| c["uid"].is_null())
        .count();
    assert_eq!(unowned, 0, "no connection logged without its owner");
}

#[test]
fn concurrent_snapshots_take_turns_and_charge_once() {
    if !require_root("concurrent_snapshots_take_turns_and_charge_once") {
        return;
    }
    let net = Inet::new("nls", 120);
    let tb = traffic_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let bob = TestUser::new("nlsb");
    let snapshot = |args: &[&str]| {
        let mut a = vec!["snapshot", "--no-setup"];
        a.extend_from_slice(args);
        netledger(&net.host, &db, &a, Duration::from_secs(30))
    };
    assert!(snapshot(&[]).status.success());

    // A download whose socket lives across the passes.
    let mut client = Proc::spawn("bob client", {
        let mut c = bob.cmd(&net.host, &tb.path);
        c.args(["client", "tcp", "198.51.100.2:9000", "200", "300000"]);
        c
    });
    client.expect("ready");

    // A pass that stays inside its transaction for 2 s (a slow disk, a big rollup) …
    let slow = net
        .host
        .cmd(bin())
        .arg("--db")
        .arg(&db)
        .args(["snapshot", "--no-setup"])
        .env("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS", "2000")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = {
        let mut p = db.clone().into_os_string();
        p.push(".lock");
        std::path::PathBuf::from(p)
    };
    wait_for(
        "the slow pass to hold the lock",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&lock).unwrap_or_default();
            text.starts_with(&format!("{} ", slow.id())).then_some(())
        },
    );
    // … meanwhile one with a short lock timeout gives up naming it …
    let o = snapshot(&["--lock-timeout", "200ms"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("snapshot (pid {})", slow.id())),
        "names the pass it waited for: {err}"
    );
    // … and one with a long one waits its turn and charges only what came after.
    let o = snapshot(&["--lock-timeout", "20s"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let slow = slow.wait_with_output().unwrap();
    assert!(
        slow.status.success(),
        "{}",
        String::from_utf8_lossy(&slow.stderr)
    );

    client.go();
    client.expect("done");
    client.wait_ok();
    assert!(snapshot(&[]).status.success());
    let entries: Vec<CtEntry> = conntrack_entries(&net.host)
        .into_iter()
        .filter(|e| e.proto == "tcp" && e.orig.dport == 9000)
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let got = top_by_uid(&net.host, &db);
    assert_eq!(
        got.get(&Some(bob.uid)).copied(),
        Some(outgoing_usage(&entries)),
        "{got:?}"
    );
}

/// The lock is the kernel's: a writer killed with SIGKILL leaves no stale lock behind.
#[test]
fn killed_writer_leaves_no_stale_lock() {
    if !require_root("killed_writer_leaves_no_stale_lock") {
        return;
    }
    let net = Inet::new("nlk", 120);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("k.db");
    let daemon = Daemon::start(&net.host, &db, &["--interval", "60s"], &[]);
    signal(daemon.pid(), libc::SIGKILL);
    drop(daemon);
    let o = netledger(&net.host, &db, &["snapshot"], Duration::from_secs(30));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("netledger: pass "), "a pass ran: {err}");
}
