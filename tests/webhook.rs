//! End to end through the handler: real API Gateway events in, a real DynamoDB API behind.
//! Each test is one behaviour of the contract in README.md ("Data model", "HTTP answers").

mod common;

use common::clerk;
use common::*;
use serde_json::{Value, json};

const USER: &str = "user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const SESSION: &str = "sess_2pQ9nA4bMcU9wXyZ2BcDeFgHiJK";
const USER_PK: &str = "USER#user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const SESSION_SK: &str = "SESSION#sess_2pQ9nA4bMcU9wXyZ2BcDeFgHiJK";
/// A user.deleted envelope timestamp, in milliseconds as Clerk documents.
const DELETED_AT: i64 = 1_795_537_800_041;

async fn deliver(table: &TestTable, body: &str) -> (u16, Value) {
    let id = format!("msg_{:x}", md5ish(body));
    answer(&table.app().handle(delivery(body, &id)).await)
}

/// A stable per-body message id, as Svix keeps one id across retries of a message.
fn md5ish(body: &str) -> u64 {
    body.bytes().fold(0xcbf29ce484222325, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
}

#[tokio::test]
async fn user_created_writes_the_user_item_with_clerk_field_names() {
    let table = TestTable::create().await;
    let (status, body) = deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"outcome": "applied", "type": "user.created", "id": USER}));

    let item = table.item(USER_PK, "USER").await.expect("user item");
    assert_eq!(item["id"], USER);
    assert_eq!(item["email"], format!("ada.{}@example.org", USER.to_lowercase()));
    assert_eq!(item["first_name"], "Ada");
    assert_eq!(item["last_name"], "Tester");
    assert_eq!(item["image_url"], "https://img.clerk.com/abc");
    assert_eq!(item["created_at"], 1654012591514_i64);
    assert_eq!(item["updated_at"], 1000);
    assert_eq!(item["last_sign_in_at"], 1000);
    assert_eq!(item["public_metadata"], json!({"nickname": "Ada", "plan": "pro"}));
    assert_eq!(item["version"], 1000);
    assert_eq!(data_of(&item)["private_metadata"], json!({"internal": "Ada"}), "the whole Clerk object is kept");
    assert_eq!(item.get("username"), None, "null fields are absent");
    assert_eq!(item.get("deleted"), None);
}

#[tokio::test]
async fn clerk_data_is_not_kept_when_turned_off() {
    let table = TestTable::create().await;
    let app = table.app_with(false);
    let response = app.handle(delivery(&clerk::user("user.created", USER, 1000, "Ada"), "msg_1")).await;
    assert_eq!(response.status(), 200);
    let item = table.item(USER_PK, "USER").await.unwrap();
    assert_eq!(item.get("data"), None);
    assert_eq!(item["first_name"], "Ada");
}

#[tokio::test]
async fn users_are_found_by_email_through_the_index() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    let email = format!("ada.{}@example.org", USER.to_lowercase());
    let found = table
        .client
        .query()
        .table_name(&table.name)
        .index_name("email-index")
        .key_condition_expression("email = :email")
        .expression_attribute_values(":email", aws_sdk_dynamodb::types::AttributeValue::S(email))
        .send()
        .await
        .unwrap();
    assert_eq!(found.items().len(), 1);
    // The index holds keys only (template.yaml): the user's key, then the item by GetItem.
    let mut names: Vec<&str> = found.items()[0].keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["email", "pk", "sk"]);
    assert_eq!(found.items()[0]["pk"].as_s().unwrap(), USER_PK);
    let user = table.item(found.items()[0]["pk"].as_s().unwrap(), found.items()[0]["sk"].as_s().unwrap()).await;
    assert_eq!(user.unwrap()["id"], USER);
}

#[tokio::test]
async fn newer_update_wins_and_older_one_is_stale() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    let (_, newer) = deliver(&table, &clerk::user("user.updated", USER, 3000, "Augusta")).await;
    let (status, older) = deliver(&table, &clerk::user("user.updated", USER, 2000, "Byron")).await;
    assert_eq!(newer["outcome"], "applied");
    assert_eq!((status, older["outcome"].as_str()), (200, Some("stale")));
    let item = table.item(USER_PK, "USER").await.unwrap();
    assert_eq!((item["first_name"].as_str(), item["version"].as_u64()), (Some("Augusta"), Some(3000)));
}

#[tokio::test]
async fn redelivery_is_a_duplicate_and_changes_nothing() {
    let table = TestTable::create().await;
    let body = clerk::user("user.created", USER, 1000, "Ada");
    deliver(&table, &body).await;
    let before = table.items().await;
    let (status, again) = deliver(&table, &body).await;
    assert_eq!((status, again["outcome"].as_str()), (200, Some("duplicate")));
    assert_eq!(table.items().await, before);
}

#[tokio::test]
async fn user_deleted_leaves_a_tombstone_without_personal_data_and_removes_sessions() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    let embedded = json!({"id": USER, "first_name": "Ada", "email_addresses": [{"email_address": "ada@example.org"}]});
    deliver(&table, &clerk::session("session.created", SESSION, USER, "active", 1100, Some(embedded))).await;
    deliver(&table, &clerk::session("session.created", "sess_other", USER, "active", 1200, None)).await;
    assert_eq!(table.items().await.len(), 3);

    let (status, body) = deliver(&table, &clerk::user_deleted(USER, DELETED_AT)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"outcome": "applied", "type": "user.deleted", "id": USER, "sessions_removed": 2, "memberships_removed": 0, "removal": "complete"})
    );
    let items = table.items().await;
    assert_eq!(items.len(), 1, "only the tombstone is left: {items:?}");
    let tombstone = &items[&(USER_PK.to_owned(), "USER".to_owned())];
    assert_eq!(tombstone, &json!({"pk": USER_PK, "sk": "USER", "id": USER, "deleted": true, "version": DELETED_AT}));
}

#[tokio::test]
async fn tombstone_is_a_dynamodb_bool() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user_deleted(USER, DELETED_AT)).await;
    let raw = table
        .client
        .get_item()
        .table_name(&table.name)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(USER_PK.into()))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("USER".into()))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.item().unwrap()["deleted"], aws_sdk_dynamodb::types::AttributeValue::Bool(true));
}

#[tokio::test]
async fn nothing_delivered_after_deletion_brings_the_user_back() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user_deleted(USER, DELETED_AT)).await;
    for body in [
        clerk::user("user.created", USER, 1000, "Ada"),
        clerk::user("user.updated", USER, 9000, "Ada"),
        clerk::session("session.created", SESSION, USER, "active", 9500, None),
        clerk::session("session.ended", SESSION, USER, "ended", 9600, None),
    ] {
        let (status, answer) = deliver(&table, &body).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("user_deleted")), "{answer}");
    }
    let items = table.items().await;
    assert_eq!(items.len(), 1);
    assert_eq!(items.values().next().unwrap()["deleted"], true);
}

#[tokio::test]
async fn deleting_twice_keeps_the_higher_version_and_removes_nothing_more() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user_deleted(USER, DELETED_AT)).await;
    let (_, older) = deliver(&table, &clerk::user_deleted(USER, DELETED_AT - 1000)).await;
    assert_eq!(older["outcome"], "stale");
    assert_eq!(older["sessions_removed"], 0);
    assert_eq!(table.item(USER_PK, "USER").await.unwrap()["version"], DELETED_AT);
}

#[tokio::test]
async fn session_created_writes_the_session_under_its_user_without_the_embedded_user() {
    let table = TestTable::create().await;
    let embedded = json!({"id": USER, "first_name": "Ada"});
    let (status, body) =
        deliver(&table, &clerk::session("session.created", SESSION, USER, "active", 1100, Some(embedded))).await;
    assert_eq!((status, body["outcome"].as_str(), body["id"].as_str()), (200, Some("applied"), Some(SESSION)));
    let item = table.item(USER_PK, SESSION_SK).await.unwrap();
    assert_eq!(item["id"], SESSION);
    assert_eq!(item["user_id"], USER);
    assert_eq!(item["client_id"], "client_29wBS3h1zhE1BsEK2dg9oyypfYk");
    assert_eq!(item["status"], "active");
    assert_eq!(item["created_at"], 1654014318265_i64);
    assert_eq!(item["updated_at"], 1100);
    assert_eq!(item["last_active_at"], 1100);
    assert_eq!(item["expire_at"], 1654619118265_i64);
    assert_eq!(item["abandon_at"], 1656606318265_i64);
    assert_eq!(item["version"], 1100);
    assert_eq!(data_of(&item)["id"], SESSION);
    assert_eq!(data_of(&item).get("user"), None);
}

#[tokio::test]
async fn one_query_returns_a_user_with_all_their_sessions() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    deliver(&table, &clerk::session("session.created", SESSION, USER, "active", 1100, None)).await;
    deliver(&table, &clerk::session("session.created", "sess_2", USER, "active", 1200, None)).await;
    let found = table
        .client
        .query()
        .table_name(&table.name)
        .key_condition_expression("pk = :pk")
        .expression_attribute_values(":pk", aws_sdk_dynamodb::types::AttributeValue::S(USER_PK.into()))
        .send()
        .await
        .unwrap();
    let sks: Vec<&str> = found.items().iter().map(|i| i["sk"].as_s().unwrap().as_str()).collect();
    assert_eq!(sks, ["SESSION#sess_2", SESSION_SK, "USER"]);
}

#[tokio::test]
async fn ended_session_stays_ended_whatever_arrives_later() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::session("session.ended", SESSION, USER, "ended", 2000, None)).await;
    for (event_type, status, version) in [("session.created", "active", 1000), ("session.pending", "pending", 3000)] {
        let (code, body) = deliver(&table, &clerk::session(event_type, SESSION, USER, status, version, None)).await;
        assert_eq!((code, body["outcome"].as_str()), (200, Some("stale")));
    }
    assert_eq!(table.item(USER_PK, SESSION_SK).await.unwrap()["status"], "ended");
}

#[tokio::test]
async fn terminal_status_replaces_a_live_one_even_with_an_older_version() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::session("session.created", SESSION, USER, "active", 3000, None)).await;
    let (_, body) = deliver(&table, &clerk::session("session.revoked", SESSION, USER, "revoked", 2000, None)).await;
    assert_eq!(body["outcome"], "applied");
    assert_eq!(table.item(USER_PK, SESSION_SK).await.unwrap()["status"], "revoked");
}

#[tokio::test]
async fn later_terminal_status_replaces_an_earlier_one() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::session("session.ended", SESSION, USER, "ended", 2000, None)).await;
    deliver(&table, &clerk::session("session.removed", SESSION, USER, "removed", 2500, None)).await;
    assert_eq!(table.item(USER_PK, SESSION_SK).await.unwrap()["status"], "removed");
}

#[tokio::test]
async fn unhandled_types_are_acknowledged_and_write_nothing() {
    let table = TestTable::create().await;
    for body in [
        r#"{"type":"organizationInvitation.created","object":"event","timestamp":1,"data":{"id":"orginv_1","object":"organization_invitation","email_address":"a@b.c"}}"#,
        r#"{"type":"email.created","object":"event","timestamp":1,"data":{"id":"ema_1","object":"email","to_email_address":"a@b.c"}}"#,
        r#"{"type":"session.token_created","object":"event","timestamp":1,"data":{"object":"token"}}"#,
    ] {
        let (status, answer) = deliver(&table, body).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{body}");
    }
    assert!(table.items().await.is_empty());
}

#[tokio::test]
async fn verified_body_that_is_not_a_clerk_event_is_400_and_writes_nothing() {
    let table = TestTable::create().await;
    for body in [
        r#"{"test": 2432232314}"#,
        "not json at all",
        r#"{"type":"user.created","data":{"first_name":"no id"}}"#,
        r#"{"type":"user.updated","data":{"id":"user_1"}}"#,
        r#"{"type":"session.created","data":{"object":"session","id":"sess_1","status":"active","updated_at":5}}"#,
    ] {
        let (status, answer) = deliver(&table, body).await;
        assert_eq!(status, 400, "{body}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
    assert!(table.items().await.is_empty());
}

#[tokio::test]
async fn envelope_timestamp_in_seconds_versions_a_deletion_in_milliseconds() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user_deleted(USER, 1716883200)).await;
    assert_eq!(table.item(USER_PK, "USER").await.unwrap()["version"], 1716883200000_i64);
}

#[tokio::test]
async fn dynamodb_unreachable_answers_503_quickly_and_never_2xx() {
    // A port with nothing listening: every connection is refused.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let table = TestTable::create().await;
    let app = table.app_via(&endpoint);
    let started = std::time::Instant::now();
    let response = app.handle(delivery(&clerk::user("user.created", USER, 1000, "Ada"), "msg_down")).await;
    let (status, body) = answer(&response);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, json!({"error": "the event could not be stored; retry later"}));
    assert!(started.elapsed() < std::time::Duration::from_secs(8), "took {:?}", started.elapsed());
    assert!(table.items().await.is_empty());
}

const T: i64 = 1_795_000_000_000;

/// The table records the Clerk instance its deliveries come from (and the function's `data`
/// setting), which `clerk-sync-admin` checks its secret key against.
#[tokio::test]
async fn the_first_delivery_records_the_clerk_instance_the_table_mirrors() {
    let table = TestTable::create().await;
    let (status, _) = deliver(&table, &clerk::user("user.created", USER, T, "Ada")).await;
    assert_eq!(status, 200);
    let mirror = table.item("META", "INSTANCE").await.unwrap();
    assert_eq!(mirror["instance_id"], "ins_123");
    assert_eq!(mirror["store_clerk_data"], true);
}

/// A delivery from another Clerk instance than the one the table mirrors (a second endpoint
/// pointed at the same table) is refused, 500, and writes nothing: two instances' users would mix.
#[tokio::test]
async fn deliveries_from_another_clerk_instance_are_refused_and_write_nothing() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", "user_first", T, "Ada")).await;
    let other = clerk::user("user.created", USER, T, "Ada").replace("ins_123", "ins_other");
    let (status, answer) = deliver(&table, &other).await;
    assert_eq!((status, answer["error"].as_str()), (500, Some("this table mirrors another Clerk instance")));
    assert_eq!(table.item(&format!("USER#{USER}"), "USER").await, None);
}

/// The instance is compared on every delivery, not only on the first of a cold start: a warm
/// function refuses another instance's delivery too.
#[tokio::test]
async fn a_warm_function_refuses_another_clerk_instance_too() {
    let table = TestTable::create().await;
    let app = table.app();
    let first = answer(&app.handle(delivery(&clerk::user("user.created", "user_first", T, "Ada"), "msg_a")).await);
    assert_eq!(first.0, 200);
    let other = clerk::user("user.created", USER, T, "Ada").replace("ins_123", "ins_other");
    let (status, _) = answer(&app.handle(delivery(&other, "msg_b")).await);
    assert_eq!(status, 500);
    assert_eq!(table.item(&format!("USER#{USER}"), "USER").await, None);
}
