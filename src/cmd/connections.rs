//! `netledger connections`: the connections open right now (ipclog's `ipc`), from a live
//! conntrack dump joined with the socket tables, like one pass but stored nowhere.

use std::collections::HashMap;
use std::io::Write;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::account::{delta, Traffic};
use crate::attribute::{Attributed, Direction, LocalNets, Verdict};
use crate::cli::{Cli, ConnectionsArgs};
use crate::cmd::common;
use crate::model::{Counters, Flow};
use crate::pass::observe;
use crate::report::human_bytes;
use crate::report::names::protocol_name;
use crate::sources::conntrack::{TCP_CLOSE, TCP_TIME_WAIT};
use crate::store::{OpenOptions, Store, StoreError};

/// One open connection, from this host's point of view.
pub struct OpenConnection<'a> {
    /// The flow.
    pub flow: &'a Flow,
    /// Its TCP state (`enum tcp_conntrack`), for TCP.
    pub tcp_state: Option<u8>,
    /// Its verdict.
    pub at: &'a Attributed,
    /// Local end, `address:port` (post-DNAT for incoming connections).
    pub local: String,
    /// Remote end.
    pub remote: String,
    /// Counters so far, as rx/tx.
    pub traffic: Traffic,
}

/// Local and remote ends of a flow, as `address:port`, from its direction: outgoing flows
/// read the original tuple; incoming ones take the local end from the reply tuple, which
/// holds the address the connection was translated to (DNAT).
pub fn ends(flow: &Flow, direction: Option<Direction>) -> (String, String) {
    let sa = |ip, port| std::net::SocketAddr::new(ip, port).to_string();
    let (o, r) = (&flow.orig, &flow.reply);
    match direction {
        Some(Direction::In) => (sa(r.src, r.sport), sa(o.src, o.sport)),
        Some(Direction::Out) | None => (sa(o.src, o.sport), sa(o.dst, o.dport)),
    }
}

/// The flow's counters so far, as rx/tx (zero when it has none).
pub fn traffic(orig: Option<Counters>, reply: Option<Counters>, dir: Option<Direction>) -> Traffic {
    let d = delta(None, orig.unwrap_or_default(), reply.unwrap_or_default());
    Traffic::from_delta(&d, dir)
}

fn user_name(uid: u32, cache: &mut HashMap<u32, String>) -> String {
    cache
        .entry(uid)
        .or_insert_with(|| {
            users::get_user_by_uid(uid)
                .map(|u| u.name().to_string_lossy().into_owned())
                .unwrap_or_else(|| uid.to_string())
        })
        .clone()
}

/// Conntrack's name of a TCP state (`tcp_conntrack_names` in nf_conntrack_proto_tcp.c).
pub fn tcp_state_name(state: Option<u8>) -> &'static str {
    match state {
        None => "-",
        Some(0) => "NONE",
        Some(1) => "SYN_SENT",
        Some(2) => "SYN_RECV",
        Some(3) => "ESTABLISHED",
        Some(4) => "FIN_WAIT",
        Some(5) => "CLOSE_WAIT",
        Some(6) => "LAST_ACK",
        Some(7) => "TIME_WAIT",
        Some(8) => "CLOSE",
        Some(9) => "SYN_SENT2",
        Some(_) => "?",
    }
}

fn charged(v: &Verdict) -> (&'static str, Option<&'static str>) {
    match v {
        Verdict::User(_) => ("user", None),
        Verdict::Excluded(_) => ("excluded", None),
        Verdict::Unattributed(r) => ("unattributed", Some(r.as_str())),
    }
}

/// List the open connections.
pub fn run(cli: &Cli, args: &ConnectionsArgs) -> Result<()> {
    // Owners remembered by passes and the daemon: a flow whose socket is gone (TIME_WAIT)
    // keeps the owner it had. No database yet is fine: live sockets still name owners.
    let (prev, store) = match Store::open(
        &cli.db,
        &OpenOptions {
            read_only: true,
            create: false,
            ..OpenOptions::default()
        },
    ) {
        Ok(store) => (store.load_state()?, Some(store)),
        Err(StoreError::Missing { .. }) => (HashMap::new(), None),
        Err(e) => return Err(e.into()),
    };
    let uid = match (&args.user, &store) {
        (Some(u), Some(store)) => Some(common::resolve_user(store, u)?),
        (Some(u), None) => Some(match u.parse::<u32>() {
            Ok(uid) => uid,
            Err(_) => users::get_user_by_name(u)
                .map(|u| u.uid())
                .with_context(|| {
                    format!("unknown user {u:?}: give a user name or a numeric uid")
                })?,
        }),
        (None, _) => None,
    };
    let nets = match &cli.file.local_networks {
        Some(n) => LocalNets::new(n.iter().copied()),
        None => LocalNets::defaults(),
    };
    let (delegating, _) = cli.file.delegation(&[], None).map_err(anyhow::Error::msg)?;
    let obs = observe(&args.proc_root, &prev, &nets, &delegating)
        .context("reading the open connections")?;
    let closed = |st: &Option<u8>| matches!(*st, Some(TCP_TIME_WAIT) | Some(TCP_CLOSE));
    let mut rows: Vec<OpenConnection> = obs
        .dump
        .flows
        .iter()
        .zip(&obs.attributed)
        .zip(&obs.dump.tcp_states)
        .filter(|((_, at), _)| uid.is_none() || at.attribution().map(|a| a.uid) == uid)
        .filter(|(_, st)| args.all || !closed(st))
        .map(|((flow, at), st)| {
            let (local, remote) = ends(flow, at.direction);
            OpenConnection {
                flow,
                tcp_state: *st,
                at,
                local,
                remote,
                traffic: traffic(flow.orig_counters, flow.reply_counters, at.direction),
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let owner = |r: &OpenConnection| r.at.attribution().map(|a| a.uid);
        owner(a)
            .cmp(&owner(b))
            .then(b.traffic.bytes().cmp(&a.traffic.bytes()))
    });
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64;
    let mut names = HashMap::new();
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<Value> = rows
            .iter()
            .map(|r| {
                let owner = r.at.attribution();
                let (kind, reason) = charged(&r.at.verdict);
                let tuple = |t: &crate::model::Tuple| {
                    json!({"src": t.src.to_string(), "dst": t.dst.to_string(),
                           "sport": t.sport, "dport": t.dport})
                };
                json!({
                    "uid": owner.map(|a| a.uid),
                    "user": owner.map(|a| user_name(a.uid, &mut names)),
                    "program": owner.and_then(|a| a.program.clone()),
                    "direction": r.at.direction.map(|d| d.as_str()),
                    "protocol": protocol_name(r.flow.orig.proto),
                    "state": r.tcp_state.map(|s| tcp_state_name(Some(s))),
                    "local": r.local,
                    "remote": r.remote,
                    "orig": tuple(&r.flow.orig),
                    "reply": tuple(&r.flow.reply),
                    "charged": kind,
                    "reason": reason,
                    "age_seconds": r.flow.start_ns.map(|s| now_ns.saturating_sub(s) / 1_000_000_000),
                    "rx_bytes": r.traffic.rx_bytes,
                    "tx_bytes": r.traffic.tx_bytes,
                    "rx_packets": r.traffic.rx_packets,
                    "tx_packets": r.traffic.tx_packets,
                })
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &v)?;
        writeln!(out)?;
        out.flush()?;
        return Ok(());
    }
    let bytes = |n: u64| {
        if args.bytes {
            n.to_string()
        } else {
            human_bytes(n)
        }
    };
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            let owner = r.at.attribution();
            let user = match owner {
                Some(a) => user_name(a.uid, &mut names),
                None => "-".into(),
            };
            [
                user,
                owner
                    .and_then(|a| a.program.clone())
                    .unwrap_or_else(|| "-".into()),
                r.at.direction.map_or("-", |d| d.as_str()).into(),
                protocol_name(r.flow.orig.proto),
                tcp_state_name(r.tcp_state).into(),
                r.local.clone(),
                r.remote.clone(),
                r.flow.start_ns.map_or("-".into(), |s| {
                    format!("{}s", now_ns.saturating_sub(s) / 1_000_000_000)
                }),
                bytes(r.traffic.rx_bytes),
                bytes(r.traffic.tx_bytes),
            ]
        })
        .collect();
    let header = [
        "USER", "PROGRAM", "DIR", "PROTO", "STATE", "LOCAL", "REMOTE", "AGE", "RX", "TX",
    ];
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &table {
        for (w, c) in width.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            // Byte columns align right, the others left.
            if i >= 8 {
                s.push_str(&format!("{c:>w$}"));
            } else {
                s.push_str(&format!("{c:<w$}"));
            }
            if i + 1 < cells.len() {
                s.push_str("  ");
            }
        }
        s.trim_end().to_string()
    };
    writeln!(out, "{}", line(&header))?;
    for row in &table {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        writeln!(out, "{}", line(&cells))?;
    }
    out.flush()?;
    Ok(())
}
