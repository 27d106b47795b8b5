//! The configuration file (`/etc/netledger/netledger.toml`), the names of the
//! `NETLEDGER_*` variables, the built-in defaults ([`defaults`]: the documented file's
//! values) and the range of every setting. How they combine with the flags is
//! [`crate::settings`]'s: built-in defaults < file < environment < flags.
//!
//! Every number and duration has a range, in one table ([`LIMITS`]), checked where the
//! value enters: the file when it is loaded (so a SIGHUP reload is checked too), the
//! environment when it is read and the flags when they are resolved. Out of range, like
//! any value that does not read, is a usage error naming the flag, variable or key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::timespec::BadTime;

pub mod quota;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/netledger/netledger.toml";

/// The documented default configuration file (`netledger config --default`).
pub const DEFAULT_TOML: &str = include_str!("../contrib/netledger.toml");

/// The environment variables netledger reads (besides `NETLEDGER_LOG` and `TZ`).
pub mod env {
    /// Database path (`--db`).
    pub const DB: &str = "NETLEDGER_DB";
    /// Configuration file (`--config`).
    pub const CONFIG: &str = "NETLEDGER_CONFIG";
    /// Local networks, comma-separated (`--local-net`).
    pub const LOCAL_NETWORKS: &str = "NETLEDGER_LOCAL_NETWORKS";
    /// Remote-name lookup file (`--names`).
    pub const NAMES: &str = "NETLEDGER_NAMES";
    /// The daemon's initial event buffer (`--event-buffer`).
    pub const EVENT_BUFFER: &str = "NETLEDGER_EVENT_BUFFER";
    /// Where `quota` reads an unprivileged caller's view file (`quota --view-dir`).
    pub const QUOTA_VIEW_DIR: &str = "NETLEDGER_QUOTA_VIEW_DIR";
    /// Delegating services' uids or names, comma-separated (`--delegating-uid`).
    pub const DELEGATING_UIDS: &str = "NETLEDGER_DELEGATING_UIDS";
    /// How long a young flow on a delegating service's socket waits (`--delegate-grace`).
    pub const DELEGATE_GRACE: &str = "NETLEDGER_DELEGATE_GRACE";
}

/// The built-in defaults: the documented default file's values, parsed once. Every
/// setting the file can hold has its default there and nowhere else.
pub fn defaults() -> &'static FileConfig {
    static DEFAULTS: std::sync::OnceLock<FileConfig> = std::sync::OnceLock::new();
    DEFAULTS.get_or_init(|| {
        FileConfig::parse(DEFAULT_TOML, Path::new("(built-in defaults)"))
            .expect("the documented default configuration parses")
    })
}

/// The range of a bounded setting, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// A duration.
    Duration(Duration, Duration),
    /// A count.
    Count(u64, u64),
    /// A size in bytes.
    Bytes(u64, u64),
}

/// A bounded setting: its key in the configuration file (the flag's name without dashes
/// for settings that are flags only), its flag, and its range.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Configuration key (`retention.raw`), or the setting's name.
    pub key: &'static str,
    /// The flag that sets it, if any.
    pub flag: Option<&'static str>,
    /// Allowed values.
    pub range: Range,
}

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

const MINUTE: u64 = 60;
const HOUR: u64 = 3600;
const DAY: u64 = 86_400;
/// humantime's year: 365.25 days.
const YEAR: u64 = 31_557_600;

/// Every number and duration netledger takes, with its range. The reasons:
/// - `interval`: under a second a pass starts as soon as the last ended (a busy loop); over
///   an hour the rollup after each pass (a bounded batch) falls behind a busy host.
/// - `live_interval` (`live --interval`): under 200 ms a refresh (a dump and a socket
///   read) takes most of the interval on a busy host; over an hour it is not live.
/// - `flush_interval`: 0 writes a transaction per event batch; over a minute the daemon
///   holds that much in memory and logs connections late.
/// - `lock_timeout`: 0 gives up at once (allowed); past 10 minutes a timer's passes pile up.
/// - `prune_after`: 0 would forget a flow missing from one dump; the state of flows gone
///   for 1,000 passes is garbage.
/// - `event_buffer`: the kernel rounds tiny buffers up (tests use 1 B); the daemon grows the
///   buffer up to 64 MiB on overruns, so starting above that is a mistake.
/// - retention: under an hour, raw rows would roll up before their hour is complete; a
///   century is kept as "forever" would be, and more overflows the clock arithmetic.
/// - `delegate_grace`: past 10 minutes a service's own flows wait uncharged too long (sshd's
///   own LoginGraceTime default is 2 minutes).
/// - `limit`: 0 rows is no report.
/// - `connection_log_rate` (rows a second) and `connection_log_burst` (rows): 0 would log
///   nothing (`connection_log = false` says that); past a million a second, or a burst
///   of ten million rows (about 400 MB), the limit bounds nothing a disk would notice.
pub const LIMITS: &[Limit] = &[
    Limit {
        key: "interval",
        flag: Some("--interval"),
        range: Range::Duration(secs(1), secs(HOUR)),
    },
    Limit {
        key: "live_interval",
        flag: Some("--interval"),
        range: Range::Duration(Duration::from_millis(200), secs(HOUR)),
    },
    Limit {
        key: "flush_interval",
        flag: Some("--flush-interval"),
        range: Range::Duration(Duration::from_millis(10), secs(MINUTE)),
    },
    Limit {
        key: "lock_timeout",
        flag: Some("--lock-timeout"),
        range: Range::Duration(secs(0), secs(10 * MINUTE)),
    },
    Limit {
        key: "prune_after",
        flag: Some("--prune-after"),
        range: Range::Count(1, 1000),
    },
    Limit {
        key: "event_buffer",
        flag: Some("--event-buffer"),
        range: Range::Bytes(1, 64 << 20),
    },
    Limit {
        key: "delegate_grace",
        flag: Some("--delegate-grace"),
        range: Range::Duration(secs(0), MAX_DELEGATE_GRACE),
    },
    Limit {
        key: "limit",
        flag: Some("--limit"),
        range: Range::Count(1, 1_000_000),
    },
    Limit {
        key: "connection_log_rate",
        flag: Some("--connection-log-rate"),
        range: Range::Count(1, 1_000_000),
    },
    Limit {
        key: "connection_log_burst",
        flag: Some("--connection-log-burst"),
        range: Range::Count(1, 10_000_000),
    },
    Limit {
        key: "retention.raw",
        flag: None,
        range: Range::Duration(secs(HOUR), secs(100 * YEAR)),
    },
    Limit {
        key: "retention.hourly",
        flag: None,
        range: Range::Duration(secs(HOUR), secs(100 * YEAR)),
    },
    Limit {
        key: "retention.hourly_top",
        flag: None,
        range: Range::Count(0, 10_000),
    },
    Limit {
        key: "retention.daily",
        flag: None,
        range: Range::Duration(secs(DAY), secs(100 * YEAR)),
    },
    Limit {
        key: "retention.connections",
        flag: None,
        range: Range::Duration(secs(HOUR), secs(100 * YEAR)),
    },
];

/// The limit of `key`.
///
/// # Panics
/// When `key` is not in [`LIMITS`] (a bug: every bounded setting is there).
pub fn limit(key: &str) -> &'static Limit {
    LIMITS
        .iter()
        .find(|l| l.key == key)
        .unwrap_or_else(|| panic!("{key} is not in config::LIMITS"))
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} B"),
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Range::Duration(lo, hi) => write!(
                f,
                "{} to {}",
                humantime::format_duration(lo),
                humantime::format_duration(hi)
            ),
            Range::Count(lo, hi) => write!(f, "{lo} to {hi}"),
            Range::Bytes(lo, hi) => write!(f, "{} to {}", human_bytes(lo), human_bytes(hi)),
        }
    }
}

/// A value to check against its limit.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    /// A duration.
    Duration(Duration),
    /// A count or a size.
    Count(u64),
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Value::Duration(d) => write!(f, "{}", humantime::format_duration(d)),
            Value::Count(n) => write!(f, "{n}"),
        }
    }
}

/// Where a value came from, to name it in an error.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// Its flag on the command line.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// The configuration file.
    File(&'a Path),
}

impl Limit {
    /// Check `value`, which came from `origin`.
    pub fn check(&self, value: Value, origin: Origin) -> Result<(), ConfigError> {
        let inside = match (self.range, value) {
            (Range::Duration(lo, hi), Value::Duration(d)) => (lo..=hi).contains(&d),
            (Range::Count(lo, hi) | Range::Bytes(lo, hi), Value::Count(n)) => {
                (lo..=hi).contains(&n)
            }
            _ => panic!("{}: a {value:?} checked against {:?}", self.key, self.range),
        };
        if inside {
            return Ok(());
        }
        let subject = match origin {
            Origin::Flag => format!("{} {value}", self.flag.unwrap_or(self.key)),
            Origin::Env(var) => format!("{var}={value}"),
            Origin::File(path) => {
                let quoted = match value {
                    Value::Duration(_) => format!("\"{value}\""),
                    Value::Count(_) => value.to_string(),
                };
                format!("configuration {}: {} = {quoted}", path.display(), self.key)
            }
        };
        let range = match self.key {
            "retention.daily" => format!("{}, or \"forever\"", self.range),
            _ => self.range.to_string(),
        };
        Err(ConfigError::OutOfRange { subject, range })
    }
}

/// Check the setting `key` (its [`Limit`]).
pub fn check(key: &str, value: Value, origin: Origin) -> Result<(), ConfigError> {
    limit(key).check(value, origin)
}

/// Why the settings (file, environment, flags) cannot be resolved. Every variant but
/// [`ConfigError::Read`] is a usage error (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read configuration {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file does not parse, has an unknown key, or a bad value.
    #[error("configuration {path}, line {line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// The parser's message, with the offending text.
        message: String,
    },
    /// A number or duration outside its [`Limit`].
    #[error("{subject} is out of range: it must be {range}")]
    OutOfRange {
        /// The flag, variable or key, with the value.
        subject: String,
        /// The range, as text.
        range: String,
    },
    /// The retention tiers contradict each other, or `daily` does not read.
    #[error("configuration {path}: {reason}")]
    Retention {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A key whose value is not one netledger takes (beyond a number's range).
    #[error("configuration {path}: {key} = {value}: {fix}")]
    Key {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// Its value, as written.
        value: String,
        /// What is wrong, and what to write instead.
        fix: String,
    },
    /// Settings that contradict each other.
    #[error("configuration: {reason}")]
    Invalid {
        /// What is wrong.
        reason: String,
    },
    /// A variable set to the empty string.
    #[error("{var} is set but empty: unset it or give it a value")]
    EmptyEnv {
        /// The variable.
        var: &'static str,
    },
    /// A variable whose value does not read.
    #[error("{var}={value:?}: {reason}; fix or unset {var}")]
    BadEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it does not read.
        reason: String,
    },
    /// `TZ` names no time zone (chrono would silently use another one).
    #[error(
        "TZ={value:?} is not a time zone (no such file under /usr/share/zoneinfo, and not a \
         POSIX TZ string): set TZ to a zone such as Europe/Berlin, unset it for the system's \
         zone, or pass --utc"
    )]
    Tz {
        /// The value of TZ.
        value: String,
    },
    /// `--since`/`--until` does not read.
    #[error("{flag}: {error}")]
    Time {
        /// The flag.
        flag: &'static str,
        /// Why.
        error: BadTime,
    },
    /// `--until` is not after `--since`.
    #[error("--until {until} is not later than --since {since}: give an --until after --since")]
    EmptyPeriod {
        /// `--since` as given.
        since: String,
        /// `--until` as given.
        until: String,
    },
}

impl ConfigError {
    /// Whether this is the user's input (exit code 2) rather than the system's state.
    pub fn is_usage(&self) -> bool {
        !matches!(self, ConfigError::Read { .. })
    }
}

/// The keys of the configuration file; every one optional.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Database path.
    pub db: Option<PathBuf>,
    /// Local networks (replace the defaults; empty counts everything).
    pub local_networks: Option<Vec<IpNet>>,
    /// Remote-name lookup file.
    pub names: Option<PathBuf>,
    /// Passes before a vanished flow is pruned.
    pub prune_after: Option<u32>,
    /// Database lock wait.
    #[serde(default, with = "opt_duration")]
    pub lock_timeout: Option<Duration>,
    /// Daemon pass interval.
    #[serde(default, with = "opt_duration")]
    pub interval: Option<Duration>,
    /// Daemon connection log on/off.
    pub connection_log: Option<bool>,
    /// Daemon: also log connections charged to nobody as local (loopback, local networks,
    /// the host's own addresses).
    pub connection_log_local: Option<bool>,
    /// Daemon: connections logged a second at most, on average.
    pub connection_log_rate: Option<u32>,
    /// Daemon: connections logged at once at most, after a quiet time.
    pub connection_log_burst: Option<u32>,
    /// Daemon `/metrics` endpoint (off when absent).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// node_exporter textfile that `snapshot` writes after each pass (none when absent).
    pub metrics_textfile: Option<PathBuf>,
    /// Mode of the metrics textfile, octal ("0644": every local user reads every user's
    /// totals; "0640" with `metrics_textfile_group`: that group only).
    pub metrics_textfile_mode: Option<String>,
    /// Group of the metrics textfile: a name or a gid (absent: the writer's group).
    pub metrics_textfile_group: Option<UidOrName>,
    /// Systemd units with metrics series of their own: a list of names, or how many of
    /// the busiest (absent: none). Read by [`FileConfig::metrics_units`].
    pub metrics_units: Option<toml::Value>,
    /// Retention tiers.
    pub retention: Option<RetentionConfig>,
    /// Uids (or user names) of services that hand connections to users' processes.
    pub delegating_uids: Option<Vec<UidOrName>>,
    /// How long a young flow on such a service's socket waits for a user's process.
    #[serde(default, with = "opt_duration")]
    pub delegate_grace: Option<Duration>,
    /// Day of the month billing cycles start on, 1 to 28 (issue 19).
    pub cycle_day: Option<toml::Spanned<i64>>,
    /// Allowances (`[quota]`).
    pub quota: Option<quota::QuotaConfig>,
    /// Program run when a user crosses a quota level.
    pub on_quota: Option<toml::Spanned<String>>,
    /// Write each new flow's owner uid into its conntrack mark and charge flows no socket
    /// names by it (default on: the documented file).
    pub owner_mark: Option<bool>,
}

/// A uid, or a user name resolved when the settings are (`delegating_uids`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum UidOrName {
    /// A numeric uid.
    Uid(u32),
    /// A user name (or a uid written as a string, as the environment gives it).
    Name(String),
}

impl UidOrName {
    /// The uid; `None` for a name no account has (that service is not installed here: it
    /// delegates nothing).
    fn resolve(&self) -> Option<u32> {
        match self {
            UidOrName::Uid(u) => Some(*u),
            UidOrName::Name(n) => n.parse().ok().or_else(|| {
                let uid = crate::sources::users::uid_of(n);
                if uid.is_none() {
                    tracing::info!("delegating_uids: no user {n:?} on this host, skipped");
                }
                uid
            }),
        }
    }
}

/// The default of `delegating_uids`: root, as which sshd (and every service started as
/// root that hands a connection to the user who logged in) accepts, and `sshd`, OpenSSH's
/// privilege-separation user, whose process holds the connection until the login
/// completes (so it is the service, not a user).
pub const DEFAULT_DELEGATING: &[&str] = &["0", "sshd"];

/// The default of `delegate_grace`: long enough for a password or a key's passphrase to be
/// typed (the user's process appears only after authentication), short enough that the
/// service's own flows are charged within a pass or two.
pub const DEFAULT_DELEGATE_GRACE: Duration = Duration::from_secs(10);

/// The largest `delegate_grace` (sshd's own LoginGraceTime default is 2 minutes).
pub const MAX_DELEGATE_GRACE: Duration = Duration::from_secs(600);

/// Who may read the metrics textfile: its mode and group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextfileAccess {
    /// Permission bits.
    pub mode: u32,
    /// Group, when not the writer's.
    pub gid: Option<u32>,
}

/// A metrics file's mode from its octal text ("0640", "640", "0o640"): permission bits
/// only, no execute bit (the file is data), readable by its owner (node_exporter's
/// collector may run as it).
pub fn file_mode(s: &str) -> Option<u32> {
    let digits = s.strip_prefix("0o").unwrap_or(s);
    if digits.is_empty() || digits.len() > 4 {
        return None;
    }
    let m = u32::from_str_radix(digits, 8).ok()?;
    (m & !0o666 == 0 && m & 0o400 != 0).then_some(m)
}

/// The most units `metrics_units = N` may ask for: two series each, and Prometheus's
/// cost grows with every series a host exports.
pub const MAX_METRICS_UNITS: i64 = 100;

/// Whether `name` is a systemd unit that holds processes, as [`crate::cgroup::unit`] reads
/// one from a path: `NAME.service`, `NAME.scope` or `NAME.slice`.
fn is_unit_name(name: &str) -> bool {
    [".service", ".scope", ".slice"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|stem| !stem.is_empty() && !name.contains('/'))
    })
}

/// A value as the file would write it (strings quoted, lists bracketed); a table as
/// `{…}`.
fn toml_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("{s:?}"),
        toml::Value::Integer(n) => n.to_string(),
        toml::Value::Float(x) => x.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(list) => {
            let items: Vec<String> = list.iter().map(toml_text).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(_) => "{…}".into(),
    }
}

/// The `[retention]` table.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Raw per-pass rows.
    #[serde(default, with = "opt_duration")]
    pub raw: Option<Duration>,
    /// Hourly rollups.
    #[serde(default, with = "opt_duration")]
    pub hourly: Option<Duration>,
    /// Keys kept per user and hour in the hourly tier (0: all).
    pub hourly_top: Option<u32>,
    /// Daily rollups: a duration, or "forever".
    pub daily: Option<String>,
    /// The daemon's connection log.
    #[serde(default, with = "opt_duration")]
    pub connections: Option<Duration>,
}

impl FileConfig {
    /// The retention tiers: the file's values over the defaults.
    pub fn retention(&self) -> Result<crate::store::retention::Retention, String> {
        let mut r = crate::store::retention::Retention::default();
        if let Some(c) = &self.retention {
            r.raw = c.raw.unwrap_or(r.raw);
            r.hourly = c.hourly.unwrap_or(r.hourly);
            r.hourly_top = c.hourly_top.unwrap_or(r.hourly_top);
            r.connections = c.connections.unwrap_or(r.connections);
            r.daily = match c.daily.as_deref() {
                None | Some("forever") => None,
                Some(d) => Some(humantime::parse_duration(d).map_err(|e| {
                    format!("retention.daily = {d:?}: {e} (write a duration such as 3years, or \"forever\")")
                })?),
            };
        }
        if r.hourly < r.raw {
            return Err("retention.hourly must be at least retention.raw".into());
        }
        if r.daily.is_some_and(|d| d < r.hourly) {
            return Err(
                "retention.daily must be at least retention.hourly (or \"forever\")".into(),
            );
        }
        Ok(r)
    }

    /// The delegating uids and grace in effect: the flags (or NETLEDGER_DELEGATING_UIDS and
    /// NETLEDGER_DELEGATE_GRACE) over the file over the defaults (root and sshd, 10 s).
    pub fn delegation(
        &self,
        flag_uids: &[String],
        flag_grace: Option<Duration>,
    ) -> Result<(crate::attribute::Delegating, Duration), String> {
        let names = |list: &[&str]| -> Vec<UidOrName> {
            list.iter()
                .map(|n| UidOrName::Name(n.to_string()))
                .collect()
        };
        let list = if !flag_uids.is_empty() {
            flag_uids
                .iter()
                .map(|n| UidOrName::Name(n.clone()))
                .collect()
        } else if let Some(list) = &self.delegating_uids {
            list.clone()
        } else {
            names(DEFAULT_DELEGATING)
        };
        let uids = list.iter().filter_map(UidOrName::resolve);
        let grace = flag_grace
            .or(self.delegate_grace)
            .unwrap_or(DEFAULT_DELEGATE_GRACE);
        if grace > MAX_DELEGATE_GRACE {
            return Err(format!(
                "delegate_grace = {} is out of range (0s to {})",
                humantime::format_duration(grace),
                humantime::format_duration(MAX_DELEGATE_GRACE)
            ));
        }
        Ok((crate::attribute::Delegating::new(uids), grace))
    }

    /// Check every number and duration against [`LIMITS`], and the tiers against each other.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let file = Origin::File(path);
        let d = |v: Duration| Value::Duration(v);
        let n = |v: u32| Value::Count(u64::from(v));
        if let Some(v) = self.interval {
            check("interval", d(v), file)?;
        }
        if let Some(v) = self.lock_timeout {
            check("lock_timeout", d(v), file)?;
        }
        if let Some(v) = self.prune_after {
            check("prune_after", n(v), file)?;
        }
        if let Some(v) = self.delegate_grace {
            check("delegate_grace", d(v), file)?;
        }
        if let Some(m) = &self.metrics_textfile_mode {
            if file_mode(m).is_none() {
                return Err(ConfigError::Key {
                    path: path.to_owned(),
                    key: "metrics_textfile_mode",
                    value: format!("{m:?}"),
                    fix: "not a mode for the metrics file: write an octal mode without execute \
                          bits that its owner can read, such as \"0640\" (its group only) or \
                          \"0644\" (every local user)"
                        .into(),
                });
            }
        }
        self.metrics_units(path)?;
        if let Some(v) = self.connection_log_rate {
            check("connection_log_rate", n(v), file)?;
        }
        if let Some(v) = self.connection_log_burst {
            check("connection_log_burst", n(v), file)?;
        }
        if let Some(r) = &self.retention {
            for (key, v) in [
                ("retention.raw", r.raw),
                ("retention.hourly", r.hourly),
                ("retention.connections", r.connections),
            ] {
                if let Some(v) = v {
                    check(key, d(v), file)?;
                }
            }
            if let Some(v) = r.hourly_top {
                check("retention.hourly_top", n(v), file)?;
            }
        }
        let retention = self.retention().map_err(|reason| ConfigError::Retention {
            path: path.to_owned(),
            reason,
        })?;
        if let Some(v) = retention.daily {
            check("retention.daily", d(v), file)?;
        }
        Ok(())
    }

    /// The units with metrics series of their own (`metrics_units`): off when absent or
    /// `[]`; a number 1 to [`MAX_METRICS_UNITS`] (the busiest), or a list of unit names.
    pub fn metrics_units(
        &self,
        path: &Path,
    ) -> Result<crate::store::metrics::UnitSeries, ConfigError> {
        use crate::store::metrics::UnitSeries;
        let Some(v) = &self.metrics_units else {
            return Ok(UnitSeries::Off);
        };
        let series = match v {
            toml::Value::Integer(n) if (1..=MAX_METRICS_UNITS).contains(n) => {
                Some(UnitSeries::Top(*n as usize))
            }
            toml::Value::Array(list) => list
                .iter()
                .map(|u| u.as_str().filter(|u| is_unit_name(u)).map(String::from))
                .collect::<Option<Vec<String>>>()
                .map(|names| match names.is_empty() {
                    true => UnitSeries::Off,
                    false => UnitSeries::Units(names),
                }),
            _ => None,
        };
        series.ok_or_else(|| ConfigError::Key {
            path: path.to_owned(),
            key: "metrics_units",
            value: toml_text(v),
            fix: format!(
                "write how many of the busiest units get series of their own (1 to \
                 {MAX_METRICS_UNITS}), or a list of unit names ending in .service, .scope or \
                 .slice such as [\"nginx.service\"], or remove the key (no series per unit)"
            ),
        })
    }

    /// The metrics textfile's mode and group: the file's over the defaults (0644, the
    /// writer's group). A group no account database knows is an error naming the key.
    pub fn textfile_access(&self, path: &Path) -> Result<TextfileAccess, ConfigError> {
        let mode = self
            .metrics_textfile_mode
            .as_deref()
            .or(defaults().metrics_textfile_mode.as_deref())
            .and_then(file_mode)
            .expect("checked when the file was read; the documented default is a mode");
        let gid = match &self.metrics_textfile_group {
            None => None,
            Some(UidOrName::Uid(gid)) => Some(*gid),
            Some(UidOrName::Name(name)) => Some(
                name.parse::<u32>()
                    .ok()
                    .or_else(|| uzers::get_group_by_name(name).map(|g| g.gid()))
                    .ok_or_else(|| ConfigError::Key {
                        path: path.to_owned(),
                        key: "metrics_textfile_group",
                        value: format!("{name:?}"),
                        fix: "no such group on this host: name an existing group (`getent \
                              group`) or a gid, or remove the key"
                            .into(),
                    })?,
            ),
        };
        Ok(TextfileAccess { mode, gid })
    }

    /// Parse and check configuration text.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        let c: FileConfig = toml::from_str(text).map_err(|e| {
            // toml's own rendering spans several lines: one line, with the offending text.
            let start = e.span().map_or(0, |s| s.start).min(text.len());
            // Bytes, not a str slice: a span that is not on a character boundary must not
            // panic (found by reading what the config fuzz target could reach).
            let line = text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1;
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            let message = e.message().trim().replace('\n', " ");
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                message: if source_line.is_empty() {
                    message
                } else {
                    format!("{source_line}: {message}")
                },
            }
        })?;
        c.validate(path)?;
        quota::policy(&c, Some(text), path)?;
        Ok(c)
    }

    /// Load `path`. A missing file is an empty configuration unless it was named
    /// explicitly (`--config`, `NETLEDGER_CONFIG`).
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(t) => FileConfig::parse(&t, path),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(FileConfig::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| {
            humantime::parse_duration(&s).map_err(|_| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration (write it like 500ms, 10s, 5m, 1h, 7d)"
                ))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribute::LocalNets;

    #[test]
    fn documented_defaults_are_the_built_in_defaults() {
        let c = FileConfig::parse(DEFAULT_TOML, Path::new("default")).unwrap();
        assert_eq!(c, *defaults());
        assert_eq!(
            c.db.as_deref(),
            Some(Path::new("/var/lib/netledger/netledger.db"))
        );
        assert_eq!(
            LocalNets::new(c.local_networks.clone().unwrap()),
            LocalNets::defaults()
        );
        assert_eq!(c.names.as_deref(), Some(Path::new("/etc/netledger/names")));
        assert_eq!(c.prune_after, Some(3));
        assert_eq!(c.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        assert_eq!(c.connection_log, Some(true));
        assert_eq!(c.connection_log_local, Some(false));
        assert_eq!(c.connection_log_rate, Some(200));
        assert_eq!(c.connection_log_burst, Some(100_000));
        assert_eq!(
            c.retention().unwrap(),
            crate::store::retention::Retention::default()
        );
        let (d, grace) = c.delegation(&[], None).unwrap();
        assert!(d.contains(0));
        if let Some(sshd) = uzers::get_user_by_name("sshd") {
            assert!(d.contains(sshd.uid()));
        }
        assert_eq!(grace, DEFAULT_DELEGATE_GRACE);
        assert_eq!(
            FileConfig::default().delegation(&[], None).unwrap(),
            (d, grace),
            "an empty file has the documented defaults"
        );
    }

    #[test]
    fn delegating_uids_take_uids_and_names_flags_win_and_grace_is_bounded() {
        let c = FileConfig::parse(
            "delegating_uids = [0, \"root\", 33]\ndelegate_grace = \"30s\"\n",
            Path::new("/c"),
        )
        .unwrap();
        let (d, grace) = c.delegation(&[], None).unwrap();
        assert_eq!(d.uids(), [0, 33]);
        assert_eq!(grace, Duration::from_secs(30));
        let (d, grace) = c
            .delegation(&["5".into(), "root".into()], Some(Duration::ZERO))
            .unwrap();
        assert_eq!((d.uids(), grace), (&[0, 5][..], Duration::ZERO));
        let off = FileConfig::parse("delegating_uids = []\n", Path::new("/c")).unwrap();
        assert!(off.delegation(&[], None).unwrap().0.uids().is_empty());
        // A service not installed here (no such account) delegates nothing.
        let (d, _) = c
            .delegation(&["no-such-user-x".into(), "7".into()], None)
            .unwrap();
        assert_eq!(d.uids(), [7]);
        let e = c
            .delegation(&[], Some(Duration::from_secs(3600)))
            .unwrap_err();
        assert!(
            e.contains("delegate_grace") && e.contains("out of range"),
            "{e}"
        );
        let e = FileConfig::parse("delegating_uids = [-1]\n", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn retention_table_is_read_and_checked() {
        let c = FileConfig::parse(
            "[retention]\nraw = \"2d\"\nhourly = \"30d\"\nhourly_top = 0\ndaily = \"3years\"\n\
             connections = \"36h\"\n",
            Path::new("/c"),
        )
        .unwrap();
        let r = c.retention().unwrap();
        assert_eq!(r.raw, Duration::from_secs(2 * 86400));
        assert_eq!(r.hourly, Duration::from_secs(30 * 86400));
        assert_eq!(r.hourly_top, 0);
        assert!(r.daily.is_some());
        assert_eq!(r.connections, Duration::from_secs(36 * 3600));
        // Tiers out of order are refused when the file is read, naming both keys.
        let e = FileConfig::parse(
            "[retention]\nraw = \"9d\"\nhourly = \"1d\"\n",
            Path::new("/c"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("retention.hourly") && e.contains("retention.raw"),
            "{e}"
        );
        let unchecked = FileConfig {
            retention: Some(RetentionConfig {
                raw: Some(Duration::from_secs(9 * 86400)),
                hourly: Some(Duration::from_secs(86400)),
                ..RetentionConfig::default()
            }),
            ..FileConfig::default()
        };
        assert!(unchecked.retention().is_err());
        let e = FileConfig::parse("[retention]\nweekly = \"1d\"\n", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("weekly") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn every_limit_holds_its_documented_default() {
        let c = FileConfig::parse(DEFAULT_TOML, Path::new("default")).unwrap();
        let file = Origin::File(Path::new("default"));
        check("interval", Value::Duration(c.interval.unwrap()), file).unwrap();
        check("prune_after", Value::Count(3), file).unwrap();
        // The flags' defaults (clap's) are inside their ranges too.
        check(
            "flush_interval",
            Value::Duration(Duration::from_secs(1)),
            Origin::Flag,
        )
        .unwrap();
        check("event_buffer", Value::Count(4 << 20), Origin::Flag).unwrap();
        check("limit", Value::Count(20), Origin::Flag).unwrap();
        for l in LIMITS {
            let (lo, hi) = match l.range {
                Range::Duration(lo, hi) => (Value::Duration(lo), Value::Duration(hi)),
                Range::Count(lo, hi) | Range::Bytes(lo, hi) => (Value::Count(lo), Value::Count(hi)),
            };
            l.check(lo, Origin::Flag).unwrap();
            l.check(hi, Origin::Flag).unwrap();
        }
    }

    #[test]
    fn out_of_range_names_the_flag_variable_or_key() {
        let e = check("interval", Value::Duration(Duration::ZERO), Origin::Flag)
            .unwrap_err()
            .to_string();
        assert_eq!(e, "--interval 0s is out of range: it must be 1s to 1h");
        let e = check(
            "event_buffer",
            Value::Count(0),
            Origin::Env(env::EVENT_BUFFER),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "NETLEDGER_EVENT_BUFFER=0 is out of range: it must be 1 B to 64 MiB"
        );
        let e = check(
            "retention.raw",
            Value::Duration(Duration::from_secs(1)),
            Origin::File(Path::new("/etc/n.toml")),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "configuration /etc/n.toml: retention.raw = \"1s\" is out of range: it must be 1h to 100years"
        );
    }

    #[test]
    fn metrics_textfile_mode_and_group_are_checked_and_name_the_fix() {
        let d = defaults().textfile_access(Path::new("d")).unwrap();
        assert_eq!(
            d,
            TextfileAccess {
                mode: 0o644,
                gid: None
            }
        );
        let c = FileConfig::parse(
            "metrics_textfile_mode = \"0640\"\nmetrics_textfile_group = \"root\"\n",
            Path::new("/c"),
        )
        .unwrap();
        let a = c.textfile_access(Path::new("/c")).unwrap();
        assert_eq!(
            a,
            TextfileAccess {
                mode: 0o640,
                gid: Some(0)
            }
        );
        let c = FileConfig::parse("metrics_textfile_group = 65534\n", Path::new("/c")).unwrap();
        assert_eq!(c.textfile_access(Path::new("/c")).unwrap().gid, Some(65534));
        for bad in ["0755", "0400x", "1644", "0044", "", "0o7777", "rw-r--r--"] {
            let e = FileConfig::parse(
                &format!("metrics_textfile_mode = \"{bad}\"\n"),
                Path::new("/c"),
            )
            .unwrap_err();
            assert!(e.is_usage());
            assert_eq!(
                e.to_string(),
                format!(
                    "configuration /c: metrics_textfile_mode = \"{bad}\": not a mode for the \
                     metrics file: write an octal mode without execute bits that its owner can \
                     read, such as \"0640\" (its group only) or \"0644\" (every local user)"
                )
            );
        }
        let c = FileConfig::parse(
            "metrics_textfile_group = \"no-such-group-24\"\n",
            Path::new("/c"),
        )
        .unwrap();
        let e = c.textfile_access(Path::new("/c")).unwrap_err();
        assert!(e.is_usage());
        assert_eq!(
            e.to_string(),
            "configuration /c: metrics_textfile_group = \"no-such-group-24\": no such group on \
             this host: name an existing group (`getent group`) or a gid, or remove the key"
        );
    }

    /// `metrics_units`: off by default and with `[]`; a number of the busiest units or a
    /// list of unit names; anything else is one line naming the key, the value and the fix.
    #[test]
    fn metrics_units_are_off_by_default_and_checked() {
        use crate::store::metrics::UnitSeries;
        let p = Path::new("/c");
        assert_eq!(defaults().metrics_units(p).unwrap(), UnitSeries::Off);
        let parse = |text: &str| FileConfig::parse(text, p);
        let units = |text: &str| parse(text).unwrap().metrics_units(p).unwrap();
        assert_eq!(units("metrics_units = []\n"), UnitSeries::Off);
        assert_eq!(units("metrics_units = 10\n"), UnitSeries::Top(10));
        assert_eq!(
            units("metrics_units = [\"nginx.service\", \"session-4.scope\", \"user.slice\"]\n"),
            UnitSeries::Units(vec![
                "nginx.service".into(),
                "session-4.scope".into(),
                "user.slice".into()
            ])
        );
        let fix = "write how many of the busiest units get series of their own (1 to 100), \
                   or a list of unit names ending in .service, .scope or .slice such as \
                   [\"nginx.service\"], or remove the key (no series per unit)";
        for (bad, shown) in [
            ("0", "0"),
            ("101", "101"),
            ("-3", "-3"),
            ("\"nginx.service\"", "\"nginx.service\""),
            ("[\"nginx\"]", "[\"nginx\"]"),
            ("[\"nginx.service\", 7]", "[\"nginx.service\", 7]"),
            ("[\".service\"]", "[\".service\"]"),
            (
                "[\"/system.slice/nginx.service\"]",
                "[\"/system.slice/nginx.service\"]",
            ),
            ("true", "true"),
        ] {
            let e = parse(&format!("metrics_units = {bad}\n")).unwrap_err();
            assert!(e.is_usage());
            assert_eq!(
                e.to_string(),
                format!("configuration /c: metrics_units = {shown}: {fix}")
            );
        }
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name_and_line() {
        let e = FileConfig::parse("db = \"/x.db\"\n\ndatabase = \"/y.db\"\n", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("database"), "{e}");
    }

    #[test]
    fn bad_value_is_rejected_with_its_line() {
        let e = FileConfig::parse("interval = \"soon\"\n", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("interval"), "{e}");
        let e = FileConfig::parse("local_networks = [\"10.0.0.0/33\"]", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn missing_default_file_is_empty_missing_explicit_file_is_an_error() {
        let p = Path::new("/nonexistent/netledger.toml");
        assert_eq!(FileConfig::load(p, false).unwrap(), FileConfig::default());
        assert!(FileConfig::load(p, true).is_err());
    }
}
