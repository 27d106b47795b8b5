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
//!
//! The raw tier's buckets have their totals too (`usage_bucket_totals`, migration 0018):
//! for every raw row of bucket `ts`, the total at `ts` of its uid, kind, reason, service
//! and container includes its counters. [`add`] adds to them; the raw → hourly rollup
//! deletes them with the rows (`store::retention`).

use std::collections::BTreeMap;

use rusqlite::{params, OptionalExtension, Transaction};

use super::{Charge, Store, StoreError, BUCKET_SECS};
use crate::account::{PassPlan, Traffic};

/// The schema that has the totals (`0006_usage_totals.sql`).
pub const TOTALS_SCHEMA: i64 = 6;

/// The schema that has the totals per raw bucket (`0018_usage_bucket_totals.sql`).
pub const BUCKET_TOTALS_SCHEMA: i64 = 18;

/// The schema that has the running sums of the hour totals through each UTC day
/// (`0019_usage_day_prefixes.sql`).
pub const PREFIX_SCHEMA: i64 = 19;

/// The running sums of the day from `?1` (its start), for `usage_day_prefixes`: each key
/// of the day (its day totals) at each hour, from its first hour with a total on (as
/// migration 0019 sums every day).
const PREFIXES_OF_DAY: &str = "
    WITH RECURSIVE h(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM h WHERE n < 23)
    INSERT INTO usage_day_prefixes
    SELECT t, uid, kind, reason, via_uid, container, container_uid, rx, tx, rp, tp
    FROM (SELECT k.ts + 3600 * h.n AS t, k.uid, k.kind, k.reason, k.via_uid, k.container,
                 k.container_uid,
                 sum(coalesce(u.rx_bytes, 0)) OVER w AS rx,
                 sum(coalesce(u.tx_bytes, 0)) OVER w AS tx,
                 sum(coalesce(u.rx_packets, 0)) OVER w AS rp,
                 sum(coalesce(u.tx_packets, 0)) OVER w AS tp,
                 count(u.ts) OVER w AS seen
          FROM usage_totals k
          JOIN h
          LEFT JOIN usage_totals u
            ON u.granularity = 3600 AND u.ts = k.ts + 3600 * h.n AND u.uid = k.uid
           AND u.kind = k.kind AND u.reason = k.reason AND u.via_uid = k.via_uid
           AND u.container = k.container AND u.container_uid = k.container_uid
          WHERE k.granularity = 86400 AND k.ts = ?1
          WINDOW w AS (PARTITION BY k.ts, k.uid, k.kind, k.reason, k.via_uid, k.container,
                                    k.container_uid
                       ORDER BY h.n))
    WHERE seen > 0";

/// How many of the days before a pass's the rollup after it lists with their running sums
/// (when they are not yet): a day's is listed after the first pass of the next, or of one
/// of the two after it.
const PREFIX_DAYS_BACK: i64 = 3;

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
    // Keyed by the detail's own columns (the service's uid, the container too).
    let mut sums: BTreeMap<Charge, Traffic> = BTreeMap::new();
    for ((_, t), c) in plan.usage.iter().zip(charges) {
        sums.entry(*c).or_default().add(t);
    }
    // The raw bucket's, always (the migration summed every raw row).
    add_to_bucket(tx, ts.div_euclid(BUCKET_SECS) * BUCKET_SECS, &sums)?;
    // Rows older than the backfill's progress will be summed from the detail by it.
    if backfill_before(tx)?.is_some_and(|before| ts < before) {
        return Ok(());
    }
    add_to_prefixes(tx, ts, &sums)?;
    let mut stmt = tx.prepare_cached(concat!(
        "INSERT INTO usage_totals (granularity, ts, uid, kind, reason, via_uid, container,
            container_uid, rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
         ON CONFLICT (granularity, ts, uid, kind, reason, via_uid, container, container_uid)",
        add_counters!()
    ))?;
    for (c, t) in &sums {
        for g in [HOUR, DAY] {
            upsert(&mut stmt, &[g, ts - ts.rem_euclid(g)], c, t)?;
        }
    }
    Ok(())
}

/// Add `sums` to the totals of the raw bucket from `bucket` (`usage_bucket_totals`).
fn add_to_bucket(
    tx: &Transaction,
    bucket: i64,
    sums: &BTreeMap<Charge, Traffic>,
) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(concat!(
        "INSERT INTO usage_bucket_totals (ts, uid, kind, reason, via_uid, container,
            container_uid, rx_bytes, tx_bytes, rx_packets, tx_packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (ts, uid, kind, reason, via_uid, container, container_uid)",
        add_counters!()
    ))?;
    for (c, t) in sums {
        upsert(&mut stmt, &[bucket], c, t)?;
    }
    Ok(())
}

/// Add `sums`, dated `ts`, to the running sums of its hour and the later hours of its day,
/// when the day has them (a pass dated in a day that is over: a late one).
fn add_to_prefixes(
    tx: &Transaction,
    ts: i64,
    sums: &BTreeMap<Charge, Traffic>,
) -> rusqlite::Result<()> {
    let day = ts - ts.rem_euclid(DAY);
    let listed = tx
        .prepare_cached("SELECT 1 FROM usage_prefix_days WHERE day = ?1")?
        .exists([day])?;
    if !listed {
        return Ok(());
    }
    let mut stmt = tx.prepare_cached(concat!(
        "WITH RECURSIVE h(t) AS (SELECT ?1 UNION ALL SELECT t + 3600 FROM h WHERE t + 3600 < ?2)
         INSERT INTO usage_day_prefixes (ts, uid, kind, reason, via_uid, container,
            container_uid, rx_bytes, tx_bytes, rx_packets, tx_packets)
         SELECT t, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12 FROM h WHERE true
         ON CONFLICT (ts, uid, kind, reason, via_uid, container, container_uid)",
        add_counters!()
    ))?;
    for (c, t) in sums {
        upsert(&mut stmt, &[ts - ts.rem_euclid(HOUR), day + DAY], c, t)?;
    }
    Ok(())
}

/// Run `stmt`, an upsert of a key's counters, with `lead` as its first parameters, then
/// the key `c` and the counters `t` (in the order of `usage_totals`' columns).
fn upsert(
    stmt: &mut rusqlite::CachedStatement,
    lead: &[i64],
    c: &Charge,
    t: &Traffic,
) -> rusqlite::Result<()> {
    let counters = [t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets].map(|n| n as i64);
    let mut p: Vec<&dyn rusqlite::ToSql> = lead.iter().map(|x| x as _).collect();
    p.extend::<[&dyn rusqlite::ToSql; 6]>([
        &c.uid,
        &c.kind,
        &c.reason,
        &c.via_uid,
        &c.container,
        &c.container_uid,
    ]);
    p.extend(counters.iter().map(|x| x as &dyn rusqlite::ToSql));
    stmt.execute(&*p).map(|_| ())
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

    /// List the days before the one of `now` (up to [`PREFIX_DAYS_BACK`] of them) with
    /// their running sums, those not listed yet with traffic whose totals are complete, one
    /// day per transaction.
    pub(super) fn list_prefix_days(&mut self, now: i64) -> Result<(), StoreError> {
        if self.schema < PREFIX_SCHEMA {
            return Ok(());
        }
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let today = now - now.rem_euclid(DAY);
        // The totals are complete from `from` on.
        let from = backfill_before(&self.conn)
            .map_err(wrap)?
            .unwrap_or(i64::MIN);
        for back in 1..=PREFIX_DAYS_BACK {
            let day = today - back * DAY;
            // Not listed yet, and with traffic (a late pass into a day without: its hours
            // are read). One writer at a time: the store's lock.
            let due = self
                .conn
                .prepare_cached(
                    "SELECT NOT EXISTS (SELECT 1 FROM usage_prefix_days WHERE day = ?1)
                        AND EXISTS (SELECT 1 FROM usage_totals
                                    WHERE granularity = 86400 AND ts = ?1)",
                )
                .and_then(|mut st| st.query_row([day], |r| r.get::<_, bool>(0)))
                .map_err(wrap)?;
            if day < from || !due {
                continue;
            }
            let tx = self
                .conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(wrap)?;
            tx.execute(PREFIXES_OF_DAY, [day]).map_err(wrap)?;
            tx.execute("INSERT INTO usage_prefix_days (day) VALUES (?1)", [day])
                .map_err(wrap)?;
            tx.commit().map_err(wrap)?;
        }
        Ok(())
    }

    /// Drop the totals older than `cutoff` (the daily tier's retention drops their detail).
    pub(super) fn drop_totals_before(&self, cutoff: i64) -> Result<u64, StoreError> {
        if self.schema < TOTALS_SCHEMA {
            return Ok(0);
        }
        if self.schema >= PREFIX_SCHEMA {
            // The listing first, in one transaction: a day listed has all its sums.
            let tx = self
                .conn
                .unchecked_transaction()
                .map_err(|e| self.wrap(e))?;
            for sql in [
                "DELETE FROM usage_prefix_days WHERE day < ?1",
                "DELETE FROM usage_day_prefixes WHERE ts < ?1",
            ] {
                tx.execute(sql, [cutoff]).map_err(|e| self.wrap(e))?;
            }
            tx.commit().map_err(|e| self.wrap(e))?;
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
pub(super) mod tests;
