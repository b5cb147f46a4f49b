//! The SQL Server endpoint: tiberius over a bb8 pool of its own ([`pool`]), T-SQL from
//! `sql/mssql/`. Semantics are the PostgreSQL endpoint's; the differences are in how:
//! set-based capture triggers with `FOR JSON` images, one round trip per apply batch (a T-SQL
//! batch that loops over the changes with savepoints), and row images converted between
//! `FOR JSON` and the canonical form by column type ([`types`]).

pub mod ado;
mod apply;
mod bulk;
mod catalog;
pub mod error;
mod pool;
mod row;
mod schema;
pub mod sql;
pub mod types;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::{Config, Side};
use crate::endpoint::fingerprint::{Fingerprint, Recorded};
use crate::endpoint::{Admin, Bulk, Source, Target};
use crate::endpoint::{
    BackfillChunk, BackfillProgress, BucketHash, Endpoint, EndpointError, EntityStatus,
    InstallState, Lease, Link, Outcome, PoolState, Queued, RecordHash, SchemaProblem,
    SuspendedChange, WriteBack,
};
use crate::model::{Image, Key, Op, OutboxRow, TargetChange};

use pool::{run, MsPool};
use row::get;
use sql::{Common, EntityPlan, Plan};

/// One SQL Server database as side A or B.
pub struct MsEndpoint {
    config: Arc<Config>,
    side: Side,
    pool: MsPool,
    common: Common,
    /// The batches typed from the catalog, built on first use and again after an error that
    /// may mean the schema changed.
    plan: Mutex<Option<Arc<Plan>>>,
}

/// Microseconds since 1970 as an instant.
fn instant(us: Option<i64>) -> Option<DateTime<Utc>> {
    us.and_then(DateTime::from_timestamp_micros)
}

/// Converts a `FOR JSON` image of `entity` to the canonical form, column by column. A value
/// that does not convert is kept as it is (and logged): the other side then reports it.
pub fn canonical_image(plan: &EntityPlan, native: &str) -> String {
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(native) else {
        return native.to_string();
    };
    let mut out = Image::new();
    for (name, v) in map {
        let converted = match plan.by_name.get(&name) {
            Some(col) => match col.ty.decode(&v) {
                Ok(c) => c,
                Err(m) => {
                    tracing::warn!(entity = %plan.name, table = %plan.table, column = %name,
                        "cannot convert the captured value to the canonical form: {m}");
                    v
                }
            },
            None => v,
        };
        out.insert(name, converted);
    }
    serde_json::to_string(&out).unwrap_or_else(|_| native.to_string())
}

impl MsEndpoint {
    /// Builds the endpoint; connects on first use.
    pub fn new(config: Arc<Config>, side: Side) -> Result<MsEndpoint, EndpointError> {
        let sc = config.side(side);
        let ado = ado::for_side(sc, side)?;
        let common = Common::build(&config, side)?;
        // Validates every template now, so the scripts below cannot fail later.
        sql::install_script(&config, side)?;
        sql::uninstall_script(&config, side)?;
        let pool = MsPool::new(ado, sc, side, &common);
        Ok(MsEndpoint {
            config,
            side,
            pool,
            common,
            plan: Mutex::new(None),
        })
    }

    /// The plan, reading the catalog when there is none yet.
    async fn plan(&self) -> Result<Arc<Plan>, EndpointError> {
        let mut slot = self.plan.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let mut tables = HashMap::new();
        for e in &self.config.entities {
            let ts = e.side(self.side);
            let wanted = schema::configured_names(e, self.side);
            let Some((cols, _)) = schema::columns(self, &sql::table(&ts.table), &wanted).await?
            else {
                return Err(EndpointError::Config(format!(
                    "entity {}, side {}: table {} does not exist in {} (run `tandem check`)",
                    e.name,
                    self.side,
                    ts.table,
                    self.pool.target()
                )));
            };
            tables.insert(e.name.clone(), cols);
        }
        let plan = Arc::new(Plan::build(&self.config, self.side, &tables)?);
        *slot = Some(plan.clone());
        Ok(plan)
    }

    /// Forgets the plan after an error that a changed schema may explain.
    async fn forget_plan(&self, e: &EndpointError) {
        if !e.is_transient() {
            *self.plan.lock().await = None;
        }
    }

    async fn run_script(&self, script: &str, what: &str) -> Result<(), EndpointError> {
        let mut conn = self.pool.get().await?;
        for batch in sql::batches(script) {
            run(&mut conn, self.pool.rollback_sql(), true, &batch, &[])
                .await
                .map_err(|e| self.pool.error(what, e))?;
        }
        *self.plan.lock().await = None;
        Ok(())
    }

    /// Runs a statement outside any transaction and returns its rows.
    /// Runs a claim statement (columns: seq, entity, op, image, captured_us, attempts, and
    /// optionally pulled and the record's outbox key) and converts the images to the
    /// canonical form.
    async fn claimed(
        &self,
        what: &str,
        sql: &str,
        params: &[&dyn tiberius::ToSql],
    ) -> Result<Vec<OutboxRow>, EndpointError> {
        let plan = self.plan().await?;
        let rows = match self.rows(what, sql, params).await {
            Ok(r) => r,
            Err(e) => {
                self.forget_plan(&e).await;
                return Err(e);
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let cell = |n: &str| {
                EndpointError::Config(format!(
                    "internal: {what}: column {n} is missing or of another type"
                ))
            };
            let seq = r
                .try_get::<i64, _>(0)
                .map_err(|_| cell("seq"))?
                .ok_or_else(|| cell("seq"))?;
            let entity = r
                .try_get::<&str, _>(1)
                .map_err(|_| cell("entity"))?
                .ok_or_else(|| cell("entity"))?;
            let op = r
                .try_get::<&str, _>(2)
                .map_err(|_| cell("op"))?
                .ok_or_else(|| cell("op"))?;
            let image = r
                .try_get::<&str, _>(3)
                .map_err(|_| cell("image"))?
                .ok_or_else(|| cell("image"))?;
            let image = match plan.entities.get(entity) {
                Some(p) => canonical_image(p, image),
                None => image.to_string(),
            };
            // claim: 7 columns; claim_batch: 9 (pulled and key before derived).
            let extra = r.len() > 7;
            out.push(OutboxRow {
                seq,
                entity: entity.to_string(),
                op: op.to_string(),
                image: Some(image),
                captured_at: instant(r.try_get::<i64, _>(4).ok().flatten())
                    .unwrap_or_else(Utc::now),
                attempts: r.try_get::<i32, _>(5).ok().flatten().unwrap_or(0),
                pulled: extra && r.try_get::<bool, _>(6).ok().flatten().unwrap_or(false),
                derived: r
                    .try_get::<bool, _>(r.len() - 1)
                    .ok()
                    .flatten()
                    .unwrap_or(false),
                key: if extra {
                    r.try_get::<&str, _>(7).ok().flatten().map(str::to_string)
                } else {
                    None
                },
            });
        }
        Ok(out)
    }

    async fn rows(
        &self,
        what: &str,
        sql: &str,
        params: &[&dyn tiberius::ToSql],
    ) -> Result<Vec<tiberius::Row>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let sets = run(&mut conn, self.pool.rollback_sql(), false, sql, params)
            .await
            .map_err(|e| self.pool.error(what, e))?;
        Ok(sets.into_iter().flatten().collect())
    }
}

#[async_trait]
impl Source for MsEndpoint {
    async fn claim(&self, limit: usize, skip: &[String]) -> Result<Vec<OutboxRow>, EndpointError> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
        self.claimed(
            "claim pending changes",
            &self.common.claim,
            &[&limit, &skip.as_str()],
        )
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
        let fold = serde_json::to_string(fold).unwrap_or_else(|_| "[]".into());
        let skip = serde_json::to_string(skip).unwrap_or_else(|_| "[]".into());
        self.claimed(
            "claim pending changes",
            &self.common.claim_batch,
            &[&limit, &after, &fold.as_str(), &skip.as_str()],
        )
        .await
        .map(Some)
    }

    async fn links(&self, entity: &str, keys: &[Key]) -> Result<HashMap<Key, Link>, EndpointError> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let json = serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into());
        let what = "read id links";
        let rows = self
            .rows(what, &self.common.links_by_own, &[&entity, &json.as_str()])
            .await?;
        for r in &rows {
            let Some(own) = get::<&str>(r, "own_key", what)?.and_then(|s| Key::parse(s).ok())
            else {
                continue;
            };
            out.insert(
                own,
                Link {
                    peer_key: get::<&str>(r, "peer_key", what)?.and_then(|s| Key::parse(s).ok()),
                    deleted: get::<bool>(r, "deleted", what)?.unwrap_or(false),
                    applied_seq: get::<i64>(r, "applied_seq", what)?.unwrap_or(0),
                    // Unknown counts as written last: the hint is then not trusted.
                    updated_at: instant(get::<i64>(r, "updated_us", what)?)
                        .unwrap_or(DateTime::<Utc>::MAX_UTC),
                },
            );
        }
        Ok(out)
    }

    async fn mark_sent(&self, seq: i64, resent: &[i64]) -> Result<(), EndpointError> {
        let resent = serde_json::to_string(resent).unwrap_or_else(|_| "[]".into());
        self.rows(
            "raise the sent mark",
            &self.common.mark_sent,
            &[&seq, &resent],
        )
        .await
        .map(|_| ())
    }

    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError> {
        let plan = self.plan().await?;
        let result = apply::write_back(self, &plan, wb).await;
        if let Err(e) = &result {
            self.forget_plan(e).await;
        }
        result
    }

    async fn rows_present(
        &self,
        entity: &str,
        keys: &[Key],
    ) -> Result<HashSet<Key>, EndpointError> {
        crate::endpoint::rows_present_by_fetch(self, entity, keys).await
    }

    async fn in_flight(&self, entity: &str, keys: &[Key]) -> Result<HashSet<Key>, EndpointError> {
        let mut out = HashSet::new();
        if keys.is_empty() {
            return Ok(out);
        }
        let plan = self.plan().await?;
        let Some(sql) = plan.in_flight.get(entity) else {
            return Ok(out);
        };
        let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
        let json = serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into());
        let what = "look for changes in flight";
        for r in self.rows(what, sql, &[&json.as_str()]).await? {
            if let Some(k) = get::<&str>(&r, "k", what)?.and_then(|t| Key::parse(t).ok()) {
                out.insert(k);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Target for MsEndpoint {
    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError> {
        let plan = self.plan().await?;
        let result = apply::apply_batch(self, &plan, batch).await;
        if let Err(e) = &result {
            self.forget_plan(e).await;
        }
        result
    }
}

#[async_trait]
impl Admin for MsEndpoint {
    fn side(&self) -> Side {
        self.side
    }

    fn install_script(&self) -> String {
        // `new` validated every template, so this cannot fail here.
        let mut s = sql::install_script(&self.config, self.side).unwrap_or_default();
        s.push_str(&sql::runtime_listing(&self.common));
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
        let rows = self
            .rows(
                "read table fingerprints",
                &self.common.fingerprint_list,
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let entity = r.try_get::<&str, _>(0).ok().flatten()?;
                let table = r.try_get::<&str, _>(1).ok().flatten()?;
                let text = r.try_get::<&str, _>(2).ok().flatten()?;
                Some(Recorded {
                    entity: entity.to_string(),
                    table: table.to_string(),
                    fingerprint: Fingerprint::from_json(text),
                })
            })
            .collect())
    }

    async fn record_fingerprint(
        &self,
        entity: &str,
        table: &str,
        fingerprint: &str,
    ) -> Result<(), EndpointError> {
        self.rows(
            "record table fingerprints",
            &self.common.fingerprint_save,
            &[&entity, &table, &fingerprint],
        )
        .await
        .map(|_| ())
    }

    async fn uninstall(&self) -> Result<(), EndpointError> {
        let script = sql::uninstall_script(&self.config, self.side)?;
        self.run_script(&script, "uninstall").await
    }

    async fn ping(&self) -> Result<(), EndpointError> {
        self.rows("ping", "SELECT 1", &[]).await.map(|_| ())
    }

    async fn check(&self) -> Result<Vec<SchemaProblem>, EndpointError> {
        schema::check(self).await
    }

    async fn describe(
        &self,
        entity: &str,
    ) -> Result<Option<crate::endpoint::desc::TableDesc>, EndpointError> {
        match self.config.entity(entity) {
            Some(e) => schema::describe(self, e, &sql::table(&e.side(self.side).table)).await,
            None => Ok(None),
        }
    }

    async fn catalog(&self) -> Result<crate::endpoint::catalog::Catalog, EndpointError> {
        catalog::read(self).await
    }

    async fn install_state(&self) -> Result<InstallState, EndpointError> {
        let what = "read install state";
        let rows = self.rows(what, &self.common.install_state, &[]).await?;
        let (present, triggers, format) = match rows.first() {
            Some(r) => (
                get::<bool>(r, "installed", what)?.unwrap_or(false),
                get::<i64>(r, "trigger_count", what)?.unwrap_or(0),
                get::<&str>(r, "install_format", what)?.and_then(|f| f.trim().parse().ok()),
            ),
            None => (false, 0, None),
        };
        // One capture trigger per table, however many entities read it.
        let expected = self.config.captured_tables(self.side).len();
        Ok(if present {
            InstallState::Installed {
                triggers: usize::try_from(triggers).unwrap_or(0),
                expected,
                format,
            }
        } else {
            InstallState::Missing
        })
    }

    async fn status(&self) -> Result<Vec<EntityStatus>, EndpointError> {
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
        let what = "read status";
        for r in self.rows(what, &self.common.status_outbox, &[]).await? {
            let Some(name) = get::<&str>(&r, "entity", what)? else {
                continue;
            };
            let s = by.entry(name.to_string()).or_insert_with(|| EntityStatus {
                entity: name.to_string(),
                ..Default::default()
            });
            s.pending = get::<i64>(&r, "pending_count", what)?.unwrap_or(0);
            s.suspended = get::<i64>(&r, "suspended_count", what)?.unwrap_or(0);
            s.oldest_pending = instant(get::<i64>(&r, "oldest_pending_us", what)?);
        }
        for r in self.rows(what, &self.common.status_links, &[]).await? {
            if let Some(s) = get::<&str>(&r, "entity", what)?.and_then(|n| by.get_mut(n)) {
                s.linked = get::<i64>(&r, "linked_count", what)?.unwrap_or(0);
            }
        }
        for r in self.rows(what, &self.common.status_conflicts, &[]).await? {
            if let Some(s) = get::<&str>(&r, "entity", what)?.and_then(|n| by.get_mut(n)) {
                s.conflicts = get::<i64>(&r, "conflict_count", what)?.unwrap_or(0);
            }
        }
        let mut out: Vec<EntityStatus> = by.into_values().collect();
        out.sort_by(|a, b| a.entity.cmp(&b.entity));
        Ok(out)
    }

    async fn suspended(
        &self,
        seq: Option<i64>,
        limit: i64,
    ) -> Result<Vec<SuspendedChange>, EndpointError> {
        let plan = self.plan().await?;
        let what = "read suspended changes";
        let rows = self
            .rows(what, &self.common.suspended_list, &[&seq, &limit])
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let (Some(seq), Some(entity), Some(op), Some(native)) = (
                get::<i64>(r, "seq", what)?,
                get::<&str>(r, "entity", what)?,
                get::<&str>(r, "op", what)?,
                get::<&str>(r, "image", what)?,
            ) else {
                continue;
            };
            let ep = plan.entities.get(entity);
            let image = match ep {
                Some(p) => canonical_image(p, native),
                None => native.to_string(),
            };
            // The key as every other part of tandem writes it: from the canonical image.
            let key = ep
                .and_then(|p| {
                    let img: Image = serde_json::from_str(&image).ok()?;
                    Key::from_image(&img, &p.key).ok()
                })
                .map(|k| k.to_string())
                .unwrap_or_default();
            out.push(SuspendedChange {
                side: self.side,
                seq,
                entity: entity.to_string(),
                op: op.to_string(),
                key,
                attempts: get::<i32>(r, "attempts", what)?.unwrap_or(0),
                captured_at: instant(get::<i64>(r, "captured_us", what)?).unwrap_or_else(Utc::now),
                first_failed_at: instant(get::<i64>(r, "first_failed_us", what)?),
                last_failed_at: instant(get::<i64>(r, "last_failed_us", what)?),
                last_error: get::<&str>(r, "last_error", what)?.map(str::to_string),
                image,
            });
        }
        Ok(out)
    }

    async fn resubmit(&self, seq: Option<i64>) -> Result<u64, EndpointError> {
        let what = "resubmit";
        let rows = self.rows(what, &self.common.resubmit, &[&seq]).await?;
        let n = match rows.first() {
            Some(r) => get::<i64>(r, "affected", what)?,
            None => None,
        };
        Ok(n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }

    async fn discard(&self, seq: i64) -> Result<Option<SuspendedChange>, EndpointError> {
        let Some(found) = self.suspended(Some(seq), 1).await?.into_iter().next() else {
            return Ok(None);
        };
        let what = "discard";
        let rows = self.rows(what, &self.common.discard, &[&seq]).await?;
        let n = match rows.first() {
            Some(r) => get::<i64>(r, "affected", what)?.unwrap_or(0),
            None => 0,
        };
        Ok((n > 0).then_some(found))
    }

    async fn try_lead(&self) -> Result<Option<Box<dyn Lease>>, EndpointError> {
        lease::try_lead(self).await
    }

    fn pool_state(&self) -> PoolState {
        self.pool.state()
    }
}

#[async_trait]
impl Bulk for MsEndpoint {
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
        let result = bulk::chunk(self, entity, chunk).await;
        if let Err(e) = &result {
            self.forget_plan(e).await;
        }
        result
    }

    async fn pending_between(&self, min: i64, max: i64) -> Result<Queued, EndpointError> {
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
impl crate::endpoint::Reference for MsEndpoint {
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
        let json = serde_json::to_string(values).unwrap_or_else(|_| "[]".into());
        let what = format!("look up {by} → {out} in reference table {table}");
        let rows = self.rows(&what, &sql, &[&json.as_str()]).await?;
        let mut found = Vec::new();
        for r in &rows {
            let (Some(asked), Some(v)) = (
                get::<&str>(r, "asked", &what)?,
                get::<&str>(r, "found", &what)?,
            ) else {
                continue;
            };
            if let Ok(serde_json::Value::Object(mut o)) = serde_json::from_str(v) {
                found.push((asked.to_string(), o.remove("v").unwrap_or_default()));
            }
        }
        Ok(found)
    }
}

impl Endpoint for MsEndpoint {
    fn bulk(&self) -> Option<&dyn Bulk> {
        Some(self)
    }

    fn reference(&self) -> Option<&dyn crate::endpoint::Reference> {
        Some(self)
    }
}

/// The lead among `tandem run` instances: an exclusive session-owned application lock
/// (`sp_getapplock`) on a connection of its own; it goes with the session.
mod lease {
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::net::TcpStream;
    use tokio_util::compat::TokioAsyncWriteCompatExt;

    use super::pool::{describe, Client};
    use super::MsEndpoint;
    use crate::endpoint::{EndpointError, Lease};

    // The resource names the database too: application locks are per database on SQL Server,
    // but Babelfish keeps them for the whole server, where two installations in two databases
    // would otherwise take each other's lead.
    const TRY_LOCK: &str =
        "DECLARE @r int, @res nvarchar(255) = LEFT(@P1 + N' ' + DB_NAME(), 255); \
        EXEC @r = sys.sp_getapplock @Resource = @res, @LockMode = 'Exclusive', \
             @LockOwner = 'Session', @LockTimeout = 0; \
        SELECT @r AS lock_result;";
    const HELD: &str = "SELECT APPLOCK_MODE('public', LEFT(@P1 + N' ' + DB_NAME(), 255), \
        'Session') AS lock_mode;";
    /// A check slower than this means the session is in doubt: give the lead up.
    const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

    struct MsLease {
        client: Client,
        resource: String,
    }

    #[async_trait]
    impl Lease for MsLease {
        async fn still_held(&mut self) -> bool {
            let resource = self.resource.clone();
            let check = async {
                let row = self
                    .client
                    .query(HELD, &[&resource.as_str()])
                    .await?
                    .into_row()
                    .await?;
                // A mode that cannot be read fails the check: the lead is given up.
                let mode = row.as_ref().map(|r| r.try_get::<&str, _>("lock_mode"));
                let mode = mode.transpose()?;
                Ok::<_, tiberius::error::Error>(mode.flatten().map(|m| m == "Exclusive"))
            };
            matches!(
                tokio::time::timeout(CHECK_TIMEOUT, check).await,
                Ok(Ok(Some(true)))
            )
        }
    }

    pub async fn try_lead(ep: &MsEndpoint) -> Result<Option<Box<dyn Lease>>, EndpointError> {
        let side = ep.side;
        let ado = super::ado::for_side(ep.config.side(side), side)?;
        let unreachable = |message: String| EndpointError::Unreachable {
            side,
            target: ado.target.clone(),
            message,
        };
        let mut config = ado.config.clone();
        config.application_name("tandem lease");
        let tcp = tokio::time::timeout(ado.connect_timeout, TcpStream::connect(config.get_addr()))
            .await
            .map_err(|_| unreachable("connecting timed out".into()))?
            .map_err(|e| unreachable(crate::config::redact(&e.to_string())))?;
        let _ = tcp.set_nodelay(true);
        let mut client = Client::connect(config, tcp.compat_write())
            .await
            .map_err(|e| unreachable(describe(&e)))?;
        let resource = format!("tandem lease {}", ep.config.side(side).schema);
        let err = |e| ep.pool.error("take the lead", e);
        let row = client
            .query(TRY_LOCK, &[&resource.as_str()])
            .await
            .map_err(err)?
            .into_row()
            .await
            .map_err(err)?;
        let result = match &row {
            Some(r) => super::get::<i32>(r, "lock_result", "take the lead")?,
            None => None,
        };
        if result.unwrap_or(-1) < 0 {
            return Ok(None);
        }
        Ok(Some(Box::new(MsLease { client, resource })))
    }
}
