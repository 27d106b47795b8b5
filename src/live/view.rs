//! What `live` shows, as plain values: the refreshes kept for the moving window, and the
//! rows they make for a grouping and a sort key (pure; drawn by `report::live`).

use std::collections::{BTreeMap, VecDeque};

use crate::account::{Kind, Traffic, UsageKey};

use super::meter::Moved;

/// Refreshes the moving window spans.
pub const WINDOW: usize = 10;

/// Whose traffic a row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Owner {
    /// A user's (charged).
    User(u32),
    /// Counted, owner unknown (forwarded, NAT, a socket never seen).
    Unattributed,
    /// To or from a local network: charged to nobody.
    Excluded,
}

impl Owner {
    /// The owner of a usage row.
    pub fn of(k: &UsageKey) -> Owner {
        match (k.kind, k.uid) {
            (Kind::User, Some(uid)) => Owner::User(uid),
            (Kind::Excluded, _) => Owner::Excluded,
            _ => Owner::Unattributed,
        }
    }
}

/// How rows below each owner are split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Grouping {
    /// One row per owner.
    #[default]
    User,
    /// Each owner's programs below it.
    Program,
    /// Each owner's remote addresses below it.
    Remote,
}

impl Grouping {
    /// The next one (the `g` key).
    pub fn next(self) -> Grouping {
        match self {
            Grouping::User => Grouping::Program,
            Grouping::Program => Grouping::Remote,
            Grouping::Remote => Grouping::User,
        }
    }

    /// As the header names it.
    pub fn name(self) -> &'static str {
        match self {
            Grouping::User => "user",
            Grouping::Program => "user > program",
            Grouping::Remote => "user > remote",
        }
    }
}

/// What rows are sorted by (largest first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Received plus sent.
    #[default]
    Total,
    /// Received.
    Rx,
    /// Sent.
    Tx,
}

impl SortKey {
    /// The next one (the `s` key).
    pub fn next(self) -> SortKey {
        match self {
            SortKey::Total => SortKey::Rx,
            SortKey::Rx => SortKey::Tx,
            SortKey::Tx => SortKey::Total,
        }
    }

    /// As the header names it.
    pub fn name(self) -> &'static str {
        match self {
            SortKey::Total => "total",
            SortKey::Rx => "rx",
            SortKey::Tx => "tx",
        }
    }

    fn of(self, t: &Traffic) -> u64 {
        match self {
            SortKey::Total => t.bytes(),
            SortKey::Rx => t.rx_bytes,
            SortKey::Tx => t.tx_bytes,
        }
    }
}

/// Bytes moved over some seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rate {
    /// Bytes received and sent.
    pub traffic: Traffic,
    /// Over how long.
    pub secs: f64,
}

impl Rate {
    /// Received, in bytes per second.
    pub fn rx_per_s(&self) -> f64 {
        per_s(self.traffic.rx_bytes, self.secs)
    }

    /// Sent, in bytes per second.
    pub fn tx_per_s(&self) -> f64 {
        per_s(self.traffic.tx_bytes, self.secs)
    }
}

fn per_s(bytes: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        bytes as f64 / secs
    } else {
        0.0
    }
}

/// One refresh.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the previous refresh (between the two dumps).
    pub secs: f64,
    /// What moved.
    pub moved: Moved,
    /// Bytes the interfaces (all but loopback) received and sent meanwhile, when read.
    pub link: Option<(u64, u64)>,
}

/// One line of the view.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Whose.
    pub owner: Owner,
    /// The program or remote of a row below its owner; `None` for the owner's row.
    pub detail: Option<String>,
    /// Over the last refresh.
    pub last: Rate,
    /// Over the moving window.
    pub window: Rate,
}

/// The last [`WINDOW`] refreshes.
#[derive(Debug, Clone, Default)]
pub struct History {
    samples: VecDeque<Sample>,
}

impl History {
    /// Keep a refresh, dropping the oldest beyond the window.
    pub fn push(&mut self, s: Sample) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The latest refresh.
    pub fn last(&self) -> Option<&Sample> {
        self.samples.back()
    }

    /// Seconds the window spans.
    pub fn window_secs(&self) -> f64 {
        self.samples.iter().map(|s| s.secs).sum()
    }

    /// Totals per bucket, over the last refresh and the window.
    pub fn kind_rates(&self, kind: Kind) -> (Rate, Rate) {
        let mut w = Traffic::default();
        for s in &self.samples {
            w.add(&s.moved.of_kind(kind));
        }
        let last = self.last().map_or(Rate::default(), |s| Rate {
            traffic: s.moved.of_kind(kind),
            secs: s.secs,
        });
        (
            last,
            Rate {
                traffic: w,
                secs: self.window_secs(),
            },
        )
    }

    /// The interfaces' rates over the last refresh and the window, if read each time.
    pub fn link_rates(&self) -> Option<(Rate, Rate)> {
        let bytes = |s: &Sample| {
            s.link.map(|(rx, tx)| Traffic {
                rx_bytes: rx,
                tx_bytes: tx,
                ..Traffic::default()
            })
        };
        let last = self.last()?;
        let mut w = Traffic::default();
        for s in &self.samples {
            w.add(&bytes(s)?);
        }
        Some((
            Rate {
                traffic: bytes(last)?,
                secs: last.secs,
            },
            Rate {
                traffic: w,
                secs: self.window_secs(),
            },
        ))
    }

    /// The rows: users that moved anything in the window by `sort` over the window
    /// (largest first, then by uid), then the unattributed and the excluded (always);
    /// below each, its programs or remotes the same way when `grouping` says so.
    pub fn rows(&self, grouping: Grouping, sort: SortKey) -> Vec<Row> {
        type Acc = BTreeMap<(Owner, Option<String>), (Traffic, Traffic)>;
        let mut acc: Acc = BTreeMap::new();
        let n = self.samples.len();
        for (i, s) in self.samples.iter().enumerate() {
            let is_last = i + 1 == n;
            for (k, t) in &s.moved.usage {
                let owner = Owner::of(k);
                let detail = match grouping {
                    Grouping::User => None,
                    Grouping::Program => Some(k.program.clone().unwrap_or_else(|| "?".into())),
                    Grouping::Remote => Some(k.remote.to_string()),
                };
                let mut add = |key: (Owner, Option<String>)| {
                    let e = acc.entry(key).or_default();
                    e.1.add(t);
                    if is_last {
                        e.0.add(t);
                    }
                };
                add((owner, None));
                if detail.is_some() {
                    add((owner, detail));
                }
            }
        }
        let (last_secs, window_secs) = (self.last().map_or(0.0, |s| s.secs), self.window_secs());
        let row = |(owner, detail): (Owner, Option<String>), (l, w): (Traffic, Traffic)| Row {
            owner,
            detail,
            last: Rate {
                traffic: l,
                secs: last_secs,
            },
            window: Rate {
                traffic: w,
                secs: window_secs,
            },
        };
        // The unattributed and the excluded have their lines even when nothing moved.
        for owner in [Owner::Unattributed, Owner::Excluded] {
            acc.entry((owner, None)).or_default();
        }
        let mut heads: Vec<Row> = Vec::new();
        let mut below: BTreeMap<Owner, Vec<Row>> = BTreeMap::new();
        for (key, v) in acc {
            if key.1.is_none() {
                heads.push(row(key, v));
            } else {
                below.entry(key.0).or_default().push(row(key, v));
            }
        }
        let order = |a: &Row, b: &Row| {
            let rank = |r: &Row| match r.owner {
                Owner::User(_) => 0,
                Owner::Unattributed => 1,
                Owner::Excluded => 2,
            };
            rank(a)
                .cmp(&rank(b))
                .then(sort.of(&b.window.traffic).cmp(&sort.of(&a.window.traffic)))
                .then(a.owner.cmp(&b.owner))
                .then(a.detail.cmp(&b.detail))
        };
        heads.sort_by(order);
        let mut out = Vec::new();
        for h in heads {
            let owner = h.owner;
            out.push(h);
            if let Some(mut rows) = below.remove(&owner) {
                rows.sort_by(order);
                out.extend(rows);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Totals;

    fn key(kind: Kind, uid: Option<u32>, program: &str, remote: &str) -> UsageKey {
        UsageKey {
            cgroup: None,
            kind,
            uid,
            program: Some(program.into()),
            reason: None,
            via: None,
            container: None,
            protocol: 6,
            direction: None,
            remote: remote.parse().unwrap(),
            port: 443,
        }
    }

    fn t(rx: u64, tx: u64) -> Traffic {
        Traffic {
            rx_bytes: rx,
            tx_bytes: tx,
            ..Traffic::default()
        }
    }

    fn sample(secs: f64, rows: &[(UsageKey, Traffic)]) -> Sample {
        Sample {
            secs,
            moved: Moved {
                usage: rows.iter().cloned().collect(),
                totals: Totals::default(),
                ended: 0,
            },
            link: None,
        }
    }

    fn shown(rows: &[Row]) -> Vec<(Owner, Option<&str>, u64, u64)> {
        rows.iter()
            .map(|r| {
                (
                    r.owner,
                    r.detail.as_deref(),
                    r.last.traffic.bytes(),
                    r.window.traffic.bytes(),
                )
            })
            .collect()
    }

    #[test]
    fn rows_group_by_owner_then_program_or_remote_and_sort_by_the_key_over_the_window() {
        use Owner::*;
        let a1 = key(Kind::User, Some(1001), "curl", "198.51.100.2");
        let a2 = key(Kind::User, Some(1001), "ssh", "198.51.100.3");
        let b = key(Kind::User, Some(1002), "rsync", "198.51.100.2");
        let un = key(Kind::Unattributed, None, "?", "198.51.100.9");
        let ex = key(Kind::Excluded, Some(1001), "curl", "10.0.0.1");
        let mut h = History::default();
        h.push(sample(
            1.0,
            &[(a1.clone(), t(100, 0)), (b.clone(), t(0, 300))],
        ));
        h.push(sample(
            1.0,
            &[
                (a1.clone(), t(50, 0)),
                (a2.clone(), t(0, 200)),
                (un.clone(), t(999, 999)),
                (ex.clone(), t(5000, 0)),
            ],
        ));
        // alice 350 (150 rx, 200 tx) over the window, bob 300 (tx): alice first by
        // total; unattributed and excluded last whatever their size.
        assert_eq!(
            shown(&h.rows(Grouping::User, SortKey::Total)),
            [
                (User(1001), None, 250, 350),
                (User(1002), None, 0, 300),
                (Unattributed, None, 1998, 1998),
                (Excluded, None, 5000, 5000),
            ]
        );
        assert_eq!(
            shown(&h.rows(Grouping::User, SortKey::Tx))[..2],
            [(User(1002), None, 0, 300), (User(1001), None, 250, 350)]
        );
        assert_eq!(
            shown(&h.rows(Grouping::Program, SortKey::Rx))[..4],
            [
                (User(1001), None, 250, 350),
                (User(1001), Some("curl"), 50, 150),
                (User(1001), Some("ssh"), 200, 200),
                (User(1002), None, 0, 300),
            ]
        );
        let remote = h.rows(Grouping::Remote, SortKey::Total);
        assert_eq!(remote[1].detail.as_deref(), Some("198.51.100.3"));
        assert_eq!(remote[1].last.rx_per_s(), 0.0);
        assert_eq!(remote[1].last.tx_per_s(), 200.0);
        assert_eq!(h.window_secs(), 2.0);
    }

    #[test]
    fn the_window_keeps_the_last_refreshes_only() {
        let k = key(Kind::User, Some(1), "x", "198.51.100.2");
        let mut h = History::default();
        for i in 0..WINDOW + 5 {
            h.push(sample(1.0, &[(k.clone(), t(i as u64, 0))]));
        }
        let rows = h.rows(Grouping::User, SortKey::Total);
        assert_eq!(
            rows.iter().map(|r| r.owner).collect::<Vec<_>>(),
            [Owner::User(1), Owner::Unattributed, Owner::Excluded],
            "the unattributed and the excluded lines even when nothing moved"
        );
        let want: u64 = (5..WINDOW as u64 + 5).sum();
        assert_eq!(rows[0].window.traffic.rx_bytes, want);
        assert_eq!(h.window_secs(), WINDOW as f64);
    }
}
