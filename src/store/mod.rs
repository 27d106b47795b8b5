//! SQLite storage: open and migrate, load flow state, write a pass in one transaction,
//! and the queries behind the reports.
//!
//! One transaction per pass holds both the new usage rows and the updated flow state,
//! so a crash at any point neither loses nor double-counts a byte: the next pass
//! recomputes what was not committed.

/// The end of every upsert that adds traffic to an existing usage row (a raw bucket, an
/// hour or a day already holding the key): the counters add up. A literal, for `concat!`.
macro_rules! add_counters {
    () => {
        " DO UPDATE SET rx_bytes = rx_bytes + excluded.rx_bytes,
             tx_bytes = tx_bytes + excluded.tx_bytes,
             rx_packets = rx_packets + excluded.rx_packets,
             tx_packets = tx_packets + excluded.tx_packets"
    };
}

pub mod by_cgroup;
mod cgroups;
pub mod connections;
mod error;
pub mod gaps;
#[cfg(feature = "test-hooks")]
mod hooks;
pub mod keys;
pub mod lock;
pub mod metrics;
pub mod query;
pub mod quota;
pub mod retention;
pub mod summary;
pub mod totals;

use std::collections::HashMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, Transaction};
use rusqlite_migration::{Migrations, M};

pub(crate) use cgroups::CgroupIds;
pub use error::StoreError;
pub use lock::{Role, WriterLock};

use crate::account::{FlowState, Kind, PassPlan};
use crate::attribute::{Attribution, Container, Direction, Via};
use crate::model::{Counters, FastMap, FlowKey, Tuple};

/// The schema migrations, in order, embedded at compile time and applied on open.
/// Append only: never edit a shipped migration.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/0001_init.sql"),
    include_str!("../../migrations/0002_report_views.sql"),
    include_str!("../../migrations/0003_connections.sql"),
    include_str!("../../migrations/0004_rollups.sql"),
    include_str!("../../migrations/0005_raw_buckets.sql"),
    include_str!("../../migrations/0006_usage_totals.sql"),
    include_str!("../../migrations/0007_delegated_flows.sql"),
    include_str!("../../migrations/0008_quota.sql"),
    include_str!("../../migrations/0009_usage_keys.sql"),
    include_str!("../../migrations/0010_containers.sql"),
    include_str!("../../migrations/0011_flow_start.sql"),
    include_str!("../../migrations/0012_accounting_gaps.sql"),
    include_str!("../../migrations/0013_connection_log_long.sql"),
    include_str!("../../migrations/0014_usage_tier_days.sql"),
    include_str!("../../migrations/0015_usage_via_container_columns.sql"),
    include_str!("../../migrations/0016_cgroups.sql"),
    include_str!("../../migrations/0017_usage_tier_weeks.sql"),
    include_str!("../../migrations/0018_usage_bucket_totals.sql"),
    include_str!("../../migrations/0019_usage_day_prefixes.sql"),
];

/// The first schema with the compact usage tables (`0005_raw_buckets.sql`); reports on an
/// older, unmigrated database read the views instead.
const COMPACT_SCHEMA: i64 = 5;

/// The first schema whose views have `via_uid` (`0007_delegated_flows.sql`).
const VIA_SCHEMA: i64 = 7;

/// The first schema with containers (`0010_containers.sql`): the `containers` table, the
/// views' `container` and `container_uid`, flow state's container.
pub(crate) const CONTAINER_SCHEMA: i64 = 10;

/// The first schema whose flow state keeps the flow's start (`0011_flow_start.sql`).
pub(crate) const START_SCHEMA: i64 = 11;

/// The first schema whose usage tables keep the service's uid and the container in columns
/// of their own (`0015_usage_via_container_columns.sql`); before it `reason` packed them, and a report reading such a
/// database unmigrated reads the views instead (see `query`).
pub(crate) const TYPED_SCHEMA: i64 = 15;

/// The first schema with cgroups (`0016_cgroups.sql`): the `cgroups` table, the usage
/// tables' `cgroup` key column, flow state's and the connection log's `cgroup`, the views'
/// `cgroup`, `unit` and `job`. A report reading an older database unmigrated reads cgroup
/// 0 (none) for every row.
pub(crate) const CGROUP_SCHEMA: i64 = 16;

/// The first schema with the connection log's long connections indexed apart
/// (`0013_connection_log_long.sql`).
const LONG_LOG_SCHEMA: i64 = 13;

fn migrations() -> Migrations<'static> {
    Migrations::new(MIGRATIONS.iter().map(|sql| M::up(sql)).collect())
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Create the file (and its parent directory, mode 0750) if missing.
    pub create: bool,
    /// Read-only (reports): never create, never migrate.
    pub read_only: bool,
    /// How long to wait for another writer's lock (SQLite's, and the writer lock's while
    /// a snapshot's pass holds it).
    pub busy_timeout: Duration,
    /// Who opens it for writing: every writer holds the database's writer lock for as
    /// long as the store is open (see [`lock`]). Ignored when read-only.
    pub role: Role,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            create: true,
            read_only: false,
            busy_timeout: Duration::from_secs(5),
            role: Role::Other,
        }
    }
}

/// What a pass records about itself besides the plan.
#[derive(Debug, Clone, Default)]
pub struct PassRecord {
    /// Epoch seconds when the pass began (also the usage rows' time).
    pub started_at: i64,
    /// `snapshot` or `run`.
    pub mode: &'static str,
    /// Socket rows read.
    pub sockets: u64,
    /// Malformed /proc lines skipped.
    pub bad_lines: u64,
    /// Malformed netlink messages skipped.
    pub skipped_messages: u64,
}

/// An open netledger database.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Test hook: sleep inside the open pass transaction before committing, so a test can
    /// kill the process mid-pass. Set from `NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS`; only
    /// with the `test-hooks` feature (the integration tests').
    #[cfg(feature = "test-hooks")]
    pub pause_before_commit: Option<Duration>,
    /// Test hook: the same inside the transaction of an event flush (`netledger run`), from
    /// `NETLEDGER_TEST_PAUSE_IN_FLUSH_MS`; only with the `test-hooks` feature.
    #[cfg(feature = "test-hooks")]
    pub pause_in_flush: Option<Duration>,
    /// Schema version after opening: a report opens read-only and does not migrate, so it
    /// may read an older schema (see `query`).
    schema: i64,
    /// A writer's lock, held while the store is open (`None` when read-only).
    _lock: Option<WriterLock>,
    /// Whether reports may read the per-user totals (see [`totals`]).
    use_totals: bool,
    /// The day billing cycles start on: `report --period month` periods (see [`query`]).
    cycle_day: u8,
}

/// Make the directory of a database to be created (mode 0750), if missing.
fn create_parent(path: &Path) -> Result<(), StoreError> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.exists() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })
}

/// A writer's opening of `conn` (at schema `version`): WAL, then every migration not applied
/// yet; refused for a newer schema or a database of another program's.
fn migrate(
    conn: &mut Connection,
    path: &Path,
    version: i64,
    exists: bool,
    wrap: &dyn Fn(rusqlite::Error) -> StoreError,
) -> Result<(), StoreError> {
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(wrap)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(wrap)?;
    if version > MIGRATIONS.len() as i64 {
        return Err(StoreError::TooNew {
            path: path.to_owned(),
            version,
        });
    }
    if version == 0 && exists && has_foreign_tables(conn).map_err(wrap)? {
        return Err(StoreError::NotOurs {
            path: path.to_owned(),
        });
    }
    migrations().to_latest(conn).map_err(|e| match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => wrap(err),
        other => StoreError::Migrate {
            path: path.to_owned(),
            source: other,
        },
    })?;
    Ok(())
}

impl Store {
    /// Open (and, unless read-only, create and migrate) the database at `path`.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Store, StoreError> {
        let exists = error::exists(path, opts.read_only)?;
        if !exists && (opts.read_only || !opts.create) {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        if !opts.read_only {
            refuse_symlink(path)?;
            create_parent(path)?;
        }
        // Before SQLite opens the file: a second writer must not even migrate it.
        let lock = if opts.read_only {
            None
        } else {
            Some(WriterLock::acquire(path, opts.role, opts.busy_timeout)?)
        };
        // Another writer may have created it while we waited for the lock.
        let exists = exists || path.exists();
        let flags = if opts.read_only {
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
        } else {
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
        };
        let wrap = |e| match StoreError::from_sqlite(path, e) {
            StoreError::ReadOnly { path } if opts.read_only => StoreError::Unreadable { path },
            other => other,
        };
        let mut conn = Connection::open_with_flags(path, flags).map_err(wrap)?;
        conn.busy_timeout(opts.busy_timeout).map_err(wrap)?;
        if !exists {
            // The database holds who talked to whom: not for every local user to read.
            let _ = fs::set_permissions(path, fs::Permissions::from_mode(0o640));
        }
        // Reading the schema version is the first real read: a corrupt file fails here,
        // before anything is written to it.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(wrap)?;
        if !opts.read_only {
            migrate(&mut conn, path, version, exists, &wrap)?;
        } else if version == 0 {
            return Err(StoreError::NotOurs {
                path: path.to_owned(),
            });
        } else if version > MIGRATIONS.len() as i64 {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                version,
            });
        }
        let schema = if opts.read_only {
            version
        } else {
            MIGRATIONS.len() as i64
        };
        Ok(Store {
            conn,
            path: path.to_owned(),
            #[cfg(feature = "test-hooks")]
            pause_before_commit: hooks::pause("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS"),
            #[cfg(feature = "test-hooks")]
            pause_in_flush: hooks::pause("NETLEDGER_TEST_PAUSE_IN_FLUSH_MS"),
            schema,
            _lock: lock,
            use_totals: true,
            cycle_day: 1,
        })
    }

    /// The database path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying connection (queries for reports and tests).
    pub fn conn(&self) -> &Connection {
        &self.conn
    }

    fn wrap(&self, e: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(&self.path, e)
    }

    /// Load every saved flow state.
    pub fn load_state(&self) -> Result<FastMap<FlowKey, FlowState>, StoreError> {
        // A read-only store is not migrated: an older schema has no column for what came
        // later (`via`, schema 7; the container, schema 10), which reads as none.
        let via = if self.schema >= VIA_SCHEMA {
            "via"
        } else {
            "NULL"
        };
        let container = if self.schema >= CONTAINER_SCHEMA {
            "container, container_uid"
        } else {
            "NULL, NULL"
        };
        let start = if self.schema >= START_SCHEMA {
            "start_ns"
        } else {
            "NULL"
        };
        let cgroup = cgroups::state_column(self.schema);
        // By id, each path read once: tens of thousands of flows share a few cgroups.
        let cgroups = self.cgroups_by_id()?;
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT zone, protocol, src, dst, sport, dport, ct_id, orig_packets, orig_bytes,
                        reply_packets, reply_bytes, uid, program, direction, first_seen,
                        last_seen, missing, {via}, {container}, {start}, {cgroup}
                 FROM flow_state"
            ))
            .map_err(|e| self.wrap(e))?;
        let n: usize = self
            .conn
            .query_row("SELECT count(*) FROM flow_state", [], |r| r.get(0))
            .map_err(|e| self.wrap(e))?;
        let mut out = FastMap::with_capacity_and_hasher(n, Default::default());
        let mut rows = stmt.query([]).map_err(|e| self.wrap(e))?;
        while let Some(r) = rows.next().map_err(|e| self.wrap(e))? {
            let st = flow_state_row(r, &cgroups).map_err(|e| match e {
                RowError::Sql(e) => self.wrap(e),
                RowError::Address => StoreError::BadRow {
                    path: self.path.clone(),
                    table: "flow_state",
                    detail: format!(
                        "unparsable address {:?} or {:?}",
                        r.get_ref(2).ok(),
                        r.get_ref(3).ok()
                    ),
                },
            })?;
            out.insert(st.key, st);
        }
        Ok(out)
    }

    /// Write one pass — usage rows, flow state, user names — in one transaction.
    /// Returns the pass id.
    pub fn write_pass(
        &mut self,
        rec: &PassRecord,
        plan: &PassPlan,
        users: &[(u32, Option<String>)],
    ) -> Result<i64, StoreError> {
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let id = insert_pass(&tx, rec, plan).map_err(wrap)?;
        write_usage(&tx, rec.started_at, plan).map_err(wrap)?;
        write_state(&tx, plan).map_err(wrap)?;
        write_users(&tx, rec.started_at, users).map_err(wrap)?;
        #[cfg(feature = "test-hooks")]
        hooks::pause_before_commit(self.pause_before_commit, "pass");
        tx.commit().map_err(wrap)?;
        #[cfg(feature = "test-hooks")]
        hooks::committed(self.pause_before_commit, "pass");
        Ok(id)
    }
}

enum RowError {
    Sql(rusqlite::Error),
    Address,
}

impl From<rusqlite::Error> for RowError {
    fn from(e: rusqlite::Error) -> Self {
        RowError::Sql(e)
    }
}

/// Decode one `flow_state` row without allocating for its addresses (a pass loads every
/// flow's state: tens of thousands of rows on a busy host).
fn flow_state_row(
    r: &rusqlite::Row,
    cgroups: &HashMap<i64, crate::attribute::Cgroup>,
) -> Result<FlowState, RowError> {
    let ip = |i: usize| -> Result<IpAddr, RowError> {
        r.get_ref(i)?
            .as_str()
            .map_err(|e| RowError::Sql(e.into()))?
            .parse()
            .map_err(|_| RowError::Address)
    };
    let counter = |i: usize| -> Result<u64, RowError> { Ok(r.get::<_, i64>(i)? as u64) };
    let uid: Option<u32> = r.get(11)?;
    let direction = r
        .get_ref(13)?
        .as_str_or_null()
        .map_err(|e| RowError::Sql(e.into()))?
        .and_then(Direction::parse);
    Ok(FlowState {
        key: FlowKey {
            zone: r.get(0)?,
            orig: Tuple {
                src: ip(2)?,
                dst: ip(3)?,
                proto: r.get(1)?,
                sport: r.get(4)?,
                dport: r.get(5)?,
            },
            id: r.get(6)?,
        },
        orig: Counters {
            packets: counter(7)?,
            bytes: counter(8)?,
        },
        reply: Counters {
            packets: counter(9)?,
            bytes: counter(10)?,
        },
        attribution: match (uid, direction) {
            (Some(uid), Some(direction)) => Some(Attribution {
                uid,
                program: r.get(12)?,
                direction,
                via: Via::from_code(r.get(17)?),
                container: container_at(r, 18)?,
                cgroup: cgroups.get(&r.get::<_, i64>(21)?).cloned(),
            }),
            _ => None,
        },
        first_seen: r.get(14)?,
        last_seen: r.get(15)?,
        missing: r.get(16)?,
        start_ns: r.get::<_, Option<i64>>(20)?.map(|ns| ns as u64),
    })
}

/// A flow state's container from its columns `i` (name) and `i + 1` (uid inside).
pub(crate) fn container_at(r: &rusqlite::Row, i: usize) -> rusqlite::Result<Option<Container>> {
    let name: Option<String> = r.get(i)?;
    let inner: Option<u32> = r.get(i + 1)?;
    Ok(name.map(|name| Container {
        name: name.into(),
        inner_uid: inner.unwrap_or(0),
    }))
}

fn refuse_symlink(path: &Path) -> Result<(), StoreError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(StoreError::Symlink {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn has_foreign_tables(conn: &Connection) -> rusqlite::Result<bool> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

fn insert_pass(tx: &Transaction, rec: &PassRecord, plan: &PassPlan) -> rusqlite::Result<i64> {
    let t = &plan.totals;
    let finished = chrono::Utc::now().timestamp();
    tx.prepare_cached(
        "INSERT INTO passes (started_at, finished_at, mode, sockets, flows, new_flows,
            flows_without_counters, resets, pruned, bad_lines, skipped_messages,
            attributed_rx_bytes, attributed_tx_bytes, unattributed_rx_bytes,
            unattributed_tx_bytes, excluded_rx_bytes, excluded_tx_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    )?
    .execute(params![
        rec.started_at,
        finished,
        rec.mode,
        rec.sockets as i64,
        t.flows as i64,
        t.new_flows as i64,
        t.flows_without_counters as i64,
        t.resets as i64,
        t.pruned as i64,
        rec.bad_lines as i64,
        rec.skipped_messages as i64,
        t.attributed.rx_bytes as i64,
        t.attributed.tx_bytes as i64,
        t.unattributed.rx_bytes as i64,
        t.unattributed.tx_bytes as i64,
        t.excluded.rx_bytes as i64,
        t.excluded.tx_bytes as i64,
    ])?;
    Ok(tx.last_insert_rowid())
}

/// Width of a raw usage bucket: a pass's traffic is added to the row of its 5-minute UTC
/// bucket and key (migration 0005).
pub const BUCKET_SECS: i64 = 300;

fn write_usage(tx: &Transaction, ts: i64, plan: &PassPlan) -> rusqlite::Result<()> {
    let mut stmt = tx.prepare_cached(concat!(
        "INSERT INTO usage_raw (ts, uid, kind, reason, via_uid, container, container_uid,
            program, cgroup, remote, protocol, port, direction, rx_bytes, tx_bytes, rx_packets,
            tx_packets)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
         ON CONFLICT (ts, uid, kind, reason, via_uid, container, container_uid, program,
            cgroup, remote, protocol, port, direction)",
        add_counters!()
    ))?;
    let bucket = ts.div_euclid(BUCKET_SECS) * BUCKET_SECS;
    let mut keys = keys::Adder::new(tx, bucket)?;
    let (mut programs, mut remotes) = (Interned::PROGRAMS, Interned::REMOTES);
    let mut containers = Containers::new(ts);
    let mut cgroups = CgroupIds::default();
    let mut charges = Vec::with_capacity(plan.usage.len());
    for (k, t) in &plan.usage {
        let program = match &k.program {
            Some(p) => programs.id(tx, p)?,
            None => 0,
        };
        let c = Charge::of(k, containers.id_of(tx, k.container.as_ref())?);
        let row = keys::Row {
            program,
            cgroup: cgroups.id_of(tx, k.cgroup.as_ref())?,
            remote: remotes.id(tx, &k.remote.to_string())?,
            protocol: k.protocol,
            port: k.port,
        };
        keys.add(&c, &row, t)?;
        stmt.execute(params![
            bucket,
            c.uid,
            c.kind,
            c.reason,
            c.via_uid,
            c.container,
            c.container_uid,
            row.program,
            row.cgroup,
            row.remote,
            k.protocol,
            k.port,
            k.direction.map_or(0, |d| match d {
                Direction::Out => 1,
                Direction::In => 2,
            }),
            t.rx_bytes as i64,
            t.tx_bytes as i64,
            t.rx_packets as i64,
            t.tx_packets as i64,
        ])?;
        charges.push(c);
    }
    totals::add(tx, ts, plan, &charges)
}

/// Who a usage row is charged to and how, as every usage table keys it (migrations 0005
/// and 0015): its columns `uid`, `kind`, `reason`, `via_uid`, `container` and
/// `container_uid`, in their codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Charge {
    /// The uid charged (or kept on an excluded row); -1 none.
    pub(crate) uid: i64,
    /// 0 user, 1 unattributed, 2 excluded.
    pub(crate) kind: i64,
    /// Why unattributed, or why a service's own uid was charged; '' none.
    pub(crate) reason: &'static str,
    /// The delegating service's uid the traffic went through to the holder charged; -1
    /// none.
    pub(crate) via_uid: i64,
    /// The `containers.id` of the container whose socket it was found through; 0 none.
    pub(crate) container: i64,
    /// That socket's uid inside the container; -1 none.
    pub(crate) container_uid: i64,
}

impl Charge {
    /// The columns of `k`, whose container (if any) is `containers.id` `container`.
    pub(crate) fn of(k: &crate::account::UsageKey, container: Option<i64>) -> Charge {
        let inner = k.container.as_ref().filter(|_| container.is_some());
        Charge {
            uid: k.uid.map_or(-1, i64::from),
            kind: match k.kind {
                Kind::User => 0,
                Kind::Unattributed => 1,
                Kind::Excluded => 2,
            },
            reason: k.reason.map_or("", |r| r.as_str()),
            via_uid: k.via.map_or(-1, i64::from),
            container: container.unwrap_or(0),
            container_uid: inner.map_or(-1, |c| i64::from(c.inner_uid)),
        }
    }
}

/// Container names interned in `containers` (migration 0010) within one write transaction:
/// a name new to the table is added with `first_seen`, a known one gets `last_seen`
/// advanced, once per transaction.
pub(crate) struct Containers {
    ts: i64,
    cache: HashMap<std::sync::Arc<str>, i64>,
}

impl Containers {
    pub(crate) fn new(ts: i64) -> Containers {
        Containers {
            ts,
            cache: HashMap::new(),
        }
    }

    /// The id of `c`'s name (`None` for none).
    pub(crate) fn id_of(
        &mut self,
        conn: &Connection,
        c: Option<&Container>,
    ) -> rusqlite::Result<Option<i64>> {
        let Some(c) = c else { return Ok(None) };
        if let Some(id) = self.cache.get(&c.name) {
            return Ok(Some(*id));
        }
        let id = conn
            .prepare_cached(
                "INSERT INTO containers (name, first_seen, last_seen) VALUES (?1, ?2, ?2)
                 ON CONFLICT (name) DO UPDATE
                 SET last_seen = max(last_seen, excluded.last_seen),
                     first_seen = min(first_seen, excluded.first_seen)
                 RETURNING id",
            )?
            .query_row(params![c.name.as_ref(), self.ts], |r| r.get(0))?;
        self.cache.insert(c.name.clone(), id);
        Ok(Some(id))
    }
}

/// Names stored once and referred to by id (`programs`, `remotes`), with a cache that
/// lives for one transaction (an id from a rolled-back transaction must not be reused).
pub(crate) struct Interned {
    insert: &'static str,
    select: &'static str,
    cache: Option<HashMap<String, i64>>,
}

impl Interned {
    pub(crate) const PROGRAMS: Interned = Interned {
        insert: "INSERT OR IGNORE INTO programs (name) VALUES (?1)",
        select: "SELECT id FROM programs WHERE name = ?1",
        cache: None,
    };
    pub(crate) const REMOTES: Interned = Interned {
        insert: "INSERT OR IGNORE INTO remotes (addr) VALUES (?1)",
        select: "SELECT id FROM remotes WHERE addr = ?1",
        cache: None,
    };

    /// The id of `name`, added if new.
    pub(crate) fn id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        let cache = self.cache.get_or_insert_with(HashMap::new);
        if let Some(id) = cache.get(name) {
            return Ok(*id);
        }
        let mut select = conn.prepare_cached(self.select)?;
        let id = match select.query_row([name], |r| r.get(0)) {
            Ok(id) => id,
            Err(rusqlite::Error::QueryReturnedNoRows) => {
                // Read back rather than trust last_insert_rowid: outside a write
                // transaction another writer may have added the name first (the insert is
                // then ignored).
                conn.prepare_cached(self.insert)?.execute([name])?;
                select.query_row([name], |r| r.get(0))?
            }
            Err(e) => return Err(e),
        };
        cache.insert(name.to_owned(), id);
        Ok(id)
    }
}

fn write_state(tx: &Transaction, plan: &PassPlan) -> rusqlite::Result<()> {
    const KEY: &str = "zone = ?1 AND protocol = ?2 AND src = ?3 AND dst = ?4 AND sport = ?5
                       AND dport = ?6 AND ct_id = ?7";
    let key_params = |k: &FlowKey| {
        (
            k.zone,
            k.orig.proto,
            k.orig.src.to_string(),
            k.orig.dst.to_string(),
            k.orig.sport,
            k.orig.dport,
            k.id,
        )
    };
    let mut up = tx.prepare_cached(
        "INSERT OR REPLACE INTO flow_state (zone, protocol, src, dst, sport, dport, ct_id,
            orig_packets, orig_bytes, reply_packets, reply_bytes, uid, program, direction,
            first_seen, last_seen, missing, via, container, container_uid, start_ns, cgroup)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22)",
    )?;
    let mut cgroups = CgroupIds::default();
    for s in &plan.upserts {
        let (z, p, src, dst, sp, dp, id) = key_params(&s.key);
        let a = s.attribution.as_ref();
        up.execute(params![
            z,
            p,
            src,
            dst,
            sp,
            dp,
            id,
            s.orig.packets as i64,
            s.orig.bytes as i64,
            s.reply.packets as i64,
            s.reply.bytes as i64,
            a.map(|a| a.uid),
            a.and_then(|a| a.program.clone()),
            a.map(|a| a.direction.as_str()),
            s.first_seen,
            s.last_seen,
            s.missing,
            a.and_then(|a| a.via.code()),
            a.and_then(|a| a.container.as_ref())
                .map(|c| c.name.as_ref()),
            a.and_then(|a| a.container.as_ref()).map(|c| c.inner_uid),
            s.start_ns.map(|ns| ns as i64),
            cgroups.id_of(tx, a.and_then(|a| a.cgroup.as_ref()))?,
        ])?;
    }
    let mut del = tx.prepare_cached(&format!("DELETE FROM flow_state WHERE {KEY}"))?;
    for k in &plan.deletes {
        del.execute(key_params(k))?;
    }
    let mut miss = tx.prepare_cached(&format!("UPDATE flow_state SET missing = ?8 WHERE {KEY}"))?;
    for (k, n) in &plan.missing {
        let (z, p, src, dst, sp, dp, id) = key_params(k);
        miss.execute(params![z, p, src, dst, sp, dp, id, n])?;
    }
    Ok(())
}

fn write_users(
    tx: &Transaction,
    now: i64,
    users: &[(u32, Option<String>)],
) -> rusqlite::Result<()> {
    // A name that can no longer be resolved (deleted account) keeps the one on record.
    let mut stmt = tx.prepare_cached(
        "INSERT INTO users (uid, name, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT (uid) DO UPDATE SET name = coalesce(excluded.name, users.name),
                                         last_seen = excluded.last_seen",
    )?;
    for (uid, name) in users {
        stmt.execute(params![uid, name, now])?;
    }
    Ok(())
}

/// Every row `sql` returns, each as its values' debug forms joined by commas (tests that
/// compare tables before and after a migration).
#[cfg(test)]
pub(crate) fn dump_rows(c: &Connection, sql: &str) -> Vec<String> {
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        Ok((0..n)
            .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
            .collect::<Vec<_>>()
            .join(","))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[cfg(test)]
mod tests;
