//! Core sync between a real SQL Server and a real PostgreSQL, both directions: the scenarios
//! of `core_sync.rs` with side A on SQL Server (and one with side B on SQL Server), with the
//! same assertions.
//!
//! These need a SQL Server or Babelfish: set TANDEM_TEST_MSSQL_URL to an ADO.NET connection
//! string of a login that may create databases, e.g.
//! `server=tcp:localhost,1433;user=sa;password=...;TrustServerCertificate=true`
//! (`deploy/test.sh` starts Babelfish from `../shared/babelfish` and sets it;
//! `deploy/mssql/docker-compose.yml` runs them against SQL Server 2022). Without it, every test
//! here is reported as ignored (see build.rs). On Babelfish, the steps it cannot run are
//! skipped one by one, each printing `babelfish: skipped …` and why. PostgreSQL is started by
//! the tests themselves, as everywhere else.

mod common;

use std::sync::Arc;

use common::fixtures::{count, rows, table};
use common::mssql::{
    fresh_ms_db, is_babelfish, ms_connect, ms_count, ms_exec, ms_rows, mssql_url, Ms,
};
use tandem::config::{self, Config, Side};
use tandem::endpoint::mssql::ado;
use tandem::sync::{self, BatchReport, Sides};

const DEMO_CONFIG: &str = include_str!("../sql/demo/tandem.toml");
const A_SCHEMA: &str = include_str!("../sql/mssql/demo_a.sql");
const B_SCHEMA: &str = include_str!("../sql/demo/b_new.sql");

/// Side A on SQL Server (or B, with `b_on_mssql`), the other on PostgreSQL, installed.
struct Env {
    ms: Ms,
    pg: tokio_postgres::Client,
    config: Arc<Config>,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new(ms_url: &str, name: &str) -> Env {
        let a_url = fresh_ms_db(ms_url, name).await;
        let (_, b_url) = common::fresh_dbs(&format!("ms_{name}"));
        let text = DEMO_CONFIG.replacen("kind = \"postgres\"", "kind = \"mssql\"", 1);
        Env::on(a_url, b_url, &text, A_SCHEMA, B_SCHEMA, true).await
    }

    async fn on(
        ms_url: String,
        pg_url: String,
        config_text: &str,
        ms_schema: &str,
        pg_schema: &str,
        ms_is_a: bool,
    ) -> Env {
        let mut ms = ms_connect(&ms_url).await;
        ms_exec(&mut ms, ms_schema).await;
        let pg = common::connect(&pg_url).await;
        pg.batch_execute(pg_schema)
            .await
            .expect("PostgreSQL schema");
        let (a_url, b_url) = if ms_is_a {
            (ms_url, pg_url)
        } else {
            (pg_url, ms_url)
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tandem.toml");
        // The ADO.NET string may hold '"': keep it out of the TOML text, as users do (${ENV}).
        std::fs::write(&path, config_text).expect("write config");
        let env = |n: &str| match n {
            "TANDEM_A_URL" => Some(a_url.clone()),
            "TANDEM_B_URL" => Some(b_url.clone()),
            _ => None,
        };
        let text = std::fs::read_to_string(&path).expect("read config");
        let config = Arc::new(config::parse(&text, &path, &env).expect("config"));
        for side in [Side::A, Side::B] {
            let ep = tandem::endpoint::open(config.clone(), side).expect("open");
            ep.install().await.expect("install");
            // Installing twice is harmless.
            ep.install().await.expect("install again");
            let problems = ep.check().await.expect("check");
            assert!(problems.is_empty(), "side {side}: {problems:?}");
        }
        Env {
            ms,
            pg,
            config,
            _dir: dir,
        }
    }

    fn sides(&self) -> Sides {
        Sides {
            a: tandem::endpoint::open(self.config.clone(), Side::A).expect("open A"),
            b: tandem::endpoint::open(self.config.clone(), Side::B).expect("open B"),
        }
    }

    async fn drain(&self) -> BatchReport {
        sync::drain(&self.config, &self.sides())
            .await
            .expect("drain")
    }
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn capture_is_transactional_full_image_and_ordered() {
    let url = mssql_url();
    let mut env = Env::new(&url, "capture").await;
    ms_exec(
        &mut env.ms,
        "BEGIN TRAN; INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('ghost'); ROLLBACK;",
    )
    .await;
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );
    ms_exec(
        &mut env.ms,
        "BEGIN TRAN;
         INSERT INTO dbo.ORDERS (CUST_NAME, AMOUNT, REMARK) VALUES ('Ada', 10.50, 'x');
         UPDATE dbo.ORDERS SET STATUS = 'C' WHERE CUST_NAME = 'Ada';
         COMMIT;",
    )
    .await;
    let got = ms_rows(
        &mut env.ms,
        "SELECT op, JSON_VALUE(image, '$.CUST_NAME'), JSON_VALUE(image, '$.STATUS'),
                JSON_VALUE(image, '$.AMOUNT'),
                CASE WHEN image LIKE '%REMARK%' OR image LIKE '%ROW_VER%' THEN 't' ELSE 'f' END
         FROM tandem.outbox ORDER BY seq",
    )
    .await;
    assert_eq!(
        got,
        table(&[
            &["I", "Ada", "O", "10.50", "f"],
            &["U", "Ada", "C", "10.50", "f"]
        ]),
        "full images of the mapped columns (unmapped ones are not read), exact numeric scale"
    );
    // A column tandem does not synchronise changes nothing worth capturing.
    ms_exec(&mut env.ms, "UPDATE dbo.ORDERS SET REMARK = 'y'").await;
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        2
    );
    // An update that changes nothing is not captured.
    ms_exec(&mut env.ms, "UPDATE dbo.ORDERS SET STATUS = STATUS").await;
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        2
    );
    // A multi-row statement is captured row by row, in one trigger run.
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('m1'), ('m2'), ('m3')",
    )
    .await;
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        5
    );
    // A mapped NULL stays a member with value null, apart from '' and from absence.
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM tandem.outbox WHERE image LIKE '%\"AMOUNT\":null%' OR image LIKE '%\"AMOUNT\": null%'"
        )
        .await,
        3
    );
    // The claimed images are canonical (what PostgreSQL emits).
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (4, 0), "{r:?}");
    assert_eq!(
        rows(
            &env.pg,
            "SELECT customer, status, amount::text FROM orders ORDER BY id"
        )
        .await[0],
        vec!["Ada", "closed", "10.50"]
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn inserts_updates_deletes_flow_both_ways_mapped_and_linked() {
    let url = mssql_url();
    let mut env = Env::new(&url, "both_ways").await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME, STATUS, AMOUNT) VALUES ('Ada', 'O', 12.30)",
    )
    .await;
    env.pg
        .batch_execute("INSERT INTO orders (customer, status, amount) VALUES ('Bob', 'closed', 7)")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed, r.suspended), (2, 0, 0), "{r:?}");
    let a = ms_rows(
        &mut env.ms,
        "SELECT ORDER_NO, CUST_NAME, STATUS, CONVERT(varchar(40), AMOUNT), NEW_ID FROM dbo.ORDERS ORDER BY CUST_NAME",
    )
    .await;
    let b = rows(
        &env.pg,
        "SELECT id, customer, status, amount, legacy_no FROM orders ORDER BY customer",
    )
    .await;
    assert_eq!((a.len(), b.len()), (2, 2));
    let (a_ada, a_bob, b_ada, b_bob) = (&a[0], &a[1], &b[0], &b[1]);
    assert_eq!(&b_ada[1..4], &["Ada", "open", "12.30"]);
    assert_eq!(&a_bob[1..4], &["Bob", "C", "7.00"]);
    assert_eq!(a_ada[4], b_ada[0], "A's NEW_ID holds B's id");
    assert_eq!(b_ada[4], a_ada[0], "B's legacy_no holds A's ORDER_NO");
    assert_eq!(a_bob[4], b_bob[0]);
    assert_eq!(b_bob[4], a_bob[0]);
    let mut want = vec![
        vec![
            format!("[{}]", a_ada[0]),
            format!("[{}]", b_ada[0]),
            "f".to_string(),
        ],
        vec![
            format!("[{}]", a_bob[0]),
            format!("[{}]", b_bob[0]),
            "f".to_string(),
        ],
    ];
    want.sort();
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT a_key, b_key, deleted FROM tandem.id_map WHERE entity = 'order' ORDER BY a_key"
        )
        .await,
        want
    );
    assert_eq!(
        rows(
            &env.pg,
            "SELECT a_key, b_key, deleted FROM tandem.id_map WHERE entity = 'order' ORDER BY a_key"
        )
        .await,
        want
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        0
    );

    ms_exec(
        &mut env.ms,
        "UPDATE dbo.ORDERS SET STATUS = 'X', AMOUNT = NULL WHERE CUST_NAME = 'Ada'",
    )
    .await;
    env.pg
        .batch_execute("UPDATE orders SET customer = 'Bobby' WHERE customer = 'Bob'")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        rows(
            &env.pg,
            "SELECT customer, status, amount FROM orders ORDER BY customer"
        )
        .await,
        table(&[&["Ada", "cancelled", "NULL"], &["Bobby", "closed", "7.00"]])
    );
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT CUST_NAME, STATUS FROM dbo.ORDERS ORDER BY ORDER_NO"
        )
        .await,
        table(&[&["Ada", "X"], &["Bobby", "C"]])
    );

    ms_exec(
        &mut env.ms,
        "DELETE FROM dbo.ORDERS WHERE CUST_NAME = 'Ada'",
    )
    .await;
    env.pg
        .batch_execute("DELETE FROM orders WHERE customer = 'Bobby'")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM dbo.ORDERS").await,
        0
    );
    assert_eq!(count(&env.pg, "SELECT count(*) FROM orders").await, 0);
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM tandem.id_map WHERE deleted = 0"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &env.pg,
            "SELECT count(*) FROM tandem.id_map WHERE NOT deleted"
        )
        .await,
        0
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        0
    );
}

/// Re-queues a copy of an outbox row already applied (same seq): a redelivery after a crash
/// between the commit at the target and the write-back at the source.
async fn requeue(env: &mut Env, seq: &str, op: &str, key: &str, image: &str) {
    let sql = format!(
        "SET IDENTITY_INSERT tandem.outbox ON;
         INSERT INTO tandem.outbox (seq, entity, op, [key], key_prefix, image)
         VALUES ({seq}, N'order', '{op}', N'{k}', LEFT(N'{k}', 400), N'{i}');
         SET IDENTITY_INSERT tandem.outbox OFF;",
        k = key.replace('\'', "''"),
        i = image.replace('\'', "''"),
    );
    ms_exec(&mut env.ms, &sql).await;
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn duplicates_and_older_images_change_nothing() {
    let url = mssql_url();
    let mut env = Env::new(&url, "guard").await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME, AMOUNT) VALUES ('v1', 1)",
    )
    .await;
    let first = ms_rows(&mut env.ms, "SELECT seq, [key], image FROM tandem.outbox").await;
    env.drain().await;
    ms_exec(
        &mut env.ms,
        "UPDATE dbo.ORDERS SET CUST_NAME = 'v2', AMOUNT = 2",
    )
    .await;
    let second = ms_rows(&mut env.ms, "SELECT seq, [key], image FROM tandem.outbox").await;
    env.drain().await;
    let before = rows(&env.pg, "SELECT xmin::text, customer, amount FROM orders").await;
    assert_eq!(&before[0][1..], &["v2", "2.00"]);

    requeue(&mut env, &second[0][0], "U", &second[0][1], &second[0][2]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "duplicate: {r:?}");
    requeue(&mut env, &first[0][0], "I", &first[0][1], &first[0][2]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "older image: {r:?}");
    assert_eq!(
        rows(&env.pg, "SELECT xmin::text, customer, amount FROM orders").await,
        before,
        "B untouched (not even rewritten)"
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );

    // The same guard at SQL Server: a change from B applied twice leaves A's row as it was
    // (ROW_VER would change with any write).
    env.pg
        .batch_execute("UPDATE orders SET customer = 'v3'")
        .await
        .unwrap();
    let b_change = rows(
        &env.pg,
        "SELECT seq, op::text, image::text, key::text FROM tandem.outbox",
    )
    .await;
    env.drain().await;
    let a_before = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), CONVERT(bigint, ROW_VER)), CUST_NAME FROM dbo.ORDERS",
    )
    .await;
    assert_eq!(a_before[0][1], "v3");
    env.pg
        .execute(
            "INSERT INTO tandem.outbox (seq, entity, op, key, image) OVERRIDING SYSTEM VALUE \
             VALUES ($1::text::bigint, 'order', $2::text::\"char\", $4::text::jsonb, $3::text::jsonb)",
            &[&b_change[0][0], &b_change[0][1], &b_change[0][2], &b_change[0][3]],
        )
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "duplicate at A: {r:?}");
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT CONVERT(varchar(20), CONVERT(bigint, ROW_VER)), CUST_NAME FROM dbo.ORDERS"
        )
        .await,
        a_before
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn a_late_update_never_revives_a_deleted_record() {
    let url = mssql_url();
    let mut env = Env::new(&url, "tombstone").await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('gone soon')",
    )
    .await;
    env.drain().await;
    ms_exec(&mut env.ms, "UPDATE dbo.ORDERS SET CUST_NAME = 'late'").await;
    let update = ms_rows(&mut env.ms, "SELECT seq, [key], image FROM tandem.outbox").await;
    ms_exec(
        &mut env.ms,
        "DELETE FROM tandem.outbox; DELETE FROM dbo.ORDERS;",
    )
    .await;
    let r = env.drain().await;
    assert_eq!(r.written, 1);
    assert_eq!(count(&env.pg, "SELECT count(*) FROM orders").await, 0);
    requeue(&mut env, &update[0][0], "U", &update[0][1], &update[0][2]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "{r:?}");
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM orders").await,
        0,
        "not revived"
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.id_map WHERE deleted").await,
        1,
        "the tombstone stays"
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn an_apply_that_changes_nothing_writes_nothing() {
    let url = mssql_url();
    let mut env = Env::new(&url, "no_echo").await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('same')",
    )
    .await;
    env.drain().await;
    let before = rows(&env.pg, "SELECT xmin::text FROM orders").await;
    // A column tandem does not map is not even captured.
    ms_exec(&mut env.ms, "UPDATE dbo.ORDERS SET REMARK = N'only in A'").await;
    let r = env.drain().await;
    assert_eq!((r.claimed, r.written), (0, 0), "{r:?}");
    // A mapped column changed and changed back: captured, and B's row is not rewritten.
    ms_exec(
        &mut env.ms,
        "BEGIN TRAN; UPDATE dbo.ORDERS SET CUST_NAME = 'other'; UPDATE dbo.ORDERS SET CUST_NAME = 'same'; COMMIT;",
    )
    .await;
    let r = env.drain().await;
    assert_eq!(r.written, 0, "{r:?}");
    assert!(r.unchanged >= 1, "{r:?}");
    assert_eq!(rows(&env.pg, "SELECT xmin::text FROM orders").await, before);
    // And at SQL Server: B changes a column A does not map; A's row is not rewritten.
    let a_before = ms_rows(
        &mut env.ms,
        "SELECT CONVERT(varchar(20), CONVERT(bigint, ROW_VER)) FROM dbo.ORDERS",
    )
    .await;
    env.pg
        .batch_execute("UPDATE orders SET created_at = created_at - interval '1 day'")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.unchanged, r.written), (1, 0), "{r:?}");
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT CONVERT(varchar(20), CONVERT(bigint, ROW_VER)) FROM dbo.ORDERS"
        )
        .await,
        a_before
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        0
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn children_follow_their_parents_both_ways_with_given_and_generated_keys() {
    let url = mssql_url();
    let mut env = Env::new(&url, "children").await;
    ms_exec(
        &mut env.ms,
        "BEGIN TRAN;
         SET IDENTITY_INSERT dbo.ORDERS ON;
         INSERT INTO dbo.ORDERS (ORDER_NO, CUST_NAME) VALUES (500, 'P');
         SET IDENTITY_INSERT dbo.ORDERS OFF;
         INSERT INTO dbo.ORDER_ITEMS VALUES (500, 1, 3), (500, 2, 4);
         COMMIT;",
    )
    .await;
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (3, 0), "{r:?}");
    let b_order = count(&env.pg, "SELECT id FROM orders").await;
    assert_eq!(
        rows(
            &env.pg,
            "SELECT order_id, line_no, quantity FROM order_items ORDER BY line_no"
        )
        .await,
        table(&[
            &[&b_order.to_string(), "1", "3"],
            &[&b_order.to_string(), "2", "4"]
        ])
    );
    env.pg
        .execute(
            "INSERT INTO order_items (order_id, line_no, quantity) VALUES ($1, 3, 9)",
            &[&b_order],
        )
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 0), "{r:?}");
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT ORDER_NO, LINE_NO, QTY FROM dbo.ORDER_ITEMS ORDER BY LINE_NO"
        )
        .await,
        table(&[&["500", "1", "3"], &["500", "2", "4"], &["500", "3", "9"]])
    );
    assert_eq!(
        ms_count(
            &mut env.ms,
            "SELECT COUNT_BIG(*) FROM tandem.id_map WHERE entity = 'order_item' AND a_key = '[500,3]'"
        )
        .await,
        1
    );
    // Deleting the parent at B cascades there; A ends the same (its own cascade is captured
    // and settles as nothing to do), nothing pending.
    env.pg.batch_execute("DELETE FROM orders").await.unwrap();
    let r = env.drain().await;
    assert_eq!((r.failed, r.suspended), (0, 0), "{r:?}");
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM dbo.ORDER_ITEMS").await,
        0
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM dbo.ORDERS").await,
        0
    );
    assert_eq!(
        ms_count(&mut env.ms, "SELECT COUNT_BIG(*) FROM tandem.outbox").await,
        0
    );
    assert_eq!(
        count(&env.pg, "SELECT count(*) FROM tandem.outbox").await,
        0
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn a_key_change_travels_as_delete_and_insert() {
    let url = mssql_url();
    let mut env = Env::new(&url, "key_change").await;
    // ORDER_NO is an IDENTITY (not updatable): the key change is on the items' key.
    ms_exec(
        &mut env.ms,
        "SET IDENTITY_INSERT dbo.ORDERS ON;
         INSERT INTO dbo.ORDERS (ORDER_NO, CUST_NAME) VALUES (7, 'K');
         SET IDENTITY_INSERT dbo.ORDERS OFF;
         INSERT INTO dbo.ORDER_ITEMS VALUES (7, 1, 5);",
    )
    .await;
    env.drain().await;
    ms_exec(&mut env.ms, "UPDATE dbo.ORDER_ITEMS SET LINE_NO = 8").await;
    assert_eq!(
        ms_rows(&mut env.ms, "SELECT op FROM tandem.outbox ORDER BY seq").await,
        table(&[&["D"], &["I"]])
    );
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        rows(&env.pg, "SELECT line_no, quantity FROM order_items").await,
        table(&[&["8", "5"]])
    );
    assert_eq!(
        rows(
            &env.pg,
            "SELECT a_key, deleted FROM tandem.id_map WHERE entity = 'order_item' ORDER BY a_key"
        )
        .await,
        table(&[&["[7,1]", "t"], &["[7,8]", "f"]])
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn claiming_neither_waits_for_nor_skips_an_open_writer() {
    let url = mssql_url();
    let mut env = Env::new(&url, "readpast").await;
    ms_exec(
        &mut env.ms,
        "INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('committed')",
    )
    .await;
    // A second session keeps a captured insert uncommitted while tandem claims.
    let a_url = ado::with_database(&url, &ms_rows(&mut env.ms, "SELECT DB_NAME()").await[0][0])
        .expect("url");
    let mut writer = ms_connect(&a_url).await;
    ms_exec(
        &mut writer,
        "BEGIN TRAN; INSERT INTO dbo.ORDERS (CUST_NAME) VALUES ('open');",
    )
    .await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), env.drain())
        .await
        .expect("claiming must not wait for the open transaction");
    assert_eq!(r.written, 1, "{r:?}");
    ms_exec(&mut writer, "COMMIT;").await;
    let r = env.drain().await;
    assert_eq!(
        r.written, 1,
        "the row committed later is not skipped: {r:?}"
    );
    assert_eq!(
        rows(&env.pg, "SELECT customer FROM orders ORDER BY id").await,
        table(&[&["committed"], &["open"]])
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn a_value_that_does_not_fit_fails_alone_and_names_its_column() {
    let url = mssql_url();
    let mut env = Env::new(&url, "too_long").await;
    env.pg
        .batch_execute(&format!(
            "INSERT INTO orders (customer, status) VALUES ('{}', 'open'), ('fine', 'open')",
            "x".repeat(61)
        ))
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 1), "{r:?}");
    let err = rows(&env.pg, "SELECT last_error FROM tandem.outbox").await;
    assert!(err[0][0].contains("column CUST_NAME"), "{err:?}");
    assert!(err[0][0].contains("entity order"), "{err:?}");
    assert_eq!(
        ms_rows(&mut env.ms, "SELECT CUST_NAME FROM dbo.ORDERS").await,
        table(&[&["fine"]])
    );
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn values_survive_postgres_to_sql_server_and_back_exactly() {
    let url = mssql_url();
    let ms_url = fresh_ms_db(&url, "types").await;
    let (_, pg_url) = common::fresh_dbs("ms_types");
    // Babelfish's OPENJSON returns strings still JSON-escaped ("double" as \"double\"), cuts
    // strings at 4,000 characters, and its FOR JSON refuses binary: those values are left
    // out there (SQL Server runs them all).
    let babelfish = is_babelfish(&mut ms_connect(&url).await).await;
    let (txt, big) = if babelfish {
        println!(
            "babelfish: skipped the values with '\"', '\\', tab or newline, the 1 MiB string, a \
             NULL money and the varbinary column (Babelfish's OPENJSON keeps JSON escapes, cuts strings at 4,000 \
             characters; its FOR JSON refuses binary and crashes on a NULL money)"
        );
        ("E'héllo ✓ 世界 \\'quoted\\' a/b'", "repeat('x', 3000)")
    } else {
        (
            "E'héllo ✓ 世界 \\'quoted\\' \"double\" back\\\\slash a/b tab\\t newline\\n'",
            "repeat('x', 1048576)",
        )
    };
    // Babelfish's FOR JSON crashes the server on a NULL money value.
    let null_cash = if babelfish { "0" } else { "NULL" };
    let blob = if babelfish {
        ""
    } else {
        r#"{ a = "blob", b = "BLOB" }, "#
    };
    let config = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"
[b]
kind = "mssql"
url = "${TANDEM_B_URL}"

[[entities]]
name = "thing"
a = { table = "things", key = ["id"] }
b = { table = "dbo.THINGS", key = ["ID"] }
columns = [
  { a = "txt", b = "TXT" }, { a = "empty_null", b = "EMPTY_NULL" }, { a = "price", b = "PRICE" },
  { a = "cash", b = "CASH" }, { a = "flag", b = "FLAG" }, { a = "day", b = "DAY" },
  { a = "at_local", b = "AT_LOCAL" }, { a = "at_zone", b = "AT_ZONE" }, { a = "tm", b = "TM" },
  { a = "guid", b = "GUID" }, {blob}{ a = "big", b = "BIG" },
]
"#
    .replace("{blob}", blob);
    let pg_schema = "CREATE TABLE things (
        id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, txt text, empty_null text,
        price numeric(20,6), cash numeric(19,4), flag boolean, day date, at_local timestamp,
        at_zone timestamptz, tm time, guid uuid, blob bytea, big text);";
    let ms_schema = "CREATE TABLE dbo.THINGS (
        ID bigint IDENTITY PRIMARY KEY, TXT nvarchar(max), EMPTY_NULL nvarchar(100),
        PRICE decimal(20,6), CASH money, FLAG bit, DAY date, AT_LOCAL datetime2(6),
        AT_ZONE datetimeoffset(6), TM time(6), GUID uniqueidentifier, BLOB varbinary(max),
        BIG nvarchar(max));";
    let env = Env::on(ms_url, pg_url, &config, ms_schema, pg_schema, false).await;
    env.pg
        .batch_execute(&format!(
            r#"SET TimeZone = 'Asia/Kolkata';
               INSERT INTO things (txt, empty_null, price, cash, flag, day, at_local, at_zone, tm, guid, blob, big) VALUES
               ({txt}, '', 12345678901234.123456, 12.34,
                true, '0001-01-01', '1999-12-31 23:59:59.999999', '2024-02-29 23:59:59.123456+05:30', '10:11:12.5',
                '6f9619ff-8b86-d011-b42d-00c04fc964ff', '\x00ff10'::bytea, {big}),
               (NULL, NULL, -0.000001, {null_cash}, false, NULL, NULL, NULL, NULL, NULL, '\x'::bytea, '')"#
        ))
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    // Copies made at SQL Server travel back to PostgreSQL as new records: equal to the originals.
    let mut ms = env.ms;
    ms_exec(
        &mut ms,
        "INSERT INTO dbo.THINGS (TXT, EMPTY_NULL, PRICE, CASH, FLAG, DAY, AT_LOCAL, AT_ZONE, TM, GUID, BLOB, BIG)
         SELECT TXT, EMPTY_NULL, PRICE, CASH, FLAG, DAY, AT_LOCAL, AT_ZONE, TM, GUID, BLOB, BIG FROM dbo.THINGS ORDER BY ID",
    )
    .await;
    let r = sync::drain(
        &env.config,
        &Sides {
            a: tandem::endpoint::open(env.config.clone(), Side::A).expect("A"),
            b: tandem::endpoint::open(env.config.clone(), Side::B).expect("B"),
        },
    )
    .await
    .expect("drain");
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    let cols = if babelfish {
        "txt, empty_null, price, cash, flag, day, at_local, at_zone, tm, guid, md5(big), length(big)"
    } else {
        "txt, empty_null, price, cash, flag, day, at_local, at_zone, tm, guid, blob, md5(big), length(big)"
    };
    let all = rows(&env.pg, &format!("SELECT {cols} FROM things ORDER BY id")).await;
    assert_eq!(all.len(), 4);
    assert_eq!(
        all[2..],
        all[..2],
        "PostgreSQL → SQL Server → PostgreSQL exact"
    );
    assert_eq!(all[0][1], "", "empty stays empty");
    assert_eq!(all[1][1], "NULL", "NULL stays NULL");
}

#[tokio::test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn sql_server_works_as_side_b_too() {
    let url = mssql_url();
    let ms_url = fresh_ms_db(&url, "as_b").await;
    let (pg_url, _) = common::fresh_dbs("ms_as_b");
    let a_schema = include_str!("../sql/demo/a_legacy.sql");
    let b_schema = "CREATE TABLE dbo.orders (
        id bigint IDENTITY PRIMARY KEY, customer nvarchar(max) NOT NULL, status nvarchar(20) NOT NULL,
        amount decimal(12,2), legacy_no int, created_at datetimeoffset NOT NULL DEFAULT SYSDATETIMEOFFSET());
    GO
    CREATE TABLE dbo.order_items (
        id bigint IDENTITY PRIMARY KEY, order_id bigint NOT NULL REFERENCES dbo.orders (id) ON DELETE CASCADE,
        line_no int NOT NULL, quantity int NOT NULL, UNIQUE (order_id, line_no));";
    let text = DEMO_CONFIG
        .replace("public.orders", "dbo.orders")
        .replace("public.order_items", "dbo.order_items");
    let text = {
        // [b] is the second `kind = "postgres"`.
        let at = text.find("[b]").expect("[b]");
        let (head, tail) = text.split_at(at);
        format!(
            "{head}{}",
            tail.replacen("kind = \"postgres\"", "kind = \"mssql\"", 1)
        )
    };
    let mut env = Env::on(ms_url, pg_url, &text, b_schema, a_schema, false).await;
    env.pg
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT") VALUES (900, 'Ann', 5.5);
               INSERT INTO dbo."ORDER_ITEMS" VALUES (900, 1, 2);"#,
        )
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        ms_rows(
            &mut env.ms,
            "SELECT customer, status, CONVERT(varchar(20), amount), legacy_no FROM dbo.orders"
        )
        .await,
        table(&[&["Ann", "open", "5.50", "900"]])
    );
    ms_exec(
        &mut env.ms,
        "UPDATE dbo.order_items SET quantity = 7; UPDATE dbo.orders SET status = N'closed';",
    )
    .await;
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        rows(
            &env.pg,
            r#"SELECT "STATUS", "QTY" FROM dbo."ORDERS" JOIN dbo."ORDER_ITEMS" USING ("ORDER_NO")"#
        )
        .await,
        table(&[&["C", "7"]])
    );
    ms_exec(&mut env.ms, "DELETE FROM dbo.orders").await;
    let r = env.drain().await;
    assert_eq!((r.failed, r.suspended), (0, 0), "{r:?}");
    assert_eq!(
        count(&env.pg, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        0
    );
    assert_eq!(
        count(&env.pg, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        0
    );
}
