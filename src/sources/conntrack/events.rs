//! Conntrack events: NEW and DESTROY as they happen, on a socket subscribed to the
//! conntrack multicast groups (separate from the dump socket, so a dump's replies and the
//! event stream never mix).

use std::io;
use std::time::Duration;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};

use super::attr::MessageType;
use super::decode::{attributes_of, decode_flow};
use super::error::{control, ConntrackError};
use crate::model::Flow;
use crate::sources::netlink::{
    self, messages, protocols::NETLINK_NETFILTER, Malformed, Socket, SocketAddr,
};

/// Conntrack multicast groups (enum nfnetlink_groups in
/// include/uapi/linux/netfilter/nfnetlink.h). Bound as the bit `1 << (group - 1)`.
pub const GROUP_NEW: u32 = 1;
/// Flows that changed state (not used by netledger: they carry no counters).
pub const GROUP_UPDATE: u32 = 2;
/// Destroyed flows, with their final counters.
pub const GROUP_DESTROY: u32 = 3;

/// What a conntrack event announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A flow was confirmed (type NEW with `NLM_F_CREATE|NLM_F_EXCL`): its sockets exist
    /// now. Carries tuples, id, zone, status; no counters.
    New,
    /// A flow changed (type NEW without those flags): only with [`GROUP_UPDATE`].
    Update,
    /// A flow was destroyed (type DELETE): final counters, and start and stop times when
    /// `nf_conntrack_timestamp=1` was set when it was created.
    Destroy,
}

/// One decoded conntrack event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub kind: EventKind,
    /// The flow it happened to.
    pub flow: Flow,
    /// The TCP state (a [`crate::model::CtTcpState`] number: 7 TIME_WAIT, 8 CLOSE, …) from
    /// CTA_PROTOINFO, which DESTROY events carry: it tells which timeout ran out, and so
    /// when the connection really ended.
    pub tcp_state: Option<crate::model::CtTcpState>,
    /// CTA_TIMEOUT: the whole seconds the entry had left. A DESTROY event carries it only
    /// when at least 1 s was left (`ctnetlink_dump_timeout(…, skip_zero)`; seen on Linux
    /// 6.18), i.e. for an entry removed before it expired (`conntrack -D`/`-F`, a TCP
    /// port reused during TIME_WAIT, early drop); an expired entry has none.
    pub timeout: Option<u32>,
    /// A TCP entry picked up in the middle of its connection (its earlier entry was
    /// deleted while the connection lived).
    pub picked_up: bool,
}

/// Events decoded from received datagrams, in arrival order (no de-duplication: each
/// event is a fact of its own).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Events {
    /// The events.
    pub events: Vec<Event>,
    /// Messages that did not decode (logged).
    pub skipped_messages: usize,
    /// Attributes of a type this module does not know, skipped.
    pub unknown_attributes: usize,
}

/// Decode event messages (pure), appending to `out`. A malformed message is logged,
/// counted and skipped; the others are kept.
pub fn parse_events(buf: &[u8], out: &mut Events) {
    for message in messages(buf) {
        let Ok(message) = message else {
            tracing::warn!(
                "conntrack event with an impossible length; rest of the datagram skipped"
            );
            out.skipped_messages += 1;
            break;
        };
        if let Some(control) = control(&message) {
            if let Err(e) = control {
                tracing::warn!(error = %e, "error message on the conntrack event socket; skipped");
                out.skipped_messages += 1;
            }
            continue;
        }
        let kind = match MessageType::of(message.kind) {
            MessageType::Delete => EventKind::Destroy,
            // ctnetlink_conntrack_event(): a NEW event has these flags, an UPDATE not.
            MessageType::New
                if message.flags & (NLM_F_CREATE | NLM_F_EXCL) == NLM_F_CREATE | NLM_F_EXCL =>
            {
                EventKind::New
            }
            MessageType::New => EventKind::Update,
            MessageType::Other => {
                tracing::warn!(
                    message_type = message.kind,
                    "unexpected message on the conntrack event socket; skipped"
                );
                out.skipped_messages += 1;
                continue;
            }
        };
        let Some(attrs) = attributes_of(message.payload) else {
            out.skipped_messages += 1;
            continue;
        };
        match decode_flow(attrs, &mut out.unknown_attributes) {
            Ok((flow, extras)) => out.events.push(Event {
                kind,
                tcp_state: extras.tcp_state,
                timeout: extras.timeout,
                picked_up: extras.picked_up,
                flow,
            }),
            Err(Malformed(reason)) => {
                tracing::warn!(reason, "malformed conntrack event; skipped");
                out.skipped_messages += 1;
            }
        }
    }
}

/// What one [`EventSocket::receive`] got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// Datagrams read (each holds one event).
    pub datagrams: usize,
    /// The kernel reported `ENOBUFS`: events were dropped because the receive buffer was
    /// full. The caller must resynchronise from a dump.
    pub overrun: bool,
}

/// A netlink socket subscribed to conntrack events.
pub struct EventSocket {
    socket: Socket,
    buf: Vec<u8>,
}

impl EventSocket {
    /// Subscribe to `groups` ([`GROUP_NEW`], [`GROUP_DESTROY`], …). Needs CAP_NET_ADMIN.
    /// Subscribe *before* the first dump, so no flow falls between the two.
    pub fn subscribe(groups: &[u32]) -> Result<EventSocket, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::open)?;
        let mask = groups.iter().fold(0u32, |m, g| m | 1 << (g - 1));
        socket
            .bind(&SocketAddr::new(0, mask))
            .map_err(|e| match e.raw_os_error() {
                // Joining a conntrack group checks CAP_NET_ADMIN (nfnetlink_bind).
                Some(libc::EPERM) | Some(libc::EACCES) => ConntrackError::PermissionDenied,
                _ => ConntrackError::Socket {
                    op: "bind",
                    source: e,
                },
            })?;
        socket
            .set_non_blocking(true)
            .map_err(ConntrackError::socket("fcntl"))?;
        Ok(EventSocket {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Set the receive buffer to `bytes` (`SO_RCVBUFFORCE`, which may exceed
    /// `net.core.rmem_max` with CAP_NET_ADMIN; `SO_RCVBUF` otherwise). Returns the size the
    /// kernel granted (it doubles the request for bookkeeping, socket(7)).
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<usize, ConntrackError> {
        netlink::set_receive_buffer(&self.socket, bytes)
            .map_err(ConntrackError::socket("setsockopt"))
    }

    /// The receive buffer size the kernel uses now.
    pub fn receive_buffer(&self) -> usize {
        netlink::receive_buffer(&self.socket)
    }

    /// The socket's inode (its row in `/proc/net/netlink`).
    pub fn inode(&self) -> Option<u64> {
        netlink::inode(&self.socket)
    }

    /// Wait up to `timeout` for events, then read every datagram already queued, up to
    /// `max`, decoding them into `out`. Returns early with `overrun` set on `ENOBUFS`.
    pub fn receive(
        &mut self,
        timeout: Duration,
        max: usize,
        out: &mut Events,
    ) -> Result<Received, ConntrackError> {
        let mut got = Received::default();
        match netlink::poll_readable(&self.socket, timeout) {
            Ok(_) => {}
            // A signal (SIGTERM, SIGHUP) wakes the caller up: not an error.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(got),
            Err(e) => return Err(ConntrackError::socket("poll")(e)),
        }
        while got.datagrams < max {
            let len = match netlink::recv(&self.socket, &mut self.buf) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    got.overrun = true;
                    break;
                }
                Err(e) => return Err(ConntrackError::socket("recv")(e)),
            };
            if len > self.buf.len() {
                // One event never comes near 64 KiB; count it and go on.
                tracing::warn!(len, "oversized conntrack event datagram skipped");
                out.skipped_messages += 1;
                continue;
            }
            got.datagrams += 1;
            parse_events(&self.buf[..len], out);
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Counters;
    use crate::sources::conntrack::attr::*;
    use crate::sources::conntrack::testutil::*;
    use crate::sources::netlink::drops as netlink_drops;

    /// `message` with its type and flags replaced, as an event carries them.
    fn as_event(mut message: Vec<u8>, msg: u16, flags: u16) -> Vec<u8> {
        message[4..6].copy_from_slice(&(NFNL_SUBSYS_CTNETLINK << 8 | msg).to_ne_bytes());
        message[6..8].copy_from_slice(&flags.to_ne_bytes());
        message
    }

    #[test]
    fn events_are_told_apart_by_type_and_flags_and_keep_the_tcp_state() {
        let tcp_state = nest(
            CTA_PROTOINFO,
            &[nest(
                CTA_PROTOINFO_TCP,
                &[nla(
                    CTA_PROTOINFO_TCP_STATE,
                    &[crate::model::CtTcpState::TimeWait.raw()],
                )],
            )],
        );
        let raw = [
            as_event(
                udp_flow(1, 1000, &[]),
                IPCTNL_MSG_CT_NEW,
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            as_event(udp_flow(2, 1001, &[]), IPCTNL_MSG_CT_NEW, 0),
            as_event(
                udp_flow(3, 1002, &[counters64(CTA_COUNTERS_ORIG, 2, 80), tcp_state]),
                IPCTNL_MSG_CT_DELETE,
                0,
            ),
            // An event for a flow with the same identity again: events are not merged.
            as_event(udp_flow(1, 1000, &[]), IPCTNL_MSG_CT_DELETE, 0),
            as_event(udp_flow(4, 1003, &[]), 7, 0),
        ]
        .concat();
        let mut ev = Events::default();
        parse_events(&raw, &mut ev);
        let kinds: Vec<(EventKind, u32)> = ev.events.iter().map(|e| (e.kind, e.flow.id)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::New, 1),
                (EventKind::Update, 2),
                (EventKind::Destroy, 3),
                (EventKind::Destroy, 1)
            ]
        );
        assert_eq!(ev.skipped_messages, 1, "unknown message type");
        assert_eq!(
            ev.events[2].tcp_state,
            Some(crate::model::CtTcpState::TimeWait)
        );
        assert_eq!(ev.events[0].tcp_state, None);
        assert_eq!(
            ev.events[2].flow.orig_counters,
            Some(Counters {
                packets: 2,
                bytes: 80
            })
        );
    }

    /// The kernel facts the daemon relies on, on this kernel: a subscribed socket hears a
    /// NEW when a flow is confirmed and a DESTROY with final counters when it is deleted;
    /// a receive buffer too small for a burst reports ENOBUFS, and `/proc/net/netlink`
    /// counts the events dropped.
    #[test]
    fn events_in_a_namespace_new_destroy_and_overrun() {
        if !require_root("events_in_a_namespace_new_destroy_and_overrun") {
            return;
        }
        let a = format!("ctev-{}", std::process::id());
        run(&["ip", "netns", "add", &a]);
        let _guard = Netns(vec![a.clone()]);
        run(&["ip", "-n", &a, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &a,
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_acct=1",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &a,
            "nft",
            "add table inet t; add chain inet t out { type filter hook output priority 0; }; \
             add rule inet t out ct state new",
        ]);
        let got = in_netns(&a, || {
            let mut sock = EventSocket::subscribe(&[GROUP_NEW, GROUP_DESTROY]).unwrap();
            // One UDP flow over loopback, then delete it through ctnetlink's own tool.
            let rx = std::net::UdpSocket::bind("127.0.0.1:7100").unwrap();
            let tx = std::net::UdpSocket::bind("127.0.0.1:7101").unwrap();
            tx.send_to(&[7; 50], "127.0.0.1:7100").unwrap();
            let mut buf = [0u8; 100];
            rx.recv(&mut buf).unwrap();
            let mut ev = Events::default();
            sock.receive(Duration::from_secs(5), 100, &mut ev).unwrap();
            let del = std::process::Command::new("conntrack")
                .args(["-D", "-p", "udp", "--sport", "7101"])
                .output()
                .unwrap();
            assert!(del.status.success(), "conntrack -D: {del:?}");
            sock.receive(Duration::from_secs(5), 100, &mut ev).unwrap();

            // Overrun: the smallest buffer the kernel grants, and a burst of flows.
            sock.set_receive_buffer(1).unwrap();
            // This thread entered the namespace: /proc/net follows the process, not it.
            let drops_before = std::fs::read_to_string("/proc/thread-self/net/netlink")
                .ok()
                .and_then(|t| netlink_drops(&t, sock.inode()?))
                .unwrap();
            for port in 7200..7400 {
                let s = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap();
                s.send_to(&[1], "127.0.0.1:7100").unwrap();
            }
            let mut overrun = false;
            let mut more = Events::default();
            for _ in 0..100 {
                let r = sock
                    .receive(Duration::from_millis(50), 1000, &mut more)
                    .unwrap();
                overrun |= r.overrun;
                if r.datagrams == 0 && !r.overrun {
                    break;
                }
            }
            let drops = std::fs::read_to_string("/proc/thread-self/net/netlink")
                .ok()
                .and_then(|t| netlink_drops(&t, sock.inode()?))
                .unwrap();
            (ev, overrun, drops - drops_before, more.events.len())
        })
        .join()
        .unwrap();
        let (ev, overrun, dropped, received) = got;
        let ours: Vec<&Event> = ev
            .events
            .iter()
            .filter(|e| e.flow.orig.sport == 7101)
            .collect();
        assert_eq!(ours.len(), 2, "{:?}", ev.events);
        assert_eq!(ours[0].kind, EventKind::New);
        assert_eq!(ours[0].flow.orig_counters, None, "NEW carries no counters");
        assert_eq!(ours[1].kind, EventKind::Destroy);
        assert_eq!(
            ours[1].flow.orig_counters,
            Some(Counters {
                packets: 1,
                bytes: 50 + 28
            })
        );
        assert!(overrun, "200 NEW events did not overrun a minimal buffer");
        eprintln!("overrun: {received} of 200 events received, {dropped} counted as dropped");
        assert!(dropped > 0);
        assert_eq!(
            received as u64 + dropped,
            200,
            "every event received or counted"
        );
    }

    /// CTA_TIMEOUT (the seconds an entry had left) is kept beside the flow, in events and
    /// dumps; a malformed one is ignored, not the entry.
    #[test]
    fn timeout_left_is_kept_and_a_bad_one_ignored() {
        let raw = [
            as_event(
                udp_flow(1, 1000, &[nla(CTA_TIMEOUT, &24u32.to_be_bytes())]),
                IPCTNL_MSG_CT_DELETE,
                0,
            ),
            as_event(udp_flow(2, 1001, &[]), IPCTNL_MSG_CT_DELETE, 0),
            as_event(
                udp_flow(3, 1002, &[nla(CTA_TIMEOUT, &[1, 2])]),
                IPCTNL_MSG_CT_DELETE,
                0,
            ),
        ]
        .concat();
        let mut ev = Events::default();
        parse_events(&raw, &mut ev);
        let left: Vec<Option<u32>> = ev.events.iter().map(|e| e.timeout).collect();
        assert_eq!(left, [Some(24), None, None]);
        assert_eq!(ev.skipped_messages, 0);
        let dump = super::super::dump::parse_messages(
            &[
                udp_flow(4, 1003, &[nla(CTA_TIMEOUT, &29u32.to_be_bytes())]),
                udp_flow(5, 1004, &[]),
                done(),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(
            dump.entries.iter().map(|e| e.timeout).collect::<Vec<_>>(),
            [Some(29), None]
        );
    }
}
