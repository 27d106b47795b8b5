//! Read-side queries behind `top`, `report` and `export`. Rendering lives in `report`.

use rusqlite::types::{Null, Value};
use rusqlite::{params, params_from_iter};

use super::{Store, StoreError};
use crate::account::Traffic;

/// Where the aggregating queries read usage in `[?1, ?2)`: a CTE `c` with the compact
/// columns (uid -1 for none, kind 0 user / 1 unattributed / 2 excluded, program and remote
/// as keys that `joins`, `program` and `remote` turn into text after grouping). Aggregating
/// before looking names up is what keeps `top` cheap on a busy host's millions of rows.
struct Source {
    cte: &'static str,
    /// Joins from the grouped rows `g` (columns `pid`, `rid`) to the names.
    joins: &'static str,
    program: &'static str,
    remote: &'static str,
}

/// Schema 5 on: the compact tables, names by id.
const COMPACT: Source = Source {
    cte: "c AS (
            SELECT ts, uid, kind, reason, program, remote, protocol, port,
                   rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_raw WHERE ts >= ?1 AND ts < ?2
            UNION ALL
            SELECT ts, uid, kind, reason, program, remote, protocol, port,
                   rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_tiers WHERE ts >= ?1 AND ts < ?2)",
    joins: "LEFT JOIN programs p ON p.id = g.pid LEFT JOIN remotes r ON r.id = g.rid",
    program: "p.name",
    remote: "r.addr",
};

/// Older schemas (a report does not migrate): the view, names as they are.
const VIEW: Source = Source {
    cte: "c AS (
            SELECT ts, ifnull(uid, -1) AS uid,
                   CASE kind WHEN 'user' THEN 0 WHEN 'unattributed' THEN 1 ELSE 2 END AS kind,
                   ifnull(reason, '') AS reason, program, remote_addr AS remote, protocol, port,
                   rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_all WHERE ts >= ?1 AND ts < ?2)",
    joins: "",
    program: "g.pid",
    remote: "g.rid",
};

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
    /// Per service the traffic went through (`via`: the uid of a delegating service's
    /// socket, such as root's sshd, whose user's process held it).
    Via,
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
    /// Why unattributed (for `uid: None` rows); with `--by via`, why a service's own uid
    /// was charged (`ambiguous-holders`).
    pub reason: Option<String>,
    /// The delegating uid the traffic went through (with `--by via`).
    pub via: Option<u32>,
    /// That uid's name as recorded.
    pub via_user: Option<String>,
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
    /// The delegating uid it went through, when charged to a holder of a service's socket.
    pub via: Option<u32>,
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
        let src = self.source();
        let has = |b: By| q.by.contains(&b);
        let col = |b: By, expr: &'static str| if has(b) { expr } else { "NULL" };
        let (program, remote, protocol, port) = (
            col(By::Program, "program"),
            col(By::Remote, "remote"),
            col(By::Port, "protocol"),
            col(By::Port, "port"),
        );
        // A user's row keeps in `reason` the service it came through ('via:UID') or why a
        // service's uid was charged (migration 0006).
        let via = col(By::Via, "CASE WHEN kind <> 1 THEN nullif(reason, '') END");
        let user_filter = if q.uid.is_some() { "AND uid = ?4" } else { "" };
        let (cte, joins, pname, rname) = (src.cte, src.joins, src.program, src.remote);
        let sql = format!(
            "WITH {cte}
             SELECT nullif(g.uid, -1), n.name, {pname}, {rname}, g.k3, g.k4, g.reasons,
                    g.rx, g.tx, g.rp, g.tp, g.k5, v.name
             FROM (SELECT uid, {program} AS pid, {remote} AS rid, {protocol} AS k3,
                          {port} AS k4, {via} AS k5,
                          CASE WHEN uid = -1 THEN group_concat(DISTINCT nullif(reason, ''))
                          END AS reasons,
                          sum(rx_bytes) AS rx, sum(tx_bytes) AS tx,
                          sum(rx_packets) AS rp, sum(tx_packets) AS tp
                   FROM c WHERE kind <> 2 {user_filter}
                   GROUP BY uid, pid, rid, k3, k4, k5) g
             LEFT JOIN users n ON n.uid = g.uid {joins}
             LEFT JOIN users v
                    ON g.k5 LIKE 'via:%' AND v.uid = CAST(substr(g.k5, 5) AS INTEGER)
             ORDER BY g.rx + g.tx DESC, g.uid, 3, 4, g.k3, g.k4, g.k5
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
                let k5: Option<String> = r.get(11)?;
                let via = k5
                    .as_deref()
                    .and_then(|k| k.strip_prefix("via:"))
                    .and_then(|u| u.parse().ok());
                let reason: Option<String> = r.get(6)?;
                Ok(TopRow {
                    uid: r.get(0)?,
                    user: r.get(1)?,
                    program: r.get(2)?,
                    remote: r.get(3)?,
                    protocol: r.get(4)?,
                    port: r.get(5)?,
                    reason: reason.or(k5.filter(|_| via.is_none())),
                    via,
                    via_user: r.get(12)?,
                    traffic: traffic_at(r, 7)?,
                })
            })
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        // Totals in one more pass over the period: all but excluded, unattributed, excluded.
        let sums = ["kind <> 2", "kind = 1", "kind = 2"]
            .iter()
            .flat_map(|cond| {
                ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"]
                    .map(|c| format!("coalesce(sum(CASE WHEN {cond} THEN {c} END), 0)"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH {} SELECT {sums} FROM c WHERE true {user_filter}",
            src.cte
        );
        let uid = q.uid.map(i64::from);
        let totals =
            |r: &rusqlite::Row| Ok((traffic_at(r, 0)?, traffic_at(r, 4)?, traffic_at(r, 8)?));
        let (total, unattributed, excluded) = match uid {
            // ?3 is the rows' LIMIT, unused here.
            Some(u) => self
                .conn
                .query_row(&sql, params![q.since, q.until, Null, u], totals),
            None => self.conn.query_row(&sql, params![q.since, q.until], totals),
        }
        .map_err(wrap)?;
        Ok(TopReport {
            rows,
            total,
            unattributed,
            excluded,
        })
    }

    fn source(&self) -> &'static Source {
        if self.schema >= super::COMPACT_SCHEMA {
            &COMPACT
        } else {
            &VIEW
        }
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
        let cte = self.source().cte;
        let sql = format!(
            "WITH {cte}
             SELECT {p} AS period, nullif(u.uid, -1), n.name,
                    sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
             FROM c u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.kind <> 2 {filter}
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
        // An older database read without migrating has no via_uid (nor via rows).
        let via = if self.schema >= super::VIA_SCHEMA {
            "u.via_uid"
        } else {
            "NULL"
        };
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT u.ts, u.kind, u.uid, n.name, u.program, u.reason, u.protocol,
                        u.direction, u.remote_addr, u.port,
                        u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets, {via}
                 FROM usage_all u LEFT JOIN users n ON n.uid = u.uid
                 WHERE u.ts >= ?1 AND u.ts < ?2
                 ORDER BY u.ts, u.kind, u.uid, u.program, u.remote_addr, u.port, {via}"
            ))
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
                    via: r.get(14)?,
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
