//! `reconcile`: finds where the table and Clerk disagree and repairs it through the webhook path.
//!
//! 1. Scan the table's user items (live users and tombstones, with their versions).
//! 2. List every Clerk user (the same paging as `backfill`), read through the webhook path: a user
//!    the table lacks (missing) or holds at a lower version (outdated) is drift to write.
//! 3. Live users in the table that Clerk's list lacks are candidates for deletion. Above
//!    `--max-deletions` the run stops before writing anything: a development key pointed at a
//!    production table would otherwise tombstone everyone.
//! 4. Each candidate is confirmed with `GET /users/{id}`: only a 404 tombstones it (a user created
//!    while the list was being read exists, and stays).
//! 5. Write the missing and outdated users, then the tombstones (`user.deleted`'s write, which
//!    also removes the user's sessions).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use clerk_sync::plan::{self, Tombstone, USER_SK, Write};
use clerk_sync::store::Store;
use tokio::task::JoinSet;

use crate::clerk::{Clerk, Found};
use crate::error::RunError;
use crate::progress::Progress;
use crate::webhook_path::{Planned, Tally, USER_EVENT, apply_all, plan_array};

/// User lookups in flight at once; Clerk's rate limit, not this, sets the pace.
const CONFIRM_CONCURRENCY: usize = 16;

pub struct Options {
    pub limit: u32,
    pub max_deletions: usize,
    pub dry_run: bool,
    pub plan: plan::Options,
}

/// What a user item in the table says.
#[derive(Debug, Clone, Copy)]
struct Stored {
    version: u64,
    deleted: bool,
}

/// The drift found, and what writing it did.
#[derive(Debug, Default)]
pub struct Report {
    pub table_users: usize,
    pub table_tombstones: usize,
    pub clerk_users: usize,
    /// In Clerk, not in the table.
    pub missing: Tally,
    /// In both; the table's version is older.
    pub outdated: Tally,
    /// Live in the table, absent from Clerk's list.
    pub candidates: usize,
    /// Candidates Clerk answered 404 for: tombstoned.
    pub deleted_in_clerk: Tally,
    /// Candidates Clerk still has (created while the list was read).
    pub still_in_clerk: usize,
    /// Tombstoned in the table but listed by Clerk, which never reuses ids: left alone, reported.
    pub tombstoned_but_listed: usize,
}

impl Report {
    pub fn lines(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would write" } else { "written" };
        let drift = |name: &str, t: &Tally| {
            if dry_run {
                format!("{name}: found={}", t.fetched)
            } else {
                format!("{name}: found={} {}", t.fetched, t.verdicts())
            }
        };
        let deleted = if dry_run {
            format!("deleted_in_clerk: found={}", self.deleted_in_clerk.fetched)
        } else {
            format!(
                "deleted_in_clerk: found={} tombstoned={} sessions_removed={}",
                self.deleted_in_clerk.fetched, self.deleted_in_clerk.applied, self.deleted_in_clerk.sessions_removed
            )
        };
        [
            format!(
                "clerk_users={} table_users={} table_tombstones={} ({verb} below)",
                self.clerk_users, self.table_users, self.table_tombstones
            ),
            drift("missing", &self.missing),
            drift("outdated", &self.outdated),
            deleted,
            format!("still_in_clerk={} (not in Clerk's list, but found by id: left alone)", self.still_in_clerk),
            format!("tombstoned_but_listed={} (left alone)", self.tombstoned_but_listed),
        ]
        .join("\n")
    }
}

pub async fn run(
    clerk: &Arc<Clerk>,
    client: &Client,
    store: &Store,
    table: &str,
    options: &Options,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), RunError> {
    progress.stage("table items", None);
    let mut table_users = scan_users(client, table, progress).await?;
    report.table_users = table_users.values().filter(|u| !u.deleted).count();
    report.table_tombstones = table_users.len() - report.table_users;

    progress.stage("Clerk users", clerk.user_count().await?);
    let (missing, outdated) = list_drift(clerk, &mut table_users, options, report, progress).await?;
    report.missing.fetched = missing.len() as u64;
    report.outdated.fetched = outdated.len() as u64;

    // What is left of the table's map is what Clerk's list did not have.
    let mut candidates: Vec<String> =
        table_users.into_iter().filter(|(_, stored)| !stored.deleted).map(|(id, _)| id).collect();
    candidates.sort();
    report.candidates = candidates.len();
    if candidates.len() > options.max_deletions {
        return Err(RunError::TooManyDeletions { candidates: candidates.len(), max: options.max_deletions });
    }
    progress.stage("candidates confirmed", Some(candidates.len() as u64));
    let gone = confirm_gone(clerk, candidates, progress).await?;
    report.still_in_clerk = report.candidates - gone.len();
    report.deleted_in_clerk.fetched = gone.len() as u64;
    if options.dry_run {
        return Ok(());
    }

    progress.stage("written", Some((missing.len() + outdated.len() + gone.len()) as u64));
    let show = |_: &Tally| progress.advance(1);
    apply_all(store, missing, &mut report.missing, &show).await?;
    apply_all(store, outdated, &mut report.outdated, &show).await?;
    let now = now_ms();
    let tombstones =
        gone.into_iter().map(|id| Planned { write: Write::DeleteUser(Tombstone::user(&id, now)), id }).collect();
    apply_all(store, tombstones, &mut report.deleted_in_clerk, &show).await
}

/// Every user item (`sk = USER`): live users and tombstones, by user id.
async fn scan_users(client: &Client, table: &str, progress: &Progress) -> Result<HashMap<String, Stored>, RunError> {
    let mut users = HashMap::new();
    let mut pages = client
        .scan()
        .table_name(table)
        .filter_expression("#sk = :user")
        .projection_expression("#pk, #version, #deleted")
        .expression_attribute_names("#pk", "pk")
        .expression_attribute_names("#sk", "sk")
        .expression_attribute_names("#version", "version")
        .expression_attribute_names("#deleted", "deleted")
        .expression_attribute_values(":user", AttributeValue::S(USER_SK.to_owned()))
        .consistent_read(true)
        .into_paginator()
        .items()
        .send();
    while let Some(item) = pages.next().await {
        let item =
            item.map_err(|e| RunError::Table { operation: "Scan", detail: DisplayErrorContext(e).to_string() })?;
        progress.advance(1);
        let id = item.get("pk").and_then(|v| v.as_s().ok()).and_then(|pk| pk.strip_prefix("USER#"));
        let version = item.get("version").and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok());
        let deleted = item.get("deleted").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false);
        if let (Some(id), Some(version)) = (id, version) {
            users.insert(id.to_owned(), Stored { version, deleted });
        }
    }
    Ok(users)
}

/// Lists every Clerk user, taking each out of `table_users` (so what is left there is what Clerk
/// did not list), and keeps the writes for users the table lacks or holds at an older version.
async fn list_drift(
    clerk: &Clerk,
    table_users: &mut HashMap<String, Stored>,
    options: &Options,
    report: &mut Report,
    progress: &Progress,
) -> Result<(Vec<Planned>, Vec<Planned>), RunError> {
    let (mut missing, mut outdated) = (Vec::new(), Vec::new());
    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        let page = match &cursor {
            None => format!("page {pages} of users (the first)"),
            Some(cursor) => format!("page {pages} of users (after {cursor})"),
        };
        let body = clerk.users_page(options.limit, cursor.as_deref()).await?;
        let users = plan_array(&body, USER_EVENT, options.plan, &page)?;
        let received = users.len();
        for user in users {
            cursor = Some(user.id.clone());
            if !seen.insert(user.id.clone()) {
                continue;
            }
            match table_users.remove(&user.id) {
                None => missing.push(user),
                Some(stored) if stored.deleted => {
                    // Kept in the map would make it a candidate: put back as a tombstone, which is never one.
                    table_users.insert(user.id, stored);
                    report.tombstoned_but_listed += 1;
                }
                Some(stored) if stored.version < user.write.version() => outdated.push(user),
                Some(_) => {}
            }
        }
        report.clerk_users = seen.len();
        progress.advance(received as u64);
        if received < options.limit as usize {
            return Ok((missing, outdated));
        }
    }
}

/// The candidates Clerk answers 404 (`resource_not_found`) for.
async fn confirm_gone(
    clerk: &Arc<Clerk>,
    candidates: Vec<String>,
    progress: &Progress,
) -> Result<Vec<String>, RunError> {
    let mut pending = candidates.into_iter();
    let mut running: JoinSet<Result<(String, Found), RunError>> = JoinSet::new();
    let mut gone = Vec::new();
    loop {
        while running.len() < CONFIRM_CONCURRENCY {
            let Some(id) = pending.next() else { break };
            let clerk = clerk.clone();
            running.spawn(async move {
                let found = clerk.user_exists(&id).await?;
                Ok((id, found))
            });
        }
        let Some(joined) = running.join_next().await else {
            gone.sort();
            return Ok(gone);
        };
        match joined {
            Ok(Ok((id, Found::NotFound))) => gone.push(id),
            Ok(Ok((_, Found::Exists))) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
        progress.advance(1);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
