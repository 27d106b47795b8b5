//! Connections as the kernel shows them right now, for the read-only commands: the open
//! ones (`connections`), and the ones over but not logged yet ([`waiting`], for `log` and
//! `summary`). Pure over a conntrack dump's entries, each with its verdict ([`Observed`]);
//! reading them is the caller's (`pass::observe`, [`waiting::live_table`]). Rendering
//! lives in `report`.
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
use crate::sources::conntrack::Entry;

/// One flow as a read-only view sees it: its entry of the dump, and its verdict.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The entry: the flow, its TCP state and the time it has left.
    pub entry: Entry,
    /// Where its bytes go.
    pub at: Attributed,
}

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

/// The connections of `observed` to list: only `uid`'s when given, TCP connections
/// closed already (TIME_WAIT, CLOSE) only with `all`; grouped by owner (unattributed
/// first), biggest first.
pub fn open_connections(
    observed: &[Observed],
    uid: Option<u32>,
    all: bool,
) -> Vec<OpenConnection<'_>> {
    let mut rows: Vec<OpenConnection> = observed
        .iter()
        .filter(|o| uid.is_none() || o.at.attribution().map(|a| a.uid) == uid)
        .filter(|o| all || !waiting::closed_tcp(o.entry.tcp_state))
        .map(|Observed { entry, at }| {
            let flow = &entry.flow;
            let (local, remote) = ends(&flow.orig, &flow.reply, at.direction);
            OpenConnection {
                flow,
                tcp_state: entry.tcp_state,
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
    use super::Observed;
    use crate::attribute::{Attributed, Attribution, Direction, Reason, Verdict};
    use crate::model::{CtTcpState, Flow};
    use crate::sources::conntrack::Entry;
    use crate::testkit::{counters, flow, TCP, UDP};

    /// The fixture's clock: 2026-03-10T12:00:00Z, in ns.
    pub const NOW_NS: u64 = 1_773_144_000_000_000_000;

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

    /// `flow` in state `tcp_state` with `timeout` seconds left, attributed `at`.
    fn seen(flow: Flow, tcp_state: Option<CtTcpState>, timeout: u32, at: Attributed) -> Observed {
        let entry = Entry {
            tcp_state,
            timeout: Some(timeout),
            ..Entry::from(flow)
        };
        Observed { entry, at }
    }

    /// Five flows: alice's HTTPS download and her incoming SSH session (DNAT 2222 → 22),
    /// bob's closed IPv6 connection (TIME_WAIT), an unowned DNS exchange without
    /// counters, and a closed (CLOSE) connection to a local network.
    pub fn observation() -> Vec<Observed> {
        use CtTcpState::{Close, Established, TimeWait};
        use Direction::{In, Out};
        let https = Flow {
            id: 1,
            orig_counters: Some(counters(20, 3_000)),
            reply_counters: Some(counters(110, 150_000)),
            start_ns: Some(NOW_NS - 65_400_000_000),
            ..flow(TCP, ("198.51.100.1:40001", "198.51.100.2:443"), None)
        };
        let ssh = Flow {
            id: 2,
            orig_counters: Some(counters(500, 40_000)),
            reply_counters: Some(counters(4_000_000, 5 << 30)),
            ..flow(
                TCP,
                ("203.0.113.9:51000", "198.51.100.1:2222"),
                Some(("198.51.100.1:22", "203.0.113.9:51000")),
            )
        };
        let closed6 = Flow {
            id: 3,
            orig_counters: Some(counters(400, 500_000)),
            reply_counters: Some(counters(200, 10_000)),
            start_ns: Some(NOW_NS - 3_000_000_000),
            ..flow(TCP, ("[2001:db8::1]:40003", "[2001:db8::2]:443"), None)
        };
        let dns = Flow {
            id: 4,
            orig_counters: None,
            reply_counters: None,
            ..flow(UDP, ("198.51.100.1:5353", "198.51.100.7:53"), None)
        };
        let local = Flow {
            id: 5,
            orig_counters: Some(counters(900, 1_000_000)),
            reply_counters: Some(counters(1_500, 2_000_000)),
            ..flow(TCP, ("10.0.0.1:40006", "10.0.0.5:445"), None)
        };
        let firefox = user(1001, Some("firefox"), Out);
        vec![
            seen(
                https,
                Some(Established),
                431_000,
                at(firefox, Some(Out), "198.51.100.2", 443),
            ),
            seen(
                ssh,
                Some(Established),
                431_999,
                at(user(1001, Some("sshd"), In), Some(In), "203.0.113.9", 22),
            ),
            seen(
                closed6,
                Some(TimeWait),
                100,
                at(user(1002, None, Out), Some(Out), "2001:db8::2", 443),
            ),
            seen(
                dns,
                None,
                20,
                at(
                    Verdict::Unattributed(Reason::NoSocket),
                    Some(Out),
                    "198.51.100.7",
                    53,
                ),
            ),
            seen(
                local,
                Some(Close),
                8,
                at(Verdict::Excluded(None), Some(Out), "10.0.0.5", 445),
            ),
        ]
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
        let observed = fixture::observation();
        let rows = open_connections(&observed, None, false);
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
        let all = open_connections(&observed, None, true);
        assert_eq!(
            all.iter().map(|r| r.flow.id).collect::<Vec<_>>(),
            [5, 4, 2, 1, 3],
            "with --all: the TIME_WAIT and CLOSE ones too, biggest first per owner"
        );
        let bob = open_connections(&observed, Some(1002), true);
        assert_eq!(listed(&bob).len(), 1);
        assert_eq!(bob[0].local, "[2001:db8::1]:40003");
        assert!(open_connections(&observed, Some(1002), false).is_empty());
    }
}
