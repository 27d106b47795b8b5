//! Builders of the crate's model values (`Tuple`, `Counters`, `Flow`) for the tests that
//! build a database through the store API: one place, so a field added to a model type is
//! added here once.

use netledger::model::{Counters, Flow, Tuple};

/// A tuple from text addresses: `proto` from `src:sport` to `dst:dport`.
pub fn tuple(proto: u8, src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        proto,
        sport,
        dport,
    }
}

/// The other direction of `t`, untranslated: the reply tuple of a flow without NAT.
pub fn reversed(t: &Tuple) -> Tuple {
    Tuple {
        src: t.dst,
        dst: t.src,
        proto: t.proto,
        sport: t.dport,
        dport: t.sport,
    }
}

/// `(bytes, packets)` as counters.
pub fn counters((bytes, packets): (u64, u64)) -> Counters {
    Counters { packets, bytes }
}

/// A conntrack flow without NAT from `a` to `b` (address, port), counting
/// `(bytes, packets)` each way; zone, mark and status 0, no timestamps.
pub fn flow(
    id: u32,
    proto: u8,
    a: (&str, u16),
    b: (&str, u16),
    orig: (u64, u64),
    reply: (u64, u64),
) -> Flow {
    let orig_tuple = tuple(proto, a.0, a.1, b.0, b.1);
    Flow {
        orig: orig_tuple,
        reply: reversed(&orig_tuple),
        id,
        zone: 0,
        mark: 0,
        status: 0,
        orig_counters: Some(counters(orig)),
        reply_counters: Some(counters(reply)),
        start_ns: None,
        stop_ns: None,
    }
}
