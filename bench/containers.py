#!/usr/bin/env python3
"""What containers cost a pass (issue 14): 20,000 host flows as in bench/scale.py, then
--containers network namespaces wired to the host by veth on a bridge (masqueraded out of
the host, as docker's default network is), each holding --per established TCP flows to the
internet namespace (50 x 40 = 2,000 container flows by default).

It times, --rounds times each:
  base      a steady-state `netledger snapshot` before any container flow exists;
  first     the pass that first sees the container flows (namespaces listed, wiring asked,
            each container's sockets looked up, owners' programs read), with CAP_SYS_ADMIN
            (a sock_diag socket opened inside each container through setns) and without it
            (`setpriv --bounding-set=-sys_admin`: /proc/PID/net/* read instead), each time
            on a copy of the state saved before the containers' flows began;
  steady    steady-state passes with the container flows (their owners kept).
and prints medians (min-max) and the ratios to `base`. Everything it started is removed.

Usage (root; release build and the nl_traffic example first):
    cargo build --release --bins --examples
    python3 bench/containers.py
"""
import argparse, os, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import sh, ns_exec, spawn, expect, hold_flows, inet_pair  # noqa: E402


def timed(cmd):
    t = time.perf_counter()
    err = subprocess.run(cmd, capture_output=True, text=True, check=True).stderr
    if os.environ.get("NETLEDGER_LOG"):
        sys.stderr.write("".join(l + "\n" for l in err.splitlines() if "contain" in l))
    took = (time.perf_counter() - t) * 1000
    stages = next((l[l.index("pass stages: ") + 13:] for l in err.splitlines() if "pass stages" in l), "?")
    return took, stages


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=20000, help="host flows (half out, half in)")
    ap.add_argument("--containers", type=int, default=50)
    ap.add_argument("--per", type=int, default=40, help="flows per container")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--procs", type=int, default=100)
    ap.add_argument("--grace", type=int, default=10, help="delegate_grace in effect, seconds")
    ap.add_argument("--bin", default="target/release/netledger")
    ap.add_argument("--traffic", default="target/release/examples/nl_traffic")
    a = ap.parse_args()
    binp, traffic = os.path.abspath(a.bin), os.path.abspath(a.traffic)
    for p in (binp, traffic):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `cargo build --release --bins --examples` first")
    tag = str(os.getpid())
    host, inet = "nlch" + tag, "nlci" + tag
    cts = [f"nlcc{tag}x{k}" for k in range(a.containers)]
    procs, ct_procs = [], []
    try:
        inet_pair(host, inet)
        for ns in cts:
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", host, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", host, "addr", "add", "172.31.255.254/16", "dev", "br0")
        sh("ip", "-n", host, "link", "set", "br0", "up")
        for k, ct in enumerate(cts):
            sh("ip", "-n", host, "link", "add", f"cb{k}", "type", "veth", "peer", "name", "eth0", "netns", ct)
            sh("ip", "-n", host, "link", "set", f"cb{k}", "master", "br0")
            sh("ip", "-n", host, "link", "set", f"cb{k}", "up")
            sh("ip", "-n", ct, "addr", "add", f"172.31.{k // 250}.{k % 250 + 2}/16", "dev", "eth0")
            sh("ip", "-n", ct, "link", "set", "eth0", "up")
            sh("ip", "-n", ct, "route", "add", "default", "via", "172.31.255.254")
        sh(*ns_exec(host, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        nft = ("table ip nlbench {\n chain post {\n type nat hook postrouting priority srcnat;\n"
               " ip saddr 172.31.0.0/16 oifname \"hi\" masquerade\n }\n}\n")
        subprocess.run(ns_exec(host, "nft", "-f", "-"), input=nft, text=True, check=True)
        db = os.path.join(tempfile.mkdtemp(), "bench.db")
        nl = ns_exec(host, "env", "NETLEDGER_LOG=" + os.environ.get("NETLEDGER_LOG", "info"), binp, "--db", db, "snapshot")
        sh(*ns_exec(host, binp, "--db", db, "-q", "snapshot"))  # setup
        hold_flows(a.flows, a.procs, host, inet, traffic, procs)
        ct_sink = spawn(ns_exec(inet, traffic, "sink", "tcp", "0.0.0.0:19000"))
        procs.append(ct_sink)
        expect(ct_sink, "listening", "nl_traffic sink for the containers")
        time.sleep(1)
        sh(*nl)
        time.sleep(a.grace + 1)
        sh(*nl)
        tools = {
            "conntrack -L": ns_exec(host, "conntrack", "-L", "-o", "extended"),
            "ss -tan": ns_exec(host, "ss", "-tan"),
        }

        def kernel():
            out = {}
            for k, c in tools.items():
                runs = []
                for _ in range(a.rounds):
                    t = time.perf_counter()
                    subprocess.run(c, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    runs.append((time.perf_counter() - t) * 1000)
                out[k] = statistics.median(runs)
            return out

        base = [timed(nl) for _ in range(a.rounds)]
        kernel_base = kernel()

        # The state before any container flow: each first-sight pass below runs on a copy
        # of it, so the container flows are new to it every round (no restarts, no
        # TIME_WAIT piling up between rounds).
        snap = db + ".before"
        sh("sqlite3", db, f".backup {snap}")
        for ct in cts:
            c = spawn(ns_exec(ct, traffic, "hold", "tcp", "198.51.100.2:19000", str(a.per)), stdin=True)
            ct_procs.append(c)
        for c in ct_procs:
            expect(c, "ready", "nl_traffic hold in a container")
        time.sleep(1)

        def first(cmd_for):
            copy = db + ".first"
            sh("sqlite3", snap, f".backup {copy}")
            return timed(cmd_for(copy))

        with_admin = lambda d: ns_exec(host, "env", "NETLEDGER_LOG=info", binp, "--db", d, "snapshot")
        without = lambda d: ns_exec(host, "setpriv", "--bounding-set=-sys_admin", "--inh-caps=-sys_admin",
                                    "env", "NETLEDGER_LOG=info", binp, "--db", d, "snapshot")
        firsts = [first(with_admin) for _ in range(a.rounds)]
        firsts_proc = [first(without) for _ in range(a.rounds)]
        sh(*nl)  # the main state sees them
        steady = [timed(nl) for _ in range(a.rounds)]
        kernel_steady = kernel()
        flows = subprocess.run(ns_exec(host, "conntrack", "-C"), capture_output=True, text=True).stdout.strip()
        placed = subprocess.run(ns_exec(host, binp, "--db", db, "top", "--by", "user", "--since", "1h"),
                                capture_output=True, text=True).stdout
        med = lambda runs: statistics.median(r[0] for r in runs)
        cell = lambda runs: f"{med(runs):.0f} ({min(r[0] for r in runs):.0f}-{max(r[0] for r in runs):.0f})"
        b = med(base)
        print(f"{a.flows} host flows, {a.containers} containers x {a.per} flows ({flows} conntrack "
              f"entries in all); {a.rounds} rounds; ms, median (min-max)")
        print("| pass | time | / base |")
        print("|---|---|---|")
        print(f"| base: steady, no container flows | {cell(base)} | 1.00 |")
        print(f"| steady, with the container flows | {cell(steady)} | {med(steady) / b:.2f} |")
        print(f"| first sight of the container flows, sock_diag in each (CAP_SYS_ADMIN) | {cell(firsts)} | {med(firsts) / b:.2f} |")
        print(f"| first sight, /proc/PID/net (no CAP_SYS_ADMIN) | {cell(firsts_proc)} | {med(firsts_proc) / b:.2f} |")
        print()
        print("The kernel's own reads of the same tables, median ms (what a user would run "
              "instead; they grow with the container flows as the pass's reads do):")
        for k in tools:
            print(f"  {k}: {kernel_base[k]:.0f} without the container flows, "
                  f"{kernel_steady[k]:.0f} with them ({kernel_steady[k] / kernel_base[k]:.2f} x)")
        both = lambda kb: kb["conntrack -L"] + kb["ss -tan"]
        print(f"  pass / (ss -tan + conntrack -L): {b / both(kernel_base):.2f} without, "
              f"{med(steady) / both(kernel_steady):.2f} steady with them, "
              f"{med(firsts) / both(kernel_steady):.2f} first sight with them")
        print()
        print(f"stages: base {base[-1][1]}\n  steady {steady[-1][1]}\n  first {firsts[-1][1]}\n"
              f"  first /proc {firsts_proc[-1][1]}")
        print()
        print(placed)
    finally:
        for p in procs + ct_procs:
            p.kill()
        for p in procs + ct_procs:
            p.wait()
        for ns in [host, inet] + cts:
            subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    main()
