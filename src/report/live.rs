//! `netledger live` on screen: the full-screen view (ratatui), and one refresh as a table
//! or JSON lines when there is no terminal. Rendering only: the rows come from
//! [`crate::live::view`].

use std::collections::BTreeMap;
use std::time::Duration;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row as TableRow, Table};
use ratatui::Frame;
use serde_json::json;

use crate::account::{Kind, Traffic};
use crate::live::view::{Grouping, History, Owner, Rate, Row, Sample, SortKey};
use crate::units::human_bytes;

use super::{terminal_safe, Record};

/// The keys of the view, as `?` shows them.
pub const KEYS: &[(&str, &str)] = &[
    ("u", "one line per user"),
    ("p", "each user's programs below it"),
    ("r", "each user's remote addresses below it"),
    ("g", "next grouping (user, program, remote)"),
    ("s", "next sort key (total, rx, tx; over the avg window)"),
    ("b", "bit/s or byte/s"),
    ("space", "pause the numbers (measuring goes on)"),
    ("?", "this help (any key closes it)"),
    ("q, Esc", "quit"),
];

/// Everything the view shows besides the rows.
pub struct Screen<'a> {
    /// The refreshes of the window.
    pub history: &'a History,
    /// The rows to show (made from `history`, or kept while paused).
    pub rows: &'a [Row],
    /// Grouping and sort.
    pub grouping: Grouping,
    /// What the rows are sorted by.
    pub sort: SortKey,
    /// bit/s (else byte/s).
    pub bits: bool,
    /// Paused.
    pub paused: bool,
    /// Showing the help.
    pub help: bool,
    /// The refresh interval.
    pub interval: Duration,
    /// Flows in the last dump.
    pub flows: u64,
    /// Notes for the header (events lost, events off, …).
    pub notes: &'a [String],
    /// User names by uid.
    pub names: &'a BTreeMap<u32, String>,
}

/// A rate as the view prints it: bit/s in decimal units (as links are rated), byte/s in
/// binary ones (as files are sized).
pub fn rate(bytes_per_s: f64, bits: bool) -> String {
    if bits {
        let b = bytes_per_s * 8.0;
        const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
        let (mut v, mut u) = (b, 0);
        while v >= 1000.0 && u < UNITS.len() - 1 {
            v /= 1000.0;
            u += 1;
        }
        if u == 0 {
            format!("{v:.0} {}", UNITS[0])
        } else {
            format!("{v:.1} {}", UNITS[u])
        }
    } else {
        format!("{}/s", human_bytes(bytes_per_s.round() as u64))
    }
}

/// How a row's owner is named.
pub fn owner_name(owner: Owner, names: &BTreeMap<u32, String>) -> String {
    match owner {
        Owner::User(uid) => match names.get(&uid) {
            Some(n) if *n != uid.to_string() => format!("{} ({uid})", terminal_safe(n)),
            _ => uid.to_string(),
        },
        Owner::Unattributed => "(unattributed)".into(),
        Owner::Excluded => "(excluded: local)".into(),
    }
}

fn row_name(r: &Row, names: &BTreeMap<u32, String>) -> String {
    match &r.detail {
        Some(d) => format!("  {}", terminal_safe(d)),
        None => owner_name(r.owner, names),
    }
}

/// Draw the view.
pub fn draw(f: &mut Frame, s: &Screen) {
    let area = f.area();
    let [head, body] = Layout::vertical([Constraint::Length(4), Constraint::Min(1)]).areas(area);
    f.render_widget(Paragraph::new(header(s, area.width)), head);
    let wide = area.width >= 80;
    let (title, widths): (Vec<&str>, Vec<Constraint>) = if wide {
        (
            vec!["USER", "RX", "TX", "RX avg", "TX avg"],
            vec![
                Constraint::Min(12),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(12),
                Constraint::Length(12),
            ],
        )
    } else {
        (
            vec!["USER", "RX", "TX"],
            vec![
                Constraint::Min(10),
                Constraint::Length(12),
                Constraint::Length(12),
            ],
        )
    };
    let rows = s.rows.iter().map(|r| {
        let mut cells = vec![
            row_name(r, s.names),
            rate(r.last.rx_per_s(), s.bits),
            rate(r.last.tx_per_s(), s.bits),
        ];
        if wide {
            cells.push(rate(r.window.rx_per_s(), s.bits));
            cells.push(rate(r.window.tx_per_s(), s.bits));
        }
        let style = if r.detail.is_none() {
            Style::default().add_modifier(Modifier::BOLD)
        } else {
            Style::default()
        };
        TableRow::new(cells).style(style)
    });
    let table = Table::new(rows, widths)
        .header(TableRow::new(title).style(Style::default().add_modifier(Modifier::REVERSED)))
        .column_spacing(1);
    f.render_widget(table, body);
    if s.help {
        draw_help(f, area);
    }
}

fn header(s: &Screen, width: u16) -> Vec<Line<'static>> {
    let win = s.history.window_secs();
    let state = match (s.paused, s.history.last()) {
        (true, _) => "  PAUSED",
        (false, None) => "  measuring...",
        _ => "",
    };
    let mut top = format!(
        "netledger live  every {}  avg {:.0}s  group: {}  sort: {}{state}",
        humantime::format_duration(s.interval),
        win,
        s.grouping.name(),
        s.sort.name(),
    );
    if width >= 80 {
        top.push_str("  (? help)");
    }
    let pair = |r: &Rate| {
        format!(
            "rx {} tx {}",
            rate(r.rx_per_s(), s.bits),
            rate(r.tx_per_s(), s.bits)
        )
    };
    let link = match s.history.link_rates() {
        Some((last, _)) => format!("link   {}  (interfaces)", pair(&last)),
        None => "link   (unknown: /proc/net/dev unreadable)".into(),
    };
    let users = s.history.kind_rates(Kind::User).0;
    let un = s.history.kind_rates(Kind::Unattributed).0;
    let ex = s.history.kind_rates(Kind::Excluded).0;
    let mut all = users;
    all.traffic.add(&un.traffic);
    all.traffic.add(&ex.traffic);
    let flows = format!("flows  {}  ({} flows)", pair(&all), s.flows);
    let split = format!(
        "users {}  unattributed {}  excluded {}{}",
        rate(users.rx_per_s() + users.tx_per_s(), s.bits),
        rate(un.rx_per_s() + un.tx_per_s(), s.bits),
        rate(ex.rx_per_s() + ex.tx_per_s(), s.bits),
        s.notes.iter().map(|n| format!("  {n}")).collect::<String>(),
    );
    vec![
        Line::styled(top, Style::default().add_modifier(Modifier::BOLD)),
        Line::from(link),
        Line::from(flows),
        Line::from(split),
    ]
}

fn draw_help(f: &mut Frame, area: Rect) {
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| Line::from(format!("{k:>7}  {what}")))
        .collect();
    let h = (lines.len() as u16 + 2).min(area.height);
    let w = 56.min(area.width);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" keys ")),
        r,
    );
}

/// Per owner, what moved in one refresh: users and the unattributed (the excluded is
/// charged to nobody and left out), users by uid.
fn per_owner(s: &Sample) -> BTreeMap<Owner, Traffic> {
    let mut m: BTreeMap<Owner, Traffic> = BTreeMap::new();
    for (k, t) in &s.moved.usage {
        m.entry(Owner::of(k)).or_default().add(t);
    }
    m
}

fn bps(bytes: u64, secs: f64) -> u64 {
    if secs > 0.0 {
        (bytes as f64 * 8.0 / secs).round() as u64
    } else {
        0
    }
}

/// One refresh as JSON records, one per user and one for the unattributed traffic (when
/// any moved): `uid` (null for unattributed), `user`, `rx_bytes`, `tx_bytes` during the
/// interval, `rx_bps`, `tx_bps` (bits per second), `interval_s`.
pub fn json_records(s: &Sample, names: &BTreeMap<u32, String>) -> Vec<Record> {
    per_owner(s)
        .into_iter()
        .filter_map(|(owner, t)| {
            let (uid, user) = match owner {
                Owner::User(uid) => (
                    Some(uid),
                    Some(names.get(&uid).cloned().unwrap_or_else(|| uid.to_string())),
                ),
                Owner::Unattributed if !t.is_zero() => (None, None),
                _ => return None,
            };
            let v = json!({
                "uid": uid,
                "user": user,
                "rx_bytes": t.rx_bytes,
                "tx_bytes": t.tx_bytes,
                "rx_bps": bps(t.rx_bytes, s.secs),
                "tx_bps": bps(t.tx_bytes, s.secs),
                "interval_s": (s.secs * 1000.0).round() / 1000.0,
            });
            match v {
                serde_json::Value::Object(m) => Some(m),
                _ => None,
            }
        })
        .collect()
}

/// One refresh as a table: a line on the interval and the link, then per user (largest
/// first), the unattributed and the excluded: rates in bit/s and byte/s, and the bytes.
pub fn table(s: &Sample, names: &BTreeMap<u32, String>) -> String {
    let mut out = String::new();
    let link = match s.link {
        Some((rx, tx)) => format!(
            "; link rx {} tx {}",
            rate(rx as f64 / s.secs, true),
            rate(tx as f64 / s.secs, true)
        ),
        None => String::new(),
    };
    out.push_str(&format!("interval {:.3} s{link}\n", s.secs));
    out.push_str(&format!(
        "{:<24} {:>13} {:>13} {:>11} {:>11} {:>11} {:>11}\n",
        "USER", "RX bit/s", "TX bit/s", "RX B/s", "TX B/s", "RX", "TX"
    ));
    let mut h = History::default();
    h.push(s.clone());
    for r in h.rows(Grouping::User, SortKey::Total) {
        let t = &r.last;
        out.push_str(&format!(
            "{:<24} {:>13} {:>13} {:>11} {:>11} {:>11} {:>11}\n",
            owner_name(r.owner, names),
            rate(t.rx_per_s(), true),
            rate(t.tx_per_s(), true),
            rate(t.rx_per_s(), false),
            rate(t.tx_per_s(), false),
            human_bytes(t.traffic.rx_bytes),
            human_bytes(t.traffic.tx_bytes),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 24: a user's name is shown escaped in the live view and its table.
    #[test]
    fn owner_names_are_made_safe_for_a_terminal() {
        let names = BTreeMap::from([(1001, "ev\x1b[2Kil\nroot".to_string())]);
        assert_eq!(
            owner_name(Owner::User(1001), &names),
            "ev\\e[2Kil\\nroot (1001)"
        );
    }

    fn sample() -> Sample {
        use crate::account::UsageKey;
        use crate::live::meter::Moved;
        let key = |kind, uid| UsageKey {
            cgroup: None,
            kind,
            uid,
            program: None,
            reason: None,
            via: None,
            container: None,
            protocol: 6,
            direction: None,
            remote: "198.51.100.2".parse().unwrap(),
            port: 443,
        };
        let t = |rx, tx| Traffic {
            rx_bytes: rx,
            tx_bytes: tx,
            ..Traffic::default()
        };
        Sample {
            secs: 2.0,
            moved: Moved {
                usage: [
                    (key(Kind::User, Some(1001)), t(250_000, 1_000)),
                    (key(Kind::User, Some(1002)), t(0, 125)),
                    (key(Kind::Unattributed, None), t(10, 0)),
                    (key(Kind::Excluded, Some(1001)), t(999, 999)),
                ]
                .into_iter()
                .collect(),
                ..Moved::default()
            },
            link: Some((300_000, 2_000)),
        }
    }

    #[test]
    fn json_has_a_line_per_user_and_the_unattributed_not_the_excluded() {
        let names = BTreeMap::from([(1001, "alice".to_string())]);
        let lines: Vec<String> = json_records(&sample(), &names)
            .into_iter()
            .map(|r| serde_json::Value::Object(r).to_string())
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"uid":1001,"user":"alice","rx_bytes":250000,"tx_bytes":1000,"rx_bps":1000000,"tx_bps":4000,"interval_s":2.0}"#,
                r#"{"uid":1002,"user":"1002","rx_bytes":0,"tx_bytes":125,"rx_bps":0,"tx_bps":500,"interval_s":2.0}"#,
                r#"{"uid":null,"user":null,"rx_bytes":10,"tx_bytes":0,"rx_bps":40,"tx_bps":0,"interval_s":2.0}"#,
            ]
        );
    }

    #[test]
    fn the_table_has_the_interval_the_link_and_a_line_per_owner() {
        let names = BTreeMap::from([(1001, "alice".to_string())]);
        let t = table(&sample(), &names);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "interval 2.000 s; link rx 1.2 Mbit/s tx 8.0 kbit/s"
        );
        assert!(lines[1].starts_with("USER"), "{t}");
        let first = |l: &str| l.split("  ").next().unwrap().trim().to_string();
        assert_eq!(
            lines[2..].iter().map(|l| first(l)).collect::<Vec<_>>(),
            [
                "alice (1001)",
                "1002",
                "(unattributed)",
                "(excluded: local)"
            ]
        );
        assert!(
            lines[2].contains("1.0 Mbit/s") && lines[2].contains("122.1 KiB/s"),
            "{t}"
        );
    }

    #[test]
    fn rates_read_in_decimal_bits_and_binary_bytes() {
        assert_eq!(rate(0.0, true), "0 bit/s");
        assert_eq!(rate(100.0, true), "800 bit/s");
        assert_eq!(rate(125_000.0, true), "1.0 Mbit/s");
        assert_eq!(rate(1536.0, false), "1.5 KiB/s");
        assert_eq!(rate(12.4, false), "12 B/s");
    }
}
