//! The kernel's numbers for ctnetlink, and a conntrack message's attributes typed: one enum
//! per nesting level, with the kernel's names, the value already read where it is a scalar
//! (nests stay bytes for [`super::decode`] to walk), and a fallback for types this module
//! does not read.
//!
//! Numbers and layouts: include/uapi/linux/netfilter/nfnetlink.h and
//! include/uapi/linux/netfilter/nfnetlink_conntrack.h; what the kernel emits:
//! `ctnetlink_fill_info()` in net/netfilter/nf_conntrack_netlink.c.

use crate::sources::netlink::{be16, be32, be64, Malformed};

// nfnetlink: type = subsys << 8 | msg, and every payload starts with a 4-byte
// `struct nfgenmsg`.
pub(super) const NFNL_SUBSYS_CTNETLINK: u16 = 1;
pub(super) const NFGENMSG_LEN: usize = 4;
// enum cntl_msg_types. Dump replies come as NEW; DESTROY events as DELETE.
pub(super) const IPCTNL_MSG_CT_NEW: u16 = 0;
pub(super) const IPCTNL_MSG_CT_DELETE: u16 = 2;

// enum ctattr_type (top level of a conntrack message).
pub(super) const CTA_TUPLE_ORIG: u16 = 1;
pub(super) const CTA_TUPLE_REPLY: u16 = 2;
pub(super) const CTA_STATUS: u16 = 3;
pub(super) const CTA_PROTOINFO: u16 = 4;
pub(super) const CTA_TIMEOUT: u16 = 7;
pub(super) const CTA_MARK: u16 = 8;
pub(super) const CTA_COUNTERS_ORIG: u16 = 9;
pub(super) const CTA_COUNTERS_REPLY: u16 = 10;
pub(super) const CTA_ID: u16 = 12;
pub(super) const CTA_ZONE: u16 = 18;
pub(super) const CTA_TIMESTAMP: u16 = 20;
/// Highest top-level type known (CTA_TIMESTAMP_EVENT, events only, Linux 6.14).
/// Types up to here that are not decoded (HELP, USE, NAT_*, LABELS, …) are
/// expected and not counted as unknown.
const CTA_KNOWN_MAX: u16 = 27;

// enum ctattr_tuple.
pub(super) const CTA_TUPLE_IP: u16 = 1;
pub(super) const CTA_TUPLE_PROTO: u16 = 2;
pub(super) const CTA_TUPLE_ZONE: u16 = 3;
// enum ctattr_ip.
pub(super) const CTA_IP_V4_SRC: u16 = 1;
pub(super) const CTA_IP_V4_DST: u16 = 2;
pub(super) const CTA_IP_V6_SRC: u16 = 3;
pub(super) const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto. ICMP/ICMPv6 tuples carry id/type/code (4..=9) instead of ports:
// the id is read (a ping socket's "port"), type and code are known, not decoded.
pub(super) const CTA_PROTO_NUM: u16 = 1;
pub(super) const CTA_PROTO_SRC_PORT: u16 = 2;
pub(super) const CTA_PROTO_DST_PORT: u16 = 3;
pub(super) const CTA_PROTO_ICMP_ID: u16 = 4;
pub(super) const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
// enum ctattr_counters.
pub(super) const CTA_COUNTERS_PACKETS: u16 = 1;
pub(super) const CTA_COUNTERS_BYTES: u16 = 2;
pub(super) const CTA_COUNTERS32_PACKETS: u16 = 3;
pub(super) const CTA_COUNTERS32_BYTES: u16 = 4;
pub(super) const CTA_COUNTERS_PAD: u16 = 5;
// enum ctattr_tstamp.
pub(super) const CTA_TIMESTAMP_START: u16 = 1;
pub(super) const CTA_TIMESTAMP_STOP: u16 = 2;
pub(super) const CTA_TIMESTAMP_PAD: u16 = 3;
// enum ctattr_protoinfo / ctattr_protoinfo_tcp.
pub(super) const CTA_PROTOINFO_TCP: u16 = 1;
pub(super) const CTA_PROTOINFO_TCP_STATE: u16 = 1;
pub(super) const CTA_PROTOINFO_TCP_FLAGS_ORIGINAL: u16 = 4;
pub(super) const CTA_PROTOINFO_TCP_FLAGS_REPLY: u16 = 5;

/// What a ctnetlink message announces, from its type (and flags, for events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MessageType {
    /// `IPCTNL_MSG_CT_NEW`: a dump reply, or a NEW or UPDATE event.
    New,
    /// `IPCTNL_MSG_CT_DELETE`: a DESTROY event.
    Delete,
    /// Another subsystem's message, or another ctnetlink message (stats, expectations).
    Other,
}

impl MessageType {
    #[inline]
    pub(super) fn of(kind: u16) -> MessageType {
        match (kind >> 8, kind & 0xff) {
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_NEW) => MessageType::New,
            (NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE) => MessageType::Delete,
            _ => MessageType::Other,
        }
    }
}

/// A top-level attribute (`enum ctattr_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CtAttr<'a> {
    /// CTA_TUPLE_ORIG, a nest of [`TupleAttr`].
    TupleOrig(&'a [u8]),
    /// CTA_TUPLE_REPLY, a nest of [`TupleAttr`].
    TupleReply(&'a [u8]),
    /// CTA_STATUS, `enum ip_conntrack_status` bits.
    Status(u32),
    /// CTA_PROTOINFO, a nest of [`ProtoinfoAttr`].
    Protoinfo(&'a [u8]),
    /// CTA_TIMEOUT: the whole seconds the entry has left. A refinement, like the TCP
    /// state: `None` when malformed, which does not fail the message.
    Timeout(Option<u32>),
    /// CTA_MARK.
    Mark(u32),
    /// CTA_COUNTERS_ORIG, a nest of [`CounterAttr`].
    CountersOrig(&'a [u8]),
    /// CTA_COUNTERS_REPLY, a nest of [`CounterAttr`].
    CountersReply(&'a [u8]),
    /// CTA_ID.
    Id(u32),
    /// CTA_ZONE: the zone of both directions.
    Zone(u16),
    /// CTA_TIMESTAMP, a nest of [`TimestampAttr`].
    Timestamp(&'a [u8]),
    /// A type the kernel defines that netledger does not read.
    Ignored,
    /// A type this module does not know (a newer kernel's).
    Other(u16),
}

impl<'a> CtAttr<'a> {
    #[inline]
    pub(super) fn parse(kind: u16, value: &'a [u8]) -> Result<CtAttr<'a>, Malformed> {
        Ok(match kind {
            CTA_TUPLE_ORIG => CtAttr::TupleOrig(value),
            CTA_TUPLE_REPLY => CtAttr::TupleReply(value),
            CTA_STATUS => CtAttr::Status(be32(value, "CTA_STATUS is not 4 bytes")?),
            CTA_PROTOINFO => CtAttr::Protoinfo(value),
            CTA_TIMEOUT => CtAttr::Timeout(be32(value, "").ok()),
            CTA_MARK => CtAttr::Mark(be32(value, "CTA_MARK is not 4 bytes")?),
            CTA_COUNTERS_ORIG => CtAttr::CountersOrig(value),
            CTA_COUNTERS_REPLY => CtAttr::CountersReply(value),
            CTA_ID => CtAttr::Id(be32(value, "CTA_ID is not 4 bytes")?),
            CTA_ZONE => CtAttr::Zone(be16(value, "CTA_ZONE is not 2 bytes")?),
            CTA_TIMESTAMP => CtAttr::Timestamp(value),
            k if k != 0 && k <= CTA_KNOWN_MAX => CtAttr::Ignored,
            k => CtAttr::Other(k),
        })
    }
}

/// An attribute of a tuple (`enum ctattr_tuple`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TupleAttr<'a> {
    /// CTA_TUPLE_IP, a nest of [`IpAttr`].
    Ip(&'a [u8]),
    /// CTA_TUPLE_PROTO, a nest of [`ProtoAttr`].
    Proto(&'a [u8]),
    /// CTA_TUPLE_ZONE: a zone that applies to this direction only.
    Zone(u16),
    /// Unknown.
    Other(u16),
}

impl<'a> TupleAttr<'a> {
    #[inline]
    pub(super) fn parse(kind: u16, value: &'a [u8]) -> Result<TupleAttr<'a>, Malformed> {
        Ok(match kind {
            CTA_TUPLE_IP => TupleAttr::Ip(value),
            CTA_TUPLE_PROTO => TupleAttr::Proto(value),
            CTA_TUPLE_ZONE => TupleAttr::Zone(be16(value, "CTA_TUPLE_ZONE is not 2 bytes")?),
            k => TupleAttr::Other(k),
        })
    }
}

/// An attribute of a tuple's addresses (`enum ctattr_ip`), in network order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IpAttr<'a> {
    /// CTA_IP_V4_SRC.
    V4Src(&'a [u8; 4]),
    /// CTA_IP_V4_DST.
    V4Dst(&'a [u8; 4]),
    /// CTA_IP_V6_SRC.
    V6Src(&'a [u8; 16]),
    /// CTA_IP_V6_DST.
    V6Dst(&'a [u8; 16]),
    /// Unknown.
    Other(u16),
}

impl<'a> IpAttr<'a> {
    #[inline]
    pub(super) fn parse(kind: u16, value: &'a [u8]) -> Result<IpAttr<'a>, Malformed> {
        const V4: Malformed = Malformed("IPv4 address is not 4 bytes");
        const V6: Malformed = Malformed("IPv6 address is not 16 bytes");
        Ok(match kind {
            CTA_IP_V4_SRC => IpAttr::V4Src(value.try_into().map_err(|_| V4)?),
            CTA_IP_V4_DST => IpAttr::V4Dst(value.try_into().map_err(|_| V4)?),
            CTA_IP_V6_SRC => IpAttr::V6Src(value.try_into().map_err(|_| V6)?),
            CTA_IP_V6_DST => IpAttr::V6Dst(value.try_into().map_err(|_| V6)?),
            k => IpAttr::Other(k),
        })
    }
}

/// An attribute of a tuple's protocol part (`enum ctattr_l4proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProtoAttr {
    /// CTA_PROTO_NUM: the IP protocol number.
    Num(u8),
    /// CTA_PROTO_SRC_PORT.
    SrcPort(u16),
    /// CTA_PROTO_DST_PORT.
    DstPort(u16),
    /// CTA_PROTO_ICMP_ID / CTA_PROTO_ICMPV6_ID: the echo identifier (be16).
    IcmpId(u16),
    /// CTA_PROTO_ICMP_{TYPE,CODE} / CTA_PROTO_ICMPV6_{TYPE,CODE}: known, not read.
    Icmp,
    /// Unknown.
    Other(u16),
}

impl ProtoAttr {
    #[inline]
    pub(super) fn parse(kind: u16, value: &[u8]) -> Result<ProtoAttr, Malformed> {
        Ok(match kind {
            CTA_PROTO_NUM => {
                ProtoAttr::Num(*value.first().ok_or(Malformed("CTA_PROTO_NUM is empty"))?)
            }
            CTA_PROTO_SRC_PORT => ProtoAttr::SrcPort(be16(value, "port is not 2 bytes")?),
            CTA_PROTO_DST_PORT => ProtoAttr::DstPort(be16(value, "port is not 2 bytes")?),
            CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                ProtoAttr::IcmpId(be16(value, "ICMP id is not 2 bytes")?)
            }
            k if k != 0 && k <= CTA_PROTO_ICMPV6_CODE => ProtoAttr::Icmp,
            k => ProtoAttr::Other(k),
        })
    }
}

/// An attribute of a direction's counters (`enum ctattr_counters`); the old 32-bit forms
/// read as the 64-bit ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CounterAttr {
    /// CTA_COUNTERS_PACKETS or CTA_COUNTERS32_PACKETS.
    Packets(u64),
    /// CTA_COUNTERS_BYTES or CTA_COUNTERS32_BYTES.
    Bytes(u64),
    /// CTA_COUNTERS_PAD.
    Pad,
    /// Unknown.
    Other(u16),
}

impl CounterAttr {
    #[inline]
    pub(super) fn parse(kind: u16, value: &[u8]) -> Result<CounterAttr, Malformed> {
        Ok(match kind {
            CTA_COUNTERS_PACKETS => {
                CounterAttr::Packets(be64(value, "packet counter is not 8 bytes")?)
            }
            CTA_COUNTERS_BYTES => CounterAttr::Bytes(be64(value, "byte counter is not 8 bytes")?),
            CTA_COUNTERS32_PACKETS => CounterAttr::Packets(u64::from(be32(
                value,
                "32-bit packet counter is not 4 bytes",
            )?)),
            CTA_COUNTERS32_BYTES => CounterAttr::Bytes(u64::from(be32(
                value,
                "32-bit byte counter is not 4 bytes",
            )?)),
            CTA_COUNTERS_PAD => CounterAttr::Pad,
            k => CounterAttr::Other(k),
        })
    }
}

/// An attribute of CTA_TIMESTAMP (`enum ctattr_tstamp`): ns since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimestampAttr {
    /// CTA_TIMESTAMP_START.
    Start(u64),
    /// CTA_TIMESTAMP_STOP (DESTROY events only).
    Stop(u64),
    /// CTA_TIMESTAMP_PAD.
    Pad,
    /// Unknown.
    Other(u16),
}

impl TimestampAttr {
    #[inline]
    pub(super) fn parse(kind: u16, value: &[u8]) -> Result<TimestampAttr, Malformed> {
        Ok(match kind {
            CTA_TIMESTAMP_START => TimestampAttr::Start(be64(value, "timestamp is not 8 bytes")?),
            CTA_TIMESTAMP_STOP => TimestampAttr::Stop(be64(value, "timestamp is not 8 bytes")?),
            CTA_TIMESTAMP_PAD => TimestampAttr::Pad,
            k => TimestampAttr::Other(k),
        })
    }
}
