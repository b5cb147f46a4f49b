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
