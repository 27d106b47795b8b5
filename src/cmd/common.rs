//! What the commands share: opening the database for reading, naming a user, writing a
//! metrics textfile.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::config::TextfileAccess;
use crate::report::{self, table, Labels};
use crate::settings::{Format, Output};
use crate::store::by_cgroup::Only;
use crate::store::query::{By, Covered, TopReport, TopRow};
use crate::store::{OpenOptions, Store};

/// Open the database read-only; never creates it.
pub fn open_for_reading(db: &Path) -> Result<Store> {
    Ok(Store::open(
        db,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    )?)
}

/// Fail unless the database has the connection log (`log`, `summary`).
pub fn require_connection_log(store: &Store) -> Result<()> {
    if !store.has_connection_log()? {
        bail!(
            "{} has no connection log yet: it is written by `netledger run` (any netledger \
             command that writes, such as `snapshot`, upgrades the database)",
            store.path().display()
        );
    }
    Ok(())
}

/// A user given by name or uid: names are looked up in the database first (accounts
/// deleted since are still known there), then in the system's user database.
pub fn resolve_user(store: &Store, user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    if let Some(uid) = store.uid_of(user)? {
        return Ok(uid);
    }
    match crate::sources::users::uid_of(user) {
        Some(uid) => Ok(uid),
        None => bail!("unknown user {user:?}: give a user name or a numeric uid"),
    }
}

/// The cgroups of a unit or a job (`top --unit|--job`, `netledger job`): an error naming
/// it when the database has none.
pub fn resolve_cgroups(store: &Store, only: &Only) -> Result<Vec<i64>> {
    let ids = store.cgroups_of(only)?;
    if ids.is_empty() {
        let what = match only {
            Only::Unit(_) => "give a unit as `top --by unit` lists it",
            Only::Job(_) => "check the id, and that the job ran on this host",
        };
        bail!(
            "{only} is not in {}: no socket created in its cgroups has been charged ({what})",
            store.path().display()
        );
    }
    Ok(ids)
}

/// Print `top`'s report (and `job`'s): its rows as JSON or CSV records of the keys `by`
/// with the span `covered`, or as a table of the columns `table_by` after the line saying
/// that span.
pub fn print_top(
    report: &TopReport,
    by: &[By],
    table_by: &[By],
    labels: &Labels,
    covered: &Covered,
    output: &Output,
) -> Result<()> {
    let records: Vec<_> = report
        .rows
        .iter()
        .map(|r| report::with_covered(report::top_record(r, by, labels), covered))
        .collect();
    let mut out = std::io::stdout().lock();
    match output.format {
        Format::Json => report::write_json(&mut out, &records)?,
        Format::Csv => {
            let empty = TopRow {
                uid: None,
                user: None,
                program: None,
                remote: None,
                protocol: None,
                port: None,
                reason: None,
                via: None,
                via_user: None,
                container: None,
                cgroup: None,
                unit: None,
                job: None,
                traffic: Default::default(),
            };
            let sample = report::with_covered(report::top_record(&empty, by, labels), covered);
            let header = report::header_of(sample);
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            report::write_csv(&mut out, &header, &records)?;
        }
        Format::Table => {
            out.write_all(table::covered_line(covered, output.utc).as_bytes())?;
            let text = table::top_table(report, table_by, labels, output.bytes);
            out.write_all(text.as_bytes())?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Names of uids, each looked up once: the name the database recorded (accounts deleted
/// since are still known there), else the system's, else the uid itself.
pub struct UserNames<'a> {
    store: Option<&'a Store>,
    cache: HashMap<u32, String>,
}

impl<'a> UserNames<'a> {
    /// Names from `store` first, when given, then from the system.
    pub fn new(store: Option<&'a Store>) -> UserNames<'a> {
        UserNames {
            store,
            cache: HashMap::new(),
        }
    }

    /// The name of `uid`.
    pub fn name(&mut self, uid: u32) -> String {
        let store = self.store;
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                store
                    .and_then(|s| s.user_name(uid).ok().flatten())
                    .or_else(|| crate::sources::users::name_of(uid))
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }
}

/// Replace `path` with `data` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, synced, then renamed over it (and the directory
/// synced, so the rename survives a crash). The file has `access`'s mode whatever the
/// umask (the units' `UMask=0027` would hide a 0644 file from node_exporter's user) and
/// its group, given before any byte is written: a metrics textfile (`metrics --output`,
/// `snapshot --metrics-textfile`), which holds every user's totals.
pub fn write_textfile(path: &Path, data: &[u8], access: TextfileAccess) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file name", path.display()))?;
    // node_exporter reads only *.prom: the temporary name must not end so.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        if let Some(gid) = access.gid {
            std::os::unix::fs::fchown(&f, None, Some(gid)).map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot give it to group {gid} (metrics_textfile_group): {e}; the \
                         writer must be root or a member of the group"
                    ),
                )
            })?;
        }
        f.set_permissions(fs::Permissions::from_mode(access.mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| {
        format!(
            "cannot write {} (check that the directory {} exists and is writable)",
            path.display(),
            dir.display()
        )
    })
}
