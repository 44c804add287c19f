//! Faults between the function and DynamoDB, injected by a proxy in front of the local DynamoDB
//! API: whatever fails, the function answers 5xx (never 2xx) within its deadline, retries what is
//! worth retrying, and once DynamoDB is back, delivering the failed events again gives the table
//! in-order delivery gives.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clerk_sync::handler::App;
use common::clerk;
use common::fault_proxy::{Fault, FaultProxy};
use common::history::*;
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::json;

const USER: &str = "user_faulty";
/// What a caller may wait for an answer, at most: the handler's 8 s store deadline, well inside
/// the function's 10 s timeout and Svix's 15 s.
const ANSWER_BOUND: Duration = Duration::from_secs(9);

struct Setup {
    table: TestTable,
    proxy: FaultProxy,
    app: Arc<App>,
}

/// A table, a proxy in front of the DynamoDB API, and the function talking through the proxy.
async fn setup() -> Setup {
    let table = TestTable::create().await;
    let proxy = proxy().await;
    let app = Arc::new(table.app_via(&proxy.endpoint()));
    Setup { table, proxy, app }
}

impl Setup {
    /// Delivers `body` without its `instance_id`: these tests count and fault the requests of the
    /// write itself, not the one-time record of the Clerk instance (tests/request_count.rs).
    async fn deliver(&self, body: &str) -> (u16, serde_json::Value, Duration) {
        let body = body.replace(r#""instance_id":"ins_123","#, "");
        let started = Instant::now();
        let response = self.app.handle(delivery(&body, "msg_fault")).await;
        let (status, answer) = answer(&response);
        (status, answer, started.elapsed())
    }
}

fn user_created() -> String {
    clerk::user("user.created", USER, 1_795_000_000_000, "Ada")
}

#[tokio::test]
async fn dynamodb_stalled_is_answered_503_within_the_bound() {
    let s = setup().await;
    s.proxy.always(Fault::Stall);
    let (status, _, took) = s.deliver(&user_created()).await;
    assert_eq!(status, 503);
    assert!(took < ANSWER_BOUND, "took {took:?}");
    assert!(s.table.items().await.is_empty());
}

#[tokio::test]
async fn requests_that_never_reach_dynamodb_are_answered_503() {
    let s = setup().await;
    s.proxy.always(Fault::Drop);
    let (status, body, took) = s.deliver(&user_created()).await;
    assert_eq!((status, body), (503, json!({"error": "the event could not be stored; retry later"})));
    assert!(took < ANSWER_BOUND, "took {took:?}");
    assert!(s.proxy.requests() >= 3, "the SDK retried: {} requests", s.proxy.requests());
    assert_eq!(s.proxy.forwarded(), 0);
    assert!(s.table.items().await.is_empty());
}

#[tokio::test]
async fn server_errors_are_retried_and_then_succeed() {
    let s = setup().await;
    s.proxy.then(&[Fault::ServerError, Fault::ServerError]);
    let (status, body, _) = s.deliver(&user_created()).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(s.proxy.requests(), 3);
    assert_eq!(s.table.items().await.len(), 1);
}

#[tokio::test]
async fn persistent_server_errors_end_in_503_and_write_nothing() {
    let s = setup().await;
    s.proxy.always(Fault::ServerError);
    let (status, _, took) = s.deliver(&user_created()).await;
    assert_eq!(status, 503);
    assert!(took < ANSWER_BOUND, "took {took:?}");
    assert!(s.table.items().await.is_empty());
}

#[tokio::test]
async fn throttling_is_retried_and_then_succeeds() {
    let s = setup().await;
    s.proxy.then(&[Fault::ProvisionedThroughputExceeded, Fault::Throttling]);
    let (status, body, _) = s.deliver(&user_created()).await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(s.proxy.requests(), 3);
}

#[tokio::test]
async fn persistent_throttling_ends_in_503() {
    for fault in [Fault::ProvisionedThroughputExceeded, Fault::Throttling] {
        let s = setup().await;
        s.proxy.always(fault);
        let (status, _, took) = s.deliver(&user_created()).await;
        assert_eq!(status, 503, "{fault:?}");
        assert!(took < ANSWER_BOUND, "{fault:?} took {took:?}");
        assert!(s.table.items().await.is_empty());
    }
}

/// A PutItem on a user item that a session's transaction is checking at that moment fails with
/// TransactionConflictException: contention, not an error.
#[tokio::test]
async fn a_transaction_conflict_on_a_put_is_retried_and_then_succeeds() {
    let s = setup().await;
    s.proxy.then(&[Fault::TransactionConflict, Fault::TransactionConflict]);
    let (status, answer, _) = s.deliver(&user_created()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")));
    assert_eq!(s.proxy.forwarded(), 1);
}

#[tokio::test]
async fn a_persistent_transaction_conflict_ends_in_503() {
    let s = setup().await;
    s.proxy.always(Fault::TransactionConflict);
    let (status, _, took) = s.deliver(&user_created()).await;
    assert_eq!(status, 503, "contention is worth retrying later, not a 500");
    assert!(took < ANSWER_BOUND, "took {took:?}");
    assert!(s.table.items().await.is_empty());
}

/// If DynamoDB refuses an item as invalid all the same (a limit the function does not know of),
/// the event's version and every scalar field land, without `data` and `public_metadata`, the
/// delivery is answered 200, and a later change (a ban) is applied as usual.
#[tokio::test]
async fn an_item_dynamodb_refuses_lands_as_its_skeleton_and_later_changes_apply() {
    let s = setup().await;
    s.proxy.then(&[Fault::Validation]);
    let (status, answer, _) = s.deliver(&user_created()).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
    let item = s.table.item(&format!("USER#{USER}"), "USER").await.unwrap();
    assert_eq!(item["version"], 1_795_000_000_000_i64);
    assert_eq!(item["first_name"], "Ada");
    assert_eq!(item["omitted"], json!(["data", "public_metadata"]));
    assert_eq!((item.get("data"), item.get("public_metadata")), (None, None));

    let (status, answer, _) = s.deliver(&user_created()).await;
    assert_eq!(answer["outcome"], "duplicate", "the same event again: {answer}");
    assert_eq!(status, 200);

    let ban =
        clerk::user("user.updated", USER, 1_795_000_000_001, "Ada").replace(r#""banned":false"#, r#""banned":true"#);
    let (status, answer, _) = s.deliver(&ban).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")));
    let item = s.table.item(&format!("USER#{USER}"), "USER").await.unwrap();
    assert_eq!((item["banned"].as_bool(), data_of(&item)["banned"].as_bool()), (Some(true), Some(true)));
    assert_eq!(item.get("omitted"), None);

    // A ban DynamoDB refuses with the rest of the item still lands: `banned` is lifted.
    s.proxy.then(&[Fault::Validation]);
    let locked = ban.replace(r#""locked":false"#, r#""locked":true"#).replace("1795000000001", "1795000000002");
    let (status, answer, _) = s.deliver(&locked).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
    let item = s.table.item(&format!("USER#{USER}"), "USER").await.unwrap();
    assert_eq!((item["banned"].as_bool(), item["locked"].as_bool(), item.get("data")), (Some(true), Some(true), None));
}

/// The same inside a transaction: a session refused as invalid lands as its skeleton.
#[tokio::test]
async fn a_session_dynamodb_refuses_lands_as_its_skeleton() {
    let s = setup().await;
    let session = clerk::session("session.created", "sess_faulty", USER, "active", 1_795_000_000_000, None);
    s.proxy.then(&[Fault::Validation]);
    let (status, answer, _) = s.deliver(&session).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("applied")), "{answer}");
    let item = s.table.item(&format!("USER#{USER}"), "SESSION#sess_faulty").await.unwrap();
    assert_eq!((item["status"].as_str(), item.get("data")), (Some("active"), None));
    assert_eq!(item["omitted"], json!(["data"]));
}

#[tokio::test]
async fn write_applied_whose_answer_was_lost_is_safely_delivered_again() {
    let story = [
        user_created(),
        clerk::session("session.created", "sess_faulty", USER, "active", 1_795_000_000_100, None),
        clerk::user_deleted(USER, 1_795_000_000_200),
    ];
    let s = setup().await;
    let reference = TestTable::create().await;
    for body in &story {
        // The write is applied, its answer lost; the SDK's retry and Svix's redelivery both meet
        // the write already there.
        s.proxy.then(&[Fault::DropResponse]);
        let (first, answer, _) = s.deliver(body).await;
        assert!(first == 200 || first >= 500, "{first} {answer}");
        let (again, answer, _) = s.deliver(body).await;
        assert_eq!(again, 200, "{answer}");
        reference.app().handle(delivery(body, "msg_reference")).await;
    }
    assert_eq!(s.table.items().await, reference.items().await);
}

/// Histories delivered while DynamoDB fails at random; then DynamoDB recovers and Svix delivers
/// the failed events again, in another order. The table equals in-order delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redelivery_after_recovery_equals_in_order_delivery() {
    let events = many_histories(6);
    let faults = proptest::collection::vec(
        prop_oneof![
            4 => Just(Fault::Pass),
            1 => Just(Fault::Drop),
            1 => Just(Fault::ServerError),
            1 => Just(Fault::Throttling),
            1 => Just(Fault::DropResponse),
        ],
        events.len() * 4,
    )
    .new_tree(&mut TestRunner::deterministic())
    .unwrap()
    .current();

    let s = setup().await;
    s.proxy.then(&faults);
    let mut failed = Vec::new();
    for event in &events {
        let response = s.app.handle(delivery(&event.body(), &event.svix_id())).await;
        match response.status().as_u16() {
            200 => {}
            status if status >= 500 => failed.push(event.clone()),
            status => panic!("{status} for {event:?}"),
        }
    }
    assert!(!failed.is_empty(), "the faults should have failed some deliveries");
    s.proxy.always(Fault::Pass);
    failed.reverse();
    let statuses = deliver_concurrently(s.app.clone(), failed.clone(), 8).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");

    let in_order = TestTable::create().await;
    deliver_all(&in_order, &events).await;
    assert_eq!(s.table.items().await, in_order.items().await);
    println!("{} events, {} failed under faults and were delivered again", events.len(), failed.len());
}
