//! Core sync on PostgreSQL specifics. The core scenarios themselves (capture, mapped apply
//! both ways, id links, the sequence guard, tombstones, no echo, keys) are written once in
//! `scenarios.rs` and run on every pairing of PostgreSQL and SQL Server.

mod common;

use common::fixtures::{count, rows, table, Env};

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
    // The same while an entity is paused by schema drift (its rows are filtered on the way).
    let plan = rows(
        &env.a,
        "BEGIN; SET LOCAL enable_seqscan = off; \
         EXPLAIN SELECT * FROM tandem.outbox \
         WHERE NOT suspended AND (next_attempt_at IS NULL OR next_attempt_at <= clock_timestamp()) \
           AND entity <> ALL('{order_item}'::text[]) \
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
    // Both forms: pending(n) of earlier versions and pending(n, paused entities).
    assert_eq!(
        rows(
            &env.a,
            "SELECT proconfig::text FROM pg_proc WHERE proname = 'pending' AND pronamespace = 'tandem'::regnamespace"
        )
        .await,
        table(&[&["{enable_seqscan=off}"], &["{enable_seqscan=off}"]])
    );
    let claimed = count(&env.a, "SELECT count(*) FROM tandem.pending(500)").await;
    assert_eq!(claimed, 500);
    let claimed = count(
        &env.a,
        "SELECT count(*) FROM tandem.pending(500, '{order}')",
    )
    .await;
    assert_eq!(claimed, 0, "nothing of a paused entity");
}
