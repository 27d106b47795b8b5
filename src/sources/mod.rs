//! Reading the kernel (and the user database): socket tables, process descriptors, the
//! conntrack table, interface addresses, names of uids.
//!
//! Every reader is paired with a pure parser so fixtures and other namespaces work.

pub mod cgroups;
pub mod conntrack;
pub mod interfaces;
pub mod netdev;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod proc_events;
pub mod processes;
pub mod sockdiag;
pub mod sockets;
pub mod users;
