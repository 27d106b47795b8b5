//! The daemon's guard of its nftables table (issue 25): a thread subscribed to nf_tables'
//! notifications ([`firewall::Watch`]) that puts `inet netledger` back within
//! milliseconds when a `flush ruleset`, a firewall reload or an admin deletes it or its
//! owner-mark rules, says so in one line, and hands the gap to the writer to record; and
//! that looks for `notrack` rules whenever the ruleset changes.
//!
//! It keeps the table the daemon found at start, `--no-setup` or not: the shipped units
//! set up as root before the daemon starts, and the daemon (with CAP_NET_ADMIN, which nft
//! needs) only puts back what was there. Sysctls are left to `setup`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::owner_mark;
use crate::owner_mark::trust::MarkTrust;
use crate::prereq::firewall::{self, Gap, Health};
use crate::prereq::{self, Needs};
use crate::sources::nftables::{Change, Event, Watch};

/// The shortest time between two looks for notrack rules.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// Gaps found and not yet recorded (the writer owns the database).
pub type Gaps = Arc<Mutex<Vec<Gap>>>;

/// The running guard; stopped and joined on drop.
pub struct Guard {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Start the guard: subscribed before it returns, so a change made after is seen. `None`
/// (with a warning) when the subscription fails.
pub fn spawn(proc_root: PathBuf, needs: Needs, marks: Arc<MarkTrust>, gaps: Gaps) -> Option<Guard> {
    let mut watch = match Watch::subscribe() {
        Ok(w) => w,
        Err(e) => {
            warn!(
                "cannot watch the nftables ruleset ({e}): a flush of table inet netledger \
                 will be found only by `netledger setup`"
            );
            return None;
        }
    };
    // Kept only if there is one now (setup made it, or the admin did).
    let keep = firewall::table_handle().is_some();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let thread = std::thread::Builder::new()
        .name("firewall".into())
        .spawn(move || {
            let mut health = Health::default();
            look_for_notrack(&mut health, &gaps);
            // The notrack look runs `nft -j list ruleset`: at most once a second, however
            // many transactions other tools make (a busy fail2ban, a container runtime).
            let mut last_look = Instant::now();
            let mut look_due = false;
            while !stopped.load(Ordering::SeqCst) {
                match watch.wait() {
                    Ok(Some(Event::Ours(change))) => {
                        if let Some(gap) = put_back(&proc_root, needs, keep, &change) {
                            gaps.lock().unwrap_or_else(|p| p.into_inner()).push(gap);
                        }
                        marks.refresh();
                        look_due = true;
                    }
                    Ok(Some(Event::Other)) => look_due = true,
                    Ok(None) => {}
                    Err(e) => {
                        warn!("watching the nftables ruleset failed ({e}); stopped watching");
                        return;
                    }
                }
                if look_due && last_look.elapsed() >= LOOK_EVERY {
                    look_for_notrack(&mut health, &gaps);
                    last_look = Instant::now();
                    look_due = false;
                }
            }
        })
        .ok()?;
    Some(Guard {
        stop,
        thread: Some(thread),
    })
}

/// After a change of netledger's table: look at it, and put it back when it is gone or
/// lost its rules. The gap to record, with the line said.
fn put_back(proc_root: &std::path::Path, needs: Needs, keep: bool, change: &Change) -> Option<Gap> {
    let listed = owner_mark::nft_json(&["list", "table", "inet", "netledger"]);
    let rules = listed.as_deref().map_or(0, owner_mark::rules_present);
    let whole = listed.as_deref().is_some_and(firewall::table_whole);
    let intact = whole && (needs.no_owner_mark || rules >= owner_mark::RULES);
    let by = change.by.as_deref().unwrap_or("an unknown process");
    if intact {
        debug!("table inet netledger changed by {by}, and is whole");
        return None;
    }
    let (cause, what) = if listed.is_none() {
        ("table-gone", "was deleted")
    } else if !whole {
        ("table-gone", "lost a chain or its ct rule")
    } else {
        ("rule-gone", "lost its owner-mark rules")
    };
    let now = chrono::Utc::now().timestamp();
    if !keep {
        let detail = format!(
            "nftables table inet netledger {what} (by {by}): conntrack may stop counting here; \
             `netledger setup` puts it back"
        );
        warn!("{detail}");
        return Some(Gap {
            cause: cause.into(),
            detected_at: now,
            off_ms: None,
            detail,
        });
    }
    match prereq::ensure_table(proc_root, needs, false) {
        Ok(_) => {
            let off = change.at.elapsed();
            let detail = format!(
                "nftables table inet netledger {what} (by {by}; a `flush ruleset` or a firewall \
                 reload?): put back after {} ms, so accounting may have been off for that long",
                off.as_millis()
            );
            warn!("{detail}");
            Some(Gap {
                cause: cause.into(),
                detected_at: now,
                off_ms: Some(off.as_millis() as i64),
                detail,
            })
        }
        Err(e) => {
            let detail = format!(
                "nftables table inet netledger {what} (by {by}) and could not be put back: {e}"
            );
            warn!("{detail}");
            Some(Gap {
                cause: cause.into(),
                detected_at: now,
                off_ms: None,
                detail,
            })
        }
    }
}

fn look_for_notrack(health: &mut Health, gaps: &Gaps) {
    let Some(json) = owner_mark::nft_json(&["list", "ruleset"]) else {
        return;
    };
    let found = health.look(None, Some(&json), None, chrono::Utc::now().timestamp());
    for g in &found {
        warn!("{}", g.detail);
    }
    gaps.lock().unwrap_or_else(|p| p.into_inner()).extend(found);
}
