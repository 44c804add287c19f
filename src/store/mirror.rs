//! The table's record of the Clerk instance it mirrors (`pk = META`, `sk = INSTANCE`): the
//! envelope's `instance_id` of the deliveries, and whether the function keeps `data`. It is not a
//! Clerk object and follows none of the convergence rules: it guards them. Only the function
//! writes it, on the first delivery of each of its instances, from what Clerk signed, and it
//! refuses deliveries from another Clerk instance; `clerk-sync-admin` only reads it, to refuse a
//! secret key of another instance before any write and to write items the way the function does.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, request_error, service_error};
use crate::metrics;

pub const MIRROR_PK: &str = "META";
pub const MIRROR_SK: &str = "INSTANCE";

/// What the table records about the Clerk instance it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Clerk's instance id, `ins_...`.
    pub instance_id: String,
    /// Whether the function keeps the Clerk object under `data` (`STORE_CLERK_DATA`); `None` in a
    /// record that does not say.
    pub store_clerk_data: Option<bool>,
}

/// What recording the mirror found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The table mirrors this instance (now, or already).
    Same,
    /// The table mirrors another instance: nothing was written.
    Other(Mirror),
}

impl Store {
    /// Records that the table mirrors `mirror.instance_id` (with the function's `data` setting,
    /// which each cold start refreshes), unless it mirrors another instance.
    pub async fn record_mirror(&self, mirror: &Mirror) -> Result<Recorded, StoreError> {
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(mirror_item(mirror)))
            .condition_expression("attribute_not_exists(#pk) OR #instance_id = :instance_id")
            .expression_attribute_names("#pk", "pk")
            .expression_attribute_names("#instance_id", "instance_id")
            .expression_attribute_values(":instance_id", AttributeValue::S(mirror.instance_id.clone()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Indexes);
        match request.send().await {
            Ok(output) => {
                metrics::record_write(output.consumed_capacity.as_ref());
                Ok(Recorded::Same)
            }
            Err(SdkError::ServiceError(e)) => match e.into_err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    let recorded = failed.item.as_ref().and_then(read_mirror);
                    Ok(match recorded {
                        Some(recorded) if recorded.instance_id != mirror.instance_id => Recorded::Other(recorded),
                        _ => Recorded::Same,
                    })
                }
                other => Err(service_error("PutItem", &other)),
            },
            Err(other) => Err(request_error("PutItem", other)),
        }
    }

    /// What the table records, if anything: for the operator's tool, and for `/sync`, which
    /// compares a token's instance with it but never records one. A Query (which the function's
    /// role already has) of the one item, strongly consistent.
    pub async fn mirror(&self) -> Result<Option<Mirror>, StoreError> {
        Ok(self.read_key(MIRROR_PK, MIRROR_SK, None).await?.as_ref().and_then(read_mirror))
    }
}

fn mirror_item(mirror: &Mirror) -> Item {
    let mut item = Item::from([
        ("pk".to_owned(), AttributeValue::S(MIRROR_PK.to_owned())),
        ("sk".to_owned(), AttributeValue::S(MIRROR_SK.to_owned())),
        ("instance_id".to_owned(), AttributeValue::S(mirror.instance_id.clone())),
    ]);
    if let Some(store_clerk_data) = mirror.store_clerk_data {
        item.insert("store_clerk_data".to_owned(), AttributeValue::Bool(store_clerk_data));
    }
    item
}

/// A record without an `instance_id` string is no record: nothing can be checked against it.
fn read_mirror(item: &Item) -> Option<Mirror> {
    Some(Mirror {
        instance_id: item.get("instance_id")?.as_s().ok()?.clone(),
        store_clerk_data: item.get("store_clerk_data").and_then(|v| v.as_bool().ok()).copied(),
    })
}
