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
