//! Step 5 of a delivery: carrying a plan out on DynamoDB.
//!
//! Every upsert is one conditional request whose condition comes from [`crate::rules::condition`];
//! when it fails, the stored item DynamoDB sends back says why (duplicate, stale), judged by the
//! same rules. Nothing is read before it is written; a session or membership reads the items it
//! hangs off after (rule 2, [`Store::unless_orphaned`]).

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Put, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem,
};
use serde::Serialize;
use tracing::warn;

use crate::item::{self, Fit};
use crate::metrics;
use crate::plan::{self, MembershipItem, SessionItem, Tombstone, Write};
use crate::rules::{self, Digest, MembershipState, Rank, Stored, Verdict, condition};
use crate::tls::{self, Trust};

pub use crate::item::Item;

mod deletion;
mod mirror;
mod sync;

use deletion::key_of;
pub use deletion::{Removal, Removed};
pub use mirror::{MIRROR_PK, MIRROR_SK, Mirror, Recorded};
pub use sync::{EXPIRES_AT, SYNC_SK, UserView, Window, sync_pk};

/// How long a deletion may spend removing what hangs off a tombstone within one delivery, after
/// the tombstone is written (it stops then, even within a page, and says the removal continues):
/// with the tombstone's own write, well inside the handler's 8 s deadline.
pub const DEFAULT_REMOVAL_BUDGET: Duration = Duration::from_secs(3);
/// How often a write that lost a transaction conflict, or batch items DynamoDB left unprocessed,
/// are tried again before the delivery fails with a 5xx (and Svix retries it later).
const MAX_CONTENTION_RETRIES: u32 = 4;

/// What applying a plan did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub verdict: Verdict,
    /// Session items removed by a user deletion.
    pub sessions_removed: usize,
    /// Memberships (each a pair of items) removed by a user or organization deletion.
    pub memberships_removed: usize,
    /// What the item gave up to fit DynamoDB's limits (nothing, nearly always).
    pub fit: Fit,
    /// For a deletion: whether everything under the tombstone is gone. When not, what is left is
    /// finished by the next attempt (see [`Store::delete_root`]).
    pub removal_complete: bool,
}

impl Applied {
    fn written(verdict: Verdict, fit: Fit) -> Self {
        Self { verdict, sessions_removed: 0, memberships_removed: 0, fit, removal_complete: true }
    }
}

/// A write DynamoDB did not confirm. The delivery must fail so that Svix retries it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("DynamoDB {operation} failed: {detail}")]
    Request { operation: &'static str, detail: String, transient: bool },
    /// DynamoDB refused the request as invalid (`ValidationException`): sending it again cannot help.
    #[error("DynamoDB {operation} refused the request as invalid: {detail}")]
    Invalid { operation: &'static str, detail: String },
    #[error("DynamoDB {operation} kept losing to concurrent writes or throttling")]
    Contention { operation: &'static str },
    #[error("an item could not be converted for DynamoDB: {0}")]
    Conversion(String),
    #[error("a condition failed that the rules say should have held")]
    RulesDisagree,
}

impl StoreError {
    /// A failure of this item's own (DynamoDB refused it, even as its skeleton; it could not be
    /// converted; or the rules and conditions disagreed on it), rather than of DynamoDB, the
    /// credentials or the table: writing other items can still succeed.
    pub fn is_about_the_item(&self) -> bool {
        matches!(self, StoreError::Invalid { .. } | StoreError::Conversion(_) | StoreError::RulesDisagree)
    }

    /// Worth retrying soon (throttling, timeouts, a server error) rather than a fault in the request.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Request { transient, .. } => *transient,
            StoreError::Contention { .. } => true,
            StoreError::Invalid { .. } | StoreError::Conversion(_) | StoreError::RulesDisagree => false,
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
    removal_budget: Duration,
    removal_page_size: i32,
    /// Where removals are counted as they go, if anyone asked.
    removed: Option<std::sync::Arc<Removed>>,
}

impl Store {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let (removal_budget, removal_page_size) = (DEFAULT_REMOVAL_BUDGET, deletion::DEFAULT_PAGE_SIZE);
        Self { client, table: table.into(), removal_budget, removal_page_size, removed: None }
    }

    /// The same store, spending up to `budget` on what hangs off a tombstone in one call (the
    /// operator's tool has far more time than a delivery; the cleanup function passes its own
    /// deadline instead, [`Store::remove_under_tombstone_by`]).
    pub fn with_removal_budget(mut self, budget: Duration) -> Self {
        self.removal_budget = budget;
        self
    }

    /// The same store, counting tombstones written and items removed under them into `removed`
    /// as it goes (after each page): counts that stay true when the caller is interrupted.
    pub fn counting_removals(mut self, removed: std::sync::Arc<Removed>) -> Self {
        self.removed = Some(removed);
        self
    }

    /// The same store, reading `size` keys per page while removing (tests use small pages to
    /// cut removals between pages).
    pub fn with_removal_page_size(mut self, size: i32) -> Self {
        self.removal_page_size = size.max(1);
        self
    }

    /// Finishes removing what hangs off a tombstone (`pk`, `root_sk`): what the cleanup function
    /// on the table's stream and `clerk-sync-admin reconcile` call for a tombstone already written.
    pub async fn remove_under_tombstone(&self, pk: &str, root_sk: &str) -> Result<Removal, StoreError> {
        self.remove_under_tombstone_by(pk, root_sk, tokio::time::Instant::now() + self.removal_budget).await
    }

    /// The same, stopping at `deadline` (one deadline for several tombstones).
    pub async fn remove_under_tombstone_by(
        &self,
        pk: &str,
        root_sk: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Removal, StoreError> {
        self.remove_children(pk, root_sk, deadline).await
    }

    /// A store on the standard AWS configuration chain (region, credentials, and
    /// `AWS_ENDPOINT_URL` for a local DynamoDB), with this module's timeouts and retries, and the
    /// roots `trust` names (see [`crate::tls`]).
    pub async fn connect(table: impl Into<String>, trust: Trust) -> Self {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(tls::https_client(trust))
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
    ///
    /// Its error, for the init log only, carries the SDK's whole chain of causes (a refused
    /// certificate says `UnknownIssuer`), where a delivery's error keeps to a short detail.
    pub async fn warm_up(&self) -> Result<(), StoreError> {
        let result = self.client.describe_table().table_name(&self.table).send().await;
        result.map(|_| ()).map_err(|e| {
            let causes = DisplayErrorContext(&e).to_string();
            match request_error("DescribeTable", e) {
                StoreError::Request { operation, detail, transient } => {
                    StoreError::Request { operation, detail: format!("{detail} ({causes})"), transient }
                }
                other => other,
            }
        })
    }

    /// Carries out one write. Boxed: the writes' futures (requests, retries, removals) are large,
    /// and every caller (a delivery, `/sync`, the operator's tool) would otherwise carry them
    /// inline on its stack.
    pub async fn apply(&self, write: &Write) -> Result<Applied, StoreError> {
        Box::pin(self.apply_inline(write)).await
    }

    async fn apply_inline(&self, write: &Write) -> Result<Applied, StoreError> {
        let rank = write.rank();
        match write {
            Write::UpsertUser(item) => {
                let rule = |s| rules::user_upsert(Some(s), rank);
                let built = item::build(to_item(item)?, Some(&item.public_metadata));
                self.put_one(built, condition::USER_UPSERT, rank, rule).await
            }
            Write::DeleteUser(tombstone) => {
                let rule = |s| rules::user_tombstone(Some(s), rank);
                self.delete_root(tombstone, condition::USER_TOMBSTONE, rule).await
            }
            Write::UpsertSession(item) => self.put_session(item).await,
            Write::UpsertOrganization(item) => {
                let rule = |s| rules::organization_upsert(Some(s), rank);
                let built = item::build(to_item(item)?, Some(&item.public_metadata));
                self.put_one(built, condition::ORGANIZATION_UPSERT, rank, rule).await
            }
            Write::DeleteOrganization(tombstone) => {
                let rule = |s| rules::organization_tombstone(Some(s), rank);
                self.delete_root(tombstone, condition::ORGANIZATION_TOMBSTONE, rule).await
            }
            Write::PutMembership(item) => self.put_membership(item).await,
        }
    }

    /// A user, organization or session item: one conditional PutItem. If DynamoDB refuses the item as
    /// invalid all the same (a limit [`item`] does not know of), its skeleton is written instead,
    /// so that the version and every scalar field land and later changes are not refused too.
    async fn put_one(
        &self,
        (item, fit): (Item, Fit),
        expression: &'static str,
        rank: Rank,
        rule: impl FnOnce(Stored) -> Verdict,
    ) -> Result<Applied, StoreError> {
        let (written, fit) = match self.conditional_put(&item, expression, rank).await {
            Err(StoreError::Invalid { detail, .. }) => {
                warn!(reason = %detail, "DynamoDB refused the item; writing it without data and public_metadata");
                let skeleton = item::skeleton(&item);
                let written = self.conditional_put(&skeleton, expression, rank).await?;
                // Only a skeleton that was written left something out.
                let refused = matches!(written, Written);
                (written, Fit { refused, ..fit })
            }
            other => (other?, fit),
        };
        let verdict = match written {
            Written => Verdict::Apply,
            Refused(stored) => refused(stored, rule)?,
        };
        Ok(Applied::written(verdict, fit))
    }

    /// Writes a user's or organization's tombstone first, then removes what hangs off it (see
    /// [`deletion`]) for as long as the store's removal budget allows. A session or membership
    /// written from then on removes itself when it reads the tombstone ([`Store::unless_orphaned`]),
    /// so what is left is finished by any later attempt: a redelivery, the cleanup function on
    /// the table's stream, or `clerk-sync-admin reconcile`.
    async fn delete_root(
        &self,
        tombstone: &Tombstone,
        expression: &'static str,
        rule: impl FnOnce(Stored) -> Verdict,
    ) -> Result<Applied, StoreError> {
        let built = (to_item(tombstone)?, Fit::default());
        let verdict = self.put_one(built, expression, tombstone.rank(), rule).await?.verdict;
        if let (Verdict::Apply, Some(removed)) = (verdict, &self.removed) {
            removed.tombstones.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let deadline = tokio::time::Instant::now() + self.removal_budget;
        let removal = self.remove_children(&tombstone.pk, tombstone.sk, deadline).await?;
        Ok(Applied {
            verdict,
            sessions_removed: removal.sessions,
            memberships_removed: removal.memberships,
            fit: Fit::default(),
            removal_complete: removal.complete,
        })
    }

    /// One conditional PutItem, then rule 2 (see [`Store::unless_orphaned`]): the user item is read.
    async fn put_session(&self, item: &SessionItem) -> Result<Applied, StoreError> {
        let terminal = item.is_terminal();
        let rank = item.rank();
        let rule = |s| rules::session_upsert(false, Some(s), rank, terminal);
        let built = item::build(to_item(item)?, None);
        let applied = self.put_one(built, condition::session_upsert(terminal), rank, rule).await?;
        let user_deleted = self.is_tombstone(&item.pk, plan::USER_SK).await?;
        let parents = [(item.pk.as_str(), user_deleted, Verdict::UserDeleted)];
        self.unless_orphaned(applied, &parents, [(item.pk.clone(), item.sk.clone())]).await
    }

    /// One transaction of both items of the membership (under the organization and under the
    /// user), each under the membership condition: they are only ever written together, so they
    /// always agree. Then rule 2 (see [`Store::unless_orphaned`]): the organization and user items
    /// are read.
    async fn put_membership(&self, item: &MembershipItem) -> Result<Applied, StoreError> {
        let expression = condition::membership(item.deleted);
        let incoming = item.state();
        let judge = |stored_item: Option<&Item>| {
            refused(stored_item.and_then(stored_membership), |s| rules::membership(Some(s), incoming))
        };
        let mut values = values(expression, item.rank());
        values.insert(condition::CREATED_AT.to_owned(), AttributeValue::N(item.created_at.to_string()));
        values.insert(condition::ID.to_owned(), AttributeValue::S(item.id.clone()));
        let metadata = item.public_metadata.as_deref();
        let under_user = item.under_user();
        let (under_organization_item, fit) = item::build(to_item(item)?, metadata);
        let (under_user_item, fit_under_user) = item::build(to_item(&under_user)?, metadata);
        let fit = Fit {
            metadata_as_text: fit.metadata_as_text || fit_under_user.metadata_as_text,
            data_omitted: fit.data_omitted || fit_under_user.data_omitted,
            metadata_omitted: fit.metadata_omitted || fit_under_user.metadata_omitted,
            refused: false,
        };
        let puts = vec![under_organization_item, under_user_item];
        let applied = self.put_pair(puts, fit, expression, values, judge).await?;
        let organization_pk = plan::organization_pk(&item.organization_id);
        let (organization_deleted, user_deleted) = tokio::try_join!(
            self.is_tombstone(&organization_pk, plan::ORGANIZATION_SK),
            self.is_tombstone(&under_user.pk, plan::USER_SK),
        )?;
        let parents = [
            (organization_pk.as_str(), organization_deleted, Verdict::OrganizationDeleted),
            (under_user.pk.as_str(), user_deleted, Verdict::UserDeleted),
        ];
        let written = [(item.pk.clone(), item.sk.clone()), (under_user.pk.clone(), under_user.sk.clone())];
        self.unless_orphaned(applied, &parents, written).await
    }

    /// Rule 2, a deleted user has no sessions or memberships and a deleted organization no
    /// memberships, kept without a transaction. A session or membership write is followed,
    /// whatever its outcome, by a strongly consistent read of the items it hangs off (`parents`:
    /// partition, whether it holds a tombstone, the verdict if so). If one is a tombstone, the
    /// items the write may have stored (`written`) are deleted and the verdict is that tombstone's.
    ///
    /// Why nothing is left behind: a deletion writes its tombstone, then removes with strongly
    /// consistent Queries. If this write's read saw no tombstone, the read came before the
    /// tombstone, so the write came before the removal's Query, which finds and deletes it; if the
    /// read saw it, the write is deleted here. Of a membership the item outside a tombstoned
    /// partition is deleted first, as the removal does, so that an interrupted delete leaves what
    /// is left findable.
    ///
    /// What this read cannot cover, the cleanup function on the table's stream does
    /// ([`Store::remove_if_orphaned`] for every session and membership item written): a write
    /// whose writer was cut before its read and is not called again (`/sync`, the operator's tool,
    /// a webhook Svix gave up on), and an attempt the SDK abandoned that reaches DynamoDB after the
    /// delivery was answered. Each such write is a stream record, read after the write landed.
    ///
    /// This costs one read unit per parent where a ConditionCheck in a transaction cost twice the
    /// written item and twice the checked one (BENCHMARKS.md, "Cost per event").
    async fn unless_orphaned<const N: usize>(
        &self,
        applied: Applied,
        parents: &[(&str, bool, Verdict)],
        written: [(String, String); N],
    ) -> Result<Applied, StoreError> {
        let Some((_, _, verdict)) = parents.iter().find(|(_, deleted, _)| *deleted) else {
            return Ok(applied);
        };
        let under_tombstone = |pk: &str| parents.iter().any(|(parent, deleted, _)| *deleted && *parent == pk);
        let (last, first): (Vec<_>, Vec<_>) = written.into_iter().partition(|(pk, _)| under_tombstone(pk));
        self.delete_in_turn([first, last]).await?;
        // What the write gave up to fit (a skeleton DynamoDB refused) stays reported.
        Ok(Applied { verdict: *verdict, ..applied })
    }

    /// Rule 2 for a session or membership item already written, whoever wrote it: the cleanup
    /// function calls it for every such item the table's stream reports written. If the item the
    /// written one hangs off in its own partition (the user item under `USER#`, the organization
    /// item under `ORG#`) is a tombstone, the item and, for a membership, its other item (first)
    /// are deleted. A membership's two items are written together, so between the two records one
    /// checks the user and the other the organization. Returns whether the item was there to
    /// delete: usually its writer (or the tombstone's removal) has already deleted it, and then
    /// nothing is sent (its other item went first, so it is gone too).
    pub async fn remove_if_orphaned(&self, pk: &str, sk: &str) -> Result<bool, StoreError> {
        let parent_sk = match pk.split_once('#') {
            Some(("USER", _)) if sk != plan::USER_SK => plan::USER_SK,
            Some(("ORG", _)) if sk != plan::ORGANIZATION_SK => plan::ORGANIZATION_SK,
            _ => return Ok(false),
        };
        if !self.is_tombstone(pk, parent_sk).await? || !self.exists(pk, sk).await? {
            return Ok(false);
        }
        let other = plan::membership_counterpart(pk, sk).into_iter().collect();
        self.delete_in_turn([other, vec![(pk.to_owned(), sk.to_owned())]]).await?;
        Ok(true)
    }

    /// Deletes each group of keys once the one before it is wholly deleted.
    async fn delete_in_turn<const N: usize>(&self, groups: [Vec<(String, String)>; N]) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + self.removal_budget;
        for keys in groups {
            let keys = keys.into_iter().map(|(pk, sk)| key_of(pk, sk)).collect();
            if !self.delete_all(keys, deadline).await? {
                return Err(StoreError::Contention { operation: "BatchWriteItem" });
            }
        }
        Ok(())
    }

    /// Whether the item `pk`, `sk` is a tombstone: one strongly consistent Query (the function
    /// may Query, and needs no GetItem).
    async fn is_tombstone(&self, pk: &str, sk: &str) -> Result<bool, StoreError> {
        let item = self.read_key(pk, sk, Some("#deleted")).await?;
        Ok(item.as_ref().is_some_and(is_deleted))
    }

    /// Whether the item `pk`, `sk` exists (strongly consistent).
    async fn exists(&self, pk: &str, sk: &str) -> Result<bool, StoreError> {
        Ok(self.read_key(pk, sk, Some("#pk")).await?.is_some())
    }

    /// The item `pk`, `sk`, whole or projected to `projection` (`#pk` or `#deleted`): one
    /// strongly consistent Query (which the function's role has, where it has no GetItem), its
    /// read units recorded.
    pub(super) async fn read_key(
        &self,
        pk: &str,
        sk: &str,
        projection: Option<&str>,
    ) -> Result<Option<Item>, StoreError> {
        // DynamoDB refuses a name the request does not use.
        let mut names = HashMap::from([("#pk".to_owned(), "pk".to_owned()), ("#sk".to_owned(), "sk".to_owned())]);
        if projection.is_some_and(|p| p.contains("#deleted")) {
            names.insert("#deleted".to_owned(), "deleted".to_owned());
        }
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("#pk = :pk AND #sk = :sk")
            .set_expression_attribute_names(Some(names))
            .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
            .expression_attribute_values(":sk", AttributeValue::S(sk.to_owned()))
            .set_projection_expression(projection.map(str::to_owned))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| request_error("Query", e))?;
        metrics::record_read(output.consumed_capacity.as_ref());
        Ok(output.items.and_then(|mut items| items.pop()))
    }

    /// A TransactWriteItems of `puts` under `expression`. A refused put is judged by `judge` from
    /// what was stored; a conflict with another transaction is tried again. If DynamoDB refuses a
    /// put as invalid, the puts' skeletons are written instead (see [`Store::put_one`]).
    async fn put_pair(
        &self,
        puts: Vec<Item>,
        fit: Fit,
        expression: &'static str,
        values: HashMap<String, AttributeValue>,
        judge: impl Fn(Option<&Item>) -> Result<Verdict, StoreError>,
    ) -> Result<Applied, StoreError> {
        let result = self.transact(&puts, expression, &values, &judge).await;
        match result {
            Err(StoreError::Invalid { detail, .. }) => {
                warn!(reason = %detail, "DynamoDB refused the item; writing it without data and public_metadata");
                let skeletons: Vec<Item> = puts.iter().map(item::skeleton).collect();
                let verdict = self.transact(&skeletons, expression, &values, &judge).await?;
                // Only a skeleton that was written left something out.
                Ok(Applied::written(verdict, Fit { refused: verdict == Verdict::Apply, ..fit }))
            }
            other => Ok(Applied::written(other?, fit)),
        }
    }

    async fn transact(
        &self,
        puts: &[Item],
        expression: &'static str,
        values: &HashMap<String, AttributeValue>,
        judge: &impl Fn(Option<&Item>) -> Result<Verdict, StoreError>,
    ) -> Result<Verdict, StoreError> {
        let build_error = |e: aws_sdk_dynamodb::error::BuildError| StoreError::Conversion(e.to_string());
        // Every write reports the capacity it consumed, table and indexes, into the request's
        // metrics (crate::metrics): what each event really costs, in production.
        let mut request = self.client.transact_write_items().return_consumed_capacity(ReturnConsumedCapacity::Indexes);
        for item in puts {
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression(expression)
                .set_expression_attribute_names(Some(names(expression)))
                .set_expression_attribute_values(Some(values.clone()))
                .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
                .build()
                .map_err(build_error)?;
            request = request.transact_items(TransactWriteItem::builder().put(put).build());
        }

        for attempt in 0..=MAX_CONTENTION_RETRIES {
            let reasons = match request.clone().send().await {
                Ok(output) => {
                    metrics::record_write(output.consumed_capacity());
                    return Ok(Verdict::Apply);
                }
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                        cancelled.cancellation_reasons.unwrap_or_default()
                    }
                    other => return Err(service_error("TransactWriteItems", &other)),
                },
                Err(other) => return Err(request_error("TransactWriteItems", other)),
            };
            let failed = |i: usize| reasons.get(i).and_then(|r| r.code()) == Some("ConditionalCheckFailed");
            if let Some(put) = (0..reasons.len()).find(|i| failed(*i)) {
                return judge(reasons[put].item());
            }
            if let Some(invalid) = reasons.iter().find(|r| r.code() == Some("ValidationError")) {
                let detail = format!("ValidationError: {}", invalid.message().unwrap_or(""));
                return Err(StoreError::Invalid { operation: "TransactWriteItems", detail });
            }
            warn!(attempt, reasons = ?codes(&reasons), "transaction cancelled; trying again");
            backoff(attempt).await;
        }
        Err(StoreError::Contention { operation: "TransactWriteItems" })
    }

    /// A PutItem under `expression`, with what was stored when the condition refused it. A
    /// conflict with a transaction on the same item (`TransactionConflictException`) is tried
    /// again with backoff.
    async fn conditional_put(
        &self,
        item: &Item,
        expression: &'static str,
        rank: Rank,
    ) -> Result<ConditionalPut, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item.clone()))
            .condition_expression(expression)
            .set_expression_attribute_names(Some(names(expression)))
            .set_expression_attribute_values(Some(values(expression, rank)))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes);
        for attempt in 0..=MAX_CONTENTION_RETRIES {
            match request.clone().send().await {
                Ok(output) => {
                    metrics::record_write(output.consumed_capacity.as_ref());
                    return Ok(Written);
                }
                Err(SdkError::ServiceError(e)) => match e.into_err() {
                    PutItemError::ConditionalCheckFailedException(failed) => {
                        return Ok(Refused(failed.item.as_ref().and_then(stored)));
                    }
                    PutItemError::TransactionConflictException(_) => {
                        warn!(attempt, "PutItem conflicted with a transaction; trying again");
                        backoff(attempt).await;
                    }
                    other => return Err(service_error("PutItem", &other)),
                },
                Err(other) => return Err(request_error("PutItem", other)),
            }
        }
        Err(StoreError::Contention { operation: "PutItem" })
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
fn refused<S>(stored: Option<S>, rule: impl FnOnce(S) -> Verdict) -> Result<Verdict, StoreError> {
    match stored.map(rule) {
        Some(Verdict::Apply) => Err(StoreError::RulesDisagree),
        Some(verdict) => Ok(verdict),
        None => Ok(Verdict::Stale),
    }
}

fn codes(reasons: &[CancellationReason]) -> Vec<&str> {
    reasons.iter().map(|r| r.code().unwrap_or("None")).collect()
}

/// Whether a stored item is a tombstone (a user's, an organization's or a membership's).
pub fn is_deleted(item: &Item) -> bool {
    matches!(item.get("deleted"), Some(AttributeValue::Bool(true)))
}

/// Reads the precedence-relevant attributes of a stored item.
fn stored(item: &Item) -> Option<Stored> {
    let deleted = is_deleted(item);
    let terminal = item.get("status").and_then(|s| s.as_s().ok()).is_some_and(|s| rules::is_terminal(s));
    Some(Stored { rank: stored_rank(item)?, deleted, terminal })
}

/// A stored item's `version` and `digest`. A `digest` this crate did not write (not 32 lowercase
/// hex digits, or not a string) is read as the highest: the rule then never calls for a write the
/// condition refused, which would fail every delivery of that version (higher versions still apply).
fn stored_rank(item: &Item) -> Option<Rank> {
    let version = item.get("version")?.as_n().ok()?.parse().ok()?;
    let digest = item.get("digest").map(|d| d.as_s().ok().and_then(|d| Digest::from_hex(d)).unwrap_or(Digest::MAX));
    Some(Rank::new(version, digest))
}

/// Reads what the membership rule compares from a stored membership item.
fn stored_membership(item: &Item) -> Option<MembershipState<'_>> {
    Some(MembershipState {
        created_at: item.get("created_at")?.as_n().ok()?.parse().ok()?,
        id: item.get("id")?.as_s().ok()?,
        deleted: is_deleted(item),
        rank: stored_rank(item)?,
    })
}

fn names(expression: &str) -> HashMap<String, String> {
    condition::names_used_by(expression).map(|(p, n)| (p.to_owned(), n.to_owned())).collect()
}

/// The incoming rank's placeholders (and the terminal statuses) an expression uses. An absent
/// digest is the empty string, below every digest, as [`Rank`] orders it.
fn values(expression: &str, rank: Rank) -> HashMap<String, AttributeValue> {
    let mut values = HashMap::from([(condition::VERSION.to_owned(), AttributeValue::N(rank.version.to_string()))]);
    if expression.contains(condition::DIGEST) {
        let digest = rank.digest.map(Digest::to_hex).unwrap_or_default();
        values.insert(condition::DIGEST.to_owned(), AttributeValue::S(digest));
    }
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

/// Waits before the next try of a write that lost to contention: exponential, with half of each
/// step random ("equal jitter"), so that writes which conflicted together (a `/sync` and the
/// webhooks of a sign-in, say) do not retry together and conflict again.
async fn backoff(attempt: u32) {
    use std::hash::{BuildHasher, Hasher};
    let step = 20u64 << attempt.min(5);
    // RandomState is seeded from the OS's randomness; a per-call hasher is a cheap random number.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    tokio::time::sleep(Duration::from_millis(step / 2 + random % (step / 2 + 1))).await;
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
            | "TransactionConflictException"
            | "ReplicatedWriteConflictException"
    );
    // The message DynamoDB sends names attributes and limits, never item values.
    let detail = format!("{code}: {}", error.message().unwrap_or(""));
    if code == "ValidationException" {
        return StoreError::Invalid { operation, detail };
    }
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
