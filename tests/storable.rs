//! Storable, whatever the content. A signed-in user writes their own `unsafe_metadata` from the
//! browser, so no value Clerk can hold may make an event unstorable: one refused write would
//! refuse every later change of that user, a ban included.
//!
//! These tests run on dynalite, which refuses what DynamoDB refuses (numbers beyond its range or
//! precision, items above 400 KB) where moto stores anything. dynalite has no transactions, so
//! users and organizations go through the whole function (one PutItem each), and session and
//! membership items (a membership's two are written in one transaction) are checked as items. What dynalite does not check (nesting depth, index key
//! sizes) is covered against DynamoDB's documented limits by the unit tests of `clerk_sync::item`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;
use clerk_sync::event::{Event, read_object};
use clerk_sync::item;
use clerk_sync::plan::{self, Write};
use clerk_sync::store::{Item, to_item};
use common::*;
use proptest::prelude::*;
use serde_json::value::RawValue;
use serde_json::{Value, json};

/// A generated JSON value: numbers are text, at and beyond every limit DynamoDB has.
#[derive(Clone, Debug)]
enum Json {
    Null,
    Bool(bool),
    Str(String),
    Num(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    fn text(&self) -> String {
        match self {
            Json::Null => "null".into(),
            Json::Bool(b) => b.to_string(),
            Json::Str(s) => serde_json::to_string(s).unwrap(),
            Json::Num(n) => n.clone(),
            Json::Arr(items) => format!("[{}]", items.iter().map(Json::text).collect::<Vec<_>>().join(",")),
            Json::Obj(members) => {
                let members: Vec<String> = members
                    .iter()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), v.text()))
                    .collect();
                format!("{{{}}}", members.join(","))
            }
        }
    }

    /// Whether DynamoDB can hold this value exactly as a map or list attribute, by its documented
    /// limits: 38 significant digits, 1E-130 to 9.99E+125, 32 levels with the value itself
    /// counted (the attribute being level 1 of `depth`), and no empty map key.
    fn fits_dynamodb(&self, depth: usize) -> bool {
        match self {
            Json::Null | Json::Bool(_) | Json::Str(_) => true,
            Json::Num(n) => match decimal(n) {
                None => true,
                Some((_, digits, leading)) => digits.len() <= 38 && (-130..=125).contains(&leading),
            },
            Json::Arr(items) => depth <= 31 && items.iter().all(|v| v.fits_dynamodb(depth + 1)),
            Json::Obj(members) => {
                depth <= 31 && members.iter().all(|(k, v)| !k.is_empty() && v.fits_dynamodb(depth + 1))
            }
        }
    }

    /// Whether `attribute` holds exactly this value.
    fn held_by(&self, attribute: &AttributeValue) -> bool {
        match (self, attribute) {
            (Json::Null, AttributeValue::Null(true)) => true,
            (Json::Bool(a), AttributeValue::Bool(b)) => a == b,
            (Json::Str(a), AttributeValue::S(b)) => a == b,
            (Json::Num(a), AttributeValue::N(b)) => decimal(a) == decimal(b),
            (Json::Arr(a), AttributeValue::L(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.held_by(b)),
            (Json::Obj(a), AttributeValue::M(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|b| v.held_by(b)))
            }
            _ => false,
        }
    }
}

/// A decimal number's value as (negative, significant digits, exponent of the leading digit);
/// `None` for zero. Written here independently of the function's own reading of numbers.
fn decimal(text: &str) -> Option<(bool, String, i128)> {
    let (negative, text) = text.strip_prefix('-').map_or((false, text), |t| (true, t));
    let (mantissa, exponent) = text.split_once(['e', 'E']).unwrap_or((text, "0"));
    let exponent: i128 = exponent.parse().expect("a generated exponent fits i128");
    let (integer, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let all: String = format!("{integer}{fraction}");
    let first = all.find(|c| c != '0')?;
    let digits = all[first..].trim_end_matches('0').to_owned();
    Some((negative, digits, integer.len() as i128 - first as i128 - 1 + exponent))
}

fn number() -> impl Strategy<Value = Json> {
    let exponent = prop_oneof![
        Just(None),
        (-160i64..160).prop_map(Some),
        prop::sample::select(vec![-131i64, -130, 125, 126, 10_000, -99_999_999_999]).prop_map(Some),
    ];
    (any::<bool>(), "0|[1-9][0-9]{0,44}", proptest::option::of("[0-9]{1,12}"), exponent).prop_map(
        |(negative, integer, fraction, exponent)| {
            let mut text = format!("{}{integer}", if negative { "-" } else { "" });
            if let Some(fraction) = fraction {
                text.push('.');
                text.push_str(&fraction);
            }
            if let Some(exponent) = exponent {
                text.push_str(&format!("e{exponent}"));
            }
            Json::Num(text)
        },
    )
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<String>().prop_map(Json::Str),
        Just(Json::Str(String::new())),
        number(),
        prop::sample::select(vec![
            "18446744073709551617",
            "9007199254740993",
            "-170141183460469231731687303715884105729"
        ])
        .prop_map(|n| Json::Num(n.into())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), "[a-z_]{1,8}", any::<String>()]
}

/// Any JSON value; one in four wrapped in up to 45 levels of arrays or objects.
fn json() -> impl Strategy<Value = Json> {
    let tree = leaf().prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Json::Arr),
            prop::collection::btree_map(key(), inner, 0..6).prop_map(Json::Obj),
        ]
    });
    (tree, prop_oneof![3 => Just(0usize), 1 => 1usize..45], any::<bool>()).prop_map(|(tree, levels, arrays)| {
        (0..levels).fold(tree, |value, _| {
            if arrays { Json::Arr(vec![value]) } else { Json::Obj(BTreeMap::from([("d".to_owned(), value)])) }
        })
    })
}

fn object() -> impl Strategy<Value = Json> {
    prop::collection::btree_map(key(), json(), 0..4).prop_map(Json::Obj)
}

fn unique_id(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}_{}x{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A `user.updated` (or `organization.updated`) whose metadata and an unknown field hold `values`,
/// with its `data` text.
fn event_with(kind: &str, id: &str, version: i64, values: [&Json; 4]) -> (String, String) {
    let [public, private, unsafe_, unknown] = values.map(Json::text);
    let data = match kind {
        "user" => format!(
            r#"{{"id":"{id}","object":"user","first_name":"Ada","updated_at":{version},"banned":false,"public_metadata":{public},"private_metadata":{private},"unsafe_metadata":{unsafe_},"brand_new_field":{unknown}}}"#
        ),
        _ => format!(
            r#"{{"id":"{id}","object":"organization","name":"Acme","updated_at":{version},"public_metadata":{public},"private_metadata":{private},"brand_new_field":{unknown},"unsafe":{unsafe_}}}"#
        ),
    };
    let body = format!(r#"{{"type":"{kind}.updated","object":"event","timestamp":{version},"data":{data}}}"#);
    (body, data)
}

fn key_of(kind: &str, id: &str) -> (String, &'static str) {
    match kind {
        "user" => (plan::user_pk(id), plan::USER_SK),
        _ => (plan::organization_pk(id), plan::ORGANIZATION_SK),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// Any JSON in `public_metadata`, `private_metadata`, `unsafe_metadata` and an unknown field of
    /// a user or organization is applied (200), and read back: `data` is the text Clerk sent, byte
    /// for byte; `public_metadata` is a map holding every value exactly where DynamoDB can, and its
    /// JSON text where it cannot. A later change (a ban) then lands as usual.
    #[test]
    fn any_json_is_stored_and_read_back_as_sent(
        kind in prop::sample::select(vec!["user", "organization"]),
        public in object(),
        private in object(),
        unsafe_ in object(),
        unknown in json(),
    ) {
        runtime().block_on(async {
            let table = dynalite_table().await;
            let app = table.app();
            let id = unique_id(if kind == "user" { "user" } else { "org" });
            let (body, data) = event_with(kind, &id, 1_795_000_000_000, [&public, &private, &unsafe_, &unknown]);
            let (status, reply) = answer(&app.handle(delivery(&body, "msg_hostile")).await);
            prop_assert_eq!((status, reply["outcome"].as_str()), (200, Some("applied")), "{}", reply);

            let (pk, sk) = key_of(kind, &id);
            let item = table.raw_item(&pk, sk).await.expect("the item is stored");
            prop_assert_eq!(&item["data"], &AttributeValue::S(data));
            let stored = &item["public_metadata"];
            if public.fits_dynamodb(1) {
                prop_assert!(public.held_by(stored), "public_metadata as a map: {:?}", stored);
            } else {
                prop_assert_eq!(stored, &AttributeValue::S(public.text()));
            }
            prop_assert_eq!(item.get("omitted"), None);

            let ban = Json::Obj(BTreeMap::from([("role".to_owned(), Json::Str("banned".into()))]));
            let (body, _) = event_with(kind, &id, 1_795_000_000_001, [&ban, &private, &unsafe_, &unknown]);
            let (status, reply) = answer(&app.handle(delivery(&body, "msg_ban")).await);
            prop_assert_eq!((status, reply["outcome"].as_str()), (200, Some("applied")), "{}", reply);
            let item = table.raw_item(&pk, sk).await.unwrap();
            prop_assert!(ban.held_by(&item["public_metadata"]));
            Ok(())
        })?;
    }
}

/// `PROPTEST_CASES`, 64 by default.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap())
}

/// One dynalite table for the whole property run (each case writes objects of its own).
async fn dynalite_table() -> &'static TestTable {
    static TABLE: tokio::sync::OnceCell<TestTable> = tokio::sync::OnceCell::const_new();
    TABLE.get_or_init(TestTable::on_dynalite).await
}

/// dynalite checks what the tests rely on it for: an item holding a number DynamoDB refuses is
/// refused, as the function's items were before they kept Clerk's JSON as text.
#[tokio::test]
async fn dynalite_refuses_what_dynamodb_refuses() {
    let table = TestTable::on_dynalite().await;
    let put = |value: AttributeValue| {
        let item = Item::from([
            ("pk".to_owned(), AttributeValue::S("USER#user_1".into())),
            ("sk".to_owned(), AttributeValue::S("USER".into())),
            ("data".to_owned(), AttributeValue::M([("n".to_owned(), value)].into())),
        ]);
        table.client.put_item().table_name(&table.name).set_item(Some(item)).send()
    };
    for refused in ["123456789012345678901234567890123456789", "1E126", "1E-131"] {
        let error = put(AttributeValue::N(refused.into())).await.unwrap_err();
        let message = format!("{:?}", error.into_service_error());
        assert!(message.contains("ValidationException"), "{refused}: {message}");
    }
    put(AttributeValue::N("12345678901234567890123456789012345678".into())).await.unwrap();
}

/// A user whose metadata at Clerk's limits would pass 400 KB with `data`: stored without it,
/// listed in `omitted`, answered 200, and the operator warned in the log line.
#[tokio::test]
async fn an_item_above_400_kb_is_stored_without_data() {
    let table = TestTable::on_dynalite().await;
    let big = Json::Obj(BTreeMap::from([("notes".to_owned(), Json::Str("x".repeat(210 * 1024)))]));
    let empty = Json::Obj(BTreeMap::new());
    let (body, _) = event_with("user", "user_big", 1_795_000_000_000, [&big, &empty, &empty, &Json::Null]);
    let (status, reply) = answer(&table.app().handle(delivery(&body, "msg_big")).await);
    assert_eq!((status, reply["outcome"].as_str()), (200, Some("applied")), "{reply}");
    let item = table.raw_item("USER#user_big", "USER").await.unwrap();
    assert_eq!(item.get("data"), None);
    assert_eq!(item["omitted"], AttributeValue::L(vec![AttributeValue::S("data".into())]));
    assert!(big.held_by(&item["public_metadata"]));
    assert_eq!(item["first_name"], AttributeValue::S("Ada".into()));

    // Just below the limit, nothing is left out.
    let half = Json::Obj(BTreeMap::from([("notes".to_owned(), Json::Str("x".repeat(150 * 1024)))]));
    let (body, data) = event_with("user", "user_half", 1_795_000_000_000, [&half, &empty, &empty, &Json::Null]);
    let (status, _) = answer(&table.app().handle(delivery(&body, "msg_half")).await);
    assert_eq!(status, 200);
    let item = table.raw_item("USER#user_half", "USER").await.unwrap();
    assert_eq!((item.get("data"), item.get("omitted")), (Some(&AttributeValue::S(data)), None));
}

/// Session and membership items are valid items whatever their content: each one the store would
/// write is accepted by a plain PutItem.
#[tokio::test]
async fn session_and_membership_items_with_hostile_content_are_valid_items() {
    let table = TestTable::on_dynalite().await;
    let hostile = r#"{"n":123456789012345678901234567890123456789,"tiny":1e-400,"deep":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]],"":""}"#;
    let session = format!(
        r#"{{"id":"sess_h","object":"session","user_id":"user_h","status":"active","updated_at":5,"latest_activity":{hostile},"user":{{"id":"user_h"}}}}"#
    );
    let membership = format!(
        r#"{{"id":"orgmem_h","object":"organization_membership","role":"org:admin","created_at":1,"updated_at":5,"public_metadata":{hostile},"private_metadata":{hostile},"organization":{{"id":"org_h"}},"public_user_data":{{"user_id":"user_h"}}}}"#
    );
    let mut items = Vec::new();
    for (event_type, data) in [("session.created", session), ("organizationMembership.created", membership)] {
        let raw = RawValue::from_string(data).unwrap();
        let event = Event {
            event_type: event_type.into(),
            timestamp: None,
            instance_id: None,
            kind: read_object(event_type, &raw).unwrap(),
        };
        match plan::plan(&event, plan::Options { store_clerk_data: true }).unwrap().unwrap() {
            Write::UpsertSession(session) => items.push(item::build(to_item(&session).unwrap(), None)),
            Write::PutMembership(membership) => {
                let metadata = membership.public_metadata.as_deref();
                items.push(item::build(to_item(&membership).unwrap(), metadata));
                items.push(item::build(to_item(&membership.under_user()).unwrap(), metadata));
            }
            other => panic!("{other:?}"),
        }
    }
    for (item, fit) in items {
        let key = (item["pk"].clone(), item["sk"].clone());
        table.client.put_item().table_name(&table.name).set_item(Some(item.clone())).send().await.unwrap();
        let stored = table.raw_item(key.0.as_s().unwrap(), key.1.as_s().unwrap()).await.unwrap();
        if let Some(metadata) = item.get("public_metadata") {
            assert_eq!(stored["public_metadata"], AttributeValue::S(hostile.into()), "held as text");
            assert_eq!(metadata, &stored["public_metadata"]);
            assert!(fit.metadata_as_text);
        }
        if let Some(AttributeValue::S(data)) = stored.get("data") {
            let data: Value = serde_json::from_str(data).unwrap();
            assert_eq!((data.get("user"), data.get("organization")), (None, None));
            assert_ne!(data["id"], json!(null));
        }
    }
}
