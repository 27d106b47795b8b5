//! Quotas: billing cycles, each user's allowance, their standing in the current cycle
//! (read from the per-user totals through [`Store::top`]), and what acts on it after every
//! stored pass or flush ([`Watcher`]): the `on_quota` hook, once per level and cycle, and
//! the per-user view files that let a user read their own standing ([`view`]).
//!
//! Pure where it can be: the cycle arithmetic, the allowance rules and the levels take
//! plain values; only [`standings`] reads the database and [`Watcher`] touches the system.

pub mod cycle;
pub mod hook;
pub mod view;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::store::query::{By, TopQuery};
use crate::store::{Store, StoreError};
pub use cycle::Cycle;

/// Which traffic counts against an allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Received only.
    Rx,
    /// Sent only.
    Tx,
    /// Both.
    #[default]
    Total,
}

impl Direction {
    /// The counted bytes of `rx` received and `tx` sent.
    pub fn count(self, rx: u64, tx: u64) -> u64 {
        match self {
            Direction::Rx => rx,
            Direction::Tx => tx,
            Direction::Total => rx.saturating_add(tx),
        }
    }

    /// `rx`, `tx` or `total`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Rx => "rx",
            Direction::Tx => "tx",
            Direction::Total => "total",
        }
    }
}

/// A warning or critical threshold: a share of the allowance, or a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Percent of each user's allowance (0 to 100, decimals allowed).
    Percent(f64),
    /// Bytes, whatever the allowance (and for users without one).
    Bytes(u64),
}

impl Threshold {
    /// `80%`, `95.5 %`, or a size (`40GiB`, `500 GB`, a number of bytes).
    pub fn parse(s: &str) -> Result<Threshold, String> {
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("{s:?} is not a percentage (write it like 80%)"))?;
            if !(0.0..=100.0).contains(&v) || !v.is_finite() {
                return Err(format!("{s:?} is out of range: a percentage is 0% to 100%"));
            }
            return Ok(Threshold::Percent(v));
        }
        parse_size(t).map(Threshold::Bytes)
    }

    /// The bytes this threshold stands for with `allowance`; `None` for a percentage of
    /// no allowance.
    pub fn bytes(self, allowance: Option<u64>) -> Option<u64> {
        match self {
            Threshold::Bytes(b) => Some(b),
            Threshold::Percent(p) => {
                allowance.map(|a| ((a as f64) * p / 100.0).round().min(u64::MAX as f64) as u64)
            }
        }
    }
}

/// A size in human units through `bytesize`: `50GiB`, `500 GB`, `1.5TiB`, `1000` (bytes).
/// Decimal prefixes are powers of 1000, binary ones (KiB, MiB, GiB) of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("{s:?} is negative: a size is 0 or more"));
    }
    t.parse::<bytesize::ByteSize>().map(|b| b.0).map_err(|_| {
        format!("{s:?} is not a size (write it like 50GiB, 500 GB, 1.5TiB, or a number of bytes)")
    })
}

/// The alert level of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// Below the warning threshold.
    Ok,
    /// At or above warning, below critical.
    Warning,
    /// At or above critical.
    Critical,
}

impl Level {
    /// `ok`, `warning` or `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// The level of `value` (use or projection) against the thresholds, critical judged
    /// first. A percentage of no allowance is never reached.
    pub fn of(
        value: u64,
        allowance: Option<u64>,
        warning: Threshold,
        critical: Threshold,
    ) -> Level {
        let reached = |t: Threshold| t.bytes(allowance).is_some_and(|b| value >= b);
        if reached(critical) {
            Level::Critical
        } else if reached(warning) {
            Level::Warning
        } else {
            Level::Ok
        }
    }
}

/// The quota settings, resolved (names to ids) from the configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Day of the month a cycle starts on, 1 to 28, local midnight.
    pub cycle_day: u8,
    /// Which bytes count.
    pub direction: Direction,
    /// Allowance of everyone without a user or group entry; `None`: no quota.
    pub default: Option<u64>,
    /// Per uid, winning over groups and the default.
    pub users: BTreeMap<u32, u64>,
    /// Per gid: a member gets the largest of their groups' allowances.
    pub groups: BTreeMap<u32, u64>,
    /// The hook's warning level.
    pub warning: Threshold,
    /// The hook's critical level.
    pub critical: Threshold,
    /// The `on_quota` hook, if configured.
    pub hook: Option<hook::Hook>,
    /// Where the per-user view files go (see [`view`]).
    pub view_dir: PathBuf,
    /// Whether the passes act at all: the file has a `[quota]` table or `on_quota`.
    pub enabled: bool,
}

/// Defaults of the hook's levels.
pub const DEFAULT_WARNING: Threshold = Threshold::Percent(80.0);
/// See [`DEFAULT_WARNING`].
pub const DEFAULT_CRITICAL: Threshold = Threshold::Percent(100.0);

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            cycle_day: 1,
            direction: Direction::Total,
            default: None,
            users: BTreeMap::new(),
            groups: BTreeMap::new(),
            warning: DEFAULT_WARNING,
            critical: DEFAULT_CRITICAL,
            hook: None,
            view_dir: PathBuf::from(view::DEFAULT_DIR),
            enabled: false,
        }
    }
}

impl Policy {
    /// Whether any allowance is configured.
    pub fn any(&self) -> bool {
        self.default.is_some() || !self.users.is_empty() || !self.groups.is_empty()
    }

    /// The configured allowance of `uid`, whose groups are `gids`: its own entry, else the
    /// largest of its groups', else the default.
    pub fn allowance(&self, uid: u32, gids: &[u32]) -> Option<u64> {
        if let Some(a) = self.users.get(&uid) {
            return Some(*a);
        }
        gids.iter()
            .filter_map(|g| self.groups.get(g).copied())
            .max()
            .or(self.default)
    }
}

/// The groups (primary and supplementary) of a uid, from the system's databases.
pub fn system_groups(uid: u32) -> Vec<u32> {
    let Some(u) = uzers::get_user_by_uid(uid) else {
        return vec![];
    };
    let mut gids = vec![u.primary_group_id()];
    if let Some(gs) = uzers::get_user_groups(u.name(), u.primary_group_id()) {
        gids.extend(gs.iter().map(|g| g.gid()));
    }
    gids.sort_unstable();
    gids.dedup();
    gids
}

/// One user's standing in a cycle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    /// The user's uid.
    pub uid: u32,
    /// The user's name (as recorded, else the system's, else the uid).
    pub user: String,
    /// Bytes received this cycle.
    pub rx_bytes: u64,
    /// Bytes sent this cycle.
    pub tx_bytes: u64,
    /// The counted bytes (per `direction`).
    pub used: u64,
    /// The configured allowance, if any.
    pub quota: Option<u64>,
    /// One-off grants for this cycle.
    pub granted: u64,
    /// `quota + granted`; with no quota, the grants alone when there are some.
    pub allowance: Option<u64>,
    /// `used` as a percentage of `allowance`.
    pub percent: Option<f64>,
    /// Projected use at the end of the cycle, linear from the cycle so far.
    pub projected: u64,
    /// `projected` as a percentage of `allowance`.
    pub projected_percent: Option<f64>,
}

/// Everyone's standing in the cycle at `now`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standings {
    /// The cycle.
    pub cycle: Cycle,
    /// The instant judged (epoch seconds).
    pub now: i64,
    /// Which bytes count.
    pub direction: Direction,
    /// Days left in the cycle (fractional).
    pub days_left: f64,
    /// The users: every user with traffic this cycle, an entry of their own, or a grant;
    /// most used first.
    pub users: Vec<Standing>,
}

/// The shortest stretch of a cycle a projection extrapolates from: less than an hour of
/// traffic says little about a month.
pub const MIN_PROJECTION_SECS: i64 = 3600;

/// Projected use at the cycle's end: `used` over the elapsed part, times its length.
pub fn project(used: u64, cycle: &Cycle, now: i64) -> u64 {
    let len = (cycle.end - cycle.start).max(1);
    let elapsed = (now - cycle.start).clamp(MIN_PROJECTION_SECS.min(len), len);
    ((used as f64) * (len as f64) / (elapsed as f64))
        .round()
        .min(u64::MAX as f64) as u64
}

fn percent(n: u64, of: Option<u64>) -> Option<f64> {
    of.filter(|a| *a > 0).map(|a| n as f64 * 100.0 / a as f64)
}

/// The standings at `now` (times local unless `utc`), of `only` that uid when given.
/// `groups` gives a uid's groups ([`system_groups`] outside tests).
pub fn standings(
    store: &Store,
    policy: &Policy,
    now: i64,
    utc: bool,
    only: Option<u32>,
    groups: &mut dyn FnMut(u32) -> Vec<u32>,
) -> Result<Standings, StoreError> {
    let cycle = Cycle::at(now, policy.cycle_day, utc);
    // The rows of the pass at `now` are dated `now`: include its second.
    let report = store.top(&TopQuery {
        since: cycle.start,
        until: now + 1,
        by: vec![By::User],
        uid: only,
        limit: usize::MAX >> 1,
    })?;
    let grants = store.grants(cycle.start)?;
    let mut traffic: BTreeMap<u32, (u64, u64, Option<String>)> = BTreeMap::new();
    for r in report.rows {
        if let Some(uid) = r.uid {
            let e = traffic.entry(uid).or_insert((0, 0, None));
            e.0 += r.traffic.rx_bytes;
            e.1 += r.traffic.tx_bytes;
            if e.2.is_none() {
                e.2 = r.user;
            }
        }
    }
    if let Some(o) = only {
        traffic.entry(o).or_insert((0, 0, None));
    }
    for uid in policy.users.keys().chain(grants.keys()) {
        if only.is_none_or(|o| o == *uid) {
            traffic.entry(*uid).or_insert((0, 0, None));
        }
    }
    let mut users = Vec::with_capacity(traffic.len());
    for (uid, (rx, tx, name)) in traffic {
        let quota = policy.allowance(uid, &groups(uid));
        let granted = grants.get(&uid).copied().unwrap_or(0);
        let allowance = match (quota, granted) {
            (Some(q), g) => Some(q.saturating_add(g)),
            (None, 0) => None,
            (None, g) => Some(g),
        };
        let used = policy.direction.count(rx, tx);
        let projected = project(used, &cycle, now);
        let user = name
            .or_else(|| {
                uzers::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| uid.to_string());
        users.push(Standing {
            uid,
            user,
            rx_bytes: rx,
            tx_bytes: tx,
            used,
            quota,
            granted,
            allowance,
            percent: percent(used, allowance),
            projected,
            projected_percent: percent(projected, allowance),
        });
    }
    users.sort_by(|a, b| b.used.cmp(&a.used).then(a.uid.cmp(&b.uid)));
    Ok(Standings {
        days_left: (cycle.end - now).max(0) as f64 / 86_400.0,
        cycle,
        now,
        direction: policy.direction,
        users,
    })
}

/// How long a uid's groups are remembered by a [`Watcher`] (group changes are rare; the
/// daemon judges after every flush).
const GROUPS_TTL_SECS: u64 = 300;

/// Acts on the standings after every stored pass or flush: runs the hook once per level
/// and cycle (the database remembers, so restarts do not repeat it) and writes the view
/// files. Its failures are logged, never returned: accounting goes on.
#[derive(Debug)]
pub struct Watcher {
    policy: Policy,
    groups: HashMap<u32, (Instant, Vec<u32>)>,
    /// The refusal of an untrusted hook is said once per process.
    refused: bool,
    /// What each uid's view file holds now (written again only when it changes).
    views: HashMap<u32, String>,
    utc: bool,
}

impl Watcher {
    /// A watcher for `policy`; `utc` judges cycles in UTC (tests).
    pub fn new(policy: Policy, utc: bool) -> Watcher {
        Watcher {
            policy,
            groups: HashMap::new(),
            refused: false,
            views: HashMap::new(),
            utc,
        }
    }

    /// Take new settings (SIGHUP).
    pub fn set_policy(&mut self, policy: Policy) {
        if policy != self.policy {
            self.groups.clear();
            self.refused = false;
        }
        self.policy = policy;
    }

    /// Judge everyone at `now`, after a commit. Returns the hooks started (a snapshot
    /// waits for them before it exits; the daemon lets them run).
    pub fn after_commit(&mut self, store: &mut Store, now: i64) -> Vec<hook::Running> {
        let policy = &self.policy;
        if !policy.enabled {
            return vec![];
        }
        let cache = &mut self.groups;
        let mut groups = |uid: u32| -> Vec<u32> {
            match cache.get(&uid) {
                Some((at, g)) if at.elapsed().as_secs() < GROUPS_TTL_SECS => g.clone(),
                _ => {
                    let g = system_groups(uid);
                    cache.insert(uid, (Instant::now(), g.clone()));
                    g
                }
            }
        };
        let s = match standings(store, policy, now, self.utc, None, &mut groups) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("quota: reading this cycle's usage failed: {e}; judged again after the next pass");
                return vec![];
            }
        };
        if let Err(e) = view::write_all(&policy.view_dir, &s, &mut self.views) {
            tracing::warn!("quota: {e:#}");
        }
        let Some(h) = &policy.hook else {
            return vec![];
        };
        if let Err(why) = h.trusted() {
            if !self.refused {
                tracing::error!("{why}");
                self.refused = true;
            }
            return vec![];
        }
        let mut started = vec![];
        for u in &s.users {
            let level = Level::of(u.used, u.allowance, policy.warning, policy.critical);
            let Some(allowance) = u.allowance else {
                continue;
            };
            for l in [Level::Warning, Level::Critical] {
                if level < l {
                    continue;
                }
                match store.mark_alert(u.uid, s.cycle.start, l.name(), now, u.used, allowance) {
                    Ok(true) => match h.start(u, l, &s) {
                        Ok(r) => started.push(r),
                        Err(e) => tracing::warn!(
                            "quota: the on_quota hook {} for {} ({}) did not start: {e}",
                            h.program.display(),
                            u.user,
                            l.name()
                        ),
                    },
                    Ok(false) => {}
                    Err(e) => tracing::warn!("quota: recording the {} alert of {} failed: {e}; tried again after the next pass", l.name(), u.user),
                }
            }
        }
        started
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_read_percentages_and_sizes() {
        assert_eq!(Threshold::parse("80%").unwrap(), Threshold::Percent(80.0));
        assert_eq!(
            Threshold::parse(" 95.5 %").unwrap(),
            Threshold::Percent(95.5)
        );
        assert_eq!(
            Threshold::parse("40GiB").unwrap(),
            Threshold::Bytes(40 << 30)
        );
        assert_eq!(
            Threshold::parse("500 GB").unwrap(),
            Threshold::Bytes(500_000_000_000)
        );
        assert!(Threshold::parse("101%").unwrap_err().contains("0% to 100%"));
        assert!(Threshold::parse("lots").is_err());
        assert!(parse_size("-5GiB").is_err());
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert_eq!(parse_size("1.5 KiB").unwrap(), 1536);
    }

    #[test]
    fn levels_judge_critical_first_and_percentages_need_an_allowance() {
        let (w, c) = (Threshold::Percent(80.0), Threshold::Percent(95.0));
        assert_eq!(Level::of(79, Some(100), w, c), Level::Ok);
        assert_eq!(Level::of(80, Some(100), w, c), Level::Warning);
        assert_eq!(Level::of(95, Some(100), w, c), Level::Critical);
        assert_eq!(Level::of(u64::MAX, None, w, c), Level::Ok);
        // A warning above critical: critical wins.
        let (w, c) = (Threshold::Bytes(50), Threshold::Bytes(10));
        assert_eq!(Level::of(60, None, w, c), Level::Critical);
    }

    #[test]
    fn a_user_entry_wins_then_the_largest_group_then_the_default() {
        let p = Policy {
            default: Some(100),
            users: [(1000, 5)].into(),
            groups: [(10, 20), (11, 30)].into(),
            ..Policy::default()
        };
        assert_eq!(p.allowance(1000, &[10, 11]), Some(5));
        assert_eq!(p.allowance(1001, &[10, 11]), Some(30));
        assert_eq!(p.allowance(1001, &[10]), Some(20));
        assert_eq!(p.allowance(1002, &[12]), Some(100));
        let none = Policy::default();
        assert_eq!(none.allowance(1002, &[12]), None);
    }

    #[test]
    fn the_projection_is_linear_from_the_cycle_so_far() {
        let c = Cycle {
            start: 0,
            end: 30 * 86_400,
            label: String::new(),
        };
        assert_eq!(project(100, &c, 10 * 86_400), 300);
        assert_eq!(project(100, &c, 30 * 86_400), 100);
        // The first minutes extrapolate from an hour at least.
        assert_eq!(project(1, &c, 60), 720);
    }
}
