//! Production security with SQL Server as side A (issue 17), against a real T-SQL engine
//! (SQL Server, or Babelfish in CI) and a real PostgreSQL: `install` as the database's owner
//! (the DBA), every other command as a login holding exactly README's grants and reading its
//! password from `password_file`, an application login that cannot read the outbox's row
//! images nor change the id map, and no SQL Server password in anything tandem prints.
//!
//! Needs TANDEM_TEST_MSSQL_URL at build time (see build.rs); without it every test here is
//! reported as ignored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::mssql::{is_babelfish, ms_connect, ms_count, ms_exec, Ms};
use common::side::{Env, Pairing};
use tandem::endpoint::mssql::ado;

/// README's grants for tandem's run login on SQL Server (`{run}` a database user).
const README_GRANTS: &str = "
GRANT SELECT, INSERT, UPDATE, DELETE ON SCHEMA::tandem TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.ORDERS TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.ORDER_ITEMS TO {run};
";

/// A login and its database user, unique to this process; returns the login name.
async fn login(admin: &mut Ms, db_admin: &mut Ms, role: &str, password: &str) -> String {
    let name = format!("tandem_{role}_{}", std::process::id());
    ms_exec(
        admin,
        &format!(
            "IF SUSER_ID(N'{name}') IS NOT NULL DROP LOGIN [{name}];\nGO\n\
             CREATE LOGIN [{name}] WITH PASSWORD = '{password}';"
        ),
    )
    .await;
    ms_exec(
        db_admin,
        &format!("CREATE USER [{name}] FOR LOGIN [{name}];"),
    )
    .await;
    name
}

/// `url` (an ADO.NET string) as `user`, without a password in it.
fn as_user(url: &str, user: &str) -> String {
    ado::pairs(url)
        .expect("connection string")
        .into_iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "user" | "user id" | "uid" | "username" | "password" | "pwd"
            )
        })
        .map(|(k, v)| format!("{k}={v}"))
        .chain([format!("user={user}")])
        .collect::<Vec<_>>()
        .join(";")
}

/// A config for `env`'s pairing with side A's url `a_url` (through `$TANDEM_A_URL`) and
/// `a_extra` lines under `[a]`.
fn config(dir: &Path, name: &str, a_extra: &str) -> PathBuf {
    let text = common::side::DEMO_CONFIG
        .replacen("kind = \"postgres\"", "kind = \"mssql\"", 1)
        .replacen(
            "url = \"${TANDEM_A_URL}\"",
            &format!("url = \"${{TANDEM_A_URL}}\"\n{a_extra}"),
            1,
        );
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

fn tandem(config: &Path, a_url: &str, b_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tandem"));
    c.arg("--config")
        .arg(config)
        .env("TANDEM_A_URL", a_url)
        .env("TANDEM_B_URL", b_url)
        .env("RUST_LOG", "debug");
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The message of a statement that must be refused.
async fn refused(c: &mut Ms, sql: &str) -> String {
    match c.simple_query(sql).await {
        Ok(s) => match s.into_results().await {
            Ok(_) => panic!("the application login ran {sql}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn sql_server_install_as_the_owner_and_every_command_with_only_the_documented_grants() {
    let env = Env::demo(Pairing::MsPg, "least_priv").await;
    let a_admin_url = env.a.url().to_string();
    let b_url = env.b.url().to_string();
    let mut admin = ms_connect(&common::mssql::mssql_url()).await;
    let mut db_admin = ms_connect(&a_admin_url).await;
    let babelfish = is_babelfish(&mut db_admin).await;
    let run = login(&mut admin, &mut db_admin, "run", "Run_Pass_417").await;
    let app = login(&mut admin, &mut db_admin, "app", "App_Pass_529").await;
    ms_exec(
        &mut db_admin,
        &README_GRANTS.replace("{run}", &format!("[{run}]")),
    )
    .await;
    ms_exec(
        &mut db_admin,
        &format!("GRANT SELECT, INSERT, UPDATE, DELETE ON dbo.ORDERS TO [{app}];\nGRANT SELECT, INSERT, UPDATE, DELETE ON dbo.ORDER_ITEMS TO [{app}];"),
    )
    .await;
    // SQL Server: the capture trigger and tandem.outbox have one owner (dbo), so the trigger's
    // insert needs no grant of the writer (ownership chaining). Babelfish checks the writer's
    // privilege there, as PostgreSQL does: the application login gets INSERT on the outbox
    // (README's PostgreSQL grant), which gives it nothing else of tandem's.
    if babelfish {
        println!("babelfish: GRANT INSERT ON tandem.outbox to the application login (no ownership chaining in triggers there)");
        ms_exec(
            &mut db_admin,
            &format!("GRANT INSERT ON tandem.outbox TO [{app}];"),
        )
        .await;
    }
    let with_password =
        |user: &str, pw: &str| format!("{};password={pw}", as_user(&a_admin_url, user));

    // The application writes as its own login; one change cannot be mapped and is suspended.
    let mut a_app = ms_connect(&with_password(&app, "App_Pass_529")).await;
    ms_exec(
        &mut a_app,
        "INSERT INTO dbo.ORDERS (CUST_NAME, AMOUNT) VALUES ('g1', 1), ('g2', 2);\n\
         INSERT INTO dbo.ORDER_ITEMS SELECT ORDER_NO, 1, 2 FROM dbo.ORDERS;\n\
         INSERT INTO dbo.ORDERS (CUST_NAME, STATUS) VALUES ('odd', 'Z');",
    )
    .await;

    // tandem runs as the run login; its password comes from a file.
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("a_password");
    std::fs::write(&pw, "Run_Pass_417\n").expect("write");
    let cfg = config(
        dir.path(),
        "run.toml",
        &format!("password_file = \"{}\"", pw.display()),
    );
    let cfg_text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(
        &cfg,
        cfg_text.replace("[sync]\n", "[sync]\nmax_attempts = 1\n"),
    )
    .expect("config");
    let a_run = as_user(&a_admin_url, &run);
    let mut printed_all = String::new();
    let mut as_run = |args: &[&str]| {
        let out = tandem(&cfg, &a_run, &b_url)
            .args(args)
            .output()
            .expect("tandem");
        let printed = text(&out);
        printed_all.push_str(&printed);
        assert!(
            !printed.to_lowercase().contains("permission"),
            "{args:?} as the run login:\n{printed}"
        );
        (out.status.code(), printed)
    };
    let (code, out) = as_run(&["check"]);
    assert_eq!(code, Some(0), "check:\n{out}");
    let (code, out) = as_run(&["run", "--once"]);
    assert_eq!(code, Some(1), "one change suspended:\n{out}");
    let (code, out) = as_run(&["status", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = as_run(&["suspended", "list"]);
    assert_eq!(code, Some(0), "{out}");
    let id = out
        .split_whitespace()
        .find(|w| w.starts_with("A-"))
        .unwrap_or_else(|| panic!("an id in:\n{out}"))
        .to_string();
    let (code, out) = as_run(&["suspended", "show", &id]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = as_run(&["suspended", "discard", &id]);
    assert_eq!(code, Some(0), "{out}");
    ms_exec(
        &mut a_app,
        "UPDATE dbo.ORDERS SET STATUS = 'C' WHERE CUST_NAME = 'odd';",
    )
    .await;
    let (code, out) = as_run(&["run", "--once"]);
    assert_eq!(code, Some(0), "{out}");
    for entity in ["order", "order_item"] {
        let (code, out) = as_run(&["backfill", "--entity", entity]);
        assert_eq!(code, Some(0), "backfill {entity}:\n{out}");
    }
    let (code, out) = as_run(&["verify"]);
    assert_eq!(code, Some(0), "verify:\n{out}");
    let (code, out) = as_run(&["status"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!printed_all.contains("Run_Pass_417"), "{printed_all}");
    assert_eq!(
        ms_count(&mut db_admin, "SELECT count(*) FROM dbo.ORDERS").await,
        3,
        "nothing lost"
    );

    // The application login can write its tables, not read row images or change links.
    for sql in [
        "SELECT image FROM tandem.outbox",
        "SELECT count(*) FROM tandem.id_map",
        "UPDATE tandem.id_map SET applied_seq = 0",
        "DELETE FROM tandem.id_map",
        "DELETE FROM tandem.outbox",
    ] {
        let m = refused(&mut a_app, sql).await.to_lowercase();
        assert!(m.contains("permission"), "{sql}: {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
async fn sql_server_passwords_never_show_and_a_wrong_password_file_fails_clearly() {
    let env = Env::demo(Pairing::MsPg, "no_secrets").await;
    let a_url = env.a.url().to_string();
    let b_url = env.b.url().to_string();
    let password = ado::pairs(&a_url)
        .expect("pairs")
        .into_iter()
        .find(|(k, _)| k == "password" || k == "pwd")
        .map(|(_, v)| v)
        .expect("the test server's url has a password");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "inline.toml", "");
    let mut seen = String::new();
    for args in [
        vec!["check"],
        vec!["run", "--once"],
        vec!["--log-format", "json", "status", "--json"],
        vec!["suspended", "list"],
    ] {
        let out = tandem(&cfg, &a_url, &b_url)
            .args(&args)
            .output()
            .expect("tandem");
        assert_eq!(out.status.code(), Some(0), "{args:?}:\n{}", text(&out));
        seen.push_str(&text(&out));
    }
    // Unreachable: the message quotes where, never the string.
    let down = a_url.replace(",1433", ",1");
    let out = tandem(&cfg, &down, &b_url)
        .arg("check")
        .output()
        .expect("tandem");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    seen.push_str(&text(&out));
    // A config error about the string quotes it redacted.
    let bad = format!("{a_url};Connect Timeout=soon");
    let out = tandem(&cfg, &bad, &b_url)
        .arg("check")
        .output()
        .expect("tandem");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    seen.push_str(&text(&out));
    assert!(
        !seen.contains(&password),
        "the SQL Server password was shown:\n{seen}"
    );

    // password_file with a wrong password: a login failure, without the password.
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "Not_The_Pass_3").expect("write");
    let cfg = config(
        dir.path(),
        "file.toml",
        &format!("password_file = \"{}\"", pw.display()),
    );
    let out = tandem(&cfg, &a_url, &b_url)
        .arg("check")
        .output()
        .expect("tandem");
    let printed = text(&out);
    assert_eq!(out.status.code(), Some(2), "{printed}");
    assert!(
        printed.contains("Login failed")
            || printed.contains("login failed")
            || printed.contains("password authentication failed"),
        "{printed}"
    );
    assert!(
        !printed.contains("Not_The_Pass_3") && !printed.contains(&password),
        "{printed}"
    );
    // …and with the right one (the url's own is ignored then).
    std::fs::write(&pw, format!("{password}\n")).expect("write");
    let wrong_inline = a_url.replace(&format!("password={password}"), "password=Ignored_1");
    let out = tandem(&cfg, &wrong_inline, &b_url)
        .arg("check")
        .output()
        .expect("tandem");
    assert_eq!(
        out.status.code(),
        Some(0),
        "password_file wins:\n{}",
        text(&out)
    );
}
