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
        stmt.execute(params![
            bucket,
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
pub(super) mod tests;
