//! What each event costs in DynamoDB requests, counted on the wire by a proxy in front of the local
//! DynamoDB API: one request per user or organization upsert; a session upsert's PutItem and a
//! membership's TransactWriteItems (both its items) followed by one Query per item they hang off
//! (the user; the organization and the user), whatever the outcome; none for ignored or refused
//! deliveries; for a deletion the tombstone, one query and one batch per 25 items removed; and a
//! session written after its user's deletion removes itself with one batch more.

mod common;

use clerk_sync::handler::App;
use common::clerk;
use common::fault_proxy::FaultProxy;
use common::*;

const USER: &str = "user_counted";
const T: i64 = 1_795_000_000_000;

/// Delivers `body` and returns how many requests reached DynamoDB.
async fn requests_for(app: &App, proxy: &FaultProxy, body: &str) -> usize {
    let before = proxy.requests();
    let response = app.handle(delivery(body, "msg_count")).await;
    assert!(response.status().as_u16() < 500, "{}", response.status());
    proxy.requests() - before
}

/// A function whose first delivery has recorded the Clerk instance (once per cold start).
async fn counted() -> (TestTable, FaultProxy, App) {
    let table = TestTable::create().await;
    let proxy = proxy().await;
    let app = table.app_via(&proxy.endpoint());
    requests_for(&app, &proxy, &clerk::user("user.created", "user_first", T, "Ada")).await;
    (table, proxy, app)
}

/// The first delivery of a function instance records the Clerk instance the table mirrors: one
/// PutItem more, once.
#[tokio::test]
async fn the_first_delivery_of_a_function_instance_records_the_clerk_instance_once() {
    let table = TestTable::create().await;
    let proxy = proxy().await;
    let app = table.app_via(&proxy.endpoint());
    assert_eq!(requests_for(&app, &proxy, &clerk::user("user.created", USER, T, "Ada")).await, 2);
    assert_eq!(requests_for(&app, &proxy, &clerk::user("user.updated", USER, T + 1, "Ada")).await, 1);
}

#[tokio::test]
async fn user_upserts_take_one_request_applied_or_not() {
    let (_table, proxy, app) = counted().await;
    let created = clerk::user("user.created", USER, T, "Ada");
    assert_eq!(requests_for(&app, &proxy, &created).await, 1, "applied");
    assert_eq!(requests_for(&app, &proxy, &created).await, 1, "duplicate");
    assert_eq!(requests_for(&app, &proxy, &clerk::user("user.updated", USER, T - 1, "Ada")).await, 1, "stale");
}

#[tokio::test]
async fn session_upserts_take_one_request_applied_or_not() {
    let (_table, proxy, app) = counted().await;
    let session = |status: &str, version: i64| clerk::session("session.created", "sess_c", USER, status, version, None);
    assert_eq!(requests_for(&app, &proxy, &session("active", T)).await, 2, "applied");
    assert_eq!(requests_for(&app, &proxy, &session("active", T)).await, 2, "duplicate");
    assert_eq!(requests_for(&app, &proxy, &session("ended", T + 1)).await, 2, "terminal");
    assert_eq!(requests_for(&app, &proxy, &session("active", T + 2)).await, 2, "stale");
}

#[tokio::test]
async fn organization_and_membership_upserts_take_one_request_applied_or_not() {
    let (_table, proxy, app) = counted().await;
    let organization = clerk::organization("organization.created", "org_c", T, "Acme");
    assert_eq!(requests_for(&app, &proxy, &organization).await, 1, "applied");
    assert_eq!(requests_for(&app, &proxy, &organization).await, 1, "duplicate");
    let membership = |event_type: &str, version: i64| {
        clerk::membership(event_type, "orgmem_c", "org_c", USER, "org:member", T, version)
    };
    let created = membership("organizationMembership.created", T);
    assert_eq!(requests_for(&app, &proxy, &created).await, 3, "applied: both items in one transaction, 2 Queries");
    assert_eq!(requests_for(&app, &proxy, &created).await, 3, "duplicate");
    assert_eq!(requests_for(&app, &proxy, &membership("organizationMembership.deleted", T)).await, 3, "tombstone");
    assert_eq!(requests_for(&app, &proxy, &membership("organizationMembership.updated", T + 1)).await, 3, "stale");
}

#[tokio::test]
async fn organization_deletion_takes_the_tombstone_a_query_and_a_batch_per_25_items() {
    let (_table, proxy, app) = counted().await;
    for user in 0..20 {
        let body = clerk::membership(
            "organizationMembership.created",
            &format!("orgmem_{user}"),
            "org_big",
            &format!("user_{user}"),
            "org:member",
            T,
            T,
        );
        requests_for(&app, &proxy, &body).await;
    }
    // 20 memberships are 40 items: the organization's 20 and their 20 counterparts under the users.
    assert_eq!(requests_for(&app, &proxy, &clerk::organization_deleted("org_big", T + 100)).await, 4);
}

#[tokio::test]
async fn deletion_takes_the_tombstone_a_query_and_a_batch_per_25_sessions() {
    let (_table, proxy, app) = counted().await;
    assert_eq!(requests_for(&app, &proxy, &clerk::user_deleted("user_lonely", T)).await, 2, "no sessions: no batch");
    for s in 0..30 {
        let body = clerk::session("session.created", &format!("sess_c{s}"), USER, "active", T + s, None);
        requests_for(&app, &proxy, &body).await;
    }
    assert_eq!(requests_for(&app, &proxy, &clerk::user_deleted(USER, T + 100)).await, 4, "30 sessions: 2 batches");
    assert_eq!(
        requests_for(&app, &proxy, &clerk::session("session.created", "sess_late", USER, "active", T + 200, None))
            .await,
        3,
        "written, its user read, then removed"
    );
}

#[tokio::test]
async fn ignored_and_refused_deliveries_take_no_request() {
    let (_table, proxy, app) = counted().await;
    let ignored =
        r#"{"type":"organizationInvitation.created","object":"event","timestamp":1,"data":{"id":"orginv_1"}}"#;
    assert_eq!(requests_for(&app, &proxy, ignored).await, 0);
    let mut forged = fixture("user-created");
    sign_with(&mut forged, "whsec_BR8NEvFoDlkthmWEYw1nsvXFja6W9O1VqFNFSCkyako=", "msg_forged", now());
    let before = proxy.requests();
    assert_eq!(app.handle(request(&forged)).await.status(), 401);
    assert_eq!(proxy.requests(), before);
}
