//! Points in time on the command line: `90m`, `24h`, `7d` back from now; `today`,
//! `yesterday`; dates and date-times (`2026-11-01`, `2026-11-01T08:00`) in local time
//! or UTC; and whether `TZ` names a time zone at all.

use std::time::Duration;

use chrono::{DateTime, Days, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// Farthest back a duration may reach (`--since 200years` still makes sense; a million
/// years overflows the calendar).
pub const MAX_BACK: Duration = Duration::from_secs(200 * 31_557_600);

/// A time specification that does not parse: a usage error.
#[derive(Debug, thiserror::Error)]
pub enum BadTime {
    /// Not one of the forms.
    #[error(
        "cannot read time {0:?}: use a duration back from now (90m, 24h, 7d), today, yesterday, \
         a date (2026-11-01) or a date and time (2026-11-01T08:00)"
    )]
    Unreadable(String),
    /// `-1h`: durations already count back from now.
    #[error("time {0:?}: a duration already counts back from now: write {1}")]
    Negative(String, String),
    /// A duration longer than [`MAX_BACK`].
    #[error("time {0:?} reaches back more than 200 years")]
    TooFar(String),
}

/// Resolve `spec` to epoch seconds, relative to `now`, in local time unless `utc`.
pub fn parse_time(spec: &str, now: DateTime<Utc>, utc: bool) -> Result<i64, BadTime> {
    let s = spec.trim();
    let bad = || BadTime::Unreadable(spec.to_owned());
    let midnight = |d: NaiveDate| -> Result<i64, BadTime> { at(d.and_time(NaiveTime::MIN), utc) };
    let today = if utc {
        now.date_naive()
    } else {
        now.with_timezone(&Local).date_naive()
    };
    match s {
        "now" => return Ok(now.timestamp()),
        "today" => return midnight(today),
        "yesterday" => return midnight(today.checked_sub_days(Days::new(1)).ok_or_else(bad)?),
        _ => {}
    }
    if let Ok(d) = humantime::parse_duration(s) {
        if d > MAX_BACK {
            return Err(BadTime::TooFar(spec.to_owned()));
        }
        return Ok(now.timestamp() - d.as_secs() as i64);
    }
    if let Some(back) = s.strip_prefix('-') {
        if humantime::parse_duration(back).is_ok() {
            return Err(BadTime::Negative(spec.to_owned(), back.to_owned()));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return midnight(d);
    }
    for fmt in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(s, fmt) {
            return at(dt, utc);
        }
    }
    Err(bad())
}

fn at(dt: NaiveDateTime, utc: bool) -> Result<i64, BadTime> {
    if utc {
        return Ok(Utc.from_utc_datetime(&dt).timestamp());
    }
    // In a DST gap the wall-clock time does not exist: take the first instant after it.
    Local
        .from_local_datetime(&dt)
        .earliest()
        .or_else(|| {
            Local
                .from_local_datetime(&(dt + chrono::Duration::hours(1)))
                .earliest()
        })
        .map(|t| t.timestamp())
        .ok_or_else(|| BadTime::Unreadable(dt.to_string()))
}

/// Whether `TZ` names a time zone as chrono reads it (chrono's `offset::local::tz_info`):
/// empty (UTC), a TZif file (absolute, or under a zoneinfo directory, with or without a
/// leading `:`), or a POSIX TZ string (`EST5EDT,M3.2.0,M11.1.0`). chrono, like the C
/// library, silently falls back to another zone for anything else.
pub fn tz_is_valid(tz: &str) -> bool {
    if tz.is_empty() {
        return true;
    }
    let (name, colon) = match tz.strip_prefix(':') {
        Some(n) => (n, true),
        None => (tz, false),
    };
    if is_tzif(name) {
        return true;
    }
    !colon
        && posix_tz::valid(
            tz.trim_matches(|c: char| c.is_ascii_whitespace())
                .as_bytes(),
        )
}

/// The directories chrono looks for zone files in.
const ZONEINFO: [&str; 4] = [
    "/usr/share/zoneinfo",
    "/share/zoneinfo",
    "/etc/zoneinfo",
    "/usr/share/lib/zoneinfo",
];

fn is_tzif(name: &str) -> bool {
    use std::io::Read;
    let path = std::path::Path::new(name);
    let candidates: Vec<std::path::PathBuf> = if path.is_absolute() {
        vec![path.to_owned()]
    } else {
        ZONEINFO
            .iter()
            .map(|d| std::path::Path::new(d).join(path))
            .collect()
    };
    candidates.iter().any(|p| {
        let mut magic = [0u8; 4];
        std::fs::File::open(p)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == b"TZif"
    })
}

/// POSIX TZ strings (XBD 8.3) as chrono accepts them: `std offset [dst [offset]
/// ,start[/time],end[/time]]`.
mod posix_tz {
    pub fn valid(s: &[u8]) -> bool {
        let mut c = Cursor(s);
        (|| -> Option<()> {
            c.name()?;
            c.offset()?;
            if c.0.is_empty() {
                return Some(());
            }
            c.name()?;
            if c.0.first() != Some(&b',') {
                c.offset()?;
            }
            c.tag(b',')?;
            c.rule()?;
            c.tag(b',')?;
            c.rule()?;
            c.0.is_empty().then_some(())
        })()
        .is_some()
    }

    struct Cursor<'a>(&'a [u8]);

    impl<'a> Cursor<'a> {
        fn tag(&mut self, t: u8) -> Option<()> {
            let (&first, rest) = self.0.split_first()?;
            (first == t).then(|| self.0 = rest)
        }

        fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
            let s: &'a [u8] = self.0;
            let n = s.iter().take_while(|&&b| f(b)).count();
            let (head, rest) = s.split_at(n);
            self.0 = rest;
            head
        }

        fn name(&mut self) -> Option<()> {
            let name = if self.tag(b'<').is_some() {
                let n = self.take_while(|b| b != b'>');
                let ok = n
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'-');
                self.tag(b'>')?;
                ok.then_some(n)?
            } else {
                self.take_while(|b| b.is_ascii_alphabetic())
            };
            (3..=7).contains(&name.len()).then_some(())
        }

        fn int(&mut self, max: u32) -> Option<u32> {
            let digits = self.take_while(|b| b.is_ascii_digit());
            if digits.is_empty() || digits.len() > 3 {
                return None;
            }
            let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
            (n <= max).then_some(n)
        }

        fn hhmmss(&mut self, max_hour: u32) -> Option<()> {
            self.int(max_hour)?;
            if self.tag(b':').is_some() {
                self.int(59)?;
                if self.tag(b':').is_some() {
                    self.int(59)?;
                }
            }
            Some(())
        }

        fn offset(&mut self) -> Option<()> {
            let _ = self.tag(b'+').or_else(|| self.tag(b'-'));
            self.hhmmss(23)
        }

        fn rule(&mut self) -> Option<()> {
            if self.tag(b'J').is_some() {
                (self.int(365)? >= 1).then_some(())?;
            } else if self.tag(b'M').is_some() {
                (self.int(12)? >= 1).then_some(())?;
                self.tag(b'.')?;
                (self.int(5)? >= 1).then_some(())?;
                self.tag(b'.')?;
                self.int(6)?;
            } else {
                self.int(365)?;
            }
            if self.tag(b'/').is_some() {
                self.hhmmss(24)?;
            }
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 30, 0).unwrap()
    }

    #[test]
    fn durations_count_back_from_now() {
        assert_eq!(
            parse_time("24h", now(), true).unwrap(),
            now().timestamp() - 86400
        );
        assert_eq!(
            parse_time("90m", now(), true).unwrap(),
            now().timestamp() - 5400
        );
        assert_eq!(
            parse_time("7d", now(), true).unwrap(),
            now().timestamp() - 7 * 86400
        );
    }

    #[test]
    fn dates_in_utc() {
        let d = Utc
            .with_ymd_and_hms(2026, 11, 1, 0, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(parse_time("2026-11-01", now(), true).unwrap(), d);
        assert_eq!(
            parse_time("2026-11-01T08:00", now(), true).unwrap(),
            d + 8 * 3600
        );
        let today = Utc
            .with_ymd_and_hms(2026, 11, 21, 0, 0, 0)
            .unwrap()
            .timestamp();
        assert_eq!(parse_time("today", now(), true).unwrap(), today);
        assert_eq!(parse_time("yesterday", now(), true).unwrap(), today - 86400);
    }

    #[test]
    fn negative_and_huge_durations_name_the_fix() {
        let e = parse_time("-1h", now(), true).unwrap_err().to_string();
        assert!(e.contains("write 1h"), "{e}");
        let e = parse_time("100000years", now(), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("200 years"), "{e}");
        assert!(parse_time("150years", now(), true).is_ok());
    }

    #[test]
    fn time_zones_as_chrono_reads_them() {
        for ok in [
            "",
            "UTC0",
            "EST5",
            "CET-1CEST,M3.5.0,M10.5.0/3",
            "<+0330>-3:30",
            "EST5EDT,M3.2.0/2:00:00,M11.1.0/2",
            "NZST-12NZDT,J60,300",
        ] {
            assert!(tz_is_valid(ok), "{ok:?}");
        }
        for bad in [
            "Bogus/Zone",
            ":Bogus",
            "Bogus5Bogus",
            "XY5",
            "EST5EDT,M13.1.0,M11.1.0",
            "EST25",
            "/etc",
        ] {
            assert!(!tz_is_valid(bad), "{bad:?}");
        }
        if std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
            assert!(tz_is_valid("Europe/Berlin"));
            assert!(tz_is_valid(":Europe/Berlin"));
            assert!(tz_is_valid("/usr/share/zoneinfo/Europe/Berlin"));
            assert!(!tz_is_valid("Europe"), "a directory is not a zone");
        }
    }

    #[test]
    fn nonsense_is_an_error_naming_the_forms() {
        let e = parse_time("last tuesday", now(), true).unwrap_err();
        assert!(e.to_string().contains("2026-11-01T08:00"), "{e}");
    }
}
