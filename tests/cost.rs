//! What an event costs, all-in, computed from the items the function actually writes.
//!
//! The sample story (`events/`) is delivered through the function (the library's `App`) to a table
//! on the local DynamoDB API, once with `data` and once without. Every item each delivery changed
//! is sized by DynamoDB's documented rules (`clerk_sync::item::size`) and charged as DynamoDB
//! charges it, for the table and for `email-index` under both projections. With prices, log line
//! sizes (measured from the function's captured lines) and a documented mix of event types, this
//! gives dollars per million events against a naive receiver that stores the raw body with one
//! unconditional PutItem. `scripts/cost` runs it and prints the table BENCHMARKS.md holds.
//!
//! The test fails if the levers stop holding: a user update that keeps its email must cost the
//! keys-only index nothing, leaving `data` out must never cost more, and DynamoDB must cost under a
//! third of what it did with ConditionChecks and no more than 10% over the naive receiver.

mod common;

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use clerk_sync::item;
use clerk_sync::store::Item;
use common::*;

/// The sample story, in order, and each event's share of the mix (percent) used for the
/// dollars per million: a sign-in is a `session.created` and a `user.updated` (last sign-in);
/// sessions end, are removed or revoked; a few users and organizations come and go; a B2B app's
/// memberships; 4.5% types clerk-sync ignores (a subscription that takes more than it stores).
const STORY: [(&str, &str, f64); 12] = [
    ("user-created", "user.created", 5.0),
    ("user-updated", "user.updated", 30.0),
    ("session-pending", "session.pending", 5.0),
    ("session-created", "session.created", 25.0),
    ("session-ended", "session.ended", 10.0),
    ("session-removed", "session.removed", 5.0),
    ("session-revoked", "session.revoked", 2.0),
    ("organization-created", "organization.created", 2.0),
    ("organization-membership-created", "organizationMembership.created", 5.0),
    ("ignored-organization-invitation-created", "organizationInvitation.created (ignored)", 4.5),
    ("user-deleted", "user.deleted", 1.0),
    ("organization-deleted", "organization.deleted", 0.5),
];

// Prices, us-east-1, on-demand and standard tiers, as of 2026-12 (aws.amazon.com/<service>/pricing).
const API_PER_MILLION: f64 = 1.00; // HTTP API, first 300 million requests a month
const LAMBDA_REQUESTS_PER_MILLION: f64 = 0.20;
const LAMBDA_ARM_PER_GB_SECOND: f64 = 0.000_013_333_4;
const WRITE_UNITS_PER_MILLION: f64 = 0.625; // DynamoDB on-demand write request units
const READ_UNITS_PER_MILLION: f64 = 0.125; // DynamoDB on-demand read request units
const LOGS_PER_GB: f64 = 0.50; // CloudWatch Logs ingestion (standard class)
const INFREQUENT_LOGS_PER_GB: f64 = 0.25; // CloudWatch Logs ingestion (infrequent access class)

// Assumptions that cannot be measured without an AWS account (stated in BENCHMARKS.md).
/// Billed duration of a warm delivery at 128 MB: dominated by DynamoDB's round trips. The naive
/// receiver makes one; clerk-sync up to two in a row (a session's PutItem, then its user's Query).
const BILLED_MS: f64 = 30.0;
const NAIVE_BILLED_MS: f64 = 20.0;
/// Lambda's JSON platform lines of one invocation at INFO (start, report): about 0.5 KB.
const PLATFORM_LOG_BYTES: f64 = 500.0;
/// The naive receiver's plain-text START, END and REPORT lines.
const NAIVE_PLATFORM_LOG_BYTES: f64 = 330.0;
/// One API Gateway access log line in the template's format (nine short fields).
const ACCESS_LOG_BYTES: f64 = 330.0;
/// The cleanup function, which checks every session and membership item written: records per
/// invocation (it takes up to 100 gathered for up to 60 s: a million events a month, 0.4 a second,
/// give one shard about 14 a minute, of which 10 is a conservative share), and billed time per
/// record (one Query, at 128 MB).
const CLEANUP_RECORDS_PER_INVOCATION: f64 = 10.0;
const CLEANUP_BILLED_MS_PER_RECORD: f64 = 5.0;

type Snapshot = BTreeMap<(String, String), Item>;

async fn snapshot(table: &TestTable) -> Snapshot {
    let mut items = Snapshot::new();
    let mut start = None;
    loop {
        let page =
            table.client.scan().table_name(&table.name).set_exclusive_start_key(start.take()).send().await.unwrap();
        for item in page.items.unwrap_or_default() {
            let key = |k: &str| item[k].as_s().unwrap().clone();
            items.insert((key("pk"), key("sk")), item);
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return items;
        }
    }
}

fn kb(item: &Item) -> f64 {
    item::size(item).div_ceil(1024).max(1) as f64
}

fn email(item: Option<&Item>) -> Option<&AttributeValue> {
    item.and_then(|i| i.get("email"))
}

/// What one delivery cost, by DynamoDB's rules.
#[derive(Default, Clone, Copy)]
struct Units {
    /// The table's write units now: a session one PutItem, a membership's two items one
    /// transaction.
    table: f64,
    /// The same delivery as clerk-sync wrote it before (stop 17): a session in a transaction that
    /// also checked the user item, a membership's transaction checking the user and organization.
    table_checked: f64,
    /// `email-index` when it projects every attribute (before), and keys only (now).
    index_all: f64,
    index_keys: f64,
    /// Read units now: a deletion's Query, and a session's or membership's Query of each item it
    /// hangs off (rule 2).
    read: f64,
    /// Read units before: a deletion's Query only.
    read_checked: f64,
    /// Stream records the cleanup function checks (a session's write is one, a membership's two),
    /// and the read units of its checks.
    cleanup_records: f64,
    cleanup_read: f64,
    /// The part of `table_checked` spent on ConditionChecks.
    checks: f64,
    /// The largest item the delivery wrote, in bytes as DynamoDB counts them.
    largest: usize,
}

/// Charges the changes between `before` and `after` made by one delivery of `event_type`.
fn charge(event_type: &str, before: &Snapshot, after: &Snapshot) -> Units {
    let mut units = Units::default();
    let session = event_type.starts_with("session.");
    let membership = event_type.starts_with("organizationMembership.");
    let deletion = event_type.ends_with(".deleted") && !session && !membership;
    let keys: Vec<_> =
        before.keys().chain(after.keys()).collect::<std::collections::BTreeSet<_>>().into_iter().collect();
    for key in keys {
        if key.0 == "META" {
            continue; // once per cold start, not per event
        }
        let (old, new) = (before.get(key), after.get(key));
        if old == new {
            continue;
        }
        units.largest = units.largest.max(new.map_or(0, item::size));
        // A put costs the larger of the old and new item, a delete the old one (1 unit per KB);
        // within a transaction, twice that.
        let size = old.map_or(0.0, kb).max(new.map_or(0.0, kb));
        units.table += if membership { 2.0 * size } else { size };
        units.table_checked += if session || membership { 2.0 * size } else { size };
        // email-index: a put of the entry where the email appears, a delete where it goes, both
        // when it changes; with every attribute projected, any change of the item rewrites it.
        match (email(old), email(new)) {
            (None, None) => {}
            (Some(a), Some(b)) if a == b => units.index_all += new.map_or(1.0, kb),
            (a, b) => {
                let puts_and_deletes = f64::from(u8::from(a.is_some()) + u8::from(b.is_some()));
                units.index_keys += puts_and_deletes; // an entry of email, pk and sk: under 1 KB
                units.index_all +=
                    old.filter(|_| a.is_some()).map_or(0.0, kb) + new.filter(|_| b.is_some()).map_or(0.0, kb);
            }
        }
    }
    if session || membership {
        // Now, a strongly consistent Query of each item the write hangs off (the user; for a
        // membership the organization too): 1 read unit per 4 KB, 1 when it does not exist.
        // Before, a ConditionCheck of it, charged as a transactional write of the item it checks:
        // 2 units per KB, 2 when it does not exist.
        let checked = |pk: &str, sk: &str| before.get(&(pk.to_owned(), sk.to_owned())).map_or(1, item::size);
        let mut check = |pk: &str, sk: &str| {
            let bytes = checked(pk, sk);
            units.read += bytes.div_ceil(4096).max(1) as f64;
            // The cleanup function reads the same item once per record: a session's record checks
            // its user, a membership's two records the user and the organization.
            units.cleanup_records += 1.0;
            units.cleanup_read += bytes.div_ceil(4096).max(1) as f64;
            let cost = 2.0 * bytes.div_ceil(1024).max(1) as f64;
            units.checks += cost;
            cost
        };
        let changed: Vec<&(String, String)> =
            before.keys().chain(after.keys()).filter(|k| before.get(*k) != after.get(*k)).collect();
        let user = changed.iter().find(|(pk, sk)| pk.starts_with("USER#") && sk != "USER");
        let organization = changed.iter().find(|(pk, sk)| pk.starts_with("ORG#") && sk != "ORG");
        let mut added = 0.0;
        if let Some((pk, _)) = user {
            added += check(pk, "USER");
        }
        if let Some((pk, _)) = organization {
            added += check(pk, "ORG");
        }
        units.table_checked += added;
    }
    if deletion {
        // One strongly consistent Query page of the partition: 1 read unit per 4 KB read.
        let partition =
            |pk: &str| before.iter().filter(|((p, _), _)| p == pk).map(|(_, i)| item::size(i)).sum::<usize>();
        let pk = before.keys().find(|k| after.get(k) != before.get(k) && (k.1 == "USER" || k.1 == "ORG"));
        units.read += pk.map_or(1.0, |(pk, _)| partition(pk).div_ceil(4096).max(1) as f64);
        units.read_checked = units.read;
    }
    units
}

/// The raw body of a sample event and the naive receiver's write: one item of the message id,
/// the event type and the body as text, put without a condition.
fn naive_units(name: &str) -> f64 {
    let body = event_body(&fixture(name));
    let item_bytes = "pk".len() + 32 + "type".len() + 32 + "body".len() + body.len();
    item_bytes.div_ceil(1024) as f64
}

fn dollars(units: f64, per_million_units: f64) -> f64 {
    units * per_million_units
}

struct Row {
    event_type: &'static str,
    share: f64,
    with_data: Units,
    without_data: Units,
    naive: f64,
}

async fn story(store_clerk_data: bool) -> (Vec<Units>, Vec<f64>) {
    let table = TestTable::create().await;
    let app = table.app_with(store_clerk_data);
    let (mut units, mut lines) = (Vec::new(), Vec::new());
    let run = now();
    for (name, event_type, _) in STORY {
        let before = snapshot(&table).await;
        let mut event = fixture(name);
        let id = format!("msg_cost_{store_clerk_data}_{run}_{name}");
        sign(&mut event, &id);
        let status = app.handle(request(&event)).await.status();
        assert_eq!(status, 200, "{name}");
        let after = snapshot(&table).await;
        units.push(charge(event_type, &before, &after));
        lines.push(log_line_bytes(&id));
    }
    table.delete().await;
    (units, lines)
}

/// The delivery line of `svix_id` as written (with its metrics), and as it was before them.
fn log_line_bytes(svix_id: &str) -> f64 {
    let Ok(dir) = std::env::var("CLERK_SYNC_TEST_LOG_DIR") else { return f64::NAN };
    let text = std::fs::read_to_string(std::path::Path::new(&dir).join("cost.jsonl")).unwrap_or_default();
    text.lines().find(|l| l.contains(svix_id)).map_or(f64::NAN, |l| (l.len() + 1) as f64)
}

#[tokio::test]
async fn cost_per_event_and_per_million() {
    let (with_data, lines) = story(true).await;
    let (without_data, _) = story(false).await;
    let rows: Vec<Row> = STORY
        .iter()
        .zip(with_data.iter().zip(&without_data))
        .map(|((name, event_type, share), (with, without))| Row {
            event_type,
            share: *share,
            with_data: *with,
            without_data: *without,
            naive: naive_units(name),
        })
        .collect();

    // The levers hold: a user.updated that keeps its email writes nothing to a keys-only index,
    // and leaving out `data` never costs more.
    let updated = rows.iter().find(|r| r.event_type == "user.updated").unwrap();
    assert_eq!(updated.with_data.index_keys, 0.0, "user.updated keeps its email");
    assert!(updated.with_data.index_all >= 1.0);
    for row in &rows {
        assert!(row.without_data.table <= row.with_data.table, "{}", row.event_type);
        assert!(row.with_data.index_keys <= row.with_data.index_all, "{}", row.event_type);
    }

    let mix = |f: &dyn Fn(&Row) -> f64| rows.iter().map(|r| r.share / 100.0 * f(r)).sum::<f64>();
    let log_after = {
        let measured: Vec<f64> = lines.iter().copied().filter(|b| b.is_finite()).collect();
        measured.iter().sum::<f64>() / measured.len().max(1) as f64
    };
    let mut out = String::new();
    out.push_str("| event | share of the mix | table WRU (with `data`) | index WRU, keys only | read units | table WRU (without `data`) | before: table WRU with ConditionChecks (of which checks) | before: index WRU, all attributes | naive receiver WRU | largest item written, bytes (with / without `data`) |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in &rows {
        out.push_str(&format!(
            "| {} | {}% | {} | {} | {} | {} | {} ({}) | {} | {} | {} / {} |\n",
            r.event_type,
            r.share,
            r.with_data.table,
            r.with_data.index_keys,
            r.with_data.read,
            r.without_data.table,
            r.with_data.table_checked,
            r.with_data.checks,
            r.with_data.index_all,
            r.naive,
            r.with_data.largest,
            r.without_data.largest
        ));
    }
    let wru = |table: &dyn Fn(&Row) -> f64, index: &dyn Fn(&Row) -> f64| mix(&|r| table(r) + index(r));
    let before_wru = wru(&|r| r.with_data.table_checked, &|r| r.with_data.index_all);
    let checked_wru = wru(&|r| r.with_data.table_checked, &|r| r.with_data.index_keys);
    let after_wru = wru(&|r| r.with_data.table, &|r| r.with_data.index_keys);
    let after_no_data_wru = wru(&|r| r.without_data.table, &|r| r.without_data.index_keys);
    let (reads, reads_checked) = (mix(&|r| r.with_data.read), mix(&|r| r.with_data.read_checked));
    // Now, with the cleanup function's checks of every session and membership written.
    let reads = reads + mix(&|r| r.with_data.cleanup_read);
    let cleanup_records = mix(&|r| r.with_data.cleanup_records);
    let naive_wru = mix(&|r| r.naive);
    out.push_str(&format!(
        "| **mix, per event** | 100% | {:.2} | {:.2} | {:.3} | {:.2} | {:.2} ({:.2}) | {:.2} | {:.2} | |\n\n",
        mix(&|r| r.with_data.table),
        mix(&|r| r.with_data.index_keys),
        reads,
        mix(&|r| r.without_data.table),
        mix(&|r| r.with_data.table_checked),
        mix(&|r| r.with_data.checks),
        mix(&|r| r.with_data.index_all),
        naive_wru
    ));

    let gb_seconds = |ms: f64| 0.125 * ms / 1000.0 * LAMBDA_ARM_PER_GB_SECOND * 1e6;
    let lambda = |billed_ms: f64| LAMBDA_REQUESTS_PER_MILLION + gb_seconds(billed_ms);
    // Now also the cleanup function's invocations for those records, and their platform lines
    // (`PlatformLogLevel` sets both functions').
    let cleanup_invocations = cleanup_records / CLEANUP_RECORDS_PER_INVOCATION;
    let (before_lambda, now_lambda) = (
        lambda(NAIVE_BILLED_MS),
        lambda(BILLED_MS)
            + cleanup_invocations * LAMBDA_REQUESTS_PER_MILLION
            + gb_seconds(cleanup_records * CLEANUP_BILLED_MS_PER_RECORD),
    );
    let now_platform = PLATFORM_LOG_BYTES * (1.0 + cleanup_invocations);
    let per_million = |bytes: f64, price: f64| bytes * 1e6 / 1e9 * price;
    let emf_bytes = log_after;
    let line_before = emf_bytes - metrics_bytes();
    // (name, write units, read units, Lambda's dollars, bytes of standard logs, bytes of infrequent-access logs)
    let standard = |line: f64, platform: f64| (line + platform + ACCESS_LOG_BYTES, 0.0);
    let scenarios = [
        (
            "before: ConditionChecks, index of all attributes, `data`, no metrics, no REPORT lines",
            before_wru,
            reads_checked,
            before_lambda,
            standard(line_before, 0.0),
        ),
        ("index keys only", checked_wru, reads_checked, before_lambda, standard(line_before, 0.0)),
        (
            "index keys only, metrics in the log line",
            checked_wru,
            reads_checked,
            before_lambda,
            standard(emf_bytes, 0.0),
        ),
        (
            "index keys only, metrics, REPORT lines kept (stop 17)",
            checked_wru,
            reads_checked,
            before_lambda,
            standard(emf_bytes, PLATFORM_LOG_BYTES),
        ),
        (
            "**now**: sessions and memberships read their user and organization after the write, no ConditionCheck",
            after_wru,
            reads,
            now_lambda,
            standard(emf_bytes, now_platform),
        ),
        (
            "now, without `data` (`StoreClerkData=false`)",
            after_no_data_wru,
            reads,
            now_lambda,
            standard(emf_bytes, now_platform),
        ),
        ("now, without REPORT lines (`PlatformLogLevel=WARN`)", after_wru, reads, now_lambda, standard(emf_bytes, 0.0)),
        (
            "what-if: now, the API access log in the infrequent-access class",
            after_wru,
            reads,
            now_lambda,
            (emf_bytes + now_platform, ACCESS_LOG_BYTES),
        ),
        ("now, without the API access log", after_wru, reads, now_lambda, (emf_bytes + now_platform, 0.0)),
        (
            "naive receiver: raw body, one unconditional PutItem",
            naive_wru,
            0.0,
            before_lambda,
            (NAIVE_PLATFORM_LOG_BYTES, 0.0),
        ),
        (
            "what-if: the naive receiver keeping the same operator's record (a delivery line with the same metrics, JSON REPORT lines, the access log)",
            naive_wru,
            0.0,
            before_lambda,
            standard(emf_bytes, PLATFORM_LOG_BYTES),
        ),
    ];
    out.push_str("| configuration | WRU per event | RRU per event | log bytes per event | DynamoDB | API Gateway | Lambda | logs | **$ per million events** |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let mut totals = Vec::new();
    for (name, units, read_units, lambda, (standard_bytes, infrequent_bytes)) in scenarios {
        let dynamodb = dollars(units, WRITE_UNITS_PER_MILLION) + dollars(read_units, READ_UNITS_PER_MILLION);
        let logs = per_million(standard_bytes, LOGS_PER_GB) + per_million(infrequent_bytes, INFREQUENT_LOGS_PER_GB);
        let total = dynamodb + API_PER_MILLION + lambda + logs;
        totals.push((name, dynamodb, total));
        out.push_str(&format!(
            "| {name} | {units:.2} | {read_units:.3} | {:.0} | ${dynamodb:.2} | ${API_PER_MILLION:.2} | ${lambda:.2} | ${logs:.2} | **${total:.2}** |\n",
            standard_bytes + infrequent_bytes,
        ));
    }
    println!("{out}");
    if let Ok(path) = std::env::var("CLERK_SYNC_COST_REPORT") {
        std::fs::write(path, &out).unwrap();
    }
    let total_of = |prefix: &str| totals.iter().find(|(name, ..)| name.starts_with(prefix)).unwrap();
    let (before, now, naive) = (total_of("before"), total_of("**now**"), total_of("naive"));
    assert!(now.2 < before.2, "now is cheaper than before");
    // The table's part of the promise costs about what the naive receiver's one unconditional put
    // does (within 10%; 6% in the run of BENCHMARKS.md, the cleanup function's checks): what is
    // left above it all-in is the logs (the delivery line with its metrics, the REPORT lines, the
    // access log) that the operator reads.
    assert!(now.1 < before.1 / 3.0, "DynamoDB now ${:.2} per million events, before ${:.2}", now.1, before.1);
    assert!(
        now.1 <= naive.1 * 1.10,
        "DynamoDB now ${:.3} per million events, the naive receiver ${:.3}",
        now.1,
        naive.1
    );
}

/// Bytes the metric document adds to a delivery line: measured on one line of this run.
fn metrics_bytes() -> f64 {
    let Ok(dir) = std::env::var("CLERK_SYNC_TEST_LOG_DIR") else { return 0.0 };
    let text = std::fs::read_to_string(std::path::Path::new(&dir).join("cost.jsonl")).unwrap_or_default();
    let lines: Vec<serde_json::Value> =
        text.lines().filter(|l| l.contains("msg_cost_true")).filter_map(|l| serde_json::from_str(l).ok()).collect();
    let added: Vec<f64> = lines
        .iter()
        .map(|line| {
            let full = serde_json::to_string(line).unwrap().len();
            let mut bare = line.clone();
            let object = bare.as_object_mut().unwrap();
            object.retain(|k, _| k == "fields" || k == "level");
            (full - serde_json::to_string(&bare).unwrap().len()) as f64
        })
        .collect();
    added.iter().sum::<f64>() / added.len().max(1) as f64
}
