//! The metrics in the function's log lines: each delivery's line, as the suite captures it
//! (`CLERK_SYNC_TEST_LOG_DIR`, JSON as the deployed function writes it), is a CloudWatch Embedded
//! Metric Format document with the names, units and dimensions `clerk_sync::metrics` documents,
//! and the write units DynamoDB reported for the delivery's writes.
//!
//! Write units are checked on dynalite, which charges writes by DynamoDB's size rule (1 unit per
//! KB of the larger of the old and new item, and reads 1 unit per 4 KB when strongly consistent);
//! moto reports fixed figures for PutItem and none for transactions, so on moto only their presence
//! and the other metrics are checked.

mod common;

use std::path::PathBuf;

use clerk_sync::{item, logging};
use common::*;
use serde_json::Value;

/// This test binary's captured log lines.
fn log_file() -> PathBuf {
    let dir = std::env::var("CLERK_SYNC_TEST_LOG_DIR")
        .expect("CLERK_SYNC_TEST_LOG_DIR is not set: run through scripts/test, which captures the function's logs");
    assert!(
        std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")),
        "AWS_LAMBDA_LOG_FORMAT=JSON, as the template sets it, is what turns the metrics on"
    );
    PathBuf::from(dir).join("metrics.jsonl")
}

/// The delivery line of message `svix_id`, parsed.
fn line_of(svix_id: &str) -> Value {
    let text = std::fs::read_to_string(log_file()).expect("the captured log lines");
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["svix_id"] == svix_id)
        .collect();
    assert_eq!(lines.len(), 1, "one log line for {svix_id}");
    lines.into_iter().next().unwrap()
}

fn namespace() -> String {
    std::env::var("METRICS_NAMESPACE").ok().filter(|n| !n.is_empty()).unwrap_or(logging::DEFAULT_NAMESPACE.into())
}

/// Checks the EMF structure of `line` and returns `(metric name, unit, dimension sets)` of each
/// metric it declares.
fn declared(line: &Value) -> Vec<(String, String, Vec<Vec<String>>)> {
    let aws = &line["_aws"];
    let timestamp = aws["Timestamp"].as_u64().expect("_aws.Timestamp in milliseconds");
    assert!(timestamp.abs_diff(now() as u64 * 1000) < 600_000, "a timestamp of now");
    let mut metrics = Vec::new();
    for directive in aws["CloudWatchMetrics"].as_array().expect("_aws.CloudWatchMetrics") {
        assert_eq!(directive["Namespace"], namespace().as_str());
        let sets: Vec<Vec<String>> = directive["Dimensions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|set| set.as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_owned()).collect())
            .collect();
        for set in &sets {
            assert!(!set.is_empty() && set.len() <= 30, "EMF allows 1 to 30 dimensions in a set");
            for dimension in set {
                assert!(line[dimension].is_string(), "dimension {dimension} has a string value at the top level");
            }
        }
        for metric in directive["Metrics"].as_array().unwrap() {
            let name = metric["Name"].as_str().unwrap().to_owned();
            assert!(line[&name].is_number(), "metric {name} has a number at the top level");
            metrics.push((name, metric["Unit"].as_str().unwrap().to_owned(), sets.clone()));
        }
    }
    // The line is still the delivery's log line, less the document's text.
    assert_eq!(line["fields"]["message"], "delivery");
    assert!(line["fields"].get("emf").is_none(), "the document is lifted out of `fields`");
    metrics
}

fn unit_of(metrics: &[(String, String, Vec<Vec<String>>)], name: &str) -> Option<String> {
    metrics.iter().find(|(n, _, _)| n == name).map(|(_, unit, _)| unit.clone())
}

fn sets_of(metrics: &[(String, String, Vec<Vec<String>>)], name: &str) -> Vec<Vec<String>> {
    metrics.iter().find(|(n, _, _)| n == name).map(|(_, _, sets)| sets.clone()).unwrap_or_default()
}

fn strings(sets: &[&[&str]]) -> Vec<Vec<String>> {
    sets.iter().map(|set| set.iter().map(|s| (*s).to_owned()).collect()).collect()
}

/// Write units of a PutItem as DynamoDB charges them: the larger of the old and new item, 1 per KB.
fn put_units(old: Option<&clerk_sync::store::Item>, new: &clerk_sync::store::Item) -> f64 {
    let kb = |item: &clerk_sync::store::Item| item::size(item).div_ceil(1024);
    old.map_or(kb(new), |old| kb(old).max(kb(new))) as f64
}

#[tokio::test]
async fn a_user_delivery_reports_the_write_units_its_item_costs() {
    let table = TestTable::on_dynalite().await;
    let app = table.app();
    let id = format!("user_metrics_{}", now());

    let created = format!("msg_metrics_created_{id}");
    let (status, _) = answer(&app.handle(delivery(&clerk::user("user.created", &id, 1_000, "Ada"), &created)).await);
    assert_eq!(status, 200);
    let first = table.raw_item(&format!("USER#{id}"), "USER").await.expect("the user item");
    let mirror = table.raw_item("META", "INSTANCE").await.expect("the table's record of its Clerk instance");

    let line = line_of(&created);
    let metrics = declared(&line);
    assert_eq!(line["Route"], "webhook");
    assert_eq!(line["Outcome"], "applied");
    assert_eq!(line["EventType"], "user.created");
    assert_eq!(line["Requests"], 1);
    assert_eq!(unit_of(&metrics, "Requests").as_deref(), Some("Count"));
    assert_eq!(sets_of(&metrics, "Requests"), strings(&[&["Route"], &["Route", "Outcome"], &["Route", "EventType"]]));
    assert_eq!(unit_of(&metrics, "StoreLatency").as_deref(), Some("Milliseconds"));
    assert!(line["StoreLatency"].as_f64().unwrap() > 0.0);
    assert_eq!(unit_of(&metrics, "WriteUnits").as_deref(), Some("Count"));
    assert_eq!(sets_of(&metrics, "WriteUnits"), strings(&[&["Route"], &["Route", "EventType"]]));
    assert_eq!(sets_of(&metrics, "StoreLatency"), strings(&[&["Route"]]));
    // dynalite reports no index units; a write reads nothing: both are left out when zero.
    assert!(unit_of(&metrics, "IndexWriteUnits").is_none() && unit_of(&metrics, "ReadUnits").is_none());
    // The first delivery of a cold start also records the table's Clerk instance (one small item).
    let expected = put_units(None, &mirror) + put_units(None, &first);
    assert!(put_units(None, &first) >= 2.0, "a user item with `data` is above 1 KB");
    assert_eq!(line["WriteUnits"].as_f64(), Some(expected), "{line}");

    let updated = format!("msg_metrics_updated_{id}");
    let (status, _) =
        answer(&app.handle(delivery(&clerk::user("user.updated", &id, 2_000, "Augusta"), &updated)).await);
    assert_eq!(status, 200);
    let second = table.raw_item(&format!("USER#{id}"), "USER").await.unwrap();
    let line = line_of(&updated);
    declared(&line);
    assert_eq!(line["EventType"], "user.updated");
    assert_eq!(line["WriteUnits"].as_f64(), Some(put_units(Some(&first), &second)), "{line}");
    assert!(line.get("Reason").is_none(), "only refusals have a reason");
    assert!(line.get("InvalidWrites").is_none());
}

#[tokio::test]
async fn refusals_are_counted_by_reason_class() {
    let table = TestTable::create().await;
    let app = table.app();
    let suffix = now();

    // A signature made with another secret.
    let bad_signature = format!("msg_metrics_bad_signature_{suffix}");
    let mut event = fixture("user-created");
    sign_with(&mut event, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &bad_signature, now());
    assert_eq!(app.handle(request(&event)).await.status(), 401);
    // A timestamp outside the tolerance.
    let stale = format!("msg_metrics_stale_{suffix}");
    let mut event = fixture("user-created");
    sign_with(&mut event, &local_secret(), &stale, now() - 3600);
    assert_eq!(app.handle(request(&event)).await.status(), 401);
    // Verified, but not an event.
    let unreadable = format!("msg_metrics_parse_{suffix}");
    assert_eq!(app.handle(delivery("{\"type\": 7}", &unreadable)).await.status(), 400);

    for (id, reason, status) in
        [(&bad_signature, "signature", 401), (&stale, "timestamp", 401), (&unreadable, "parse", 400)]
    {
        let line = line_of(id);
        let metrics = declared(&line);
        assert_eq!(line["fields"]["status"], status);
        assert_eq!(line["Outcome"], "refused");
        assert_eq!(line["Reason"], reason);
        assert_eq!(line["EventType"], "none", "nothing of an unverified or unreadable body becomes a dimension");
        assert_eq!(
            sets_of(&metrics, "Requests"),
            strings(&[&["Route"], &["Route", "Outcome"], &["Route", "EventType"], &["Route", "Reason"]])
        );
        for name in ["StoreLatency", "WriteUnits"] {
            assert!(unit_of(&metrics, name).is_none(), "{name}: DynamoDB was not reached");
        }
    }
    table.delete().await;
}

/// A session is one PutItem and one strongly consistent Query of its user item (rule 2): on
/// dynalite, which charges both by DynamoDB's size rules, the line carries the session item's write
/// units and the read unit of the user item (under 4 KB), and no ConditionCheck's units.
#[tokio::test]
async fn a_session_delivery_reports_its_put_and_its_read_of_the_user() {
    let table = TestTable::on_dynalite().await;
    let app = table.app();
    let suffix = now();
    let user = format!("user_metrics_read_{suffix}");
    let created = format!("msg_metrics_read_user_{suffix}");
    assert_eq!(app.handle(delivery(&clerk::user("user.created", &user, 1_000, "Ada"), &created)).await.status(), 200);
    let session = format!("msg_metrics_read_session_{suffix}");
    let body = clerk::session("session.created", &format!("sess_r{suffix}"), &user, "active", 1_000, None);
    assert_eq!(app.handle(delivery(&body, &session)).await.status(), 200);
    let user_item = table.raw_item(&format!("USER#{user}"), "USER").await.expect("the user item");
    let session_item =
        table.raw_item(&format!("USER#{user}"), &format!("SESSION#sess_r{suffix}")).await.expect("the session item");
    assert!(item::size(&user_item) > 1024 && item::size(&user_item) <= 4096);

    let line = line_of(&session);
    let metrics = declared(&line);
    assert_eq!((line["Outcome"].as_str(), line["EventType"].as_str()), (Some("applied"), Some("session.created")));
    assert_eq!(line["WriteUnits"].as_f64(), Some(put_units(None, &session_item)), "{line}");
    assert_eq!(line["ReadUnits"].as_f64(), Some(1.0), "one strongly consistent read of the user item: {line}");
    assert_eq!(unit_of(&metrics, "ReadUnits").as_deref(), Some("Count"));
}

#[tokio::test]
async fn sessions_duplicates_and_deletions_carry_their_metrics() {
    let table = TestTable::create().await;
    let app = table.app();
    let suffix = now();
    let user = format!("user_metrics_session_{suffix}");
    let send = |body: String, id: String| {
        let app = &app;
        async move { app.handle(delivery(&body, &id)).await.status().as_u16() }
    };

    let created = format!("msg_metrics_user_{suffix}");
    assert_eq!(send(clerk::user("user.created", &user, 1_000, "Ada"), created.clone()).await, 200);
    let session = format!("msg_metrics_session_{suffix}");
    let body = clerk::session("session.created", &format!("sess_{suffix}"), &user, "active", 1_000, None);
    assert_eq!(send(body.clone(), session.clone()).await, 200);
    let again = format!("msg_metrics_session_again_{suffix}");
    assert_eq!(send(body, again.clone()).await, 200);
    let deleted = format!("msg_metrics_deleted_{suffix}");
    assert_eq!(send(clerk::user_deleted(&user, 3_000), deleted.clone()).await, 200);

    let line = line_of(&session);
    declared(&line);
    assert_eq!((line["Outcome"].as_str(), line["EventType"].as_str()), (Some("applied"), Some("session.created")));
    assert!(line["StoreLatency"].is_number());

    let line = line_of(&again);
    declared(&line);
    assert_eq!(line["Outcome"], "duplicate");

    // A deletion writes the tombstone, queries what hangs off it and deletes it in batches: all
    // its writes and reads are counted (moto reports capacity for PutItem, Query and BatchWriteItem).
    let line = line_of(&deleted);
    let metrics = declared(&line);
    assert_eq!(line["EventType"], "user.deleted");
    assert!(line["WriteUnits"].as_f64().unwrap() >= 2.0, "the tombstone and one batch: {line}");
    assert!(line["ReadUnits"].as_f64().unwrap() > 0.0, "the query: {line}");
    assert_eq!(unit_of(&metrics, "ReadUnits").as_deref(), Some("Count"));
    assert_eq!(sets_of(&metrics, "ReadUnits"), strings(&[&["Route"]]));
    table.delete().await;
}
