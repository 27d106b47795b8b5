//! Flows on a delegating service's socket that no user's process held at their NEW event.
//!
//! sshd accepts a connection as root; the process of the user who logs in appears only
//! after authentication (~100 ms later for a key, as long as typing takes for a password).
//! The NEW event's owner is therefore the service, [`Via::Pending`]. The namer thread
//! looks at such a flow's socket again every [`CLAIM_CHECK`] (sock_diag for the
//! accepted socket, an exact lookup) until a user's process holds it, the flow ends (its
//! DESTROY passes through the namer), or its grace runs out: then the writer's passes
//! settle it. Which processes it looks at:
//! - the service's processes seen holding the socket, and their children: sshd's
//!   privileged monitor forks the user's session process. A few directories, every look.
//! - every process (a service may pass the socket to an unrelated process), in the namer's
//!   walks of every process, at their bounded cost; they also find the service's holders.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::attribute::{
    attribute, Attribution, Delegating, Direction, LocalNets, SocketIndex, Via,
};
use crate::model::{Flow, FlowKey, Socket, L4};
use crate::sources::processes::{children, scan_pids_holders, Holder};
use crate::sources::sockdiag::SockDiag;

use super::batch::Resolved;
use super::programs::Namer;

/// Least time between two looks: each is a sock_diag lookup per flow and a few
/// directories (a walk of every process only when one is due). A session's process may
/// live a fraction of a second after the login (`git fetch`, `ssh host cmd`).
pub const CLAIM_CHECK: Duration = Duration::from_millis(20);

/// Flows looked after at once, at most (a flood of connections to sshd that never log in):
/// past it the oldest of the remote address with the most are left to the passes.
const MAX_CLAIMS: usize = 4096;

/// One flow waiting for a user's process to hold its socket.
struct Claim {
    flow: Flow,
    owner: Attribution,
    at_ms: i64,
    until: Instant,
    /// The service's processes seen holding its socket, or at first the one holding the
    /// socket its NEW event found (the listener): their children are looked at.
    family: Vec<u32>,
}

/// The flows the namer looks after.
pub struct Claims {
    list: Vec<Claim>,
    proc_root: PathBuf,
    delegating: Delegating,
    grace: Duration,
    diag: Option<SockDiag>,
    /// When the next look may run.
    next: Option<Instant>,
    /// Owners found so far.
    pub found: u64,
}

/// The remote end of a claimed flow, as far as one party surely holds it: the address for
/// IPv4, its /64 for IPv6 (one host gets a /64 to itself).
fn remote_prefix(flow: &Flow) -> IpAddr {
    let ip = crate::model::canonical_ip(flow.orig.src);
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => IpAddr::V6((v6.to_bits() & !((1u128 << 64) - 1)).into()),
    }
}

/// Which claim to leave to the passes when the list is full and `new` comes: the oldest
/// of the remote (prefix) `new` comes from when it already has some, else the oldest of
/// the remote with the most. A flood from outside (connections that never log in) then
/// evicts its own claims, never another user's login in progress.
fn evictee(list: &[Claim], new: &Flow) -> usize {
    let from = remote_prefix(new);
    if let Some(i) = list.iter().position(|c| remote_prefix(&c.flow) == from) {
        return i;
    }
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for c in list {
        *counts.entry(remote_prefix(&c.flow)).or_default() += 1;
    }
    let most = counts.values().copied().max().unwrap_or(0);
    list.iter()
        .position(|c| counts[&remote_prefix(&c.flow)] == most)
        .unwrap_or(0)
}

/// The connected socket of each claim's flow (with the claim's place), where there is
/// one: the accepted socket exists once the handshake completed (the NEW event found the
/// listener's); each is one exact lookup in the kernel.
fn accepted_sockets(list: &[Claim], diag: &mut SockDiag) -> Vec<(usize, Socket)> {
    let mut sockets: Vec<(usize, Socket)> = Vec::with_capacity(list.len());
    for (i, c) in list.iter().enumerate() {
        let Some(l4) = L4::from_ipproto(c.flow.orig.proto) else {
            continue;
        };
        let (o, r) = (&c.flow.orig, &c.flow.reply);
        let (local, remote) = match c.owner.direction {
            Direction::Out => (o.src_sa(), o.dst_sa()),
            Direction::In => (r.src_sa(), r.dst_sa()),
        };
        // The kernel's lookup answers with the listener when the connection has no
        // socket of its own (not accepted yet, or closed): not this flow's.
        if let Ok(Some(s)) = diag.lookup(l4, local, remote) {
            if s.has_owner() && s.remote == remote {
                sockets.push((i, s));
            }
        }
    }
    sockets
}

impl Claims {
    /// Look after the flows of `delegating` uids' sockets for `grace` after their NEW.
    pub fn new(proc_root: PathBuf, delegating: Delegating, grace: Duration) -> Claims {
        let diag = match SockDiag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("{e}: the holders of services' sockets are left to the passes");
                None
            }
        };
        Claims {
            list: Vec::new(),
            proc_root,
            delegating,
            grace,
            diag,
            next: None,
            found: 0,
        }
    }

    /// Whether any flow is looked after.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Look after `flow`, whose NEW event (at `at_ms`) found the pending `owner` through a
    /// socket held by `holder` (the service's listener, when the connection was not
    /// accepted yet): its children are where the flow's socket goes.
    pub fn add(&mut self, flow: Flow, owner: Attribution, at_ms: i64, holder: Option<u32>) {
        if self.diag.is_none() || self.grace.is_zero() {
            return;
        }
        if self.list.len() >= MAX_CLAIMS {
            let i = evictee(&self.list, &flow);
            self.list.remove(i);
        }
        let until = Instant::now() + self.grace;
        self.list.push(Claim {
            flow,
            owner,
            at_ms,
            until,
            family: holder.into_iter().collect(),
        });
    }

    /// The flow ended (its DESTROY is on its way to the writer, after what was sent).
    pub fn ended(&mut self, key: &FlowKey) {
        self.list.retain(|c| c.flow.key() != *key);
    }

    /// Look at the holders of the flows' sockets: the owners found, as NEW events for the
    /// writer (stored as a NEW's owner is).
    pub fn check(&mut self, namer: &mut Namer) -> Vec<Resolved> {
        let now = Instant::now();
        self.list.retain(|c| c.until > now);
        if self.list.is_empty() || self.next.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.next = Some(now + CLAIM_CHECK);
        let Some(diag) = self.diag.as_mut() else {
            return Vec::new();
        };
        let sockets = accepted_sockets(&self.list, diag);
        let delegating = self.delegating.clone();
        let inodes = |which: &dyn Fn(usize) -> bool| -> HashSet<u64> {
            sockets
                .iter()
                .filter(|(i, s)| which(*i) && delegating.contains(s.uid))
                .map(|(_, s)| s.inode)
                .collect()
        };
        // 1. The service's processes seen so far and their children.
        let mut pids = Vec::new();
        for (i, _) in &sockets {
            for &pid in &self.list[*i].family {
                pids.push(pid);
                pids.extend(children(&self.proc_root, pid));
            }
        }
        let mut holders = if pids.is_empty() {
            HashMap::new()
        } else {
            scan_pids_holders(&self.proc_root, &pids, &inodes(&|_| true)).holders
        };
        let mut settled = self.settle(&sockets, &holders);
        self.learn(&sockets, &holders, &settled);
        // 2. Every process, when a walk is due, for the flows still waiting.
        let left = inodes(&|i| !settled.contains_key(&i));
        if !left.is_empty() && namer.walk_due() {
            holders = namer.holders(&left);
            let more = self.settle(&sockets, &holders);
            self.learn(&sockets, &holders, &more);
            settled.extend(more);
        }
        tracing::debug!(
            flows = self.list.len(),
            sockets = sockets.len(),
            children_of = ?pids,
            found = settled.len(),
            "looked at the holders of services' sockets"
        );
        let mut out = Vec::with_capacity(settled.len());
        for (i, a) in &settled {
            let c = &self.list[*i];
            out.push(Resolved::New {
                flow: c.flow.clone(),
                owner: Some(a.clone()),
                at_ms: c.at_ms,
            });
        }
        let mut i = 0;
        self.list.retain(|_| {
            i += 1;
            !settled.contains_key(&(i - 1))
        });
        self.found += out.len() as u64;
        out
    }

    /// The service's processes now holding the sockets of the flows still waiting: the
    /// ones whose children to look at from now on (not the listener's any more, whose
    /// children are every session's).
    fn learn(
        &mut self,
        sockets: &[(usize, Socket)],
        holders: &HashMap<u64, Vec<Holder>>,
        settled: &HashMap<usize, Attribution>,
    ) {
        for (i, s) in sockets {
            if settled.contains_key(i) {
                continue;
            }
            if let Some(h) = holders.get(&s.inode).filter(|h| !h.is_empty()) {
                self.list[*i].family = h.iter().map(|h| h.pid).collect();
            }
        }
    }

    /// The claims (by index) whose socket's holders name an owner that is not pending.
    fn settle(
        &self,
        sockets: &[(usize, Socket)],
        holders: &HashMap<u64, Vec<Holder>>,
    ) -> HashMap<usize, Attribution> {
        let none = HashMap::new();
        let nets = LocalNets::new([]);
        let mut out = HashMap::new();
        for (i, s) in sockets {
            let c = &self.list[*i];
            let idx = SocketIndex::new(std::slice::from_ref(s), &none, [])
                .with_delegation(&self.delegating, Some(holders));
            let at = attribute(&c.flow, &idx, Some(&c.owner), &nets);
            if let Some(a) = at.attribution().filter(|a| a.via != Via::Pending) {
                out.insert(*i, a.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn flow(src: &str, sport: u16) -> Flow {
        let remote = std::net::SocketAddr::new(src.parse().unwrap(), sport).to_string();
        Flow {
            id: u32::from(sport),
            ..testkit::flow(testkit::TCP, (&remote, "198.51.100.1:22"), None)
        }
    }

    fn claim(f: Flow) -> Claim {
        Claim {
            flow: f,
            owner: Attribution {
                cgroup: None,
                uid: 0,
                program: None,
                direction: Direction::In,
                via: Via::Pending,
                container: None,
            },
            at_ms: 0,
            until: Instant::now(),
            family: Vec::new(),
        }
    }

    #[test]
    fn a_flood_evicts_its_own_claims_not_a_login_in_progress() {
        // alice's login first, then a flood from one address, then one from a /64.
        let mut list = vec![claim(flow("203.0.113.7", 40000))];
        list.extend((0..10).map(|i| claim(flow("192.0.2.66", 1000 + i))));
        // The flooder's next connection evicts its own oldest, not alice's.
        assert_eq!(evictee(&list, &flow("192.0.2.66", 2000)), 1);
        // A newcomer (bob's login) evicts the oldest of the address with the most.
        assert_eq!(evictee(&list, &flow("198.51.100.9", 3000)), 1);
        // IPv6: one /64 is one party, whatever its addresses.
        let mut v6 = vec![claim(flow("2001:db8:1::5", 40000))];
        v6.extend((0..10).map(|i| claim(flow(&format!("2001:db8:2::{i:x}"), 1000 + i))));
        assert_eq!(evictee(&v6, &flow("2001:db8:2::ffff", 2000)), 1);
        assert_eq!(evictee(&v6, &flow("2001:db8:3::1", 2000)), 1);
        // alice's own next connection from her address evicts her oldest.
        assert_eq!(evictee(&list, &flow("203.0.113.7", 40001)), 0);
    }
}
