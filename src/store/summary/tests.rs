use super::*;
use crate::attribute::Attribution;
use crate::model::{Counters, Tuple};
use crate::testkit::{self, TCP};
use std::net::IpAddr;

const DAY: i64 = 1_773_100_800; // 2026-03-10T00:00:00Z

/// TCP from 198.51.100.1:`sport` to 198.51.100.2:`dport`.
fn tuple(sport: u16, dport: u16) -> Tuple {
    testkit::tuple(
        TCP,
        &format!("198.51.100.1:{sport}"),
        &format!("198.51.100.2:{dport}"),
    )
}

fn state(id: u32, uid: u32, first_seen: i64, missing: u32) -> (FlowKey, FlowState) {
    let key = FlowKey {
        zone: 0,
        orig: tuple(40000 + id as u16, 443),
        id,
    };
    let s = FlowState {
        key,
        orig: Counters::default(),
        reply: Counters::default(),
        attribution: Some(Attribution {
            cgroup: None,
            uid,
            program: None,
            direction: Direction::Out,
            via: crate::attribute::Via::Direct,
            container: None,
        }),
        first_seen,
        last_seen: first_seen,
        missing,
        start_ns: None,
    };
    (key, s)
}

fn logged(start_ms: i64, end_ms: i64, uid: u32) -> LoggedConnection {
    LoggedConnection {
        cgroup: None,
        start_ms,
        end_ms,
        orig: tuple(40100, 443),
        reply: testkit::mirror(&tuple(40100, 443)),
        direction: Some(Direction::Out),
        uid: Some(uid),
        program: None,
        orig_counters: Some(Counters {
            packets: 1,
            bytes: 100,
        }),
        reply_counters: Some(Counters {
            packets: 2,
            bytes: 2_000,
        }),
        zone: 0,
        via: None,
        container: None,
    }
}

#[test]
fn the_live_table_turns_open_flows_closed_since_into_pending() {
    let states: HashMap<FlowKey, FlowState> = [
        state(1, 1001, DAY + 10, 0),
        state(2, 1001, DAY + 20, 0),
        state(3, 1001, DAY + 30, 0),
        // Gone from the last dump: neither open nor pending.
        state(4, 1001, DAY + 40, 1),
        // The day before, and another user's.
        state(5, 1001, DAY - 1, 0),
        state(6, 1002, DAY + 60, 0),
    ]
    .into_iter()
    .collect();
    let closed = |k: &FlowKey| match k.id {
        2 => Some(Some(DAY * 1000 + 90_000)),
        3 => Some(None),
        6 => Some(Some(DAY * 1000 + 999_000)),
        _ => None,
    };
    let mut s = DaySummary::default();
    add_open(&mut s, &states, DAY, DAY + 86_400, Some(1001), &closed);
    let rows: Vec<(u16, u64, u64, u64)> = s
        .rows
        .iter()
        .map(|(k, r)| (k.port, r.count, r.open, r.pending))
        .collect();
    // One key (same user, protocol, port and remote): three flows, one open.
    assert_eq!(rows, [(443, 3, 1, 2)]);
    assert_eq!((s.pending, s.pending_until), (2, Some(DAY * 1000 + 90_000)));
    assert_eq!(s.rows.values().next().unwrap().avg_seconds(), 0.0);
}

#[test]
fn a_packed_key_is_the_key() {
    let remotes = [
        "0.0.0.0",
        "255.255.255.255",
        "::",
        "::ffff:1.2.3.4",
        "1.2.3.4",
    ];
    let remotes = remotes.map(|r| r.parse::<IpAddr>().unwrap()).to_vec();
    let mut remotes = remotes;
    remotes.push(IpAddr::from([0xffff; 8]));
    let mut keys = std::collections::HashSet::new();
    for uid in [None, Some(0), Some(1), Some(u32::MAX)] {
        for protocol in [0, 6, 255] {
            for port in [0, 443, 65535] {
                for &remote in &remotes {
                    let raw = RawKey::new(uid, protocol, port, remote);
                    let key = Key {
                        uid,
                        protocol,
                        port,
                        remote: remote.to_string(),
                    };
                    assert_eq!(raw.key(), key);
                    assert!(keys.insert(raw), "{key:?} packed as another");
                }
            }
        }
    }
}

#[test]
fn finished_connections_count_on_the_day_they_started() {
    let log = [
        logged(DAY * 1000 - 1, DAY * 1000 + 5_000, 1001),
        logged(DAY * 1000, DAY * 1000 + 3_000, 1001),
        logged(DAY * 1000 + 10_000, DAY * 1000 + 11_000, 1001),
        logged((DAY + 86_400) * 1000, (DAY + 86_400) * 1000 + 1, 1001),
        logged(DAY * 1000, DAY * 1000 + 60_000, 1002),
    ];
    let mut s = DaySummary::default();
    add_finished(&mut s, &log, DAY, DAY + 86_400, Some(1001));
    let r = s.rows.values().next().unwrap();
    assert_eq!(s.rows.len(), 1);
    assert_eq!((r.count, r.total_ms, r.max_ms), (2, 4_000, 3_000));
    assert_eq!((r.rx_bytes, r.tx_bytes), (4_000, 200));
    assert_eq!(r.avg_seconds(), 2.0);
}

/// The finished connections' rows as `summary` counted them before it streamed the
/// log (one `Key` per connection, straight into the map).
fn reference_finished(
    log: &[LoggedConnection],
    start: i64,
    end: i64,
    uid: Option<u32>,
) -> BTreeMap<Key, Row> {
    let mut rows: BTreeMap<Key, Row> = BTreeMap::new();
    for c in log {
        if c.start_ms < start * 1000 || c.start_ms >= end * 1000 {
            continue;
        }
        if uid.is_some() && c.uid != uid {
            continue;
        }
        let (remote, port) = match c.direction {
            Some(Direction::In) => (c.orig.src, c.reply.sport),
            _ => (c.orig.dst, c.orig.dport),
        };
        let t = Traffic::of_counters(c.orig_counters, c.reply_counters, c.direction);
        let r = rows
            .entry(Key {
                uid: c.uid,
                protocol: c.orig.proto,
                port,
                remote: remote.to_string(),
            })
            .or_default();
        r.count += 1;
        r.total_ms += c.duration_ms();
        r.max_ms = r.max_ms.max(c.duration_ms());
        r.rx_bytes += t.rx_bytes;
        r.tx_bytes += t.tx_bytes;
    }
    rows
}

/// The day's records are read in two halves on two connections: the connections that
/// ended at the milliseconds around where they meet, and around the end of the short
/// ones, are each counted once.
#[test]
fn the_halves_of_a_day_meet_without_a_gap_or_an_overlap() {
    use crate::store::connections::EventWrite;
    use crate::store::{OpenOptions, PassRecord};
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        crate::store::Store::open(&dir.path().join("s.db"), &OpenOptions::default()).unwrap();
    let (start, end) = (DAY * 1000, (DAY + 86_400) * 1000);
    let mid = midpoint(start, end + LONG_MS);
    let mut log = vec![];
    for d in -3..=3 {
        // Started within the day: ended at its start, around the middle (20 s long),
        // and around the end of the short ones (an hour long, past the day).
        log.push(logged(start, start + 3 + d, 1001));
        log.push(logged(mid + d - 20_000, mid + d, 1001));
        log.push(logged(
            end + LONG_MS + d - 3_600_000,
            end + LONG_MS + d,
            1001,
        ));
    }
    let record = PassRecord {
        started_at: DAY,
        mode: "run",
        ..PassRecord::default()
    };
    store
        .write_events(&[], |_| EventWrite {
            record,
            plan: Default::default(),
            users: vec![],
            attributions: vec![],
            log: log.clone(),
            not_logged: Default::default(),
        })
        .unwrap();
    let streamed = store
        .day_summary(DAY, DAY + 86_400, None, &|_| None)
        .unwrap();
    let reference = reference_finished(&log, DAY, DAY + 86_400, None);
    assert_eq!(streamed.rows, reference);
    assert_eq!(streamed.rows.values().map(|r| r.count).sum::<u64>(), 21);
}

/// The day's summary read from the stored log as it streams equals the one counted
/// from every logged connection: random connections of three days (IPv4 and IPv6,
/// both directions, with and without owner or counters, long ones across midnight).
#[test]
fn a_streamed_day_equals_the_day_counted_from_the_whole_log() {
    use crate::store::connections::EventWrite;
    use crate::store::{OpenOptions, PassRecord};
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        crate::store::Store::open(&dir.path().join("s.db"), &OpenOptions::default()).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for batch in 0..30 {
        let mut log = vec![];
        for _ in 0..200 {
            let start_ms = (DAY - 86_400) * 1000 + below(3 * 86_400_000) as i64;
            // Some long (up to three days: read apart since schema 13), some at the
            // edge of long (2^21 ms), the rest short.
            let duration = match below(20) {
                0 | 1 => below(3 * 86_400_000) as i64,
                2 => LONG_MS - 1 + below(3) as i64,
                3 => LONG_MS - 1000 + below(2000) as i64,
                _ => below(90_000) as i64,
            };
            let end_ms = start_ms + duration;
            let mut c = logged(start_ms, end_ms, 1000 + below(3) as u32);
            let remote = below(6);
            let (a, b): (IpAddr, IpAddr) = match below(3) {
                0 => (
                    "2001:db8::1".parse().unwrap(),
                    format!("2001:db8::{}", 100 + remote).parse().unwrap(),
                ),
                _ => (
                    "198.51.100.1".parse().unwrap(),
                    format!("198.51.100.{}", 100 + remote).parse().unwrap(),
                ),
            };
            let (sport, dport) = (
                40_000 + below(1000) as u16,
                [22, 443, 53][below(3) as usize],
            );
            c.orig = Tuple {
                src: a,
                dst: b,
                proto: [6, 17][below(2) as usize],
                sport,
                dport,
            };
            c.reply = testkit::mirror(&c.orig);
            c.direction = [Some(Direction::Out), Some(Direction::In), None][below(3) as usize];
            if below(8) == 0 {
                c.uid = None;
            }
            if below(8) == 0 {
                (c.orig_counters, c.reply_counters) = (None, None);
            }
            log.push(c);
        }
        let record = PassRecord {
            started_at: DAY + batch,
            mode: "run",
            ..PassRecord::default()
        };
        store
            .write_events(&[], |_| EventWrite {
                record,
                plan: Default::default(),
                users: vec![],
                attributions: vec![],
                log,
                not_logged: Default::default(),
            })
            .unwrap();
    }
    let whole = store.connection_log(0, i64::MAX).unwrap();
    assert!(whole.len() > 5000, "{} logged", whole.len());
    let none = |_: &FlowKey| None;
    let mut compared = 0;
    let long = whole.iter().filter(|c| c.duration_ms() >= LONG_MS).count();
    let indexed: usize = store
        .conn
        .query_row(
            "SELECT count(*) FROM connection_log INDEXED BY connection_log_long
                 WHERE substr(rec, 6, 1) >= x'80' AND substr(rec, 7, 1) >= x'80'
                   AND substr(rec, 8, 1) >= x'80'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        indexed, long,
        "the index holds the long connections, only them"
    );
    assert!(long > 300, "{long} long");
    // Days before, in, between and after the log (the last ones empty), and days
    // whose edges are not midnight; through the index and, as an unmigrated database
    // is read, to the log's end.
    let schema = store.schema;
    for day in (-2..6)
        .map(|d| DAY + d * 86_400)
        .chain([DAY + 3_600, DAY + 86_399])
    {
        for uid in [None, Some(1001)] {
            let reference = reference_finished(&whole, day, day + 86_400, uid);
            for s in [schema, super::super::LONG_LOG_SCHEMA - 1] {
                store.schema = s;
                let streamed = store.day_summary(day, day + 86_400, uid, &none).unwrap();
                assert_eq!(streamed.rows, reference, "day {day} uid {uid:?} schema {s}");
            }
            store.schema = schema;
            compared += reference.len();
        }
    }
    assert!(compared > 400, "{compared} rows compared");
}
