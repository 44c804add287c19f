//! The core promise, on a real DynamoDB API: for any set of events, delivered in any order, any
//! number of times, one by one or many at once, the table equals the one in-order delivery gives.
//!
//! Histories are generated the way Clerk produces them: per object, versions (`updated_at`)
//! increase; users are created, updated, maybe deleted; sessions may start pending, become
//! active, and end in one or more terminal statuses. Objects interleave freely in time. A
//! deletion's envelope `timestamp` comes from another clock than `updated_at`, so it may be
//! lower than the user's last update: "in order" means the order things happened, not versions.
//! `PROPTEST_CASES` sets the number of cases (default 48; `scripts/test` runs more).

mod common;

use std::sync::Arc;

use common::clerk;
use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

#[derive(Clone, Debug)]
enum Event {
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
}

impl Event {
    /// When the change happened: the order of in-order delivery.
    fn at(&self) -> i64 {
        match self {
            Event::User { version, .. } | Event::Session { version, .. } => *version,
            Event::UserDeleted { at, .. } => *at,
        }
    }

    /// A stable message id: Svix keeps one id across retries of a message.
    fn svix_id(&self) -> String {
        format!("msg_{}", self.at())
    }

    fn body(&self) -> String {
        let user_id = |u: &usize| format!("user_{u}Prop");
        match self {
            Event::User { event_type, user, version, name } => clerk::user(event_type, &user_id(user), *version, name),
            Event::UserDeleted { user, timestamp, .. } => clerk::user_deleted(&user_id(user), *timestamp),
            Event::Session { event_type, user, session, status, version } => {
                clerk::session(event_type, &format!("sess_{user}x{session}"), &user_id(user), status, *version, None)
            }
        }
    }
}

const NAMES: [&str; 4] = ["Ada", "Grace", "Alan", "Edsger"];
const TERMINAL: [(&str, &str); 3] =
    [("session.ended", "ended"), ("session.removed", "removed"), ("session.revoked", "revoked")];

/// Increasing versions: a start and gaps, so objects interleave in time.
fn versions(count: usize) -> impl Strategy<Value = Vec<i64>> {
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

fn user_history(user: usize) -> impl Strategy<Value = Vec<Event>> {
    (0usize..=3, any::<bool>(), 0usize..NAMES.len(), 0i64..60_000)
        .prop_flat_map(move |(updates, deleted, name, skew)| {
            (versions(1 + updates + deleted as usize), Just((deleted, name, skew)))
        })
        .prop_map(move |(versions, (deleted, name, skew))| {
            let mut events = Vec::new();
            let live = if deleted { &versions[..versions.len() - 1] } else { &versions[..] };
            for (i, version) in live.iter().enumerate() {
                let event_type = if i == 0 { "user.created" } else { "user.updated" };
                events.push(Event::User { event_type, user, version: *version, name: NAMES[(name + i) % NAMES.len()] });
            }
            if deleted {
                let at = *versions.last().unwrap();
                events.push(Event::UserDeleted { user, at, timestamp: at - skew });
            }
            events
        })
}

fn session_history(user: usize, session: usize) -> impl Strategy<Value = Vec<Event>> {
    (any::<bool>(), proptest::sample::subsequence(TERMINAL.to_vec(), 0..=2))
        .prop_flat_map(|(pending, terminal)| {
            (versions(1 + pending as usize + terminal.len()), Just((pending, terminal)))
        })
        .prop_map(move |(versions, (pending, terminal))| {
            let mut steps = Vec::new();
            if pending {
                steps.push(("session.pending", "pending"));
            }
            steps.push(("session.created", "active"));
            steps.extend(terminal);
            steps
                .into_iter()
                .zip(versions)
                .map(|((event_type, status), version)| Event::Session { event_type, user, session, status, version })
                .collect()
        })
}

/// Several users, each with up to two sessions, all events in time order.
fn history() -> impl Strategy<Value = Vec<Event>> {
    proptest::collection::vec(0usize..=2, 1..=3)
        .prop_flat_map(|sessions_per_user| {
            let parts: Vec<BoxedStrategy<Vec<Event>>> = sessions_per_user
                .iter()
                .enumerate()
                .flat_map(|(user, sessions)| {
                    std::iter::once(user_history(user).boxed())
                        .chain((0..*sessions).map(move |s| session_history(user, s).boxed()))
                })
                .collect();
            parts
        })
        .prop_map(|parts| {
            let mut events: Vec<Event> = parts.into_iter().flatten().collect();
            events.sort_by_key(Event::at);
            events
        })
}

/// A history, and the same events each delivered one to three times, shuffled.
fn history_and_delivery() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
    history().prop_flat_map(|history| {
        let copies = proptest::collection::vec(1usize..=3, history.len());
        (Just(history), copies).prop_flat_map(|(history, copies)| {
            let delivered: Vec<Event> =
                history.iter().zip(copies).flat_map(|(e, n)| std::iter::repeat_n(e.clone(), n)).collect();
            (Just(history), Just(delivered).prop_shuffle())
        })
    })
}

async fn deliver_all(table: &TestTable, events: &[Event]) {
    let app = table.app();
    for event in events {
        let body = event.body();
        let response = app.handle(delivery(&body, &event.svix_id())).await;
        assert_eq!(response.status(), 200, "{event:?}");
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

#[test]
fn shuffled_duplicated_delivery_equals_in_order_delivery() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut runner = TestRunner::new(ProptestConfig { cases: cases(), ..ProptestConfig::default() });
    let deliveries = std::cell::Cell::new(0usize);
    runner
        .run(&history_and_delivery(), |(history, delivered)| {
            deliveries.set(deliveries.get() + history.len() + delivered.len());
            runtime.block_on(async {
                let in_order = TestTable::create().await;
                deliver_all(&in_order, &history).await;
                let shuffled = TestTable::create().await;
                deliver_all(&shuffled, &delivered).await;
                let (expected, got) = (in_order.items().await, shuffled.items().await);
                in_order.delete().await;
                shuffled.delete().await;
                prop_assert_eq!(got, expected);
                Ok(())
            })
        })
        .unwrap();
    println!("{} cases, {} deliveries", cases(), deliveries.get());
}

/// Many histories at once, delivered with 32 requests in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_delivery_equals_in_order_delivery() {
    let mut runner = TestRunner::deterministic();
    let histories: Vec<Vec<Event>> = (0..12).map(|_| history().new_tree(&mut runner).unwrap().current()).collect();
    // Histories reuse user numbers: give each its own users.
    let events: Vec<Event> = histories
        .into_iter()
        .enumerate()
        .flat_map(|(h, events)| {
            events.into_iter().map(move |e| match e {
                Event::User { event_type, user, version, name } => {
                    Event::User { event_type, user: user + 10 * h, version, name }
                }
                Event::UserDeleted { user, at, timestamp } => Event::UserDeleted { user: user + 10 * h, at, timestamp },
                Event::Session { event_type, user, session, status, version } => {
                    Event::Session { event_type, user: user + 10 * h, session, status, version }
                }
            })
        })
        .collect();
    let mut in_order_events = events.clone();
    in_order_events.sort_by_key(Event::at);
    let in_order = TestTable::create().await;
    deliver_all(&in_order, &in_order_events).await;

    let mut delivered: Vec<Event> = events.iter().flat_map(|e| [e.clone(), e.clone()]).collect();
    delivered.reverse();
    let concurrent = TestTable::create().await;
    let app = Arc::new(concurrent.app());
    let permits = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = tokio::task::JoinSet::new();
    for event in delivered {
        let (app, permits) = (app.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire().await.unwrap();
            let body = event.body();
            app.handle(delivery(&body, &event.svix_id())).await.status().as_u16()
        });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(concurrent.items().await, in_order.items().await);
}

/// A deletion racing many session writes for the same user leaves no session behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletion_racing_session_writes_leaves_no_session() {
    let table = TestTable::create().await;
    let app = Arc::new(table.app());
    let user = "user_race";
    let mut tasks = tokio::task::JoinSet::new();
    for s in 0..40 {
        let session_app = app.clone();
        tasks.spawn(async move {
            let body = clerk::session("session.created", &format!("sess_race{s}"), user, "active", 1000 + s, None);
            session_app.handle(delivery(&body, &format!("msg_race{s}"))).await.status().as_u16()
        });
        if s == 20 {
            let app = app.clone();
            tasks.spawn(async move {
                app.handle(delivery(&clerk::user_deleted(user, 5000), "msg_del")).await.status().as_u16()
            });
        }
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    let items = table.items().await;
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items.values().next().unwrap()["deleted"], true);
}
