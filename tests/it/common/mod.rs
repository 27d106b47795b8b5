//! Shared pieces of the integration tests: network namespaces, test users, the traffic
//! helper, and `conntrack -L -o extended` parsing. Every resource is removed by a guard.

pub mod model;
pub mod offline;
pub mod sshd;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The netledger binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_netledger"))
}

/// Whether this test can run: root is needed for namespaces and users. Outside CI a
/// non-root run prints a note and skips; in CI (CI set) it fails, because a test that
/// skips itself in CI checks nothing.
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var_os("CI").is_some() {
            panic!("{test} needs root and CI is set: run the tests as root");
        }
        eprintln!("{test}: skipped (needs root)");
    }
    root
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A short name unique to this process and call (interface/user names are short).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Run a command, panic with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.ip("link set lo up");
        ns
    }

    /// `ip -n NS <args>`.
    pub fn ip(&self, args: &str) {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args.split_whitespace());
        run(&mut c);
    }

    /// A veth pair between this namespace and `peer`: `dev` here with `addrs`, `peer_dev`
    /// there with `peer_addrs`, both up. IPv6 addresses skip duplicate address detection
    /// (`nodad`), so they are usable at once.
    pub fn veth(
        &self,
        dev: &str,
        addrs: &[&str],
        peer: &Netns,
        peer_dev: &str,
        peer_addrs: &[&str],
    ) {
        self.ip(&format!(
            "link add {dev} type veth peer name {peer_dev} netns {}",
            peer.name
        ));
        for (ns, dev, addrs) in [(self, dev, addrs), (peer, peer_dev, peer_addrs)] {
            for a in addrs {
                let nodad = if a.contains(':') { " nodad" } else { "" };
                ns.ip(&format!("addr add {a} dev {dev}{nodad}"));
            }
            ns.ip(&format!("link set {dev} up"));
        }
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// `sh -c` inside the namespace, must succeed.
    pub fn sh(&self, script: &str) -> Output {
        run(self.cmd("sh").args(["-ec", script]))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Drop the values `netledger setup` kept for this namespace in /run (no-op when it
        // never ran here).
        let _ = self
            .cmd(bin())
            .args(["setup", "--undo"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A system user made for one test, deleted on drop (after its processes, which the
/// test started and ends itself by pid).
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Home directory made for a login user (removed with the user).
    pub home: Option<PathBuf>,
}

impl TestUser {
    pub fn new(prefix: &str) -> TestUser {
        let name = unique(prefix);
        run(Command::new("useradd").args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            &name,
        ]));
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").args([flag, &name]));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        TestUser {
            name,
            uid,
            gid,
            home: None,
        }
    }

    /// A user who can log in with a key (sshd): a home directory, a shell, and a password
    /// that is not locked (`*`: no password matches it, but sshd without PAM refuses even
    /// key logins to an account locked with `!`).
    pub fn login(prefix: &str) -> TestUser {
        let name = unique(prefix);
        run(Command::new("useradd").args([
            "--create-home",
            "--shell",
            "/bin/sh",
            "--user-group",
            &name,
        ]));
        run(Command::new("usermod").args(["-p", "*", &name]));
        let id = |flag: &str| -> u32 {
            let out = run(Command::new("id").args([flag, &name]));
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let home = PathBuf::from(format!("/home/{name}"));
        TestUser {
            name,
            uid,
            gid,
            home: Some(home),
        }
    }

    /// A command run as this user (no capabilities) inside `ns`.
    pub fn cmd(&self, ns: &Netns, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = setpriv_as(ns, self.uid, self.gid);
        c.arg("--").arg(program);
        c
    }
}

/// `setpriv` inside `ns` as `uid`/`gid` with no supplementary groups; the caller adds
/// its own options, then `--` and what runs.
pub fn setpriv_as(ns: &Netns, uid: u32, gid: u32) -> Command {
    let mut c = ns.cmd("setpriv");
    c.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
    ]);
    c
}

/// `setpriv` inside `ns` as a service runs: `svc`'s uid, no new privileges, exactly `caps`
/// (`CAP_…` names) as its inheritable, ambient and bounding sets; what runs follows `--`.
pub fn as_service(ns: &Netns, svc: &TestUser, caps: &[&str]) -> Command {
    let set = caps
        .iter()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = setpriv_as(ns, svc.uid, svc.gid);
    c.arg("--no-new-privs");
    if set.is_empty() {
        c.args(["--inh-caps=-all", "--bounding-set=-all"]);
    } else {
        c.arg(format!("--inh-caps={set}"))
            .arg(format!("--ambient-caps={set}"))
            .arg(format!("--bounding-set=-all,{set}"));
    }
    c.arg("--");
    c
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let mut c = Command::new("userdel");
        if self.home.is_some() {
            c.arg("--remove");
        }
        let _ = c.arg(&self.name).stderr(Stdio::null()).status();
    }
}

/// A copy of a test helper binary that any user may execute (the build tree may sit
/// under a private home directory).
pub struct SharedBin {
    /// The copy's directory, removed on drop.
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl SharedBin {
    pub fn new(src: &Path) -> SharedBin {
        let dir = tempfile::Builder::new()
            .prefix("netledger-bin")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join(src.file_name().unwrap());
        // Copied by another process: a copy written here would hold a writable fd that a
        // child forked meanwhile by another test thread inherits until its exec, and
        // executing the copy in that window fails with ETXTBSY ("Text file busy").
        let st = Command::new("install")
            .arg("-m")
            .arg("0755")
            .arg(src)
            .arg(&path)
            .status()
            .expect("run install(1)");
        assert!(st.success(), "install {} {}", src.display(), path.display());
        SharedBin { _dir: dir, path }
    }
}

/// The traffic helper built from examples/nl_traffic.rs.
pub fn traffic_bin() -> SharedBin {
    let p = bin().parent().unwrap().join("examples").join("nl_traffic");
    assert!(
        p.exists(),
        "{} missing: `cargo test` builds examples; run the tests through cargo",
        p.display()
    );
    SharedBin::new(&p)
}

/// End a child this test started: SIGKILL (by its pid) if it still runs, then reap it.
/// What the guards' `Drop` does.
pub fn end(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running helper process; killed (by pid) on drop if still running.
pub struct Proc {
    pub what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Proc {
    pub fn spawn(what: &str, mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Proc {
            what: what.to_string(),
            child,
            stdin,
            stdout,
        }
    }

    /// Wait for the helper to print `word` on a line.
    pub fn expect(&mut self, word: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{}: exited before printing {word:?}", self.what);
            if line.trim() == word {
                return;
            }
        }
    }

    /// The next line the helper prints (without its newline).
    pub fn next_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).unwrap();
        assert!(n > 0, "{}: exited before printing a line", self.what);
        line.trim_end().to_string()
    }

    /// Wait for a line containing `text`.
    pub fn expect_containing(&mut self, text: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{}: exited before printing {text:?}", self.what);
            if line.contains(text) {
                return;
            }
        }
    }

    /// Every line up to and including the first containing `text`.
    pub fn lines_until(&mut self, text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "{}: exited before printing {text:?}", self.what);
            let last = line.contains(text);
            lines.push(line.trim_end().to_string());
            if last {
                return lines;
            }
        }
    }

    /// Let a client go on to its second phase.
    pub fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "go").unwrap();
        stdin.flush().unwrap();
    }

    /// Wait for a successful exit.
    pub fn wait_ok(mut self) {
        let st = self.child.wait().unwrap();
        assert!(st.success(), "{}: {st}", self.what);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// One direction of a conntrack entry as `conntrack -L -o extended` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub packets: u64,
    pub bytes: u64,
}

/// A conntrack entry as the kernel's own tool shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtEntry {
    pub proto: String,
    pub orig: CtTuple,
    pub reply: CtTuple,
}

/// Parse `conntrack -L -o extended` output.
pub fn parse_conntrack_l(text: &str) -> Vec<CtEntry> {
    let mut out = vec![];
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !(f[0] == "ipv4" || f[0] == "ipv6") {
            continue;
        }
        let mut seen: HashMap<&str, Vec<&str>> = HashMap::new();
        for kv in &f[4..] {
            if let Some((k, v)) = kv.split_once('=') {
                seen.entry(k).or_default().push(v);
            }
        }
        let get =
            |k: &str, i: usize| -> Option<&str> { seen.get(k).and_then(|v| v.get(i).copied()) };
        let tuple = |i: usize| -> Option<CtTuple> {
            Some(CtTuple {
                src: get("src", i)?.parse().ok()?,
                dst: get("dst", i)?.parse().ok()?,
                sport: get("sport", i).map_or(Some(0), |p| p.parse().ok())?,
                dport: get("dport", i).map_or(Some(0), |p| p.parse().ok())?,
                packets: get("packets", i)?.parse().ok()?,
                bytes: get("bytes", i)?.parse().ok()?,
            })
        };
        if let (Some(orig), Some(reply)) = (tuple(0), tuple(1)) {
            out.push(CtEntry {
                proto: f[2].to_string(),
                orig,
                reply,
            });
        }
    }
    out
}

/// Every conntrack entry (IPv4 and IPv6) in `ns`, with counters.
pub fn conntrack_entries(ns: &Netns) -> Vec<CtEntry> {
    let mut all = vec![];
    for fam in ["ipv4", "ipv6"] {
        let out = ns
            .cmd("conntrack")
            .args(["-L", "-o", "extended", "-f", fam])
            .output()
            .expect("conntrack -L (install the conntrack package)");
        assert!(out.status.success(), "conntrack -L -f {fam}: {out:?}");
        all.extend(parse_conntrack_l(&String::from_utf8_lossy(&out.stdout)));
    }
    all
}

/// The TCP entries in `ns` whose connection is not over (any state but TIME_WAIT and
/// CLOSE): their counters may still move (the closing handshake's last packets).
pub fn unclosed_tcp_entries(ns: &Netns) -> Vec<CtEntry> {
    let mut lines = vec![];
    for fam in ["ipv4", "ipv6"] {
        let out = ns
            .cmd("conntrack")
            .args(["-L", "-o", "extended", "-p", "tcp", "-f", fam])
            .output()
            .expect("conntrack -L (install the conntrack package)");
        assert!(
            out.status.success(),
            "conntrack -L -p tcp -f {fam}: {out:?}"
        );
        // "ipv4 2 tcp 6 117 TIME_WAIT src=…": the state follows the timeout.
        lines.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| {
                    let state = l.split_whitespace().nth(5).unwrap_or("");
                    state != "TIME_WAIT" && state != "CLOSE"
                })
                .map(String::from)
                .collect::<Vec<_>>(),
        );
    }
    parse_conntrack_l(&lines.join("\n"))
}

/// Wait until every TCP connection in `ns` is over (TIME_WAIT or CLOSE), so that the
/// kernel's counters are final.
pub fn wait_tcp_closed(ns: &Netns) {
    wait_for(
        "every TCP connection to finish closing",
        std::time::Duration::from_secs(30),
        || unclosed_tcp_entries(ns).is_empty().then_some(()),
    );
}

/// Wait until no entry matching `f` is left in `ns`'s conntrack table. Each look is a
/// dump, and a dump removes the expired entries (ctnetlink_dump_table), whose DESTROY
/// events the kernel sends then instead of whenever its garbage collector gets to them:
/// so this waits for their timeout (TIME_WAIT) and no longer.
pub fn wait_entries_gone(ns: &Netns, what: &str, f: impl Fn(&CtEntry) -> bool) {
    wait_for(
        &format!("the conntrack entries of {what} to expire"),
        std::time::Duration::from_secs(30),
        || (!conntrack_entries(ns).iter().any(&f)).then_some(()),
    );
}

/// Every byte the passes and flushes in `db` recorded, both directions: attributed,
/// unattributed and excluded (the `passes` table), to set against conntrack's counters.
pub fn bytes_in_passes(db: &Path) -> u64 {
    let c = rusqlite::Connection::open(db).unwrap();
    let sum: i64 = c
        .query_row(
            "SELECT sum(attributed_rx_bytes + attributed_tx_bytes + unattributed_rx_bytes
                      + unattributed_tx_bytes + excluded_rx_bytes + excluded_tx_bytes)
             FROM passes",
            [],
            |r| r.get(0),
        )
        .unwrap();
    u64::try_from(sum).unwrap()
}

/// Per-uid traffic as netledger's `top --json` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// `netledger top --by user --json` over all time, keyed by uid (None = unattributed).
pub fn top_by_uid(ns: &Netns, db: &Path) -> HashMap<Option<u32>, Usage> {
    let out = run(ns
        .cmd(bin())
        .args([
            "top", "--by", "user", "--json", "--since", "3650d", "--limit", "1000", "--db",
        ])
        .arg(db));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m: HashMap<Option<u32>, Usage> = HashMap::new();
    for row in v.as_array().unwrap() {
        let uid = row["uid"].as_u64().map(|u| u as u32);
        let e = m.entry(uid).or_default();
        e.rx_bytes += row["rx_bytes"].as_u64().unwrap();
        e.tx_bytes += row["tx_bytes"].as_u64().unwrap();
    }
    m
}

// ---- daemon tests (issue 4): bursts, DESTROY captures, the running daemon ----

/// The burst helper built from examples/nl_burst.rs.
pub fn burst_bin() -> SharedBin {
    let p = bin().parent().unwrap().join("examples").join("nl_burst");
    assert!(
        p.exists(),
        "{} missing: `cargo test` builds examples; run the tests through cargo",
        p.display()
    );
    SharedBin::new(&p)
}

/// One burst at a time, across every file of this binary: two bursts of thousands of
/// connections a second at once would measure this 2-core machine, not netledger (the
/// kernel drops events when the daemon cannot keep up, which the daemon reports as lost,
/// and the test cannot be exact then). Held by the tests that make such bursts.
pub fn one_burst_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// Poll `f` every 100 ms until it returns Some, or panic after `limit` naming `what`.
/// A deadline, not a timing assertion: it only bounds how long a broken run hangs.
pub fn wait_for<T>(what: &str, limit: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "gave up after {limit:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// `conntrack -E -e DESTROY -o extended` running in a namespace: the kernel's own final
/// counters of every flow that ends while it runs. Killed (by pid) on drop.
pub struct DestroyCapture {
    child: Child,
    file: tempfile::NamedTempFile,
}

impl DestroyCapture {
    pub fn start(ns: &Netns) -> DestroyCapture {
        let file = tempfile::NamedTempFile::new().unwrap();
        let child = ns
            .cmd("conntrack")
            // A buffer big enough for the tests' bursts: a capture that overran would
            // undercount the truth.
            .args(["-E", "-e", "DESTROY", "-o", "extended", "-b", "8388608"])
            .stdout(file.reopen().unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("conntrack -E (install the conntrack package)");
        // Ready once subscribed, before the flows it must see end: conntrack prints nothing
        // then, so look at its sockets.
        let pid = child.id();
        let mut capture = DestroyCapture { child, file };
        wait_for(
            "conntrack -E to subscribe to DESTROY events",
            std::time::Duration::from_secs(30),
            || {
                let exited = capture.child.try_wait().ok().flatten();
                assert!(exited.is_none(), "conntrack -E exited: {exited:?}");
                subscribed_to_netfilter(pid).then_some(())
            },
        );
        capture
    }

    /// The DESTROY events so far.
    pub fn entries(&self) -> Vec<CtEntry> {
        let text = std::fs::read_to_string(self.file.path()).unwrap();
        // "[DESTROY] ipv4 2 tcp 6 TIME_WAIT src=…": drop what precedes the family.
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| {
                let i = l.find("ipv4").or_else(|| l.find("ipv6"))?;
                Some(l[i..].to_string())
            })
            .collect();
        parse_conntrack_l(&lines.join("\n"))
    }

    /// Wait until `n` DESTROY events match `f`, and return those.
    pub fn wait(&self, n: usize, f: impl Fn(&CtEntry) -> bool) -> Vec<CtEntry> {
        wait_for(
            &format!("{n} DESTROY events in conntrack -E"),
            std::time::Duration::from_secs(30),
            || {
                let got: Vec<CtEntry> = self.entries().into_iter().filter(|e| f(e)).collect();
                (got.len() >= n).then_some(got)
            },
        )
    }
}

/// NETLINK_NETFILTER (include/uapi/linux/netlink.h).
const NETLINK_NETFILTER: u32 = 12;

/// Whether process `pid` holds a netfilter netlink socket bound to a multicast group: its
/// socket inodes (`/proc/PID/fd`) looked up in `/proc/PID/net/netlink` (its namespace's
/// table: `sk Eth Pid Groups … Inode`, Groups the first 32 groups in hex). Binding to the
/// groups is what subscribes (`conntrack -E` binds to the event groups it asks for), so
/// from then on the kernel queues every event for it.
pub fn subscribed_to_netfilter(pid: u32) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/netlink")).unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        f.len() >= 10
            && f[1].parse() == Ok(NETLINK_NETFILTER)
            && u32::from_str_radix(f[3], 16).is_ok_and(|g| g != 0)
            && sockets.contains(f[9])
    })
}

impl Drop for DestroyCapture {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// Sum of conntrack entries as a local client sees them: tx = original, rx = reply.
pub fn outgoing_usage<'a>(entries: impl IntoIterator<Item = &'a CtEntry>) -> Usage {
    entries.into_iter().fold(Usage::default(), |u, e| Usage {
        rx_bytes: u.rx_bytes + e.reply.bytes,
        tx_bytes: u.tx_bytes + e.orig.bytes,
    })
}

/// `netledger run` in a namespace, its stderr in a file; killed (by pid) on drop.
pub struct Daemon {
    child: Child,
    pub log: tempfile::NamedTempFile,
}

impl Daemon {
    /// Start `netledger --db DB -v run ARGS` in `ns` with `env`, and wait for its first pass.
    pub fn start(ns: &Netns, db: &Path, args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = ns.cmd(bin());
        cmd.arg("--db").arg(db).args(["-v", "run"]).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("spawn netledger run");
        let d = Daemon { child, log };
        // Its first pass logs "… (run, N ms CPU)" (with -v).
        let t0 = std::time::Instant::now();
        while !d.stderr().contains("(run, ") {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(30),
                "no first pass from the daemon after 30 s:\n{}",
                d.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        d
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Scheduled passes finished so far: each logs "… (run, N ms CPU)" (with -v).
    pub fn passes(&self) -> usize {
        self.stderr().matches("(run, ").count()
    }

    /// Wait until a whole scheduled pass ran after this call (the one under way, if any,
    /// may have begun before it: so two more).
    pub fn wait_for_a_whole_pass(&self) {
        let n = self.passes();
        wait_for(
            "a whole pass of the daemon",
            std::time::Duration::from_secs(60),
            || (self.passes() >= n + 2).then_some(()),
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait; the daemon must exit 0.
    pub fn stop(mut self) -> String {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) },
            0
        );
        let st = self.child.wait().unwrap();
        let err = self.stderr();
        assert!(st.success(), "netledger run exited with {st}:\n{err}");
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// `netledger log --json` over the last day.
pub fn connection_log(ns: &Netns, db: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = run(ns
        .cmd(bin())
        .arg("--db")
        .arg(db)
        .args(["log", "--json", "--since", "1d"])
        .args(extra));
    serde_json::from_slice::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Send `sig` to a process this test started.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0, "kill {pid}");
}

/// A host namespace (198.51.100.1/24, 2001:db8::1/64) linked by a veth to an "internet"
/// namespace (198.51.100.2/24, 2001:db8::2/64) where `nl_traffic server tcp [::]:9000`
/// answers; conntrack set up in `host` by `netledger setup`, with a TIME_WAIT timeout of
/// `time_wait` seconds (the kernel's default is 120). Removed by the guards.
pub struct Inet {
    pub host: Netns,
    pub inet: Netns,
    /// The server in `inet`, killed on drop.
    _server: Proc,
}

impl Inet {
    pub fn new(prefix: &str, time_wait: u32) -> Inet {
        let host = Netns::new(&format!("{prefix}h"));
        let inet = Netns::new(&format!("{prefix}i"));
        host.veth(
            "hi",
            &["198.51.100.1/24", "2001:db8::1/64"],
            &inet,
            "ih",
            &["198.51.100.2/24", "2001:db8::2/64"],
        );
        run(host.cmd(bin()).arg("setup"));
        host.sh(&format!(
            "sysctl -qw net.netfilter.nf_conntrack_tcp_timeout_time_wait={time_wait}"
        ));
        let tb = traffic_bin();
        let mut server = Proc::spawn("inet server", {
            let mut c = inet.cmd(&tb.path);
            c.args(["server", "tcp", "[::]:9000"]);
            c
        });
        server.expect("listening");
        Inet {
            host,
            inet,
            _server: server,
        }
    }
}
