# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_netledger_global_optspecs
    string join \n db= config= v/verbose q/quiet h/help V/version
end

function __fish_netledger_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_netledger_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_netledger_using_subcommand
    set -l cmd (__fish_netledger_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c netledger -n "__fish_netledger_needs_command" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_needs_command" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_needs_command" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_needs_command" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_needs_command" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_needs_command" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "snapshot" -d 'Run one accounting pass, store it, and exit (made for a systemd timer)'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "setup" -d 'Enable conntrack accounting and make conntrack track in this network namespace (idempotent): sets net.netfilter.nf_conntrack_acct=1 and installs the nftables table `inet netledger`. `--undo` puts the namespace back as it was'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "top" -d 'Show the top talkers: per user, and per program, remote, port, service, container, cgroup, systemd unit or Slurm job'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "job" -d 'What one Slurm job moved, in and out, per user and remote (for a prolog or epilog script, or like `sacct`): the traffic of the sockets its processes created, found by their cgroup (`…slurmstepd.scope/job_ID/…`). Exit 1 when the database knows no socket of the job; a known job with no traffic in the period prints an empty table'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "report" -d 'Usage per hour, day, week or month and per user, with bars (like vnStat)'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "export" -d 'Export stored usage rows for loading into another system'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "config" -d 'Print the configuration in effect (defaults < file < NETLEDGER_* < flags)'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "run" -d 'Run as a daemon: a pass every interval for long-lived flows, and conntrack events so that short-lived flows are charged exactly and every finished connection is logged. SIGTERM/SIGINT: stop cleanly; SIGHUP: reload the configuration file'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "connections" -d 'The connections open right now: user, program, direction, addresses and the counters so far (like ipclog\'s `ipc`). Needs CAP_NET_ADMIN'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "live" -d 'Who is using the link right now: per-user rates, refreshed every second, in a full-screen view (one refresh as a table or JSON lines without a terminal). Writes nothing; needs CAP_NET_ADMIN (and CAP_SYS_PTRACE for program names)'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "log" -d 'Finished connections from the daemon\'s connection log'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "summary" -d 'A day\'s connections per user, protocol, service and remote (like constat): count, still open, average and maximum duration'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "metrics" -d 'Print the Prometheus metrics (text format 0.0.4): all-time traffic per user and per unattributed reason, excluded traffic, and the last pass\'s health. Personal data: who used how much'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "check" -d 'A monitoring plugin (Nagios/Icinga conventions): judge every user\'s use of their quota in the current billing cycle. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (any error); one status line naming the worst users, then perfdata in bytes'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "quota" -d 'Each user\'s use of their quota in the current billing cycle: use, allowance, share, projection and days left. Run by an unprivileged user, only that user\'s own line, from the file the last pass wrote for them (the database is not opened)'
complete -c netledger -n "__fish_netledger_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l local-net -d 'A local network whose traffic is charged to nobody (repeatable; replaces the configured ones and the defaults: 127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 169.254.0.0/16 fe80::/10 fc00::/7 224.0.0.0/4 ff00::/8) [env: NETLEDGER_LOCAL_NETWORKS, comma-separated]' -r
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l lock-timeout -d 'How long to wait for another writer\'s database lock, 0s to 10m [default: 5s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l prune-after -d 'Passes a vanished flow is remembered before its state is pruned, 1 to 1000 [default: 3]' -r
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l delegating-uid -d 'A service\'s uid (or user name) whose sockets are charged through the processes holding them, as sshd\'s are (repeatable; replaces the configured ones; default 0 and sshd) [env: NETLEDGER_DELEGATING_UIDS, comma-separated]' -r
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l delegate-grace -d 'How long a young flow on such a service\'s socket waits, uncharged, for a user\'s process to hold it [env: NETLEDGER_DELEGATE_GRACE] [default: 10s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l proc-root -d 'Root of the proc filesystem to read sockets and processes from [default: /proc]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l metrics-textfile -d 'After the pass, write the Prometheus metrics to FILE as `metrics --output` does (atomically, mode 0644), for node_exporter\'s textfile collector [config: metrics_textfile]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l no-setup -d 'Do not change the system: only check the prerequisites and fail if one is missing'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -l count-local -d 'Exclude nothing: charge local-network traffic to its users too'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand snapshot" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand setup" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand setup" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand setup" -l undo -d 'Undo what `setup`, `snapshot` and `run` changed in this network namespace: delete the table `inet netledger` and put back the sysctls they changed to the values they had (kept in /run/netledger-setup/). Idempotent. Stop the timer or the daemon first, or their next start sets it all up again'
complete -c netledger -n "__fish_netledger_using_subcommand setup" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand setup" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand setup" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand setup" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand top" -l since -d 'Start of the period: a duration back from now (90m, 24h, 7d), today, yesterday, or a date/time (2026-11-01, 2026-11-01T08:00), in local time unless --utc' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l until -d 'End of the period (same forms as --since); default now' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l by -d 'Group by these, comma-separated (user is always included): user, program, remote, port, via, container, cgroup, unit, job' -r -f -a "user\t'Per user'
program\t'Per program'
remote\t'Per remote address'
port\t'Per protocol and service port'
via\t'Per service the traffic went through (a delegating service\'s socket)'
container\t'Per container (another network namespace) the traffic came from'
cgroup\t'Per cgroup (v2) of the process that created the socket'
unit\t'Per systemd unit: the innermost .service or .scope, else the slice'
job\t'Per Slurm job'"
complete -c netledger -n "__fish_netledger_using_subcommand top" -l user -d 'Only this user (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l unit -d 'Only this systemd unit\'s traffic (nginx.service, session-4.scope, user-1000.slice): the sockets created in its cgroups' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l job -d 'Only this Slurm job\'s traffic (its id): the sockets created in its cgroups' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l limit -d 'At most this many rows (1 to 1000000)' -r
complete -c netledger -n "__fish_netledger_using_subcommand top" -l names -d 'Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES] (default: the configured file, else /etc/netledger/names when it exists)' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand top" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand top" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand top" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand top" -l csv -d 'Print CSV with a header line instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand top" -l bytes -d 'Print exact byte counts instead of KiB/MiB/GiB'
complete -c netledger -n "__fish_netledger_using_subcommand top" -l utc -d 'Read and show times in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand top" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand top" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand top" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c netledger -n "__fish_netledger_using_subcommand top" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand job" -l since -d 'Start (same forms as `top --since`); default: all that is kept per cgroup (the raw and hourly tiers, 90 days by default)' -r
complete -c netledger -n "__fish_netledger_using_subcommand job" -l until -d 'End; default now' -r
complete -c netledger -n "__fish_netledger_using_subcommand job" -l names -d 'Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES] (default: the configured file, else /etc/netledger/names when it exists)' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand job" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand job" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand job" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand job" -l csv -d 'Print CSV with a header line instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand job" -l bytes -d 'Print exact byte counts instead of KiB/MiB/GiB'
complete -c netledger -n "__fish_netledger_using_subcommand job" -l utc -d 'Read and show times in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand job" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand job" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand job" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand job" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand report" -l period -d 'Length of a period' -r -f -a "hour\t'Per hour'
day\t'Per day'
week\t'Per ISO week (Monday to Sunday), labelled by its Monday'
month\t'Per calendar month, or per billing cycle from cycle_day on'"
complete -c netledger -n "__fish_netledger_using_subcommand report" -l user -d 'Only this user (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand report" -l since -d 'Start (same forms as `top --since`); default: 24h for hours, 30d for days, 12 weeks for weeks, 12 months for months' -r
complete -c netledger -n "__fish_netledger_using_subcommand report" -l until -d 'End; default now' -r
complete -c netledger -n "__fish_netledger_using_subcommand report" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand report" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand report" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand report" -l csv -d 'Print CSV with a header line instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand report" -l bytes -d 'Print exact byte counts instead of KiB/MiB/GiB'
complete -c netledger -n "__fish_netledger_using_subcommand report" -l utc -d 'Read and show times in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand report" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand report" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c netledger -n "__fish_netledger_using_subcommand report" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand export" -l since -d 'Start (same forms as `top --since`)' -r
complete -c netledger -n "__fish_netledger_using_subcommand export" -l until -d 'End; default now' -r
complete -c netledger -n "__fish_netledger_using_subcommand export" -l format -d 'Output format' -r -f -a "jsonl\t'One JSON object per line'
csv\t'CSV with a header line'"
complete -c netledger -n "__fish_netledger_using_subcommand export" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand export" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand export" -l utc -d 'Read --since/--until in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand export" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand export" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c netledger -n "__fish_netledger_using_subcommand export" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand config" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand config" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand config" -l default -d 'Print the documented default configuration file instead'
complete -c netledger -n "__fish_netledger_using_subcommand config" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand config" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand config" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand config" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand run" -l local-net -d 'A local network whose traffic is charged to nobody (repeatable; replaces the configured ones and the defaults: 127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12 192.168.0.0/16 169.254.0.0/16 fe80::/10 fc00::/7 224.0.0.0/4 ff00::/8) [env: NETLEDGER_LOCAL_NETWORKS, comma-separated]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l lock-timeout -d 'How long to wait for another writer\'s database lock, 0s to 10m [default: 5s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l prune-after -d 'Passes a vanished flow is remembered before its state is pruned, 1 to 1000 [default: 3]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l delegating-uid -d 'A service\'s uid (or user name) whose sockets are charged through the processes holding them, as sshd\'s are (repeatable; replaces the configured ones; default 0 and sshd) [env: NETLEDGER_DELEGATING_UIDS, comma-separated]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l delegate-grace -d 'How long a young flow on such a service\'s socket waits, uncharged, for a user\'s process to hold it [env: NETLEDGER_DELEGATE_GRACE] [default: 10s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l proc-root -d 'Root of the proc filesystem to read sockets and processes from [default: /proc]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand run" -l interval -d 'Time between accounting passes, 1s to 1h [default: 10s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l connection-log-rate -d 'Connections logged a second at most, on average, 1 to 1000000; the rest are charged, counted and not logged [default: 200]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l connection-log-burst -d 'Connections logged at once at most after a quiet time, 1 to 10000000 [default: 100000]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l flush-interval -d 'Longest time an event waits in memory before it is written, 10ms to 1m (writes are batched, one transaction per flush) [default: 1s]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l event-buffer -d 'Receive buffer of the conntrack event socket at start, in bytes (1 to 64 MiB); it grows on overruns up to 64 MiB (tests set it tiny to provoke overruns) [env: NETLEDGER_EVENT_BUFFER] [default: 4194304]' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l metrics-listen -d 'Serve the Prometheus metrics (`netledger metrics`) at http://ADDR:PORT/metrics [default: off]. Personal data: bind to loopback or a management network' -r
complete -c netledger -n "__fish_netledger_using_subcommand run" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand run" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand run" -l no-setup -d 'Do not change the system: only check the prerequisites and fail if one is missing'
complete -c netledger -n "__fish_netledger_using_subcommand run" -l count-local -d 'Exclude nothing: charge local-network traffic to its users too'
complete -c netledger -n "__fish_netledger_using_subcommand run" -l no-connection-log -d 'Do not keep the log of finished connections'
complete -c netledger -n "__fish_netledger_using_subcommand run" -l connection-log-local -d 'Also log connections charged to nobody as local: loopback, the local networks, the host\'s own addresses (configuration key `connection_log_local`) [default: off]'
complete -c netledger -n "__fish_netledger_using_subcommand run" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand run" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand run" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand run" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l user -d 'Only this user\'s connections (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l proc-root -d 'Root of the proc filesystem to read sockets and processes from [default: /proc]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l all -d 'Also list TCP connections already closed whose conntrack entries linger (TIME_WAIT, CLOSE)'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -l bytes -d 'Print exact byte counts instead of KiB/MiB/GiB'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand connections" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand live" -l interval -d 'Time between refreshes, 200ms to 1h' -r
complete -c netledger -n "__fish_netledger_using_subcommand live" -l proc-root -d 'Root of the proc filesystem to read sockets, processes and interfaces from' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand live" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand live" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand live" -l once -d 'Print one refresh and exit (also when stdout is not a terminal): a first dump, then the rates over one interval'
complete -c netledger -n "__fish_netledger_using_subcommand live" -l json -d 'One refresh as JSON lines (implies --once): one object per user (`uid` null for unattributed traffic) with uid, user, rx_bytes, tx_bytes, rx_bps, tx_bps, interval_s'
complete -c netledger -n "__fish_netledger_using_subcommand live" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand live" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand live" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand live" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand log" -l since -d 'Connections that ended at or after this: a duration back from now (90m, 24h, 7d), today, yesterday, or a date/time, in local time unless --utc' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l until -d 'Connections that ended before this (same forms); default now' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l host -d 'Only connections with an address in this network, in either tuple (so pre- and post-NAT addresses both match): 198.51.100.7 or 198.51.100.0/24' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l port -d 'Only connections with this port at either end, in either tuple' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l user -d 'Only this user\'s connections (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l format -d 'One line per connection from TEMPLATE (escapes below)' -r
complete -c netledger -n "__fish_netledger_using_subcommand log" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand log" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand log" -l json -d 'Print a JSON array of objects'
complete -c netledger -n "__fish_netledger_using_subcommand log" -l utc -d 'Read and show times in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand log" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand log" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c netledger -n "__fish_netledger_using_subcommand log" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l date -d 'The day: today, yesterday, or a date (2026-11-01), in local time unless --utc' -r
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l user -d 'Only this user (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l names -d 'Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES] (default: the configured file, else /etc/netledger/names when it exists)' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -l utc -d 'Read and show the day in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand summary" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -l output -d 'Write to FILE instead of standard output, atomically (a temporary file in the same directory, synced, renamed over FILE): for node_exporter\'s textfile collector, e.g. /var/lib/prometheus/node-exporter/netledger.prom' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand metrics" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand check" -s w -l warning -d 'WARNING at this share of each user\'s allowance (80%), or at this size for every user (40GiB, 500 GB)' -r
complete -c netledger -n "__fish_netledger_using_subcommand check" -s c -l critical -d 'CRITICAL at this share or size (judged before WARNING)' -r
complete -c netledger -n "__fish_netledger_using_subcommand check" -s u -l user -d 'Only this user (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand check" -l max-age -d 'UNKNOWN when no pass or flush has been stored for this long (10m, 1h)' -r
complete -c netledger -n "__fish_netledger_using_subcommand check" -l now -d 'Judge as if it were this instant (epoch seconds or RFC 3339; tests)' -r
complete -c netledger -n "__fish_netledger_using_subcommand check" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand check" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand check" -l estimate -d 'Judge the projected use at the end of the cycle (linear from the cycle so far) instead of the use so far'
complete -c netledger -n "__fish_netledger_using_subcommand check" -l utc -d 'Billing cycles in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand check" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand check" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand check" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand check" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l user -d 'Only this user (name or uid)' -r
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l view-dir -d 'Where the passes write each user\'s view file (read by unprivileged users) [env: NETLEDGER_QUOTA_VIEW_DIR] [default: the configured quota.view_dir, else /run/netledger/quota]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l now -d 'Judge as if it were this instant (epoch seconds or RFC 3339; tests)' -r
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l json -d 'Print a JSON array of objects instead of a table'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l bytes -d 'Print exact byte counts instead of KiB/MiB/GiB'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -l utc -d 'Billing cycles in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -f -a "grant" -d 'Add a one-off allowance for the current billing cycle only (grants add up; stored in the database, shown by `quota` and judged by `check`)'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and not __fish_seen_subcommand_from grant help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -l now -d 'As if it were this instant (tests)' -r
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -l db -d 'SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -l config -d 'Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml, when it exists]' -r -F
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -l utc -d 'Judge the cycle in UTC instead of local time'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -s v -l verbose -d 'More log output on stderr (-v info, -vv debug)'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -s q -l quiet -d 'Only errors on stderr'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -s h -l help -d 'Print help'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from grant" -s V -l version -d 'Print version'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from help" -f -a "grant" -d 'Add a one-off allowance for the current billing cycle only (grants add up; stored in the database, shown by `quota` and judged by `check`)'
complete -c netledger -n "__fish_netledger_using_subcommand quota; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "snapshot" -d 'Run one accounting pass, store it, and exit (made for a systemd timer)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "setup" -d 'Enable conntrack accounting and make conntrack track in this network namespace (idempotent): sets net.netfilter.nf_conntrack_acct=1 and installs the nftables table `inet netledger`. `--undo` puts the namespace back as it was'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "top" -d 'Show the top talkers: per user, and per program, remote, port, service, container, cgroup, systemd unit or Slurm job'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "job" -d 'What one Slurm job moved, in and out, per user and remote (for a prolog or epilog script, or like `sacct`): the traffic of the sockets its processes created, found by their cgroup (`…slurmstepd.scope/job_ID/…`). Exit 1 when the database knows no socket of the job; a known job with no traffic in the period prints an empty table'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "report" -d 'Usage per hour, day, week or month and per user, with bars (like vnStat)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "export" -d 'Export stored usage rows for loading into another system'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "config" -d 'Print the configuration in effect (defaults < file < NETLEDGER_* < flags)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "run" -d 'Run as a daemon: a pass every interval for long-lived flows, and conntrack events so that short-lived flows are charged exactly and every finished connection is logged. SIGTERM/SIGINT: stop cleanly; SIGHUP: reload the configuration file'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "connections" -d 'The connections open right now: user, program, direction, addresses and the counters so far (like ipclog\'s `ipc`). Needs CAP_NET_ADMIN'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "live" -d 'Who is using the link right now: per-user rates, refreshed every second, in a full-screen view (one refresh as a table or JSON lines without a terminal). Writes nothing; needs CAP_NET_ADMIN (and CAP_SYS_PTRACE for program names)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "log" -d 'Finished connections from the daemon\'s connection log'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "summary" -d 'A day\'s connections per user, protocol, service and remote (like constat): count, still open, average and maximum duration'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "metrics" -d 'Print the Prometheus metrics (text format 0.0.4): all-time traffic per user and per unattributed reason, excluded traffic, and the last pass\'s health. Personal data: who used how much'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "check" -d 'A monitoring plugin (Nagios/Icinga conventions): judge every user\'s use of their quota in the current billing cycle. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (any error); one status line naming the worst users, then perfdata in bytes'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "quota" -d 'Each user\'s use of their quota in the current billing cycle: use, allowance, share, projection and days left. Run by an unprivileged user, only that user\'s own line, from the file the last pass wrote for them (the database is not opened)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and not __fish_seen_subcommand_from snapshot setup top job report export config run connections live log summary metrics check quota help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c netledger -n "__fish_netledger_using_subcommand help; and __fish_seen_subcommand_from quota" -f -a "grant" -d 'Add a one-off allowance for the current billing cycle only (grants add up; stored in the database, shown by `quota` and judged by `check`)'
