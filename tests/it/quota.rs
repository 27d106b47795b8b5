//! Quotas (issue 19): `check` on databases built for the purpose (every exit code, the
//! perfdata parsed back, groups, grants, the projection, a cycle on the 15th across a
//! month end and a DST change, stale data), the `on_quota` hook once per level and cycle
//! across passes, flushes and a daemon restart (and refused when its files are not
//! root's alone), `quota` as an unprivileged user, and configuration errors.

use crate::common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{Netns, TestUser};
use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
use netledger::attribute::Direction;
use netledger::store::{OpenOptions, PassRecord, Store};

/// 2026-11-16T00:00:00Z: half of November (UTC) gone.
const MID_NOV: i64 = 1_794_787_200;

fn at(s: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
}

/// A pass at `ts` charging each `(uid, rx, tx)`.
fn pass(store: &mut Store, ts: i64, usage: &[(u32, u64, u64)]) {
    let mut plan = PassPlan::default();
    for (i, &(uid, rx, tx)) in usage.iter().enumerate() {
        let key = UsageKey {
            cgroup: None,
            kind: Kind::User,
            uid: Some(uid),
            program: Some("curl".into()),
            reason: None,
            via: None,
            container: None,
            protocol: 6,
            direction: Some(Direction::Out),
            remote: format!("198.51.100.{}", i + 1).parse().unwrap(),
            port: 443,
        };
        plan.usage.insert(
            key,
            Traffic {
                rx_bytes: rx,
                tx_bytes: tx,
                rx_packets: 1,
                tx_packets: 1,
            },
        );
    }
    let rec = PassRecord {
        started_at: ts,
        mode: "snapshot",
        ..PassRecord::default()
    };
    store.write_pass(&rec, &plan, &[]).unwrap();
}

fn new_store(dir: &Path) -> (PathBuf, Store) {
    let db = dir.join("q.db");
    let store = Store::open(&db, &OpenOptions::default()).unwrap();
    (db, store)
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn netledger(db: &Path, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(common::bin());
    c.arg("--db").arg(db).arg("--config").arg(config).args(args);
    c.env("TZ", "UTC");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> (String, String, i32) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
        o.status.code().unwrap_or(-1),
    )
}

/// One perfdata item: label, value, warn, crit, min, max (empty fields as `None`).
#[derive(Debug, PartialEq)]
struct Perf {
    value: u64,
    warn: Option<u64>,
    crit: Option<u64>,
    min: Option<u64>,
    max: Option<u64>,
}

/// The plugin's output read back by the grammar of the Nagios plugin guidelines:
/// `STATUS TEXT | 'label'=valueUOM;warn;crit;min;max ...` on one line.
fn parse_plugin(out: &str) -> (String, BTreeMap<String, Perf>) {
    assert_eq!(out.lines().count(), 1, "one line: {out:?}");
    let line = out.trim_end();
    let (status, perf) = match line.split_once(" | ") {
        Some((s, p)) => (s, p),
        None => (line, ""),
    };
    assert!(!status.contains('|'), "{line}");
    let mut items = BTreeMap::new();
    let mut rest = perf.trim();
    while !rest.is_empty() {
        let (label, after) = if let Some(r) = rest.strip_prefix('\'') {
            // A quoted label; '' is a quote.
            let mut label = String::new();
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                let (i, c) = chars.next().expect("closing quote");
                if c == '\'' {
                    if chars.peek().map(|p| p.1) == Some('\'') {
                        chars.next();
                        label.push('\'');
                        continue;
                    }
                    end = i + 1;
                    break;
                }
                label.push(c);
            }
            (label, &r[end..])
        } else {
            let i = rest.find('=').unwrap();
            (rest[..i].to_string(), &rest[i..])
        };
        let after = after.strip_prefix('=').expect("=");
        let (item, next) = after.split_once(' ').unwrap_or((after, ""));
        let f: Vec<&str> = item.split(';').collect();
        assert_eq!(f.len(), 5, "value;warn;crit;min;max: {item}");
        let num = |s: &str| -> Option<u64> {
            (!s.is_empty()).then(|| {
                assert!(
                    s.bytes().all(|b| b.is_ascii_digit()),
                    "C locale digits: {s:?}"
                );
                s.parse().unwrap()
            })
        };
        let value = f[0].strip_suffix('B').expect("bytes UOM");
        items.insert(
            label,
            Perf {
                value: num(value).unwrap(),
                warn: num(f[1]),
                crit: num(f[2]),
                min: num(f[3]),
                max: num(f[4]),
            },
        );
        rest = next.trim_start();
    }
    (status.to_string(), items)
}

/// A group made for one test, deleted on drop.
struct TestGroup {
    name: String,
}

impl TestGroup {
    fn new(prefix: &str, members: &[&TestUser]) -> TestGroup {
        let name = common::unique(prefix);
        common::run(Command::new("groupadd").args(["--system", &name]));
        for m in members {
            common::run(Command::new("usermod").args(["-aG", &name, &m.name]));
        }
        TestGroup { name }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        let _ = Command::new("groupdel").arg(&self.name).status();
    }
}

#[test]
fn check_judges_users_groups_defaults_grants_and_the_projection() {
    if !common::require_root("check_judges_users_groups_defaults_grants_and_the_projection") {
        return;
    }
    let (ua, ub, uc) = (
        TestUser::new("nqa"),
        TestUser::new("nqb"),
        TestUser::new("nqc"),
    );
    let (g1, g2) = (TestGroup::new("nqg", &[&ub]), TestGroup::new("nqg", &[&ub]));
    let dir = tempfile::tempdir().unwrap();
    let (db, mut store) = new_store(dir.path());
    // The previous cycle: not counted.
    pass(
        &mut store,
        at("2026-10-31T23:59:59Z"),
        &[(ua.uid, 1 << 30, 0)],
    );
    pass(
        &mut store,
        at("2026-11-10T12:00:00Z"),
        &[
            (ua.uid, 30_000_000, 20_000_000),
            (ub.uid, 17_000_000, 0),
            (uc.uid, 900_000_000, 60_000_000),
        ],
    );
    drop(store);
    let conf = dir.path().join("n.toml");
    write(
        &conf,
        &format!(
            "cycle_day = 1\n[quota]\ndefault = \"1GB\"\n[quota.users]\n{} = \"100MB\"\n\
             [quota.groups]\n{} = \"10MB\"\n{} = \"20 MB\"\n",
            ua.name, g1.name, g2.name
        ),
        0o644,
    );
    let now = MID_NOV.to_string();
    let check = |args: &[&str]| {
        let mut a = vec!["check", "--utc", "--now", &now];
        a.extend_from_slice(args);
        text(&netledger(&db, &conf, &[], &a))
    };

    // Everyone: uc is at 96% of the default: CRITICAL, named first.
    let (out, err, code) = check(&[]);
    assert_eq!(code, 2, "{out}{err}");
    let (status, perf) = parse_plugin(&out);
    assert!(
        status.starts_with("QUOTA CRITICAL - ")
            && status.contains(&format!("{} 96.0% of", uc.name)),
        "{status}"
    );
    assert!(status.contains("cycle 2026-11, 15.0 days left"), "{status}");
    assert_eq!(
        perf[&ua.name],
        Perf {
            value: 50_000_000,
            warn: Some(80_000_000),
            crit: Some(95_000_000),
            min: Some(0),
            max: Some(100_000_000),
        },
        "a user's own entry; last cycle's gigabyte not counted"
    );
    // ub is in two groups: the larger allowance (20 MB) wins.
    assert_eq!(
        perf[&ub.name],
        Perf {
            value: 17_000_000,
            warn: Some(16_000_000),
            crit: Some(19_000_000),
            min: Some(0),
            max: Some(20_000_000),
        }
    );
    assert_eq!(perf[&uc.name].max, Some(1_000_000_000), "the default");
    assert_eq!(perf.len(), 3);

    // One user each: OK, WARNING.
    let (out, _, code) = check(&["--user", &ua.name]);
    assert_eq!(code, 0, "{out}");
    let (status, perf) = parse_plugin(&out);
    assert!(status.starts_with("QUOTA OK - "), "{status}");
    assert_eq!(perf.keys().collect::<Vec<_>>(), [&ua.name]);
    let (out, _, code) = check(&["--user", &ub.name]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with(&format!("QUOTA WARNING - {} 85.0% of", ub.name)),
        "{out}"
    );

    // The projection: 50 MB in half the month is 100 MB at its end, 100%: CRITICAL.
    let (out, _, code) = check(&["--user", &ua.name, "--estimate"]);
    assert_eq!(code, 2, "{out}");
    let (status, perf) = parse_plugin(&out);
    assert!(status.contains("projected 100.0% of"), "{status}");
    assert_eq!(perf[&format!("{} projected", ua.name)].value, 100_000_000);

    // Absolute sizes.
    let (out, _, code) = check(&["--user", &ua.name, "-w", "40MB", "-c", "900MB"]);
    assert_eq!(code, 1, "{out}");
    let (_, perf) = parse_plugin(&out);
    assert_eq!(
        (perf[&ua.name].warn, perf[&ua.name].crit),
        (Some(40_000_000), Some(900_000_000))
    );

    // A grant for this cycle: 960 MB of 1.1 GB is 87.3%: WARNING.
    let (_, err, code) = text(&netledger(
        &db,
        &conf,
        &[],
        &["quota", "grant", &uc.name, "100MB", "--utc", "--now", &now],
    ));
    assert_eq!(code, 0, "{err}");
    let (out, _, code) = check(&["--user", &uc.name]);
    assert_eq!(code, 1, "{out}");
    let (status, perf) = parse_plugin(&out);
    assert!(status.contains("87.3% of"), "{status}");
    assert_eq!(perf[&uc.name].max, Some(1_100_000_000));
    // `quota` shows it.
    let (out, _, code) = text(&netledger(
        &db,
        &conf,
        &[],
        &[
            "quota", "--json", "--utc", "--now", &now, "--user", &uc.name,
        ],
    ));
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["granted"], 100_000_000);
    assert_eq!(v[0]["allowance"], 1_100_000_000u64);
    assert_eq!(v[0]["used"], 960_000_000u64);
    // The grant is for November only.
    let dec = at("2026-12-02T00:00:00Z").to_string();
    let (out, _, code) = text(&netledger(
        &db,
        &conf,
        &[],
        &["check", "--utc", "--now", &dec, "--user", &uc.name],
    ));
    assert_eq!(code, 0, "{out}");
    assert_eq!(parse_plugin(&out).1[&uc.name].max, Some(1_000_000_000));

    // Received bytes only.
    let rx = dir.path().join("rx.toml");
    write(
        &rx,
        &format!(
            "[quota]\ndirection = \"rx\"\n[quota.users]\n{} = \"100MB\"\n",
            ua.name
        ),
        0o644,
    );
    let (out, _, _) = text(&netledger(
        &db,
        &rx,
        &[],
        &["check", "--utc", "--now", &now, "--user", &ua.name],
    ));
    assert_eq!(parse_plugin(&out).1[&ua.name].value, 30_000_000);
}

#[test]
fn check_is_unknown_on_stale_data_and_any_error() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut store) = new_store(dir.path());
    pass(&mut store, MID_NOV - 3600, &[(4_000_001, 10, 10)]);
    drop(store);
    let conf = dir.path().join("n.toml");
    write(&conf, "[quota]\ndefault = \"1GiB\"\n", 0o644);
    // The pass was stored just now (its finished_at is the clock's).
    let later = (chrono::Utc::now().timestamp() + 3600).to_string();
    let o = text(&netledger(
        &db,
        &conf,
        &[],
        &["check", "--max-age", "10m", "--now", &later],
    ));
    assert_eq!(o.2, 3, "{o:?}");
    assert!(
        o.0.starts_with("QUOTA UNKNOWN - stale data: the last pass was stored 1h")
            && o.0.lines().count() == 1,
        "{o:?}"
    );
    let o = text(&netledger(
        &db,
        &conf,
        &[],
        &["check", "--max-age", "2h", "--now", &later],
    ));
    assert_eq!(o.2, 0, "{o:?}");
    // Errors: an unreadable database, a bad flag, a bad configuration, an unknown user.
    for (db, conf, args) in [
        (dir.path().join("none.db"), conf.clone(), vec!["check"]),
        (db.clone(), conf.clone(), vec!["check", "-w", "150%"]),
        (db.clone(), conf.clone(), vec!["check", "--bogus"]),
        (
            db.clone(),
            conf.clone(),
            vec!["check", "--user", "no-such-user-q"],
        ),
    ] {
        let o = text(&netledger(&db, &conf, &[], &args));
        assert_eq!(o.2, 3, "{args:?}: {o:?}");
        assert!(
            o.0.starts_with("QUOTA UNKNOWN - ") && o.0.lines().count() == 1,
            "{args:?}: {o:?}"
        );
    }
    let bad = dir.path().join("bad.toml");
    write(&bad, "cycle_day = 31\n", 0o644);
    let o = text(&netledger(&db, &bad, &[], &["check"]));
    assert_eq!(o.2, 3, "{o:?}");
    assert!(o.0.contains("line 1") && o.0.contains("cycle_day"), "{o:?}");
}

#[test]
fn a_cycle_on_the_15th_spans_a_month_end_and_a_dst_change() {
    let dir = tempfile::tempdir().unwrap();
    let (db, mut store) = new_store(dir.path());
    // Berlin: CEST (+2) until 25 October 03:00, then CET (+1). The cycle "2026-10-15"
    // runs from 15 October 00:00 CEST to 15 November 00:00 CET: 31 days and an hour.
    let start = at("2026-10-15T00:00:00+02:00");
    let end = at("2026-11-15T00:00:00+01:00");
    assert_eq!(end - start, 31 * 86_400 + 3600);
    let u = 4_000_002;
    pass(&mut store, start - 1, &[(u, 1 << 30, 0)]); // 14 Oct 23:59:59, the cycle before
    pass(&mut store, start, &[(u, 10_000_000, 0)]);
    pass(
        &mut store,
        at("2026-11-14T23:55:00+01:00"),
        &[(u, 0, 20_000_000)],
    );
    pass(&mut store, end, &[(u, 1 << 30, 0)]); // the next cycle
    drop(store);
    let conf = dir.path().join("n.toml");
    write(
        &conf,
        "cycle_day = 15\n[quota.users]\n4000002 = \"60MB\"\n",
        0o644,
    );
    let berlin = [("TZ", "Europe/Berlin")];
    let now = at("2026-11-14T23:59:30+01:00");
    let n = now.to_string();
    let (out, err, code) = text(&netledger(&db, &conf, &berlin, &["check", "--now", &n]));
    assert_eq!(code, 0, "{out}{err}");
    let (status, perf) = parse_plugin(&out);
    assert!(
        status.contains("cycle 2026-10-15 to 2026-11-14, 0.0 days left"),
        "{status}"
    );
    assert_eq!(perf["4000002"].value, 30_000_000);
    let (out, _, code) = text(&netledger(
        &db,
        &conf,
        &berlin,
        &["quota", "--json", "--now", &n],
    ));
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[0]["cycle_start"], start);
    assert_eq!(v[0]["cycle_end"], end);
    assert_eq!(v[0]["used"], 30_000_000);
    // Linear over the cycle's real length (the DST hour included).
    let expect = (30_000_000f64 * (end - start) as f64 / (now - start) as f64).round() as u64;
    assert_eq!(v[0]["projected"], expect);
    assert_eq!(v[0]["percent"], 50.0);
    // In UTC the cycle starts two hours later (the 10 MB at 22:00 UTC are the cycle
    // before's).
    let (out, _, _) = text(&netledger(
        &db,
        &conf,
        &berlin,
        &["check", "--now", &n, "--utc"],
    ));
    assert!(out.contains("cycle 2026-10-15 to 2026-11-14"), "{out}");
    assert_eq!(parse_plugin(&out).1["4000002"].value, 20_000_000, "{out}");
    // `report --period month` labels and sums by the cycle too.
    let (out, err, code) = text(&netledger(
        &db,
        &conf,
        &berlin,
        &[
            "report",
            "--period",
            "month",
            "--json",
            "--since",
            "2026-09-20",
            "--until",
            "2026-12-01",
        ],
    ));
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let by: BTreeMap<String, u64> = rows
        .iter()
        .map(|r| {
            (
                r["period"].as_str().unwrap().to_string(),
                r["total_bytes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by,
        BTreeMap::from([
            ("2026-09-15 to 2026-10-14".to_string(), 1 << 30),
            ("2026-10-15 to 2026-11-14".to_string(), 30_000_000),
            ("2026-11-15 to 2026-12-14".to_string(), 1 << 30),
        ])
    );
}

#[test]
fn configuration_errors_are_one_line_each_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for (text_, line, words) in [
        ("[quota]\ndefault = \"50 GiBs\"\n", 2, "not a size"),
        ("[quota]\n\nwarning = \"101%\"\n", 3, "0% to 100%"),
        (
            "\n\ncycle_day = 31\n",
            3,
            "not every month has a 29th, 30th or 31st",
        ),
        (
            "[quota.groups]\nno-such-group-q = \"1GiB\"\n",
            2,
            "no group \"no-such-group-q\"",
        ),
        ("[quota.users]\nno-such-user-q = \"1GiB\"\n", 2, "no user"),
    ] {
        let conf = dir.path().join("bad.toml");
        write(&conf, text_, 0o644);
        let o = text(&netledger(&dir.path().join("x.db"), &conf, &[], &["quota"]));
        assert_eq!(o.2, 2, "{text_:?}: {o:?}");
        let err = o.1.trim_end();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("bad.toml, line {line}")) && err.contains(words),
            "{text_:?}: {err}"
        );
    }
}

fn hook_script(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("hook.log");
    let script = dir.join("hook.sh");
    write(
        &script,
        &format!(
            "#!/bin/sh\necho \"$NETLEDGER_QUOTA_USER $NETLEDGER_QUOTA_UID $NETLEDGER_QUOTA_LEVEL \
             $NETLEDGER_QUOTA_USED $NETLEDGER_QUOTA_ALLOWANCE\" >> {}\n",
            log.display()
        ),
        0o755,
    );
    (script, log)
}

fn hook_lines(log: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    l.sort();
    l
}

#[test]
fn the_hook_runs_once_per_level_per_cycle_across_passes_and_restarts() {
    if !common::require_root("the_hook_runs_once_per_level_per_cycle_across_passes_and_restarts") {
        return;
    }
    let ns = Netns::new("nq");
    let dir = tempfile::tempdir().unwrap();
    let (script, log) = hook_script(dir.path());
    let (db, mut store) = new_store(dir.path());
    let now = chrono::Utc::now().timestamp();
    // u1 over critical (100% of 1 MB), u2 at warning (85%).
    let (u1, u2) = (4_000_011, 4_000_012);
    pass(
        &mut store,
        now - 60,
        &[(u1, 1_000_000, 0), (u2, 850_000, 0)],
    );
    drop(store);
    let conf = dir.path().join("n.toml");
    write(
        &conf,
        &format!(
            "on_quota = \"{}\"\n[quota]\ndefault = \"1MB\"\nview_dir = \"{}\"\n",
            script.display(),
            dir.path().join("view").display()
        ),
        0o644,
    );
    let conf_s = conf.to_str().unwrap();
    let expect1 = vec![
        format!("{u1} {u1} critical 1000000 1000000"),
        format!("{u1} {u1} warning 1000000 1000000"),
        format!("{u2} {u2} warning 850000 1000000"),
    ];
    let d = common::Daemon::start(
        &ns,
        &db,
        &["--interval", "1s", "--flush-interval", "50ms"],
        &[("NETLEDGER_CONFIG", conf_s)],
    );
    common::wait_for(
        "the hooks of the first pass",
        Duration::from_secs(30),
        || (hook_lines(&log).len() >= 3).then_some(()),
    );
    // A grant while the daemon runs (and holds the writer lock): not kept waiting.
    let t0 = std::time::Instant::now();
    let o = text(&netledger(
        &db,
        &conf,
        &[],
        &["quota", "grant", "4000099", "1MB"],
    ));
    assert_eq!(o.2, 0, "{o:?}");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    for _ in 0..3 {
        d.wait_for_a_whole_pass();
    }
    d.stop();
    assert_eq!(hook_lines(&log), expect1, "once per level, across passes");
    // Restarted: the database remembers.
    let d = common::Daemon::start(
        &ns,
        &db,
        &["--interval", "1s"],
        &[("NETLEDGER_CONFIG", conf_s)],
    );
    d.wait_for_a_whole_pass();
    d.wait_for_a_whole_pass();
    d.stop();
    assert_eq!(hook_lines(&log), expect1, "not again after a restart");
    // u2 crosses critical: its critical hook once, from the timer's passes too.
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    pass(&mut store, now - 30, &[(u2, 200_000, 0)]);
    drop(store);
    for _ in 0..3 {
        let o = ns
            .cmd(common::bin())
            .arg("--db")
            .arg(&db)
            .args(["--config", conf_s, "snapshot"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let mut expect2 = expect1.clone();
    expect2.push(format!("{u2} {u2} critical 1050000 1000000"));
    expect2.sort();
    assert_eq!(hook_lines(&log), expect2);
}

#[test]
fn the_hook_is_refused_unless_root_owns_its_files_and_only_root_may_write_them() {
    if !common::require_root(
        "the_hook_is_refused_unless_root_owns_its_files_and_only_root_may_write_them",
    ) {
        return;
    }
    let ns = Netns::new("nq");
    let nobody = TestUser::new("nqh");
    let dir = tempfile::tempdir().unwrap();
    let (script, log) = hook_script(dir.path());
    let (db, mut store) = new_store(dir.path());
    let now = chrono::Utc::now().timestamp();
    let u = 4_000_021;
    pass(&mut store, now - 60, &[(u, 2_000_000, 0)]);
    drop(store);
    let conf = dir.path().join("n.toml");
    let conf_text = format!(
        "on_quota = \"{}\"\n[quota]\ndefault = \"1MB\"\nview_dir = \"{}\"\n",
        script.display(),
        dir.path().join("view").display()
    );
    let snapshot = || {
        let o = ns
            .cmd(common::bin())
            .arg("--db")
            .arg(&db)
            .arg("--config")
            .arg(&conf)
            .arg("snapshot")
            .output()
            .unwrap();
        assert!(o.status.success(), "accounting goes on: {o:?}");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    // A configuration file others may write.
    write(&conf, &conf_text, 0o664);
    let err = snapshot();
    let refusals: Vec<&str> = err.lines().filter(|l| l.contains("refusing")).collect();
    assert_eq!(refusals.len(), 1, "{err}");
    assert!(
        refusals[0].contains(&format!("configuration file {}", conf.display()))
            && refusals[0].contains("mode 0664"),
        "{err}"
    );
    // A program owned by another user.
    write(&conf, &conf_text, 0o644);
    std::os::unix::fs::chown(&script, Some(nobody.uid), None).unwrap();
    let err = snapshot();
    assert!(
        err.contains(&format!(
            "program {} is owned by uid {}",
            script.display(),
            nobody.uid
        )),
        "{err}"
    );
    assert!(hook_lines(&log).is_empty(), "refused: never run");
    // Root's and not writable by others: it runs, once per level.
    std::os::unix::fs::chown(&script, Some(0), None).unwrap();
    snapshot();
    snapshot();
    assert_eq!(
        hook_lines(&log),
        [
            format!("{u} {u} critical 2000000 1000000"),
            format!("{u} {u} warning 2000000 1000000"),
        ]
    );
}

#[test]
fn quota_as_an_unprivileged_user_shows_only_their_own_line() {
    if !common::require_root("quota_as_an_unprivileged_user_shows_only_their_own_line") {
        return;
    }
    let ns = Netns::new("nq");
    let (a, b) = (TestUser::new("nqu"), TestUser::new("nqu"));
    let dir = tempfile::Builder::new().prefix("nq").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let bin = common::SharedBin::new(&common::bin());
    let (db, mut store) = new_store(dir.path());
    let now = chrono::Utc::now().timestamp();
    pass(
        &mut store,
        now - 60,
        &[(a.uid, 111_111, 1), (b.uid, 222_222, 2)],
    );
    drop(store);
    let view = dir.path().join("view");
    let conf = dir.path().join("n.toml");
    write(
        &conf,
        &format!(
            "[quota]\ndefault = \"1MB\"\nview_dir = \"{}\"\n",
            view.display()
        ),
        0o600,
    );
    let o = ns
        .cmd(&bin.path)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&conf)
        .arg("snapshot")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&db), 0o640, "the database stays 0640");
    assert_eq!(mode(&view), 0o711);
    assert_eq!(mode(&view.join(format!("{}.json", a.uid))), 0o400);
    let as_user = |u: &TestUser, args: &[&str]| {
        let o = Command::new("setpriv")
            .args([
                &format!("--reuid={}", u.uid),
                &format!("--regid={}", u.gid),
                "--clear-groups",
                "--",
            ])
            .args(args)
            .env_remove("NETLEDGER_CONFIG")
            .output()
            .unwrap();
        text(&o)
    };
    let b_s = bin.path.to_str().unwrap();
    let view_s = view.to_str().unwrap();
    // The configuration file is root's, 0600: not needed.
    let conf_s = conf.to_str().unwrap();
    let (out, err, code) = as_user(
        &a,
        &[
            b_s,
            "--config",
            conf_s,
            "quota",
            "--json",
            "--view-dir",
            view_s,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(v[0]["uid"], a.uid);
    assert_eq!(v[0]["used"], 111_112);
    assert_eq!(v[0]["allowance"], 1_000_000);
    let (out, _, code) = as_user(&a, &[b_s, "quota", "--view-dir", view_s]);
    assert_eq!(code, 0);
    assert!(out.contains(&a.name) && !out.contains(&b.name), "{out}");
    // Not B's: neither through netledger, nor the file, nor the database.
    let (_, err, code) = as_user(&a, &[b_s, "quota", "--view-dir", view_s, "--user", &b.name]);
    assert_eq!(code, 1, "{err}");
    let (_, _, code) = as_user(&a, &["cat", &format!("{view_s}/{}.json", b.uid)]);
    assert_ne!(code, 0, "A cannot read B's file");
    let (_, _, code) = as_user(&a, &["ls", view_s]);
    assert_ne!(code, 0, "A cannot list who has a file");
    let (_, _, code) = as_user(&a, &[b_s, "--db", db.to_str().unwrap(), "top"]);
    assert_ne!(code, 0, "A cannot read the database");
    let (out, _, code) = as_user(&b, &[b_s, "quota", "--json", "--view-dir", view_s]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v.as_array().unwrap().len(), &v[0]["used"]),
        (1, &serde_json::json!(222_224))
    );
    // Root sees everyone.
    let o = text(&netledger(&db, &conf, &[], &["quota", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&o.0).unwrap();
    let uids: Vec<u64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].as_u64().unwrap())
        .collect();
    assert_eq!(uids, [u64::from(b.uid), u64::from(a.uid)]);
}

#[test]
fn views_written_as_the_units_unprivileged_user_are_readable_by_their_user_alone() {
    if !common::require_root(
        "views_written_as_the_units_unprivileged_user_are_readable_by_their_user_alone",
    ) {
        return;
    }
    let ns = Netns::new("nq");
    let (a, b, svc) = (
        TestUser::new("nqu"),
        TestUser::new("nqu"),
        TestUser::new("nqs"),
    );
    let bin = common::SharedBin::new(&common::bin());
    // The state directory is the service's (StateDirectory=), the view directory too.
    let dir = tempfile::Builder::new().prefix("nq").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(svc.uid), Some(svc.gid)).unwrap();
    let (db, mut store) = new_store(dir.path());
    let now = chrono::Utc::now().timestamp();
    pass(&mut store, now - 60, &[(a.uid, 1000, 0), (b.uid, 2000, 0)]);
    drop(store);
    for f in std::fs::read_dir(dir.path()).unwrap() {
        std::os::unix::fs::chown(f.unwrap().path(), Some(svc.uid), Some(svc.gid)).unwrap();
    }
    let view = dir.path().join("view");
    let conf = dir.path().join("n.toml");
    write(
        &conf,
        &format!("[quota]\nview_dir = \"{}\"\n", view.display()),
        0o600,
    );
    // The snapshot unit's capabilities, as its AmbientCapabilities= gives them.
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/netledger-snapshot.service"),
    )
    .unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("AmbientCapabilities="))
        .unwrap()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    assert!(!caps.contains("chown"), "{caps}");
    // As the unit's ExecStartPre=+netledger setup does.
    common::run(ns.cmd(common::bin()).arg("setup"));
    let o = ns
        .cmd("setpriv")
        .arg(format!("--reuid={}", svc.uid))
        .arg(format!("--regid={}", svc.gid))
        .args(["--clear-groups", "--no-new-privs"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg("--")
        .arg(&bin.path)
        .arg("--db")
        .arg(&db)
        .arg("--config")
        .arg(&conf)
        .args(["snapshot", "--no-setup"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("quota"), "{err}");
    let as_user = |u: &TestUser, args: &[&str]| {
        text(
            &Command::new("setpriv")
                .args([
                    &format!("--reuid={}", u.uid),
                    &format!("--regid={}", u.gid),
                    "--clear-groups",
                    "--",
                ])
                .args(args)
                .output()
                .unwrap(),
        )
    };
    let (b_s, view_s) = (bin.path.to_str().unwrap(), view.to_str().unwrap());
    for (u, used) in [(&a, 1000), (&b, 2000)] {
        let (out, err, code) = as_user(u, &[b_s, "quota", "--json", "--view-dir", view_s]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v[0]["uid"].as_u64(), v[0]["used"].as_u64()),
            (Some(u.uid.into()), Some(used))
        );
    }
    let (_, _, code) = as_user(&a, &["cat", &format!("{view_s}/{}.json", b.uid)]);
    assert_ne!(code, 0, "A cannot read B's file");
}

fn hook_env(level: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NETLEDGER_QUOTA_USER", "alice".into()),
        ("NETLEDGER_QUOTA_UID", "4000031".into()),
        ("NETLEDGER_QUOTA_LEVEL", level.into()),
        ("NETLEDGER_QUOTA_USED", "53687091200".into()),
        ("NETLEDGER_QUOTA_ALLOWANCE", "53687091200".into()),
        ("NETLEDGER_QUOTA_GRANTED", "0".into()),
        ("NETLEDGER_QUOTA_PERCENT", "100.0".into()),
        ("NETLEDGER_QUOTA_DIRECTION", "total".into()),
        ("NETLEDGER_QUOTA_CYCLE", "2026-11".into()),
        ("NETLEDGER_QUOTA_CYCLE_START", "1793491200".into()),
        ("NETLEDGER_QUOTA_CYCLE_END", "1796083200".into()),
    ]
}

fn contrib_hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib/hooks")
        .join(name)
}

#[test]
fn the_contrib_mail_hook_writes_the_user_a_mail() {
    let dir = tempfile::tempdir().unwrap();
    let sink = dir.path().join("mail.txt");
    let sendmail = dir.path().join("sendmail");
    write(
        &sendmail,
        &format!(
            "#!/bin/sh\necho \"args: $*\" > {0}\ncat >> {0}\n",
            sink.display()
        ),
        0o755,
    );
    let o = Command::new(contrib_hook("quota-mail"))
        .envs(hook_env("critical"))
        .env("SENDMAIL", &sendmail)
        .env("MAIL_DOMAIN", "example.org")
        .env("TZ", "UTC")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let mail = std::fs::read_to_string(&sink).unwrap();
    for want in [
        "args: -t",
        "To: alice@example.org",
        "Subject: Your network use has reached its allowance (100.0%)",
        "used 50.0GiB of your 50.0GiB allowance",
        "The cycle ends on 2026-12-01 00:00 UTC.",
    ] {
        assert!(mail.contains(want), "{want:?} in:\n{mail}");
    }
}

#[test]
fn the_contrib_nftables_hook_throttles_the_user_once_at_critical_only() {
    if !common::require_root("the_contrib_nftables_hook_throttles_the_user_once_at_critical_only") {
        return;
    }
    let ns = Netns::new("nq");
    let run_hook = |level: &str| {
        let o = ns
            .cmd(contrib_hook("quota-throttle-nft"))
            .envs(hook_env(level))
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
    };
    let table = || {
        String::from_utf8_lossy(
            &ns.cmd("nft")
                .args(["list", "table", "inet", "netledger_throttle"])
                .output()
                .unwrap()
                .stdout,
        )
        .into_owned()
    };
    run_hook("warning");
    assert_eq!(table(), "", "a warning changes nothing");
    run_hook("critical");
    run_hook("critical");
    let t = table();
    assert_eq!(t.matches("meta skuid 4000031").count(), 1, "{t}");
    assert!(
        t.contains("limit rate over 128 kbytes/second") && t.contains("drop"),
        "{t}"
    );
}
