#!/usr/bin/env python3
"""The cost of `netledger live` at scale: the CPU share of the full-screen view refreshing
every --interval over N established TCP flows, and the wall time of each refresh.

It builds bench/scale.py's scenario (a "host" namespace with a veth "internet" peer,
198.51.100.0/24; N established TCP flows, half outgoing, half incoming, held by --procs
processes; --idle idle processes), starts `netledger -v live --interval I` in the host
namespace inside a tmux pane of its own (a real terminal: the view draws as it would for an
administrator), lets the baseline and first refreshes pass, then reads the process's CPU
time (utime + stime, /proc/PID/stat) over --seconds and prints the share of one core, and
the per-refresh times the view logged (`live refresh: … ms (stages)` with -v). Every
namespace, process and the tmux server it started are removed at the end.

Usage (root; release build and the nl_traffic example first):
    cargo build --release --bins --examples
    python3 bench/live.py --flows 20000 --seconds 30
"""
import argparse, os, re, statistics, subprocess, sys, tempfile, time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import sh, ns_exec, spawn, inet_pair, hold_flows  # noqa: E402

def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 (utime, stime), counted from the state (field 3) at index 0.
    return int(rest[11]) + int(rest[12])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--procs", type=int, default=500)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--interval", default="1s")
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--passes", type=int, default=5, help="steady snapshot passes timed for comparison")
    ap.add_argument("--bin", default="target/release/netledger")
    ap.add_argument("--traffic", default="target/release/examples/nl_traffic")
    a = ap.parse_args()
    binp, traffic = os.path.abspath(a.bin), os.path.abspath(a.traffic)
    for p in (binp, traffic):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `cargo build --release --bins --examples` first")
    n = a.flows
    tag = f"{os.getpid()}"
    host, inet = "nllh" + tag, "nlli" + tag
    sock = "nllive" + tag
    procs = []
    tmpdir = tempfile.mkdtemp()
    log = os.path.join(tmpdir, "live.log")
    try:
        inet_pair(host, inet)
        sh(*ns_exec(host, binp, "-q", "setup"))
        hold_flows(n, a.procs, host, inet, traffic, procs)
        for _ in range(a.idle):
            procs.append(spawn(ns_exec(host, "sh", "-c", "exec 3</dev/null 4</dev/null 5</dev/null; exec sleep 3600")))
        flows = int(subprocess.run(ns_exec(host, "conntrack", "-C"), capture_output=True, text=True).stdout)
        # `ip netns exec` execs netledger: the pane's pid is netledger's.
        cmd = f"ip netns exec {host} {binp} -v live --interval {a.interval} 2>{log}"
        sh("tmux", "-L", sock, "-f", "/dev/null", "new-session", "-d", "-s", "live",
           "-x", "120", "-y", "40", "exec sh -c '" + cmd + "'")
        pid = None
        deadline = time.time() + 60
        while time.time() < deadline:
            out = subprocess.run(["tmux", "-L", sock, "list-panes", "-t", "live", "-F", "#{pane_pid}"],
                                 capture_output=True, text=True).stdout.strip()
            kids = subprocess.run(["pgrep", "-P", out], capture_output=True, text=True).stdout.split()
            # netledger is the pane's process, or its shell's child.
            def is_nl(p):
                try:
                    return os.readlink(f"/proc/{p}/exe") == binp
                except OSError:
                    return False
            pid = next((k for k in [out] + kids if out and is_nl(k)), None)
            screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "live"],
                                    capture_output=True, text=True).stdout
            if pid and "flows" in screen and "USER" in screen:
                break
            time.sleep(0.2)
        assert pid, "netledger live did not start"
        # Let the baseline (every flow's first sighting: a walk of every process) and a
        # few refreshes pass.
        time.sleep(5)
        hz = os.sysconf("SC_CLK_TCK")
        t0, c0, w0 = time.monotonic(), cpu_ticks(pid), time.time()
        time.sleep(a.seconds)
        t1, c1, w1 = time.monotonic(), cpu_ticks(pid), time.time()
        screen = subprocess.run(["tmux", "-L", sock, "capture-pane", "-p", "-t", "live"],
                                capture_output=True, text=True).stdout
        sh("tmux", "-L", sock, "send-keys", "-t", "live", "q")
        deadline = time.time() + 30
        while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
            time.sleep(0.1)
        share = (c1 - c0) / hz / (t1 - t0)
        with open(log) as f:
            lines = [l for l in f if "live refresh:" in l]
        ms = [float(re.search(r"live refresh: ([0-9.]+) ms", l).group(1)) for l in lines]
        steady = ms[3:] if len(ms) > 5 else ms
        print(f"{flows} flows, interval {a.interval}, {a.seconds} s measured")
        print(f"CPU: {share * 100:.1f} % of one core (utime+stime {(c1 - c0) / hz:.2f} s over {t1 - t0:.1f} s)")
        print(f"refreshes: {len(ms)}; first (baseline) {ms[0]:.0f} ms; steady median "
              f"{statistics.median(steady):.0f} ms, max {max(steady):.0f} ms")
        print("a steady refresh: " + lines[-1].split("live refresh: ", 1)[1].strip())
        print("the screen:\n" + "\n".join(screen.splitlines()[:8]))
        # The same host's steady-state pass, for comparison: CPU and wall time of
        # `netledger snapshot` (after a first pass and delegate_grace, as bench/scale.py).
        db = os.path.join(tmpdir, "bench.db")
        snap = ns_exec(host, binp, "--db", db, "-q", "snapshot")
        sh(*snap)
        time.sleep(11)
        sh(*snap)
        cpu, wall = [], []
        for _ in range(a.passes):
            t = time.perf_counter()
            p = subprocess.Popen(snap)
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            assert p.returncode == 0, "snapshot failed"
            wall.append((time.perf_counter() - t) * 1000)
            cpu.append((ru.ru_utime + ru.ru_stime) * 1000)
        print(f"snapshot, steady state, {a.passes} passes: CPU median {statistics.median(cpu):.0f} ms, "
              f"wall median {statistics.median(wall):.0f} ms (min {min(wall):.0f}, max {max(wall):.0f})")
        def when(l):
            # tracing's timestamps: UTC, "2026-11-29T10:31:34.507333Z".
            t = datetime.strptime(l.split()[0][:26].rstrip("Z"), "%Y-%m-%dT%H:%M:%S.%f")
            return t.replace(tzinfo=timezone.utc).timestamp()
        inside = sum(1 for l in lines if w0 <= when(l) <= w1)
        print(f"live: {inside} refreshes in the measured span, CPU {(c1 - c0) / hz / max(inside, 1) * 1000:.0f} ms each on average")
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], stderr=subprocess.DEVNULL)
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        for ns in (host, inet):
            subprocess.run(["ip", "netns", "del", ns])

if __name__ == "__main__":
    main()
