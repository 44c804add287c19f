//! `/sync`'s step 2, beside [`crate::verify`]: the caller's Clerk session token
//! (`Authorization: Bearer <JWT>`) checked before any call to Clerk's Backend API or DynamoDB.
//!
//! Only a verified token yields a [`Caller`]: RS256 alone (never the token's own choice of
//! algorithm), the signature checked before any claim is read, `exp`, `nbf` and `iat` within 5 s of
//! skew (Clerk's own SDK's; a token lives 60 s), `sub` a user id and `sid` a session id, a token
//! category other than a session token refused (JWT-template tokens outlive their session), and
//! `azp` among the authorized parties when they are configured. Every reason is for the log only:
//! the caller hears a generic 401.

use std::collections::HashMap;
use std::time::Duration;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::clerk::{Clerk, ClerkError};

/// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds (Clerk's SDK default).
pub const CLOCK_SKEW_SECS: i64 = 5;
/// A session token is a few hundred bytes to a few KB (organization claims, billing features);
/// anything far larger is refused before it is decoded.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Token categories (header `cat`): a session token, and "ignore" (stamped on every kind of token by
/// some instances, so it says nothing). Absent on older tokens. Anything else is refused.
const SESSION_CATEGORY: &str = "cl_B7d4PD111AAA";
const IGNORE_CATEGORY: &str = "cl_I7d4PD111III";
/// A fetched key set is used this long before it is fetched again, as Clerk's own SDK does. Clerk
/// names every key of an instance after the instance, so a rotated key keeps its key id: only this
/// refresh picks it up.
const KEY_SET_TTL: Duration = Duration::from_secs(300);
/// An unknown key id refetches the key set at most this often: a stream of tokens with made-up key
/// ids costs Clerk one request per function instance per interval, not one per token.
pub const MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(300);
/// A key set past `KEY_SET_TTL` whose refresh failed is tried again at most this often, and a
/// refresh while the cached keys can still answer is waited for at most `OPTIONAL_REFRESH_BUDGET`:
/// Clerk's key set being slow or down must not hold up, one after another, callers whose key is
/// at hand.
const STALE_RETRY_INTERVAL: Duration = Duration::from_secs(30);
const OPTIONAL_REFRESH_BUDGET: Duration = Duration::from_secs(1);

/// A token as the caller sent it: nothing in it is believed yet.
pub struct Unverified<'a> {
    token: &'a str,
}

impl<'a> Unverified<'a> {
    /// The token of an `Authorization: Bearer <token>` header value.
    pub fn from_authorization(value: Option<&'a str>) -> Result<Self, TokenError> {
        let value = value.ok_or(TokenError::Missing)?.trim();
        let (scheme, token) = value.split_once(' ').ok_or(TokenError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(TokenError::NotBearer);
        }
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed("longer than a session token can be"));
        }
        Ok(Self { token })
    }
}

/// Who a verified token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: String,
    pub session_id: String,
    /// The Clerk instance that signed it: the key id, which Clerk names after the instance
    /// (`ins_...`), when it is one.
    pub instance_id: Option<String>,
}

/// Why a token was refused: for the log line, never the caller.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no bearer token")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm is not RS256")]
    Algorithm,
    #[error("the token is not a session token (category {0})")]
    Category(String),
    #[error("the token's key id is not in the instance's key set")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    #[error("the token was issued in the future (iat)")]
    IssuedInFuture,
    #[error("the token's {0} claim is missing or invalid")]
    Claim(&'static str),
    #[error("the token's session status is not active or pending")]
    SessionStatus,
    #[error("the token names no authorized party (azp), and authorized parties are configured")]
    NoAuthorizedParty,
    #[error("the token's authorized party is not among CLERK_AUTHORIZED_PARTIES")]
    UnauthorizedParty,
    #[error("the instance's key set could not be fetched: {0}")]
    KeySet(ClerkError),
    #[error("the instance's key set holds no usable RSA key")]
    EmptyKeySet,
}

impl TokenError {
    /// 403 for a token from an origin that is not authorized; 401 for everything else (500 and
    /// 502 when it is our key set that failed, not the token).
    pub fn status(&self) -> u16 {
        match self {
            TokenError::UnauthorizedParty => 403,
            TokenError::KeySet(ClerkError::Unauthorized { .. }) | TokenError::EmptyKeySet => 500,
            TokenError::KeySet(e) if e.timed_out() => 504,
            TokenError::KeySet(_) => 502,
            _ => 401,
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    alg: Option<&'a str>,
    kid: Option<String>,
    typ: Option<&'a str>,
    cat: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    sid: Option<String>,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    azp: Option<String>,
    sts: Option<String>,
}

/// The keys tokens are checked against.
pub enum Keys {
    /// The instance's PEM public key (`CLERK_JWT_KEY`): no network call, whatever the key id.
    Pem(ParsedPublicKey),
    /// The instance's key set from `GET /jwks`, cached.
    Fetched(Mutex<KeyCache>),
}

#[derive(Default)]
pub struct KeyCache {
    keys: HashMap<String, ParsedPublicKey>,
    fetched_at: Option<Instant>,
    /// The last fetch tried, whether it succeeded or not.
    attempted_at: Option<Instant>,
}

/// Whether a token's key calls for fetching the key set first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// The cached keys answer.
    No,
    /// No key is at hand: the fetch's failure is the answer.
    Required,
    /// The key id is not in the cached key set (Clerk may have rotated its key).
    UnknownKey,
    /// The cached key set is old: it still answers should the fetch fail or be slow.
    Stale,
}

impl KeyCache {
    /// What a token with key id `kid` needs at `now`: a fetch when no key set is at hand; when
    /// `kid` is unknown and the last attempt is `MIN_REFETCH_INTERVAL` old (a stream of made-up key
    /// ids costs Clerk one request per interval); when the key set is `KEY_SET_TTL` old and the
    /// last attempt `STALE_RETRY_INTERVAL` old.
    fn refresh(&self, kid: &str, now: Instant) -> Refresh {
        if self.keys.is_empty() {
            return Refresh::Required;
        }
        let since = |at: Option<Instant>| at.map_or(Duration::MAX, |at| now.saturating_duration_since(at));
        let (age, since_attempt) = (since(self.fetched_at), since(self.attempted_at));
        let unknown = !self.keys.contains_key(kid);
        if unknown && since_attempt >= MIN_REFETCH_INTERVAL {
            Refresh::UnknownKey
        } else if !unknown && age >= KEY_SET_TTL && since_attempt >= STALE_RETRY_INTERVAL {
            Refresh::Stale
        } else {
            Refresh::No
        }
    }
}

/// Why `CLERK_JWT_KEY` cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("CLERK_JWT_KEY is not a PEM RSA public key")]
pub struct PemError;

impl Keys {
    /// The key of `CLERK_JWT_KEY`: a PEM `PUBLIC KEY` (as Clerk's dashboard shows it) or `RSA
    /// PUBLIC KEY`; line breaks may be written as `\n`, as environment variables often carry them.
    pub fn from_pem(pem: &str) -> Result<Self, PemError> {
        let pem = pem.replace("\\n", "\n");
        let body: String =
            pem.lines().map(str::trim).filter(|line| !line.is_empty() && !line.starts_with("-----")).collect();
        let begins = pem.trim_start().starts_with("-----BEGIN PUBLIC KEY-----")
            || pem.trim_start().starts_with("-----BEGIN RSA PUBLIC KEY-----");
        if !begins {
            return Err(PemError);
        }
        let der = STANDARD.decode(body).map_err(|_| PemError)?;
        let key = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, der).map_err(|_| PemError)?;
        Ok(Keys::Pem(key))
    }

    /// Keys fetched from the instance's key set when first needed.
    pub fn fetched() -> Self {
        Keys::Fetched(Mutex::new(KeyCache::default()))
    }

    /// The key for `kid`. Fetches the key set when none was fetched yet, when it is older than
    /// `KEY_SET_TTL`, or when `kid` is unknown and the last fetch is `MIN_REFETCH_INTERVAL` old.
    async fn key_for<T>(
        &self,
        kid: Option<&str>,
        clerk: &Clerk,
        use_key: impl FnOnce(&ParsedPublicKey) -> T,
    ) -> Result<T, TokenError> {
        let cache = match self {
            Keys::Pem(key) => return Ok(use_key(key)),
            Keys::Fetched(cache) => cache,
        };
        let kid = kid.ok_or(TokenError::UnknownKey)?;
        // One fetch at a time: concurrent tokens of one instance wait for it instead of each fetching.
        let mut cache = cache.lock().await;
        let refresh = cache.refresh(kid, Instant::now());
        if refresh != Refresh::No {
            cache.attempted_at = Some(Instant::now());
            let fetched = match refresh {
                Refresh::Stale => {
                    tokio::time::timeout(OPTIONAL_REFRESH_BUDGET, fetch_key_set(clerk)).await.unwrap_or_else(|_| {
                        let transport = crate::clerk::Transport::TimedOut;
                        let base = String::new();
                        Err(TokenError::KeySet(ClerkError::Unreachable { base, transport, attempts: 1 }))
                    })
                }
                _ => fetch_key_set(clerk).await,
            };
            match fetched {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched_at = cache.attempted_at;
                }
                // A failed refresh keeps the keys it had, if any: Clerk's hiccup does not refuse
                // every caller. Without any key, the failure is the answer.
                Err(e) if cache.keys.is_empty() => return Err(e),
                Err(e) => tracing::warn!(error = %e, "could not refresh Clerk's key set; using the cached one"),
            }
        }
        cache.keys.get(kid).map(use_key).ok_or(TokenError::UnknownKey)
    }
}

async fn fetch_key_set(clerk: &Clerk) -> Result<HashMap<String, ParsedPublicKey>, TokenError> {
    #[derive(Deserialize)]
    struct KeySet {
        keys: Vec<Jwk>,
    }
    #[derive(Deserialize)]
    struct Jwk {
        kid: Option<String>,
        kty: Option<String>,
        n: Option<String>,
        e: Option<String>,
    }
    let body = clerk.jwks().await.map_err(TokenError::KeySet)?;
    let set: KeySet = serde_json::from_slice(&body).map_err(|_| TokenError::EmptyKeySet)?;
    let keys: HashMap<String, ParsedPublicKey> = set
        .keys
        .into_iter()
        .filter(|jwk| jwk.kty.as_deref() == Some("RSA"))
        .filter_map(|jwk| {
            let n = URL_SAFE_NO_PAD.decode(jwk.n?).ok()?;
            let e = URL_SAFE_NO_PAD.decode(jwk.e?).ok()?;
            let key = RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .to_parsed_public_key(&signature::RSA_PKCS1_2048_8192_SHA256)
                .ok()?;
            Some((jwk.kid?, key))
        })
        .collect();
    if keys.is_empty() { Err(TokenError::EmptyKeySet) } else { Ok(keys) }
}

/// What tokens must satisfy besides their signature.
pub struct Verifier {
    pub keys: Keys,
    /// `CLERK_AUTHORIZED_PARTIES`: when not empty, `azp` must be present and one of them.
    pub authorized_parties: Vec<String>,
}

impl Verifier {
    /// Checks `token` at `now` (unix seconds). `clerk` is asked for the key set only when the
    /// header is acceptable and the key is not at hand.
    pub async fn verify(&self, token: Unverified<'_>, now: i64, clerk: &Clerk) -> Result<Caller, TokenError> {
        let mut parts = token.token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three dot-separated parts"));
        };
        // The signed part: `header.payload`, exactly as sent.
        let signed = &token.token[..header.len() + 1 + payload.len()];
        let header_json = decode(header, "header")?;
        let header: Header<'_> = serde_json::from_slice(&header_json)
            .map_err(|_| TokenError::Malformed("the header is not a JWT header"))?;
        if header.alg != Some("RS256") {
            return Err(TokenError::Algorithm);
        }
        if header.typ.is_some_and(|typ| !typ.eq_ignore_ascii_case("JWT")) {
            return Err(TokenError::Malformed("typ is not JWT"));
        }
        if let Some(category) = header.cat.filter(|c| c != SESSION_CATEGORY && c != IGNORE_CATEGORY) {
            return Err(TokenError::Category(category.chars().take(32).collect()));
        }
        let signature = decode(signature, "signature")?;
        let verify = |key: &ParsedPublicKey| key.verify_sig(signed.as_bytes(), &signature);
        let verified = self.keys.key_for(header.kid.as_deref(), clerk, verify).await?;
        verified.map_err(|_| TokenError::Signature)?;

        // Only now is anything in the payload believed.
        let claims: Claims = serde_json::from_slice(&decode(payload, "payload")?)
            .map_err(|_| TokenError::Malformed("the payload is not a JSON object of claims"))?;
        let instance_id = header.kid.filter(|kid| is_clerk_id(kid, "ins_"));
        self.check_claims(claims, now, instance_id)
    }

    fn check_claims(&self, claims: Claims, now: i64, instance_id: Option<String>) -> Result<Caller, TokenError> {
        let now = now as f64;
        let skew = CLOCK_SKEW_SECS as f64;
        let exp = claims.exp.ok_or(TokenError::Claim("exp"))?;
        if now > exp + skew {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now + skew) {
            return Err(TokenError::NotYetValid);
        }
        let iat = claims.iat.ok_or(TokenError::Claim("iat"))?;
        if iat > now + skew {
            return Err(TokenError::IssuedInFuture);
        }
        let user_id = claims.sub.filter(|sub| is_clerk_id(sub, "user_")).ok_or(TokenError::Claim("sub"))?;
        let session_id = claims.sid.filter(|sid| is_clerk_id(sid, "sess_")).ok_or(TokenError::Claim("sid"))?;
        // A sign-up that must still choose an organization starts `pending`; older tokens say nothing.
        if claims.sts.as_deref().is_some_and(|sts| sts != "active" && sts != "pending") {
            return Err(TokenError::SessionStatus);
        }
        if !self.authorized_parties.is_empty() {
            let azp = claims.azp.as_deref().ok_or(TokenError::NoAuthorizedParty)?;
            if !self.authorized_parties.iter().any(|party| party == azp) {
                return Err(TokenError::UnauthorizedParty);
            }
        }
        Ok(Caller { user_id, session_id, instance_id })
    }
}

fn decode(part: &str, what: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| {
        TokenError::Malformed(match what {
            "header" => "the header is not base64url",
            "payload" => "the payload is not base64url",
            _ => "the signature is not base64url",
        })
    })
}

/// A Clerk id of the given prefix: the prefix and base62, as ids become DynamoDB keys.
fn is_clerk_id(id: &str, prefix: &str) -> bool {
    id.len() > prefix.len()
        && id.len() <= 128
        && id.starts_with(prefix)
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_with(kid: &str, fetched_ago: Duration, attempted_ago: Duration, now: Instant) -> KeyCache {
        use aws_lc_rs::signature::KeyPair as _;
        static KEY: std::sync::OnceLock<aws_lc_rs::rsa::KeyPair> = std::sync::OnceLock::new();
        let pair = KEY.get_or_init(|| aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap());
        let key = ParsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pair.public_key().as_ref()).unwrap();
        KeyCache {
            keys: HashMap::from([(kid.to_owned(), key)]),
            fetched_at: Some(now - fetched_ago),
            attempted_at: Some(now - attempted_ago),
        }
    }

    #[test]
    fn no_key_set_at_hand_must_be_fetched() {
        assert_eq!(KeyCache::default().refresh("ins_1", Instant::now()), Refresh::Required);
    }

    #[test]
    fn unknown_key_ids_refetch_at_most_every_five_minutes() {
        let now = Instant::now() + Duration::from_secs(7200);
        let minute = Duration::from_secs(60);
        assert_eq!(cache_with("ins_1", minute, minute, now).refresh("ins_1", now), Refresh::No);
        assert_eq!(cache_with("ins_1", minute, minute, now).refresh("ins_2", now), Refresh::No);
        let cache = cache_with("ins_1", MIN_REFETCH_INTERVAL, MIN_REFETCH_INTERVAL, now);
        assert_eq!(cache.refresh("ins_2", now), Refresh::UnknownKey);
        // A failed attempt a minute ago counts: no new request for a made-up key id.
        let cache = cache_with("ins_1", 10 * minute, minute, now);
        assert_eq!(cache.refresh("ins_2", now), Refresh::No);
    }

    #[test]
    fn a_stale_key_set_is_refreshed_but_a_failing_refresh_is_not_retried_at_once() {
        let now = Instant::now() + Duration::from_secs(7200);
        let cache = cache_with("ins_1", KEY_SET_TTL, KEY_SET_TTL, now);
        assert_eq!(cache.refresh("ins_1", now), Refresh::Stale);
        let cache = cache_with("ins_1", KEY_SET_TTL, Duration::from_secs(1), now);
        assert_eq!(cache.refresh("ins_1", now), Refresh::No, "the refresh failed a second ago");
        let cache = cache_with("ins_1", KEY_SET_TTL, STALE_RETRY_INTERVAL, now);
        assert_eq!(cache.refresh("ins_1", now), Refresh::Stale);
    }
}
