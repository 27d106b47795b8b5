//! `netledger` run on a database a test built through the store API, outside any
//! namespace: the report tests (`reports`, `connection_reports`).

use std::path::Path;
use std::process::Command;

/// `netledger --db DB ARGS` with `TZ=tz` and no names file or configuration from the
/// environment: (stdout, stderr, exit code).
pub fn netledger(db: &Path, tz: &str, args: &[&str]) -> (String, String, i32) {
    let o = Command::new(super::bin())
        .arg("--db")
        .arg(db)
        .args(args)
        .env("TZ", tz)
        .env_remove("NETLEDGER_NAMES")
        .env_remove("NETLEDGER_CONFIG")
        .output()
        .unwrap();
    (
        String::from_utf8(o.stdout).unwrap(),
        String::from_utf8(o.stderr).unwrap(),
        o.status.code().unwrap_or(-1),
    )
}

/// stdout of a successful run, in UTC.
pub fn ok(db: &Path, args: &[&str]) -> String {
    let (out, err, code) = netledger(db, "UTC", args);
    assert_eq!(code, 0, "{args:?}: {err}");
    out
}

/// `base` then `more`.
pub fn with<'a>(base: &[&'a str], more: &[&'a str]) -> Vec<&'a str> {
    base.iter().chain(more).copied().collect()
}
