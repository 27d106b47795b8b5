//! One writer per database: an advisory lock (`flock(2)`) on `<database>.lock`, taken
//! before the database is opened for writing and held for the writer's whole life (a
//! daemon's, a snapshot's pass, a migration).
//!
//! Why a lock file of our own and not SQLite's locks: SQLite locks one transaction at a
//! time, so two daemons interleave their transactions and both charge every flow (each
//! keeps its own view of the events). Holding SQLite's lock for a daemon's life
//! (`locking_mode=EXCLUSIVE`) would shut out the readers too: every report would fail. A
//! `flock` excludes only other writers, the kernel drops it when its holder dies in any
//! way (SIGKILL included), so it can never go stale, and the file names the holder, so a
//! refused writer says which process to look at.

use std::fs::{File, OpenOptions as FsOpenOptions};

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{flock, FlockOperation};
use rustix::io::Errno;

use super::StoreError;

/// What a writer is, which decides what it does when another writer holds the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `netledger run`: refuses to start while another daemon writes the database; waits
    /// (up to the lock timeout) for a snapshot's pass to end.
    Daemon,
    /// `netledger snapshot`: while a daemon writes the database it has nothing to do (the
    /// daemon accounts every flow); waits for another snapshot's pass.
    Snapshot,
    /// Anything else that writes (tests, tools): waits for any holder.
    Other,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Daemon => "run",
            Role::Snapshot => "snapshot",
            Role::Other => "other",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "run" => Some(Role::Daemon),
            "snapshot" => Some(Role::Snapshot),
            "other" => Some(Role::Other),
            _ => None,
        }
    }
}

/// The process holding a database's writer lock, as its lock file names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// What it is.
    pub role: Role,
}

/// A held writer lock; released when dropped (or when the process ends, however).
#[derive(Debug)]
pub struct WriterLock {
    /// The open, locked file: closing it releases the lock.
    _file: File,
}

/// How often a waiting writer tries again.
const POLL: Duration = Duration::from_millis(20);

/// The lock file of the database at `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl WriterLock {
    /// Take the writer lock of the database at `db` as `role`, waiting up to `wait` for a
    /// holder that is expected to let go soon (a snapshot's pass).
    ///
    /// Errors: [`StoreError::DaemonRunning`] when a daemon holds it and `role` is not
    /// [`Role::Daemon`] (a snapshot then has nothing to do), [`StoreError::AlreadyRunning`]
    /// when a daemon holds it and `role` is, [`StoreError::WriterBusy`] when the wait ran
    /// out, and the open errors of the lock file (named after the database, whose
    /// directory it shares).
    pub fn acquire(db: &Path, role: Role, wait: Duration) -> Result<WriterLock, StoreError> {
        let path = lock_path(db);
        let mut file = FsOpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o640)
            // A planted symlink must not make us create or truncate another file.
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|source| open_error(db, &path, source))?;
        let deadline = Instant::now() + wait;
        let mut holder = None;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(Errno::WOULDBLOCK) => {}
                Err(e) => {
                    return Err(StoreError::Lock {
                        path,
                        source: e.into(),
                    });
                }
            }
            // The holder writes its name just after locking: until then the file may
            // still name the previous holder, which is then no longer alive.
            holder = read_holder(&path).filter(|h| alive(h.pid)).or(holder);
            match holder {
                Some(Holder {
                    pid,
                    role: Role::Daemon,
                }) => {
                    return Err(if role == Role::Daemon {
                        StoreError::AlreadyRunning {
                            path: db.to_owned(),
                            pid,
                        }
                    } else {
                        StoreError::DaemonRunning {
                            path: db.to_owned(),
                            pid,
                        }
                    });
                }
                _ if Instant::now() >= deadline => {
                    return Err(StoreError::WriterBusy {
                        path: db.to_owned(),
                        holder: holder.map(|h| format!("{} (pid {})", h.role.as_str(), h.pid)),
                    });
                }
                _ => std::thread::sleep(POLL),
            }
        }
        let me = format!("{} {}\n", std::process::id(), role.as_str());
        // The name is for messages only: the lock is held whether or not it is written.
        let _ = file.set_len(0).and_then(|()| file.write_all(me.as_bytes()));
        Ok(WriterLock { _file: file })
    }
}

/// Who the lock file at `path` says holds it.
pub fn read_holder(path: &Path) -> Option<Holder> {
    let mut text = String::new();
    File::open(path).ok()?.read_to_string(&mut text).ok()?;
    let mut words = text.split_whitespace();
    let pid = words.next()?.parse().ok()?;
    let role = Role::parse(words.next()?)?;
    Some(Holder { pid, role })
}

/// Whether a process with this pid exists (in our pid namespace).
fn alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn open_error(db: &Path, path: &Path, source: std::io::Error) -> StoreError {
    match source.kind() {
        ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnlyFs {
            path: db.to_owned(),
        },
        ErrorKind::PermissionDenied => StoreError::ReadOnly {
            path: db.to_owned(),
        },
        _ if source.raw_os_error() == Some(libc::ELOOP) => StoreError::Symlink {
            path: path.to_owned(),
        },
        _ => StoreError::Lock {
            path: path.to_owned(),
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let held = WriterLock::acquire(&db, Role::Snapshot, Duration::ZERO).unwrap();
        let t0 = Instant::now();
        let e = WriterLock::acquire(&db, Role::Other, Duration::from_millis(100)).unwrap_err();
        assert!(t0.elapsed() >= Duration::from_millis(100));
        let me = std::process::id();
        assert!(
            matches!(&e, StoreError::WriterBusy { holder: Some(h), .. } if *h == format!("snapshot (pid {me})")),
            "{e}"
        );
        drop(held);
        WriterLock::acquire(&db, Role::Other, Duration::ZERO).unwrap();
    }

    #[test]
    fn a_daemon_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let _held = WriterLock::acquire(&db, Role::Daemon, Duration::ZERO).unwrap();
        let me = std::process::id();
        let t0 = Instant::now();
        let e = WriterLock::acquire(&db, Role::Snapshot, Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(e, StoreError::DaemonRunning { pid, .. } if pid == me),
            "{e}"
        );
        let e = WriterLock::acquire(&db, Role::Daemon, Duration::from_secs(5)).unwrap_err();
        assert!(
            matches!(e, StoreError::AlreadyRunning { pid, .. } if pid == me),
            "{e}"
        );
        assert!(t0.elapsed() < Duration::from_secs(1), "waited for a daemon");
    }

    #[test]
    fn a_stale_name_without_a_lock_is_no_holder() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        // A daemon that died (SIGKILL) leaves its name but no lock.
        std::fs::write(lock_path(&db), format!("{} run\n", std::process::id())).unwrap();
        let _ = WriterLock::acquire(&db, Role::Daemon, Duration::ZERO).unwrap();
    }
}
