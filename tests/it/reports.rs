//! Reports people read: `top`, `report`, `export` and the SQL views, on a deterministic
//! database built through the real write path (the store API that passes use).

use crate::common;
use crate::common::model::{counters, reversed, tuple};
use crate::common::offline::{netledger, ok, with};

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::{TimeZone, Utc};
use netledger::account::account_pass;
use netledger::attribute::{Attributed, Attribution, Direction, Reason, Verdict};
use netledger::model::Flow;
use netledger::store::{OpenOptions, PassRecord, Store};
use serde_json::Value;

const HOST: &str = "198.51.100.1";

struct F {
    id: u32,
    proto: u8,
    local: (&'static str, u16),
    remote: (&'static str, u16),
    /// Initiator → responder bytes and packets, responder → initiator.
    orig: (u64, u64),
    reply: (u64, u64),
    verdict: Verdict,
    direction: Direction,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn to_flow(f: &F) -> (Flow, Attributed) {
    let (l, r) = (f.local, f.remote);
    let (a, b) = match f.direction {
        Direction::Out => (l, r),
        Direction::In => (r, l),
    };
    let flow = common::model::flow(f.id, f.proto, a, b, f.orig, f.reply);
    let port = match f.direction {
        Direction::Out => r.1,
        Direction::In => l.1,
    };
    let at = Attributed {
        verdict: f.verdict.clone(),
        direction: Some(f.direction),
        remote: ip(r.0),
        port,
    };
    (flow, at)
}

fn user(uid: u32, program: &str, direction: Direction) -> Verdict {
    Verdict::User(Attribution {
        cgroup: None,
        uid,
        program: Some(program.into()),
        direction,
        via: Default::default(),
        container: None,
    })
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
        .unwrap()
        .timestamp()
}

/// A pass: its time, its flows, and the user names it resolved.
type Pass = (i64, Vec<F>, Vec<(u32, Option<&'static str>)>);

const ALICE: u32 = 1001;
const BOB: u32 = 1002;
const CAROL: u32 = 1003;
const DAVE: u32 = 1004;

/// A database with known usage over several days, users, programs and remotes; carol's
/// account is "deleted" (her name no longer resolves) by the last pass.
fn build_db(dir: &Path) -> PathBuf {
    use Direction::{In, Out};
    let db = dir.join("reports.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let firefox = |orig, reply| F {
        id: 1,
        proto: 6,
        local: (HOST, 40001),
        remote: ("198.51.100.2", 443),
        orig,
        reply,
        verdict: user(ALICE, "firefox", Out),
        direction: Out,
    };
    let passes: Vec<Pass> = vec![
        (
            at(2026, 11, 2, 4, 30),
            vec![F {
                id: 9,
                proto: 6,
                local: (HOST, 40009),
                remote: ("198.51.100.9", 443),
                orig: (1_000, 10),
                reply: (2_000, 12),
                verdict: user(DAVE, "wget", Out),
                direction: Out,
            }],
            vec![(DAVE, Some("dave"))],
        ),
        (
            at(2026, 11, 18, 10, 0),
            vec![
                firefox((20_000, 300), (3_000_000, 2_100)),
                F {
                    id: 2,
                    proto: 6,
                    local: ("2001:db8::1", 40002),
                    remote: ("2001:db8::2", 443),
                    orig: (500_000, 400),
                    reply: (10_000, 200),
                    verdict: user(BOB, "curl", Out),
                    direction: Out,
                },
            ],
            vec![(ALICE, Some("alice")), (BOB, Some("bob"))],
        ),
        (
            at(2026, 11, 18, 23, 30),
            vec![F {
                id: 3,
                proto: 6,
                local: (HOST, 22),
                remote: ("203.0.113.9", 51000),
                orig: (40_000, 500),
                reply: (900_000, 700),
                verdict: user(ALICE, "sshd", In),
                direction: In,
            }],
            vec![(ALICE, Some("alice"))],
        ),
        (
            at(2026, 11, 19, 9, 0),
            vec![
                F {
                    id: 4,
                    proto: 17,
                    local: (HOST, 5353),
                    remote: ("198.51.100.7", 53),
                    orig: (3_000, 30),
                    reply: (12_000, 30),
                    verdict: user(CAROL, "python3", Out),
                    direction: Out,
                },
                F {
                    id: 5,
                    proto: 6,
                    local: (HOST, 40005),
                    remote: ("203.0.113.50", 80),
                    orig: (7_000, 60),
                    reply: (70_000, 80),
                    verdict: Verdict::Unattributed(Reason::NoSocket),
                    direction: Out,
                },
                F {
                    id: 6,
                    proto: 6,
                    local: ("10.0.0.1", 40006),
                    remote: ("10.0.0.5", 445),
                    orig: (1_000_000, 900),
                    reply: (2_000_000, 1_500),
                    verdict: Verdict::Excluded(None),
                    direction: Out,
                },
            ],
            vec![(CAROL, Some("carol"))],
        ),
        (
            at(2026, 11, 20, 14, 0),
            vec![
                firefox((30_000, 400), (5_000_000, 3_500)),
                F {
                    id: 7,
                    proto: 17,
                    local: (HOST, 5353),
                    remote: ("198.51.100.7", 53),
                    orig: (1_000, 10),
                    reply: (4_000, 10),
                    verdict: user(CAROL, "python3", Out),
                    direction: Out,
                },
            ],
            // carol's account is gone: the name cannot be resolved any more.
            vec![(ALICE, Some("alice")), (CAROL, None)],
        ),
    ];
    for (ts, fs, names) in passes {
        let (flows, ats): (Vec<Flow>, Vec<Attributed>) = fs.iter().map(to_flow).unzip();
        let prev = store.load_state().unwrap();
        let plan = account_pass(ts, &flows, &ats, &prev, 3);
        let names: Vec<(u32, Option<String>)> = names
            .into_iter()
            .map(|(u, n)| (u, n.map(String::from)))
            .collect();
        let rec = PassRecord {
            started_at: ts,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &names).unwrap();
    }
    // The sums per key of the raw tier, as the passes' rollups keep them (none rolled up:
    // every pass is within the raw retention of the last).
    store
        .catch_up_keys(at(2026, 11, 21, 0, 0), u64::MAX)
        .unwrap();
    db
}

const NOV: [&str; 5] = ["--since", "2026-11-01", "--until", "2026-12-01", "--utc"];

#[test]
fn top_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let names = dir.path().join("names");
    std::fs::write(&names, "198.51.100.0/24 example-net\n198.51.100.2 mirror\n").unwrap();
    let names = names.to_str().unwrap();
    insta::assert_snapshot!("top_by_user", ok(&db, &with(&["top"], &NOV)));
    insta::assert_snapshot!(
        "top_by_user_program_bytes",
        ok(
            &db,
            &with(&["top", "--by", "user,program", "--bytes"], &NOV)
        )
    );
    insta::assert_snapshot!(
        "top_by_remote_named",
        ok(
            &db,
            &with(&["top", "--by", "remote", "--names", names], &NOV)
        )
    );
    insta::assert_snapshot!(
        "top_by_port",
        ok(&db, &with(&["top", "--by", "port"], &NOV))
    );
    insta::assert_snapshot!(
        "top_user_alice_limit_1",
        ok(
            &db,
            &with(
                &["top", "--by", "remote", "--user", "alice", "--limit", "1"],
                &NOV
            )
        )
    );
    // A deleted account's uid is still named from the database.
    insta::assert_snapshot!(
        "top_deleted_user_by_name",
        ok(&db, &with(&["top", "--user", "carol"], &NOV))
    );
}

#[test]
fn report_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    for p in ["hour", "day", "week", "month"] {
        insta::assert_snapshot!(
            format!("report_{p}"),
            ok(&db, &with(&["report", "--period", p], &NOV))
        );
    }
    insta::assert_snapshot!(
        "report_day_bob",
        ok(&db, &with(&["report", "--user", "bob"], &NOV))
    );
}

#[test]
fn empty_period_prints_the_header_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let empty = ["--since", "2025-01-01", "--until", "2025-02-01", "--utc"];
    insta::assert_snapshot!("top_empty", ok(&db, &with(&["top"], &empty)));
    insta::assert_snapshot!("report_empty", ok(&db, &with(&["report"], &empty)));
    assert_eq!(ok(&db, &with(&["top", "--json"], &empty)).trim(), "[]");
    assert_eq!(
        ok(&db, &with(&["report", "--csv"], &empty)),
        "period,uid,user,rx_bytes,tx_bytes,rx_packets,tx_packets,total_bytes,covered_since,\
         covered_until\n"
    );
}

fn json(db: &Path, args: &[&str]) -> Vec<Value> {
    serde_json::from_str::<Value>(&ok(db, args))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn top_json_and_csv_fields() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let rows = json(&db, &with(&["top", "--json"], &NOV));
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
    let alice = &rows[0];
    assert_eq!(alice["uid"], 1001);
    assert_eq!(alice["user"], "alice");
    assert_eq!(alice["rx_bytes"], 5_000_000 + 40_000);
    assert_eq!(alice["tx_bytes"], 30_000 + 900_000);
    assert_eq!(alice["rx_packets"], 3_500 + 500);
    assert_eq!(alice["tx_packets"], 400 + 700);
    let unattributed = rows.iter().find(|r| r["uid"].is_null()).unwrap();
    assert_eq!(unattributed["reason"], "no-socket");
    assert_eq!(unattributed["rx_bytes"], 70_000);
    assert!(
        rows.iter().all(|r| r["uid"] != 0),
        "excluded traffic is not a row"
    );

    let rows = json(&db, &with(&["top", "--json", "--by", "port,remote"], &NOV));
    let dns = rows.iter().find(|r| r["port"] == 53).unwrap();
    assert_eq!(dns["protocol"], "udp");
    assert_eq!(dns["remote"], "198.51.100.7");
    assert_eq!(dns["user"], "carol");
    assert_eq!(dns["tx_bytes"], 4_000);
    assert_eq!(dns["rx_bytes"], 16_000);

    let csv = ok(&db, &with(&["top", "--csv", "--by", "program"], &NOV));
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "uid,user,program,reason,rx_bytes,tx_bytes,rx_packets,tx_packets,total_bytes,\
         covered_since,covered_until"
    );
    assert_eq!(
        lines.next().unwrap(),
        "1001,alice,firefox,,5000000,30000,3500,400,5030000,1793491200,1796083200"
    );
    assert!(csv
        .lines()
        .any(|l| l == ",,,no-socket,70000,7000,80,60,77000,1793491200,1796083200"));
}

#[test]
fn report_json_matches_sql_views() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let rows = json(&db, &with(&["report", "--period", "month", "--json"], &NOV));
    let c = rusqlite::Connection::open(&db).unwrap();
    for r in &rows {
        let (rx, tx): (i64, i64) = c
            .query_row(
                "SELECT rx_bytes, tx_bytes FROM usage_monthly WHERE period = ?1 AND uid IS ?2",
                rusqlite::params![r["period"].as_str().unwrap(), r["uid"].as_i64()],
                |x| Ok((x.get(0)?, x.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            (rx, tx),
            (
                r["rx_bytes"].as_i64().unwrap(),
                r["tx_bytes"].as_i64().unwrap()
            )
        );
    }
    assert_eq!(
        rows.len(),
        5,
        "alice, bob, carol, dave and unattributed: {rows:?}"
    );
}

#[test]
fn export_jsonl_and_csv() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let out = ok(
        &db,
        &[
            "export",
            "--since",
            "2026-11-18",
            "--until",
            "2026-11-19",
            "--utc",
        ],
    );
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    let first = &lines[0];
    assert_eq!(first["time"], "2026-11-18T10:00:00Z");
    assert_eq!(first["kind"], "user");
    let keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "ts",
            "time",
            "kind",
            "uid",
            "user",
            "program",
            "reason",
            "protocol",
            "direction",
            "remote",
            "port",
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "total_bytes",
            "via",
            "container",
            "container_uid",
            "cgroup",
            "unit",
            "job",
            "covered_since",
            "covered_until"
        ]
    );
    let csv = ok(
        &db,
        &[
            "export",
            "--since",
            "2026-11-19",
            "--until",
            "2026-11-20",
            "--utc",
            "--format",
            "csv",
        ],
    );
    insta::assert_snapshot!("export_csv", csv);
}

/// Day boundaries follow the shown time zone, DST included: 2026-11-02T04:30Z is
/// 2026-11-01 23:30 in New York (EST, after the change from EDT on Nov 1) and
/// 2026-11-02 13:30 in Tokyo.
#[test]
fn day_boundaries_follow_the_time_zone_across_dst() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let day_of_dave = |tz: &str| -> String {
        let (out, err, code) = netledger(
            &db,
            tz,
            &[
                "report",
                "--json",
                "--user",
                "dave",
                "--since",
                "2026-10-30",
                "--until",
                "2026-11-05",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        v[0]["period"].as_str().unwrap().to_string()
    };
    assert_eq!(day_of_dave("America/New_York"), "2026-11-01");
    assert_eq!(day_of_dave("Asia/Tokyo"), "2026-11-02");
    assert_eq!(day_of_dave("UTC"), "2026-11-02");
    // --since is read in the shown zone too: New York's Nov 2 starts at 05:00Z (EST),
    // after dave's 04:30Z traffic.
    let (out, _, _) = netledger(
        &db,
        "America/New_York",
        &[
            "top",
            "--json",
            "--user",
            "dave",
            "--since",
            "2026-11-02",
            "--until",
            "2026-11-03",
        ],
    );
    assert_eq!(out.trim(), "[]");
    let (out, _, _) = netledger(
        &db,
        "America/New_York",
        &[
            "top",
            "--json",
            "--user",
            "dave",
            "--since",
            "2026-11-01",
            "--until",
            "2026-11-02",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["tx_bytes"],
        1_000
    );
    // --utc switches both reading and showing.
    let (out, _, _) = netledger(
        &db,
        "America/New_York",
        &[
            "report",
            "--json",
            "--utc",
            "--user",
            "dave",
            "--since",
            "2026-11-02",
            "--until",
            "2026-11-03",
        ],
    );
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()[0]["period"],
        "2026-11-02"
    );
}

/// The "Querying with SQL" queries of docs/guide.md run against a generated database, so they
/// cannot rot; the first one agrees with `report --period month --json`.
#[test]
fn readme_sql_queries_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/guide.md")).unwrap();
    let section = guide
        .split("## Querying with SQL")
        .nth(1)
        .expect("docs/guide.md has a 'Querying with SQL' section");
    let section = section.split("\n## ").next().unwrap();
    let queries: Vec<&str> = section
        .split("```sql\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(queries.len(), 7, "seven queries in docs/guide.md");
    let c = rusqlite::Connection::open(&db).unwrap();
    let mut results = vec![];
    // The last is about SSH sessions (issue 16), which the generated month has none of: it
    // runs after one is added (below), so the others' results stay as they were.
    let (queries, rest) = queries.split_at(5);
    let (via_query, container_query) = rest.split_at(1);
    for q in queries {
        // The guide's queries use the current month and yesterday; pin "now" to the data.
        let q = q.replace("'now'", "'2026-11-20 12:00:00'");
        let mut st = c.prepare(&q).unwrap_or_else(|e| panic!("{q}: {e}"));
        let n = st.column_count();
        let rows: Vec<Vec<String>> = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect()
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(!rows.is_empty(), "query returned nothing: {q}");
        results.push(rows);
    }
    insta::assert_debug_snapshot!("readme_sql_results", results);
    // dave's 2 MB over ssh, through root's sshd (stored as via_uid 0, migrations 0007 and
    // 0015), and 5 B of his own that do not count.
    c.execute_batch(
        "INSERT INTO usage_raw (ts, uid, kind, reason, via_uid, container, container_uid,
                               program, cgroup, remote, protocol, port, direction, rx_bytes,
                               tx_bytes, rx_packets, tx_packets)
         SELECT 1795132800, 1004, 0, '', r.via, 0, -1, (SELECT min(id) FROM programs), 0,
                (SELECT min(id) FROM remotes), 6, 22, 2, 2000000, r.tx, 1, 1
         FROM (SELECT 0 AS via, 1000 AS tx UNION ALL SELECT -1, 5) r;",
    )
    .unwrap();
    let q = via_query[0].replace("'now'", "'2026-11-20 12:00:00'");
    let rows: Vec<(String, i64)> = c
        .prepare(&q)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [("dave".to_string(), 2_001_000)], "{q}");
    // Containers (issue 14): carol's 3 MB in docker-3f2a as uid 1000 inside (stored as
    // container and container_uid, migrations 0010 and 0015), beside her own traffic on
    // the host.
    c.execute_batch(
        "INSERT INTO containers (name, first_seen, last_seen)
         VALUES ('docker-3f2a', 1795132800, 1795132800);
         INSERT INTO usage_raw (ts, uid, kind, reason, via_uid, container, container_uid,
                               program, cgroup, remote, protocol, port, direction, rx_bytes,
                               tx_bytes, rx_packets, tx_packets)
         SELECT 1795132800, 1003, 0, '', -1, (SELECT id FROM containers), 1000,
                (SELECT min(id) FROM programs), 0, (SELECT min(id) FROM remotes), 6, 443, 1,
                3000000, 0, 1, 1;",
    )
    .unwrap();
    let q = container_query[0].replace("'now'", "'2026-11-20 12:00:00'");
    let rows: Vec<(String, Option<String>, i64)> = c
        .prepare(&q)
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .filter(|r: &(String, _, _)| r.0 == "carol")
        .collect();
    assert_eq!(
        rows,
        [
            (
                "carol".to_string(),
                Some("docker-3f2a".to_string()),
                3_000_000
            ),
            ("carol".to_string(), None, 20_000)
        ],
        "{q}"
    );
}

/// `netledger top | head` closes stdout early: the report exits 0 without a message.
#[test]
fn closed_stdout_exits_0_quietly() {
    use std::os::fd::{FromRawFd, OwnedFd};
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    for args in [
        vec!["top"],
        vec!["report", "--json"],
        vec!["export", "--since", "3650d"],
    ] {
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills two fresh descriptors; we own both.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fds[0] and fds[1] are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        drop(read); // No reader: every write fails with EPIPE.
        let o = Command::new(common::bin())
            .arg("--db")
            .arg(&db)
            .args(&args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            o.stderr.is_empty(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// After rollup with one key kept per user and hour, the remainder shows as "(other)" and
/// every user's totals are what they were.
#[test]
fn rolled_up_remainder_shows_as_other_and_totals_stay() {
    use netledger::store::retention::Retention;
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // One more pass: dave talks to three remotes in one hour.
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let fs: Vec<F> = [("198.51.100.21", 5_000), ("198.51.100.22", 7_000)]
        .into_iter()
        .chain([("198.51.100.23", 3_000)])
        .enumerate()
        .map(|(i, (remote, bytes))| F {
            id: 101 + i as u32,
            proto: 6,
            local: (HOST, 41000 + i as u16),
            remote: (remote, 443),
            orig: (bytes / 10, 10),
            reply: (bytes, 20),
            verdict: user(DAVE, "wget", Direction::Out),
            direction: Direction::Out,
        })
        .collect();
    let (flows, ats): (Vec<Flow>, Vec<Attributed>) = fs.iter().map(to_flow).unzip();
    let ts = at(2026, 11, 10, 9, 0);
    let plan = account_pass(ts, &flows, &ats, &store.load_state().unwrap(), 3);
    let rec = PassRecord {
        started_at: ts,
        mode: "snapshot",
        ..PassRecord::default()
    };
    store.write_pass(&rec, &plan, &[]).unwrap();
    drop(store);
    let by_user = |db: &Path| -> Vec<Value> { json(db, &with(&["top", "--json"], &NOV)) };
    let before = by_user(&db);
    let remotes_before = ok(&db, &with(&["top", "--by", "remote,port"], &NOV));
    assert!(!remotes_before.contains("(other)"), "{remotes_before}");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let r = Retention {
        raw: std::time::Duration::from_secs(86_400),
        hourly_top: 1,
        ..Retention::default()
    };
    let st = store.roll_up(at(2026, 12, 5, 0, 0), &r, u64::MAX).unwrap();
    assert!(st.raw_rows > 0 && !st.behind, "{st:?}");
    drop(store);
    assert_eq!(by_user(&db), before, "per-user totals moved");
    let remotes = ok(&db, &with(&["top", "--by", "remote,port"], &NOV));
    assert!(remotes.contains("(other)"), "{remotes}");
    insta::assert_snapshot!("top_by_remote_after_rollup", remotes);
}

/// Issue 26: grouped by what the daily tier does not keep (program, remote, port), a
/// window that begins in it is answered from where the keys begin, and says so: the
/// table's first line and every JSON row's `covered_since`. Per user it is answered whole.
#[test]
fn top_by_key_over_the_daily_tier_says_where_its_answer_begins() {
    use netledger::store::retention::Retention;
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    // Nov 2 and Nov 18 go to the daily tier, Nov 19 and 20 stay in hours.
    let r = Retention {
        raw: std::time::Duration::from_secs(86_400),
        hourly: std::time::Duration::from_secs(16 * 86_400),
        ..Retention::default()
    };
    let st = store.roll_up(at(2026, 12, 5, 0, 0), &r, u64::MAX).unwrap();
    assert!(st.hourly_rows > 0 && !st.behind, "{st:?}");
    drop(store);
    let (from, end) = (at(2026, 11, 19, 0, 0), at(2026, 12, 1, 0, 0));
    let by_remote = ["top", "--by", "remote", "--limit", "100", "--json"];
    let rows = json(&db, &with(&by_remote, &NOV));
    assert!(!rows.is_empty());
    for r in &rows {
        assert_eq!(
            (&r["covered_since"], &r["covered_until"]),
            (&from.into(), &end.into())
        );
    }
    // The same answer as asked from there.
    let later = ["--since", "2026-11-19", "--until", "2026-12-01", "--utc"];
    assert_eq!(rows, json(&db, &with(&by_remote, &later)));
    // Per user, the whole window: more traffic.
    let users = json(&db, &with(&["top", "--json"], &NOV));
    assert!(users
        .iter()
        .all(|r| r["covered_since"] == at(2026, 11, 1, 0, 0)));
    let sum = |rows: &[Value]| -> u64 {
        rows.iter()
            .map(|r| r["total_bytes"].as_u64().unwrap())
            .sum()
    };
    assert!(sum(&users) > sum(&rows), "{users:?}");
    let text = ok(&db, &with(&["top", "--by", "program,port"], &NOV));
    assert_eq!(
        text.lines().next().unwrap(),
        "usage from 2026-11-19 00:00:00+00:00 to 2026-12-01 00:00:00+00:00 (older usage is \
         kept per user only, without programs, remotes, ports or cgroups; asked from 2026-11-01 \
         00:00:00+00:00)"
    );
    let text = ok(&db, &with(&["top", "--by", "via"], &NOV));
    assert!(
        text.starts_with("usage from 2026-11-01 00:00:00+00:00 to 2026-12-01 00:00:00+00:00\n"),
        "{text}"
    );
}

/// Regression (issue 18): `top --since 2m` printed 0 B although about 1 MB had moved 60–90 s
/// before: usage is stored in 5-minute buckets (then hours, then days), and a bucket counted
/// only if it began after --since. Every row the period overlaps now counts whole, in `top`,
/// `report` and `export` alike, and the output says which span that covered.
#[test]
fn a_period_that_starts_inside_a_stored_bucket_counts_it_and_says_so() {
    use netledger::store::retention::Retention;
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // The 10:00 pass of Nov 18 charged alice 3,020,000 B and bob 510,000 B in the
    // 10:00–10:05 bucket; asked from 10:02, it is the bucket that holds the period's start.
    let span = |since: &str, until: &str| {
        vec![
            "--since".to_string(),
            since.to_string(),
            "--until".to_string(),
            until.to_string(),
            "--utc".to_string(),
        ]
    };
    let args = |cmd: &[&str], span: &[String]| -> Vec<String> {
        cmd.iter()
            .map(|s| s.to_string())
            .chain(span.iter().cloned())
            .collect()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        ok(&db, &a)
    };
    let total = |rows: &[Value]| -> u64 {
        rows.iter()
            .map(|r| r["total_bytes"].as_u64().unwrap())
            .sum()
    };
    let inside = span("2026-11-18T10:02", "2026-11-18T11:00");
    let rows: Vec<Value> = serde_json::from_str(&run(args(&["top", "--json"], &inside))).unwrap();
    assert_eq!(total(&rows), 3_020_000 + 510_000, "{rows:?}");
    for r in &rows {
        assert_eq!(r["covered_since"], at(2026, 11, 18, 10, 0), "{r}");
        assert_eq!(r["covered_until"], at(2026, 11, 18, 11, 0), "{r}");
    }
    let table = run(args(&["top"], &inside));
    assert_eq!(
        table.lines().next().unwrap(),
        "usage from 2026-11-18 10:00:00+00:00 to 2026-11-18 11:00:00+00:00 (usage is stored \
         in whole 5-minute buckets; asked from 2026-11-18 10:02:00+00:00)",
        "{table}"
    );
    let rows: Vec<Value> = serde_json::from_str(&run(args(
        &["report", "--period", "hour", "--json"],
        &inside,
    )))
    .unwrap();
    assert_eq!(total(&rows), 3_020_000 + 510_000, "{rows:?}");
    assert!(rows.iter().all(
        |r| r["period"] == "2026-11-18 10:00" && r["covered_since"] == at(2026, 11, 18, 10, 0)
    ));
    let lines: Vec<Value> = run(args(&["export"], &inside))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().all(
        |l| l["ts"] == at(2026, 11, 18, 10, 0) && l["covered_since"] == at(2026, 11, 18, 10, 0)
    ));

    // The end of a period inside a bucket counts it whole too (as it always did), and says
    // so: the bucket ends at 10:05 (or now, if the clock is before that).
    let end = span("2026-11-18T09:00", "2026-11-18T10:01");
    let rows: Vec<Value> = serde_json::from_str(&run(args(&["top", "--json"], &end))).unwrap();
    let now = chrono::Utc::now().timestamp();
    let until = at(2026, 11, 18, 10, 1).max(at(2026, 11, 18, 10, 5).min(now));
    assert_eq!(total(&rows), 3_020_000 + 510_000);
    assert!(rows.iter().all(|r| r["covered_until"] == until), "{rows:?}");

    // Rolled up into hours, then days: the hour and the day that hold the start count.
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let hourly = Retention {
        raw: std::time::Duration::from_secs(86_400),
        ..Retention::default()
    };
    assert!(
        !store
            .roll_up(at(2026, 12, 5, 0, 0), &hourly, u64::MAX)
            .unwrap()
            .behind
    );
    drop(store);
    let in_hour = span("2026-11-18T10:30", "2026-11-18T12:00");
    let rows: Vec<Value> = serde_json::from_str(&run(args(&["top", "--json"], &in_hour))).unwrap();
    assert_eq!(total(&rows), 3_020_000 + 510_000, "hourly: {rows:?}");
    assert!(rows
        .iter()
        .all(|r| r["covered_since"] == at(2026, 11, 18, 10, 0)));
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let daily = Retention {
        raw: std::time::Duration::from_secs(86_400),
        hourly: std::time::Duration::from_secs(86_400),
        ..Retention::default()
    };
    assert!(
        !store
            .roll_up(at(2026, 12, 5, 0, 0), &daily, u64::MAX)
            .unwrap()
            .behind
    );
    drop(store);
    let in_day = span("2026-11-18T12:00", "2026-11-18T13:00");
    let rows: Vec<Value> = serde_json::from_str(&run(args(&["top", "--json"], &in_day))).unwrap();
    // The day also holds alice's 23:30 session: a day is one sum.
    assert_eq!(
        total(&rows),
        3_020_000 + 510_000 + 940_000,
        "daily: {rows:?}"
    );
    assert!(rows
        .iter()
        .all(|r| r["covered_since"] == at(2026, 11, 18, 0, 0)
            && r["covered_until"] == at(2026, 11, 19, 0, 0)));
    let table = run(args(&["report", "--period", "day"], &in_day));
    assert!(
        table.starts_with(
            "usage from 2026-11-18 00:00:00+00:00 to 2026-11-19 00:00:00+00:00 (usage is \
             stored in whole days; asked from 2026-11-18 12:00:00+00:00 to 2026-11-18 \
             13:00:00+00:00)\n"
        ),
        "{table}"
    );
    let lines = run(args(&["export"], &in_day));
    assert_eq!(lines.lines().count(), 2, "alice's and bob's day: {lines}");
}

/// The per-user totals (`store::totals`) and the sums per key of the raw tier
/// (`store::keys`) answer `top` (by user and by any key) and `report` exactly as the detail
/// rows do, in every time zone (whole-hour offsets with DST, and half- and quarter-hour
/// ones, which read the detail), for periods that start and end mid-hour.
#[test]
fn reports_from_the_totals_equal_reports_from_the_detail_in_every_time_zone() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // The same database with totals that cover nothing yet (as while an older database's
    // totals are being filled in): every report reads the detail.
    let detail = dir.path().join("detail.db");
    std::fs::copy(&db, &detail).unwrap();
    rusqlite::Connection::open(&detail)
        .unwrap()
        .execute_batch(
            "UPDATE usage_totals_backfill SET before = 9000000000;
             UPDATE usage_keys_span SET lo = 9000000000, hi = 9000000000;",
        )
        .unwrap();
    let windows: [[&str; 4]; 4] = [
        ["--since", "2026-10-25", "--until", "2026-12-01"],
        ["--since", "2026-11-01T22:17", "--until", "2026-11-19T13:41"],
        ["--since", "2026-11-18T06:05", "--until", "2026-11-18T06:50"],
        ["--since", "2026-11-01", "--until", "2026-11-03T00:30"],
    ];
    let mut compared = 0;
    for tz in [
        "UTC",
        "America/New_York",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "Australia/Lord_Howe",
    ] {
        for w in &windows {
            let mut asks: Vec<Vec<&str>> = vec![with(&["top", "--json"], w)];
            for p in ["hour", "day", "week", "month"] {
                asks.push(with(&["report", "--json", "--period", p], w));
            }
            asks.push(with(&["top", "--json", "--user", "alice"], w));
            // Through the sums per key of the raw tier (store::keys).
            asks.push(with(&["top", "--json", "--by", "remote"], w));
            asks.push(with(&["top", "--json", "--by", "program,port,via"], w));
            for args in asks {
                let fast = netledger(&db, tz, &args);
                let slow = netledger(&detail, tz, &args);
                assert_eq!(fast.2, 0, "{tz} {args:?}: {}", fast.1);
                assert_eq!(fast, slow, "{tz} {args:?}");
                compared += usize::from(fast.0.len() > 2);
            }
        }
    }
    assert!(compared > 50, "reports with rows: {compared}");
}

/// A database of `passes` passes five minutes apart from 2026-11-01, each charging
/// `keys` keys (200 users, remotes, programs, both directions), and a connection log of
/// `passes * keys / 2` connections: what `export` and `log` read.
fn bulk_db(dir: &Path, passes: i64, keys: u32) -> PathBuf {
    use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
    use netledger::store::connections::{EventWrite, LoggedConnection};
    let db = dir.join(format!("bulk-{passes}.db"));
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let t0 = at(2026, 11, 1, 0, 0);
    for p in 0..passes {
        let ts = t0 + p * 300;
        let mut plan = PassPlan::default();
        for k in 0..keys {
            let key = UsageKey {
                cgroup: None,
                kind: Kind::User,
                uid: Some(1000 + k % 200),
                program: Some(format!("prog{}", k % 7)),
                reason: None,
                via: None,
                container: None,
                protocol: 6,
                direction: Some([Direction::Out, Direction::In][(k / 200 % 2) as usize]),
                remote: ip(&format!("203.0.{}.{}", k / 250 % 250, k % 250)),
                port: 443,
            };
            let t = Traffic {
                rx_bytes: 1000 + u64::from(k),
                tx_bytes: 100,
                rx_packets: 10,
                tx_packets: 1,
            };
            plan.usage.insert(key, t);
        }
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        let log = (0..keys / 2)
            .map(|k| {
                let remote = format!("203.0.113.{}", k % 250);
                let t = tuple(6, HOST, 40_000 + k as u16, &remote, 443);
                LoggedConnection {
                    cgroup: None,
                    start_ms: ts * 1000 - 60_000,
                    end_ms: ts * 1000 + i64::from(k),
                    orig: t,
                    reply: reversed(&t),
                    direction: Some(Direction::Out),
                    uid: Some(1000 + k % 200),
                    program: Some("curl".into()),
                    orig_counters: Some(counters((500, 5))),
                    reply_counters: Some(counters((9000, 8))),
                    zone: 0,
                    via: None,
                    container: None,
                }
            })
            .collect();
        store
            .write_events(&[], |_| EventWrite {
                record,
                plan,
                users: vec![],
                attributions: vec![],
                log,
                not_logged: Default::default(),
            })
            .unwrap();
    }
    db
}

/// Peak RSS (KiB, the child's own) of a successful run, and the lines it wrote. GNU time
/// runs it and reports its ru_maxrss: a child spawned straight from the test process
/// would carry that process's RSS high-water mark across its exec (the kernel keeps the
/// larger), and the integration tests are one large process; time(1) is small and forks.
fn peak_rss(db: &Path, args: &[&str]) -> (i64, usize) {
    use std::io::Read;
    use std::process::Stdio;
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(report.path())
        .arg(common::bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TZ", "UTC")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("/usr/bin/time (apt-get install time)");
    let mut stdout = child.stdout.take().unwrap();
    let (mut buf, mut lines) = (vec![0u8; 1 << 16], 0);
    loop {
        match stdout.read(&mut buf).unwrap() {
            0 => break,
            n => lines += buf[..n].iter().filter(|b| **b == b'\n').count(),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{args:?}: {status}");
    let kib = std::fs::read_to_string(report.path()).unwrap();
    let kib = kib
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("time -f %M: {kib:?}"));
    (kib, lines)
}

/// Issue 26: `export` and `log` write each row as it is read. Over a database ten times
/// larger, the same commands' peak RSS stays where it was (collected, a row's record
/// alone is a kilobyte or more: 50,000 more rows would be 50 MiB more).
#[test]
fn export_and_log_hold_memory_flat_as_the_window_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (small, large) = (bulk_db(dir.path(), 6, 1000), bulk_db(dir.path(), 60, 1000));
    let all = ["--since", "2026-10-01", "--until", "2026-12-01", "--utc"];
    let cases: [(&[&str], usize); 4] = [
        (&["export"], 1),
        (&["export", "--format", "csv"], 1),
        (&["log"], 1),
        (&["log", "--json"], 28),
    ];
    for (cmd, lines_per_row) in cases {
        let args = with(cmd, &all);
        let (rss_small, lines_small) = peak_rss(&small, &args);
        let (rss_large, lines_large) = peak_rss(&large, &args);
        // Every row written: 6,000 usage rows and 3,000 connections, then ten times that.
        let rows = |lines: usize| lines / lines_per_row;
        let expected = if cmd[0] == "export" { 6_000 } else { 3_000 };
        assert!(
            rows(lines_small) >= expected,
            "{cmd:?}: {lines_small} lines"
        );
        assert!(
            rows(lines_large) >= 10 * expected,
            "{cmd:?}: {lines_large} lines"
        );
        eprintln!("{cmd:?}: peak RSS {rss_small} KiB, ten times the rows {rss_large} KiB");
        assert!(
            rss_large <= rss_small + 8 * 1024 && rss_large <= 64 * 1024,
            "{cmd:?}: peak RSS {rss_small} KiB over the small database, {rss_large} KiB \
             over the one ten times larger"
        );
    }
}

/// Issue 26: `report` in local time over days of every tier — rolled up into days, into
/// hours, and raw, with a pass every 25 minutes so that hours that hold a local midnight
/// of a half- or quarter-hour zone have rows on both sides of it — is the detail's, in
/// zones of whole, half and quarter hours: a day two local days share read as its total
/// and the hours of one side (at a whole hour, or the hour after a midnight inside an hour
/// of the hourly tier), a day of the daily tier as its total.
#[test]
fn local_time_reports_over_every_tier_equal_the_detail() {
    use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
    use netledger::store::retention::Retention;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("tiers.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let t0 = at(2026, 11, 1, 0, 0);
    let day = 86_400;
    // Raw kept 4 days and hourly 12 at the end: days 1-12 daily, 13-20 hourly, 21-24 raw.
    let r = Retention {
        raw: std::time::Duration::from_secs(4 * 86_400),
        hourly: std::time::Duration::from_secs(12 * 86_400),
        ..Retention::default()
    };
    for p in 0..(24 * 24 * 60 / 25) {
        let ts = t0 + p * 1500;
        let mut plan = PassPlan::default();
        for k in 0..(1 + p % 4) {
            let key = UsageKey {
                cgroup: None,
                kind: [Kind::User, Kind::Unattributed][(k % 3 / 2) as usize],
                uid: (k % 3 != 2).then_some(1000 + (p + k) as u32 % 5),
                program: Some(format!("prog{}", k % 2)),
                reason: (k % 3 == 2).then_some(Reason::NoSocket),
                via: None,
                container: None,
                protocol: 6,
                direction: Some(Direction::Out),
                remote: ip(&format!("198.51.100.{}", 1 + p % 7)),
                port: 443,
            };
            let t = Traffic {
                rx_bytes: 1000 + (p * 37 % 1000) as u64,
                tx_bytes: 100 + k as u64,
                rx_packets: 10,
                tx_packets: 1,
            };
            plan.usage.insert(key, t);
        }
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        store.write_pass(&record, &plan, &[]).unwrap();
        // Rolled up as the passes go (every 20 hours): each day is listed with its
        // running sums after it (store::totals), which the days with hours are read from.
        if p % 48 == 47 {
            store.roll_up(ts, &r, u64::MAX).unwrap();
        }
    }
    store.roll_up(t0 + 24 * day, &r, u64::MAX).unwrap();
    // The 12 days with hours have running sums.
    let listed: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM usage_prefix_days d
             WHERE EXISTS (SELECT 1 FROM usage_day_prefixes WHERE ts >= d.day
                           AND ts < d.day + 86400)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(listed, 12, "days with running sums");
    let tiers: i64 = store
        .conn()
        .query_row(
            "SELECT (SELECT count(DISTINCT granularity) FROM usage_tiers)
                  + (SELECT count(*) > 0 FROM usage_raw)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tiers, 3, "daily, hourly and raw rows");
    drop(store);
    let detail = dir.path().join("detail.db");
    std::fs::copy(&db, &detail).unwrap();
    rusqlite::Connection::open(&detail)
        .unwrap()
        .execute_batch("UPDATE usage_totals_backfill SET before = 9000000000;")
        .unwrap();
    let windows: [[&str; 4]; 3] = [
        ["--since", "2026-11-01", "--until", "2026-11-25"],
        ["--since", "2026-11-03T07:10", "--until", "2026-11-24T19:20"],
        ["--since", "2026-11-08T23:59", "--until", "2026-11-22T00:01"],
    ];
    let mut compared = 0;
    for tz in [
        "America/New_York",
        "Asia/Tokyo",
        "Asia/Kolkata",
        "Asia/Kathmandu",
        "America/St_Johns",
    ] {
        for w in &windows {
            let mut asks: Vec<Vec<&str>> = ["hour", "day", "week", "month"]
                .map(|p| with(&["report", "--json", "--period", p], w))
                .into();
            // One user's (the running sums and totals read for one uid).
            asks.push(with(
                &["report", "--json", "--period", "day", "--user", "1001"],
                w,
            ));
            for args in asks {
                let fast = netledger(&db, tz, &args);
                let slow = netledger(&detail, tz, &args);
                assert_eq!(fast.2, 0, "{tz} {args:?}: {}", fast.1);
                assert_eq!(fast, slow, "{tz} {args:?}");
                compared += usize::from(fast.0.len() > 2);
            }
        }
    }
    assert_eq!(compared, 75, "reports with rows");
}
