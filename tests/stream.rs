//! The cleanup function as its event source mapping feeds it: the records of the table's stream
//! (as the local DynamoDB API records them for the function's own writes) through the template's
//! filter patterns (as Lambda's event filtering applies them).
//!
//! The filter is what decides whether the cleanup function ever sees a tombstone or a write under
//! one; a typo in it (a wrong path, a wrong type, a missing prefix) would not fail a deployment,
//! and deletions would silently stop finishing. These tests hold the template's patterns to the
//! function's own reading of a record: the filter passes exactly the records it acts on.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use clerk_sync::cleanup::{self, Event, EventRecord};
use clerk_sync::handler::App;
use common::stream::{filters, passes, records};
use common::*;
use serde_json::{Value, json};

const V: i64 = 1_795_000_000_000;

async fn ok(app: &App, body: &str) {
    // Boxed: the test's future holds a dozen deliveries, too large for a test thread's stack
    // unoptimized.
    let (status, answer) = answer(&Box::pin(app.handle(delivery(body, "msg_stream"))).await);
    assert_eq!(status, 200, "{answer}");
}

fn describe(record: &Value) -> String {
    let keys = &record["dynamodb"]["Keys"];
    format!("{} {}/{}", record["eventName"], keys["pk"]["S"], keys["sk"]["S"])
}

/// A story of users, sessions, organizations and memberships, two deletions, a deletion of a user
/// never seen, and then writes under the tombstones that their writers never checked (an attempt
/// landing late, a `/sync` call cut before its read), and `/sync` windows. Every record of the stream passes the filter
/// exactly when the cleanup function acts on it, and the records that pass, handed to the function
/// in order, leave nothing under a tombstone.
#[tokio::test]
async fn the_template_filter_passes_exactly_what_the_cleanup_function_acts_on_and_that_is_enough() {
    let table = TestTable::with_stream().await;
    let app = table.app();
    for user in ["user_gone", "user_kept"] {
        ok(&app, &clerk::user("user.created", user, V, "Ada")).await;
        ok(&app, &clerk::user("user.updated", user, V + 10, "Ada Lovelace")).await;
        ok(&app, &clerk::session("session.created", &format!("sess_{user}"), user, "active", V, None)).await;
    }
    ok(&app, &clerk::session("session.ended", "sess_user_gone", "user_gone", "ended", V + 20, None)).await;
    for organization in ["org_gone", "org_kept"] {
        ok(&app, &clerk::organization("organization.created", organization, V, "Acme")).await;
        for user in ["user_gone", "user_kept"] {
            let id = format!("orgmem_{organization}_{user}");
            ok(&app, &clerk::membership("organizationMembership.created", &id, organization, user, "org:member", V, V))
                .await;
        }
    }
    ok(&app, &clerk::user_deleted("user_gone", V + 100)).await;
    ok(&app, &clerk::user_deleted("user_gone", V + 100)).await; // a redelivery: nothing written
    ok(&app, &clerk::organization_deleted("org_gone", V + 100)).await;
    ok(&app, &clerk::user_deleted("user_never_seen", V + 100)).await;
    // Writes no writer checked: a session of the deleted user, a membership of the kept user in
    // the deleted organization (both items), written as the function writes them.
    let writes = [
        json!({ "pk": "USER#user_gone", "sk": "SESSION#sess_late", "id": "sess_late", "user_id": "user_gone", "status": "active", "version": V + 200 }),
        json!({ "pk": "USER#user_kept", "sk": "ORG#org_gone", "id": "orgmem_late", "version": V + 200 }),
        json!({ "pk": "ORG#org_gone", "sk": "MEMBER#user_kept", "id": "orgmem_late", "version": V + 200 }),
    ];
    for write in &writes {
        table.put(write).await;
    }

    // A `/sync` call's window item, of a kept user and of the deleted one.
    for user in ["user_kept", "user_gone"] {
        table.store().claim_sync_window(user, V, Duration::from_secs(5)).await.unwrap();
    }

    let patterns = filters();
    let all = records(&table).await;
    let mut passed = Vec::new();
    let mut kinds = BTreeSet::new();
    for record in &all {
        let typed: EventRecord = serde_json::from_value(record.clone())
            .unwrap_or_else(|e| panic!("Lambda's record type reads the stream's record: {e}: {record}"));
        let acts = if cleanup::tombstone(&typed).is_some() {
            kinds.insert("tombstone");
            true
        } else if cleanup::child(&typed).is_some() {
            kinds.insert("session or membership written");
            true
        } else {
            kinds.insert(if typed.event_name == "REMOVE" { "removal" } else { "other write" });
            false
        };
        assert_eq!(passes(&patterns, record), acts, "the filter and the function disagree on {}", describe(record));
        if acts {
            passed.push(typed);
        }
    }
    assert_eq!(kinds.len(), 4, "the story makes every kind of record: {kinds:?}");
    let tombstones = passed.iter().filter(|r| cleanup::tombstone(r).is_some()).count();
    assert_eq!(tombstones, 3, "one record per tombstone written: user_gone, org_gone, user_never_seen");

    let mut event = Event::default();
    event.records = passed;
    let response = Box::pin(cleanup::handle(&table.store(), event, Duration::from_secs(60))).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let left: BTreeSet<(String, String)> =
        table.items().await.into_keys().filter(|(pk, _)| !pk.starts_with("SYNC#")).collect();
    let key = |pk: &str, sk: &str| (pk.to_owned(), sk.to_owned());
    let expected: BTreeSet<_> = [
        key("USER#user_gone", "USER"),
        key("USER#user_never_seen", "USER"),
        key("ORG#org_gone", "ORG"),
        key("USER#user_kept", "USER"),
        key("USER#user_kept", "SESSION#sess_user_kept"),
        key("ORG#org_kept", "ORG"),
        key("ORG#org_kept", "MEMBER#user_kept"),
        key("USER#user_kept", "ORG#org_kept"),
    ]
    .into();
    assert_eq!(left, expected, "nothing under a tombstone, everything else kept");
}

/// The evaluator the test above relies on, on the cases it must get right.
#[test]
fn patterns_match_as_lambda_documents_them() {
    let pattern =
        json!({ "eventName": ["INSERT"], "dynamodb": { "Keys": { "sk": { "S": [{ "prefix": "SESSION#" }] } } } });
    let event = |name: &str, sk: &str| json!({ "eventName": name, "dynamodb": { "Keys": { "sk": { "S": sk } } } });
    let one = std::slice::from_ref(&pattern);
    assert!(passes(one, &event("INSERT", "SESSION#s")));
    assert!(!passes(one, &event("REMOVE", "SESSION#s")));
    assert!(!passes(one, &event("INSERT", "ORG#o")));
    assert!(!passes(one, &json!({ "eventName": "INSERT" })), "a field the pattern names is missing");
    assert!(passes(&[json!({ "b": { "BOOL": [true] } })], &json!({ "b": { "BOOL": true } })));
    assert!(!passes(&[json!({ "b": { "BOOL": [true] } })], &json!({ "b": { "S": "true" } })));
    assert!(passes(&[json!({ "x": ["a"] }), json!({ "y": ["b"] })], &json!({ "y": "b" })), "any of the patterns");
}
