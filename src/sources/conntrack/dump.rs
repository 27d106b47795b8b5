//! The conntrack table, dumped: the request (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`, family
//! `AF_UNSPEC` so IPv4 and IPv6 come together), the replies received until `NLMSG_DONE`,
//! and their entries de-duplicated into a [`Dump`].
//!
//! [`parse_messages`] is the pure half: it takes the bytes exactly as received from the
//! socket, so captured dumps in `fixtures/netlink/` replay the kernel.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::attr::MessageType;
use super::decode::{attributes_of, decode_flow, Extras};
use super::error::{control, ConntrackError, Progress};
use crate::model::{CtTcpState, FastMap, Flow, FlowKey};
use crate::sources::netlink::{
    self, messages, protocols::NETLINK_NETFILTER, Malformed, Socket, SocketAddr,
};

/// Result of one dump (or of parsing captured bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The decoded entries, de-duplicated by [`FlowKey`], in dump order.
    pub entries: Vec<Entry>,
    /// Messages that were not decoded: malformed conntrack entries (truncated
    /// attribute, missing tuple, wrong value size) and unexpected message types.
    /// Each one is also logged with `tracing::warn!`.
    pub skipped_messages: usize,
    /// Attributes of a type this module does not know (newer kernel), skipped.
    pub unknown_attributes: usize,
    /// Entries seen more than once in the dump (dumps have no consistency
    /// guarantee: a table resize can repeat an entry); the later sighting is kept.
    pub duplicates: usize,
}

impl Dump {
    /// The entries' flows, in dump order.
    pub fn flows(&self) -> impl ExactSizeIterator<Item = &Flow> + Clone {
        self.entries.iter().map(|e| &e.flow)
    }
}

/// One entry of the table: its flow, and what the entry says beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The flow: tuples, identity, counters, timestamps.
    pub flow: Flow,
    /// Its TCP state (CTA_PROTOINFO, a [`CtTcpState`] number: 3 ESTABLISHED, 7
    /// TIME_WAIT, …), `None` for other protocols.
    pub tcp_state: Option<CtTcpState>,
    /// The whole seconds it has left before it expires (CTA_TIMEOUT), when the kernel
    /// sent it.
    pub timeout: Option<u32>,
    /// A TCP entry the kernel picked up in the middle of its connection (its earlier
    /// entry was deleted while the connection lived).
    pub picked_up: bool,
}

impl From<Flow> for Entry {
    /// An entry that says nothing beside its flow: no TCP state, no timeout, not picked
    /// up.
    fn from(flow: Flow) -> Entry {
        Entry {
            flow,
            tcp_state: None,
            timeout: None,
            picked_up: false,
        }
    }
}

/// Receive buffer. The kernel fills dump batches up to ~32 KiB
/// (`netlink_recvmsg` caps `max_recvmsg_len` at 32 KiB); more room is harmless.
const RECV_BUF_LEN: usize = 1 << 20;
/// How long one `recv` may wait before the dump is declared stuck.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(10);

/// Decode a concatenation of netlink messages as received from a ctnetlink
/// socket (one or several receive buffers appended, e.g. a capture made with
/// `examples/ct_capture.rs`).
///
/// Conntrack entries (`NEW` dump replies and `DELETE` events) become flows;
/// malformed entries are logged and counted in [`Dump::skipped_messages`];
/// duplicates are dropped. An `NLMSG_ERROR` (or a failed `NLMSG_DONE`) in the
/// stream is returned as an error.
pub fn parse_messages(buf: &[u8]) -> Result<Dump, ConntrackError> {
    // Room for every entry at once: an entry's message is about 230 bytes with counters
    // and timestamps (236 on average in fixtures/netlink/many.bin). Growing the entries
    // mid-parse instead costs page faults each call (a 608-flow dump parsed twice as slowly:
    // examples/ct_decode.rs).
    let mut parser = Parser::with_capacity(buf.len() / 192);
    parser.feed(buf)?;
    Ok(parser.finish())
}

/// Dump the conntrack table of the calling thread's network namespace.
///
/// Needs CAP_NET_ADMIN ([`ConntrackError::PermissionDenied`] otherwise).
/// Counters are present only for entries created while
/// `net.netfilter.nf_conntrack_acct=1`.
pub fn dump() -> Result<Dump, ConntrackError> {
    let mut decoder = Decoder::new();
    // Parse each datagram as it arrives: no copy of the whole dump is kept.
    receive_dump(|datagram| decoder.parser.feed(datagram))?;
    Ok(decoder.finish())
}

/// Decodes the datagrams of a dump in order, as [`dump`] does, possibly on another thread
/// than the one receiving them ([`dump_datagrams`]): the kernel fills the next datagrams
/// meanwhile.
pub struct Decoder {
    parser: Parser,
}

impl Decoder {
    /// A decoder with room for the entries the table holds now (plus some born
    /// meanwhile): no regrowth of the flows and their index as the dump comes in.
    pub fn new() -> Decoder {
        let count = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        Decoder {
            parser: Parser::with_capacity((count + count / 16).clamp(1024, 1 << 22)),
        }
    }

    /// Decode the next datagram (an error in the stream is returned, as by [`dump`]).
    pub fn feed(&mut self, datagram: &[u8]) -> Result<(), ConntrackError> {
        self.parser.feed(datagram).map(|_| ())
    }

    /// The entries decoded so far.
    pub fn entries(&self) -> &[Entry] {
        &self.parser.entries
    }

    /// The dump decoded.
    pub fn finish(self) -> Dump {
        self.parser.finish()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new()
    }
}

/// Receive the dump of the calling thread's network namespace without decoding it: each
/// datagram is handed to `each` (in order, through the one with `NLMSG_DONE`) for a
/// [`Decoder`]. Stops at the end of the stream or at an error in it.
pub fn dump_datagrams(mut each: impl FnMut(Vec<u8>)) -> Result<(), ConntrackError> {
    receive_dump(|datagram| {
        let progress = scan_control(datagram);
        each(datagram.to_vec());
        progress
    })
}

/// The same dump as [`dump`], returned as the raw bytes received (datagrams
/// appended in order, through the final `NLMSG_DONE`), for captures.
/// [`parse_messages`] decodes the result.
pub fn dump_raw() -> Result<Vec<u8>, ConntrackError> {
    let mut raw = Vec::new();
    receive_dump(|datagram| {
        raw.extend_from_slice(datagram);
        // Netlink datagrams hold whole, 4-aligned messages; keep the
        // concatenation aligned even if a kernel ever sent a short tail.
        raw.resize(raw.len().next_multiple_of(4), 0);
        scan_control(datagram)
    })?;
    Ok(raw)
}

/// Send the dump request and hand every received datagram to `on_datagram`
/// until it reports [`Progress::Done`].
fn receive_dump(
    mut on_datagram: impl FnMut(&[u8]) -> Result<Progress, ConntrackError>,
) -> Result<(), ConntrackError> {
    let sock_err = ConntrackError::socket;
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::open)?;
    socket.bind_auto().map_err(sock_err("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    netlink::set_recv_timeout(&socket, RECV_TIMEOUT).map_err(sock_err("setsockopt"))?;

    let request = dump_request();
    socket.send(&request, 0).map_err(sock_err("send"))?;

    let mut buf = vec![0u8; RECV_BUF_LEN];
    loop {
        let len = match netlink::recv(&socket, &mut buf) {
            Ok(len) => len,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(ConntrackError::Timeout(RECV_TIMEOUT))
            }
            Err(e) => return Err(sock_err("recv")(e)),
        };
        if len > buf.len() {
            return Err(ConntrackError::Truncated {
                len,
                capacity: buf.len(),
            });
        }
        if on_datagram(&buf[..len])? == Progress::Done {
            return Ok(());
        }
    }
}

/// `IPCTNL_MSG_CT_GET` with `NLM_F_REQUEST|NLM_F_DUMP`, nfgenmsg family
/// `AF_UNSPEC` (both IPv4 and IPv6), no attributes (no filter).
pub(super) fn dump_request() -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let message = NetfilterMessage::new(
        NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
        ConntrackMessage::Get(Vec::new()),
    );
    let mut message = NetlinkMessage::new(header, NetlinkPayload::from(message));
    message.finalize();
    let mut buf = vec![0u8; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// Only look for the end of the stream or an error (for [`dump_raw`]).
fn scan_control(buf: &[u8]) -> Result<Progress, ConntrackError> {
    let mut progress = Progress::More;
    for message in messages(buf).flatten() {
        if let Some(result) = control(&message) {
            if result? == Progress::Done {
                progress = Progress::Done;
            }
        }
    }
    Ok(progress)
}

/// Accumulates entries over one or more received datagrams.
struct Parser {
    entries: Vec<Entry>,
    /// Index into `entries` of each identity seen, to de-duplicate.
    seen: FastMap<FlowKey, usize>,
    skipped_messages: usize,
    unknown_attributes: usize,
    duplicates: usize,
}

impl Parser {
    fn with_capacity(entries: usize) -> Parser {
        Parser {
            entries: Vec::with_capacity(entries),
            seen: FastMap::with_capacity_and_hasher(entries, Default::default()),
            skipped_messages: 0,
            unknown_attributes: 0,
            duplicates: 0,
        }
    }

    /// Decode every message of `buf`; `Done` once `NLMSG_DONE` was seen.
    fn feed(&mut self, buf: &[u8]) -> Result<Progress, ConntrackError> {
        let mut progress = Progress::More;
        for message in messages(buf) {
            let message = match message {
                Ok(message) => message,
                Err(offset) => {
                    tracing::warn!(
                        offset,
                        "netlink message with an impossible length; rest of the buffer skipped"
                    );
                    self.skipped_messages += 1;
                    break;
                }
            };
            if let Some(result) = control(&message) {
                if result? == Progress::Done {
                    progress = Progress::Done;
                }
                continue;
            }
            if MessageType::of(message.kind) == MessageType::Other {
                tracing::warn!(
                    message_type = message.kind,
                    "unexpected netlink message type in a conntrack dump; skipped"
                );
                self.skipped_messages += 1;
                continue;
            }
            let Some(attrs) = attributes_of(message.payload) else {
                tracing::warn!("conntrack message shorter than its nfgenmsg header; skipped");
                self.skipped_messages += 1;
                continue;
            };
            match decode_flow(attrs, &mut self.unknown_attributes) {
                Ok((flow, extras)) => self.push(flow, extras),
                Err(Malformed(reason)) => {
                    tracing::warn!(reason, "malformed conntrack entry; skipped");
                    self.skipped_messages += 1;
                }
            }
        }
        Ok(progress)
    }

    fn push(&mut self, flow: Flow, extras: Extras) {
        let entry = Entry {
            flow,
            tcp_state: extras.tcp_state,
            timeout: extras.timeout,
            picked_up: extras.picked_up,
        };
        match self.seen.entry(entry.flow.key()) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                // The same entry twice (table resize mid-dump). Counters only
                // grow within one entry, so the later sighting is the fresher one.
                self.duplicates += 1;
                self.entries[*slot.get()] = entry;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.entries.len());
                self.entries.push(entry);
            }
        }
    }

    fn finish(self) -> Dump {
        Dump {
            entries: self.entries,
            skipped_messages: self.skipped_messages,
            unknown_attributes: self.unknown_attributes,
            duplicates: self.duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use netlink_packet_core::{NLA_TYPE_MASK, NLMSG_DONE, NLMSG_ERROR};

    use super::*;
    use crate::model::{Counters, IPPROTO_UDP};
    use crate::sources::conntrack::attr::*;
    use crate::sources::conntrack::testutil::*;
    use crate::sources::netlink::NLMSG_HDRLEN;

    #[test]
    fn duplicate_keeps_the_later_sighting() {
        let first = udp_flow(7, 1000, &[counters64(CTA_COUNTERS_ORIG, 1, 100)]);
        let other = udp_flow(8, 1001, &[]);
        let again = udp_flow(7, 1000, &[counters64(CTA_COUNTERS_ORIG, 2, 250)]);
        // Same tuple, different id: a different flow (the id re-used tuple).
        let reborn = udp_flow(9, 1000, &[]);
        let raw = [first, other, again, reborn, done()].concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!(dump.duplicates, 1);
        assert_eq!(dump.flows().map(|f| f.id).collect::<Vec<_>>(), [7, 8, 9]);
        assert_eq!(
            dump.entries[0].flow.orig_counters,
            Some(Counters {
                packets: 2,
                bytes: 250
            })
        );
    }

    #[test]
    fn destroy_events_decode_like_dump_replies() {
        let mut message = udp_flow(3, 1000, &[counters64(CTA_COUNTERS_REPLY, 1, 60)]);
        let delete = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE;
        message[4..6].copy_from_slice(&delete.to_ne_bytes());
        let dump = parse_messages(&message).unwrap();
        assert_eq!(dump.entries.len(), 1);
        assert_eq!(
            dump.entries[0].flow.reply_counters,
            Some(Counters {
                packets: 1,
                bytes: 60
            })
        );
    }

    #[test]
    fn other_message_types_are_skipped_and_counted() {
        // IPCTNL_MSG_CT_GET_STATS reply, and an nftables message.
        let stats = nlmsg(NFNL_SUBSYS_CTNETLINK << 8 | 5, 0, &[0; 4]);
        let nft = nlmsg(10 << 8, 0, &[0; 4]);
        let raw = [stats, udp_flow(1, 1000, &[]), nft, done()].concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!((dump.entries.len(), dump.skipped_messages), (1, 2));
    }

    fn error_message(errno: i32) -> Vec<u8> {
        // struct nlmsgerr: the error, then the header of the request.
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&dump_request()[..NLMSG_HDRLEN]);
        nlmsg(NLMSG_ERROR, 0, &payload)
    }

    #[test]
    fn eperm_names_the_missing_capability() {
        let err = parse_messages(&error_message(libc::EPERM)).unwrap_err();
        assert!(matches!(err, ConntrackError::PermissionDenied), "{err:?}");
        assert_eq!(
            err.to_string(),
            "reading the conntrack table needs CAP_NET_ADMIN (run as root or grant the capability)"
        );
    }

    #[test]
    fn missing_ctnetlink_says_so() {
        for errno in [libc::EPROTONOSUPPORT, libc::ENOENT, libc::EOPNOTSUPP] {
            let err = parse_messages(&error_message(errno)).unwrap_err();
            assert!(
                matches!(err, ConntrackError::NotAvailable { .. }),
                "{err:?}"
            );
            assert!(err.to_string().contains("nf_conntrack_netlink"), "{err}");
            let source = std::error::Error::source(&err).expect("the errno as source");
            assert_eq!(
                source.to_string(),
                io::Error::from_raw_os_error(errno).to_string()
            );
        }
        let err = parse_messages(&error_message(libc::ENOMEM)).unwrap_err();
        assert!(matches!(err, ConntrackError::Kernel { .. }), "{err:?}");
    }

    #[test]
    fn failed_done_is_an_error_and_ack_is_not() {
        let ack = error_message(0);
        let raw = [udp_flow(1, 1000, &[]), ack, done()].concat();
        assert_eq!(parse_messages(&raw).unwrap().entries.len(), 1);
        let bad_done = nlmsg(NLMSG_DONE, NLM_F_MULTI, &(-libc::ENOBUFS).to_ne_bytes());
        assert!(matches!(
            parse_messages(&bad_done),
            Err(ConntrackError::Kernel { .. })
        ));
    }

    #[test]
    fn dump_request_is_a_ct_get_dump_for_all_families() {
        let request = dump_request();
        assert_eq!(request.len(), NLMSG_HDRLEN + NFGENMSG_LEN);
        let message = messages(&request).next().unwrap().unwrap();
        assert_eq!(message.kind, NFNL_SUBSYS_CTNETLINK << 8 | 1); // IPCTNL_MSG_CT_GET
        let flags = u16::from_ne_bytes([request[6], request[7]]);
        assert_eq!(flags, NLM_F_REQUEST | NLM_F_DUMP);
        assert_eq!(message.payload, [libc::AF_UNSPEC as u8, 0, 0, 0]);
    }

    /// A dump the size of a busy host (20,000 flows, several MB in one buffer) decodes
    /// every flow once. Its speed is measured by bench/, not here.
    #[test]
    fn twenty_thousand_flows_in_one_buffer_all_decode() {
        let raw = fixture("basic.bin");
        let (offset, len) = message_offsets(&raw)[0];
        let template = &raw[offset..offset + len];
        // Find CTA_ID inside the template to vary it.
        let attrs = &template[NLMSG_HDRLEN + NFGENMSG_LEN..];
        let mut id_at = None;
        let mut pos = 0;
        while pos < attrs.len() {
            let l = u16::from_ne_bytes([attrs[pos], attrs[pos + 1]]) as usize;
            let k = u16::from_ne_bytes([attrs[pos + 2], attrs[pos + 3]]) & NLA_TYPE_MASK;
            if k == CTA_ID {
                id_at = Some(NLMSG_HDRLEN + NFGENMSG_LEN + pos + 4);
            }
            pos += l.next_multiple_of(4);
        }
        let id_at = id_at.unwrap();
        let mut big = Vec::with_capacity(20_000 * template.len());
        for i in 0..20_000u32 {
            let start = big.len();
            big.extend_from_slice(template);
            big[start + id_at..start + id_at + 4].copy_from_slice(&i.to_be_bytes());
        }
        big.extend_from_slice(&done());
        let dump = parse_messages(&big).unwrap();
        assert_eq!(dump.entries.len(), 20_000);
        assert_eq!(dump.duplicates, 0);
        assert_eq!(dump.skipped_messages, 0);
        let ids: std::collections::HashSet<u32> = dump.flows().map(|f| f.id).collect();
        assert_eq!(ids.len(), 20_000);
    }

    #[test]
    fn dump_in_a_namespace_reports_exact_udp_counters() {
        if !require_root("dump_in_a_namespace_reports_exact_udp_counters") {
            return;
        }
        let a = format!("ctdump-{}-a", std::process::id());
        let b = format!("ctdump-{}-b", std::process::id());
        run(&["ip", "netns", "add", &a]);
        let _guard_a = Netns(vec![a.clone()]);
        run(&["ip", "netns", "add", &b]);
        let _guard_b = Netns(vec![b.clone()]);
        run(&[
            "ip", "link", "add", "ct-a", "netns", &a, "type", "veth", "peer", "name", "ct-b",
            "netns", &b,
        ]);
        for (ns, dev, v4, v6) in [
            (&a, "ct-a", "198.51.100.1/24", "2001:db8::1/64"),
            (&b, "ct-b", "198.51.100.2/24", "2001:db8::2/64"),
        ] {
            run(&["ip", "-n", ns, "addr", "add", v4, "dev", dev]);
            run(&["ip", "-n", ns, "addr", "add", v6, "dev", dev, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        run(&[
            "ip",
            "netns",
            "exec",
            &a,
            "sysctl",
            "-qw",
            "net.netfilter.nf_conntrack_acct=1",
            "net.netfilter.nf_conntrack_timestamp=1",
        ]);
        // Conntrack registers its hooks only when a rule needs it (Linux >= 4.10).
        let ruleset = concat!(
            "add table inet t; ",
            "add chain inet t out { type filter hook output priority 0; }; ",
            "add rule inet t out ct state new; ",
            "add chain inet t in { type filter hook input priority 0; }; ",
            "add rule inet t in ct state new",
        );
        run(&["ip", "netns", "exec", &a, "nft", ruleset]);

        // B answers each datagram with 300 bytes.
        let server = in_netns(&b, || {
            let v4 = std::net::UdpSocket::bind("198.51.100.2:7001").unwrap();
            let v6 = std::net::UdpSocket::bind("[2001:db8::2]:7001").unwrap();
            (v4, v6)
        })
        .join()
        .unwrap();
        let echo = std::thread::spawn(move || {
            for socket in [&server.0, &server.1] {
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                let (n, peer) = socket.recv_from(&mut buf).unwrap();
                assert_eq!(n, 100);
                socket.send_to(&[0x5a; 300], peer).unwrap();
            }
        });
        // A sends 100 bytes to each, waits for the answers, then dumps.
        let (ports, dump) = in_netns(&a, || {
            let mut ports = Vec::new();
            for (local, remote) in [
                ("198.51.100.1:0", "198.51.100.2:7001"),
                ("[2001:db8::1]:0", "[2001:db8::2]:7001"),
            ] {
                let socket = std::net::UdpSocket::bind(local).unwrap();
                socket
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                socket.send_to(&[0xa5; 100], remote).unwrap();
                let mut buf = [0u8; 2048];
                assert_eq!(socket.recv(&mut buf).unwrap(), 300);
                ports.push(socket.local_addr().unwrap().port());
            }
            (ports, dump())
        })
        .join()
        .unwrap();
        echo.join().unwrap();
        let dump = dump.expect("dump as root");

        assert_eq!(dump.skipped_messages, 0);
        let now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        // IP-layer bytes: 20 (IPv4) or 40 (IPv6) + 8 (UDP) + payload.
        for (port, src, header) in [
            (ports[0], "198.51.100.1", 28),
            (ports[1], "2001:db8::1", 48),
        ] {
            let src: IpAddr = src.parse().unwrap();
            let flow = dump
                .flows()
                .find(|f| f.orig.proto == IPPROTO_UDP && f.orig.src == src && f.orig.sport == port)
                .unwrap_or_else(|| panic!("no flow from {src}:{port} in {:?}", dump.entries));
            assert_eq!(flow.orig.dport, 7001);
            assert_eq!((flow.reply.sport, flow.reply.dport), (7001, port));
            assert_eq!(
                flow.orig_counters,
                Some(Counters {
                    packets: 1,
                    bytes: 100 + header
                })
            );
            assert_eq!(
                flow.reply_counters,
                Some(Counters {
                    packets: 1,
                    bytes: 300 + header
                })
            );
            assert_eq!(flow.zone, 0);
            let start = flow.start_ns.expect("nf_conntrack_timestamp=1");
            assert!(
                start <= now_ns && now_ns - start < 60_000_000_000,
                "start {start}, now {now_ns}"
            );
        }
    }
}
