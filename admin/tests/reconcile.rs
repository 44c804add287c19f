//! `clerk-sync-admin reconcile`, the real binary, against a fake Clerk Backend API over real HTTP
//! and the local DynamoDB API.

#[path = "../../tests/common/mod.rs"]
mod common;
mod support;

use common::TestTable;
use serde_json::{Value, json};
use support::{Admin, FakeClerk, Fault, Target, membership, organization, session, user, user_id, user_items, users};

const FAST: &str = "--rate=100000";

/// Ten users, each with one session, in Clerk and (through a backfill) in the table.
async fn in_sync() -> (FakeClerk, TestTable, Admin) {
    let sessions: Vec<Value> =
        (0..10).map(|i| session(&format!("sess_{i}"), &user_id(i), "active", 1_700_000_300_000)).collect();
    let clerk = FakeClerk::start(users(10), sessions).await;
    let table = support::mirrored_table().await;
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
    clerk.unlist(&user_id(4));
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
    let run = admin.run(&["reconcile", "--max-deletions=3", "--max-deletion-share=1", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.stderr.contains("refusing to tombstone 4 users: more than --max-deletions 3"), "{run}");
    assert!(run.stdout.starts_with("reconcile refused: nothing written"), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(clerk.received().iter().filter(|r| r.path.starts_with("/users/user_")).count(), 0);

    let allowed = admin.run(&["reconcile", "--max-deletions=4", "--max-deletion-share=1", FAST]).await;
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

// Organizations and memberships (`--organizations`).

fn organization_id(i: usize) -> String {
    format!("org_{i}fake")
}

fn membership_id(i: usize) -> String {
    format!("orgmem_{i}fake")
}

/// User `i`'s membership of organization `i % 3`, with its own id.
fn member(id: usize, i: usize, updated_at: i64) -> Value {
    membership(&membership_id(id), &organization_id(i % 3), &user_id(i), updated_at)
}

/// Six users, three organizations and six memberships (user `i` in organization `i % 3`), in
/// Clerk and (through a backfill) in the table.
async fn organizations_in_sync() -> (FakeClerk, TestTable, Admin) {
    let clerk = FakeClerk::start(users(6), vec![]).await;
    let organizations = (0..3).map(|i| organization(&organization_id(i), 1_700_000_400_000 + i as i64)).collect();
    let memberships = (0..6).map(|i| member(i, i, 1_700_000_500_000 + i as i64)).collect();
    clerk.set_organizations(organizations, memberships);
    let table = support::mirrored_table().await;
    let admin = Admin::new(&clerk, &table);
    let backfill = admin.run(&["backfill", "--organizations", FAST]).await;
    assert_eq!(backfill.code, Some(0), "{backfill}");
    assert_eq!(table.items().await.len(), 6 + 3 + 6 * 2);
    (clerk, table, admin)
}

/// Both items of user `i`'s membership of organization `i % 3`: under the organization, under the user.
async fn membership_items(table: &TestTable, i: usize) -> [Option<Value>; 2] {
    let (organization, user) = (organization_id(i % 3), user_id(i));
    [
        table.item(&format!("ORG#{organization}"), &format!("MEMBER#{user}")).await,
        table.item(&format!("USER#{user}"), &format!("ORG#{organization}")).await,
    ]
}

async fn organization_item(table: &TestTable, i: usize) -> Value {
    table.item(&format!("ORG#{}", organization_id(i)), "ORG").await.expect("the organization item")
}

fn requests_under(clerk: &FakeClerk, prefix: &str) -> usize {
    clerk.received().iter().filter(|r| r.path.starts_with(prefix)).count()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_organization_deleted_in_clerk_is_tombstoned_and_its_memberships_removed() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_organization(&organization_id(1));
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");

    let tombstone = organization_item(&table, 1).await;
    assert!(is_tombstone(&tombstone), "{tombstone}");
    for i in [1, 4] {
        assert_eq!(membership_items(&table, i).await, [None, None], "membership {i} of the deleted organization");
    }
    for i in [0, 2, 3, 5] {
        let [under_organization, under_user] = membership_items(&table, i).await;
        assert!(under_organization.unwrap().get("deleted").is_none() && under_user.unwrap().get("deleted").is_none());
        assert!(organization_item(&table, i % 3).await.get("deleted").is_none());
    }
    assert_eq!(run.figure("organizations deleted_in_clerk:", "found"), 1, "{run}");
    assert_eq!(run.figure("organizations deleted_in_clerk:", "tombstoned"), 1, "{run}");
    assert_eq!(run.figure("organizations deleted_in_clerk:", "memberships_removed"), 2, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 0, "its tombstone removes them: {run}");
    assert_eq!(clerk.requests_to(&format!("/organizations/{}", organization_id(1))), 1, "confirmed by id");
    assert_eq!(requests_under(&clerk, &format!("/organizations/{}/", organization_id(1))), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_membership_gone_from_clerk_is_tombstoned_on_both_items_and_the_organization_stays() {
    let (clerk, table, admin) = organizations_in_sync().await;
    let before = membership_items(&table, 4).await[0].clone().unwrap();
    clerk.delete_membership(&membership_id(4));
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");

    for item in membership_items(&table, 4).await {
        let item = item.expect("both items stay, as tombstones");
        let mut attributes: Vec<&str> = item.as_object().unwrap().keys().map(String::as_str).collect();
        attributes.sort();
        assert_eq!(attributes, ["created_at", "deleted", "id", "organization_id", "pk", "sk", "user_id", "version"]);
        assert_eq!(item["deleted"], json!(true));
        assert_eq!((&item["id"], &item["created_at"]), (&before["id"], &before["created_at"]));
        assert_eq!((&item["organization_id"], &item["user_id"]), (&json!(organization_id(1)), &json!(user_id(4))));
    }
    assert!(organization_item(&table, 1).await.get("deleted").is_none());
    let [other, _] = membership_items(&table, 1).await;
    assert!(other.unwrap().get("deleted").is_none(), "the organization's other member stays");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 1, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "tombstoned"), 1, "{run}");
    let confirmed: Vec<_> = clerk
        .received()
        .into_iter()
        .filter(|r| r.path == format!("/organizations/{}/memberships", organization_id(1)))
        .collect();
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(confirmed[0].query.get("user_id"), Some(&user_id(4)));
}

#[tokio::test(flavor = "multi_thread")]
async fn organizations_and_memberships_missing_from_the_table_are_written() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.put_organization(organization(&organization_id(3), 1_700_000_600_000));
    clerk.put_membership(membership(&membership_id(6), &organization_id(3), &user_id(0), 1_700_000_600_100));
    // User 0 joins a second organization.
    clerk.put_membership(membership(&membership_id(7), &organization_id(1), &user_id(0), 1_700_000_600_200));
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("organizations missing:", "found"), 1, "{run}");
    assert_eq!(run.figure("organizations missing:", "applied"), 1, "{run}");
    assert_eq!(run.figure("memberships missing:", "found"), 2, "{run}");
    assert_eq!(run.figure("memberships missing:", "applied"), 2, "{run}");
    assert!(organization_item(&table, 3).await.get("deleted").is_none());
    for (organization, id) in [(3, 6), (1, 7)] {
        let (organization, user) = (organization_id(organization), user_id(0));
        let under_organization = table.item(&format!("ORG#{organization}"), &format!("MEMBER#{user}")).await;
        let under_user = table.item(&format!("USER#{user}"), &format!("ORG#{organization}")).await;
        assert_eq!(under_organization.unwrap()["id"], json!(membership_id(id)));
        assert_eq!(under_user.unwrap()["id"], json!(membership_id(id)));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn outdated_organizations_and_replaced_memberships_are_written() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.put_organization(organization(&organization_id(0), 1_800_000_000_000));
    // User 3's membership updated; user 1 left organization 1 and joined again (a new membership).
    clerk.put_membership(member(3, 3, 1_800_000_000_100));
    clerk.put_membership(member(10, 1, 1_800_000_000_200));
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("organizations outdated:", "applied"), 1, "{run}");
    assert_eq!(run.figure("memberships outdated:", "found"), 2, "{run}");
    assert_eq!(run.figure("memberships outdated:", "applied"), 2, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 0, "{run}");
    assert_eq!(organization_item(&table, 0).await["version"], json!(1_800_000_000_000_i64));
    for item in membership_items(&table, 3).await {
        assert_eq!(item.unwrap()["version"], json!(1_800_000_000_100_i64));
    }
    for item in membership_items(&table, 1).await {
        let item = item.unwrap();
        assert_eq!((&item["id"], item.get("deleted")), (&json!(membership_id(10)), None), "{item}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_organization_still_found_by_id_is_left_alone_with_its_memberships() {
    let (clerk, table, admin) = organizations_in_sync().await;
    // Created while the lists were read, say: missing from them, found by id.
    for id in [organization_id(2), membership_id(2), membership_id(5)] {
        clerk.unlist(&id);
    }
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(run.figure("organizations still_in_clerk", "still_in_clerk"), 1, "{run}");
    assert_eq!(run.figure("memberships still_in_clerk", "still_in_clerk"), 2, "{run}");
    assert_eq!(run.figure("organizations deleted_in_clerk:", "found"), 0, "{run}");
    assert_eq!(clerk.requests_to(&format!("/organizations/{}/memberships", organization_id(2))), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_membership_still_found_by_its_organization_is_left_alone() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.unlist(&membership_id(0));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(run.figure("memberships still_in_clerk", "still_in_clerk"), 1, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 0, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn memberships_of_a_user_deleted_in_clerk_go_with_the_user() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_user(&user_id(4));
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(is_tombstone(&user_items(&table).await[&user_id(4)]));
    assert_eq!(membership_items(&table, 4).await, [None, None]);
    assert_eq!(run.figure("deleted_in_clerk:", "memberships_removed"), 1, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 0, "the user's tombstone removes it: {run}");
    assert_eq!(requests_under(&clerk, "/organizations/"), 0, "{:?}", clerk.received());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deletion_guard_counts_organizations_and_memberships() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_user(&user_id(5)); // its membership goes with it, and is not counted apart
    clerk.delete_organization(&organization_id(0)); // so do its memberships
    clerk.delete_membership(&membership_id(4));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", "--max-deletions=2", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    let refusal = "refusing to tombstone 1 user, 1 organization and 1 membership (3 in all): more than \
                   --max-deletions 2";
    assert!(run.stderr.contains(refusal), "{run}");
    assert!(run.stdout.starts_with("reconcile refused: nothing written"), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(requests_under(&clerk, "/users/user_") + requests_under(&clerk, "/organizations/"), 0);

    let allowed = admin.run(&["reconcile", "--organizations", "--max-deletions=3", FAST]).await;
    assert_eq!(allowed.code, Some(0), "{allowed}");
    assert_eq!(allowed.figure("deleted_in_clerk:", "tombstoned"), 1, "{allowed}");
    assert_eq!(allowed.figure("organizations deleted_in_clerk:", "tombstoned"), 1, "{allowed}");
    assert_eq!(allowed.figure("memberships deleted_in_clerk:", "tombstoned"), 1, "{allowed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_deletion_guard_counts_memberships_confirmed_after_their_organization() {
    let (clerk, table, admin) = organizations_in_sync().await;
    // The organization is missing from the list but found by id; both its memberships are gone.
    clerk.unlist(&organization_id(2));
    clerk.delete_membership(&membership_id(2));
    clerk.delete_membership(&membership_id(5));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", "--max-deletions=1", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(
        run.stderr.contains("refusing to tombstone 0 users, 0 organizations and 2 memberships (2 in all)"),
        "{run}"
    );
    assert_eq!(table.items().await, before);

    let allowed = admin.run(&["reconcile", "--organizations", "--max-deletions=2", FAST]).await;
    assert_eq!(allowed.code, Some(0), "{allowed}");
    assert_eq!(allowed.figure("memberships deleted_in_clerk:", "tombstoned"), 2, "{allowed}");
    assert!(organization_item(&table, 2).await.get("deleted").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_organizations_flag_organizations_and_memberships_are_left_alone() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_organization(&organization_id(0));
    clerk.delete_membership(&membership_id(4));
    clerk.put_organization(organization(&organization_id(3), 1_700_000_600_000));
    let before = table.items().await;
    let backfill_requests = clerk.received().len();
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(table.items().await, before);
    let requests = clerk.received().split_off(backfill_requests);
    assert!(requests.iter().all(|r| r.path.starts_with("/users") || r.path == "/jwks"), "{requests:?}");
    assert!(!run.stdout.contains("organizations") && !run.stdout.contains("memberships "), "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_with_organizations_reports_their_drift_and_writes_nothing() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_organization(&organization_id(0));
    clerk.delete_membership(&membership_id(4));
    clerk.put_organization(organization(&organization_id(3), 1_700_000_600_000));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", "--dry-run", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert!(run.stdout.starts_with("reconcile dry run complete: nothing written"), "{run}");
    assert_eq!(table.items().await, before);
    assert_eq!(run.figure("organizations missing:", "found"), 1, "{run}");
    assert_eq!(run.figure("organizations deleted_in_clerk:", "found"), 1, "{run}");
    assert_eq!(run.figure("memberships deleted_in_clerk:", "found"), 1, "{run}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_that_is_not_clerks_tombstones_no_organization() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_organization(&organization_id(1));
    clerk.fail(Target::OrganizationById, Fault::Answer(404, "<html>not found</html>".into()), None);
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let refused = format!("Clerk answered 404 Not Found to GET /organizations/{}", organization_id(1));
    assert!(run.stderr.contains(&refused), "{run}");
    assert_eq!(table.items().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_404_that_is_not_clerks_tombstones_no_membership() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_membership(&membership_id(4));
    clerk.fail(Target::MembershipsOfOrganization, Fault::Answer(404, "<html>not found</html>".into()), None);
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(run.code, Some(1), "{run}");
    let refused = format!("Clerk answered 404 Not Found to GET /organizations/{}/memberships", organization_id(1));
    assert!(run.stderr.contains(&refused), "{run}");
    assert_eq!(table.items().await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_who_left_and_joined_again_gets_the_new_membership_over_the_tombstone() {
    let (clerk, table, admin) = organizations_in_sync().await;
    clerk.delete_membership(&membership_id(4));
    let left = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(left.figure("memberships deleted_in_clerk:", "tombstoned"), 1, "{left}");
    // The same user joins the same organization again: a new membership, created later.
    clerk.put_membership(member(11, 4, 1_700_000_700_000));
    let joined = admin.run(&["reconcile", "--organizations", FAST]).await;
    assert_eq!(joined.code, Some(0), "{joined}");
    assert_eq!(joined.figure("memberships outdated:", "applied"), 1, "{joined}");
    for item in membership_items(&table, 4).await {
        let item = item.unwrap();
        assert_eq!((&item["id"], item.get("deleted")), (&json!(membership_id(11)), None), "{item}");
    }
}

/// Puts an item straight into the table (what an interrupted removal, or a session whose user
/// item never arrived, leaves behind).
async fn put(table: &TestTable, item: Value) {
    let item = serde_dynamo::aws_sdk_dynamodb_1::to_item(item).unwrap();
    table.client.put_item().table_name(&table.name).set_item(Some(item)).send().await.unwrap();
}

/// Sessions and memberships an earlier deletion left under a tombstone, and a membership item
/// whose other item is already gone under one, are removed; the counts say so; a second run
/// finds nothing left to do.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_finishes_removals_left_under_tombstones() {
    let (_clerk, table, admin) = in_sync().await;
    let gone = user_id(3);
    put(&table, json!({"pk": format!("USER#{gone}"), "sk": "USER", "id": gone, "deleted": true, "version": 1_700_000_400_000_i64})).await;
    for (pk, sk) in [
        (format!("USER#{gone}"), "ORG#org_a".to_owned()),
        ("ORG#org_a".to_owned(), format!("MEMBER#{gone}")),
        ("ORG#org_b".to_owned(), format!("MEMBER#{gone}")),
    ] {
        put(&table, json!({"pk": pk, "sk": sk, "id": "orgmem_x", "organization_id": "org_a", "user_id": gone, "created_at": 1, "version": 1})).await;
    }
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let repair = |name| run.figure("repair:", name);
    assert_eq!((repair("tombstones"), repair("orphans")), (1, 1), "{run}");
    assert_eq!(
        (repair("sessions_removed"), repair("memberships_removed"), repair("orphans_removed")),
        (1, 1, 1),
        "{run}"
    );
    let left: Vec<_> =
        table.items().await.into_keys().filter(|(pk, sk)| pk.contains(&gone) || sk.contains(&gone)).collect();
    assert_eq!(left, [(format!("USER#{gone}"), "USER".to_owned())]);

    let again = admin.run(&["reconcile", FAST]).await;
    assert_eq!((again.figure("repair:", "tombstones"), again.figure("repair:", "orphans")), (0, 0), "{again}");
}

/// A session whose user item never arrived: Clerk confirms the user gone, so the user is
/// tombstoned and the session removed; had Clerk the user, it would simply be written.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_finds_sessions_of_users_whose_item_never_arrived() {
    let (clerk, table, admin) = in_sync().await;
    let never = "user_neverArrived";
    put(&table, json!({"pk": format!("USER#{never}"), "sk": "SESSION#sess_never", "id": "sess_never", "user_id": never, "status": "active", "version": 1})).await;
    let listed = user_id(4);
    table
        .client
        .delete_item()
        .table_name(&table.name)
        .key("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("USER#{listed}")))
        .key("sk", aws_sdk_dynamodb::types::AttributeValue::S("USER".into()))
        .send()
        .await
        .unwrap();
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "tombstoned"), 1, "{run}");
    assert_eq!(run.figure("deleted_in_clerk:", "sessions_removed"), 1, "{run}");
    assert_eq!(run.figure("missing:", "applied"), 1, "the user Clerk has is written: {run}");
    assert_eq!(clerk.requests_to(&format!("/users/{never}")), 1);
    let items = table.items().await;
    assert_eq!(items.get(&(format!("USER#{never}"), "SESSION#sess_never".to_owned())), None);
    assert_eq!(items[&(format!("USER#{never}"), "USER".to_owned())]["deleted"], json!(true));
    assert!(items[&(format!("USER#{listed}"), "USER".to_owned())]["email"].is_string());
}

/// Beside the count, tombstones are capped as a share of the live users (default 25%): a key of
/// a development instance pointed at a small production table would find none of its users.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_refuses_to_tombstone_a_larger_share_of_users_than_allowed() {
    let (clerk, table, admin) = in_sync().await;
    for i in [1, 3, 5] {
        clerk.delete_user(&user_id(i));
    }
    let before = table.items().await;
    let run = admin.run(&["reconcile", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.stderr.contains("refusing to tombstone 3 of the table's 10 live users"), "{run}");
    assert_eq!(table.items().await, before);
    let allowed = admin.run(&["reconcile", "--max-deletion-share=0.3", FAST]).await;
    assert_eq!((allowed.code, allowed.figure("deleted_in_clerk:", "tombstoned")), (Some(0), 3), "{allowed}");
}

/// The table records the Clerk instance its webhooks come from; a secret key of another instance
/// is refused before anything is written, by backfill and reconcile alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_secret_key_of_another_clerk_instance_is_refused_before_any_write() {
    let (clerk, table, admin) = in_sync().await;
    put(&table, json!({"pk": "META", "sk": "INSTANCE", "instance_id": "ins_production", "store_clerk_data": true}))
        .await;
    clerk.delete_user(&user_id(1));
    clerk.put_user(user(10, 1_700_000_010_500));
    let before = table.items().await;
    for args in [["reconcile", FAST], ["backfill", FAST]] {
        let run = admin.run(&args).await;
        assert_eq!(run.code, Some(3), "{run}");
        assert!(
            run.stderr
                .contains("CLERK_SECRET_KEY belongs to Clerk instance ins_123, but the table mirrors ins_production"),
            "{run}"
        );
        assert_eq!(table.items().await, before);
    }
}

/// The tool writes items as the deployed function does (here without `data`) without being
/// told, and refuses to be told otherwise. Where the table records nothing yet (no webhook has
/// reached the function), it records nothing itself and must be told.
#[tokio::test(flavor = "multi_thread")]
async fn the_tool_follows_the_functions_data_setting() {
    let clerk = FakeClerk::start(users(2), vec![]).await;
    let table = TestTable::create().await;
    let admin = Admin::new(&clerk, &table);
    put(&table, json!({"pk": "META", "sk": "INSTANCE", "instance_id": "ins_123", "store_clerk_data": false})).await;
    let refused = admin.run(&["backfill", "--store-clerk-data=true", FAST]).await;
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(refused.stderr.contains("the deployed function stores data=false"), "{refused}");
    assert!(table.items().await.is_empty());

    let run = admin.run(&["backfill", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    let items = user_items(&table).await;
    assert_eq!(items.len(), 2);
    assert!(items.values().all(|item| item.get("data").is_none()), "{items:?}");

    let fresh = TestTable::create().await;
    let admin = Admin::new(&clerk, &fresh);
    let refused = admin.run(&["backfill", FAST]).await;
    assert_eq!(refused.code, Some(2), "{refused}");
    assert!(refused.stderr.contains("pass --store-clerk-data"), "{refused}");
    let run = admin.run(&["backfill", "--store-clerk-data=false", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    assert_eq!(fresh.item("META", "INSTANCE").await, None, "only the function records the instance");
}

/// On a table that records no Clerk instance yet, nothing can be checked: reconcile tombstones
/// nothing (a key of another instance would find none of the table's users in Clerk).
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_tombstones_nothing_on_a_table_that_records_no_instance() {
    let clerk = FakeClerk::start(users(10), vec![]).await;
    let table = TestTable::create().await;
    let admin = Admin::new(&clerk, &table);
    let run = admin.run(&["backfill", "--store-clerk-data=true", FAST]).await;
    assert_eq!(run.code, Some(0), "{run}");
    clerk.delete_user(&user_id(2));
    let before = table.items().await;
    let run = admin.run(&["reconcile", "--store-clerk-data=true", FAST]).await;
    assert_eq!(run.code, Some(3), "{run}");
    assert!(run.stderr.contains("records no Clerk instance yet"), "{run}");
    assert_eq!(table.items().await, before);
}
