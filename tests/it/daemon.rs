//! `netledger run` against the real kernel, in network namespaces made here: short
//! connections charged to the byte (and what one-shot passes lose of them), event
//! overruns, and a SIGTERM in the middle of a burst.
//!
//! Topology (`common::Inet`, removed by guards): host 198.51.100.1 ── veth ── inet 198.51.100.2,
//! where `nl_traffic server tcp` answers. Users' programs run in `host` under their uids.
//! The kernel's own numbers come from `conntrack -E -e DESTROY` (final counters) or
//! `conntrack -L` (entries still present).

use crate::common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use common::*;

/// A burst of `count` connections by `user` from local ports `from..`, to the inet server.
fn burst(t: &Inet, user: &TestUser, bin: &Path, from: u16, count: usize, extra: &[&str]) -> Proc {
    let mut c = user.cmd(&t.host, bin);
    c.args(["198.51.100.2:9000", &count.to_string(), "500", "20000"])
        .args(["--bind-from", &from.to_string()])
        .args(extra);
    Proc::spawn(&format!("{} burst", user.name), c)
}

fn in_range(from: u16, count: usize) -> impl Fn(&CtEntry) -> bool {
    move |e| {
        e.orig.src.to_string() == "198.51.100.1"
            && (from..from + count as u16).contains(&e.orig.sport)
    }
}

#[test]
fn short_connections_are_exact_with_the_daemon_and_lost_by_snapshots() {
    if !require_root("short_connections_are_exact_with_the_daemon_and_lost_by_snapshots") {
        return;
    }
    let t = Inet::new("nld", 2);
    let bb = burst_bin();
    let dir = tempfile::tempdir().unwrap();
    let capture = DestroyCapture::start(&t.host);
    const N: usize = 50;

    // One-shot passes: 50 connections of ~20 kB, each open for ~20 ms, between two passes.
    let bob = TestUser::new("nldb");
    let snap_db = dir.path().join("snapshot.db");
    let snapshot = || run(t.host.cmd(bin()).arg("snapshot").arg("--db").arg(&snap_db));
    snapshot();
    let mut b = burst(&t, &bob, &bb.path, 46000, N, &["--hold-ms", "20"]);
    b.expect_containing("done ");
    b.wait_ok();
    // The flows end between two passes: gone from the table (TIME_WAIT is 2 s) before
    // the second.
    wait_entries_gone(&t.host, "bob's burst", in_range(46000, N));
    snapshot();
    let truth_b = outgoing_usage(&capture.wait(N, in_range(46000, N)));
    let got_b = top_by_uid(&t.host, &snap_db)
        .get(&Some(bob.uid))
        .copied()
        .unwrap_or_default();
    let lost = (truth_b.rx_bytes + truth_b.tx_bytes) - (got_b.rx_bytes + got_b.tx_bytes);
    eprintln!(
        "snapshot passes: {} charged rx {} tx {} of conntrack's rx {} tx {}: {lost} bytes \
         of {N} short connections lost to the user",
        bob.name, got_b.rx_bytes, got_b.tx_bytes, truth_b.rx_bytes, truth_b.tx_bytes
    );
    assert!(
        lost > 0,
        "one-shot passes lost nothing? {got_b:?} vs {truth_b:?}"
    );

    // The daemon: the same burst between two of its passes.
    let alice = TestUser::new("nlda");
    let db = dir.path().join("daemon.db");
    let daemon = Daemon::start(&t.host, &db, &["--interval", "60s"], &[]);
    let mut a = burst(&t, &alice, &bb.path, 47000, N, &["--hold-ms", "20"]);
    a.expect_containing("done ");
    a.wait_ok();
    wait_entries_gone(&t.host, "alice's burst", in_range(47000, N));
    let destroyed = capture.wait(N, in_range(47000, N));
    let truth_a = outgoing_usage(&destroyed);
    wait_for("50 logged connections", Duration::from_secs(30), || {
        let n = connection_log(&t.host, &db, &[])
            .iter()
            .filter(|c| c["uid"].as_u64() == Some(u64::from(alice.uid)))
            .count();
        (n >= N).then_some(())
    });
    let err = daemon.stop();
    let got_a = top_by_uid(&t.host, &db)
        .get(&Some(alice.uid))
        .copied()
        .unwrap_or_default();
    eprintln!(
        "daemon: {} charged rx {} tx {}, conntrack's DESTROY counters rx {} tx {}\n{}",
        alice.name,
        got_a.rx_bytes,
        got_a.tx_bytes,
        truth_a.rx_bytes,
        truth_a.tx_bytes,
        err.lines().last().unwrap_or("")
    );
    assert_eq!(
        got_a, truth_a,
        "the daemon's charges differ from conntrack's counters"
    );

    // One log row per connection, with the kernel's tuples and final counters, and the
    // connection's duration (~20 ms open), not the entry's (which adds the 2 s TIME_WAIT).
    let rows: Vec<serde_json::Value> = connection_log(&t.host, &db, &[])
        .into_iter()
        .filter(|c| c["uid"].as_u64() == Some(u64::from(alice.uid)))
        .collect();
    assert_eq!(rows.len(), N);
    for e in &destroyed {
        let r = rows
            .iter()
            .find(|r| r["orig"]["sport"].as_u64() == Some(u64::from(e.orig.sport)))
            .unwrap_or_else(|| panic!("no log row for {e:?}"));
        assert_eq!(r["direction"], "out");
        assert_eq!(r["orig"]["dst"], "198.51.100.2");
        assert_eq!(r["reply"]["src"], "198.51.100.2");
        assert_eq!(r["orig_bytes"].as_u64(), Some(e.orig.bytes));
        assert_eq!(r["reply_bytes"].as_u64(), Some(e.reply.bytes));
        // The end is dated from the expiry, in jiffies (4 ms at HZ=250): a few ms either way.
        let ms = r["duration_ms"].as_i64().unwrap();
        assert!(
            (10..2000).contains(&ms),
            "duration {ms} ms of a connection held 20 ms (TIME_WAIT is 2 s): {r}"
        );
    }
}

/// The events the daemon said it lost, summed over its overrun warnings.
fn lost_said(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter_map(|l| l.split_once("receive buffer: ")?.1.split(' ').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum()
}

/// `netledger_conntrack_events_lost_total` from the daemon's `/metrics` on
/// 127.0.0.1:`port` inside `ns` (connected from a thread that enters it).
fn scrape_lost(ns: &Netns, port: u16) -> u64 {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let mut s = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()
    })
    .join()
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    assert!(
        body.contains("# TYPE netledger_conntrack_events_lost_total counter"),
        "{body}"
    );
    body.lines()
        .find_map(|l| l.strip_prefix("netledger_conntrack_events_lost_total "))
        .unwrap_or_else(|| panic!("no lost-events sample in\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn overrun_resynchronises_and_charges_nothing_twice() {
    if !require_root("overrun_resynchronises_and_charges_nothing_twice") {
        return;
    }
    // Default TIME_WAIT: every flow of the test is still in the table at the end, so the
    // kernel's counters of all of them are the exact total to compare with.
    let t = Inet::new("nld", 120);
    let (tb, bb) = (traffic_bin(), burst_bin());
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("overrun.db");
    let (erin, frank) = (TestUser::new("nlde"), TestUser::new("nldf"));
    // A receive buffer the kernel rounds up to its minimum: a few events.
    let daemon = Daemon::start(
        &t.host,
        &db,
        &["--interval", "60s", "--metrics-listen", "127.0.0.1:9417"],
        &[("NETLEDGER_EVENT_BUFFER", "1")],
    );
    let mut long: Vec<Proc> = [("49001", "300000"), ("49002", "70000")]
        .iter()
        .map(|(port, down)| {
            let mut c = erin.cmd(&t.host, &tb.path);
            c.args([
                "client",
                "tcp",
                "198.51.100.2:9000",
                "4000",
                down,
                "--bind",
                port,
            ]);
            Proc::spawn(&format!("{} long-lived {port}", erin.name), c)
        })
        .collect();
    for p in &mut long {
        p.expect("ready");
    }
    let mut f = {
        let mut c = frank.cmd(&t.host, &bb.path);
        c.args([
            "198.51.100.2:9000",
            "400",
            "100",
            "1000",
            "--bind-from",
            "50000",
        ])
        .args(["--parallel", "4"]);
        Proc::spawn("frank burst", c)
    };
    f.expect_containing("done ");
    f.wait_ok();
    for p in &mut long {
        p.go();
    }
    for mut p in long {
        p.expect("done");
        p.wait_ok();
    }
    wait_for(
        "the daemon to report an overrun",
        Duration::from_secs(30),
        || daemon.stderr().contains("overran").then_some(()),
    );
    // The endpoint reads the daemon's own count of lost events: between what the daemon
    // had said before the scrape and what it said after it.
    let said_before = lost_said(&daemon.stderr());
    let scraped = scrape_lost(&t.host, 9417);
    let said_after = lost_said(&daemon.stderr());
    eprintln!("lost events: said {said_before}..={said_after}, scraped {scraped}");
    assert!(
        (said_before..=said_after).contains(&scraped),
        "netledger_conntrack_events_lost_total {scraped}, the daemon said {said_before}..={said_after}"
    );
    let err = daemon.stop();
    let entries = conntrack_entries(&t.host);
    let of = |lo: u16, hi: u16| {
        entries
            .iter()
            .filter(|e| (lo..=hi).contains(&e.orig.sport))
            .collect::<Vec<_>>()
    };
    let (truth_e, truth_f) = (
        outgoing_usage(of(49001, 49002)),
        outgoing_usage(of(50000, 50399)),
    );
    assert_eq!(
        of(50000, 50399).len(),
        400,
        "frank's flows are all still in the table"
    );
    let got = top_by_uid(&t.host, &db);
    let get = |k: Option<u32>| got.get(&k).copied().unwrap_or_default();
    let lost_line = err.lines().find(|l| l.contains("overran")).unwrap_or("");
    eprintln!(
        "{lost_line}\nerin {:?} (conntrack {truth_e:?}); frank {:?} + unattributed {:?} \
         (conntrack {truth_f:?})",
        get(Some(erin.uid)),
        get(Some(frank.uid)),
        get(None)
    );
    assert!(err.contains("events lost"), "{err}");
    assert_eq!(
        get(Some(erin.uid)),
        truth_e,
        "long-lived flows after an overrun"
    );
    let f_and_unattributed = Usage {
        rx_bytes: get(Some(frank.uid)).rx_bytes + get(None).rx_bytes,
        tx_bytes: get(Some(frank.uid)).tx_bytes + get(None).tx_bytes,
    };
    assert_eq!(
        f_and_unattributed, truth_f,
        "burst bytes: each charged exactly once"
    );
    // And over everything: the passes' and flushes' totals add up to conntrack's.
    let charged = bytes_in_passes(&db);
    let counted: u64 = entries.iter().map(|e| e.orig.bytes + e.reply.bytes).sum();
    assert_eq!(charged, counted, "total charged vs conntrack's counters");
}

#[test]
fn sigterm_mid_burst_then_restart_is_exact_without_duplicate_log_rows() {
    if !require_root("sigterm_mid_burst_then_restart_is_exact_without_duplicate_log_rows") {
        return;
    }
    let t = Inet::new("nld", 2);
    let bb = burst_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let capture = DestroyCapture::start(&t.host);
    let gail = TestUser::new("nldg");
    const N: usize = 200;
    let first = Daemon::start(&t.host, &db, &["--interval", "60s"], &[]);
    let mut g = burst(
        &t,
        &gail,
        &bb.path,
        51000,
        N,
        &["--hold-ms", "20", "--parallel", "2"],
    );
    g.expect("progress 60");
    // Freeze the client so no connection is born while no daemon listens, then stop the
    // daemon while its events still stream in.
    signal(g.pid(), libc::SIGSTOP);
    let err = first.stop();
    eprintln!("first daemon: {}", err.lines().last().unwrap_or(""));
    let second = Daemon::start(&t.host, &db, &["--interval", "60s"], &[]);
    signal(g.pid(), libc::SIGCONT);
    g.expect_containing("done ");
    g.wait_ok();
    wait_entries_gone(&t.host, "gail's burst", in_range(51000, N));
    let destroyed = capture.wait(N, in_range(51000, N));
    // No wait for the daemon: the kernel queued these DESTROY events on its socket when
    // it sent them to the capture, and on SIGTERM the daemon drains its queue.
    let err = second.stop();
    eprintln!("second daemon: {}", err.lines().last().unwrap_or(""));
    let truth = outgoing_usage(&destroyed);
    let got = top_by_uid(&t.host, &db);
    eprintln!(
        "{}: {:?}, conntrack {truth:?}",
        gail.name,
        got.get(&Some(gail.uid))
    );
    assert_eq!(got.get(&Some(gail.uid)).copied().unwrap_or_default(), truth);
    assert_eq!(got.get(&None), None, "nothing unattributed");

    let rows: Vec<serde_json::Value> = connection_log(&t.host, &db, &[])
        .into_iter()
        .filter(|c| c["uid"].as_u64() == Some(u64::from(gail.uid)))
        .collect();
    let ports: HashSet<u64> = rows
        .iter()
        .map(|r| r["orig"]["sport"].as_u64().unwrap())
        .collect();
    eprintln!(
        "{} of {N} connections logged (those that expired while no daemon listened are not)",
        rows.len()
    );
    assert_eq!(ports.len(), rows.len(), "a connection logged twice");
    assert!(rows.len() > N / 2, "only {} connections logged", rows.len());
    for r in &rows {
        let e = destroyed
            .iter()
            .find(|e| Some(u64::from(e.orig.sport)) == r["orig"]["sport"].as_u64())
            .unwrap();
        assert_eq!(r["orig_bytes"].as_u64(), Some(e.orig.bytes));
        assert_eq!(r["reply_bytes"].as_u64(), Some(e.reply.bytes));
    }
}

#[test]
fn locked_database_delays_the_writes_and_loses_nothing() {
    if !require_root("locked_database_delays_the_writes_and_loses_nothing") {
        return;
    }
    let t = Inet::new("nld", 2);
    let bb = burst_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("locked.db");
    let capture = DestroyCapture::start(&t.host);
    let hana = TestUser::new("nldh");
    const N: usize = 30;
    let daemon = Daemon::start(
        &t.host,
        &db,
        &["--interval", "60s", "--lock-timeout", "100ms"],
        &[],
    );
    // Another writer (a backup, a long report) holds the write lock while the
    // connections come and go: the daemon's flushes fail and must be retried.
    let locker = rusqlite::Connection::open(&db).unwrap();
    locker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let mut h = burst(&t, &hana, &bb.path, 54000, N, &["--hold-ms", "20"]);
    h.expect_containing("done ");
    h.wait_ok();
    wait_entries_gone(&t.host, "hana's burst", in_range(54000, N));
    let destroyed = capture.wait(N, in_range(54000, N));
    wait_for("a failed flush", Duration::from_secs(30), || {
        daemon.stderr().contains("kept in memory").then_some(())
    });
    locker.execute_batch("COMMIT").unwrap();
    drop(locker);
    wait_for(
        "the connections logged after the lock",
        Duration::from_secs(30),
        || {
            let n = connection_log(&t.host, &db, &[])
                .iter()
                .filter(|c| c["uid"].as_u64() == Some(u64::from(hana.uid)))
                .count();
            (n >= N).then_some(())
        },
    );
    daemon.stop();
    let got = top_by_uid(&t.host, &db)
        .get(&Some(hana.uid))
        .copied()
        .unwrap_or_default();
    assert_eq!(
        got,
        outgoing_usage(&destroyed),
        "charges after a locked database"
    );
}

#[test]
fn run_without_cap_net_admin_names_the_capability() {
    if !require_root("run_without_cap_net_admin_names_the_capability") {
        return;
    }
    let t = Inet::new("nld", 120);
    let ivan = TestUser::new("nldi");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let out = ivan
        .cmd(&t.host, bin())
        .arg("--db")
        .arg(dir.path().join("ivan.db"))
        .args(["run", "--no-setup"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
}

/// A server that lives on gets every connection named, however short: the namer looks for
/// an accepted connection first in the processes holding the listener that accepted it
/// (issue 30). The connections come right after another user's, whose walk of every
/// process makes the next one wait 250 ms: before, the first connections of a server the
/// namer had not met were logged without a program.
#[test]
fn a_server_up_all_along_has_every_short_connection_named() {
    if !require_root("a_server_up_all_along_has_every_short_connection_named") {
        return;
    }
    let t = Inet::new("nldn", 2);
    let (tb, bb) = (traffic_bin(), burst_bin());
    let dir = tempfile::tempdir().unwrap();
    let capture = DestroyCapture::start(&t.host);
    let (bob, carol) = (TestUser::new("nldnb"), TestUser::new("nldnc"));
    let mut server = Proc::spawn("carol's server", {
        let mut c = carol.cmd(&t.host, &tb.path);
        c.args(["server", "tcp", "198.51.100.1:9100"]);
        c
    });
    server.expect("listening");
    let db = dir.path().join("named.db");
    let daemon = Daemon::start(&t.host, &db, &["--interval", "60s"], &[]);

    // Bob's connection: the namer walks every process for it, none is due for 250 ms.
    let mut b = burst(&t, &bob, &bb.path, 44000, 1, &[]);
    b.expect_containing("done ");
    b.wait_ok();
    // At once, 40 connections to carol's server, 30-120 ms each, four at a time.
    const N: usize = 40;
    let clients: Vec<Proc> = [30, 60, 90, 120]
        .iter()
        .enumerate()
        .map(|(i, hold)| {
            let mut c = t.inet.cmd(&bb.path);
            c.args(["198.51.100.1:9100", &(N / 4).to_string(), "1000", "30000"])
                .args(["--bind-from", &(52000 + i * N / 4).to_string()])
                .args(["--hold-ms", &hold.to_string()]);
            Proc::spawn(&format!("inet clients {hold} ms"), c)
        })
        .collect();
    for mut c in clients {
        c.expect_containing("done ");
        c.wait_ok();
    }
    let ours =
        |e: &CtEntry| e.orig.dport == 9100 && (52000..52000 + N as u16).contains(&e.orig.sport);
    wait_entries_gone(&t.host, "the connections to carol's server", ours);
    let destroyed = capture.wait(N, ours);
    wait_for("40 logged connections", Duration::from_secs(30), || {
        let n = connection_log(&t.host, &db, &["--port", "9100"]).len();
        (n >= N).then_some(())
    });
    daemon.stop();
    let rows = connection_log(&t.host, &db, &["--user", &carol.name]);
    assert_eq!(rows.len(), N, "{rows:?}");
    let unnamed: Vec<_> = rows
        .iter()
        .filter(|r| r["program"] != "nl_traffic")
        .collect();
    assert!(
        unnamed.is_empty(),
        "{} of {N} connections to a server up all along logged without its program: {unnamed:?}",
        unnamed.len()
    );
    // And charged to carol to the byte (incoming: rx is the original direction).
    let truth = destroyed.iter().fold(Usage::default(), |u, e| Usage {
        rx_bytes: u.rx_bytes + e.orig.bytes,
        tx_bytes: u.tx_bytes + e.reply.bytes,
    });
    let got = top_by_uid(&t.host, &db)
        .get(&Some(carol.uid))
        .copied()
        .unwrap_or_default();
    assert_eq!(got, truth);
}
