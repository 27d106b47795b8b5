use std::collections::HashMap;

use super::*;
use crate::account::{account_pass, Kind, PassPlan, Traffic, UsageKey};
use crate::attribute::Reason;
use crate::attribute::{Attributed, Attribution, Direction, Verdict};
use crate::model::Flow;
use crate::store::connections::{EventWrite, LoggedConnection};
use crate::store::{OpenOptions, PassRecord};
use crate::testkit::{counters, flow, mirror, tuple, TCP};

const T0: i64 = 1_790_000_000; // 2026-09-21

/// Ten days of passes every 20 minutes: three users, a few remotes and programs,
/// flows that grow, and one that restarts every day.
fn build(store: &mut Store) {
    let mut id = 0;
    for step in 0..(10 * 72) {
        let ts = T0 + step * 1200;
        let mut flows = vec![];
        let mut ats = vec![];
        for uid in [1001u32, 1002, 1003] {
            for remote in 0..3u8 {
                id += 1;
                let dst = format!("198.51.100.{}", 10 + remote);
                let sport = 40000 + (uid as u16 % 100) * 10 + u16::from(remote);
                let (tx, rx) = (
                    100 * uid as u64 + step as u64,
                    1000 + u64::from(remote) * 7 + step as u64 * 3,
                );
                flows.push(Flow {
                    id,
                    orig_counters: Some(counters(1 + step as u64, tx)),
                    reply_counters: Some(counters(2, rx)),
                    ..flow(
                        TCP,
                        (&format!("198.51.100.1:{sport}"), &format!("{dst}:443")),
                        None,
                    )
                });
                ats.push(Attributed {
                    verdict: Verdict::User(Attribution {
                        cgroup: None,
                        uid,
                        program: Some(format!("prog{}", remote % 2)),
                        direction: Direction::Out,
                        via: Default::default(),
                        container: None,
                    }),
                    direction: Some(Direction::Out),
                    remote: dst.parse().unwrap(),
                    port: 443,
                });
            }
        }
        let prev = store.load_state().unwrap();
        let plan = account_pass(ts, &flows, &ats, &prev, 3);
        let rec = PassRecord {
            started_at: ts,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &[]).unwrap();
    }
}

/// (UTC day, uid) → (rx bytes, tx bytes, rx packets, tx packets).
type Daily = HashMap<(String, Option<u32>), (i64, i64, i64, i64)>;

fn daily(store: &Store) -> Daily {
    let mut st = store
        .conn()
        .prepare("SELECT period, uid, rx_bytes, tx_bytes, rx_packets, tx_packets FROM usage_daily")
        .unwrap();
    st.query_map([], |r| {
        Ok((
            (r.get(0)?, r.get(1)?),
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn count(store: &Store, sql: &str) -> i64 {
    store.conn().query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn rollups_keep_every_users_daily_totals_and_run_in_bounded_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("r.db"), &OpenOptions::default()).unwrap();
    build(&mut store);
    let before = daily(&store);
    let raw_before = count(&store, "SELECT count(*) FROM usage");
    assert!(raw_before > 5000);
    let end = T0 + 10 * DAY;

    // Raw older than 3 days → hourly, in steps of at most ~500 rows.
    let r = Retention {
        raw: Duration::from_secs(3 * DAY as u64),
        hourly: Duration::from_secs(6 * DAY as u64),
        ..Retention::default()
    };
    let mut steps = 0;
    loop {
        let st = store.roll_up(end, &r, 500).unwrap();
        steps += 1;
        assert_eq!(daily(&store), before, "totals moved during step {steps}");
        if !st.behind {
            break;
        }
    }
    assert!(steps > 2, "bounded: took {steps} steps");
    let hours = count(
        &store,
        "SELECT count(*) FROM usage_rollup WHERE granularity = 'hour'",
    );
    let days = count(
        &store,
        "SELECT count(*) FROM usage_rollup WHERE granularity = 'day'",
    );
    assert!(hours > 0 && days > 0, "hours {hours} days {days}");
    assert!(
        count(&store, "SELECT count(*) FROM usage") < raw_before,
        "raw rows were rolled up"
    );
    assert_eq!(
        count(
            &store,
            &format!(
                "SELECT count(*) FROM usage WHERE ts < {}",
                end - 3 * DAY - HOUR
            )
        ),
        0
    );
    // Idempotent: nothing left to do.
    let st = store.roll_up(end, &r, 500).unwrap();
    assert_eq!((st.raw_rows, st.hourly_rows), (0, 0));

    // Far in the future everything is daily, still with the same totals.
    let st = store
        .roll_up(end + 400 * DAY, &Retention::default(), u64::MAX)
        .unwrap();
    assert!(!st.behind);
    assert_eq!(daily(&store), before);
    assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM usage_rollup WHERE granularity = 'hour'"
        ),
        0
    );
    assert_eq!(count(&store, "SELECT count(*) FROM passes"), 0);
    // A daily retention drops what is older.
    let r = Retention {
        daily: Some(Duration::from_secs(5 * DAY as u64)),
        ..Retention::default()
    };
    let st = store.roll_up(T0 + 10 * DAY, &r, u64::MAX).unwrap();
    assert!(st.daily_dropped > 0);
}

/// (UTC hour, uid) → (rx bytes, tx bytes, rx packets, tx packets).
fn hourly_totals(store: &Store) -> Daily {
    let mut st = store
        .conn()
        .prepare(
            "SELECT ts / 3600, uid, sum(rx_bytes), sum(tx_bytes), sum(rx_packets),
                    sum(tx_packets)
             FROM usage_all WHERE kind <> 'excluded' GROUP BY 1, 2",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok((
            (r.get::<_, i64>(0)?.to_string(), r.get(1)?),
            (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn hourly_tier_keeps_each_users_top_keys_and_folds_the_rest_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("t.db"), &OpenOptions::default()).unwrap();
    // Two hours of passes every minute: two users, 30 remotes each, remote i carrying
    // (i + 1) x 1000 bytes a minute, plus unattributed traffic to 12 remotes.
    let usage_at = |store: &mut Store, minute: i64| {
        let mut plan = PassPlan::default();
        for uid in [1001u32, 1002] {
            for i in 0..30u32 {
                plan.usage.insert(
                    UsageKey {
                        cgroup: None,
                        kind: Kind::User,
                        uid: Some(uid),
                        program: Some("curl".into()),
                        reason: None,
                        via: None,
                        container: None,
                        protocol: 6,
                        direction: Some(Direction::Out),
                        remote: format!("198.51.100.{i}").parse().unwrap(),
                        port: 443,
                    },
                    Traffic {
                        rx_bytes: u64::from(i + 1) * 1000,
                        tx_bytes: u64::from(uid - 1000),
                        rx_packets: 2,
                        tx_packets: 1,
                    },
                );
            }
        }
        for i in 0..12u32 {
            plan.usage.insert(
                UsageKey {
                    cgroup: None,
                    kind: Kind::Unattributed,
                    uid: None,
                    program: None,
                    reason: Some(Reason::NoSocket),
                    via: None,
                    container: None,
                    protocol: 17,
                    direction: None,
                    remote: format!("2001:db8::{i}").parse().unwrap(),
                    port: 53,
                },
                Traffic {
                    rx_bytes: 10 + u64::from(i),
                    tx_bytes: 5,
                    rx_packets: 1,
                    tx_packets: 1,
                },
            );
        }
        let rec = PassRecord {
            started_at: T0 + minute * 60,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &[]).unwrap();
    };
    for minute in 0..120 {
        usage_at(&mut store, minute);
    }
    // One raw row per 5-minute bucket and key, not per pass.
    let buckets = count(&store, "SELECT count(DISTINCT ts) FROM usage");
    assert_eq!(
        count(&store, "SELECT count(*) FROM usage"),
        buckets * (60 + 12)
    );
    let before = hourly_totals(&store);
    let r = Retention {
        raw: Duration::from_secs(DAY as u64),
        hourly_top: 5,
        ..Retention::default()
    };
    store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
    assert_eq!(
        hourly_totals(&store),
        before,
        "per-user hourly totals moved"
    );
    let hours = count(
        &store,
        "SELECT count(DISTINCT ts) FROM usage_rollup WHERE granularity = 'hour'",
    );
    assert!((2..=3).contains(&hours), "{hours} hours");
    // Per user (and per unattributed reason) and hour: 5 kept keys and one fold.
    let per_group: Vec<(i64, Option<u32>, i64)> = {
        let mut st = store
            .conn()
            .prepare(
                "SELECT ts, uid, count(*) FROM usage_rollup WHERE granularity = 'hour'
                 GROUP BY ts, uid, reason",
            )
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(per_group.len() as i64, hours * 3);
    assert!(per_group.iter().all(|g| g.2 == 6), "{per_group:?}");
    // The kept keys are the largest: remotes 25-29 for every user and hour.
    let kept: Vec<String> = {
        let mut st = store
            .conn()
            .prepare(
                "SELECT DISTINCT remote_addr FROM usage_rollup
                 WHERE granularity = 'hour' AND kind = 'user' ORDER BY 1",
            )
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let want: Vec<String> = ["", "198.51.100.25", "198.51.100.26", "198.51.100.27"]
        .into_iter()
        .chain(["198.51.100.28", "198.51.100.29"])
        .map(String::from)
        .collect();
    assert_eq!(kept, want);
    // The fold has no program and no port, and carries the other 25 remotes' bytes.
    let (program, port, rx): (Option<String>, i64, i64) = store
        .conn()
        .query_row(
            "SELECT program, port, sum(rx_bytes) FROM usage_rollup
             WHERE granularity = 'hour' AND uid = 1001 AND remote_addr = ''",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!((program.as_deref(), port), (Some(""), 0));
    assert_eq!(rx, 120 * (1..=25).sum::<i64>() * 1000);
    // A pass whose clock was behind lands in an hour already rolled up: the next
    // rollup adds it to that hour's rows instead of failing on their keys.
    let rolled = hourly_totals(&store);
    usage_at(&mut store, 10);
    let late = hourly_totals(&store);
    store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
    assert_eq!(count(&store, "SELECT count(*) FROM usage"), 0);
    assert_eq!(hourly_totals(&store), late);
    assert_ne!(late, rolled);
    // hourly_top = 0 keeps every key.
    let dir2 = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir2.path().join("a.db"), &OpenOptions::default()).unwrap();
    for minute in 0..60 {
        usage_at(&mut store, minute);
    }
    let r = Retention { hourly_top: 0, ..r };
    store.roll_up(T0 + 2 * DAY, &r, u64::MAX).unwrap();
    assert_eq!(
        count(
            &store,
            "SELECT count(*) FROM usage_rollup WHERE remote_addr = ''"
        ),
        0
    );
}

/// A logged connection of 42 ms, ending 7 ms after the one before.
fn logged(i: u32) -> LoggedConnection {
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
        orig_counters: None,
        reply_counters: None,
        zone: 0,
        via: None,
        container: None,
    }
}

#[test]
fn log_is_kept_for_its_retention_and_dropped_in_bounded_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(&dir.path().join("log.db"), &OpenOptions::default()).unwrap();
    const N: u32 = 10_000;
    store
        .write_events(&[], |_| EventWrite {
            log: (0..N).map(logged).collect(),
            ..EventWrite::default()
        })
        .unwrap();
    // Seven days after 1_780_000_050 s: connections that ended before then go.
    let r = Retention::default();
    let now = 1_780_000_050 + r.connections.as_secs() as i64;
    let cutoff_ms = 1_780_000_050_000;
    let expected = (0..N).filter(|i| logged(*i).end_ms < cutoff_ms).count() as u64;
    assert!(expected > 1000 && expected < u64::from(N), "{expected}");
    let (mut dropped, mut steps) = (0, 0);
    loop {
        let st = store.roll_up(now, &r, 1000).unwrap();
        assert!(st.connections_dropped <= 1000);
        dropped += st.connections_dropped;
        steps += 1;
        if !st.behind {
            break;
        }
    }
    assert_eq!(dropped, expected);
    assert!(steps >= 8, "bounded: {steps} steps");
    let left = store.connection_log(0, i64::MAX).unwrap();
    assert_eq!(left.len() as u64, u64::from(N) - expected);
    assert!(left.iter().all(|c| c.end_ms >= cutoff_ms));
    assert!(left.iter().any(|c| c.end_ms < cutoff_ms + 10));
}
