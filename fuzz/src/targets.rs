//! The fuzz targets: every parser of outside input, each a function of the raw bytes.
//!
//! Shared by the AFL++ binaries (`fuzz/src/bin/*.rs`, built with `cargo afl build`) and by
//! the main crate's `tests/it/fuzz_corpus.rs`, which replays the kept corpus
//! (`fuzz/corpus/TARGET/`) through the same functions as ordinary tests. A target must
//! never panic, whatever the bytes: a panic is a crash for AFL and a failure for the test.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use chrono::{TimeZone, Utc};
use netledger::attribute::Direction;
use netledger::config::FileConfig;
use netledger::model::{Counters, Tuple, L4};
use netledger::report::log::parse_template;
use netledger::report::names::{RemoteNames, Services};
use netledger::sources::conntrack::{parse_events, parse_messages, Events};
use netledger::sources::processes::{parse_socket_link, parse_status_uid};
use netledger::sources::sockdiag::{parse_dump_datagram, parse_reply};
use netledger::sources::sockets::{parse_table, Endian};
use netledger::store::connections::LoggedConnection;
use netledger::timespec::{parse_time, tz_is_valid};

/// A target: never panics, whatever the bytes.
pub type Target = fn(&[u8]);

/// Every target by name (the harness's argument and its corpus directory).
pub const TARGETS: &[(&str, Target)] = &[
    ("proc_net", proc_net),
    ("sock_diag", sock_diag),
    ("ctnetlink", ctnetlink),
    ("fd_link", fd_link),
    ("config", config),
    ("names", names),
    ("timespec", timespec),
    ("log_format", log_format),
];

/// The first byte picks the variant, the rest is the input.
fn split(data: &[u8]) -> (u8, &[u8]) {
    match data.split_first() {
        Some((&b, rest)) => (b, rest),
        None => (0, data),
    }
}

/// `/proc/net/{tcp,udp}{,6}` text: byte 0 bit 0 = UDP, bit 1 = big-endian kernel.
pub fn proc_net(data: &[u8]) {
    let (sel, rest) = split(data);
    let proto = if sel & 1 == 0 { L4::Tcp } else { L4::Udp };
    let endian = if sel & 2 == 0 {
        Endian::Little
    } else {
        Endian::Big
    };
    let text = String::from_utf8_lossy(rest);
    let table = parse_table(&text, proto, endian, "fuzz");
    assert!(table.sockets.len() + table.bad_lines.len() <= text.lines().count());
}

/// sock_diag answers: byte 0 bit 0 = UDP; the rest is one exact-lookup reply and one
/// dump datagram.
pub fn sock_diag(data: &[u8]) {
    let (sel, rest) = split(data);
    let l4 = if sel & 1 == 0 { L4::Tcp } else { L4::Udp };
    let _ = parse_reply(rest, l4);
    let mut out = Vec::new();
    let _ = parse_dump_datagram(rest, l4, &mut out);
}

/// ctnetlink messages, as a dump's datagrams and as event datagrams.
pub fn ctnetlink(data: &[u8]) {
    if let Ok(dump) = parse_messages(data) {
        // Each flow was decoded from at least a message header's worth of bytes.
        assert!(dump.entries.len() <= data.len() / 16);
    }
    let mut events = Events::default();
    parse_events(data, &mut events);
    assert!(events.events.len() <= data.len() / 16);
}

/// `/proc/PID/fd/*` link targets and `/proc/PID/status` text.
pub fn fd_link(data: &[u8]) {
    let _ = parse_socket_link(data);
    let _ = parse_status_uid(data);
}

/// The configuration file (`/etc/netledger/netledger.toml`), then what reads its values.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(c) = FileConfig::parse(&text, Path::new("fuzz.toml")) {
        let _ = c.retention();
        let _ = c.delegation(&[], None);
    }
}

/// The names file (`/etc/netledger/names`) and an /etc/services-like text.
pub fn names(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(n) = RemoteNames::parse(&text, Path::new("fuzz-names")) {
        let _ = n.name("198.51.100.7");
        let _ = n.name("2001:db8::7");
    }
    let s = Services::parse(&text);
    let _ = s.name(6, 22);
    let _ = s.name(17, 53);
}

/// `--since`/`--until` forms (UTC and local time) and `TZ` values.
pub fn timespec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let now = Utc
        .timestamp_opt(1_780_000_000, 0)
        .single()
        .unwrap_or_default();
    let _ = parse_time(&text, now, true);
    let _ = parse_time(&text, now, false);
    let _ = tz_is_valid(&text);
}

/// `log --format` templates, rendered against a connection built from the first bytes.
pub fn log_format(data: &[u8]) {
    let (sel, rest) = split(data);
    let text = String::from_utf8_lossy(rest);
    let Ok(t) = parse_template(&text) else {
        return;
    };
    let b = |i: usize| u64::from(rest.get(i).copied().unwrap_or(0));
    let v6 = sel & 1 != 0;
    let ip = |last: u8| -> IpAddr {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                0,
                u16::from(last),
            ))
        } else {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
        }
    };
    let tuple = |s: u8, d: u8| Tuple {
        src: ip(s),
        dst: ip(d),
        proto: sel >> 4,
        sport: (b(0) << 8 | b(1)) as u16,
        dport: (b(2) << 8 | b(3)) as u16,
    };
    let c = LoggedConnection {
        cgroup: None,
        start_ms: (b(4) as i64 - 128) << 40,
        end_ms: (b(5) as i64 - 128) << 40,
        orig: tuple(1, 2),
        reply: tuple(2, 1),
        direction: match sel >> 1 & 3 {
            0 => None,
            1 => Some(Direction::In),
            _ => Some(Direction::Out),
        },
        uid: (sel & 8 != 0).then_some(b(6) as u32 * 1000),
        program: (sel & 8 == 0).then(|| text.chars().take(8).collect()),
        orig_counters: Some(Counters {
            packets: b(7) << 56,
            bytes: b(8) << 56,
        }),
        reply_counters: (sel & 16 != 0).then_some(Counters {
            packets: b(9) << 56,
            bytes: u64::MAX,
        }),
        zone: b(10) as u16,
        via: None,
        container: (b(11) & 1 != 0).then(|| netledger::attribute::Container {
            name: text.chars().skip(8).take(16).collect::<String>().into(),
            inner_uid: b(12) as u32 * 1000,
        }),
    };
    for utc in [true, false] {
        let _ = t.render(&c, utc, &mut |uid| format!("user{uid}"));
    }
}
