//! Connections as the kernel shows them right now, for the read-only commands: the open
//! ones (`connections`), and the ones over but not logged yet ([`waiting`], for `log` and
//! `summary`). Pure over a conntrack dump and its verdicts; reading them is the caller's
//! (`pass::observe`, [`waiting::live_table`]). Rendering lives in `report`.
//!
//! `netledger live` adds rates: [`meter`] charges successive observations against flow
//! state kept in memory, [`shortflows`] hears the connections that end between two
//! refreshes, and [`view`] keeps the refreshes of the moving window and makes the rows.

pub mod meter;
pub mod shortflows;
pub mod view;
pub mod waiting;

use std::net::SocketAddr;

use crate::account::Traffic;
use crate::attribute::{Attributed, Direction};
use crate::model::{Flow, Tuple};
use crate::sources::conntrack::Dump;

/// One open connection, from this host's point of view.
pub struct OpenConnection<'a> {
    /// The flow.
    pub flow: &'a Flow,
    /// Its TCP state (`enum tcp_conntrack`), for TCP.
    pub tcp_state: Option<crate::model::CtTcpState>,
    /// Its verdict.
    pub at: &'a Attributed,
    /// Local end, `address:port` (post-DNAT for incoming connections).
    pub local: String,
    /// Remote end.
    pub remote: String,
    /// Counters so far, as rx/tx.
    pub traffic: Traffic,
}

/// Local and remote ends of a connection, as `address:port`, from its direction:
/// outgoing ones read the original tuple; incoming ones take the local end from the reply
/// tuple, which holds the address the connection was translated to (DNAT).
pub fn ends(orig: &Tuple, reply: &Tuple, direction: Option<Direction>) -> (String, String) {
    let sa = |ip, port| SocketAddr::new(ip, port).to_string();
    let (o, r) = (orig, reply);
    match direction {
        Some(Direction::In) => (sa(r.src, r.sport), sa(o.src, o.sport)),
        Some(Direction::Out) | None => (sa(o.src, o.sport), sa(o.dst, o.dport)),
    }
}

/// The connections of `dump` to list (`attributed[i]` is the verdict of
/// `dump.flows[i]`): only `uid`'s when given, TCP connections closed already (TIME_WAIT,
/// CLOSE) only with `all`; grouped by owner (unattributed first), biggest first.
pub fn open_connections<'a>(
    dump: &'a Dump,
    attributed: &'a [Attributed],
    uid: Option<u32>,
    all: bool,
) -> Vec<OpenConnection<'a>> {
    let mut rows: Vec<OpenConnection> = dump
        .flows
        .iter()
        .zip(attributed)
        .zip(&dump.tcp_states)
        .filter(|((_, at), _)| uid.is_none() || at.attribution().map(|a| a.uid) == uid)
        .filter(|(_, st)| all || !waiting::closed_tcp(**st))
        .map(|((flow, at), st)| {
            let (local, remote) = ends(&flow.orig, &flow.reply, at.direction);
            OpenConnection {
                flow,
                tcp_state: *st,
                at,
                local,
                remote,
                traffic: Traffic::of_counters(
                    flow.orig_counters,
                    flow.reply_counters,
                    at.direction,
                ),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let owner = |r: &OpenConnection| r.at.attribution().map(|a| a.uid);
        owner(a)
            .cmp(&owner(b))
            .then(b.traffic.bytes().cmp(&a.traffic.bytes()))
    });
    rows
}

/// Observations made up for the tests of `live` and of its rendering (`report`).
#[cfg(test)]
pub(crate) mod fixture {
    use crate::attribute::{Attributed, Attribution, Direction, Reason, Verdict};
    use crate::model::{Counters, CtTcpState, Flow, Tuple};
    use crate::sources::conntrack::Dump;

    /// The fixture's clock: 2026-03-10T12:00:00Z, in ns.
    pub const NOW_NS: u64 = 1_773_144_000_000_000_000;

    fn tuple(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
        }
    }

    fn counters(bytes: u64, packets: u64) -> Option<Counters> {
        Some(Counters { packets, bytes })
    }

    fn flow(orig: Tuple, reply: Tuple, id: u32, counts: [Option<Counters>; 2]) -> Flow {
        Flow {
            orig,
            reply,
            id,
            zone: 0,
            mark: 0,
            status: 0,
            orig_counters: counts[0],
            reply_counters: counts[1],
            start_ns: None,
            stop_ns: None,
        }
    }

    fn user(uid: u32, program: Option<&str>, direction: Direction) -> Verdict {
        Verdict::User(Attribution {
            cgroup: None,
            uid,
            program: program.map(String::from),
            direction,
            via: crate::attribute::Via::Direct,
            container: None,
        })
    }

    fn at(verdict: Verdict, direction: Option<Direction>, remote: &str, port: u16) -> Attributed {
        Attributed {
            verdict,
            direction,
            remote: remote.parse().unwrap(),
            port,
        }
    }

    /// Five flows: alice's HTTPS download and her incoming SSH session (DNAT 2222 → 22),
    /// bob's closed IPv6 connection (TIME_WAIT), an unowned DNS exchange without
    /// counters, and a closed (CLOSE) connection to a local network.
    pub fn observation() -> (Dump, Vec<Attributed>) {
        use Direction::{In, Out};
        let mut https = flow(
            tuple(6, "198.51.100.1", 40001, "198.51.100.2", 443),
            tuple(6, "198.51.100.2", 443, "198.51.100.1", 40001),
            1,
            [counters(3_000, 20), counters(150_000, 110)],
        );
        https.start_ns = Some(NOW_NS - 65_400_000_000);
        let ssh = flow(
            tuple(6, "203.0.113.9", 51000, "198.51.100.1", 2222),
            tuple(6, "198.51.100.1", 22, "203.0.113.9", 51000),
            2,
            [counters(40_000, 500), counters(5 << 30, 4_000_000)],
        );
        let mut closed6 = flow(
            tuple(6, "2001:db8::1", 40003, "2001:db8::2", 443),
            tuple(6, "2001:db8::2", 443, "2001:db8::1", 40003),
            3,
            [counters(500_000, 400), counters(10_000, 200)],
        );
        closed6.start_ns = Some(NOW_NS - 3_000_000_000);
        let dns = flow(
            tuple(17, "198.51.100.1", 5353, "198.51.100.7", 53),
            tuple(17, "198.51.100.7", 53, "198.51.100.1", 5353),
            4,
            [None, None],
        );
        let local = flow(
            tuple(6, "10.0.0.1", 40006, "10.0.0.5", 445),
            tuple(6, "10.0.0.5", 445, "10.0.0.1", 40006),
            5,
            [counters(1_000_000, 900), counters(2_000_000, 1_500)],
        );
        let dump = Dump {
            flows: vec![https, ssh, closed6, dns, local],
            tcp_states: vec![
                Some(CtTcpState::Established),
                Some(CtTcpState::Established),
                Some(CtTcpState::TimeWait),
                None,
                Some(CtTcpState::Close),
            ],
            timeouts: vec![Some(431_000), Some(431_999), Some(100), Some(20), Some(8)],
            ..Dump::default()
        };
        let attributed = vec![
            at(
                user(1001, Some("firefox"), Out),
                Some(Out),
                "198.51.100.2",
                443,
            ),
            at(user(1001, Some("sshd"), In), Some(In), "203.0.113.9", 22),
            at(user(1002, None, Out), Some(Out), "2001:db8::2", 443),
            at(
                Verdict::Unattributed(Reason::NoSocket),
                Some(Out),
                "198.51.100.7",
                53,
            ),
            at(Verdict::Excluded(None), Some(Out), "10.0.0.5", 445),
        ];
        (dump, attributed)
    }

    /// The fixture's user names.
    pub fn user_name(uid: u32) -> String {
        match uid {
            1001 => "alice".into(),
            1002 => "bob".into(),
            _ => uid.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(rows: &[OpenConnection]) -> Vec<(u32, Option<u32>, String, String)> {
        rows.iter()
            .map(|r| {
                (
                    r.flow.id,
                    r.at.attribution().map(|a| a.uid),
                    r.local.clone(),
                    r.remote.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn open_connections_leave_closed_tcp_out_unless_all_and_sort_by_owner_then_bytes() {
        let (dump, attributed) = fixture::observation();
        let rows = open_connections(&dump, &attributed, None, false);
        assert_eq!(
            listed(&rows),
            [
                // Unowned first (excluded and unattributed both have no owner).
                (
                    4,
                    None,
                    "198.51.100.1:5353".into(),
                    "198.51.100.7:53".into()
                ),
                // alice's: the 5 GiB SSH session before the download; incoming, so the
                // local end is the post-DNAT one and the remote the client.
                (
                    2,
                    Some(1001),
                    "198.51.100.1:22".into(),
                    "203.0.113.9:51000".into()
                ),
                (
                    1,
                    Some(1001),
                    "198.51.100.1:40001".into(),
                    "198.51.100.2:443".into()
                ),
            ]
        );
        assert_eq!(
            rows[1].traffic.rx_bytes, 40_000,
            "incoming: rx is the original"
        );
        assert_eq!(rows[1].traffic.tx_bytes, 5 << 30);
        let all = open_connections(&dump, &attributed, None, true);
        assert_eq!(
            all.iter().map(|r| r.flow.id).collect::<Vec<_>>(),
            [5, 4, 2, 1, 3],
            "with --all: the TIME_WAIT and CLOSE ones too, biggest first per owner"
        );
        let bob = open_connections(&dump, &attributed, Some(1002), true);
        assert_eq!(listed(&bob).len(), 1);
        assert_eq!(bob[0].local, "[2001:db8::1]:40003");
        assert!(open_connections(&dump, &attributed, Some(1002), false).is_empty());
    }
}
