//! `connections`' output: the open connections ([`crate::live::open_connections`]) as
//! records (`--json`) or a table. Pure: the clock (`now_ns`) and the user names come from
//! the caller.

use serde_json::json;

use super::names::protocol_name;
use super::table::{amount, Table};
use super::{object, Record};
use crate::attribute::Verdict;
use crate::live::OpenConnection;
use crate::model::{CtTcpState, Tuple};

/// Conntrack's name of a TCP state (`tcp_conntrack_names` in nf_conntrack_proto_tcp.c).
pub fn tcp_state_name(state: Option<CtTcpState>) -> &'static str {
    state.map_or("-", CtTcpState::name)
}

fn charged(v: &Verdict) -> (&'static str, Option<&'static str>) {
    match v {
        Verdict::User(_) => ("user", None),
        Verdict::Excluded(_) => ("excluded", None),
        Verdict::Unattributed(r) => ("unattributed", Some(r.as_str())),
    }
}

/// Whole seconds from `start_ns` to `now_ns`.
fn age_seconds(start_ns: u64, now_ns: u64) -> u64 {
    now_ns.saturating_sub(start_ns) / 1_000_000_000
}

/// One open connection as a record (`connections --json`); `user` names a uid.
pub fn connection_record(
    r: &OpenConnection,
    now_ns: u64,
    user: &mut dyn FnMut(u32) -> String,
) -> Record {
    let owner = r.at.attribution();
    let container = owner.and_then(|a| a.container.as_ref());
    let (kind, reason) = charged(&r.at.verdict);
    let tuple = |t: &Tuple| {
        json!({"src": t.src.to_string(), "dst": t.dst.to_string(),
               "sport": t.sport, "dport": t.dport})
    };
    object(json!({
        "uid": owner.map(|a| a.uid),
        "user": owner.map(|a| user(a.uid)),
        "program": owner.and_then(|a| a.program.clone()),
        "container": container.map(|k| k.name.as_ref()),
        "container_uid": container.map(|k| k.inner_uid),
        "direction": r.at.direction.map(|d| d.as_str()),
        "protocol": protocol_name(r.flow.orig.proto),
        "state": r.tcp_state.map(|s| tcp_state_name(Some(s))),
        "local": r.local,
        "remote": r.remote,
        "orig": tuple(&r.flow.orig),
        "reply": tuple(&r.flow.reply),
        "charged": kind,
        "reason": reason,
        "age_seconds": r.flow.start_ns.map(|s| age_seconds(s, now_ns)),
        "rx_bytes": r.traffic.rx_bytes,
        "tx_bytes": r.traffic.tx_bytes,
        "rx_packets": r.traffic.rx_packets,
        "tx_packets": r.traffic.tx_packets,
    }))
}

/// The open connections as a table: owner, program, container, direction, protocol,
/// state, both ends, age and the bytes so far (exact with `exact`).
pub fn connections_table(
    rows: &[OpenConnection],
    now_ns: u64,
    exact: bool,
    user: &mut dyn FnMut(u32) -> String,
) -> String {
    let header = [
        "USER",
        "PROGRAM",
        "CONTAINER",
        "DIR",
        "PROTO",
        "STATE",
        "LOCAL",
        "REMOTE",
        "AGE",
        "RX",
        "TX",
    ];
    // Byte columns align right, the others left.
    let mut t = Table::new(header.map(String::from).to_vec(), 9);
    for r in rows {
        let owner = r.at.attribution();
        t.push(vec![
            owner.map_or_else(|| "-".into(), |a| user(a.uid)),
            owner
                .and_then(|a| a.program.clone())
                .unwrap_or_else(|| "-".into()),
            owner
                .and_then(|a| a.container.as_ref())
                .map_or_else(|| "-".into(), |k| k.name.to_string()),
            r.at.direction.map_or("-", |d| d.as_str()).into(),
            protocol_name(r.flow.orig.proto).into_owned(),
            tcp_state_name(r.tcp_state).into(),
            r.local.clone(),
            r.remote.clone(),
            r.flow
                .start_ns
                .map_or("-".into(), |s| format!("{}s", age_seconds(s, now_ns))),
            amount(r.traffic.rx_bytes, exact),
            amount(r.traffic.tx_bytes, exact),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{fixture, open_connections};

    fn table(all: bool, exact: bool) -> String {
        let observed = fixture::observation();
        let rows = open_connections(&observed, None, all);
        connections_table(&rows, fixture::NOW_NS, exact, &mut fixture::user_name)
    }

    #[test]
    fn connections_tables() {
        insta::assert_snapshot!("connections_table", table(false, false));
        insta::assert_snapshot!("connections_table_all_bytes", table(true, true));
        insta::assert_snapshot!(
            "connections_table_empty",
            connections_table(&[], fixture::NOW_NS, false, &mut fixture::user_name)
        );
    }

    #[test]
    fn a_container_connection_names_its_container() {
        let mut observed = fixture::observation();
        let i = observed
            .iter()
            .position(|o| matches!(o.at.verdict, Verdict::User(_)))
            .unwrap();
        if let Verdict::User(a) = &mut observed[i].at.verdict {
            a.container = Some(crate::attribute::Container {
                name: "docker-3f2a".into(),
                inner_uid: 1000,
            });
        }
        let rows = open_connections(&observed, None, true);
        let records: Vec<Record> = rows
            .iter()
            .map(|r| connection_record(r, fixture::NOW_NS, &mut fixture::user_name))
            .collect();
        let named: Vec<_> = records
            .iter()
            .filter(|r| !r["container"].is_null())
            .map(|r| (r["container"].clone(), r["container_uid"].clone()))
            .collect();
        assert_eq!(named, [(json!("docker-3f2a"), json!(1000))]);
        let t = connections_table(&rows, fixture::NOW_NS, true, &mut fixture::user_name);
        let header: Vec<&str> = t.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header[..4], ["USER", "PROGRAM", "CONTAINER", "DIR"], "{t}");
        assert_eq!(t.matches("docker-3f2a").count(), 1, "{t}");
    }

    #[test]
    fn connections_json() {
        let observed = fixture::observation();
        let rows = open_connections(&observed, None, true);
        let records: Vec<Record> = rows
            .iter()
            .map(|r| connection_record(r, fixture::NOW_NS, &mut fixture::user_name))
            .collect();
        let mut out = Vec::new();
        super::super::write_json(&mut out, &records).unwrap();
        insta::assert_snapshot!("connections_json", String::from_utf8(out).unwrap());
    }
}
