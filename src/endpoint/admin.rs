//! The admin role: what `install`, `check`, `status` and `suspended` do with one database,
//! and what the service needs to run on it (leadership, pool state).
//!
//! Contract:
//! - `install` is idempotent (running it twice changes nothing), records the fingerprint of
//!   every synchronised table (`fingerprint::record_all`), and `install_script` returns
//!   exactly the SQL it runs, without connecting (`install --dry-run`).
//! - `check` reports misfits between the config and the catalog as [`SchemaProblem`]s; it
//!   fails only when the database cannot be asked.
//! - `suspended`, `resubmit` and `discard` act on changes parked for an operator; `resubmit`
//!   makes them pending again with attempts reset, and nothing is lost by either.

use async_trait::async_trait;

use super::fingerprint::Recorded;
use super::{
    EndpointError, EntityStatus, InstallState, Lease, NoLease, PoolState, SchemaProblem,
    SuspendedChange,
};
use crate::config::Side;

/// One database as the operator's commands and the service see it.
#[async_trait]
pub trait Admin: Send + Sync {
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
    /// The table of `entity` on this side as the catalog has it (None: no such entity or
    /// table), for `check`'s comparison of the two sides (`desc::compare`).
    async fn describe(
        &self,
        entity: &str,
    ) -> Result<Option<crate::endpoint::desc::TableDesc>, EndpointError>;
    /// Every user table of the database with its columns, keys, foreign keys and code lists
    /// (tandem's own schema left out), for `tandem init`. An endpoint without a catalog says
    /// so.
    async fn catalog(&self) -> Result<crate::endpoint::catalog::Catalog, EndpointError> {
        Err(EndpointError::Config(format!(
            "side {}: this endpoint cannot list its tables",
            self.side()
        )))
    }
    /// What `install` recorded of each entity's table here (schema drift); empty when
    /// nothing was (an install by an earlier version).
    async fn fingerprints(&self) -> Result<Vec<Recorded>, EndpointError> {
        Ok(Vec::new())
    }
    /// Stores the fingerprint (JSON) of `entity`'s table, as `install` saw it.
    async fn record_fingerprint(
        &self,
        entity: &str,
        table: &str,
        fingerprint: &str,
    ) -> Result<(), EndpointError> {
        let _ = (entity, table, fingerprint);
        Ok(())
    }
    /// Are tandem's objects there?
    async fn install_state(&self) -> Result<InstallState, EndpointError>;
    /// Counts per entity.
    async fn status(&self) -> Result<Vec<EntityStatus>, EndpointError>;
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
    /// another instance holds it. Without a lock, every instance leads.
    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, EndpointError> {
        Ok(Some(Box::new(NoLease)))
    }
    /// The pool's connections, for metrics.
    fn pool_state(&self) -> PoolState {
        PoolState::default()
    }
}
