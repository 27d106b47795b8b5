//! Plain values shared by the pipeline stages: sockets, flows, counters.
//!
//! These types carry no behaviour beyond small helpers; every stage (`sources`,
//! `attribute`, `account`, `store`) takes and returns them, so each stage can be
//! tested with values built by hand.

use std::net::{IpAddr, SocketAddr};

/// IP protocol numbers (IANA), as conntrack reports them.
pub const IPPROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const IPPROTO_UDP: u8 = 17;

/// Transport protocol of a socket table (`/proc/net/tcp*` or `/proc/net/udp*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP (`/proc/net/tcp`, `/proc/net/tcp6`).
    Tcp,
    /// UDP (`/proc/net/udp`, `/proc/net/udp6`).
    Udp,
}

impl L4 {
    /// The IP protocol number conntrack uses for this transport.
    pub fn ipproto(self) -> u8 {
        match self {
            L4::Tcp => IPPROTO_TCP,
            L4::Udp => IPPROTO_UDP,
        }
    }

    /// The transport for an IP protocol number, if it is one netledger attributes.
    pub fn from_ipproto(p: u8) -> Option<L4> {
        match p {
            IPPROTO_TCP => Some(L4::Tcp),
            IPPROTO_UDP => Some(L4::Udp),
            _ => None,
        }
    }
}

/// TCP state number as printed in `/proc/net/tcp` (include/net/tcp_states.h).
pub const TCP_TIME_WAIT: u8 = 0x06;

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
    /// The `st` column (TCP state, or 1/7 for connected/unconnected UDP).
    pub state: u8,
    /// The `uid` column: the socket's owner (fsuid of its creator).
    pub uid: u32,
    /// The `inode` column; 0 for TIME_WAIT and request sockets.
    pub inode: u64,
}

impl Socket {
    /// Whether the row is evidence of an owner. TIME_WAIT and request sockets
    /// show uid 0 and inode 0: they are *not* evidence of root.
    pub fn has_owner(&self) -> bool {
        self.inode != 0
    }
}

/// A conntrack tuple (one direction of a flow). Ports are 0 for protocols without ports.
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
    /// CTA_STATUS bits (0 when absent).
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
