//! The conntrack table, read over ctnetlink: one dump → a list of [`Entry`]s (each a
//! [`Flow`] and what the entry says beside it: TCP state, timeout), and the NEW
//! and DESTROY events in between.
//!
//! - `dump`: the dump request, receiving until `NLMSG_DONE`, de-duplication
//!   ([`Dump`], [`parse_messages`] the pure half that replays `fixtures/netlink/`).
//! - `events`: the event socket and its messages ([`EventSocket`], [`parse_events`]).
//! - `decode`: one message's attributes → a [`Flow`], shared by both.
//! - `attr`: the kernel's numbers and the attributes typed, by kernel name.
//! - `error`: [`ConntrackError`], and which kernel answer means which fix.
//! - `timeouts`: the table's timeouts ([`Timeouts`]), to date a destroyed flow's end.
//!
//! Sockets, framing and the attribute walk are [`super::netlink`]'s.
//!
//! [`Flow`]: crate::model::Flow

mod attr;
mod decode;
mod dump;
mod error;
mod events;
mod timeouts;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use dump::{
    dump, dump_datagrams, dump_raw, parse_messages, Decoder, Dump, Entry, RECV_TIMEOUT,
};
pub use error::ConntrackError;
pub use events::{
    parse_events, Event, EventKind, EventSocket, Events, Received, GROUP_DESTROY, GROUP_NEW,
    GROUP_UPDATE,
};
pub use timeouts::Timeouts;
