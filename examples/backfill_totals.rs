//! Migrate a database to the per-user totals (schema 6) and the sums per key of the raw
//! tier (`usage_keys`), and fill both in from its detail, timing each step: what an
//! upgrade costs on a large database.
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
    // As the passes after the upgrade do, up to the newest raw bucket (the simulated year
    // lies in the future).
    let newest: i64 = store
        .conn()
        .query_row(
            "SELECT coalesce(max(ts), 0) + 300 FROM usage_raw",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let (mut steps, mut rows, mut longest) = (0, 0, std::time::Duration::ZERO);
    let t2 = Instant::now();
    loop {
        let t = Instant::now();
        let n = store
            .catch_up_keys(newest, netledger::store::keys::CATCH_UP_ROWS)
            .unwrap();
        if n == 0 {
            break;
        }
        steps += 1;
        rows += n;
        longest = longest.max(t.elapsed());
    }
    println!(
        "sums per key: {rows} raw rows in {steps} calls, {:.2?}, longest call {longest:.2?}",
        t2.elapsed()
    );
}
