//! Billing cycles: from local midnight on `cycle_day` to local midnight on the same day
//! of the next month. With `cycle_day = 1` a cycle is a calendar month; with 15, the cycle
//! "2026-11" runs from 15 November to 14 December. Local time is the process's zone (TZ),
//! DST included: a cycle that spans a DST change is an hour shorter or longer.

use chrono::{Datelike, Local, NaiveDate, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The largest `cycle_day`: every month has a 28th.
pub const MAX_CYCLE_DAY: u8 = 28;

/// One billing cycle, `[start, end)` in epoch seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cycle {
    /// Local midnight of its first day.
    pub start: i64,
    /// Local midnight of the next cycle's first day.
    pub end: i64,
    /// `2026-11` for calendar months; `2026-11-15 to 2026-12-14` otherwise.
    pub label: String,
}

/// The epoch second of local (or UTC) `naive`; in a DST gap, the first instant after it;
/// when the wall clock repeats, the first of the two.
fn instant(naive: NaiveDateTime, utc: bool) -> i64 {
    if utc {
        return Utc.from_utc_datetime(&naive).timestamp();
    }
    let mut n = naive;
    for _ in 0..48 {
        if let Some(t) = Local.from_local_datetime(&n).earliest() {
            return t.timestamp();
        }
        n += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&naive).timestamp()
}

fn midnight(y: i32, m: u32, d: u8) -> NaiveDateTime {
    NaiveDate::from_ymd_opt(y, m, u32::from(d))
        .expect("cycle_day is 1 to 28")
        .and_hms_opt(0, 0, 0)
        .expect("midnight exists")
}

fn next_month(y: i32, m: u32) -> (i32, u32) {
    if m == 12 {
        (y + 1, 1)
    } else {
        (y, m + 1)
    }
}

fn prev_month(y: i32, m: u32) -> (i32, u32) {
    if m == 1 {
        (y - 1, 12)
    } else {
        (y, m - 1)
    }
}

/// The label of the cycle that starts on `day` of month `m` of `y`.
pub fn label(y: i32, m: u32, day: u8) -> String {
    if day == 1 {
        return format!("{y:04}-{m:02}");
    }
    let (ny, nm) = next_month(y, m);
    format!("{y:04}-{m:02}-{day:02} to {ny:04}-{nm:02}-{:02}", day - 1)
}

impl Cycle {
    /// The cycle holding the instant `now` (local time unless `utc`).
    pub fn at(now: i64, cycle_day: u8, utc: bool) -> Cycle {
        let day = cycle_day.clamp(1, MAX_CYCLE_DAY);
        let local = if utc {
            Utc.timestamp_opt(now, 0).single().map(|t| t.naive_utc())
        } else {
            Local
                .timestamp_opt(now, 0)
                .single()
                .map(|t| t.naive_local())
        }
        .unwrap_or_default();
        let (mut y, mut m) = (local.year(), local.month());
        if local.day() < u32::from(day) {
            (y, m) = prev_month(y, m);
        }
        let (ny, nm) = next_month(y, m);
        let mut c = Cycle {
            start: instant(midnight(y, m, day), utc),
            end: instant(midnight(ny, nm, day), utc),
            label: label(y, m, day),
        };
        // A start in a DST gap moved after `now` (rare: zones that change at midnight).
        if c.start > now {
            let (py, pm) = prev_month(y, m);
            c = Cycle {
                start: instant(midnight(py, pm, day), utc),
                end: c.start,
                label: label(py, pm, day),
            };
        }
        c
    }

    /// The cycle before this one.
    pub fn previous(&self, cycle_day: u8, utc: bool) -> Cycle {
        Cycle::at(self.start - 1, cycle_day, utc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn a_cycle_on_the_15th_runs_across_the_month_end() {
        let c = Cycle::at(at("2026-12-03T10:00:00Z"), 15, true);
        assert_eq!(c.start, at("2026-11-15T00:00:00Z"));
        assert_eq!(c.end, at("2026-12-15T00:00:00Z"));
        assert_eq!(c.label, "2026-11-15 to 2026-12-14");
        let c = Cycle::at(at("2026-12-15T00:00:00Z"), 15, true);
        assert_eq!(c.start, at("2026-12-15T00:00:00Z"));
        assert_eq!(c.label, "2026-12-15 to 2027-01-14");
        let c = Cycle::at(at("2027-01-14T23:59:59Z"), 15, true);
        assert_eq!(c.start, at("2026-12-15T00:00:00Z"));
        assert_eq!(c.previous(15, true).start, at("2026-11-15T00:00:00Z"));
    }

    #[test]
    fn day_one_is_the_calendar_month() {
        let c = Cycle::at(at("2026-02-28T23:00:00Z"), 1, true);
        assert_eq!(c.start, at("2026-02-01T00:00:00Z"));
        assert_eq!(c.end, at("2026-03-01T00:00:00Z"));
        assert_eq!(c.label, "2026-02");
    }
}
