//! Real cgroups under the host's cgroup2 tree: a socket's cgroup id (sock_diag) names the
//! cgroup its creator ran in, and the path gives the unit and the Slurm job — the grain of
//! issue 28. The listeners of the first test only listen on loopback; the accounting
//! tests' clients talk to a server in the test's own namespaces. The test's cgroups are
//! made under a directory of its own and removed at the end.

use crate::common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    bin, connection_log, conntrack_entries, require_root, run, traffic_bin, unique,
    wait_entries_gone, wait_for, wait_tcp_closed, CtEntry, Daemon, DestroyCapture, Inet, Proc,
    TestUser,
};
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
        // Made to look like job 101 inside a subtree the user owns: no job, and a unit
        // that says it is the user's manager's.
        (
            "user.slice/user-1.slice/user@1.service/fake_slurmstepd.scope/job_101",
            Some(other.uid),
            "user@1.service/fake_slurmstepd.scope",
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

/// One cgroup of the accounting tests: where it is under the test's top, its unit and job,
/// and the first client port of its processes.
struct Group {
    dir: PathBuf,
    unit: &'static str,
    job: Option<u64>,
    ports: u16,
}

/// Two jobs of one Slurm step daemon (root's, as the test makes it), a service and a
/// login session, under the test's top.
fn groups(tree: &mut Tree) -> Vec<Group> {
    let stepd = "system.slice/slurmstepd.scope";
    [
        (
            format!("{stepd}/job_201/step_0"),
            "slurmstepd.scope",
            Some(201),
        ),
        (
            format!("{stepd}/job_202/step_0"),
            "slurmstepd.scope",
            Some(202),
        ),
        ("system.slice/backup.service".into(), "backup.service", None),
        (
            "user.slice/user-1.slice/session-9.scope".into(),
            "session-9.scope",
            None,
        ),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (rel, unit, job))| Group {
        dir: tree.dir(&rel),
        unit,
        job,
        ports: 45100 + 100 * i as u16,
    })
    .collect()
}

/// `nl_traffic client tcp` to the test's server as `user`, from source port `port`, moved
/// into cgroup `dir` before it starts (it exits once its two requests are answered).
fn client_in(dir: &Path, t: &Inet, user: &TestUser, tb: &Path, port: u16, up: u32) -> Command {
    let mut c = Command::new("sh");
    c.args(["-c", "echo $$ > \"$0\" && exec \"$@\""])
        .arg(dir.join("cgroup.procs"))
        .args(["ip", "netns", "exec", &t.host.name, "setpriv"])
        .arg(format!("--reuid={}", user.uid))
        .arg(format!("--regid={}", user.gid))
        .args(["--clear-groups", "--"])
        .arg(tb)
        .args(["client", "tcp", "198.51.100.2:9000"])
        .arg(up.to_string())
        .arg((3 * up).to_string())
        .args(["--bind", &port.to_string()]);
    c
}

/// The traffic of each group's clients' entries, as a local client's (tx the original
/// direction's bytes, rx the reply's), keyed by `key` of the group; every entry of the
/// clients' ports must belong to one.
fn truth_by(
    groups: &[Group],
    entries: &[CtEntry],
    clients: u16,
    key: impl Fn(&Group) -> String,
) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut found = 0;
    for e in entries.iter().filter(|e| e.orig.dport == 9000) {
        let Some(g) = groups
            .iter()
            .find(|g| (g.ports..g.ports + clients).contains(&e.orig.sport))
        else {
            continue;
        };
        found += 1;
        let v = out.entry(key(g)).or_default();
        v.0 += e.reply.bytes;
        v.1 += e.orig.bytes;
    }
    assert_eq!(found, groups.len() * usize::from(clients), "{entries:?}");
    out
}

/// `user`'s bytes (rx, tx) in the `usage` view per `column` (`job`, `unit`), NULL as "-".
fn stored_by(db: &Path, column: &str, uid: u32) -> BTreeMap<String, (u64, u64)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare(&format!(
            "SELECT ifnull(CAST({column} AS TEXT), '-'), sum(rx_bytes), sum(tx_bytes)
             FROM usage WHERE uid = ?1 GROUP BY {column}"
        ))
        .unwrap();
    st.query_map([uid], |r| {
        Ok((
            r.get(0)?,
            (r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64),
        ))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn job_key(g: &Group) -> String {
    g.job.map_or("-".into(), |j| j.to_string())
}

fn unit_key(g: &Group) -> String {
    g.unit.to_string()
}

/// Per job and per unit, what `usage` holds of `user` equals conntrack's counters.
fn assert_charged_exactly(
    db: &Path,
    groups: &[Group],
    entries: &[CtEntry],
    clients: u16,
    uid: u32,
) {
    for (column, key) in [("job", job_key as fn(&Group) -> String), ("unit", unit_key)] {
        let truth = truth_by(groups, entries, clients, key);
        let stored = stored_by(db, column, uid);
        eprintln!("by {column}: stored {stored:?}, conntrack {truth:?}");
        assert_eq!(
            stored, truth,
            "bytes by {column} against conntrack's counters"
        );
    }
}

/// The cgroup2 tree's mount, required.
fn mount() -> PathBuf {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    cgroup2_mount(&info).expect("a cgroup2 mount (issue 28 needs cgroup v2)")
}

#[test]
fn snapshots_charge_each_job_and_unit_exactly_conntracks_bytes() {
    if !require_root("snapshots_charge_each_job_and_unit_exactly_conntracks_bytes") {
        return;
    }
    let mut tree = Tree::new(&mount());
    let groups = groups(&mut tree);
    // TIME_WAIT of 120 s: the entries (and their final counters) outlast the test.
    let t = Inet::new("nlcgs", 120);
    let user = TestUser::new("nlcgs");
    let tb = traffic_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let snapshot = || run(t.host.cmd(bin()).arg("snapshot").arg("--db").arg(&db));
    const CLIENTS: u16 = 2;
    let mut clients = vec![];
    for (i, g) in groups.iter().enumerate() {
        for k in 0..CLIENTS {
            let up = 1000 * (i as u32 + 1) + 100 * u32::from(k);
            let port = g.ports + k;
            let mut p = Proc::spawn(
                &format!("client {port}"),
                client_in(&g.dir, &t, &user, &tb.path, port, up),
            );
            p.expect("ready");
            clients.push(p);
        }
    }
    // The sockets live: this pass finds each flow's socket and its cgroup.
    snapshot();
    for c in &mut clients {
        c.go();
        c.expect("done");
    }
    for c in clients {
        c.wait_ok();
    }
    wait_tcp_closed(&t.host);
    // The sockets are gone: the rest is charged to the cgroups kept in the flow state.
    snapshot();
    let entries = conntrack_entries(&t.host);
    assert_charged_exactly(&db, &groups, &entries, CLIENTS, user.uid);
}

#[test]
fn the_daemon_charges_each_job_and_unit_exactly_even_processes_that_exit_at_once() {
    if !require_root(
        "the_daemon_charges_each_job_and_unit_exactly_even_processes_that_exit_at_once",
    ) {
        return;
    }
    let mut tree = Tree::new(&mount());
    let groups = groups(&mut tree);
    let t = Inet::new("nlcgd", 2);
    let user = TestUser::new("nlcgd");
    let tb = traffic_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let capture = DestroyCapture::start(&t.host);
    // No pass after the first: every connection is charged from its events alone.
    let daemon = Daemon::start(&t.host, &db, &["--interval", "1h"], &[]);
    const CLIENTS: u16 = 5;
    for (i, g) in groups.iter().enumerate() {
        for k in 0..CLIENTS {
            let up = 500 * (i as u32 + 1) + 10 * u32::from(k);
            let port = g.ports + k;
            // One connection of ~30 ms, and the process exits as it closes: gone long
            // before a pass, too soon for its program to be named.
            let mut p = Proc::spawn(
                &format!("client {port}"),
                client_in(&g.dir, &t, &user, &tb.path, port, up),
            );
            p.expect("ready");
            std::thread::sleep(Duration::from_millis(30));
            p.go();
            p.expect("done");
            p.wait_ok();
        }
    }
    let n = groups.len() * usize::from(CLIENTS);
    let ours = |e: &CtEntry| e.orig.dport == 9000 && (45100..45500).contains(&e.orig.sport);
    wait_entries_gone(&t.host, "the clients' connections", ours);
    let destroyed = capture.wait(n, ours);
    wait_for("every connection logged", Duration::from_secs(30), || {
        let rows = connection_log(&t.host, &db, &[]);
        let mine: Vec<_> = rows
            .into_iter()
            .filter(|c| c["uid"].as_u64() == Some(u64::from(user.uid)))
            .collect();
        (mine.len() >= n).then_some(mine)
    });
    let said = daemon.stop();
    eprintln!("{}", said.lines().last().unwrap_or(""));
    assert_charged_exactly(&db, &groups, &destroyed, CLIENTS, user.uid);
    // Each logged connection names its job and unit.
    for row in connection_log(&t.host, &db, &[])
        .iter()
        .filter(|c| c["uid"].as_u64() == Some(u64::from(user.uid)))
    {
        let port = row["orig"]["sport"].as_u64().unwrap() as u16;
        let g = groups
            .iter()
            .find(|g| (g.ports..g.ports + CLIENTS).contains(&port))
            .unwrap();
        assert_eq!(row["unit"], g.unit, "{row}");
        assert_eq!(row["job"].as_u64(), g.job, "{row}");
        let path = row["cgroup"].as_str().unwrap();
        assert!(
            path.ends_with(&format!(
                "/{}",
                g.dir.strip_prefix(&tree.top).unwrap().display()
            )),
            "{row}"
        );
    }
}
