//! The conntrack table, read over ctnetlink: one dump → a list of [`Flow`]s.
//!
//! This module owns the netlink side of conntrack: sending the dump request
//! (`IPCTNL_MSG_CT_GET` with `NLM_F_DUMP`, family `AF_UNSPEC` so IPv4 and IPv6
//! come together), receiving until `NLMSG_DONE`, and decoding each entry's
//! tuples, id, zone, mark, status, per-direction counters and timestamps.
//! [`parse_messages`] is the pure half: it takes the bytes exactly as received
//! from the socket, so captured dumps in `fixtures/netlink/` replay the kernel.
//!
//! Why attributes are walked here instead of by `netlink-packet-netfilter`
//! 0.4: that crate decodes tuples, status and mark but hands counters, id, zone
//! and timestamps back as `Other(DefaultNla)` (one `Vec` each, which would have
//! to be re-serialised to be read), allocates a `Vec` per tuple, and fails the
//! whole message, with no way to tell which attribute, when one attribute is
//! malformed. Walking the attributes with `netlink_packet_core`'s
//! [`NlasIterator`] over the received buffer costs no allocation per attribute
//! and lets a bad message be logged and skipped while the rest of the dump is
//! kept. The crate is still used to *build* the request, where its typed
//! message is the clearer way to write it.
//!
//! Attribute numbers and layouts: `include/uapi/linux/netfilter/nfnetlink_conntrack.h`;
//! what the kernel emits: `ctnetlink_fill_info()` in `net/netfilter/nf_conntrack_netlink.c`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator, NLA_HEADER_SIZE, NLA_TYPE_MASK,
    NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::ConntrackMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::model::{Counters, Flow, FlowKey, Tuple};

/// Result of one dump (or of parsing captured bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    /// The decoded entries, de-duplicated by [`FlowKey`], in dump order.
    pub flows: Vec<Flow>,
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

/// Why a conntrack dump failed as a whole. A single bad entry is not an error:
/// it is counted in [`Dump::skipped_messages`].
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The kernel refused the dump (`EPERM`): ctnetlink needs CAP_NET_ADMIN in
    /// the network namespace's user namespace.
    #[error(
        "reading the conntrack table needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied,
    /// No ctnetlink in this kernel: the `NETLINK_NETFILTER` protocol or the
    /// conntrack subsystem of nfnetlink is missing.
    #[error(
        "the conntrack netlink interface (nf_conntrack_netlink) is not available: {source} \
         (load it with `modprobe nf_conntrack_netlink`, or use a kernel built with \
         CONFIG_NF_CT_NETLINK)"
    )]
    NotAvailable {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// Any other error the kernel answered the dump with (`NLMSG_ERROR`, or a
    /// negative status in `NLMSG_DONE`).
    #[error("the kernel answered the conntrack dump request with an error: {source}")]
    Kernel {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// A socket call failed.
    #[error("{op} on the NETLINK_NETFILTER socket failed: {source}")]
    Socket {
        /// Which call: "socket", "connect", "setsockopt", "send", "recv".
        op: &'static str,
        /// The error of that call.
        source: io::Error,
    },
    /// A datagram was larger than the receive buffer (the kernel caps dump
    /// batches at about 32 KiB, so this means something else is on the socket).
    #[error("a netlink datagram of {len} bytes did not fit the {capacity}-byte receive buffer")]
    Truncated {
        /// Size of the datagram.
        len: usize,
        /// Size of the receive buffer.
        capacity: usize,
    },
    /// No data for [`RECV_TIMEOUT`] while the dump was not finished.
    #[error("the kernel sent nothing for {0:?} before the conntrack dump was complete")]
    Timeout(Duration),
}

// Netlink message types and header layout (include/uapi/linux/netlink.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

// nfnetlink (include/uapi/linux/netfilter/nfnetlink.h): type = subsys << 8 | msg,
// and every payload starts with a 4-byte `struct nfgenmsg`.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFGENMSG_LEN: usize = 4;
// enum cntl_msg_types. Dump replies come as NEW; DESTROY events as DELETE.
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type (top level of a conntrack message).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;
/// Highest top-level type known (CTA_TIMESTAMP_EVENT, Linux 6.11). Types up
/// to here that are not decoded (PROTOINFO, TIMEOUT, USE, NAT_*, LABELS, …)
/// are expected and not counted as unknown.
const CTA_KNOWN_MAX: u16 = 27;

// enum ctattr_tuple.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
// enum ctattr_ip.
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto. ICMP/ICMPv6 tuples carry id/type/code (4..=9)
// instead of ports: those are known, not decoded, and the ports stay 0.
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
// enum ctattr_counters.
const CTA_COUNTERS_PACKETS: u16 = 1;
const CTA_COUNTERS_BYTES: u16 = 2;
const CTA_COUNTERS32_PACKETS: u16 = 3;
const CTA_COUNTERS32_BYTES: u16 = 4;
const CTA_COUNTERS_PAD: u16 = 5;
// enum ctattr_tstamp.
const CTA_TIMESTAMP_START: u16 = 1;
const CTA_TIMESTAMP_STOP: u16 = 2;
const CTA_TIMESTAMP_PAD: u16 = 3;

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
    let mut parser = Parser::with_capacity(buf.len() / 256);
    parser.feed(buf)?;
    Ok(parser.finish())
}

/// Dump the conntrack table of the calling thread's network namespace.
///
/// Needs CAP_NET_ADMIN ([`ConntrackError::PermissionDenied`] otherwise).
/// Counters are present only for entries created while
/// `net.netfilter.nf_conntrack_acct=1`.
pub fn dump() -> Result<Dump, ConntrackError> {
    let mut parser = Parser::with_capacity(1024);
    // Parse each datagram as it arrives: no copy of the whole dump is kept.
    receive_dump(|datagram| parser.feed(datagram))?;
    Ok(parser.finish())
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

/// Whether the stream is finished after this datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    More,
    Done,
}

/// Send the dump request and hand every received datagram to `on_datagram`
/// until it reports [`Progress::Done`].
fn receive_dump(
    mut on_datagram: impl FnMut(&[u8]) -> Result<Progress, ConntrackError>,
) -> Result<(), ConntrackError> {
    let sock_err = |op| move |source| ConntrackError::Socket { op, source };
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| match e.raw_os_error() {
        // No nfnetlink at all (socket(2): "protocol not supported").
        Some(libc::EPROTONOSUPPORT) => ConntrackError::NotAvailable { source: e },
        _ => ConntrackError::Socket {
            op: "socket",
            source: e,
        },
    })?;
    socket.bind_auto().map_err(sock_err("bind"))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(sock_err("connect"))?;
    set_recv_timeout(&socket, RECV_TIMEOUT).map_err(sock_err("setsockopt"))?;

    let request = dump_request();
    socket.send(&request, 0).map_err(sock_err("send"))?;

    let mut buf = vec![0u8; RECV_BUF_LEN];
    loop {
        let mut window: &mut [u8] = &mut buf[..];
        // MSG_TRUNC: recv returns the datagram's real length, so a datagram
        // larger than the buffer is detected instead of silently cut.
        let len = match socket.recv(&mut window, libc::MSG_TRUNC) {
            Ok(len) => len,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
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
fn dump_request() -> Vec<u8> {
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

fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: a valid fd owned by `socket`, and a pointer/length pair to a
    // live `timeval`, as SO_RCVTIMEO expects (socket(7)).
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One netlink message: header fields the parser needs, and its payload.
struct Message<'a> {
    kind: u16,
    payload: &'a [u8],
}

/// Walk the netlink messages of `buf`. A header whose length is impossible
/// ends the walk (the next message cannot be found): it is reported as `Err`
/// with the offset, after which the iterator yields nothing.
struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, usize>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.offset..).filter(|r| !r.is_empty())?;
        let offset = self.offset;
        // Netlink headers are in host byte order.
        let len = rest
            .get(0..4)
            .map(|b| u32::from_ne_bytes(b.try_into().expect("4 bytes")) as usize);
        match len {
            Some(len) if (NLMSG_HDRLEN..=rest.len()).contains(&len) => {
                let kind = u16::from_ne_bytes([rest[4], rest[5]]);
                self.offset += len.next_multiple_of(4);
                Some(Ok(Message {
                    kind,
                    payload: &rest[NLMSG_HDRLEN..len],
                }))
            }
            _ => {
                self.offset = self.buf.len();
                Some(Err(offset))
            }
        }
    }
}

fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, offset: 0 }
}

/// The meaning of a netlink control message (`NLMSG_*`), or `None` for a
/// message of a netlink family (here: nfnetlink).
fn control(message: &Message<'_>) -> Option<Result<Progress, ConntrackError>> {
    match message.kind {
        NLMSG_NOOP | NLMSG_OVERRUN => Some(Ok(Progress::More)),
        NLMSG_ERROR => {
            // struct nlmsgerr { int error; struct nlmsghdr msg; }; 0 is an ACK.
            match read_i32(message.payload) {
                Some(0) => Some(Ok(Progress::More)),
                Some(errno) => Some(Err(kernel_error(errno))),
                None => Some(Err(kernel_error(-libc::EBADMSG))),
            }
        }
        // A dump's NLMSG_DONE carries the dump callback's status (an int).
        NLMSG_DONE => match read_i32(message.payload) {
            Some(errno) if errno < 0 => Some(Err(kernel_error(errno))),
            _ => Some(Ok(Progress::Done)),
        },
        _ => None,
    }
}

fn read_i32(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}

/// Map a negative errno from the kernel to the error that names the fix.
fn kernel_error(errno: i32) -> ConntrackError {
    let source = io::Error::from_raw_os_error(errno.saturating_neg());
    match errno.saturating_neg() {
        libc::EPERM | libc::EACCES => ConntrackError::PermissionDenied,
        // nfnetlink answers EINVAL/EOPNOTSUPP when no ctnetlink subsystem is
        // registered (nfnetlink_rcv_msg); ENOENT/EPROTONOSUPPORT from module loading.
        libc::EPROTONOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL => {
            ConntrackError::NotAvailable { source }
        }
        _ => ConntrackError::Kernel { source },
    }
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

/// Accumulates flows over one or more received datagrams.
struct Parser {
    flows: Vec<Flow>,
    /// Index into `flows` of each identity seen, to de-duplicate.
    seen: HashMap<FlowKey, usize>,
    skipped_messages: usize,
    unknown_attributes: usize,
    duplicates: usize,
}

impl Parser {
    fn with_capacity(flows: usize) -> Parser {
        Parser {
            flows: Vec::with_capacity(flows),
            seen: HashMap::with_capacity(flows),
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
            let subsys = message.kind >> 8;
            let msg = message.kind & 0xff;
            if subsys != NFNL_SUBSYS_CTNETLINK
                || !(msg == IPCTNL_MSG_CT_NEW || msg == IPCTNL_MSG_CT_DELETE)
            {
                tracing::warn!(
                    message_type = message.kind,
                    "unexpected netlink message type in a conntrack dump; skipped"
                );
                self.skipped_messages += 1;
                continue;
            }
            let Some(attrs) = message.payload.get(NFGENMSG_LEN..) else {
                tracing::warn!("conntrack message shorter than its nfgenmsg header; skipped");
                self.skipped_messages += 1;
                continue;
            };
            match decode_flow(attrs, &mut self.unknown_attributes) {
                Ok(flow) => self.push(flow),
                Err(Malformed(reason)) => {
                    tracing::warn!(reason, "malformed conntrack entry; skipped");
                    self.skipped_messages += 1;
                }
            }
        }
        Ok(progress)
    }

    fn push(&mut self, flow: Flow) {
        match self.seen.entry(flow.key()) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                // The same entry twice (table resize mid-dump). Counters only
                // grow within one entry, so the later sighting is the fresher one.
                self.duplicates += 1;
                self.flows[*slot.get()] = flow;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.flows.len());
                self.flows.push(flow);
            }
        }
    }

    fn finish(self) -> Dump {
        Dump {
            flows: self.flows,
            skipped_messages: self.skipped_messages,
            unknown_attributes: self.unknown_attributes,
            duplicates: self.duplicates,
        }
    }
}

/// Why one entry could not be decoded (logged, and the entry skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed(&'static str);

/// Iterate the attributes of a nested value: `(type, value)`, with the
/// NLA_F_NESTED / NLA_F_NET_BYTEORDER flag bits masked off the type.
fn attributes(buf: &[u8]) -> impl Iterator<Item = Result<(u16, &[u8]), Malformed>> {
    NlasIterator::new(buf).map(|nla| {
        let nla = nla.map_err(|_| Malformed("truncated attribute"))?;
        // NlaBuffer::kind() already masks in netlink-packet-core 0.9; masking
        // again keeps this correct if that ever changes.
        let kind = nla.kind() & NLA_TYPE_MASK;
        // `value()` borrows the NlaBuffer; slice the underlying buffer instead
        // (new_checked() verified NLA_HEADER_SIZE <= length <= buffer length).
        let len = usize::from(nla.length());
        Ok((kind, &nla.into_inner()[NLA_HEADER_SIZE..len]))
    })
}

fn be16(v: &[u8], what: &'static str) -> Result<u16, Malformed> {
    v.try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| Malformed(what))
}

fn be32(v: &[u8], what: &'static str) -> Result<u32, Malformed> {
    v.try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| Malformed(what))
}

fn be64(v: &[u8], what: &'static str) -> Result<u64, Malformed> {
    v.try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Malformed(what))
}

/// Decode the attributes of one conntrack message (after the nfgenmsg).
fn decode_flow(attrs: &[u8], unknown: &mut usize) -> Result<Flow, Malformed> {
    let mut orig = None;
    let mut reply = None;
    let mut id = 0;
    let mut zone = None;
    let mut mark = 0;
    let mut status = 0;
    let mut orig_counters = None;
    let mut reply_counters = None;
    let mut start_ns = None;
    let mut stop_ns = None;
    for attr in attributes(attrs) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_ORIG => orig = Some(decode_tuple(value, unknown)?),
            CTA_TUPLE_REPLY => reply = Some(decode_tuple(value, unknown)?),
            CTA_STATUS => status = be32(value, "CTA_STATUS is not 4 bytes")?,
            CTA_MARK => mark = be32(value, "CTA_MARK is not 4 bytes")?,
            CTA_ID => id = be32(value, "CTA_ID is not 4 bytes")?,
            CTA_ZONE => zone = Some(be16(value, "CTA_ZONE is not 2 bytes")?),
            CTA_COUNTERS_ORIG => orig_counters = decode_counters(value, unknown)?,
            CTA_COUNTERS_REPLY => reply_counters = decode_counters(value, unknown)?,
            CTA_TIMESTAMP => (start_ns, stop_ns) = decode_timestamp(value, unknown)?,
            k if k != 0 && k <= CTA_KNOWN_MAX => {}
            _ => *unknown += 1,
        }
    }
    let (orig, orig_zone) = orig.ok_or(Malformed("no CTA_TUPLE_ORIG"))?;
    let (reply, reply_zone) = reply.ok_or(Malformed("no CTA_TUPLE_REPLY"))?;
    // CTA_ZONE is sent when the zone applies to both directions; a
    // direction-only zone (`ct original zone set`, CT --zone-orig) is sent
    // inside that direction's tuple instead (ctnetlink_dump_zone_id()).
    let zone = zone.or(orig_zone).or(reply_zone).unwrap_or(0);
    Ok(Flow {
        orig,
        reply,
        id,
        zone,
        mark,
        status,
        orig_counters,
        reply_counters,
        start_ns,
        stop_ns,
    })
}

/// CTA_TUPLE_{ORIG,REPLY}: addresses, protocol, ports, and a direction zone.
fn decode_tuple(buf: &[u8], unknown: &mut usize) -> Result<(Tuple, Option<u16>), Malformed> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut sport = 0;
    let mut dport = 0;
    let mut zone = None;
    for attr in attributes(buf) {
        let (kind, value) = attr?;
        match kind {
            CTA_TUPLE_IP => {
                for attr in attributes(value) {
                    let (kind, value) = attr?;
                    match kind {
                        CTA_IP_V4_SRC => src = Some(v4(value)?),
                        CTA_IP_V4_DST => dst = Some(v4(value)?),
                        CTA_IP_V6_SRC => src = Some(v6(value)?),
                        CTA_IP_V6_DST => dst = Some(v6(value)?),
                        _ => *unknown += 1,
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for attr in attributes(value) {
                    let (kind, value) = attr?;
                    match kind {
                        CTA_PROTO_NUM => {
                            proto = Some(*value.first().ok_or(Malformed("CTA_PROTO_NUM is empty"))?)
                        }
                        CTA_PROTO_SRC_PORT => sport = be16(value, "port is not 2 bytes")?,
                        CTA_PROTO_DST_PORT => dport = be16(value, "port is not 2 bytes")?,
                        k if k != 0 && k <= CTA_PROTO_ICMPV6_CODE => {}
                        _ => *unknown += 1,
                    }
                }
            }
            CTA_TUPLE_ZONE => zone = Some(be16(value, "CTA_TUPLE_ZONE is not 2 bytes")?),
            _ => *unknown += 1,
        }
    }
    let (src, dst) = match (src, dst) {
        (Some(s @ IpAddr::V4(_)), Some(d @ IpAddr::V4(_)))
        | (Some(s @ IpAddr::V6(_)), Some(d @ IpAddr::V6(_))) => (s, d),
        (Some(_), Some(_)) => return Err(Malformed("tuple mixes IPv4 and IPv6")),
        _ => return Err(Malformed("tuple without both addresses")),
    };
    let proto = proto.ok_or(Malformed("tuple without CTA_PROTO_NUM"))?;
    let tuple = Tuple {
        src,
        dst,
        proto,
        sport,
        dport,
    };
    Ok((tuple, zone))
}

fn v4(value: &[u8]) -> Result<IpAddr, Malformed> {
    let octets: [u8; 4] = value
        .try_into()
        .map_err(|_| Malformed("IPv4 address is not 4 bytes"))?;
    Ok(IpAddr::V4(Ipv4Addr::from(octets)))
}

fn v6(value: &[u8]) -> Result<IpAddr, Malformed> {
    let octets: [u8; 16] = value
        .try_into()
        .map_err(|_| Malformed("IPv6 address is not 16 bytes"))?;
    Ok(IpAddr::V6(Ipv6Addr::from(octets)))
}

/// CTA_COUNTERS_{ORIG,REPLY}: the 64-bit forms, or the old 32-bit ones.
/// A nest with neither packets nor bytes is treated as absent.
fn decode_counters(buf: &[u8], unknown: &mut usize) -> Result<Option<Counters>, Malformed> {
    let mut packets = None;
    let mut bytes = None;
    for attr in attributes(buf) {
        let (kind, value) = attr?;
        match kind {
            CTA_COUNTERS_PACKETS => packets = Some(be64(value, "packet counter is not 8 bytes")?),
            CTA_COUNTERS_BYTES => bytes = Some(be64(value, "byte counter is not 8 bytes")?),
            CTA_COUNTERS32_PACKETS => {
                packets = Some(u64::from(be32(
                    value,
                    "32-bit packet counter is not 4 bytes",
                )?))
            }
            CTA_COUNTERS32_BYTES => {
                bytes = Some(u64::from(be32(
                    value,
                    "32-bit byte counter is not 4 bytes",
                )?))
            }
            CTA_COUNTERS_PAD => {}
            _ => *unknown += 1,
        }
    }
    if packets.is_none() && bytes.is_none() {
        return Ok(None);
    }
    Ok(Some(Counters {
        packets: packets.unwrap_or(0),
        bytes: bytes.unwrap_or(0),
    }))
}

/// CTA_TIMESTAMP: (START, STOP) in ns since the epoch.
fn decode_timestamp(
    buf: &[u8],
    unknown: &mut usize,
) -> Result<(Option<u64>, Option<u64>), Malformed> {
    let mut start = None;
    let mut stop = None;
    for attr in attributes(buf) {
        let (kind, value) = attr?;
        match kind {
            CTA_TIMESTAMP_START => start = Some(be64(value, "timestamp is not 8 bytes")?),
            CTA_TIMESTAMP_STOP => stop = Some(be64(value, "timestamp is not 8 bytes")?),
            CTA_TIMESTAMP_PAD => {}
            _ => *unknown += 1,
        }
    }
    Ok((start, stop))
}
