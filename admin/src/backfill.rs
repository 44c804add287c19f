//! `backfill`: every Clerk user, in creation order, and with `--sessions` their sessions, through
//! the webhook path; then with `--organizations` every organization and membership. Page by page:
//! a page (with its users' sessions) is fetched and read whole before any of it is written, and
//! once it is written the creation time of its last user is the resume cursor (see `users`).

use std::sync::Arc;

use clerk_sync::plan;
use clerk_sync::store::Store;
use tokio::task::JoinSet;

use crate::error::RunError;
use crate::progress::Progress;
use crate::users::Users;
use crate::webhook_path::{
    MEMBERSHIP_EVENT, ORGANIZATION_EVENT, Planned, SESSION_EVENT, Tally, apply_all, for_each_offset_page, plan_objects,
};
use clerk_sync::clerk::Clerk;

/// Session lists fetched at once; Clerk's rate limit, not this, sets the pace.
const FETCH_CONCURRENCY: usize = 16;

pub struct Options {
    pub limit: u32,
    /// Only the users created at or after this (milliseconds): a resumed run.
    pub created_from: Option<i64>,
    pub sessions: bool,
    pub organizations: bool,
    pub dry_run: bool,
    pub plan: plan::Options,
}

/// Where a run stands, kept up to date as it goes so that whatever stops it, the counts and the
/// resume cursor are known.
#[derive(Debug, Default)]
pub struct State {
    /// Every user created before this (milliseconds) is written (in a dry run, read):
    /// `--created-from`.
    pub cursor: Option<i64>,
    pub pages: u64,
    pub users: Tally,
    pub sessions: Tally,
    pub organizations: Tally,
    pub memberships: Tally,
}

impl State {
    /// Objects skipped because DynamoDB would not store them.
    pub fn skipped(&self) -> u64 {
        [self.users, self.sessions, self.organizations, self.memberships].iter().map(|t| t.skipped).sum()
    }

    /// The counts of what is imported, a line each.
    pub fn counts(&self, sessions: bool, organizations: bool) -> String {
        let line = |name: &str, t: &Tally| format!("{name}: fetched={} {}", t.fetched, t.verdicts());
        let mut lines = vec![line("users", &self.users)];
        if sessions {
            lines.push(line("sessions", &self.sessions));
        }
        if organizations {
            let organization_line =
                |name: &str, t: &Tally| format!("{} organization_deleted={}", line(name, t), t.organization_deleted);
            lines.push(organization_line("organizations", &self.organizations));
            lines.push(organization_line("memberships", &self.memberships));
        }
        lines.join("\n")
    }
}

/// `store` is `None` in a dry run: everything is fetched and read, nothing is written.
pub async fn run(
    clerk: &Arc<Clerk>,
    store: Option<&Store>,
    options: &Options,
    state: &mut State,
    progress: &Progress,
) -> Result<(), RunError> {
    state.cursor = options.created_from;
    // Resuming, the position in the whole is unknown: a spinner then.
    let total = if state.cursor.is_none() { clerk.user_count().await? } else { None };
    progress.stage("users", total);
    let mut listing = Users::new(options.limit, options.created_from);
    while let Some(users) = listing.next(clerk, options.plan).await? {
        let sessions = if options.sessions { fetch_sessions(clerk, &users, options).await? } else { Vec::new() };
        let received = users.len();
        state.users.fetched += received as u64;
        state.sessions.fetched += sessions.len() as u64;
        let with_sessions = options.sessions;
        progress.show(state.counts(with_sessions, false));
        if let Some(store) = store {
            let sessions_tally = state.sessions;
            let show_users = |users: &Tally| {
                let state = State { users: *users, sessions: sessions_tally, ..State::default() };
                progress.show(state.counts(with_sessions, false));
            };
            apply_all(store, users, &mut state.users, &show_users).await?;
            let users_tally = state.users;
            let show_sessions = |sessions: &Tally| {
                let state = State { users: users_tally, sessions: *sessions, ..State::default() };
                progress.show(state.counts(with_sessions, false));
            };
            apply_all(store, sessions, &mut state.sessions, &show_sessions).await?;
        }
        state.pages += 1;
        progress.advance(received as u64);
        state.cursor = listing.cursor();
    }
    if options.organizations {
        let organizations = &mut state.organizations;
        offset_paged(
            clerk,
            store,
            "/organizations",
            ORGANIZATION_EVENT,
            "organizations",
            options,
            organizations,
            progress,
        )
        .await?;
        let memberships = &mut state.memberships;
        offset_paged(
            clerk,
            store,
            "/organization_memberships",
            MEMBERSHIP_EVENT,
            "memberships",
            options,
            memberships,
            progress,
        )
        .await?;
    }
    Ok(())
}

/// Every object of an offset-paged list, page by page: each page read whole, then written.
#[allow(clippy::too_many_arguments)]
async fn offset_paged(
    clerk: &Clerk,
    store: Option<&Store>,
    path: &str,
    event_type: &str,
    unit: &'static str,
    options: &Options,
    tally: &mut Tally,
    progress: &Progress,
) -> Result<(), RunError> {
    for_each_offset_page(clerk, path, event_type, unit, options.limit, options.plan, progress, async |planned| {
        tally.fetched += planned.len() as u64;
        let show = |t: &Tally| progress.show(format!("{unit}: fetched={} {}", t.fetched, t.verdicts()));
        show(tally);
        if let Some(store) = store {
            apply_all(store, planned, tally, &show).await?;
        }
        Ok(())
    })
    .await
}

/// The sessions of a page's users (`GET /sessions?user_id=..`, offset-paged), read whole.
async fn fetch_sessions(clerk: &Arc<Clerk>, users: &[Planned], options: &Options) -> Result<Vec<Planned>, RunError> {
    let mut ids = users.iter().map(|user| user.id.clone());
    let mut running: JoinSet<Result<Vec<Planned>, RunError>> = JoinSet::new();
    let mut planned = Vec::new();
    loop {
        while running.len() < FETCH_CONCURRENCY {
            let Some(user_id) = ids.next() else { break };
            let (clerk, limit, plan_options) = (clerk.clone(), options.limit, options.plan);
            running.spawn(async move {
                let filters = [("user_id", user_id.clone()), ("paginated", "true".to_owned())];
                let sessions = clerk.list_offset_paged("/sessions", &filters, limit).await?;
                plan_objects(&sessions, SESSION_EVENT, plan_options, &format!("the sessions of {user_id}"))
            });
        }
        let Some(joined) = running.join_next().await else { return Ok(planned) };
        match joined {
            Ok(sessions) => planned.extend(sessions?),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
