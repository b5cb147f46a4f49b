//! The PostgreSQL endpoint: tokio-postgres over a bb8 pool, SQL from `sql/postgres/`.

mod apply;
mod pool;
mod schema;
pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::config::{Config, Side};
use crate::endpoint::{
    Endpoint, EndpointError, EntityStatus, InstallState, Link, Outcome, SchemaProblem, WriteBack,
};
use crate::model::{Key, OutboxRow, TargetChange};

use pool::{prepared, PgConn, PgPool};
use sql::Sql;

/// One PostgreSQL database as side A or B.
pub struct PgEndpoint {
    config: Arc<Config>,
    side: Side,
    pool: PgPool,
    sql: Sql,
}

impl PgEndpoint {
    /// Builds the endpoint and its statements; connects on first use.
    pub fn new(config: Arc<Config>, side: Side) -> Result<PgEndpoint, EndpointError> {
        let sc = config.side(side);
        let pool = PgPool::new(sc.url.expose(), sc.pool_size, side)?;
        let sql = Sql::build(&config, side)?;
        Ok(PgEndpoint {
            config,
            side,
            pool,
            sql,
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
impl Endpoint for PgEndpoint {
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
        self.run_script(&script, "install").await
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

    async fn install_state(&self) -> Result<InstallState, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("read install state", e);
        let st = prepared(&*client, stmts, &self.sql.common.install_state)
            .await
            .map_err(err)?;
        let row = client.query_one(&st, &[]).await.map_err(err)?;
        let present: Option<bool> = row.get(0);
        let triggers: i64 = row.get(1);
        let expected = self
            .config
            .entities
            .iter()
            .filter(|e| e.direction.flows(self.side))
            .count();
        Ok(if present == Some(true) {
            InstallState::Installed {
                triggers: triggers as usize,
                expected,
            }
        } else {
            InstallState::Missing
        })
    }

    async fn claim(&self, limit: usize) -> Result<Vec<OutboxRow>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let PgConn { client, stmts } = &mut *conn;
        let err = |e| self.pool.error("claim pending changes", e);
        let st = prepared(&*client, stmts, &self.sql.common.claim)
            .await
            .map_err(err)?;
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = client.query(&st, &[&limit]).await.map_err(err)?;
        Ok(rows
            .iter()
            .map(|r| OutboxRow {
                seq: r.get(0),
                entity: r.get(1),
                op: r.get(2),
                image: r.get(3),
                captured_at: r.get::<_, DateTime<Utc>>(4),
                attempts: r.get(5),
            })
            .collect())
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
        for r in client.query(&st, &[&entity, &texts]).await.map_err(err)? {
            let own: Option<String> = r.get(0);
            let peer: Option<String> = r.get(1);
            let (Some(own), deleted) = (own.and_then(|s| Key::parse(&s).ok()), r.get(2)) else {
                continue;
            };
            out.insert(
                own,
                Link {
                    peer_key: peer.and_then(|s| Key::parse(&s).ok()),
                    deleted,
                },
            );
        }
        Ok(out)
    }

    fn pool_state(&self) -> crate::endpoint::PoolState {
        self.pool.state()
    }

    async fn apply(&self, batch: &[TargetChange]) -> Result<Vec<Outcome>, EndpointError> {
        apply::apply_batch(self, batch).await
    }

    async fn write_back(&self, wb: &WriteBack) -> Result<(), EndpointError> {
        apply::write_back(self, wb).await
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
        for r in client.query(&st, &[]).await.map_err(err)? {
            let name: String = r.get(0);
            let s = by.entry(name.clone()).or_insert_with(|| EntityStatus {
                entity: name,
                ..Default::default()
            });
            s.pending = r.get(1);
            s.suspended = r.get(2);
            s.oldest_pending = r.get(3);
        }
        let st = prepared(&*client, stmts, &self.sql.common.status_links)
            .await
            .map_err(err)?;
        for r in client.query(&st, &[]).await.map_err(err)? {
            let name: String = r.get(0);
            if let Some(s) = by.get_mut(&name) {
                s.linked = r.get(1);
            }
        }
        let mut out: Vec<EntityStatus> = by.into_values().collect();
        out.sort_by(|a, b| a.entity.cmp(&b.entity));
        Ok(out)
    }
}
