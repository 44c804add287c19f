//! `POST /sync` end to end: session tokens signed in the test with RSA keys made here, a fake Clerk
//! (key set and Backend API) over real HTTP on 127.0.0.1, and the local DynamoDB API. Each test is
//! one line of the route's contract: what each token and each answer of Clerk's is answered, what
//! is written (and that nothing is where nothing may be), and the races with webhooks.

mod common;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_lc_rs::encoding::{AsDer, PublicKeyX509Der};
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clerk_sync::clerk::SecretKey;
use clerk_sync::config::SyncConfig;
use clerk_sync::handler::App;
use common::fake_clerk::{FakeClerk, Fault, Kind, SECRET_KEY};
use common::fault_proxy::{Fault as ProxyFault, FaultProxy};
use common::*;
use hmac::{KeyInit, Mac};
use lambda_http::http::header;
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

const INSTANCE: &str = "ins_123";
const USER: &str = "user_2sYnC0000000000000000000001";
const SESSION: &str = "sess_2sYnC0000000000000000000001";
const OTHER_USER: &str = "user_2sYnC0000000000000000000002";
const OTHER_SESSION: &str = "sess_2sYnC0000000000000000000002";
const ORG_A: &str = "org_2sYnCaaaaaaaaaaaaaaaaaaaaaa";
const ORG_B: &str = "org_2sYnCbbbbbbbbbbbbbbbbbbbbbb";
const PARTY: &str = "https://app.example.com";
/// The test's clock (unix seconds); Clerk's objects were last updated a little before it.
const NOW: i64 = 1_800_000_000;
const NOW_MS: i64 = NOW * 1000;
/// `updated_at` of the fake's objects (ms).
const UPDATED: i64 = NOW_MS - 60_000;
const GENERIC_401: &str = "a valid Clerk session token is required";

// ---- keys and tokens -----------------------------------------------------------------------

struct Keys {
    instance: KeyPair,
    other: KeyPair,
}

/// Two 2048-bit keys, made once per test binary: the instance's, and another.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        instance: KeyPair::generate(KeySize::Rsa2048).unwrap(),
        other: KeyPair::generate(KeySize::Rsa2048).unwrap(),
    })
}

/// The public key as Clerk's dashboard shows it (`CLERK_JWT_KEY`): PEM `PUBLIC KEY` (SPKI).
fn pem(key: &KeyPair) -> String {
    let der: PublicKeyX509Der<'static> = key.public_key().as_der().unwrap();
    let body = STANDARD.encode(der.as_ref());
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

/// One DER element at the start of `der`: (tag, contents, rest).
fn der_element(der: &[u8]) -> (u8, &[u8], &[u8]) {
    let tag = der[0];
    let (length, header) = match der[1] {
        short if short < 0x80 => (short as usize, 2),
        long => {
            let n = (long & 0x7f) as usize;
            (der[2..2 + n].iter().fold(0usize, |acc, b| acc << 8 | *b as usize), 2 + n)
        }
    };
    (tag, &der[header..header + length], &der[header + length..])
}

/// The key as a JWK of the instance's key set, from its PKCS#1 `RSAPublicKey` DER.
fn jwk(key: &KeyPair, kid: &str) -> Value {
    let (tag, sequence, _) = der_element(key.public_key().as_ref());
    assert_eq!(tag, 0x30);
    let (_, n, rest) = der_element(sequence);
    let (_, e, _) = der_element(rest);
    let n = n.strip_prefix(&[0]).unwrap_or(n);
    json!({"use": "sig", "kty": "RSA", "kid": kid, "alg": "RS256",
           "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e)})
}

fn key_set() -> Value {
    json!({"keys": [jwk(&keys().instance, INSTANCE)]})
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

/// `header.payload.signature`, RS256 with `key`.
fn sign_rs256(header: &Value, claims: &Value, key: &KeyPair) -> String {
    let signed = format!("{}.{}", b64(header), b64(claims));
    let mut signature = vec![0; key.public_modulus_len()];
    key.sign(
        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .unwrap();
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn session_header() -> Value {
    json!({"alg": "RS256", "kid": INSTANCE, "typ": "JWT", "cat": "cl_B7d4PD111AAA"})
}

/// Version 2 session token claims of `user` and `session`, issued at `now`, as Clerk makes them.
fn claims(user: &str, session: &str, now: i64) -> Value {
    json!({
        "azp": PARTY, "exp": now + 60, "fva": [0, -1], "iat": now, "iss": "https://clerk.example.com",
        "jti": "0123456789abcdef0123", "nbf": now - 10, "sid": session, "sts": "active", "sub": user, "v": 2
    })
}

/// A valid session token of `user` and `session` at `now`.
fn token_at(user: &str, session: &str, now: i64) -> String {
    sign_rs256(&session_header(), &claims(user, session, now), &keys().instance)
}

fn token() -> String {
    token_at(USER, SESSION, NOW)
}

fn remove(object: &mut Value, name: &str) {
    object.as_object_mut().unwrap().remove(name);
}

fn with_claims(change: impl FnOnce(&mut Value)) -> String {
    let mut claims = claims(USER, SESSION, NOW);
    change(&mut claims);
    sign_rs256(&session_header(), &claims, &keys().instance)
}

fn with_header(change: impl FnOnce(&mut Value)) -> String {
    let mut header = session_header();
    change(&mut header);
    sign_rs256(&header, &claims(USER, SESSION, NOW), &keys().instance)
}

// ---- requests ------------------------------------------------------------------------------

/// An HTTP API (v2) `POST /sync` with `authorization`.
fn sync_request_with(method: &str, authorization: Option<&str>) -> Request {
    let mut event = fixture("user-created");
    event["rawPath"] = json!("/sync");
    event["routeKey"] = json!("POST /sync");
    event["requestContext"]["routeKey"] = json!("POST /sync");
    event["requestContext"]["http"]["path"] = json!("/sync");
    event["requestContext"]["http"]["method"] = json!(method);
    for name in ["svix-id", "svix-timestamp", "svix-signature", "content-length"] {
        remove_header(&mut event, name);
    }
    set_body(&mut event, b"");
    if let Some(value) = authorization {
        set_header(&mut event, "authorization", value);
    }
    request(&event)
}

fn sync_request(token: &str) -> Request {
    sync_request_with("POST", Some(&format!("Bearer {token}")))
}

fn header_of(response: &Response<Body>, name: header::HeaderName) -> Option<&str> {
    response.headers().get(name).and_then(|v| v.to_str().ok())
}

// ---- Clerk's objects -----------------------------------------------------------------------

fn data(envelope: &str) -> Value {
    serde_json::from_str::<Value>(envelope).unwrap()["data"].take()
}

fn clerk_user(id: &str, updated_at: i64, first_name: &str) -> Value {
    data(&clerk::user("user.updated", id, updated_at, first_name))
}

/// The Backend API's session: the webhook's fields, no embedded user, and `latest_activity`.
fn clerk_session(id: &str, user_id: &str, status: &str, updated_at: i64) -> Value {
    let mut session = data(&clerk::session("session.updated", id, user_id, status, updated_at, None));
    session.as_object_mut().unwrap().remove("user");
    session["latest_activity"] = json!({
        "id": "sess_activity_1", "object": "session_activity", "browser_name": "Firefox", "browser_version": "128",
        "city": "Reykjavik", "country": "IS", "device_type": "desktop", "ip_address": "192.0.2.77", "is_mobile": false
    });
    session
}

fn clerk_membership(id: &str, organization_id: &str, user_id: &str, updated_at: i64) -> Value {
    data(&clerk::membership(
        "organizationMembership.updated",
        id,
        organization_id,
        user_id,
        "org:member",
        updated_at - 10,
        updated_at,
    ))
}

// ---- the world of a test -------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum KeyMode {
    /// `CLERK_JWT_KEY`: no network call for keys.
    Pem,
    /// The key set from `{CLERK_API_URL}/jwks`.
    Fetched,
}

struct World {
    table: TestTable,
    clerk: FakeClerk,
    app: App,
}

fn sync_config(clerk: &FakeClerk, mode: KeyMode) -> SyncConfig {
    SyncConfig {
        secret_key: SecretKey::new(SECRET_KEY.to_owned()).unwrap(),
        api_url: clerk.base.clone(),
        jwt_key: (mode == KeyMode::Pem).then(|| pem(&keys().instance)),
        authorized_parties: vec![PARTY.to_owned(), "https://admin.example.com".to_owned()],
    }
}

/// A table, a fake Clerk holding `USER` (active session `SESSION`, two memberships) and
/// `OTHER_USER`, and the function with `/sync` on.
async fn world(mode: KeyMode) -> World {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    clerk.set_memberships(
        USER,
        vec![
            clerk_membership("orgmem_2sYnCa0000000000000000001", ORG_A, USER, UPDATED),
            clerk_membership("orgmem_2sYnCb0000000000000000001", ORG_B, USER, UPDATED),
        ],
    );
    seed(&clerk, OTHER_USER, OTHER_SESSION);
    let app = table.app_with_sync(sync_config(&clerk, mode));
    World { table, clerk, app }
}

fn seed(clerk: &FakeClerk, user: &str, session: &str) {
    clerk.put_user(clerk_user(user, UPDATED, "Ada"));
    clerk.put_session(clerk_session(session, user, "active", UPDATED));
}

impl World {
    async fn call_at(&self, token: &str, now_ms: i64) -> Response<Body> {
        self.app.handle_at_ms(sync_request(token), now_ms).await
    }

    async fn call(&self, token: &str) -> Response<Body> {
        self.call_at(token, NOW_MS).await
    }

    /// Delivers a webhook through the same function.
    async fn deliver(&self, body: &str, id: &str) -> (u16, Value) {
        answer(&self.app.handle(delivery(body, id)).await)
    }

    /// Items of Clerk's objects (not the `/sync` window, not the instance record).
    async fn data_items(&self) -> Vec<((String, String), Value)> {
        self.table.items().await.into_iter().filter(|((pk, _), _)| !pk.starts_with("SYNC#")).collect()
    }
}

/// A refusal: the status, no caching, the generic body and `WWW-Authenticate` of a 401.
fn assert_refusal(response: &Response<Body>, status: u16, what: &str) -> Value {
    let (got, body) = answer(response);
    assert_eq!(got, status, "{what}: {body}");
    assert_eq!(header_of(response, header::CACHE_CONTROL), Some("no-store"), "{what}");
    if status == 401 {
        assert_eq!(header_of(response, header::WWW_AUTHENTICATE), Some("Bearer"), "{what}");
        assert_eq!(body, json!({"error": GENERIC_401}), "{what}: the body says nothing of why");
    }
    body
}

/// An item as `/sync` answers it: as stored, `data` without `private_metadata`.
fn for_the_caller(item: &Value) -> Value {
    let mut item = item.clone();
    if let Some(text) = item.get("data").and_then(Value::as_str) {
        let mut data: serde_json::Map<String, Value> = serde_json::from_str(text).unwrap();
        data.remove("private_metadata");
        item["data"] = json!(Value::Object(data).to_string());
    }
    item
}

// ---- the answer ----------------------------------------------------------------------------

#[tokio::test]
async fn sync_writes_the_user_session_and_memberships_and_answers_them_as_stored() {
    let w = world(KeyMode::Pem).await;
    let response = w.call(&token()).await;
    let (status, body) = answer(&response);
    assert_eq!(status, 200, "{body}");
    assert_eq!(header_of(&response, header::CACHE_CONTROL), Some("no-store"));
    assert_eq!(header_of(&response, header::CONTENT_TYPE), Some("application/json"));
    assert_eq!(w.clerk.requests_of(Kind::Jwks), 0, "CLERK_JWT_KEY needs no key set");
    assert_eq!((w.clerk.requests_of(Kind::User), w.clerk.requests_of(Kind::Session)), (1, 1));
    assert_eq!(w.clerk.requests_of(Kind::Memberships), 1);

    let user = w.table.item(&format!("USER#{USER}"), "USER").await.expect("the user item");
    let session = w.table.item(&format!("USER#{USER}"), &format!("SESSION#{SESSION}")).await.expect("session");
    assert_eq!(data_of(&user)["private_metadata"], json!({"internal": "Ada"}), "the table keeps it");
    assert_eq!(body["user"], for_the_caller(&user), "the user as the table holds it");
    assert_eq!(data_of(&body["user"]).get("private_metadata"), None, "the caller never sees private_metadata");
    assert_eq!(body["session"], for_the_caller(&session), "the session as the table holds it");
    assert_eq!(user["first_name"], "Ada");
    assert_eq!(user["version"], UPDATED);
    assert_eq!(session["status"], "active");
    assert_eq!(session["user_id"], USER);
    let memberships = body["memberships"].as_array().unwrap();
    assert_eq!(memberships.len(), 2, "{body}");
    for membership in memberships {
        let sk = membership["sk"].as_str().unwrap();
        let stored = w.table.item(&format!("USER#{USER}"), sk).await.unwrap();
        assert_eq!(&for_the_caller(&stored), membership);
    }
    let organizations: Vec<&str> = memberships.iter().map(|m| m["organization_id"].as_str().unwrap()).collect();
    assert_eq!(organizations, [ORG_A, ORG_B]);

    // The session's device (IP address, city, browser) and any embedded user are not stored.
    let stored = data_of(&session);
    assert_eq!(stored["id"], SESSION, "the session's Clerk object is kept");
    assert_eq!(stored.get("latest_activity"), None, "latest_activity is personal data: {stored}");
    assert_eq!(stored.get("user"), None);
    let everything = serde_json::to_string(&w.table.all_items().await.into_values().collect::<Vec<_>>()).unwrap();
    assert!(!everything.contains("192.0.2.77") && !everything.contains("Reykjavik"), "{everything}");
    // Memberships keep no copy of the organization or of the user's public data.
    for ((_, sk), item) in w.data_items().await {
        if sk.starts_with("ORG#") || sk.starts_with("MEMBER#") {
            assert_eq!(data_of(&item).get("public_user_data"), None, "{item}");
        }
    }
}

#[tokio::test]
async fn a_pending_session_is_accepted() {
    let w = world(KeyMode::Pem).await;
    w.clerk.put_session(clerk_session(SESSION, USER, "pending", UPDATED));
    let response = w.call(&with_claims(|c| c["sts"] = json!("pending"))).await;
    let (status, body) = answer(&response);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["session"]["status"], "pending");
}

#[tokio::test]
async fn a_session_no_longer_active_is_stored_then_refused() {
    let w = world(KeyMode::Pem).await;
    w.clerk.put_session(clerk_session(SESSION, USER, "revoked", UPDATED));
    assert_refusal(&w.call(&token()).await, 401, "revoked session");
    let session = w.table.item(&format!("USER#{USER}"), &format!("SESSION#{SESSION}")).await;
    assert_eq!(session.expect("its state is stored first")["status"], "revoked");
}

#[tokio::test]
async fn sync_is_404_when_not_configured() {
    let table = TestTable::create().await;
    let response = table.app().handle_at_ms(sync_request(&token()), NOW_MS).await;
    assert_eq!(answer(&response), (404, json!({"error": "sync is not configured"})));
    assert_eq!(header_of(&response, header::CACHE_CONTROL), Some("no-store"));
    assert!(table.all_items().await.is_empty());
}

#[tokio::test]
async fn only_post_is_answered() {
    let w = world(KeyMode::Pem).await;
    let response = w.app.handle_at_ms(sync_request_with("GET", Some(&format!("Bearer {}", token()))), NOW_MS).await;
    assert_eq!(response.status(), 405);
    assert_eq!(w.clerk.requests(), 0);
}

// ---- tokens --------------------------------------------------------------------------------

/// Tokens that must be refused, each with the status it gets.
fn refused_tokens() -> Vec<(&'static str, String, u16)> {
    let k = keys();
    let hs256 = {
        let header = json!({"alg": "HS256", "kid": INSTANCE, "typ": "JWT"});
        let signed = format!("{}.{}", b64(&header), b64(&claims(USER, SESSION, NOW)));
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(pem(&k.instance).as_bytes()).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    };
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&claims(USER, SESSION, NOW)));
    let valid = token();
    let (valid_signed, _) = valid.rsplit_once('.').unwrap();
    let tampered = {
        let mut claims = claims(OTHER_USER, SESSION, NOW);
        claims["sub"] = json!(OTHER_USER);
        format!("{}.{}.{}", b64(&session_header()), b64(&claims), valid.rsplit('.').next().unwrap())
    };
    vec![
        ("expired 6 s ago (beyond the 5 s skew)", with_claims(|c| c["exp"] = json!(NOW - 6)), 401),
        ("expired long ago", with_claims(|c| c["exp"] = json!(NOW - 3600)), 401),
        ("not valid for 6 s more", with_claims(|c| c["nbf"] = json!(NOW + 6)), 401),
        ("issued 6 s in the future", with_claims(|c| c["iat"] = json!(NOW + 6)), 401),
        ("no exp", with_claims(|c| remove(c, "exp")), 401),
        ("no iat", with_claims(|c| remove(c, "iat")), 401),
        ("signed by another key", sign_rs256(&session_header(), &claims(USER, SESSION, NOW), &k.other), 401),
        ("alg none", none.clone(), 401),
        ("alg none with the valid token's signature", format!("{none}{}", valid.rsplit('.').next().unwrap()), 401),
        ("HS256 signed with the public key", hs256, 401),
        ("RS384 header", with_header(|h| h["alg"] = json!("RS384")), 401),
        ("claims changed after signing", tampered, 401),
        ("signature cut", valid_signed.to_owned() + ".", 401),
        ("no sid", with_claims(|c| remove(c, "sid")), 401),
        ("sid not a session id", with_claims(|c| c["sid"] = json!("client_2sYnC")), 401),
        ("no sub", with_claims(|c| remove(c, "sub")), 401),
        ("sub not a user id", with_claims(|c| c["sub"] = json!("org_2sYnC")), 401),
        ("sub with a key separator", with_claims(|c| c["sub"] = json!("user_1#SESSION")), 401),
        ("azp not authorized", with_claims(|c| c["azp"] = json!("https://evil.example.com")), 403),
        ("azp with a trailing slash", with_claims(|c| c["azp"] = json!("https://app.example.com/")), 403),
        ("no azp", with_claims(|c| remove(c, "azp")), 401),
        ("session status ended", with_claims(|c| c["sts"] = json!("ended")), 401),
        ("JWT template category", with_header(|h| h["cat"] = json!("cl_B7d4PD222AAA")), 401),
        ("machine token category", with_header(|h| h["cat"] = json!("cl_B7d4PD333AAA")), 401),
        ("typ not JWT", with_header(|h| h["typ"] = json!("at+jwt")), 401),
        (
            "duplicate sub claim",
            {
                let payload = format!(
                    r#"{{"sub":"{USER}","sub":"{OTHER_USER}","sid":"{SESSION}","exp":{},"iat":{NOW},"azp":"{PARTY}"}}"#,
                    NOW + 60
                );
                let signed = format!("{}.{}", b64(&session_header()), URL_SAFE_NO_PAD.encode(payload));
                let mut signature = vec![0; k.instance.public_modulus_len()];
                k.instance
                    .sign(
                        &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                        &aws_lc_rs::rand::SystemRandom::new(),
                        signed.as_bytes(),
                        &mut signature,
                    )
                    .unwrap();
                format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature))
            },
            401,
        ),
        ("two parts", valid_signed.to_owned(), 401),
        ("four parts", format!("{valid}.x"), 401),
        ("not base64", "a.b.c!".to_owned(), 401),
        ("padded base64", format!("{valid}=="), 401),
        ("far too long", "a".repeat(20_000), 401),
    ]
}

async fn assert_refused_without_clerk(w: &World, requests_before: usize) {
    for (what, token, status) in refused_tokens() {
        assert_refusal(&w.call(&token).await, status, what);
        assert_eq!(w.clerk.requests(), requests_before, "{what}: a request reached Clerk: {:?}", w.clerk.received());
    }
    for authorization in [None, Some("Basic dXNlcjpwYXNz"), Some("Bearer"), Some("Bearer  "), Some(token().as_str())] {
        let response = w.app.handle_at_ms(sync_request_with("POST", authorization), NOW_MS).await;
        assert_refusal(&response, 401, &format!("Authorization {authorization:?}"));
    }
    assert_eq!(w.clerk.requests(), requests_before);
}

#[tokio::test]
async fn refused_tokens_make_no_request_to_clerk_and_write_nothing() {
    let w = world(KeyMode::Pem).await;
    assert_refused_without_clerk(&w, 0).await;
    assert!(w.table.all_items().await.is_empty(), "a refused token wrote: {:?}", w.table.all_items().await);
}

#[tokio::test]
async fn with_the_fetched_key_set_refused_tokens_make_no_further_request() {
    let w = world(KeyMode::Fetched).await;
    // The first token fetches the key set, with the secret key (the fake refuses any other).
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(w.clerk.requests_of(Kind::Jwks), 1);
    let before = w.clerk.requests();
    assert_refused_without_clerk(&w, before).await;
    // An unknown key id, or none: refused, and the key set is not fetched again within 5 minutes.
    for (what, token) in [
        ("unknown key id", with_header(|h| h["kid"] = json!("ins_2sYnCunknown"))),
        ("no key id", with_header(|h| remove(h, "kid"))),
    ] {
        assert_refusal(&w.call(&token).await, 401, what);
    }
    assert_eq!(w.clerk.requests(), before, "{:?}", w.clerk.received());
    // The cached key set still verifies.
    let later = w.call_at(&token_at(OTHER_USER, OTHER_SESSION, NOW + 10), NOW_MS + 10_000).await;
    assert_eq!(later.status(), 200);
    assert_eq!(w.clerk.requests_of(Kind::Jwks), 1, "the key set is cached");
}

#[tokio::test]
async fn an_unknown_key_id_fetches_the_key_set_once_and_is_refused() {
    let w = world(KeyMode::Fetched).await;
    let unknown = with_header(|h| h["kid"] = json!("ins_2sYnCunknown"));
    assert_refusal(&w.call(&unknown).await, 401, "unknown key id");
    assert_refusal(&w.call(&unknown).await, 401, "unknown key id again");
    assert_eq!(w.clerk.received().iter().map(|(k, _)| *k).collect::<Vec<_>>(), [Kind::Jwks]);
    // A key set rotated within the 5 minutes is not fetched for it yet; the known key still works.
    w.clerk.set_jwks(json!({"keys": [jwk(&keys().instance, INSTANCE), jwk(&keys().other, "ins_2sYnCunknown")]}));
    let other = sign_rs256(
        &json!({"alg": "RS256", "kid": "ins_2sYnCunknown", "typ": "JWT"}),
        &claims(USER, SESSION, NOW),
        &keys().other,
    );
    assert_refusal(&w.call(&other).await, 401, "a new key within the refetch interval");
    assert_eq!(w.clerk.requests_of(Kind::Jwks), 1);
    assert_eq!(w.call(&token()).await.status(), 200);
    assert!(w.table.all_items().await.keys().any(|(pk, _)| pk == &format!("USER#{USER}")));
}

#[tokio::test]
async fn the_key_set_failing_is_502_504_or_500_never_a_pass() {
    let w = world(KeyMode::Fetched).await;
    w.clerk.fail(Kind::Jwks, Fault::Status(503), None);
    assert_refusal(&w.call(&token()).await, 502, "key set 503");
    w.clerk.heal();
    w.clerk.fail(Kind::Jwks, Fault::Status(401), None);
    let body = assert_refusal(&w.call(&token()).await, 500, "key set 401");
    assert_eq!(body, json!({"error": "sync is misconfigured"}));
    w.clerk.heal();
    w.clerk.fail(Kind::Jwks, Fault::RateLimited { retry_after: 3 }, None);
    let response = w.call(&token()).await;
    assert_refusal(&response, 429, "key set 429");
    assert_eq!(header_of(&response, header::RETRY_AFTER), Some("3"));
    w.clerk.heal();
    w.clerk.set_jwks(json!({"keys": [{"kty": "EC", "kid": INSTANCE, "crv": "P-256", "x": "AA", "y": "AA"}]}));
    assert_refusal(&w.call(&token()).await, 500, "a key set without RSA keys");
    assert!(w.data_items().await.is_empty());
    w.clerk.set_jwks(key_set());
    assert_eq!(w.call(&token()).await.status(), 200, "a failed fetch is not cached");
}

/// A change to a token's header and claims.
type Change = Box<dyn Fn(&mut Value, &mut Value)>;

#[tokio::test]
async fn clock_skew_of_5_s_is_allowed_and_token_categories_absent_session_and_ignore_are_accepted() {
    let w = world(KeyMode::Pem).await;
    let cases: Vec<(&str, Change)> = vec![
        ("expired 5 s ago", Box::new(|_, c| c["exp"] = json!(NOW - 5))),
        ("valid in 5 s", Box::new(|_, c| c["nbf"] = json!(NOW + 5))),
        ("issued 5 s ahead", Box::new(|_, c| c["iat"] = json!(NOW + 5))),
        ("no category", Box::new(|h, _| remove(h, "cat"))),
        ("ignore category", Box::new(|h, _| h["cat"] = json!("cl_I7d4PD111III"))),
        ("no typ", Box::new(|h, _| remove(h, "typ"))),
        (
            "no nbf, no sts",
            Box::new(|_, c| {
                remove(c, "nbf");
                remove(c, "sts");
            }),
        ),
        ("the other authorized party", Box::new(|_, c| c["azp"] = json!("https://admin.example.com"))),
    ];
    for (i, (what, change)) in cases.into_iter().enumerate() {
        let (user, session) = (format!("user_2sYnCskew{i}"), format!("sess_2sYnCskew{i}"));
        seed(&w.clerk, &user, &session);
        let (mut header, mut claims) = (session_header(), claims(&user, &session, NOW));
        change(&mut header, &mut claims);
        let response = w.call(&sign_rs256(&header, &claims, &keys().instance)).await;
        let (status, body) = answer(&response);
        assert_eq!(status, 200, "{what}: {body}");
        assert_eq!(body["user"]["id"], user.as_str(), "{what}");
    }
}

#[tokio::test]
async fn a_token_of_another_instance_is_refused_once_the_table_mirrors_one() {
    let w = world(KeyMode::Pem).await;
    assert_eq!(w.deliver(&clerk::user("user.created", OTHER_USER, 1000, "Grace"), "msg_mirror").await.0, 200);
    let response = w.call(&with_header(|h| h["kid"] = json!("ins_2sYnCanother"))).await;
    assert_refusal(&response, 500, "another instance's key id");
    assert_eq!(w.clerk.requests(), 0);
}

// ---- what Clerk answers ----------------------------------------------------------------------

#[tokio::test]
async fn clerk_without_the_user_is_404_and_nothing_is_written() {
    let w = world(KeyMode::Pem).await;
    w.clerk.delete_user(USER);
    let body = assert_refusal(&w.call(&token()).await, 404, "no such user");
    assert_eq!(body, json!({"error": "Clerk has no such user"}));
    assert!(w.data_items().await.is_empty(), "{:?}", w.data_items().await);
}

#[tokio::test]
async fn clerk_without_the_user_tombstones_nothing_that_is_stored() {
    let w = world(KeyMode::Pem).await;
    assert_eq!(w.call(&token()).await.status(), 200);
    let before = w.data_items().await;
    w.clerk.delete_user(USER);
    w.clerk.set_memberships(USER, vec![]);
    assert_refusal(&w.call_at(&token_at(USER, SESSION, NOW + 6), NOW_MS + 6_000).await, 404, "user gone");
    assert_eq!(w.data_items().await, before, "/sync never tombstones or deletes");
}

#[tokio::test]
async fn memberships_clerk_no_longer_lists_are_not_removed() {
    let w = world(KeyMode::Pem).await;
    assert_eq!(w.call(&token()).await.status(), 200);
    w.clerk.set_memberships(USER, vec![]);
    let (status, body) = answer(&w.call_at(&token_at(USER, SESSION, NOW + 6), NOW_MS + 6_000).await);
    assert_eq!(status, 200);
    assert_eq!(body["memberships"].as_array().unwrap().len(), 2, "deletions come by webhook only");
}

#[tokio::test]
async fn a_404_that_is_not_clerks_is_502_and_clerk_without_the_session_is_401() {
    let w = world(KeyMode::Pem).await;
    // A 404 without Clerk's `resource_not_found` (a proxy's, a wrong URL's) proves nothing.
    w.clerk.fail(Kind::User, Fault::Status(404), None);
    assert_refusal(&w.call(&token()).await, 502, "a 404 that is not Clerk's");
    assert!(w.data_items().await.is_empty());
    w.clerk.heal();
    let response = w.call_at(&token_at(OTHER_USER, "sess_2sYnCnotatclerk00000000001", NOW), NOW_MS).await;
    assert_refusal(&response, 401, "Clerk has no such session");
    assert!(w.data_items().await.is_empty(), "nothing is written for a session Clerk does not have");
}

#[tokio::test]
async fn clerk_rate_limiting_is_429_with_its_retry_after() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::Session, Fault::RateLimited { retry_after: 7 }, None);
    let response = w.call(&token()).await;
    assert_refusal(&response, 429, "Clerk's 429");
    assert_eq!(header_of(&response, header::RETRY_AFTER), Some("7"));
    assert_eq!(w.clerk.requests_of(Kind::Session), 1, "a 429 is not retried while the caller waits");
    assert!(w.data_items().await.is_empty());
}

#[tokio::test]
async fn clerk_failing_is_502_after_one_retry() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::User, Fault::Status(503), None);
    let body = assert_refusal(&w.call(&token()).await, 502, "Clerk's 503");
    assert_eq!(body, json!({"error": "Clerk failed; retry later"}));
    assert_eq!(w.clerk.requests_of(Kind::User), 2);
    assert!(w.data_items().await.is_empty());
    // One 5xx, then an answer: the retry makes the call.
    w.clerk.heal();
    w.clerk.fail(Kind::Memberships, Fault::Status(500), Some(1));
    let (status, body) = answer(&w.call_at(&token_at(USER, SESSION, NOW + 6), NOW_MS + 6_000).await);
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn clerk_unreachable_is_502_and_an_api_url_that_is_not_one_is_500() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    // Nothing listens on port 9.
    let unreachable = SyncConfig { api_url: "http://127.0.0.1:9/v1".to_owned(), ..sync_config(&clerk, KeyMode::Pem) };
    let response = table.app_with_sync(unreachable).handle_at_ms(sync_request(&token()), NOW_MS).await;
    assert_refusal(&response, 502, "Clerk unreachable");
    let not_a_url = SyncConfig { api_url: "api.clerk.com/v1".to_owned(), ..sync_config(&clerk, KeyMode::Pem) };
    let response = table.app_with_sync(not_a_url).handle_at_ms(sync_request(&token()), NOW_MS + 6_000).await;
    assert_eq!(answer(&response), (500, json!({"error": "sync is misconfigured"})));
    assert_eq!(header_of(&response, header::CACHE_CONTROL), Some("no-store"));
}

#[tokio::test]
async fn clerk_refusing_the_secret_key_is_500() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::User, Fault::Status(401), None);
    let body = assert_refusal(&w.call(&token()).await, 500, "Clerk's 401");
    assert_eq!(body, json!({"error": "sync is misconfigured"}));
    assert!(w.data_items().await.is_empty());
}

#[tokio::test]
async fn clerk_not_answering_in_time_is_504() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::Session, Fault::Slow(Duration::from_secs(6)), None);
    let started = Instant::now();
    let body = assert_refusal(&w.call(&token()).await, 504, "slow Clerk");
    assert_eq!(body, json!({"error": "Clerk did not answer in time"}));
    assert!(started.elapsed() < Duration::from_millis(5500), "took {:?}", started.elapsed());
    assert!(w.data_items().await.is_empty());
}

#[tokio::test]
async fn the_key_set_and_the_fetches_share_one_budget() {
    let w = world(KeyMode::Fetched).await;
    // Each answer within the request timeout (3 s), together past the budget (4 s).
    w.clerk.fail(Kind::Jwks, Fault::Slow(Duration::from_millis(2500)), None);
    w.clerk.fail(Kind::Session, Fault::Slow(Duration::from_millis(2500)), None);
    let started = Instant::now();
    let body = assert_refusal(&w.call(&token()).await, 504, "slow key set, then slow fetches");
    assert_eq!(body, json!({"error": "Clerk did not answer in time"}));
    assert!(started.elapsed() < Duration::from_millis(5500), "took {:?}", started.elapsed());
    assert!(w.data_items().await.is_empty());
}

#[tokio::test]
async fn a_session_of_another_user_writes_nothing() {
    let w = world(KeyMode::Pem).await;
    // A token of USER naming OTHER_USER's session: Clerk's session says whose it is.
    let response = w.call(&token_at(USER, OTHER_SESSION, NOW)).await;
    assert_refusal(&response, 401, "another user's session");
    assert!(w.data_items().await.is_empty(), "{:?}", w.data_items().await);
}

#[tokio::test]
async fn a_session_clerk_answers_under_another_id_writes_nothing() {
    let w = world(KeyMode::Pem).await;
    // Clerk (or whatever answers at CLERK_API_URL) answers the token's session id with another
    // session of the same user: it is not the token's session, so nothing is believed.
    w.clerk.put_session_at(SESSION, clerk_session("sess_2sYnCanother000000000000001", USER, "active", UPDATED));
    assert_refusal(&w.call(&token()).await, 401, "another session's object");
    assert!(w.data_items().await.is_empty(), "{:?}", w.data_items().await);
}

#[tokio::test]
async fn a_membership_of_a_deleted_organization_is_not_written_back() {
    let w = world(KeyMode::Pem).await;
    let deleted = clerk::organization_deleted(ORG_B, NOW_MS - 1000);
    assert_eq!(w.deliver(&deleted, "msg_org_deleted").await.0, 200);
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    let organizations: Vec<&str> =
        body["memberships"].as_array().unwrap().iter().map(|m| m["organization_id"].as_str().unwrap()).collect();
    assert_eq!(organizations, [ORG_A], "Clerk's list still held the deleted organization: {body}");
    let live_in_b = w.data_items().await.into_iter().any(|((pk, sk), item)| {
        (pk.contains(ORG_B) || sk.contains(ORG_B)) && item.get("deleted") != Some(&json!(true))
    });
    assert!(!live_in_b, "a membership of the deleted organization was written");
}

#[tokio::test]
async fn the_pem_key_is_read_as_environment_variables_carry_it_and_a_bad_one_is_500() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    seed(&clerk, OTHER_USER, OTHER_SESSION);
    // `\n` for line breaks, as a one-line environment variable holds it.
    let escaped =
        SyncConfig { jwt_key: Some(pem(&keys().instance).replace('\n', "\\n")), ..sync_config(&clerk, KeyMode::Pem) };
    let app = table.app_with_sync(escaped);
    assert_eq!(app.handle_at_ms(sync_request(&token()), NOW_MS).await.status(), 200);
    // PKCS#1 (`RSA PUBLIC KEY`) is accepted too.
    let der = STANDARD.encode(keys().instance.public_key().as_ref());
    let pkcs1 = format!("-----BEGIN RSA PUBLIC KEY-----\n{der}\n-----END RSA PUBLIC KEY-----\n");
    let app = table.app_with_sync(SyncConfig { jwt_key: Some(pkcs1), ..sync_config(&clerk, KeyMode::Pem) });
    let response = app.handle_at_ms(sync_request(&token_at(OTHER_USER, OTHER_SESSION, NOW)), NOW_MS).await;
    assert_eq!(response.status(), 200);
    // The other key's PEM would refuse every token; a key that is not one is a 500 from the start.
    let broken = SyncConfig {
        jwt_key: Some("-----BEGIN PUBLIC KEY-----\nnot a key\n".to_owned()),
        ..sync_config(&clerk, KeyMode::Pem)
    };
    let requests = clerk.requests();
    let response = table.app_with_sync(broken).handle_at_ms(sync_request(&token()), NOW_MS).await;
    assert_eq!(answer(&response), (500, json!({"error": "sync is misconfigured"})));
    assert_eq!(clerk.requests(), requests);
}

#[tokio::test]
async fn memberships_of_other_users_in_clerks_answer_are_not_written() {
    let w = world(KeyMode::Pem).await;
    w.clerk.set_memberships(
        USER,
        vec![
            clerk_membership("orgmem_2sYnCa0000000000000000001", ORG_A, USER, UPDATED),
            clerk_membership("orgmem_2sYnCb0000000000000000002", ORG_B, OTHER_USER, UPDATED),
        ],
    );
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["memberships"].as_array().unwrap().len(), 1);
    let items = w.data_items().await;
    assert!(!items.iter().any(|((pk, sk), _)| pk.contains(OTHER_USER) || sk.contains(OTHER_USER)), "{items:?}");
}

#[tokio::test]
async fn dynamodb_failing_is_503() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    // Nothing listens there.
    let app = table.app_with_sync_via(sync_config(&clerk, KeyMode::Pem), "http://127.0.0.1:9");
    let response = app.handle_at_ms(sync_request(&token()), NOW_MS).await;
    assert_refusal(&response, 503, "DynamoDB unreachable");
    assert_eq!(clerk.requests(), 0, "nothing is fetched before the table answers");
}

// ---- the window ------------------------------------------------------------------------------

#[tokio::test]
async fn a_caller_is_held_to_one_round_of_fetches_per_window() {
    let w = world(KeyMode::Pem).await;
    assert_eq!(w.call(&token()).await.status(), 200);
    assert_eq!(w.clerk.requests(), 3);
    let response = w.call_at(&token_at(USER, SESSION, NOW + 1), NOW_MS + 1_000).await;
    assert_refusal(&response, 429, "synced a second ago");
    let retry_after: u64 = header_of(&response, header::RETRY_AFTER).unwrap().parse().unwrap();
    assert!((1..=5).contains(&retry_after), "Retry-After {retry_after}: the window ends in 4 s");
    assert_eq!(w.clerk.requests(), 3, "no fetch while the window is held");
    // Another user has a window of their own.
    assert_eq!(w.call_at(&token_at(OTHER_USER, OTHER_SESSION, NOW + 1), NOW_MS + 1_000).await.status(), 200);
    // Once the window is over, the next call fetches again.
    let again = w.call_at(&token_at(USER, SESSION, NOW + 5), NOW_MS + 5_000).await;
    assert_eq!(again.status(), 200);
    assert_eq!(w.clerk.requests(), 9);
}

#[tokio::test]
async fn a_window_claim_whose_answer_was_lost_is_still_this_calls() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    let proxy = proxy().await;
    let app = table.app_with_sync_via(sync_config(&clerk, KeyMode::Pem), &proxy.endpoint());
    // The instance record (PutItem), the tombstone check (Query), then the window's PutItem:
    // applied by DynamoDB, its answer lost, retried by the SDK.
    proxy.then(&[ProxyFault::Pass, ProxyFault::Pass, ProxyFault::DropResponse]);
    let response = app.handle_at_ms(sync_request(&token()), NOW_MS).await;
    let (status, body) = answer(&response);
    assert_eq!(status, 200, "the retry found its own claim, not another call's: {body}");
    assert_eq!(clerk.requests(), 3);
}

/// A fake Clerk holding `USER`, and the function on a fresh table whose first three requests (the
/// instance record, the tombstone check and the window's claim) each answer after 1.5 s: 4.5 s on
/// the table before Clerk is asked, more than Clerk's 4 s budget, inside the call's 8 s deadline.
/// The client has no 1.5 s attempt timeout, so that the held requests are not retried.
async fn behind_a_slow_table() -> (TestTable, FakeClerk, FaultProxy, App) {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    let proxy = proxy().await;
    let store = clerk_sync::store::Store::new(patient_client_for(&proxy.endpoint()), &table.name);
    let app = table.app_with_sync_and_store(sync_config(&clerk, KeyMode::Pem), store);
    let late = ProxyFault::Late(Duration::from_millis(1500));
    proxy.then(&[late, late, late]);
    (table, clerk, proxy, app)
}

#[tokio::test]
async fn a_slow_table_does_not_spend_clerks_budget() {
    let (_table, clerk, proxy, app) = behind_a_slow_table().await;
    let response = app.handle_at_ms(sync_request(&token()), NOW_MS).await;
    let (status, body) = answer(&response);
    assert_eq!(status, 200, "the table's slowness is not Clerk's: {body}");
    assert_eq!(proxy.requests(), proxy.forwarded(), "no request was given up on and sent again");
    assert_eq!(clerk.requests(), 3);
}

/// A slow table and then a slow Clerk: the fetches still end within the window the call claimed
/// (5 s from its start), a 504 that names Clerk, not the call's 8 s deadline and its 503; and no
/// round of fetches outlives its window, so two rounds for one user never overlap.
#[tokio::test]
async fn a_slow_table_then_a_slow_clerk_end_within_the_window() {
    let (_table, clerk, _proxy, app) = behind_a_slow_table().await;
    clerk.fail(Kind::User, Fault::Slow(Duration::from_secs(3)), None);
    let body =
        assert_refusal(&app.handle_at_ms(sync_request(&token()), NOW_MS).await, 504, "Clerk, late in the window");
    assert_eq!(body, json!({"error": "Clerk did not answer in time"}));
}

#[tokio::test]
async fn an_instance_without_organizations_syncs_the_user_and_session() {
    let w = world(KeyMode::Pem).await;
    // Clerk's answer to the memberships of a user where Organizations are turned off.
    w.clerk.fail(Kind::Memberships, Fault::Error(403, "organization_not_enabled_in_instance"), None);
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["id"], USER);
    assert_eq!(body["memberships"], json!([]));
    assert!(w.table.item(&format!("USER#{USER}"), &format!("SESSION#{SESSION}")).await.is_some());
}

#[tokio::test]
async fn a_403_about_the_key_is_500_and_any_other_is_502() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::User, Fault::Error(403, "authentication_invalid"), None);
    let body = assert_refusal(&w.call(&token()).await, 500, "Clerk's 403 about the key");
    assert_eq!(body, json!({"error": "sync is misconfigured"}));
    w.clerk.heal();
    w.clerk.fail(Kind::User, Fault::Error(403, "feature_not_enabled"), None);
    let later = token_at(USER, SESSION, NOW + 6);
    assert_refusal(&w.call_at(&later, NOW_MS + 6_000).await, 502, "Clerk's 403 about something else");
    assert!(w.data_items().await.is_empty());
}

#[tokio::test]
async fn a_membership_clerk_lists_that_cannot_be_read_is_skipped_and_the_rest_written() {
    let w = world(KeyMode::Pem).await;
    let mut odd = clerk_membership("orgmem_2sYnCc0000000000000000001", "org_2sYnCodd", USER, UPDATED);
    odd.as_object_mut().unwrap().remove("public_user_data");
    let mut memberships = vec![odd];
    memberships.push(clerk_membership("orgmem_2sYnCa0000000000000000001", ORG_A, USER, UPDATED));
    w.clerk.set_memberships(USER, memberships);
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    let organizations: Vec<&str> =
        body["memberships"].as_array().unwrap().iter().map(|m| m["organization_id"].as_str().unwrap()).collect();
    assert_eq!(organizations, [ORG_A]);
}

#[tokio::test]
async fn a_later_round_writes_only_what_changed_in_clerk() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    clerk.set_memberships(USER, vec![clerk_membership("orgmem_2sYnCa0000000000000000001", ORG_A, USER, UPDATED)]);
    let proxy = proxy().await;
    let app = table.app_with_sync_via(sync_config(&clerk, KeyMode::Pem), &proxy.endpoint());
    let round = |n: i64| {
        let (app, proxy) = (&app, &proxy);
        async move {
            let before = proxy.requests();
            let response =
                app.handle_at_ms(sync_request(&token_at(USER, SESSION, NOW + 6 * n)), NOW_MS + 6_000 * n).await;
            assert_eq!(response.status(), 200, "round {n}: {:?}", answer(&response));
            proxy.requests() - before
        }
    };
    // The table's instance record (none yet: /sync reads it and never records it) and the
    // tombstone check, the window, the stored items (3 Queries, while Clerk answers), the user,
    // the session and its user's tombstone Query, the membership and its organization's and user's
    // tombstone Queries, the answer (3 Queries).
    assert_eq!(round(0).await, 2 + 1 + 3 + (1 + 2 + 3) + 3);
    // Nothing changed in Clerk: nothing is written.
    assert_eq!(round(1).await, 2 + 1 + 3 + 3);
    // The user changed: only the user is written.
    clerk.put_user(clerk_user(USER, UPDATED + 1, "Ada K."));
    assert_eq!(round(2).await, 2 + 1 + 3 + 1 + 3);
    let user = table.item(&format!("USER#{USER}"), "USER").await.unwrap();
    assert_eq!(user["first_name"], "Ada K.");
}

#[tokio::test]
async fn a_failed_round_still_holds_the_window() {
    let w = world(KeyMode::Pem).await;
    w.clerk.fail(Kind::User, Fault::Status(503), None);
    assert_eq!(w.call(&token()).await.status(), 502);
    let requests = w.clerk.requests();
    assert_eq!(w.call_at(&token_at(USER, SESSION, NOW + 2), NOW_MS + 2_000).await.status(), 429);
    assert_eq!(w.clerk.requests(), requests);
}

#[tokio::test]
async fn thirty_two_concurrent_calls_of_one_user_make_one_round_of_fetches() {
    let w = world(KeyMode::Fetched).await;
    // Two function instances on one table: the window is the table's, not an instance's.
    let second = w.table.app_with_sync(sync_config(&w.clerk, KeyMode::Fetched));
    let token = token();
    let calls = (0..32).map(|i| {
        let app = if i % 2 == 0 { &w.app } else { &second };
        app.handle_at_ms(sync_request(&token), NOW_MS)
    });
    let answers = futures_join_all(calls).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 31, "{statuses:?}");
    for response in answers.iter().filter(|r| r.status() == 429) {
        assert_eq!(header_of(response, header::RETRY_AFTER), Some("5"), "the window's 5 s");
    }
    let kinds: Vec<Kind> = w.clerk.received().iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds.iter().filter(|k| **k == Kind::Jwks).count(), 2, "one key set per instance: {kinds:?}");
    assert_eq!(kinds.len(), 5, "one round of three fetches in the window: {kinds:?}");
    let windows = w.table.all_items().await.into_keys().filter(|(pk, _)| pk.starts_with("SYNC#")).count();
    assert_eq!(windows, 1);
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending { std::task::Poll::Pending } else { std::task::Poll::Ready(()) }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

// ---- races with webhooks -------------------------------------------------------------------

#[tokio::test]
async fn an_older_webhook_after_sync_is_stale_and_a_newer_one_wins() {
    let w = world(KeyMode::Pem).await;
    assert_eq!(w.call(&token()).await.status(), 200);
    let user_pk = format!("USER#{USER}");
    let older = clerk::user("user.updated", USER, UPDATED - 1, "Older");
    let (status, body) = w.deliver(&older, "msg_older").await;
    assert_eq!((status, body["outcome"].as_str()), (200, Some("stale")), "{body}");
    assert_eq!(w.table.item(&user_pk, "USER").await.unwrap()["first_name"], "Ada");
    let older_session = clerk::session("session.updated", SESSION, USER, "active", UPDATED - 1, None);
    assert_eq!(w.deliver(&older_session, "msg_older_session").await.1["outcome"], "stale");

    let newer = clerk::user("user.updated", USER, UPDATED + 1, "Newer");
    assert_eq!(w.deliver(&newer, "msg_newer").await.1["outcome"], "applied");
    let ended = clerk::session("session.ended", SESSION, USER, "ended", UPDATED + 1, None);
    assert_eq!(w.deliver(&ended, "msg_ended").await.1["outcome"], "applied");
    // A later /sync with Clerk still answering the older objects writes nothing over them, and
    // answers what the table holds: the session ended, so 401 (its state is stored).
    let response = w.call_at(&token_at(USER, SESSION, NOW + 6), NOW_MS + 6_000).await;
    assert_refusal(&response, 401, "a session ended by a newer webhook");
    assert_eq!(w.table.item(&user_pk, "USER").await.unwrap()["first_name"], "Newer");
    let session = w.table.item(&user_pk, &format!("SESSION#{SESSION}")).await.unwrap();
    assert_eq!(session["status"], "ended");
}

#[tokio::test]
async fn sync_answers_the_newer_items_a_webhook_already_wrote() {
    let w = world(KeyMode::Pem).await;
    let newer = clerk::user("user.updated", USER, UPDATED + 500, "Newer");
    assert_eq!(w.deliver(&newer, "msg_newer_first").await.1["outcome"], "applied");
    let (status, body) = answer(&w.call(&token()).await);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["first_name"], "Newer", "the item as the table holds it");
    assert_eq!(body["user"]["version"], UPDATED + 500);
    assert_eq!(body["session"]["status"], "active");
}

#[tokio::test]
async fn sync_of_a_tombstoned_user_is_410_and_writes_nothing() {
    let w = world(KeyMode::Pem).await;
    let (status, _) = w.deliver(&clerk::user_deleted(USER, NOW_MS - 1000), "msg_deleted").await;
    assert_eq!(status, 200);
    let before = w.table.items().await;
    let body = assert_refusal(&w.call(&token()).await, 410, "tombstoned user");
    assert_eq!(body, json!({"error": "the user is deleted"}));
    // Only the record of the mirrored instance (META), as any first delivery would.
    assert_eq!(w.table.items().await, before, "nothing is written, not even the window");
    assert_eq!(w.clerk.requests(), 0, "nothing is fetched");
}

#[tokio::test]
async fn a_user_deleted_while_clerk_answers_is_not_resurrected() {
    let w = world(KeyMode::Pem).await;
    // The deletion lands while Clerk is still answering the (slow) memberships.
    w.clerk.fail(Kind::Memberships, Fault::Slow(Duration::from_millis(1500)), None);
    let token = token();
    let sync = w.call(&token);
    let delete = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        w.deliver(&clerk::user_deleted(USER, NOW_MS - 1000), "msg_deleted_during").await
    };
    let (response, (status, _)) = tokio::join!(sync, delete);
    assert_eq!(status, 200);
    assert_refusal(&response, 410, "deleted during the fetches");
    let items = w.data_items().await;
    let live: Vec<_> = items.iter().filter(|(_, item)| item.get("deleted") != Some(&json!(true))).collect();
    assert!(live.is_empty(), "the deleted user's data was written back: {live:?}");
}

// ---- logs ------------------------------------------------------------------------------------

#[tokio::test]
async fn tokens_and_the_secret_key_never_reach_the_log() {
    let Ok(dir) = std::env::var("CLERK_SYNC_TEST_LOG_DIR") else { return };
    let w = world(KeyMode::Fetched).await;
    let good = token();
    let bad = with_claims(|c| c["exp"] = json!(NOW - 100));
    assert_eq!(w.call(&good).await.status(), 200);
    assert_eq!(w.call(&bad).await.status(), 401);
    w.clerk.fail(Kind::User, Fault::Status(401), None);
    assert_eq!(w.call_at(&token_at(OTHER_USER, OTHER_SESSION, NOW), NOW_MS).await.status(), 500);
    // The key set refused too: the alarm counts both.
    let (user, session) = ("user_2sYnClogs00000000000000001", "sess_2sYnClogs00000000000000001");
    seed(&w.clerk, user, session);
    let fresh = w.table.app_with_sync(sync_config(&w.clerk, KeyMode::Fetched));
    w.clerk.fail(Kind::Jwks, Fault::Status(401), None);
    assert_eq!(fresh.handle_at_ms(sync_request(&token_at(user, session, NOW)), NOW_MS).await.status(), 500);
    let log = std::fs::read_to_string(std::path::Path::new(&dir).join("sync.jsonl")).unwrap();
    assert!(log.contains(USER), "the log names the user id");
    for token in [&good, &bad] {
        for (i, part) in token.split('.').enumerate() {
            assert!(!log.contains(part), "part {i} of a token is in the log");
        }
    }
    assert!(!log.contains(SECRET_KEY) && !log.contains(&SECRET_KEY[8..]), "the secret key is in the log");
    assert!(!log.contains("192.0.2.77"), "the session's IP address is in the log");
    let refused: Vec<&str> = log.lines().filter(|line| line.contains(r#""clerk_key_refused":true"#)).collect();
    assert!(refused.iter().any(|line| !line.contains("key set")), "the alarm's field is logged: {refused:?}");
    assert!(refused.iter().any(|line| line.contains("key set")), "a refused key set counts too: {refused:?}");
}

#[tokio::test]
async fn each_call_carries_its_metrics_in_its_log_line() {
    let Ok(dir) = std::env::var("CLERK_SYNC_TEST_LOG_DIR") else { return };
    if !std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        return;
    }
    let w = world(KeyMode::Pem).await;
    let (user, session) = ("user_2sYnCmetrics000000000000001", "sess_2sYnCmetrics000000000000001");
    seed(&w.clerk, user, session);
    assert_eq!(w.call(&token_at(user, session, NOW)).await.status(), 200);
    assert_eq!(w.call(&token_at(user, session, NOW)).await.status(), 429);
    let expired = sign_rs256(&session_header(), &claims(user, session, NOW - 100), &keys().instance);
    assert_eq!(w.call(&expired).await.status(), 401);
    let text = std::fs::read_to_string(std::path::Path::new(&dir).join("sync.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["fields"]["user_id"] == user || (l["fields"]["status"] == 401 && l["Route"] == "sync"))
        .collect();
    let of = |outcome: &str| lines.iter().find(|l| l["Outcome"] == outcome).cloned();
    let synced = of("synced").expect("the 200's metric document");
    assert_eq!((synced["Route"].as_str(), synced["Requests"].as_i64()), (Some("sync"), Some(1)));
    assert_eq!(synced.get("Reason"), None);
    let throttled = of("throttled").expect("the 429's metric document");
    assert_eq!(throttled["Reason"], "window");
    let refused = lines.iter().find(|l| l["fields"]["status"] == 401).expect("the 401's metric document");
    assert_eq!((refused["Outcome"].as_str(), refused["Reason"].as_str()), (Some("refused"), Some("token")));
    let declared = synced["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"].as_str();
    assert_eq!(declared, Some("Requests"), "{synced}");
}

/// `/sync` is not delivered again: a call cut between a membership's transaction and its read of
/// the organization (here that one Query is dropped, every time) answers 503 and leaves both items
/// of a membership of a deleted organization. The cleanup function, handed those writes' stream
/// records, removes them; the next call then writes the membership again, reads the tombstone,
/// removes it and answers without it.
#[tokio::test]
async fn a_call_cut_after_a_membership_write_under_a_deleted_organization_leaves_nothing_behind() {
    let table = TestTable::create().await;
    let clerk = FakeClerk::start(key_set()).await;
    seed(&clerk, USER, SESSION);
    let memberships = vec![
        clerk_membership("orgmem_2sYnCa0000000000000000001", ORG_A, USER, UPDATED),
        clerk_membership("orgmem_2sYnCb0000000000000000001", ORG_B, USER, UPDATED),
    ];
    clerk.set_memberships(USER, memberships);
    let direct = table.app_with_sync(sync_config(&clerk, KeyMode::Pem));
    let (status, body) =
        answer(&direct.handle(delivery(&clerk::organization_deleted(ORG_B, NOW_MS - 1000), "msg_b")).await);
    assert_eq!(status, 200, "{body}");

    let proxy = proxy().await;
    // The Query of ORG_B's item (its key in the request body).
    proxy.always(ProxyFault::DropWhere("DynamoDB_20120810.Query", "ORG#org_2sYnCbbbbbbbbbbbbbbbbbbbbbb"));
    let cut = table.app_with_sync_via(sync_config(&clerk, KeyMode::Pem), &proxy.endpoint());
    let (status, body) = answer(&cut.handle_at_ms(sync_request(&token()), NOW_MS).await);
    assert_eq!(status, 503, "{body}");
    let of_b = |items: std::collections::BTreeMap<(String, String), Value>| -> Vec<(String, String)> {
        items.into_keys().filter(|(pk, sk)| (pk.contains(ORG_B) && sk != "ORG") || sk.contains(ORG_B)).collect()
    };
    let left = of_b(table.items().await);
    assert_eq!(left.len(), 2, "both items of the membership, written before the cut: {left:?}");

    let response = clerk_sync::cleanup::handle(&table.store(), stream_of_writes(&left), Duration::from_secs(60)).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    assert_eq!(of_b(table.items().await), Vec::<(String, String)>::new());

    let (status, body) =
        answer(&direct.handle_at_ms(sync_request(&token_at(USER, SESSION, NOW + 6)), NOW_MS + 6_000).await);
    assert_eq!(status, 200, "{body}");
    let organizations: Vec<&str> =
        body["memberships"].as_array().unwrap().iter().map(|m| m["organization_id"].as_str().unwrap()).collect();
    assert_eq!(organizations, [ORG_A]);
    assert_eq!(of_b(table.items().await), Vec::<(String, String)>::new());
}
