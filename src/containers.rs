//! Flows of containers: charged through the socket in the network namespace that holds the
//! flow's inner address, to that socket's uid as the host sees it (the owner of its
//! subordinate range, when it is in one), carrying which container it was.
//!
//! Which flows: a TCP/UDP flow the host's sockets do not explain ([`inner_end`]):
//! - neither end is the host's (forwarded): the original source may be a container's
//!   socket that started it, NATed or not on its way out;
//! - addressed to the host but answered by another address (DNAT, a published port): the
//!   reply's source may be a container's socket that answered.
//!
//! Namespaces are read only for such flows (the first time a pass sees them; the daemon at
//! their NEW event): the sources are in [`crate::sources::netns`]. Only namespaces wired to
//! ours by a veth pair are containers; a namespace of another machine (behind a switch)
//! names nobody, and its flows stay `forwarded`. The bytes are the host's conntrack's, as
//! for every flow; local-network rules apply as to any flow.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::attribute::{attribute, Attributed, Cgroup, Container, LocalNets, SocketIndex, Verdict};
use crate::model::{FastMap, Flow, Socket, L4};
use crate::sources::netns::{self, Namespace, SubUids, UidRange, Wiring};
use crate::sources::processes::Owner;

/// The inner address of a flow the host's sockets may not explain, where a container's
/// socket would be: see the module documentation. `is_host` tells the host's addresses.
pub fn inner_end(flow: &Flow, is_host: &dyn Fn(IpAddr) -> bool) -> Option<IpAddr> {
    L4::from_ipproto(flow.orig.proto)?;
    let (orig, reply) = (&flow.orig, &flow.reply);
    if !is_host(orig.src) && !is_host(orig.dst) {
        return Some(orig.src);
    }
    if is_host(orig.dst) && !is_host(orig.src) && !is_host(reply.src) && reply.src != orig.dst {
        return Some(reply.src);
    }
    None
}

/// One container as read this time.
#[derive(Debug, Clone)]
pub struct Space {
    /// Its name.
    pub name: Arc<str>,
    /// The namespace.
    pub ns: Namespace,
    /// Its process's uid map (host uid → the container's).
    pub uid_map: Vec<UidRange>,
    /// Its interface addresses.
    pub addrs: HashSet<IpAddr>,
}

/// What the other namespaces of this host showed.
#[derive(Debug, Default)]
pub struct Containers {
    spaces: Vec<Space>,
    /// Address → the space holding it (`None`: several do, so none is named).
    by_addr: HashMap<IpAddr, Option<usize>>,
    /// Processes whose namespace could not be read (CAP_SYS_PTRACE missing).
    pub denied: usize,
    /// Namespaces seen but not wired to ours (other machines, isolated namespaces).
    pub unwired: usize,
}

/// Where to read.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The proc filesystem.
    pub proc_root: PathBuf,
    /// Where `ip netns` keeps its names.
    pub run_netns: PathBuf,
    /// The subordinate uid ranges.
    pub subuid: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            proc_root: PathBuf::from("/proc"),
            run_netns: PathBuf::from("/run/netns"),
            subuid: PathBuf::from("/etc/subuid"),
        }
    }
}

impl Containers {
    /// Read every namespace wired to ours: names, uid maps, addresses.
    pub fn read(paths: &Paths) -> std::io::Result<Containers> {
        let proc_root = &paths.proc_root;
        let t0 = std::time::Instant::now();
        let own = netns::own_inode(proc_root)?;
        let list = netns::list(proc_root, own)?;
        let t1 = t0.elapsed();
        let mut wiring = Wiring::read()?;
        let names = netns::netns_names(&paths.run_netns);
        let t2 = t0.elapsed();
        let mut out = Containers {
            denied: list.denied,
            ..Containers::default()
        };
        for ns in list.others {
            if !wiring.wired(ns.pid) {
                out.unwired += 1;
                continue;
            }
            let space = Space {
                name: netns::name_of(proc_root, &ns, &names).into(),
                uid_map: netns::uid_map(proc_root, &ns),
                addrs: netns::addresses(proc_root, &ns),
                ns,
            };
            let i = out.spaces.len();
            for ip in &space.addrs {
                out.by_addr
                    .entry(*ip)
                    .and_modify(|s| {
                        if *s != Some(i) {
                            *s = None
                        }
                    })
                    .or_insert(Some(i));
            }
            out.spaces.push(space);
        }
        tracing::debug!(
            listed = ?t1,
            wiring = ?t2,
            took = ?t0.elapsed(),
            containers = out.spaces.len(),
            unwired = out.unwired,
            "containers read"
        );
        Ok(out)
    }

    /// The containers read.
    pub fn spaces(&self) -> &[Space] {
        &self.spaces
    }

    /// The container holding `ip`, when exactly one does.
    pub fn holding(&self, ip: IpAddr) -> Option<usize> {
        self.by_addr
            .get(&crate::model::canonical_ip(ip))
            .copied()
            .flatten()
    }
}

/// The sockets of the containers a batch of flows needs, read once.
pub struct Sockets {
    /// Per space (index into [`Containers::spaces`]), its sockets, when read.
    tables: HashMap<usize, Vec<Socket>>,
    /// Spaces read from `/proc/PID/net` because a sock_diag socket could not be opened in
    /// them (no CAP_SYS_ADMIN): slower by ~20 ms a table.
    pub from_proc: usize,
    /// The sockets' cgroups by id ([`Sockets::name_cgroups`]); sock_diag gives the ids, the
    /// `/proc/PID/net` tables none.
    cgroups: FastMap<u64, Cgroup>,
}

/// A sock_diag socket inside each container looked into, by namespace inode (`None`: it
/// could not be opened, without CAP_SYS_ADMIN; its `/proc/PID/net` is read instead).
pub type Diags = HashMap<u64, Option<crate::sources::sockdiag::SockDiag>>;

impl Sockets {
    /// The sockets of the containers that `flows` (each with the space its inner end is
    /// in) may be on: looked up one by one through a sock_diag socket inside each container
    /// (`diags`, opened when missing), else every socket of its `/proc/PID/net` tables.
    /// A dump would not be cheaper than those tables: both walk the kernel's whole
    /// established hash, whatever the namespace (~5 ms a family here); a lookup by the
    /// flow's ends is a hash probe.
    pub fn find(
        containers: &Containers,
        proc_root: &Path,
        flows: &[(&Flow, usize)],
        diags: &mut Diags,
    ) -> Sockets {
        let mut from_proc = 0;
        let mut tables: HashMap<usize, Vec<Socket>> = HashMap::new();
        let mut by_space: HashMap<usize, Vec<&Flow>> = HashMap::new();
        for &(f, i) in flows {
            by_space.entry(i).or_default().push(f);
        }
        for (i, flows) in by_space {
            let space = &containers.spaces[i];
            let ns = &space.ns;
            let diag =
                diags
                    .entry(ns.inode)
                    .or_insert_with(|| match netns::sock_diag_in(proc_root, ns) {
                        Ok(d) => Some(d),
                        Err(e) => {
                            tracing::debug!("no sock_diag socket in net:[{}]: {e}", ns.inode);
                            None
                        }
                    });
            let sockets = match diag {
                Some(d) => {
                    let mut seen = HashSet::new();
                    let mut asked = 0;
                    flows
                        .iter()
                        .filter_map(|f| {
                            d.owner_socket(f, &space.addrs, &mut asked, &mut |e| {
                                tracing::debug!("sock_diag lookup in a container: {e}")
                            })
                        })
                        .filter(|s| seen.insert(s.inode))
                        .collect()
                }
                None => {
                    from_proc += 1;
                    netns::sockets(proc_root, ns)
                        .map(|t| t.sockets)
                        .unwrap_or_default()
                }
            };
            tables.insert(i, sockets);
        }
        Sockets {
            tables,
            from_proc,
            cgroups: FastMap::default(),
        }
    }

    /// The cgroup ids of the sockets read (0, none known, left out).
    pub fn cgroup_ids(&self) -> Vec<u64> {
        let ids = self.tables.values().flatten().map(|s| s.cgroup);
        ids.filter(|&id| id != 0).collect()
    }

    /// Name the sockets' cgroups (`named`: the names of [`Sockets::cgroup_ids`] resolved
    /// on the host's cgroup2 tree): the flows attributed through them carry them.
    pub fn name_cgroups(&mut self, named: FastMap<u64, Cgroup>) {
        self.cgroups = named;
    }

    /// The inode of the socket of space `i` that `flow` matches.
    pub fn socket_inode(&self, containers: &Containers, i: usize, flow: &Flow) -> Option<u64> {
        let none = HashMap::new();
        let sockets = self.tables.get(&i)?;
        let idx = SocketIndex::new(sockets, &none, containers.spaces[i].addrs.iter().copied());
        idx.socket_inode(flow)
    }

    /// Attribute `flows` (with the space each one's inner end is in) through the
    /// containers' sockets: `None` where no socket of the space names an owner.
    ///
    /// The uid inside the container is read through the user namespace of the process
    /// holding the socket (`owners`, under `proc_root`), else of the namespace's first
    /// process: processes of one network namespace may sit in different user namespaces.
    pub fn attribute(
        &self,
        containers: &Containers,
        flows: &[(&Flow, usize)],
        owners: &HashMap<u64, Owner>,
        nets: &LocalNets,
        subuids: &SubUids,
        proc_root: &Path,
    ) -> Vec<Option<Attributed>> {
        let mut by_space: HashMap<usize, SocketIndex> = HashMap::new();
        let mut maps: HashMap<u32, Vec<UidRange>> = HashMap::new();
        flows
            .iter()
            .map(|&(flow, i)| {
                let sockets = self.tables.get(&i)?;
                let space = &containers.spaces[i];
                let idx = by_space.entry(i).or_insert_with(|| {
                    SocketIndex::new(sockets, owners, space.addrs.iter().copied())
                        .with_cgroups(&self.cgroups)
                });
                let holder = idx
                    .socket_inode(flow)
                    .and_then(|inode| owners.get(&inode))
                    .map(|o| o.pid);
                let mut at = attribute(flow, idx, None, nets);
                let a = match &mut at.verdict {
                    Verdict::User(a) | Verdict::Excluded(Some(a)) => a,
                    _ => return None,
                };
                let socket_uid = a.uid;
                a.uid = subuids.owner_of(socket_uid).unwrap_or(socket_uid);
                let map = match holder {
                    Some(pid) => &*maps.entry(pid).or_insert_with(|| {
                        let ns = Namespace {
                            inode: space.ns.inode,
                            pid,
                            pids: Vec::new(),
                        };
                        netns::uid_map(proc_root, &ns)
                    }),
                    None => &space.uid_map,
                };
                a.container = Some(Container {
                    name: space.name.clone(),
                    inner_uid: netns::inside_uid(map, socket_uid).unwrap_or(socket_uid),
                });
                Some(at)
            })
            .collect()
    }
}

/// Owners of single flows in containers, at their NEW events (the daemon's listener): the
/// containers read are kept, and read again when a flow's inner address is in none of them
/// (at most every [`Finder::REFRESH`], so a router's forwarded flows cost little); only
/// the one container's socket tables are read per flow.
pub struct Finder {
    paths: Paths,
    known: Containers,
    /// A sock_diag socket inside each container looked into.
    diags: Diags,
    read_at: Option<std::time::Instant>,
    subuids: SubUids,
    warned: bool,
}

impl Finder {
    /// How often the containers may be read again for an address none of them holds.
    pub const REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

    /// A finder reading under `paths`; nothing is read until a flow asks.
    pub fn new(paths: Paths) -> Finder {
        Finder {
            paths,
            known: Containers::default(),
            diags: HashMap::new(),
            read_at: None,
            subuids: SubUids::default(),
            warned: false,
        }
    }

    /// The attribution of `flow` through a container's socket (and that socket's inode),
    /// when its inner end is in a container and a socket there names an owner.
    ///
    /// `name_cgroups` names the socket's cgroup id (the listener's cache of the host's
    /// cgroup2 tree), so the flow carries the cgroup of the process that made it.
    pub fn owner(
        &mut self,
        flow: &Flow,
        host: &HashSet<IpAddr>,
        nets: &LocalNets,
        name_cgroups: &mut dyn FnMut(&[u64]) -> FastMap<u64, Cgroup>,
    ) -> Option<(Attributed, u64)> {
        let is_host = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
        let inner = inner_end(flow, &is_host)?;
        let space = match self.known.holding(inner) {
            Some(s) => s,
            None => {
                if self.read_at.is_some_and(|t| t.elapsed() < Finder::REFRESH) {
                    return None;
                }
                self.refresh();
                self.known.holding(inner)?
            }
        };
        let proc_root = self.paths.proc_root.clone();
        let mut sockets = Sockets::find(&self.known, &proc_root, &[(flow, space)], &mut self.diags);
        let inode = sockets.socket_inode(&self.known, space, flow)?;
        sockets.name_cgroups(name_cgroups(&sockets.cgroup_ids()));
        let none = HashMap::new();
        let at = sockets
            .attribute(
                &self.known,
                &[(flow, space)],
                &none,
                nets,
                &self.subuids,
                &proc_root,
            )
            .pop()??;
        Some((at, inode))
    }

    fn refresh(&mut self) {
        self.read_at = Some(std::time::Instant::now());
        self.subuids = SubUids::read(&self.paths.subuid);
        match Containers::read(&self.paths) {
            Ok(c) => {
                if c.denied > 0
                    && !self.warned
                    && !crate::prereq::can_read_all_fds(&self.paths.proc_root)
                {
                    self.warned = true;
                    tracing::warn!(
                        processes = c.denied,
                        "could not read the network namespace of other users' processes \
                         (needs CAP_SYS_PTRACE): traffic of the containers they run stays \
                         unattributed"
                    );
                }
                // Namespaces gone: their sockets go too.
                let live: HashSet<u64> = c.spaces.iter().map(|s| s.ns.inode).collect();
                self.diags.retain(|inode, _| live.contains(inode));
                self.known = c;
            }
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        "could not look into other network namespaces ({e}): traffic of \
                         containers stays unattributed"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    fn flow(orig: (&str, &str), reply: (&str, &str)) -> Flow {
        testkit::flow(testkit::TCP, orig, Some(reply))
    }

    #[test]
    fn inner_ends_of_container_flows() {
        let host: HashSet<IpAddr> = ["198.51.100.1", "172.31.5.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let is_host = |ip: IpAddr| host.contains(&ip);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // Out of a container, masqueraded.
        let out = flow(
            ("172.31.5.2:40000", "198.51.100.2:9000"),
            ("198.51.100.2:9000", "198.51.100.1:40000"),
        );
        assert_eq!(inner_end(&out, &is_host), Some(ip("172.31.5.2")));
        // A published port: to the host, answered by the container (DNAT).
        let dnat = flow(
            ("198.51.100.2:50000", "198.51.100.1:8080"),
            ("172.31.5.2:80", "198.51.100.2:50000"),
        );
        assert_eq!(inner_end(&dnat, &is_host), Some(ip("172.31.5.2")));
        // The host's own flows: nothing to look for.
        let own = flow(
            ("198.51.100.1:40000", "198.51.100.2:9000"),
            ("198.51.100.2:9000", "198.51.100.1:40000"),
        );
        assert_eq!(inner_end(&own, &is_host), None);
        let to_host = flow(
            ("198.51.100.2:50000", "198.51.100.1:22"),
            ("198.51.100.1:22", "198.51.100.2:50000"),
        );
        assert_eq!(inner_end(&to_host, &is_host), None);
    }
}
