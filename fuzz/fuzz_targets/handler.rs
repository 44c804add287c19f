//! The whole function over arbitrary API Gateway events: `lambda_http::request::from_str`, then
//! `App::handle_at` at a fixed clock, with a store whose DynamoDB endpoint does not answer.
//!
//! An input starting with `{` is the event JSON itself (the seeds are the sample events under
//! `events/`, signed with the local test secret at a time this target's clock accepts). Any other
//! input is decoded as a structured event: an HTTP API (v2) or REST (v1) shape with a method, path,
//! stage, content type, headers, a body (a sample Clerk event, edited or not, or anything) sent
//! plain or base64, and often a signature made with a configured secret near the clock, so that
//! the code after verification is reached; or, sometimes, raw text as the event JSON.
//!
//! Property: no panic in the crate, and a 2xx answer only when the request as the function saw it
//! carries a valid signature of a configured secret (see `carries_valid_signature`). Without
//! DynamoDB, a verified event that plans a write is answered 503; an ignored type is answered 200.
#![no_main]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::Arbitrary;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use base64::Engine as _;
use clerk_sync::config::Config;
use clerk_sync::handler::{App, ROUTE};
use clerk_sync::store::Store;
use clerk_sync::verify::SigningSecret;
use clerk_sync_fuzz::{Name, Pad, Separator, SignatureEntry, Signing, Stats, carries_valid_signature, secret};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

/// The clock of every delivery: a minute after the sample events were signed.
const NOW: i64 = clerk_sync_fuzz::SAMPLE_EVENTS_TIMESTAMP + 60;
/// The secrets the function is configured with (a rotation: the local one and a second one).
/// `SECRETS[2]` and `SECRETS[3]` are signed with but never configured.
const CONFIGURED: [usize; 2] = [0, 1];

struct Harness {
    runtime: tokio::runtime::Runtime,
    /// With `store_clerk_data` true and false.
    apps: [App; 2],
    secrets: Vec<SigningSecret>,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a tokio runtime");
        let secrets: Vec<SigningSecret> = CONFIGURED.iter().map(|i| secret(*i)).collect();
        let app = |store_clerk_data: bool| {
            let config = aws_sdk_dynamodb::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .credentials_provider(Credentials::new("fuzz", "fuzz", None, None, "clerk-sync-fuzz"))
                .retry_config(RetryConfig::disabled())
                .timeout_config(
                    TimeoutConfig::builder()
                        .connect_timeout(Duration::from_millis(50))
                        .operation_timeout(Duration::from_millis(500))
                        .build(),
                )
                // Nothing listens on the discard port: every DynamoDB request fails at once.
                .endpoint_url("http://127.0.0.1:9")
                .build();
            let store = Store::new(aws_sdk_dynamodb::Client::from_conf(config), "clerk-sync-fuzz");
            App::new(
                Config { secrets: secrets.clone(), table_name: "clerk-sync-fuzz".into(), store_clerk_data, sync: None },
                store,
            )
        };
        Harness { apps: [app(true), app(false)], runtime, secrets }
    })
}

/// The sample API Gateway events; their bodies are the sample Clerk events.
const SAMPLE_EVENTS: [&str; 16] = [
    include_str!("../../events/user-created.json"),
    include_str!("../../events/user-updated.json"),
    include_str!("../../events/user-deleted.json"),
    include_str!("../../events/session-created.json"),
    include_str!("../../events/session-pending.json"),
    include_str!("../../events/session-ended.json"),
    include_str!("../../events/session-removed.json"),
    include_str!("../../events/session-revoked.json"),
    include_str!("../../events/organization-created.json"),
    include_str!("../../events/organization-membership-created.json"),
    include_str!("../../events/organization-deleted.json"),
    include_str!("../../events/ignored-organization-invitation-created.json"),
    include_str!("../../events/user-created-base64.json"),
    include_str!("../../events/rest-user-created.json"),
    include_str!("../../events/rest-user-created-base64.json"),
    include_str!("../../events/refused-stale-timestamp.json"),
];

struct Samples {
    v2: Value,
    v1: Value,
    bodies: Vec<Value>,
}

fn samples() -> &'static Samples {
    static SAMPLES: OnceLock<Samples> = OnceLock::new();
    SAMPLES.get_or_init(|| {
        let events: Vec<Value> = SAMPLE_EVENTS.iter().map(|e| serde_json::from_str(e).expect("sample event")).collect();
        let bodies = events
            .iter()
            .map(|event| {
                let body = event["body"].as_str().expect("sample body");
                let body = if event["isBase64Encoded"] == json!(true) {
                    base64::engine::general_purpose::STANDARD.decode(body).expect("sample base64 body")
                } else {
                    body.as_bytes().to_vec()
                };
                serde_json::from_slice(&body).expect("sample body JSON")
            })
            .collect();
        Samples { v2: events[0].clone(), v1: events[10].clone(), bodies }
    })
}

#[derive(Arbitrary, Debug)]
enum Structured {
    HttpApi(Request),
    Rest(Request),
    /// Anything as the event JSON.
    Raw(String),
}

#[derive(Arbitrary, Debug)]
struct Request {
    method: MethodChoice,
    path: PathChoice,
    stage: StageChoice,
    host: HostChoice,
    query: Option<String>,
    content_type: ContentType,
    body: BodyChoice,
    encoding: Encoding,
    sign: Option<Sign>,
    headers: Vec<(Name, String)>,
    /// REST only: values sent in `multiValueHeaders` alone.
    multi_value: Vec<(Name, Vec<String>)>,
}

#[derive(Arbitrary, Debug)]
enum MethodChoice {
    Post,
    Get,
    Put,
    LowerPost,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum PathChoice {
    Route,
    Prefixed(String),
    Trailing,
    Upper,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum StageChoice {
    Default,
    Prod,
    Absent,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum HostChoice {
    Api,
    Absent,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum ContentType {
    Json,
    JsonCharset,
    Upper,
    Absent,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum BodyChoice {
    Sample(u8),
    Edited { sample: u8, edits: Vec<Edit> },
    Text(String),
    Bytes(Vec<u8>),
    Absent,
}

/// An edit of a sample Clerk event, in its envelope or its `data`.
#[derive(Arbitrary, Debug)]
enum Edit {
    Envelope(Field, Leaf),
    Data(Field, Leaf),
    RemoveEnvelope(Field),
    RemoveData(Field),
    DataNotAnObject(Leaf),
}

#[derive(Arbitrary, Debug)]
enum Field {
    Type,
    Timestamp,
    Data,
    Object,
    Id,
    UserId,
    Status,
    UpdatedAt,
    CreatedAt,
    EmailAddresses,
    PrimaryEmailAddressId,
    PublicMetadata,
    FirstName,
    User,
    Deleted,
    Other(String),
}

impl Field {
    fn name(&self) -> &str {
        match self {
            Field::Type => "type",
            Field::Timestamp => "timestamp",
            Field::Data => "data",
            Field::Object => "object",
            Field::Id => "id",
            Field::UserId => "user_id",
            Field::Status => "status",
            Field::UpdatedAt => "updated_at",
            Field::CreatedAt => "created_at",
            Field::EmailAddresses => "email_addresses",
            Field::PrimaryEmailAddressId => "primary_email_address_id",
            Field::PublicMetadata => "public_metadata",
            Field::FirstName => "first_name",
            Field::User => "user",
            Field::Deleted => "deleted",
            Field::Other(name) => name,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Int(i64),
    Unsigned(u64),
    Float(f64),
    Text(String),
    EventType(u8),
    Status(u8),
    ClerkId(u8, u32),
    Emails(Vec<(Option<String>, Option<String>)>),
    Object(Vec<(String, i64)>),
    Array(Vec<i64>),
}

impl Leaf {
    fn value(&self) -> Value {
        const TYPES: [&str; 18] = [
            "user.created",
            "user.updated",
            "user.deleted",
            "session.created",
            "session.pending",
            "session.ended",
            "session.removed",
            "session.revoked",
            "session.token_refreshed",
            "organization.created",
            "organization.updated",
            "organization.deleted",
            "organizationMembership.created",
            "organizationMembership.updated",
            "organizationMembership.deleted",
            "organizationInvitation.created",
            "email.created",
            "user.",
        ];
        const STATUSES: [&str; 9] =
            ["active", "pending", "ended", "removed", "revoked", "expired", "abandoned", "replaced", ""];
        match self {
            Leaf::Null => Value::Null,
            Leaf::Bool(b) => json!(b),
            Leaf::Int(i) => json!(i),
            Leaf::Unsigned(u) => json!(u),
            Leaf::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Leaf::Text(text) => json!(text),
            Leaf::EventType(i) => json!(TYPES[*i as usize % TYPES.len()]),
            Leaf::Status(i) => json!(STATUSES[*i as usize % STATUSES.len()]),
            Leaf::ClerkId(prefix, n) => {
                json!(format!("{}_{n:x}", ["user", "sess", "idn", "org", "client"][*prefix as usize % 5]))
            }
            Leaf::Emails(emails) => {
                Value::Array(emails.iter().map(|(id, email)| json!({"id": id, "email_address": email})).collect())
            }
            Leaf::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
            Leaf::Array(items) => json!(items),
        }
    }
}

/// How the body travels. (A body marked base64 that is not makes lambda_http panic before the
/// function runs; API Gateway never sends one. Raw inputs still explore that.)
#[derive(Arbitrary, Debug)]
enum Encoding {
    Plain,
    Base64,
}

/// A signature over the body that will be sent.
#[derive(Arbitrary, Debug)]
struct Sign {
    /// Which of `SECRETS` signs: 0 and 1 are configured, 2 and 3 are not.
    secret: u8,
    id: Option<String>,
    /// The signed timestamp is `NOW + offset % 400`: inside and outside the 300 s tolerance.
    offset: i16,
    names: NameStyle,
    /// Other entries around the signature, and where it goes among them.
    others: Vec<SignatureEntry>,
    position: u8,
    separators: Vec<Separator>,
    pad: Pad,
}

#[derive(Arbitrary, Debug)]
enum NameStyle {
    Svix,
    Webhook,
    Both,
    Capitalized,
}

fn header_names(style: &NameStyle) -> Vec<[&'static str; 3]> {
    match style {
        NameStyle::Svix => vec![["svix-id", "svix-timestamp", "svix-signature"]],
        NameStyle::Webhook => vec![["webhook-id", "webhook-timestamp", "webhook-signature"]],
        NameStyle::Both => vec![
            ["svix-id", "svix-timestamp", "svix-signature"],
            ["webhook-id", "webhook-timestamp", "webhook-signature"],
        ],
        NameStyle::Capitalized => vec![["Svix-Id", "Svix-Timestamp", "Svix-Signature"]],
    }
}

/// The event JSON for a structured input.
fn event_json(structured: &Structured) -> String {
    let (request, v2) = match structured {
        Structured::HttpApi(request) => (request, true),
        Structured::Rest(request) => (request, false),
        Structured::Raw(text) => return text.clone(),
    };
    let samples = samples();
    let sample = |i: &u8| samples.bodies[*i as usize % samples.bodies.len()].clone();

    // The body bytes the function is meant to receive; the signature is made over exactly these.
    let body: Option<Vec<u8>> = match &request.body {
        BodyChoice::Sample(i) => Some(serde_json::to_vec(&sample(i)).unwrap()),
        BodyChoice::Edited { sample: i, edits } => {
            let mut event = sample(i);
            for edit in edits.iter().take(8) {
                apply(&mut event, edit);
            }
            Some(serde_json::to_vec(&event).unwrap())
        }
        BodyChoice::Text(text) => Some(text.clone().into_bytes()),
        BodyChoice::Bytes(bytes) => Some(bytes.clone()),
        BodyChoice::Absent => None,
    };
    // A plain body travels as a JSON string: only UTF-8 survives.
    let body = match (&request.encoding, body) {
        (Encoding::Plain, Some(bytes)) => Some(String::from_utf8_lossy(&bytes).into_owned().into_bytes()),
        (_, body) => body,
    };

    let mut headers = Map::new();
    let mut multi = Map::new();
    if let Some(sign) = &request.sign {
        let id = header_safe(sign.id.as_deref().unwrap_or("msg_2pQAPA35fRi2hj0gUisAgkya7T4"));
        let id = id.as_str();
        let timestamp = NOW + (sign.offset % 400) as i64;
        let signing = Signing { id, timestamp, body: body.as_deref().unwrap_or_default() };
        let mut entries: Vec<SignatureEntry> = sign.others.iter().take(8).cloned().collect();
        let position = sign.position as usize % (entries.len() + 1);
        entries.insert(position, SignatureEntry::Correct { secret: sign.secret });
        let signature =
            header_safe(&sign.pad.apply(&clerk_sync_fuzz::signature_header(&entries, &sign.separators, &signing)));
        for [id_name, ts_name, sig_name] in header_names(&sign.names) {
            headers.insert(id_name.into(), json!(id));
            headers.insert(ts_name.into(), json!(timestamp.to_string()));
            headers.insert(sig_name.into(), json!(signature));
        }
    }
    match &request.content_type {
        ContentType::Json => headers.insert("content-type".into(), json!("application/json")),
        ContentType::JsonCharset => headers.insert("content-type".into(), json!("application/json; charset=utf-8")),
        ContentType::Upper => headers.insert("Content-Type".into(), json!("Application/JSON")),
        ContentType::Absent => None,
        ContentType::Other(text) => headers.insert("content-type".into(), json!(header_safe(text))),
    };
    match &request.host {
        HostChoice::Api => headers.insert("host".into(), json!("k7x2mq9w4d.execute-api.us-east-1.amazonaws.com")),
        HostChoice::Absent => None,
        HostChoice::Other(host) => headers.insert("host".into(), json!(host_safe(host))),
    };
    for (name, value) in request.headers.iter().take(12) {
        headers.insert(token(&name.text()), json!(header_safe(value)));
    }
    for (name, value) in &headers {
        multi.insert(name.clone(), json!([value]));
    }
    for (name, values) in request.multi_value.iter().take(8) {
        multi.insert(token(&name.text()), json!(values.iter().map(|v| header_safe(v)).collect::<Vec<_>>()));
    }

    let method = match &request.method {
        MethodChoice::Post => "POST",
        MethodChoice::Get => "GET",
        MethodChoice::Put => "PUT",
        MethodChoice::LowerPost => "post",
        MethodChoice::Other(method) => &token(method),
    };
    let path = match &request.path {
        PathChoice::Route => ROUTE.to_owned(),
        PathChoice::Prefixed(prefix) => format!("{}{ROUTE}", uri_safe(prefix)),
        PathChoice::Trailing => format!("{ROUTE}/"),
        PathChoice::Upper => ROUTE.to_uppercase(),
        PathChoice::Other(path) => uri_safe(path),
    };
    let stage = match &request.stage {
        StageChoice::Default => Some("$default"),
        StageChoice::Prod => Some("prod"),
        StageChoice::Absent => None,
        StageChoice::Other(stage) => Some(stage.as_str()),
    };
    let (is_base64, body) = match (&request.encoding, body) {
        (_, None) => (false, Value::Null),
        (Encoding::Plain, Some(bytes)) => (false, json!(String::from_utf8(bytes).expect("made UTF-8 above"))),
        (Encoding::Base64, Some(bytes)) => (true, json!(base64::engine::general_purpose::STANDARD.encode(bytes))),
    };

    let mut event = if v2 { samples.v2.clone() } else { samples.v1.clone() };
    if v2 {
        event["rawPath"] = json!(path);
        event["rawQueryString"] = json!(uri_safe(request.query.as_deref().unwrap_or_default()));
        event["headers"] = Value::Object(headers);
        event["requestContext"]["http"]["method"] = json!(method);
        event["requestContext"]["http"]["path"] = json!(path);
        event["requestContext"]["stage"] = json!(stage);
        event["routeKey"] = json!(format!("{method} {path}"));
    } else {
        event["path"] = json!(path);
        event["resource"] = json!(path);
        event["httpMethod"] = json!(method);
        event["headers"] = Value::Object(headers);
        event["multiValueHeaders"] = Value::Object(multi);
        event["requestContext"]["stage"] = json!(stage);
        event["requestContext"]["httpMethod"] = json!(method);
        if let Some(query) = &request.query {
            event["queryStringParameters"] = json!({ "q": query });
        }
    }
    event["body"] = body;
    event["isBase64Encoded"] = json!(is_base64);
    event.to_string()
}

/// Percent-encodes what cannot appear in a URI path or query. API Gateway only passes on
/// requests with a valid request line, and lambda_http panics on a path that makes no URI.
fn uri_safe(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// An HTTP token (a header name or a method): anything else makes lambda_http refuse the
/// whole event, which API Gateway would never have passed on.
fn token(text: &str) -> String {
    let token: String = text.chars().filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c)).collect();
    if token.is_empty() { "x".into() } else { token }
}

/// A header value lambda_http accepts: visible ASCII, spaces and tabs.
fn header_safe(text: &str) -> String {
    text.chars().filter(|c| *c == '\t' || (' '..='~').contains(c)).collect()
}

/// Only letters, digits, `-` and `.`: lambda_http panics on a host that makes no URL.
fn host_safe(host: &str) -> String {
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect();
    if host.is_empty() { "example.com".into() } else { host }
}

fn data(event: &mut Value) -> Option<&mut Map<String, Value>> {
    event.get_mut("data")?.as_object_mut()
}

fn apply(event: &mut Value, edit: &Edit) {
    match edit {
        Edit::Envelope(field, leaf) => {
            if let Some(event) = event.as_object_mut() {
                event.insert(field.name().to_owned(), leaf.value());
            }
        }
        Edit::Data(field, leaf) => {
            if let Some(data) = data(event) {
                data.insert(field.name().to_owned(), leaf.value());
            }
        }
        Edit::RemoveEnvelope(field) => {
            if let Some(event) = event.as_object_mut() {
                event.remove(field.name());
            }
        }
        Edit::RemoveData(field) => {
            if let Some(data) = data(event) {
                data.remove(field.name());
            }
        }
        Edit::DataNotAnObject(leaf) => event["data"] = leaf.value(),
    }
}

/// `lambda_http::request::from_str`, with its own panics (on events API Gateway never sends: a
/// body marked base64 that is not, a host or query string that makes no URL) caught and
/// counted as "no request": they are lambda_http's, before any of the function's code runs.
fn lambda_request(json: &str, mode: &str) -> Option<lambda_http::Request> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(|| lambda_http::request::from_str(json)));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(request)) => Some(request),
        Ok(Err(e)) => {
            if std::env::var_os("FUZZ_DEBUG").is_some() {
                eprintln!("refused by lambda_http: {e}");
            }
            STATS.record(|| {
                let reason: String =
                    e.to_string().split(" at line").next().unwrap_or_default().chars().take(60).collect();
                format!("{mode}: event refused by lambda_http: {reason}")
            });
            None
        }
        Err(panic) => {
            STATS.record(|| {
                let message =
                    panic.downcast_ref::<&str>().map(|s| s.to_string()).or(panic.downcast_ref::<String>().cloned());
                let message = message.unwrap_or_default();
                format!("lambda_http panicked: {}", message.split('(').next().unwrap_or_default())
            });
            None
        }
    }
}

static STATS: Stats = Stats::new();

fuzz_target!(|data: &[u8]| {
    let (json, mode, store_clerk_data) = if data.first() == Some(&b'{') {
        let Ok(json) = std::str::from_utf8(data) else { return };
        (json.to_owned(), "raw", true)
    } else {
        let Some((store_clerk_data, structured)) = clerk_sync_fuzz::structured::<(bool, Structured)>(data) else {
            return;
        };
        let mode = match structured {
            Structured::HttpApi(_) => "http api",
            Structured::Rest(_) => "rest",
            Structured::Raw(_) => "raw text",
        };
        (event_json(&structured), mode, store_clerk_data)
    };
    let debug = std::env::var_os("FUZZ_DEBUG").is_some();
    if debug {
        eprintln!("event ({mode}): {json}");
    }
    let Some(request) = lambda_request(&json, mode) else { return };

    let harness = harness();
    let headers = request.headers().clone();
    let method = request.method().clone();
    let body = request.body().to_vec();
    let signed = carries_valid_signature(&headers, &body, &harness.secrets, NOW);
    let app = &harness.apps[usize::from(!store_clerk_data)];
    let response = harness.runtime.block_on(app.handle_at(request, NOW));
    let status = response.status();
    if debug {
        eprintln!("answer: {status} {:?}", response.body());
    }
    STATS.record(|| format!("{mode}, {}: {}", if signed { "signed" } else { "unsigned" }, status.as_u16()));

    if status.is_success() {
        assert!(signed, "answered {status} to a request without a valid signature ({mode}): {headers:?}");
        assert_eq!(method, lambda_http::http::Method::POST, "answered {status} to a {method}");
    }
    let answer: Value = serde_json::from_slice(response.body().as_ref()).expect("every answer is JSON");
    assert!(answer.is_object(), "answer {answer}");
});
