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

/// The schema that has `usage_tier_weeks` (`0017_usage_tier_weeks.sql`).
pub const TIER_WEEKS_SCHEMA: i64 = 17;

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;
/// A week of `usage_tier_weeks`: from a multiple of it since the epoch.
const WEEK: i64 = 7 * DAY;

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
            "{} {} UNION ALL SELECT {columns} FROM usage_tiers
             WHERE granularity = 86400 AND ts IN ({})",
            ranges_union(&tiers, &[(start, d1), (d2, until)]),
            self.tier_day_sums(d1, d2),
            days.join(", ")
        ))
    }

    /// The branches reading the hourly tier's sums per key of the whole days `[d1, d2)`:
    /// its whole weeks from `usage_tier_weeks` (schema 17), the other days from
    /// `usage_tier_days`. Each week's row is the sum of the day rows dated in it, kept so
    /// by triggers, so both read the same sums per key.
    fn tier_day_sums(&self, d1: i64, d2: i64) -> String {
        let columns = super::query::usage_columns(self.schema);
        let days = format!("SELECT {columns} FROM usage_tier_days WHERE true");
        // SQL's `ts - ts % 604800` is the week's start for times since the epoch.
        let (w1, w2) = (ceil(d1.max(0), WEEK), d2 - d2.rem_euclid(WEEK));
        if self.schema < TIER_WEEKS_SCHEMA || w1 >= w2 {
            return ranges_union(&days, &[(d1, d2)]);
        }
        let weeks = format!("SELECT {columns} FROM usage_tier_weeks WHERE true");
        ranges_union(&days, &[(d1, w1), (w2, d2)]) + &ranges_union(&weeks, &[(w1, w2)])
    }
}

/// The first `t` at or after `t` that is a multiple of `step`.
fn ceil(t: i64, step: i64) -> i64 {
    t + (step - t.rem_euclid(step)) % step
}

#[cfg(test)]
mod tests;
