//! Backfill, verify and verify --repair with SQL Server on either side, against a real SQL
//! Server (or Babelfish) and a real PostgreSQL: the scenarios of `backfill_verify.rs` across
//! dialects.
//!
//! These need TANDEM_TEST_MSSQL_URL (an ADO.NET connection string of a login that may create
//! databases; `deploy/test.sh` starts Babelfish and sets it). Without it at build time every
//! test here is reported as ignored (see build.rs). PostgreSQL is started by the tests.

mod common;

use std::process::Output;
use std::sync::Arc;

use common::fixtures::{count, rows};
use common::mssql::{
    fresh_ms_db, is_babelfish, ms_connect, ms_count, ms_exec, ms_rows, mssql_url, Ms,
};
use tandem::config::{self, Config, Side};
use tandem::sync::Sides;

const DEMO_CONFIG: &str = include_str!("../sql/demo/tandem.toml");
const MS_A_SCHEMA: &str = include_str!("../sql/mssql/demo_a.sql");
const PG_A_SCHEMA: &str = include_str!("../sql/demo/a_legacy.sql");
const PG_B_SCHEMA: &str = include_str!("../sql/demo/b_new.sql");
const MS_B_SCHEMA: &str = include_str!("../sql/mssql/demo_b.sql");

/// Side A's bulk role (backfill, verify), which SQL Server offers.
fn bulk_a(sides: &Sides) -> &dyn tandem::endpoint::Bulk {
    tandem::endpoint::bulk(sides.a.as_ref(), "backfill").expect("SQL Server offers bulk")
}

/// Runs T-SQL on a table of the SQL Server side without capturing it (marked as tandem's own
/// write to `table`, as an apply does): what happened "behind tandem's back".
async fn ms_behind(c: &mut Ms, table: &str, sql: &str) {
    ms_exec(
        c,
        &format!(
            "EXEC sys.sp_set_session_context N'tandem.applying', N'{table}';\n{sql};\nEXEC sys.sp_set_session_context N'tandem.applying', NULL;"
        ),
    )
    .await;
}

/// The same on PostgreSQL.
async fn pg_behind(c: &tokio_postgres::Client, sql: &str) {
    c.batch_execute(&format!(
        "BEGIN; SET LOCAL tandem.applying = 'on'; {sql}; COMMIT;"
    ))
    .await
    .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// One side on SQL Server, the other on PostgreSQL, installed; the binary runs with the same
/// config (URLs through ${TANDEM_A_URL} / ${TANDEM_B_URL}, as users write them).
struct Env {
    ms: Ms,
    pg: tokio_postgres::Client,
    config: Arc<Config>,
    dir: tempfile::TempDir,
    a_url: String,
    b_url: String,
}

impl Env {
    /// SQL Server as A (`ms_is_a`) or as B, with the demo schema.
    async fn new(name: &str, ms_is_a: bool) -> Env {
        Env::with(name, ms_is_a, "", "", "").await
    }

    /// The same with more entities: config text appended, and their tables on each side.
    async fn with(name: &str, ms_is_a: bool, more: &str, ms_more: &str, pg_more: &str) -> Env {
        let ms_url = fresh_ms_db(&mssql_url(), name).await;
        let (pg_a, pg_b) = common::fresh_dbs(&format!("msbv_{name}"));
        let (text, ms_schema, pg_url, pg_schema) = if ms_is_a {
            (
                DEMO_CONFIG.replacen("kind = \"postgres\"", "kind = \"mssql\"", 1),
                MS_A_SCHEMA,
                pg_b,
                PG_B_SCHEMA,
            )
        } else {
            let text = DEMO_CONFIG
                .replace("public.orders", "dbo.orders")
                .replace("public.order_items", "dbo.order_items");
            let at = text.find("[b]").expect("[b]");
            let (head, tail) = text.split_at(at);
            (
                format!(
                    "{head}{}",
                    tail.replacen("kind = \"postgres\"", "kind = \"mssql\"", 1)
                ),
                MS_B_SCHEMA,
                pg_a,
                PG_A_SCHEMA,
            )
        };
        let text = format!("{text}\n{more}");
        let mut ms = ms_connect(&ms_url).await;
        ms_exec(&mut ms, &format!("{ms_schema}\nGO\n{ms_more}")).await;
        let pg = common::connect(&pg_url).await;
        pg.batch_execute(&format!("{pg_schema};\n{pg_more}"))
            .await
            .expect("PostgreSQL schema");
        let (a_url, b_url) = if ms_is_a {
            (ms_url, pg_url)
        } else {
            (pg_url, ms_url)
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tandem.toml");
        std::fs::write(&path, &text).expect("write config");
        let vars = |n: &str| match n {
            "TANDEM_A_URL" => Some(a_url.clone()),
            "TANDEM_B_URL" => Some(b_url.clone()),
            _ => None,
        };
        let config = Arc::new(config::parse(&text, &path, &vars).expect("config"));
        common::install_twice_and_check(&config).await;
        Env {
            ms,
            pg,
            config,
            dir,
            a_url,
            b_url,
        }
    }

    fn sides(&self) -> Sides {
        Sides {
            a: tandem::endpoint::open(self.config.clone(), Side::A).expect("open A"),
            b: tandem::endpoint::open(self.config.clone(), Side::B).expect("open B"),
        }
    }

    /// Runs the tandem binary to completion.
    fn tandem(&self, args: &[&str]) -> Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .arg("--config")
            .arg(self.dir.path().join("tandem.toml"))
            .args(args)
            .env("TANDEM_A_URL", &self.a_url)
            .env("TANDEM_B_URL", &self.b_url)
            .env("RUST_LOG", "tandem=info")
            .output()
            .expect("run tandem")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Rows 1..=n of a generated sequence in T-SQL (no recursion, so no MAXRECURSION).
fn ms_numbers(n: usize) -> String {
    format!(
        "(SELECT a.x * 1000 + b.x * 100 + c.x * 10 + d.x + 1 AS i
          FROM (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS a (x)
          CROSS JOIN (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS b (x)
          CROSS JOIN (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS c (x)
          CROSS JOIN (VALUES (0),(1),(2),(3),(4),(5),(6),(7),(8),(9)) AS d (x)
          WHERE a.x * 1000 + b.x * 100 + c.x * 10 + d.x + 1 <= {n}) AS n"
    )
}

/// SQL Server as A: orders and items equal on both sides, every order linked both ways
/// (NEW_ID at A is B's id, legacy_no at B is A's ORDER_NO), both outboxes empty.
async fn assert_equal_and_linked_ms_a(env: &mut Env) {
    let a = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), ORDER_NO), CONVERT(varchar(20), NEW_ID), CUST_NAME, STATUS, CONVERT(varchar(40), AMOUNT) FROM dbo.ORDERS ORDER BY ORDER_NO",
    )
    .await;
    let b = rows(
        &env.pg,
        "SELECT o.legacy_no::text, o.id::text, o.customer, CASE o.status WHEN 'open' THEN 'O' WHEN 'closed' THEN 'C' ELSE o.status END, o.amount::text FROM orders AS o ORDER BY o.legacy_no",
    )
    .await;
    assert_eq!(a.len(), b.len(), "order counts");
    assert!(a == b, "orders differ:\nA {a:?}\nB {b:?}");
    let ai = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), ORDER_NO), CONVERT(varchar(20), LINE_NO), CONVERT(varchar(20), QTY) FROM dbo.ORDER_ITEMS ORDER BY ORDER_NO, LINE_NO",
    )
    .await;
    let bi = rows(
        &env.pg,
        "SELECT o.legacy_no::text, i.line_no::text, i.quantity::text FROM order_items i JOIN orders o ON o.id = i.order_id ORDER BY o.legacy_no, i.line_no",
    )
    .await;
    assert_eq!(ai.len(), bi.len(), "item counts");
    assert!(ai == bi, "items differ");
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0,
        "outbox at A"
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        0,
        "outbox at B"
    );
    // Every record has one live id pair on each side, and the pairs agree.
    let a_map = ms_rows(
        &mut env.ms,
        "SELECT entity, a_key, b_key FROM tandem.id_map WHERE deleted = 0 ORDER BY entity, a_key",
    )
    .await;
    let b_map = rows(
        &env.pg,
        "SELECT entity, a_key, b_key FROM tandem.id_map WHERE NOT deleted ORDER BY entity, a_key COLLATE \"C\"",
    )
    .await;
    let mut b_sorted = b_map.clone();
    let mut a_sorted = a_map.clone();
    a_sorted.sort();
    b_sorted.sort();
    assert_eq!(a_sorted, b_sorted, "id pairs differ between the sides");
    assert_eq!(a_map.len(), a.len() + ai.len(), "every record linked");
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn backfill_from_sql_server_resumes_keeps_live_changes_and_links() {
    let mut env = Env::new("bf_from_ms", true).await;
    ms_behind(
        &mut env.ms,
        "[dbo].[ORDERS]",
        &format!(
            "SET IDENTITY_INSERT dbo.ORDERS ON;
             INSERT INTO dbo.ORDERS (ORDER_NO, CUST_NAME, AMOUNT) SELECT i, 'old ' + CONVERT(varchar(10), i), i FROM {};
             SET IDENTITY_INSERT dbo.ORDERS OFF",
            ms_numbers(250)
        ),
    )
    .await;
    ms_behind(
        &mut env.ms,
        "[dbo].[ORDER_ITEMS]",
        &format!(
            "INSERT INTO dbo.ORDER_ITEMS (ORDER_NO, LINE_NO, QTY) SELECT n.i, l.x, n.i * 10 + l.x FROM {} CROSS JOIN (VALUES (1), (2)) AS l (x)",
            ms_numbers(250)
        ),
    )
    .await;
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0,
        "nothing captured: the rows exist already"
    );

    // One chunk of the parents, queued in A's outbox with the progress, not applied yet.
    let sides = env.sides();
    assert_eq!(bulk_a(&sides).row_count("order").await.unwrap(), 250);
    let c = bulk_a(&sides).backfill_chunk("order", 100).await.unwrap();
    assert_eq!((c.rows, c.finished), (100, false), "{c:?}");
    let (min, max) = (c.min_seq.unwrap(), c.max_seq.unwrap());
    assert!(max - min + 1 >= 100, "{c:?}");
    let p = bulk_a(&sides).backfill_progress("order").await.unwrap();
    assert_eq!((p.started, p.rows_done, p.finished), (true, 100, false));
    assert_eq!(
        bulk_a(&sides)
            .pending_between(min, max)
            .await
            .unwrap()
            .eligible,
        100
    );
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT last_key FROM tandem.backfill WHERE entity = N'order'"
        )
        .await,
        vec![vec!["[100]".to_string()]]
    );
    // Live changes while the backfill runs: to rows already queued (newer than the queued
    // images) and to rows not queued yet; a delete of a queued row.
    ms_exec(
        &mut env.ms,
        "UPDATE dbo.ORDERS SET CUST_NAME = 'live 5', STATUS = 'C' WHERE ORDER_NO = 5;
         UPDATE dbo.ORDERS SET CUST_NAME = 'live 200' WHERE ORDER_NO = 200;
         DELETE FROM dbo.ORDERS WHERE ORDER_NO = 7;",
    )
    .await;
    drop(sides);

    // The backfill resumes after the saved chunk (parents first, then the items), via the CLI.
    let o = env.tandem(&["backfill", "--entity", "order_item", "--chunk", "70"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: 150 rows copied")
            && text(&o).contains("order_item: 498 rows copied"),
        "resumed after the first 100 orders: {}",
        text(&o)
    );
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        rows(
            &env.pg,
            "SELECT customer, status FROM orders WHERE legacy_no IN (5, 200) ORDER BY legacy_no"
        )
        .await,
        vec![
            vec!["live 5".to_string(), "closed".to_string()],
            vec!["live 200".to_string(), "open".to_string()]
        ],
        "the live changes won over the older backfilled images"
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM orders WHERE legacy_no = 7").await,
        0,
        "a deleted row does not come back"
    );
    assert_equal_and_linked_ms_a(&mut env).await;
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM dbo.ORDERS WHERE NEW_ID IS NULL"
        )
        .await,
        0,
        "NEW_ID filled with B's id"
    );

    // Finished: again copies nothing; --restart copies again and writes nothing at B.
    let o = env.tandem(&["backfill", "--entity", "order"]);
    assert!(text(&o).contains("order: 0 rows copied"), "{}", text(&o));
    let before = rows(
        &env.pg,
        "SELECT count(*), max(xmin::text::bigint) FROM orders",
    )
    .await;
    let o = env.tandem(&["backfill", "--entity", "order", "--restart"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("order: 249 rows copied"), "{}", text(&o));
    assert_eq!(
        rows(
            &env.pg,
            "SELECT count(*), max(xmin::text::bigint) FROM orders"
        )
        .await,
        before,
        "a backfill of equal rows writes nothing"
    );
    let o = env.tandem(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: equal (A 249 rows, B 249 rows)"),
        "{}",
        text(&o)
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn verify_and_repair_with_sql_server_as_a() {
    let mut env = Env::new("verify_ms_a", true).await;
    ms_exec(
        &mut env.ms,
        &format!(
            "SET IDENTITY_INSERT dbo.ORDERS ON;
             INSERT INTO dbo.ORDERS (ORDER_NO, CUST_NAME, AMOUNT) SELECT i, 'c' + CONVERT(varchar(10), i), i FROM {};
             SET IDENTITY_INSERT dbo.ORDERS OFF;
             INSERT INTO dbo.ORDER_ITEMS (ORDER_NO, LINE_NO, QTY) SELECT i, 1, i FROM {};",
            ms_numbers(300),
            ms_numbers(300)
        ),
    )
    .await;
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: equal (A 300 rows, B 300 rows)")
            && text(&o).contains("order_item: equal (A 300 rows, B 300 rows)"),
        "{}",
        text(&o)
    );
    // One notion of equal: B's amount as an unconstrained numeric holding 31 (no scale) is
    // A's decimal(12,2) 31.00.
    pg_behind(
        &env.pg,
        "ALTER TABLE orders ALTER COLUMN amount TYPE numeric; UPDATE orders SET amount = 31 WHERE legacy_no = 31",
    )
    .await;
    // A mapped column retyped: `install` records the table anew, or `order` stays paused
    // (schema drift) and repair's changes would wait.
    tandem::endpoint::open(env.config.clone(), tandem::config::Side::B)
        .expect("open B")
        .install()
        .await
        .expect("install records the retyped table");
    assert_eq!(
        rows(
            &env.pg,
            "SELECT amount::text FROM orders WHERE legacy_no = 31"
        )
        .await,
        vec![vec!["31".to_string()]]
    );
    let o = env.tandem(&["verify", "--entity", "order"]);
    assert_eq!(o.status.code(), Some(0), "31 equals 31.00: {}", text(&o));

    // Sync stopped; then, behind tandem's back: a changed value, a deleted row, an extra row
    // at B, a changed code at A; and one change on its way (not a difference).
    pg_behind(
        &env.pg,
        "UPDATE orders SET customer = 'changed in B' WHERE legacy_no = 10",
    )
    .await;
    pg_behind(&env.pg, "DELETE FROM order_items WHERE quantity = 20").await;
    pg_behind(
        &env.pg,
        "INSERT INTO orders (customer, status) VALUES ('extra in B', 'open')",
    )
    .await;
    ms_behind(
        &mut env.ms,
        "[dbo].[ORDERS]",
        "UPDATE dbo.ORDERS SET STATUS = 'C' WHERE ORDER_NO = 30",
    )
    .await;
    ms_exec(
        &mut env.ms,
        "UPDATE dbo.ORDERS SET CUST_NAME = 'pending' WHERE ORDER_NO = 40",
    )
    .await;

    let o = env.tandem(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let order = &report[0];
    assert_eq!(order["entity"], "order");
    assert_eq!(order["different"], 2, "{order}");
    assert_eq!(order["only_in_b"], 1, "{order}");
    assert_eq!(order["only_in_a"], 0, "{order}");
    assert_eq!(order["in_flight"], 1, "{order}");
    let mut keys: Vec<String> = order["sample_different"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|d| d["a_key"].as_str().unwrap_or_default().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["[10]", "[30]"]);
    assert_eq!(
        order["sample_only_in_b"][0]["b_row"]["customer"],
        "extra in B"
    );
    let d10 = order["sample_different"]
        .as_array()
        .expect("sample")
        .iter()
        .find(|d| d["a_key"] == "[10]")
        .expect("[10]");
    assert_eq!(d10["a_row"]["CUST_NAME"], "c10", "{d10}");
    assert_eq!(d10["b_row"]["customer"], "changed in B", "{d10}");
    // Only the column that differs is listed (AMOUNT decimal(12,2) against numeric compares
    // by value), with both values.
    assert_eq!(
        d10["columns"],
        serde_json::json!([{ "a_column": "CUST_NAME", "b_column": "customer", "a": "\"c10\"", "b": "\"changed in B\"" }]),
        "{d10}"
    );
    let item = &report[1];
    assert_eq!(item["only_in_a"], 1, "{item}");
    assert_eq!(item["sample_only_in_a"][0]["a_key"], "[20,1]");

    let o = env.tandem(&["verify"]);
    let human = text(&o);
    assert!(
        human.contains("order: DIFFERENT")
            && human.contains("[10]")
            && human.contains("extra in B"),
        "{human}"
    );

    // Repair from A (SQL Server), apply, verify again.
    let o = env.tandem(&["verify", "--repair"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "it reports what it found: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("queued for re-sync from side A"),
        "{}",
        text(&o)
    );
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        count(
            &env.pg,
            "SELECT count(*) FROM orders WHERE customer = 'extra in B'"
        )
        .await,
        0
    );
    assert_eq!(
        rows(&env.pg, "SELECT customer, status FROM orders WHERE legacy_no IN (10, 30, 40) ORDER BY legacy_no").await,
        vec![
            vec!["c10".to_string(), "open".to_string()],
            vec!["c30".to_string(), "closed".to_string()],
            vec!["pending".to_string(), "open".to_string()],
        ]
    );
    pg_behind(&env.pg, "UPDATE orders SET amount = amount::numeric(12,2)").await;
    assert_equal_and_linked_ms_a(&mut env).await;
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn backfill_into_sql_server_as_b_then_verify_and_repair() {
    let mut env = Env::new("bf_into_ms", false).await;
    pg_behind(
        &env.pg,
        r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT") SELECT g, 'old ' || g, g FROM generate_series(1, 300) g;
           INSERT INTO dbo."ORDER_ITEMS" SELECT g, l, l FROM generate_series(1, 300) g, generate_series(1, 2) l"#,
    )
    .await;
    let o = env.tandem(&["backfill", "--entity", "order_item", "--chunk", "128"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: 300 rows copied")
            && text(&o).contains("order_item: 600 rows copied"),
        "{}",
        text(&o)
    );
    let a = rows(
        &env.pg,
        r#"SELECT o."ORDER_NO"::text, o."NEW_ID"::text, o."CUST_NAME", o."AMOUNT"::text FROM dbo."ORDERS" AS o ORDER BY o."ORDER_NO""#,
    )
    .await;
    let b = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), legacy_no), CONVERT(varchar(20), id), customer, CONVERT(varchar(40), amount) FROM dbo.orders ORDER BY legacy_no",
    )
    .await;
    assert_eq!(a.len(), 300);
    assert!(
        a == b,
        "orders differ or are not linked:\nA {:?}\nB {:?}",
        &a[..3],
        &b[..3.min(b.len())]
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM dbo.order_items").await,
        600
    );
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM tandem.id_map WHERE deleted = 0"
        )
        .await,
        900
    );
    assert_eq!(
        count(
            &env.pg,
            "SELECT count(*) FROM tandem.id_map WHERE NOT deleted"
        )
        .await,
        900
    );
    for o in [
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
    ] {
        assert_eq!(o, 0, "outboxes empty");
    }
    let o = env.tandem(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order_item: equal (A 600 rows, B 600 rows)"),
        "{}",
        text(&o)
    );

    // Behind tandem's back at B (SQL Server): a changed value, a changed code, an extra
    // record, a deleted item.
    ms_behind(
        &mut env.ms,
        "[dbo].[orders]",
        "UPDATE dbo.orders SET customer = N'changed in B' WHERE legacy_no = 7;
         UPDATE dbo.orders SET status = N'closed' WHERE legacy_no = 8;
         INSERT INTO dbo.orders (customer, status) VALUES (N'extra in B', N'open')",
    )
    .await;
    ms_behind(
        &mut env.ms,
        "[dbo].[order_items]",
        "DELETE i FROM dbo.order_items AS i JOIN dbo.orders AS o ON o.id = i.order_id WHERE o.legacy_no = 9 AND i.line_no = 2",
    )
    .await;
    let o = env.tandem(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let order = &report[0];
    assert_eq!(
        (
            &order["different"],
            &order["only_in_b"],
            &order["only_in_a"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(0)
        ),
        "{order}"
    );
    let mut keys: Vec<String> = order["sample_different"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|d| d["a_key"].as_str().unwrap_or_default().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["[7]", "[8]"]);
    assert_eq!(
        order["sample_only_in_b"][0]["b_row"]["customer"], "extra in B",
        "{order}"
    );
    assert_eq!(report[1]["only_in_a"], 1, "{}", report[1]);
    assert_eq!(report[1]["sample_only_in_a"][0]["a_key"], "[9,2]");

    // Repair from A: B's extra record is deleted at B (SQL Server), the rest re-sent.
    let o = env.tandem(&["verify", "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM dbo.orders WHERE customer = N'extra in B'"
        )
        .await,
        0
    );
    let b = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), legacy_no), CONVERT(varchar(20), id), customer, CONVERT(varchar(40), amount) FROM dbo.orders ORDER BY legacy_no",
    )
    .await;
    assert!(a == b, "orders differ after repair");
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT status FROM dbo.orders WHERE legacy_no = 8"
        )
        .await,
        vec![vec!["open".to_string()]]
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM dbo.order_items").await,
        600
    );
    for o in [
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
    ] {
        assert_eq!(o, 0, "outboxes empty");
    }
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn backfill_links_records_present_on_both_sides_by_a_given_key() {
    let mut env = Env::with(
        "bf_given",
        true,
        r#"
[[entities]]
name = "country"
a = { table = "dbo.COUNTRY", key = ["CODE"] }
b = { table = "public.countries", key = ["code"] }
columns = [
  { a = "CODE", b = "code" },
  { a = "NAME", b = "name" },
  { a = "POP", b = "population" },
]
"#,
        "CREATE TABLE dbo.COUNTRY (CODE int NOT NULL PRIMARY KEY, NAME nvarchar(60) NOT NULL, POP bigint NULL);",
        "CREATE TABLE public.countries (code integer PRIMARY KEY, name text NOT NULL, population bigint);",
    )
    .await;
    ms_behind(
        &mut env.ms,
        "[dbo].[COUNTRY]",
        "INSERT INTO dbo.COUNTRY (CODE, NAME, POP) VALUES (40, N'Österreich', 9100000), (56, N'Belgique', NULL),
            (756, N'Schweiz', 8900000), (276, N'Deutschland', 84000000), (250, N'France', 68000000),
            (380, N'Italia', 59000000), (528, N'Nederland', 17900000)",
    )
    .await;
    // B has some of them already: one equal, one with another name, and one A never had.
    pg_behind(
        &env.pg,
        "INSERT INTO countries VALUES (276, 'Deutschland', 84000000), (250, 'Frankreich', 68000000), (999, 'Nowhere', 0)",
    )
    .await;
    let o = env.tandem(&["backfill", "--entity", "country", "--chunk", "3"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("country: 7 rows copied"), "{}", text(&o));
    assert_eq!(
        rows(&env.pg, "SELECT c.code::text, c.name, coalesce(c.population::text, 'NULL') FROM countries AS c ORDER BY c.code").await,
        common::fixtures::table(&[
            &["40", "Österreich", "9100000"],
            &["56", "Belgique", "NULL"],
            &["250", "France", "68000000"],
            &["276", "Deutschland", "84000000"],
            &["380", "Italia", "59000000"],
            &["528", "Nederland", "17900000"],
            &["756", "Schweiz", "8900000"],
            &["999", "Nowhere", "0"],
        ]),
        "linked, not duplicated; A's values where they differed; B's own record untouched"
    );
    let links = "SELECT a_key, b_key FROM tandem.id_map WHERE entity = 'country' AND deleted = 0 ORDER BY a_key";
    let a_links = ms_rows(&mut env.ms, &links.replace("'country'", "N'country'")).await;
    let b_links = rows(&env.pg, &links.replace("deleted = 0", "NOT deleted")).await;
    assert_eq!(a_links.len(), 7, "{a_links:?}");
    assert_eq!(a_links, b_links);
    assert!(
        a_links.contains(&vec!["[276]".to_string(), "[276]".to_string()]),
        "{a_links:?}"
    );
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT last_key, CONVERT(varchar(20), rows_done), CASE WHEN finished_at IS NULL THEN 'no' ELSE 'yes' END FROM tandem.backfill"
        )
        .await,
        common::fixtures::table(&[&["[756]", "7", "yes"]]),
        "progress saved in A's database"
    );
    for o in [
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
    ] {
        assert_eq!(o, 0, "outboxes empty");
    }
    // Verify names B's own record by its key; repair from A removes it at B.
    let o = env.tandem(&["verify", "--entity", "country", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(
        (
            &report[0]["only_in_b"],
            &report[0]["only_in_a"],
            &report[0]["different"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{report}"
    );
    assert_eq!(report[0]["sample_only_in_b"][0]["b_key"], "[999]");
    // (A text key would do the same on SQL Server; on Babelfish, text keys do not survive the
    // write-back's OPENJSON, which returns JSON strings still escaped: see README.)
    let o = env.tandem(&["verify", "--entity", "country", "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = env.tandem(&["verify", "--entity", "country"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&env.pg, "SELECT count(*) FROM countries").await, 7);
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn verify_compares_values_across_types_as_apply_does() {
    let mut env = Env::with(
        "verify_types",
        true,
        r#"
[[entities]]
name = "event"
a = { table = "dbo.EVENTS", key = ["ID"] }
b = { table = "public.events", key = ["id"] }
columns = [
  { a = "ID", b = "id" },
  { a = "AT", b = "at" },
  { a = "ATZ", b = "atz" },
  { a = "AMOUNT", b = "amount" },
  { a = "FLAG", b = "flag" },
  { a = "NAME", b = "name" },
  { a = "G", b = "g" },
  { a = "TOD", b = "tod" },
]
"#,
        "CREATE TABLE dbo.EVENTS (ID int NOT NULL PRIMARY KEY, AT datetime2(7) NULL, ATZ datetimeoffset(7) NULL,
            AMOUNT decimal(10,2) NULL, FLAG bit NULL, NAME nvarchar(40) NULL, G uniqueidentifier NULL, TOD time(7) NULL);",
        "CREATE TABLE public.events (id integer PRIMARY KEY, at timestamp, atz timestamptz, amount numeric,
            flag boolean, name text, g uuid, tod time);",
    )
    .await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.EVENTS VALUES
            (1, '2024-02-29T23:59:59.123456', '2024-02-29T23:59:59.5+05:30', 31.00, 1, N'Zoë', '6F9619FF-8B86-D011-B42D-00C04FC964FF', '10:11:12.5'),
            (2, '2024-01-01T00:00:00', '2024-01-01T00:00:00+00:00', 0.50, 0, N'', NULL, '00:00:00'),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .await;
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem(&["verify", "--entity", "event"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Equal values written differently at B: 31 for 31.00, 0.5 for 0.50, the same instant in
    // another zone. Still equal.
    pg_behind(
        &env.pg,
        "UPDATE events SET amount = 31 WHERE id = 1;
         UPDATE events SET amount = 0.5000, atz = '2023-12-31T19:00:00-05:00' WHERE id = 2",
    )
    .await;
    assert_eq!(
        rows(
            &env.pg,
            "SELECT amount::text FROM events WHERE id IN (1, 2) ORDER BY id"
        )
        .await,
        common::fixtures::table(&[&["31"], &["0.5000"]])
    );
    let o = env.tandem(&["verify", "--entity", "event"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "equal values of other types: {}",
        text(&o)
    );
    // A microsecond, a case, NULL against '': differences, each named by its key.
    pg_behind(
        &env.pg,
        "UPDATE events SET at = at + interval '1 microsecond' WHERE id = 1;
         UPDATE events SET name = NULL WHERE id = 2;
         UPDATE events SET g = '6f9619ff-8b86-d011-b42d-00c04fc964fe' WHERE id = 3",
    )
    .await;
    let o = env.tandem(&["verify", "--entity", "event", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    let mut keys: Vec<String> = report[0]["sample_different"]
        .as_array()
        .expect("sample")
        .iter()
        .map(|d| d["a_key"].as_str().unwrap_or_default().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, vec!["[1]", "[2]", "[3]"], "{report}");
    let o = env.tandem(&["verify", "--entity", "event", "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = env.tandem(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem(&["verify", "--entity", "event"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        rows(
            &env.pg,
            "SELECT e.id::text, coalesce(e.name, 'NULL'), coalesce(e.g::text, 'NULL'), to_char(e.at, 'YYYY-MM-DD HH24:MI:SS.US') FROM events AS e ORDER BY e.id"
        )
        .await[..2],
        common::fixtures::table(&[
            &["1", "Zoë", "6f9619ff-8b86-d011-b42d-00c04fc964ff", "2024-02-29 23:59:59.123456"],
            &["2", "", "NULL", "2024-01-01 00:00:00.000000"],
        ])[..]
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn backfill_pages_through_a_text_key_and_verify_agrees() {
    let mut env = Env::with(
        "bf_text_key",
        true,
        r#"
[[entities]]
name = "tag"
a = { table = "dbo.TAGS", key = ["CODE"] }
b = { table = "public.tags", key = ["code"] }
columns = [
  { a = "CODE", b = "code" },
  { a = "LABEL", b = "label" },
]
"#,
        "CREATE TABLE dbo.TAGS (CODE nvarchar(20) NOT NULL PRIMARY KEY, LABEL nvarchar(40) NULL);",
        "CREATE TABLE public.tags (code text PRIMARY KEY, label text);",
    )
    .await;
    ms_behind(
        &mut env.ms,
        "[dbo].[TAGS]",
        "INSERT INTO dbo.TAGS (CODE, LABEL) VALUES (N'a', N'1'), (N'B', N'2'), (N'b/c', N'3'), (N'Zoë', N'4'),
            (N'quote\"d', N'5'), (N'x y', NULL), (N'back\\slash', N'7')",
    )
    .await;
    // Keyset pagination through text keys, escapes included: every row queued once.
    let sides = env.sides();
    let mut chunks = 0;
    while !bulk_a(&sides)
        .backfill_chunk("tag", 2)
        .await
        .expect("chunk")
        .finished
    {
        chunks += 1;
        assert!(chunks < 10, "the backfill does not end");
    }
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(DISTINCT JSON_VALUE([key], '$.k1')) FROM tandem.outbox"
        )
        .await,
        7
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        7
    );
    if is_babelfish(&mut env.ms).await {
        println!(
            "babelfish: skipped applying and verifying text keys because Babelfish's OPENJSON returns JSON strings still escaped, which breaks the write-back of a text key there (see README)"
        );
        return;
    }
    bulk_a(&sides).backfill_reset("tag").await.expect("reset");
    ms_exec(&mut env.ms, "DELETE FROM tandem.outbox").await;
    let o = env.tandem(&["backfill", "--entity", "tag", "--chunk", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("tag: 7 rows copied"), "{}", text(&o));
    assert_eq!(count(&env.pg, "SELECT count(*) FROM tags").await, 7);
    let o = env.tandem(&["verify", "--entity", "tag"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    pg_behind(
        &env.pg,
        "UPDATE tags SET label = 'changed' WHERE code = 'b/c'",
    )
    .await;
    let o = env.tandem(&["verify", "--entity", "tag", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json report");
    assert_eq!(report[0]["sample_different"][0]["a_key"], r#"["b/c"]"#);
}
