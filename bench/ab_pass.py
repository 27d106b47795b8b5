#!/usr/bin/env python3
"""Two netledger binaries' steady passes on one scene, alternating: the comparison that a new
scene per run (bench/scale.py) is too noisy for.

Start a scene with `python3 bench/scale.py --flows 20000 --bin A --hold FLAG --traffic T` and
give its namespace (printed as `ip netns exec NS …`):

    python3 bench/ab_pass.py --ns NS --a NEW_BINARY --b BASE_BINARY --rounds 21

Each binary gets a database of its own (a first pass and a steady one before the timing),
then `snapshot` runs ROUNDS times each, alternating. Prints the median wall and CPU time of
each and their ratios. Remove FLAG to end the scene."""
import argparse
import resource
import statistics
import subprocess
import tempfile
import time


def snapshot(ns, binary, db):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(["ip", "netns", "exec", ns, binary, "--db", db, "snapshot"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - t
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", required=True)
    ap.add_argument("--a", required=True, help="the binary measured")
    ap.add_argument("--b", required=True, help="the base")
    ap.add_argument("--rounds", type=int, default=21)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        bins = {"a": (a.a, f"{d}/a.db"), "b": (a.b, f"{d}/b.db")}
        for binary, db in bins.values():
            snapshot(a.ns, binary, db)
            snapshot(a.ns, binary, db)
        got = {k: [] for k in bins}
        for _ in range(a.rounds):
            for k, (binary, db) in bins.items():
                got[k].append(snapshot(a.ns, binary, db))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in got.items()}
    for k, (w, c) in med.items():
        print(f"{bins[k][0]}: wall median {w * 1000:.0f} ms, CPU median {c * 1000:.0f} ms")
    print(f"a / b: wall {med['a'][0] / med['b'][0]:.3f}, CPU {med['a'][1] / med['b'][1]:.3f}")


if __name__ == "__main__":
    main()
