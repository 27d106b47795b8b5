//! nftables' change notifications (`NFNLGRP_NFTABLES`): the daemon's way to know at once
//! that its table was deleted or changed (see [`crate::prereq::firewall`]).

use std::io;
use std::time::{Duration, Instant};

use super::netlink::{self, protocols::NETLINK_NETFILTER, Socket, SocketAddr};

/// `NFNLGRP_NFTABLES` (include/uapi/linux/netfilter/nfnetlink.h).
const NFNLGRP_NFTABLES: u32 = 7;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `enum nf_tables_msg_types` (include/uapi/linux/netfilter/nf_tables.h).
const NFT_MSG_NEWGEN: u8 = 15;
const NFT_MSG_DELTABLE: u8 = 2;
const NFT_MSG_DELCHAIN: u8 = 5;
const NFT_MSG_DELRULE: u8 = 8;
/// The table's name is attribute 1 of every table, chain, rule, set, object and
/// flowtable message (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, …).
const NFTA_X_TABLE: u16 = 1;
const NFTA_GEN_PROC_PID: u16 = 2;
const NFTA_GEN_PROC_NAME: u16 = 3;
const NFPROTO_INET: u8 = 1;
const NFGENMSG_LEN: usize = 4;

/// One nf_tables notification, as far as netledger cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// An object of table `inet netledger` changed; `deleted` for a DEL message.
    Ours { deleted: bool },
    /// The end of a transaction, with the process that made it.
    Generation {
        pid: Option<u32>,
        name: Option<String>,
    },
    /// Anything else (other tables).
    Other,
}

/// The notifications in one datagram of the nf_tables group.
pub fn parse_notes(buf: &[u8]) -> Vec<Note> {
    let mut out = Vec::new();
    for msg in netlink::messages(buf) {
        let Ok(msg) = msg else { break };
        if msg.kind >> 8 != NFNL_SUBSYS_NFTABLES || msg.payload.len() < NFGENMSG_LEN {
            continue;
        }
        let (kind, family) = ((msg.kind & 0xff) as u8, msg.payload[0]);
        let attrs = netlink::attributes(&msg.payload[NFGENMSG_LEN..]).map_while(Result::ok);
        if kind == NFT_MSG_NEWGEN {
            let (mut pid, mut name) = (None, None);
            for (t, v) in attrs {
                match t {
                    NFTA_GEN_PROC_PID => pid = v.first_chunk::<4>().map(|b| u32::from_be_bytes(*b)),
                    NFTA_GEN_PROC_NAME => name = Some(c_string(v)),
                    _ => {}
                }
            }
            out.push(Note::Generation { pid, name });
            continue;
        }
        let table = attrs
            .into_iter()
            .find(|(t, _)| *t == NFTA_X_TABLE)
            .map(|(_, v)| c_string(v));
        out.push(
            if family == NFPROTO_INET && table.as_deref() == Some("netledger") {
                Note::Ours {
                    deleted: matches!(kind, NFT_MSG_DELTABLE | NFT_MSG_DELCHAIN | NFT_MSG_DELRULE),
                }
            } else {
                Note::Other
            },
        );
    }
    out
}

fn c_string(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// A committed change of the ruleset that touched table `inet netledger`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// When its first notification arrived.
    pub at: Instant,
    /// Whether it deleted something of the table.
    pub deleted: bool,
    /// The process that made it (`nft (pid 42)`), when the kernel said.
    pub by: Option<String>,
}

/// A subscription to nf_tables' notifications in this network namespace.
pub struct Watch {
    socket: Socket,
    buf: Vec<u8>,
    pending: Option<(Instant, bool)>,
}

impl Watch {
    /// Subscribe (needs CAP_NET_ADMIN, as nft does).
    pub fn subscribe() -> io::Result<Watch> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&SocketAddr::new(0, 1 << (NFNLGRP_NFTABLES - 1)))?;
        // A `flush ruleset` of a big ruleset announces every object: room for them.
        let _ = netlink::set_receive_buffer(&socket, 4 << 20);
        netlink::set_recv_timeout(&socket, Duration::from_millis(200))?;
        Ok(Watch {
            socket,
            buf: vec![0; 64 * 1024],
            pending: None,
        })
    }

    /// Wait up to ~200 ms for the next committed change of the ruleset (None: none yet).
    /// Notifications lost to an overrun count as a change of netledger's table, since what
    /// they said is unknown.
    pub fn wait(&mut self) -> io::Result<Option<Event>> {
        let n = match netlink::recv(&self.socket, &mut self.buf) {
            Ok(n) => n.min(self.buf.len()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A transaction whose NEWGEN never came (cannot happen, but do not wait
                // for it forever).
                return Ok(self.pending.take().map(|(at, deleted)| {
                    Event::Ours(Change {
                        at,
                        deleted,
                        by: None,
                    })
                }));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Ok(Some(Event::Ours(Change {
                    at: Instant::now(),
                    deleted: true,
                    by: Some("unknown (notifications overran)".into()),
                })))
            }
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        for note in parse_notes(&self.buf[..n]) {
            match note {
                Note::Ours { deleted } => {
                    let p = self.pending.get_or_insert((now, false));
                    p.1 |= deleted;
                }
                Note::Generation { pid, name } => {
                    let Some((at, deleted)) = self.pending.take() else {
                        return Ok(Some(Event::Other));
                    };
                    let by = match (name, pid) {
                        (Some(n), Some(p)) => Some(format!("{n} (pid {p})")),
                        (Some(n), None) => Some(n),
                        (None, Some(p)) => Some(format!("pid {p}")),
                        _ => None,
                    };
                    return Ok(Some(Event::Ours(Change { at, deleted, by })));
                }
                Note::Other => {}
            }
        }
        Ok(None)
    }
}

/// A committed change of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It touched table `inet netledger`.
    Ours(Change),
    /// It did not.
    Other,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nlmsg(kind: u8, family: u8, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![family, 0, 0, 0];
        for (t, v) in attrs {
            let len = 4 + v.len();
            body.extend_from_slice(&(len as u16).to_ne_bytes());
            body.extend_from_slice(&t.to_ne_bytes());
            body.extend_from_slice(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | u16::from(kind)).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn notifications_of_our_table_and_the_generation() {
        let mut buf = nlmsg(NFT_MSG_DELTABLE, NFPROTO_INET, &[(1, b"netledger\0")]);
        buf.extend(nlmsg(NFT_MSG_DELTABLE, 2, &[(1, b"netledger\0")]));
        buf.extend(nlmsg(6, NFPROTO_INET, &[(1, b"filter\0")]));
        buf.extend(nlmsg(6, NFPROTO_INET, &[(1, b"netledger\0")]));
        buf.extend(nlmsg(
            NFT_MSG_NEWGEN,
            0,
            &[
                (1, &7u32.to_be_bytes()),
                (2, &4242u32.to_be_bytes()),
                (3, b"nft\0"),
            ],
        ));
        assert_eq!(
            parse_notes(&buf),
            [
                Note::Ours { deleted: true },
                Note::Other,
                Note::Other,
                Note::Ours { deleted: false },
                Note::Generation {
                    pid: Some(4242),
                    name: Some("nft".into())
                }
            ]
        );
        // A cut datagram yields what came whole.
        assert_eq!(parse_notes(&buf[..20]), []);
    }
}
