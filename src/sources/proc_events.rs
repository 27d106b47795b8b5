//! New processes as the kernel starts them: the process events connector
//! (`NETLINK_CONNECTOR`, group `CN_IDX_PROC`), which announces every fork, exec and uid
//! change the moment it happens. The daemon's namer reads the descriptors of the newest
//! processes of a flow's user first ([`crate::sources::processes`] otherwise learns of a
//! new process only by a walk of every process), so a process that makes one connection
//! and exits within milliseconds is read while it still holds its socket.
//!
//! Kernel facts (checked against Linux 6.18, drivers/connector/cn_proc.c, and on the test
//! machine):
//! - Subscribing needs CAP_NET_ADMIN; the kernel ignores a requester outside the initial
//!   user and pid namespaces (pids are reported in the initial pid namespace).
//! - The connector exists in the **initial network namespace only**: a socket opened in
//!   another one is refused (`ECONNREFUSED` on the subscription). [`ProcEvents::open`]
//!   opens it there (`setns` into the namespace of the nearest ancestor process in it,
//!   CAP_SYS_ADMIN) when the daemon runs in another network namespace; without one, the
//!   daemon goes without process events.
//! - Since Linux 6.6 a subscription may name the events wanted (`struct proc_input`, the
//!   kernel filters the others out before queueing them); older kernels ignore such a
//!   request, so they get the plain `PROC_CN_MCAST_LISTEN` and every event.
//! - One `struct cn_msg` + `struct proc_event` per datagram, in host byte order: `what`
//!   (u32), `cpu` (u32), `timestamp_ns` (u64), then the event's pids. A FORK event is sent
//!   for threads too (child pid ≠ child tgid): only whole processes are kept here.
//! - The EXIT event is sent after the process's descriptors are released: it cannot help
//!   find a socket, and is not subscribed to.
//!
//! Layouts: include/uapi/linux/connector.h, include/uapi/linux/cn_proc.h.
//! [`subscription`] and [`parse`] are the pure halves.

use std::io;
use std::path::Path;
use std::time::Duration;

use super::netlink::{self, messages, protocols::NETLINK_CONNECTOR, Socket, SocketAddr};

/// The connector's index and value of the process events (`CN_IDX_PROC`, `CN_VAL_PROC`).
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
/// `struct cn_msg`: `{ struct cb_id { u32 idx, val }; u32 seq, ack; u16 len, flags; }`.
const CN_MSG_LEN: usize = 20;
/// `enum proc_cn_mcast_op`.
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
/// `enum what` of `struct proc_event`.
const PROC_EVENT_FORK: u32 = 0x1;
const PROC_EVENT_EXEC: u32 = 0x2;
/// Offset of the event's data in `struct proc_event` (after what, cpu, timestamp_ns).
const EVENT_DATA: usize = 16;
/// `NLMSG_DONE`: the type the connector gives its messages.
const NLMSG_DONE: u16 = 3;
/// The receive buffer asked for: a burst of forks on a busy host is thousands of events.
const RECEIVE_BUFFER: usize = 4 << 20;

/// One process event, for whole processes only (not threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new process (`fork`/`clone` without `CLONE_THREAD`): it runs its parent's
    /// program until it execs.
    Fork {
        /// The new process's pid.
        pid: u32,
    },
    /// A process replaced its program.
    Exec {
        /// Its pid.
        pid: u32,
    },
}

/// A subscribed process events socket.
pub struct ProcEvents {
    socket: Socket,
    buf: Vec<u8>,
}

impl ProcEvents {
    /// Subscribe, in the initial network namespace (entered for the socket's creation
    /// when this thread is in another one). Errors name the cause: no privilege, no
    /// connector in this kernel, no way into the initial namespace.
    pub fn open(proc_root: &Path) -> io::Result<ProcEvents> {
        let mut socket = in_initial_netns(proc_root, || Socket::new(NETLINK_CONNECTOR))?;
        socket.bind(&SocketAddr::new(0, CN_IDX_PROC))?;
        let _ = netlink::set_receive_buffer(&socket, RECEIVE_BUFFER);
        let filter = filter_supported(
            &std::fs::read_to_string(proc_root.join("sys/kernel/osrelease")).unwrap_or_default(),
        );
        let wanted = PROC_EVENT_FORK | PROC_EVENT_EXEC;
        let req = subscription(PROC_CN_MCAST_LISTEN, filter.then_some(wanted));
        socket.send_to(&req, &SocketAddr::new(0, 0), 0)?;
        Ok(ProcEvents {
            socket,
            buf: vec![0; 4096],
        })
    }

    /// Wait up to `timeout` for events; every one received is appended to `out`. An
    /// overrun (the kernel dropped events: `ENOBUFS`) is not an error: the processes it
    /// hid are only found by the walks, as without this socket.
    pub fn receive(&mut self, timeout: Duration, out: &mut Vec<ProcEvent>) -> io::Result<()> {
        if netlink::poll_readable(&self.socket, timeout)? == 0 {
            return Ok(());
        }
        loop {
            let mut window: &mut [u8] = &mut self.buf[..];
            match self.socket.recv(&mut window, libc::MSG_DONTWAIT) {
                Ok(n) => out.extend(parse(&self.buf[..n.min(self.buf.len())])),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ProcEvents {
    fn drop(&mut self) {
        // Kernels before 6.6 count listeners until told; newer ones on close as well.
        let req = subscription(PROC_CN_MCAST_IGNORE, None);
        let _ = self.socket.send_to(&req, &SocketAddr::new(0, 0), 0);
    }
}

/// The inode of the initial network namespace's `ns/net` link: a constant of the kernel
/// (`PROC_NET_INIT_INO`, include/linux/proc_ns.h).
const NET_INIT_INO: u64 = 0xEFFF_FFF9;

/// Run `open` in the initial network namespace: here when this thread is in it, else in a
/// thread of its own that enters it (through the nearest ancestor process in it: the one
/// that started netledger in a namespace, `ip netns exec`, systemd's
/// `NetworkNamespacePath=`; pid 1 last) and ends there, so no other thread ever leaves
/// netledger's own namespace.
fn in_initial_netns<T: Send>(
    proc_root: &Path,
    open: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
    use std::os::fd::AsFd;
    if ns_inode(&proc_root.join("thread-self/ns/net")) == Some(NET_INIT_INO) {
        return open();
    }
    let init_path = initial_netns_of_ancestor(proc_root).ok_or_else(|| {
        io::Error::other(
            "the process events connector exists in the initial network namespace only, and \
             no ancestor process of netledger's is in it",
        )
    })?;
    let init = std::fs::File::open(init_path)?;
    std::thread::scope(|s| {
        s.spawn(move || {
            move_into_link_name_space(init.as_fd(), Some(LinkNameSpaceType::Network))?;
            open()
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("the thread opening the socket panicked")))
    })
}

/// The inode of a namespace link (`/proc/PID/ns/net`), if it can be read.
fn ns_inode(link: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(link).ok().map(|m| m.ino())
}

/// The `ns/net` link of the nearest ancestor of this process in the initial network
/// namespace (parents read from `/proc/PID/stat`).
fn initial_netns_of_ancestor(proc_root: &Path) -> Option<std::path::PathBuf> {
    let mut pid = parent_of(proc_root, "self")?;
    for _ in 0..64 {
        let link = proc_root.join(pid.to_string()).join("ns/net");
        if ns_inode(&link) == Some(NET_INIT_INO) {
            return Some(link);
        }
        if pid <= 1 {
            return None;
        }
        pid = parent_of(proc_root, &pid.to_string())?;
    }
    None
}

/// The parent pid of process `pid` (`self` for this one), from its `stat` (the field
/// after the command's closing parenthesis and the state).
fn parent_of(proc_root: &Path, pid: &str) -> Option<u32> {
    let stat = std::fs::read_to_string(proc_root.join(pid).join("stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the kernel of release `osrelease` (`6.6.0-…`) filters events per subscriber:
/// Linux 6.6 and later (pure).
pub fn filter_supported(osrelease: &str) -> bool {
    let mut parts = osrelease
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= (6, 6),
        _ => false,
    }
}

/// The datagram that subscribes (`op` LISTEN) or unsubscribes (IGNORE): a `cn_msg` whose
/// data is the op, or `struct proc_input { op; event_type; }` with the events wanted
/// (pure).
pub fn subscription(op: u32, events: Option<u32>) -> Vec<u8> {
    let mut data = op.to_ne_bytes().to_vec();
    if let Some(events) = events {
        data.extend_from_slice(&events.to_ne_bytes());
    }
    let mut cn = Vec::with_capacity(CN_MSG_LEN + data.len());
    for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
        cn.extend_from_slice(&v.to_ne_bytes());
    }
    cn.extend_from_slice(&(data.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes());
    cn.extend_from_slice(&data);
    netlink::request(NLMSG_DONE, 0, 0, &cn)
}

/// The whole-process events of one received datagram; anything else (thread events, the
/// subscription's acknowledgement, events not asked for, short messages) is skipped
/// (pure).
pub fn parse(datagram: &[u8]) -> Vec<ProcEvent> {
    let mut out = Vec::new();
    for msg in messages(datagram).flatten() {
        let Some(ev) = msg.payload.get(CN_MSG_LEN..) else {
            continue;
        };
        let u32_at = |i: usize| {
            let at = EVENT_DATA + 4 * i;
            ev.get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let Some(what) = ev
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        else {
            continue;
        };
        let event = match what {
            // fork: parent_pid, parent_tgid, child_pid, child_tgid
            PROC_EVENT_FORK => match (u32_at(2), u32_at(3)) {
                (Some(pid), Some(tgid)) if pid == tgid => Some(ProcEvent::Fork { pid }),
                _ => None,
            },
            // exec: process_pid, process_tgid (a thread's exec makes it the leader)
            PROC_EVENT_EXEC => u32_at(1).map(|pid| ProcEvent::Exec { pid }),
            _ => None,
        };
        out.extend(event);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A datagram as the kernel sends it: `what` and the event's u32 fields.
    fn datagram(what: u32, fields: &[u32]) -> Vec<u8> {
        let mut ev = what.to_ne_bytes().to_vec();
        ev.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&123_456u64.to_ne_bytes()); // timestamp_ns
        for f in fields {
            ev.extend_from_slice(&f.to_ne_bytes());
        }
        let mut cn = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 7, 0] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&ev);
        netlink::request(NLMSG_DONE, 0, 0, &cn)
    }

    #[test]
    fn whole_processes_are_kept_threads_are_not() {
        assert_eq!(
            parse(&datagram(PROC_EVENT_FORK, &[10, 10, 11, 11])),
            [ProcEvent::Fork { pid: 11 }]
        );
        // A thread of process 10.
        assert!(parse(&datagram(PROC_EVENT_FORK, &[10, 10, 12, 10])).is_empty());
        assert_eq!(
            parse(&datagram(PROC_EVENT_EXEC, &[11, 11])),
            [ProcEvent::Exec { pid: 11 }]
        );
        // A thread's exec: the process (its tgid) runs the new program.
        assert_eq!(
            parse(&datagram(PROC_EVENT_EXEC, &[13, 11])),
            [ProcEvent::Exec { pid: 11 }]
        );
    }

    #[test]
    fn other_events_acks_and_short_messages_are_skipped() {
        // PROC_EVENT_NONE: the subscription's acknowledgement; UID (not asked for); EXIT;
        // a cut fork.
        assert!(parse(&datagram(0, &[0, 0])).is_empty());
        assert!(parse(&datagram(0x4, &[11, 11, 0, 65534])).is_empty());
        assert!(parse(&datagram(0x8000_0000, &[11, 11, 0, 17, 10, 10])).is_empty());
        assert!(parse(&datagram(PROC_EVENT_FORK, &[10, 10, 11])).is_empty());
        assert!(parse(&[1, 2, 3]).is_empty());
    }

    #[test]
    fn the_subscription_names_its_events_only_where_the_kernel_filters() {
        let plain = subscription(PROC_CN_MCAST_LISTEN, None);
        assert_eq!(plain.len(), 16 + CN_MSG_LEN + 4);
        let filtered = subscription(PROC_CN_MCAST_LISTEN, Some(PROC_EVENT_EXEC));
        assert_eq!(filtered.len(), 16 + CN_MSG_LEN + 8);
        assert_eq!(&filtered[16 + 16..16 + 18], &8u16.to_ne_bytes());
        assert!(filter_supported("6.18.44-fc-v1272"));
        assert!(filter_supported("6.6.0"));
        assert!(!filter_supported("6.5.13-generic"));
        assert!(!filter_supported("5.15.0-91-generic"));
        assert!(!filter_supported(""));
    }

    /// The real connector: a process this test starts is announced (root only).
    #[test]
    fn a_started_process_is_announced() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: subscribing to process events needs root");
            return;
        }
        let mut ev = ProcEvents::open(Path::new("/proc")).unwrap();
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let mut child = child;
        child.wait().unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !got.contains(&ProcEvent::Exec { pid }) {
            ev.receive(Duration::from_millis(100), &mut got).unwrap();
        }
        assert!(got.contains(&ProcEvent::Fork { pid }), "{got:?}");
        assert!(got.contains(&ProcEvent::Exec { pid }), "{got:?}");
    }
}
