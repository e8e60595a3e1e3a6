//! Resource-key locks: shared/exclusive, all-or-nothing, fair.
//!
//! A [`ResourceKey`] names an entity in one of five [`Domain`]s and says
//! whether it is wanted shared (read) or exclusive. A [`LockRequest`] is a
//! normalized set of keys: de-duplicated, sorted by domain (Cluster last) and
//! then key. The [`LockTable`] grants whole requests: a request holds all of
//! its keys or none of them.
//!
//! # Rules
//! - Lock identity is `(domain, key)`; the `shared` flag is a mode, not part of
//!   the identity. Shared + shared is compatible; anything with exclusive on the
//!   same identity conflicts.
//! - **Fairness (simcast):** a waiting request is granted when none of its keys
//!   conflicts with a holder *or with an earlier waiting request*. So requests
//!   that conflict are granted in arrival order, nobody starves, and because
//!   requests are all-or-nothing nobody deadlocks.
//! - A try-acquire obeys the same rule: it fails (and queues nothing) if it
//!   conflicts with a holder or with any waiting request, so it can never
//!   overtake a waiter.
//!
//! # Shape
//! Mutate, then drain: [`LockTable::acquire`], [`LockTable::cancel`],
//! [`LockTable::release`] and [`LockTable::release_owner`] change the table;
//! every grant they cause, including the immediate grant of an uncontended
//! blocking acquire, is reported once by [`LockTable::poll_event`].

use core::fmt;
use core::hash::{Hash, Hasher};
use std::collections::VecDeque;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::coverage::Coverage;

/// The kind of entity a resource key names.
///
/// The declaration order is the lock order: requests are sorted by domain with
/// `Cluster` last, so a cluster-wide key is always taken after the keys it
/// covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Domain {
    /// A database, keyed by its name.
    #[serde(rename = "DBName")]
    DbName,
    /// A collection, keyed by `"db:collection"`.
    CollectionName,
    /// The privilege system; a single, always exclusive, key `""`.
    Privilege,
    /// A snapshot, keyed by `"collectionID:name"`.
    SnapshotName,
    /// The whole cluster; a single key `""`.
    Cluster,
}

impl Domain {
    /// Every domain, in lock order.
    pub const ALL: [Domain; 5] = [
        Domain::DbName,
        Domain::CollectionName,
        Domain::Privilege,
        Domain::SnapshotName,
        Domain::Cluster,
    ];

    /// The name used in displays and files.
    pub const fn name(self) -> &'static str {
        match self {
            Domain::DbName => "DBName",
            Domain::CollectionName => "CollectionName",
            Domain::Privilege => "Privilege",
            Domain::SnapshotName => "SnapshotName",
            Domain::Cluster => "Cluster",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The database name used when a collection key names none.
pub const DEFAULT_DB_NAME: &str = "default";

/// One key of a lock request: an entity and the mode it is wanted in.
///
/// Ordered by domain (lock order), then key, then mode (exclusive first).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ResourceKey {
    /// What kind of entity.
    pub domain: Domain,
    /// Which entity within the domain.
    pub key: Arc<str>,
    /// `true` for a shared (read) lock, `false` for an exclusive one.
    pub shared: bool,
}

/// Field by field, as derived; keys sharing one name compare without
/// reading its bytes.
impl PartialEq for ResourceKey {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain
            && self.shared == other.shared
            && (Arc::ptr_eq(&self.key, &other.key) || self.key == other.key)
    }
}

impl Eq for ResourceKey {}

/// Field by field, as derived (agrees with the equality: equal keys have
/// equal fields).
impl Hash for ResourceKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.domain.hash(h);
        self.key.hash(h);
        self.shared.hash(h);
    }
}

impl PartialOrd for ResourceKey {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Domain, key, mode, as derived (see [`lock_order`]).
impl Ord for ResourceKey {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        lock_order(self, other).then(self.shared.cmp(&other.shared))
    }
}

thread_local! {
    /// The empty key name (cluster and privilege keys), allocated once per
    /// thread: those keys are made for every broadcast request.
    static EMPTY_NAME: Arc<str> = Arc::from("");
}

impl ResourceKey {
    /// A key with explicit parts.
    pub fn new(domain: Domain, key: impl Into<Arc<str>>, shared: bool) -> Self {
        ResourceKey {
            domain,
            key: key.into(),
            shared,
        }
    }

    /// The cluster key (`Cluster:`), shared or exclusive.
    pub fn cluster(shared: bool) -> Self {
        ResourceKey::new(Domain::Cluster, EMPTY_NAME.with(Arc::clone), shared)
    }

    /// The shared cluster key every broadcast request carries.
    pub fn shared_cluster() -> Self {
        ResourceKey::cluster(true)
    }

    /// The exclusive cluster key: excludes every other request.
    pub fn exclusive_cluster() -> Self {
        ResourceKey::cluster(false)
    }

    /// A database key: the database name.
    pub fn db(name: &str, shared: bool) -> Self {
        ResourceKey::new(Domain::DbName, name, shared)
    }

    /// A collection key: `"db:collection"`, an empty `db` meaning
    /// [`DEFAULT_DB_NAME`].
    pub fn collection(db: &str, collection: &str, shared: bool) -> Self {
        let db = if db.is_empty() { DEFAULT_DB_NAME } else { db };
        ResourceKey::new(Domain::CollectionName, format!("{db}:{collection}"), shared)
    }

    /// The privilege key: key `""`, always exclusive.
    pub fn privilege() -> Self {
        ResourceKey::new(Domain::Privilege, EMPTY_NAME.with(Arc::clone), false)
    }

    /// A snapshot key: `"collectionID:name"`.
    pub fn snapshot(collection_id: i64, name: &str, shared: bool) -> Self {
        ResourceKey::new(
            Domain::SnapshotName,
            format!("{collection_id}:{name}"),
            shared,
        )
    }

    /// Whether the two keys name the same lock, i.e. the same `(domain, key)`.
    pub fn same_lock(&self, other: &ResourceKey) -> bool {
        self.domain == other.domain && (Arc::ptr_eq(&self.key, &other.key) || self.key == other.key)
    }

    /// Whether holding both at once is forbidden: same lock, and at least one
    /// of them exclusive.
    pub fn conflicts_with(&self, other: &ResourceKey) -> bool {
        self.same_lock(other) && !(self.shared && other.shared)
    }
}

impl fmt::Display for ResourceKey {
    /// `Domain:key@R` (shared) or `Domain:key@X` (exclusive).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.shared { "R" } else { "X" };
        write!(f, "{}:{}@{}", self.domain, self.key, mode)
    }
}

/// The identity of a lock: `(domain, key)`, without the mode.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockId {
    /// The domain.
    pub domain: Domain,
    /// The key within the domain.
    pub key: Arc<str>,
}

impl Clone for LockId {
    fn clone(&self) -> Self {
        LockId {
            domain: self.domain,
            key: self.key.clone(),
        }
    }

    /// Copying an id over the same one touches no reference count.
    fn clone_from(&mut self, source: &Self) {
        self.domain = source.domain;
        if !Arc::ptr_eq(&self.key, &source.key) {
            self.key = source.key.clone();
        }
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.domain, self.key)
    }
}

/// A normalized, non-empty set of resource keys.
///
/// Keys are de-duplicated on the whole key (so `X@R` and `X@X` both survive;
/// the lock is then taken exclusive) and sorted by domain (Cluster last), key,
/// mode.
///
/// Hashing covers the keys only (as a struct of one field, `keys`, would):
/// the cached [`LockRequest::digest`] is a function of them.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "RequestKeys")]
pub struct LockRequest {
    /// Shared: a request is immutable once normalized, so clones (into
    /// catalog records, messages, effects) cost a reference count.
    keys: Arc<[ResourceKey]>,
    #[serde(skip_serializing)]
    digest: u64,
}

/// What a [`LockRequest`] is deserialized from.
#[derive(Deserialize)]
#[serde(rename = "LockRequest")]
struct RequestKeys {
    keys: Arc<[ResourceKey]>,
}

impl From<RequestKeys> for LockRequest {
    fn from(r: RequestKeys) -> Self {
        LockRequest::from_keys(r.keys)
    }
}

/// A request hashes as its digest: equal requests have equal digests, and
/// one word is cheaper to absorb than every key's name (a request is hashed
/// into the trace digest each time an event carrying it is delivered).
impl Hash for LockRequest {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.digest);
    }
}

impl Clone for LockRequest {
    fn clone(&self) -> Self {
        LockRequest {
            keys: self.keys.clone(),
            digest: self.digest,
        }
    }

    /// Copying a request over the same one touches no reference count.
    fn clone_from(&mut self, source: &Self) {
        if !Arc::ptr_eq(&self.keys, &source.keys) {
            self.keys = source.keys.clone();
            self.digest = source.digest;
        }
    }
}

/// A fixed function of the keys (domain, key bytes, mode), the same in
/// every process: multiply-rotate absorption of 64-bit words, murmur3
/// finalizer.
fn digest_keys(keys: &[ResourceKey]) -> u64 {
    let mut h = absorb(0x4C4F_434B_5245_5131, keys.len() as u64);
    for k in keys {
        let bytes = k.key.as_bytes();
        h = absorb(
            h,
            (k.domain as u64) | (u64::from(k.shared) << 8) | ((bytes.len() as u64) << 16),
        );
        h = absorb_bytes(h, bytes);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// One multiply-rotate absorption of a word (request digests and the lock
/// table's name index).
#[inline]
fn absorb(h: u64, w: u64) -> u64 {
    (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29)
}

/// Absorbs `bytes` 8 at a time as little-endian words, the tail
/// zero-padded ([`le_word`]).
#[inline]
fn absorb_bytes(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = absorb(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        h = absorb(h, le_word(tail));
    }
    h
}

/// Up to 8 bytes as a little-endian word, zero-padded.
#[inline]
fn le_word(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .rev()
        .fold(0u64, |w, &b| (w << 8) | u64::from(b))
}

impl LockRequest {
    /// Normalizes `keys` exactly as given (no key added).
    ///
    /// # Errors
    /// [`LockError::EmptyRequest`] if `keys` is empty.
    pub fn new(keys: impl IntoIterator<Item = ResourceKey>) -> Result<Self, LockError> {
        let mut keys: Vec<ResourceKey> = keys.into_iter().collect();
        if keys.is_empty() {
            return Err(LockError::EmptyRequest);
        }
        keys.sort();
        keys.dedup();
        Ok(LockRequest::from_keys(keys.into()))
    }

    /// Normalizes the keys of a broadcast: as [`LockRequest::new`], plus the
    /// shared cluster key unless a Cluster-domain key is already named. Never
    /// empty, so never fails.
    pub fn for_broadcast(keys: impl IntoIterator<Item = ResourceKey>) -> Self {
        let mut keys: Vec<ResourceKey> = keys.into_iter().collect();
        if !keys.iter().any(|k| k.domain == Domain::Cluster) {
            keys.push(ResourceKey::shared_cluster());
        }
        keys.sort();
        keys.dedup();
        LockRequest::from_keys(keys.into())
    }

    /// A request from keys already in normal form: non-empty, sorted,
    /// without duplicates. `None` if they are not (nothing is reordered or
    /// added: a caller that builds normal forms itself skips the sort).
    pub fn from_normalized(keys: Arc<[ResourceKey]>) -> Option<Self> {
        is_normal(&keys).then(|| LockRequest::from_keys(keys))
    }

    /// [`LockRequest::from_normalized`] for a caller that builds normal
    /// forms by construction (a workload drawing keys in rank order, once
    /// per request): the check, a comparison of each adjacent pair, runs in
    /// debug builds only.
    ///
    /// # Panics
    /// In a debug build, if `keys` are not in normal form. In a release
    /// build such keys make a request the lock table mis-handles: use
    /// [`LockRequest::from_normalized`] unless the form is certain.
    pub fn from_normalized_unchecked(keys: Arc<[ResourceKey]>) -> Self {
        debug_assert!(is_normal(&keys), "keys not in normal form: {keys:?}");
        LockRequest::from_keys(keys)
    }

    fn from_keys(keys: Arc<[ResourceKey]>) -> Self {
        let digest = digest_keys(&keys);
        LockRequest { keys, digest }
    }

    /// A stable 64-bit hash of the keys, computed once: equal requests have
    /// equal digests, in every process (for fingerprints that would rather
    /// not rehash the keys).
    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// The normalized keys.
    pub fn keys(&self) -> &[ResourceKey] {
        &self.keys
    }

    /// One entry per distinct lock, with the mode it is taken in: exclusive if
    /// any key on that lock is exclusive.
    pub fn locks(&self) -> impl Iterator<Item = &ResourceKey> + '_ {
        // Keys on one lock are adjacent and the exclusive one sorts first, so
        // the first key of each lock carries the mode it is taken in.
        self.keys.iter().enumerate().filter_map(|(i, k)| {
            let first_of_lock = i == 0 || !self.keys[i - 1].same_lock(k);
            first_of_lock.then_some(k)
        })
    }

    /// Whether the two requests may not be held at the same time.
    pub fn conflicts_with(&self, other: &LockRequest) -> bool {
        self.conflicts_with_rule(other, ConflictRule::Correct)
    }

    fn conflicts_with_rule(&self, other: &LockRequest, rule: ConflictRule) -> bool {
        // Both lists are sorted by (domain, key): merge-walk them.
        let mut a = self.locks().peekable();
        let mut b = other.locks().peekable();
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            let (sa, sb) = (x.shared, y.shared);
            match lock_order(x, y) {
                core::cmp::Ordering::Less => {
                    a.next();
                }
                core::cmp::Ordering::Greater => {
                    b.next();
                }
                core::cmp::Ordering::Equal => {
                    if rule.modes_conflict(sa, sb) {
                        return true;
                    }
                    a.next();
                    b.next();
                }
            }
        }
        false
    }
}

/// Non-empty, sorted, without duplicates.
fn is_normal(keys: &[ResourceKey]) -> bool {
    !keys.is_empty() && keys.windows(2).all(|w| w[0] < w[1])
}

/// Orders two keys by lock identity `(domain, key)`; keys drawn from one
/// interned name compare without reading their bytes.
fn lock_order(x: &ResourceKey, y: &ResourceKey) -> core::cmp::Ordering {
    x.domain.cmp(&y.domain).then_with(|| {
        if Arc::ptr_eq(&x.key, &y.key) {
            core::cmp::Ordering::Equal
        } else {
            x.key.cmp(&y.key)
        }
    })
}

impl fmt::Display for LockRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, k) in self.keys.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}")?;
        }
        f.write_str("]")
    }
}

/// Who a request belongs to: a client session. Releasing an owner releases
/// every hold and cancels every wait of that owner, in one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OwnerId(pub u64);

impl fmt::Display for OwnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "o{}", self.0)
    }
}

/// A request admitted by the table. Ids increase in arrival order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// The transitions of a lock request, as recorded in [`LockTable::coverage`].
pub const TRANSITIONS: &[&str] = &[
    "acquire -> held",
    "acquire -> waiting (behind a holder)",
    "acquire -> waiting (behind an earlier waiter only)",
    "waiting -> held",
    "waiting stays behind an earlier waiter after a release",
    "waiting -> cancelled",
    "held -> released",
    "try -> held",
    "try -> refused (holder)",
    "try -> refused (waiter)",
    "owner release: held -> released",
    "owner release: waiting -> cancelled",
];

/// Indices into [`TRANSITIONS`].
#[derive(Clone, Copy)]
enum Tr {
    AcquireHeld,
    AcquireWaitsHolder,
    AcquireWaitsWaiter,
    WaitingHeld,
    StaysBehindWaiter,
    WaitingCancelled,
    HeldReleased,
    TryHeld,
    TryRefusedHolder,
    TryRefusedWaiter,
    OwnerReleased,
    OwnerCancelled,
}

/// What a request is doing in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestState {
    /// Queued behind a holder or an earlier conflicting waiter.
    Waiting,
    /// Holding all of its keys.
    Held,
}

/// Something the table reports to its driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockEvent {
    /// `request`, belonging to `owner`, now holds all of its keys.
    Granted {
        /// The request.
        request: RequestId,
        /// Its owner.
        owner: OwnerId,
    },
}

/// What stands in the way of a try-acquire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Blocker {
    /// A request holding a conflicting key.
    Holder(RequestId),
    /// A waiting request with a conflicting key, which must go first.
    Waiter(RequestId),
}

/// Errors of the lock table. None of them changes the table.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LockError {
    /// A request with no keys: there is nothing to lock.
    #[error("a lock request must name at least one key")]
    EmptyRequest,
    /// A try-acquire could not take every key right now.
    #[error("would block on {0:?}")]
    WouldBlock(Blocker),
    /// The request id was never admitted, or is already gone.
    #[error("unknown request {0}")]
    UnknownRequest(RequestId),
    /// Release of a request that is still waiting (cancel it instead).
    #[error("request {0} is waiting, not held: cancel it instead")]
    NotHeld(RequestId),
    /// Cancel of a request that already holds its keys (release it instead).
    #[error("request {0} is held, not waiting: release it instead")]
    NotWaiting(RequestId),
}

/// Deliberately broken variants of the table, for mutation testing of the
/// simulator. Off by default; never enable one outside a simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LockFlaw {
    /// Grants a waiter as soon as no holder conflicts, letting it overtake
    /// an earlier conflicting waiter (breaks `locks.fifo`).
    IgnoreEarlierWaiters,
    /// Treats the shared flag as part of lock identity, so `K@R` and `K@X`
    /// never conflict (breaks `locks.exclusion`).
    SharedInIdentity,
    /// Forgets to re-examine waiters when locks are released or waiters
    /// cancelled (breaks `locks.eventually_granted`).
    LostWakeup,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConflictRule {
    Correct,
    SharedInIdentity,
}

impl ConflictRule {
    /// Whether two modes on the same `(domain, key)` conflict. `true` = shared.
    fn modes_conflict(self, a_shared: bool, b_shared: bool) -> bool {
        match self {
            ConflictRule::Correct => !(a_shared && b_shared),
            // Shared and exclusive become different locks: only X vs X clash.
            ConflictRule::SharedInIdentity => !a_shared && !b_shared,
        }
    }
}

#[derive(Debug, Default)]
struct Holding {
    exclusive: Option<RequestId>,
    /// Sorted.
    shared: Vec<RequestId>,
}

impl Clone for Holding {
    fn clone(&self) -> Self {
        Holding {
            exclusive: self.exclusive,
            shared: self.shared.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.exclusive = source.exclusive;
        self.shared.clone_from(&source.shared);
    }
}

#[derive(Debug)]
struct Entry {
    owner: OwnerId,
    request: LockRequest,
    state: RequestState,
    /// Where the request's locks are in [`Entries::locks`]: `(start, len)`.
    span: (u32, u32),
}

impl Clone for Entry {
    fn clone(&self) -> Self {
        Entry {
            owner: self.owner,
            request: self.request.clone(),
            state: self.state,
            span: self.span,
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.owner = source.owner;
        self.request.clone_from(&source.request);
        self.state = source.state;
        self.span = source.span;
    }
}

/// An admitted request under its id (a pair whose `clone_from` is the
/// fields').
#[derive(Debug)]
struct Admitted(RequestId, Entry);

impl Clone for Admitted {
    fn clone(&self) -> Self {
        Admitted(self.0, self.1.clone())
    }

    fn clone_from(&mut self, source: &Self) {
        self.0 = source.0;
        self.1.clone_from(&source.1);
    }
}

/// The admitted requests, sorted by id, and their locks, all in two
/// vectors (a table holds a handful of requests: a copy is two allocations,
/// or none into a recycled table).
#[derive(Debug, Default)]
struct Entries {
    list: Vec<Admitted>,
    /// Each entry's locks, in entry order: one `(slot, shared)` per distinct
    /// lock of the request, in lock order (the request's locks as indices
    /// into the table's holdings).
    locks: Vec<(u32, bool)>,
}

impl Clone for Entries {
    fn clone(&self) -> Self {
        Entries {
            list: self.list.clone(),
            locks: self.locks.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.list.clone_from(&source.list);
        self.locks.clone_from(&source.locks);
    }
}

impl Entries {
    /// Where a known request is in the list.
    fn at(&self, id: RequestId) -> usize {
        self.position(id).expect("a known request")
    }

    fn position(&self, id: RequestId) -> Result<usize, usize> {
        // Ids increase with arrival: the newest are last.
        match self.list.last() {
            Some(Admitted(last, _)) if *last < id => Err(self.list.len()),
            _ => self.list.binary_search_by(|Admitted(k, _)| k.cmp(&id)),
        }
    }

    fn get(&self, id: &RequestId) -> Option<&Entry> {
        self.position(*id).ok().map(|i| &self.list[i].1)
    }

    /// The locks of a known request.
    fn locks(&self, id: &RequestId) -> &[(u32, bool)] {
        self.locks_of(&self[id])
    }

    fn locks_of(&self, e: &Entry) -> &[(u32, bool)] {
        self.span(e.span)
    }

    /// The locks at `span` (an entry's `(start, len)`).
    fn span(&self, (start, len): (u32, u32)) -> &[(u32, bool)] {
        &self.locks[start as usize..(start + len) as usize]
    }

    /// Adds a request that is not admitted yet, with its locks.
    fn insert(&mut self, id: RequestId, mut entry: Entry, locks: &[(u32, bool)]) {
        let i = self.position(id).expect_err("admitting a request twice");
        let start = self.list[..i]
            .last()
            .map_or(0, |Admitted(_, e)| e.span.0 + e.span.1);
        let len = locks.len() as u32;
        entry.span = (start, len);
        self.locks
            .splice(start as usize..start as usize, locks.iter().copied());
        for Admitted(_, e) in &mut self.list[i..] {
            e.span.0 += len;
        }
        self.list.insert(i, Admitted(id, entry));
    }

    /// Removes the `i`-th request and its locks.
    fn remove_at(&mut self, i: usize) -> Entry {
        let Admitted(_, entry) = self.list.remove(i);
        let (start, len) = entry.span;
        self.locks.drain(start as usize..(start + len) as usize);
        for Admitted(_, e) in &mut self.list[i..] {
            e.span.0 -= len;
        }
        entry
    }

    fn iter(&self) -> impl Iterator<Item = (&RequestId, &Entry)> + '_ {
        self.list.iter().map(|Admitted(id, e)| (id, e))
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

impl core::ops::Index<&RequestId> for Entries {
    type Output = Entry;
    fn index(&self, id: &RequestId) -> &Entry {
        self.get(id).expect("a known request")
    }
}

/// Lock identities in use, as small integers (slots) indexing the holdings:
/// a slot lives while some admitted request names its lock.
///
/// Found by name through a hash index (open addressing, linear probing,
/// at most half full): which slot a lock gets depends only on the order
/// locks are named and freed, never on a hash value or an address.
#[derive(Debug, Default)]
struct Slots {
    /// Each slot's lock, while in use.
    names: Vec<Option<LockId>>,
    /// Each named slot's [`name_hash`].
    hashes: Vec<u64>,
    /// Requests naming each slot's lock.
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Named slots by hash: a power-of-two table of slots, [`NO_SLOT`]
    /// where empty (no slot is named before the index has room).
    index: Vec<u32>,
}

/// An empty place in [`Slots::index`].
const NO_SLOT: u32 = u32::MAX;

impl Clone for Slots {
    fn clone(&self) -> Self {
        Slots {
            names: self.names.clone(),
            hashes: self.hashes.clone(),
            refs: self.refs.clone(),
            free: self.free.clone(),
            index: self.index.clone(),
        }
    }

    fn clone_from(&mut self, source: &Self) {
        self.names.clone_from(&source.names);
        self.hashes.clone_from(&source.hashes);
        self.refs.clone_from(&source.refs);
        self.free.clone_from(&source.free);
        self.index.clone_from(&source.index);
    }
}

/// A hash of a lock's identity `(domain, name bytes)`, for [`Slots::index`]
/// only (multiply-rotate absorption of 64-bit words).
fn name_hash(domain: Domain, name: &str) -> u64 {
    let bytes = name.as_bytes();
    let h = absorb_bytes(absorb(domain as u64 + 1, bytes.len() as u64), bytes);
    h ^ (h >> 31)
}

impl Slots {
    fn named(&self) -> usize {
        self.names.len() - self.free.len()
    }

    /// The slot of `key`'s lock, named now if no request names it yet.
    fn intern(&mut self, key: &ResourceKey) -> u32 {
        if (self.named() + 1) * 2 > self.index.len() {
            self.grow();
        }
        let hash = name_hash(key.domain, &key.key);
        let mask = self.index.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.index[i];
            if slot == NO_SLOT {
                break;
            }
            if self.hashes[slot as usize] == hash
                && self.names[slot as usize].as_ref().is_some_and(|n| {
                    n.domain == key.domain && (Arc::ptr_eq(&n.key, &key.key) || n.key == key.key)
                })
            {
                self.refs[slot as usize] += 1;
                return slot;
            }
            i = (i + 1) & mask;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.refs.push(0);
                self.hashes.push(0);
                self.names.push(None);
                (self.refs.len() - 1) as u32
            }
        };
        self.names[slot as usize] = Some(LockId {
            domain: key.domain,
            key: key.key.clone(),
        });
        self.hashes[slot as usize] = hash;
        self.refs[slot as usize] = 1;
        self.index[i] = slot;
        slot
    }

    /// Doubles the index (16 places at first) and re-places every named slot.
    fn grow(&mut self) {
        let len = (self.index.len() * 2).max(16);
        self.index.clear();
        self.index.resize(len, NO_SLOT);
        let mask = len - 1;
        for (slot, name) in self.names.iter().enumerate() {
            if name.is_some() {
                let mut i = self.hashes[slot] as usize & mask;
                while self.index[i] != NO_SLOT {
                    i = (i + 1) & mask;
                }
                self.index[i] = slot as u32;
            }
        }
    }

    fn unref(&mut self, slot: u32) {
        let refs = &mut self.refs[slot as usize];
        *refs -= 1;
        if *refs == 0 {
            self.names[slot as usize] = None;
            self.free.push(slot);
            self.unindex(slot);
        }
    }

    /// Takes `slot` out of the index, shifting back the entries after it
    /// that could not sit in their home place (no tombstones).
    fn unindex(&mut self, slot: u32) {
        let mask = self.index.len() - 1;
        let mut hole = self.hashes[slot as usize] as usize & mask;
        while self.index[hole] != slot {
            hole = (hole + 1) & mask;
        }
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let t = self.index[j];
            if t == NO_SLOT {
                break;
            }
            let home = self.hashes[t as usize] as usize & mask;
            // `t` stays if its home is cyclically within (hole, j].
            let stays = if hole < j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.index[hole] = t;
                hole = j;
            }
        }
        self.index[hole] = NO_SLOT;
    }
}

/// Buffers reused across calls; never part of the table's state (a copy
/// starts empty).
#[derive(Debug, Default)]
struct Scratch {
    /// Per slot: modes claimed by earlier waiters (bit 0 shared, bit 1
    /// exclusive); all zero between calls.
    claims: Vec<u8>,
    /// The locks of a request being admitted.
    locks: Vec<(u32, bool)>,
}

impl Clone for Scratch {
    fn clone(&self) -> Self {
        Scratch {
            claims: Vec::new(),
            locks: Vec::new(),
        }
    }
}

/// The lock table: admits requests, grants them fairly, releases them.
///
/// Mutate, then drain [`LockTable::poll_event`] until it returns `None`.
///
/// Equality and hashing cover the table's state (flaw, id counter, requests
/// with their owners and states, the waiting order, undrained events); the
/// holdings, derived from the held requests, and reused buffers are not
/// compared, so two tables that will behave the same compare equal.
#[derive(Debug, Default)]
pub struct LockTable {
    flaw: Option<LockFlaw>,
    next_request: u64,
    entries: Entries,
    /// Waiting requests in arrival order (ids increase with arrival).
    waiting: Vec<RequestId>,
    /// The modes of each waiting request, in the same order.
    waiting_modes: Vec<Modes>,
    slots: Slots,
    /// Holders per slot.
    holdings: Vec<Holding>,
    /// The slots held shared and exclusive (from the holdings).
    held: Modes,
    /// Up to how many slots [`Modes`] are exact.
    mask_slots: MaskSlots,
    events: VecDeque<LockEvent>,
    cov: Coverage,
    scratch: Scratch,
    /// Requests granted so far: a counter, not state (neither compared nor
    /// hashed). See [`LockTable::grant_count`].
    granted: u64,
}

/// A request's locks, or the union of several requests' locks, as two sets
/// of slots: one bit per slot modulo 128, so the sets are exact while a
/// table has named at most 128 slots ([`LockTable::exact`]). Conflict tests
/// are then two ANDs instead of a walk over slots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Modes {
    shared: u128,
    exclusive: u128,
}

impl Modes {
    fn bit(slot: u32) -> u128 {
        1 << (slot % 128)
    }

    fn add(&mut self, slot: u32, shared: bool) {
        if shared {
            self.shared |= Modes::bit(slot);
        } else {
            self.exclusive |= Modes::bit(slot);
        }
    }

    fn union(&mut self, other: Modes) {
        self.shared |= other.shared;
        self.exclusive |= other.exclusive;
    }

    /// Whether locks in these modes conflict, under `rule`, with locks in
    /// `other`'s (exact only if both sets are).
    fn conflicts(self, other: Modes, rule: ConflictRule) -> bool {
        match rule {
            ConflictRule::Correct => {
                (self.exclusive & (other.shared | other.exclusive))
                    | (self.shared & other.exclusive)
                    != 0
            }
            ConflictRule::SharedInIdentity => self.exclusive & other.exclusive != 0,
        }
    }
}

/// The most slots a table names while its [`Modes`] are exact: 128 (a test
/// lowers it to reach the walks that serve wider tables).
#[derive(Clone, Copy, Debug)]
struct MaskSlots(usize);

impl Default for MaskSlots {
    fn default() -> Self {
        MaskSlots(128)
    }
}

impl Clone for LockTable {
    fn clone(&self) -> Self {
        LockTable {
            flaw: self.flaw,
            next_request: self.next_request,
            entries: self.entries.clone(),
            waiting: self.waiting.clone(),
            waiting_modes: self.waiting_modes.clone(),
            slots: self.slots.clone(),
            holdings: self.holdings.clone(),
            held: self.held,
            mask_slots: self.mask_slots,
            events: self.events.clone(),
            cov: self.cov,
            scratch: Scratch::default(),
            granted: self.granted,
        }
    }

    /// Reuses this table's buffers, and keeps its scratch buffers.
    fn clone_from(&mut self, source: &Self) {
        self.flaw = source.flaw;
        self.next_request = source.next_request;
        self.entries.clone_from(&source.entries);
        self.waiting.clone_from(&source.waiting);
        self.waiting_modes.clone_from(&source.waiting_modes);
        self.slots.clone_from(&source.slots);
        self.holdings.clone_from(&source.holdings);
        self.held = source.held;
        self.mask_slots = source.mask_slots;
        if source.events.is_empty() {
            // The usual case between steps: nothing left to drain.
            self.events.clear();
        } else {
            self.events.clone_from(&source.events);
        }
        self.cov = source.cov;
        self.granted = source.granted;
    }
}

impl PartialEq for LockTable {
    fn eq(&self, other: &Self) -> bool {
        self.flaw == other.flaw
            && self.next_request == other.next_request
            && self.waiting == other.waiting
            && self.events == other.events
            && self.entries.len() == other.entries.len()
            && self
                .entries
                .iter()
                .zip(other.entries.iter())
                .all(|((a, x), (b, y))| {
                    a == b && x.owner == y.owner && x.state == y.state && x.request == y.request
                })
    }
}

impl Eq for LockTable {}

impl Hash for LockTable {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.flaw.hash(h);
        self.next_request.hash(h);
        self.entries.len().hash(h);
        for (id, e) in self.entries.iter() {
            id.hash(h);
            e.owner.hash(h);
            e.state.hash(h);
            e.request.digest().hash(h);
        }
        self.waiting.hash(h);
        self.events.hash(h);
    }
}

impl LockTable {
    /// The transitions taken so far (indices into [`TRANSITIONS`]).
    pub fn coverage(&self) -> Coverage {
        self.cov
    }

    fn hit(&mut self, t: Tr) {
        self.cov.hit(t as usize);
    }

    /// An empty, correct table.
    pub fn new() -> Self {
        LockTable::default()
    }

    /// An empty table with a deliberate flaw (`None` = correct).
    pub fn with_flaw(flaw: Option<LockFlaw>) -> Self {
        LockTable {
            flaw,
            ..LockTable::default()
        }
    }

    /// The flaw this table was built with, if any.
    pub fn flaw(&self) -> Option<LockFlaw> {
        self.flaw
    }

    fn rule(&self) -> ConflictRule {
        match self.flaw {
            Some(LockFlaw::SharedInIdentity) => ConflictRule::SharedInIdentity,
            _ => ConflictRule::Correct,
        }
    }

    fn allocate(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    /// Whether [`Modes`] are exact: the table has named at most
    /// [`MaskSlots`] slots (ever: slots are reused, never dropped).
    fn exact(&self) -> bool {
        self.slots.names.len() <= self.mask_slots.0
    }

    /// Admits `request` as a waiting entry: interns its locks. Returns
    /// their modes.
    fn admit(&mut self, id: RequestId, owner: OwnerId, request: LockRequest) -> Modes {
        let mut locks = std::mem::take(&mut self.scratch.locks);
        locks.clear();
        let mut modes = Modes::default();
        for k in request.locks() {
            let slot = self.slots.intern(k);
            if slot as usize >= self.holdings.len() {
                self.holdings
                    .resize_with(slot as usize + 1, Holding::default);
            }
            locks.push((slot, k.shared));
            modes.add(slot, k.shared);
        }
        self.entries.insert(
            id,
            Entry {
                owner,
                request,
                state: RequestState::Waiting,
                span: (0, 0),
            },
            &locks,
        );
        self.scratch.locks = locks;
        modes
    }

    /// Forgets an entry (its keys must not be held): frees its slots.
    fn forget(&mut self, id: RequestId) {
        self.forget_at(self.entries.at(id));
    }

    /// [`LockTable::forget`] of the `i`-th entry.
    fn forget_at(&mut self, i: usize) {
        for &(slot, _) in self.entries.span(self.entries.list[i].1.span) {
            self.slots.unref(slot);
        }
        self.entries.remove_at(i);
    }

    /// Blocking acquire: admits the request and queues it. It is granted, now
    /// or by a later call, when none of its keys conflicts with a holder or an
    /// earlier waiter; the grant is reported by [`LockTable::poll_event`].
    pub fn acquire(&mut self, owner: OwnerId, request: LockRequest) -> RequestId {
        let id = self.allocate();
        let modes = self.admit(id, owner, request);
        // Admitting a waiter never unblocks anyone else: only it can be granted.
        let blocker = self.blocker(id, modes);
        self.hit(match blocker {
            None => Tr::AcquireHeld,
            Some(Blocker::Holder(_)) => Tr::AcquireWaitsHolder,
            Some(Blocker::Waiter(_)) => Tr::AcquireWaitsWaiter,
        });
        if blocker.is_none() {
            self.grant(id);
        } else {
            self.waiting.push(id);
            self.waiting_modes.push(modes);
        }
        id
    }

    /// Try-acquire: all keys now, or nothing. Never queues, and never
    /// overtakes a waiting request. A success is reported by the return value
    /// only (no event).
    ///
    /// # Errors
    /// [`LockError::WouldBlock`] naming what is in the way: a holder of the
    /// request's first conflicting lock in lock order (a holding of it
    /// exclusive before a shared one), else the earliest conflicting waiter.
    pub fn try_acquire(
        &mut self,
        owner: OwnerId,
        request: LockRequest,
    ) -> Result<RequestId, LockError> {
        // Admitted under the next id to be examined like any request; taken
        // back (and the id not spent) if something is in the way.
        let id = RequestId(self.next_request + 1);
        let modes = self.admit(id, owner, request);
        if let Some(blocker) = self.blocker(id, modes) {
            self.forget(id);
            self.hit(match blocker {
                Blocker::Holder(_) => Tr::TryRefusedHolder,
                Blocker::Waiter(_) => Tr::TryRefusedWaiter,
            });
            return Err(LockError::WouldBlock(blocker));
        }
        self.hit(Tr::TryHeld);
        let allocated = self.allocate();
        debug_assert_eq!(allocated, id);
        self.take_keys(id);
        Ok(id)
    }

    /// Withdraws a waiting request. Later waiters it was blocking may be
    /// granted.
    ///
    /// # Errors
    /// [`LockError::UnknownRequest`], or [`LockError::NotWaiting`] if it is
    /// already held.
    pub fn cancel(&mut self, id: RequestId) -> Result<(), LockError> {
        let Ok(i) = self.entries.position(id) else {
            return Err(LockError::UnknownRequest(id));
        };
        match self.entries.list[i].1.state {
            RequestState::Held => Err(LockError::NotWaiting(id)),
            RequestState::Waiting => {
                self.unqueue(id);
                self.forget_at(i);
                self.hit(Tr::WaitingCancelled);
                self.wake();
                Ok(())
            }
        }
    }

    fn unqueue(&mut self, id: RequestId) {
        let i = self.waiting.binary_search(&id);
        debug_assert!(i.is_ok(), "unqueueing a request that is not waiting");
        if let Ok(i) = i {
            self.waiting.remove(i);
            self.waiting_modes.remove(i);
        }
    }

    /// Releases every key of a held request; waiters may be granted.
    ///
    /// # Errors
    /// [`LockError::UnknownRequest`], or [`LockError::NotHeld`] if it is still
    /// waiting.
    pub fn release(&mut self, id: RequestId) -> Result<(), LockError> {
        let Ok(i) = self.entries.position(id) else {
            return Err(LockError::UnknownRequest(id));
        };
        match self.entries.list[i].1.state {
            RequestState::Waiting => Err(LockError::NotHeld(id)),
            RequestState::Held => {
                self.drop_keys_at(i);
                self.forget_at(i);
                self.hit(Tr::HeldReleased);
                self.wake();
                Ok(())
            }
        }
    }

    /// Releases every hold and cancels every wait of `owner` in one step
    /// (session cleanup), then grants whoever that unblocks.
    pub fn release_owner(&mut self, owner: OwnerId) -> OwnerRelease {
        let mine: Vec<RequestId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        let mut out = OwnerRelease::default();
        for id in mine {
            match self.entries[&id].state {
                RequestState::Held => {
                    self.drop_keys(id);
                    out.released.push(id);
                    self.hit(Tr::OwnerReleased);
                }
                RequestState::Waiting => {
                    self.unqueue(id);
                    out.cancelled.push(id);
                    self.hit(Tr::OwnerCancelled);
                }
            }
            self.forget(id);
        }
        if !out.released.is_empty() || !out.cancelled.is_empty() {
            self.wake();
        }
        out
    }

    /// The next thing to report, if any.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<LockEvent> {
        self.events.pop_front()
    }

    /// The state of a request, or `None` if unknown (never admitted, released
    /// or cancelled).
    pub fn state(&self, id: RequestId) -> Option<RequestState> {
        self.entries.get(&id).map(|e| e.state)
    }

    /// The keys of a known request.
    pub fn request(&self, id: RequestId) -> Option<&LockRequest> {
        self.entries.get(&id).map(|e| &e.request)
    }

    /// The owner of a known request.
    pub fn owner(&self, id: RequestId) -> Option<OwnerId> {
        self.entries.get(&id).map(|e| e.owner)
    }

    /// Waiting requests, in arrival order.
    pub fn waiting(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.waiting.iter().copied()
    }

    /// Held requests, in id order.
    pub fn held(&self) -> impl Iterator<Item = RequestId> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.state == RequestState::Held)
            .map(|(id, _)| *id)
    }

    /// Number of waiting requests.
    pub fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// How many requests this table has granted, ever. While it stays the
    /// same, the held requests are a subset of those held when it was last
    /// read: an observer checking held pairs (the simulator's exclusion
    /// check) has nothing new to check.
    pub fn grant_count(&self) -> u64 {
        self.granted
    }

    /// Number of held requests.
    pub fn held_len(&self) -> usize {
        self.entries.len() - self.waiting.len()
    }

    /// Whether nothing is held and nothing waits.
    pub fn is_idle(&self) -> bool {
        self.entries.is_empty()
    }

    /// A holder of the first lock, in lock order, that conflicts, else the
    /// first waiter admitted before it that conflicts, with the
    /// admitted (not yet queued or held) request `id`, whose locks are in
    /// `modes`, conflicts with.
    fn blocker(&self, id: RequestId, modes: Modes) -> Option<Blocker> {
        let rule = self.rule();
        let ignore_waiters = self.flaw == Some(LockFlaw::IgnoreEarlierWaiters);
        if self.exact() {
            // The sets answer whether; a walk over the locks names whom.
            if modes.conflicts(self.held, rule) {
                let locks = self.entries.locks(&id);
                return self.conflicting_holder(locks).map(Blocker::Holder);
            }
            if ignore_waiters {
                return None;
            }
            return self
                .waiting
                .iter()
                .zip(&self.waiting_modes)
                .take_while(|(w, _)| **w < id)
                .find(|(_, m)| modes.conflicts(**m, rule))
                .map(|(w, _)| Blocker::Waiter(*w));
        }
        let locks = self.entries.locks(&id);
        if let Some(h) = self.conflicting_holder(locks) {
            return Some(Blocker::Holder(h));
        }
        if ignore_waiters {
            return None;
        }
        self.waiting
            .iter()
            .take_while(|w| **w < id)
            .find(|w| slots_conflict(self.entries.locks(w), locks, rule))
            .map(|w| Blocker::Waiter(*w))
    }

    fn conflicting_holder(&self, locks: &[(u32, bool)]) -> Option<RequestId> {
        let rule = self.rule();
        for &(slot, shared) in locks {
            let h = &self.holdings[slot as usize];
            if let Some(x) = h.exclusive
                && rule.modes_conflict(shared, false)
            {
                return Some(x);
            }
            if let Some(s) = h.shared.first()
                && rule.modes_conflict(shared, true)
            {
                return Some(*s);
            }
        }
        None
    }

    /// Re-examines waiters in arrival order after something was released or
    /// cancelled. A waiter is granted when no holder conflicts and no earlier
    /// waiter that stays waiting does: the modes claimed by those waiters are
    /// accumulated per slot as the walk goes.
    fn wake(&mut self) {
        if self.flaw == Some(LockFlaw::LostWakeup) {
            return;
        }
        if self.exact() {
            self.wake_exact();
            return;
        }
        let rule = self.rule();
        let ignore_waiters = self.flaw == Some(LockFlaw::IgnoreEarlierWaiters);
        let mut claims = std::mem::take(&mut self.scratch.claims);
        if claims.len() < self.holdings.len() {
            claims.resize(self.holdings.len(), 0);
        }
        // The waiters are the entries in the waiting state, and both lists
        // are in id order: walk the entries (no lookup per waiter).
        debug_assert!(
            self.entries
                .iter()
                .filter(|(_, e)| e.state == RequestState::Waiting)
                .map(|(id, _)| *id)
                .eq(self.waiting.iter().copied()),
            "the waiting queue is the waiting entries in id order"
        );
        // `k` counts the waiters walked, `kept` those that stay.
        let (mut k, mut kept) = (0, 0);
        for i in 0..self.entries.list.len() {
            let Admitted(id, e) = &self.entries.list[i];
            if e.state != RequestState::Waiting {
                continue;
            }
            let (id, span) = (*id, e.span);
            let locks = self.entries.span(span);
            // One pass: the modes each lock conflicts with (bit 0 shared,
            // bit 1 exclusive) against those held and those claimed; a
            // conflicting holder settles it.
            let (mut behind_holder, mut behind_waiter) = (false, false);
            for &(slot, shared) in locks {
                let conflicts = u8::from(rule.modes_conflict(shared, true))
                    | (u8::from(rule.modes_conflict(shared, false)) << 1);
                let h = &self.holdings[slot as usize];
                let held = u8::from(!h.shared.is_empty()) | (u8::from(h.exclusive.is_some()) << 1);
                if held & conflicts != 0 {
                    behind_holder = true;
                    break;
                }
                behind_waiter |= claims[slot as usize] & conflicts != 0;
            }
            let behind_waiter = behind_waiter && !ignore_waiters;
            if behind_waiter || behind_holder {
                for &(slot, shared) in locks {
                    claims[slot as usize] |= if shared { 1 } else { 2 };
                }
                if !behind_holder {
                    self.hit(Tr::StaysBehindWaiter);
                }
                self.waiting[kept] = id;
                self.waiting_modes[kept] = self.waiting_modes[k];
                kept += 1;
            } else {
                self.hit(Tr::WaitingHeld);
                self.grant_at(i);
            }
            k += 1;
        }
        self.waiting.truncate(kept);
        self.waiting_modes.truncate(kept);
        // Claims back to zero: only the slots of the waiters kept were set.
        for Admitted(_, e) in &self.entries.list {
            if e.state == RequestState::Waiting {
                for &(slot, _) in self.entries.span(e.span) {
                    claims[slot as usize] = 0;
                }
            }
        }
        self.scratch.claims = claims;
    }

    /// [`LockTable::wake`] with exact [`Modes`]: the modes claimed by the
    /// waiters that stay are one union, the holders' are [`LockTable::held`].
    fn wake_exact(&mut self) {
        let rule = self.rule();
        let ignore_waiters = self.flaw == Some(LockFlaw::IgnoreEarlierWaiters);
        let mut claimed = Modes::default();
        let mut kept = 0;
        for k in 0..self.waiting.len() {
            let (id, modes) = (self.waiting[k], self.waiting_modes[k]);
            let behind_holder = modes.conflicts(self.held, rule);
            let behind_waiter = !ignore_waiters && modes.conflicts(claimed, rule);
            if behind_holder || behind_waiter {
                claimed.union(modes);
                if !behind_holder {
                    self.hit(Tr::StaysBehindWaiter);
                }
                self.waiting[kept] = id;
                self.waiting_modes[kept] = modes;
                kept += 1;
            } else {
                self.hit(Tr::WaitingHeld);
                self.grant(id);
            }
        }
        self.waiting.truncate(kept);
        self.waiting_modes.truncate(kept);
    }

    fn grant(&mut self, id: RequestId) {
        self.grant_at(self.entries.at(id));
    }

    /// Grants the `i`-th entry and reports it.
    fn grant_at(&mut self, i: usize) {
        let request = self.entries.list[i].0;
        let owner = self.take_keys_at(i);
        self.events.push_back(LockEvent::Granted { request, owner });
    }

    /// Marks a waiting request held and records it as a holder of its locks;
    /// returns its owner.
    fn take_keys(&mut self, id: RequestId) -> OwnerId {
        self.take_keys_at(self.entries.at(id))
    }

    /// [`LockTable::take_keys`] of the `i`-th entry.
    fn take_keys_at(&mut self, i: usize) -> OwnerId {
        let Admitted(id, entry) = &mut self.entries.list[i];
        let id = *id;
        debug_assert_eq!(entry.state, RequestState::Waiting);
        entry.state = RequestState::Held;
        self.granted += 1;
        let (owner, span) = (entry.owner, entry.span);
        for &(slot, shared) in self.entries.span(span) {
            self.held.add(slot, shared);
            let h = &mut self.holdings[slot as usize];
            if shared {
                if let Err(i) = h.shared.binary_search(&id) {
                    h.shared.insert(i, id);
                }
            } else {
                debug_assert!(
                    h.exclusive.is_none() || self.flaw.is_some(),
                    "two exclusive holders of one lock"
                );
                h.exclusive = Some(id);
            }
            debug_assert!(
                self.flaw.is_some() || h.exclusive.is_none() || h.shared.is_empty(),
                "exclusive and shared holders of one lock"
            );
        }
        owner
    }

    /// Asserts that what is derived from the held requests (holdings and
    /// their [`Modes`]) matches them.
    #[cfg(test)]
    fn check_derived(&self) {
        let mut held = Modes::default();
        for (id, e) in self.entries.iter() {
            if e.state == RequestState::Held {
                for &(slot, shared) in self.entries.locks_of(e) {
                    held.add(slot, shared);
                    let h = &self.holdings[slot as usize];
                    assert!(h.exclusive == Some(*id) || h.shared.contains(id));
                }
            }
        }
        if self.exact() && self.flaw.is_none() {
            assert_eq!(held, self.held, "held modes are the held requests'");
        }
        assert_eq!(self.waiting.len(), self.waiting_modes.len());
    }

    fn drop_keys(&mut self, id: RequestId) {
        self.drop_keys_at(self.entries.at(id));
    }

    /// [`LockTable::drop_keys`] of the `i`-th entry.
    fn drop_keys_at(&mut self, i: usize) {
        let Admitted(id, e) = &self.entries.list[i];
        let id = *id;
        for &(slot, _) in self.entries.span(e.span) {
            let h = &mut self.holdings[slot as usize];
            if h.exclusive == Some(id) {
                h.exclusive = None;
                self.held.exclusive &= !Modes::bit(slot);
            }
            if let Ok(i) = h.shared.binary_search(&id) {
                h.shared.remove(i);
                if h.shared.is_empty() {
                    self.held.shared &= !Modes::bit(slot);
                }
            }
        }
    }
}

/// Whether two requests' slot lists share a lock in conflicting modes
/// (every pair: a request names a handful of locks).
fn slots_conflict(a: &[(u32, bool)], b: &[(u32, bool)], rule: ConflictRule) -> bool {
    a.iter().any(|&(x, xs)| {
        b.iter()
            .any(|&(y, ys)| x == y && rule.modes_conflict(xs, ys))
    })
}

/// What [`LockTable::release_owner`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerRelease {
    /// Held requests released, in id order.
    pub released: Vec<RequestId>,
    /// Waiting requests cancelled, in id order.
    pub cancelled: Vec<RequestId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(keys: &[ResourceKey]) -> LockRequest {
        LockRequest::new(keys.iter().cloned()).unwrap()
    }

    fn x(name: &str) -> ResourceKey {
        ResourceKey::db(name, false)
    }

    fn r(name: &str) -> ResourceKey {
        ResourceKey::db(name, true)
    }

    fn grants(t: &mut LockTable) -> Vec<RequestId> {
        let mut out = Vec::new();
        while let Some(LockEvent::Granted { request, .. }) = t.poll_event() {
            out.push(request);
        }
        out
    }

    const A: OwnerId = OwnerId(1);
    const B: OwnerId = OwnerId(2);
    const C: OwnerId = OwnerId(3);

    #[test]
    fn transitions_are_named_and_recorded() {
        assert_eq!(TRANSITIONS.len(), Tr::OwnerCancelled as usize + 1);
        let mut t = LockTable::new();
        let a = t.acquire(A, req(&[x("a")]));
        t.acquire(B, req(&[x("a")]));
        t.release(a).unwrap();
        let cov = t.coverage();
        for i in [
            Tr::AcquireHeld,
            Tr::AcquireWaitsHolder,
            Tr::WaitingHeld,
            Tr::HeldReleased,
        ] {
            assert!(cov.has(i as usize), "{}", TRANSITIONS[i as usize]);
        }
        assert!(!cov.has(Tr::TryHeld as usize));
    }

    #[test]
    fn display_shows_domain_key_and_mode() {
        assert_eq!(ResourceKey::shared_cluster().to_string(), "Cluster:@R");
        assert_eq!(ResourceKey::exclusive_cluster().to_string(), "Cluster:@X");
        assert_eq!(
            ResourceKey::collection("db1", "c1", true).to_string(),
            "CollectionName:db1:c1@R"
        );
        assert_eq!(ResourceKey::privilege().to_string(), "Privilege:@X");
        assert_eq!(
            ResourceKey::snapshot(42, "s", false).to_string(),
            "SnapshotName:42:s@X"
        );
        assert_eq!(ResourceKey::db("d", false).to_string(), "DBName:d@X");
    }

    #[test]
    fn collection_key_with_empty_db_uses_default_db() {
        assert_eq!(
            ResourceKey::collection("", "c", true).key.as_ref(),
            "default:c"
        );
    }

    #[test]
    fn privilege_key_is_always_exclusive_and_empty() {
        let k = ResourceKey::privilege();
        assert!(!k.shared);
        assert_eq!(k.key.as_ref(), "");
    }

    #[test]
    fn empty_request_is_an_error() {
        assert_eq!(LockRequest::new([]), Err(LockError::EmptyRequest));
    }

    #[test]
    fn normalization_dedups_on_whole_key_and_sorts_cluster_last() {
        let q = LockRequest::for_broadcast([
            ResourceKey::cluster(true),
            x("b"),
            r("a"),
            x("b"),
            ResourceKey::collection("a", "c", true),
            r("b"),
        ]);
        let shown: Vec<String> = q.keys().iter().map(|k| k.to_string()).collect();
        assert_eq!(
            shown,
            [
                "DBName:a@R",
                "DBName:b@X",
                "DBName:b@R",
                "CollectionName:a:c@R",
                "Cluster:@R"
            ]
        );
        // Both modes of `b` survive; the lock is taken exclusive.
        let modes: Vec<(String, bool)> = q
            .locks()
            .map(|k| (format!("{}:{}", k.domain, k.key), k.shared))
            .collect();
        assert_eq!(
            modes,
            [
                ("DBName:a".to_string(), true),
                ("DBName:b".to_string(), false),
                ("CollectionName:a:c".to_string(), true),
                ("Cluster:".to_string(), true),
            ]
        );
    }

    #[test]
    fn broadcast_requests_get_shared_cluster_unless_they_name_a_cluster_key() {
        let q = LockRequest::for_broadcast([x("a")]);
        assert_eq!(q.keys().last(), Some(&ResourceKey::shared_cluster()));
        let q = LockRequest::for_broadcast([x("a"), ResourceKey::exclusive_cluster()]);
        assert_eq!(
            q.keys(),
            &[x("a"), ResourceKey::exclusive_cluster()],
            "no shared cluster added next to an explicit cluster key"
        );
        let q = LockRequest::for_broadcast([]);
        assert_eq!(q.keys(), &[ResourceKey::shared_cluster()]);
    }

    #[test]
    fn shared_flag_is_a_mode_not_part_of_identity() {
        assert!(r("a").conflicts_with(&x("a")));
        assert!(x("a").conflicts_with(&x("a")));
        assert!(!r("a").conflicts_with(&r("a")));
        assert!(!x("a").conflicts_with(&x("b")));
        assert!(!x("a").conflicts_with(&ResourceKey::collection("a", "", false)));
    }

    #[test]
    fn from_normalized_takes_only_normal_forms() {
        let normal = LockRequest::for_broadcast([r("b"), r("a"), r("a")]);
        let same = LockRequest::from_normalized(normal.keys().into()).expect("normal");
        assert_eq!(same, normal);
        assert_eq!(same.digest(), normal.digest());
        assert!(LockRequest::from_normalized(Arc::from([])).is_none());
        assert!(LockRequest::from_normalized(Arc::from([r("b"), r("a")])).is_none());
        assert!(LockRequest::from_normalized(Arc::from([r("a"), r("a")])).is_none());
    }

    #[test]
    fn the_grant_count_counts_grants_only() {
        let mut t = LockTable::new();
        let a = t.acquire(A, req(&[x("k")]));
        assert_eq!(t.grant_count(), 1, "granted at once");
        let b = t.acquire(B, req(&[x("k")]));
        let c = t.acquire(C, req(&[x("k")]));
        assert_eq!(t.grant_count(), 1, "waiting is not granted");
        t.cancel(c).unwrap();
        assert_eq!(t.grant_count(), 1, "a cancel grants nothing");
        t.release(a).unwrap();
        assert_eq!(t.state(b), Some(RequestState::Held));
        assert_eq!(t.grant_count(), 2, "a release grants the next waiter");
        t.acquire(A, req(&[r("s")]));
        t.acquire(C, req(&[r("s")]));
        assert_eq!(t.grant_count(), 4, "shared holders are each granted");
        let copy = t.clone();
        assert_eq!(copy.grant_count(), 4);
        let mut into = LockTable::new();
        into.clone_from(&t);
        assert_eq!(into.grant_count(), 4);
        assert_eq!(into, t);
    }

    #[test]
    fn exclusive_cluster_excludes_every_broadcast_request() {
        let all = LockRequest::for_broadcast([ResourceKey::exclusive_cluster()]);
        let other = LockRequest::for_broadcast([r("z")]);
        assert!(all.conflicts_with(&other));
        let mut t = LockTable::new();
        t.acquire(A, all);
        assert_eq!(grants(&mut t).len(), 1);
        assert!(matches!(
            t.try_acquire(B, other),
            Err(LockError::WouldBlock(Blocker::Holder(_)))
        ));
    }

    #[test]
    fn uncontended_acquire_is_granted_immediately_and_reported_once() {
        let mut t = LockTable::new();
        let id = t.acquire(A, req(&[x("a")]));
        assert_eq!(t.state(id), Some(RequestState::Held));
        assert_eq!(grants(&mut t), [id]);
        assert_eq!(grants(&mut t), []);
    }

    #[test]
    fn shared_holders_coexist() {
        let mut t = LockTable::new();
        let a = t.acquire(A, req(&[r("a")]));
        let b = t.acquire(B, req(&[r("a")]));
        assert_eq!(grants(&mut t), [a, b]);
        assert_eq!(t.held_len(), 2);
    }

    #[test]
    fn conflicting_acquire_waits_until_release_then_is_granted() {
        let mut t = LockTable::new();
        let a = t.acquire(A, req(&[x("a")]));
        let b = t.acquire(B, req(&[r("a")]));
        assert_eq!(grants(&mut t), [a]);
        assert_eq!(t.state(b), Some(RequestState::Waiting));
        t.release(a).unwrap();
        assert_eq!(grants(&mut t), [b]);
        assert_eq!(t.state(b), Some(RequestState::Held));
    }

    #[test]
    fn acquisition_is_all_or_nothing() {
        let mut t = LockTable::new();
        let a = t.acquire(A, req(&[x("b")]));
        let b = t.acquire(B, req(&[x("a"), x("b")]));
        grants(&mut t);
        // `b` holds nothing while it waits: `a`'s key is free for others.
        assert_eq!(t.state(b), Some(RequestState::Waiting));
        assert!(t.try_acquire(C, req(&[x("c")])).is_ok());
        t.release(a).unwrap();
        assert_eq!(grants(&mut t), [b]);
    }

    #[test]
    fn waiter_is_not_overtaken_by_a_later_conflicting_request() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        let w1 = t.acquire(B, req(&[x("a"), x("b")]));
        // `w2` conflicts only with the waiter `w1`, not with any holder.
        let w2 = t.acquire(C, req(&[x("b")]));
        assert_eq!(grants(&mut t), [h]);
        assert_eq!(t.state(w2), Some(RequestState::Waiting));
        t.release(h).unwrap();
        assert_eq!(grants(&mut t), [w1]);
        t.release(w1).unwrap();
        assert_eq!(grants(&mut t), [w2]);
    }

    #[test]
    fn non_conflicting_later_waiter_is_granted_past_a_blocked_one() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        let w1 = t.acquire(B, req(&[x("a")]));
        let w2 = t.acquire(C, req(&[x("b")]));
        assert_eq!(grants(&mut t), [h, w2]);
        assert_eq!(t.state(w1), Some(RequestState::Waiting));
    }

    #[test]
    fn release_grants_waiters_in_arrival_order() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        let w1 = t.acquire(B, req(&[r("a")]));
        let w2 = t.acquire(C, req(&[r("a")]));
        grants(&mut t);
        t.release(h).unwrap();
        assert_eq!(grants(&mut t), [w1, w2]);
    }

    #[test]
    fn try_acquire_never_overtakes_a_waiter() {
        let mut t = LockTable::new();
        let _h = t.acquire(A, req(&[x("a")]));
        let w = t.acquire(B, req(&[x("a"), x("b")]));
        assert_eq!(
            t.try_acquire(C, req(&[x("b")])),
            Err(LockError::WouldBlock(Blocker::Waiter(w)))
        );
    }

    #[test]
    fn failed_try_acquire_changes_nothing() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        grants(&mut t);
        let before = t.clone();
        assert_eq!(
            t.try_acquire(B, req(&[x("a")])),
            Err(LockError::WouldBlock(Blocker::Holder(h)))
        );
        assert_eq!(t, before);
        assert_eq!(grants(&mut t), []);
    }

    #[test]
    fn blocking_holder_is_that_of_the_first_conflicting_lock_in_lock_order() {
        // `b` is named (and given a slot) before `a`: the answer follows the
        // request's lock order, not the table's slots, on both paths.
        for mask_slots in [MaskSlots::default(), MaskSlots(0)] {
            let mut t = LockTable {
                mask_slots,
                ..LockTable::new()
            };
            let hb = t.acquire(A, req(&[x("b")]));
            let ha = t.acquire(B, req(&[x("a")]));
            assert_eq!(
                t.try_acquire(C, req(&[x("b"), x("a")])),
                Err(LockError::WouldBlock(Blocker::Holder(ha)))
            );
            assert_eq!(
                t.try_acquire(C, req(&[x("b"), r("c")])),
                Err(LockError::WouldBlock(Blocker::Holder(hb)))
            );
        }
    }

    #[test]
    fn successful_try_acquire_reports_no_event() {
        let mut t = LockTable::new();
        let id = t.try_acquire(A, req(&[x("a")])).unwrap();
        assert_eq!(t.state(id), Some(RequestState::Held));
        assert_eq!(grants(&mut t), []);
    }

    #[test]
    fn cancel_withdraws_a_waiter_and_unblocks_those_behind_it() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        let w1 = t.acquire(B, req(&[x("a"), x("b")]));
        let w2 = t.acquire(C, req(&[x("b")]));
        assert_eq!(grants(&mut t), [h]);
        t.cancel(w1).unwrap();
        assert_eq!(t.state(w1), None);
        assert_eq!(grants(&mut t), [w2]);
    }

    #[test]
    fn misuse_is_a_typed_error_that_changes_nothing() {
        let mut t = LockTable::new();
        let h = t.acquire(A, req(&[x("a")]));
        let w = t.acquire(B, req(&[x("a")]));
        grants(&mut t);
        let before = t.clone();
        assert_eq!(t.release(w), Err(LockError::NotHeld(w)));
        assert_eq!(t.cancel(h), Err(LockError::NotWaiting(h)));
        assert_eq!(
            t.release(RequestId(99)),
            Err(LockError::UnknownRequest(RequestId(99)))
        );
        assert_eq!(
            t.cancel(RequestId(99)),
            Err(LockError::UnknownRequest(RequestId(99)))
        );
        assert_eq!(t, before);
        t.release(h).unwrap();
        assert_eq!(
            t.release(h),
            Err(LockError::UnknownRequest(h)),
            "double release"
        );
    }

    #[test]
    fn release_owner_drops_holds_and_waits_in_one_step() {
        let mut t = LockTable::new();
        let a1 = t.acquire(A, req(&[x("a")]));
        let b1 = t.acquire(B, req(&[x("b")]));
        let a2 = t.acquire(A, req(&[x("b")]));
        let c1 = t.acquire(C, req(&[x("a")]));
        assert_eq!(grants(&mut t), [a1, b1]);
        let out = t.release_owner(A);
        assert_eq!(out.released, [a1]);
        assert_eq!(out.cancelled, [a2]);
        assert_eq!(grants(&mut t), [c1]);
        assert_eq!(t.state(a2), None);
        assert_eq!(t.release_owner(A), OwnerRelease::default());
    }

    #[test]
    fn flaw_ignore_earlier_waiters_lets_a_later_request_overtake() {
        let mut t = LockTable::with_flaw(Some(LockFlaw::IgnoreEarlierWaiters));
        let _h = t.acquire(A, req(&[x("a")]));
        let _w1 = t.acquire(B, req(&[x("a"), x("b")]));
        let w2 = t.acquire(C, req(&[x("b")]));
        assert_eq!(t.state(w2), Some(RequestState::Held));
    }

    #[test]
    fn flaw_shared_in_identity_lets_reader_and_writer_share() {
        let mut t = LockTable::with_flaw(Some(LockFlaw::SharedInIdentity));
        let a = t.acquire(A, req(&[x("a")]));
        let b = t.acquire(B, req(&[r("a")]));
        assert_eq!(grants(&mut t), [a, b]);
    }

    #[test]
    fn flaw_lost_wakeup_leaves_waiter_after_release() {
        let mut t = LockTable::with_flaw(Some(LockFlaw::LostWakeup));
        let a = t.acquire(A, req(&[x("a")]));
        let b = t.acquire(B, req(&[x("a")]));
        grants(&mut t);
        t.release(a).unwrap();
        assert_eq!(t.state(b), Some(RequestState::Waiting));
    }
}

#[cfg(test)]
mod model {
    //! The table against a deliberately naive model: lists, pairwise key
    //! comparison, and the fairness rule read straight from SEMANTICS.
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Acquire(u64, Vec<ResourceKey>),
        Try(u64, Vec<ResourceKey>),
        Cancel(usize),
        Release(usize),
        ReleaseOwner(u64),
    }

    #[derive(Default)]
    struct Naive {
        next: u64,
        /// (id, owner, raw keys), arrival order.
        held: Vec<(u64, u64, Vec<ResourceKey>)>,
        waiting: Vec<(u64, u64, Vec<ResourceKey>)>,
    }

    fn clash(a: &[ResourceKey], b: &[ResourceKey]) -> bool {
        a.iter().any(|x| {
            b.iter()
                .any(|y| x.domain == y.domain && x.key == y.key && (!x.shared || !y.shared))
        })
    }

    impl Naive {
        fn free(&self, keys: &[ResourceKey], earlier_waiters: usize) -> bool {
            self.held.iter().all(|(_, _, h)| !clash(h, keys))
                && self.waiting[..earlier_waiters]
                    .iter()
                    .all(|(_, _, w)| !clash(w, keys))
        }

        /// Grants every waiter the rule allows, in arrival order.
        fn settle(&mut self) -> Vec<u64> {
            let mut granted = Vec::new();
            let mut i = 0;
            while i < self.waiting.len() {
                if self.free(&self.waiting[i].2.clone(), i) {
                    let w = self.waiting.remove(i);
                    granted.push(w.0);
                    self.held.push(w);
                } else {
                    i += 1;
                }
            }
            granted
        }

        fn acquire(&mut self, owner: u64, keys: Vec<ResourceKey>) -> Vec<u64> {
            self.next += 1;
            self.waiting.push((self.next, owner, keys));
            self.settle()
        }

        fn try_acquire(&mut self, owner: u64, keys: Vec<ResourceKey>) -> Option<u64> {
            if !self.free(&keys, self.waiting.len()) {
                return None;
            }
            self.next += 1;
            self.held.push((self.next, owner, keys));
            Some(self.next)
        }
    }

    fn key() -> impl Strategy<Value = ResourceKey> + Clone {
        (0..5usize, 0..2u8, any::<bool>()).prop_map(|(d, k, shared)| {
            let name = ["p", "q"][k as usize];
            match Domain::ALL[d] {
                Domain::DbName => ResourceKey::db(name, shared),
                Domain::CollectionName => ResourceKey::collection("db", name, shared),
                Domain::Privilege => ResourceKey::privilege(),
                Domain::SnapshotName => ResourceKey::snapshot(7, name, shared),
                Domain::Cluster => ResourceKey::cluster(shared || k == 0),
            }
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        let keys = prop::collection::vec(key(), 1..4);
        prop_oneof![
            4 => (0..4u64, keys.clone()).prop_map(|(o, k)| Op::Acquire(o, k)),
            2 => (0..4u64, keys).prop_map(|(o, k)| Op::Try(o, k)),
            2 => any::<usize>().prop_map(Op::Cancel),
            4 => any::<usize>().prop_map(Op::Release),
            1 => (0..4u64).prop_map(Op::ReleaseOwner),
        ]
    }

    proptest! {
        /// The hand-written order and equality (pointer shortcut) are the
        /// derived ones of `(domain, key, shared)`, whether or not two keys
        /// share one name allocation.
        #[test]
        fn key_order_is_domain_key_mode(a in key(), b in key(), share in any::<bool>()) {
            let b = if share && a.key == b.key {
                ResourceKey { key: a.key.clone(), ..b }
            } else {
                ResourceKey { key: Arc::from(&*b.key), ..b }
            };
            let tuple = |k: &ResourceKey| (k.domain, k.key.to_string(), k.shared);
            prop_assert_eq!(a.cmp(&b), tuple(&a).cmp(&tuple(&b)));
            prop_assert_eq!(a == b, tuple(&a) == tuple(&b));
            prop_assert_eq!(a.same_lock(&b), a.domain == b.domain && *a.key == *b.key);
        }

        /// A name's tail is read as the word a zero-padded buffer holds
        /// (request digests, so trace digests and seed files, depend on it).
        #[test]
        fn a_tail_is_the_zero_padded_little_endian_word(
            bytes in prop::collection::vec(any::<u8>(), 0..=8),
        ) {
            let mut buffer = [0u8; 8];
            buffer[..bytes.len()].copy_from_slice(&bytes);
            prop_assert_eq!(le_word(&bytes), u64::from_le_bytes(buffer));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn table_agrees_with_naive_model_on_every_grant(ops in prop::collection::vec(op(), 1..60)) {
            // Exact slot sets, and the walks that serve tables too wide for
            // them (every slot past the second).
            for mask_slots in [MaskSlots::default(), MaskSlots(2)] {
            let mut t = LockTable { mask_slots, ..LockTable::new() };
            let mut m = Naive::default();
            for op in ops.clone() {
                match op {
                    Op::Acquire(o, keys) => {
                        let id = t.acquire(OwnerId(o), LockRequest::new(keys.clone()).unwrap());
                        let expect = m.acquire(o, keys);
                        prop_assert_eq!(id.0, m.next);
                        let got: Vec<u64> = std::iter::from_fn(|| t.poll_event())
                            .map(|LockEvent::Granted { request, .. }| request.0)
                            .collect();
                        prop_assert_eq!(got, expect);
                    }
                    Op::Try(o, keys) => {
                        let got = t.try_acquire(OwnerId(o), LockRequest::new(keys.clone()).unwrap());
                        let expect = m.try_acquire(o, keys);
                        prop_assert_eq!(got.ok().map(|r| r.0), expect);
                    }
                    Op::Cancel(i) => {
                        if m.waiting.is_empty() { continue; }
                        let id = m.waiting[i % m.waiting.len()].0;
                        prop_assert_eq!(t.cancel(RequestId(id)), Ok(()));
                        m.waiting.retain(|w| w.0 != id);
                        let expect = m.settle();
                        let got: Vec<u64> = std::iter::from_fn(|| t.poll_event())
                            .map(|LockEvent::Granted { request, .. }| request.0)
                            .collect();
                        prop_assert_eq!(got, expect);
                    }
                    Op::Release(i) => {
                        if m.held.is_empty() { continue; }
                        let id = m.held[i % m.held.len()].0;
                        prop_assert_eq!(t.release(RequestId(id)), Ok(()));
                        m.held.retain(|h| h.0 != id);
                        let expect = m.settle();
                        let got: Vec<u64> = std::iter::from_fn(|| t.poll_event())
                            .map(|LockEvent::Granted { request, .. }| request.0)
                            .collect();
                        prop_assert_eq!(got, expect);
                    }
                    Op::ReleaseOwner(o) => {
                        t.release_owner(OwnerId(o));
                        m.held.retain(|h| h.1 != o);
                        m.waiting.retain(|w| w.1 != o);
                        let expect = m.settle();
                        let got: Vec<u64> = std::iter::from_fn(|| t.poll_event())
                            .map(|LockEvent::Granted { request, .. }| request.0)
                            .collect();
                        prop_assert_eq!(got, expect);
                    }
                }
                prop_assert_eq!(t.held_len(), m.held.len());
                prop_assert_eq!(t.waiting_len(), m.waiting.len());
                t.check_derived();
            }
            }
        }

        /// Slots found through the hash index are the ones a scan over the
        /// names finds, and new locks take the same free slots: interning
        /// is a function of the order of names and frees only.
        #[test]
        fn slot_index_agrees_with_a_scan(
            ops in prop::collection::vec((any::<bool>(), 0usize..5, 0u8..40), 1..300),
        ) {
            let mut slots = Slots::default();
            // The reference: names by slot, found by scanning.
            let mut names: Vec<Option<(Domain, String)>> = Vec::new();
            let mut refs: Vec<u32> = Vec::new();
            let mut free: Vec<u32> = Vec::new();
            for (add, d, k) in ops {
                let domain = Domain::ALL[d];
                let name = format!("k{k}");
                if add {
                    let expect = match names.iter().position(|n| n.as_ref() == Some(&(domain, name.clone()))) {
                        Some(i) => i as u32,
                        None => {
                            let slot = free.pop().unwrap_or_else(|| {
                                names.push(None);
                                refs.push(0);
                                (names.len() - 1) as u32
                            });
                            names[slot as usize] = Some((domain, name.clone()));
                            slot
                        }
                    };
                    refs[expect as usize] += 1;
                    // A fresh allocation of the name: found by its bytes.
                    let got = slots.intern(&ResourceKey::new(domain, name.as_str(), true));
                    prop_assert_eq!(got, expect);
                } else if let Some(slot) = refs.iter().position(|r| *r > 0) {
                    let slot = (slot + usize::from(k)) % refs.len();
                    if refs[slot] == 0 { continue; }
                    refs[slot] -= 1;
                    if refs[slot] == 0 {
                        names[slot] = None;
                        free.push(slot as u32);
                    }
                    slots.unref(slot as u32);
                }
                prop_assert!(slots.named() * 2 <= slots.index.len());
                let indexed = slots.index.iter().filter(|s| **s != NO_SLOT).count();
                prop_assert_eq!(indexed, slots.named());
            }
        }
    }
}
