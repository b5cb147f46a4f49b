//! The reference role: reading a table tandem does not sync, for look-ups (`lookup` on a
//! column: a natural key on one side is a surrogate id on the other, found in a reference table
//! on the side that holds the id).
//!
//! Contract of [`Reference::look_up`]:
//! - **Set-based.** One statement for all the values a batch needs from one reference table
//!   (the sync calls it once per look-up column per batch), never one per row.
//! - **Values are parameters**; the table and column names come from the config and are
//!   quoted as identifiers in the dialect's template (`look_up` in `sql/<dialect>/statements.sql`).
//! - **Compared as text**, exactly (PostgreSQL `column::text = value`; SQL Server the column
//!   converted to `nvarchar` in a binary collation, trailing spaces ignored as SQL Server
//!   compares): a value that cannot be the column's type simply matches nothing, it never fails
//!   the batch.
//! - **Every matching row is returned**: a value that matches several rows (the column is not
//!   unique there) comes back several times, and the caller refuses it; a value without a row
//!   is absent.
//! - **Read now, cached nowhere**: committed rows at the time of the call, outside any apply
//!   transaction, locking nothing; so a row added to the reference table is found by the next
//!   batch (a change waiting for it is retried).

use async_trait::async_trait;
use serde_json::Value;

use super::EndpointError;
use crate::config::TableName;

/// Reads reference tables on one database.
#[async_trait]
pub trait Reference: Send + Sync {
    /// For each of `values` (as text), the rows of `table` whose column `by` holds it, each as
    /// (the value asked, the row's column `out` as JSON).
    async fn look_up(
        &self,
        table: &TableName,
        by: &str,
        out: &str,
        values: &[String],
    ) -> Result<Vec<(String, Value)>, EndpointError>;
}
