//! The table's record of the Clerk instance it mirrors (`pk = META`, `sk = INSTANCE`): the
//! envelope's `instance_id` of the deliveries, and whether the function keeps `data`. It is not a
//! Clerk object and follows none of the convergence rules: it guards them. The function records
//! it on the first delivery of each of its instances, and refuses deliveries from another Clerk
//! instance; `clerk-sync-admin` refuses, before any write, a secret key of another instance, and
//! writes items the way the function does.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};

use super::{Item, Store, StoreError, request_error, service_error};

pub const MIRROR_PK: &str = "META";
pub const MIRROR_SK: &str = "INSTANCE";

/// What the table records about the Clerk instance it mirrors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Clerk's instance id, `ins_...`.
    pub instance_id: String,
    /// Whether the function keeps the Clerk object under `data` (`STORE_CLERK_DATA`).
    pub store_clerk_data: bool,
}

/// What recording the mirror found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The table mirrors this instance (now, or already).
    Same,
    /// The table mirrors another instance: nothing was written.
    Other(Mirror),
}

/// Who records: the function's setting of `data` is the one that counts, so it overwrites the
/// record of its own instance; the operator's tool only records where nothing is recorded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorder {
    Function,
    Operator,
}

impl Store {
    /// Records that the table mirrors `mirror.instance_id`, unless it mirrors another instance.
    pub async fn record_mirror(&self, mirror: &Mirror, recorder: Recorder) -> Result<Recorded, StoreError> {
        let condition = match recorder {
            Recorder::Function => "attribute_not_exists(#pk) OR #instance_id = :instance_id",
            Recorder::Operator => "attribute_not_exists(#pk)",
        };
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(mirror_item(mirror)))
            .condition_expression(condition)
            .expression_attribute_names("#pk", "pk")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if recorder == Recorder::Function {
            request = request
                .expression_attribute_names("#instance_id", "instance_id")
                .expression_attribute_values(":instance_id", AttributeValue::S(mirror.instance_id.clone()));
        }
        match request.send().await {
            Ok(_) => Ok(Recorded::Same),
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

    /// What the table records, if anything (the operator's tool; the function never reads it).
    pub async fn mirror(&self) -> Result<Option<Mirror>, StoreError> {
        let key = |v: &str| AttributeValue::S(v.to_owned());
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", key(MIRROR_PK))
            .key("sk", key(MIRROR_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| request_error("GetItem", e))?;
        Ok(output.item.as_ref().and_then(read_mirror))
    }
}

fn mirror_item(mirror: &Mirror) -> Item {
    Item::from([
        ("pk".to_owned(), AttributeValue::S(MIRROR_PK.to_owned())),
        ("sk".to_owned(), AttributeValue::S(MIRROR_SK.to_owned())),
        ("instance_id".to_owned(), AttributeValue::S(mirror.instance_id.clone())),
        ("store_clerk_data".to_owned(), AttributeValue::Bool(mirror.store_clerk_data)),
    ])
}

fn read_mirror(item: &Item) -> Option<Mirror> {
    Some(Mirror {
        instance_id: item.get("instance_id")?.as_s().ok()?.clone(),
        store_clerk_data: *item.get("store_clerk_data")?.as_bool().ok()?,
    })
}
