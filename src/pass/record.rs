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
mod tests {
    use super::*;
    use crate::attribute::Delegating;
    use crate::model::{Counters, Socket, L4};
    use crate::testkit::{counters, flow, sock, TCP, UDP};

    const ALICE: u32 = 1001;
    const BOB: u32 = 1002;
    const ROOT: u32 = 0;
    const HOST: &str = "198.51.100.1";

    fn who(uid: u32, via: Via, direction: Direction) -> Attribution {
        Attribution {
            cgroup: None,
            uid,
            program: None,
            direction,
            via,
            container: None,
        }
    }

    fn out(uid: u32, via: Via) -> Attribution {
        who(uid, via, Direction::Out)
    }

    fn state(f: &Flow, attribution: Option<Attribution>) -> FlowState {
        FlowState {
            key: f.key(),
            orig: Counters::default(),
            reply: Counters::default(),
            attribution,
            first_seen: 0,
            last_seen: 5,
            missing: 0,
            start_ns: None,
        }
    }

    /// Outgoing TCP from the host's port `sport` to 198.51.100.2:443.
    fn tcp_out(sport: u16) -> Flow {
        flow(TCP, (&format!("{HOST}:{sport}"), "198.51.100.2:443"), None)
    }

    fn index<'a>(
        sockets: &'a [Socket],
        none: &'a HashMap<u64, crate::sources::processes::Owner>,
    ) -> SocketIndex<'a> {
        SocketIndex::new(sockets, none, [HOST.parse().unwrap()])
    }

    fn dump_of(entries: Vec<Entry>) -> Dump {
        Dump {
            entries,
            ..Dump::default()
        }
    }

    /// `f` as an entry of a dump, picked up or not, with no TCP state or timeout.
    fn entry(f: &Flow, picked_up: bool) -> Entry {
        Entry {
            picked_up,
            ..Entry::from(f.clone())
        }
    }

    #[test]
    fn records_carry_each_flow_with_its_saved_state_and_go_back_in_order() {
        let (a, b) = (tcp_out(40000), tcp_out(40001));
        let prev: HashMap<FlowKey, FlowState> =
            [(a.key(), state(&a, Some(out(ALICE, Via::Direct))))].into();
        let dump = dump_of(vec![entry(&a, false), entry(&b, true)]);
        let mut recs = records(&dump, &prev);
        assert_eq!((recs[0].flow, recs[1].flow), (&a, &b));
        assert_eq!(recs[0].saved, prev.get(&a.key()));
        assert_eq!((recs[1].saved, recs[1].entry.picked_up), (None, true));
        let none = HashMap::new();
        let sockets = [sock(
            L4::Tcp,
            "198.51.100.1:40001",
            "198.51.100.2:443",
            BOB,
            7,
        )];
        let idx = index(&sockets, &none);
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &LocalNets::defaults());
        let observed = observed(recs);
        assert_eq!(observed[1].entry, dump.entries[1]);
        assert_eq!(
            observed[0].at.verdict,
            Verdict::User(out(ALICE, Via::Direct))
        );
        assert_eq!(observed[1].at.verdict, Verdict::User(out(BOB, Via::Direct)));
    }

    /// Issue 24: bob's connection took up the tuple of alice's, whose entry ended, in the
    /// memory of hers (the same conntrack id, so the same key); her saved state is still
    /// there (its DESTROY lost, or on its way). It is not his: her owner is not his, his
    /// own owner found at NEW is, and a lookup that fails leaves him unattributed.
    #[test]
    fn another_flows_saved_state_under_the_same_key_names_no_owner() {
        let at = |f: Flow, s: u64| Flow {
            start_ns: Some(s * 1_000_000_000),
            ..f
        };
        let hers = at(tcp_out(45600), 1000);
        let his = at(tcp_out(45600), 1010);
        let mut saved = state(&hers, Some(out(ALICE, Via::Direct)));
        (saved.start_ns, saved.orig) = (hers.start_ns, crate::testkit::counters(5, 400));
        let none = HashMap::new();
        let sockets: [Socket; 0] = [];
        let idx = index(&sockets, &none);
        let (his, hers) = (entry(&his, false), entry(&hers, false));
        let verdict = |known: Option<Attribution>| {
            let mut recs = vec![FlowRecord::new(&his, Some(&saved))];
            add_known(&mut recs, &|_| known.clone());
            look_up(&mut recs, &idx);
            attribute_all(&mut recs, &idx, &LocalNets::defaults());
            assert_eq!(
                recs[0].saved,
                Some(&saved),
                "the accounting sees the replacement"
            );
            (recs[0].own_saved(), recs[0].verdict().verdict.clone())
        };
        assert_eq!(
            verdict(None),
            (None, Verdict::Unattributed(Reason::NoSocket))
        );
        let bob = out(BOB, Via::Direct);
        assert_eq!(verdict(Some(bob.clone())), (None, Verdict::User(bob)));
        // Her own entry, seen again, keeps her.
        let mut recs = vec![FlowRecord::new(&hers, Some(&saved))];
        attribute_all(&mut recs, &idx, &LocalNets::defaults());
        assert_eq!(
            recs[0].verdict().verdict,
            Verdict::User(out(ALICE, Via::Direct))
        );
    }

    /// An ICMP echo saved before the echo id was in its key (port 0) keeps its state.
    #[test]
    fn a_ping_saved_under_its_old_key_keeps_its_state() {
        let ping = flow(1, ("198.51.100.1:4242", "198.51.100.2:0"), None);
        let mut old_key = ping.key();
        old_key.orig.sport = 0;
        let mut before = state(&ping, Some(out(ALICE, Via::Direct)));
        before.key = old_key;
        before.orig = crate::testkit::counters(3, 300);
        let prev: HashMap<FlowKey, FlowState> = [(old_key, before)].into();
        let dump = dump_of(vec![entry(&ping, false)]);
        assert_eq!(records(&dump, &prev)[0].saved, prev.get(&old_key));
        // Not for TCP: a port 0 key is another flow.
        let t = tcp_out(40000);
        let mut k = t.key();
        k.orig.sport = 0;
        let prev: HashMap<FlowKey, FlowState> = [(k, state(&t, None))].into();
        assert_eq!(
            records(&dump_of(vec![entry(&t, false)]), &prev)[0].saved,
            None
        );
    }

    #[test]
    fn a_settled_saved_owner_beats_one_known_besides_and_a_known_one_beats_a_pending_one() {
        let f = tcp_out(40000);
        let e = entry(&f, false);
        let saved = |a| state(&f, Some(a));
        let (settled, pending) = (
            saved(out(ALICE, Via::Direct)),
            saved(out(ROOT, Via::Pending)),
        );
        let rec = |s: Option<&FlowState>, known: Option<Attribution>| {
            let mut r = FlowRecord::new(&e, s);
            r.known = known.map(Box::new);
            r.prior().cloned()
        };
        let bob = out(BOB, Via::Delegated(ROOT));
        let still_pending = out(BOB, Via::Pending);
        assert_eq!(
            rec(Some(&settled), Some(bob.clone())),
            Some(out(ALICE, Via::Direct))
        );
        assert_eq!(rec(Some(&pending), Some(bob.clone())), Some(bob.clone()));
        assert_eq!(
            rec(Some(&pending), Some(still_pending.clone())),
            Some(out(ROOT, Via::Pending))
        );
        assert_eq!(rec(None, Some(still_pending.clone())), Some(still_pending));
        assert_eq!(rec(Some(&pending), None), Some(out(ROOT, Via::Pending)));
        assert_eq!(rec(None, None), None);
    }

    #[test]
    fn owners_known_besides_are_asked_only_for_flows_not_settled() {
        let (a, b, c) = (tcp_out(40000), tcp_out(40001), tcp_out(40002));
        let (sa, sb) = (
            state(&a, Some(out(ALICE, Via::Direct))),
            state(&b, Some(out(ROOT, Via::Pending))),
        );
        let (ea, eb, ec) = (entry(&a, false), entry(&b, false), entry(&c, false));
        let mut recs = vec![
            FlowRecord::new(&ea, Some(&sa)),
            FlowRecord::new(&eb, Some(&sb)),
            FlowRecord::new(&ec, None),
        ];
        let asked = std::cell::RefCell::new(Vec::new());
        add_known(&mut recs, &|k| {
            asked.borrow_mut().push(k.orig.sport);
            Some(out(BOB, Via::Direct))
        });
        assert_eq!(*asked.borrow(), [40001, 40002]);
        assert_eq!(recs[0].known, None);
        assert_eq!(recs[2].prior(), Some(&out(BOB, Via::Direct)));
    }

    #[test]
    fn a_picked_up_entry_continues_the_owner_of_the_ended_one_turned_when_reversed() {
        let ended = tcp_out(40000);
        let mut prev: HashMap<FlowKey, FlowState> = HashMap::new();
        prev.insert(ended.key(), state(&ended, Some(out(ALICE, Via::Direct))));
        // Picked up the other way round (the first packet after the deletion was the
        // reply), under a new id.
        let back = Flow {
            id: 9,
            ..flow(TCP, ("198.51.100.2:443", "198.51.100.1:40000"), None)
        };
        let fresh = Flow {
            id: 10,
            ..tcp_out(40005)
        };
        let (back, fresh) = (entry(&back, true), entry(&fresh, true));
        let mut recs = vec![FlowRecord::new(&back, None), FlowRecord::new(&fresh, None)];
        continue_picked_up(&mut recs, &prev);
        let turned = who(ALICE, Via::Direct, Direction::In);
        assert_eq!(recs[0].known.as_deref(), Some(&turned));
        assert_eq!(recs[1].known, None);
        // The ended entry still in the dump: not ended, nothing continued.
        let ended = entry(&ended, false);
        let again = FlowRecord::new(&ended, prev.get(&ended.flow.key()));
        let mut recs = vec![again, FlowRecord::new(&back, None)];
        continue_picked_up(&mut recs, &prev);
        assert_eq!(recs[1].known, None);
    }

    #[test]
    fn programs_are_wanted_only_for_flows_without_an_owner_before() {
        let (a, b) = (tcp_out(40000), tcp_out(40001));
        let sa = state(&a, Some(out(ALICE, Via::Direct)));
        let sockets = [
            sock(
                L4::Tcp,
                "198.51.100.1:40000",
                "198.51.100.2:443",
                ALICE,
                100,
            ),
            sock(L4::Tcp, "198.51.100.1:40001", "198.51.100.2:443", BOB, 200),
        ];
        let none = HashMap::new();
        let idx = index(&sockets, &none);
        let (ea, eb) = (entry(&a, false), entry(&b, false));
        let mut recs = vec![FlowRecord::new(&ea, Some(&sa)), FlowRecord::new(&eb, None)];
        look_up(&mut recs, &idx);
        assert_eq!(wanted_inodes(&recs, &idx), [200].into());
    }

    /// An sshd session: the accepted socket (root's, inode 500) of a flow to port 22.
    fn ssh() -> (Vec<Socket>, Flow) {
        (
            vec![sock(
                L4::Tcp,
                "198.51.100.1:22",
                "198.51.100.2:50000",
                ROOT,
                500,
            )],
            flow(TCP, ("198.51.100.2:50000", "198.51.100.1:22"), None),
        )
    }

    #[test]
    fn every_holder_is_looked_up_for_a_services_socket_until_its_flow_settles() {
        let (sockets, f) = ssh();
        let none = HashMap::new();
        let d = Delegating::new([ROOT]);
        let idx = index(&sockets, &none).with_delegation(&d, None);
        let nets = LocalNets::defaults();
        let e = entry(&f, false);
        let inodes = |saved: Option<&FlowState>| {
            let mut recs = vec![FlowRecord::new(&e, saved)];
            look_up(&mut recs, &idx);
            (
                delegated_inodes(&recs, &idx, &nets, None),
                own_inodes(&recs, &idx, &nets),
            )
        };
        let (new, _) = inodes(None);
        assert_eq!(new, [500].into());
        let held = state(&f, Some(who(ROOT, Via::Pending, Direction::In)));
        assert_eq!(inodes(Some(&held)).0, [500].into());
        let settled = state(&f, Some(who(ALICE, Via::Delegated(ROOT), Direction::In)));
        assert_eq!(inodes(Some(&settled)), (HashSet::new(), HashSet::new()));
        // The service's own: looked at again (when it moved) for a login slower than
        // the grace.
        let own = state(&f, Some(who(ROOT, Via::Own, Direction::In)));
        assert_eq!(inodes(Some(&own)), (HashSet::new(), [500].into()));
        let still = vec![FlowRecord::new(&e, Some(&own))];
        assert!(!own_moved(&still), "zero counters, as saved");
        let moved = Flow {
            orig_counters: Some(counters(3, 300)),
            ..f.clone()
        };
        let moved = entry(&moved, false);
        assert!(own_moved(&[FlowRecord::new(&moved, Some(&own))]));
        // Only `only`'s inodes, when asked.
        let mut recs = vec![FlowRecord::new(&e, None)];
        look_up(&mut recs, &idx);
        assert!(delegated_inodes(&recs, &idx, &nets, Some(&[501].into())).is_empty());
    }

    #[test]
    fn a_flow_born_after_the_socket_read_is_retried_on_the_index_extended_with_new_sockets() {
        let (a, b) = (tcp_out(40000), tcp_out(40001));
        let mut sockets = vec![sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            ALICE,
            100,
        )];
        let none = HashMap::new();
        let nets = LocalNets::defaults();
        let (ea, eb) = (entry(&a, false), entry(&b, false));
        let mut recs = vec![FlowRecord::new(&ea, None), FlowRecord::new(&eb, None)];
        let maps = {
            let idx = index(&sockets, &none);
            look_up(&mut recs, &idx);
            attribute_all(&mut recs, &idx, &nets);
            idx.into_maps()
        };
        assert!(needs_retry(&recs));
        assert_eq!(
            recs[1].verdict().verdict,
            Verdict::Unattributed(Reason::NoSocket)
        );
        // The second read's new socket is added to the same maps, not indexed anew.
        let mut maps = maps;
        sockets.push(sock(
            L4::Tcp,
            "198.51.100.1:40001",
            "198.51.100.2:443",
            BOB,
            200,
        ));
        maps.add(&sockets, 1);
        let idx = SocketIndex::with_maps(&sockets, &none, maps);
        look_up(&mut recs, &idx);
        reattribute(&mut recs, &idx, &nets);
        assert!(!needs_retry(&recs));
        assert_eq!(
            recs[0].verdict().verdict,
            Verdict::User(out(ALICE, Via::Direct))
        );
        assert_eq!(
            recs[1].verdict().verdict,
            Verdict::User(out(BOB, Via::Direct))
        );
        assert_eq!(charged_named(&recs), (2, 0));
    }

    #[test]
    fn a_new_flow_no_host_socket_explains_is_a_container_candidate() {
        let host: HashSet<IpAddr> = [HOST.parse().unwrap()].into();
        let is_host = |ip: IpAddr| host.contains(&ip);
        let none = HashMap::new();
        let nets = LocalNets::new([]);
        // Forwarded from a container's address, and a new flow to the host without socket.
        let fwd = flow(TCP, ("203.0.113.9:40000", "198.51.100.2:443"), None);
        let to_host = flow(UDP, ("198.51.100.2:5353", "198.51.100.1:9999"), None);
        let known = tcp_out(40000);
        let saved = state(&to_host, None);
        let (fwd, known, to_host) = (
            entry(&fwd, false),
            entry(&known, false),
            entry(&to_host, false),
        );
        let mut recs = vec![
            FlowRecord::new(&fwd, None),
            FlowRecord::new(&known, None),
            FlowRecord::new(&to_host, Some(&saved)),
        ];
        let sockets = [sock(
            L4::Tcp,
            "198.51.100.1:40000",
            "198.51.100.2:443",
            ALICE,
            100,
        )];
        let idx = index(&sockets, &none);
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &nets);
        let got: Vec<(u16, IpAddr)> = container_candidates(&mut recs, &is_host)
            .into_iter()
            .map(|(r, ip)| (r.flow.orig.sport, ip))
            .collect();
        // The saved one was looked for when it was new.
        assert_eq!(got, [(40000, "203.0.113.9".parse().unwrap())]);
    }

    #[test]
    fn a_flow_charged_by_its_mark_alone_is_counted() {
        let marked = Flow {
            mark: crate::owner_mark::mark_of(ALICE),
            ..tcp_out(40000)
        };
        let none = HashMap::new();
        let sockets: [Socket; 0] = [];
        let idx = index(&sockets, &none).with_marks(true);
        let marked = entry(&marked, false);
        let mut recs = vec![FlowRecord::new(&marked, None)];
        look_up(&mut recs, &idx);
        attribute_all(&mut recs, &idx, &LocalNets::defaults());
        assert_eq!(recs[0].look, Lookup::Unmatched);
        assert_eq!(by_mark(&recs), 1);
        // The same on a kept attribution is not the mark's doing.
        let saved = state(&marked.flow, Some(out(ALICE, Via::Direct)));
        recs[0].saved = Some(&saved);
        assert_eq!(by_mark(&recs), 0);
    }
}
