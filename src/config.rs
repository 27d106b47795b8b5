//! The configuration file (`/etc/netledger/netledger.toml`) and how it combines with the
//! environment and the flags: built-in defaults < file < `NETLEDGER_*` environment < flags.
//!
//! clap already gives flags precedence over their `NETLEDGER_*` variables and tells where a
//! value came from; a value that clap only filled in from its default yields to the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/netledger/netledger.toml";

/// The documented default configuration file (`netledger config --default`).
pub const DEFAULT_TOML: &str = include_str!("../contrib/netledger.toml");

/// Why the configuration file cannot be used.
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
    /// The file does not parse, has an unknown key, or a bad value (toml's message names
    /// the key and its line).
    #[error("configuration {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        source: toml::de::Error,
    },
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
    /// Retention tiers.
    pub retention: Option<RetentionConfig>,
    /// Uids (or user names) of services that hand connections to users' processes.
    pub delegating_uids: Option<Vec<UidOrName>>,
    /// How long a young flow on such a service's socket waits for a user's process.
    #[serde(default, with = "opt_duration")]
    pub delegate_grace: Option<Duration>,
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
                let uid = users::get_user_by_name(n).map(|u| u.uid());
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
                Some(d) => Some(
                    humantime::parse_duration(d)
                        .map_err(|e| format!("retention.daily = {d:?}: {e} (or \"forever\")"))?,
                ),
            };
        }
        if r.hourly < r.raw {
            return Err("retention.hourly must be at least retention.raw".into());
        }
        Ok(r)
    }
}

impl FileConfig {
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

    /// Parse configuration text.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
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

/// Fill in what the command line left at clap's defaults from the configuration file:
/// a flag or its `NETLEDGER_*` variable wins over the file, the file over the default.
pub fn apply(cli: &mut crate::cli::Cli, matches: &clap::ArgMatches) -> Result<(), ConfigError> {
    use crate::cli::Command;
    use clap::parser::ValueSource;

    let (path, explicit) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let file = FileConfig::load(&path, explicit)?;
    let defaulted = |m: &clap::ArgMatches, id: &str| {
        matches!(m.value_source(id), None | Some(ValueSource::DefaultValue))
    };
    if defaulted(matches, "db") {
        if let Some(db) = &file.db {
            cli.db = db.clone();
        }
    }
    let sub = matches.subcommand().map(|(_, m)| m);
    match (&mut cli.command, sub) {
        (Command::Snapshot(a), Some(m)) => {
            if defaulted(m, "local_nets") && !a.count_local {
                if let Some(nets) = &file.local_networks {
                    if nets.is_empty() {
                        a.count_local = true;
                    }
                    a.local_nets = nets.clone();
                }
            }
            if defaulted(m, "prune_after") {
                a.prune_after = file.prune_after.unwrap_or(a.prune_after);
            }
            if defaulted(m, "lock_timeout") {
                a.lock_timeout = file.lock_timeout.unwrap_or(a.lock_timeout);
            }
        }
        (Command::Top(a), Some(_)) if a.names.is_none() => a.names.clone_from(&file.names),
        _ => {}
    }
    cli.file = file;
    Ok(())
}

mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime::parse_duration(&s).map_err(serde::de::Error::custom))
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
        assert_eq!(c.db.as_deref(), Some(Path::new(crate::cli::DEFAULT_DB)));
        assert_eq!(
            LocalNets::new(c.local_networks.clone().unwrap()),
            LocalNets::defaults()
        );
        assert_eq!(
            c.names.as_deref(),
            Some(Path::new(crate::report::names::DEFAULT_NAMES))
        );
        assert_eq!(c.prune_after, Some(3));
        assert_eq!(c.lock_timeout, Some(Duration::from_secs(5)));
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        assert_eq!(c.connection_log, Some(true));
        assert_eq!(
            c.retention().unwrap(),
            crate::store::retention::Retention::default()
        );
        let (d, grace) = c.delegation(&[], None).unwrap();
        assert!(d.contains(0));
        if let Some(sshd) = users::get_user_by_name("sshd") {
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
        let c = FileConfig::parse(
            "[retention]\nraw = \"9d\"\nhourly = \"1d\"\n",
            Path::new("/c"),
        )
        .unwrap();
        assert!(c.retention().is_err());
        let e = FileConfig::parse("[retention]\nweekly = \"1d\"\n", Path::new("/c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("weekly") && e.contains("line 2"), "{e}");
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
