//! Migrate a database to the per-user totals (schema 6) and fill them in from its detail,
//! timing each step: what an upgrade costs on a large database.
//!
//! `cargo run --release --example backfill_totals -- DB` (work on a copy: it writes).

use std::time::Instant;

use netledger::store::{OpenOptions, Store};

fn main() {
    let Some(db) = std::env::args().nth(1) else {
        eprintln!("usage: backfill_totals DB");
        std::process::exit(2);
    };
    let t0 = Instant::now();
    let mut store = Store::open(db.as_ref(), &OpenOptions::default()).unwrap();
    println!("open and migrate: {:.2?}", t0.elapsed());
    let (mut days, mut longest) = (0, std::time::Duration::ZERO);
    let t1 = Instant::now();
    loop {
        let t = Instant::now();
        if store.backfill_totals(1).unwrap() == 0 {
            break;
        }
        days += 1;
        longest = longest.max(t.elapsed());
    }
    println!(
        "backfill: {days} days in {:.2?}, longest step (one day, one transaction) {longest:.2?}",
        t1.elapsed()
    );
}
