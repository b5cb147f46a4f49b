//! Related records, conflicts, retries and suspension, against real PostgreSQL.

mod common;

use std::time::Duration;

use common::fixtures::{count, rows, table, Env, A_SCHEMA, B_SCHEMA, DEMO_CONFIG};
use tandem::sync::BatchReport;

/// Fast retries so suspension happens within a test.
fn quick(config: &str) -> String {
    config.replace(
        "[sync]\n",
        "[sync]\nmax_attempts = 3\nretry_min_ms = 20\nretry_max_ms = 60\n",
    )
}

fn with_policy(config: &str, policy: &str) -> String {
    config.replace(
        "name = \"order\"\n",
        &format!("name = \"order\"\non_conflict = \"{policy}\"\n"),
    )
}

async fn env_with(name: &str, config: &str, b_schema: &str) -> Env {
    let (a, b) = common::fresh_dbs(name);
    Env::on(a, b, config, A_SCHEMA, b_schema, true).await
}

/// Drains again and again (waiting out retry delays) until `done` holds or `rounds` pass.
async fn drain_until<F, Fut>(env: &Env, rounds: usize, mut done: F) -> BatchReport
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut total = BatchReport::default();
    for _ in 0..rounds {
        total.add(&env.drain().await);
        if done().await {
            return total;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    panic!("not reached after {rounds} drains: {total:?}");
}

/// Drains until exactly one change at A is suspended; its error.
async fn drain_until_one_suspended_at_a(env: &Env) -> String {
    let a = &env.a;
    drain_until(env, 40, || async {
        count(a, "SELECT count(*) FROM tandem.outbox WHERE suspended").await == 1
    })
    .await;
    rows(a, "SELECT last_error FROM tandem.outbox WHERE suspended")
        .await
        .remove(0)
        .remove(0)
}

fn out(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test]
async fn a_poison_record_is_suspended_while_the_rest_flows_and_arrives_after_resubmit() {
    let narrow_b = B_SCHEMA.replace(
        "customer   text NOT NULL",
        "customer   varchar(20) NOT NULL",
    );
    let env = env_with("poison", &quick(DEMO_CONFIG), &narrow_b).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") SELECT 'c' || g FROM generate_series(1, 1000) g;
               INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (9999, 'a name far too long for B''s column');
               INSERT INTO dbo."ORDER_ITEMS" VALUES (9999, 1, 5), (9999, 2, 6);"#,
        )
        .await
        .unwrap();
    drain_until_one_suspended_at_a(&env).await;
    assert_eq!(
        count(&env.b, "SELECT count(*) FROM orders").await,
        1000,
        "the rest flowed"
    );
    let suspended = rows(
        &env.a,
        "SELECT seq, entity, key::text, attempts, last_error FROM tandem.outbox WHERE suspended",
    )
    .await;
    let (seq, error) = (&suspended[0][0], &suspended[0][4]);
    assert_eq!(&suspended[0][1..4], &["order", "[9999]", "3"]);
    assert!(
        error.contains("entity order")
            && error.contains("public.orders")
            && error.contains("column customer")
            && error.contains("too long")
            && error.contains("[9999]"),
        "{error}"
    );
    // The children wait for their parent instead of being suspended.
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM tandem.outbox WHERE entity = 'order_item' AND NOT suspended"
        )
        .await,
        2
    );

    // The operator's view.
    let list = env.tandem_run(&["suspended", "list"]);
    assert_eq!(list.status.code(), Some(0), "{}", out(&list));
    let id = format!("A-{seq}");
    assert!(
        out(&list).contains(&id) && out(&list).contains("[9999]"),
        "{}",
        out(&list)
    );
    let show = env.tandem_run(&["suspended", "show", &id]);
    assert!(
        out(&show).contains("a name far too long") && out(&show).contains("too long"),
        "{}",
        out(&show)
    );
    let missing = env.tandem_run(&["suspended", "show", "A-1"]);
    assert_eq!(missing.status.code(), Some(2), "{}", out(&missing));

    // Fix the cause, resubmit: the record and its waiting children arrive.
    env.b
        .batch_execute("ALTER TABLE orders ALTER customer TYPE text")
        .await
        .unwrap();
    let re = env.tandem_run(&["suspended", "resubmit", &id]);
    assert_eq!(re.status.code(), Some(0), "{}", out(&re));
    let b = &env.b;
    drain_until(&env, 40, || async {
        count(b, "SELECT count(*) FROM order_items").await == 2
    })
    .await;
    assert_eq!(
        rows(&env.b, "SELECT o.customer, i.line_no, i.quantity FROM orders o JOIN order_items i ON i.order_id = o.id ORDER BY 2").await,
        table(&[
            &["a name far too long for B's column", "1", "5"],
            &["a name far too long for B's column", "2", "6"]
        ])
    );
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
}

#[tokio::test]
async fn a_child_whose_parent_never_arrives_is_suspended_naming_the_parent() {
    let env = env_with("orphan", &quick(DEMO_CONFIG), B_SCHEMA).await;
    // An order that existed before tandem was installed: never captured, never linked.
    env.a
        .batch_execute(
            r#"BEGIN; SET LOCAL tandem.applying = 'on';
               INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (42, 'old'); COMMIT;
               INSERT INTO dbo."ORDER_ITEMS" VALUES (42, 1, 1);"#,
        )
        .await
        .unwrap();
    let error = &drain_until_one_suspended_at_a(&env).await;
    assert!(
        error.contains("waiting for parent order [42]")
            && error.contains("tandem backfill --entity order"),
        "{error}"
    );
    let st = env.tandem_run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    let item_a = json
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["entity"] == "order_item" && r["side"] == "a")
        .unwrap();
    assert_eq!(item_a["suspended"], 1);
}

#[tokio::test]
async fn children_before_parents_and_parents_and_children_in_separate_transactions() {
    // Retries come due within a drain or not, depending on how fast the machine is: the
    // test asserts what holds either way (the child waits, is not suspended, arrives once its
    // parent does), with attempts to spare.
    let config = DEMO_CONFIG.replace(
        "[sync]\n",
        "[sync]\nmax_attempts = 50\nretry_min_ms = 100\nretry_max_ms = 200\n",
    );
    let env = env_with("child_first", &config, B_SCHEMA).await;
    // Legacy databases often have no foreign keys: the child can come first.
    env.a
        .batch_execute(
            r#"ALTER TABLE dbo."ORDER_ITEMS" DROP CONSTRAINT "ORDER_ITEMS_ORDER_NO_fkey""#,
        )
        .await
        .unwrap();
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDER_ITEMS" VALUES (77, 1, 1)"#)
        .await
        .unwrap();
    let first = env.drain().await;
    assert!(
        first.written == 0 && first.failed >= 1 && first.suspended == 0,
        "{first:?}"
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM order_items").await, 0);
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM tandem.outbox WHERE NOT suspended AND attempts >= 1"
        )
        .await,
        1,
        "the child waits for its parent"
    );
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (77, 'late parent')"#,
        )
        .await
        .unwrap();
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDER_ITEMS" VALUES (77, 2, 2)"#)
        .await
        .unwrap();
    let b = &env.b;
    drain_until(&env, 40, || async {
        count(b, "SELECT count(*) FROM order_items").await == 2
    })
    .await;
    assert_eq!(
        rows(&env.b, "SELECT o.legacy_no, i.line_no FROM order_items i JOIN orders o ON o.id = i.order_id ORDER BY 2").await,
        table(&[&["77", "1"], &["77", "2"]])
    );
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
}

/// One record, changed on both sides while tandem was stopped.
async fn conflict(policy: &str, a_first: bool) -> (Env, Vec<Vec<String>>, Vec<Vec<String>>) {
    let env = env_with(
        &format!("conflict_{policy}"),
        &with_policy(DEMO_CONFIG, policy),
        B_SCHEMA,
    )
    .await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('base', 1)"#)
        .await
        .unwrap();
    env.drain().await;
    let a_change = r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'from A', "AMOUNT" = 2"#;
    let b_change = "UPDATE orders SET customer = 'from B', amount = 3";
    if a_first {
        env.a.batch_execute(a_change).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        env.b.batch_execute(b_change).await.unwrap();
    } else {
        env.b.batch_execute(b_change).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        env.a.batch_execute(a_change).await.unwrap();
    }
    let r = env.drain().await;
    assert_eq!(r.conflicts, 1, "{r:?}");
    let a = rows(&env.a, r#"SELECT "CUST_NAME", "AMOUNT" FROM dbo."ORDERS""#).await;
    let b = rows(&env.b, "SELECT customer, amount FROM orders").await;
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
    (env, a, b)
}

#[tokio::test]
async fn conflicts_end_equal_on_both_sides_by_policy() {
    let from_a = table(&[&["from A", "2.00"]]);
    let from_b = table(&[&["from B", "3.00"]]);
    for (policy, a_first, want) in [
        ("a_wins", false, &from_a),
        ("b_wins", true, &from_b),
        ("newest_wins", true, &from_b),
        ("newest_wins", false, &from_a),
    ] {
        let (env, a, b) = conflict(policy, a_first).await;
        assert_eq!(&a, want, "{policy}, A first: {a_first}");
        assert_eq!(&b, want, "{policy}, A first: {a_first}");
        // Recorded where it was resolved, with both images, and counted in status.
        let logged = count(&env.a, "SELECT count(*) FROM tandem.conflicts").await
            + count(&env.b, "SELECT count(*) FROM tandem.conflicts").await;
        assert_eq!(logged, 1, "{policy}");
        let st = env.tandem_run(&["status", "--json"]);
        let json: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
        let total: i64 = json
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["conflicts"].as_i64().unwrap())
            .sum();
        assert_eq!(total, 1, "{policy}");
    }
}

#[tokio::test]
async fn a_delete_against_an_update_follows_the_policy_too() {
    for (policy, record_survives) in [("a_wins", false), ("b_wins", true)] {
        let env = env_with(
            &format!("del_{policy}"),
            &with_policy(DEMO_CONFIG, policy),
            B_SCHEMA,
        )
        .await;
        env.a
            .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('doomed?')"#)
            .await
            .unwrap();
        env.drain().await;
        env.a
            .batch_execute(r#"DELETE FROM dbo."ORDERS""#)
            .await
            .unwrap();
        env.b
            .batch_execute("UPDATE orders SET customer = 'kept by B'")
            .await
            .unwrap();
        let a = &env.a;
        drain_until(&env, 10, || async {
            count(a, "SELECT count(*) FROM tandem.outbox").await == 0
        })
        .await;
        let a_rows = rows(&env.a, r#"SELECT "CUST_NAME" FROM dbo."ORDERS""#).await;
        let b_rows = rows(&env.b, "SELECT customer FROM orders").await;
        assert_eq!(a_rows, b_rows, "{policy}");
        assert_eq!(
            a_rows.len(),
            usize::from(record_survives),
            "{policy}: {a_rows:?}"
        );
        if record_survives {
            assert_eq!(a_rows, table(&[&["kept by B"]]));
            // Re-created at A with a new key, and linked again both ways.
            let pair = rows(&env.a, r#"SELECT "ORDER_NO", "NEW_ID" FROM dbo."ORDERS""#).await;
            let b_pair = rows(&env.b, "SELECT legacy_no, id FROM orders").await;
            assert_eq!(pair, b_pair);
        }
        for c in [&env.a, &env.b] {
            assert_eq!(
                count(c, "SELECT count(*) FROM tandem.outbox").await,
                0,
                "{policy}"
            );
        }
    }
}

/// A change that loses a conflict at the other side may already be on its way (claimed
/// before the conflict was settled): that copy must not overwrite the winner there. The copy
/// is made deterministic by putting the loser's outbox row back after the conflict removed it,
/// exactly as a batch claimed before the conflict would carry it (found by the fault suite's
/// full workload, seed 5040: such a copy re-created a record both sides had deleted).
#[tokio::test]
async fn a_copy_of_a_change_that_lost_a_conflict_is_stale_where_it_arrives() {
    let env = env_with("lost_copy", &with_policy(DEMO_CONFIG, "a_wins"), B_SCHEMA).await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('first')"#)
        .await
        .unwrap();
    env.drain().await;
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'A wins'"#)
        .await
        .unwrap();
    env.b
        .batch_execute(
            "UPDATE orders SET customer = 'B loses'; \
             CREATE TABLE held AS SELECT * FROM tandem.outbox;",
        )
        .await
        .unwrap();
    let report = env.drain().await;
    assert_eq!(report.conflicts, 1, "{report:?}");
    assert_eq!(count(&env.b, "SELECT count(*) FROM tandem.outbox").await, 0);
    // B's losing update, as a batch claimed before the conflict still carries it.
    env.b
        .batch_execute("INSERT INTO tandem.outbox OVERRIDING SYSTEM VALUE SELECT * FROM held")
        .await
        .unwrap();
    let report = env.drain().await;
    assert_eq!((report.written, report.stale), (0, 1), "{report:?}");
    let a_rows = rows(&env.a, r#"SELECT "CUST_NAME" FROM dbo."ORDERS""#).await;
    let b_rows = rows(&env.b, "SELECT customer FROM orders").await;
    assert_eq!(a_rows, table(&[&["A wins"]]));
    assert_eq!(b_rows, a_rows);
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
    let links = "SELECT count(*) FROM tandem.id_map WHERE NOT deleted";
    assert_eq!(
        (count(&env.a, links).await, count(&env.b, links).await),
        (1, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_on_both_sides_end_equal_for_every_policy() {
    for policy in ["a_wins", "b_wins", "newest_wins"] {
        let config = with_policy(
            &DEMO_CONFIG.replace("poll_interval_ms = 500", "poll_interval_ms = 50"),
            policy,
        );
        let env = env_with(&format!("race_{policy}"), &config, B_SCHEMA).await;
        env.a
            .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") SELECT 'r' || g FROM generate_series(1, 20) g"#)
            .await
            .unwrap();
        env.drain().await;
        let log = std::fs::File::create(env.dir.path().join("race.log")).unwrap();
        let mut child = env
            .tandem()
            .arg("run")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        // Both sides update the same small set of records as fast as they can.
        let (a_url, b_url) = (env.a_url.clone(), env.b_url.clone());
        let writer_a = tokio::spawn(async move {
            let c = common::connect(&a_url).await;
            for i in 0..150i32 {
                c.execute(
                    r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = $1, "AMOUNT" = $2::int
                       WHERE "ORDER_NO" = (SELECT min("ORDER_NO") FROM dbo."ORDERS") + $2::int % 20"#,
                    &[&format!("a{i}"), &i],
                )
                .await
                .unwrap();
            }
        });
        let writer_b = tokio::spawn(async move {
            let c = common::connect(&b_url).await;
            for i in 0..150i32 {
                c.execute(
                    "UPDATE orders SET customer = $1, amount = $2::int WHERE id = 1 + ($2::int * 7) % 20",
                    &[&format!("b{i}"), &i],
                )
                .await
                .unwrap();
            }
        });
        writer_a.await.unwrap();
        writer_b.await.unwrap();
        let (a, b) = (&env.a, &env.b);
        common::fixtures::eventually(Duration::from_secs(30), "quiet outboxes", || async {
            count(a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(b, "SELECT count(*) FROM tandem.outbox").await == 0
        })
        .await;
        let _ = child.kill();
        let _ = child.wait();
        let a_rows = rows(
            &env.a,
            r#"SELECT "NEW_ID", "ORDER_NO", "CUST_NAME", "AMOUNT" FROM dbo."ORDERS" ORDER BY 1"#,
        )
        .await;
        let b_rows = rows(
            &env.b,
            "SELECT id, legacy_no, customer, amount FROM orders ORDER BY 1",
        )
        .await;
        assert_eq!(a_rows.len(), 20);
        assert_eq!(a_rows, b_rows, "{policy}: both sides equal row by row");
        let conflicts = count(&env.a, "SELECT count(*) FROM tandem.conflicts").await
            + count(&env.b, "SELECT count(*) FROM tandem.conflicts").await;
        eprintln!("{policy}: {conflicts} conflicts resolved during the race");
        assert!(
            conflicts > 0,
            "{policy}: the race must produce conflicts to prove anything"
        );
    }
}

#[tokio::test]
async fn cascaded_deletes_on_both_sides_leave_nothing_pending_or_suspended() {
    let env = env_with("cascade", &quick(DEMO_CONFIG), B_SCHEMA).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (1, 'x'), (2, 'y');
               INSERT INTO dbo."ORDER_ITEMS" VALUES (1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 2, 1);"#,
        )
        .await
        .unwrap();
    env.drain().await;
    env.a
        .batch_execute(r#"DELETE FROM dbo."ORDERS" WHERE "ORDER_NO" = 1"#)
        .await
        .unwrap();
    env.b
        .batch_execute("DELETE FROM orders WHERE legacy_no = 2")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.failed, r.suspended), (0, 0), "{r:?}");
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        0
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM order_items").await, 0);
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        0
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 0);
}

/// Issue 14: a child created at A while B deletes its parent, both sides cascading. The item
/// cannot be applied at B (its parent is gone there); B's delete reaches A, whose cascade
/// removes the item: that cascade, caused by tandem's own delete, is captured (derived) and
/// settles the waiting insert. Both sides end without order and item, nothing left pending
/// or suspended.
#[tokio::test]
async fn a_child_created_while_its_parent_is_deleted_on_the_other_side_ends_gone_on_both() {
    let env = env_with("child_vs_parent_delete", &quick(DEMO_CONFIG), B_SCHEMA).await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (5, 'o')"#)
        .await
        .unwrap();
    env.drain().await;
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 1);
    // Both at once, before tandem runs again.
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDER_ITEMS" VALUES (5, 1, 1)"#)
        .await
        .unwrap();
    env.b.batch_execute("DELETE FROM orders").await.unwrap();
    let b = &env.b;
    let a = &env.a;
    drain_until(&env, 40, || async {
        count(a, "SELECT count(*) FROM tandem.outbox").await == 0
            && count(b, "SELECT count(*) FROM tandem.outbox").await == 0
    })
    .await;
    for (side, c, sql) in [
        ("A", a, r#"SELECT count(*) FROM dbo."ORDERS""#),
        ("A", a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#),
        ("B", b, "SELECT count(*) FROM orders"),
        ("B", b, "SELECT count(*) FROM order_items"),
    ] {
        assert_eq!(count(c, sql).await, 0, "side {side}: {sql}");
    }
    // The item's delete at A was captured as a consequence of tandem's own delete.
    assert_eq!(
        count(
            b,
            "SELECT count(*) FROM tandem.id_map WHERE entity = 'order' AND NOT deleted"
        )
        .await,
        0
    );
}

/// A side without a foreign key keeps a child added after its parent was deleted (the other
/// side deleted the order; a legacy application at A then adds a line to it). Its change
/// cannot be applied at B and waits for no one: once its retries run out it is suspended,
/// saying that the parent was deleted, never that it is still to come. Where B's id map no
/// longer names A's key for the order (the simulation's full workload, seed 867: the delete's
/// reply was lost, and its second copy was settled as stale, which reports no peer key), it is
/// A's own tombstone that tells. The operator deletes the orphan and resubmits: nothing is left.
#[tokio::test]
async fn a_child_of_a_deleted_parent_at_a_side_without_a_foreign_key_is_suspended_saying_so() {
    let no_fk = A_SCHEMA.replace(
        r#""ORDER_NO" integer NOT NULL REFERENCES dbo."ORDERS" ON DELETE CASCADE,"#,
        r#""ORDER_NO" integer NOT NULL,"#,
    );
    assert_ne!(no_fk, A_SCHEMA, "the fixture's foreign key moved");
    let (a_url, b_url) = common::fresh_dbs("orphan_after_delete");
    let env = Env::on(a_url, b_url, &quick(DEMO_CONFIG), &no_fk, B_SCHEMA, true).await;
    for (line, forget) in [(1, false), (2, true)] {
        let order = 6 + line;
        env.a
            .batch_execute(&format!(
                r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES ({order}, 'o')"#
            ))
            .await
            .unwrap();
        env.drain().await;
        env.b.batch_execute("DELETE FROM orders").await.unwrap();
        env.drain().await;
        assert_eq!(
            count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
            0
        );
        if forget {
            // The state the simulation reached: B's tombstone without A's key.
            env.b
                .batch_execute("UPDATE tandem.id_map SET a_key = NULL WHERE entity = 'order'")
                .await
                .unwrap();
        }
        env.a
            .batch_execute(&format!(
                r#"INSERT INTO dbo."ORDER_ITEMS" VALUES ({order}, {line}, 1)"#
            ))
            .await
            .unwrap();
        let error = &drain_until_one_suspended_at_a(&env).await;
        assert!(
            (error.contains(&format!(
                "its parent order [{order}] was deleted at the target"
            )) || error.contains(&format!(
                "its parent order [{order}] is not at the source (deleted there"
            ))) && error.contains("tandem suspended resubmit")
                && !error.contains("backfill"),
            "{error}"
        );
        // What the message tells the operator to do.
        env.a
            .batch_execute(r#"DELETE FROM dbo."ORDER_ITEMS""#)
            .await
            .unwrap();
        let st = env.tandem_run(&["suspended", "resubmit", "--all"]);
        assert!(st.status.success(), "{}", out(&st));
        let (a, b) = (&env.a, &env.b);
        drain_until(&env, 40, || async {
            count(a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(b, "SELECT count(*) FROM tandem.outbox").await == 0
        })
        .await;
        assert_eq!(count(&env.b, "SELECT count(*) FROM order_items").await, 0);
        assert_eq!(
            count(&env.a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
            0
        );
    }
}

/// A parent deleted at one side and created again there under the same key, while the other
/// side adds a child to it: the child belongs to the deleted parent, never to the new record
/// that took its key. It waits while the delete travels; at B (no foreign key) the child
/// stays without its parent, so it is suspended saying so, and the operator's delete and
/// resubmit leave nothing behind. Joining the new record left the item in different orders
/// at the two sides (found by the simulation's full workload, seed 7).
#[tokio::test]
async fn a_child_added_to_a_parent_deleted_and_created_again_at_the_other_side_does_not_join_the_new_one(
) {
    let no_fk = B_SCHEMA.replace(
        "order_id bigint  NOT NULL REFERENCES public.orders ON DELETE CASCADE,",
        "order_id bigint  NOT NULL,",
    );
    assert_ne!(no_fk, B_SCHEMA, "the fixture's foreign key moved");
    let (a_url, b_url) = common::fresh_dbs("child_of_recreated");
    let env = Env::on(a_url, b_url, &quick(DEMO_CONFIG), A_SCHEMA, &no_fk, true).await;
    let (a, b) = (&env.a, &env.b);
    a.batch_execute(r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (7, 'first')"#)
        .await
        .unwrap();
    env.drain().await;
    let first = rows(b, "SELECT id FROM orders").await.remove(0).remove(0);

    // A's user deletes order 7 and creates another order 7; those changes are held back.
    a.batch_execute(
        r#"DELETE FROM dbo."ORDERS";
           INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (7, 'again');
           UPDATE tandem.outbox SET next_attempt_at = now() + interval '1 hour';"#,
    )
    .await
    .unwrap();
    b.batch_execute(&format!(
        "INSERT INTO order_items (order_id, line_no, quantity) VALUES ({first}, 1, 5)"
    ))
    .await
    .unwrap();
    env.drain().await;
    assert_eq!(
        count(a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        0,
        "the item must not join the order created again"
    );
    let waiting = rows(b, "SELECT last_error, suspended::text FROM tandem.outbox").await;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(
        waiting[0][0].contains("was deleted at the target") && waiting[0][1] == "false",
        "{waiting:?}"
    );

    // A's changes travel, one after the other (together, they are one change: order 7 with
    // new values, which the item then joins at both sides). The delete: order 7 is deleted at
    // B, where the item stays (no foreign key).
    a.batch_execute("UPDATE tandem.outbox SET next_attempt_at = NULL WHERE op = 'D'")
        .await
        .unwrap();
    drain_until(&env, 40, || async {
        count(b, "SELECT count(*) FROM tandem.outbox WHERE suspended").await == 1
    })
    .await;
    // The new order 7, created at B as another record.
    a.batch_execute("UPDATE tandem.outbox SET next_attempt_at = NULL")
        .await
        .unwrap();
    env.drain().await;
    let error = rows(b, "SELECT last_error FROM tandem.outbox WHERE suspended")
        .await
        .remove(0)
        .remove(0);
    assert!(
        error.contains("its parent order")
            && error.contains("was deleted")
            && !error.contains("backfill"),
        "{error}"
    );
    assert_eq!(
        rows(b, "SELECT customer FROM orders").await,
        vec![vec!["again".to_string()]]
    );
    assert_eq!(
        rows(
            a,
            r#"SELECT "ORDER_NO"::text, "CUST_NAME" FROM dbo."ORDERS""#
        )
        .await,
        vec![vec!["7".to_string(), "again".to_string()]]
    );

    // What the message tells the operator to do.
    b.batch_execute("DELETE FROM order_items").await.unwrap();
    let st = env.tandem_run(&["suspended", "resubmit", "--all"]);
    assert!(st.status.success(), "{}", out(&st));
    drain_until(&env, 40, || async {
        count(a, "SELECT count(*) FROM tandem.outbox").await == 0
            && count(b, "SELECT count(*) FROM tandem.outbox").await == 0
    })
    .await;
    assert_eq!(
        count(a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        0
    );
    assert_eq!(count(b, "SELECT count(*) FROM order_items").await, 0);
}
