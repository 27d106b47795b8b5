//! Command-line definition (clap derive). No logic: doc comments are the help text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;

use crate::store::query::{By, Period};

/// Default database location.
pub const DEFAULT_DB: &str = "/var/lib/netledger/netledger.db";

/// Per-user network traffic accounting: /proc sockets joined with conntrack counters,
/// stored in SQLite.
#[derive(Debug, Parser)]
#[command(name = "netledger", version, propagate_version = true)]
pub struct Cli {
    /// SQLite database path.
    #[arg(long, global = true, env = "NETLEDGER_DB", default_value = DEFAULT_DB)]
    pub db: PathBuf,

    /// Configuration file [default: /etc/netledger/netledger.toml, when it exists].
    #[arg(long, global = true, env = "NETLEDGER_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The configuration file's contents (filled in after parsing).
    #[arg(skip)]
    pub file: crate::config::FileConfig,

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
    /// table `inet netledger`.
    Setup,
    /// Show the top talkers: per user, and per program, remote or port.
    Top(TopArgs),
    /// Usage per hour, day, week or month and per user, with bars (like vnStat).
    Report(ReportArgs),
    /// Export stored usage rows for loading into another system.
    Export(ExportArgs),
    /// Print the configuration in effect (defaults < file < NETLEDGER_* < flags).
    Config(ConfigArgs),
}

/// Options of `snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// Do not change the system: only check the prerequisites and fail if one is missing.
    #[arg(long)]
    pub no_setup: bool,

    /// A local network whose traffic is charged to nobody (repeatable; replaces the
    /// configured ones and the defaults: 127.0.0.0/8 ::1/128 10.0.0.0/8 172.16.0.0/12
    /// 192.168.0.0/16 169.254.0.0/16 fe80::/10 fc00::/7 224.0.0.0/4 ff00::/8).
    #[arg(
        long = "local-net",
        value_name = "CIDR",
        env = "NETLEDGER_LOCAL_NETWORKS",
        value_delimiter = ','
    )]
    pub local_nets: Vec<IpNet>,

    /// Exclude nothing: charge local-network traffic to its users too.
    #[arg(long, conflicts_with = "local_nets")]
    pub count_local: bool,

    /// How long to wait for another writer's database lock.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub lock_timeout: Duration,

    /// Passes a vanished flow is remembered before its state is pruned.
    #[arg(long, value_name = "N", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub prune_after: u32,

    /// Root of the proc filesystem to read sockets and processes from.
    #[arg(long, value_name = "PATH", default_value = "/proc", hide = true)]
    pub proc_root: PathBuf,
}

/// Options of `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Start of the period: a duration back from now (90m, 24h, 7d), today, yesterday, or
    /// a date/time (2026-11-01, 2026-11-01T08:00), in local time unless --utc.
    #[arg(long, default_value = "24h")]
    pub since: String,

    /// End of the period (same forms as --since); default now.
    #[arg(long)]
    pub until: Option<String>,

    /// Group by these, comma-separated (user is always included): user, program,
    /// remote, port.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "user")]
    pub by: Vec<By>,

    /// Only this user (name or uid).
    #[arg(long, value_name = "NAME|UID")]
    pub user: Option<String>,

    /// At most this many rows.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,

    #[command(flatten)]
    pub output: OutputArgs,

    /// Remote address names: lines of `ADDRESS-or-CIDR NAME` (default: the configured
    /// file, else /etc/netledger/names when it exists).
    #[arg(long, value_name = "PATH", env = "NETLEDGER_NAMES")]
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
    #[arg(long)]
    pub since: Option<String>,

    /// End; default now.
    #[arg(long)]
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
    #[arg(long, default_value = "24h")]
    pub since: String,

    /// End; default now.
    #[arg(long)]
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
