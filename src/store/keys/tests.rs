use std::time::Duration;

use super::*;
use crate::store::connections::EventWrite;
use crate::store::query::tests::top_by_sql;
use crate::store::query::{By, TopQuery};
use crate::store::retention::Retention;
use crate::store::totals::tests::{random_plan, Rng};
use crate::store::{OpenOptions, PassRecord};

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00Z

/// Rows of `sums` (an SQL `SELECT`) that `table` does not hold as they are, and rows
/// of `table` that `sums` does not give.
fn differences(store: &Store, sums: &str, table: &str) -> i64 {
    let sql = format!(
        "SELECT (SELECT count(*) FROM ({sums} EXCEPT SELECT * FROM {table}))
              + (SELECT count(*) FROM (SELECT * FROM {table} EXCEPT {sums}))"
    );
    store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
}

/// The key columns after the time, as the tables of sums key their rows.
const KEY: &str = "uid, kind, reason, via_uid, container, container_uid, program, cgroup,
                   remote, protocol, port";

/// Keys the raw rows of the span sum to that `usage_keys` does not hold as they are,
/// and rows of `usage_keys` the raw rows do not explain.
fn mismatches(store: &Store) -> i64 {
    let sums = format!(
        "SELECT g, ts - ts % g AS t, {KEY}, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                sum(tx_packets)
         FROM usage_raw, (SELECT 3600 AS g UNION ALL SELECT 86400)
         WHERE ts - ts % g >= (SELECT lo FROM usage_keys_span)
           AND ts < (SELECT hi FROM usage_keys_span)
         GROUP BY g, t, {KEY}"
    );
    differences(store, &sums, "usage_keys")
}

/// Sums per key and day of the hourly rows that `usage_tier_days` does not hold as
/// they are, and its rows the hourly rows do not explain.
fn tier_day_mismatches(store: &Store) -> i64 {
    let sums = format!(
        "SELECT ts - ts % 86400 AS d, {KEY}, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                sum(tx_packets)
         FROM usage_tiers WHERE granularity = 3600 GROUP BY d, {KEY}"
    );
    differences(store, &sums, "usage_tier_days")
}

/// Sums per key and week of the day rows that `usage_tier_weeks` does not hold as they
/// are (with how many day rows each is), and its rows the day rows do not explain.
fn tier_week_mismatches(store: &Store) -> i64 {
    let sums = format!(
        "SELECT ts - ts % 604800 AS w, {KEY}, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                sum(tx_packets), count(*)
         FROM usage_tier_days GROUP BY w, {KEY}"
    );
    differences(store, &sums, "usage_tier_weeks")
}

/// Eight days of passes and daemon flushes every 10 minutes, a tenth of them late (up
/// to three hours, into buckets the span already holds), with rollups (raw kept 2 days,
/// hourly 4) and catch-ups of random budgets in between.
fn busy_store(dir: &std::path::Path) -> Store {
    let mut store = Store::open(&dir.join("k.db"), &OpenOptions::default()).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let r = Retention {
        raw: Duration::from_secs(2 * DAY as u64),
        hourly: Duration::from_secs(4 * DAY as u64),
        ..Retention::default()
    };
    let mut late = 0;
    for step in 0..1150 {
        let now = T0 + step * 600 + rng.below(600) as i64;
        let ts = match rng.below(10) {
            0 => {
                late += 1;
                now - rng.below(3 * HOUR as u64) as i64
            }
            _ => now,
        };
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
        match rng.below(20) {
            0 => {
                store.roll_up(now, &r, 300).unwrap();
            }
            1 => {
                store.catch_up_keys(now, 1 + rng.below(40)).unwrap();
            }
            _ => {}
        }
        if step % 200 == 0 {
            assert_eq!(mismatches(&store), 0, "step {step}");
            assert_eq!(tier_day_mismatches(&store), 0, "step {step}");
        }
    }
    assert!(late > 80);
    store
}

#[test]
fn keys_equal_the_raw_rows_and_top_by_any_key_equals_the_detail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = busy_store(dir.path());
    let end = T0 + 1150 * 600;
    store.catch_up_keys(end, u64::MAX).unwrap();
    assert_eq!(mismatches(&store), 0);
    let (lo, hi) = span(store.conn()).unwrap();
    assert!(hi - lo > 2 * DAY - 2 * HOUR, "the raw tier: [{lo}, {hi})");
    // A late pass into a summed bucket, and one ahead of the span.
    for ts in [hi - 2 * HOUR + 17, hi + 400] {
        let plan = random_plan(&mut Rng(ts as u64));
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        store.write_pass(&record, &plan, &[]).unwrap();
    }
    assert_eq!(mismatches(&store), 0);
    let keyed: i64 = store
        .conn()
        .query_row("SELECT count(*) FROM usage_keys", [], |r| r.get(0))
        .unwrap();
    assert!(keyed > 1000, "{keyed} rows");
    let in_containers: i64 = store
        .conn()
        .query_row(
            "SELECT count(*) FROM usage_keys WHERE container <> 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(in_containers > 100, "{in_containers} rows of containers");

    let mut rng = Rng(7);
    let mut windows = vec![(lo, hi), (T0, end + DAY), (lo - DAY, hi)];
    for _ in 0..40 {
        let a = lo - DAY + rng.below(3 * DAY as u64) as i64;
        let b = a + 1 + rng.below(2 * DAY as u64) as i64;
        windows.push((a, b));
        windows.push((a - a % HOUR, b - b % DAY));
    }
    // Over the hourly and daily tiers too (whole days of the hourly tier from their
    // sums per key), edges anywhere.
    for _ in 0..30 {
        let a = T0 - DAY + rng.below(9 * DAY as u64) as i64;
        let b = a + 1 + rng.below(6 * DAY as u64) as i64;
        windows.push((a, b));
    }
    let hourly_days: i64 = store
        .conn()
        .query_row("SELECT count(DISTINCT ts) FROM usage_tier_days", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(
        hourly_days >= 2,
        "{hourly_days} days of the hourly tier summed"
    );
    assert_eq!(tier_day_mismatches(&store), 0);
    let (fast_paths, clipped) = compare_top(&mut store, &windows);
    assert!(
        fast_paths > 40,
        "windows read through the keys: {fast_paths}"
    );
    // Windows that begin in the daily tier, grouped by a key it does not keep.
    assert!(clipped > 20, "answers from where the keys begin: {clipped}");
    // They begin at the first hour of the hourly tier, and their totals are those of
    // that part of the window; a window of days alone has nothing to answer.
    let first_hour: i64 = store
        .conn()
        .query_row(
            "SELECT min(ts) FROM usage_tiers WHERE granularity = 3600",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let q = |since, by| TopQuery {
        since,
        until: end,
        by,
        uid: None,
        limit: 15,
    };
    let by_remote = store.top(&q(T0 - 3600, vec![By::Remote])).unwrap();
    assert_eq!(by_remote.keys_from, Some(first_hour));
    let per_user = store.top(&q(first_hour, vec![By::User])).unwrap();
    assert_eq!(per_user.keys_from, None);
    assert_eq!(
        (by_remote.total, by_remote.excluded),
        (per_user.total, per_user.excluded)
    );
    let all = store.top(&q(T0 - 3600, vec![By::User])).unwrap();
    assert!(all.total.bytes() > per_user.total.bytes());
    let days = TopQuery {
        until: first_hour - DAY,
        ..q(T0, vec![By::Port])
    };
    let days = store.top(&days).unwrap();
    assert_eq!(days.keys_from, Some(first_hour - DAY));
    assert!(days.rows.is_empty() && days.total.bytes() == 0);
}

/// `top` by every kind of key over `windows`, for every user and one, read through the
/// sums per key against the detail and against SQL's GROUP BY of old: the windows read
/// through the sums, and the answers that begin where the keys begin.
fn compare_top(store: &mut Store, windows: &[(i64, i64)]) -> (usize, usize) {
    let bys = [
        vec![By::Remote],
        vec![By::Program],
        vec![By::Port],
        vec![By::Via],
        vec![By::User, By::Remote, By::Port],
        vec![By::Container],
        vec![By::Container, By::Program],
        vec![By::Via, By::Container],
    ];
    let mut fast_paths = 0;
    let mut clipped = 0;
    for &(since, until) in windows {
        store.set_use_totals(true);
        fast_paths += usize::from(store.keys_cte(since, until).unwrap().is_some());
        for by in &bys {
            for uid in [None, Some(1001)] {
                let q = TopQuery {
                    since,
                    until,
                    by: by.clone(),
                    uid,
                    limit: 15,
                };
                store.set_use_totals(true);
                let fast = store.top(&q).unwrap();
                store.set_use_totals(false);
                let slow = store.top(&q).unwrap();
                let w = format!("[{since}, {until}) by {by:?} uid {uid:?}");
                // Both summed in Rust: the SQL GROUP BY of old is the reference.
                let sql = top_by_sql(store, &q);
                assert_eq!(fast.rows, sql.rows, "rows against SQL {w}");
                assert_eq!(fast.keys_from, sql.keys_from, "{w}");
                clipped += usize::from(fast.keys_from.is_some());
                assert_eq!(
                    (fast.total, fast.unattributed, fast.excluded),
                    (sql.total, sql.unattributed, sql.excluded),
                    "totals against SQL {w}"
                );
                assert_eq!(fast.rows, slow.rows, "rows {w}");
                assert_eq!(
                    (fast.total, fast.unattributed, fast.excluded),
                    (slow.total, slow.unattributed, slow.excluded),
                    "totals {w}"
                );
            }
        }
    }
    (fast_paths, clipped)
}

/// Issue 26: four weeks of passes every 40 minutes (a tenth late, up to three hours), the
/// hourly tier kept 17 days, rolled up as they go: the sums per week stay those of the
/// days as days are added to and rolled out of the hourly tier, and `top` by any key over
/// windows of whole weeks and edges anywhere is the detail's.
#[test]
fn week_sums_equal_the_days_and_top_over_weeks_equals_the_detail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("w.db"), &OpenOptions::default()).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let r = Retention {
        raw: Duration::from_secs(2 * DAY as u64),
        hourly: Duration::from_secs(17 * DAY as u64),
        ..Retention::default()
    };
    let steps = 28 * DAY / 2400;
    let mut rolled_out = 0;
    for step in 0..steps {
        let now = T0 + step * 2400 + rng.below(2400) as i64;
        let ts = match rng.below(10) {
            0 => now - rng.below(3 * HOUR as u64) as i64,
            _ => now,
        };
        let record = PassRecord {
            started_at: ts,
            mode: "run",
            ..PassRecord::default()
        };
        store
            .write_pass(&record, &random_plan(&mut rng), &[])
            .unwrap();
        if step % 9 == 0 {
            let days = |s: &Store| -> i64 {
                s.conn()
                    .query_row("SELECT count(*) FROM usage_tier_days", [], |r| r.get(0))
                    .unwrap()
            };
            let before = days(&store);
            store.roll_up(now, &r, 300).unwrap();
            rolled_out += usize::from(days(&store) < before);
        }
        if step % 100 == 0 {
            assert_eq!(tier_week_mismatches(&store), 0, "step {step}");
        }
    }
    let end = T0 + steps * 2400;
    store.catch_up_keys(end, u64::MAX).unwrap();
    assert!(
        rolled_out > 5,
        "days rolled out of the hourly tier: {rolled_out}"
    );
    assert_eq!(tier_day_mismatches(&store), 0);
    assert_eq!(tier_week_mismatches(&store), 0);
    let weeks: i64 = store
        .conn()
        .query_row("SELECT count(DISTINCT ts) FROM usage_tier_weeks", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(weeks >= 3, "{weeks} weeks summed");
    let mut rng = Rng(26);
    let mut windows = vec![(T0, end), (T0 + 9 * DAY, end)];
    for _ in 0..25 {
        let a = T0 + 8 * DAY + rng.below(10 * DAY as u64) as i64;
        let b = a + 1 + rng.below(16 * DAY as u64) as i64;
        windows.push((a, b));
    }
    let through_weeks = windows
        .iter()
        .filter(|(a, b)| {
            store.set_use_totals(true);
            let cte = store.keys_cte(*a, *b).unwrap();
            cte.is_some_and(|c| c.contains("usage_tier_weeks"))
        })
        .count();
    assert!(through_weeks > 10, "windows read by week: {through_weeks}");
    compare_top(&mut store, &windows);
}
