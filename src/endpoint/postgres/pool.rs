//! A bb8 pool of tokio-postgres connections that each keep their prepared statements (the
//! pool itself is the shared [`Pool`]; here are the connection manager and the error mapping).
//!
//! bb8-postgres hands out bare `Client`s, which cannot carry a statement cache; tandem runs
//! the same few statements millions of times, so preparing once per connection matters.

use std::collections::HashMap;
use std::time::Duration;

use tokio_postgres::{Client, Statement};

use super::connect::{ConnectError, Connector};
use super::error::classify;
use crate::config::{Side, SideConfig};
use crate::endpoint::pool::{Driver, Pool};
use crate::endpoint::EndpointError;

/// One connection and the statements prepared on it.
pub struct PgConn {
    pub client: Client,
    pub stmts: HashMap<String, Statement>,
}

/// Opens connections for bb8 (through the side's [`Connector`]: TLS, secret files, the
/// password file, all read again for each new connection).
pub struct Manager {
    connector: Connector,
}

/// Plan every execution for its parameters. A generic plan is cached after a few runs,
/// typically while id_map is still nearly empty; when it has grown to 100k links that plan (a
/// bitmap scan of the entity's whole id_map) cost 11 ms a batch of look-ups instead of well
/// under one (measured). Planning each time costs far less. random_page_cost 1.1: what tandem
/// reads is hot (the outbox's newest rows, id_map); with the default 4 the planner deleted
/// 4,000 done rows by a sequential scan of a 200,000-row outbox (23 ms a batch) rather than by
/// its primary key.
const SESSION: &str = "-c plan_cache_mode=force_custom_plan -c random_page_cost=1.1";

/// The pool's settings on top of the connection string's.
fn pool_settings(config: &mut tokio_postgres::Config) {
    if config.get_application_name().is_none() {
        config.application_name("tandem");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    config.keepalives_idle(Duration::from_secs(30));
    let options = match config.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {SESSION}"),
        _ => SESSION.to_string(),
    };
    config.options(options);
}

impl bb8::ManageConnection for Manager {
    type Connection = PgConn;
    type Error = ConnectError;

    async fn connect(&self) -> Result<PgConn, ConnectError> {
        // The connection ends when the client is dropped or the server goes away; the client
        // then reports itself closed and the pool discards it.
        let client = self.connector.connect(pool_settings).await?;
        Ok(PgConn {
            client,
            stmts: HashMap::new(),
        })
    }

    async fn is_valid(&self, conn: &mut PgConn) -> Result<(), ConnectError> {
        conn.client
            .simple_query("")
            .await
            .map(|_| ())
            .map_err(ConnectError::Driver)
    }

    fn has_broken(&self, conn: &mut PgConn) -> bool {
        conn.client.is_closed()
    }
}

impl Driver for Manager {
    fn describe(e: &ConnectError) -> String {
        describe_connect(e)
    }
}

/// A failed connection's message, with what to do when TLS is the cause.
pub fn describe_connect(e: &ConnectError) -> String {
    match e {
        ConnectError::Setup(m) => m.clone(),
        ConnectError::Driver(e) => {
            let m = describe(e);
            let hint = if m.contains("server does not support TLS") {
                " (the connection string asks for TLS with sslmode=require, verify-ca or \
                 verify-full, and this server has ssl = off: turn TLS on at the server, or \
                 connect with sslmode=prefer or disable)"
            } else if m.contains("invalid peer certificate") {
                " (sslmode=verify-ca checks the server's certificate against sslrootcert; \
                 verify-full also checks that it names the host in the url)"
            } else {
                ""
            };
            format!("{m}{hint}")
        }
    }
}

/// A pool for one side, created without connecting.
pub type PgPool = Pool<Manager>;

/// The message of an error with its source (tokio-postgres hides the cause in `source`).
pub fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = db.message().to_string();
        if let Some(d) = db.detail() {
            m.push_str(&format!(" ({d})"));
        }
        return m;
    }
    let mut m = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        m.push_str(&format!(": {s}"));
        src = s.source();
    }
    crate::secret::redact(&m)
}

impl Pool<Manager> {
    /// Checks the connection string and builds the pool; no connection is made yet.
    pub fn new(sc: &SideConfig, side: Side) -> Result<PgPool, EndpointError> {
        let (connector, target) = Connector::new(sc, side)?;
        Ok(Pool::build(
            Manager { connector },
            sc.pool_size,
            side,
            target,
            Duration::from_secs(6),
        ))
    }

    /// Converts a driver error met while doing `context`.
    pub fn error(&self, context: &str, e: tokio_postgres::Error) -> EndpointError {
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code().to_string();
                EndpointError::Database {
                    side: self.side(),
                    context: context.to_string(),
                    message: describe(&e),
                    kind: classify(&code),
                    code: Some(code),
                    source: Some(Box::new(e)),
                }
            }
            None => EndpointError::Unreachable {
                side: self.side(),
                target: self.target().to_string(),
                message: describe(&e),
            },
        }
    }
}

/// Statements prepared on the batch's connection, shared by the changes running at once.
pub(super) type Prepared = HashMap<String, Statement>;

/// Prepares `sql` once per connection.
pub async fn prepared(
    client: &impl tokio_postgres::GenericClient,
    cache: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    if let Some(s) = cache.get(sql) {
        return Ok(s.clone());
    }
    let s = client.prepare(sql).await?;
    cache.insert(sql.to_string(), s.clone());
    Ok(s)
}
