//! cgroup v2 ids to paths: what [`crate::cgroup`] reads a unit and a job from.
//!
//! sock_diag gives each socket the id of its creator's cgroup (`INET_DIAG_CGROUP_ID`): on
//! cgroup v2 that is the inode number of the cgroup's directory in the cgroup2 file system.
//! [`Cgroups`] walks that file system once, remembers every directory's inode, path and
//! owner, and walks again only when asked for an id it does not know (at most once a
//! [`RESCAN_SPACING`]). A cgroup removed since keeps its last known path: the flows of a
//! job that has ended are still the job's.
//!
//! The cgroup2 mount is found in `/proc/self/mountinfo` ([`cgroup2_mount`]): `/sys/fs/cgroup`
//! on a unified host, `/sys/fs/cgroup/unified` on a hybrid one.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The least time between two walks of the cgroup tree for ids not known yet.
pub const RESCAN_SPACING: Duration = Duration::from_secs(1);

/// The deepest a walk goes: systemd's deepest paths are about 8 levels, Slurm's 7.
const MAX_DEPTH: usize = 32;

/// One cgroup as the last walk found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The path relative to the cgroup2 root, with a leading `/` (`/system.slice/x.service`).
    pub path: String,
    /// The Slurm job id, when the path has one ([`crate::cgroup::job`]) **and** the
    /// `…slurmstepd.scope` directory above it belongs to root: a user can make directories
    /// named like a job's inside the subtree systemd delegates to them
    /// (`user@UID.service/…`), never root-owned ones.
    pub job: Option<u64>,
}

/// The cgroup2 mount point in a `/proc/self/mountinfo` text (pure): the fifth field of the
/// first line whose file system type (after the ` - ` separator) is `cgroup2`, with the
/// kernel's octal escapes (`\040` for a space) undone.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next()? != "cgroup2" {
            return None;
        }
        left.split(' ').nth(4).map(|p| PathBuf::from(unescape(p)))
    })
}

fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Ids to paths, learnt by walking the cgroup2 tree.
#[derive(Debug)]
pub struct Cgroups {
    root: PathBuf,
    known: HashMap<u64, Known>,
    last_walk: Option<Instant>,
}

impl Cgroups {
    /// The host's cgroup2 tree, found from `/proc/self/mountinfo`, else through the mounts
    /// of the parent process or of init (`/proc/PID/root/…`): `ip netns exec` runs its
    /// command under a fresh `/sys`, without the cgroup file systems. `None` without one
    /// (a cgroup v1 only host: no socket carries a v2 id there).
    pub fn open() -> Option<Cgroups> {
        let mount = |proc: &Path| -> Option<PathBuf> {
            let mountinfo = fs::read_to_string(proc.join("mountinfo")).ok()?;
            cgroup2_mount(&mountinfo)
        };
        if let Some(root) = mount(Path::new("/proc/self")) {
            return Some(Cgroups::at(root));
        }
        let parent = rustix::process::getppid().map(|p| p.as_raw_nonzero().get());
        parent.into_iter().chain([1]).find_map(|pid| {
            let proc = PathBuf::from(format!("/proc/{pid}"));
            let root = proc
                .join("root")
                .join(mount(&proc)?.strip_prefix("/").ok()?);
            // Readable only with the right to trace that process.
            fs::read_dir(&root).ok()?;
            Some(Cgroups::at(root))
        })
    }

    /// The tree mounted at `root` (tests, other mounts).
    pub fn at(root: PathBuf) -> Cgroups {
        Cgroups {
            root,
            known: HashMap::new(),
            last_walk: None,
        }
    }

    /// What `id` is: looked up, else learnt by a walk (unless one ran less than
    /// [`RESCAN_SPACING`] ago). `None`: no cgroup with that id was ever seen (0, the id of a
    /// socket read from `/proc/net`, is never one).
    pub fn get(&mut self, id: u64) -> Option<&Known> {
        if id == 0 {
            return None;
        }
        if !self.known.contains_key(&id) {
            let due = self.last_walk.is_none_or(|t| t.elapsed() >= RESCAN_SPACING);
            if due {
                self.walk();
            }
        }
        self.known.get(&id)
    }

    /// Walk the whole tree, adding or updating every directory. Entries of removed cgroups
    /// stay. A directory that vanishes mid-walk is skipped.
    pub fn walk(&mut self) {
        self.last_walk = Some(Instant::now());
        let Ok(meta) = fs::metadata(&self.root) else {
            return;
        };
        let mut stack = vec![(self.root.clone(), String::from("/"), None, 0usize)];
        self.learn(meta.ino(), "/", None);
        while let Some((dir, path, job_owner_root, depth)) = stack.pop() {
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                // The directory entry's type first (no stat): a cgroup holds tens of
                // interface files for each child cgroup.
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let name = entry.file_name().to_string_lossy().into_owned();
                let child = if path == "/" {
                    format!("/{name}")
                } else {
                    format!("{path}/{name}")
                };
                // Whether the nearest `…slurmstepd.scope` above (or this one) is root's.
                let stepd_root = if name.ends_with("slurmstepd.scope") {
                    Some(meta.uid() == 0)
                } else {
                    job_owner_root
                };
                self.learn(meta.ino(), &child, stepd_root);
                stack.push((entry.path(), child, stepd_root, depth + 1));
            }
        }
    }

    fn learn(&mut self, ino: u64, path: &str, stepd_root: Option<bool>) {
        let job = crate::cgroup::job(path).filter(|_| stepd_root == Some(true));
        let known = Known {
            path: path.to_owned(),
            job,
        };
        self.known.insert(ino, known);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    /// Captured from this project's test machine (a hybrid v1/v2 host), shortened.
    const HYBRID: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
30 23 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
40 30 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 30 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_cgroup2_mount_is_found_on_hybrid_and_unified_hosts() {
        assert_eq!(
            cgroup2_mount(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let unified = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        assert_eq!(
            cgroup2_mount(unified),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        let v1_only = "40 30 0:37 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd\n";
        assert_eq!(cgroup2_mount(v1_only), None);
        let spaced = "41 30 0:38 / /mnt/cg\\040two rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(cgroup2_mount("garbage\n\n - \n"), None);
    }

    /// A plain directory tree stands in for the cgroup2 file system: ids are inodes.
    #[test]
    fn ids_resolve_to_paths_and_jobs_only_under_a_roots_stepd_scope() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let job = root.join("system.slice/slurmstepd.scope/job_42/step_0/user/task_0");
        fs::create_dir_all(&job).unwrap();
        let svc = root.join("system.slice/backup.service");
        fs::create_dir_all(&svc).unwrap();
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        let mut cg = Cgroups::at(root.to_path_buf());
        let as_root = nix_uid_is_root();
        let k = cg.get(ino(&job)).unwrap().clone();
        assert_eq!(
            k.path,
            "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0"
        );
        // Made by this test's uid: a job only when that is root's.
        assert_eq!(k.job, as_root.then_some(42));
        assert_eq!(
            cg.get(ino(&svc)).unwrap().path,
            "/system.slice/backup.service"
        );
        assert_eq!(cg.get(ino(root)).unwrap().path, "/");
        assert_eq!(cg.get(0), None);
        // Removed: still known by its last path, without a new walk finding it.
        let gone = ino(&svc);
        fs::remove_dir(&svc).unwrap();
        cg.walk();
        assert_eq!(cg.get(gone).unwrap().path, "/system.slice/backup.service");
    }

    /// A directory named like a job's but owned by a user is not a job.
    #[test]
    fn a_users_look_alike_job_directory_is_no_job() {
        if !nix_uid_is_root() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let stepd = tmp
            .path()
            .join("user.slice/user-1000.slice/user@1000.service/x_slurmstepd.scope");
        let job = stepd.join("job_42");
        fs::create_dir_all(&job).unwrap();
        std::os::unix::fs::chown(&stepd, Some(1000), Some(1000)).unwrap();
        let mut cg = Cgroups::at(tmp.path().to_path_buf());
        let k = cg.get(fs::metadata(&job).unwrap().ino()).unwrap();
        assert_eq!(k.job, None, "{k:?}");
        assert!(k.path.ends_with("x_slurmstepd.scope/job_42"));
    }

    #[test]
    fn unknown_ids_walk_at_most_once_a_spacing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cg = Cgroups::at(tmp.path().to_path_buf());
        assert_eq!(cg.get(u64::MAX), None);
        let first = cg.last_walk.unwrap();
        let later = tmp.path().join("late.service");
        fs::create_dir(&later).unwrap();
        // Within the spacing: no walk, so the new directory is not known yet.
        assert_eq!(cg.get(fs::metadata(&later).unwrap().ino()), None);
        assert_eq!(cg.last_walk.unwrap(), first);
        cg.last_walk = Some(first - RESCAN_SPACING);
        assert_eq!(
            cg.get(fs::metadata(&later).unwrap().ino()).unwrap().path,
            "/late.service"
        );
    }

    fn nix_uid_is_root() -> bool {
        rustix::process::geteuid().is_root()
    }
}
