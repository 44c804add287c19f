//! The core promise, on a real DynamoDB API: for any set of events, delivered in any order, any
//! number of times, one by one or many at once, the table equals the one in-order delivery gives.
//!
//! Histories are generated the way Clerk produces them (see `common/history.rs`): per object,
//! versions (`updated_at`) increase; users and organizations are created, updated, maybe
//! deleted; sessions may start pending, become active, and end in one or more terminal statuses;
//! memberships are created, updated, deleted, and followed by new ones when a user joins again.
//! Objects interleave freely in time. A deletion's envelope `timestamp` comes from another clock
//! than `updated_at`, so it may be lower than the object's last update: "in order" means the
//! order things happened, not versions.
//! `PROPTEST_CASES` sets the number of cases (default 48; `scripts/test` runs more).

mod common;

use std::sync::Arc;

use common::history::*;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

#[test]
fn shuffled_duplicated_delivery_equals_in_order_delivery() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    let deliveries = std::cell::Cell::new(0usize);
    runner
        .run(&history_and_delivery(), |(history, delivered)| {
            deliveries.set(deliveries.get() + history.len() + delivered.len());
            runtime.block_on(async {
                let in_order = TestTable::create().await;
                deliver_all(&in_order, &history).await;
                let shuffled = TestTable::create().await;
                deliver_all(&shuffled, &delivered).await;
                let (expected, got) = (in_order.items().await, shuffled.items().await);
                in_order.delete().await;
                shuffled.delete().await;
                prop_assert_eq!(got, expected);
                Ok(())
            })
        })
        .unwrap();
    println!("{} cases, {} deliveries", cases(), deliveries.get());
}

/// Many histories at once, delivered with 32 requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_delivery_equals_in_order_delivery() {
    let events = many_histories(12);
    let in_order = TestTable::create().await;
    deliver_all(&in_order, &events).await;

    let mut delivered: Vec<Event> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    delivered.reverse();
    let concurrent = TestTable::create().await;
    let statuses = deliver_concurrently(Arc::new(concurrent.app()), delivered, 32).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(concurrent.items().await, in_order.items().await);
}

/// A deletion racing many session and membership writes for the same user leaves none behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_racing_session_writes_leaves_no_session() {
    let table = TestTable::create().await;
    let app = Arc::new(table.app());
    let user = "user_race";
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..40 {
        let session_app = app.clone();
        tasks.spawn(async move {
            let body = if s % 4 == 0 {
                let (id, organization) = (format!("orgmem_race{s}"), format!("org_race{s}"));
                clerk::membership("organizationMembership.created", &id, &organization, user, "org:member", 900, 900)
            } else {
                clerk::session("session.created", &format!("sess_race{s}"), user, "active", 1000 + s, None)
            };
            session_app.handle(delivery(&body, &format!("msg_race{s}"))).await.status().as_u16()
        });
        if s == 20 {
            let app = app.clone();
            tasks.spawn(async move {
                app.handle(delivery(&clerk::user_deleted(user, 5000), "msg_del")).await.status().as_u16()
            });
        }
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let items = table.items().await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items.values().next().unwrap()["deleted"], true);
}
