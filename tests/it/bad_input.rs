//! Bad input gets a clear error and loses nothing: corrupt, locked, unwritable and full
//! databases, accounting switched off, no CAP_NET_ADMIN, usage errors. Each runs the real
//! binary inside a network namespace of its own.

use crate::common;

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
fn timestamps_off_are_named_and_setup_switches_them_on() {
    if !require_root("timestamps_off_are_named_and_setup_switches_them_on") {
        return;
    }
    let ns = tracking_ns("nlbz");
    ns.sh("sysctl -qw net.netfilter.nf_conntrack_timestamp=0");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    // Without start times a reused tuple's new entry looks like the saved one: the pass
    // still runs, and says what it cannot tell and how to fix it.
    let o = netledger(&ns, &db, &["snapshot", "--no-setup"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warned: Vec<_> = stderr(&o)
        .lines()
        .filter(|l| l.contains("nf_conntrack_timestamp=0"))
        .map(str::to_owned)
        .collect();
    assert_eq!(warned.len(), 1, "{}", stderr(&o));
    assert!(warned[0].contains("reused tuple") && warned[0].contains("netledger setup"));
    // A snapshot's own setup (root, no --no-setup) switches them on and says so.
    let fixed = netledger(&ns, &db, &["snapshot"]);
    assert!(fixed.status.success(), "{}", stderr(&fixed));
    assert!(
        stderr(&fixed).contains("set net.netfilter.nf_conntrack_timestamp=1"),
        "{}",
        stderr(&fixed)
    );
    assert!(!stderr(&fixed).contains("nf_conntrack_timestamp=0"));
    let on = ns.sh("sysctl -n net.netfilter.nf_conntrack_timestamp");
    assert_eq!(String::from_utf8_lossy(&on.stdout).trim(), "1");
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
    let stored = bytes_in_passes(&db);
    let kernel: u64 = conntrack_entries(&ns)
        .iter()
        .map(|e| e.orig.bytes + e.reply.bytes)
        .sum();
    assert!(kernel > 50_000, "traffic was counted: {kernel}");
    assert_eq!(stored, kernel);
}

/// `top` run by an unprivileged user on a database a root snapshot made at `rel` below a
/// world-readable directory.
fn top_by_another_user(prefix: &str, rel: &str) -> std::process::Output {
    let ns = tracking_ns(prefix);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let db = dir.path().join(rel);
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    let user = TestUser::new(prefix);
    user.cmd(&ns, bin())
        .arg("--db")
        .arg(&db)
        .arg("top")
        .output()
        .unwrap()
}

#[test]
fn unreadable_database_is_named_for_reports() {
    if !require_root("unreadable_database_is_named_for_reports") {
        return;
    }
    let o = top_by_another_user("nlbr", "nl.db");
    assert_fails_with(&o, "cannot read database");
    assert!(stderr(&o).contains("permission denied"), "{}", stderr(&o));
}

// ---- issue 18: limits, and messages that name the real cause ----

/// Fails with exit code 2 (a usage error) and exactly one line on stderr containing each
/// of `want`.
fn assert_usage_error(o: &Output, want: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {err}");
    for w in want {
        assert!(err.contains(w), "stderr lacks {w:?}: {err}");
    }
    assert_eq!(err.trim_end().lines().count(), 1, "one clear line: {err}");
}

/// Run `cmd`, killing it (by pid) if it is still running after `limit`: a command that
/// should have been refused must not keep running (`run --interval 0s` used to busy-loop).
fn output_within(mut cmd: Command, limit: std::time::Duration) -> Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} was accepted and still ran after {limit:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn out_of_range_flags_and_environment_are_usage_errors() {
    if !require_root("out_of_range_flags_and_environment_are_usage_errors") {
        return;
    }
    let ns = tracking_ns("nlbx");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    let limit = std::time::Duration::from_secs(20);
    /// Arguments, environment, and what the one line must contain.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["run", "--no-setup", "--interval", "0s"],
            &[],
            &["--interval", "1s"],
        ),
        (
            &["run", "--no-setup", "--interval", "500ms"],
            &[],
            &["--interval", "1s"],
        ),
        (
            &["run", "--no-setup", "--interval", "30days"],
            &[],
            &["--interval", "1h"],
        ),
        (
            &["run", "--no-setup", "--flush-interval", "0s"],
            &[],
            &["--flush-interval"],
        ),
        (
            &["run", "--no-setup", "--prune-after", "0"],
            &[],
            &["--prune-after", "1"],
        ),
        (
            &["run", "--no-setup", "--lock-timeout", "400d"],
            &[],
            &["--lock-timeout"],
        ),
        (
            &["run", "--no-setup", "--event-buffer", "99999999999"],
            &[],
            &["--event-buffer", "64 MiB"],
        ),
        (
            &["run", "--no-setup"],
            &[("NETLEDGER_EVENT_BUFFER", "0")],
            &["NETLEDGER_EVENT_BUFFER"],
        ),
        (
            &["snapshot", "--no-setup", "--prune-after", "0"],
            &[],
            &["--prune-after"],
        ),
        (
            &["snapshot", "--no-setup", "--lock-timeout", "400d"],
            &[],
            &["--lock-timeout"],
        ),
        (&["top", "--limit", "0"], &[], &["--limit", "1"]),
    ];
    for (args, env, want) in cases {
        let mut cmd = ns.cmd(bin());
        cmd.arg("--db").arg(&db).args(*args);
        for (k, v) in *env {
            cmd.env(k, v);
        }
        let o = output_within(cmd, limit);
        assert_usage_error(&o, want);
    }
    assert!(
        !db.exists(),
        "a refused command must not create the database"
    );
}

#[test]
fn time_flags_and_environment_errors_are_usage_errors_naming_their_source() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(bin());
        c.arg("--db").arg(&db).args(args).env_remove("NETLEDGER_DB");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = run(&["top", "--since", "bogus"], &[]);
    assert_usage_error(&o, &["--since", "bogus", "24h"]);
    let o = run(&["report", "--until", "soon"], &[]);
    assert_usage_error(&o, &["--until", "soon"]);
    let o = run(&["top", "--since", "-1h"], &[]);
    assert_usage_error(&o, &["--since", "1h"]);
    assert!(
        !stderr(&o).contains("unexpected argument"),
        "{}",
        stderr(&o)
    );
    let o = run(&["export", "--since", "1h", "--until", "2h"], &[]);
    assert_usage_error(&o, &["--until", "--since"]);
    let o = run(&["log", "--since", "yesteryear"], &[]);
    assert_usage_error(&o, &["--since"]);
    let o = run(&["summary", "--date", "someday"], &[]);
    assert_usage_error(&o, &["someday"]);
    let o = run(&["top", "--since", "100000years"], &[]);
    assert_usage_error(&o, &["--since", "100000years"]);

    // Environment variables are named, not the flags they stand for.
    let mut c = Command::new(bin());
    let o = c.arg("top").env("NETLEDGER_DB", "").output().unwrap();
    assert_usage_error(&o, &["NETLEDGER_DB"]);
    assert!(!stderr(&o).contains("--db"), "{}", stderr(&o));
    let o = run(&["config"], &[("NETLEDGER_LOCAL_NETWORKS", "bogus")]);
    assert_usage_error(&o, &["NETLEDGER_LOCAL_NETWORKS", "bogus"]);
    assert!(!stderr(&o).contains("--local-net"), "{}", stderr(&o));
    let o = run(&["config"], &[("NETLEDGER_CONFIG", "")]);
    assert_usage_error(&o, &["NETLEDGER_CONFIG"]);
    let o = run(&["top"], &[("NETLEDGER_LOG", "info=loud=x")]);
    assert_usage_error(&o, &["NETLEDGER_LOG", "info=loud=x"]);

    // An invalid TZ is named instead of silently showing UTC; --utc does not need it.
    let o = run(&["top", "--since", "today"], &[("TZ", "Bogus/Zone")]);
    assert_usage_error(&o, &["TZ", "Bogus/Zone", "--utc"]);
    for tz in [
        "UTC",
        "Europe/Berlin",
        ":America/New_York",
        "CET-1CEST,M3.5.0,M10.5.0/3",
        "EST5",
    ] {
        let o = run(&["top", "--since", "today"], &[("TZ", tz)]);
        assert_eq!(o.status.code(), Some(1), "TZ={tz}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("no database"),
            "TZ={tz}: {}",
            stderr(&o)
        );
    }
    let o = run(
        &["top", "--since", "today", "--utc"],
        &[("TZ", "Bogus/Zone")],
    );
    assert!(stderr(&o).contains("no database"), "{}", stderr(&o));
}

#[test]
fn local_networks_from_the_environment_are_blamed_on_the_variable() {
    if !require_root("local_networks_from_the_environment_are_blamed_on_the_variable") {
        return;
    }
    let ns = tracking_ns("nlbn");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    for cmd in ["snapshot", "run"] {
        let mut c = ns.cmd(bin());
        c.arg("--db")
            .arg(&db)
            .args([cmd, "--no-setup"])
            .env("NETLEDGER_LOCAL_NETWORKS", "10.0.0.0/8,bogus");
        let o = output_within(c, std::time::Duration::from_secs(20));
        assert_usage_error(&o, &["NETLEDGER_LOCAL_NETWORKS", "bogus"]);
        assert!(!stderr(&o).contains("--local-net"), "{}", stderr(&o));
    }
}

#[test]
fn database_that_is_a_directory_is_named() {
    if !require_root("database_that_is_a_directory_is_named") {
        return;
    }
    let ns = tracking_ns("nlbd");
    let dir = tempfile::tempdir().unwrap();
    for args in [&["top"][..], &["snapshot", "--no-setup"]] {
        let o = netledger(&ns, dir.path(), args);
        assert_fails_with(&o, "is a directory");
        let err = stderr(&o);
        assert!(!err.contains("disk I/O error"), "{err}");
        assert!(!err.contains("permission denied"), "{err}");
    }
}

/// A read-only bind mount of a directory, unmounted on drop.
struct ReadOnlyBind(std::path::PathBuf);

impl Drop for ReadOnlyBind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn database_on_a_read_only_mount_is_named() {
    if !require_root("database_on_a_read_only_mount_is_named") {
        return;
    }
    let ns = tracking_ns("nlbo");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    run(Command::new("mount")
        .args(["--bind"])
        .arg(dir.path())
        .arg(dir.path()));
    let _ro = ReadOnlyBind(dir.path().to_owned());
    run(Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(dir.path()));
    for args in [&["top"][..], &["snapshot", "--no-setup"]] {
        let o = netledger(&ns, &db, args);
        assert_fails_with(&o, "read-only file system");
        let err = stderr(&o);
        assert!(!err.contains("as root"), "we are root: {err}");
        assert!(!err.contains("permission denied"), "{err}");
    }
}

#[test]
fn database_behind_a_private_directory_is_not_missing() {
    if !require_root("database_behind_a_private_directory_is_not_missing") {
        return;
    }
    // The parent is created with mode 0750, as /var/lib/netledger is.
    let o = top_by_another_user("nlbv", "state/nl.db");
    assert_fails_with(&o, "cannot read database");
    assert!(!stderr(&o).contains("no database"), "{}", stderr(&o));
}

#[test]
fn database_of_a_newer_schema_is_refused_with_the_fix() {
    if !require_root("database_of_a_newer_schema_is_refused_with_the_fix") {
        return;
    }
    let ns = tracking_ns("nlbs");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    for args in [&["top"][..], &["snapshot", "--no-setup"]] {
        let o = netledger(&ns, &db, args);
        assert_fails_with(&o, "schema version 99");
        assert!(stderr(&o).contains("upgrade netledger"), "{}", stderr(&o));
    }
}

#[test]
fn causes_are_not_repeated() {
    if !require_root("causes_are_not_repeated") {
        return;
    }
    let ns = tracking_ns("nlbu");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("nl.db");
    assert!(netledger(&ns, &db, &["snapshot", "--no-setup"])
        .status
        .success());
    let o = netledger(&ns, &db, &["top", "--names", "/nonexistent/names"]);
    assert_fails_with(&o, "/nonexistent/names");
    assert_eq!(
        stderr(&o).matches("os error 2").count(),
        1,
        "{}",
        stderr(&o)
    );
    // An unprivileged user cannot create a directory in root's private one.
    let user = TestUser::new("nlbu");
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o711),
    )
    .unwrap();
    let o = user
        .cmd(&ns, bin())
        .arg("--db")
        .arg(private.path().join("sub/nl.db"))
        .args(["snapshot", "--no-setup"])
        .output()
        .unwrap();
    assert_fails_with(&o, "Permission denied");
    assert_eq!(
        stderr(&o).matches("os error 13").count(),
        1,
        "{}",
        stderr(&o)
    );
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
