//! Read-side queries behind `netledger top`.

use rusqlite::params;

use super::{Store, StoreError};
use crate::account::Traffic;

/// A grouping dimension of `top`. Rows are always split per uid as well, so every row
/// names its user (or `uid: null` for unattributed traffic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum By {
    /// Per user.
    User,
    /// Per user and program.
    Program,
    /// Per user and remote address.
    Remote,
    /// Per user, protocol and service port.
    Port,
}

/// What to list.
#[derive(Debug, Clone)]
pub struct TopQuery {
    /// Inclusive lower bound, epoch seconds.
    pub since: i64,
    /// Exclusive upper bound, epoch seconds.
    pub until: i64,
    /// Grouping.
    pub by: By,
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
    /// Protocol name, `tcp`/`udp`/`proto-N` (with `--by port`).
    pub protocol: Option<String>,
    /// Service port (with `--by port`).
    pub port: Option<u16>,
    /// Why unattributed (for `uid: None` rows).
    pub reason: Option<String>,
    /// Traffic.
    pub traffic: Traffic,
}

/// Rows plus the local traffic that was charged to nobody, so totals reconcile.
#[derive(Debug, Clone, Default)]
pub struct TopReport {
    /// Rows, biggest first.
    pub rows: Vec<TopRow>,
    /// Excluded (local-network) traffic in the same period.
    pub excluded: Traffic,
}

impl Store {
    /// The top talkers in a period.
    pub fn top(&self, q: &TopQuery) -> Result<TopReport, StoreError> {
        let (program, remote, protocol, port) = match q.by {
            By::User => ("NULL", "NULL", "NULL", "NULL"),
            By::Program => ("u.program", "NULL", "NULL", "NULL"),
            By::Remote => ("NULL", "u.remote_addr", "NULL", "NULL"),
            By::Port => (
                "NULL",
                "NULL",
                "CASE u.protocol WHEN 6 THEN 'tcp' WHEN 17 THEN 'udp' \
                 ELSE 'proto-' || u.protocol END",
                "u.port",
            ),
        };
        let sql = format!(
            "SELECT u.uid, n.name, {program} AS k1, {remote} AS k2, {protocol} AS k3,
                    {port} AS k4,
                    CASE WHEN u.uid IS NULL THEN group_concat(DISTINCT u.reason) END,
                    sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
             FROM usage u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.kind <> 'excluded' AND u.ts >= ?1 AND u.ts < ?2
             GROUP BY u.uid, k1, k2, k3, k4
             ORDER BY sum(u.rx_bytes) + sum(u.tx_bytes) DESC, u.uid, k1, k2, k3, k4
             LIMIT ?3"
        );
        let wrap = |e| self.wrap(e);
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let rows = stmt
            .query_map(params![q.since, q.until, q.limit as i64], |r| {
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
        let excluded = self
            .conn
            .query_row(
                "SELECT coalesce(sum(rx_bytes), 0), coalesce(sum(tx_bytes), 0),
                        coalesce(sum(rx_packets), 0), coalesce(sum(tx_packets), 0)
                 FROM usage WHERE kind = 'excluded' AND ts >= ?1 AND ts < ?2",
                params![q.since, q.until],
                |r| traffic_at(r, 0),
            )
            .map_err(wrap)?;
        Ok(TopReport { rows, excluded })
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
