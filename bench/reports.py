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

Prints a Markdown table: question, netledger (best of --rounds, wall time, and that run's
CPU time), sqlite3 over the raw rows, ratio, and netledger's peak RSS. Then (issue 26) the same kinds of question over --random
windows drawn across the year with edges anywhere (a minute's resolution), from a seed that
is printed (--seed repeats a run): per kind, the median and the worst time, the window of
the worst, and the largest peak RSS. sqlite3 answers the fixed questions only (it takes
seconds to minutes a question).
"""
import argparse, os, random, statistics, subprocess, sys, time

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
        # Issue 26: edges anywhere, the hourly tier by key, streams.
        ("top, 7 days, edges inside hours",
         ["top", "--since", "2026-12-20T10:17", "--until", "2026-12-27T13:43"],
         by_user.format(s=epoch("2026-12-20T10:17"), u=epoch("2026-12-27T13:43"))),
        ("report --period hour, 3 days, edges inside hours",
         ["report", "--period", "hour", "--since", "2026-12-20T10:17", "--until", "2026-12-23T13:43"],
         by_period.format(fmt="%Y-%m-%d %H", s=epoch("2026-12-20T10:17"), u=epoch("2026-12-23T13:43"))),
        ("report --period day, February to December",
         ["report", "--period", "day", "--since", "2026-02-01", "--until", END],
         by_period.format(fmt="%Y-%m-%d", s=epoch("2026-02-01"), u=e)),
        # The same as a table (not --json): its columns are aligned over all rows.
        ("report --period day, February to December, as a table",
         ["report", "--period", "day", "--since", "2026-02-01", "--until", END],
         by_period.format(fmt="%Y-%m-%d", s=epoch("2026-02-01"), u=e)),
        ("top --by port, 30 days", ["top", "--by", "port", "--since", "2026-12-02", "--until", END],
         by_key.format(key="protocol, port", s=epoch("2026-12-02"), u=e)),
        ("top --by remote, 92 days", ["top", "--by", "remote", "--since", "2026-10-01", "--until", END],
         by_key.format(key="remote_addr", s=epoch("2026-10-01"), u=e)),
        ("export, one hour", ["export", "--since", "2026-12-31T12:00", "--until", "2026-12-31T13:00"],
         "SELECT * FROM usage_all WHERE ts >= {} AND ts < {}".format(
             epoch("2026-12-31T12:00"), epoch("2026-12-31T13:00"))),
        ("export, one day", ["export", "--since", DAY, "--until", END],
         "SELECT * FROM usage_all WHERE ts >= {} AND ts < {}".format(d, e)),
        ("export, 30 days", ["export", "--since", "2026-12-02", "--until", END],
         "SELECT * FROM usage_all WHERE ts >= {} AND ts < {}".format(epoch("2026-12-02"), e)),
        ("log --json, one day", ["log", "--json", "--since", DAY, "--until", END],
         "SELECT count(*), sum(length(rec)) FROM connection_log WHERE rec >= X'{}' AND rec < X'{}'"
         .format(log_key(d), log_key(e))),
        ("summary, 6 days back", ["summary", "--date", "2026-12-25"],
         "SELECT count(*), sum(length(rec)) FROM connection_log WHERE rec >= X'{}' AND rec < X'{}'"
         .format(log_key(epoch("2026-12-25")), log_key(epoch("2026-12-26")))),
        ("summary, a day with no connections (June)", ["summary", "--date", "2026-06-15"],
         "SELECT count(*), sum(length(rec)) FROM connection_log WHERE rec >= X'{}' AND rec < X'{}'"
         .format(log_key(epoch("2026-06-15")), log_key(epoch("2026-06-16")))),
        # Quotas (issue 26): the billing cycle of the last simulated day, judged on the
        # config file written by quota_config(); metrics: the all-time counters.
        ("quota, mid-December", ["quota", "--now", "2026-12-31T12:00:00Z", "--json"],
         by_user.format(s=epoch("2026-12-01"), u=epoch("2026-12-31T12:00"))),
        ("check, mid-December", ["check", "--now", "2026-12-31T12:00:00Z"],
         by_user.format(s=epoch("2026-12-01"), u=epoch("2026-12-31T12:00"))),
        ("check --estimate, mid-December",
         ["check", "--now", "2026-12-31T12:00:00Z", "--estimate"],
         by_user.format(s=epoch("2026-12-01"), u=epoch("2026-12-31T12:00"))),
        ("metrics", ["metrics"], by_user.format(s=0, u=e)),
        ("summary of the busiest day", ["summary", "--date", DAY],
         # The log is one packed key per connection, sorted by end time (5 bytes, ms
         # since 2024-01-01): sqlite3 can only count the day's key range.
         "SELECT count(*), sum(length(rec)) FROM connection_log WHERE rec >= X'{}' AND rec < X'{}'"
         .format(log_key(d), log_key(e))),
    ]

# `check` exits 1 (WARNING) or 2 (CRITICAL) as a monitoring plugin; 3 (UNKNOWN) and any
# other command's non-zero exit are failures.
PLUGIN_OK = (0, 1, 2)

def quota_config(db):
    """A configuration file beside the database giving every user 100 GiB a cycle."""
    path = db + ".bench.toml"
    with open(path, "w") as f:
        f.write('[quota]\ndefault = "100GiB"\n')
    return path

def command(args, cli, window=(), name=""):
    """The netledger command line of a question (JSON where the command has it, unless the
    question's name says it is asked as a table)."""
    nl = [args.bin, "--db", args.db, "--config", quota_config(args.db), *cli, *window,
          "--utc"]
    # "local time ZONE" in the name: asked in that zone, as a user there would (windows and
    # periods in local time), without --utc.
    if "local time " in name:
        zone = name.split("local time ")[1].split()[0]
        nl = ["env", f"TZ={zone}", *nl[:-1]]
    table = "as a table" in name
    if cli[0] not in ("export", "check", "metrics", "quota") and "--json" not in cli \
            and not table:
        nl.append("--json")
    if cli[0] == "metrics":
        nl.remove("--utc")
    return nl

def timed(cmd):
    """Seconds, peak RSS (KiB) and CPU seconds (user + system: on a shared machine the wall
    time waits for the CPU too, the CPU time is the steadier figure) of one run; output
    discarded, failure fatal."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.perf_counter() - t0
    err = p.stderr.read().decode()
    p.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0 and not (code in PLUGIN_OK and "check" in cmd):
        sys.exit(f"{' '.join(cmd)} failed ({status}): {err}")
    return secs, ru.ru_maxrss, ru.ru_utime + ru.ru_stime

# Kinds of question asked over random windows: (name, arguments before the window, the
# longest window in days).
RANDOM_KINDS = [
    ("top", ["top"], 120),
    ("top --by remote", ["top", "--by", "remote"], 120),
    ("top --by port", ["top", "--by", "port"], 120),
    ("top --by program", ["top", "--by", "program"], 120),
    ("top --by user,remote,port", ["top", "--by", "user,remote,port"], 120),
    ("report --period hour", ["report", "--period", "hour"], 7),
    ("report --period day", ["report", "--period", "day"], 365),
    ("report --period month", ["report", "--period", "month"], 365),
    ("export (to /dev/null)", ["export"], 1),
    ("log --json", ["log", "--json"], 1),
    # Last, so that the windows of the kinds above stay those of a seed before it.
    ("report --period day, as a table", ["report", "--period", "day"], 365),
    # In local time (the default of a user without --utc): days that two local days share
    # (a whole-hour zone, and one of half hours).
    ("report --period day, local time America/New_York", ["report", "--period", "day"], 365),
    ("report --period day, local time Asia/Kolkata", ["report", "--period", "day"], 365),
    ("report --period month, local time Asia/Tokyo", ["report", "--period", "month"], 365),
    # A zone of quarter hours, and weeks of half hours (after the kinds above, as they are).
    ("report --period day, local time Asia/Kathmandu", ["report", "--period", "day"], 365),
    ("report --period week, local time Asia/Kolkata", ["report", "--period", "week"], 365),
]

def stamp(secs):
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(secs))

def random_windows(args):
    """Each kind over --random windows drawn across the year, edges on any minute."""
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    y, e = epoch(YEAR), epoch(END)
    print(f"\nRandom windows: {args.random} per kind, seed {seed} "
          f"(`--seed {seed}` repeats them), best of {args.rounds} each\n")
    print("| question | median | worst | worst window | worst CPU | largest peak RSS |")
    print("| --- | ---: | ---: | --- | ---: | ---: |")
    for name, cli, longest in RANDOM_KINDS:
        if args.only and args.only not in name:
            continue
        times, worst, rss_max, cpu_max = [], None, 0, 0.0
        for _ in range(args.random):
            length = rng.randrange(60, longest * 86400 + 1) // 60 * 60
            since = y + rng.randrange(0, e - y - length) // 60 * 60
            window = ["--since", stamp(since), "--until", stamp(since + length)]
            nl = command(args, cli, window, name)
            best, rss, cpu = min(timed(nl) for _ in range(args.rounds))
            times.append(best)
            rss_max = max(rss_max, rss)
            cpu_max = max(cpu_max, cpu)
            if worst is None or best > worst[0]:
                worst = (best, " ".join(window))
        print(f"| `{name}` | {statistics.median(times):.3f} s | {worst[0]:.3f} s | "
              f"`{worst[1]}` | {cpu_max:.3f} s | {rss_max / 1024:.0f} MiB |", flush=True)

def main():
    a = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    a.add_argument("--db", default="/var/tmp/netledger-bench/year.db")
    a.add_argument("--rounds", type=int, default=3)
    a.add_argument("--rebuild", action="store_true")
    a.add_argument("--bin", default="target/release/netledger")
    a.add_argument("--example", default="target/release/examples/retention_size")
    a.add_argument("--only", help="run only the questions whose name contains this")
    a.add_argument("--random", type=int, default=20,
                   help="random windows per kind of question (0: none)")
    a.add_argument("--seed", type=int, help="seed of the random windows (default: drawn)")
    a.add_argument("--no-sqlite", action="store_true",
                   help="leave out sqlite3's answers to the fixed questions")
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
    print("| question | netledger | its CPU | sqlite3 over the raw rows | ratio | netledger peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, cli, sql in questions():
        if args.only and args.only not in name:
            continue
        nl = command(args, cli, name=name)
        best, rss, cpu = min(timed(nl) for _ in range(args.rounds))
        if args.no_sqlite:
            print(f"| `{name}` | {best:.3f} s | {cpu:.3f} s | | | {rss / 1024:.0f} MiB |",
                  flush=True)
            continue
        floor = min(timed(["sqlite3", "-readonly", args.db, sql])[0] for _ in range(args.rounds))
        print(f"| `{name}` | {best:.3f} s | {cpu:.3f} s | {floor:.3f} s | {best / floor:.2f} | "
              f"{rss / 1024:.0f} MiB |", flush=True)
    if args.random > 0:
        random_windows(args)

if __name__ == "__main__":
    main()
