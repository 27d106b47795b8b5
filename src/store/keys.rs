//! Usage per key per UTC hour and day over the raw tier (`usage_keys`, migration 0009):
//! what lets `top --by remote|program|port|via` over a week read a few thousand rows a day
//! instead of a busy host's million raw buckets a day.
//!
//! Invariant: for every raw row (`usage_raw`) dated `ts` in `[lo, hi)` of
//! `usage_keys_span`, the hour row at `ts − ts % 3600` and the day row at `ts − ts % 86400`
//! with its key (less the direction) include its counters if that hour or day starts at `lo`
//! or later — no more, no less; no row holds anything dated outside `[lo, hi)`, and no row
//! is dated before `lo`. So an hour or day wholly inside `[lo, hi)` is complete
//! and a report reads it here ([`Store::keys_cte`]), and reads the rest of its period from
//! the detail, exactly as before.
//!
//! Upkeep, each step in one transaction:
//! - a pass or a daemon flush adds its rows dated in `[lo, hi)` ([`add`]; rare: `hi`
//!   trails the passes' own buckets);
//! - after passes, `hi` advances over complete 5-minute buckets, at most an hour and a
//!   budget of raw rows per call ([`Store::catch_up_keys`]; an older database's raw tier is
//!   filled in this way, oldest first);
//! - rolling a raw hour up into the hourly tier deletes the keys dated before its end and
//!   raises `lo` (and `hi`) past it ([`Store::KEYS_ROLLED_UP`]).

use rusqlite::{params, OptionalExtension, Transaction};

use super::query::{push, ranges_union, Split};
use super::{Store, StoreError, BUCKET_SECS};

/// The schema that has `usage_keys` (`0009_usage_keys.sql`, the 9th migration).
pub const KEYS_SCHEMA: i64 = 9;

/// The schema that has `usage_tier_days` (`0014_usage_tier_days.sql`).
pub const TIER_DAYS_SCHEMA: i64 = 14;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// Raw rows summed per call of [`Store::catch_up_keys`], about: it stops at the first
/// hour that reaches it (the simulated busy host's hour is 47,000 raw rows, about 0.2 s of
/// CPU in one transaction).
pub const CATCH_UP_ROWS: u64 = 40_000;

/// The upsert of one raw row's key and counters into its hour (?1 = 3600) or day.
const UPSERT: &str = concat!(
    "INSERT INTO usage_keys (granularity, ts, uid, kind, reason, via_uid, container,
        container_uid, program, cgroup, remote, protocol, port, rx_bytes, tx_bytes, rx_packets,
        tx_packets)
     VALUES (?1, ?2 - ?2 % ?1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
             ?17)
     ON CONFLICT",
    add_counters!()
);

/// `[lo, hi)`: the raw rows summed in `usage_keys`.
pub(super) fn span(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("SELECT lo, hi FROM usage_keys_span WHERE id = 0", [], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })
}

/// A usage row's key past who is charged ([`super::Charge`]): the ids of its program,
/// cgroup and remote (0: no program, no cgroup), its protocol and port.
pub(super) struct Row {
    pub(super) program: i64,
    pub(super) cgroup: i64,
    pub(super) remote: i64,
    pub(super) protocol: u8,
    pub(super) port: u16,
}

/// Adds the raw rows of one write dated `bucket` to `usage_keys` when the span holds that
/// bucket; built once per write, inside its transaction.
pub(super) struct Adder<'t> {
    stmt: Option<rusqlite::CachedStatement<'t>>,
    bucket: i64,
    lo: i64,
}

impl<'t> Adder<'t> {
    pub(super) fn new(tx: &'t Transaction, bucket: i64) -> rusqlite::Result<Adder<'t>> {
        let (lo, hi) = span(tx)?;
        let stmt = match (lo..hi).contains(&bucket) {
            true => Some(tx.prepare_cached(UPSERT)?),
            false => None,
        };
        Ok(Adder { stmt, bucket, lo })
    }

    /// Add one raw row: who it is charged to, the rest of its key and the counters as
    /// written.
    pub(super) fn add(
        &mut self,
        c: &super::Charge,
        row: &Row,
        t: &crate::account::Traffic,
    ) -> rusqlite::Result<()> {
        let Some(stmt) = self.stmt.as_mut() else {
            return Ok(());
        };
        for g in [HOUR, DAY] {
            // The hour or day that began before the span has no row.
            if self.bucket - self.bucket.rem_euclid(g) < self.lo {
                continue;
            }
            stmt.execute(params![
                g,
                self.bucket,
                c.uid,
                c.kind,
                c.reason,
                c.via_uid,
                c.container,
                c.container_uid,
                row.program,
                row.cgroup,
                row.remote,
                row.protocol,
                row.port,
                t.rx_bytes as i64,
                t.tx_bytes as i64,
                t.rx_packets as i64,
                t.tx_packets as i64,
            ])?;
        }
        Ok(())
    }
}

impl Store {
    /// What the raw → hourly rollup of `[?1, ?2)` (the oldest raw hour) runs in its
    /// transaction: the keys dated before `?2` go, and the span starts at `?2` at the earliest.
    pub(super) const KEYS_ROLLED_UP: [&str; 2] = [
        "DELETE FROM usage_keys WHERE granularity IN (3600, 86400) AND ts < ?2 AND ?1 < ?2",
        "UPDATE usage_keys_span SET lo = max(lo, ?2), hi = max(hi, ?2) WHERE ?1 < ?2",
    ];

    /// [`Store::catch_up_keys`] after a pass at `now` with the default budget: the raw
    /// rows summed, and whether more is due.
    pub(super) fn keys_after_pass(&mut self, now: i64) -> Result<(u64, bool), StoreError> {
        let n = self.catch_up_keys(now, CATCH_UP_ROWS)?;
        Ok((n, n >= CATCH_UP_ROWS))
    }

    /// Advance the span over the complete raw buckets before `now` (a pass's time), one
    /// hour of raw rows per transaction, until about `budget` raw rows are summed. Returns
    /// the raw rows summed.
    pub fn catch_up_keys(&mut self, now: i64, budget: u64) -> Result<u64, StoreError> {
        if self.schema < KEYS_SCHEMA {
            return Ok(0);
        }
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let end = now - now.rem_euclid(BUCKET_SECS);
        let mut summed = 0;
        while summed < budget {
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(wrap)?;
            let (lo, hi) = span(&tx).map_err(wrap)?;
            let from = lo.max(hi);
            if from >= end {
                break;
            }
            // Up to the end of the hour of the next raw row (gaps cost nothing).
            let next: Option<i64> = tx
                .query_row(
                    "SELECT min(ts) FROM usage_raw WHERE ts >= ?1 AND ts < ?2",
                    [from, end],
                    |r| r.get(0),
                )
                .map_err(wrap)?;
            let to = next.map_or(end, |t| (t - t.rem_euclid(HOUR) + HOUR).min(end));
            let rows: i64 = tx
                .query_row(
                    "SELECT count(*) FROM usage_raw WHERE ts >= ?1 AND ts < ?2",
                    [from, to],
                    |r| r.get(0),
                )
                .map_err(wrap)?;
            tx.execute(
                concat!(
                    "INSERT INTO usage_keys (granularity, ts, uid, kind, reason, via_uid,
                             container, container_uid, program, cgroup, remote, protocol, port,
                             rx_bytes, tx_bytes, rx_packets, tx_packets)
                         SELECT g, ts - ts % g AS t, uid, kind, reason, via_uid, container,
                                container_uid, program, cgroup, remote, protocol, port,
                                sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                         FROM usage_raw, (SELECT 3600 AS g UNION ALL SELECT 86400)
                         WHERE ts >= ?1 AND ts < ?2 AND ts - ts % g >= ?3
                         GROUP BY g, t, uid, kind, reason, via_uid, container, container_uid,
                                  program, cgroup, remote, protocol, port
                         ON CONFLICT",
                    add_counters!()
                ),
                [from, to, lo],
            )
            .map_err(wrap)?;
            tx.execute("UPDATE usage_keys_span SET hi = ?1 WHERE id = 0", [to])
                .map_err(wrap)?;
            tx.commit().map_err(wrap)?;
            summed += rows as u64;
        }
        Ok(summed)
    }

    /// The CTE `c` of a report of `[since, until)` that reads whole hours and days of the
    /// raw tier from `usage_keys` and whole days of the hourly tier from `usage_tier_days`
    /// (schema 14), or `None` when that spares nothing. It holds the same rows per key as
    /// the detail path (`query::COMPACT`), so any grouping but by direction and by time is
    /// the same either way.
    pub(super) fn keys_cte(&self, since: i64, until: i64) -> Result<Option<String>, StoreError> {
        // An unmigrated database older than the typed columns is read from the detail.
        if self.schema < super::TYPED_SCHEMA || !self.use_totals {
            return Ok(None);
        }
        let tier_days = self.schema >= TIER_DAYS_SCHEMA;
        // As for the totals: the rows the detail path reads are those dated in
        // [covered since, until).
        let start = self.covered(since, until, i64::MAX)?.since;
        let (lo, hi) = span(&self.conn).map_err(|e| self.wrap(e))?;
        let (a, b) = (start.max(lo), until.min(hi));
        let split = match b - a >= HOUR {
            true => Split::new(a, b, |_| false),
            false => Split::new(a, a, |_| false),
        };
        let keyed = !(split.days.is_empty() && split.hours.is_empty());
        if !keyed && !tier_days {
            return Ok(None);
        }
        let columns = super::query::usage_columns(self.schema);
        let mut detail = vec![];
        match keyed {
            true => {
                push(&mut detail, start, a);
                for (x, y) in &split.detail {
                    push(&mut detail, *x, *y);
                }
                push(&mut detail, b, until);
            }
            false => push(&mut detail, start, until),
        }
        let branches = [
            ranges_union(
                &format!(
                    "SELECT {columns} FROM usage_keys
                     WHERE granularity = 86400 AND ?2 >= ?1"
                ),
                &split.days,
            ),
            ranges_union(
                &format!("SELECT {columns} FROM usage_keys WHERE granularity = 3600"),
                &split.hours,
            ),
            ranges_union(
                &format!("SELECT {columns} FROM usage_raw WHERE true"),
                &detail,
            ),
            match tier_days {
                true => self.tier_days_branches(start, until)?,
                false => ranges_union(
                    &format!("SELECT {columns} FROM usage_tiers WHERE true"),
                    &[(start, until)],
                ),
            },
        ];
        // `?2 >= ?1` names the period's parameters, which the callers bind.
        Ok(Some(format!(
            "c AS (
               SELECT {columns} FROM usage_tiers WHERE 0 AND ?2 >= ?1
               {})",
            branches.concat()
        )))
    }

    /// Where the programs, remotes and ports of `[since, until)` begin when that is later
    /// than `since`: the end of the last daily row (kept per user only) the window
    /// overlaps, at most `until`. Daily rows are older than every hourly row (the rollup
    /// turns the oldest day of hours into them): the last is found by a key lookup back
    /// from the first hour.
    pub fn keys_from(&self, since: i64, until: i64) -> Result<Option<i64>, StoreError> {
        let wrap = |e| self.wrap(e);
        let compact = self.schema >= super::COMPACT_SCHEMA;
        let first_hour = match (self.schema >= TIER_DAYS_SCHEMA, compact) {
            (true, _) => "SELECT min(ts) FROM usage_tier_days",
            (false, true) => "SELECT min(ts) FROM usage_tiers WHERE granularity = 3600",
            (false, false) => "SELECT min(ts) FROM usage_rollup WHERE granularity = 'hour'",
        };
        let first_hour: Option<i64> = self
            .conn
            .query_row(first_hour, [], |r| r.get(0))
            .map_err(wrap)?;
        let last_day = match compact {
            true => {
                "SELECT ts FROM usage_tiers WHERE ts < ?1 AND granularity = 86400
                     ORDER BY ts DESC LIMIT 1"
            }
            false => {
                "SELECT ts FROM usage_rollup WHERE ts < ?1 AND granularity = 'day'
                      ORDER BY ts DESC LIMIT 1"
            }
        };
        let last_day: Option<i64> = self
            .conn
            .query_row(
                last_day,
                [first_hour.map_or(i64::MAX, |t| t - t.rem_euclid(DAY))],
                |r| r.get(0),
            )
            .optional()
            .map_err(wrap)?;
        Ok(last_day
            .map(|d| (d + DAY).min(until))
            .filter(|from| *from > since))
    }

    /// `UNION ALL` branches of the rolled-up rows dated in `[start, until)`: the hours at
    /// its edges from the hourly tier, its whole days' hours from their sums per key
    /// (`usage_tier_days`, dated at the day's start) and its daily rows.
    fn tier_days_branches(&self, start: i64, until: i64) -> Result<String, StoreError> {
        let columns = super::query::usage_columns(self.schema);
        let tiers = format!("SELECT {columns} FROM usage_tiers WHERE true");
        let (d1, d2) = (ceil(start, DAY), until - until.rem_euclid(DAY));
        if d1 >= d2 {
            return Ok(ranges_union(&tiers, &[(start, until)]));
        }
        // Daily rows are at the start of a day: a key lookup for each day that has rows.
        let (first, last): (Option<i64>, Option<i64>) = self
            .conn
            .query_row(
                "SELECT (SELECT min(ts) FROM usage_tiers), (SELECT max(ts) FROM usage_tiers)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| self.wrap(e))?;
        let days: Vec<String> = match (first, last) {
            (Some(first), Some(last)) => (d1.max(first - first.rem_euclid(DAY))..d2.min(last + 1))
                .step_by(DAY as usize)
                .map(|d| d.to_string())
                .collect(),
            _ => vec![],
        };
        Ok(format!(
            "{} UNION ALL SELECT {columns} FROM usage_tier_days WHERE ts >= {d1} AND ts < {d2}
             UNION ALL SELECT {columns} FROM usage_tiers
             WHERE granularity = 86400 AND ts IN ({})",
            ranges_union(&tiers, &[(start, d1), (d2, until)]),
            days.join(", ")
        ))
    }
}

/// The first `t` at or after `t` that is a multiple of `step`.
fn ceil(t: i64, step: i64) -> i64 {
    t + (step - t.rem_euclid(step)) % step
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::connections::EventWrite;
    use crate::store::query::tests::top_by_sql;
    use crate::store::query::{By, TopQuery};
    use crate::store::retention::Retention;
    use crate::store::totals::tests::{random_plan, Rng};
    use crate::store::{OpenOptions, PassRecord};

    const T0: i64 = 1_767_225_600; // 2026-01-01T00:00Z

    /// Keys the raw rows of the span sum to that `usage_keys` does not hold as they are,
    /// and rows of `usage_keys` the raw rows do not explain.
    fn mismatches(store: &Store) -> i64 {
        let sums = "SELECT g, ts - ts % g AS t, uid, kind, reason, via_uid, container,
                           container_uid, program, cgroup, remote, protocol, port, sum(rx_bytes),
                           sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                    FROM usage_raw, (SELECT 3600 AS g UNION ALL SELECT 86400)
                    WHERE ts - ts % g >= (SELECT lo FROM usage_keys_span)
                      AND ts < (SELECT hi FROM usage_keys_span)
                    GROUP BY g, t, uid, kind, reason, via_uid, container, container_uid,
                             program, cgroup, remote, protocol, port";
        let sql = format!(
            "SELECT (SELECT count(*) FROM ({sums} EXCEPT SELECT * FROM usage_keys))
                  + (SELECT count(*) FROM (SELECT * FROM usage_keys EXCEPT {sums}))"
        );
        store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
    }

    /// Sums per key and day of the hourly rows that `usage_tier_days` does not hold as
    /// they are, and its rows the hourly rows do not explain.
    fn tier_day_mismatches(store: &Store) -> i64 {
        let sums = "SELECT ts - ts % 86400 AS d, uid, kind, reason, via_uid, container,
                           container_uid, program, cgroup, remote, protocol, port, sum(rx_bytes),
                           sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                    FROM usage_tiers WHERE granularity = 3600
                    GROUP BY d, uid, kind, reason, via_uid, container, container_uid,
                             program, cgroup, remote, protocol, port";
        let sql = format!(
            "SELECT (SELECT count(*) FROM ({sums} EXCEPT SELECT * FROM usage_tier_days))
                  + (SELECT count(*) FROM (SELECT * FROM usage_tier_days EXCEPT {sums}))"
        );
        store.conn().query_row(&sql, [], |r| r.get(0)).unwrap()
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
        for &(since, until) in &windows {
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
                    let sql = top_by_sql(&store, &q);
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
}
