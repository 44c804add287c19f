//! Organizations and memberships end to end through the handler, on a real DynamoDB API: the
//! data model in README.md ("Organizations and memberships") and the rules that keep it
//! converging whatever the order ("Who wins").

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use common::clerk;
use common::*;
use serde_json::{Value, json};

const ORG: &str = "org_29w9IfBrPmcpi0IeBVaKtA7R94W";
const ORG_PK: &str = "ORG#org_29w9IfBrPmcpi0IeBVaKtA7R94W";
const USER: &str = "user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const USER_PK: &str = "USER#user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const MEMBER_SK: &str = "MEMBER#user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const USER_ORG_SK: &str = "ORG#org_29w9IfBrPmcpi0IeBVaKtA7R94W";
const MEMBERSHIP: &str = "orgmem_29w9IptNja3mP8GDXpquBwN2qR9";
const DELETED_AT: i64 = 1_795_537_800_041;

async fn deliver(table: &TestTable, body: &str) -> (u16, Value) {
    let id = format!(
        "msg_{:x}",
        body.bytes().fold(0xcbf29ce484222325_u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3))
    );
    answer(&table.app().handle(delivery(body, &id)).await)
}

fn membership(event_type: &str, id: &str, role: &str, created_at: i64, updated_at: i64) -> String {
    clerk::membership(event_type, id, ORG, USER, role, created_at, updated_at)
}

/// The sort keys of one partition, in order (a strongly consistent Query).
async fn partition(table: &TestTable, pk: &str, sk_prefix: &str) -> Vec<Value> {
    let found = table
        .client
        .query()
        .table_name(&table.name)
        .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
        .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
        .expression_attribute_values(":prefix", AttributeValue::S(sk_prefix.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap();
    found.items().iter().map(|item| serde_dynamo::aws_sdk_dynamodb_1::from_item(item.clone()).unwrap()).collect()
}

#[tokio::test]
async fn organization_created_writes_the_organization_item() {
    let table = TestTable::create().await;
    let (status, body) = deliver(&table, &clerk::organization("organization.created", ORG, 2000, "Acme")).await;
    assert_eq!((status, body), (200, json!({"outcome": "applied", "type": "organization.created", "id": ORG})));
    let item = table.item(ORG_PK, "ORG").await.expect("organization item");
    assert_eq!(item["id"], ORG);
    assert_eq!(item["name"], "Acme");
    assert_eq!(item["slug"], "acme");
    assert_eq!(item["image_url"], "https://img.clerk.com/org");
    assert_eq!(item["created_at"], 1654013202977_i64);
    assert_eq!((item["updated_at"].as_i64(), item["version"].as_i64()), (Some(2000), Some(2000)));
    assert_eq!(item["public_metadata"], json!({"tier": "Acme"}));
    assert_eq!(data_of(&item)["max_allowed_memberships"], 5, "the whole Clerk object is kept");
}

#[tokio::test]
async fn newer_organization_update_wins_and_older_one_is_stale() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::organization("organization.updated", ORG, 3000, "Newer")).await;
    let (_, older) = deliver(&table, &clerk::organization("organization.created", ORG, 2000, "Older")).await;
    assert_eq!(older["outcome"], "stale");
    assert_eq!(table.item(ORG_PK, "ORG").await.unwrap()["name"], "Newer");
}

#[tokio::test]
async fn membership_is_written_under_the_organization_and_under_the_user() {
    let table = TestTable::create().await;
    let (status, body) =
        deliver(&table, &membership("organizationMembership.created", MEMBERSHIP, "org:admin", 5000, 5000)).await;
    assert_eq!(
        (status, body),
        (200, json!({"outcome": "applied", "type": "organizationMembership.created", "id": MEMBERSHIP}))
    );
    let member = table.item(ORG_PK, MEMBER_SK).await.expect("membership under the organization");
    assert_eq!(member["id"], MEMBERSHIP);
    assert_eq!((member["organization_id"].as_str(), member["user_id"].as_str()), (Some(ORG), Some(USER)));
    assert_eq!(member["role"], "org:admin");
    assert_eq!((member["created_at"].as_i64(), member["updated_at"].as_i64()), (Some(5000), Some(5000)));
    assert_eq!(member["public_metadata"], json!({"team": "org:admin"}));
    assert_eq!(member["version"], 5000);
    assert_eq!(data_of(&member)["permissions"], json!(["org:sys_memberships:read"]));
    assert_eq!(data_of(&member).get("organization"), None, "the organization lives in its own item");
    assert_eq!(data_of(&member).get("public_user_data"), None, "no copy of the user's name and email");
    assert_eq!(member.get("deleted"), None);

    let mirror = table.item(USER_PK, USER_ORG_SK).await.expect("membership under the user");
    let mut expected = member.clone();
    expected["pk"] = json!(USER_PK);
    expected["sk"] = json!(USER_ORG_SK);
    expected.as_object_mut().unwrap().remove("data");
    assert_eq!(mirror, expected);
}

#[tokio::test]
async fn one_query_lists_a_users_organizations_and_one_lists_an_organizations_members() {
    let table = TestTable::create().await;
    for (org, user, id) in [(ORG, USER, "orgmem_1"), ("org_2", USER, "orgmem_2"), (ORG, "user_other", "orgmem_3")] {
        deliver(&table, &clerk::membership("organizationMembership.created", id, org, user, "org:member", 10, 10))
            .await;
    }
    let of_user: Vec<String> = partition(&table, USER_PK, "ORG#")
        .await
        .iter()
        .map(|m| m["organization_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(of_user, ["org_2", ORG]);
    let members: Vec<String> =
        partition(&table, ORG_PK, "MEMBER#").await.iter().map(|m| m["user_id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(members, [USER, "user_other"]);
}

#[tokio::test]
async fn membership_update_follows_versions() {
    let table = TestTable::create().await;
    deliver(&table, &membership("organizationMembership.created", MEMBERSHIP, "org:member", 5000, 5000)).await;
    let (_, newer) =
        deliver(&table, &membership("organizationMembership.updated", MEMBERSHIP, "org:admin", 5000, 7000)).await;
    let (_, older) =
        deliver(&table, &membership("organizationMembership.updated", MEMBERSHIP, "org:billing", 5000, 6000)).await;
    assert_eq!((newer["outcome"].as_str(), older["outcome"].as_str()), (Some("applied"), Some("stale")));
    assert_eq!(table.item(ORG_PK, MEMBER_SK).await.unwrap()["role"], "org:admin");
    assert_eq!(table.item(USER_PK, USER_ORG_SK).await.unwrap()["role"], "org:admin");
}

#[tokio::test]
async fn membership_deletion_leaves_tombstones_that_no_late_update_revives() {
    let table = TestTable::create().await;
    deliver(&table, &membership("organizationMembership.created", MEMBERSHIP, "org:member", 5000, 5000)).await;
    let (_, deleted) =
        deliver(&table, &membership("organizationMembership.deleted", MEMBERSHIP, "org:member", 5000, 5000)).await;
    assert_eq!(deleted["outcome"], "applied");
    // An update made before the deletion, delivered after it, with a higher version.
    let (_, late) =
        deliver(&table, &membership("organizationMembership.updated", MEMBERSHIP, "org:admin", 5000, 9000)).await;
    assert_eq!(late["outcome"], "stale");
    let tombstone = json!({
        "pk": ORG_PK, "sk": MEMBER_SK, "id": MEMBERSHIP, "organization_id": ORG, "user_id": USER,
        "deleted": true, "created_at": 5000, "version": 5000
    });
    assert_eq!(table.item(ORG_PK, MEMBER_SK).await.unwrap(), tombstone);
    let mut mirror = tombstone.clone();
    mirror["pk"] = json!(USER_PK);
    mirror["sk"] = json!(USER_ORG_SK);
    assert_eq!(table.item(USER_PK, USER_ORG_SK).await.unwrap(), mirror);
}

#[tokio::test]
async fn joining_again_replaces_the_earlier_membership_whatever_arrives_late() {
    let table = TestTable::create().await;
    deliver(&table, &membership("organizationMembership.created", "orgmem_second", "org:admin", 8000, 8000)).await;
    for body in [
        membership("organizationMembership.created", MEMBERSHIP, "org:member", 5000, 5000),
        membership("organizationMembership.updated", MEMBERSHIP, "org:member", 5000, 9500),
        membership("organizationMembership.deleted", MEMBERSHIP, "org:member", 5000, 9500),
    ] {
        let (status, answer) = deliver(&table, &body).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("stale")), "{answer}");
    }
    let member = table.item(ORG_PK, MEMBER_SK).await.unwrap();
    assert_eq!((member["id"].as_str(), member["role"].as_str()), (Some("orgmem_second"), Some("org:admin")));
    assert_eq!(member.get("deleted"), None);
}

#[tokio::test]
async fn organization_deleted_leaves_a_tombstone_and_removes_every_membership_on_both_sides() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::organization("organization.created", ORG, 2000, "Acme")).await;
    deliver(&table, &membership("organizationMembership.created", MEMBERSHIP, "org:admin", 5000, 5000)).await;
    deliver(
        &table,
        &clerk::membership("organizationMembership.created", "orgmem_2", ORG, "user_other", "org:member", 6000, 6000),
    )
    .await;
    deliver(
        &table,
        &clerk::membership("organizationMembership.deleted", "orgmem_3", ORG, "user_third", "org:member", 6500, 6500),
    )
    .await;
    deliver(
        &table,
        &clerk::membership(
            "organizationMembership.created",
            "orgmem_4",
            "org_elsewhere",
            USER,
            "org:member",
            7000,
            7000,
        ),
    )
    .await;

    let (status, body) = deliver(&table, &clerk::organization_deleted(ORG, DELETED_AT)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"outcome": "applied", "type": "organization.deleted", "id": ORG, "memberships_removed": 3, "removal": "complete"})
    );
    let keys: Vec<(String, String)> = table.items().await.into_keys().collect();
    let expected = [(ORG_PK, "ORG"), ("ORG#org_elsewhere", MEMBER_SK), (USER_PK, "ORG#org_elsewhere")]
        .map(|(pk, sk)| (pk.to_owned(), sk.to_owned()));
    assert_eq!(keys, expected, "only the tombstone and the other organization's membership are left");
    assert_eq!(
        table.item(ORG_PK, "ORG").await.unwrap(),
        json!({"pk": ORG_PK, "sk": "ORG", "id": ORG, "deleted": true, "version": DELETED_AT})
    );
}

#[tokio::test]
async fn nothing_delivered_after_organization_deletion_brings_it_or_its_members_back() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::organization_deleted(ORG, DELETED_AT)).await;
    let refused = [
        (clerk::organization("organization.updated", ORG, DELETED_AT + 10, "Acme"), "organization_deleted"),
        (membership("organizationMembership.created", MEMBERSHIP, "org:admin", 5000, 5000), "organization_deleted"),
        (membership("organizationMembership.deleted", MEMBERSHIP, "org:admin", 5000, 5000), "organization_deleted"),
    ];
    for (body, outcome) in refused {
        let (status, answer) = deliver(&table, &body).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some(outcome)), "{answer}");
    }
    assert_eq!(table.items().await.len(), 1);
}

#[tokio::test]
async fn user_deleted_removes_their_memberships_in_every_organization() {
    let table = TestTable::create().await;
    deliver(&table, &clerk::user("user.created", USER, 1000, "Ada")).await;
    deliver(&table, &membership("organizationMembership.created", MEMBERSHIP, "org:admin", 5000, 5000)).await;
    deliver(
        &table,
        &clerk::membership("organizationMembership.deleted", "orgmem_2", "org_2", USER, "org:member", 6000, 6000),
    )
    .await;
    deliver(
        &table,
        &clerk::membership("organizationMembership.created", "orgmem_3", ORG, "user_other", "org:member", 6000, 6000),
    )
    .await;
    deliver(&table, &clerk::session("session.created", "sess_1", USER, "active", 1100, None)).await;

    let (_, body) = deliver(&table, &clerk::user_deleted(USER, DELETED_AT)).await;
    assert_eq!(
        body,
        json!({"outcome": "applied", "type": "user.deleted", "id": USER, "sessions_removed": 1, "memberships_removed": 2, "removal": "complete"})
    );
    let keys: Vec<(String, String)> = table.items().await.into_keys().collect();
    let expected = [(ORG_PK, "MEMBER#user_other"), (USER_PK, "USER"), ("USER#user_other", USER_ORG_SK)]
        .map(|(pk, sk)| (pk.to_owned(), sk.to_owned()));
    assert_eq!(keys, expected);

    let (_, late) =
        deliver(&table, &membership("organizationMembership.updated", MEMBERSHIP, "org:admin", 5000, 9000)).await;
    assert_eq!(late["outcome"], "user_deleted");
    assert_eq!(table.items().await.len(), 3);
}

#[tokio::test]
async fn membership_without_created_at_is_400_and_writes_nothing() {
    let table = TestTable::create().await;
    let mut body: Value =
        serde_json::from_str(&membership("organizationMembership.created", MEMBERSHIP, "org:admin", 5, 5)).unwrap();
    body["data"].as_object_mut().unwrap().remove("created_at");
    let (status, answer) = deliver(&table, &body.to_string()).await;
    assert_eq!(status, 400);
    assert_eq!(
        answer["error"],
        "the organizationMembership.created event's data is not a valid organization membership: missing field `created_at`"
    );
    assert!(table.items().await.is_empty());
}
