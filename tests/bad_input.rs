//! Bad input gets a clear error and loses nothing: corrupt, locked, unwritable and full
//! databases, accounting switched off, no CAP_NET_ADMIN, usage errors. Each runs the real
//! binary inside a network namespace of its own.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use clap::CommandFactory;
use common::*;

/// A namespace where conntrack tracks and counts (what `netledger setup` does), made by
/// hand so the tests can switch pieces off.
fn tracking_ns(prefix: &str) -> Netns {
    let ns = Netns::new(prefix);
    ns.sh(
        "nft 'add table inet t; add chain inet t out { type filter hook output priority 0; }; \
         add rule inet t out ct state new'
         sysctl -qw net.netfilter.nf_conntrack_acct=1",
    );
    ns
}

fn netledger(ns: &Netns, db: &Path, args: &[&str]) -> Output {
    ns.cmd(bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with exit code 1 and exactly one line on stderr containing `want`.
fn assert_fails_with(o: &Output, want: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "exit code; stderr: {err}");
    assert!(err.contains(want), "stderr lacks {want:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err}");
}

fn passes(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM passes", [], |r| r.get(0))
        .unwrap()
}

/// Some loopback traffic, as root, so a pass has rows to write.
fn loopback_traffic(ns: &Netns, port: u16) {
    let tb = traffic_bin();
    let mut server = Proc::spawn("server", {
        let mut c = ns.cmd(&tb.path);
        c.args(["serve-once", "tcp", &format!("127.0.0.1:{port}")]);
        c
    });
    server.expect("listening");
    let mut client = Proc::spawn("client", {
        let mut c = ns.cmd(&tb.path);
        c.args([
            "client",
            "tcp",
            &format!("127.0.0.1:{port}"),
            "1000",
            "50000",
        ]);
        c
    });
    client.expect("ready");
    client.go();
    client.expect("done");
    client.wait_ok();
    server.wait_ok();
}

#[test]
fn cli_definition_is_consistent() {
    netledger::cli::Cli::command().debug_assert();
}

#[test]
fn usage_error_exits_2() {
    let o = Command::new(bin())
        .args(["top", "--by", "colour"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn db_flag_is_global_and_top_without_database_says_run_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    for args in [
        vec!["--db".as_ref(), db.as_os_str(), "top".as_ref()],
        vec!["top".as_ref(), "--db".as_ref(), db.as_os_str()],
    ] {
        let o = Command::new(bin()).args(args).output().unwrap();
        assert_fails_with(&o, "run `netledger snapshot` first");
    }
    let o = Command::new(bin())
        .arg("top")
        .env("NETLEDGER_DB", &db)
        .output()
        .unwrap();
    assert_fails_with(&o, &db.display().to_string());
    assert!(!db.exists(), "a report must not create the database");
}

#[test]
fn corrupt_database_is_refused_and_left_untouched() {
    if !require_root("corrupt_database_is_refused_and_left_untouched") {
        return;
    }
    let ns = tracking_ns("nlbc");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let garbage: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(&db, &garbage).unwrap();
    let o = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert_fails_with(&o, "corrupt or not an SQLite file");
    assert_eq!(
        std::fs::read(&db).unwrap(),
        garbage,
        "corrupt file was modified"
    );
}

#[test]
fn locked_database_waits_then_fails_and_loses_nothing() {
    if !require_root("locked_database_waits_then_fails_and_loses_nothing") {
        return;
    }
    let ns = tracking_ns("nlbl");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let ok = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let o = netledger(
        &ns,
        &db,
        &["snapshot", "--no-setup", "--lock-timeout", "300ms"],
    );
    assert_fails_with(&o, "locked by another writer");
    holder.execute_batch("ROLLBACK").unwrap();
    drop(holder);
    assert_eq!(passes(&db), 1);
    let again = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(passes(&db), 2);
}

#[test]
fn accounting_off_is_named_and_nothing_is_lost() {
    if !require_root("accounting_off_is_named_and_nothing_is_lost") {
        return;
    }
    let ns = tracking_ns("nlba");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_acct=0");
    let o = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert_fails_with(&o, "net.netfilter.nf_conntrack_acct");
    assert_eq!(passes(&db), 1, "stored passes kept");
    // Without --no-setup, root fixes it and says so.
    let fixed = netledger(&ns, &db, &["snapshot"]);
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert!(stderr(&fixed).contains("set net.netfilter.nf_conntrack_acct=1"));
    assert_eq!(passes(&db), 2);
}

#[test]
fn conntrack_not_tracking_is_named() {
    if !require_root("conntrack_not_tracking_is_named") {
        return;
    }
    // A namespace with no conntrack rule: nothing tracks, the table stays empty.
    let ns = Netns::new("nlbt");
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_acct=1 2>/dev/null || true");
    let tb = traffic_bin();
    let mut server = Proc::spawn("server", {
        let mut c = ns.cmd(&tb.path);
        c.args(["serve-once", "tcp", "0.0.0.0:7777"]);
        c
    });
    server.expect("listening");
    ns.ip("addr add 198.51.100.7/32 dev lo");
    let mut client = Proc::spawn("client", {
        let mut c = ns.cmd(&tb.path);
        c.args(["client", "tcp", "198.51.100.7:7777", "10", "10"]);
        c
    });
    client.expect("ready");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let o = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("not tracking in this network namespace")
            || err.contains("conntrack is not active in this network namespace"),
        "{err}"
    );
    client.go();
    client.expect("done");
}

#[test]
fn no_cap_net_admin_is_named() {
    if !require_root("no_cap_net_admin_is_named") {
        return;
    }
    let ns = tracking_ns("nlbp");
    let user = TestUser::new("nlbp");
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    let db = dir.path().join("nl.db");
    let o = user
        .cmd(&ns, bin())
        .arg("--db")
        .arg(&db)
        .arg("snapshot")
        .output()
        .unwrap();
    assert_fails_with(&o, "CAP_NET_ADMIN");
}

#[test]
fn unwritable_database_is_named_and_left_intact() {
    if !require_root("unwritable_database_is_named_and_left_intact") {
        return;
    }
    let ns = tracking_ns("nlbw");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    let before = std::fs::read(&db).unwrap();
    // An unprivileged user cannot write root's database (mode 0640 in a root directory).
    let user = TestUser::new("nlbw");
    let o = user
        .cmd(&ns, bin())
        .arg("--db")
        .arg(&db)
        .args(["snapshot", "--no-setup"])
        .output()
        .unwrap();
    assert_fails_with(&o, "permission denied");
    assert_eq!(std::fs::read(&db).unwrap(), before);
    assert_eq!(passes(&db), 1);
}

#[test]
fn database_mode_is_private() {
    if !require_root("database_mode_is_private") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let ns = tracking_ns("nlbm");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/sub/nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&db), 0o640);
    assert_eq!(mode(db.parent().unwrap()), 0o750);
}

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

#[test]
fn full_disk_rolls_back_and_the_next_pass_recounts() {
    if !require_root("full_disk_rolls_back_and_the_next_pass_recounts") {
        return;
    }
    let ns = tracking_ns("nlbf");
    let mnt = Tmpfs(tempfile::tempdir().unwrap());
    run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "netledger-test"])
        .arg(mnt.0.path()));
    let db = mnt.0.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    loopback_traffic(&ns, 6001);
    // Fill the file system to the last block.
    let filler = mnt.0.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k"])
        .arg(format!("of={}", filler.display()))
        .output();
    let o = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert_fails_with(&o, "disk full");
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(passes(&db), 1, "the failed pass left nothing");
    let ok = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // Nothing lost: every byte conntrack counted is in the database exactly once.
    let c = rusqlite::Connection::open(&db).unwrap();
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let stored: i64 = c
        .query_row(
            "SELECT sum(attributed_rx_bytes + attributed_tx_bytes + unattributed_rx_bytes
                      + unattributed_tx_bytes + excluded_rx_bytes + excluded_tx_bytes)
             FROM passes",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let kernel: u64 = conntrack_entries(&ns)
        .iter()
        .map(|e| e.orig.bytes + e.reply.bytes)
        .sum();
    assert!(kernel > 50_000, "traffic was counted: {kernel}");
    assert_eq!(stored as u64, kernel);
}

#[test]
fn unreadable_database_is_named_for_reports() {
    if !require_root("unreadable_database_is_named_for_reports") {
        return;
    }
    let ns = tracking_ns("nlbr");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    let user = TestUser::new("nlbr");
    let o = user
        .cmd(&ns, bin())
        .arg("--db")
        .arg(&db)
        .arg("top")
        .output()
        .unwrap();
    assert_fails_with(&o, "cannot read database");
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
}

#[test]
fn verbose_log_lines_are_for_people() {
    if !require_root("verbose_log_lines_are_for_people") {
        return;
    }
    let ns = tracking_ns("nlbg");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    for v in ["-v", "-vv"] {
        let o = netledger(&ns, &db, &[v, "snapshot", "--no-setup"]);
        let err = stderr(&o);
        assert!(o.status.success(), "{err}");
        assert!(err.contains("retention"), "the rollup is logged: {err}");
        for line in err.lines() {
            assert!(
                !line.contains(" { ") && !line.contains("Stats"),
                "a Rust debug struct in a log line: {line}"
            );
        }
    }
}
