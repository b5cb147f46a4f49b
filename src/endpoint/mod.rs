//! One trait over a database. The sync pipeline talks only to [`Endpoint`]; each dialect
//! (PostgreSQL here, SQL Server in `mssql`) keeps its SQL, parameters, JSON functions and the
//! way it marks tandem's own writes to itself.

pub mod error;
pub mod mssql;
pub mod postgres;
pub mod template;
pub mod verify_hash;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, DbKind, Side};
use crate::model::{Key, OutboxRow, TargetChange};

pub use error::{ApplyError, EndpointError, ErrorKind};

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
    },
    /// Not applied; the rest of the batch was.
    Failed(ApplyError),
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
    /// The newest outbox sequence of the change (older suspended images are superseded).
    pub seq: i64,
    /// This side's id map held exactly this live link when the batch was claimed: the id map
    /// needs no write (most changes of a linked record). The peer_id_column is still filled
    /// (a re-created or rewritten row may have lost it).
    pub known: bool,
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

/// Whether tandem's objects are installed on a side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallState {
    Missing,
    Installed { triggers: usize, expected: usize },
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

fn unsupported<T>(what: &str) -> Result<T, EndpointError> {
    Err(EndpointError::Config(format!(
        "{what} is not supported for this kind of database yet"
    )))
}

/// One database, as tandem uses it.
#[async_trait]
pub trait Endpoint: Send + Sync {
    /// Which side this is.
    fn side(&self) -> Side;
    /// The SQL `install` runs, exactly as it runs it (needs no connection).
    fn install_script(&self) -> String;
    /// The SQL `uninstall` runs.
    fn uninstall_script(&self) -> String;
    /// Creates or upgrades tandem's objects and capture triggers (idempotent).
    async fn install(&self) -> Result<(), EndpointError>;
    /// Removes them.
    async fn uninstall(&self) -> Result<(), EndpointError>;
    /// Is the database reachable?
    async fn ping(&self) -> Result<(), EndpointError>;
    /// Tables, columns and keys that do not fit the config.
    async fn check(&self) -> Result<Vec<SchemaProblem>, EndpointError>;
    /// Are tandem's objects there?
    async fn install_state(&self) -> Result<InstallState, EndpointError>;
    /// The oldest eligible pending outbox rows (not suspended, retry time reached).
    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, EndpointError>;
    /// A batch for a burst of pipelined batches: the oldest eligible rows with a sequence above
    /// `after` (so a burst can claim the next batch while the previous ones are still being
    /// applied), plus, for records of `fold` entities, their next plain updates (marked
    /// `pulled`), which the batch folds into one apply. `None`: this endpoint cannot, and the
    /// sync runs one batch at a time with [`Endpoint::claim`].
    async fn claim_batch(
        &self,
        limit: usize,
        after: i64,
        fold: &[String],
    ) -> Result<Option<Vec<OutboxRow>>, EndpointError> {
        let _ = (limit, after, fold);
        Ok(None)
    }
    /// Looks up links of `entity` in this side's id map by this side's keys.
    async fn links(&self, entity: &str, keys: &[Key]) -> Result<HashMap<Key, Link>, EndpointError>;
    /// Applies changes captured at the other side, in order, in one transaction; a change
    /// that fails is rolled back alone and reported, the others commit.
    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError>;
    /// Stores id pairs, removes done outbox rows and records failures, in one transaction.
    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError>;
    /// Counts per entity.
    async fn status(&self) -> Result<Vec<EntityStatus>, EndpointError>;
    /// Which of these records of `entity` (this side's keys) still have changes in this
    /// side's outbox, pending or suspended.
    async fn in_flight(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<std::collections::HashSet<Key>, EndpointError>;
    /// Suspended changes here, oldest first (`seq`: just that one).
    async fn suspended(
        &self,
        seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuspendedChange>, EndpointError>;
    /// Back to pending with attempts reset (`None`: all suspended changes); how many.
    async fn resubmit(&self, seq: Option<i64>) -> Result<u64, EndpointError>;
    /// Removes a suspended change; returns it, or None when there is no such suspended change.
    async fn discard(&self, seq: i64) -> Result<Option<SuspendedChange>, EndpointError>;
    /// Tries to become the active instance (one lock per tandem installation); `None` when
    /// another instance holds it.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, EndpointError> {
        Ok(Some(Box::new(NoLease)))
    }
    /// Rows in the entity's table on this side.
    async fn row_count(&self, _entity: &str) -> Result<i64, EndpointError> {
        unsupported("backfill")
    }
    /// The saved progress of a backfill of `entity` from this side.
    async fn backfill_progress(&self, _entity: &str) -> Result<BackfillProgress, EndpointError> {
        unsupported("backfill")
    }
    /// Forgets that progress (`--restart`).
    async fn backfill_reset(&self, _entity: &str) -> Result<(), EndpointError> {
        unsupported("backfill")
    }
    /// Queues the next `chunk` existing rows (in key order, after the saved progress) as
    /// changes in this side's outbox and saves the progress, in one transaction.
    async fn backfill_chunk(
        &self,
        _entity: &str,
        _chunk: usize,
    ) -> Result<BackfillChunk, EndpointError> {
        unsupported("backfill")
    }
    /// Outbox rows with sequences in `min..=max`.
    async fn pending_between(&self, _min: i64, _max: i64) -> Result<Queued, EndpointError> {
        unsupported("backfill")
    }
    /// Count and hash per bucket of the entity's records (`buckets` buckets).
    async fn verify_buckets(
        &self,
        _entity: &str,
        _buckets: i32,
    ) -> Result<Vec<BucketHash>, EndpointError> {
        unsupported("verify")
    }
    /// The records of some buckets, each with its hash.
    async fn verify_records(
        &self,
        _entity: &str,
        _buckets: i32,
        _which: &[i32],
    ) -> Result<Vec<RecordHash>, EndpointError> {
        unsupported("verify")
    }
    /// Which of these join keys have changes in this side's outbox.
    async fn verify_in_flight(
        &self,
        _entity: &str,
        _join_keys: &[String],
    ) -> Result<std::collections::HashSet<String>, EndpointError> {
        unsupported("verify")
    }
    /// The current row of a record here.
    async fn fetch_image(
        &self,
        _entity: &str,
        _key: &Key,
    ) -> Result<Option<crate::model::Image>, EndpointError> {
        unsupported("verify")
    }
    /// Queues the current row of a record as a change of `op` in this side's outbox.
    async fn requeue(
        &self,
        _entity: &str,
        _key: &Key,
        _op: crate::model::Op,
    ) -> Result<u64, EndpointError> {
        unsupported("verify --repair")
    }
    /// Deletes records here without capturing it, and marks their links deleted.
    async fn delete_records(&self, _entity: &str, _keys: &[Key]) -> Result<u64, EndpointError> {
        unsupported("verify --repair")
    }
    /// The pool's connections, for metrics.
    fn pool_state(&self) -> PoolState {
        PoolState::default()
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
