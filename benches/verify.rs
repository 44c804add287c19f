//! Verify + parse of realistic Clerk deliveries, against the `svix` crate and the bare HMAC floor.
//!
//! Run: `cargo bench --bench verify` (about 2 minutes; append `-- --quick` for a short run, or
//! `-- --save-baseline before` / `-- --baseline before` to compare a change). The bench profile
//! inherits `[profile.release]` (LTO, one codegen unit), so the code measured is compiled as the
//! deployed function is. `cargo test --bench verify` runs every case once, unoptimized, as a check.
//!
//! Each payload gets one criterion group, so the report shows its five measurements side by side,
//! all on identical input (same secret, id, timestamp, body and headers):
//!
//! 1. `floor_hmac`: HMAC-SHA256 of `{id}.{timestamp}.{body}` with the decoded key, nothing else
//!    (the same `hmac` / `sha2` crates the function uses).
//! 2. `clerk_sync_verify`: `Verifier::verify`.
//! 3. `svix_verify`: `svix::webhooks::Webhook::verify` (headers, timestamp, signature; no parsing).
//!    It hashes with the portable `hmac-sha256` crate, copies the body into a `String` and
//!    base64-encodes its tag, so on a CPU with SHA extensions (which `sha2` uses) most of its gap
//!    to the floor is the hash implementation.
//! 4. `clerk_sync_verify_parse`: verify, then `event::parse`.
//! 5. `clerk_sync_verify_parse_plan`: verify, parse and `plan::plan` with `store_clerk_data`: the
//!    whole CPU path of a delivery before DynamoDB.
//! 6. `floor_hmac_then_json_scan`: the floor, then one serde_json pass over the body that checks
//!    it is JSON and keeps nothing (`IgnoredAny`): what any verify + parse built on serde_json
//!    costs at least, since parsing must read every byte once.
//!
//! The clock is read inside every clerk_sync iteration, as `handler::handle` does per request and
//! as svix does inside `verify`, so both verifiers do the same work. Each group signs its
//! delivery with the time at which the group starts; a group lasts seconds, far inside the 300 s
//! tolerance, and every iteration checks its result, so an expired timestamp (say, after raising
//! `--measurement-time` a lot) panics instead of being measured as a fast failure.

// `json!` of a whole Clerk user object (about 50 keys) needs more than the default 128.
#![recursion_limit = "256"]

use std::hint::black_box;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clerk_sync::event::{self, EventKind};
use clerk_sync::plan::{self, Options, Write};
use clerk_sync::verify::{SigningSecret, Unverified, Verifier};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use lambda_http::http::{HeaderMap, HeaderValue};
use serde_json::{Map, Value, json};
use sha2::Sha256;

/// 24 random-looking bytes, the length of the key in a secret from Clerk's dashboard.
const SECRET: &str = "whsec_n3Hq0Yq8rN1mJk2Vt5Wd6Xf7Zg8Ah9Bj";
const MESSAGE_ID: &str = "msg_2pQAPA35fRi2hj0gUisAgkya7T4";
const OPTIONS: Options = Options { store_clerk_data: true };

type HmacSha256 = Hmac<Sha256>;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

// ---------------------------------------------------------------------------------------------
// Payloads. Built with `json!` and serialized compactly: serde_json's map keeps keys sorted, as
// Clerk's payloads are.

const USER_ID: &str = "user_2pQ9mZ3kLrT8vWxYz1AbCdEfGhJ";
const SESSION_ID: &str = "sess_2pQB7hXkR4sT9uVwYz3AbCdEfGh";

fn envelope(event_type: &str, data: Value, timestamp_ms: i64) -> String {
    json!({
        "data": data,
        "event_attributes": {"http_request": {
            "client_ip": "203.0.113.42",
            "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
        }},
        "instance_id": "ins_2pQUS2dg5sIKeEeeI6QMFYo8Yfz",
        "object": "event",
        "timestamp": timestamp_ms,
        "type": event_type,
    })
    .to_string()
}

fn email(id: &str, address: &str, strategy: &str, linked_to: Value) -> Value {
    json!({
        "created_at": 1795166047432_i64, "email_address": address, "id": id, "linked_to": linked_to,
        "matches_sso_connection": false, "object": "email_address", "reserved": false, "updated_at": 1795166047608_i64,
        "verification": {"attempts": null, "expire_at": null, "status": "verified", "strategy": strategy},
    })
}

fn google_account(image: &str) -> Value {
    json!({
        "approved_scopes": "email https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/userinfo.profile openid profile",
        "created_at": 1795166047400_i64, "email_address": "ada.lovelace@example.com", "first_name": "Ada",
        "id": "eac_2pQatQ1kMnOpRsTuVwXyZaBcDeF", "identification_id": "idn_2pQatQ1kMnOpRsTuVwXyZaBcDeF",
        "image_url": image, "label": null, "last_name": "Lovelace", "object": "google_account",
        "provider": "oauth_google", "provider_user_id": "104729384756102938475",
        "public_metadata": {}, "updated_at": 1795166047500_i64, "username": "",
        "verification": {"attempts": null, "expire_at": 1795166647400_i64, "status": "verified", "strategy": "oauth_google"},
    })
}

/// A user as Clerk sends it today: two email addresses (one linked to a Google account), the Google
/// account, and the newer fields (has_image, banned, locked, passkeys, last_active_at,
/// legal_accepted_at, enterprise_accounts, ...).
fn user(public_metadata: Value, private_metadata: Value, unsafe_metadata: Value) -> Value {
    let image = "https://img.clerk.com/eyJ0eXBlIjoicHJveHkiLCJzcmMiOiJodHRwczovL2xoMy5nb29nbGV1c2VyY29udGVudC5jb20vYS9BQ2c4b2NKeFlaMnE5X2s3cVJ2d1U0TTNNcUxfc1N5aWJ3In0";
    let profile_image = "https://images.clerk.dev/oauth_google/img_2pQatQ1kMnOpRsTuVwXyZaBcDeF";
    json!({
        "backup_code_enabled": false, "banned": false, "birthday": "", "bypass_client_trust": false,
        "create_organization_enabled": true, "create_organizations_limit": null, "created_at": 1795166047512_i64,
        "delete_self_enabled": true,
        "email_addresses": [
            email("idn_2pQasPPiNNDVr4akFjno6McPGXN", "ada.lovelace@example.com", "from_oauth_google",
                json!([{"id": "idn_2pQatQ1kMnOpRsTuVwXyZaBcDeF", "type": "oauth_google"}])),
            email("idn_2pQb0cD1eF2gH3iJ4kL5mN6oP7q", "ada@analytical-engine.example.org", "email_code", json!([])),
        ],
        "enterprise_accounts": [],
        "external_accounts": [google_account(image)],
        "external_id": null, "first_name": "Ada", "gender": "", "has_image": true, "id": USER_ID, "image_url": image,
        "last_active_at": 1795252447512_i64, "last_name": "Lovelace", "last_sign_in_at": 1795252447512_i64,
        "legal_accepted_at": 1795166047512_i64, "locked": false, "lockout_expires_in_seconds": null,
        "mfa_disabled_at": null, "mfa_enabled_at": null, "object": "user", "passkeys": [], "password_enabled": false,
        "password_last_updated_at": null, "phone_numbers": [],
        "primary_email_address_id": "idn_2pQasPPiNNDVr4akFjno6McPGXN", "primary_phone_number_id": null,
        "primary_web3_wallet_id": null,
        "private_metadata": private_metadata, "profile_image_url": profile_image, "public_metadata": public_metadata,
        "saml_accounts": [], "totp_enabled": false, "two_factor_enabled": false, "unsafe_metadata": unsafe_metadata,
        "updated_at": 1795252447608_i64, "username": "ada", "verification_attempts_remaining": 100, "web3_wallets": [],
    })
}

/// user.created, about 3 KB, with the small metadata most apps keep.
fn user_created() -> String {
    let user = user(
        json!({"onboarded": true, "plan": "pro", "role": "admin"}),
        json!({"stripe_customer_id": "cus_R4nD0mCu5t0m3r"}),
        json!({"theme": "dark"}),
    );
    envelope("user.created", user, 1795252447615)
}

/// The same user with about 8 KB of metadata: feature flags and org roles in public, billing history
/// in private, UI state in unsafe. Sent as user.updated, which takes the same path as user.created.
fn user_with_metadata() -> String {
    let mut flags = Map::new();
    for i in 0..40 {
        flags.insert(format!("feature_flag_{i:02}"), Value::Bool(i % 3 != 0));
    }
    let orgs: Vec<Value> = (0..12)
        .map(|i| json!({"org_id": format!("org_2pQ{i:02}xYz1AbCdEfGhJkLmNoPq"), "role": "org:member", "joined_at": 1795000000000_i64 + i}))
        .collect();
    let invoices: Vec<Value> = (0..24)
        .map(|i| {
            json!({"id": format!("in_1Q{i:02}aBcDeFgHiJkLmNoP"), "amount_due": 2900, "currency": "usd",
                "status": "paid", "period_start": 1764547200 + i * 2_629_800, "period_end": 1767225600 + i * 2_629_800})
        })
        .collect();
    let searches: Vec<Value> =
        (0..50).map(|i| json!({"q": format!("analytical engine note {i}"), "at": 1795000000000_i64 + i})).collect();
    let user = user(
        json!({"onboarded": true, "plan": "pro", "role": "admin", "features": flags, "organizations": orgs}),
        json!({"stripe_customer_id": "cus_R4nD0mCu5t0m3r", "invoices": invoices}),
        json!({"theme": "dark", "sidebar": {"collapsed": false, "pinned": ["inbox", "reports", "billing"]}, "recent_searches": searches}),
    );
    envelope("user.updated", user, 1795252447615)
}

/// session.created, about 600 bytes: the documented session object plus the newer fields, without
/// the embedded user.
fn session_created() -> String {
    let session = json!({
        "abandon_at": 1797844447512_i64, "actor": null, "client_id": "client_2pQB6gWjQ3rS8tUvXy2ZaBcDeFg",
        "created_at": 1795252447512_i64, "expire_at": 1795857247512_i64, "id": SESSION_ID,
        "last_active_at": 1795252447512_i64, "last_active_organization_id": null, "object": "session",
        "status": "active", "updated_at": 1795252447600_i64, "user_id": USER_ID,
    });
    envelope("session.created", session, 1795252447615)
}

// ---------------------------------------------------------------------------------------------

/// The floor: HMAC-SHA256 of the signed content, streamed, with no header handling, no decoding
/// and no comparison.
fn floor_hmac(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

struct Delivery {
    key: Vec<u8>,
    timestamp: String,
    headers: HeaderMap,
}

/// Signs `body` at the current time, checking the signature three independent ways.
fn sign(body: &[u8]) -> Delivery {
    let key = STANDARD.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    assert_eq!(key.len(), 24);
    let now = unix_now();
    let timestamp = now.to_string();
    let signature = format!("v1,{}", STANDARD.encode(floor_hmac(&key, MESSAGE_ID, &timestamp, body)));
    assert_eq!(SigningSecret::parse(SECRET).unwrap().sign(MESSAGE_ID, now, body), signature);
    let svix_signature = svix::webhooks::Webhook::new(SECRET).unwrap().sign(MESSAGE_ID, now, body).unwrap();
    assert_eq!(svix_signature, signature);

    let mut headers = HeaderMap::new();
    headers.insert("svix-id", HeaderValue::from_static(MESSAGE_ID));
    headers.insert("svix-timestamp", HeaderValue::from_str(&timestamp).unwrap());
    headers.insert("svix-signature", HeaderValue::from_str(&signature).unwrap());
    // What API Gateway passes along besides; header lookups cost a little more in a fuller map.
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("content-length", HeaderValue::from_str(&body.len().to_string()).unwrap());
    headers.insert(
        "user-agent",
        HeaderValue::from_static("Svix-Webhooks/1.81.0 (sender-3zKqP; +https://www.svix.com/http-sources/)"),
    );
    headers.insert("x-forwarded-for", HeaderValue::from_static("44.228.126.217"));
    Delivery { key, timestamp, headers }
}

/// Fails loudly unless every path accepts the delivery and reads it as `expect_id`.
fn check_accepted(
    delivery: &Delivery,
    body: &[u8],
    verifier: &Verifier,
    svix: &svix::webhooks::Webhook,
    expect_id: &str,
) {
    let verified = verifier.verify(Unverified::new(&delivery.headers, body), unix_now()).expect("clerk-sync accepts");
    assert_eq!(verified.id(), MESSAGE_ID);
    svix.verify(body, &delivery.headers).expect("svix accepts");
    let event = event::parse(&verified).expect("the body parses");
    assert_eq!(event.kind.object_id(), Some(expect_id));
    match plan::plan(&event, OPTIONS).expect("the event plans") {
        Some(Write::UpsertUser(item)) => {
            assert!(matches!(event.kind, EventKind::UserUpsert { .. }));
            assert_eq!(item.email.as_deref(), Some("ada.lovelace@example.com"));
            assert!(item.data.is_some());
        }
        Some(Write::UpsertSession(item)) => {
            assert_eq!(item.user_id, USER_ID);
            assert!(item.data.is_some());
        }
        other => panic!("unexpected plan {other:?}"),
    }
}

fn bench_payload(c: &mut Criterion, label: &str, body: &str, expect_id: &str) {
    let body = body.as_bytes();
    eprintln!("{label}: body {} bytes", body.len());
    let delivery = sign(body);
    let verifier = Verifier::new(vec![SigningSecret::parse(SECRET).unwrap()]);
    let svix = svix::webhooks::Webhook::new(SECRET).unwrap();
    check_accepted(&delivery, body, &verifier, &svix, expect_id);

    let mut group = c.benchmark_group(format!("{label}_{}B", body.len()));
    group.throughput(Throughput::Bytes(body.len() as u64));
    let headers = &delivery.headers;

    group.bench_function(BenchmarkId::from_parameter("floor_hmac"), |b| {
        b.iter(|| {
            floor_hmac(black_box(&delivery.key), black_box(MESSAGE_ID), black_box(&delivery.timestamp), black_box(body))
        })
    });
    group.bench_function(BenchmarkId::from_parameter("floor_hmac_then_json_scan"), |b| {
        b.iter(|| {
            let tag = floor_hmac(
                black_box(&delivery.key),
                black_box(MESSAGE_ID),
                black_box(&delivery.timestamp),
                black_box(body),
            );
            let scanned: serde::de::IgnoredAny = serde_json::from_slice(black_box(body)).expect("the body is JSON");
            (tag, scanned)
        })
    });
    group.bench_function(BenchmarkId::from_parameter("clerk_sync_verify"), |b| {
        b.iter(|| {
            let verified = verifier.verify(Unverified::new(black_box(headers), black_box(body)), unix_now());
            verified.expect("clerk-sync accepts").id().len()
        })
    });
    group.bench_function(BenchmarkId::from_parameter("svix_verify"), |b| {
        b.iter(|| svix.verify(black_box(body), black_box(headers)).expect("svix accepts"))
    });
    group.bench_function(BenchmarkId::from_parameter("clerk_sync_verify_parse"), |b| {
        b.iter(|| {
            let verified = verifier.verify(Unverified::new(black_box(headers), black_box(body)), unix_now());
            let event = event::parse(&verified.expect("clerk-sync accepts")).expect("the body parses");
            black_box(event);
        })
    });
    group.bench_function(BenchmarkId::from_parameter("clerk_sync_verify_parse_plan"), |b| {
        b.iter(|| {
            let verified = verifier.verify(Unverified::new(black_box(headers), black_box(body)), unix_now());
            let event = event::parse(&verified.expect("clerk-sync accepts")).expect("the body parses");
            black_box(plan::plan(&event, OPTIONS).expect("the event plans"));
        })
    });
    group.finish();
}

fn verify(c: &mut Criterion) {
    let user_created = user_created();
    let user_with_metadata = user_with_metadata();
    let session_created = session_created();
    let extra = user_with_metadata.len() - user_created.len();
    eprintln!("user_8k_metadata carries {extra} bytes more metadata than user_created");
    bench_payload(c, "user_created", &user_created, USER_ID);
    bench_payload(c, "user_8k_metadata", &user_with_metadata, USER_ID);
    bench_payload(c, "session_created", &session_created, SESSION_ID);
}

criterion_group! {
    name = benches;
    // Short enough that a group (5 x 4 s) ends long before the 300 s timestamp tolerance.
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = verify
}
criterion_main!(benches);
