//! The PostgreSQL endpoint: tokio-postgres over a bb8 pool, SQL from `sql/postgres/`.

mod apply;
mod bulk;
mod catalog;
pub mod connect;
pub mod error;
mod pool;
mod row;
mod schema;
pub mod sql;
pub mod tls;
mod wave;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, Side};
use crate::endpoint::fingerprint::{Fingerprint, Recorded};
use crate::endpoint::{Admin, Bulk, Source, Target};
use crate::endpoint::{BackfillChunk, BackfillProgress, BucketHash, RecordHash};
use crate::endpoint::{
    Endpoint, EndpointError, EntityStatus, InstallState, Link, Outcome, SchemaProblem,
    SuspendedChange, WriteBack,
};
use crate::model::{Image, Key, Op, OutboxRow, TargetChange};

use pool::{prepared, PgConn, PgPool};
use row::col;
use sql::Sql;

/// One PostgreSQL database as side A or B.
pub struct PgEndpoint {
    config: Arc<Config>,
    side: Side,
    pool: PgPool,
    sql: Sql,
    /// Per entity, how a wave of inserts draws generated keys (None: it cannot).
    key_gen: std::sync::Mutex<HashMap<String, Option<String>>>,
}

impl PgEndpoint {
    /// Runs a claim statement; its columns: seq, entity, op, image, captured_at, attempts,
    /// derived and, for `claim_batch`, pulled and key.
    async fn claim_rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<OutboxRow>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("claim pending changes", e);
        let st = prepared(&*client, stmts, sql).await.map_err(err)?;
        let rows = client.query(&st, params).await.map_err(err)?;
        let what = "claim pending changes";
        rows.iter()
            .map(|r| {
                let batch = r.len() > 7;
                Ok(OutboxRow {
                    seq: col(r, 0, "seq", what)?,
                    entity: col(r, 1, "entity", what)?,
                    op: col(r, 2, "op", what)?,
                    image: col(r, 3, "image", what)?,
                    captured_at: col::<DateTime<Utc>>(r, 4, "captured_at", what)?,
                    attempts: col(r, 5, "attempts", what)?,
                    derived: col(r, 6, "derived", what)?,
                    pulled: batch && col::<bool>(r, 7, "pulled", what)?,
                    key: if batch { col(r, 8, "key", what)? } else { None },
                })
            })
            .collect()
    }

    /// Builds the endpoint and its statements; connects on first use.
    pub fn new(config: Arc<Config>, side: Side) -> Result<PgEndpoint, EndpointError> {
        let sc = config.side(side);
        let pool = PgPool::new(sc, side)?;
        let sql = Sql::build(&config, side)?;
        Ok(PgEndpoint {
            config,
            side,
            pool,
            sql,
            key_gen: std::sync::Mutex::new(HashMap::new()),
        })
    }

    async fn run_script(&self, script: &str, what: &str) -> Result<(), EndpointError> {
        let conn = self.pool.get().await?;
        conn.client
            .batch_execute(script)
            .await
            .map_err(|e| self.pool.error(what, e))
    }
}

#[async_trait]
impl Source for PgEndpoint {
    async fn claim(&self, limit: usize, skip: &[String]) -> Result<Vec<OutboxRow>, EndpointError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.claim_rows(&self.sql.common.claim, &[&limit, &skip])
            .await
    }

    async fn claim_batch(
        &self,
        limit: usize,
        after: i64,
        fold: &[String],
        skip: &[String],
    ) -> Result<Option<Vec<OutboxRow>>, EndpointError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        self.claim_rows(
            &self.sql.common.claim_batch,
            &[&limit, &after, &fold, &skip],
        )
        .await
        .map(Some)
    }

    async fn links(&self, entity: &str, keys: &[Key]) -> Result<HashMap<Key, Link>, EndpointError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("read id links", e);
        let st = prepared(&*client, stmts, &self.sql.common.links_by_own)
            .await
            .map_err(err)?;
        let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let what = "read id links";
        for r in client.query(&st, &[&entity, &texts]).await.map_err(err)? {
            let own: Option<String> = col(&r, 0, "own key", what)?;
            let peer: Option<String> = col(&r, 1, "peer key", what)?;
            let Some(own) = own.and_then(|s| Key::parse(&s).ok()) else {
                continue;
            };
            out.insert(
                own,
                Link {
                    peer_key: peer.and_then(|s| Key::parse(&s).ok()),
                    deleted: col(&r, 2, "deleted", what)?,
                    applied_seq: col(&r, 3, "applied_seq", what)?,
                    updated_at: col(&r, 4, "updated_at", what)?,
                },
            );
        }
        Ok(out)
    }

    async fn rows_present(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<HashSet<Key>, EndpointError> {
        crate::endpoint::rows_present_by_fetch(self, entity, keys).await
    }

    async fn mark_sent(&self, seq: i64, resent: &[i64]) -> Result<(), EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("raise the sent mark", e);
        let st = prepared(&*client, stmts, &self.sql.common.mark_sent)
            .await
            .map_err(err)?;
        client.execute(&st, &[&seq, &resent]).await.map_err(err)?;
        Ok(())
    }

    async fn in_flight(&self, entity: &str, keys: &[Key]) -> Result<HashSet<Key>, EndpointError> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("look for changes in flight", e);
        let st = prepared(&*client, stmts, &self.sql.common.in_flight)
            .await
            .map_err(err)?;
        let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
        for r in client.query(&st, &[&entity, &texts]).await.map_err(err)? {
            let text: Option<String> = col(&r, 0, "key", "changes in flight")?;
            if let Some(k) = text.and_then(|t| Key::parse(&t).ok()) {
                out.insert(k);
            }
        }
        Ok(out)
    }

    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError> {
        apply::write_back(self, wb).await
    }
}

#[async_trait]
impl Target for PgEndpoint {
    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError> {
        apply::apply_batch(self, batch).await
    }
}

#[async_trait]
impl Admin for PgEndpoint {
    fn side(&self) -> Side {
        self.side
    }

    fn install_script(&self) -> String {
        // Sql::build already validated every template, so this cannot fail here.
        let mut s = sql::install_script(&self.config, self.side).unwrap_or_default();
        s.push_str(&sql::runtime_listing(&self.sql));
        s
    }

    fn uninstall_script(&self) -> String {
        sql::uninstall_script(&self.config, self.side).unwrap_or_default()
    }

    async fn install(&self) -> Result<(), EndpointError> {
        let script = sql::install_script(&self.config, self.side)?;
        self.run_script(&script, "install").await?;
        crate::endpoint::fingerprint::record_all(self, &self.config).await
    }

    async fn fingerprints(&self) -> Result<Vec<Recorded>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let what = "read table fingerprints";
        let err = |e| self.pool.error(what, e);
        let st = match prepared(&*client, stmts, &self.sql.common.fingerprint_list).await {
            Ok(st) => st,
            // Installed by an earlier version: no table, nothing recorded.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(err(e)),
        };
        let mut out = Vec::new();
        for r in client.query(&st, &[]).await.map_err(err)? {
            let text: String = col(&r, 2, "fingerprint", what)?;
            out.push(Recorded {
                entity: col(&r, 0, "entity", what)?,
                table: col(&r, 1, "table_name", what)?,
                fingerprint: Fingerprint::from_json(&text),
            });
        }
        Ok(out)
    }

    async fn record_fingerprint(
        &self,
        entity: &str,
        table: &str,
        fingerprint: &str,
    ) -> Result<(), EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("record table fingerprints", e);
        let st = prepared(&*client, stmts, &self.sql.common.fingerprint_save)
            .await
            .map_err(err)?;
        client
            .execute(&st, &[&entity, &table, &fingerprint])
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn uninstall(&self) -> Result<(), EndpointError> {
        let script = sql::uninstall_script(&self.config, self.side)?;
        self.run_script(&script, "uninstall").await
    }

    async fn ping(&self) -> Result<(), EndpointError> {
        let conn = self.pool.get().await?;
        conn.client
            .simple_query("SELECT 1")
            .await
            .map(|_| ())
            .map_err(|e| self.pool.error("ping", e))
    }

    async fn check(&self) -> Result<Vec<SchemaProblem>, EndpointError> {
        schema::check(self).await
    }

    async fn describe(
        &self,
        entity: &str,
    ) -> Result<Option<crate::endpoint::desc::TableDesc>, EndpointError> {
        match self.config.entity(entity) {
            Some(e) => schema::describe(self, &sql::table(&e.side(self.side).table)).await,
            None => Ok(None),
        }
    }

    async fn catalog(&self) -> Result<crate::endpoint::catalog::Catalog, EndpointError> {
        catalog::read(self).await
    }

    async fn install_state(&self) -> Result<InstallState, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("read install state", e);
        let st = prepared(&*client, stmts, &self.sql.common.install_state)
            .await
            .map_err(err)?;
        let row = client.query_one(&st, &[]).await.map_err(err)?;
        let present: Option<bool> = col(&row, 0, "present", "read install state")?;
        let triggers: i64 = col(&row, 1, "triggers", "read install state")?;
        let comment: Option<String> = col(&row, 2, "format", "read install state")?;
        let format = comment
            .as_deref()
            .and_then(|c| c.strip_prefix("tandem objects, format "))
            .and_then(|f| f.trim().parse().ok());
        // One capture trigger per table, however many entities read it.
        let expected = self.config.captured_tables(self.side).len();
        Ok(if present == Some(true) {
            InstallState::Installed {
                triggers: triggers as usize,
                expected,
                format,
            }
        } else {
            InstallState::Missing
        })
    }

    fn pool_state(&self) -> crate::endpoint::PoolState {
        self.pool.state()
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn crate::endpoint::Lease>>, EndpointError> {
        lease::try_lead(self).await
    }

    async fn suspended(
        &self,
        seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuspendedChange>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("read suspended changes", e);
        let st = prepared(&*client, stmts, &self.sql.common.suspended_list)
            .await
            .map_err(err)?;
        let rows = client.query(&st, &[&seq, &limit]).await.map_err(err)?;
        let what = "suspended changes";
        rows.iter()
            .map(|r| {
                Ok(SuspendedChange {
                    side: self.side,
                    seq: col(r, 0, "seq", what)?,
                    entity: col(r, 1, "entity", what)?,
                    op: col(r, 2, "op", what)?,
                    key: col::<Option<String>>(r, 3, "key", what)?
                        .and_then(|k| Key::parse(&k).ok())
                        .map(|k| k.to_string())
                        .unwrap_or_default(),
                    attempts: col(r, 4, "attempts", what)?,
                    captured_at: col(r, 5, "captured_at", what)?,
                    first_failed_at: col(r, 6, "first_failed_at", what)?,
                    last_failed_at: col(r, 7, "last_failed_at", what)?,
                    last_error: col(r, 8, "last_error", what)?,
                    image: col(r, 9, "image", what)?,
                })
            })
            .collect()
    }

    async fn resubmit(&self, seq: Option<i64>) -> Result<u64, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("resubmit", e);
        let st = prepared(&*client, stmts, &self.sql.common.resubmit)
            .await
            .map_err(err)?;
        client.execute(&st, &[&seq]).await.map_err(err)
    }

    async fn discard(&self, seq: i64) -> Result<Option<SuspendedChange>, EndpointError> {
        let Some(found) = self.suspended(Some(seq), 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("discard", e);
        let st = prepared(&*client, stmts, &self.sql.common.discard)
            .await
            .map_err(err)?;
        let n = client.execute(&st, &[&seq]).await.map_err(err)?;
        Ok((n > 0).then_some(found))
    }

    async fn status(&self) -> Result<Vec<EntityStatus>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("read status", e);
        let mut by: HashMap<String, EntityStatus> = self
            .config
            .entities
            .iter()
            .map(|e| {
                (
                    e.name.clone(),
                    EntityStatus {
                        entity: e.name.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let st = prepared(&*client, stmts, &self.sql.common.status_outbox)
            .await
            .map_err(err)?;
        let what = "status";
        for r in client.query(&st, &[]).await.map_err(err)? {
            let name: String = col(&r, 0, "entity", what)?;
            let s = by.entry(name.clone()).or_insert_with(|| EntityStatus {
                entity: name,
                ..Default::default()
            });
            s.pending = col(&r, 1, "pending", what)?;
            s.suspended = col(&r, 2, "suspended", what)?;
            s.oldest_pending = col(&r, 3, "oldest_pending", what)?;
        }
        let st = prepared(&*client, stmts, &self.sql.common.status_links)
            .await
            .map_err(err)?;
        for r in client.query(&st, &[]).await.map_err(err)? {
            let name: String = col(&r, 0, "entity", what)?;
            if let Some(s) = by.get_mut(&name) {
                s.linked = col(&r, 1, "linked", what)?;
            }
        }
        let st = prepared(&*client, stmts, &self.sql.common.status_conflicts)
            .await
            .map_err(err)?;
        for r in client.query(&st, &[]).await.map_err(err)? {
            let name: String = col(&r, 0, "entity", what)?;
            if let Some(s) = by.get_mut(&name) {
                s.conflicts = col(&r, 1, "conflicts", what)?;
            }
        }
        let mut out: Vec<EntityStatus> = by.into_values().collect();
        out.sort_by(|a, b| a.entity.cmp(&b.entity));
        Ok(out)
    }
}

#[async_trait]
impl Bulk for PgEndpoint {
    async fn row_count(&self, entity: &str) -> Result<i64, EndpointError> {
        bulk::row_count(self, entity).await
    }

    async fn backfill_progress(&self, entity: &str) -> Result<BackfillProgress, EndpointError> {
        bulk::progress(self, entity).await
    }

    async fn backfill_reset(&self, entity: &str) -> Result<(), EndpointError> {
        bulk::reset(self, entity).await
    }

    async fn backfill_chunk(
        &self,
        entity: &str,
        chunk: usize,
    ) -> Result<BackfillChunk, EndpointError> {
        bulk::chunk(self, entity, chunk).await
    }

    async fn pending_between(
        &self,
        min: i64,
        max: i64,
    ) -> Result<crate::endpoint::Queued, EndpointError> {
        bulk::pending_between(self, min, max).await
    }

    async fn verify_buckets(
        &self,
        entity: &str,
        buckets: i32,
    ) -> Result<Vec<BucketHash>, EndpointError> {
        bulk::buckets(self, entity, buckets).await
    }

    async fn verify_records(
        &self,
        entity: &str,
        buckets: i32,
        which: &[i32],
    ) -> Result<Vec<RecordHash>, EndpointError> {
        bulk::records(self, entity, buckets, which).await
    }

    async fn verify_in_flight(
        &self,
        entity: &str,
        join_keys: &[String],
    ) -> Result<HashSet<String>, EndpointError> {
        bulk::in_flight(self, entity, join_keys).await
    }

    async fn fetch_image(&self, entity: &str, key: &Key) -> Result<Option<Image>, EndpointError> {
        bulk::fetch_image(self, entity, key).await
    }

    async fn fetch_images(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<HashMap<Key, Image>, EndpointError> {
        bulk::fetch_images(self, entity, keys).await
    }

    async fn requeue(&self, entity: &str, key: &Key, op: Op) -> Result<u64, EndpointError> {
        bulk::requeue(self, entity, key, op).await
    }

    async fn delete_records(&self, entity: &str, keys: &[Key]) -> Result<u64, EndpointError> {
        bulk::delete_records(self, entity, keys).await
    }
}

#[async_trait]
impl crate::endpoint::Reference for PgEndpoint {
    async fn look_up(
        &self,
        table: &crate::config::TableName,
        by: &str,
        out: &str,
        values: &[String],
    ) -> Result<Vec<(String, serde_json::Value)>, EndpointError> {
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let sql = sql::look_up(table, by, out)?;
        let conn = self.pool.get().await?;
        let rows = conn
            .client
            .query(sql.as_str(), &[&values])
            .await
            .map_err(|e| {
                self.pool.error(
                    &format!("look up {by} → {out} in reference table {table}"),
                    e,
                )
            })?;
        let what = "reference look-up";
        let mut found = Vec::with_capacity(rows.len());
        for r in &rows {
            let asked: String = col(r, 0, "asked", what)?;
            let value: Option<String> = col(r, 1, "found", what)?;
            if let Some(v) = value.and_then(|t| serde_json::from_str(&t).ok()) {
                found.push((asked, v));
            }
        }
        Ok(found.into_iter().collect())
    }
}

impl Endpoint for PgEndpoint {
    fn bulk(&self) -> Option<&dyn Bulk> {
        Some(self)
    }

    fn reference(&self) -> Option<&dyn crate::endpoint::Reference> {
        Some(self)
    }
}

/// The lead among `tandem run` instances: a session advisory lock on a dedicated connection
/// (SQL in `sql/postgres/lease.sql`). Part of `try_lead` above.
mod lease {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio_postgres::{Client, Statement};

    use super::PgEndpoint;
    use crate::endpoint::{EndpointError, Lease};

    const LEASE_SQL: &str = include_str!("../../../sql/postgres/lease.sql");
    /// A check slower than this means the session is in doubt: give the lead up.
    const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

    /// The `-- name: X` section of lease.sql.
    fn section(name: &str) -> &'static str {
        let marker = format!("-- name: {name}\n");
        LEASE_SQL
            .split_once(marker.as_str())
            .map(|(_, rest)| rest.split("-- name: ").next().unwrap_or(rest).trim())
            .unwrap_or("")
    }

    /// The lock key: FNV-1a (64 bit) of "tandem lease " and the schema name, kept positive
    /// so that pg_locks shows it plainly. Stable across versions and hosts.
    pub fn lock_key(schema: &str) -> i64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in "tandem lease ".bytes().chain(schema.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h & 0x7fff_ffff_ffff_ffff) as i64
    }

    /// The session holding the lock; dropping it closes the connection, which releases it.
    struct PgLease {
        client: Client,
        held: Statement,
        key: i64,
    }

    #[async_trait]
    impl Lease for PgLease {
        async fn still_held(&mut self) -> bool {
            if self.client.is_closed() {
                return false;
            }
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&self.key];
            let check = self.client.query_one(&self.held, &params);
            match tokio::time::timeout(CHECK_TIMEOUT, check).await {
                Ok(Ok(row)) => row.try_get::<_, bool>(0).unwrap_or(false),
                _ => false,
            }
        }
    }

    pub async fn try_lead(ep: &PgEndpoint) -> Result<Option<Box<dyn Lease>>, EndpointError> {
        let side = ep.side;
        let (connector, _) = super::connect::Connector::new(ep.config.side(side), side)?;
        let client = connector
            .connect(|config| {
                // Its own name, so a DBA can tell the lock's session from the pool's.
                let name = match config.get_application_name() {
                    Some(n) => format!("{n} lease"),
                    None => "tandem lease".to_string(),
                };
                config.application_name(&name);
                if config.get_connect_timeout().is_none() {
                    config.connect_timeout(Duration::from_secs(5));
                }
            })
            .await
            .map_err(|e| EndpointError::Unreachable {
                side,
                target: ep.pool.target().to_string(),
                message: super::pool::describe_connect(&e),
            })?;
        let err = |e| ep.pool.error("take the lead", e);
        client
            .batch_execute(section("session"))
            .await
            .map_err(err)?;
        let key = lock_key(&ep.config.side(side).schema);
        let row = client
            .query_one(section("try_lock"), &[&key])
            .await
            .map_err(err)?;
        if !row.try_get::<_, bool>(0).map_err(err)? {
            return Ok(None);
        }
        let held = client.prepare(section("held")).await.map_err(err)?;
        Ok(Some(Box::new(PgLease { client, held, key })))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn key_is_stable_positive_and_per_schema() {
            assert_eq!(lock_key("tandem"), lock_key("tandem"));
            assert_ne!(lock_key("tandem"), lock_key("tandem2"));
            assert!(lock_key("tandem") > 0 && lock_key("") > 0);
            for n in ["session", "try_lock", "held"] {
                assert!(!section(n).is_empty(), "{n}");
                assert!(!section(n).contains("-- name:"), "{n}");
            }
        }
    }
}
