//! Capture one real ctnetlink dump as raw bytes, for `fixtures/netlink/`.
//!
//! Usage: `ct_capture OUTPUT.bin` (as root, typically under `ip netns exec NS`).
//! Writes the netlink datagrams exactly as received (through `NLMSG_DONE`),
//! then prints on stderr how `parse_messages` decodes them, as a sanity check.

use std::process::ExitCode;

use netledger::sources::conntrack;

fn main() -> ExitCode {
    let Some(path) = std::env::args_os().nth(1) else {
        eprintln!("usage: ct_capture OUTPUT.bin");
        return ExitCode::from(2);
    };
    let raw = match conntrack::dump_raw() {
        Ok(raw) => raw,
        Err(e) => {
            eprintln!("ct_capture: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::write(&path, &raw) {
        eprintln!("ct_capture: writing {}: {e}", path.to_string_lossy());
        return ExitCode::FAILURE;
    }
    match conntrack::parse_messages(&raw) {
        Ok(d) => eprintln!(
            "ct_capture: {} bytes, {} flows, {} skipped messages, {} unknown attributes, \
             {} duplicates",
            raw.len(),
            d.entries.len(),
            d.skipped_messages,
            d.unknown_attributes,
            d.duplicates
        ),
        Err(e) => eprintln!("ct_capture: captured, but it does not parse: {e}"),
    }
    ExitCode::SUCCESS
}
