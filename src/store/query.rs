//! Read-side queries behind `top`, `report` and `export`. Rendering lives in `report`.

use rusqlite::{params, params_from_iter, types::Value};

use super::{Store, StoreError};
use crate::account::Traffic;

/// A grouping dimension of `top`. Rows are always split per user as well (every row names
/// its uid, or `uid: null` for unattributed traffic); `user` alone is just that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// Per user.
    User,
    /// Per program.
    Program,
    /// Per remote address.
    Remote,
    /// Per protocol and service port.
    Port,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct TopQuery {
    /// Inclusive lower bound, epoch seconds.
    pub since: i64,
    /// Exclusive upper bound, epoch seconds.
    pub until: i64,
    /// Grouping dimensions besides the user.
    pub by: Vec<By>,
    /// Only this uid.
    pub uid: Option<u32>,
    /// At most this many rows.
    pub limit: usize,
}

/// One row of `top`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopRow {
    /// Owner; `None` for unattributed traffic.
    pub uid: Option<u32>,
    /// Owner's name as recorded.
    pub user: Option<String>,
    /// Program (with `--by program`).
    pub program: Option<String>,
    /// Remote address (with `--by remote`).
    pub remote: Option<String>,
    /// IP protocol number (with `--by port`).
    pub protocol: Option<u8>,
    /// Service port (with `--by port`).
    pub port: Option<u16>,
    /// Why unattributed (for `uid: None` rows).
    pub reason: Option<String>,
    /// Traffic.
    pub traffic: Traffic,
}

/// Rows plus the totals that make them reconcile.
#[derive(Debug, Clone, Default)]
pub struct TopReport {
    /// Rows, biggest first.
    pub rows: Vec<TopRow>,
    /// All charged and unattributed traffic of the period (not cut by the limit).
    pub total: Traffic,
    /// The unattributed part of `total`.
    pub unattributed: Traffic,
    /// Excluded (local-network) traffic in the same period, charged to nobody.
    pub excluded: Traffic,
}

/// Period length of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Per hour.
    Hour,
    /// Per day.
    Day,
    /// Per ISO week (Monday to Sunday), labelled by its Monday.
    Week,
    /// Per calendar month.
    Month,
}

/// One row of `report`: a period and a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodRow {
    /// Period label in the shown time zone (`2026-11-21`, `2026-11`, `2026-11-21 14:00`).
    pub period: String,
    /// Owner; `None` for unattributed traffic.
    pub uid: Option<u32>,
    /// Owner's name as recorded.
    pub user: Option<String>,
    /// Traffic.
    pub traffic: Traffic,
}

/// One stored usage row, for `export`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Epoch seconds of the pass that charged it.
    pub ts: i64,
    /// `user`, `unattributed` or `excluded`.
    pub kind: String,
    /// Owner, when known.
    pub uid: Option<u32>,
    /// Owner's name as recorded.
    pub user: Option<String>,
    /// Program, when known.
    pub program: Option<String>,
    /// Why unattributed.
    pub reason: Option<String>,
    /// IP protocol number.
    pub protocol: u8,
    /// `out`, `in`, or none (forwarded).
    pub direction: Option<String>,
    /// Far end.
    pub remote: String,
    /// Service port.
    pub port: u16,
    /// Traffic.
    pub traffic: Traffic,
}

/// The SQL expression that labels a row's period, in local time unless `utc`.
/// SQLite's `localtime` follows the process's time zone (TZ), DST included.
fn period_expr(period: Period, utc: bool) -> String {
    let t = if utc {
        "u.ts, 'unixepoch'"
    } else {
        "u.ts, 'unixepoch', 'localtime'"
    };
    match period {
        Period::Hour => format!("strftime('%Y-%m-%d %H:00', {t})"),
        Period::Day => format!("strftime('%Y-%m-%d', {t})"),
        // 'weekday 0' moves to the coming Sunday (or stays), -6 days is that week's Monday.
        Period::Week => format!("date({t}, 'weekday 0', '-6 days')"),
        Period::Month => format!("strftime('%Y-%m', {t})"),
    }
}

impl Store {
    /// The top talkers in a period.
    pub fn top(&self, q: &TopQuery) -> Result<TopReport, StoreError> {
        let has = |b: By| q.by.contains(&b);
        let col = |b: By, expr: &'static str| if has(b) { expr } else { "NULL" };
        let (program, remote, protocol, port) = (
            col(By::Program, "u.program"),
            col(By::Remote, "u.remote_addr"),
            col(By::Port, "u.protocol"),
            col(By::Port, "u.port"),
        );
        let user_filter = if q.uid.is_some() {
            "AND u.uid = ?4"
        } else {
            ""
        };
        let sql = format!(
            "SELECT u.uid, n.name, {program} AS k1, {remote} AS k2, {protocol} AS k3,
                    {port} AS k4,
                    CASE WHEN u.uid IS NULL THEN group_concat(DISTINCT u.reason) END,
                    sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
             FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.kind <> 'excluded' AND u.ts >= ?1 AND u.ts < ?2 {user_filter}
             GROUP BY u.uid, k1, k2, k3, k4
             ORDER BY sum(u.rx_bytes) + sum(u.tx_bytes) DESC, u.uid, k1, k2, k3, k4
             LIMIT ?3"
        );
        let wrap = |e| self.wrap(e);
        let mut args: Vec<Value> = vec![q.since.into(), q.until.into(), (q.limit as i64).into()];
        if let Some(uid) = q.uid {
            args.push(i64::from(uid).into());
        }
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |r| {
                Ok(TopRow {
                    uid: r.get(0)?,
                    user: r.get(1)?,
                    program: r.get(2)?,
                    remote: r.get(3)?,
                    protocol: r.get(4)?,
                    port: r.get(5)?,
                    reason: r.get(6)?,
                    traffic: traffic_at(r, 7)?,
                })
            })
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        let sum = |cond: &str| -> Result<Traffic, StoreError> {
            let sql = format!(
                "SELECT coalesce(sum(rx_bytes), 0), coalesce(sum(tx_bytes), 0),
                        coalesce(sum(rx_packets), 0), coalesce(sum(tx_packets), 0)
                 FROM usage_all u WHERE u.ts >= ?1 AND u.ts < ?2 AND {cond}"
            );
            let uid = q.uid.map(i64::from);
            let (sql, p) = if uid.is_some() {
                (
                    format!("{sql} AND u.uid = ?3"),
                    params![q.since, q.until, uid],
                )
            } else {
                (sql, params![q.since, q.until])
            };
            self.conn
                .query_row(&sql, p, |r| traffic_at(r, 0))
                .map_err(|e| self.wrap(e))
        };
        Ok(TopReport {
            rows,
            total: sum("u.kind <> 'excluded'")?,
            unattributed: sum("u.kind = 'unattributed'")?,
            excluded: sum("u.kind = 'excluded'")?,
        })
    }

    /// Traffic per period and user (vnStat-style), oldest period first.
    pub fn periods(
        &self,
        period: Period,
        since: i64,
        until: i64,
        uid: Option<u32>,
        utc: bool,
    ) -> Result<Vec<PeriodRow>, StoreError> {
        let p = period_expr(period, utc);
        let filter = if uid.is_some() { "AND u.uid = ?3" } else { "" };
        let sql = format!(
            "SELECT {p} AS period, u.uid, n.name,
                    sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
             FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.kind <> 'excluded' AND u.ts >= ?1 AND u.ts < ?2 {filter}
             GROUP BY period, u.uid
             ORDER BY period, sum(u.rx_bytes) + sum(u.tx_bytes) DESC, u.uid"
        );
        let wrap = |e| self.wrap(e);
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let map = |r: &rusqlite::Row| {
            Ok(PeriodRow {
                period: r.get(0)?,
                uid: r.get(1)?,
                user: r.get(2)?,
                traffic: traffic_at(r, 3)?,
            })
        };
        let rows = match uid {
            Some(u) => stmt.query_map(params![since, until, u], map),
            None => stmt.query_map(params![since, until], map),
        }
        .map_err(wrap)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(wrap)?;
        Ok(rows)
    }

    /// Every usage row in a period, oldest first (for export).
    pub fn usage_rows(&self, since: i64, until: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT u.ts, u.kind, u.uid, n.name, u.program, u.reason, u.protocol,
                        u.direction, u.remote_addr, u.port,
                        u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets
                 FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
                 WHERE u.ts >= ?1 AND u.ts < ?2
                 ORDER BY u.ts, u.kind, u.uid, u.program, u.remote_addr, u.port",
            )
            .map_err(wrap)?;
        let rows = stmt
            .query_map(params![since, until], |r| {
                Ok(UsageRecord {
                    ts: r.get(0)?,
                    kind: r.get(1)?,
                    uid: r.get(2)?,
                    user: r.get(3)?,
                    program: r.get(4)?,
                    reason: r.get(5)?,
                    protocol: r.get(6)?,
                    direction: r.get(7)?,
                    remote: r.get(8)?,
                    port: r.get(9)?,
                    traffic: traffic_at(r, 10)?,
                })
            })
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        Ok(rows)
    }

    /// The uid recorded for a user name (users deleted since are still known here).
    pub fn uid_of(&self, name: &str) -> Result<Option<u32>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row("SELECT uid FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.wrap(e))
    }
}

fn traffic_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Traffic> {
    Ok(Traffic {
        rx_bytes: r.get::<_, i64>(i)? as u64,
        tx_bytes: r.get::<_, i64>(i + 1)? as u64,
        rx_packets: r.get::<_, i64>(i + 2)? as u64,
        tx_packets: r.get::<_, i64>(i + 3)? as u64,
    })
}
