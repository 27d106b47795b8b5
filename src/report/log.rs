//! `log`'s output: the `--format` template (ipprotd-style escapes: `%s` start, `%e` end,
//! `%S` seconds, `%i` remote address, …), a logged connection as a JSON record, and the
//! note on connections over but not logged yet.

use chrono::{Local, SecondsFormat, TimeZone, Utc};
use serde_json::json;

use super::names::protocol_name;
use super::{object, terminal_safe, Record};
use crate::account::Traffic;
use crate::attribute::Direction;
use crate::live::ends;
use crate::live::waiting::{Over, Waiting};
use crate::model::Tuple;
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
const ESCAPES: &str = "seSDPdirlLoRuUcCKGNJtxTX";

/// The default line: start, duration, protocol, direction, both tuples, owner, container,
/// bytes.
pub const DEFAULT_FORMAT: &str = "%s %Ss %P %d %o %R %u %c %C tx=%t rx=%x";

impl Default for Template {
    /// [`DEFAULT_FORMAT`].
    fn default() -> Template {
        parse_template(DEFAULT_FORMAT).expect("the default template parses")
    }
}

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

fn tuple_text(t: &Tuple) -> String {
    let sa = |ip, port| std::net::SocketAddr::new(ip, port).to_string();
    format!("{}>{}", sa(t.src, t.sport), sa(t.dst, t.dport))
}

fn split(addr: &str) -> (String, String) {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(sa) => (sa.ip().to_string(), sa.port().to_string()),
        Err(_) => (addr.to_string(), String::new()),
    }
}

/// An address as `%i`/`%l` print it: an IPv6 one in brackets when the template goes on
/// with `:` (as in `%i:%r`), so that the port stays apart from it (RFC 5952, section 6).
fn address(ip: String, next: Option<&Piece>) -> String {
    match next {
        Some(Piece::Text(t)) if t.starts_with(':') && ip.contains(':') => format!("[{ip}]"),
        _ => ip,
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
        let (local, remote) = ends(&c.orig, &c.reply, c.direction);
        let t = Traffic::of_counters(c.orig_counters, c.reply_counters, c.direction);
        let mut out = String::new();
        for (i, p) in self.0.iter().enumerate() {
            let next = self.0.get(i + 1);
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Field(f) => out.push_str(&terminal_safe(&match f {
                    's' => format_time(c.start_ms, utc),
                    'e' => format_time(c.end_ms, utc),
                    'S' => format!("{:.3}", c.duration_ms() as f64 / 1000.0),
                    'D' => c.duration_ms().to_string(),
                    'P' => protocol_name(c.orig.proto).into_owned(),
                    'd' => c.direction.map_or("-", |d| d.as_str()).to_string(),
                    'i' => address(split(&remote).0, next),
                    'r' => split(&remote).1,
                    'l' => address(split(&local).0, next),
                    'L' => split(&local).1,
                    'o' => tuple_text(&c.orig),
                    'R' => tuple_text(&c.reply),
                    'u' => c.uid.map_or("-".into(), &mut *user),
                    'U' => c.uid.map_or("-".into(), |u| u.to_string()),
                    'c' => c.program.clone().unwrap_or_else(|| "-".into()),
                    'C' => c
                        .container
                        .as_ref()
                        .map_or("-".into(), |k| k.name.to_string()),
                    'K' => c
                        .container
                        .as_ref()
                        .map_or("-".into(), |k| k.inner_uid.to_string()),
                    'G' => c.cgroup.as_ref().map_or("-".into(), |g| g.path.to_string()),
                    'N' => unit_of(c).unwrap_or("-").to_string(),
                    'J' => job_of(c).map_or("-".into(), |j| j.to_string()),
                    't' => t.tx_bytes.to_string(),
                    'x' => t.rx_bytes.to_string(),
                    'T' => t.tx_packets.to_string(),
                    'X' => t.rx_packets.to_string(),
                    _ => unreachable!("parse_template admits only known escapes"),
                })),
            }
        }
        out
    }
}

/// The systemd unit of a connection's cgroup ([`crate::cgroup::unit`]).
pub fn unit_of(c: &LoggedConnection) -> Option<&str> {
    c.cgroup.as_ref().and_then(|g| crate::cgroup::unit(&g.path))
}

/// The Slurm job of a connection's cgroup (as the resolver trusted it).
pub fn job_of(c: &LoggedConnection) -> Option<u64> {
    c.cgroup.as_ref().and_then(|g| g.job)
}

/// One logged connection as a record (`log --json`).
pub fn log_record(c: &LoggedConnection, user: Option<String>) -> Record {
    let (local, remote) = ends(&c.orig, &c.reply, c.direction);
    let t = Traffic::of_counters(c.orig_counters, c.reply_counters, c.direction);
    let rfc = |ms: i64| {
        Utc.timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    };
    let tuple = |t: &Tuple| json!({"src": t.src.to_string(), "dst": t.dst.to_string(), "sport": t.sport, "dport": t.dport});
    object(json!({
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
        "container": c.container.as_ref().map(|k| k.name.as_ref()),
        "container_uid": c.container.as_ref().map(|k| k.inner_uid),
        "cgroup": c.cgroup.as_ref().map(|g| g.path.as_ref()),
        "unit": unit_of(c),
        "job": job_of(c),
        "program": c.program,
        "orig_packets": c.orig_counters.map(|x| x.packets),
        "orig_bytes": c.orig_counters.map(|x| x.bytes),
        "reply_packets": c.reply_counters.map(|x| x.packets),
        "reply_bytes": c.reply_counters.map(|x| x.bytes),
        "rx_bytes": t.rx_bytes,
        "tx_bytes": t.tx_bytes,
        "zone": c.zone,
    }))
}

/// `HH:MM:SS` in local time (UTC with `utc`).
pub fn clock(ms: i64, utc: bool) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(t) if utc => t.format("%H:%M:%S").to_string(),
        Some(t) => t.with_timezone(&Local).format("%H:%M:%S").to_string(),
        None => ms.to_string(),
    }
}

/// The note `log` prints on stderr about connections over but not logged yet (pure):
/// counts per kind and the latest expiry; `None` when there are none.
pub fn waiting_note<'a>(
    waiting: impl IntoIterator<Item = &'a Waiting>,
    utc: bool,
) -> Option<String> {
    let (mut tcp, mut udp, mut last) = (0usize, 0usize, None::<i64>);
    for w in waiting {
        match w.over {
            Over::ClosedTcp => tcp += 1,
            Over::UdpExchange => udp += 1,
        }
        last = last.max(w.expires_ms);
    }
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let what = match (tcp, udp) {
        (0, 0) => return None,
        (t, 0) => plural(t, "closed TCP connection", "closed TCP connections"),
        (0, u) => plural(u, "UDP exchange", "UDP exchanges"),
        (t, u) => format!(
            "{} and {}",
            plural(t, "closed TCP connection", "closed TCP connections"),
            plural(u, "UDP exchange", "UDP exchanges")
        ),
    };
    let when = match last {
        Some(ms) if udp > 0 => format!(
            "by {} unless the UDP flows carry more packets; ",
            clock(ms, utc)
        ),
        Some(ms) => format!("by {}; ", clock(ms, utc)),
        None => String::new(),
    };
    Some(format!(
        "not in the log yet: {what}, logged when conntrack drops their entries ({when}\
         `netledger connections --all` shows them)"
    ))
}

/// A DNAT'd connection for tests of the log's rendering and filters.
#[cfg(test)]
pub(crate) fn sample_connection() -> LoggedConnection {
    use crate::testkit::{counters, tuple, TCP};
    LoggedConnection {
        cgroup: None,
        start_ms: 1_780_000_000_000,
        end_ms: 1_780_000_002_500,
        // DNAT: the client hit 203.0.113.7:80, served by 198.51.100.1:8080.
        orig: tuple(TCP, "192.0.2.9:50000", "203.0.113.7:80"),
        reply: tuple(TCP, "198.51.100.1:8080", "192.0.2.9:50000"),
        direction: Some(Direction::In),
        uid: Some(1001),
        program: Some("nginx".into()),
        orig_counters: Some(counters(3, 300)),
        reply_counters: Some(counters(5, 5000)),
        zone: 0,
        via: None,
        container: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{flow_of, mirror, tuple, TCP};

    fn conn() -> LoggedConnection {
        sample_connection()
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
    fn a_jobs_connection_shows_its_cgroup_unit_and_job_in_lines_and_json() {
        let mut c = conn();
        let t = parse_template("%G|%N|%J").unwrap();
        assert_eq!(t.render(&c, true, &mut |u| u.to_string()), "-|-|-");
        let json = log_record(&c, None);
        for key in ["cgroup", "unit", "job"] {
            assert_eq!(json[key], serde_json::Value::Null, "{key}");
        }
        c.cgroup = Some(crate::attribute::Cgroup {
            path: "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0".into(),
            job: Some(42),
        });
        assert_eq!(
            t.render(&c, true, &mut |u| u.to_string()),
            "/system.slice/slurmstepd.scope/job_42/step_0/user/task_0|slurmstepd.scope|42"
        );
        let json = log_record(&c, None);
        assert_eq!(json["unit"], "slurmstepd.scope");
        assert_eq!(json["job"], 42);
        // A look-alike job directory the resolver did not trust: a path, no job.
        c.cgroup = Some(crate::attribute::Cgroup {
            path: "/user.slice/user-1001.slice/session-3.scope".into(),
            job: None,
        });
        assert_eq!(
            t.render(&c, true, &mut |u| u.to_string()),
            "/user.slice/user-1001.slice/session-3.scope|session-3.scope|-"
        );
    }

    #[test]
    fn a_container_connection_shows_its_container_in_lines_and_json() {
        let mut c = conn();
        let host = Template::default().render(&c, true, &mut |u| format!("user{u}"));
        assert!(host.contains(" user1001 nginx - tx="), "{host}");
        let json = log_record(&c, None);
        assert_eq!(
            (&json["container"], &json["container_uid"]),
            (&serde_json::Value::Null, &serde_json::Value::Null)
        );
        c.container = Some(crate::attribute::Container {
            name: "docker-3f2a".into(),
            inner_uid: 1000,
        });
        let line = Template::default().render(&c, true, &mut |u| format!("user{u}"));
        assert!(line.contains(" user1001 nginx docker-3f2a tx="), "{line}");
        let t = parse_template("%C/%K").unwrap();
        assert_eq!(
            t.render(&c, true, &mut |u| u.to_string()),
            "docker-3f2a/1000"
        );
        let json = log_record(&c, None);
        assert_eq!(json["container"], "docker-3f2a");
        assert_eq!(json["container_uid"], 1000);
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

    /// Regression (issue 18): `%i:%r` printed `2001:db8::2:443`.
    #[test]
    fn ipv6_address_before_a_colon_is_bracketed() {
        let mut c = conn();
        c.direction = Some(Direction::Out);
        c.orig = tuple(TCP, "[2001:db8::1]:40000", "[2001:db8::2]:443");
        c.reply = mirror(&c.orig);
        let render = |f: &str| {
            parse_template(f)
                .unwrap()
                .render(&c, true, &mut |u| u.to_string())
        };
        assert_eq!(
            render("%i:%r>%l:%L"),
            "[2001:db8::2]:443>[2001:db8::1]:40000"
        );
        assert_eq!(
            render("%i port %r, %l"),
            "2001:db8::2 port 443, 2001:db8::1"
        );
        assert_eq!(render("%o"), "[2001:db8::1]:40000>[2001:db8::2]:443");
        // IPv4 never gets brackets.
        let line = parse_template("%i:%r")
            .unwrap()
            .render(&conn(), true, &mut |u| u.to_string());
        assert_eq!(line, "192.0.2.9:50000");
    }

    #[test]
    fn waiting_note_counts_per_kind_and_says_the_latest_expiry() {
        let c = conn();
        let w = |over, expires_ms| Waiting {
            flow: crate::model::Flow {
                id: 0,
                orig_counters: None,
                reply_counters: None,
                ..flow_of(c.orig, c.reply)
            },
            over,
            expires_ms,
        };
        let waiting = [
            w(Over::ClosedTcp, Some(1_101_000)),
            w(Over::ClosedTcp, Some(1_006_000)),
            w(Over::UdpExchange, Some(1_030_000)),
        ];
        let text = waiting_note(&waiting, true).unwrap();
        assert!(
            text.starts_with("not in the log yet: 2 closed TCP connections and 1 UDP exchange,"),
            "{text}"
        );
        assert!(text.contains("(by 00:18:21 unless"), "{text}");
        assert_eq!(waiting_note(std::iter::empty(), true), None);
    }
}
