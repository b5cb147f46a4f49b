use super::build::interpolate;
use super::render::LineIndex;
use super::*;

/// The example from the config contract, verbatim.
const EXAMPLE: &str = r#"[a]                                  # the old system
kind = "postgres"                    # "postgres" | "mssql"
url  = "${TANDEM_A_URL}"             # postgres://user:pw@host:port/db  or an ADO.NET string for mssql
# pool_size = 8                      # optional
# schema = "tandem"                  # optional: where tandem's own objects live

[b]
kind = "postgres"
url  = "${TANDEM_B_URL}"

[sync]                               # all optional
# batch_size = 1000
# poll_interval_ms = 1000            # longest wait between polls when idle
# max_attempts = 10                  # then the change is suspended
# retry_min_ms = 200
# retry_max_ms = 60000

[[entities]]
name = "order"
direction = "both"                   # "both" | "a_to_b" | "b_to_a"      (default both)
on_conflict = "newest_wins"          # "a_wins" | "b_wins" | "newest_wins" (default newest_wins)
a = { table = "dbo.ORDERS", key = ["ORDER_NO"], peer_id_column = "NEW_ID" }
b = { table = "public.orders", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "CUST_NAME", b = "customer" },
  { a = "STATUS", b = "status", values = { O = "open", C = "closed" } },
  { a = "AMOUNT", b = "amount" },
]

[[entities]]
name = "order_item"
a = { table = "dbo.ORDER_ITEMS", key = ["ORDER_NO", "LINE_NO"] }
b = { table = "public.order_items", key = ["id"] }
columns = [
  { a = "ORDER_NO", b = "order_id", ref = "order" },   # translated through the id map of "order"
  { a = "LINE_NO", b = "line_no" },
  { a = "QTY", b = "quantity" },
]
"#;

/// Seven lines of valid `[a]` and `[b]`; entity snippets start on line 8.
const HEAD: &str = r#"[a]
kind = "mssql"
url = "Server=db;User Id=sa;Password=hunter2;"

[b]
kind = "postgres"
url = "postgres://tandem:hunter2@db/app"
"#;

/// A valid entity, to which tests append keys.
const ORDER: &str = r#"[[entities]]
name = "order"
a = { table = "dbo.ORDERS", key = ["ORDER_NO"] }
b = { table = "public.orders", key = ["id"] }
"#;

fn test_env(name: &str) -> Option<String> {
    match name {
        "TANDEM_A_URL" => Some("postgres://old:s3cret@old-host:5432/erp".to_owned()),
        "TANDEM_B_URL" => Some("postgres://new:t0psecret@new-host/app".to_owned()),
        "SCHEMA" => Some("sync".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn try_parse(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("tandem.toml"), &test_env)
}

fn ok(text: &str) -> Config {
    match try_parse(text) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

fn problems(text: &str) -> Vec<Problem> {
    match try_parse(text) {
        Ok(_) => panic!("expected problems, config was accepted:\n{text}"),
        Err(err) => err.problems,
    }
}

fn only_problem(text: &str) -> Problem {
    let mut all = problems(text);
    assert_eq!(all.len(), 1, "expected exactly one problem, got {all:#?}");
    all.remove(0)
}

/// 1-based (line, column) of the first occurrence of `needle`.
fn pos(text: &str, needle: &str) -> (usize, usize) {
    let offset = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in text"));
    LineIndex::new(text).position(offset)
}

/// 1-based (line, column) of the `n`th (0-based) occurrence of `needle`.
fn pos_nth(text: &str, needle: &str, n: usize) -> (usize, usize) {
    let (offset, _) = text
        .match_indices(needle)
        .nth(n)
        .unwrap_or_else(|| panic!("{needle:?} #{n} not in text"));
    LineIndex::new(text).position(offset)
}

fn at(problem: &Problem) -> (usize, usize) {
    (problem.line, problem.column)
}

fn assert_one(text: &str, needle: &str, message: &str) {
    let problem = only_problem(text);
    assert_eq!(problem.message, message);
    assert_eq!(at(&problem), pos(text, needle), "position of {message:?}");
}

fn with_order(extra: &str) -> String {
    format!("{HEAD}{ORDER}{extra}")
}

// -- the example and defaults --------------------------------------------

#[test]
fn example_parses_with_expected_values() {
    let config = ok(EXAMPLE);
    assert_eq!(config.path, Path::new("tandem.toml"));
    assert_eq!(config.a.kind, DbKind::Postgres);
    assert_eq!(
        config.a.url.expose(),
        "postgres://old:s3cret@old-host:5432/erp"
    );
    assert_eq!(
        config.b.url.expose(),
        "postgres://new:t0psecret@new-host/app"
    );
    assert_eq!(config.entities.len(), 2);

    let order = config.entity("order").expect("order");
    assert_eq!(order.direction, Direction::Both);
    assert_eq!(order.on_conflict, ConflictPolicy::NewestWins);
    assert_eq!(
        order.a.table,
        TableName {
            schema: Some("dbo".into()),
            name: "ORDERS".into()
        }
    );
    assert_eq!(order.a.key, ["ORDER_NO"]);
    assert_eq!(order.a.peer_id_column.as_deref(), Some("NEW_ID"));
    assert_eq!(order.b.table.to_string(), "public.orders");
    assert_eq!(order.b.key, ["id"]);
    assert_eq!(order.b.peer_id_column.as_deref(), Some("legacy_no"));
    let names: Vec<(&str, &str)> = order
        .columns
        .iter()
        .map(|c| (c.name(Side::A), c.name(Side::B)))
        .collect();
    assert_eq!(
        names,
        [
            ("CUST_NAME", "customer"),
            ("STATUS", "status"),
            ("AMOUNT", "amount")
        ]
    );
    let status = &order.columns[1];
    assert_eq!(
        status.values,
        Some(ValueMap {
            pairs: vec![
                (Value::from("O"), Value::from("open")),
                (Value::from("C"), Value::from("closed")),
            ],
            prefer: Vec::new(),
        })
    );
    assert!(order.columns[0].values.is_none());
    assert!(order.columns.iter().all(|c| c.parent.is_none()));
    assert!(order.parents().is_empty());

    let item = config.entity("order_item").expect("order_item");
    assert_eq!(item.a.key, ["ORDER_NO", "LINE_NO"]);
    assert_eq!(item.a.peer_id_column, None);
    assert_eq!(item.columns[0].parent.as_deref(), Some("order"));
    assert_eq!(item.parents(), ["order"]);
    assert!(config.entity("missing").is_none());
}

#[test]
fn defaults_apply_when_keys_are_omitted() {
    let config = ok(EXAMPLE);
    for side in [Side::A, Side::B] {
        assert_eq!(config.side(side).pool_size, 8);
        assert_eq!(config.side(side).schema, "tandem");
    }
    let sync = &config.sync;
    assert_eq!(sync.batch_size, 1000);
    assert_eq!(sync.poll_interval_ms, 1000);
    assert_eq!(sync.max_attempts, 10);
    assert_eq!(sync.retry_min_ms, 200);
    assert_eq!(sync.retry_max_ms, 60_000);
    let item = config.entity("order_item").expect("order_item");
    assert_eq!(item.direction, Direction::Both);
    assert_eq!(item.on_conflict, ConflictPolicy::NewestWins);

    // No [sync] table at all gives the same defaults.
    let config = ok(&with_order(""));
    assert_eq!(config.sync.batch_size, SyncConfig::default().batch_size);
    assert!(config.entities[0].columns.is_empty());
}

#[test]
fn explicit_settings_are_read() {
    let text = format!(
        r#"[a]
kind = "mssql"
url = "Server=db;Password=x;"
pool_size = 3
schema = "${{SCHEMA}}"

[b]
kind = "postgres"
url = "postgres://db/app"

[sync]
batch_size = 50
poll_interval_ms = 250
max_attempts = 4
retry_min_ms = 10
retry_max_ms = 10

{ORDER}direction = "a_to_b"
on_conflict = "b_wins"
"#
    );
    let config = ok(&text);
    assert_eq!(config.a.kind, DbKind::Mssql);
    assert_eq!(config.a.pool_size, 3);
    assert_eq!(config.a.schema, "sync");
    assert_eq!(config.b.kind, DbKind::Postgres);
    let sync = &config.sync;
    assert_eq!(
        (
            sync.batch_size,
            sync.poll_interval_ms,
            sync.max_attempts,
            sync.retry_min_ms,
            sync.retry_max_ms
        ),
        (50, 250, 4, 10, 10)
    );
    assert_eq!(config.entities[0].direction, Direction::AToB);
    assert_eq!(config.entities[0].on_conflict, ConflictPolicy::BWins);
    let text = text
        .replace("\"b_wins\"", "\"a_wins\"")
        .replace("a_to_b", "b_to_a");
    let config = ok(&text);
    assert_eq!(config.entities[0].direction, Direction::BToA);
    assert_eq!(config.entities[0].on_conflict, ConflictPolicy::AWins);
}

#[test]
fn dotted_keys_and_header_tables_are_accepted() {
    let text = format!(
        r#"{HEAD}[[entities]]
name = "order"
a.table = "ORDERS"
a.key = ["ORDER_NO"]

[entities.b]
table = "orders"
key = ["id"]

[[entities.columns]]
a = "STATUS"
b = "status"
values.O = "open"
values.C = "closed"
"#
    );
    let config = ok(&text);
    let order = &config.entities[0];
    assert_eq!(
        order.a.table,
        TableName {
            schema: None,
            name: "ORDERS".into()
        }
    );
    assert_eq!(order.b.key, ["id"]);
    let values = order.columns[0].values.as_ref().expect("values");
    assert_eq!(values.pairs[0], (Value::from("O"), Value::from("open")));
    assert_eq!(values.pairs[1], (Value::from("C"), Value::from("closed")));

    // A table without a span of its own: problems fall back to the entity.
    let text = format!("{HEAD}[[entities]]\nname = \"order\"\na.table = \"ORDERS\"\nb = {{ table = \"o\", key = [\"id\"] }}\n");
    assert_one(
        &text,
        "[[entities]]",
        r#"entity "order": missing required key "a.key""#,
    );
}

// -- parse-level problems ---------------------------------------------------

#[test]
fn syntax_error_has_position() {
    let text = format!("{HEAD}[[entities]]\nname = \"order\n");
    let problem = only_problem(&text);
    assert_eq!(problem.line, 9);
    assert!(
        problem.message.contains("invalid basic string"),
        "{}",
        problem.message
    );
}

#[test]
fn unknown_keys_are_named_with_position() {
    let text = format!("{HEAD}pool = 3\n{ORDER}");
    let problem = only_problem(&text);
    assert_eq!(at(&problem), (8, 1));
    assert_eq!(
        problem.message,
        "unknown key `pool`, expected one of `kind`, `url`, `url_file`, `password_file`, `pool_size`, `schema`"
    );

    let text = format!("{HEAD}{ORDER}colums = []\n");
    let problem = only_problem(&text);
    assert_eq!(at(&problem), (12, 1));
    assert!(problem.message.starts_with("unknown key `colums`"));

    let text = format!(
        "{HEAD}[[entities]]\nname = \"o\"\na = {{ table = \"t\", key = [\"k\"], peer = \"x\" }}\n"
    );
    let problem = only_problem(&text);
    assert_eq!(at(&problem), pos(&text, "peer ="));
    assert_eq!(
        problem.message,
        "unknown key `peer`, expected one of `table`, `key`, `peer_id_column`, `key_from`"
    );

    let text = with_order("columns = [{ a = \"X\", b = \"x\", reference = \"y\" }]\n");
    let problem = only_problem(&text);
    assert_eq!(at(&problem), pos(&text, "reference"));
    assert!(problem.message.starts_with("unknown key `reference`"));

    let text = format!("{HEAD}[sync]\nbatch_size = \"10\"\n{ORDER}");
    assert_one(
        &text,
        "\"10\"",
        "invalid type: string \"10\", expected an integer",
    );

    let text = format!("{HEAD}[sink]\n");
    assert_eq!(at(&only_problem(&text)), (8, 2));
}

#[test]
fn wrong_types_have_position() {
    let text = format!("{HEAD}{ORDER}direction = 1\n");
    let problem = only_problem(&text);
    assert_eq!(at(&problem), (12, 13));
    assert_eq!(
        problem.message,
        "invalid type: integer `1`, expected a string"
    );

    let text = format!("{HEAD}{ORDER}columns = {{ a = \"X\" }}\n");
    let problem = only_problem(&text);
    assert_eq!(problem.line, 12);
    assert_eq!(problem.message, "invalid type: table, expected an array");

    let text = format!("{HEAD}[[entities]]\nname = \"o\"\na = \"dbo.T\"\n");
    let problem = only_problem(&text);
    assert_eq!(at(&problem), pos(&text, "\"dbo.T\""));
    assert_eq!(
        problem.message,
        "invalid type: string \"dbo.T\", expected a table"
    );
}

#[test]
fn parse_errors_are_redacted() {
    let text = format!("{HEAD}[sync]\nbatch_size = \"postgres://u:hunter2@h/db\"\n{ORDER}");
    let err = try_parse(&text).expect_err("wrong type");
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
}

// -- missing keys -------------------------------------------------------------

#[test]
fn missing_sides_and_entities_are_reported_without_position() {
    let all = problems("");
    let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "missing required table [a] (the database of side A)",
            "missing required table [b] (the database of side B)",
            "no entities defined; add at least one [[entities]] table",
        ]
    );
    assert!(all.iter().all(|p| p.line == 0 && p.column == 0));
    let err = try_parse("").expect_err("empty");
    assert!(err
        .to_string()
        .starts_with("tandem.toml: missing required table [a]"));
}

#[test]
fn missing_database_keys_point_at_the_table() {
    let text = format!("[a]\nkind = \"mssql\"\n\n[b]\nurl = \"x\"\n{ORDER}");
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].message, r#"[a]: missing required key "url""#);
    assert_eq!(at(&all[0]), (1, 1));
    assert_eq!(all[1].message, r#"[b]: missing required key "kind""#);
    assert_eq!(at(&all[1]), (4, 1));
}

#[test]
fn secrets_can_live_in_files_read_again_at_each_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("a.url"),
        "Server=db;User Id=sa;Password=hunter2;\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("b.pw"), "first\n").expect("write");
    let text = format!(
        "[a]\nkind = \"mssql\"\nurl_file = \"a.url\"\n\n[b]\nkind = \"postgres\"\n\
         url = \"postgres://tandem@db/app\"\npassword_file = \"{}/b.pw\"\n{ORDER}",
        dir.path().display()
    );
    // Relative paths start at the config file's folder.
    let config = parse(&text, &dir.path().join("tandem.toml"), &test_env).expect("valid");
    assert_eq!(
        config.a.url.expose(),
        "Server=db;User Id=sa;Password=hunter2;"
    );
    let pw = |c: &Config| c.b.current_password().expect("read").expect("some");
    assert_eq!(pw(&config).expose(), "first");
    std::fs::write(dir.path().join("b.pw"), "second").expect("rotate");
    assert_eq!(pw(&config).expose(), "second", "read again, not cached");
    std::fs::write(dir.path().join("a.url"), "Server=db2;User Id=sa;Password=x").expect("rotate");
    assert_eq!(
        config.a.current_url().expect("read").expose(),
        "Server=db2;User Id=sa;Password=x"
    );
}

#[test]
fn unreadable_secret_files_name_the_file_and_the_line_never_the_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("empty"), "\n").expect("write");
    let text = format!(
        "[a]\nkind = \"postgres\"\nurl_file = \"/nonexistent/tandem/a.url\"\n\n[b]\n\
         kind = \"postgres\"\nurl = \"postgres://u:hunter2@db/app\"\npassword_file = \"empty\"\n{ORDER}"
    );
    let err = parse(&text, &dir.path().join("tandem.toml"), &test_env).expect_err("problems");
    let all = &err.problems;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        "[a]: url_file: cannot read /nonexistent/tandem/a.url: No such file or directory"
    );
    assert_eq!(at(&all[0]), (3, 12));
    assert_eq!(
        all[1].message,
        format!(
            "[b]: password_file: {}/empty is empty",
            dir.path().display()
        )
    );
    assert_eq!(at(&all[1]), (8, 17));
    assert!(!err.to_string().contains("hunter2"), "{err}");

    let both = format!("{HEAD}{ORDER}").replacen(
        "kind = \"mssql\"\n",
        "kind = \"mssql\"\nurl_file = \"/x\"\n",
        1,
    );
    let problem = only_problem(&both);
    assert_eq!(problem.message, "[a]: give url or url_file, not both");
}

#[test]
fn missing_entity_keys_point_at_the_entity_or_side() {
    let text = format!("{HEAD}[[entities]]\na = {{ table = \"t\", key = [\"k\"] }}\n");
    let all = problems(&text);
    let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            r#"entity #1: missing required key "name""#,
            r#"entity #1: missing required key "b""#,
        ]
    );
    assert!(all.iter().all(|p| at(p) == (8, 1)));

    let text = format!(
        "{HEAD}[[entities]]\nname = \"o\"\na = {{ key = [\"k\"] }}\nb = {{ table = \"t\" }}\n"
    );
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        r#"entity "o": missing required key "a.table""#
    );
    assert_eq!(at(&all[0]), pos(&text, "{ key"));
    assert_eq!(
        all[1].message,
        r#"entity "o": missing required key "b.key""#
    );
    assert_eq!(at(&all[1]), pos(&text, "{ table = \"t\" }"));
}

#[test]
fn missing_column_keys_point_at_the_column() {
    let text = with_order(
        "columns = [\n  { a = \"X\", b = \"x\" },\n  { b = \"y\" },\n  { a = \"Z\" },\n]\n",
    );
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        r#"entity "order": column #2: missing required key "a""#
    );
    assert_eq!(at(&all[0]), pos(&text, "{ b = \"y\""));
    assert_eq!(
        all[1].message,
        r#"entity "order": column Z: missing required key "b""#
    );
    assert_eq!(at(&all[1]), pos(&text, "{ a = \"Z\""));
}

// -- enumerations ---------------------------------------------------------------

#[test]
fn invalid_kind_lists_allowed_values() {
    let text = HEAD.replace("\"mssql\"", "\"oracle\"") + ORDER;
    assert_one(
        &text,
        "\"oracle\"",
        r#"[a]: kind "oracle" is not valid; expected one of "postgres", "mssql""#,
    );
}

#[test]
fn invalid_direction_and_on_conflict_list_allowed_values() {
    let text = with_order("direction = \"both_ways\"\non_conflict = \"a\"\n");
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        r#"entity "order": direction "both_ways" is not valid; expected one of "both", "a_to_b", "b_to_a""#
    );
    assert_eq!(at(&all[0]), (12, 13));
    assert_eq!(
        all[1].message,
        r#"entity "order": on_conflict "a" is not valid; expected one of "a_wins", "b_wins", "newest_wins""#
    );
    assert_eq!(at(&all[1]), (13, 15));
}

// -- ${ENV} ---------------------------------------------------------------------

#[test]
fn env_references_are_expanded_in_any_string() {
    let text = format!(
            "{HEAD}[[entities]]\nname = \"order\"\na = {{ table = \"${{SCHEMA}}.ORDERS\", key = [\"NO\"] }}\nb = {{ table = \"x${{EMPTY}}y\", key = [\"id\"] }}\ncolumns = [{{ a = \"S\", b = \"s\", values = {{ O = \"${{SCHEMA}}-open\" }} }}]\n"
        );
    let config = ok(&text);
    let order = &config.entities[0];
    assert_eq!(order.a.table.to_string(), "sync.ORDERS");
    assert_eq!(order.b.table.name, "xy");
    let values = order.columns[0].values.as_ref().expect("values");
    assert_eq!(values.pairs[0].1, Value::from("sync-open"));
    // '$' alone is kept as is.
    assert_eq!(interpolate("a$b$", &test_env), Ok("a$b$".to_owned()));
}

#[test]
fn undefined_env_variables_are_reported_at_the_string() {
    let text = format!(
            "[a]\nkind = \"postgres\"\nurl  = \"${{TANDEM_OLD_URL}}\"\n\n[b]\nkind = \"postgres\"\nurl = \"${{TANDEM_B_URL}}\"\n{ORDER}"
        );
    let problem = only_problem(&text);
    assert_eq!(
        problem.message,
        "[a]: url: environment variable TANDEM_OLD_URL is not set"
    );
    assert_eq!(at(&problem), (3, 8));

    let text = with_order("columns = [{ a = \"${X1}\", b = \"${X2}_${X3}\" }]\n");
    let all = problems(&text);
    let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            r#"entity "order": column #1: a: environment variable X1 is not set"#,
            r#"entity "order": column #1: b: environment variable X2 is not set"#,
            r#"entity "order": column #1: b: environment variable X3 is not set"#,
        ]
    );
    assert_eq!(at(&all[0]), pos(&text, "\"${X1}"));
    assert_eq!(at(&all[2]), pos(&text, "\"${X2}"));
}

#[test]
fn malformed_env_references_are_reported_without_the_value() {
    let text = HEAD.replace(
        "postgres://tandem:hunter2@db/app",
        "postgres://u:${pw@db/app",
    ) + ORDER;
    let problem = only_problem(&text);
    assert_eq!(problem.message, r#"[b]: url: "${" without a closing "}""#);
    assert_eq!(problem.line, 7);

    let text = HEAD.replace("hunter2@db", "${1x}@db") + ORDER;
    let problem = only_problem(&text);
    assert_eq!(
        problem.message,
        r#"[b]: url: "${...}" must contain an environment variable name (letters, digits and _)"#
    );
}

#[test]
fn expanded_urls_never_appear_in_messages() {
    // Breaking the file elsewhere must not leak the expanded URLs.
    let text = EXAMPLE.replace("kind = \"postgres\"", "kind = \"pg\"");
    let err = try_parse(&text).expect_err("bad kind");
    let shown = format!("{err}\n{err:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("t0psecret"),
        "{shown}"
    );
    assert_eq!(err.problems.len(), 2);

    let text = HEAD.replace(
        "url = \"postgres://tandem:hunter2@db/app\"",
        "url = \"${EMPTY}\"",
    ) + ORDER;
    assert_one(&text, "\"${EMPTY}\"", "[b]: url is empty");
}

// -- entities -------------------------------------------------------------------

#[test]
fn entity_names_must_be_present_unique_and_non_empty() {
    let text = format!("{HEAD}{ORDER}{ORDER}");
    let problem = only_problem(&text);
    assert_eq!(
        problem.message,
        r#"entity "order": the name is already used by another entity (first at line 9)"#
    );
    assert_eq!(at(&problem), pos_nth(&text, "\"order\"", 1));
    assert_eq!(problem.line, 13);

    let text = format!("{HEAD}{}", ORDER.replace("\"order\"", "\"\""));
    assert_one(&text, "\"\"", "entity #1: name must not be empty");
}

#[test]
fn at_least_one_entity_is_required() {
    let problem = only_problem(HEAD);
    assert_eq!(
        problem.message,
        "no entities defined; add at least one [[entities]] table"
    );
    assert_eq!(problem.line, 0);
    assert_eq!(only_problem(&format!("entities = []\n{HEAD}")).line, 0);
}

#[test]
fn keys_must_be_non_empty_and_without_duplicates() {
    let text = format!(
            "{HEAD}[[entities]]\nname = \"order\"\na = {{ table = \"T\", key = [] }}\nb = {{ table = \"t\", key = [\"id\", \"no\", \"id\"] }}\n"
        );
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        r#"entity "order": a.key must list at least one column"#
    );
    assert_eq!(at(&all[0]), pos(&text, "[]"));
    assert_eq!(
        all[1].message,
        r#"entity "order": b.key lists column id twice"#
    );
    assert_eq!(at(&all[1]), pos_nth(&text, "\"id\"", 1));

    let text = ORDER.replace("[\"ORDER_NO\"]", "[\"\"]");
    assert_one(
        &format!("{HEAD}{text}"),
        "\"\"",
        r#"entity "order": a.key has an empty column name"#,
    );
}

#[test]
fn table_names_split_on_the_first_dot_and_keep_case() {
    let text = format!("{HEAD}{}", ORDER.replace("dbo.ORDERS", "Db.Sales.ORDERS"));
    let config = ok(&text);
    assert_eq!(
        config.entities[0].a.table,
        TableName {
            schema: Some("Db".into()),
            name: "Sales.ORDERS".into()
        }
    );
    assert_eq!(config.entities[0].a.table.to_string(), "Db.Sales.ORDERS");
}

#[test]
fn table_names_need_non_empty_parts() {
    for (table, message) in [
        (
            ".ORDERS",
            r#"entity "order": a.table ".ORDERS" has an empty schema name (write "schema.table" or "table")"#,
        ),
        (
            "dbo.",
            r#"entity "order": a.table "dbo." has an empty table name"#,
        ),
        ("", r#"entity "order": a.table must not be empty"#),
    ] {
        let text = format!("{HEAD}{}", ORDER.replace("dbo.ORDERS", table));
        assert_one(&text, &format!("\"{table}\""), message);
    }
}

#[test]
fn a_column_mapped_twice_on_one_side_is_reported() {
    let text = with_order(
            "columns = [\n  { a = \"X\", b = \"x\" },\n  { a = \"Y\", b = \"x\" },\n  { a = \"X\", b = \"z\" },\n]\n",
        );
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(
        all[0].message,
        r#"entity "order": column x is mapped twice on side B (first at line 13)"#
    );
    assert_eq!(at(&all[0]), pos_nth(&text, "\"x\"", 1));
    assert_eq!(
        all[1].message,
        r#"entity "order": column X is mapped twice on side A (first at line 13)"#
    );
    assert_eq!(at(&all[1]), pos_nth(&text, "\"X\"", 1));
}

#[test]
fn a_mapped_peer_id_column_is_reported() {
    let text = format!(
        "{HEAD}{}columns = [{{ a = \"NEW_ID\", b = \"id2\" }}]\n",
        ORDER.replace(
            "key = [\"ORDER_NO\"]",
            "key = [\"ORDER_NO\"], peer_id_column = \"NEW_ID\""
        )
    );
    let problem = only_problem(&text);
    assert_eq!(
        problem.message,
        r#"entity "order": column NEW_ID is mapped but is also a.peer_id_column, which tandem fills itself"#
    );
    assert_eq!(at(&problem), pos_nth(&text, "\"NEW_ID\"", 1));
}

#[test]
fn peer_id_column_needs_a_single_column_key_on_the_other_side() {
    let text = format!(
            "{HEAD}[[entities]]\nname = \"item\"\na = {{ table = \"ITEMS\", key = [\"NO\", \"LINE\"] }}\nb = {{ table = \"items\", key = [\"id\"], peer_id_column = \"legacy\" }}\n"
        );
    assert_one(
        &text,
        "\"legacy\"",
        r#"entity "item": b.peer_id_column needs a single-column key on side A, but a.key has 2 columns"#,
    );
    // The reverse is fine: A's peer column holds B's single-column key.
    ok(&text
        .replace(
            "key = [\"NO\", \"LINE\"] }",
            "key = [\"NO\", \"LINE\"], peer_id_column = \"NEW_ID\" }",
        )
        .replace(", peer_id_column = \"legacy\"", ""));
}

// -- values ---------------------------------------------------------------------

#[test]
fn values_must_be_one_to_one() {
    let text = format!(
            "{HEAD}{ORDER}columns = [\n  {{ a = \"CUST_NAME\", b = \"customer\" }},\n  {{ a = \"STATUS\", b = \"status\", values = {{ O = \"open\", C = \"closed\", X = \"open\" }} }},\n]\n"
        );
    let err = try_parse(&text).expect_err("not one-to-one");
    assert_eq!(err.problems.len(), 1);
    assert_eq!(
        err.to_string(),
        r#"tandem.toml:14:3: entity "order": values of column STATUS are not one-to-one: A codes "O" and "X" both map to "open"; name the code written back with prefer = ["O"]"#
    );
}

#[test]
fn values_are_compared_by_text_form() {
    let text = with_order("columns = [{ a = \"F\", b = \"f\", values = { Y = 1, N = \"1\" } }]\n");
    assert_one(
        &text,
        "{ a = \"F\"",
        r#"entity "order": values of column F are not one-to-one: A codes "Y" and "N" map to 1 and "1", which are equal as text; name the code written back with prefer = ["Y"]"#,
    );
}

#[test]
fn values_accept_scalars_of_any_type() {
    let text = with_order(
            "columns = [{ a = \"F\", b = \"f\", values = { Y = true, N = false, H = 0.5, T = 10, S = \"s\" } }]\n",
        );
    let config = ok(&text);
    let values = config.entities[0].columns[0]
        .values
        .clone()
        .expect("values");
    let expected = [
        ("Y", Value::Bool(true)),
        ("N", Value::Bool(false)),
        ("H", Value::from(0.5)),
        ("T", Value::from(10)),
        ("S", Value::from("s")),
    ];
    let expected: Vec<(Value, Value)> = expected
        .into_iter()
        .map(|(a, b)| (Value::from(a), b))
        .collect();
    assert_eq!(values.pairs, expected);
}

#[test]
fn values_must_not_be_empty_or_hold_arrays_and_tables() {
    let text = with_order("columns = [{ a = \"F\", b = \"f\", values = {} }]\n");
    assert_one(
        &text,
        "{}",
        r#"entity "order": values of column F must not be empty (remove it for no translation)"#,
    );

    let text = with_order(
            "columns = [{ a = \"F\", b = \"f\", values = { A = [1], B = { x = 1 }, C = 1979-05-27 } }]\n",
        );
    let all = problems(&text);
    let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            r#"entity "order": values of column F: code "A" maps to an array; B values must be a string, integer, float or boolean"#,
            r#"entity "order": values of column F: code "B" maps to a table; B values must be a string, integer, float or boolean"#,
            r#"entity "order": values of column F: code "C" maps to a date/time; B values must be a string, integer, float or boolean"#,
        ]
    );
    assert_eq!(at(&all[0]), pos(&text, "[1]"));
    assert_eq!(at(&all[1]), pos(&text, "{ x = 1 }"));
    assert_eq!(at(&all[2]), pos(&text, "1979"));

    let text = with_order("columns = [{ a = \"F\", b = \"f\", values = { A = nan } }]\n");
    assert_one(
        &text,
        "nan",
        r#"entity "order": values of column F: code "A" maps to a non-finite float; B values must be a string, integer, float or boolean"#,
    );
}

// -- refs -----------------------------------------------------------------------

fn item(columns: &str) -> String {
    format!(
            "[[entities]]\nname = \"item\"\na = {{ table = \"ITEMS\", key = [\"ITEM_NO\"] }}\nb = {{ table = \"items\", key = [\"id\"] }}\ncolumns = [{columns}]\n"
        )
}

#[test]
fn ref_must_name_a_known_other_entity() {
    let text = format!(
        "{HEAD}{ORDER}{}",
        item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"ordr\" }")
    );
    assert_one(
        &text,
        "\"ordr\"",
        r#"entity "item": column ORDER_NO refers to unknown entity "ordr""#,
    );
}

#[test]
fn a_self_reference_is_accepted_and_is_not_a_parent() {
    let text = format!(
        "{HEAD}{ORDER}{}",
        item("{ a = \"PARENT_NO\", b = \"parent_id\", ref = \"item\" }")
    );
    let config = parse(&text, Path::new("t.toml"), &test_env).expect("a self-reference is valid");
    let item = config.entity("item").expect("item");
    assert!(item.refers_to_itself());
    assert!(item.parents().is_empty());
    let order: Vec<&str> = config
        .entities_parents_first()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(order, ["order", "item"]);
}

#[test]
fn ref_needs_a_parent_with_a_single_column_key() {
    let parent = ORDER.replace("[\"ORDER_NO\"]", "[\"ORDER_NO\", \"YEAR\"]");
    let text = format!(
        "{HEAD}{parent}{}",
        item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }")
    );
    assert_one(
        &text,
        "\"order\" }",
        r#"entity "item": column ORDER_NO refers to entity "order", whose key on side A has 2 columns; a ref needs a single-column key"#,
    );
}

#[test]
fn ref_cannot_be_combined_with_values() {
    let text = format!(
        "{HEAD}{ORDER}{}",
        item("{ a = \"ORDER_NO\", b = \"order_id\", values = { A = \"a\" }, ref = \"order\" }")
    );
    assert_one(
        &text,
        "\"order\" }",
        r#"entity "item": column ORDER_NO: values and ref cannot be combined; a ref column is translated through the id map of its parent"#,
    );
}

#[test]
fn ref_cycles_are_named() {
    let text = format!(
            "{HEAD}{}{}[[entities]]\nname = \"line\"\na = {{ table = \"L\", key = [\"L\"] }}\nb = {{ table = \"l\", key = [\"l\"] }}\ncolumns = [{{ a = \"I\", b = \"i\", ref = \"item\" }}]\n",
            ORDER.to_owned() + "columns = [{ a = \"LAST_LINE\", b = \"last_line\", ref = \"line\" }]\n",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }"),
        );
    // order -> line -> item -> order, found (and reported) where the
    // search from "order" closes it: at item's ref.
    assert_one(
        &text,
        "\"order\" }",
        r#"entity "item": refs form a cycle: item -> order -> line -> item"#,
    );

    let text = format!(
        "{HEAD}{}{}",
        ORDER.to_owned() + "columns = [{ a = \"ITEM\", b = \"item\", ref = \"item\" }]\n",
        item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }"),
    );
    assert_one(
        &text,
        "\"order\" }",
        r#"entity "item": refs form a cycle: item -> order -> item"#,
    );
}

// -- sync and pool --------------------------------------------------------------

#[test]
fn sync_values_must_be_positive() {
    for key in [
        "batch_size",
        "poll_interval_ms",
        "max_attempts",
        "retry_min_ms",
        "retry_max_ms",
    ] {
        let text = format!("{HEAD}[sync]\n{key} = 0\n{ORDER}");
        let problem = only_problem(&text);
        assert_eq!(
            problem.message,
            format!("[sync]: {key} must be at least 1, got 0")
        );
        assert_eq!(at(&problem), (9, key.len() + 4));
    }
    let text = format!("{HEAD}[sync]\nbatch_size = -5\n{ORDER}");
    assert_one(&text, "-5", "[sync]: batch_size must be at least 1, got -5");
    let text = format!("{HEAD}[sync]\nmax_attempts = 5000000000\n{ORDER}");
    assert_one(
        &text,
        "5000000000",
        "[sync]: max_attempts is too large (5000000000)",
    );
}

#[test]
fn retry_min_must_not_exceed_retry_max() {
    let text = format!("{HEAD}[sync]\nretry_min_ms = 500\nretry_max_ms = 100\n{ORDER}");
    assert_one(
        &text,
        "500",
        "[sync]: retry_min_ms (500) must not exceed retry_max_ms (100)",
    );
    // Only the maximum written: it clashes with the default minimum.
    let text = format!("{HEAD}[sync]\nretry_max_ms = 100\n{ORDER}");
    assert_one(
        &text,
        "100",
        "[sync]: retry_min_ms (200) must not exceed retry_max_ms (100)",
    );
}

#[test]
fn pool_size_and_schema_are_checked() {
    let text = format!("{}pool_size = 0\nschema = \"\"\n{ORDER}", HEAD);
    let all = problems(&text);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0].message, "[b]: pool_size must be at least 1, got 0");
    assert_eq!(at(&all[0]), (8, 13));
    assert_eq!(all[1].message, "[b]: schema must not be empty");
    assert_eq!(at(&all[1]), (9, 10));
}

// -- reporting ------------------------------------------------------------------

#[test]
fn all_problems_are_reported_in_file_order() {
    let text = r#"[a]
kind = "db2"
url = "${NOPE}"
pool_size = 0

[b]
kind = "postgres"
url = "x"

[sync]
retry_min_ms = 0

[[entities]]
name = "order"
direction = "up"
a = { table = "ORDERS", key = [] }
b = { table = ".orders", key = ["id"], peer_id_column = "" }
columns = [{ a = "S", b = "s", values = { X = "x", Y = "x" }, ref = "nobody" }]
"#;
    let all = problems(text);
    let lines: Vec<usize> = all.iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 3, 4, 11, 15, 16, 17, 17, 18, 18, 18], "{all:#?}");
    let shown = try_parse(text).expect_err("broken").to_string();
    assert_eq!(shown.lines().count(), all.len());
    assert!(shown.starts_with(
            "tandem.toml:2:8: [a]: kind \"db2\" is not valid; expected one of \"postgres\", \"mssql\"\ntandem.toml:3:7: [a]: url: environment variable NOPE is not set\n"
        ), "{shown}");
}

#[test]
fn problem_positions_count_characters() {
    let index = LineIndex::new("ab\nçé = 1\n");
    assert_eq!(index.position(0), (1, 1));
    assert_eq!(index.position(3), (2, 1));
    assert_eq!(index.position(3 + "çé ".len()), (2, 4));
    assert_eq!(index.position(1000), (3, 1));
}

// -- redaction ------------------------------------------------------------------

#[test]
fn secret_prints_redacted() {
    let url = Secret::new("postgres://user:pw@host/db".to_owned());
    assert_eq!(url.to_string(), "postgres://user:***@host/db");
    assert_eq!(url.redacted(), "postgres://user:***@host/db");
    assert_eq!(
        format!("{url:?}"),
        "Secret(\"postgres://user:***@host/db\")"
    );
    assert_eq!(url.expose(), "postgres://user:pw@host/db");

    let config = ok(EXAMPLE);
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cret") && !debug.contains("t0psecret"));
    let ado = Secret::new("Server=db;Password=pw;".to_owned());
    assert_eq!(ado.to_string(), "Server=db;Password=***;");
}

// -- derived facts ----------------------------------------------------------------

#[test]
fn key_is_given_when_every_key_column_is_mapped() {
    let config = ok(EXAMPLE);
    let item = config.entity("order_item").expect("order_item");
    assert!(item.key_is_given(Side::A));
    assert!(!item.key_is_given(Side::B));
    let order = config.entity("order").expect("order");
    assert!(!order.key_is_given(Side::A));
    assert!(!order.key_is_given(Side::B));
}

#[test]
fn parents_come_first() {
    let text = format!(
            "{HEAD}{}{}{}",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }, { a = \"O2\", b = \"o2\", ref = \"order\" }, { a = \"C\", b = \"c\", ref = \"customer\" }"),
            ORDER.to_owned() + "columns = [{ a = \"CUST\", b = \"cust\", ref = \"customer\" }]\n",
            ORDER.replace("order", "customer"),
        );
    let config = ok(&text);
    assert_eq!(
        config.entity("item").expect("item").parents(),
        ["order", "customer"]
    );
    let order: Vec<&str> = config
        .entities_parents_first()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(order, ["customer", "order", "item"]);

    let config = ok(EXAMPLE);
    let order: Vec<&str> = config
        .entities_parents_first()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(order, ["order", "order_item"]);
}

#[test]
fn direction_flows() {
    assert!(Direction::Both.flows(Side::A));
    assert!(Direction::Both.flows(Side::B));
    assert!(Direction::AToB.flows(Side::A));
    assert!(!Direction::AToB.flows(Side::B));
    assert!(!Direction::BToA.flows(Side::A));
    assert!(Direction::BToA.flows(Side::B));
}

#[test]
fn sides_name_themselves() {
    assert_eq!(Side::A.other(), Side::B);
    assert_eq!(Side::B.other(), Side::A);
    assert_eq!((Side::A.name(), Side::B.name()), ("a", "b"));
    assert_eq!(format!("{} {}", Side::A, Side::B), "A B");
    let table = TableName {
        schema: None,
        name: "orders".into(),
    };
    assert_eq!(table.to_string(), "orders");
}

// -- finding and reading the file ---------------------------------------------

#[test]
fn resolve_path_prefers_cli_then_env() {
    let cli = Path::new("/etc/tandem/prod.toml");
    assert_eq!(
        resolve_path_from(Some(cli), Some("/x.toml".into())),
        PathBuf::from(cli)
    );
    assert_eq!(
        resolve_path_from(None, Some("/x.toml".into())),
        PathBuf::from("/x.toml")
    );
    assert_eq!(
        resolve_path_from(None, Some("".into())),
        PathBuf::from("tandem.toml")
    );
    assert_eq!(resolve_path_from(None, None), PathBuf::from("tandem.toml"));
    assert_eq!(resolve_path(Some(cli)), PathBuf::from(cli));
}

#[test]
fn load_reads_the_file() {
    let dir = std::env::temp_dir().join(format!("tandem-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("tandem.toml");
    std::fs::write(&path, with_order("")).expect("write");
    let config = load(&path).expect("valid");
    assert_eq!(config.path, path);
    assert_eq!(config.a.kind, DbKind::Mssql);

    let missing = dir.join("missing.toml");
    let err = load(&missing).expect_err("missing file");
    assert_eq!(err.problems.len(), 1);
    assert!(err.to_string().starts_with(&format!(
        "{}: cannot read the config file:",
        missing.display()
    )));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// A setting tandem does not know, or a wrong value of one it knows, is refused where it is
/// written, never accepted and silently ignored.
#[test]
fn a_column_setting_tandem_does_not_know_is_refused_at_its_line() {
    for (setting, says) in [
        ("trim = true", "unknown key `trim`".to_string()),
        (
            "direction = \"up\"",
            "direction \"up\" is not valid; expected one of".to_string(),
        ),
        (
            "const = \"L\"",
            "a const names the column of one side".to_string(),
        ),
        (
            "convert = \"flag\"",
            "convert: unknown converter \"flag\"; expected one of".to_string(),
        ),
    ] {
        let text =
            format!("{HEAD}{ORDER}columns = [\n  {{ a = \"X\", b = \"x\", {setting} }},\n]\n");
        let problem = only_problem(&text);
        assert!(
            problem.message.contains(&says),
            "{setting}: {}",
            problem.message
        );
        let (line, _) = at(&problem);
        assert_eq!(line, 13, "{setting}: the column's line");
    }
}

#[test]
fn converters_are_read_and_misfits_named_at_their_position() {
    let good = with_order(
        r#"columns = [
  { a = "NAME", b = "name", convert = "trim" },
  { a = "ACTIVE", b = "active", convert = "bool" },
  { a = "OPEN", b = "open", convert = { flag = ["Y", "N"] } },
  { a = "CENTS", b = "euros", convert = { scale = -2 } },
  { a = "PRICE", b = "price", convert = { round = 2 } },
  { a = "AT", b = "at", convert = { timezone = "Europe/Paris", ambiguous = "later" } },
  { a = "STATE", b = "active2", values = { Y = true, J = true, N = false }, prefer = ["Y"] },
]
"#,
    );
    let config = ok(&good);
    let cols = &config.entities[0].columns;
    assert_eq!(cols[0].convert, Some(Converter::Trim));
    assert_eq!(
        cols[1].convert,
        Some(Converter::Flag {
            on: Value::from(1),
            off: Value::from(0)
        })
    );
    assert_eq!(
        cols[2].convert,
        Some(Converter::Flag {
            on: Value::from("Y"),
            off: Value::from("N")
        })
    );
    assert_eq!(cols[3].convert, Some(Converter::Scale(-2)));
    assert_eq!(cols[4].convert, Some(Converter::Round(2)));
    assert_eq!(
        cols[5].convert,
        Some(Converter::Timezone {
            zone: chrono_tz::Europe::Paris,
            later: true
        })
    );
    assert!(cols.iter().all(ColumnMap::converted));
    assert_eq!(
        cols[6].values.as_ref().map(|m| m.prefer.clone()),
        Some(vec!["Y".to_string()])
    );

    for (setting, needle, says) in [
        (
            r#"convert = { timezone = "Europe/Pariss" }"#,
            "{ timezone",
            "unknown time zone \"Europe/Pariss\"",
        ),
        (
            r#"convert = { scale = 2.5 }"#,
            "{ scale",
            "scale needs an integer",
        ),
        (
            r#"convert = { flag = ["Y", "Y"] }"#,
            "{ flag",
            "two different codes",
        ),
        (
            r#"convert = { timezone = "UTC", ambiguous = "first" }"#,
            "{ timezone",
            "ambiguous is \"earlier\" or \"later\"",
        ),
        (
            r#"convert = "trim", values = { Y = 1 }"#,
            "{ a = \"X\"",
            "values and convert cannot be combined",
        ),
        (r#"prefer = ["Y"]"#, "[\"Y\"]", "prefer needs a values map"),
        (
            r#"values = { Y = true, J = true }, prefer = ["Q"]"#,
            "{ a = \"X\"",
            "prefer names \"Q\", which is not one of its A codes",
        ),
    ] {
        let text =
            format!("{HEAD}{ORDER}columns = [\n  {{ a = \"X\", b = \"x\", {setting} }},\n]\n");
        let all = problems(&text);
        let problem = all
            .iter()
            .find(|p| p.message.contains(says))
            .unwrap_or_else(|| panic!("{setting}: {all:#?}"));
        assert_eq!(
            at(problem),
            pos(&text, needle),
            "{setting}: {}",
            problem.message
        );
    }
}

#[test]
fn one_way_columns_and_constants_are_read_and_misuse_named() {
    let config = ok(&with_order(
        r#"columns = [
  { a = "NAME", b = "name" },
  { a = "PRICE", b = "price", direction = "a_to_b" },
  { a = "NOTE", b = "note", direction = "b_to_a" },
  { a = "ORIGIN", const = "N" },
  { b = "source", const = "legacy" },
]
"#,
    ));
    let e = &config.entities[0];
    assert_eq!(e.columns.len(), 3);
    let at_side = |side| {
        e.written_columns(side)
            .map(|c| c.name(side).to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(at_side(Side::A), ["NAME", "NOTE"]);
    assert_eq!(at_side(Side::B), ["name", "price"]);
    assert_eq!(
        e.constants,
        vec![
            Constant {
                side: Side::A,
                column: "ORIGIN".into(),
                value: Value::from("N")
            },
            Constant {
                side: Side::B,
                column: "source".into(),
                value: Value::from("legacy")
            },
        ]
    );

    for (extra, entity_direction, needle, says) in [
        (
            r#"{ a = "ORDER_NO", b = "id", direction = "a_to_b" }"#,
            "",
            "\"a_to_b\" }",
            "is part of a.key: a key column travels both ways",
        ),
        (
            r#"{ a = "X", b = "x", direction = "b_to_a" }"#,
            "direction = \"a_to_b\"\n",
            "\"b_to_a\" }",
            "its direction is the opposite of the entity's",
        ),
        (
            r#"{ a = "X", b = "x", const = 1 }"#,
            "",
            "{ a = \"X\"",
            "a const names the column of one side: `a` or `b`, not both",
        ),
        (
            r#"{ a = "X", const = 1, values = { Y = 1 } }"#,
            "",
            "{ a = \"X\"",
            "const and values cannot be combined",
        ),
        (
            r#"{ a = "X", b = "x" }, { a = "X", const = 1 }"#,
            "",
            "{ a = \"X\", const",
            "const column X of side A is also a mapped column",
        ),
        (
            r#"{ a = "X", const = [1] }"#,
            "",
            "[1]",
            "const must be a string, integer, float or boolean",
        ),
    ] {
        let text = format!("{HEAD}{ORDER}{entity_direction}columns = [\n  {extra},\n]\n");
        let all = problems(&text);
        let problem = all
            .iter()
            .find(|p| p.message.contains(says))
            .unwrap_or_else(|| panic!("{extra}: {all:#?}"));
        assert_eq!(
            at(problem),
            pos(&text, needle),
            "{extra}: {}",
            problem.message
        );
    }
}

#[test]
fn key_from_numbers_a_side_that_generates_its_key() {
    let text = format!(
        "{HEAD}[[entities]]\nname = \"order\"\n\
         a = {{ table = \"dbo.ORDERS\", key = [\"ORDER_NO\"], key_from = \"sequence dbo.ORDER_SEQ\" }}\n\
         b = {{ table = \"public.orders\", key = [\"id\"], key_from = \"max+1\" }}\n"
    );
    let config = ok(&text);
    let e = &config.entities[0];
    assert_eq!(
        e.a.key_from,
        Some(KeyFrom::Sequence(TableName {
            schema: Some("dbo".into()),
            name: "ORDER_SEQ".into()
        }))
    );
    assert_eq!(e.b.key_from, Some(KeyFrom::MaxPlusOne));

    for (side, needle, says) in [
        (
            "a = { table = \"dbo.ORDERS\", key = [\"ORDER_NO\"], key_from = \"max + 1\" }",
            "\"max + 1\"",
            "a.key_from \"max + 1\" is not valid; expected \"sequence NAME\" or \"max+1\"",
        ),
        (
            "a = { table = \"dbo.ORDERS\", key = [\"ORDER_NO\", \"X\"], key_from = \"max+1\" }",
            "\"max+1\"",
            "a.key_from needs a single-column key",
        ),
    ] {
        let text = format!(
            "{HEAD}[[entities]]\nname = \"order\"\n{side}\nb = {{ table = \"b\", key = [\"id\"] }}\n"
        );
        let all = problems(&text);
        let problem = all
            .iter()
            .find(|p| p.message.contains(says))
            .unwrap_or_else(|| panic!("{side}: {all:#?}"));
        assert_eq!(at(problem), pos(&text, needle), "{}", problem.message);
    }
    // Where the key is given by a mapped column, tandem does not number records.
    let text = format!(
        "{HEAD}[[entities]]\nname = \"order\"\n\
         a = {{ table = \"dbo.ORDERS\", key = [\"ORDER_NO\"], key_from = \"max+1\" }}\n\
         b = {{ table = \"b\", key = [\"id\"] }}\ncolumns = [ {{ a = \"ORDER_NO\", b = \"no\" }} ]\n"
    );
    let problem = only_problem(&text);
    assert!(
        problem
            .message
            .contains("the key is given by mapped columns"),
        "{}",
        problem.message
    );
}

/// What this version cannot express (expressions) is refused at its position with the
/// reason and what to do instead, never ignored.
#[test]
fn features_not_in_this_version_are_refused_with_the_reason() {
    let text = with_order("columns = [ { a = \"X\", b = \"x\", expr = \"upper(X)\" } ]\n");
    let problem = only_problem(&text);
    let says = "`expr`: expressions are not supported: tandem never runs SQL (or any code) written in the config";
    assert!(problem.message.contains(says), "{}", problem.message);
    assert_eq!(
        at(&problem),
        pos(&text, "\"upper(X)\""),
        "{}",
        problem.message
    );
    // The refusal of expressions says what to use instead.
    let text = with_order("columns = [ { a = \"X\", b = \"x\", expression = \"X + 1\" } ]\n");
    let problem = only_problem(&text);
    for instead in [
        "`convert`",
        "`values`",
        "`lookup`",
        "`direction`",
        "invertible",
    ] {
        assert!(problem.message.contains(instead), "{}", problem.message);
    }
}

// -- lookup ------------------------------------------------------------------

#[test]
fn a_lookup_names_the_reference_table_its_side_and_both_columns() {
    let config = ok(&with_order(
        "columns = [\n  { a = \"COUNTRY_CODE\", b = \"country_id\", lookup = { b_table = \"ref.countries\", key = \"id\", value = \"iso_code\" } },\n  { a = \"REGION_NO\", b = \"region\", lookup = { a_table = \"REGIONS\", key = \"NO\", value = \"NAME\" } },\n]\n",
    ));
    let e = &config.entities[0];
    let l = e.columns[0].lookup.as_ref().expect("lookup");
    assert_eq!(l.side, Side::B);
    assert_eq!(l.table.to_string(), "ref.countries");
    assert_eq!((l.key.as_str(), l.value.as_str()), ("id", "iso_code"));
    // Into B a code is found by iso_code and becomes an id; into A an id becomes a code.
    assert_eq!(l.by_and_out(Side::B), ("iso_code", "id"));
    assert_eq!(l.by_and_out(Side::A), ("id", "iso_code"));
    let l = e.columns[1].lookup.as_ref().expect("lookup");
    assert_eq!((l.side, l.table.schema.as_deref()), (Side::A, None));
    assert_eq!(l.by_and_out(Side::A), ("NAME", "NO"));
    assert!(
        !e.columns[0].converted(),
        "a look-up is not a lossy conversion"
    );
}

#[test]
fn a_lookup_that_is_wrong_is_refused_at_its_position() {
    let col = |lookup: &str| {
        with_order(&format!(
            "columns = [ {{ a = \"CC\", b = \"country_id\", lookup = {lookup} }} ]\n"
        ))
    };
    for (lookup, says) in [
        ("\"countries\"", "column CC: lookup: expected lookup = { b_table = \"schema.table\", key = \"id\", value = \"code\" }"),
        ("{ key = \"id\", value = \"iso\" }", "column CC: lookup needs a_table or b_table"),
        ("{ a_table = \"c\", b_table = \"c\", key = \"id\", value = \"iso\" }", "column CC: lookup names a_table and b_table"),
        ("{ b_table = \"c\", key = \"id\" }", "column CC: lookup needs key and value"),
        ("{ b_table = \"c\", key = \"id\", value = \"id\" }", "column CC: lookup: key and value are both \"id\""),
        ("{ b_table = \"c\", key = \"id\", value = \"iso\", where = \"x\" }", "column CC: lookup: unknown key \"where\""),
        ("{ b_table = \"c\", key = \"\", value = \"iso\" }", "column CC: lookup.key must be a non-empty string"),
    ] {
        let text = col(lookup);
        let problem = only_problem(&text);
        assert!(problem.message.contains(says), "{lookup}: {}", problem.message);
        assert_eq!(at(&problem), pos(&text, lookup), "{}", problem.message);
    }
}

#[test]
fn a_lookup_cannot_be_combined_or_name_a_key_column() {
    let lookup = "lookup = { b_table = \"countries\", key = \"id\", value = \"iso\" }";
    for (other, says) in [
        (
            "values = { X = 1 }",
            "column CC: lookup and values cannot be combined",
        ),
        (
            "convert = \"trim\"",
            "column CC: lookup and convert cannot be combined",
        ),
        (
            "ref = \"order\"",
            "column CC: lookup and ref cannot be combined",
        ),
    ] {
        let text = with_order(&format!(
            "columns = [ {{ a = \"CC\", b = \"country_id\", {other}, {lookup} }} ]\n"
        ));
        let all = problems(&text);
        assert!(
            all.iter().any(|p| p.message.contains(says)),
            "{other}: {all:#?}"
        );
    }
    let text = with_order(&format!(
        "columns = [ {{ b = \"country_id\", const = 1, {lookup} }} ]\n"
    ));
    assert!(problems(&text)
        .iter()
        .any(|p| p.message.contains("const and lookup cannot be combined")));
    let text = with_order(&format!(
        "columns = [ {{ a = \"ORDER_NO\", b = \"no\", {lookup} }} ]\n"
    ));
    let problem = only_problem(&text);
    assert!(
        problem.message.contains(
            "column ORDER_NO is part of a.key and has a lookup: a key column cannot be looked up"
        ),
        "{}",
        problem.message
    );
    assert_eq!(at(&problem), pos(&text, "\"ORDER_NO\", b"));
}

// -- soft_delete and filter ------------------------------------------------

#[test]
fn soft_delete_and_filter_are_read() {
    let c = ok(&with_order(
        "soft_delete = { b = \"deleted_at\" }\nfilter = { b = \"site\", in = [3, \"x\"] }\n",
    ));
    let e = &c.entities[0];
    assert_eq!(
        e.soft_delete,
        Some(SoftDelete {
            side: Side::B,
            column: "deleted_at".into(),
            flag: None
        })
    );
    let f = e.filter.as_ref().expect("a filter");
    assert_eq!((f.side, f.column.as_str()), (Side::B, "site"));
    assert_eq!(f.values, vec![Value::from(3), Value::from("x")]);
    // Records tandem creates at B get the first value, and the mark counts as read there.
    let consts: Vec<_> = e.constants_at(Side::B).collect();
    assert_eq!(
        (consts[0].column.as_str(), &consts[0].value),
        ("site", &Value::from(3))
    );
    assert_eq!(e.constants_at(Side::A).count(), 0);
    assert_eq!(e.read_columns(Side::B), vec!["id", "deleted_at", "site"]);
    assert!(e.restricted_at(Side::B) && !e.restricted_at(Side::A));

    let c = ok(&with_order(
        "soft_delete = { b = \"state\", value = \"D\", live = \"L\" }\nfilter = { b = \"site\", equals = true }\n",
    ));
    let e = &c.entities[0];
    let sd = e.soft_delete.as_ref().expect("soft delete");
    assert_eq!(sd.flag, Some((Value::from("D"), Value::from("L"))));
    assert_eq!(sd.live_value(), Value::from("L"));
    let img = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
    assert!(e.hidden(
        Side::B,
        &img(serde_json::json!({"state": "D", "site": true}))
    ));
    assert!(e.hidden(
        Side::B,
        &img(serde_json::json!({"state": "L", "site": false}))
    ));
    assert!(e.hidden(
        Side::B,
        &img(serde_json::json!({"state": "L", "site": null}))
    ));
    assert!(!e.hidden(
        Side::B,
        &img(serde_json::json!({"state": null, "site": true}))
    ));
    assert!(!e.hidden(Side::A, &img(serde_json::json!({"state": "D"}))));
}

/// A soft delete and a filter on the SQL Server side (A in these tests) are read as on
/// PostgreSQL.
#[test]
fn soft_delete_and_filter_on_sql_server_are_read() {
    let c = ok(&with_order(
        "soft_delete = { a = \"DELETED\", value = \"Y\", live = \"N\" }\nfilter = { a = \"SITE_ID\", equals = 3 }\n",
    ));
    let e = &c.entities[0];
    assert!(e.restricted_at(Side::A) && !e.restricted_at(Side::B));
    assert_eq!(
        e.read_columns(Side::A),
        vec!["ORDER_NO", "DELETED", "SITE_ID"]
    );
}

/// What a soft delete or filter cannot be is refused at its position, with what to write.
#[test]
fn soft_delete_and_filter_mistakes_are_refused_with_positions() {
    for (extra, needle, says) in [
        (
            "soft_delete = \"deleted_at IS NULL\"\n",
            "\"deleted_at IS NULL\"",
            "entity \"order\": `soft_delete`: expected a table: write { b = \"deleted_at\" }",
        ),
        (
            "soft_delete = { a = \"X\", b = \"x\" }\n",
            "{ a = \"X\"",
            "`soft_delete`: name the column of one side, `a` or `b` (not both)",
        ),
        (
            "soft_delete = { b = \"state\", value = \"D\" }\n",
            "{ b = \"state\"",
            "`soft_delete`: a flag needs both `value` (deleted) and `live`",
        ),
        (
            "soft_delete = { b = \"state\", value = \"D\", live = \"D\" }\n",
            "{ b = \"state\"",
            "`value` and `live` are the same",
        ),
        (
            "soft_delete = { b = \"state\", value = 1.5, live = 0 }\n",
            "{ b = \"state\"",
            "`value` must be a string, an integer or a boolean (got 1.5)",
        ),
        (
            "soft_delete = { b = \"state\", when = \"x\" }\n",
            "{ b = \"state\"",
            "unknown key `when`, expected one of `a`, `b`, `value`, `live`",
        ),
        (
            "soft_delete = { b = \"id\" }\n",
            "{ b = \"id\"",
            "`soft_delete`: column id of side B is also a key column",
        ),
        (
            "filter = \"SITE_ID = 3\"\n",
            "\"SITE_ID = 3\"",
            "`filter`: expected a table: write { a = \"SITE_ID\", equals = 3 }",
        ),
        (
            "filter = { b = \"site\" }\n",
            "{ b = \"site\"",
            "`filter`: give exactly one of `equals` and `in`",
        ),
        (
            "filter = { b = \"site\", in = [] }\n",
            "{ b = \"site\"",
            "`filter`: `in` must be a non-empty list of values",
        ),
        (
            "filter = { b = \"site\", equals = 3, sql = \"1=1\" }\n",
            "{ b = \"site\"",
            "unknown key `sql`, expected one of `a`, `b`, `equals`, `in`",
        ),
        (
            "filter = { b = \"name\", equals = 3 }\ncolumns = [ { a = \"NAME\", b = \"name\" } ]\n",
            "{ b = \"name\"",
            "`filter`: column name of side B is also a mapped column",
        ),
        (
            "filter = { b = \"site\", equals = 3 }\ncolumns = [ { b = \"site\", const = 4 } ]\n",
            "{ b = \"site\"",
            "`filter`: column site of side B is also a const column",
        ),
    ] {
        let text = with_order(extra);
        let problem = only_problem(&text);
        assert!(
            problem.message.contains(says),
            "{extra}: {}",
            problem.message
        );
        assert_eq!(at(&problem), pos(&text, needle), "{}", problem.message);
    }
}

// -- [service] -------------------------------------------------------------

#[test]
fn the_service_token_is_read_and_never_printed() {
    let config = ok(&format!(
        "{HEAD}\n[service]\ntoken = \"${{SCHEMA}}-t0ken\"\n{ORDER}"
    ));
    let token = config
        .service
        .current_token()
        .expect("readable")
        .expect("a token");
    assert!(token.matches("sync-t0ken"));
    assert!(!token.matches("sync-t0ke"));
    assert_eq!(format!("{token} {token:?}"), "*** Token(***)");
    assert!(!format!("{config:?}").contains("t0ken"));
    assert!(ok(&with_order(""))
        .service
        .current_token()
        .expect("ok")
        .is_none());
}

#[test]
fn the_service_token_inline_and_in_a_file_is_refused() {
    let text = format!("{HEAD}\n[service]\ntoken = \"x\"\ntoken_file = \"t\"\n{ORDER}");
    assert_one(
        &text,
        "\"t\"",
        "[service]: give token or token_file, not both",
    );
}

/// The refusals README.md quotes, as `tandem` prints them.
#[test]
fn the_refusals_the_readme_quotes_are_printed_so() {
    for (extra, printed) in [
        (
            "columns = [ { a = \"X\", b = \"x\", expr = \"upper(X)\" } ]\n",
            "tandem.toml:12:40: entity \"order\": column X: `expr`: expressions are not supported: tandem never runs SQL (or any code) written in the config, because a value must travel as a parameter and every mapping must be invertible for changes to travel back; use a built-in converter (`convert`: trim, bool, flag, scale, round, timezone), `values` for codes, `lookup` for an id found in a reference table, or `direction` for a column computed on one side only",
        ),
        (
            "filter = \"SITE_ID = 3\"\n",
            "tandem.toml:12:10: entity \"order\": `filter`: expected a table: write { a = \"SITE_ID\", equals = 3 } or { a = \"SITE_ID\", in = [3, 4] } (conditions in SQL text are not accepted: values travel as parameters)",
        ),
    ] {
        let err = match try_parse(&with_order(extra)) {
            Ok(_) => panic!("accepted: {extra}"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(printed), "{err}");
    }
}
