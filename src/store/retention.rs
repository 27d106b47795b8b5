//! Retention tiers, vnStat-style: raw per-pass usage rows are kept for `raw`, then rolled up
//! into hourly rows per user, program, remote, protocol and port, kept for `hourly`, then
//! into daily rows per user, kept for `daily` (forever by default).
//!
//! Rollup runs after passes, incrementally: one UTC hour (or day) per transaction, and at
//! most a budget of source rows per call, so a pass never holds the write lock for long and
//! a database that fell behind catches up over a few passes. Moving rows between tiers keeps
//! every user's totals per UTC day unchanged (tested); only detail is dropped.

use std::time::Duration;

use rusqlite::params;

use super::{Store, StoreError};

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// How long each tier is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Raw per-pass rows (default 7 days).
    pub raw: Duration,
    /// Hourly rollups (default 90 days).
    pub hourly: Duration,
    /// Daily rollups; `None` keeps them forever (the default).
    pub daily: Option<Duration>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw: Duration::from_secs(7 * DAY as u64),
            hourly: Duration::from_secs(90 * DAY as u64),
            daily: None,
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
    /// Pass records dropped past the hourly retention.
    pub passes_dropped: u64,
    /// Whether rows past their retention remain (the budget ran out).
    pub behind: bool,
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

        // Raw → hourly, one whole UTC hour per transaction.
        while st.raw_rows + st.hourly_rows < budget {
            let Some(oldest) = self.min_ts("SELECT min(ts) FROM usage")? else {
                break;
            };
            let hour = floor(oldest, HOUR);
            if hour + HOUR > raw_cutoff {
                break;
            }
            st.raw_rows += self.move_rows(
                "INSERT INTO usage_rollup (granularity, ts, kind, uid, program, reason, protocol,
                     remote_addr, port, rx_bytes, tx_bytes, rx_packets, tx_packets)
                 SELECT 'hour', ?1, kind, uid, program, reason, protocol, remote_addr, port,
                        sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                 FROM usage WHERE ts >= ?1 AND ts < ?2
                 GROUP BY kind, uid, program, reason, protocol, remote_addr, port",
                "DELETE FROM usage WHERE ts >= ?1 AND ts < ?2",
                hour,
                hour + HOUR,
            )?;
        }
        // Hourly → daily, one whole UTC day per transaction.
        while st.raw_rows + st.hourly_rows < budget {
            let Some(oldest) =
                self.min_ts("SELECT min(ts) FROM usage_rollup WHERE granularity = 'hour'")?
            else {
                break;
            };
            let day = floor(oldest, DAY);
            if day + DAY > hourly_cutoff {
                break;
            }
            st.hourly_rows += self.move_rows(
                "INSERT INTO usage_rollup (granularity, ts, kind, uid, program, reason, protocol,
                     remote_addr, port, rx_bytes, tx_bytes, rx_packets, tx_packets)
                 SELECT 'day', ?1, kind, uid, NULL, reason, 0, '', 0,
                        sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)
                 FROM usage_rollup WHERE granularity = 'hour' AND ts >= ?1 AND ts < ?2
                 GROUP BY kind, uid, reason",
                "DELETE FROM usage_rollup WHERE granularity = 'hour' AND ts >= ?1 AND ts < ?2",
                day,
                day + DAY,
            )?;
        }
        st.behind = st.raw_rows + st.hourly_rows >= budget;
        let wrap = |e| StoreError::from_sqlite(self.path(), e);
        if let Some(keep) = r.daily {
            st.daily_dropped = self
                .conn
                .execute(
                    "DELETE FROM usage_rollup WHERE granularity = 'day' AND ts < ?1",
                    [floor(now - keep.as_secs() as i64, DAY)],
                )
                .map_err(wrap)? as u64;
        }
        // Pass records only explain recent usage; their totals live on in the rows.
        st.passes_dropped = self
            .conn
            .execute(
                // Still-referenced passes stay (raw rows whose rollup the budget deferred).
                "DELETE FROM passes WHERE started_at < ?1
                   AND id < (SELECT coalesce(min(pass_id), 9223372036854775807) FROM usage)",
                [now - r.hourly.as_secs() as i64],
            )
            .map_err(wrap)? as u64;
        Ok(st)
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
        delete: &str,
        from: i64,
        to: i64,
    ) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        tx.execute(insert, params![from, to]).map_err(wrap)?;
        let moved = tx.execute(delete, params![from, to]).map_err(wrap)?;
        tx.commit().map_err(wrap)?;
        Ok(moved as u64)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::account::account_pass;
    use crate::attribute::{Attributed, Attribution, Direction, Verdict};
    use crate::model::{Counters, Flow, Tuple};
    use crate::store::{OpenOptions, PassRecord};

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
                    let t = |s: &str, d: &str, sp, dp| Tuple {
                        src: s.parse().unwrap(),
                        dst: d.parse().unwrap(),
                        proto: 6,
                        sport: sp,
                        dport: dp,
                    };
                    let sport = 40000 + (uid as u16 % 100) * 10 + u16::from(remote);
                    flows.push(Flow {
                        orig: t("198.51.100.1", &dst, sport, 443),
                        reply: t(&dst, "198.51.100.1", 443, sport),
                        id,
                        zone: 0,
                        mark: 0,
                        status: 0,
                        orig_counters: Some(Counters {
                            packets: 1 + step as u64,
                            bytes: 100 * uid as u64 + step as u64,
                        }),
                        reply_counters: Some(Counters {
                            packets: 2,
                            bytes: 1000 + u64::from(remote) * 7 + step as u64 * 3,
                        }),
                        start_ns: None,
                        stop_ns: None,
                    });
                    ats.push(Attributed {
                        verdict: Verdict::User(Attribution {
                            uid,
                            program: Some(format!("prog{}", remote % 2)),
                            direction: Direction::Out,
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
            daily: None,
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
}
