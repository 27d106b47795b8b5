//! Read-side queries behind `top`, `report` and `export`. Rendering lives in `report`.

use rusqlite::{params, OptionalExtension};

use super::{Store, StoreError, CGROUP_SCHEMA};
use crate::account::Traffic;
use crate::model::FastMap;

/// Where the aggregating queries read usage: a CTE `c` with the compact columns (uid -1 for
/// none, kind 0 user / 1 unattributed / 2 excluded, program and remote as keys that
/// `joins`, `program` and `remote` turn into text after grouping). Aggregating before
/// looking names up is what keeps `top` cheap on a busy host's millions of rows.
///
/// The period `[?1, ?2)` is read as every stored row that overlaps it, whole: a row holds
/// a bucket of time (5 minutes raw, an hour or a day rolled up; see [`Store::covered`]),
/// and a row that began before `?1` but runs past it holds traffic of the period too. Rows
/// are aligned to their width (UTC), so the one row of each width that can straddle `?1`
/// starts at `?1` rounded down to it: a key lookup, not a wider scan.
pub(super) struct Source {
    /// Rows of the period: the CTE `c`.
    pub(super) cte: &'static str,
    /// Joins from the grouped rows `g` (columns `pid`, `rid`) to the names.
    joins: &'static str,
    program: &'static str,
    remote: &'static str,
    /// `(width, SQL)`: for each width of row, a query of the start of the row of that
    /// width that straddles `?1` (begins before it, ends after it), if one is stored.
    straddling: &'static [(i64, &'static str)],
    /// `SELECT` of the export rows in the period (names resolved, `direction`).
    export: &'static str,
    /// The time of the first stored row in `[?1, ?2)`, if any (key lookups).
    next: &'static str,
}

/// The columns of the CTE `c` read from the compact tables, with `$cgroup` as the cgroup
/// (the column from schema 16, else `0 AS cgroup`). A literal, for `concat!`.
macro_rules! compact_cte {
    ($cgroup:literal) => {
        concat!(
            "c AS (
            SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, ",
            $cgroup,
            ", remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_raw WHERE ts > ?1 - 300 AND ts < ?2
            UNION ALL
            SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, ",
            $cgroup,
            ", remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_tiers WHERE ts >= ?1 AND ts < ?2
            UNION ALL
            SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, ",
            $cgroup,
            ", remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_tiers WHERE ts = ?1 - ?1 % 3600 AND ts < ?1 AND granularity = 3600
            UNION ALL
            SELECT ts, uid, kind, reason, via_uid, container, container_uid, program, ",
            $cgroup,
            ", remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_tiers WHERE ts = ?1 - ?1 % 86400 AND ts < ?1 AND granularity = 86400)"
        )
    };
}

/// The columns of a usage table's row a report reads, in the CTE `c`'s order, for a
/// database at `schema` (15 or later): cgroup 0 (none) before migration 0016.
pub(super) fn usage_columns(schema: i64) -> &'static str {
    match schema >= super::CGROUP_SCHEMA {
        true => {
            "ts, uid, kind, reason, via_uid, container, container_uid, program, cgroup, remote,
             protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets"
        }
        false => {
            "ts, uid, kind, reason, via_uid, container, container_uid, program, 0 AS cgroup,
             remote, protocol, port, rx_bytes, tx_bytes, rx_packets, tx_packets"
        }
    }
}

/// The cgroup schema on: the compact tables, names by id. Raw buckets are 5 minutes
/// ([`super::BUCKET_SECS`]); tiers are hours (3600) and days (86400).
const COMPACT: Source = Source {
    cte: compact_cte!("cgroup"),
    joins: "LEFT JOIN programs p ON p.id = g.pid LEFT JOIN remotes r ON r.id = g.rid",
    program: "p.name",
    remote: "r.addr",
    straddling: &[
        (
            300,
            "SELECT ts FROM usage_raw WHERE ts = ?1 - ?1 % 300 AND ts < ?1 LIMIT 1",
        ),
        (
            3600,
            "SELECT ts FROM usage_tiers
             WHERE ts = ?1 - ?1 % 3600 AND ts < ?1 AND granularity = 3600 LIMIT 1",
        ),
        (
            86400,
            "SELECT ts FROM usage_tiers
             WHERE ts = ?1 - ?1 % 86400 AND ts < ?1 AND granularity = 86400 LIMIT 1",
        ),
    ],
    export: "SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via} AS via,
                    {container} AS container, {container_uid} AS container_uid, {cgroup}
             FROM usage WHERE ts > ?1 - 300 AND ts < ?2
             UNION ALL
             SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via},
                    {container}, {container_uid}, {cgroup}
             FROM usage_rollup WHERE ts >= ?1 AND ts < ?2
             UNION ALL
             SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via},
                    {container}, {container_uid}, {cgroup}
             FROM usage_rollup
             WHERE ts = ?1 - ?1 % 3600 AND ts < ?1 AND granularity = 'hour'
             UNION ALL
             SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via},
                    {container}, {container_uid}, {cgroup}
             FROM usage_rollup
             WHERE ts = ?1 - ?1 % 86400 AND ts < ?1 AND granularity = 'day'",
    next: "SELECT min(t) FROM (SELECT min(ts) AS t FROM usage_raw WHERE ts >= ?1 AND ts < ?2
                               UNION ALL
                               SELECT min(ts) FROM usage_tiers WHERE ts >= ?1 AND ts < ?2)",
};

/// Schema 15, typed before the cgroups (a report does not migrate): cgroup 0 (none).
const TYPED: Source = Source {
    cte: compact_cte!("0 AS cgroup"),
    ..COMPACT
};

/// Schemas 5 to the typed one (a report does not migrate): the compact tables as they
/// were, whose `reason` still packs the service ('via:UID', schema 7) and the container
/// ('ns:ID:UID', schema 10). Split here into the columns the typed schema keeps them in:
/// the one reader of that form left besides migration 0015, which converts it.
const PACKED: Source = Source {
    cte: "c AS (
            SELECT ts, uid, kind,
                   CASE WHEN reason LIKE 'via:%' OR reason LIKE 'ns:%' THEN '' ELSE reason
                   END AS reason,
                   CASE WHEN reason LIKE 'via:%' THEN CAST(substr(reason, 5) AS INTEGER)
                        ELSE -1 END AS via_uid,
                   CASE WHEN reason LIKE 'ns:%' THEN CAST(substr(reason, 4) AS INTEGER)
                        ELSE 0 END AS container,
                   CASE WHEN reason LIKE 'ns:%'
                        THEN CAST(substr(reason, 4 + instr(substr(reason, 4), ':')) AS INTEGER)
                        ELSE -1 END AS container_uid,
                   program, 0 AS cgroup, remote, protocol, port, rx_bytes, tx_bytes,
                   rx_packets, tx_packets
            FROM (SELECT ts, uid, kind, reason, program, remote, protocol, port,
                         rx_bytes, tx_bytes, rx_packets, tx_packets
                  FROM usage_raw WHERE ts > ?1 - 300 AND ts < ?2
                  UNION ALL
                  SELECT ts, uid, kind, reason, program, remote, protocol, port,
                         rx_bytes, tx_bytes, rx_packets, tx_packets
                  FROM usage_tiers WHERE ts >= ?1 AND ts < ?2
                  UNION ALL
                  SELECT ts, uid, kind, reason, program, remote, protocol, port,
                         rx_bytes, tx_bytes, rx_packets, tx_packets
                  FROM usage_tiers
                  WHERE ts = ?1 - ?1 % 3600 AND ts < ?1 AND granularity = 3600
                  UNION ALL
                  SELECT ts, uid, kind, reason, program, remote, protocol, port,
                         rx_bytes, tx_bytes, rx_packets, tx_packets
                  FROM usage_tiers
                  WHERE ts = ?1 - ?1 % 86400 AND ts < ?1 AND granularity = 86400))",
    ..COMPACT
};

/// Schemas before 5 (a report does not migrate): the views, names as they are. Schema 4
/// dated raw rows by their pass (an instant: nothing straddles), tiers as schema 5 does.
const VIEW: Source = Source {
    cte: "c AS (
            SELECT ts, ifnull(uid, -1) AS uid,
                   CASE kind WHEN 'user' THEN 0 WHEN 'unattributed' THEN 1 ELSE 2 END AS kind,
                   ifnull(reason, '') AS reason, -1 AS via_uid, 0 AS container,
                   -1 AS container_uid, program, 0 AS cgroup, remote_addr AS remote, protocol,
                   port,
                   rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_all WHERE ts >= ?1 AND ts < ?2
            UNION ALL
            SELECT ts, ifnull(uid, -1) AS uid,
                   CASE kind WHEN 'user' THEN 0 WHEN 'unattributed' THEN 1 ELSE 2 END AS kind,
                   ifnull(reason, '') AS reason, -1 AS via_uid, 0 AS container,
                   -1 AS container_uid, program, 0 AS cgroup, remote_addr AS remote, protocol,
                   port,
                   rx_bytes, tx_bytes, rx_packets, tx_packets
            FROM usage_rollup
            WHERE (ts = ?1 - ?1 % 3600 AND granularity = 'hour'
                   OR ts = ?1 - ?1 % 86400 AND granularity = 'day') AND ts < ?1)",
    joins: "",
    program: "g.pid",
    remote: "g.rid",
    straddling: &[
        (
            3600,
            "SELECT ts FROM usage_rollup
             WHERE ts = ?1 - ?1 % 3600 AND ts < ?1 AND granularity = 'hour' LIMIT 1",
        ),
        (
            86400,
            "SELECT ts FROM usage_rollup
             WHERE ts = ?1 - ?1 % 86400 AND ts < ?1 AND granularity = 'day' LIMIT 1",
        ),
    ],
    export: "SELECT ts, kind, uid, program, reason, protocol, direction, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via} AS via,
                    {container} AS container, {container_uid} AS container_uid, {cgroup}
             FROM usage_all WHERE ts >= ?1 AND ts < ?2
             UNION ALL
             SELECT ts, kind, uid, program, reason, protocol, NULL, remote_addr, port,
                    rx_bytes, tx_bytes, rx_packets, tx_packets, {via},
                    {container}, {container_uid}, {cgroup}
             FROM usage_rollup
             WHERE (ts = ?1 - ?1 % 3600 AND granularity = 'hour'
                    OR ts = ?1 - ?1 % 86400 AND granularity = 'day') AND ts < ?1",
    next: "SELECT min(t) FROM (SELECT min(ts) AS t FROM usage WHERE ts >= ?1 AND ts < ?2
                               UNION ALL
                               SELECT min(ts) FROM usage_rollup WHERE ts >= ?1 AND ts < ?2)",
};

/// The span a report's numbers cover: the period asked for, widened to the whole stored
/// rows it overlaps (a row cannot be cut: a 5-minute bucket, an hour or a day of traffic
/// is one sum). Epoch seconds, `[since, until)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Covered {
    /// Start of the first row counted, or the start asked for.
    pub since: i64,
    /// End of the last row counted (not later than now: no traffic is stored beyond
    /// that), or the end asked for.
    pub until: i64,
    /// The start asked for.
    pub asked_since: i64,
    /// The end asked for.
    pub asked_until: i64,
    /// Width of the row that moved `since` back (300, 3600, 86400 s), if one did.
    pub since_step: Option<i64>,
    /// Width of the row that moved `until` on, if one did.
    pub until_step: Option<i64>,
    /// `since` moved on to where the keys a `top` groups by begin (see
    /// [`TopReport::keys_from`]).
    pub keys_from: Option<i64>,
}

/// A grouping dimension of `top`. Rows are always split per user as well (every row names
/// its uid, or `uid: null` for unattributed traffic); `user` alone is just that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
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
    /// Per container (another network namespace of this host) whose socket the traffic
    /// was found through; the host's own traffic is one row per user with none.
    Container,
    /// Per cgroup (v2) of the process that created the socket, by its path; none for
    /// traffic no socket's cgroup is known of.
    Cgroup,
    /// Per systemd unit of that cgroup (`crate::cgroup::unit`).
    Unit,
    /// Per Slurm job of that cgroup (`crate::cgroup::job`, under a root-owned
    /// `…slurmstepd.scope` only).
    Job,
}

impl By {
    /// Whether the daily tier, which keeps usage per user only, lacks this key: grouped by
    /// one, a window that begins in it is answered from where the keys begin.
    pub(super) fn is_key(self) -> bool {
        matches!(
            self,
            By::Program | By::Remote | By::Port | By::Cgroup | By::Unit | By::Job
        )
    }

    /// Whether this groups by something read from the cgroup.
    pub(super) fn is_cgroup(self) -> bool {
        matches!(self, By::Cgroup | By::Unit | By::Job)
    }
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
    /// The container's name (with `--by container`; `None` for the host's traffic).
    pub container: Option<String>,
    /// The cgroup's path (with `--by cgroup`; `None` where no cgroup is known).
    pub cgroup: Option<String>,
    /// The systemd unit (with `--by unit`; `None` where none applies).
    pub unit: Option<String>,
    /// The Slurm job (with `--by job`; `None` where none applies).
    pub job: Option<u64>,
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
    /// Grouped by program, remote or port over a window that begins in the daily tier
    /// (which keeps none of them): where the part of the window answered (rows and
    /// totals) begins.
    pub keys_from: Option<i64>,
}

/// Period length of `report`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
    /// The container whose socket it was found through (`None`: the host's own).
    pub container: Option<String>,
    /// The socket's uid inside that container.
    pub container_uid: Option<u32>,
    /// The cgroup path of the socket's creator, when known.
    pub cgroup: Option<String>,
    /// Its systemd unit.
    pub unit: Option<String>,
    /// Its Slurm job.
    pub job: Option<u64>,
    /// Traffic.
    pub traffic: Traffic,
}

/// The columns a compound read of the totals ([`Store::totals_union`]) selects.
#[derive(Clone, Copy)]
enum Columns {
    /// Those of [`usage_columns`], the keys the totals do not keep `NULL`.
    All,
    /// [`CHARGED_COLUMNS`]: who was charged when, and how much (`report`).
    Charged,
}

impl Columns {
    /// The columns as read from the totals.
    fn totals(self) -> &'static str {
        match self {
            Columns::All => {
                "ts, uid, kind, reason, via_uid, container, container_uid, NULL, NULL,
                 NULL, NULL, NULL, rx_bytes, tx_bytes, rx_packets, tx_packets"
            }
            Columns::Charged => CHARGED_COLUMNS,
        }
    }

    /// The columns as read from the detail at `schema`, the table read for the raw tier,
    /// and what follows the `WHERE` of that table and of `usage_tiers`: who was charged
    /// is summed per row time and user in SQLite, in each key's order (no sort), from the
    /// raw buckets' totals where the schema has them (an hour of the raw tier is about
    /// 47,000 rows of every key, 1,200 totals, 1,200 sums).
    fn detail(self, schema: i64) -> (&'static str, &'static str, [&'static str; 2]) {
        match self {
            Columns::All => (usage_columns(schema), "usage_raw", ["", ""]),
            Columns::Charged => (
                "ts, uid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets), sum(tx_packets)",
                match schema >= super::totals::BUCKET_TOTALS_SCHEMA {
                    true => "usage_bucket_totals",
                    false => "usage_raw",
                },
                [" GROUP BY ts, uid", " GROUP BY ts, granularity, uid"],
            ),
        }
    }
}

/// A part of a window read from the totals (see [`Store::totals_pieces`]).
enum Piece {
    /// A `SELECT` of the rows of a key range, in time order.
    Rows(String),
    /// A day whose instants fall in two periods of a report, split at a whole hour.
    Shared(SharedDay),
}

/// A UTC day that two periods of a report share, split at `boundary` (a local midnight,
/// or the whole hour after it): read as its total and one side, the other side being the
/// total less it (every row is in its day's total, its hour's and its raw bucket's,
/// `store::totals`). A side's whole hours come from the hour totals, or as one running
/// sum (`usage_day_prefixes`, a day that is over) when they start the day; the part of an
/// hour up to or from a boundary inside it from the detail (the raw buckets' totals, and
/// any rows of the tiers). The side read is the one before the boundary where the day has
/// running sums (2 to 8 rows per user), else the smaller (2 to 19), instead of 24 or more.
struct SharedDay {
    day: i64,
    boundary: i64,
}

/// Where a part of a [`SharedDay`]'s side is read from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SideFrom {
    /// The hour totals (whole hours).
    Hours,
    /// The detail (part of an hour).
    Detail,
}

/// `[a, b)` as the whole hours in it and the parts of hours at its ends, each once,
/// in time order; none empty.
fn side_parts(a: i64, b: i64) -> Vec<(SideFrom, i64, i64)> {
    let (h1, h2) = (ceil(a, HOUR), floor(b, HOUR));
    let parts = match h1 < h2 {
        true => vec![
            (SideFrom::Detail, a, h1),
            (SideFrom::Hours, h1, h2),
            (SideFrom::Detail, h2, b),
        ],
        false => vec![(SideFrom::Detail, a, b)],
    };
    parts.into_iter().filter(|(_, x, y)| x < y).collect()
}

impl SharedDay {
    /// Whether the smaller side comes first (the boundary at 12:00 UTC or before).
    fn smaller_first(&self) -> bool {
        self.boundary - self.day <= DAY / 2
    }

    /// The side before the boundary, and the side from it.
    fn sides(&self) -> [(i64, i64); 2] {
        [(self.day, self.boundary), (self.boundary, self.day + DAY)]
    }
}

/// The columns of a row `report` sums: its time, uid and traffic (every source has them
/// under these names).
const CHARGED_COLUMNS: &str = "ts, uid, rx_bytes, tx_bytes, rx_packets, tx_packets";

/// The label of the period holding the instant `col` (an SQL expression). A month is a
/// billing cycle starting on `cycle_day` (1 to 28): with 15, `2026-11-15 to 2026-12-14`.
fn period_of(col: &str, period: Period, utc: bool, cycle_day: u8) -> String {
    let t = if utc {
        format!("{col}, 'unixepoch'")
    } else {
        format!("{col}, 'unixepoch', 'localtime'")
    };
    match period {
        Period::Hour => format!("strftime('%Y-%m-%d %H:00', {t})"),
        Period::Day => format!("strftime('%Y-%m-%d', {t})"),
        // 'weekday 0' moves to the coming Sunday (or stays), -6 days is that week's Monday.
        Period::Week => format!("date({t}, 'weekday 0', '-6 days')"),
        Period::Month if cycle_day > 1 => {
            // Moved back cycle_day - 1 days, every instant of a cycle is in the month it
            // starts in (every month has at least 28 days).
            let d = cycle_day - 1;
            let start = format!("date({t}, '-{d} days', 'start of month', '+{d} days')");
            format!("({start} || ' to ' || date({start}, '+1 month', '-1 day'))")
        }
        Period::Month => format!("strftime('%Y-%m', {t})"),
    }
}

impl Store {
    /// Start `report --period month`'s periods on this day of the month (1 to 28).
    pub fn set_cycle_day(&mut self, day: u8) {
        self.cycle_day = day.clamp(1, 28);
    }

    /// The top talkers in a period.
    pub fn top(&self, q: &TopQuery) -> Result<TopReport, StoreError> {
        self.top_in(q, None)
    }

    /// [`Store::top`] of the traffic of the cgroups `only` alone (ids of the table
    /// `cgroups`, from [`Store::cgroups_of`]); all traffic with `None`.
    pub fn top_in(&self, q: &TopQuery, only: Option<&[i64]>) -> Result<TopReport, StoreError> {
        // The daily tier keeps no program, remote, port or cgroup: grouped by any (or only
        // some cgroups' traffic), the answer is the part of the window after it.
        let keyed = only.is_some() || q.by.iter().any(|b| b.is_key());
        let keys_from = match keyed {
            true => self.keys_from(q.since, q.until)?,
            false => None,
        };
        let q = &TopQuery {
            since: keys_from.unwrap_or(q.since),
            ..q.clone()
        };
        let mut report = self.top_of(q, only)?;
        report.keys_from = keys_from;
        Ok(report)
    }

    /// [`Store::top_in`] over the window as asked.
    fn top_of(&self, q: &TopQuery, only: Option<&[i64]>) -> Result<TopReport, StoreError> {
        // The per-user totals keep no cgroup.
        let by_user_only = only.is_none() && q.by.iter().all(|b| *b == By::User);
        if by_user_only {
            if let Some(cte) = self.totals_cte(q.since, q.until, None)? {
                return self.top_by_user(&cte, q);
            }
        }
        // Grouped by who was charged only (the user, the service, the container): the
        // per-user totals have it all, in far fewer rows than the detail.
        let charged_only = only.is_none()
            && q.by
                .iter()
                .all(|b| matches!(b, By::User | By::Via | By::Container));
        let fast = match charged_only {
            true => self.totals_cte(q.since, q.until, None)?,
            false => None,
        };
        // Else whole hours and days of the raw tier from their sums per key.
        let keys = match fast {
            Some(_) => None,
            None => self.keys_cte(q.since, q.until)?,
        };
        let cte = fast
            .as_deref()
            .or(keys.as_deref())
            .unwrap_or(self.source().cte);
        let cols = TopColumns::of(&q.by, self.schema);
        let (mut groups, mut report) = self.top_groups(cte, &cols, q, only)?;
        if q.by.iter().any(|b| matches!(b, By::Unit | By::Job)) {
            groups = self.by_unit_or_job(groups, &q.by)?;
        }
        report.rows = self.top_rows(groups, &cols, q.limit)?;
        Ok(report)
    }

    /// `top`'s groups summed per cgroup id (the key's [`CGROUP`] cell) summed again per
    /// its unit and job as `by` asks (the [`UNIT`] and [`JOB`] cells), the id kept only
    /// with `--by cgroup`: the scan reads ids, the few distinct ones are named here.
    fn by_unit_or_job(
        &self,
        groups: FastMap<GroupKey, Group>,
        by: &[By],
    ) -> Result<FastMap<GroupKey, Group>, StoreError> {
        let ids: std::collections::BTreeSet<i64> = groups
            .keys()
            .filter_map(|(_, cells)| match cells[CGROUP] {
                Cell::Int(id) => Some(id),
                _ => None,
            })
            .collect();
        let names = self.cgroup_names(&ids.into_iter().collect::<Vec<_>>())?;
        let mut out: FastMap<GroupKey, Group> = FastMap::default();
        for ((uid, mut cells), g) in groups {
            let name = match cells[CGROUP] {
                Cell::Int(id) => names.get(&id),
                _ => None,
            };
            if by.contains(&By::Unit) {
                cells[UNIT] = name
                    .and_then(|n| n.unit.clone())
                    .map_or(Cell::Null, Cell::Text);
            }
            if by.contains(&By::Job) {
                cells[JOB] = name
                    .and_then(|n| n.job)
                    .map_or(Cell::Null, |j| Cell::Int(j as i64));
            }
            if !by.contains(&By::Cgroup) {
                cells[CGROUP] = Cell::Null;
            }
            let sum = out.entry((uid, cells)).or_default();
            sum.traffic.add(&g.traffic);
            sum.reasons.extend(g.reasons);
        }
        Ok(out)
    }

    /// The traffic per systemd unit of `[since, until)` (from where the keys begin, as
    /// `top --by unit`): the groups of `top --by unit` summed over their users, by unit
    /// name, without naming or ordering rows (the metrics' per-unit series).
    pub(super) fn unit_sums(
        &self,
        since: i64,
        until: i64,
    ) -> Result<std::collections::BTreeMap<String, Traffic>, StoreError> {
        let since = self.keys_from(since, until)?.unwrap_or(since);
        let q = TopQuery {
            since,
            until,
            by: vec![By::Unit],
            uid: None,
            limit: 0,
        };
        let keys = self.keys_cte(since, until)?;
        let cte = keys.as_deref().unwrap_or(self.source().cte);
        let cols = TopColumns::of(&q.by, self.schema);
        let (groups, _) = self.top_groups(cte, &cols, &q, None)?;
        let mut units = std::collections::BTreeMap::new();
        for ((_, cells), g) in self.by_unit_or_job(groups, &q.by)? {
            if let Cell::Text(unit) = &cells[UNIT] {
                units
                    .entry(unit.clone())
                    .or_insert_with(Traffic::default)
                    .add(&g.traffic);
            }
        }
        Ok(units)
    }

    /// The period's rows summed per group of `top` (user and the keys asked for) in one
    /// scan, with the report's totals: SQLite's GROUP BY sorts every row first (on the
    /// busy year's 92 days by remote, 560,000 rows: most of the time of `top`).
    fn top_groups(
        &self,
        cte: &str,
        cols: &TopColumns,
        q: &TopQuery,
        only: Option<&[i64]>,
    ) -> Result<(FastMap<GroupKey, Group>, TopReport), StoreError> {
        let wrap = |e| self.wrap(e);
        let user_filter = if q.uid.is_some() { "AND uid = ?3" } else { "" };
        let cgroup_filter = only.map(cgroup_filter).unwrap_or_default();
        let TopColumns {
            program,
            remote,
            protocol,
            port,
            via,
            container,
            why,
            cgroup,
            ..
        } = cols;
        let sql = format!(
            "WITH {cte}
             SELECT uid, kind, reason, {program}, {remote}, {protocol}, {port}, {via},
                    {container}, {why}, {cgroup}, rx_bytes, tx_bytes, rx_packets, tx_packets
             FROM c WHERE true {user_filter} {cgroup_filter}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut rows = match q.uid {
            Some(u) => stmt.query(params![q.since, q.until, u]),
            None => stmt.query(params![q.since, q.until]),
        }
        .map_err(wrap)?;
        let mut report = TopReport::default();
        let mut groups: FastMap<GroupKey, Group> = FastMap::default();
        while let Some(r) = rows.next().map_err(wrap)? {
            let (uid, kind): (i64, i64) = (r.get(0).map_err(wrap)?, r.get(1).map_err(wrap)?);
            let t = traffic_at(r, 11).map_err(wrap)?;
            if kind == 2 {
                report.excluded.add(&t);
                continue;
            }
            report.total.add(&t);
            if kind == 1 {
                report.unattributed.add(&t);
            }
            let mut key: GroupKey = (uid, Default::default());
            for (i, cell) in key.1[..=CGROUP].iter_mut().enumerate() {
                *cell = Cell::at(r, 3 + i).map_err(wrap)?;
            }
            let group = groups.entry(key).or_default();
            group.traffic.add(&t);
            if uid == -1 {
                match r.get_ref(2).map_err(wrap)?.as_str() {
                    Ok("") | Err(_) => {}
                    Ok(reason) if group.reasons.contains(reason) => {}
                    Ok(reason) => {
                        group.reasons.insert(reason.to_owned());
                    }
                }
            }
        }
        Ok((groups, report))
    }

    /// `top`'s rows from its groups: the `limit` first in the order of the SQL below (most
    /// bytes, then the uid, then the names and keys). The groups that can be among them
    /// (those ahead of or tied with the `limit`-th on bytes and uid) go to SQLite, which
    /// looks their names up and orders them.
    fn top_rows(
        &self,
        groups: FastMap<GroupKey, Group>,
        cols: &TopColumns,
        limit: usize,
    ) -> Result<Vec<TopRow>, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut groups: Vec<(GroupKey, Group)> = groups.into_iter().collect();
        let rank = |(k, g): &(GroupKey, Group)| (std::cmp::Reverse(g.traffic.bytes()), k.0);
        groups.sort_unstable_by_key(rank);
        let candidates = match limit.checked_sub(1).and_then(|i| groups.get(i)) {
            Some(last) => {
                let cut = rank(last);
                groups.iter().take_while(|g| rank(g) <= cut).count()
            }
            None => groups.len().min(limit),
        };
        let json: Vec<serde_json::Value> = groups[..candidates]
            .iter()
            .map(|((uid, cells), g)| {
                let mut row = vec![(*uid).into()];
                row.extend(cells.iter().map(Cell::json));
                let reasons = g.reasons.iter().map(String::as_str).collect::<Vec<_>>();
                row.push(match reasons.is_empty() {
                    true => serde_json::Value::Null,
                    false => reasons.join(",").into(),
                });
                let t = &g.traffic;
                row.extend(
                    [t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets]
                        .map(|n| serde_json::Value::from(n as i64)),
                );
                serde_json::Value::Array(row)
            })
            .collect();
        let src = self.source();
        let (joins, pname, rname) = (src.joins, src.program, src.remote);
        let (container_join, cname) = (cols.container_join, cols.cname);
        let (cgroup_join, gname) = (cols.cgroup_join, cols.gname);
        let sql = format!(
            "WITH g AS (
                 SELECT value ->> 0 AS uid, value ->> 1 AS pid, value ->> 2 AS rid,
                        value ->> 3 AS k3, value ->> 4 AS k4, value ->> 5 AS k5,
                        value ->> 6 AS k6, value ->> 7 AS k7, value ->> 8 AS k8,
                        value ->> 9 AS k9, value ->> 10 AS k10, value ->> 11 AS reasons,
                        value ->> 12 AS rx, value ->> 13 AS tx, value ->> 14 AS rp,
                        value ->> 15 AS tp
                 FROM json_each(?1))
             SELECT nullif(g.uid, -1), n.name, {pname}, {rname}, g.k3, g.k4, g.reasons,
                    g.rx, g.tx, g.rp, g.tp, g.k5, v.name, {cname}, g.k7, {gname}, g.k9,
                    g.k10
             FROM g LEFT JOIN users n ON n.uid = g.uid {joins} {container_join}
             {cgroup_join} LEFT JOIN users v ON v.uid = g.k5
             ORDER BY g.rx + g.tx DESC, g.uid, 3, 4, g.k3, g.k4, g.k5, g.k7, 14, 16, 17, 18
             LIMIT ?2"
        );
        let groups = serde_json::Value::Array(json).to_string();
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let rows = stmt
            .query_map(params![groups, limit as i64], top_row_at)
            .map_err(wrap)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(wrap)?;
        Ok(rows)
    }

    /// [`Store::top`] per user from the totals' CTE `cte`: the few rows of a period (a day
    /// total per user and day, the hours and buckets at its edges) are summed here in one
    /// scan, rows and totals together, instead of SQLite sorting them for a GROUP BY and
    /// scanning them again for the totals (on a busy host's year: 73,000 rows, about half
    /// the time of `top`). Same rows, order and totals as the SQL path (tested).
    fn top_by_user(&self, cte: &str, q: &TopQuery) -> Result<TopReport, StoreError> {
        use std::collections::{BTreeSet, HashMap};
        let wrap = |e| self.wrap(e);
        let user_filter = if q.uid.is_some() { "AND uid = ?3" } else { "" };
        let sql = format!(
            "WITH {cte} SELECT uid, kind, reason, rx_bytes, tx_bytes, rx_packets, tx_packets
             FROM c WHERE true {user_filter}"
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut rows = match q.uid {
            Some(u) => stmt.query(params![q.since, q.until, u]),
            None => stmt.query(params![q.since, q.until]),
        }
        .map_err(wrap)?;
        let mut report = TopReport::default();
        // uid (-1 none) → traffic, and the reasons of the unattributed.
        let mut per_uid: HashMap<i64, Traffic> = HashMap::new();
        let mut reasons: BTreeSet<String> = BTreeSet::new();
        while let Some(r) = rows.next().map_err(wrap)? {
            let (uid, kind, reason): (i64, i64, String) = (
                r.get(0).map_err(wrap)?,
                r.get(1).map_err(wrap)?,
                r.get(2).map_err(wrap)?,
            );
            let t = traffic_at(r, 3).map_err(wrap)?;
            match kind {
                2 => report.excluded.add(&t),
                _ => {
                    report.total.add(&t);
                    if kind == 1 {
                        report.unattributed.add(&t);
                    }
                    per_uid.entry(uid).or_default().add(&t);
                    if uid == -1 && !reason.is_empty() {
                        reasons.insert(reason);
                    }
                }
            }
        }
        let names = self.user_names()?;
        let mut users: Vec<(i64, Traffic)> = per_uid.into_iter().collect();
        // As the SQL path orders: most bytes first, then the uid (none, -1, first).
        users.sort_by(|(ua, a), (ub, b)| b.bytes().cmp(&a.bytes()).then(ua.cmp(ub)));
        users.truncate(q.limit);
        let reasons = (!reasons.is_empty()).then(|| reasons.into_iter().collect::<Vec<_>>());
        report.rows = users
            .into_iter()
            .map(|(uid, traffic)| TopRow {
                uid: u32::try_from(uid).ok(),
                user: names.get(&uid).cloned().flatten(),
                program: None,
                remote: None,
                protocol: None,
                port: None,
                reason: (uid == -1)
                    .then(|| reasons.as_ref().map(|r| r.join(",")))
                    .flatten(),
                via: None,
                via_user: None,
                container: None,
                cgroup: None,
                unit: None,
                job: None,
                traffic,
            })
            .collect();
        Ok(report)
    }

    /// The span that reports of `[since, until)` cover (see [`Covered`]); `now` caps the
    /// end of a row still being filled.
    pub fn covered(&self, since: i64, until: i64, now: i64) -> Result<Covered, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut c = Covered {
            since,
            until,
            asked_since: since,
            asked_until: until,
            since_step: None,
            until_step: None,
            keys_from: None,
        };
        // The widest straddling row reaches furthest.
        for (width, sql) in self.source().straddling {
            let mut stmt = self.conn.prepare_cached(sql).map_err(wrap)?;
            let at_since: Option<i64> = stmt
                .query_row([since], |r| r.get(0))
                .optional()
                .map_err(wrap)?;
            if let Some(ts) = at_since.filter(|ts| *ts < c.since) {
                c.since = ts;
                c.since_step = Some(*width);
            }
            let at_until: Option<i64> = stmt
                .query_row([until], |r| r.get(0))
                .optional()
                .map_err(wrap)?;
            if let Some(end) = at_until.map(|ts| (ts + width).min(now)) {
                if end > c.until {
                    c.until = end;
                    c.until_step = Some(*width);
                }
            }
        }
        Ok(c)
    }

    /// The CTE `c` of a report of `[since, until)` read from the per-user totals (see
    /// [`super::totals`]) — whole days from the day totals, whole hours from the hour
    /// totals, the edges from the detail — or `None` when the totals do not cover the
    /// period yet. It holds the same traffic per row time as the detail path, so a report
    /// is the same either way. With `labels`, a day total is used only for days whose every
    /// instant falls in one period (`report`); other days come from their hours.
    fn totals_cte(
        &self,
        since: i64,
        until: i64,
        labels: Option<(Period, bool)>,
    ) -> Result<Option<String>, StoreError> {
        let union = self.totals_union(since, until, labels, Columns::All, "")?;
        Ok(union.map(|u| format!("c AS ({u})")))
    }

    /// The rows of [`Store::totals_cte`] as a compound `SELECT` (the [`Columns`] asked
    /// for) of the [`Store::totals_pieces`].
    fn totals_union(
        &self,
        since: i64,
        until: i64,
        labels: Option<(Period, bool)>,
        columns: Columns,
        filter: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(pieces) = self.totals_pieces(since, until, labels, columns, filter)? else {
            return Ok(None);
        };
        let totals = columns.totals();
        let hours = format!("SELECT {totals} FROM usage_totals WHERE granularity = 3600 {filter}");
        let detail =
            |a: i64, b: i64| self.detail_select(columns, filter, &a.to_string(), &b.to_string());
        // `?2 >= ?1` names the period's parameters, which the callers bind.
        let mut union = format!("SELECT {totals} FROM usage_totals WHERE 0 AND ?2 >= ?1 {filter}");
        for (_, piece) in pieces {
            let selects = match piece {
                Piece::Rows(sql) => vec![sql],
                // Its hours and parts of hours (`top` reads the rows unlabelled).
                Piece::Shared(day) => day
                    .sides()
                    .into_iter()
                    .flat_map(|(a, b)| side_parts(a, b))
                    .map(|(from, a, b)| match from {
                        SideFrom::Hours => format!("{hours} AND ts >= {a} AND ts < {b}"),
                        SideFrom::Detail => detail(a, b),
                    })
                    .collect(),
            };
            for sql in selects {
                union.push_str(" UNION ALL ");
                union.push_str(&sql);
            }
        }
        Ok(Some(union))
    }

    /// The rows of [`Store::totals_cte`] as `SELECT`s of the [`Columns`] asked for, each
    /// with the start of its time range — whole days from the day totals, whole hours from
    /// the hour totals, the edges from the detail (its two tables in one compound `SELECT`)
    /// — each a key range of its table in `ts` order with `filter` (`AND …`) added to its
    /// `WHERE`; the ranges do not overlap. `None` when the totals do not cover the period.
    fn totals_pieces(
        &self,
        since: i64,
        until: i64,
        labels: Option<(Period, bool)>,
        columns: Columns,
        filter: &str,
    ) -> Result<Option<Vec<(i64, Piece)>>, StoreError> {
        // The detail path reads every stored row the period overlaps: the same rows as
        // those whose time is in [covered since, until).
        let start = self.covered(since, until, i64::MAX)?.since;
        // An unmigrated database older than the typed columns is read from the detail.
        if self.schema < super::TYPED_SCHEMA || !self.totals_cover(start)? {
            return Ok(None);
        }
        let split_days = match labels {
            Some((period, utc)) => self.split_days(start, until, period, utc)?,
            None => Default::default(),
        };
        // Days two periods share at one whole hour: their total and their hours on one side.
        let shared = match labels {
            // (Every day of an hourly report is split, at every hour: none is shared.)
            Some((period, false)) if period != Period::Hour => {
                self.shared_days(&split_days, period)?
            }
            _ => Default::default(),
        };
        let mut split = Split::new(start, until, |d| {
            split_days.contains(&d) && !shared.contains_key(&d)
        });
        if let Some((period, utc)) = labels {
            for hour in self.straddled_hours(&split.hours, period, utc)? {
                split.hour_from_detail(hour);
            }
        }
        let totals = columns.totals();
        let at = |select: &str, a, b| format!("{select} AND ts >= {a} AND ts < {b}");
        let range = |select: String, ranges: &[(i64, i64)]| -> Vec<(i64, Piece)> {
            let piece = |a, b| Piece::Rows(at(&select, a, b));
            ranges.iter().map(|&(a, b)| (a, piece(a, b))).collect()
        };
        let hours = format!("SELECT {totals} FROM usage_totals WHERE granularity = 3600 {filter}");
        let mut pieces: Vec<(i64, Piece)> = vec![];
        for (day, boundary) in shared {
            if boundary > day && split.day_apart(day) {
                pieces.push((day, Piece::Shared(SharedDay { day, boundary })));
            }
        }
        pieces.extend(range(
            format!(
                "SELECT {totals} FROM usage_totals
                 WHERE granularity = 86400 AND ?2 >= ?1 {filter}"
            ),
            &split.days,
        ));
        pieces.extend(range(hours.clone(), &split.hours));
        for &(a, b) in &split.detail {
            let detail = self.detail_select(columns, filter, &a.to_string(), &b.to_string());
            pieces.push((a, Piece::Rows(detail)));
        }
        Ok(Some(pieces))
    }

    /// The compound `SELECT` of the [`Columns`] asked for of the detail dated from `a`
    /// to `b` (SQL: numbers or parameters) — the raw tier's, from its buckets' totals
    /// where the schema has them, and the tiers' — with `filter` (`AND …`) added to each
    /// `WHERE`: two key ranges.
    fn detail_select(&self, columns: Columns, filter: &str, a: &str, b: &str) -> String {
        let (detail, raw, [raw_group, tiers_group]) = columns.detail(self.schema);
        let at = format!("{filter} AND ts >= {a} AND ts < {b}");
        format!(
            "SELECT {detail} FROM {raw} WHERE true {at}{raw_group}
             UNION ALL
             SELECT {detail} FROM usage_tiers WHERE true {at}{tiers_group}"
        )
    }

    /// The days of `split_days` that two periods of a report in local time share at one
    /// instant (a local midnight, or the whole hour after a midnight inside an hour of the
    /// hourly tier), with that instant: found
    /// from chrono's local time, confirmed by SQLite's labels (the detail path's) on both
    /// sides of it and at the day's ends. A day whose rows are all
    /// dated in its first hour, which has one label (a day of the daily tier), is there
    /// with its start: its total carries its rows' label.
    fn shared_days(
        &self,
        split_days: &std::collections::HashSet<i64>,
        period: Period,
    ) -> Result<std::collections::BTreeMap<i64, i64>, StoreError> {
        use chrono::{Local, Offset, TimeZone};
        let wrap = |e| self.wrap(e);
        let sql = format!("SELECT {}", period_of("?1", period, false, self.cycle_day));
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut label = |t: i64| -> Result<String, StoreError> {
            stmt.query_row([t], |r| r.get(0)).map_err(wrap)
        };
        let offset = |t: i64| match Local.timestamp_opt(t, 0) {
            chrono::LocalResult::Single(d) => Some(i64::from(d.offset().fix().local_minus_utc())),
            _ => None,
        };
        let buckets = self.schema >= super::totals::BUCKET_TOTALS_SCHEMA;
        let mut shared = std::collections::BTreeMap::new();
        let mut raw_rows = self
            .conn
            .prepare_cached("SELECT 1 FROM usage_raw WHERE ts >= ?1 AND ts < ?2")
            .map_err(wrap)?;
        let mut inner_hours = self
            .conn
            .prepare_cached(
                "SELECT 1 FROM usage_totals WHERE granularity = 3600 AND ts > ?1 AND ts < ?2",
            )
            .map_err(wrap)?;
        for &d in split_days {
            // A day of the daily tier (its rows all dated in its first hour): its total,
            // when that hour has one label.
            if !inner_hours.exists([d, d + DAY]).map_err(wrap)? {
                if label(d)? == label(d + HOUR - 1)? {
                    shared.insert(d, d);
                }
                continue;
            }
            // The first local midnight after the day's start, at either end's offset; off
            // a whole hour (a zone of half or quarter hours), the next whole hour, where the
            // hour before holds no raw rows (its rows all dated at its start, as its total),
            // else the midnight itself where the raw buckets have totals.
            let boundaries = [offset(d), offset(d + DAY - 1)]
                .into_iter()
                .flatten()
                .map(|off| d - (d + off).rem_euclid(DAY) + DAY)
                .filter(|b| d < *b && *b < d + DAY);
            let (first, last) = (label(d)?, label(d + DAY - 1)?);
            for midnight in boundaries {
                let whole = ceil(midnight, HOUR);
                let inside = whole != midnight
                    && (whole >= d + DAY
                        || raw_rows.exists([whole - HOUR, whole]).map_err(wrap)?);
                let b = match inside {
                    false => whole,
                    true if buckets => midnight,
                    true => continue,
                };
                // Every row before `b` has the first label, every row from it the last.
                let before = if b == midnight { b - 1 } else { b - HOUR };
                if first != last && label(before)? == first && label(b)? == last {
                    shared.insert(d, b);
                    break;
                }
            }
        }
        Ok(shared)
    }

    /// The hours of `hours` (ranges of whole hours to be read from the hour totals) that
    /// hold raw rows and whose instants fall in two periods of a report: at an offset of
    /// a half or a quarter hour (India's, Nepal's, Lord Howe's in winter) a 5-minute
    /// bucket of such an hour may be in the next period, which the hour's total cannot
    /// tell; they are read from the detail (the raw buckets' totals where the schema has
    /// them). (An hour of the hourly tier is one row per key, labelled by its start as its
    /// total is; raw rows are only in the last days.)
    fn straddled_hours(
        &self,
        hours: &[(i64, i64)],
        period: Period,
        utc: bool,
    ) -> Result<Vec<i64>, StoreError> {
        let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
            return Ok(vec![]);
        };
        if utc {
            return Ok(vec![]);
        }
        let wrap = |e| self.wrap(e);
        let (a, b): (Option<i64>, Option<i64>) = self
            .conn
            .prepare_cached(
                // Each a key lookup (both in one SELECT would scan the range).
                "SELECT (SELECT min(ts) FROM usage_raw WHERE ts >= ?1 AND ts < ?2),
                        (SELECT max(ts) FROM usage_raw WHERE ts >= ?1 AND ts < ?2)",
            )
            .and_then(|mut st| st.query_row([first.0, last.1], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(wrap)?;
        let (Some(a), Some(b)) = (a, b) else {
            return Ok(vec![]);
        };
        let sql = format!(
            "WITH RECURSIVE h(t) AS (
                 SELECT ?1 - ?1 % 3600 UNION ALL SELECT t + 3600 FROM h WHERE t + 3600 <= ?2)
             SELECT t FROM h WHERE {} <> {}",
            period_of("t", period, utc, self.cycle_day),
            period_of("t + 3599", period, utc, self.cycle_day)
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let straddled: Vec<i64> = stmt
            .query_map([a, b], |r| r.get(0))
            .map_err(wrap)?
            .collect::<Result<_, _>>()
            .map_err(wrap)?;
        let in_hours = |h: &i64| hours.iter().any(|(x, y)| *x <= *h && *h < *y);
        Ok(straddled.into_iter().filter(in_hours).collect())
    }

    /// The UTC days from `start`'s to `until` whose instants fall in two periods of a
    /// report (read from their hours).
    fn split_days(
        &self,
        start: i64,
        until: i64,
        period: Period,
        utc: bool,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        let sql = format!(
            "WITH RECURSIVE d(t) AS (
                 SELECT ?1 - ?1 % 86400 UNION ALL SELECT t + 86400 FROM d WHERE t < ?2)
             SELECT t FROM d WHERE {} <> {}",
            period_of("t", period, utc, self.cycle_day),
            period_of("t + 86399", period, utc, self.cycle_day)
        );
        let wrap = |e| self.wrap(e);
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let days = stmt
            .query_map([start, until], |r| r.get(0))
            .map_err(wrap)?
            .collect::<Result<_, _>>()
            .map_err(wrap)?;
        Ok(days)
    }

    pub(super) fn source(&self) -> &'static Source {
        match self.schema {
            s if s >= super::CGROUP_SCHEMA => &COMPACT,
            s if s >= super::TYPED_SCHEMA => &TYPED,
            s if s >= super::COMPACT_SCHEMA => &PACKED,
            _ => &VIEW,
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
        let mut rows = vec![];
        self.periods_each(period, since, until, uid, utc, |r| {
            rows.push(r);
            Ok::<_, StoreError>(())
        })?;
        Ok(rows)
    }

    /// [`Store::periods`] handed to `f` one at a time as they are read, in memory that
    /// does not grow with the window: the rows come oldest first (each range of totals is
    /// a key range in time order, which SQLite merges; the detail it sorts), and a
    /// period's sums per user are handed on when the next period begins (a period's label
    /// never goes back in time, not even across a change of clocks).
    pub fn periods_each<E: From<StoreError>>(
        &self,
        period: Period,
        since: i64,
        until: i64,
        uid: Option<u32>,
        utc: bool,
        mut f: impl FnMut(PeriodRow) -> Result<(), E>,
    ) -> Result<(), E> {
        // Excluded traffic is charged to nobody.
        let filter = match uid {
            Some(_) => "AND kind <> 2 AND uid = ?3",
            None => "AND kind <> 2",
        };
        // A day's total is read only where every instant of the day has one label, an
        // hour's where every row it sums does (see `straddled_hours`).
        let labels = Some((period, utc));
        let fast = self.totals_pieces(since, until, labels, Columns::Charged, filter)?;
        // The columns of CHARGED_COLUMNS, in its order, from either source, oldest first:
        // the pieces of the totals one after the other in time order, each sorted on its
        // own (a key range: no sort), rather than merged by SQLite for one ORDER BY (which
        // cost more than reading them).
        let pieces: Vec<Piece> = match fast {
            Some(mut pieces) => {
                pieces.sort_by_key(|(start, _)| *start);
                pieces.into_iter().map(|(_, p)| p).collect()
            }
            None => vec![Piece::Rows(format!(
                "WITH {} SELECT {CHARGED_COLUMNS} FROM c WHERE true {filter}",
                self.source().cte
            ))],
        };
        let wrap = |e| self.wrap(e);
        // The label of a row's time, as SQLite's date functions give it (local time
        // included): asked once per distinct row time.
        let label_sql = format!("SELECT {}", period_of("?1", period, utc, self.cycle_day));
        let totals = |g| {
            format!(
                "SELECT {CHARGED_COLUMNS} FROM usage_totals
                 WHERE granularity = {g} {filter} AND ts >= ?4 AND ts < ?5"
            )
        };
        let mut read = PeriodRead {
            label: self.conn.prepare(&label_sql).map_err(wrap)?,
            open: OpenPeriod {
                names: self.user_names()?,
                ..OpenPeriod::default()
            },
            params: [since, until, uid.map_or(0, i64::from)],
            hours: totals(HOUR),
            days: totals(DAY),
            detail: self.detail_select(Columns::Charged, filter, "?4", "?5"),
            prefixes: format!(
                "SELECT {CHARGED_COLUMNS} FROM usage_day_prefixes WHERE ts = ?4 {filter}"
            ),
            prefix_days: self.prefix_days(since, until)?,
        };
        for piece in &pieces {
            match piece {
                Piece::Rows(sql) => self.read_rows(&mut read, sql, &mut f)?,
                Piece::Shared(day) => self.read_shared_day(&mut read, day, &mut f)?,
            }
        }
        read.open.flush(&mut f)
    }

    /// The rows of a piece's `sql` added to the periods, in time order.
    fn read_rows<E: From<StoreError>>(
        &self,
        read: &mut PeriodRead,
        sql: &str,
        f: &mut impl FnMut(PeriodRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare(&format!("{sql} ORDER BY 1"))
            .map_err(wrap)?;
        let named = &read.params[..stmt.parameter_count()];
        let mut rows = stmt
            .query(rusqlite::params_from_iter(named))
            .map_err(wrap)?;
        while let Some(r) = rows.next().map_err(wrap)? {
            let ts = int_at(r, 0).map_err(wrap)?;
            read.open.at(ts, &mut read.label, &wrap, f)?;
            let (uid, t) = charged_at(r).map_err(wrap)?;
            read.open.sums.entry(uid).or_default().add(&t);
        }
        Ok(())
    }

    /// A [`SharedDay`] added to the periods: each side's sums per user as if read at its
    /// start, one side read and the other its total less it.
    fn read_shared_day<E: From<StoreError>>(
        &self,
        read: &mut PeriodRead,
        day: &SharedDay,
        f: &mut impl FnMut(PeriodRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let [since, until, uid] = read.params;
        // With running sums, the whole hours from the day's start are one row per key.
        let running = read.prefix_days.contains(&day.day);
        let side = |(a, b)| -> Result<FastMap<i64, Traffic>, StoreError> {
            let mut sums = FastMap::default();
            for (from, x, y) in side_parts(a, b) {
                let (sql, p) = match from {
                    SideFrom::Hours if running && x == day.day => (&read.prefixes, (y - HOUR, 0)),
                    SideFrom::Hours => (&read.hours, (x, y)),
                    SideFrom::Detail => (&read.detail, (x, y)),
                };
                for (u, t) in self.sums_per_uid(sql, &[since, until, uid, p.0, p.1])? {
                    sums.entry(u).or_insert_with(Traffic::default).add(&t);
                }
            }
            Ok(sums)
        };
        // The side read: the one before the boundary where the day has running sums, else
        // the smaller.
        let first = running || day.smaller_first();
        let [before, after] = day.sides();
        let (known, other) = if first {
            (before, after)
        } else {
            (after, before)
        };
        let total = self.sums_per_uid(&read.days, &[since, until, uid, day.day, day.day + DAY])?;
        let read_side = side(known)?;
        let rest = match less(&total, &read_side) {
            Some(rest) => rest,
            None => side(other)?,
        };
        let sides = match first {
            true => [(day.day, read_side), (day.boundary, rest)],
            false => [(day.day, rest), (day.boundary, read_side)],
        };
        let wrap = |e| self.wrap(e);
        for (ts, sums) in sides {
            read.open.at(ts, &mut read.label, &wrap, f)?;
            for (uid, t) in sums {
                read.open.sums.entry(uid).or_default().add(&t);
            }
        }
        Ok(())
    }

    /// The days of `[since, until)`, and the one before, with running sums
    /// (`usage_day_prefixes`; none before the schema has them).
    fn prefix_days(
        &self,
        since: i64,
        until: i64,
    ) -> Result<std::collections::HashSet<i64>, StoreError> {
        if self.schema < super::totals::PREFIX_SCHEMA {
            return Ok(Default::default());
        }
        let wrap = |e| self.wrap(e);
        let mut stmt = self
            .conn
            .prepare_cached("SELECT day FROM usage_prefix_days WHERE day >= ?1 AND day < ?2")
            .map_err(wrap)?;
        let days = stmt
            .query_map([since - DAY, until], |r| r.get(0))
            .map_err(wrap)?;
        days.collect::<Result<_, _>>().map_err(wrap)
    }

    /// The rows of `sql` (of [`CHARGED_COLUMNS`], parameters as many of `params` as it
    /// names) summed per uid.
    fn sums_per_uid(&self, sql: &str, params: &[i64]) -> Result<FastMap<i64, Traffic>, StoreError> {
        let wrap = |e| self.wrap(e);
        let mut stmt = self.conn.prepare_cached(sql).map_err(wrap)?;
        // Those it names (?1 and ?2 may not be).
        for (i, p) in params.iter().enumerate() {
            if stmt.parameter_name(i + 1).is_some() {
                stmt.raw_bind_parameter(i + 1, p).map_err(wrap)?;
            }
        }
        let mut rows = stmt.raw_query();
        let mut sums: FastMap<i64, Traffic> = FastMap::default();
        while let Some(r) = rows.next().map_err(wrap)? {
            let (uid, t) = charged_at(r).map_err(wrap)?;
            sums.entry(uid).or_default().add(&t);
        }
        Ok(sums)
    }

    /// Every recorded user's name by uid.
    fn user_names(&self) -> Result<FastMap<i64, Option<String>>, StoreError> {
        self.conn
            .prepare_cached("SELECT uid, name FROM users")
            .and_then(|mut st| {
                st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| self.wrap(e))
    }

    /// Every usage row that overlaps a period, oldest first (for export; see
    /// [`Store::covered`]).
    pub fn usage_rows(&self, since: i64, until: i64) -> Result<Vec<UsageRecord>, StoreError> {
        let mut rows = vec![];
        self.usage_rows_each(since, until, |r| {
            rows.push(r);
            Ok::<_, StoreError>(())
        })?;
        Ok(rows)
    }

    /// [`Store::usage_rows`] handed to `f` one at a time as they are read, in the same
    /// order, in memory that does not grow with the period: the period is read an hour
    /// of rows at a time (each sorted on its own: the order starts with the time), gaps
    /// skipped with a key lookup.
    pub fn usage_rows_each<E: From<StoreError>>(
        &self,
        since: i64,
        until: i64,
        f: impl FnMut(UsageRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        self.export_rows(since, until, true, f)
    }

    /// The rows of [`Store::usage_rows_each`], an hour at a time `by_hour`, else in one
    /// query sorting the whole period (as before issue 26; tests compare the two).
    pub(super) fn export_rows<E: From<StoreError>>(
        &self,
        since: i64,
        until: i64,
        by_hour: bool,
        mut f: impl FnMut(UsageRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let wrap = |e| self.wrap(e);
        // An older database read without migrating has no via_uid (nor via rows).
        let via = if self.schema >= super::VIA_SCHEMA {
            "via_uid"
        } else {
            "NULL"
        };
        // Nor containers before schema 10.
        let (container, container_uid) = match self.schema >= super::CONTAINER_SCHEMA {
            true => ("container", "container_uid"),
            false => ("NULL", "NULL"),
        };
        // Nor cgroups before schema 16.
        let cgroup = match self.schema >= super::CGROUP_SCHEMA {
            true => "cgroup, unit, job",
            false => "NULL AS cgroup, NULL AS unit, NULL AS job",
        };
        // `?3`: the rows of `[?1, ?2)` dated `?3` or later — all of them, the rows that
        // straddle `?1` included, for the first hour; those dated in it for the next.
        let sql = format!(
            "SELECT u.ts, u.kind, u.uid, n.name, u.program, u.reason, u.protocol,
                    u.direction, u.remote_addr, u.port,
                    u.rx_bytes, u.tx_bytes, u.rx_packets, u.tx_packets, u.via,
                    u.container, u.container_uid, u.cgroup, u.unit, u.job
             FROM ({}) u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.ts >= ?3
             ORDER BY u.ts, u.kind, u.uid, u.program, u.remote_addr, u.port, u.via,
                      u.container, u.container_uid, u.cgroup",
            self.source()
                .export
                .replace("{via}", via)
                .replace("{container}", container)
                .replace("{container_uid}", container_uid)
                .replace("{cgroup}", cgroup)
        );
        let mut stmt = self.conn.prepare(&sql).map_err(wrap)?;
        let mut next = self.conn.prepare_cached(self.source().next).map_err(wrap)?;
        let (mut a, mut from) = (since, i64::MIN);
        loop {
            let b = match by_hour {
                true => (floor(a, HOUR) + HOUR).min(until),
                false => until,
            };
            let mut rows = stmt.query(params![a, b, from]).map_err(wrap)?;
            while let Some(r) = rows.next().map_err(wrap)? {
                f(usage_record_at(r).map_err(wrap)?)?;
            }
            if b >= until {
                return Ok(());
            }
            // The next hour with rows.
            let t: Option<i64> = next
                .query_row(params![b, until], |r| r.get(0))
                .map_err(wrap)?;
            let Some(t) = t else {
                return Ok(());
            };
            (a, from) = (t.max(b), t.max(b));
        }
    }

    /// `f` inside one read transaction: every query it makes sees the same rows, whatever
    /// a writer commits meanwhile.
    pub fn in_one_read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let wrap = |e| self.wrap(e);
        self.conn.execute_batch("BEGIN").map_err(wrap)?;
        let out = f(self);
        let end = if out.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn.execute_batch(end).map_err(wrap)?;
        out
    }

    /// The uid recorded for a user name (users deleted since are still known here).
    pub fn uid_of(&self, name: &str) -> Result<Option<u32>, StoreError> {
        self.conn
            .query_row("SELECT uid FROM users WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.wrap(e))
    }
}

const HOUR: i64 = 3600;
const DAY: i64 = 86_400;

/// How a report's window `[since, until)` (already widened to whole stored rows) splits
/// between the totals and the detail: whole UTC days from day totals, whole hours from
/// hour totals, and what is left at the edges (less than an hour each) from the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Split {
    /// Whole days, from the day totals.
    pub days: Vec<(i64, i64)>,
    /// Whole hours outside those days, from the hour totals.
    pub hours: Vec<(i64, i64)>,
    /// The edges, from the detail rows.
    pub detail: Vec<(i64, i64)>,
}

fn ceil(t: i64, step: i64) -> i64 {
    t + (step - t.rem_euclid(step)) % step
}

fn floor(t: i64, step: i64) -> i64 {
    t - t.rem_euclid(step)
}

/// Add `[a, b)` to sorted, disjoint `ranges`, joining it to the last one when they touch.
pub(super) fn push(ranges: &mut Vec<(i64, i64)>, a: i64, b: i64) {
    match ranges.last_mut() {
        _ if a >= b => {}
        Some(last) if last.1 == a => last.1 = b,
        _ => ranges.push((a, b)),
    }
}

impl Split {
    /// Take the whole day from `day` out of [`Split::days`] (to be read otherwise): false
    /// when it is not there.
    pub(super) fn day_apart(&mut self, day: i64) -> bool {
        carve(&mut self.days, day, day + DAY)
    }

    /// Read the whole hour from `hour` (in [`Split::hours`]) from the detail instead.
    pub(super) fn hour_from_detail(&mut self, hour: i64) {
        if carve(&mut self.hours, hour, hour + HOUR) {
            self.detail.push((hour, hour + HOUR));
        }
    }

    /// Split `[since, until)`; the whole days for which `split_day(day start)` is true are
    /// read from their hours instead (a day that spans two periods of a report).
    pub(super) fn new(since: i64, until: i64, split_day: impl Fn(i64) -> bool) -> Split {
        let (h1, h2) = (ceil(since, HOUR), floor(until, HOUR));
        let mut split = Split {
            days: vec![],
            hours: vec![],
            detail: vec![],
        };
        if h1 >= h2 {
            push(&mut split.detail, since, until);
            return split;
        }
        push(&mut split.detail, since, h1);
        let (d1, d2) = (ceil(h1, DAY), floor(h2, DAY));
        if d1 >= d2 {
            push(&mut split.hours, h1, h2);
        } else {
            push(&mut split.hours, h1, d1);
            for d in (d1..d2).step_by(DAY as usize) {
                match split_day(d) {
                    true => push(&mut split.hours, d, d + DAY),
                    false => push(&mut split.days, d, d + DAY),
                }
            }
            push(&mut split.hours, d2, h2);
        }
        push(&mut split.detail, h2, until);
        split
    }
}

/// Take `[a, b)` out of the one of sorted, disjoint `ranges` that holds it, leaving what
/// is left of that range on either side: false when none holds it.
fn carve(ranges: &mut Vec<(i64, i64)>, a: i64, b: i64) -> bool {
    let Some(i) = ranges.iter().position(|&(x, y)| x <= a && b <= y) else {
        return false;
    };
    let (x, y) = ranges.remove(i);
    let rest = [(x, a), (b, y)].into_iter().filter(|(p, q)| p < q);
    for (k, r) in rest.enumerate() {
        ranges.insert(i + k, r);
    }
    true
}

/// ` UNION ALL {select} AND ts >= a AND ts < b` for each of `ranges`: a key range each.
/// (`ts` ranges joined with OR beside another term of the key, such as `granularity =
/// 3600 AND (… OR …)`, are read by SQLite as every row of that term, the whole tier.)
pub(super) fn ranges_union(select: &str, ranges: &[(i64, i64)]) -> String {
    ranges
        .iter()
        .map(|(a, b)| format!(" UNION ALL {select} AND ts >= {a} AND ts < {b}"))
        .collect()
}

/// A comma-separated list in sorted order (SQLite's `group_concat` follows row order).
fn sorted_list(list: String) -> String {
    let mut items: Vec<&str> = list.split(',').collect();
    items.sort_unstable();
    items.join(",")
}

/// What [`Store::periods_each`] keeps while it reads its pieces: the statement labelling
/// a row time, the open period, the parameters (?1 and ?2 the window, ?3 the uid), and the
/// `SELECT`s of the hour and day totals and of the detail of ?4 to ?5 (a [`SharedDay`]'s).
struct PeriodRead<'c> {
    label: rusqlite::Statement<'c>,
    open: OpenPeriod,
    params: [i64; 3],
    hours: String,
    days: String,
    detail: String,
    /// The `SELECT` of the running sums of a day through the hour ?4, and the days that
    /// have them.
    prefixes: String,
    prefix_days: std::collections::HashSet<i64>,
}

/// The period `report` is summing: its label, the row time last read, and the sums per
/// uid (-1 none) so far.
#[derive(Default)]
struct OpenPeriod {
    label: String,
    ts: Option<i64>,
    sums: FastMap<i64, Traffic>,
    names: FastMap<i64, Option<String>>,
}

impl OpenPeriod {
    /// Move to the row time `ts`, handing the open period on first when `ts` begins
    /// another (its label from the statement `label`).
    fn at<E: From<StoreError>>(
        &mut self,
        ts: i64,
        label: &mut rusqlite::Statement,
        wrap: &impl Fn(rusqlite::Error) -> StoreError,
        f: &mut impl FnMut(PeriodRow) -> Result<(), E>,
    ) -> Result<(), E> {
        if self.ts != Some(ts) {
            let l: String = label.query_row([ts], |r| r.get(0)).map_err(wrap)?;
            if self.label != l {
                self.flush(f)?;
                self.label = l;
            }
            self.ts = Some(ts);
        }
        Ok(())
    }

    /// Hand the period's rows to `f` as the SQL of old ordered them (most bytes first,
    /// then the uid) and start afresh.
    fn flush<E>(&mut self, f: &mut impl FnMut(PeriodRow) -> Result<(), E>) -> Result<(), E> {
        let mut users: Vec<(i64, Traffic)> = self.sums.drain().collect();
        users.sort_unstable_by_key(|(uid, t)| (std::cmp::Reverse(t.bytes()), *uid));
        for (uid, traffic) in users {
            f(PeriodRow {
                period: self.label.clone(),
                uid: u32::try_from(uid).ok(),
                user: self.names.get(&uid).cloned().flatten(),
                traffic,
            })?;
        }
        Ok(())
    }
}

/// The SQL of `top`'s grouping columns over the CTE `c` (`NULL` for a key not asked for),
/// and the join and column naming the container.
struct TopColumns {
    program: &'static str,
    remote: &'static str,
    protocol: &'static str,
    port: &'static str,
    via: &'static str,
    container: &'static str,
    /// With `via`: why a service's own uid was charged (`ambiguous-holders`).
    why: &'static str,
    container_join: &'static str,
    cname: &'static str,
    /// The cgroup id, with any of `--by cgroup|unit|job` (named, or read for its unit and
    /// job, after summing).
    cgroup: &'static str,
    /// With `--by cgroup`: the join and column naming it (its path).
    cgroup_join: &'static str,
    gname: &'static str,
}

impl TopColumns {
    /// The columns of `by` in a database at `schema` (containers from 10 on, cgroups
    /// from 16).
    fn of(by: &[By], schema: i64) -> TopColumns {
        let containers = schema >= super::CONTAINER_SCHEMA;
        let has = |b: By| by.contains(&b);
        let col = |b: By, expr: &'static str| if has(b) { expr } else { "NULL" };
        // With --by via, a user's row shows the service it came through, or why the
        // service's own uid was charged (`ambiguous-holders`).
        let via = col(By::Via, "nullif(via_uid, -1)");
        let why = col(By::Via, "CASE WHEN kind <> 1 THEN nullif(reason, '') END");
        let (container, container_join, cname) = match has(By::Container) && containers {
            true => (
                "nullif(container, 0)",
                "LEFT JOIN containers k ON k.id = g.k6",
                "k.name",
            ),
            false => ("NULL", "", "NULL"),
        };
        let (cgroup_join, gname) = match has(By::Cgroup) && schema >= CGROUP_SCHEMA {
            true => ("LEFT JOIN cgroups cg ON cg.id = g.k8", "cg.path"),
            false => ("", "NULL"),
        };
        TopColumns {
            program: col(By::Program, "program"),
            remote: col(By::Remote, "remote"),
            protocol: col(By::Port, "protocol"),
            port: col(By::Port, "port"),
            via,
            container,
            why,
            container_join,
            cname,
            cgroup: match by.iter().any(|b| b.is_cgroup()) {
                true => "nullif(cgroup, 0)",
                false => "NULL",
            },
            cgroup_join,
            gname,
        }
    }
}

/// One grouping value of `top` as SQLite compares it in a GROUP BY (its type, then its
/// value; text by its bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
enum Cell {
    #[default]
    Null,
    Int(i64),
    Text(String),
}

impl Cell {
    fn at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Cell> {
        use rusqlite::types::ValueRef;
        Ok(match r.get_ref(i)? {
            ValueRef::Null => Cell::Null,
            ValueRef::Integer(n) => Cell::Int(n),
            ValueRef::Real(x) => Cell::Text(x.to_string()),
            ValueRef::Text(t) | ValueRef::Blob(t) => {
                Cell::Text(String::from_utf8_lossy(t).into_owned())
            }
        })
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Cell::Null => serde_json::Value::Null,
            Cell::Int(n) => (*n).into(),
            Cell::Text(s) => s.as_str().into(),
        }
    }
}

/// A group of `top`: the uid (-1 none), then program, remote, protocol, port, via,
/// container and why (with via), and the cgroup id as [`TopColumns`] selects them; then
/// the unit and the job (see [`Store::by_unit_or_job`]).
type GroupKey = (i64, [Cell; 10]);

/// Where the key of a [`GroupKey`] holds the cgroup id, the unit and the job.
const CGROUP: usize = 7;
const UNIT: usize = 8;
const JOB: usize = 9;

/// `AND cgroup IN (…)`: only the traffic of these cgroups.
fn cgroup_filter(ids: &[i64]) -> String {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    format!("AND cgroup IN ({})", ids.join(","))
}

/// A group's sums, and for the unattributed (uid -1) its reasons.
#[derive(Debug, Default)]
struct Group {
    traffic: Traffic,
    reasons: std::collections::BTreeSet<String>,
}

/// One row of `top`'s final query (see [`Store::top_rows`]).
fn top_row_at(r: &rusqlite::Row) -> rusqlite::Result<TopRow> {
    let reason: Option<String> = r.get(6)?;
    Ok(TopRow {
        uid: r.get(0)?,
        user: r.get(1)?,
        program: r.get(2)?,
        remote: r.get(3)?,
        protocol: r.get(4)?,
        port: r.get(5)?,
        reason: reason.map(sorted_list).or(r.get(14)?),
        via: r.get(11)?,
        via_user: r.get(12)?,
        container: r.get(13)?,
        cgroup: r.get(15)?,
        unit: r.get(16)?,
        job: r.get::<_, Option<i64>>(17)?.map(|j| j as u64),
        traffic: traffic_at(r, 7)?,
    })
}

/// One row of the export query as a record.
fn usage_record_at(r: &rusqlite::Row) -> rusqlite::Result<UsageRecord> {
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
        container: r.get(15)?,
        container_uid: r.get(16)?,
        cgroup: r.get(17)?,
        unit: r.get(18)?,
        job: r.get::<_, Option<i64>>(19)?.map(|j| j as u64),
        traffic: traffic_at(r, 10)?,
    })
}

/// Who was charged and how much in a row of [`CHARGED_COLUMNS`]: its uid and traffic.
fn charged_at(r: &rusqlite::Row) -> rusqlite::Result<(i64, Traffic)> {
    let t = Traffic {
        rx_bytes: int_at(r, 2)? as u64,
        tx_bytes: int_at(r, 3)? as u64,
        rx_packets: int_at(r, 4)? as u64,
        tx_packets: int_at(r, 5)? as u64,
    };
    Ok((int_at(r, 1)?, t))
}

/// `total` less `part`, per uid, without the uids left with nothing: `None` when `part`
/// holds more than `total` anywhere (then the totals do not agree, and the larger side
/// is read from its hours).
fn less(
    total: &FastMap<i64, Traffic>,
    part: &FastMap<i64, Traffic>,
) -> Option<FastMap<i64, Traffic>> {
    let mut rest = total.clone();
    for (uid, p) in part {
        let t = rest.get_mut(uid)?;
        *t = Traffic {
            rx_bytes: t.rx_bytes.checked_sub(p.rx_bytes)?,
            tx_bytes: t.tx_bytes.checked_sub(p.tx_bytes)?,
            rx_packets: t.rx_packets.checked_sub(p.rx_packets)?,
            tx_packets: t.tx_packets.checked_sub(p.tx_packets)?,
        };
    }
    rest.retain(|_, t| !t.is_zero());
    Some(rest)
}

/// The integer in column `i` (its value read in place: a report reads hundreds of
/// thousands), an error naming the column for any other type.
fn int_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<i64> {
    match r.get_ref(i)? {
        rusqlite::types::ValueRef::Integer(n) => Ok(n),
        other => Err(rusqlite::Error::InvalidColumnType(
            i,
            r.as_ref().column_name(i)?.to_string(),
            other.data_type(),
        )),
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// `report` as one SQL GROUP BY over the detail, as it was asked before issue 26: the
    /// reference of the sums streamed by [`Store::periods_each`].
    pub(in crate::store) fn periods_by_sql(
        store: &Store,
        period: Period,
        (since, until): (i64, i64),
        uid: Option<u32>,
        utc: bool,
    ) -> Vec<PeriodRow> {
        let p = period_of("u.ts", period, utc, store.cycle_day);
        let filter = if uid.is_some() { "AND u.uid = ?3" } else { "" };
        let sql = format!(
            "WITH {}
             SELECT {p} AS period, nullif(u.uid, -1), n.name,
                    sum(u.rx_bytes), sum(u.tx_bytes), sum(u.rx_packets), sum(u.tx_packets)
             FROM c u LEFT JOIN users n ON n.uid = u.uid
             WHERE u.kind <> 2 {filter}
             GROUP BY period, u.uid
             ORDER BY period, sum(u.rx_bytes) + sum(u.tx_bytes) DESC, u.uid",
            store.source().cte
        );
        let mut stmt = store.conn.prepare(&sql).unwrap();
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
        };
        rows.unwrap().map(Result::unwrap).collect()
    }

    /// `top` as SQL grouped and ordered it over the detail before issue 26 (the window
    /// cut where the keys begin, as [`Store::top`] does): the reference of the groups
    /// summed by [`Store::top`].
    pub(in crate::store) fn top_by_sql(store: &Store, q: &TopQuery) -> TopReport {
        top_by_sql_in(store, q, None)
    }

    /// [`top_by_sql`] of the cgroups `only` alone, grouped by cgroup, unit and job in SQL
    /// (the cgroups joined to every row): the reference of [`Store::top_in`].
    pub(in crate::store) fn top_by_sql_in(
        store: &Store,
        q: &TopQuery,
        only: Option<&[i64]>,
    ) -> TopReport {
        let keyed = only.is_some() || q.by.iter().any(|b| b.is_key());
        let since = match keyed {
            true => store
                .keys_from(q.since, q.until)
                .unwrap()
                .unwrap_or(q.since),
            false => q.since,
        };
        let src = store.source();
        let cols = TopColumns::of(&q.by, store.schema);
        let TopColumns {
            program,
            remote,
            protocol,
            port,
            via,
            container,
            why,
            container_join,
            cname,
            cgroup_join,
            gname,
            ..
        } = cols;
        let has = |b: By| q.by.contains(&b);
        let k8 = if has(By::Cgroup) {
            "nullif(cgroup, 0)"
        } else {
            "NULL"
        };
        let k9 = if has(By::Unit) { "u.unit" } else { "NULL" };
        let k10 = if has(By::Job) { "u.job" } else { "NULL" };
        let (joins, pname, rname) = (src.joins, src.program, src.remote);
        let user_filter = if q.uid.is_some() { "AND uid = ?4" } else { "" };
        let cgroup_filter = only.map(cgroup_filter).unwrap_or_default();
        let units = match store.schema >= CGROUP_SCHEMA {
            true => "cgroups",
            false => "(SELECT NULL AS id, NULL AS unit, NULL AS job)",
        };
        let sql = format!(
            "WITH {}
             SELECT nullif(g.uid, -1), n.name, {pname}, {rname}, g.k3, g.k4, g.reasons,
                    g.rx, g.tx, g.rp, g.tp, g.k5, v.name, {cname}, g.k7, {gname}, g.k9,
                    g.k10
             FROM (SELECT uid, {program} AS pid, {remote} AS rid, {protocol} AS k3,
                          {port} AS k4, {via} AS k5, {container} AS k6, {why} AS k7,
                          {k8} AS k8, {k9} AS k9, {k10} AS k10,
                          CASE WHEN uid = -1 THEN group_concat(DISTINCT nullif(reason, ''))
                          END AS reasons,
                          sum(rx_bytes) AS rx, sum(tx_bytes) AS tx,
                          sum(rx_packets) AS rp, sum(tx_packets) AS tp
                   FROM c LEFT JOIN {units} u ON u.id = c.cgroup
                   WHERE kind <> 2 {user_filter} {cgroup_filter}
                   GROUP BY uid, pid, rid, k3, k4, k5, k6, k7, k8, k9, k10) g
             LEFT JOIN users n ON n.uid = g.uid {joins} {container_join}
             {cgroup_join} LEFT JOIN users v ON v.uid = g.k5
             ORDER BY g.rx + g.tx DESC, g.uid, 3, 4, g.k3, g.k4, g.k5, g.k7, 14, 16, 17, 18
             LIMIT ?3",
            src.cte
        );
        let limit = q.limit as i64;
        let mut stmt = store.conn.prepare(&sql).unwrap();
        let rows = match q.uid {
            Some(u) => stmt.query_map(params![since, q.until, limit, u], top_row_at),
            None => stmt.query_map(params![since, q.until, limit], top_row_at),
        };
        let rows = rows.unwrap().map(Result::unwrap).collect();
        let sums = ["kind <> 2", "kind = 1", "kind = 2"]
            .iter()
            .flat_map(|cond| {
                ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"]
                    .map(|c| format!("coalesce(sum(CASE WHEN {cond} THEN {c} END), 0)"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        let filter = if q.uid.is_some() { "AND uid = ?3" } else { "" };
        let sql = format!(
            "WITH {} SELECT {sums} FROM c WHERE true {filter} {cgroup_filter}",
            src.cte
        );
        let totals =
            |r: &rusqlite::Row| Ok((traffic_at(r, 0)?, traffic_at(r, 4)?, traffic_at(r, 8)?));
        let (total, unattributed, excluded) = match q.uid {
            Some(u) => store
                .conn
                .query_row(&sql, params![since, q.until, u], totals),
            None => store.conn.query_row(&sql, params![since, q.until], totals),
        }
        .unwrap();
        TopReport {
            rows,
            total,
            unattributed,
            excluded,
            keys_from: (since != q.since).then_some(since),
        }
    }

    #[test]
    fn a_window_splits_into_days_hours_and_edges() {
        let d = 20_000 * DAY;
        // 23:50 the day before to 01:10 two days later.
        let s = Split::new(d - 600, d + 2 * DAY + 4200, |_| false);
        assert_eq!(s.days, vec![(d, d + 2 * DAY)]);
        assert_eq!(s.hours, vec![(d + 2 * DAY, d + 2 * DAY + HOUR)]);
        assert_eq!(
            s.detail,
            vec![(d - 600, d), (d + 2 * DAY + HOUR, d + 2 * DAY + 4200)]
        );
        // The second day spans two periods: its hours instead.
        let s = Split::new(d - 600, d + 2 * DAY + 4200, |day| day == d + DAY);
        assert_eq!(s.days, vec![(d, d + DAY)]);
        assert_eq!(s.hours, vec![(d + DAY, d + 2 * DAY + HOUR)]);
        // Within one hour: all detail.
        let s = Split::new(d + 60, d + 600, |_| false);
        assert_eq!(s.detail, vec![(d + 60, d + 600)]);
        assert!(s.hours.is_empty() && s.days.is_empty());
        // Aligned hours, no whole day.
        let s = Split::new(d + HOUR, d + 5 * HOUR, |_| false);
        assert_eq!(s.hours, vec![(d + HOUR, d + 5 * HOUR)]);
        assert!(s.detail.is_empty());
    }

    #[test]
    fn a_shared_days_side_is_its_whole_hours_and_the_parts_at_its_ends() {
        use SideFrom::{Detail, Hours};
        let d = 20_000 * DAY;
        // India's midnight, 18:30 UTC: 18:30-19:00 from the detail, then whole hours.
        let b = d + 18 * HOUR + 1800;
        assert_eq!(
            side_parts(b, d + DAY),
            vec![(Detail, b, d + 19 * HOUR), (Hours, d + 19 * HOUR, d + DAY)]
        );
        assert_eq!(
            side_parts(d, b),
            vec![(Hours, d, d + 18 * HOUR), (Detail, d + 18 * HOUR, b)]
        );
        // At a whole hour: hours only.
        assert_eq!(side_parts(d, d + 5 * HOUR), vec![(Hours, d, d + 5 * HOUR)]);
        // Inside one hour, or across one boundary of hours with no whole hour: one part.
        assert_eq!(side_parts(d + 60, d + 600), vec![(Detail, d + 60, d + 600)]);
        assert_eq!(
            side_parts(d + 1800, d + HOUR + 900),
            vec![(Detail, d + 1800, d + HOUR + 900)]
        );
    }
}
