//! One AFL++ harness for every target: `fuzz TARGET` (the name in `targets::TARGETS`)
//! under `cargo afl fuzz`, see fuzz/README.md.
//!
//! Without AFL (a plain run) it reads one input from stdin, so a crash found can be
//! replayed under a debugger: `fuzz TARGET < fuzz/out/TARGET/default/crashes/id:…`.

use netledger_fuzz::targets::TARGETS;

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(&(_, target)) = TARGETS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: fuzz TARGET (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
