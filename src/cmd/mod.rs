//! One file per subcommand; `dispatch` picks the one the command line names.

pub mod common;
pub mod config;
pub mod connections;
pub mod export;
pub mod log;
pub mod metrics;
pub mod report;
pub mod run;
pub mod setup;
pub mod snapshot;
pub mod summary;
pub mod top;

use anyhow::Result;

use crate::cli::{Cli, Command};

/// Run the subcommand named on the command line.
pub fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Snapshot(args) => snapshot::run(cli, args),
        Command::Setup(args) => setup::run(cli, args),
        Command::Top(args) => top::run(cli, args),
        Command::Report(args) => report::run(cli, args),
        Command::Export(args) => export::run(cli, args),
        Command::Config(args) => config::run(cli, args),
        Command::Run(args) => run::run(cli, args),
        Command::Connections(args) => connections::run(cli, args),
        Command::Log(args) => log::run(cli, args),
        Command::Summary(args) => summary::run(cli, args),
        Command::Metrics(args) => metrics::run(cli, args),
    }
}
