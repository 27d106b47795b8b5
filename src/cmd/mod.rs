//! One file per subcommand; `dispatch` picks the one the command line names.

pub mod check;
pub mod common;
pub mod config;
pub mod connections;
pub mod export;
pub mod job;
pub mod live;
pub mod log;
pub mod metrics;
pub mod quota;
pub mod report;
pub mod run;
pub mod setup;
pub mod snapshot;
pub mod summary;
pub mod top;

use anyhow::Result;

use crate::settings::{Command, Settings};

/// Run the subcommand the settings name.
pub fn dispatch(s: &Settings) -> Result<()> {
    match &s.command {
        Command::Snapshot(a) => snapshot::run(s, a),
        Command::Setup { undo, owner_mark } => setup::run(*undo, *owner_mark),
        Command::Top(t) => top::run(s, t),
        Command::Job(j) => job::run(s, j),
        Command::Report(r) => report::run(s, r),
        Command::Export(e) => export::run(s, e),
        Command::Config(c) => config::run(s, c),
        Command::Run(r) => run::run(s, r),
        Command::Connections(c) => connections::run(s, c),
        Command::Log(l) => log::run(s, l),
        Command::Summary(x) => summary::run(s, x),
        Command::Metrics {
            output,
            access,
            units,
        } => metrics::run(s, output.as_deref(), *access, units),
        Command::Live(l) => live::run(l),
        Command::Quota(q) => quota::run(s, q),
        Command::Check(c) => match check::main(s, c) {
            0 => Ok(()),
            code => anyhow::bail!("check: exit {code}"),
        },
    }
}
