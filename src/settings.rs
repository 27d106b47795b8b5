//! Settings, resolved once per command: the raw command line ([`crate::cli`], what the
//! user typed, every file-backed flag an `Option`), the `NETLEDGER_*` environment and the
//! configuration file ([`crate::config`]) become one typed [`Settings`] value, which is
//! all the commands read (ripgrep's `LowArgs` → `HiArgs`).
//!
//! Precedence, everywhere: built-in defaults < file < environment < flags. The built-in
//! defaults are the documented file's values ([`crate::config::defaults`]): one source.
//! Every number and duration is checked against [`crate::config::LIMITS`] where it
//! enters, and an error names the flag, variable or key it came from.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{Days, Local, NaiveDate, TimeZone, Utc};
use ipnet::IpNet;

use crate::attribute::{Delegating, LocalNets};
use crate::cli::{self, AccountingArgs, Cli, ExportFormat, OutputArgs, RunArgs};
use crate::config::{
    check, defaults, env, ConfigError, FileConfig, Origin, TextfileAccess, Value, DEFAULT_CONFIG,
};
use crate::daemon::{DaemonConfig, LogLimits};
use crate::pass::PassConfig;
use crate::quota::{Policy, Threshold};
use crate::report::log::Template;
use crate::store::by_cgroup::Only;
use crate::store::metrics::UnitSeries;
use crate::store::query::{By, Period};
use crate::store::retention::Retention;
use crate::timespec::parse_time;

/// Events that make a daemon flush at once, whatever the flush interval.
const FLUSH_EVENTS: usize = 5000;
/// The daemon's event receive buffer at start (`--event-buffer`), bytes.
const EVENT_BUFFER: usize = 4 << 20;
/// Largest event receive buffer the daemon grows to after overruns, bytes.
const MAX_EVENT_BUFFER: usize = 64 << 20;
/// Longest time an event waits before it is written (`--flush-interval`).
const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Where sockets and processes are read from (`--proc-root`, hidden: tests).
const PROC_ROOT: &str = "/proc";

/// Everything a command reads, resolved.
#[derive(Debug)]
pub struct Settings {
    /// The database.
    pub db: PathBuf,
    /// Only errors on stderr.
    pub quiet: bool,
    /// The subcommand and its settings.
    pub command: Command,
}

/// A subcommand's resolved settings.
#[derive(Debug)]
pub enum Command {
    /// `snapshot`.
    Snapshot(Snapshot),
    /// `setup` (`--undo`).
    Setup {
        /// Undo instead.
        undo: bool,
        /// Install the owner-mark rules (`owner_mark`), else remove them.
        owner_mark: bool,
    },
    /// `top`.
    Top(Top),
    /// `job`.
    Job(Job),
    /// `report`.
    Report(Report),
    /// `export`.
    Export(Export),
    /// `config`.
    Config(ConfigShow),
    /// `run`.
    Run(Box<Run>),
    /// `connections`.
    Connections(Connections),
    /// `log`.
    Log(Log),
    /// `summary`.
    Summary(Summary),
    /// `live`.
    Live(Live),
    /// `check` (the monitoring plugin: its own exit codes).
    Check(Check),
    /// `quota` and `quota grant`.
    Quota(Quota),
    /// `metrics`.
    Metrics {
        /// Write here atomically instead of standard output.
        output: Option<PathBuf>,
        /// That file's mode and group.
        access: TextfileAccess,
        /// The units with series of their own.
        units: UnitSeries,
    },
}

/// `snapshot`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The pass.
    pub accounting: Accounting,
    /// Write the metrics here after the pass (flag over file; none by default).
    pub metrics_textfile: Option<PathBuf>,
    /// That file's mode and group.
    pub textfile_access: TextfileAccess,
    /// The units with series of their own in it.
    pub metrics_units: UnitSeries,
}

/// What a writer (`snapshot`, `run`) needs besides the daemon's own settings.
#[derive(Debug, Clone)]
pub struct Accounting {
    /// What one pass needs.
    pub pass: PassConfig,
    /// Set the prerequisites up when missing.
    pub setup: bool,
    /// How long to wait for another writer's lock.
    pub lock_timeout: Duration,
    /// How long each tier is kept.
    pub retention: Retention,
    /// Allowances, the billing cycle and the `on_quota` hook, judged after each commit.
    pub quota: Policy,
}

/// `run`: the daemon's settings, and how to resolve them again on SIGHUP.
#[derive(Debug)]
pub struct Run {
    /// The settings at start.
    pub daemon: DaemonConfig,
    /// Re-reads the file; the flags and the environment keep the values read at start.
    pub reload: Reload,
}

/// Resolves `run`'s settings again from the configuration file (SIGHUP).
#[derive(Debug, Clone)]
pub struct Reload {
    args: RunArgs,
    file: ConfigPath,
    quiet: bool,
}

impl Reload {
    /// The daemon's settings with the file as it is now.
    pub fn reload(&self) -> Result<DaemonConfig, ConfigError> {
        let file = self.file.load()?;
        daemon(&self.args, &file, &self.file, self.quiet)
    }
}

/// Where the configuration file is, and whether it was named (then it must exist).
#[derive(Debug, Clone)]
struct ConfigPath {
    path: PathBuf,
    explicit: bool,
}

impl ConfigPath {
    fn load(&self) -> Result<FileConfig, ConfigError> {
        FileConfig::load(&self.path, self.explicit)
    }

    /// The quota policy of `file` (loaded from this path).
    fn quota(&self, file: &FileConfig) -> Result<Policy, ConfigError> {
        crate::config::quota::policy(file, None, &self.path)
    }
}

/// How a report prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned table.
    Table,
    /// A JSON array.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Output settings shared by the reports.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// Table, JSON or CSV.
    pub format: Format,
    /// Exact byte counts.
    pub bytes: bool,
    /// Times in UTC.
    pub utc: bool,
}

impl From<&OutputArgs> for Output {
    fn from(a: &OutputArgs) -> Output {
        Output {
            format: if a.json {
                Format::Json
            } else if a.csv {
                Format::Csv
            } else {
                Format::Table
            },
            bytes: a.bytes,
            utc: a.utc,
        }
    }
}

/// A remote-name lookup file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamesFile {
    /// Its path.
    pub path: PathBuf,
    /// Named by the user (flag, variable or file): then it must exist; the default may not.
    pub required: bool,
}

/// `[since, until)`, epoch seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Start, included.
    pub since: i64,
    /// End, excluded.
    pub until: i64,
}

/// `top`.
#[derive(Debug)]
pub struct Top {
    /// The period.
    pub window: Window,
    /// Groupings besides the user (deduplicated, in the order given).
    pub by: Vec<By>,
    /// Only this user (a name or uid, resolved against the database).
    pub user: Option<String>,
    /// Only this unit's or job's traffic.
    pub only: Option<Only>,
    /// Rows at most.
    pub limit: usize,
    /// How to print.
    pub output: Output,
    /// Remote names.
    pub names: NamesFile,
}

/// `job`.
#[derive(Debug)]
pub struct Job {
    /// The Slurm job id.
    pub id: u64,
    /// The period.
    pub window: Window,
    /// `--since` was given (else the window begins where cgroups are kept, unsaid).
    pub since_given: bool,
    /// How to print.
    pub output: Output,
    /// Remote names.
    pub names: NamesFile,
}

/// `report`.
#[derive(Debug)]
pub struct Report {
    /// Length of a period.
    pub period: Period,
    /// The day billing cycles start on: months run from it (`cycle_day`, 1 to 28).
    pub cycle_day: u8,
    /// The span.
    pub window: Window,
    /// Only this user.
    pub user: Option<String>,
    /// How to print.
    pub output: Output,
}

/// `export`.
#[derive(Debug)]
pub struct Export {
    /// The span.
    pub window: Window,
    /// JSON Lines or CSV.
    pub format: ExportFormat,
}

/// `config`: the writers' settings as they would be without flags, and the names file.
#[derive(Debug)]
pub struct ConfigShow {
    /// Print the documented default file instead.
    pub default: bool,
    /// The daemon's settings (which include the timer's).
    pub daemon: DaemonConfig,
    /// The remote-name file.
    pub names: NamesFile,
    /// `snapshot`'s node_exporter textfile, if any.
    pub metrics_textfile: Option<PathBuf>,
    /// Its mode and group.
    pub textfile_access: TextfileAccess,
}

/// `connections`.
#[derive(Debug)]
pub struct Connections {
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
    /// Local networks.
    pub nets: LocalNets,
    /// Delegating services.
    pub delegating: Delegating,
    /// Only this user.
    pub user: Option<String>,
    /// Closed connections whose entries linger too.
    pub all: bool,
    /// JSON instead of a table.
    pub json: bool,
    /// Exact byte counts.
    pub bytes: bool,
}

/// `live`: refreshes of per-user rates, in memory.
#[derive(Debug, Clone)]
pub struct Live {
    /// Time between refreshes.
    pub interval: Duration,
    /// One refresh, then exit.
    pub once: bool,
    /// JSON lines instead of a table (one refresh).
    pub json: bool,
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
    /// Networks charged to nobody.
    pub nets: LocalNets,
    /// Services whose sockets are charged through their holders.
    pub delegating: Delegating,
    /// Whether owner marks may be believed (`owner_mark`; a disagreement a writer kept
    /// switches them off).
    pub owner_mark: bool,
}

/// `check`: the file's quota keys and the flags.
#[derive(Debug, Clone)]
pub struct Check {
    /// Allowances and the cycle.
    pub policy: Policy,
    /// WARNING threshold.
    pub warning: Threshold,
    /// CRITICAL threshold.
    pub critical: Threshold,
    /// Only this user.
    pub user: Option<String>,
    /// Judge the projection.
    pub estimate: bool,
    /// Stale data is UNKNOWN past this.
    pub max_age: Option<Duration>,
    /// Cycles in UTC.
    pub utc: bool,
    /// The instant judged.
    pub now: i64,
}

/// `quota` (and `quota grant`).
#[derive(Debug, Clone)]
pub struct Quota {
    /// Allowances and the cycle.
    pub policy: Policy,
    /// Where unprivileged callers read their view file.
    pub view_dir: PathBuf,
    /// Cycles in UTC.
    pub utc: bool,
    /// The instant judged.
    pub now: i64,
    /// Read the database (root), or the caller's own view file.
    pub privileged: bool,
    /// `quota grant USER SIZE`: the user and the bytes.
    pub grant: Option<(String, u64)>,
    /// Only this user.
    pub user: Option<String>,
    /// JSON instead of a table.
    pub json: bool,
    /// Exact byte counts.
    pub bytes: bool,
}

/// `log`.
#[derive(Debug)]
pub struct Log {
    /// Connections that ended in this span.
    pub window: Window,
    /// Only with an address in this network.
    pub host: Option<IpNet>,
    /// Only with this port.
    pub port: Option<u16>,
    /// Only this user.
    pub user: Option<String>,
    /// One line per connection from this template (JSON when `json`).
    pub template: Template,
    /// A JSON array instead.
    pub json: bool,
    /// Times in UTC.
    pub utc: bool,
}

/// `summary`.
#[derive(Debug)]
pub struct Summary {
    /// The day.
    pub date: NaiveDate,
    /// Its span (23 or 25 hours across DST).
    pub window: Window,
    /// Only this user.
    pub user: Option<String>,
    /// Remote names.
    pub names: NamesFile,
    /// JSON instead of a table.
    pub json: bool,
    /// The day in UTC.
    pub utc: bool,
}

/// Resolve the command line against the process environment and the configuration file.
pub fn resolve(cli: Cli) -> anyhow::Result<Settings> {
    resolve_with(cli, &|var| std::env::var_os(var))
}

/// [`resolve`] with the environment given (tests).
pub fn resolve_with(cli: Cli, vars: &dyn Fn(&str) -> Option<OsString>) -> anyhow::Result<Settings> {
    let env = Env(vars);
    let (config, file) = load_config(&cli, &env)?;
    let db = match cli.db {
        Some(db) => db,
        None => env
            .path(env::DB)?
            .or_else(|| file.db.clone())
            .or_else(|| defaults().db.clone())
            .expect("the documented defaults name the database"),
    };
    let quiet = cli.quiet;
    let command = match cli.command {
        cli::Command::Snapshot(a) => Command::Snapshot(Snapshot {
            accounting: accounting(&with_env(a.accounting, &env)?, &file, &config)?,
            metrics_textfile: a.metrics_textfile.or_else(|| file.metrics_textfile.clone()),
            textfile_access: file.textfile_access(&config.path)?,
            metrics_units: file.metrics_units(&config.path)?,
        }),
        cli::Command::Setup(a) => Command::Setup {
            undo: a.undo,
            owner_mark: owner_mark(&file),
        },
        cli::Command::Run(a) => Command::Run(Box::new(run(a, &env, &file, config, quiet)?)),
        cli::Command::Config(a) => Command::Config(config_show(a, &env, &file, &config, quiet)?),
        cli::Command::Connections(a) => Command::Connections(connections(a, &env, &file)?),
        cli::Command::Top(a) => Command::Top(top(a, vars, &env, &file)?),
        cli::Command::Job(a) => Command::Job(job(a, vars, &env, &file)?),
        cli::Command::Report(a) => Command::Report(report(a, vars, &file)?),
        cli::Command::Export(a) => Command::Export(Export {
            window: window(vars, a.utc, Some(&a.since), a.until.as_deref())?,
            format: a.format,
        }),
        cli::Command::Log(a) => Command::Log(Log {
            window: window(vars, a.utc, Some(&a.since), a.until.as_deref())?,
            host: a.host,
            port: a.port,
            user: a.user,
            template: a.format.unwrap_or_default(),
            json: a.json,
            utc: a.utc,
        }),
        cli::Command::Summary(a) => {
            check_tz(vars, a.utc)?;
            let (date, window) = day(&a.date, a.utc)?;
            Command::Summary(Summary {
                date,
                window,
                user: a.user,
                names: names(a.names, &env, &file)?,
                json: a.json,
                utc: a.utc,
            })
        }
        cli::Command::Metrics(a) => Command::Metrics {
            access: file.textfile_access(&config.path)?,
            output: a.output,
            units: file.metrics_units(&config.path)?,
        },
        cli::Command::Check(a) => Command::Check(Check {
            policy: config.quota(&file)?,
            warning: a.warning,
            critical: a.critical,
            user: a.user,
            estimate: a.estimate,
            max_age: a.max_age,
            utc: a.utc,
            now: a.now.unwrap_or_else(|| Utc::now().timestamp()),
        }),
        cli::Command::Quota(a) => Command::Quota(quota(a, &env, &file, &config)?),
        cli::Command::Live(a) => Command::Live(live(a, &env, &file)?),
    };
    Ok(Settings { db, quiet, command })
}

/// The configuration file named by the flag, the environment or the default, read.
fn load_config(cli: &Cli, env: &Env) -> anyhow::Result<(ConfigPath, FileConfig)> {
    let config = ConfigPath {
        path: cli
            .config
            .clone()
            .or(env.path(env::CONFIG)?)
            .unwrap_or_else(|| DEFAULT_CONFIG.into()),
        explicit: cli.config.is_some() || (env.0)(env::CONFIG).is_some(),
    };
    let file = match config.load() {
        // An unprivileged `quota` reads its own view file, which holds all it shows: the
        // configuration (0640, root's) need not be readable (issue 19).
        Err(ConfigError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied
                && matches!(cli.command, cli::Command::Quota(_)) =>
        {
            FileConfig::default()
        }
        other => other?,
    };
    Ok((config, file))
}

/// `config`: the daemon's settings as the file and the environment make them.
fn config_show(
    a: cli::ConfigArgs,
    env: &Env,
    file: &FileConfig,
    config: &ConfigPath,
    quiet: bool,
) -> Result<ConfigShow, ConfigError> {
    Ok(ConfigShow {
        default: a.default,
        daemon: daemon(
            &RunArgs {
                accounting: with_env(AccountingArgs::default(), env)?,
                ..RunArgs::default()
            },
            file,
            config,
            quiet,
        )?,
        names: names(None, env, file)?,
        metrics_textfile: file.metrics_textfile.clone(),
        textfile_access: file.textfile_access(&config.path)?,
    })
}

/// `connections`: the proc root, the local networks and the delegating uids.
fn connections(
    a: cli::ConnectionsArgs,
    env: &Env,
    file: &FileConfig,
) -> Result<Connections, ConfigError> {
    let acc = with_env(AccountingArgs::default(), env)?;
    Ok(Connections {
        proc_root: a.proc_root.unwrap_or_else(|| PROC_ROOT.into()),
        nets: local_nets(&acc, file),
        delegating: delegation(&acc, file)?.0,
        user: a.user,
        all: a.all,
        json: a.json,
        bytes: a.bytes,
    })
}

/// `report`: the window (by default as long as the period asks), the billing cycle's day.
fn report(
    a: cli::ReportArgs,
    vars: &dyn Fn(&str) -> Option<OsString>,
    file: &FileConfig,
) -> anyhow::Result<Report> {
    let output = Output::from(&a.output);
    let since = a.since.as_deref().unwrap_or(match a.period {
        Period::Hour => "24h",
        Period::Day => "30d",
        Period::Week => "84d",
        Period::Month => "365d",
    });
    Ok(Report {
        period: a.period,
        cycle_day: file
            .cycle_day
            .as_ref()
            .and_then(|d| u8::try_from(*d.get_ref()).ok())
            .unwrap_or(1),
        window: window(vars, output.utc, Some(since), a.until.as_deref())?,
        user: a.user,
        output,
    })
}

/// `quota`: the policy, the view directory, the grant to make.
fn quota(
    a: cli::QuotaArgs,
    env: &Env,
    file: &FileConfig,
    config: &ConfigPath,
) -> Result<Quota, ConfigError> {
    let policy = config.quota(file)?;
    let (utc, now) = match &a.action {
        Some(cli::QuotaAction::Grant { utc, now, .. }) => (*utc, *now),
        None => (a.utc, a.now),
    };
    let view_dir = match a.view_dir {
        Some(d) => d,
        None => env
            .path(env::QUOTA_VIEW_DIR)?
            .unwrap_or_else(|| policy.view_dir.clone()),
    };
    Ok(Quota {
        view_dir,
        policy,
        utc,
        now: now.unwrap_or_else(|| Utc::now().timestamp()),
        privileged: rustix::process::geteuid().is_root(),
        grant: a
            .action
            .map(|cli::QuotaAction::Grant { user, size, .. }| (user, size)),
        user: a.user,
        json: a.json,
        bytes: a.bytes,
    })
}

/// `live`: the interval, the local networks, the delegating uids, the owner mark.
fn live(a: cli::LiveArgs, env: &Env, file: &FileConfig) -> Result<Live, ConfigError> {
    flag("live_interval", Some(Value::Duration(a.interval)))?;
    let acc = with_env(AccountingArgs::default(), env)?;
    Ok(Live {
        interval: a.interval,
        once: a.once,
        json: a.json,
        proc_root: a.proc_root,
        nets: local_nets(&acc, file),
        delegating: delegation(&acc, file)?.0,
        owner_mark: owner_mark(file),
    })
}

/// `run`: the flags (with the environment in) checked, then over the file.
fn run(
    mut a: RunArgs,
    env: &Env,
    file: &FileConfig,
    config: ConfigPath,
    quiet: bool,
) -> Result<Run, ConfigError> {
    a.accounting = with_env(a.accounting, env)?;
    if a.event_buffer.is_none() {
        a.event_buffer = env.bytes(env::EVENT_BUFFER, "event_buffer")?;
    }
    flag("interval", a.interval.map(Value::Duration))?;
    flag("flush_interval", a.flush_interval.map(Value::Duration))?;
    flag(
        "event_buffer",
        a.event_buffer.map(|n| Value::Count(n as u64)),
    )?;
    flag(
        "connection_log_rate",
        a.connection_log_rate.map(|n| Value::Count(n.into())),
    )?;
    flag(
        "connection_log_burst",
        a.connection_log_burst.map(|n| Value::Count(n.into())),
    )?;
    Ok(Run {
        daemon: daemon(&a, file, &config, quiet)?,
        reload: Reload {
            args: a,
            file: config,
            quiet,
        },
    })
}

/// `top`: the window, the groupings (the user is always one), the names file.
fn top(
    a: cli::TopArgs,
    vars: &dyn Fn(&str) -> Option<OsString>,
    env: &Env,
    file: &FileConfig,
) -> Result<Top, ConfigError> {
    flag("limit", Some(Value::Count(a.limit as u64)))?;
    let output = Output::from(&a.output);
    let window = window(vars, output.utc, Some(&a.since), a.until.as_deref())?;
    let mut by = Vec::new();
    for b in a.by {
        if b != By::User && !by.contains(&b) {
            by.push(b);
        }
    }
    let only = match (a.unit, a.job) {
        (Some(unit), _) => Some(Only::Unit(unit)),
        (None, Some(job)) => Some(Only::Job(job)),
        (None, None) => None,
    };
    Ok(Top {
        window,
        by,
        user: a.user,
        only,
        limit: a.limit,
        output,
        names: names(a.names, env, file)?,
    })
}

/// `job`: the window (by default from the beginning: all that is kept per cgroup).
fn job(
    a: cli::JobArgs,
    vars: &dyn Fn(&str) -> Option<OsString>,
    env: &Env,
    file: &FileConfig,
) -> Result<Job, ConfigError> {
    let output = Output::from(&a.output);
    // Without --since, from the epoch: any --until is after it.
    let since = a.since.as_deref().unwrap_or("1970-01-02");
    let mut window = window(vars, output.utc, Some(since), a.until.as_deref())?;
    if a.since.is_none() {
        window.since = 0;
    }
    Ok(Job {
        id: a.id,
        window,
        since_given: a.since.is_some(),
        output,
        names: names(a.names, env, file)?,
    })
}

/// A flag's value, checked against its limit when it was given (the key is its name).
fn flag(key: &str, v: Option<Value>) -> Result<(), ConfigError> {
    v.map_or(Ok(()), |v| check(key, v, Origin::Flag))
}

/// The accounting flags with the environment's values where no flag was given, checked.
fn with_env(mut a: AccountingArgs, env: &Env) -> Result<AccountingArgs, ConfigError> {
    flag("lock_timeout", a.lock_timeout.map(Value::Duration))?;
    flag("prune_after", a.prune_after.map(|n| Value::Count(n.into())))?;
    flag("delegate_grace", a.delegate_grace.map(Value::Duration))?;
    if a.local_nets.is_empty() && !a.count_local {
        match env.nets(env::LOCAL_NETWORKS)? {
            Some(nets) if nets.is_empty() => a.count_local = true,
            Some(nets) => a.local_nets = nets,
            None => {}
        }
    }
    if a.delegating_uids.is_empty() {
        if let Some(list) = env.get(env::DELEGATING_UIDS)? {
            a.delegating_uids = list.split(',').map(|s| s.trim().to_owned()).collect();
        }
    }
    if a.delegate_grace.is_none() {
        a.delegate_grace = env.duration(env::DELEGATE_GRACE, "delegate_grace")?;
    }
    Ok(a)
}

/// The local networks: flags (or environment) over the file over the defaults.
fn local_nets(a: &AccountingArgs, file: &FileConfig) -> LocalNets {
    if a.count_local {
        LocalNets::new([])
    } else if !a.local_nets.is_empty() {
        LocalNets::new(a.local_nets.iter().copied())
    } else {
        let nets = file
            .local_networks
            .as_ref()
            .or(defaults().local_networks.as_ref())
            .expect("the documented defaults list the local networks");
        LocalNets::new(nets.iter().copied())
    }
}

fn delegation(
    a: &AccountingArgs,
    file: &FileConfig,
) -> Result<(Delegating, Duration), ConfigError> {
    let (delegating, grace) = file
        .delegation(&a.delegating_uids, a.delegate_grace)
        .map_err(|reason| ConfigError::Invalid { reason })?;
    Ok((delegating, grace))
}

/// Whether the owner-mark rules are installed and marks read: the file over the default.
fn owner_mark(file: &FileConfig) -> bool {
    file.owner_mark
        .or(defaults().owner_mark)
        .expect("documented default")
}

/// The shared writer settings.
fn accounting(
    a: &AccountingArgs,
    file: &FileConfig,
    config: &ConfigPath,
) -> Result<Accounting, ConfigError> {
    let d = defaults();
    let (delegating, delegate_grace) = delegation(a, file)?;
    let proc_root: PathBuf = a.proc_root.clone().unwrap_or_else(|| PROC_ROOT.into());
    Ok(Accounting {
        pass: PassConfig {
            proc_root: proc_root.clone(),
            nets: local_nets(a, file),
            prune_after: a
                .prune_after
                .or(file.prune_after)
                .or(d.prune_after)
                .expect("documented default"),
            delegating,
            delegate_grace,
            marks: crate::owner_mark::trust::MarkTrust::new(owner_mark(file), &proc_root),
            destroys_follow: false,
            destroys_lost_before: None,
            cgroups: Default::default(),
        },
        setup: !a.no_setup,
        lock_timeout: a
            .lock_timeout
            .or(file.lock_timeout)
            .or(d.lock_timeout)
            .expect("documented default"),
        retention: file
            .retention()
            .map_err(|reason| ConfigError::Invalid { reason })?,
        quota: config.quota(file)?,
    })
}

/// The daemon's settings: flags (checked, with the environment in) over the file over the
/// defaults.
fn daemon(
    a: &RunArgs,
    file: &FileConfig,
    config: &ConfigPath,
    quiet: bool,
) -> Result<DaemonConfig, ConfigError> {
    let d = defaults();
    let acc = accounting(&a.accounting, file, config)?;
    Ok(DaemonConfig {
        // Every flow's DESTROY is heard: see `Hold::destroys_follow`.
        pass: PassConfig {
            destroys_follow: true,
            cgroups: Default::default(),
            ..acc.pass
        },
        interval: a
            .interval
            .or(file.interval)
            .or(d.interval)
            .expect("documented default"),
        flush_interval: a.flush_interval.unwrap_or(FLUSH_INTERVAL),
        flush_events: FLUSH_EVENTS,
        connection_log: !a.no_connection_log
            && file
                .connection_log
                .or(d.connection_log)
                .expect("documented default"),
        log_limits: LogLimits {
            local: a.connection_log_local
                || file
                    .connection_log_local
                    .or(d.connection_log_local)
                    .expect("documented default"),
            rate: a
                .connection_log_rate
                .or(file.connection_log_rate)
                .or(d.connection_log_rate)
                .expect("documented default"),
            burst: a
                .connection_log_burst
                .or(file.connection_log_burst)
                .or(d.connection_log_burst)
                .expect("documented default"),
        },
        event_buffer: a.event_buffer.unwrap_or(EVENT_BUFFER),
        max_event_buffer: MAX_EVENT_BUFFER,
        setup: acc.setup,
        lock_timeout: acc.lock_timeout,
        quiet,
        retention: acc.retention,
        metrics_listen: a.metrics_listen.or(file.metrics_listen),
        metrics_units: file.metrics_units(&config.path)?,
        quota: acc.quota,
    })
}

/// The remote-name file: flag over environment over file (all required to exist) over
/// the default (used when it exists).
fn names(flag: Option<PathBuf>, env: &Env, file: &FileConfig) -> Result<NamesFile, ConfigError> {
    let named = match flag {
        Some(p) => Some(p),
        None => env.path(env::NAMES)?.or_else(|| file.names.clone()),
    };
    Ok(match named {
        Some(path) => NamesFile {
            path,
            required: true,
        },
        None => NamesFile {
            path: defaults()
                .names
                .clone()
                .expect("the documented defaults name the names file"),
            required: false,
        },
    })
}

/// `TZ` must name a zone unless `--utc`: chrono would silently use another one.
fn check_tz(vars: &dyn Fn(&str) -> Option<OsString>, utc: bool) -> Result<(), ConfigError> {
    match vars("TZ") {
        Some(tz) if !utc => match tz.to_str() {
            Some(s) if crate::timespec::tz_is_valid(s) => Ok(()),
            _ => Err(ConfigError::Tz {
                value: tz.to_string_lossy().into_owned(),
            }),
        },
        _ => Ok(()),
    }
}

/// `--since`/`--until` against the clock now. A value that does not read, or an empty
/// period, is a usage error naming the flag.
fn window(
    vars: &dyn Fn(&str) -> Option<OsString>,
    utc: bool,
    since: Option<&str>,
    until: Option<&str>,
) -> Result<Window, ConfigError> {
    check_tz(vars, utc)?;
    let since = since.unwrap_or("24h");
    let now = Utc::now();
    let time =
        |flag, spec| parse_time(spec, now, utc).map_err(|error| ConfigError::Time { flag, error });
    let start = time("--since", since)?;
    let end = match until {
        Some(u) => time("--until", u)?,
        // Rows carry their pass's start second: include the current one.
        None => now.timestamp() + 1,
    };
    if end <= start {
        return Err(ConfigError::EmptyPeriod {
            since: since.to_owned(),
            until: until.unwrap_or("now").to_owned(),
        });
    }
    Ok(Window {
        since: start,
        until: end,
    })
}

/// The day `spec` names and its span (23 or 25 hours across DST).
fn day(spec: &str, utc: bool) -> anyhow::Result<(NaiveDate, Window)> {
    let now = Utc::now();
    let time = |spec: &str| {
        parse_time(spec, now, utc).map_err(|error| ConfigError::Time {
            flag: "--date",
            error,
        })
    };
    let start = time(spec)?;
    let date = if utc {
        Utc.timestamp_opt(start, 0).single().map(|t| t.date_naive())
    } else {
        Local
            .timestamp_opt(start, 0)
            .single()
            .map(|t| t.date_naive())
    }
    .ok_or_else(|| {
        anyhow::anyhow!("cannot read date {spec:?}: use a date (2026-11-01), today or yesterday")
    })?;
    let next = date
        .checked_add_days(Days::new(1))
        .ok_or_else(|| anyhow::anyhow!("date {spec:?} is out of range"))?;
    let since = time(&date.format("%Y-%m-%d").to_string())?;
    let until = time(&next.format("%Y-%m-%d").to_string())?;
    Ok((date, Window { since, until }))
}

/// Reads one variable at a time, naming it in errors.
struct Env<'a>(&'a dyn Fn(&str) -> Option<OsString>);

impl Env<'_> {
    /// The variable's value; set but empty is an error (it is never meant).
    fn get(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        match (self.0)(var) {
            None => Ok(None),
            Some(v) if v.is_empty() => Err(ConfigError::EmptyEnv { var }),
            Some(v) => v.into_string().map(Some).map_err(|v| ConfigError::BadEnv {
                var,
                value: v.to_string_lossy().into_owned(),
                reason: "not valid UTF-8".into(),
            }),
        }
    }

    fn path(&self, var: &'static str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.get(var)?.map(PathBuf::from))
    }

    fn nets(&self, var: &'static str) -> Result<Option<Vec<IpNet>>, ConfigError> {
        let Some(value) = self.get(var)? else {
            return Ok(None);
        };
        value
            .split(',')
            .map(|item| {
                item.trim()
                    .parse::<IpNet>()
                    .map_err(|_| ConfigError::BadEnv {
                        var,
                        value: value.clone(),
                        reason: format!(
                            "{:?} is not a network (ADDRESS/PREFIX, such as 10.0.0.0/8; \
                             separate several with commas)",
                            item.trim()
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn bytes(&self, var: &'static str, key: &str) -> Result<Option<usize>, ConfigError> {
        let Some(value) = self.get(var)? else {
            return Ok(None);
        };
        let n: u64 = value.trim().parse().map_err(|_| ConfigError::BadEnv {
            var,
            value: value.clone(),
            reason: "not a number of bytes".into(),
        })?;
        check(key, Value::Count(n), Origin::Env(var))?;
        Ok(Some(n as usize))
    }

    fn duration(&self, var: &'static str, key: &str) -> Result<Option<Duration>, ConfigError> {
        let Some(value) = self.get(var)? else {
            return Ok(None);
        };
        let d = humantime::parse_duration(value.trim()).map_err(|_| ConfigError::BadEnv {
            var,
            value: value.clone(),
            reason: "not a duration (write it like 500ms, 10s, 5m)".into(),
        })?;
        check(key, Value::Duration(d), Origin::Env(var))?;
        Ok(Some(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    fn resolve_from(args: &[&str], vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let cli =
            Cli::try_parse_from(std::iter::once("netledger").chain(args.iter().copied())).unwrap();
        let vars: Vec<(String, OsString)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.into()))
            .collect();
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        resolve_with(cli, &get)
    }

    fn config_error(r: anyhow::Result<Settings>) -> ConfigError {
        r.unwrap_err().downcast::<ConfigError>().unwrap()
    }

    fn daemon_of(s: &Settings) -> &DaemonConfig {
        match &s.command {
            Command::Run(r) => &r.daemon,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn environment_values_are_checked_and_named() {
        let conf = ["--config", "/dev/null"];
        let with = |more: &[&'static str]| -> Vec<&'static str> {
            conf.iter().chain(more).copied().collect()
        };
        let e = config_error(resolve_from(&with(&["top"]), &[("NETLEDGER_DB", "")]));
        assert!(
            e.is_usage() && e.to_string().contains("NETLEDGER_DB"),
            "{e}"
        );
        let e = config_error(resolve_from(
            &with(&["run"]),
            &[("NETLEDGER_EVENT_BUFFER", "lots")],
        ));
        assert!(
            e.to_string().contains("NETLEDGER_EVENT_BUFFER=\"lots\""),
            "{e}"
        );
        let s = resolve_from(&with(&["run"]), &[("NETLEDGER_EVENT_BUFFER", "65536")]).unwrap();
        assert_eq!(daemon_of(&s).event_buffer, 65536);
        // The flag wins over the variable, which is then not read at all.
        let s = resolve_from(
            &with(&["run", "--event-buffer", "4096"]),
            &[("NETLEDGER_EVENT_BUFFER", "0")],
        )
        .unwrap();
        assert_eq!(daemon_of(&s).event_buffer, 4096);
        let e = config_error(resolve_from(&with(&["log"]), &[("TZ", "Mars/Olympus")]));
        assert!(matches!(e, ConfigError::Tz { .. }), "{e}");
        assert!(resolve_from(&with(&["log", "--utc"]), &[("TZ", "Mars/Olympus")]).is_ok());
        let e = config_error(resolve_from(
            &with(&["snapshot"]),
            &[("NETLEDGER_DELEGATE_GRACE", "1h")],
        ));
        assert!(
            e.is_usage() && e.to_string().contains("NETLEDGER_DELEGATE_GRACE"),
            "{e}"
        );
    }

    #[test]
    fn snapshot_and_run_resolve_the_same_accounting_from_the_same_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("n.toml");
        std::fs::write(
            &conf,
            "prune_after = 9\nlock_timeout = \"7s\"\nlocal_networks = [\"10.0.0.0/8\"]\n\
             delegating_uids = [33]\ndelegate_grace = \"4s\"\n",
        )
        .unwrap();
        let c = conf.to_str().unwrap();
        let vars = [("NETLEDGER_LOCAL_NETWORKS", "192.0.2.0/24")];
        let snap = resolve_from(&["--config", c, "snapshot", "--prune-after", "4"], &vars).unwrap();
        let run = resolve_from(&["--config", c, "run", "--prune-after", "4"], &vars).unwrap();
        let Command::Snapshot(s) = &snap.command else {
            panic!()
        };
        let a = &s.accounting;
        let d = daemon_of(&run);
        for (pass, lock) in [(&a.pass, a.lock_timeout), (&d.pass, d.lock_timeout)] {
            assert_eq!(pass.prune_after, 4, "flag over file");
            assert_eq!(lock, Duration::from_secs(7), "file over default");
            assert_eq!(pass.nets.nets(), ["192.0.2.0/24".parse::<IpNet>().unwrap()]);
            assert_eq!(pass.delegating.uids(), [33]);
            assert_eq!(pass.delegate_grace, Duration::from_secs(4));
        }
        // `connections` and `config` read the same environment and file.
        let s = resolve_from(&["--config", c, "connections"], &vars).unwrap();
        let Command::Connections(x) = &s.command else {
            panic!()
        };
        assert_eq!(x.nets.nets(), ["192.0.2.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(x.delegating.uids(), [33]);
    }

    /// `metrics_units` reaches the three writers of the metrics (`metrics`, `snapshot`'s
    /// textfile, the daemon's endpoint); off without the key. `top --unit|--job` and
    /// `job` resolve their filter and window.
    #[test]
    fn metrics_units_reach_every_metrics_writer_and_cgroup_filters_resolve() {
        use crate::store::metrics::UnitSeries;
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("n.toml");
        std::fs::write(&conf, "metrics_units = [\"nginx.service\"]\n").unwrap();
        let c = conf.to_str().unwrap();
        let want = UnitSeries::Units(vec!["nginx.service".into()]);
        let s = resolve_from(&["--config", c, "metrics"], &[]).unwrap();
        assert!(matches!(&s.command, Command::Metrics { units, .. } if *units == want));
        let s = resolve_from(&["--config", c, "snapshot"], &[]).unwrap();
        assert!(matches!(&s.command, Command::Snapshot(x) if x.metrics_units == want));
        let s = resolve_from(&["--config", c, "run"], &[]).unwrap();
        assert_eq!(daemon_of(&s).metrics_units, want);
        let s = resolve_from(&["--config", "/dev/null", "run"], &[]).unwrap();
        assert_eq!(daemon_of(&s).metrics_units, UnitSeries::Off);

        let top = |args: &[&str]| match resolve_from(args, &[]).unwrap().command {
            Command::Top(t) => t.only,
            other => panic!("{other:?}"),
        };
        assert_eq!(top(&["--config", "/dev/null", "top"]), None);
        assert_eq!(
            top(&["--config", "/dev/null", "top", "--job", "42"]),
            Some(Only::Job(42))
        );
        assert_eq!(
            top(&["--config", "/dev/null", "top", "--unit", "x.service"]),
            Some(Only::Unit("x.service".into()))
        );
        let job = |args: &[&str]| match resolve_from(args, &[]).unwrap().command {
            Command::Job(j) => j,
            other => panic!("{other:?}"),
        };
        // From the beginning by default, whatever --until says.
        let j = job(&[
            "--config",
            "/dev/null",
            "job",
            "42",
            "--until",
            "2020-01-01",
            "--utc",
        ]);
        assert_eq!((j.id, j.window.since, j.since_given), (42, 0, false));
        assert_eq!(j.window.until, 1_577_836_800);
        let j = job(&[
            "--config",
            "/dev/null",
            "job",
            "42",
            "--since",
            "2020-01-01",
            "--utc",
        ]);
        assert_eq!((j.window.since, j.since_given), (1_577_836_800, true));
    }

    /// Issue 24: the connection log's limits, flags over the file over the defaults, each
    /// checked where it enters, naming the flag or the key.
    #[test]
    fn connection_log_limits_are_resolved_and_checked() {
        let s = resolve_from(&["--config", "/dev/null", "run"], &[]).unwrap();
        let l = daemon_of(&s).log_limits;
        assert_eq!((l.local, l.rate, l.burst), (false, 200, 100_000));
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("n.toml");
        std::fs::write(
            &conf,
            "connection_log_local = true\nconnection_log_rate = 5\nconnection_log_burst = 9\n",
        )
        .unwrap();
        let c = conf.to_str().unwrap();
        let s = resolve_from(&["--config", c, "run", "--connection-log-rate", "7"], &[]).unwrap();
        let l = daemon_of(&s).log_limits;
        assert_eq!((l.local, l.rate, l.burst), (true, 7, 9));
        let e = config_error(resolve_from(
            &["--config", c, "run", "--connection-log-burst", "0"],
            &[],
        ));
        assert_eq!(
            e.to_string(),
            "--connection-log-burst 0 is out of range: it must be 1 to 10000000"
        );
        std::fs::write(&conf, "connection_log_rate = 0\n").unwrap();
        let e = config_error(resolve_from(&["--config", c, "run"], &[]));
        assert!(e.is_usage());
        assert_eq!(
            e.to_string(),
            format!(
                "configuration {c}: connection_log_rate = 0 is out of range: it must be 1 to \
                 1000000"
            )
        );
    }

    #[test]
    fn defaults_come_from_the_documented_file() {
        let s = resolve_from(&["--config", "/dev/null", "run"], &[]).unwrap();
        let d = daemon_of(&s);
        let def = defaults();
        assert_eq!(s.db, def.db.clone().unwrap());
        assert_eq!(Some(d.interval), def.interval);
        assert_eq!(Some(d.lock_timeout), def.lock_timeout);
        assert_eq!(Some(d.pass.prune_after), def.prune_after);
        assert_eq!(d.pass.nets.nets(), def.local_networks.as_deref().unwrap());
        assert_eq!(d.pass.proc_root, Path::new("/proc"));
    }
}
