//! The read behind `summary`: a day's connections per user, protocol, service port and
//! remote (constat's daily overview). Finished connections come from the connection log;
//! open ones from the saved flow state, i.e. the flows the last pass or event saw alive,
//! less those the caller knows closed (the live conntrack table shows TCP connections in
//! TIME_WAIT or CLOSE): finished but not logged yet, counted in N and apart.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use std::path::Path;

use rusqlite::{params, OpenFlags};

use super::connections::{decode, time_prefix, LoggedConnection};
use super::{Store, StoreError};
use crate::account::{FlowState, Traffic};
use crate::attribute::Direction;
use crate::model::FlowKey;

/// A summary row's grouping key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    /// Owner (None: unknown).
    pub uid: Option<u32>,
    /// IP protocol number.
    pub protocol: u8,
    /// Service port (remote port of outgoing connections, local of incoming).
    pub port: u16,
    /// Remote address.
    pub remote: String,
}

/// A summary row's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Row {
    /// Connections started that day (finished or still open).
    pub count: u64,
    /// Of those, still open.
    pub open: u64,
    /// Of those, closed but not in the log yet (their conntrack entries linger): no
    /// duration yet.
    pub pending: u64,
    /// Sum of the finished ones' durations, ms.
    pub total_ms: i64,
    /// Longest finished duration, ms.
    pub max_ms: i64,
    /// Bytes received and sent by the finished ones.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

impl Row {
    /// Average duration of the logged connections, seconds.
    pub fn avg_seconds(&self) -> f64 {
        let finished = self.count - self.open - self.pending;
        if finished == 0 {
            0.0
        } else {
            self.total_ms as f64 / finished as f64 / 1000.0
        }
    }
}

/// A day's summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DaySummary {
    /// The rows, by key.
    pub rows: BTreeMap<Key, Row>,
    /// Connections closed but not logged yet, over all rows.
    pub pending: u64,
    /// When the last of their conntrack entries expires, ms since the epoch, if known.
    pub pending_until: Option<i64>,
}

/// Connections that lasted this long or longer (2^21 ms, about 35 minutes) are the long
/// ones of `migrations/0013_connection_log_long.sql`: their duration's varint takes 4 bytes
/// or more.
const LONG_MS: i64 = 1 << 21;

/// A summary row's key while counting, packed into three words (hashed in three
/// multiplies, compared in three, 24 bytes: a busy day is a million lookups): the uid
/// (0: none, else uid + 1), protocol, port and the address family in the first, the
/// remote address in the other two. The remote is turned into text once per row at the
/// end rather than once per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct RawKey(u64, u64, u64);

impl RawKey {
    fn new(uid: Option<u32>, protocol: u8, port: u16, remote: IpAddr) -> RawKey {
        let (v6, addr) = match remote {
            IpAddr::V4(a) => (0, u128::from(u32::from(a))),
            IpAddr::V6(a) => (1, u128::from(a)),
        };
        let uid = uid.map_or(0, |u| u64::from(u) + 1);
        RawKey(
            uid << 25 | u64::from(protocol) << 17 | u64::from(port) << 1 | v6,
            (addr >> 64) as u64,
            addr as u64,
        )
    }

    fn key(self) -> Key {
        let RawKey(a, high, low) = self;
        let addr = u128::from(high) << 64 | u128::from(low);
        let remote = match a & 1 {
            0 => IpAddr::from(std::net::Ipv4Addr::from(addr as u32)),
            _ => IpAddr::from(std::net::Ipv6Addr::from(addr)),
        };
        Key {
            uid: (a >> 25).checked_sub(1).map(|u| u as u32),
            protocol: (a >> 17) as u8,
            port: (a >> 1) as u16,
            remote: remote.to_string(),
        }
    }
}

/// A summary row's numbers of finished connections while counting (a [`Row`] less what
/// only open ones have: 40 bytes, so that a key and its tally are one cache line).
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    total_ms: i64,
    max_ms: i64,
    rx_bytes: u64,
    tx_bytes: u64,
}

impl Tally {
    fn add(&mut self, t: &Tally) {
        self.count += t.count;
        self.total_ms += t.total_ms;
        self.max_ms = self.max_ms.max(t.max_ms);
        self.rx_bytes += t.rx_bytes;
        self.tx_bytes += t.tx_bytes;
    }
}

/// Rows while counting, hashed with [`FxHasher`]: a busy day's million connections are
/// a million lookups, and SipHash was a quarter of the summary's time.
type Counted = HashMap<RawKey, Tally, std::hash::BuildHasherDefault<FxHasher>>;

/// The Firefox/rustc hash (multiply and rotate per word): fast on small keys, fine for
/// keys that no one outside chooses to collide (the host's own connections).
#[derive(Default)]
struct FxHasher(u64);

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        for b in chunks.remainder() {
            self.add(u64::from(*b));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u16(&mut self, i: u16) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The last multiply leaves the low bits, which pick the bucket, depending on the
        // low bits of the input only: fold the high bits down.
        self.0 ^ (self.0 >> 29)
    }
}

/// One finished connection's key and tally if it started in `[start, end)` (epoch
/// seconds) and is `uid`'s when given.
fn finished(
    c: &LoggedConnection,
    start: i64,
    end: i64,
    uid: Option<u32>,
) -> Option<(RawKey, Tally)> {
    if c.start_ms < start * 1000 || c.start_ms >= end * 1000 {
        return None;
    }
    if uid.is_some() && c.uid != uid {
        return None;
    }
    let (remote, port) = match c.direction {
        Some(Direction::In) => (c.orig.src, c.reply.sport),
        _ => (c.orig.dst, c.orig.dport),
    };
    let t = Traffic::of_counters(c.orig_counters, c.reply_counters, c.direction);
    let tally = Tally {
        count: 1,
        total_ms: c.duration_ms(),
        max_ms: c.duration_ms(),
        rx_bytes: t.rx_bytes,
        tx_bytes: t.tx_bytes,
    };
    Some((RawKey::new(c.uid, c.orig.proto, port, remote), tally))
}

/// Finished connections counted a batch at a time: the rows of a busy day do not fit in
/// the CPU's nearest caches, and a lookup waits for memory; one after another, without
/// the reading and decoding between them, the lookups of a batch wait together.
#[derive(Default)]
struct Counter {
    rows: Counted,
    batch: Vec<(RawKey, Tally)>,
}

impl Counter {
    const BATCH: usize = 64;

    fn add(&mut self, one: Option<(RawKey, Tally)>) {
        if let Some(one) = one {
            self.batch.push(one);
            if self.batch.len() == Self::BATCH {
                self.count();
            }
        }
    }

    fn count(&mut self) {
        for (key, t) in self.batch.drain(..) {
            self.rows.entry(key).or_default().add(&t);
        }
    }

    /// Add another counter's rows to this one's.
    fn absorb(&mut self, mut other: Counter) {
        other.count();
        for (key, t) in other.rows {
            self.rows.entry(key).or_default().add(&t);
        }
    }

    /// Add the counted rows to the summary's.
    fn merge_into(mut self, summary: &mut DaySummary) {
        self.count();
        for (key, n) in self.rows {
            let r = summary.rows.entry(key.key()).or_default();
            r.count += n.count;
            r.total_ms += n.total_ms;
            r.max_ms = r.max_ms.max(n.max_ms);
            r.rx_bytes += n.rx_bytes;
            r.tx_bytes += n.tx_bytes;
        }
    }
}

/// Count the finished connections of `log` that started in `[start, end)` (epoch
/// seconds), of `uid` only when given (pure).
pub fn add_finished(
    summary: &mut DaySummary,
    log: &[LoggedConnection],
    start: i64,
    end: i64,
    uid: Option<u32>,
) {
    let mut counter = Counter::default();
    for c in log {
        counter.add(finished(c, start, end, uid));
    }
    counter.merge_into(summary);
}

/// Count the flows of `states` alive at the last sighting that began in `[start, end)`,
/// of `uid` only when given (pure). `closed` says which of them the live table shows
/// closed, with when their entry expires (ms, if known): those are pending, not open.
pub fn add_open<S: std::hash::BuildHasher>(
    summary: &mut DaySummary,
    states: &HashMap<FlowKey, FlowState, S>,
    start: i64,
    end: i64,
    uid: Option<u32>,
    closed: &dyn Fn(&FlowKey) -> Option<Option<i64>>,
) {
    for s in states.values() {
        if s.missing > 0 || s.first_seen < start || s.first_seen >= end {
            continue;
        }
        let owner = s.attribution.as_ref();
        if uid.is_some() && owner.map(|a| a.uid) != uid {
            continue;
        }
        let o = &s.key.orig;
        // Only the original tuple is saved: an incoming flow's service port is its
        // pre-NAT destination port.
        let remote = match owner.map(|a| a.direction) {
            Some(Direction::In) => o.src,
            _ => o.dst,
        };
        let r = summary
            .rows
            .entry(Key {
                uid: owner.map(|a| a.uid),
                protocol: o.proto,
                port: o.dport,
                remote: remote.to_string(),
            })
            .or_default();
        r.count += 1;
        match closed(&s.key) {
            Some(expires) => {
                r.pending += 1;
                summary.pending += 1;
                summary.pending_until = summary.pending_until.max(expires);
            }
            None => r.open += 1,
        }
    }
}

/// The statements that read the connection log for `summary`: the records that ended
/// between two times, and of those the long connections only (through their index).
const SHORT_SQL: &str = "SELECT rec FROM connection_log WHERE rec >= ?1 AND rec < ?2";
const LONG_SQL: &str = "SELECT rec FROM connection_log INDEXED BY connection_log_long
     WHERE rec >= ?1 AND rec < ?2
       AND substr(rec, 6, 1) >= x'80' AND substr(rec, 7, 1) >= x'80'
       AND substr(rec, 8, 1) >= x'80'";

/// A part of the connection log to read: a statement, and the end times (ms since the
/// epoch) between which it reads.
type Part = (&'static str, i64, i64);

/// Which connections to count: those that started in `[start, end)` (epoch seconds), of
/// the uid only when given.
type Filter = (i64, i64, Option<u32>);

/// Count the finished connections of a part of the log that `filter` keeps; returns how
/// many records did not decode.
fn count_logged(
    conn: &rusqlite::Connection,
    (sql, from, to): Part,
    counter: &mut Counter,
    (start, end, uid): Filter,
) -> rusqlite::Result<usize> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(params![
        time_prefix(from).to_vec(),
        time_prefix(to).to_vec()
    ])?;
    let mut bad = 0;
    while let Some(row) = rows.next()? {
        match decode(row.get_ref(0)?.as_blob()?) {
            Ok(d) => counter.add(finished(&d.conn, start, end, uid)),
            Err(_) => bad += 1,
        }
    }
    Ok(bad)
}

/// Where the day's records are split in halves (ms), between `from` and `to`.
fn midpoint(from: i64, to: i64) -> i64 {
    from / 2 + to / 2
}

/// [`count_logged`] through a connection of its own to the database at `path` (read-only),
/// for another thread.
fn count_apart(path: &Path, part: Part, filter: Filter) -> Result<(Counter, usize), StoreError> {
    let wrap = |e| StoreError::from_sqlite(path, e);
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(wrap)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(wrap)?;
    let mut counter = Counter::default();
    let bad = count_logged(&conn, part, &mut counter, filter).map_err(wrap)?;
    Ok((counter, bad))
}

impl Store {
    /// The connections that started in `[start, end)` (epoch seconds), of `uid` only when
    /// given; `closed` as for [`add_open`].
    pub fn day_summary(
        &self,
        start: i64,
        end: i64,
        uid: Option<u32>,
        closed: &dyn Fn(&FlowKey) -> Option<Option<i64>>,
    ) -> Result<DaySummary, StoreError> {
        let mut summary = DaySummary::default();
        // Finished: started that day, ended then or later. A busy host logs over a
        // million connections a day: they are counted as they are read, not collected.
        // Since schema 13 the log after the day is read only for its long connections
        // (migrations/0013_connection_log_long.sql); an older database is read to its end.
        let from = start.saturating_mul(1000);
        let (mine, theirs) = match self.schema >= super::LONG_LOG_SCHEMA {
            // The day's records in two halves read at once, the second on another thread
            // through a connection of its own: reading and decoding 1.4 M records is the
            // summary's time on a busy day (issue 26).
            true => {
                let short_end = end.saturating_mul(1000).saturating_add(LONG_MS);
                let mid = midpoint(from, short_end);
                let long = (LONG_SQL, short_end, i64::MAX);
                (
                    vec![(SHORT_SQL, from, mid), long],
                    Some((SHORT_SQL, mid, short_end)),
                )
            }
            false => (vec![(SHORT_SQL, from, i64::MAX)], None),
        };
        let filter = (start, end, uid);
        let path = self.path.as_path();
        let (counter, bad) = std::thread::scope(|scope| {
            let other = theirs
                .filter(|&(_, from, to)| from < to)
                .map(|part| scope.spawn(move || count_apart(path, part, filter)));
            let mut counter = Counter::default();
            let mut bad = 0;
            for part in mine.into_iter().filter(|&(_, from, to)| from < to) {
                bad += count_logged(&self.conn, part, &mut counter, filter)
                    .map_err(|e| self.wrap(e))?;
            }
            if let Some(other) = other {
                let (theirs, b) = other.join().expect("counting does not panic")?;
                counter.absorb(theirs);
                bad += b;
            }
            Ok::<_, StoreError>((counter, bad))
        })?;
        if bad > 0 {
            tracing::warn!(
                records = bad,
                "connection log records that do not decode were skipped (written by a newer netledger?)"
            );
        }
        counter.merge_into(&mut summary);
        add_open(&mut summary, &self.load_state()?, start, end, uid, closed);
        Ok(summary)
    }
}

#[cfg(test)]
mod tests;
