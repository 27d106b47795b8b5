#!/usr/bin/env python3
"""netledger's report benchmark: the questions an admin asks of a busy host's year, timed
side by side with the same questions asked of the raw rows with sqlite3 (the floor without
pre-computed totals).

The database is the simulated year of `examples/retention_size.rs` (200 users, 5,000 live
flows a minute, 2026-01-01 to 2027-01-01, default retention, with the connection log). It is
built once (about 5 minutes) and cached at --db; --rebuild makes it again. Windows are
given in UTC against the simulated end (2027-01-01T00:00Z), not against today.

Usage (release build first):
    cargo build --release --bins --examples
    python3 bench/reports.py [--db /var/tmp/netledger-bench/year.db] [--rounds 3] [--rebuild]

Prints a Markdown table: question, netledger (best of --rounds), sqlite3 over the raw rows,
ratio, and netledger's peak RSS.
"""
import argparse, os, subprocess, sys, time

END = "2027-01-01"
DAY = "2026-12-31"      # the last, busiest simulated day (minute passes, connection log)
WEEK = "2026-12-25"
YEAR = "2026-01-01"

def epoch(date):
    return int(subprocess.run(["date", "-u", "-d", date, "+%s"], capture_output=True,
                              text=True, check=True).stdout)

def log_key(secs):
    """The connection log's 5-byte end-time prefix (migrations/0003_connections.sql)."""
    return ((secs - epoch("2024-01-01")) * 1000).to_bytes(5, "big").hex()

def questions():
    e, d, w, y = epoch(END), epoch(DAY), epoch(WEEK), epoch(YEAR)
    by_user = ("SELECT uid, kind, reason, sum(rx_bytes), sum(tx_bytes), sum(rx_packets), "
               "sum(tx_packets) FROM usage_all WHERE ts >= {s} AND ts < {u} "
               "GROUP BY uid, kind, reason ORDER BY sum(rx_bytes + tx_bytes) DESC")
    by_period = ("SELECT strftime('{fmt}', ts, 'unixepoch') AS p, uid, sum(rx_bytes), "
                 "sum(tx_bytes) FROM usage_all WHERE kind <> 'excluded' AND ts >= {s} "
                 "AND ts < {u} GROUP BY p, uid ORDER BY p")
    by_key = ("SELECT uid, {key}, sum(rx_bytes), sum(tx_bytes) FROM usage_all WHERE ts >= {s} "
              "AND ts < {u} GROUP BY uid, {key} ORDER BY sum(rx_bytes + tx_bytes) DESC LIMIT 20")
    return [
        ("top, last 24 h", ["top", "--since", DAY, "--until", END],
         by_user.format(s=d, u=e)),
        ("top, 7 days", ["top", "--since", WEEK, "--until", END],
         by_user.format(s=w, u=e)),
        ("top, a year", ["top", "--since", YEAR, "--until", END],
         by_user.format(s=y, u=e)),
        ("report --period hour, 24 h", ["report", "--period", "hour", "--since", DAY, "--until", END],
         by_period.format(fmt="%Y-%m-%d %H", s=d, u=e)),
        ("report --period day, 7 days", ["report", "--period", "day", "--since", WEEK, "--until", END],
         by_period.format(fmt="%Y-%m-%d", s=w, u=e)),
        ("report --period month, a year", ["report", "--period", "month", "--since", YEAR, "--until", END],
         by_period.format(fmt="%Y-%m", s=y, u=e)),
        ("top --by remote, 7 days", ["top", "--by", "remote", "--since", WEEK, "--until", END],
         by_key.format(key="remote_addr", s=w, u=e)),
        ("top --by program, 7 days", ["top", "--by", "program", "--since", WEEK, "--until", END],
         by_key.format(key="program", s=w, u=e)),
        ("top --by port, 7 days", ["top", "--by", "port", "--since", WEEK, "--until", END],
         by_key.format(key="protocol, port", s=w, u=e)),
        ("summary of the busiest day", ["summary", "--date", DAY],
         # The log is one packed key per connection, sorted by end time (5 bytes, ms
         # since 2024-01-01): sqlite3 can only count the day's key range.
         "SELECT count(*), sum(length(rec)) FROM connection_log WHERE rec >= X'{}' AND rec < X'{}'"
         .format(log_key(d), log_key(e))),
    ]

def timed(cmd):
    """Seconds and peak RSS (KiB) of one run; output discarded, failure fatal."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    err = p.stderr.read().decode()
    p.stderr.close()
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed ({status}): {err}")
    return secs, ru.ru_maxrss

def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--db", default="/var/tmp/netledger-bench/year.db")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--rebuild", action="store_true")
    a.add_argument("--bin", default="target/release/netledger")
    a.add_argument("--example", default="target/release/examples/retention_size")
    a.add_argument("--only", help="run only the questions whose name contains this")
    args = a.parse_args()
    for p in (args.bin, args.example):
        if not os.path.exists(p):
            sys.exit(f"{p} missing: run `cargo build --release --bins --examples` first")
    if args.rebuild and os.path.exists(args.db):
        for suffix in ("", "-wal", "-shm", ".lock"):
            if os.path.exists(args.db + suffix):
                os.remove(args.db + suffix)
    if not os.path.exists(args.db):
        os.makedirs(os.path.dirname(args.db), exist_ok=True)
        print(f"building the simulated year at {args.db} (about 5 minutes) ...", file=sys.stderr)
        subprocess.run([args.example, "--db", args.db], check=True, stdout=sys.stderr)
    size = os.path.getsize(args.db) / 2**20
    print(f"database: {args.db}, {size:.1f} MiB\n")
    print("| question | netledger | sqlite3 over the raw rows | ratio | netledger peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, cli, sql in questions():
        if args.only and args.only not in name:
            continue
        nl = [args.bin, "--db", args.db, *cli, "--utc", "--json"]
        best, rss = min(timed(nl) for _ in range(args.rounds))
        floor = min(timed(["sqlite3", "-readonly", args.db, sql])[0] for _ in range(args.rounds))
        print(f"| `{name}` | {best:.3f} s | {floor:.3f} s | {best / floor:.2f} | {rss / 1024:.0f} MiB |",
              flush=True)

if __name__ == "__main__":
    main()
