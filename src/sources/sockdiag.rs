//! One socket by its exact 4-tuple, over sock_diag netlink (`NETLINK_SOCK_DIAG`, what `ss`
//! uses): the daemon's way to name the owner of a flow the moment conntrack announces it.
//!
//! Reading `/proc/net/*` costs a walk of every socket of the namespace; at thousands of
//! conntrack NEW events a second that is far too slow. An exact sock_diag request
//! (`SOCK_DIAG_BY_FAMILY` without `NLM_F_DUMP`) makes the kernel do the same hash lookup a
//! packet does and answer with one `inet_diag_msg`: state, uid and inode of that socket.
//!
//! Kernel facts (checked against Linux 6.18 and its source):
//! - TCP (`inet_diag_find_one_icsk`, net/ipv4/inet_diag.c): `id.src` is the socket's local
//!   end, `id.dst` its remote end. The lookup is `inet_lookup`: established sockets (and
//!   TIME_WAIT, request sockets), then listeners, so a lookup with the remote end zeroed
//!   finds the listener of a local address and port.
//! - UDP (`udp_dump_one`, net/ipv4/udp_diag.c): the ends are **swapped** ("src and dst are
//!   swapped for historical reasons"): `id.src` is the remote end. The lookup scores
//!   connected and unconnected sockets like a received datagram would.
//! - An IPv4 request finds IPv6 sockets bound or connected to IPv4-mapped addresses (one
//!   hash for both families); their answers carry `::ffff:a.b.c.d`, canonicalised here.
//! - TIME_WAIT and request sockets (SYN_RECV) answer uid 0 and inode 0: not evidence of an
//!   owner ([`Socket::has_owner`]).
//! - No socket: `NLMSG_ERROR` with `-ENOENT`.
//!
//! Layouts: include/uapi/linux/inet_diag.h, include/uapi/linux/sock_diag.h. The socket, the
//! framing and the kernel's error answers are [`super::netlink`]'s.
//! [`request`] and [`parse_reply`] are the pure halves.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST};

use super::netlink::{self, messages, protocols::NETLINK_SOCK_DIAG, Control};
use crate::model::{canonical_ip, Socket, L4};

/// Why a sock_diag lookup failed (a missing socket is not a failure: it is `Ok(None)`).
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// A socket call failed.
    #[error("{op} on the NETLINK_SOCK_DIAG socket failed (is CONFIG_INET_DIAG enabled? `modprobe inet_diag tcp_diag udp_diag`)")]
    Socket {
        /// Which call.
        op: &'static str,
        /// Its error.
        source: io::Error,
    },
    /// The kernel answered with an error other than "no such socket".
    #[error("the kernel refused the sock_diag lookup (load `tcp_diag`/`udp_diag`: `modprobe tcp_diag udp_diag`)")]
    Kernel {
        /// The errno.
        source: io::Error,
    },
    /// The answer did not have the expected layout.
    #[error("malformed sock_diag answer: {0}")]
    Malformed(&'static str),
}

impl SockDiagError {
    fn socket(op: &'static str) -> impl Fn(io::Error) -> SockDiagError {
        move |source| SockDiagError::Socket { op, source }
    }

    /// The error for an `NLMSG_ERROR` code (a negative errno).
    fn kernel(code: i32) -> SockDiagError {
        SockDiagError::Kernel {
            source: io::Error::from_raw_os_error(code.saturating_neg()),
        }
    }
}

// include/uapi/linux/sock_diag.h, inet_diag.h.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then `inet_diag_sockid`.
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_sockid`: sport, dport (be16), src[4], dst[4] (be32 words), if, cookie[2].
const SOCKID_LEN: usize = 4 + 16 + 16 + 4 + 8;
/// `struct inet_diag_msg`: family, state, timer, retrans, sockid, expires, rqueue, wqueue,
/// uid, inode.
const MSG_LEN: usize = 4 + SOCKID_LEN + 20;
/// `INET_DIAG_NOCOOKIE`: match any socket, not one particular incarnation.
const NOCOOKIE: u32 = !0;
/// Every TCP state (the exact lookup ignores it; set for clarity).
const ALL_STATES: u32 = !0;
/// An answer never takes long: a stuck kernel must not stall the daemon.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// A sock_diag netlink socket for exact lookups. One lookup is one request and one answer.
pub struct SockDiag {
    socket: netlink::Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl SockDiag {
    /// Open the socket (no privilege needed).
    pub fn open() -> Result<SockDiag, SockDiagError> {
        let socket =
            netlink::Socket::new(NETLINK_SOCK_DIAG).map_err(SockDiagError::socket("socket"))?;
        netlink::set_recv_timeout(&socket, RECV_TIMEOUT)
            .map_err(SockDiagError::socket("setsockopt"))?;
        Ok(SockDiag {
            socket,
            buf: vec![0; 8192],
            seq: 0,
        })
    }

    /// The socket with local end `local` and remote end `remote`, if one exists. A remote
    /// end of `0.0.0.0:0` / `[::]:0` asks for a listener or an unconnected socket bound to
    /// `local`. Both ends must be of the same family.
    pub fn lookup(
        &mut self,
        l4: L4,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<Option<Socket>, SockDiagError> {
        self.seq = self.seq.wrapping_add(1);
        let req = request(l4, local, remote, self.seq);
        self.send(&req)?;
        let n = self.recv_answer()?;
        parse_reply(&self.buf[..n], l4)
    }

    /// Send one request to the kernel (the default destination of an unbound netlink socket).
    fn send(&mut self, req: &[u8]) -> Result<(), SockDiagError> {
        self.socket
            .send(req, 0)
            .map_err(SockDiagError::socket("send"))?;
        Ok(())
    }

    /// Receive the next datagram answering the current request into `buf`; returns its
    /// length. Answers to an earlier, timed-out request may still be queued: skipped.
    fn recv_answer(&mut self) -> Result<usize, SockDiagError> {
        loop {
            // A datagram longer than the buffer is decoded as far as it goes.
            let n = netlink::recv(&self.socket, &mut self.buf)
                .map_err(SockDiagError::socket("recv"))?
                .min(self.buf.len());
            let answer = &self.buf[..n];
            if let Some(Ok(message)) = messages(answer).next() {
                if message.seq != self.seq {
                    continue;
                }
            }
            return Ok(n);
        }
    }
}

/// About how many TCP and UDP sockets this network namespace has (`/proc/net/sockstat`
/// and `sockstat6`, TIME_WAIT included, plus some slack), to size a dump's rows; 0 when
/// unknown.
fn sockets_in_use() -> usize {
    let mut n = 0usize;
    for file in ["/proc/net/sockstat", "/proc/net/sockstat6"] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            let Some((proto, fields)) = line.split_once(": ") else {
                continue;
            };
            if !matches!(proto, "TCP" | "UDP" | "TCP6" | "UDP6") {
                continue;
            }
            let mut words = fields.split_whitespace();
            while let (Some(k), Some(v)) = (words.next(), words.next()) {
                if k == "inuse" || k == "tw" {
                    n += v.parse::<usize>().unwrap_or(0);
                }
            }
        }
    }
    (n + n / 16).min(1 << 22)
}

fn be_words(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out.copy_from_slice(&v6.octets()),
    }
    out
}

/// The exact-lookup request for one socket (pure).
pub fn request(l4: L4, local: SocketAddr, remote: SocketAddr, seq: u32) -> Vec<u8> {
    let family = match local.ip() {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    };
    // UDP's lookup takes the ends the other way round (see the module docs).
    // (Ping sockets have no sock_diag handler: [`owner_candidates`] never asks for one.)
    let (src, dst) = match l4 {
        L4::Tcp | L4::Icmp | L4::Icmpv6 => (local, remote),
        L4::Udp | L4::UdpLite => (remote, local),
    };
    let mut m = Vec::with_capacity(REQ_LEN);
    m.push(family as u8);
    m.push(l4.ipproto());
    m.push(0); // idiag_ext: no extensions
    m.push(0); // pad
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(&src.port().to_be_bytes());
    m.extend_from_slice(&dst.port().to_be_bytes());
    m.extend_from_slice(&be_words(src.ip()));
    m.extend_from_slice(&be_words(dst.ip()));
    m.extend_from_slice(&0u32.to_ne_bytes()); // idiag_if: any
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, seq, &m)
}

/// Decode the answer to [`request`] (pure): the socket, or `None` for `-ENOENT`.
pub fn parse_reply(buf: &[u8], l4: L4) -> Result<Option<Socket>, SockDiagError> {
    let message = match messages(buf).next() {
        Some(Ok(message)) => message,
        Some(Err(_)) if buf.len() >= netlink::NLMSG_HDRLEN => {
            return Err(SockDiagError::Malformed("impossible message length"))
        }
        _ => return Err(SockDiagError::Malformed("shorter than a netlink header")),
    };
    match message.control() {
        Some(Control::Error(code)) if code == -libc::ENOENT => Ok(None),
        Some(Control::Error(code)) => Err(SockDiagError::kernel(code)),
        Some(_) => Err(SockDiagError::Malformed("unexpected message type")),
        None if message.kind == SOCK_DIAG_BY_FAMILY => parse_msg(message.payload, l4).map(Some),
        None => Err(SockDiagError::Malformed("unexpected message type")),
    }
}

/// Decode one `inet_diag_msg` (pure). Every field is read with a checked `get`: no index
/// or `expect` on the kernel's bytes (the sock_diag fuzz target holds it to that).
fn parse_msg(payload: &[u8], l4: L4) -> Result<Socket, SockDiagError> {
    fn bytes<const N: usize>(m: &[u8], at: usize) -> Result<[u8; N], SockDiagError> {
        m.get(at..at + N)
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or(SockDiagError::Malformed("inet_diag_msg too short"))
    }
    let [family, state, _timer, _retrans] = bytes::<4>(payload, 0)?;
    let family = i32::from(family);
    // inet_diag_sockid from offset 4: sport, dport, src, dst, if, cookie.
    let sport = u16::from_be_bytes(bytes(payload, 4)?);
    let dport = u16::from_be_bytes(bytes(payload, 6)?);
    let addr = |at: usize| -> Result<IpAddr, SockDiagError> {
        match family {
            libc::AF_INET => Ok(IpAddr::V4(Ipv4Addr::from(bytes::<4>(payload, at)?))),
            libc::AF_INET6 => Ok(canonical_ip(IpAddr::V6(Ipv6Addr::from(bytes::<16>(
                payload, at,
            )?)))),
            _ => Err(SockDiagError::Malformed("unknown address family")),
        }
    };
    // The whole message must be there, whatever the family.
    bytes::<MSG_LEN>(payload, 0)?;
    let src = SocketAddr::new(addr(8)?, sport);
    let dst = SocketAddr::new(addr(24)?, dport);
    // After the sockid: expires, rqueue, wqueue, uid, inode.
    let word = |i: usize| bytes::<4>(payload, 4 + SOCKID_LEN + i * 4).map(u32::from_ne_bytes);
    // Answers always name src = the socket's local end (inet_diag_msg_common_fill), for
    // UDP too: only the request is swapped.
    Ok(Socket {
        proto: l4,
        local: src,
        remote: dst,
        state,
        uid: word(3)?,
        inode: u64::from(word(4)?),
        cgroup: cgroup_id(payload.get(MSG_LEN..).unwrap_or(&[])),
    })
}

/// `INET_DIAG_CGROUP_ID` (include/uapi/linux/inet_diag.h): put on every full socket's
/// answer, without asking, since Linux 5.7 (`inet_diag_msg_attrs_fill`), in host order.
const INET_DIAG_CGROUP_ID: u16 = 21;

/// The cgroup id among the attributes after an `inet_diag_msg` (pure); 0 when absent or
/// malformed (TIME_WAIT and request sockets carry none).
fn cgroup_id(attrs: &[u8]) -> u64 {
    netlink::attributes(attrs)
        .map_while(Result::ok)
        .find(|(kind, _)| *kind == INET_DIAG_CGROUP_ID)
        .and_then(|(_, v)| <[u8; 8]>::try_from(v).ok())
        .map_or(0, u64::from_ne_bytes)
}

/// The dump request for every socket of one family and protocol (pure).
pub fn dump_request(family: i32, l4: L4, seq: u32) -> Vec<u8> {
    let mut m = Vec::with_capacity(REQ_LEN);
    m.push(family as u8);
    m.push(l4.ipproto());
    m.push(0); // idiag_ext: no extensions
    m.push(0); // pad
    m.extend_from_slice(&ALL_STATES.to_ne_bytes());
    m.extend_from_slice(&[0u8; SOCKID_LEN - 8]); // ports, addresses, interface: any
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    m.extend_from_slice(&NOCOOKIE.to_ne_bytes());
    netlink::request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, &m)
}

/// Append the sockets of a dump's datagram to `out` (pure); `Ok(true)` at NLMSG_DONE.
pub fn parse_dump_datagram(
    buf: &[u8],
    l4: L4,
    out: &mut Vec<Socket>,
) -> Result<bool, SockDiagError> {
    for message in messages(buf) {
        let message = message.map_err(|_| SockDiagError::Malformed("impossible message length"))?;
        match message.control() {
            Some(Control::Done(_)) => return Ok(true),
            Some(Control::Error(code)) => return Err(SockDiagError::kernel(code)),
            Some(Control::Ack | Control::Noop) => {}
            None if message.kind == SOCK_DIAG_BY_FAMILY => {
                out.push(parse_msg(message.payload, l4)?)
            }
            None => {}
        }
    }
    Ok(false)
}

/// Where the socket that owns `flow` may be, in the order to ask: the initiating end's
/// exact 4-tuple (outgoing), then the answering end's (incoming, after DNAT: the reply
/// tuple), then, for TCP, the answering end's listener (an incoming connection may still be
/// a request socket, which has no owner yet; accepted sockets belong to the listener's
/// owner). Only ends that are addresses of this host (`host`, or loopback) are asked about.
pub fn owner_candidates(
    flow: &crate::model::Flow,
    host: &std::collections::HashSet<IpAddr>,
) -> Option<(L4, Vec<(SocketAddr, SocketAddr)>)> {
    // Ping sockets are not in sock_diag: `sockets::PingSockets`.
    let l4 = L4::from_ipproto(flow.orig.proto).filter(|l| !l.is_ping())?;
    let local = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
    let (o, r) = (&flow.orig, &flow.reply);
    let mut tries = Vec::with_capacity(3);
    if local(o.src) {
        tries.push((o.src_sa(), o.dst_sa()));
    }
    if local(r.src) {
        tries.push((r.src_sa(), r.dst_sa()));
    }
    if l4 == L4::Tcp && local(r.src) {
        let any = match r.src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        tries.push((r.src_sa(), SocketAddr::new(any, 0)));
    }
    Some((l4, tries))
}

impl SockDiag {
    /// The live socket with an owner that owns `flow` ([`owner_candidates`], asked in
    /// order). `on_error` sees each failed lookup (the caller decides how loudly); `asked`
    /// counts the lookups made.
    pub fn owner_socket(
        &mut self,
        flow: &crate::model::Flow,
        host: &std::collections::HashSet<IpAddr>,
        asked: &mut u64,
        on_error: &mut dyn FnMut(&SockDiagError),
    ) -> Option<Socket> {
        let (l4, tries) = owner_candidates(flow, host)?;
        for (local, remote) in tries {
            *asked += 1;
            match self.lookup(l4, local, remote) {
                Ok(Some(s)) if s.has_owner() => return Some(s),
                Ok(_) => {}
                Err(e) => on_error(&e),
            }
        }
        None
    }

    /// Every TCP, UDP and UDP-Lite socket of this network namespace, IPv4 and IPv6: what
    /// `/proc/net/{tcp,tcp6,udp,udp6,udplite,udplite6}` list, without the kernel
    /// formatting text.
    pub fn dump_all(&mut self) -> Result<Vec<Socket>, SockDiagError> {
        let mut out = Vec::with_capacity(sockets_in_use());
        if self.buf.len() < 256 * 1024 {
            self.buf.resize(256 * 1024, 0);
        }
        for (family, l4) in [
            (libc::AF_INET, L4::Tcp),
            (libc::AF_INET6, L4::Tcp),
            (libc::AF_INET, L4::Udp),
            (libc::AF_INET6, L4::Udp),
        ] {
            self.dump_into(family, l4, &mut out)?;
        }
        // UDP-Lite last: a kernel without it (or without its sock_diag handler) answers
        // with an error, which leaves its sockets out and nothing else.
        for family in [libc::AF_INET, libc::AF_INET6] {
            let mut lite = Vec::new();
            match self.dump_into(family, L4::UdpLite, &mut lite) {
                Ok(()) => out.extend(lite),
                Err(e) => tracing::debug!("no UDP-Lite sockets from sock_diag: {e}"),
            }
        }
        Ok(out)
    }

    /// Append every socket of one family and protocol to `out`.
    fn dump_into(
        &mut self,
        family: i32,
        l4: L4,
        out: &mut Vec<Socket>,
    ) -> Result<(), SockDiagError> {
        self.seq = self.seq.wrapping_add(1);
        self.send(&dump_request(family, l4, self.seq))?;
        loop {
            let n = self.recv_answer()?;
            if parse_dump_datagram(&self.buf[..n], l4, out)? {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::NLMSG_ERROR;

    use super::*;
    use crate::sources::netlink::NLMSG_HDRLEN;
    use crate::testkit::sa;

    #[test]
    fn request_layout_tcp_v4() {
        let r = request(L4::Tcp, sa("198.51.100.1:40000"), sa("198.51.100.2:80"), 7);
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(r[16], libc::AF_INET as u8);
        assert_eq!(r[17], 6);
        // sockid: local first for TCP.
        assert_eq!(&r[24..26], &40000u16.to_be_bytes());
        assert_eq!(&r[26..28], &80u16.to_be_bytes());
        assert_eq!(&r[28..32], &[198, 51, 100, 1]);
        assert_eq!(&r[44..48], &[198, 51, 100, 2]);
        assert_eq!(&r[64..72], &[0xff; 8]);
    }

    #[test]
    fn request_swaps_the_ends_for_udp() {
        let r = request(L4::Udp, sa("[2001:db8::1]:5000"), sa("[2001:db8::2]:53"), 1);
        assert_eq!(r[16], libc::AF_INET6 as u8);
        assert_eq!(&r[24..26], &53u16.to_be_bytes());
        assert_eq!(&r[26..28], &5000u16.to_be_bytes());
        assert_eq!(
            r[28..44],
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().octets()
        );
    }

    fn answer(family: i32, state: u8, src: &[u8], dst: &[u8], uid: u32, inode: u32) -> Vec<u8> {
        let mut m = vec![0u8; NLMSG_HDRLEN + MSG_LEN];
        let len = m.len() as u32;
        m[0..4].copy_from_slice(&len.to_ne_bytes());
        m[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        let p = NLMSG_HDRLEN;
        m[p] = family as u8;
        m[p + 1] = state;
        m[p + 4..p + 6].copy_from_slice(&1234u16.to_be_bytes());
        m[p + 6..p + 8].copy_from_slice(&80u16.to_be_bytes());
        m[p + 8..p + 8 + src.len()].copy_from_slice(src);
        m[p + 24..p + 24 + dst.len()].copy_from_slice(dst);
        let t = p + 4 + SOCKID_LEN;
        m[t + 12..t + 16].copy_from_slice(&uid.to_ne_bytes());
        m[t + 16..t + 20].copy_from_slice(&inode.to_ne_bytes());
        m
    }

    #[test]
    fn reply_decodes_uid_inode_and_canonical_mapped_addresses() {
        let mapped: Ipv6Addr = "::ffff:198.51.100.1".parse().unwrap();
        let peer: Ipv6Addr = "::ffff:198.51.100.2".parse().unwrap();
        let m = answer(
            libc::AF_INET6,
            1,
            &mapped.octets(),
            &peer.octets(),
            1001,
            4242,
        );
        let s = parse_reply(&m, L4::Tcp).unwrap().unwrap();
        assert_eq!(s.local, sa("198.51.100.1:1234"));
        assert_eq!(s.remote, sa("198.51.100.2:80"));
        assert_eq!((s.uid, s.inode, s.state), (1001, 4242, 1));
    }

    /// The cgroup id rides after the message, maybe behind the 64-bit alignment pad
    /// (`INET_DIAG_PAD`, 14) `nla_put_u64_64bit` may put first; absent, short or cut off: 0.
    #[test]
    fn the_cgroup_id_is_read_after_the_message() {
        fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
            let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
            a.extend_from_slice(&kind.to_ne_bytes());
            a.extend_from_slice(value);
            a.resize(a.len().next_multiple_of(4), 0);
            a
        }
        let v4 = [127, 0, 0, 1];
        let with = |attrs: &[u8]| {
            let mut m = answer(libc::AF_INET, 1, &v4, &v4, 1000, 7);
            m.extend_from_slice(attrs);
            let len = m.len() as u32;
            m[0..4].copy_from_slice(&len.to_ne_bytes());
            parse_reply(&m, L4::Tcp).unwrap().unwrap().cgroup
        };
        let id = 0x1234_5678_9abc_u64;
        let mut attrs = attr(5, &[0]); // INET_DIAG_TOS
        attrs.extend(attr(14, &[]));
        attrs.extend(attr(INET_DIAG_CGROUP_ID, &id.to_ne_bytes()));
        assert_eq!(with(&attrs), id);
        assert_eq!(with(&attr(INET_DIAG_CGROUP_ID, &id.to_ne_bytes())), id);
        assert_eq!(with(&[]), 0);
        assert_eq!(with(&attr(INET_DIAG_CGROUP_ID, &[1, 2, 3, 4])), 0);
        let mut cut = attr(INET_DIAG_CGROUP_ID, &id.to_ne_bytes());
        cut[0] = 200; // claims more than there is
        assert_eq!(with(&cut), 0);
    }

    /// A reply whose netlink header claims fewer bytes than an `inet_diag_msg` (any
    /// length from the header up): malformed, never a panic, whatever the family.
    #[test]
    fn every_truncated_inet_diag_msg_is_malformed() {
        for family in [libc::AF_INET, libc::AF_INET6, 0] {
            let full = answer(family, 1, &[198, 51, 100, 1], &[198, 51, 100, 2], 1, 2);
            for len in NLMSG_HDRLEN..full.len() {
                let mut m = full[..len].to_vec();
                m[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
                assert!(
                    matches!(parse_reply(&m, L4::Tcp), Err(SockDiagError::Malformed(_))),
                    "family {family}, {len} bytes"
                );
            }
        }
    }

    #[test]
    fn enoent_is_no_socket_and_other_errors_are_errors() {
        let err = |errno: i32| {
            let mut m = vec![0u8; NLMSG_HDRLEN + 20];
            m[0..4].copy_from_slice(&36u32.to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[16..20].copy_from_slice(&(-errno).to_ne_bytes());
            m
        };
        assert!(parse_reply(&err(libc::ENOENT), L4::Tcp).unwrap().is_none());
        assert!(parse_reply(&err(libc::EPERM), L4::Tcp).is_err());
        assert!(parse_reply(&[0u8; 8], L4::Tcp).is_err());
    }

    /// The lookups the daemon relies on, against real sockets of this namespace (loopback
    /// needs no privilege): TCP client and accepted ends, a listener, TCP over an
    /// IPv4-mapped IPv6 socket, connected and unconnected UDP.
    #[test]
    fn dump_lists_the_same_sockets_as_proc() {
        // Sockets of our own, so the comparison has rows of every kind.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let u = std::net::UdpSocket::bind("[::1]:0").unwrap();
        // A UDP-Lite socket (socket(AF_INET, SOCK_DGRAM, 136): std has no such type).
        let lite = rustix::net::socket(
            rustix::net::AddressFamily::INET,
            rustix::net::SocketType::DGRAM,
            Some(rustix::net::Protocol::from_raw(
                std::num::NonZeroU32::new(u32::from(crate::model::IPPROTO_UDPLITE)).unwrap(),
            )),
        )
        .unwrap();
        rustix::net::bind(&lite, &"127.0.0.1:0".parse::<SocketAddr>().unwrap()).unwrap();
        let lite_ino = rustix::fs::fstat(&lite).unwrap().st_ino;
        let key = |s: &Socket| (s.proto, s.local, s.remote, s.uid, s.inode);
        // Sockets come and go on a live machine: compare the ones both reads saw twice.
        let mut sd = SockDiag::open().unwrap();
        let a = sd.dump_all().unwrap();
        let p = crate::sources::sockets::read_sockets(std::path::Path::new("/proc")).unwrap();
        let b = sd.dump_all().unwrap();
        assert!(
            a.iter()
                .any(|s| s.proto == L4::UdpLite && s.inode == lite_ino),
            "our UDP-Lite socket in the dump"
        );
        let stable: std::collections::HashSet<_> = a
            .iter()
            .map(key)
            .filter(|k| b.iter().any(|s| key(s) == *k))
            .collect();
        let from_proc: std::collections::HashSet<_> = p.sockets.iter().map(key).collect();
        assert!(stable
            .iter()
            .any(|k| k.3 == rustix::process::geteuid().as_raw()));
        for k in &stable {
            assert!(from_proc.contains(k), "sock_diag saw {k:?}, /proc did not");
        }
        // Our own sockets, which live through all three reads, are in both.
        let ours = [l.local_addr().unwrap(), u.local_addr().unwrap()];
        for addr in ours {
            let in_proc: Vec<_> = p
                .sockets
                .iter()
                .filter(|s| s.local == addr)
                .map(key)
                .collect();
            assert_eq!(in_proc.len(), 1, "{addr}");
            assert!(stable.contains(&in_proc[0]), "sock_diag lacks {addr}");
        }
    }

    /// This process's cgroup2 directory (`0::PATH` of /proc/self/cgroup under the mount).
    fn own_cgroup2_dir() -> Option<std::path::PathBuf> {
        let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let mount = crate::sources::cgroups::cgroup2_mount(&info)?;
        let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let path = own.lines().find_map(|l| l.strip_prefix("0::"))?;
        Some(mount.join(path.trim_start_matches('/')))
    }

    #[test]
    fn real_lookups_find_uid_and_inode() {
        let mut d = SockDiag::open().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let la = l.local_addr().unwrap();
        let c = std::net::TcpStream::connect(la).unwrap();
        let (srv, _) = l.accept().unwrap();
        let ca = c.local_addr().unwrap();
        let s = d.lookup(L4::Tcp, ca, la).unwrap().expect("client socket");
        assert_eq!((s.local, s.remote, s.uid), (ca, la, me));
        assert_ne!(s.inode, 0);
        let s = d.lookup(L4::Tcp, la, ca).unwrap().expect("accepted socket");
        assert_eq!(s.remote, ca);
        let unspec = sa("0.0.0.0:0");
        let s = d.lookup(L4::Tcp, la, unspec).unwrap().expect("listener");
        assert_eq!(s.state, 10, "TCP_LISTEN");
        assert!(d.lookup(L4::Tcp, sa("127.0.0.1:1"), la).unwrap().is_none());
        // The socket's cgroup is this process's: the inode of its cgroup2 directory.
        let dir = own_cgroup2_dir().expect("a cgroup2 mount and this process's place in it");
        let s = d.lookup(L4::Tcp, ca, la).unwrap().unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(s.cgroup, std::fs::metadata(&dir).unwrap().ino(), "{dir:?}");
        drop((srv, c));

        // A dual-stack socket connected to an IPv4-mapped address answers an IPv4 lookup.
        let l6 = std::net::TcpListener::bind("[::]:0").unwrap();
        let port = l6.local_addr().unwrap().port();
        let peer = SocketAddr::new("::ffff:127.0.0.1".parse().unwrap(), port);
        let c6 = std::net::TcpStream::connect(peer).unwrap();
        let local = SocketAddr::new(
            "127.0.0.1".parse().unwrap(),
            c6.local_addr().unwrap().port(),
        );
        let s = d
            .lookup(L4::Tcp, local, sa(&format!("127.0.0.1:{port}")))
            .unwrap()
            .expect("mapped client");
        assert_eq!(s.local, local);
        drop(c6);

        let u = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ua, pa) = (u.local_addr().unwrap(), peer.local_addr().unwrap());
        let s = d.lookup(L4::Udp, ua, pa).unwrap().expect("unconnected udp");
        assert_eq!((s.local, s.remote.port()), (ua, 0));
        u.connect(pa).unwrap();
        let s = d.lookup(L4::Udp, ua, pa).unwrap().expect("connected udp");
        assert_eq!((s.local, s.remote), (ua, pa));
        assert_ne!(s.inode, 0);
    }

    #[test]
    fn owner_candidates_ask_the_host_ends_exact_first_then_the_listener() {
        use crate::testkit::{flow, TCP};
        let host: std::collections::HashSet<IpAddr> =
            ["198.51.100.1".parse().unwrap()].into_iter().collect();
        // Outgoing from the host: its own end, exact.
        let out = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
        let (l4, tries) = owner_candidates(&out, &host).unwrap();
        assert_eq!(l4, L4::Tcp);
        assert_eq!(tries, [(sa("198.51.100.1:40000"), sa("198.51.100.2:443"))]);
        // Incoming after DNAT: the reply tuple's source exact, then its listener.
        let inc = flow(
            TCP,
            ("198.51.100.2:50000", "203.0.113.9:80"),
            Some(("198.51.100.1:8080", "198.51.100.2:50000")),
        );
        let (_, tries) = owner_candidates(&inc, &host).unwrap();
        assert_eq!(
            tries,
            [
                (sa("198.51.100.1:8080"), sa("198.51.100.2:50000")),
                (sa("198.51.100.1:8080"), sa("0.0.0.0:0")),
            ]
        );
        // Forwarded: neither end is the host's, nothing to ask.
        let fwd = flow(TCP, ("10.0.0.5:1", "198.51.100.2:2"), None);
        assert!(owner_candidates(&fwd, &host).unwrap().1.is_empty());
    }
}
