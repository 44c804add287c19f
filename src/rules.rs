//! The convergence rules: who wins when two versions of one Clerk object meet.
//!
//! Everything that makes the table order-independent lives here, twice over on purpose: once as
//! plain functions (the specification, tested exhaustively and by property), and once as the
//! DynamoDB condition expressions that enforce them atomically in a single request. The
//! integration tests check, on a real DynamoDB API, that each expression agrees with its function
//! for every combination of stored and incoming state.
//!
//! In order of precedence:
//! 1. A user or organization tombstone beats everything; Clerk never reuses their ids, so it is
//!    final.
//! 2. A deleted user has no sessions and no memberships, and a deleted organization has no
//!    memberships: a deletion writes its tombstone and then removes what was there, and each of
//!    those writes reads the user (and organization) item after it is written and removes itself
//!    if it finds a tombstone, so that of the two, the one that comes second sees the other
//!    (`store::Store::unless_orphaned`).
//! 3. A terminal session status beats a live one, whatever the versions.
//! 4. Of two memberships of one user in one organization (leaving and joining again makes a new
//!    one), the later created wins; within one membership, its deletion beats any update.
//! 5. Otherwise the higher [`Rank`] wins: the higher version, and between two different contents at
//!    one version the higher digest of the content. The same content at the same version is a
//!    duplicate and changes nothing.

/// Session statuses after which a session can never be live again.
pub const TERMINAL_SESSION_STATUSES: [&str; 6] = ["ended", "removed", "revoked", "expired", "abandoned", "replaced"];

/// Below this an envelope timestamp is in seconds (Clerk's docs say ms; some of its examples use s).
const SECONDS_THRESHOLD: i64 = 1_000_000_000_000;

/// Whether a session status is terminal. Statuses Clerk may add later count as live, so they
/// never freeze a session.
pub fn is_terminal(status: &str) -> bool {
    TERMINAL_SESSION_STATUSES.contains(&status)
}

/// The version of the change an event carries, in milliseconds: the object's `updated_at` where
/// present, otherwise the envelope `timestamp` normalized to milliseconds.
pub fn version(updated_at: Option<i64>, envelope_timestamp: Option<i64>) -> Option<u64> {
    let positive = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0);
    updated_at.and_then(positive).or_else(|| {
        let ts = envelope_timestamp.and_then(positive)?;
        if ts < SECONDS_THRESHOLD as u64 { ts.checked_mul(1000) } else { Some(ts) }
    })
}

/// A SHA-256 digest (its first 128 bits) of the Clerk object a write carries. It orders two
/// different contents of one object at one version, so that which one stays does not depend on
/// the order they arrive in. Stored as 32 lowercase hex digits, whose string order (DynamoDB's
/// `<` on strings) is the order of the bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 16]);

impl Digest {
    /// Above every digest this crate makes.
    pub const MAX: Digest = Digest([0xff; 16]);

    pub fn of(content: &[u8]) -> Self {
        use sha2::Digest as _;
        let full = sha2::Sha256::digest(content);
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&full[..16]);
        Self(bytes)
    }

    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The digest a stored `digest` attribute holds; `None` for anything that is not 32 lowercase
    /// hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let valid = hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !valid {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    #[cfg(test)]
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// Where a change stands among the changes of one object: its version, then its digest. An item
/// without a digest (a tombstone, or one written before digests existed) ranks below any digest
/// at its version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rank {
    pub version: u64,
    pub digest: Option<Digest>,
}

impl Rank {
    pub const fn new(version: u64, digest: Option<Digest>) -> Self {
        Self { version, digest }
    }
}

/// What a stored item says about precedence (read back from DynamoDB when a condition fails).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    pub rank: Rank,
    /// A user tombstone.
    pub deleted: bool,
    /// A session in a terminal status.
    pub terminal: bool,
}

/// The result of offering one write to the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The write wins and is applied.
    Apply,
    /// The same version is already stored: nothing to do.
    Duplicate,
    /// Something that beats this write is stored: nothing to do.
    Stale,
    /// The user was deleted; nothing about them is written again.
    UserDeleted,
    /// The organization was deleted; none of its memberships is written again.
    OrganizationDeleted,
}

/// `user.created` / `user.updated` ranked `incoming` against the stored user item.
pub fn user_upsert(stored: Option<Stored>, incoming: Rank) -> Verdict {
    match stored {
        None => Verdict::Apply,
        Some(s) if s.deleted => Verdict::UserDeleted,
        Some(s) => compare(s.rank, incoming),
    }
}

/// `user.deleted` at `version` against the stored user item. A live user always loses to the
/// tombstone; between tombstones the higher version stays, so the result does not depend on the
/// order in which two deletions of one user arrive.
pub fn user_tombstone(stored: Option<Stored>, incoming: Rank) -> Verdict {
    match stored {
        Some(s) if s.deleted => compare(s.rank, incoming),
        _ => Verdict::Apply,
    }
}

/// `organization.created` / `organization.updated`: the same rule as users (a final tombstone,
/// then versions).
pub fn organization_upsert(stored: Option<Stored>, incoming: Rank) -> Verdict {
    match user_upsert(stored, incoming) {
        Verdict::UserDeleted => Verdict::OrganizationDeleted,
        verdict => verdict,
    }
}

/// `organization.deleted`: the same rule as `user.deleted`.
pub fn organization_tombstone(stored: Option<Stored>, incoming: Rank) -> Verdict {
    user_tombstone(stored, incoming)
}

/// What the membership rule compares, stored or incoming. A membership item holds one user's
/// membership of one organization; `created_at` and then `id` tell a later membership (the user
/// left and joined again) from an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipState<'a> {
    pub created_at: i64,
    pub id: &'a str,
    pub deleted: bool,
    pub rank: Rank,
}

impl MembershipState<'_> {
    /// The order memberships merge in: the later membership, then within one membership its
    /// tombstone over any live state, then the higher rank. A maximum under one total order is
    /// what makes any delivery order and any repetition give the same item.
    fn precedence(&self) -> (i64, &str, bool, Rank) {
        (self.created_at, self.id, self.deleted, self.rank)
    }
}

/// An `organizationMembership.*` event (live, or a tombstone for `.deleted`) against the stored
/// membership item. Whether the organization or the user was deleted is checked beside it.
pub fn membership(stored: Option<MembershipState<'_>>, incoming: MembershipState<'_>) -> Verdict {
    match stored {
        None => Verdict::Apply,
        Some(stored) => match incoming.precedence().cmp(&stored.precedence()) {
            std::cmp::Ordering::Greater => Verdict::Apply,
            std::cmp::Ordering::Equal => Verdict::Duplicate,
            std::cmp::Ordering::Less => Verdict::Stale,
        },
    }
}

/// A session event against the user's state and the stored session item.
pub fn session_upsert(user_deleted: bool, stored: Option<Stored>, incoming: Rank, terminal: bool) -> Verdict {
    if user_deleted {
        return Verdict::UserDeleted;
    }
    match stored {
        None => Verdict::Apply,
        Some(s) if s.terminal && !terminal => Verdict::Stale,
        Some(s) if !s.terminal && terminal => Verdict::Apply,
        Some(s) => compare(s.rank, incoming),
    }
}

fn compare(stored: Rank, incoming: Rank) -> Verdict {
    match incoming.cmp(&stored) {
        std::cmp::Ordering::Greater => Verdict::Apply,
        std::cmp::Ordering::Equal => Verdict::Duplicate,
        std::cmp::Ordering::Less => Verdict::Stale,
    }
}

/// The same rules as DynamoDB condition expressions. Each holds exactly when its function above
/// returns [`Verdict::Apply`]. Attribute names go through placeholders (`status` is reserved).
pub mod condition {
    /// The placeholders every expression may use, and the attributes they stand for.
    pub const NAMES: [(&str, &str); 7] = [
        ("#pk", "pk"),
        ("#version", "version"),
        ("#digest", "digest"),
        ("#deleted", "deleted"),
        ("#status", "status"),
        ("#created_at", "created_at"),
        ("#id", "id"),
    ];

    /// Placeholders for the terminal statuses, in the order of `TERMINAL_SESSION_STATUSES`.
    pub const TERMINAL_VALUES: [&str; 6] = [":ended", ":removed", ":revoked", ":expired", ":abandoned", ":replaced"];

    /// The incoming version's placeholder.
    pub const VERSION: &str = ":version";
    /// The incoming digest's placeholder.
    pub const DIGEST: &str = ":digest";
    /// The incoming membership's `created_at` and `id` placeholders.
    pub const CREATED_AT: &str = ":created_at";
    pub const ID: &str = ":id";

    // Every upsert condition below contains, as its "lower rank" test, the same clause:
    //   (#version < :version OR (#version = :version AND (attribute_not_exists(#digest) OR #digest < :digest)))
    // which is `Rank`'s order: the version, then the digest, an absent digest lowest.

    /// [`super::user_upsert`]: no item yet, or a live one of a lower rank.
    pub const USER_UPSERT: &str = "attribute_not_exists(#pk) OR (attribute_not_exists(#deleted) AND (#version < :version OR (#version = :version AND (attribute_not_exists(#digest) OR #digest < :digest))))";

    /// [`super::user_tombstone`]: anything but a tombstone of the same or a higher version.
    /// Tombstones carry no digest: two of one version are the same item.
    pub const USER_TOMBSTONE: &str = "attribute_not_exists(#deleted) OR #version < :version";

    /// [`super::organization_upsert`]: the user rule, on the organization item.
    pub const ORGANIZATION_UPSERT: &str = USER_UPSERT;

    /// [`super::organization_tombstone`]: the user rule, on the organization item.
    pub const ORGANIZATION_TOMBSTONE: &str = USER_TOMBSTONE;

    /// [`super::membership`] for a live incoming membership: no item yet, a membership created
    /// earlier, or the same live membership of a lower rank.
    pub const LIVE_MEMBERSHIP: &str = "attribute_not_exists(#pk) OR #created_at < :created_at OR (#created_at = :created_at AND #id < :id) OR (#created_at = :created_at AND #id = :id AND attribute_not_exists(#deleted) AND (#version < :version OR (#version = :version AND (attribute_not_exists(#digest) OR #digest < :digest))))";

    /// [`super::membership`] for a membership's tombstone: no item yet, a membership created
    /// earlier, or the same membership live, or deleted at a lower version. A tombstone keeps only
    /// ids, `created_at` and the version: two of one version are the same item, without a digest.
    pub const MEMBERSHIP_TOMBSTONE: &str = "attribute_not_exists(#pk) OR #created_at < :created_at OR (#created_at = :created_at AND #id < :id) OR (#created_at = :created_at AND #id = :id AND (attribute_not_exists(#deleted) OR #version < :version))";

    /// The membership condition for a live or deleted incoming membership.
    pub fn membership(deleted: bool) -> &'static str {
        if deleted { MEMBERSHIP_TOMBSTONE } else { LIVE_MEMBERSHIP }
    }

    /// [`super::session_upsert`] for a live incoming status: no item yet, or a live one of a lower
    /// rank.
    pub const LIVE_SESSION_UPSERT: &str = "attribute_not_exists(#pk) OR (NOT (#status IN (:ended, :removed, :revoked, :expired, :abandoned, :replaced)) AND (#version < :version OR (#version = :version AND (attribute_not_exists(#digest) OR #digest < :digest))))";

    /// [`super::session_upsert`] for a terminal incoming status: no item yet, a live one whatever
    /// its rank, or a terminal one of a lower rank.
    pub const TERMINAL_SESSION_UPSERT: &str = "attribute_not_exists(#pk) OR NOT (#status IN (:ended, :removed, :revoked, :expired, :abandoned, :replaced)) OR #version < :version OR (#version = :version AND (attribute_not_exists(#digest) OR #digest < :digest))";

    /// The session condition for an incoming status.
    pub fn session_upsert(terminal: bool) -> &'static str {
        if terminal { TERMINAL_SESSION_UPSERT } else { LIVE_SESSION_UPSERT }
    }

    /// The placeholders an expression actually uses: DynamoDB refuses unused ones.
    pub fn names_used_by(expression: &str) -> impl Iterator<Item = (&'static str, &'static str)> + '_ {
        NAMES.into_iter().filter(move |(placeholder, _)| expression.contains(placeholder))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D1: Digest = Digest::from_bytes([1; 16]);
    const D2: Digest = Digest::from_bytes([2; 16]);

    /// A rank at `version` with digest D1, as most tests need.
    const fn r(version: u64) -> Rank {
        Rank::new(version, Some(D1))
    }
    const fn user(version: u64) -> Option<Stored> {
        Some(Stored { rank: r(version), deleted: false, terminal: false })
    }
    const fn tombstone(version: u64) -> Option<Stored> {
        Some(Stored { rank: Rank::new(version, None), deleted: true, terminal: false })
    }
    const fn session(version: u64, terminal: bool) -> Option<Stored> {
        Some(Stored { rank: r(version), deleted: false, terminal })
    }

    #[test]
    fn version_prefers_updated_at() {
        assert_eq!(version(Some(1654012591835), Some(1654012599999)), Some(1654012591835));
    }

    #[test]
    fn version_falls_back_to_envelope_milliseconds() {
        assert_eq!(version(None, Some(1661861640000)), Some(1661861640000));
    }

    #[test]
    fn envelope_timestamp_in_seconds_is_normalized_to_milliseconds() {
        assert_eq!(version(None, Some(1716883200)), Some(1716883200000));
        assert_eq!(version(None, Some(999_999_999_999)), Some(999_999_999_999_000));
        assert_eq!(version(None, Some(1_000_000_000_000)), Some(1_000_000_000_000));
    }

    #[test]
    fn no_usable_version_is_none() {
        assert_eq!(version(None, None), None);
        assert_eq!(version(Some(0), Some(-5)), None);
        assert_eq!(version(Some(-1), Some(1716883200)), Some(1716883200000));
    }

    #[test]
    fn terminal_statuses() {
        for s in TERMINAL_SESSION_STATUSES {
            assert!(is_terminal(s), "{s}");
        }
        for s in ["active", "pending", "some_future_status"] {
            assert!(!is_terminal(s), "{s}");
        }
    }

    #[test]
    fn user_upsert_applies_to_a_new_user() {
        assert_eq!(user_upsert(None, r(5)), Verdict::Apply);
    }

    #[test]
    fn user_upsert_higher_version_wins() {
        assert_eq!(user_upsert(user(4), r(5)), Verdict::Apply);
        assert_eq!(user_upsert(user(6), r(5)), Verdict::Stale);
    }

    #[test]
    fn user_upsert_equal_version_is_a_duplicate() {
        assert_eq!(user_upsert(user(5), r(5)), Verdict::Duplicate);
    }

    #[test]
    fn at_one_version_the_higher_digest_wins_in_either_order() {
        let (low, high) = (Rank::new(5, Some(D1)), Rank::new(5, Some(D2)));
        let stored = |rank| Some(Stored { rank, deleted: false, terminal: false });
        assert_eq!(user_upsert(stored(low), high), Verdict::Apply);
        assert_eq!(user_upsert(stored(high), low), Verdict::Stale);
        assert_eq!(
            user_upsert(stored(Rank::new(5, None)), low),
            Verdict::Apply,
            "an item without a digest ranks lowest"
        );
        for terminal in [false, true] {
            let session = |rank| Some(Stored { rank, deleted: false, terminal });
            assert_eq!(session_upsert(false, session(low), high, terminal), Verdict::Apply);
            assert_eq!(session_upsert(false, session(high), low, terminal), Verdict::Stale);
        }
        let membership_at = |rank| MembershipState { created_at: 1, id: "orgmem_a", deleted: false, rank };
        assert_eq!(membership(Some(membership_at(low)), membership_at(high)), Verdict::Apply);
        assert_eq!(membership(Some(membership_at(high)), membership_at(low)), Verdict::Stale);
    }

    #[test]
    fn digests_round_trip_through_hex_in_byte_order() {
        let digest = Digest::of(b"{\"id\":\"user_1\"}");
        let hex = digest.to_hex();
        assert_eq!(hex.len(), 32);
        assert_eq!(Digest::from_hex(&hex), Some(digest));
        assert_eq!((D1.to_hex() < D2.to_hex()), (D1 < D2));
        for bad in ["", "0", &"g".repeat(32), &"A".repeat(32), &"0".repeat(33)] {
            assert_eq!(Digest::from_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn user_upsert_never_resurrects_a_tombstone() {
        for v in [1, 5, u64::MAX] {
            assert_eq!(user_upsert(tombstone(5), r(v)), Verdict::UserDeleted);
        }
    }

    #[test]
    fn tombstone_beats_a_live_user_whatever_the_versions() {
        assert_eq!(user_tombstone(user(100), Rank::new(1, None)), Verdict::Apply);
        assert_eq!(user_tombstone(None, Rank::new(1, None)), Verdict::Apply);
    }

    #[test]
    fn between_tombstones_the_higher_version_stays() {
        assert_eq!(user_tombstone(tombstone(5), Rank::new(6, None)), Verdict::Apply);
        assert_eq!(user_tombstone(tombstone(5), Rank::new(5, None)), Verdict::Duplicate);
        assert_eq!(user_tombstone(tombstone(5), Rank::new(4, None)), Verdict::Stale);
    }

    #[test]
    fn no_session_is_written_for_a_deleted_user() {
        for terminal in [false, true] {
            assert_eq!(session_upsert(true, None, r(9), terminal), Verdict::UserDeleted);
            assert_eq!(session_upsert(true, session(1, false), r(9), terminal), Verdict::UserDeleted);
        }
    }

    #[test]
    fn terminal_session_beats_live_whatever_the_versions() {
        assert_eq!(session_upsert(false, session(10, false), r(1), true), Verdict::Apply);
        assert_eq!(session_upsert(false, session(1, true), r(10), false), Verdict::Stale);
    }

    #[test]
    fn sessions_of_one_class_follow_versions() {
        for terminal in [false, true] {
            assert_eq!(session_upsert(false, session(5, terminal), r(6), terminal), Verdict::Apply);
            assert_eq!(session_upsert(false, session(5, terminal), r(5), terminal), Verdict::Duplicate);
            assert_eq!(session_upsert(false, session(5, terminal), r(4), terminal), Verdict::Stale);
        }
    }

    #[test]
    fn conditions_use_only_declared_placeholders() {
        let all = [
            condition::USER_UPSERT,
            condition::USER_TOMBSTONE,
            condition::LIVE_SESSION_UPSERT,
            condition::TERMINAL_SESSION_UPSERT,
            condition::LIVE_MEMBERSHIP,
            condition::MEMBERSHIP_TOMBSTONE,
        ];
        for expression in all {
            for word in expression.split(|c: char| !(c.is_alphanumeric() || c == '#' || c == ':' || c == '_')) {
                if word.starts_with('#') {
                    assert!(condition::NAMES.iter().any(|(p, _)| *p == word), "{word} in {expression}");
                }
                if word.starts_with(':') {
                    let declared = [condition::VERSION, condition::DIGEST, condition::CREATED_AT, condition::ID]
                        .contains(&word)
                        || condition::TERMINAL_VALUES.contains(&word);
                    assert!(declared, "{word} in {expression}");
                }
            }
        }
    }

    #[test]
    fn terminal_placeholders_follow_the_status_list() {
        for (placeholder, status) in condition::TERMINAL_VALUES.iter().zip(TERMINAL_SESSION_STATUSES) {
            assert_eq!(&placeholder[1..], status);
        }
    }

    #[test]
    fn organizations_follow_the_user_rules() {
        assert_eq!(organization_upsert(None, r(5)), Verdict::Apply);
        assert_eq!(organization_upsert(user(4), r(5)), Verdict::Apply);
        assert_eq!(organization_upsert(user(5), r(5)), Verdict::Duplicate);
        assert_eq!(organization_upsert(tombstone(1), r(5)), Verdict::OrganizationDeleted);
        assert_eq!(organization_tombstone(user(100), Rank::new(1, None)), Verdict::Apply);
        assert_eq!(organization_tombstone(tombstone(5), Rank::new(5, None)), Verdict::Duplicate);
    }

    /// A membership state; tombstones carry no digest.
    const fn member(created_at: i64, id: &str, deleted: bool, version: u64) -> MembershipState<'_> {
        let digest = if deleted { None } else { Some(D1) };
        MembershipState { created_at, id, deleted, rank: Rank::new(version, digest) }
    }

    #[test]
    fn membership_versions_order_one_membership() {
        let stored = Some(member(10, "orgmem_a", false, 20));
        assert_eq!(membership(None, member(10, "orgmem_a", false, 20)), Verdict::Apply);
        assert_eq!(membership(stored, member(10, "orgmem_a", false, 21)), Verdict::Apply);
        assert_eq!(membership(stored, member(10, "orgmem_a", false, 20)), Verdict::Duplicate);
        assert_eq!(membership(stored, member(10, "orgmem_a", false, 19)), Verdict::Stale);
    }

    #[test]
    fn membership_deletion_beats_its_updates_whatever_the_versions() {
        let live = Some(member(10, "orgmem_a", false, 50));
        assert_eq!(membership(live, member(10, "orgmem_a", true, 1)), Verdict::Apply);
        let deleted = Some(member(10, "orgmem_a", true, 1));
        assert_eq!(membership(deleted, member(10, "orgmem_a", false, 50)), Verdict::Stale);
        assert_eq!(membership(deleted, member(10, "orgmem_a", true, 1)), Verdict::Duplicate);
    }

    #[test]
    fn a_later_membership_replaces_an_earlier_one_deleted_or_not() {
        for deleted in [false, true] {
            let earlier = Some(member(10, "orgmem_a", deleted, 90));
            assert_eq!(membership(earlier, member(11, "orgmem_b", false, 11)), Verdict::Apply);
            let later = Some(member(11, "orgmem_b", false, 11));
            assert_eq!(membership(later, member(10, "orgmem_a", deleted, 90)), Verdict::Stale);
        }
        // Created in the same millisecond: the id decides, the same way every time.
        assert_eq!(membership(Some(member(10, "orgmem_a", true, 5)), member(10, "orgmem_b", false, 1)), Verdict::Apply);
    }

    /// One user, one session of theirs, one organization and the user's membership of it, in a
    /// table modelled in memory, to check the rules' algebra. Upserts carry one of two digests, so
    /// histories hold different contents at one version.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Offer {
        User(Rank),
        Delete(u64),
        Session { rank: Rank, terminal: bool },
        Organization(Rank),
        DeleteOrganization(u64),
        Membership { created_at: i64, id: &'static str, deleted: bool, rank: Rank },
    }

    #[derive(Debug, Default, Clone, PartialEq, Eq)]
    struct Model {
        user: Option<Stored>,
        session: Option<Stored>,
        organization: Option<Stored>,
        membership: Option<MembershipState<'static>>,
    }

    impl Model {
        fn offer(&mut self, offer: Offer) {
            let deleted = |item: Option<Stored>| item.is_some_and(|s| s.deleted);
            let live = |rank: Rank, terminal: bool| Some(Stored { rank, deleted: false, terminal });
            match offer {
                Offer::User(rank) => {
                    if user_upsert(self.user, rank) == Verdict::Apply {
                        self.user = live(rank, false);
                    }
                }
                Offer::Delete(v) => {
                    if user_tombstone(self.user, Rank::new(v, None)) == Verdict::Apply {
                        self.user = tombstone(v);
                    }
                    self.session = None;
                    self.membership = None;
                }
                Offer::Session { rank, terminal } => {
                    if session_upsert(deleted(self.user), self.session, rank, terminal) == Verdict::Apply {
                        self.session = live(rank, terminal);
                    }
                }
                Offer::Organization(rank) => {
                    if organization_upsert(self.organization, rank) == Verdict::Apply {
                        self.organization = live(rank, false);
                    }
                }
                Offer::DeleteOrganization(v) => {
                    if organization_tombstone(self.organization, Rank::new(v, None)) == Verdict::Apply {
                        self.organization = tombstone(v);
                    }
                    self.membership = None;
                }
                Offer::Membership { created_at, id, deleted: gone, rank } => {
                    let incoming = MembershipState { created_at, id, deleted: gone, rank };
                    let blocked = deleted(self.user) || deleted(self.organization);
                    if !blocked && membership(self.membership, incoming) == Verdict::Apply {
                        self.membership = Some(incoming);
                    }
                }
            }
        }
    }

    /// A history of offers, and the same offers each delivered one to three times, shuffled.
    fn history_and_delivery() -> impl Strategy<Value = (Vec<Offer>, Vec<Offer>)> {
        let rank = (1u64..20, prop::sample::select(vec![D1, D2])).prop_map(|(v, d)| Rank::new(v, Some(d)));
        let offer = prop_oneof![
            rank.clone().prop_map(Offer::User),
            (1u64..20).prop_map(Offer::Delete),
            (rank.clone(), any::<bool>()).prop_map(|(rank, terminal)| Offer::Session { rank, terminal }),
            rank.clone().prop_map(Offer::Organization),
            (1u64..20).prop_map(Offer::DeleteOrganization),
            (1i64..4, prop::sample::select(vec!["orgmem_a", "orgmem_b"]), any::<bool>(), rank).prop_map(
                |(created_at, id, deleted, rank)| {
                    // A membership's tombstone carries no digest.
                    let rank = if deleted { Rank::new(rank.version, None) } else { rank };
                    Offer::Membership { created_at, id, deleted, rank }
                }
            ),
        ];
        proptest::collection::vec((offer, 1usize..=3), 1..16).prop_flat_map(|history| {
            let delivered: Vec<Offer> = history.iter().flat_map(|(o, n)| std::iter::repeat_n(*o, *n)).collect();
            let history: Vec<Offer> = history.into_iter().map(|(o, _)| o).collect();
            (Just(history), Just(delivered).prop_shuffle())
        })
    }

    fn replay(offers: &[Offer]) -> Model {
        let mut model = Model::default();
        for o in offers {
            model.offer(*o);
        }
        model
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The rules are a merge that ignores order and repetition: any permutation of any
        /// multiset of offers leaves the same state as the history in order.
        #[test]
        fn any_order_and_duplication_converge((history, delivered) in history_and_delivery()) {
            prop_assert_eq!(replay(&delivered), replay(&history));
        }
    }
}
