//! Step 3 of a delivery: reading a verified body as a Clerk event.
//!
//! Only the fields the table needs are typed; everything else is left in the raw `data` object,
//! so fields Clerk adds later never fail parsing. Error messages name fields and positions but
//! never quote values, so they can go to the caller and the logs without leaking personal data.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::verify::Verified;

/// A Clerk event as far as the table is concerned.
#[derive(Debug)]
pub struct Event<'a> {
    /// Clerk's event type, e.g. `user.updated`.
    pub event_type: String,
    /// The envelope's `timestamp`, as sent (milliseconds in Clerk's docs, seconds in some examples).
    pub timestamp: Option<i64>,
    /// The Clerk instance that sent it (`ins_...`), where the envelope says (`None` if it does not,
    /// or if it is not an id).
    pub instance_id: Option<String>,
    pub kind: EventKind<'a>,
}

#[derive(Debug)]
pub enum EventKind<'a> {
    /// `user.created`, `user.updated`: the whole user object.
    UserUpsert { user: User, data: &'a RawValue },
    /// `user.deleted`: only the id survives in Clerk's payload.
    UserDeleted { user_id: String },
    /// Any `session.*` event carrying a session object.
    SessionUpsert { session: Session, data: &'a RawValue },
    /// `organization.created`, `organization.updated`: the whole organization object.
    OrganizationUpsert { organization: Organization, data: &'a RawValue },
    /// `organization.deleted`: only the id survives in Clerk's payload.
    OrganizationDeleted { organization_id: String },
    /// `organizationMembership.created`, `.updated`: the whole membership object.
    MembershipUpsert { membership: Membership, data: &'a RawValue },
    /// `organizationMembership.deleted`: the membership object as it was.
    MembershipDeleted { membership: Membership },
    /// Every other type: acknowledged, not written.
    Ignored,
}

impl EventKind<'_> {
    /// The id of the Clerk object the event is about, for logs and answers.
    pub fn object_id(&self) -> Option<&str> {
        match self {
            EventKind::UserUpsert { user, .. } => Some(&user.id),
            EventKind::UserDeleted { user_id } => Some(user_id),
            EventKind::SessionUpsert { session, .. } => Some(&session.id),
            EventKind::OrganizationUpsert { organization, .. } => Some(&organization.id),
            EventKind::OrganizationDeleted { organization_id } => Some(organization_id),
            EventKind::MembershipUpsert { membership, .. } | EventKind::MembershipDeleted { membership } => {
                Some(&membership.id)
            }
            EventKind::Ignored => None,
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub id: String,
    #[serde(default)]
    pub email_addresses: Option<Vec<EmailAddress>>,
    #[serde(default)]
    pub primary_email_address_id: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub last_sign_in_at: Option<i64>,
    /// An administrator's ban, and Clerk's lockout after failed sign-ins: lifted so that they land
    /// even on an item that has to leave out `data`.
    #[serde(default)]
    pub banned: Option<bool>,
    #[serde(default)]
    pub locked: Option<bool>,
    #[serde(default)]
    /// Kept as text: any JSON Clerk holds (numbers beyond f64, deep nesting) reads, and is stored
    /// exactly (see `crate::item`).
    pub public_metadata: Option<Box<RawValue>>,
}

impl User {
    /// The primary email address, resolved through `primary_email_address_id` and lowercased.
    pub fn primary_email(&self) -> Option<String> {
        let primary = self.primary_email_address_id.as_deref()?;
        self.email_addresses
            .as_deref()?
            .iter()
            .find(|address| address.id.as_deref() == Some(primary))
            .and_then(|address| address.email_address.as_deref())
            .map(str::trim)
            .filter(|email| !email.is_empty())
            .map(str::to_lowercase)
    }
}

#[derive(Debug, Deserialize)]
pub struct EmailAddress {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub email_address: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: String,
    pub status: String,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub last_active_at: Option<i64>,
    #[serde(default)]
    pub expire_at: Option<i64>,
    #[serde(default)]
    pub abandon_at: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct Organization {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub created_at: Option<i64>,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    /// Kept as text: any JSON Clerk holds (numbers beyond f64, deep nesting) reads, and is stored
    /// exactly (see `crate::item`).
    pub public_metadata: Option<Box<RawValue>>,
}

/// A user's membership of an organization. A user who leaves and joins again gets a new
/// membership (a new `id` and `created_at`) under the same organization and user.
#[derive(Debug, Deserialize)]
pub struct Membership {
    pub id: String,
    pub organization: MembershipOrganization,
    pub public_user_data: MembershipUser,
    /// Required: it orders the memberships one user has had in one organization.
    pub created_at: i64,
    #[serde(default)]
    pub updated_at: Option<i64>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    /// Kept as text: any JSON Clerk holds (numbers beyond f64, deep nesting) reads, and is stored
    /// exactly (see `crate::item`).
    pub public_metadata: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
pub struct MembershipOrganization {
    pub id: String,
}

#[derive(Debug, Deserialize)]
pub struct MembershipUser {
    pub user_id: String,
}

/// Why a verified body is not a Clerk event the table can take. Shown to the caller (400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the body is not valid JSON (line {line}, column {column})")]
    NotJson { line: usize, column: usize },
    #[error("the body is not a Clerk event: {0}")]
    NotAnEvent(String),
    #[error("the {event_type} event's data is not a valid {object}: {reason}")]
    InvalidObject { event_type: String, object: &'static str, reason: String },
    #[error("the {0} id is not a Clerk id")]
    InvalidId(&'static str),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(borrow)]
    data: &'a RawValue,
    #[serde(default)]
    timestamp: Option<i64>,
    #[serde(default)]
    instance_id: Option<String>,
}

/// Peeks at `data.object` to tell session objects from anything else under a `session.*` type.
#[derive(Deserialize)]
struct ObjectTag<'a> {
    #[serde(default, borrow)]
    object: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct DeletedObject {
    id: String,
}

/// Reads a verified delivery's body as a Clerk event. Types outside users, sessions,
/// organizations and memberships are `Ignored` whatever their data holds.
pub fn parse<'a>(delivery: &Verified<'a>) -> Result<Event<'a>, ParseError> {
    let envelope: Envelope<'a> = serde_json::from_slice(delivery.body()).map_err(envelope_error)?;
    let kind = read_object(&envelope.event_type, envelope.data)?;
    let instance_id = envelope.instance_id.filter(|id| id.starts_with("ins_") && check_id(id, "instance").is_ok());
    Ok(Event { event_type: envelope.event_type, timestamp: envelope.timestamp, instance_id, kind })
}

/// Reads a Clerk object (an event's `data`, or an object fetched from Clerk's Backend API) as
/// `event_type` says. Webhooks and the Backend API share this reading, so both paths write the
/// same items under the same rules.
pub fn read_object<'a>(event_type: &str, data: &'a RawValue) -> Result<EventKind<'a>, ParseError> {
    // Builds the error only when there is one: no allocation on the success path.
    let invalid = |object: &'static str, e: serde_json::Error| ParseError::InvalidObject {
        event_type: event_type.to_owned(),
        object,
        reason: safe_reason(&e),
    };
    Ok(match event_type {
        "user.created" | "user.updated" => {
            let user: User = serde_json::from_str(data.get()).map_err(|e| invalid("user", e))?;
            check_id(&user.id, "user")?;
            EventKind::UserUpsert { user, data }
        }
        "user.deleted" => {
            let deleted: DeletedObject = serde_json::from_str(data.get()).map_err(|e| invalid("user", e))?;
            check_id(&deleted.id, "user")?;
            EventKind::UserDeleted { user_id: deleted.id }
        }
        t if t.starts_with("session.") => {
            let tag: ObjectTag = serde_json::from_str(data.get()).map_err(|e| invalid("session", e))?;
            if tag.object.as_deref() == Some("session") {
                let session: Session = serde_json::from_str(data.get()).map_err(|e| invalid("session", e))?;
                check_id(&session.id, "session")?;
                check_id(&session.user_id, "user")?;
                EventKind::SessionUpsert { session, data }
            } else {
                EventKind::Ignored
            }
        }
        "organization.created" | "organization.updated" => {
            let organization: Organization =
                serde_json::from_str(data.get()).map_err(|e| invalid("organization", e))?;
            check_id(&organization.id, "organization")?;
            EventKind::OrganizationUpsert { organization, data }
        }
        "organization.deleted" => {
            let deleted: DeletedObject = serde_json::from_str(data.get()).map_err(|e| invalid("organization", e))?;
            check_id(&deleted.id, "organization")?;
            EventKind::OrganizationDeleted { organization_id: deleted.id }
        }
        "organizationMembership.created" | "organizationMembership.updated" | "organizationMembership.deleted" => {
            let membership: Membership =
                serde_json::from_str(data.get()).map_err(|e| invalid("organization membership", e))?;
            check_id(&membership.id, "organization membership")?;
            check_id(&membership.organization.id, "organization")?;
            check_id(&membership.public_user_data.user_id, "user")?;
            if event_type == "organizationMembership.deleted" {
                EventKind::MembershipDeleted { membership }
            } else {
                EventKind::MembershipUpsert { membership, data }
            }
        }
        _ => EventKind::Ignored,
    })
}

/// Clerk ids are a prefix, an underscore and base62 (`user_29w83sxmDNGwOuEthce5gg56FcC`). They
/// become part of DynamoDB keys, so anything else (empty, `#`, control characters) is refused.
fn check_id(id: &str, what: &'static str) -> Result<(), ParseError> {
    let valid =
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid { Ok(()) } else { Err(ParseError::InvalidId(what)) }
}

fn envelope_error(e: serde_json::Error) -> ParseError {
    match e.classify() {
        serde_json::error::Category::Data => ParseError::NotAnEvent(safe_reason(&e)),
        _ => ParseError::NotJson { line: e.line(), column: e.column() },
    }
}

/// serde_json's messages quote offending values ("invalid type: string \"jane@…\""); keep only
/// the parts that name our own fields, or the position.
fn safe_reason(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if message.starts_with("missing field") {
        message.split(" at line").next().unwrap_or("missing field").to_owned()
    } else {
        format!("a field has the wrong type or value (line {}, column {})", e.line(), e.column())
    }
}

/// A JSON object's members in their order, values unparsed: for keeping or converting Clerk's
/// JSON without passing numbers through `f64` or losing a member.
pub struct Members<'a>(pub Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut members = Vec::new();
                while let Some(key) = map.next_key::<MemberName<'de>>()? {
                    members.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// A member name, borrowed from the text unless it holds escapes.
struct MemberName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for MemberName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = MemberName<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Borrowed(name)))
            }
            fn visit_str<E>(self, name: &str) -> Result<Self::Value, E> {
                Ok(MemberName(Cow::Owned(name.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{SigningSecret, Unverified, Verifier};
    use lambda_http::http::{HeaderMap, HeaderValue};

    /// The documented user.created payload from Clerk's docs.
    pub const USER_CREATED: &str = r#"{"data":{"birthday":"","created_at":1654012591514,"email_addresses":[{"email_address":"example@example.org","id":"idn_29w83yL7CwVlJXylYLxcslromF1","linked_to":[],"object":"email_address","verification":{"status":"verified","strategy":"ticket"}}],"external_accounts":[],"external_id":"567772","first_name":"Example","gender":"","id":"user_29w83sxmDNGwOuEthce5gg56FcC","image_url":"https://img.clerk.com/xxxxxx","last_name":"Example","last_sign_in_at":1654012591514,"object":"user","password_enabled":true,"phone_numbers":[],"primary_email_address_id":"idn_29w83yL7CwVlJXylYLxcslromF1","primary_phone_number_id":null,"primary_web3_wallet_id":null,"private_metadata":{},"profile_image_url":"https://www.gravatar.com/avatar?d=mp","public_metadata":{},"two_factor_enabled":false,"unsafe_metadata":{},"updated_at":1654012591835,"username":null,"web3_wallets":[]},"instance_id":"ins_123","object":"event","timestamp":1654012591835,"type":"user.created"}"#;
    const USER_DELETED: &str = r#"{"data":{"deleted":true,"id":"user_29wBMCtzATuFJut8jO2VNTVekS4","object":"user"},"object":"event","timestamp":1661861640000,"type":"user.deleted"}"#;
    const SESSION_CREATED: &str = r#"{"data":{"abandon_at":1656606318265,"client_id":"client_29wBS3h1zhE1BsEK2dg9oyypfYk","created_at":1654014318265,"expire_at":1654619118265,"id":"sess_29wBYxnMCQU2KIs6V3ZPOJCPUXx","last_active_at":1654014318265,"object":"session","status":"active","updated_at":1654014318503,"user_id":"user_29wBMCtzATuFJut8jO2VNTVekS4"},"object":"event","timestamp":1654014318503,"type":"session.created"}"#;

    fn parse_body(body: &str) -> Result<Event<'_>, ParseError> {
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        // Leaked so the verified delivery, which borrows the headers, can outlive this helper.
        let headers: &'static mut HeaderMap = Box::leak(Box::default());
        headers.insert("svix-id", HeaderValue::from_static("msg_1"));
        headers.insert("svix-timestamp", HeaderValue::from_static("1700000000"));
        let signature = secret.sign("msg_1", 1700000000, body.as_bytes());
        headers.insert("svix-signature", HeaderValue::from_str(&signature).unwrap());
        let verified =
            Verifier::new(vec![secret]).verify(Unverified::new(headers, body.as_bytes()), 1700000000).unwrap();
        parse(&verified)
    }

    #[test]
    fn user_created_from_clerk_docs_parses() {
        let event = parse_body(USER_CREATED).unwrap();
        assert_eq!(event.event_type, "user.created");
        assert_eq!(event.timestamp, Some(1654012591835));
        let EventKind::UserUpsert { user, data } = event.kind else { panic!("not a user upsert") };
        assert_eq!(user.id, "user_29w83sxmDNGwOuEthce5gg56FcC");
        assert_eq!(user.primary_email().as_deref(), Some("example@example.org"));
        assert_eq!(user.first_name.as_deref(), Some("Example"));
        assert_eq!(user.username, None);
        assert_eq!(user.updated_at, Some(1654012591835));
        assert!(data.get().starts_with(r#"{"birthday""#));
    }

    #[test]
    fn primary_email_is_resolved_by_id_and_lowercased() {
        let body = r#"{"type":"user.updated","timestamp":1,"data":{"id":"user_1","primary_email_address_id":"idn_2",
            "email_addresses":[{"id":"idn_1","email_address":"other@example.org"},{"id":"idn_2","email_address":"Jane.Doe@Example.ORG"}]}}"#;
        let EventKind::UserUpsert { user, .. } = parse_body(body).unwrap().kind else { panic!() };
        assert_eq!(user.primary_email().as_deref(), Some("jane.doe@example.org"));
    }

    #[test]
    fn user_without_primary_email_has_none() {
        let body = r#"{"type":"user.updated","data":{"id":"user_1","primary_email_address_id":null,"email_addresses":[{"id":"idn_1","email_address":"a@b.c"}]}}"#;
        let EventKind::UserUpsert { user, .. } = parse_body(body).unwrap().kind else { panic!() };
        assert_eq!(user.primary_email(), None);
    }

    #[test]
    fn unknown_and_null_fields_never_fail() {
        let body = r#"{"type":"user.updated","data":{"id":"user_1","has_image":true,"banned":false,"passkeys":[],
            "first_name":null,"email_addresses":null,"public_metadata":null,"brand_new":{"x":[1,2]}},"event_attributes":{}}"#;
        let EventKind::UserUpsert { user, .. } = parse_body(body).unwrap().kind else { panic!() };
        assert_eq!(user.first_name, None);
        assert!(user.public_metadata.is_none());
    }

    #[test]
    fn user_deleted_parses_its_id() {
        let event = parse_body(USER_DELETED).unwrap();
        let EventKind::UserDeleted { user_id } = event.kind else { panic!() };
        assert_eq!(user_id, "user_29wBMCtzATuFJut8jO2VNTVekS4");
        assert_eq!(event.timestamp, Some(1661861640000));
    }

    #[test]
    fn session_created_parses() {
        let EventKind::SessionUpsert { session, .. } = parse_body(SESSION_CREATED).unwrap().kind else { panic!() };
        assert_eq!(session.id, "sess_29wBYxnMCQU2KIs6V3ZPOJCPUXx");
        assert_eq!(session.user_id, "user_29wBMCtzATuFJut8jO2VNTVekS4");
        assert_eq!(session.status, "active");
        assert_eq!(session.updated_at, Some(1654014318503));
    }

    #[test]
    fn every_session_type_with_a_session_object_is_an_upsert() {
        for t in ["session.pending", "session.ended", "session.removed", "session.revoked", "session.future_kind"] {
            let body = SESSION_CREATED.replace("session.created", t);
            let kind = parse_body(&body).unwrap().kind;
            assert!(matches!(kind, EventKind::SessionUpsert { .. }), "{t}");
        }
    }

    #[test]
    fn session_type_without_a_session_object_is_ignored() {
        let body = r#"{"type":"session.token_refreshed","data":{"object":"token","id":"x"}}"#;
        assert!(matches!(parse_body(body).unwrap().kind, EventKind::Ignored));
    }

    #[test]
    fn other_types_are_ignored_whatever_their_data() {
        for body in [
            r#"{"type":"organizationInvitation.created","data":{"id":"orginv_1","object":"organization_invitation"}}"#,
            r#"{"type":"email.created","data":[1,2,3]}"#,
            r#"{"type":"brand.new.type","data":null}"#,
        ] {
            assert!(matches!(parse_body(body).unwrap().kind, EventKind::Ignored), "{body}");
        }
    }

    /// Shaped like the example in Clerk's docs.
    const MEMBERSHIP_CREATED: &str = r#"{"data":{"created_at":1654013203217,"id":"orgmem_29w9IptNja3mP8GDXpquBwN2qR9","object":"organization_membership","organization":{"created_at":1654013202977,"created_by":"user_1vq84bqWzw7qmFgqSwN4CH1Wp0n","id":"org_29w9IfBrPmcpi0IeBVaKtA7R94W","image_url":"https://img.clerk.com/xxxxxx","logo_url":"https://example.com/example.png","name":"Acme Inc","object":"organization","public_metadata":{},"slug":"acme-inc","updated_at":1654013202977},"public_user_data":{"first_name":"Example","identifier":"example@example.org","image_url":"https://img.clerk.com/xxxxxx","last_name":"Example","profile_image_url":"https://www.gravatar.com/avatar?d=mp","user_id":"user_29w83sxmDNGwOuEthce5gg56FcC"},"role":"org:admin","updated_at":1654013203217},"object":"event","timestamp":1654013203217,"type":"organizationMembership.created"}"#;

    #[test]
    fn organization_events_parse() {
        let body = r#"{"type":"organization.updated","timestamp":5,"data":{"id":"org_29w9IfBrPmcpi0IeBVaKtA7R94W","object":"organization","name":"Acme Inc","slug":"acme-inc","image_url":null,"created_at":1,"updated_at":7,"public_metadata":{"tier":"gold"},"members_count":3}}"#;
        let EventKind::OrganizationUpsert { organization, .. } = parse_body(body).unwrap().kind else { panic!() };
        assert_eq!(organization.id, "org_29w9IfBrPmcpi0IeBVaKtA7R94W");
        assert_eq!((organization.name.as_deref(), organization.slug.as_deref()), (Some("Acme Inc"), Some("acme-inc")));
        assert_eq!((organization.image_url, organization.updated_at), (None, Some(7)));

        let body = r#"{"type":"organization.deleted","timestamp":1661861640000,"data":{"deleted":true,"id":"org_1","object":"organization"}}"#;
        let EventKind::OrganizationDeleted { organization_id } = parse_body(body).unwrap().kind else { panic!() };
        assert_eq!(organization_id, "org_1");
    }

    #[test]
    fn membership_events_parse_their_organization_and_user() {
        for (event_type, deleted) in [
            ("organizationMembership.created", false),
            ("organizationMembership.updated", false),
            ("organizationMembership.deleted", true),
        ] {
            let body = MEMBERSHIP_CREATED.replace("organizationMembership.created", event_type);
            let kind = parse_body(&body).unwrap().kind;
            let membership = match kind {
                EventKind::MembershipUpsert { membership, .. } if !deleted => membership,
                EventKind::MembershipDeleted { membership } if deleted => membership,
                other => panic!("{event_type}: {other:?}"),
            };
            assert_eq!(membership.id, "orgmem_29w9IptNja3mP8GDXpquBwN2qR9");
            assert_eq!(membership.organization.id, "org_29w9IfBrPmcpi0IeBVaKtA7R94W");
            assert_eq!(membership.public_user_data.user_id, "user_29w83sxmDNGwOuEthce5gg56FcC");
            assert_eq!((membership.created_at, membership.updated_at), (1654013203217, Some(1654013203217)));
            assert_eq!(membership.role.as_deref(), Some("org:admin"));
        }
    }

    #[test]
    fn membership_without_created_at_or_user_is_refused() {
        let body = MEMBERSHIP_CREATED.replace(r#""created_at":1654013203217,"id""#, r#""id""#);
        let error = parse_body(&body).unwrap_err().to_string();
        assert!(error.ends_with("missing field `created_at`"), "{error}");
        let body = MEMBERSHIP_CREATED.replace(r#""user_id":"user_29w83sxmDNGwOuEthce5gg56FcC""#, r#""user_id":"x#y""#);
        assert_eq!(parse_body(&body).unwrap_err(), ParseError::InvalidId("user"));
    }

    #[test]
    fn non_json_body_is_a_parse_error_with_a_position() {
        assert_eq!(parse_body("{not json").unwrap_err(), ParseError::NotJson { line: 1, column: 2 });
    }

    #[test]
    fn json_that_is_not_an_event_is_refused() {
        for body in [r#"{"test": 2432232314}"#, r#"[1]"#, r#"{"type":"user.created"}"#] {
            assert!(matches!(parse_body(body).unwrap_err(), ParseError::NotAnEvent(_)), "{body}");
        }
    }

    #[test]
    fn session_missing_user_id_is_refused_naming_the_field() {
        let body = SESSION_CREATED.replace(r#""user_id":"user_29wBMCtzATuFJut8jO2VNTVekS4""#, r#""x":1"#);
        let error = parse_body(&body).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the session.created event's data is not a valid session: missing field `user_id`"
        );
    }

    #[test]
    fn error_messages_never_quote_values() {
        let body = r#"{"type":"user.updated","data":{"id":"user_1","first_name":{"secret":"jane@example.org"}}}"#;
        let message = parse_body(body).unwrap_err().to_string();
        assert!(!message.contains("jane"), "{message}");
        assert!(message.contains("column"), "{message}");
    }

    #[test]
    fn ids_that_cannot_be_clerk_ids_are_refused() {
        for id in ["", "user#1", "user 1", "user_\u{7}"] {
            let body = format!(r#"{{"type":"user.deleted","data":{{"id":{}}}}}"#, serde_json::to_string(id).unwrap());
            assert_eq!(parse_body(&body).unwrap_err(), ParseError::InvalidId("user"), "{id:?}");
        }
    }
}
