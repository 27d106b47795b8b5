//! Flows on a delegating service's socket that no user's process held at their NEW event.
//!
//! sshd accepts a connection as root; the process of the user who logs in appears only
//! after authentication (~100 ms later for a key, as long as typing takes for a password).
//! The NEW event's owner is therefore the service, [`Via::Pending`]. The namer thread
//! looks at such a flow's socket again (sock_diag for the accepted socket, then every
//! process holding it, in the namer's walks of every process, at their bounded cost) until
//! a user's process holds it, the flow ends (its DESTROY passes through the namer), or its
//! grace runs out: then the writer's passes settle it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::attribute::{
    attribute, Attribution, Delegating, Direction, LocalNets, SocketIndex, Via,
};
use crate::model::{Flow, FlowKey, L4};
use crate::sources::sockdiag::SockDiag;

use super::batch::Resolved;
use super::programs::Namer;

/// Flows looked after at once, at most (a flood of connections to sshd that never log in):
/// past it the oldest are left to the passes.
const MAX_CLAIMS: usize = 4096;

/// One flow waiting for a user's process to hold its socket.
struct Claim {
    flow: Flow,
    owner: Attribution,
    at_ms: i64,
    until: Instant,
}

/// The flows the namer looks after.
pub struct Claims {
    list: Vec<Claim>,
    delegating: Delegating,
    grace: Duration,
    diag: Option<SockDiag>,
    /// Owners found so far.
    pub found: u64,
}

impl Claims {
    /// Look after the flows of `delegating` uids' sockets for `grace` after their NEW.
    pub fn new(delegating: Delegating, grace: Duration) -> Claims {
        let diag = match SockDiag::open() {
            Ok(d) => Some(d),
            Err(e) => {
                tracing::warn!("{e}: the holders of services' sockets are left to the passes");
                None
            }
        };
        Claims {
            list: Vec::new(),
            delegating,
            grace,
            diag,
            found: 0,
        }
    }

    /// Whether any flow is looked after.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Look after `flow`, whose NEW event (at `at_ms`) found the pending `owner`.
    pub fn add(&mut self, flow: Flow, owner: Attribution, at_ms: i64) {
        if self.diag.is_none() || self.grace.is_zero() {
            return;
        }
        if self.list.len() >= MAX_CLAIMS {
            self.list.remove(0);
        }
        let until = Instant::now() + self.grace;
        self.list.push(Claim {
            flow,
            owner,
            at_ms,
            until,
        });
    }

    /// The flow ended (its DESTROY is on its way to the writer, after what was sent).
    pub fn ended(&mut self, key: &FlowKey) {
        self.list.retain(|c| c.flow.key() != *key);
    }

    /// Look at the holders of the flows' sockets, when `namer` may walk every process now:
    /// the owners found, as NEW events for the writer (stored as a NEW's owner is).
    pub fn check(&mut self, namer: &mut Namer) -> Vec<Resolved> {
        let now = Instant::now();
        self.list.retain(|c| c.until > now);
        if self.list.is_empty() || !namer.walk_due() {
            return Vec::new();
        }
        let Some(diag) = self.diag.as_mut() else {
            return Vec::new();
        };
        // The accepted socket exists once the handshake completed (the NEW event found
        // the listener's); each is one exact lookup in the kernel.
        let mut sockets = Vec::with_capacity(self.list.len());
        for (i, c) in self.list.iter().enumerate() {
            let Some(l4) = L4::from_ipproto(c.flow.orig.proto) else {
                continue;
            };
            let (o, r) = (&c.flow.orig, &c.flow.reply);
            let (local, remote) = match c.owner.direction {
                Direction::Out => (o.src_sa(), o.dst_sa()),
                Direction::In => (r.src_sa(), r.dst_sa()),
            };
            if let Ok(Some(s)) = diag.lookup(l4, local, remote) {
                if s.has_owner() {
                    sockets.push((i, s));
                }
            }
        }
        let every: HashSet<u64> = sockets
            .iter()
            .filter(|(_, s)| self.delegating.contains(s.uid))
            .map(|(_, s)| s.inode)
            .collect();
        if every.is_empty() {
            return Vec::new();
        }
        let holders = namer.holders(&every);
        let none = HashMap::new();
        let nets = LocalNets::new([]);
        let mut settled = HashSet::new();
        let mut out = Vec::new();
        for (i, s) in &sockets {
            let c = &self.list[*i];
            let idx = SocketIndex::new(std::slice::from_ref(s), &none, [])
                .with_delegation(&self.delegating, Some(&holders));
            let at = attribute(&c.flow, &idx, Some(&c.owner), &nets);
            if let Some(a) = at.attribution().filter(|a| a.via != Via::Pending) {
                out.push(Resolved::New {
                    flow: c.flow.clone(),
                    owner: Some(a.clone()),
                    at_ms: c.at_ms,
                });
                settled.insert(*i);
            }
        }
        let mut i = 0;
        self.list.retain(|_| {
            i += 1;
            !settled.contains(&(i - 1))
        });
        self.found += out.len() as u64;
        out
    }
}
