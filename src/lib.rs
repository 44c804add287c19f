//! clerk-sync: keeps a DynamoDB table in step with Clerk from its signed webhooks.
//!
//! A delivery flows through the modules in this order, each usable without the ones after it:
//!
//! 1. [`handler`]: HTTP in (method, path, size, content type), and HTTP out.
//! 2. [`verify`]: the Standard Webhooks signature over the raw body.
//! 3. [`event`]: the verified body read as a Clerk event.
//! 4. [`plan`]: the item the event writes (pure), under the convergence [`rules`].
//! 5. [`store`]: one conditional DynamoDB request that enforces those rules, on the item [`item`]
//!    makes of the plan (within DynamoDB's limits, whatever the content); its client trusts the
//!    roots [`tls`] chooses at init.
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
