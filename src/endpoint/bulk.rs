//! The bulk role: `backfill`, `verify` and `verify --repair` on one database. An endpoint that
//! offers it returns itself from [`super::Endpoint::bulk`]; the commands ask for it up front and
//! refuse, with a message naming the side and its kind, when an endpoint does not.
//!
//! Contract:
//! - **Backfill goes through the outbox.** `backfill_chunk` queues the next rows (in key order,
//!   after the saved progress) as changes in this side's outbox and saves the progress, in one
//!   transaction, so a backfill resumes after its last committed chunk; the normal pipeline
//!   applies them. A queued image is never older than a live change with a smaller sequence
//!   (the read waits for writers of its rows), so a backfill never overwrites a live change.
//! - **Verify is read-only** and compares in one shape (A's codes, parents by A's key, keys as
//!   id-map texts). Equal records hash equal on both sides of the same kind; for a mixed pair
//!   the records are streamed and hashed by tandem (`verify_hash`).
//! - **Repair** only queues changes (`requeue`) or deletes records as tandem's own write
//!   (`delete_records`, not captured); the pipeline does the rest.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::{BackfillChunk, BackfillProgress, BucketHash, EndpointError, Queued, RecordHash};
use crate::model::{Image, Key, Op};

/// Bulk operations on one database.
#[async_trait]
pub trait Bulk: Send + Sync {
    /// Rows in the entity's table on this side.
    async fn row_count(&self, entity: &str) -> Result<i64, EndpointError>;
    /// The saved progress of a backfill of `entity` from this side.
    async fn backfill_progress(&self, entity: &str) -> Result<BackfillProgress, EndpointError>;
    /// Forgets that progress (`--restart`).
    async fn backfill_reset(&self, entity: &str) -> Result<(), EndpointError>;
    /// Queues the next `chunk` existing rows (in key order, after the saved progress) as
    /// changes in this side's outbox and saves the progress, in one transaction.
    async fn backfill_chunk(
        &self,
        entity: &str,
        chunk: usize,
    ) -> Result<BackfillChunk, EndpointError>;
    /// Outbox rows with sequences in `min..=max`.
    async fn pending_between(&self, min: i64, max: i64) -> Result<Queued, EndpointError>;
    /// Count and hash per bucket of the entity's records (`buckets` buckets).
    async fn verify_buckets(
        &self,
        entity: &str,
        buckets: i32,
    ) -> Result<Vec<BucketHash>, EndpointError>;
    /// The records of some buckets, each with its hash.
    async fn verify_records(
        &self,
        entity: &str,
        buckets: i32,
        which: &[i32],
    ) -> Result<Vec<RecordHash>, EndpointError>;
    /// Which of these join keys have changes in this side's outbox.
    async fn verify_in_flight(
        &self,
        entity: &str,
        join_keys: &[String],
    ) -> Result<HashSet<String>, EndpointError>;
    /// The current row of a record here.
    async fn fetch_image(&self, entity: &str, key: &Key) -> Result<Option<Image>, EndpointError>;
    /// The current rows of many records here, in one set-based read (the lossy rule's read
    /// before a batch is applied: one per entity per batch). Each found row comes under the
    /// key it was asked by; a record with no row is absent. Reads committed data, outside any
    /// apply transaction, and locks nothing.
    async fn fetch_images(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<HashMap<Key, Image>, EndpointError>;
    /// Queues the current row of a record as a change of `op` in this side's outbox.
    async fn requeue(&self, entity: &str, key: &Key, op: Op) -> Result<u64, EndpointError>;
    /// Deletes records here without capturing it, and marks their links deleted.
    async fn delete_records(&self, entity: &str, keys: &[Key]) -> Result<u64, EndpointError>;
}
