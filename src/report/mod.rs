//! Rendering only: tables and JSON for the reports. No queries here.

pub mod table;

use serde_json::{json, Map, Value};

use crate::account::Traffic;
use crate::store::query::{By, TopReport, TopRow};

/// Bytes in binary units (B, KiB, MiB, GiB, TiB) with one decimal above bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn traffic_fields(m: &mut Map<String, Value>, t: &Traffic) {
    m.insert("rx_bytes".into(), json!(t.rx_bytes));
    m.insert("tx_bytes".into(), json!(t.tx_bytes));
    m.insert("rx_packets".into(), json!(t.rx_packets));
    m.insert("tx_packets".into(), json!(t.tx_packets));
}

/// One `top` row as a JSON object: `uid` (null when unattributed), `user`, the `--by`
/// key, bytes and packets as integers.
pub fn top_row_json(row: &TopRow, by: By) -> Value {
    let mut m = Map::new();
    m.insert("uid".into(), json!(row.uid));
    m.insert("user".into(), json!(row.user));
    match by {
        By::User => {}
        By::Program => {
            m.insert("program".into(), json!(row.program));
        }
        By::Remote => {
            m.insert("remote".into(), json!(row.remote));
        }
        By::Port => {
            m.insert("protocol".into(), json!(row.protocol));
            m.insert("port".into(), json!(row.port));
        }
    }
    if row.uid.is_none() {
        m.insert("reason".into(), json!(row.reason));
    }
    traffic_fields(&mut m, &row.traffic);
    Value::Object(m)
}

/// The whole `top` report as a JSON array.
pub fn top_json(report: &TopReport, by: By) -> Value {
    Value::Array(report.rows.iter().map(|r| top_row_json(r, by)).collect())
}
