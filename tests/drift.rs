//! Schema drift against real PostgreSQL: `install` records every synchronised table; while
//! `tandem run` goes, a mapped column renamed (then retyped) at the target pauses its entity —
//! its changes stay pending, untried, never suspended — while the other entity keeps flowing;
//! `status` and `check` say so; reverting the column, or `tandem install` recording the table
//! anew, resumes it and it drains.

mod common;

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::fixtures::{count, eventually_or, log, Env};

const CONFIG: &str = r#"
[a]
kind = "postgres"
url = "${TANDEM_A_URL}"

[b]
kind = "postgres"
url = "${TANDEM_B_URL}"

[sync]
poll_interval_ms = 200
retry_min_ms = 100
retry_max_ms = 1000

[[entities]]
name = "customer"
a = { table = "legacy.CUST", key = ["CUST_NO"] }
b = { table = "public.customer", key = ["cust_no"] }
columns = [ { a = "CUST_NO", b = "cust_no" }, { a = "NAME", b = "name" } ]

[[entities]]
name = "product"
a = { table = "legacy.PROD", key = ["PROD_NO"] }
b = { table = "public.product", key = ["prod_no"] }
columns = [ { a = "PROD_NO", b = "prod_no" }, { a = "TITLE", b = "title" } ]
"#;

const A_SCHEMA: &str = r#"
CREATE SCHEMA legacy;
CREATE TABLE legacy."CUST" ("CUST_NO" integer PRIMARY KEY, "NAME" text NOT NULL);
CREATE TABLE legacy."PROD" ("PROD_NO" integer PRIMARY KEY, "TITLE" text NOT NULL);
"#;

const B_SCHEMA: &str = r#"
CREATE TABLE public.customer (cust_no integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.product (prod_no integer PRIMARY KEY, title text NOT NULL);
"#;

const LIMIT: Duration = Duration::from_secs(60);
const LOG: &str = "run.log";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A plain HTTP GET's body.
fn get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw
}

/// `tandem run`, stopped with SIGTERM when dropped (also when an assertion fails).
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: a plain signal to our own child process.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

fn start(env: &Env, port: u16) -> Child {
    let file = File::create(env.dir.path().join(LOG)).expect("log file");
    env.tandem()
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tandem run")
}

fn stdout(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The customer changes waiting in A's outbox: (rows, rows tried at least once, suspended).
async fn customer_outbox(env: &Env) -> (i64, i64, i64) {
    let q =
        |w: &str| format!("SELECT count(*) FROM tandem.outbox WHERE entity = 'customer' AND {w}");
    (
        count(&env.a, &q("true")).await,
        count(&env.a, &q("(attempts > 0 OR last_error IS NOT NULL)")).await,
        count(&env.a, &q("suspended")).await,
    )
}

async fn wait_log(env: &Env, what: &str, times: usize) {
    eventually_or(
        LIMIT,
        &format!("the log says {what:?} {times} time(s)"),
        || async move { log(env, LOG).matches(what).count() >= times },
        || log(env, LOG),
    )
    .await;
}

async fn wait_rows(env: &Env, sql: &str, want: i64) {
    eventually_or(
        LIMIT,
        &format!("{sql} = {want}"),
        || async move { count(&env.b, sql).await == want },
        || log(env, LOG),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mapped_column_changed_at_the_target_pauses_its_entity_until_it_matches_again() {
    let (a, b) = common::fresh_dbs("drift_pause");
    let env = Env::on(a, b, CONFIG, A_SCHEMA, B_SCHEMA, true).await;
    let port = free_port();
    let run = Stopped(start(&env, port));

    env.a
        .batch_execute(
            r#"INSERT INTO legacy."CUST" VALUES (1, 'Ada');
               INSERT INTO legacy."PROD" VALUES (1, 'Lamp');"#,
        )
        .await
        .expect("first rows");
    wait_rows(&env, "SELECT count(*) FROM customer", 1).await;
    wait_rows(&env, "SELECT count(*) FROM product", 1).await;

    // 1. A mapped column renamed at B: customer pauses, product flows.
    env.b
        .batch_execute("ALTER TABLE customer RENAME COLUMN name TO full_name")
        .await
        .expect("rename");
    wait_log(&env, "entity customer paused", 1).await;
    let status = stdout(&env.tandem_run(&["status"]));
    assert!(
        status.contains(
            "paused: entity customer: side B, table public.customer: mapped column name (text) \
             was dropped or renamed since `tandem install` recorded the table"
        ),
        "{status}"
    );
    assert!(status.contains("run `tandem install`"), "{status}");
    assert!(
        status.contains("needs attention: 1 entity paused by schema drift (customer"),
        "{status}"
    );
    let json = env.tandem_run(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_slice(&json.stdout).expect("status json");
    let paused: Vec<(&str, bool)> = rows
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            (
                r["entity"].as_str().unwrap_or(""),
                r.get("paused").is_some_and(|p| p.is_string()),
            )
        })
        .collect();
    assert!(paused.contains(&("customer", true)), "{paused:?}");
    assert!(paused.contains(&("product", false)), "{paused:?}");
    // The metric and the status page say so too.
    assert!(
        get(port, "/metrics").contains("tandem_entity_paused{entity=\"customer\"} 1"),
        "{}",
        get(port, "/metrics")
    );
    let page = get(port, "/");
    assert!(
        page.contains("customer paused by schema drift")
            && page.contains("mapped column name (text) was dropped or renamed"),
        "{page}"
    );
    let check = env.tandem_run(&["check"]);
    assert_eq!(check.status.code(), Some(2), "{}", stdout(&check));
    assert!(
        stdout(&check).contains("`tandem run` pauses entity customer"),
        "{}",
        stdout(&check)
    );

    // Changes of both entities in one transaction, the customer's first: only product's flow.
    env.a
        .batch_execute(
            r#"BEGIN;
               INSERT INTO legacy."CUST" VALUES (2, 'Grace');
               INSERT INTO legacy."PROD" VALUES (2, 'Desk');
               COMMIT;"#,
        )
        .await
        .expect("second rows");
    wait_rows(&env, "SELECT count(*) FROM product", 2).await;
    assert_eq!(count(&env.b, "SELECT count(*) FROM customer").await, 1);
    assert_eq!(
        customer_outbox(&env).await,
        (1, 0, 0),
        "the paused entity's change is pending, never tried, not suspended"
    );

    // Reverting the column resumes the entity, and its pending change drains.
    env.b
        .batch_execute("ALTER TABLE customer RENAME COLUMN full_name TO name")
        .await
        .expect("rename back");
    wait_rows(
        &env,
        "SELECT count(*) FROM customer WHERE name = 'Grace'",
        1,
    )
    .await;
    wait_log(&env, "entity customer resumed", 1).await;

    // 2. Retyped at B, and a new unmapped column at B's product (a warning only).
    env.b
        .batch_execute(
            "ALTER TABLE customer ALTER COLUMN name TYPE varchar(200);
             ALTER TABLE product ADD COLUMN note text;",
        )
        .await
        .expect("retype");
    wait_log(&env, "entity customer paused", 2).await;
    wait_log(&env, "new column note (text) is not mapped", 1).await;
    assert!(
        log(&env, LOG)
            .contains("mapped column name changed type from text to character varying(200)"),
        "{}",
        log(&env, LOG)
    );
    env.a
        .batch_execute(
            r#"INSERT INTO legacy."CUST" VALUES (3, 'Edsger');
               INSERT INTO legacy."PROD" VALUES (3, 'Chair');"#,
        )
        .await
        .expect("third rows");
    wait_rows(&env, "SELECT count(*) FROM product", 3).await;
    assert_eq!(customer_outbox(&env).await, (1, 0, 0));

    // `tandem install` records the table as it is now: the entity resumes and drains.
    let install = env.tandem_run(&["install", "--side", "b"]);
    assert!(install.status.success(), "{}", stdout(&install));
    wait_rows(
        &env,
        "SELECT count(*) FROM customer WHERE name = 'Edsger'",
        1,
    )
    .await;
    wait_log(&env, "entity customer resumed", 2).await;
    eventually_or(
        LIMIT,
        "A's outbox drained",
        || async { customer_outbox(&env).await == (0, 0, 0) },
        || log(&env, LOG),
    )
    .await;
    assert_eq!(
        log(&env, LOG)
            .matches("new column note (text) is not mapped")
            .count(),
        1,
        "the new column is reported once"
    );
    drop(run);
}
