//! The SQL Server test harness, shared by every suite that needs a SQL Server (or Babelfish):
//! the server from `TANDEM_TEST_MSSQL_URL`, fresh databases on it, and plain T-SQL helpers.
//!
//! Tests that use it carry
//! `#[cfg_attr(not(tandem_mssql), ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)")]`
//! (build.rs sets `tandem_mssql` when the variable was set at build time), so without a server
//! they are reported as ignored, never as passed. On Babelfish, a step it cannot run is skipped
//! alone, printing `babelfish: skipped …` and why.

use std::sync::atomic::{AtomicUsize, Ordering};

use tandem::config::Side;
use tandem::endpoint::mssql::ado;
use tiberius::ColumnData;
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

/// A tiberius connection.
pub type Ms = tiberius::Client<Compat<TcpStream>>;

/// The server to test against. The tests are `#[ignore]`d when the variable was not set at
/// build time (build.rs); run anyway without it, they fail rather than pass unproven.
pub fn mssql_url() -> String {
    match std::env::var("TANDEM_TEST_MSSQL_URL") {
        Ok(u) if !u.trim().is_empty() => u,
        _ => panic!(
            "TANDEM_TEST_MSSQL_URL is not set: this SQL Server test cannot run (bash deploy/test.sh starts Babelfish and sets it)"
        ),
    }
}

/// Connects to an ADO.NET connection string; panics with the reason when it cannot.
pub async fn ms_connect(url: &str) -> Ms {
    let a = ado::parse(url, Side::A).unwrap_or_else(|e| panic!("TANDEM_TEST_MSSQL_URL: {e}"));
    let tcp = TcpStream::connect(a.config.get_addr())
        .await
        .unwrap_or_else(|e| panic!("cannot reach {}: {e}", a.target));
    tcp.set_nodelay(true).expect("nodelay");
    tiberius::Client::connect(a.config, tcp.compat_write())
        .await
        .unwrap_or_else(|e| panic!("cannot log in to {}: {e}", a.target))
}

/// Runs a script (batches separated by GO lines).
pub async fn ms_exec(c: &mut Ms, script: &str) {
    for b in tandem::endpoint::mssql::sql::batches(script) {
        c.simple_query(b.as_str())
            .await
            .unwrap_or_else(|e| panic!("{b}: {e}"))
            .into_results()
            .await
            .unwrap_or_else(|e| panic!("{b}: {e}"));
    }
}

/// One value as text: NULL as "NULL", bit as "t"/"f", binary as hex, decimals with their scale.
pub fn cell(d: &ColumnData<'static>) -> String {
    match d {
        ColumnData::U8(Some(v)) => v.to_string(),
        ColumnData::I16(Some(v)) => v.to_string(),
        ColumnData::I32(Some(v)) => v.to_string(),
        ColumnData::I64(Some(v)) => v.to_string(),
        ColumnData::F32(Some(v)) => v.to_string(),
        ColumnData::F64(Some(v)) => v.to_string(),
        ColumnData::Bit(Some(v)) => (if *v { "t" } else { "f" }).to_string(),
        ColumnData::String(Some(v)) => v.to_string(),
        ColumnData::Guid(Some(v)) => v.to_string(),
        ColumnData::Numeric(Some(v)) => v.to_string(),
        ColumnData::Binary(Some(v)) => v.iter().map(|b| format!("{b:02x}")).collect(),
        _ if format!("{d:?}").contains("None") => "NULL".to_string(),
        other => format!("{other:?}"),
    }
}

/// Rows of a query as text (NULL as "NULL"); cast dates in the query.
pub async fn ms_rows(c: &mut Ms, sql: &str) -> Vec<Vec<String>> {
    let rows = c
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_first_result()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|r| r.cells().map(|(_, d)| cell(d)).collect())
        .collect()
}

/// A single number.
pub async fn ms_count(c: &mut Ms, sql: &str) -> i64 {
    ms_rows(c, sql).await[0][0]
        .parse()
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Is the server Babelfish for PostgreSQL (a T-SQL engine that is not SQL Server)?
pub async fn is_babelfish(c: &mut Ms) -> bool {
    ms_rows(c, "SELECT @@VERSION").await[0][0].contains("Babelfish")
}

/// Drops, once per test process, the test databases of test processes that are gone (their
/// names end in `_<pid>_<n>`): each run cleans up after the runs before it, whatever way they
/// ended. A database that cannot be dropped (still in use) is left for the next run.
async fn sweep_once(admin: &mut Ms) {
    // Held by the test that sweeps until it is done: the others wait, since installing into a
    // database while another is dropped has failed on Babelfish ("trigger … does not exist").
    static SWEPT: tokio::sync::Mutex<bool> = tokio::sync::Mutex::const_new(false);
    let mut swept = SWEPT.lock().await;
    if *swept {
        return;
    }
    *swept = true;
    let names = ms_rows(
        admin,
        "SELECT name FROM sys.databases WHERE name LIKE N'tandem[_]%'",
    )
    .await;
    for row in names {
        let Some(name) = row.first() else { continue };
        let mut parts = name.rsplit('_');
        let (Some(_n), Some(pid)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
        if !alive {
            let drop = format!("DROP DATABASE [{}]", name.replace(']', "]]"));
            if let Ok(s) = admin.simple_query(drop.as_str()).await {
                let _ = s.into_results().await;
            }
        }
    }
}

/// A fresh database on the test server `url`; returns its connection string.
pub async fn fresh_ms_db(url: &str, test: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let stem = super::db_stem(test, 24);
    let name = format!(
        "tandem_{}_{}_{}",
        stem,
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = ms_connect(url).await;
    sweep_once(&mut admin).await;
    // The name is new (process id and counter): no earlier database to drop. Babelfish may
    // refuse one of two CREATE DATABASE at the same instant ("tuple concurrently updated"):
    // tried again a few times.
    let create = format!("CREATE DATABASE [{name}];");
    for attempt in 1.. {
        let r = admin.simple_query(create.as_str()).await;
        let r = match r {
            Ok(s) => s.into_results().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => break,
            Err(e) if attempt < 10 && e.to_string().contains("concurrently") => {
                tokio::time::sleep(std::time::Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => panic!("{create}: {e}"),
        }
    }
    // SQL Server: pin the lowest level tandem supports (130, SQL Server 2016), so the suite
    // proves that level. Babelfish has no ALTER DATABASE; its test rig reports 150.
    if is_babelfish(&mut admin).await {
        println!("babelfish: skipped ALTER DATABASE {name} SET COMPATIBILITY_LEVEL = 130 (not supported there)");
    } else {
        ms_exec(
            &mut admin,
            &format!("ALTER DATABASE [{name}] SET COMPATIBILITY_LEVEL = 130;"),
        )
        .await;
    }
    ado::with_database(url, &name).expect("connection string")
}
