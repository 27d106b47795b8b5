//! The `on_quota` hook: a program run (without a shell) when a user crosses the warning
//! or the critical level in a cycle, with the facts in its environment.
//!
//! A program named in a configuration file and run by the accounting service is a way in
//! for whoever can write either: like cron and sudo, the hook runs only when the
//! configuration file and the program are owned by root and not writable by group or
//! others ([`Hook::trusted`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Level, Standing, Standings};

/// How long a snapshot waits for its hooks before it exits (they are killed then).
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// The configured hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// The program.
    pub program: PathBuf,
    /// The configuration file that names it.
    pub config: PathBuf,
}

/// Why a file is not trusted: not root's, or writable by group or others.
fn check_owner(what: &str, path: &Path) -> Result<(), String> {
    let m = std::fs::metadata(path).map_err(|e| {
        format!(
            "refusing the on_quota hook: cannot read {what} {}: {e}",
            path.display()
        )
    })?;
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 || mode & 0o022 != 0 {
        return Err(format!(
            "refusing the on_quota hook: {what} {} is owned by uid {} with mode {mode:04o}; \
             it must be owned by root and not writable by group or others \
             (chown root {1}; chmod go-w {1})",
            path.display(),
            m.uid(),
        ));
    }
    Ok(())
}

impl Hook {
    /// Whether the configuration file and the program may be trusted; the error is the one
    /// line to log, naming the file and its mode.
    pub fn trusted(&self) -> Result<(), String> {
        check_owner("configuration file", &self.config)?;
        check_owner("program", &self.program)?;
        Ok(())
    }

    /// Start the hook for `u` reaching `level`.
    pub fn start(&self, u: &Standing, level: Level, s: &Standings) -> std::io::Result<Running> {
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        let child = Command::new(&self.program)
            .env("NETLEDGER_QUOTA_LEVEL", level.name())
            .env("NETLEDGER_QUOTA_USER", &u.user)
            .env("NETLEDGER_QUOTA_UID", u.uid.to_string())
            .env("NETLEDGER_QUOTA_USED", u.used.to_string())
            .env("NETLEDGER_QUOTA_ALLOWANCE", opt(u.allowance))
            .env("NETLEDGER_QUOTA_GRANTED", u.granted.to_string())
            .env(
                "NETLEDGER_QUOTA_PERCENT",
                u.percent.map(|p| format!("{p:.1}")).unwrap_or_default(),
            )
            .env("NETLEDGER_QUOTA_DIRECTION", s.direction.name())
            .env("NETLEDGER_QUOTA_CYCLE", &s.cycle.label)
            .env("NETLEDGER_QUOTA_CYCLE_START", s.cycle.start.to_string())
            .env("NETLEDGER_QUOTA_CYCLE_END", s.cycle.end.to_string())
            .stdin(Stdio::null())
            .spawn()?;
        tracing::info!(
            "quota: {} reached {} ({} of {} bytes): started {}",
            u.user,
            level.name(),
            u.used,
            opt(u.allowance),
            self.program.display()
        );
        let what = format!(
            "the on_quota hook {} for {} ({})",
            self.program.display(),
            u.user,
            level.name()
        );
        Ok(Running {
            thread: std::thread::spawn(move || reap(child, &what)),
        })
    }
}

/// A hook started; its thread logs how it ended.
#[derive(Debug)]
pub struct Running {
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Wait until the hook has ended (at most [`HOOK_TIMEOUT`]).
    pub fn wait(self) {
        let _ = self.thread.join();
    }
}

fn reap(mut child: Child, what: &str) {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => return,
            Ok(Some(st)) => {
                tracing::warn!("quota: {what} failed: {st}");
                return;
            }
            Ok(None) if started.elapsed() > HOOK_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                tracing::warn!("quota: {what} still ran after {HOOK_TIMEOUT:?}: killed");
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                tracing::warn!("quota: waiting for {what}: {e}");
                return;
            }
        }
    }
}
