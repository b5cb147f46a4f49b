//! The command line as users and scripts meet it: exit codes, messages, install/uninstall,
//! status, run --once.

mod common;

use common::fixtures::{count, rows, Env, A_SCHEMA, B_SCHEMA, DEMO_CONFIG};

fn text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn bare(name: &str, install: bool) -> Env {
    let (a, b) = common::fresh_dbs(name);
    Env::on(a, b, DEMO_CONFIG, A_SCHEMA, B_SCHEMA, install).await
}

#[tokio::test]
async fn check_passes_on_a_good_setup_and_says_what_is_missing() {
    let env = bare("check_ok", false).await;
    let o = env.tandem_run(&["check"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    assert!(out.contains("not installed"), "{out}");
    assert!(out.contains("ok:"), "{out}");
}

#[tokio::test]
async fn check_reports_every_schema_problem_with_entity_table_and_column() {
    let (a, b) = common::fresh_dbs("check_bad");
    let broken_b = B_SCHEMA.replace("customer   text NOT NULL", "\"Customer\" text NOT NULL");
    let env = Env::on(a, b, DEMO_CONFIG, A_SCHEMA, &broken_b, false).await;
    env.b.batch_execute("DROP TABLE order_items").await.unwrap();
    let o = env.tandem_run(&["check"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("entity order")
            && err.contains(r#"column "customer" does not exist in table public.orders"#)
            && err.contains("did you mean \"Customer\""),
        "{err}"
    );
    assert!(
        err.contains("entity order_item")
            && err.contains("table public.order_items does not exist"),
        "{err}"
    );
    assert!(
        err.trim_end().ends_with("then run `tandem check` again"),
        "an operator's fix ends with what to run: {err}"
    );
}

#[tokio::test]
async fn check_compares_each_mapped_column_pair_across_the_sides() {
    let (a, b) = common::fresh_dbs("check_pairs");
    let a_schema = format!("{A_SCHEMA}\nALTER TABLE dbo.\"ORDERS\" ADD \"PLACED\" timestamp;");
    let b_schema = B_SCHEMA
        .replace(
            "customer   text NOT NULL",
            "customer   varchar(10) NOT NULL",
        )
        .replace("amount     numeric(12,2)", "amount     numeric(12,1)")
        .replace(
            "legacy_no  integer,",
            "legacy_no  integer, placed_at timestamptz, region text NOT NULL,",
        );
    let config = DEMO_CONFIG.replace(
        "  { a = \"AMOUNT\", b = \"amount\" },",
        "  { a = \"AMOUNT\", b = \"amount\" },\n  { a = \"PLACED\", b = \"placed_at\" },",
    );
    let env = Env::on(a, b, &config, &a_schema, &b_schema, false).await;
    let o = env.tandem_run(&["check"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    // Errors: no insert at B can succeed; zoned against unzoned times never compare equal.
    for want in [
        "entity order: column B.region of table public.orders is NOT NULL without a default and no mapped column feeds it",
        "entity order: column A.PLACED (timestamp without time zone) → B.placed_at (timestamp with time zone): a time without a zone against one with a zone",
        "entity order: column B.placed_at (timestamp with time zone) → A.PLACED (timestamp without time zone)",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    // Warnings: some values cannot arrive; said before install, each with both types.
    for want in [
        "warning: entity order: column A.CUST_NAME (character varying(60)) → B.customer (character varying(10)): values longer than 10 characters will be refused (the source allows 60)",
        "warning: entity order: column A.AMOUNT (numeric(12,2)) → B.amount (numeric(12,1)): 2 decimals into 1: values are rounded at the target",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        !out.contains("QTY") && !err.contains("QTY"),
        "fitting pairs are not mentioned: {out}{err}"
    );
}

#[tokio::test]
async fn check_rejects_a_bad_config_with_file_and_line() {
    let env = bare("check_cfg", false).await;
    let bad = DEMO_CONFIG.replace("[sync]\n", "[sync]\nbatch_sise = 10\n");
    std::fs::write(&env.config_path, bad).unwrap();
    let o = env.tandem_run(&["check"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("tandem.toml:") && err.contains("batch_sise"),
        "{err}"
    );
    assert!(
        err.trim_end()
            .ends_with("fix the config, then run `tandem check`"),
        "{err}"
    );
}

#[tokio::test]
async fn install_is_idempotent_and_uninstall_removes_exactly_its_objects() {
    let env = bare("install", false).await;
    let dry = env.tandem_run(&["install", "--dry-run"]);
    let (out, _) = text(&dry);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        out.contains("CREATE TABLE IF NOT EXISTS \"tandem\".outbox"),
        "{out}"
    );
    assert!(
        out.contains(
            "CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON \"dbo\".\"ORDERS\""
        ),
        "{out}"
    );
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tandem'"
        )
        .await,
        0,
        "dry run touched nothing"
    );

    for _ in 0..2 {
        let o = env.tandem_run(&["install"]);
        assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    }
    for c in [&env.a, &env.b] {
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'tandem_capture'"
            )
            .await,
            2
        );
        assert_eq!(count(c, "SELECT count(*) FROM pg_class WHERE relnamespace = 'tandem'::regnamespace AND relkind = 'r'").await, 6, "outbox, id_map, conflicts, backfill, fingerprint, sent_mark");
        assert_eq!(
            count(c, "SELECT count(*) FROM tandem.sent_mark").await,
            1,
            "the sent mark is one row"
        );
        assert_eq!(
            count(c, "SELECT count(*) FROM tandem.fingerprint").await,
            2,
            "one table fingerprint per entity"
        );
    }
    // An install of an earlier version (no fingerprints, no claim that skips paused
    // entities, no sent mark): status still answers, and install upgrades it.
    env.a
        .batch_execute(
            "DROP TABLE tandem.fingerprint;
             DROP TABLE tandem.sent_mark;
             DROP FUNCTION tandem.pending(integer, text[]);
             DROP FUNCTION tandem.claim_batch(integer, bigint, text[], text[]);
             COMMENT ON TABLE tandem.outbox IS NULL;",
        )
        .await
        .unwrap();
    let o = env.tandem_run(&["status"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // `run` refuses those objects (every apply would fail on the missing sent mark), saying
    // which side and what to do; `check` says the same.
    let o = env.tandem_run(&["run", "--once"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(
        err.contains("side A: tandem's objects were installed by another version of tandem (format unmarked, this tandem needs format 1): run `tandem install`"),
        "{err}"
    );
    let o = env.tandem_run(&["check"]);
    let (out, _) = text(&o);
    assert!(
        out.contains("side A: tandem's objects were installed by another version")
            && out.contains("side B: tandem is installed"),
        "{out}"
    );
    let o = env.tandem_run(&["install", "--side", "a"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(
        count(&env.a, "SELECT count(*) FROM tandem.fingerprint").await,
        2
    );
    assert_eq!(
        count(&env.a, "SELECT count(*) FROM tandem.sent_mark").await,
        1
    );
    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('kept')"#)
        .await
        .unwrap();

    let o = env.tandem_run(&["uninstall"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    for c in [&env.a, &env.b] {
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM pg_trigger WHERE tgname = 'tandem_capture'"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM pg_namespace WHERE nspname = 'tandem'"
            )
            .await,
            0
        );
        assert_eq!(
            count(
                c,
                "SELECT count(*) FROM pg_proc WHERE proname IN ('capture', 'pending')"
            )
            .await,
            0
        );
    }
    assert_eq!(
        rows(&env.a, r#"SELECT "CUST_NAME" FROM dbo."ORDERS""#).await,
        vec![vec!["kept".to_string()]],
        "business data untouched"
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 0);
}

#[tokio::test]
async fn run_once_drains_and_reports_through_its_exit_code() {
    let env = bare("run_once", true).await;
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('one'), ('two')"#)
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status) VALUES ('three', 'open')")
        .await
        .unwrap();

    let o = env.tandem_run(&["status", "--json"]);
    let (out, _) = text(&o);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let a_order = status
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["entity"] == "order" && r["side"] == "a")
        .unwrap();
    assert_eq!(a_order["pending"], 2);
    assert!(a_order["oldest_pending_s"].as_f64().unwrap() >= 0.0);

    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        3
    );
    assert_eq!(count(&env.b, "SELECT count(*) FROM orders").await, 3);

    let o = env.tandem_run(&["status"]);
    let (out, _) = text(&o);
    assert!(out.contains("ENTITY") && out.contains("order"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("ok: nothing suspended or paused, 0 changes pending"),
        "status ends with one line on what needs attention: {out}"
    );

    // A value B cannot take fails that change (exit 1) and nothing else.
    env.a.batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "STATUS") VALUES ('bad code', 'Z'), ('fine', 'C')"#).await.unwrap();
    let o = env.tandem_run(&["run", "--once"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("entity order") && err.contains("STATUS") && err.contains("\"Z\""),
        "the log names entity, column and value: {err}"
    );
    assert!(
        err.trim_end()
            .ends_with("the others are retried by the next `tandem run`"),
        "{err}"
    );
    assert_eq!(
        count(
            &env.b,
            "SELECT count(*) FROM orders WHERE customer = 'fine'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM tandem.outbox WHERE attempts = 1 AND last_error LIKE '%STATUS%'"
        )
        .await,
        1,
        "the failed change waits in the outbox with its error"
    );
}
