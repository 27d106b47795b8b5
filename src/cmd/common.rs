//! What the read-only commands share: opening the database for reading and naming a
//! user.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};

use crate::store::{OpenOptions, Store};

/// Open the database read-only; never creates it.
pub fn open_for_reading(db: &Path) -> Result<Store> {
    Ok(Store::open(
        db,
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

/// A user given by name or uid: names are looked up in the database first (accounts
/// deleted since are still known there), then in the system's user database.
pub fn resolve_user(store: &Store, user: &str) -> Result<u32> {
    if let Ok(uid) = user.parse::<u32>() {
        return Ok(uid);
    }
    if let Some(uid) = store.uid_of(user)? {
        return Ok(uid);
    }
    match crate::sources::users::uid_of(user) {
        Some(uid) => Ok(uid),
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
                    .or_else(|| crate::sources::users::name_of(uid))
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    }
}
