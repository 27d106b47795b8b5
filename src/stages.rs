//! Wall time per stage of a pass ([`Stages`]), logged to show where a pass goes.

use std::time::{Duration, Instant};

/// Wall time per stage of a pass, logged at `info` (`-v`) to show where a pass goes.
/// A stage run on the main thread while another thread read the kernel is shown as
/// `name=…ms(beside)`: its time is not on the pass's critical path.
#[derive(Debug, Default)]
pub struct Stages {
    last: Option<Instant>,
    laps: Vec<(&'static str, Duration, bool)>,
}

impl Stages {
    /// Start timing the first stage.
    pub fn start() -> Stages {
        Stages {
            last: Some(Instant::now()),
            laps: Vec::new(),
        }
    }

    /// Close the stage that just ended.
    pub fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        if let Some(last) = self.last.replace(now) {
            self.laps.push((name, now - last, false));
        }
    }

    /// Take the laps of `other` (run on another thread meanwhile) and stage `name`, which
    /// took `took` beside them; the next stage starts where `other` ended.
    pub fn beside(&mut self, other: Stages, name: &'static str, took: Duration) {
        self.laps.extend(other.laps);
        self.laps.push((name, took, true));
        self.last = other.last.or(self.last);
    }
}

impl std::fmt::Display for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (name, d, beside)) in self.laps.iter().enumerate() {
            let sep = if i == 0 { "" } else { " " };
            let beside = if *beside { "(beside)" } else { "" };
            write!(f, "{sep}{name}={:.1}ms{beside}", d.as_secs_f64() * 1000.0)?;
        }
        Ok(())
    }
}
