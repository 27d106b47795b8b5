//! The kernel's socket tables: `/proc/net/{tcp,tcp6,udp,udp6}` (and UDP-Lite's, and the
//! ping sockets' `icmp`, `icmp6`) → [`Socket`] rows.
//!
//! This module owns reading and parsing those files. It parses them line by line itself
//! instead of using procfs's table reader, because procfs rejects a whole file on one line it
//! does not like (e.g. a UDP state other than 1 or 7); here a malformed line is logged, recorded
//! in [`SocketTable::bad_lines`] and skipped, and every other row survives.
//!
//! Row format (net/ipv4/tcp_ipv4.c `get_tcp4_sock`, net/ipv6/tcp_ipv6.c `get_tcp6_sock`,
//! net/ipv4/udp.c `udp4_format_sock`, net/ipv6/datagram.c `__ip6_dgram_sock_seq_show`):
//!
//! ```text
//!   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ...
//!    0: 0100007F:1B58 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8559 ...
//! ```
//!
//! Each 32-bit address word is the network-order word loaded as a host integer and printed with
//! `%08X`, so the digits depend on the byte order of the kernel that printed them: 127.0.0.1 is
//! `0100007F` on little-endian and `7F000001` on big-endian. IPv6 addresses are four such words.
//! Ports are plain hex (`ntohs` already applied).

use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::model::{canonical_ip, Socket, L4};

/// Byte order of the kernel that printed a socket table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Little-endian (x86, most arm64 and riscv).
    Little,
    /// Big-endian (s390x, some ppc64 and mips).
    Big,
}

impl Endian {
    /// The byte order of this machine: the one `/proc` of the running kernel uses.
    pub fn native() -> Endian {
        if cfg!(target_endian = "big") {
            Endian::Big
        } else {
            Endian::Little
        }
    }
}

/// A line of a socket table that could not be parsed; it was logged and skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The file it came from (as given to [`parse_table`]).
    pub file: String,
    /// 1-based line number in that file (the header is line 1).
    pub line: usize,
    /// The line itself, trailing padding removed.
    pub text: String,
    /// Why it was rejected.
    pub reason: String,
}

/// The parsed rows of one or more socket tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketTable {
    /// Every row that parsed, in file order (`tcp`, `tcp6`, `udp`, `udp6` for [`read_sockets`]).
    pub sockets: Vec<Socket>,
    /// Every line that did not.
    pub bad_lines: Vec<BadLine>,
}

impl SocketTable {
    /// Append another table's rows and bad lines to this one.
    pub fn append(&mut self, mut other: SocketTable) {
        self.sockets.append(&mut other.sockets);
        self.bad_lines.append(&mut other.bad_lines);
    }
}

/// Why the socket tables could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    /// A table that every kernel with IPv4 has (`net/tcp`, `net/udp`) does not exist:
    /// the proc root is wrong, or /proc is not mounted.
    #[error("{} does not exist: is {} a proc root (mounted procfs, or /proc/PID)?", path.display(), root.display())]
    Missing {
        /// The missing file.
        path: PathBuf,
        /// The proc root it was looked for in.
        root: PathBuf,
    },
    /// A table exists but could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The tables, in the order they are read. `required: false` tables are absent when the
/// kernel has no IPv6 (`ipv6.disable=1`, or CONFIG_IPV6=n), or no UDP-Lite (removed in
/// some kernels): that is not an error.
const TABLES: [(&str, L4, bool); 6] = [
    ("tcp", L4::Tcp, true),
    ("tcp6", L4::Tcp, false),
    ("udp", L4::Udp, true),
    ("udp6", L4::Udp, false),
    ("udplite", L4::UdpLite, false),
    ("udplite6", L4::UdpLite, false),
];

/// The ping sockets' tables (unprivileged ICMP, `net.ipv4.ping_group_range`), read apart
/// from the others and only when a flow needs them: they are small, but most passes have
/// no ICMP flow to attribute. Absent without IPv6, or in kernels built without ping
/// sockets: not an error.
const PING_TABLES: [(&str, L4, bool); 2] =
    [("icmp", L4::Icmp, false), ("icmp6", L4::Icmpv6, false)];

/// Read `proc_root/net/{tcp,tcp6,udp,udp6,udplite,udplite6}` and parse every row.
///
/// `proc_root` is `/proc` for our own network namespace, `/proc/PID` for PID's, or a fixture
/// directory. The tables are parsed in the byte order of this machine ([`Endian::native`]).
/// A missing `tcp6`/`udp6` gives no rows; a missing `tcp`/`udp` or an unreadable file is an
/// error. Malformed lines are not errors: see [`parse_table`].
pub fn read_sockets(proc_root: &Path) -> Result<SocketTable, SocketsError> {
    read_tables(proc_root, &TABLES)
}

/// Read the ping sockets of `proc_root/net/{icmp,icmp6}` ([`L4::Icmp`], [`L4::Icmpv6`]):
/// rows as [`read_sockets`]'s (the local port is the echo identifier). Missing files give
/// no rows.
pub fn read_ping_sockets(proc_root: &Path) -> Result<SocketTable, SocketsError> {
    read_tables(proc_root, &PING_TABLES)
}

/// The ping sockets of `proc_root` ([`read_ping_sockets`]) when one of `flows` (those a pass
/// has no owner for yet) is an ICMP or ICMPv6 flow from this host (`is_host`); `None`
/// otherwise, or when the tables cannot be read (said at debug: the owner mark is left).
/// Most passes have no such flow and read nothing.
pub fn ping_sockets_for<'f>(
    proc_root: &Path,
    mut flows: impl Iterator<Item = &'f crate::model::Flow>,
    is_host: impl Fn(IpAddr) -> bool,
) -> Option<SocketTable> {
    let ping = |f: &crate::model::Flow| L4::from_ipproto(f.orig.proto).is_some_and(L4::is_ping);
    if !flows.any(|f| ping(f) && is_host(f.orig.src)) {
        return None;
    }
    read_ping_sockets(proc_root)
        .inspect_err(|e| tracing::debug!("ping sockets not read: {e}"))
        .ok()
}

/// The ping sockets of a namespace by protocol and echo id, for the owner of one ICMP flow
/// at a time (the daemon's and `live`'s NEW events: sock_diag does not list ping sockets).
#[derive(Debug, Default)]
pub struct PingSockets {
    by_id: crate::model::FastMap<(L4, u16), Vec<Socket>>,
}

impl PingSockets {
    /// Read `proc_root/net/{icmp,icmp6}` ([`read_ping_sockets`]); none when they cannot be
    /// read (said at debug: the flows are left to the owner mark and the passes).
    pub fn read(proc_root: &Path) -> PingSockets {
        match read_ping_sockets(proc_root) {
            Ok(t) => PingSockets::new(t.sockets),
            Err(e) => {
                tracing::debug!("ping sockets not read: {e}");
                PingSockets::default()
            }
        }
    }

    /// Group `sockets` (ping sockets with owners; others are left out) by echo id.
    pub fn new(sockets: Vec<Socket>) -> PingSockets {
        let mut by_id = crate::model::FastMap::<(L4, u16), Vec<Socket>>::default();
        for s in sockets
            .into_iter()
            .filter(|s| s.proto.is_ping() && s.has_owner())
        {
            by_id.entry((s.proto, s.local.port())).or_default().push(s);
        }
        PingSockets { by_id }
    }

    /// The ping socket that sent `flow`'s echo requests: its protocol and id (the original
    /// source port), its local address the flow's source or unspecified, and, when
    /// connected, the flow's destination as its remote end. Only for a source that is this
    /// host's (`is_host`). As the pass's socket index rules: a connected socket before an
    /// unconnected one, and sockets of different owners sharing the id (both with
    /// `SO_REUSEADDR`) name no owner.
    pub fn owner_of(
        &self,
        flow: &crate::model::Flow,
        is_host: impl Fn(IpAddr) -> bool,
    ) -> Option<&Socket> {
        let l4 = L4::from_ipproto(flow.orig.proto).filter(|l| l.is_ping())?;
        let o = &flow.orig;
        if !is_host(o.src) {
            return None;
        }
        let unset = |a: &SocketAddr| a.port() == 0 && a.ip().is_unspecified();
        let same_id = self.by_id.get(&(l4, o.sport))?;
        let local = |s: &&Socket| s.local.ip() == o.src || s.local.ip().is_unspecified();
        let connected = |s: &&Socket| s.remote == o.dst_sa();
        let unconnected = |s: &&Socket| unset(&s.remote);
        for class in [&connected as &dyn Fn(&&Socket) -> bool, &unconnected] {
            let mut m = same_id.iter().filter(|s| local(s) && class(s));
            if let Some(first) = m.next() {
                return m.all(|s| s.uid == first.uid).then_some(first);
            }
        }
        None
    }
}

fn read_tables(proc_root: &Path, tables: &[(&str, L4, bool)]) -> Result<SocketTable, SocketsError> {
    let net = proc_root.join("net");
    let mut table = SocketTable::default();
    for &(name, proto, required) in tables {
        let path = net.join(name);
        let text = match read_text(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !required => {
                tracing::debug!(path = %path.display(), "no such socket table (IPv6 disabled?)");
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SocketsError::Missing {
                    path,
                    root: proc_root.to_path_buf(),
                })
            }
            Err(source) => return Err(SocketsError::Read { path, source }),
        };
        let file = path.display().to_string();
        table.append(parse_table(&text, proto, Endian::native(), &file));
    }
    Ok(table)
}

/// Read a whole file into one String. Procfs files report size 0, so start with a buffer big
/// enough for a few hundred rows and let it grow. Bytes that are not UTF-8 become U+FFFD, so
/// they show up as bad lines instead of failing the whole file.
fn read_text(path: &Path) -> io::Result<String> {
    let mut buf = Vec::with_capacity(64 * 1024);
    File::open(path)?.read_to_end(&mut buf)?;
    Ok(match String::from_utf8(buf) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

/// Parse the text of one socket table (`/proc/net/tcp`, `tcp6`, `udp` or `udp6`).
///
/// Pure. Each row is IPv4 or IPv6 according to the length of its addresses, so the same
/// function reads all four files; `proto` says which transport the file holds and `endian`
/// the byte order of the kernel that printed it. IPv4-mapped IPv6 addresses become IPv4
/// ([`canonical_ip`]). A header line (first line, starting with `sl`) and blank lines are
/// skipped; any other line that does not parse is logged with `file` and its line number,
/// recorded in [`SocketTable::bad_lines`], and parsing goes on.
pub fn parse_table(text: &str, proto: L4, endian: Endian, file: &str) -> SocketTable {
    // Rows are 150 bytes (tcp) to 180 bytes (udp6) long: avoid regrowing the Vec.
    let mut table = SocketTable {
        sockets: Vec::with_capacity(text.len() / 128 + 1),
        bad_lines: Vec::new(),
    };
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim_start();
        if trimmed.is_empty() || (number == 1 && trimmed.starts_with("sl ")) {
            continue;
        }
        match parse_row(line, proto, endian) {
            Ok(socket) => table.sockets.push(socket),
            Err(reason) => {
                tracing::warn!(
                    file,
                    line = number,
                    reason,
                    "skipping malformed socket table line"
                );
                table.bad_lines.push(BadLine {
                    file: file.to_owned(),
                    line: number,
                    text: line.trim_end().to_owned(),
                    reason: reason.to_owned(),
                });
            }
        }
    }
    table
}

/// Parse one data row. The error is a static reason so that good rows never allocate.
fn parse_row(line: &str, proto: L4, endian: Endian) -> Result<Socket, &'static str> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = |missing: &'static str| fields.next().ok_or(missing);

    let slot = next("missing sl field")?;
    match slot.strip_suffix(':') {
        Some(n) if parse_dec(n).is_some() => {}
        _ => return Err("sl field is not `N:`"),
    }
    let local = parse_address(next("missing local address")?.as_bytes(), endian)
        .ok_or("bad local address")?;
    let remote = parse_address(next("missing remote address")?.as_bytes(), endian)
        .ok_or("bad remote address")?;
    if local.is_ipv4() != remote.is_ipv4() {
        return Err("local and remote addresses differ in length");
    }
    let state = parse_hex(next("missing st field")?.as_bytes(), 2).ok_or("bad st field")? as u8;
    next("missing tx_queue:rx_queue field")?;
    next("missing tr:tm->when field")?;
    next("missing retrnsmt field")?;
    let uid = parse_dec(next("missing uid field")?)
        .and_then(|u| u32::try_from(u).ok())
        .ok_or("bad uid field")?;
    next("missing timeout field")?;
    let inode = parse_dec(next("missing inode field")?).ok_or("bad inode field")?;

    Ok(Socket {
        proto,
        local,
        remote,
        state,
        uid,
        inode,
        cgroup: 0,
    })
}

/// `HEX:PORT` with 8 (IPv4) or 32 (IPv6) address digits → canonical socket address.
fn parse_address(field: &[u8], endian: Endian) -> Option<SocketAddr> {
    let colon = field.iter().position(|&b| b == b':')?;
    let (addr, port) = (&field[..colon], &field[colon + 1..]);
    let port = parse_hex(port, 4)? as u16;
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word_bytes(addr, endian)?)),
        32 => {
            let mut octets = [0u8; 16];
            for (chunk, out) in addr.chunks_exact(8).zip(octets.chunks_exact_mut(4)) {
                out.copy_from_slice(&word_bytes(chunk, endian)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(canonical_ip(ip), port))
}

/// One `%08X` address word → the four bytes as they were in memory (network order).
fn word_bytes(hex: &[u8], endian: Endian) -> Option<[u8; 4]> {
    let word = parse_hex(hex, 8)?;
    Some(match endian {
        Endian::Little => word.to_le_bytes(),
        Endian::Big => word.to_be_bytes(),
    })
}

/// 1 to `max_digits` hex digits (either case) → value. No sign, no prefix, no allocation.
fn parse_hex(digits: &[u8], max_digits: usize) -> Option<u32> {
    if digits.is_empty() || digits.len() > max_digits {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(acc << 4 | u32::from(d))
    })
}

/// Decimal digits → u64; `None` on anything else or on overflow.
fn parse_dec(digits: &str) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.bytes().try_fold(0u64, |acc, b| {
        if !b.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests;
