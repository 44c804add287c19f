//! What `/sync` needs of the table besides the webhook path's writes: a per-user window that
//! keeps a caller to one round of fetches from Clerk however many function instances answer it,
//! and the reads its answer is made of.
//!
//! The window lives apart from the data applications read: `pk = SYNC#<user_id>`, `sk = SYNC`,
//! expiring through the table's TTL (`expires_at`). It is the one kind of item that depends on
//! when something happened, which is why it is neither in the user's partition (a Query of
//! `USER#<id>` never returns it) nor read by anything but `/sync`.

use std::time::Duration;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, request_error, service_error};
use crate::metrics;
use crate::plan::{USER_MEMBERSHIP_SK_PREFIX, USER_SK, session_sk, user_pk};

/// Sort key of a `/sync` window item.
pub const SYNC_SK: &str = "SYNC";
/// The attribute the table's TTL reads (unix seconds). Only window items carry it.
pub const EXPIRES_AT: &str = "expires_at";

/// The attribute naming the call that claimed a window (random).
const CLAIM: &str = "claim";

/// A random id for one claim of a window (the time and a counter, should the system's random
/// source ever fail: unique within a function instance).
fn claim_id(now_ms: i64) -> String {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    match SystemRandom::new().fill(&mut bytes) {
        Ok(()) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        Err(_) => format!("{now_ms}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)),
    }
}

/// Partition key of user `user_id`'s `/sync` window.
pub fn sync_pk(user_id: &str) -> String {
    format!("SYNC#{user_id}")
}

/// Whether this caller may fetch from Clerk now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The window is this caller's, for the length it asked.
    Claimed,
    /// Another call holds it until `until_ms` (unix milliseconds).
    Held { until_ms: i64 },
}

/// A user's partition as `/sync` answers it: the user item, the session item of the caller's
/// session, and the user's membership items (live ones, and tombstones).
#[derive(Debug, Default)]
pub struct UserView {
    pub user: Option<Item>,
    pub session: Option<Item>,
    pub memberships: Vec<Item>,
}

impl Store {
    /// Claims user `user_id`'s window from `now_ms` for `length`: one conditional PutItem that
    /// succeeds only when no window is open, so among concurrent calls from any number of function
    /// instances exactly one wins.
    pub async fn claim_sync_window(&self, user_id: &str, now_ms: i64, length: Duration) -> Result<Window, StoreError> {
        let until_ms = now_ms + length.as_millis() as i64;
        let expires_at = until_ms / 1000 + 60;
        // This call's mark on the window: should the SDK retry a PutItem that DynamoDB applied but
        // whose answer was lost, the retry finds the window held by this very call, not another.
        let claim = claim_id(now_ms);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(sync_pk(user_id)))
            .item("sk", AttributeValue::S(SYNC_SK.to_owned()))
            .item("until", AttributeValue::N(until_ms.to_string()))
            .item(EXPIRES_AT, AttributeValue::N(expires_at.to_string()))
            .item(CLAIM, AttributeValue::S(claim.clone()))
            .condition_expression("attribute_not_exists(#pk) OR #until <= :now")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#until", "until")
            .expression_attribute_values(":now", AttributeValue::N(now_ms.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total);
        match request.send().await {
            Ok(output) => {
                metrics::record_write(output.consumed_capacity.as_ref());
                Ok(Window::Claimed)
            }
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    let held_by = failed.item.as_ref().and_then(|item| item.get(CLAIM)).and_then(|v| v.as_s().ok());
                    if held_by == Some(&claim) {
                        return Ok(Window::Claimed);
                    }
                    let until_ms = failed
                        .item
                        .as_ref()
                        .and_then(|item| item.get("until"))
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(until_ms);
                    Ok(Window::Held { until_ms })
                }
                other => Err(service_error("PutItem", &other)),
            },
            Err(other) => Err(request_error("PutItem", other)),
        }
    }

    /// The user item of `user_id` (live or tombstone), read consistently.
    pub async fn user_item(&self, user_id: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.query_items(user_id, Key::Is(USER_SK.to_owned())).await?.pop())
    }

    /// What `/sync` answers for user `user_id` and session `session_id`, read consistently: three
    /// Queries of the user's partition, in parallel.
    pub async fn user_view(&self, user_id: &str, session_id: &str) -> Result<UserView, StoreError> {
        let (user, session, memberships) = tokio::try_join!(
            self.query_items(user_id, Key::Is(USER_SK.to_owned())),
            self.query_items(user_id, Key::Is(session_sk(session_id))),
            self.query_items(user_id, Key::BeginsWith(USER_MEMBERSHIP_SK_PREFIX)),
        )?;
        Ok(UserView { user: user.into_iter().next(), session: session.into_iter().next(), memberships })
    }

    /// Items of the user's partition whose sort key matches `key`, every page. Query (which the
    /// function's role already has for deletions) rather than GetItem, so the role gains nothing.
    async fn query_items(&self, user_id: &str, key: Key) -> Result<Vec<Item>, StoreError> {
        let (condition, sk) = match key {
            Key::Is(sk) => ("#pk = :pk AND #sk = :sk", sk),
            Key::BeginsWith(prefix) => ("#pk = :pk AND begins_with(#sk, :sk)", prefix.to_owned()),
        };
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let output = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression(condition)
                .expression_attribute_names("#pk", "pk")
                .expression_attribute_names("#sk", "sk")
                .expression_attribute_values(":pk", AttributeValue::S(user_pk(user_id)))
                .expression_attribute_values(":sk", AttributeValue::S(sk.clone()))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| request_error("Query", e))?;
            metrics::record_read(output.consumed_capacity.as_ref());
            items.extend(output.items.unwrap_or_default());
            start = output.last_evaluated_key;
            if start.is_none() {
                return Ok(items);
            }
        }
    }
}

enum Key {
    Is(String),
    BeginsWith(&'static str),
}
