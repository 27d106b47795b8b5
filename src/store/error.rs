//! Storage errors, each naming the database and what to do about it.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Why the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No database yet (reports never create one).
    #[error("no database at {path}: run `netledger snapshot` first (or pass --db)")]
    Missing {
        /// The database path.
        path: PathBuf,
    },
    /// The path is a symbolic link: refused, another user could have planted it.
    #[error("refusing to open {path}: it is a symbolic link")]
    Symlink {
        /// The database path.
        path: PathBuf,
    },
    /// The parent directory could not be created.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not an SQLite database, or a damaged one.
    #[error(
        "database {path} is corrupt or not an SQLite file; it was left untouched \
         (move it aside to start a new one, or restore a backup)"
    )]
    Corrupt {
        /// The database path.
        path: PathBuf,
    },
    /// An SQLite database, but not one of netledger's.
    #[error("{path} is an SQLite database but not a netledger one; it was left untouched")]
    NotOurs {
        /// The database path.
        path: PathBuf,
    },
    /// Written by a newer netledger.
    #[error(
        "database {path} has schema version {version}, newer than this netledger knows ({}): \
         it was written by a newer netledger; upgrade netledger to read or write it, or pass \
         --db",
        super::MIGRATIONS.len()
    )]
    TooNew {
        /// The database path.
        path: PathBuf,
        /// Its `user_version`.
        version: i64,
    },
    /// Another writer held the lock for longer than the busy timeout.
    #[error(
        "database {path} is locked by another writer (another netledger pass?); \
         nothing was written, try again or raise --lock-timeout"
    )]
    Locked {
        /// The database path.
        path: PathBuf,
    },
    /// The path is a directory.
    #[error(
        "{path} is a directory, not a database file: pass --db with a file name, such as \
         {path}/netledger.db"
    )]
    IsDirectory {
        /// The database path.
        path: PathBuf,
    },
    /// The file system holding the database is mounted read-only.
    #[error(
        "database {path} is on a read-only file system (even reading a database in WAL mode \
         creates {path}-shm beside it): remount it read-write, or copy the database to a \
         writable directory and pass --db"
    )]
    ReadOnlyFs {
        /// The database path.
        path: PathBuf,
    },
    /// The disk (or quota) is full.
    #[error("database {path}: disk full; this pass was rolled back and will be recounted")]
    DiskFull {
        /// The database path.
        path: PathBuf,
    },
    /// No permission to open or write the file or its directory.
    #[error(
        "cannot write database {path}: permission denied \
         (run as the database's owner, usually root, or pass --db)"
    )]
    ReadOnly {
        /// The database path.
        path: PathBuf,
    },
    /// No permission to read the database (reports).
    #[error(
        "cannot read database {path}: permission denied (the database is private to its \
         owner, usually root: run the report as root or pass --db)"
    )]
    Unreadable {
        /// The database path.
        path: PathBuf,
    },
    /// A daemon writes this database: a snapshot has nothing to do (the daemon accounts
    /// every flow), and must not charge them a second time.
    #[error(
        "netledger run (pid {pid}) is accounting into {path}: this snapshot has nothing \
         to do (enable only one of netledger-snapshot.timer and netledger.service)"
    )]
    DaemonRunning {
        /// The database path.
        path: PathBuf,
        /// The daemon's pid.
        pid: u32,
    },
    /// Another daemon writes this database: two would charge every flow twice.
    #[error(
        "another netledger run (pid {pid}) is already accounting into {path}: only one \
         daemon may write a database (stop it first, or pass another --db)"
    )]
    AlreadyRunning {
        /// The database path.
        path: PathBuf,
        /// The running daemon's pid.
        pid: u32,
    },
    /// Another writer kept the database's writer lock for longer than the lock timeout.
    #[error(
        "database {path} is being written by another netledger{}; nothing was written, \
         try again or raise --lock-timeout",
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default()
    )]
    WriterBusy {
        /// The database path.
        path: PathBuf,
        /// Who holds it, as its lock file says (`snapshot (pid 123)`), when known.
        holder: Option<String>,
    },
    /// The writer lock file could not be opened or locked.
    #[error("cannot lock {path}: {source}")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A stored row does not decode.
    #[error("database {path}: bad row in {table}: {detail}")]
    BadRow {
        /// The database path.
        path: PathBuf,
        /// The table.
        table: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A migration failed.
    #[error("database {path}: schema migration failed: {source}")]
    Migrate {
        /// The database path.
        path: PathBuf,
        /// The cause.
        source: rusqlite_migration::Error,
    },
    /// Any other SQLite error.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database path.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
}

impl StoreError {
    /// Classify an SQLite error so the message can name the fix.
    pub fn from_sqlite(path: &std::path::Path, e: rusqlite::Error) -> StoreError {
        let path = path.to_owned();
        // SQLite reports a directory as an I/O error (reading) or as unopenable (writing).
        if path.is_dir() {
            return StoreError::IsDirectory { path };
        }
        match e.sqlite_error_code() {
            Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
                StoreError::Corrupt { path }
            }
            Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
                StoreError::Locked { path }
            }
            Some(ErrorCode::DiskFull) => StoreError::DiskFull { path },
            // On a full file system SQLite often reports an I/O error instead (for example
            // SQLITE_IOERR_SHMSIZE when the WAL index cannot grow): look at the disk.
            Some(ErrorCode::SystemIoFailure) if no_space_left(&path) => {
                StoreError::DiskFull { path }
            }
            // Not a permission: no user may write there.
            Some(
                ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
                | ErrorCode::PermissionDenied
                | ErrorCode::SystemIoFailure,
            ) if read_only_fs(&path) => StoreError::ReadOnlyFs { path },
            Some(ErrorCode::ReadOnly)
            | Some(ErrorCode::CannotOpen)
            | Some(ErrorCode::PermissionDenied) => StoreError::ReadOnly { path },
            _ => StoreError::Sqlite { path, source: e },
        }
    }
}

/// Whether the database exists. A directory on the way that this user may not search is
/// a permission error, not a missing database (reports used to say "run snapshot first").
pub(super) fn exists(path: &std::path::Path, read_only: bool) -> Result<bool, StoreError> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let path = path.to_owned();
            Err(if read_only {
                StoreError::Unreadable { path }
            } else {
                StoreError::ReadOnly { path }
            })
        }
        Err(_) => Ok(false),
    }
}

/// `statvfs` of the directory holding `db`.
fn statvfs_dir(db: &std::path::Path) -> Option<rustix::fs::StatVfs> {
    let dir = db
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    rustix::fs::statvfs(dir).ok()
}

/// Whether the file system holding `db` is mounted read-only.
fn read_only_fs(db: &std::path::Path) -> bool {
    statvfs_dir(db).is_some_and(|st| st.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
}

/// Whether the file system holding `db` has no block left for an unprivileged writer
/// (or for root, when running as root).
fn no_space_left(db: &std::path::Path) -> bool {
    let Some(st) = statvfs_dir(db) else {
        return false;
    };
    let free = if rustix::process::geteuid().is_root() {
        st.f_bfree
    } else {
        st.f_bavail
    };
    free == 0
}
