//! Migration 0015: a schema-14 database, whose usage `reason` packs the service
//! ('via:UID') and the container ('ns:ID:UID'), upgraded to the typed columns.

use std::path::Path;

use rusqlite::Connection;
use rusqlite_migration::{Migrations, M};

use super::dump_rows as dump;
use super::query::{By, Period, TopQuery};
use super::{OpenOptions, PassRecord, Store, MIGRATIONS};
use crate::account::{Kind, PassPlan, Traffic, UsageKey};
use crate::attribute::Direction;

/// The tables keyed by who was charged, each with its rows' sum of rx_bytes.
const TABLES: [&str; 5] = [
    "usage_raw",
    "usage_tiers",
    "usage_totals",
    "usage_keys",
    "usage_tier_days",
];

/// A schema-14 database as the previous netledger left it: raw rows of every kind of
/// `reason` (none, a service's, a service's own uid for two holders, two containers, an
/// excluded container row, unattributed), hourly rows of a service, a container and an
/// unattributed reason, a daily row, and the totals, keys and days summing them.
fn schema_14_db(p: &Path) {
    let mut c = Connection::open(p).unwrap();
    Migrations::new(MIGRATIONS[..14].iter().map(|s| M::up(s)).collect())
        .to_latest(&mut c)
        .unwrap();
    c.execute_batch(
        "INSERT INTO programs (name) VALUES ('curl');
         INSERT INTO remotes (addr) VALUES ('198.51.100.2');
         INSERT INTO containers VALUES (1, 'docker-3f2a', 0, 0), (2, 'machine-web', 0, 0);
         INSERT INTO users VALUES (0, 'root', 0, 0), (1001, 'alice', 0, 0),
                                  (1002, 'bob', 0, 0);
         INSERT INTO usage_raw VALUES
             (7200, 1001, 0, '', 2, 2, 6, 443, 1, 5, 6, 1, 1),
             (7200, 1001, 0, 'via:0', 2, 2, 6, 22, 2, 50, 60, 1, 1),
             (7200, 0, 0, 'ambiguous-holders', 2, 2, 6, 22, 2, 70, 80, 1, 1),
             (7200, 1001, 0, 'ns:1:1000', 2, 2, 6, 443, 1, 9, 10, 1, 1),
             (7500, 1002, 0, 'ns:2:0', 2, 2, 6, 443, 1, 11, 12, 1, 1),
             (7500, 1001, 2, 'ns:1:1000', 2, 2, 6, 443, 1, 13, 14, 1, 1),
             (7500, -1, 1, 'no-socket', 1, 2, 6, 80, 0, 100, 10, 2, 1),
             (7500, 1002, 2, '', 1, 2, 17, 53, 1, 7, 8, 1, 1);
         INSERT INTO usage_tiers VALUES
             (3600, 3600, 1002, 0, 'via:1000', 2, 2, 6, 22, 1000, 10, 9, 9),
             (3600, 3600, 1002, 0, 'ns:1:0', 2, 2, 6, 443, 2000, 20, 9, 9),
             (3600, 3600, -1, 1, 'forwarded', 1, 1, 0, 0, 3000, 30, 9, 9),
             (86400, 0, 1001, 0, '', 1, 1, 0, 0, 4000, 40, 8, 8);
         INSERT INTO usage_totals
             SELECT g, ts - ts % g, uid, kind, reason, sum(rx_bytes), sum(tx_bytes),
                    sum(rx_packets), sum(tx_packets)
             FROM (SELECT ts, uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
                   FROM usage_raw UNION ALL
                   SELECT ts, uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
                   FROM usage_tiers),
                  (SELECT 3600 AS g UNION ALL SELECT 86400)
             GROUP BY 1, 2, 3, 4, 5;
         UPDATE usage_totals_backfill SET before = NULL;
         INSERT INTO usage_keys
             SELECT g, ts - ts % g, uid, kind, reason, program, remote, protocol, port,
                    sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
             FROM usage_raw, (SELECT 3600 AS g UNION ALL SELECT 86400)
             WHERE ts - ts % g >= 7200
             GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;
         UPDATE usage_keys_span SET lo = 7200, hi = 7800;",
    )
    .unwrap();
}

/// What the reports say, each as its debug form.
fn reports(store: &Store) -> Vec<String> {
    let mut out = vec![];
    let bys = [
        vec![],
        vec![By::Via],
        vec![By::Container],
        vec![By::Via, By::Program],
        vec![By::User, By::Remote, By::Port],
    ];
    for by in bys {
        for uid in [None, Some(1002)] {
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
    out.push(format!("{:?}", store.usage_rows(0, 100_000).unwrap()));
    out
}

/// Every view users query, in a fixed order.
fn views(c: &Connection) -> Vec<Vec<String>> {
    // The columns the views had before migration 0016 appended the cgroup's.
    let usage = "ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
                 rx_bytes, tx_bytes, rx_packets, tx_packets, via_uid, container, container_uid";
    let rollup = format!("granularity, {}", usage.replace("direction, ", ""));
    [
        format!("SELECT {usage} FROM usage ORDER BY 1, 2, 3, 5, 9, 10"),
        format!("SELECT {rollup} FROM usage_rollup ORDER BY 1, 2, 3, 4, 6, 10"),
        format!("SELECT {usage} FROM usage_all ORDER BY 1, 2, 3, 5, 9, 10"),
        "SELECT * FROM usage_daily ORDER BY 1, 2".into(),
        "SELECT * FROM usage_monthly ORDER BY 1, 2".into(),
        "SELECT * FROM top_remotes_daily ORDER BY 1, 2, 4".into(),
    ]
    .iter()
    .map(|q| dump(c, q))
    .collect()
}

/// Rows and bytes of each of [`TABLES`].
fn sums(c: &Connection) -> Vec<Vec<String>> {
    TABLES
        .iter()
        .map(|t| dump(c, &format!("SELECT count(*), sum(rx_bytes) FROM {t}")))
        .collect()
}

#[test]
fn a_schema_14_database_moves_via_and_containers_out_of_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v14.db");
    schema_14_db(&p);
    let c = Connection::open(&p).unwrap();
    let (views_before, sums_before) = (views(&c), sums(&c));
    drop(c);
    assert_eq!(views_before[0].len(), 8);
    // Reports read the unmigrated database (the packed reason) ...
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let old = Store::open(&p, &ro).unwrap();
    assert_eq!(old.schema, 14);
    let read_before = reports(&old);
    drop(old);
    assert!(read_before[2].contains("via: Some(0), via_user: Some(\"root\")"));
    assert!(read_before[4].contains("container: Some(\"machine-web\")"));
    // ... and after the upgrade the views, the reports and the sums are as they were.
    let store = Store::open(&p, &OpenOptions::default()).unwrap();
    assert_eq!(views(store.conn()), views_before);
    assert_eq!(sums(store.conn()), sums_before);
    assert_eq!(reports(&store), read_before);
    drop(store);
    let store = Store::open(&p, &ro).unwrap();
    assert_eq!(reports(&store), read_before);
    // Every kind in its column; no reason packs anything any more.
    let charged = |table: &str| -> Vec<String> {
        let sql = format!(
            "SELECT printf('%s %d %d %d', reason, via_uid, container, container_uid)
             FROM {table} ORDER BY rx_bytes"
        );
        let mut st = store.conn().prepare(&sql).unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let typed = charged("usage_raw");
    let row = |reason: &str, via: i64, container: i64, inner: i64| {
        format!("{reason} {via} {container} {inner}")
    };
    assert_eq!(
        typed,
        [
            row("", -1, 0, -1),
            row("", -1, 0, -1),
            row("", -1, 1, 1000),
            row("", -1, 2, 0),
            row("", -1, 1, 1000),
            row("", 0, 0, -1),
            row("ambiguous-holders", -1, 0, -1),
            row("no-socket", -1, 0, -1),
        ]
    );
    let tiers = charged("usage_tiers");
    assert_eq!(
        tiers,
        [
            row("", 1000, 0, -1),
            row("", -1, 1, 0),
            row("forwarded", -1, 0, -1),
            row("", -1, 0, -1),
        ]
    );
    for t in TABLES {
        let packed = dump(
            store.conn(),
            &format!("SELECT count(*) FROM {t} WHERE reason LIKE 'via:%' OR reason LIKE 'ns:%'"),
        );
        assert_eq!(packed, ["Integer(0)"], "{t}");
    }
}

#[test]
fn a_pass_after_the_upgrade_adds_to_the_converted_rows() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("v14.db");
    schema_14_db(&p);
    let mut store = Store::open(&p, &OpenOptions::default()).unwrap();
    let before = sums(store.conn());
    // alice through root's sshd, in the bucket and under the key of the converted row.
    let key = UsageKey {
        cgroup: None,
        kind: Kind::User,
        uid: Some(1001),
        program: Some("curl".into()),
        reason: None,
        via: Some(0),
        container: None,
        protocol: 6,
        direction: Some(Direction::In),
        remote: "198.51.100.2".parse().unwrap(),
        port: 22,
    };
    let mut plan = PassPlan::default();
    let t = Traffic {
        rx_bytes: 1,
        tx_bytes: 1,
        rx_packets: 1,
        tx_packets: 1,
    };
    plan.usage.insert(key, t);
    let rec = PassRecord {
        started_at: 7250,
        mode: "snapshot",
        ..PassRecord::default()
    };
    store.write_pass(&rec, &plan, &[]).unwrap();
    let after = sums(store.conn());
    for (i, t) in TABLES.iter().enumerate() {
        // The same rows, one byte more (the tier tables: nothing; the totals and keys:
        // one byte in the hour and in the day).
        let (n, bytes) = (&before[i][0], &after[i][0]);
        let count = |s: &str| s.split(',').next().unwrap().to_owned();
        assert_eq!(count(n), count(bytes), "{t}: {n} → {bytes}");
    }
    let row = dump(
        store.conn(),
        "SELECT rx_bytes FROM usage_raw WHERE via_uid = 0 AND ts = 7200",
    );
    assert_eq!(row, ["Integer(51)"]);
}
