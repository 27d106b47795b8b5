//! `netledger log`: finished connections from the connection log, filtered like
//! ctrecorder's list mode (`--host IP/MASK`, `--port`) and printed through an
//! ipprotd-style template (`%s` start, `%e` end, `%S` seconds, `%i` remote address, …).

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use chrono::{Local, SecondsFormat, TimeZone, Utc};
use ipnet::IpNet;
use serde_json::{json, Value};

use crate::attribute::Direction;
use crate::cli::{Cli, LogArgs};
use crate::cmd::common;
use crate::cmd::connections::{ends, traffic};
use crate::report::names::protocol_name;
use crate::store::connections::LoggedConnection;

/// One piece of a `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Field(char),
}

/// A parsed `--format` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

/// The escapes a template may use (documented in `netledger log --help`).
const ESCAPES: &str = "seSDPdirlLoRuUctxTX";

/// The default line: start, duration, protocol, direction, both tuples, owner, bytes.
pub const DEFAULT_FORMAT: &str = "%s %Ss %P %d %o %R %u %c tx=%t rx=%x";

/// Parse a template (clap value parser: a bad one is a usage error, exit 2).
pub fn parse_template(s: &str) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => text.push('%'),
            Some('n') => text.push('\n'),
            Some(e) if ESCAPES.contains(e) => {
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(e));
            }
            Some(e) => {
                return Err(format!(
                    "unknown escape %{e}: use one of %{} (see `netledger log --help`)",
                    ESCAPES
                        .chars()
                        .collect::<Vec<_>>()
                        .iter()
                        .map(char::to_string)
                        .collect::<Vec<_>>()
                        .join(" %")
                ))
            }
            None => {
                return Err("the template ends with a lone %: write %% for a percent sign".into())
            }
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(Template(pieces))
}

/// `yyyy-mm-dd HH:MM:SS+hh:mm`, local time unless `utc` (ipprotd's RFC 3339 form).
pub fn format_time(ms: i64, utc: bool) -> String {
    let fmt = "%Y-%m-%d %H:%M:%S%:z";
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) if utc => t.format(fmt).to_string(),
        Some(t) => t.with_timezone(&Local).format(fmt).to_string(),
        None => ms.to_string(),
    }
}

fn tuple_text(t: &crate::model::Tuple) -> String {
    let sa = |ip, port| std::net::SocketAddr::new(ip, port).to_string();
    format!("{}>{}", sa(t.src, t.sport), sa(t.dst, t.dport))
}

fn split(addr: &str) -> (String, String) {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => (sa.ip().to_string(), sa.port().to_string()),
        Err(_) => (addr.to_string(), String::new()),
    }
}

impl Template {
    /// Render one connection (pure but for the user-name lookup `user`).
    pub fn render(
        &self,
        c: &LoggedConnection,
        utc: bool,
        user: &mut dyn FnMut(u32) -> String,
    ) -> String {
        let (local, remote) = ends_of(c);
        let t = traffic(c.orig_counters, c.reply_counters, c.direction);
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Field(f) => out.push_str(&match f {
                    's' => format_time(c.start_ms, utc),
                    'e' => format_time(c.end_ms, utc),
                    'S' => format!("{:.3}", c.duration_ms() as f64 / 1000.0),
                    'D' => c.duration_ms().to_string(),
                    'P' => protocol_name(c.orig.proto),
                    'd' => c.direction.map_or("-", |d| d.as_str()).to_string(),
                    'i' => split(&remote).0,
                    'r' => split(&remote).1,
                    'l' => split(&local).0,
                    'L' => split(&local).1,
                    'o' => tuple_text(&c.orig),
                    'R' => tuple_text(&c.reply),
                    'u' => c.uid.map_or("-".into(), &mut *user),
                    'U' => c.uid.map_or("-".into(), |u| u.to_string()),
                    'c' => c.program.clone().unwrap_or_else(|| "-".into()),
                    't' => t.tx_bytes.to_string(),
                    'x' => t.rx_bytes.to_string(),
                    'T' => t.tx_packets.to_string(),
                    'X' => t.rx_packets.to_string(),
                    _ => unreachable!("parse_template admits only known escapes"),
                }),
            }
        }
        out
    }
}

fn ends_of(c: &LoggedConnection) -> (String, String) {
    let flow = crate::model::Flow {
        orig: c.orig,
        reply: c.reply,
        id: 0,
        zone: c.zone,
        mark: 0,
        status: 0,
        orig_counters: None,
        reply_counters: None,
        start_ns: None,
        stop_ns: None,
    };
    ends(&flow, c.direction)
}

/// Whether `c` passes the filters (pure).
pub fn matches(
    c: &LoggedConnection,
    host: Option<&IpNet>,
    port: Option<u16>,
    uid: Option<u32>,
) -> bool {
    let tuples = [&c.orig, &c.reply];
    host.is_none_or(|n| {
        tuples
            .iter()
            .any(|t| n.contains(&t.src) || n.contains(&t.dst))
    }) && port.is_none_or(|p| tuples.iter().any(|t| t.sport == p || t.dport == p))
        && uid.is_none_or(|u| c.uid == Some(u))
}

/// One connection as a JSON object.
pub fn to_json(c: &LoggedConnection, user: Option<String>) -> Value {
    let (local, remote) = ends_of(c);
    let t = traffic(c.orig_counters, c.reply_counters, c.direction);
    let rfc = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    let tuple = |t: &crate::model::Tuple| json!({"src": t.src.to_string(), "dst": t.dst.to_string(), "sport": t.sport, "dport": t.dport});
    json!({
        "start": rfc(c.start_ms),
        "end": rfc(c.end_ms),
        "start_ms": c.start_ms,
        "end_ms": c.end_ms,
        "duration_ms": c.duration_ms(),
        "protocol": protocol_name(c.orig.proto),
        "direction": c.direction.map(Direction::as_str),
        "local": local,
        "remote": remote,
        "orig": tuple(&c.orig),
        "reply": tuple(&c.reply),
        "uid": c.uid,
        "user": user,
        "via": c.via,
        "program": c.program,
        "orig_packets": c.orig_counters.map(|x| x.packets),
        "orig_bytes": c.orig_counters.map(|x| x.bytes),
        "reply_packets": c.reply_counters.map(|x| x.packets),
        "reply_bytes": c.reply_counters.map(|x| x.bytes),
        "rx_bytes": t.rx_bytes,
        "tx_bytes": t.tx_bytes,
        "zone": c.zone,
    })
}

/// Print the finished connections.
pub fn run(cli: &Cli, args: &LogArgs) -> Result<()> {
    let store = common::open_for_reading(cli)?;
    if !store.has_connection_log()? {
        anyhow::bail!(
            "{} has no connection log yet: it is written by `netledger run` (any netledger \
             command that writes, such as `snapshot`, upgrades the database)",
            cli.db.display()
        );
    }
    let (since, until) = common::bounds(&args.since, args.until.as_deref(), args.utc)?;
    let uid = args
        .user
        .as_deref()
        .map(|u| common::resolve_user(&store, u))
        .transpose()?;
    let rows = store.connection_log(since * 1000, until * 1000)?;
    let mut names: HashMap<u32, String> = HashMap::new();
    let mut user = |uid: u32| {
        names
            .entry(uid)
            .or_insert_with(|| {
                store
                    .user_name(uid)
                    .ok()
                    .flatten()
                    .or_else(|| {
                        users::get_user_by_uid(uid).map(|u| u.name().to_string_lossy().into_owned())
                    })
                    .unwrap_or_else(|| uid.to_string())
            })
            .clone()
    };
    let mut out = std::io::stdout().lock();
    let selected = rows
        .iter()
        .filter(|c| matches(c, args.host.as_ref(), args.port, uid));
    if args.json {
        let v: Vec<Value> = selected.map(|c| to_json(c, c.uid.map(&mut user))).collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
    } else {
        let template = match &args.format {
            Some(t) => t.clone(),
            None => parse_template(DEFAULT_FORMAT).expect("the default template parses"),
        };
        for c in selected {
            writeln!(out, "{}", template.render(c, args.utc, &mut user))?;
        }
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Counters, Tuple};

    fn conn() -> LoggedConnection {
        let t = |s: &str, d: &str, sp, dp| Tuple {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
            proto: 6,
            sport: sp,
            dport: dp,
        };
        LoggedConnection {
            start_ms: 1_780_000_000_000,
            end_ms: 1_780_000_002_500,
            // DNAT: the client hit 203.0.113.7:80, served by 198.51.100.1:8080.
            orig: t("192.0.2.9", "203.0.113.7", 50000, 80),
            reply: t("198.51.100.1", "192.0.2.9", 8080, 50000),
            direction: Some(Direction::In),
            uid: Some(1001),
            program: Some("nginx".into()),
            orig_counters: Some(Counters {
                packets: 3,
                bytes: 300,
            }),
            reply_counters: Some(Counters {
                packets: 5,
                bytes: 5000,
            }),
            zone: 0,
            via: None,
        }
    }

    #[test]
    fn template_renders_every_escape() {
        let t = parse_template("%s|%e|%S|%D|%P|%d|%i|%r|%l|%L|%o|%R|%u|%U|%c|%t|%x|%T|%X|%%|%n")
            .unwrap();
        let line = t.render(&conn(), true, &mut |u| format!("user{u}"));
        assert_eq!(
            line,
            "2026-05-28 20:26:40+00:00|2026-05-28 20:26:42+00:00|2.500|2500|tcp|in|192.0.2.9|50000|\
             198.51.100.1|8080|192.0.2.9:50000>203.0.113.7:80|198.51.100.1:8080>192.0.2.9:50000|\
             user1001|1001|nginx|5000|300|5|3|%|\n"
        );
    }

    #[test]
    fn ipprotd_example_template_works_and_bad_escapes_are_refused() {
        let t = parse_template("Connected: %s, disconnected after %S secs at: %e").unwrap();
        let line = t.render(&conn(), true, &mut |u| u.to_string());
        assert!(
            line.starts_with("Connected: 2026-05-28 20:26:40+00:00, disconnected after 2.500 secs")
        );
        let e = parse_template("%q").unwrap_err();
        assert!(e.contains("unknown escape %q"), "{e}");
        assert!(parse_template("50%").is_err());
    }

    #[test]
    fn filters_match_either_tuple() {
        let c = conn();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(
            matches(&c, Some(&net("203.0.113.0/24")), None, None),
            "pre-NAT"
        );
        assert!(
            matches(&c, Some(&net("198.51.100.1/32")), None, None),
            "post-NAT"
        );
        assert!(!matches(&c, Some(&net("10.0.0.0/8")), None, None));
        assert!(matches(&c, None, Some(8080), Some(1001)));
        assert!(matches(&c, None, Some(80), None));
        assert!(!matches(&c, None, Some(443), None));
        assert!(!matches(&c, None, None, Some(0)));
    }
}
