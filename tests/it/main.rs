//! The integration tests, one binary: each file here was a test binary of its own, and each
//! linked the whole crate again. Test names carry the module, e.g.
//! `cargo test --test it daemon::` runs what `--test daemon` ran.
//!
//! Tests of different files now run at once, as threads of one process, where before the
//! binaries ran one after another. What that asks of a test:
//! - no process-wide state: no `std::env::set_var`, no cwd, umask, signal handler or rlimit
//!   changed in this process (tests/config.rs sets environment variables, which every child
//!   process of every other test would inherit: it is a binary of its own for that);
//! - names from `common::unique` (namespaces, users), files in a tempdir, ports and nft
//!   tables inside a namespace the test made: nothing fixed on the host;
//! - bursts of thousands of connections a second hold `common::one_burst_at_a_time()`:
//!   two at once would measure this machine, not netledger.

mod common;

mod bad_input;
mod cgroup_reports;
mod cgroups;
mod churn;
mod connection_log;
mod connection_reports;
mod containers;
mod contrib_docs;
mod daemon;
mod docs;
mod evasion;
mod evasion_output;
mod firewall;
mod fuzz_corpus;
mod host_traffic;
mod layers;
mod live;
mod metrics;
mod namespace_accounting;
mod pickup;
mod quota;
mod reports;
mod service;
mod setup_undo;
mod short_names;
mod soak;
mod ssh;
mod writers;
