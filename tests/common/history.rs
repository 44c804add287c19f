//! Generated Clerk histories, the way Clerk produces them: per object, versions (`updated_at`)
//! increase; users and organizations are created, updated, maybe deleted; sessions may start
//! pending, become active, and end in one or more terminal statuses; a user's membership of an
//! organization is created, maybe updated and deleted, and may be followed by a new membership
//! (the user joined again). Objects interleave freely in time. A deletion's envelope `timestamp`
//! comes from another clock than `updated_at`, so it may be lower than the object's last update,
//! and a membership's deletion carries its last `updated_at`: "in order" means the order things
//! happened, not versions.
//!
//! Histories also hold twins: two different events of one object at one version (Clerk's own
//! catalog has a `session.removed` and a `session.revoked` of one session with the same
//! `updated_at`). Which of the two the table keeps must not depend on the order they arrive in.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;

use std::sync::Arc;

use clerk_sync::handler::App;

use super::{TestTable, clerk, delivery};

#[derive(Clone, Debug)]
pub enum Event {
    User {
        event_type: &'static str,
        user: usize,
        version: i64,
        name: &'static str,
    },
    /// `at` is when the deletion happened; `timestamp`, the envelope's, may be skewed below it.
    UserDeleted {
        user: usize,
        at: i64,
        timestamp: i64,
    },
    Session {
        event_type: &'static str,
        user: usize,
        session: usize,
        status: &'static str,
        version: i64,
    },
    Organization {
        event_type: &'static str,
        organization: usize,
        version: i64,
        name: &'static str,
    },
    OrganizationDeleted {
        organization: usize,
        at: i64,
        timestamp: i64,
    },
    /// `generation` counts the memberships the user has had in the organization. A deletion
    /// happens `at`, after its `updated_at`.
    Membership {
        event_type: &'static str,
        organization: usize,
        user: usize,
        generation: usize,
        role: &'static str,
        created_at: i64,
        updated_at: i64,
        at: i64,
    },
}

impl Event {
    /// When the change happened: the order of in-order delivery.
    pub fn at(&self) -> i64 {
        match self {
            Event::User { version, .. } | Event::Session { version, .. } | Event::Organization { version, .. } => {
                *version
            }
            Event::UserDeleted { at, .. } | Event::OrganizationDeleted { at, .. } | Event::Membership { at, .. } => *at,
        }
    }

    /// A stable message id: Svix keeps one id across retries of a message.
    pub fn svix_id(&self) -> String {
        format!("msg_{}", self.at())
    }

    /// The same event about user (and organization) `offset + n` instead of `n`.
    pub fn for_users_from(self, offset: usize) -> Self {
        match self {
            Event::User { event_type, user, version, name } => {
                Event::User { event_type, user: user + offset, version, name }
            }
            Event::UserDeleted { user, at, timestamp } => Event::UserDeleted { user: user + offset, at, timestamp },
            Event::Session { event_type, user, session, status, version } => {
                Event::Session { event_type, user: user + offset, session, status, version }
            }
            Event::Organization { event_type, organization, version, name } => {
                Event::Organization { event_type, organization: organization + offset, version, name }
            }
            Event::OrganizationDeleted { organization, at, timestamp } => {
                Event::OrganizationDeleted { organization: organization + offset, at, timestamp }
            }
            Event::Membership { event_type, organization, user, generation, role, created_at, updated_at, at } => {
                let (organization, user) = (organization + offset, user + offset);
                Event::Membership { event_type, organization, user, generation, role, created_at, updated_at, at }
            }
        }
    }

    pub fn body(&self) -> String {
        let user_id = |u: &usize| format!("user_{u}Prop");
        let organization_id = |o: &usize| format!("org_{o}Prop");
        match self {
            Event::User { event_type, user, version, name } => clerk::user(event_type, &user_id(user), *version, name),
            Event::UserDeleted { user, timestamp, .. } => clerk::user_deleted(&user_id(user), *timestamp),
            Event::Session { event_type, user, session, status, version } => {
                clerk::session(event_type, &format!("sess_{user}x{session}"), &user_id(user), status, *version, None)
            }
            Event::Organization { event_type, organization, version, name } => {
                clerk::organization(event_type, &organization_id(organization), *version, name)
            }
            Event::OrganizationDeleted { organization, timestamp, .. } => {
                clerk::organization_deleted(&organization_id(organization), *timestamp)
            }
            Event::Membership { event_type, organization, user, generation, role, created_at, updated_at, .. } => {
                let id = format!("orgmem_{organization}x{user}g{generation}");
                let (organization, user) = (organization_id(organization), user_id(user));
                clerk::membership(event_type, &id, &organization, &user, role, *created_at, *updated_at)
            }
        }
    }
}

const NAMES: [&str; 4] = ["Ada", "Grace", "Alan", "Edsger"];
const TERMINAL: [(&str, &str); 3] =
    [("session.ended", "ended"), ("session.removed", "removed"), ("session.revoked", "revoked")];

/// Increasing versions: a start and gaps, so objects interleave in time.
pub fn versions(count: usize) -> impl Strategy<Value = Vec<i64>> {
    (1_700_000_000_000_i64..1_700_000_100_000, proptest::collection::vec(1_i64..40_000, count)).prop_map(
        |(start, gaps)| {
            gaps.iter()
                .scan(start, |t, gap| {
                    *t += gap;
                    Some(*t)
                })
                .collect()
        },
    )
}

pub fn user_history(user: usize) -> impl Strategy<Value = Vec<Event>> {
    (0usize..=3, any::<bool>(), 0usize..NAMES.len(), 0i64..60_000, any::<bool>())
        .prop_flat_map(move |(updates, deleted, name, skew, twin)| {
            (versions(1 + updates + deleted as usize), Just((deleted, name, skew, twin)))
        })
        .prop_map(move |(versions, (deleted, name, skew, twin))| {
            let mut events = Vec::new();
            let live = if deleted { &versions[..versions.len() - 1] } else { &versions[..] };
            for (i, version) in live.iter().enumerate() {
                let event_type = if i == 0 { "user.created" } else { "user.updated" };
                events.push(Event::User { event_type, user, version: *version, name: NAMES[(name + i) % NAMES.len()] });
            }
            if twin {
                // Another change stamped with the last update's version.
                let version = *live.last().unwrap();
                events.push(Event::User { event_type: "user.updated", user, version, name: "Twin" });
            }
            if deleted {
                let at = *versions.last().unwrap();
                events.push(Event::UserDeleted { user, at, timestamp: at - skew });
            }
            events
        })
}

pub fn session_history(user: usize, session: usize) -> impl Strategy<Value = Vec<Event>> {
    (any::<bool>(), proptest::sample::subsequence(TERMINAL.to_vec(), 0..=2), 0usize..=TERMINAL.len())
        .prop_flat_map(|(pending, terminal, twin)| {
            (versions(1 + pending as usize + terminal.len()), Just((pending, terminal, twin)))
        })
        .prop_map(move |(versions, (pending, terminal, twin))| {
            let mut steps = Vec::new();
            if pending {
                steps.push(("session.pending", "pending"));
            }
            steps.push(("session.created", "active"));
            steps.extend(terminal);
            let mut events: Vec<Event> = steps
                .into_iter()
                .zip(versions)
                .map(|((event_type, status), version)| Event::Session { event_type, user, session, status, version })
                .collect();
            // A twin of the last step: another terminal status at the same version (as Clerk's
            // session.removed and session.revoked of one session), or none.
            if let (Some((event_type, status)), Some(Event::Session { version, .. })) =
                (TERMINAL.get(twin).copied(), events.last().cloned())
            {
                events.push(Event::Session { event_type, user, session, status, version });
            }
            events
        })
}

pub fn organization_history(organization: usize) -> impl Strategy<Value = Vec<Event>> {
    (0usize..=2, any::<bool>(), 0usize..NAMES.len(), 0i64..60_000, any::<bool>())
        .prop_flat_map(|(updates, deleted, name, skew, twin)| {
            (versions(1 + updates + deleted as usize), Just((deleted, name, skew, twin)))
        })
        .prop_map(move |(versions, (deleted, name, skew, twin))| {
            let mut events = Vec::new();
            let live = if deleted { &versions[..versions.len() - 1] } else { &versions[..] };
            for (i, version) in live.iter().enumerate() {
                let event_type = if i == 0 { "organization.created" } else { "organization.updated" };
                let name = NAMES[(name + i) % NAMES.len()];
                events.push(Event::Organization { event_type, organization, version: *version, name });
            }
            if twin {
                let version = *live.last().unwrap();
                events.push(Event::Organization {
                    event_type: "organization.updated",
                    organization,
                    version,
                    name: "Twin",
                });
            }
            if deleted {
                let at = *versions.last().unwrap();
                events.push(Event::OrganizationDeleted { organization, at, timestamp: at - skew });
            }
            events
        })
}

const ROLES: [&str; 3] = ["org:member", "org:admin", "org:billing"];

/// One user's memberships of one organization: one or two, each created, maybe updated, and
/// deleted (the first always, when the user joins again).
pub fn membership_history(organization: usize, user: usize) -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec((any::<bool>(), 0usize..ROLES.len()), 1..=2)
        .prop_flat_map(|generations| {
            let deleted_last = any::<bool>();
            (versions(generations.len() * 3), Just(generations), deleted_last)
        })
        .prop_map(move |(times, generations, deleted_last)| {
            let mut events = Vec::new();
            let count = generations.len();
            for (generation, ((updated, role), times)) in generations.into_iter().zip(times.chunks(3)).enumerate() {
                let created_at = times[0];
                let membership = |event_type, role, updated_at, at| Event::Membership {
                    event_type,
                    organization,
                    user,
                    generation,
                    role: ROLES[role % ROLES.len()],
                    created_at,
                    updated_at,
                    at,
                };
                events.push(membership("organizationMembership.created", role, created_at, created_at));
                let mut last = (role, created_at);
                if updated {
                    last = (role + 1, times[1]);
                    events.push(membership("organizationMembership.updated", last.0, last.1, last.1));
                    // A twin: another role at the same updated_at.
                    events.push(membership("organizationMembership.updated", last.0 + 1, last.1, last.1));
                }
                if generation + 1 < count || deleted_last {
                    events.push(membership("organizationMembership.deleted", last.0, last.1, times[2]));
                }
            }
            events
        })
}

/// Several users, each with up to two sessions, and up to two organizations with memberships of
/// some of those users, all events in time order.
pub fn history() -> impl Strategy<Value = Vec<Event>> {
    let members = proptest::collection::vec(proptest::collection::vec(any::<bool>(), 3), 0..=2);
    (proptest::collection::vec(0usize..=2, 1..=3), members)
        .prop_flat_map(|(sessions_per_user, organizations)| {
            let users = sessions_per_user.len();
            let mut parts: Vec<BoxedStrategy<Vec<Event>>> = sessions_per_user
                .iter()
                .enumerate()
                .flat_map(|(user, sessions)| {
                    std::iter::once(user_history(user).boxed())
                        .chain((0..*sessions).map(move |s| session_history(user, s).boxed()))
                })
                .collect();
            for (organization, members) in organizations.iter().enumerate() {
                parts.push(organization_history(organization).boxed());
                for user in (0..users).filter(|user| members[*user]) {
                    parts.push(membership_history(organization, user).boxed());
                }
            }
            parts
        })
        .prop_map(|parts| {
            let mut events: Vec<Event> = parts.into_iter().flatten().collect();
            events.sort_by_key(Event::at);
            events
        })
}

/// A history, and the same events each delivered one to three times, shuffled.
pub fn history_and_delivery() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    history().prop_flat_map(|history| {
        let copies = proptest::collection::vec(1usize..=3, history.len());
        (Just(history), copies).prop_flat_map(|(history, copies)| {
            let delivered: Vec<Event> =
                history.iter().zip(copies).flat_map(|(e, n)| std::iter::repeat_n(e.clone(), n)).collect();
            (Just(history), Just(delivered).prop_shuffle())
        })
    })
}

pub async fn deliver_all(table: &TestTable, events: &[Event]) {
    let app = table.app();
    for event in events {
        let body = event.body();
        let response = app.handle(delivery(&body, &event.svix_id())).await;
        assert_eq!(response.status(), 200, "{event:?}");
    }
}

/// `count` histories from a fixed seed, each with users of its own, as one list in time order.
pub fn many_histories(count: usize) -> Vec<Event> {
    let mut runner = TestRunner::deterministic();
    let mut events: Vec<Event> = (0..count)
        .flat_map(|h| {
            let events = history().new_tree(&mut runner).unwrap().current();
            events.into_iter().map(move |e| e.for_users_from(10 * h))
        })
        .collect();
    events.sort_by_key(Event::at);
    events
}

/// Delivers `events` through `app` with up to `in_flight` requests at once; the statuses, in the
/// order the answers came.
pub async fn deliver_concurrently(app: Arc<App>, events: Vec<Event>, in_flight: usize) -> Vec<u16> {
    deliver_concurrently_answered(app, events, in_flight).await.into_iter().map(|(status, _)| status).collect()
}

/// The same, each status with its event.
pub async fn deliver_concurrently_answered(app: Arc<App>, events: Vec<Event>, in_flight: usize) -> Vec<(u16, Event)> {
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    for event in events {
        let (app, permits) = (app.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let status = app.handle(delivery(&event.body(), &event.svix_id())).await.status().as_u16();
            (status, event)
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}
