//! Helpers of the conntrack tests: captured fixtures, messages built by hand, and network
//! namespaces for the tests that ask the real kernel.

use std::os::fd::AsFd;
use std::path::PathBuf;

use netlink_packet_core::NLMSG_DONE;

use super::attr::*;
use crate::model::IPPROTO_UDP;
use crate::sources::netlink::NLMSG_HDRLEN;

pub(super) const IPPROTO_ICMP: u8 = 1;
pub(super) const IPPROTO_ICMPV6: u8 = 58;
pub(super) const NLA_F_NESTED: u16 = 0x8000;
pub(super) const NLM_F_MULTI: u16 = 2;

pub(super) fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "netlink", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---- building messages by hand ----

pub(super) fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + value.len() + 3);
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

pub(super) fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
    nla(kind | NLA_F_NESTED, &parts.concat())
}

pub(super) fn nlmsg(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
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
pub(super) fn ct_message(attrs: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = vec![libc::AF_INET as u8, 0, 0, 0]; // nfgenmsg
    payload.extend_from_slice(&attrs.concat());
    nlmsg(
        NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW,
        NLM_F_MULTI,
        &payload,
    )
}

pub(super) fn done() -> Vec<u8> {
    nlmsg(NLMSG_DONE, NLM_F_MULTI, &0i32.to_ne_bytes())
}

pub(super) fn tuple_v4(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
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
pub(super) fn udp_flow(id: u32, sport: u16, extra: &[Vec<u8>]) -> Vec<u8> {
    let mut attrs = vec![
        tuple_v4(CTA_TUPLE_ORIG, [192, 0, 2, 1], [192, 0, 2, 2], sport, 53),
        tuple_v4(CTA_TUPLE_REPLY, [192, 0, 2, 2], [192, 0, 2, 1], 53, sport),
        nla(CTA_ID, &id.to_be_bytes()),
    ];
    attrs.extend_from_slice(extra);
    ct_message(&attrs)
}

pub(super) fn counters64(kind: u16, packets: u64, bytes: u64) -> Vec<u8> {
    nest(
        kind,
        &[
            nla(CTA_COUNTERS_PACKETS, &packets.to_be_bytes()),
            nla(CTA_COUNTERS_BYTES, &bytes.to_be_bytes()),
        ],
    )
}

/// Byte offsets of the messages in `buf`.
pub(super) fn message_offsets(buf: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let len = u32::from_ne_bytes(buf[offset..offset + 4].try_into().unwrap()) as usize;
        out.push((offset, len));
        offset += len.next_multiple_of(4);
    }
    out
}

// ---- the real thing ----

/// Network namespaces made by a test, deleted when it ends (even on panic).
pub(super) struct Netns(pub(super) Vec<String>);

impl Drop for Netns {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .status();
        }
    }
}

pub(super) fn run(args: &[&str]) {
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
pub(super) fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).unwrap();
        // CLONE_NEWNET only moves this thread.
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .unwrap_or_else(|e| panic!("setns {path}: {e}"));
        f()
    })
}

/// Whether a kernel test can run: it needs root (network namespaces, CAP_NET_ADMIN).
/// Outside CI a non-root run notes the skip; in CI it fails, since a skipped test checks
/// nothing.
pub(super) fn require_root(test: &str) -> bool {
    if rustix::process::geteuid().as_raw() == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test} needs root (network namespaces, CAP_NET_ADMIN) and CI is set"
    );
    eprintln!("note: {test} needs root; skipped");
    false
}
