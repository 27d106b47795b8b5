//! The fuzz targets' kept corpora (`fuzz/corpus/TARGET/`: seeds from fixtures/ and the
//! inputs AFL++ found new paths with) replayed through the same target functions as
//! ordinary tests, so that CI checks every parser of outside input on them without a
//! fuzzer. The fuzzing itself: fuzz/README.md.

#[path = "../../fuzz/src/targets.rs"]
mod targets;

use std::path::Path;
use std::time::{Duration, Instant};

/// Every input of `target`'s corpus; panics naming the first one that panics or is slow.
fn replay(name: &str, target: targets::Target) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(name);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(|| target(&data));
        assert!(r.is_ok(), "fuzz target {name} panicked on {}", f.display());
        // A bound on hangs and quadratic blow-ups (a debug build; each takes milliseconds).
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "fuzz target {name} took {:?} on {}",
            t0.elapsed(),
            f.display()
        );
    }
    files.len()
}

#[test]
fn every_fuzz_target_runs_clean_on_its_kept_corpus() {
    for &(name, target) in targets::TARGETS {
        let n = replay(name, target);
        assert!(n > 0, "fuzz/corpus/{name} is empty");
    }
}
