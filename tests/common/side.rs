//! A dialect-neutral test driver: one scenario, written once, runs on every [`Pairing`] of
//! PostgreSQL and SQL Server (PostgreSQL↔PostgreSQL, SQL Server↔PostgreSQL, PostgreSQL↔SQL
//! Server).
//!
//! A [`TestSide`] is one database of a pair, in its dialect, with its role (A or B). Scenario
//! SQL is written once where the dialects agree, in this spelling:
//! - identifiers that need quoting are written as T-SQL writes them, `dbo.[ORDERS]`; on
//!   PostgreSQL they become `dbo."ORDERS"` (only `[` + identifier + `]`, so JSON keys such as
//!   `'[500,3]'` or `'["X",2]'` stay as they are);
//! - `BEGIN TRANSACTION; … COMMIT;`, `count(*)`, `CAST(x AS varchar(40))`, and booleans
//!   compared with `'0'`/`'1'` (`deleted = '0'`) mean the same on both.
//!
//! Where they do not agree, [`TestSide::sql`] picks the statement of the side's dialect, and
//! [`TestSide::is_ms`] lets a scenario state its intent per dialect.

use std::path::Path;
use std::sync::Arc;

use tandem::config::{self, Config, Side};
use tandem::sync::{self, BatchReport, Sides};
use tokio::sync::Mutex;

use super::mssql::{fresh_ms_db, is_babelfish, ms_connect, ms_exec, ms_rows, mssql_url, Ms};

pub const DEMO_CONFIG: &str = include_str!("../../sql/demo/tandem.toml");
pub const PG_A_SCHEMA: &str = include_str!("../../sql/demo/a_legacy.sql");
pub const PG_B_SCHEMA: &str = include_str!("../../sql/demo/b_new.sql");
pub const MS_A_SCHEMA: &str = include_str!("../../sql/mssql/demo_a.sql");
pub const MS_B_SCHEMA: &str = include_str!("../../sql/mssql/demo_b.sql");

/// The SQL dialect of a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Pg,
    Ms,
}

impl Dialect {
    /// The `kind` in tandem.toml.
    pub fn kind(self) -> &'static str {
        match self {
            Dialect::Pg => "postgres",
            Dialect::Ms => "mssql",
        }
    }
}

/// Which dialect each side of a scenario runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pairing {
    /// PostgreSQL ↔ PostgreSQL.
    PgPg,
    /// A on SQL Server, B on PostgreSQL.
    MsPg,
    /// A on PostgreSQL, B on SQL Server.
    PgMs,
}

impl Pairing {
    pub fn a(self) -> Dialect {
        match self {
            Pairing::MsPg => Dialect::Ms,
            _ => Dialect::Pg,
        }
    }

    pub fn b(self) -> Dialect {
        match self {
            Pairing::PgMs => Dialect::Ms,
            _ => Dialect::Pg,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Pairing::PgPg => "pgpg",
            Pairing::MsPg => "mspg",
            Pairing::PgMs => "pgms",
        }
    }
}

/// One row of an outbox, as text (for re-queuing it: a redelivery).
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub seq: String,
    pub entity: String,
    pub op: String,
    /// `None` when NULL.
    pub key: Option<String>,
    pub image: String,
}

enum Conn {
    Pg(tokio_postgres::Client),
    Ms(Box<Mutex<Ms>>),
}

/// One database of the pair, in its dialect.
pub struct TestSide {
    conn: Conn,
    url: String,
    side: Side,
    babelfish: bool,
}

impl TestSide {
    async fn connect(dialect: Dialect, url: &str, side: Side) -> TestSide {
        let (conn, babelfish) = match dialect {
            Dialect::Pg => (Conn::Pg(super::connect(url).await), false),
            Dialect::Ms => {
                let mut c = ms_connect(url).await;
                let bf = is_babelfish(&mut c).await;
                (Conn::Ms(Box::new(Mutex::new(c))), bf)
            }
        };
        TestSide {
            conn,
            url: url.to_string(),
            side,
            babelfish,
        }
    }

    /// A second session on the same database.
    pub async fn another_session(&self) -> TestSide {
        TestSide::connect(self.dialect(), &self.url, self.side).await
    }

    /// The database's connection string (a URL, or an ADO.NET string on SQL Server).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn dialect(&self) -> Dialect {
        match self.conn {
            Conn::Pg(_) => Dialect::Pg,
            Conn::Ms(_) => Dialect::Ms,
        }
    }

    /// Is this side on SQL Server?
    pub fn is_ms(&self) -> bool {
        self.dialect() == Dialect::Ms
    }

    /// Is this side on Babelfish (a T-SQL engine that is not SQL Server)?
    pub fn is_babelfish(&self) -> bool {
        self.babelfish
    }

    /// A or B.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The PostgreSQL client (panics on SQL Server).
    pub fn pg(&self) -> &tokio_postgres::Client {
        match &self.conn {
            Conn::Pg(c) => c,
            Conn::Ms(_) => panic!("side {} is on SQL Server", self.side),
        }
    }

    /// The statement of this side's dialect.
    pub fn sql<'s>(&self, pg: &'s str, ms: &'s str) -> &'s str {
        match self.dialect() {
            Dialect::Pg => pg,
            Dialect::Ms => ms,
        }
    }

    /// The neutral spelling in this dialect: `[Name]` quoting becomes `"Name"` on PostgreSQL.
    pub fn spell(&self, sql: &str) -> String {
        match self.dialect() {
            Dialect::Ms => sql.to_string(),
            Dialect::Pg => brackets_to_quotes(sql),
        }
    }

    /// Runs statements (on SQL Server, batches separated by GO lines).
    pub async fn exec(&self, sql: &str) {
        let sql = self.spell(sql);
        match &self.conn {
            Conn::Pg(c) => c
                .batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("side {}: {sql}: {e}", self.side)),
            Conn::Ms(c) => ms_exec(&mut *c.lock().await, &sql).await,
        }
    }

    /// Statements in one transaction.
    pub async fn exec_in_transaction(&self, sql: &str) {
        self.exec(&format!("BEGIN TRANSACTION;\n{sql}\nCOMMIT;"))
            .await
    }

    /// Statements that give an IDENTITY column its value: on SQL Server inside
    /// `SET IDENTITY_INSERT table ON/OFF`; PostgreSQL's identities are `BY DEFAULT`.
    pub fn identity_insert(&self, table: &str, sql: &str) -> String {
        match self.dialect() {
            Dialect::Pg => sql.to_string(),
            Dialect::Ms => {
                format!("SET IDENTITY_INSERT {table} ON;\n{sql}\nSET IDENTITY_INSERT {table} OFF;")
            }
        }
    }

    /// Rows as text: NULL as "NULL", booleans and bits as "t"/"f", decimals with their scale
    /// (cast dates and times to text in the query).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let sql = self.spell(sql);
        match &self.conn {
            Conn::Pg(c) => super::fixtures::rows(c, &sql).await,
            Conn::Ms(c) => ms_rows(&mut *c.lock().await, &sql).await,
        }
    }

    /// A single number.
    pub async fn count(&self, sql: &str) -> i64 {
        let rows = self.rows(sql).await;
        rows[0][0]
            .parse()
            .unwrap_or_else(|e| panic!("side {}: {sql}: {e}: {rows:?}", self.side))
    }

    /// Rows in tandem's outbox.
    pub async fn outbox_count(&self) -> i64 {
        self.count("SELECT count(*) FROM tandem.outbox").await
    }

    /// The demo schema's row-version expression of this side's orders table: changes with
    /// every write to the row (PostgreSQL's `xmin`, the `rowversion` column on SQL Server).
    pub fn row_version(&self) -> &'static str {
        match (self.dialect(), self.side) {
            (Dialect::Pg, _) => "xmin::text",
            (Dialect::Ms, Side::A) => "CONVERT(varchar(20), CONVERT(bigint, ROW_VER))",
            (Dialect::Ms, Side::B) => "CONVERT(varchar(20), CONVERT(bigint, row_ver))",
        }
    }

    /// The demo schema's orders table on this side.
    pub fn orders(&self) -> &'static str {
        match self.side {
            Side::A => "dbo.[ORDERS]",
            Side::B => "orders",
        }
    }

    /// The outbox rows, oldest first.
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        let sql = self.sql(
            "SELECT seq::text, entity, op::text, key::text, image::text FROM tandem.outbox ORDER BY seq",
            "SELECT seq, entity, op, [key], image FROM tandem.outbox ORDER BY seq",
        );
        self.rows(sql)
            .await
            .into_iter()
            .map(|r| OutboxRow {
                seq: r[0].clone(),
                entity: r[1].clone(),
                op: r[2].clone(),
                key: (r[3] != "NULL").then(|| r[3].clone()),
                image: r[4].clone(),
            })
            .collect()
    }

    /// Puts a copy of an outbox row back (same seq): what a redelivery after a crash between
    /// the commit at the target and the write-back at the source looks like.
    pub async fn requeue(&self, row: &OutboxRow) {
        match &self.conn {
            Conn::Pg(c) => {
                c.execute(
                    "INSERT INTO tandem.outbox (seq, entity, op, key, image) OVERRIDING SYSTEM VALUE \
                     VALUES ($1::text::bigint, $2, $3::text::\"char\", $4::text::jsonb, $5::text::jsonb)",
                    &[&row.seq, &row.entity, &row.op, &row.key, &row.image],
                )
                .await
                .unwrap_or_else(|e| panic!("side {}: requeue: {e}", self.side));
            }
            Conn::Ms(c) => {
                let lit = |s: &str| format!("N'{}'", s.replace('\'', "''"));
                let k = row.key.as_deref().map_or("NULL".to_string(), lit);
                let seq: i64 = row.seq.parse().expect("seq");
                let sql = format!(
                    "SET IDENTITY_INSERT tandem.outbox ON;
                     INSERT INTO tandem.outbox (seq, entity, op, [key], key_prefix, image)
                     VALUES ({seq}, {e}, {op}, {k}, LEFT({k}, 400), {i});
                     SET IDENTITY_INSERT tandem.outbox OFF;",
                    e = lit(&row.entity),
                    op = lit(&row.op),
                    i = lit(&row.image),
                );
                ms_exec(&mut *c.lock().await, &sql).await;
            }
        }
    }
}

/// `[Name]` → `"Name"` where Name is an identifier (letter or `_` first).
pub fn brackets_to_quotes(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(at) = rest.find('[') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let ident_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let ident = &after[..ident_len];
        let is_ident = ident
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if is_ident && after[ident_len..].starts_with(']') {
            out.push('"');
            out.push_str(ident);
            out.push('"');
            rest = &after[ident_len + 1..];
        } else {
            out.push('[');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Both sides of a scenario, tandem installed on each.
pub struct Env {
    pub pairing: Pairing,
    pub a: TestSide,
    pub b: TestSide,
    pub config: Arc<Config>,
    _dir: tempfile::TempDir,
}

impl Env {
    /// Fresh databases for the pairing with the demo schema (`sql/demo/`, `sql/mssql/demo_*.sql`)
    /// and the demo config, installed.
    pub async fn demo(pairing: Pairing, name: &str) -> Env {
        Env::demo_with(pairing, name, DEMO_CONFIG).await
    }

    /// [`Env::demo`] with another config text for the demo schema (e.g. the demo config with a
    /// `batch_size`).
    pub async fn demo_with(pairing: Pairing, name: &str, config_text: &str) -> Env {
        let mut text = config_text.to_string();
        if pairing.b() == Dialect::Ms {
            text = text
                .replace("public.orders", "dbo.orders")
                .replace("public.order_items", "dbo.order_items");
        }
        let schema = |d: Dialect, s: Side| match (d, s) {
            (Dialect::Pg, Side::A) => PG_A_SCHEMA,
            (Dialect::Pg, Side::B) => PG_B_SCHEMA,
            (Dialect::Ms, Side::A) => MS_A_SCHEMA,
            (Dialect::Ms, Side::B) => MS_B_SCHEMA,
        };
        Env::new(
            pairing,
            name,
            &text,
            schema(pairing.a(), Side::A),
            schema(pairing.b(), Side::B),
        )
        .await
    }

    /// Fresh databases for the pairing with the given schemas and config (its `kind`s are set
    /// for the pairing; `${TANDEM_A_URL}`/`${TANDEM_B_URL}` are the databases). Installs both
    /// sides twice (the second is harmless) and asserts that `check` finds nothing.
    pub async fn new(
        pairing: Pairing,
        name: &str,
        config_text: &str,
        a_schema: &str,
        b_schema: &str,
    ) -> Env {
        let label = format!("{}_{name}", pairing.label());
        let (pg_a, pg_b) = super::fresh_dbs(&label);
        let a_url = match pairing.a() {
            Dialect::Pg => pg_a,
            Dialect::Ms => fresh_ms_db(&mssql_url(), &label).await,
        };
        let b_url = match pairing.b() {
            Dialect::Pg => pg_b,
            Dialect::Ms => fresh_ms_db(&mssql_url(), &label).await,
        };
        let a = TestSide::connect(pairing.a(), &a_url, Side::A).await;
        let b = TestSide::connect(pairing.b(), &b_url, Side::B).await;
        a.exec(a_schema).await;
        b.exec(b_schema).await;

        let text = set_kinds(config_text, pairing.a().kind(), pairing.b().kind());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tandem.toml");
        // An ADO.NET string may hold '"': keep URLs out of the TOML text, as users do (${ENV}).
        std::fs::write(&path, &text).expect("write config");
        let env = |n: &str| match n {
            "TANDEM_A_URL" => Some(a_url.clone()),
            "TANDEM_B_URL" => Some(b_url.clone()),
            _ => None,
        };
        let config = Arc::new(config::parse(&text, Path::new(&path), &env).expect("config"));
        super::install_twice_and_check(&config).await;
        Env {
            pairing,
            a,
            b,
            config,
            _dir: dir,
        }
    }

    pub fn sides(&self) -> Sides {
        Sides {
            a: tandem::endpoint::open(self.config.clone(), Side::A).expect("open A"),
            b: tandem::endpoint::open(self.config.clone(), Side::B).expect("open B"),
        }
    }

    /// Drains both directions in-process.
    pub async fn drain(&self) -> BatchReport {
        sync::drain(&self.config, &self.sides())
            .await
            .expect("drain")
    }
}

/// Sets the `kind` of `[a]` and of `[b]` in a config text that names them.
fn set_kinds(text: &str, a: &str, b: &str) -> String {
    let at = text.find("[b]").expect("config has [b]");
    let (head, tail) = text.split_at(at);
    let set = |part: &str, kind: &str| {
        let from = part.find("kind = \"").expect("kind") + "kind = \"".len();
        let to = from + part[from..].find('"').expect("kind closes");
        format!("{}{kind}{}", &part[..from], &part[to..])
    };
    format!("{}{}", set(head, a), set(tail, b))
}
