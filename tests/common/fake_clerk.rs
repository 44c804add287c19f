//! A fake Clerk for `/sync` (tests/sync.rs): the instance's key set (`GET /jwks`) and the Backend
//! API's user, session and membership reads, served over real HTTP on 127.0.0.1, with faults to
//! inject (a status, a 429 with `Retry-After`, a slow answer) and every request counted, so that a
//! test can say "no request reached Clerk".

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The secret key the fake accepts; tests check it never reaches the function's logs.
pub const SECRET_KEY: &str = "sk_test_sYnCfAkEkEy0123456789abcdefXYZ";

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Jwks,
    User,
    Session,
    Memberships,
    Other,
}

#[derive(Debug, Clone)]
pub enum Fault {
    /// A Clerk error answer with this status.
    Status(u16),
    /// A Clerk error answer with this status and error code.
    Error(u16, &'static str),
    /// 429 with `Retry-After: seconds`.
    RateLimited { retry_after: u64 },
    /// The right answer, after this long.
    Slow(Duration),
}

struct Rule {
    kind: Kind,
    fault: Fault,
    remaining: Option<usize>,
}

#[derive(Default)]
struct State {
    jwks: Value,
    users: HashMap<String, Value>,
    sessions: HashMap<String, Value>,
    memberships: HashMap<String, Vec<Value>>,
    rules: Vec<Rule>,
    received: Vec<(Kind, String)>,
}

pub struct FakeClerk {
    /// `http://127.0.0.1:<port>/v1`.
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
    /// A fake whose `GET /jwks` answers `jwks`.
    pub async fn start(jwks: Value) -> Self {
        let state = Arc::new(Mutex::new(State { jwks, ..State::default() }));
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

    /// Creates or replaces a user (by its `id`).
    pub fn put_user(&self, user: Value) {
        let id = user["id"].as_str().unwrap().to_owned();
        self.state.lock().unwrap().users.insert(id, user);
    }

    pub fn delete_user(&self, id: &str) {
        self.state.lock().unwrap().users.remove(id);
    }

    /// Creates or replaces a session (by its `id`).
    pub fn put_session(&self, session: Value) {
        let id = session["id"].as_str().unwrap().to_owned();
        self.state.lock().unwrap().sessions.insert(id, session);
    }

    /// Answers `GET /sessions/{id}` with `session`, whatever its own id says.
    pub fn put_session_at(&self, id: &str, session: Value) {
        self.state.lock().unwrap().sessions.insert(id.to_owned(), session);
    }

    /// What `GET /users/{user_id}/organization_memberships` lists.
    pub fn set_memberships(&self, user_id: &str, memberships: Vec<Value>) {
        self.state.lock().unwrap().memberships.insert(user_id.to_owned(), memberships);
    }

    pub fn set_jwks(&self, jwks: Value) {
        self.state.lock().unwrap().jwks = jwks;
    }

    /// Applies `fault` to the next `times` requests of `kind` (`None`: every one).
    pub fn fail(&self, kind: Kind, fault: Fault, times: Option<usize>) {
        self.state.lock().unwrap().rules.push(Rule { kind, fault, remaining: times });
    }

    pub fn heal(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Every request received, as (kind, path below `/v1` with its query).
    pub fn received(&self) -> Vec<(Kind, String)> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn requests(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    pub fn requests_of(&self, kind: Kind) -> usize {
        self.state.lock().unwrap().received.iter().filter(|(k, _)| *k == kind).count()
    }
}

fn json_answer(status: u16, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    response.headers_mut().insert("content-type", "application/json".parse().unwrap());
    response
}

fn clerk_error(status: u16, code: &str) -> Response<Full<Bytes>> {
    let body =
        json!({"errors": [{"message": "fake", "long_message": "fake error", "code": code}], "clerk_trace_id": "t"});
    json_answer(status, &body)
}

fn kind_of(path: &str) -> Kind {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["", "jwks"] => Kind::Jwks,
        ["", "users", _] => Kind::User,
        ["", "sessions", _] => Kind::Session,
        ["", "users", _, "organization_memberships"] => Kind::Memberships,
        _ => Kind::Other,
    }
}

async fn answer(state: Arc<Mutex<State>>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let authorized = header("authorization") == Some(format!("Bearer {SECRET_KEY}"));
    let versioned = header("clerk-api-version").is_some();
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
    let kind = kind_of(&path);

    let (fault, answer) = {
        let mut state = state.lock().unwrap();
        state.received.push((kind, format!("{path}?{}", query.len())));
        let fault = state.rules.iter_mut().find(|rule| rule.kind == kind && rule.remaining != Some(0)).map(|rule| {
            if let Some(remaining) = &mut rule.remaining {
                *remaining -= 1;
            }
            rule.fault.clone()
        });
        let answer = if !authorized {
            clerk_error(401, "authentication_invalid")
        } else if !versioned {
            clerk_error(400, "api_version_missing")
        } else {
            let id = path.split('/').nth(2).unwrap_or_default();
            let found = |object: Option<&Value>| match object {
                Some(object) => json_answer(200, object),
                None => clerk_error(404, "resource_not_found"),
            };
            match kind {
                Kind::Jwks => json_answer(200, &state.jwks),
                Kind::User => found(state.users.get(id)),
                Kind::Session => found(state.sessions.get(id)),
                Kind::Memberships if !state.users.contains_key(id) => clerk_error(404, "resource_not_found"),
                Kind::Memberships => {
                    let all = state.memberships.get(id).cloned().unwrap_or_default();
                    let number =
                        |name: &str, default: usize| query.get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
                    let page: Vec<Value> =
                        all.iter().skip(number("offset", 0)).take(number("limit", 10)).cloned().collect();
                    json_answer(200, &json!({"data": page, "total_count": all.len()}))
                }
                Kind::Other => clerk_error(404, "resource_not_found"),
            }
        };
        (fault, answer)
    };
    Ok(match fault {
        None => answer,
        Some(Fault::Status(status)) => clerk_error(status, if status >= 500 { "internal_clerk_error" } else { "fake" }),
        Some(Fault::Error(status, code)) => clerk_error(status, code),
        Some(Fault::RateLimited { retry_after }) => {
            let mut response = clerk_error(429, "too_many_requests");
            response.headers_mut().insert("retry-after", retry_after.to_string().parse().unwrap());
            response
        }
        Some(Fault::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            answer
        }
    })
}
