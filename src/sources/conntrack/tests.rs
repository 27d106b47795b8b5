//! The decoder against the kernel's own view: captured dumps (`fixtures/netlink/*.bin`)
//! compared with `conntrack -L` listings of the same table, and messages built by hand
//! that are malformed or unusual in one way each.

use std::net::IpAddr;

use super::attr::*;
use super::dump::{parse_messages, Dump, Entry};
use super::testutil::*;
use crate::model::{Counters, Tuple, IPPROTO_TCP, IPPROTO_UDP};
use crate::sources::netlink::NLMSG_HDRLEN;

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
            let pairs: Vec<(&str, &str)> = words.iter().filter_map(|w| w.split_once('=')).collect();
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
            // An ICMP echo id (the group's first id=) is the original source's port.
            let icmp = proto == IPPROTO_ICMP || proto == IPPROTO_ICMPV6;
            let echo_id = |g: &[(&str, &str)]| {
                get(g, "id")
                    .filter(|_| icmp)
                    .map_or(0, |v| v.parse().unwrap())
            };
            let orig = Tuple {
                sport: tuple(first).sport.max(echo_id(first)),
                ..tuple(first)
            };
            // The reply group ends where the flow-wide fields start.
            let reply = Tuple {
                dport: tuple(rest).dport.max(echo_id(rest)),
                ..tuple(rest)
            };
            Listed {
                orig,
                reply,
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
    assert_eq!(dump.entries.len(), listing.len(), "flow count");
    for listed in listing {
        let flow = dump
            .flows()
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

// ---- the captured dumps ----

#[test]
fn basic_capture_matches_conntrack_listing() {
    let dump = parse_messages(&fixture("basic.bin")).unwrap();
    let text = String::from_utf8(fixture("basic.conntrack-L.txt")).unwrap();
    assert_eq!(dump.entries.len(), 8);
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
        dump.flows()
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
    assert_eq!(dump.flows().filter(|f| f.zone != 0).count(), 1);

    // UDP, both families.
    assert_eq!(by_dport(IPPROTO_UDP, 5003).orig.dst, b4);
    assert_eq!(by_dport(IPPROTO_UDP, 5004).orig.dst, b6);

    // ICMP and ICMPv6 tuples carry id/type/code, not ports: the echo id is the original
    // source's port (id=26237 in both groups of the listing), the other ports 0.
    let icmp = by_dport(IPPROTO_ICMP, 0);
    assert_eq!(
        (icmp.orig.sport, icmp.reply.sport, icmp.reply.dport),
        (26237, 0, 26237)
    );
    assert_eq!(
        icmp.orig_counters,
        Some(Counters {
            packets: 3,
            bytes: 252
        })
    );
    let icmp6 = by_dport(IPPROTO_ICMPV6, 0);
    assert_eq!(
        (icmp6.orig.src, icmp6.orig.sport, icmp6.reply.dport),
        (a6, 26238, 26238)
    );

    // Opened before nf_conntrack_acct=1: counters unknown (None), not zero.
    let idle = by_dport(IPPROTO_TCP, 5009);
    assert_eq!((idle.orig_counters, idle.reply_counters), (None, None));
    assert_eq!(idle.start_ns, None);
    // Every flow made after the sysctls has a start timestamp.
    assert_eq!(dump.flows().filter(|f| f.start_ns.is_some()).count(), 7);
}

#[test]
fn many_capture_spanning_several_datagrams_matches_conntrack_listing() {
    let raw = fixture("many.bin");
    // Bigger than one ~32 KiB dump batch: several datagrams appended.
    assert!(raw.len() > 4 * 32 * 1024);
    let dump = parse_messages(&raw).unwrap();
    let text = String::from_utf8(fixture("many.conntrack-L.txt")).unwrap();
    assert_eq!(dump.entries.len(), 608);
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
    assert_eq!(dump.entries, plain.entries);
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
        dump.entries[0].flow.orig_counters,
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
    assert_eq!(dump.entries.len(), 7);
    let all = parse_messages(&raw).unwrap();
    let missing: Vec<_> = all
        .entries
        .iter()
        .filter(|e| !dump.entries.contains(e))
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
    assert_eq!(dump.flows().map(|f| f.id).collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn counter_of_wrong_size_skips_the_message() {
    let bad = nest(CTA_COUNTERS_ORIG, &[nla(CTA_COUNTERS_BYTES, &[0; 6])]);
    let raw = [udp_flow(1, 1000, &[bad]), udp_flow(2, 1001, &[])].concat();
    let dump = parse_messages(&raw).unwrap();
    assert_eq!(dump.skipped_messages, 1);
    assert_eq!(dump.entries.len(), 1);
    assert_eq!(dump.entries[0].flow.id, 2);
}

#[test]
fn message_cut_short_keeps_the_messages_before_it() {
    let raw = fixture("basic.bin");
    let offsets = message_offsets(&raw);
    // Cut the buffer in the middle of the 4th message.
    let (offset, len) = offsets[3];
    let dump = parse_messages(&raw[..offset + len / 2]).unwrap();
    assert_eq!(dump.entries.len(), 3);
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
    let flow = &parse_messages(&raw).unwrap().entries[0].flow;
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
    let flow = &parse_messages(&raw).unwrap().entries[0].flow;
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
    assert_eq!(dump.entries[0].flow.zone, 5);
    assert_eq!(dump.unknown_attributes, 0);
}

#[test]
fn duplicate_entries_are_deduplicated() {
    let raw = fixture("basic.bin");
    // The whole dump twice, as a table resize can repeat entries.
    let twice = [&raw[..], &raw[..]].concat();
    let dump = parse_messages(&twice).unwrap();
    assert_eq!(dump.entries.len(), 8);
    assert_eq!(dump.duplicates, 8);
}

#[test]
fn dump_keeps_each_tcp_flows_state_beside_it() {
    let dump = parse_messages(&fixture("basic.bin")).unwrap();
    for Entry {
        flow: f,
        tcp_state: st,
        ..
    } in &dump.entries
    {
        match f.orig.proto {
            IPPROTO_TCP => assert!(
                st.is_some_and(|s| s != crate::model::CtTcpState::None),
                "{f:?}: {st:?}"
            ),
            _ => assert_eq!(*st, None, "{f:?}"),
        }
    }
    assert!(dump.flows().any(|f| f.orig.proto == IPPROTO_TCP));
}
