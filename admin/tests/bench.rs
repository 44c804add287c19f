//! The backfill benchmark (`scripts/bench-backfill`), not a test: 10,000 users (BENCH_USERS) from
//! the fake Clerk Backend API into a table of the local DynamoDB API, through the real binary.
//! Prints the figures; asserts only that every user arrived.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::time::Instant;

use support::{Admin, FakeClerk, users};

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a benchmark: run by scripts/bench-backfill"]
async fn backfill_of_ten_thousand_users() {
    let count: usize = std::env::var("BENCH_USERS").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let clerk = FakeClerk::start(users(count), vec![]).await;
    let table = support::mirrored_table().await;
    let admin = Admin::new(&clerk, &table);
    // Clerk's pacing is lifted: the fake has no rate limit, and the figure is the tool's and DynamoDB's.
    let args = ["--rate=100000"];

    let started = Instant::now();
    let dry = admin.run(&[&["backfill", "--dry-run"][..], &args].concat()).await;
    let fetch_seconds = started.elapsed().as_secs_f64();
    assert_eq!(dry.code, Some(0), "{dry}");

    let started = Instant::now();
    let run = admin.run(&[&["backfill"][..], &args].concat()).await;
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("users:", "applied"), count as u64, "{run}");

    // A line of its own each: the test harness's "test ... " has no newline yet.
    println!();
    println!(
        "fetch and parse only (--dry-run), {count} users: {fetch_seconds:.1} s, {:.0} users/s",
        count as f64 / fetch_seconds
    );
    println!("backfill, {count} users: {seconds:.1} s, {:.0} users/s", count as f64 / seconds);
    table.delete().await;
}
