//! The one write path. Every object fetched from Clerk is read by `clerk_sync::event::read_object`,
//! planned by `clerk_sync::plan::plan` and written by `clerk_sync::store::Store::apply`, exactly as
//! a webhook carrying it would be: the same items, under the same conditional writes, so a backfill
//! never overwrites newer webhook data and a later webhook always wins over a backfill.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use clerk_sync::event::{Event, read_object};
use clerk_sync::plan::{self, Write};
use clerk_sync::rules::Verdict;
use clerk_sync::store::{Applied, Store, StoreError};
use serde_json::value::RawValue;
use tokio::task::JoinSet;

use crate::error::RunError;
use crate::progress::Progress;
use clerk_sync::clerk::Clerk;

/// The event type a fetched user is read as: the whole current user object, as `user.updated` carries.
pub const USER_EVENT: &str = "user.updated";
/// The event type a fetched session is read as: any `session.*` type with a session object is an upsert.
pub const SESSION_EVENT: &str = "session.updated";

/// The event type a fetched organization is read as.
pub const ORGANIZATION_EVENT: &str = "organization.updated";
/// The event type a fetched organization membership is read as.
pub const MEMBERSHIP_EVENT: &str = "organizationMembership.updated";

/// Writes in flight at once. DynamoDB takes far more; this keeps a laptop's connection pool small.
const WRITE_CONCURRENCY: usize = 16;

/// A Clerk object with the write the webhook path plans for it.
pub struct Planned {
    pub id: String,
    pub write: Write,
}

/// Reads a whole page of objects (a JSON array) before anything of it is written: the first
/// object that cannot be read stops the run, named by page and index, never quoted.
pub fn plan_array(body: &[u8], event_type: &str, options: plan::Options, page: &str) -> Result<Vec<Planned>, RunError> {
    let objects: Vec<Box<RawValue>> = serde_json::from_slice(body).map_err(|e| RunError::MalformedPage {
        page: page.to_owned(),
        reason: match e.classify() {
            serde_json::error::Category::Data => "not a JSON array of objects".to_owned(),
            _ => format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        },
    })?;
    plan_objects(&objects, event_type, options, page)
}

/// Every page of an offset-paged Clerk list (`GET /organizations`, `/organization_memberships`),
/// each read whole through the webhook path as `event_type` and handed to `visit` before the next
/// page is fetched. The progress bar counts `unit` against Clerk's `total_count`.
#[allow(clippy::too_many_arguments)]
pub async fn for_each_offset_page(
    clerk: &Clerk,
    path: &str,
    event_type: &str,
    unit: &'static str,
    limit: u32,
    options: plan::Options,
    progress: &Progress,
    mut visit: impl AsyncFnMut(Vec<Planned>) -> Result<(), RunError>,
) -> Result<(), RunError> {
    let mut offset = 0;
    loop {
        let page = clerk.offset_page(path, &[], limit, offset).await?;
        if offset == 0 {
            progress.stage(unit, Some(page.total_count));
        }
        let planned = plan_objects(&page.data, event_type, options, &format!("GET {path} at offset {offset}"))?;
        let received = planned.len();
        visit(planned).await?;
        offset += received as u64;
        progress.advance(received as u64);
        if page.is_last(offset, received) {
            return Ok(());
        }
    }
}

pub fn plan_objects(
    objects: &[Box<RawValue>],
    event_type: &str,
    options: plan::Options,
    page: &str,
) -> Result<Vec<Planned>, RunError> {
    objects
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            plan_object(event_type, raw, options).map_err(|reason| RunError::MalformedObject {
                page: page.to_owned(),
                index,
                reason,
            })
        })
        .collect()
}

/// One object through `read_object` and `plan`, as the webhook `event_type` would carry it.
fn plan_object(event_type: &str, raw: &RawValue, options: plan::Options) -> Result<Planned, String> {
    let kind = read_object(event_type, raw).map_err(|e| e.to_string())?;
    let id = kind.object_id().map(str::to_owned);
    let event = Event { event_type: event_type.to_owned(), timestamp: None, instance_id: None, kind };
    match (plan::plan(&event, options).map_err(|e| e.to_string())?, id) {
        (Some(write), Some(id)) => Ok(Planned { id, write }),
        _ => Err(format!("not an object a {event_type} event carries")),
    }
}

/// Timeouts and retries in the style of the function's (`clerk_sync::store`), for a batch job
/// rather than a webhook answer: more patient per attempt, and more attempts, because a bulk
/// import can meet throttling on a table that has not scaled yet and nobody waits on each write.
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_attempt_timeout(Duration::from_secs(10))
        .operation_timeout(Duration::from_secs(60))
        .build()
}

pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(8).with_max_backoff(Duration::from_secs(10))
}

/// A DynamoDB client on the standard AWS configuration chain (environment, profiles, SSO;
/// `AWS_ENDPOINT_URL` for a local DynamoDB API).
pub async fn dynamodb() -> Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeout_config())
        .retry_config(retry_config())
        .load()
        .await;
    Client::new(&sdk)
}

/// What the table said to the writes of one kind of object.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub fetched: u64,
    pub applied: u64,
    pub duplicate: u64,
    pub stale: u64,
    pub user_deleted: u64,
    pub organization_deleted: u64,
    pub sessions_removed: u64,
    pub memberships_removed: u64,
    /// Objects DynamoDB would not store even without `data` and `public_metadata`: each is named
    /// on stderr (`skipped <id>: <why>`), and the run goes on.
    pub skipped: u64,
}

impl Tally {
    fn count(&mut self, applied: Applied) {
        match applied.verdict {
            Verdict::Apply => self.applied += 1,
            Verdict::Duplicate => self.duplicate += 1,
            Verdict::Stale => self.stale += 1,
            Verdict::UserDeleted => self.user_deleted += 1,
            Verdict::OrganizationDeleted => self.organization_deleted += 1,
        }
        self.sessions_removed += applied.sessions_removed as u64;
        self.memberships_removed += applied.memberships_removed as u64;
    }

    pub fn verdicts(&self) -> String {
        format!(
            "applied={} duplicate={} stale={} user_deleted={} skipped={}",
            self.applied, self.duplicate, self.stale, self.user_deleted, self.skipped
        )
    }
}

/// Offers every write to the table through `Store::apply`, a bounded number at once, counting the
/// verdicts into `tally` (and showing it through `report`). A write that can never succeed because
/// of the object itself (DynamoDB refused even its skeleton) is skipped and named on stderr, so
/// that no object stops every run at the same place; a failure of DynamoDB, the credentials or the
/// table stops the run (with its resume command). On the first other failure no further write starts; those
/// in flight finish and are counted, then the failure is returned. Every write is idempotent, so
/// offering the same ones again after a failure is safe.
pub async fn apply_all(
    store: &Store,
    planned: Vec<Planned>,
    tally: &mut Tally,
    report: &dyn Fn(&Tally),
) -> Result<(), RunError> {
    let mut pending = planned.into_iter();
    let mut running: JoinSet<(String, Result<Applied, StoreError>)> = JoinSet::new();
    let mut failure = None;
    loop {
        while failure.is_none() && running.len() < WRITE_CONCURRENCY {
            let Some(Planned { id, write }) = pending.next() else { break };
            let store = store.clone();
            running.spawn(async move { (id, store.apply(&write).await) });
        }
        let Some(joined) = running.join_next().await else { break };
        match joined {
            Ok((_, Ok(applied))) => tally.count(applied),
            Ok((id, Err(source))) if source.is_about_the_item() => {
                tally.skipped += 1;
                eprintln!("skipped {id}: {source}");
            }
            Ok((id, Err(source))) => {
                failure.get_or_insert(RunError::Write { id, source });
            }
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
        report(tally);
    }
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP: plan::Options = plan::Options { store_clerk_data: true };

    /// The error's message (planned objects have no Debug: they hold personal data).
    fn error_of(result: Result<Vec<Planned>, RunError>) -> String {
        match result {
            Ok(_) => panic!("planned without error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_page_of_users_is_planned_as_user_upserts() {
        let body = br#"[{"id":"user_1","updated_at":5,"first_name":"Jane"},{"id":"user_2","updated_at":6}]"#;
        let planned = plan_array(body, USER_EVENT, KEEP, "page 1").unwrap();
        let ids: Vec<_> = planned.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["user_1", "user_2"]);
        assert!(matches!(&planned[0].write, Write::UpsertUser(item) if item.version == 5));
    }

    #[test]
    fn a_page_that_is_not_json_names_the_page_and_position() {
        let error = error_of(plan_array(b"[{\"id\":", USER_EVENT, KEEP, "page 3 of users (after user_9)"));
        assert_eq!(error, "page 3 of users (after user_9): the answer is not valid JSON (line 1, column 7)");
    }

    #[test]
    fn a_page_that_is_not_an_array_is_refused() {
        let error = error_of(plan_array(br#"{"data":[]}"#, USER_EVENT, KEEP, "page 1 of users"));
        assert_eq!(error, "page 1 of users: the answer is not a JSON array of objects");
    }

    #[test]
    fn an_unreadable_object_is_named_by_index_without_its_values() {
        let body =
            br#"[{"id":"user_1","updated_at":5},{"id":"user_2","updated_at":6,"first_name":{"x":"jane@example.org"}}]"#;
        let message = error_of(plan_array(body, USER_EVENT, KEEP, "page 1 of users"));
        assert!(message.starts_with("page 1 of users, object 1: the user.updated event's data is not a valid user"));
        assert!(!message.contains("jane"), "{message}");
    }

    #[test]
    fn a_user_without_updated_at_cannot_be_written() {
        let message = error_of(plan_array(br#"[{"id":"user_1"}]"#, USER_EVENT, KEEP, "page 1"));
        assert!(message.contains("object 0") && message.contains("no version"), "{message}");
    }

    #[test]
    fn a_session_is_planned_under_its_user() {
        let body = br#"[{"object":"session","id":"sess_1","user_id":"user_1","status":"active","updated_at":9}]"#;
        let planned = plan_array(body, SESSION_EVENT, KEEP, "sessions").unwrap();
        assert!(matches!(&planned[0].write, Write::UpsertSession(item) if item.pk == "USER#user_1"));
    }

    #[test]
    fn something_else_in_a_session_list_is_refused() {
        let body = br#"[{"object":"token","id":"x"}]"#;
        let message = error_of(plan_array(body, SESSION_EVENT, KEEP, "sessions"));
        assert_eq!(message, "sessions, object 0: not an object a session.updated event carries");
    }
}
