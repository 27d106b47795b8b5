//! One conntrack message's attributes → a [`Flow`] (and the TCP state beside it): the pure
//! decoder shared by dumps ([`super::dump`]) and events ([`super::events`]).
//!
//! Why attributes are decoded here instead of by `netlink-packet-netfilter` 0.4: that crate
//! decodes tuples, status and mark but hands counters, id, zone and timestamps back as
//! `Other(DefaultNla)` (one `Vec` each, which would have to be re-serialised to be read),
//! allocates a `Vec` per tuple, and fails the whole message, with no way to tell which
//! attribute, when one attribute is malformed. Walking the attributes in place over the
//! received buffer costs no allocation per attribute and lets a bad message be logged and
//! skipped while the rest of the dump is kept.

use std::net::IpAddr;

use super::attr::{
    CounterAttr, CtAttr, IpAttr, ProtoAttr, TimestampAttr, TupleAttr, CTA_PROTOINFO_TCP,
    CTA_PROTOINFO_TCP_FLAGS_ORIGINAL, CTA_PROTOINFO_TCP_FLAGS_REPLY, CTA_PROTOINFO_TCP_STATE,
    NFGENMSG_LEN,
};
use crate::model::{Counters, CtTcpState, Flow, Tuple};
use crate::sources::netlink::{attributes, Malformed};

/// The attributes of a ctnetlink message: its payload after the `nfgenmsg`.
#[inline]
pub(super) fn attributes_of(payload: &[u8]) -> Option<&[u8]> {
    payload.get(NFGENMSG_LEN..)
}

/// What an entry says beside its flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Extras {
    /// Its TCP state (`enum tcp_conntrack`), when it has one.
    pub tcp_state: Option<CtTcpState>,
    /// The whole seconds it has left before it expires (CTA_TIMEOUT), when sent.
    pub timeout: Option<u32>,
    /// A TCP entry picked up mid-connection (see [`protoinfo_picked_up`]).
    pub picked_up: bool,
}

/// Decode the attributes of one conntrack message (after the nfgenmsg): the flow, and what
/// it says beside it ([`Extras`]). Attributes of a type not known are skipped and counted
/// in `unknown`.
pub(super) fn decode_flow(attrs: &[u8], unknown: &mut usize) -> Result<(Flow, Extras), Malformed> {
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
    let mut extras = Extras::default();
    for attr in attributes(attrs) {
        let (kind, value) = attr?;
        match CtAttr::parse(kind, value)? {
            CtAttr::TupleOrig(v) => orig = Some(decode_tuple(v, Side::Orig, unknown)?),
            CtAttr::TupleReply(v) => reply = Some(decode_tuple(v, Side::Reply, unknown)?),
            CtAttr::Status(v) => status = v,
            CtAttr::Protoinfo(v) => {
                extras.tcp_state = protoinfo_tcp_state(v);
                extras.picked_up = protoinfo_picked_up(v);
            }
            CtAttr::Timeout(v) => extras.timeout = v,
            CtAttr::Mark(v) => mark = v,
            CtAttr::Id(v) => id = v,
            CtAttr::Zone(v) => zone = Some(v),
            CtAttr::CountersOrig(v) => orig_counters = decode_counters(v, unknown)?,
            CtAttr::CountersReply(v) => reply_counters = decode_counters(v, unknown)?,
            CtAttr::Timestamp(v) => (start_ns, stop_ns) = decode_timestamp(v, unknown)?,
            CtAttr::Ignored => {}
            CtAttr::Other(_) => *unknown += 1,
        }
    }
    let (orig, orig_zone) = orig.ok_or(Malformed("no CTA_TUPLE_ORIG"))?;
    let (reply, reply_zone) = reply.ok_or(Malformed("no CTA_TUPLE_REPLY"))?;
    // CTA_ZONE is sent when the zone applies to both directions; a
    // direction-only zone (`ct original zone set`, CT --zone-orig) is sent
    // inside that direction's tuple instead (ctnetlink_dump_zone_id()).
    let zone = zone.or(orig_zone).or(reply_zone).unwrap_or(0);
    let flow = Flow {
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
    };
    Ok((flow, extras))
}

/// Which direction a tuple is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Orig,
    Reply,
}

/// CTA_TUPLE_{ORIG,REPLY}: addresses, protocol, ports, and a direction zone. An ICMP echo
/// id is the original source's port ([`Tuple`]): `sport` of the original tuple, `dport` of
/// the reply (the kernel keeps it in both tuples' source part, `nf_conntrack_tuple.src.u`).
fn decode_tuple(
    buf: &[u8],
    side: Side,
    unknown: &mut usize,
) -> Result<(Tuple, Option<u16>), Malformed> {
    let mut src = None;
    let mut dst = None;
    let mut proto = None;
    let mut sport = 0;
    let mut dport = 0;
    let mut zone = None;
    for attr in attributes(buf) {
        let (kind, value) = attr?;
        match TupleAttr::parse(kind, value)? {
            TupleAttr::Ip(ip) => {
                for attr in attributes(ip) {
                    let (kind, value) = attr?;
                    match IpAttr::parse(kind, value)? {
                        IpAttr::V4Src(a) => src = Some(IpAddr::from(*a)),
                        IpAttr::V4Dst(a) => dst = Some(IpAddr::from(*a)),
                        IpAttr::V6Src(a) => src = Some(IpAddr::from(*a)),
                        IpAttr::V6Dst(a) => dst = Some(IpAddr::from(*a)),
                        IpAttr::Other(_) => *unknown += 1,
                    }
                }
            }
            TupleAttr::Proto(l4) => {
                for attr in attributes(l4) {
                    let (kind, value) = attr?;
                    match ProtoAttr::parse(kind, value)? {
                        ProtoAttr::Num(n) => proto = Some(n),
                        ProtoAttr::SrcPort(p) => sport = p,
                        ProtoAttr::DstPort(p) => dport = p,
                        ProtoAttr::IcmpId(id) if side == Side::Orig => sport = id,
                        ProtoAttr::IcmpId(id) => dport = id,
                        ProtoAttr::Icmp => {}
                        ProtoAttr::Other(_) => *unknown += 1,
                    }
                }
            }
            TupleAttr::Zone(z) => zone = Some(z),
            TupleAttr::Other(_) => *unknown += 1,
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

/// CTA_COUNTERS_{ORIG,REPLY}: the 64-bit forms, or the old 32-bit ones.
/// A nest with neither packets nor bytes is treated as absent.
fn decode_counters(buf: &[u8], unknown: &mut usize) -> Result<Option<Counters>, Malformed> {
    let mut packets = None;
    let mut bytes = None;
    for attr in attributes(buf) {
        let (kind, value) = attr?;
        match CounterAttr::parse(kind, value)? {
            CounterAttr::Packets(n) => packets = Some(n),
            CounterAttr::Bytes(n) => bytes = Some(n),
            CounterAttr::Pad => {}
            CounterAttr::Other(_) => *unknown += 1,
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
        match TimestampAttr::parse(kind, value)? {
            TimestampAttr::Start(ns) => start = Some(ns),
            TimestampAttr::Stop(ns) => stop = Some(ns),
            TimestampAttr::Pad => {}
            TimestampAttr::Other(_) => *unknown += 1,
        }
    }
    Ok((start, stop))
}

/// The TCP state in a CTA_PROTOINFO value, if it has one. Malformed parts are ignored:
/// the state is only a refinement.
fn protoinfo_tcp_state(info: &[u8]) -> Option<CtTcpState> {
    find(find(info, CTA_PROTOINFO_TCP)?, CTA_PROTOINFO_TCP_STATE)?
        .first()
        .copied()
        .and_then(CtTcpState::from_raw)
}

/// Whether CTA_PROTOINFO says the entry was picked up in the middle of a connection: the
/// kernel creates such an entry (`nf_conntrack_tcp_loose`) for a packet of a connection it
/// has no entry for — one deleted while the connection lived — and marks both directions
/// IP_CT_TCP_FLAG_BE_LIBERAL, which a connection seen from its SYN never gets unless
/// `nf_conntrack_tcp_be_liberal` is set (`tcp_new()` in nf_conntrack_proto_tcp.c).
fn protoinfo_picked_up(info: &[u8]) -> bool {
    /// IP_CT_TCP_FLAG_BE_LIBERAL (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
    const BE_LIBERAL: u8 = 0x08;
    let Some(tcp) = find(info, CTA_PROTOINFO_TCP) else {
        return false;
    };
    // struct nf_ct_tcp_flags { __u8 flags; __u8 mask; }
    [
        CTA_PROTOINFO_TCP_FLAGS_ORIGINAL,
        CTA_PROTOINFO_TCP_FLAGS_REPLY,
    ]
    .iter()
    .all(|k| {
        find(tcp, *k)
            .and_then(|v| v.first())
            .is_some_and(|f| f & BE_LIBERAL != 0)
    })
}

fn find(buf: &[u8], kind: u16) -> Option<&[u8]> {
    attributes(buf)
        .map_while(Result::ok)
        .find(|(k, _)| *k == kind)
        .map(|(_, v)| v)
}
