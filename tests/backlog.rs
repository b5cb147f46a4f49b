//! A backlog's bookkeeping: a change of a linked record leaves the source link unwritten.
//! (Folding and pipelining of a backlog run for every pairing in `scenarios.rs`:
//! `a_backlog_of_updates_costs_one_apply_per_record_and_keeps_order`.)

mod common;

use common::fixtures::*;

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
