//! `netledger metrics` (issue 12): the Prometheus text exposition checked by the real
//! tools — `promtool check metrics`, and a real node_exporter's textfile collector serving
//! the file — with every value compared to `netledger top --json` of the same database.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, run, Netns};
use netledger::account::account_pass;
use netledger::attribute::{Attributed, Attribution, Direction, Reason, Verdict};
use netledger::model::{Counters, Flow, Tuple};
use netledger::store::{OpenOptions, PassRecord, Store};

const DAY: i64 = 86_400;

fn flow(id: u32, remote: &str, sport: u16, out: (u64, u64), back: (u64, u64)) -> Flow {
    let t = |src: &str, dst: &str, sport, dport| Tuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto: 6,
        sport,
        dport,
    };
    Flow {
        orig: t("198.51.100.1", remote, sport, 443),
        reply: t(remote, "198.51.100.1", 443, sport),
        id,
        zone: 0,
        mark: 0,
        status: 0,
        orig_counters: Some(Counters {
            bytes: out.0,
            packets: out.1,
        }),
        reply_counters: Some(Counters {
            bytes: back.0,
            packets: back.1,
        }),
        start_ns: None,
        stop_ns: None,
    }
}

fn user(uid: u32) -> Verdict {
    Verdict::User(Attribution {
        uid,
        program: Some("curl".into()),
        direction: Direction::Out,
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

/// A real node_exporter, killed (by pid) on drop.
struct Exporter(Child);

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `GET path` over HTTP/1.0 from inside `ns` (a thread that enters it): the whole
/// response, or None when nothing listens yet.
pub fn http_get(ns: &Netns, port: u16, path: &str) -> Option<String> {
    let f = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let path = path.to_owned();
    std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            f.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap();
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    })
    .join()
    .unwrap()
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
    let exporter = Exporter(
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
