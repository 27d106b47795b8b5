//! Quota state (`0008_quota.sql`): one-off grants per billing cycle, the alert levels the
//! `on_quota` hook has run for, and when the last pass or flush was stored (for
//! `check --max-age`).

use std::collections::HashMap;

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use super::{OpenOptions, Store, StoreError};

/// The schema that has the quota tables.
pub const QUOTA_SCHEMA: i64 = 8;

impl Store {
    /// Extra allowance per uid for the cycle that starts at `cycle_start` (grants add up).
    /// Empty on a database older than the quota tables (a report does not migrate).
    pub fn grants(&self, cycle_start: i64) -> Result<HashMap<u32, u64>, StoreError> {
        if self.schema < QUOTA_SCHEMA {
            return Ok(HashMap::new());
        }
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT uid, sum(bytes) FROM quota_grants WHERE cycle_start = ?1 GROUP BY uid",
            )
            .map_err(wrap)?;
        let rows = stmt
            .query_map([cycle_start], |r| {
                Ok((r.get::<_, u32>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })
            .map_err(wrap)?
            .collect::<Result<_, _>>()
            .map_err(wrap)?;
        Ok(rows)
    }

    /// Give `uid` `bytes` more for the cycle that starts at `cycle_start`; returns the
    /// cycle's grants of that uid in total.
    pub fn grant(
        &mut self,
        uid: u32,
        cycle_start: i64,
        bytes: u64,
        now: i64,
    ) -> Result<u64, StoreError> {
        insert_grant(&mut self.conn, &self.path, uid, cycle_start, bytes, now)
    }

    /// Record that the hook of `level` runs for `uid` in the cycle that starts at
    /// `cycle_start`. Returns `false` when it already ran (nothing is written): the caller
    /// runs the hook only on `true`, so it runs once per level and cycle.
    pub fn mark_alert(
        &mut self,
        uid: u32,
        cycle_start: i64,
        level: &str,
        now: i64,
        used: u64,
        allowance: u64,
    ) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO quota_alerts
                     (uid, cycle_start, level, fired_at, used, allowance)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    uid,
                    cycle_start,
                    level,
                    now,
                    used.min(i64::MAX as u64) as i64,
                    allowance.min(i64::MAX as u64) as i64
                ],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(n == 1)
    }

    /// The levels already alerted in the cycle that starts at `cycle_start`, per uid.
    pub fn alerts(&self, cycle_start: i64) -> Result<Vec<(u32, String)>, StoreError> {
        if self.schema < QUOTA_SCHEMA {
            return Ok(vec![]);
        }
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT uid, level FROM quota_alerts WHERE cycle_start = ?1 ORDER BY uid, level",
            )
            .map_err(wrap)?;
        let rows = stmt
            .query_map([cycle_start], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(wrap)?
            .collect::<Result<_, _>>()
            .map_err(wrap)?;
        Ok(rows)
    }

    /// When the last pass or daemon flush was stored (epoch seconds), if any.
    pub fn last_write(&self) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT finished_at FROM passes ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.wrap(e))
    }
}

fn insert_grant(
    conn: &mut Connection,
    path: &Path,
    uid: u32,
    cycle_start: i64,
    bytes: u64,
    now: i64,
) -> Result<u64, StoreError> {
    let wrap = |e| StoreError::from_sqlite(path, e);
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(wrap)?;
    tx.execute(
        "INSERT INTO quota_grants (uid, cycle_start, bytes, granted_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![uid, cycle_start, bytes.min(i64::MAX as u64) as i64, now],
    )
    .map_err(wrap)?;
    let total: i64 = tx
        .query_row(
            "SELECT sum(bytes) FROM quota_grants WHERE uid = ?1 AND cycle_start = ?2",
            params![uid, cycle_start],
            |r| r.get(0),
        )
        .map_err(wrap)?;
    tx.commit().map_err(wrap)?;
    Ok(total.max(0) as u64)
}

/// Add a grant to the database at `path` (see [`Store::grant`]) without taking the
/// writer lock: a grant is one INSERT into a table no pass writes, so it need not wait
/// for a daemon, which holds that lock for its whole life; SQLite's own lock orders it
/// with the passes' transactions (waiting up to `busy`). A database older than the quota
/// tables is opened as a writer instead, which upgrades it.
pub fn grant_at(
    path: &Path,
    uid: u32,
    cycle_start: i64,
    bytes: u64,
    now: i64,
    busy: Duration,
) -> Result<u64, StoreError> {
    let schema = Store::open(
        path,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    )?
    .schema;
    if schema < QUOTA_SCHEMA {
        let mut store = Store::open(
            path,
            &OpenOptions {
                create: false,
                busy_timeout: busy,
                ..OpenOptions::default()
            },
        )?;
        return store.grant(uid, cycle_start, bytes, now);
    }
    let wrap = |e| StoreError::from_sqlite(path, e);
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(wrap)?;
    conn.busy_timeout(busy).map_err(wrap)?;
    insert_grant(&mut conn, path, uid, cycle_start, bytes, now)
}
