//! A database as tandem uses it, in roles: [`Source`] (claim, write back), [`Target`]
//! (apply), [`Admin`] (install, check, status, suspended changes, leadership) and, as a
//! declared capability, [`Bulk`] (backfill, verify, repair). The sync pipeline talks only to
//! these traits; each dialect (`postgres`, `mssql`) keeps its SQL, parameters, JSON functions
//! and the way it marks tandem's own writes to itself.

mod admin;
mod bulk;
pub mod catalog;
pub mod desc;
pub mod error;
pub mod fingerprint;
pub mod memory;
pub mod mssql;
pub mod pool;
pub mod postgres;
mod reference;
mod source;
mod target;
pub mod template;
pub mod verify_hash;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, DbKind, Side};
use crate::model::{Key, Op, TargetChange};

pub use admin::Admin;
pub use bulk::Bulk;
pub use error::{ApplyError, EndpointError, ErrorKind, ParentState};
pub use reference::Reference;
pub use source::Source;
pub use target::Target;

/// What became of one change at the target.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Committed at the target. `target_key` is the record's key there (None only for a
    /// delete of a record the target never had).
    Done {
        target_key: Option<Key>,
        how: Done,
        /// The record had changed at the target too (a conflict was resolved).
        conflict: bool,
        /// The newest change of the record captured at the target that this change beat in
        /// a conflict (removed there). A copy of it may already be on its way to the source
        /// (claimed before the conflict): there it is stale, and the write-back raises the
        /// source's guard to this sequence so it is recognised as such.
        superseded: Option<i64>,
        /// Changes of the record suspended at the target that this delete made moot (it
        /// removed the record there, and it was gone at the source already): settled in the
        /// same transaction instead of left parked for an operator. Their sequences there.
        moot: Vec<i64>,
    },
    /// Not applied; the rest of the batch was.
    Failed(ApplyError),
}

/// The source's guard at key `k` here: the newest of this side's changes of the record it
/// has applied (`peer_applied_seq`), which are no conflict and, once it deletes the record,
/// moot. None counts at a key where the record is linked to another key here (`known`): the
/// changes there are another record's (simulation's full workload, seed 1394: they were taken
/// as applied there). Nor where the source linked another key when it read the guard
/// (`peer_hint`): a move that landed here on a local record, whose reply had not reached the
/// source when it claimed its next change (seed 37896: its delete removed the local record).
pub(crate) fn guard_at(c: &TargetChange, known: Option<&Key>, k: &Key) -> i64 {
    if known.is_some_and(|o| o != k) || c.peer_hint.as_ref().is_some_and(|h| h != k) {
        0
    } else {
        c.peer_applied_seq
    }
}

/// Whether the source's hint of a record it links to key `h` here is newer than the live link
/// here that gives `h` to another record of the source (`apply_one`, as `apply.sql` decides
/// it): `pending` are the changes of `h` pending here (sequence, and whether a delete), and
/// `peer_applied` is the source's guard of the hinted link. A change pending here at or below
/// that guard reached the source and linked it there, and its reply, which would have moved
/// the link here, was lost. A pending delete of `h` says the record under it was deleted here
/// since: a new record may hold the key now, and the link here is the newer one.
pub(crate) fn hint_newer_than_link(
    pending: impl IntoIterator<Item = (i64, bool)>,
    peer_applied: i64,
) -> bool {
    let (mut seen_there, mut deleted) = (false, false);
    for (seq, delete) in pending {
        seen_there |= seq <= peer_applied;
        deleted |= delete;
    }
    seen_there && !deleted
}

/// Whether a new record of this side holds a key, created after this side's delete of the
/// record that held it (`apply_one`, as `apply.sql` decides it): `pending` are the changes of
/// the key pending here (sequence, op), in any order. An insert after the last pending delete
/// (the new record's updates may follow) that the source has not applied (above its guard
/// `peer_applied`): where it has, the two travelled as one change of the record, and a change
/// from the source is of it (simulation's full workload, seed 110685).
pub(crate) fn created_anew(
    pending: impl IntoIterator<Item = (i64, crate::model::Op)>,
    peer_applied: i64,
) -> bool {
    use crate::model::Op;
    let mut last_delete = None;
    let mut inserts = Vec::new();
    for (seq, op) in pending {
        match op {
            Op::Delete => last_delete = last_delete.max(Some(seq)),
            Op::Insert => inserts.push(seq),
            Op::Update => {}
        }
    }
    last_delete.is_some_and(|d| inserts.iter().any(|&i| i > d && i > peer_applied))
}

/// Why a creation from the other side, or a record moving onto key `k` (seed 57548), waits at
/// it here (side `here`): this side's own new record under it was sent there with no reply yet
/// (`Source::mark_sent`). SQL Server's `apply.sql` words it the same.
pub(crate) fn sent_unconfirmed(k: &Key, here: Side) -> String {
    format!(
        "key {k} at side {here} holds a new record of this side, sent to side {} with no reply \
         yet; this change waits until that record is linked or its insert fails",
        here.other()
    )
}

/// Whether a creation from the other side (or a move onto the key) waits for this side's own new
/// record under its key (`apply_one`, as `apply.sql` decides it): `changes` are that key's changes
/// pending here, oldest first, each with whether it was sent (at or below the sent mark, never
/// failed or sent again since). It waits where an insert, or an update after a pending insert, was
/// sent (an update travels as the insert that failed earlier in its burst, and creates the record
/// there: found by the simulation's variant without key changes at A, seed 62166), and the newest
/// change is not a delete while the row is here (`row_here`), or is a delete not sent yet while it
/// is gone (the copy there may be live). The caller checks that the record is linked to nothing.
pub(crate) fn own_insert_waits(
    row_here: bool,
    changes: impl IntoIterator<Item = (Op, bool)>,
) -> bool {
    let (mut insert, mut insert_sent, mut newest) = (false, false, None);
    for (op, sent) in changes {
        insert |= op == Op::Insert;
        insert_sent |= insert && op != Op::Delete && sent;
        newest = Some((op, sent));
    }
    insert_sent
        && match newest {
            Some((op, _)) if row_here => op != Op::Delete,
            Some((op, sent)) => op == Op::Delete && !sent,
            None => false,
        }
}

/// Why a creation from the other side waits at key `k` here (side `here`): this side's own new
/// record under it was sent there with no reply yet, and deleted here since; its copy there
/// may still be live. SQL Server's `apply.sql` words it the same.
pub(crate) fn sent_then_deleted(k: &Key, here: Side) -> String {
    format!(
        "key {k} at side {here} held a new record of this side, sent to side {} with no reply \
         yet and deleted here since; this change waits until that record is linked (its delete \
         then goes first) or its insert fails",
        here.other()
    )
}

/// Why a delete the source never linked waits (`ApplyError::KeyHeld`): the record the link
/// here names under its key has moved here, with changes still on their way to the source.
pub(crate) fn moved_with_changes_pending(k: &Key, here: Side) -> String {
    format!(
        "the record {k} at side {here} linked to this key no longer holds it, and its changes \
         are still on their way to side {}; this delete waits until they have settled",
        here.other()
    )
}

/// The outcome of a change the target had applied already, or a newer one of its record
/// (the sequence guard): nothing is written. Where the link here is a tombstone naming the
/// record's key here, [`Done::StaleDeleted`].
pub(crate) fn stale(own: Option<Key>, deleted: bool) -> Outcome {
    match own {
        Some(k) if deleted => done(Some(k), Done::StaleDeleted, false),
        own => done(own.filter(|_| !deleted), Done::Stale, false),
    }
}

/// The outcome of a change settled at the target without beating a local change.
pub(crate) fn done(target_key: Option<Key>, how: Done, conflict: bool) -> Outcome {
    Outcome::Done {
        target_key,
        how,
        conflict,
        superseded: None,
        moot: Vec::new(),
    }
}

/// The outcome of a change that was applied; `superseded`: the newest local change it beat.
pub(crate) fn won(target_key: Option<Key>, how: Done, superseded: Option<i64>) -> Outcome {
    Outcome::Done {
        target_key,
        how,
        conflict: superseded.is_some(),
        superseded,
        moot: Vec::new(),
    }
}

/// `outcome` with the suspended changes its delete made moot at the target.
pub(crate) fn with_moot(mut outcome: Outcome, settled: Vec<i64>) -> Outcome {
    if let Outcome::Done { moot, .. } = &mut outcome {
        *moot = settled;
    }
    outcome
}

/// How a change was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// The target row was written (inserted, updated or deleted).
    Written,
    /// The target already held exactly this image: nothing was written.
    Unchanged,
    /// The target had applied this or a newer change of the record already.
    Stale,
    /// As `Stale`, and the record has since been deleted at the target: `target_key` is the
    /// key it had there, so the source's tombstone keeps the pair (found by the simulation's
    /// full workload, seed 74963: a delete whose replies were lost twice left the source's
    /// tombstone without the peer; children a delete left behind mapped to no parent).
    StaleDeleted,
    /// The record was deleted at the target: an update after a delete is discarded.
    Deleted,
    /// The record had changed at the target too and the target's change won.
    ConflictLost,
}

/// A link between a record's keys, as one side's id map holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub peer_key: Option<Key>,
    pub deleted: bool,
    /// The newest change from the other side applied here for this record.
    pub applied_seq: i64,
    /// When this side's id map last wrote the link (its clock, as `captured_at`).
    pub updated_at: DateTime<Utc>,
}

/// What to record at the source once its changes were settled at the target.
#[derive(Debug, Clone, Default)]
pub struct WriteBack {
    /// Id pairs to store in the source's id map (and its `peer_id_column`).
    pub links: Vec<LinkWrite>,
    /// Outbox rows that are done.
    pub done: Vec<i64>,
    /// Outbox rows that failed and wait for a retry or an operator.
    pub failed: Vec<Failure>,
}

/// One id pair for the source's id map.
#[derive(Debug, Clone)]
pub struct LinkWrite {
    pub entity: String,
    /// The key on the side written to.
    pub own_key: Key,
    pub peer_key: Option<Key>,
    pub deleted: bool,
    /// The newest outbox sequence of the change (older images of the record are superseded).
    pub seq: i64,
    /// This side's id map held exactly this live link when the batch was claimed, and no batch
    /// still in flight then carried the record (its write-back could have changed the link
    /// since): the id map needs no write (most changes of a linked record). The
    /// peer_id_column is still filled (a re-created or rewritten row may have lost it).
    pub known: bool,
    /// A stale report (nothing happened at the target): when this side's row is gone, the link
    /// here is left as it is. The record was deleted here and its delete is on its way, or is
    /// settled; the late copy must neither revive the link nor take the target's record from
    /// the link that holds it now (found by the simulation).
    pub only_if_row: bool,
    /// The peer's changes of this record up to this sequence lost a conflict at the peer
    /// (`Outcome::Done::superseded`): the link's guard rises to it, so a copy of one of them
    /// still on its way here is stale (found by the fault suite: such a copy re-created a
    /// record both sides had deleted).
    pub peer_guard: Option<i64>,
    /// The record is gone at the target, though this change was not a delete (an update
    /// discarded after a delete there, or a stale report naming no record): a row here, with
    /// nothing pending of it once this change is settled, is a copy the target's delete will
    /// never reach (the target deleted it applying this side's delete of another copy). It
    /// goes, uncaptured, where nothing refers to the entity and deletes are not soft
    /// (`drop_duplicate`; simulation's full workload, seed 13709 and three more).
    pub gone_there: bool,
    /// The change lost a conflict at the target (`Done::ConflictLost`): the target's winner
    /// decides the record. Should the record lose its peer to another record here in the same
    /// write-back, that winner can no longer reach it, and its settled change travels no more:
    /// it goes as a second copy (`drop_duplicate`) although that change was its own (simulation,
    /// full workload without key changes at A, seed 42553).
    pub lost: bool,
}

/// Outbox rows of one failed change.
#[derive(Debug, Clone)]
pub struct Failure {
    pub seqs: Vec<i64>,
    pub error: String,
    /// When to try again.
    pub retry_in_ms: u64,
    /// Suspend (stop retrying until an operator resubmits).
    pub suspend: bool,
}

/// A problem found comparing the config to a database.
#[derive(Debug, Clone)]
pub struct SchemaProblem {
    pub side: Side,
    pub entity: String,
    pub message: String,
}

/// Counts for `tandem status`, per entity, on one side.
#[derive(Debug, Clone, Default)]
pub struct EntityStatus {
    pub entity: String,
    /// Changes captured here and waiting to travel to the other side.
    pub pending: i64,
    pub suspended: i64,
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Records linked in this side's id map.
    pub linked: i64,
    /// Conflicts resolved at this side.
    pub conflicts: i64,
}

/// A change parked for an operator (or, with `suspended`, any outbox row looked up by id).
#[derive(Debug, Clone)]
pub struct SuspendedChange {
    pub side: Side,
    pub seq: i64,
    pub entity: String,
    pub op: String,
    pub key: String,
    pub attempts: i32,
    pub captured_at: DateTime<Utc>,
    pub first_failed_at: Option<DateTime<Utc>>,
    pub last_failed_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub image: String,
}

/// The form of tandem's objects this build uses. `install` records it on the outbox table;
/// `run` refuses a side whose objects record another (an install by an older tandem lacks
/// objects this one uses, such as `sent_mark`, and every apply would fail on them). Raise it
/// whenever `install.sql` adds or changes an object `run` relies on.
pub const INSTALL_FORMAT: u32 = 1;

/// Whether tandem's objects are installed on a side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    Missing,
    Installed {
        triggers: usize,
        expected: usize,
        /// The [`INSTALL_FORMAT`] the objects record (`None`: installed by a tandem older
        /// than the mark).
        format: Option<u32>,
    },
}

impl InstallState {
    /// Why `run` cannot use this side's objects as they are, with what to do; `None` when
    /// they are this build's.
    pub fn unusable(&self, side: Side) -> Option<String> {
        match self {
            InstallState::Missing => Some(format!(
                "side {side}: tandem is not installed (run `tandem install`)"
            )),
            InstallState::Installed { format, .. } if *format != Some(INSTALL_FORMAT) => {
                Some(format!(
                    "side {side}: tandem's objects were installed by another version of tandem \
                     (format {}, this tandem needs format {INSTALL_FORMAT}): run `tandem install`, \
                     which upgrades them in place and keeps pending changes and links",
                    format.map_or_else(|| "unmarked".to_string(), |f| f.to_string())
                ))
            }
            InstallState::Installed { .. } => None,
        }
    }
}

/// Leadership among several `tandem run` instances, held through a lock in a database on a
/// dedicated connection: the lock goes when the holder dies or loses that database.
#[async_trait]
pub trait Lease: Send + Sync {
    /// Is the lock still held? An error or `false` means this instance must stop applying.
    async fn still_held(&mut self) -> bool;
}

/// A lease for endpoints without a lock (every instance leads).
pub struct NoLease;

#[async_trait]
impl Lease for NoLease {
    async fn still_held(&mut self) -> bool {
        true
    }
}

/// Connections of an endpoint's pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct PoolState {
    pub connections: u32,
    pub idle: u32,
    pub max: u32,
}

/// What one backfill step queued.
#[derive(Debug, Clone, Default)]
pub struct BackfillChunk {
    pub rows: u64,
    /// Outbox sequences of the queued rows.
    pub min_seq: Option<i64>,
    pub max_seq: Option<i64>,
    /// No rows were left after this chunk.
    pub finished: bool,
}

/// Outbox rows of a range, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queued {
    /// Ready to be applied now.
    pub eligible: i64,
    /// Failed, waiting for their retry time.
    pub retrying: i64,
    pub suspended: i64,
}

/// A backfill's saved progress on its source side.
#[derive(Debug, Clone, Default)]
pub struct BackfillProgress {
    pub started: bool,
    pub rows_done: i64,
    pub finished: bool,
}

/// Count and hash sum of one bucket of records (verify).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketHash {
    pub bucket: i32,
    pub count: i64,
    pub sum: String,
}

/// One record as verify compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHash {
    /// The record's key at A and at B, as id_map texts (None: not linked / not here).
    pub a_key: Option<String>,
    pub b_key: Option<String>,
    /// A's key, or `B:` and B's key for records A does not know.
    pub join_key: String,
    pub hash: String,
}

/// One database, as tandem uses it: every endpoint is a [`Source`], a [`Target`] and an
/// [`Admin`] (each a file with its contract); backfill, verify and repair ([`Bulk`]) and the
/// reading of reference tables for look-ups ([`Reference`]) are capabilities an endpoint
/// declares, so a command can refuse up front what it cannot do.
pub trait Endpoint: Source + Target + Admin {
    /// Backfill, verify and repair, when this endpoint offers them.
    fn bulk(&self) -> Option<&dyn Bulk>;
    /// Reading reference tables for look-ups (`lookup`), when this endpoint offers it.
    fn reference(&self) -> Option<&dyn Reference>;
}

/// The reference role of `ep`, or an error naming the side that cannot read reference tables.
pub fn reference(ep: &dyn Endpoint) -> Result<&dyn Reference, EndpointError> {
    ep.reference().ok_or_else(|| {
        EndpointError::Config(format!(
            "side {}: this kind of database cannot read reference tables (lookup)",
            ep.side()
        ))
    })
}

/// `Source::rows_present` for an endpoint that reads rows (`Bulk::fetch_images`).
pub async fn rows_present_by_fetch(
    bulk: &dyn Bulk,
    entity: &str,
    keys: &[Key],
) -> Result<std::collections::HashSet<Key>, EndpointError> {
    if keys.is_empty() {
        return Ok(Default::default());
    }
    Ok(bulk.fetch_images(entity, keys).await?.into_keys().collect())
}

/// The bulk role of `ep`, or an error that says which side cannot do `what` (asked before a
/// command starts, not half-way through it).
pub fn bulk<'a>(ep: &'a dyn Endpoint, what: &str) -> Result<&'a dyn Bulk, EndpointError> {
    ep.bulk().ok_or_else(|| {
        EndpointError::Config(format!(
            "side {}: this kind of database does not support {what}",
            ep.side()
        ))
    })
}

/// Who wins a conflict at side `here` between an incoming change and the changes of the same
/// record pending here, each given as (captured at, derived). A change that tandem's own apply
/// caused (`derived`: a cascade, a trigger's effect) is the consequence of a decision already
/// made and loses to a user's change whatever the policy; otherwise the entity's policy
/// decides, and `newest_wins` ties go to A so both sides decide alike. One rule for every
/// dialect: the PostgreSQL apply calls it, `sql/mssql/apply.sql` spells it out, the in-memory
/// model calls it.
pub fn conflict_winner(
    policy: crate::config::ConflictPolicy,
    here: Side,
    incoming: (DateTime<Utc>, bool),
    local: (DateTime<Utc>, bool),
) -> Side {
    use crate::config::ConflictPolicy;
    let from = here.other();
    match (incoming.1, local.1) {
        (true, false) => return here,
        (false, true) => return from,
        _ => {}
    }
    match policy {
        ConflictPolicy::AWins => Side::A,
        ConflictPolicy::BWins => Side::B,
        ConflictPolicy::NewestWins => match incoming.0.cmp(&local.0) {
            std::cmp::Ordering::Greater => from,
            std::cmp::Ordering::Less => here,
            std::cmp::Ordering::Equal => Side::A,
        },
    }
}

/// Opens the endpoint for one side (lazily: no connection is made until first use).
pub fn open(config: Arc<Config>, side: Side) -> Result<Arc<dyn Endpoint>, EndpointError> {
    match config.side(side).kind {
        DbKind::Postgres => Ok(Arc::new(postgres::PgEndpoint::new(config, side)?)),
        DbKind::Mssql => Ok(Arc::new(mssql::MsEndpoint::new(config, side)?)),
    }
}

/// The install SQL for a side, without connecting.
pub fn install_script(config: &Arc<Config>, side: Side) -> Result<String, EndpointError> {
    Ok(open(config.clone(), side)?.install_script())
}

#[cfg(test)]
mod tests {
    use super::{created_anew, own_insert_waits};
    use crate::model::Op::{Delete, Insert, Update};

    #[test]
    fn a_key_is_created_anew_by_an_unseen_insert_after_its_last_delete() {
        // Deleted, created anew and changed since; the source saw none of it.
        assert!(created_anew(
            [(5, Update), (7, Delete), (9, Insert), (10, Update)],
            4
        ));
        // In any order (PostgreSQL reads them newest first).
        assert!(created_anew([(10, Update), (9, Insert), (7, Delete)], 4));
        // The source applied the insert: one change of the record there.
        assert!(!created_anew([(7, Delete), (9, Insert)], 9));
        // An insert before the last delete only: that record is gone too.
        assert!(!created_anew([(3, Insert), (7, Delete)], 0));
        assert!(!created_anew([(3, Insert), (5, Update)], 0));
        assert!(!created_anew(Vec::<(i64, crate::model::Op)>::new(), 0));
    }

    #[test]
    fn a_hint_is_newer_than_the_link_here_where_a_change_it_applied_is_pending_here() {
        // This side's update (seq 7) reached the source, which linked the record there anew;
        // its reply was lost.
        assert!(super::hint_newer_than_link([(7, false)], 7));
        assert!(super::hint_newer_than_link([(7, false), (9, false)], 8));
        // Nothing pending that the source applied: the link here is the newer one.
        assert!(!super::hint_newer_than_link([(9, false)], 8));
        assert!(!super::hint_newer_than_link([], 8));
        // The record under the key was deleted here since: another may hold it now.
        assert!(!super::hint_newer_than_link([(7, false), (9, true)], 8));
    }

    #[test]
    fn a_creation_waits_for_a_sent_insert_and_for_a_delete_not_sent_after_it() {
        // The record is here: its sent insert may be there (seeds 8082, 21577).
        assert!(own_insert_waits(true, [(Insert, true), (Update, false)]));
        assert!(!own_insert_waits(true, [(Insert, false)]), "not sent");
        // The insert failed; an update after it travelled as that insert.
        assert!(own_insert_waits(true, [(Insert, false), (Update, true)]));
        // An update with no insert pending: the record is the other side's already.
        assert!(!own_insert_waits(true, [(Update, true)]));
        assert!(!own_insert_waits(true, []), "nothing pending");
        // Gone since: its delete has not left, and the copy there may be live (seed 91390).
        assert!(own_insert_waits(false, [(Insert, true), (Delete, false)]));
        // The delete went too: with the insert, or after it to the copy (seed 3053).
        assert!(!own_insert_waits(false, [(Insert, true), (Delete, true)]));
        assert!(
            !own_insert_waits(false, [(Insert, false), (Delete, false)]),
            "not sent"
        );
    }
}
