use super::*;
use crate::account::{Kind, UsageKey};
use crate::attribute::{Direction, Reason};
use crate::store::connections::EventWrite;
use crate::store::query::tests::{periods_by_sql, top_by_sql};
use crate::store::query::{By, Period, TopQuery};
use crate::store::retention::Retention;
use crate::store::{OpenOptions, PassRecord};
use std::time::Duration;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00Z

pub(in crate::store) struct Rng(pub(in crate::store) u64);

impl Rng {
    pub(in crate::store) fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub(in crate::store) fn random_plan(rng: &mut Rng) -> PassPlan {
    let mut plan = PassPlan::default();
    for _ in 0..1 + rng.below(6) {
        let kind = [Kind::User, Kind::Unattributed, Kind::Excluded][rng.below(3) as usize];
        let reasons = [Reason::NoSocket, Reason::Forwarded, Reason::Protocol];
        let key = UsageKey {
            cgroup: None,
            kind,
            uid: (kind != Kind::Unattributed).then(|| 1000 + rng.below(4) as u32),
            program: Some(format!("p{}", rng.below(3))),
            reason: (kind == Kind::Unattributed).then(|| reasons[rng.below(3) as usize]),
            protocol: 6,
            direction: Some([Direction::Out, Direction::In][rng.below(2) as usize]),
            remote: format!("198.51.100.{}", rng.below(20)).parse().unwrap(),
            port: [443, 80, 22][rng.below(3) as usize],
            via: (kind == Kind::User && rng.below(4) == 0).then_some(0),
            container: None,
        };
        // A container's traffic (issue 14), without drawing again (the draws of every
        // plan stay as they were): some users' and excluded rows of two programs.
        let in_container = kind != Kind::Unattributed && key.via.is_none();
        let key = match key.program.as_deref() {
            Some(p @ ("p1" | "p2")) if in_container && key.port != 22 => UsageKey {
                container: Some(crate::attribute::Container {
                    name: format!("docker-{p}").into(),
                    inner_uid: key.uid.unwrap_or(0) % 2 * 1000,
                }),
                ..key
            },
            _ => key,
        };
        let t = Traffic {
            rx_bytes: rng.below(1_000_000),
            tx_bytes: rng.below(100_000),
            rx_packets: rng.below(1000),
            tx_packets: rng.below(100),
        };
        plan.usage.entry(key).or_default().add(&t);
    }
    plan
}

/// Rows of the detail summed per hour and day, that the totals do not hold as they are
/// (and totals rows the detail does not explain).
fn mismatches(store: &Store) -> i64 {
    let sums = "SELECT g, ts - ts % g AS t, uid, kind, reason, via_uid, container,
                       container_uid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                       sum(tx_packets)
                FROM (SELECT ts, uid, kind, reason, via_uid, container, container_uid,
                             rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_raw
                      UNION ALL
                      SELECT ts, uid, kind, reason, via_uid, container, container_uid,
                             rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_tiers),
                     (SELECT 3600 AS g UNION ALL SELECT 86400)
                GROUP BY g, t, uid, kind, reason, via_uid, container, container_uid";
    let sql = format!(
        "SELECT (SELECT count(*) FROM ({sums} EXCEPT SELECT * FROM usage_totals))
              + (SELECT count(*) FROM (SELECT * FROM usage_totals EXCEPT {sums}))"
    );
    store
        .conn()
        .query_row(&sql, [], |r| r.get::<_, i64>(0))
        .unwrap()
        + bucket_mismatches(store)
        + prefix_mismatches(store)
}

/// The hour totals of each listed day summed through each of its hours, per key (from
/// the key's first hour), that `usage_day_prefixes` does not hold as they are, and rows
/// of it they do not explain (of days not listed too).
fn prefix_mismatches(store: &Store) -> i64 {
    let sums = "SELECT d.day + 3600 * h.n AS t, u.uid, u.kind, u.reason, u.via_uid,
                       u.container, u.container_uid, sum(u.rx_bytes), sum(u.tx_bytes),
                       sum(u.rx_packets), sum(u.tx_packets)
                FROM usage_prefix_days d
                JOIN h
                JOIN usage_totals u
                  ON u.granularity = 3600 AND u.ts >= d.day AND u.ts <= d.day + 3600 * h.n
                GROUP BY t, u.uid, u.kind, u.reason, u.via_uid, u.container, u.container_uid";
    let sql = format!(
        "WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < 23),
                       s AS ({sums})
         SELECT (SELECT count(*) FROM (SELECT * FROM s EXCEPT SELECT * FROM usage_day_prefixes))
              + (SELECT count(*) FROM (SELECT * FROM usage_day_prefixes EXCEPT SELECT * FROM s))"
    );
    store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
}

/// Raw rows summed per bucket that `usage_bucket_totals` does not hold as they are, and
/// bucket totals the raw rows do not explain.
fn bucket_mismatches(store: &Store) -> i64 {
    let sums = "SELECT ts, uid, kind, reason, via_uid, container, container_uid,
                       sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                FROM usage_raw
                GROUP BY ts, uid, kind, reason, via_uid, container, container_uid";
    let sql = format!(
        "SELECT (SELECT count(*) FROM ({sums} EXCEPT SELECT * FROM usage_bucket_totals))
              + (SELECT count(*) FROM (SELECT * FROM usage_bucket_totals EXCEPT {sums}))"
    );
    store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
}

/// [`busy_store`]'s retention: raw kept 2 days, hourly 5, daily 9.
fn busy_retention() -> Retention {
    Retention {
        raw: Duration::from_secs(2 * DAY as u64),
        hourly: Duration::from_secs(5 * DAY as u64),
        daily: Some(Duration::from_secs(9 * DAY as u64)),
        ..Retention::default()
    }
}

/// Ten days of passes and daemon flushes with rollups in between (raw kept 2 days,
/// hourly 5, daily 9: every tier and the daily drop happen).
fn busy_store(dir: &std::path::Path) -> Store {
    let mut store = Store::open(&dir.join("t.db"), &OpenOptions::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let r = busy_retention();
    for step in 0..720 {
        let ts = T0 + step * 1200 + rng.below(1200) as i64;
        let plan = random_plan(&mut rng);
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        if step % 3 == 0 {
            store
                .write_events(&[], |_| EventWrite {
                    record,
                    plan,
                    users: vec![],
                    attributions: vec![],
                    log: vec![],
                    not_logged: Default::default(),
                })
                .unwrap();
        } else {
            store.write_pass(&record, &plan, &[]).unwrap();
        }
        if step % 40 == 0 {
            store.roll_up(ts, &r, 200).unwrap();
        }
    }
    store
}

/// Every report through the totals and through the detail alone, for `windows`.
fn assert_reports_equal(store: &mut Store, windows: &[(i64, i64)]) {
    for &(since, until) in windows {
        for uid in [None, Some(1001)] {
            let q = TopQuery {
                since,
                until,
                by: vec![By::User],
                uid,
                limit: 100,
            };
            let by_container = TopQuery {
                by: vec![By::Container],
                ..q.clone()
            };
            let report = |store: &mut Store, on| {
                store.set_use_totals(on);
                let mut top = store.top(&q).unwrap();
                // Per container, from the totals too.
                let c = store.top(&by_container).unwrap();
                top.rows.extend(c.rows);
                assert_eq!(
                    (c.total, c.unattributed, c.excluded),
                    (top.total, top.unattributed, top.excluded)
                );
                let periods: Vec<_> = [Period::Hour, Period::Day, Period::Week, Period::Month]
                    .into_iter()
                    .map(|p| store.periods(p, since, until, uid, true).unwrap())
                    .collect();
                (top.rows, top.total, top.unattributed, top.excluded, periods)
            };
            let fast = report(store, true);
            let slow = report(store, false);
            let w = format!("window [{since}, {until}) uid {uid:?}");
            // Both summed in Rust: the SQL GROUP BY of old is the reference.
            let sql = top_by_sql(store, &q);
            let mut rows = sql.rows.clone();
            rows.extend(top_by_sql(store, &by_container).rows);
            assert_eq!(
                (rows, sql.total, sql.unattributed, sql.excluded),
                (fast.0.clone(), fast.1, fast.2, fast.3),
                "top against SQL, {w}"
            );
            let periods = [Period::Hour, Period::Day, Period::Week, Period::Month]
                .map(|p| periods_by_sql(store, p, (since, until), uid, true));
            assert_eq!(&periods[..], &slow.4[..], "periods against SQL, {w}");
            assert_eq!(fast.0, slow.0, "top rows, {w}");
            assert_eq!(fast.1, slow.1, "top total, {w}");
            assert_eq!(fast.2, slow.2, "top unattributed, {w}");
            assert_eq!(fast.3, slow.3, "top excluded, {w}");
            for (i, (f, s)) in fast.4.iter().zip(&slow.4).enumerate() {
                let first = f.iter().zip(s).position(|(a, b)| a != b);
                assert!(
                    f.len() == s.len() && first.is_none(),
                    "periods #{i}, {w}: {} vs {} rows, first difference {:?}",
                    f.len(),
                    s.len(),
                    first.map(|j| (&f[j], &s[j]))
                );
            }
        }
    }
}

#[test]
fn totals_equal_the_detail_after_random_passes_flushes_and_rollups() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = busy_store(dir.path());
    let tiers: i64 = store
        .conn()
        .query_row(
            "SELECT count(DISTINCT granularity) FROM usage_tiers",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tiers, 2, "hourly and daily rows exist");
    assert_eq!(mismatches(&store), 0);
    let mut rng = Rng(42);
    let mut windows = vec![(T0 - DAY, T0 + 12 * DAY), (T0 + 3 * DAY, T0 + 4 * DAY)];
    for _ in 0..60 {
        let a = T0 - DAY + rng.below(12 * DAY as u64) as i64;
        let b = a + 1 + rng.below(5 * DAY as u64) as i64;
        windows.push((a, b));
        // Aligned and nearly aligned edges too.
        windows.push((a - a % HOUR, b - b % HOUR + 1));
    }
    assert_reports_equal(&mut store, &windows);
}

/// Issue 26: a database of schema 17 gets the raw buckets' totals from its raw rows when
/// it is opened for writing, and reports read the same from them as from the raw rows
/// before (read-only, at schema 17).
#[test]
fn migration_0018_sums_the_raw_buckets_and_reports_stay_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let store = busy_store(dir.path());
    let (buckets, raw): (i64, i64) = store
        .conn()
        .query_row(
            "SELECT (SELECT count(*) FROM usage_bucket_totals),
                    (SELECT count(DISTINCT ts) FROM usage_raw)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        raw > 100 && buckets > raw,
        "{raw} buckets, {buckets} totals"
    );
    assert_eq!(bucket_mismatches(&store), 0);
    // Windows with edges inside hours of the raw tier (read from the bucket totals at
    // 18, from the raw rows at 17). (Local time, where whole hours of the raw tier are
    // read from them too, is the integration tests': it is the process's TZ.)
    let windows: Vec<(i64, i64)> = (0..12)
        .map(|i| (T0 + 8 * DAY + i * 3917, T0 + 10 * DAY - i * 4451))
        .collect();
    let reports = |store: &Store| -> Vec<String> {
        let mut out = vec![];
        for &(since, until) in &windows {
            for period in [Period::Hour, Period::Day] {
                let rows = store.periods(period, since, until, None, true).unwrap();
                out.push(format!("{rows:?}"));
            }
        }
        out
    };
    let at_18 = reports(&store);
    store
        .conn()
        .execute_batch(
            "DROP TABLE usage_bucket_totals; DROP TABLE usage_day_prefixes;
             DROP TABLE usage_prefix_days; PRAGMA user_version = 17;",
        )
        .unwrap();
    let path = dir.path().join("t.db");
    drop(store);
    let ro = OpenOptions {
        read_only: true,
        ..OpenOptions::default()
    };
    let at_17 = reports(&Store::open(&path, &ro).unwrap());
    assert_eq!(at_17, at_18);
    let store = Store::open(&path, &OpenOptions::default()).unwrap();
    assert_eq!(store.schema, PREFIX_SCHEMA);
    assert_eq!(bucket_mismatches(&store), 0);
    assert_eq!(reports(&store), at_18);
}

/// The days listed with running sums (`usage_day_prefixes`), and how many rows they have.
fn prefix_days(store: &Store) -> (Vec<i64>, i64) {
    let c = store.conn();
    let mut stmt = c
        .prepare("SELECT day FROM usage_prefix_days ORDER BY day")
        .unwrap();
    let days = stmt.query_map([], |r| r.get(0)).unwrap();
    let rows = c
        .query_row("SELECT count(*) FROM usage_day_prefixes", [], |r| r.get(0))
        .unwrap();
    (days.collect::<Result<_, _>>().unwrap(), rows)
}

/// Issue 26: the rollup after a day lists it with its running sums; a late pass into it
/// adds to them; they go with its hours when it rolls into the daily tier.
#[test]
fn a_days_running_sums_take_late_passes_and_go_with_its_hours() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = busy_store(dir.path());
    let (days, rows) = prefix_days(&store);
    // Days 4 to 8 are over and have hours (0 to 3 rolled into the daily tier), the 9th
    // was today at the last rollup.
    assert_eq!(days, (4..9).map(|d| T0 + d * DAY).collect::<Vec<_>>());
    assert!(rows > 5 * 24 * 4, "{rows} rows");
    assert_eq!(mismatches(&store), 0);
    // A late pass into day 4's 7th hour, and one into day 8's 20th.
    let mut rng = Rng(7);
    for ts in [
        T0 + 4 * DAY + 6 * HOUR + 17,
        T0 + 8 * DAY + 19 * HOUR + 3599,
    ] {
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        store
            .write_pass(&record, &random_plan(&mut rng), &[])
            .unwrap();
    }
    assert_eq!(mismatches(&store), 0);
    assert_eq!(prefix_days(&store).0, days);
    // Three days on, days 4 to 6 are in the daily tier, 9 to 11 over (10 and 11 without
    // traffic: not listed).
    store
        .roll_up(T0 + 12 * DAY, &busy_retention(), u64::MAX)
        .unwrap();
    let (after, _) = prefix_days(&store);
    assert_eq!(after[..2], days[3..], "{after:?}");
    assert_eq!(after[2..], [T0 + 9 * DAY], "{after:?}");
    assert_eq!(mismatches(&store), 0);
}

/// Issue 26: a database of schema 18 gets the running sums of every day over with hours
/// of its own when it is opened for writing (migration 0019): the same as the rollups
/// keep.
#[test]
fn migration_0019_sums_every_day_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = busy_store(dir.path());
    let (days, rows) = prefix_days(&store);
    store
        .conn()
        .execute_batch(
            "DROP TABLE usage_day_prefixes; DROP TABLE usage_prefix_days;
             PRAGMA user_version = 18;",
        )
        .unwrap();
    drop(store);
    let store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    assert_eq!(store.schema, PREFIX_SCHEMA);
    // Today's too, here (the data is from long ago).
    let (all, more) = prefix_days(&store);
    assert_eq!(all[..5], days[..], "{all:?}");
    assert_eq!(all.len(), 6);
    assert!(more > rows, "{more} rows, {rows} before");
    assert_eq!(mismatches(&store), 0);
}

/// Issue 26: `export` reads a period an hour at a time, each hour sorted on its own,
/// in bounded memory: the same rows in the same order as one query sorting them all.
#[test]
fn export_an_hour_at_a_time_equals_one_query_over_the_period() {
    let dir = tempfile::tempdir().unwrap();
    let store = busy_store(dir.path());
    let mut rng = Rng(26);
    let mut windows = vec![
        (T0 - DAY, T0 + 12 * DAY),
        (T0 + 3 * DAY, T0 + 4 * DAY),
        (T0 + 5 * DAY + 17, T0 + 5 * DAY + 17),
        (T0 + 5 * DAY + 17, T0 + 5 * DAY - 3),
    ];
    for _ in 0..40 {
        let a = T0 - DAY + rng.below(12 * DAY as u64) as i64;
        let b = a + 1 + rng.below(5 * DAY as u64) as i64;
        windows.push((a, b));
        windows.push((a - a % HOUR, b - b % DAY));
        windows.push((a, a + rng.below(2 * HOUR as u64) as i64));
    }
    let mut compared = 0;
    for (since, until) in windows {
        let read = |by_hour| {
            let mut rows = vec![];
            store
                .export_rows(since, until, by_hour, |r| {
                    rows.push(r);
                    Ok::<_, StoreError>(())
                })
                .unwrap();
            rows
        };
        let (hourly, whole) = (read(true), read(false));
        assert_eq!(hourly.len(), whole.len(), "[{since}, {until})");
        let first = hourly.iter().zip(&whole).position(|(a, b)| a != b);
        assert_eq!(first, None, "[{since}, {until}): first difference");
        compared += whole.len();
    }
    assert!(compared > 20_000, "{compared} rows compared");
}

#[test]
fn an_older_database_gets_its_totals_a_day_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = busy_store(dir.path());
    // As a database from before the totals: none yet, backfill from after the data.
    store
        .conn()
        .execute_batch(&format!(
            "DELETE FROM usage_totals;
             UPDATE usage_totals_backfill SET before = {};",
            T0 + 11 * DAY
        ))
        .unwrap();
    // Passes after the upgrade add from `before` on (here: mid-day, as the migration
    // leaves it at the hour it ran).
    let upgrade = T0 + 9 * DAY + 13 * HOUR;
    store
        .conn()
        .execute_batch(&format!(
            "UPDATE usage_totals_backfill SET before = {upgrade};
             INSERT INTO usage_totals
             SELECT g, ts - ts % g AS t, uid, kind, reason, via_uid, container,
                    container_uid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                    sum(tx_packets)
             FROM (SELECT * FROM usage_raw WHERE ts >= {upgrade}),
                  (SELECT 3600 AS g UNION ALL SELECT 86400)
             GROUP BY g, t, uid, kind, reason, via_uid, container, container_uid;"
        ))
        .unwrap();
    assert!(mismatches(&store) > 0);
    // Reports read the detail meanwhile, and still agree.
    assert_reports_equal(
        &mut store,
        &[(T0, T0 + 10 * DAY), (T0 + 9 * DAY, T0 + 10 * DAY)],
    );
    let mut steps = 0;
    while store.backfill_totals(1).unwrap() > 0 {
        steps += 1;
        assert!(steps < 100);
    }
    assert!(steps >= 8, "a day per step: {steps}");
    assert_eq!(mismatches(&store), 0);
    store.set_use_totals(true);
    assert!(store.totals_cover(T0 - 100 * DAY).unwrap(), "complete");
    assert_reports_equal(
        &mut store,
        &[(T0, T0 + 10 * DAY), (T0 + 3600, T0 + 5 * DAY + 7)],
    );
}
