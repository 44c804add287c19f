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
//! was found, and the listing stops with an error after five passes that could not say so. Those
//! pages ask for no upper bound: the first user created after the millisecond ends its list.
//!
//! A page that would make the listing skip or loop stops it with an error naming the page: users
//! out of creation order, one user twice, a `created_at` outside 1970 to 9999, users created
//! before the time asked for. Should Clerk take `created_at_after` inclusively (its documentation
//! says "after"), that is learned from the first page that shows it, and the bound then names the
//! millisecond itself.
//!
//! What no listing by creation time can see: a user whose `created_at` is changed, during the run,
//! to a time already listed (Clerk lets the Backend API set it). `reconcile` still keeps such a
//! user (it confirms every user it did not list, one by one, before tombstoning), and the next run
//! lists it.

use std::collections::HashSet;

use clerk_sync::clerk::Clerk;
use clerk_sync::plan;
use serde::Deserialize;

use crate::error::RunError;
use crate::webhook_path::{Planned, USER_EVENT, plan_array};

/// Passes over one crowded millisecond before the listing gives up on it (see [`Position::Within`]).
const MAX_PASSES: u32 = 5;
/// The `created_at` values a listing takes, milliseconds since the epoch: up to the end of year
/// 9999. A page with any other is refused: the bounds around it could not be asked for.
const CREATED_AT: std::ops::RangeInclusive<i64> = 0..=253_402_300_799_999;

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
    /// Whether Clerk was seen taking `created_at_after` inclusively (a user of the bound's own
    /// millisecond in a page): the bound then names the millisecond itself, not the one before.
    after_inclusive: bool,
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
        Users { limit, position, cursor: from, after_inclusive: false, pages: 0 }
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
            let Some((after, offset, size)) = self.request() else { return Ok(None) };
            self.pages += 1;
            let name = match &self.position {
                Position::Within { at, offset, pass, .. } => {
                    format!("page {} of users (created at {at}, pass {}, from offset {offset})", self.pages, pass + 1)
                }
                Position::From { at, .. } => format!("page {} of users (created from {at})", self.pages),
                Position::Start | Position::Done => format!("page {} of users (the first)", self.pages),
            };
            let body = clerk.users_page(size, after, offset).await?;
            let planned = plan_array(&body, USER_EVENT, options, &name)?;
            let new = self.advance(&stamps(&body, &name)?, &name)?;
            let users: Vec<Planned> = planned.into_iter().filter(|p| new.contains(&p.id)).collect();
            if !users.is_empty() || self.position == Position::Done {
                return Ok(Some(users));
            }
        }
    }

    /// What the next page asks for: `created_at_after`, the offset, the page size.
    fn request(&self) -> Option<(Option<i64>, u64, u32)> {
        let after = |at: i64| if self.after_inclusive { at } else { at - 1 };
        match &self.position {
            Position::Done => None,
            Position::Start => Some((None, 0, self.limit)),
            Position::From { at, .. } => Some((Some(after(*at)), 0, self.limit)),
            Position::Within { at, offset, .. } => Some((Some(after(*at)), *offset, self.within_size())),
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
        if let Some(odd) = stamps.iter().find(|s| !CREATED_AT.contains(&s.created_at)) {
            return Err(refuse(format!("a list with a user created at {}, outside 0 to year 9999", odd.created_at)));
        }
        let mut ids = HashSet::new();
        if !stamps.iter().all(|s| ids.insert(s.id.as_str())) {
            return Err(refuse("a list naming one user twice".to_owned()));
        }
        // Users created before the millisecond asked from are those of the one before it, should
        // Clerk take `created_at_after` inclusively (then learned: they were listed already, and
        // the next page names the millisecond itself); any earlier is a page that cannot be read.
        let from = match &self.position {
            Position::From { at, .. } | Position::Within { at, .. } => Some(*at),
            Position::Start | Position::Done => None,
        };
        let earlier = |s: &&Stamp| from.is_some_and(|from| s.created_at < from);
        let learned = match stamps.iter().filter(earlier).map(|s| s.created_at).min() {
            None => false,
            Some(at) if !self.after_inclusive && Some(at + 1) == from => {
                self.after_inclusive = true;
                true
            }
            Some(_) => return Err(refuse("a list with users created before the time asked for".to_owned())),
        };
        let position = std::mem::replace(&mut self.position, Position::Done);
        let (new, next) = match position {
            Position::Within { at, offset, mut seen, pass, found, expect } => {
                let moved = learned || expect.is_some_and(|id| stamps.first().is_none_or(|s| s.id != id));
                let new: HashSet<String> = stamps
                    .iter()
                    .filter(|s| s.created_at == at && seen.insert(s.id.clone()))
                    .map(|s| s.id.clone())
                    .collect();
                let found = found || !new.is_empty();
                // The pass goes on while pages are full of this millisecond's users (and those
                // before them); a user created after it ends the millisecond's list.
                let goes_on =
                    stamps.len() >= self.within_size() as usize && stamps.last().is_some_and(|s| s.created_at <= at);
                let next = if !moved && goes_on {
                    let expect = stamps.last().map(|s| s.id.clone());
                    let offset = offset + u64::from(self.within_size()) - 1;
                    Position::Within { at, offset, seen, pass, found, expect }
                } else if !moved && !found {
                    // A whole pass, nothing moved and nobody new: on to the users created after it.
                    Position::From { at: at + 1, seen: HashSet::new() }
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
                let seen = match position {
                    Position::From { seen, .. } => seen,
                    _ => HashSet::new(),
                };
                let ours: Vec<&Stamp> = stamps.iter().filter(|s| !earlier(s)).collect();
                let listed = |s: &Stamp| Some(s.created_at) == from && seen.contains(&s.id);
                let new = ours.iter().filter(|s| !listed(s)).map(|s| s.id.clone()).collect();
                let full = stamps.len() >= self.limit as usize;
                let next = match (full, ours.first(), ours.last()) {
                    (false, ..) => Position::Done,
                    // The page held users of the millisecond before (an inclusive bound, now
                    // learned): the same position again, asked for with the bound that names it.
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
            Position::Done => stamps.last().map(|s| s.created_at + 1).or(self.cursor),
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
        /// Takes `created_at_after` inclusively.
        inclusive: bool,
        ignores_offset: bool,
    }

    impl FakeClerk {
        fn of(users: &[(&str, i64)]) -> Self {
            let users = users.iter().map(|(id, at)| ((*id).to_owned(), *at)).collect();
            FakeClerk { users, inclusive: false, ignores_offset: false }
        }

        fn page(&self, (after, offset, size): (Option<i64>, u64, u32)) -> Vec<Stamp> {
            let taken = |at: i64| after.is_none_or(|a| if self.inclusive { at >= a } else { at > a });
            let mut listed: Vec<&(String, i64)> = self.users.iter().filter(|(_, at)| taken(*at)).collect();
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

    /// Thousands of generated instances (users crowded into a few milliseconds, page sizes 1 to 4,
    /// either reading of `created_at_after`), users deleted and created (now, so last) while the
    /// listing runs, and runs stopped part-way and resumed from the cursor: every user that exists
    /// throughout is listed, and every listing ends.
    #[test]
    fn no_user_present_throughout_is_ever_skipped() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = |below: u64| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state % below
        };
        for case in 0..3000 {
            let count = random(12) as usize;
            let mut users: Vec<(String, i64)> = (0..count).map(|i| (format!("u{i}"), random(4) as i64)).collect();
            users.sort_by_key(|u| u.1);
            let clerk = FakeClerk { users, inclusive: random(2) == 1, ignores_offset: false };
            let limit = 1 + random(4) as u32;
            let (deleted, created) = (random(count as u64 + 1) as usize, random(3) == 0);
            let (when, stop) = (random(6) as usize, random(4) as usize);
            let described = format!(
                "users {:?}, limit {limit}, inclusive {}, u{deleted} deleted before request {when}{}, stopped after {stop}",
                clerk.users,
                clerk.inclusive,
                if created { " and one created" } else { "" }
            );
            let gone = format!("u{deleted}");
            let present: Vec<String> = clerk.users.iter().map(|u| u.0.clone()).filter(|id| *id != gone).collect();
            // The deletion (and creation) before request `when`, counted across both runs.
            let change = |request: usize, clerk: &mut FakeClerk| {
                if request == when {
                    clerk.users.retain(|u| u.0 != gone);
                    if created {
                        clerk.users.push(("new".to_owned(), 100));
                    }
                }
            };
            // A first run stopped after `stop` pages (or at its end), then resumed from its cursor.
            let mut first = Users::new(limit, None);
            let mut listed = Vec::new();
            let mut clerk = clerk;
            let mut requests = 0;
            while requests < stop {
                let Some(asked) = first.request() else { break };
                change(requests, &mut clerk);
                requests += 1;
                let page = clerk.page(asked);
                let new = first.advance(&page, "p").unwrap();
                listed.extend(page.iter().filter(|s| new.contains(&s.id)).map(|s| s.id.clone()));
            }
            if first.request().is_some() {
                let (rest, n) = list(limit, first.cursor(), clerk, |request, clerk| change(requests + request, clerk));
                assert!(n < 200, "case {case}: no end");
                listed.extend(rest.unwrap_or_else(|e| panic!("case {case}: {e}: {described}")));
            }
            for id in &present {
                assert!(listed.contains(id), "case {case}: {id} skipped, listed {listed:?}: {described}");
            }
        }
    }

    #[test]
    fn a_page_naming_a_user_twice_or_a_time_out_of_range_is_refused() {
        let stamp = |id: &str, at: i64| Stamp { id: id.to_owned(), created_at: at };
        for (page, why) in [
            (vec![stamp("a", 5), stamp("a", 5)], "twice"),
            (vec![stamp("a", 5), stamp("b", i64::MAX)], "outside"),
            (vec![stamp("a", -10)], "outside"),
        ] {
            let refused = Users::new(2, None).advance(&page, "p");
            assert!(
                matches!(&refused, Err(RunError::MalformedPage { reason, .. }) if reason.contains(why)),
                "{refused:?}"
            );
        }
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
