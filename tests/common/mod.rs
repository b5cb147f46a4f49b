//! Helpers shared by the integration tests (each file in `tests/` does `mod common;`).
//!
//! Every test binary gets one pair of throwaway PostgreSQL clusters ([`shared`]), and each test
//! takes its own fresh databases in them ([`fresh_dbs`]), so tests can run in parallel. Tests
//! that stop a server take a dedicated pair instead ([`own_pair`]).

#![allow(dead_code)]

pub mod fixtures;
pub mod mssql;
pub mod side;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use tandem::cluster::{stop_all_at_exit, Cluster};

/// One `#[tokio::test]` per scenario and pairing; the SQL Server pairings are ignored when no
/// server was configured at build time. Invoked at the root of a test file that imports
/// `Pairing` and defines one `async fn name(p: Pairing)` per scenario.
#[macro_export]
macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod pg_pg {
            use super::Pairing;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Pairing::PgPg).await
                }
            )*
        }
        mod ms_pg {
            use super::Pairing;
            $(
                #[tokio::test]
                #[cfg_attr(
                    not(tandem_mssql),
                    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
                )]
                async fn $name() {
                    super::$name(Pairing::MsPg).await
                }
            )*
        }
        mod pg_ms {
            use super::Pairing;
            $(
                #[tokio::test]
                #[cfg_attr(
                    not(tandem_mssql),
                    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
                )]
                async fn $name() {
                    super::$name(Pairing::PgMs).await
                }
            )*
        }
    };
}

/// Two local clusters, A and B.
pub struct Pair {
    /// Side A.
    pub a: Cluster,
    /// Side B.
    pub b: Cluster,
}

/// Starts two clusters in parallel; panics with the reason when they cannot be started.
fn start_pair(label: &str) -> Pair {
    stop_all_at_exit();
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Cluster::start(&format!("{label}-a")));
        let b = Cluster::start(&format!("{label}-b"));
        let a = a
            .join()
            .unwrap_or_else(|_| panic!("starting cluster {label}-a panicked"));
        (a, b)
    });
    let a = a.unwrap_or_else(|e| panic!("cannot start cluster {label}-a: {e}"));
    let b = b.unwrap_or_else(|e| panic!("cannot start cluster {label}-b: {e}"));
    Pair { a, b }
}

/// The pair of clusters shared by every test of this test binary, started on first use and
/// stopped and removed when the process exits.
pub fn shared() -> &'static Pair {
    static SHARED: OnceLock<Pair> = OnceLock::new();
    SHARED.get_or_init(|| start_pair("shared"))
}

/// A dedicated pair of clusters, for tests that stop or restart a server. Dropping it stops
/// and removes both clusters.
pub fn own_pair(label: &str) -> Pair {
    start_pair(label)
}

/// A test's name as part of a database name: lower-case ASCII letters, digits and `_`, at most
/// `max` characters.
pub fn db_stem(test_name: &str, max: usize) -> String {
    test_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(max)
        .collect()
}

/// Installs tandem on both sides of `config` twice (the second install must be harmless) and
/// asserts that `check` then finds nothing.
pub async fn install_twice_and_check(config: &std::sync::Arc<tandem::config::Config>) {
    for side in [tandem::config::Side::A, tandem::config::Side::B] {
        let ep = tandem::endpoint::open(config.clone(), side).expect("open");
        ep.install().await.expect("install");
        ep.install().await.expect("install again");
        let problems = ep.check().await.expect("check");
        assert!(problems.is_empty(), "side {side}: {problems:?}");
    }
}

/// Creates a fresh, uniquely named database in each cluster of the [`shared`] pair and returns
/// their URLs `(a_url, b_url)`.
pub fn fresh_dbs(test_name: &str) -> (String, String) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("t_{}_{n}", db_stem(test_name, 40));
    let pair = shared();
    for (side, cluster) in [("A", &pair.a), ("B", &pair.b)] {
        cluster
            .create_database(&name)
            .unwrap_or_else(|e| panic!("cannot create database {name} on {side}: {e}"));
    }
    (pair.a.url(&name), pair.b.url(&name))
}

/// Connects to `url` and drives the connection in a spawned task; panics when it cannot.
pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
    tokio::spawn(async move {
        // Ends with an error when the server goes away, which some tests do on purpose.
        let _ = connection.await;
    });
    client
}
