//! Deletions that always finish. `user.deleted` and `organization.deleted` leave nothing of the
//! deleted object: no session, no membership on either side. Whatever interrupts a removal
//! (batches processed in part, the process cut at any request, the delivery's budget), no
//! membership item is left that the next attempt cannot find, and the next attempt (a redelivery,
//! or the cleanup function on the table's stream) finishes it. Sizes: a 20,000-member organization.

mod common;

use std::time::{Duration, Instant};

use aws_lambda_events::event::dynamodb::Event as StreamEvent;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use clerk_sync::cleanup;
use clerk_sync::handler::App;
use clerk_sync::store::Item;
use common::fault_proxy::Fault;
use common::*;
use serde_json::{Value, json};

const V: i64 = 1_795_000_000_000;

async fn deliver(app: &App, body: &str) -> (u16, Value) {
    answer(&app.handle(delivery(body, "msg_deletion")).await)
}

async fn ok(app: &App, body: &str) {
    let (status, answer) = deliver(app, body).await;
    assert_eq!(status, 200, "{answer}");
}

/// A user with `sessions` sessions and a membership in each of `organizations` organizations.
async fn user_with(table: &TestTable, user: &str, sessions: usize, organizations: usize) {
    let app = table.app();
    ok(&app, &clerk::user("user.created", user, V, "Ada")).await;
    for s in 0..sessions {
        ok(&app, &clerk::session("session.created", &format!("sess_{user}{s}"), user, "active", V, None)).await;
    }
    for o in 0..organizations {
        let organization = format!("org_{user}{o}");
        ok(&app, &clerk::organization("organization.created", &organization, V, "Acme")).await;
        let id = format!("orgmem_{user}{o}");
        let body = clerk::membership("organizationMembership.created", &id, &organization, user, "org:member", V, V);
        ok(&app, &body).await;
    }
}

/// Items that should be gone once `pk`'s removal is done: everything under it but its root, and
/// every membership item naming it from the other side.
async fn left_under(table: &TestTable, pk: &str) -> Vec<(String, String)> {
    let (kind, id) = pk.split_once('#').unwrap();
    let other_side = match kind {
        "USER" => format!("MEMBER#{id}"),
        _ => format!("ORG#{id}"),
    };
    let root = if kind == "USER" { "USER" } else { "ORG" };
    table.items().await.into_keys().filter(|(p, s)| (p == pk && s != root) || *s == other_side).collect()
}

/// Membership items whose item under the deleted `pk` is gone while they remain: orphans, which
/// no later attempt could find.
async fn orphans_of(table: &TestTable, pk: &str) -> Vec<(String, String)> {
    let keys: std::collections::BTreeSet<(String, String)> = table.items().await.into_keys().collect();
    let (kind, id) = pk.split_once('#').unwrap();
    keys.iter()
        .filter(|(p, s)| match kind {
            "USER" => s == &format!("MEMBER#{id}") && !keys.contains(&(pk.to_owned(), format!("ORG#{}", &p[4..]))),
            _ => s == &format!("ORG#{id}") && !keys.contains(&(pk.to_owned(), format!("MEMBER#{}", &p[5..]))),
        })
        .cloned()
        .collect()
}

/// The reported failure: DynamoDB processes only the deleted user's own items of each batch and
/// hands the other side back, until retries run out. The removal then stops before deleting an
/// item whose other side is still there, and a redelivery finishes it.
#[tokio::test]
async fn batches_processed_in_part_leave_no_orphan_and_redelivery_finishes() {
    for processed in ["USER#", "ORG#"] {
        let table = TestTable::create().await;
        let user = "user_partial";
        user_with(&table, user, 3, 30).await;
        let proxy = proxy().await;
        proxy.always(Fault::ProcessOnly(processed));
        let (status, answer) = deliver(&table.app_via(&proxy.endpoint()), &clerk::user_deleted(user, V + 1)).await;
        assert_eq!(status, 503, "{processed}: {answer}");
        assert_eq!(orphans_of(&table, &format!("USER#{user}")).await, Vec::<(String, String)>::new(), "{processed}");

        let (status, answer) = deliver(&table.app(), &clerk::user_deleted(user, V + 1)).await;
        assert_eq!((status, answer["removal"].as_str()), (200, Some("complete")), "{processed}: {answer}");
        assert_eq!(left_under(&table, &format!("USER#{user}")).await, Vec::<(String, String)>::new(), "{processed}");
    }
}

/// A user deletion cut after each number of requests in turn (every request after the cut
/// fails): at no cut is a membership item orphaned, and the next delivery finishes the removal.
#[tokio::test]
async fn a_deletion_cut_at_any_request_is_finished_by_the_next_delivery() {
    for cut in 0.. {
        let table = TestTable::create().await;
        let user = "user_cut";
        user_with(&table, user, 2, 4).await;
        let proxy = proxy().await;
        proxy.always(Fault::Drop);
        proxy.then(&vec![Fault::Pass; cut]);
        let app = table.app_with_store(table.store_via(&proxy.endpoint()).with_removal_page_size(2));
        let (status, first) = deliver(&app, &clerk::user_deleted(user, V + 1)).await;
        let pk = format!("USER#{user}");
        assert_eq!(orphans_of(&table, &pk).await, Vec::<(String, String)>::new(), "cut after {cut} requests");

        let (status_again, answer) = deliver(&table.app(), &clerk::user_deleted(user, V + 1)).await;
        assert_eq!((status_again, answer["removal"].as_str()), (200, Some("complete")), "cut {cut}: {answer}");
        assert_eq!(left_under(&table, &pk).await, Vec::<(String, String)>::new(), "cut after {cut} requests");
        table.delete().await;
        if status == 200 && first["removal"] == "complete" {
            assert!(cut > 5, "a whole deletion takes more than {cut} requests");
            break;
        }
    }
}

/// Rule 2 without a transaction: a session or membership written after its user's (or its
/// organization's) deletion is finished, cut after each number of requests in turn (every request
/// after the cut fails). A delivery that answers 200 has left nothing of it; one cut after its
/// write landed but before its read of the tombstone (or its deletes) fails, and the redelivery
/// Svix then makes removes what it left. The test checks that some cut did leave something, so
/// that the redelivery's part is really exercised.
#[tokio::test]
async fn a_write_under_a_deleted_parent_cut_at_any_request_leaves_nothing_once_delivered_again() {
    let membership = |id: &str, organization: &str, user: &str| {
        clerk::membership("organizationMembership.created", id, organization, user, "org:member", V + 2, V + 2)
    };
    let cases = [
        (
            "USER#user_gone",
            "user_deleted",
            clerk::session("session.created", "sess_late", "user_gone", "active", V + 2, None),
        ),
        ("USER#user_gone", "user_deleted", membership("orgmem_late", "org_live", "user_gone")),
        ("ORG#org_gone", "organization_deleted", membership("orgmem_late", "org_gone", "user_live")),
    ];
    for (pk, outcome, body) in cases {
        let mut left_by_a_cut = false;
        for cut in 0.. {
            let table = TestTable::create().await;
            let app = table.app();
            ok(&app, &clerk::user("user.created", "user_gone", V, "Ada")).await;
            ok(&app, &clerk::user("user.created", "user_live", V, "Grace")).await;
            ok(&app, &clerk::organization("organization.created", "org_live", V, "Acme")).await;
            ok(&app, &clerk::organization("organization.created", "org_gone", V, "Initech")).await;
            ok(&app, &clerk::user_deleted("user_gone", V + 1)).await;
            ok(&app, &clerk::organization_deleted("org_gone", V + 1)).await;
            let proxy = proxy().await;
            proxy.always(Fault::Drop);
            proxy.then(&vec![Fault::Pass; cut]);
            let (status, answer) = deliver(&table.app_via(&proxy.endpoint()), &body).await;
            let left = left_under(&table, pk).await;
            if status == 200 {
                assert_eq!(answer["outcome"], outcome, "{pk}, cut after {cut} requests: {answer}");
                assert_eq!(left, Vec::<(String, String)>::new(), "{pk}: answered 200, cut after {cut} requests");
            } else {
                assert_eq!(status, 503, "{pk}, cut after {cut} requests: {answer}");
                left_by_a_cut |= !left.is_empty();
            }
            let (again, answer) = deliver(&table.app(), &body).await;
            assert_eq!((again, &answer["outcome"]), (200, &json!(outcome)), "{pk}, cut after {cut}: {answer}");
            assert_eq!(left_under(&table, pk).await, Vec::<(String, String)>::new(), "{pk}, cut after {cut}");
            table.delete().await;
            if status == 200 {
                break;
            }
        }
        assert!(left_by_a_cut, "{pk}: no cut fell between the write and its read");
    }
}

/// The stream event Lambda hands the cleanup function (events/stream/organization-deleted.json),
/// its tombstone record pointed at `organization`.
fn stream_event(organization: &str) -> StreamEvent {
    let text = std::fs::read_to_string(repo_path("events/stream/organization-deleted.json")).unwrap();
    let text = text.replace("org_29w9IfBrPmcpi0IeBVaKtA7R94W", organization);
    serde_json::from_str(&text).expect("a DynamoDB stream event")
}

/// `organization.deleted` of an organization too large for one delivery: the tombstone is written
/// and answered 200 with `"removal": "continues"`, and the cleanup function, handed the stream
/// record, finishes it. Records that are not tombstones are ignored.
#[tokio::test]
async fn the_cleanup_function_finishes_what_the_delivery_left() {
    let table = TestTable::create().await;
    let organization = "org_big";
    let app = table.app();
    ok(&app, &clerk::organization("organization.created", organization, V, "Acme")).await;
    for m in 0..30 {
        let body = clerk::membership(
            "organizationMembership.created",
            &format!("orgmem_{m}"),
            organization,
            &format!("user_m{m}"),
            "org:member",
            V,
            V,
        );
        ok(&app, &body).await;
    }
    let budgetless = table.store().with_removal_page_size(5).with_removal_budget(Duration::ZERO);
    let (status, answer) =
        deliver(&table.app_with_store(budgetless), &clerk::organization_deleted(organization, V + 1)).await;
    assert_eq!((status, answer["removal"].as_str()), (200, Some("continues")), "{answer}");
    let pk = format!("ORG#{organization}");
    let removed = answer["memberships_removed"].as_u64().unwrap() as usize;
    assert_eq!(left_under(&table, &pk).await.len(), 2 * (30 - removed), "both items of each membership left");
    assert!(removed < 30);

    let store = table.store().with_removal_page_size(5);
    let response = cleanup::handle(&store, stream_event(organization), Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(left_under(&table, &pk).await, Vec::<(String, String)>::new());
    let tombstone = table.item(&pk, "ORG").await.unwrap();
    assert_eq!(tombstone["deleted"], json!(true));
}

/// Work the cleanup function cannot finish (DynamoDB throttling throughout) is reported as the
/// batch item failure of its record, so Lambda hands the stream back from it; no record after it
/// is acted on. The sample's first record is a session's write, whose check is throttled; without
/// it, the tombstone's removal is the one reported.
#[tokio::test]
async fn the_cleanup_function_reports_the_record_it_could_not_finish() {
    let table = TestTable::create().await;
    let proxy = proxy().await;
    proxy.always(Fault::Throttling);
    let store = table.store_via(&proxy.endpoint());
    let failed = |event| {
        let store = &store;
        async move {
            let response = cleanup::handle(store, event, Duration::from_secs(60)).await;
            response.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect::<Vec<_>>()
        }
    };
    assert_eq!(failed(stream_event("org_throttled")).await, [Some("4400000000012345678901".to_owned())]);
    let mut without_the_session = stream_event("org_throttled");
    without_the_session.records.remove(0);
    assert_eq!(failed(without_the_session).await, [Some("4400000000012345678902".to_owned())]);
    // Past its deadline it starts no record's work: the first is reported, with no request.
    let before = proxy.requests();
    let late =
        cleanup::handle(&store, stream_of_writes(&[("USER#u".into(), "SESSION#s".into())]), Duration::ZERO).await;
    let failed: Vec<_> = late.batch_item_failures.iter().map(|f| f.item_identifier.clone()).collect();
    assert_eq!((failed, proxy.requests() - before), (vec![Some("USER#u/SESSION#s".to_owned())], 0));
}

#[test]
fn user_and_organization_tombstones_and_written_sessions_and_memberships_are_the_cleanups_to_act_on() {
    let event = stream_event("org_1");
    let found: Vec<_> = event.records.iter().map(cleanup::tombstone).collect();
    assert_eq!(found, [None, Some(cleanup::Tombstone { pk: "ORG#org_1".into(), root_sk: "ORG" }), None]);
    let children: Vec<_> = event.records.iter().map(cleanup::child).collect();
    let session =
        ("USER#user_29w83sxmDNGwOuEthce5gg56FcC".to_owned(), "SESSION#sess_29wBYxnMCQU2KIs6V3ZPOJCPUXx".to_owned());
    assert_eq!(children, [Some(session), None, None], "the membership's record is a REMOVE");
    for (pk, sk, acted_on) in [
        ("USER#u", "ORG#o", true),
        ("ORG#o", "MEMBER#u", true),
        ("USER#u", "USER", false),
        ("ORG#o", "ORG", false),
        ("SYNC#u", "SYNC", false),
        ("META", "INSTANCE", false),
    ] {
        assert_eq!(cleanup::child(&stream_record(pk, sk)).is_some(), acted_on, "{pk} {sk}");
    }
}

/// Rule 2 for writes their writer could not check (cut before its read and never called again,
/// as a `/sync` call is, or an attempt the SDK abandoned that lands late): the cleanup function,
/// handed the stream records of every session and membership written, deletes each one whose user
/// or organization is a tombstone, both items of a membership, and nothing else.
#[tokio::test]
async fn the_cleanup_function_removes_what_was_written_under_a_tombstone_by_anyone() {
    let table = TestTable::create().await;
    let app = table.app();
    for user in ["user_gone", "user_live"] {
        ok(&app, &clerk::user("user.created", user, V, "Ada")).await;
        ok(&app, &clerk::session("session.created", &format!("sess_{user}"), user, "active", V, None)).await;
    }
    for organization in ["org_gone", "org_live"] {
        ok(&app, &clerk::organization("organization.created", organization, V, "Acme")).await;
        for user in ["user_gone", "user_live"] {
            let id = format!("orgmem_{organization}_{user}");
            ok(&app, &clerk::membership("organizationMembership.created", &id, organization, user, "org:member", V, V))
                .await;
        }
    }
    let children: Vec<(String, String)> =
        table.items().await.into_keys().filter(|(_, sk)| sk != "USER" && sk != "ORG").collect();
    assert_eq!(children.len(), 2 + 2 * 4);
    // The tombstones land as the writes' checks would have missed them: after, with no removal.
    for (pk, sk) in [("USER#user_gone", "USER"), ("ORG#org_gone", "ORG")] {
        let tombstone =
            json!({ "pk": pk, "sk": sk, "id": &pk[pk.find('#').unwrap() + 1..], "deleted": true, "version": V + 1 });
        table.put(&tombstone).await;
    }
    let proxy = proxy().await;
    let store = table.store_via(&proxy.endpoint());
    let response = cleanup::handle(&store, stream_of_writes(&children), Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    // Handed the same records again (Lambda retries a batch), it reads each record's parent and,
    // under the 5 tombstoned parents, whether the item is still there: nothing more.
    let before = proxy.requests();
    let response = cleanup::handle(&store, stream_of_writes(&children), Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(proxy.requests() - before, children.len() + 5, "no delete for items already gone");
    let left: Vec<(String, String)> =
        table.items().await.into_keys().filter(|(_, sk)| sk != "USER" && sk != "ORG").collect();
    let key = |pk: &str, sk: &str| (pk.to_owned(), sk.to_owned());
    assert_eq!(
        left,
        [
            key("ORG#org_live", "MEMBER#user_live"),
            key("USER#user_live", "ORG#org_live"),
            key("USER#user_live", "SESSION#sess_user_live"),
        ]
    );
}

/// A session PutItem attempt that reaches DynamoDB after its client gave up on it (the attempt
/// timed out at 1.5 s and the SDK's second attempt was applied): the delivery reads the tombstone,
/// deletes the session and answers 200 `user_deleted`; then the first attempt lands, finds no item,
/// and its condition lets it through. Nothing will deliver it again: the cleanup function, handed
/// that write's stream record, removes it.
#[tokio::test]
async fn a_late_attempt_landing_after_the_answer_is_removed_by_the_cleanup_function() {
    let table = TestTable::create().await;
    let app = table.app();
    ok(&app, &clerk::user("user.created", "user_gone", V, "Ada")).await;
    ok(&app, &clerk::user_deleted("user_gone", V + 1)).await;
    let proxy = proxy().await;
    let via = table.app_via(&proxy.endpoint());
    // The proxied function's first delivery records its Clerk instance; the next request is then
    // the session's PutItem.
    ok(&via, &clerk::user("user.created", "user_other", V, "Grace")).await;
    proxy.then(&[Fault::Late(Duration::from_secs(3))]);
    let body = clerk::session("session.created", "sess_late", "user_gone", "active", V + 2, None);
    let (status, answer) = deliver(&via, &body).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("user_deleted")), "{answer}");
    assert_eq!(left_under(&table, "USER#user_gone").await, Vec::<(String, String)>::new(), "right after the 200");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = ("USER#user_gone".to_owned(), "SESSION#sess_late".to_owned());
    assert_eq!(left_under(&table, "USER#user_gone").await, std::slice::from_ref(&late), "the late attempt landed");

    let response = cleanup::handle(&table.store(), stream_of_writes(&[late]), Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(left_under(&table, "USER#user_gone").await, Vec::<(String, String)>::new());
}

/// An organization of 20,000 members (40,000 items, written straight to the table) is removed
/// completely: the delivery writes the tombstone and starts, the cleanup function finishes.
/// `--nocapture` prints the time each part took (BENCHMARKS.md, "Deletions").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_of_20000_members_is_removed_completely() {
    const MEMBERS: usize = 20_000;
    let table = TestTable::create().await;
    let organization = "org_huge";
    ok(&table.app(), &clerk::organization("organization.created", organization, V, "Acme")).await;
    let started = Instant::now();
    seed_members(&table, organization, MEMBERS).await;
    let seeded = started.elapsed();

    let started = Instant::now();
    let (status, answer) = deliver(&table.app_patient(), &clerk::organization_deleted(organization, V + 1)).await;
    let delivered = started.elapsed();
    assert_eq!(status, 200, "{answer}");
    let started = Instant::now();
    let response = cleanup::handle(&table.patient_store(), stream_event(organization), Duration::from_secs(600)).await;
    let cleaned = started.elapsed();
    assert!(response.batch_item_failures.is_empty(), "{response:?}");

    let pk = format!("ORG#{organization}");
    assert_eq!(left_under(&table, &pk).await, Vec::<(String, String)>::new());
    let removed_by_delivery = answer["memberships_removed"].as_u64().unwrap();
    eprintln!(
        "20,000-member organization: seeded in {seeded:.1?}; delivery {delivered:.1?} ({removed_by_delivery} memberships, \
         removal {}); cleanup {cleaned:.1?} for the rest",
        answer["removal"]
    );
}

/// Writes `members` membership pairs of `organization` straight to the table, 8 batches at once.
async fn seed_members(table: &TestTable, organization: &str, members: usize) {
    let item = |pk: String, sk: String, user: &str| -> WriteRequest {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: i64| AttributeValue::N(v.to_string());
        let item: Item = Item::from([
            ("pk".to_owned(), s(&pk)),
            ("sk".to_owned(), s(&sk)),
            ("id".to_owned(), s(&format!("orgmem_{user}"))),
            ("organization_id".to_owned(), s(organization)),
            ("user_id".to_owned(), s(user)),
            ("role".to_owned(), s("org:member")),
            ("created_at".to_owned(), n(V)),
            ("version".to_owned(), n(V)),
        ]);
        WriteRequest::builder().put_request(PutRequest::builder().set_item(Some(item)).build().unwrap()).build()
    };
    let writes: Vec<WriteRequest> = (0..members)
        .flat_map(|m| {
            let user = format!("user_{m:05}");
            [
                item(format!("ORG#{organization}"), format!("MEMBER#{user}"), &user),
                item(format!("USER#{user}"), format!("ORG#{organization}"), &user),
            ]
        })
        .collect();
    let client = table.patient_client();
    let mut tasks = tokio::task::JoinSet::new();
    for batch in writes.chunks(25).map(<[WriteRequest]>::to_vec) {
        while tasks.len() >= 8 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let (client, name) = (client.clone(), table.name.clone());
        tasks.spawn(async move {
            let mut batch = batch;
            while !batch.is_empty() {
                let output = client.batch_write_item().request_items(&name, batch).send().await.unwrap();
                batch = output.unprocessed_items.and_then(|mut left| left.remove(&name)).unwrap_or_default();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
}
