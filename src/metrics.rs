//! CloudWatch metrics in the one log line of each request, in the Embedded Metric Format (EMF):
//! CloudWatch Logs turns the line into metrics as it ingests it, so there is no metrics client, no
//! extra request and nothing at init (a hand-written document, no crate).
//!
//! Two halves:
//! - [`Request::document`] builds the namespace-independent part of a request's metric document
//!   (its dimensions, metric names, units and values), which a route's log line carries in its
//!   `emf` field (`tracing::info!(emf = %document, ...)`);
//! - the log formatter ([`crate::logging`]) lifts that document to the top level of the JSON log
//!   line, where EMF wants it, and adds the namespace (`METRICS_NAMESPACE`) and the timestamp.
//!
//! The DynamoDB capacity each request consumed is counted by [`counting`]: every request the store
//! makes asks for `ReturnConsumedCapacity` and adds what DynamoDB reports to the tally of the
//! request it serves.
//!
//! A route adds its metrics in three steps (as `crate::webhook` does):
//! 1. wrap its DynamoDB work: `let (result, units) = metrics::counting(work).await;`, timing it
//!    for `store_ms` (every store request already asks for and records its consumed capacity; a
//!    request of its own must call `.return_consumed_capacity(ReturnConsumedCapacity::Indexes)`
//!    and pass what comes back to `record_write` / `record_read`);
//! 2. fill a [`Request`] (`route: "sync"`, its outcome, a [`reason`] class for refusals);
//! 3. log it in the request's one line, only when [`enabled`]:
//!    `let emf = metrics::enabled().then(|| request.document().to_string());` and
//!    `tracing::info!(..., emf = emf.as_deref(), "sync")`.
//!
//! Metrics (namespace `METRICS_NAMESPACE`, by default `clerk-sync`):
//!
//! | metric | unit | dimension sets | value |
//! |---|---|---|---|
//! | `Requests` | Count | `[Route]`, `[Route, Outcome]`, `[Route, EventType]`, and for refusals `[Route, Reason]` | 1 |
//! | `WriteUnits` | Count | `[Route]`, `[Route, EventType]` | write units DynamoDB reported consumed (table and indexes) |
//! | `StoreLatency` | Milliseconds | `[Route]` | time spent on DynamoDB, when the request reached it |
//! | `IndexWriteUnits` | Count | `[Route]` | the part of `WriteUnits` spent on the indexes (left out when 0) |
//! | `ReadUnits` | Count | `[Route]` | read units DynamoDB reported consumed: a deletion's queries (left out when 0) |
//! | `InvalidWrites` | Count | `[Route]` | 1 when DynamoDB refused a write as invalid (its skeleton was written, or a 500) |
//!
//! `Route` is `webhook` or `sync`; `Outcome` the log line's outcome, or `failed` for every 5xx;
//! `EventType` the Clerk event type (`none` when the request never got that far); `Reason` one of
//! the [`reason`] classes. A write its condition refuses (a duplicate or stale delivery) is charged
//! by DynamoDB like any write (1 unit when no item exists, otherwise the stored item's size) but
//! DynamoDB's error does not report it: `WriteUnits` counts what DynamoDB reported.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::ConsumedCapacity;
use serde_json::{Map, Value, json};

/// The refusal classes of the `Reason` dimension.
pub mod reason {
    /// No signature matches, or the signature headers are missing or malformed (401).
    pub const SIGNATURE: &str = "signature";
    /// The signed timestamp is outside the tolerance, or not a timestamp (401).
    pub const TIMESTAMP: &str = "timestamp";
    /// Verified, but not an event (or request) the function can read (400).
    pub const PARSE: &str = "parse";
    /// The body is above the limit (413).
    pub const SIZE: &str = "size";
    /// Wrong method, content type or path (405, 415, 404).
    pub const REQUEST: &str = "request";
    /// DynamoDB failed, timed out or refused the write (5xx).
    pub const STORE: &str = "store";
    /// The table mirrors another Clerk instance (500).
    pub const INSTANCE: &str = "instance";
    /// `/sync`: the session token is refused (401) or its origin is not authorized (403).
    pub const TOKEN: &str = "token";
    /// `/sync`: Clerk failed, was slow, rate-limited us or refused our key (5xx, 429).
    pub const CLERK: &str = "clerk";
    /// `/sync`: the caller synced moments ago (429 within the per-user window).
    pub const WINDOW: &str = "window";
    /// Anything else a route refuses (its own 4xx).
    pub const OTHER: &str = "other";
}

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether log lines carry metric documents: only with JSON logs (`AWS_LAMBDA_LOG_FORMAT=JSON`,
/// which the template sets), since EMF is JSON. Set by [`crate::logging`] at init.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Capacity units DynamoDB reported consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    /// Write units, table and indexes together.
    pub write: f64,
    /// The part of `write` spent on global secondary indexes.
    pub index_write: f64,
    /// Read units.
    pub read: f64,
}

type Tally = Arc<Mutex<Option<Units>>>;

tokio::task_local! {
    static TALLY: Tally;
}

/// Runs `work`, adding up the capacity DynamoDB reports for every request the store makes within
/// it (tasks it spawns included, see [`current`]). `None` when DynamoDB reported nothing (no
/// request, only failed ones, or a local DynamoDB API that does not report capacity).
pub async fn counting<F: Future>(work: F) -> (F::Output, Option<Units>) {
    let tally = Tally::default();
    let output = TALLY.scope(tally.clone(), work).await;
    let units = *tally.lock().unwrap_or_else(|e| e.into_inner());
    (output, units)
}

/// The tally of the request being served, for work spawned on other tasks ([`within`]).
pub(crate) fn current() -> Option<Tally> {
    TALLY.try_with(Tally::clone).ok()
}

/// Runs `work` adding to `tally` (from [`current`]), if any.
pub(crate) async fn within<F: Future>(tally: Option<Tally>, work: F) -> F::Output {
    match tally {
        Some(tally) => TALLY.scope(tally, work).await,
        None => work.await,
    }
}

fn add(units: Units) {
    let _ = TALLY.try_with(|tally| {
        let mut tally = tally.lock().unwrap_or_else(|e| e.into_inner());
        let sum = tally.get_or_insert_with(Units::default);
        sum.write += units.write;
        sum.index_write += units.index_write;
        sum.read += units.read;
    });
}

/// Adds what a write request (PutItem, TransactWriteItems, BatchWriteItem) consumed.
pub(crate) fn record_write<'a>(consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
    for capacity in consumed {
        let total = capacity.capacity_units.or(capacity.write_capacity_units).unwrap_or(0.0);
        let index_write = capacity
            .global_secondary_indexes
            .iter()
            .flatten()
            .map(|(_, c)| c.capacity_units.or(c.write_capacity_units).unwrap_or(0.0))
            .sum();
        add(Units { write: total, index_write, read: 0.0 });
    }
}

/// Adds what a read request (Query) consumed.
pub(crate) fn record_read<'a>(consumed: impl IntoIterator<Item = &'a ConsumedCapacity>) {
    for capacity in consumed {
        let read = capacity.capacity_units.or(capacity.read_capacity_units).unwrap_or(0.0);
        add(Units { read, ..Units::default() });
    }
}

/// What one request's metric document says. Independent of the namespace, which the log formatter
/// adds: a route fills this in and logs [`Request::document`] in its log line's `emf` field.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `webhook` or `sync`.
    pub route: &'static str,
    /// The HTTP status answered: every 5xx counts under the outcome `failed`.
    pub status: u16,
    /// The log line's outcome (`applied`, `duplicate`, `stale`, `ignored`, `refused`, ...).
    pub outcome: &'a str,
    /// The Clerk event type, if the request got that far.
    pub event_type: Option<&'a str>,
    /// For a refusal (4xx or 5xx), its class: one of [`reason`].
    pub reason: Option<&'static str>,
    /// Milliseconds spent on DynamoDB, if the request reached it.
    pub store_ms: Option<f64>,
    /// Capacity DynamoDB reported consumed, if any (see [`counting`]).
    pub units: Option<Units>,
    /// Whether DynamoDB refused a write as invalid.
    pub invalid_write: bool,
}

impl Request<'_> {
    /// The metric document: `{"_aws": {"CloudWatchMetrics": [...]}, "Route": ..., "Requests": 1, ...}`,
    /// without `Namespace` and `Timestamp` (see [`crate::logging`]). Event types are Clerk's own
    /// names (a short, fixed set), never anything a caller chooses freely: a dimension value makes
    /// a metric of its own, and CloudWatch bills each.
    pub fn document(&self) -> Value {
        let outcome = if self.status >= 500 { "failed" } else { self.outcome };
        let event_type = self.event_type.filter(|t| is_event_type(t)).unwrap_or("none");
        let mut root = Map::new();
        root.insert("Route".into(), json!(self.route));
        root.insert("Outcome".into(), json!(outcome));
        root.insert("EventType".into(), json!(event_type));
        root.insert("Requests".into(), json!(1));

        let mut request_sets = vec![json!(["Route"]), json!(["Route", "Outcome"]), json!(["Route", "EventType"])];
        if let Some(reason) = self.reason {
            root.insert("Reason".into(), json!(reason));
            request_sets.push(json!(["Route", "Reason"]));
        }
        let mut directives =
            vec![json!({ "Dimensions": request_sets, "Metrics": [{ "Name": "Requests", "Unit": "Count" }] })];

        // Write units by event type (what each kind of event costs); the rest by route only: each
        // dimension value makes a metric of its own, and CloudWatch bills every metric monthly.
        let mut by_route = Vec::new();
        if let Some(ms) = self.store_ms {
            root.insert("StoreLatency".into(), json!(round(ms)));
            by_route.push(json!({ "Name": "StoreLatency", "Unit": "Milliseconds" }));
        }
        if let Some(units) = self.units {
            root.insert("WriteUnits".into(), json!(units.write));
            let metrics = [json!({ "Name": "WriteUnits", "Unit": "Count" })];
            directives.push(json!({ "Dimensions": [["Route"], ["Route", "EventType"]], "Metrics": metrics }));
            // Zeros of the rarer two are left out: every byte of the line is paid for as log ingestion.
            for (name, value) in [("IndexWriteUnits", units.index_write), ("ReadUnits", units.read)] {
                if value != 0.0 {
                    root.insert(name.into(), json!(value));
                    by_route.push(json!({ "Name": name, "Unit": "Count" }));
                }
            }
        }
        if self.invalid_write {
            root.insert("InvalidWrites".into(), json!(1));
            by_route.push(json!({ "Name": "InvalidWrites", "Unit": "Count" }));
        }
        if !by_route.is_empty() {
            directives.push(json!({ "Dimensions": [["Route"]], "Metrics": by_route }));
        }
        root.insert("_aws".into(), json!({ "CloudWatchMetrics": directives }));
        Value::Object(root)
    }
}

/// The reason class of an HTTP refusal, from its status alone (401 is refined by the verifier).
pub fn reason_of_status(status: u16) -> Option<&'static str> {
    match status {
        0..=399 => None,
        400 => Some(reason::PARSE),
        401 => Some(reason::SIGNATURE),
        404 | 405 | 415 => Some(reason::REQUEST),
        413 => Some(reason::SIZE),
        500.. => Some(reason::STORE),
        _ => Some(reason::OTHER),
    }
}

/// Clerk's event types are dotted lowercase words (`organizationMembership.created`): anything
/// else is not used as a dimension value.
fn is_event_type(text: &str) -> bool {
    text.len() <= 64 && text.contains('.') && text.bytes().all(|b| b.is_ascii_alphabetic() || b == b'.' || b == b'_')
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            route: "webhook",
            status: 200,
            outcome: "applied",
            event_type: Some("user.updated"),
            reason: None,
            store_ms: Some(4.25),
            units: Some(Units { write: 2.0, index_write: 1.0, read: 0.0 }),
            invalid_write: false,
        }
    }

    #[test]
    fn every_metric_named_in_a_directive_has_its_value_and_every_dimension_its_value() {
        for r in [
            request(),
            Request {
                status: 401,
                outcome: "refused",
                reason: Some(reason::SIGNATURE),
                event_type: None,
                store_ms: None,
                units: None,
                ..request()
            },
            Request { status: 503, outcome: "refused", reason: Some(reason::STORE), invalid_write: true, ..request() },
        ] {
            let doc = r.document();
            for directive in doc["_aws"]["CloudWatchMetrics"].as_array().unwrap() {
                for metric in directive["Metrics"].as_array().unwrap() {
                    assert!(doc[metric["Name"].as_str().unwrap()].is_number(), "{doc}");
                }
                for set in directive["Dimensions"].as_array().unwrap() {
                    for dimension in set.as_array().unwrap() {
                        assert!(doc[dimension.as_str().unwrap()].is_string(), "{doc}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_5xx_is_failed_and_unknown_event_types_are_none() {
        let doc = Request { status: 503, event_type: Some("x y"), ..request() }.document();
        assert_eq!(doc["Outcome"], "failed");
        assert_eq!(doc["EventType"], "none");
        assert_eq!(request().document()["EventType"], "user.updated");
    }

    #[tokio::test]
    async fn counting_adds_what_each_request_reports_across_spawned_tasks() {
        let capacity = ConsumedCapacity::builder().capacity_units(2.0).build();
        let ((), units) = counting(async {
            record_write([&capacity]);
            let tally = current();
            let capacity = capacity.clone();
            tokio::spawn(within(tally, async move { record_write([&capacity]) })).await.unwrap();
            record_read([&ConsumedCapacity::builder().capacity_units(0.5).build()]);
        })
        .await;
        assert_eq!(units, Some(Units { write: 4.0, index_write: 0.0, read: 0.5 }));
        let ((), nothing) = counting(async {}).await;
        assert_eq!(nothing, None);
    }
}
