//! The second entrance: `POST /sync` makes the table current for the signed-in caller, on demand.
//!
//! `answer` reads top to bottom as the life of a call: the caller's session token verified
//! ([`crate::session_token`]) before anything else; the table's tombstone and the caller's window
//! (one round of fetches from Clerk per user per `WINDOW`, whatever the number of function
//! instances); the user, the session and the user's memberships fetched from Clerk's Backend API
//! ([`crate::clerk`]) in parallel; each written through exactly the webhook path (`read_object`,
//! `plan`, `Store::apply`), so neither path can overwrite what the other wrote newer; and the
//! items as the table now holds them, read back. Nothing the caller sends is believed but the
//! verified token. `/sync` never tombstones anything: deletions come by webhook. (A session or
//! membership it writes for a user or organization deleted meanwhile is removed again by the
//! write itself, as for webhooks: rule 2.)

use std::sync::OnceLock;
use std::time::Duration;

use lambda_http::http::{Method, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::value::RawValue;

use crate::clerk::{Clerk, ClerkError, Fetched, ListError, Patience, SecretKey, Transport};
use crate::config::SyncConfig;
use crate::event::{Event, read_object};
use crate::handler::{Failure, MirrorGuard, error};
use crate::metrics;
use crate::plan::{self, Options, Write};
use crate::rules::{self, Digest, Rank, Verdict};
use crate::session_token::{Caller, Keys, TokenError, Unverified, Verifier};
use crate::store::{Item, Store, StoreError, UserView, Window, is_deleted};
use crate::webhook::verdict_name;
use aws_sdk_dynamodb::types::AttributeValue;

/// The route an application's frontend calls.
pub const ROUTE: &str = "/sync";
/// One round of fetches from Clerk per user per window: a caller in a loop costs Clerk at most
/// 3 requests (more with over 500 memberships) per 5 s, from any number of function instances.
pub const WINDOW: Duration = Duration::from_secs(5);
/// The longest the key set and the three fetches may take: a 504 after it.
const CLERK_BUDGET: Duration = Duration::from_secs(4);
/// The longest a whole call may take, inside the function's 10 s timeout.
const DEADLINE: Duration = Duration::from_secs(8);
/// The user agent of requests to Clerk.
const USER_AGENT: &str = concat!("clerk-sync/", env!("CARGO_PKG_VERSION"));

/// The event types a fetched object is read as: the whole current object, as the `.updated`
/// webhook carries it.
const USER_EVENT: &str = "user.updated";
const SESSION_EVENT: &str = "session.updated";
const MEMBERSHIP_EVENT: &str = "organizationMembership.updated";

/// `/sync` as configured.
pub enum Route {
    /// No `CLERK_SECRET_KEY`: 404.
    Off,
    /// A setting that cannot work (named at init): 500 until it is fixed.
    Misconfigured(&'static str),
    On(Box<Sync>),
}

impl Route {
    /// Checks `config` without building anything costly: the HTTPS client (and the system roots
    /// it loads) waits for the first call, so the webhook path's cold start pays nothing for it.
    pub fn new(config: Option<SyncConfig>) -> Self {
        let Some(config) = config else { return Route::Off };
        let keys = match config.jwt_key.as_deref().map(Keys::from_pem) {
            None => Keys::fetched(),
            Some(Ok(keys)) => keys,
            Some(Err(_)) => return Route::Misconfigured("CLERK_JWT_KEY is not a PEM RSA public key"),
        };
        if !crate::clerk::is_base_url(config.api_url.trim().trim_end_matches('/')) {
            return Route::Misconfigured("CLERK_API_URL is not an http(s) URL");
        }
        let verifier = Verifier { keys, authorized_parties: config.authorized_parties };
        Route::On(Box::new(Sync {
            secret_key: config.secret_key,
            api_url: config.api_url,
            verifier,
            clerk: OnceLock::new(),
        }))
    }
}

pub struct Sync {
    secret_key: SecretKey,
    api_url: String,
    verifier: Verifier,
    clerk: OnceLock<Result<Clerk, String>>,
}

impl Sync {
    fn clerk(&self) -> Result<&Clerk, &str> {
        let clerk = self.clerk.get_or_init(|| {
            Clerk::new(&self.api_url, &self.secret_key, Patience::Interactive, USER_AGENT).map_err(|e| e.to_string())
        });
        clerk.as_ref().map_err(String::as_str)
    }
}

/// The one log line of a `/sync` call: ids, counts and outcomes only, never a token, a claim
/// other than the ids, or anything of the user object.
#[derive(Default)]
pub struct LogLine {
    user_id: Option<String>,
    session_id: Option<String>,
    outcome: Option<&'static str>,
    /// Verdicts of the writes, in order: user, session, then memberships.
    written: Option<String>,
    memberships: Option<usize>,
    /// Memberships Clerk listed that could not be read as one (named by index, never quoted).
    memberships_unreadable: Option<usize>,
    /// Set when Clerk refused our secret key: the template's alarm counts it.
    clerk_key_refused: bool,
    reason: Option<String>,
    /// The refusal's class for the metrics (see [`metrics::reason`]); from the status when unset.
    reason_class: Option<&'static str>,
    /// The capacity DynamoDB reported consumed by the whole call.
    units: Option<metrics::Units>,
}

impl LogLine {
    fn refused(&mut self, answer: Response<Body>, reason: &str) -> Response<Body> {
        self.outcome.get_or_insert("refused");
        self.reason = Some(reason.to_owned());
        answer
    }

    /// The call's metric document (see [`metrics`]): the time on DynamoDB is not measured apart,
    /// since its requests run beside Clerk's.
    fn metrics(&self, status: u16) -> metrics::Request<'_> {
        let refused = status >= 400;
        metrics::Request {
            route: "sync",
            status,
            outcome: self.outcome.unwrap_or("refused"),
            event_type: None,
            reason: refused.then(|| self.reason_class.unwrap_or_else(|| self.default_reason(status))),
            store_ms: None,
            units: self.units,
            invalid_write: false,
        }
    }

    /// The class of a refusal no step named: by the status, as `/sync` uses them.
    fn default_reason(&self, status: u16) -> &'static str {
        use metrics::reason;
        match status {
            401 | 403 => reason::TOKEN,
            404 if self.outcome == Some("not_found") => reason::CLERK,
            429 | 502 | 504 => reason::CLERK,
            500 if self.clerk_key_refused => reason::CLERK,
            500 => reason::OTHER,
            _ => metrics::reason_of_status(status).unwrap_or(reason::OTHER),
        }
    }

    pub fn emit(&self, status: StatusCode) {
        let status = status.as_u16();
        let emf = metrics::enabled().then(|| self.metrics(status).document().to_string());
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    route = ROUTE,
                    user_id = self.user_id.as_deref(),
                    session_id = self.session_id.as_deref(),
                    outcome = self.outcome,
                    written = self.written.as_deref(),
                    memberships = self.memberships,
                    memberships_unreadable = self.memberships_unreadable,
                    clerk_key_refused = self.clerk_key_refused.then_some(true),
                    reason = self.reason.as_deref(),
                    status,
                    emf = emf.as_deref(),
                    "sync"
                )
            };
        }
        match status {
            500.. => line!(error),
            400.. => line!(warn),
            _ => line!(info),
        }
    }
}

/// Everything `/sync` borrows from the function.
pub struct Context<'a> {
    pub store: &'a Store,
    pub options: Options,
    pub mirror: &'a MirrorGuard,
}

/// Answers one call at `now` (unix seconds for the token, with `now_ms` for the window).
pub async fn answer(
    route: &Route,
    context: Context<'_>,
    request: &Request,
    now_ms: i64,
    log: &mut LogLine,
) -> Response<Body> {
    if request.method() != Method::POST {
        let mut answer = error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed: use POST");
        answer.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static("POST"));
        return log.refused(answer, "method not allowed");
    }
    let sync = match route {
        Route::Off => return log.refused(error(StatusCode::NOT_FOUND, "sync is not configured"), "sync is off"),
        Route::Misconfigured(reason) => {
            return log.refused(error(StatusCode::INTERNAL_SERVER_ERROR, "sync is misconfigured"), reason);
        }
        Route::On(sync) => sync,
    };
    let clerk = match sync.clerk() {
        Ok(clerk) => clerk,
        Err(reason) => {
            return log.refused(error(StatusCode::INTERNAL_SERVER_ERROR, "sync is misconfigured"), reason);
        }
    };
    let (answered, units) =
        metrics::counting(tokio::time::timeout(DEADLINE, run(sync, clerk, context, request, now_ms, log))).await;
    log.units = units;
    match answered {
        Ok(answer) => answer,
        Err(_) => log.refused(
            error(StatusCode::SERVICE_UNAVAILABLE, "the sync did not finish in time; retry later"),
            "the call did not finish within the deadline",
        ),
    }
}

async fn run(
    sync: &Sync,
    clerk: &Clerk,
    context: Context<'_>,
    request: &Request,
    now_ms: i64,
    log: &mut LogLine,
) -> Response<Body> {
    let Context { store, options, mirror } = context;

    // One budget for the time spent waiting on Clerk during the call: the key set, then the
    // fetches. The table's reads between them do not count against it (a slow table is the
    // overall deadline's business, and its 503 says so, not a 504 blaming Clerk).
    let verifying = tokio::time::Instant::now();
    let clerk_deadline = verifying + CLERK_BUDGET;

    // 1. The caller: a verified session token, or a 401 that says nothing of why.
    let authorization = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let verified = match Unverified::from_authorization(authorization) {
        Ok(token) => {
            tokio::time::timeout_at(clerk_deadline, sync.verifier.verify(token, now_ms.div_euclid(1000), clerk))
                .await
                .unwrap_or_else(|_| {
                    let transport = Transport::TimedOut;
                    Err(TokenError::KeySet(ClerkError::Unreachable { base: String::new(), transport, attempts: 1 }))
                })
        }
        Err(e) => Err(e),
    };
    let key_set_time = verifying.elapsed();
    let caller = match verified {
        Ok(caller) => caller,
        // Clerk failing to give the key set is answered as any failure of Clerk's: 429 with its
        // `Retry-After`, 500 (counted by the alarm) for a refused secret key, 504, 502.
        Err(TokenError::KeySet(e)) => {
            let answer = clerk_refusal(log, &e);
            log.reason = Some(format!("the instance's key set could not be fetched: {e}"));
            return answer;
        }
        Err(e) => {
            log.reason_class =
                Some(if matches!(e.status(), 401 | 403) { metrics::reason::TOKEN } else { metrics::reason::CLERK });
            return log.refused(token_refusal(&e), &e.to_string());
        }
    };
    log.user_id = Some(caller.user_id.clone());
    log.session_id = Some(caller.session_id.clone());

    // 2. The table: the instance it mirrors, the user's tombstone, and the caller's window.
    match mirror.compare(store, caller.instance_id.as_deref()).await {
        Ok(()) => {}
        Err(Failure::OtherInstance { recorded, delivered }) => {
            log.reason_class = Some(metrics::reason::INSTANCE);
            let reason = format!("the table mirrors Clerk instance {recorded}; this token comes from {delivered}");
            return log.refused(
                error(StatusCode::INTERNAL_SERVER_ERROR, "this table mirrors another Clerk instance"),
                &reason,
            );
        }
        Err(Failure::Store(e)) => return log.refused(store_failure(), &e.to_string()),
    }
    match store.user_item(&caller.user_id).await {
        Ok(Some(item)) if is_deleted(&item) => return deleted(log),
        Ok(_) => {}
        Err(e) => return log.refused(store_failure(), &e.to_string()),
    }
    match store.claim_sync_window(&caller.user_id, now_ms, WINDOW).await {
        Ok(Window::Claimed) => {}
        Ok(Window::Held { until_ms }) => {
            // Whole seconds, rounded up: a caller that waits that long finds the window closed.
            let seconds = ((until_ms - now_ms).max(1) + 999) / 1000;
            let answer = with_retry_after(
                error(StatusCode::TOO_MANY_REQUESTS, "synced moments ago; retry after the time given"),
                seconds as u64,
            );
            log.outcome = Some("throttled");
            log.reason_class = Some(metrics::reason::WINDOW);
            return log.refused(answer, "another call holds this user's window");
        }
        Err(e) => return log.refused(store_failure(), &e.to_string()),
    }

    // 3. Clerk: the user, the session and the memberships, in parallel, within the budget; and,
    //    while Clerk answers, what the table holds of them, so that what is already there is not
    //    written again (each write would only be refused by its condition, and billed). Should
    //    that read fail, everything is written: the conditions decide as always. The fetches have
    //    what the key set left of Clerk's budget (all of it when the key set was cached or the key
    //    is configured), and end within the window this call claimed, however slow the table was
    //    before them: one round of fetches per user per window, and a call of at most the window
    //    and its writes.
    let clerk_left = CLERK_BUDGET.saturating_sub(key_set_time);
    let fetch_deadline = (tokio::time::Instant::now() + clerk_left).min(verifying + WINDOW);
    let fetches = tokio::time::timeout_at(fetch_deadline, async {
        tokio::join!(
            clerk.user(&caller.user_id),
            clerk.session(&caller.session_id),
            clerk.user_memberships(&caller.user_id)
        )
    });
    let (fetched, stored) = tokio::join!(fetches, store.user_view(&caller.user_id, &caller.session_id));
    let stored = stored.unwrap_or_default();
    let (user, session, memberships) = match fetched.map(all_fetched) {
        Ok(Ok(fetched)) => fetched,
        Ok(Err(ClerkFailure::Clerk(e))) => return clerk_refusal(log, &e),
        Ok(Err(ClerkFailure::Malformed(reason))) => {
            return log.refused(error(StatusCode::BAD_GATEWAY, "Clerk's answer could not be read"), &reason);
        }
        Err(_) => {
            return log.refused(
                error(StatusCode::GATEWAY_TIMEOUT, "Clerk did not answer in time"),
                "Clerk's answers did not arrive within the budget",
            );
        }
    };
    let Fetched::Object(user) = user else {
        log.outcome = Some("not_found");
        return log.refused(error(StatusCode::NOT_FOUND, "Clerk has no such user"), "Clerk answered 404 for the user");
    };
    let Fetched::Object(session) = session else {
        return log.refused(unauthorized(), "Clerk answered 404 for the token's session");
    };
    let memberships = memberships.unwrap_or_default();

    // 4. The writes, through the webhook path: the user first, then the session and memberships.
    let planned = match plan_all(&caller, &user, &session, &memberships, options) {
        Ok(planned) => {
            log.memberships_unreadable = (planned.unreadable > 0).then_some(planned.unreadable);
            planned
        }
        Err(Unplanned::OtherUser) => {
            return log.refused(unauthorized(), "Clerk's session belongs to another user than the token's sub");
        }
        Err(Unplanned::Malformed(reason)) => {
            return log.refused(error(StatusCode::BAD_GATEWAY, "Clerk's answer could not be read"), &reason);
        }
    };
    log.memberships = Some(planned.memberships.len());
    let verdicts = match write_all(store, planned, &stored).await {
        Ok(verdicts) => verdicts,
        Err(e) => return log.refused(store_failure(), &e.to_string()),
    };
    log.written = Some(verdicts.iter().map(|v| verdict_name(*v)).collect::<Vec<_>>().join(","));
    if verdicts.first() == Some(&Verdict::UserDeleted) {
        return deleted(log);
    }

    // 5. The answer: what the table now holds.
    let view = match store.user_view(&caller.user_id, &caller.session_id).await {
        Ok(view) => view,
        Err(e) => return log.refused(store_failure(), &e.to_string()),
    };
    if view.user.as_ref().is_some_and(is_deleted) {
        return deleted(log);
    }
    let session_active = view
        .session
        .as_ref()
        .is_some_and(|s| s.get("status").and_then(|v| v.as_s().ok()).is_some_and(|status| !rules::is_terminal(status)));
    if !session_active {
        log.outcome = Some("session_ended");
        return log.refused(unauthorized(), "the session is no longer active (its state is stored)");
    }
    log.outcome = Some("synced");
    respond_view(&view)
}

/// What one call writes, planned before anything is written.
struct Planned {
    user: Write,
    session: Write,
    memberships: Vec<Write>,
    /// Memberships Clerk listed that could not be read: skipped (and counted in the log line), so
    /// that one odd membership does not keep a new user out of the table.
    unreadable: usize,
}

enum Unplanned {
    OtherUser,
    Malformed(String),
}

fn plan_all(
    caller: &Caller,
    user: &[u8],
    session: &[u8],
    memberships: &[Box<RawValue>],
    options: Options,
) -> Result<Planned, Unplanned> {
    let raw = |body: &[u8], what: &str| -> Result<Box<RawValue>, Unplanned> {
        serde_json::from_slice(body).map_err(|_| Unplanned::Malformed(format!("Clerk's {what} is not JSON")))
    };
    let user = raw(user, "user")?;
    let session = raw(session, "session")?;
    let user = plan_one(USER_EVENT, &user, options)?;
    let session = plan_one(SESSION_EVENT, &session, options)?;
    match (&user, &session) {
        // The session Clerk answered must be the token's, of the token's user.
        (Write::UpsertUser(u), Write::UpsertSession(s))
            if u.id == caller.user_id && s.user_id == caller.user_id && s.id == caller.session_id => {}
        (Write::UpsertUser(_), Write::UpsertSession(_)) => return Err(Unplanned::OtherUser),
        _ => return Err(Unplanned::Malformed("Clerk's user or session is not one".to_owned())),
    }
    let mut unreadable = 0;
    let memberships = memberships
        .iter()
        .filter_map(|raw| match plan_one(MEMBERSHIP_EVENT, raw, options) {
            // Only the caller's own memberships: Clerk's list is of them, but nothing unchecked is written.
            Ok(Write::PutMembership(m)) => (m.user_id == caller.user_id).then_some(Write::PutMembership(m)),
            Ok(_) | Err(_) => {
                unreadable += 1;
                None
            }
        })
        .collect();
    Ok(Planned { user, session, memberships, unreadable })
}

/// One object through `read_object` and `plan`, as the webhook `event_type` would carry it.
fn plan_one(event_type: &str, raw: &RawValue, options: Options) -> Result<Write, Unplanned> {
    let malformed = |reason: String| Unplanned::Malformed(format!("Clerk's object read as {event_type}: {reason}"));
    let kind = read_object(event_type, raw).map_err(|e| malformed(e.to_string()))?;
    let event = Event { event_type: event_type.to_owned(), timestamp: None, instance_id: None, kind };
    match plan::plan(&event, options) {
        Ok(Some(write)) => Ok(write),
        Ok(None) => Err(malformed("not an object this event carries".to_owned())),
        Err(e) => Err(malformed(e.to_string())),
    }
}

/// The writes, each one `Store::apply`, one after another: the user first (a tombstone found there
/// stops the rest), then the session, then each membership. One after another so that a tombstone
/// found by one write stops the next, and the call's requests to DynamoDB stay few at a time. A
/// write whose item `stored` already holds at the same rank is skipped, as the duplicate its
/// condition would have found. Returns the verdicts in order.
async fn write_all(store: &Store, planned: Planned, stored: &UserView) -> Result<Vec<Verdict>, StoreError> {
    let stored_membership = |write: &Write| match write {
        Write::PutMembership(m) => stored.memberships.iter().find(|item| {
            item.get("organization_id").and_then(|v| v.as_s().ok()).is_some_and(|id| *id == m.organization_id)
        }),
        _ => None,
    };
    let mut verdicts = Vec::with_capacity(2 + planned.memberships.len());
    let writes = [(planned.user, stored.user.as_ref()), (planned.session, stored.session.as_ref())].into_iter().chain(
        planned.memberships.into_iter().map(|m| {
            let item = stored_membership(&m);
            (m, item)
        }),
    );
    for (write, item) in writes {
        // Only a write with a digest: without one, an equal rank need not mean equal content, and
        // the condition (not this read) must decide.
        let rank = write.rank();
        let verdict = if rank.digest.is_some() && item.is_some_and(|item| stored_rank(item) == Some(rank)) {
            Verdict::Duplicate
        } else {
            store.apply(&write).await?.verdict
        };
        verdicts.push(verdict);
        if verdict == Verdict::UserDeleted && verdicts.len() == 1 {
            break;
        }
    }
    Ok(verdicts)
}

/// The rank an item holds (its `version` and `digest`), if it has one.
fn stored_rank(item: &Item) -> Option<Rank> {
    let version = item.get("version")?.as_n().ok()?.parse().ok()?;
    let digest = item.get("digest").and_then(|v| v.as_s().ok()).and_then(|hex| Digest::from_hex(hex));
    Some(Rank::new(version, digest))
}

enum ClerkFailure {
    Clerk(ClerkError),
    Malformed(String),
}

impl From<ClerkError> for ClerkFailure {
    fn from(e: ClerkError) -> Self {
        ClerkFailure::Clerk(e)
    }
}

fn list_failure(e: ListError) -> ClerkFailure {
    match e {
        ListError::Clerk(e) => ClerkFailure::Clerk(e),
        malformed @ ListError::Malformed { .. } => ClerkFailure::Malformed(malformed.to_string()),
    }
}

/// Clerk's failure as the caller hears it: 429 with Clerk's `Retry-After`, 500 when Clerk
/// refused our secret key (logged for the alarm), 504 when it did not answer in time, 502 else.
fn clerk_refusal(log: &mut LogLine, e: &ClerkError) -> Response<Body> {
    match e {
        ClerkError::RateLimited { retry_after, .. } => {
            let seconds = retry_after.map_or(1, |d| d.as_secs().max(1));
            let answer =
                with_retry_after(error(StatusCode::TOO_MANY_REQUESTS, "Clerk is rate limiting; retry later"), seconds);
            log.refused(answer, &e.to_string())
        }
        ClerkError::Unauthorized { .. } => {
            log.clerk_key_refused = true;
            log.refused(error(StatusCode::INTERNAL_SERVER_ERROR, "sync is misconfigured"), &e.to_string())
        }
        e if e.timed_out() => {
            log.refused(error(StatusCode::GATEWAY_TIMEOUT, "Clerk did not answer in time"), &e.to_string())
        }
        e => log.refused(error(StatusCode::BAD_GATEWAY, "Clerk failed; retry later"), &e.to_string()),
    }
}

type Fetches =
    (Result<Fetched, ClerkError>, Result<Fetched, ClerkError>, Result<Option<Vec<Box<RawValue>>>, ListError>);

/// The three fetches, or the first failure among them.
#[allow(clippy::type_complexity)]
fn all_fetched(
    (user, session, memberships): Fetches,
) -> Result<(Fetched, Fetched, Option<Vec<Box<RawValue>>>), ClerkFailure> {
    Ok((user?, session?, memberships.map_err(list_failure)?))
}

fn token_refusal(e: &TokenError) -> Response<Body> {
    match e.status() {
        401 => unauthorized(),
        403 => error(StatusCode::FORBIDDEN, "this origin may not sync"),
        504 => error(StatusCode::GATEWAY_TIMEOUT, "Clerk did not answer in time"),
        502 => error(StatusCode::BAD_GATEWAY, "Clerk failed; retry later"),
        _ => error(StatusCode::INTERNAL_SERVER_ERROR, "sync is misconfigured"),
    }
}

/// The one answer to every token failure: no hint of what was wrong.
fn unauthorized() -> Response<Body> {
    let mut answer = error(StatusCode::UNAUTHORIZED, "a valid Clerk session token is required");
    answer.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    answer
}

fn deleted(log: &mut LogLine) -> Response<Body> {
    log.outcome = Some("user_deleted");
    log.refused(error(StatusCode::GONE, "the user is deleted"), "the table holds the user's tombstone")
}

fn store_failure() -> Response<Body> {
    error(StatusCode::SERVICE_UNAVAILABLE, "the table could not be updated; retry later")
}

fn with_retry_after(mut answer: Response<Body>, seconds: u64) -> Response<Body> {
    answer.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    answer
}

/// Members of a Clerk object the answer leaves out of `data`, since it goes to the user's browser:
/// `private_metadata`, which Clerk keeps for the backend only, and a session's `latest_activity`
/// (IP address, city), which the table no longer stores but items written before may hold.
const BACKEND_ONLY: &[&str] = &["private_metadata", "latest_activity"];

/// An item as the caller may see it: as stored, but with `data` (Clerk's JSON text) without the
/// backend-only members; without `data` at all should its text not be an object.
fn for_the_caller(item: &Item) -> Item {
    let mut item = item.clone();
    let data = item.get("data").and_then(|v| v.as_s().ok());
    match data.map(|text| plan::without_fields(text, BACKEND_ONLY).map(std::borrow::Cow::into_owned)) {
        Some(Ok(text)) => {
            item.insert("data".to_owned(), AttributeValue::S(text));
        }
        Some(Err(_)) => {
            item.remove("data");
        }
        None => {}
    }
    item
}

/// `{"user": {...}, "session": {...}, "memberships": [...]}`: the items as the table holds them,
/// attribute for attribute (numbers as DynamoDB keeps them, every digit), live memberships only,
/// and `data` without what Clerk keeps from the user (`for_the_caller`).
fn respond_view(view: &UserView) -> Response<Body> {
    let view = UserView {
        user: view.user.as_ref().map(for_the_caller),
        session: view.session.as_ref().map(for_the_caller),
        memberships: view.memberships.iter().filter(|m| !is_deleted(m)).map(for_the_caller).collect(),
    };
    struct View<'a>(&'a UserView);
    impl Serialize for View<'_> {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut map = serializer.serialize_map(Some(3))?;
            map.serialize_entry("user", &self.0.user.as_ref().map(ItemJson))?;
            map.serialize_entry("session", &self.0.session.as_ref().map(ItemJson))?;
            map.serialize_entry("memberships", &self.0.memberships.iter().map(ItemJson).collect::<Vec<_>>())?;
            map.end()
        }
    }
    match serde_json::to_string(&View(&view)) {
        Ok(text) => {
            let mut response = Response::new(Body::Text(text));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            response
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the stored items could not be written as JSON"),
    }
}

struct ItemJson<'a>(&'a Item);

impl Serialize for ItemJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut keys: Vec<&String> = self.0.keys().collect();
        keys.sort();
        let mut map = serializer.serialize_map(Some(keys.len()))?;
        for key in keys {
            map.serialize_entry(key, &ValueJson(&self.0[key]))?;
        }
        map.end()
    }
}

struct ValueJson<'a>(&'a AttributeValue);

impl Serialize for ValueJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        match self.0 {
            AttributeValue::S(s) => serializer.serialize_str(s),
            AttributeValue::N(n) => number(n).serialize(serializer),
            AttributeValue::Bool(b) => serializer.serialize_bool(*b),
            AttributeValue::Null(_) => serializer.serialize_none(),
            AttributeValue::M(m) => ItemJson(m).serialize(serializer),
            AttributeValue::L(list) => {
                let mut seq = serializer.serialize_seq(Some(list.len()))?;
                for value in list {
                    seq.serialize_element(&ValueJson(value))?;
                }
                seq.end()
            }
            AttributeValue::Ss(set) => set.serialize(serializer),
            AttributeValue::Ns(set) => set.iter().map(|n| number(n)).collect::<Vec<_>>().serialize(serializer),
            AttributeValue::B(blob) => serializer.serialize_str(&b64(blob.as_ref())),
            AttributeValue::Bs(set) => set.iter().map(|b| b64(b.as_ref())).collect::<Vec<_>>().serialize(serializer),
            _ => serializer.serialize_none(),
        }
    }
}

/// A DynamoDB number as a JSON number with all its digits (DynamoDB's numbers are JSON numbers);
/// as text should one ever not be.
fn number(n: &str) -> NumberJson {
    let numeric = n.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    match RawValue::from_string(n.to_owned()) {
        Ok(raw) if numeric => NumberJson::Raw(raw),
        _ => NumberJson::Text(n.to_owned()),
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum NumberJson {
    Raw(Box<RawValue>),
    Text(String),
}
