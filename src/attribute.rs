//! The pure join: conntrack flow ↔ socket ↔ uid/program, and local-network exclusion.
//!
//! A flow is matched against both of its tuples (SPEC "Join"):
//! - outgoing (a local socket initiated it): original tuple src/dst = socket local/remote;
//! - incoming (a local server answered): reply tuple src/dst = socket local/remote, which
//!   still holds after DNAT because the reply tuple carries the translated address.
//!
//! Match order: exact 4-tuple with a live socket, then the attribution the flow already had
//! (its socket may be gone or in TIME_WAIT), then the owner mark (when believed), then local
//! address + port of an unconnected socket (unconnected UDP, listeners), then the wildcard
//! address (`0.0.0.0` / `::`) + port. The last two only for a local end that is one of the
//! host's interface addresses, and for TCP only for an incoming flow (a listener answers).
//! TIME_WAIT and request sockets (inode 0, uid 0) are never evidence of an owner.
//! No match means unattributed with a reason: a uid is never guessed.
//!
//! Services that hand connections to users (sshd accepts as root, then the user's own
//! process reads and writes the socket): a socket of a *delegating* uid is charged through
//! the processes holding it ([`delegate`]): exactly one other uid among them is charged, with
//! the socket's uid kept as [`Via::Delegated`]; several are ambiguous and leave the socket's
//! uid charged; none leave the flow [`Via::Pending`], which `account` holds back for a
//! grace period before it calls it the service's own.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::model::{FastMap, FastSet, Flow, Socket, L4};
use crate::sources::netns::SubUids;
use crate::sources::processes::{Holder, Owner};

/// Which side started the flow, seen from this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// A local socket initiated it: tx = original counters, rx = reply counters.
    Out,
    /// A remote peer initiated it to a local server: rx = original, tx = reply.
    In,
}

impl Direction {
    /// Name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }

    /// Inverse of [`Direction::as_str`].
    pub fn parse(s: &str) -> Option<Direction> {
        match s {
            "out" => Some(Direction::Out),
            "in" => Some(Direction::In),
            _ => None,
        }
    }
}

/// Who a flow belongs to, as remembered between passes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attribution {
    /// Who is charged: the socket's owner (from the socket table, not the process), or,
    /// for a delegating uid's socket, the one other uid whose processes hold it.
    pub uid: u32,
    /// The program holding the socket, when it could be read (metadata only).
    pub program: Option<String>,
    /// Which end initiated.
    pub direction: Direction,
    /// What a delegating service had to do with it ([`Via::Direct`] for every other socket).
    pub via: Via,
    /// The container (another network namespace of this host) whose socket the flow was
    /// found through; `None` for the host's own sockets.
    pub container: Option<Container>,
    /// The cgroup v2 of the process that created the socket, when known (sock_diag; the
    /// `/proc/net` tables carry none).
    pub cgroup: Option<Cgroup>,
}

/// A cgroup v2, as a flow attributed through a socket it made carries it: the path stored
/// (`cgroups`, migration 0016) and the job the resolver trusts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cgroup {
    /// The path relative to the cgroup2 root, leading `/` (`/system.slice/x.service`); a
    /// removed cgroup keeps its last path.
    pub path: std::sync::Arc<str>,
    /// The Slurm job, only under a root-owned `…slurmstepd.scope` (`sources::cgroups`).
    pub job: Option<u64>,
}

/// A network namespace of this host other than netledger's own ("a container"), as a flow
/// attributed through one of its sockets carries it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Container {
    /// A stable, readable name: the `ip netns` name, else from the cgroup of a process in
    /// it (`docker-<id>`, `libpod-<id>`, `machine-<name>`, `lxc.payload.<name>`), else
    /// `netns:[inode]` (see `sources::netns`).
    pub name: std::sync::Arc<str>,
    /// The socket's uid as the container sees it (through its user namespace's mapping):
    /// detail, for a uid of a subordinate range charged to the range's owner.
    pub inner_uid: u32,
}

impl Attribution {
    /// The uid of the socket the flow was attributed through.
    pub fn socket_uid(&self) -> u32 {
        self.via.through().unwrap_or(self.uid)
    }
}

/// How a flow on a delegating uid's socket was resolved (see [`delegate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Via {
    /// The socket's uid is not a delegating one: it is charged, as it always was.
    #[default]
    Direct,
    /// Processes of exactly one non-delegating uid hold the socket: that uid is charged,
    /// and this is the socket's (the service's) uid.
    Delegated(u32),
    /// No process of a non-delegating uid holds the socket (yet): the socket's uid, until
    /// one does. A young flow's charge is held back meanwhile (`account`).
    Pending,
    /// No non-delegating uid's process held it while it was young: the service's own
    /// traffic, charged to the socket's uid. Never looked up again.
    Own,
    /// Processes of several non-delegating uids hold it: the socket's uid is charged, under
    /// the reason `ambiguous-holders`.
    Ambiguous,
}

impl Via {
    /// The service uid a flow charged to a user came through.
    pub fn through(self) -> Option<u32> {
        match self {
            Via::Delegated(uid) => Some(uid),
            _ => None,
        }
    }

    /// The code stored in `flow_state.via` (migration 0007): NULL direct, the service's
    /// uid when delegated, -1 own, -2 ambiguous, -3 pending.
    pub fn code(self) -> Option<i64> {
        match self {
            Via::Direct => None,
            Via::Delegated(uid) => Some(i64::from(uid)),
            Via::Own => Some(-1),
            Via::Ambiguous => Some(-2),
            Via::Pending => Some(-3),
        }
    }

    /// Inverse of [`Via::code`]; an unknown code reads as direct.
    pub fn from_code(code: Option<i64>) -> Via {
        match code {
            Some(-1) => Via::Own,
            Some(-2) => Via::Ambiguous,
            Some(-3) => Via::Pending,
            Some(uid) => u32::try_from(uid).map_or(Via::Direct, Via::Delegated),
            None => Via::Direct,
        }
    }
}

/// The uids of services that hand connections to other users' processes (sshd: root).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Delegating(Vec<u32>);

impl Delegating {
    /// Exactly these uids (none turns delegation off).
    pub fn new(uids: impl IntoIterator<Item = u32>) -> Delegating {
        let mut v: Vec<u32> = uids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Delegating(v)
    }

    /// Whether `uid` is a delegating uid.
    pub fn contains(&self, uid: u32) -> bool {
        self.0.binary_search(&uid).is_ok()
    }

    /// The uids, sorted.
    pub fn uids(&self) -> &[u32] {
        &self.0
    }
}

/// No delegating uid: what an index has until [`SocketIndex::with_delegation`].
static NO_DELEGATION: Delegating = Delegating(Vec::new());

/// The rule for a socket of the delegating uid `socket_uid` and every process holding it
/// (pure). Holders running as a delegating uid (the service itself: sshd's listener and
/// its privileged monitor) are not users:
/// - exactly one other uid among the holders: it is charged, via the socket's uid, with
///   the program of its lowest pid;
/// - several: ambiguous, the socket's uid is charged;
/// - none: pending, the socket's uid (the service) for now.
pub fn delegate(
    socket_uid: u32,
    holders: &[Holder],
    delegating: &Delegating,
    direction: Direction,
) -> Attribution {
    let lowest = |uid: Option<u32>| {
        holders
            .iter()
            .filter(|h| uid.is_none_or(|u| h.uid == u))
            .min_by_key(|h| h.pid)
            .map(|h| h.program.clone())
    };
    let mut users = holders
        .iter()
        .map(|h| h.uid)
        .filter(|u| !delegating.contains(*u));
    let first = users.next();
    let several = first.is_some_and(|f| users.any(|u| u != f));
    let (uid, program, via) = match (first, several) {
        (Some(user), false) => (user, lowest(Some(user)), Via::Delegated(socket_uid)),
        (Some(_), true) => (socket_uid, lowest(None), Via::Ambiguous),
        (None, _) => (socket_uid, lowest(None), Via::Pending),
    };
    Attribution {
        uid,
        program,
        direction,
        via,
        container: None,
        cgroup: None,
    }
}

/// Why a flow could not be charged to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// TCP/UDP flow to or from this host with no socket ever seen (born and closed
    /// between passes, or the socket belongs to another network namespace).
    NoSocket,
    /// Neither end is an address of this host: forwarded or NAT'd traffic.
    Forwarded,
    /// Several sockets with different owners share the matching local port.
    Ambiguous,
    /// No socket table explains it and no owner mark (believed) names its sender: a
    /// protocol without sockets to join (GRE, …), or ICMP no ping socket sent (the
    /// kernel's own answers and errors, a raw socket's ping).
    Protocol,
    /// Charged, but not to a holder: processes of several users hold a delegating service's
    /// socket, so its own uid is charged. Only on usage rows of a user (never a verdict).
    AmbiguousHolders,
}

impl Reason {
    /// Name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoSocket => "no-socket",
            Reason::Forwarded => "forwarded",
            Reason::Ambiguous => "ambiguous",
            Reason::Protocol => "protocol",
            Reason::AmbiguousHolders => "ambiguous-holders",
        }
    }
}

/// Where a flow's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Charged to a user.
    User(Attribution),
    /// Remote end is in a local network: kept apart, charged to nobody. The owner is
    /// kept when known, for information.
    Excluded(Option<Attribution>),
    /// Counted, but nobody can be named.
    Unattributed(Reason),
}

/// The outcome of attributing one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    /// Where the bytes go.
    pub verdict: Verdict,
    /// Initiating side, when known (unknown for forwarded traffic).
    pub direction: Option<Direction>,
    /// The far end's address.
    pub remote: IpAddr,
    /// The service port: the remote port for outgoing flows, the local port for incoming.
    pub port: u16,
}

impl Attributed {
    /// The attribution to remember for this flow (only a live-socket match or a kept one).
    pub fn attribution(&self) -> Option<&Attribution> {
        match &self.verdict {
            Verdict::User(a) => Some(a),
            Verdict::Excluded(a) => a.as_ref(),
            Verdict::Unattributed(_) => None,
        }
    }
}

/// Owners of TCP connections whose conntrack entry went away while they lived (`conntrack
/// -D`/`-F`, a full table's early drop, a firewall reload), for the entry the kernel
/// creates when the next packet of the same connection passes ("loose" pickup). That entry
/// may come in the opposite orientation (the first packet after the deletion decides), and
/// when it is first seen the socket may already be in TIME_WAIT, which names no owner. The
/// kernel does not give a TCP 4-tuple to a new connection while the old one's socket lives,
/// and a picked-up entry is told apart from a new connection by the kernel itself
/// (IP_CT_TCP_FLAG_BE_LIBERAL, see `sources::conntrack`): such an entry belongs to the owner
/// of the connection that had the 4-tuple.
#[derive(Debug, Clone, Default)]
pub struct Continued {
    /// (protocol, original source, original destination) of the ended entry → its
    /// attribution and when it was remembered (epoch seconds).
    by_ends: HashMap<(u8, SocketAddr, SocketAddr), (Attribution, i64)>,
}

impl Continued {
    /// Remember that the entry of `flow`, owned as `owner`, ended at `at` (epoch seconds)
    /// while its connection lived.
    pub fn remember(&mut self, flow: &crate::model::Tuple, owner: &Attribution, at: i64) {
        self.by_ends.insert(
            (flow.proto, flow.src_sa(), flow.dst_sa()),
            (owner.clone(), at),
        );
    }

    /// The owner of a picked-up entry whose original tuple is `orig`: the ended entry's,
    /// its direction turned when the new entry runs the other way.
    pub fn owner_of(&self, orig: &crate::model::Tuple) -> Option<Attribution> {
        let (src, dst) = (orig.src_sa(), orig.dst_sa());
        if let Some((a, _)) = self.by_ends.get(&(orig.proto, src, dst)) {
            return Some(a.clone());
        }
        let (a, _) = self.by_ends.get(&(orig.proto, dst, src))?;
        Some(Attribution {
            direction: match a.direction {
                Direction::Out => Direction::In,
                Direction::In => Direction::Out,
            },
            ..a.clone()
        })
    }

    /// Forget what was remembered before `at`.
    pub fn forget_before(&mut self, at: i64) {
        self.by_ends.retain(|_, (_, t)| *t >= at);
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.by_ends.is_empty()
    }
}

/// The networks whose traffic is not charged to anyone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNets {
    nets: Vec<IpNet>,
    /// The IPv4 and IPv6 networks as (address, mask) words, checked once per flow.
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl LocalNets {
    /// SPEC defaults: loopback, RFC 1918, link-local, ULA, and multicast. The program
    /// takes them from the documented configuration (`config::defaults`); the unit tests
    /// here, below the configuration, from this copy, which a test there keeps equal.
    #[cfg(test)]
    pub const DEFAULTS: &'static [&'static str] = &[
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "fe80::/10",
        "fc00::/7",
        "224.0.0.0/4",
        "ff00::/8",
    ];

    /// The default local networks (tests; see [`LocalNets::DEFAULTS`]).
    #[cfg(test)]
    pub fn defaults() -> LocalNets {
        LocalNets::new(
            LocalNets::DEFAULTS
                .iter()
                .map(|s| s.parse().expect("default local network parses")),
        )
    }

    /// Exactly these networks (an empty list counts everything).
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> LocalNets {
        let nets: Vec<IpNet> = nets.into_iter().collect();
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for n in &nets {
            match n {
                IpNet::V4(n) => v4.push((n.network().to_bits(), n.netmask().to_bits())),
                IpNet::V6(n) => v6.push((n.network().to_bits(), n.netmask().to_bits())),
            }
        }
        LocalNets { nets, v4, v6 }
    }

    /// Whether `ip` is local. IPv4-mapped addresses are compared as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = crate::model::canonical_ip(ip);
        // The unspecified and broadcast addresses never leave the host or the link.
        if ip.is_unspecified() || ip == IpAddr::V4(Ipv4Addr::BROADCAST) {
            return !self.nets.is_empty();
        }
        match ip {
            IpAddr::V4(ip) => {
                let ip = ip.to_bits();
                self.v4.iter().any(|&(net, mask)| ip & mask == net)
            }
            IpAddr::V6(ip) => {
                let ip = ip.to_bits();
                self.v6.iter().any(|&(net, mask)| ip & mask == net)
            }
        }
    }

    /// The networks, for display.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }
}

/// What a bound (unconnected) local address resolves to.
#[derive(Debug, Clone, Copy)]
enum Bound {
    One(usize),
    /// Live sockets with different owners share the address (SO_REUSEPORT).
    Ambiguous,
}

/// Sockets indexed for the join. Built once per pass.
pub struct SocketIndex<'a> {
    sockets: &'a [Socket],
    owners: &'a HashMap<u64, Owner>,
    /// (proto, local, remote) → live socket.
    exact: FastMap<(L4, SocketAddr, SocketAddr), usize>,
    /// (proto, local) → live socket with no remote end (unconnected UDP, listeners).
    bound: FastMap<(L4, SocketAddr), Bound>,
    /// Addresses of this host: those of its interfaces (given), never the local ends of
    /// sockets (see [`SocketMaps::new`]).
    host_addrs: FastSet<IpAddr>,
    /// Uids whose sockets are charged through their holders.
    delegating: &'a Delegating,
    /// Every holder of the delegating sockets looked up this pass.
    holders: Option<&'a HashMap<u64, Vec<Holder>>>,
    /// Whether a flow no socket names is charged to the uid in its owner mark
    /// ([`crate::owner_mark`]).
    marks: bool,
    /// Subordinate uid ranges (`/etc/subuid`): a uid in one is charged to its owner.
    subuids: Option<&'a SubUids>,
    /// Sockets of flows settled as a delegating service's own whose holders were looked
    /// up again ([`SocketIndex::with_recheck`]).
    recheck: Option<&'a HashSet<u64>>,
    /// The sockets' cgroups by id, as resolved ([`SocketIndex::with_cgroups`]).
    cgroups: Option<&'a FastMap<u64, Cgroup>>,
}

/// The maps of a [`SocketIndex`] over some sockets, built apart from it (they borrow
/// nothing), so that a pass builds them while the conntrack dump is still coming.
pub struct SocketMaps {
    exact: FastMap<(L4, SocketAddr, SocketAddr), usize>,
    bound: FastMap<(L4, SocketAddr), Bound>,
    host_addrs: FastSet<IpAddr>,
}

impl SocketMaps {
    /// Index `sockets`; `host_addrs` are the interface addresses of this host, used to
    /// tell the direction of socketless flows.
    pub fn new(sockets: &[Socket], host_addrs: impl IntoIterator<Item = IpAddr>) -> SocketMaps {
        // The interfaces' addresses only: a socket's local address is no proof that the
        // address is the host's (any user may bind one it does not have with IP_FREEBIND,
        // and every flow to that address would then read as the host's own, excluded).
        let mut maps = SocketMaps {
            exact: FastMap::with_capacity_and_hasher(sockets.len(), Default::default()),
            bound: FastMap::default(),
            host_addrs: host_addrs.into_iter().collect(),
        };
        maps.add(sockets, 0);
        maps
    }

    /// Index `sockets[from..]` too: sockets appended (a second read of the socket tables)
    /// to the ones indexed, which keep their places. A later socket of the same 4-tuple
    /// takes its place, as in one build over all of them.
    pub fn add(&mut self, sockets: &[Socket], from: usize) {
        let SocketMaps { exact, bound, .. } = self;
        for (i, s) in sockets.iter().enumerate().skip(from) {
            if !s.has_owner() {
                continue;
            }
            if s.remote.port() == 0 && s.remote.ip().is_unspecified() {
                bound
                    .entry((s.proto, s.local))
                    .and_modify(|b| {
                        if let Bound::One(j) = *b {
                            if sockets[j].uid != s.uid {
                                *b = Bound::Ambiguous;
                            } else if s.inode < sockets[j].inode {
                                // Deterministic choice among same-owner sockets.
                                *b = Bound::One(i);
                            }
                        }
                    })
                    .or_insert(Bound::One(i));
            } else {
                exact.insert((s.proto, s.local, s.remote), i);
            }
        }
    }
}

impl<'a> SocketIndex<'a> {
    /// Index `sockets` (with their owning processes) for the join. `host_addrs` are the
    /// interface addresses of this host, used to tell the direction of socketless flows.
    pub fn new(
        sockets: &'a [Socket],
        owners: &'a HashMap<u64, Owner>,
        host_addrs: impl IntoIterator<Item = IpAddr>,
    ) -> SocketIndex<'a> {
        SocketIndex::with_maps(sockets, owners, SocketMaps::new(sockets, host_addrs))
    }

    /// [`SocketIndex::new`] with its maps built already, over these same `sockets`.
    pub fn with_maps(
        sockets: &'a [Socket],
        owners: &'a HashMap<u64, Owner>,
        maps: SocketMaps,
    ) -> SocketIndex<'a> {
        SocketIndex {
            sockets,
            owners,
            exact: maps.exact,
            bound: maps.bound,
            host_addrs: maps.host_addrs,
            delegating: &NO_DELEGATION,
            holders: None,
            marks: false,
            subuids: None,
            recheck: None,
            cgroups: None,
        }
    }

    /// Its maps back, to [`SocketMaps::add`] sockets appended to the ones indexed and
    /// index them all again with [`SocketIndex::with_maps`] (no map built anew).
    pub fn into_maps(self) -> SocketMaps {
        SocketMaps {
            exact: self.exact,
            bound: self.bound,
            host_addrs: self.host_addrs,
        }
    }

    /// The same index charging a uid of a subordinate range (a user's rootless user
    /// namespace: `unshare --map-auto`, a socket `fchown`ed to one of its uids) to the
    /// range's owner, as the containers' flows are.
    pub fn with_subuids<'b>(self, subuids: &'b SubUids) -> SocketIndex<'b>
    where
        'a: 'b,
    {
        SocketIndex {
            subuids: Some(subuids),
            ..self
        }
    }

    /// The same index charging a flow settled as a delegating service's own to a user's
    /// process now holding its socket, for the sockets in `inodes` (whose holders were
    /// looked up again): a login slower than the grace. Other settled flows stay as they
    /// were, whoever holds their sockets.
    pub fn with_recheck<'b>(self, inodes: &'b HashSet<u64>) -> SocketIndex<'b>
    where
        'a: 'b,
    {
        SocketIndex {
            recheck: Some(inodes),
            ..self
        }
    }

    /// The same index naming the cgroup of each socket whose id (sock_diag's
    /// `INET_DIAG_CGROUP_ID`) is in `cgroups`.
    pub fn with_cgroups<'b>(self, cgroups: &'b FastMap<u64, Cgroup>) -> SocketIndex<'b>
    where
        'a: 'b,
    {
        SocketIndex {
            cgroups: Some(cgroups),
            ..self
        }
    }

    /// The cgroup of socket `s`: its id's, else the one the flow already had through a
    /// socket of the same uid (a socket read from `/proc/net`, which carries no id).
    fn cgroup_of(&self, s: &Socket, prior: Option<&Attribution>) -> Option<Cgroup> {
        self.cgroups
            .and_then(|m| m.get(&s.cgroup))
            .cloned()
            .or_else(|| {
                prior
                    .filter(|p| p.socket_uid() == s.uid)
                    .and_then(|p| p.cgroup.clone())
            })
    }

    /// The uid charged for a socket or mark of `uid`: the owner of its subordinate range,
    /// else itself.
    fn owner_uid(&self, uid: u32) -> u32 {
        self.subuids.and_then(|s| s.owner_of(uid)).unwrap_or(uid)
    }

    /// The same index charging a flow no socket names to the uid of its owner mark, when
    /// `on` (the marks are believed: netledger's rule is their only writer).
    pub fn with_marks(self, on: bool) -> SocketIndex<'a> {
        SocketIndex { marks: on, ..self }
    }

    /// The same index charging the sockets of `delegating` uids through their holders:
    /// `holders` are those looked up (for the inodes [`SocketIndex::delegated_socket`] named).
    pub fn with_delegation<'b>(
        self,
        delegating: &'b Delegating,
        holders: Option<&'b HashMap<u64, Vec<Holder>>>,
    ) -> SocketIndex<'b>
    where
        'a: 'b,
    {
        SocketIndex {
            delegating,
            holders,
            ..self
        }
    }

    /// The attribution through socket `i`. Without a known owning process, a program the
    /// flow already had under the same uid is kept (a pass only looks processes up for
    /// flows it has not attributed before).
    fn attribution(
        &self,
        i: usize,
        direction: Direction,
        prior: Option<&Attribution>,
    ) -> Attribution {
        let s = &self.sockets[i];
        if self.delegates(s) {
            return Attribution {
                cgroup: self.cgroup_of(s, prior),
                ..self.delegated(s, direction, prior)
            };
        }
        let uid = self.owner_uid(s.uid);
        let program = match self.owners.get(&s.inode) {
            Some(o) => Some(o.program.clone()),
            None => prior
                .filter(|p| p.uid == uid && p.via == Via::Direct)
                .and_then(|p| p.program.clone()),
        };
        Attribution {
            uid,
            program,
            direction,
            via: Via::Direct,
            container: None,
            cgroup: self.cgroup_of(s, prior),
        }
    }

    /// The attribution through a delegating uid's socket: what the flow already had
    /// through this socket's uid once settled (it is never looked up again), else the rule
    /// over the holders looked up this pass, else what it had (pending), else pending.
    fn delegated(
        &self,
        s: &Socket,
        direction: Direction,
        prior: Option<&Attribution>,
    ) -> Attribution {
        let same = prior.filter(|p| p.socket_uid() == s.uid);
        let held = self.holders.and_then(|m| m.get(&s.inode));
        if let Some(p) = same.filter(|p| p.via != Via::Pending) {
            // The service's own after the grace, looked at again while its socket lives
            // (a pass does for those that moved, `with_recheck`): a user's process holding
            // it now (a login slower than the grace) is charged from now on.
            let again = self.recheck.is_some_and(|r| r.contains(&s.inode));
            if let (Via::Own, Some(h), true) = (p.via, held, again) {
                let now = delegate(s.uid, h, self.delegating, p.direction);
                if let Via::Delegated(_) = now.via {
                    return now;
                }
            }
            return p.clone();
        }
        if let Some(h) = held {
            if !h.is_empty() {
                return delegate(s.uid, h, self.delegating, direction);
            }
        }
        if let Some(p) = same {
            return p.clone();
        }
        Attribution {
            uid: s.uid,
            program: self.owners.get(&s.inode).map(|o| o.program.clone()),
            direction,
            via: Via::Pending,
            container: None,
            cgroup: None,
        }
    }

    /// The same index with the sockets' owning processes filled in, once they were looked
    /// up for the inodes [`SocketIndex::socket_inode`] named.
    pub fn with_owners<'b>(self, owners: &'b HashMap<u64, Owner>) -> SocketIndex<'b>
    where
        'a: 'b,
    {
        SocketIndex { owners, ..self }
    }

    /// The live socket `flow` matches through its tuples (exact 4-tuple, else an unconnected
    /// socket's local or wildcard address), ignoring any kept attribution.
    fn find(&self, flow: &Flow, l4: L4) -> Lookup {
        let (orig, reply) = (&flow.orig, &flow.reply);
        let exact = |local: SocketAddr, remote: SocketAddr| self.exact.get(&(l4, local, remote));
        if let Some(&at) = exact(orig.src_sa(), orig.dst_sa()) {
            return Lookup::Socket {
                at,
                direction: Direction::Out,
            };
        }
        if let Some(&at) = exact(reply.src_sa(), reply.dst_sa()) {
            return Lookup::Socket {
                at,
                direction: Direction::In,
            };
        }
        // An unconnected socket only where the flow's local end is one of this host's
        // addresses: the remote end of a flow (a download from R:8888) must not match a
        // user's listener on *:8888. A TCP listener only answers (an incoming flow).
        let mut ambiguous = false;
        for (local, dir) in [
            (orig.src_sa(), Direction::Out),
            (reply.src_sa(), Direction::In),
        ] {
            // A TCP listener only answers (an incoming flow); a ping socket only asks (its
            // echo requests are the original direction).
            let answers = dir == Direction::In;
            if !self.is_host_addr(local.ip())
                || (l4 == L4::Tcp && !answers)
                || (l4.is_ping() && answers)
            {
                continue;
            }
            match self.bound(l4, local) {
                Some(Bound::One(at)) => {
                    return Lookup::Socket { at, direction: dir };
                }
                Some(Bound::Ambiguous) => ambiguous = true,
                None => {}
            }
        }
        if ambiguous {
            Lookup::Ambiguous
        } else {
            Lookup::Unmatched
        }
    }

    /// The live socket `flow` matches ([`SocketIndex::find`]), looked up once for
    /// [`attribute_looked`] and [`mark_check_looked`] on this index or another over the
    /// same sockets.
    pub fn lookup(&self, flow: &Flow) -> Lookup {
        match L4::from_ipproto(flow.orig.proto) {
            Some(l4) => self.find(flow, l4),
            None => Lookup::NoSockets,
        }
    }

    /// The socket `looked` names, of this index's sockets.
    pub fn socket_of(&self, looked: Lookup) -> Option<&Socket> {
        match looked {
            Lookup::Socket { at, .. } => Some(&self.sockets[at]),
            _ => None,
        }
    }

    /// The inode of the socket `attribute` would name `flow`'s owner through when it has
    /// no kept attribution: the one whose process (program) is worth looking up.
    pub fn socket_inode(&self, flow: &Flow) -> Option<u64> {
        self.socket_of(self.lookup(flow)).map(|s| s.inode)
    }

    /// The live socket `flow` matches, when its uid is a delegating one: the socket whose
    /// holders decide who a flow without a settled attribution is charged to.
    pub fn delegated_socket(&self, flow: &Flow) -> Option<&Socket> {
        self.delegated_of(self.lookup(flow))
    }

    /// [`SocketIndex::delegated_socket`] of a flow whose socket was `looked` up already.
    pub fn delegated_of(&self, looked: Lookup) -> Option<&Socket> {
        self.socket_of(looked).filter(|s| self.delegates(s))
    }

    /// Whether `s` is a delegating uid's socket, charged through its holders: a TCP, UDP or
    /// UDP-Lite one (services hand those to users; a ping socket of root's is root's own).
    fn delegates(&self, s: &Socket) -> bool {
        !s.proto.is_ping() && self.delegating.contains(s.uid)
    }

    /// Whether socket `i` is connected (matched by its exact 4-tuple).
    fn exact_index(&self, i: usize) -> bool {
        let s = &self.sockets[i];
        !(s.remote.port() == 0 && s.remote.ip().is_unspecified())
    }

    fn bound(&self, l4: L4, local: SocketAddr) -> Option<Bound> {
        if let Some(b) = self.bound.get(&(l4, local)) {
            return Some(*b);
        }
        // Wildcard: an IPv4 flow may be served by a 0.0.0.0 socket or a dual-stack `::` one.
        let port = local.port();
        let wild: &[IpAddr] = match local.ip() {
            IpAddr::V4(_) => &[
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            ],
            IpAddr::V6(_) => &[IpAddr::V6(Ipv6Addr::UNSPECIFIED)],
        };
        wild.iter()
            .find_map(|ip| self.bound.get(&(l4, SocketAddr::new(*ip, port))).copied())
    }

    /// The uid of the one owner of the TCP sockets listening on `local` (its address or
    /// the wildcard), if there is one.
    fn listener_uid(&self, local: SocketAddr) -> Option<u32> {
        match self.bound(L4::Tcp, local)? {
            Bound::One(j) => {
                let s = &self.sockets[j];
                (s.socket_state() == Some(crate::model::SocketState::Listen)).then_some(s.uid)
            }
            Bound::Ambiguous => None,
        }
    }

    fn is_host_addr(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.host_addrs.contains(&ip)
    }
}

/// The owner a flow's mark names, when no socket does: the local socket that sent its
/// first packet (a delegating service's uid is not charged this way: its user is named by
/// the processes holding the socket, which is gone).
fn by_mark(flow: &Flow, idx: &SocketIndex) -> Option<Attribution> {
    let uid = crate::owner_mark::uid_of(flow.mark)?;
    // Only TCP and UDP sockets are handed to users by services; a ping or other
    // protocol's socket of root's is root's own.
    let handed = L4::from_ipproto(flow.orig.proto).is_some_and(|l| !l.is_ping());
    if handed && idx.delegating.contains(uid) {
        return None;
    }
    let uid = idx.owner_uid(uid);
    // The marking socket is the original source when it is this host's (outgoing), else
    // the answering end (incoming).
    let direction = if idx.is_host_addr(flow.orig.src) {
        Direction::Out
    } else {
        Direction::In
    };
    Some(Attribution {
        uid,
        program: None,
        direction,
        via: Via::Direct,
        container: None,
        cgroup: None,
    })
}

/// What a flow's mark says against its live socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkCheck {
    /// The mark is netledger's and names the uid of the flow's connected socket.
    Agrees,
    /// The mark is not the uid of the flow's connected socket (`socket_uid`), or is no
    /// mark netledger writes at all (`socket_uid` None): someone else wrote it.
    Disagrees {
        /// The socket's uid, when one was there to compare with.
        socket_uid: Option<u32>,
    },
}

/// Check `flow`'s mark (None when it has none, or no connected live socket to compare
/// with and the mark could be netledger's).
pub fn mark_check(flow: &Flow, idx: &SocketIndex) -> Option<MarkCheck> {
    if flow.mark == 0 {
        return None;
    }
    mark_check_looked(flow, idx, &idx.lookup(flow))
}

/// [`mark_check`] with the flow's socket looked up already ([`SocketIndex::lookup`]).
pub fn mark_check_looked(flow: &Flow, idx: &SocketIndex, looked: &Lookup) -> Option<MarkCheck> {
    if flow.mark == 0 {
        return None;
    }
    let uid = crate::owner_mark::uid_of(flow.mark);
    if uid.is_none() {
        return Some(MarkCheck::Disagrees { socket_uid: None });
    }
    let l4 = L4::from_ipproto(flow.orig.proto)?;
    let Lookup::Socket {
        at: i,
        direction: dir,
    } = *looked
    else {
        return None;
    };
    if !idx.exact_index(i) {
        return None;
    }
    // A socket `fchown`ed to a subordinate uid of the mark's (after its first packet, in
    // the user's rootless user namespace) is still the same user's.
    let owner = |u: u32| idx.owner_uid(u);
    let mut socket_uid = idx.sockets[i].uid;
    if l4 == L4::Tcp && dir == Direction::In && uid.map(owner) != Some(owner(socket_uid)) {
        // An incoming connection is marked by its SYN-ACK, which the kernel sends for the
        // listening socket; the accepted socket takes the uid of whoever accepts it (a
        // root listener's `nobody` worker: nginx, Apache, postfix). Held against the
        // listener's uid, then; no listener left (or several owners'): no evidence.
        socket_uid = idx.listener_uid(flow.reply.src_sa())?;
    }
    Some(if uid.map(owner) == Some(owner(socket_uid)) {
        MarkCheck::Agrees
    } else if l4 != L4::Tcp {
        // A UDP (or UDP-Lite) entry outlives its socket (30 s, 120 s once a stream): another user's
        // socket may take up the same ports meanwhile, and the entry keeps the first
        // sender's mark. No evidence either way. (A TCP SYN on an ended entry makes a new
        // entry, so a TCP disagreement is one.)
        return None;
    } else {
        MarkCheck::Disagrees {
            socket_uid: Some(socket_uid),
        }
    })
}

/// The attribution of `flow` through `socket` alone (the one a sock_diag lookup found),
/// as a pass would give it with only that socket live (a subordinate uid charged to its
/// range's owner); `None` when it names no user.
pub fn attribute_through(
    flow: &Flow,
    socket: &Socket,
    host: &HashSet<IpAddr>,
    delegating: &Delegating,
    subuids: &SubUids,
    nets: &LocalNets,
) -> Option<Attribution> {
    let none = HashMap::new();
    let idx = SocketIndex::new(std::slice::from_ref(socket), &none, host.iter().copied())
        .with_delegation(delegating, None)
        .with_subuids(subuids);
    attribute(flow, &idx, None, nets).attribution().cloned()
}

/// Attribute one flow. `prior` is the attribution the flow had when last seen with a
/// live socket (from the saved flow state).
pub fn attribute(
    flow: &Flow,
    idx: &SocketIndex,
    prior: Option<&Attribution>,
    nets: &LocalNets,
) -> Attributed {
    attribute_looked(flow, idx, &idx.lookup(flow), prior, nets)
}

/// The live socket a flow matches ([`SocketIndex::lookup`]), whatever it had before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A protocol without socket tables (ICMP, GRE, …): no socket is joined.
    NoSockets,
    /// No live socket matches either tuple.
    Unmatched,
    /// Live unconnected sockets of different owners share the flow's local address
    /// (SO_REUSEPORT): [`Reason::Ambiguous`].
    Ambiguous,
    /// The socket at `at` of the index's sockets; `direction` tells which tuple matched.
    Socket {
        /// Its place among the sockets the index was built over.
        at: usize,
        /// Which end started the flow.
        direction: Direction,
    },
}

/// [`attribute`] with the flow's socket looked up already ([`SocketIndex::lookup`], on
/// an index over the same sockets).
pub fn attribute_looked(
    flow: &Flow,
    idx: &SocketIndex,
    looked: &Lookup,
    prior: Option<&Attribution>,
    nets: &LocalNets,
) -> Attributed {
    let (orig, reply) = (&flow.orig, &flow.reply);
    let l4 = L4::from_ipproto(orig.proto);

    let mut reason = None;
    // An exact live socket beats the kept attribution, which beats the owner mark (the
    // socket that sent the flow's first packet), which beats an unconnected socket that
    // merely shares the local address.
    let marked = || idx.marks.then(|| by_mark(flow, idx)).flatten();
    let found: Option<Attribution> = match *looked {
        // ICMP (ping sockets), UDP-Lite, GRE, …: no socket table is joined, but the mark
        // names the socket that sent the first packet.
        Lookup::NoSockets => marked(),
        Lookup::Socket { at, direction } if idx.exact_index(at) => {
            Some(idx.attribution(at, direction, prior))
        }
        _ if prior.is_some() => prior.cloned(),
        Lookup::Socket { at, direction } => {
            marked().or_else(|| Some(idx.attribution(at, direction, prior)))
        }
        Lookup::Unmatched => marked(),
        Lookup::Ambiguous => {
            reason = Some(Reason::Ambiguous);
            marked()
        }
    };

    let direction = match &found {
        Some(a) => Some(a.direction),
        None if idx.is_host_addr(orig.dst) => Some(Direction::In),
        None if idx.is_host_addr(orig.src) => Some(Direction::Out),
        None => None,
    };
    let (remote, port) = match direction {
        Some(Direction::Out) | None => (orig.dst, orig.dport),
        Some(Direction::In) => (orig.src, reply.sport),
    };

    // Both ends on this host (a user reaching a local service by the host's public
    // address): the packets never leave it, whatever the address, so it is local traffic.
    // The reply tuple's source is where the flow really goes after any DNAT.
    let on_host = idx.is_host_addr(orig.src) && idx.is_host_addr(reply.src);
    let verdict =
        if on_host || nets.contains(remote) && (direction.is_some() || nets.contains(orig.src)) {
            Verdict::Excluded(found)
        } else if let Some(a) = found {
            Verdict::User(a)
        } else if l4.is_none_or(L4::is_ping) {
            // ICMP no ping socket sent: the kernel's own (answers, errors) or a raw
            // socket's, which no table joined.
            Verdict::Unattributed(reason.unwrap_or(Reason::Protocol))
        } else {
            Verdict::Unattributed(reason.unwrap_or(if direction.is_some() {
                Reason::NoSocket
            } else {
                Reason::Forwarded
            }))
        };
    Attributed {
        verdict,
        direction,
        remote,
        port,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{flow, sock, TCP, UDP};
    use rstest::rstest;

    const ALICE: u32 = 1001;
    const BOB: u32 = 1002;
    const HOST4: &str = "198.51.100.1";

    #[test]
    fn local_nets_masks_agree_with_ipnet() {
        let nets = LocalNets::new(
            [
                "10.1.2.3/8",
                "192.168.0.0/16",
                "0.0.0.0/0",
                "fc00::/7",
                "2001:db8::1/128",
            ]
            .iter()
            .map(|s| s.parse::<IpNet>().unwrap()),
        );
        for list in [nets.clone(), LocalNets::defaults(), LocalNets::new([])] {
            for ip in [
                "10.255.0.1",
                "11.0.0.1",
                "192.168.4.4",
                "192.169.0.0",
                "198.51.100.2",
                "127.0.0.1",
                "169.254.1.1",
                "224.0.0.1",
                "0.0.0.0",
                "255.255.255.255",
                "fd00::1",
                "fe00::1",
                "2001:db8::1",
                "2001:db8::2",
                "::1",
                "fe80::1",
                "ff02::1",
                "::ffff:10.0.0.1",
                "::ffff:198.51.100.2",
            ] {
                let ip: IpAddr = ip.parse().unwrap();
                let canon = crate::model::canonical_ip(ip);
                let by_ipnet = if canon.is_unspecified() || canon == IpAddr::V4(Ipv4Addr::BROADCAST)
                {
                    !list.nets().is_empty()
                } else {
                    list.nets().iter().any(|n| n.contains(&canon))
                };
                assert_eq!(list.contains(ip), by_ipnet, "{ip} in {:?}", list.nets());
            }
        }
    }

    fn owners() -> HashMap<u64, Owner> {
        [(
            100,
            Owner {
                pid: 42,
                program: "curl".into(),
            },
        )]
        .into_iter()
        .collect()
    }

    fn user(uid: u32, dir: Direction) -> Verdict {
        Verdict::User(Attribution {
            cgroup: None,
            uid,
            program: (uid == ALICE).then(|| "curl".to_string()),
            direction: dir,
            via: Via::Direct,
            container: None,
        })
    }

    fn join(
        sockets: &[Socket],
        f: &Flow,
        prior: Option<&Attribution>,
        nets: &LocalNets,
    ) -> Attributed {
        let o = owners();
        let idx = SocketIndex::new(sockets, &o, [HOST4.parse().unwrap()]);
        attribute(f, &idx, prior, nets)
    }

    fn marked(mut f: Flow, mark: u32) -> Flow {
        f.mark = mark;
        f
    }

    fn by_marks(sockets: &[Socket], f: &Flow, marks: bool) -> Verdict {
        let o = owners();
        let idx = SocketIndex::new(sockets, &o, [HOST4.parse().unwrap()])
            .with_delegation(&DELEGATING_ROOT, None)
            .with_marks(marks);
        attribute(f, &idx, None, &LocalNets::defaults()).verdict
    }

    static DELEGATING_ROOT: std::sync::LazyLock<Delegating> =
        std::sync::LazyLock::new(|| Delegating::new([0]));

    #[test]
    fn a_socketless_flow_is_charged_to_its_mark_only_when_marks_are_believed() {
        let mark = crate::owner_mark::mark_of(BOB);
        let out = marked(
            flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None),
            mark,
        );
        let mine = |dir| {
            Verdict::User(Attribution {
                cgroup: None,
                uid: BOB,
                program: None,
                direction: dir,
                via: Via::Direct,
                container: None,
            })
        };
        assert_eq!(by_marks(&[], &out, true), mine(Direction::Out));
        assert_eq!(
            by_marks(&[], &out, false),
            Verdict::Unattributed(Reason::NoSocket)
        );
        // An incoming connection: the local server's first answer marked it.
        let inc = marked(
            flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
            mark,
        );
        assert_eq!(by_marks(&[], &inc, true), mine(Direction::In));
        // Not netledger's mark (high bit clear), and a delegating uid's: nobody.
        let foreign = marked(out.clone(), 42);
        assert_eq!(
            by_marks(&[], &foreign, true),
            Verdict::Unattributed(Reason::NoSocket)
        );
        let root = marked(out.clone(), crate::owner_mark::mark_of(0));
        assert_eq!(
            by_marks(&[], &root, true),
            Verdict::Unattributed(Reason::NoSocket)
        );
        // A live socket wins over the mark.
        let s = [sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            ALICE,
            100,
        )];
        assert_eq!(by_marks(&s, &out, true), user(ALICE, Direction::Out));
    }

    #[test]
    fn a_mark_beats_an_unconnected_socket_that_shares_the_local_port() {
        // alice's UDP flow from port 5000, her socket gone; bob's socket took up *:5000.
        let s = [sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200)];
        let f = marked(
            flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
            crate::owner_mark::mark_of(ALICE),
        );
        let alice = Verdict::User(Attribution {
            cgroup: None,
            uid: ALICE,
            program: None,
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        });
        assert_eq!(by_marks(&s, &f, true), alice);
        assert_eq!(by_marks(&s, &f, false), user(BOB, Direction::Out));
        // Two owners share the port: the mark still names one.
        let both = [
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", 0, 300),
        ];
        assert_eq!(by_marks(&both, &f, true), alice);
    }

    #[test]
    fn other_protocols_are_charged_to_their_mark() {
        // alice's ping (an unprivileged ICMP socket), and root's: root's ping is root's.
        let ping = flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None);
        for uid in [ALICE, 0] {
            let f = marked(ping.clone(), crate::owner_mark::mark_of(uid));
            let want = Verdict::User(Attribution {
                cgroup: None,
                uid,
                program: None,
                direction: Direction::Out,
                via: Via::Direct,
                container: None,
            });
            assert_eq!(by_marks(&[], &f, true), want);
            assert_eq!(
                by_marks(&[], &f, false),
                Verdict::Unattributed(Reason::Protocol)
            );
        }
        // UDP-Lite, answered by alice's server: incoming.
        let lite = marked(
            flow(136, ("198.51.100.2:5000", "198.51.100.1:6000"), None),
            crate::owner_mark::mark_of(ALICE),
        );
        assert!(matches!(
            by_marks(&[], &lite, true),
            Verdict::User(Attribution {
                uid: ALICE,
                direction: Direction::In,
                ..
            })
        ));
        // No mark, or not netledger's: by protocol, as before.
        assert_eq!(
            by_marks(&[], &marked(ping, 42), true),
            Verdict::Unattributed(Reason::Protocol)
        );
    }

    #[test]
    fn a_ping_is_charged_through_its_ping_socket_by_echo_id() {
        const ICMP: u8 = 1;
        const ICMPV6: u8 = 58;
        // Ping sockets as /proc/net/icmp{,6} list them: the port is the echo id.
        let sockets = [
            sock(L4::Icmp, "0.0.0.0:62547", "0.0.0.0:0", ALICE, 100),
            sock(L4::Icmp, "198.51.100.1:62548", "198.51.100.2:0", BOB, 200),
            sock(L4::Icmpv6, "[::]:62549", "[::]:0", BOB, 300),
            sock(L4::Icmp, "0.0.0.0:7", "0.0.0.0:0", 0, 400),
        ];
        let o = owners();
        let host = [HOST4.parse().unwrap(), "2001:db8::1".parse().unwrap()];
        let idx = SocketIndex::new(&sockets, &o, host)
            .with_delegation(&DELEGATING_ROOT, None)
            .with_marks(false);
        let verdict = |f: &Flow| attribute(f, &idx, None, &LocalNets::new([])).verdict;
        let out = |uid: u32, program: Option<&str>| {
            Verdict::User(Attribution {
                cgroup: None,
                uid,
                program: program.map(str::to_string),
                direction: Direction::Out,
                via: Via::Direct,
                container: None,
            })
        };
        // Unconnected (the wildcard local address), connected (exact), ICMPv6.
        let unconnected = flow(ICMP, ("198.51.100.1:62547", "198.51.100.2:0"), None);
        assert_eq!(verdict(&unconnected), out(ALICE, Some("curl")));
        let connected = flow(ICMP, ("198.51.100.1:62548", "198.51.100.2:0"), None);
        assert_eq!(verdict(&connected), out(BOB, None));
        let v6 = flow(ICMPV6, ("[2001:db8::1]:62549", "[2001:db8::2]:0"), None);
        assert_eq!(verdict(&v6), out(BOB, None));
        // Root's ping socket is root's own, not a service's socket waiting for a holder.
        let roots = flow(ICMP, ("198.51.100.1:7", "198.51.100.2:0"), None);
        assert_eq!(verdict(&roots), out(0, None));
        assert_eq!(idx.delegated_socket(&roots), None);
        // Another id, the other family's table, or no ping socket at all: by protocol.
        for f in [
            flow(ICMP, ("198.51.100.1:62546", "198.51.100.2:0"), None),
            flow(ICMPV6, ("[2001:db8::1]:62547", "[2001:db8::2]:0"), None),
            flow(ICMP, ("198.51.100.1:0", "198.51.100.2:0"), None),
        ] {
            assert_eq!(
                verdict(&f),
                Verdict::Unattributed(Reason::Protocol),
                "{f:?}"
            );
        }
        // R pings this host with alice's id: the kernel answers, no ping socket does.
        let incoming = flow(ICMP, ("198.51.100.2:62547", "198.51.100.1:0"), None);
        assert_eq!(idx.socket_inode(&incoming), None);
        assert_eq!(verdict(&incoming), Verdict::Unattributed(Reason::Protocol));
        // The id is the echo's, not a port: the reported port stays 0.
        assert_eq!(
            attribute(&unconnected, &idx, None, &LocalNets::new([])).port,
            0
        );
        // With marks on, alice's mark and her socket agree; a ping socket's mark is never
        // held against it as another tool's (an ICMP entry outlives its socket).
        let m = marked(unconnected.clone(), crate::owner_mark::mark_of(ALICE));
        assert_eq!(mark_check(&m, &idx), None);
        let m = marked(connected.clone(), crate::owner_mark::mark_of(ALICE));
        assert_eq!(mark_check(&m, &idx), None);
    }

    #[test]
    fn ping_sockets_added_to_built_maps_are_joined() {
        let mut sockets = vec![sock(L4::Udp, "0.0.0.0:62547", "0.0.0.0:0", BOB, 200)];
        let mut maps = SocketMaps::new(&sockets, [HOST4.parse().unwrap()]);
        let ping = flow(1, ("198.51.100.1:62547", "198.51.100.2:0"), None);
        let o = owners();
        {
            let idx = SocketIndex::with_maps(&sockets, &o, SocketMaps::new(&sockets, []));
            assert_eq!(
                idx.socket_inode(&ping),
                None,
                "a UDP port is not an echo id"
            );
        }
        sockets.push(sock(L4::Icmp, "0.0.0.0:62547", "0.0.0.0:0", ALICE, 100));
        maps.add(&sockets, 1);
        let idx = SocketIndex::with_maps(&sockets, &o, maps);
        assert_eq!(idx.socket_inode(&ping), Some(100));
        let udp = flow(UDP, ("198.51.100.1:62547", "198.51.100.2:53"), None);
        assert_eq!(idx.socket_inode(&udp), Some(200));
    }

    #[test]
    fn a_subordinate_uid_is_charged_to_the_owner_of_its_range() {
        // alice's rootless user namespace: her socket fchown'ed to one of her subordinate
        // uids, after its first packet (marked as hers) or before (marked as the sub uid).
        const SUB: u32 = 100_999;
        let subuids = SubUids::parse(&format!("alice:100000:65536\n{BOB}:300000:65536\n"), &|n| {
            (n == "alice").then_some(ALICE)
        });
        let s = [sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            SUB,
            100,
        )];
        let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
        let o = owners();
        let plain = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]);
        let idx = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]).with_subuids(&subuids);
        let got = attribute(&f, &idx, None, &LocalNets::defaults());
        assert!(matches!(
            got.verdict,
            Verdict::User(Attribution { uid: ALICE, .. })
        ));
        let before = attribute(&f, &plain, None, &LocalNets::defaults());
        assert!(matches!(
            before.verdict,
            Verdict::User(Attribution { uid: SUB, .. })
        ));
        for mark in [ALICE, SUB] {
            let m = marked(f.clone(), crate::owner_mark::mark_of(mark));
            assert_eq!(mark_check(&m, &idx), Some(MarkCheck::Agrees), "mark {mark}");
        }
        // Another user's range is not alice's.
        let bobs = marked(f.clone(), crate::owner_mark::mark_of(300_005));
        assert!(matches!(
            mark_check(&bobs, &idx),
            Some(MarkCheck::Disagrees { .. })
        ));
        // Her socket gone: the mark of a sub uid names her.
        let none = SocketIndex::new(&[], &o, [HOST4.parse().unwrap()])
            .with_subuids(&subuids)
            .with_marks(true);
        let m = marked(f, crate::owner_mark::mark_of(SUB));
        let got = attribute(&m, &none, None, &LocalNets::defaults());
        assert!(matches!(
            got.verdict,
            Verdict::User(Attribution { uid: ALICE, .. })
        ));
    }

    #[test]
    fn a_mark_is_checked_against_the_live_socket() {
        let s = [sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            ALICE,
            100,
        )];
        let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
        let o = owners();
        let idx = SocketIndex::new(&s, &o, [HOST4.parse().unwrap()]);
        let check = |mark| mark_check(&marked(f.clone(), mark), &idx);
        assert_eq!(check(0), None);
        assert_eq!(
            check(crate::owner_mark::mark_of(ALICE)),
            Some(MarkCheck::Agrees)
        );
        assert_eq!(
            check(crate::owner_mark::mark_of(BOB)),
            Some(MarkCheck::Disagrees {
                socket_uid: Some(ALICE)
            })
        );
        assert_eq!(check(42), Some(MarkCheck::Disagrees { socket_uid: None }));
        // A UDP entry may outlive its socket, and another user's may take up its ports.
        let u = [sock(
            L4::Udp,
            "198.51.100.1:5000",
            "198.51.100.2:53",
            ALICE,
            100,
        )];
        let uidx = SocketIndex::new(&u, &o, [HOST4.parse().unwrap()]);
        let q = flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None);
        assert_eq!(
            mark_check(&marked(q.clone(), crate::owner_mark::mark_of(BOB)), &uidx),
            None
        );
        assert_eq!(
            mark_check(&marked(q, 42), &uidx),
            Some(MarkCheck::Disagrees { socket_uid: None })
        );
        // An incoming connection accepted by a worker of another uid than the listener's
        // (nginx: root listens, `nobody` accepts): the SYN-ACK, sent for the listener,
        // marked it with the listener's uid. Not a disagreement; another uid still is.
        const NOBODY: u32 = 65534;
        let mut listener = sock(L4::Tcp, "0.0.0.0:80", "0.0.0.0:0", 0, 400);
        listener.state = crate::model::SocketState::Listen.raw();
        let web = [
            listener.clone(),
            sock(
                L4::Tcp,
                "198.51.100.1:80",
                "198.51.100.2:50000",
                NOBODY,
                401,
            ),
        ];
        let widx = SocketIndex::new(&web, &o, [HOST4.parse().unwrap()]);
        let inc = flow(TCP, ("198.51.100.2:50000", "198.51.100.1:80"), None);
        let wcheck = |mark| mark_check(&marked(inc.clone(), mark), &widx);
        assert_eq!(
            wcheck(crate::owner_mark::mark_of(0)),
            Some(MarkCheck::Agrees)
        );
        assert_eq!(
            wcheck(crate::owner_mark::mark_of(NOBODY)),
            Some(MarkCheck::Agrees)
        );
        assert_eq!(
            wcheck(crate::owner_mark::mark_of(BOB)),
            Some(MarkCheck::Disagrees {
                socket_uid: Some(0)
            })
        );
        // The listener closed since: nothing to hold the mark against.
        let alone = SocketIndex::new(&web[1..], &o, [HOST4.parse().unwrap()]);
        assert_eq!(
            mark_check(&marked(inc.clone(), crate::owner_mark::mark_of(0)), &alone),
            None
        );
        // No socket to compare with: a mark that could be netledger's says nothing.
        let none = SocketIndex::new(&[], &o, [HOST4.parse().unwrap()]);
        let g = marked(f.clone(), crate::owner_mark::mark_of(BOB));
        assert_eq!(mark_check(&g, &none), None);
    }

    #[test]
    fn a_picked_up_entry_continues_the_owner_of_the_deleted_one_either_way_round() {
        let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:443"), None);
        let alice = Attribution {
            cgroup: None,
            uid: ALICE,
            program: Some("curl".into()),
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        };
        let mut c = Continued::default();
        c.remember(&f.orig, &alice, 100);
        assert_eq!(c.owner_of(&f.orig), Some(alice.clone()));
        // The first packet after the deletion came from the server.
        let back = flow(TCP, ("198.51.100.2:443", "198.51.100.1:40000"), None);
        let got = c.owner_of(&back.orig).unwrap();
        assert_eq!((got.uid, got.direction), (ALICE, Direction::In));
        // Charged the right way round: the reply of the reversed entry is what alice sent.
        let other = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:443"), None);
        assert_eq!(c.owner_of(&other.orig), None);
        c.forget_before(101);
        assert!(c.is_empty());
    }

    #[rstest]
    #[case::outgoing_tcp_exact(
        vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", ALICE, 100)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
        user(ALICE, Direction::Out), "198.51.100.2", 80)]
    #[case::incoming_to_own_server_exact_reply_tuple(
        vec![sock(L4::Tcp, "198.51.100.1:8080", "198.51.100.2:50000", BOB, 200)],
        flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
        user(BOB, Direction::In), "198.51.100.2", 8080)]
    #[case::incoming_dnat_reply_tuple_holds(
        // Client hit 203.0.113.7:80, DNAT to the local 198.51.100.1:8080 server.
        vec![sock(L4::Tcp, "198.51.100.1:8080", "192.0.2.9:50000", BOB, 200)],
        flow(TCP, ("192.0.2.9:50000", "203.0.113.7:80"), Some(("198.51.100.1:8080", "192.0.2.9:50000"))),
        user(BOB, Direction::In), "192.0.2.9", 8080)]
    #[case::v6_outgoing(
        vec![sock(L4::Tcp, "[2001:db8::1]:40000", "[2001:db8::2]:443", ALICE, 100)],
        flow(TCP, ("[2001:db8::1]:40000", "[2001:db8::2]:443"), None),
        user(ALICE, Direction::Out), "2001:db8::2", 443)]
    #[case::tcp_socket_does_not_match_udp_flow(
        vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:53", ALICE, 100)],
        flow(UDP, ("198.51.100.1:40000", "198.51.100.2:53"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 53)]
    #[case::connected_udp_exact(
        vec![sock(L4::Udp, "198.51.100.1:5000", "198.51.100.2:53", ALICE, 100)],
        flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
        user(ALICE, Direction::Out), "198.51.100.2", 53)]
    #[case::unconnected_udp_bound_address(
        vec![sock(L4::Udp, "198.51.100.1:5000", "0.0.0.0:0", ALICE, 100)],
        flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
        user(ALICE, Direction::Out), "198.51.100.2", 53)]
    #[case::unconnected_udp_wildcard(
        vec![sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100)],
        flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
        user(ALICE, Direction::Out), "198.51.100.2", 53)]
    #[case::dual_stack_listener_serves_ipv4(
        vec![sock(L4::Tcp, "[::]:8080", "[::]:0", BOB, 200)],
        flow(TCP, ("198.51.100.2:50000", "198.51.100.1:8080"), None),
        user(BOB, Direction::In), "198.51.100.2", 8080)]
    #[case::exact_beats_bound(
        vec![
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
            sock(L4::Udp, "198.51.100.1:5000", "198.51.100.2:53", ALICE, 100),
        ],
        flow(UDP, ("198.51.100.1:5000", "198.51.100.2:53"), None),
        user(ALICE, Direction::Out), "198.51.100.2", 53)]
    #[case::time_wait_is_not_root(
        vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", 0, 0)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 80)]
    #[case::a_listener_on_the_remote_port_is_not_the_owner(
        // alice's download from R:8888, her socket gone, while bob listens on *:8888.
        vec![sock(L4::Tcp, "0.0.0.0:8888", "0.0.0.0:0", BOB, 200)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:8888"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 8888)]
    #[case::a_udp_socket_on_the_remote_port_is_not_the_owner(
        vec![sock(L4::Udp, "0.0.0.0:53", "0.0.0.0:0", BOB, 200)],
        flow(UDP, ("198.51.100.1:40000", "198.51.100.2:53"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 53)]
    #[case::a_listener_starts_no_connection(
        vec![sock(L4::Tcp, "0.0.0.0:40000", "0.0.0.0:0", BOB, 200)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 80)]
    #[case::an_address_bound_with_freebind_is_not_the_hosts(
        // bob's listener bound with IP_FREEBIND to R's address: a flow to R is not local.
        vec![sock(L4::Tcp, "198.51.100.2:7777", "0.0.0.0:0", BOB, 200)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.2:9000"), None),
        Verdict::Unattributed(Reason::NoSocket), "198.51.100.2", 9000)]
    #[case::reuseport_different_owners_is_ambiguous(
        vec![
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100),
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
        ],
        flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None),
        Verdict::Unattributed(Reason::Ambiguous), "198.51.100.2", 5000)]
    #[case::forwarded_has_no_socket(
        vec![],
        flow(TCP, ("203.0.113.5:40000", "192.0.2.80:443"), None),
        Verdict::Unattributed(Reason::Forwarded), "192.0.2.80", 443)]
    #[case::icmp_is_unattributed_by_protocol(
        vec![],
        flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None),
        Verdict::Unattributed(Reason::Protocol), "198.51.100.2", 0)]
    #[case::loopback_excluded(
        vec![sock(L4::Tcp, "127.0.0.1:40000", "127.0.0.1:80", ALICE, 100)],
        flow(TCP, ("127.0.0.1:40000", "127.0.0.1:80"), None),
        Verdict::Excluded(Some(Attribution { uid: ALICE, program: Some("curl".into()), direction: Direction::Out, via: Via::Direct, container: None, cgroup: None })),
        "127.0.0.1", 80)]
    #[case::lan_excluded_even_without_socket(
        vec![],
        flow(TCP, ("198.51.100.1:40000", "10.9.0.2:80"), None),
        Verdict::Excluded(None), "10.9.0.2", 80)]
    #[case::lan_icmp_excluded(
        vec![],
        flow(1, ("198.51.100.1:0", "10.9.0.2:0"), None),
        Verdict::Excluded(None), "10.9.0.2", 0)]
    #[case::to_the_hosts_own_public_address_excluded(
        vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.1:8080", ALICE, 100),
             sock(L4::Tcp, "198.51.100.1:8080", "198.51.100.1:40000", 0, 300)],
        flow(TCP, ("198.51.100.1:40000", "198.51.100.1:8080"), None),
        Verdict::Excluded(Some(Attribution { uid: ALICE, program: Some("curl".into()), direction: Direction::Out, via: Via::Direct, container: None, cgroup: None })),
        "198.51.100.1", 8080)]
    #[case::dnat_to_the_host_itself_excluded(
        // A local client to 203.0.113.7:443, DNAT'd in OUTPUT to this host's 8443.
        vec![],
        flow(TCP, ("198.51.100.1:40000", "203.0.113.7:443"), Some(("198.51.100.1:8443", "198.51.100.1:40000"))),
        Verdict::Excluded(None), "203.0.113.7", 443)]
    #[case::forwarded_lan_to_internet_not_excluded(
        vec![],
        flow(TCP, ("10.9.0.2:40000", "192.0.2.80:443"), None),
        Verdict::Unattributed(Reason::Forwarded), "192.0.2.80", 443)]
    fn join_shapes(
        #[case] sockets: Vec<Socket>,
        #[case] f: Flow,
        #[case] want: Verdict,
        #[case] remote: &str,
        #[case] port: u16,
    ) {
        let got = join(&sockets, &f, None, &LocalNets::defaults());
        assert_eq!(got.verdict, want);
        assert_eq!(got.remote, remote.parse::<IpAddr>().unwrap());
        assert_eq!(got.port, port);
    }

    #[test]
    fn gone_socket_keeps_prior_attribution() {
        let prior = Attribution {
            cgroup: None,
            uid: ALICE,
            program: Some("curl".into()),
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        };
        // Only a TIME_WAIT row (uid 0, inode 0) is left: it must not turn the flow into root's.
        let tw = vec![sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", 0, 0)];
        let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None);
        let got = join(&tw, &f, Some(&prior), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(prior.clone()));
        let got = join(&[], &f, Some(&prior), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(prior));
    }

    #[test]
    fn live_socket_beats_prior() {
        let prior = Attribution {
            cgroup: None,
            uid: BOB,
            program: None,
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        };
        let s = vec![sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:80",
            ALICE,
            100,
        )];
        let f = flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None);
        let got = join(&s, &f, Some(&prior), &LocalNets::defaults());
        assert_eq!(got.verdict, user(ALICE, Direction::Out));
    }

    #[test]
    fn kept_program_survives_when_processes_were_not_looked_up() {
        let s = vec![sock(
            L4::Tcp,
            "198.51.100.1:40001",
            "198.51.100.2:80",
            ALICE,
            300,
        )];
        let f = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None);
        let kept = Attribution {
            cgroup: None,
            uid: ALICE,
            program: Some("firefox".into()),
            direction: Direction::Out,
            via: Via::Direct,
            container: None,
        };
        // Inode 300 has no known process (not scanned this pass): the kept program stays.
        let got = join(&s, &f, Some(&kept), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(kept.clone()));
        // A socket now owned by another uid does not inherit the old program.
        let s = vec![sock(
            L4::Tcp,
            "198.51.100.1:40001",
            "198.51.100.2:80",
            BOB,
            300,
        )];
        let got = join(&s, &f, Some(&kept), &LocalNets::defaults());
        assert_eq!(
            got.verdict,
            Verdict::User(Attribution {
                cgroup: None,
                uid: BOB,
                program: None,
                direction: Direction::Out,
                via: Via::Direct,
                container: None,
            })
        );
        // The socket a new flow would be named through is the one to look up.
        let o = owners();
        let idx = SocketIndex::new(&s, &o, []);
        assert_eq!(idx.socket_inode(&f), Some(300));
        let icmp = flow(1, ("198.51.100.1:0", "198.51.100.2:0"), None);
        assert_eq!(idx.socket_inode(&icmp), None);
    }

    const ROOT: u32 = 0;
    const WWW: u32 = 33;

    fn holder(pid: u32, uid: u32, program: &str) -> Holder {
        Holder {
            pid,
            uid,
            program: program.into(),
        }
    }

    fn via(uid: u32, program: Option<&str>, via: Via) -> Attribution {
        Attribution {
            cgroup: None,
            uid,
            program: program.map(Into::into),
            direction: Direction::In,
            via,
            container: None,
        }
    }

    #[rstest]
    #[case::sshd_monitor_and_users_session(
        vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")],
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::order_of_holders_does_not_matter(
        vec![holder(701, ALICE, "sshd"), holder(700, ROOT, "sshd")],
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::the_users_lowest_pid_names_the_program(
        vec![holder(900, ALICE, "sftp-server"), holder(800, ALICE, "sshd"), holder(10, ROOT, "init")],
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::only_the_service_before_login_is_pending(
        vec![holder(700, ROOT, "sshd"), holder(650, ROOT, "sshd")],
        via(ROOT, Some("sshd"), Via::Pending))]
    #[case::two_users_are_ambiguous(
        vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "a"), holder(702, BOB, "b")],
        via(ROOT, Some("sshd"), Via::Ambiguous))]
    #[case::another_delegating_uid_is_no_user(
        vec![holder(700, WWW, "php-fpm"), holder(701, ALICE, "php")],
        via(ALICE, Some("php"), Via::Delegated(ROOT)))]
    #[case::nobody_left_holding_it(vec![], via(ROOT, None, Via::Pending))]
    fn delegation_rule(#[case] holders: Vec<Holder>, #[case] want: Attribution) {
        let d = Delegating::new([ROOT, WWW]);
        assert_eq!(delegate(ROOT, &holders, &d, Direction::In), want);
    }

    /// An sshd session: the accepted socket (root's) of an incoming connection to port 22.
    fn ssh_flow() -> (Vec<Socket>, Flow) {
        (
            vec![
                sock(L4::Tcp, "198.51.100.1:22", "198.51.100.2:50000", ROOT, 500),
                sock(L4::Tcp, "0.0.0.0:22", "0.0.0.0:0", ROOT, 400),
            ],
            flow(TCP, ("198.51.100.2:50000", "198.51.100.1:22"), None),
        )
    }

    #[rstest]
    #[case::a_users_process_holds_it(
        Some(vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")]), None,
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::not_looked_up_and_never_attributed_is_pending(
        None,
        None,
        via(ROOT, None, Via::Pending)
    )]
    #[case::looked_up_before_the_login_is_pending(
        Some(vec![holder(700, ROOT, "sshd")]), None, via(ROOT, Some("sshd"), Via::Pending))]
    #[case::settled_is_kept_without_looking(
        None,
        Some(via(ALICE, Some("sshd"), Via::Delegated(ROOT))),
        via(ALICE, Some("sshd"), Via::Delegated(ROOT))
    )]
    #[case::settled_is_kept_even_when_looked_up(
        Some(vec![holder(701, BOB, "sshd")]), Some(via(ALICE, Some("sshd"), Via::Delegated(ROOT))),
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::the_services_own_stays_so(
        Some(vec![holder(701, BOB, "sshd")]), Some(via(ROOT, Some("sshd"), Via::Own)),
        via(ROOT, Some("sshd"), Via::Own))]
    #[case::root_kept_from_before_delegation_stays_roots(
        None,
        Some(via(ROOT, Some("sshd"), Via::Direct)),
        via(ROOT, Some("sshd"), Via::Direct)
    )]
    #[case::pending_found_later(
        Some(vec![holder(701, ALICE, "sshd")]), Some(via(ROOT, Some("sshd"), Via::Pending)),
        via(ALICE, Some("sshd"), Via::Delegated(ROOT)))]
    #[case::pending_not_looked_up_stays_pending(
        None,
        Some(via(ROOT, Some("sshd"), Via::Pending)),
        via(ROOT, Some("sshd"), Via::Pending)
    )]
    fn join_through_a_delegating_socket(
        #[case] holders: Option<Vec<Holder>>,
        #[case] prior: Option<Attribution>,
        #[case] want: Attribution,
    ) {
        let (sockets, f) = ssh_flow();
        let none = HashMap::new();
        let d = Delegating::new([ROOT]);
        let held: Option<HashMap<u64, Vec<Holder>>> = holders.map(|h| [(500, h)].into());
        let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
            .with_delegation(&d, held.as_ref());
        assert_eq!(idx.delegated_socket(&f).map(|s| s.inode), Some(500));
        let got = attribute(&f, &idx, prior.as_ref(), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(want));
    }

    #[test]
    fn the_services_own_looked_at_again_goes_to_the_user_now_holding_it() {
        // A login slower than the grace: settled as root's own, then alice's session
        // process holds the socket. Only a socket looked at again is charged anew.
        let (sockets, f) = ssh_flow();
        let none = HashMap::new();
        let d = Delegating::new([ROOT]);
        let held: HashMap<u64, Vec<Holder>> = [(
            500,
            vec![holder(700, ROOT, "sshd"), holder(701, ALICE, "sshd")],
        )]
        .into();
        let own = via(ROOT, Some("sshd"), Via::Own);
        let again: HashSet<u64> = [500].into();
        let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
            .with_delegation(&d, Some(&held))
            .with_recheck(&again);
        let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
        assert_eq!(
            got.verdict,
            Verdict::User(via(ALICE, Some("sshd"), Via::Delegated(ROOT)))
        );
        // Still only the service's processes: its own, as it was.
        let only_root: HashMap<u64, Vec<Holder>> = [(500, vec![holder(700, ROOT, "sshd")])].into();
        let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
            .with_delegation(&d, Some(&only_root))
            .with_recheck(&again);
        let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(own.clone()));
        // Not looked at again: its own, whoever holds it.
        let nothing = HashSet::new();
        let idx = SocketIndex::new(&sockets, &none, [HOST4.parse().unwrap()])
            .with_delegation(&d, Some(&held))
            .with_recheck(&nothing);
        let got = attribute(&f, &idx, Some(&own), &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(own));
    }

    #[test]
    fn without_delegating_uids_or_for_other_uids_the_socket_uid_is_charged() {
        let (sockets, f) = ssh_flow();
        let none = HashMap::new();
        let held: HashMap<u64, Vec<Holder>> = [(500, vec![holder(701, ALICE, "sshd")])].into();
        // Delegation off: root, as before.
        let off = Delegating::new([]);
        let idx = SocketIndex::new(&sockets, &none, []).with_delegation(&off, Some(&held));
        assert_eq!(idx.delegated_socket(&f), None);
        let got = attribute(&f, &idx, None, &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(via(ROOT, None, Via::Direct)));
        // A socket of a uid that delegates nothing is its own, whoever holds it.
        let d = Delegating::new([WWW]);
        let idx = SocketIndex::new(&sockets, &none, []).with_delegation(&d, Some(&held));
        let got = attribute(&f, &idx, None, &LocalNets::defaults());
        assert_eq!(got.verdict, Verdict::User(via(ROOT, None, Via::Direct)));
    }

    #[rstest]
    #[case(None, Via::Direct)]
    #[case(Some(0), Via::Delegated(0))]
    #[case(Some(33), Via::Delegated(33))]
    #[case(Some(-1), Via::Own)]
    #[case(Some(-2), Via::Ambiguous)]
    #[case(Some(-3), Via::Pending)]
    fn via_codes_round_trip(#[case] code: Option<i64>, #[case] v: Via) {
        assert_eq!(Via::from_code(code), v);
        assert_eq!(v.code(), code);
    }

    #[test]
    fn counting_local_charges_lan_to_its_user() {
        let s = vec![sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "10.9.0.2:80",
            ALICE,
            100,
        )];
        let f = flow(TCP, ("198.51.100.1:40000", "10.9.0.2:80"), None);
        let got = join(&s, &f, None, &LocalNets::new([]));
        assert_eq!(got.verdict, user(ALICE, Direction::Out));
    }

    /// Sockets added to an index's maps (a pass's second socket read) are indexed as one
    /// build over all of them would: a same-port socket of another owner makes the bound
    /// address ambiguous, a new exact socket is found, the first ones keep their places.
    #[test]
    fn maps_extended_with_more_sockets_equal_one_build_over_all() {
        let sockets = vec![
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", ALICE, 100),
            sock(L4::Tcp, "198.51.100.1:40000", "198.51.100.2:80", ALICE, 101),
            sock(L4::Udp, "0.0.0.0:5000", "0.0.0.0:0", BOB, 200),
            sock(L4::Tcp, "198.51.100.1:40001", "198.51.100.2:80", BOB, 201),
        ];
        let none = HashMap::new();
        let host = || [HOST4.parse::<IpAddr>().unwrap()];
        let mut maps = SocketMaps::new(&sockets[..2], host());
        maps.add(&sockets, 2);
        let extended = SocketIndex::with_maps(&sockets, &none, maps);
        let whole = SocketIndex::new(&sockets, &none, host());
        for f in [
            flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None),
            flow(TCP, ("198.51.100.1:40000", "198.51.100.2:80"), None),
            flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None),
            flow(TCP, ("198.51.100.1:40002", "198.51.100.2:80"), None),
        ] {
            assert_eq!(extended.lookup(&f), whole.lookup(&f));
        }
        let udp = flow(UDP, ("198.51.100.2:9999", "198.51.100.1:5000"), None);
        assert_eq!(extended.lookup(&udp), Lookup::Ambiguous);
        let bobs = flow(TCP, ("198.51.100.1:40001", "198.51.100.2:80"), None);
        assert_eq!(extended.socket_inode(&bobs), Some(201));
    }

    #[test]
    fn custom_local_nets_replace_defaults() {
        let nets = LocalNets::new(["198.51.100.0/24".parse().unwrap()]);
        assert!(nets.contains("198.51.100.9".parse().unwrap()));
        assert!(!nets.contains("10.0.0.1".parse().unwrap()));
        // IPv4-mapped addresses compare as IPv4.
        assert!(nets.contains("::ffff:198.51.100.9".parse().unwrap()));
        assert!(LocalNets::defaults().contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(LocalNets::defaults().contains("ff02::1".parse().unwrap()));
        assert!(!LocalNets::defaults().contains("2001:db8::1".parse().unwrap()));
    }
}
