//! What the read-only commands share: opening the database for reading, the period
//! bounds, and naming a user.

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::cli::Cli;
use crate::config::ConfigError;
use crate::store::{OpenOptions, Store};
use crate::timespec::parse_time;

/// Open the database read-only; never creates it.
pub fn open_for_reading(cli: &Cli) -> Result<Store> {
    Ok(Store::open(
        &cli.db,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    )?)
}

/// Fail unless the database has the connection log (`log`, `summary`).
pub fn require_connection_log(store: &Store) -> Result<()> {
    if !store.has_connection_log()? {
        bail!(
            "{} has no connection log yet: it is written by `netledger run` (any netledger \
             command that writes, such as `snapshot`, upgrades the database)",
            store.path().display()
        );
    }
    Ok(())
}

/// `[since, until)` in epoch seconds from the command line. A value that does not read,
/// or an empty period, is a usage error naming the flag.
pub fn bounds(since: &str, until: Option<&str>, utc: bool) -> Result<(i64, i64)> {
    let now = chrono::Utc::now();
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
        }
        .into());
    }
    Ok((start, end))
}

/// A user given by name or uid: names are looked up in the database first (accounts
/// deleted since are still known there), then in the system's user database.
pub fn resolve_user(store: &Store, user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    if let Some(uid) = store.uid_of(user)? {
        return Ok(uid);
    }
    match uzers::get_user_by_name(user) {
        Some(u) => Ok(u.uid()),
        None => bail!("unknown user {user:?}: give a user name or a numeric uid"),
    }
}

/// Names of uids, each looked up once: the name the database recorded (accounts deleted
/// since are still known there), else the system's, else the uid itself.
pub struct UserNames<'a> {
    store: Option<&'a Store>,
    cache: HashMap<u32, String>,
}

impl<'a> UserNames<'a> {
    /// Names from `store` first, when given, then from the system.
    pub fn new(store: Option<&'a Store>) -> UserNames<'a> {
        UserNames {
            store,
            cache: HashMap::new(),
        }
    }

    /// The name of `uid`.
    pub fn name(&mut self, uid: u32) -> String {
        let store = self.store;
        self.cache
            .entry(uid)
            .or_insert_with(|| {
                store
                    .and_then(|s| s.user_name(uid).ok().flatten())
                    .or_else(|| {
                        uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
                    })
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }
}

/// Whether the owner-mark rule is installed and marks are read (`owner_mark` in the
/// configuration file; on by default). See `crate::owner_mark`.
pub fn owner_mark(file: &crate::config::FileConfig) -> bool {
    file.owner_mark.unwrap_or(true)
}
