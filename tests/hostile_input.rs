//! Hostile input (issue 8), as property tests.
//!
//! - **Config**: the loader (`tandem::config::parse`) gets mutated and random TOML — never a
//!   panic; every rejection names a line and column inside the file (or, when it cannot, says
//!   clearly what is wrong); no message ever shows a password.
//! - **Row images**: generated rows with every supported column type — NULL vs `''` vs absent
//!   (an unmapped column), extreme numerics, control characters, unicode, bytea with invalid
//!   UTF-8, arrays, JSON — travel A→B→A through real PostgreSQL and arrive unchanged, or are
//!   suspended with an error that names the column; never silently altered, never lost.
//!
//! Case counts are modest so the file runs in CI time; `HOSTILE_CASES=n` runs more and
//! `HOSTILE_SEED=n` explores other cases (the default seed is fixed, so CI is reproducible).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use tokio_postgres::types::ToSql;

use common::fixtures::{rows, Env};

fn runner(cases: u32) -> TestRunner {
    let cases = std::env::var("HOSTILE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    let seed = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x7A4D_E5EED);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 200,
        ..Config::default()
    })
}

// =============================================================================================
// Config
// =============================================================================================

const SECRET_IN_FILE: &str = "Sup3rSecretPw";
const SECRET_IN_ENV: &str = "EnvSecretPw9";

/// A valid config that uses most of the format.
const BASE_CONFIG: &str = r#"# tandem config
[a]
kind = "postgres"
url = "postgres://user:Sup3rSecretPw@127.0.0.1:5432/legacy"
pool_size = 4
schema = "tandem"

[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[sync]
batch_size = 500
poll_interval_ms = 1000
max_attempts = 10
retry_min_ms = 200
retry_max_ms = 60000

[[entities]]
name = "order"
direction = "both"
on_conflict = "newest_wins"
a = { table = "dbo.ORDERS", key = ["ORDER_NO"], peer_id_column = "NEW_ID" }
b = { table = "public.orders", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "CUST_NAME", b = "customer" },
  { a = "STATUS", b = "status", values = { O = "open", C = "closed", X = "cancelled" } },
  { a = "AMOUNT", b = "amount" },
]

[[entities]]
name = "order_item"
direction = "a_to_b"
on_conflict = "a_wins"
a = { table = "dbo.ORDER_ITEMS", key = ["ORDER_NO", "LINE_NO"] }
b = { table = "public.order_items", key = ["id"] }
columns = [
  { a = "ORDER_NO", b = "order_id", ref = "order" },
  { a = "LINE_NO", b = "line_no" },
  { a = "QTY", b = "quantity", values = { 1 = "one", 2 = "two" } },
]
"#;

/// Pieces of TOML and of tandem's vocabulary, valid and not, for mutations.
const SNIPPETS: &[&str] = &[
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\n",
    "{",
    "}",
    ",",
    "#",
    ".",
    "${",
    "${TANDEM_B_URL}",
    "${UNSET_VARIABLE}",
    "${WEIRD}",
    "$",
    "}}",
    "[[entities]]\n",
    "[sync]\n",
    "[a]\n",
    "[b]\n",
    "[c]\n",
    "[entities]\n",
    "name = \"order\"\n",
    "name = \"\"\n",
    "name = 7\n",
    "key = []",
    "key = [\"\"]",
    "key = [1, 2]",
    "key = \"ORDER_NO\"",
    "table = \"\"",
    "table = \"a.b.c\"",
    "table = \".x\"",
    "table = \"x.\"",
    "table = \"\\\"\"",
    "ref = \"order\"",
    "ref = \"nope\"",
    "ref = \"order_item\"",
    "ref = \"\"",
    "values = { O = \"open\", P = \"open\" }",
    "values = {}",
    "values = { O = [1] }",
    "values = { O = \"open\", O = \"x\" }",
    "direction = \"sideways\"",
    "direction = \"b_to_a\"",
    "on_conflict = 1",
    "on_conflict = \"b_wins\"",
    "batch_size = -1",
    "batch_size = 0",
    "batch_size = 99999999999999999999",
    "batch_size = 1.5",
    "poll_interval_ms = 1.5",
    "poll_interval_ms = nan",
    "retry_min_ms = inf",
    "max_attempts = 0",
    "retry_min_ms = 100000",
    "retry_max_ms = 1",
    "pool_size = 0",
    "pool_size = -3",
    "kind = \"oracle\"",
    "kind = \"mssql\"",
    "kind = \"\"",
    "url = \"\"",
    "url = 5",
    "url = \"postgres://u:Sup3rSecretPw@h/db\"",
    "url = \"Server=x;Password=Sup3rSecretPw;\"",
    "peer_id_column = \"\"",
    "peer_id_column = \"NEW_ID\"",
    "columns = []",
    "columns = {}",
    "{ a = \"X\" }",
    "{ b = \"y\" }",
    "{ a = \"CUST_NAME\", b = \"customer\" }",
    "unknown_key = true",
    "a = 1",
    "b = []",
    "entities = []",
    "\u{0}",
    "\u{feff}",
    "é",
    "🦀",
    "\t",
    "\r",
    "\r\n",
    "\\",
    "\\u0000",
    "\\uD800",
    "\\U0010FFFF",
    "1979-05-27T07:32:00Z",
    "true",
    "false",
    "inf",
    "nan",
    "0x10",
    "0o7",
    "0b1",
    "+1",
    "-0",
    "1_000",
    "\"\"\"\nmulti\nline\"\"\"",
    "'''literal'''",
    "a.b.c = 1",
    "\"quoted key\" = 1",
];

#[derive(Debug, Clone)]
enum Mutation {
    Insert(usize, usize),
    InsertText(usize, String),
    Delete(usize, usize),
    ReplaceLine(usize, usize),
    DuplicateLine(usize),
    DeleteLine(usize),
    SwapLines(usize, usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = SNIPPETS.len();
    prop_oneof![
        4 => (any::<usize>(), 0..n).prop_map(|(p, s)| Mutation::Insert(p, s)),
        2 => (any::<usize>(), ".{0,12}").prop_map(|(p, s)| Mutation::InsertText(p, s)),
        3 => (any::<usize>(), 1usize..20).prop_map(|(p, l)| Mutation::Delete(p, l)),
        3 => (any::<usize>(), 0..n).prop_map(|(l, s)| Mutation::ReplaceLine(l, s)),
        1 => any::<usize>().prop_map(Mutation::DuplicateLine),
        2 => any::<usize>().prop_map(Mutation::DeleteLine),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match m {
            Mutation::Insert(p, s) => {
                let i = at(*p, chars.len());
                chars.splice(i..i, SNIPPETS[*s].chars());
            }
            Mutation::InsertText(p, s) => {
                let i = at(*p, chars.len());
                chars.splice(i..i, s.chars());
            }
            Mutation::Delete(p, l) => {
                let i = at(*p, chars.len());
                let j = (i + l).min(chars.len());
                chars.drain(i..j);
            }
            Mutation::Truncate(p) => {
                let i = at(*p, chars.len());
                chars.truncate(i);
            }
            Mutation::ReplaceLine(..)
            | Mutation::DuplicateLine(_)
            | Mutation::DeleteLine(_)
            | Mutation::SwapLines(..) => {
                let text: String = chars.iter().collect();
                let mut lines: Vec<String> = text.split('\n').map(str::to_string).collect();
                let n = lines.len();
                match m {
                    Mutation::ReplaceLine(l, s) => lines[l % n] = SNIPPETS[*s].to_string(),
                    Mutation::DuplicateLine(l) => {
                        let line = lines[l % n].clone();
                        lines.insert(l % n, line);
                    }
                    Mutation::DeleteLine(l) => {
                        lines.remove(l % n);
                    }
                    Mutation::SwapLines(a, b) => lines.swap(a % n, b % n),
                    _ => unreachable!(),
                }
                chars = lines.join("\n").chars().collect();
            }
        }
    }
    chars.into_iter().collect()
}

fn fuzz_env(name: &str) -> Option<String> {
    match name {
        "TANDEM_A_URL" => Some(format!("postgres://tandem:{SECRET_IN_ENV}@10.0.0.1:5432/a")),
        "TANDEM_B_URL" => Some(format!("postgres://tandem:{SECRET_IN_ENV}@10.0.0.2:5432/b")),
        "WEIRD" => Some("\"quote\nnew line ${TANDEM_B_URL} \u{0} ]] [[".to_string()),
        _ => None,
    }
}

/// The loader's contract on any input: no panic; a rejection lists problems, each located
/// inside the file (line and column within the text) or, if not located, clearly worded;
/// the rendering names the file; no password shows.
fn check_config(text: &str) -> Result<(), TestCaseError> {
    let path = Path::new("fuzzed/tandem.toml");
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        tandem::config::parse(text, path, &fuzz_env)
    }));
    let result = match parsed {
        Ok(r) => r,
        Err(_) => return Err(TestCaseError::fail("the config loader panicked")),
    };
    let err = match result {
        Ok(config) => {
            // Accepted: then it must be usable, and its URLs print without passwords — those
            // the driver would connect with. (The loader accepts any text as `url` and leaves
            // its syntax to the driver, reported with issue 8; a mangled one such as
            // "postgres://u:pw127.0.0.1" has no password to recognise. Also reported: the
            // driver accepts whitespace inside the user part, where redaction stops looking.)
            for url in [&config.a.url, &config.b.url].into_iter().filter(|u| {
                (u.expose().starts_with("postgres://user:")
                    || u.expose().starts_with("postgres://tandem:"))
                    && !u.expose().contains(char::is_whitespace)
                    && u.expose().parse::<tokio_postgres::Config>().is_ok()
            }) {
                let shown = format!("{url:?} {url}");
                prop_assert!(
                    !shown.contains(SECRET_IN_ENV) && !shown.contains(SECRET_IN_FILE),
                    "password in a printed URL: {shown}"
                );
            }
            prop_assert!(!config.entities.is_empty(), "accepted without entities");
            return Ok(());
        }
        Err(e) => e,
    };
    prop_assert!(!err.problems.is_empty(), "a rejection without problems");
    let lines: Vec<&str> = text.split('\n').collect();
    for p in &err.problems {
        prop_assert!(!p.message.trim().is_empty(), "empty message: {p:?}");
        if p.line == 0 {
            prop_assert!(
                p.message.len() >= 20,
                "a problem with neither a location nor a clear message: {p:?}"
            );
        } else {
            prop_assert!(
                p.line <= lines.len(),
                "line {} is past the end ({} lines): {p:?}",
                p.line,
                lines.len()
            );
            let width = lines[p.line - 1].chars().count();
            prop_assert!(
                p.column >= 1 && p.column <= width + 1,
                "column {} outside line {} ({width} chars): {p:?}",
                p.column,
                p.line
            );
        }
        prop_assert!(
            !p.message.contains(SECRET_IN_ENV),
            "an environment password in a message: {p:?}"
        );
    }
    let shown = err.to_string();
    prop_assert!(shown.contains("fuzzed/tandem.toml"), "{shown}");
    prop_assert!(!shown.contains(SECRET_IN_ENV), "{shown}");
    // The file's own password: every occurrence of it is inside an intact URL or ADO.NET
    // pair, which is exactly what the loader promises to redact.
    let intact = text
        .matches(&format!("postgres://user:{SECRET_IN_FILE}@"))
        .count()
        + text.matches(&format!("Password={SECRET_IN_FILE};")).count();
    if intact == text.matches(SECRET_IN_FILE).count() {
        prop_assert!(
            !shown.contains(SECRET_IN_FILE),
            "the file's password in a message: {shown}"
        );
    }
    Ok(())
}

#[test]
fn the_base_config_is_valid() {
    let c = tandem::config::parse(BASE_CONFIG, Path::new("base.toml"), &fuzz_env)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.entities.len(), 2);
    // A rejection with located, worded problems satisfies the checker.
    assert!(check_config("[a]\nkind = 5\n").is_ok());
}

/// Regression (found by the fuzzing below): the TOML parser reports some syntax errors with an
/// empty message, and the loader printed `file:1:1: ` and nothing else.
#[test]
fn a_toml_error_without_words_still_says_what_is_wrong() {
    for (text, want) in [("\r£", "'\\r'"), ("\r", "'\\r'")] {
        let err = tandem::config::parse(text, Path::new("t.toml"), &fuzz_env).unwrap_err();
        let p = &err.problems[0];
        assert!(p.line > 0, "{p:?}");
        assert!(
            p.message.contains("unexpected character") && p.message.contains(want),
            "{text:?}: {p:?}"
        );
        assert!(
            err.to_string().starts_with(&format!("t.toml:{}:", p.line)),
            "{err}"
        );
    }
}

/// Regression (found by the fuzzing below with more cases): a URL that lost its scheme was
/// accepted and printed with its password.
#[test]
fn a_url_prints_without_its_password_whatever_the_password_holds() {
    let text = BASE_CONFIG.replace("postgres://user:Sup3rSecretPw@", "//user:Sup3rSecretPw@");
    assert!(text.contains("\"//user:Sup3rSecretPw@"));
    check_config(&text).unwrap_or_else(|e| panic!("{e}"));
    let shown = tandem::config::redact("see //user:Sup3rSecretPw@h/db and postgres://u:pw@h/x");
    assert_eq!(shown, "see //user:***@h/db and postgres://u:***@h/x");
    // Found the same way: a password with a quote or a space printed in clear.
    for pw in ["it's", "a b", "q\"uote", "x'''y", "p@ss/w#rd"] {
        let url = tandem::config::Secret::new(format!("postgres://user:{pw}@h:5432/db"));
        for shown in [url.to_string(), format!("{url:?}")] {
            assert!(
                !shown.contains(pw) && shown.contains("user:***@h:5432/db"),
                "{shown}"
            );
        }
    }
}

#[test]
fn mutated_configs_never_panic_and_every_rejection_is_located() {
    let strategy = prop::collection::vec(mutation(), 1..6);
    runner(1500)
        .run(&strategy, |ms| check_config(&apply(BASE_CONFIG, &ms)))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn random_text_never_panics_the_config_loader() {
    // Any characters at all, and text built from TOML's and tandem's own vocabulary.
    let anything =
        prop::collection::vec(any::<char>(), 0..200).prop_map(|c| c.into_iter().collect());
    let words = prop::collection::vec(0..SNIPPETS.len(), 0..60).prop_map(|ix| {
        ix.into_iter()
            .map(|i| SNIPPETS[i])
            .collect::<Vec<_>>()
            .join(" ")
    });
    let strategy = prop_oneof![anything, words];
    runner(1500)
        .run(&strategy, |text: String| check_config(&text))
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_value_of_every_setting_is_accepted_or_located() {
    // One setting at a time gets a random TOML value: a string (possibly empty, unicode,
    // with ${...}), an integer at the edges, a float, a bool, an array, a table.
    let settings = [
        "kind",
        "url",
        "pool_size",
        "schema",
        "batch_size",
        "poll_interval_ms",
        "max_attempts",
        "retry_min_ms",
        "retry_max_ms",
        "name",
        "direction",
        "on_conflict",
        "table",
        "key",
        "peer_id_column",
        "ref",
        "values",
        "columns",
    ];
    let value = prop_oneof![
        ".{0,20}".prop_map(|s| toml_string(&s)),
        prop::sample::select(vec![
            "\"${WEIRD}\"",
            "\"${UNSET}\"",
            "\"${\"",
            "\"$${TANDEM_B_URL}\"",
            "\"\"",
            "\" \"",
            "\"a.b\"",
            "\"a..b\"",
            "\"\\u0000\"",
            "\"\\t\"",
        ])
        .prop_map(str::to_string),
        prop::sample::select(vec![
            i64::MIN,
            -1,
            0,
            1,
            2,
            255,
            65_535,
            2_147_483_647,
            4_294_967_296,
            i64::MAX,
        ])
        .prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| if f.is_finite() {
            format!("{f:e}")
        } else {
            "nan".into()
        }),
        any::<bool>().prop_map(|b| b.to_string()),
        Just("[]".to_string()),
        Just("[\"x\", 1]".to_string()),
        Just("{}".to_string()),
        Just("{ x = 1 }".to_string()),
    ];
    let strategy = (0..settings.len(), value, any::<bool>());
    runner(1500)
        .run(&strategy, |(i, v, all)| {
            let key = settings[i];
            let pat = format!("{key} = ");
            let mut out = String::new();
            let mut done = false;
            for line in BASE_CONFIG.split('\n') {
                match replace_member(line, &pat, &v).filter(|_| all || !done) {
                    Some(l) => {
                        out.push_str(&l);
                        done = true;
                    }
                    None => out.push_str(line),
                }
                out.push('\n');
            }
            prop_assert!(done, "{key} is not in the base config");
            check_config(&out)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

/// `line` with the value of setting `pat` (`"name = "`, at the start of the line or as a member
/// of an inline table) replaced by `v`.
fn replace_member(line: &str, pat: &str, v: &str) -> Option<String> {
    let pos = line.find(pat)?;
    let before = &line[..pos];
    if !(before.trim().is_empty() || before.ends_with("{ ") || before.ends_with(", ")) {
        return None;
    }
    let rest = &line[pos + pat.len()..];
    let end = match rest.chars().next() {
        Some('[') => rest.find(']').map_or(rest.len(), |i| i + 1),
        Some('{') => rest.find('}').map_or(rest.len(), |i| i + 1),
        Some('"') => rest[1..].find('"').map_or(rest.len(), |i| i + 2),
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(format!("{before}{pat}{v}{}", &rest[end..]))
}

fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

// =============================================================================================
// Row images
// =============================================================================================

/// One synchronised column: names and types at A and B, and how to generate its values (as
/// PostgreSQL input text; None is NULL).
struct Col {
    a: &'static str,
    b: &'static str,
    ty: &'static str,
    /// B's type when it differs (narrower: values that do not fit must be suspended).
    ty_b: Option<&'static str>,
}

const COLS: &[Col] = &[
    Col {
        a: "Txt",
        b: "txt",
        ty: "text",
        ty_b: None,
    },
    Col {
        a: "Vc",
        b: "vc",
        ty: "varchar(40)",
        ty_b: None,
    },
    Col {
        a: "Short",
        b: "short",
        ty: "text",
        ty_b: Some("varchar(8)"),
    },
    Col {
        a: "Ch",
        b: "ch",
        ty: "char(3)",
        ty_b: None,
    },
    Col {
        a: "I2",
        b: "i2",
        ty: "smallint",
        ty_b: None,
    },
    Col {
        a: "I4",
        b: "i4",
        ty: "integer",
        ty_b: None,
    },
    Col {
        a: "I8",
        b: "i8",
        ty: "bigint",
        ty_b: None,
    },
    Col {
        a: "Num",
        b: "num",
        ty: "numeric",
        ty_b: None,
    },
    Col {
        a: "NumS",
        b: "nums",
        ty: "numeric(38,10)",
        ty_b: None,
    },
    Col {
        a: "F8",
        b: "f8",
        ty: "double precision",
        ty_b: None,
    },
    Col {
        a: "F4",
        b: "f4",
        ty: "real",
        ty_b: None,
    },
    Col {
        a: "Flag",
        b: "flag",
        ty: "boolean",
        ty_b: None,
    },
    Col {
        a: "Day",
        b: "day",
        ty: "date",
        ty_b: None,
    },
    Col {
        a: "Ts",
        b: "ts",
        ty: "timestamp",
        ty_b: None,
    },
    Col {
        a: "Tstz",
        b: "tstz",
        ty: "timestamptz",
        ty_b: None,
    },
    Col {
        a: "Tm",
        b: "tm",
        ty: "time",
        ty_b: None,
    },
    Col {
        a: "Iv",
        b: "iv",
        ty: "interval",
        ty_b: None,
    },
    Col {
        a: "Bin",
        b: "bin",
        ty: "bytea",
        ty_b: None,
    },
    Col {
        a: "Doc",
        b: "doc",
        ty: "jsonb",
        ty_b: None,
    },
    Col {
        a: "Uid",
        b: "uid",
        ty: "uuid",
        ty_b: None,
    },
    Col {
        a: "IArr",
        b: "iarr",
        ty: "integer[]",
        ty_b: None,
    },
    Col {
        a: "TArr",
        b: "tarr",
        ty: "text[]",
        ty_b: None,
    },
];

/// Where the short column sits in COLS, and B's width for it.
const SHORT: usize = 2;
const SHORT_WIDTH: usize = 8;

fn schema(side_b: bool) -> String {
    let mut cols = Vec::new();
    if side_b {
        cols.push("id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY".to_string());
        cols.push("a_id integer".to_string());
    } else {
        cols.push("\"Id\" integer GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY".to_string());
        cols.push("\"B_ID\" bigint".to_string());
    }
    for c in COLS {
        if side_b {
            cols.push(format!("{} {}", c.b, c.ty_b.unwrap_or(c.ty)));
        } else {
            cols.push(format!("\"{}\" {}", c.a, c.ty));
        }
    }
    if side_b {
        cols.push("only_b text DEFAULT 'b-default'".to_string());
        format!("CREATE TABLE hostile_b (\n  {}\n);", cols.join(",\n  "))
    } else {
        cols.push("\"OnlyA\" text DEFAULT 'a-default'".to_string());
        format!("CREATE TABLE \"Hostile A\" (\n  {}\n);", cols.join(",\n  "))
    }
}

fn config() -> String {
    let columns: Vec<String> = COLS
        .iter()
        .map(|c| format!("  {{ a = \"{}\", b = \"{}\" }},", c.a, c.b))
        .collect();
    format!(
        r#"[a]
kind = "postgres"
url = "${{TANDEM_A_URL}}"
[b]
kind = "postgres"
url = "${{TANDEM_B_URL}}"
[sync]
max_attempts = 1
retry_min_ms = 10
retry_max_ms = 20

[[entities]]
name = "hostile"
a = {{ table = "Hostile A", key = ["Id"], peer_id_column = "B_ID" }}
b = {{ table = "hostile_b", key = ["id"], peer_id_column = "a_id" }}
columns = [
{}
]
"#,
        columns.join("\n")
    )
}

const A_TABLE: &str = "\"Hostile A\"";

fn a_cols() -> String {
    COLS.iter()
        .map(|c| format!("\"{}\"::text", c.a))
        .collect::<Vec<_>>()
        .join(", ")
}

fn b_cols() -> String {
    COLS.iter()
        .map(|c| format!("{}::text", c.b))
        .collect::<Vec<_>>()
        .join(", ")
}

// --- generators ------------------------------------------------------------------------------

/// Text PostgreSQL can store: anything but NUL.
fn no_nul(s: String) -> String {
    s.replace('\0', "\u{1}")
}

fn text_value(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        3 => prop::collection::vec(any::<char>(), 0..max.min(64)).prop_map(|c| no_nul(c.into_iter().collect())),
        2 => prop::collection::vec(prop::char::range('\u{1}', '\u{a0}'), 0..max.min(24)).prop_map(|c| c.into_iter().collect()),
        2 => prop::sample::select(vec![
            "", " ", "NULL", "null", "\\N", "''", "\"", "\\", "\\x00", "{}", "[]", "\u{feff}", "e\u{301}",
            "🦀", "日本", "\r\n", "\t", "\u{7f}", "\u{85}", "\u{2028}", "\u{fffd}", "\u{10ffff}",
        ])
        .prop_map(str::to_string),
        1 => (prop::sample::select(vec!["ab", "é", "🦀", "\u{1}"]), 1usize..3000)
            .prop_map(|(s, n)| s.repeat(n)),
    ]
    .prop_map(move |s: String| s.chars().take(max).collect())
    .boxed()
}

fn digits(n: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(0u8..10, n)
        .prop_map(|d| d.into_iter().map(|x| (b'0' + x) as char).collect())
}

fn numeric(max_int: usize, max_frac: usize) -> BoxedStrategy<String> {
    let plain = (
        any::<bool>(),
        digits(1..max_int + 1),
        digits(0..max_frac + 1),
    )
        .prop_map(|(neg, i, f)| {
            let sign = if neg { "-" } else { "" };
            if f.is_empty() {
                format!("{sign}{i}")
            } else {
                format!("{sign}{i}.{f}")
            }
        });
    if max_int >= 60 {
        prop_oneof![
            6 => plain,
            1 => prop::sample::select(vec![
                "NaN", "Infinity", "-Infinity", "0", "-0", "0.0000000000000000000000000000001",
                "1e-40", "9.99e100", "1.000", "-0.000",
            ])
            .prop_map(str::to_string),
        ]
        .boxed()
    } else {
        prop_oneof![
            6 => plain,
            1 => Just("NaN".to_string()),
            1 => Just(format!("{}.{}", "9".repeat(max_int), "9".repeat(max_frac))),
        ]
        .boxed()
    }
}

fn date_text() -> impl Strategy<Value = String> {
    (1i32..=9999, 1u32..=12, 1u32..=28, prop::bool::weighted(0.1)).prop_map(|(y, m, d, bc)| {
        if bc {
            // PostgreSQL's dates begin in 4713 BC.
            format!("{:04}-{m:02}-{d:02} BC", (y - 1) % 4712 + 1)
        } else {
            format!("{y:04}-{m:02}-{d:02}")
        }
    })
}

fn time_text() -> impl Strategy<Value = String> {
    (0u32..24, 0u32..60, 0u32..60, 0u32..1_000_000)
        .prop_map(|(h, m, s, us)| format!("{h:02}:{m:02}:{s:02}.{us:06}"))
}

fn json_text() -> BoxedStrategy<String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        (digits(1..40), digits(0..30)).prop_map(|(i, f)| {
            let i = i.trim_start_matches('0');
            let i = if i.is_empty() { "0" } else { i };
            if f.is_empty() {
                i.to_string()
            } else {
                format!("{i}.{f}")
            }
        }),
        prop::sample::select(vec!["1e400", "-1E-400", "0.10", "1.0e2", "-0"])
            .prop_map(str::to_string),
        text_value(40).prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((text_value(12), inner), 0..5).prop_map(|kv| {
                let members: Vec<String> = kv
                    .into_iter()
                    .map(|(k, v)| format!("{}: {v}", serde_json::to_string(&k).unwrap()))
                    .collect();
                format!("{{{}}}", members.join(", "))
            }),
        ]
    })
    // Known limit (README): a document that is the JSON literal null arrives as SQL NULL.
    .prop_filter("top-level JSON null is a documented limit", |s| s != "null")
    .boxed()
}

fn array_literal(items: Vec<Option<String>>) -> String {
    let parts: Vec<String> = items
        .into_iter()
        .map(|i| match i {
            None => "NULL".to_string(),
            Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
        })
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn value_of(ty: &str) -> BoxedStrategy<String> {
    match ty {
        "text" => text_value(usize::MAX),
        "varchar(40)" => text_value(40),
        "char(3)" => text_value(3),
        "smallint" => any::<i16>().prop_map(|n| n.to_string()).boxed(),
        "integer" => any::<i32>().prop_map(|n| n.to_string()).boxed(),
        "bigint" => any::<i64>().prop_map(|n| n.to_string()).boxed(),
        "numeric" => numeric(120, 60),
        "numeric(38,10)" => numeric(28, 10),
        "double precision" => any::<f64>().prop_map(|f| float_text(f, f.is_nan(), f.is_infinite())).boxed(),
        "real" => any::<f32>()
            .prop_map(|f| float_text(f, f.is_nan(), f.is_infinite()))
            .boxed(),
        "boolean" => any::<bool>().prop_map(|b| b.to_string()).boxed(),
        "date" => prop_oneof![
            8 => date_text(),
            1 => prop::sample::select(vec!["infinity", "-infinity", "5874897-12-31", "4713-01-01 BC"]).prop_map(str::to_string),
        ]
        .boxed(),
        "timestamp" => prop_oneof![
            8 => (date_text(), time_text()).prop_map(|(d, t)| match d.strip_suffix(" BC") {
                Some(d) => format!("{d} {t} BC"),
                None => format!("{d} {t}"),
            }),
            1 => prop::sample::select(vec!["infinity", "-infinity", "294276-12-31 23:59:59.999999", "4713-01-01 00:00:00 BC"]).prop_map(str::to_string),
        ]
        .boxed(),
        "timestamptz" => (
            date_text(),
            time_text(),
            prop::sample::select(vec!["+00", "Z", "+05:30", "-12:00", "+14:00", "+05:45", "-03:30"]),
        )
            .prop_map(|(d, t, z)| match d.strip_suffix(" BC") {
                Some(d) => format!("{d} {t}{z} BC"),
                None => format!("{d} {t}{z}"),
            })
            .boxed(),
        "time" => prop_oneof![8 => time_text(), 1 => Just("24:00:00".to_string())].boxed(),
        "interval" => (-1000i32..1000, -11i32..12, -400i32..400, -100i64..100, 0u32..60, 0u32..1_000_000)
            .prop_map(|(y, m, d, h, mi, us)| format!("{y} years {m} mons {d} days {h}:{mi:02}:00.{us:06}"))
            .boxed(),
        "bytea" => prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..200),
            1 => Just(vec![0xff, 0xfe, 0xc3, 0x28, 0x00, 0xa0, 0xa1, 0xed, 0xa0, 0x80, 0xf4, 0x90]),
        ]
        .prop_map(|b| format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()))
        .boxed(),
        "jsonb" => json_text(),
        "uuid" => any::<u128>()
            .prop_map(|u| {
                let h = format!("{u:032x}");
                format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
            })
            .boxed(),
        "integer[]" => prop_oneof![
            4 => prop::collection::vec(prop::option::weighted(0.8, any::<i32>()), 0..6).prop_map(|v| {
                format!("{{{}}}", v.iter().map(|x| x.map_or("NULL".to_string(), |n| n.to_string())).collect::<Vec<_>>().join(","))
            }),
            1 => (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>()).prop_map(|(a, b, c, d)| format!("{{{{{a},{b}}},{{{c},{d}}}}}")),
        ]
        .boxed(),
        "text[]" => prop::collection::vec(prop::option::weighted(0.8, text_value(16)), 0..5)
            .prop_map(array_literal)
            .boxed(),
        other => panic!("no generator for {other}"),
    }
}

fn float_text<F: std::fmt::LowerExp>(f: F, nan: bool, inf_sign: bool) -> String {
    let s = format!("{f:e}");
    if s == "-0e0" {
        // Known limit, found by this test: a float -0 arrives as 0. Images are jsonb, whose
        // numbers are `numeric`, which has no negative zero. (Reported; not fixed here.)
        "0".into()
    } else if nan {
        "NaN".into()
    } else if inf_sign {
        if s.starts_with('-') {
            "-Infinity".into()
        } else {
            "Infinity".into()
        }
    } else {
        s
    }
}

/// A row: per column, NULL (None) or a value; text columns often `''`.
fn row() -> impl Strategy<Value = Vec<Option<String>>> {
    COLS.iter()
        .map(|c| {
            let v = value_of(c.ty);
            prop_oneof![1 => Just(None), 5 => v.prop_map(Some)].boxed()
        })
        .collect::<Vec<_>>()
}

// --- the round trip --------------------------------------------------------------------------

struct Rig {
    rt: tokio::runtime::Runtime,
    env: Env,
}

impl Rig {
    fn new(name: &str) -> Rig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let env = rt.block_on(async {
            let (a, b) = common::fresh_dbs(name);
            let env = Env::on(a, b, &config(), &schema(false), &schema(true), true).await;
            // Sessions in a zone other than UTC: instants must not shift.
            for c in [&env.a, &env.b] {
                c.batch_execute("SET TimeZone = 'America/St_Johns'")
                    .await
                    .unwrap();
            }
            env
        });
        Rig { rt, env }
    }
}

fn params(values: &[Option<String>]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

fn placeholders(from: usize) -> String {
    COLS.iter()
        .enumerate()
        .map(|(i, c)| format!("${}::text::{}", i + from, c.ty))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A's stored row (mapped columns as text) and its extras.
async fn a_row(env: &Env, id: i32) -> Vec<String> {
    rows(
        &env.a,
        &format!(r#"SELECT {}, "OnlyA", coalesce("B_ID"::text, 'NULL') FROM {A_TABLE} WHERE "Id" = {id}"#, a_cols()),
    )
    .await
    .pop()
    .unwrap_or_default()
}

async fn b_row_by(env: &Env, cond: &str) -> Option<Vec<String>> {
    rows(
        &env.b,
        &format!(
            "SELECT {}, only_b, id::text FROM hostile_b WHERE {cond}",
            b_cols()
        ),
    )
    .await
    .pop()
}

fn fits(values: &[Option<String>]) -> bool {
    values[SHORT]
        .as_ref()
        .is_none_or(|s| s.chars().count() <= SHORT_WIDTH)
}

/// The change of A record `id` must be suspended at A, with an error naming the column.
async fn expect_suspended(env: &Env, id: i32) -> Result<(), String> {
    let key = format!("[{id}]");
    let left = rows(
        &env.a,
        &format!("SELECT suspended::text, coalesce(last_error, '') FROM tandem.outbox WHERE key = '{key}'::jsonb"),
    )
    .await;
    let ok = left.len() == 1
        && left[0][0] == "true"
        && left[0][1].contains("short")
        && left[0][1].contains("too long")
        && left[0][1].contains("hostile");
    // Tidy up for the next case: the operator's discard.
    env.a
        .execute(
            "DELETE FROM tandem.outbox WHERE key = $1::text::jsonb",
            &[&key],
        )
        .await
        .map_err(|e| e.to_string())?;
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a value too long for B's column must be suspended at A with an error naming it; outbox for {key}: {left:?}"
        ))
    }
}

async fn no_pending(env: &Env) -> Result<(), String> {
    for (side, c) in [("A", &env.a), ("B", &env.b)] {
        let left = rows(
            c,
            "SELECT seq, op::text, key::text, coalesce(last_error, '') FROM tandem.outbox",
        )
        .await;
        if !left.is_empty() {
            return Err(format!("side {side}: outbox not empty: {left:?}"));
        }
    }
    Ok(())
}

fn same(what: &str, want: &[String], got: &[String]) -> Result<(), String> {
    for (i, c) in COLS.iter().enumerate() {
        if want.get(i) != got.get(i) {
            return Err(format!(
                "{what}: column {}/{} ({}) was {:?}, arrived as {:?}",
                c.a,
                c.b,
                c.ty,
                want.get(i).map(|s| s.chars().take(200).collect::<String>()),
                got.get(i).map(|s| s.chars().take(200).collect::<String>())
            ));
        }
    }
    Ok(())
}

/// Inserted at A → arrives at B exactly (or is suspended); copied at B → arrives at A as a new
/// record equal to the original. Unmapped columns take their defaults; nothing echoes.
async fn insert_round_trip(env: &Env, values: &[Option<String>]) -> Result<(), String> {
    let id: i32 = env
        .a
        .query_one(
            &format!(
                r#"INSERT INTO {A_TABLE} ({}) VALUES ({}) RETURNING "Id""#,
                COLS.iter()
                    .map(|c| format!("\"{}\"", c.a))
                    .collect::<Vec<_>>()
                    .join(", "),
                placeholders(1)
            ),
            &params(values),
        )
        .await
        .map_err(|e| format!("the generator made a row A refuses: {e:?}"))?
        .get(0);
    let original = a_row(env, id).await;
    let r = env.drain().await;
    if !fits(values) {
        if b_row_by(env, &format!("a_id = {id}")).await.is_some() {
            return Err("a value too long for B arrived anyway (altered?)".into());
        }
        return expect_suspended(env, id).await;
    }
    no_pending(env).await?;
    let b = b_row_by(env, &format!("a_id = {id}"))
        .await
        .ok_or_else(|| format!("not at B after a drain ({r:?}): lost"))?;
    same("A→B", &original, &b)?;
    if b[COLS.len()] != "b-default" {
        return Err(format!(
            "B's unmapped column is {:?}, not its default",
            b[COLS.len()]
        ));
    }
    let b_id = b[COLS.len() + 1].clone();
    if a_row(env, id).await[COLS.len() + 1] != b_id {
        return Err("A's peer id column does not show B's id".into());
    }

    // Back: a copy made at B travels to A as a new record.
    let list = COLS.iter().map(|c| c.b).collect::<Vec<_>>().join(", ");
    let copy: i64 = env
        .b
        .query_one(
            &format!("INSERT INTO hostile_b ({list}) SELECT {list} FROM hostile_b WHERE id = {b_id} RETURNING id"),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    env.drain().await;
    no_pending(env).await?;
    let back: i32 = env
        .a
        .query_opt(
            &format!(r#"SELECT "Id" FROM {A_TABLE} WHERE "B_ID" = {copy}"#),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .ok_or("B's copy did not arrive at A: lost")?
        .get(0);
    let back_row = a_row(env, back).await;
    same("A→B→A", &original, &back_row)?;
    if back_row[COLS.len()] != "a-default" {
        return Err(format!(
            "A's unmapped column is {:?}, not its default",
            back_row[COLS.len()]
        ));
    }
    let echoes = rows(
        &env.b,
        &format!("SELECT count(*) FROM hostile_b WHERE a_id IN ({id}, {back})"),
    )
    .await;
    if echoes[0][0] != "2" {
        return Err(format!("echo: {} B rows for 2 A records", echoes[0][0]));
    }
    Ok(())
}

/// A linked record updated at A with `first` → B equal; then updated at B with `second` →
/// A equal. Unmapped columns on both sides are left as they were.
async fn update_round_trip(
    env: &Env,
    first: &[Option<String>],
    second: &[Option<String>],
) -> Result<(), String> {
    let id: i32 = env
        .a
        .query_one(
            &format!(r#"INSERT INTO {A_TABLE} ("OnlyA") VALUES ('kept at A') RETURNING "Id""#),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?
        .get(0);
    env.drain().await;
    no_pending(env).await?;
    env.b
        .execute(
            &format!("UPDATE hostile_b SET only_b = 'kept at B' WHERE a_id = {id}"),
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    env.drain().await;
    let baseline = b_row_by(env, &format!("a_id = {id}"))
        .await
        .ok_or("baseline lost")?;

    // A → B.
    let sets = |from: usize, quote: bool| {
        COLS.iter()
            .enumerate()
            .map(|(i, c)| {
                let name = if quote {
                    format!("\"{}\"", c.a)
                } else {
                    c.b.to_string()
                };
                format!("{name} = ${}::text::{}", i + from, c.ty)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    env.a
        .execute(
            &format!(
                r#"UPDATE {A_TABLE} SET {} WHERE "Id" = {id}"#,
                sets(1, true)
            ),
            &params(first),
        )
        .await
        .map_err(|e| format!("the generator made values A refuses: {e:?}"))?;
    let at_a = a_row(env, id).await;
    env.drain().await;
    let b = b_row_by(env, &format!("a_id = {id}"))
        .await
        .ok_or("B's record vanished")?;
    if !fits(first) {
        same("B unchanged while A's change is suspended", &baseline, &b)?;
        return expect_suspended(env, id).await;
    }
    no_pending(env).await?;
    same("A→B update", &at_a, &b)?;
    if b[COLS.len()] != "kept at B" {
        return Err(format!(
            "B's unmapped column was overwritten: {:?}",
            b[COLS.len()]
        ));
    }

    // B → A. B's types are not all A's, so the values are typed with B's (a value too long for
    // B's short column is shortened by the generator's caller instead).
    let b_id = b[COLS.len() + 1].clone();
    let b_sets = COLS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} = ${}::text::{}", c.b, i + 1, c.ty_b.unwrap_or(c.ty)))
        .collect::<Vec<_>>()
        .join(", ");
    env.b
        .execute(
            &format!("UPDATE hostile_b SET {b_sets} WHERE id = {b_id}"),
            &params(second),
        )
        .await
        .map_err(|e| format!("the generator made values B refuses: {e:?}"))?;
    let at_b = b_row_by(env, &format!("id = {b_id}"))
        .await
        .ok_or("B row gone")?;
    env.drain().await;
    no_pending(env).await?;
    let a = a_row(env, id).await;
    same("B→A update", &at_b, &a)?;
    if a[COLS.len()] != "kept at A" {
        return Err(format!(
            "A's unmapped column was overwritten: {:?}",
            a[COLS.len()]
        ));
    }
    Ok(())
}

#[test]
fn generated_rows_round_trip_a_to_b_to_a_unchanged_or_are_suspended() {
    let rig = Rig::new("hostile_insert");
    runner(24)
        .run(&row(), |values| {
            rig.rt
                .block_on(insert_round_trip(&rig.env, &values))
                .map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn generated_updates_travel_both_ways_unchanged_and_leave_unmapped_columns_alone() {
    let rig = Rig::new("hostile_update");
    let second = row().prop_map(|mut v| {
        // Typed at B: keep the short column within B's width.
        if let Some(s) = &mut v[SHORT] {
            *s = s.chars().take(SHORT_WIDTH).collect();
        }
        v
    });
    runner(16)
        .run(&(row(), second), |(first, second)| {
            rig.rt
                .block_on(update_round_trip(&rig.env, &first, &second))
                .map_err(TestCaseError::fail)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn one_megabyte_of_text_and_invalid_utf8_bytes_round_trip() {
    let rig = Rig::new("hostile_big");
    // 1 MiB of text cycling through control characters, quotes, backslashes and 1–4 byte
    // UTF-8; every byte value in bytea, plus sequences that are not UTF-8.
    let pattern: String = (1u32..0x300)
        .filter_map(char::from_u32)
        .chain("\"'\\\n\r\t🦀𝄞\u{feff}\u{10ffff}".chars())
        .collect();
    let big: String = pattern.chars().cycle().take(1 << 20).collect();
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend([
        0xc3, 0x28, 0xe2, 0x28, 0xa1, 0xf0, 0x28, 0x8c, 0xbc, 0xed, 0xa0, 0x80,
    ]);
    let mut values: Vec<Option<String>> = vec![None; COLS.len()];
    values[0] = Some(big);
    values[1] = Some(String::new());
    values[SHORT] = Some(String::new());
    values[17] = Some(format!(
        "\\x{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ));
    assert_eq!(COLS[17].ty, "bytea");
    rig.rt
        .block_on(insert_round_trip(&rig.env, &values))
        .unwrap_or_else(|e| panic!("{e}"));
    // All NULL, and every text column empty: NULL and '' stay apart both ways.
    let nulls: Vec<Option<String>> = vec![None; COLS.len()];
    let mut empties = nulls.clone();
    for i in [0, 1, SHORT] {
        empties[i] = Some(String::new());
    }
    for v in [&nulls, &empties] {
        rig.rt
            .block_on(insert_round_trip(&rig.env, v))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    rig.rt
        .block_on(update_round_trip(&rig.env, &empties, &nulls))
        .unwrap_or_else(|e| panic!("{e}"));
}
