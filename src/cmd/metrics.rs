//! `netledger metrics`: the Prometheus exposition, on stdout or written atomically for
//! node_exporter's textfile collector.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use super::common::{open_for_reading, write_textfile};
use crate::config::TextfileAccess;
use crate::report::metrics::encode;
use crate::settings::Settings;
use crate::store::metrics::UnitSeries;

/// Print the metrics (with the units `units` asks for), or write them to `output`.
pub fn run(
    s: &Settings,
    output: Option<&Path>,
    access: TextfileAccess,
    units: &UnitSeries,
) -> Result<()> {
    let store = open_for_reading(&s.db)?;
    let data = store.metrics_with(units, chrono::Utc::now().timestamp())?;
    let text = encode(&data, env!("CARGO_PKG_VERSION"), None);
    match output {
        Some(path) => write_textfile(path, text.as_bytes(), access),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}
