//! `clerk-sync-admin backfill`, the real binary, against a fake Clerk Backend API over real HTTP
//! and the local DynamoDB API.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use std::time::{Duration, Instant};

use clerk_sync::config::Config;
use clerk_sync::handler::App;
use clerk_sync::verify::SigningSecret;
use common::TestTable;
use serde_json::{Value, json};
use support::{
    Admin, FakeClerk, Fault, Target, created, membership, organization, session, user, user_id, user_items, users,
};

const FAST: &str = "--rate=100000";

async fn setup(users: Vec<Value>, sessions: Vec<Value>) -> (FakeClerk, TestTable, Admin) {
    let clerk = FakeClerk::start(users, sessions).await;
    let table = support::mirrored_table().await;
    let admin = Admin::new(&clerk, &table);
    (clerk, table, admin)
}

/// The function itself, on `table`, as Svix delivers to it.
struct Webhook {
    app: App,
    secret: String,
}

impl Webhook {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn on(table: &TestTable) -> Self {
        let config = Config {
            secrets: SigningSecret::parse_list(Self::SECRET).unwrap(),
            table_name: table.name.clone(),
            store_clerk_data: true,
            sync: None,
        };
        Self { app: App::new(config, table.store()), secret: Self::SECRET.to_owned() }
    }

    /// Delivers `data` as an event of `event_type`, signed now; returns the answer's outcome.
    async fn deliver(&self, event_type: &str, data: &Value) -> String {
        let body = json!({"data": data, "object": "event", "type": event_type, "timestamp": data["updated_at"]});
        let mut event: Value = serde_json::from_str(include_str!("../../events/user-created.json")).unwrap();
        common::set_body(&mut event, body.to_string().as_bytes());
        common::sign_with(&mut event, &self.secret, &format!("msg_{}", data["id"].as_str().unwrap()), common::now());
        let (status, answer) = common::answer(&self.app.handle(common::request(&event)).await);
        assert_eq!(status, 200, "{answer}");
        answer["outcome"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_pages_through_every_user() {
    let (clerk, table, admin) = setup(users(130), vec![]).await;
    let run = admin.run(&["backfill", "--limit=40", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let stored: Vec<String> = user_items(&table).await.into_keys().collect();
    let expected: Vec<String> = (0..130).map(user_id).collect();
    assert_eq!(stored, expected);
    assert_eq!(clerk.requests_to("/users"), 4, "each page from the last user of the one before: 40, 40, 40, 13");
    assert_eq!((run.figure("users:", "fetched"), run.figure("users:", "applied")), (130, 130), "{run}");
    assert_eq!(run.figure("backfill complete", "pages"), 4, "{run}");
}

/// `GET /users` pages by offset only, and an offset moves when a user before it is deleted: the
/// listing goes by creation time, so a user deleted while it runs makes it skip nobody.
#[tokio::test(flavor = "multi_thread")]
async fn a_user_deleted_during_the_backfill_makes_it_skip_nobody() {
    let (clerk, table, admin) = setup(users(30), vec![]).await;
    // Right before the second page: user 3, on the first page, is deleted in Clerk. Paged by
    // offset, the second page would start at user 11 and user 10 would never be listed.
    clerk.fail(Target::UsersPage(Some(created(9))), Fault::DeleteUserFirst(user_id(3)), Some(1));
    let run = admin.run(&["backfill", "--limit=10", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let stored: Vec<String> = user_items(&table).await.into_keys().collect();
    assert_eq!(stored, (0..30).map(user_id).collect::<Vec<_>>(), "user 3 was written before it went");
    assert_eq!(run.figure("users:", "fetched"), 30, "{run}");
}

/// Users created in one millisecond (an import can make thousands) across several pages: each is
/// written once, and the users after them too.
#[tokio::test(flavor = "multi_thread")]
async fn users_created_in_one_millisecond_across_pages_are_each_listed_once() {
    let mut all = users(40);
    for user in &mut all[5..32] {
        user["created_at"] = json!(created(5));
    }
    let (clerk, table, admin) = setup(all, vec![]).await;
    let run = admin.run(&["backfill", "--limit=10", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(user_items(&table).await.len(), 40);
    assert_eq!((run.figure("users:", "fetched"), run.figure("users:", "applied")), (40, 40), "{run}");
    let asked: Vec<(Option<String>, Option<String>)> = clerk
        .received()
        .into_iter()
        .filter(|r| r.path == "/users")
        .map(|r| (r.query.get("created_at_after").cloned(), r.query.get("offset").cloned()))
        .collect();
    let at = |ms: i64| Some((ms - 1).to_string());
    assert_eq!(
        asked,
        [
            (None, None),
            (at(created(5)), None),
            // The millisecond's users alone, in pages overlapping by one: a pass that finds users...
            (at(created(5)), None),
            (at(created(5)), Some("9".to_owned())),
            (at(created(5)), Some("18".to_owned())),
            // ...then one that finds nobody new...
            (at(created(5)), None),
            (at(created(5)), Some("9".to_owned())),
            (at(created(5)), Some("18".to_owned())),
            // ...then on from the next millisecond.
            (at(created(5) + 1), None),
        ],
    );
}

/// A page not in creation order would make the listing skip users: the run stops, naming it.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_out_of_creation_order_stops_the_run() {
    let mut all = users(30);
    let (clerk, table, admin) = setup(all.clone(), vec![]).await;
    let mut second: Vec<Value> = all.drain(9..19).collect();
    second.reverse();
    clerk.fail(Target::UsersPage(Some(created(9))), Fault::Answer(200, json!(second).to_string()), None);
    let run = admin.run(&["backfill", "--limit=10", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let expected = format!("error: page 2 of users (created from {}): the answer is not in creation order", created(9));
    assert!(run.stderr.contains(&expected), "{run}");
    assert_eq!(user_items(&table).await.len(), 10, "the first page only");
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_ends_with_the_first_page_that_is_not_full() {
    let (clerk, table, admin) = setup(users(80), vec![]).await;
    let run = admin.run(&["backfill", "--limit=40", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(user_items(&table).await.len(), 80);
    assert_eq!(clerk.requests_to("/users"), 3, "40, 40 (from user 39), then users 78 and 79");
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_writes_the_items_the_webhook_writes() {
    let users = users(6);
    let sessions: Vec<Value> = (0..6)
        .flat_map(|i| {
            let updated_at = 1_700_000_100_000 + i as i64;
            [
                session(&format!("sess_{i}a"), &user_id(i), "active", updated_at),
                session(&format!("sess_{i}b"), &user_id(i), "ended", updated_at + 1),
            ]
        })
        .collect();
    let (_clerk, backfilled, admin) = setup(users.clone(), sessions.clone()).await;
    let run = admin.run(&["backfill", "--sessions", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");

    let delivered = TestTable::create().await;
    let webhook = Webhook::on(&delivered);
    for user in &users {
        assert_eq!(webhook.deliver("user.updated", user).await, "applied");
    }
    for session in &sessions {
        assert_eq!(webhook.deliver("session.created", session).await, "applied");
    }
    let items = backfilled.items().await;
    assert_eq!(items.len(), 18);
    assert_eq!(items, delivered.items().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_never_overwrites_a_newer_webhook_write() {
    let (_clerk, table, admin) = setup(users(3), vec![]).await;
    let newer = user(1, 1_800_000_000_000);
    assert_eq!(Webhook::on(&table).deliver("user.updated", &newer).await, "applied");
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(user_items(&table).await[&user_id(1)]["version"], json!(1_800_000_000_000_i64));
    assert_eq!((run.figure("users:", "applied"), run.figure("users:", "stale")), (2, 1), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_later_webhook_wins_over_the_backfill() {
    let (_clerk, table, admin) = setup(users(3), vec![]).await;
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let later = user(1, 1_800_000_000_000);
    assert_eq!(Webhook::on(&table).deliver("user.updated", &later).await, "applied");
    assert_eq!(user_items(&table).await[&user_id(1)]["version"], json!(1_800_000_000_000_i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn backfill_again_changes_nothing() {
    let (_clerk, table, admin) = setup(users(20), vec![]).await;
    assert_eq!(admin.run(&["backfill", FAST]).await.code, Some(0));
    let before = table.items().await;
    let again = admin.run(&["backfill", FAST]).await;
    assert_eq!(again.code, Some(0), "{again}");
    assert_eq!(again.figure("users:", "duplicate"), 20, "{again}");
    assert_eq!(table.items().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limited_page_is_fetched_again_after_retry_after() {
    let (clerk, table, admin) = setup(users(10), vec![]).await;
    clerk.fail(Target::UsersPage(None), Fault::TooManyRequests { retry_after: 1 }, Some(1));
    let started = Instant::now();
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not waited for");
    assert_eq!(clerk.requests_to("/users"), 2);
    assert_eq!(user_items(&table).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn server_errors_are_retried() {
    let (clerk, table, admin) = setup(users(10), vec![]).await;
    clerk.fail(Target::UsersPage(None), Fault::ServerError, Some(2));
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(clerk.requests_to("/users"), 3);
    assert_eq!(user_items(&table).await.len(), 10);
}

#[tokio::test(flavor = "multi_thread")]
async fn persistent_server_errors_stop_the_run_with_a_resume_command() {
    let (clerk, table, admin) = setup(users(30), vec![]).await;
    clerk.fail(Target::UsersPage(Some(created(9))), Fault::ServerError, None);
    let run = admin.run(&["backfill", "--limit=10", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("Clerk answered 503 Service Unavailable to GET /users 5 times in a row"), "{run}");
    assert_eq!(run.resume_args(), ["backfill", "--created-from", &created(9).to_string(), "--limit=10", FAST]);
    assert_eq!(user_items(&table).await.len(), 10, "the first page, written before the failure");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_page_stops_the_run_and_the_resume_command_completes_it() {
    let mut all = users(100);
    let (clerk, table, admin) = setup(all.clone(), vec![]).await;
    // Pages of 25, each from the last user of the one before: 0 to 24, 24 to 48, then page 3, from
    // user 48, holds an object read_object refuses: its `id` is missing.
    let mut bad_page: Vec<Value> = all.drain(48..73).collect();
    bad_page[7].as_object_mut().unwrap().remove("id");
    clerk.fail(Target::UsersPage(Some(created(48))), Fault::Answer(200, json!(bad_page).to_string()), None);

    let run = admin.run(&["backfill", "--limit=25", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let expected = format!(
        "error: page 3 of users (created from {}), object 7: the user.updated event's data is not a valid user: missing field `id`",
        created(48)
    );
    assert!(run.stderr.contains(&expected), "{run}");
    let stored: Vec<String> = user_items(&table).await.into_keys().collect();
    assert_eq!(stored, (0..49).map(user_id).collect::<Vec<_>>(), "pages 1 and 2, nothing of page 3");

    clerk.heal();
    let resume = run.resume_args();
    let resumed = admin.run(&resume.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(resumed.code, Some(0), "{resumed}");
    // From user 48's millisecond on: user 48 again (users of one millisecond can straddle pages).
    assert_eq!(resumed.figure("users:", "fetched"), 52, "{resumed}");
    assert_eq!(user_items(&table).await.len(), 100);
}

#[tokio::test(flavor = "multi_thread")]
async fn page_that_is_not_json_stops_the_run_naming_the_page() {
    let (clerk, table, admin) = setup(users(5), vec![]).await;
    clerk.fail(Target::UsersPage(None), Fault::Answer(200, "<html>Zelda</html>".into()), None);
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr.contains("error: page 1 of users (the first): the answer is not valid JSON (line 1, column 1)"),
        "{run}"
    );
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn page_that_is_not_an_array_stops_the_run() {
    let (clerk, table, admin) = setup(users(5), vec![]).await;
    clerk.fail(Target::UsersPage(None), Fault::Answer(200, r#"{"data":[],"total_count":0}"#.into()), None);
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("page 1 of users (the first): the answer is not a JSON array of objects"), "{run}");
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_key_is_a_clear_error_and_nothing_is_written() {
    let (_clerk, table, mut admin) = setup(users(5), vec![]).await;
    admin.key = "sk_test_wrongKey987654321".into();
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(
        run.stderr.contains("Clerk refused the secret key: 401 Unauthorized; codes: authentication_invalid"),
        "{run}"
    );
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_api_is_a_clear_error_and_nothing_is_written() {
    let (_clerk, table, mut admin) = setup(users(5), vec![]).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    admin.api_url = format!("http://{closed}/v1");
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("could not reach Clerk at http://127.0.0.1:"), "{run}");
    assert!(run.stderr.contains("(connection failed), 5 attempts"), "{run}");
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_secret_key_is_a_usage_error() {
    let (clerk, table, mut admin) = setup(users(5), vec![]).await;
    admin.key = String::new();
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(2), "{run}");
    assert!(run.stderr.contains("CLERK_SECRET_KEY is not set"), "{run}");
    assert!(clerk.received().is_empty());
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_reads_everything_and_writes_nothing() {
    let (clerk, table, admin) = setup(users(30), vec![session("sess_1", &user_id(3), "active", 5)]).await;
    let run = admin.run(&["backfill", "--dry-run", "--sessions", "--limit=10", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("backfill dry run complete: nothing written"), "{run}");
    assert_eq!((run.figure("users:", "fetched"), run.figure("sessions:", "fetched")), (30, 1), "{run}");
    assert_eq!(clerk.requests_to("/users"), 4);
    assert!(table.items().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_are_backfilled_under_their_users_across_pages_of_sessions() {
    let sessions: Vec<Value> =
        (0..5).map(|i| session(&format!("sess_{i}"), &user_id(1), "active", 1_700_000_200_000 + i)).collect();
    let (clerk, table, admin) = setup(users(3), sessions).await;
    let run = admin.run(&["backfill", "--sessions", "--limit=2", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let items = table.items().await;
    let sessions: Vec<(&str, &str)> =
        items.keys().filter(|(_, sk)| sk.starts_with("SESSION#")).map(|(pk, sk)| (pk.as_str(), sk.as_str())).collect();
    let pk = format!("USER#{}", user_id(1));
    let expected: Vec<(&str, String)> = (0..5).map(|i| (pk.as_str(), format!("SESSION#sess_{i}"))).collect();
    let expected: Vec<(&str, &str)> = expected.iter().map(|(pk, sk)| (*pk, sk.as_str())).collect();
    assert_eq!(sessions, expected);
    let offsets: Vec<String> = clerk
        .received()
        .into_iter()
        .filter(|r| r.path == "/sessions" && r.query["user_id"] == user_id(1))
        .map(|r| r.query["offset"].clone())
        .collect();
    assert_eq!(offsets, ["0", "2", "4"]);
    assert_eq!(run.figure("sessions:", "applied"), 5, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_carries_the_pinned_api_version() {
    let (clerk, _table, admin) = setup(users(3), vec![]).await;
    assert_eq!(admin.run(&["backfill", "--sessions", FAST]).await.code, Some(0));
    let received = clerk.received();
    assert!(received.len() >= 5);
    assert!(received.iter().all(|r| r.api_version.as_deref() == Some("2026-05-12")), "{received:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn organizations_and_memberships_are_backfilled_as_the_webhook_writes_them() {
    let organizations: Vec<Value> =
        (0..3).map(|i| organization(&format!("org_{i}fake"), 1_700_000_400_000 + i)).collect();
    let memberships: Vec<Value> = (0..5)
        .map(|i| {
            membership(
                &format!("orgmem_{i}fake"),
                &format!("org_{}fake", i % 3),
                &user_id(i as usize),
                1_700_000_500_000 + i,
            )
        })
        .collect();
    let (clerk, backfilled, admin) = setup(users(5), vec![]).await;
    clerk.set_organizations(organizations.clone(), memberships.clone());
    let run = admin.run(&["backfill", "--organizations", "--limit=2", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("organizations:", "applied"), 3, "{run}");
    assert_eq!(run.figure("memberships:", "applied"), 5, "{run}");
    assert_eq!(clerk.requests_to("/organizations"), 2, "pages of 2 and 1");
    assert_eq!(clerk.requests_to("/organization_memberships"), 3, "pages of 2, 2 and 1");

    let delivered = TestTable::create().await;
    let webhook = Webhook::on(&delivered);
    for user in users(5) {
        assert_eq!(webhook.deliver("user.updated", &user).await, "applied");
    }
    for organization in &organizations {
        assert_eq!(webhook.deliver("organization.updated", organization).await, "applied");
    }
    for membership in &memberships {
        assert_eq!(webhook.deliver("organizationMembership.updated", membership).await, "applied");
    }
    assert_eq!(backfilled.items().await, delivered.items().await);
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_table_is_a_clear_error_before_anything_is_read_from_clerk() {
    let (clerk, _table, mut admin) = setup(users(5), vec![]).await;
    admin.table = "clerk-sync-no-such-table".into();
    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains("DynamoDB DescribeTable failed"), "{run}");
    assert!(run.stderr.contains("(table clerk-sync-no-such-table)"), "{run}");
    assert!(clerk.received().is_empty());
}

/// An object DynamoDB will not store in any form (here: every form of the user refused as
/// invalid) is skipped and named, the run goes on to the organizations, and it ends with exit 4:
/// never a stop that resuming would meet again at the same object.
#[tokio::test]
async fn an_object_dynamodb_refuses_is_skipped_and_named_and_the_run_goes_on() {
    use common::fault_proxy::Fault as DynamoDbFault;
    let (clerk, table, mut admin) = setup(users(1), vec![]).await;
    clerk.set_organizations(vec![organization("org_1", 5)], vec![]);
    let proxy = common::proxy().await;
    // DescribeTable and reading the table's record of its Clerk instance at start, then the
    // user's item and its skeleton are refused.
    let pass = DynamoDbFault::Pass;
    proxy.then(&[pass, pass, DynamoDbFault::Validation, DynamoDbFault::Validation]);
    admin.dynamodb_endpoint = Some(proxy.endpoint());
    let run = admin.run(&["backfill", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(4), "{run}");
    assert!(
        run.stderr.contains(&format!("skipped {}: DynamoDB PutItem refused the request as invalid", user_id(0))),
        "{run}"
    );
    assert_eq!((run.figure("users:", "skipped"), run.figure("users:", "applied")), (1, 0));
    assert_eq!(run.figure("organizations:", "applied"), 1);
    assert!(user_items(&table).await.is_empty());
    assert!(!run.stderr.contains("resume with"), "{run}");
}

/// A failure of DynamoDB or the credentials (here they expire mid-run) is no object's fault: the
/// run stops with its resume command rather than skipping every object after it.
#[tokio::test]
async fn expired_credentials_stop_the_run_with_its_resume_command() {
    use common::fault_proxy::Fault as DynamoDbFault;
    let (_clerk, table, mut admin) = setup(users(3), vec![]).await;
    let proxy = common::proxy().await;
    proxy.always(DynamoDbFault::ExpiredToken);
    proxy.then(&[DynamoDbFault::Pass; 2]);
    admin.dynamodb_endpoint = Some(proxy.endpoint());
    let run = admin.run(&["backfill", "--limit=1", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(!run.stderr.contains("skipped"), "{run}");
    assert_eq!(run.resume_args(), ["backfill", "--limit=1", FAST]);
    assert!(user_items(&table).await.is_empty());
}
