//! netledger beside the admin's firewall: what it takes to keep counting when the
//! nftables ruleset changes under it, and to never leave that ruleset unable to load.
//!
//! - **The round trip** ([`round_trip_warning`]): nft 1.0.8 and later read back the
//!   owner-mark rules as `nft list ruleset` prints them (`ct mark set meta skuid |
//!   2147483648`); nft up to 1.0.7 refuse them ("datatype mismatch: expected packet mark,
//!   expression has type user ID": before nftables commit 5d8e33dd, "evaluate: relax
//!   type-checking for integer arguments in mark statements", a `ct mark` statement took
//!   only a mark or a plain integer, and every expression that reads the socket's uid is
//!   of type uid). No other text form reads the uid, so on those versions `setup` says so,
//!   with the fix.
//! - **Watching** ([`crate::sources::nftables::Watch`]): nf_tables announces every committed change on the netlink
//!   group `NFNLGRP_NFTABLES`, one message per object and a `NEWGEN` closing the
//!   transaction (net/netfilter/nf_tables_api.c, `nf_tables_commit`). A change that touches
//!   table `inet netledger` (a `flush ruleset` deletes it) is reported once per
//!   transaction, within milliseconds; the daemon then looks at the table and puts it back.
//! - **The timer** ([`compare`], [`Gap`]): the table's handle (from a 64-bit counter
//!   the kernel never reuses) is kept beside setup's state in `/run`; a table gone or with
//!   another handle at the next setup means it was deleted in between, and accounting may
//!   have been off since the last pass.
//! - **What else stops counting**: accounting switched off ([`acct_off`]), a
//!   `notrack` rule ([`notrack_rules`]) and a full conntrack table ([`CtStats`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The first nft that loads back the owner-mark rules as it prints them.
pub const READS_BACK_FROM: (u32, u32, u32) = (1, 0, 8);

/// `nft --version`'s "nftables v1.0.6 (Lester Gooch #5)" as (1, 0, 6).
pub fn parse_nft_version(text: &str) -> Option<(u32, u32, u32)> {
    let v = text.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    });
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some((major, minor, patch))
}

/// The version of the `nft` on `PATH` (None when it does not run).
pub fn nft_version() -> Option<(u32, u32, u32)> {
    let out = Command::new("nft")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    parse_nft_version(&String::from_utf8_lossy(&out.stdout))
}

/// The warning `setup` gives when `version`'s nft cannot load back the owner-mark rules
/// it prints (None when it can).
pub fn round_trip_warning(version: (u32, u32, u32)) -> Option<String> {
    if version >= READS_BACK_FROM {
        return None;
    }
    let (a, b, c) = version;
    Some(format!(
        "warning: nft {a}.{b}.{c} cannot load back the owner-mark rules it prints (`ct mark \
         set meta skuid | 2147483648`: \"datatype mismatch\"; nft 1.0.8 and later can), so a \
         ruleset saved with `nft list ruleset > /etc/nftables.conf` fails to load as a whole: \
         save only your own tables (netledger puts its table back at every start; \
         docs/operations.md, \"netledger and your firewall\"), or upgrade nft, or set \
         owner_mark = false"
    ))
}

// ---- the table's identity, for the timer ----

/// What `nft -j list table inet netledger` says of the table: its handle.
pub fn parse_table_handle(json: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v["nftables"]
        .as_array()?
        .iter()
        .find_map(|o| o.get("table")?.get("handle")?.as_u64())
}

/// Whether `nft -j list table inet netledger`'s output shows the table as netledger makes
/// it (`contrib/netledger.nft`): chains `output` and `input` on their hooks, each with its
/// `ct state` rule, which is what makes conntrack track. The owner-mark rules are counted
/// apart ([`crate::owner_mark::rules_present`]).
pub fn table_whole(json: &str) -> bool {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return false;
    };
    let objects = v["nftables"].as_array().cloned().unwrap_or_default();
    ["output", "input"].iter().all(|name| {
        let chain = objects
            .iter()
            .filter_map(|o| o.get("chain"))
            .any(|c| c["name"] == *name && c["hook"] == *name && c["table"] == "netledger");
        let ct_rule = objects.iter().filter_map(|o| o.get("rule")).any(|r| {
            r["chain"] == *name
                && r["expr"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|e| e["match"]["left"]["ct"]["key"] == "state")
        });
        chain && ct_rule
    })
}

/// The table's handle now (None: no table, or nft cannot say).
pub fn table_handle() -> Option<u64> {
    crate::owner_mark::nft_json(&["list", "table", "inet", "netledger"])
        .and_then(|j| parse_table_handle(&j))
}

/// What became of the table since netledger last set it up in this namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableCheck {
    /// Never set up in this namespace since boot (no handle kept): nothing to compare.
    First,
    /// The same table as last time.
    Same,
    /// Gone: deleted since (`flush ruleset`, a firewall reload, `nft delete table`).
    Gone,
    /// Another table of that name: deleted and made again since (a saved ruleset loaded
    /// back, another `setup` after a deletion).
    Recreated,
}

impl TableCheck {
    /// The cause recorded for a gap (None: no gap).
    pub fn cause(self) -> Option<&'static str> {
        match self {
            TableCheck::Gone => Some("table-gone"),
            TableCheck::Recreated => Some("table-recreated"),
            _ => None,
        }
    }
}

/// The pure comparison: the handle kept at the last setup against the one now.
pub fn compare(kept: Option<u64>, now: Option<u64>) -> TableCheck {
    match (kept, now) {
        (None, _) => TableCheck::First,
        (Some(_), None) => TableCheck::Gone,
        (Some(k), Some(n)) if k == n => TableCheck::Same,
        _ => TableCheck::Recreated,
    }
}

fn handle_file(proc_root: &Path) -> Option<PathBuf> {
    crate::prereq::state_path(proc_root).map(|p| p.with_extension("table"))
}

fn gap_file(proc_root: &Path) -> Option<PathBuf> {
    crate::prereq::state_path(proc_root).map(|p| p.with_extension("gap"))
}

/// The handle kept at the last setup in this namespace.
pub fn kept_handle(proc_root: &Path) -> Option<u64> {
    handle_file(proc_root)
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|s| s.trim().parse().ok())
}

/// Keep the handle of the table now, for the next [`compare`] (best effort: without
/// it the next check says [`TableCheck::First`]).
pub fn remember_table(proc_root: &Path) {
    if let (Some(f), Some(h)) = (handle_file(proc_root), table_handle()) {
        let _ = std::fs::create_dir_all(crate::prereq::STATE_DIR);
        let _ = std::fs::write(f, format!("{h}\n"));
    }
}

/// Forget the kept handle and gap (`netledger setup --undo`: the table is deleted on
/// purpose).
pub fn forget(proc_root: &Path) {
    for f in [handle_file(proc_root), gap_file(proc_root)]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(f);
    }
}

/// A time accounting may have been off, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Why: `table-gone`, `table-recreated`, `rule-gone`, `acct-off`, `notrack`,
    /// `table-full`.
    pub cause: String,
    /// When it was found (epoch seconds).
    pub detected_at: i64,
    /// How long accounting may have been off, ms (None: unknown, no earlier pass).
    pub off_ms: Option<i64>,
    /// One line saying what happened.
    pub detail: String,
}

/// `at` (epoch seconds) as `2026-12-06 20:41:03 UTC`.
pub fn utc(at: i64) -> String {
    chrono::DateTime::from_timestamp(at, 0).map_or_else(
        || at.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// Keep a gap setup found for the next pass to record (a timer's setup runs before its
/// pass opens the database, and as another user): one line per finding, appended.
pub fn keep_gap(proc_root: &Path, cause: &str, detected_at: i64) {
    use std::io::Write;
    // A pass records a kept (cause, second) once: a second finding of the same cause in the
    // same second (a flush, a pass, another flush) is dated a second later, not lost.
    let detected_at = kept_gaps(proc_root)
        .iter()
        .filter(|(c, _)| c == cause)
        .map(|(_, at)| at + 1)
        .fold(detected_at, i64::max);
    if let Some(f) = gap_file(proc_root) {
        let _ = std::fs::create_dir_all(crate::prereq::STATE_DIR);
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f)
        {
            let _ = writeln!(file, "{cause} {detected_at}");
        }
    }
}

/// The gaps setup kept (cause, detected_at), oldest first. Left in place (a pass running
/// as another user may not remove them): the database records each (cause, time) once.
pub fn kept_gaps(proc_root: &Path) -> Vec<(String, i64)> {
    let text = gap_file(proc_root)
        .and_then(|f| std::fs::read_to_string(f).ok())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (cause, at) = l.trim().split_once(' ')?;
            Some((cause.to_owned(), at.parse().ok()?))
        })
        .collect()
}

// ---- what else stops counting ----

/// The rules that make conntrack skip packets (`notrack`, iptables' `CT --notrack`), one
/// line each, from `nft -j list ruleset`'s output. Their flows have no entry: no counter,
/// no owner.
pub fn notrack_rules(ruleset_json: &str) -> Vec<String> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(ruleset_json) else {
        return Vec::new();
    };
    let rules = v["nftables"].as_array().into_iter().flatten();
    rules
        .filter_map(|o| o.get("rule"))
        .filter(|rule| {
            rule["expr"].as_array().into_iter().flatten().any(|e| {
                e.get("notrack").is_some()
                    || e.get("xt").is_some_and(|x| {
                        let t = x.to_string();
                        t.contains("\"CT\"") || t.contains("NOTRACK")
                    })
            })
        })
        .map(|rule| {
            format!(
                "table {} {} chain {}",
                rule["family"].as_str().unwrap_or("?"),
                rule["table"].as_str().unwrap_or("?"),
                rule["chain"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

/// Conntrack's per-namespace statistics, summed over the CPUs
/// (`/proc/net/stat/nf_conntrack`, net/netfilter/nf_conntrack_standalone.c).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CtStats {
    /// New flows refused because the table was full (`drop`).
    pub drop: u64,
    /// Entries evicted to make room (`early_drop`).
    pub early_drop: u64,
    /// Entries that could not be inserted (`insert_failed`).
    pub insert_failed: u64,
}

impl CtStats {
    /// Parse the file: a header of column names, then one row of hex numbers per CPU.
    pub fn parse(text: &str) -> Option<CtStats> {
        let mut lines = text.lines();
        let names: Vec<&str> = lines.next()?.split_whitespace().collect();
        let col = |n: &str| names.iter().position(|c| *c == n);
        let (d, e, i) = (col("drop")?, col("early_drop")?, col("insert_failed")?);
        let mut s = CtStats::default();
        for line in lines {
            let f: Vec<u64> = line
                .split_whitespace()
                .map(|x| u64::from_str_radix(x, 16))
                .collect::<Result<_, _>>()
                .ok()?;
            s.drop += f.get(d)?;
            s.early_drop += f.get(e)?;
            s.insert_failed += f.get(i)?;
        }
        Some(s)
    }

    /// Read them for the namespace of `proc_root`'s reader.
    pub fn read(proc_root: &Path) -> Option<CtStats> {
        CtStats::parse(&std::fs::read_to_string(proc_root.join("net/stat/nf_conntrack")).ok()?)
    }

    /// New flows refused or evicted for lack of room since `earlier`.
    pub fn refused_since(&self, earlier: &CtStats) -> u64 {
        (self.drop + self.early_drop + self.insert_failed)
            .saturating_sub(earlier.drop + earlier.early_drop + earlier.insert_failed)
    }
}

/// Whether accounting is off now (`nf_conntrack_acct=0`); None when unreadable.
pub fn acct_off(proc_root: &Path) -> Option<bool> {
    std::fs::read_to_string(proc_root.join("sys/net/netfilter/nf_conntrack_acct"))
        .ok()
        .map(|s| s.trim() == "0")
}

/// The detector of the daemon's passes: what stops counting, each said once while it
/// lasts, as gaps to record.
#[derive(Debug, Default)]
pub struct Health {
    acct_off_since: Option<i64>,
    notrack: Vec<String>,
    stats: Option<CtStats>,
}

impl Health {
    /// Look once: `acct_off` (the sysctl now), `ruleset_json` (None: unknown), `stats`
    /// (None: unreadable), at `now` (epoch seconds). Returns the gaps to record, each with
    /// its one line (to be logged).
    pub fn look(
        &mut self,
        acct_off: Option<bool>,
        ruleset_json: Option<&str>,
        stats: Option<CtStats>,
        now: i64,
    ) -> Vec<Gap> {
        let mut gaps = Vec::new();
        match (acct_off, self.acct_off_since) {
            (Some(true), None) => {
                self.acct_off_since = Some(now);
                gaps.push(Gap {
                    cause: "acct-off".into(),
                    detected_at: now,
                    off_ms: None,
                    detail: "conntrack accounting was switched off \
                             (net.netfilter.nf_conntrack_acct=0): flows created from now on \
                             carry no byte counters and are charged nothing (`sysctl -w \
                             net.netfilter.nf_conntrack_acct=1`, or restart netledger with \
                             setup)"
                        .into(),
                });
            }
            (Some(false), Some(_)) => self.acct_off_since = None,
            _ => {}
        }
        if let Some(json) = ruleset_json {
            let found = notrack_rules(json);
            if !found.is_empty() && found != self.notrack {
                gaps.push(Gap {
                    cause: "notrack".into(),
                    detected_at: now,
                    off_ms: None,
                    detail: format!(
                        "a notrack rule makes conntrack skip packets ({}{}): what it matches \
                         has no conntrack entry and is charged to nobody (narrow it to \
                         traffic netledger need not count, or remove it)",
                        found[0],
                        if found.len() > 1 {
                            format!(", and {} more", found.len() - 1)
                        } else {
                            String::new()
                        }
                    ),
                });
            }
            self.notrack = found;
        }
        if let Some(s) = stats {
            if let Some(prev) = self.stats {
                let refused = s.refused_since(&prev);
                if refused > 0 {
                    gaps.push(Gap {
                        cause: "table-full".into(),
                        detected_at: now,
                        off_ms: None,
                        detail: format!(
                            "the conntrack table is full: {refused} new flows refused or \
                             evicted since the last pass (drop {}, early_drop {}, \
                             insert_failed {}), and a refused flow is charged to nobody \
                             (raise net.netfilter.nf_conntrack_max)",
                            s.drop - prev.drop.min(s.drop),
                            s.early_drop - prev.early_drop.min(s.early_drop),
                            s.insert_failed - prev.insert_failed.min(s.insert_failed)
                        ),
                    });
                }
            }
            self.stats = Some(s);
        }
        gaps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_versions_read_and_compared() {
        assert_eq!(
            parse_nft_version("nftables v1.0.6 (Lester Gooch #5)\n"),
            Some((1, 0, 6))
        );
        assert_eq!(
            parse_nft_version("nftables v1.1.3 (Commodore Bullmoose #4)"),
            Some((1, 1, 3))
        );
        assert_eq!(parse_nft_version("nftables v1.0.6.1 (x)"), Some((1, 0, 6)));
        assert_eq!(parse_nft_version("garbage"), None);
        for v in [(1, 0, 2), (1, 0, 6), (1, 0, 7)] {
            assert!(round_trip_warning(v).is_some(), "{v:?}");
        }
        for v in [(1, 0, 8), (1, 0, 9), (1, 1, 3)] {
            assert!(round_trip_warning(v).is_none(), "{v:?}");
        }
    }

    #[test]
    fn table_handles_compared() {
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
            {"table":{"family":"inet","name":"netledger","handle":42}},
            {"chain":{"family":"inet","table":"netledger","name":"output","handle":1}}]}"#;
        assert_eq!(parse_table_handle(json), Some(42));
        assert!(!table_whole(json), "no input chain, no ct rule");
        let whole = r#"{"nftables":[{"table":{"family":"inet","name":"netledger","handle":4}},
            {"chain":{"table":"netledger","name":"output","hook":"output"}},
            {"chain":{"table":"netledger","name":"input","hook":"input"}},
            {"rule":{"chain":"output","expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}}]}},
            {"rule":{"chain":"input","expr":[{"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}}]}}]}"#;
        assert!(table_whole(whole));
        // `nft flush chain inet netledger input`: the chain is there, its rule is not.
        let flushed = whole.replace(r#"{"rule":{"chain":"input""#, r#"{"rule":{"chain":"x""#);
        assert!(!table_whole(&flushed));
        assert_eq!(compare(None, Some(42)), TableCheck::First);
        assert_eq!(compare(Some(42), Some(42)), TableCheck::Same);
        assert_eq!(compare(Some(42), None), TableCheck::Gone);
        assert_eq!(compare(Some(42), Some(43)), TableCheck::Recreated);
    }

    #[test]
    fn notrack_rules_found_in_nft_and_iptables_forms() {
        let json = r#"{"nftables":[
          {"rule":{"family":"inet","table":"raw","chain":"pre","expr":[{"notrack":null}]}},
          {"rule":{"family":"ip","table":"raw","chain":"PREROUTING","expr":[
            {"xt":{"type":"target","name":"CT"}}]}},
          {"rule":{"family":"inet","table":"netledger","chain":"output","expr":[
            {"match":{"op":"in","left":{"ct":{"key":"state"}},"right":"new"}}]}}]}"#;
        assert_eq!(
            notrack_rules(json),
            ["table inet raw chain pre", "table ip raw chain PREROUTING"]
        );
    }

    /// `/proc/net/stat/nf_conntrack` as Linux 6.18 writes it (two CPUs).
    const STATS: &str = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001 00000002 00000003 00000000  00000000 00000000 00000000 00000000
00000010  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 0000000a 00000000 00000000  00000000 00000000 00000000 00000000
";

    #[test]
    fn conntrack_stats_summed_over_cpus() {
        let s = CtStats::parse(STATS).unwrap();
        assert_eq!(
            s,
            CtStats {
                drop: 12,
                early_drop: 3,
                insert_failed: 1
            }
        );
        assert_eq!(s.refused_since(&CtStats::default()), 16);
        assert_eq!(CtStats::parse("entries drop\nzz"), None);
    }

    #[test]
    fn health_says_each_finding_once_while_it_lasts() {
        let mut h = Health::default();
        let notrack = r#"{"nftables":[{"rule":{"family":"inet","table":"raw","chain":"pre","expr":[{"notrack":null}]}}]}"#;
        let s0 = CtStats::default();
        assert!(h.look(Some(false), Some("{}"), Some(s0), 1).is_empty());
        let g = h.look(Some(true), Some(notrack), Some(s0), 2);
        let causes: Vec<&str> = g.iter().map(|g| g.cause.as_str()).collect();
        assert_eq!(causes, ["acct-off", "notrack"]);
        // Still so: nothing new to say.
        assert!(h.look(Some(true), Some(notrack), Some(s0), 3).is_empty());
        let full = CtStats { drop: 5, ..s0 };
        let g = h.look(Some(false), Some("{}"), Some(full), 4);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].cause, "table-full");
        assert!(
            g[0].detail.contains("5 new flows refused"),
            "{}",
            g[0].detail
        );
        // Switched off again: said again.
        assert_eq!(h.look(Some(true), None, Some(full), 5)[0].cause, "acct-off");
    }
}
