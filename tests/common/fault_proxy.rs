//! A fault-injecting HTTP proxy between the function's DynamoDB client and the local DynamoDB
//! API. Each request it receives is passed through or met with a fault: dropped before it reaches
//! DynamoDB, stalled, answered 500 or with a throttling, transaction conflict or validation error,
//! or forwarded (so the write is applied) and its answer dropped.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request and return DynamoDB's answer.
    Pass,
    /// Close the connection without forwarding: DynamoDB never sees the request.
    Drop,
    /// Hold the request without answering, for longer than any client timeout.
    Stall,
    /// Answer 500 InternalServerError without forwarding.
    ServerError,
    /// Answer 400 ProvisionedThroughputExceededException without forwarding.
    ProvisionedThroughputExceeded,
    /// Answer 400 ThrottlingException without forwarding.
    Throttling,
    /// Answer 400 TransactionConflictException without forwarding: the item was taking part in a
    /// transaction at that moment.
    TransactionConflict,
    /// Answer 400 ValidationException without forwarding: DynamoDB refused the request as invalid.
    Validation,
    /// Answer 400 ExpiredTokenException without forwarding: the caller's credentials ran out.
    ExpiredToken,
    /// For a BatchWriteItem, process only the requests whose key's `pk` starts with this prefix
    /// and answer the others as `UnprocessedItems`, as DynamoDB does under throttling; any other
    /// request passes.
    ProcessOnly(&'static str),
    /// Forward the request (DynamoDB applies it), then close the connection instead of answering.
    DropResponse,
    /// Hold the request this long, then forward it (DynamoDB applies it) whether or not the client
    /// is still waiting: an attempt that reaches DynamoDB after its client gave up on it.
    Late(Duration),
    /// Close the connection without forwarding a request whose head contains the first string
    /// (the operation, as in `X-Amz-Target: DynamoDB_20120810.Query`) and whose body contains the
    /// second; forward any other.
    DropWhere(&'static str, &'static str),
}

struct Plan {
    next: VecDeque<Fault>,
    otherwise: Fault,
}

pub struct FaultProxy {
    address: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    requests: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

impl FaultProxy {
    /// Starts a proxy to the DynamoDB API at `upstream` (an `http://host:port` URL).
    pub async fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.trim_start_matches("http://").parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let plan = Arc::new(Mutex::new(Plan { next: VecDeque::new(), otherwise: Fault::Pass }));
        let requests = Arc::new(AtomicUsize::new(0));
        let forwarded = Arc::new(AtomicUsize::new(0));
        let (p, r, f) = (plan.clone(), requests.clone(), forwarded.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (p, r, f) = (p.clone(), r.clone(), f.clone());
                tokio::spawn(async move { serve(client, upstream, p, r, f).await });
            }
        });
        Self { address, plan, requests, forwarded }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The fault for every request from now on (after any queued with `then`).
    pub fn always(&self, fault: Fault) {
        let mut plan = self.plan.lock().unwrap();
        plan.next.clear();
        plan.otherwise = fault;
    }

    /// Faults for the next requests, one each, before the standing one applies again.
    pub fn then(&self, faults: &[Fault]) {
        self.plan.lock().unwrap().next.extend(faults);
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Requests that reached DynamoDB so far.
    pub fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    plan: Arc<Mutex<Plan>>,
    requests: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
) {
    // One request after another on a kept-alive connection.
    while let Some(request) = read_message(&mut client).await {
        requests.fetch_add(1, Ordering::SeqCst);
        let fault = {
            let mut plan = plan.lock().unwrap();
            let otherwise = plan.otherwise;
            plan.next.pop_front().unwrap_or(otherwise)
        };
        let answer = match fault {
            Fault::ProcessOnly(prefix) => match split_batch(&request, prefix) {
                None => match forward(&request, upstream).await {
                    Some(answer) => answer,
                    None => return,
                },
                Some((kept, unprocessed)) => {
                    if let Some(kept) = kept {
                        if forward(&kept, upstream).await.is_none() {
                            return;
                        }
                        forwarded.fetch_add(1, Ordering::SeqCst);
                    }
                    json_answer(&serde_json::json!({ "UnprocessedItems": unprocessed }).to_string())
                }
            },
            Fault::Pass | Fault::DropResponse => {
                let Some(answer) = forward(&request, upstream).await else { return };
                forwarded.fetch_add(1, Ordering::SeqCst);
                if fault == Fault::DropResponse {
                    return;
                }
                answer
            }
            Fault::Drop => return,
            Fault::Late(delay) => {
                tokio::time::sleep(delay).await;
                let Some(answer) = forward(&request, upstream).await else { return };
                forwarded.fetch_add(1, Ordering::SeqCst);
                answer
            }
            Fault::DropWhere(head, body) => {
                let text = String::from_utf8_lossy(&request);
                if text.to_ascii_lowercase().contains(&head.to_ascii_lowercase()) && text.contains(body) {
                    return;
                }
                let Some(answer) = forward(&request, upstream).await else { return };
                forwarded.fetch_add(1, Ordering::SeqCst);
                answer
            }
            Fault::Stall => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            Fault::ServerError => error_answer(500, "InternalServerError"),
            Fault::ProvisionedThroughputExceeded => error_answer(400, "ProvisionedThroughputExceededException"),
            Fault::Throttling => error_answer(400, "ThrottlingException"),
            Fault::TransactionConflict => error_answer(400, "TransactionConflictException"),
            Fault::Validation => error_answer(400, "ValidationException"),
            Fault::ExpiredToken => error_answer(400, "ExpiredTokenException"),
        };
        if client.write_all(&answer).await.is_err() {
            return;
        }
    }
}

/// A BatchWriteItem request split by `pk` prefix: the request carrying only the matching writes
/// (`None` when none match), and the others as `UnprocessedItems`. `None` for any other request.
fn split_batch(request: &[u8], prefix: &str) -> Option<(Option<Vec<u8>>, serde_json::Value)> {
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    if !head.to_ascii_lowercase().contains("dynamodb_20120810.batchwriteitem") {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(&request[head_end..]).ok()?;
    let mut unprocessed = serde_json::Map::new();
    let mut any_kept = false;
    for (table, writes) in body["RequestItems"].as_object_mut()? {
        let (kept, rest): (Vec<_>, Vec<_>) = writes.as_array()?.iter().cloned().partition(|write| {
            let key = write.get("DeleteRequest").or_else(|| write.get("PutRequest")).map(|w| &w["Key"]);
            key.and_then(|k| k["pk"]["S"].as_str()).is_some_and(|pk| pk.starts_with(prefix))
        });
        any_kept |= !kept.is_empty();
        if !rest.is_empty() {
            unprocessed.insert(table.clone(), serde_json::Value::Array(rest));
        }
        *writes = serde_json::Value::Array(kept);
    }
    body["RequestItems"].as_object_mut()?.retain(|_, writes| writes.as_array().is_some_and(|w| !w.is_empty()));
    let kept = any_kept.then(|| {
        let body = body.to_string();
        let head: String = head
            .trim_end()
            .lines()
            .filter(|line| !line.to_ascii_lowercase().starts_with("content-length:"))
            .map(|line| format!("{line}\r\n"))
            .collect();
        format!("{head}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
    });
    Some((kept, serde_json::Value::Object(unprocessed)))
}

fn json_answer(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn error_answer(status: u16, error_type: &str) -> Vec<u8> {
    let body = format!(
        r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{error_type}","message":"injected by the test proxy"}}"#
    );
    let reason = if status == 500 { "Internal Server Error" } else { "Bad Request" };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Sends one request to DynamoDB on a connection of its own and returns the whole answer.
async fn forward(request: &[u8], upstream: SocketAddr) -> Option<Vec<u8>> {
    let mut connection = TcpStream::connect(upstream).await.ok()?;
    connection.write_all(request).await.ok()?;
    read_message(&mut connection).await
}

/// Reads one HTTP/1.1 message (head and a content-length body) off a stream.
async fn read_message(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = message.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        message.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&message[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while message.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        message.extend_from_slice(&chunk[..n]);
    }
    Some(message)
}
