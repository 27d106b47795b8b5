//! Per-user totals per UTC hour and day (`usage_totals`, migration 0006): what lets `top`
//! and `report` answer over a year in milliseconds instead of summing millions of detail
//! rows.
//!
//! Invariant: for every usage row of any tier with time `ts`, the hour total at
//! `ts − ts % 3600` and the day total at `ts − ts % 86400` (same uid, kind, reason,
//! service and container) include its counters — no more, no less. Passes and daemon
//! flushes add to the totals in the transaction that writes their usage rows ([`add`]);
//! rollups keep every row's hour and day, so they need not touch them; retention drops
//! totals with the detail they sum. A database that had usage before the totals existed
//! gets them from its detail a day at a time, newest first ([`Store::backfill_totals`]);
//! `before` marks how far that got.

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Charge, Store, StoreError};
use crate::account::{PassPlan, Traffic};

/// The schema that has the totals (`0006_usage_totals.sql`).
pub const TOTALS_SCHEMA: i64 = 6;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Add a pass's (or a flush's) usage, dated `ts`, to the totals of its hour and day.
/// Inside the transaction that writes the usage rows.
/// `charges[i]` is who the `i`th of `plan.usage` was charged to, as written.
pub(super) fn add(
    tx: &Transaction,
    ts: i64,
    plan: &PassPlan,
    charges: &[Charge],
) -> rusqlite::Result<()> {
    // Rows older than the backfill's progress will be summed from the detail by it.
    if backfill_before(tx)?.is_some_and(|before| ts < before) {
        return Ok(());
    }
    // Keyed by the detail's own columns (the service's uid, the container too).
    let mut sums: BTreeMap<Charge, Traffic> = BTreeMap::new();
    for ((_, t), c) in plan.usage.iter().zip(charges) {
        sums.entry(*c).or_default().add(t);
    }
    let mut stmt = tx.prepare_cached(concat!(
        "INSERT INTO usage_totals (granularity, ts, uid, kind, reason, via_uid, container,
            container_uid, rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (granularity, ts, uid, kind, reason, via_uid, container, container_uid)",
        add_counters!()
    ))?;
    for (c, t) in &sums {
        for g in [HOUR, DAY] {
            stmt.execute(params![
                g,
                ts - ts.rem_euclid(g),
                c.uid,
                c.kind,
                c.reason,
                c.via_uid,
                c.container,
                c.container_uid,
                t.rx_bytes as i64,
                t.tx_bytes as i64,
                t.rx_packets as i64,
                t.tx_packets as i64,
            ])?;
        }
    }
    Ok(())
}

/// Where the backfill stands: totals are complete for `ts >= before`; `None` when they
/// are complete.
fn backfill_before(conn: &rusqlite::Connection) -> rusqlite::Result<Option<i64>> {
    conn.query_row(
        "SELECT before FROM usage_totals_backfill WHERE id = 0",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

impl Store {
    /// Whether the totals hold every row from `since` on (and the schema has them).
    pub(super) fn totals_cover(&self, since: i64) -> Result<bool, StoreError> {
        if self.schema < TOTALS_SCHEMA || !self.use_totals {
            return Ok(false);
        }
        let before = backfill_before(&self.conn).map_err(|e| self.wrap(e))?;
        Ok(before.is_none_or(|b| since >= b))
    }

    /// Read reports from the detail rows only, as before the totals existed (tests and
    /// benchmarks compare the two).
    pub fn set_use_totals(&mut self, on: bool) {
        self.use_totals = on;
    }

    /// Fill in the totals of up to `days` more days (with usage) from the detail, newest
    /// first, one day per transaction. Returns the days done; 0 when complete.
    pub fn backfill_totals(&mut self, days: u32) -> Result<u32, StoreError> {
        if self.schema < TOTALS_SCHEMA {
            return Ok(0);
        }
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let mut done = 0;
        while done < days {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(wrap)?;
            let Some(before) = backfill_before(&tx).map_err(wrap)? else {
                break;
            };
            let newest: Option<i64> = tx
                .query_row(
                    "SELECT max(t) FROM (SELECT max(ts) AS t FROM usage_raw WHERE ts < ?1
                                         UNION ALL
                                         SELECT max(ts) FROM usage_tiers WHERE ts < ?1)",
                    [before],
                    |r| r.get(0),
                )
                .map_err(wrap)?;
            let from = newest.map(|t| t - t.rem_euclid(DAY));
            if let Some(from) = from {
                // The first step's day may have totals from `before` on already (the
                // migration's hour, the passes since): add to them.
                tx.execute(
                    concat!(
                        "INSERT INTO usage_totals (granularity, ts, uid, kind, reason, via_uid,
                             container, container_uid, rx_bytes, tx_bytes, rx_packets,
                             tx_packets)
                     SELECT g, ts - ts % g AS t, uid, kind, reason, via_uid, container,
                            container_uid,
                            sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                     FROM (SELECT ts, uid, kind, reason, via_uid, container, container_uid,
                                  rx_bytes, tx_bytes, rx_packets, tx_packets
                           FROM usage_raw WHERE ts >= ?1 AND ts < ?2
                           UNION ALL
                           SELECT ts, uid, kind, reason, via_uid, container, container_uid,
                                  rx_bytes, tx_bytes, rx_packets, tx_packets
                           FROM usage_tiers WHERE ts >= ?1 AND ts < ?2),
                          (SELECT 3600 AS g UNION ALL SELECT 86400)
                     WHERE true
                     GROUP BY g, t, uid, kind, reason, via_uid, container, container_uid
                     ON CONFLICT (granularity, ts, uid, kind, reason, via_uid, container,
                                  container_uid)",
                        add_counters!()
                    ),
                    params![from, before],
                )
                .map_err(wrap)?;
            }
            tx.execute(
                "UPDATE usage_totals_backfill SET before = ?1 WHERE id = 0",
                [from],
            )
            .map_err(wrap)?;
            tx.commit().map_err(wrap)?;
            if from.is_none() {
                break;
            }
            done += 1;
        }
        Ok(done)
    }

    /// Drop the totals older than `cutoff` (the daily tier's retention drops their detail).
    pub(super) fn drop_totals_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        if self.schema < TOTALS_SCHEMA {
            return Ok(0);
        }
        self.conn
            .execute(
                "DELETE FROM usage_totals WHERE granularity IN (3600, 86400) AND ts < ?1",
                [cutoff],
            )
            .map(|n| n as u64)
            .map_err(|e| self.wrap(e))
    }
}

#[cfg(test)]
pub(super) mod tests {
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
        store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
    }

    /// Ten days of passes and daemon flushes with rollups in between (raw kept 2 days,
    /// hourly 5, daily 9: every tier and the daily drop happen).
    fn busy_store(dir: &std::path::Path) -> Store {
        let mut store = Store::open(&dir.join("t.db"), &OpenOptions::default()).unwrap();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let r = Retention {
            raw: Duration::from_secs(2 * DAY as u64),
            hourly: Duration::from_secs(5 * DAY as u64),
            daily: Some(Duration::from_secs(9 * DAY as u64)),
            ..Retention::default()
        };
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
}
