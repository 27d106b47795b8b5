//! Netlink plumbing shared by the readers that speak it: [`super::conntrack`]
//! (`NETLINK_NETFILTER`) and [`super::sockdiag`] (`NETLINK_SOCK_DIAG`).
//!
//! This module owns the socket calls (a `netlink_sys::Socket`; its options, `poll` and
//! `fstat` through rustix, so nothing here is `unsafe`), the framing of received datagrams
//! into messages and of requests into datagrams (`netlink_packet_core`'s `NetlinkBuffer` and
//! `NetlinkHeader`), the meaning of the control messages (`NLMSG_ERROR` through its
//! `ErrorBuffer`, `NLMSG_DONE` through its `DoneBuffer`), and the walk over a message's
//! attributes. What a family's messages mean, and which errno names which fix, stays with
//! the family's reader.
//!
//! Layouts: include/uapi/linux/netlink.h.

use std::io;
use std::time::Duration;

use netlink_packet_core::{
    DoneBuffer, Emitable, ErrorBuffer, NetlinkHeader, NLA_ALIGNTO, NLA_HEADER_SIZE, NLA_TYPE_MASK,
    NLMSG_ALIGNTO, NLMSG_DONE, NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN,
};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::sockopt;

pub use netlink_sys::{protocols, Socket, SocketAddr};

/// Size of `struct nlmsghdr` (`NLMSG_HDRLEN`).
pub const NLMSG_HDRLEN: usize = 16;

// ---- sockets ----

/// Make a blocking `recv` on `socket` give up after `timeout` (`SO_RCVTIMEO`, socket(7)):
/// it then fails with `WouldBlock`.
pub fn set_recv_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    sockopt::set_socket_timeout(socket, sockopt::Timeout::Recv, Some(timeout))?;
    Ok(())
}

/// Receive one datagram into `buf` (`recv` with `MSG_TRUNC`) and return its real length:
/// more than `buf.len()` when it did not fit, so a cut datagram is seen, never decoded as
/// if whole. Retried on `EINTR`.
pub fn recv(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut window: &mut [u8] = &mut buf[..];
        match socket.recv(&mut window, libc::MSG_TRUNC) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Wait up to `timeout` for `socket` to be readable (`poll`); the number of ready
/// descriptors (0 on timeout). A signal ends the wait with an `Interrupted` error.
pub fn poll_readable(socket: &Socket, timeout: Duration) -> io::Result<usize> {
    let mut fds = [PollFd::new(socket, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    Ok(rustix::event::poll(&mut fds, Some(&timeout))?)
}

/// Set the receive buffer to `bytes`: `SO_RCVBUFFORCE`, which may exceed
/// `net.core.rmem_max` with CAP_NET_ADMIN, else `SO_RCVBUF`. Returns the size the kernel
/// granted (it doubles the request for bookkeeping, socket(7)).
pub fn set_receive_buffer(socket: &Socket, bytes: usize) -> io::Result<usize> {
    // The kernel doubles the value as an int: keep the double in range.
    let bytes = bytes.min(i32::MAX as usize / 2);
    if sockopt::set_socket_recv_buffer_size_force(socket, bytes).is_err() {
        sockopt::set_socket_recv_buffer_size(socket, bytes)?;
    }
    Ok(receive_buffer(socket))
}

/// The receive buffer size the kernel uses now (0 if it cannot be read).
pub fn receive_buffer(socket: &Socket) -> usize {
    socket.get_rx_buf_sz().unwrap_or(0)
}

/// The socket's inode: its row in `/proc/net/netlink`.
pub fn inode(socket: &Socket) -> Option<u64> {
    rustix::fs::fstat(socket).ok().map(|st| st.st_ino)
}

/// Messages dropped so far on the netlink socket with `inode`, from `/proc/net/netlink`
/// text (the `Drops` column, `sk_drops`, counted by `netlink_overrun()`). Pure.
pub fn drops(text: &str, inode: u64) -> Option<u64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let drops = header.iter().position(|h| *h == "Drops")?;
    let ino = header.iter().position(|h| *h == "Inode")?;
    lines.find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(ino)?.parse::<u64>().ok()? == inode).then(|| f.get(drops)?.parse().ok())?
    })
}

// ---- framing ----

/// A request datagram: a `nlmsghdr` (type `kind`, `flags`, `seq`, port 0) and `payload`.
pub fn request(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut header = NetlinkHeader::default();
    header.length = (NLMSG_HDRLEN + payload.len()) as u32;
    header.message_type = kind;
    header.flags = flags;
    header.sequence_number = seq;
    let mut out = vec![0u8; NLMSG_HDRLEN];
    header.emit(&mut out);
    out.extend_from_slice(payload);
    out
}

/// One netlink message: the header fields the readers use, and its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `nlmsg_type`: a control type ([`Message::control`]) or one of the family's.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`: the sequence number of the request it answers.
    pub seq: u32,
    /// What follows the header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// Walk the netlink messages of `buf`: one datagram, or several appended (each holds
/// whole, 4-aligned messages). A header whose length is impossible ends the walk (the next
/// message cannot be found): it is reported as `Err` with its offset, after which the
/// iterator yields nothing.
///
/// The header is read here rather than through `netlink_packet_core::NetlinkBuffer`, whose
/// accessors each go through the non-inlined `parse_u32`/`parse_u16` and an `unwrap`:
/// decoding a 20,000-flow conntrack dump took 15–20% longer that way
/// (`examples/ct_decode.rs`), for the same checks (`NetlinkBuffer::new_checked`'s).
#[inline]
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { buf, offset: 0 }
}

/// See [`messages`].
pub struct Messages<'a> {
    buf: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, usize>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.offset..).filter(|r| !r.is_empty())?;
        let offset = self.offset;
        // struct nlmsghdr { __u32 nlmsg_len; __u16 nlmsg_type; __u16 nlmsg_flags;
        // __u32 nlmsg_seq; __u32 nlmsg_pid; }, host byte order.
        let header: Option<&[u8; NLMSG_HDRLEN]> = rest.first_chunk();
        match header {
            Some(h) if (NLMSG_HDRLEN..=rest.len()).contains(&(ne_u32(h, 0) as usize)) => {
                let len = ne_u32(h, 0) as usize;
                self.offset += len.next_multiple_of(usize::from(NLMSG_ALIGNTO));
                Some(Ok(Message {
                    kind: u16::from_ne_bytes([h[4], h[5]]),
                    flags: u16::from_ne_bytes([h[6], h[7]]),
                    seq: ne_u32(h, 8),
                    payload: &rest[NLMSG_HDRLEN..len],
                }))
            }
            _ => {
                self.offset = self.buf.len();
                Some(Err(offset))
            }
        }
    }
}

#[inline]
fn ne_u32(h: &[u8; NLMSG_HDRLEN], at: usize) -> u32 {
    u32::from_ne_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]])
}

/// What a netlink control message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// `NLMSG_NOOP` or `NLMSG_OVERRUN`: nothing to act on.
    Noop,
    /// `NLMSG_ERROR` with error 0: an acknowledgement.
    Ack,
    /// `NLMSG_ERROR`: the request failed; the code as the kernel sent it, a negative errno
    /// (`-EBADMSG` when the message is too short to hold one).
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump, with the dump callback's status (negative errno
    /// when the dump failed; 0 when the message carries none).
    Done(i32),
}

impl Message<'_> {
    /// The control message this is, or `None` for a message of the family.
    #[inline]
    pub fn control(&self) -> Option<Control> {
        match self.kind {
            NLMSG_NOOP | NLMSG_OVERRUN => Some(Control::Noop),
            // struct nlmsgerr { int error; struct nlmsghdr msg; }
            NLMSG_ERROR => Some(match ErrorBuffer::new_checked(self.payload) {
                Ok(error) => error
                    .code()
                    .map_or(Control::Ack, |code| Control::Error(code.get())),
                Err(_) => Control::Error(-libc::EBADMSG),
            }),
            // A dump's NLMSG_DONE carries the dump callback's status (an int).
            NLMSG_DONE => Some(Control::Done(
                DoneBuffer::new_checked(self.payload).map_or(0, |done| done.code()),
            )),
            _ => None,
        }
    }
}

// ---- attributes ----

/// Why one message could not be decoded (logged, and the message skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

/// Iterate the attributes of a message or of a nested value: `(type, value)`, with the
/// `NLA_F_NESTED` / `NLA_F_NET_BYTEORDER` flag bits masked off the type. An attribute whose
/// length is below its header or beyond the buffer yields `Err` and ends the walk; a
/// missing pad after the last one does not matter.
///
/// Hand-rolled rather than `netlink_packet_core::NlasIterator`: that one reads each header
/// field through the non-inlined `parse_u16`, returning a `Result<_, DecodeError>`, several
/// times per attribute; profiling a 20,000-flow conntrack parse put ~40% of the time there,
/// twice what this loop costs. The walk allocates nothing.
#[inline]
pub fn attributes(buf: &[u8]) -> Attributes<'_> {
    Attributes { rest: buf }
}

/// See [`attributes`].
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<(u16, &'a [u8]), Malformed>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest;
        if rest.is_empty() {
            return None;
        }
        // struct nlattr { __u16 nla_len; __u16 nla_type; }, host byte order.
        let (len, kind) = match rest {
            [l0, l1, t0, t1, ..] => (
                usize::from(u16::from_ne_bytes([*l0, *l1])),
                u16::from_ne_bytes([*t0, *t1]) & NLA_TYPE_MASK,
            ),
            _ => (0, 0),
        };
        if len < NLA_HEADER_SIZE || len > rest.len() {
            self.rest = &[];
            return Some(Err(Malformed("truncated attribute")));
        }
        self.rest = rest.get(len.next_multiple_of(NLA_ALIGNTO)..).unwrap_or(&[]);
        Some(Ok((kind, &rest[NLA_HEADER_SIZE..len])))
    }
}

// Attribute values are read with std's `from_be_bytes` rather than `netlink_packet_core`'s
// `parse_u16_be` & co., which cannot be inlined across the crate boundary and format an
// error string on failure: with them, decoding a 20,000-flow dump took ~10% longer
// (`examples/ct_decode.rs`).

/// A big-endian (network order) u16 value; `what` says why not.
#[inline]
pub fn be16(value: &[u8], what: &'static str) -> Result<u16, Malformed> {
    value
        .try_into()
        .map(u16::from_be_bytes)
        .map_err(|_| Malformed(what))
}

/// A big-endian u32 value.
#[inline]
pub fn be32(value: &[u8], what: &'static str) -> Result<u32, Malformed> {
    value
        .try_into()
        .map(u32::from_be_bytes)
        .map_err(|_| Malformed(what))
}

/// A big-endian u64 value.
#[inline]
pub fn be64(value: &[u8], what: &'static str) -> Result<u64, Malformed> {
    value
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::drops as netlink_drops;
    use super::*;

    #[test]
    fn netlink_drops_are_read_by_inode() {
        let text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                    00000000a707d6af 0   0          00000000 0        0        0     2        0        4\n\
                    00000000b26ed691 12  1234       00000005 0        0        0     2        37       98765\n";
        assert_eq!(netlink_drops(text, 98765), Some(37));
        assert_eq!(netlink_drops(text, 4), Some(0));
        assert_eq!(netlink_drops(text, 5), None);
        assert_eq!(netlink_drops("", 5), None);
    }

    #[test]
    fn request_frames_the_payload_behind_a_header() {
        let m = request(20, 0x301, 7, &[1, 2, 3, 4]);
        assert_eq!(m.len(), NLMSG_HDRLEN + 4);
        let parsed: Vec<_> = messages(&m).collect();
        assert_eq!(
            parsed,
            [Ok(Message {
                kind: 20,
                flags: 0x301,
                seq: 7,
                payload: &[1, 2, 3, 4]
            })]
        );
        assert_eq!(&m[12..16], &0u32.to_ne_bytes(), "port id 0");
    }

    #[test]
    fn control_messages_are_told_apart() {
        fn msg(kind: u16, payload: &[u8]) -> Message<'_> {
            Message {
                kind,
                flags: 0,
                seq: 0,
                payload,
            }
        }
        let eperm = (-libc::EPERM).to_ne_bytes();
        assert_eq!(msg(NLMSG_NOOP, &[]).control(), Some(Control::Noop));
        assert_eq!(msg(NLMSG_ERROR, &[0; 20]).control(), Some(Control::Ack));
        assert_eq!(
            msg(NLMSG_ERROR, &eperm).control(),
            Some(Control::Error(-libc::EPERM))
        );
        assert_eq!(
            msg(NLMSG_ERROR, &[1]).control(),
            Some(Control::Error(-libc::EBADMSG))
        );
        assert_eq!(msg(NLMSG_DONE, &[]).control(), Some(Control::Done(0)));
        assert_eq!(
            msg(NLMSG_DONE, &eperm).control(),
            Some(Control::Done(-libc::EPERM))
        );
        assert_eq!(msg(NLMSG_OVERRUN, &[]).control(), Some(Control::Noop));
        assert_eq!(msg(20, &[]).control(), None);
    }

    #[test]
    fn impossible_lengths_end_the_walk_with_the_offset() {
        let good = request(20, 0, 1, &[0; 4]);
        let mut bad = request(20, 0, 2, &[0; 4]);
        bad[0..4].copy_from_slice(&1000u32.to_ne_bytes());
        let buf = [good.clone(), bad, good].concat();
        let walked: Vec<_> = messages(&buf).map(|m| m.map(|m| m.seq)).collect();
        assert_eq!(walked, [Ok(1), Err(20)]);
        // A tail too short for a header.
        let buf = [request(20, 0, 1, &[]), vec![0; 8]].concat();
        let walked: Vec<_> = messages(&buf).map(|m| m.map(|m| m.seq)).collect();
        assert_eq!(walked, [Ok(1), Err(16)]);
    }

    #[test]
    fn attributes_walk_and_stop_at_a_truncated_one() {
        // Two attributes (the second without its trailing pad), then nothing.
        let mut buf = Vec::new();
        buf.extend_from_slice(&6u16.to_ne_bytes());
        buf.extend_from_slice(&(1u16 | 0x8000).to_ne_bytes());
        buf.extend_from_slice(&[0xaa, 0xbb, 0, 0]);
        buf.extend_from_slice(&5u16.to_ne_bytes());
        buf.extend_from_slice(&2u16.to_ne_bytes());
        buf.push(0xcc);
        let got: Vec<_> = attributes(&buf).collect();
        assert_eq!(got, [Ok((1, &[0xaa, 0xbb][..])), Ok((2, &[0xcc][..]))]);
        let mut bad = buf.clone();
        bad[8..10].copy_from_slice(&64u16.to_ne_bytes());
        let got: Vec<_> = attributes(&bad).collect();
        assert_eq!(
            got,
            [
                Ok((1, &[0xaa, 0xbb][..])),
                Err(Malformed("truncated attribute"))
            ]
        );
    }

    #[test]
    fn big_endian_values_need_their_exact_size() {
        assert_eq!(be16(&[1, 2], "x"), Ok(0x0102));
        assert_eq!(be32(&[0, 0, 1, 2], "x"), Ok(0x0102));
        assert_eq!(be64(&[0, 0, 0, 0, 0, 0, 1, 2], "x"), Ok(0x0102));
        assert_eq!(be32(&[1, 2], "short"), Err(Malformed("short")));
    }
}
