//! Other network namespaces of this host ("containers"): which exist, which are wired to
//! ours, what they are called, which addresses they hold, and their sockets.
//!
//! A container's flows pass through this host's conntrack (forwarded, NATed) while its
//! sockets live in its own namespace, where the host's socket tables do not show them.
//! This module reads what is needed to charge them, without entering any namespace:
//!
//! - Namespaces: `readlink /proc/PID/ns/net` (`net:[INODE]`) for every process, grouped by
//!   inode, the lowest pid standing for each. Reading another user's link needs
//!   `PTRACE_MODE_READ` (CAP_SYS_PTRACE, which the units hold for `/proc/PID/fd`); refusals
//!   are counted.
//! - Sockets: `/proc/PID/net/{tcp,tcp6,udp,udp6}` show the sockets of PID's namespace, and
//!   anyone may read them (no capability: measured, see docs/how-it-works.md, "Privileges"). Their uid column is
//!   mapped into the *reader's* user namespace (`seq_user_ns`), so netledger, in the initial
//!   one, reads each socket's uid as the host sees it, however the container maps its uids.
//!   Entering the namespace (`setns`) and asking sock_diag there would need CAP_SYS_ADMIN.
//! - Addresses: `/proc/PID/net/fib_trie` (IPv4: the `/32 host LOCAL` leaves) and
//!   `/proc/PID/net/if_inet6` (IPv6), so a flow's inner address names its namespace.
//! - Wired: a container is a namespace linked to ours by a veth pair (docker, podman,
//!   LXC/Incus, nspawn, `ip netns` with a veth): one of our links has its peer there
//!   (`IFLA_LINK_NETNSID` of an `RTM_GETLINK` dump equals the namespace's id, asked with
//!   `RTM_GETNSID`). A namespace standing for another machine (behind a switch, a router's
//!   LAN client) is not wired to us, and its traffic stays forwarded.
//! - Names: the `ip netns` name (a bind mount under `/run/netns` with the namespace's
//!   inode), else the container from the cgroup of its process (`docker-<id>`,
//!   `libpod-<id>`, `machine-<name>`, `lxc.payload.<name>`), else `netns:[INODE]`.
//! - Uid maps: `/proc/PID/uid_map` turns a host uid into the container's; `/etc/subuid`
//!   says whose subordinate range a uid is in.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::netlink::{self, attributes, messages, protocols, Control};
use super::sockets::{read_sockets, SocketTable, SocketsError};

/// One network namespace other than ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// Its inode (`net:[INODE]`).
    pub inode: u64,
    /// The lowest pid in it: whose `/proc/PID/net` and `uid_map` are read.
    pub pid: u32,
    /// Every process in it, ascending (whose descriptors name its sockets' programs).
    pub pids: Vec<u32>,
}

/// The namespaces of the host's processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespaces {
    /// Every namespace but ours, by inode.
    pub others: Vec<Namespace>,
    /// Processes whose namespace could not be read (EACCES/EPERM: CAP_SYS_PTRACE missing).
    pub denied: usize,
}

/// The inode of a `net:[INODE]` link target.
pub fn parse_ns_link(target: &[u8]) -> Option<u64> {
    let inner = target.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

/// The inode of our own network namespace (`proc_root/self/ns/net`).
pub fn own_inode(proc_root: &Path) -> io::Result<u64> {
    let target = std::fs::read_link(proc_root.join("self/ns/net"))?;
    parse_ns_link(target.as_os_str().as_bytes())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not a net:[INODE] link"))
}

/// Every network namespace of a process under `proc_root` but `own`, each with its lowest
/// pid. Processes that vanish meanwhile are skipped.
pub fn list(proc_root: &Path, own: u64) -> io::Result<Namespaces> {
    let mut members: HashMap<u64, Vec<u32>> = HashMap::new();
    let mut denied = 0;
    for entry in std::fs::read_dir(proc_root)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = std::str::from_utf8(entry.file_name().as_bytes())
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        match std::fs::read_link(entry.path().join("ns/net")) {
            Ok(target) => {
                if let Some(inode) = parse_ns_link(target.as_os_str().as_bytes()) {
                    if inode != own {
                        members.entry(inode).or_default().push(pid);
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied += 1,
            Err(_) => {}
        }
    }
    let mut others: Vec<Namespace> = members
        .into_iter()
        .map(|(inode, mut pids)| {
            pids.sort_unstable();
            Namespace {
                inode,
                pid: pids[0],
                pids,
            }
        })
        .collect();
    others.sort_by_key(|n| n.inode);
    Ok(Namespaces { others, denied })
}

/// The `ip netns` names: each file under `run_netns` is a bind mount of a namespace, whose
/// inode it shows. A missing directory names none.
pub fn netns_names(run_netns: &Path) -> HashMap<u64, String> {
    let Ok(dir) = std::fs::read_dir(run_netns) else {
        return HashMap::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let inode = std::fs::metadata(e.path()).ok()?.ino();
        Some((inode, e.file_name().to_string_lossy().into_owned()))
    })
    .collect()
}

/// The container a process belongs to, from its `/proc/PID/cgroup` text: the innermost
/// path component that names one. Ids are shortened to 12 characters as `docker ps` shows
/// them; systemd's `\x2d` escapes are undone.
pub fn container_of_cgroup(text: &str) -> Option<String> {
    // cgroup v2 ("0::/path") first, then any v1 hierarchy's path.
    let mut paths: Vec<&str> = text
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .collect();
    paths.sort_by_key(|p| !text.contains(&format!("0::{p}")));
    for path in paths {
        for part in path.rsplit('/') {
            if let Some(name) = container_of_component(part) {
                return Some(name);
            }
        }
        // The cgroupfs driver: /docker/<id>.
        let parts: Vec<&str> = path.split('/').collect();
        if let Some(w) = parts.windows(2).find(|w| w[0] == "docker" && is_id(w[1])) {
            return Some(format!("docker-{}", &w[1][..12]));
        }
    }
    None
}

fn is_id(s: &str) -> bool {
    s.len() >= 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn container_of_component(part: &str) -> Option<String> {
    let unescape = |s: &str| s.replace("\\x2d", "-");
    if let Some(name) = part.strip_prefix("lxc.payload.") {
        return (!name.is_empty()).then(|| format!("lxc.payload.{}", unescape(name)));
    }
    let scope = part.strip_suffix(".scope")?;
    for runtime in ["docker", "libpod", "cri-containerd", "crio"] {
        if let Some(id) = scope
            .strip_prefix(runtime)
            .and_then(|s| s.strip_prefix('-'))
        {
            if is_id(id) {
                return Some(format!("{runtime}-{}", &id[..12]));
            }
        }
    }
    let name = scope.strip_prefix("machine-")?;
    (!name.is_empty()).then(|| format!("machine-{}", unescape(name)))
}

/// The name of namespace `ns`: its `ip netns` name, else its process's container, else
/// `netns:[INODE]`.
pub fn name_of(proc_root: &Path, ns: &Namespace, names: &HashMap<u64, String>) -> String {
    if let Some(n) = names.get(&ns.inode) {
        return n.clone();
    }
    std::fs::read_to_string(proc_root.join(ns.pid.to_string()).join("cgroup"))
        .ok()
        .and_then(|t| container_of_cgroup(&t))
        .unwrap_or_else(|| format!("netns:[{}]", ns.inode))
}

/// One line of a `uid_map`: `inside outside count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// First uid inside the namespace.
    pub inside: u32,
    /// The host uid it is.
    pub outside: u32,
    /// How many follow.
    pub count: u32,
}

/// Parse a `/proc/PID/uid_map`; unparsable lines are skipped.
pub fn parse_uid_map(text: &str) -> Vec<UidRange> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace().map(|x| x.parse::<u32>().ok());
            Some(UidRange {
                inside: f.next()??,
                outside: f.next()??,
                count: f.next()??,
            })
        })
        .collect()
}

/// The uid inside the namespace of host uid `uid`, through `map`; `None` when unmapped.
pub fn inside_uid(map: &[UidRange], uid: u32) -> Option<u32> {
    map.iter().find_map(|r| {
        let off = uid.checked_sub(r.outside)?;
        (off < r.count).then(|| r.inside + off)
    })
}

/// The uid map of namespace `ns`'s process (identity when it cannot be read).
pub fn uid_map(proc_root: &Path, ns: &Namespace) -> Vec<UidRange> {
    std::fs::read_to_string(proc_root.join(ns.pid.to_string()).join("uid_map"))
        .map(|t| parse_uid_map(&t))
        .unwrap_or_else(|_| {
            vec![UidRange {
                inside: 0,
                outside: 0,
                count: u32::MAX,
            }]
        })
}

/// The sockets of namespace `ns` (`/proc/PID/net/*`).
pub fn sockets(proc_root: &Path, ns: &Namespace) -> Result<SocketTable, SocketsError> {
    read_sockets(&proc_root.join(ns.pid.to_string()))
}

/// A sock_diag socket of namespace `ns`: the calling thread enters the namespace
/// (`setns`, which needs CAP_SYS_ADMIN), opens the socket, which stays in it, and comes
/// back. Lookups and dumps on it are then as cheap as on the host's (microseconds), where
/// reading `/proc/PID/net/tcp` walks the kernel's whole established hash (~20 ms a table
/// here, however few sockets the namespace has).
pub fn sock_diag_in(proc_root: &Path, ns: &Namespace) -> io::Result<super::sockdiag::SockDiag> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    use std::os::fd::AsFd;
    let own = std::fs::File::open(proc_root.join("thread-self/ns/net"))?;
    let there = std::fs::File::open(proc_root.join(ns.pid.to_string()).join("ns/net"))?;
    move_into_link_name_space(there.as_fd(), Some(LinkNameSpaceType::Network))?;
    let diag = super::sockdiag::SockDiag::open();
    if let Err(e) = move_into_link_name_space(own.as_fd(), Some(LinkNameSpaceType::Network)) {
        // Every socket this thread opens from now on would be the container's: stop.
        panic!(
            "cannot return to netledger's own network namespace after reading a container's: {e}"
        );
    }
    diag.map_err(|e| io::Error::other(e.to_string()))
}

/// The local IPv4 addresses of a `fib_trie` text: the `/32 host LOCAL` leaves (loopback
/// left out).
pub fn parse_fib_trie_local(text: &str) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    let mut last: Option<IpAddr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                out.insert(ip);
            }
        }
    }
    out
}

/// The IPv6 addresses of an `if_inet6` text (loopback left out).
pub fn parse_if_inet6(text: &str) -> HashSet<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            let v = u128::from_str_radix(hex, 16).ok()?;
            let ip = IpAddr::V6(Ipv6Addr::from(v));
            (hex.len() == 32 && !ip.is_loopback()).then_some(ip)
        })
        .collect()
}

/// The addresses of namespace `ns`'s interfaces (missing files give none).
pub fn addresses(proc_root: &Path, ns: &Namespace) -> HashSet<IpAddr> {
    let net = proc_root.join(ns.pid.to_string()).join("net");
    let mut out = std::fs::read_to_string(net.join("fib_trie"))
        .map(|t| parse_fib_trie_local(&t))
        .unwrap_or_default();
    if let Ok(t) = std::fs::read_to_string(net.join("if_inet6")) {
        out.extend(parse_if_inet6(&t));
    }
    out
}

/// Subordinate uid ranges (`/etc/subuid`: `owner:first:count`, the owner a name or a uid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubUids {
    /// (first, count, owner uid), in file order.
    ranges: Vec<(u32, u32, u32)>,
}

impl SubUids {
    /// Parse the file's text; `uid_of` names accounts. Lines naming no known account, and
    /// malformed ones, are skipped.
    pub fn parse(text: &str, uid_of: &dyn Fn(&str) -> Option<u32>) -> SubUids {
        let ranges = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .filter_map(|l| {
                let mut f = l.trim().splitn(3, ':');
                let (owner, first, count) = (f.next()?, f.next()?, f.next()?);
                let owner = owner.parse().ok().or_else(|| uid_of(owner))?;
                Some((first.parse().ok()?, count.parse().ok()?, owner))
            })
            .collect();
        SubUids { ranges }
    }

    /// Read `/etc/subuid` (none when it is missing).
    pub fn read(path: &Path) -> SubUids {
        std::fs::read_to_string(path)
            .map(|t| SubUids::parse(&t, &super::users::uid_of))
            .unwrap_or_default()
    }

    /// The host's `/etc/subuid`, shared: read again when its modification time changed
    /// (one `stat` a call: a pass, or a batch of the daemon's events).
    pub fn host() -> std::sync::Arc<SubUids> {
        use std::sync::{Arc, Mutex};
        type Cached = (Option<std::time::SystemTime>, Arc<SubUids>);
        static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
        const PATH: &str = "/etc/subuid";
        let mtime = std::fs::metadata(PATH).and_then(|m| m.modified()).ok();
        let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        match c.as_ref() {
            Some((seen, s)) if *seen == mtime && mtime.is_some() => s.clone(),
            _ => {
                let s = Arc::new(SubUids::read(Path::new(PATH)));
                *c = Some((mtime, s.clone()));
                s
            }
        }
    }

    /// The owner of the range `uid` is in.
    pub fn owner_of(&self, uid: u32) -> Option<u32> {
        self.ranges.iter().find_map(|&(first, count, owner)| {
            (uid >= first && uid - first < count).then_some(owner)
        })
    }
}

// ---- wiring: RTM_GETLINK / RTM_GETNSID (include/uapi/linux/rtnetlink.h, if_link.h,
// net_namespace.h) ----

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const IFLA_LINK_NETNSID: u16 = 37;
const NETNSA_NSID: u16 = 1;
const NETNSA_PID: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

/// Asks the kernel which namespaces our links have their peers in.
pub struct Wiring {
    socket: netlink::Socket,
    buf: Vec<u8>,
    seq: u32,
    /// `IFLA_LINK_NETNSID` of our links: the ids (ours) of the namespaces they lead to.
    peers: HashSet<i32>,
}

impl Wiring {
    /// Dump our links (`RTM_GETLINK`) and keep the namespace ids of their peers.
    pub fn read() -> io::Result<Wiring> {
        let socket = netlink::Socket::new(protocols::NETLINK_ROUTE)?;
        netlink::set_recv_timeout(&socket, std::time::Duration::from_secs(2))?;
        let mut w = Wiring {
            socket,
            buf: vec![0; 64 * 1024],
            seq: 0,
            peers: HashSet::new(),
        };
        // struct ifinfomsg: family, pad, type, index, flags, change (16 bytes).
        let req = netlink::request(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, &[0u8; 16]);
        w.socket.send(&req, 0)?;
        'dump: loop {
            let n = netlink::recv(&w.socket, &mut w.buf)?.min(w.buf.len());
            for m in messages(&w.buf[..n]) {
                let Ok(m) = m else { break 'dump };
                match m.control() {
                    Some(Control::Done(_)) => break 'dump,
                    Some(Control::Error(e)) => return Err(io::Error::from_raw_os_error(-e)),
                    Some(_) => continue,
                    None if m.kind == RTM_NEWLINK && m.payload.len() >= 16 => {
                        for (kind, value) in attributes(&m.payload[16..]).flatten() {
                            if kind == IFLA_LINK_NETNSID {
                                if let Some(id) = value.first_chunk::<4>() {
                                    w.peers.insert(i32::from_ne_bytes(*id));
                                }
                            }
                        }
                    }
                    None => {}
                }
            }
        }
        Ok(w)
    }

    /// Whether one of our links has its peer in the namespace of process `pid`.
    pub fn wired(&mut self, pid: u32) -> bool {
        self.nsid(pid).is_some_and(|id| self.peers.contains(&id))
    }

    /// Our id of the namespace of `pid` (`RTM_GETNSID`), if it has one.
    fn nsid(&mut self, pid: u32) -> Option<i32> {
        self.seq = self.seq.wrapping_add(1);
        // struct rtgenmsg { family } padded to 4, then NETNSA_PID.
        let mut payload = vec![0u8; 4];
        payload.extend_from_slice(&8u16.to_ne_bytes());
        payload.extend_from_slice(&NETNSA_PID.to_ne_bytes());
        payload.extend_from_slice(&pid.to_ne_bytes());
        let req = netlink::request(RTM_GETNSID, NLM_F_REQUEST, self.seq, &payload);
        self.socket.send(&req, 0).ok()?;
        loop {
            let n = netlink::recv(&self.socket, &mut self.buf)
                .ok()?
                .min(self.buf.len());
            let m = messages(&self.buf[..n]).next()?.ok()?;
            if m.seq != self.seq {
                continue;
            }
            if m.kind != RTM_NEWNSID || m.payload.len() < 4 {
                return None;
            }
            return attributes(&m.payload[4..])
                .flatten()
                .find(|(k, _)| *k == NETNSA_NSID)
                .and_then(|(_, v)| v.first_chunk::<4>().map(|b| i32::from_ne_bytes(*b)))
                .filter(|id| *id >= 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ns_links_parse() {
        assert_eq!(parse_ns_link(b"net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link(b"mnt:[4026531840]"), None);
        assert_eq!(parse_ns_link(b"net:[x]"), None);
    }

    #[test]
    fn containers_are_named_from_their_cgroups() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let cases = [
            (
                format!("0::/system.slice/docker-{id}.scope\n"),
                Some("docker-0123456789ab"),
            ),
            (
                format!("0::/machine.slice/libpod-{id}.scope/container\n"),
                Some("libpod-0123456789ab"),
            ),
            (
                "0::/machine.slice/machine-web\\x2d1.scope/payload\n".to_string(),
                Some("machine-web-1"),
            ),
            (
                "0::/lxc.payload.u1/init.scope\n".to_string(),
                Some("lxc.payload.u1"),
            ),
            (
                format!("12:memory:/docker/{id}\n0::/\n"),
                Some("docker-0123456789ab"),
            ),
            (
                "0::/user.slice/user-1000.slice/session-3.scope\n".to_string(),
                None,
            ),
            ("0::/\n".to_string(), None),
        ];
        for (text, want) in cases {
            assert_eq!(container_of_cgroup(&text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn uid_maps_translate_host_uids() {
        let map =
            parse_uid_map("         0       1000          1\n         1     100000      65536\n");
        assert_eq!(inside_uid(&map, 1000), Some(0));
        assert_eq!(inside_uid(&map, 100000), Some(1));
        assert_eq!(inside_uid(&map, 100999), Some(1000));
        assert_eq!(inside_uid(&map, 165536), None);
        let identity = parse_uid_map("         0          0 4294967295\n");
        assert_eq!(inside_uid(&identity, 100005), Some(100005));
    }

    #[test]
    fn subordinate_ranges_name_their_owner() {
        let sub = SubUids::parse(
            "alice:100000:65536\n# comment\n1002:165536:65536\nghost:300000:10\nbad line\n",
            &|n| (n == "alice").then_some(1001),
        );
        assert_eq!(sub.owner_of(100000), Some(1001));
        assert_eq!(sub.owner_of(165535), Some(1001));
        assert_eq!(sub.owner_of(165536), Some(1002));
        assert_eq!(sub.owner_of(300001), None);
        assert_eq!(sub.owner_of(1001), None);
    }

    #[test]
    fn fib_trie_and_if_inet6_give_local_addresses() {
        // Captured from a container namespace (Linux 6.x): `cat /proc/PID/net/fib_trie`.
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     \
                    +-- 127.0.0.0/8 2 0 2\n        +-- 127.0.0.0/31 1 0 0\n           |-- 127.0.0.0\n              \
                    /8 host LOCAL\n           |-- 127.0.0.1\n              /32 host LOCAL\n     \
                    +-- 172.31.5.0/24 2 0 2\n        |-- 172.31.5.0\n           /24 link UNICAST\n        \
                    |-- 172.31.5.2\n           /32 host LOCAL\n        |-- 172.31.5.255\n           \
                    /32 link BROADCAST\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n        |-- 172.31.5.2\n           /32 host LOCAL\n";
        let got = parse_fib_trie_local(trie);
        assert_eq!(
            got,
            ["172.31.5.2".parse().unwrap()]
                .into_iter()
                .collect::<HashSet<IpAddr>>()
        );
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n\
                     20010db8000500000000000000000002 02 40 00 80     eth0\n";
        assert_eq!(
            parse_if_inet6(inet6),
            ["2001:db8:5::2".parse().unwrap()]
                .into_iter()
                .collect::<HashSet<IpAddr>>()
        );
    }
}
