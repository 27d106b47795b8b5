#!/usr/bin/env python3
"""How many of a server's short connections the daemon names (issue 30): a server up all
along (`nl_traffic server tcp`, run as uid 65534 in a "host" namespace) answers --rounds
rounds of --per-round connections from an "internet" namespace, each held a time drawn at
random between 30 and 120 ms (seeded: --seed, printed), four at a time. Before each round a
client of another uid makes one connection (its program walk makes the next walk of every
process wait 250 ms: the case that left connections unnamed). After the last round the
daemon stops and `netledger log --json --port PORT` gives, per connection, its bytes and
program: the share of bytes (and connections) that carry the server's program is printed,
with the daemon's CPU time over the rounds and its namer's work (from its closing line).

Usage (root):
    cargo build --release --bins --examples
    python3 bench/server_names.py --bin target/release/netledger
    cargo build --bins --examples
    python3 bench/server_names.py --bin target/debug/netledger --traffic target/debug/examples
Every namespace and process it starts is removed at the end.
"""
import argparse, json, os, random, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scale import sh, ns_exec, spawn, expect, inet_pair  # noqa: E402
from live import cpu_ticks  # noqa: E402

PORT = 9100

def start_daemon(host, binp, db, log):
    """`netledger run` in namespace `host`, its stderr in `log`; returned after its first pass."""
    daemon = subprocess.Popen(ns_exec(host, binp, "--db", db, "-v", "run", "--interval", "60s"),
                              stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    deadline = time.time() + 30
    while "(run, " not in open(log).read():
        if time.time() > deadline:
            daemon.kill()
            sys.exit("no first pass from the daemon:\n" + open(log).read())
        time.sleep(0.1)
    return daemon


def logged(host, binp, db, port, want, poke=None, limit=60):
    """The connection log's rows for `port` (`log --json`), once `want` are there or after
    `limit` seconds; `poke` runs between tries."""
    deadline = time.time() + limit
    rows = []
    while time.time() < deadline:
        out = subprocess.run(ns_exec(host, binp, "--db", db, "log", "--json", "--since", "1d",
                                     "--port", str(port)), capture_output=True, text=True)
        rows = json.loads(out.stdout or "[]")
        if len(rows) >= want:
            break
        if poke:
            poke()
        time.sleep(0.5)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/netledger")
    ap.add_argument("--traffic", default="target/release/examples", help="directory of nl_traffic and nl_burst")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--per-round", type=int, default=40)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    seed = a.seed if a.seed is not None else random.randrange(1 << 32)
    rng = random.Random(seed)
    binp = os.path.abspath(a.bin)
    traffic = os.path.join(os.path.abspath(a.traffic), "nl_traffic")
    burst = os.path.join(os.path.abspath(a.traffic), "nl_burst")
    for p in (binp, traffic, burst):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: build it first (see the usage above)")
    tag = str(os.getpid())
    host, inet = "nlsnh" + tag, "nlsni" + tag
    procs, daemon = [], None
    tmp = tempfile.mkdtemp()
    os.chmod(tmp, 0o755)
    db, log = os.path.join(tmp, "names.db"), os.path.join(tmp, "daemon.log")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
    as_other = ["setpriv", "--reuid=65533", "--regid=65533", "--clear-groups", "--"]
    try:
        inet_pair(host, inet)
        sh(*ns_exec(host, binp, "-q", "setup"))
        sh(*ns_exec(host, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_time_wait=1"))
        srv = spawn(ns_exec(host, *as_nobody, traffic, "server", "tcp", f"198.51.100.1:{PORT}"))
        procs.append(srv)
        expect(srv, "listening", "the server")
        sink = spawn(ns_exec(inet, traffic, "server", "tcp", "198.51.100.2:9000"))
        procs.append(sink)
        expect(sink, "listening", "the internet sink")
        daemon = start_daemon(host, binp, db, log)
        t0 = cpu_ticks(daemon.pid)
        port = 40000
        for r in range(a.rounds):
            subprocess.run(ns_exec(host, *as_other, burst, "198.51.100.2:9000", "1", "100", "1000"),
                           check=True, stdout=subprocess.DEVNULL)
            groups = []
            per = a.per_round // 4
            for g in range(4):
                hold = rng.randint(30, 120)
                groups.append(spawn(ns_exec(inet, burst, f"198.51.100.1:{PORT}", str(per), "1000", "30000",
                                            "--bind-from", str(port), "--hold-ms", str(hold))))
                port += per
            for p in groups:
                p.wait()
        t1 = cpu_ticks(daemon.pid)
        want = a.rounds * (a.per_round // 4) * 4
        rows = logged(host, binp, db, PORT, want,
                      poke=lambda: subprocess.run(ns_exec(host, "conntrack", "-L"), capture_output=True))
        daemon.terminate()
        daemon.wait()
        closing = open(log).read().strip().splitlines()[-1]
        total = sum(r["orig_bytes"] + r["reply_bytes"] for r in rows)
        named = sum(r["orig_bytes"] + r["reply_bytes"] for r in rows if r.get("program") == "nl_traffic")
        n_named = sum(1 for r in rows if r.get("program") == "nl_traffic")
        hz = os.sysconf("SC_CLK_TCK")
        print(f"seed {seed}; {os.path.relpath(binp)}; {len(rows)} of {want} connections logged")
        print(f"named: {n_named}/{len(rows)} connections, {named}/{total} bytes "
              f"({100.0 * named / max(total, 1):.1f} %)")
        print(f"daemon CPU over the rounds: {(t1 - t0) / hz:.2f} s")
        print(f"closing line: {closing}")
    finally:
        if daemon and daemon.poll() is None:
            daemon.kill()
        for p in procs:
            p.kill()
            p.wait()
        for ns in (host, inet):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)

if __name__ == "__main__":
    main()
