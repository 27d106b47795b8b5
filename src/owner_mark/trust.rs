//! Whether the owner marks are believed: [`MarkTrust`], the judge of the mark
//! [`super`] writes, held against the ruleset and against every flow's live socket.
//!
//! Above the join in the layers (it takes the join's [`MarkCheck`]s and keeps its state
//! next to the setup's, [`prereq::STATE_DIR`]), while the mark's rule and encoding below
//! it stay a leaf.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing::warn;

use crate::attribute::MarkCheck;
use crate::model::{Flow, L4};
use crate::prereq;

/// Whether flows' owner marks may charge flows no socket names ([the owner mark](super)): the
/// switch is on, netledger's rule is installed and the only writer of the mark in the
/// ruleset, and no mark has disagreed with its flow's live socket. A disagreement is said
/// once and kept (in memory, and in a file under [`prereq::STATE_DIR`] for the next timer
/// run) until `netledger setup` runs again: the marks are not used meanwhile, whatever
/// the ruleset says, because a writer outside nftables (tc, eBPF, `conntrack -U`) would
/// not show there.
#[derive(Debug)]
pub struct MarkTrust {
    enabled: bool,
    /// Where the reason last said is kept (one file per network namespace).
    file: Option<PathBuf>,
    state: Mutex<TrustState>,
}

#[derive(Debug, Default)]
struct TrustState {
    /// The ruleset's verdict when last looked at (None: not looked yet).
    ruleset: Option<Result<(), String>>,
    /// Whether the ruleset is to be looked at again before marks are next used.
    stale: bool,
    /// The first disagreement seen, for good.
    disagreed: Option<String>,
    /// The reasons said so far, here or by an earlier run (so each is said once).
    said: Vec<String>,
    /// Marks checked against live sockets, and those that agreed.
    checked: u64,
    agreed: u64,
}

/// The first words of a kept disagreement in the state file.
const DISAGREES: &str = "a conntrack mark disagrees";

impl MarkTrust {
    /// The trust of a process in the network namespace of `proc_root`, off when not
    /// `enabled` (`owner_mark = false`). Reads a disagreement an earlier run kept.
    pub fn new(enabled: bool, proc_root: &Path) -> Arc<MarkTrust> {
        let file = prereq::state_path(proc_root).map(|p| p.with_extension("owner-mark"));
        let said: Vec<String> = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default();
        let disagreed = said.iter().find(|s| s.starts_with(DISAGREES)).cloned();
        Arc::new(MarkTrust {
            enabled,
            file,
            state: Mutex::new(TrustState {
                disagreed,
                said,
                ..TrustState::default()
            }),
        })
    }

    /// Marks never used (for read-only views and tests).
    pub fn off() -> Arc<MarkTrust> {
        Arc::new(MarkTrust {
            enabled: false,
            file: None,
            state: Mutex::new(TrustState::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TrustState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Have the ruleset looked at again (`nft -j list ruleset`) the next time marks are
    /// about to be used ([`MarkTrust::usable`]): each pass. Lazily, so a pass that fails
    /// before (no CAP_NET_ADMIN) or needs no mark runs no `nft`.
    pub fn refresh(&self) {
        self.lock().stale = true;
    }

    /// Whether the switch is on (`owner_mark`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether marks charge flows now, looking at the ruleset first when a refresh asked.
    pub fn usable(&self) -> bool {
        self.usable_with(super::ruleset_state)
    }

    /// Whether [`MarkTrust::usable`] would look at the ruleset now (so that a pass may
    /// have `nft` read it beforehand, meanwhile).
    pub fn wants_ruleset(&self) -> bool {
        let st = self.lock();
        self.enabled && (st.stale || st.ruleset.is_none())
    }

    /// [`MarkTrust::usable`], with the ruleset's verdict from `ruleset` (called only when
    /// the ruleset is to be looked at).
    pub fn usable_with(&self, ruleset: impl FnOnce() -> Result<(), String>) -> bool {
        if !self.enabled {
            return false;
        }
        let stale = {
            let st = self.lock();
            st.stale || st.ruleset.is_none()
        };
        if stale {
            let verdict = ruleset();
            let mut st = self.lock();
            if let Err(reason) = &verdict {
                let reason = reason.clone();
                self.say(&mut st, reason);
            }
            st.ruleset = Some(verdict);
            st.stale = false;
        }
        self.usable_now()
    }

    /// [`MarkTrust::usable`] as last looked at, never running `nft` (the daemon's
    /// listener and flushes, which must not wait for it).
    pub fn usable_now(&self) -> bool {
        let st = self.lock();
        self.enabled && st.disagreed.is_none() && matches!(st.ruleset, Some(Ok(())))
    }

    /// Take what `flow`'s mark said against its live socket.
    pub fn check(&self, check: MarkCheck, flow: &Flow) {
        let mark = flow.mark;
        if !self.enabled {
            return;
        }
        let mut st = self.lock();
        st.checked += 1;
        match check {
            MarkCheck::Agrees => st.agreed += 1,
            MarkCheck::Disagrees { .. } if st.disagreed.is_some() => {}
            MarkCheck::Disagrees { socket_uid } => {
                let named = match super::uid_of(mark) {
                    Some(uid) => format!("mark {mark:#x}, uid {uid}"),
                    None => format!("mark {mark:#x}"),
                };
                let against = match socket_uid {
                    Some(uid) => format!("its socket's uid is {uid}"),
                    None => "netledger never writes it".into(),
                };
                let reason = format!(
                    "{DISAGREES} ({named} on {}, {against}): another tool writes the mark, so \
                     netledger stops charging flows by it (find the writer, or set owner_mark = \
                     false; `netledger setup` re-arms)",
                    describe(flow)
                );
                st.disagreed = Some(reason.clone());
                self.say(&mut st, reason);
            }
        }
    }

    /// (marks checked against live sockets, of which agreed) so far.
    pub fn checked(&self) -> (u64, u64) {
        let st = self.lock();
        (st.checked, st.agreed)
    }

    /// Warn about `reason` unless it was said before (here or by an earlier run).
    fn say(&self, st: &mut TrustState, reason: String) {
        if st.said.contains(&reason) {
            return;
        }
        warn!("owner marks not used: {reason}");
        st.said.push(reason);
        if let Some(f) = &self.file {
            let _ = std::fs::create_dir_all(prereq::STATE_DIR);
            let _ = std::fs::write(f, st.said.join("\n") + "\n");
        }
    }

    /// Forget a kept disagreement (`netledger setup`).
    pub fn rearm(proc_root: &Path) {
        if let Some(f) = prereq::state_path(proc_root).map(|p| p.with_extension("owner-mark")) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// A flow in a warning: `tcp 198.51.100.1:40000 -> 198.51.100.2:443`.
fn describe(f: &Flow) -> String {
    let proto = L4::from_ipproto(f.orig.proto).map_or("ip", |l| match l {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
        L4::UdpLite => "udplite",
        L4::Icmp => "icmp",
        L4::Icmpv6 => "icmpv6",
    });
    format!("{proto} {} -> {}", f.orig.src_sa(), f.orig.dst_sa())
}
