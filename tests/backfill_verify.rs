//! Backfill of existing rows and verify (with repair), against real PostgreSQL.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fixtures::{count, eventually_or, rows, table, Env};

/// Runs SQL on a side without capturing it: what happened "behind tandem's back".
async fn behind(c: &tokio_postgres::Client, sql: &str) {
    c.batch_execute(&format!(
        "BEGIN; SET LOCAL tandem.applying = 'on'; {sql}; COMMIT;"
    ))
    .await
    .unwrap();
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

async fn assert_equal_and_linked(env: &Env) {
    let a = rows(
        &env.a,
        r#"SELECT "ORDER_NO", "NEW_ID", "CUST_NAME", "AMOUNT" FROM dbo."ORDERS" ORDER BY 1"#,
    )
    .await;
    let b = rows(
        &env.b,
        "SELECT legacy_no, id, customer, amount FROM orders ORDER BY 1",
    )
    .await;
    assert_eq!(a.len(), b.len(), "order counts");
    assert!(a == b, "orders differ");
    let ai = rows(
        &env.a,
        r#"SELECT "ORDER_NO", "LINE_NO", "QTY" FROM dbo."ORDER_ITEMS" ORDER BY 1, 2"#,
    )
    .await;
    let bi = rows(
        &env.b,
        "SELECT o.legacy_no, i.line_no, i.quantity FROM order_items i JOIN orders o ON o.id = i.order_id ORDER BY 1, 2",
    )
    .await;
    assert_eq!(ai.len(), bi.len(), "item counts");
    assert!(ai == bi, "items differ");
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
}

#[tokio::test]
async fn verify_finds_what_changed_behind_tandems_back_and_repair_fixes_it() {
    let env = Env::new("verify").await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT") SELECT g, 'c' || g, g FROM generate_series(1, 300) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT g, 1, g FROM generate_series(1, 300) g;"#,
        )
        .await
        .unwrap();
    env.drain().await;
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: equal (A 300 rows, B 300 rows)"),
        "{}",
        text(&o)
    );

    // Sync stopped; then, behind tandem's back: a changed value, a deleted row, an extra row.
    behind(
        &env.b,
        "UPDATE orders SET customer = 'changed in B' WHERE legacy_no = 10",
    )
    .await;
    behind(&env.b, "DELETE FROM order_items WHERE quantity = 20").await;
    // An item moved to another order (a ref column) and line.
    behind(
        &env.b,
        "UPDATE order_items SET order_id = (SELECT id FROM orders WHERE legacy_no = 5), line_no = 2 \
         WHERE quantity = 50",
    )
    .await;
    behind(
        &env.b,
        "INSERT INTO orders (customer, status) VALUES ('extra in B', 'open')",
    )
    .await;
    behind(
        &env.a,
        r#"UPDATE dbo."ORDERS" SET "STATUS" = 'C' WHERE "ORDER_NO" = 30"#,
    )
    .await;
    // A change on its way is not a difference.
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'pending' WHERE "ORDER_NO" = 40"#)
        .await
        .unwrap();

    let o = env.tandem_run(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let order = &report[0];
    assert_eq!(order["entity"], "order");
    assert_eq!(order["different"], 2, "{order}");
    assert_eq!(order["only_in_b"], 1, "{order}");
    assert_eq!(order["in_flight"], 1, "{order}");
    let keys: Vec<String> = order["sample_different"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["a_key"].as_str().unwrap().to_string())
        .collect();
    assert!(
        keys.contains(&"[10]".to_string()) && keys.contains(&"[30]".to_string()),
        "{keys:?}"
    );
    assert_eq!(
        order["sample_only_in_b"][0]["b_row"]["customer"],
        "extra in B"
    );
    // Which columns differ, with both values.
    let columns = |a_key: &str| -> Vec<(String, String, String)> {
        order["sample_different"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["a_key"] == a_key)
            .unwrap()["columns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    format!(
                        "{}/{}",
                        c["a_column"].as_str().unwrap(),
                        c["b_column"].as_str().unwrap()
                    ),
                    c["a"].as_str().unwrap().to_string(),
                    c["b"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        columns("[10]"),
        [(
            "CUST_NAME/customer".into(),
            "\"c10\"".into(),
            "\"changed in B\"".into()
        )]
    );
    assert_eq!(
        columns("[30]"),
        [("STATUS/status".into(), "\"C\"".into(), "\"open\"".into())],
        "codes in each side's terms"
    );
    let item = &report[1];
    assert_eq!(item["only_in_a"], 1, "{item}");
    assert_eq!(item["sample_only_in_a"][0]["a_key"], "[20,1]");
    assert_eq!(item["different"], 1, "{item}");
    let moved = &item["sample_different"][0];
    assert_eq!(moved["a_key"], "[50,1]");
    let b_order_5 = count(&env.b, "SELECT id FROM orders WHERE legacy_no = 5").await;
    assert_eq!(
        moved["columns"],
        serde_json::json!([
            { "a_column": "ORDER_NO", "b_column": "order_id", "a": "50", "b": b_order_5.to_string() },
            { "a_column": "LINE_NO", "b_column": "line_no", "a": "1", "b": "2" },
        ]),
        "a parent compared through its links"
    );

    let o = env.tandem_run(&["verify"]);
    let human = text(&o);
    assert!(
        human.contains("order: DIFFERENT")
            && human.contains("[10]")
            && human.contains(r#"CUST_NAME / customer: A "c10"  B "changed in B""#)
            && human.contains("extra in B"),
        "{human}"
    );
    assert!(
        human.contains("to make the sides equal, run `tandem verify --repair --from a`"),
        "verify ends with what to run: {human}"
    );

    // Repair from A, apply, verify again.
    let o = env.tandem_run(&["verify", "--repair"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "it still reports what it found: {}",
        text(&o)
    );
    assert!(
        text(&o).contains("queued for re-sync from side A")
            && text(&o).contains("`tandem run` applies them"),
        "{}",
        text(&o)
    );
    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        count(
            &env.b,
            "SELECT count(*) FROM orders WHERE customer = 'extra in B'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &env.b,
            "SELECT count(*) FROM orders WHERE status = 'closed'"
        )
        .await,
        1
    );
    assert_equal_and_linked(&env).await;
}

#[tokio::test]
async fn backfill_copies_existing_rows_parents_first_and_links_them() {
    let env = Env::new("backfill").await;
    behind(
        &env.a,
        r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT") SELECT g, 'old ' || g, g FROM generate_series(1, 2500) g;
           INSERT INTO dbo."ORDER_ITEMS" SELECT g, l, l FROM generate_series(1, 2500) g, generate_series(1, 2) l"#,
    )
    .await;
    let o = env.tandem_run(&["backfill", "--entity", "order_item", "--chunk", "700"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("order: 2500 rows copied")
            && text(&o).contains("order_item: 5000 rows copied"),
        "{}",
        text(&o)
    );
    assert_equal_and_linked(&env).await;
    // Finished: running it again copies nothing; --restart copies again and changes nothing.
    let o = env.tandem_run(&["backfill", "--entity", "order"]);
    assert!(text(&o).contains("order: 0 rows copied"), "{}", text(&o));
    let before = rows(
        &env.b,
        "SELECT count(*), max(xmin::text::bigint) FROM orders",
    )
    .await;
    let o = env.tandem_run(&["backfill", "--entity", "order", "--restart"]);
    assert!(text(&o).contains("order: 2500 rows copied"), "{}", text(&o));
    assert_eq!(
        rows(
            &env.b,
            "SELECT count(*), max(xmin::text::bigint) FROM orders"
        )
        .await,
        before
    );
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_resumes_after_kill_9() {
    let env = Env::new("backfill_kill").await;
    behind(
        &env.a,
        r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") SELECT g, 'k' || g FROM generate_series(1, 6000) g"#,
    )
    .await;
    let mut child = env
        .tandem()
        .args(["backfill", "--entity", "order", "--chunk", "200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let b = &env.b;
    eventually_or(
        Duration::from_secs(60),
        "some rows copied",
        || async { count(b, "SELECT count(*) FROM orders").await > 500 },
        String::new,
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let copied = count(&env.b, "SELECT count(*) FROM orders").await;
    assert!(
        copied < 6000,
        "killed too late to prove anything ({copied})"
    );
    let done: i64 = count(&env.a, "SELECT rows_done FROM tandem.backfill").await;
    assert!(done > 0 && done < 6000, "{done}");
    let o = env.tandem_run(&["backfill", "--entity", "order", "--chunk", "200"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 6000);
    assert_equal_and_linked(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_of_100k_rows_under_concurrent_writes_while_tandem_runs_ends_equal() {
    let env = Env::new("backfill_big").await;
    behind(
        &env.a,
        r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT") SELECT g, 'b' || g, g FROM generate_series(1, 50000) g;
           INSERT INTO dbo."ORDER_ITEMS" SELECT g, 1, g FROM generate_series(1, 50000) g"#,
    )
    .await;
    let log = std::fs::File::create(env.dir.path().join("run.log")).unwrap();
    let mut service = env
        .tandem()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Users keep working on A while the backfill runs: updates, deletes, inserts.
    let a_url = env.a_url.clone();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = tokio::spawn(async move {
        let c = common::connect(&a_url).await;
        let mut i: i32 = 0;
        while !*stop_rx.borrow_and_update() {
            i += 1;
            let id = (i * 7919) % 50000 + 1;
            let sql = match i % 4 {
                0 => format!(r#"DELETE FROM dbo."ORDERS" WHERE "ORDER_NO" = {id}"#),
                1 => format!(
                    r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES ({}, 'new') ON CONFLICT DO NOTHING"#,
                    100000 + i
                ),
                2 => format!(r#"UPDATE dbo."ORDER_ITEMS" SET "QTY" = -1 WHERE "ORDER_NO" = {id}"#),
                _ => format!(
                    r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'live {i}' WHERE "ORDER_NO" = {id}"#
                ),
            };
            c.batch_execute(&sql).await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        i
    });
    let started = Instant::now();
    let o = env.tandem_run(&["backfill", "--entity", "order_item", "--chunk", "2000"]);
    let took = started.elapsed();
    stop_tx.send(true).unwrap();
    let writes = writer.await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let (a, b) = (&env.a, &env.b);
    eventually_or(
        Duration::from_secs(120),
        "tandem run to catch up",
        || async {
            count(a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(b, "SELECT count(*) FROM tandem.outbox").await == 0
        },
        || std::fs::read_to_string(env.dir.path().join("run.log")).unwrap_or_default(),
    )
    .await;
    let _ = service.kill();
    let _ = service.wait();
    eprintln!("backfill of 100,000 rows with {writes} concurrent writes took {took:?}");
    assert!(
        count(
            &env.a,
            r#"SELECT count(*) FROM dbo."ORDERS" WHERE "CUST_NAME" LIKE 'live%'"#
        )
        .await
            > 0
    );
    assert_equal_and_linked(&env).await;
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A column named like the statements' table alias (`t`) is a column like any other: the
/// backfilled image is the whole row (`to_jsonb(t.*)`), not that column's value, and verify
/// can read a differing record.
#[tokio::test]
async fn a_column_named_t_is_backfilled_and_verified_as_any_other() {
    let config = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"
[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[[entities]]
name = "tag"
a = { table = "tags", key = ["id"] }
b = { table = "labels", key = ["id"] }
columns = [{ a = "id", b = "id" }, { a = "t", b = "t" }, { a = "note", b = "remark" }]
"#;
    let (a_url, b_url) = common::fresh_dbs("column_t");
    let env = Env::on(
        a_url,
        b_url,
        config,
        "CREATE TABLE tags (id int PRIMARY KEY, t text, note text);",
        "CREATE TABLE labels (id int PRIMARY KEY, t text, remark text);",
        true,
    )
    .await;
    behind(
        &env.a,
        "INSERT INTO tags VALUES (1, 'one', 'first'), (2, 'two', NULL)",
    )
    .await;
    let o = env.tandem_run(&["backfill", "--entity", "tag"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        rows(&env.b, "SELECT id::text, t, remark FROM labels ORDER BY id").await,
        table(&[&["1", "one", "first"], &["2", "two", "NULL"]])
    );
    behind(&env.b, "UPDATE labels SET t = 'uno' WHERE id = 1").await;
    let o = env.tandem_run(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("uno"),
        "the differing row is shown: {}",
        text(&o)
    );
}

/// One notion of equal (issue 15, item 3): a B numeric(10,2) holding 31.00 for an A real 31
/// is what apply leaves unchanged, so verify must call it equal, or `--repair` never
/// converges (it queued the record, apply found nothing to write, verify reported it again).
#[tokio::test]
async fn verify_calls_equal_what_apply_leaves_unchanged_so_repair_converges() {
    let (a_url, b_url) = common::fresh_dbs("verify_equal");
    let config = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"
[b]
kind = "postgres"
url = "${TANDEM_B_URL}"
[[entities]]
name = "product"
a = { table = "dbo.PRODUCTS", key = ["PRODUCT_ID"] }
b = { table = "public.products", key = ["id"], peer_id_column = "legacy_id" }
columns = [
  { a = "NAME", b = "name" },
  { a = "PRICE", b = "price" },
  { a = "WEIGHT", b = "weight" },
]
"#;
    let a_schema = r#"CREATE SCHEMA dbo;
        CREATE TABLE dbo."PRODUCTS" ("PRODUCT_ID" integer PRIMARY KEY, "NAME" text, "PRICE" real, "WEIGHT" numeric);"#;
    let b_schema =
        "CREATE TABLE products (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
        name text, price numeric(10,2), weight numeric(8,3), legacy_id integer);";
    let env = Env::on(a_url, b_url, config, a_schema, b_schema, true).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."PRODUCTS" VALUES (1, 'a', 31, 2), (2, 'b', 31.5, 2.5), (3, 'c', 0.1, 1.25), (4, 'd', -0, 0.000)"#,
        )
        .await
        .unwrap();
    env.drain().await;
    assert_eq!(
        rows(
            &env.b,
            "SELECT legacy_id, price, weight FROM products ORDER BY 1"
        )
        .await,
        table(&[
            &["1", "31.00", "2.000"],
            &["2", "31.50", "2.500"],
            &["3", "0.10", "1.250"],
            &["4", "0.00", "0.000"],
        ])
    );
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A real difference is found, listed, repaired, and then verify agrees.
    behind(&env.b, "UPDATE products SET price = 40 WHERE legacy_id = 1").await;
    let o = env.tandem_run(&["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report[0]["different"], 1, "{report}");
    assert_eq!(
        report[0]["sample_different"][0]["columns"],
        serde_json::json!([{ "a_column": "PRICE", "b_column": "price", "a": "31", "b": "40.00" }])
    );
    let o = env.tandem_run(&["verify", "--repair"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "repair converged: {}", text(&o));
    assert_eq!(
        rows(&env.b, "SELECT price FROM products WHERE legacy_id = 1").await,
        table(&[&["31.00"]])
    );
}

/// A self-reference backfilled in small chunks, in key order: children that come before their
/// manager wait for it, a record managing itself goes in two steps, and two records managing
/// each other across chunks (6 → 7 in one chunk, 7 → 6 in the next) do not wait for each
/// other forever (the retried insert goes in two steps).
#[tokio::test]
async fn backfill_of_a_self_reference_in_small_chunks_links_every_record() {
    let (a_url, b_url) = common::fresh_dbs("backfill_self");
    let config = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"
[b]
kind = "postgres"
url = "${TANDEM_B_URL}"
[sync]
retry_min_ms = 20
retry_max_ms = 200
[[entities]]
name = "employee"
a = { table = "dbo.EMPLOYEES", key = ["EMP_NO"] }
b = { table = "public.staff", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "NAME", b = "name" },
  { a = "REPORTS_TO", b = "manager_id", ref = "employee" },
]
"#;
    let a_schema = r#"CREATE SCHEMA dbo;
        CREATE TABLE dbo."EMPLOYEES" ("EMP_NO" integer PRIMARY KEY, "NAME" text NOT NULL,
            "REPORTS_TO" integer REFERENCES dbo."EMPLOYEES");"#;
    let b_schema = "CREATE TABLE staff (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
        name text NOT NULL, manager_id bigint REFERENCES staff, legacy_no integer);";
    let env = Env::on(a_url, b_url, config, a_schema, b_schema, true).await;
    behind(
        &env.a,
        r#"INSERT INTO dbo."EMPLOYEES" VALUES (1, 'a', 5), (2, 'b', 5), (3, 'c', 1), (4, 'self', 4),
             (5, 'boss', NULL), (6, 'x', 7), (7, 'y', 6)"#,
    )
    .await;
    // Two records waiting for each other would keep the backfill waiting forever: give it a
    // minute, then fail (and stop it).
    let mut child = env
        .tandem()
        .args(["backfill", "--entity", "employee", "--chunk", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start backfill");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("backfill status") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("backfill still waiting after 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0));
    // Drain what waited for a retry when the backfill returned.
    for _ in 0..50 {
        if count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0 {
            break;
        }
        env.drain().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        rows(
            &env.b,
            "SELECT e.legacy_no, e.name, m.legacy_no FROM staff e \
             LEFT JOIN staff m ON m.id = e.manager_id ORDER BY 1"
        )
        .await,
        table(&[
            &["1", "a", "5"],
            &["2", "b", "5"],
            &["3", "c", "1"],
            &["4", "self", "4"],
            &["5", "boss", "NULL"],
            &["6", "x", "7"],
            &["7", "y", "6"],
        ])
    );
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
    let o = env.tandem_run(&["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
