//! `reconcile`: finds where the table and Clerk disagree and repairs it through the webhook path.
//!
//! 1. Scan the table once: its user items (live users and tombstones, with their versions), and
//!    with `--organizations` its organization items and memberships (the item under the
//!    organization), filtered on `sk` and projected to what deciding drift needs.
//! 2. List every Clerk user (the same paging as `backfill`), and with `--organizations` every
//!    organization and membership, read through the webhook path: what the table lacks (missing)
//!    or holds at a lower version, or for a membership holds as another membership (outdated), is
//!    drift to write.
//! 3. Live items that Clerk's lists lack are candidates for deletion. A membership of a candidate
//!    user or organization waits for it: that tombstone would remove the membership. Above
//!    `--max-deletions` the run stops before confirming or writing anything: a development key
//!    pointed at a production table would otherwise tombstone everyone.
//! 4. Each candidate is confirmed by id (`GET /users/{id}`, `GET /organizations/{id}`, and for a
//!    membership its organization's memberships of that user): only Clerk's own answer that it is
//!    gone tombstones it. The memberships that waited on a user or organization Clerk still has
//!    are confirmed next, and the guard is checked again on everything confirmed.
//! 5. Write the missing and outdated objects, then the tombstones: `user.deleted`'s write (which
//!    also removes the user's sessions and memberships), `organization.deleted`'s (which removes
//!    its memberships), and a membership's tombstone on both of its items.
//! 6. Repair: finish every removal an earlier deletion left (sessions and memberships still under
//!    a user or organization tombstone, and membership items whose other item is gone under one),
//!    whether the tombstone came from a webhook, the cleanup function or an interrupted run.
//!    Sessions and memberships under a user (or organization) the table has no item for at all are
//!    confirmed with Clerk like any candidate: gone, the user is tombstoned and they are removed.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use clerk_sync::plan::{self, MEMBER_SK_PREFIX, MembershipItem, ORGANIZATION_SK, Tombstone, USER_SK, Write};
use clerk_sync::store::{Item, Removed, Store, is_deleted};
use tokio::task::JoinSet;

use crate::error::RunError;
use crate::progress::Progress;
use crate::users::Users;
use crate::webhook_path::{MEMBERSHIP_EVENT, ORGANIZATION_EVENT, Planned, Tally, apply_all, for_each_offset_page};
use clerk_sync::clerk::{Clerk, Found};

/// Lookups in flight at once; Clerk's rate limit, not this, sets the pace.
const CONFIRM_CONCURRENCY: usize = 16;

pub struct Options {
    pub limit: u32,
    pub max_deletions: usize,
    /// At most this share of the live users (and organizations) may be tombstoned.
    pub max_deletion_share: f64,
    /// Whether the key's Clerk instance was checked against the table's record: without that,
    /// nothing is tombstoned.
    pub instance_checked: bool,
    /// Also organizations and memberships.
    pub organizations: bool,
    pub dry_run: bool,
    pub plan: plan::Options,
}

/// What a user or organization item in the table says.
#[derive(Debug, Clone, Copy)]
struct Stored {
    version: u64,
    deleted: bool,
    /// No item at all, but sessions or memberships under its partition (their user or
    /// organization item never arrived): a candidate like a live item Clerk does not list.
    phantom: bool,
}

/// A membership item under its organization (`ORG#<organization_id>`, `MEMBER#<user_id>`): what
/// deciding drift, and writing its tombstone, needs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct StoredMembership {
    organization_id: String,
    user_id: String,
    id: String,
    created_at: i64,
    version: u64,
    deleted: bool,
}

impl StoredMembership {
    /// The membership's tombstone at `version`, what `organizationMembership.deleted` writes: the
    /// store writes it on both items, under the membership rule (its deletion beats its updates).
    fn tombstone(&self, version: u64) -> MembershipItem {
        MembershipItem {
            pk: plan::organization_pk(&self.organization_id),
            sk: plan::member_sk(&self.user_id),
            id: self.id.clone(),
            organization_id: self.organization_id.clone(),
            user_id: self.user_id.clone(),
            deleted: true,
            role: None,
            created_at: self.created_at,
            updated_at: None,
            public_metadata: None,
            version,
            digest: None,
            data: None,
        }
    }
}

/// What the Scan found.
#[derive(Debug, Default)]
struct Table {
    /// By user id.
    users: HashMap<String, Stored>,
    /// By organization id.
    organizations: HashMap<String, Stored>,
    /// By (organization id, user id): one membership per user and organization.
    memberships: HashMap<(String, String), StoredMembership>,
    /// Every user and organization tombstone's partition (`USER#..`, `ORG#..`).
    tombstones: HashSet<String>,
    /// Every partition with a user or organization item, live or not.
    roots: HashSet<String>,
    /// Items other than the user or organization item, by partition.
    children: HashMap<String, usize>,
    /// Both items of every membership, as keys.
    pairs: HashSet<(String, String)>,
}

/// One kind of object's drift, and what writing it did.
#[derive(Debug, Default)]
pub struct Drift {
    /// Listed by Clerk.
    pub clerk: usize,
    /// Live in the table.
    pub table: usize,
    pub table_tombstones: usize,
    /// In Clerk, not in the table.
    pub missing: Tally,
    /// In both; the table's version is older (or, for a membership, the table holds another one).
    pub outdated: Tally,
    /// Live in the table, absent from Clerk's list, confirmed one by one.
    pub candidates: usize,
    /// Candidates Clerk confirmed it no longer has: tombstoned.
    pub deleted_in_clerk: Tally,
    /// Candidates Clerk still has (created while the list was read).
    pub still_in_clerk: usize,
    /// Tombstoned in the table but listed by Clerk: left alone, reported.
    pub tombstoned_but_listed: usize,
}

/// The drift found, and what writing it did.
#[derive(Debug, Default)]
pub struct Report {
    pub users: Drift,
    pub organizations: Drift,
    pub memberships: Drift,
    /// Live memberships under a user or organization the table holds as a tombstone (whose removal
    /// of them did not finish): removed by the repair.
    pub memberships_under_tombstones: usize,
    pub repair: Repair,
    /// Tombstones written for users and organizations Clerk no longer has, and what was removed
    /// under them, counted page by page: true even when the run is interrupted mid-removal.
    pub users_removed: Arc<Removed>,
    pub organizations_removed: Arc<Removed>,
}

/// Removals an earlier deletion left unfinished, found in the table and finished. The counts
/// grow page by page, so a run stopped half-way reports what it did.
#[derive(Debug, Default)]
pub struct Repair {
    /// Tombstones with sessions or memberships still under them.
    pub tombstones: usize,
    /// Membership items whose other item is already gone under a tombstone.
    pub orphans: usize,
    pub removed: Arc<Removed>,
    pub orphans_removed: usize,
}

impl Report {
    /// Objects skipped because DynamoDB would not store them.
    pub fn skipped(&self) -> u64 {
        [&self.users, &self.organizations, &self.memberships]
            .iter()
            .flat_map(|d| [d.missing, d.outdated, d.deleted_in_clerk])
            .map(|t| t.skipped)
            .sum()
    }

    pub fn lines(&self, dry_run: bool, organizations: bool) -> String {
        let verb = if dry_run { "would write" } else { "written" };
        let drift = |name: &str, t: &Tally| {
            if dry_run {
                format!("{name}: found={}", t.fetched)
            } else if name.starts_with("organizations") || name.starts_with("memberships") {
                format!("{name}: found={} {} organization_deleted={}", t.fetched, t.verdicts(), t.organization_deleted)
            } else {
                format!("{name}: found={} {}", t.fetched, t.verdicts())
            }
        };
        let deleted = |name: &str, t: &Tally, tombstoned: usize, removed: String| {
            if dry_run {
                format!("{name}: found={}", t.fetched)
            } else {
                format!("{name}: found={} tombstoned={tombstoned} {removed}", t.fetched)
            }
        };
        let (users_tombstoned, sessions_removed, memberships_removed) = self.users_removed.get();
        let (organizations_tombstoned, _, organization_memberships_removed) = self.organizations_removed.get();
        let users = &self.users;
        let mut lines = vec![
            format!(
                "clerk_users={} table_users={} table_tombstones={} ({verb} below)",
                users.clerk, users.table, users.table_tombstones
            ),
            drift("missing", &users.missing),
            drift("outdated", &users.outdated),
            deleted(
                "deleted_in_clerk",
                &users.deleted_in_clerk,
                users_tombstoned,
                format!("sessions_removed={sessions_removed} memberships_removed={memberships_removed}"),
            ),
            format!("still_in_clerk={} (not in Clerk's list, but found by id: left alone)", users.still_in_clerk),
            format!("tombstoned_but_listed={} (left alone)", users.tombstoned_but_listed),
        ];
        if !organizations {
            lines.push(self.repair_line(dry_run));
            return lines.join("\n");
        }
        let organizations = &self.organizations;
        let memberships = &self.memberships;
        let gone = &memberships.deleted_in_clerk;
        lines.extend([
            format!(
                "clerk_organizations={} table_organizations={} table_tombstones={}",
                organizations.clerk, organizations.table, organizations.table_tombstones
            ),
            drift("organizations missing", &organizations.missing),
            drift("organizations outdated", &organizations.outdated),
            deleted(
                "organizations deleted_in_clerk",
                &organizations.deleted_in_clerk,
                organizations_tombstoned,
                format!("memberships_removed={organization_memberships_removed}"),
            ),
            format!(
                "organizations still_in_clerk={} tombstoned_but_listed={} (left alone)",
                organizations.still_in_clerk, organizations.tombstoned_but_listed
            ),
            format!(
                "clerk_memberships={} table_memberships={} table_tombstones={}",
                memberships.clerk, memberships.table, memberships.table_tombstones
            ),
            drift("memberships missing", &memberships.missing),
            drift("memberships outdated", &memberships.outdated),
            deleted(
                "memberships deleted_in_clerk",
                gone,
                gone.applied as usize,
                format!(
                    "duplicate={} stale={} user_deleted={} organization_deleted={}",
                    gone.duplicate, gone.stale, gone.user_deleted, gone.organization_deleted
                ),
            ),
            format!(
                "memberships still_in_clerk={} tombstoned_but_listed={} under_tombstones={} (removed by the repair)",
                memberships.still_in_clerk, memberships.tombstoned_but_listed, self.memberships_under_tombstones
            ),
        ]);
        lines.push(self.repair_line(dry_run));
        lines.join("\n")
    }

    fn repair_line(&self, dry_run: bool) -> String {
        let repair = &self.repair;
        if dry_run {
            return format!("repair: tombstones={} orphans={} (would be removed)", repair.tombstones, repair.orphans);
        }
        let (_, sessions, memberships) = repair.removed.get();
        format!(
            "repair: tombstones={} orphans={} sessions_removed={sessions} memberships_removed={memberships} orphans_removed={}",
            repair.tombstones, repair.orphans, repair.orphans_removed
        )
    }
}

/// The writes one kind of drift needs.
#[derive(Default)]
struct Writes {
    missing: Vec<Planned>,
    outdated: Vec<Planned>,
}

/// How many tombstones a run would write, checked against `--max-deletions` and, as a share of
/// the live users and organizations, `--max-deletion-share`.
struct Deletions {
    users: usize,
    organizations: usize,
    memberships: usize,
}

impl Deletions {
    fn check(&self, options: &Options, live_users: usize, live_organizations: usize) -> Result<(), RunError> {
        if !options.instance_checked && self.users + self.organizations + self.memberships > 0 {
            return Err(RunError::InstanceUnchecked);
        }
        let allowed = |live: usize| ((live as f64 * options.max_deletion_share).floor() as usize).max(1);
        for (what, candidates, live) in
            [("users", self.users, live_users), ("organizations", self.organizations, live_organizations)]
        {
            if candidates > allowed(live) {
                return Err(RunError::TooLargeAShare { what, candidates, live, share: options.max_deletion_share });
            }
        }
        let candidates = self.users + self.organizations + self.memberships;
        if candidates <= options.max_deletions {
            return Ok(());
        }
        let count = |n: usize, what: &str| if n == 1 { format!("1 {what}") } else { format!("{n} {what}s") };
        let what = if options.organizations {
            format!(
                "{}, {} and {} ({candidates} in all)",
                count(self.users, "user"),
                count(self.organizations, "organization"),
                count(self.memberships, "membership")
            )
        } else {
            count(candidates, "user")
        };
        Err(RunError::TooManyDeletions { candidates, what, max: options.max_deletions })
    }
}

pub async fn run(
    clerk: &Arc<Clerk>,
    client: &Client,
    store: &Store,
    table_name: &str,
    options: &Options,
    report: &mut Report,
    progress: &Progress,
) -> Result<(), RunError> {
    progress.stage("table items", None);
    let mut table = scan(client, table_name, options.organizations, progress).await?;
    let items =
        |map: &HashMap<String, Stored>| map.values().filter(|s| !s.phantom).map(|s| s.deleted).collect::<Vec<_>>();
    (report.users.table, report.users.table_tombstones) = live_and_deleted(items(&table.users).into_iter());
    (report.organizations.table, report.organizations.table_tombstones) =
        live_and_deleted(items(&table.organizations).into_iter());
    let (unfinished, orphans) = table.unfinished_removals();
    (report.repair.tombstones, report.repair.orphans) = (unfinished.len(), orphans.len());
    (report.memberships.table, report.memberships.table_tombstones) =
        live_and_deleted(table.memberships.values().map(|m| m.deleted));

    progress.stage("Clerk users", clerk.user_count().await?);
    let users = list_users(clerk, &mut table.users, options, &mut report.users, progress).await?;
    let (organizations, memberships) = if options.organizations {
        let path = "/organizations";
        let listed =
            list_offset_paged(clerk, path, ORGANIZATION_EVENT, "Clerk organizations", options, progress).await?;
        let organizations = sort_listed(listed, &mut table.organizations, &mut report.organizations);
        let path = "/organization_memberships";
        let listed = list_offset_paged(clerk, path, MEMBERSHIP_EVENT, "Clerk memberships", options, progress).await?;
        (organizations, sort_memberships(listed, &mut table.memberships, &mut report.memberships))
    } else {
        (Writes::default(), Writes::default())
    };
    report.users.missing.fetched = users.missing.len() as u64;
    report.users.outdated.fetched = users.outdated.len() as u64;
    report.organizations.missing.fetched = organizations.missing.len() as u64;
    report.organizations.outdated.fetched = organizations.outdated.len() as u64;
    report.memberships.missing.fetched = memberships.missing.len() as u64;
    report.memberships.outdated.fetched = memberships.outdated.len() as u64;

    // What is left of the table's maps is what Clerk's lists did not have.
    let user_candidates = live_left(&table.users);
    let organization_candidates = live_left(&table.organizations);
    let tombstoned = |map: &HashMap<String, Stored>, id: &str| map.get(id).is_some_and(|s| s.deleted);
    let (user_set, organization_set): (HashSet<&str>, HashSet<&str>) = (
        user_candidates.iter().map(String::as_str).collect(),
        organization_candidates.iter().map(String::as_str).collect(),
    );
    let (mut membership_candidates, mut waiting) = (Vec::new(), Vec::new());
    for membership in table.memberships.values().filter(|m| !m.deleted) {
        if tombstoned(&table.users, &membership.user_id)
            || tombstoned(&table.organizations, &membership.organization_id)
        {
            report.memberships_under_tombstones += 1;
        } else if user_set.contains(membership.user_id.as_str())
            || organization_set.contains(membership.organization_id.as_str())
        {
            waiting.push(membership.clone());
        } else {
            membership_candidates.push(membership.clone());
        }
    }
    Deletions {
        users: user_candidates.len(),
        organizations: organization_candidates.len(),
        memberships: membership_candidates.len(),
    }
    .check(options, report.users.table, report.organizations.table)?;

    report.users.candidates = user_candidates.len();
    report.organizations.candidates = organization_candidates.len();
    progress.stage("candidates confirmed", Some((user_candidates.len() + organization_candidates.len()) as u64));
    let gone_users = confirm_gone(
        user_candidates,
        |id| {
            let clerk = clerk.clone();
            async move { Ok((clerk.user_exists(&id).await?, id)) }
        },
        progress,
    )
    .await?;
    let gone_organizations = confirm_gone(
        organization_candidates,
        |id| {
            let clerk = clerk.clone();
            async move { Ok((clerk.organization_exists(&id).await?, id)) }
        },
        progress,
    )
    .await?;
    // Memberships that waited on a user or organization Clerk still has are candidates of their own.
    let (gone_user_set, gone_organization_set): (HashSet<&str>, HashSet<&str>) =
        (gone_users.iter().map(String::as_str).collect(), gone_organizations.iter().map(String::as_str).collect());
    membership_candidates.extend(waiting.into_iter().filter(|m| {
        !gone_user_set.contains(m.user_id.as_str()) && !gone_organization_set.contains(m.organization_id.as_str())
    }));
    membership_candidates.sort();
    report.memberships.candidates = membership_candidates.len();
    progress.stage("memberships confirmed", Some(membership_candidates.len() as u64));
    let limit = options.limit;
    let gone_memberships = confirm_gone(
        membership_candidates,
        |membership| {
            let clerk = clerk.clone();
            async move {
                let StoredMembership { organization_id, user_id, id, .. } = &membership;
                Ok((clerk.membership_exists(organization_id, user_id, id, limit).await?, membership))
            }
        },
        progress,
    )
    .await?;

    report.users.still_in_clerk = report.users.candidates - gone_users.len();
    report.users.deleted_in_clerk.fetched = gone_users.len() as u64;
    report.organizations.still_in_clerk = report.organizations.candidates - gone_organizations.len();
    report.organizations.deleted_in_clerk.fetched = gone_organizations.len() as u64;
    report.memberships.still_in_clerk = report.memberships.candidates - gone_memberships.len();
    report.memberships.deleted_in_clerk.fetched = gone_memberships.len() as u64;
    // Memberships that waited may have added tombstones the first check could not count.
    Deletions { users: gone_users.len(), organizations: gone_organizations.len(), memberships: gone_memberships.len() }
        .check(options, report.users.table, report.organizations.table)?;
    if options.dry_run {
        return Ok(());
    }
    progress.stage("removals finished", Some((unfinished.len() + orphans.len()) as u64));
    repair(store, unfinished, orphans, &mut report.repair, progress).await?;

    let upserts =
        [&users, &organizations, &memberships].iter().map(|w| w.missing.len() + w.outdated.len()).sum::<usize>();
    let tombstones = gone_users.len() + gone_organizations.len() + gone_memberships.len();
    progress.stage("written", Some((upserts + tombstones) as u64));
    let show = |_: &Tally| progress.advance(1);
    apply_all(store, users.missing, &mut report.users.missing, &show).await?;
    apply_all(store, users.outdated, &mut report.users.outdated, &show).await?;
    apply_all(store, organizations.missing, &mut report.organizations.missing, &show).await?;
    apply_all(store, organizations.outdated, &mut report.organizations.outdated, &show).await?;
    apply_all(store, memberships.missing, &mut report.memberships.missing, &show).await?;
    apply_all(store, memberships.outdated, &mut report.memberships.outdated, &show).await?;
    let now = now_ms();
    let tombstones =
        gone_users.into_iter().map(|id| Planned { write: Write::DeleteUser(Tombstone::user(&id, now)), id }).collect();
    let counted = store.clone().counting_removals(report.users_removed.clone());
    apply_all(&counted, tombstones, &mut report.users.deleted_in_clerk, &show).await?;
    let tombstones = gone_organizations
        .into_iter()
        .map(|id| Planned { write: Write::DeleteOrganization(Tombstone::organization(&id, now)), id })
        .collect();
    let counted = store.clone().counting_removals(report.organizations_removed.clone());
    apply_all(&counted, tombstones, &mut report.organizations.deleted_in_clerk, &show).await?;
    let tombstones = gone_memberships
        .into_iter()
        .map(|membership| Planned { write: Write::PutMembership(membership.tombstone(now)), id: membership.id })
        .collect();
    apply_all(store, tombstones, &mut report.memberships.deleted_in_clerk, &show).await
}

/// How many items are live, and how many tombstones.
fn live_and_deleted(deleted: impl Iterator<Item = bool>) -> (usize, usize) {
    deleted.fold(
        (0, 0),
        |(live, tombstones), deleted| if deleted { (live, tombstones + 1) } else { (live + 1, tombstones) },
    )
}

/// The live ids left in a map, sorted.
fn live_left(map: &HashMap<String, Stored>) -> Vec<String> {
    let mut ids: Vec<String> = map.iter().filter(|(_, stored)| !stored.deleted).map(|(id, _)| id.clone()).collect();
    ids.sort();
    ids
}

/// One Scan: the user items (`sk = USER`), and with `organizations` the organization items
/// (`sk = ORG`) and the memberships under organizations (`sk` beginning `MEMBER#`), each projected
/// to its keys, version and `deleted` (and for memberships `id` and `created_at`).
async fn scan(client: &Client, table: &str, organizations: bool, progress: &Progress) -> Result<Table, RunError> {
    // Every item: what is under tombstones is found by the same Scan (a filter would not make it
    // cheaper: DynamoDB reads the whole table either way), each projected to a few attributes.
    let request = client
        .scan()
        .table_name(table)
        .projection_expression("#pk, #sk, #version, #deleted, #id, #created_at")
        .expression_attribute_names("#pk", "pk")
        .expression_attribute_names("#sk", "sk")
        .expression_attribute_names("#version", "version")
        .expression_attribute_names("#deleted", "deleted")
        .expression_attribute_names("#id", "id")
        .expression_attribute_names("#created_at", "created_at")
        .consistent_read(true);
    let mut found = Table::default();
    let mut pages = request.into_paginator().items().send();
    while let Some(item) = pages.next().await {
        let item =
            item.map_err(|e| RunError::Table { operation: "Scan", detail: DisplayErrorContext(e).to_string() })?;
        progress.advance(1);
        found.add(&item, organizations);
    }
    found.add_phantoms(organizations);
    Ok(found)
}

impl Table {
    /// Files one scanned item; an item without what it needs is skipped. Organizations and
    /// memberships are drift only with `organizations`; every item counts for the repair.
    fn add(&mut self, item: &Item, organizations: bool) {
        let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).map(String::as_str);
        let (Some(pk), Some(sk)) = (text("pk"), text("sk")) else { return };
        let deleted = is_deleted(item);
        let root = (sk == USER_SK && pk.starts_with("USER#")) || (sk == ORGANIZATION_SK && pk.starts_with("ORG#"));
        if root {
            self.roots.insert(pk.to_owned());
            if deleted {
                self.tombstones.insert(pk.to_owned());
            }
        } else if pk.starts_with("USER#") || pk.starts_with("ORG#") {
            *self.children.entry(pk.to_owned()).or_default() += 1;
            if plan::membership_counterpart(pk, sk).is_some() {
                self.pairs.insert((pk.to_owned(), sk.to_owned()));
            }
        }
        let Some(version) = number(item, "version") else { return };
        if sk == USER_SK {
            if let Some(id) = pk.strip_prefix("USER#") {
                self.users.insert(id.to_owned(), Stored { version, deleted, phantom: false });
            }
        } else if !organizations {
        } else if sk == ORGANIZATION_SK {
            if let Some(id) = pk.strip_prefix("ORG#") {
                self.organizations.insert(id.to_owned(), Stored { version, deleted, phantom: false });
            }
        } else if let (Some(organization_id), Some(user_id), Some(id), Some(created_at)) =
            (pk.strip_prefix("ORG#"), sk.strip_prefix(MEMBER_SK_PREFIX), text("id"), number(item, "created_at"))
        {
            let (organization_id, user_id) = (organization_id.to_owned(), user_id.to_owned());
            let membership = StoredMembership {
                organization_id: organization_id.clone(),
                user_id: user_id.clone(),
                id: id.to_owned(),
                created_at,
                version,
                deleted,
            };
            self.memberships.insert((organization_id, user_id), membership);
        }
    }

    /// Partitions with sessions or memberships but no user (or organization) item: candidates.
    fn add_phantoms(&mut self, organizations: bool) {
        let phantom = Stored { version: 0, deleted: false, phantom: true };
        for pk in self.children.keys().filter(|pk| !self.roots.contains(*pk)) {
            if let Some(id) = pk.strip_prefix("USER#") {
                self.users.insert(id.to_owned(), phantom);
            } else if let (true, Some(id)) = (organizations, pk.strip_prefix("ORG#")) {
                self.organizations.insert(id.to_owned(), phantom);
            }
        }
    }

    /// Tombstones with something still under them, and membership items whose other item is
    /// gone under a tombstone.
    fn unfinished_removals(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut tombstones: Vec<String> =
            self.tombstones.iter().filter(|pk| self.children.contains_key(*pk)).cloned().collect();
        tombstones.sort();
        let mut orphans: Vec<(String, String)> = self
            .pairs
            .iter()
            .filter(|(pk, sk)| {
                let Some((other_pk, other_sk)) = plan::membership_counterpart(pk, sk) else { return false };
                !self.tombstones.contains(pk)
                    && self.tombstones.contains(&other_pk)
                    && !self.pairs.contains(&(other_pk, other_sk))
            })
            .cloned()
            .collect();
        orphans.sort();
        (tombstones, orphans)
    }
}

/// Finishes every removal an earlier deletion left: under each tombstone, page by page, and the
/// orphaned membership items. Counts go into `repair` as each is done.
async fn repair(
    store: &Store,
    tombstones: Vec<String>,
    orphans: Vec<(String, String)>,
    repair: &mut Repair,
    progress: &Progress,
) -> Result<(), RunError> {
    let failed = |pk: &str, source| RunError::Write { id: pk.to_owned(), source };
    let store = store.clone().counting_removals(repair.removed.clone());
    for pk in tombstones {
        let root_sk = if pk.starts_with("USER#") { USER_SK } else { ORGANIZATION_SK };
        store.remove_under_tombstone(&pk, root_sk).await.map_err(|e| failed(&pk, e))?;
        progress.advance(1);
    }
    for orphan in orphans {
        let pk = orphan.0.clone();
        store.remove_items(vec![orphan]).await.map_err(|e| failed(&pk, e))?;
        repair.orphans_removed += 1;
        progress.advance(1);
    }
    Ok(())
}

fn number<T: FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|n| n.parse().ok())
}

/// Lists every Clerk user, page by page (as `backfill`), taking each out of `table` (so what is
/// left there is what Clerk did not list).
async fn list_users(
    clerk: &Clerk,
    table: &mut HashMap<String, Stored>,
    options: &Options,
    drift: &mut Drift,
    progress: &Progress,
) -> Result<Writes, RunError> {
    let mut writes = Writes::default();
    let mut seen = HashSet::new();
    let mut listing = Users::new(options.limit, None);
    while let Some(users) = listing.next(clerk, options.plan).await? {
        let received = users.len();
        sort_into(users, table, &mut seen, drift, &mut writes);
        drift.clerk = seen.len();
        progress.advance(received as u64);
    }
    Ok(writes)
}

/// Every object of an offset-paged list (`GET /organizations`, `/organization_memberships`),
/// read through the webhook path as `event_type`, page by page.
async fn list_offset_paged(
    clerk: &Clerk,
    path: &str,
    event_type: &str,
    unit: &'static str,
    options: &Options,
    progress: &Progress,
) -> Result<Vec<Planned>, RunError> {
    let mut listed = Vec::new();
    for_each_offset_page(clerk, path, event_type, unit, options.limit, options.plan, progress, async |planned| {
        listed.extend(planned);
        Ok(())
    })
    .await?;
    Ok(listed)
}

/// Listed users or organizations: each is taken out of `table`, and kept as a write when the
/// table lacks it or holds it at an older version.
fn sort_listed(listed: Vec<Planned>, table: &mut HashMap<String, Stored>, drift: &mut Drift) -> Writes {
    let mut writes = Writes::default();
    sort_into(listed, table, &mut HashSet::new(), drift, &mut writes);
    writes
}

fn sort_into(
    listed: Vec<Planned>,
    table: &mut HashMap<String, Stored>,
    seen: &mut HashSet<String>,
    drift: &mut Drift,
    writes: &mut Writes,
) {
    for object in listed {
        // Offset and cursor paging are no snapshot: an object can come twice.
        if !seen.insert(object.id.clone()) {
            continue;
        }
        match table.remove(&object.id) {
            None => writes.missing.push(object),
            Some(stored) if stored.phantom => writes.missing.push(object),
            Some(stored) if stored.deleted => {
                // Kept in the map would make it a candidate: put back as a tombstone, which is never one.
                table.insert(object.id, stored);
                drift.tombstoned_but_listed += 1;
            }
            Some(stored) if stored.version < object.write.version() => writes.outdated.push(object),
            Some(_) => {}
        }
    }
    drift.clerk = seen.len();
}

/// Listed memberships: each takes its slot (organization, user) out of `table`, and is kept as
/// a write when the table lacks it, holds another membership there (the rule then decides which
/// is later), or holds it at an older version.
fn sort_memberships(
    listed: Vec<Planned>,
    table: &mut HashMap<(String, String), StoredMembership>,
    drift: &mut Drift,
) -> Writes {
    let mut writes = Writes::default();
    let mut seen = HashSet::new();
    for object in listed {
        let Write::PutMembership(item) = &object.write else { continue };
        if !seen.insert(item.id.clone()) {
            continue;
        }
        match table.remove(&(item.organization_id.clone(), item.user_id.clone())) {
            None => writes.missing.push(object),
            Some(stored) if stored.id != item.id => writes.outdated.push(object),
            // Its deletion beats its updates: a write would be stale.
            Some(stored) if stored.deleted => drift.tombstoned_but_listed += 1,
            Some(stored) if stored.version < item.version => writes.outdated.push(object),
            Some(_) => {}
        }
    }
    drift.clerk = seen.len();
    writes
}

/// The candidates Clerk confirms are gone: `check` answers whether Clerk still has one.
async fn confirm_gone<K, F, Fut>(candidates: Vec<K>, check: F, progress: &Progress) -> Result<Vec<K>, RunError>
where
    K: Ord + Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<(Found, K), RunError>> + Send + 'static,
{
    let mut pending = candidates.into_iter();
    let mut running: JoinSet<Result<(Found, K), RunError>> = JoinSet::new();
    let mut gone = Vec::new();
    loop {
        while running.len() < CONFIRM_CONCURRENCY {
            let Some(candidate) = pending.next() else { break };
            running.spawn(check(candidate));
        }
        let Some(joined) = running.join_next().await else {
            gone.sort();
            return Ok(gone);
        };
        match joined {
            Ok(Ok((Found::NotFound, candidate))) => gone.push(candidate),
            Ok(Ok((Found::Exists, _))) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
        progress.advance(1);
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
