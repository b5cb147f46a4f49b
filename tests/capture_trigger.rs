//! The PostgreSQL capture trigger: each table gets a capture function of its own (cheaper than
//! the generic `tandem.capture(entity, key...)` of older installs) that writes exactly the
//! outbox rows the generic one writes — ops, keys and images — for inserts, updates, deletes,
//! key changes, no-op updates, numeric scale changes, several key columns and hostile names;
//! install is idempotent and uninstall leaves no function or trigger behind.

mod common;

use common::fixtures::{count, rows, Env};
use tandem::config::{Side, TableName};
use tandem::endpoint::postgres::sql::capture_function_name;
use tandem::endpoint::InstallState;
use tokio_postgres::Client;

/// Schema, table, key column and entity names full of quotes, spaces, SQL text, dollar-quote
/// tags and a backslash: they end up inside the generated function's body.
const A_SCHEMA: &str = r#"
CREATE SCHEMA "Cap ""Schema"" $fn$";
CREATE TABLE "Cap ""Schema"" $fn$"."it's ""items""; DROP TABLE x; --" (
    "Id"            integer,
    "K ""2"" $fn$"  text,
    name            text,
    qty             integer,
    price           numeric(12,2),
    free            numeric,
    at              timestamptz,
    day             date,
    flag            boolean,
    doc             jsonb,
    js              json,
    ratio           double precision,
    arr             integer[],
    PRIMARY KEY ("Id", "K ""2"" $fn$")
);
CREATE TABLE plain_keys (n numeric, t timestamptz, v text, UNIQUE (n, t));
-- A write made by another trigger runs at trigger depth 2: captured even while tandem applies.
CREATE TABLE poke (id integer);
CREATE FUNCTION poke_fn() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE "Cap ""Schema"" $fn$"."it's ""items""; DROP TABLE x; --" SET qty = qty + 1 WHERE "Id" = 10;
    RETURN NULL;
END $$;
CREATE TRIGGER poke AFTER INSERT ON poke FOR EACH ROW EXECUTE FUNCTION poke_fn();
"#;

const T: &str = r#""Cap ""Schema"" $fn$"."it's ""items""; DROP TABLE x; --""#;
const K2: &str = r#""K ""2"" $fn$""#;
const ENTITY: &str = r#"it's "odd" \ $fn$; DROP TABLE x; --"#;

const CONFIG: &str = r##"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"
[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[[entities]]
name = "it's \"odd\" \\ $fn$; DROP TABLE x; --"
direction = "a_to_b"
a = { table = "Cap \"Schema\" $fn$.it's \"items\"; DROP TABLE x; --", key = ["Id", "K \"2\" $fn$"] }
b = { table = "items", key = ["id", "k2"] }
columns = [
  { a = "name", b = "name" },
  { a = "qty", b = "qty" },
  { a = "price", b = "price" },
  { a = "free", b = "free" },
  { a = "at", b = "at" },
  { a = "day", b = "day" },
  { a = "flag", b = "flag" },
  { a = "doc", b = "doc" },
  { a = "js", b = "js" },
  { a = "ratio", b = "ratio" },
  { a = "arr", b = "arr" },
]

[[entities]]
name = "plain"
direction = "a_to_b"
a = { table = "public.plain_keys", key = ["n", "t"] }
b = { table = "plain_keys", key = ["n", "t"] }
columns = [{ a = "v", b = "v" }]
"##;

fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Every kind of change, from an empty outbox and empty tables.
async fn workload(c: &Client) {
    let sql = format!(
        r#"
TRUNCATE {T}, plain_keys, tandem.outbox;
SET TimeZone = 'Asia/Kolkata';
INSERT INTO {T} ("Id", {K2}, name, qty, price, free, at, day, flag, doc, js, ratio, arr) VALUES
  (1, 'a', 'one', 1, 1.50, 1.0, '2024-02-29 23:59:59.123456+05:30', '2024-01-01', true,
   '{{"b": [1, 2.50]}}', '{{"x":  1}}', 0.1, '{{1,2}}'),
  (2, 'b ''q'' "d"', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
  (3, '', '', 0, -0.01, 'NaN', 'infinity', '0001-01-01', false, 'null', '[]', 'Infinity', '{{}}');
UPDATE {T} SET qty = qty + 1 WHERE "Id" = 1;
UPDATE {T} SET name = name, qty = qty WHERE "Id" = 1;
UPDATE {T} SET free = 1.00 WHERE "Id" = 1;
UPDATE {T} SET free = 1.00 WHERE "Id" = 1;
UPDATE {T} SET "Id" = 10 WHERE "Id" = 1;
UPDATE {T} SET {K2} = 'c' WHERE "Id" = 2;
UPDATE {T} SET name = 'x';
UPDATE {T} SET doc = '{{"b": [1, 2.5]}}', js = '{{"x": 2}}' WHERE "Id" = 10;
UPDATE {T} SET at = '2024-02-29 18:29:59.123456+00' WHERE "Id" = 10;
DELETE FROM {T} WHERE "Id" = 3;
SET tandem.applying = 'on';
UPDATE {T} SET qty = 100 WHERE "Id" = 10;
INSERT INTO poke VALUES (1);
SELECT set_config('tandem.applying', '{T_LIT}'::regclass::oid::text, false);
UPDATE {T} SET qty = 200 WHERE "Id" = 10;
SELECT set_config('tandem.applying', 'plain_keys'::regclass::oid::text, false);
UPDATE {T} SET qty = 300 WHERE "Id" = 10;
RESET tandem.applying;
INSERT INTO plain_keys VALUES (1.0, '2024-01-01 00:00+00', 'a'), (2, NULL, 'b');
UPDATE plain_keys SET n = 1.00 WHERE v = 'a';
UPDATE plain_keys SET t = '2024-01-01 05:30+05:30' WHERE v = 'a';
UPDATE plain_keys SET v = 'c' WHERE v = 'b';
UPDATE plain_keys SET t = '2024-01-02 00:00+00' WHERE v = 'a';
DELETE FROM plain_keys;
RESET TimeZone;
"#,
        T_LIT = T.replace('\'', "''"),
    );
    c.batch_execute(&sql)
        .await
        .unwrap_or_else(|e| panic!("workload: {e}"));
}

async fn outbox(c: &Client) -> Vec<Vec<String>> {
    rows(
        c,
        "SELECT entity, op::text, key::text, image::text FROM tandem.outbox ORDER BY seq",
    )
    .await
}

#[tokio::test]
async fn generated_functions_write_what_the_generic_capture_wrote() {
    let (a_url, b_url) = common::fresh_dbs("capture_same");
    let env = Env::on(a_url, b_url, CONFIG, A_SCHEMA, "", true).await;
    let func = capture_function_name(&TableName {
        schema: Some(r#"Cap "Schema" $fn$"#.into()),
        name: r#"it's "items"; DROP TABLE x; --"#.into(),
    });
    assert!(func.len() <= 63, "{func}");
    let uses = format!(
        "SELECT count(*) FROM pg_trigger WHERE tgname = 'tandem_capture' AND tgrelid = {}::regclass AND tgfoid = {}::regprocedure",
        lit(T),
        lit(&format!("tandem.\"{}\"()", func.replace('"', "\"\"")))
    );
    assert_eq!(count(&env.a, &uses).await, 1, "the trigger calls {func}");

    workload(&env.a).await;
    let generated = outbox(&env.a).await;

    // What users see, spelled out for the hostile table.
    let ops: Vec<Vec<String>> = generated
        .iter()
        .filter(|r| r[0] == ENTITY)
        .map(|r| vec![r[1].clone(), r[2].clone()])
        .collect();
    let want: Vec<Vec<String>> = [
        ("I", r#"[1, "a"]"#),
        ("I", r#"[2, "b 'q' \"d\""]"#),
        ("I", r#"[3, ""]"#),
        ("U", r#"[1, "a"]"#), // qty + 1
        ("U", r#"[1, "a"]"#), // free 1.0 → 1.00: a change; the repeat and name = name are not
        ("D", r#"[1, "a"]"#), // key change: delete + insert
        ("I", r#"[10, "a"]"#),
        ("D", r#"[2, "b 'q' \"d\""]"#),
        ("I", r#"[2, "c"]"#),
        ("U", r#"[3, ""]"#), // name = 'x' on three rows (in heap order)
        ("U", r#"[10, "a"]"#),
        ("U", r#"[2, "c"]"#),
        ("U", r#"[10, "a"]"#), // jsonb 2.50 → 2.5 and json; then the same instant: nothing
        ("D", r#"[3, ""]"#),
        ("U", r#"[10, "a"]"#), // by another trigger (depth 2) while tandem applies
        ("U", r#"[10, "a"]"#), // tandem applies another table
    ]
    .iter()
    .map(|(o, k)| vec![o.to_string(), k.to_string()])
    .collect();
    assert_eq!(ops, want);
    let plain: Vec<Vec<String>> = generated
        .iter()
        .filter(|r| r[0] == "plain")
        .map(|r| vec![r[1].clone(), r[2].clone()])
        .collect();
    let want_plain: Vec<Vec<String>> = [
        ("I", r#"[1.0, "2024-01-01T05:30:00+05:30"]"#),
        ("I", "[2, null]"),
        ("U", r#"[1.00, "2024-01-01T05:30:00+05:30"]"#), // key 1.0 → 1.00: same key, new text
        ("U", "[2, null]"),
        ("D", r#"[1.00, "2024-01-01T05:30:00+05:30"]"#),
        ("I", r#"[1.00, "2024-01-02T05:30:00+05:30"]"#),
        ("D", "[2, null]"), // (in heap order)
        ("D", r#"[1.00, "2024-01-02T05:30:00+05:30"]"#),
    ]
    .iter()
    .map(|(o, k)| vec![o.to_string(), k.to_string()])
    .collect();
    assert_eq!(plain, want_plain);
    let first = &generated[0];
    assert_eq!(
        first[3],
        r#"{"Id": 1, "at": "2024-02-29T23:59:59.123456+05:30", "js": {"x": 1}, "arr": [1, 2], "day": "2024-01-01", "doc": {"b": [1, 2.50]}, "qty": 1, "flag": true, "free": 1.0, "name": "one", "price": 1.50, "ratio": 0.1, "K \"2\" $fn$": "a"}"#,
        "the full row"
    );

    // The same workload through the generic capture(entity, key...): the same rows.
    let generic = |table: &str, entity: &str, keys: &[&str]| {
        let args: Vec<String> = std::iter::once(entity)
            .chain(keys.iter().copied())
            .map(lit)
            .collect();
        format!(
            "DROP TRIGGER tandem_capture ON {table}; CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION tandem.capture({});",
            args.join(", ")
        )
    };
    env.a
        .batch_execute(&format!(
            "{}{}",
            generic(T, ENTITY, &["Id", r#"K "2" $fn$"#]),
            generic("plain_keys", "plain", &["n", "t"])
        ))
        .await
        .unwrap();
    workload(&env.a).await;
    assert_eq!(outbox(&env.a).await, generated);

    // The entity name in the generated body does not depend on the session's settings.
    env.a.batch_execute(&generated_back(T)).await.unwrap();
    let c = common::connect(&env.a_url).await;
    c.batch_execute(&format!(
        "SET standard_conforming_strings = off; TRUNCATE tandem.outbox; \
         INSERT INTO {T} (\"Id\", {K2}) VALUES (7, 'z')"
    ))
    .await
    .unwrap();
    assert_eq!(
        rows(&c, "SELECT entity, key::text FROM tandem.outbox").await,
        vec![vec![ENTITY.to_string(), r#"[7, "z"]"#.to_string()]]
    );
}

/// Puts the generated function back behind `table`'s trigger.
fn generated_back(table: &str) -> String {
    let func = capture_function_name(&TableName {
        schema: Some(r#"Cap "Schema" $fn$"#.into()),
        name: r#"it's "items"; DROP TABLE x; --"#.into(),
    });
    format!(
        "DROP TRIGGER tandem_capture ON {table}; CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION tandem.\"{}\"();",
        func.replace('"', "\"\"")
    )
}

#[tokio::test]
async fn install_twice_is_fine_and_uninstall_leaves_nothing() {
    let (a_url, b_url) = common::fresh_dbs("capture_install");
    let env = Env::on(a_url, b_url, CONFIG, A_SCHEMA, "", false).await;
    let dry = env.tandem_run(&["install", "--side", "a", "--dry-run"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(0));
    assert!(
        text.contains(
            "CREATE OR REPLACE FUNCTION \"tandem\".\"capture_public.plain_keys\"() RETURNS trigger"
        ) && text
            .contains("FOR EACH ROW EXECUTE FUNCTION \"tandem\".\"capture_public.plain_keys\"();")
            && text.contains("jsonb_build_array(NEW.\"n\", NEW.\"t\")"),
        "{text}"
    );
    // A body holding `$fn$` (here in a key column's name) takes another dollar-quote tag; an
    // entity name with a backslash is an escape string, whatever standard_conforming_strings.
    assert!(
        text.contains("LANGUAGE plpgsql AS $fn1$")
            && text.contains(r#"E'it''s "odd" \\ $fn$; DROP TABLE x; --'"#)
            && text.contains(r#"jsonb_build_array(NEW."Id", NEW."K ""2"" $fn$")"#),
        "{text}"
    );
    let functions = "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                     WHERE n.nspname = 'tandem' AND p.proname LIKE 'capture%'";
    let triggers = "SELECT count(*) FROM pg_trigger WHERE tgname = 'tandem_capture'";
    for _ in 0..2 {
        let o = env.tandem_run(&["install"]);
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert_eq!(count(&env.a, triggers).await, 2);
        assert_eq!(
            count(&env.a, functions).await,
            3,
            "capture() and one per table"
        );
    }
    let state = tandem::endpoint::open(env.config.clone(), Side::A)
        .unwrap()
        .install_state()
        .await
        .unwrap();
    assert!(
        matches!(
            state,
            InstallState::Installed {
                triggers: 2,
                expected: 2,
                ..
            }
        ),
        "{state:?}"
    );
    // Changes are captured.
    env.a
        .batch_execute("INSERT INTO plain_keys VALUES (1, now(), 'x')")
        .await
        .unwrap();
    assert_eq!(count(&env.a, "SELECT count(*) FROM tandem.outbox").await, 1);

    // A trigger of an older install (the generic function) still counts and still goes.
    env.a
        .batch_execute(
            "DROP TRIGGER tandem_capture ON plain_keys; \
             CREATE TRIGGER tandem_capture AFTER INSERT OR UPDATE OR DELETE ON plain_keys \
             FOR EACH ROW EXECUTE FUNCTION tandem.capture('plain', 'n', 't')",
        )
        .await
        .unwrap();
    let state = tandem::endpoint::open(env.config.clone(), Side::A)
        .unwrap()
        .install_state()
        .await
        .unwrap();
    assert!(
        matches!(state, InstallState::Installed { triggers: 2, .. }),
        "{state:?}"
    );
    // A table dropped since install leaves its function behind; uninstall takes it too.
    env.a
        .batch_execute(&format!("DROP TABLE {T}"))
        .await
        .unwrap();
    assert_eq!(count(&env.a, functions).await, 3);

    let o = env.tandem_run(&["uninstall"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(count(&env.a, triggers).await, 0);
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM pg_proc WHERE proname LIKE 'capture%' OR proname = 'pending'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'tandem'"
        )
        .await,
        0
    );
    // The user's own trigger and data are untouched.
    assert_eq!(
        count(
            &env.a,
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'poke'"
        )
        .await,
        1
    );
    assert_eq!(count(&env.a, "SELECT count(*) FROM plain_keys").await, 1);
}

#[test]
fn function_names_are_stable_unique_and_fit_postgresql() {
    let t = |schema: Option<&str>, name: &str| TableName {
        schema: schema.map(str::to_string),
        name: name.to_string(),
    };
    assert_eq!(
        capture_function_name(&t(Some("public"), "items")),
        "capture_public.items"
    );
    assert_eq!(capture_function_name(&t(None, "items")), "capture_items");
    let long = "x".repeat(60);
    let a = capture_function_name(&t(Some("s"), &format!("{long}a")));
    let b = capture_function_name(&t(Some("s"), &format!("{long}b")));
    assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
    assert_ne!(a, b);
    assert_eq!(a, capture_function_name(&t(Some("s"), &format!("{long}a"))));
    // Cut on a character boundary.
    let wide = capture_function_name(&t(Some("s"), &"é".repeat(40)));
    assert!(
        wide.len() <= 63 && wide.starts_with("capture_s.é"),
        "{wide}"
    );
}
