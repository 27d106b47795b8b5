//! `log` and `summary` on a deterministic database built through the store API the daemon
//! writes with (`write_events`): finished connections in the log, open flows in the saved
//! state. No kernel and no root: the periods asked for are in the past, so `log` has no
//! note to print, and `summary`'s stdout does not depend on the live table (only which
//! open flows it shows closed, and these flows are in no conntrack table).

use crate::common;
use crate::common::model::tuple;
use crate::common::offline::{netledger, ok, with};

use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use netledger::account::{FlowState, PassPlan};
use netledger::attribute::{Attribution, Direction};
use netledger::model::{Counters, FlowKey, Tuple};
use netledger::store::connections::{EventWrite, LoggedConnection};
use netledger::store::{OpenOptions, PassRecord, Store};

/// Uids no test machine has: names come from the database, or the uid is printed.
const ALICE: u32 = 4_100_001;
const BOB: u32 = 4_100_002;
const NAMELESS: u32 = 4_100_009;

fn ms(d: u32, h: u32, mi: u32, s: u32, milli: i64) -> i64 {
    Utc.with_ymd_and_hms(2026, 3, d, h, mi, s)
        .unwrap()
        .timestamp_millis()
        + milli
}

fn counters(bytes: u64, packets: u64) -> Option<Counters> {
    Some(common::model::counters((bytes, packets)))
}

/// An outgoing connection, not translated.
#[allow(clippy::too_many_arguments)]
fn out(
    proto: u8,
    local: (&str, u16),
    remote: (&str, u16),
    span: (i64, i64),
    owner: Option<(u32, &str)>,
    tx: Option<Counters>,
    rx: Option<Counters>,
) -> LoggedConnection {
    LoggedConnection {
        cgroup: None,
        start_ms: span.0,
        end_ms: span.1,
        orig: tuple(proto, local.0, local.1, remote.0, remote.1),
        reply: tuple(proto, remote.0, remote.1, local.0, local.1),
        direction: Some(Direction::Out),
        uid: owner.map(|o| o.0),
        program: owner.map(|o| o.1.to_string()).filter(|p| !p.is_empty()),
        orig_counters: tx,
        reply_counters: rx,
        zone: 0,
        via: None,
        container: None,
    }
}

fn log() -> Vec<LoggedConnection> {
    let firefox = Some((ALICE, "firefox"));
    vec![
        // Began the day before, ended on the day: in the log of the day, not in its summary.
        out(
            6,
            ("198.51.100.1", 40000),
            ("198.51.100.2", 443),
            (ms(9, 23, 59, 50, 0), ms(10, 0, 0, 10, 0)),
            firefox,
            counters(2_000, 12),
            counters(30_000, 25),
        ),
        out(
            6,
            ("198.51.100.1", 40001),
            ("198.51.100.2", 443),
            (ms(10, 9, 0, 0, 0), ms(10, 9, 0, 12, 500)),
            firefox,
            counters(3_000, 20),
            counters(150_000, 110),
        ),
        out(
            6,
            ("198.51.100.1", 40002),
            ("198.51.100.2", 443),
            (ms(10, 9, 5, 0, 0), ms(10, 9, 5, 2, 250)),
            firefox,
            counters(1_000, 8),
            counters(9_000, 9),
        ),
        out(
            6,
            ("2001:db8::1", 40003),
            ("2001:db8::2", 443),
            (ms(10, 10, 0, 0, 0), ms(10, 10, 1, 30, 0)),
            Some((BOB, "curl")),
            counters(500_000, 400),
            counters(10_000, 200),
        ),
        // Incoming, DNAT: the client hit port 2222, sshd answers on 22.
        LoggedConnection {
            cgroup: None,
            start_ms: ms(10, 11, 0, 0, 0),
            end_ms: ms(10, 12, 30, 0, 0),
            orig: tuple(6, "203.0.113.9", 51000, "198.51.100.1", 2222),
            reply: tuple(6, "198.51.100.1", 22, "203.0.113.9", 51000),
            direction: Some(Direction::In),
            uid: Some(ALICE),
            program: Some("sshd".into()),
            orig_counters: counters(40_000, 500),
            reply_counters: counters(900_000, 700),
            zone: 0,
            via: None,
            container: None,
        },
        // A DNS exchange nobody owned.
        out(
            17,
            ("198.51.100.1", 5353),
            ("198.51.100.7", 53),
            (ms(10, 13, 0, 0, 0), ms(10, 13, 0, 0, 40)),
            None,
            counters(60, 1),
            counters(120, 1),
        ),
        // An owner whose name nobody knows, no program, no counters (accounting was off).
        out(
            17,
            ("198.51.100.1", 6000),
            ("198.51.100.8", 6001),
            (ms(10, 14, 0, 0, 0), ms(10, 14, 0, 30, 0)),
            Some((NAMELESS, "")),
            None,
            None,
        ),
        // The next day.
        out(
            6,
            ("198.51.100.1", 40020),
            ("198.51.100.2", 443),
            (ms(11, 8, 0, 0, 0), ms(11, 8, 0, 1, 0)),
            firefox,
            counters(700, 5),
            counters(7_000, 6),
        ),
    ]
}

/// Flows alive at the last sighting: two of the day, one of the day before.
fn open_flows() -> Vec<FlowState> {
    let state = |id: u32, orig: Tuple, uid: u32, program: &str, dir, first_seen| FlowState {
        key: FlowKey { zone: 0, orig, id },
        orig: Counters::default(),
        reply: Counters::default(),
        attribution: Some(Attribution {
            cgroup: None,
            uid,
            program: Some(program.into()),
            direction: dir,
            via: netledger::attribute::Via::Direct,
            container: None,
        }),
        first_seen,
        last_seen: first_seen,
        missing: 0,
        start_ns: None,
    };
    let s = |d, h| ms(d, h, 0, 0, 0) / 1000;
    vec![
        state(
            101,
            tuple(6, "198.51.100.1", 40010, "198.51.100.2", 443),
            ALICE,
            "firefox",
            Direction::Out,
            s(10, 15),
        ),
        state(
            102,
            tuple(6, "203.0.113.9", 51010, "198.51.100.1", 22),
            ALICE,
            "sshd",
            Direction::In,
            s(10, 16),
        ),
        state(
            103,
            tuple(6, "2001:db8::1", 40011, "2001:db8::2", 443),
            BOB,
            "curl",
            Direction::Out,
            s(9, 16),
        ),
    ]
}

fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("connections.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    // A pass records the users' names.
    let rec = PassRecord {
        started_at: ms(10, 0, 0, 0, 0) / 1000,
        mode: "snapshot",
        ..PassRecord::default()
    };
    let names = vec![(ALICE, Some("alice".into())), (BOB, Some("bob".into()))];
    store
        .write_pass(&rec, &PassPlan::default(), &names)
        .unwrap();
    store
        .write_events(&[], |_| EventWrite {
            record: PassRecord {
                started_at: ms(11, 9, 0, 0, 0) / 1000,
                mode: "events",
                ..PassRecord::default()
            },
            plan: PassPlan::default(),
            users: vec![],
            attributions: open_flows(),
            log: log(),
            not_logged: Default::default(),
        })
        .unwrap();
    db
}

const DAY: [&str; 5] = ["--since", "2026-03-10", "--until", "2026-03-11", "--utc"];

#[test]
fn log_lines_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    insta::assert_snapshot!("log_day", ok(&db, &with(&["log"], &DAY)));
    insta::assert_snapshot!("log_day_json", ok(&db, &with(&["log", "--json"], &DAY)));
    insta::assert_snapshot!(
        "log_day_template",
        ok(
            &db,
            &with(
                &[
                    "log",
                    "--format",
                    "%i:%r %l:%L %u(%U) %c %S s %D ms %t/%x %T/%X%n--"
                ],
                &DAY
            )
        )
    );
}

#[test]
fn log_filters() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let f = "%s %P %o %R %u";
    insta::assert_snapshot!(
        "log_host_port_user",
        [
            ok(
                &db,
                &with(&["log", "--format", f, "--host", "203.0.113.0/24"], &DAY)
            ),
            // The post-NAT port matches too.
            ok(&db, &with(&["log", "--format", f, "--port", "22"], &DAY)),
            ok(
                &db,
                &with(&["log", "--format", f, "--host", "2001:db8::2"], &DAY)
            ),
            ok(
                &db,
                &with(
                    &["log", "--format", f, "--user", "alice", "--port", "443"],
                    &DAY
                )
            ),
            ok(
                &db,
                &with(
                    &["log", "--format", f, "--user", &NAMELESS.to_string()],
                    &DAY
                )
            ),
        ]
        .join("==\n")
    );
    assert_eq!(
        ok(
            &db,
            &with(&["log", "--json", "--user", "bob", "--port", "22"], &DAY)
        )
        .trim(),
        "[]"
    );
}

#[test]
fn log_in_local_time() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    // The local day of Asia/Kolkata (+05:30) is 2026-03-09T18:30Z to 2026-03-10T18:30Z.
    let (out, err, code) = netledger(
        &db,
        "Asia/Kolkata",
        &["log", "--since", "2026-03-10", "--until", "2026-03-11"],
    );
    assert_eq!(code, 0, "{err}");
    insta::assert_snapshot!("log_day_kolkata", out);
}

#[test]
fn summary_table_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let day = ["--date", "2026-03-10", "--utc"];
    insta::assert_snapshot!("summary_day", ok(&db, &with(&["summary"], &day)));
    insta::assert_snapshot!(
        "summary_day_json",
        ok(&db, &with(&["summary", "--json"], &day))
    );
    insta::assert_snapshot!(
        "summary_day_alice",
        ok(&db, &with(&["summary", "--user", "alice"], &day))
    );
    let names = dir.path().join("names");
    std::fs::write(&names, "198.51.100.0/24 example-net\n2001:db8::2 mirror6\n").unwrap();
    insta::assert_snapshot!(
        "summary_day_named",
        ok(
            &db,
            &with(&["summary", "--names", names.to_str().unwrap()], &day)
        )
    );
    insta::assert_snapshot!(
        "summary_empty_day",
        ok(&db, &["summary", "--date", "2026-03-01", "--utc"])
    );
}
