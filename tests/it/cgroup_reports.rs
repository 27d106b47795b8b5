//! Reports by cgroup (issue 28): `top --by cgroup|unit|job`, `top --unit|--job`,
//! `netledger job ID` and the metrics' per-unit series, on a database written through the
//! store API with the cgroups a pass would carry (two Slurm jobs of two users, a backup
//! service, a login session, a user's look-alike job the resolver does not trust).

use crate::common::offline::{netledger, ok, with};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
use netledger::attribute::{Cgroup, Direction, Reason};
use netledger::store::{OpenOptions, PassRecord, Store};
use serde_json::Value;

const ALICE: u32 = 1001;
const BOB: u32 = 1002;
const CAROL: u32 = 1003;

const JOB_A: &str = "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0";
const JOB_A_BATCH: &str = "/system.slice/slurmstepd.scope/job_4242/step_batch/user/task_0";
const JOB_B: &str = "/system.slice/slurmstepd.scope/job_4243/step_0/user/task_0";
const BACKUP: &str = "/system.slice/backup.service";
const SESSION: &str = "/user.slice/user-1001.slice/session-7.scope";
/// bob's own `job_42` in the subtree systemd delegates to him: not a job.
const LOOK_ALIKE: &str = "/user.slice/user-1002.slice/user@1002.service/app.slice/job_42";

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp()
}

/// One usage row: who, the program, the cgroup (with its trusted job), where, how much.
struct Row {
    kind: Kind,
    uid: Option<u32>,
    program: Option<&'static str>,
    cgroup: Option<(&'static str, Option<u64>)>,
    remote: &'static str,
    port: u16,
    rx: u64,
    tx: u64,
}

fn user(
    uid: u32,
    program: &'static str,
    cgroup: Option<(&'static str, Option<u64>)>,
    remote: &'static str,
    port: u16,
    (rx, tx): (u64, u64),
) -> Row {
    Row {
        kind: Kind::User,
        uid: Some(uid),
        program: Some(program),
        cgroup,
        remote,
        port,
        rx,
        tx,
    }
}

/// A pass at `ts` charging `rows`.
fn write(store: &mut Store, ts: i64, rows: &[Row], names: &[(u32, &str)]) {
    let mut usage = BTreeMap::new();
    for r in rows {
        let key = UsageKey {
            kind: r.kind,
            uid: r.uid,
            program: r.program.map(String::from),
            cgroup: r.cgroup.map(|(path, job)| Cgroup {
                path: path.into(),
                job,
            }),
            reason: (r.kind == Kind::Unattributed).then_some(Reason::NoSocket),
            via: None,
            container: None,
            protocol: 6,
            direction: Some(Direction::Out),
            remote: r.remote.parse::<IpAddr>().unwrap(),
            port: r.port,
        };
        let t = Traffic {
            rx_bytes: r.rx,
            tx_bytes: r.tx,
            rx_packets: r.rx / 1000 + 1,
            tx_packets: r.tx / 1000 + 1,
        };
        usage.entry(key).or_insert(Traffic::default()).add(&t);
    }
    let plan = PassPlan {
        usage,
        ..PassPlan::default()
    };
    let rec = PassRecord {
        started_at: ts,
        mode: "snapshot",
        ..PassRecord::default()
    };
    let names: Vec<(u32, Option<String>)> = names
        .iter()
        .map(|(u, n)| (*u, Some(n.to_string())))
        .collect();
    store.write_pass(&rec, &plan, &names).unwrap();
}

/// The rows of the first pass: every kind of cgroup, and traffic with none.
fn first_pass() -> Vec<Row> {
    let job_a = Some((JOB_A, Some(4242)));
    vec![
        user(
            ALICE,
            "python3",
            job_a,
            "198.51.100.2",
            443,
            (3_000_000, 20_000),
        ),
        user(
            ALICE,
            "rsync",
            Some((JOB_A_BATCH, Some(4242))),
            "203.0.113.9",
            22,
            (40_000, 900_000),
        ),
        user(
            BOB,
            "curl",
            Some((JOB_B, Some(4243))),
            "2001:db8::2",
            443,
            (10_000, 500_000),
        ),
        user(
            0,
            "rsync",
            Some((BACKUP, None)),
            "203.0.113.50",
            873,
            (5_000, 2_000_000),
        ),
        user(
            ALICE,
            "ssh",
            Some((SESSION, None)),
            "203.0.113.9",
            22,
            (1_000, 2_000),
        ),
        user(
            BOB,
            "nc",
            Some((LOOK_ALIKE, None)),
            "198.51.100.9",
            80,
            (700, 300),
        ),
        user(CAROL, "wget", None, "198.51.100.9", 80, (9_000, 100)),
        Row {
            kind: Kind::Unattributed,
            uid: None,
            program: None,
            cgroup: None,
            remote: "203.0.113.50",
            port: 80,
            rx: 70_000,
            tx: 7_000,
        },
        // Job A's traffic to the cluster's storage: local, charged to nobody.
        Row {
            kind: Kind::Excluded,
            uid: Some(ALICE),
            program: Some("python3"),
            cgroup: job_a,
            remote: "10.0.0.5",
            port: 2049,
            rx: 1_000_000,
            tx: 2_000_000,
        },
    ]
}

const NAMES: [(u32, &str); 4] = [
    (ALICE, "alice"),
    (BOB, "bob"),
    (CAROL, "carol"),
    (0, "root"),
];

/// Two passes in November 2026 (the 18th and the 19th), all in the raw tier.
fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("cgroups.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    write(&mut store, at(2026, 11, 18, 10, 0), &first_pass(), &NAMES);
    let second = [
        user(
            ALICE,
            "python3",
            Some((JOB_A, Some(4242))),
            "198.51.100.2",
            443,
            (500_000, 10_000),
        ),
        user(
            BOB,
            "curl",
            Some((JOB_B, Some(4243))),
            "2001:db8::2",
            443,
            (1_000, 1_000),
        ),
    ];
    write(&mut store, at(2026, 11, 19, 14, 0), &second, &NAMES);
    store
        .catch_up_keys(at(2026, 11, 21, 0, 0), u64::MAX)
        .unwrap();
    db
}

const NOV: [&str; 5] = ["--since", "2026-11-01", "--until", "2026-12-01", "--utc"];

fn json(db: &Path, args: &[&str]) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(db, args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn top_by_unit_job_and_cgroup_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    insta::assert_snapshot!(
        "top_by_unit",
        ok(&db, &with(&["top", "--by", "unit"], &NOV))
    );
    insta::assert_snapshot!(
        "top_by_job_bytes",
        ok(&db, &with(&["top", "--by", "job", "--bytes"], &NOV))
    );
    insta::assert_snapshot!(
        "top_by_cgroup",
        ok(&db, &with(&["top", "--by", "cgroup"], &NOV))
    );
    insta::assert_snapshot!(
        "top_by_remote_of_job",
        ok(
            &db,
            &with(&["top", "--by", "job,remote", "--job", "4242"], &NOV)
        )
    );
    insta::assert_snapshot!(
        "top_of_unit",
        ok(&db, &with(&["top", "--unit", "backup.service"], &NOV))
    );
    insta::assert_snapshot!(
        "top_by_unit_job_json",
        ok(&db, &with(&["top", "--by", "unit,job", "--json"], &NOV))
    );
}

#[test]
fn top_by_unit_job_and_cgroup_keys_are_null_where_none_applies() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let rows = json(
        &db,
        &with(&["top", "--by", "cgroup,unit,job", "--json"], &NOV),
    );
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "uid",
            "user",
            "cgroup",
            "unit",
            "job",
            "reason",
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "total_bytes",
            "covered_since",
            "covered_until"
        ]
    );
    let find = |cgroup: Option<&str>, uid: Option<u32>| {
        rows.iter()
            .find(|r| r["cgroup"].as_str() == cgroup && r["uid"].as_u64() == uid.map(u64::from))
            .unwrap_or_else(|| panic!("{cgroup:?} {uid:?} in {rows:?}"))
    };
    let a = find(Some(JOB_A), Some(ALICE));
    assert_eq!(
        (&a["unit"], &a["job"]),
        (&"slurmstepd.scope".into(), &4242.into())
    );
    assert_eq!(a["rx_bytes"], 3_500_000);
    let look_alike = find(Some(LOOK_ALIKE), Some(BOB));
    assert_eq!(look_alike["unit"], "user@1002.service");
    assert!(look_alike["job"].is_null(), "{look_alike}");
    let backup = find(Some(BACKUP), Some(0));
    assert_eq!(backup["unit"], "backup.service");
    for r in [find(None, Some(CAROL)), find(None, None)] {
        assert!(r["unit"].is_null() && r["job"].is_null(), "{r}");
    }
    let csv = ok(&db, &with(&["top", "--csv", "--by", "unit,job"], &NOV));
    assert_eq!(
        csv.lines().next().unwrap(),
        "uid,user,unit,job,reason,rx_bytes,tx_bytes,rx_packets,tx_packets,total_bytes,\
         covered_since,covered_until"
    );
    assert!(
        csv.lines()
            .any(|l| l.starts_with("1001,alice,slurmstepd.scope,4242,,3540000,930000,")),
        "{csv}"
    );
}

/// Per user and unit (and job), `top` sums what the SQL view `usage` holds, row by row;
/// the rows add up to the period's total, whatever the grouping.
#[test]
fn sums_per_unit_and_job_equal_the_usage_view() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT uid, unit, job, sum(rx_bytes), sum(tx_bytes) FROM usage
             WHERE kind <> 'excluded' GROUP BY uid, unit, job",
        )
        .unwrap();
    type Key = (Option<u64>, Option<String>, Option<u64>);
    let view: BTreeMap<Key, (u64, u64)> = stmt
        .query_map([], |r| {
            Ok(((r.get(0)?, r.get(1)?, r.get(2)?), (r.get(3)?, r.get(4)?)))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(view.len(), 7, "{view:?}");
    let rows = json(
        &db,
        &with(
            &["top", "--by", "unit,job", "--json", "--limit", "100"],
            &NOV,
        ),
    );
    let top: BTreeMap<Key, (u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["uid"].as_u64(),
                    r["unit"].as_str().map(String::from),
                    r["job"].as_u64(),
                ),
                (
                    r["rx_bytes"].as_u64().unwrap(),
                    r["tx_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(top, view);
    let total = |rows: &[Value]| -> u64 {
        rows.iter()
            .map(|r| r["total_bytes"].as_u64().unwrap())
            .sum()
    };
    let per_user = total(&json(&db, &with(&["top", "--json"], &NOV)));
    for by in ["unit", "job", "cgroup", "unit,remote", "job,program"] {
        let rows = json(
            &db,
            &with(&["top", "--json", "--limit", "100", "--by", by], &NOV),
        );
        assert_eq!(total(&rows), per_user, "--by {by}");
    }
}

#[test]
fn job_shows_what_one_job_moved_per_user_and_remote() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    insta::assert_snapshot!("job_4242", ok(&db, &with(&["job", "4242"], &NOV)));
    let rows = json(&db, &with(&["job", "4242", "--json"], &NOV));
    assert_eq!(rows.len(), 2, "{rows:?}");
    for r in &rows {
        assert_eq!((&r["uid"], &r["job"]), (&ALICE.into(), &4242.into()), "{r}");
    }
    let by_remote: BTreeMap<&str, (u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["remote"].as_str().unwrap(),
                (
                    r["rx_bytes"].as_u64().unwrap(),
                    r["tx_bytes"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        by_remote,
        [
            ("198.51.100.2", (3_500_000, 30_000)),
            ("203.0.113.9", (40_000, 900_000))
        ]
        .into()
    );
    // Without --since: all that is kept, from the first stored row, said plainly.
    let all = json(&db, &["job", "4242", "--json"]);
    assert_eq!(uncovered(&all), uncovered(&rows));
    assert!(all
        .iter()
        .all(|r| r["covered_since"] == at(2026, 11, 18, 10, 0)));
    let table = ok(&db, &["job", "4242", "--utc"]);
    assert!(
        table.starts_with("usage from 2026-11-18 10:00:00+00:00 to ") && !table.contains("asked"),
        "{table}"
    );
    // A known job, nothing in the period: an empty table, exit 0.
    let quiet = ok(
        &db,
        &[
            "job",
            "4243",
            "--since",
            "2026-11-25",
            "--until",
            "2026-11-26",
            "--utc",
        ],
    );
    assert!(quiet.contains("\ntotal "), "{quiet}");
    assert_eq!(quiet.lines().count(), 6, "{quiet}");
    // A job the database does not know, and the user's look-alike: exit 1, one line.
    for id in ["4244", "42"] {
        let (out, err, code) = netledger(&db, "UTC", &["job", id]);
        assert_eq!((out.as_str(), code), ("", 1), "{err}");
        assert_eq!(
            err,
            format!(
                "netledger: job {id} is not in {}: no socket created in its cgroups has been \
                 charged (check the id, and that the job ran on this host)\n",
                db.display()
            )
        );
    }
    let (_, err, code) = netledger(&db, "UTC", &["job", "x42"]);
    assert_eq!(code, 2, "{err}");
}

/// The rows without the span they cover.
fn uncovered(rows: &[Value]) -> Vec<Value> {
    rows.iter()
        .map(|r| {
            let mut r = r.clone();
            let m = r.as_object_mut().unwrap();
            m.remove("covered_since");
            m.remove("covered_until");
            r
        })
        .collect()
}

#[test]
fn top_of_a_unit_or_a_job_filters_and_an_unknown_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let rows = json(&db, &with(&["top", "--json", "--job", "4243"], &NOV));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["user"], &rows[0]["rx_bytes"]),
        (&"bob".into(), &11_000.into())
    );
    let rows = json(
        &db,
        &with(
            &[
                "top",
                "--json",
                "--unit",
                "slurmstepd.scope",
                "--user",
                "bob",
            ],
            &NOV,
        ),
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (out, err, code) = netledger(&db, "UTC", &with(&["top", "--unit", "nginx.service"], &NOV));
    assert_eq!((out.as_str(), code), ("", 1));
    assert_eq!(
        err,
        format!(
            "netledger: unit \"nginx.service\" is not in {}: no socket created in its cgroups \
             has been charged (give a unit as `top --by unit` lists it)\n",
            db.display()
        )
    );
    let (_, err, code) = netledger(
        &db,
        "UTC",
        &with(&["top", "--unit", "backup.service", "--job", "4242"], &NOV),
    );
    assert_eq!(code, 2, "{err}");
}

/// Rolled up into the daily tier (which keeps users only), grouped by unit the answer
/// begins where the hours do, and says so.
#[test]
fn top_by_unit_over_the_daily_tier_says_where_its_answer_begins() {
    use netledger::store::retention::Retention;
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    // The 18th goes to the daily tier, the 19th stays in hours.
    let r = Retention {
        raw: std::time::Duration::from_secs(86_400),
        hourly: std::time::Duration::from_secs(16 * 86_400),
        ..Retention::default()
    };
    let st = store.roll_up(at(2026, 12, 5, 0, 0), &r, u64::MAX).unwrap();
    assert!(st.hourly_rows > 0 && !st.behind, "{st:?}");
    drop(store);
    let rows = json(&db, &with(&["top", "--by", "unit", "--json"], &NOV));
    for r in &rows {
        assert_eq!(r["covered_since"], at(2026, 11, 19, 0, 0), "{r}");
    }
    let job: u64 = json(&db, &with(&["job", "4242", "--json"], &NOV))
        .iter()
        .map(|r| r["rx_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(job, 500_000, "the 19th's only");
    let text = ok(&db, &with(&["top", "--by", "unit"], &NOV));
    assert_eq!(
        text.lines().next().unwrap(),
        "usage from 2026-11-19 00:00:00+00:00 to 2026-12-01 00:00:00+00:00 (older usage is \
         kept per user only, without programs, remotes, ports or cgroups; asked from \
         2026-11-01 00:00:00+00:00)"
    );
}

/// A database with the first pass's traffic today (UTC), for the metrics' per-unit series.
fn today_db(dir: &Path) -> PathBuf {
    let db = dir.join("today.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let now = Utc::now().timestamp();
    let today = now - now.rem_euclid(86_400);
    write(&mut store, today + (now - today) / 2, &first_pass(), &NAMES);
    db
}

fn metrics(db: &Path, config: &str) -> (String, String, i32) {
    let path = db.with_extension("toml");
    std::fs::write(&path, config).unwrap();
    netledger(db, "UTC", &["--config", path.to_str().unwrap(), "metrics"])
}

fn unit_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("netledger_unit_"))
        .collect()
}

#[test]
fn metrics_per_unit_are_opt_in_and_never_per_job() {
    let dir = tempfile::tempdir().unwrap();
    let db = today_db(dir.path());
    let (off, err, code) = metrics(&db, "");
    assert_eq!(code, 0, "{err}");
    assert!(unit_lines(&off).is_empty(), "{off}");
    assert!(off.contains("netledger_user_receive_bytes_total{uid=\"1001\""));

    let (listed, err, code) = metrics(
        &db,
        "metrics_units = [\"backup.service\", \"nginx.service\", \"slurmstepd.scope\"]\n",
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        unit_lines(&listed),
        [
            "netledger_unit_receive_bytes_total{unit=\"backup.service\"} 5000",
            "netledger_unit_receive_bytes_total{unit=\"nginx.service\"} 0",
            "netledger_unit_receive_bytes_total{unit=\"slurmstepd.scope\"} 3050000",
            "netledger_unit_transmit_bytes_total{unit=\"backup.service\"} 2000000",
            "netledger_unit_transmit_bytes_total{unit=\"nginx.service\"} 0",
            "netledger_unit_transmit_bytes_total{unit=\"slurmstepd.scope\"} 1420000",
        ],
        "{listed}"
    );
    // The rest is as without them.
    let rest = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.contains("netledger_unit_") && !l.contains("database_bytes"))
            .map(String::from)
            .collect()
    };
    assert_eq!(rest(&listed), rest(&off));

    let (top, err, code) = metrics(&db, "metrics_units = 2\n");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        unit_lines(&top),
        [
            "netledger_unit_receive_bytes_total{unit=\"backup.service\"} 5000",
            "netledger_unit_receive_bytes_total{unit=\"slurmstepd.scope\"} 3050000",
            "netledger_unit_transmit_bytes_total{unit=\"backup.service\"} 2000000",
            "netledger_unit_transmit_bytes_total{unit=\"slurmstepd.scope\"} 1420000",
        ],
        "{top}"
    );
    assert!(!top.contains("job"), "no series per job: {top}");
}

#[test]
fn a_bad_metrics_units_is_one_line_naming_the_key_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let db = today_db(dir.path());
    for bad in ["\"nginx\"", "0", "[\"4242\"]"] {
        let (out, err, code) = metrics(&db, &format!("metrics_units = {bad}\n"));
        assert_eq!((out.as_str(), code), ("", 2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("netledger: configuration {}: metrics_units = {bad}: write how many of the busiest units", db.with_extension("toml").display())),
            "{err}"
        );
    }
}
