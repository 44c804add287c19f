//! clerk-sync-admin: the operator's tool for the clerk-sync table. It reads Clerk's Backend API to
//! import what webhooks never carried (`backfill`) and to repair drift (`reconcile`), writing only
//! through the function's own webhook path. It runs from a laptop or CI, never in the Lambda.

mod backfill;
mod error;
mod progress;
mod reconcile;
mod users;
mod webhook_path;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use clerk_sync::plan;
use clerk_sync::store::Store;

use crate::error::RunError;
use crate::progress::Progress;
use clerk_sync::clerk::{Clerk, DEFAULT_API_URL, Patience, SecretKey};

const USER_AGENT: &str = concat!("clerk-sync-admin/", env!("CARGO_PKG_VERSION"));

/// The secret key is read from the environment only: a flag would show in shell history and `ps`.
const SECRET_KEY_VAR: &str = "CLERK_SECRET_KEY";

/// Exit codes (see admin/README.md).
const FAILED: u8 = 1;
const USAGE: u8 = 2;
const REFUSED: u8 = 3;
/// Done, but some objects could not be stored (each named on stderr): running again would skip
/// them again.
const SKIPPED: u8 = 4;

#[derive(Parser)]
#[command(
    name = "clerk-sync-admin",
    version,
    about = "Imports and repairs the clerk-sync table from Clerk's Backend API"
)]
#[command(after_help = "Needs CLERK_SECRET_KEY (never a flag) and AWS credentials. See admin/README.md.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes every Clerk user (with --sessions their sessions, with --organizations every
    /// organization and membership) through the webhook path.
    Backfill(BackfillArgs),
    /// Writes users the table lacks or holds outdated, and tombstones users Clerk no longer has
    /// (with --organizations, organizations and memberships too).
    Reconcile(ReconcileArgs),
}

#[derive(Args)]
struct Common {
    /// Clerk's Backend API.
    #[arg(long, env = "CLERK_API_URL", default_value = DEFAULT_API_URL)]
    api_url: String,
    /// The DynamoDB table the function writes.
    #[arg(long, env = "TABLE_NAME")]
    table: Option<String>,
    /// Requests to Clerk per 10 s [default: 450 for an sk_live_ key, 45 otherwise: 45% of Clerk's
    /// limits, which leaves more than half to the application's own Backend API calls].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    rate: Option<u32>,
    /// Users per page, 1 to 500.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=500))]
    limit: u32,
    /// Keep the whole Clerk object under `data` [default: what the deployed function records in the
    /// table; true before it has recorded anything]. A value other than the function's is refused.
    #[arg(
        long,
        env = "STORE_CLERK_DATA",
        value_name = "BOOL",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    store_clerk_data: Option<bool>,
    /// Read everything and report what would be written; write nothing.
    #[arg(long)]
    dry_run: bool,
}

#[derive(Args)]
struct BackfillArgs {
    #[command(flatten)]
    common: Common,
    /// Also each user's sessions.
    #[arg(long)]
    sessions: bool,
    /// Also every organization and organization membership (after the users).
    #[arg(long)]
    organizations: bool,
    /// Resume with the users created at or after this time (Clerk's `created_at`, milliseconds;
    /// printed by a run that stopped). Users of that millisecond already written are written again,
    /// as duplicates.
    #[arg(long, value_name = "MILLISECONDS", value_parser = clap::value_parser!(i64).range(0..))]
    created_from: Option<i64>,
}

#[derive(Args)]
struct ReconcileArgs {
    #[command(flatten)]
    common: Common,
    /// Refuse to tombstone more than this many users, organizations and memberships in all
    /// (nothing is written then).
    #[arg(long, default_value_t = 100)]
    max_deletions: usize,
    /// Refuse to tombstone more than this share of the table's live users (and, with
    /// --organizations, of its live organizations); at least one is always allowed.
    #[arg(long, default_value_t = 0.25, value_parser = share)]
    max_deletion_share: f64,
    /// Also organizations and organization memberships: write what the table lacks or holds
    /// outdated, tombstone what Clerk no longer has.
    #[arg(long)]
    organizations: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("could not start the async runtime: {e}"), FAILED),
    };
    runtime.block_on(async {
        match cli.command {
            Command::Backfill(args) => backfill(args).await,
            Command::Reconcile(args) => reconcile(args).await,
        }
    })
}

fn fail(message: &str, code: u8) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// What every command needs before it reads anything: the key and the Clerk client.
fn clerk(common: &Common) -> Result<Arc<Clerk>, ExitCode> {
    let key = std::env::var(SECRET_KEY_VAR).ok().and_then(SecretKey::new).ok_or_else(|| {
        fail(
            &format!("{SECRET_KEY_VAR} is not set: export the instance's secret key (sk_live_... or sk_test_...)"),
            USAGE,
        )
    })?;
    let rate = common.rate.unwrap_or(key.rate_limit() * 45 / 100);
    let patience = Patience::Batch { rate_per_10s: rate };
    Clerk::new(&common.api_url, &key, patience, USER_AGENT).map(Arc::new).map_err(|e| fail(&e.to_string(), USAGE))
}

fn table(common: &Common) -> Result<String, ExitCode> {
    common
        .table
        .clone()
        .filter(|table| !table.trim().is_empty())
        .ok_or_else(|| fail("no table: set TABLE_NAME or pass --table", USAGE))
}

async fn store(table: &str) -> Result<(aws_sdk_dynamodb::Client, Store), ExitCode> {
    let client = webhook_path::dynamodb().await;
    // A tombstone's removal runs to the end here: nobody waits on an answer within seconds.
    let store = Store::new(client.clone(), table).with_removal_budget(std::time::Duration::from_secs(24 * 3600));
    // Fails fast, before anything is read from Clerk, on a wrong table, region or credentials.
    store.warm_up().await.map_err(|e| fail(&format!("{e} (table {table})"), FAILED))?;
    Ok((client, store))
}

async fn backfill(args: BackfillArgs) -> ExitCode {
    let common = &args.common;
    let clerk = match clerk(common) {
        Ok(clerk) => clerk,
        Err(code) => return code,
    };
    let store = if common.dry_run {
        None
    } else {
        match table(common) {
            Ok(table) => match store(&table).await {
                Ok((_, store)) => Some(store),
                Err(code) => return code,
            },
            Err(code) => return code,
        }
    };
    // A dry run writes nothing and needs no table: it reads as the flag (or the default) says.
    let plan = match &store {
        Some(store) => match guard(&clerk, store, common.store_clerk_data).await {
            Ok((plan, _)) => plan,
            Err(code) => return code,
        },
        None => plan::Options { store_clerk_data: common.store_clerk_data.unwrap_or(true) },
    };
    let options = backfill::Options {
        limit: common.limit,
        created_from: args.created_from,
        sessions: args.sessions,
        organizations: args.organizations,
        dry_run: common.dry_run,
        plan,
    };
    let progress = Progress::new();
    let mut state = backfill::State::default();
    let started = Instant::now();
    let result = tokio::select! {
        result = backfill::run(&clerk, store.as_ref(), &options, &mut state, &progress) => result,
        _ = tokio::signal::ctrl_c() => Err(RunError::Interrupted),
    };
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = match (&result, options.dry_run) {
        (Ok(()), false) => "complete",
        (Ok(()), true) => "dry run complete: nothing written",
        (Err(_), _) => "stopped",
    };
    println!("backfill {outcome}: pages={} elapsed={elapsed:.1}s", state.pages);
    println!("{}", state.counts(options.sessions, options.organizations));
    match result {
        Ok(()) => done(state.skipped()),
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("resume with: {}", resume_command(state.cursor));
            ExitCode::from(FAILED)
        }
    }
}

async fn reconcile(args: ReconcileArgs) -> ExitCode {
    let common = &args.common;
    let (clerk, table) = match (clerk(common), table(common)) {
        (Ok(clerk), Ok(table)) => (clerk, table),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let (client, store) = match store(&table).await {
        Ok(connected) => connected,
        Err(code) => return code,
    };
    let (plan, instance_checked) = match guard(&clerk, &store, common.store_clerk_data).await {
        Ok(guarded) => guarded,
        Err(code) => return code,
    };
    let options = reconcile::Options {
        limit: common.limit,
        max_deletions: args.max_deletions,
        max_deletion_share: args.max_deletion_share,
        instance_checked,
        organizations: args.organizations,
        dry_run: common.dry_run,
        plan,
    };
    let progress = Progress::new();
    let mut report = reconcile::Report::default();
    let started = Instant::now();
    let result = tokio::select! {
        result = reconcile::run(&clerk, &client, &store, &table, &options, &mut report, &progress) => result,
        _ = tokio::signal::ctrl_c() => Err(RunError::Interrupted),
    };
    progress.finish();
    let elapsed = started.elapsed().as_secs_f64();
    let outcome = match (&result, options.dry_run) {
        (Ok(()), false) => "complete",
        (Ok(()), true) => "dry run complete: nothing written",
        (Err(RunError::TooManyDeletions { .. } | RunError::TooLargeAShare { .. } | RunError::InstanceUnchecked), _) => {
            "refused: nothing written"
        }
        (Err(_), _) => "stopped",
    };
    println!("reconcile {outcome}: elapsed={elapsed:.1}s");
    println!("{}", report.lines(options.dry_run, options.organizations));
    match result {
        Ok(()) => done(report.skipped()),
        Err(
            e @ (RunError::TooManyDeletions { .. } | RunError::TooLargeAShare { .. } | RunError::InstanceUnchecked),
        ) => fail(&e.to_string(), REFUSED),
        // Every write is idempotent and reconcile recomputes the drift: running it again resumes.
        Err(e) => fail(&format!("{e}; run reconcile again once the cause is fixed"), FAILED),
    }
}

/// Before any write: the secret key must belong to the Clerk instance the table mirrors (as the
/// function records it from what Clerk signs), and items are written as the deployed function
/// writes them (`data` kept or not). Returns how to plan, and whether the instance was checked:
/// a table that records nothing yet (no webhook has reached the function) cannot be checked, and
/// then the operator must say how the function stores `data`. The tool never records the
/// instance itself: a wrong key would lock the function's own deliveries out.
async fn guard(clerk: &Clerk, store: &Store, flag: Option<bool>) -> Result<(plan::Options, bool), ExitCode> {
    let unchecked = |reason: String| {
        fail(
            &format!("{reason}; cannot check which Clerk instance CLERK_SECRET_KEY belongs to; nothing written"),
            FAILED,
        )
    };
    let instance = match clerk.instance_id().await {
        Ok(Some(instance)) => instance,
        Ok(None) => return Err(unchecked("Clerk's key set (GET /jwks) names no instance".to_owned())),
        Err(e) => return Err(unchecked(e.to_string())),
    };
    let recorded = store
        .mirror()
        .await
        .map_err(|e| fail(&format!("reading the table's record of its Clerk instance: {e}"), FAILED))?;
    let Some(recorded) = recorded else {
        let store_clerk_data = flag.ok_or_else(|| {
            fail(
                "the table records no Clerk instance yet (no webhook has reached the function): pass \
                 --store-clerk-data as the function's STORE_CLERK_DATA",
                USAGE,
            )
        })?;
        return Ok((plan::Options { store_clerk_data }, false));
    };
    if recorded.instance_id != instance {
        let message = format!(
            "CLERK_SECRET_KEY belongs to Clerk instance {instance}, but the table mirrors {} (recorded from its \
             webhook deliveries): refusing to write anything. Use the secret key of that instance",
            recorded.instance_id
        );
        return Err(fail(&message, REFUSED));
    }
    let store_clerk_data = match (recorded.store_clerk_data, flag) {
        (Some(deployed), Some(asked)) if deployed != asked => {
            let message = format!(
                "the deployed function stores data={deployed} (recorded in the table), but --store-clerk-data \
                 (or STORE_CLERK_DATA) says {asked}: the tool would write items the function does not. Leave it \
                 unset to follow the function"
            );
            return Err(fail(&message, USAGE));
        }
        (Some(deployed), _) => deployed,
        (None, Some(asked)) => asked,
        (None, None) => {
            return Err(fail(
                "the table's record does not say whether the function keeps data: pass --store-clerk-data as \
                 its STORE_CLERK_DATA",
                USAGE,
            ));
        }
    };
    Ok((plan::Options { store_clerk_data }, true))
}

fn share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err("a share from 0 to 1, such as 0.25".to_owned()),
    }
}

/// A run that went to the end: 0, or 4 when objects were skipped.
fn done(skipped: u64) -> ExitCode {
    if skipped == 0 {
        return ExitCode::SUCCESS;
    }
    fail(&format!("{skipped} object(s) could not be stored: each is named above (skipped <id>: <why>)"), SKIPPED)
}

/// This run's command line with `--created-from <cursor>` (replacing any given), shell-quoted.
fn resume_command(cursor: Option<i64>) -> String {
    resume_args(std::env::args().skip(1), cursor)
}

fn resume_args(args: impl Iterator<Item = String>, cursor: Option<i64>) -> String {
    let mut words = vec!["clerk-sync-admin".to_owned()];
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        if arg == "--created-from" {
            args.next();
            continue;
        }
        if arg.starts_with("--created-from=") {
            continue;
        }
        let subcommand = arg == "backfill";
        words.push(arg);
        if let (true, Some(cursor)) = (subcommand, cursor) {
            words.extend(["--created-from".to_owned(), cursor.to_string()]);
        }
    }
    words.iter().map(|word| shell_quote(word)).collect::<Vec<_>>().join(" ")
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-./:=@%+,".contains(&b));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> impl Iterator<Item = String> {
        list.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter()
    }

    #[test]
    fn resume_command_adds_the_cursor_after_the_subcommand() {
        let command = resume_args(args(&["backfill", "--sessions", "--table", "clerk"]), Some(1_700_000_009_000));
        assert_eq!(command, "clerk-sync-admin backfill --created-from 1700000009000 --sessions --table clerk");
    }

    #[test]
    fn resume_command_replaces_an_earlier_cursor() {
        let given = args(&["backfill", "--created-from", "1", "--limit=100", "--created-from=2"]);
        assert_eq!(resume_args(given, Some(7)), "clerk-sync-admin backfill --created-from 7 --limit=100");
    }

    #[test]
    fn resume_command_without_a_cursor_is_the_same_command() {
        assert_eq!(resume_args(args(&["backfill", "--dry-run"]), None), "clerk-sync-admin backfill --dry-run");
    }

    #[test]
    fn resume_command_quotes_what_the_shell_would_split() {
        let command = resume_args(args(&["backfill", "--table", "my table's"]), None);
        assert_eq!(command, r"clerk-sync-admin backfill --table 'my table'\''s'");
    }

    #[test]
    fn store_clerk_data_takes_a_value() {
        let Command::Backfill(args) =
            Cli::parse_from(["clerk-sync-admin", "backfill", "--store-clerk-data", "false"]).command
        else {
            panic!("not a backfill")
        };
        assert_eq!(args.common.store_clerk_data, Some(false));
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
