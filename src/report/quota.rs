//! Rendering of `netledger quota`: a table, or JSON objects.

use chrono::TimeZone;

use super::table::{amount, Table};
use crate::quota::{Cycle, Direction, Standing};

fn when(t: i64, utc: bool) -> String {
    if utc {
        chrono::Utc
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%Y-%m-%d %H:%M UTC").to_string())
    } else {
        chrono::Local
            .timestamp_opt(t, 0)
            .single()
            .map(|d| d.format("%Y-%m-%d %H:%M %z").to_string())
    }
    .unwrap_or_else(|| t.to_string())
}

/// The line above the table: the cycle, its bounds, the days left and what counts.
pub fn cycle_line(c: &Cycle, days_left: f64, direction: Direction, now: i64, utc: bool) -> String {
    format!(
        "cycle {}: {} to {}, {:.1} days left; counting {} bytes; as of {}\n",
        c.label,
        when(c.start, utc),
        when(c.end, utc),
        days_left,
        match direction {
            Direction::Rx => "received",
            Direction::Tx => "sent",
            Direction::Total => "received + sent",
        },
        when(now, utc)
    )
}

fn pct(p: Option<f64>) -> String {
    p.map_or_else(|| "-".into(), |p| format!("{p:.1}%"))
}

/// The table of standings.
pub fn table(users: &[Standing], days_left: f64, exact: bool) -> String {
    let mut t = Table::new(
        [
            "USER",
            "USED",
            "ALLOWANCE",
            "GRANTED",
            "SHARE",
            "PROJECTED",
            "PROJ.SHARE",
            "DAYS LEFT",
        ]
        .map(String::from)
        .to_vec(),
        1,
    );
    for u in users {
        t.push(vec![
            format!("{} ({})", u.user, u.uid),
            amount(u.used, exact),
            u.allowance.map_or_else(|| "-".into(), |a| amount(a, exact)),
            amount(u.granted, exact),
            pct(u.percent),
            amount(u.projected, exact),
            pct(u.projected_percent),
            format!("{days_left:.1}"),
        ]);
    }
    t.render()
}

/// One JSON object per standing.
pub fn json(
    users: &[Standing],
    c: &Cycle,
    days_left: f64,
    direction: Direction,
) -> serde_json::Value {
    serde_json::Value::Array(
        users
            .iter()
            .map(|u| {
                serde_json::json!({
                    "user": u.user,
                    "uid": u.uid,
                    "rx_bytes": u.rx_bytes,
                    "tx_bytes": u.tx_bytes,
                    "used": u.used,
                    "direction": direction.name(),
                    "quota": u.quota,
                    "granted": u.granted,
                    "allowance": u.allowance,
                    "percent": u.percent,
                    "projected": u.projected,
                    "projected_percent": u.projected_percent,
                    "days_left": days_left,
                    "cycle": c.label,
                    "cycle_start": c.start,
                    "cycle_end": c.end,
                })
            })
            .collect(),
    )
}
