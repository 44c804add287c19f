//! The table's stream as the local DynamoDB API (moto) records it, and the template's filter
//! patterns applied to its records as Lambda's event filtering does, so that a test can hand the
//! cleanup function exactly the records its event source mapping would.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestTable, required_env};

/// The filter patterns of the template's stream event (`scripts/table.py stream-filters`). Each
/// must name the record's `dynamodb` key alone: "DynamoDB event source mappings only support
/// filtering on the `dynamodb` key" (Lambda's "Using event filtering with a DynamoDB event
/// source"), so a pattern on `eventName`, say, would not filter as it reads.
pub fn filters() -> Vec<Value> {
    let path = required_env("CLERK_SYNC_STREAM_FILTERS");
    let patterns: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).expect("a JSON list of patterns");
    for pattern in &patterns {
        let keys: Vec<&String> = pattern.as_object().expect("a pattern is an object").keys().collect();
        assert_eq!(keys, ["dynamodb"], "a DynamoDB stream filter names the `dynamodb` key only: {pattern}");
    }
    patterns
}

/// Every record of `table`'s stream so far, in order, as Lambda hands them to a function: the
/// stream's record (`eventName`, `dynamodb` with `Keys`, `NewImage`, `OldImage`, ...) with the
/// stream's ARN as `eventSourceARN`.
pub async fn records(table: &TestTable) -> Vec<Value> {
    let described = table.client.describe_table().table_name(&table.name).send().await.unwrap();
    let arn = described.table().and_then(|t| t.latest_stream_arn()).expect("the table has a stream").to_owned();
    let endpoint = table.endpoint();
    let stream = call(endpoint, "DescribeStream", json!({ "StreamArn": arn })).await;
    let mut records = Vec::new();
    for shard in stream["StreamDescription"]["Shards"].as_array().expect("shards") {
        let request = json!({ "StreamArn": arn, "ShardId": shard["ShardId"], "ShardIteratorType": "TRIM_HORIZON" });
        let mut iterator = call(endpoint, "GetShardIterator", request).await["ShardIterator"].clone();
        while iterator.is_string() {
            let page = call(endpoint, "GetRecords", json!({ "ShardIterator": iterator, "Limit": 1000 })).await;
            let got = page["Records"].as_array().cloned().unwrap_or_default();
            if got.is_empty() {
                break;
            }
            records.extend(got.into_iter().map(|mut record| {
                record["eventSourceARN"] = json!(arn);
                record
            }));
            iterator = page["NextShardIterator"].clone();
        }
    }
    records
}

/// Whether any of `patterns` matches `event`, by the rules of Lambda's event filtering (those of
/// EventBridge patterns): every field a pattern names must be in the event; a list of values
/// matches a value equal to one of them or, for `{"prefix": ...}`, starting with it. An operator
/// this function does not know fails the test rather than match or not by guess.
pub fn passes(patterns: &[Value], event: &Value) -> bool {
    patterns.iter().any(|pattern| matches(pattern, event))
}

fn matches(pattern: &Value, event: &Value) -> bool {
    match pattern {
        Value::Object(fields) => {
            fields.iter().all(|(name, inner)| event.get(name).is_some_and(|value| matches(inner, value)))
        }
        Value::Array(alternatives) => {
            let values = match event {
                Value::Array(values) => values.clone(),
                value => vec![value.clone()],
            };
            values.iter().any(|value| alternatives.iter().any(|alternative| matches_one(alternative, value)))
        }
        other => panic!("a pattern's leaves are lists of values, not {other}"),
    }
}

fn matches_one(alternative: &Value, value: &Value) -> bool {
    match alternative {
        Value::Object(operator) => match (operator.get("prefix"), operator.len()) {
            (Some(Value::String(prefix)), 1) => value.as_str().is_some_and(|v| v.starts_with(prefix.as_str())),
            _ => panic!("an operator this test does not evaluate: {alternative}"),
        },
        Value::Array(_) => panic!("a list inside a list of values: {alternative}"),
        literal => literal == value,
    }
}

/// One DynamoDB Streams request to the local API, which takes any signature.
async fn call(endpoint: &str, operation: &str, body: Value) -> Value {
    let address = endpoint.trim_start_matches("http://");
    let body = body.to_string();
    let request = format!(
        "POST / HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-amz-json-1.0\r\n\
         x-amz-target: DynamoDBStreams_20120810.{operation}\r\n\
         authorization: AWS4-HMAC-SHA256 Credential=local/20261208/us-east-1/dynamodb/aws4_request, \
         SignedHeaders=host, Signature=0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut connection = TcpStream::connect(address).await.unwrap();
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    connection.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{operation}: {head}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{operation}: {e}: {body}"))
}
