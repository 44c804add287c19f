//! Why a run stopped. Messages name pages, object indexes, ids and Clerk's error codes; never a
//! body, an email, a name or the secret key.

use clerk_sync::store::StoreError;

use clerk_sync::clerk::{ClerkError, ListError};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Clerk(#[from] ClerkError),
    #[error("{page}: the answer is {reason}")]
    MalformedPage { page: String, reason: String },
    #[error("{page}, object {index}: {reason}")]
    MalformedObject { page: String, index: usize, reason: String },
    #[error("writing {id} to DynamoDB failed: {source}")]
    Write { id: String, source: StoreError },
    #[error("DynamoDB {operation} failed: {detail}")]
    Table { operation: &'static str, detail: String },
    /// `what` names the tombstones: `4 users`, or with organizations `2 users, 1 organization and
    /// 3 memberships (6 in all)`.
    #[error(
        "refusing to tombstone {what}: more than --max-deletions {max}. Check that CLERK_SECRET_KEY \
         belongs to the Clerk instance that feeds this table; if it does, run again with --max-deletions {candidates}"
    )]
    TooManyDeletions { candidates: usize, what: String, max: usize },
    #[error(
        "refusing to tombstone {candidates} of the table's {live} live {what}: more than --max-deletion-share {share}. \
         Check that CLERK_SECRET_KEY belongs to the Clerk instance that feeds this table; if it does, run again \
         with a larger --max-deletion-share"
    )]
    TooLargeAShare { what: &'static str, candidates: usize, live: usize, share: f64 },
    #[error(
        "the table records no Clerk instance yet (no webhook has reached the function), so CLERK_SECRET_KEY cannot \
         be checked against it: refusing to tombstone anything. Let one webhook through first (Clerk's dashboard, \
         Webhooks, Testing)"
    )]
    InstanceUnchecked,
    #[error("interrupted")]
    Interrupted,
}

impl From<ListError> for RunError {
    fn from(e: ListError) -> Self {
        match e {
            ListError::Clerk(e) => RunError::Clerk(e),
            ListError::Malformed { page, reason } => RunError::MalformedPage { page, reason },
        }
    }
}
