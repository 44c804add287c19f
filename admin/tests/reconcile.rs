//! `clerk-sync-admin reconcile`, the real binary, against a fake Clerk Backend API over real HTTP
//! and the local DynamoDB API.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::TestTable;
use serde_json::{Value, json};
use support::{Admin, FakeClerk, Fault, Target, session, user, user_id, user_items, users};

const FAST: &str = "--rate=100000";

/// Ten users, each with one session, in Clerk and (through a backfill) in the table.
async fn in_sync() -> (FakeClerk, TestTable, Admin) {
    let sessions: Vec<Value> =
        (0..10).map(|i| session(&format!("sess_{i}"), &user_id(i), "active", 1_700_000_300_000)).collect();
    let clerk = FakeClerk::start(users(10), sessions).await;
    let table = TestTable::create().await;
    let admin = Admin::new(&clerk, &table);
    let backfill = admin.run(&["backfill", "--sessions", FAST]).await;
    assert_eq!(backfill.code, Some(0), "{backfill}");
    assert_eq!(table.items().await.len(), 20);
    (clerk, table, admin)
}

fn is_tombstone(item: &Value) -> bool {
    item["deleted"] == json!(true) && item.as_object().unwrap().len() == 5
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_tombstones_users_gone_from_clerk_and_removes_their_sessions() {
    let (clerk, table, admin) = in_sync().await;
    clerk.delete_user(&user_id(2));
    clerk.delete_user(&user_id(5));
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");

    let items = table.items().await;
    for i in 0..10 {
        let pk = format!("USER#{}", user_id(i));
        let user = &items[&(pk.clone(), "USER".to_owned())];
        let session = items.get(&(pk, format!("SESSION#sess_{i}")));
        if i == 2 || i == 5 {
            assert!(is_tombstone(user), "{user}");
            assert!(session.is_none(), "the session of deleted user {i} is still there");
        } else {
            assert!(user.get("deleted").is_none() && user["email"].is_string(), "{user}");
            assert!(session.is_some());
        }
    }
    assert_eq!(run.figure("deleted_in_clerk:", "found"), 2, "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "tombstoned"), 2, "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "sessions_removed"), 2, "{run}");
    assert_eq!(clerk.requests_to(&format!("/users/{}", user_id(2))), 1, "each candidate is confirmed by id");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_leaves_users_that_clerk_still_has() {
    let (clerk, table, admin) = in_sync().await;
    // Missing from the list (say, created while it was read) but found by id.
    clerk.unlist_user(&user_id(4));
    let before = table.items().await;
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("still_in_clerk", "still_in_clerk"), 1, "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "found"), 0, "{run}");
    assert_eq!(table.items().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_refuses_above_max_deletions_and_writes_nothing() {
    let (clerk, table, admin) = in_sync().await;
    for i in [1, 3, 5, 7] {
        clerk.delete_user(&user_id(i));
    }
    // Drift it would otherwise write too: a user the table lacks.
    clerk.put_user(user(10, 1_700_000_010_500));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--max-deletions=3", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.stderr.contains("refusing to tombstone 4 users: more than --max-deletions 3"), "{run}");
    assert!(run.stdout.starts_with("reconcile refused: nothing written"), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(clerk.received().iter().filter(|r| r.path.starts_with("/users/user_")).count(), 0);

    let allowed = admin.run(&["reconcile", "--max-deletions=4", FAST]).await;
    assert_eq!(allowed.code, Some(0), "{allowed}");
    assert_eq!(allowed.figure("deleted_in_clerk:", "tombstoned"), 4, "{allowed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_writes_users_missing_or_outdated_in_the_table() {
    let (clerk, table, admin) = in_sync().await;
    clerk.put_user(user(3, 1_800_000_000_000));
    clerk.put_user(user(10, 1_700_000_010_500));
    clerk.put_user(user(11, 1_700_000_011_500));
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!((run.figure("missing:", "found"), run.figure("missing:", "applied")), (2, 2), "{run}");
    assert_eq!((run.figure("outdated:", "found"), run.figure("outdated:", "applied")), (1, 1), "{run}");
    let stored = user_items(&table).await;
    assert_eq!(stored.len(), 12);
    assert_eq!(stored[&user_id(3)]["version"], json!(1_800_000_000_000_i64));
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_dry_run_reports_the_drift_and_writes_nothing() {
    let (clerk, table, admin) = in_sync().await;
    clerk.delete_user(&user_id(0));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--dry-run", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("reconcile dry run complete: nothing written"), "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "found"), 1, "{run}");
    assert_eq!(table.items().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_that_is_not_clerks_tombstones_nothing() {
    let (clerk, table, admin) = in_sync().await;
    clerk.delete_user(&user_id(6));
    // A proxy's or a wrong path's 404, without Clerk's resource_not_found.
    clerk.fail(Target::UserById, Fault::Answer(404, "<html>not found</html>".into()), None);
    let before = table.items().await;
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    assert!(run.stderr.contains(&format!("Clerk answered 404 Not Found to GET /users/{}", user_id(6))), "{run}");
    assert_eq!(table.items().await, before);
}
