//! `netledger live` against the real kernel, in network namespaces made here: per-user
//! rates of paced senders, exact bytes over the interval for connections that stay and
//! for connections that open and close between two refreshes (conntrack events), and the
//! full-screen view driven in a real terminal (tmux).
//!
//! Topology (`common::Inet`, removed by guards): host 198.51.100.1 ── veth ── inet
//! 198.51.100.2, where `nl_traffic server tcp` answers on port 9000. Users' programs run
//! in `host` under their uids; the kernel's numbers come from `conntrack -L` and
//! `conntrack -E -e DESTROY`.

use crate::common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `netledger -v live ARGS` in `ns`, stdout and stderr piped; killed (by pid) on drop.
struct Live {
    child: Child,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Live {
    fn start(ns: &Netns, args: &[&str]) -> Live {
        let mut child = ns
            .cmd(bin())
            .args(["-v", "live"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netledger live");
        let stderr = BufReader::new(child.stderr.take().unwrap());
        Live { child, stderr }
    }

    /// Wait for the line saying the baseline dump was taken (with -v).
    fn wait_first_dump(&mut self) {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.stderr.read_line(&mut line).unwrap();
            assert!(n > 0, "netledger live exited before its first dump");
            if line.contains("first dump taken") {
                return;
            }
        }
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Wait for its exit; it must succeed. Returns stdout.
    fn finish(mut self) -> String {
        let mut out = String::new();
        self.child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        let mut err = String::new();
        let _ = self.stderr.read_to_string(&mut err);
        let st = self.child.wait().unwrap();
        eprintln!("live stderr: {err}");
        assert!(st.success(), "netledger live: {st}\n{err}");
        out
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        end(&mut self.child);
    }
}

/// Counters of the one conntrack entry matching `f`, once they stopped moving (two looks
/// in a row agree): a connection idle between its requests.
fn settled(ns: &Netns, what: &str, f: impl Fn(&CtEntry) -> bool) -> Usage {
    let mut last: Option<Usage> = None;
    wait_for(what, Duration::from_secs(30), || {
        let now = outgoing_usage(conntrack_entries(ns).iter().filter(|e| f(e)));
        let same = last == Some(now);
        last = Some(now);
        same.then_some(now)
    })
}

/// Original-direction bytes of the entries matching each of `fs`, from one `conntrack
/// -L` (IPv4: the tests' flows), and when: halfway through the command.
fn bytes_now(ns: &Netns, fs: [&dyn Fn(&CtEntry) -> bool; 2]) -> ([u64; 2], Instant) {
    let t = Instant::now();
    let out = ns
        .cmd("conntrack")
        .args(["-L", "-o", "extended", "-f", "ipv4"])
        .output()
        .expect("conntrack -L");
    let at = t + t.elapsed() / 2;
    let entries = parse_conntrack_l(&String::from_utf8_lossy(&out.stdout));
    let sum =
        |f: &dyn Fn(&CtEntry) -> bool| entries.iter().filter(|e| f(e)).map(|e| e.orig.bytes).sum();
    ([sum(fs[0]), sum(fs[1])], at)
}

fn within(got: f64, want: f64, what: &str) {
    let off = (got - want).abs() / want;
    eprintln!(
        "{what}: live {got:.0}, kernel {want:.0} ({:.1} % off)",
        off * 100.0
    );
    assert!(
        off <= 0.10,
        "{what}: live says {got:.0}, the kernel {want:.0}"
    );
}

#[test]
fn live_once_json_reports_each_users_rate_and_the_exact_bytes_of_the_interval() {
    if !require_root("live_once_json_reports_each_users_rate_and_the_exact_bytes_of_the_interval") {
        return;
    }
    // TIME_WAIT of 1 s: a closed connection's entry ends (DESTROY) within the interval.
    let t = Inet::new("nlv", 1);
    let tb = traffic_bin();
    let capture = DestroyCapture::start(&t.host);
    let (alice, bob, carol, dave) = (
        TestUser::new("nlva"),
        TestUser::new("nlvb"),
        TestUser::new("nlvc"),
        TestUser::new("nlvd"),
    );
    // alice uploads 200 kB/s; bob's server receives 100 kB/s from the internet.
    let mut up = Proc::spawn("alice paced", {
        let mut c = alice.cmd(&t.host, &tb.path);
        c.args(["paced", "tcp", "198.51.100.2:9000", "200000"]);
        c
    });
    up.expect("ready");
    let mut bob_server = Proc::spawn("bob server", {
        let mut c = bob.cmd(&t.host, &tb.path);
        c.args(["server", "tcp", "0.0.0.0:9100"]);
        c
    });
    bob_server.expect("listening");
    let mut down = Proc::spawn("inet paced to bob", {
        let mut c = t.inet.cmd(&tb.path);
        c.args(["paced", "tcp", "198.51.100.1:9100", "100000"]);
        c
    });
    down.expect("ready");
    let is_alice = |e: &CtEntry| e.orig.dport == 9000 && ![41000, 41100].contains(&e.orig.sport);
    let is_bob = |e: &CtEntry| e.orig.dport == 9100;
    let is_carol = |e: &CtEntry| e.orig.sport == 41000;
    let is_dave = |e: &CtEntry| e.orig.sport == 41100;
    // dave's connection lives through the interval: a first request now, a second one
    // between the two dumps, then it closes.
    let mut d = Proc::spawn("dave client", {
        let mut c = dave.cmd(&t.host, &tb.path);
        c.args(["client", "tcp", "198.51.100.2:9000", "3000", "70000"])
            .args(["--bind", "41100"]);
        c
    });
    d.expect("ready");
    let dave_before = settled(&t.host, "dave's first request to settle", is_dave);

    let mut live = Live::start(&t.host, &["--once", "--json", "--interval", "5s"]);
    live.wait_first_dump();
    // The kernel's counters right after the first dump and right after the second (below):
    // nearly live's interval, so a sender that lags on a loaded machine lags in both.
    let (before, t0) = bytes_now(&t.host, [&is_alice, &is_bob]);
    // Between the dumps: dave's second request and close; carol's whole connection,
    // opened and closed (its entry gone) before the second dump.
    d.go();
    let mut c = Proc::spawn("carol client", {
        let mut c = carol.cmd(&t.host, &tb.path);
        c.args(["client", "tcp", "198.51.100.2:9000", "5000", "150000"])
            .args(["--bind", "41000"]);
        c
    });
    c.expect("ready");
    c.go();
    c.expect("done");
    d.expect("done");
    wait_entries_gone(&t.host, "carol's and dave's connections", |e| {
        is_carol(e) || is_dave(e)
    });
    let carol_truth = outgoing_usage(&capture.wait(1, is_carol));
    let dave_final = outgoing_usage(&capture.wait(1, is_dave));
    assert!(
        live.running(),
        "the interval ended before carol's and dave's connections did (machine too loaded?)"
    );
    let out = live.finish();
    let (after, t1) = bytes_now(&t.host, [&is_alice, &is_bob]);
    eprintln!("{out}");

    let lines: Vec<serde_json::Map<String, serde_json::Value>> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let keys = [
        "uid",
        "user",
        "rx_bytes",
        "tx_bytes",
        "rx_bps",
        "tx_bps",
        "interval_s",
    ];
    let mut by_uid: HashMap<Option<u64>, &serde_json::Map<String, serde_json::Value>> =
        HashMap::new();
    for l in &lines {
        assert_eq!(l.keys().collect::<Vec<_>>(), keys, "{l:?}");
        let secs = l["interval_s"].as_f64().unwrap();
        assert!((4.5..8.0).contains(&secs), "interval_s {secs}");
        for (bytes, bps) in [("rx_bytes", "rx_bps"), ("tx_bytes", "tx_bps")] {
            // interval_s is rounded to the millisecond, the rates are not.
            let want = l[bytes].as_u64().unwrap() as f64 * 8.0 / secs;
            let got = l[bps].as_u64().unwrap() as f64;
            assert!((got - want).abs() <= want * 0.001 + 1.0, "{l:?}");
        }
        by_uid.insert(l["uid"].as_u64(), l);
    }
    let line = |u: &TestUser| {
        let l = by_uid
            .get(&Some(u64::from(u.uid)))
            .unwrap_or_else(|| panic!("no line for {}: {out}", u.name));
        assert_eq!(l["user"], u.name.as_str());
        (
            l["rx_bytes"].as_u64().unwrap(),
            l["tx_bytes"].as_u64().unwrap(),
            l["rx_bps"].as_u64().unwrap() as f64,
            l["tx_bps"].as_u64().unwrap() as f64,
        )
    };
    // Exact: carol's connection (never in a dump: counted from its DESTROY event), and
    // what dave's moved between the two dumps.
    let (rx, tx, _, _) = line(&carol);
    assert_eq!(
        (rx, tx),
        (carol_truth.rx_bytes, carol_truth.tx_bytes),
        "carol"
    );
    let (rx, tx, _, _) = line(&dave);
    assert_eq!(
        (rx, tx),
        (
            dave_final.rx_bytes - dave_before.rx_bytes,
            dave_final.tx_bytes - dave_before.tx_bytes
        ),
        "dave"
    );
    // Rates: within 10 % of the kernel's over (nearly) the same interval.
    let secs = (t1 - t0).as_secs_f64();
    let (_, _, _, alice_tx) = line(&alice);
    within(
        alice_tx,
        (after[0] - before[0]) as f64 * 8.0 / secs,
        "alice tx bit/s",
    );
    let (_, _, bob_rx, _) = line(&bob);
    within(
        bob_rx,
        (after[1] - before[1]) as f64 * 8.0 / secs,
        "bob rx bit/s",
    );
    // Nothing else moved: no unattributed line.
    assert!(!by_uid.contains_key(&None), "{out}");
}

/// A tmux server of this test's own (`tmux -L NAME`), killed on drop, with one window
/// running `command`.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(command: &str, width: u16, height: u16) -> Tmux {
        let t = Tmux {
            socket: unique("nlvt"),
        };
        run(t
            .cmd()
            .args(["new-session", "-d", "-s", "live", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .arg(command));
        t
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket, "-f", "/dev/null"]);
        c
    }

    fn screen(&self) -> String {
        let out = run(self.cmd().args(["capture-pane", "-p", "-t", "live"]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        run(self.cmd().args(["send-keys", "-t", "live", keys]));
    }

    fn show(&self, what: &str) -> String {
        let out = run(self
            .cmd()
            .args(["display-message", "-p", "-t", "live", what]));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Wait until the screen satisfies `f`; returns it.
    fn wait(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if f(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "gave up waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").stderr(Stdio::null()).status();
    }
}

/// The line of the screen that names `who` (its row), and its index.
fn row_of(screen: &str, who: &str) -> Option<usize> {
    screen.lines().position(|l| l.trim_start().starts_with(who))
}

#[test]
fn live_view_in_a_terminal_follows_its_keys_narrows_to_60_columns_and_quits_cleanly() {
    if !require_root(
        "live_view_in_a_terminal_follows_its_keys_narrows_to_60_columns_and_quits_cleanly",
    ) {
        return;
    }
    let t = Inet::new("nlt", 120);
    let tb = traffic_bin();
    let (alice, bob) = (TestUser::new("nlta"), TestUser::new("nltb"));
    // alice sends 200 kB/s; bob receives 50 kB/s: alice leads by total and by tx, bob
    // by rx.
    let mut up = Proc::spawn("alice paced", {
        let mut c = alice.cmd(&t.host, &tb.path);
        c.args(["paced", "tcp", "198.51.100.2:9000", "200000"]);
        c
    });
    up.expect("ready");
    let mut server = Proc::spawn("bob server", {
        let mut c = bob.cmd(&t.host, &tb.path);
        c.args(["server", "tcp", "0.0.0.0:9100"]);
        c
    });
    server.expect("listening");
    let mut down = Proc::spawn("inet paced to bob", {
        let mut c = t.inet.cmd(&tb.path);
        c.args(["paced", "tcp", "198.51.100.1:9100", "50000"]);
        c
    });
    down.expect("ready");

    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    // After the view: its exit status and the terminal's modes, for the checks below.
    let script = format!(
        "ip netns exec {} {} live --interval 500ms; echo \"exit=$?\" > {d}.tmp; \
         stty -a >> {d}.tmp; mv {d}.tmp {d}; sleep 600",
        t.host.name,
        bin().display(),
        d = done.display()
    );
    let tmux = Tmux::start(&script, 100, 30);
    let both = |s: &str| row_of(s, &alice.name).is_some() && row_of(s, &bob.name).is_some();
    let s = tmux.wait("both users on screen", both);
    assert!(s.contains("group: user"), "{s}");
    assert!(s.contains("sort: total"), "{s}");
    assert!(
        s.contains("RX avg"),
        "a wide screen shows the window columns:\n{s}"
    );
    assert_eq!(
        tmux.show("#{alternate_on}"),
        "1",
        "the view uses the alternate screen"
    );
    // Orders are waited for (a capture can catch a redraw half done): a wrong one that
    // stays fails the wait.
    let before = |s: &str, a: &str, b: &str| both(s) && row_of(s, a) < row_of(s, b);
    tmux.wait("alice first by total", |s| {
        before(s, &alice.name, &bob.name)
    });

    // Sort keys: rx puts bob first, tx alice.
    tmux.keys("s");
    tmux.wait("bob first by rx", |s| {
        s.contains("sort: rx") && before(s, &bob.name, &alice.name)
    });
    tmux.keys("s");
    tmux.wait("alice first by tx", |s| {
        s.contains("sort: tx") && before(s, &alice.name, &bob.name)
    });

    // Grouping keys: programs, then remotes, below each user.
    tmux.keys("p");
    let s = tmux.wait("alice's program right below her", |s| {
        s.contains("group: user > program")
            && row_of(s, &alice.name).is_some_and(|a| {
                s.lines()
                    .nth(a + 1)
                    .is_some_and(|l| l.starts_with("  nl_traffic"))
            })
    });
    eprintln!("by program:\n{s}");
    tmux.keys("r");
    tmux.wait("remotes below users, programs gone", |s| {
        s.contains("group: user > remote")
            && s.contains("  198.51.100.2")
            && !s.contains("  nl_traffic")
    });
    tmux.keys("u");
    tmux.wait("users only again", |s| {
        s.contains("group: user ") && !s.contains("  198.51.100.2") && both(s)
    });

    // Help, closed by any key.
    tmux.keys("?");
    tmux.wait("the help", |s| s.contains("keys") && s.contains("quit"));
    tmux.keys("x");
    tmux.wait("the help closed", |s| !s.contains("quit"));

    // Pause: the rows stay as they are while the header says so.
    tmux.keys(" ");
    let paused = tmux.wait("paused", |s| s.contains("PAUSED"));
    let rows = |s: &str| s.lines().skip(4).map(String::from).collect::<Vec<_>>();
    // Three refreshes at 500 ms: any change would have shown.
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(rows(&tmux.screen()), rows(&paused), "paused rows changed");
    tmux.keys(" ");
    tmux.wait("resumed", |s| !s.contains("PAUSED"));

    // 60 columns: the narrow layout, every user still named with both rates.
    run(tmux
        .cmd()
        .args(["resize-window", "-t", "live", "-x", "60", "-y", "30"]));
    // (Waited for whole: a capture can catch the redraw half done.)
    let rates = |s: &str, who: &str| {
        row_of(s, who).map_or(0, |i| s.lines().nth(i).unwrap().matches("bit/s").count())
    };
    let s = tmux.wait("the narrow layout", |s| {
        !s.contains("RX avg") && rates(s, &alice.name) == 2 && rates(s, &bob.name) == 2
    });
    eprintln!("60 columns:\n{s}");
    for who in [&alice.name, &bob.name] {
        let line = s.lines().nth(row_of(&s, who).unwrap()).unwrap();
        assert!(line.chars().count() <= 60, "{line}");
        assert_eq!(
            line.matches("bit/s").count(),
            2,
            "rx and tx of {who}: {line}"
        );
    }
    let head = s.lines().find(|l| l.contains("USER")).unwrap();
    assert!(head.contains("RX") && head.contains("TX"), "{s}");

    // q: exit 0, the alternate screen left, the terminal back in cooked mode with echo.
    tmux.keys("q");
    wait_for("the view to exit", Duration::from_secs(30), || {
        done.exists().then_some(())
    });
    let after = std::fs::read_to_string(&done).unwrap();
    assert!(after.starts_with("exit=0"), "{after}");
    let modes: Vec<&str> = after.split_whitespace().collect();
    for mode in ["icanon", "echo", "icrnl", "opost", "isig"] {
        assert!(
            modes.contains(&mode),
            "terminal mode {mode} not restored:\n{after}"
        );
    }
    assert_eq!(tmux.show("#{alternate_on}"), "0", "alternate screen left");
    assert!(
        !tmux.screen().contains("sort:"),
        "the view's screen is gone"
    );
}

#[test]
fn live_without_privileges_says_which_capability_in_one_line() {
    if !require_root("live_without_privileges_says_which_capability_in_one_line") {
        return;
    }
    let ns = Netns::new("nlvp");
    run(ns.cmd(bin()).arg("setup"));
    let user = TestUser::new("nlvp");
    let out = user
        .cmd(&ns, bin())
        .args(["live", "--once", "--interval", "200ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("CAP_NET_ADMIN"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn live_interval_out_of_range_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["live", "--once", "--interval", "10ms"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--interval 10ms") && err.contains("200ms to 1h"),
        "{err}"
    );
}

#[test]
fn live_view_puts_the_terminal_back_on_sigterm() {
    if !require_root("live_view_puts_the_terminal_back_on_sigterm") {
        return;
    }
    let ns = Netns::new("nlvs");
    run(ns.cmd(bin()).arg("setup"));
    let dir = tempfile::tempdir().unwrap();
    let done = dir.path().join("done");
    let script = format!(
        "ip netns exec {} {} live; echo \"exit=$?\" > {d}.tmp; stty -a >> {d}.tmp; \
         mv {d}.tmp {d}; sleep 600",
        ns.name,
        bin().display(),
        d = done.display()
    );
    let tmux = Tmux::start(&script, 100, 30);
    tmux.wait("the view", |s| s.contains("sort: total"));
    // The pane runs sh, whose child is netledger (`ip netns exec` execs it).
    let sh_pid = tmux.show("#{pane_pid}");
    let out = run(Command::new("pgrep").args(["-P", &sh_pid]));
    let pid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("one child");
    signal(pid, libc::SIGTERM);
    wait_for("the view to exit", Duration::from_secs(30), || {
        done.exists().then_some(())
    });
    let after = std::fs::read_to_string(&done).unwrap();
    assert!(after.starts_with("exit=0"), "{after}");
    let modes: Vec<&str> = after.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(
            modes.contains(&mode),
            "terminal mode {mode} not restored:\n{after}"
        );
    }
    assert_eq!(tmux.show("#{alternate_on}"), "0", "alternate screen left");
}
