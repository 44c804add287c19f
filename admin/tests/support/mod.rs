//! What the admin tests share: a fake Clerk Backend API served over real HTTP on 127.0.0.1, holding
//! real-shaped users and sessions, with faults to inject; and the real binary run against it and the
//! local DynamoDB API.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Output;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::common;

/// The key the fake accepts. Tests check it never appears in the tool's output.
pub const KEY: &str = "sk_test_fAkEsEcReTkEy0123456789abcdef";
/// The Clerk instance the fake's key belongs to (its key set's key id), as the webhooks the
/// tests deliver name it (`tests/common`).
pub const INSTANCE: &str = "ins_123";
/// Every generated user's first name starts with this; it must never appear in the tool's output.
pub const NAME_PREFIX: &str = "Zelda";

/// Generated users' ids, in creation order.
pub fn user_id(i: usize) -> String {
    format!("user_{i:05}fake")
}

/// When generated user `i` was created (Clerk's `created_at`, milliseconds).
pub fn created(i: usize) -> i64 {
    1_700_000_000_000_i64 + i as i64 * 1000
}

/// The Backend API's user object (what webhooks carry as `data`), created in order `i`.
pub fn user(i: usize, updated_at: i64) -> Value {
    let mut user = data(&common::clerk::user("user.updated", &user_id(i), updated_at, &format!("{NAME_PREFIX}{i}")));
    user["created_at"] = json!(created(i));
    user
}

/// `n` users, each updated at `created_at + 500`.
pub fn users(n: usize) -> Vec<Value> {
    (0..n).map(|i| user(i, 1_700_000_000_500 + i as i64 * 1000)).collect()
}

pub fn session(id: &str, user_id: &str, status: &str, updated_at: i64) -> Value {
    data(&common::clerk::session("session.created", id, user_id, status, updated_at, None))
}

pub fn organization(id: &str, updated_at: i64) -> Value {
    data(&common::clerk::organization("organization.updated", id, updated_at, "Acme"))
}

pub fn membership(id: &str, organization_id: &str, user_id: &str, updated_at: i64) -> Value {
    let event = common::clerk::membership(
        "organizationMembership.updated",
        id,
        organization_id,
        user_id,
        "org:member",
        updated_at - 10,
        updated_at,
    );
    data(&event)
}

fn data(envelope: &str) -> Value {
    serde_json::from_str::<Value>(envelope).unwrap()["data"].take()
}

/// Which requests a fault applies to.
#[derive(Clone, Debug, PartialEq)]
pub enum Target {
    /// `GET /users` of the users created from this time on (its `created_at_after` plus one;
    /// `None`: the first page).
    UsersPage(Option<i64>),
    AnyUsersPage,
    Sessions,
    UserById,
    /// `GET /organizations/{id}`.
    OrganizationById,
    /// `GET /organizations/{id}/memberships`.
    MembershipsOfOrganization,
}

#[derive(Clone, Debug)]
pub enum Fault {
    TooManyRequests {
        retry_after: u64,
    },
    ServerError,
    /// An answer of our choosing: status and body.
    Answer(u16, String),
    /// The user with this id is deleted from Clerk, and the request then answered as usual.
    DeleteUserFirst(String),
}

struct Rule {
    target: Target,
    fault: Fault,
    /// How many more requests it applies to; `None`: all of them.
    remaining: Option<usize>,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub query: HashMap<String, String>,
    pub api_version: Option<String>,
}

#[derive(Default)]
struct State {
    /// In creation order.
    users: Vec<Value>,
    /// Users, organizations and memberships found by id, but missing from lists (as if created
    /// while a list was being read).
    unlisted: HashSet<String>,
    sessions: BTreeMap<String, Vec<Value>>,
    organizations: Vec<Value>,
    memberships: Vec<Value>,
    rules: Vec<Rule>,
    received: Vec<Received>,
}

pub struct FakeClerk {
    /// The base URL, `http://127.0.0.1:<port>/v1`.
    pub base: String,
    state: Arc<Mutex<State>>,
    server: JoinHandle<()>,
}

impl Drop for FakeClerk {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeClerk {
    pub async fn start(users: Vec<Value>, sessions: Vec<Value>) -> Self {
        let mut state = State { users, ..State::default() };
        for session in sessions {
            let user_id = session["user_id"].as_str().unwrap().to_owned();
            state.sessions.entry(user_id).or_default().push(session);
        }
        let state = Arc::new(Mutex::new(state));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let served = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let state = served.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| answer(state.clone(), request));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { base: format!("http://{address}/v1"), state, server }
    }

    /// Applies `fault` to the next `times` requests to `target` (`None`: to every one).
    pub fn fail(&self, target: Target, fault: Fault, times: Option<usize>) {
        self.state.lock().unwrap().rules.push(Rule { target, fault, remaining: times });
    }

    /// Clears every fault.
    pub fn heal(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Organizations and memberships, listed by `GET /organizations` and `/organization_memberships`.
    pub fn set_organizations(&self, organizations: Vec<Value>, memberships: Vec<Value>) {
        let mut state = self.state.lock().unwrap();
        state.organizations = organizations;
        state.memberships = memberships;
    }

    /// Creates or updates a user in Clerk (a new one is the newest).
    pub fn put_user(&self, user: Value) {
        let mut state = self.state.lock().unwrap();
        put_by_id(&mut state.users, user);
    }

    /// Deletes a user (and their sessions and memberships) from Clerk.
    pub fn delete_user(&self, id: &str) {
        let mut state = self.state.lock().unwrap();
        state.users.retain(|user| user["id"] != id);
        state.sessions.remove(id);
        state.memberships.retain(|membership| membership["public_user_data"]["user_id"] != id);
    }

    /// Keeps a user, organization or membership out of lists while reads by id still find it.
    pub fn unlist(&self, id: &str) {
        self.state.lock().unwrap().unlisted.insert(id.to_owned());
    }

    /// Creates or updates an organization in Clerk.
    pub fn put_organization(&self, organization: Value) {
        let mut state = self.state.lock().unwrap();
        put_by_id(&mut state.organizations, organization);
    }

    /// Deletes an organization, and its memberships, from Clerk.
    pub fn delete_organization(&self, id: &str) {
        let mut state = self.state.lock().unwrap();
        state.organizations.retain(|organization| organization["id"] != id);
        state.memberships.retain(|membership| membership["organization"]["id"] != id);
    }

    /// Creates or updates a membership in Clerk; a new membership of the same user and
    /// organization (they left and joined again) replaces the earlier one.
    pub fn put_membership(&self, membership: Value) {
        let mut state = self.state.lock().unwrap();
        let slot = |m: &Value| (m["organization"]["id"].clone(), m["public_user_data"]["user_id"].clone());
        state.memberships.retain(|m| m["id"] == membership["id"] || slot(m) != slot(&membership));
        put_by_id(&mut state.memberships, membership);
    }

    /// Deletes a membership from Clerk (the user left the organization).
    pub fn delete_membership(&self, id: &str) {
        self.state.lock().unwrap().memberships.retain(|membership| membership["id"] != id);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// How many requests went to `path` (below `/v1`).
    pub fn requests_to(&self, path: &str) -> usize {
        self.received().iter().filter(|r| r.path == path).count()
    }
}

fn json_answer(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

fn clerk_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    json_answer(status, &json!({"errors": [{"message": "fake", "long_message": "fake error", "code": code}]}))
}

async fn answer(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorized = header("authorization") == Some(format!("Bearer {KEY}"));
    let api_version = header("clerk-api-version");
    let path = request.uri().path().strip_prefix("/v1").unwrap_or("").to_owned();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let _ = request.into_body().collect().await;

    let mut state = state.lock().unwrap();
    state.received.push(Received { path: path.clone(), query: query.clone(), api_version: api_version.clone() });
    if !authorized {
        return Ok(clerk_error(401, "authentication_invalid"));
    }
    if api_version.is_none() {
        return Ok(clerk_error(400, "api_version_missing"));
    }
    let target = match path.as_str() {
        "/users" => {
            let after = query.get("created_at_after").and_then(|v| v.parse::<i64>().ok());
            Some(Target::UsersPage(after.map(|after| after + 1)))
        }
        "/sessions" => Some(Target::Sessions),
        p if p.starts_with("/users/") && p != "/users/count" => Some(Target::UserById),
        p if p.starts_with("/organizations/") && p.ends_with("/memberships") => Some(Target::MembershipsOfOrganization),
        p if p.starts_with("/organizations/") => Some(Target::OrganizationById),
        _ => None,
    };
    if let Some(target) = target {
        let matches = |rule: &Rule| {
            rule.target == target || (rule.target == Target::AnyUsersPage && matches!(target, Target::UsersPage(_)))
        };
        if let Some(rule) = state.rules.iter_mut().find(|rule| matches(rule) && rule.remaining != Some(0)) {
            if let Some(remaining) = &mut rule.remaining {
                *remaining -= 1;
            }
            match rule.fault.clone() {
                Fault::TooManyRequests { retry_after } => {
                    let mut response = clerk_error(429, "too_many_requests");
                    response.headers_mut().insert("retry-after", retry_after.to_string().parse().unwrap());
                    return Ok(response);
                }
                Fault::ServerError => return Ok(clerk_error(503, "internal_clerk_error")),
                Fault::Answer(status, body) => {
                    let mut response = Response::new(Full::new(Bytes::from(body)));
                    *response.status_mut() = StatusCode::from_u16(status).unwrap();
                    return Ok(response);
                }
                Fault::DeleteUserFirst(id) => state.users.retain(|u| u["id"] != id.as_str()),
            }
        }
    }
    let listed: Vec<&Value> =
        state.users.iter().filter(|u| !state.unlisted.contains(u["id"].as_str().unwrap())).collect();
    let listed_only = |all: &[Value]| -> Vec<Value> {
        all.iter().filter(|o| !state.unlisted.contains(o["id"].as_str().unwrap())).cloned().collect()
    };
    let number = |name: &str, default: usize| query.get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    let offset_page = |all: &[Value]| {
        let page: Vec<&Value> = all.iter().skip(number("offset", 0)).take(number("limit", 10)).collect();
        json_answer(200, &json!({"data": page, "total_count": all.len()}))
    };
    Ok(match path.as_str() {
        "/users/count" => json_answer(200, &json!({"object": "total_count", "total_count": listed.len()})),
        "/jwks" => json_answer(
            200,
            &json!({"keys": [{"use": "sig", "kty": "RSA", "kid": INSTANCE, "alg": "RS256", "n": "0vx7", "e": "AQAB"}]}),
        ),
        "/users" => {
            // Clerk's `GET /users`: `limit` and `offset`, `order_by` (`created_at` is `+created_at`,
            // oldest first), and the `created_at_after` / `created_at_before` filters, each exclusive.
            // It has no cursor: a parameter it does not take is refused here, so that a tool relying
            // on one fails its tests instead of listing the first page again and again.
            if query.get("order_by").map(String::as_str) != Some("created_at") {
                return Ok(clerk_error(400, "form_param_value_invalid"));
            }
            let known = ["limit", "offset", "order_by", "created_at_after", "created_at_before"];
            if query.keys().any(|name| !known.contains(&name.as_str())) {
                return Ok(clerk_error(400, "form_param_unknown"));
            }
            let bound = |name: &str| query.get(name).and_then(|v| v.parse::<i64>().ok());
            let (after, before) = (bound("created_at_after"), bound("created_at_before"));
            let created_at = |u: &Value| u["created_at"].as_i64().unwrap_or_default();
            let mut window: Vec<&Value> = listed
                .iter()
                .filter(|u| after.is_none_or(|a| created_at(u) > a) && before.is_none_or(|b| created_at(u) < b))
                .copied()
                .collect();
            window.sort_by_key(|u| created_at(u));
            let page: Vec<&Value> = window.into_iter().skip(number("offset", 0)).take(number("limit", 10)).collect();
            json_answer(200, &json!(page))
        }
        "/sessions" => {
            let Some(user_id) = query.get("user_id") else { return Ok(clerk_error(422, "form_param_missing")) };
            if query.get("paginated").map(String::as_str) != Some("true") {
                return Ok(clerk_error(400, "form_param_value_invalid"));
            }
            offset_page(state.sessions.get(user_id).map(Vec::as_slice).unwrap_or_default())
        }
        "/organizations" => offset_page(&listed_only(&state.organizations)),
        "/organization_memberships" => offset_page(&listed_only(&state.memberships)),
        p if p.starts_with("/organizations/") => {
            let rest = p.strip_prefix("/organizations/").unwrap();
            let (organization_id, memberships) = match rest.strip_suffix("/memberships") {
                Some(id) => (id, true),
                None => (rest, false),
            };
            let Some(organization) = state.organizations.iter().find(|o| o["id"] == organization_id) else {
                return Ok(clerk_error(404, "resource_not_found"));
            };
            if !memberships {
                return Ok(json_answer(200, organization));
            }
            let of_organization: Vec<Value> = state
                .memberships
                .iter()
                .filter(|m| m["organization"]["id"] == organization_id)
                .filter(|m| query.get("user_id").is_none_or(|u| m["public_user_data"]["user_id"] == u.as_str()))
                .cloned()
                .collect();
            offset_page(&of_organization)
        }
        p => match p.strip_prefix("/users/").and_then(|id| state.users.iter().find(|u| u["id"] == id)) {
            Some(user) => json_answer(200, user),
            None => clerk_error(404, "resource_not_found"),
        },
    })
}

/// The real binary, run against a fake Clerk and a table of the local DynamoDB API.
pub struct Admin {
    pub api_url: String,
    pub table: String,
    pub key: String,
    /// Another DynamoDB endpoint than the local one (a fault proxy in front of it).
    pub dynamodb_endpoint: Option<String>,
}

/// What a run of the binary printed, and how it ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The `name=value` figure on the line starting with `prefix` (e.g. `users:`, `applied`).
    pub fn figure(&self, prefix: &str, name: &str) -> u64 {
        let line = self.stdout.lines().find(|line| line.starts_with(prefix)).unwrap_or_else(|| panic!("{self}"));
        let value = line.split_whitespace().find_map(|word| word.strip_prefix(&format!("{name}=")));
        value.and_then(|v| v.trim_end_matches('s').parse().ok()).unwrap_or_else(|| panic!("{name} in {line}"))
    }

    /// The arguments of the printed `resume with:` command.
    pub fn resume_args(&self) -> Vec<String> {
        let line =
            self.stderr.lines().find_map(|l| l.strip_prefix("resume with: ")).unwrap_or_else(|| panic!("{self}"));
        let mut words = line.split_whitespace().map(str::to_owned);
        assert_eq!(words.next().as_deref(), Some("clerk-sync-admin"));
        words.collect()
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?}\n--- stdout\n{}--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

impl Admin {
    pub fn new(clerk: &FakeClerk, table: &common::TestTable) -> Self {
        Self { api_url: clerk.base.clone(), table: table.name.clone(), key: KEY.to_owned(), dynamodb_endpoint: None }
    }

    /// Runs `clerk-sync-admin ARGS` with only the environment it needs (the key, the table, the
    /// API URL, local AWS settings), and checks that nothing it printed holds the secret key or
    /// personal data.
    pub async fn run(&self, args: &[&str]) -> Run {
        let endpoint = self
            .dynamodb_endpoint
            .clone()
            .unwrap_or_else(|| std::env::var("CLERK_SYNC_DYNAMODB_ENDPOINT").expect("CLERK_SYNC_DYNAMODB_ENDPOINT"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_clerk-sync-admin"));
        command
            .args(args)
            .env_clear()
            .env("CLERK_API_URL", &self.api_url)
            .env("TABLE_NAME", &self.table)
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "local")
            .env("AWS_SECRET_ACCESS_KEY", "local")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        if !self.key.is_empty() {
            command.env("CLERK_SECRET_KEY", &self.key);
        }
        let Output { status, stdout, stderr } = command.output().await.expect("run clerk-sync-admin");
        let run = Run {
            code: status.code(),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        };
        for printed in [&run.stdout, &run.stderr] {
            let lowercase = printed.to_lowercase();
            if !self.key.is_empty() {
                assert!(!printed.contains(&self.key), "the secret key was printed:\n{run}");
            }
            assert!(!printed.contains(KEY), "the secret key was printed:\n{run}");
            assert!(!lowercase.contains("@example.org"), "an email address was printed:\n{run}");
            assert!(!printed.contains(NAME_PREFIX), "a name was printed:\n{run}");
        }
        run
    }
}

/// The user items of a table, by id.
pub async fn user_items(table: &common::TestTable) -> BTreeMap<String, Value> {
    table
        .items()
        .await
        .into_iter()
        .filter(|((_, sk), _)| sk == "USER")
        .map(|(_, item)| (item["id"].as_str().unwrap().to_owned(), item))
        .collect()
}

/// Replaces the object with `object`'s id in `list`, or adds it at the end (the newest).
fn put_by_id(list: &mut Vec<Value>, object: Value) {
    match list.iter_mut().find(|existing| existing["id"] == object["id"]) {
        Some(existing) => *existing = object,
        None => list.push(object),
    }
}

/// A table of the local DynamoDB API that records, as the function's first delivery would, that
/// it mirrors the fake's instance with `data` kept.
pub async fn mirrored_table() -> common::TestTable {
    let table = common::TestTable::create().await;
    let item = serde_dynamo::aws_sdk_dynamodb_1::to_item(json!({
        "pk": "META", "sk": "INSTANCE", "instance_id": INSTANCE, "store_clerk_data": true
    }))
    .unwrap();
    table.client.put_item().table_name(&table.name).set_item(Some(item)).send().await.unwrap();
    table
}
