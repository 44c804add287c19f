//! Every Clerk user, oldest first, page by page, for `backfill` and `reconcile`.
//!
//! `GET /users` pages by `limit` and `offset` only, and an offset moves under a listing that
//! takes minutes: a user deleted before it shifts every later user one place back, and one of them
//! would never be listed. So the listing goes by creation time instead. Each page asks for the
//! users created at or after the newest one listed so far (`created_at_after`, milliseconds,
//! oldest first) and leaves out those of that millisecond already listed. A user created during
//! the listing comes last; a user deleted during it moves nobody.
//!
//! Should a whole page of users share one millisecond (an import can do that), asking from it
//! again would bring the same page: that millisecond's users are then listed alone, by offset, in
//! passes of pages that overlap by one user. A page that does not start with the last user of the
//! page before shows that users moved (one deleted, or Clerk ordering them differently), and the
//! pass starts over; the millisecond is done after a pass in which nothing moved and nobody new
//! was found, and the listing stops with an error after five passes that could not say so.
//!
//! What no listing by creation time can see: a user whose `created_at` is changed, during the run,
//! to a time already listed (Clerk lets the Backend API set it). `reconcile` still keeps such a
//! user (it confirms every user it did not list, one by one, before tombstoning), and the next run
//! lists it.

use std::collections::HashSet;

use clerk_sync::clerk::{Clerk, CreatedWindow};
use clerk_sync::plan;
use serde::Deserialize;

use crate::error::RunError;
use crate::webhook_path::{Planned, USER_EVENT, plan_array};

/// Passes over one crowded millisecond before the listing gives up on it (see [`Position::Within`]).
const MAX_PASSES: u32 = 5;

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
    /// As `From`, but a whole page was created at `at`, so asking from `at` again would bring the
    /// same page: the users of `at` are listed alone, by offset, in passes. Each page after the
    /// first of a pass starts with the last user of the page before (`expect`); should it not, the
    /// users moved (one deleted, created or reordered) and the pass starts over. A pass that goes
    /// through without a move and finds nobody new ends the millisecond.
    Within {
        at: i64,
        offset: u64,
        seen: HashSet<String>,
        pass: u32,
        found: bool,
        expect: Option<String>,
    },
    Done,
}

/// Every Clerk user, a page at a time.
pub struct Users {
    limit: u32,
    position: Position,
    /// Every user created before this has been handed out.
    cursor: Option<i64>,
    /// Whether Clerk was seen taking `created_at_after` and `created_at_before` inclusively (a
    /// user of the bound's own millisecond in a page): the bounds then name the millisecond itself.
    inclusive: bool,
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
        Users { limit, position, cursor: from, inclusive: false, pages: 0 }
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
            let Some((window, offset, size)) = self.request() else { return Ok(None) };
            self.pages += 1;
            let name = match &self.position {
                Position::Within { at, offset, pass, .. } => {
                    format!("page {} of users (created at {at}, pass {}, from offset {offset})", self.pages, pass + 1)
                }
                Position::From { at, .. } => format!("page {} of users (created from {at})", self.pages),
                Position::Start | Position::Done => format!("page {} of users (the first)", self.pages),
            };
            let body = clerk.users_page(size, window, offset).await?;
            let planned = plan_array(&body, USER_EVENT, options, &name)?;
            let new = self.advance(&stamps(&body, &name)?, &name)?;
            let users: Vec<Planned> = planned.into_iter().filter(|p| new.contains(&p.id)).collect();
            if !users.is_empty() || self.position == Position::Done {
                return Ok(Some(users));
            }
        }
    }

    /// What the next page asks for: the creation window, the offset in it, the page size.
    fn request(&self) -> Option<(CreatedWindow, u64, u32)> {
        // The exclusive bounds around a millisecond, or the millisecond itself if Clerk's are inclusive.
        let bounds = |at: i64| match self.inclusive {
            false => (at.saturating_sub(1), at.saturating_add(1)),
            true => (at, at),
        };
        match &self.position {
            Position::Done => None,
            Position::Start => Some((CreatedWindow::default(), 0, self.limit)),
            Position::From { at, .. } => {
                Some((CreatedWindow { after: Some(bounds(*at).0), before: None }, 0, self.limit))
            }
            Position::Within { at, offset, .. } => {
                let (after, before) = bounds(*at);
                Some((CreatedWindow { after: Some(after), before: Some(before) }, *offset, self.within_size()))
            }
        }
    }

    /// Pages within one millisecond overlap by one user: at least two users a page.
    fn within_size(&self) -> u32 {
        self.limit.max(2)
    }

    /// Moves the listing past a page of `stamps`; the ids of the page's users not listed before.
    fn advance(&mut self, stamps: &[Stamp], name: &str) -> Result<HashSet<String>, RunError> {
        let refuse = |reason: String| RunError::MalformedPage { page: name.to_owned(), reason };
        if stamps.windows(2).any(|pair| pair[0].created_at > pair[1].created_at) {
            return Err(refuse("not in creation order".to_owned()));
        }
        let position = std::mem::replace(&mut self.position, Position::Done);
        let (new, next) = match position {
            Position::Within { at, offset, mut seen, pass, found, expect } => {
                // Users of the neighbouring milliseconds, should Clerk take the bounds inclusively,
                // come before and after this one's: not ours, and they move nobody.
                if stamps.iter().any(|s| s.created_at < at.saturating_sub(1) || s.created_at > at.saturating_add(1)) {
                    return Err(refuse(format!("a list with users created outside millisecond {at}")));
                }
                self.inclusive |= stamps.iter().any(|s| s.created_at != at);
                let moved = expect.is_some_and(|id| stamps.first().is_none_or(|s| s.id != id));
                let new: HashSet<String> = stamps
                    .iter()
                    .filter(|s| s.created_at == at && seen.insert(s.id.clone()))
                    .map(|s| s.id.clone())
                    .collect();
                let found = found || !new.is_empty();
                let full = stamps.len() >= self.within_size() as usize;
                let next = if !moved && full {
                    let expect = stamps.last().map(|s| s.id.clone());
                    Position::Within {
                        at,
                        offset: offset + u64::from(self.within_size()) - 1,
                        seen,
                        pass,
                        found,
                        expect,
                    }
                } else if !moved && !found {
                    // A whole pass, nothing moved and nobody new: on to the users created after it.
                    Position::From { at: at.saturating_add(1), seen: HashSet::new() }
                } else if pass + 1 < MAX_PASSES {
                    Position::Within { at, offset: 0, seen, pass: pass + 1, found: false, expect: None }
                } else {
                    return Err(refuse(format!(
                        "the users created at {at} kept moving (deleted, created or reordered) through {MAX_PASSES} passes; run again"
                    )));
                };
                (new, next)
            }
            Position::Start | Position::From { .. } | Position::Done => {
                let (from, seen) = match position {
                    Position::From { at, seen } => (Some(at), seen),
                    _ => (None, HashSet::new()),
                };
                // Users created before `from` (should Clerk take `created_at_after` inclusively)
                // were listed already.
                let ours: Vec<&Stamp> =
                    stamps.iter().filter(|s| from.is_none_or(|from| s.created_at >= from)).collect();
                let listed = |s: &Stamp| Some(s.created_at) == from && seen.contains(&s.id);
                let new = ours.iter().filter(|s| !listed(s)).map(|s| s.id.clone()).collect();
                let full = stamps.len() >= self.limit as usize;
                let before_from = stamps.iter().any(|s| from.is_some_and(|from| s.created_at < from));
                let learned = before_from && !self.inclusive;
                self.inclusive |= before_from;
                let next = match (full, ours.first(), ours.last()) {
                    (false, ..) => Position::Done,
                    // Clerk took the bound inclusively and filled the page with what came before it:
                    // the same position again, asked for with the bound that names it.
                    (true, None, _) if learned => Position::From { at: from.unwrap_or_default(), seen },
                    (true, Some(first), Some(last)) if first.created_at == last.created_at => {
                        // A page of one millisecond: asking from it again would bring the same page.
                        let at = last.created_at;
                        let mut seen = if from == Some(at) { seen } else { HashSet::new() };
                        seen.extend(ours.iter().map(|s| s.id.clone()));
                        Position::Within { at, offset: 0, seen, pass: 0, found: false, expect: None }
                    }
                    (true, Some(_), Some(last)) => {
                        let at = last.created_at;
                        Position::From {
                            at,
                            seen: ours.iter().filter(|s| s.created_at == at).map(|s| s.id.clone()).collect(),
                        }
                    }
                    (true, ..) => {
                        return Err(refuse("a full page of users created before the time asked for".to_owned()));
                    }
                };
                (new, next)
            }
        };
        self.cursor = match &next {
            Position::From { at, .. } | Position::Within { at, .. } => Some(*at),
            Position::Done => stamps.last().map(|s| s.created_at.saturating_add(1)).or(self.cursor),
            Position::Start => self.cursor,
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

    /// Clerk's users as `GET /users` lists them (ties in this order), and how it takes the bounds.
    struct FakeClerk {
        users: Vec<(String, i64)>,
        inclusive: bool,
        ignores_offset: bool,
    }

    impl FakeClerk {
        fn of(users: &[(&str, i64)]) -> Self {
            let users = users.iter().map(|(id, at)| ((*id).to_owned(), *at)).collect();
            FakeClerk { users, inclusive: false, ignores_offset: false }
        }

        fn page(&self, (window, offset, size): (CreatedWindow, u64, u32)) -> Vec<Stamp> {
            let after = |at: i64| window.after.is_none_or(|a| if self.inclusive { at >= a } else { at > a });
            let before = |at: i64| window.before.is_none_or(|b| if self.inclusive { at <= b } else { at < b });
            let mut listed: Vec<&(String, i64)> =
                self.users.iter().filter(|(_, at)| after(*at) && before(*at)).collect();
            listed.sort_by_key(|(_, at)| *at);
            let offset = if self.ignores_offset { 0 } else { offset as usize };
            let page = listed.into_iter().skip(offset).take(size as usize);
            page.map(|(id, at)| Stamp { id: id.clone(), created_at: *at }).collect()
        }
    }

    /// Lists every user of `clerk`, calling `change(request, clerk)` before each request; the ids
    /// handed out, in order, or the error, and the number of requests.
    fn list(
        limit: u32,
        from: Option<i64>,
        mut clerk: FakeClerk,
        mut change: impl FnMut(usize, &mut FakeClerk),
    ) -> (Result<Vec<String>, String>, usize) {
        let mut users = Users::new(limit, from);
        let mut listed = Vec::new();
        for request in 0..200 {
            let Some(asked) = users.request() else { return (Ok(listed), request) };
            change(request, &mut clerk);
            let page = clerk.page(asked);
            match users.advance(&page, "page") {
                Ok(new) => listed.extend(page.iter().filter(|s| new.contains(&s.id)).map(|s| s.id.clone())),
                Err(e) => return (Err(e.to_string()), request + 1),
            }
        }
        (Err("no end after 200 requests".to_owned()), 200)
    }

    fn sorted(mut ids: Vec<String>) -> Vec<String> {
        ids.sort();
        ids
    }

    fn names(ids: &[&str]) -> Vec<String> {
        sorted(ids.iter().map(|id| (*id).to_owned()).collect())
    }

    #[test]
    fn every_user_once_across_pages_and_crowded_milliseconds() {
        let mut users: Vec<(String, i64)> = (0..40).map(|i| (format!("u{i:02}"), 1000 + i)).collect();
        for user in &mut users[5..32] {
            user.1 = 1005;
        }
        let ids: Vec<(&str, i64)> = users.iter().map(|(id, at)| (id.as_str(), *at)).collect();
        for limit in [1, 2, 3, 10, 27, 500] {
            let (listed, requests) = list(limit, None, FakeClerk::of(&ids), |_, _| {});
            let listed = listed.unwrap();
            assert_eq!(listed.len(), 40, "limit {limit}: each once, {listed:?}");
            assert_eq!(sorted(listed), sorted(users.iter().map(|u| u.0.clone()).collect()), "limit {limit}");
            assert!(requests < 200, "limit {limit}");
        }
    }

    #[test]
    fn a_user_deleted_in_a_crowded_millisecond_makes_it_skip_nobody() {
        let clerk = FakeClerk::of(&[("u1", 5), ("u2", 5), ("u3", 5), ("u4", 5), ("u5", 5), ("u6", 9)]);
        for (limit, when) in [(2, 1), (2, 2), (2, 3), (1, 2), (3, 2)] {
            let clerk = FakeClerk { users: clerk.users.clone(), ..clerk };
            let (listed, _) = list(limit, None, clerk, |request, clerk| {
                if request == when {
                    clerk.users.retain(|(id, _)| id != "u1");
                }
            });
            let listed = sorted(listed.unwrap());
            for id in ["u2", "u3", "u4", "u5", "u6"] {
                assert!(listed.contains(&id.to_owned()), "limit {limit}, deleted before request {when}: {listed:?}");
            }
        }
    }

    #[test]
    fn users_of_one_millisecond_reordered_between_requests_are_all_listed() {
        let clerk = FakeClerk::of(&[("a", 5), ("b", 5), ("c", 5), ("d", 5), ("e", 5)]);
        let (listed, _) = list(2, None, clerk, |request, clerk| {
            if request == 2 {
                clerk.users.reverse();
            }
        });
        assert_eq!(sorted(listed.unwrap()), names(&["a", "b", "c", "d", "e"]));
    }

    #[test]
    fn inclusive_bounds_make_duplicates_at_most_never_a_skip() {
        for users in
            [&[("a", 1), ("b", 3), ("c", 5), ("d", 7), ("e", 9)][..], &[("a", 1), ("b", 2), ("c", 3), ("d", 4)]]
        {
            for limit in [1, 2, 3] {
                let clerk = FakeClerk { inclusive: true, ..FakeClerk::of(users) };
                let (listed, _) = list(limit, None, clerk, |_, _| {});
                let expected: Vec<&str> = users.iter().map(|u| u.0).collect();
                assert_eq!(sorted(listed.unwrap()), names(&expected), "limit {limit}");
            }
        }
    }

    #[test]
    fn a_clerk_ignoring_the_offset_stops_the_listing_with_an_error_not_a_loop() {
        let clerk = FakeClerk { ignores_offset: true, ..FakeClerk::of(&[("a", 5), ("b", 5), ("c", 5), ("d", 5)]) };
        let (listed, requests) = list(2, None, clerk, |_, _| {});
        assert!(listed.as_ref().is_err_and(|e| e.contains("kept moving")), "{listed:?}");
        assert!(requests < 20, "{requests}");
    }

    #[test]
    fn a_page_out_of_creation_order_is_refused() {
        let mut users = Users::new(3, Some(10));
        let page = [("a", 12), ("b", 11), ("c", 13)].map(|(id, at)| Stamp { id: id.to_owned(), created_at: at });
        let unordered = users.advance(&page, "p");
        assert!(matches!(unordered, Err(RunError::MalformedPage { reason, .. }) if reason.contains("creation order")));
    }

    #[test]
    fn the_cursor_resumes_without_a_skip_and_after_the_end_lists_only_what_is_new() {
        let clerk = || FakeClerk::of(&[("a", 1), ("b", 2), ("c", 2), ("d", 3), ("e", 4)]);
        let mut users = Users::new(2, None);
        let first = clerk().page(users.request().unwrap());
        users.advance(&first, "p").unwrap();
        // Stopped after the first page (a, b): resumed from the cursor, c is not skipped.
        assert_eq!(users.cursor(), Some(2));
        let (resumed, _) = list(2, users.cursor(), clerk(), |_, _| {});
        assert_eq!(sorted(resumed.unwrap()), names(&["b", "c", "d", "e"]));
        let mut users = Users::new(2, None);
        while let Some(asked) = users.request() {
            users.advance(&clerk().page(asked), "p").unwrap();
        }
        assert_eq!(users.cursor(), Some(5), "the millisecond after the newest user");
        let (empty, _) = list(2, Some(10), clerk(), |_, _| {});
        assert_eq!((empty.unwrap(), users.cursor()), (vec![], Some(5)));
    }
}
