//! Every Clerk user, oldest first, page by page, for `backfill` and `reconcile`.
//!
//! `GET /users` pages by `limit` and `offset` only, and an offset moves under a listing that
//! takes minutes: a user deleted before it shifts every later user one place back, and one of them
//! would never be listed. So the listing goes by creation time instead. Each page asks for the
//! users created at or after the newest one listed so far (`created_at_after`, milliseconds,
//! oldest first) and leaves out those of that millisecond already listed. A user created during
//! the listing comes last; a user deleted during it moves nobody.
//!
//! Should a whole page of users share one millisecond (an import can do that), the next pages
//! are offset pages within that millisecond alone, until it is exhausted.

use std::collections::HashSet;

use clerk_sync::clerk::{Clerk, CreatedWindow};
use clerk_sync::plan;
use serde::Deserialize;

use crate::error::RunError;
use crate::webhook_path::{Planned, USER_EVENT, plan_array};

/// Where the listing stands.
#[derive(Debug, PartialEq)]
enum Position {
    /// Nothing listed yet.
    Start,
    /// Every user created before `at` (milliseconds) is listed, and `seen`, created at `at`.
    From {
        at: i64,
        seen: HashSet<String>,
    },
    /// As `From`, but a whole page was created at `at`: its users are listed alone, from `offset`.
    Within {
        at: i64,
        offset: u64,
        seen: HashSet<String>,
    },
    Done,
}

/// Every Clerk user, a page at a time.
pub struct Users {
    limit: u32,
    position: Position,
    /// Every user created before this has been handed out.
    cursor: Option<i64>,
    pages: u64,
}

#[derive(Deserialize)]
struct Stamp {
    id: String,
    created_at: i64,
}

impl Users {
    /// The users created at or after `from` (milliseconds; `None`: every user), `limit` a page.
    pub fn new(limit: u32, from: Option<i64>) -> Self {
        let position = match from {
            None => Position::Start,
            Some(at) => Position::From { at, seen: HashSet::new() },
        };
        Users { limit, position, cursor: from, pages: 0 }
    }

    /// The resume cursor: every user created before it has been handed out (`--created-from`).
    /// Once every user is, the millisecond after the newest: a run resumed from it lists only the
    /// users created since.
    pub fn cursor(&self) -> Option<i64> {
        self.cursor
    }

    /// The next page of users not listed before, read through the webhook path, in creation order;
    /// `None` once every user is listed. A page is read whole: an object the webhook path cannot
    /// read stops the listing, named by page (`page 3 of users (created from 1700000049000)`) and
    /// index, and so does a page that would make it skip users (not in creation order, or outside
    /// what was asked for).
    pub async fn next(&mut self, clerk: &Clerk, options: plan::Options) -> Result<Option<Vec<Planned>>, RunError> {
        loop {
            let pages = self.pages + 1;
            let (name, window, offset) = match &self.position {
                Position::Done => return Ok(None),
                Position::Start => (format!("page {pages} of users (the first)"), CreatedWindow::default(), 0),
                Position::From { at, .. } => (
                    format!("page {pages} of users (created from {at})"),
                    CreatedWindow { after: Some(at - 1), before: None },
                    0,
                ),
                Position::Within { at, offset, .. } => (
                    format!("page {pages} of users (created at {at}, from offset {offset})"),
                    CreatedWindow { after: Some(at - 1), before: Some(at + 1) },
                    *offset,
                ),
            };
            self.pages = pages;
            let body = clerk.users_page(self.limit, window, offset).await?;
            let planned = plan_array(&body, USER_EVENT, options, &name)?;
            let new = self.advance(&stamps(&body, &name)?, &name)?;
            let users: Vec<Planned> = planned.into_iter().filter(|p| new.contains(&p.id)).collect();
            if !users.is_empty() || self.position == Position::Done {
                return Ok(Some(users));
            }
        }
    }

    /// Moves the listing past a page of `stamps`; the ids of the page's users not listed before.
    fn advance(&mut self, stamps: &[Stamp], name: &str) -> Result<HashSet<String>, RunError> {
        let refuse = |reason: &str| RunError::MalformedPage { page: name.to_owned(), reason: reason.to_owned() };
        if stamps.windows(2).any(|pair| pair[0].created_at > pair[1].created_at) {
            return Err(refuse("not in creation order"));
        }
        let full = stamps.len() >= self.limit as usize;
        let (first, last) = match (stamps.first(), stamps.last()) {
            (Some(first), Some(last)) => (first.created_at, last.created_at),
            _ => (i64::MAX, i64::MAX),
        };
        let position = std::mem::replace(&mut self.position, Position::Done);
        let (new, next) = match position {
            Position::Within { at, offset, mut seen } => {
                if !stamps.is_empty() && (first != at || last != at) {
                    return Err(refuse("a list with users created outside the millisecond asked for"));
                }
                let new = stamps.iter().filter(|s| seen.insert(s.id.clone())).map(|s| s.id.clone()).collect();
                let next = match full {
                    true => Position::Within { at, offset: offset + stamps.len() as u64, seen },
                    // Done with that millisecond: on to the users created after it.
                    false => Position::From { at: at + 1, seen: HashSet::new() },
                };
                (new, next)
            }
            Position::Start | Position::From { .. } | Position::Done => {
                let (from, seen) = match position {
                    Position::From { at, seen } => (Some(at), seen),
                    _ => (None, HashSet::new()),
                };
                if from.is_some_and(|from| first < from) {
                    return Err(refuse("a list with users created before the time asked for"));
                }
                let listed = |s: &Stamp| Some(s.created_at) == from && seen.contains(&s.id);
                let new = stamps.iter().filter(|s| !listed(s)).map(|s| s.id.clone()).collect();
                let at_last = stamps.iter().filter(|s| s.created_at == last).map(|s| s.id.clone());
                let next = if !full {
                    Position::Done
                } else if first == last {
                    // A whole page in one millisecond: asking from it again would bring the same page.
                    let mut seen = if from == Some(last) { seen } else { HashSet::new() };
                    seen.extend(at_last);
                    Position::Within { at: last, offset: 0, seen }
                } else {
                    Position::From { at: last, seen: at_last.collect() }
                };
                (new, next)
            }
        };
        self.cursor = match &next {
            Position::From { at, .. } | Position::Within { at, .. } => Some(*at),
            Position::Done if !stamps.is_empty() => Some(last + 1),
            Position::Start | Position::Done => self.cursor,
        };
        self.position = next;
        Ok(new)
    }
}

/// Each user's id and `created_at`, in the page's order.
fn stamps(body: &[u8], name: &str) -> Result<Vec<Stamp>, RunError> {
    serde_json::from_slice(body).map_err(|_| RunError::MalformedPage {
        page: name.to_owned(),
        reason: "a list with a user without a numeric created_at".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps_of(users: &[(&str, i64)]) -> Vec<Stamp> {
        users.iter().map(|(id, at)| Stamp { id: (*id).to_owned(), created_at: *at }).collect()
    }

    fn ids(set: &HashSet<String>) -> Vec<&str> {
        let mut ids: Vec<&str> = set.iter().map(String::as_str).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn each_page_starts_at_the_newest_millisecond_and_leaves_out_who_was_listed_in_it() {
        let mut users = Users::new(3, None);
        let new = users.advance(&stamps_of(&[("a", 1), ("b", 2), ("c", 2)]), "p1").unwrap();
        assert_eq!(ids(&new), ["a", "b", "c"]);
        assert_eq!(users.cursor(), Some(2));
        let new = users.advance(&stamps_of(&[("b", 2), ("c", 2), ("d", 2)]), "p2").unwrap();
        assert_eq!(ids(&new), ["d"], "b and c were listed in millisecond 2");
        // A whole page in millisecond 2: the millisecond is listed alone, by offset, then 3 on.
        assert!(matches!(users.position, Position::Within { at: 2, offset: 0, .. }));
        let new = users.advance(&stamps_of(&[("b", 2), ("c", 2), ("d", 2)]), "p3").unwrap();
        assert!(new.is_empty());
        assert!(matches!(users.position, Position::Within { at: 2, offset: 3, .. }));
        let new = users.advance(&stamps_of(&[("e", 2)]), "p4").unwrap();
        assert_eq!(ids(&new), ["e"]);
        assert!(matches!(users.position, Position::From { at: 3, .. }));
        let new = users.advance(&stamps_of(&[("f", 5)]), "p5").unwrap();
        assert_eq!((ids(&new), &users.position), (vec!["f"], &Position::Done));
        assert_eq!(users.cursor(), Some(6), "a run resumed now lists the users created since");
    }

    #[test]
    fn a_page_that_would_make_the_listing_skip_is_refused() {
        let mut users = Users::new(3, Some(10));
        let unordered = users.advance(&stamps_of(&[("a", 12), ("b", 11), ("c", 13)]), "p");
        assert!(matches!(unordered, Err(RunError::MalformedPage { reason, .. }) if reason.contains("creation order")));
        let early = users.advance(&stamps_of(&[("a", 9), ("b", 11), ("c", 13)]), "p");
        assert!(matches!(early, Err(RunError::MalformedPage { reason, .. }) if reason.contains("before")));
    }

    #[test]
    fn an_empty_page_ends_the_listing() {
        let mut users = Users::new(3, Some(10));
        assert!(users.advance(&[], "p").unwrap().is_empty());
        assert_eq!((&users.position, users.cursor()), (&Position::Done, Some(10)));
    }
}
