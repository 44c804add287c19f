//! clerk-sync: keeps a DynamoDB table in step with Clerk from its signed webhooks, and on demand
//! for a signed-in user.
//!
//! A delivery flows through the modules in this order, each usable without the ones after it:
//!
//! 1. [`handler`]: HTTP in, routed to [`webhook`] (`POST /webhooks/clerk`), which takes it from
//!    method, size and content type to the answer.
//! 2. [`verify`]: the Standard Webhooks signature over the raw body.
//! 3. [`event`]: the verified body read as a Clerk event.
//! 4. [`plan`]: the item the event writes (pure), under the convergence [`rules`].
//! 5. [`store`]: one conditional DynamoDB request that enforces those rules, on the item [`item`]
//!    makes of the plan (within DynamoDB's limits, whatever the content); its client trusts the
//!    roots [`tls`] chooses at init.
//!
//! The second entrance, [`sync`] (`POST /sync`), verifies a Clerk session token
//! ([`session_token`]), fetches the caller's user, session and memberships from Clerk's Backend API
//! ([`clerk`]), and writes them through steps 3 to 5 exactly as webhooks carrying them would.
//!
//! Every request's log line carries its CloudWatch metrics ([`metrics`], written by [`logging`]).
//!
//! A second function, on the table's stream, finishes deletions too large for one delivery:
//! [`cleanup`].

pub mod cleanup;
pub mod clerk;
pub mod config;
pub mod event;
pub mod handler;
pub mod item;
pub mod logging;
pub mod metrics;
pub mod plan;
pub mod rules;
pub mod session_token;
pub mod store;
pub mod sync;
pub mod tls;
pub mod verify;
pub mod webhook;
