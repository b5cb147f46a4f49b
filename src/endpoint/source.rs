//! The source role: the side changes come from.
//!
//! Contract:
//! - **Claiming takes nothing away.** `claim` and `claim_batch` only read: a claimed row stays
//!   in the outbox until [`Source::write_back`] says it is done, so a crash at any instant
//!   leaves it pending and it is claimed again (invariant 1 of DESIGN.md). Two claims may
//!   therefore return the same row; the target's sequence guard makes the second apply a no-op.
//! - **Order.** Rows come oldest first (by outbox sequence); the sync relies on this only within
//!   one record. Rows still locked by an open writer are skipped, never waited for, and never
//!   lost: they come in a later claim.
//! - **Concurrency.** During a pipelined burst, `claim_batch` for batch N+1 and `write_back` for
//!   batch N-1 run at the same time on two connections of this endpoint.
//! - **Sent changes are marked.** Before a batch with changes of records whose key this side
//!   gives by values is applied, [`Source::mark_sent`] raises this side's sent mark (one row,
//!   not one per change) to the newest of them, and clears the retry time of those that failed
//!   before (they are sent again): an insert at or below the mark with no failure since may be
//!   at the other side whatever reply comes back (so may an update after a pending insert,
//!   which travels as that insert when it failed earlier in the burst), and a delete above it
//!   has not left yet. The target side reads the mark when the other side's new record meets
//!   this one under its key (it waits instead of merging the two; `apply_one`). A change below
//!   the mark that was not sent yet (its entity paused) only makes that record wait longer; a
//!   failure recorded for it ends the wait, so two sides that both added the record cannot
//!   wait for each other for ever.
//! - **`write_back` is one transaction**: id pairs, done rows and failures land together or not
//!   at all, and it is idempotent (writing the same pair twice changes nothing).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{EndpointError, Link, WriteBack};
use crate::model::{Key, OutboxRow};

/// The side changes come from: its outbox and its half of the id map.
#[async_trait]
pub trait Source: Send + Sync {
    /// The oldest eligible pending outbox rows (not suspended, retry time reached), at most
    /// `limit`, none of an entity in `skip` (paused by schema drift: its rows stay pending,
    /// untried).
    async fn claim(&self, limit: usize, skip: &[String]) -> Result<Vec<OutboxRow>, EndpointError>;
    /// A batch for a burst of pipelined batches: the oldest eligible rows with a sequence above
    /// `after` (so a burst can claim the next batch while the previous ones are still being
    /// applied), plus, for records of `fold` entities, their next plain updates (marked
    /// `pulled`), which the batch folds into one apply. `None`: this endpoint cannot, and the
    /// sync runs one batch at a time with [`Source::claim`]. Nothing of an entity in `skip`.
    async fn claim_batch(
        &self,
        limit: usize,
        after: i64,
        fold: &[String],
        skip: &[String],
    ) -> Result<Option<Vec<OutboxRow>>, EndpointError> {
        let _ = (limit, after, fold, skip);
        Ok(None)
    }
    /// Raises the sent mark to `seq` and clears the retry time of the rows `resent` (changes
    /// that failed before, sent again; see the contract above), committed before the batch is
    /// applied; the mark never goes down.
    async fn mark_sent(&self, seq: i64, resent: &[i64]) -> Result<(), EndpointError>;
    /// Looks up links of `entity` in this side's id map by this side's keys (hints for the
    /// target; a missing key is simply absent from the map).
    async fn links(&self, entity: &str, keys: &[Key]) -> Result<HashMap<Key, Link>, EndpointError>;
    /// Which of these records of `entity` (this side's keys) still have changes in this
    /// side's outbox, pending or suspended (a child waits while its parent is on its way).
    async fn in_flight(&self, entity: &str, keys: &[Key]) -> Result<HashSet<Key>, EndpointError>;
    /// Which of these records of `entity` (this side's keys) have a row here: a child whose
    /// parent has none stays here without it (nothing here enforces the reference).
    async fn rows_present(&self, entity: &str, keys: &[Key])
        -> Result<HashSet<Key>, EndpointError>;
    /// Stores id pairs, removes done outbox rows and records failures, in one transaction.
    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError>;
}
