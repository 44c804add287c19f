//! The HTTP contract, from real API Gateway events (HTTP API v2 and REST API v1, plain and
//! base64 bodies): what each kind of request is answered, and that refused ones write nothing.

mod common;

use common::*;
use lambda_http::http::header;
use serde_json::{Value, json};

/// A second secret, standing for a sender that is not Clerk (or a rotated-away key).
const OTHER_SECRET: &str = "whsec_BR8NEvFoDlkthmWEYw1nsvXFja6W9O1VqFNFSCkyako=";
const GENERIC_401: &str = "webhook verification failed";

async fn send(table: &TestTable, event: &Value) -> (u16, Value) {
    answer(&table.app().handle(request(event)).await)
}

async fn assert_refused(table: &TestTable, event: &Value, status: u16) -> Value {
    let (got, body) = send(table, event).await;
    assert_eq!(got, status, "{body}");
    assert!(table.items().await.is_empty(), "a refused request wrote to the table");
    body
}

#[tokio::test]
async fn every_api_gateway_format_is_accepted() {
    for name in ["user-created", "user-created-base64", "rest-user-created", "rest-user-created-base64"] {
        let table = TestTable::create().await;
        let mut event = fixture(name);
        sign(&mut event, "msg_formats");
        let (status, body) = send(&table, &event).await;
        assert_eq!((status, body["outcome"].as_str()), (200, Some("applied")), "{name}: {body}");
        assert_eq!(table.items().await.len(), 1, "{name}");
    }
}

#[tokio::test]
async fn every_sample_event_gets_its_documented_answer() {
    let table = TestTable::create().await;
    let story = [
        ("user-created", 200, "applied"),
        ("user-updated", 200, "applied"),
        ("session-pending", 200, "applied"),
        ("session-created", 200, "applied"),
        ("session-ended", 200, "applied"),
        ("session-removed", 200, "applied"),
        ("session-revoked", 200, "applied"),
        ("organization-created", 200, "applied"),
        ("organization-membership-created", 200, "applied"),
        ("ignored-organization-invitation-created", 200, "ignored"),
        ("user-deleted", 200, "applied"),
        ("organization-deleted", 200, "applied"),
    ];
    for (name, status, outcome) in story {
        let mut event = fixture(name);
        let id = event["headers"]["svix-id"].as_str().unwrap().to_owned();
        sign(&mut event, &id);
        let (got, body) = send(&table, &event).await;
        assert_eq!((got, body["outcome"].as_str()), (status, Some(outcome)), "{name}: {body}");
    }
    let items = table.items().await;
    let left: Vec<bool> = items.values().map(|item| item["deleted"] == true).collect();
    assert_eq!(left, [true, true], "the two deletions leave their tombstones only: {items:?}");
}

#[tokio::test]
async fn signature_from_another_secret_is_401_with_a_generic_body() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign_with(&mut event, OTHER_SECRET, "msg_other", now());
    let body = assert_refused(&table, &event, 401).await;
    assert_eq!(body, json!({"error": GENERIC_401}));
}

#[tokio::test]
async fn committed_refusal_samples_are_refused() {
    let table = TestTable::create().await;
    // Re-signed as the sample intends: another secret, or a timestamp ten minutes old.
    let mut forged = fixture("refused-bad-signature");
    sign_with(&mut forged, OTHER_SECRET, "msg_forged", now());
    assert_refused(&table, &forged, 401).await;
    let mut stale = fixture("refused-stale-timestamp");
    sign_with(&mut stale, &local_secret(), "msg_stale", now() - 600);
    assert_refused(&table, &stale, 401).await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_401() {
    let table = TestTable::create().await;
    for skew in [-301, 301] {
        let mut event = fixture("user-created");
        sign_with(&mut event, &local_secret(), "msg_skew", now() + skew);
        assert_eq!(assert_refused(&table, &event, 401).await, json!({"error": GENERIC_401}));
    }
}

#[tokio::test]
async fn each_missing_signature_header_is_401() {
    let table = TestTable::create().await;
    for missing in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_missing");
        remove_header(&mut event, missing);
        assert_eq!(assert_refused(&table, &event, 401).await, json!({"error": GENERIC_401}), "{missing}");
    }
}

#[tokio::test]
async fn webhook_prefixed_headers_are_accepted() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign(&mut event, "msg_webhook_headers");
    for name in ["id", "timestamp", "signature"] {
        let value = event["headers"][format!("svix-{name}")].clone();
        remove_header(&mut event, &format!("svix-{name}"));
        set_header(&mut event, &format!("webhook-{name}"), value.as_str().unwrap());
    }
    assert_eq!(send(&table, &event).await.0, 200);
}

#[tokio::test]
async fn body_re_serialized_after_signing_fails_verification() {
    // What breaks most hand-written receivers: the signature covers the exact bytes sent.
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign(&mut event, "msg_bytes");
    let reformatted =
        serde_json::to_string_pretty(&serde_json::from_slice::<Value>(&event_body(&event)).unwrap()).unwrap();
    set_body(&mut event, reformatted.as_bytes());
    assert_refused(&table, &event, 401).await;
}

#[tokio::test]
async fn other_methods_are_405_with_allow_post() {
    let table = TestTable::create().await;
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_method");
        event["requestContext"]["http"]["method"] = json!(method);
        event["routeKey"] = json!(format!("{method} /webhooks/clerk"));
        let response = table.app().handle(request(&event)).await;
        assert_eq!(response.status(), 405, "{method}");
        assert_eq!(response.headers()[header::ALLOW], "POST");
    }
    assert!(table.items().await.is_empty());
}

#[tokio::test]
async fn other_paths_are_404() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign(&mut event, "msg_path");
    event["rawPath"] = json!("/webhooks/other");
    event["requestContext"]["http"]["path"] = json!("/webhooks/other");
    assert_refused(&table, &event, 404).await;
}

#[tokio::test]
async fn body_over_the_limit_is_413_even_when_signed() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    let padding = "x".repeat(clerk_sync::handler::MAX_BODY_BYTES);
    let body = format!(r#"{{"type":"user.created","data":{{"id":"user_1","updated_at":1,"pad":"{padding}"}}}}"#);
    set_body(&mut event, body.as_bytes());
    sign(&mut event, "msg_large");
    let answer = assert_refused(&table, &event, 413).await;
    assert_eq!(answer, json!({"error": "body is larger than 262144 bytes"}));
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let table = TestTable::create().await;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_type");
        match content_type {
            Some(value) => set_header(&mut event, "content-type", value),
            None => remove_header(&mut event, "content-type"),
        }
        assert_refused(&table, &event, 415).await;
    }
}

#[tokio::test]
async fn json_content_type_with_parameters_is_accepted() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    set_header(&mut event, "content-type", "Application/JSON; charset=utf-8");
    sign(&mut event, "msg_charset");
    assert_eq!(send(&table, &event).await.0, 200);
}

#[tokio::test]
async fn answers_are_json() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign(&mut event, "msg_json");
    let response = table.app().handle(request(&event)).await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
}
