//! Time the pure conntrack decoder on captured dumps: the unit-level half of the scale
//! benchmark (`bench/scale.py` times a whole pass).
//!
//! Usage: `cargo run --release --example ct_decode [ROUNDS]`. Decodes
//! `fixtures/netlink/many.bin` (608 flows, several datagrams) repeatedly, and a 20,000-flow
//! dump built from the first entry of `fixtures/netlink/basic.bin` with distinct ids (one
//! buffer, as a busy host's dump arrives), and prints the best and median time of ROUNDS
//! (default 30) rounds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use netledger::sources::conntrack;

fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fixtures", "netlink", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Native-endian u32 / u16 at `at`.
fn ne32(b: &[u8], at: usize) -> usize {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize
}
fn ne16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_ne_bytes([b[at], b[at + 1]]))
}

/// 20,000 copies of the first message of basic.bin, each with its own CTA_ID, then DONE.
fn twenty_thousand() -> Vec<u8> {
    const HDR: usize = 16 + 4; // nlmsghdr + nfgenmsg
    const CTA_ID: usize = 12;
    let raw = fixture("basic.bin");
    let template = &raw[..ne32(&raw, 0)];
    let mut pos = HDR;
    let mut id_at = None;
    while pos < template.len() {
        if ne16(template, pos + 2) & 0x3fff == CTA_ID {
            id_at = Some(pos + 4);
        }
        pos += ne16(template, pos).next_multiple_of(4);
    }
    let id_at = id_at.expect("CTA_ID in the first message of basic.bin");
    let mut big = Vec::with_capacity(20_001 * template.len());
    for i in 0..20_000u32 {
        let start = big.len();
        big.extend_from_slice(template);
        big[start + id_at..start + id_at + 4].copy_from_slice(&i.to_be_bytes());
    }
    // NLMSG_DONE, status 0.
    for word in [20u32, 3 | 2 << 16, 1, 0, 0] {
        big.extend_from_slice(&word.to_ne_bytes());
    }
    big
}

fn time(rounds: usize, mut f: impl FnMut() -> usize) -> (Duration, Duration, usize) {
    let mut times = Vec::with_capacity(rounds);
    let mut flows = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        flows = std::hint::black_box(f());
        times.push(t.elapsed());
    }
    times.sort();
    (times[0], times[times.len() / 2], flows)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("ROUNDS is a number"))
        .unwrap_or(30);
    let many = fixture("many.bin");
    let big = twenty_thousand();
    // many.bin 33 times is about 20,000 flows too (608 each).
    let (best, median, flows) = time(rounds, || {
        (0..33)
            .map(|_| conntrack::parse_messages(&many).unwrap().entries.len())
            .sum()
    });
    println!(
        "many.bin x33:        {flows} flows, best {:.2} ms, median {:.2} ms ({:.0} ns/flow)",
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        median.as_nanos() as f64 / flows as f64
    );
    let (best, median, flows) = time(rounds, || {
        conntrack::parse_messages(&big).unwrap().entries.len()
    });
    println!(
        "20,000-flow buffer:  {flows} flows, best {:.2} ms, median {:.2} ms ({:.0} ns/flow)",
        best.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        median.as_nanos() as f64 / flows as f64
    );
}
