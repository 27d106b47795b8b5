//! `netledger log`: finished connections from the connection log, filtered like
//! ctrecorder's list mode (`--host IP/MASK`, `--port`) and printed through an
//! ipprotd-style template (`report::log`).

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use chrono::Utc;
use ipnet::IpNet;

use crate::cmd::common;
use crate::live::waiting;
use crate::model::FlowKey;
use crate::report;
use crate::settings::{Log, Settings};
use crate::store::connections::LoggedConnection;

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

/// Print the finished connections.
pub fn run(s: &Settings, args: &Log) -> Result<()> {
    let store = common::open_for_reading(&s.db)?;
    common::require_connection_log(&store)?;
    let (since, until) = (args.window.since, args.window.until);
    let uid = args
        .user
        .as_deref()
        .map(|u| common::resolve_user(&store, u))
        .transpose()?;
    let mut names = common::UserNames::new(Some(&store));
    // Each connection is written as it is read: a busy host logs over a million a day.
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut listed = 0u64;
    if args.json {
        let mut array = report::JsonArray::new(&mut out);
        store.connection_log_each(since * 1000, until * 1000, |c| {
            if matches(&c, args.host.as_ref(), args.port, uid) {
                listed += 1;
                let user = c.uid.map(|u| names.name(u));
                array.push(&report::log_json::log_json_record(&c, user))?;
            }
            anyhow::Ok(())
        })?;
        array.finish()?;
    } else {
        store.connection_log_each(since * 1000, until * 1000, |c| {
            if matches(&c, args.host.as_ref(), args.port, uid) {
                listed += 1;
                writeln!(
                    out,
                    "{}",
                    args.template.render(&c, args.utc, &mut |u| names.name(u))
                )?;
            }
            anyhow::Ok(())
        })?;
    }
    out.flush()?;
    let now_ms = Utc::now().timestamp_millis();
    if !s.quiet && until * 1000 >= now_ms {
        if let Some(note) = what_waits(&store, args, uid, listed == 0, now_ms) {
            eprintln!("netledger: {note}");
        }
    }
    Ok(())
}

/// What to say on stderr about connections that are over but not logged yet (see
/// [`waiting`]): how many match the filters and until when, from the live table; when it
/// cannot be read and nothing was listed, when connections get logged.
fn what_waits(
    store: &crate::store::Store,
    args: &Log,
    uid: Option<u32>,
    listed_nothing: bool,
    now_ms: i64,
) -> Option<String> {
    let dump = match waiting::live_table() {
        Ok(dump) => dump,
        Err(e) if listed_nothing => {
            let t = crate::sources::conntrack::Timeouts::read(std::path::Path::new("/proc"));
            return Some(format!(
                "nothing in the log for this period; a connection is logged when conntrack \
                 drops its entry: {} s after a TCP close (TIME_WAIT), {} s after a UDP \
                 exchange; to count the connections waiting for that, {e}",
                t.tcp_time_wait, t.udp
            ));
        }
        Err(_) => return None,
    };
    let waiting = waiting::waiting(&dump, now_ms);
    // Owners as the daemon saved them (its NEW events and passes).
    let owners = match uid {
        Some(_) => {
            let keys: Vec<FlowKey> = waiting.keys().copied().collect();
            store.load_states(&keys).unwrap_or_default()
        }
        None => HashMap::new(),
    };
    let matching = waiting.values().filter(|w| {
        let owner = owners
            .get(&w.flow.key())
            .and_then(|s| s.attribution.as_ref());
        let c = LoggedConnection {
            start_ms: now_ms,
            end_ms: now_ms,
            orig: w.flow.orig,
            reply: w.flow.reply,
            direction: owner.map(|a| a.direction),
            uid: owner.map(|a| a.uid),
            program: None,
            orig_counters: None,
            reply_counters: None,
            zone: w.flow.zone,
            via: owner.and_then(|a| a.via.through()),
            container: owner.and_then(|a| a.container.clone()),
            cgroup: owner.and_then(|a| a.cgroup.clone()),
        };
        matches(&c, args.host.as_ref(), args.port, uid)
    });
    report::log::waiting_note(matching, args.utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> LoggedConnection {
        crate::report::log::sample_connection()
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
