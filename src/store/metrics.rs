//! What the Prometheus metrics read: all-time counters per user, per unattributed reason
//! and for excluded traffic, and the health of the last pass. Plain data; the encoding is
//! `report::metrics`.
//!
//! The counters sum the day rows of the per-user totals (see [`super::totals`]): a few rows
//! per user and day, cheap on a year of detail, and they never go down (rollups keep every
//! row's day; the daily tier keeps totals for as long as it keeps days). While an older
//! database's totals are still being filled in from its detail, or when the schema has no
//! totals yet, the detail is summed instead (slower, same numbers).

use std::collections::BTreeMap;

use rusqlite::OptionalExtension;

use super::{Store, StoreError};
use crate::account::Traffic;

/// One user's all-time traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTotal {
    /// The owner.
    pub uid: u32,
    /// Their name as recorded (`None` when never resolved).
    pub user: Option<String>,
    /// Traffic.
    pub traffic: Traffic,
}

/// The last accounting pass (a `snapshot` or a daemon pass, not an event flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastPass {
    /// Epoch seconds when it ended.
    pub finished_at: i64,
    /// Seconds it took (whole seconds, as recorded; `None` when the record makes no sense,
    /// ending before it began).
    pub duration_secs: Option<i64>,
    /// Flows it saw.
    pub flows: u64,
    /// Sockets it read.
    pub sockets: u64,
}

/// Everything the metrics show.
#[derive(Debug, Clone, Default)]
pub struct MetricsData {
    /// Per user, by uid.
    pub users: Vec<UserTotal>,
    /// Unattributed traffic per reason.
    pub unattributed: BTreeMap<String, Traffic>,
    /// Excluded (local-network) traffic.
    pub excluded: Traffic,
    /// The last pass, if any.
    pub last_pass: Option<LastPass>,
    /// Size of the database file and its write-ahead log, bytes.
    pub database_bytes: u64,
}

impl Store {
    /// All-time totals and health for the metrics.
    pub fn metrics(&self) -> Result<MetricsData, StoreError> {
        let wrap = |e| self.wrap(e);
        let fast = "c AS (SELECT uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
                          FROM usage_totals WHERE granularity = 86400 AND ?2 >= ?1)";
        let cte = if self.totals_cover(0)? {
            fast
        } else {
            self.source().cte
        };
        let sql = format!(
            "WITH {cte}
             SELECT g.uid, g.kind, g.reason, n.name, g.rx, g.tx, g.rp, g.tp
             FROM (SELECT uid, kind, reason, sum(rx_bytes) AS rx, sum(tx_bytes) AS tx,
                          sum(rx_packets) AS rp, sum(tx_packets) AS tp
                   FROM c GROUP BY uid, kind, reason) g
             LEFT JOIN users n ON n.uid = g.uid AND g.kind = 0
             ORDER BY g.kind, g.uid, g.reason"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut rows = stmt.query([0i64, i64::MAX]).map_err(wrap)?;
        let mut data = MetricsData::default();
        while let Some(r) = rows.next().map_err(wrap)? {
            let (uid, kind, reason): (i64, i64, String) = (
                r.get(0).map_err(wrap)?,
                r.get(1).map_err(wrap)?,
                r.get(2).map_err(wrap)?,
            );
            let name: Option<String> = r.get(3).map_err(wrap)?;
            let t = Traffic {
                rx_bytes: r.get::<_, i64>(4).map_err(wrap)? as u64,
                tx_bytes: r.get::<_, i64>(5).map_err(wrap)? as u64,
                rx_packets: r.get::<_, i64>(6).map_err(wrap)? as u64,
                tx_packets: r.get::<_, i64>(7).map_err(wrap)? as u64,
            };
            match kind {
                0 => match data.users.last_mut() {
                    // One row per reason: a user's rows have none, but add them up anyway.
                    Some(u) if i64::from(u.uid) == uid => u.traffic.add(&t),
                    _ => data.users.push(UserTotal {
                        uid: u32::try_from(uid).unwrap_or(u32::MAX),
                        user: name,
                        traffic: t,
                    }),
                },
                1 => data.unattributed.entry(reason).or_default().add(&t),
                _ => data.excluded.add(&t),
            }
        }
        data.last_pass = self
            .conn
            .query_row(
                "SELECT finished_at, finished_at - started_at, flows, sockets FROM passes
                 WHERE mode <> 'events' ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(LastPass {
                        finished_at: r.get(0)?,
                        duration_secs: Some(r.get::<_, i64>(1)?).filter(|d| *d >= 0),
                        flows: r.get::<_, i64>(2)? as u64,
                        sockets: r.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
            .map_err(wrap)?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        data.database_bytes = [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(data)
    }
}
