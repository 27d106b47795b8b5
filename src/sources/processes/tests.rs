#[test]
fn new_pids_are_those_given_out_since_across_a_wrap() {
    use super::NewPids;
    let since = NewPids {
        after: Some(1000),
        upto: 1500,
    };
    assert!(!since.contains(999) && !since.contains(1000));
    assert_eq!(since.few(), Some(1001..=1500));
    assert!(!since.is_empty());
    let none_since = NewPids {
        after: Some(1500),
        upto: 1500,
    };
    assert!(none_since.is_empty());
    let many = NewPids {
        after: Some(1000),
        upto: 1000 + 4096,
    };
    assert_eq!(many.few(), None);
    assert!(since.contains(1001) && since.contains(1500));
    // The counter wrapped past pid_max back to 300: after 4000000, or up to 500.
    let wrapped = NewPids {
        after: Some(4_000_000),
        upto: 500,
    };
    assert!(wrapped.contains(4_000_001) && wrapped.contains(301) && wrapped.contains(500));
    assert!(!wrapped.contains(501) && !wrapped.contains(3_999_999));
    assert_eq!(wrapped.few(), None);
    // No earlier look: every process.
    let all = NewPids {
        after: None,
        upto: 7,
    };
    assert!(all.contains(1) && all.contains(4_000_000));
}

#[test]
fn the_last_pid_given_out_is_read() {
    let last = super::last_pid(std::path::Path::new("/proc")).expect("ns_last_pid");
    let child = std::process::Command::new("true").spawn().unwrap();
    let mut child = child;
    let pid = child.id();
    child.wait().unwrap();
    let now = super::last_pid(std::path::Path::new("/proc")).unwrap();
    let since = super::NewPids {
        after: Some(last),
        upto: now,
    };
    assert!(since.contains(pid), "{pid} after {last} up to {now}");
}

use super::*;
use rstest::rstest;
use std::os::fd::AsFd;
use std::os::unix::fs::symlink;

#[rstest]
#[case(b"socket:[12345]", Some(12345))]
#[case(b"socket:[0]", Some(0))]
#[case(b"socket:[18446744073709551615]", Some(u64::MAX))]
#[case(b"socket:[18446744073709551616]", None)]
#[case(b"socket:[]", None)]
#[case(b"socket:[12a]", None)]
#[case(b"socket:[-1]", None)]
#[case(b"socket:[123", None)]
#[case(b"socket:123", None)]
#[case(b"pipe:[12345]", None)]
#[case(b"anon_inode:[eventfd]", None)]
#[case(b"/tmp/socket:[12345]", None)]
#[case(b"", None)]
fn parse_socket_link_cases(#[case] target: &[u8], #[case] expected: Option<u64>) {
    assert_eq!(parse_socket_link(target), expected);
}

#[rstest]
#[case::real_uid_first(b"Name:\tsshd\nUid:\t1001\t1001\t1001\t1001\nGid:\t5\n", Some(1001))]
#[case::setuid_program_real_not_effective(b"Uid:\t1001\t0\t0\t0\n", Some(1001))]
#[case::root(b"Name:\tx\nUid:\t0\t0\t0\t0\n", Some(0))]
#[case::no_uid_line(b"Name:\tx\nGid:\t0\t0\t0\t0\n", None)]
#[case::garbage(b"Uid:\tx\n", None)]
#[case::empty(b"", None)]
fn status_uid_cases(#[case] status: &[u8], #[case] expected: Option<u32>) {
    assert_eq!(parse_status_uid(status), expected);
}

#[rstest]
#[case(libc::ENOENT, Failure::Vanished)]
#[case(libc::ESRCH, Failure::Vanished)]
#[case(libc::EACCES, Failure::Denied)]
#[case(libc::EPERM, Failure::Denied)]
#[case(libc::EMFILE, Failure::Other)]
fn errors_are_classified(#[case] errno: i32, #[case] expected: Failure) {
    assert_eq!(classify(&io::Error::from_raw_os_error(errno)), expected);
}

fn inode_of(fd: &impl AsFd) -> u64 {
    let st = rustix::fs::fstat(fd).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFSOCK);
    st.st_ino
}

#[test]
fn finds_a_socket_of_this_process_in_real_proc() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_inode, udp_inode) = (inode_of(&listener), inode_of(&udp));
    let wanted = HashSet::from([tcp_inode, udp_inode]);

    let scan = scan_socket_owners(Path::new("/proc"), &wanted);

    let me = std::process::id();
    let exe = std::env::current_exe().unwrap();
    let exe = exe.file_name().unwrap().to_str().unwrap();
    for inode in [tcp_inode, udp_inode] {
        let owner = scan.owners.get(&inode).expect("our socket has an owner");
        assert_eq!(owner.pid, me);
        assert_eq!(owner.program, exe);
    }
    assert_eq!(scan.owners.len(), 2, "only wanted inodes are reported");
    assert!(scan.processes >= 1);
}

#[test]
fn empty_wanted_returns_at_once() {
    let scan = scan_socket_owners(Path::new("/proc"), &HashSet::new());
    assert_eq!(scan, ProcessScan::default());
}

#[test]
fn missing_proc_root_is_an_empty_scan() {
    let dir = tempfile::tempdir().unwrap();
    let scan = scan_socket_owners(&dir.path().join("nope"), &HashSet::from([1]));
    assert_eq!(scan, ProcessScan::default());
}

/// A fake proc tree: `pid/fd/N -> socket:[INODE]`, optional `exe` and `comm`.
struct FakeProc(tempfile::TempDir);

impl FakeProc {
    fn new() -> FakeProc {
        FakeProc(tempfile::tempdir().unwrap())
    }
    fn fd(&self, pid: &str, fd: u32, target: &str) -> &Self {
        let dir = self.0.path().join(pid).join("fd");
        std::fs::create_dir_all(&dir).unwrap();
        symlink(target, dir.join(fd.to_string())).unwrap();
        self
    }
    fn exe(&self, pid: &str, target: &str) -> &Self {
        symlink(target, self.0.path().join(pid).join("exe")).unwrap();
        self
    }
    fn uid(&self, pid: &str, uid: u32) -> &Self {
        std::fs::write(
            self.0.path().join(pid).join("status"),
            format!("Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        )
        .unwrap();
        self
    }
    fn comm(&self, pid: &str, comm: &str) -> &Self {
        std::fs::write(self.0.path().join(pid).join("comm"), comm).unwrap();
        self
    }
    fn path(&self) -> &Path {
        self.0.path()
    }
}

#[test]
fn shared_socket_goes_to_the_lowest_pid_whatever_the_order() {
    let p = FakeProc::new();
    p.fd("300", 3, "socket:[500]")
        .exe("300", "/usr/sbin/worker");
    p.fd("20", 7, "socket:[500]").exe("20", "/usr/sbin/master");
    p.fd("1000", 4, "socket:[500]")
        .exe("1000", "/usr/sbin/worker");
    let scan = scan_socket_owners(p.path(), &HashSet::from([500]));
    assert_eq!(
        scan.owners[&500],
        Owner {
            pid: 20,
            program: "master".into()
        }
    );
    // Ascending walk: pid 20 owns every wanted inode, so 300 and 1000 are not walked.
    assert_eq!(scan.processes, 1);
}

#[test]
fn every_holder_with_its_uid_and_the_walk_goes_to_the_end() {
    let p = FakeProc::new();
    // sshd's privsep monitor (root) and the user's session process hold the socket.
    p.fd("20", 3, "socket:[500]")
        .exe("20", "/usr/sbin/sshd")
        .uid("20", 0);
    p.fd("21", 4, "socket:[500]")
        .fd("21", 5, "socket:[500]")
        .exe("21", "/usr/sbin/sshd")
        .uid("21", 1001);
    p.fd("30", 3, "socket:[9]").exe("30", "/bin/a").uid("30", 5);
    // A holder whose status cannot be read (exited) is skipped.
    p.fd("40", 3, "socket:[500]").exe("40", "/bin/gone");
    let scan = scan_socket_holders(p.path(), &HashSet::from([9]), &HashSet::from([500]));
    let h: Vec<(u32, u32, &str)> = scan.holders[&500]
        .iter()
        .map(|h| (h.pid, h.uid, h.program.as_str()))
        .collect();
    assert_eq!(h, [(20, 0, "sshd"), (21, 1001, "sshd")]);
    assert_eq!(scan.owners[&9].pid, 30);
    assert!(!scan.owners.contains_key(&500), "not asked for an owner");
    assert_eq!(scan.processes, 4, "every process walked");
    assert!(
        !scan.holders.contains_key(&9),
        "only `every` inodes get holders"
    );
    // Without `every`, the same scan stops at the owner of the last wanted inode.
    let scan = scan_socket_holders(p.path(), &HashSet::from([9]), &HashSet::new());
    assert_eq!(scan.processes, 3);
}

#[test]
fn the_children_of_a_process_and_their_holders() {
    let p = FakeProc::new();
    p.fd("20", 3, "socket:[500]").uid("20", 0);
    p.fd("25", 3, "socket:[500]").uid("25", 1001);
    p.fd("26", 3, "socket:[9]").uid("26", 1002);
    for (task, children) in [("20", "25 26 "), ("21", "27\n")] {
        let d = p.path().join("20/task").join(task);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("children"), children).unwrap();
    }
    let mut kids = children(p.path(), 20);
    kids.sort_unstable();
    assert_eq!(kids, [25, 26, 27]);
    assert!(children(p.path(), 25).is_empty());
    // 27 does not exist (any more): counted as vanished, not an error.
    let scan = scan_pids_holders(p.path(), &[27, 26, 25, 25], &HashSet::from([500]));
    let h: Vec<(u32, u32)> = scan.holders[&500].iter().map(|h| (h.pid, h.uid)).collect();
    assert_eq!(h, [(25, 1001)]);
    assert_eq!((scan.processes, scan.vanished), (3, 1));
}

#[test]
fn walk_goes_on_until_every_wanted_inode_is_found() {
    let p = FakeProc::new();
    p.fd("20", 3, "socket:[1]").exe("20", "/bin/a");
    p.fd("30", 3, "socket:[9]").exe("30", "/bin/b");
    p.fd("40", 3, "socket:[2]").exe("40", "/bin/c");
    p.fd("50", 3, "socket:[2]").exe("50", "/bin/d");
    let scan = scan_socket_owners(p.path(), &HashSet::from([1, 2]));
    assert_eq!(scan.owners[&1].pid, 20);
    assert_eq!(scan.owners[&2].pid, 40);
    assert_eq!(scan.processes, 3, "stopped after pid 40");
    // An inode nobody holds makes the walk visit every process.
    let scan = scan_socket_owners(p.path(), &HashSet::from([1, 77]));
    assert_eq!(scan.processes, 4);
}

#[test]
fn program_is_exe_basename_without_deleted_else_trimmed_comm() {
    let p = FakeProc::new();
    p.fd("10", 3, "socket:[1]")
        .exe("10", "/usr/bin/python3.12 (deleted)");
    p.fd("11", 3, "socket:[2]").comm("11", "kworker-ish\n");
    p.fd("12", 3, "socket:[3]");
    let scan = scan_socket_owners(p.path(), &HashSet::from([1, 2, 3]));
    assert_eq!(scan.owners[&1].program, "python3.12");
    assert_eq!(scan.owners[&2].program, "kworker-ish");
    assert_eq!(
        scan.owners[&3].program, "",
        "exited before its name was read"
    );
}

#[test]
fn only_wanted_sockets_and_only_numeric_dirs_count() {
    let p = FakeProc::new();
    p.fd("10", 0, "/dev/null")
        .fd("10", 1, "pipe:[77]")
        .fd("10", 2, "socket:[88]")
        .fd("10", 3, "socket:[99]")
        .exe("10", "/bin/app");
    // `self`-like and non-pid directories are not processes.
    p.fd("self", 3, "socket:[99]").fd("10a", 3, "socket:[99]");
    let scan = scan_socket_owners(p.path(), &HashSet::from([99, 12345]));
    assert_eq!(scan.owners.len(), 1);
    assert_eq!(scan.owners[&99].pid, 10);
    assert_eq!(scan.processes, 1);
    assert_eq!((scan.vanished, scan.denied), (0, 0));
}

#[test]
fn threads_are_not_walked() {
    let p = FakeProc::new();
    p.fd("10", 3, "socket:[1]");
    std::fs::create_dir_all(p.path().join("10/task/11/fd")).unwrap();
    symlink("socket:[2]", p.path().join("10/task/11/fd/3")).unwrap();
    let scan = scan_socket_owners(p.path(), &HashSet::from([1, 2]));
    assert!(scan.owners.contains_key(&1));
    assert!(!scan.owners.contains_key(&2));
}

#[test]
fn a_process_without_fd_dir_is_counted_as_vanished() {
    let p = FakeProc::new();
    p.fd("10", 3, "socket:[1]");
    std::fs::create_dir(p.path().join("9")).unwrap(); // exited between readdir and open
    let scan = scan_socket_owners(p.path(), &HashSet::from([1]));
    assert_eq!(scan.processes, 2);
    assert_eq!(scan.vanished, 1);
    assert_eq!(scan.owners[&1].pid, 10);
}
