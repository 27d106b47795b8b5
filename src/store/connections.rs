//! The daemon's side of the store: the connection log (migration 0003), and the write of
//! one batch of conntrack events (NEW attributions, DESTROY charges, logged connections)
//! in one transaction.
//!
//! The log is packed: one `WITHOUT ROWID` row per connection whose only column, the key,
//! holds the whole record (layout in `migrations/0003_connections.sql`). Measured on
//! 10,000 IPv4 TCP connections with uid, program and counters: see the test
//! `log_bytes_per_connection`, and docs/operations.md ("Daemon and connection log").

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rusqlite::{params, Connection, OptionalExtension};

use super::{
    insert_pass, write_state, write_usage, write_users, CgroupIds, Containers, Interned,
    PassRecord, Store, StoreError,
};
use crate::account::{FlowState, PassPlan};
use crate::attribute::{Attribution, Cgroup, Container, Direction, Via};
use crate::model::{Counters, FlowKey, Tuple};

/// 2024-01-01T00:00:00Z in milliseconds since the Unix epoch: the log's time origin, so
/// an end time fits 5 bytes (until 2058).
pub const LOG_EPOCH_MS: i64 = 1_704_067_200_000;
const TIME_LEN: usize = 5;
const MAX_TIME_MS: i64 = (1 << 40) - 1;

const F_DIR_MASK: u8 = 0b11;
const F_V6: u8 = 1 << 2;
const F_NAT: u8 = 1 << 3;
const F_UID: u8 = 1 << 4;
const F_PROGRAM: u8 = 1 << 5;
/// Bits 6-7: the protocol class. TCP and UDP, nearly every row, cost no protocol byte.
const P_SHIFT: u8 = 6;
const P_TCP: u8 = 0;
const P_UDP: u8 = 1;
const P_OTHER: u8 = 2;
const P_EXTENDED: u8 = 3;
/// Extension byte (class 3): the rare cases.
const X_NO_COUNTERS: u8 = 1 << 0;
const X_ZONE: u8 = 1 << 1;
/// Schema 6: the uid of the delegating service's socket the connection went through
/// follows the zone (the connection is charged to `uid`, a holder of that socket).
const X_VIA: u8 = 1 << 2;
/// Schema 10: the connection was found through a container's socket: its `containers.id`
/// and the socket's uid inside it follow, at the end.
const X_CONTAINER: u8 = 1 << 3;

/// One finished connection as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedConnection {
    /// Start, milliseconds since the Unix epoch (conntrack's own start time when
    /// `nf_conntrack_timestamp=1`, else when netledger first saw the flow).
    pub start_ms: i64,
    /// End, milliseconds since the Unix epoch.
    pub end_ms: i64,
    /// Original tuple (as the initiator sent it, pre-NAT).
    pub orig: Tuple,
    /// Reply tuple (as the responder answered, post-NAT).
    pub reply: Tuple,
    /// Which side initiated, when known.
    pub direction: Option<Direction>,
    /// Owner, when known.
    pub uid: Option<u32>,
    /// Program, when known.
    pub program: Option<String>,
    /// Final original-direction counters (absent when accounting was off at creation).
    pub orig_counters: Option<Counters>,
    /// Final reply-direction counters.
    pub reply_counters: Option<Counters>,
    /// Conntrack zone.
    pub zone: u16,
    /// The delegating uid whose socket it went through, when charged to a holder of it.
    pub via: Option<u32>,
    /// The container whose socket it was found through (`uid` is the one charged, as the
    /// host sees it; the container's own view of it is `inner_uid`).
    pub container: Option<Container>,
    /// The cgroup of the socket's creator, when known (kept beside the record, in
    /// `connection_log.cgroup`, migration 0016).
    pub cgroup: Option<Cgroup>,
}

impl LoggedConnection {
    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        self.end_ms - self.start_ms
    }
}

/// A stored record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("connection log record does not decode: {0}")]
pub struct BadRecord(pub &'static str);

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn mirrored(orig: &Tuple, reply: &Tuple) -> bool {
    reply.src == orig.dst
        && reply.dst == orig.src
        && reply.sport == orig.dport
        && reply.dport == orig.sport
        && reply.proto == orig.proto
}

fn put_tuple(out: &mut Vec<u8>, t: &Tuple) {
    for ip in [t.src, t.dst] {
        match ip {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    out.extend_from_slice(&t.sport.to_be_bytes());
    out.extend_from_slice(&t.dport.to_be_bytes());
}

/// The key prefix of an end time (for range scans).
pub fn time_prefix(ms: i64) -> [u8; TIME_LEN] {
    let rel = (ms - LOG_EPOCH_MS).clamp(0, MAX_TIME_MS) as u64;
    let b = rel.to_be_bytes();
    [b[3], b[4], b[5], b[6], b[7]]
}

/// Pack a connection (pure). `program` is its `programs.id`, `container` its container's
/// `containers.id` (the record holds it only when `c.container` is set).
pub fn encode(c: &LoggedConnection, program: Option<i64>, container: Option<i64>) -> Vec<u8> {
    let container = container.zip(c.container.as_ref().map(|c| c.inner_uid));
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&time_prefix(c.end_ms));
    put_varint(&mut out, c.duration_ms().max(0) as u64);
    let v6 = c.orig.src.is_ipv6();
    let nat = !mirrored(&c.orig, &c.reply);
    let counters = c.orig_counters.is_some() || c.reply_counters.is_some();
    let mut ext = 0;
    if !counters {
        ext |= X_NO_COUNTERS;
    }
    if c.zone != 0 {
        ext |= X_ZONE;
    }
    if c.via.is_some() {
        ext |= X_VIA;
    }
    if container.is_some() {
        ext |= X_CONTAINER;
    }
    let class = match (ext, c.orig.proto) {
        (0, crate::model::IPPROTO_TCP) => P_TCP,
        (0, crate::model::IPPROTO_UDP) => P_UDP,
        (0, _) => P_OTHER,
        _ => P_EXTENDED,
    };
    let mut flags = match c.direction {
        None => 0,
        Some(Direction::Out) => 1,
        Some(Direction::In) => 2,
    } | class << P_SHIFT;
    for (on, bit) in [
        (v6, F_V6),
        (nat, F_NAT),
        (c.uid.is_some(), F_UID),
        (program.is_some(), F_PROGRAM),
    ] {
        if on {
            flags |= bit;
        }
    }
    out.push(flags);
    if class == P_EXTENDED {
        out.push(ext);
    }
    if class >= P_OTHER {
        out.push(c.orig.proto);
    }
    put_tuple(&mut out, &c.orig);
    if nat {
        put_tuple(&mut out, &c.reply);
    }
    if let Some(uid) = c.uid {
        put_varint(&mut out, u64::from(uid));
    }
    if let Some(p) = program {
        put_varint(&mut out, p as u64);
    }
    if counters {
        let o = c.orig_counters.unwrap_or_default();
        let r = c.reply_counters.unwrap_or_default();
        for v in [o.packets, o.bytes, r.packets, r.bytes] {
            put_varint(&mut out, v);
        }
    }
    if c.zone != 0 {
        put_varint(&mut out, u64::from(c.zone));
    }
    if let Some(via) = c.via {
        put_varint(&mut out, u64::from(via));
    }
    if let Some((id, inner)) = container {
        put_varint(&mut out, id as u64);
        put_varint(&mut out, u64::from(inner));
    }
    out
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], BadRecord> {
        if self.buf.len() < n {
            return Err(BadRecord("truncated"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn byte(&mut self) -> Result<u8, BadRecord> {
        Ok(self.take(1)?[0])
    }
    fn varint(&mut self) -> Result<u64, BadRecord> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BadRecord("varint too long"))
    }
    fn tuple(&mut self, proto: u8, v6: bool) -> Result<Tuple, BadRecord> {
        let mut ip = || -> Result<IpAddr, BadRecord> {
            Ok(if v6 {
                IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(self.take(16)?).expect("16 bytes"),
                ))
            } else {
                IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(self.take(4)?).expect("4 bytes"),
                ))
            })
        };
        let (src, dst) = (ip()?, ip()?);
        let p = self.take(4)?;
        Ok(Tuple {
            src,
            dst,
            proto,
            sport: u16::from_be_bytes([p[0], p[1]]),
            dport: u16::from_be_bytes([p[2], p[3]]),
        })
    }
}

/// A decoded record: the connection without the names it refers to by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The connection: no `program`; a `container` with an empty name when it has one.
    pub conn: LoggedConnection,
    /// Its `programs.id`.
    pub program: Option<i64>,
    /// Its `containers.id`.
    pub container: Option<i64>,
}

/// Unpack a record (pure): the connection (without its program and container names) and
/// their ids.
pub fn decode(rec: &[u8]) -> Result<Decoded, BadRecord> {
    let mut r = Reader { buf: rec };
    let t = r.take(TIME_LEN)?;
    let rel = u64::from_be_bytes([0, 0, 0, t[0], t[1], t[2], t[3], t[4]]) as i64;
    let end_ms = LOG_EPOCH_MS + rel;
    let duration = r.varint()? as i64;
    let flags = r.byte()?;
    let class = flags >> P_SHIFT;
    let ext = if class == P_EXTENDED { r.byte()? } else { 0 };
    if ext & !(X_NO_COUNTERS | X_ZONE | X_VIA | X_CONTAINER) != 0 {
        return Err(BadRecord(
            "unknown extension (written by a newer netledger?)",
        ));
    }
    let proto = match class {
        P_TCP => crate::model::IPPROTO_TCP,
        P_UDP => crate::model::IPPROTO_UDP,
        _ => r.byte()?,
    };
    let v6 = flags & F_V6 != 0;
    let orig = r.tuple(proto, v6)?;
    let reply = if flags & F_NAT != 0 {
        r.tuple(proto, v6)?
    } else {
        Tuple {
            src: orig.dst,
            dst: orig.src,
            proto,
            sport: orig.dport,
            dport: orig.sport,
        }
    };
    let direction = match flags & F_DIR_MASK {
        0 => None,
        1 => Some(Direction::Out),
        2 => Some(Direction::In),
        _ => return Err(BadRecord("unknown direction")),
    };
    let uid = if flags & F_UID != 0 {
        Some(u32::try_from(r.varint()?).map_err(|_| BadRecord("uid out of range"))?)
    } else {
        None
    };
    let program = if flags & F_PROGRAM != 0 {
        Some(r.varint()? as i64)
    } else {
        None
    };
    let (orig_counters, reply_counters) = r.counters(ext)?;
    let (zone, via, container) = r.extensions(ext)?;
    if !r.buf.is_empty() {
        return Err(BadRecord("trailing bytes (written by a newer netledger?)"));
    }
    Ok(Decoded {
        conn: LoggedConnection {
            start_ms: end_ms - duration,
            end_ms,
            orig,
            reply,
            direction,
            uid,
            program: None,
            orig_counters,
            reply_counters,
            zone,
            via,
            container: container.map(|(_, inner_uid)| Container {
                name: "".into(),
                inner_uid,
            }),
            cgroup: None,
        },
        program,
        container: container.map(|(id, _)| id),
    })
}

/// An extended record's optional fields, in the order they are written.
type Extensions = (u16, Option<u32>, Option<(i64, u32)>);

impl Reader<'_> {
    /// Both directions' counters, unless the record has none (`X_NO_COUNTERS`).
    fn counters(&mut self, ext: u8) -> Result<(Option<Counters>, Option<Counters>), BadRecord> {
        let counters = if ext & X_NO_COUNTERS == 0 {
            let mut c = [0u64; 4];
            for v in &mut c {
                *v = self.varint()?;
            }
            (
                Some(Counters {
                    packets: c[0],
                    bytes: c[1],
                }),
                Some(Counters {
                    packets: c[2],
                    bytes: c[3],
                }),
            )
        } else {
            (None, None)
        };
        Ok(counters)
    }

    /// The zone, the service's uid (`via`) and the container's id and uid inside, each
    /// where its extension bit is set.
    fn extensions(&mut self, ext: u8) -> Result<Extensions, BadRecord> {
        let zone = if ext & X_ZONE != 0 {
            u16::try_from(self.varint()?).map_err(|_| BadRecord("zone out of range"))?
        } else {
            0
        };
        let via = if ext & X_VIA != 0 {
            Some(u32::try_from(self.varint()?).map_err(|_| BadRecord("via out of range"))?)
        } else {
            None
        };
        let container = if ext & X_CONTAINER != 0 {
            let id =
                i64::try_from(self.varint()?).map_err(|_| BadRecord("container out of range"))?;
            let inner = u32::try_from(self.varint()?)
                .map_err(|_| BadRecord("container uid out of range"))?;
            Some((id, inner))
        } else {
            None
        };
        Ok((zone, via, container))
    }
}

/// Everything one flush of conntrack events writes, in one transaction: the usage rows
/// and flow-state deletions of the DESTROY charges (`plan`), the attributions NEW events
/// found (`attributions`), and the finished connections (`log`).
#[derive(Debug, Default)]
pub struct EventWrite {
    /// Recorded in `passes` (mode `events`), with the plan's totals.
    pub record: PassRecord,
    /// Usage rows and totals; `plan.deletes` are the destroyed flows' states. Its upserts
    /// and missing marks are ignored: a destroyed flow is forgotten, not updated.
    pub plan: PassPlan,
    /// Names of the uids charged.
    pub users: Vec<(u32, Option<String>)>,
    /// NEW attributions: stored with zero counters for a flow not yet known (so the next
    /// charge is its full counters, as for a first sighting), or set on the known flow's
    /// state without touching its counters.
    pub attributions: Vec<FlowState>,
    /// Finished connections for the log (empty when the log is off).
    pub log: Vec<LoggedConnection>,
    /// Finished connections left out of the log.
    pub not_logged: NotLogged,
}

/// Finished connections a flush charged but did not log, by why (issue 24: a flood of
/// connections must not fill the disk).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotLogged {
    /// Charged to nobody as local (loopback, local networks, the host's own addresses),
    /// with `connection_log_local` off.
    pub local: u64,
    /// Over `connection_log_rate`/`connection_log_burst`.
    pub over_limit: u64,
    /// Those over the limit per owner (`None`: unattributed), so that who flooded is said.
    pub over_limit_by: std::collections::BTreeMap<Option<u32>, u64>,
}

/// What a flush stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventWriteOutcome {
    /// The `passes` row, when one was written (only when something was charged).
    pub pass_id: Option<i64>,
    /// Connections added to the log.
    pub logged: usize,
    /// Log records that were already present (not stored twice).
    pub duplicates: usize,
    /// Finished connections left out of the log.
    pub not_logged: NotLogged,
}

const KEY: &str = "zone = ?1 AND protocol = ?2 AND src = ?3 AND dst = ?4 AND sport = ?5
                   AND dport = ?6 AND ct_id = ?7";

fn load_states_on(
    conn: &Connection,
    keys: &[FlowKey],
) -> rusqlite::Result<HashMap<FlowKey, FlowState>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT orig_packets, orig_bytes, reply_packets, reply_bytes, uid, program, direction,
                first_seen, last_seen, missing, via, container, container_uid, start_ns,
                cg.path, cg.job
         FROM flow_state
              LEFT JOIN cgroups cg ON flow_state.cgroup <> 0 AND cg.id = flow_state.cgroup
         WHERE {KEY}"
    ))?;
    let mut out = HashMap::new();
    for k in keys {
        let row = stmt
            .query_row(
                params![
                    k.zone,
                    k.orig.proto,
                    k.orig.src.to_string(),
                    k.orig.dst.to_string(),
                    k.orig.sport,
                    k.orig.dport,
                    k.id
                ],
                |r| {
                    let uid: Option<u32> = r.get(4)?;
                    let direction: Option<String> = r.get(6)?;
                    Ok(FlowState {
                        key: *k,
                        orig: Counters {
                            packets: r.get::<_, i64>(0)? as u64,
                            bytes: r.get::<_, i64>(1)? as u64,
                        },
                        reply: Counters {
                            packets: r.get::<_, i64>(2)? as u64,
                            bytes: r.get::<_, i64>(3)? as u64,
                        },
                        attribution: match (uid, direction.as_deref().and_then(Direction::parse)) {
                            (Some(uid), Some(direction)) => Some(Attribution {
                                uid,
                                program: r.get(5)?,
                                direction,
                                via: Via::from_code(r.get(10)?),
                                container: super::container_at(r, 11)?,
                                cgroup: super::cgroups::cgroup_at(r, 14)?,
                            }),
                            _ => None,
                        },
                        first_seen: r.get(7)?,
                        last_seen: r.get(8)?,
                        missing: r.get(9)?,
                        start_ns: r.get::<_, Option<i64>>(13)?.map(|ns| ns as u64),
                    })
                },
            )
            .optional()?;
        if let Some(s) = row {
            out.insert(*k, s);
        }
    }
    Ok(out)
}

/// Store owners found by NEW events (and by the daemon's later looks at the holders of a
/// service's socket). On a flow already in the state:
/// - a settled owner of a service's socket (via ≥ -2) is kept: a pass resolved it first;
/// - a pending flow's counters are the last seen, none charged (migration 0007): an owner
///   that settles it zeroes them, so the next charge is the full counters;
/// - a flow already charged is never made pending (that would charge it again from zero):
///   a pending owner settles it as the service's own;
/// - otherwise the owner replaces the one stored, counters untouched.
fn write_attributions(conn: &Connection, states: &[FlowState]) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO flow_state (zone, protocol, src, dst, sport, dport, ct_id,
            orig_packets, orig_bytes, reply_packets, reply_bytes, uid, program, direction,
            first_seen, last_seen, missing, via, container, container_uid, cgroup)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, 0, 0, 0, ?8, ?9, ?10, ?11, ?11, 0, ?12, ?13, ?14,
                 ?15)
         ON CONFLICT (zone, protocol, src, dst, sport, dport, ct_id) DO UPDATE
         SET uid = excluded.uid, program = excluded.program, direction = excluded.direction,
             container = excluded.container, container_uid = excluded.container_uid,
             cgroup = excluded.cgroup,
             via = CASE WHEN flow_state.via IS NOT -3 AND excluded.via IS -3 THEN -1
                        ELSE excluded.via END,
             orig_packets = iif(flow_state.via IS -3 AND excluded.via IS NOT -3, 0, orig_packets),
             orig_bytes = iif(flow_state.via IS -3 AND excluded.via IS NOT -3, 0, orig_bytes),
             reply_packets = iif(flow_state.via IS -3 AND excluded.via IS NOT -3, 0, reply_packets),
             reply_bytes = iif(flow_state.via IS -3 AND excluded.via IS NOT -3, 0, reply_bytes)
         WHERE flow_state.via IS NULL OR flow_state.via = -3",
    )?;
    let mut cgroups = CgroupIds::default();
    for s in states {
        let Some(a) = &s.attribution else { continue };
        let k = &s.key;
        let cgroup = cgroups.id_of(conn, a.cgroup.as_ref())?;
        stmt.execute(params![
            k.zone,
            k.orig.proto,
            k.orig.src.to_string(),
            k.orig.dst.to_string(),
            k.orig.sport,
            k.orig.dport,
            k.id,
            a.uid,
            a.program,
            a.direction.as_str(),
            s.first_seen,
            a.via.code(),
            a.container.as_ref().map(|c| c.name.as_ref()),
            a.container.as_ref().map(|c| c.inner_uid),
            cgroup,
        ])?;
    }
    Ok(())
}

fn write_log(
    conn: &Connection,
    now: i64,
    log: &[LoggedConnection],
) -> rusqlite::Result<(usize, usize)> {
    let mut programs = Interned::PROGRAMS;
    let mut containers = Containers::new(now);
    let mut cgroups = CgroupIds::default();
    let mut stmt =
        conn.prepare_cached("INSERT OR IGNORE INTO connection_log (rec, cgroup) VALUES (?1, ?2)")?;
    let (mut logged, mut duplicates) = (0, 0);
    for c in log {
        let program = match &c.program {
            Some(p) if !p.is_empty() => Some(programs.id(conn, p)?),
            _ => None,
        };
        let container = containers.id_of(conn, c.container.as_ref())?;
        let cgroup = cgroups.id_of(conn, c.cgroup.as_ref())?;
        if stmt.execute(params![encode(c, program, container), cgroup])? == 1 {
            logged += 1;
        } else {
            duplicates += 1;
        }
    }
    Ok((logged, duplicates))
}

impl Store {
    /// The saved state of each of `keys` that has one.
    pub fn load_states(&self, keys: &[FlowKey]) -> Result<HashMap<FlowKey, FlowState>, StoreError> {
        load_states_on(&self.conn, keys).map_err(|e| self.wrap(e))
    }

    /// Write one flush of events in one transaction. `plan_for` gets the saved state of
    /// the `destroyed` flows, read inside the transaction (so no other writer can change
    /// it between the read and the write), and returns what to write.
    pub fn write_events(
        &mut self,
        destroyed: &[FlowKey],
        plan_for: impl FnOnce(&HashMap<FlowKey, FlowState>) -> EventWrite,
    ) -> Result<EventWriteOutcome, StoreError> {
        let path = self.path.clone();
        let wrap = |e| StoreError::from_sqlite(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(wrap)?;
        let prev = load_states_on(&tx, destroyed).map_err(wrap)?;
        let mut w = plan_for(&prev);
        // A destroyed flow is forgotten: never re-inserted, never marked missing.
        w.plan.upserts.clear();
        w.plan.missing.clear();
        let charged = !w.plan.usage.is_empty() || w.plan.totals.flows > 0;
        let pass_id = if charged {
            let id = insert_pass(&tx, &w.record, &w.plan).map_err(wrap)?;
            write_usage(&tx, w.record.started_at, &w.plan).map_err(wrap)?;
            write_users(&tx, w.record.started_at, &w.users).map_err(wrap)?;
            Some(id)
        } else {
            None
        };
        write_state(&tx, &w.plan).map_err(wrap)?;
        write_attributions(&tx, &w.attributions).map_err(wrap)?;
        let (logged, duplicates) = write_log(&tx, w.record.started_at, &w.log).map_err(wrap)?;
        #[cfg(feature = "test-hooks")]
        super::hooks::pause_before_commit(self.pause_in_flush, "flush");
        tx.commit().map_err(wrap)?;
        #[cfg(feature = "test-hooks")]
        super::hooks::committed(self.pause_in_flush, "flush");
        Ok(EventWriteOutcome {
            pass_id,
            logged,
            duplicates,
            not_logged: w.not_logged,
        })
    }

    /// Whether the database has the connection log table (schema 3 or later). A database
    /// only read since an older netledger wrote it has not been migrated yet.
    pub fn has_connection_log(&self) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'connection_log'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(|e| self.wrap(e))
    }

    /// The name recorded for `uid`, if any.
    pub fn user_name(&self, uid: u32) -> Result<Option<String>, StoreError> {
        self.conn
            .query_row("SELECT name FROM users WHERE uid = ?1", [uid], |r| r.get(0))
            .optional()
            .map(Option::flatten)
            .map_err(|e| self.wrap(e))
    }

    /// Logged connections that ended in `[since_ms, until_ms)`, oldest end first, with
    /// program names resolved. A record that does not decode is logged and skipped.
    pub fn connection_log(
        &self,
        since_ms: i64,
        until_ms: i64,
    ) -> Result<Vec<LoggedConnection>, StoreError> {
        let mut out = Vec::new();
        self.connection_log_each(since_ms, until_ms, |c| {
            out.push(c);
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// [`Store::connection_log`] handed to `f` one at a time as they are read (the log
    /// is keyed by end time: a period is one key range, read in order), in memory that
    /// does not grow with the period.
    pub fn connection_log_each<E: From<StoreError>>(
        &self,
        since_ms: i64,
        until_ms: i64,
        mut f: impl FnMut(LoggedConnection) -> Result<(), E>,
    ) -> Result<(), E> {
        let names = |sql: &str| -> Result<HashMap<i64, String>, StoreError> {
            let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.wrap(e))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| self.wrap(e))?;
            rows.collect::<rusqlite::Result<_>>()
                .map_err(|e| self.wrap(e))
        };
        let programs = names("SELECT id, name FROM programs")?;
        // A database read before migrating to schema 10 has no container in its records.
        let containers = match self.schema >= super::CONTAINER_SCHEMA {
            true => names("SELECT id, name FROM containers")?,
            false => HashMap::new(),
        };
        let cgroups = self.cgroups_by_id()?;
        let cgroup = match self.schema >= super::CGROUP_SCHEMA {
            true => "cgroup",
            false => "0",
        };
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT rec, {cgroup} FROM connection_log WHERE rec >= ?1 AND rec < ?2
                 ORDER BY rec"
            ))
            .map_err(|e| self.wrap(e))?;
        let mut rows = stmt
            .query(params![
                time_prefix(since_ms).to_vec(),
                time_prefix(until_ms).to_vec()
            ])
            .map_err(|e| self.wrap(e))?;
        let mut bad = 0usize;
        while let Some(row) = rows.next().map_err(|e| self.wrap(e))? {
            let rec = row
                .get_ref(0)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(|e| self.wrap(e))?;
            match decode(rec) {
                Ok(d) => {
                    let mut c = d.conn;
                    c.program = d.program.and_then(|p| programs.get(&p).cloned());
                    if let (Some(k), Some(id)) = (c.container.as_mut(), d.container) {
                        k.name = match containers.get(&id) {
                            Some(name) => name.as_str().into(),
                            None => format!("#{id}").into(),
                        };
                    }
                    let id: i64 = row.get(1).map_err(|e| self.wrap(e))?;
                    c.cgroup = cgroups.get(&id).cloned();
                    f(c)?;
                }
                Err(_) => bad += 1,
            }
        }
        if bad > 0 {
            tracing::warn!(
                records = bad,
                "connection log records that do not decode were skipped (written by a newer netledger?)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::OpenOptions;
    use crate::testkit::{counters, mirror, tuple, TCP, UDP};

    fn conn(i: u32) -> LoggedConnection {
        let orig = tuple(
            TCP,
            &format!("198.51.100.1:{}", 40000 + (i % 20000) as u16),
            "198.51.100.2:443",
        );
        LoggedConnection {
            cgroup: None,
            start_ms: 1_780_000_000_000 + i64::from(i) * 7,
            end_ms: 1_780_000_000_042 + i64::from(i) * 7,
            orig,
            reply: mirror(&orig),
            direction: Some(Direction::Out),
            uid: Some(1001),
            program: Some("curl".into()),
            orig_counters: Some(counters(9, 620)),
            reply_counters: Some(counters(16, 20_832)),
            zone: 0,
            via: None,
            container: None,
        }
    }

    #[test]
    fn round_trips_plain_nat_v6_and_bare_records() {
        let plain = conn(1);
        let mut nat = conn(2);
        nat.direction = Some(Direction::In);
        nat.orig = tuple(TCP, "192.0.2.9:50000", "203.0.113.7:80");
        nat.reply = tuple(TCP, "198.51.100.1:8080", "192.0.2.9:50000");
        nat.zone = 3;
        let mut v6 = conn(3);
        v6.orig = tuple(UDP, "[2001:db8::1]:40000", "[2001:db8::2]:53");
        v6.reply = mirror(&v6.orig);
        let mut icmp = conn(5);
        icmp.orig = tuple(1, "198.51.100.1:0", "198.51.100.2:0");
        icmp.reply = mirror(&icmp.orig);
        // An sshd session charged to its user through root's socket, with a zone.
        let mut ssh = conn(6);
        ssh.via = Some(0);
        ssh.uid = Some(1001);
        let mut ssh_zone = conn(7);
        ssh_zone.via = Some(33);
        ssh_zone.zone = 9;
        ssh_zone.program = None;
        let mut bare = conn(4);
        bare.direction = None;
        bare.uid = None;
        bare.program = None;
        bare.orig_counters = None;
        bare.reply_counters = None;
        // Found through a container's socket: alice (1001 on the host) is 1000 inside.
        let mut docker = conn(8);
        docker.container = Some(container("docker-3f2a", 1000));
        // The same with a zone, NAT, IPv6 and no counters, and a big container id.
        let mut ns = conn(9);
        ns.orig = tuple(TCP, "[2001:db8::1]:40000", "[2001:db8::2]:53");
        ns.reply = tuple(TCP, "[2001:db8::2]:53", "[2001:db8:1::1]:40000");
        ns.zone = 12;
        ns.program = None;
        ns.orig_counters = None;
        ns.reply_counters = None;
        ns.container = Some(container("netns:[4026532000]", 0));
        for (c, program, cont) in [
            (plain, Some(1), None),
            (nat, Some(300), None),
            (v6, Some(2), None),
            (icmp, Some(1), None),
            (ssh, Some(4), None),
            (ssh_zone, None, None),
            (bare, None, None),
            (docker, Some(1), Some(1)),
            (ns, None, Some(70_000)),
        ] {
            let rec = encode(&c, program, cont);
            let d = decode(&rec).unwrap();
            assert_eq!((d.program, d.container), (program, cont));
            let mut back = d.conn;
            back.program = c.program.clone().filter(|_| program.is_some());
            if let Some(k) = back.container.as_mut() {
                // The name is the reader's to look up by id.
                assert_eq!(&*k.name, "");
                k.name = c.container.as_ref().unwrap().name.clone();
            }
            assert_eq!(back, c);
        }
        assert_eq!(
            encode(&conn(1), Some(1), None).len(),
            29,
            "IPv4 TCP record size"
        );
        // A container costs the extension and protocol bytes and its two varints.
        let mut docker = conn(1);
        docker.container = Some(container("docker-3f2a", 1000));
        assert_eq!(encode(&docker, Some(1), Some(1)).len(), 29 + 2 + 1 + 2);
    }

    fn container(name: &str, inner_uid: u32) -> Container {
        Container {
            name: name.into(),
            inner_uid,
        }
    }

    /// Records written before schema 10 (no container bit) decode as they did: bytes as
    /// the schema 9 encoder wrote them, a plain record and one with a zone and a via uid.
    #[test]
    fn an_old_layout_record_still_decodes() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        for (rec, want) in [
            (OLD_PLAIN, conn(1)),
            (OLD_VIA_ZONE, {
                let mut c = conn(7);
                c.via = Some(33);
                c.zone = 9;
                c
            }),
        ] {
            let d = decode(&hex(rec)).unwrap();
            assert_eq!((d.program, d.container), (Some(1), None));
            let mut back = d.conn;
            back.program = Some("curl".into());
            assert_eq!(back, want);
        }
    }

    const OLD_PLAIN: &str = "11adf294312a31c6336401c63364029c4101bbe9070109ec0410e0a201";
    const OLD_VIA_ZONE: &str = "11adf2945b2af10606c6336401c63364029c4701bbe9070109ec0410e0a2010921";

    /// A record with the container bit cannot be read by a reader that does not know the
    /// bit; this one knows it, and refuses bits after it.
    #[test]
    fn an_unknown_extension_bit_is_refused() {
        let mut c = conn(1);
        c.zone = 1;
        let mut rec = encode(&c, None, None);
        // Flags at 5 + 1 (duration 42 ms is one varint byte); the extension byte follows.
        assert_eq!(rec[6] >> P_SHIFT, P_EXTENDED);
        rec[7] |= 1 << 4;
        assert_eq!(
            decode(&rec).unwrap_err(),
            BadRecord("unknown extension (written by a newer netledger?)")
        );
    }

    #[test]
    fn owners_written_after_new_respect_held_and_settled_flows() {
        use crate::account::FlowState;
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
        let key = |id| FlowKey {
            zone: 0,
            orig: tuple(
                TCP,
                &format!("198.51.100.2:{}", 50000 + id as u16),
                "198.51.100.1:22",
            ),
            id,
        };
        let a = |uid, via| {
            Some(Attribution {
                cgroup: None,
                uid,
                program: Some("sshd".into()),
                direction: Direction::In,
                via,
                container: None,
            })
        };
        let st = |id, bytes, attribution| FlowState {
            key: key(id),
            orig: Counters { packets: 1, bytes },
            reply: Counters { packets: 1, bytes },
            attribution,
            first_seen: 100,
            last_seen: 100,
            missing: 0,
            start_ns: None,
        };
        // 1 held (last seen 500, none charged); 2 charged unattributed (500);
        // 3 settled for alice; 4 unknown yet.
        let plan = crate::account::PassPlan {
            upserts: vec![
                st(1, 500, a(0, Via::Pending)),
                st(2, 500, None),
                st(3, 500, a(1001, Via::Delegated(0))),
            ],
            ..Default::default()
        };
        store
            .write_pass(&PassRecord::default(), &plan, &[])
            .unwrap();
        let write = |store: &mut Store, states: Vec<FlowState>| {
            store
                .write_events(&[], |_| EventWrite {
                    attributions: states,
                    ..EventWrite::default()
                })
                .unwrap();
        };
        write(
            &mut store,
            vec![
                st(1, 0, a(1001, Via::Delegated(0))),
                st(2, 0, a(0, Via::Pending)),
                st(3, 0, a(0, Via::Pending)),
                st(4, 0, a(0, Via::Pending)),
            ],
        );
        let s = store.load_state().unwrap();
        let got = |id| {
            let x = &s[&key(id)];
            let a = x.attribution.as_ref().unwrap();
            (x.orig.bytes, a.uid, a.via)
        };
        // Held, then its user found: nothing was charged, so the next charge is all of it.
        assert_eq!(got(1), (0, 1001, Via::Delegated(0)));
        // Charged already: never pending again (it would be charged twice from zero).
        assert_eq!(got(2), (500, 0, Via::Own));
        // Settled by a pass first: kept.
        assert_eq!(got(3), (500, 1001, Via::Delegated(0)));
        assert_eq!(got(4), (0, 0, Via::Pending));
    }

    #[test]
    fn records_sort_by_end_time_and_bad_ones_are_refused() {
        let (a, b) = (conn(1), conn(200));
        assert!(encode(&a, None, None) < encode(&b, None, None));
        let rec = encode(&a, Some(1), None);
        assert!(decode(&rec[..rec.len() - 1]).is_err());
        let mut long = rec.clone();
        long.push(0);
        assert!(decode(&long).is_err());
    }

    /// ctrecorder needed 40 bytes per "squeezed" connection (start + end, both tuples, no
    /// counters, no owner). Measured here with SQLite's own page accounting (`dbstat`),
    /// every connection with a cgroup (one of 50 sessions' scopes): the `cgroup` column of
    /// migration 0016 costs 2 bytes a row (a header byte and a 1-byte id), 1 without one.
    #[test]
    fn log_bytes_per_connection() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("log.db"), &OpenOptions::default()).unwrap();
        const N: u32 = 10_000;
        let with_cgroup = |i: u32| LoggedConnection {
            cgroup: Some(Cgroup {
                path: format!("/user.slice/user-1001.slice/session-{}.scope", i % 50).into(),
                job: None,
            }),
            ..conn(i)
        };
        for chunk in (0..N).collect::<Vec<_>>().chunks(1000) {
            store
                .write_events(&[], |_| EventWrite {
                    log: chunk.iter().map(|i| with_cgroup(*i)).collect(),
                    ..EventWrite::default()
                })
                .unwrap();
        }
        let (pages, page_size, payload): (i64, i64, i64) = store
            .conn()
            .query_row(
                "SELECT count(*), max(pgsize), sum(payload) FROM dbstat WHERE name = 'connection_log'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        let per = (pages * page_size) as f64 / f64::from(N);
        eprintln!(
            "connection_log: {N} rows, {pages} pages of {page_size} B = {per:.1} B per \
             connection (payload {:.1} B)",
            payload as f64 / f64::from(N)
        );
        assert!(per < 42.0, "{per:.1} bytes per logged connection");
        let back = store.connection_log(0, i64::MAX).unwrap();
        assert_eq!(back.len(), N as usize);
        assert_eq!(back[7], with_cgroup(7));
        // Writing the same connections again stores nothing twice.
        let out = store
            .write_events(&[], |_| EventWrite {
                log: (0..10).map(conn).collect(),
                ..EventWrite::default()
            })
            .unwrap();
        assert_eq!((out.logged, out.duplicates), (0, 10));
    }
}
