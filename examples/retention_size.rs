//! Database size after a simulated year of a busy host, through the real write path
//! (`Store::write_pass`, `Store::write_events` for the connection log, `Store::roll_up`
//! after every pass with the production budget) and the default retention.
//!
//! `cargo run --release --example retention_size` (about 5 minutes, 12 with `--mixed`;
//! `--days N` for a shorter simulation, `--help` for the model's knobs).
//!
//! Model (stated, not measured from a real host): `--users` users (200) share `--flows`
//! live flows (5,000) at every one-minute pass. Each flow belongs to a user and a key
//! (program, remote, port) drawn from that user's working set of `--remotes` remotes (40,
//! Zipf-distributed with exponent `--zipf`, 1.0; 0 is uniform), each remote one service
//! (port) used by one program; `--mixed` instead draws the port (of 3) and the program (of
//! 2) independently for every flow, six times the keys, a harsher load. A flow
//! lives a geometric number of minutes with mean `--life` (5), so about flows/life new
//! connections a minute, each one logged when it ends. A flow moves up to 200 KB down and
//! 20 KB up a minute.
//!
//! Simulated time is compressed where the result does not depend on the pass cadence: days
//! that end up in the daily tier get one pass a day, days that end up in the hourly tier one
//! pass an hour (a rollup ranks and sums whole hours, so the hourly rows are the same as
//! with minute passes), and the last `raw` days (plus one) one pass a minute, as the timer
//! runs them. The flow model itself runs minute by minute for the whole year.

use std::collections::BTreeMap;
use std::time::Instant;

use netledger::account::{Kind, PassPlan, Traffic, UsageKey};
use netledger::attribute::Direction;
use netledger::model::{Counters, Tuple};
use netledger::store::connections::{EventWrite, LoggedConnection};
use netledger::store::retention::Retention;
use netledger::store::{OpenOptions, PassRecord, Store};

const PORTS: [u16; 3] = [443, 80, 22];
const PROGRAMS: usize = 2;

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help") {
        println!(
            "retention_size [--days 365] [--users 200] [--flows 5000] [--remotes 40] \
             [--zipf 1.0] [--life 5] [--mixed] [--db PATH]"
        );
        std::process::exit(0);
    }
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("number"))
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The model's keys are dense: user x remote x port x program.
struct Model {
    users: usize,
    remotes: usize,
    /// Cumulative Zipf weights over remotes.
    cdf: Vec<f64>,
    life: f64,
    mixed: bool,
    rng: Rng,
    /// (key, start minute) of each live flow.
    flows: Vec<(usize, i64)>,
}

impl Model {
    fn keys_per_user(&self) -> usize {
        self.remotes * PORTS.len() * PROGRAMS
    }

    fn new_key(&mut self) -> usize {
        let user = (self.rng.next() % self.users as u64) as usize;
        let u = self.rng.unit();
        let remote = self.cdf.partition_point(|c| *c < u).min(self.remotes - 1);
        // A remote is one service, used by one program, unless --mixed draws them apart.
        let (port, program) = if self.mixed {
            (
                (self.rng.next() % PORTS.len() as u64) as usize,
                (self.rng.next() % PROGRAMS as u64) as usize,
            )
        } else {
            (remote % PORTS.len(), remote % PROGRAMS)
        };
        ((user * self.remotes + remote) * PORTS.len() + port) * PROGRAMS + program
    }

    /// One minute: every live flow moves traffic (added to `acc`), then each ends with
    /// probability 1/life and is replaced; ended flows are returned as (key, start minute).
    fn step(&mut self, minute: i64, acc: &mut [Traffic]) -> Vec<(usize, i64)> {
        let mut ended = Vec::new();
        for i in 0..self.flows.len() {
            let r = self.rng.next();
            let t = &mut acc[self.flows[i].0];
            t.rx_bytes += (r >> 8) % 200_000;
            t.tx_bytes += (r >> 32) % 20_000;
            t.rx_packets += 150;
            t.tx_packets += 60;
            if self.rng.unit() < 1.0 / self.life {
                ended.push(self.flows[i]);
                self.flows[i] = (self.new_key(), minute + 1);
            }
        }
        ended
    }

    fn usage_key(&self, key: usize) -> UsageKey {
        let program = key % PROGRAMS;
        let port = (key / PROGRAMS) % PORTS.len();
        let remote = (key / PROGRAMS / PORTS.len()) % self.remotes;
        let user = key / self.keys_per_user();
        UsageKey {
            cgroup: None,
            kind: Kind::User,
            uid: Some(1000 + user as u32),
            program: Some(format!("prog{program}")),
            reason: None,
            via: None,
            container: None,
            protocol: 6,
            direction: Some(Direction::Out),
            remote: remote_addr(user, remote).into(),
            port: PORTS[port],
        }
    }
}

fn remote_addr(user: usize, remote: usize) -> std::net::Ipv4Addr {
    // Each user's remotes are its own: 40 x 200 distinct addresses.
    let n = user * 64 + remote;
    std::net::Ipv4Addr::new(198, 51, (n >> 8) as u8, n as u8)
}

fn plan_of(model: &Model, acc: &mut [Traffic]) -> PassPlan {
    let mut usage = BTreeMap::new();
    for (key, t) in acc.iter_mut().enumerate() {
        if t.rx_bytes + t.tx_bytes > 0 {
            usage.insert(model.usage_key(key), std::mem::take(t));
        }
    }
    PassPlan {
        usage,
        ..PassPlan::default()
    }
}

fn main() {
    let days = arg("--days", 365.0) as i64;
    let users = arg("--users", 200.0) as usize;
    let flows = arg("--flows", 5000.0) as usize;
    let remotes = arg("--remotes", 40.0) as usize;
    let zipf = arg("--zipf", 1.0);
    let life = arg("--life", 5.0);
    let mixed = std::env::args().any(|a| a == "--mixed");
    assert!(remotes <= 64 && users * 64 < 65536, "addresses run out");
    let dir = tempfile::tempdir().unwrap();
    let path = std::env::args()
        .skip_while(|a| a != "--db")
        .nth(1)
        .map_or_else(|| dir.path().join("year.db"), Into::into);
    let mut store = Store::open(&path, &OpenOptions::default()).unwrap();
    let retention = Retention::default();
    let raw_days = retention.raw.as_secs() as i64 / 86_400;
    let hourly_days = retention.hourly.as_secs() as i64 / 86_400;

    let weights: Vec<f64> = (1..=remotes).map(|r| 1.0 / (r as f64).powf(zipf)).collect();
    let total: f64 = weights.iter().sum();
    let cdf = weights
        .iter()
        .scan(0.0, |acc, w| {
            *acc += w / total;
            Some(*acc)
        })
        .collect();
    let mut model = Model {
        users,
        remotes,
        cdf,
        life,
        mixed,
        rng: Rng(0x2545_f491_4f6c_dd1d),
        flows: Vec::new(),
    };
    model.flows = (0..flows).map(|_| (model.new_key(), 0)).collect();
    let mut acc = vec![Traffic::default(); users * model.keys_per_user()];

    // The simulated year ends at `end`; t0 is a UTC midnight.
    let t0 = 1_767_225_600i64; // 2026-01-01
    let end_minute = days * 1440;
    let minute_from = (days - raw_days - 1).max(0) * 1440;
    let hour_from = (days - hourly_days - 1).max(0) * 1440;
    let started = Instant::now();
    let (mut passes, mut rows_written, mut logged) = (0u64, 0u64, 0u64);
    for minute in 0..end_minute {
        let ended = model.step(minute, &mut acc);
        let now = t0 + minute * 60;
        let cadence = if minute >= minute_from {
            1
        } else if minute >= hour_from {
            60
        } else {
            1440
        };
        if minute >= minute_from && !ended.is_empty() {
            // The daemon's connection log: one record per finished connection.
            let log: Vec<LoggedConnection> = ended
                .iter()
                .enumerate()
                .map(|(i, (key, start))| {
                    let k = model.usage_key(*key);
                    let sport = 32768 + (i % 28000) as u16;
                    let local = "192.0.2.1".parse().unwrap();
                    LoggedConnection {
                        cgroup: None,
                        start_ms: (t0 + start * 60) * 1000,
                        // Events arrive in time order within the minute.
                        end_ms: now * 1000 + (i as i64 * 60_000) / ended.len() as i64,
                        orig: Tuple {
                            src: local,
                            dst: k.remote,
                            proto: 6,
                            sport,
                            dport: k.port,
                        },
                        reply: Tuple {
                            src: k.remote,
                            dst: local,
                            proto: 6,
                            sport: k.port,
                            dport: sport,
                        },
                        direction: Some(Direction::Out),
                        uid: k.uid,
                        program: k.program,
                        orig_counters: Some(Counters {
                            packets: 60 * (minute + 1 - start) as u64,
                            bytes: 10_000 * (minute + 1 - start) as u64,
                        }),
                        reply_counters: Some(Counters {
                            packets: 150 * (minute + 1 - start) as u64,
                            bytes: 100_000 * (minute + 1 - start) as u64,
                        }),
                        zone: 0,
                        via: None,
                        container: None,
                    }
                })
                .collect();
            logged += log.len() as u64;
            store
                .write_events(&[], |_| EventWrite {
                    log,
                    ..EventWrite::default()
                })
                .unwrap();
        }
        if (minute + 1) % cadence != 0 {
            continue;
        }
        let plan = plan_of(&model, &mut acc);
        rows_written += plan.usage.len() as u64;
        let pass_start = now + 60 - cadence * 60;
        let rec = PassRecord {
            started_at: pass_start,
            mode: "snapshot",
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &[]).unwrap();
        store.roll_up(now + 60, &retention, 50_000).unwrap();
        passes += 1;
        if (minute + 1) % (30 * 1440) == 0 {
            eprintln!(
                "day {:>3}: {passes} passes, {rows_written} usage rows written, {:.0?}",
                (minute + 1) / 1440,
                started.elapsed()
            );
        }
    }
    // Catch up whatever the per-pass budget left for later.
    while store
        .roll_up(t0 + end_minute * 60, &retention, 50_000)
        .unwrap()
        .behind
    {}

    let q = |sql: &str| -> i64 { store.conn().query_row(sql, [], |r| r.get(0)).unwrap() };
    let table = |names: &[&str]| -> i64 {
        names
            .iter()
            .map(|n| {
                store
                    .conn()
                    .query_row(
                        "SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?1",
                        [n],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
            })
            .sum()
    };
    let mib = |b: i64| b as f64 / 1_048_576.0;
    let file = q("SELECT page_count * page_size FROM pragma_page_count, pragma_page_size");
    let free = q("SELECT freelist_count * page_size FROM pragma_freelist_count, pragma_page_size");
    println!(
        "model: {users} users, {flows} live flows a minute, {remotes} remotes per user \
         (zipf {zipf}{}), mean flow life {life} min",
        if mixed {
            ", each flow's port and program drawn apart"
        } else {
            ""
        }
    );
    println!(
        "simulated {days} days in {:.0?}: {passes} passes, {rows_written} usage rows and \
         {logged} connections written",
        started.elapsed()
    );
    let raw = q("SELECT count(*) FROM usage_raw");
    let hourly = q("SELECT count(*) FROM usage_tiers WHERE granularity = 3600");
    let daily = q("SELECT count(*) FROM usage_tiers WHERE granularity = 86400");
    let log = q("SELECT count(*) FROM connection_log");
    println!(
        "raw 5-minute rows: {raw:>10} ({:.1} MiB)",
        mib(table(&["usage_raw"]))
    );
    println!(
        "remotes + programs: {:>7} ({:.1} MiB)",
        q("SELECT (SELECT count(*) FROM remotes) + (SELECT count(*) FROM programs)"),
        mib(table(&[
            "remotes",
            "programs",
            "sqlite_autoindex_remotes_1"
        ])) + mib(table(&["sqlite_autoindex_programs_1"]))
    );
    println!(
        "hourly + daily rows: {hourly:>8} + {daily} ({:.1} MiB)",
        mib(table(&["usage_tiers"]))
    );
    println!(
        "passes: {:>16} ({:.1} MiB)",
        q("SELECT count(*) FROM passes"),
        mib(table(&["passes"]))
    );
    println!(
        "connection log: {log:>9} ({:.1} MiB, {:.1} B/connection)",
        mib(table(&["connection_log", "programs"])),
        table(&["connection_log"]) as f64 / log.max(1) as f64
    );
    println!(
        "database file: {:.1} MiB ({:.1} MiB of it free pages, reused by later writes)",
        mib(file),
        mib(free)
    );
}
