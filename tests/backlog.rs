//! A backlog drains folded and pipelined: many updates of one record cost one apply, the order
//! of a record's changes is kept (a delete or insert ends a fold), and every outbox row is
//! accounted for.

mod common;

use common::fixtures::*;

#[tokio::test]
async fn a_backlog_of_updates_costs_one_apply_per_record_and_keeps_order() {
    let text = DEMO_CONFIG.replace(
        "poll_interval_ms = 500",
        "poll_interval_ms = 500\nbatch_size = 20",
    );
    let (a_url, b_url) = common::fresh_dbs("backlog_fold");
    let env = Env::on(a_url, b_url, &text, A_SCHEMA, B_SCHEMA, true).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT")
               SELECT i, 'c' || i, i FROM generate_series(1, 60) AS i"#,
        )
        .await
        .unwrap();
    env.drain().await;
    // The backlog: five rounds of updates of every order; order 7 is deleted after round 3
    // and re-created with its number after round 4; order 9 is deleted at the end.
    for round in 1..=5 {
        env.a
            .batch_execute(&format!(
                r#"UPDATE dbo."ORDERS" SET "AMOUNT" = "AMOUNT" + 1000,
                   "CUST_NAME" = 'r{round}-' || "ORDER_NO""#
            ))
            .await
            .unwrap();
        if round == 3 {
            env.a
                .batch_execute(r#"DELETE FROM dbo."ORDERS" WHERE "ORDER_NO" = 7"#)
                .await
                .unwrap();
        }
        if round == 4 {
            env.a
                .batch_execute(
                    r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME", "AMOUNT")
                       VALUES (7, 'reborn', 7)"#,
                )
                .await
                .unwrap();
        }
    }
    env.a
        .batch_execute(r#"DELETE FROM dbo."ORDERS" WHERE "ORDER_NO" = 9"#)
        .await
        .unwrap();
    let queued = count(&env.a, "SELECT count(*) FROM tandem.outbox").await;
    assert_eq!(queued, 5 * 60 - 1 + 2 + 1);

    let r = env.drain().await;
    assert_eq!(r.claimed as i64, queued, "every row claimed once: {r:?}");
    assert_eq!((r.failed, r.suspended), (0, 0), "{r:?}");
    // Unfolded, this would be ~300 writes. Folded: one per order for its run of updates
    // (60), plus order 7's re-creation and order 9's delete, which end their runs.
    assert!(r.written <= 62, "one write per record and run: {r:?}");

    assert_converged(&env).await;
    assert_eq!(
        rows(
            &env.b,
            "SELECT legacy_no::text, customer, amount::text FROM orders \
             WHERE legacy_no IN (6, 7, 8, 9) ORDER BY legacy_no"
        )
        .await,
        table(&[
            &["6", "r5-6", "5006.00"],
            &["7", "r5-7", "1007.00"],
            &["8", "r5-8", "5008.00"]
        ]),
        "the newest images; 7 re-created, 9 gone"
    );
    assert_eq!(
        rows(
            &env.a,
            "SELECT a_key, deleted::text FROM tandem.id_map WHERE a_key IN ('[7]', '[9]') ORDER BY a_key"
        )
        .await,
        table(&[&["[7]", "false"], &["[9]", "true"]])
    );
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
}

#[tokio::test]
async fn a_change_of_a_linked_record_leaves_the_source_link_unwritten() {
    let env = Env::new("backlog_known_link").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (1, 'x')"#)
        .await
        .unwrap();
    env.drain().await;
    let link = "SELECT xmin::text, b_key, deleted::text FROM tandem.id_map WHERE a_key = '[1]'";
    let before = rows(&env.a, link).await;
    assert_eq!(before.len(), 1);
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'y' WHERE "ORDER_NO" = 1"#)
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!(r.written, 1, "{r:?}");
    assert_eq!(
        rows(&env.b, "SELECT customer FROM orders WHERE legacy_no = 1").await,
        table(&[&["y"]])
    );
    assert_eq!(
        rows(&env.a, link).await,
        before,
        "the link row was not rewritten"
    );
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
}
