//! Builders shared by the unit tests: tuples, flows and socket rows written once, so a
//! test says only what differs (`Flow { id: 7, ..flow(TCP, …) }`).

use std::net::SocketAddr;

use crate::model::{Counters, Flow, Socket, Tuple, L4, TCP_TIME_WAIT};

/// IP protocol numbers as conntrack gives them.
pub const TCP: u8 = 6;
/// See [`TCP`].
pub const UDP: u8 = 17;

/// `"198.51.100.1:40000"` as an address.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("a socket address")
}

/// A tuple from `src` to `dst` (`"address:port"` each).
pub fn tuple(proto: u8, src: &str, dst: &str) -> Tuple {
    let (s, d) = (sa(src), sa(dst));
    Tuple {
        src: s.ip(),
        dst: d.ip(),
        proto,
        sport: s.port(),
        dport: d.port(),
    }
}

/// The tuple of the other direction: `t` with its ends swapped (a reply without NAT).
pub fn mirror(t: &Tuple) -> Tuple {
    Tuple {
        src: t.dst,
        dst: t.src,
        proto: t.proto,
        sport: t.dport,
        dport: t.sport,
    }
}

/// A flow of these tuples: id 1, no mark, zone 0, zero counters, no timestamps.
pub fn flow_of(orig: Tuple, reply: Tuple) -> Flow {
    Flow {
        orig,
        reply,
        id: 1,
        zone: 0,
        mark: 0,
        status: 0,
        orig_counters: Some(Counters::default()),
        reply_counters: Some(Counters::default()),
        start_ns: None,
        stop_ns: None,
    }
}

/// A flow with the original tuple `orig` (src, dst); its reply tuple is the mirror of
/// `orig` unless given (after NAT).
pub fn flow(proto: u8, orig: (&str, &str), reply: Option<(&str, &str)>) -> Flow {
    let o = tuple(proto, orig.0, orig.1);
    let r = reply.map_or_else(|| mirror(&o), |(s, d)| tuple(proto, s, d));
    flow_of(o, r)
}

/// Counters of `packets` and `bytes`.
pub fn counters(packets: u64, bytes: u64) -> Counters {
    Counters { packets, bytes }
}

/// A socket row; inode 0 makes it a TIME_WAIT row (uid and inode 0 name no owner).
pub fn sock(proto: L4, local: &str, remote: &str, uid: u32, inode: u64) -> Socket {
    Socket {
        proto,
        local: sa(local),
        remote: sa(remote),
        state: if inode == 0 { TCP_TIME_WAIT } else { 1 },
        uid,
        inode,
        cgroup: 0,
    }
}
