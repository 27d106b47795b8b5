//! `log --json`'s records serialized straight from the connection: the same fields, order
//! and bytes as [`super::log::log_record`] (tested), without building a map per
//! connection (a busy host logs over a million a day; the maps were most of the time).

use std::net::{IpAddr, SocketAddr};

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use super::names::protocol_name;
use crate::account::Traffic;
use crate::attribute::Direction;
use crate::model::Tuple;
use crate::store::connections::LoggedConnection;

/// A tuple as `log_record` writes it (serde writes an address as its `Display`, without
/// a `String` of its own).
#[derive(Serialize)]
struct TupleRecord {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
}

impl TupleRecord {
    fn of(t: &Tuple) -> TupleRecord {
        TupleRecord {
            src: t.src,
            dst: t.dst,
            sport: t.sport,
            dport: t.dport,
        }
    }
}

/// One logged connection, field for field as `log_record`.
#[derive(Serialize)]
pub struct LogRecord<'a> {
    start: Option<String>,
    end: Option<String>,
    start_ms: i64,
    end_ms: i64,
    duration_ms: i64,
    protocol: std::borrow::Cow<'static, str>,
    direction: Option<&'static str>,
    local: SocketAddr,
    remote: SocketAddr,
    orig: TupleRecord,
    reply: TupleRecord,
    uid: Option<u32>,
    user: Option<String>,
    via: Option<u32>,
    container: Option<&'a str>,
    container_uid: Option<u32>,
    cgroup: Option<&'a str>,
    unit: Option<&'a str>,
    job: Option<u64>,
    program: &'a Option<String>,
    orig_packets: Option<u64>,
    orig_bytes: Option<u64>,
    reply_packets: Option<u64>,
    reply_bytes: Option<u64>,
    rx_bytes: u64,
    tx_bytes: u64,
    zone: u16,
}

/// `c` as `log --json` writes it, `user` its owner's name.
pub fn log_json_record(c: &LoggedConnection, user: Option<String>) -> LogRecord<'_> {
    // As `crate::live::ends`, as addresses.
    let (o, r) = (&c.orig, &c.reply);
    let (local, remote) = match c.direction {
        Some(Direction::In) => (
            SocketAddr::new(r.src, r.sport),
            SocketAddr::new(o.src, o.sport),
        ),
        Some(Direction::Out) | None => (
            SocketAddr::new(o.src, o.sport),
            SocketAddr::new(o.dst, o.dport),
        ),
    };
    let t = Traffic::of_counters(c.orig_counters, c.reply_counters, c.direction);
    let rfc = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    LogRecord {
        start: rfc(c.start_ms),
        end: rfc(c.end_ms),
        start_ms: c.start_ms,
        end_ms: c.end_ms,
        duration_ms: c.duration_ms(),
        protocol: protocol_name(c.orig.proto),
        direction: c.direction.map(Direction::as_str),
        local,
        remote,
        orig: TupleRecord::of(&c.orig),
        reply: TupleRecord::of(&c.reply),
        uid: c.uid,
        user,
        via: c.via,
        container: c.container.as_ref().map(|k| k.name.as_ref()),
        container_uid: c.container.as_ref().map(|k| k.inner_uid),
        cgroup: c.cgroup.as_ref().map(|g| g.path.as_ref()),
        unit: super::log::unit_of(c),
        job: super::log::job_of(c),
        program: &c.program,
        orig_packets: c.orig_counters.map(|x| x.packets),
        orig_bytes: c.orig_counters.map(|x| x.bytes),
        reply_packets: c.reply_counters.map(|x| x.packets),
        reply_bytes: c.reply_counters.map(|x| x.bytes),
        rx_bytes: t.rx_bytes,
        tx_bytes: t.tx_bytes,
        zone: c.zone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Counters;

    /// Every field set and unset, IPv4 and IPv6, both directions and none, NAT, a
    /// container, a time chrono cannot show: the same pretty JSON as `log_record`'s map.
    #[test]
    fn a_log_record_serialized_from_the_connection_is_log_records_bytes() {
        let base = crate::report::log::sample_connection();
        let mut cases = vec![base.clone()];
        let mut bare = base.clone();
        (bare.uid, bare.program, bare.via, bare.container) = (None, None, None, None);
        (bare.orig_counters, bare.reply_counters, bare.direction) = (None, None, None);
        bare.start_ms = i64::MIN / 2;
        cases.push(bare);
        for direction in [Some(Direction::In), Some(Direction::Out)] {
            let mut c = base.clone();
            c.direction = direction;
            c.program = Some("we\"ird\n\u{7}\\name".into());
            c.via = Some(0);
            c.cgroup = Some(crate::attribute::Cgroup {
                path: "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0".into(),
                job: Some(42),
            });
            c.container = Some(crate::attribute::Container {
                name: "docker-\"x\"".into(),
                inner_uid: 1000,
            });
            c.orig_counters = Some(Counters {
                bytes: u64::MAX,
                packets: 1,
            });
            c.orig.src = "2001:db8::1".parse().unwrap();
            c.orig.dst = "2001:db8::2".parse().unwrap();
            cases.push(c);
        }
        for (i, c) in cases.iter().enumerate() {
            for user in [None, Some("bob \"b\"".to_string())] {
                let map = super::super::log::log_record(c, user.clone());
                let want = serde_json::to_string_pretty(&[map]).unwrap();
                let got = serde_json::to_string_pretty(&[log_json_record(c, user)]).unwrap();
                assert_eq!(got, want, "case {i}");
            }
        }
    }
}
