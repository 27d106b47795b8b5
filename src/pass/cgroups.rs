//! The sockets' cgroup ids named for the join: sock_diag gives every socket its
//! creator's cgroup v2 id (`INET_DIAG_CGROUP_ID`, in [`crate::model::Socket::cgroup`]),
//! [`Cgroups`] turns an id into its path (walking the cgroup2 tree on a miss, at most once
//! a second; a removed cgroup keeps its last path), and the names learnt are kept for the
//! next pass (or event) as the [`Cgroup`] a flow carries.

use crate::attribute::Cgroup;
use crate::model::FastMap;
use crate::sources::cgroups::Cgroups;

/// Cgroup ids named so far, with the resolver that names new ones (opened at the first
/// id: a host without a cgroup2 mount names none).
#[derive(Debug, Default)]
pub struct CgroupNames {
    resolver: Option<Option<Cgroups>>,
    names: FastMap<u64, Cgroup>,
}

impl CgroupNames {
    /// Names resolved in the cgroup2 tree at `root` (tests; the host's is found from
    /// `/proc/self/mountinfo`).
    pub fn at(root: std::path::PathBuf) -> CgroupNames {
        CgroupNames {
            resolver: Some(Some(Cgroups::at(root))),
            names: FastMap::default(),
        }
    }

    /// The host's, its tree walked now (the daemon's listener: its first NEW event then
    /// pays for no walk).
    pub fn walked() -> CgroupNames {
        let mut resolver = Cgroups::open();
        if let Some(r) = resolver.as_mut() {
            r.walk();
        }
        CgroupNames {
            resolver: Some(resolver),
            names: FastMap::default(),
        }
    }

    /// Name the ids not named yet (0, no cgroup known, is never one).
    pub fn learn(&mut self, ids: impl IntoIterator<Item = u64>) {
        for id in ids {
            if id == 0 || self.names.contains_key(&id) {
                continue;
            }
            let resolver = self.resolver.get_or_insert_with(Cgroups::open);
            let Some(known) = resolver.as_mut().and_then(|r| r.get(id)) else {
                continue;
            };
            let cgroup = Cgroup {
                path: known.path.as_str().into(),
                job: known.job,
            };
            self.names.insert(id, cgroup);
        }
    }

    /// The ids named, for [`crate::attribute::SocketIndex::with_cgroups`].
    pub fn names(&self) -> &FastMap<u64, Cgroup> {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn ids_are_named_once_and_kept_after_their_cgroup_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let svc = tmp.path().join("system.slice/backup.service");
        std::fs::create_dir_all(&svc).unwrap();
        let id = std::fs::metadata(&svc).unwrap().ino();
        let mut names = CgroupNames::at(tmp.path().to_path_buf());
        names.learn([0, id, u64::MAX]);
        assert_eq!(names.names().len(), 1);
        assert_eq!(
            names.names()[&id].path.as_ref(),
            "/system.slice/backup.service"
        );
        std::fs::remove_dir(&svc).unwrap();
        names.learn([id]);
        assert_eq!(
            names.names()[&id].path.as_ref(),
            "/system.slice/backup.service"
        );
    }
}
