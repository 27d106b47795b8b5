//! netledger: per-user network traffic accounting for Linux.
//!
//! Data flows one way: `sources → attribute → account → store → report`.
//! `cmd` wires the stages together per subcommand; `cli` only defines the command line.

pub mod account;
pub mod attribute;
pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod containers;
pub mod daemon;
pub mod live;
pub mod model;
pub mod owner_mark;
pub mod pass;
pub mod prereq;
pub mod quota;
pub mod report;
pub mod settings;
pub mod sources;
pub mod store;
pub mod timespec;
pub mod units;
