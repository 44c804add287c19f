//! The Clerk event parser and the planner, on any verified body.
//!
//! The input is the body. It is signed with a fixed secret at a fixed timestamp and verified
//! (which must succeed), then read by `event::parse` and planned with both `Options`, and the
//! planned item converted the way the store sends it. Property: no panic for any bytes, and the
//! ids that become DynamoDB keys are Clerk ids.
#![no_main]

use clerk_sync::event::{self, EventKind};
use clerk_sync::plan::{self, Options, Write};
use clerk_sync::store;
use clerk_sync::verify::{Unverified, Verifier};
use clerk_sync_fuzz::Stats;
use lambda_http::http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

const ID: &str = "msg_2pQAPA35fRi2hj0gUisAgkya7T4";
const NOW: i64 = clerk_sync_fuzz::SAMPLE_EVENTS_TIMESTAMP;

fn is_clerk_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

static STATS: Stats = Stats::new();

fuzz_target!(|body: &[u8]| {
    let secret = clerk_sync_fuzz::secret(0);
    let mut headers = HeaderMap::new();
    headers.insert("svix-id", HeaderValue::from_static(ID));
    headers.insert("svix-timestamp", HeaderValue::from_str(&NOW.to_string()).unwrap());
    headers.insert("svix-signature", HeaderValue::from_str(&secret.sign(ID, NOW, body)).unwrap());
    let verified = Verifier::new(vec![secret])
        .verify(Unverified::new(&headers, body), NOW)
        .expect("a correctly signed body must verify");

    let event = match event::parse(&verified) {
        Ok(event) => event,
        Err(e) => {
            STATS.record(|| format!("{e:?}").split([' ', '(', '{']).next().unwrap_or_default().to_owned());
            return;
        }
    };
    if let Some(id) = event.kind.object_id() {
        assert!(is_clerk_id(id), "the parser let through an id that is not a Clerk id: {id:?}");
    }
    if let EventKind::SessionUpsert { session, .. } = &event.kind {
        assert!(is_clerk_id(&session.user_id), "session user id {:?}", session.user_id);
    }
    if let EventKind::MembershipUpsert { membership, .. } | EventKind::MembershipDeleted { membership } = &event.kind {
        assert!(is_clerk_id(&membership.organization.id), "organization id {:?}", membership.organization.id);
        assert!(is_clerk_id(&membership.public_user_data.user_id), "user id {:?}", membership.public_user_data.user_id);
    }
    for store_clerk_data in [true, false] {
        let planned = plan::plan(&event, Options { store_clerk_data });
        STATS.record(|| match &planned {
            Ok(Some(Write::UpsertUser(_))) => "upsert user".into(),
            Ok(Some(Write::DeleteUser(_))) => "delete user".into(),
            Ok(Some(Write::UpsertSession(_))) => "upsert session".into(),
            Ok(Some(Write::UpsertOrganization(_))) => "upsert organization".into(),
            Ok(Some(Write::DeleteOrganization(_))) => "delete organization".into(),
            Ok(Some(Write::PutMembership(item))) if item.deleted => "delete membership".into(),
            Ok(Some(Write::PutMembership(_))) => "upsert membership".into(),
            Ok(None) => "ignored".into(),
            Err(e) => format!("{e:?}"),
        });
        let Ok(Some(write)) = planned else { continue };
        assert!(write.version() > 0, "a write with version 0: {write:?}");
        let item = match &write {
            Write::UpsertUser(item) => {
                assert!(item.pk.starts_with("USER#") && is_clerk_id(&item.pk[5..]));
                store::to_item(item)
            }
            Write::DeleteUser(tombstone) => {
                assert!(tombstone.pk.starts_with("USER#") && is_clerk_id(&tombstone.pk[5..]));
                store::to_item(tombstone)
            }
            Write::UpsertSession(item) => {
                assert!(item.pk.starts_with("USER#") && is_clerk_id(&item.pk[5..]));
                assert!(item.sk.starts_with(plan::SESSION_SK_PREFIX));
                store::to_item(item)
            }
            Write::UpsertOrganization(item) => {
                assert!(item.pk.starts_with("ORG#") && is_clerk_id(&item.pk[4..]));
                store::to_item(item)
            }
            Write::DeleteOrganization(tombstone) => {
                assert!(tombstone.pk.starts_with("ORG#") && is_clerk_id(&tombstone.pk[4..]));
                store::to_item(tombstone)
            }
            Write::PutMembership(item) => {
                assert!(item.pk.starts_with("ORG#") && is_clerk_id(&item.pk[4..]));
                assert!(item.sk.starts_with(plan::MEMBER_SK_PREFIX) && is_clerk_id(&item.user_id));
                let mirror = item.under_user();
                assert!(mirror.pk.starts_with("USER#") && mirror.sk == format!("ORG#{}", item.organization_id));
                store::to_item(&mirror).and_then(|_| store::to_item(item))
            }
        };
        // A conversion error is answered 500; it must be an error, never a panic.
        let _ = item;
    }
});
