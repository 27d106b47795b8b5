//! Real cgroups under the host's cgroup2 tree: a socket's cgroup id (sock_diag) names the
//! cgroup its creator ran in, and the path gives the unit and the Slurm job — the grain of
//! issue 28. Each process only listens on loopback; the test's cgroups are made under a
//! directory of its own and removed at the end.

use crate::common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{require_root, unique, TestUser};
use netledger::cgroup;
use netledger::model::L4;
use netledger::sources::cgroups::{cgroup2_mount, Cgroups};
use netledger::sources::sockdiag::SockDiag;

/// The test's own subtree of the cgroup2 tree, removed (deepest first) when dropped.
struct Tree {
    top: PathBuf,
    made: Vec<PathBuf>,
}

impl Tree {
    fn new(mount: &Path) -> Tree {
        let top = mount.join(unique("nltest"));
        std::fs::create_dir(&top).unwrap();
        Tree {
            made: vec![top.clone()],
            top,
        }
    }

    fn dir(&mut self, rel: &str) -> PathBuf {
        let mut at = self.top.clone();
        for part in rel.split('/') {
            at.push(part);
            if !at.exists() {
                std::fs::create_dir(&at).unwrap();
                self.made.push(at.clone());
            }
        }
        at
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        for d in self.made.iter().rev() {
            // The processes were killed and reaped; a cgroup empties at once.
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A process of `user` started inside cgroup `dir`, listening on 127.0.0.1: its port.
struct Listener {
    child: Child,
    port: u16,
}

impl Listener {
    fn start(dir: &Path, user: &TestUser) -> Listener {
        let script = format!(
            "echo $$ > {procs} && exec setpriv --reuid={uid} --regid={gid} --clear-groups -- \
             /usr/bin/python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\",0)); \
             s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)'",
            procs = dir.join("cgroup.procs").display(),
            uid = user.uid,
            gid = user.gid,
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("port: {line:?}"));
        Listener { child, port }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_sockets_cgroup_names_its_unit_and_job() {
    if !require_root("a_sockets_cgroup_names_its_unit_and_job") {
        return;
    }
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mount = cgroup2_mount(&info).expect("a cgroup2 mount (issue 28 needs cgroup v2)");
    let mut tree = Tree::new(&mount);
    let top = format!("/{}", tree.top.file_name().unwrap().to_string_lossy());
    let user = TestUser::new("nlcg");
    let other = TestUser::new("nlcg");
    // (cgroup under the test's own top, owner of the stepd scope, unit, job)
    let cases: &[(&str, Option<u32>, &str, Option<u64>)] = &[
        (
            "system.slice/slurmstepd.scope/job_101/step_0/user/task_0",
            None,
            "slurmstepd.scope",
            Some(101),
        ),
        (
            "system.slice/slurmstepd.scope/job_102/step_0/user/task_0",
            None,
            "slurmstepd.scope",
            Some(102),
        ),
        ("system.slice/backup.service", None, "backup.service", None),
        (
            "user.slice/user-1.slice/session-7.scope",
            None,
            "session-7.scope",
            None,
        ),
        // Made to look like job 101 inside a subtree the user owns: no job.
        (
            "user.slice/user-1.slice/user@1.service/fake_slurmstepd.scope/job_101",
            Some(other.uid),
            "fake_slurmstepd.scope",
            None,
        ),
    ];
    let mut listeners = vec![];
    for (rel, owner, _, _) in cases {
        let dir = tree.dir(rel);
        if let Some(uid) = owner {
            let scope = dir.parent().unwrap();
            std::os::unix::fs::chown(scope, Some(*uid), Some(*uid)).unwrap();
        }
        listeners.push((dir.clone(), Listener::start(&dir, &user)));
    }
    let sockets = SockDiag::open().unwrap().dump_all().unwrap();
    let mut cgroups = Cgroups::at(mount.clone());
    for ((rel, _, unit, job), (dir, l)) in cases.iter().zip(&listeners) {
        let s = sockets
            .iter()
            .find(|s| s.proto == L4::Tcp && s.local.port() == l.port && s.state == 10)
            .unwrap_or_else(|| panic!("the listener of {rel} on port {}", l.port));
        assert_eq!(s.uid, user.uid, "{rel}");
        assert_eq!(s.cgroup, std::fs::metadata(dir).unwrap().ino(), "{rel}");
        let known = cgroups
            .get(s.cgroup)
            .unwrap_or_else(|| panic!("{rel}"))
            .clone();
        assert_eq!(known.path, format!("{top}/{rel}"));
        assert_eq!(cgroup::unit(&known.path), Some(*unit), "{rel}");
        assert_eq!(known.job, *job, "{rel}");
    }
    // A job's processes end and its cgroups go: its sockets' ids keep their last path.
    let (dir, l) = listeners.remove(0);
    let id = std::fs::metadata(&dir).unwrap().ino();
    drop(l);
    let job_dir = dir.ancestors().nth(3).unwrap();
    assert!(job_dir.ends_with("job_101"), "{job_dir:?}");
    for d in tree.made.iter().rev().filter(|d| d.starts_with(job_dir)) {
        std::fs::remove_dir(d).unwrap();
    }
    assert!(!dir.exists());
    cgroups.walk();
    assert_eq!(cgroups.get(id).unwrap().job, Some(101));
    drop(listeners);
}
