//! Conntrack prerequisites: accounting switched on, conntrack tracking in this network
//! namespace, and the privileges to read it. `netledger setup` fixes what it can, and
//! `netledger setup --undo` puts back what it changed.
//!
//! Setup keeps the value each sysctl had before it first changed it in a small file per
//! network namespace under [`STATE_DIR`] (`/run`): sysctls and nftables tables live as long
//! as the namespace and never survive a reboot, and neither does `/run`, so a value kept
//! there can never be restored into a later boot it does not belong to. The file is named
//! after the namespace's cookie (`SO_NETNS_COOKIE`, unique for the whole boot, never
//! reused), or on kernels before 5.14 its inode (unique while the namespace lives). Not next
//! to the database: the sysctls belong to the namespace, which any number of databases
//! share, and the systemd units run `setup` before the database is even opened.
//!
//! Kernel facts (kernel.md): `nf_conntrack_acct` acts per network namespace and only on
//! entries created after it is set; since Linux 4.10 conntrack's hooks register in a
//! namespace only when some rule needs them, so netledger installs a minimal nftables
//! table of its own with a `ct` expression.

pub mod firewall;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::owner_mark;

/// The nftables table netledger installs (`netledger setup`), shipped as
/// `contrib/netledger.nft`. Declaring the table, then deleting and re-creating it in one
/// atomic batch makes the load idempotent.
pub const NFT_TABLE: &str = include_str!("../contrib/netledger.nft");

/// Capability numbers (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_DAC_READ_SEARCH: u32 = 2;

/// A prerequisite that is missing, each naming the fix.
#[derive(Debug, thiserror::Error)]
pub enum PrereqError {
    /// `nf_conntrack_acct` is 0.
    #[error(
        "conntrack accounting is off (net.netfilter.nf_conntrack_acct=0), so flows carry no \
         byte counters: run `netledger setup` as root, or `sysctl -w net.netfilter.nf_conntrack_acct=1`"
    )]
    AccountingOff,
    /// The conntrack module is not loaded / not active in this namespace.
    #[error(
        "conntrack is not active in this network namespace ({path} is missing): run \
         `netledger setup` as root (it installs an nftables table that makes conntrack track)"
    )]
    ConntrackInactive {
        /// The sysctl path that was looked for.
        path: PathBuf,
    },
    /// The conntrack table is empty while connections exist.
    #[error(
        "conntrack is not tracking in this network namespace (empty table, {established} \
         established TCP sockets): run `netledger setup` as root, or add an nftables rule \
         using `ct state`"
    )]
    NotTracking {
        /// Established TCP sockets seen.
        established: usize,
    },
    /// Setup needs CAP_NET_ADMIN.
    #[error("`netledger setup` needs root (CAP_NET_ADMIN) to change sysctls and nftables")]
    NotPrivileged,
    /// The `nft` command is missing.
    #[error(
        "cannot run `nft` ({source}): install nftables, or create a rule using `ct state` yourself"
    )]
    NftMissing {
        /// The spawn error.
        source: std::io::Error,
    },
    /// `nft` refused the table.
    #[error("`nft -f -` failed to install table inet netledger: {stderr}")]
    NftFailed {
        /// What nft printed.
        stderr: String,
    },
    /// `nf_conntrack_events` is 0: the daemon would never hear of a flow.
    #[error(
        "conntrack events are off (net.netfilter.nf_conntrack_events=0), so `netledger run` \
         cannot see flows end: start `netledger run` as root without --no-setup (it sets \
         this), or `sysctl -w \
         net.netfilter.nf_conntrack_events=1`"
    )]
    EventsOff,
    /// A sysctl could not be read or written.
    #[error("{path}: {source}")]
    Sysctl {
        /// The sysctl file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `nft delete table inet netledger` failed.
    #[error("`nft delete table inet netledger` failed: {stderr}")]
    NftDeleteFailed {
        /// What nft printed.
        stderr: String,
    },
    /// The file of values to restore cannot be read or removed.
    #[error(
        "setup state {path}: {source} (it holds the sysctl values from before `netledger \
         setup`; run as root)"
    )]
    State {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Where setup keeps, per network namespace, the sysctl values it changed (see the module
/// documentation for why here).
pub const STATE_DIR: &str = "/run/netledger-setup";

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h; sparc numbers it apart).
#[cfg(not(target_arch = "sparc64"))]
const SO_NETNS_COOKIE: libc::c_int = 71;
#[cfg(target_arch = "sparc64")]
const SO_NETNS_COOKIE: libc::c_int = 0x50;

/// This process's network namespace, as a file name: `cookie-N` (Linux 5.14+, never
/// reused until reboot) or `inode-N` (reused only after the namespace is gone).
fn netns_key(proc_root: &Path) -> Option<String> {
    use rustix::net::{AddressFamily, SocketType};
    use std::os::fd::AsRawFd;
    if let Ok(sock) = rustix::net::socket(AddressFamily::UNIX, SocketType::DGRAM, None) {
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into the live u64 it is given, on
        // a socket this function owns. Neither rustix nor nix wraps SO_NETNS_COOKIE.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if rc == 0 && len as usize == std::mem::size_of::<u64>() {
            return Some(format!("cookie-{cookie}"));
        }
    }
    use std::os::unix::fs::MetadataExt;
    let ino = fs::metadata(proc_root.join("self/ns/net")).ok()?.ino();
    Some(format!("inode-{ino}"))
}

/// The state file of this network namespace.
pub fn state_path(proc_root: &Path) -> Option<PathBuf> {
    netns_key(proc_root).map(|k| Path::new(STATE_DIR).join(k))
}

/// The values to restore: sysctl name (`nf_conntrack_acct`) → value before setup.
fn read_state(path: &Path) -> Result<BTreeMap<String, String>, PrereqError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(source) => {
            return Err(PrereqError::State {
                path: path.to_owned(),
                source,
            })
        }
    };
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter_map(|(k, v)| {
            let name = k.trim().strip_prefix("net.netfilter.")?;
            // Only the sysctls setup changes, so a doctored file cannot write elsewhere.
            KNOWN_SYSCTLS
                .contains(&name)
                .then(|| (name.to_owned(), v.trim().to_owned()))
        })
        .collect())
}

/// The sysctls setup may change (and so the only ones undo writes).
const KNOWN_SYSCTLS: [&str; 3] = [
    "nf_conntrack_acct",
    "nf_conntrack_events",
    "nf_conntrack_timestamp",
];

/// Remember that `name` was `before`, unless an earlier setup already did (its value is
/// the one from before netledger). A failure costs only the undo, so it is a warning.
fn remember(proc_root: &Path, name: &str, before: &str) {
    let Some(path) = state_path(proc_root) else {
        tracing::warn!(
            "cannot name this network namespace (/proc/self/ns/net): `netledger setup --undo` \
             will not know that net.netfilter.{name} was {before}"
        );
        return;
    };
    let result = (|| -> Result<(), PrereqError> {
        let mut saved = read_state(&path)?;
        if saved.contains_key(name) {
            return Ok(());
        }
        saved.insert(name.to_owned(), before.to_owned());
        let mut text = String::from(
            "# Values of the sysctls `netledger setup` changed in this network namespace, as \
             they were before;\n# `netledger setup --undo` restores them and removes this file.\n",
        );
        for (k, v) in &saved {
            text.push_str(&format!("net.netfilter.{k}={v}\n"));
        }
        let io = |source| PrereqError::State {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(STATE_DIR).map_err(io)?;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, text).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    })();
    if let Err(e) = result {
        tracing::warn!(
            "{e}: `netledger setup --undo` will not know that net.netfilter.{name} was {before}"
        );
    }
}

/// Set the sysctl `name` to 1, remembering its value first.
fn switch_on(proc_root: &Path, name: &str, before: &str) -> Result<(), PrereqError> {
    remember(proc_root, name, before);
    let path = sysctl_path(proc_root, name);
    fs::write(&path, "1").map_err(|source| PrereqError::Sysctl { path, source })
}

fn delete_nft_table() -> Result<(), PrereqError> {
    let out = Command::new("nft")
        .args(["delete", "table", "inet", "netledger"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PrereqError::NftMissing { source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PrereqError::NftDeleteFailed {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Undo what setup changed in this network namespace: put back every sysctl it switched on
/// that is still on, and delete the table `inet netledger`. Idempotent; returns what it
/// did (empty when there was nothing to undo).
pub fn undo(proc_root: &Path) -> Result<Vec<String>, PrereqError> {
    if !has_net_admin(proc_root) {
        return Err(PrereqError::NotPrivileged);
    }
    let mut done = Vec::new();
    let state = state_path(proc_root);
    if let Some(path) = &state {
        for (name, before) in read_state(path)? {
            let sysctl = sysctl_path(proc_root, &name);
            match fs::read_to_string(&sysctl).map(|s| s.trim().to_owned()) {
                Ok(now) if now == "1" && before != "1" => {
                    fs::write(&sysctl, &before).map_err(|source| PrereqError::Sysctl {
                        path: sysctl.clone(),
                        source,
                    })?;
                    done.push(format!("restored net.netfilter.{name}={before}"));
                }
                Ok(now) if now == before => {
                    done.push(format!("net.netfilter.{name} is already back at {before}"))
                }
                Ok(now) => done.push(format!(
                    "left net.netfilter.{name}={now}: changed since netledger set it to 1, so \
                     not netledger's to restore (it was {before} before)"
                )),
                // conntrack was unloaded since: nothing left to restore.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(PrereqError::Sysctl {
                        path: sysctl,
                        source,
                    })
                }
            }
        }
        // The last pid a pass looked at (`pass::holders::LastLook`): nothing to keep once undone.
        let _ = fs::remove_file(path.with_extension("last-pid"));
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(PrereqError::State {
                    path: path.clone(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    firewall::forget(proc_root);
    match nft_table_present() {
        Ok(true) => {
            delete_nft_table()?;
            done.push(
                "deleted nftables table inet netledger (conntrack may stop tracking here)".into(),
            );
        }
        Ok(false) => {}
        // Without nft no table could have been installed by netledger.
        Err(e @ PrereqError::NftMissing { .. }) => tracing::warn!("{e}"),
        Err(e) => return Err(e),
    }
    Ok(done)
}

fn acct_path(proc_root: &Path) -> PathBuf {
    proc_root.join("sys/net/netfilter/nf_conntrack_acct")
}

fn sysctl_path(proc_root: &Path, name: &str) -> PathBuf {
    proc_root.join("sys/net/netfilter").join(name)
}

/// What a mode needs from conntrack besides accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// Leave out the owner-mark rule (`owner_mark = false`): setup removes it when present
    /// and passes do not read marks ([`crate::owner_mark`]).
    pub no_owner_mark: bool,
    /// The daemon: events for every flow (`nf_conntrack_events=1`; the default 2 gives
    /// events only to flows created while a listener exists, so flows born while the
    /// daemon is restarting would never report their end) and start/stop times
    /// (`nf_conntrack_timestamp=1`) for the connection log.
    pub events: bool,
}

/// The sysctls every mode wants on, with why (for the change report): conntrack's start
/// times tell a new entry on a reused tuple from the saved one it replaced (same tuple,
/// same conntrack id when the kernel reuses the memory); without them the timer charges
/// the new entry to the old one's owner (issue 24), and the log takes its own times.
const PASS_SYSCTLS: [(&str, &str); 1] = [(
    "nf_conntrack_timestamp",
    "set net.netfilter.nf_conntrack_timestamp=1 (flows carry start and stop times: a new \
     connection on a reused tuple is told from the one it replaced)",
)];

/// The daemon's sysctls besides [`PASS_SYSCTLS`].
const DAEMON_SYSCTLS: [(&str, &str); 1] = [(
    "nf_conntrack_events",
    "set net.netfilter.nf_conntrack_events=1 (every new flow reports its end)",
)];

fn read_sysctl(path: &Path) -> Result<String, PrereqError> {
    fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| PrereqError::Sysctl {
            path: path.to_owned(),
            source,
        })
}

/// Whether conntrack accounting is on in the reader's namespace.
pub fn accounting_enabled(proc_root: &Path) -> Result<bool, PrereqError> {
    let path = acct_path(proc_root);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim() != "0"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(PrereqError::ConntrackInactive { path })
        }
        Err(source) => Err(PrereqError::Sysctl { path, source }),
    }
}

/// Whether this process holds CAP_NET_ADMIN in its effective set.
pub fn has_net_admin(proc_root: &Path) -> bool {
    has_cap(proc_root, CAP_NET_ADMIN)
}

/// Whether this process may read every process's descriptor links: the `fd` directory
/// is mode 0500 of its owner (CAP_DAC_READ_SEARCH passes that) and each link needs ptrace
/// read access (CAP_SYS_PTRACE for other users; fs/proc/fd.c, proc_fd_access_allowed).
pub fn can_read_all_fds(proc_root: &Path) -> bool {
    has_cap(proc_root, CAP_SYS_PTRACE) && has_cap(proc_root, CAP_DAC_READ_SEARCH)
}

fn has_cap(proc_root: &Path, cap: u32) -> bool {
    let Ok(status) = fs::read_to_string(proc_root.join("self/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << cap) != 0)
}

fn nft_table_present() -> Result<bool, PrereqError> {
    let out = Command::new("nft")
        .args(["list", "table", "inet", "netledger"])
        .stdin(Stdio::null())
        .output()
        .map_err(|source| PrereqError::NftMissing { source })?;
    Ok(out.status.success())
}

fn install_nft_table() -> Result<(), PrereqError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PrereqError::NftMissing { source })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's failure below.
        let _ = stdin.write_all(NFT_TABLE.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| PrereqError::NftMissing { source })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(PrereqError::NftFailed {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Make conntrack track and count in this namespace. Idempotent; returns what changed
/// (empty when everything was already in place).
pub fn setup(proc_root: &Path) -> Result<Vec<String>, PrereqError> {
    setup_with(proc_root, Needs::default())
}

/// The table `inet netledger` and (unless `needs.no_owner_mark`) its owner-mark rules,
/// put in place when missing; returns what changed. With `keep_gap`, a table deleted or
/// re-created since netledger last set it up is kept as a gap for the next pass to record
/// ([`firewall::keep_gap`]); the daemon, which records its own, passes false. Needs
/// CAP_NET_ADMIN only (nft), not root: the daemon puts its table back this way when the
/// ruleset is flushed under it, `--no-setup` or not.
pub fn ensure_table(
    proc_root: &Path,
    needs: Needs,
    keep_gap: bool,
) -> Result<Vec<String>, PrereqError> {
    let mut changed = Vec::new();
    // The table first: its ct expression loads nf_conntrack, which creates the sysctl.
    // One `nft -j list table` says both whether it is there and its rules; only when it
    // fails (no table, or an nft without JSON) is the plain listing asked.
    let listed = owner_mark::nft_json(&["list", "table", "inet", "netledger"]);
    // The table against the one netledger last set up here: gone or another since means
    // it was deleted in between, and conntrack may have stopped counting (firewall.rs).
    let check = firewall::compare(
        firewall::kept_handle(proc_root),
        listed.as_deref().and_then(firewall::parse_table_handle),
    );
    let rules = match listed {
        // Emptied or cut down (`nft flush chain`, a deleted chain): the table again, whole.
        Some(t) if !firewall::table_whole(&t) => {
            install_nft_table()?;
            changed.push(
                "re-installed nftables table inet netledger (a chain or its ct rule was gone)"
                    .into(),
            );
            0
        }
        Some(t) => owner_mark::rules_present(&t),
        None if !nft_table_present()? => {
            install_nft_table()?;
            changed.push("installed nftables table inet netledger (conntrack now tracks)".into());
            owner_mark::nft_json(&["list", "table", "inet", "netledger"])
                .map_or(0, |t| owner_mark::rules_present(&t))
        }
        None => 0,
    };
    if needs.no_owner_mark && rules > 0 {
        // The table again, as shipped: without the rules.
        install_nft_table()?;
        changed.push("removed the owner-mark rule from table inet netledger".into());
    } else if !needs.no_owner_mark && rules != owner_mark::RULES {
        if rules > 0 {
            // Some of them (an older netledger's): the table again, then all of them.
            install_nft_table()?;
        }
        owner_mark::install_rule().map_err(|e| PrereqError::NftFailed {
            stderr: format!("adding the owner-mark rule: {e}"),
        })?;
        changed.push(
            "added the owner-mark rule to table inet netledger (new flows carry their \
             owner's uid in the conntrack mark)"
                .into(),
        );
        if let Some(w) = firewall::nft_version().and_then(firewall::round_trip_warning) {
            changed.push(w);
        }
    }
    if let Some(cause) = check.cause().filter(|_| keep_gap) {
        let now = chrono::Utc::now().timestamp();
        firewall::keep_gap(proc_root, cause, now);
        changed.push(format!(
            "nftables table inet netledger was {} since netledger last set it up (a `flush \
             ruleset` or a firewall reload?): accounting may have been off since the last pass \
             (the next pass says how long)",
            if check == firewall::TableCheck::Gone {
                "deleted (put back now)"
            } else {
                "deleted and made again"
            }
        ));
    }
    if !changed.is_empty() || check != firewall::TableCheck::Same {
        firewall::remember_table(proc_root);
    }
    Ok(changed)
}

/// [`setup`], plus what `needs` asks for (the daemon's event and timestamp sysctls).
pub fn setup_with(proc_root: &Path, needs: Needs) -> Result<Vec<String>, PrereqError> {
    if !has_net_admin(proc_root) {
        return Err(PrereqError::NotPrivileged);
    }
    // Set up here before in this boot (a table handle kept): a sysctl found off again was
    // switched off by someone since.
    let set_up_before = firewall::kept_handle(proc_root).is_some();
    let mut changed = ensure_table(proc_root, needs, true)?;
    let acct = read_sysctl(&acct_path(proc_root)).map_err(|e| match e {
        PrereqError::Sysctl { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            PrereqError::ConntrackInactive { path }
        }
        e => e,
    })?;
    if acct == "0" {
        switch_on(proc_root, "nf_conntrack_acct", &acct)?;
        if set_up_before {
            firewall::keep_gap(proc_root, "acct-off", chrono::Utc::now().timestamp());
            changed.push(
                "net.netfilter.nf_conntrack_acct had been switched off since netledger set it \
                 up: set it to 1 again (flows created meanwhile carry no counters; the next \
                 pass says for how long at most)"
                    .into(),
            );
        } else {
            changed.push(
                "set net.netfilter.nf_conntrack_acct=1 (counters exist for flows created from \
                 now on)"
                    .into(),
            );
        }
    }
    let daemon: &[(&str, &str)] = if needs.events { &DAEMON_SYSCTLS } else { &[] };
    for (name, what) in PASS_SYSCTLS.iter().chain(daemon) {
        let before = read_sysctl(&sysctl_path(proc_root, name))?;
        if before != "1" {
            switch_on(proc_root, name, &before)?;
            changed.push((*what).into());
        }
    }
    Ok(changed)
}

/// Check, for a read-only view that charges nothing (`live`), that conntrack counts bytes;
/// changes nothing.
pub fn require_accounting(proc_root: &Path) -> Result<(), PrereqError> {
    if accounting_enabled(proc_root)? {
        Ok(())
    } else {
        Err(PrereqError::AccountingOff)
    }
}

/// Check the prerequisites before a pass of a mode with `needs`; with `fix` and
/// CAP_NET_ADMIN, set up what is missing first. Returns what changed. For the daemon, events switched off entirely
/// is an error; events only-while-listening (2) is a warning, and so are timestamps off in
/// every mode, because netledger still works, with the limits they name.
pub fn ensure_with(proc_root: &Path, fix: bool, needs: Needs) -> Result<Vec<String>, PrereqError> {
    let mut changed = Vec::new();
    if fix && has_net_admin(proc_root) {
        match setup_with(proc_root, needs) {
            Ok(c) => changed = c,
            // Without nft the kernel may still track (another rule uses conntrack): the
            // checks of the pass say so if it does not.
            Err(e @ PrereqError::NftMissing { .. }) => tracing::warn!("{e}"),
            Err(e) => return Err(e),
        }
    }
    if !accounting_enabled(proc_root)? {
        return Err(PrereqError::AccountingOff);
    }
    if needs.events {
        match read_sysctl(&sysctl_path(proc_root, "nf_conntrack_events"))?.as_str() {
            "0" => return Err(PrereqError::EventsOff),
            "1" => {}
            _ => tracing::warn!(
                "net.netfilter.nf_conntrack_events is not 1: flows created while no listener \
                 runs will not report their end (`sysctl -w net.netfilter.nf_conntrack_events=1`)"
            ),
        }
    }
    if read_sysctl(&sysctl_path(proc_root, "nf_conntrack_timestamp"))? == "0" {
        tracing::warn!(
            "net.netfilter.nf_conntrack_timestamp=0: a new connection on a reused tuple cannot \
             be told from the saved one it replaced (it would be charged to that one's owner), \
             and the connection log takes start times from when netledger first saw a flow \
             (`netledger setup`, or `sysctl -w net.netfilter.nf_conntrack_timestamp=1`)"
        );
    }
    Ok(changed)
}
