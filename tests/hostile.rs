//! Hostile input on the public endpoint: each gets a clear 4xx and nothing is written (or, where a
//! signed Clerk event is merely extreme, it is stored), and the work done before verification is
//! bounded.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::*;
use serde_json::{Value, json};

const GENERIC_401: &str = "webhook verification failed";

async fn refused(table: &TestTable, event: &Value) -> (u16, Value) {
    let answer = answer(&table.app().handle(request(event)).await);
    assert!(table.items().await.is_empty(), "a refused request wrote to the table");
    answer
}

fn base64_event(body: &[u8]) -> Value {
    let mut event = fixture("user-created-base64");
    event["body"] = json!(BASE64.encode(body));
    event
}

#[tokio::test]
async fn non_utf8_body_is_401_unsigned_and_400_signed() {
    let table = TestTable::create().await;
    let bytes = [0xff, 0xfe, 0x00, 0x80, b'{', 0xc3, 0x28];
    let mut event = base64_event(&bytes);
    assert_eq!(refused(&table, &event).await.0, 401, "the fixture's old signature does not cover this body");
    sign(&mut event, "msg_binary");
    let (status, body) = refused(&table, &event).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("not valid JSON"), "{body}");
}

/// JSON nested far deeper than DynamoDB's 32 levels (and than serde_json's recursion limit) in
/// Clerk's metadata is valid and signed: it is stored, as text, with no stack exhausted.
#[tokio::test]
async fn deeply_nested_metadata_is_stored_as_text_without_exhausting_the_stack() {
    let table = TestTable::create().await;
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(
            r#"{{"type":"user.created","data":{{"id":"user_1","updated_at":{depth},"public_metadata":{nested}}}}}"#
        );
        let mut event = fixture("user-created");
        set_body(&mut event, body.as_bytes());
        sign(&mut event, "msg_nested");
        let (status, answer) = answer(&table.app().handle(request(&event)).await);
        assert_eq!(status, 200, "depth {depth}: {answer}");
        let item = table.item("USER#user_1", "USER").await.unwrap();
        assert_eq!(item["public_metadata"], json!(nested), "depth {depth}");
    }
}

/// The envelope itself nested beyond serde_json's recursion limit: 400, nothing written.
#[tokio::test]
async fn deeply_nested_envelope_is_400_without_exhausting_the_stack() {
    let table = TestTable::create().await;
    for depth in [200, 100_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body = format!(r#"{{"type":"user.created","data":{nested}}}"#);
        let mut event = fixture("user-created");
        set_body(&mut event, body.as_bytes());
        sign(&mut event, "msg_nested");
        let (status, answer) = refused(&table, &event).await;
        assert_eq!(status, 400, "depth {depth}: {answer}");
    }
}

#[tokio::test]
async fn thousands_of_signatures_in_one_header_are_401() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    sign(&mut event, "msg_many");
    let valid = event["headers"]["svix-signature"].as_str().unwrap().to_owned();
    let junk = vec!["v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="; 5000].join(" ");
    // The valid signature comes after more entries than the verifier reads: refused, cheaply.
    set_header(&mut event, "svix-signature", &format!("{junk} {valid}"));
    assert_eq!(refused(&table, &event).await, (401, json!({"error": GENERIC_401})));
}

#[tokio::test]
async fn very_long_headers_are_401() {
    let table = TestTable::create().await;
    for (name, value) in [
        ("svix-id", "m".repeat(64 * 1024)),
        ("svix-timestamp", "1".repeat(64 * 1024)),
        ("svix-signature", format!("v1,{}", "A".repeat(64 * 1024))),
    ] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_long");
        set_header(&mut event, name, &value);
        assert_eq!(refused(&table, &event).await, (401, json!({"error": GENERIC_401})), "{name}");
    }
}

#[tokio::test]
async fn non_ascii_header_values_are_401() {
    let table = TestTable::create().await;
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_non_ascii");
        let value = event["headers"][name].as_str().unwrap().to_owned();
        set_header(&mut event, name, &format!("{value}é"));
        assert_eq!(refused(&table, &event).await, (401, json!({"error": GENERIC_401})), "{name}");
    }
}

/// Control characters are not valid in HTTP header values: API Gateway answers such requests 400
/// itself, and the Lambda runtime would refuse the event before the function ran.
#[test]
fn control_characters_in_headers_never_reach_the_function() {
    for name in ["svix-id", "svix-timestamp", "svix-signature"] {
        let mut event = fixture("user-created");
        sign(&mut event, "msg_control");
        let value = event["headers"][name].as_str().unwrap().to_owned();
        set_header(&mut event, name, &format!("{value}\u{1}"));
        assert!(lambda_http::request::from_str(&event.to_string()).is_err(), "{name}");
    }
}

#[tokio::test]
async fn control_characters_in_a_signed_body_are_400() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    set_body(&mut event, b"{\"type\":\"user.created\",\"data\":{\"id\":\"user_\x01\"}}");
    sign(&mut event, "msg_control_body");
    assert_eq!(refused(&table, &event).await.0, 400);
}

#[tokio::test]
async fn empty_body_is_401() {
    let table = TestTable::create().await;
    let mut event = fixture("user-created");
    event["body"] = Value::Null;
    assert_eq!(refused(&table, &event).await, (401, json!({"error": GENERIC_401})));
}
