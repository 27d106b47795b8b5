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
                // The hour's sums per key go with its raw rows.
                &Self::KEYS_ROLLED_UP,
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
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::account::{account_pass, Kind, PassPlan, Traffic, UsageKey};
    use crate::attribute::Reason;
    use crate::attribute::{Attributed, Attribution, Direction, Verdict};
    use crate::model::Flow;
    use crate::store::connections::{EventWrite, LoggedConnection};
    use crate::store::{OpenOptions, PassRecord};
    use crate::testkit::{counters, flow, mirror, tuple, TCP};

    const T0: i64 = 1_790_000_000; // 2026-09-21

    /// Ten days of passes every 20 minutes: three users, a few remotes and programs,
    /// flows that grow, and one that restarts every day.
    fn build(store: &mut Store) {
        let mut id = 0;
        for step in 0..(10 * 72) {
            let ts = T0 + step * 1200;
            let mut flows = vec![];
            let mut ats = vec![];
            for uid in [1001u32, 1002, 1003] {
                for remote in 0..3u8 {
                    id += 1;
                    let dst = format!("198.51.100.{}", 10 + remote);
                    let sport = 40000 + (uid as u16 % 100) * 10 + u16::from(remote);
                    let (tx, rx) = (
                        100 * uid as u64 + step as u64,
                        1000 + u64::from(remote) * 7 + step as u64 * 3,
                    );
                    flows.push(Flow {
                        id,
                        orig_counters: Some(counters(1 + step as u64, tx)),
                        reply_counters: Some(counters(2, rx)),
                        ..flow(
                            TCP,
                            (&format!("198.51.100.1:{sport}"), &format!("{dst}:443")),
                            None,
                        )
                    });
                    ats.push(Attributed {
                        verdict: Verdict::User(Attribution {
                            cgroup: None,
                            uid,
                            program: Some(format!("prog{}", remote % 2)),
                            direction: Direction::Out,
                            via: Default::default(),
                            container: None,
                        }),
                        direction: Some(Direction::Out),
                        remote: dst.parse().unwrap(),
                        port: 443,
                    });
                }
            }
            let prev = store.load_state().unwrap();
            let plan = account_pass(ts, &flows, &ats, &prev, 3);
            let rec = PassRecord {
                started_at: ts,
                mode: "snapshot",
                ..PassRecord::default()
            };
            store.write_pass(&rec, &plan, &[]).unwrap();
        }
    }

    /// (UTC day, uid) → (rx bytes, tx bytes, rx packets, tx packets).
    type Daily = HashMap<(String, Option<u32>), (i64, i64, i64, i64)>;

    fn daily(store: &Store) -> Daily {
        let mut st = store
            .conn()
            .prepare(
                "SELECT period, uid, rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_daily",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    fn count(store: &Store, sql: &str) -> i64 {
        store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn rollups_keep_every_users_daily_totals_and_run_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("r.db"), &OpenOptions::default()).unwrap();
        build(&mut store);
        let before = daily(&store);
        let raw_before = count(&store, "SELECT count(*) FROM usage");
        assert!(raw_before > 5000);
        let end = T0 + 10 * DAY;

        // Raw older than 3 days → hourly, in steps of at most ~500 rows.
        let r = Retention {
            raw: Duration::from_secs(3 * DAY as u64),
            hourly: Duration::from_secs(6 * DAY as u64),
            ..Retention::default()
        };
        let mut steps = 0;
        loop {
            let st = store.roll_up(end, &r, 500).unwrap();
            steps += 1;
            assert_eq!(daily(&store), before, "totals moved during step {steps}");
            if !st.behind {
                break;
            }
        }
        assert!(steps > 2, "bounded: took {steps} steps");
        let hours = count(
            &store,
            "SELECT count(*) FROM usage_rollup WHERE granularity = 'hour'",
        );
        let days = count(
            &store,
            "SELECT count(*) FROM usage_rollup WHERE granularity = 'day'",
        );
        assert!(hours > 0 && days > 0, "hours {hours} days {days}");
        assert!(
            count(&store, "SELECT count(*) FROM usage") < raw_before,
            "raw rows were rolled up"
        );
        assert_eq!(
            count(
                &store,
                &format!(
                    "SELECT count(*) FROM usage WHERE ts < {}",
                    end - 3 * DAY - HOUR
                )
            ),
            0
        );
        // Idempotent: nothing left to do.
        let st = store.roll_up(end, &r, 500).unwrap();
        assert_eq!((st.raw_rows, st.hourly_rows), (0, 0));

        // Far in the future everything is daily, still with the same totals.
        let st = store
            .roll_up(end + 400 * DAY, &Retention::default(), u64::MAX)
            .unwrap();
        assert!(!st.behind);
        assert_eq!(daily(&store), before);
        assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM usage_rollup WHERE granularity = 'hour'"
            ),
            0
        );
        assert_eq!(count(&store, "SELECT count(*) FROM passes"), 0);
        // A daily retention drops what is older.
        let r = Retention {
            daily: Some(Duration::from_secs(5 * DAY as u64)),
            ..Retention::default()
        };
        let st = store.roll_up(T0 + 10 * DAY, &r, u64::MAX).unwrap();
        assert!(st.daily_dropped > 0);
    }

    /// (UTC hour, uid) → (rx bytes, tx bytes, rx packets, tx packets).
    fn hourly_totals(store: &Store) -> Daily {
        let mut st = store
            .conn()
            .prepare(
                "SELECT ts / 3600, uid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                        sum(tx_packets)
                 FROM usage_all WHERE kind <> 'excluded' GROUP BY 1, 2",
            )
            .unwrap();
        st.query_map([], |r| {
            Ok((
                (r.get::<_, i64>(0)?.to_string(), r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    #[test]
    fn hourly_tier_keeps_each_users_top_keys_and_folds_the_rest_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
        // Two hours of passes every minute: two users, 30 remotes each, remote i carrying
        // (i + 1) x 1000 bytes a minute, plus unattributed traffic to 12 remotes.
        let usage_at = |store: &mut Store, minute: i64| {
            let mut plan = PassPlan::default();
            for uid in [1001u32, 1002] {
                for i in 0..30u32 {
                    plan.usage.insert(
                        UsageKey {
                            cgroup: None,
                            kind: Kind::User,
                            uid: Some(uid),
                            program: Some("curl".into()),
                            reason: None,
                            via: None,
                            container: None,
                            protocol: 6,
                            direction: Some(Direction::Out),
                            remote: format!("198.51.100.{i}").parse().unwrap(),
                            port: 443,
                        },
                        Traffic {
                            rx_bytes: u64::from(i + 1) * 1000,
                            tx_bytes: u64::from(uid - 1000),
                            rx_packets: 2,
                            tx_packets: 1,
                        },
                    );
                }
            }
            for i in 0..12u32 {
                plan.usage.insert(
                    UsageKey {
                        cgroup: None,
                        kind: Kind::Unattributed,
                        uid: None,
                        program: None,
                        reason: Some(Reason::NoSocket),
                        via: None,
                        container: None,
                        protocol: 17,
                        direction: None,
                        remote: format!("2001:db8::{i}").parse().unwrap(),
                        port: 53,
                    },
                    Traffic {
                        rx_bytes: 10 + u64::from(i),
                        tx_bytes: 5,
                        rx_packets: 1,
                        tx_packets: 1,
                    },
                );
            }
            let rec = PassRecord {
                started_at: T0 + minute * 60,
                mode: "snapshot",
                ..PassRecord::default()
            };
            store.write_pass(&rec, &plan, &[]).unwrap();
        };
        for minute in 0..120 {
            usage_at(&mut store, minute);
        }
        // One raw row per 5-minute bucket and key, not per pass.
        let buckets = count(&store, "SELECT count(DISTINCT ts) FROM usage");
        assert_eq!(
            count(&store, "SELECT count(*) FROM usage"),
            buckets * (60 + 12)
        );
        let before = hourly_totals(&store);
        let r = Retention {
            raw: Duration::from_secs(DAY as u64),
            hourly_top: 5,
            ..Retention::default()
        };
        store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
        assert_eq!(
            hourly_totals(&store),
            before,
            "per-user hourly totals moved"
        );
        let hours = count(
            &store,
            "SELECT count(DISTINCT ts) FROM usage_rollup WHERE granularity = 'hour'",
        );
        assert!((2..=3).contains(&hours), "{hours} hours");
        // Per user (and per unattributed reason) and hour: 5 kept keys and one fold.
        let per_group: Vec<(i64, Option<u32>, i64)> = {
            let mut st = store
                .conn()
                .prepare(
                    "SELECT ts, uid, count(*) FROM usage_rollup WHERE granularity = 'hour'
                     GROUP BY ts, uid, reason",
                )
                .unwrap();
            st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(per_group.len() as i64, hours * 3);
        assert!(per_group.iter().all(|g| g.2 == 6), "{per_group:?}");
        // The kept keys are the largest: remotes 25-29 for every user and hour.
        let kept: Vec<String> = {
            let mut st = store
                .conn()
                .prepare(
                    "SELECT DISTINCT remote_addr FROM usage_rollup
                     WHERE granularity = 'hour' AND kind = 'user' ORDER BY 1",
                )
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let want: Vec<String> = ["", "198.51.100.25", "198.51.100.26", "198.51.100.27"]
            .into_iter()
            .chain(["198.51.100.28", "198.51.100.29"])
            .map(String::from)
            .collect();
        assert_eq!(kept, want);
        // The fold has no program and no port, and carries the other 25 remotes' bytes.
        let (program, port, rx): (Option<String>, i64, i64) = store
            .conn()
            .query_row(
                "SELECT program, port, sum(rx_bytes) FROM usage_rollup
                 WHERE granularity = 'hour' AND uid = 1001 AND remote_addr = ''",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((program.as_deref(), port), (Some(""), 0));
        assert_eq!(rx, 120 * (1..=25).sum::<i64>() * 1000);
        // A pass whose clock was behind lands in an hour already rolled up: the next
        // rollup adds it to that hour's rows instead of failing on their keys.
        let rolled = hourly_totals(&store);
        usage_at(&mut store, 10);
        let late = hourly_totals(&store);
        store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
        assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
        assert_eq!(hourly_totals(&store), late);
        assert_ne!(late, rolled);
        // hourly_top = 0 keeps every key.
        let dir2 = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir2.path().join("a.db"), &OpenOptions::default()).unwrap();
        for minute in 0..60 {
            usage_at(&mut store, minute);
        }
        let r = Retention { hourly_top: 0, ..r };
        store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM usage_rollup WHERE remote_addr = ''"
            ),
            0
        );
    }

    /// A logged connection of 42 ms, ending 7 ms after the one before.
    fn logged(i: u32) -> LoggedConnection {
        let orig = tuple(
            TCP,
            &format!("198.51.100.1:{}", 40000 + (i % 20000) as u16),
            "198.51.100.2:443",
        );
        LoggedConnection {
            cgroup: None,
            start_ms: 1_780_000_000_000 + i64::from(i) * 7,
            end_ms: 1_780_000_000_042 + i64::from(i) * 7,
            orig,
            reply: mirror(&orig),
            direction: Some(Direction::Out),
            uid: Some(1001),
            program: Some("curl".into()),
            orig_counters: None,
            reply_counters: None,
            zone: 0,
            via: None,
            container: None,
        }
    }

    #[test]
    fn log_is_kept_for_its_retention_and_dropped_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("log.db"), &OpenOptions::default()).unwrap();
        const N: u32 = 10_000;
        store
            .write_events(&[], |_| EventWrite {
                log: (0..N).map(logged).collect(),
                ..EventWrite::default()
            })
            .unwrap();
        // Seven days after 1_780_000_050 s: connections that ended before then go.
        let r = Retention::default();
        let now = 1_780_000_050 + r.connections.as_secs() as i64;
        let cutoff_ms = 1_780_000_050_000;
        let expected = (0..N).filter(|i| logged(*i).end_ms < cutoff_ms).count() as u64;
        assert!(expected > 1000 && expected < u64::from(N), "{expected}");
        let (mut dropped, mut steps) = (0, 0);
        loop {
            let st = store.roll_up(now, &r, 1000).unwrap();
            assert!(st.connections_dropped <= 1000);
            dropped += st.connections_dropped;
            steps += 1;
            if !st.behind {
                break;
            }
        }
        assert_eq!(dropped, expected);
        assert!(steps >= 8, "bounded: {steps} steps");
        let left = store.connection_log(0, i64::MAX).unwrap();
        assert_eq!(left.len() as u64, u64::from(N) - expected);
        assert!(left.iter().all(|c| c.end_ms >= cutoff_ms));
        assert!(left.iter().any(|c| c.end_ms < cutoff_ms + 10));
    }
}
