//! Command-line definition (clap derive). No logic: doc comments are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Args, Parser, Subcommand, ValueEnum};
use ipnet::IpNet;

use crate::store::query::{By, Period};

/// Per-user network traffic accounting: /proc sockets joined with conntrack counters,
/// stored in SQLite.
#[derive(Debug, Parser)]
#[command(name = "netledger", version, propagate_version = true)]
pub struct Cli {
    /// SQLite database path [env: NETLEDGER_DB] [default: /var/lib/netledger/netledger.db].
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// Configuration file [env: NETLEDGER_CONFIG] [default: /etc/netledger/netledger.toml,
    /// when it exists].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one accounting pass, store it, and exit (made for a systemd timer).
    Snapshot(SnapshotArgs),
    /// Enable conntrack accounting and make conntrack track in this network namespace
    /// (idempotent): sets net.netfilter.nf_conntrack_acct=1 and installs the nftables
    /// table `inet netledger`. `--undo` puts the namespace back as it was.
    Setup(SetupArgs),
    /// Show the top talkers: per user, and per program, remote, port, service, container,
    /// cgroup, systemd unit or Slurm job.
    ///
    /// Resolution: usage is stored in 5-minute buckets (UTC), kept for `[retention] raw`
    /// (7 days by default), then in hours (90 days) and days. A bucket that the period
    /// overlaps counts whole, so the numbers can cover a little more than --since/--until
    /// ask for, never less: the table's first line states the span they cover, and every
    /// JSON or CSV row carries it as `covered_since` and `covered_until` (epoch seconds).
    Top(TopArgs),
    /// What one Slurm job moved, in and out, per user and remote (for a prolog or epilog
    /// script, or like `sacct`): the traffic of the sockets its processes created, found by
    /// their cgroup (`…slurmstepd.scope/job_ID/…`). Exit 1 when the database knows no socket
    /// of the job; a known job with no traffic in the period prints an empty table.
    Job(JobArgs),
    /// Usage per hour, day, week or month and per user, with bars (like vnStat).
    ///
    /// A stored bucket (5 minutes, an hour or a day; see `netledger top --help`) that the
    /// period overlaps counts whole: the table's first line, and the `covered_since` and
    /// `covered_until` fields of every JSON or CSV row, state the span covered.
    Report(ReportArgs),
    /// Export stored usage rows for loading into another system.
    ///
    /// Every stored row (a 5-minute bucket, an hour or a day, dated by its start `ts`) that
    /// overlaps the period is exported; each carries the span covered as `covered_since`
    /// and `covered_until`.
    Export(ExportArgs),
    /// Print the configuration in effect (defaults < file < NETLEDGER_* < flags).
    Config(ConfigArgs),
    /// Run as a daemon: a pass every interval for long-lived flows, and conntrack events so
    /// that short-lived flows are charged exactly and every finished connection is logged.
    /// SIGTERM/SIGINT: stop cleanly; SIGHUP: reload the configuration file.
    Run(RunArgs),
    /// The connections open right now: user, program, direction, addresses and the
    /// counters so far (like ipclog's `ipc`). Needs CAP_NET_ADMIN.
    Connections(ConnectionsArgs),
    /// Who is using the link right now: per-user rates, refreshed every second, in a
    /// full-screen view (one refresh as a table or JSON lines without a terminal).
    /// Writes nothing; needs CAP_NET_ADMIN (and CAP_SYS_PTRACE for program names).
    Live(LiveArgs),
    /// Finished connections from the daemon's connection log.
    ///
    /// A connection is logged when conntrack drops its entry: 120 s after a TCP close
    /// (TIME_WAIT) and 30 s after a UDP exchange, by default. Until then, a note on stderr
    /// counts the ones that match the filters and says when their entries expire (read from
    /// the live conntrack table, which needs CAP_NET_ADMIN).
    #[command(after_long_help = LOG_TEMPLATE_HELP)]
    Log(LogArgs),
    /// A day's connections per user, protocol, service and remote (like constat): count,
    /// still open, average and maximum duration.
    Summary(SummaryArgs),
    /// Print the Prometheus metrics (text format 0.0.4): all-time traffic per user and
    /// per unattributed reason, excluded traffic, and the last pass's health. Personal
    /// data: who used how much.
    Metrics(MetricsArgs),
    /// A monitoring plugin (Nagios/Icinga conventions): judge every user's use of their
    /// quota in the current billing cycle. Exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (any
    /// error); one status line naming the worst users, then perfdata in bytes.
    Check(CheckArgs),
    /// Each user's use of their quota in the current billing cycle: use, allowance, share,
    /// projection and days left. Run by an unprivileged user, only that user's own line,
    /// from the file the last pass wrote for them (the database is not opened).
    Quota(QuotaArgs),
}

/// Options of `metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Write to FILE instead of standard output, atomically (a temporary file in the same
    /// directory, synced, renamed over FILE): for node_exporter's textfile collector, e.g.
    /// /var/lib/prometheus/node-exporter/netledger.prom.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Options of `setup`.
#[derive(Debug, Args)]
pub struct SetupArgs {
    /// Undo what `setup`, `snapshot` and `run` changed in this network namespace: delete
    /// the table `inet netledger` and put back the sysctls they changed to the values they
    /// had (kept in /run/netledger-setup/). Idempotent. Stop the timer or the daemon
    /// first, or their next start sets it all up again.
    #[arg(long)]
    pub undo: bool,
}

/// Options of `snapshot`.
#[derive(Debug, Default, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub accounting: AccountingArgs,

    /// After the pass, write the Prometheus metrics to FILE as `metrics --output` does
    /// (atomically, mode 0644), for node_exporter's textfile collector
    /// [config: metrics_textfile].
    #[arg(long, value_name = "FILE")]
    pub metrics_textfile: Option<PathBuf>,
}

/// The accounting options `snapshot` and `run` share. Those also in the configuration
/// file take the file's value when not given here.
#[derive(Debug, Default, Clone, Args)]
pub struct AccountingArgs {
    /// Do not change the system: only check the prerequisites and fail if one is missing.
    #[arg(long)]
    pub no_setup: bool,

    /// A local network whose traffic is charged to nobody (repeatable; replaces the
    /// configured ones and the defaults: 127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12
    /// 192.168.0.0/16 169.254.0.0/16 fe80::/10 fc00::/7 224.0.0.0/4 ff00::/8)
    /// [env: NETLEDGER_LOCAL_NETWORKS, comma-separated].
    #[arg(long = "local-net", value_name = "CIDR", value_delimiter = ',')]
    pub local_nets: Vec<IpNet>,

    /// Exclude nothing: charge local-network traffic to its users too.
    #[arg(long, conflicts_with = "local_nets")]
    pub count_local: bool,

    /// How long to wait for another writer's database lock, 0s to 10m [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_timeout: Option<Duration>,

    /// Passes a vanished flow is remembered before its state is pruned, 1 to 1000
    /// [default: 3].
    #[arg(long, value_name = "N")]
    pub prune_after: Option<u32>,

    /// A service's uid (or user name) whose sockets are charged through the processes
    /// holding them, as sshd's are (repeatable; replaces the configured ones; default 0
    /// and sshd) [env: NETLEDGER_DELEGATING_UIDS, comma-separated].
    #[arg(
        long = "delegating-uid",
        value_name = "UID|NAME",
        value_delimiter = ','
    )]
    pub delegating_uids: Vec<String>,

    /// How long a young flow on such a service's socket waits, uncharged, for a user's
    /// process to hold it [env: NETLEDGER_DELEGATE_GRACE] [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub delegate_grace: Option<Duration>,

    /// Root of the proc filesystem to read sockets and processes from [default: /proc].
    #[arg(long, value_name = "PATH", hide = true)]
    pub proc_root: Option<PathBuf>,
}

/// Options of `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Start of the period: a duration back from now (90m, 24h, 7d), today, yesterday, or
    /// a date/time (2026-11-01, 2026-11-01T08:00), in local time unless --utc.
    #[arg(long, default_value = "24h", allow_hyphen_values = true)]
    pub since: String,

    /// End of the period (same forms as --since); default now.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Group by these, comma-separated (user is always included): user, program,
    /// remote, port, via, container, cgroup, unit, job.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "user")]
    pub by: Vec<By>,

    /// Only this user (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Only this systemd unit's traffic (nginx.service, session-4.scope, user-1000.slice):
    /// the sockets created in its cgroups.
    #[arg(long, value_name = "NAME", conflicts_with = "job")]
    pub unit: Option<String>,

    /// Only this Slurm job's traffic (its id): the sockets created in its cgroups.
    #[arg(long, value_name = "ID")]
    pub job: Option<u64>,

    /// At most this many rows (1 to 1000000).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES]
    /// (default: the configured file, else /etc/netledger/names when it exists).
    #[arg(long, value_name = "PATH")]
    pub names: Option<PathBuf>,
}

/// Options of `job`.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// The Slurm job id.
    #[arg(value_name = "ID")]
    pub id: u64,

    /// Start (same forms as `top --since`); default: all that is kept per cgroup (the raw
    /// and hourly tiers, 90 days by default).
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,

    /// End; default now.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES]
    /// (default: the configured file, else /etc/netledger/names when it exists).
    #[arg(long, value_name = "PATH")]
    pub names: Option<PathBuf>,
}

/// Output options shared by the reports.
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print a JSON array of objects instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,

    /// Print CSV with a header line instead of a table.
    #[arg(long)]
    pub csv: bool,

    /// Print exact byte counts instead of KiB/MiB/GiB.
    #[arg(long)]
    pub bytes: bool,

    /// Read and show times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

/// Options of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Length of a period.
    #[arg(long, value_enum, default_value = "day")]
    pub period: Period,

    /// Only this user (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Start (same forms as `top --since`); default: 24h for hours, 30d for days,
    /// 12 weeks for weeks, 12 months for months.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,

    /// End; default now.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,

    #[command(flatten)]
    pub output: OutputArgs,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

/// Options of `export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Start (same forms as `top --since`).
    #[arg(long, default_value = "24h", allow_hyphen_values = true)]
    pub since: String,

    /// End; default now.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value = "jsonl")]
    pub format: ExportFormat,

    /// Read --since/--until in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

/// Options of `config`.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the documented default configuration file instead.
    #[arg(long)]
    pub default: bool,
}

/// Options of `run`. Settings also in the configuration file (interval, connection_log,
/// local_networks, prune_after, lock_timeout, delegating_uids, delegate_grace,
/// metrics_listen) take the file's value when not given here, and are re-read from it on
/// SIGHUP.
#[derive(Debug, Default, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub accounting: AccountingArgs,

    /// Time between accounting passes, 1s to 1h [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,

    /// Do not keep the log of finished connections.
    #[arg(long)]
    pub no_connection_log: bool,

    /// Also log connections charged to nobody as local: loopback, the local networks,
    /// the host's own addresses (configuration key `connection_log_local`) [default: off].
    #[arg(long)]
    pub connection_log_local: bool,

    /// Connections logged a second at most, on average, 1 to 1000000; the rest are
    /// charged, counted and not logged [default: 200].
    #[arg(long, value_name = "N")]
    pub connection_log_rate: Option<u32>,

    /// Connections logged at once at most after a quiet time, 1 to 10000000
    /// [default: 100000].
    #[arg(long, value_name = "N")]
    pub connection_log_burst: Option<u32>,

    /// Longest time an event waits in memory before it is written, 10ms to 1m (writes
    /// are batched, one transaction per flush) [default: 1s].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub flush_interval: Option<Duration>,

    /// Receive buffer of the conntrack event socket at start, in bytes (1 to 64 MiB); it
    /// grows on overruns up to 64 MiB (tests set it tiny to provoke overruns)
    /// [env: NETLEDGER_EVENT_BUFFER] [default: 4194304].
    #[arg(long, value_name = "BYTES", hide = true)]
    pub event_buffer: Option<usize>,

    /// Serve the Prometheus metrics (`netledger metrics`) at http://ADDR:PORT/metrics
    /// [default: off]. Personal data: bind to loopback or a management network.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Options of `connections`.
#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    /// Only this user's connections (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Also list TCP connections already closed whose conntrack entries linger
    /// (TIME_WAIT, CLOSE).
    #[arg(long)]
    pub all: bool,

    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Print exact byte counts instead of KiB/MiB/GiB.
    #[arg(long)]
    pub bytes: bool,

    /// Root of the proc filesystem to read sockets and processes from [default: /proc].
    #[arg(long, value_name = "PATH", hide = true)]
    pub proc_root: Option<PathBuf>,
}

/// The `--format` escapes of `log`, shown after its help.
pub const LOG_TEMPLATE_HELP: &str = "\
--format TEMPLATE prints one line per connection; every character is copied except:
  %s start (yyyy-mm-dd HH:MM:SS+hh:mm)   %e end            %S duration in seconds
  %D duration in milliseconds            %P protocol       %d direction (out/in/-)
  %i remote address    %r remote port    %l local address  %L local port
  %o original tuple (src:port>dst:port, pre-NAT)           %R reply tuple (post-NAT)
  %u user name (or uid, or -)            %U uid (or -)     %c program (or -)
  %C container (or -)  %K uid inside the container (or -)
  %G cgroup of the socket's creator (or -)  %N its systemd unit (or -)  %J its Slurm job (or -)
  %t bytes sent        %x bytes received %T packets sent   %X packets received
  %n newline           %% a percent sign
An IPv6 %i or %l followed by ':' is put in brackets: %i:%r prints [2001:db8::2]:443.
Example: --format 'Connected: %s, disconnected after %S secs at: %e (%i:%r, %u)'";

/// Options of `log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Connections that ended at or after this: a duration back from now (90m, 24h, 7d),
    /// today, yesterday, or a date/time, in local time unless --utc.
    #[arg(long, default_value = "24h", allow_hyphen_values = true)]
    pub since: String,

    /// Connections that ended before this (same forms); default now.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,

    /// Only connections with an address in this network, in either tuple (so pre- and
    /// post-NAT addresses both match): 198.51.100.7 or 198.51.100.0/24.
    #[arg(long, value_name = "IP/MASK", value_parser = parse_host)]
    pub host: Option<IpNet>,

    /// Only connections with this port at either end, in either tuple.
    #[arg(long, value_name = "N")]
    pub port: Option<u16>,

    /// Only this user's connections (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// One line per connection from TEMPLATE (escapes below).
    #[arg(
        long,
        value_name = "TEMPLATE",
        conflicts_with = "json",
        value_parser = crate::report::log::parse_template
    )]
    pub format: Option<crate::report::log::Template>,

    /// Print a JSON array of objects.
    #[arg(long)]
    pub json: bool,

    /// Read and show times in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

/// An address or a network (`--host`).
fn parse_host(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an address nor ADDRESS/PREFIX"))
}

/// Options of `summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// The day: today, yesterday, or a date (2026-11-01), in local time unless --utc.
    #[arg(long, default_value = "today", allow_hyphen_values = true)]
    pub date: String,

    /// Only this user (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Remote address names: lines of `ADDRESS-or-CIDR NAME` [env: NETLEDGER_NAMES]
    /// (default: the configured file, else /etc/netledger/names when it exists).
    #[arg(long, value_name = "PATH")]
    pub names: Option<PathBuf>,

    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Read and show the day in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,
}

// The store's closed choices as flag values: the store knows nothing of clap, so their
// names and help live here (`ValueEnum`, as a derive would write it).

impl ValueEnum for By {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            By::User,
            By::Program,
            By::Remote,
            By::Port,
            By::Via,
            By::Container,
            By::Cgroup,
            By::Unit,
            By::Job,
        ]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            By::User => PossibleValue::new("user").help("Per user"),
            By::Program => PossibleValue::new("program").help("Per program"),
            By::Remote => PossibleValue::new("remote").help("Per remote address"),
            By::Port => PossibleValue::new("port").help("Per protocol and service port"),
            By::Via => PossibleValue::new("via")
                .help("Per service the traffic went through (a delegating service's socket)"),
            By::Container => PossibleValue::new("container")
                .help("Per container (another network namespace) the traffic came from"),
            By::Cgroup => PossibleValue::new("cgroup")
                .help("Per cgroup (v2) of the process that created the socket"),
            By::Unit => PossibleValue::new("unit")
                .help("Per systemd unit: the innermost .service or .scope, else the slice"),
            By::Job => PossibleValue::new("job").help("Per Slurm job"),
        })
    }
}

impl ValueEnum for Period {
    fn value_variants<'a>() -> &'a [Self] {
        &[Period::Hour, Period::Day, Period::Week, Period::Month]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Period::Hour => PossibleValue::new("hour").help("Per hour"),
            Period::Day => PossibleValue::new("day").help("Per day"),
            Period::Week => PossibleValue::new("week")
                .help("Per ISO week (Monday to Sunday), labelled by its Monday"),
            Period::Month => PossibleValue::new("month")
                .help("Per calendar month, or per billing cycle from cycle_day on"),
        })
    }
}

/// Options of `live`.
#[derive(Debug, Args)]
pub struct LiveArgs {
    /// Time between refreshes, 200ms to 1h.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Print one refresh and exit (also when stdout is not a terminal): a first dump,
    /// then the rates over one interval.
    #[arg(long)]
    pub once: bool,

    /// One refresh as JSON lines (implies --once): one object per user (`uid` null for
    /// unattributed traffic) with uid, user, rx_bytes, tx_bytes, rx_bps, tx_bps, interval_s.
    #[arg(long)]
    pub json: bool,

    /// Root of the proc filesystem to read sockets, processes and interfaces from.
    #[arg(long, value_name = "PATH", default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
}

/// Options of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// WARNING at this share of each user's allowance (80%), or at this size for every
    /// user (40GiB, 500 GB).
    #[arg(short, long, value_name = "PERCENT|SIZE", default_value = "80%",
          value_parser = crate::quota::Threshold::parse)]
    pub warning: crate::quota::Threshold,

    /// CRITICAL at this share or size (judged before WARNING).
    #[arg(short, long, value_name = "PERCENT|SIZE", default_value = "95%",
          value_parser = crate::quota::Threshold::parse)]
    pub critical: crate::quota::Threshold,

    /// Only this user (name or uid).
    #[arg(short, long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Judge the projected use at the end of the cycle (linear from the cycle so far)
    /// instead of the use so far.
    #[arg(long)]
    pub estimate: bool,

    /// UNKNOWN when no pass or flush has been stored for this long (10m, 1h).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_age: Option<Duration>,

    /// Billing cycles in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,

    /// Judge as if it were this instant (epoch seconds or RFC 3339; tests).
    #[arg(long, value_name = "TIME", hide = true, value_parser = parse_instant)]
    pub now: Option<i64>,
}

/// Options of `quota`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct QuotaArgs {
    /// Give a user more allowance.
    #[command(subcommand)]
    pub action: Option<QuotaAction>,

    /// Only this user (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// Print a JSON array of objects instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Print exact byte counts instead of KiB/MiB/GiB.
    #[arg(long)]
    pub bytes: bool,

    /// Billing cycles in UTC instead of local time.
    #[arg(long)]
    pub utc: bool,

    /// Where the passes write each user's view file (read by unprivileged users)
    /// [env: NETLEDGER_QUOTA_VIEW_DIR] [default: the configured quota.view_dir, else
    /// /run/netledger/quota].
    #[arg(long, value_name = "DIR")]
    pub view_dir: Option<PathBuf>,

    /// Judge as if it were this instant (epoch seconds or RFC 3339; tests).
    #[arg(long, value_name = "TIME", hide = true, value_parser = parse_instant)]
    pub now: Option<i64>,
}

/// `quota` subcommands.
#[derive(Debug, Subcommand)]
pub enum QuotaAction {
    /// Add a one-off allowance for the current billing cycle only (grants add up; stored
    /// in the database, shown by `quota` and judged by `check`).
    Grant {
        /// The user (name or uid).
        user: String,
        /// The extra allowance: 10GiB, 500 GB.
        #[arg(value_parser = crate::quota::parse_size)]
        size: u64,
        /// Judge the cycle in UTC instead of local time.
        #[arg(long)]
        utc: bool,
        /// As if it were this instant (tests).
        #[arg(long, value_name = "TIME", hide = true, value_parser = parse_instant)]
        now: Option<i64>,
    },
}

/// An instant: epoch seconds or RFC 3339.
fn parse_instant(s: &str) -> Result<i64, String> {
    s.parse::<i64>().or_else(|_| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.timestamp())
            .map_err(|_| format!("{s:?} is neither epoch seconds nor an RFC 3339 time"))
    })
}
