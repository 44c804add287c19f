//! Steps 1 and 6 of a delivery: HTTP in, HTTP out, and the flow between them.
//!
//! `handle` reads top to bottom as the life of a request: route, size, content type, verify,
//! parse, plan, store, answer. Every way out is an HTTP answer (never an `Err` to the runtime)
//! and one log line with the message id, event type, object id, version and outcome.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::config::Config;
use crate::event::{self, EventKind};
use crate::plan::{self, Options};
use crate::rules::Verdict;
use crate::store::{Applied, Mirror, Recorded, Store, StoreError};
use crate::tls::Trust;
use crate::verify::{Unverified, Verifier};

/// The route Clerk is pointed at.
pub const ROUTE: &str = "/webhooks/clerk";
/// Bodies above this are refused before any other work. Clerk's largest payloads (a user with
/// its three metadata objects at Clerk's 8 KB limit each, plus many addresses) stay under 64 KiB.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The longest the store may take before the delivery is answered 503 (and retried by Svix):
/// inside the function's 10 s timeout and Svix's 15 s.
const STORE_DEADLINE: Duration = Duration::from_secs(8);

/// Everything a delivery needs, created once at init.
pub struct App {
    verifier: Verifier,
    store: Store,
    options: Options,
    /// The Clerk instance the table mirrors, once this function instance has recorded or found it
    /// (one PutItem per cold start; see `store::Mirror`). Every delivery is compared with it.
    mirrored: OnceLock<String>,
}

impl App {
    pub fn new(config: Config, store: Store) -> Self {
        Self {
            verifier: Verifier::new(config.secrets),
            store,
            options: Options { store_clerk_data: config.store_clerk_data },
            mirrored: OnceLock::new(),
        }
    }

    /// Builds the DynamoDB client from the environment (see [`Store::connect`]) and warms it up.
    pub async fn connect(config: Config) -> Self {
        let trust = Trust::from_env();
        let store = Store::connect(config.table_name.clone(), trust).await;
        let started = std::time::Instant::now();
        match store.warm_up().await {
            Ok(()) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                tls_roots = trust.name(),
                "DynamoDB client warmed up"
            ),
            Err(e) => {
                tracing::warn!(error = %e, tls_roots = trust.name(), "DynamoDB warm-up failed; deliveries will retry")
            }
        }
        Self::new(config, store)
    }

    /// Answers one delivery at the current time.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.handle_at(request, now).await
    }

    /// Answers one delivery as if the clock read `now` (unix seconds).
    pub async fn handle_at(&self, request: Request, now: i64) -> Response<Body> {
        let mut log = LogLine::default();
        let answer = self.answer(&request, now, &mut log).await;
        log.emit(answer.status());
        answer
    }

    async fn answer(&self, request: &Request, now: i64, log: &mut LogLine) -> Response<Body> {
        let path = request.uri().path();
        if path != ROUTE && !path.ends_with(ROUTE) {
            return log.refused(error(StatusCode::NOT_FOUND, "not found"), "unknown path");
        }
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
        let verified = match self.verifier.verify(delivery, now) {
            Ok(verified) => verified,
            Err(e) => {
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

        let write = match plan::plan(&event, self.options) {
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
            self.check_mirror(event.instance_id.as_deref()).await?;
            self.store.apply(&write).await.map_err(Failure::Store)
        };
        match tokio::time::timeout(STORE_DEADLINE, stored).await {
            Ok(Err(Failure::OtherInstance { recorded, delivered })) => {
                let reason =
                    format!("the table mirrors Clerk instance {recorded}; this delivery comes from {delivered}");
                log.refused(
                    error(StatusCode::INTERNAL_SERVER_ERROR, "this table mirrors another Clerk instance"),
                    &reason,
                )
            }
            Ok(Ok(applied)) => {
                log.outcome = Some(verdict_name(applied.verdict));
                log.sessions_removed =
                    matches!(event.kind, EventKind::UserDeleted { .. }).then_some(applied.sessions_removed);
                log.memberships_removed = removes_memberships(&event.kind).then_some(applied.memberships_removed);
                log.removal = removes_memberships(&event.kind).then_some(removal(applied));
                log.stored_as = applied.fit.reason();
                log.lost = applied.fit.lost_something();
                log.answered(outcome(verdict_name(applied.verdict), &event.event_type, Some(applied), &event.kind))
            }
            Ok(Err(Failure::Store(e))) => {
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
}

/// Why a planned write was not stored.
enum Failure {
    Store(StoreError),
    /// The table mirrors another Clerk instance than the one that sent this delivery.
    OtherInstance {
        recorded: String,
        delivered: String,
    },
}

impl App {
    /// Every delivery that names its Clerk instance is compared with the instance the table
    /// mirrors. The first of each cold start records it (one PutItem), or finds that the table
    /// mirrors another: two instances writing one table would mix their users, so deliveries from
    /// another instance are refused, on every delivery, warm or cold.
    async fn check_mirror(&self, instance_id: Option<&str>) -> Result<(), Failure> {
        let Some(instance_id) = instance_id else { return Ok(()) };
        let mirrored = match self.mirrored.get() {
            Some(mirrored) => mirrored,
            None => {
                let mirror = Mirror {
                    instance_id: instance_id.to_owned(),
                    store_clerk_data: Some(self.options.store_clerk_data),
                };
                let recorded = match self.store.record_mirror(&mirror).await.map_err(Failure::Store)? {
                    Recorded::Same => mirror.instance_id,
                    Recorded::Other(recorded) => recorded.instance_id,
                };
                self.mirrored.get_or_init(|| recorded)
            }
        };
        if mirrored == instance_id {
            Ok(())
        } else {
            Err(Failure::OtherInstance { recorded: mirrored.clone(), delivered: instance_id.to_owned() })
        }
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

fn verdict_name(verdict: Verdict) -> &'static str {
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

fn error(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, &json!({ "error": message }))
}

fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}

/// The one log line of a delivery. Holds ids and outcomes only: never a body, a header value
/// other than the message id, or anything from the user object.
#[derive(Default)]
struct LogLine {
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

    fn emit(&self, status: StatusCode) {
        let status = status.as_u16();
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
