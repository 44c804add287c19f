//! The function's log lines: `lambda_http`'s default subscriber (level from `AWS_LAMBDA_LOG_LEVEL`
//! or `RUST_LOG`, JSON with `AWS_LAMBDA_LOG_FORMAT=JSON`), with one addition: a line carrying a
//! metric document in its `emf` field (see [`crate::metrics`]) becomes a CloudWatch Embedded
//! Metric Format document. The document's members are lifted to the top level of the line, beside
//! `level` and `fields` (which keep the line as it was, less `emf`), and its directives get the
//! namespace (`METRICS_NAMESPACE`, by default `clerk-sync`) and the line its `Timestamp`.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use lambda_http::tracing::subscriber::filter::{EnvFilter, LevelFilter};
use lambda_http::tracing::subscriber::fmt::format::{Format, Json, JsonFields, Writer};
use lambda_http::tracing::subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use lambda_http::tracing::subscriber::registry::LookupSpan;
use serde_json::{Value, json};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};

/// The namespace when `METRICS_NAMESPACE` is not set.
pub const DEFAULT_NAMESPACE: &str = "clerk-sync";

/// Logs to standard output, which Lambda sends to CloudWatch Logs.
pub fn init() {
    init_with_writer(std::io::stdout);
}

/// Logs to `writer` (the tests capture the function's lines into files).
pub fn init_with_writer<W>(writer: W)
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL").or_else(|_| std::env::var("RUST_LOG"));
    let level = LevelFilter::from_str(level.as_deref().unwrap_or("INFO")).unwrap_or(LevelFilter::INFO);
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    let builder = lambda_http::tracing::subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_env_filter(filter)
        .with_writer(writer);
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        crate::metrics::enable();
        let namespace = std::env::var("METRICS_NAMESPACE")
            .ok()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        let inner = lambda_http::tracing::subscriber::fmt::format().json().with_target(false).without_time();
        builder.fmt_fields(JsonFields::new()).event_format(Emf { inner, namespace }).init();
    } else {
        builder.init();
    }
}

/// The JSON event format, lifting a line's metric document to its top level.
struct Emf {
    inner: Format<Json, ()>,
    namespace: String,
}

impl<S, N> FormatEvent<S, N> for Emf
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let mut found = FindEmf(None);
        event.record(&mut found);
        let Some(document) = found.0 else { return self.inner.format_event(ctx, writer, event) };
        let mut line = String::new();
        self.inner.format_event(ctx, Writer::new(&mut line), event)?;
        match lift(&line, &document, &self.namespace, now_ms()) {
            Some(lifted) => writeln!(writer, "{lifted}"),
            None => writer.write_str(&line),
        }
    }
}

/// The line `line` (JSON) with `document`'s members at its top level and no `fields.emf`.
fn lift(line: &str, document: &str, namespace: &str, timestamp: u64) -> Option<String> {
    let Ok(Value::Object(mut line)) = serde_json::from_str::<Value>(line) else { return None };
    let Ok(Value::Object(document)) = serde_json::from_str::<Value>(document) else { return None };
    if let Some(Value::Object(fields)) = line.get_mut("fields") {
        fields.remove("emf");
    }
    for (name, value) in document {
        line.insert(name, value);
    }
    if let Some(Value::Object(aws)) = line.get_mut("_aws") {
        aws.insert("Timestamp".into(), json!(timestamp));
        if let Some(Value::Array(directives)) = aws.get_mut("CloudWatchMetrics") {
            for directive in directives.iter_mut().filter_map(Value::as_object_mut) {
                directive.insert("Namespace".into(), json!(namespace));
            }
        }
    }
    serde_json::to_string(&line).ok()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

struct FindEmf(Option<String>);

impl Visit for FindEmf {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "emf" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "emf" {
            // `emf = %document` records through Display, which reaches here as Debug of a Display.
            self.0 = Some(format!("{value:?}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_goes_to_the_top_level_with_namespace_and_timestamp() {
        let line = r#"{"level":"INFO","fields":{"message":"delivery","status":200,"emf":"{}"}}"#;
        let document = r#"{"_aws":{"CloudWatchMetrics":[{"Dimensions":[["Route"]],"Metrics":[{"Name":"Requests","Unit":"Count"}]}]},"Route":"webhook","Requests":1}"#;
        let lifted: Value = serde_json::from_str(&lift(line, document, "ns", 42).unwrap()).unwrap();
        assert_eq!(lifted["fields"], json!({ "message": "delivery", "status": 200 }));
        assert_eq!(lifted["Route"], "webhook");
        assert_eq!(lifted["_aws"]["Timestamp"], 42);
        assert_eq!(lifted["_aws"]["CloudWatchMetrics"][0]["Namespace"], "ns");
    }
}
