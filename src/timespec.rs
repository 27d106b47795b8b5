//! Points in time on the command line: `90m`, `24h`, `7d` back from now; `today`,
//! `yesterday`; dates and date-times (`2026-11-01`, `2026-11-01T08:00`) in local time
//! or UTC.

use chrono::{DateTime, Days, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// A time specification that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read time {0:?}: use a duration back from now (90m, 24h, 7d), today, yesterday, \
     a date (2026-11-01) or a date and time (2026-11-01T08:00)"
)]
pub struct BadTime(pub String);

/// Resolve `spec` to epoch seconds, relative to `now`, in local time unless `utc`.
pub fn parse_time(spec: &str, now: DateTime<Utc>, utc: bool) -> Result<i64, BadTime> {
    let s = spec.trim();
    let bad = || BadTime(spec.to_owned());
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
        return Ok(now.timestamp() - d.as_secs() as i64);
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
        .ok_or_else(|| BadTime(dt.to_string()))
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
    fn nonsense_is_an_error_naming_the_forms() {
        let e = parse_time("last tuesday", now(), true).unwrap_err();
        assert!(e.to_string().contains("2026-11-01T08:00"), "{e}");
    }
}
