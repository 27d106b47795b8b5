#!/usr/bin/env python3
"""How many short-lived processes the daemon names (issue 28): --processes processes (30 by
default), each one `nl_burst` making ONE connection to an "internet" host, moving a few
kilobytes and exiting — within about 50 ms of its start (the time each took is printed) —
run one after another as uid 65534 in a "host" namespace, --rounds times. After the last the
daemon stops and `netledger log --json --port PORT` gives each connection's program: the
share named `nl_burst` is printed, per round and in all, with the worst round, and the
daemon's CPU time over the rounds and idle (--idle seconds before them). A program name is the only per-process fact such a process leaves when
the daemon comes to look; its cgroup (issue 28) outlives it.

Usage (root):
    cargo build --release --bins --examples
    python3 bench/short_names.py --bin target/release/netledger
    cargo build --bins --examples
    python3 bench/short_names.py --bin target/debug/netledger --traffic target/debug/examples
Every namespace and process it starts is removed at the end.
"""
import argparse, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import sh, ns_exec, spawn, expect, inet_pair  # noqa: E402
from live import cpu_ticks  # noqa: E402
from server_names import start_daemon, logged  # noqa: E402

PORT = 9200


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/netledger")
    ap.add_argument("--traffic", default="target/release/examples", help="directory of nl_traffic and nl_burst")
    ap.add_argument("--processes", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds the daemon's CPU is measured idle, before the rounds")
    a = ap.parse_args()
    binp = os.path.abspath(a.bin)
    traffic = os.path.join(os.path.abspath(a.traffic), "nl_traffic")
    burst = os.path.join(os.path.abspath(a.traffic), "nl_burst")
    for p in (binp, traffic, burst):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: build it first (see the usage above)")
    tag = str(os.getpid())
    host, inet = "nlshh" + tag, "nlshi" + tag
    procs, daemon = [], None
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    db, log = os.path.join(tmp, "short.db"), os.path.join(tmp, "daemon.log")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    try:
        inet_pair(host, inet)
        sh(*ns_exec(host, binp, "-q", "setup"))
        sh(*ns_exec(host, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"))
        sink = spawn(ns_exec(inet, traffic, "server", "tcp", f"198.51.100.2:{PORT}"))
        procs.append(sink)
        expect(sink, "listening", "the internet sink")
        daemon = start_daemon(host, binp, db, log)
        # Idle: no traffic of the bench's (the host's other processes start and exit as
        # they do: the process events the daemon reads are every process's).
        i0 = cpu_ticks(daemon.pid)
        time.sleep(a.idle)
        idle = cpu_ticks(daemon.pid) - i0
        t0 = cpu_ticks(daemon.pid)
        lives, port, ranges = [], 41000, []
        for r in range(a.rounds):
            first = port
            for _ in range(a.processes):
                start = time.monotonic()
                subprocess.run(ns_exec(host, *as_nobody, burst, f"198.51.100.2:{PORT}", "1", "1000", "4000",
                                       "--bind-from", str(port)),
                               check=True, stdout=subprocess.DEVNULL)
                lives.append(time.monotonic() - start)
                port += 1
            ranges.append((first, port))
            time.sleep(1)
        t1 = cpu_ticks(daemon.pid)
        want = a.rounds * a.processes
        rows = logged(host, binp, db, PORT, want)
        daemon.terminate()
        daemon.wait()
        closing = open(log).read().strip().splitlines()[-1]
        named = lambda rs: sum(1 for x in rs if x.get("program") == "nl_burst")  # noqa: E731
        lives.sort()
        hz = os.sysconf("SC_CLK_TCK")
        print(f"{os.path.relpath(binp)}; {len(rows)} of {want} connections logged")
        print(f"process life (spawn to exit, setpriv and ip netns exec included): "
              f"median {1000 * lives[len(lives) // 2]:.0f} ms, max {1000 * lives[-1]:.0f} ms")
        per_round = []
        for first, last in ranges:
            rs = [x for x in rows if first <= sport(x) < last]
            per_round.append((named(rs), len(rs)))
        print("named per round: " + ", ".join(f"{n}/{t}" for n, t in per_round))
        worst = min((n / max(t, 1) for n, t in per_round), default=0.0)
        print(f"named: {named(rows)}/{len(rows)} ({100.0 * named(rows) / max(len(rows), 1):.1f} %); "
              f"worst round {100.0 * worst:.1f} %")
        print(f"daemon CPU over the rounds: {(t1 - t0) / hz:.2f} s; idle: {idle / hz:.2f} s over {a.idle:.0f} s")
        print(f"closing line: {closing}")
    finally:
        if daemon and daemon.poll() is None:
            daemon.kill()
        for p in procs:
            p.kill()
            p.wait()
        for ns in (host, inet):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def sport(row):
    """The local (source) port of a logged connection: its original direction's `sport`."""
    return int((row.get("orig") or {}).get("sport", -1))


if __name__ == "__main__":
    main()
