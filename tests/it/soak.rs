//! The SIGKILL soak (issue 13): real traffic of several real users in a network namespace
//! while a loop starts `netledger run` and `netledger snapshot` and SIGKILLs them at random
//! instants, inside pass and flush transactions too (the `test-hooks` pauses, see
//! src/store/hooks.rs), restarting each time; `PRAGMA integrity_check` after every kill;
//! at the end each user's bytes in netledger against the kernel's own count.
//!
//! The short form runs in `cargo test` (about a minute); the long one is
//! `NETLEDGER_SOAK_SECS=1800 cargo test --test it soak:: -- --nocapture` (figures in
//! BENCHMARKS.md). `NETLEDGER_SOAK_SEED` replays a run's random choices (its seed is
//! printed first); `NETLEDGER_SOAK_BIN` names a copy of the binary under test for the
//! killed processes (so that a rebuild during a long run does not change it midway; it
//! must be built with the `test-hooks` feature, as `cargo test` builds it).
//!
//! Ground truth: nftables counters per owner, kept by the kernel beside conntrack and
//! independent of netledger. Each flow's first packet leaves a full socket of its user,
//! so `meta skuid` names the owner there and `ct mark set` stamps the flow; every later
//! packet of the flow, both directions, is counted by the mark (`ct direction original`
//! in output = sent, `ct direction reply` in prerouting = received). That is exact for
//! what netledger charges: conntrack's byte counters add each packet's IP length
//! (skb->len) at its hooks (priority -200), and these counters add the same length at a
//! hook right after them (priority -150 and 10, nothing dropping in between), for the same
//! packets; and the mark, unlike `meta skuid` alone, also catches the packets that leave
//! without a full socket (the last ACK from TIME_WAIT, a RST).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// xorshift64*: reproducible random choices from a printed seed (no crate for this).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Where a kill landed, from the test hooks' lines on the victim's stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Landed {
    InPass,
    InFlush,
    Elsewhere,
}

fn landed(stderr: &str) -> Landed {
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.contains("netledger: test hook: "));
    match last {
        Some(l) if l.contains("pausing before commit") && l.ends_with("(pass)") => Landed::InPass,
        Some(l) if l.contains("pausing before commit") && l.ends_with("(flush)") => Landed::InFlush,
        _ => Landed::Elsewhere,
    }
}

/// How a victim is killed.
#[derive(Debug, Clone, Copy)]
enum Aim {
    /// At a random instant after its start.
    Random(Duration),
    /// While it pauses inside its Nth transaction of this kind ("pass" or "flush").
    Inside(&'static str, usize),
}

/// A `netledger` process (daemon or snapshot) started to be killed, stderr in a file.
struct Victim {
    child: Child,
    log: tempfile::NamedTempFile,
    started: Instant,
}

impl Victim {
    fn start(ns: &Netns, db: &Path, args: &[String], env: &[(&str, String)]) -> Victim {
        let log = tempfile::NamedTempFile::new().unwrap();
        let bin = std::env::var_os("NETLEDGER_SOAK_BIN").map_or_else(bin, Into::into);
        let mut cmd = ns.cmd(bin);
        cmd.arg("--db").arg(db).arg("-v").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("spawn netledger");
        Victim {
            child,
            log,
            started: Instant::now(),
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kill it as `aim` says (at once if it already exited); where the kill landed, or
    /// None when it had exited by itself first (then with status 0, or the soak fails).
    fn kill(mut self, aim: Aim, rng: &mut Rng) -> Option<Landed> {
        match aim {
            Aim::Random(after) => {
                let until = self.started + after;
                while Instant::now() < until {
                    if self.exited() {
                        return None;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            Aim::Inside(what, nth) => {
                let mark = format!("({what})");
                let limit = Instant::now() + Duration::from_secs(60);
                loop {
                    let err = self.stderr();
                    let pauses = err
                        .lines()
                        .filter(|l| l.contains("pausing before commit") && l.ends_with(&mark))
                        .count();
                    let here = match landed(&err) {
                        Landed::InPass => what == "pass",
                        Landed::InFlush => what == "flush",
                        Landed::Elsewhere => false,
                    };
                    if pauses >= nth && here {
                        break;
                    }
                    if self.exited() {
                        return None;
                    }
                    assert!(
                        Instant::now() < limit,
                        "no pause in a {what} after 60 s:\n{err}"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                // Anywhere inside the pause.
                std::thread::sleep(Duration::from_millis(rng.range(0, 20)));
            }
        }
        signal(self.child.id(), libc::SIGKILL);
        let st = self.child.wait().unwrap();
        if st.success() {
            // It exited just before the signal.
            return None;
        }
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            st.signal(),
            Some(libc::SIGKILL),
            "netledger ended with {st} before the kill:\n{}",
            self.stderr()
        );
        Some(landed(&self.stderr()))
    }

    /// Whether it exited by itself (it must then have succeeded).
    fn exited(&mut self) -> bool {
        match self.child.try_wait().unwrap() {
            None => false,
            Some(st) => {
                assert!(st.success(), "netledger failed ({st}):\n{}", self.stderr());
                true
            }
        }
    }

    /// Wait for it to exit by itself; must succeed.
    fn wait_ok(mut self) -> String {
        let st = self.child.wait().unwrap();
        let err = self.stderr();
        assert!(st.success(), "netledger failed ({st}):\n{err}");
        err
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

fn integrity_check(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    let rows: Vec<String> = c
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        rows,
        ["ok"],
        "integrity_check of {} after a kill",
        db.display()
    );
}

/// The soak's nftables truth in `ns` for `uids` (see the module docs).
fn truth_table(ns: &Netns, uids: &[u32]) {
    let mut s = String::from("table inet soaktruth {\n");
    for u in uids {
        s += &format!("  counter tx{u} {{}}\n  counter rx{u} {{}}\n");
    }
    s += "  chain out { type filter hook output priority 10; policy accept;\n";
    for u in uids {
        s += &format!("    ct state new meta skuid {u} ct mark set {u}\n");
    }
    for u in uids {
        s += &format!("    ct direction original ct mark {u} counter name tx{u}\n");
    }
    s += "  }\n  chain pre { type filter hook prerouting priority -150; policy accept;\n";
    for u in uids {
        s += &format!("    ct direction reply ct mark {u} counter name rx{u}\n");
    }
    s += "  }\n}\n";
    let mut c = ns.cmd("nft");
    c.args(["-f", "-"]).stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "nft -f:\n{s}");
}

/// The truth of one user: (rx, tx) bytes.
fn truth_of(ns: &Netns, uid: u32) -> Usage {
    let bytes = |name: String| -> u64 {
        let out = run(ns
            .cmd("nft")
            .args(["list", "counter", "inet", "soaktruth", &name]));
        let text = String::from_utf8_lossy(&out.stdout);
        let after = text.split("bytes ").nth(1).expect("a counter's bytes");
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Usage {
        rx_bytes: bytes(format!("rx{uid}")),
        tx_bytes: bytes(format!("tx{uid}")),
    }
}

/// Connection-log rows that log the same connection twice (same original tuple, zone
/// and start).
fn duplicated_log_rows(ns: &Netns, db: &Path) -> (usize, usize) {
    let rows = connection_log(ns, db, &[]);
    let mut seen = HashSet::new();
    let mut dup = 0;
    for r in &rows {
        let key = (
            r["orig"].to_string(),
            r["zone"].to_string(),
            r["start_ms"].to_string(),
        );
        if !seen.insert(key) {
            dup += 1;
        }
    }
    (rows.len(), dup)
}

#[test]
fn sigkill_soak() {
    if !require_root("sigkill_soak") {
        return;
    }
    let secs: u64 = std::env::var("NETLEDGER_SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("NETLEDGER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("soak: {secs} s, NETLEDGER_SOAK_SEED={seed}");
    let mut rng = Rng(seed);

    // TIME_WAIT 2 s: short flows leave conntrack soon after they close.
    let net = Inet::new("sk", 2);
    let long = TestUser::new("skl");
    let short1 = TestUser::new("sks");
    let short2 = TestUser::new("skt");
    let users = [&long, &short1, &short2];
    truth_table(&net.host, &users.map(|u| u.uid));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("soak.db");
    let tb = traffic_bin();
    let bb = burst_bin();

    // Long-lived flows: three of user `long`, a request of 2 kB up and 8 kB down every
    // 100 ms each, alive for the whole soak.
    let mut streams: Vec<Proc> = (0..3)
        .map(|i| {
            let mut c = long.cmd(&net.host, &tb.path);
            c.args(["stream", "tcp", "198.51.100.2:9000", "2000", "8000", "100"]);
            let mut p = Proc::spawn(&format!("long flow {i}"), c);
            p.expect("ready");
            p
        })
        .collect();

    // Short connections: users short1 and short2 each in a loop of bursts of 20
    // connections (2 threads, 300 B up, 3 kB down, held 10 ms, 10 ms apart), until `stop`.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let bursts: Vec<_> = [&short1, &short2]
        .iter()
        .map(|u| {
            let mut c = u.cmd(&net.host, &bb.path);
            c.args([
                "198.51.100.2:9000",
                "20",
                "300",
                "3000",
                "--parallel",
                "2",
                "--hold-ms",
                "10",
                "--gap-ms",
                "10",
            ])
            .stdout(Stdio::null());
            let (stop, made) = (stop.clone(), made.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let st = c.status().expect("run nl_burst");
                    assert!(st.success(), "nl_burst failed: {st}");
                    made.fetch_add(20, Ordering::SeqCst);
                }
            })
        })
        .collect();

    // The kill loop.
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(secs);
    let mut kills: HashMap<(&str, Landed), u64> = HashMap::new();
    let mut exits = 0u64;
    let mut snapshots_beside = 0u64;
    let mut cycles = 0u64;
    while Instant::now() < deadline {
        cycles += 1;
        // A daemon with random transaction pauses, passes every 1-3 s, flushes every
        // 50 ms - 1 s.
        let mut env = vec![];
        if rng.chance(70) {
            env.push((
                "NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS",
                rng.range(20, 400).to_string(),
            ));
        }
        if rng.chance(70) {
            env.push((
                "NETLEDGER_TEST_PAUSE_IN_FLUSH_MS",
                rng.range(20, 300).to_string(),
            ));
        }
        let args: Vec<String> = vec![
            "run".into(),
            "--interval".into(),
            format!("{}s", rng.range(1, 3)),
            "--flush-interval".into(),
            format!("{}ms", rng.range(50, 1000)),
        ];
        let has = |k: &str| env.iter().any(|(n, _)| *n == k);
        let aim = match rng.range(0, 2) {
            1 if has("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS") => {
                Aim::Inside("pass", rng.range(1, 3) as usize)
            }
            2 if has("NETLEDGER_TEST_PAUSE_IN_FLUSH_MS") => {
                Aim::Inside("flush", rng.range(1, 4) as usize)
            }
            _ => Aim::Random(Duration::from_millis(rng.range(0, 3000))),
        };
        let daemon = Victim::start(&net.host, &db, &args, &env);
        // A minutely snapshot that meets the daemon: it must exit 0 without charging.
        let beside = rng.chance(30).then(|| {
            std::thread::sleep(Duration::from_millis(rng.range(0, 1500)));
            Victim::start(&net.host, &db, &["snapshot".into()], &[])
        });
        match daemon.kill(aim, &mut rng) {
            Some(l) => *kills.entry(("run", l)).or_default() += 1,
            None => panic!("netledger run exited by itself"),
        }
        if let Some(s) = beside {
            // It may also have met no daemon (started after the kill): then it charged.
            s.wait_ok();
            snapshots_beside += 1;
        }
        integrity_check(&db);

        // No daemon for a while (flows born and dead now are lost, never doubled); a
        // snapshot runs, killed at random or inside its pass half of the time.
        let gap = Instant::now() + Duration::from_millis(rng.range(0, 1500));
        if rng.chance(50) {
            let pause = rng.range(20, 400);
            let snap = Victim::start(
                &net.host,
                &db,
                &["snapshot".into()],
                &[("NETLEDGER_TEST_PAUSE_BEFORE_COMMIT_MS", pause.to_string())],
            );
            if rng.chance(50) {
                let aim = if rng.chance(50) {
                    Aim::Inside("pass", 1)
                } else {
                    Aim::Random(Duration::from_millis(rng.range(0, 600)))
                };
                match snap.kill(aim, &mut rng) {
                    Some(l) => *kills.entry(("snapshot", l)).or_default() += 1,
                    None => exits += 1,
                }
                integrity_check(&db);
            } else {
                snap.wait_ok();
                exits += 1;
            }
        }
        while Instant::now() < gap {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let soaked = t0.elapsed();

    // The end: traffic stops, a daemon runs undisturbed until every flow has ended and
    // been charged, then stops with SIGTERM.
    stop.store(true, Ordering::SeqCst);
    for b in bursts {
        b.join().unwrap();
    }
    let short_made = made.load(Ordering::SeqCst);
    let final_daemon = Daemon::start(&net.host, &db, &["--interval", "1s"], &[]);
    for s in &mut streams {
        s.go();
    }
    for s in streams {
        s.wait_ok();
    }
    wait_tcp_closed(&net.host);
    wait_entries_gone(&net.host, "the soak's flows", |_| true);
    final_daemon.wait_for_a_whole_pass();
    final_daemon.stop();
    integrity_check(&db);

    // Figures.
    let got = top_by_uid(&net.host, &db);
    let (log_rows, log_dups) = duplicated_log_rows(&net.host, &db);
    let unattributed = got.get(&None).copied().unwrap_or_default();
    let n = |k: &str, l: Landed| kills.get(&(k, l)).copied().unwrap_or(0);
    let total_kills: u64 = kills.values().sum();
    eprintln!(
        "soak: {:.0} s, {cycles} cycles, {total_kills} kills: run {} in a pass, {} in a \
         flush, {} elsewhere; snapshot {} in its pass, {} elsewhere; {exits} snapshots \
         finished alone, {snapshots_beside} met a daemon; integrity_check ok after every kill",
        soaked.as_secs_f64(),
        n("run", Landed::InPass),
        n("run", Landed::InFlush),
        n("run", Landed::Elsewhere),
        n("snapshot", Landed::InPass),
        n("snapshot", Landed::Elsewhere),
    );
    eprintln!(
        "soak: short connections {short_made} ({:.0}/s); long flows 3",
        short_made as f64 / soaked.as_secs_f64()
    );
    let mut failures = vec![];
    let (mut truth_sum, mut got_sum) = (0u64, 0u64);
    for (what, u) in [("long", &long), ("short1", &short1), ("short2", &short2)] {
        let t = truth_of(&net.host, u.uid);
        let g = got.get(&Some(u.uid)).copied().unwrap_or_default();
        truth_sum += t.rx_bytes + t.tx_bytes;
        got_sum += g.rx_bytes + g.tx_bytes;
        let lost = (t.rx_bytes + t.tx_bytes).saturating_sub(g.rx_bytes + g.tx_bytes);
        let doubled = g.rx_bytes.saturating_sub(t.rx_bytes) + g.tx_bytes.saturating_sub(t.tx_bytes);
        eprintln!(
            "soak: {what} (uid {}): truth rx {} tx {}, netledger rx {} tx {}, lost {lost} \
             ({:.3}%), doubled {doubled}",
            u.uid,
            t.rx_bytes,
            t.tx_bytes,
            g.rx_bytes,
            g.tx_bytes,
            100.0 * lost as f64 / (t.rx_bytes + t.tx_bytes).max(1) as f64
        );
        if doubled > 0 {
            failures.push(format!("{what}: {doubled} bytes charged twice"));
        }
        // A flow alive across every kill loses nothing: each pass charges from the state
        // the last committed one saved.
        if what == "long" && g != t {
            failures.push(format!("long flows: netledger {g:?} != truth {t:?}"));
        }
    }
    let unatt = unattributed.rx_bytes + unattributed.tx_bytes;
    eprintln!(
        "soak: unattributed {unatt} bytes (short flows found with no socket); lost outright \
         {}; connection log {log_rows} rows, {log_dups} duplicated",
        (truth_sum - got_sum.min(truth_sum)).saturating_sub(unatt)
    );
    if got_sum + unatt > truth_sum {
        failures.push(format!(
            "netledger holds {} bytes in all, the kernel counted {truth_sum}",
            got_sum + unatt
        ));
    }
    if log_dups > 0 {
        failures.push(format!("{log_dups} connection-log rows duplicated"));
    }
    assert!(total_kills > 0, "no kill in the soak");
    assert!(failures.is_empty(), "soak (seed {seed}): {failures:?}");
}
