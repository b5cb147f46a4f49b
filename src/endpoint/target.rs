//! The target role: the side changes are applied to.
//!
//! Contract of [`Target::apply`]:
//! - **One transaction per batch, one savepoint per change.** A change the database refuses
//!   (a constraint, a value that does not fit) is rolled back alone and reported as
//!   [`Outcome::Failed`]; the others commit. An error that is not a row's fault (connection
//!   lost, deadlock) fails the whole call, and nothing of the batch is committed.
//! - **Guarded.** Per record, the newest applied source sequence is kept in this side's id map
//!   in the same transaction as the data; an equal or older change is settled as
//!   [`Done::Stale`](super::Done::Stale) and writes nothing, so applying a batch twice is harmless (invariant 2).
//!   Where the record's link here is a tombstone, the report is
//!   [`Done::StaleDeleted`](super::Done::StaleDeleted) with the key the record had here: the
//!   source keeps the pair.
//! - **No echo.** Tandem's own writes are not captured by this side's triggers at the first
//!   trigger level, and a change that would not alter the row writes nothing (invariant 3).
//! - **A lost conflict reaches the loser's side.** The winner's state travels back through
//!   this side's pending changes of the record; where there are none (a record the other side
//!   moved onto a key a local record holds, whose move lost to that record, stays here under
//!   its old key), its current row is queued here as an update in the same transaction.
//! - **Order.** Changes are applied in the order given (the sync puts parents first and a
//!   record's changes in sequence); one outcome per change, in the same order.
//! - **Concurrency.** The sync applies one batch at a time per direction.
//! - **Look-ups are resolved before.** A change reaches `apply` with its `lookup` columns
//!   filled from their reference tables (`TargetChange::lookups` empty: the sync resolves them
//!   through [`super::Reference`] and fails a change it cannot resolve before calling here).

use async_trait::async_trait;

use super::{EndpointError, Outcome};
use crate::model::TargetChange;

/// The side changes are applied to.
#[async_trait]
pub trait Target: Send + Sync {
    /// Applies changes captured at the other side (see the module contract); one outcome per
    /// change, in order.
    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError>;
}
