//! Conntrack's timeouts (`/proc/sys/net/netfilter/nf_conntrack_*timeout*`), read from the
//! kernel here so that what uses them (the daemon's dating of destroyed flows, `log`'s
//! note) stays pure.

use crate::model::{CtStatus, CtTcpState, Flow};

/// Conntrack's timeouts in seconds (per network namespace, `net.netfilter.*_timeout*`),
/// to date a destroyed flow's last packet.
///
/// Every packet sets the entry's expiry to now + the timeout of the state it leaves the
/// entry in (`nf_ct_refresh_acct()`), counted in jiffies. When the entry is removed, the
/// kernel dates its STOP timestamp (`nf_ct_delete()`):
/// - at the expiry, if it had expired (however late the garbage collector or a dump
///   noticed: measured on Linux 6.18, the DESTROY event came 2–9 s later). So the last
///   packet is STOP − the timeout, to within a jiffy either way (4 ms at HZ=250): for a
///   1 ms flow, STOP − timeout lands up to a jiffy *before* its start, which means "just
///   after the start", not "removed early". Such an event carries no CTA_TIMEOUT.
/// - at the removal, if it was removed before it expired (`conntrack -D`/`-F`, a TCP port
///   reused during TIME_WAIT, early drop). Then the DESTROY event carries CTA_TIMEOUT, the
///   whole seconds that were left, when at least one was: the expiry was STOP + those
///   seconds (+ under 1 s), so the last packet was STOP − (timeout − left), to within a
///   second.
///
/// Which timeout ran is a fact of the state the entry ended in (see [`Timeouts::after`]).
/// Without a known timeout (an established TCP connection, whose timeout depends on
/// unacknowledged data, a fixed or offloaded timeout, other protocols), the end is STOP:
/// the entry lived until then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `nf_conntrack_tcp_timeout_syn_sent`.
    pub tcp_syn_sent: u64,
    /// `nf_conntrack_tcp_timeout_syn_recv`.
    pub tcp_syn_recv: u64,
    /// `nf_conntrack_tcp_timeout_established`.
    pub tcp_established: u64,
    /// `nf_conntrack_tcp_timeout_fin_wait`.
    pub tcp_fin_wait: u64,
    /// `nf_conntrack_tcp_timeout_close_wait`.
    pub tcp_close_wait: u64,
    /// `nf_conntrack_tcp_timeout_last_ack`.
    pub tcp_last_ack: u64,
    /// `nf_conntrack_tcp_timeout_time_wait` (state after a FIN close).
    pub tcp_time_wait: u64,
    /// `nf_conntrack_tcp_timeout_close` (state after a RST).
    pub tcp_close: u64,
    /// `nf_conntrack_tcp_timeout_max_retrans`: caps a state's timeout after retransmissions
    /// or a zero window.
    pub tcp_max_retrans: u64,
    /// `nf_conntrack_tcp_timeout_unacknowledged`: caps it while data is unacknowledged.
    pub tcp_unacknowledged: u64,
    /// `nf_conntrack_udp_timeout` (UDP not assured).
    pub udp: u64,
    /// `nf_conntrack_udp_timeout_stream` (assured UDP).
    pub udp_stream: u64,
    /// `nf_conntrack_icmp_timeout`.
    pub icmp: u64,
    /// `nf_conntrack_icmpv6_timeout`.
    pub icmpv6: u64,
}

impl Default for Timeouts {
    /// The kernel's defaults.
    fn default() -> Timeouts {
        Timeouts {
            tcp_syn_sent: 120,
            tcp_syn_recv: 60,
            tcp_established: 432_000,
            tcp_fin_wait: 120,
            tcp_close_wait: 60,
            tcp_last_ack: 30,
            tcp_time_wait: 120,
            tcp_close: 10,
            tcp_max_retrans: 300,
            tcp_unacknowledged: 300,
            udp: 30,
            udp_stream: 120,
            icmp: 30,
            icmpv6: 30,
        }
    }
}

impl Timeouts {
    /// Read them from `proc_root/sys/net/netfilter` (a missing one keeps its default).
    pub fn read(proc_root: &std::path::Path) -> Timeouts {
        let dir = proc_root.join("sys/net/netfilter");
        let get = |name: &str, default: u64| {
            std::fs::read_to_string(dir.join(format!("nf_conntrack_{name}")))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(default)
        };
        let d = Timeouts::default();
        Timeouts {
            tcp_syn_sent: get("tcp_timeout_syn_sent", d.tcp_syn_sent),
            tcp_syn_recv: get("tcp_timeout_syn_recv", d.tcp_syn_recv),
            tcp_established: get("tcp_timeout_established", d.tcp_established),
            tcp_fin_wait: get("tcp_timeout_fin_wait", d.tcp_fin_wait),
            tcp_close_wait: get("tcp_timeout_close_wait", d.tcp_close_wait),
            tcp_last_ack: get("tcp_timeout_last_ack", d.tcp_last_ack),
            tcp_time_wait: get("tcp_timeout_time_wait", d.tcp_time_wait),
            tcp_close: get("tcp_timeout_close", d.tcp_close),
            tcp_max_retrans: get("tcp_timeout_max_retrans", d.tcp_max_retrans),
            tcp_unacknowledged: get("tcp_timeout_unacknowledged", d.tcp_unacknowledged),
            udp: get("udp_timeout", d.udp),
            udp_stream: get("udp_timeout_stream", d.udp_stream),
            icmp: get("icmp_timeout", d.icmp),
            icmpv6: get("icmpv6_timeout", d.icmpv6),
        }
    }

    /// The timeout the last packet of `flow` set, if it is known from the flow's final
    /// state alone.
    ///
    /// - TCP (`nf_conntrack_tcp_packet()`): the timeout of the state, except that
    ///   retransmissions, a zero window or unacknowledged data cap it at
    ///   `max_retrans`/`unacknowledged`. A state whose timeout is within both caps
    ///   (every state but ESTABLISHED, by default) is therefore known exactly.
    /// - UDP (`nf_conntrack_udp_packet()`): the stream timeout once the flow saw a reply
    ///   and was still active 2 s after it began (older kernels: after its reply) — the
    ///   same packet sets ASSURED, and every later packet keeps the stream timeout — else
    ///   the plain one. A NAT-clash entry gets a short timeout of its own: unknown.
    /// - ICMP and ICMPv6: their one timeout.
    pub fn after(&self, flow: &Flow, tcp_state: Option<CtTcpState>) -> Option<u64> {
        if flow
            .ct_status()
            .intersects(CtStatus::FIXED_TIMEOUT.union(CtStatus::OFFLOAD))
        {
            return None;
        }
        match flow.orig.proto {
            crate::model::IPPROTO_TCP => {
                // enum tcp_conntrack (include/uapi/linux/netfilter/nf_conntrack_tcp.h).
                let t = match tcp_state? {
                    CtTcpState::SynSent => self.tcp_syn_sent,
                    CtTcpState::SynRecv => self.tcp_syn_recv,
                    CtTcpState::Established => self.tcp_established,
                    CtTcpState::FinWait => self.tcp_fin_wait,
                    CtTcpState::CloseWait => self.tcp_close_wait,
                    CtTcpState::LastAck => self.tcp_last_ack,
                    CtTcpState::TimeWait => self.tcp_time_wait,
                    CtTcpState::Close => self.tcp_close,
                    CtTcpState::None | CtTcpState::SynSent2 => return None,
                };
                (t <= self.tcp_max_retrans.min(self.tcp_unacknowledged)).then_some(t)
            }
            crate::model::IPPROTO_UDP if flow.ct_status().contains(CtStatus::NAT_CLASH) => None,
            crate::model::IPPROTO_UDP if flow.ct_status().contains(CtStatus::ASSURED) => {
                Some(self.udp_stream)
            }
            crate::model::IPPROTO_UDP => Some(self.udp),
            1 => Some(self.icmp),
            58 => Some(self.icmpv6),
            _ => None,
        }
    }
}
