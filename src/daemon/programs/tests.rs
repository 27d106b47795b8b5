use super::*;
use std::os::unix::fs::symlink;

/// A fake proc tree with one process holding `socket:[ino]` descriptors.
fn tree(pid: u32, inodes: &[u64], exe: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(pid.to_string());
    std::fs::create_dir_all(p.join("fd")).unwrap();
    for (i, ino) in inodes.iter().enumerate() {
        symlink(format!("socket:[{ino}]"), p.join("fd").join(i.to_string())).unwrap();
    }
    symlink(exe, p.join("exe")).unwrap();
    d
}

#[test]
fn full_walk_teaches_the_process_then_one_directory_suffices() {
    let d = tree(4242, &[100, 101], "/usr/bin/curl");
    let mut n = Namer::new(d.path().to_owned());
    let got = n.name(&[want(100, 1001)]);
    assert_eq!(got.get(&100).map(String::as_str), Some("curl"));
    assert_eq!(n.work.full_walks, 1);
    // A new socket of the same user: found in the remembered process, no full walk
    // (and none would be due yet anyway).
    let p = d.path().join("4242/fd/9");
    symlink("socket:[102]", p).unwrap();
    let got = n.name(&[want(102, 1001)]);
    assert_eq!(got.get(&102).map(String::as_str), Some("curl"));
    assert_eq!((n.work.full_walks, n.work.process_walks), (1, 1));
    // Cached.
    assert_eq!(n.name(&[want(101, 1001)]).len(), 1);
}

/// A fake process of `uid` (its `status`; the tree's directories are root's).
fn add_user_process(root: &Path, pid: u32, uid: u32, inodes: &[u64], exe: &str) {
    add_process(root, pid, inodes, exe);
    let status = format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n");
    std::fs::write(root.join(pid.to_string()).join("status"), status).unwrap();
}

#[test]
fn new_processes_of_the_user_are_read_first_and_only_the_holder_names() {
    let d = tempfile::tempdir().unwrap();
    // Started last: the user's two programs, another user's process, and one gone.
    add_user_process(d.path(), 500, 1001, &[900], "/usr/bin/nl_burst");
    add_user_process(d.path(), 501, 1002, &[901], "/usr/bin/other");
    add_user_process(d.path(), 502, 1001, &[902], "/usr/bin/nl_decoy");
    let mut n = Namer::new(d.path().to_owned());
    n.next_full = Some(Instant::now() + Duration::from_secs(3600));
    let t = Instant::now();
    for pid in [500, 501, 503, 502] {
        n.recent.started(pid, t);
    }
    let got = n.name(&[want(900, 1001), want(902, 1001)]);
    assert_eq!(got.get(&900).map(String::as_str), Some("nl_burst"));
    assert_eq!(got.get(&902).map(String::as_str), Some("nl_decoy"));
    assert_eq!(n.work.full_walks, 0);
    assert_eq!(
        n.work.process_walks, 2,
        "the user's processes only, newest first: 502 had one, 500 the other"
    );
    // The other user's socket, once 501 exited, and a socket no new process holds:
    // not named (no walk due).
    std::fs::remove_dir_all(d.path().join("501")).unwrap();
    assert!(n.name(&[want(901, 1002), want(999, 1001)]).is_empty());
    // A process that holds the user's socket became a candidate.
    assert!(n.candidates[&1001].contains(&500));
}

#[test]
fn reads_of_new_processes_are_bounded_by_their_share_of_the_time() {
    let d = tempfile::tempdir().unwrap();
    add_user_process(d.path(), 500, 1001, &[900], "/usr/bin/nl_burst");
    let mut n = Namer::new(d.path().to_owned());
    n.next_full = Some(Instant::now() + Duration::from_secs(3600));
    n.recent.started(500, Instant::now());
    // The credit spent (owed, even): nothing read until it is earned back.
    n.recent_credit = (-1_000_000_000, Instant::now());
    assert!(n.name(&[want(900, 1001)]).is_empty());
    assert_eq!(n.work.process_walks, 0);
    n.recent_credit = (1, Instant::now());
    assert_eq!(n.name(&[want(900, 1001)]).len(), 1);
}

#[test]
fn no_walk_is_made_for_a_socket_closed_since_and_one_is_for_an_open_one() {
    let d = tree(4242, &[100], "/usr/bin/curl");
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let o = open.clone();
    let mut n = Namer::new(d.path().to_owned()).with_open_check(Box::new(move |_, _| {
        o.load(std::sync::atomic::Ordering::SeqCst)
    }));
    let ends = Ends {
        l4: L4::Tcp,
        local: "198.51.100.1:40000".parse().unwrap(),
        remote: "198.51.100.2:9000".parse().unwrap(),
    };
    let closed = Wanted {
        ends: Some(ends),
        ..want(100, 1001)
    };
    assert!(n.name(&[closed]).is_empty(), "closed: not walked for");
    assert_eq!((n.work.full_walks, n.work.closed), (0, 1));
    assert!(n.walk_due(), "the walk is still due");
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    let got = n.name(&[closed]);
    assert_eq!(got.get(&100).map(String::as_str), Some("curl"));
    assert_eq!(n.work.full_walks, 1);
}

#[test]
fn full_walks_are_rate_limited() {
    let d = tree(7, &[1], "/bin/sh");
    let mut n = Namer::new(d.path().to_owned());
    assert!(n.name(&[want(555, 1)]).is_empty());
    assert!(n.name(&[want(556, 1)]).is_empty());
    assert_eq!(n.work.full_walks, 1, "the second walk was not due");
}

fn want(inode: u64, uid: u32) -> Wanted {
    Wanted {
        inode,
        uid,
        server: None,
        ends: None,
    }
}

/// Add a process holding `socket:[ino]` descriptors to a fake proc tree.
fn add_process(root: &Path, pid: u32, inodes: &[u64], exe: &str) {
    let p = root.join(pid.to_string());
    std::fs::create_dir_all(p.join("fd")).unwrap();
    for (i, ino) in inodes.iter().enumerate() {
        symlink(format!("socket:[{ino}]"), p.join("fd").join(i.to_string())).unwrap();
    }
    symlink(exe, p.join("exe")).unwrap();
    std::fs::write(p.join("status"), "Name:\tx\nUid:\t0\t0\t0\t0\n").unwrap();
}

fn end() -> SocketAddr {
    "198.51.100.1:8080".parse().unwrap()
}

/// A namer whose listener lookup answers `listener` for [`end`] (and counts lookups).
fn namer(root: &Path, listener: u64) -> (Namer, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::atomic::{AtomicU64, Ordering};
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let a = asked.clone();
    let n = Namer::new(root.to_owned()).with_listener_lookup(Box::new(move |e| {
        a.fetch_add(1, Ordering::SeqCst);
        (e == end()).then_some(listener)
    }));
    (n, asked)
}

fn accepted(inode: u64, uid: u32) -> Wanted {
    Wanted {
        inode,
        uid,
        server: Some(Server::Listener(end())),
        ends: None,
    }
}

#[test]
fn a_server_names_every_connection_without_walks_once_its_listener_is_known() {
    let d = tempfile::tempdir().unwrap();
    // A prefork server: a root master and two workers share listener 500; systemd
    // (pid 1) holds it too, as for an activated socket, and is not a candidate.
    add_process(d.path(), 1, &[500], "/usr/lib/systemd/systemd");
    add_process(d.path(), 40, &[500], "/usr/sbin/nginx");
    add_process(d.path(), 41, &[500, 601], "/usr/sbin/nginx");
    add_process(d.path(), 42, &[500, 602], "/usr/sbin/nginx");
    let (mut n, asked) = namer(d.path(), 500);
    // An unrelated name first: a walk of every process, so none is due for 250 ms.
    assert!(n.name(&[want(999, 7)]).is_empty());
    assert_eq!(n.work.full_walks, 1);
    assert!(!n.walk_due());
    // The first connection: the listener's holders are learnt at once all the same.
    let got = n.name(&[accepted(601, 33)]);
    assert_eq!(got.get(&601).map(String::as_str), Some("nginx"));
    assert_eq!(n.work.full_walks, 2, "one walk to learn the listener");
    // Every later one: a directory per holder at most, no walk, one lookup in all.
    let before = n.work;
    let got = n.name(&[accepted(602, 33)]);
    assert_eq!(got.get(&602).map(String::as_str), Some("nginx"));
    assert_eq!(n.work.full_walks, before.full_walks);
    assert!(n.work.process_walks - before.process_walks <= 3);
    // Closed before it was looked for: named after the listener's holders.
    let got = n.name(&[accepted(603, 33)]);
    assert_eq!(got.get(&603).map(String::as_str), Some("nginx"));
    assert_eq!(n.work.full_walks, before.full_walks);
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "looked up again only to confirm the listener of a closed one"
    );
}

/// sshd, or an inetd-style server: the listener's process forks a child per
/// connection, which holds the accepted socket (and whose children are the user's
/// session: the claims look there, through the holder remembered here).
#[test]
fn a_connection_handed_to_a_child_of_the_server_is_found_there() {
    let d = tempfile::tempdir().unwrap();
    add_process(d.path(), 40, &[500], "/usr/sbin/sshd");
    let (mut n, _) = namer(d.path(), 500);
    // The listener's process is learnt at a first connection (gone already).
    assert_eq!(n.name(&[accepted(600, 0)]).len(), 1);
    let walks = n.work.full_walks;
    // A new connection, accepted and handed to a child: found there, no walk.
    add_process(d.path(), 41, &[601], "/usr/sbin/sshd");
    let task = d.path().join("40/task/40");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::write(task.join("children"), "41 ").unwrap();
    n.next_full = Some(Instant::now() + Duration::from_secs(3600));
    n.next_server_walk = n.next_full;
    let got = n.name(&[accepted(601, 0)]);
    assert_eq!(got.get(&601).map(String::as_str), Some("sshd"));
    assert_eq!(n.holder_pid(601), Some(41), "the child holding it");
    assert_eq!(n.work.full_walks, walks);
}

#[test]
fn a_listener_or_unconnected_socket_is_named_after_its_holders() {
    let d = tempfile::tempdir().unwrap();
    add_process(d.path(), 1, &[500], "/usr/lib/systemd/systemd");
    add_process(d.path(), 70, &[500], "/usr/sbin/dnsmasq");
    let (mut n, _) = namer(d.path(), 500);
    let server = Wanted {
        inode: 500,
        uid: 0,
        server: Some(Server::Itself),
        ends: None,
    };
    let got = n.name(&[server]);
    assert_eq!(
        got.get(&500).map(String::as_str),
        Some("dnsmasq"),
        "not systemd"
    );
    assert_eq!(
        n.holder_pid(500),
        Some(70),
        "the process holding it, for claims"
    );
    let walks = n.work.full_walks;
    assert_eq!(n.name(&[server]).len(), 1);
    assert_eq!(n.work.full_walks, walks);
}

#[test]
fn a_server_whose_processes_disagree_leaves_a_closed_connection_unnamed() {
    let d = tempfile::tempdir().unwrap();
    add_process(d.path(), 40, &[500], "/usr/sbin/sshd");
    add_process(d.path(), 41, &[500], "/usr/bin/python3");
    let (mut n, _) = namer(d.path(), 500);
    assert!(n.name(&[accepted(601, 33)]).is_empty());
}

#[test]
fn a_server_restarted_under_another_program_is_learnt_again() {
    let d = tempfile::tempdir().unwrap();
    add_process(d.path(), 40, &[500], "/usr/sbin/nginx");
    let (mut n, _) = namer(d.path(), 500);
    assert_eq!(n.name(&[accepted(601, 33)]).len(), 1);
    // nginx exits; a new server holds a new listener on the same end.
    std::fs::remove_dir_all(d.path().join("40")).unwrap();
    add_process(d.path(), 90, &[510, 602], "/usr/sbin/apache2");
    n.find_listener = Box::new(|e| (e == end()).then_some(510));
    // The holder is gone: not named after nginx; learnt again at the next connection.
    let got = n.name(&[accepted(603, 33)]);
    assert_ne!(got.get(&603).map(String::as_str), Some("nginx"));
    n.next_server_walk = None;
    let got = n.name(&[accepted(602, 33)]);
    assert_eq!(got.get(&602).map(String::as_str), Some("apache2"));
}

#[test]
fn walks_to_learn_servers_are_bounded_by_their_share_of_the_time() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let d = tempfile::tempdir().unwrap();
    add_process(d.path(), 40, &[501, 601], "/usr/sbin/nginx");
    add_process(d.path(), 50, &[502, 602], "/usr/bin/python3");
    let listener = std::sync::Arc::new(AtomicU64::new(501));
    let l = listener.clone();
    let mut n = Namer::new(d.path().to_owned())
        .with_listener_lookup(Box::new(move |_| Some(l.load(Ordering::SeqCst))));
    // The first listener is walked for at once.
    assert_eq!(n.name(&[accepted(601, 33)]).len(), 1);
    assert_eq!(n.work.full_walks, 1);
    assert!(n.next_server_walk.is_some());
    // Listener after listener: the next waits for the walks' share of the time (here
    // held far off), and so does the walk of every process.
    n.next_server_walk = Some(Instant::now() + Duration::from_secs(3600));
    n.next_full = Some(Instant::now() + Duration::from_secs(3600));
    listener.store(502, Ordering::SeqCst);
    n.listeners.clear();
    assert!(n.name(&[accepted(602, 33)]).is_empty());
    assert_eq!(
        n.work.full_walks, 1,
        "no walk before its share of the time allows"
    );
}
