//! Shared by the integration tests: a real DynamoDB API (the moto server `scripts/test` starts),
//! tables created from template.yaml's definition, and real API Gateway events signed like Svix.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod fake_clerk;
pub mod fault_proxy;
pub mod history;
pub mod stream;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, StreamSpecification, StreamViewType,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use clerk_sync::config::{Config, SyncConfig};
use clerk_sync::handler::App;
use clerk_sync::store::{self, Store};
use clerk_sync::verify::SigningSecret;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the integration tests need the local DynamoDB API that `scripts/test` starts")
    })
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The local test secret the sample events are signed with (`events/env.json`).
pub fn local_secret() -> String {
    let env: Value = serde_json::from_str(&std::fs::read_to_string(repo_path("events/env.json")).unwrap()).unwrap();
    env["SyncFunction"]["CLERK_WEBHOOK_SIGNING_SECRET"].as_str().unwrap().to_owned()
}

/// A DynamoDB client for `endpoint` with the production timeouts and retries.
pub fn client_for(endpoint: &str) -> Client {
    client_with(endpoint, store::timeout_config())
}

/// A client that waits as long as the local DynamoDB API's queue takes (one request at a time),
/// for load and for reading whole tables back; the production timeouts are tested in faults.rs.
pub fn patient_client_for(endpoint: &str) -> Client {
    let timeouts = aws_sdk_dynamodb::config::timeout::TimeoutConfig::builder()
        .operation_attempt_timeout(std::time::Duration::from_secs(30))
        .build();
    client_with(endpoint, timeouts)
}

/// A DynamoDB client for `endpoint` with the production retries and `timeouts`.
fn client_with(endpoint: &str, timeouts: aws_sdk_dynamodb::config::timeout::TimeoutConfig) -> Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("local", "local", None, None, "clerk-sync-tests"))
        .timeout_config(timeouts)
        .retry_config(store::retry_config())
        .build();
    Client::from_conf(config)
}

pub fn client() -> Client {
    client_for(&required_env("CLERK_SYNC_DYNAMODB_ENDPOINT"))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TableDefinition {
    attribute_definitions: Vec<AttributeDef>,
    key_schema: Vec<KeyDef>,
    #[serde(default)]
    global_secondary_indexes: Vec<IndexDef>,
    billing_mode: String,
    stream_specification: StreamDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamDef {
    stream_view_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AttributeDef {
    attribute_name: String,
    attribute_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyDef {
    attribute_name: String,
    key_type: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IndexDef {
    index_name: String,
    key_schema: Vec<KeyDef>,
    projection: ProjectionDef,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProjectionDef {
    projection_type: String,
}

fn keys(defs: &[KeyDef]) -> Vec<KeySchemaElement> {
    defs.iter()
        .map(|k| {
            KeySchemaElement::builder()
                .attribute_name(&k.attribute_name)
                .key_type(KeyType::from(k.key_type.as_str()))
                .build()
                .unwrap()
        })
        .collect()
}

/// A table of its own for one test, created from template.yaml's definition.
pub struct TestTable {
    pub name: String,
    pub client: Client,
    endpoint: String,
}

impl TestTable {
    /// A table on the local DynamoDB API (moto).
    pub async fn create() -> Self {
        Self::create_on(&required_env("CLERK_SYNC_DYNAMODB_ENDPOINT")).await
    }

    /// A table on dynalite, which refuses what DynamoDB refuses (numbers, sizes) but has no
    /// transactions: for PutItem writes and what they store.
    pub async fn on_dynalite() -> Self {
        Self::create_on(&required_env("CLERK_SYNC_DYNALITE_ENDPOINT")).await
    }

    /// A table on moto with the template's stream (`stream::records` reads it).
    pub async fn with_stream() -> Self {
        Self::create_with(&required_env("CLERK_SYNC_DYNAMODB_ENDPOINT"), true).await
    }

    /// The local DynamoDB API this table is on.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    async fn create_on(endpoint: &str) -> Self {
        Self::create_with(endpoint, false).await
    }

    async fn create_with(endpoint: &str, stream: bool) -> Self {
        capture_logs();
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "clerk-sync-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos()
        );
        let path = required_env("CLERK_SYNC_TABLE_DEFINITION");
        let definition: TableDefinition = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let client = client_for(endpoint);
        let attributes = definition.attribute_definitions.iter().map(|a| {
            AttributeDefinition::builder()
                .attribute_name(&a.attribute_name)
                .attribute_type(ScalarAttributeType::from(a.attribute_type.as_str()))
                .build()
                .unwrap()
        });
        let indexes = definition.global_secondary_indexes.iter().map(|i| {
            GlobalSecondaryIndex::builder()
                .index_name(&i.index_name)
                .set_key_schema(Some(keys(&i.key_schema)))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(i.projection.projection_type.as_str()))
                        .build(),
                )
                .build()
                .unwrap()
        });
        client
            .create_table()
            .table_name(&name)
            .set_attribute_definitions(Some(attributes.collect()))
            .set_key_schema(Some(keys(&definition.key_schema)))
            .set_global_secondary_indexes(Some(indexes.collect()))
            .billing_mode(BillingMode::from(definition.billing_mode.as_str()))
            .set_stream_specification(stream.then(|| {
                StreamSpecification::builder()
                    .stream_enabled(true)
                    .stream_view_type(StreamViewType::from(definition.stream_specification.stream_view_type.as_str()))
                    .build()
                    .unwrap()
            }))
            .send()
            .await
            .expect("create the test table");
        Self { name, client, endpoint: endpoint.to_owned() }
    }

    pub fn store(&self) -> Store {
        Store::new(self.client.clone(), &self.name)
    }

    pub fn app(&self) -> App {
        self.app_with(true)
    }

    pub fn app_with(&self, store_clerk_data: bool) -> App {
        App::new(self.config(store_clerk_data), self.store())
    }

    /// The function on this table with a DynamoDB client that waits as long as it takes: for load
    /// tests, where the local DynamoDB API serving one request at a time queues 64 requests in flight
    /// for longer than the production per-attempt timeout. Timeouts themselves are tested in faults.rs.
    pub fn app_patient(&self) -> App {
        App::new(self.config(true), Store::new(patient_client_for(&self.endpoint), &self.name))
    }

    /// The function on this table, its DynamoDB client going through `endpoint` (a proxy).
    pub fn app_via(&self, endpoint: &str) -> App {
        App::new(self.config(true), Store::new(client_for(endpoint), &self.name))
    }

    /// A client on this table's DynamoDB API that waits as long as the local server's queue takes.
    pub fn patient_client(&self) -> Client {
        patient_client_for(&self.endpoint)
    }

    /// A store with the patient client (see [`TestTable::app_patient`]).
    pub fn patient_store(&self) -> Store {
        Store::new(self.patient_client(), &self.name)
    }

    /// A store on this table whose client goes through `endpoint` (a proxy).
    pub fn store_via(&self, endpoint: &str) -> Store {
        Store::new(client_for(endpoint), &self.name)
    }

    /// The function on this table with `store` (for a removal budget or page size of its own).
    pub fn app_with_store(&self, store: Store) -> App {
        App::new(self.config(true), store)
    }

    /// The function on this table with `/sync` configured as `sync`.
    pub fn app_with_sync(&self, sync: SyncConfig) -> App {
        App::new(Config { sync: Some(sync), ..self.config(true) }, self.store())
    }

    /// As [`TestTable::app_with_sync`], its DynamoDB client going through `endpoint`.
    pub fn app_with_sync_via(&self, sync: SyncConfig, endpoint: &str) -> App {
        self.app_with_sync_and_store(sync, Store::new(client_for(endpoint), &self.name))
    }

    /// The function on this table with `/sync` configured as `sync` and `store`.
    pub fn app_with_sync_and_store(&self, sync: SyncConfig, store: Store) -> App {
        App::new(Config { sync: Some(sync), ..self.config(true) }, store)
    }

    fn config(&self, store_clerk_data: bool) -> Config {
        Config {
            secrets: SigningSecret::parse_list(&local_secret()).unwrap(),
            table_name: self.name.clone(),
            store_clerk_data,
            sync: None,
        }
    }

    /// Writes `item` as is, unconditionally (as a writer that never checks would).
    pub async fn put(&self, item: &impl serde::Serialize) {
        let item = store::to_item(item).unwrap();
        self.client.put_item().table_name(&self.name).set_item(Some(item)).send().await.unwrap();
    }

    /// Every item of Clerk's objects (users, sessions, organizations, memberships and their
    /// tombstones), as plain JSON, keyed by (pk, sk): all but the table's record of the Clerk
    /// instance it mirrors (`META`), which `item` still finds.
    pub async fn items(&self) -> BTreeMap<(String, String), Value> {
        let mut items = self.all_items().await;
        items.retain(|(pk, _), _| pk != clerk_sync::store::MIRROR_PK);
        items
    }

    /// Every item, as plain JSON, keyed by (pk, sk).
    pub async fn all_items(&self) -> BTreeMap<(String, String), Value> {
        let mut items = BTreeMap::new();
        let mut pages =
            patient_client_for(&self.endpoint).scan().table_name(&self.name).into_paginator().items().send();
        while let Some(item) = pages.next().await {
            let item: Value = serde_dynamo::aws_sdk_dynamodb_1::from_item(item.unwrap()).unwrap();
            let key = (item["pk"].as_str().unwrap().to_owned(), item["sk"].as_str().unwrap().to_owned());
            items.insert(key, item);
        }
        items
    }

    pub async fn item(&self, pk: &str, sk: &str) -> Option<Value> {
        self.all_items().await.remove(&(pk.to_owned(), sk.to_owned()))
    }

    /// One item exactly as DynamoDB holds it (numbers as their text, no conversion).
    pub async fn raw_item(&self, pk: &str, sk: &str) -> Option<store::Item> {
        let key = |v: &str| aws_sdk_dynamodb::types::AttributeValue::S(v.to_owned());
        let got = self.client.get_item().table_name(&self.name).key("pk", key(pk)).key("sk", key(sk));
        got.consistent_read(true).send().await.unwrap().item
    }
}

/// The Clerk object an item keeps in `data` (its JSON text), parsed; `Null` when there is none.
pub fn data_of(item: &Value) -> Value {
    item.get("data").and_then(Value::as_str).map_or(Value::Null, |text| serde_json::from_str(text).unwrap())
}

/// A committed sample event (`events/<name>.json`) as JSON.
pub fn fixture(name: &str) -> Value {
    let path = repo_path(&format!("events/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// The body of an API Gateway event, decoded.
pub fn event_body(event: &Value) -> Vec<u8> {
    let body = event["body"].as_str().unwrap_or_default();
    if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        BASE64.decode(body).unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

/// Replaces an API Gateway event's body (kept in the event's encoding).
pub fn set_body(event: &mut Value, body: &[u8]) {
    event["body"] = if event["isBase64Encoded"].as_bool().unwrap_or(false) {
        json!(BASE64.encode(body))
    } else {
        json!(String::from_utf8(body.to_vec()).unwrap())
    };
}

/// Sets a header in both the v2 `headers` and, where present, the v1 `multiValueHeaders`.
pub fn set_header(event: &mut Value, name: &str, value: &str) {
    event["headers"][name] = json!(value);
    if event.get("multiValueHeaders").is_some_and(Value::is_object) {
        event["multiValueHeaders"][name] = json!([value]);
    }
}

pub fn remove_header(event: &mut Value, name: &str) {
    for field in ["headers", "multiValueHeaders"] {
        if let Some(map) = event.get_mut(field).and_then(Value::as_object_mut) {
            map.remove(name);
        }
    }
}

/// Signs an API Gateway event's body as Svix would at `timestamp`, with `secret`.
pub fn sign_with(event: &mut Value, secret: &str, id: &str, timestamp: i64) {
    let body = event_body(event);
    let signature = SigningSecret::parse(secret).unwrap().sign(id, timestamp, &body);
    set_header(event, "svix-id", id);
    set_header(event, "svix-timestamp", &timestamp.to_string());
    set_header(event, "svix-signature", &signature);
}

/// Signs with the local secret, now.
pub fn sign(event: &mut Value, id: &str) {
    sign_with(event, &local_secret(), id, now());
}

pub fn request(event: &Value) -> Request {
    lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway event")
}

/// An HTTP API (v2) delivery of `body`, signed now with the local secret.
pub fn delivery(body: &str, id: &str) -> Request {
    let mut event = fixture("user-created");
    set_body(&mut event, body.as_bytes());
    sign(&mut event, id);
    request(&event)
}

/// Status and JSON body of an answer.
pub fn answer(response: &Response<Body>) -> (u16, Value) {
    let body: &[u8] = response.body().as_ref();
    (response.status().as_u16(), serde_json::from_slice(body).unwrap_or(Value::Null))
}

/// Clerk payloads shaped like the real ones (see shared/clerk-webhooks.md), for generated histories.
pub mod clerk {
    use serde_json::{Value, json};

    pub fn user(event_type: &str, id: &str, updated_at: i64, first_name: &str) -> String {
        json!({
            "data": {
                "birthday": "", "created_at": 1654012591514_i64, "external_accounts": [], "external_id": null,
                "email_addresses": [{
                    "email_address": format!("{first_name}.{id}@Example.org"), "id": format!("idn_{id}"),
                    "linked_to": [], "object": "email_address",
                    "verification": {"status": "verified", "strategy": "email_code"}
                }],
                "first_name": first_name, "last_name": "Tester", "gender": "", "id": id,
                "image_url": "https://img.clerk.com/abc", "has_image": false, "banned": false, "locked": false,
                "last_sign_in_at": updated_at, "object": "user", "password_enabled": true, "phone_numbers": [],
                "primary_email_address_id": format!("idn_{id}"), "primary_phone_number_id": null,
                "private_metadata": {"internal": first_name}, "profile_image_url": "https://img.clerk.com/p",
                "public_metadata": {"nickname": first_name, "plan": "pro"}, "two_factor_enabled": false,
                "unsafe_metadata": {}, "updated_at": updated_at, "username": null, "web3_wallets": []
            },
            "instance_id": "ins_123", "object": "event", "timestamp": updated_at, "type": event_type,
            "event_attributes": {"http_request": {"client_ip": "192.0.2.1", "user_agent": "Mozilla/5.0"}}
        })
        .to_string()
    }

    pub fn user_deleted(id: &str, timestamp: i64) -> String {
        json!({
            "data": {"deleted": true, "id": id, "object": "user"},
            "object": "event", "timestamp": timestamp, "type": "user.deleted"
        })
        .to_string()
    }

    pub fn organization(event_type: &str, id: &str, updated_at: i64, name: &str) -> String {
        json!({
            "data": {
                "admin_delete_enabled": true, "created_at": 1654013202977_i64, "created_by": "user_1vq84bqWzw7qmFgqSwN4CH1Wp0n",
                "has_image": false, "id": id, "image_url": "https://img.clerk.com/org", "max_allowed_memberships": 5,
                "members_count": 1, "name": name, "object": "organization", "pending_invitations_count": 0,
                "private_metadata": {"billing": name}, "public_metadata": {"tier": name}, "slug": name.to_lowercase(),
                "updated_at": updated_at
            },
            "instance_id": "ins_123", "object": "event", "timestamp": updated_at, "type": event_type
        })
        .to_string()
    }

    pub fn organization_deleted(id: &str, timestamp: i64) -> String {
        json!({
            "data": {"deleted": true, "id": id, "object": "organization"},
            "object": "event", "timestamp": timestamp, "type": "organization.deleted"
        })
        .to_string()
    }

    /// An `organizationMembership.*` event; `.deleted` carries the membership as it was.
    pub fn membership(
        event_type: &str,
        id: &str,
        organization_id: &str,
        user_id: &str,
        role: &str,
        created_at: i64,
        updated_at: i64,
    ) -> String {
        json!({
            "data": {
                "created_at": created_at, "id": id, "object": "organization_membership",
                "organization": {
                    "created_at": 1654013202977_i64, "id": organization_id, "image_url": "https://img.clerk.com/org",
                    "name": "Acme Inc", "object": "organization", "public_metadata": {}, "slug": "acme-inc",
                    "updated_at": 1654013202977_i64
                },
                "permissions": ["org:sys_memberships:read"], "private_metadata": {}, "public_metadata": {"team": role},
                "public_user_data": {
                    "first_name": "Ada", "identifier": format!("ada.{user_id}@example.org"), "image_url": "https://img.clerk.com/u",
                    "last_name": "Tester", "profile_image_url": "https://img.clerk.com/p", "user_id": user_id
                },
                "role": role, "updated_at": updated_at
            },
            "instance_id": "ins_123", "object": "event", "timestamp": updated_at, "type": event_type
        })
        .to_string()
    }

    pub fn session(
        event_type: &str,
        id: &str,
        user_id: &str,
        status: &str,
        updated_at: i64,
        user: Option<Value>,
    ) -> String {
        json!({
            "data": {
                "abandon_at": 1656606318265_i64, "client_id": "client_29wBS3h1zhE1BsEK2dg9oyypfYk",
                "created_at": 1654014318265_i64, "expire_at": 1654619118265_i64, "id": id,
                "last_active_at": updated_at, "object": "session", "status": status, "updated_at": updated_at,
                "user_id": user_id, "user": user
            },
            "object": "event", "timestamp": updated_at, "type": event_type
        })
        .to_string()
    }
}

/// A proxy in front of the local DynamoDB API (see `fault_proxy`).
pub async fn proxy() -> fault_proxy::FaultProxy {
    fault_proxy::FaultProxy::start(&required_env("CLERK_SYNC_DYNAMODB_ENDPOINT")).await
}

impl TestTable {
    /// Drops the table, so long property runs don't grow the local server's memory.
    pub async fn delete(self) {
        self.client.delete_table().table_name(&self.name).send().await.expect("delete the test table");
    }
}

/// Sends the function's logs, formatted as the deployed function writes them, to
/// `$CLERK_SYNC_TEST_LOG_DIR/<test binary>.jsonl`, which `scripts/audit_logs.py` reads after the
/// suite. Without that variable (a bare `cargo test`), logs are not captured.
pub fn capture_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(dir) = std::env::var("CLERK_SYNC_TEST_LOG_DIR") else { return };
        let binary = std::env::current_exe().unwrap();
        let name = binary.file_stem().unwrap().to_string_lossy();
        let name = name.split('-').next().unwrap_or(&name).to_owned();
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(Path::new(&dir).join(format!("{name}.jsonl")))
            .unwrap();
        clerk_sync::logging::init_with_writer(file);
    });
}

/// A DynamoDB stream record of an INSERT of the item `pk`, `sk`, keys only (all the cleanup
/// function reads of a session's or membership's record), from the sample stream event.
pub fn stream_record(pk: &str, sk: &str) -> clerk_sync::cleanup::EventRecord {
    let text = std::fs::read_to_string(repo_path("events/stream/organization-deleted.json")).unwrap();
    let mut event: clerk_sync::cleanup::Event = serde_json::from_str(&text).unwrap();
    let mut record = event.records.remove(0);
    record.change.keys = serde_json::from_value(serde_json::json!({ "pk": { "S": pk }, "sk": { "S": sk } })).unwrap();
    record.change.sequence_number = Some(format!("{pk}/{sk}"));
    record
}

/// The stream event Lambda hands the cleanup function for these writes, in order.
pub fn stream_of_writes(keys: &[(String, String)]) -> clerk_sync::cleanup::Event {
    let text = std::fs::read_to_string(repo_path("events/stream/organization-deleted.json")).unwrap();
    let mut event: clerk_sync::cleanup::Event = serde_json::from_str(&text).unwrap();
    event.records = keys.iter().map(|(pk, sk)| stream_record(pk, sk)).collect();
    event
}
