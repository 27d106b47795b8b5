//! Database size of a busy host, through the real write path: `--days` days of one pass a
//! minute with `--keys` distinct usage keys (user, program, remote, port) per pass, then the
//! rollup as it would run after a year. Prints rows and bytes per tier.
//!
//! `cargo run --release --example retention_size -- --days 1 --keys 3000`
//!
//! Model (stated, not measured from a real host): 200 users; each pass charges `--keys`
//! keys drawn from each user's working set of 40 remotes x 3 ports x 2 programs, so keys
//! repeat across passes as real long-lived and recurring flows do.

use std::collections::HashMap;

use netledger::account::{PassPlan, Traffic, UsageKey};
use netledger::attribute::Direction;
use netledger::store::retention::Retention;
use netledger::store::{OpenOptions, PassRecord, Store};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("number"))
}

fn main() {
    let days = arg("--days", 1);
    let keys = arg("--keys", 3000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("size.db");
    let mut store = Store::open(&path, &OpenOptions::default()).unwrap();
    let t0 = 1_790_000_000i64;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let start = std::time::Instant::now();
    for minute in 0..days * 1440 {
        let mut usage: std::collections::BTreeMap<UsageKey, Traffic> = Default::default();
        for _ in 0..keys {
            let r = next();
            let uid = 1000 + (r % 200) as u32;
            let remote = (r >> 8) % 40;
            let port = [443u16, 80, 22][((r >> 16) % 3) as usize];
            let k = UsageKey {
                kind: netledger::account::Kind::User,
                uid: Some(uid),
                program: Some(format!("prog{}", (r >> 20) % 2)),
                reason: None,
                protocol: 6,
                direction: Some(Direction::Out),
                remote: format!("198.51.{}.{}", uid % 200, remote).parse().unwrap(),
                port,
            };
            usage.entry(k).or_default().add(&Traffic {
                rx_bytes: (r >> 24) % 1_000_000,
                tx_bytes: (r >> 40) % 100_000,
                rx_packets: 100,
                tx_packets: 50,
            });
        }
        let plan = PassPlan {
            usage,
            ..PassPlan::default()
        };
        let rec = PassRecord {
            started_at: t0 + minute as i64 * 60,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &[]).unwrap();
    }
    let size = |s: &Store| -> HashMap<String, (i64, i64)> {
        let mut st = s
            .conn()
            .prepare("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")
            .unwrap();
        st.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get(1)?, 0))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let rows = |s: &Store, sql: &str| -> i64 { s.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    let raw_rows = rows(&store, "SELECT count(*) FROM usage");
    let sizes = size(&store);
    let raw_bytes: i64 = ["usage", "usage_ts", "usage_uid_ts"]
        .iter()
        .filter_map(|n| sizes.get(*n).map(|v| v.0))
        .sum();
    println!(
        "{days} day(s) of passes, {keys} keys/pass: written in {:.1?}; raw tier {raw_rows} rows, \
         {:.1} MiB ({:.0} B/row incl. indexes)",
        start.elapsed(),
        raw_bytes as f64 / 1048576.0,
        raw_bytes as f64 / raw_rows as f64
    );
    // Roll everything to hourly (as 7+ days later), then measure the hourly tier.
    let end = t0 + days as i64 * 86_400;
    store
        .roll_up(end + 8 * 86_400, &Retention::default(), u64::MAX)
        .unwrap();
    let hourly = rows(
        &store,
        "SELECT count(*) FROM usage_rollup WHERE granularity = 'hour'",
    );
    let rollup_bytes: i64 = ["usage_rollup", "usage_rollup_gran_ts"]
        .iter()
        .filter_map(|n| size(&store).get(*n).map(|v| v.0))
        .sum();
    println!(
        "hourly tier: {hourly} rows for {} hours, {:.1} MiB ({:.0} B/row)",
        days * 24,
        rollup_bytes as f64 / 1048576.0,
        rollup_bytes as f64 / hourly.max(1) as f64
    );
    store
        .roll_up(end + 91 * 86_400, &Retention::default(), u64::MAX)
        .unwrap();
    let daily = rows(
        &store,
        "SELECT count(*) FROM usage_rollup WHERE granularity = 'day'",
    );
    println!("daily tier: {daily} rows for {days} day(s)");
    let per_day_raw = raw_bytes as f64 / days as f64;
    let per_day_hourly = rollup_bytes as f64 / days as f64;
    let year =
        7.0 * per_day_raw + 83.0 * per_day_hourly + 275.0 * (daily as f64 / days as f64) * 60.0;
    println!(
        "a year at steady state with the default retention (7 d raw, 90 d hourly, daily after): \
         ~{:.0} MiB (7 x raw day + 83 x hourly day + 275 x daily day at ~60 B/row)",
        year / 1048576.0
    );
}
