//! The first entrance: a Clerk webhook (`POST /webhooks/clerk`), steps 2 to 5 of a delivery.
//!
//! `answer` reads top to bottom as the life of a delivery: size, content type, verify, parse,
//! plan, store, answer. Every way out is an HTTP answer (never an `Err` to the runtime) and one log
//! line with the message id, event type, object id, version and outcome.

use std::time::Duration;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::event::{self, EventKind};
use crate::handler::{Failure, MirrorGuard, error, respond};
use crate::metrics;
use crate::plan::{self, Options};
use crate::rules::Verdict;
use crate::store::{Applied, Store, StoreError};
use crate::verify::{Unverified, Verifier, VerifyError};

/// The route Clerk is pointed at.
pub const ROUTE: &str = "/webhooks/clerk";
/// Bodies above this are refused before any other work. Clerk's largest payloads (a user with
/// its three metadata objects at Clerk's 8 KB limit each, plus many addresses) stay under 64 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The longest the store may take before the delivery is answered 503 (and retried by Svix):
/// inside the function's 10 s timeout and Svix's 15 s.
const STORE_DEADLINE: Duration = Duration::from_secs(8);

/// Everything a delivery borrows from the function.
pub struct Context<'a> {
    pub verifier: &'a Verifier,
    pub store: &'a Store,
    pub options: Options,
    pub mirror: &'a MirrorGuard,
}

/// Answers one delivery as if the clock read `now` (unix seconds).
pub async fn answer(context: Context<'_>, request: &Request, now: i64, log: &mut LogLine) -> Response<Body> {
    let Context { verifier, store, options, mirror } = context;
    if request.method() != Method::POST {
        let mut answer = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        answer.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return log.refused(answer, "method not allowed");
    }
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        let message = format!("body is larger than {MAX_BODY_BYTES} bytes");
        return log.refused(error(StatusCode::PAYLOAD_TOO_LARGE, &message), "body too large");
    }
    if !is_json(request) {
        let answer = error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "content-type must be application/json");
        return log.refused(answer, "not json");
    }

    let delivery = Unverified::new(request.headers(), body);
    log.svix_id = delivery.claimed_id().map(|id| id.chars().take(64).collect());
    let verified = match verifier.verify(delivery, now) {
        Ok(verified) => verified,
        Err(e) => {
            log.reason_class = Some(match e {
                VerifyError::InvalidTimestamp | VerifyError::TimestampTooOld | VerifyError::TimestampTooNew => {
                    metrics::reason::TIMESTAMP
                }
                _ => metrics::reason::SIGNATURE,
            });
            return log.refused(error(StatusCode::UNAUTHORIZED, "webhook verification failed"), &e.to_string());
        }
    };

    let event = match event::parse(&verified) {
        Ok(event) => event,
        Err(e) => {
            return log.refused(error(StatusCode::BAD_REQUEST, &e.to_string()), &e.to_string());
        }
    };
    log.event_type = Some(event.event_type.clone());
    log.object_id = event.kind.object_id().map(str::to_owned);

    let write = match plan::plan(&event, options) {
        Ok(Some(write)) => write,
        Ok(None) => {
            return log.answered(outcome("ignored", &event.event_type, None, &event.kind));
        }
        Err(e) => {
            return log.refused(error(StatusCode::BAD_REQUEST, &e.to_string()), &e.to_string());
        }
    };
    log.version = Some(write.version());

    let stored = async {
        mirror.check(store, options, event.instance_id.as_deref()).await?;
        store.apply(&write).await.map_err(Failure::Store)
    };
    let started = std::time::Instant::now();
    let (result, units) = metrics::counting(tokio::time::timeout(STORE_DEADLINE, stored)).await;
    log.store_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    log.units = units;
    match result {
        Ok(Err(Failure::OtherInstance { recorded, delivered })) => {
            log.reason_class = Some(metrics::reason::INSTANCE);
            let reason = format!("the table mirrors Clerk instance {recorded}; this delivery comes from {delivered}");
            log.refused(error(StatusCode::INTERNAL_SERVER_ERROR, "this table mirrors another Clerk instance"), &reason)
        }
        Ok(Ok(applied)) => {
            log.outcome = Some(verdict_name(applied.verdict));
            log.sessions_removed =
                matches!(event.kind, EventKind::UserDeleted { .. }).then_some(applied.sessions_removed);
            log.memberships_removed = removes_memberships(&event.kind).then_some(applied.memberships_removed);
            log.removal = removes_memberships(&event.kind).then_some(removal(applied));
            log.stored_as = applied.fit.reason();
            log.lost = applied.fit.lost_something();
            log.invalid_write = applied.fit.refused;
            log.answered(outcome(verdict_name(applied.verdict), &event.event_type, Some(applied), &event.kind))
        }
        Ok(Err(Failure::Store(e))) => {
            log.invalid_write = matches!(e, StoreError::Invalid { .. });
            let status =
                if e.is_transient() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::INTERNAL_SERVER_ERROR };
            log.refused(error(status, "the event could not be stored; retry later"), &e.to_string())
        }
        Err(_) => log.refused(
            error(StatusCode::SERVICE_UNAVAILABLE, "the event could not be stored in time; retry later"),
            "DynamoDB did not answer within the deadline",
        ),
    }
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

pub(crate) fn verdict_name(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Apply => "applied",
        Verdict::Duplicate => "duplicate",
        Verdict::Stale => "stale",
        Verdict::UserDeleted => "user_deleted",
        Verdict::OrganizationDeleted => "organization_deleted",
    }
}

/// Deletions that remove memberships, and report how many.
fn removes_memberships(kind: &EventKind<'_>) -> bool {
    matches!(kind, EventKind::UserDeleted { .. } | EventKind::OrganizationDeleted { .. })
}

fn outcome(name: &'static str, event_type: &str, applied: Option<Applied>, kind: &EventKind<'_>) -> Response<Body> {
    let mut body = json!({ "outcome": name, "type": event_type });
    if let Some(id) = kind.object_id() {
        body["id"] = json!(id);
    }
    if let Some(applied) = applied {
        if let EventKind::UserDeleted { .. } = kind {
            body["sessions_removed"] = json!(applied.sessions_removed);
        }
        if removes_memberships(kind) {
            body["memberships_removed"] = json!(applied.memberships_removed);
            body["removal"] = json!(removal(applied));
        }
    }
    respond(StatusCode::OK, &body)
}

/// Whether a deletion removed everything under its tombstone, or left the rest to the cleanup
/// function on the table's stream (and to any redelivery): the tombstone is written either way.
fn removal(applied: Applied) -> &'static str {
    if applied.removal_complete { "complete" } else { "continues" }
}

/// The one log line of a delivery. Holds ids and outcomes only: never a body, a header value
/// other than the message id, or anything from the user object.
#[derive(Default)]
pub struct LogLine {
    svix_id: Option<String>,
    event_type: Option<String>,
    object_id: Option<String>,
    version: Option<u64>,
    outcome: Option<&'static str>,
    sessions_removed: Option<usize>,
    memberships_removed: Option<usize>,
    removal: Option<&'static str>,
    /// What the item gave up to fit DynamoDB's limits, if anything.
    stored_as: Option<&'static str>,
    /// Whether that left something out of the item: logged as a warning with `left_out: true`,
    /// which the template's `ItemsLeftOut` metric counts.
    lost: bool,
    reason: Option<String>,
    /// The refusal's class for the metrics (see [`metrics::reason`]); from the status when unset.
    reason_class: Option<&'static str>,
    /// Time spent on DynamoDB, and the capacity it reported consumed.
    store_ms: Option<f64>,
    units: Option<metrics::Units>,
    /// DynamoDB refused a write as invalid (the skeleton was written, or the delivery failed).
    invalid_write: bool,
}

impl LogLine {
    fn answered(&mut self, answer: Response<Body>) -> Response<Body> {
        self.outcome.get_or_insert("ignored");
        answer
    }

    fn refused(&mut self, answer: Response<Body>, reason: &str) -> Response<Body> {
        self.outcome = Some("refused");
        self.reason = Some(reason.to_owned());
        answer
    }

    /// The delivery's metric document (see [`metrics`]).
    fn metrics(&self, status: u16) -> metrics::Request<'_> {
        let refused = self.outcome == Some("refused") || status >= 400;
        metrics::Request {
            route: "webhook",
            status,
            outcome: self.outcome.unwrap_or("ignored"),
            event_type: self.event_type.as_deref(),
            reason: if refused { self.reason_class.or_else(|| metrics::reason_of_status(status)) } else { None },
            store_ms: self.store_ms,
            units: self.units,
            invalid_write: self.invalid_write,
        }
    }

    pub fn emit(&self, status: StatusCode) {
        let status = status.as_u16();
        let emf = metrics::enabled().then(|| self.metrics(status).document().to_string());
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    svix_id = self.svix_id.as_deref(),
                    event_type = self.event_type.as_deref(),
                    object_id = self.object_id.as_deref(),
                    version = self.version,
                    outcome = self.outcome,
                    sessions_removed = self.sessions_removed,
                    memberships_removed = self.memberships_removed,
                    removal = self.removal,
                    stored_as = self.stored_as,
                    left_out = self.lost.then_some(true),
                    reason = self.reason.as_deref(),
                    status,
                    emf = emf.as_deref(),
                    "delivery"
                )
            };
        }
        match status {
            500.. => line!(error),
            400.. => line!(warn),
            _ if self.lost => line!(warn),
            _ => line!(info),
        }
    }
}
