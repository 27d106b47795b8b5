// Child files of this module (`store/tests/`): their `super::` names store's items
// through the `use super::*` below.
mod container;
mod typed;

use super::*;
use crate::account::{account_pass, Kind};
use crate::attribute::{Attributed, Verdict};
use crate::model::Flow;
use crate::testkit::{self, UDP};

fn flow(id: u32, bytes: u64) -> Flow {
    Flow {
        id,
        zone: 7,
        orig_counters: Some(testkit::counters(1, bytes)),
        reply_counters: Some(testkit::counters(2, bytes * 2)),
        ..testkit::flow(UDP, ("[2001:db8::1]:5000", "[2001:db8::2]:53"), None)
    }
}

fn alice() -> Attributed {
    Attributed {
        verdict: Verdict::User(Attribution {
            cgroup: None,
            uid: 1001,
            program: Some("dig".into()),
            direction: Direction::Out,
            via: Default::default(),
            container: None,
        }),
        direction: Some(Direction::Out),
        remote: "2001:db8::2".parse().unwrap(),
        port: 53,
    }
}

#[test]
fn pass_round_trips_state_and_usage() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    let flows = [flow(1, 100), flow(2, 10)];
    let at = [alice(), alice()];
    let plan = account_pass(1000, &flows, &at, &HashMap::new(), 3);
    let rec = PassRecord {
        started_at: 1000,
        mode: "snapshot",
        ..PassRecord::default()
    };
    store
        .write_pass(&rec, &plan, &[(1001, Some("alice".into()))])
        .unwrap();
    let state = store.load_state().unwrap();
    assert_eq!(state.len(), 2);
    let s = &state[&flows[0].key()];
    assert_eq!(s.orig.bytes, 100);
    assert_eq!(s.reply.bytes, 200);
    assert_eq!(s.attribution, alice().attribution().cloned());
    // The next pass continues exactly where this one stopped.
    let flows2 = [flow(1, 150)];
    let plan2 = account_pass(1060, &flows2, &[alice()], &state, 3);
    assert_eq!(plan2.totals.attributed.bytes(), 50 + 100);
    store.write_pass(&rec, &plan2, &[(1001, None)]).unwrap();
    let state = store.load_state().unwrap();
    assert_eq!(state[&flows[1].key()].missing, 1, "missing flow aged, kept");
    let (name, total): (String, i64) = store
        .conn()
        .query_row(
            "SELECT user, rx_bytes + tx_bytes FROM usage_daily",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(name, "alice", "a name that no longer resolves is kept");
    assert_eq!(total, 330 + 150);
    let kinds: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM usage WHERE kind = ?1",
            [Kind::User.as_str()],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        kinds, 1,
        "both passes add to one row: same 5-minute bucket and key"
    );
    // A pass in the next bucket starts a row of its own.
    let state = store.load_state().unwrap();
    let plan3 = account_pass(1200, &[flow(1, 160)], &[alice()], &state, 3);
    let rec3 = PassRecord {
        started_at: 1200,
        ..rec
    };
    store.write_pass(&rec3, &plan3, &[]).unwrap();
    let rows: Vec<(i64, i64)> = store
        .conn()
        .prepare("SELECT ts, rx_bytes + tx_bytes FROM usage ORDER BY ts")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows, [(900, 330 + 150), (1200, 10 + 20)]);
}

/// A schema-4 database with raw rows (two passes in one 5-minute bucket, one in the
/// next; unattributed and excluded rows) and hourly and daily rollups, a daily one
/// without program or remote as schema 4 wrote them.
fn schema_4_db(p: &Path) -> Connection {
    let mut c = Connection::open(p).unwrap();
    Migrations::new(MIGRATIONS[..4].iter().map(|s| M::up(s)).collect())
        .to_latest(&mut c)
        .unwrap();
    c.execute_batch(
        "INSERT INTO passes VALUES (1, 7200, 7201, 'snapshot', 0,0,0,0,0,0,0,0, 0,0,0,0,0,0);
         INSERT INTO usage (pass_id, ts, kind, uid, program, reason, protocol, direction,
                            remote_addr, port, rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES (1, 7200, 'user', 1001, 'curl', NULL, 6, 'out', '198.51.100.2', 443, 5, 6, 1, 1),
                (1, 7260, 'user', 1001, 'curl', NULL, 6, 'out', '198.51.100.2', 443, 7, 8, 1, 1),
                (1, 7500, 'user', 1001, NULL, NULL, 17, 'in', '2001:db8::9', 53, 1, 2, 1, 1),
                (1, 7500, 'unattributed', NULL, NULL, 'no-socket', 6, NULL, '198.51.100.3',
                 80, 100, 10, 2, 1),
                (1, 7500, 'excluded', 1002, 'ssh', NULL, 6, 'out', '10.0.0.1', 22, 50, 60, 3, 3);
         INSERT INTO usage_rollup (granularity, ts, kind, uid, program, reason, protocol,
                                   remote_addr, port, rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES ('hour', 3600, 'user', 1001, 'wget', NULL, 6, '198.51.100.4', 443, 1000, 10, 9, 9),
                ('day', 0, 'user', 1002, NULL, NULL, 0, '', 0, 4000, 40, 8, 8);",
    )
    .unwrap();
    c
}

#[test]
fn schema_4_rows_move_to_compact_tables_with_every_total_kept() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v4.db");
    let c = schema_4_db(&p);
    let views = [
        "SELECT * FROM usage_daily ORDER BY 1, 2",
        "SELECT * FROM usage_monthly ORDER BY 1, 2",
        "SELECT * FROM top_remotes_daily ORDER BY 1, 2, 4",
        "SELECT granularity, ts, kind, uid, program, reason, protocol, remote_addr, port,
                rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_rollup ORDER BY 1, 2",
        "SELECT kind, uid, program, reason, protocol, direction, remote_addr, port,
                sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
         FROM usage GROUP BY 1, 2, 3, 4, 5, 6, 7, 8 ORDER BY 1, 2, 7",
    ];
    let before: Vec<Vec<String>> = views.iter().map(|v| dump_rows(&c, v)).collect();
    drop(c);
    let store = Store::open(&p, &OpenOptions::default()).unwrap();
    let after: Vec<Vec<String>> = views.iter().map(|v| dump_rows(store.conn(), v)).collect();
    assert_eq!(after, before);
    assert_eq!(before[4].len(), 4, "{:?}", before[4]);
    // The two passes of the first bucket are one row now.
    let raw = dump_rows(
        store.conn(),
        "SELECT ts, rx_bytes FROM usage ORDER BY ts, rx_bytes",
    );
    assert_eq!(
        raw,
        [
            "Integer(7200),Integer(12)",
            "Integer(7500),Integer(1)",
            "Integer(7500),Integer(50)",
            "Integer(7500),Integer(100)"
        ]
    );
}

/// A pass charging alice directly (443) and through root's sshd (22), and root for
/// a session two users' processes held.
fn delegated_plan() -> PassPlan {
    use crate::account::{Traffic, UsageKey};
    use crate::attribute::Reason;
    let key = |uid, via, reason, port| UsageKey {
        cgroup: None,
        kind: Kind::User,
        uid: Some(uid),
        program: Some("sshd".into()),
        reason,
        via,
        container: None,
        protocol: 6,
        direction: Some(Direction::In),
        remote: "198.51.100.2".parse().unwrap(),
        port,
    };
    let t = |b| Traffic {
        rx_bytes: b,
        tx_bytes: b * 10,
        rx_packets: 1,
        tx_packets: 1,
    };
    let mut plan = PassPlan::default();
    plan.usage.insert(key(1001, None, None, 443), t(5));
    plan.usage.insert(key(1001, Some(0), None, 22), t(100));
    plan.usage
        .insert(key(0, None, Some(Reason::AmbiguousHolders), 22), t(7));
    plan
}

#[test]
fn via_is_kept_in_its_column_and_read_back_by_the_views_the_export_and_top() {
    use crate::store::query::{By, TopQuery};
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    let rec = PassRecord {
        started_at: 1000,
        mode: "snapshot",
        ..PassRecord::default()
    };
    let users = [(0, Some("root".into())), (1001, Some("alice".into()))];
    store.write_pass(&rec, &delegated_plan(), &users).unwrap();
    type Row = (Option<u32>, Option<String>, Option<u32>, i64);
    let rows: Vec<Row> = store
        .conn()
        .prepare("SELECT uid, reason, via_uid, rx_bytes FROM usage ORDER BY rx_bytes")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        [
            (Some(1001), None, None, 5),
            (Some(0), Some("ambiguous-holders".into()), None, 7),
            (Some(1001), None, Some(0), 100),
        ]
    );
    // Per user, as before: via is detail, not another user.
    let daily: Vec<(u32, i64)> = store
        .conn()
        .prepare("SELECT uid, rx_bytes FROM usage_daily ORDER BY uid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(daily, [(0, 7), (1001, 105)]);
    let all: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM usage_all WHERE via_uid = 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(all, 1);
    let export = store.usage_rows(0, 2000).unwrap();
    let via: Vec<Option<u32>> = export.iter().map(|r| r.via).collect();
    assert_eq!(via.iter().flatten().collect::<Vec<_>>(), [&0]);
    assert!(export.iter().all(|r| r.reason.as_deref() != Some("via:0")));
    let q = |by: Vec<By>| TopQuery {
        since: 0,
        until: 2000,
        by,
        uid: None,
        limit: 10,
    };
    // Without --by via: one row per user, as always.
    let top = store.top(&q(vec![])).unwrap();
    let got: Vec<_> = top
        .rows
        .iter()
        .map(|r| (r.uid, r.via, r.reason.clone(), r.traffic.rx_bytes))
        .collect();
    assert_eq!(
        got,
        [(Some(1001), None, None, 105), (Some(0), None, None, 7)]
    );
    let top = store.top(&q(vec![By::Via])).unwrap();
    let got: Vec<_> = top
        .rows
        .iter()
        .map(|r| {
            let who = (r.uid, r.via, r.via_user.clone(), r.reason.clone());
            (who, r.traffic.rx_bytes)
        })
        .collect();
    assert_eq!(
        got,
        [
            ((Some(1001), Some(0), Some("root".into()), None), 100),
            ((Some(0), None, None, Some("ambiguous-holders".into())), 7),
            ((Some(1001), None, None, None), 5),
        ]
    );
    // Rolled up to hours and days, the detail stays.
    let r = crate::store::retention::Retention {
        raw: std::time::Duration::ZERO,
        hourly: std::time::Duration::ZERO,
        ..Default::default()
    };
    store.roll_up(1_000_000, &r, 1000).unwrap();
    let vias: Vec<(String, Option<u32>, i64)> = store
        .conn()
        .prepare("SELECT granularity, via_uid, rx_bytes FROM usage_rollup ORDER BY rx_bytes")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        vias,
        [
            ("day".into(), None, 5),
            ("day".into(), None, 7),
            ("day".into(), Some(0), 100)
        ]
    );
}

#[test]
fn an_unmigrated_schema_5_database_exports_without_via() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v5.db");
    let mut c = schema_4_db(&p);
    Migrations::new(MIGRATIONS[..5].iter().map(|s| M::up(s)).collect())
        .to_latest(&mut c)
        .unwrap();
    // A flow root's sshd socket carried, charged to root as schema 5 did.
    c.execute_batch(
        "INSERT INTO flow_state VALUES (0, 6, '198.51.100.2', '198.51.100.1', 50000, 22,
             7, 1, 100, 1, 900, 0, 'sshd', 'in', 7200, 7260, 0);",
    )
    .unwrap();
    drop(c);
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let store = Store::open(&p, &ro).unwrap();
    let rows = store.usage_rows(0, 100_000).unwrap();
    assert!(!rows.is_empty() && rows.iter().all(|r| r.via.is_none()));
    drop(store);
    // Migrated: the same rows, flow state gains `via` (read as direct).
    let store = Store::open(&p, &OpenOptions::default()).unwrap();
    assert_eq!(store.usage_rows(0, 100_000).unwrap(), rows);
    // It stays root's: a flow with a settled owner is never looked up again.
    let state = store.load_state().unwrap();
    let a = state.values().next().unwrap().attribution.clone().unwrap();
    assert_eq!((a.uid, a.via), (0, Via::Direct));
}

#[test]
fn reports_on_an_unmigrated_schema_4_database_equal_those_after_migration() {
    use crate::store::query::{By, Period, TopQuery};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v4.db");
    drop(schema_4_db(&p));
    let read = |store: &Store| -> Vec<String> {
        let mut out = vec![];
        for by in [
            vec![],
            vec![By::Program, By::Remote, By::Port],
            vec![By::Remote],
        ] {
            for uid in [None, Some(1001)] {
                let q = TopQuery {
                    since: 0,
                    until: 100_000,
                    by: by.clone(),
                    uid,
                    limit: 100,
                };
                out.push(format!("{:?}", store.top(&q).unwrap()));
            }
        }
        for period in [Period::Hour, Period::Day] {
            let rows = store.periods(period, 0, 100_000, None, true).unwrap();
            out.push(format!("{rows:?}"));
        }
        // From inside the hourly row (3600) and the daily one (0): both count whole.
        let q = TopQuery {
            since: 5400,
            until: 100_000,
            by: vec![],
            uid: None,
            limit: 100,
        };
        out.push(format!("{:?}", store.top(&q).unwrap()));
        out.push(format!("{:?}", store.covered(5400, 7000, 200_000).unwrap()));
        out
    };
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let before = read(&Store::open(&p, &ro).unwrap());
    assert!(before[0].contains("rx_bytes: 1013"), "{}", before[0]);
    assert!(before[8].contains("rx_bytes: 5113"), "{}", before[8]);
    assert!(
        before[9].contains("since: 0,") && before[9].contains("since_step: Some(86400)"),
        "{}",
        before[9]
    );
    drop(Store::open(&p, &OpenOptions::default()).unwrap());
    let store = Store::open(&p, &ro).unwrap();
    assert_eq!(store.schema, MIGRATIONS.len() as i64);
    assert_eq!(read(&store), before);
}

#[test]
fn database_of_the_previous_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v1.db");
    // A database as schema 1 left it, with a pass and usage in it.
    let mut c = Connection::open(&p).unwrap();
    Migrations::new(vec![M::up(MIGRATIONS[0])])
        .to_latest(&mut c)
        .unwrap();
    c.execute_batch(
        "INSERT INTO passes VALUES (1, 100, 101, 'snapshot', 0,0,0,0,0,0,0,0, 5,6,0,0,0,0);
         INSERT INTO usage (pass_id, ts, kind, uid, protocol, remote_addr, port,
                            rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES (1, 100, 'user', 1001, 6, '198.51.100.2', 443, 5, 6, 1, 1);",
    )
    .unwrap();
    drop(c);
    let store = Store::open(&p, &OpenOptions::default()).unwrap();
    let v: i64 = store
        .conn()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, MIGRATIONS.len() as i64);
    let (remote, bytes): (String, i64) = store
        .conn()
        .query_row(
            "SELECT remote, rx_bytes + tx_bytes FROM top_remotes_daily",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((remote.as_str(), bytes), ("198.51.100.2", 11));
}

#[test]
fn foreign_sqlite_database_is_not_ours() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("other.db");
    Connection::open(&p)
        .unwrap()
        .execute_batch("CREATE TABLE x (y)")
        .unwrap();
    let e = Store::open(&p, &OpenOptions::default()).err().unwrap();
    assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");
}

#[test]
fn symlinked_database_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("link.db");
    std::os::unix::fs::symlink(dir.path().join("target.db"), &p).unwrap();
    let e = Store::open(&p, &OpenOptions::default()).err().unwrap();
    assert!(matches!(e, StoreError::Symlink { .. }), "{e}");
}
