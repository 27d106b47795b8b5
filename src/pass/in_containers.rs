//! Flows the host's sockets do not explain, attributed through the sockets of the
//! container (another network namespace of this host) holding their inner address.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::{debug, info, warn};

use super::cgroups::CgroupNames;
use super::record::FlowRecord;
use crate::attribute::{Attributed, LocalNets, Reason, Verdict};
use crate::containers::{self, Containers};
use crate::model::Flow;
use crate::prereq;
use crate::sources::netns::SubUids;
use crate::sources::processes::scan_pids_owners;

/// Each warning of this module is said once per process.
static WARNED: AtomicBool = AtomicBool::new(false);

/// Attribute the `candidates` (each with its inner address) through the sockets of the
/// container holding that address, replacing their verdicts where a socket names an
/// owner. Returns how many it placed.
pub fn place(
    proc_root: &Path,
    candidates: Vec<(&mut FlowRecord, IpAddr)>,
    nets: &LocalNets,
    cgroups: Option<&mut CgroupNames>,
) -> usize {
    let Some(found) = read_containers(proc_root) else {
        return 0;
    };
    let mut placed: Vec<(&mut FlowRecord, usize)> = candidates
        .into_iter()
        .filter_map(|(r, ip)| found.holding(ip).map(|s| (r, s)))
        .collect();
    if placed.is_empty() {
        return 0;
    }
    let got = {
        let batch: Vec<(&Flow, usize)> = placed.iter().map(|(r, s)| (r.flow, *s)).collect();
        attribute_in(proc_root, &found, &batch, nets, cgroups)
    };
    let mut n = 0;
    for ((r, _), g) in placed.iter_mut().zip(got) {
        match g {
            Some(g) => {
                r.attributed = Some(g);
                n += 1;
            }
            // A container's flow whose socket is gone (or was never seen there): not
            // forwarded for other machines.
            None => {
                let at = r.attributed.as_mut();
                if let Some(Verdict::Unattributed(why @ Reason::Forwarded)) =
                    at.map(|a| &mut a.verdict)
                {
                    *why = Reason::NoSocket;
                }
            }
        }
    }
    n
}

/// The containers of this host, saying once what could not be looked into.
fn read_containers(proc_root: &Path) -> Option<Containers> {
    let paths = containers::Paths {
        proc_root: proc_root.to_path_buf(),
        ..containers::Paths::default()
    };
    let found = match Containers::read(&paths) {
        Ok(c) => c,
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                warn!("could not look into other network namespaces ({e}): traffic of containers stays unattributed");
            }
            return None;
        }
    };
    if found.denied > 0
        && !prereq::can_read_all_fds(proc_root)
        && !WARNED.swap(true, Ordering::Relaxed)
    {
        warn!(
            processes = found.denied,
            "could not read the network namespace of other users' processes (needs \
             CAP_SYS_PTRACE): traffic of the containers they run stays unattributed"
        );
    }
    Some(found)
}

/// The verdicts of `batch` (each flow with the space its inner end is in) through the
/// containers' sockets and their processes: `None` where no socket names an owner.
fn attribute_in(
    proc_root: &Path,
    found: &Containers,
    batch: &[(&Flow, usize)],
    nets: &LocalNets,
    cgroups: Option<&mut CgroupNames>,
) -> Vec<Option<Attributed>> {
    let t0 = Instant::now();
    let mut sockets = containers::Sockets::find(found, proc_root, batch, &mut HashMap::new());
    if let Some(names) = cgroups {
        sockets.name_cgroups(names.named(&sockets.cgroup_ids()));
    }
    debug!(took = ?t0.elapsed(), "containers' sockets read");
    if sockets.from_proc > 0 && !WARNED.swap(true, Ordering::Relaxed) {
        info!(
            namespaces = sockets.from_proc,
            "containers' sockets read from /proc/PID/net (without CAP_SYS_ADMIN no sock_diag \
             socket can be opened in them): slower, and the daemon misses connections shorter \
             than that read"
        );
    }
    let wanted: HashSet<u64> = batch
        .iter()
        .filter_map(|&(f, s)| sockets.socket_inode(found, s, f))
        .collect();
    // Their programs: only the containers' own processes hold their sockets.
    let spaces: HashSet<usize> = batch.iter().map(|&(_, s)| s).collect();
    let pids: Vec<u32> = spaces
        .iter()
        .flat_map(|&s| found.spaces()[s].ns.pids.iter().copied())
        .collect();
    let owners = scan_pids_owners(proc_root, &pids, &wanted).owners;
    debug!(took = ?t0.elapsed(), "containers' owners read");
    let paths = containers::Paths::default();
    let subuids = SubUids::read(&paths.subuid);
    sockets.attribute(found, batch, &owners, nets, &subuids, proc_root)
}
