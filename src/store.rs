//! Step 5 of a delivery: carrying a plan out on DynamoDB.
//!
//! Every upsert is one conditional request whose condition comes from [`crate::rules::condition`];
//! when it fails, the stored item DynamoDB sends back says why (duplicate, stale, user deleted),
//! judged by the same rules. Nothing is read before it is written.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, ConditionCheck, DeleteRequest, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, WriteRequest,
};
use serde::Serialize;
use tracing::warn;

use crate::plan::{self, SessionItem, Tombstone, UserItem, Write};
use crate::rules::{self, Stored, Verdict, condition};

/// DynamoDB's BatchWriteItem limit.
const BATCH_SIZE: usize = 25;
/// How often a write that lost a transaction conflict, or batch items DynamoDB left unprocessed,
/// are tried again before the delivery fails with a 5xx (and Svix retries it later).
const MAX_CONTENTION_RETRIES: u32 = 4;

/// An item as the SDK sends it.
pub type Item = HashMap<String, AttributeValue>;

/// What applying a plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub verdict: Verdict,
    /// Session items removed by a user deletion.
    pub sessions_removed: usize,
}

impl Applied {
    fn verdict(verdict: Verdict) -> Self {
        Self { verdict, sessions_removed: 0 }
    }
}

/// A write DynamoDB did not confirm. The delivery must fail so that Svix retries it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {detail}")]
    Request { operation: &'static str, detail: String, transient: bool },
    #[error("DynamoDB {operation} kept losing to concurrent writes or throttling")]
    Contention { operation: &'static str },
    #[error("an item could not be converted for DynamoDB: {0}")]
    Conversion(String),
    #[error("a condition failed that the rules say should have held")]
    RulesDisagree,
}

impl StoreError {
    /// Worth retrying soon (throttling, timeouts, a server error) rather than a fault in the request.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Request { transient, .. } => *transient,
            StoreError::Contention { .. } => true,
            StoreError::Conversion(_) | StoreError::RulesDisagree => false,
        }
    }
}

/// Timeouts that leave a failed delivery time to answer a clean 5xx well inside the function's
/// timeout and Svix's 15 s, with the SDK's standard retries (and their backoff) inside them.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_millis(1500))
        .operation_timeout(Duration::from_secs(4))
        .build()
}

pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3)
}

/// The table the function writes, behind the one call the handler needs.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    table: String,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    /// A store on the standard AWS configuration chain (region, credentials, and
    /// `AWS_ENDPOINT_URL` for a local DynamoDB), with this module's timeouts and retries.
    pub async fn connect(table: impl Into<String>) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeout_config())
            .retry_config(retry_config())
            .load()
            .await;
        Self::new(Client::new(&sdk), table)
    }

    /// One cheap request (`DescribeTable`) made at init, where Lambda gives the function full CPU:
    /// it resolves credentials and the endpoint and opens the connection (TLS included) that the
    /// first delivery then reuses, and checks the table exists. A failure is only reported: the
    /// deliveries themselves answer 5xx while DynamoDB is unreachable.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| request_error("DescribeTable", e))
    }

    /// Carries out one write.
    pub async fn apply(&self, write: &Write) -> Result<Applied, StoreError> {
        match write {
            Write::UpsertUser(item) => self.put_user(item).await.map(Applied::verdict),
            Write::DeleteUser(tombstone) => self.delete_user(tombstone).await,
            Write::UpsertSession(item) => self.put_session(item).await.map(Applied::verdict),
        }
    }

    async fn put_user(&self, item: &UserItem) -> Result<Verdict, StoreError> {
        let expression = condition::USER_UPSERT;
        let stored = self.conditional_put(to_item(item)?, expression, item.version).await?;
        Ok(match stored {
            Written => Verdict::Apply,
            Refused(stored) => refused(stored, |s| rules::user_upsert(Some(s), item.version))?,
        })
    }

    /// Writes the tombstone first, then removes the user's sessions. From the moment the
    /// tombstone is written no session write can succeed (they check the user item), so the
    /// query that follows sees every session there will ever be. A retry after a failure in
    /// between finds the tombstone and removes what is left.
    async fn delete_user(&self, tombstone: &Tombstone) -> Result<Applied, StoreError> {
        let stored = self.conditional_put(to_item(tombstone)?, condition::USER_TOMBSTONE, tombstone.version).await?;
        let verdict = match stored {
            Written => Verdict::Apply,
            Refused(stored) => refused(stored, |s| rules::user_tombstone(Some(s), tombstone.version))?,
        };
        let sessions_removed = self.delete_sessions(&tombstone.pk).await?;
        Ok(Applied { verdict, sessions_removed })
    }

    /// One transaction: the user must not be deleted, and the session condition must hold.
    async fn put_session(&self, item: &SessionItem) -> Result<Verdict, StoreError> {
        let terminal = item.is_terminal();
        let expression = condition::session_upsert(terminal);
        let user_check = ConditionCheck::builder()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(item.pk.clone()))
            .key("sk", AttributeValue::S(plan::USER_SK.to_owned()))
            .condition_expression(condition::USER_NOT_DELETED)
            .set_expression_attribute_names(Some(names(condition::USER_NOT_DELETED)))
            .build()
            .map_err(|e| StoreError::Conversion(e.to_string()))?;
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(to_item(item)?))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names(expression)))
            .set_expression_attribute_values(Some(values(expression, item.version)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Conversion(e.to_string()))?;
        let request = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().condition_check(user_check).build())
            .transact_items(TransactWriteItem::builder().put(put).build());

        for attempt in 0..=MAX_CONTENTION_RETRIES {
            let reasons = match request.clone().send().await {
                Ok(_) => return Ok(Verdict::Apply),
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        cancelled.cancellation_reasons.unwrap_or_default()
                    }
                    other => return Err(service_error("TransactWriteItems", &other)),
                },
                Err(other) => return Err(request_error("TransactWriteItems", other)),
            };
            if let Some(verdict) = session_verdict(&reasons, item.version, terminal) {
                return verdict;
            }
            if let Some(invalid) = reasons.iter().find(|r| r.code() == Some("ValidationError")) {
                let detail = format!("ValidationError: {}", invalid.message().unwrap_or(""));
                return Err(StoreError::Request { operation: "TransactWriteItems", detail, transient: false });
            }
            warn!(attempt, reasons = ?codes(&reasons), "session transaction cancelled; trying again");
            backoff(attempt).await;
        }
        Err(StoreError::Contention { operation: "TransactWriteItems" })
    }

    /// A PutItem under `expression`, with what was stored when the condition refused it.
    async fn conditional_put(
        &self,
        item: Item,
        expression: &'static str,
        version: u64,
    ) -> Result<ConditionalPut, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names(expression)))
            .set_expression_attribute_values(Some(values(expression, version)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(Written),
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    Ok(Refused(failed.item.as_ref().and_then(stored)))
                }
                other => Err(service_error("PutItem", &other)),
            },
            Err(other) => Err(request_error("PutItem", other)),
        }
    }

    /// Removes every session item under a user's partition; returns how many there were.
    async fn delete_sessions(&self, pk: &str) -> Result<usize, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .expression_attribute_values(":prefix", AttributeValue::S(plan::SESSION_SK_PREFIX.to_owned()))
            .projection_expression("pk, sk")
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        while let Some(key) = pages.next().await {
            keys.push(key.map_err(|e| request_error("Query", e))?);
        }
        for chunk in keys.chunks(BATCH_SIZE) {
            self.batch_delete(chunk).await?;
        }
        Ok(keys.len())
    }

    async fn batch_delete(&self, keys: &[Item]) -> Result<(), StoreError> {
        let mut requests: Vec<WriteRequest> = keys
            .iter()
            .map(|key| {
                let delete = DeleteRequest::builder().set_key(Some(key.clone())).build();
                delete.map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Conversion(e.to_string()))?;
        for attempt in 0..=MAX_CONTENTION_RETRIES {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| request_error("BatchWriteItem", e))?;
            requests = output.unprocessed_items.and_then(|mut left| left.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention { operation: "BatchWriteItem" })
    }
}

/// What a conditional PutItem did.
enum ConditionalPut {
    Written,
    /// The condition failed; what was stored, if DynamoDB sent it back.
    Refused(Option<Stored>),
}
use ConditionalPut::{Refused, Written};

/// The verdict for a refused write, judged by `rule` from the stored item. If the rule would have
/// let the write through, the condition expression and the rules disagree: that is a bug, and the
/// delivery fails (5xx, retried by Svix, alarmed) rather than claim an outcome. Without the stored
/// item (a DynamoDB-compatible server that does not return it) the write simply lost: stale.
fn refused(stored: Option<Stored>, rule: impl FnOnce(Stored) -> Verdict) -> Result<Verdict, StoreError> {
    match stored.map(rule) {
        Some(Verdict::Apply) => Err(StoreError::RulesDisagree),
        Some(verdict) => Ok(verdict),
        None => Ok(Verdict::Stale),
    }
}

/// The outcome of a cancelled session transaction, or `None` when it should be tried again.
fn session_verdict(
    reasons: &[CancellationReason],
    version: u64,
    terminal: bool,
) -> Option<Result<Verdict, StoreError>> {
    let code = |i: usize| reasons.get(i).and_then(|r| r.code()).unwrap_or("None");
    if code(0) == "ConditionalCheckFailed" {
        return Some(Ok(Verdict::UserDeleted));
    }
    if code(1) == "ConditionalCheckFailed" {
        let stored = reasons[1].item().and_then(stored);
        return Some(refused(stored, |s| rules::session_upsert(false, Some(s), version, terminal)));
    }
    None
}

fn codes(reasons: &[CancellationReason]) -> Vec<&str> {
    reasons.iter().map(|r| r.code().unwrap_or("None")).collect()
}

/// Reads the precedence-relevant attributes of a stored item.
fn stored(item: &Item) -> Option<Stored> {
    let version = item.get("version")?.as_n().ok()?.parse().ok()?;
    let deleted = matches!(item.get("deleted"), Some(AttributeValue::Bool(true)));
    let terminal = item.get("status").and_then(|s| s.as_s().ok()).is_some_and(|s| rules::is_terminal(s));
    Some(Stored { version, deleted, terminal })
}

fn names(expression: &str) -> HashMap<String, String> {
    condition::names_used_by(expression).map(|(p, n)| (p.to_owned(), n.to_owned())).collect()
}

fn values(expression: &str, version: u64) -> HashMap<String, AttributeValue> {
    let mut values = HashMap::from([(condition::VERSION.to_owned(), AttributeValue::N(version.to_string()))]);
    for (placeholder, status) in condition::TERMINAL_VALUES.iter().zip(rules::TERMINAL_SESSION_STATUSES) {
        if expression.contains(placeholder) {
            values.insert((*placeholder).to_owned(), AttributeValue::S(status.to_owned()));
        }
    }
    values
}

pub fn to_item(value: &impl Serialize) -> Result<Item, StoreError> {
    serde_dynamo::aws_sdk_dynamodb_1::to_item(value).map_err(|e| StoreError::Conversion(e.to_string()))
}

async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(20 << attempt.min(5))).await;
}

fn service_error(operation: &'static str, error: &impl ProvideErrorMetadata) -> StoreError {
    let code = error.code().unwrap_or("unknown");
    let transient = matches!(
        code,
        "ProvisionedThroughputExceededException"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "InternalServerError"
            | "ServiceUnavailable"
            | "TransactionInProgressException"
    );
    // The message DynamoDB sends names attributes and limits, never item values.
    let detail = format!("{code}: {}", error.message().unwrap_or(""));
    StoreError::Request { operation, detail, transient }
}

fn request_error<E: ProvideErrorMetadata, R>(operation: &'static str, error: SdkError<E, R>) -> StoreError {
    let (detail, transient) = match &error {
        SdkError::ServiceError(e) => return service_error(operation, e.err()),
        SdkError::TimeoutError(_) => ("timed out".to_owned(), true),
        SdkError::DispatchFailure(e) if e.is_timeout() => ("timed out".to_owned(), true),
        SdkError::DispatchFailure(e) if e.is_io() => ("connection failed".to_owned(), true),
        SdkError::DispatchFailure(_) => ("request could not be sent".to_owned(), true),
        SdkError::ResponseError(_) => ("unreadable response".to_owned(), true),
        SdkError::ConstructionFailure(_) => ("request could not be built".to_owned(), false),
        _ => ("unknown failure".to_owned(), true),
    };
    StoreError::Request { operation, detail, transient }
}
