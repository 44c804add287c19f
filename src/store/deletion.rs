//! Removing what hangs off a tombstone: a user's sessions and memberships, an organization's
//! memberships, and of each membership both its items.
//!
//! Page by page, deleting while reading, so memory stays bounded whatever the size, with a page's
//! batches in parallel. Of each membership pair, the item in the other partition is deleted
//! before the item under the tombstone, which is the only way to find it: whatever interrupts a
//! removal (a batch half processed, throttling, the deadline, the process killed), every pair
//! whose other item may still exist keeps its item under the tombstone, so the next attempt finds
//! it again. Deleting an item that is already gone is a no-op, so attempts may repeat and overlap.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, ReturnConsumedCapacity, WriteRequest};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::{Item, MAX_CONTENTION_RETRIES, Store, StoreError, backoff, request_error};
use crate::{metrics, plan};

/// DynamoDB's BatchWriteItem limit.
const BATCH_SIZE: usize = 25;
/// Batches sent at once. Most deletes of a page go to one partition, which takes about 1,000
/// writes a second on DynamoDB: 8 batches of 25 in flight keep it busy without flooding it.
const BATCHES_IN_FLIGHT: usize = 8;
/// Keys read per Query page (a keys-only page of 1,000 is about 60 KB).
pub const DEFAULT_PAGE_SIZE: i32 = 1000;

/// Running totals of tombstones written and items removed under them, kept as the work goes
/// (after each page), for whoever must report true counts when interrupted: the operator's tool.
#[derive(Debug, Default)]
pub struct Removed {
    pub tombstones: AtomicUsize,
    pub sessions: AtomicUsize,
    pub memberships: AtomicUsize,
}

impl Removed {
    pub fn get(&self) -> (usize, usize, usize) {
        let load = |n: &AtomicUsize| n.load(Ordering::Relaxed);
        (load(&self.tombstones), load(&self.sessions), load(&self.memberships))
    }
}

/// What one removal did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removal {
    /// Session items removed.
    pub sessions: usize,
    /// Memberships removed, each a pair of items.
    pub memberships: usize,
    /// Whether the partition holds nothing but its tombstone now. When not, the deadline came
    /// first and a later attempt goes on.
    pub complete: bool,
}

impl Store {
    /// Removes every item in the partition `pk` but its root (`root_sk`), and the other item of
    /// each membership among them, page by page until the partition is empty or `deadline` has
    /// passed. At the deadline it stops where it is, even within a page, and says the removal is
    /// not complete: the other side of a page is always wholly deleted before its items under the
    /// tombstone are touched, so a stop anywhere leaves every remaining pair findable.
    pub(super) async fn remove_children(
        &self,
        pk: &str,
        root_sk: &str,
        deadline: Instant,
    ) -> Result<Removal, StoreError> {
        let mut removal = Removal::default();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_owned()))
                .projection_expression("pk, sk")
                .consistent_read(true)
                .limit(self.removal_page_size)
                .set_exclusive_start_key(start.take())
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| request_error("Query", e))?;
            metrics::record_read(page.consumed_capacity.as_ref());
            let (mut under_tombstone, mut others) = (Vec::new(), Vec::new());
            let (mut sessions, mut memberships) = (0, 0);
            for key in page.items.unwrap_or_default() {
                let sk = key.get("sk").and_then(|sk| sk.as_s().ok()).map(String::as_str).unwrap_or_default();
                if sk == root_sk {
                    continue;
                }
                if sk.starts_with(plan::SESSION_SK_PREFIX) {
                    sessions += 1;
                }
                if let Some((other_pk, other_sk)) = plan::membership_counterpart(pk, sk) {
                    memberships += 1;
                    others.push(key_of(other_pk, other_sk));
                }
                under_tombstone.push(key);
            }
            if !self.delete_all(others, deadline).await? || !self.delete_all(under_tombstone, deadline).await? {
                return Ok(removal);
            }
            removal.sessions += sessions;
            removal.memberships += memberships;
            if let Some(removed) = &self.removed {
                removed.sessions.fetch_add(sessions, Ordering::Relaxed);
                removed.memberships.fetch_add(memberships, Ordering::Relaxed);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                removal.complete = true;
                return Ok(removal);
            }
            if Instant::now() >= deadline {
                return Ok(removal);
            }
        }
    }

    /// Deletes these items: membership items whose other item an earlier, interrupted removal
    /// already took (orphans), as `clerk-sync-admin reconcile` finds them.
    pub async fn remove_items(&self, keys: Vec<(String, String)>) -> Result<(), StoreError> {
        let deadline = Instant::now() + self.removal_budget;
        let keys = keys.into_iter().map(|(pk, sk)| key_of(pk, sk)).collect();
        match self.delete_all(keys, deadline).await? {
            true => Ok(()),
            false => Err(StoreError::Contention { operation: "BatchWriteItem" }),
        }
    }

    /// Deletes `keys`, in batches of 25, several at once: `true` once every one is confirmed,
    /// `false` if `deadline` came first (the batches still in flight are abandoned; deletes repeat
    /// safely).
    pub(super) async fn delete_all(&self, keys: Vec<Item>, deadline: Instant) -> Result<bool, StoreError> {
        let mut batches = keys.chunks(BATCH_SIZE).map(<[Item]>::to_vec).collect::<Vec<_>>().into_iter();
        let mut running = JoinSet::new();
        loop {
            while running.len() < BATCHES_IN_FLIGHT {
                let Some(batch) = batches.next() else { break };
                let store = self.clone();
                running.spawn(metrics::within(metrics::current(), async move { store.batch_delete(batch).await }));
            }
            match tokio::time::timeout_at(deadline, running.join_next()).await {
                Err(_) => return Ok(false),
                Ok(None) => return Ok(true),
                Ok(Some(Ok(result))) => result?,
                Ok(Some(Err(e))) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }

    /// One BatchWriteItem of deletes, sending again what DynamoDB leaves unprocessed (throttling,
    /// a transaction on the item) with backoff.
    async fn batch_delete(&self, keys: Vec<Item>) -> Result<(), StoreError> {
        let mut requests: Vec<WriteRequest> = keys
            .into_iter()
            .map(|key| {
                let delete = DeleteRequest::builder().set_key(Some(key)).build();
                delete.map(|d| WriteRequest::builder().delete_request(d).build())
            })
            .collect::<Result<_, _>>()
            .map_err(|e| StoreError::Conversion(e.to_string()))?;
        for attempt in 0..=MAX_CONTENTION_RETRIES {
            let request = self.client.batch_write_item().request_items(&self.table, requests.clone());
            let sent = request.return_consumed_capacity(ReturnConsumedCapacity::Indexes).send().await;
            let output = match sent {
                Ok(output) => {
                    metrics::record_write(output.consumed_capacity());
                    output
                }
                // A transaction on one of the items: send the whole batch again (deletes repeat safely).
                Err(e) if e.as_service_error().and_then(|e| e.code()) == Some("TransactionConflictException") => {
                    backoff(attempt).await;
                    continue;
                }
                Err(e) => return Err(request_error("BatchWriteItem", e)),
            };
            requests = output.unprocessed_items.and_then(|mut left| left.remove(&self.table)).unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            backoff(attempt).await;
        }
        Err(StoreError::Contention { operation: "BatchWriteItem" })
    }
}

pub(super) fn key_of(pk: String, sk: String) -> Item {
    Item::from([("pk".to_owned(), AttributeValue::S(pk)), ("sk".to_owned(), AttributeValue::S(sk))])
}
