//! What lets a user read their own standing while the database stays 0640: after every
//! stored pass or flush, the writer (timer or daemon alike) writes each user's standing to
//! `DIR/UID.json`, mode 0400, readable by that user alone — given to them (root), or kept
//! by the writer with a POSIX ACL entry `user:UID:r` (the units' unprivileged DynamicUser,
//! which has no CAP_CHOWN) — in a directory that others may enter but not list (0711).
//! `netledger quota` run by an unprivileged user reads only `DIR/<their uid>.json`;
//! another user's file is not theirs to open, and the database is never opened.
//!
//! Per-user files rather than a query socket in the daemon: the timer (no daemon) needs
//! them anyway, and a file needs no listening code that runs as the accounting service.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{Cycle, Direction, Standing, Standings};

/// Where the view files go by default (a runtime directory: recreated by every pass).
pub const DEFAULT_DIR: &str = "/run/netledger/quota";

/// One user's view file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct View {
    /// The cycle.
    pub cycle: Cycle,
    /// When it was judged (epoch seconds).
    pub now: i64,
    /// Which bytes count.
    pub direction: Direction,
    /// Days left in the cycle then.
    pub days_left: f64,
    /// The standing.
    pub standing: Standing,
}

fn file_of(dir: &Path, uid: u32) -> PathBuf {
    dir.join(format!("{uid}.json"))
}

/// Write every user's file that changed since `written` (what each holds now), and remove
/// the files of users no longer in the standings (a new cycle).
pub fn write_all(dir: &Path, s: &Standings, written: &mut HashMap<u32, String>) -> Result<()> {
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("creating the quota view directory {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o711))
            .with_context(|| format!("chmod 0711 {}", dir.display()))?;
    }
    let mut keep = std::collections::HashSet::new();
    for u in &s.users {
        keep.insert(u.uid);
        let view = View {
            cycle: s.cycle.clone(),
            now: s.now,
            direction: s.direction,
            days_left: s.days_left,
            standing: u.clone(),
        };
        let text = serde_json::to_string(&view)?;
        // The file's time and days left change every pass: compare the standing only.
        let key = serde_json::to_string(&(&view.cycle, &view.standing))?;
        if written.get(&u.uid) == Some(&key) && file_of(dir, u.uid).exists() {
            continue;
        }
        write_one(dir, u.uid, &text)?;
        written.insert(u.uid, key);
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(uid) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !keep.contains(&uid) {
                let _ = fs::remove_file(e.path());
                written.remove(&uid);
            }
        }
    }
    Ok(())
}

/// Write `DIR/UID.json` atomically, owned by `uid`, mode 0400.
fn write_one(dir: &Path, uid: u32, text: &str) -> Result<()> {
    let path = file_of(dir, uid);
    let tmp = dir.join(format!(".{uid}.json.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o400)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    give(&f, uid).with_context(|| {
        format!(
            "letting uid {uid} read {}: chown needs CAP_CHOWN, and an ACL a filesystem \
             with POSIX ACLs",
            tmp.display()
        )
    })?;
    drop(f);
    fs::rename(&tmp, &path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

/// Let `uid` alone read `f`: make it theirs (root, or CAP_CHOWN); else, as the service's
/// own unprivileged user (systemd's DynamicUser), keep it ours, mode 0400, and add a POSIX
/// ACL entry `user:UID:r` (an owner may set its files' ACLs without privileges).
fn give(f: &fs::File, uid: u32) -> std::io::Result<()> {
    match std::os::unix::fs::fchown(f, Some(uid), None) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => rustix::fs::fsetxattr(
            f,
            "system.posix_acl_access",
            &read_acl(uid),
            rustix::fs::XattrFlags::empty(),
        )
        .map_err(std::io::Error::from),
        Err(e) => Err(e),
    }
}

/// The `system.posix_acl_access` value (linux/posix_acl_xattr.h) of `u::r, user:UID:r,
/// g::-, m::r, o::-`: a version, then (tag, perm, id) entries sorted by tag.
fn read_acl(uid: u32) -> Vec<u8> {
    const VERSION: u32 = 2;
    const USER_OBJ: u16 = 0x01;
    const USER: u16 = 0x02;
    const GROUP_OBJ: u16 = 0x04;
    const MASK: u16 = 0x10;
    const OTHER: u16 = 0x20;
    const UNDEFINED: u32 = u32::MAX;
    const READ: u16 = 4;
    let mut v = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (USER_OBJ, READ, UNDEFINED),
        (USER, READ, uid),
        (GROUP_OBJ, 0, UNDEFINED),
        (MASK, READ, UNDEFINED),
        (OTHER, 0, UNDEFINED),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// The view file of `uid` (the caller's own), refused unless that uid owns it.
pub fn read_own(dir: &Path, uid: u32) -> Result<View> {
    let path = file_of(dir, uid);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no quota view for uid {uid} in {}: it is written after every pass (netledger \
             snapshot or run) for each user with traffic, an allowance or a grant this \
             cycle; ask the administrator, or give --view-dir where it is written",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let view: View =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    if view.standing.uid != uid {
        bail!(
            "{} holds uid {}'s standing, not yours (uid {uid}): not shown",
            path.display(),
            view.standing.uid
        );
    }
    Ok(view)
}
