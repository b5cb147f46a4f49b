//! A on SQL Server (`tandem demo --a mssql`): a fresh database on the given server for the
//! demo, tiberius sessions on it, and dropping the database at the end.
//!
//! The connection string holds a password: everything shown goes through
//! [`crate::secret`] (`password=***`), and errors are redacted the same way.

use std::time::Duration;

use rand::Rng;
use tiberius::ColumnData;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

use crate::cli::CliError;
use crate::config::{redact, Side};
use crate::endpoint::mssql::ado;

/// A tiberius session.
pub type Ms = tiberius::Client<Compat<TcpStream>>;

/// The SQL Server the user named, and where the name came from.
pub struct Server {
    /// The ADO.NET connection string as given (it holds the password: never print it).
    url: String,
    /// `--mssql-url` or `$TANDEM_DEMO_MSSQL_URL`.
    pub source: &'static str,
    /// `host:port`, for messages.
    pub target: String,
}

impl Server {
    /// Checks the connection string (`source` says where it came from, for messages).
    pub fn new(url: String, source: &'static str) -> Result<Server, CliError> {
        let parsed = ado::parse(&url, Side::A).map_err(|e| {
            CliError::Setup(format!(
                "the SQL Server connection string ({source}): {}",
                redact(&e.to_string())
            ))
        })?;
        let target = parsed
            .target
            .rsplit_once('/')
            .map(|(server, _)| server.to_string())
            .unwrap_or(parsed.target);
        Ok(Server {
            url,
            source,
            target,
        })
    }
}

/// The demo's own database on the server: created by [`create_database`], dropped by
/// [`drop_database`].
pub struct Database {
    /// Its name, `tandem_demo_<pid>_<random>`.
    pub name: String,
    /// The connection string for it (holds the password: never print it).
    pub url: String,
    /// The server's `@@VERSION`, first line.
    pub version: String,
    /// Babelfish for PostgreSQL rather than SQL Server.
    pub babelfish: bool,
    /// Where the connection string came from (`--mssql-url` or `$TANDEM_DEMO_MSSQL_URL`).
    pub source: &'static str,
    admin_url: String,
    target: String,
}

impl Database {
    /// [`Database::url`] with its password as `***`.
    pub fn shown_url(&self) -> String {
        redact(&self.url)
    }

    /// `host:port`.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The `sqlcmd` command that opens this database (it asks for the password).
    pub fn sqlcmd(&self) -> String {
        let pairs = ado::pairs(&self.url).unwrap_or_default();
        let get = |names: &[&str]| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| names.contains(&k.as_str()))
                .map(|(_, v)| v.clone())
        };
        let server = get(&[
            "server",
            "data source",
            "address",
            "addr",
            "network address",
        ])
        .unwrap_or_else(|| self.target.clone());
        let user = get(&["user", "user id", "uid", "username"]).unwrap_or_default();
        let trust = get(&["trustservercertificate", "trust server certificate"])
            .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "yes"));
        format!(
            "sqlcmd -S {} -U {} -d {}{}",
            shell_word(&server),
            shell_word(&user),
            self.name,
            if trust { " -C" } else { "" }
        )
    }
}

/// A word quoted for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.,:/@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// An error's message without credentials; server errors with their number.
pub fn describe(e: &tiberius::error::Error) -> String {
    let m = match e {
        tiberius::error::Error::Server(t) => format!("{} (error {})", t.message(), t.code()),
        other => other.to_string(),
    };
    redact(&m)
}

/// Opens a session on the connection string `url`; `what` names it in errors.
pub async fn connect(url: &str, what: &str) -> Result<Ms, String> {
    let parsed = ado::parse(url, Side::A).map_err(|e| redact(&e.to_string()))?;
    let addr = parsed.config.get_addr();
    let timeout = parsed.connect_timeout;
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(&addr))
        .await
        .map_err(|_| {
            format!(
                "connecting to {what} ({}): timed out after {timeout:?}",
                parsed.target
            )
        })?
        .map_err(|e| format!("connecting to {what} ({}): {e}", parsed.target))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("connecting to {what} ({}): {e}", parsed.target))?;
    tokio::time::timeout(
        timeout * 2,
        tiberius::Client::connect(parsed.config, tcp.compat_write()),
    )
    .await
    .map_err(|_| format!("logging in to {what} ({}): timed out", parsed.target))?
    .map_err(|e| format!("logging in to {what} ({}): {}", parsed.target, describe(&e)))
}

/// Runs one batch; returns its result sets.
pub async fn batch(
    ms: &mut Ms,
    sql: &str,
) -> Result<Vec<Vec<tiberius::Row>>, tiberius::error::Error> {
    ms.simple_query(sql).await?.into_results().await
}

/// Runs a script: the batches between `GO` lines, in order.
pub async fn script(ms: &mut Ms, text: &str) -> Result<(), String> {
    for b in crate::endpoint::mssql::sql::batches(text) {
        batch(ms, &b).await.map_err(|e| {
            let first = b.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!(
                "{} (in the batch starting {:?})",
                describe(&e),
                first.trim()
            )
        })?;
    }
    Ok(())
}

/// An integer cell (IDENTITY values, `SCOPE_IDENTITY()`'s numeric(38,0)).
pub fn int(d: &ColumnData<'static>) -> Option<i64> {
    match d {
        ColumnData::U8(Some(v)) => Some(i64::from(*v)),
        ColumnData::I16(Some(v)) => Some(i64::from(*v)),
        ColumnData::I32(Some(v)) => Some(i64::from(*v)),
        ColumnData::I64(Some(v)) => Some(*v),
        ColumnData::Numeric(Some(n)) if n.scale() == 0 => i64::try_from(n.value()).ok(),
        _ => None,
    }
}

/// Creates a fresh database for the demo on `server`.
pub async fn create_database(server: &Server) -> Result<Database, CliError> {
    let name = format!(
        "tandem_demo_{}_{:06x}",
        std::process::id(),
        rand::thread_rng().gen_range(0..0x100_0000u32)
    );
    let fail = |m: String| {
        CliError::Setup(format!(
            "cannot create the demo's database on SQL Server {} ({}): {m}",
            server.target, server.source
        ))
    };
    let mut admin = connect(&server.url, "SQL Server").await.map_err(fail)?;
    let version = match batch(&mut admin, "SELECT @@VERSION").await {
        Ok(sets) => sets
            .first()
            .and_then(|rows| rows.first())
            .and_then(|r| r.get::<&str, _>(0))
            .and_then(|v| v.lines().next())
            .unwrap_or("")
            .trim()
            .to_string(),
        Err(e) => return Err(fail(format!("SELECT @@VERSION: {}", describe(&e)))),
    };
    let babelfish = version.contains("Babelfish");
    // Babelfish may refuse one of two CREATE DATABASE at the same instant ("tuple
    // concurrently updated"): tried again a few times.
    let create = format!("CREATE DATABASE [{name}]");
    for attempt in 1u64.. {
        match batch(&mut admin, &create).await {
            Ok(_) => break,
            Err(e) if attempt < 10 && describe(&e).contains("concurrently") => {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(fail(format!("{create}: {}", describe(&e)))),
        }
    }
    let url = ado::with_database(&server.url, &name)
        .map_err(|e| fail(format!("the connection string: {}", redact(&e))))?;
    Ok(Database {
        name,
        url,
        version,
        babelfish,
        source: server.source,
        admin_url: server.url.clone(),
        target: server.target.clone(),
    })
}

/// Drops the demo's database. Sessions still closing may hold it for a moment ("in use"):
/// tried again for a few seconds; on SQL Server the last try ends other sessions first
/// (`SET SINGLE_USER WITH ROLLBACK IMMEDIATE`, which Babelfish does not have).
pub async fn drop_database(db: &Database) -> Result<(), String> {
    let mut admin = connect(&db.admin_url, "SQL Server").await?;
    let plain = format!("DROP DATABASE [{}]", db.name);
    let forced = format!(
        "ALTER DATABASE [{0}] SET SINGLE_USER WITH ROLLBACK IMMEDIATE;\nDROP DATABASE [{0}]",
        db.name
    );
    const TRIES: u64 = 10;
    for attempt in 1..=TRIES {
        let sql = if attempt == TRIES && !db.babelfish {
            &forced
        } else {
            &plain
        };
        match batch(&mut admin, sql).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < TRIES && !matches!(e, tiberius::error::Error::Io { .. }) => {
                tracing::debug!(error = %describe(&e), "DROP DATABASE, trying again");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(format!("{sql}: {}", describe(&e))),
        }
    }
    Err(format!("{plain}: gave up"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_no_password() {
        let s = Server::new(
            "server=tcp:127.0.0.1,1433;user=tandem;password=S3cret_pw;TrustServerCertificate=true"
                .into(),
            "--mssql-url",
        )
        .unwrap();
        assert_eq!(s.target, "127.0.0.1:1433");
        let db = Database {
            name: "tandem_demo_1_abcdef".into(),
            url: ado::with_database(&s.url, "tandem_demo_1_abcdef").unwrap(),
            version: String::new(),
            babelfish: true,
            source: s.source,
            admin_url: s.url.clone(),
            target: s.target.clone(),
        };
        let shown = db.shown_url();
        assert!(!shown.contains("S3cret_pw"), "{shown}");
        assert!(shown.contains("password=***"), "{shown}");
        assert!(shown.contains("database=tandem_demo_1_abcdef"), "{shown}");
        assert_eq!(
            db.sqlcmd(),
            "sqlcmd -S tcp:127.0.0.1,1433 -U tandem -d tandem_demo_1_abcdef -C"
        );
    }

    #[test]
    fn bad_strings_are_refused_without_the_password() {
        let e = match Server::new("postgres://u:S3cret_pw@h/db".into(), "--mssql-url") {
            Ok(_) => panic!("a URL was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("--mssql-url"), "{e}");
        assert!(!e.contains("S3cret_pw"), "{e}");
    }
}
