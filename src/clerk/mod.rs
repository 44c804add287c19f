//! Clerk's Backend API, read-only: the one client of it, for `/sync` (`crate::sync`) and for
//! `clerk-sync-admin`. Paced under Clerk's rate limits and retried where retrying can help, as
//! much as the caller can wait: see [`Patience`].
//!
//! Nothing from an answer's body reaches an error message except Clerk's error `code`s: bodies
//! hold users' emails and names. The secret key is only ever in the `Authorization` header.

mod http;

use std::sync::Mutex;
use std::time::Duration;

use lambda_http::http::HeaderValue;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::time::{Instant, sleep, sleep_until};

pub use self::http::Transport;
use self::http::{Answer, Http};

/// The Backend API version every request is pinned to (`Clerk-API-Version`), so that a new default
/// version on Clerk's side never changes what is read: the current one. Its breaking changes (Clerk's
/// 2026-05-12 upgrade guide) are to metadata updates (`PATCH /users/{id}`, `/organizations/{id}`),
/// which this crate never sends; the user, session, membership and key-set answers it reads, and
/// `GET /users`' paging, are as in 2025-11-10 (the OpenAPI specs of both).
pub const API_VERSION: &str = "2026-05-12";
pub const DEFAULT_API_URL: &str = "https://api.clerk.com/v1";

/// Clerk's rate limits, requests per 10 s per instance: production and development.
pub const PRODUCTION_RATE: u32 = 1000;
pub const DEVELOPMENT_RATE: u32 = 100;

const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// 429 answers are waited out (for `Retry-After`) this many times for one request before giving up.
const MAX_RATE_LIMITED: u32 = 10;
/// A `Retry-After` above this is not waited for: the run stops, to be resumed later.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// How hard a request tries, by who waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Patience {
    /// The operator's tool: requests paced evenly at `rate_per_10s`, 5 attempts on 5xx answers and
    /// connection failures with backoff, 429s waited out (up to `MAX_RETRY_AFTER`), and a minute
    /// for each answer.
    Batch { rate_per_10s: u32 },
    /// `/sync`, while a signed-in user waits: no pacing (its own throttle keeps each user to one
    /// round of fetches per window), one more attempt after a 5xx or a failed connection, a 429
    /// handed back at once with its `Retry-After`, and short timeouts.
    Interactive,
}

impl Patience {
    fn attempts(self) -> u32 {
        match self {
            Patience::Batch { .. } => 5,
            Patience::Interactive => 2,
        }
    }

    fn timeouts(self) -> (Duration, Duration) {
        match self {
            Patience::Batch { .. } => (Duration::from_secs(10), Duration::from_secs(60)),
            Patience::Interactive => (Duration::from_secs(2), Duration::from_secs(3)),
        }
    }

    fn backoff(self, failures: u32) -> Duration {
        match self {
            Patience::Batch { .. } => FIRST_BACKOFF * 2u32.pow(failures - 1),
            Patience::Interactive => Duration::from_millis(100),
        }
    }
}

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
    Unauthorized { status: Status, codes: Codes },
    #[error("Clerk answered {status}{codes} to GET {path}")]
    Refused { status: Status, codes: Codes, path: String },
    #[error("Clerk answered {status} to GET {path} {attempts} times in a row; giving up")]
    ServerErrors { status: Status, path: String, attempts: u32 },
    #[error("could not reach Clerk at {base} ({}), {attempts} attempts", .transport.detail())]
    Unreachable { base: String, transport: Transport, attempts: u32 },
    #[error(
        "Clerk rate limited GET {path} ({attempts} answers 429); try again later (the admin tool: with a lower --rate)"
    )]
    RateLimited { path: String, attempts: u32, retry_after: Option<Duration> },
    #[error("Clerk asked to wait {seconds} s before GET {path}: longer than this tool waits")]
    RetryTooLate { path: String, seconds: u64 },
    #[error("the HTTP client could not be built: {0}")]
    Client(String),
    #[error("{0} is not a valid base URL")]
    BaseUrl(String),
}

/// An HTTP status, shown with its reason phrase (`503 Service Unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match lambda_http::http::StatusCode::from_u16(self.0) {
            Ok(status) => write!(f, "{status}"),
            Err(_) => write!(f, "{}", self.0),
        }
    }
}

impl ClerkError {
    /// Whether Clerk did not answer in time (as opposed to answering with a failure).
    pub fn timed_out(&self) -> bool {
        matches!(self, ClerkError::Unreachable { transport: Transport::TimedOut, .. })
    }
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

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a code speaks of authentication or the key (`authentication_invalid`, ...).
    fn about_the_key(&self) -> bool {
        self.0.iter().any(|c| c.contains("auth") || c.contains("key") || c.contains("secret"))
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
    http: Http,
    base: String,
    patience: Patience,
    /// Spaces requests in `Patience::Batch`; `None` in `Patience::Interactive`.
    pacer: Option<Pacer>,
}

/// What a `GET` of one object found.
pub enum Found {
    Exists,
    NotFound,
}

/// One object fetched, or Clerk's word that there is none.
pub enum Fetched {
    Object(Vec<u8>),
    NotFound,
}

impl Clerk {
    /// A client of the Backend API at `base` (such as [`DEFAULT_API_URL`]) with `key`, trying as
    /// hard as `patience` says. The user agent names the caller (`clerk-sync` or `clerk-sync-admin`).
    pub fn new(base: &str, key: &SecretKey, patience: Patience, user_agent: &'static str) -> Result<Self, ClerkError> {
        let base = base.trim().trim_end_matches('/').to_owned();
        if !is_base_url(&base) {
            return Err(ClerkError::BaseUrl(base));
        }
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.0))
            .map_err(|_| ClerkError::Client("CLERK_SECRET_KEY holds characters a header cannot".into()))?;
        auth.set_sensitive(true);
        let (connect_timeout, request_timeout) = patience.timeouts();
        let http = Http::new(auth, user_agent, connect_timeout, request_timeout);
        let pacer = match patience {
            Patience::Batch { rate_per_10s } => Some(Pacer::new(rate_per_10s)),
            Patience::Interactive => None,
        };
        Ok(Self { http, base, patience, pacer })
    }

    /// `GET /users/{id}`: the user, or Clerk's own 404 (`resource_not_found`).
    pub async fn user(&self, id: &str) -> Result<Fetched, ClerkError> {
        self.fetch(format!("/users/{id}")).await
    }

    /// `GET /sessions/{id}`: the session, or Clerk's own 404.
    pub async fn session(&self, id: &str) -> Result<Fetched, ClerkError> {
        self.fetch(format!("/sessions/{id}")).await
    }

    /// Every organization membership of user `id` (`GET /users/{id}/organization_memberships`,
    /// every page), or Clerk's own 404 for the user.
    /// An instance with Organizations turned off has none (Clerk answers 403
    /// `organization_not_enabled_in_instance`). At most `MAX_MEMBERSHIP_PAGES` pages are read: a
    /// list that goes on (a `total_count` Clerk overstates) is an error, not an endless loop.
    pub async fn user_memberships(&self, id: &str) -> Result<Option<Vec<Box<RawValue>>>, ListError> {
        let path = format!("/users/{id}/organization_memberships");
        let mut objects = Vec::new();
        for _ in 0..MAX_MEMBERSHIP_PAGES {
            let query = [("limit", MAX_PAGE.to_string()), ("offset", objects.len().to_string())];
            let body = match self.get_or_404(&path, &query).await {
                Ok(Ok(body)) => body,
                Ok(Err(codes)) if codes.contains("resource_not_found") => return Ok(None),
                Ok(Err(codes)) => return Err(ClerkError::Refused { status: Status(404), codes, path }.into()),
                Err(ClerkError::Refused { status: Status(403), codes, .. })
                    if codes.contains("organization_not_enabled_in_instance") =>
                {
                    return Ok(Some(Vec::new()));
                }
                Err(e) => return Err(e.into()),
            };
            let page = read_page(&path, objects.len() as u64, &body)?;
            let received = page.data.len();
            let last = page.is_last((objects.len() + received) as u64, received);
            objects.extend(page.data);
            if last {
                return Ok(Some(objects));
            }
        }
        Err(ListError::Malformed {
            page: format!("GET {path}"),
            reason: format!("a list longer than {MAX_MEMBERSHIP_PAGES} pages of {MAX_PAGE}"),
        })
    }

    /// The instance's JSON Web Key Set (`GET /jwks`), unparsed.
    pub async fn jwks(&self) -> Result<Vec<u8>, ClerkError> {
        self.get("/jwks", &[]).await
    }

    async fn fetch(&self, path: String) -> Result<Fetched, ClerkError> {
        match self.get_or_404(&path, &[]).await? {
            Ok(body) => Ok(Fetched::Object(body)),
            Err(codes) if codes.contains("resource_not_found") => Ok(Fetched::NotFound),
            Err(codes) => Err(ClerkError::Refused { status: Status(404), codes, path }),
        }
    }

    /// One page of `GET /users` in creation order (oldest first): `limit` users created after
    /// `created_after` (Clerk's `created_at`, milliseconds; `created_at_after`), from `offset` on:
    /// a bare JSON array, returned unparsed so the caller can report exactly what is wrong with it.
    /// `GET /users` pages by `limit` and `offset` only; a listing of every user pages by creation
    /// time (see `clerk-sync-admin`'s `users` module), since an offset moves when a user before it
    /// goes.
    pub async fn users_page(&self, limit: u32, created_after: Option<i64>, offset: u64) -> Result<Vec<u8>, ClerkError> {
        let mut query = vec![("limit", limit.to_string()), ("order_by", "created_at".to_owned())];
        if let Some(after) = created_after {
            query.push(("created_at_after", after.to_string()));
        }
        if offset > 0 {
            query.push(("offset", offset.to_string()));
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
                Err(codes) => return Err(ClerkError::Refused { status: Status(404), codes, path }.into()),
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
            Err(codes) => Err(ClerkError::Refused { status: Status(404), codes, path }),
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
            Err(codes) => Err(ClerkError::Refused { status: Status(404), codes, path: path.to_owned() }),
        }
    }

    /// A `GET`, paced and retried as [`Patience`] says: on 429 (after `Retry-After`), 5xx and
    /// connection failures. Returns the body of a 2xx, or Clerk's error codes for a 404.
    async fn get_or_404(&self, path: &str, query: &[(&str, String)]) -> Result<Result<Vec<u8>, Codes>, ClerkError> {
        let url = format!("{}{path}{}", self.base, query_string(query));
        let mut failures = 0;
        let mut rate_limited = 0;
        loop {
            if let Some(pacer) = &self.pacer {
                pacer.wait_turn().await;
            }
            let failure = match self.http.get(&url, API_VERSION).await {
                Ok(Answer { status: 200..=299, body, .. }) => return Ok(Ok(body)),
                Ok(Answer { status: 404, body, .. }) => return Ok(Err(Codes::from_body(&body))),
                Ok(Answer { status: 429, retry_after, .. }) => {
                    rate_limited += 1;
                    let Some(pacer) = &self.pacer else {
                        return Err(ClerkError::RateLimited { path: path.to_owned(), attempts: 1, retry_after });
                    };
                    if rate_limited > MAX_RATE_LIMITED {
                        return Err(ClerkError::RateLimited {
                            path: path.to_owned(),
                            attempts: rate_limited,
                            retry_after,
                        });
                    }
                    let wait = retry_after.unwrap_or(FIRST_BACKOFF * 2u32.pow(rate_limited.min(6)));
                    if wait > MAX_RETRY_AFTER {
                        return Err(ClerkError::RetryTooLate { path: path.to_owned(), seconds: wait.as_secs() });
                    }
                    pacer.hold_until(Instant::now() + wait);
                    continue;
                }
                Ok(Answer { status: status @ (401 | 403), body, .. }) => {
                    let codes = Codes::from_body(&body);
                    // A 403 about something else than the key (a feature the instance has turned
                    // off, say) is a refusal of this request, not of the key.
                    if status == 403 && !codes.is_empty() && !codes.about_the_key() {
                        return Err(ClerkError::Refused { status: Status(status), codes, path: path.to_owned() });
                    }
                    return Err(ClerkError::Unauthorized { status: Status(status), codes });
                }
                Ok(Answer { status: status @ 500..=599, .. }) => Failure::Status(Status(status)),
                Ok(Answer { status, body, .. }) => {
                    let codes = Codes::from_body(&body);
                    return Err(ClerkError::Refused { status: Status(status), codes, path: path.to_owned() });
                }
                Err(transport) => Failure::Transport(transport),
            };
            failures += 1;
            if failures >= self.patience.attempts() {
                return Err(match failure {
                    Failure::Status(status) => {
                        ClerkError::ServerErrors { status, path: path.to_owned(), attempts: failures }
                    }
                    Failure::Transport(transport) => {
                        ClerkError::Unreachable { base: self.base.clone(), transport, attempts: failures }
                    }
                });
            }
            sleep(self.patience.backoff(failures)).await;
        }
    }
}

/// The most objects one page of a list holds (Clerk's limit).
const MAX_PAGE: u32 = 500;
/// The most pages of a user's memberships `/sync` reads: 5,000 memberships.
const MAX_MEMBERSHIP_PAGES: usize = 10;

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
    Status(Status),
    Transport(Transport),
}

/// `https://` and a host, or `http://` and a loopback host (a local fake of Clerk): the secret key
/// travels to it, and its answers are written to the table.
pub fn is_base_url(base: &str) -> bool {
    let (rest, plain) = match (base.strip_prefix("https://"), base.strip_prefix("http://")) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return false,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !host.is_empty() && (!plain || loopback) && !rest.contains(char::is_whitespace) && !rest.contains(['?', '#', '@'])
}

/// `?name=value&...`, every byte outside RFC 3986's unreserved set percent-encoded.
fn query_string(query: &[(&str, String)]) -> String {
    let mut text = String::new();
    for (i, (name, value)) in query.iter().enumerate() {
        text.push(if i == 0 { '?' } else { '&' });
        for (j, part) in [*name, value.as_str()].into_iter().enumerate() {
            if j == 1 {
                text.push('=');
            }
            for byte in part.bytes() {
                if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                    text.push(byte as char);
                } else {
                    text.push_str(&format!("%{byte:02X}"));
                }
            }
        }
    }
    text
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
    fn query_values_are_percent_encoded() {
        let query = [("user_id", "user_1".to_owned()), ("q", "a b&c=d/é".to_owned())];
        assert_eq!(query_string(&query), "?user_id=user_1&q=a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(query_string(&[]), "");
    }

    #[test]
    fn base_urls_are_http_or_https_with_a_host() {
        assert!(is_base_url("https://api.clerk.com/v1"));
        assert!(is_base_url("http://127.0.0.1:8080/v1"));
        assert!(is_base_url("http://localhost:8080/v1"));
        assert!(is_base_url("http://[::1]:8080/v1"));
        assert!(!is_base_url("http://api.clerk.com/v1"), "the secret key never travels in the clear");
        assert!(!is_base_url("http://127.0.0.1.evil.example/v1"));
        assert!(!is_base_url("https://user@api.clerk.com/v1"));
        assert!(!is_base_url("api.clerk.com/v1"));
        assert!(!is_base_url("https:///v1"));
        assert!(!is_base_url("https://api.clerk.com/v1?x=1"));
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
