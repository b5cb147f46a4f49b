//! Converters (`convert`, `values` with `prefer`) end to end, on every pairing of dialects:
//! `pg_pg::…`, `ms_pg::…` (A on SQL Server) and `pg_ms::…` (B on SQL Server). A legacy
//! product table (a padded `char` name, `Y`/`N` flags, prices in cents, weights with more
//! decimals than the new system keeps, local times in Paris, a status with two codes for one
//! meaning) against its redesign: values converted both ways, the lossy rule (the side with
//! more detail keeps it), and `verify` equal after changes on both sides. And columns that
//! travel one way only, and constants written on insert at one side; and legacy keys without
//! a default, numbered by tandem (`key_from`).
//!
//! The SQL Server pairings need TANDEM_TEST_MSSQL_URL at build time, else they are reported
//! as ignored. PostgreSQL is started by the tests.

mod common;

use common::fixtures::table;
use common::side::{Dialect, Env, Pairing, TestSide};

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        mod pg_pg {
            use super::Pairing;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(Pairing::PgPg).await
                }
            )*
        }
        mod ms_pg {
            use super::Pairing;
            $(
                #[tokio::test]
                #[cfg_attr(
                    not(tandem_mssql),
                    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
                )]
                async fn $name() {
                    super::$name(Pairing::MsPg).await
                }
            )*
        }
        mod pg_ms {
            use super::Pairing;
            $(
                #[tokio::test]
                #[cfg_attr(
                    not(tandem_mssql),
                    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
                )]
                async fn $name() {
                    super::$name(Pairing::PgMs).await
                }
            )*
        }
    };
}

scenarios!(
    converted_columns_travel_both_ways_keep_detail_and_verify_equal,
    one_way_columns_and_constants_are_written_where_they_belong,
    legacy_keys_without_a_default_are_numbered_by_tandem,
);

const CONFIG: &str = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"

[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[[entities]]
name = "product"
a = { table = "dbo.PRODUCTS", key = ["PROD_NO"] }
b = { table = "{B}.products", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "NAME", b = "name", convert = "trim" },
  { a = "ACTIVE", b = "active", convert = { flag = ["Y", "N"] } },
  { a = "PRICE_CENTS", b = "price", convert = { scale = -2 } },
  { a = "WEIGHT", b = "weight", convert = { round = 1 } },
  { a = "UPDATED", b = "updated_at", convert = { timezone = "Europe/Paris", ambiguous = "earlier" } },
  { a = "STATE", b = "open", values = { A = true, X = true, C = false }, prefer = ["A"] },
]
"#;

/// A's row of product `no`: name (as stored), flag, cents, weight, local time, state.
async fn a_row(a: &TestSide, no: i64) -> Vec<Vec<String>> {
    a.rows(a.sql(
        &format!(
            "SELECT \"NAME\"::text, \"ACTIVE\", \"PRICE_CENTS\"::text, \"WEIGHT\"::text, \
             to_char(\"UPDATED\", 'YYYY-MM-DD HH24:MI'), \"STATE\" FROM dbo.\"PRODUCTS\" \
             WHERE \"PROD_NO\" = {no}"
        ),
        &format!(
            "SELECT RTRIM([NAME]), [ACTIVE], CAST([PRICE_CENTS] AS varchar(20)), \
             CAST([WEIGHT] AS varchar(30)), CONVERT(varchar(16), [UPDATED], 120), [STATE] \
             FROM dbo.[PRODUCTS] WHERE [PROD_NO] = {no}"
        ),
    ))
    .await
}

/// B's row of the product whose A key is `no`: name, flag, price, weight, instant (UTC),
/// open.
async fn b_row(b: &TestSide, no: i64) -> Vec<Vec<String>> {
    b.rows(b.sql(
        &format!(
            "SELECT name, active::text, price::text, weight::text, \
             to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), open::text \
             FROM products WHERE legacy_no = {no}"
        ),
        &format!(
            "SELECT name, CASE active WHEN 1 THEN 'true' ELSE 'false' END, \
             CAST(price AS varchar(20)), CAST(weight AS varchar(20)), \
             CONVERT(varchar(16), SWITCHOFFSET(updated_at, '+00:00'), 120), \
             CASE [open] WHEN 1 THEN 'true' ELSE 'false' END \
             FROM dbo.products WHERE legacy_no = {no}"
        ),
    ))
    .await
}

async fn verify_equal(env: &Env) {
    let opts = tandem::verify::Options {
        entity: None,
        repair_from: None,
    };
    for report in tandem::verify::run(&env.config, &env.sides(), &opts)
        .await
        .expect("verify")
    {
        assert!(!report.differs(), "{report:#?}");
    }
}

async fn converted_columns_travel_both_ways_keep_detail_and_verify_equal(p: Pairing) {
    let b_schema = if p.b() == Dialect::Ms {
        "dbo"
    } else {
        "public"
    };
    let config = CONFIG.replace("{B}", b_schema);
    let a_tables = if p.a() == Dialect::Ms {
        "IF SCHEMA_ID(N'dbo') IS NULL EXEC (N'CREATE SCHEMA dbo');\nGO\n\
         CREATE TABLE dbo.PRODUCTS (PROD_NO int IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         NAME char(12) NOT NULL, ACTIVE char(1) NOT NULL, PRICE_CENTS int NOT NULL, \
         WEIGHT float NULL, UPDATED datetime2(0) NULL, STATE char(1) NOT NULL);"
    } else {
        "CREATE SCHEMA IF NOT EXISTS dbo; CREATE TABLE dbo.\"PRODUCTS\" (\
         \"PROD_NO\" integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         \"NAME\" char(12) NOT NULL, \"ACTIVE\" char(1) NOT NULL, \"PRICE_CENTS\" integer NOT NULL, \
         \"WEIGHT\" double precision, \"UPDATED\" timestamp(0), \"STATE\" char(1) NOT NULL);"
    };
    let b_tables = if p.b() == Dialect::Ms {
        "CREATE TABLE dbo.products (id bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         name varchar(12) NOT NULL, active bit NOT NULL, price decimal(10, 2) NOT NULL, \
         weight decimal(10, 1) NULL, updated_at datetimeoffset(0) NULL, [open] bit NOT NULL, \
         legacy_no int NULL);"
    } else {
        "CREATE TABLE products (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         name varchar(12) NOT NULL, active boolean NOT NULL, price numeric(10, 2) NOT NULL, \
         weight numeric(10, 1), updated_at timestamptz(0), open boolean NOT NULL, \
         legacy_no integer);"
    };
    let env = Env::new(p, "convert", &config, a_tables, b_tables).await;
    let (a, b) = (&env.a, &env.b);

    // A → B: 02:30 on 27 October 2024 happened twice in Paris; "earlier" reads it as summer
    // time (00:30 UTC). The weight loses a decimal; state X is one of two codes for open.
    a.exec(
        "INSERT INTO dbo.[PRODUCTS] ([NAME], [ACTIVE], [PRICE_CENTS], [WEIGHT], [UPDATED], [STATE]) \
         VALUES ('Widget', 'Y', 1234, 2.36, '2024-10-27 02:30:00', 'X')",
    )
    .await;
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 0), "{r:?}");
    assert_eq!(
        b_row(b, 1).await,
        table(&[&["Widget", "true", "12.34", "2.4", "2024-10-27 00:30", "true"]])
    );
    verify_equal(&env).await;

    // B → A: a new price and the other instant of the repeated hour (the same local time).
    // The weight and state B holds are what A's more detailed values convert to: A keeps
    // 2.36 and X (the lossy rule), and its time stays 02:30.
    b.exec(b.sql(
        "UPDATE products SET price = 20.00, updated_at = '2024-10-27 01:30:00+00'",
        "UPDATE dbo.products SET price = 20.00, updated_at = '2024-10-27 01:30:00 +00:00'",
    ))
    .await;
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        a_row(a, 1).await,
        table(&[&["Widget", "Y", "2000", "2.36", "2024-10-27 02:30", "X"]])
    );
    verify_equal(&env).await;

    // A → B again (another column): B keeps its instant, the later of the two A's local time
    // can mean, since it is equal to what arrives.
    a.exec("UPDATE dbo.[PRODUCTS] SET [ACTIVE] = 'N'").await;
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        b_row(b, 1).await,
        table(&[&[
            "Widget",
            "false",
            "20.00",
            "2.4",
            "2024-10-27 01:30",
            "true"
        ]])
    );

    // A change of a lossy value travels: 2.36 → 2.71 at A is 2.7 at B; B's 3.5 is 3.5 at A.
    a.exec("UPDATE dbo.[PRODUCTS] SET [WEIGHT] = 2.71, [STATE] = 'C'")
        .await;
    env.drain().await;
    assert_eq!(
        b_row(b, 1).await,
        table(&[&[
            "Widget",
            "false",
            "20.00",
            "2.7",
            "2024-10-27 01:30",
            "false"
        ]])
    );
    // A record created at B: converted into A's terms; open = true is written back as the
    // preferred code A.
    b.exec(b.sql(
        "INSERT INTO products (name, active, price, weight, updated_at, open) \
         VALUES ('Gadget', true, 0.05, 3.5, '2024-07-01 10:00:00+00', true)",
        "INSERT INTO dbo.products (name, active, price, weight, updated_at, [open]) \
         VALUES ('Gadget', 1, 0.05, 3.5, '2024-07-01 10:00:00 +00:00', 1)",
    ))
    .await;
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 0), "{r:?}");
    assert_eq!(
        a_row(a, 2).await,
        table(&[&["Gadget", "Y", "5", "3.5", "2024-07-01 12:00", "A"]])
    );
    for s in [a, b] {
        assert_eq!(s.outbox_count().await, 0, "no echo at {}", s.side());
    }
    verify_equal(&env).await;

    // A difference verify finds and repair settles: a converted value changed behind
    // tandem's back (capture off is not needed: the outbox row is removed).
    b.exec(b.sql(
        "UPDATE products SET price = 99.99 WHERE legacy_no = 2; DELETE FROM tandem.outbox",
        "UPDATE dbo.products SET price = 99.99 WHERE legacy_no = 2; DELETE FROM tandem.outbox",
    ))
    .await;
    let opts = tandem::verify::Options {
        entity: None,
        repair_from: Some(tandem::config::Side::A),
    };
    let reports = tandem::verify::run(&env.config, &env.sides(), &opts)
        .await
        .expect("verify");
    assert_eq!(reports[0].different, 1, "{reports:#?}");
    let diff = &reports[0].sample_different[0].columns;
    assert_eq!(diff.len(), 1, "{diff:?}");
    assert_eq!(diff[0].b_column, "price");
    env.drain().await;
    verify_equal(&env).await;
    assert_eq!(
        b_row(b, 2).await,
        table(&[&["Gadget", "true", "0.05", "3.5", "2024-07-01 10:00", "true"]])
    );
}

const ONE_WAY_CONFIG: &str = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"

[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[[entities]]
name = "item"
a = { table = "dbo.ITEMS", key = ["ITEM_NO"] }
b = { table = "{B}.items", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "NAME", b = "name" },
  { a = "PRICE", b = "price", direction = "a_to_b" },
  { a = "NOTE", b = "note", direction = "b_to_a" },
  { a = "ORIGIN", const = "N" },
  { b = "source", const = "legacy" },
]
"#;

async fn items(s: &TestSide) -> Vec<Vec<String>> {
    s.rows(s.sql(
        if s.side() == tandem::config::Side::A {
            "SELECT \"NAME\", coalesce(\"PRICE\"::text, '-'), coalesce(\"NOTE\", '-'), \"ORIGIN\" \
             FROM dbo.\"ITEMS\" ORDER BY \"ITEM_NO\""
        } else {
            "SELECT name, coalesce(price::text, '-'), coalesce(note, '-'), source \
             FROM items ORDER BY id"
        },
        if s.side() == tandem::config::Side::A {
            "SELECT [NAME], COALESCE(CAST([PRICE] AS varchar(20)), '-'), COALESCE([NOTE], '-'), \
             [ORIGIN] FROM dbo.[ITEMS] ORDER BY [ITEM_NO]"
        } else {
            "SELECT name, COALESCE(CAST(price AS varchar(20)), '-'), COALESCE(note, '-'), source \
             FROM dbo.items ORDER BY id"
        },
    ))
    .await
}

/// PRICE is A's (B shows it, its edits stay at B), NOTE is B's (A shows it), ORIGIN is set
/// for records tandem creates at A, `source` for those it creates at B. Verify compares the
/// one-way columns too; a repair from the side a column comes from settles them.
async fn one_way_columns_and_constants_are_written_where_they_belong(p: Pairing) {
    let b_schema = if p.b() == Dialect::Ms {
        "dbo"
    } else {
        "public"
    };
    let config = ONE_WAY_CONFIG.replace("{B}", b_schema);
    let a_tables = if p.a() == Dialect::Ms {
        "IF SCHEMA_ID(N'dbo') IS NULL EXEC (N'CREATE SCHEMA dbo');\nGO\n\
         CREATE TABLE dbo.ITEMS (ITEM_NO int IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         NAME varchar(20) NOT NULL, PRICE int NOT NULL DEFAULT 0, NOTE varchar(20) NULL, \
         ORIGIN char(1) NOT NULL);"
    } else {
        "CREATE SCHEMA IF NOT EXISTS dbo; CREATE TABLE dbo.\"ITEMS\" (\
         \"ITEM_NO\" integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         \"NAME\" varchar(20) NOT NULL, \"PRICE\" integer NOT NULL DEFAULT 0, \
         \"NOTE\" varchar(20), \"ORIGIN\" char(1) NOT NULL);"
    };
    let b_tables = if p.b() == Dialect::Ms {
        "CREATE TABLE dbo.items (id bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         name varchar(20) NOT NULL, price int NULL, note varchar(20) NULL, \
         source varchar(10) NOT NULL, legacy_no int NULL);"
    } else {
        "CREATE TABLE items (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         name varchar(20) NOT NULL, price integer, note varchar(20), \
         source varchar(10) NOT NULL, legacy_no integer);"
    };
    let env = Env::new(p, "oneway", &config, a_tables, b_tables).await;
    let (a, b) = (&env.a, &env.b);

    a.exec("INSERT INTO dbo.[ITEMS] ([NAME], [PRICE], [NOTE], [ORIGIN]) VALUES ('bolt', 10, 'old', 'L')")
        .await;
    let r = env.drain().await;
    assert_eq!((r.written, r.failed), (1, 0), "{r:?}");
    assert_eq!(items(b).await, table(&[&["bolt", "10", "-", "legacy"]]));

    // B renames, prices (B's price is A's: it stays at B) and notes (B's: it goes to A).
    b.exec(b.sql(
        "UPDATE items SET name = 'screw', price = 99, note = 'new'",
        "UPDATE dbo.items SET name = 'screw', price = 99, note = 'new'",
    ))
    .await;
    // A record created at B: A's ORIGIN says so, its price takes A's default.
    b.exec(b.sql(
        "INSERT INTO items (name, price, note, source) VALUES ('nut', 5, 'b', 'new')",
        "INSERT INTO dbo.items (name, price, note, source) VALUES ('nut', 5, 'b', 'new')",
    ))
    .await;
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        items(a).await,
        table(&[&["screw", "10", "new", "L"], &["nut", "0", "b", "N"]])
    );
    // A's price travels; B's `source` is left as it is by updates.
    a.exec("UPDATE dbo.[ITEMS] SET [PRICE] = 11 WHERE [ITEM_NO] = 1")
        .await;
    env.drain().await;
    assert_eq!(
        items(b).await,
        table(&[&["screw", "11", "new", "legacy"], &["nut", "5", "b", "new"]])
    );
    for s in [a, b] {
        assert_eq!(s.outbox_count().await, 0, "no echo at {}", s.side());
    }

    // B's price of the record it created differs from A's (which B's edits never reach):
    // verify says so, and a repair from A, where prices come from, settles it.
    let opts = |from| tandem::verify::Options {
        entity: None,
        repair_from: from,
    };
    let reports = tandem::verify::run(
        &env.config,
        &env.sides(),
        &opts(Some(tandem::config::Side::A)),
    )
    .await
    .expect("verify");
    assert_eq!(reports[0].different, 1, "{reports:#?}");
    assert_eq!(reports[0].sample_different[0].columns[0].a_column, "PRICE");
    env.drain().await;
    assert_eq!(
        items(b).await,
        table(&[&["screw", "11", "new", "legacy"], &["nut", "0", "b", "new"]])
    );
    verify_equal(&env).await;
}

const KEYS_CONFIG: &str = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"

[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[[entities]]
name = "order"
a = { table = "dbo.ORDERS", key = ["ORDER_NO"], key_from = "sequence dbo.ORDER_SEQ" }
b = { table = "{B}.orders", key = ["id"], peer_id_column = "legacy_no" }
columns = [ { a = "NAME", b = "name" } ]

[[entities]]
name = "customer"
a = { table = "dbo.CUSTOMERS", key = ["CUST_NO"], key_from = "max+1" }
b = { table = "{B}.customers", key = ["id"], peer_id_column = "legacy_no" }
columns = [ { a = "NAME", b = "name" } ]
"#;

/// Legacy keys with no default (the legacy application numbers its records): records created
/// at B get A keys from a sequence, or one more than the largest, and the legacy
/// application's own numbers go on alongside.
async fn legacy_keys_without_a_default_are_numbered_by_tandem(p: Pairing) {
    let b_schema = if p.b() == Dialect::Ms {
        "dbo"
    } else {
        "public"
    };
    let config = KEYS_CONFIG.replace("{B}", b_schema);
    let a_tables = if p.a() == Dialect::Ms {
        "IF SCHEMA_ID(N'dbo') IS NULL EXEC (N'CREATE SCHEMA dbo');\nGO\n\
         CREATE SEQUENCE dbo.ORDER_SEQ AS int START WITH 1000;\n\
         CREATE TABLE dbo.ORDERS (ORDER_NO int NOT NULL PRIMARY KEY, NAME varchar(20) NOT NULL);\n\
         CREATE TABLE dbo.CUSTOMERS (CUST_NO int NOT NULL PRIMARY KEY, NAME varchar(20) NOT NULL);"
    } else {
        "CREATE SCHEMA IF NOT EXISTS dbo; CREATE SEQUENCE dbo.\"ORDER_SEQ\" START 1000; \
         CREATE TABLE dbo.\"ORDERS\" (\"ORDER_NO\" integer PRIMARY KEY, \"NAME\" varchar(20) NOT NULL); \
         CREATE TABLE dbo.\"CUSTOMERS\" (\"CUST_NO\" integer PRIMARY KEY, \"NAME\" varchar(20) NOT NULL);"
    };
    let b_tables = if p.b() == Dialect::Ms {
        "CREATE TABLE dbo.orders (id bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         name varchar(20) NOT NULL, legacy_no int NULL);\n\
         CREATE TABLE dbo.customers (id bigint IDENTITY(1, 1) NOT NULL PRIMARY KEY, \
         name varchar(20) NOT NULL, legacy_no int NULL);"
    } else {
        "CREATE TABLE orders (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         name varchar(20) NOT NULL, legacy_no integer); \
         CREATE TABLE customers (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, \
         name varchar(20) NOT NULL, legacy_no integer);"
    };
    let env = Env::new(p, "keyfrom", &config, a_tables, b_tables).await;
    let (a, b) = (&env.a, &env.b);

    // The legacy application's own records, numbered its way.
    a.exec("INSERT INTO dbo.[ORDERS] ([ORDER_NO], [NAME]) VALUES (1, 'legacy')")
        .await;
    a.exec("INSERT INTO dbo.[CUSTOMERS] ([CUST_NO], [NAME]) VALUES (41, 'acme'), (42, 'globex')")
        .await;
    // Records created at B, several in one batch.
    for t in ["orders", "customers"] {
        b.exec(&b.spell(&format!(
            "INSERT INTO {t} (name) VALUES ('b1'); INSERT INTO {t} (name) VALUES ('b2')"
        )))
        .await;
    }
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        a.rows(
            "SELECT CAST([ORDER_NO] AS varchar(10)), [NAME] FROM dbo.[ORDERS] ORDER BY [ORDER_NO]"
        )
        .await,
        table(&[&["1", "legacy"], &["1000", "b1"], &["1001", "b2"]])
    );
    assert_eq!(
        a.rows(
            "SELECT CAST([CUST_NO] AS varchar(10)), [NAME] FROM dbo.[CUSTOMERS] ORDER BY [CUST_NO]"
        )
        .await,
        table(&[
            &["41", "acme"],
            &["42", "globex"],
            &["43", "b1"],
            &["44", "b2"]
        ])
    );
    // B shows A's numbers, the legacy ones too.
    assert_eq!(
        b.rows("SELECT name, CAST(legacy_no AS varchar(10)) FROM customers ORDER BY legacy_no")
            .await,
        table(&[
            &["acme", "41"],
            &["globex", "42"],
            &["b1", "43"],
            &["b2", "44"]
        ])
    );
    // The legacy application goes on numbering after tandem's records; tandem after its.
    a.exec("INSERT INTO dbo.[CUSTOMERS] ([CUST_NO], [NAME]) VALUES (45, 'initech')")
        .await;
    b.exec(&b.spell("INSERT INTO customers (name) VALUES ('b3')"))
        .await;
    let r = env.drain().await;
    assert_eq!(r.failed, 0, "{r:?}");
    assert_eq!(
        a.rows("SELECT CAST([CUST_NO] AS varchar(10)) FROM dbo.[CUSTOMERS] WHERE [NAME] = 'b3'")
            .await,
        table(&[&["46"]])
    );
    verify_equal(&env).await;

    // `check` names a sequence that is not there (before any insert would fail on it).
    a.exec("DROP SEQUENCE dbo.[ORDER_SEQ]").await;
    let problems = tandem::endpoint::open(env.config.clone(), tandem::config::Side::A)
        .expect("open A")
        .check()
        .await
        .expect("check");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0]
            .message
            .starts_with("key_from names sequence dbo.ORDER_SEQ, which does not exist in"),
        "{problems:?}"
    );
}
