//! The Prometheus text exposition (format 0.0.4, what node_exporter's textfile collector
//! and every Prometheus server read) of [`MetricsData`], through the official
//! `prometheus-client` encoder. Its default OpenMetrics output (`# EOF`, `_created`,
//! `info` and `unknown` types) is not used: node_exporter's textfile parser rejects it.
//!
//! Series come out in a fixed order (users by uid, reasons by name): the crate's `Family`
//! keeps its series in a `HashMap`, whose order changes from one process to the next, so
//! labelled counters go through [`Sorted`] instead.
//!
//! No remote-address, port or program labels: the series per host are one per user and
//! direction (bytes and packets), one per unattributed reason, and a handful of gauges;
//! and, only when `metrics_units` asks, one per named systemd unit and direction (never
//! per Slurm job: job ids are unbounded).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::{
    prometheus_text, EncodeCounterValue, EncodeMetric, MetricEncoder,
};
use prometheus_client::metrics::counter::{Atomic, Counter};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::store::metrics::MetricsData;

/// The `Content-Type` of what [`encode`] returns.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels = Vec<(String, String)>;

/// A family of counters encoded in the order the series were added (the crate's `Family`
/// encodes in its `HashMap`'s order, different in every process): whole counts by default,
/// seconds as [`SortedSeconds`].
#[derive(Debug, Default)]
struct SortedOf<N>(Vec<(Labels, Counter<N, AtomicU64>)>);

/// Counts.
type Sorted = SortedOf<u64>;
/// Seconds.
type SortedSeconds = SortedOf<f64>;

impl<N> SortedOf<N>
where
    AtomicU64: Atomic<N>,
{
    fn push(&mut self, labels: Labels, v: N) {
        let c = Counter::<N, AtomicU64>::default();
        c.inc_by(v);
        self.0.push((labels, c));
    }
}

impl<N: EncodeCounterValue + std::fmt::Debug> EncodeMetric for SortedOf<N>
where
    AtomicU64: Atomic<N>,
{
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, c) in &self.0 {
            c.encode(encoder.encode_family(labels)?)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        Counter::<u64>::TYPE
    }
}

fn gauge(registry: &mut Registry, name: &str, help: &str, v: i64) {
    let g = Gauge::<i64>::default();
    g.set(v);
    registry.register(name, help, g);
}

/// What only the daemon counts, since it started: its endpoint shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DaemonCounts {
    /// Conntrack events lost to overruns, as the kernel counted them.
    pub events_lost: u64,
    /// Finished connections not logged because they were local.
    pub log_skipped_local: u64,
    /// Finished connections not logged because they went over the log's limit.
    pub log_skipped_limit: u64,
}

/// The exposition of `data`, ending with a newline. `version` is netledger's; `daemon`
/// is what the daemon counted since it started (`None` outside the daemon: those series
/// are then left out).
pub fn encode(data: &MetricsData, version: &str, daemon: Option<DaemonCounts>) -> String {
    let mut r = Registry::default();
    register_users(&mut r, data);
    register_units(&mut r, data);
    register_unattributed(&mut r, data);
    register_health(&mut r, data);
    if let Some(d) = daemon {
        register_daemon(&mut r, d);
    }
    r.register(
        "netledger_build",
        "The netledger version",
        Info::new(vec![("version".to_owned(), version.to_owned())]),
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &r).expect("writing to a String cannot fail");
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// Per user: bytes and packets each way, all time.
fn register_users(r: &mut Registry, data: &MetricsData) {
    let mut users = [
        (
            "receive_bytes",
            "Bytes received by the user's sockets, all time",
        ),
        (
            "transmit_bytes",
            "Bytes sent by the user's sockets, all time",
        ),
        (
            "receive_packets",
            "Packets received by the user's sockets, all time",
        ),
        (
            "transmit_packets",
            "Packets sent by the user's sockets, all time",
        ),
    ]
    .map(|(n, h)| (format!("netledger_user_{n}"), h, Sorted::default()));
    let mut by_uid: Vec<_> = data.users.iter().collect();
    by_uid.sort_by(|a, b| (a.uid, &a.user).cmp(&(b.uid, &b.user)));
    for u in by_uid {
        let labels = vec![
            ("uid".to_owned(), u.uid.to_string()),
            ("user".to_owned(), u.user.clone().unwrap_or_default()),
        ];
        let t = &u.traffic;
        for (f, v) in users
            .iter_mut()
            .zip([t.rx_bytes, t.tx_bytes, t.rx_packets, t.tx_packets])
        {
            f.2.push(labels.clone(), v);
        }
    }
    for (name, help, f) in users {
        r.register(name, help, f);
    }
}

/// Per systemd unit `metrics_units` names (none by default): bytes each way since 00:00
/// UTC, a counter that starts again from zero every day.
fn register_units(r: &mut Registry, data: &MetricsData) {
    if data.units.is_empty() {
        return;
    }
    let [mut rx, mut tx] = [
        (
            "receive",
            "Bytes received by sockets created in the unit's cgroups since 00:00 UTC \
             (reset daily)",
        ),
        (
            "transmit",
            "Bytes sent by sockets created in the unit's cgroups since 00:00 UTC \
             (reset daily)",
        ),
    ]
    .map(|(n, h)| (format!("netledger_unit_{n}_bytes"), h, Sorted::default()));
    // By name, as the store gives them.
    for u in &data.units {
        let labels = vec![("unit".to_owned(), u.unit.clone())];
        rx.2.push(labels.clone(), u.traffic.rx_bytes);
        tx.2.push(labels, u.traffic.tx_bytes);
    }
    for (name, help, f) in [rx, tx] {
        r.register(name, help, f);
    }
}

/// The unattributed bytes per reason and the excluded bytes, all time.
fn register_unattributed(r: &mut Registry, data: &MetricsData) {
    let [mut un_rx, mut un_tx] = [
        (
            "receive",
            "Bytes received that no user could be charged for, by reason, all time",
        ),
        (
            "transmit",
            "Bytes sent that no user could be charged for, by reason, all time",
        ),
    ]
    .map(|(n, h)| {
        (
            format!("netledger_unattributed_{n}_bytes"),
            h,
            Sorted::default(),
        )
    });
    // A BTreeMap: by reason.
    for (reason, t) in &data.unattributed {
        let labels = vec![("reason".to_owned(), reason.clone())];
        un_rx.2.push(labels.clone(), t.rx_bytes);
        un_tx.2.push(labels, t.tx_bytes);
    }
    for (name, help, f) in [un_rx, un_tx] {
        r.register(name, help, f);
    }
    for (n, h, v) in [
        (
            "receive",
            "Bytes received from local networks, charged to nobody, all time",
            data.excluded.rx_bytes,
        ),
        (
            "transmit",
            "Bytes sent to local networks, charged to nobody, all time",
            data.excluded.tx_bytes,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        r.register(format!("netledger_excluded_{n}_bytes"), h, c);
    }
}

/// The last pass, the database's size and the times accounting may have been off.
fn register_health(r: &mut Registry, data: &MetricsData) {
    if let Some(p) = &data.last_pass {
        gauge(
            r,
            "netledger_last_pass_timestamp_seconds",
            "When the last accounting pass ended, Unix time",
            p.finished_at,
        );
        if let Some(d) = p.duration_secs {
            gauge(
                r,
                "netledger_pass_duration_seconds",
                "How long the last accounting pass took, whole seconds",
                d,
            );
        }
        gauge(
            r,
            "netledger_flows",
            "Conntrack flows the last pass saw",
            p.flows as i64,
        );
        gauge(
            r,
            "netledger_sockets",
            "Sockets the last pass read",
            p.sockets as i64,
        );
    }
    gauge(
        r,
        "netledger_database_bytes",
        "Size of the database file and its write-ahead log",
        data.database_bytes as i64,
    );
    if !data.gaps.is_empty() {
        // Only once there was one: a host where accounting never stopped shows no series.
        let (mut n, mut secs) = (Sorted::default(), SortedSeconds::default());
        for (cause, (count, ms)) in &data.gaps {
            let labels = vec![("cause".to_owned(), cause.clone())];
            n.push(labels.clone(), *count);
            secs.push(labels, *ms as f64 / 1000.0);
        }
        r.register(
            "netledger_accounting_gaps",
            "Times accounting stopped or may have stopped (table gone or re-created, \
             accounting off, notrack rule, conntrack table full), by cause, all time",
            n,
        );
        r.register(
            "netledger_accounting_gap_seconds",
            "How long accounting may have been off, by cause, all time (where known)",
            secs,
        );
    }
}

/// The daemon's own counters since it started.
fn register_daemon(r: &mut Registry, d: DaemonCounts) {
    let c = Counter::<u64>::default();
    c.inc_by(d.events_lost);
    r.register(
        "netledger_conntrack_events_lost",
        "Conntrack events the daemon lost to receive-buffer overruns since it started",
        c,
    );
    let mut skipped = Sorted::default();
    skipped.push(
        vec![("reason".to_owned(), "limit".to_owned())],
        d.log_skipped_limit,
    );
    skipped.push(
        vec![("reason".to_owned(), "local".to_owned())],
        d.log_skipped_local,
    );
    r.register(
        "netledger_connection_log_skipped",
        "Finished connections the daemon charged but did not log since it started: \
             local ones (connection_log_local off), or over connection_log_rate/burst",
        skipped,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Traffic;
    use crate::store::metrics::{LastPass, UnitTotal, UserTotal};

    #[test]
    fn the_exposition_is_prometheus_text_0_0_4() {
        let t = |b| Traffic {
            rx_bytes: b,
            tx_bytes: b + 1,
            rx_packets: 2,
            tx_packets: 3,
        };
        let data = MetricsData {
            users: vec![UserTotal {
                uid: 1000,
                user: Some("a\"b".into()),
                traffic: t(10),
            }],
            unattributed: [("no-socket".to_owned(), t(5))].into(),
            excluded: t(7),
            last_pass: Some(LastPass {
                finished_at: 1_800_000_000,
                duration_secs: Some(1),
                flows: 4,
                sockets: 9,
            }),
            database_bytes: 4096,
            gaps: [("table-gone".to_owned(), (2, 1500))].into(),
            units: vec![],
        };
        let text = encode(&data, "0.1.0", None);
        for line in [
            "# TYPE netledger_user_receive_bytes_total counter",
            "netledger_user_receive_bytes_total{uid=\"1000\",user=\"a\\\"b\"} 10",
            "netledger_user_transmit_bytes_total{uid=\"1000\",user=\"a\\\"b\"} 11",
            "netledger_user_receive_packets_total{uid=\"1000\",user=\"a\\\"b\"} 2",
            "netledger_user_transmit_packets_total{uid=\"1000\",user=\"a\\\"b\"} 3",
            "netledger_unattributed_receive_bytes_total{reason=\"no-socket\"} 5",
            "netledger_unattributed_transmit_bytes_total{reason=\"no-socket\"} 6",
            "netledger_excluded_receive_bytes_total 7",
            "netledger_excluded_transmit_bytes_total 8",
            "netledger_last_pass_timestamp_seconds 1800000000",
            "netledger_flows 4",
            "netledger_sockets 9",
            "netledger_database_bytes 4096",
            "netledger_accounting_gaps_total{cause=\"table-gone\"} 2",
            "netledger_accounting_gap_seconds_total{cause=\"table-gone\"} 1.5",
            "# TYPE netledger_build_info gauge",
            "netledger_build_info{version=\"0.1.0\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
        assert!(
            !text.contains("# EOF") && !text.contains("_created"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
        assert!(!text.contains("netledger_conntrack_events_lost"), "{text}");
        assert!(!text.contains("netledger_unit_"), "off by default: {text}");
        assert!(!text.contains("netledger_connection_log_skipped"), "{text}");
        let daemon = encode(
            &data,
            "0.1.0",
            Some(DaemonCounts {
                events_lost: 42,
                log_skipped_local: 3000,
                log_skipped_limit: 550,
            }),
        );
        for line in [
            "# TYPE netledger_conntrack_events_lost_total counter",
            "netledger_conntrack_events_lost_total 42",
            "# TYPE netledger_connection_log_skipped_total counter",
            "netledger_connection_log_skipped_total{reason=\"limit\"} 550",
            "netledger_connection_log_skipped_total{reason=\"local\"} 3000",
        ] {
            assert!(
                daemon.lines().any(|l| l == line),
                "{line:?} missing in\n{daemon}"
            );
        }
    }

    /// Opted in (`metrics_units`), a unit's bytes each way, labelled by unit, in the
    /// order given (by name); nothing per job.
    #[test]
    fn units_asked_for_have_series_of_their_own() {
        let t = |b| Traffic {
            rx_bytes: b,
            tx_bytes: 2 * b,
            rx_packets: 1,
            tx_packets: 1,
        };
        let data = MetricsData {
            units: vec![
                UnitTotal {
                    unit: "backup.service".into(),
                    traffic: t(500),
                },
                UnitTotal {
                    unit: "nginx.service".into(),
                    traffic: t(0),
                },
            ],
            ..MetricsData::default()
        };
        let text = encode(&data, "0.1.0", None);
        let units: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("netledger_unit_"))
            .collect();
        assert_eq!(
            units,
            [
                "netledger_unit_receive_bytes_total{unit=\"backup.service\"} 500",
                "netledger_unit_receive_bytes_total{unit=\"nginx.service\"} 0",
                "netledger_unit_transmit_bytes_total{unit=\"backup.service\"} 1000",
                "netledger_unit_transmit_bytes_total{unit=\"nginx.service\"} 0",
            ],
            "{text}"
        );
        assert!(text.contains("# TYPE netledger_unit_receive_bytes_total counter"));
        assert!(!text.contains("job"), "{text}");
    }

    /// The same data inserted in two different orders encodes to the same text, series
    /// sorted by uid (as a number), then by reason.
    #[test]
    fn series_order_is_stable_and_sorted() {
        let t = |b| Traffic {
            rx_bytes: b,
            tx_bytes: b,
            rx_packets: 1,
            tx_packets: 1,
        };
        let users: Vec<UserTotal> = (0..60u32)
            .map(|i| UserTotal {
                uid: [7, 70, 700, 1000, 65534][i as usize % 5] + i * 3,
                user: Some(format!("u{i}")),
                traffic: t(u64::from(i) + 1),
            })
            .collect();
        let reasons = ["no-socket", "gone", "ambiguous", "unknown"];
        let data = |users: Vec<UserTotal>| MetricsData {
            users,
            unattributed: reasons.iter().map(|r| (r.to_string(), t(3))).collect(),
            ..MetricsData::default()
        };
        let mut reversed = users.clone();
        reversed.reverse();
        let mut shuffled = users.clone();
        shuffled.sort_by_key(|u| (u.uid * 7919) % 61);
        let a = encode(&data(users), "0.1.0", None);
        for other in [reversed, shuffled] {
            assert_eq!(a, encode(&data(other), "0.1.0", None));
        }
        let uids: Vec<u32> = a
            .lines()
            .filter(|l| l.starts_with("netledger_user_receive_bytes_total{"))
            .map(|l| l.split('"').nth(1).unwrap().parse().unwrap())
            .collect();
        assert_eq!(uids.len(), 60);
        assert!(uids.windows(2).all(|w| w[0] < w[1]), "{uids:?}");
        let got: Vec<&str> = a
            .lines()
            .filter(|l| l.starts_with("netledger_unattributed_receive_bytes_total{"))
            .map(|l| l.split('"').nth(1).unwrap())
            .collect();
        let mut want = reasons.to_vec();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}
