#!/usr/bin/env python3
"""Quick scale measurement: N established TCP flows in a network namespace, then time a
steady-state `netledger snapshot` next to `ss -tanp`, `conntrack -L -o extended` and a plain
`cat` of the four socket tables, alternating, and print medians.

Usage (root): bench/scale.py [--flows 20000] [--rounds 5] [--bin target/release/netledger]
Only documentation addresses (198.51.100.0/24) inside namespaces this script creates are used;
the namespaces are deleted at the end.
"""
import argparse, os, resource, socket, statistics, subprocess, sys, tempfile, time

def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--bin", default="target/release/netledger")
    a = ap.parse_args()
    binp = os.path.abspath(a.bin)
    tag = str(os.getpid())
    host, inet = "nlbh" + tag, "nlbi" + tag
    procs = []
    try:
        for ns in (host, inet):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", host, "link", "add", "hi", "type", "veth", "peer", "name", "ih", "netns", inet)
        sh("ip", "-n", host, "addr", "add", "198.51.100.1/24", "dev", "hi")
        sh("ip", "-n", inet, "addr", "add", "198.51.100.2/24", "dev", "ih")
        sh("ip", "-n", host, "link", "set", "hi", "up")
        sh("ip", "-n", inet, "link", "set", "ih", "up")
        sh("ip", "netns", "exec", host, "sysctl", "-qw", "net.ipv4.ip_local_port_range=10000 65000")
        db = os.path.join(tempfile.mkdtemp(), "bench.db")
        nl = ["ip", "netns", "exec", host, binp, "--db", db, "-q", "snapshot"]
        nlv = ["ip", "netns", "exec", host, "env", "NETLEDGER_LOG=info", binp, "--db", db, "snapshot"]
        sh(*nl)  # setup: tracking + accounting
        # Per group of 5,000 connections (the descriptor limit here is 20,000 a process):
        # a server in the "internet" namespace holding every accepted socket, and a client.
        per = 5000
        for g, i in enumerate(range(0, a.flows, per)):
            n = min(per, a.flows - i)
            port = 10000 + g
            server = subprocess.Popen(["ip", "netns", "exec", inet, sys.executable, "-c", f"""
import socket, resource
resource.setrlimit(resource.RLIMIT_NOFILE, ({n + 500}, {n + 500}))
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(('0.0.0.0', {port})); l.listen(4096); print('ready', flush=True)
keep = []
while True:
    c, _ = l.accept(); c.send(b'x' * 100); keep.append(c)
"""], stdout=subprocess.PIPE, text=True)
            procs.append(server)
            server.stdout.readline()
            c = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c", f"""
import socket, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, ({n + 500}, {n + 500}))
keep = []
for _ in range({n}):
    s = socket.create_connection(('198.51.100.2', {port})); s.recv(100); keep.append(s)
print('ready', flush=True); sys.stdin.read()
"""], stdout=subprocess.PIPE, stdin=subprocess.PIPE, text=True)
            procs.append(c)
            c.stdout.readline()
        sh(*nl)  # first sighting of every flow
        cmds = {
            "netledger snapshot": nl,
            "ss -tanp": ["ip", "netns", "exec", host, "ss", "-tanp"],
            "conntrack -L -o extended": ["ip", "netns", "exec", host, "conntrack", "-L", "-o", "extended"],
            "ss -tuan (sock_diag, no processes)": ["ip", "netns", "exec", host, "ss", "-tuan"],
            "cat /proc/net/{tcp,tcp6,udp,udp6}": ["ip", "netns", "exec", host, "cat", "/proc/net/tcp", "/proc/net/tcp6", "/proc/net/udp", "/proc/net/udp6"],
        }
        times = {k: [] for k in cmds}
        for _ in range(a.rounds):
            for k, c in cmds.items():
                t = time.perf_counter()
                subprocess.run(c, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                times[k].append(time.perf_counter() - t)
        stages = subprocess.run(nlv, capture_output=True, text=True).stderr
        print("".join(l[l.index("pass stages"):] + "\n" for l in stages.splitlines() if "pass stages" in l), end="")
        flows = subprocess.run(["ip", "netns", "exec", host, "conntrack", "-C"], capture_output=True, text=True).stdout.strip()
        print(f"flows in table: {flows}; rounds: {a.rounds}")
        med = {k: statistics.median(v) for k, v in times.items()}
        for k, v in times.items():
            print(f"{k:36s} median {med[k]*1000:8.1f} ms  (min {min(v)*1000:.1f}, max {max(v)*1000:.1f})")
        base = med["ss -tanp"] + med["conntrack -L -o extended"]
        print(f"netledger / (ss -tanp + conntrack -L) = {med['netledger snapshot'] / base:.2f}")
    finally:
        for p in procs:
            p.kill()
        for ns in (host, inet):
            subprocess.run(["ip", "netns", "del", ns])

if __name__ == "__main__":
    main()
