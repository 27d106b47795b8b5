//! `netledger metrics` (issue 12): the Prometheus text exposition checked by the real
//! tools — `promtool check metrics`, and a real node_exporter's textfile collector serving
//! the file — with every value compared to `netledger top --json` of the same database.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, run, Netns};
use netledger::account::account_pass;
use netledger::attribute::{Attributed, Attribution, Direction, Reason, Verdict};
use netledger::model::Flow;
use netledger::store::{OpenOptions, PassRecord, Store};

const DAY: i64 = 86_400;

fn flow(id: u32, remote: &str, sport: u16, out: (u64, u64), back: (u64, u64)) -> Flow {
    common::model::flow(id, 6, ("198.51.100.1", sport), (remote, 443), out, back)
}

fn user(uid: u32) -> Verdict {
    Verdict::User(Attribution {
        cgroup: None,
        uid,
        program: Some("curl".into()),
        direction: Direction::Out,
        via: netledger::attribute::Via::Direct,
        container: None,
    })
}

/// A database with three users (one whose name has a quote), unattributed and excluded
/// traffic, over passes from 40 days ago (rolled-up days) to now.
pub fn build_db(dir: &Path) -> PathBuf {
    let db = dir.join("metrics.db");
    let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
    let now = chrono::Utc::now().timestamp();
    let mut id = 0;
    for (i, ts) in [now - 40 * DAY, now - 3 * DAY, now - 3600, now - 5]
        .into_iter()
        .enumerate()
    {
        let k = i as u64 + 1;
        let verdicts = [
            (
                user(61001),
                "198.51.100.2",
                (1000 * k, 10),
                (50_000 * k, 40),
            ),
            (user(61002), "198.51.100.3", (7 * k, 1), (9 * k, 2)),
            (user(61003), "198.51.100.4", (123_456, 3), (654_321, 5)),
            (
                Verdict::Unattributed(Reason::NoSocket),
                "198.51.100.5",
                (11 * k, 1),
                (13, 1),
            ),
            (
                Verdict::Unattributed(Reason::Forwarded),
                "198.51.100.6",
                (17, 1),
                (19 * k, 1),
            ),
            (
                Verdict::Excluded(None),
                "198.51.100.7",
                (23 * k, 1),
                (29, 1),
            ),
        ];
        let (mut flows, mut ats) = (Vec::new(), Vec::new());
        for (v, remote, out, back) in verdicts {
            id += 1;
            flows.push(flow(id, remote, 40000 + id as u16, out, back));
            ats.push(Attributed {
                verdict: v,
                direction: Some(Direction::Out),
                remote: remote.parse::<IpAddr>().unwrap(),
                port: 443,
            });
        }
        let prev = store.load_state().unwrap();
        let plan = account_pass(ts, &flows, &ats, &prev, 3);
        let names = vec![
            (61001, Some("alice".to_owned())),
            (61002, Some("b\"ob".to_owned())),
            (61003, None),
        ];
        let rec = PassRecord {
            started_at: ts,
            mode: "snapshot",
            sockets: 17,
            ..PassRecord::default()
        };
        store.write_pass(&rec, &plan, &names).unwrap();
    }
    db
}

fn netledger(db: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .output()
        .unwrap()
}

/// Samples of an exposition: `name{labels}` → value (label order as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// What `top --json` over all time says, as the samples the metrics must hold.
fn expected_from_top(db: &Path) -> BTreeMap<String, f64> {
    let o = netledger(
        db,
        &["top", "--json", "--since", "3650d", "--limit", "1000"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut m = BTreeMap::new();
    let mut unattributed = [0.0, 0.0];
    for r in &rows {
        let n = |f: &str| r[f].as_u64().unwrap() as f64;
        match r["uid"].as_u64() {
            Some(uid) => {
                let user = r["user"].as_str().unwrap_or("").replace('"', "\\\"");
                let labels = format!("{{uid=\"{uid}\",user=\"{user}\"}}");
                for (metric, field) in [
                    ("receive_bytes", "rx_bytes"),
                    ("transmit_bytes", "tx_bytes"),
                    ("receive_packets", "rx_packets"),
                    ("transmit_packets", "tx_packets"),
                ] {
                    m.insert(format!("netledger_user_{metric}_total{labels}"), n(field));
                }
            }
            None => {
                unattributed[0] += n("rx_bytes");
                unattributed[1] += n("tx_bytes");
            }
        }
    }
    assert_eq!(m.len(), 12, "three users in top: {rows:?}");
    m.insert("unattributed receive".into(), unattributed[0]);
    m.insert("unattributed transmit".into(), unattributed[1]);
    m
}

/// Check an exposition's values against `top --json` and the known excluded traffic.
fn check_values(got: &BTreeMap<String, f64>, db: &Path) {
    let want = expected_from_top(db);
    for (k, v) in &want {
        if k.starts_with("netledger_") {
            assert_eq!(got.get(k), Some(v), "{k}: {got:#?}");
        }
    }
    let sum = |prefix: &str| -> f64 {
        got.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    };
    assert_eq!(
        sum("netledger_unattributed_receive_bytes_total{"),
        want["unattributed receive"]
    );
    assert_eq!(
        sum("netledger_unattributed_transmit_bytes_total{"),
        want["unattributed transmit"]
    );
    // Forwarded flows: 19·k bytes back over k = 1..4; no-socket: 13 per pass.
    assert_eq!(
        got["netledger_unattributed_receive_bytes_total{reason=\"forwarded\"}"],
        190.0
    );
    assert_eq!(
        got["netledger_unattributed_receive_bytes_total{reason=\"no-socket\"}"],
        52.0
    );
    // Excluded: 23·k out, 29 back per pass.
    assert_eq!(got["netledger_excluded_transmit_bytes_total"], 230.0);
    assert_eq!(got["netledger_excluded_receive_bytes_total"], 116.0);
    assert_eq!(got["netledger_sockets"], 17.0);
    assert_eq!(
        got[&format!(
            "netledger_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        )],
        1.0
    );
    assert!(got["netledger_database_bytes"] > 0.0);
    assert!(got["netledger_last_pass_timestamp_seconds"] > 1.7e9);
}

/// The metrics read from the totals equal the metrics summed from the detail.
#[test]
fn totals_and_detail_give_the_same_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let mut store = Store::open(
        &db,
        &OpenOptions {
            read_only: true,
            ..OpenOptions::default()
        },
    )
    .unwrap();
    let fast = store.metrics().unwrap();
    store.set_use_totals(false);
    let slow = store.metrics().unwrap();
    assert_eq!(fast.users, slow.users);
    assert_eq!(fast.unattributed, slow.unattributed);
    assert_eq!(fast.excluded, slow.excluded);
    assert_eq!(fast.users.len(), 3);
}

/// No database: an error naming it, exit 1, and nothing created.
#[test]
fn metrics_never_creates_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("none.db");
    let o = netledger(&db, &["metrics"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("none.db"), "{err}");
    assert!(!db.exists());
}

/// A real node_exporter or Prometheus server, killed (by pid) on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        common::end(&mut self.0);
    }
}

/// A TCP connection to 127.0.0.1:`port` inside `ns` (made by a thread that enters it; the
/// socket stays in that namespace), or None when nothing listens.
fn connect(ns: &Netns, port: u16) -> Option<TcpStream> {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .join()
    .unwrap()
}

/// Send `request` and read the whole response (None when refused or cut short).
fn exchange(ns: &Netns, port: u16, request: &[u8]) -> Option<String> {
    let mut s = connect(ns, port)?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // The server may answer and stop reading before the request ends: read anyway.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    Some(String::from_utf8_lossy(&out).into_owned()).filter(|o| !o.is_empty())
}

/// `GET path` over HTTP/1.0 inside `ns`: the whole response.
fn http_get(ns: &Netns, port: u16, path: &str) -> Option<String> {
    exchange(
        ns,
        port,
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes(),
    )
}

#[test]
fn textfile_passes_promtool_and_node_exporter_serves_it() {
    if !common::require_root("textfile_passes_promtool_and_node_exporter_serves_it") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let textfiles = dir.path().join("textfile");
    std::fs::create_dir(&textfiles).unwrap();
    let prom = textfiles.join("netledger.prom");
    let o = netledger(&db, &["metrics", "--output", prom.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty());
    // Written whole: one file, no temporary left, a trailing newline, as stdout prints.
    let names: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["netledger.prom"]);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.ends_with('\n'));
    let stdout = netledger(&db, &["metrics"]);
    assert_eq!(
        samples(&String::from_utf8(stdout.stdout).unwrap()),
        samples(&text)
    );
    check_values(&samples(&text), &db);

    // promtool: valid, and not one lint warning.
    let o = run(Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&prom).unwrap()));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(said.trim().is_empty(), "promtool check metrics: {said}");

    // node_exporter's textfile collector serves it, in a namespace of our own.
    let ns = Netns::new("nlmet");
    let port = 9100;
    let exporter = Server(
        ns.cmd("prometheus-node-exporter")
            .arg(format!(
                "--collector.textfile.directory={}",
                textfiles.display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (apt-get install prometheus-node-exporter)"),
    );
    let page = common::wait_for("node_exporter's /metrics", Duration::from_secs(30), || {
        http_get(&ns, port, "/metrics").filter(|p| p.contains("200 OK"))
    });
    let body = page.split_once("\r\n\r\n").unwrap().1;
    let served = samples(body);
    assert_eq!(
        served.get("node_textfile_scrape_error"),
        Some(&0.0),
        "node_exporter could not read the file:\n{body}"
    );
    check_values(&served, &db);
    drop(exporter);
}

/// `run --metrics-listen`: GET /metrics answers with the 0.0.4 Content-Type, other paths
/// 404, other methods 405; a slowloris client, a huge request and a flood of idle
/// connections neither stall the passes nor, once refused or timed out, the scrapes.
#[test]
fn daemon_endpoint_serves_metrics_and_withstands_hostile_clients() {
    if !common::require_root("daemon_endpoint_serves_metrics_and_withstands_hostile_clients") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let ns = Netns::new("nlmetd");
    let port = 9417;
    let listen = format!("127.0.0.1:{port}");
    let d = common::Daemon::start(
        &ns,
        &db,
        &["--interval", "1s", "--metrics-listen", &listen],
        &[],
    );
    let ok = |r: &str| {
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(
            r.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{r}"
        );
        let body = r.split_once("\r\n\r\n").unwrap().1;
        let m = samples(body);
        assert!(
            m.contains_key("netledger_last_pass_timestamp_seconds"),
            "{body}"
        );
        m
    };
    let first = ok(&http_get(&ns, port, "/metrics").expect("a scrape answers"));
    // The same numbers as `netledger metrics` on the database (the passes go on between
    // the two: compare what does not move).
    let cli = netledger(&db, &["metrics"]);
    let cli = samples(&String::from_utf8(cli.stdout).unwrap());
    let k = format!(
        "netledger_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(first.get(&k), Some(&1.0));
    assert_eq!(first.get(&k), cli.get(&k));
    let r = http_get(&ns, port, "/").unwrap();
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = exchange(
        &ns,
        port,
        b"POST /metrics HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
    )
    .unwrap();
    assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
    assert!(r.contains("\r\nAllow: GET\r\n"), "{r}");

    // Slowloris: a request that never ends, a byte at a time.
    let mut slow = connect(&ns, port).unwrap();
    let slow_since = std::time::Instant::now();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nX-a: ").unwrap();
    let slow_writer = std::thread::spawn(move || {
        for _ in 0..40 {
            if slow.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    // A huge request head (eight times the limit): refused with 431.
    let huge = {
        let mut h = b"GET /metrics HTTP/1.1\r\n".to_vec();
        h.extend(std::iter::repeat_n(b'x', 64 << 10));
        h
    };
    let r = exchange(&ns, port, &huge).expect("an answer to the huge request");
    assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
    // While the slow client is still at it: a scrape answers, and passes go on.
    ok(&http_get(&ns, port, "/metrics").expect("a scrape beside the slow client"));
    // The endpoint gives a request head 5 s: the slow client was still connected.
    assert!(
        slow_since.elapsed() < Duration::from_secs(5),
        "the scrape came {:?} after the slow client connected",
        slow_since.elapsed()
    );
    d.wait_for_a_whole_pass();

    // A flood of idle connections: over the cap they are closed; the passes go on; once
    // the idle ones time out a scrape answers again.
    let flood: Vec<TcpStream> = (0..200).filter_map(|_| connect(&ns, port)).collect();
    assert!(flood.len() > 16);
    d.wait_for_a_whole_pass();
    common::wait_for("a scrape after the flood", Duration::from_secs(30), || {
        http_get(&ns, port, "/metrics").filter(|r| r.starts_with("HTTP/1.1 200 "))
    });
    drop(flood);
    slow_writer.join().unwrap();
    d.stop();
}

/// The configuration key: shown by `config` when set; an address that does not read is a
/// usage error naming the line.
#[test]
fn metrics_listen_is_a_configuration_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("n.toml");
    std::fs::write(&conf, "metrics_listen = \"127.0.0.1:9417\"\n").unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("config")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains("\nmetrics_listen = \"127.0.0.1:9417\"\n"),
        "{out}"
    );
    std::fs::write(&conf, "metrics_listen = \"nowhere\"\n").unwrap();
    let o = Command::new(bin())
        .arg("--config")
        .arg(&conf)
        .arg("config")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("metrics_listen"), "{err}");
}

/// A real Prometheus server scrapes the daemon (every second) while two real users make
/// real traffic in a namespace; its HTTP API's `netledger_user_{receive,transmit}_bytes_total`
/// equal, per user and to the byte, conntrack's own counters of their flows and
/// `netledger top --json`.
#[test]
fn prometheus_scrapes_the_daemon_and_agrees_with_conntrack_and_top() {
    if !common::require_root("prometheus_scrapes_the_daemon_and_agrees_with_conntrack_and_top") {
        return;
    }
    let net = common::Inet::new("nlpr", 120);
    let users = [
        (
            common::TestUser::new("nlpra"),
            41001u16,
            3000u64,
            700_000u64,
        ),
        (common::TestUser::new("nlprb"), 41002, 90_000, 20_000),
    ];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let d = common::Daemon::start(
        &net.host,
        &db,
        &["--interval", "1s", "--metrics-listen", "127.0.0.1:9417"],
        &[],
    );
    // Prometheus, in the host namespace, on its own configuration and storage.
    let conf = dir.path().join("prometheus.yml");
    std::fs::write(
        &conf,
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: netledger\n    static_configs:\n      - targets: ['127.0.0.1:9417']\n",
    )
    .unwrap();
    let tsdb = dir.path().join("tsdb");
    let _prometheus = Server(
        net.host
            .cmd("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", tsdb.display()))
            .arg("--web.listen-address=127.0.0.1:9090")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (apt-get install prometheus)"),
    );
    // Each user downloads and uploads over one TCP connection, alive across a pass.
    let tb = common::traffic_bin();
    let mut clients: Vec<common::Proc> = users
        .iter()
        .map(|(u, port, up, down)| {
            let mut c = u.cmd(&net.host, &tb.path);
            c.args(["client", "tcp", "198.51.100.2:9000"])
                .arg(up.to_string())
                .arg(down.to_string())
                .args(["--bind", &port.to_string()]);
            let mut p = common::Proc::spawn(&format!("{}'s client", u.name), c);
            p.expect("ready");
            p
        })
        .collect();
    d.wait_for_a_whole_pass();
    for c in &mut clients {
        c.go();
        c.expect("done");
    }
    clients.into_iter().for_each(common::Proc::wait_ok);
    d.wait_for_a_whole_pass();
    // The kernel's counters of each user's flow (still listed: TIME_WAIT).
    let entries = common::conntrack_entries(&net.host);
    let truth: BTreeMap<u32, (u64, u64)> = users
        .iter()
        .map(|(u, port, _, _)| {
            let e: Vec<_> = entries
                .iter()
                .filter(|e| e.proto == "tcp" && e.orig.sport == *port && e.orig.dport == 9000)
                .collect();
            assert_eq!(e.len(), 1, "{}'s flow: {entries:?}", u.name);
            (u.uid, (e[0].reply.bytes, e[0].orig.bytes))
        })
        .collect();
    let top = common::top_by_uid(&net.host, &db);
    for (uid, (rx, tx)) in &truth {
        let t = top[&Some(*uid)];
        assert_eq!(
            (t.rx_bytes, t.tx_bytes),
            (*rx, *tx),
            "top --json, uid {uid}"
        );
    }
    // Prometheus's view, once it has scraped after the last charge.
    let query = |metric: &str| -> Option<BTreeMap<u32, u64>> {
        let r = http_get(&net.host, 9090, &format!("/api/v1/query?query={metric}"))?;
        let body = r.split_once("\r\n\r\n")?.1;
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        let result = v["data"]["result"].as_array()?;
        Some(
            result
                .iter()
                .map(|s| {
                    (
                        s["metric"]["uid"].as_str().unwrap().parse().unwrap(),
                        s["value"][1].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect(),
        )
    };
    let want = |pick: fn(&(u64, u64)) -> u64| -> BTreeMap<u32, u64> {
        truth.iter().map(|(u, t)| (*u, pick(t))).collect()
    };
    let rx = want(|t| t.0);
    let tx = want(|t| t.1);
    common::wait_for(
        "Prometheus to hold the users' counters",
        Duration::from_secs(60),
        || {
            let got = (
                query("netledger_user_receive_bytes_total"),
                query("netledger_user_transmit_bytes_total"),
            );
            (got.0.as_ref() == Some(&rx) && got.1.as_ref() == Some(&tx)).then_some(())
        },
    );
    d.stop();
}

/// Rollups move the detail between tiers: the all-time counters do not move (a counter
/// that went down would break `rate()`), and the detail still sums to them.
#[test]
fn rollups_leave_the_counters_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let before = samples(&String::from_utf8(netledger(&db, &["metrics"]).stdout).unwrap());
    {
        let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
        let r = netledger::store::retention::Retention {
            raw: Duration::from_secs(3600),
            hourly: Duration::from_secs(2 * DAY as u64),
            ..Default::default()
        };
        let st = store
            .roll_up(chrono::Utc::now().timestamp(), &r, u64::MAX)
            .unwrap();
        assert!(st.raw_rows > 0 && st.hourly_rows > 0, "{st:?}");
        store.set_use_totals(false);
        let detail = store.metrics().unwrap();
        store.set_use_totals(true);
        let totals = store.metrics().unwrap();
        assert_eq!(detail.users, totals.users);
        assert_eq!(detail.unattributed, totals.unattributed);
    }
    let after = samples(&String::from_utf8(netledger(&db, &["metrics"]).stdout).unwrap());
    for (k, v) in &before {
        if k.contains("_total") {
            assert_eq!(after.get(k), Some(v), "{k}");
        }
    }
}

/// The `netledger_*` metric names `text` uses: every `netledger_` that does not continue a
/// longer name (a recording rule's `level:netledger_…:operation` is not one of netledger's).
fn metric_names(text: &str) -> BTreeSet<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("netledger_") {
        if text[..i].chars().next_back().is_some_and(word) {
            continue;
        }
        let name: String = text[i..].chars().take_while(|&c| word(c)).collect();
        if !name.contains(':') {
            names.insert(name);
        }
    }
    names
}

/// The names netledger exports: the `# TYPE` lines of `netledger metrics` on a database
/// with passes, and the daemon's lost-events counter (scraped in tests/daemon.rs).
fn exported_names() -> BTreeSet<String> {
    let dir = tempfile::tempdir().unwrap();
    let db = build_db(dir.path());
    let o = netledger(&db, &["metrics"]);
    assert!(o.status.success(), "{o:?}");
    let text = String::from_utf8(o.stdout).unwrap();
    let mut names: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    assert!(names.len() >= 13, "{text}");
    names.insert("netledger_conntrack_events_lost_total".into());
    // Exported once there was a gap (tests/firewall.rs scrapes it).
    names.insert("netledger_accounting_gaps_total".into());
    names
}

/// `promtool check rules FILE`: success, or the test fails with what promtool said.
fn promtool_check_rules(file: &Path) -> String {
    let o = Command::new("promtool")
        .args(["check", "rules"])
        .arg(file)
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool check rules {file:?}: {said}");
    assert!(
        said.contains("SUCCESS") && !said.contains("FAILED"),
        "{said}"
    );
    said
}

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(path)
}

/// contrib/prometheus/netledger.rules.yml: promtool accepts it, it has the recording rules
/// and alerts docs/operations.md names, and it uses no metric netledger does not export.
#[test]
fn prometheus_rules_pass_promtool_and_name_only_exported_metrics() {
    let file = contrib("prometheus/netledger.rules.yml");
    let said = promtool_check_rules(&file);
    assert!(said.contains("SUCCESS: 11 rules found"), "{said}");
    let text = std::fs::read_to_string(&file).unwrap();
    for want in [
        "record: user:netledger_user_bytes:increase1d",
        "record: user:netledger_user_bytes:increase30d",
        "alert: NetledgerHostStoppedReporting",
        "alert: NetledgerConntrackEventsLost",
        "alert: NetledgerUnattributedShareHigh",
        "alert: NetledgerAccountingGap",
    ] {
        assert!(text.contains(want), "{want} missing");
    }
    let exported = exported_names();
    let used = metric_names(&text);
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?} (exported: {exported:?})"
    );
    assert!(used.contains("netledger_conntrack_events_lost_total"));
}

/// Every `expr` string anywhere in `v`.
fn exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

/// contrib/grafana/netledger.json: valid JSON with the panels docs/operations.md names, every
/// query parses (written, Grafana's variables replaced by values, as recording rules of a
/// temporary file for `promtool check rules`), and it uses only metrics netledger exports.
#[test]
fn grafana_dashboard_parses_and_names_only_exported_metrics() {
    let text = std::fs::read_to_string(contrib("grafana/netledger.json")).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Receive rate per user",
        "Totals per user, selected range",
        "Top users, last 30 days (all hosts)",
        "Unattributed share",
        "Pass duration",
        "Conntrack events lost",
        "Hosts that stopped reporting",
    ] {
        assert!(titles.contains(&want), "{want} missing in {titles:?}");
    }
    let mut found = Vec::new();
    exprs(&dash, &mut found);
    assert!(found.len() >= 10, "{found:?}");
    let mut rules = String::from("groups:\n  - name: netledger-dashboard\n    rules:\n");
    for (i, e) in found.iter().enumerate() {
        let e = e
            .replace("$__rate_interval", "5m")
            .replace("$__range", "1d")
            .replace("$__interval", "1m")
            .replace("$instance", ".*");
        assert!(
            !e.contains('$'),
            "a Grafana variable the test does not know: {e}"
        );
        rules.push_str(&format!(
            "      - record: dashboard_check_{i}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let said = promtool_check_rules(&file);
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", found.len())),
        "{said}"
    );
    let exported = exported_names();
    let used = metric_names(&text);
    let unknown: Vec<_> = used.difference(&exported).collect();
    assert!(
        unknown.is_empty(),
        "not exported: {unknown:?} (exported: {exported:?})"
    );
    assert!(used.len() >= 8, "{used:?}");
}

/// The alerts of contrib/prometheus/netledger.rules.yml fire on what they watch and on
/// nothing else, and the per-user totals add up across hosts by user name
/// (`promtool test rules`, on made-up series of two hosts).
#[test]
fn prometheus_alerts_fire_on_what_they_watch() {
    let rules = contrib("prometheus/netledger.rules.yml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("netledger.test.yml");
    std::fs::write(
        &file,
        format!(
            r#"rule_files:
  - {rules}
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'netledger_last_pass_timestamp_seconds{{instance="a"}}'
        values: '0+60x10 600x200'
      - series: 'netledger_last_pass_timestamp_seconds{{instance="b"}}'
        values: '0+60x210'
      - series: 'netledger_conntrack_events_lost_total{{instance="a"}}'
        values: '0x20 4x200'
      - series: 'netledger_conntrack_events_lost_total{{instance="b"}}'
        values: '0x220'
      - series: 'netledger_accounting_gaps_total{{instance="a",cause="table-gone"}}'
        values: '0x20 1x200'
      - series: 'netledger_user_receive_bytes_total{{instance="a",uid="1000",user="alice"}}'
        values: '0+1000x220'
      - series: 'netledger_user_transmit_bytes_total{{instance="a",uid="1000",user="alice"}}'
        values: '0+500x220'
      - series: 'netledger_user_receive_bytes_total{{instance="b",uid="1001",user="alice"}}'
        values: '0+1000x220'
      - series: 'netledger_user_transmit_bytes_total{{instance="b",uid="1001",user="alice"}}'
        values: '0+500x220'
      - series: 'netledger_unattributed_receive_bytes_total{{instance="a",reason="no-socket"}}'
        values: '0+150x220'
      - series: 'netledger_unattributed_transmit_bytes_total{{instance="a",reason="no-socket"}}'
        values: '0+50x220'
      - series: 'netledger_unattributed_receive_bytes_total{{instance="b",reason="no-socket"}}'
        values: '0+10x220'
      - series: 'netledger_unattributed_transmit_bytes_total{{instance="b",reason="no-socket"}}'
        values: '0+5x220'
    alert_rule_test:
      # a's last pass ended at 10m: nothing at 20m (not yet 10 minutes plus 5), then a.
      - eval_time: 20m
        alertname: NetledgerHostStoppedReporting
      - eval_time: 30m
        alertname: NetledgerHostStoppedReporting
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
            exp_annotations:
              summary: "netledger on a has not finished a pass for 20m 0s"
              description: "Check `systemctl status netledger netledger-snapshot.timer` and `journalctl -u netledger` on the host."
      # 4 events lost at 21m on a; none on b; nothing before, nothing 15 minutes later.
      - eval_time: 20m
        alertname: NetledgerConntrackEventsLost
      - eval_time: 25m
        alertname: NetledgerConntrackEventsLost
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a}}
            exp_annotations:
              summary: "netledger on a lost 4 conntrack events in 15 minutes"
              description: "The event buffer overran; raise `event_buffer` (and the growth limit) in /etc/netledger/netledger.toml. Bytes of flows whose end was lost since the last pass may be missing."
      - eval_time: 40m
        alertname: NetledgerConntrackEventsLost
      # a's table flushed at 21m: an hour of alert, then nothing.
      - eval_time: 20m
        alertname: NetledgerAccountingGap
      - eval_time: 25m
        alertname: NetledgerAccountingGap
        exp_alerts:
          - exp_labels: {{severity: warning, instance: a, cause: table-gone}}
            exp_annotations:
              summary: "netledger on a found accounting off or at risk (table-gone)"
              description: "`journalctl -u netledger` on the host has the line; `SELECT * FROM accounting_gaps` in its database says when and for how long."
      - eval_time: 90m
        alertname: NetledgerAccountingGap
      # a: 200 of 1,700 bytes a minute unattributed (11.76 %); b: 15 of 1,515 (1 %).
      - eval_time: 150m
        alertname: NetledgerUnattributedShareHigh
        exp_alerts:
          - exp_labels: {{severity: info, instance: a}}
            exp_annotations:
              summary: "11.76% of the traffic on a is charged to no user"
              description: "`netledger top` on the host lists the unattributed traffic by reason (no-socket, forwarded, ambiguous, ...)."
    # alice has uid 1000 on a and 1001 on b: the fleet total is by name.
    promql_expr_test:
      - expr: user:netledger_user_bytes:increase1d
        eval_time: 200m
        exp_samples:
          - labels: 'user:netledger_user_bytes:increase1d{{user="alice"}}'
            value: 600000
"#,
            rules = rules.display()
        ),
    )
    .unwrap();
    let o = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success() && said.contains("SUCCESS"), "{said}");
}

/// Mode bits and owner uid of `p`.
fn mode_and_owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.mode() & 0o7777, m.uid())
}

/// node_exporter's textfile collector on `dir`, run as `user` (Debian's runs as the
/// unprivileged `prometheus`) in `ns`: the samples it serves.
fn node_exporter_samples(ns: &Netns, user: &common::TestUser, dir: &Path) -> BTreeMap<String, f64> {
    let port = 9100;
    let _exporter = Server(
        user.cmd(ns, "prometheus-node-exporter")
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--collector.disable-defaults", "--collector.textfile"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-node-exporter (apt-get install prometheus-node-exporter)"),
    );
    let page = common::wait_for("node_exporter's /metrics", Duration::from_secs(30), || {
        http_get(ns, port, "/metrics").filter(|p| p.contains("200 OK"))
    });
    samples(page.split_once("\r\n\r\n").unwrap().1)
}

/// contrib/systemd/netledger-snapshot-textfile.conf, run as systemd runs the snapshot unit
/// with it: its ExecStart as a fresh unprivileged uid (the dynamic user) holding only the
/// unit's capabilities, its state directory 0750 under root's 0700 /var/lib/private; then
/// its "!" ExecStartPost steps as root with only the unit's capability bounding set (no
/// CAP_DAC_OVERRIDE) and no new privileges; all under the unit's UMask=0027.
/// node_exporter's directory is root's 0755. The file is root's, 0644, no temporary file is
/// left, and a node_exporter running as another unprivileged user serves what `metrics`
/// prints.
#[test]
fn the_textfile_drop_in_writes_a_file_node_exporter_serves() {
    use std::os::unix::fs::PermissionsExt;
    if !common::require_root("the_textfile_drop_in_writes_a_file_node_exporter_serves") {
        return;
    }
    let chmod =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o755);
    let private = dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    chmod(&private, 0o700);
    let state = private.join("netledger");
    std::fs::create_dir(&state).unwrap();
    let svc = common::TestUser::new("nltfs");
    std::os::unix::fs::chown(&state, Some(svc.uid), Some(svc.gid)).unwrap();
    chmod(&state, 0o750);
    let textfiles = dir.path().join("node-exporter");
    std::fs::create_dir(&textfiles).unwrap();
    chmod(&textfiles, 0o755);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit =
        |name: &str| std::fs::read_to_string(root.join("contrib/systemd").join(name)).unwrap();
    let values = |text: &str, key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_owned)
            .collect()
    };
    let db = state.join("netledger.db");
    let words = |line: &str| -> Vec<String> {
        line.split_whitespace()
            .map(|w| {
                w.replace("/usr/bin/netledger", bin().to_str().unwrap())
                    .replace("/var/lib/netledger", state.to_str().unwrap())
                    .replace(
                        "/var/lib/prometheus/node-exporter",
                        textfiles.to_str().unwrap(),
                    )
            })
            .collect()
    };
    let service = unit("netledger-snapshot.service");
    let drop_in = unit("netledger-snapshot-textfile.conf");
    let umask = values(&service, "UMask").pop().unwrap();
    assert_eq!(umask, "0027");
    let caps: Vec<String> = values(&service, "CapabilityBoundingSet")
        .pop()
        .unwrap()
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    let caps = caps.join(",");
    let with_umask = |c: &mut Command, words: &[String]| {
        c.args(["--", "sh", "-c"])
            .arg(format!("umask {umask}; exec \"$@\""))
            .arg("sh")
            .args(words);
    };

    // The pass, as the dynamic user, in a namespace set up as ExecStartPre=+ does.
    let ns = Netns::new("nltfn");
    run(ns.cmd(bin()).arg("setup"));
    let exec = values(&drop_in, "ExecStart").pop().unwrap();
    let mut c = ns.cmd("setpriv");
    c.arg(format!("--reuid={}", svc.uid))
        .arg(format!("--regid={}", svc.gid))
        .args(["--clear-groups", "--no-new-privs"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set=-all,{caps}"));
    with_umask(&mut c, &words(&exec));
    run(&mut c);
    // The "!" steps.
    let post = values(&drop_in, "ExecStartPost");
    assert!(!post.is_empty());
    for step in &post {
        let step = step.strip_prefix('!').expect("a \"!\" step");
        let mut c = ns.cmd("setpriv");
        c.arg(format!("--bounding-set=-all,{caps}"))
            .args(["--inh-caps=-all", "--no-new-privs"]);
        with_umask(&mut c, &words(step));
        run(&mut c);
    }
    let prom = textfiles.join("netledger.prom");
    assert_eq!(mode_and_owner(&prom), (0o644, 0));
    let names: Vec<_> = std::fs::read_dir(&textfiles)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["netledger.prom"], "a temporary file was left");

    let prometheus = common::TestUser::new("nltfp");
    let served = node_exporter_samples(&ns, &prometheus, &textfiles);
    assert_eq!(
        served.get("node_textfile_scrape_error"),
        Some(&0.0),
        "node_exporter could not read the file: {served:?}"
    );
    let printed = samples(&String::from_utf8(netledger(&db, &["metrics"]).stdout).unwrap());
    assert!(
        printed.contains_key("netledger_last_pass_timestamp_seconds"),
        "{printed:?}"
    );
    // Every series; the database's size is the one value that moved (the write-ahead log
    // was checkpointed when the pass closed the database, after writing the file).
    for (k, v) in &printed {
        if k != "netledger_database_bytes" {
            assert_eq!(served.get(k), Some(v), "{k}");
        } else {
            assert!(served.contains_key(k), "{k}");
        }
    }
}

/// `snapshot` writes the textfile after its pass when the configuration key
/// `metrics_textfile` (or the flag `--metrics-textfile`, which wins) names one: under
/// the units' umask 0027 still mode 0644, the same series `metrics` prints, and
/// node_exporter (as an unprivileged user) serves it. `config` shows the key.
#[test]
fn snapshot_writes_the_metrics_textfile_after_its_pass() {
    if !common::require_root("snapshot_writes_the_metrics_textfile_after_its_pass") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.path().join("s.db");
    let textfiles = dir.path().join("node-exporter");
    std::fs::create_dir(&textfiles).unwrap();
    let from_key = textfiles.join("key.prom");
    let conf = dir.path().join("netledger.toml");
    std::fs::write(
        &conf,
        format!("metrics_textfile = \"{}\"\n", from_key.display()),
    )
    .unwrap();
    let shown = run(Command::new(bin()).arg("--config").arg(&conf).arg("config"));
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains(&format!(
            "\nmetrics_textfile = \"{}\"\n",
            from_key.display()
        )),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let ns = Netns::new("nltsn");
    let snapshot = |extra: &[&str]| {
        run(ns
            .cmd("sh")
            .args(["-c", "umask 0027; exec \"$@\"", "sh"])
            .arg(bin())
            .arg("--config")
            .arg(&conf)
            .arg("--db")
            .arg(&db)
            .arg("snapshot")
            .args(extra))
    };
    snapshot(&[]);
    assert_eq!(mode_and_owner(&from_key), (0o644, 0));
    let printed = samples(&String::from_utf8(netledger(&db, &["metrics"]).stdout).unwrap());
    let written = samples(&std::fs::read_to_string(&from_key).unwrap());
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        printed.keys().collect::<Vec<_>>()
    );
    assert!(
        written.contains_key("netledger_last_pass_timestamp_seconds"),
        "{written:?}"
    );

    // The flag wins over the key.
    let from_flag = textfiles.join("flag.prom");
    std::fs::remove_file(&from_key).unwrap();
    snapshot(&["--metrics-textfile", from_flag.to_str().unwrap()]);
    assert!(!from_key.exists());
    assert_eq!(mode_and_owner(&from_flag), (0o644, 0));

    // With the daemon accounting into the same database the pass has nothing to do, but
    // the file still follows the database.
    let d = common::Daemon::start(&ns, &db, &["--interval", "1s"], &[]);
    d.wait_for_a_whole_pass();
    std::fs::remove_file(&from_flag).unwrap();
    let o = snapshot(&["--metrics-textfile", from_flag.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nothing to do"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(mode_and_owner(&from_flag), (0o644, 0));
    let written = samples(&std::fs::read_to_string(&from_flag).unwrap());
    let last = |s: &BTreeMap<String, f64>| s["netledger_last_pass_timestamp_seconds"];
    let printed = samples(&String::from_utf8(netledger(&db, &["metrics"]).stdout).unwrap());
    assert!(last(&written) >= last(&printed) - 2.0, "{written:?}");
    d.stop();

    let prometheus = common::TestUser::new("nltsp");
    let served = node_exporter_samples(&ns, &prometheus, &textfiles);
    assert_eq!(
        served.get("node_textfile_scrape_error"),
        Some(&0.0),
        "{served:?}"
    );
    assert!(
        served.contains_key("netledger_last_pass_timestamp_seconds"),
        "{served:?}"
    );
}

/// The `/metrics` samples of a daemon listening on 127.0.0.1:`port` in `ns`.
fn scrape(ns: &Netns, port: u16) -> BTreeMap<String, f64> {
    let page = common::wait_for("the daemon's /metrics", Duration::from_secs(30), || {
        http_get(ns, port, "/metrics").filter(|p| p.contains("200 OK"))
    });
    samples(page.split_once("\r\n\r\n").unwrap().1)
}

/// Counters never go down across a real daemon restart and a rollup: a real user's TCP
/// connection carries traffic before the daemon stops and after it starts again (the
/// same flow, alive throughout); scrape `/metrics`, stop the daemon, roll every raw and
/// hourly row up to the daily tier, start the daemon again, scrape: no `_total` series
/// went down or vanished, the user's went up, and they equal conntrack's own counters of
/// the flow to the byte (the restart neither lost nor charged twice what it carried).
#[test]
fn counters_never_go_down_across_a_daemon_restart_and_a_rollup() {
    if !common::require_root("counters_never_go_down_across_a_daemon_restart_and_a_rollup") {
        return;
    }
    let net = common::Inet::new("nlmr", 120);
    let user = common::TestUser::new("nlmru");
    let port = 41011u16;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("r.db");
    let args = ["--interval", "1s", "--metrics-listen", "127.0.0.1:9417"];
    let d = common::Daemon::start(&net.host, &db, &args, &[]);
    let tb = common::traffic_bin();
    let mut client = {
        let mut c = user.cmd(&net.host, &tb.path);
        c.args(["client", "tcp", "198.51.100.2:9000", "5000", "300000"])
            .args(["--bind", &port.to_string()]);
        common::Proc::spawn("the user's client", c)
    };
    client.expect("ready");
    d.wait_for_a_whole_pass();
    let before = scrape(&net.host, 9417);
    let rx = format!(
        "netledger_user_receive_bytes_total{{uid=\"{}\",user=\"{}\"}}",
        user.uid, user.name
    );
    let tx = rx.replace("receive", "transmit");
    assert!(
        before.get(&rx).is_some_and(|v| *v >= 300_000.0),
        "{before:?}"
    );
    d.stop();

    {
        let mut store = Store::open(&db, &OpenOptions::default()).unwrap();
        let r = netledger::store::retention::Retention {
            raw: Duration::from_secs(3600),
            hourly: Duration::from_secs(2 * DAY as u64),
            ..Default::default()
        };
        let st = store
            .roll_up(chrono::Utc::now().timestamp() + 3 * DAY, &r, u64::MAX)
            .unwrap();
        assert!(st.raw_rows > 0, "nothing rolled up: {st:?}");
    }

    let d = common::Daemon::start(&net.host, &db, &args, &[]);
    client.go();
    client.expect("done");
    client.wait_ok();
    d.wait_for_a_whole_pass();
    let after = scrape(&net.host, 9417);
    for (k, v) in &before {
        if k.ends_with("_total") || k.contains("_total{") {
            let now = after
                .get(k)
                .unwrap_or_else(|| panic!("{k} vanished: {after:?}"));
            assert!(now >= v, "{k} went down: {v} -> {now}");
        }
    }
    assert!(
        after[&rx] >= before[&rx] + 300_000.0,
        "{before:?}\n{after:?}"
    );
    let entries = common::conntrack_entries(&net.host);
    let flow: Vec<_> = entries
        .iter()
        .filter(|e| e.proto == "tcp" && e.orig.sport == port && e.orig.dport == 9000)
        .collect();
    assert_eq!(flow.len(), 1, "{entries:?}");
    assert_eq!(
        (after[&rx] as u64, after[&tx] as u64),
        (flow[0].reply.bytes, flow[0].orig.bytes),
        "the user's counters against conntrack's"
    );
    d.stop();
}
