//! Retention tiers, vnStat-style: raw usage in 5-minute buckets is kept for `raw`, then
//! rolled up into hourly rows per user, program, remote, protocol and port, kept for
//! `hourly`, then into daily rows per user, kept for `daily` (forever by default).
//!
//! The hourly tier keeps, for each user (or unattributed reason) and hour, the
//! `hourly_top` keys with the most bytes and folds the rest into one row with program and
//! remote `''`, protocol and port 0 (shown as "(other)"), so its size is bounded by users x hours, not by
//! how many remotes a busy host talks to. The connection log is kept for `connections`.
//!
//! Rollup runs after passes, incrementally: one UTC hour (or day) per transaction, and at
//! most a budget of source rows per call, so a pass never holds the write lock for long and
//! a database that fell behind catches up over a few passes. Moving rows between tiers keeps
//! every user's totals per UTC hour and day unchanged (tested); only detail is dropped.

use std::time::Duration;

use rusqlite::params;

use super::{Store, StoreError};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw 5-minute rows (default 7 days).
    pub raw: Duration,
    /// Hourly rollups (default 90 days).
    pub hourly: Duration,
    /// Keys (program, remote, protocol, port) kept per user and hour in the hourly tier,
    /// the rest folded into one row; 0 keeps them all (default 10).
    pub hourly_top: u32,
    /// Daily rollups; `None` keeps them forever (the default).
    pub daily: Option<Duration>,
    /// The daemon's connection log (default 7 days).
    pub connections: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(7 * DAY as u64),
            hourly: Duration::from_secs(90 * DAY as u64),
            hourly_top: 10,
            daily: None,
            connections: Duration::from_secs(7 * DAY as u64),
        }
    }
}

/// What one call moved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Raw rows rolled into hourly rows.
    pub raw_rows: u64,
    /// Hourly rows rolled into daily rows.
    pub hourly_rows: u64,
    /// Daily rows dropped past the daily retention.
    pub daily_dropped: u64,
    /// Pass records dropped past the raw retention.
    pub passes_dropped: u64,
    /// Logged connections dropped past their retention.
    pub connections_dropped: u64,
    /// Days whose per-user totals were filled in from the detail (an older database).
    pub totals_days: u32,
    /// Raw rows summed per key and hour (`usage_keys`).
    pub keyed_rows: u64,
    /// Whether rows past their retention remain (the budget ran out).
    pub behind: bool,
}

/// Days of per-user totals one rollup fills in from the detail of an older database (a
/// busy day's raw rows take about a second).
const TOTALS_DAYS_PER_ROLLUP: u32 = 2;

impl std::fmt::Display for RollupStats {
    /// For the log: what moved, in words (`retention: nothing to roll up`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = [
            (self.raw_rows, "raw rows rolled into hours"),
            (self.hourly_rows, "hourly rows rolled into days"),
            (self.daily_dropped, "daily rows dropped"),
            (self.passes_dropped, "pass records dropped"),
            (self.connections_dropped, "logged connections dropped"),
            (
                u64::from(self.totals_days),
                "days of per-user totals filled in",
            ),
            (self.keyed_rows, "raw rows summed per key and hour"),
        ]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if parts.is_empty() {
            f.write_str("nothing to roll up")?;
        } else {
            f.write_str(&parts.join(", "))?;
        }
        if self.behind {
            f.write_str("; more is due, rolled up after the next passes")?;
        }
        Ok(())
    }
}

fn floor(t: i64, unit: i64) -> i64 {
    t.div_euclid(unit) * unit
}

impl Store {
    /// Roll up what is past its retention at `now` (epoch seconds), moving at most about
    /// `budget` source rows.
    pub fn roll_up(
        &mut self,
        now: i64,
        r: &Retention,
        budget: u64,
    ) -> Result<RollupStats, StoreError> {
        let mut st = RollupStats::default();
        let raw_cutoff = floor(now - r.raw.as_secs() as i64, HOUR);
        let hourly_cutoff = floor(now - r.hourly.as_secs() as i64, DAY);
        self.roll_up_raw(raw_cutoff, r.hourly_top, budget, &mut st)?;
        self.roll_up_hourly(hourly_cutoff, budget, &mut st)?;
        st.behind = st.raw_rows + st.hourly_rows >= budget;
        // Totals of a database older than them, a few days per pass.
        st.totals_days = self.backfill_totals(TOTALS_DAYS_PER_ROLLUP)?;
        st.behind |= st.totals_days == TOTALS_DAYS_PER_ROLLUP;
        // Sums per key of the raw buckets complete by now.
        let (keyed, more) = self.keys_after_pass(now)?;
        st.keyed_rows = keyed;
        st.behind |= more;
        // Running sums of the days just over (the hours of a late pass are in them).
        self.list_prefix_days(now)?;
        self.drop_expired(now, r, raw_cutoff, budget, &mut st)?;
        Ok(st)
    }

    /// Raw → hourly, one whole UTC hour per transaction, the hours before `raw_cutoff`,
    /// while `st` has moved fewer than `budget` rows.
    fn roll_up_raw(
        &mut self,
        raw_cutoff: i64,
        hourly_top: u32,
        budget: u64,
        st: &mut RollupStats,
    ) -> Result<(), StoreError> {
        let top = match hourly_top {
            0 => i64::MAX,
            n => i64::from(n),
        };
        while st.raw_rows + st.hourly_rows < budget {
            let Some(oldest) = self.min_ts("SELECT min(ts) FROM usage_raw")? else {
                break;
            };
            let hour = floor(oldest, HOUR);
            if hour + HOUR > raw_cutoff {
                break;
            }
            let (none_program, none_remote) = self.none_ids()?;
            st.raw_rows += self.move_rows(
                concat!(
                    // Rank each user's (or reason's) keys in the hour by bytes; keep the top
                    // ?3, fold the rest into one row per user. Ties break on the key, so the
                    // result does not depend on row order. Rows already in the hour (a pass
                    // whose clock was behind) are added to.
                    "INSERT INTO usage_tiers (granularity, ts, uid, kind, reason, via_uid,
                     container, container_uid, program, cgroup, remote, protocol, port,
                     rx_bytes, tx_bytes, rx_packets, tx_packets)
                 WITH h AS (
                     SELECT uid, kind, reason, via_uid, container, container_uid, program,
                            cgroup, remote, protocol, port,
                            sum(rx_bytes) AS rx, sum(tx_bytes) AS tx,
                            sum(rx_packets) AS rp, sum(tx_packets) AS tp
                     FROM usage_raw WHERE ts >= ?1 AND ts < ?2
                     GROUP BY uid, kind, reason, via_uid, container, container_uid, program,
                              cgroup, remote, protocol, port),
                 r AS (
                     SELECT *, row_number() OVER (
                         PARTITION BY uid, kind, reason, via_uid, container, container_uid
                         ORDER BY rx + tx DESC, remote, port, protocol, program, cgroup) AS n
                     FROM h)
                 SELECT 3600, ?1, uid, kind, reason, via_uid, container, container_uid,
                        program, cgroup, remote, protocol, port,
                        rx, tx, rp, tp
                 FROM r WHERE n <= ?3
                 UNION ALL
                 SELECT 3600, ?1, uid, kind, reason, via_uid, container, container_uid,
                        ?4, 0, ?5, 0, 0,
                        sum(rx), sum(tx), sum(rp), sum(tp)
                 FROM r WHERE n > ?3
                 GROUP BY uid, kind, reason, via_uid, container, container_uid
                 ON CONFLICT",
                    add_counters!()
                ),
                &[&hour, &(hour + HOUR), &top, &none_program, &none_remote],
                "DELETE FROM usage_raw WHERE ts >= ?1 AND ts < ?2",
                hour,
                hour + HOUR,
                // The hour's sums per key go with its raw rows, and its buckets' totals
                // (migrations/0018_usage_bucket_totals.sql).
                &[
                    Self::KEYS_ROLLED_UP[0],
                    Self::KEYS_ROLLED_UP[1],
                    "DELETE FROM usage_bucket_totals WHERE ts >= ?1 AND ts < ?2",
                ],
            )?;
        }
        Ok(())
    }

    /// Hourly → daily, one whole UTC day per transaction, the days before
    /// `hourly_cutoff`, while `st` has moved fewer than `budget` rows.
    fn roll_up_hourly(
        &mut self,
        hourly_cutoff: i64,
        budget: u64,
        st: &mut RollupStats,
    ) -> Result<(), StoreError> {
        while st.raw_rows + st.hourly_rows < budget {
            let Some(oldest) =
                self.min_ts("SELECT min(ts) FROM usage_tiers WHERE granularity = 3600")?
            else {
                break;
            };
            let day = floor(oldest, DAY);
            if day + DAY > hourly_cutoff {
                break;
            }
            let (none_program, none_remote) = self.none_ids()?;
            st.hourly_rows += self.move_rows(
                concat!(
                    "INSERT INTO usage_tiers (granularity, ts, uid, kind, reason, via_uid,
                     container, container_uid, program, cgroup, remote, protocol, port,
                     rx_bytes, tx_bytes, rx_packets, tx_packets)
                 SELECT 86400, ?1, uid, kind, reason, via_uid, container, container_uid,
                        ?3, 0, ?4, 0, 0,
                        sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                 FROM usage_tiers WHERE granularity = 3600 AND ts >= ?1 AND ts < ?2
                 GROUP BY uid, kind, reason, via_uid, container, container_uid
                 ON CONFLICT",
                    add_counters!()
                ),
                &[&day, &(day + DAY), &none_program, &none_remote],
                "DELETE FROM usage_tiers WHERE granularity = 3600 AND ts >= ?1 AND ts < ?2",
                day,
                day + DAY,
                // The day's rows now all date from its start: so do its hour totals
                // (store::totals keeps them equal to the rows by row time).
                &[
                    concat!(
                        "INSERT INTO usage_totals (granularity, ts, uid, kind, reason, via_uid,
                             container, container_uid, rx_bytes, tx_bytes, rx_packets,
                             tx_packets)
                         SELECT 3600, ?1, uid, kind, reason, via_uid, container,
                                container_uid, sum(rx_bytes), sum(tx_bytes),
                                sum(rx_packets), sum(tx_packets)
                         FROM usage_totals WHERE granularity = 3600 AND ts > ?1 AND ts < ?2
                         GROUP BY uid, kind, reason, via_uid, container, container_uid
                         ON CONFLICT",
                        add_counters!()
                    ),
                    "DELETE FROM usage_totals WHERE granularity = 3600 AND ts > ?1 AND ts < ?2",
                    // The day's sums per key of its hourly rows go with them
                    // (migrations/0014_usage_tier_days.sql).
                    "DELETE FROM usage_tier_days WHERE ts >= ?1 AND ts < ?2",
                    // Its running sums too: its hours are gone (listing first,
                    // migrations/0019_usage_day_prefixes.sql).
                    "DELETE FROM usage_prefix_days WHERE day >= ?1 AND day < ?2",
                    "DELETE FROM usage_day_prefixes WHERE ts >= ?1 AND ts < ?2",
                ],
            )?;
        }
        Ok(())
    }

    /// Drop what is past its retention at `now`: daily rows (and their totals), pass
    /// records, and the connection log (what is left of `budget`).
    fn drop_expired(
        &mut self,
        now: i64,
        r: &Retention,
        raw_cutoff: i64,
        budget: u64,
        st: &mut RollupStats,
    ) -> Result<(), StoreError> {
        let wrap = |e| StoreError::from_sqlite(self.path(), e);
        if let Some(keep) = r.daily {
            let cutoff = floor(now - keep.as_secs() as i64, DAY);
            st.daily_dropped = self
                .conn
                .execute(
                    "DELETE FROM usage_tiers WHERE granularity = 86400 AND ts < ?1",
                    [cutoff],
                )
                .map_err(wrap)? as u64;
            self.drop_totals_before(cutoff)?;
        }
        // Pass records explain recent usage; their totals live on in the rows. Those of
        // raw rows the budget has not rolled up yet stay.
        st.passes_dropped = self
            .conn
            .execute(
                "DELETE FROM passes WHERE started_at < min(?1,
                     coalesce((SELECT min(ts) FROM usage_raw), ?1))",
                [raw_cutoff],
            )
            .map_err(wrap)? as u64;
        // The connection log sorts by end time: a key range, deleted a budget at a time.
        let cutoff = super::connections::time_prefix((now - r.connections.as_secs() as i64) * 1000);
        let limit = budget
            .saturating_sub(st.raw_rows + st.hourly_rows)
            .min(i64::MAX as u64);
        st.connections_dropped = self
            .conn
            .execute(
                "DELETE FROM connection_log WHERE rec IN
                     (SELECT rec FROM connection_log WHERE rec < ?1 LIMIT ?2)",
                params![cutoff, limit as i64],
            )
            .map_err(wrap)? as u64;
        st.behind |= st.connections_dropped >= limit;
        Ok(())
    }

    /// The ids of the name '' in `programs` and `remotes`: rolled-up rows that no longer
    /// know their program or remote.
    fn none_ids(&mut self) -> Result<(i64, i64), StoreError> {
        let (mut p, mut r) = (super::Interned::PROGRAMS, super::Interned::REMOTES);
        let ids = p
            .id(&self.conn, "")
            .and_then(|p| Ok((p, r.id(&self.conn, "")?)));
        ids.map_err(|e| self.wrap(e))
    }

    fn min_ts(&self, sql: &str) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(sql, [], |r| r.get(0))
            .map_err(|e| self.wrap(e))
    }

    /// Insert the rolled-up rows and delete their sources in one transaction; returns the
    /// number of source rows.
    fn move_rows(
        &mut self,
        insert: &str,
        insert_params: &[&dyn rusqlite::ToSql],
        delete: &str,
        from: i64,
        to: i64,
        then: &[&str],
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        tx.execute(insert, insert_params).map_err(wrap)?;
        let moved = tx.execute(delete, params![from, to]).map_err(wrap)?;
        for sql in then {
            tx.execute(sql, params![from, to]).map_err(wrap)?;
        }
        tx.commit().map_err(wrap)?;
        Ok(moved as u64)
    }
}

#[cfg(test)]
mod tests;
