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
    /// Times accounting may have been off, per cause: (how many, ms where known).
    pub gaps: super::gaps::GapTotals,
    /// The units `metrics_units` asks for, by name, with their traffic since 00:00 UTC
    /// ([`Store::unit_totals`]); none by default.
    pub units: Vec<UnitTotal>,
}

/// Which systemd units have series of their own (`metrics_units`): none by default, never
/// per Slurm job (job ids are unbounded: a series per job would grow a host's series
/// without end).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum UnitSeries {
    /// None.
    #[default]
    Off,
    /// The N units that moved the most bytes today (UTC).
    Top(usize),
    /// These units, each always shown (0 when idle).
    Units(Vec<String>),
}

/// One unit's traffic since 00:00 UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitTotal {
    /// The systemd unit (`nginx.service`).
    pub unit: String,
    /// Traffic charged to users from sockets created in its cgroups.
    pub traffic: Traffic,
}

impl Store {
    /// [`Store::metrics`] with the units `units` asks for, as of `now`
    /// ([`Store::unit_totals`]).
    pub fn metrics_with(&self, units: &UnitSeries, now: i64) -> Result<MetricsData, StoreError> {
        let mut data = self.metrics()?;
        data.units = self.unit_totals(units, now)?;
        Ok(data)
    }

    /// All-time totals and health for the metrics.
    pub fn metrics(&self) -> Result<MetricsData, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut data = MetricsData::default();
        let users = self.all_time_sums(&mut data)?;
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM users WHERE uid = ?1")
            .map_err(wrap)?;
        for (uid, traffic) in users {
            let user: Option<String> = stmt
                .query_row([uid], |r| r.get(0))
                .optional()
                .map_err(wrap)?
                .flatten();
            data.users.push(UserTotal {
                uid: u32::try_from(uid).unwrap_or(u32::MAX),
                user,
                traffic,
            });
        }
        data.last_pass = self.last_pass()?;
        data.gaps = self.gap_totals()?;
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        data.database_bytes = [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        Ok(data)
    }

    /// All-time traffic per uid of the users' rows; the unattributed per reason and the
    /// excluded go into `data`.
    fn all_time_sums(&self, data: &mut MetricsData) -> Result<BTreeMap<i64, Traffic>, StoreError> {
        let wrap = |e| self.wrap(e);
        let fast = "c AS (SELECT uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
                          FROM usage_totals WHERE granularity = 86400 AND ?2 >= ?1)";
        let cte = if self.totals_cover(0)? {
            fast
        } else {
            self.source().cte
        };
        // Summed here rather than by a GROUP BY: SQLite's sort of a year's day rows costs
        // twice the scan (measured: 63 ms against 22 ms on the busy year).
        let sql = format!(
            "WITH {cte} SELECT uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
             FROM c"
        );
        let mut users: BTreeMap<i64, Traffic> = BTreeMap::new();
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut rows = stmt.query([0i64, i64::MAX]).map_err(wrap)?;
        while let Some(r) = rows.next().map_err(wrap)? {
            let uid: i64 = r.get(0).map_err(wrap)?;
            let kind: i64 = r.get(1).map_err(wrap)?;
            let t = Traffic {
                rx_bytes: r.get::<_, i64>(3).map_err(wrap)? as u64,
                tx_bytes: r.get::<_, i64>(4).map_err(wrap)? as u64,
                rx_packets: r.get::<_, i64>(5).map_err(wrap)? as u64,
                tx_packets: r.get::<_, i64>(6).map_err(wrap)? as u64,
            };
            match kind {
                0 => users.entry(uid).or_default().add(&t),
                1 => {
                    let reason = r.get_ref(2).map_err(wrap)?.as_str().unwrap_or("");
                    match data.unattributed.get_mut(reason) {
                        Some(sum) => sum.add(&t),
                        None => {
                            data.unattributed.insert(reason.to_owned(), t);
                        }
                    }
                }
                _ => data.excluded.add(&t),
            }
        }
        Ok(users)
    }

    /// The traffic of the units `series` names since 00:00 UTC of the day of `now`, by
    /// unit name: per-unit detail is kept in the raw and hourly tiers only (the daily tier
    /// keeps users), so a unit's counter starts again from zero every day. What users were
    /// charged from sockets created in the unit's cgroups (unattributed and excluded
    /// traffic has no unit).
    pub fn unit_totals(&self, series: &UnitSeries, now: i64) -> Result<Vec<UnitTotal>, StoreError> {
        if *series == UnitSeries::Off {
            return Ok(vec![]);
        }
        let per_unit = self.unit_sums(now - now.rem_euclid(86_400), now + 1)?;
        let mut units: Vec<UnitTotal> = match series {
            UnitSeries::Off => vec![],
            UnitSeries::Units(names) => names
                .iter()
                .map(|u| UnitTotal {
                    unit: u.clone(),
                    traffic: per_unit.get(u).copied().unwrap_or_default(),
                })
                .collect(),
            UnitSeries::Top(n) => {
                let mut all: Vec<UnitTotal> = per_unit
                    .into_iter()
                    .map(|(unit, traffic)| UnitTotal { unit, traffic })
                    .collect();
                // Most bytes first, ties by name (the map's order, kept by a stable sort).
                all.sort_by_key(|u| std::cmp::Reverse(u.traffic.bytes()));
                all.truncate(*n);
                all
            }
        };
        units.sort_by(|a, b| a.unit.cmp(&b.unit));
        units.dedup_by(|a, b| a.unit == b.unit);
        Ok(units)
    }

    /// The last accounting pass (not an event flush), if any.
    fn last_pass(&self) -> Result<Option<LastPass>, StoreError> {
        self.conn
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
            .map_err(|e| self.wrap(e))
    }
}
