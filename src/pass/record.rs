//! One record per flow ([`FlowRecord`]): what a pass knows of a flow — the flow, its saved
//! state, an owner known besides, its live socket, its verdict — carried through the
//! stages, each a function of the records. Everything here is pure: the kernel reads and
//! the process walks are the caller's ([`super`]).
//!
//! The stages, in the order a pass runs them:
//! 1. [`records`]: the dump's flows, each with its saved state (looked up once);
//! 2. [`add_known`], [`continue_picked_up`]: owners known besides the saved state;
//! 3. [`look_up`]: each flow's live socket, once, on the pass's one [`SocketIndex`];
//! 4. [`wanted_inodes`], [`delegated_inodes`], [`own_inodes`]: whose processes to read;
//! 5. [`check_marks`], [`attribute_all`]: the marks held against the sockets, the verdicts;
//! 6. [`needs_retry`], [`reattribute`]: flows born after the socket read, once more;
//! 7. [`container_candidates`]: flows the host's sockets do not explain, for the
//!    containers' sockets.
//!
//! The accounting then reads each record as an [`account::Seen`](crate::account::Seen).

use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::IpAddr;

use crate::account::{FlowState, Seen};
use crate::attribute::{
    attribute_looked, mark_check_looked, Attributed, Attribution, Continued, Direction, LocalNets,
    Lookup, Reason, SocketIndex, Verdict, Via,
};
use crate::containers;
use crate::live::Observed;
use crate::model::{FastSet, Flow, FlowKey, L4};
use crate::owner_mark::trust::MarkTrust;
use crate::sources::conntrack::{Dump, Entry};

/// What a pass knows of one flow; each stage reads it and adds to it.
#[derive(Debug, Clone)]
pub struct FlowRecord<'s> {
    /// The flow as the dump showed it (`&entry.flow`: what every stage reads).
    pub flow: &'s Flow,
    /// Its entry of the dump (the dump keeps it): the flow and what the entry says
    /// beside it, such as a TCP entry the kernel picked up in the middle of its
    /// connection (see [`Continued`]).
    pub entry: &'s Entry,
    /// Its saved state (None: seen for the first time).
    pub saved: Option<&'s FlowState>,
    /// An owner known besides the saved state, for a flow without a settled one: the
    /// daemon's owner found at its NEW event, the earlier entry of a picked-up connection.
    pub known: Option<Box<Attribution>>,
    /// Its live socket on the pass's index ([`look_up`]).
    pub look: Lookup,
    /// Where its bytes go ([`attribute_all`]; None before).
    pub attributed: Option<Attributed>,
}

impl<'s> FlowRecord<'s> {
    /// An entry of the dump with its saved state; nothing looked up yet.
    pub fn new(entry: &'s Entry, saved: Option<&'s FlowState>) -> FlowRecord<'s> {
        FlowRecord {
            flow: &entry.flow,
            entry,
            saved,
            known: None,
            look: Lookup::Unmatched,
            attributed: None,
        }
    }

    /// Its saved state when it is this flow's, not another's under the same key
    /// ([`FlowState::replaced_by`]: an entry that ended, whose owner is not this one's).
    pub fn own_saved(&self) -> Option<&'s FlowState> {
        self.saved.filter(|s| !s.replaced_by(self.flow))
    }

    /// The attribution its saved state keeps (none from another flow's).
    pub fn saved_attribution(&self) -> Option<&'s Attribution> {
        self.own_saved().and_then(|s| s.attribution.as_ref())
    }

    /// What the flow already had: its saved attribution once settled; else an owner known
    /// besides (found meanwhile for a held flow: it beats the saved pending one), else
    /// the saved pending one.
    pub fn prior(&self) -> Option<&Attribution> {
        match self.saved_attribution() {
            Some(s) if s.via != Via::Pending => Some(s),
            s => match self.known.as_deref() {
                Some(k) if s.is_none() || k.via != Via::Pending => Some(k),
                _ => s,
            },
        }
    }

    /// Whether it has no settled owner yet (new, or held back pending).
    pub fn unsettled(&self) -> bool {
        self.prior().is_none_or(|a| a.via == Via::Pending)
    }

    /// Its verdict (after [`attribute_all`]).
    pub fn verdict(&self) -> &Attributed {
        self.attributed
            .as_ref()
            .expect("a flow is attributed before its verdict is read")
    }

    /// The record as the accounting reads it.
    pub fn seen(&self) -> Seen<'_> {
        Seen {
            flow: self.flow,
            attributed: self.verdict(),
            saved: self.saved,
        }
    }

    /// Whether its counters moved since the saved state.
    fn moved(&self) -> bool {
        self.own_saved().is_some_and(|o| {
            Some(o.orig) != self.flow.orig_counters || Some(o.reply) != self.flow.reply_counters
        })
    }

    /// Whether its verdict is unattributed for one of `reasons`.
    fn unattributed(&self, reasons: &[Reason]) -> bool {
        matches!(&self.verdict().verdict, Verdict::Unattributed(r) if reasons.contains(r))
    }
}

/// Stage 1: the records of `dump`'s flows, each with its saved state in `prev`, looked
/// up once for the attribution and the accounting both.
pub fn records<'s, S: BuildHasher>(
    dump: &'s Dump,
    prev: &'s HashMap<FlowKey, FlowState, S>,
) -> Vec<FlowRecord<'s>> {
    dump.entries
        .iter()
        .map(|entry| FlowRecord::new(entry, saved_state(prev, &entry.flow)))
        .collect()
}

/// The saved state of `flow`: under its key, else, for an ICMP echo, under the key it had
/// before the echo id was part of a ping's identity ([`key_before_echo_ids`]): an entry
/// live across that upgrade goes on from what was charged of it, not from zero again.
pub fn saved_state<'s, S: BuildHasher>(
    prev: &'s HashMap<FlowKey, FlowState, S>,
    flow: &Flow,
) -> Option<&'s FlowState> {
    let key = flow.key();
    prev.get(&key)
        .or_else(|| prev.get(&key_before_echo_ids(&key)?))
}

/// The key an ICMP echo's entry was saved under before the echo id was part of a ping's
/// identity: the same entry (its conntrack id), source port 0. None for other flows.
pub fn key_before_echo_ids(key: &FlowKey) -> Option<FlowKey> {
    let ping = L4::from_ipproto(key.orig.proto).is_some_and(L4::is_ping);
    let mut before = *key;
    before.orig.sport = 0;
    (ping && key.orig.sport != 0).then_some(before)
}

/// The records as the read-only views read them: each entry with its verdict, in the
/// dump's order.
pub fn observed(records: Vec<FlowRecord>) -> Vec<Observed> {
    records
        .into_iter()
        .map(|r| Observed {
            entry: r.entry.clone(),
            at: r.attributed.expect("every flow of a pass is attributed"),
        })
        .collect()
}

/// Stage 2: the owners `known` from elsewhere (the daemon's, found at a flow's NEW event
/// and not written yet) of the flows without a settled saved attribution.
pub fn add_known(records: &mut [FlowRecord], known: &dyn Fn(&FlowKey) -> Option<Attribution>) {
    for r in records {
        if r.saved_attribution().is_none_or(|a| a.via == Via::Pending) {
            r.known = known(&r.flow.key()).map(Box::new);
        }
    }
}

/// Stage 2: entries the kernel picked up in the middle of a connection whose earlier entry
/// was deleted (see [`Continued`]) continue that entry's owner: the earlier entry is still
/// in the saved state `prev`, missing from this dump.
pub fn continue_picked_up<S: BuildHasher>(
    records: &mut [FlowRecord],
    prev: &HashMap<FlowKey, FlowState, S>,
) {
    let picked = |r: &FlowRecord| r.entry.picked_up && r.own_saved().is_none() && r.known.is_none();
    if !records.iter().any(picked) {
        return;
    }
    let present: FastSet<FlowKey> = records.iter().map(|r| r.flow.key()).collect();
    let mut ended = Continued::default();
    for (k, s) in prev {
        if let (Some(a), false) = (&s.attribution, present.contains(k)) {
            ended.remember(&k.orig, a, s.last_seen);
        }
    }
    for r in records.iter_mut().filter(|r| picked(r)) {
        r.known = ended.owner_of(&r.flow.orig).map(Box::new);
    }
}

/// Stage 3: each flow's live socket on `idx`, looked up once for every later stage (a
/// lookup reads only the index's maps: the same on the index with owners, holders and
/// marks filled in).
pub fn look_up(records: &mut [FlowRecord], idx: &SocketIndex) {
    for r in records {
        r.look = idx.lookup(r.flow);
    }
}

/// Stage 4: the sockets whose programs are looked up: those of the flows not attributed
/// before (a flow keeps the program it had, so a steady pass walks no /proc/PID/fd).
pub fn wanted_inodes(records: &[FlowRecord], idx: &SocketIndex) -> HashSet<u64> {
    records
        .iter()
        .filter(|r| r.prior().is_none())
        .filter_map(|r| idx.socket_of(r.look).map(|s| s.inode))
        .collect()
}

/// Stage 4: the inodes of the delegating sockets whose every holder a pass looks up:
/// those of the flows without a settled attribution (new, or held back) whose traffic is
/// charged to someone (local traffic is not: it is not worth a walk of every process).
/// `only` restricts them to some inodes.
pub fn delegated_inodes(
    records: &[FlowRecord],
    idx: &SocketIndex,
    nets: &LocalNets,
    only: Option<&HashSet<u64>>,
) -> HashSet<u64> {
    records
        .iter()
        .filter(|r| r.unsettled())
        .filter_map(|r| Some((r, idx.delegated_of(r.look)?.inode)))
        .filter(|(_, ino)| only.is_none_or(|o| o.contains(ino)))
        .filter(|(r, _)| {
            let at = attribute_looked(r.flow, idx, &r.look, r.prior(), nets);
            !matches!(at.verdict, Verdict::Excluded(_))
        })
        .map(|(_, ino)| ino)
        .collect()
}

/// Whether a flow settled as a delegating service's own incoming one moved this pass:
/// then the holders of such sockets are looked at again ([`own_inodes`]).
pub fn own_moved(records: &[FlowRecord]) -> bool {
    records.iter().any(|r| is_own_incoming(r) && r.moved())
}

fn is_own_incoming(r: &FlowRecord) -> bool {
    r.prior()
        .is_some_and(|a| a.via == Via::Own && a.direction == Direction::In)
}

/// Stage 4: the connected sockets of incoming flows settled as a delegating service's
/// own: looked at again for a user's process holding them now (a login slower than
/// `delegate_grace`: a slow `ProxyCommand`, a held-up PAM step), so that what they move
/// from then on is that user's. Outgoing ones and local traffic are not.
pub fn own_inodes(records: &[FlowRecord], idx: &SocketIndex, nets: &LocalNets) -> HashSet<u64> {
    records
        .iter()
        .filter(|r| is_own_incoming(r))
        .filter(|r| !nets.contains(r.flow.orig.src))
        .filter_map(|r| idx.delegated_of(r.look))
        .filter(|s| !(s.remote.port() == 0 && s.remote.ip().is_unspecified()))
        .map(|s| s.inode)
        .collect()
}

/// Stage 5: every mark held against its flow's live socket, before any is believed.
pub fn check_marks(records: &[FlowRecord], idx: &SocketIndex, marks: &MarkTrust) {
    for r in records {
        if let Some(c) = mark_check_looked(r.flow, idx, &r.look) {
            marks.check(c, r.flow);
        }
    }
}

/// Stage 5: every flow's verdict on `idx`.
pub fn attribute_all(records: &mut [FlowRecord], idx: &SocketIndex, nets: &LocalNets) {
    for r in records {
        let at = attribute_looked(r.flow, idx, &r.look, r.prior(), nets);
        r.attributed = Some(at);
    }
}

/// The flows charged to a user by their owner mark alone: no kept owner, no socket named.
pub fn by_mark(records: &[FlowRecord]) -> usize {
    records
        .iter()
        .filter(|r| r.prior().is_none() && !matches!(r.look, Lookup::Socket { .. }))
        .filter(|r| matches!(r.verdict().verdict, Verdict::User(_)))
        .count()
}

/// Stage 6: whether a new flow found no socket (born after the socket read, maybe).
pub fn needs_retry(records: &[FlowRecord]) -> bool {
    records
        .iter()
        .any(|r| r.own_saved().is_none() && r.unattributed(&[Reason::NoSocket]))
}

/// Stage 6: the unattributed flows once more, on an index over more sockets (`idx`, the
/// pass's index with a second read's new sockets added, and [`look_up`] on it again):
/// their verdict is replaced. The others keep theirs.
pub fn reattribute(records: &mut [FlowRecord], idx: &SocketIndex, nets: &LocalNets) {
    for r in records {
        if matches!(r.verdict().verdict, Verdict::Unattributed(_)) {
            let at = attribute_looked(r.flow, idx, &r.look, r.prior(), nets);
            r.attributed = Some(at);
        }
    }
}

/// Stage 7: the new flows the host's sockets do not explain (`is_host` tells the host's
/// addresses), each with its inner end: a container's, maybe.
pub fn container_candidates<'r, 's>(
    records: &'r mut [FlowRecord<'s>],
    is_host: &dyn Fn(IpAddr) -> bool,
) -> Vec<(&'r mut FlowRecord<'s>, IpAddr)> {
    records
        .iter_mut()
        .filter(|r| {
            r.own_saved().is_none() && r.unattributed(&[Reason::Forwarded, Reason::NoSocket])
        })
        .filter_map(|r| containers::inner_end(r.flow, is_host).map(|ip| (r, ip)))
        .collect()
}

/// Flows charged to a user, and of those, with a program name.
pub fn charged_named(records: &[FlowRecord]) -> (usize, usize) {
    let charged = records.iter().filter_map(|r| match &r.verdict().verdict {
        Verdict::User(a) => Some(a),
        _ => None,
    });
    charged.fold((0, 0), |(c, n), a| {
        (c + 1, n + usize::from(a.program.is_some()))
    })
}

#[cfg(test)]
mod tests;
