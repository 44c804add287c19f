//! The condition expressions in `rules::condition` agree with the rule functions in `rules`, on a
//! real DynamoDB API, for every combination of stored state and incoming write: the verdict the
//! store reports is the function's, and the item is replaced exactly when the function says Apply.
//! Incoming writes are lower, equal and higher in version, and at the stored version carry a lower,
//! the same and a higher digest (different contents of one version), so the tie-break is checked
//! like every other rule.

mod common;

use aws_sdk_dynamodb::types::AttributeValue;
use clerk_sync::plan::{
    MembershipItem, ORGANIZATION_SK, OrganizationItem, SessionItem, Tombstone, USER_SK, UserItem, Write, member_sk,
    organization_pk, session_sk, user_pk,
};
use clerk_sync::rules::{self, Digest, MembershipState, Rank, Stored, Verdict};
use common::TestTable;

const V: u64 = 1_795_000_000_000;

/// Three digests in order: the stored one is the middle one.
fn digest(n: u8) -> Digest {
    Digest::from_hex(&format!("{n:02x}").repeat(16)).unwrap()
}

/// What every stored item ranks: version V, the middle digest.
fn stored_rank() -> Rank {
    Rank::new(V, Some(digest(2)))
}

/// Incoming ranks: an older version, the stored version with a lower, the same and a higher
/// digest, and a newer version.
fn incoming_ranks() -> [Rank; 5] {
    [
        Rank::new(V - 1, Some(digest(3))),
        Rank::new(V, Some(digest(1))),
        stored_rank(),
        Rank::new(V, Some(digest(3))),
        Rank::new(V + 1, Some(digest(1))),
    ]
}

fn hex(rank: Rank) -> String {
    rank.digest.unwrap().to_hex()
}

fn user_item(id: &str, rank: Rank) -> UserItem {
    let version = rank.version;
    UserItem {
        pk: user_pk(id),
        sk: USER_SK,
        id: id.into(),
        email: Some(format!("{id}@example.org")),
        first_name: Some(format!("v{version}")),
        last_name: None,
        username: None,
        image_url: None,
        created_at: Some(1),
        updated_at: Some(version as i64),
        last_sign_in_at: None,
        banned: None,
        locked: None,
        public_metadata: "{}".into(),
        version,
        digest: hex(rank),
        data: None,
    }
}

fn tombstone(id: &str, version: u64) -> Tombstone {
    Tombstone { pk: user_pk(id), sk: USER_SK, id: id.into(), deleted: true, version }
}

fn session_item(user: &str, id: &str, rank: Rank, terminal: bool) -> SessionItem {
    let version = rank.version;
    SessionItem {
        pk: user_pk(user),
        sk: session_sk(id),
        id: id.into(),
        user_id: user.into(),
        client_id: None,
        status: if terminal { "ended" } else { "active" }.into(),
        created_at: Some(1),
        updated_at: Some(version as i64),
        last_active_at: None,
        expire_at: None,
        abandon_at: None,
        version,
        digest: hex(rank),
        data: None,
    }
}

/// The stored item's rank, whether it is a tombstone, and its status.
async fn version_at(table: &TestTable, pk: &str, sk: &str) -> Option<(Rank, bool, Option<String>)> {
    let item = table
        .client
        .get_item()
        .table_name(&table.name)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    Some((rank_of(&item), deleted_in(&item), item.get("status").map(|s| s.as_s().unwrap().clone())))
}

fn rank_of(item: &std::collections::HashMap<String, AttributeValue>) -> Rank {
    let digest = item.get("digest").map(|d| Digest::from_hex(d.as_s().unwrap()).unwrap());
    Rank::new(item["version"].as_n().unwrap().parse().unwrap(), digest)
}

fn deleted_in(item: &std::collections::HashMap<String, AttributeValue>) -> bool {
    item.get("deleted").is_some_and(|d| d == &AttributeValue::Bool(true))
}

#[derive(Clone, Copy, Debug)]
enum UserState {
    Absent,
    Live,
    Deleted,
}

impl UserState {
    fn stored(self) -> Option<Stored> {
        match self {
            UserState::Absent => None,
            UserState::Live => Some(Stored { rank: stored_rank(), deleted: false, terminal: false }),
            UserState::Deleted => Some(Stored { rank: Rank::new(V, None), deleted: true, terminal: false }),
        }
    }

    async fn set_up(self, table: &TestTable, id: &str) {
        match self {
            UserState::Absent => {}
            UserState::Live => table.put(&user_item(id, stored_rank())).await,
            UserState::Deleted => table.put(&tombstone(id, V)).await,
        }
    }
}

const USER_STATES: [UserState; 3] = [UserState::Absent, UserState::Live, UserState::Deleted];
/// Tombstones carry no digest: only versions order them.
const INCOMING_TOMBSTONES: [u64; 3] = [V - 1, V, V + 1];

#[tokio::test]
async fn user_upsert_condition_matches_the_rule() {
    let table = TestTable::create().await;
    let store = table.store();
    for (n, (state, incoming)) in USER_STATES.iter().flat_map(|s| incoming_ranks().map(|r| (*s, r))).enumerate() {
        let id = format!("user_up{n}");
        state.set_up(&table, &id).await;
        let applied = store.apply(&Write::UpsertUser(user_item(&id, incoming))).await.unwrap();
        let expected = rules::user_upsert(state.stored(), incoming);
        assert_eq!(applied.verdict, expected, "{state:?} <- {incoming:?}");
        let after = version_at(&table, &user_pk(&id), USER_SK).await;
        let expected_after = match (expected, state) {
            (Verdict::Apply, _) => Some((incoming, false, None)),
            (_, UserState::Deleted) => Some((Rank::new(V, None), true, None)),
            _ => Some((stored_rank(), false, None)),
        };
        assert_eq!(after, expected_after, "{state:?} <- {incoming:?}");
    }
}

#[tokio::test]
async fn user_tombstone_condition_matches_the_rule() {
    let table = TestTable::create().await;
    let store = table.store();
    for (n, (state, incoming)) in USER_STATES.iter().flat_map(|s| INCOMING_TOMBSTONES.map(|v| (*s, v))).enumerate() {
        let id = format!("user_del{n}");
        state.set_up(&table, &id).await;
        let applied = store.apply(&Write::DeleteUser(tombstone(&id, incoming))).await.unwrap();
        let expected = rules::user_tombstone(state.stored(), Rank::new(incoming, None));
        assert_eq!(applied.verdict, expected, "{state:?} <- {incoming}");
        let after = version_at(&table, &user_pk(&id), USER_SK).await;
        let expected_version = if expected == Verdict::Apply { incoming } else { V };
        assert_eq!(after, Some((Rank::new(expected_version, None), true, None)), "{state:?} <- {incoming}");
    }
}

#[tokio::test]
async fn session_upsert_condition_matches_the_rule() {
    let table = TestTable::create().await;
    let store = table.store();
    let session_states: [Option<bool>; 3] = [None, Some(false), Some(true)];
    let mut n = 0;
    for user_state in USER_STATES {
        for stored_terminal in session_states {
            for incoming in incoming_ranks() {
                for incoming_terminal in [false, true] {
                    n += 1;
                    let (user, session) = (format!("user_s{n}"), format!("sess_s{n}"));
                    user_state.set_up(&table, &user).await;
                    if let Some(terminal) = stored_terminal {
                        table.put(&session_item(&user, &session, stored_rank(), terminal)).await;
                    }
                    let write = Write::UpsertSession(session_item(&user, &session, incoming, incoming_terminal));
                    let applied = store.apply(&write).await.unwrap();
                    let stored =
                        stored_terminal.map(|terminal| Stored { rank: stored_rank(), deleted: false, terminal });
                    let deleted = matches!(user_state, UserState::Deleted);
                    let expected = rules::session_upsert(deleted, stored, incoming, incoming_terminal);
                    let case =
                        format!("user {user_state:?}, session {stored_terminal:?} <- {incoming:?} {incoming_terminal}");
                    assert_eq!(applied.verdict, expected, "{case}");
                    let status = |terminal: bool| Some(if terminal { "ended" } else { "active" }.to_owned());
                    let after = version_at(&table, &user_pk(&user), &session_sk(&session)).await;
                    // Rule 2: under a deleted user nothing stays, not even a session stored before.
                    let expected_after = match (expected, stored_terminal) {
                        (Verdict::Apply, _) => Some((incoming, false, status(incoming_terminal))),
                        (Verdict::UserDeleted, _) => None,
                        (_, Some(terminal)) => Some((stored_rank(), false, status(terminal))),
                        (_, None) => None,
                    };
                    assert_eq!(after, expected_after, "{case}");
                }
            }
        }
    }
}

#[tokio::test]
async fn organization_conditions_match_the_rules() {
    let table = TestTable::create().await;
    let store = table.store();
    for (n, (state, incoming)) in USER_STATES.iter().flat_map(|s| incoming_ranks().map(|r| (*s, r))).enumerate() {
        let id = format!("org_{n}");
        match state {
            UserState::Absent => {}
            UserState::Live => table.put(&organization_item(&id, stored_rank())).await,
            UserState::Deleted => table.put(&Tombstone::organization(&id, V)).await,
        }
        let applied = store.apply(&Write::UpsertOrganization(organization_item(&id, incoming))).await.unwrap();
        let expected = rules::organization_upsert(state.stored(), incoming);
        assert_eq!(applied.verdict, expected, "upsert: {state:?} <- {incoming:?}");
        let after = version_at(&table, &organization_pk(&id), ORGANIZATION_SK).await;
        let expected_after = match (expected, state) {
            (Verdict::Apply, _) => Some((incoming, false, None)),
            (_, UserState::Deleted) => Some((Rank::new(V, None), true, None)),
            _ => Some((stored_rank(), false, None)),
        };
        assert_eq!(after, expected_after, "upsert: {state:?} <- {incoming:?}");

        let deletion = Tombstone::organization(&id, incoming.version);
        let applied = store.apply(&Write::DeleteOrganization(deletion)).await.unwrap();
        let stored_now = after.map(|(rank, deleted, _)| Stored { rank, deleted, terminal: false });
        let expected = rules::organization_tombstone(stored_now, Rank::new(incoming.version, None));
        assert_eq!(applied.verdict, expected, "delete: {state:?}");
    }
}

fn organization_item(id: &str, rank: Rank) -> OrganizationItem {
    let version = rank.version;
    OrganizationItem {
        pk: organization_pk(id),
        sk: ORGANIZATION_SK,
        id: id.into(),
        name: Some(format!("v{version}")),
        slug: None,
        image_url: None,
        created_at: Some(1),
        updated_at: Some(version as i64),
        public_metadata: "{}".into(),
        version,
        digest: hex(rank),
        data: None,
    }
}

fn membership_item(organization: &str, user: &str, state: MembershipState<'_>) -> MembershipItem {
    MembershipItem {
        pk: organization_pk(organization),
        sk: member_sk(user),
        id: state.id.into(),
        organization_id: organization.into(),
        user_id: user.into(),
        deleted: state.deleted,
        role: (!state.deleted).then(|| "org:member".into()),
        created_at: state.created_at,
        updated_at: None,
        public_metadata: (!state.deleted).then(|| "{}".into()),
        version: state.rank.version,
        digest: state.rank.digest.map(Digest::to_hex),
        data: None,
    }
}

/// Every stored membership (none, live, deleted) against every incoming one that is earlier, the
/// same or later by `created_at`, `id` and version, live or deleted: both items of the pair end
/// as the rule says. Then the same with a deleted organization or user, which refuse them all.
#[tokio::test]
async fn membership_conditions_match_the_rule() {
    let table = TestTable::create().await;
    let store = table.store();
    const C: i64 = 1_700_000_000_000;
    let stored_states = [None, Some(false), Some(true)];
    let mut n = 0;
    for stored_deleted in stored_states {
        for created_at in [C - 1, C, C + 1] {
            for id in ["orgmem_a", "orgmem_b", "orgmem_c"] {
                for deleted in [false, true] {
                    let ranks: Vec<Rank> = if deleted {
                        INCOMING_TOMBSTONES.iter().map(|v| Rank::new(*v, None)).collect()
                    } else {
                        incoming_ranks().to_vec()
                    };
                    for rank in ranks {
                        n += 1;
                        let (organization, user) = (format!("org_m{n}"), format!("user_m{n}"));
                        let stored = stored_deleted.map(|deleted| MembershipState {
                            created_at: C,
                            id: "orgmem_b",
                            deleted,
                            rank: if deleted { Rank::new(V, None) } else { stored_rank() },
                        });
                        if let Some(stored) = stored {
                            let item = membership_item(&organization, &user, stored);
                            table.put(&item).await;
                            table.put(&item.under_user()).await;
                        }
                        let incoming = MembershipState { created_at, id, deleted, rank };
                        let item = membership_item(&organization, &user, incoming);
                        let applied = store.apply(&Write::PutMembership(item.clone())).await.unwrap();
                        let expected = rules::membership(stored, incoming);
                        let case = format!("{stored:?} <- {incoming:?}");
                        assert_eq!(applied.verdict, expected, "{case}");
                        let winner = if expected == Verdict::Apply { Some(incoming) } else { stored };
                        for (pk, sk) in
                            [(item.pk.clone(), item.sk.clone()), (item.under_user().pk, item.under_user().sk)]
                        {
                            let after = membership_at(&table, &pk, &sk).await;
                            let expected_after = winner.map(|w| (w.created_at, w.id.to_owned(), w.deleted, w.rank));
                            assert_eq!(after, expected_after, "{case} at {pk} {sk}");
                        }
                    }
                }
            }
        }
    }

    // Whatever was stored before (nothing, or an orphan left by a deletion not yet finished),
    // nothing of the membership stays.
    let cases = [(true, false), (false, true), (true, true)].into_iter().flat_map(|parents| {
        [false, true].into_iter().flat_map(move |deleted| [false, true].map(|orphan| (parents, deleted, orphan)))
    });
    for ((organization_deleted, user_deleted), deleted, orphan) in cases {
        {
            n += 1;
            let (organization, user) = (format!("org_m{n}"), format!("user_m{n}"));
            if organization_deleted {
                table.put(&Tombstone::organization(&organization, V)).await;
            }
            if user_deleted {
                table.put(&tombstone(&user, V)).await;
            }
            let rank = if deleted { Rank::new(V, None) } else { stored_rank() };
            let incoming = MembershipState { created_at: C, id: "orgmem_a", deleted, rank };
            let item = membership_item(&organization, &user, incoming);
            if orphan {
                let earlier =
                    MembershipState { created_at: C - 1, id: "orgmem_0", deleted: false, rank: stored_rank() };
                let earlier = membership_item(&organization, &user, earlier);
                table.put(&earlier).await;
                table.put(&earlier.under_user()).await;
            }
            let applied = store.apply(&Write::PutMembership(item.clone())).await.unwrap();
            let expected = if organization_deleted { Verdict::OrganizationDeleted } else { Verdict::UserDeleted };
            assert_eq!(applied.verdict, expected, "organization deleted {organization_deleted}, user {user_deleted}");
            assert_eq!(membership_at(&table, &item.pk, &item.sk).await, None);
            assert_eq!(membership_at(&table, &item.under_user().pk, &item.under_user().sk).await, None);
        }
    }
}

async fn membership_at(table: &TestTable, pk: &str, sk: &str) -> Option<(i64, String, bool, Rank)> {
    let item = table
        .client
        .get_item()
        .table_name(&table.name)
        .key("pk", AttributeValue::S(pk.into()))
        .key("sk", AttributeValue::S(sk.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item?;
    Some((
        item["created_at"].as_n().unwrap().parse().unwrap(),
        item["id"].as_s().unwrap().clone(),
        deleted_in(&item),
        rank_of(&item),
    ))
}
