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
//! malformed. Walking the attributes in place over the received buffer (see
//! `attributes()` for why not with `netlink_packet_core::NlasIterator` either)
//! costs no allocation per attribute and lets a bad message be logged and
//! skipped while the rest of the dump is kept. The crate is still used to
//! *build* the request, where its typed message is the clearer way to write it.
//!
//! Attribute numbers and layouts: `include/uapi/linux/netfilter/nfnetlink_conntrack.h`;
//! what the kernel emits: `ctnetlink_fill_info()` in `net/netfilter/nf_conntrack_netlink.c`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLA_ALIGNTO, NLA_HEADER_SIZE, NLA_TYPE_MASK,
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
    /// `tcp_states[i]` is the TCP state of `flows[i]` (CTA_PROTOINFO, `enum
    /// tcp_conntrack`: 3 ESTABLISHED, 7 TIME_WAIT, …), `None` for other protocols.
    pub tcp_states: Vec<Option<u8>>,
    /// `timeouts[i]` is the whole seconds `flows[i]` has left before it expires
    /// (CTA_TIMEOUT), when the kernel sent it.
    pub timeouts: Vec<Option<u32>>,
}

/// Why a conntrack dump failed as a whole. A single bad entry is not an error:
/// it is counted in [`Dump::skipped_messages`].
///
/// Variants that wrap an OS error expose it as [`std::error::Error::source`]
/// rather than repeating it in their message, so an `anyhow` chain printed with
/// `{:#}` names it once.
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
        "the conntrack netlink interface (nf_conntrack_netlink) is not available \
         (load it with `modprobe nf_conntrack_netlink`, or use a kernel built with \
         CONFIG_NF_CT_NETLINK)"
    )]
    NotAvailable {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// Any other error the kernel answered the dump with (`NLMSG_ERROR`, or a
    /// negative status in `NLMSG_DONE`).
    #[error("the kernel answered the conntrack dump request with an error")]
    Kernel {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// A socket call failed.
    #[error("{op} on the NETLINK_NETFILTER socket failed")]
    Socket {
        /// Which call: "socket", "bind", "connect", "setsockopt", "send", "recv".
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
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_COUNTERS_ORIG: u16 = 9;
const CTA_COUNTERS_REPLY: u16 = 10;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
const CTA_TIMESTAMP: u16 = 20;
/// Highest top-level type known (CTA_TIMESTAMP_EVENT, events only, Linux 6.14).
/// Types up to here that are not decoded (PROTOINFO, TIMEOUT, USE, NAT_*,
/// LABELS, …) are expected and not counted as unknown.
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

// ---- events: NEW and DESTROY as they happen ----

/// Netlink message flags of a NEW event (include/uapi/linux/netlink.h); an UPDATE has
/// the same message type without them (`ctnetlink_conntrack_event()`).
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

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
    /// The TCP state (`enum tcp_conntrack`: 7 TIME_WAIT, 8 CLOSE, …) from CTA_PROTOINFO,
    /// which DESTROY events carry: it tells which timeout ran out, and so when the
    /// connection really ended (see [`TCP_TIME_WAIT`]).
    pub tcp_state: Option<u8>,
    /// CTA_TIMEOUT: the whole seconds the entry had left. A DESTROY event carries it only
    /// when at least 1 s was left (`ctnetlink_dump_timeout(…, skip_zero)`; seen on Linux
    /// 6.18), i.e. for an entry removed before it expired (`conntrack -D`/`-F`, a TCP
    /// port reused during TIME_WAIT, early drop); an expired entry has none.
    pub timeout: Option<u32>,
}

// enum ctattr_protoinfo / ctattr_protoinfo_tcp.
const CTA_PROTOINFO: u16 = 4;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// Conntrack's TCP states (include/uapi/linux/netfilter/nf_conntrack_tcp.h) whose timeout
/// follows the end of a connection: TIME_WAIT (after a FIN close) and CLOSE (after RST).
pub const TCP_TIME_WAIT: u8 = 7;
/// See [`TCP_TIME_WAIT`].
pub const TCP_CLOSE: u8 = 8;

/// The TCP state in a CTA_PROTOINFO value, if it has one. Malformed parts are ignored:
/// the state is only a refinement.
fn protoinfo_tcp_state(info: &[u8]) -> Option<u8> {
    fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
        attributes(buf)
            .map_while(Result::ok)
            .find(|(k, _)| *k == kind)
            .map(|(_, v)| v)
    }
    let tcp = find(info, CTA_PROTOINFO_TCP)?;
    find(tcp, CTA_PROTOINFO_TCP_STATE)?.first().copied()
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
        let (subsys, msg) = (message.kind >> 8, message.kind & 0xff);
        let kind = match (subsys, msg) {
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) => EventKind::Destroy,
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW)
                if message.flags & (NLM_F_CREATE | NLM_F_EXCL) == NLM_F_CREATE | NLM_F_EXCL =>
            {
                EventKind::New
            }
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) => EventKind::Update,
            _ => {
                tracing::warn!(
                    message_type = message.kind,
                    "unexpected message on the conntrack event socket; skipped"
                );
                out.skipped_messages += 1;
                continue;
            }
        };
        let Some(attrs) = message.payload.get(NFGENMSG_LEN..) else {
            out.skipped_messages += 1;
            continue;
        };
        let mut extras = Extras::default();
        match decode_flow(attrs, &mut out.unknown_attributes, &mut extras) {
            Ok(flow) => out.events.push(Event {
                kind,
                tcp_state: extras.tcp_state,
                timeout: extras.timeout,
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

/// A netlink socket subscribed to conntrack events, separate from the dump socket so a
/// dump's replies and the event stream never mix.
pub struct EventSocket {
    socket: Socket,
    buf: Vec<u8>,
}

impl EventSocket {
    /// Subscribe to `groups` ([`GROUP_NEW`], [`GROUP_DESTROY`], …). Needs CAP_NET_ADMIN.
    /// Subscribe *before* the first dump, so no flow falls between the two.
    pub fn subscribe(groups: &[u32]) -> Result<EventSocket, ConntrackError> {
        let sock_err = |op| move |source| ConntrackError::Socket { op, source };
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(|e| match e.raw_os_error() {
            Some(libc::EPROTONOSUPPORT) => ConntrackError::NotAvailable { source: e },
            _ => ConntrackError::Socket {
                op: "socket",
                source: e,
            },
        })?;
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
        socket.set_non_blocking(true).map_err(sock_err("fcntl"))?;
        Ok(EventSocket {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Set the receive buffer to `bytes` (`SO_RCVBUFFORCE`, which may exceed
    /// `net.core.rmem_max` with CAP_NET_ADMIN; `SO_RCVBUF` otherwise). Returns the size the
    /// kernel granted (it doubles the request for bookkeeping, socket(7)).
    pub fn set_receive_buffer(&self, bytes: usize) -> Result<usize, ConntrackError> {
        let fd = self.socket.as_raw_fd();
        let v = bytes.min(i32::MAX as usize / 2) as libc::c_int;
        let set = |opt| {
            // SAFETY: valid fd; pointer/length of a live c_int, as SOL_SOCKET options take.
            unsafe {
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    opt,
                    (&v as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            }
        };
        if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
            return Err(ConntrackError::Socket {
                op: "setsockopt",
                source: io::Error::last_os_error(),
            });
        }
        Ok(self.receive_buffer())
    }

    /// The receive buffer size the kernel uses now.
    pub fn receive_buffer(&self) -> usize {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: valid fd; pointer/length of a live c_int.
        let rc = unsafe {
            libc::getsockopt(
                self.socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if rc == 0 {
            v.max(0) as usize
        } else {
            0
        }
    }

    /// The socket's inode (its row in `/proc/net/netlink`).
    pub fn inode(&self) -> Option<u64> {
        // SAFETY: fstat on a valid fd into a zeroed, live stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstat(self.socket.as_raw_fd(), &mut st) };
        (rc == 0).then_some(st.st_ino)
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
        let mut pfd = libc::pollfd {
            fd: self.socket.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one live pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            // A signal (SIGTERM, SIGHUP) wakes the caller up: not an error.
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(got);
            }
            return Err(ConntrackError::Socket {
                op: "poll",
                source: e,
            });
        }
        while got.datagrams < max {
            let mut window: &mut [u8] = &mut self.buf[..];
            let len = match self.socket.recv(&mut window, libc::MSG_TRUNC) {
                Ok(len) => len,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    got.overrun = true;
                    break;
                }
                Err(e) => {
                    return Err(ConntrackError::Socket {
                        op: "recv",
                        source: e,
                    })
                }
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

/// Messages dropped so far on the netlink socket with `inode`, from `/proc/net/netlink`
/// text (the `Drops` column, `sk_drops`, counted by `netlink_overrun()`). Pure.
pub fn netlink_drops(text: &str, inode: u64) -> Option<u64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let drops = header.iter().position(|h| *h == "Drops")?;
    let ino = header.iter().position(|h| *h == "Inode")?;
    lines.find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(ino)?.parse::<u64>().ok()? == inode).then(|| f.get(drops)?.parse().ok())?
    })
}

/// One netlink message: header fields the parser needs, and its payload.
struct Message<'a> {
    kind: u16,
    /// `nlmsg_flags`: tells a NEW event (`NLM_F_CREATE|NLM_F_EXCL`) from an UPDATE.
    flags: u16,
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
                    flags: u16::from_ne_bytes([rest[6], rest[7]]),
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
        // nfnetlink_rcv_msg() answers EINVAL when no subsystem is registered
        // for the message type (nf_conntrack_netlink not loaded, and not
        // loadable); the others are what module loading and older kernels give.
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
    tcp_states: Vec<Option<u8>>,
    timeouts: Vec<Option<u32>>,
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
            tcp_states: Vec::with_capacity(flows),
            timeouts: Vec::with_capacity(flows),
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
            let mut extras = Extras::default();
            match decode_flow(attrs, &mut self.unknown_attributes, &mut extras) {
                Ok(flow) => self.push(flow, extras),
                Err(Malformed(reason)) => {
                    tracing::warn!(reason, "malformed conntrack entry; skipped");
                    self.skipped_messages += 1;
                }
            }
        }
        Ok(progress)
    }

    fn push(&mut self, flow: Flow, extras: Extras) {
        match self.seen.entry(flow.key()) {
            std::collections::hash_map::Entry::Occupied(slot) => {
                // The same entry twice (table resize mid-dump). Counters only
                // grow within one entry, so the later sighting is the fresher one.
                self.duplicates += 1;
                self.flows[*slot.get()] = flow;
                self.tcp_states[*slot.get()] = extras.tcp_state;
                self.timeouts[*slot.get()] = extras.timeout;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(self.flows.len());
                self.flows.push(flow);
                self.tcp_states.push(extras.tcp_state);
                self.timeouts.push(extras.timeout);
            }
        }
    }

    fn finish(self) -> Dump {
        Dump {
            flows: self.flows,
            skipped_messages: self.skipped_messages,
            unknown_attributes: self.unknown_attributes,
            duplicates: self.duplicates,
            tcp_states: self.tcp_states,
            timeouts: self.timeouts,
        }
    }
}

/// Why one entry could not be decoded (logged, and the entry skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Malformed(&'static str);

/// Iterate the attributes of a nested value: `(type, value)`, with the
/// NLA_F_NESTED / NLA_F_NET_BYTEORDER flag bits masked off the type. An
/// attribute whose length is below its header or beyond the buffer yields
/// `Err` and ends the walk.
///
/// Hand-rolled rather than `netlink_packet_core::NlasIterator`: that one reads
/// each header field through the non-inlined `parse_u16`, returning a
/// `Result<_, DecodeError>`, several times per attribute; profiling a 20,000-flow
/// parse put ~40% of the time there, twice what this loop costs.
fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        // struct nlattr { __u16 nla_len; __u16 nla_type; }, host byte order.
        let (len, kind) = match rest {
            [l0, l1, t0, t1, ..] => (
                usize::from(u16::from_ne_bytes([*l0, *l1])),
                u16::from_ne_bytes([*t0, *t1]) & NLA_TYPE_MASK,
            ),
            _ => (0, 0),
        };
        if len < NLA_HEADER_SIZE || len > rest.len() {
            self.rest = &[];
            return Some(Err(Malformed("truncated attribute")));
        }
        // The last attribute's padding may be missing: the walk just ends.
        self.rest = rest.get(len.next_multiple_of(NLA_ALIGNTO)..).unwrap_or(&[]);
        Some(Ok((kind, &rest[NLA_HEADER_SIZE..len])))
    }
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

/// What an entry says beside its flow: its TCP state and the time it has left.
#[derive(Debug, Clone, Copy, Default)]
struct Extras {
    tcp_state: Option<u8>,
    timeout: Option<u32>,
}

/// Decode the attributes of one conntrack message (after the nfgenmsg); the TCP state and
/// the timeout left, when the message has them, go to `extras`.
fn decode_flow(attrs: &[u8], unknown: &mut usize, extras: &mut Extras) -> Result<Flow, Malformed> {
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
            CTA_PROTOINFO => extras.tcp_state = protoinfo_tcp_state(value),
            // A refinement, like the TCP state: a malformed one is ignored.
            CTA_TIMEOUT => extras.timeout = be32(value, "").ok(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IPPROTO_TCP, IPPROTO_UDP};
    use std::path::PathBuf;

    const IPPROTO_ICMP: u8 = 1;
    const IPPROTO_ICMPV6: u8 = 58;
    const NLA_F_NESTED: u16 = 0x8000;
    const NLM_F_MULTI: u16 = 2;

    fn fixture(name: &str) -> Vec<u8> {
        let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "netlink", name]
            .iter()
            .collect();
        std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    // ---- `conntrack -L -o extended,id` text, the kernel's own view ----

    /// One line of `conntrack -L -o extended,id`.
    #[derive(Debug)]
    struct Listed {
        orig: Tuple,
        reply: Tuple,
        orig_counters: Option<Counters>,
        reply_counters: Option<Counters>,
        zone: u16,
        mark: u32,
        id: u32,
    }

    fn parse_listing(text: &str) -> Vec<Listed> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                // "ipv4 2 tcp 6 116 TIME_WAIT src=…": the protocol number is word 3.
                let proto: u8 = words[3].parse().expect("protocol number");
                let pairs: Vec<(&str, &str)> =
                    words.iter().filter_map(|w| w.split_once('=')).collect();
                // The key=value pairs come in two direction groups, each opened by src=.
                let second = pairs
                    .iter()
                    .enumerate()
                    .filter(|(_, (k, _))| *k == "src")
                    .nth(1)
                    .map(|(i, _)| i)
                    .expect("two src= groups");
                let (first, rest) = pairs.split_at(second);
                fn get<'a>(group: &[(&str, &'a str)], key: &str) -> Option<&'a str> {
                    group.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
                }
                let tuple = |g: &[(&str, &str)]| Tuple {
                    src: get(g, "src").unwrap().parse().unwrap(),
                    dst: get(g, "dst").unwrap().parse().unwrap(),
                    proto,
                    sport: get(g, "sport").map_or(0, |v| v.parse().unwrap()),
                    dport: get(g, "dport").map_or(0, |v| v.parse().unwrap()),
                };
                let counters = |g: &[(&str, &str)]| {
                    get(g, "bytes").map(|bytes| Counters {
                        packets: get(g, "packets").unwrap().parse().unwrap(),
                        bytes: bytes.parse().unwrap(),
                    })
                };
                Listed {
                    orig: tuple(first),
                    // The reply group ends where the flow-wide fields start.
                    reply: tuple(rest),
                    orig_counters: counters(first),
                    reply_counters: counters(rest),
                    zone: get(rest, "zone").map_or(0, |v| v.parse().unwrap()),
                    mark: get(rest, "mark").map_or(0, |v| v.parse().unwrap()),
                    // The conntrack id is the last id= (ICMP tuples have an id= too).
                    id: pairs
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == "id")
                        .unwrap()
                        .1
                        .parse()
                        .unwrap(),
                }
            })
            .collect()
    }

    /// Every flow of the dump agrees with conntrack's own listing, and the
    /// other way round.
    fn assert_matches_listing(dump: &Dump, listing: &[Listed]) {
        assert_eq!(dump.flows.len(), listing.len(), "flow count");
        for listed in listing {
            let flow = dump
                .flows
                .iter()
                .find(|f| f.id == listed.id)
                .unwrap_or_else(|| panic!("no flow with id {} in the dump", listed.id));
            assert_eq!(flow.orig, listed.orig, "orig tuple of id {}", listed.id);
            assert_eq!(flow.reply, listed.reply, "reply tuple of id {}", listed.id);
            assert_eq!(
                flow.orig_counters, listed.orig_counters,
                "orig counters of id {}",
                listed.id
            );
            assert_eq!(
                flow.reply_counters, listed.reply_counters,
                "reply counters of id {}",
                listed.id
            );
            assert_eq!(flow.zone, listed.zone, "zone of id {}", listed.id);
            assert_eq!(flow.mark, listed.mark, "mark of id {}", listed.id);
        }
    }

    // ---- building messages by hand ----

    fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + value.len() + 3);
        out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        nla(kind | NLA_F_NESTED, &parts.concat())
    }

    fn nlmsg(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&1u32.to_ne_bytes()); // seq
        out.extend_from_slice(&0u32.to_ne_bytes()); // port id
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    /// A dump reply (type NEW, NLM_F_MULTI) carrying `attrs`.
    fn ct_message(attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut payload = vec![libc::AF_INET as u8, 0, 0, 0]; // nfgenmsg
        payload.extend_from_slice(&attrs.concat());
        nlmsg(
            NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW,
            NLM_F_MULTI,
            &payload,
        )
    }

    fn done() -> Vec<u8> {
        nlmsg(NLMSG_DONE, NLM_F_MULTI, &0i32.to_ne_bytes())
    }

    fn tuple_v4(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        nest(
            kind,
            &[
                nest(
                    CTA_TUPLE_IP,
                    &[nla(CTA_IP_V4_SRC, &src), nla(CTA_IP_V4_DST, &dst)],
                ),
                nest(
                    CTA_TUPLE_PROTO,
                    &[
                        nla(CTA_PROTO_NUM, &[IPPROTO_UDP]),
                        nla(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                        nla(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                    ],
                ),
            ],
        )
    }

    /// A UDP flow 192.0.2.1:sport → 192.0.2.2:53 with id `id`, plus `extra` attributes.
    fn udp_flow(id: u32, sport: u16, extra: &[Vec<u8>]) -> Vec<u8> {
        let mut attrs = vec![
            tuple_v4(CTA_TUPLE_ORIG, [192, 0, 2, 1], [192, 0, 2, 2], sport, 53),
            tuple_v4(CTA_TUPLE_REPLY, [192, 0, 2, 2], [192, 0, 2, 1], 53, sport),
            nla(CTA_ID, &id.to_be_bytes()),
        ];
        attrs.extend_from_slice(extra);
        ct_message(&attrs)
    }

    fn counters64(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
        nest(
            kind,
            &[
                nla(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
                nla(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
            ],
        )
    }

    /// Byte offsets of the messages in `buf`.
    fn message_offsets(buf: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut offset = 0;
        while offset < buf.len() {
            let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap()) as usize;
            out.push((offset, len));
            offset += len.next_multiple_of(4);
        }
        out
    }

    // ---- the captured dumps ----

    #[test]
    fn basic_capture_matches_conntrack_listing() {
        let dump = parse_messages(&fixture("basic.bin")).unwrap();
        let text = String::from_utf8(fixture("basic.conntrack-L.txt")).unwrap();
        assert_eq!(dump.flows.len(), 8);
        assert_eq!(
            (
                dump.skipped_messages,
                dump.unknown_attributes,
                dump.duplicates
            ),
            (0, 0, 0)
        );
        assert_matches_listing(&dump, &parse_listing(&text));
    }

    #[test]
    fn basic_capture_decodes_each_kind_of_flow() {
        let dump = parse_messages(&fixture("basic.bin")).unwrap();
        let by_dport = |proto: u8, dport: u16| {
            dump.flows
                .iter()
                .find(|f| f.orig.proto == proto && f.orig.dport == dport)
                .unwrap_or_else(|| panic!("no flow {proto}/{dport}"))
        };
        let a4: IpAddr = "198.51.100.1".parse().unwrap();
        let b4: IpAddr = "198.51.100.2".parse().unwrap();
        let a6: IpAddr = "2001:db8::1".parse().unwrap();
        let b6: IpAddr = "2001:db8::2".parse().unwrap();

        // TCP over IPv4, closed: final counters, reply tuple mirrors the original.
        let tcp4 = by_dport(IPPROTO_TCP, 5001);
        assert_eq!((tcp4.orig.src, tcp4.orig.dst), (a4, b4));
        assert_eq!((tcp4.reply.src, tcp4.reply.dst), (b4, a4));
        assert_eq!(
            (tcp4.reply.sport, tcp4.reply.dport),
            (5001, tcp4.orig.sport)
        );
        assert_eq!(
            tcp4.orig_counters,
            Some(Counters {
                packets: 6,
                bytes: 5320
            })
        );
        assert_eq!(
            tcp4.reply_counters,
            Some(Counters {
                packets: 4,
                bytes: 5216
            })
        );
        assert_eq!(tcp4.id, 3325327641);
        assert_eq!(tcp4.zone, 0);
        assert!(tcp4.start_ns.is_some());
        assert_eq!(tcp4.stop_ns, None, "STOP comes only with DESTROY events");

        // TCP over IPv6.
        let tcp6 = by_dport(IPPROTO_TCP, 5002);
        assert_eq!((tcp6.orig.src, tcp6.orig.dst), (a6, b6));
        assert_eq!(
            tcp6.orig_counters,
            Some(Counters {
                packets: 6,
                bytes: 7440
            })
        );
        assert_eq!(
            tcp6.reply_counters,
            Some(Counters {
                packets: 4,
                bytes: 7296
            })
        );

        // The zoned flow, and only it, is in zone 7.
        assert_eq!(by_dport(IPPROTO_TCP, 5007).zone, 7);
        assert_eq!(dump.flows.iter().filter(|f| f.zone != 0).count(), 1);

        // UDP, both families.
        assert_eq!(by_dport(IPPROTO_UDP, 5003).orig.dst, b4);
        assert_eq!(by_dport(IPPROTO_UDP, 5004).orig.dst, b6);

        // ICMP and ICMPv6 tuples carry id/type/code, not ports: ports stay 0.
        let icmp = by_dport(IPPROTO_ICMP, 0);
        assert_eq!(
            (icmp.orig.sport, icmp.reply.sport, icmp.reply.dport),
            (0, 0, 0)
        );
        assert_eq!(
            icmp.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 252
            })
        );
        let icmp6 = by_dport(IPPROTO_ICMPV6, 0);
        assert_eq!((icmp6.orig.src, icmp6.orig.sport), (a6, 0));

        // Opened before nf_conntrack_acct=1: counters unknown (None), not zero.
        let idle = by_dport(IPPROTO_TCP, 5009);
        assert_eq!((idle.orig_counters, idle.reply_counters), (None, None));
        assert_eq!(idle.start_ns, None);
        // Every flow made after the sysctls has a start timestamp.
        assert_eq!(
            dump.flows.iter().filter(|f| f.start_ns.is_some()).count(),
            7
        );
    }

    #[test]
    fn many_capture_spanning_several_datagrams_matches_conntrack_listing() {
        let raw = fixture("many.bin");
        // Bigger than one ~32 KiB dump batch: several datagrams appended.
        assert!(raw.len() > 4 * 32 * 1024);
        let dump = parse_messages(&raw).unwrap();
        let text = String::from_utf8(fixture("many.conntrack-L.txt")).unwrap();
        assert_eq!(dump.flows.len(), 608);
        assert_eq!(
            (
                dump.skipped_messages,
                dump.unknown_attributes,
                dump.duplicates
            ),
            (0, 0, 0)
        );
        assert_matches_listing(&dump, &parse_listing(&text));
    }

    // ---- robustness ----

    #[test]
    fn unknown_attributes_are_skipped_and_counted() {
        let raw = fixture("basic.bin");
        let (offset, len) = message_offsets(&raw)[0];
        // Append an unknown top-level attribute (and a nested-flagged one) to
        // the first message, and fix its nlmsg_len.
        let extra = [nla(200, &[1, 2, 3, 4, 5]), nest(201, &[nla(1, &[0; 4])])].concat();
        let mut message = raw[offset..offset + len].to_vec();
        message.extend_from_slice(&extra);
        let new_len = (message.len() as u32).to_ne_bytes();
        message[0..4].copy_from_slice(&new_len);
        let patched = [&raw[..offset], &message[..], &raw[offset + len..]].concat();

        let plain = parse_messages(&raw).unwrap();
        let dump = parse_messages(&patched).unwrap();
        assert_eq!(dump.unknown_attributes, 2);
        assert_eq!(dump.skipped_messages, 0);
        assert_eq!(dump.flows, plain.flows);
    }

    #[test]
    fn unknown_nested_attribute_is_counted() {
        let unknown_in_counters = nest(
            CTA_COUNTERS_ORIG,
            &[
                nla(CTA_COUNTERS_PACKETS, &2u64.to_be_bytes()),
                nla(CTA_COUNTERS_BYTES, &100u64.to_be_bytes()),
                nla(42, &[0; 8]),
            ],
        );
        let raw = [udp_flow(1, 1000, &[unknown_in_counters]), done()].concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!(dump.unknown_attributes, 1);
        assert_eq!(
            dump.flows[0].orig_counters,
            Some(Counters {
                packets: 2,
                bytes: 100
            })
        );
    }

    #[test]
    fn truncated_attribute_skips_only_its_message() {
        let raw = fixture("basic.bin");
        let offsets = message_offsets(&raw);
        let (offset, _) = offsets[1];
        let mut broken = raw.clone();
        // The first attribute of message 2 (after nlmsghdr and nfgenmsg)
        // claims more bytes than the message has.
        let attr = offset + NLMSG_HDRLEN + NFGENMSG_LEN;
        broken[attr..attr + 2].copy_from_slice(&0x7fffu16.to_ne_bytes());

        let dump = parse_messages(&broken).unwrap();
        assert_eq!(dump.skipped_messages, 1);
        assert_eq!(dump.flows.len(), 7);
        let all = parse_messages(&raw).unwrap();
        let missing: Vec<_> = all
            .flows
            .iter()
            .filter(|f| !dump.flows.contains(f))
            .collect();
        assert_eq!(missing.len(), 1);
    }

    #[test]
    fn message_without_tuple_is_skipped() {
        let no_tuple = ct_message(&[nla(CTA_ID, &7u32.to_be_bytes())]);
        let raw = [
            udp_flow(1, 1000, &[]),
            no_tuple,
            udp_flow(2, 1001, &[]),
            done(),
        ]
        .concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!(dump.skipped_messages, 1);
        assert_eq!(dump.flows.iter().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn counter_of_wrong_size_skips_the_message() {
        let bad = nest(CTA_COUNTERS_ORIG, &[nla(CTA_COUNTERS_BYTES, &[0; 6])]);
        let raw = [udp_flow(1, 1000, &[bad]), udp_flow(2, 1001, &[])].concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!(dump.skipped_messages, 1);
        assert_eq!(dump.flows.len(), 1);
        assert_eq!(dump.flows[0].id, 2);
    }

    #[test]
    fn message_cut_short_keeps_the_messages_before_it() {
        let raw = fixture("basic.bin");
        let offsets = message_offsets(&raw);
        // Cut the buffer in the middle of the 4th message.
        let (offset, len) = offsets[3];
        let dump = parse_messages(&raw[..offset + len / 2]).unwrap();
        assert_eq!(dump.flows.len(), 3);
        assert_eq!(dump.skipped_messages, 1);
    }

    #[test]
    fn counters_in_the_old_32_bit_form_decode() {
        let orig = nest(
            CTA_COUNTERS_ORIG,
            &[
                nla(CTA_COUNTERS32_PACKETS, &3u32.to_be_bytes()),
                nla(CTA_COUNTERS32_BYTES, &4_000_000_000u32.to_be_bytes()),
            ],
        );
        let reply = nest(
            CTA_COUNTERS_REPLY,
            &[
                nla(CTA_COUNTERS_PAD, &[]),
                nla(CTA_COUNTERS_PACKETS, &5u64.to_be_bytes()),
                nla(CTA_COUNTERS_BYTES, &(1u64 << 40).to_be_bytes()),
            ],
        );
        let raw = [udp_flow(9, 1000, &[orig, reply]), done()].concat();
        let flow = &parse_messages(&raw).unwrap().flows[0];
        assert_eq!(
            flow.orig_counters,
            Some(Counters {
                packets: 3,
                bytes: 4_000_000_000
            })
        );
        assert_eq!(
            flow.reply_counters,
            Some(Counters {
                packets: 5,
                bytes: 1 << 40
            })
        );
    }

    #[test]
    fn scalar_attributes_and_timestamps_decode() {
        let extra = [
            nla(CTA_STATUS, &0x18eu32.to_be_bytes()),
            nla(CTA_MARK, &0xdeadu32.to_be_bytes()),
            nla(CTA_ZONE, &300u16.to_be_bytes()),
            nest(
                CTA_TIMESTAMP,
                &[
                    nla(CTA_TIMESTAMP_START, &11u64.to_be_bytes()),
                    nla(CTA_TIMESTAMP_PAD, &[]),
                    nla(CTA_TIMESTAMP_STOP, &22u64.to_be_bytes()),
                ],
            ),
        ];
        let raw = udp_flow(0xfeed_beef, 1000, &extra);
        let flow = &parse_messages(&raw).unwrap().flows[0];
        assert_eq!(flow.id, 0xfeed_beef);
        assert_eq!((flow.status, flow.mark, flow.zone), (0x18e, 0xdead, 300));
        assert_eq!((flow.start_ns, flow.stop_ns), (Some(11), Some(22)));
        assert_eq!((flow.orig.sport, flow.orig.dport), (1000, 53));
    }

    #[test]
    fn direction_only_zone_is_taken_from_the_tuple() {
        // `ct original zone set 5`: the kernel sends CTA_TUPLE_ZONE inside the
        // original tuple and no top-level CTA_ZONE.
        let orig = nest(
            CTA_TUPLE_ORIG,
            &[
                nest(
                    CTA_TUPLE_IP,
                    &[
                        nla(CTA_IP_V4_SRC, &[192, 0, 2, 1]),
                        nla(CTA_IP_V4_DST, &[192, 0, 2, 2]),
                    ],
                ),
                nest(CTA_TUPLE_PROTO, &[nla(CTA_PROTO_NUM, &[IPPROTO_UDP])]),
                nla(CTA_TUPLE_ZONE, &5u16.to_be_bytes()),
            ],
        );
        let reply = tuple_v4(CTA_TUPLE_REPLY, [192, 0, 2, 2], [192, 0, 2, 1], 0, 0);
        let raw = ct_message(&[orig, reply]);
        let dump = parse_messages(&raw).unwrap();
        assert_eq!(dump.flows[0].zone, 5);
        assert_eq!(dump.unknown_attributes, 0);
    }

    #[test]
    fn duplicate_entries_are_deduplicated() {
        let raw = fixture("basic.bin");
        // The whole dump twice, as a table resize can repeat entries.
        let twice = [&raw[..], &raw[..]].concat();
        let dump = parse_messages(&twice).unwrap();
        assert_eq!(dump.flows.len(), 8);
        assert_eq!(dump.duplicates, 8);
    }

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
        assert_eq!(
            dump.flows.iter().map(|f| f.id).collect::<Vec<_>>(),
            [7, 8, 9]
        );
        assert_eq!(
            dump.flows[0].orig_counters,
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
        assert_eq!(dump.flows.len(), 1);
        assert_eq!(
            dump.flows[0].reply_counters,
            Some(Counters {
                packets: 1,
                bytes: 60
            })
        );
    }

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
                &[nla(CTA_PROTOINFO_TCP_STATE, &[TCP_TIME_WAIT])],
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
        assert_eq!(ev.events[2].tcp_state, Some(TCP_TIME_WAIT));
        assert_eq!(ev.events[0].tcp_state, None);
        assert_eq!(
            ev.events[2].flow.orig_counters,
            Some(Counters {
                packets: 2,
                bytes: 80
            })
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
        let dump = parse_messages(
            &[
                udp_flow(4, 1003, &[nla(CTA_TIMEOUT, &29u32.to_be_bytes())]),
                udp_flow(5, 1004, &[]),
                done(),
            ]
            .concat(),
        )
        .unwrap();
        assert_eq!(dump.timeouts, [Some(29), None]);
    }

    #[test]
    fn dump_keeps_each_tcp_flows_state_beside_it() {
        let dump = parse_messages(&fixture("basic.bin")).unwrap();
        assert_eq!(dump.tcp_states.len(), dump.flows.len());
        for (f, st) in dump.flows.iter().zip(&dump.tcp_states) {
            match f.orig.proto {
                IPPROTO_TCP => assert!(matches!(st, Some(1..=9)), "{f:?}: {st:?}"),
                _ => assert_eq!(*st, None, "{f:?}"),
            }
        }
        assert!(dump.flows.iter().any(|f| f.orig.proto == IPPROTO_TCP));
    }

    #[test]
    fn netlink_drops_are_read_by_inode() {
        let text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                    00000000a707d6af 0   0          00000000 0        0        0     2        0        4\n\
                    00000000b26ed691 12  1234       00000005 0        0        0     2        37       98765\n";
        assert_eq!(netlink_drops(text, 98765), Some(37));
        assert_eq!(netlink_drops(text, 4), Some(0));
        assert_eq!(netlink_drops(text, 5), None);
        assert_eq!(netlink_drops("", 5), None);
    }

    /// The kernel facts the daemon relies on, on this kernel: a subscribed socket hears a
    /// NEW when a flow is confirmed and a DESTROY with final counters when it is deleted;
    /// a receive buffer too small for a burst reports ENOBUFS, and `/proc/net/netlink`
    /// counts the events dropped.
    #[test]
    fn events_in_a_namespace_new_destroy_and_overrun() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "this test needs root (network namespaces, CAP_NET_ADMIN) and CI is set"
            );
            eprintln!("note: events_in_a_namespace_new_destroy_and_overrun needs root; skipped");
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

    #[test]
    fn other_message_types_are_skipped_and_counted() {
        // IPCTNL_MSG_CT_GET_STATS reply, and an nftables message.
        let stats = nlmsg(NFNL_SUBSYS_CTNETLINK << 8 | 5, 0, &[0; 4]);
        let nft = nlmsg(10 << 8, 0, &[0; 4]);
        let raw = [stats, udp_flow(1, 1000, &[]), nft, done()].concat();
        let dump = parse_messages(&raw).unwrap();
        assert_eq!((dump.flows.len(), dump.skipped_messages), (1, 2));
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
        assert_eq!(parse_messages(&raw).unwrap().flows.len(), 1);
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
        assert_eq!(dump.flows.len(), 20_000);
        assert_eq!(dump.duplicates, 0);
        assert_eq!(dump.skipped_messages, 0);
        let ids: std::collections::HashSet<u32> = dump.flows.iter().map(|f| f.id).collect();
        assert_eq!(ids.len(), 20_000);
    }

    // ---- the real thing ----

    /// Network namespaces made by a test, deleted when it ends (even on panic).
    struct Netns(Vec<String>);

    impl Drop for Netns {
        fn drop(&mut self) {
            for name in &self.0 {
                let _ = std::process::Command::new("ip")
                    .args(["netns", "del", name])
                    .status();
            }
        }
    }

    fn run(args: &[&str]) {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run `f` on a new thread that has entered network namespace `name`.
    fn in_netns<T: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            // SAFETY: a valid namespace fd; CLONE_NEWNET only moves this thread.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
            f()
        })
    }

    #[test]
    fn dump_in_a_namespace_reports_exact_udp_counters() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(
                std::env::var_os("CI").is_none(),
                "this test needs root (network namespaces, CAP_NET_ADMIN) and CI is set"
            );
            eprintln!("note: dump_in_a_namespace_reports_exact_udp_counters needs root; skipped");
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
                .flows
                .iter()
                .find(|f| f.orig.proto == IPPROTO_UDP && f.orig.src == src && f.orig.sport == port)
                .unwrap_or_else(|| panic!("no flow from {src}:{port} in {:?}", dump.flows));
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
