//! Core sync between two real PostgreSQL databases: capture, mapped apply both ways, id
//! links, the sequence guard, tombstones, no echo, keys.

mod common;

use common::fixtures::{count, rows, table, Env};

#[tokio::test]
async fn capture_is_transactional_full_image_and_ordered() {
    let env = Env::new("capture").await;
    // A rolled-back transaction captures nothing.
    env.a
        .batch_execute(
            r#"BEGIN; INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('ghost'); ROLLBACK;"#,
        )
        .await
        .unwrap();
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);

    env.a
        .batch_execute(
            r#"BEGIN;
           INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('Ada', 10.50);
           UPDATE dbo."ORDERS" SET "STATUS" = 'C' WHERE "CUST_NAME" = 'Ada';
           COMMIT;"#,
        )
        .await
        .unwrap();
    let got = rows(
        &env.a,
        "SELECT op::text, image->>'CUST_NAME', image->>'STATUS', image->'AMOUNT', image ? 'REMARK', image->'REMARK' \
         FROM tandem.outbox ORDER BY seq",
    )
    .await;
    assert_eq!(
        got,
        vec![
            vec!["I", "Ada", "O", "10.50", "t", "null"],
            vec!["U", "Ada", "C", "10.50", "t", "null"],
        ],
        "full images, exact numeric scale, NULL kept as a member"
    );
    let seqs = rows(
        &env.a,
        "SELECT seq FROM tandem.outbox ORDER BY captured_at, seq",
    )
    .await;
    assert!(seqs[0][0].parse::<i64>().unwrap() < seqs[1][0].parse::<i64>().unwrap());

    // An update that changes nothing is not captured.
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "STATUS" = "STATUS""#)
        .await
        .unwrap();
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 2);
}

#[tokio::test]
async fn inserts_updates_deletes_flow_both_ways_mapped_and_linked() {
    let env = Env::new("both_ways").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "STATUS", "AMOUNT") VALUES ('Ada', 'O', 12.30)"#)
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status, amount) VALUES ('Bob', 'closed', 7)")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed, r.suspended), (2, 0, 0), "{r:?}");

    // Mapped: renamed columns, translated codes; each side sees the other's id.
    let a = rows(&env.a, r#"SELECT "ORDER_NO", "CUST_NAME", "STATUS", "AMOUNT", "NEW_ID" FROM dbo."ORDERS" ORDER BY "CUST_NAME""#).await;
    let b = rows(
        &env.b,
        "SELECT id, customer, status, amount, legacy_no FROM orders ORDER BY customer",
    )
    .await;
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 2);
    let (a_ada, a_bob) = (&a[0], &a[1]);
    let (b_ada, b_bob) = (&b[0], &b[1]);
    assert_eq!(&b_ada[1..4], &["Ada", "open", "12.30"]);
    assert_eq!(&a_bob[1..4], &["Bob", "C", "7.00"]);
    assert_eq!(a_ada[4], b_ada[0], "A's NEW_ID holds B's id");
    assert_eq!(b_ada[4], a_ada[0], "B's legacy_no holds A's ORDER_NO");
    assert_eq!(a_bob[4], b_bob[0]);
    assert_eq!(b_bob[4], a_bob[0]);

    // Linked in both id maps, with JSON-array keys.
    for c in [&env.a, &env.b] {
        let links = rows(
            c,
            "SELECT a_key, b_key, deleted FROM tandem.id_map WHERE entity = 'order' ORDER BY a_key",
        )
        .await;
        let mut want = vec![
            vec![
                format!("[{}]", a_ada[0]),
                format!("[{}]", b_ada[0]),
                "f".into(),
            ],
            vec![
                format!("[{}]", a_bob[0]),
                format!("[{}]", b_bob[0]),
                "f".into(),
            ],
        ];
        want.sort();
        assert_eq!(links, want);
    }
    // No echo: both outboxes stay empty.
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
    assert_eq!(count(&env.b, "SELECT count(*) FROM tandem.outbox").await, 0);

    // Updates both ways.
    env.a
        .batch_execute(
            r#"UPDATE dbo."ORDERS" SET "STATUS" = 'X', "AMOUNT" = NULL WHERE "CUST_NAME" = 'Ada'"#,
        )
        .await
        .unwrap();
    env.b
        .batch_execute("UPDATE orders SET customer = 'Bobby' WHERE customer = 'Bob'")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        rows(
            &env.b,
            "SELECT customer, status, amount FROM orders ORDER BY customer"
        )
        .await,
        table(&[&["Ada", "cancelled", "NULL"], &["Bobby", "closed", "7.00"]])
    );
    assert_eq!(
        rows(
            &env.a,
            r#"SELECT "CUST_NAME", "STATUS" FROM dbo."ORDERS" ORDER BY "ORDER_NO""#
        )
        .await,
        table(&[&["Ada", "X"], &["Bobby", "C"]])
    );

    // Deletes both ways; links become tombstones.
    env.a
        .batch_execute(r#"DELETE FROM dbo."ORDERS" WHERE "CUST_NAME" = 'Ada'"#)
        .await
        .unwrap();
    env.b
        .batch_execute("DELETE FROM orders WHERE customer = 'Bobby'")
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (2, 0), "{r:?}");
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        0
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 0);
    for c in [&env.a, &env.b] {
        assert_eq!(
            count(c, "SELECT count(*) FROM tandem.id_map WHERE NOT deleted").await,
            0
        );
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
}

/// Re-queues a copy of an outbox row that was already applied (same seq): what a redelivery
/// after a crash between target commit and source write-back looks like.
async fn requeue(env: &Env, seq: i64, op: &str, image: &str) {
    env.a
        .execute(
            "INSERT INTO tandem.outbox (seq, entity, op, image) OVERRIDING SYSTEM VALUE \
             VALUES ($1, 'order', $2::text::\"char\", $3::text::jsonb)",
            &[&seq, &op, &image],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicates_and_older_images_change_nothing() {
    let env = Env::new("guard").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ('v1', 1)"#)
        .await
        .unwrap();
    let first = rows(&env.a, "SELECT seq, image::text FROM tandem.outbox").await;
    env.drain().await;
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'v2', "AMOUNT" = 2"#)
        .await
        .unwrap();
    let second = rows(&env.a, "SELECT seq, image::text FROM tandem.outbox").await;
    env.drain().await;
    let before = rows(&env.b, "SELECT xmin::text, customer, amount FROM orders").await;
    assert_eq!(&before[0][1..], &["v2", "2.00"]);

    // The same change again, and the older image after the newer one.
    requeue(&env, second[0][0].parse().unwrap(), "U", &second[0][1]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "duplicate: {r:?}");
    requeue(&env, first[0][0].parse().unwrap(), "I", &first[0][1]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "older image: {r:?}");
    assert_eq!(
        rows(&env.b, "SELECT xmin::text, customer, amount FROM orders").await,
        before,
        "B untouched (not even rewritten)"
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 1);
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 0);
}

#[tokio::test]
async fn a_late_update_never_revives_a_deleted_record() {
    let env = Env::new("tombstone").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('gone soon')"#)
        .await
        .unwrap();
    env.drain().await;
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = 'late'"#)
        .await
        .unwrap();
    let update = rows(&env.a, "SELECT seq, image::text FROM tandem.outbox").await;
    env.a
        .batch_execute(r#"DELETE FROM tandem.outbox; DELETE FROM dbo."ORDERS""#)
        .await
        .unwrap();
    // The delete travels first (the update was "delayed").
    let r = env.drain().await;
    assert_eq!(r.written, 1);
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 0);
    requeue(&env, update[0][0].parse().unwrap(), "U", &update[0][1]).await;
    let r = env.drain().await;
    assert_eq!((r.stale, r.written), (1, 0), "{r:?}");
    assert_eq!(
        count(&env.b, "SELECT count(*) FROM orders").await,
        0,
        "not revived"
    );
    assert_eq!(
        count(&env.b, "SELECT count(*) FROM tandem.id_map WHERE deleted").await,
        1,
        "the tombstone stays"
    );
}

#[tokio::test]
async fn an_apply_that_changes_nothing_writes_nothing() {
    let env = Env::new("no_echo").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('same')"#)
        .await
        .unwrap();
    env.drain().await;
    let before = rows(&env.b, "SELECT xmin::text FROM orders").await;
    // REMARK is not mapped: the change travels, but B already holds every mapped value.
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "REMARK" = 'only in A'"#)
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.unchanged, r.written), (1, 0), "{r:?}");
    assert_eq!(rows(&env.b, "SELECT xmin::text FROM orders").await, before);
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
}

#[tokio::test]
async fn children_follow_their_parents_both_ways_with_given_and_generated_keys() {
    let env = Env::new("children").await;
    // Parent and children in one transaction at A (A's item key is ORDER_NO + LINE_NO).
    env.a
        .batch_execute(
            r#"BEGIN;
               INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (500, 'P');
               INSERT INTO dbo."ORDER_ITEMS" VALUES (500, 1, 3), (500, 2, 4);
               COMMIT;"#,
        )
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (3, 0), "{r:?}");
    let b_order = count(&env.b, "SELECT id FROM orders").await;
    assert_eq!(
        rows(
            &env.b,
            "SELECT order_id, line_no, quantity FROM order_items ORDER BY line_no"
        )
        .await,
        table(&[
            &[&b_order.to_string(), "1", "3"],
            &[&b_order.to_string(), "2", "4"]
        ])
    );
    // A child created at B: A's key is given (ORDER_NO through the order's link + LINE_NO).
    env.b
        .execute(
            "INSERT INTO order_items (order_id, line_no, quantity) VALUES ($1, 3, 9)",
            &[&b_order],
        )
        .await
        .unwrap();
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 0), "{r:?}");
    assert_eq!(
        rows(
            &env.a,
            r#"SELECT "ORDER_NO", "LINE_NO", "QTY" FROM dbo."ORDER_ITEMS" ORDER BY 2"#
        )
        .await,
        table(&[&["500", "1", "3"], &["500", "2", "4"], &["500", "3", "9"]])
    );
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM tandem.id_map WHERE entity = 'order_item' AND a_key = '[500,3]'"
        )
        .await,
        1
    );
    // Deleting the parent at B cascades there; A ends the same, nothing pending.
    env.b.batch_execute("DELETE FROM orders").await.unwrap();
    let r = env.drain().await;
    assert_eq!((r.failed, r.suspended), (0, 0), "{r:?}");
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDER_ITEMS""#).await,
        0
    );
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        0
    );
    for c in [&env.a, &env.b] {
        assert_eq!(count(c, "SELECT count(*) FROM tandem.outbox").await, 0);
    }
}

#[tokio::test]
async fn a_key_change_travels_as_delete_and_insert() {
    let env = Env::new("key_change").await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("ORDER_NO", "CUST_NAME") VALUES (7, 'K')"#)
        .await
        .unwrap();
    env.drain().await;
    env.a
        .batch_execute(r#"UPDATE dbo."ORDERS" SET "ORDER_NO" = 8"#)
        .await
        .unwrap();
    assert_eq!(
        rows(&env.a, "SELECT op::text FROM tandem.outbox ORDER BY seq").await,
        table(&[&["D"], &["I"]])
    );
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        rows(&env.b, "SELECT customer, legacy_no FROM orders").await,
        table(&[&["K", "8"]])
    );
    assert_eq!(
        rows(
            &env.b,
            "SELECT a_key, deleted FROM tandem.id_map ORDER BY a_key"
        )
        .await,
        table(&[&["[7]", "t"], &["[8]", "f"]])
    );
}

#[tokio::test]
async fn the_pending_query_is_an_index_scan_even_with_stale_statistics() {
    let env = Env::new("plan").await;
    // A big backlog the planner has no statistics for (no ANALYZE, autovacuum not yet run).
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") SELECT 'p' || g FROM generate_series(1, 20000) g"#)
        .await
        .unwrap();
    // pending() pins enable_seqscan = off for its own body; show the plan it gets.
    let plan = rows(
        &env.a,
        "BEGIN; SET LOCAL enable_seqscan = off; \
         EXPLAIN SELECT * FROM tandem.outbox \
         WHERE NOT suspended AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp()) \
         ORDER BY seq LIMIT 500; COMMIT;",
    )
    .await;
    let plan: String = plan
        .iter()
        .map(|r| r.join(" "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("Index Scan using outbox_pending"), "{plan}");
    assert!(!plan.contains("Sort"), "{plan}");
    assert_eq!(
        rows(
            &env.a,
            "SELECT proconfig::text FROM pg_proc WHERE proname = 'pending' AND pronamespace = 'tandem'::regnamespace"
        )
        .await,
        table(&[&["{enable_seqscan=off}"]])
    );
    let claimed = count(&env.a, "SELECT count(*) FROM tandem.pending(500)").await;
    assert_eq!(claimed, 500);
}
