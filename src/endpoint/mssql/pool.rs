//! A bb8 pool of tiberius connections that knows when a connection must not be reused.
//!
//! tiberius has no transaction object: tandem's batches issue BEGIN/COMMIT/ROLLBACK in T-SQL
//! themselves. So every connection carries its transaction state, set to [`TxState::Open`]
//! *before* a batch that may open a transaction is sent and back to [`TxState::Idle`] only when
//! its whole result was read. A batch that failed is followed by a rollback; if that fails too,
//! or the future was dropped half-way (a cancelled request leaves the connection mid-message),
//! the state stays non-idle and `has_broken` makes bb8 discard the connection instead of handing
//! it out again. (bb8-tiberius reports no connection as broken, hence this manager.) The pool
//! around it is the shared [`Pool`](crate::endpoint::pool::Pool).

use std::time::Duration;

use tiberius::error::Error as TdsError;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use super::ado::Ado;
use super::error::classify;
use super::sql::Common;
use crate::config::{redact, Side, SideConfig};
use crate::endpoint::pool::{Driver, Pool};
use crate::endpoint::{EndpointError, ErrorKind};

/// A tiberius client over a tokio TCP stream.
pub type Client = tiberius::Client<Compat<TcpStream>>;

/// Where a connection stands with respect to a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxState {
    /// No transaction: the connection can be handed out.
    Idle,
    /// A batch that may open a transaction is under way (or was abandoned).
    Open,
    /// A batch failed and its transaction could not be rolled back.
    Failed,
}

/// One connection and its transaction state.
pub struct MsConn {
    pub client: Client,
    pub tx: TxState,
}

/// Opens connections for bb8.
pub struct Manager {
    config: tiberius::Config,
    connect_timeout: Duration,
    session: String,
    /// With `url_file` or `password_file`, the side's settings: each new connection reads the
    /// files again (a rotated password works without a restart).
    secrets: Option<(SideConfig, Side)>,
}

impl Manager {
    async fn open(&self, config: tiberius::Config) -> Result<Client, TdsError> {
        let addr = config.get_addr();
        let tcp = tokio::time::timeout(self.connect_timeout, TcpStream::connect(&addr))
            .await
            .map_err(|_| TdsError::Io {
                kind: std::io::ErrorKind::TimedOut,
                message: format!("connecting timed out after {:?}", self.connect_timeout),
            })??;
        tcp.set_nodelay(true)?;
        tokio::time::timeout(
            self.connect_timeout * 2,
            Client::connect(config, tcp.compat_write()),
        )
        .await
        .map_err(|_| TdsError::Io {
            kind: std::io::ErrorKind::TimedOut,
            message: "the login timed out".into(),
        })?
    }
}

impl bb8::ManageConnection for Manager {
    type Connection = MsConn;
    type Error = TdsError;

    async fn connect(&self) -> Result<MsConn, TdsError> {
        let config = match &self.secrets {
            Some((sc, side)) => {
                super::ado::for_side(sc, *side)
                    .map_err(|e| TdsError::Io {
                        kind: std::io::ErrorKind::InvalidInput,
                        message: e.to_string(),
                    })?
                    .config
            }
            None => self.config.clone(),
        };
        let client = match self.open(config.clone()).await {
            // Azure SQL and availability groups may redirect the login to another node.
            Err(TdsError::Routing { host, port }) => {
                let mut config = config;
                config.host(&host);
                config.port(port);
                self.open(config).await?
            }
            other => other?,
        };
        let mut conn = MsConn {
            client,
            tx: TxState::Idle,
        };
        conn.client
            .simple_query(self.session.as_str())
            .await?
            .into_results()
            .await?;
        Ok(conn)
    }

    async fn is_valid(&self, conn: &mut MsConn) -> Result<(), TdsError> {
        let row = conn
            .client
            .simple_query("SELECT @@TRANCOUNT AS trancount")
            .await?
            .into_row()
            .await?;
        // A count that cannot be read is an error: bb8 discards the connection.
        let count = row.as_ref().map(|r| r.try_get::<i32, _>("trancount"));
        match count.transpose()?.flatten() {
            Some(0) => Ok(()),
            _ => {
                conn.tx = TxState::Failed;
                Err(TdsError::Protocol(
                    "the connection has an open transaction".into(),
                ))
            }
        }
    }

    fn has_broken(&self, conn: &mut MsConn) -> bool {
        conn.tx != TxState::Idle
    }
}

impl MsConn {
    /// After a failed batch: roll back whatever it left open and clear tandem's session mark;
    /// when that is impossible the connection stays marked and the pool discards it.
    pub async fn recover(&mut self, rollback: &str) {
        let ok = match self.client.simple_query(rollback).await {
            Ok(stream) => stream.into_results().await.is_ok(),
            Err(_) => false,
        };
        self.tx = if ok { TxState::Idle } else { TxState::Failed };
    }
}

/// Runs one statement or batch and reads its whole result. `transactional`: the batch may
/// open a transaction, so the connection counts as in one until the result is read, and a
/// failure is followed by a rollback (see the module comment).
pub async fn run(
    conn: &mut MsConn,
    rollback: &str,
    transactional: bool,
    sql: &str,
    params: &[&dyn tiberius::ToSql],
) -> Result<Vec<Vec<tiberius::Row>>, TdsError> {
    if transactional {
        conn.tx = TxState::Open;
    }
    let result = if params.is_empty() {
        // A plain SQL batch: CREATE TRIGGER and friends must start their batch.
        match conn.client.simple_query(sql).await {
            Ok(stream) => stream.into_results().await,
            Err(e) => Err(e),
        }
    } else {
        match conn.client.query(sql, params).await {
            Ok(stream) => stream.into_results().await,
            Err(e) => Err(e),
        }
    };
    match &result {
        Ok(_) => {
            if transactional {
                conn.tx = TxState::Idle;
            }
        }
        // The connection itself failed: it cannot be trusted again.
        Err(TdsError::Io { .. } | TdsError::Protocol(_) | TdsError::Tls(_)) => {
            conn.tx = TxState::Failed
        }
        Err(_) if transactional => conn.recover(rollback).await,
        Err(_) => {}
    }
    result
}

impl Driver for Manager {
    fn describe(e: &TdsError) -> String {
        describe(e)
    }
}

/// A pool for one side, created without connecting: the shared [`Pool`] and the statement
/// that cleans up after a failed batch.
pub struct MsPool {
    pool: Pool<Manager>,
    rollback: String,
}

/// An error's message without credentials; server errors with their number.
pub fn describe(e: &TdsError) -> String {
    let m = match e {
        TdsError::Server(t) => format!("{} (SQL Server error {})", t.message(), t.code()),
        other => other.to_string(),
    };
    redact(&m)
}

impl MsPool {
    /// Builds the pool; no connection is made yet.
    pub fn new(ado: Ado, sc: &SideConfig, side: Side, common: &Common) -> MsPool {
        let size = sc.pool_size;
        let secrets =
            (sc.url_file.is_some() || sc.password_file.is_some()).then(|| (sc.clone(), side));
        let manager = Manager {
            config: ado.config,
            connect_timeout: ado.connect_timeout,
            session: common.session.clone(),
            secrets,
        };
        let timeout = ado.connect_timeout * 3 + Duration::from_secs(1);
        MsPool {
            pool: Pool::build(manager, size, side, ado.target, timeout),
            rollback: common.rollback.clone(),
        }
    }

    /// A connection, or why there is none.
    pub async fn get(&self) -> Result<bb8::PooledConnection<'_, Manager>, EndpointError> {
        self.pool.get().await
    }

    /// The statement that cleans up after a failed batch.
    pub fn rollback_sql(&self) -> &str {
        &self.rollback
    }

    /// Converts a driver error met while doing `context`.
    pub fn error(&self, context: &str, e: TdsError) -> EndpointError {
        match &e {
            TdsError::Server(t) => EndpointError::Database {
                side: self.pool.side(),
                context: context.to_string(),
                message: describe(&e),
                code: Some(t.code().to_string()),
                kind: classify(t.code()),
                source: Some(Box::new(e.clone())),
            },
            TdsError::Io { .. }
            | TdsError::Tls(_)
            | TdsError::Routing { .. }
            | TdsError::Protocol(_) => EndpointError::Unreachable {
                side: self.pool.side(),
                target: self.pool.target().to_string(),
                message: describe(&e),
            },
            _ => EndpointError::Database {
                side: self.pool.side(),
                context: context.to_string(),
                message: describe(&e),
                code: None,
                kind: ErrorKind::Internal,
                source: Some(Box::new(e.clone())),
            },
        }
    }

    /// Open and idle connections.
    pub fn state(&self) -> crate::endpoint::PoolState {
        self.pool.state()
    }

    /// Where this pool connects, without credentials.
    pub fn target(&self) -> &str {
        self.pool.target()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_io_errors_without_credentials() {
        let e = TdsError::Io {
            kind: std::io::ErrorKind::ConnectionRefused,
            message: "connection refused: server=x;password=hunter2".into(),
        };
        let d = describe(&e);
        assert!(!d.contains("hunter2"), "{d}");
    }
}
