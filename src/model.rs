//! Plain values shared by the pipeline stages: sockets, flows, counters.
//!
//! These types carry no behaviour beyond small helpers; every stage (`sources`,
//! `attribute`, `account`, `store`) takes and returns them, so each stage can be
//! tested with values built by hand.

use std::net::{IpAddr, SocketAddr};

/// The hasher of the maps a pass keys by flows, tuples and sockets: foldhash, seeded at
/// random per process and per map. The tuples are chosen by remote peers, so a hash with
/// a fixed key could be fed colliding keys; std's SipHash took a tenth of a pass.
pub type FastHash = foldhash::fast::RandomState;
/// A `HashMap` with [`FastHash`].
pub type FastMap<K, V> = std::collections::HashMap<K, V, FastHash>;
/// A `HashSet` with [`FastHash`].
pub type FastSet<K> = std::collections::HashSet<K, FastHash>;

/// IP protocol numbers (IANA), as conntrack reports them.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of ICMP.
pub const IPPROTO_ICMP: u8 = 1;
/// IP protocol number of ICMPv6.
pub const IPPROTO_ICMPV6: u8 = 58;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IP protocol number of UDP-Lite (RFC 3828; any user may open such a socket).
pub const IPPROTO_UDPLITE: u8 = 136;

/// Transport protocol of a socket table (`/proc/net/tcp*`, `/proc/net/udp*`,
/// `/proc/net/udplite*`, or the ping sockets' `/proc/net/icmp` and `/proc/net/icmp6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP (`/proc/net/tcp`, `/proc/net/tcp6`).
    Tcp,
    /// UDP (`/proc/net/udp`, `/proc/net/udp6`).
    Udp,
    /// UDP-Lite (`/proc/net/udplite`, `/proc/net/udplite6`): UDP's ports and tables.
    UdpLite,
    /// ICMP ping sockets (`socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`, `/proc/net/icmp`):
    /// the "port" is the echo identifier, which the kernel writes into every echo request
    /// the socket sends (`ping_v4_sendmsg`), and which a flow carries as its original
    /// source port ([`Tuple`]).
    Icmp,
    /// ICMPv6 ping sockets (`/proc/net/icmp6`), as [`L4::Icmp`].
    Icmpv6,
}

impl L4 {
    /// The IP protocol number conntrack uses for this transport.
    pub fn ipproto(self) -> u8 {
        match self {
            L4::Tcp => IPPROTO_TCP,
            L4::Udp => IPPROTO_UDP,
            L4::UdpLite => IPPROTO_UDPLITE,
            L4::Icmp => IPPROTO_ICMP,
            L4::Icmpv6 => IPPROTO_ICMPV6,
        }
    }

    /// Whether this is a ping socket's protocol (ICMP or ICMPv6): such a socket only sends
    /// echo requests (the flow's original direction), and is no service's to hand over.
    pub fn is_ping(self) -> bool {
        matches!(self, L4::Icmp | L4::Icmpv6)
    }

    /// The transport for an IP protocol number, if it is one netledger attributes.
    pub fn from_ipproto(p: u8) -> Option<L4> {
        match p {
            IPPROTO_TCP => Some(L4::Tcp),
            IPPROTO_UDP => Some(L4::Udp),
            IPPROTO_UDPLITE => Some(L4::UdpLite),
            IPPROTO_ICMP => Some(L4::Icmp),
            IPPROTO_ICMPV6 => Some(L4::Icmpv6),
            _ => None,
        }
    }
}

/// A socket's state, as the `st` column of `/proc/net/{tcp,udp}*` and sock_diag's
/// `idiag_state` give it (the enum in include/net/tcp_states.h). UDP sockets use the same
/// numbers: [`SocketState::Established`] when connected, [`SocketState::Close`] when not.
///
/// Not to be confused with [`CtTcpState`], conntrack's own TCP states, numbered otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum SocketState {
    /// `TCP_ESTABLISHED`.
    Established = 1,
    /// `TCP_SYN_SENT`.
    SynSent = 2,
    /// `TCP_SYN_RECV`.
    SynRecv = 3,
    /// `TCP_FIN_WAIT1`.
    FinWait1 = 4,
    /// `TCP_FIN_WAIT2`.
    FinWait2 = 5,
    /// `TCP_TIME_WAIT`: a time-wait socket, which has no owner (uid 0, inode 0).
    TimeWait = 6,
    /// `TCP_CLOSE`.
    Close = 7,
    /// `TCP_CLOSE_WAIT`.
    CloseWait = 8,
    /// `TCP_LAST_ACK`.
    LastAck = 9,
    /// `TCP_LISTEN`.
    Listen = 10,
    /// `TCP_CLOSING`.
    Closing = 11,
    /// `TCP_NEW_SYN_RECV`: a request socket, which has no owner yet.
    NewSynRecv = 12,
    /// `TCP_BOUND_INACTIVE` (Linux 6.8).
    BoundInactive = 13,
}

impl SocketState {
    /// The state with this number, if the kernel defines one.
    pub const fn from_raw(raw: u8) -> Option<SocketState> {
        use SocketState::*;
        Some(match raw {
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait1,
            5 => FinWait2,
            6 => TimeWait,
            7 => Close,
            8 => CloseWait,
            9 => LastAck,
            10 => Listen,
            11 => Closing,
            12 => NewSynRecv,
            13 => BoundInactive,
            _ => return None,
        })
    }

    /// The kernel's number for this state.
    pub const fn raw(self) -> u8 {
        self as u8
    }
}

/// `TCP_TIME_WAIT` as printed in `/proc/net/tcp`: [`SocketState::TimeWait`] as a number,
/// kept for callers that still compare raw [`Socket::state`] values.
pub const TCP_TIME_WAIT: u8 = SocketState::TimeWait.raw();

/// Conntrack's state of a TCP flow (`enum tcp_conntrack` in
/// include/uapi/linux/netfilter/nf_conntrack_tcp.h), from CTA_PROTOINFO_TCP_STATE.
///
/// Numbered unlike [`SocketState`]: conntrack's TIME_WAIT is 7, a socket's is 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CtTcpState {
    /// `TCP_CONNTRACK_NONE`.
    None = 0,
    /// `TCP_CONNTRACK_SYN_SENT`.
    SynSent = 1,
    /// `TCP_CONNTRACK_SYN_RECV`.
    SynRecv = 2,
    /// `TCP_CONNTRACK_ESTABLISHED`.
    Established = 3,
    /// `TCP_CONNTRACK_FIN_WAIT`.
    FinWait = 4,
    /// `TCP_CONNTRACK_CLOSE_WAIT`.
    CloseWait = 5,
    /// `TCP_CONNTRACK_LAST_ACK`.
    LastAck = 6,
    /// `TCP_CONNTRACK_TIME_WAIT`: the connection ended with FINs; the entry lives on for
    /// `nf_conntrack_tcp_timeout_time_wait`.
    TimeWait = 7,
    /// `TCP_CONNTRACK_CLOSE`: the connection ended with an RST; the entry lives on for
    /// `nf_conntrack_tcp_timeout_close`.
    Close = 8,
    /// `TCP_CONNTRACK_SYN_SENT2` (formerly LISTEN): simultaneous open.
    SynSent2 = 9,
}

impl CtTcpState {
    /// The state with this number, if conntrack defines one.
    pub const fn from_raw(raw: u8) -> Option<CtTcpState> {
        Some(match raw {
            0 => Self::None,
            1 => Self::SynSent,
            2 => Self::SynRecv,
            3 => Self::Established,
            4 => Self::FinWait,
            5 => Self::CloseWait,
            6 => Self::LastAck,
            7 => Self::TimeWait,
            8 => Self::Close,
            9 => Self::SynSent2,
            _ => return None,
        })
    }

    /// The kernel's number for this state.
    pub const fn raw(self) -> u8 {
        self as u8
    }

    /// Conntrack's name of the state, as `conntrack -L` prints it (`tcp_conntrack_names` in
    /// net/netfilter/nf_conntrack_proto_tcp.c).
    pub const fn name(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::SynSent => "SYN_SENT",
            Self::SynRecv => "SYN_RECV",
            Self::Established => "ESTABLISHED",
            Self::FinWait => "FIN_WAIT",
            Self::CloseWait => "CLOSE_WAIT",
            Self::LastAck => "LAST_ACK",
            Self::TimeWait => "TIME_WAIT",
            Self::Close => "CLOSE",
            Self::SynSent2 => "SYN_SENT2",
        }
    }

    /// Whether the connection is over and only the entry's timeout runs (TIME_WAIT after
    /// FINs, CLOSE after an RST).
    pub const fn is_closed(self) -> bool {
        matches!(self, CtTcpState::TimeWait | CtTcpState::Close)
    }
}

/// A conntrack entry's status bits (`enum ip_conntrack_status` in
/// include/uapi/linux/netfilter/nf_conntrack_common.h), from CTA_STATUS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtStatus(pub u32);

impl CtStatus {
    /// `IPS_EXPECTED`: an expected connection (a helper's related flow).
    pub const EXPECTED: CtStatus = CtStatus(1 << 0);
    /// `IPS_SEEN_REPLY`: packets have gone both ways.
    pub const SEEN_REPLY: CtStatus = CtStatus(1 << 1);
    /// `IPS_ASSURED`: a stream (UDP that saw traffic both ways past the first reply; TCP
    /// past the handshake), which gets the longer timeout and is not early-dropped.
    pub const ASSURED: CtStatus = CtStatus(1 << 2);
    /// `IPS_CONFIRMED`: the entry is in the table (its first packet left the stack).
    pub const CONFIRMED: CtStatus = CtStatus(1 << 3);
    /// `IPS_SRC_NAT`: source NAT applies.
    pub const SRC_NAT: CtStatus = CtStatus(1 << 4);
    /// `IPS_DST_NAT`: destination NAT applies.
    pub const DST_NAT: CtStatus = CtStatus(1 << 5);
    /// `IPS_DYING`: the entry is being destroyed.
    pub const DYING: CtStatus = CtStatus(1 << 9);
    /// `IPS_FIXED_TIMEOUT`: packets do not refresh the timeout.
    pub const FIXED_TIMEOUT: CtStatus = CtStatus(1 << 10);
    /// `IPS_NAT_CLASH`: a UDP clash entry, given a short timeout of its own.
    pub const NAT_CLASH: CtStatus = CtStatus(1 << 12);
    /// `IPS_OFFLOAD`: the flow is offloaded to a flowtable (its counters lag).
    pub const OFFLOAD: CtStatus = CtStatus(1 << 14);

    /// Whether every bit of `bits` is set.
    pub const fn contains(self, bits: CtStatus) -> bool {
        self.0 & bits.0 == bits.0
    }

    /// Whether any bit of `bits` is set.
    pub const fn intersects(self, bits: CtStatus) -> bool {
        self.0 & bits.0 != 0
    }

    /// Both sets of bits.
    pub const fn union(self, bits: CtStatus) -> CtStatus {
        CtStatus(self.0 | bits.0)
    }
}

/// One row of a `/proc/net/{tcp,tcp6,udp,udp6}` table.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are already canonicalised to IPv4,
/// because conntrack records those flows as IPv4.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Which table the row came from.
    pub proto: L4,
    /// Local address and port.
    pub local: SocketAddr,
    /// Remote address and port (`0.0.0.0:0` / `[::]:0` when unconnected or listening).
    pub remote: SocketAddr,
    /// The `st` column, a [`SocketState`] number (TCP state, or 1/7 for
    /// connected/unconnected UDP).
    pub state: u8,
    /// The `uid` column: the socket's owner (fsuid of its creator).
    pub uid: u32,
    /// The `inode` column; 0 for TIME_WAIT and request sockets.
    pub inode: u64,
    /// The cgroup v2 id of the socket's creator (sock_diag's `INET_DIAG_CGROUP_ID`: the
    /// inode of the cgroup's directory; [`crate::sources::cgroups`] names it); 0 when not
    /// known: a row of `/proc/net/*`, a TIME_WAIT or request socket, a kernel before 5.7.
    pub cgroup: u64,
}

impl Socket {
    /// [`Socket::state`] as a [`SocketState`] (`None` for a number the kernel does not define).
    pub fn socket_state(&self) -> Option<SocketState> {
        SocketState::from_raw(self.state)
    }

    /// Whether the row is evidence of an owner. TIME_WAIT and request sockets
    /// show uid 0 and inode 0: they are *not* evidence of root.
    pub fn has_owner(&self) -> bool {
        self.inode != 0
    }
}

/// A conntrack tuple (one direction of a flow). Ports are 0 for protocols without ports.
///
/// ICMP and ICMPv6 carry their echo identifier (CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID) as
/// the original source's port: `sport` of the original tuple and `dport` of the reply
/// tuple, the other ports 0, so that a ping reads like a datagram flow from port `id` to
/// port 0 (a ping socket's local "port" is that id: [`L4::Icmp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 if none).
    pub sport: u16,
    /// Destination port (0 if none).
    pub dport: u16,
}

impl Tuple {
    /// Source as a socket address.
    pub fn src_sa(&self) -> SocketAddr {
        SocketAddr::new(self.src, self.sport)
    }
    /// Destination as a socket address.
    pub fn dst_sa(&self) -> SocketAddr {
        SocketAddr::new(self.dst, self.dport)
    }
}

/// Packet and byte counters of one direction of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Packets (a GRO/GSO super-packet counts as one: approximate).
    pub packets: u64,
    /// Bytes at the IP layer, headers included: exact.
    pub bytes: u64,
}

/// One conntrack entry from a ctnetlink dump or event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Original-direction tuple (as the initiator sent it, pre-NAT).
    pub orig: Tuple,
    /// Reply-direction tuple (as the responder answers, post-NAT).
    pub reply: Tuple,
    /// CTA_ID: hashed, almost unique; part of the identity, never all of it.
    pub id: u32,
    /// CTA_ZONE (0 when absent).
    pub zone: u16,
    /// CTA_MARK (0 when absent).
    pub mark: u32,
    /// CTA_STATUS bits (0 when absent); [`Flow::ct_status`] reads them by name.
    pub status: u32,
    /// CTA_COUNTERS_ORIG; `None` when accounting was off when the entry was created.
    pub orig_counters: Option<Counters>,
    /// CTA_COUNTERS_REPLY; `None` when accounting was off when the entry was created.
    pub reply_counters: Option<Counters>,
    /// CTA_TIMESTAMP START in ns since the epoch, when `nf_conntrack_timestamp=1`.
    pub start_ns: Option<u64>,
    /// CTA_TIMESTAMP STOP in ns (DESTROY events only).
    pub stop_ns: Option<u64>,
}

/// A flow's identity across passes: (zone, original tuple, conntrack id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Conntrack zone.
    pub zone: u16,
    /// Original tuple.
    pub orig: Tuple,
    /// Conntrack id.
    pub id: u32,
}

impl Flow {
    /// [`Flow::status`] as named bits.
    pub fn ct_status(&self) -> CtStatus {
        CtStatus(self.status)
    }

    /// The identity of this flow.
    pub fn key(&self) -> FlowKey {
        FlowKey {
            zone: self.zone,
            orig: self.orig,
            id: self.id,
        }
    }
}

/// Canonicalise an address: IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}
