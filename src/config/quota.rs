//! The quota keys of the configuration file (`cycle_day`, `[quota]`, `on_quota`): read,
//! checked (one line each, naming the file and line), and resolved into a
//! [`crate::quota::Policy`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, FileConfig};
use crate::quota::{cycle::MAX_CYCLE_DAY, parse_size, Direction, Policy, Threshold};

/// The `[quota]` table.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaConfig {
    /// Allowance of everyone without an entry below; absent: no quota.
    pub default: Option<Spanned<String>>,
    /// `rx`, `tx` or `total`.
    pub direction: Option<Direction>,
    /// The hook's warning level: a percentage of the allowance or a size.
    pub warning: Option<Spanned<String>>,
    /// The hook's critical level.
    pub critical: Option<Spanned<String>>,
    /// Where the per-user view files are written.
    pub view_dir: Option<PathBuf>,
    /// Per user name.
    pub users: Option<BTreeMap<String, Spanned<String>>>,
    /// Per group name.
    pub groups: Option<BTreeMap<String, Spanned<String>>>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Where an error of the file is: its path, and its text for the line.
struct At<'a> {
    path: &'a Path,
    text: Option<&'a str>,
}

impl At<'_> {
    fn err(&self, span: std::ops::Range<usize>, message: String) -> ConfigError {
        ConfigError::Parse {
            path: self.path.to_owned(),
            line: self.text.map_or(0, |t| line_of(t, span.start)),
            message,
        }
    }
}

/// The quota settings of a file, checked: sizes and percentages read, `cycle_day` in
/// range, every user and group known here. `text` is the file's text (for the lines).
pub fn policy(c: &FileConfig, text: Option<&str>, path: &Path) -> Result<Policy, ConfigError> {
    let at = At { path, text };
    let mut p = Policy::default();
    if let Some(d) = &c.cycle_day {
        let v = *d.get_ref();
        if !(1..=i64::from(MAX_CYCLE_DAY)).contains(&v) {
            return Err(at.err(
                d.span(),
                format!(
                    "cycle_day = {v} is out of range: it must be 1 to {MAX_CYCLE_DAY} (not every \
                     month has a 29th, 30th or 31st)"
                ),
            ));
        }
        p.cycle_day = v as u8;
    }
    if let Some(h) = &c.on_quota {
        let program = PathBuf::from(h.get_ref());
        if !program.is_absolute() {
            return Err(at.err(
                h.span(),
                format!(
                    "on_quota = {:?}: give the program's absolute path (it is run without a \
                     shell)",
                    h.get_ref()
                ),
            ));
        }
        p.enabled = true;
        p.hook = Some(crate::quota::hook::Hook {
            program,
            config: path.to_owned(),
        });
    }
    if let Some(q) = &c.quota {
        p.enabled = true;
        quota_table(q, &at, &mut p)?;
    }
    Ok(p)
}

/// The `[quota]` table into `p`.
fn quota_table(q: &QuotaConfig, at: &At, p: &mut Policy) -> Result<(), ConfigError> {
    let threshold = |key: &str, v: &Spanned<String>| {
        Threshold::parse(v.get_ref()).map_err(|e| at.err(v.span(), format!("quota.{key}: {e}")))
    };
    if let Some(d) = &q.default {
        p.default = Some(size(at, "quota.default", d)?);
    }
    if let Some(d) = q.direction {
        p.direction = d;
    }
    if let Some(w) = &q.warning {
        p.warning = threshold("warning", w)?;
    }
    if let Some(w) = &q.critical {
        p.critical = threshold("critical", w)?;
    }
    if let Some(dir) = &q.view_dir {
        p.view_dir = dir.clone();
    }
    for (name, v) in q.users.iter().flatten() {
        let uid = match name.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => match uzers::get_user_by_name(name) {
                Some(u) => u.uid(),
                None => {
                    return Err(at.err(
                        v.span(),
                        format!(
                            "quota.users: no user {name:?} on this host (give an existing \
                             user name or a uid)"
                        ),
                    ))
                }
            },
        };
        p.users
            .insert(uid, size(at, &format!("quota.users.{name}"), v)?);
    }
    for (name, v) in q.groups.iter().flatten() {
        let gid = match uzers::get_group_by_name(name) {
            Some(g) => g.gid(),
            None => {
                return Err(at.err(
                    v.span(),
                    format!("quota.groups: no group {name:?} on this host"),
                ))
            }
        };
        p.groups
            .insert(gid, size(at, &format!("quota.groups.{name}"), v)?);
    }
    Ok(())
}

/// The size `v` of `key`.
fn size(at: &At, key: &str, v: &Spanned<String>) -> Result<u64, ConfigError> {
    parse_size(v.get_ref()).map_err(|e| at.err(v.span(), format!("{key}: {e}")))
}

/// The configuration file in effect: `--config` (or `NETLEDGER_CONFIG`), else the default.
pub fn config_path(given: Option<&Path>) -> PathBuf {
    given.map_or_else(|| PathBuf::from(super::DEFAULT_CONFIG), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Policy, String> {
        let path = Path::new("/etc/n.toml");
        let c = FileConfig::parse(text, path).map_err(|e| e.to_string())?;
        policy(&c, Some(text), path).map_err(|e| e.to_string())
    }

    #[test]
    fn the_issues_example_reads() {
        let p = parse(
            "cycle_day = 15\n[quota]\ndefault = \"100GiB\"\ndirection = \"rx\"\n\
             warning = \"75%\"\ncritical = \"45GiB\"\n[quota.users]\nroot = \"50GiB\"\n\
             [quota.groups]\nroot = \"500 GB\"\n",
        )
        .unwrap();
        assert_eq!(p.cycle_day, 15);
        assert_eq!(p.default, Some(100 << 30));
        assert_eq!(p.direction, Direction::Rx);
        assert_eq!(p.warning, Threshold::Percent(75.0));
        assert_eq!(p.critical, Threshold::Bytes(45 << 30));
        assert_eq!(p.users.get(&0), Some(&(50 << 30)));
        assert_eq!(p.groups.get(&0), Some(&500_000_000_000));
    }

    #[test]
    fn each_bad_value_is_one_line_naming_its_line() {
        for (text, line, words) in [
            ("cycle_day = 31\n", 1, "not every month"),
            ("\ncycle_day = 0\n", 2, "1 to 28"),
            ("[quota]\n\ndefault = \"lots\"\n", 3, "not a size"),
            ("[quota]\nwarning = \"120%\"\n", 2, "0% to 100%"),
            ("[quota.users]\nno-such-user-x9 = \"1GiB\"\n", 2, "no user"),
            (
                "[quota.groups]\nno-such-group-x9 = \"1GiB\"\n",
                2,
                "no group",
            ),
            ("[quota]\ndirection = \"up\"\n", 2, "direction"),
            ("on_quota = \"mail-it\"\n", 1, "absolute path"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(
                e.contains(&format!("line {line}")) && e.contains(words) && !e.contains('\n'),
                "{text:?}: {e}"
            );
        }
    }
}
