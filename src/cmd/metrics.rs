//! `netledger metrics`: the Prometheus exposition, on stdout or written atomically for
//! node_exporter's textfile collector.

use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::common::open_for_reading;
use crate::report::metrics::encode;
use crate::settings::Settings;

/// Print the metrics, or write them to `output`.
pub fn run(s: &Settings, output: Option<&Path>) -> Result<()> {
    let store = open_for_reading(&s.db)?;
    let text = encode(&store.metrics()?, env!("CARGO_PKG_VERSION"), None);
    match output {
        Some(path) => write_atomically(path, text.as_bytes()),
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

/// Replace `path` with `data` so that a reader sees the old file or the new one, never a
/// part: a temporary file beside it, synced, then renamed over it (and the directory
/// synced, so the rename survives a crash).
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("--output {}: not a file name", path.display()))?;
    // node_exporter reads only *.prom: the temporary name must not end so.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| {
        format!(
            "cannot write {} (check that the directory {} exists and is writable)",
            path.display(),
            dir.display()
        )
    })
}
