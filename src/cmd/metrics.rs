//! `netledger metrics`: the Prometheus exposition, on stdout or written atomically for
//! node_exporter's textfile collector.

use std::io::Write;
use std::path::Path;

use anyhow::Result;

use super::common::{open_for_reading, write_textfile};
use crate::config::TextfileAccess;
use crate::report::metrics::encode;
use crate::settings::Settings;

/// Print the metrics, or write them to `output`.
pub fn run(s: &Settings, output: Option<&Path>, access: TextfileAccess) -> Result<()> {
    let store = open_for_reading(&s.db)?;
    let text = encode(&store.metrics()?, env!("CARGO_PKG_VERSION"), None);
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
