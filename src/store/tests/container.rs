//! Containers (issue 14, migration 0010) through the store: usage reasons, views, `top`,
//! `export`, flow state, the connection log, and the upgrade of a schema-9 database.

use std::collections::HashMap;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::connections::{EventWrite, LoggedConnection};
use super::query::{By, TopQuery, TopReport};
use super::{OpenOptions, PassRecord, Store, MIGRATIONS};
use crate::account::{account_pass, FlowState, PassPlan};
use crate::attribute::{Attributed, Attribution, Container, Direction, Reason, Verdict, Via};
use crate::model::{Counters, Flow};
use crate::testkit::{self, counters, tuple, TCP};

use super::dump_rows as dump;

const ALICE: u32 = 1001;
const BOB: u32 = 1002;

/// Flow `id` from a container's 10.88.0.2 to 198.51.100.2:443, translated to the host's
/// 198.51.100.1 (masquerade): `bytes` up, ten times that down.
fn flow(id: u32, bytes: u64) -> Flow {
    let port = 40000 + id as u16;
    Flow {
        id,
        orig_counters: Some(counters(1, bytes)),
        reply_counters: Some(counters(2, bytes * 10)),
        ..testkit::flow(
            TCP,
            (&format!("10.88.0.2:{port}"), "198.51.100.2:443"),
            Some(("198.51.100.2:443", &format!("198.51.100.1:{port}"))),
        )
    }
}

fn container(name: &str, inner_uid: u32) -> Container {
    Container {
        name: name.into(),
        inner_uid,
    }
}

fn owner(uid: u32, program: &str, c: Option<Container>) -> Attribution {
    Attribution {
        cgroup: None,
        uid,
        program: Some(program.into()),
        direction: Direction::Out,
        via: Via::Direct,
        container: c,
    }
}

fn at(verdict: Verdict) -> Attributed {
    Attributed {
        verdict,
        direction: Some(Direction::Out),
        remote: "198.51.100.2".parse().unwrap(),
        port: 443,
    }
}

/// One pass: alice on the host (1 B out), alice in docker-3f2a as uid 1000 inside (2 B),
/// bob in machine-web as root inside (3 B), bob in docker-3f2a (4 B), a LAN flow of
/// alice's in docker-3f2a (excluded, 5 B), an unattributed flow (6 B), and alice through
/// root's sshd (7 B): each flow's rx is 10 × its tx.
fn pass() -> (Vec<Flow>, Vec<Attributed>) {
    let docker = || Some(container("docker-3f2a", 1000));
    let ats = vec![
        at(Verdict::User(owner(ALICE, "curl", None))),
        at(Verdict::User(owner(ALICE, "curl", docker()))),
        at(Verdict::User(owner(
            BOB,
            "nginx",
            Some(container("machine-web", 0)),
        ))),
        at(Verdict::User(owner(
            BOB,
            "wget",
            Some(container("docker-3f2a", 0)),
        ))),
        at(Verdict::Excluded(Some(owner(ALICE, "curl", docker())))),
        at(Verdict::Unattributed(Reason::Forwarded)),
        at(Verdict::User(Attribution {
            via: Via::Delegated(0),
            ..owner(ALICE, "sshd", None)
        })),
    ];
    let flows = (1..=ats.len() as u32)
        .map(|i| flow(i, u64::from(i)))
        .collect();
    (flows, ats)
}

fn rec(ts: i64) -> PassRecord {
    PassRecord {
        started_at: ts,
        mode: "snapshot",
        ..PassRecord::default()
    }
}

const USERS: [(u32, &str); 3] = [(0, "root"), (ALICE, "alice"), (BOB, "bob")];

fn users() -> Vec<(u32, Option<String>)> {
    USERS
        .iter()
        .map(|(u, n)| (*u, Some(n.to_string())))
        .collect()
}

fn written() -> (tempfile::TempDir, Store, PassPlan) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    let (flows, ats) = pass();
    let plan = account_pass(1000, &flows, &ats, &HashMap::new(), 3);
    store.write_pass(&rec(1000), &plan, &users()).unwrap();
    (dir, store, plan)
}

fn rows<T: rusqlite::types::FromSql>(store: &Store, sql: &str) -> Vec<Vec<T>> {
    let mut st = store.conn().prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[test]
fn a_container_is_kept_in_its_columns_and_interned_once() {
    let (_dir, mut store, plan) = written();
    // Every container's key carries it; the unattributed and the service's rows none.
    let with: Vec<_> = plan
        .usage
        .keys()
        .filter_map(|k| k.container.as_ref().map(|c| (k.uid, c.name.to_string())))
        .collect();
    assert_eq!(with.len(), 4, "{with:?}");
    let charged = rows::<rusqlite::types::Value>(
        &store,
        "SELECT reason, via_uid, container, container_uid FROM usage_raw ORDER BY tx_bytes",
    );
    let charged: Vec<String> = charged.iter().map(|r| format!("{r:?}")).collect();
    let row = |reason: &str, via: i64, container: i64, inner: i64| {
        format!("[Text({reason:?}), Integer({via}), Integer({container}), Integer({inner})]")
    };
    assert_eq!(
        charged,
        [
            row("", -1, 0, -1),
            row("", -1, 1, 1000),
            row("", -1, 2, 0),
            row("", -1, 1, 0),
            row("", -1, 1, 1000),
            row("forwarded", -1, 0, -1),
            row("", 0, 0, -1),
        ]
    );
    // The per-user totals are keyed by the same columns.
    let n = rows::<i64>(
        &store,
        "SELECT count(*) FROM (SELECT DISTINCT container, container_uid FROM usage_totals
                               WHERE container <> 0)",
    );
    assert_eq!(n, [[3]]);
    let names = rows::<rusqlite::types::Value>(
        &store,
        "SELECT id, name, first_seen, last_seen FROM containers ORDER BY id",
    );
    assert_eq!(
        format!("{names:?}"),
        "[[Integer(1), Text(\"docker-3f2a\"), Integer(1000), Integer(1000)], \
          [Integer(2), Text(\"machine-web\"), Integer(1000), Integer(1000)]]"
    );
    // A later pass reuses the ids and advances last_seen.
    let (flows, ats) = pass();
    let plan = account_pass(1300, &flows[1..2], &ats[1..2], &HashMap::new(), 3);
    store.write_pass(&rec(1300), &plan, &users()).unwrap();
    let seen = rows::<i64>(
        &store,
        "SELECT id, first_seen, last_seen FROM containers ORDER BY id",
    );
    assert_eq!(seen, [[1, 1000, 1300], [2, 1000, 1000]]);
    let charged = rows::<i64>(
        &store,
        "SELECT DISTINCT container, container_uid FROM usage_raw WHERE ts = 1200",
    );
    assert_eq!(charged, [[1, 1000]]);
}

#[test]
fn views_show_the_container_and_never_ns_as_reason_or_via() {
    let (_dir, mut store, _) = written();
    type Row = (
        String,
        Option<u32>,
        Option<String>,
        Option<u32>,
        Option<String>,
        Option<u32>,
        i64,
    );
    let read = |store: &Store, view: &str| -> Vec<Row> {
        let sql = format!(
            "SELECT kind, uid, reason, via_uid, container, container_uid, sum(tx_bytes)
             FROM {view} GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 7"
        );
        let mut st = store.conn().prepare(&sql).unwrap();
        st.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let docker = Some("docker-3f2a".to_string());
    let want: Vec<Row> = vec![
        ("user".into(), Some(ALICE), None, None, None, None, 1),
        (
            "user".into(),
            Some(ALICE),
            None,
            None,
            docker.clone(),
            Some(1000),
            2,
        ),
        (
            "user".into(),
            Some(BOB),
            None,
            None,
            Some("machine-web".into()),
            Some(0),
            3,
        ),
        (
            "user".into(),
            Some(BOB),
            None,
            None,
            docker.clone(),
            Some(0),
            4,
        ),
        (
            "excluded".into(),
            Some(ALICE),
            None,
            None,
            docker.clone(),
            Some(1000),
            5,
        ),
        (
            "unattributed".into(),
            None,
            Some("forwarded".into()),
            None,
            None,
            None,
            6,
        ),
        ("user".into(), Some(ALICE), None, Some(0), None, None, 7),
    ];
    assert_eq!(read(&store, "usage"), want);
    assert_eq!(read(&store, "usage_all"), want);
    // Per user as before: the container is detail, not another user.
    let daily = rows::<i64>(
        &store,
        "SELECT uid, tx_bytes FROM usage_daily WHERE uid IS NOT NULL ORDER BY uid",
    );
    assert_eq!(daily, [[ALICE as i64, 1 + 2 + 7], [BOB as i64, 3 + 4]]);
    // Rolled up into hours and days, the container stays.
    let r = super::retention::Retention {
        raw: std::time::Duration::ZERO,
        hourly: std::time::Duration::ZERO,
        ..Default::default()
    };
    store.roll_up(1_000_000, &r, 1000).unwrap();
    assert_eq!(read(&store, "usage").len(), 0);
    let mut rolled = read(&store, "usage_rollup");
    rolled.sort_by_key(|r| r.6);
    assert_eq!(rolled, want);
    assert_eq!(read(&store, "usage_all"), want);
}

fn top(store: &Store, by: Vec<By>, uid: Option<u32>) -> TopReport {
    store
        .top(&TopQuery {
            since: 0,
            until: 100_000,
            by,
            uid,
            limit: 100,
        })
        .unwrap()
}

type TopLine = (
    Option<u32>,
    Option<String>,
    Option<u32>,
    Option<String>,
    u64,
);

fn lines(t: &TopReport) -> Vec<TopLine> {
    t.rows
        .iter()
        .map(|r| {
            (
                r.uid,
                r.container.clone(),
                r.via,
                r.reason.clone(),
                r.traffic.tx_bytes,
            )
        })
        .collect()
}

#[test]
fn top_by_container_names_it_and_by_via_does_not_list_it() {
    let (_dir, mut store, _) = written();
    let docker = Some("docker-3f2a".to_string());
    // rx is 10 × tx: rows are ordered by tx here.
    let by_container: Vec<TopLine> = vec![
        (Some(ALICE), None, None, None, 1 + 7),
        (None, None, None, Some("forwarded".into()), 6),
        (Some(BOB), docker.clone(), None, None, 4),
        (Some(BOB), Some("machine-web".into()), None, None, 3),
        (Some(ALICE), docker.clone(), None, None, 2),
    ];
    let read = |store: &Store| {
        (
            lines(&top(store, vec![By::Container], None)),
            lines(&top(store, vec![By::User, By::Container], Some(BOB))),
            lines(&top(store, vec![By::Via], None)),
            lines(&top(store, vec![By::Container, By::Via], None)),
            lines(&top(store, vec![], None)),
            lines(&top(store, vec![By::Container, By::Program], None)),
        )
    };
    let (c, bob, via, both, users, programs) = read(&store);
    assert_eq!(c, by_container);
    assert_eq!(bob, by_container[2..4]);
    // --by via: the container rows are the user's own traffic, never a via or reason.
    assert_eq!(
        via,
        [
            (Some(ALICE), None, Some(0), None, 7),
            (Some(BOB), None, None, None, 3 + 4),
            (None, None, None, Some("forwarded".into()), 6),
            (Some(ALICE), None, None, None, 1 + 2),
        ]
    );
    assert_eq!(both.len(), 6, "{both:?}");
    assert!(both.contains(&(Some(ALICE), None, Some(0), None, 7)));
    assert_eq!(
        users,
        [
            (Some(ALICE), None, None, None, 1 + 2 + 7),
            (Some(BOB), None, None, None, 3 + 4),
            (None, None, None, Some("forwarded".into()), 6),
        ]
    );
    assert_eq!(programs.len(), 6, "{programs:?}");
    assert!(programs.iter().all(|l| l.3.as_deref() != Some("ns:1:1000")));
    // The report's totals: excluded is the container's LAN flow.
    let t = top(&store, vec![By::Container], None);
    assert_eq!(t.total.tx_bytes, 1 + 2 + 3 + 4 + 6 + 7);
    assert_eq!(t.excluded.tx_bytes, 5);
    // Read from the detail instead of the per-user totals: the same report.
    let fast = read(&store);
    store.set_use_totals(false);
    assert_eq!(read(&store), fast);
    let slow = top(&store, vec![By::Container], None);
    assert_eq!((slow.total, slow.excluded), (t.total, t.excluded));
}

#[test]
fn export_has_container_and_container_uid() {
    let (_dir, store, _) = written();
    let rows = store.usage_rows(0, 100_000).unwrap();
    let got: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.traffic.tx_bytes,
                r.reason.clone(),
                r.via,
                r.container.clone(),
                r.container_uid,
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let docker = Some("docker-3f2a".to_string());
    assert_eq!(
        got,
        [
            (1, None, None, None, None),
            (2, None, None, docker.clone(), Some(1000)),
            (3, None, None, Some("machine-web".into()), Some(0)),
            (4, None, None, docker.clone(), Some(0)),
            (5, None, None, docker.clone(), Some(1000)),
            (6, Some("forwarded".into()), None, None, None),
            (7, None, Some(0), None, None),
        ]
    );
}

#[test]
fn flow_state_keeps_the_container_across_passes() {
    let (_dir, mut store, _) = written();
    let state = store.load_state().unwrap();
    let (flows, ats) = pass();
    for (f, a) in flows.iter().zip(&ats) {
        assert_eq!(
            state[&f.key()].attribution.as_ref(),
            a.attribution(),
            "{f:?}"
        );
    }
    // Its socket gone, a container's flow stays the container's: the pass attributes it
    // with the saved owner (the prior), and the next delta is charged to it.
    let mut more = flows[1].clone();
    more.orig_counters = Some(counters(3, 102));
    let prior = state[&more.key()].attribution.clone().unwrap();
    let plan = account_pass(1060, &[more], &[at(Verdict::User(prior))], &state, 3);
    let (k, t) = plan.usage.iter().next().unwrap();
    assert_eq!(
        (k.container.clone(), t.tx_bytes),
        (Some(container("docker-3f2a", 1000)), 100)
    );
    store.write_pass(&rec(1060), &plan, &users()).unwrap();
    let again = store.load_state().unwrap();
    assert_eq!(again[&flows[1].key()], plan.upserts[0]);
    let a = again[&flows[1].key()].attribution.clone().unwrap();
    assert_eq!(a.container, Some(container("docker-3f2a", 1000)));
}

fn logged(uid: u32, c: Option<Container>) -> LoggedConnection {
    LoggedConnection {
        cgroup: None,
        start_ms: 1_780_000_000_000,
        end_ms: 1_780_000_001_000,
        orig: tuple(TCP, "10.88.0.2:40000", "198.51.100.2:443"),
        reply: tuple(TCP, "198.51.100.2:443", "198.51.100.1:40000"),
        direction: Some(Direction::Out),
        uid: Some(uid),
        program: Some("curl".into()),
        orig_counters: Some(counters(1, 60)),
        reply_counters: Some(counters(1, 60)),
        zone: 0,
        via: None,
        container: c,
    }
}

#[test]
fn the_daemons_flush_stores_the_container_in_usage_state_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    let (flows, ats) = pass();
    let plan = account_pass(1_780_000_001, &flows[1..3], &ats[1..3], &HashMap::new(), 3);
    let new = FlowState {
        key: flows[0].key(),
        orig: Counters::default(),
        reply: Counters::default(),
        attribution: Some(owner(ALICE, "curl", Some(container("libpod-77", 1000)))),
        first_seen: 1_780_000_000,
        last_seen: 1_780_000_000,
        missing: 0,
        start_ns: None,
    };
    let log = vec![
        logged(ALICE, Some(container("docker-3f2a", 1000))),
        logged(BOB, None),
    ];
    store
        .write_events(&[], |_| EventWrite {
            record: PassRecord {
                started_at: 1_780_000_001,
                mode: "events",
                ..PassRecord::default()
            },
            plan,
            users: users(),
            attributions: vec![new.clone()],
            log: log.clone(),
            not_logged: Default::default(),
        })
        .unwrap();
    let charged = rows::<i64>(
        &store,
        "SELECT container, container_uid FROM usage_raw ORDER BY tx_bytes",
    );
    assert_eq!(charged, [[1, 1000], [2, 0]]);
    let state = store.load_states(&[new.key]).unwrap();
    assert_eq!(state[&new.key].attribution, new.attribution);
    let read = store
        .connection_log(1_780_000_000_000, 1_780_000_002_000)
        .unwrap();
    let mut want = log;
    want.sort_by_key(|c| c.uid);
    let mut read = read;
    read.sort_by_key(|c| c.uid);
    assert_eq!(read, want);
    let names = rows::<String>(&store, "SELECT name FROM containers ORDER BY id");
    assert_eq!(names, [["docker-3f2a"], ["machine-web"]]);
}

/// A schema-9 database (before containers) as the previous netledger left it: usage of
/// every kind incl. a service's, rollups, totals, keys, flow state, a logged connection.
fn schema_9_db(p: &std::path::Path) {
    let mut c = Connection::open(p).unwrap();
    Migrations::new(MIGRATIONS[..9].iter().map(|s| M::up(s)).collect())
        .to_latest(&mut c)
        .unwrap();
    c.execute_batch(
        "INSERT INTO programs (name) VALUES ('curl');
         INSERT INTO remotes (addr) VALUES ('198.51.100.2');
         INSERT INTO usage_raw VALUES
             (7200, 1001, 0, '', 2, 2, 6, 443, 1, 5, 6, 1, 1),
             (7200, 1001, 0, 'via:0', 2, 2, 6, 22, 2, 50, 60, 1, 1),
             (7200, -1, 1, 'no-socket', 0, 2, 6, 80, 0, 100, 10, 2, 1),
             (7500, 1002, 2, '', 0, 2, 17, 53, 1, 7, 8, 1, 1);
         INSERT INTO usage_tiers VALUES
             (3600, 3600, 1001, 0, 'ambiguous-holders', 2, 2, 6, 443, 1000, 10, 9, 9),
             (86400, 0, 1002, 0, '', 0, 1, 0, 0, 4000, 40, 8, 8);
         INSERT INTO usage_totals
             SELECT g, ts - ts % g, uid, kind, reason, sum(rx_bytes), sum(tx_bytes),
                    sum(rx_packets), sum(tx_packets)
             FROM (SELECT * FROM usage_raw UNION ALL
                   SELECT ts, uid, kind, reason, program, remote, protocol, port, 0,
                          rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_tiers),
                  (SELECT 3600 AS g UNION ALL SELECT 86400)
             GROUP BY 1, 2, 3, 4, 5;
         UPDATE usage_totals_backfill SET before = NULL;
         INSERT INTO users VALUES (1001, 'alice', 0, 0), (1002, 'bob', 0, 0);
         INSERT INTO flow_state VALUES (0, 6, '198.51.100.1', '198.51.100.2', 40000, 443,
             7, 1, 100, 1, 900, 1001, 'curl', 'out', 7200, 7260, 0, NULL);",
    )
    .unwrap();
    // A connection as the schema 9 netledger logged it.
    let rec = super::connections::encode(&logged(1001, None), Some(2), None);
    c.execute("INSERT INTO connection_log VALUES (?1)", [rec])
        .unwrap();
}

#[test]
fn a_schema_9_database_upgrades_in_place_with_every_row_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v9.db");
    schema_9_db(&p);
    let old_columns = "ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
                       rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid";
    let queries = [
        format!("SELECT {old_columns} FROM usage ORDER BY 1, 3, 5, 9"),
        format!(
            "SELECT granularity, {} FROM usage_rollup ORDER BY 1, 2, 4",
            old_columns.replace("direction,", "")
        ),
        format!("SELECT {old_columns} FROM usage_all ORDER BY 1, 3, 5, 9, 10"),
        "SELECT * FROM usage_daily ORDER BY 1, 2".into(),
        "SELECT * FROM usage_monthly ORDER BY 1, 2".into(),
        "SELECT * FROM top_remotes_daily ORDER BY 1, 2, 4".into(),
        "SELECT * FROM usage_raw ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9".into(),
        "SELECT * FROM usage_tiers ORDER BY 1, 2, 3, 4, 5".into(),
        "SELECT * FROM usage_totals ORDER BY 1, 2, 3, 4, 5".into(),
        "SELECT * FROM flow_state".into(),
        "SELECT rec FROM connection_log".into(),
    ];
    let c = Connection::open(&p).unwrap();
    let before: Vec<Vec<String>> = queries.iter().map(|q| dump(&c, q)).collect();
    // The tables as schema 9 had them, from the typed columns of migration 0015: the
    // packed `reason` each row had.
    let packed = "CASE WHEN via_uid >= 0 THEN 'via:' || via_uid
                       WHEN container <> 0 THEN 'ns:' || container || ':' || container_uid
                       ELSE reason END";
    let mut queries = queries;
    queries[6] = format!(
        "SELECT ts, uid, kind, {packed}, program, remote, protocol, port, direction,
                rx_bytes, tx_bytes, rx_packets, tx_packets
         FROM usage_raw ORDER BY 1, 2, 3, 4, 5, 6, 7, 8, 9"
    );
    queries[7] = format!(
        "SELECT granularity, ts, uid, kind, {packed}, program, remote, protocol, port,
                rx_bytes, tx_bytes, rx_packets, tx_packets
         FROM usage_tiers ORDER BY 1, 2, 3, 4, 5"
    );
    queries[8] = format!(
        "SELECT granularity, ts, uid, kind, {packed}, rx_bytes, tx_bytes, rx_packets,
                tx_packets
         FROM usage_totals ORDER BY 1, 2, 3, 4, 5"
    );
    // Names as 0005 numbers them ('' is 1).
    let curl = dump(&c, "SELECT count(*) FROM usage_all WHERE program = 'curl'");
    assert_eq!(curl, ["Integer(3)"]);
    drop(c);
    assert_eq!(before[0].len(), 4);
    // Reports read the unmigrated database (no containers yet) ...
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let reports = |store: &Store| {
        (
            format!("{:?}", top(store, vec![By::Container], None)),
            format!("{:?}", top(store, vec![By::Via, By::Program], None)),
            format!("{:?}", store.usage_rows(0, 100_000).unwrap()),
            format!("{:?}", store.connection_log(0, i64::MAX).unwrap()),
        )
    };
    let old = Store::open(&p, &ro).unwrap();
    assert_eq!(old.schema, 9);
    let read_before = reports(&old);
    // The flow state too (`summary`, `connections`): no container column yet, none read.
    let state = old.load_state().unwrap();
    assert_eq!(state.len(), 1);
    assert!(state.values().all(|s| s
        .attribution
        .as_ref()
        .is_some_and(|a| a.container.is_none())));
    drop(old);
    // ... and after the upgrade every row and view reads as before.
    let store = Store::open(&p, &OpenOptions::default()).unwrap();
    let after: Vec<Vec<String>> = queries.iter().map(|q| dump(store.conn(), q)).collect();
    // flow_state gains four columns, NULL (the container's two, schema 10; the flow's
    // start, schema 11) and cgroup 0 (none, schema 16); the log's record is unchanged and
    // its cgroup 0.
    assert_eq!(
        after[9],
        [format!("{},Null,Null,Null,Integer(0)", before[9][0])]
    );
    assert_eq!(
        dump(store.conn(), "SELECT cgroup FROM connection_log"),
        ["Integer(0)"]
    );
    let strip = |mut v: Vec<Vec<String>>| {
        v.remove(9);
        v
    };
    assert_eq!(strip(after), strip(before));
    let none = dump(
        store.conn(),
        "SELECT count(*) FROM usage_all WHERE container IS NOT NULL OR container_uid IS NOT NULL",
    );
    assert_eq!(none, ["Integer(0)"]);
    assert_eq!(reports(&store), read_before);
    assert!(read_before.0.contains("container: None"));
    let a = store.load_state().unwrap().into_values().next().unwrap();
    assert_eq!(a.attribution.unwrap().container, None);
    let log = store.connection_log(0, i64::MAX).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0], logged(1001, None));
}
