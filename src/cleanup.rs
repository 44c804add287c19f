//! The table's stream in: finishing deletions outside the delivery that wrote their tombstone,
//! and keeping rule 2 for every session and membership written, whoever wrote it.
//!
//! `user.deleted` and `organization.deleted` write the tombstone, remove what hangs off it for as
//! long as the delivery's budget allows, and answer. The rest (an organization of 100,000 members
//! takes minutes on DynamoDB) is finished here, by a second function on the table's stream, with
//! Lambda's own retries: every record that writes a user or organization tombstone is removed
//! under page by page (see `store::deletion`).
//!
//! Every record that writes a session or membership item is checked here too: if the user (or
//! organization) it hangs off is a tombstone, the item is deleted ([`Store::remove_if_orphaned`]).
//! Its writer checks the same right after writing; this catches what the writer could not: a
//! writer cut before its check and never called again (`/sync`, the operator's tool), and a
//! write attempt the SDK abandoned that reached DynamoDB after the delivery was answered.
//!
//! A record not finished by the function's deadline, or whose work failed, is reported as a batch
//! item failure: Lambda hands the stream back from it, with the progress kept, and after its
//! retries sends it to the on-failure queue.

use std::time::Duration;

/// The stream event and its records, as Lambda hands them to the cleanup function.
pub use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use serde_dynamo::AttributeValue;

use crate::plan;
use crate::store::Store;

/// A tombstone a stream record wrote: its partition and root sort key.
#[derive(Debug, PartialEq, Eq)]
pub struct Tombstone {
    pub pk: String,
    pub root_sk: &'static str,
}

/// The tombstone a record wrote, if it wrote one: an insert or modify of a user or organization
/// item whose new image is deleted. Anything else (live items, sessions, memberships, removals,
/// the records this function's own deletes make) is not ours to act on.
pub fn tombstone(record: &EventRecord) -> Option<Tombstone> {
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return None;
    }
    let image = &record.change.new_image;
    if image.get("deleted") != Some(&AttributeValue::Bool(true)) {
        return None;
    }
    let root_sk = match image.get("sk").or_else(|| record.change.keys.get("sk")) {
        Some(AttributeValue::S(sk)) if sk == plan::USER_SK => plan::USER_SK,
        Some(AttributeValue::S(sk)) if sk == plan::ORGANIZATION_SK => plan::ORGANIZATION_SK,
        _ => return None,
    };
    match record.change.keys.get("pk") {
        Some(AttributeValue::S(pk)) => Some(Tombstone { pk: pk.clone(), root_sk }),
        _ => None,
    }
}

/// The session or membership item a record wrote (`pk`, `sk`), if it wrote one: an insert or
/// modify of `USER#…`/`SESSION#…`, `USER#…`/`ORG#…` or `ORG#…`/`MEMBER#…`.
pub fn child(record: &EventRecord) -> Option<(String, String)> {
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return None;
    }
    let key = |name: &str| match record.change.keys.get(name) {
        Some(AttributeValue::S(value)) => Some(value.clone()),
        _ => None,
    };
    let (pk, sk) = (key("pk")?, key("sk")?);
    let session = pk.starts_with("USER#") && sk.starts_with(plan::SESSION_SK_PREFIX);
    let membership = plan::membership_counterpart(&pk, &sk).is_some();
    (session || membership).then_some((pk, sk))
}

/// Finishes the removals and checks a batch of stream records calls for, in order, with `store`,
/// all within `budget` (the caller sets it from the time the invocation has: no record's work is
/// started after it). Stops at the first record not finished and reports it: Lambda then hands
/// the stream back from that record.
pub async fn handle(store: &Store, event: Event, budget: Duration) -> DynamoDbEventResponse {
    let deadline = tokio::time::Instant::now() + budget;
    let mut response = DynamoDbEventResponse::default();
    for record in &event.records {
        let done = if let Some(tombstone) = tombstone(record) {
            remove_under(store, &tombstone, deadline).await
        } else if let Some((pk, sk)) = child(record) {
            tokio::time::Instant::now() < deadline && check(store, &pk, &sk).await
        } else {
            true
        };
        if !done {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = record.change.sequence_number.clone();
            response.batch_item_failures.push(failure);
            return response;
        }
    }
    response
}

/// Removes what hangs off `tombstone` until `deadline`; whether the removal is complete.
async fn remove_under(store: &Store, tombstone: &Tombstone, deadline: tokio::time::Instant) -> bool {
    let outcome = store.remove_under_tombstone_by(&tombstone.pk, tombstone.root_sk, deadline).await;
    match &outcome {
        Ok(removal) => tracing::info!(
            pk = tombstone.pk,
            sessions_removed = removal.sessions,
            memberships_removed = removal.memberships,
            complete = removal.complete,
            "cleanup"
        ),
        Err(e) => tracing::error!(pk = tombstone.pk, error = %e, "cleanup failed; the record will be retried"),
    }
    matches!(outcome, Ok(removal) if removal.complete)
}

/// Rule 2 for the session or membership item `pk`, `sk`; whether the check was carried out.
async fn check(store: &Store, pk: &str, sk: &str) -> bool {
    match store.remove_if_orphaned(pk, sk).await {
        Ok(removed) => {
            if removed {
                tracing::info!(pk, sk, "removed an item written under a tombstone");
            }
            true
        }
        Err(e) => {
            tracing::error!(pk, sk, error = %e, "checking an item's tombstone failed; the record will be retried");
            false
        }
    }
}

/// How long a cleanup invocation may spend removing, given the time left before its deadline:
/// it stops starting pages early enough for the requests in flight to finish and to answer.
pub fn budget(remaining: Duration) -> Duration {
    remaining.saturating_sub(Duration::from_secs(10)).max(Duration::from_secs(1))
}
