//! The sample schemas (the demo's) on a fresh pair of databases, with a config and helpers to
//! run tandem in-process or as the real binary.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem::config::{self, Config};
use tandem::sync::{self, BatchReport, Sides};
use tokio_postgres::Client;

pub const A_SCHEMA: &str = include_str!("../../sql/demo/a_legacy.sql");
pub const B_SCHEMA: &str = include_str!("../../sql/demo/b_new.sql");
pub const DEMO_CONFIG: &str = include_str!("../../sql/demo/tandem.toml");

/// A ready pair of databases with the sample schema, tandem installed.
pub struct Env {
    pub a_url: String,
    pub b_url: String,
    pub a: Client,
    pub b: Client,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub config: Arc<Config>,
}

impl Env {
    /// Fresh databases on the shared clusters, sample schema, config written, installed.
    pub async fn new(name: &str) -> Env {
        let (a_url, b_url) = super::fresh_dbs(name);
        Env::on(a_url, b_url, DEMO_CONFIG, A_SCHEMA, B_SCHEMA, true).await
    }

    /// The same on given databases with a given config text (its `${TANDEM_A_URL}` and
    /// `${TANDEM_B_URL}` are replaced by the URLs).
    pub async fn on(
        a_url: String,
        b_url: String,
        config_text: &str,
        a_schema: &str,
        b_schema: &str,
        install: bool,
    ) -> Env {
        let a = super::connect(&a_url).await;
        let b = super::connect(&b_url).await;
        a.batch_execute(a_schema).await.expect("A schema");
        b.batch_execute(b_schema).await.expect("B schema");
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = dir.path().join("tandem.toml");
        let text = config_text
            .replace("${TANDEM_A_URL}", &a_url)
            .replace("${TANDEM_B_URL}", &b_url);
        std::fs::write(&config_path, text).expect("write config");
        let config = Arc::new(config::load(&config_path).expect("config loads"));
        let env = Env {
            a_url,
            b_url,
            a,
            b,
            dir,
            config_path,
            config,
        };
        if install {
            for side in [config::Side::A, config::Side::B] {
                tandem::endpoint::open(env.config.clone(), side)
                    .expect("open")
                    .install()
                    .await
                    .expect("install");
            }
        }
        env
    }

    pub fn sides(&self) -> Sides {
        Sides {
            a: tandem::endpoint::open(self.config.clone(), config::Side::A).expect("open A"),
            b: tandem::endpoint::open(self.config.clone(), config::Side::B).expect("open B"),
        }
    }

    /// Drains both directions in-process.
    pub async fn drain(&self) -> BatchReport {
        sync::drain(&self.config, &self.sides())
            .await
            .expect("drain")
    }

    /// The tandem binary with this env's config.
    pub fn tandem(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
        c.arg("--config").arg(&self.config_path);
        c.env("RUST_LOG", "tandem=debug");
        c
    }

    /// Runs the binary to completion.
    pub fn tandem_run(&self, args: &[&str]) -> Output {
        self.tandem().args(args).output().expect("run tandem")
    }
}

/// Both sides hold the same orders (same values) and items, every one linked, outboxes empty.
pub async fn assert_converged(env: &Env) {
    let a_orders = count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await;
    assert_eq!(
        a_orders,
        count(&env.b, "SELECT count(*) FROM orders").await,
        "orders"
    );
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        count(&env.b, "SELECT count(*) FROM order_items").await,
        "items"
    );
    assert_eq!(
        count(&env.b, "SELECT count(DISTINCT legacy_no) FROM orders").await,
        a_orders,
        "no duplicates: one B order per A order"
    );
    assert_eq!(
        count(
            &env.a,
            r#"SELECT count(*) FROM dbo."ORDERS" WHERE "NEW_ID" IS NULL"#
        )
        .await,
        0,
        "every A order shows its B id"
    );
    for c in [&env.a, &env.b] {
        assert_eq!(
            count(c, "SELECT count(*) FROM tandem.outbox").await,
            0,
            "outbox empty"
        );
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM tandem.id_map WHERE entity = 'order' AND NOT deleted"
            )
            .await,
            a_orders,
            "links"
        );
    }
    // Same values on both sides, record by record (through the links).
    let a = rows(
        &env.a,
        r#"SELECT "ORDER_NO", "CUST_NAME", "AMOUNT" FROM dbo."ORDERS" ORDER BY 1"#,
    )
    .await;
    let b = rows(
        &env.b,
        "SELECT legacy_no, customer, amount FROM orders ORDER BY 1",
    )
    .await;
    assert!(a == b, "orders differ between A and B");
}

/// The sync loop logged that it cannot reach a database ("A→B: side B: cannot reach …"): it
/// met the outage, beyond the start-up check of the objects, which goes on without the side.
pub fn sync_met_outage(log: &str) -> bool {
    log.lines()
        .any(|l| l.contains('→') && l.contains("cannot reach the database"))
}

/// A log file the test wrote into the env's directory (empty when missing).
pub fn log(env: &Env, name: &str) -> String {
    std::fs::read_to_string(env.dir.path().join(name)).unwrap_or_default()
}

/// Rows of a query in PostgreSQL's text form (NULL as "NULL"), for comparisons that show well.
pub async fn rows(c: &Client, sql: &str) -> Vec<Vec<String>> {
    c.simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// Expected rows, written compactly.
pub fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
    rows.iter()
        .map(|r| r.iter().map(|v| v.to_string()).collect())
        .collect()
}

/// A single number.
pub async fn count(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Waits until `check` holds, or panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_or(limit, what, check, String::new).await
}

/// [`eventually`], adding `context()` (e.g. a log) to the panic message.
pub async fn eventually_or<F, Fut, C>(limit: Duration, what: &str, mut check: F, context: C)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
    C: Fn() -> String,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > limit {
            panic!(
                "timed out after {limit:?} waiting for: {what}\n{}",
                context()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
