//! The T-SQL tandem generates for SQL Server, without a server: the demo config
//! (`sql/demo/tandem.toml`) with side A as SQL Server, compared with reviewed golden files in
//! `tests/golden/`, plus properties every script must have whatever the config.
//!
//! To regenerate the golden files after an intended change: `TANDEM_BLESS=1 cargo test --test
//! mssql_sql`, then review the diff line by line.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use tandem::config::{self, Config, Side};
use tandem::endpoint::mssql::sql::{self, Plan};
use tandem::endpoint::mssql::types::{Column, SqlType};

const DEMO: &str = include_str!("../sql/demo/tandem.toml");

/// The demo config with A on SQL Server.
fn demo_config() -> Arc<Config> {
    let text = DEMO.replacen("kind = \"postgres\"", "kind = \"mssql\"", 1);
    let env = |name: &str| {
        match name {
        "TANDEM_A_URL" => Some(
            "server=tcp:localhost,1433;database=legacy;user=tandem;password=secret;TrustServerCertificate=true"
                .to_string(),
        ),
        "TANDEM_B_URL" => Some("postgres://tandem:secret@localhost/app".to_string()),
        _ => None,
    }
    };
    Arc::new(config::parse(&text, Path::new("tandem.toml"), &env).expect("demo config parses"))
}

fn col(name: &str, ty: &str, len: i16, p: u8, s: u8, identity: bool) -> Column {
    Column {
        name: name.into(),
        ty: SqlType::new(ty, len, p, s),
        nullable: true,
        identity,
        computed: false,
        has_default: false,
    }
}

/// The catalog of `sql/mssql/demo_a.sql`, as sys.columns reports it.
fn demo_catalog() -> HashMap<String, Vec<Column>> {
    HashMap::from([
        (
            "order".to_string(),
            vec![
                col("ORDER_NO", "int", 4, 10, 0, true),
                col("CUST_NAME", "varchar", 60, 0, 0, false),
                col("STATUS", "char", 1, 0, 0, false),
                col("AMOUNT", "decimal", 9, 12, 2, false),
                col("REMARK", "nvarchar", -1, 0, 0, false),
                col("NEW_ID", "bigint", 8, 19, 0, false),
                col("ROW_VER", "timestamp", 8, 0, 0, false),
            ],
        ),
        (
            "order_item".to_string(),
            vec![
                col("ORDER_NO", "int", 4, 10, 0, false),
                col("LINE_NO", "int", 4, 10, 0, false),
                col("QTY", "int", 4, 10, 0, false),
            ],
        ),
    ])
}

/// Compares `actual` with the golden file, or writes it when TANDEM_BLESS is set.
fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("TANDEM_BLESS").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with TANDEM_BLESS=1 to create it)",
            path.display()
        )
    });
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()) + 1);
        panic!(
            "{name} differs from the golden file at line {line}:\n  golden: {:?}\n  actual: {:?}\n(if intended: TANDEM_BLESS=1 cargo test --test mssql_sql, and review the diff)",
            expected.lines().nth(line - 1).unwrap_or(""),
            actual.lines().nth(line - 1).unwrap_or("")
        );
    }
}

#[tokio::test]
async fn install_dry_run_matches_the_golden_file() {
    let config = demo_config();
    // What `tandem install --dry-run --side a` prints, made without any connection (the
    // pool is created, lazily, inside the runtime as the CLI does).
    let ep = tandem::endpoint::open(config.clone(), Side::A).expect("open needs no server");
    golden("mssql_install_a.sql", &ep.install_script());
    golden("mssql_uninstall_a.sql", &ep.uninstall_script());
}

#[test]
fn apply_and_write_back_batches_match_the_golden_files() {
    let config = demo_config();
    let plan = Plan::build(&config, Side::A, &demo_catalog()).expect("plan");
    golden("mssql_apply_a.sql", &plan.apply);
    golden("mssql_write_back_a.sql", &plan.write_back);
    let mut in_flight: Vec<_> = plan.in_flight.iter().collect();
    in_flight.sort();
    let listing: String = in_flight
        .iter()
        .map(|(e, s)| format!("-- in_flight: {e}\n{s}\n\n"))
        .collect();
    golden("mssql_in_flight_a.sql", &listing);
}

#[test]
fn the_capture_trigger_is_set_based_and_keeps_null_apart() {
    let script = sql::install_script(&demo_config(), Side::A).expect("script");
    let triggers: Vec<&str> = script.split("CREATE TRIGGER").skip(1).collect();
    assert_eq!(triggers.len(), 2, "one trigger per captured table");
    for t in &triggers {
        let body = t.split("\nGO").next().unwrap_or("");
        assert!(body.contains("AFTER INSERT, UPDATE, DELETE"), "{body}");
        assert!(
            !body.to_uppercase().contains("CURSOR"),
            "no cursors: {body}"
        );
        assert!(body.contains("FROM inserted AS i") && body.contains("FROM deleted AS d"));
        // Every FOR JSON keeps NULL members (NULL ≠ absent).
        for part in body.split("FOR JSON").skip(1) {
            assert!(
                part.trim_start()
                    .starts_with("PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES"),
                "{part}"
            );
        }
        assert!(
            body.contains("TRIGGER_NESTLEVEL() = 1"),
            "cascades stay captured"
        );
        assert!(body.contains("SESSION_CONTEXT(N'tandem.applying')"));
    }
    assert!(script.contains("CREATE TRIGGER [dbo].[tandem_capture_ORDERS] ON [dbo].[ORDERS]"));
    assert!(
        script.contains("CREATE TRIGGER [dbo].[tandem_capture_ORDER_ITEMS] ON [dbo].[ORDER_ITEMS]")
    );
}

#[test]
fn the_batches_keep_postgres_semantics_in_one_round_trip() {
    let plan = Plan::build(&demo_config(), Side::A, &demo_catalog()).expect("plan");
    let a = &plan.apply;
    // One JSON parameter, typed by OPENJSON ... WITH.
    assert!(a.contains("FROM OPENJSON(@P1) WITH ("));
    assert!(!a.contains("@P2"), "one parameter");
    // The guard: the link locked, older or equal sequences discarded.
    assert!(a.contains(
        "WITH (UPDLOCK, HOLDLOCK)\n            WHERE entity = @entity AND [b_key] = @source_key"
    ));
    assert!(a.contains("IF @link_found = 1 AND @applied >= @seq"));
    // Savepoints per change; a refused change rolls back alone.
    assert!(a.contains("SAVE TRANSACTION tandem_change"));
    assert!(a.contains("ROLLBACK TRANSACTION tandem_change"));
    // The generated IDENTITY key comes back through SCOPE_IDENTITY(), in the key's canonical
    // text; the item's key is given (its row holds it).
    assert!(a.contains(
        "INSERT INTO @ins (k) VALUES (N'[' + CONVERT(nvarchar(40), CONVERT(int, SCOPE_IDENTITY())) + N']');"
    ));
    assert!(a.contains("INSERT INTO @ins (k) VALUES (@given);"));
    // A row travels as [[...]]: OPENJSON makes one row of it.
    assert!(a.contains("OPENJSON(N'[' + @row + N']') WITH ([ORDER_NO] int '$[0]'"));
    // ORDERS' key is generated (IDENTITY): the insert leaves it out, so no IDENTITY_INSERT.
    assert!(a.contains("INSERT INTO [dbo].[ORDERS] ([CUST_NAME], [STATUS], [AMOUNT], [NEW_ID])"));
    assert!(!a.contains("IDENTITY_INSERT"));
    // Strings are read unbounded so a too-long value fails on assignment, never cut silently.
    assert!(a.contains("[CUST_NAME] varchar(max) '$[1]'"));
    assert!(a.contains("[AMOUNT] decimal(12,2) '$[3]'"));
    // No write when equal.
    assert!(a.contains(
        "(SELECT t.[CUST_NAME], t.[STATUS], t.[AMOUNT], t.[NEW_ID] FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)"
    ));
    // Row errors are the list in sql.rs, the same one Rust classifies with.
    assert!(a.contains("IF @err IN (2627, 2601, 547, 515, 8152, 2628, 245,"));
    for p in ["{{", "}}"] {
        assert!(
            !a.contains(p) && !plan.write_back.contains(p),
            "placeholder left: {p}"
        );
    }
    // B is PostgreSQL: the write-back at A fills NEW_ID through its own typed statement.
    assert!(plan.write_back.contains("UPDATE t SET t.[NEW_ID] = p.[v]"));
}

#[test]
fn identifiers_from_the_config_cannot_inject_sql() {
    let text = DEMO
        .replacen("kind = \"postgres\"", "kind = \"mssql\"", 1)
        .replace("dbo.ORDERS", "dbo.ORD]ERS; DROP TABLE x; --")
        .replace("name = \"order\"", "name = \"ord'er\"")
        .replace("ref = \"order\"", "ref = \"ord'er\"");
    let env = |_: &str| Some("server=tcp:h,1433;user=u;password=p".to_string());
    let config = config::parse(&text, Path::new("t.toml"), &env).expect("parses");
    let script = sql::install_script(&config, Side::A).expect("script");
    assert!(
        script.contains("[dbo].[ORD]]ERS; DROP TABLE x; --]"),
        "{script}"
    );
    assert!(script.contains("N'ord''er'"));
    assert!(!script.contains("[ORD]ERS"));
}

/// A soft delete at the SQL Server side: a delete of the entity is an UPDATE of the mark
/// whose value comes from the row (never from SQL text), the mark is written on update and
/// insert, and the trigger's image carries the mark and the filter column.
#[test]
fn a_soft_delete_marks_the_row_and_the_trigger_captures_the_mark() {
    let text = DEMO
        .replacen("kind = \"postgres\"", "kind = \"mssql\"", 1)
        .replacen(
            "columns = [\n  { a = \"CUST_NAME\"",
            "soft_delete = { a = \"DELETED\", value = \"Y\", live = \"N\" }\n\
             filter = { a = \"SITE\", in = [3, 4] }\n\
             columns = [\n  { a = \"CUST_NAME\"",
            1,
        );
    assert!(
        text.contains("soft_delete"),
        "the demo's order entity changed"
    );
    let env = |name: &str| match name {
        "TANDEM_A_URL" => Some("server=tcp:localhost,1433;database=legacy;user=tandem".to_string()),
        "TANDEM_B_URL" => Some("postgres://tandem@localhost/app".to_string()),
        _ => None,
    };
    let config = Arc::new(config::parse(&text, Path::new("tandem.toml"), &env).expect("parses"));
    let mut catalog = demo_catalog();
    if let Some(cols) = catalog.get_mut("order") {
        cols.push(col("DELETED", "char", 1, 0, 0, false));
        cols.push(col("SITE", "int", 4, 10, 0, false));
    }
    let plan = Plan::build(&config, Side::A, &catalog).expect("plan");
    assert!(
        plan.apply.contains("UPDATE t SET t.[DELETED] = s.[v]"),
        "{}",
        plan.apply
    );
    assert!(plan
        .apply
        .contains("WHERE (t.[DELETED] IS NULL OR t.[DELETED] <> s.[v]);"));
    assert!(!plan.apply.contains("DELETE t FROM [dbo].[ORDERS]"));
    assert!(plan.apply.contains("DELETE t FROM [dbo].[ORDER_ITEMS]"));
    assert!(
        plan.apply.contains("t.[DELETED] = r.[DELETED]"),
        "written on update"
    );
    // The filter's value is written on insert only (a constant); no config value in SQL.
    assert!(!plan.apply.contains("'Y'") && !plan.apply.contains("N'Y'"));
    let script = sql::install_script(&config, Side::A).expect("script");
    let orders = script
        .split("CREATE TRIGGER [dbo].[tandem_capture_ORDERS]")
        .nth(1)
        .and_then(|t| t.split("\nGO").next())
        .unwrap_or_default();
    assert!(
        orders.contains("i.[DELETED] AS [DELETED], i.[SITE] AS [SITE]"),
        "{orders}"
    );
    assert!(!orders.contains("'Y'") && !orders.contains("= 3"));
}
