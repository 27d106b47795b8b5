//! `netledger check`: a monitoring plugin with the Nagios/Icinga conventions. Exit 0 OK,
//! 1 WARNING, 2 CRITICAL, 3 UNKNOWN; one status line, then `|` and perfdata in bytes
//! (`'alice'=41234567890B;42949672960;51002736640;0;53687091200`), C locale numbers. Any
//! error is UNKNOWN with one line saying why.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;

use super::common::{open_for_reading, resolve_user};
use crate::quota::{standings, system_groups, Level, Standing};
use crate::report::terminal_safe;
use crate::settings::{Check, Settings};
use crate::units::human_bytes;

/// The plugin's exit codes.
const OK: u8 = 0;
const WARNING: u8 = 1;
const CRITICAL: u8 = 2;
const UNKNOWN: u8 = 3;

/// Run the plugin: print its output and return its exit code.
pub fn main(settings: &Settings, c: &Check) -> u8 {
    let (code, text) = match judge(&settings.db, c) {
        Ok(r) => r,
        Err(e) => unknown(&e),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
    code
}

/// UNKNOWN with the error on one line (any error of the plugin, as monitoring plugins do).
pub fn unknown(e: &anyhow::Error) -> (u8, String) {
    (UNKNOWN, format!("QUOTA UNKNOWN - {}", one_line(e)))
}

fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string().replace('\n', " ");
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// A perfdata label: single-quoted, a quote doubled.
fn label(s: &str) -> String {
    format!("'{}'", terminal_safe(s).replace('\'', "''"))
}

fn opt(n: Option<u64>) -> String {
    n.map(|n| n.to_string()).unwrap_or_default()
}

/// The plugin's exit code and output.
pub fn judge(db: &std::path::Path, s: &Check) -> Result<(u8, String)> {
    let store = open_for_reading(db)?;
    if let Some(unknown) = stale(&store, s)? {
        return Ok(unknown);
    }
    let uid = s
        .user
        .as_deref()
        .map(|u| resolve_user(&store, u))
        .transpose()?;
    let st = standings(&store, &s.policy, s.now, s.utc, uid, &mut system_groups)?;
    let by_level: Vec<(Level, &Standing)> = st
        .users
        .iter()
        .map(|u| {
            (
                Level::of(judged(u, s), u.allowance, s.warning, s.critical),
                u,
            )
        })
        .collect();
    let worst = by_level.iter().map(|(l, _)| *l).fold(Level::Ok, Level::max);
    let perf: Vec<String> = st.users.iter().flat_map(|u| perfdata(u, s)).collect();
    let cycle = format!("cycle {}, {:.1} days left", st.cycle.label, st.days_left);
    let (code, word) = match worst {
        Level::Ok => (OK, "OK"),
        Level::Warning => (WARNING, "WARNING"),
        Level::Critical => (CRITICAL, "CRITICAL"),
    };
    let what = if worst == Level::Ok {
        let with = st.users.iter().filter(|u| u.allowance.is_some()).count();
        format!(
            "{} users, {with} with an allowance, all below the thresholds",
            st.users.len()
        )
    } else {
        let bad: Vec<&Standing> = by_level
            .iter()
            .filter(|(l, _)| *l == worst)
            .map(|(_, u)| *u)
            .collect();
        worst_users(bad, s)
    };
    let mut text = format!("QUOTA {word} - {what} ({cycle})");
    if !perf.is_empty() {
        text.push_str(" | ");
        text.push_str(&perf.join(" "));
    }
    Ok((code, text))
}

/// UNKNOWN when `--max-age` is given and the last pass is older, or there is none.
fn stale(store: &crate::store::Store, s: &Check) -> Result<Option<(u8, String)>> {
    let Some(max) = s.max_age else {
        return Ok(None);
    };
    Ok(match store.last_write()? {
        None => Some((
            UNKNOWN,
            format!(
                "QUOTA UNKNOWN - no pass stored yet in {}",
                store.path().display()
            ),
        )),
        Some(t) if s.now - t > max.as_secs() as i64 => Some((
            UNKNOWN,
            format!(
                "QUOTA UNKNOWN - stale data: the last pass was stored {} ago, more \
                 than --max-age {}; is the timer or the daemon running?",
                humantime::format_duration(Duration::from_secs((s.now - t) as u64)),
                humantime::format_duration(max)
            ),
        )),
        Some(_) => None,
    })
}

/// What a user is judged by: the bytes used, or projected to the cycle's end.
fn judged(u: &Standing, s: &Check) -> u64 {
    if s.estimate {
        u.projected
    } else {
        u.used
    }
}

/// The share of the allowance judged, in percent (0 without an allowance).
fn share(u: &Standing, s: &Check) -> f64 {
    let p = if s.estimate {
        u.projected_percent
    } else {
        u.percent
    };
    p.unwrap_or(0.0)
}

/// A user's perfdata: the bytes used, and projected with `--estimate`.
fn perfdata(u: &Standing, s: &Check) -> Vec<String> {
    let (w, c) = (s.warning.bytes(u.allowance), s.critical.bytes(u.allowance));
    let mut perf = vec![format!(
        "{}={}B;{};{};0;{}",
        label(&u.user),
        u.used,
        opt(w),
        opt(c),
        opt(u.allowance)
    )];
    if s.estimate {
        perf.push(format!(
            "{}={}B;{};{};0;{}",
            label(&format!("{} projected", u.user)),
            u.projected,
            opt(w),
            opt(c),
            opt(u.allowance)
        ));
    }
    perf
}

/// The users at the worst level, most over first: five named, the rest counted.
fn worst_users(mut bad: Vec<&Standing>, s: &Check) -> String {
    bad.sort_by(|a, b| {
        share(b, s)
            .total_cmp(&share(a, s))
            .then(judged(b, s).cmp(&judged(a, s)))
    });
    let names: Vec<String> = bad
        .iter()
        .take(5)
        .map(|u| {
            let proj = if s.estimate { " projected" } else { "" };
            let user = terminal_safe(&u.user);
            match u.allowance {
                Some(a) => format!("{user}{proj} {:.1}% of {}", share(u, s), human_bytes(a)),
                None => format!("{user}{proj} {}", human_bytes(judged(u, s))),
            }
        })
        .collect();
    let more = match bad.len() {
        n if n > 5 => format!(" and {} more", n - 5),
        _ => String::new(),
    };
    format!("{}{more}", names.join(", "))
}

#[cfg(test)]
mod tests {
    /// Issue 24: a user name cannot break the plugin's one line (or a terminal).
    #[test]
    fn perfdata_labels_are_quoted_and_made_safe() {
        assert_eq!(super::label("o'neil\n\x1b[2K"), "'o''neil\\n\\e[2K'");
    }
}
