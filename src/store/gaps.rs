//! Times accounting may have been off (`accounting_gaps`, migration 0012): written when
//! netledger finds its table gone or re-created, accounting off, a notrack rule or a full
//! conntrack table ([`crate::prereq::firewall`]); summed per cause for the metrics.

use std::collections::BTreeMap;

use rusqlite::params;

use super::{Store, StoreError};
use crate::prereq::firewall::Gap;

/// The first schema with `accounting_gaps`.
const GAPS_SCHEMA: i64 = 12;

/// Per cause: how many gaps, and their summed known length in ms.
pub type GapTotals = BTreeMap<String, (u64, u64)>;

impl Store {
    /// Record `gap`; with `once`, not when a gap of the same cause and time is there
    /// already (a timer's kept finding, read by every pass until setup runs again).
    /// Returns whether it was recorded.
    pub fn record_gap(&mut self, gap: &Gap, once: bool) -> Result<bool, StoreError> {
        let n = self
            .conn
            .execute(
                "INSERT INTO accounting_gaps (detected_at, cause, off_ms, detail)
                 SELECT ?1, ?2, ?3, ?4 WHERE NOT ?5 OR NOT EXISTS
                   (SELECT 1 FROM accounting_gaps WHERE cause = ?2 AND detected_at = ?1)",
                params![gap.detected_at, gap.cause, gap.off_ms, gap.detail, once],
            )
            .map_err(|e| self.wrap(e))?;
        Ok(n == 1)
    }

    /// When the last accounting pass ended (epoch seconds), if any.
    pub fn last_pass_end(&self) -> Result<Option<i64>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn
            .query_row(
                "SELECT finished_at FROM passes WHERE mode <> 'events' ORDER BY id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.wrap(e))
    }

    /// Gaps per cause (empty on a schema without them).
    pub fn gap_totals(&self) -> Result<GapTotals, StoreError> {
        let mut out = GapTotals::new();
        if self.schema < GAPS_SCHEMA {
            return Ok(out);
        }
        let mut stmt = self
            .conn
            .prepare(
                "SELECT cause, count(*), coalesce(sum(off_ms), 0) FROM accounting_gaps
                 GROUP BY cause",
            )
            .map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })
            .map_err(|e| self.wrap(e))?;
        for row in rows {
            let (cause, n, ms) = row.map_err(|e| self.wrap(e))?;
            out.insert(cause, (n, ms));
        }
        Ok(out)
    }
}

/// Record the gaps setup found (its table deleted or re-created, accounting switched off,
/// since it last set up this namespace; kept in `/run` by `prereq`), each once, with how
/// long accounting may have been off: at most since the last pass ended. Returns the line
/// to say for each recorded now.
pub fn record_kept_gaps(
    store: &mut super::Store,
    proc_root: &std::path::Path,
) -> Result<Vec<String>, super::StoreError> {
    let kept = crate::prereq::firewall::kept_gaps(proc_root);
    let mut said = Vec::new();
    if kept.is_empty() {
        return Ok(said);
    }
    let last = store.last_pass_end()?;
    for (cause, at) in kept {
        let what = match cause.as_str() {
            "table-gone" => {
                "nftables table inet netledger was gone (deleted: a `flush ruleset` or a \
                 firewall reload?) and was put back"
            }
            "acct-off" => {
                "conntrack accounting had been switched off (net.netfilter.nf_conntrack_acct=0: \
                 flows created then carry no counters) and was switched on again"
            }
            _ => "nftables table inet netledger had been deleted and made again",
        };
        let detail = match last {
            Some(l) => format!(
                "{what}: accounting may have been off for up to {} s, between the last pass \
                 ({}) and {}",
                (at - l).max(0),
                crate::prereq::firewall::utc(l),
                crate::prereq::firewall::utc(at)
            ),
            None => format!(
                "{what} at {}: accounting may have been off before (no earlier pass in this \
                 database)",
                crate::prereq::firewall::utc(at)
            ),
        };
        let gap = Gap {
            cause,
            detected_at: at,
            off_ms: last.map(|l| (at - l).max(0) * 1000),
            detail,
        };
        if store.record_gap(&gap, true)? {
            said.push(gap.detail);
        }
    }
    Ok(said)
}
