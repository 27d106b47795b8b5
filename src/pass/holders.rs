//! The processes a pass reads: the programs of new flows' sockets, and every holder of a
//! delegating service's sockets whose flows are not settled ([`look`]); the holders found
//! are then filled into the pass's index ([`Holders::fill`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

use super::record::{self, FlowRecord};
use super::Rules;
use crate::attribute::SocketIndex;
use crate::prereq;
use crate::sources::processes::{
    last_pid, scan_socket_holders, scan_users_holders, NewPids, ProcessScan,
};

/// What the processes showed this pass.
pub struct Holders {
    /// Owners (programs) of the wanted sockets, holders of the delegating ones.
    pub scan: ProcessScan,
    /// Sockets of flows settled as a delegating service's own whose holders were looked
    /// at again (see [`record::own_inodes`]).
    pub recheck: HashSet<u64>,
}

/// Read the processes the records need (see [`record::wanted_inodes`],
/// [`record::delegated_inodes`]). A user's process that has come to hold a service's own
/// socket was started since the last look (sshd forks the session's process at the
/// login): only those are read, and of them only users' descriptors; a walk of every
/// process for flows held back sees everything anyway. A look, for every such socket,
/// when one of their flows moved (idle ones have nothing to charge: a later look still
/// sees every process started since this one); none started since: nothing to look at.
pub fn look(records: &[FlowRecord], idx: &SocketIndex, rules: &Rules) -> Holders {
    let wanted = record::wanted_inodes(records, idx);
    let mut every = record::delegated_inodes(records, idx, rules.nets, None);
    let last = record::own_moved(records).then(|| LastLook::read(rules.proc_root));
    let recheck = match &last {
        Some(l) if !l.pids.is_empty() || !every.is_empty() => {
            record::own_inodes(records, idx, rules.nets)
        }
        _ => HashSet::new(),
    };
    let proc_root = rules.proc_root;
    let scan = match last {
        None => scan_socket_holders(proc_root, &wanted, &every),
        Some(last) => {
            let scan = if every.is_empty() {
                let mut scan = scan_socket_holders(proc_root, &wanted, &every);
                let skip = |uid| rules.delegating.contains(uid);
                let users = scan_users_holders(proc_root, &recheck, &skip, last.pids);
                scan.holders.extend(users.holders);
                scan.processes += users.processes;
                scan.vanished += users.vanished;
                scan.denied += users.denied;
                scan
            } else {
                every.extend(recheck.iter().copied());
                scan_socket_holders(proc_root, &wanted, &every)
            };
            last.done();
            scan
        }
    };
    Holders { scan, recheck }
}

impl Holders {
    /// `idx` with the owners and holders found, the subordinate ranges and the sockets
    /// looked at again.
    pub fn fill<'a>(&'a self, idx: SocketIndex<'a>, rules: &'a Rules) -> SocketIndex<'a> {
        idx.with_owners(&self.scan.owners)
            .with_delegation(rules.delegating, Some(&self.scan.holders))
            .with_subuids(&rules.subuids)
            .with_recheck(&self.recheck)
    }

    /// The holders of the sockets `fresh` (new on a second read of the socket tables),
    /// looked up for the records on `idx`, the pass's index with them added.
    pub fn look_fresh(
        &mut self,
        records: &[FlowRecord],
        idx: &SocketIndex,
        rules: &Rules,
        fresh: &HashSet<u64>,
    ) {
        let every = record::delegated_inodes(records, idx, rules.nets, Some(fresh));
        let more = scan_socket_holders(rules.proc_root, fresh, &every);
        self.scan.owners.extend(more.owners);
        self.scan.holders.extend(more.holders);
        self.scan.vanished += more.vanished;
        self.scan.denied += more.denied;
    }

    /// Say when other users' descriptors could not be read.
    pub fn warn_denied(&self, proc_root: &Path) {
        let denied = self.scan.denied;
        if denied > 0 && prereq::can_read_all_fds(proc_root) {
            // Even CAP_SYS_PTRACE cannot open some (a VM's or container's init): expected.
            debug!(
                processes = denied,
                "processes whose descriptors could not be read"
            );
        } else if denied > 0 {
            warn!(
                processes = denied,
                "could not read other users' /proc/PID/fd (needs CAP_SYS_PTRACE and \
                 CAP_DAC_READ_SEARCH): their programs are unknown, their uids are not affected"
            );
        }
    }
}

/// The processes started since the last look at the holders of services' own sockets:
/// the last pid given out then is kept next to the namespace's setup state, for the next
/// pass or timer run.
struct LastLook {
    pids: NewPids,
    file: Option<PathBuf>,
}

impl LastLook {
    fn read(proc_root: &Path) -> LastLook {
        let file = prereq::state_path(proc_root).map(|p| p.with_extension("last-pid"));
        let after = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|t| t.trim().parse().ok());
        let pids = match last_pid(proc_root) {
            Some(upto) => NewPids { after, upto },
            // Unknown: every process, and nothing kept.
            None => NewPids {
                after: None,
                upto: 0,
            },
        };
        LastLook { pids, file }
    }

    /// The look is over: the next one reads what was started after this one began.
    fn done(self) {
        let Some(f) = &self.file else { return };
        if self.pids.upto == 0 {
            let _ = std::fs::remove_file(f);
        } else {
            let _ = std::fs::create_dir_all(prereq::STATE_DIR);
            let _ = std::fs::write(f, format!("{}\n", self.pids.upto));
        }
    }
}
