//! Connections that open and close between two refreshes of `live`: conntrack NEW and
//! DESTROY events, as the daemon hears them (`daemon::listen`), on a thread of their own.
//!
//! A NEW event comes while the flow's socket still exists: its owner is looked up at once
//! over sock_diag (one exact lookup in the kernel). A DESTROY event carries the flow's
//! final counters. Each refresh takes what came since the previous one ([`Heard`]); the
//! meter charges ended flows their final counters less what it had seen of them.
//! Program names are not looked up for such flows (that needs a walk of /proc): their
//! rows show no program unless a dump saw the flow first.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::attribute::{attribute_through, Attribution, Delegating, LocalNets};
use crate::model::{Flow, FlowKey, L4};
use crate::sources::conntrack::{
    ConntrackError, EventKind, EventSocket, Events, GROUP_DESTROY, GROUP_NEW,
};
use crate::sources::interfaces;
use crate::sources::netns::SubUids;
use crate::sources::sockdiag::SockDiag;
use crate::sources::sockets::PingSockets;

/// How long one wait for events lasts before the stop flag is looked at again.
const WAIT: Duration = Duration::from_millis(200);
/// Most datagrams read at once.
const MAX_BATCH: usize = 4096;
/// The receive buffer asked for at once, and the most it grows to after an overrun.
const BUFFER: usize = 4 << 20;
const MAX_BUFFER: usize = 64 << 20;

/// What the events told since the last [`ShortFlows::take`].
#[derive(Debug, Default)]
pub struct Heard {
    /// Flows destroyed, with their final counters, in order.
    pub ended: Vec<Flow>,
    /// Owners found at NEW events.
    pub owners: HashMap<FlowKey, Attribution>,
    /// Whether the kernel dropped events meanwhile (ENOBUFS): some ended flows may be
    /// missing.
    pub lost: bool,
    /// Whether the event thread stopped on an error (said once, in the log).
    pub failed: bool,
}

/// The event thread.
pub struct ShortFlows {
    heard: Arc<Mutex<Heard>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ShortFlows {
    /// Subscribe to NEW and DESTROY events (needs CAP_NET_ADMIN) and start listening.
    /// Call before the first dump, so no flow falls between the two.
    pub fn start(nets: LocalNets, delegating: Delegating) -> Result<ShortFlows, ConntrackError> {
        let mut socket = EventSocket::subscribe(&[GROUP_NEW, GROUP_DESTROY])?;
        // Bursts of thousands of short connections fit; an overrun is said in the header.
        let _ = socket.set_receive_buffer(BUFFER);
        let diag = SockDiag::open().ok();
        let heard: Arc<Mutex<Heard>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (h, s) = (heard.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("live-events".into())
            .spawn(move || listen(&mut socket, diag, &nets, &delegating, &h, &s))
            .map_err(|e| ConntrackError::Socket {
                op: "spawn",
                source: e,
            })?;
        Ok(ShortFlows {
            heard,
            stop,
            thread: Some(thread),
        })
    }

    /// Everything heard since the previous call.
    pub fn take(&self) -> Heard {
        let mut h = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let failed = h.failed;
        let mut out = std::mem::take(&mut *h);
        h.failed = failed;
        out.failed = failed;
        out
    }
}

impl Drop for ShortFlows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn listen(
    socket: &mut EventSocket,
    mut diag: Option<SockDiag>,
    nets: &LocalNets,
    delegating: &Delegating,
    heard: &Mutex<Heard>,
    stop: &AtomicBool,
) {
    let host = interfaces::host_addrs();
    // A uid of a subordinate range (a user's rootless user namespace) is its owner's:
    // /etc/subuid read once, not at every wait for events.
    let subuids = SubUids::host();
    while !stop.load(Ordering::SeqCst) {
        let mut events = Events::default();
        let got = match socket.receive(WAIT, MAX_BATCH, &mut events) {
            Ok(got) => got,
            Err(e) => {
                tracing::warn!("conntrack events stopped ({e}): short connections are missed");
                heard.lock().unwrap_or_else(|p| p.into_inner()).failed = true;
                return;
            }
        };
        if got.overrun {
            let now = socket.receive_buffer();
            let _ = socket.set_receive_buffer((now * 4).clamp(BUFFER, MAX_BUFFER));
        }
        let mut owners = Vec::new();
        let mut ended = Vec::new();
        // Read at the batch's first ICMP NEW: sock_diag does not list ping sockets.
        let mut pings: Option<PingSockets> = None;
        for e in events.events {
            match e.kind {
                EventKind::New => {
                    let Some(diag) = diag.as_mut() else { continue };
                    let found = Found {
                        diag,
                        pings: &mut pings,
                        host: &host,
                    };
                    if let Some(a) = owner(found, &e.flow, nets, delegating, &subuids) {
                        owners.push((e.flow.key(), a));
                    }
                }
                EventKind::Destroy => ended.push(e.flow),
                EventKind::Update => {}
            }
        }
        let mut h = heard.lock().unwrap_or_else(|p| p.into_inner());
        h.owners.extend(owners);
        h.ended.extend(ended);
        h.lost |= got.overrun;
    }
}

/// Where a new flow's socket is looked for.
struct Found<'a> {
    diag: &'a mut SockDiag,
    /// The ping sockets, once read.
    pings: &'a mut Option<PingSockets>,
    host: &'a HashSet<IpAddr>,
}

/// The owner of a new flow, from its socket (sock_diag; a ping socket from
/// `/proc/net/icmp{,6}`), if it has one on this host: the same lookups as the daemon's
/// listener.
fn owner(
    found: Found,
    flow: &Flow,
    nets: &LocalNets,
    delegating: &Delegating,
    subuids: &SubUids,
) -> Option<Attribution> {
    let host = found.host;
    let socket = if L4::from_ipproto(flow.orig.proto).is_some_and(L4::is_ping) {
        let pings = found
            .pings
            .get_or_insert_with(|| PingSockets::read(Path::new("/proc")));
        let here = |ip: IpAddr| ip.is_loopback() || host.contains(&ip);
        pings.owner_of(flow, here).cloned()?
    } else {
        found.diag.owner_socket(
            flow,
            host,
            &mut 0,
            &mut |e| tracing::debug!(error = %e, "sock_diag lookup failed"),
        )?
    };
    attribute_through(flow, &socket, host, delegating, subuids, nets)
}
