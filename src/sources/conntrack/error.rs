//! Why a conntrack dump or the event socket failed, and which kernel answer means which.

use std::io;
use std::time::Duration;

use crate::sources::netlink::{Control, Message};

/// Why a conntrack dump failed as a whole. A single bad entry is not an error:
/// it is counted in [`super::Dump::skipped_messages`].
///
/// Variants that wrap an OS error expose it as [`std::error::Error::source`]
/// rather than repeating it in their message, so an `anyhow` chain printed with
/// `{:#}` names it once.
#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    /// The kernel refused the dump (`EPERM`): ctnetlink needs CAP_NET_ADMIN in
    /// the network namespace's user namespace.
    #[error(
        "reading the conntrack table needs CAP_NET_ADMIN (run as root or grant the capability)"
    )]
    PermissionDenied,
    /// No ctnetlink in this kernel: the `NETLINK_NETFILTER` protocol or the
    /// conntrack subsystem of nfnetlink is missing.
    #[error(
        "the conntrack netlink interface (nf_conntrack_netlink) is not available \
         (load it with `modprobe nf_conntrack_netlink`, or use a kernel built with \
         CONFIG_NF_CT_NETLINK)"
    )]
    NotAvailable {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// Any other error the kernel answered the dump with (`NLMSG_ERROR`, or a
    /// negative status in `NLMSG_DONE`).
    #[error("the kernel answered the conntrack dump request with an error")]
    Kernel {
        /// The errno the kernel answered with.
        source: io::Error,
    },
    /// A socket call failed.
    #[error("{op} on the NETLINK_NETFILTER socket failed")]
    Socket {
        /// Which call: "socket", "bind", "connect", "setsockopt", "send", "recv".
        op: &'static str,
        /// The error of that call.
        source: io::Error,
    },
    /// A datagram was larger than the receive buffer (the kernel caps dump
    /// batches at about 32 KiB, so this means something else is on the socket).
    #[error("a netlink datagram of {len} bytes did not fit the {capacity}-byte receive buffer")]
    Truncated {
        /// Size of the datagram.
        len: usize,
        /// Size of the receive buffer.
        capacity: usize,
    },
    /// No data for [`super::RECV_TIMEOUT`] while the dump was not finished.
    #[error("the kernel sent nothing for {0:?} before the conntrack dump was complete")]
    Timeout(Duration),
}

impl ConntrackError {
    /// The error of a failed socket call `op`.
    pub(super) fn socket(op: &'static str) -> impl Fn(io::Error) -> ConntrackError {
        move |source| ConntrackError::Socket { op, source }
    }

    /// The error of a failed `socket(2)` for NETLINK_NETFILTER.
    pub(super) fn open(e: io::Error) -> ConntrackError {
        match e.raw_os_error() {
            // No nfnetlink at all (socket(2): "protocol not supported").
            Some(libc::EPROTONOSUPPORT) => ConntrackError::NotAvailable { source: e },
            _ => ConntrackError::Socket {
                op: "socket",
                source: e,
            },
        }
    }
}

/// Whether the stream is finished after this datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    More,
    Done,
}

/// The meaning of a netlink control message for a conntrack stream, or `None` for a
/// message of nfnetlink.
pub(super) fn control(message: &Message<'_>) -> Option<Result<Progress, ConntrackError>> {
    Some(match message.control()? {
        Control::Noop | Control::Ack => Ok(Progress::More),
        Control::Error(code) => Err(kernel_error(code)),
        Control::Done(status) if status < 0 => Err(kernel_error(status)),
        Control::Done(_) => Ok(Progress::Done),
    })
}

/// Map a negative errno from the kernel to the error that names the fix.
fn kernel_error(errno: i32) -> ConntrackError {
    let source = io::Error::from_raw_os_error(errno.saturating_neg());
    match errno.saturating_neg() {
        libc::EPERM | libc::EACCES => ConntrackError::PermissionDenied,
        // nfnetlink_rcv_msg() answers EINVAL when no subsystem is registered
        // for the message type (nf_conntrack_netlink not loaded, and not
        // loadable); the others are what module loading and older kernels give.
        libc::EPROTONOSUPPORT | libc::ENOENT | libc::EOPNOTSUPP | libc::EINVAL => {
            ConntrackError::NotAvailable { source }
        }
        _ => ConntrackError::Kernel { source },
    }
}
