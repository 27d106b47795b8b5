#!/usr/bin/env python3
"""netledger's scale benchmark: a steady-state `netledger snapshot` timed side by side with
the tools an administrator would otherwise run for the same picture.

For each N it builds a network namespace ("host") with a veth link to an "internet"
namespace (198.51.100.0/24, documentation addresses only), then N established TCP flows:
half outgoing (host clients to internet servers), half incoming (internet clients to host
servers), spread over --procs processes in the host namespace, plus --idle idle processes
holding a few descriptors each. It runs one pass (first sighting), then alternates, for
--rounds rounds:
    netledger snapshot (steady state)   ss -tanp   conntrack -L -o extended
    ss -tuan (sock_diag, no processes)   cat /proc/net/{tcp,tcp6,udp,udp6}
and prints medians, min-max, ratios, netledger's peak RSS and its per-stage timings, as a
Markdown table row per N. Every namespace and process it started is removed at the end.

With --ssh S it then adds S SSH-like sessions beside the N flows (issue 16): connections
from the internet namespace to a host server (`nl_traffic sshlike`) that accepts them as
root and hands each to a child of its own running as --ssh-uid, as sshd does after a
login, so each socket (uid 0) is held by a root process and a user's process. It times the
pass that first sees them (every holder looked up: a walk of every process), then steady
passes (settled: no walk), and, with --ssh-uid 0 (no user's process: every session held
back for delegate_grace), the passes of held sessions.

With --hold FILE it stops after the setup, prints the command of one pass and keeps the
scene up until FILE is removed: for profiling single passes (perf, callgrind).

Usage (root; release build and the nl_traffic example first):
    cargo build --release --bins --examples
    python3 bench/scale.py --flows 1000,5000,20000,100000
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

def sh(*a):
    subprocess.run(a, check=True)

def ns_exec(ns, *cmd):
    return ["ip", "netns", "exec", ns, *cmd]

def spawn(cmd, stdin=False):
    # stderr to a file, read only when the helper does not start (see expect).
    err = tempfile.TemporaryFile(mode="w+")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.PIPE if stdin else None,
                         stderr=err, text=True)
    p.err = err
    return p

def expect(p, want, what):
    """The helper's first line is `want`, or exit naming why it did not start and what to
    build (an nl_traffic from an older build has no such mode)."""
    got = p.stdout.readline().strip()
    if got == want:
        return
    try:
        status = p.wait(timeout=2)
    except subprocess.TimeoutExpired:
        status = "still running"
    p.err.seek(0)
    why = " ".join(p.err.read().split())[:300] or "no message"
    sys.exit(f"{what} did not start (said {got!r}, exit {status}: {why}); rebuild the helper with "
             f"`cargo build --release --bins --examples` and run as root")

def inet_pair(host, inet):
    """Namespaces `host` (198.51.100.1/24) and `inet` (198.51.100.2/24) linked by a veth,
    loopback up, ephemeral ports 30000-65000 on both sides."""
    for ns in (host, inet):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    sh("ip", "-n", host, "link", "add", "hi", "type", "veth", "peer", "name", "ih", "netns", inet)
    sh("ip", "-n", host, "addr", "add", "198.51.100.1/24", "dev", "hi")
    sh("ip", "-n", inet, "addr", "add", "198.51.100.2/24", "dev", "ih")
    sh("ip", "-n", host, "link", "set", "hi", "up")
    sh("ip", "-n", inet, "link", "set", "ih", "up")
    for ns in (host, inet):
        sh(*ns_exec(ns, "sysctl", "-qw", "net.ipv4.ip_local_port_range=30000 65000"))

def hold_flows(n, nprocs, host, inet, traffic, procs):
    """N established TCP flows between `host` (198.51.100.1) and `inet` (198.51.100.2), held
    by `nprocs` processes: half outgoing (a sink per group in the internet namespace, a
    holder in the host), half incoming (a sink per group in the host, a holder in the
    internet). The processes go into `procs`; returns once every holder is ready."""
    groups = max(1, nprocs // 2)
    per = [n // 2 // groups + (1 if i < (n // 2) % groups else 0) for i in range(groups)]
    for side, (srv_ns, cli_ns, dst) in enumerate([(inet, host, "198.51.100.2"),
                                                  (host, inet, "198.51.100.1")]):
        for g, count in enumerate(per):
            if count == 0:
                continue
            port = 20000 + side * 5000 + g
            s = spawn(ns_exec(srv_ns, traffic, "sink", "tcp", f"0.0.0.0:{port}"))
            procs.append(s)
            expect(s, "listening", f"nl_traffic sink on port {port}")
            c = spawn(ns_exec(cli_ns, traffic, "hold", "tcp", f"{dst}:{port}", str(count)), stdin=True)
            procs.append(c)
    for p in procs:
        if p.stdin is not None:
            expect(p, "ready", "nl_traffic hold")

def run_one(n, a, binp, traffic):
    tag = f"{os.getpid()}x{n}"
    host, inet = "nlbh" + tag, "nlbi" + tag
    procs = []
    try:
        inet_pair(host, inet)
        db = os.path.join(tempfile.mkdtemp(), "bench.db")
        nl = ns_exec(host, binp, "--db", db, "-q", "snapshot")
        sh(*nl)  # setup: tracking + accounting, before any flow exists
        hold_flows(n, a.procs, host, inet, traffic, procs)
        for _ in range(a.idle):
            procs.append(spawn(ns_exec(host, "sh", "-c", "exec 3</dev/null 4</dev/null 5</dev/null; exec sleep 3600")))
        time.sleep(1)
        # First sighting of every flow. The holders of the flows are root's processes, and
        # root is a delegating uid (sshd's): each flow is held back (every holder looked up
        # at each pass) until delegate_grace has passed, then settled as root's own. Later
        # passes are steady state.
        first, first_stages, held = timed_pass(host, binp, db)
        time.sleep(a.grace + 1)
        sh(*nl)
        if a.hold:
            # Keep the scene up for profiling single passes; remove the file to tear it down.
            print(f"scene up: ip netns exec {host} {binp} --db {db} snapshot; rm {a.hold} to end",
                  flush=True)
            open(a.hold, "w").close()
            while os.path.exists(a.hold):
                time.sleep(1)
            return 0, None, None, 0, ""
        extra = (f"  first sighting: {first:.0f} ms ({held} flows of root's held back, every "
                 f"holder looked up): {first_stages}")
        flows = int(subprocess.run(ns_exec(host, "conntrack", "-C"), capture_output=True, text=True).stdout)
        cmds = {
            "netledger": nl,
            "ss -tanp": ns_exec(host, "ss", "-tanp"),
            "conntrack -L": ns_exec(host, "conntrack", "-L", "-o", "extended"),
            "ss -tuan": ns_exec(host, "ss", "-tuan"),
            "cat 4 tables": ns_exec(host, "cat", "/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"),
        }
        times = {k: [] for k in cmds}
        for _ in range(a.rounds):
            for k, c in cmds.items():
                t = time.perf_counter()
                subprocess.run(c, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[k].append(time.perf_counter() - t)
        rss = subprocess.run(ns_exec(host, "/usr/bin/time", "-f", "%M", binp, "--db", db, "-q", "snapshot"),
                             capture_output=True, text=True).stderr.strip().splitlines()[-1]
        stages = subprocess.run(ns_exec(host, "env", "NETLEDGER_LOG=info", binp, "--db", db, "snapshot"),
                                capture_output=True, text=True).stderr
        stages = next((l[l.index("pass stages: ") + 13:] for l in stages.splitlines() if "pass stages" in l), "?")
        stages += "\n" + extra
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        rng = {k: (min(v) * 1000, max(v) * 1000) for k, v in times.items()}
        if a.ssh:
            stages += "\n" + ssh_sessions(a, host, inet, binp, db, traffic, procs)
        return flows, med, rng, int(rss) / 1024, stages
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()
        for ns in (host, inet):
            subprocess.run(["ip", "netns", "del", ns])

def timed_pass(host, binp, db):
    t = time.perf_counter()
    err = subprocess.run(ns_exec(host, "env", "NETLEDGER_LOG=info", binp, "--db", db, "snapshot"),
                         capture_output=True, text=True, check=True).stderr
    took = (time.perf_counter() - t) * 1000
    stages = next((l[l.index("pass stages: ") + 13:] for l in err.splitlines() if "pass stages" in l), "?")
    held = next((l.split("flows=")[1] for l in err.splitlines() if "held back" in l), "0")
    return took, stages, held

def ssh_sessions(a, host, inet, binp, db, traffic, procs):
    s = spawn(ns_exec(host, traffic, "sshlike", "tcp", "0.0.0.0:2222", str(a.ssh_uid)))
    procs.append(s)
    expect(s, "listening", "nl_traffic sshlike")
    c = spawn(ns_exec(inet, traffic, "hold", "tcp", "198.51.100.1:2222", str(a.ssh)), stdin=True)
    procs.append(c)
    expect(c, "ready", "nl_traffic sshlike client")
    # Every child has switched to its uid once it holds nothing else.
    time.sleep(1)
    first, first_stages, held = timed_pass(host, binp, db)
    runs = [timed_pass(host, binp, db) for _ in range(a.rounds)]
    med = statistics.median(r[0] for r in runs)
    return (f"  + {a.ssh} SSH-like sessions (holders: root and uid {a.ssh_uid}): the pass that "
            f"first sees them {first:.0f} ms ({held} held back): {first_stages}\n"
            f"    then {a.rounds} passes: median {med:.0f} ms ({min(r[0] for r in runs):.0f}-"
            f"{max(r[0] for r in runs):.0f}), {runs[-1][2]} held back; the last: {runs[-1][1]}")

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", default="20000", help="comma-separated N (established TCP flows)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--procs", type=int, default=500)
    ap.add_argument("--idle", type=int, default=2000)
    ap.add_argument("--bin", default="target/release/netledger")
    ap.add_argument("--traffic", default="target/release/examples/nl_traffic")
    ap.add_argument("--grace", type=int, default=10, help="delegate_grace in effect, seconds")
    ap.add_argument("--ssh", type=int, default=0, help="SSH-like sessions added beside the flows")
    ap.add_argument("--ssh-uid", type=int, default=65534, help="uid of the sessions' user processes")
    ap.add_argument("--hold", metavar="FILE", help="after setup, keep the scene up until FILE is removed")
    a = ap.parse_args()
    binp, traffic = os.path.abspath(a.bin), os.path.abspath(a.traffic)
    for p in (binp, traffic):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `cargo build --release --bins --examples` first")
    print(f"{a.rounds} rounds, alternating; {a.procs} processes holding the flows, {a.idle} idle ones; times in ms, median (min-max)")
    print("| N | flows | netledger | ss -tanp | conntrack -L | ss -tuan | cat 4 tables | nl/(ss+ct) | nl/(cat+ct) | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    details = []
    for n in [int(x) for x in a.flows.split(",")]:
        flows, med, rng, rss, stages = run_one(n, a, binp, traffic)
        if a.hold:
            continue
        cell = lambda k: f"{med[k]:.0f} ({rng[k][0]:.0f}-{rng[k][1]:.0f})"
        r1 = med["netledger"] / (med["ss -tanp"] + med["conntrack -L"])
        r2 = med["netledger"] / (med["cat 4 tables"] + med["conntrack -L"])
        print(f"| {n} | {flows} | {cell('netledger')} | {cell('ss -tanp')} | {cell('conntrack -L')} | "
              f"{cell('ss -tuan')} | {cell('cat 4 tables')} | {r1:.2f} | {r2:.2f} | {rss:.1f} MiB |", flush=True)
        details.append(f"N={n}: {stages}")
    print()
    print("netledger pass stages (one steady-state pass, -v):")
    for d in details:
        print("  " + d)

if __name__ == "__main__":
    main()
