//! Clerk's Backend API, read-only: the few `GET`s the tool needs, paced under Clerk's rate limits
//! and retried where retrying can help.
//!
//! Nothing from an answer's body reaches an error message except Clerk's error `code`s: bodies
//! hold users' emails and names. The secret key is only ever in the `Authorization` header,
//! marked sensitive.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Response, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep, sleep_until};

/// The Backend API version every request is pinned to (`Clerk-API-Version`), so that a new default
/// version on Clerk's side never changes what this tool reads. 2025-11-10 is the latest Clerk lists;
/// its changes are to billing endpoints, not users or sessions.
pub const API_VERSION: &str = "2025-11-10";
pub const DEFAULT_API_URL: &str = "https://api.clerk.com/v1";

/// Clerk's rate limits, requests per 10 s per instance: production and development.
pub const PRODUCTION_RATE: u32 = 1000;
pub const DEVELOPMENT_RATE: u32 = 100;

/// Attempts for one request that meets 5xx answers or connection failures, with backoff between.
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// 429 answers are waited out (for `Retry-After`) this many times for one request before giving up.
const MAX_RATE_LIMITED: u32 = 10;
/// A `Retry-After` above this is not waited for: the run stops, to be resumed later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The operator's secret key (`sk_live_...` / `sk_test_...`). Debug never shows it.
pub struct SecretKey(String);

impl SecretKey {
    pub fn new(key: String) -> Option<Self> {
        let key = key.trim().to_owned();
        (!key.is_empty()).then_some(Self(key))
    }

    /// Requests per 10 s this key may make: production keys get production's limit; anything
    /// else (development keys, unknown prefixes) the development one, which is safe for both.
    pub fn rate_limit(&self) -> u32 {
        if self.0.starts_with("sk_live_") { PRODUCTION_RATE } else { DEVELOPMENT_RATE }
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClerkError {
    #[error(
        "Clerk refused the secret key: {status}{codes} (check CLERK_SECRET_KEY and that it belongs to this instance)"
    )]
    Unauthorized { status: StatusCode, codes: Codes },
    #[error("Clerk answered {status}{codes} to GET {path}")]
    Refused { status: StatusCode, codes: Codes, path: String },
    #[error("Clerk answered {status} to GET {path} {attempts} times in a row; giving up")]
    ServerErrors { status: StatusCode, path: String, attempts: u32 },
    #[error("could not reach Clerk at {base} ({detail}), {attempts} attempts")]
    Unreachable { base: String, detail: &'static str, attempts: u32 },
    #[error("Clerk kept rate limiting GET {path} ({attempts} answers 429); try again later with a lower --rate")]
    RateLimited { path: String, attempts: u32 },
    #[error("Clerk asked to wait {seconds} s before GET {path}: longer than this tool waits")]
    RetryTooLate { path: String, seconds: u64 },
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    #[error("{0} is not a valid base URL")]
    BaseUrl(String),
}

/// Clerk's error codes from an error answer (`{"errors":[{"code":"..."}]}`), shown as `; codes: a, b`.
/// Only codes shaped like Clerk's (lowercase words and underscores) are kept: never free text.
#[derive(Debug, Default)]
pub struct Codes(Vec<String>);

impl Codes {
    fn from_body(body: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Errors {
            errors: Vec<ErrorEntry>,
        }
        #[derive(Deserialize)]
        struct ErrorEntry {
            code: Option<String>,
        }
        let Ok(parsed) = serde_json::from_slice::<Errors>(body) else { return Self::default() };
        let valid = |code: &String| {
            !code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        };
        Self(parsed.errors.into_iter().filter_map(|e| e.code).filter(valid).take(5).collect())
    }

    pub fn contains(&self, code: &str) -> bool {
        self.0.iter().any(|c| c == code)
    }
}

impl std::fmt::Display for Codes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() { Ok(()) } else { write!(f, "; codes: {}", self.0.join(", ")) }
    }
}

/// Spaces request starts evenly: at most `rate` in any 10 s, with no bursts. Shared by every
/// request of the run, so concurrent requests queue for their slot; a 429 holds everyone back.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(rate_per_10s: u32) -> Self {
        let interval = Duration::from_secs(10) / rate_per_10s.max(1);
        Self { interval, next: Mutex::new(Instant::now()) }
    }

    async fn wait_turn(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        sleep_until(slot).await;
    }

    fn hold_until(&self, until: Instant) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next = (*next).max(until);
    }
}

/// A page of a `{data, total_count}` list.
#[derive(Deserialize)]
pub struct OffsetPage {
    pub data: Vec<Box<RawValue>>,
    pub total_count: u64,
}

impl OffsetPage {
    /// Whether a list is done once `read` objects are in, `received` of them from this page. An
    /// empty page ends it too, should `total_count` overstate what is left.
    pub fn is_last(&self, read: u64, received: usize) -> bool {
        received == 0 || read >= self.total_count
    }
}

pub struct Clerk {
    http: reqwest::Client,
    base: String,
    pacer: Pacer,
}

/// What a `GET` of one object found.
pub enum Found {
    Exists,
    NotFound,
}

impl Clerk {
    pub fn new(base: &str, key: &SecretKey, rate_per_10s: u32) -> Result<Self, ClerkError> {
        let base = base.trim_end_matches('/').to_owned();
        reqwest::Url::parse(&base).map_err(|_| ClerkError::BaseUrl(base.clone()))?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.0))
            .map_err(|_| ClerkError::Client("CLERK_SECRET_KEY holds characters a header cannot".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert("Clerk-API-Version", HeaderValue::from_static(API_VERSION));
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("clerk-sync-admin/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| ClerkError::Client(e.to_string()))?;
        Ok(Self { http, base, pacer: Pacer::new(rate_per_10s) })
    }

    /// One page of `GET /users` in creation order, after the user `starting_after`: a bare JSON
    /// array, returned unparsed so the caller can report exactly what is wrong with it.
    pub async fn users_page(&self, limit: u32, starting_after: Option<&str>) -> Result<Vec<u8>, ClerkError> {
        let mut query = vec![("limit", limit.to_string()), ("order_by", "created_at".to_owned())];
        if let Some(id) = starting_after {
            query.push(("starting_after", id.to_owned()));
        }
        self.get("/users", &query).await
    }

    /// `GET /users/count`, for the progress bar.
    pub async fn user_count(&self) -> Result<Option<u64>, ClerkError> {
        #[derive(Deserialize)]
        struct Count {
            total_count: u64,
        }
        let body = self.get("/users/count", &[]).await?;
        Ok(serde_json::from_slice::<Count>(&body).ok().map(|c| c.total_count))
    }

    /// The Clerk instance the secret key belongs to: the key id of the instance's JSON Web Key Set
    /// (`GET /jwks`), which Clerk names after the instance (`ins_...`), as webhook envelopes'
    /// `instance_id` do. `None` when the answer names no such key.
    pub async fn instance_id(&self) -> Result<Option<String>, ClerkError> {
        #[derive(Deserialize)]
        struct KeySet {
            keys: Vec<Key>,
        }
        #[derive(Deserialize)]
        struct Key {
            kid: Option<String>,
        }
        let body = self.get("/jwks", &[]).await?;
        let keys = serde_json::from_slice::<KeySet>(&body).map(|set| set.keys).unwrap_or_default();
        let is_instance = |id: &String| {
            id.starts_with("ins_") && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        Ok(keys.into_iter().filter_map(|key| key.kid).find(is_instance))
    }

    /// Whether Clerk still has user `id` (`GET /users/{id}`). Only a 404 that Clerk itself
    /// explains as `resource_not_found` means gone: a proxy's or a wrong URL's 404 is an error.
    pub async fn user_exists(&self, id: &str) -> Result<Found, ClerkError> {
        self.exists(format!("/users/{id}")).await
    }

    /// Whether Clerk still has organization `id` (`GET /organizations/{id}`), as for users.
    pub async fn organization_exists(&self, id: &str) -> Result<Found, ClerkError> {
        self.exists(format!("/organizations/{id}")).await
    }

    /// Whether Clerk still has membership `membership_id` (of user `user_id` in organization
    /// `organization_id`): `GET /organizations/{organization_id}/memberships?user_id=<user_id>`,
    /// every page, looking for that id. Clerk's answer without it means gone (the user left, or
    /// left and joined again, which is another membership). Clerk's own 404 (`resource_not_found`)
    /// means the organization is gone, and its memberships with it; any other 404 is an error.
    /// Matching on the id, not on the filter, keeps it right should Clerk ever ignore the filter
    /// (its docs say unknown user ids are ignored): the answer is then paged through whole.
    pub async fn membership_exists(
        &self,
        organization_id: &str,
        user_id: &str,
        membership_id: &str,
        limit: u32,
    ) -> Result<Found, ListError> {
        #[derive(Deserialize)]
        struct Membership {
            id: String,
        }
        let path = format!("/organizations/{organization_id}/memberships");
        let mut read = 0;
        loop {
            let query = [("user_id", user_id.to_owned()), ("limit", limit.to_string()), ("offset", read.to_string())];
            let body = match self.get_or_404(&path, &query).await? {
                Ok(body) => body,
                Err(codes) if codes.contains("resource_not_found") => return Ok(Found::NotFound),
                Err(codes) => return Err(ClerkError::Refused { status: StatusCode::NOT_FOUND, codes, path }.into()),
            };
            let page = read_page(&path, read, &body)?;
            let received = page.data.len();
            for raw in &page.data {
                let membership: Membership = serde_json::from_str(raw.get()).map_err(|_| ListError::Malformed {
                    page: format!("GET {path} at offset {read}"),
                    reason: "a list holding an object without an id".to_owned(),
                })?;
                if membership.id == membership_id {
                    return Ok(Found::Exists);
                }
            }
            read += received as u64;
            if page.is_last(read, received) {
                return Ok(Found::NotFound);
            }
        }
    }

    /// A `GET` of one object: only a 404 that Clerk itself explains as `resource_not_found` means
    /// gone; a proxy's or a wrong URL's 404 is an error.
    async fn exists(&self, path: String) -> Result<Found, ClerkError> {
        match self.get_or_404(&path, &[]).await? {
            Ok(_) => Ok(Found::Exists),
            Err(codes) if codes.contains("resource_not_found") => Ok(Found::NotFound),
            Err(codes) => Err(ClerkError::Refused { status: StatusCode::NOT_FOUND, codes, path }),
        }
    }

    /// One page of an offset-paged list (`{data, total_count}`, `limit` and `offset`), such as
    /// `/sessions?user_id=..&paginated=true`, `/organizations` or `/organization_memberships`.
    pub async fn offset_page(
        &self,
        path: &str,
        filters: &[(&str, String)],
        limit: u32,
        offset: u64,
    ) -> Result<OffsetPage, ListError> {
        let mut query = filters.to_vec();
        query.extend([("limit", limit.to_string()), ("offset", offset.to_string())]);
        let body = self.get(path, &query).await?;
        read_page(path, offset, &body)
    }

    /// Every object of an offset-paged list, page after page until `total_count`.
    pub async fn list_offset_paged(
        &self,
        path: &str,
        filters: &[(&str, String)],
        limit: u32,
    ) -> Result<Vec<Box<RawValue>>, ListError> {
        let mut objects = Vec::new();
        loop {
            let page = self.offset_page(path, filters, limit, objects.len() as u64).await?;
            let received = page.data.len();
            let last = page.is_last((objects.len() + received) as u64, received);
            objects.extend(page.data);
            if last {
                return Ok(objects);
            }
        }
    }

    /// A `GET` for which a 404 is an error like any other.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<u8>, ClerkError> {
        match self.get_or_404(path, query).await? {
            Ok(body) => Ok(body),
            Err(codes) => Err(ClerkError::Refused { status: StatusCode::NOT_FOUND, codes, path: path.to_owned() }),
        }
    }

    /// A paced `GET`, retried on 429 (after `Retry-After`), 5xx and connection failures. Returns
    /// the body of a 2xx, or Clerk's error codes for a 404.
    async fn get_or_404(&self, path: &str, query: &[(&str, String)]) -> Result<Result<Vec<u8>, Codes>, ClerkError> {
        let url = format!("{}{path}", self.base);
        let mut failures = 0;
        let mut rate_limited = 0;
        loop {
            self.pacer.wait_turn().await;
            let failure = match self.http.get(&url).query(query).send().await {
                Ok(response) => match response.status() {
                    s if s.is_success() => match response.bytes().await {
                        Ok(body) => return Ok(Ok(body.to_vec())),
                        Err(e) => Failure::Transport(transport_detail(&e)),
                    },
                    StatusCode::NOT_FOUND => return Ok(Err(codes_of(response).await)),
                    StatusCode::TOO_MANY_REQUESTS => {
                        rate_limited += 1;
                        if rate_limited > MAX_RATE_LIMITED {
                            return Err(ClerkError::RateLimited { path: path.to_owned(), attempts: rate_limited });
                        }
                        let wait = retry_after(&response).unwrap_or(FIRST_BACKOFF * 2u32.pow(rate_limited.min(6)));
                        if wait > MAX_RETRY_AFTER {
                            return Err(ClerkError::RetryTooLate { path: path.to_owned(), seconds: wait.as_secs() });
                        }
                        self.pacer.hold_until(Instant::now() + wait);
                        continue;
                    }
                    s @ (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) => {
                        return Err(ClerkError::Unauthorized { status: s, codes: codes_of(response).await });
                    }
                    s if s.is_server_error() => Failure::Status(s),
                    s => {
                        let codes = codes_of(response).await;
                        return Err(ClerkError::Refused { status: s, codes, path: path.to_owned() });
                    }
                },
                Err(e) => Failure::Transport(transport_detail(&e)),
            };
            failures += 1;
            if failures >= MAX_ATTEMPTS {
                return Err(match failure {
                    Failure::Status(status) => {
                        ClerkError::ServerErrors { status, path: path.to_owned(), attempts: failures }
                    }
                    Failure::Transport(detail) => {
                        ClerkError::Unreachable { base: self.base.clone(), detail, attempts: failures }
                    }
                });
            }
            sleep(FIRST_BACKOFF * 2u32.pow(failures - 1)).await;
        }
    }
}

/// A `{data, total_count}` page, or what is wrong with it (never quoting it).
fn read_page(path: &str, offset: u64, body: &[u8]) -> Result<OffsetPage, ListError> {
    serde_json::from_slice(body).map_err(|e| ListError::Malformed {
        page: format!("GET {path} at offset {offset}"),
        reason: match e.classify() {
            serde_json::error::Category::Data => "not a {data, total_count} list".to_owned(),
            _ => format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        },
    })
}

enum Failure {
    Status(StatusCode),
    Transport(&'static str),
}

/// Why a request failed, in words that carry no URL, body or header.
fn transport_detail(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "the answer was cut off"
    } else {
        "the request failed"
    }
}

async fn codes_of(response: Response) -> Codes {
    response.bytes().await.map(|body| Codes::from_body(&body)).unwrap_or_default()
}

/// `Retry-After` in seconds (Clerk sends seconds; an HTTP date is not expected).
fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response.headers().get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds))
}

/// A list that could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Clerk(#[from] ClerkError),
    #[error("{page}: the answer is {reason}")]
    Malformed { page: String, reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_keys_get_the_production_rate() {
        assert_eq!(SecretKey::new("sk_live_abc".into()).unwrap().rate_limit(), PRODUCTION_RATE);
        assert_eq!(SecretKey::new("sk_test_abc".into()).unwrap().rate_limit(), DEVELOPMENT_RATE);
        assert_eq!(SecretKey::new("other".into()).unwrap().rate_limit(), DEVELOPMENT_RATE);
    }

    #[test]
    fn empty_key_is_no_key() {
        assert!(SecretKey::new("  ".into()).is_none());
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = SecretKey::new("sk_test_supersecret".into()).unwrap();
        assert!(!format!("{key:?}").contains("supersecret"));
    }

    #[test]
    fn only_clerk_shaped_codes_are_kept() {
        let body =
            br#"{"errors":[{"message":"jane@example.org is bad","long_message":"x","code":"authentication_invalid"},
            {"code":"Jane Doe"},{"code":"form_param_missing"}]}"#;
        assert_eq!(Codes::from_body(body).to_string(), "; codes: authentication_invalid, form_param_missing");
        assert_eq!(Codes::from_body(b"<html>jane@example.org</html>").to_string(), "");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_spaces_requests_evenly() {
        let pacer = Pacer::new(100);
        let start = Instant::now();
        for _ in 0..11 {
            pacer.wait_turn().await;
        }
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_holds_everyone_back_after_a_429() {
        let pacer = Pacer::new(1000);
        let start = Instant::now();
        pacer.hold_until(start + Duration::from_secs(3));
        pacer.wait_turn().await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
