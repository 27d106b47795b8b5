//! Connections that are over but not in the connection log yet.
//!
//! The daemon logs a connection when conntrack drops its entry (the DESTROY event, with
//! the final counters), which is the timeout of the entry's final state after its last
//! packet: 120 s after a TCP close (TIME_WAIT; 10 s after a reset), 30 s after a UDP
//! exchange, by default. Until then the connection is neither open nor logged: `log` says
//! how many are waiting and until when, and `summary` does not count the closed ones as
//! open. Both learn it from the live conntrack table (needs CAP_NET_ADMIN), as
//! `connections` does.

use std::collections::HashMap;

use crate::model::CtTcpState;
use crate::model::{CtStatus, Flow, FlowKey, IPPROTO_TCP, IPPROTO_UDP};
use crate::sources::conntrack::{self, Dump, Entry};

/// Why a live entry is a connection that is over, as far as conntrack can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// TCP in TIME_WAIT or CLOSE: closed, its entry lingers for the state's timeout.
    ClosedTcp,
    /// UDP never assured: a short exchange (a DNS query), dropped 30 s after its last
    /// packet unless more come.
    UdpExchange,
}

/// Whether a TCP state is one of a closed connection whose entry lingers (TIME_WAIT,
/// CLOSE): `connections` leaves those out unless `--all`.
pub fn closed_tcp(tcp_state: Option<CtTcpState>) -> bool {
    matches!(tcp_state, Some(CtTcpState::TimeWait | CtTcpState::Close))
}

/// Whether a live entry is a connection that is over (pure). Open TCP connections and
/// assured UDP streams are not; neither is anything else.
pub fn over(flow: &Flow, tcp_state: Option<CtTcpState>) -> Option<Over> {
    match flow.orig.proto {
        IPPROTO_TCP if closed_tcp(tcp_state) => Some(Over::ClosedTcp),
        IPPROTO_UDP if !flow.ct_status().contains(CtStatus::ASSURED) => Some(Over::UdpExchange),
        _ => None,
    }
}

/// One live entry that is over: its flow, why, and when its entry expires (ms).
#[derive(Debug, Clone)]
pub struct Waiting {
    /// The flow, with its counters so far.
    pub flow: Flow,
    /// Why it is over.
    pub over: Over,
    /// When its entry expires at the latest, ms since the epoch (the dump gives whole
    /// seconds left, so one more), if the dump said.
    pub expires_ms: Option<i64>,
}

/// The entries of `dump` that are over, by flow identity (pure).
pub fn waiting(dump: &Dump, now_ms: i64) -> HashMap<FlowKey, Waiting> {
    dump.entries
        .iter()
        .filter_map(
            |Entry {
                 flow,
                 tcp_state,
                 timeout,
                 ..
             }| {
                let over = over(flow, *tcp_state)?;
                Some((
                    flow.key(),
                    Waiting {
                        flow: flow.clone(),
                        over,
                        expires_ms: timeout.map(|s| now_ms + (i64::from(s) + 1) * 1000),
                    },
                ))
            },
        )
        .collect()
}

/// The live table of this network namespace, or why it cannot be read.
pub fn live_table() -> Result<Dump, conntrack::ConntrackError> {
    conntrack::dump()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::flow as flow_of;

    /// Flow `sport` (its id too) from 198.51.100.1 to 198.51.100.2:53 of protocol `proto`
    /// with these status bits, in state `tcp_state` with `timeout` seconds left.
    fn entry(
        proto: u8,
        sport: u16,
        status: u32,
        tcp_state: Option<CtTcpState>,
        timeout: u32,
    ) -> Entry {
        let flow = Flow {
            id: u32::from(sport),
            status,
            orig_counters: None,
            reply_counters: None,
            ..flow_of(
                proto,
                (&format!("198.51.100.1:{sport}"), "198.51.100.2:53"),
                None,
            )
        };
        Entry {
            tcp_state,
            timeout: Some(timeout),
            ..Entry::from(flow)
        }
    }

    #[test]
    fn closed_tcp_and_short_udp_are_over_the_rest_is_not() {
        use CtTcpState::{Close, Established, TimeWait};
        let dump = Dump {
            entries: vec![
                entry(6, 1, 0, Some(TimeWait), 100),
                entry(6, 2, 0, Some(Close), 5),
                entry(6, 3, 0, Some(Established), 400_000),
                entry(17, 4, 0x0a, None, 29),
                entry(17, 5, 0x0e, None, 110),
                entry(1, 6, 0, None, 20),
            ],
            ..Dump::default()
        };
        let w = waiting(&dump, 1_000_000);
        let mut got: Vec<(u16, Over, Option<i64>)> = w
            .values()
            .map(|w| (w.flow.orig.sport, w.over, w.expires_ms))
            .collect();
        got.sort_by_key(|g| g.0);
        assert_eq!(
            got,
            [
                (1, Over::ClosedTcp, Some(1_101_000)),
                (2, Over::ClosedTcp, Some(1_006_000)),
                (4, Over::UdpExchange, Some(1_030_000)),
            ]
        );
    }
}
