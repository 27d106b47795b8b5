//! Thin entry point: parse arguments, start logging, dispatch, map the outcome to an exit code.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use netledger::cli::Cli;

fn main() -> ExitCode {
    // Usage errors exit 2 (clap's convention), but 3 (UNKNOWN) for the monitoring plugin.
    let matches = match Cli::command().try_get_matches() {
        Ok(m) => m,
        Err(e) if e.use_stderr() && names_check() => {
            let text = e.render().to_string();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            println!(
                "QUOTA UNKNOWN - {}",
                first.trim().trim_start_matches("error: ")
            );
            return ExitCode::from(3);
        }
        Err(e) => e.exit(),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let check = matches!(cli.command, netledger::cli::Command::Check(_));
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = match std::env::var("NETLEDGER_LOG") {
        Err(_) => EnvFilter::new(level),
        Ok(v) => match EnvFilter::try_new(&v) {
            Ok(f) => f,
            Err(e) => {
                eprintln!(
                    "netledger: NETLEDGER_LOG={v:?}: {e}; use a level (error, warn, info, \
                     debug, trace) or unset it"
                );
                return ExitCode::from(2);
            }
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    let settings = match netledger::settings::resolve(cli) {
        Ok(s) => s,
        Err(e) if check => {
            let (code, text) = netledger::cmd::check::unknown(&e);
            println!("{text}");
            return ExitCode::from(code);
        }
        Err(e) => {
            eprintln!("netledger: {}", render(&e));
            return ExitCode::from(if is_usage(&e) { 2 } else { 1 });
        }
    };
    if let netledger::settings::Command::Check(c) = &settings.command {
        return ExitCode::from(netledger::cmd::check::main(&settings, c));
    }
    match netledger::cmd::dispatch(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netledger: {}", render(&e));
            ExitCode::from(if is_usage(&e) { 2 } else { 1 })
        }
    }
}

/// Whether the command line names the `check` subcommand (its usage errors are UNKNOWN).
fn names_check() -> bool {
    std::env::args().skip(1).any(|a| a == "check")
}

/// The error and its causes on one line, each cause once: an error whose message already
/// shows its source (`cannot read names file X: No such file or directory (os error 2)`)
/// is not followed by that source again.
fn render(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = one_line(&cause.to_string());
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A usage error (exit code 2): the input was wrong, not the system.
fn is_usage(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<netledger::config::ConfigError>()
            .is_some_and(|c| c.is_usage())
            || c.is::<netledger::timespec::BadTime>()
    })
}

/// `netledger top | head` closes our stdout early: not an error.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<serde_json::Error>()
                .and_then(|j| j.io_error_kind())
                .is_some_and(|k| k == std::io::ErrorKind::BrokenPipe)
    })
}
