//! Steps 1 and 6 of a request: HTTP in, routed to its entrance, and HTTP out with one log line.
//!
//! Two entrances, each a module that reads top to bottom as the life of its request:
//! [`crate::webhook`] (`POST /webhooks/clerk`, Clerk's deliveries) and [`crate::sync`]
//! (`POST /sync`, a signed-in user's frontend). Both write through the same plan and store.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::json;

use crate::config::Config;
use crate::plan::Options;
use crate::store::{Mirror, Recorded, Store, StoreError};
use crate::sync::{self, Route};
use crate::tls::Trust;
use crate::verify::Verifier;
use crate::webhook;

pub use crate::webhook::{MAX_BODY_BYTES, ROUTE};

/// Everything a request needs, created once at init.
pub struct App {
    verifier: Verifier,
    store: Store,
    options: Options,
    mirror: MirrorGuard,
    sync: Route,
}

impl App {
    pub fn new(config: Config, store: Store) -> Self {
        let sync = Route::new(config.sync);
        match &sync {
            Route::Misconfigured(reason) => tracing::error!(reason, "/sync is misconfigured: it answers 500"),
            Route::Off => tracing::info!("/sync is off: CLERK_SECRET_KEY is not set"),
            Route::On(_) => {}
        }
        Self {
            verifier: Verifier::new(config.secrets),
            store,
            options: Options { store_clerk_data: config.store_clerk_data },
            mirror: MirrorGuard::default(),
            sync,
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

    /// Answers one request at the current time.
    pub async fn handle(&self, request: Request) -> Response<Body> {
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        self.handle_at_ms(request, now_ms).await
    }

    /// Answers one request as if the clock read `now` (unix seconds).
    pub async fn handle_at(&self, request: Request, now: i64) -> Response<Body> {
        self.handle_at_ms(request, now.saturating_mul(1000)).await
    }

    /// Answers one request as if the clock read `now_ms` (unix milliseconds).
    pub async fn handle_at_ms(&self, request: Request, now_ms: i64) -> Response<Body> {
        let path = request.uri().path();
        // API Gateway's REST API puts the stage in front of the path (`/Prod/webhooks/clerk`).
        let is = |route: &str| path == route || path.ends_with(route);
        let mut answer = if is(webhook::ROUTE) {
            let mut log = webhook::LogLine::default();
            let context = webhook::Context {
                verifier: &self.verifier,
                store: &self.store,
                options: self.options,
                mirror: &self.mirror,
            };
            let answer = webhook::answer(context, &request, now_ms.div_euclid(1000), &mut log).await;
            log.emit(answer.status());
            answer
        } else if is(sync::ROUTE) {
            let mut log = sync::LogLine::default();
            let context = sync::Context { store: &self.store, options: self.options, mirror: &self.mirror };
            let answer = sync::answer(&self.sync, context, &request, now_ms, &mut log).await;
            log.emit(answer.status());
            answer
        } else {
            let answer = error(StatusCode::NOT_FOUND, "not found");
            tracing::warn!(outcome = "refused", reason = "unknown path", status = 404, "request");
            answer
        };
        // Nothing this function answers may be cached: every answer is of the moment.
        answer.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        answer
    }
}

/// Why a planned write was not stored.
pub(crate) enum Failure {
    Store(StoreError),
    /// The table mirrors another Clerk instance than the one that sent this delivery or token.
    OtherInstance {
        recorded: String,
        delivered: String,
    },
}

/// The Clerk instance the table mirrors, once this function instance has recorded or found it
/// (one PutItem per cold start; see `store::Mirror`).
#[derive(Default)]
pub struct MirrorGuard {
    mirrored: OnceLock<String>,
}

impl MirrorGuard {
    /// Every delivery and every `/sync` token that names its Clerk instance is compared with the
    /// instance the table mirrors. The first of each cold start records it (one PutItem), or finds
    /// that the table mirrors another: two instances writing one table would mix their users, so
    /// what comes from another instance is refused, every time, warm or cold.
    pub(crate) async fn check(
        &self,
        store: &Store,
        options: Options,
        instance_id: Option<&str>,
    ) -> Result<(), Failure> {
        let Some(instance_id) = instance_id else { return Ok(()) };
        let mirrored = match self.mirrored.get() {
            Some(mirrored) => mirrored,
            None => {
                let mirror =
                    Mirror { instance_id: instance_id.to_owned(), store_clerk_data: Some(options.store_clerk_data) };
                let recorded = match store.record_mirror(&mirror).await.map_err(Failure::Store)? {
                    Recorded::Same => mirror.instance_id,
                    Recorded::Other(recorded) => recorded.instance_id,
                };
                self.mirrored.get_or_init(|| recorded)
            }
        };
        same_instance(mirrored, instance_id)
    }

    /// For `/sync`: compares the token's instance with the one the table mirrors, and never
    /// records one. A token proves only that someone holds a key `CLERK_JWT_KEY` trusts, which
    /// might be another instance's: recording from it could lock the table to that instance and
    /// refuse every webhook. With no record yet, nothing is compared (and a token of another
    /// instance than `CLERK_SECRET_KEY`'s finds no such user in Clerk: 404, nothing written).
    pub(crate) async fn compare(&self, store: &Store, instance_id: Option<&str>) -> Result<(), Failure> {
        let Some(instance_id) = instance_id else { return Ok(()) };
        let mirrored = match self.mirrored.get() {
            Some(mirrored) => mirrored,
            None => match store.mirror().await.map_err(Failure::Store)? {
                Some(recorded) => self.mirrored.get_or_init(|| recorded.instance_id),
                None => return Ok(()),
            },
        };
        same_instance(mirrored, instance_id)
    }
}

fn same_instance(mirrored: &str, instance_id: &str) -> Result<(), Failure> {
    if mirrored == instance_id {
        Ok(())
    } else {
        Err(Failure::OtherInstance { recorded: mirrored.to_owned(), delivered: instance_id.to_owned() })
    }
}

pub(crate) fn error(status: StatusCode, message: &str) -> Response<Body> {
    respond(status, &json!({ "error": message }))
}

pub(crate) fn respond(status: StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    response
}
