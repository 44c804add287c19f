//! Step 4 of a delivery: deciding what a Clerk event writes (pure: no I/O, no clock).
//!
//! This is where the data model applications read is defined: keys, attribute names and what a
//! tombstone keeps. Items depend only on the event, never on when or how often it was processed.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::event::{Event, EventKind, Members, Membership, Organization, Session, User};
use crate::rules::{self, Digest, Rank};

/// DynamoDB's limit on a global secondary index's partition key (`email`), in UTF-8 bytes.
pub const MAX_INDEX_KEY_BYTES: usize = 2048;

/// Sort key of a user item and of a user tombstone.
pub const USER_SK: &str = "USER";
/// Sort key prefix of a session item.
pub const SESSION_SK_PREFIX: &str = "SESSION#";

/// Sort key of an organization item and of an organization tombstone.
pub const ORGANIZATION_SK: &str = "ORG";
/// Sort key prefix of a membership under its organization (`MEMBER#<user_id>`).
pub const MEMBER_SK_PREFIX: &str = "MEMBER#";
/// Sort key prefix of a membership under its user (`ORG#<organization_id>`).
pub const USER_MEMBERSHIP_SK_PREFIX: &str = "ORG#";

pub fn user_pk(user_id: &str) -> String {
    format!("USER#{user_id}")
}

pub fn session_sk(session_id: &str) -> String {
    format!("{SESSION_SK_PREFIX}{session_id}")
}

pub fn organization_pk(organization_id: &str) -> String {
    format!("ORG#{organization_id}")
}

pub fn member_sk(user_id: &str) -> String {
    format!("{MEMBER_SK_PREFIX}{user_id}")
}

/// The other item of a membership pair: `(ORG#o, MEMBER#u)` and `(USER#u, ORG#o)` name each
/// other. `None` for keys that are not a membership's.
pub fn membership_counterpart(pk: &str, sk: &str) -> Option<(String, String)> {
    if let (Some(organization_id), Some(user_id)) = (pk.strip_prefix("ORG#"), sk.strip_prefix(MEMBER_SK_PREFIX)) {
        return Some((user_pk(user_id), organization_pk(organization_id)));
    }
    if let (Some(user_id), Some(organization_id)) =
        (pk.strip_prefix("USER#"), sk.strip_prefix(USER_MEMBERSHIP_SK_PREFIX))
    {
        return Some((organization_pk(organization_id), member_sk(user_id)));
    }
    None
}

/// One write, carried out by the store as one conditional request (plus, for a deletion, the
/// removal of the user's sessions).
#[derive(Debug, PartialEq)]
pub enum Write {
    UpsertUser(UserItem),
    DeleteUser(Tombstone),
    UpsertSession(SessionItem),
    UpsertOrganization(OrganizationItem),
    DeleteOrganization(Tombstone),
    /// A live membership, or its tombstone (`deleted`).
    PutMembership(MembershipItem),
}

impl Write {
    /// The version the write carries.
    pub fn version(&self) -> u64 {
        self.rank().version
    }

    /// Where the write stands among the changes of its object.
    pub fn rank(&self) -> Rank {
        match self {
            Write::UpsertUser(item) => item.rank(),
            Write::DeleteUser(tombstone) | Write::DeleteOrganization(tombstone) => tombstone.rank(),
            Write::UpsertSession(item) => item.rank(),
            Write::UpsertOrganization(item) => item.rank(),
            Write::PutMembership(item) => item.rank(),
        }
    }
}

/// The rank of an item from its `version` and `digest` attributes.
fn rank_of(version: u64, digest: Option<&str>) -> Rank {
    Rank::new(version, digest.and_then(Digest::from_hex))
}

/// Options that change what is stored, not whether.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Keep the whole Clerk object under `data` (costs write capacity on large users).
    pub store_clerk_data: bool,
}

/// A live user: `pk = USER#<id>`, `sk = USER`.
#[derive(Debug, Serialize, PartialEq)]
pub struct UserItem {
    pub pk: String,
    pub sk: &'static str,
    pub id: String,
    /// The primary email, lowercased: the key of the email index (absent when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_sign_in_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub banned: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// Clerk's `public_metadata` as JSON text (`{}` when Clerk sent none). The store writes it as a
    /// map where DynamoDB can hold it exactly ([`crate::item`]).
    #[serde(skip)]
    pub public_metadata: String,
    pub version: u64,
    /// Orders two different contents at one version ([`rules::Digest`], hex).
    pub digest: String,
    /// The Clerk object as Clerk sent it: its JSON text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl UserItem {
    pub fn rank(&self) -> Rank {
        rank_of(self.version, Some(&self.digest))
    }
}

/// What is left of a deleted user or organization: the key, the id, `deleted = true` and the
/// version. No personal data.
#[derive(Debug, Serialize, PartialEq)]
pub struct Tombstone {
    pub pk: String,
    pub sk: &'static str,
    pub id: String,
    pub deleted: bool,
    pub version: u64,
}

impl Tombstone {
    /// Tombstones carry no digest: two of one version are the same item.
    pub fn rank(&self) -> Rank {
        Rank::new(self.version, None)
    }

    /// The tombstone of user `user_id`, deleted at `version` (ms): what `user.deleted` writes, and
    /// what `reconcile` writes for a user Clerk no longer has.
    pub fn user(user_id: &str, version: u64) -> Self {
        Self { pk: user_pk(user_id), sk: USER_SK, id: user_id.to_owned(), deleted: true, version }
    }

    /// The tombstone of organization `organization_id`, deleted at `version` (ms).
    pub fn organization(organization_id: &str, version: u64) -> Self {
        Self {
            pk: organization_pk(organization_id),
            sk: ORGANIZATION_SK,
            id: organization_id.to_owned(),
            deleted: true,
            version,
        }
    }
}

/// An organization: `pk = ORG#<id>`, `sk = ORG`.
#[derive(Debug, Serialize, PartialEq)]
pub struct OrganizationItem {
    pub pk: String,
    pub sk: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// As on users: JSON text, written as a map where DynamoDB can hold it exactly.
    #[serde(skip)]
    pub public_metadata: String,
    pub version: u64,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl OrganizationItem {
    pub fn rank(&self) -> Rank {
        rank_of(self.version, Some(&self.digest))
    }
}

/// A user's membership of an organization, written twice in one transaction: under the
/// organization (`pk = ORG#<organization_id>`, `sk = MEMBER#<user_id>`, with `data`) to list its
/// members, and under the user (`pk = USER#<user_id>`, `sk = ORG#<organization_id>`, without
/// `data`) to list theirs. A tombstone (`deleted = true`) keeps only ids, `created_at` and the
/// version.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MembershipItem {
    pub pk: String,
    pub sk: String,
    pub id: String,
    pub organization_id: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    /// As on users (JSON text); none on a tombstone.
    #[serde(skip)]
    pub public_metadata: Option<String>,
    pub version: u64,
    /// None on a tombstone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl MembershipItem {
    /// The same membership under the user's partition, without `data`.
    pub fn under_user(&self) -> MembershipItem {
        MembershipItem {
            pk: user_pk(&self.user_id),
            sk: format!("{USER_MEMBERSHIP_SK_PREFIX}{}", self.organization_id),
            data: None,
            ..self.clone()
        }
    }

    /// What the membership rule compares.
    pub fn state(&self) -> rules::MembershipState<'_> {
        rules::MembershipState { created_at: self.created_at, id: &self.id, deleted: self.deleted, rank: self.rank() }
    }

    pub fn rank(&self) -> Rank {
        rank_of(self.version, self.digest.as_deref())
    }
}

/// A session: `pk = USER#<user_id>`, `sk = SESSION#<session_id>`.
#[derive(Debug, Serialize, PartialEq)]
pub struct SessionItem {
    pub pk: String,
    pub sk: String,
    pub id: String,
    pub user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_active_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abandon_at: Option<i64>,
    pub version: u64,
    pub digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

impl SessionItem {
    pub fn is_terminal(&self) -> bool {
        rules::is_terminal(&self.status)
    }

    pub fn rank(&self) -> Rank {
        rank_of(self.version, Some(&self.digest))
    }
}

/// Why a well-formed Clerk event still cannot be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the event has no version: neither data.updated_at nor a positive envelope timestamp")]
    NoVersion,
    #[error("the event's data is not a JSON object")]
    InvalidData,
}

/// Decides what an event writes: `None` for types we do not store (acknowledged, so Svix stops
/// retrying them).
pub fn plan(event: &Event<'_>, options: Options) -> Result<Option<Write>, PlanError> {
    let version = |updated_at: Option<i64>| rules::version(updated_at, event.timestamp).ok_or(PlanError::NoVersion);
    Ok(match &event.kind {
        EventKind::UserUpsert { user, data } => {
            let version = version(user.updated_at)?;
            let object = ClerkObject::new(data, &[])?;
            Some(Write::UpsertUser(user_item(user, version, object.stored(options))))
        }
        EventKind::UserDeleted { user_id } => Some(Write::DeleteUser(Tombstone::user(user_id, version(None)?))),
        EventKind::SessionUpsert { session, data } => {
            let version = version(session.updated_at)?;
            // Newer session payloads embed the whole user: it lives in the user item, and keeping a
            // copy here would leave personal data behind that user.deleted does not reach. The
            // Backend API's sessions (and some webhooks') carry `latest_activity`: the device's IP
            // address, city and browser, personal data no application needs from this table.
            let object = ClerkObject::new(data, &["user", "latest_activity"])?;
            Some(Write::UpsertSession(session_item(session, version, object.stored(options))))
        }
        EventKind::OrganizationUpsert { organization, data } => {
            let version = version(organization.updated_at)?;
            let object = ClerkObject::new(data, &[])?;
            Some(Write::UpsertOrganization(organization_item(organization, version, object.stored(options))))
        }
        EventKind::OrganizationDeleted { organization_id } => {
            Some(Write::DeleteOrganization(Tombstone::organization(organization_id, version(None)?)))
        }
        EventKind::MembershipUpsert { membership, data } => {
            let version = version(membership.updated_at)?;
            // The organization and the user live in their own items; copies here would go stale,
            // and `public_user_data` (name, email) would outlive the user's deletion.
            let object = ClerkObject::new(data, &["organization", "public_user_data"])?;
            Some(Write::PutMembership(membership_item(membership, version, object.stored(options))))
        }
        EventKind::MembershipDeleted { membership } => {
            let version = version(membership.updated_at)?;
            Some(Write::PutMembership(membership_tombstone(membership, version)))
        }
        EventKind::Ignored => None,
    })
}

/// The Clerk object an item keeps: its JSON text exactly as Clerk sent it (every number, key and
/// escape as received), less the embedded objects that live in items of their own.
struct ClerkObject<'a> {
    text: Cow<'a, str>,
}

/// What an item keeps of its Clerk object: the text (unless `data` is not stored) and its digest.
struct Kept {
    data: Option<String>,
    digest: String,
}

impl<'a> ClerkObject<'a> {
    fn new(raw: &'a RawValue, dropped: &[&str]) -> Result<Self, PlanError> {
        Ok(Self { text: without_fields(raw.get(), dropped)? })
    }

    fn stored(self, options: Options) -> Kept {
        let digest = Digest::of(self.text.as_bytes()).to_hex();
        Kept { data: options.store_clerk_data.then(|| self.text.into_owned()), digest }
    }
}

/// A JSON object's text without the `dropped` members; the rest is kept as it was sent (members in
/// their order, values byte for byte). Nothing to drop, nothing copied.
pub fn without_fields<'a>(raw: &'a str, dropped: &[&str]) -> Result<Cow<'a, str>, PlanError> {
    let members: Members<'a> = serde_json::from_str(raw).map_err(|_| PlanError::InvalidData)?;
    if !members.0.iter().any(|(key, _)| dropped.contains(&key.as_ref())) {
        return Ok(Cow::Borrowed(raw.trim()));
    }
    let mut text = String::with_capacity(raw.len());
    text.push('{');
    for (key, value) in members.0.iter().filter(|(key, _)| !dropped.contains(&key.as_ref())) {
        if text.len() > 1 {
            text.push(',');
        }
        // Re-escaping a key keeps its value; only the member's spelling of escapes may change.
        text.push_str(&serde_json::to_string(key).map_err(|_| PlanError::InvalidData)?);
        text.push(':');
        text.push_str(value.get());
    }
    text.push('}');
    Ok(Cow::Owned(text))
}

/// A lifted `public_metadata`: its JSON text, `{}` when Clerk sent none (or `null`).
fn metadata_text(metadata: Option<&RawValue>) -> String {
    metadata.map_or("{}", RawValue::get).to_owned()
}

fn organization_item(organization: &Organization, version: u64, kept: Kept) -> OrganizationItem {
    OrganizationItem {
        pk: organization_pk(&organization.id),
        sk: ORGANIZATION_SK,
        id: organization.id.clone(),
        name: organization.name.clone(),
        slug: organization.slug.clone(),
        image_url: organization.image_url.clone(),
        created_at: organization.created_at,
        updated_at: organization.updated_at,
        public_metadata: metadata_text(organization.public_metadata.as_deref()),
        version,
        digest: kept.digest,
        data: kept.data,
    }
}

fn membership_item(membership: &Membership, version: u64, kept: Kept) -> MembershipItem {
    MembershipItem {
        deleted: false,
        role: membership.role.clone(),
        updated_at: membership.updated_at,
        public_metadata: Some(metadata_text(membership.public_metadata.as_deref())),
        digest: Some(kept.digest),
        data: kept.data,
        ..membership_tombstone(membership, version)
    }
}

fn membership_tombstone(membership: &Membership, version: u64) -> MembershipItem {
    let organization_id = &membership.organization.id;
    let user_id = &membership.public_user_data.user_id;
    MembershipItem {
        pk: organization_pk(organization_id),
        sk: member_sk(user_id),
        id: membership.id.clone(),
        organization_id: organization_id.clone(),
        user_id: user_id.clone(),
        deleted: true,
        role: None,
        created_at: membership.created_at,
        updated_at: None,
        public_metadata: None,
        version,
        digest: None,
        data: None,
    }
}

fn user_item(user: &User, version: u64, kept: Kept) -> UserItem {
    UserItem {
        pk: user_pk(&user.id),
        sk: USER_SK,
        id: user.id.clone(),
        // An index key longer than DynamoDB allows would make the whole write invalid; Clerk's own
        // limit on addresses is far below it.
        email: user.primary_email().filter(|email| email.len() <= MAX_INDEX_KEY_BYTES),
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        username: user.username.clone(),
        image_url: user.image_url.clone(),
        created_at: user.created_at,
        updated_at: user.updated_at,
        last_sign_in_at: user.last_sign_in_at,
        banned: user.banned,
        locked: user.locked,
        public_metadata: metadata_text(user.public_metadata.as_deref()),
        version,
        digest: kept.digest,
        data: kept.data,
    }
}

fn session_item(session: &Session, version: u64, kept: Kept) -> SessionItem {
    SessionItem {
        pk: user_pk(&session.user_id),
        sk: session_sk(&session.id),
        id: session.id.clone(),
        user_id: session.user_id.clone(),
        client_id: session.client_id.clone(),
        status: session.status.clone(),
        created_at: session.created_at,
        updated_at: session.updated_at,
        last_active_at: session.last_active_at,
        expire_at: session.expire_at,
        abandon_at: session.abandon_at,
        version,
        digest: kept.digest,
        data: kept.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;
    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    const KEEP: Options = Options { store_clerk_data: true };
    const DROP: Options = Options { store_clerk_data: false };

    fn raw(value: &Value) -> Box<RawValue> {
        RawValue::from_string(value.to_string()).unwrap()
    }

    fn user_event<'a>(data: &'a RawValue, event_type: &str, timestamp: Option<i64>) -> Event<'a> {
        let user: User = serde_json::from_str(data.get()).unwrap();
        Event {
            event_type: event_type.into(),
            timestamp,
            instance_id: None,
            kind: EventKind::UserUpsert { user, data },
        }
    }

    fn session_event<'a>(data: &'a RawValue, timestamp: Option<i64>) -> Event<'a> {
        let session: Session = serde_json::from_str(data.get()).unwrap();
        let kind = EventKind::SessionUpsert { session, data };
        Event { event_type: "session.created".into(), timestamp, instance_id: None, kind }
    }

    fn jane() -> Value {
        json!({
            "id": "user_1", "object": "user", "first_name": "Jane", "last_name": "Doe", "username": null,
            "image_url": "https://img.clerk.com/x", "created_at": 10, "updated_at": 20, "last_sign_in_at": 15,
            "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "email_address": "Jane@Example.org"}],
            "public_metadata": {"plan": "pro"}, "private_metadata": {"stripe": "cus_1"}
        })
    }

    #[test]
    fn user_event_becomes_a_user_item_keyed_by_id() {
        let data = raw(&jane());
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.created", Some(99)), KEEP).unwrap() else {
            panic!()
        };
        assert_eq!((item.pk.as_str(), item.sk), ("USER#user_1", "USER"));
        assert_eq!(item.email.as_deref(), Some("jane@example.org"));
        assert_eq!(item.first_name.as_deref(), Some("Jane"));
        assert_eq!(item.username, None);
        assert_eq!((item.created_at, item.updated_at, item.last_sign_in_at), (Some(10), Some(20), Some(15)));
        assert_eq!(item.public_metadata, r#"{"plan":"pro"}"#);
        assert_eq!(item.version, 20, "updated_at is the version");
        assert_eq!(item.data.as_deref(), Some(data.get()), "the Clerk object's text, as sent");
        assert_eq!(item.digest, Digest::of(data.get().as_bytes()).to_hex());
    }

    #[test]
    fn clerk_data_can_be_left_out() {
        let data = raw(&jane());
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.updated", None), DROP).unwrap() else {
            panic!()
        };
        assert_eq!(item.data, None);
    }

    #[test]
    fn missing_public_metadata_is_an_empty_map() {
        let data = raw(&json!({"id": "user_1", "updated_at": 5, "public_metadata": null}));
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.updated", None), KEEP).unwrap() else {
            panic!()
        };
        assert_eq!(item.public_metadata, "{}");
    }

    #[test]
    fn user_without_any_version_cannot_be_planned() {
        let data = raw(&json!({"id": "user_1"}));
        assert_eq!(plan(&user_event(&data, "user.updated", None), KEEP), Err(PlanError::NoVersion));
    }

    #[test]
    fn deletion_becomes_a_tombstone_versioned_by_the_envelope() {
        for (timestamp, version) in [(1661861640000, 1661861640000), (1716883200, 1716883200000)] {
            let event = Event {
                event_type: "user.deleted".into(),
                timestamp: Some(timestamp),
                instance_id: None,
                kind: EventKind::UserDeleted { user_id: "user_1".into() },
            };
            let expected =
                Tombstone { pk: "USER#user_1".into(), sk: "USER", id: "user_1".into(), deleted: true, version };
            assert_eq!(plan(&event, KEEP), Ok(Some(Write::DeleteUser(expected))));
        }
    }

    #[test]
    fn session_event_becomes_a_session_item_under_its_user() {
        let value = json!({
            "id": "sess_1", "object": "session", "user_id": "user_1", "client_id": "client_1", "status": "ended",
            "created_at": 1, "updated_at": 7, "last_active_at": 6, "expire_at": 100, "abandon_at": 200,
            "user": {"id": "user_1", "first_name": "Jane", "email_addresses": [{"email_address": "jane@example.org"}]}
        });
        let data = raw(&value);
        let Some(Write::UpsertSession(item)) = plan(&session_event(&data, Some(1)), KEEP).unwrap() else { panic!() };
        assert_eq!((item.pk.as_str(), item.sk.as_str()), ("USER#user_1", "SESSION#sess_1"));
        assert_eq!((item.status.as_str(), item.version), ("ended", 7));
        assert!(item.is_terminal());
        assert_eq!((item.expire_at, item.abandon_at, item.last_active_at), (Some(100), Some(200), Some(6)));
        let stored: Value = serde_json::from_str(&item.data.unwrap()).unwrap();
        assert_eq!(stored.get("user"), None, "the embedded user is not copied into the session");
        assert_eq!(stored["client_id"], "client_1");
    }

    #[test]
    fn ignored_events_plan_nothing() {
        let event =
            Event { event_type: "email.created".into(), timestamp: None, instance_id: None, kind: EventKind::Ignored };
        assert_eq!(plan(&event, KEEP), Ok(None));
    }

    #[test]
    fn items_serialize_without_absent_fields() {
        let data = raw(&json!({"id": "user_1", "updated_at": 5}));
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.updated", None), DROP).unwrap() else {
            panic!()
        };
        let attributes = serde_json::to_value(&item).unwrap();
        let keys: Vec<&str> = attributes.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["digest", "id", "pk", "sk", "updated_at", "version"],
            "public_metadata is added by the store"
        );
    }

    #[test]
    fn data_is_the_text_clerk_sent_byte_for_byte() {
        let text = r#"{"id":"user_1","updated_at":5,"big":18446744073709551617,"long":1.000000000000000000000000000000000000000001,"deep":[[[[{"":""}]]]],"esc":"\u00e9\ud83d\ude00","dup":1,"dup":2}"#;
        let data = RawValue::from_string(text.to_owned()).unwrap();
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.updated", None), KEEP).unwrap() else {
            panic!()
        };
        assert_eq!(item.data.as_deref(), Some(text));
    }

    #[test]
    fn embedded_objects_are_dropped_and_everything_else_kept_as_sent() {
        let text = r#"{"id":"sess_1","object":"session","user_id":"user_1","status":"active","updated_at":7,"user":{"first_name":"Jane"},"n":123456789012345678901234567890,"k\u00e9y":[1.50]}"#;
        let data = RawValue::from_string(text.to_owned()).unwrap();
        let Some(Write::UpsertSession(item)) = plan(&session_event(&data, None), KEEP).unwrap() else { panic!() };
        assert_eq!(
            item.data.as_deref(),
            Some(
                r#"{"id":"sess_1","object":"session","user_id":"user_1","status":"active","updated_at":7,"n":123456789012345678901234567890,"kéy":[1.50]}"#
            )
        );
    }

    #[test]
    fn the_digest_tells_contents_apart_and_ignores_what_is_not_kept() {
        let digest = |text: &str| {
            let data = RawValue::from_string(text.to_owned()).unwrap();
            let Some(Write::UpsertSession(item)) = plan(&session_event(&data, None), DROP).unwrap() else { panic!() };
            item.digest
        };
        let removed = r#"{"id":"sess_1","user_id":"user_1","status":"removed","updated_at":7}"#;
        let revoked = r#"{"id":"sess_1","user_id":"user_1","status":"revoked","updated_at":7}"#;
        assert_ne!(digest(removed), digest(revoked));
        let with_user =
            r#"{"id":"sess_1","user_id":"user_1","status":"removed","updated_at":7,"user":{"id":"user_1"}}"#;
        assert_eq!(digest(removed), digest(with_user), "the embedded user is not kept, so it does not count");
    }

    #[test]
    fn an_email_too_long_for_the_index_is_not_lifted() {
        let long = format!("{}@example.org", "a".repeat(MAX_INDEX_KEY_BYTES));
        let value = json!({"id": "user_1", "updated_at": 5, "primary_email_address_id": "idn_1",
            "email_addresses": [{"id": "idn_1", "email_address": long}]});
        let data = raw(&value);
        let Some(Write::UpsertUser(item)) = plan(&user_event(&data, "user.updated", None), KEEP).unwrap() else {
            panic!()
        };
        assert_eq!(item.email, None);
    }
}
