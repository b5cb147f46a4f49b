//! Running as a service: the HTTP endpoints and their series, a bounded clean stop under
//! load, two instances with one active and a kill -9 failover, and logs (JSON too) free of
//! credentials. Each test runs the real binary against real PostgreSQL.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{
    assert_converged, count, eventually_or, log, sync_met_outage, Env, A_SCHEMA, B_SCHEMA,
    DEMO_CONFIG,
};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `tandem [global...] run --listen 127.0.0.1:PORT`, logs to a file in the env's directory.
fn start(env: &Env, log: &str, port: u16, global: &[&str]) -> Child {
    let file = File::create(env.dir.path().join(log)).expect("log file");
    env.tandem()
        .args(global)
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tandem run")
}

/// A plain HTTP GET: (status, body), or None when nothing answers.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// The value of a series in Prometheus text: `name{…}` with every given label, or `name`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let (series, value) = line.rsplit_once(' ')?;
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let all = labels
            .iter()
            .all(|(k, v)| l.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok())?
    })
}

fn metrics(port: u16) -> String {
    get(port, "/metrics").map(|(_, b)| b).unwrap_or_default()
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: a plain signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// SIGTERM, then the exit code and how long the stop took (panics past `limit`).
fn terminate(child: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    signal(child, libc::SIGTERM);
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return (status.code(), start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("tandem did not stop within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn wait_http(
    port: u16,
    path: &str,
    want: u16,
    limit: Duration,
    what: &str,
    env: &Env,
    l: &str,
) {
    eventually_or(
        limit,
        what,
        || async move { get(port, path).map(|(s, _)| s) == Some(want) },
        || log(env, l),
    )
    .await;
}

async fn with_batch_size(name: &str, batch: usize) -> Env {
    let (a, b) = common::fresh_dbs(name);
    let config = DEMO_CONFIG.replace("[sync]\n", &format!("[sync]\nbatch_size = {batch}\n"));
    Env::on(a, b, &config, A_SCHEMA, B_SCHEMA, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_readiness_answer_after_a_sync() {
    let env = Env::new("svc_metrics").await;
    let port = free_port();
    let mut child = start(&env, "run.log", port, &[]);
    wait_http(
        port,
        "/healthz",
        200,
        Duration::from_secs(10),
        "/healthz",
        &env,
        "run.log",
    )
    .await;
    wait_http(
        port,
        "/readyz",
        200,
        Duration::from_secs(10),
        "/readyz",
        &env,
        "run.log",
    )
    .await;

    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'm' || g, g FROM generate_series(1, 20) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 1 FROM dbo."ORDERS";"#,
        )
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status) VALUES ('from b', 'open')")
        .await
        .unwrap();
    eventually_or(
        Duration::from_secs(15),
        "the changes to arrive",
        || async {
            count(&env.b, "SELECT count(*) FROM order_items").await == 20
                && count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await == 21
        },
        || log(&env, "run.log"),
    )
    .await;
    // The status poll runs every 5 s: wait for one after the sync.
    eventually_or(
        Duration::from_secs(15),
        "the metrics to show the sync",
        || async {
            let m = metrics(port);
            metric(
                &m,
                "tandem_changes_applied_total",
                &[("direction", "a_to_b")],
            ) >= Some(40.0)
                && metric(
                    &m,
                    "tandem_changes_applied_total",
                    &[("direction", "b_to_a")],
                ) >= Some(1.0)
                && metric(&m, "tandem_linked", &[("entity", "order"), ("side", "a")]) == Some(21.0)
        },
        || metrics(port),
    )
    .await;
    let m = metrics(port);
    let has = |name: &str, labels: &[(&str, &str)]| {
        metric(&m, name, labels).unwrap_or_else(|| panic!("no series {name} {labels:?} in\n{m}"))
    };
    let a_to_b = [("direction", "a_to_b")];
    assert_eq!(has("tandem_active", &[]), 1.0);
    assert_eq!(
        has(
            "tandem_failures_total",
            &[("direction", "a_to_b"), ("kind", "change")]
        ),
        0.0
    );
    assert_eq!(
        has(
            "tandem_failures_total",
            &[("direction", "b_to_a"), ("kind", "unreachable")]
        ),
        0.0
    );
    assert_eq!(has("tandem_changes_suspended_total", &a_to_b), 0.0);
    has("tandem_changes_unchanged_total", &a_to_b);
    has("tandem_changes_stale_total", &a_to_b);
    has("tandem_changes_after_delete_total", &a_to_b);
    assert!(has("tandem_apply_latency_seconds_count", &a_to_b) >= 40.0);
    assert!(
        has(
            "tandem_apply_latency_seconds_bucket",
            &[("direction", "a_to_b"), ("le", "+Inf")]
        ) >= 40.0
    );
    assert!(has("tandem_batch_claimed_count", &a_to_b) >= 1.0);
    assert!(has("tandem_batch_claimed_sum", &a_to_b) >= 40.0);
    for side in ["a", "b"] {
        for entity in ["order", "order_item"] {
            let l = [("entity", entity), ("side", side)];
            assert_eq!(has("tandem_pending", &l), 0.0, "{entity} {side}");
            assert_eq!(has("tandem_suspended", &l), 0.0);
            assert_eq!(has("tandem_oldest_pending_age_seconds", &l), 0.0);
        }
        assert_eq!(has("tandem_database_up", &[("side", side)]), 1.0);
        assert!(has("tandem_pool_connections", &[("side", side)]) >= 1.0);
        has("tandem_pool_idle_connections", &[("side", side)]);
        assert_eq!(has("tandem_pool_max_connections", &[("side", side)]), 8.0);
    }
    assert!(
        m.contains("# TYPE tandem_apply_latency_seconds histogram"),
        "{m}"
    );
    assert!(m.contains("# HELP tandem_changes_applied_total"), "{m}");

    let (code, body) = get(port, "/readyz").expect("readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(get(port, "/nope").map(|r| r.0), Some(404));

    let (code, took) = terminate(&mut child, Duration::from_secs(35));
    assert_eq!(code, Some(0), "{}", log(&env, "run.log"));
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(
        get(port, "/healthz").is_none(),
        "the HTTP server stopped too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_0_promptly_and_loses_nothing() {
    let env = with_batch_size("svc_sigterm", 50).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'a' || g, g FROM generate_series(1, 3000) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 1 FROM dbo."ORDERS";"#,
        )
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status, amount) SELECT 'b' || g, 'open', g FROM generate_series(1, 1000) g")
        .await
        .unwrap();
    let port = free_port();
    let mut child = start(&env, "run.log", port, &[]);
    eventually_or(
        Duration::from_secs(15),
        "the first changes to arrive",
        || async { count(&env.b, "SELECT count(*) FROM orders").await > 1000 },
        || log(&env, "run.log"),
    )
    .await;
    let (code, took) = terminate(&mut child, Duration::from_secs(35));
    let logs = log(&env, "run.log");
    assert_eq!(code, Some(0), "{logs}");
    assert!(
        took < Duration::from_secs(10),
        "stopping took {took:?}:\n{logs}"
    );
    eprintln!("stopped {took:?} after SIGTERM");
    assert!(logs.contains("stopping"), "{logs}");
    let left = count(&env.a, "SELECT count(*) FROM tandem.outbox").await
        + count(&env.b, "SELECT count(*) FROM tandem.outbox").await;
    assert!(left > 0, "the stop must come in the middle of the work");

    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        4000
    );
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_one_active_and_a_kill_9_fails_over_without_loss_or_duplicates() {
    let env = with_batch_size("svc_ha", 50).await;
    let (p1, p2) = (free_port(), free_port());
    let mut first = start(&env, "first.log", p1, &[]);
    wait_http(
        p1,
        "/readyz",
        200,
        Duration::from_secs(10),
        "the first instance to be active",
        &env,
        "first.log",
    )
    .await;
    let mut second = start(&env, "second.log", p2, &[]);
    wait_http(
        p2,
        "/healthz",
        200,
        Duration::from_secs(10),
        "the second instance to answer",
        &env,
        "second.log",
    )
    .await;
    eventually_or(
        Duration::from_secs(10),
        "the second instance to say it stands by",
        || async { log(&env, "second.log").contains("standby: another instance is active") },
        || log(&env, "second.log"),
    )
    .await;
    let (code, body) = get(p2, "/readyz").expect("readyz of the standby");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("standby"), "{body}");

    // Load on both sides, and a writer that keeps going through the failover.
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'a' || g, g FROM generate_series(1, 2000) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 1 FROM dbo."ORDERS";"#,
        )
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status, amount) SELECT 'b' || g, 'open', g FROM generate_series(1, 500) g")
        .await
        .unwrap();
    let (a_url, b_url) = (env.a_url.clone(), env.b_url.clone());
    let writer = tokio::spawn(async move {
        let a = common::connect(&a_url).await;
        let b = common::connect(&b_url).await;
        for i in 0..120 {
            a.execute(
                r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") VALUES ($1, $2::text::numeric)"#,
                &[&format!("live a{i}"), &format!("{i}.25")],
            )
            .await
            .expect("insert at A");
            b.execute(
                "INSERT INTO orders (customer, status) VALUES ($1, 'open')",
                &[&format!("live b{i}")],
            )
            .await
            .expect("insert at B");
            // Updates of records that may be in flight at the moment of the kill.
            a.execute(
                r#"UPDATE dbo."ORDERS" SET "CUST_NAME" = "CUST_NAME" || '+' WHERE "ORDER_NO" = (SELECT min("ORDER_NO") + $1 FROM dbo."ORDERS")"#,
                &[&(i * 7)],
            )
            .await
            .expect("update at A");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    // The standby applies nothing while the first instance leads.
    eventually_or(
        Duration::from_secs(15),
        "the active instance to make progress",
        || async { count(&env.b, "SELECT count(*) FROM orders").await > 900 },
        || log(&env, "first.log"),
    )
    .await;
    let m2 = metrics(p2);
    assert_eq!(metric(&m2, "tandem_active", &[]), Some(0.0), "{m2}");
    assert_eq!(
        metric(
            &m2,
            "tandem_batch_claimed_count",
            &[("direction", "a_to_b")]
        ),
        None,
        "the standby ran no batch:\n{m2}"
    );
    assert!(
        !log(&env, "second.log").contains("claimed"),
        "{}",
        log(&env, "second.log")
    );
    assert_eq!(metric(&metrics(p1), "tandem_active", &[]), Some(1.0));

    // kill -9 the active one in the middle of the work.
    let pending = count(&env.a, "SELECT count(*) FROM tandem.outbox").await;
    assert!(pending > 0, "the kill must come under load");
    first.kill().expect("kill -9");
    first.wait().expect("reap");
    let killed = Instant::now();
    eventually_or(
        Duration::from_secs(15),
        "the standby to take over",
        || async { get(p2, "/readyz").map(|r| r.0) == Some(200) },
        || log(&env, "second.log"),
    )
    .await;
    let ready = killed.elapsed();
    let before = count(&env.b, "SELECT count(*) FROM order_items").await;
    eventually_or(
        Duration::from_secs(15),
        "the new active instance to apply",
        || async {
            metric(
                &metrics(p2),
                "tandem_changes_applied_total",
                &[("direction", "a_to_b")],
            ) > Some(0.0)
                || count(&env.b, "SELECT count(*) FROM order_items").await > before
        },
        || log(&env, "second.log"),
    )
    .await;
    let applying = killed.elapsed();
    eprintln!("takeover after kill -9: ready in {ready:?}, applying in {applying:?}");
    assert!(
        applying < Duration::from_secs(8),
        "takeover took {applying:?}"
    );
    assert_eq!(metric(&metrics(p2), "tandem_active", &[]), Some(1.0));

    writer.await.expect("writer");
    eventually_or(
        Duration::from_secs(60),
        "both sides to converge",
        || async {
            count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM orders").await == 2740
                && count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await == 2740
        },
        || log(&env, "second.log"),
    )
    .await;
    // `run --once` does not apply next to a running service.
    let o = env.tandem_run(&["run", "--once"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("another `tandem run` is active"), "{err}");
    let (code, _) = terminate(&mut second, Duration::from_secs(35));
    assert_eq!(code, Some(0));
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_and_readiness_never_show_the_password() {
    let env = Env::new("svc_secret").await;
    // The clusters trust local connections, so a password in the URL is ignored by the
    // server but goes through all of tandem's handling of URLs. B points where nothing
    // listens, so the log and /readyz have an error about it to tell.
    let secret = "Sup3r-s3cret-pw";
    let a_url = env
        .a_url
        .replacen("postgres@", &format!("postgres:{secret}@"), 1);
    let b_url = format!(
        "postgres://tandem:{secret}@127.0.0.1:{}/nowhere",
        free_port()
    );
    std::fs::write(&env.config_path, DEMO_CONFIG).expect("config with ${…}");
    let port = free_port();
    let file = File::create(env.dir.path().join("json.log")).expect("log file");
    let mut child = env
        .tandem()
        .env("TANDEM_A_URL", &a_url)
        .env("TANDEM_B_URL", &b_url)
        .args([
            "--log-format",
            "json",
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tandem run");
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('waits for B')"#)
        .await
        .unwrap();
    eventually_or(
        Duration::from_secs(20),
        "a log line about B",
        || async { sync_met_outage(&log(&env, "json.log")) },
        || log(&env, "json.log"),
    )
    .await;
    let (code, ready) = get(port, "/readyz").expect("readyz");
    assert_eq!(code, 503, "{ready}");
    assert!(ready.contains("side B"), "{ready}");
    assert!(
        !ready.contains(secret),
        "the password leaked into /readyz: {ready}"
    );
    let m = metrics(port);
    assert!(!m.contains(secret));
    assert!(
        metric(
            &m,
            "tandem_failures_total",
            &[("direction", "a_to_b"), ("kind", "unreachable")]
        ) >= Some(1.0),
        "{m}"
    );
    let (code, _) = terminate(&mut child, Duration::from_secs(35));
    assert_eq!(code, Some(0));
    let logs = log(&env, "json.log");
    assert!(
        !logs.contains(secret),
        "a password leaked into the log:\n{logs}"
    );
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not a JSON line: {line}"
        );
    }
}

#[tokio::test]
async fn a_listen_address_in_use_is_a_setup_error() {
    let env = Env::new("svc_port").await;
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let o = env.tandem_run(&["run", "--listen", &format!("127.0.0.1:{port}")]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
}

/// The grants of README's "Running in production", exactly: `{run}` is tandem's run role,
/// `{app}` an application's role, `{schema}` and `{tables}` the synchronised tables'.
const RUN_GRANTS: &str = r#"
GRANT USAGE ON SCHEMA tandem TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA tandem TO {run};
GRANT USAGE ON SCHEMA {schema} TO {run};
GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {run};
GRANT USAGE ON SCHEMA tandem TO {app};
GRANT INSERT ON tandem.outbox TO {app};
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_least_privilege_grants_suffice() {
    let env = Env::new("svc_grants").await;
    let db = env.a_url.rsplit('/').next().expect("db name").to_string();
    let (run, app) = (format!("run_{db}"), format!("app_{db}"));
    for (c, schema, tables) in [
        (&env.a, "dbo", r#"dbo."ORDERS", dbo."ORDER_ITEMS""#),
        (&env.b, "public", "public.orders, public.order_items"),
    ] {
        let grants = RUN_GRANTS
            .replace("{run}", &run)
            .replace("{app}", &app)
            .replace("{schema}", schema)
            .replace("{tables}", tables);
        c.batch_execute(&format!(
            "CREATE ROLE {run} LOGIN; CREATE ROLE {app} LOGIN;
             GRANT USAGE ON SCHEMA {schema} TO {app};
             GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {app};
             {grants}"
        ))
        .await
        .expect("grants");
    }
    let as_role = |url: &str, role: &str| url.replacen("postgres@", &format!("{role}@"), 1);
    // The applications write as their own role.
    let a_app = common::connect(&as_role(&env.a_url, &app)).await;
    let b_app = common::connect(&as_role(&env.b_url, &app)).await;
    a_app
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'g' || g, g FROM generate_series(1, 30) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 2 FROM dbo."ORDERS";
               UPDATE dbo."ORDERS" SET "STATUS" = 'C' WHERE "AMOUNT" < 5;"#,
        )
        .await
        .expect("application writes at A");
    b_app
        .batch_execute("INSERT INTO orders (customer, status) SELECT 'h' || g, 'open' FROM generate_series(1, 10) g")
        .await
        .expect("application writes at B");

    // Tandem runs as the run role.
    let text = std::fs::read_to_string(&env.config_path).expect("config");
    let text = text
        .replace(&env.a_url, &as_role(&env.a_url, &run))
        .replace(&env.b_url, &as_role(&env.b_url, &run));
    std::fs::write(&env.config_path, text).expect("config");
    let port = free_port();
    let mut child = start(&env, "run.log", port, &[]);
    wait_http(
        port,
        "/readyz",
        200,
        Duration::from_secs(10),
        "/readyz as the run role",
        &env,
        "run.log",
    )
    .await;
    eventually_or(
        Duration::from_secs(20),
        "the changes to arrive",
        || async {
            count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await == 40
        },
        || log(&env, "run.log"),
    )
    .await;
    // Deletes, and the cascade they cause at the target, with the same roles.
    a_app
        .batch_execute(r#"DELETE FROM dbo."ORDERS" WHERE "AMOUNT" > 25"#)
        .await
        .expect("delete at A");
    eventually_or(
        Duration::from_secs(20),
        "the deletes to arrive",
        || async {
            count(&env.b, "SELECT count(*) FROM orders").await == 35
                && count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM tandem.outbox").await == 0
        },
        || log(&env, "run.log"),
    )
    .await;
    let (code, _) = terminate(&mut child, Duration::from_secs(35));
    let logs = log(&env, "run.log");
    assert_eq!(code, Some(0), "{logs}");
    assert!(!logs.contains("permission denied"), "{logs}");
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_instance_that_loses_its_lock_session_stops_applying_at_once() {
    let env = with_batch_size("svc_lease_lost", 50).await;
    let (p1, p2) = (free_port(), free_port());
    let mut first = start(&env, "first.log", p1, &[]);
    wait_http(
        p1,
        "/readyz",
        200,
        Duration::from_secs(10),
        "the first instance to be active",
        &env,
        "first.log",
    )
    .await;
    let mut second = start(&env, "second.log", p2, &[]);
    wait_http(
        p2,
        "/healthz",
        200,
        Duration::from_secs(10),
        "the second instance to answer",
        &env,
        "second.log",
    )
    .await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'a' || g, g FROM generate_series(1, 2000) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 1 FROM dbo."ORDERS";"#,
        )
        .await
        .unwrap();
    eventually_or(
        Duration::from_secs(15),
        "the active instance to make progress",
        || async { count(&env.b, "SELECT count(*) FROM orders").await > 200 },
        || log(&env, "first.log"),
    )
    .await;

    // Only the lock's session ends (the database and the pools stay up).
    let killed = count(
        &env.a,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE application_name = 'tandem lease' AND datname = current_database()",
    )
    .await;
    assert!(killed >= 1);
    let t = Instant::now();
    eventually_or(
        Duration::from_secs(5),
        "the first instance to give up the lead",
        || async {
            metric(&metrics(p1), "tandem_active", &[]) == Some(0.0)
                || log(&env, "first.log").contains("lost the lead")
        },
        || log(&env, "first.log"),
    )
    .await;
    let noticed = t.elapsed();
    eprintln!("the lost lock was noticed after {noticed:?}");
    assert!(noticed < Duration::from_secs(3), "{noticed:?}");
    eventually_or(
        Duration::from_secs(15),
        "one instance to be active again",
        || async {
            let (a1, a2) = (
                metric(&metrics(p1), "tandem_active", &[]),
                metric(&metrics(p2), "tandem_active", &[]),
            );
            a1.unwrap_or(0.0) + a2.unwrap_or(0.0) == 1.0
        },
        || format!("{}\n{}", log(&env, "first.log"), log(&env, "second.log")),
    )
    .await;
    eventually_or(
        Duration::from_secs(60),
        "both sides to converge",
        || async {
            count(&env.a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&env.b, "SELECT count(*) FROM order_items").await == 2000
        },
        || format!("{}\n{}", log(&env, "first.log"), log(&env, "second.log")),
    )
    .await;
    for (child, name) in [(&mut first, "first.log"), (&mut second, "second.log")] {
        let (code, _) = terminate(child, Duration::from_secs(35));
        assert_eq!(code, Some(0), "{}", log(&env, name));
    }
    // After "lost the lead", the first instance ran no batch until it led again.
    let first_log = log(&env, "first.log");
    let after = first_log
        .split_once("lost the lead")
        .map(|(_, rest)| rest)
        .expect("the first instance logged the loss");
    let until_active_again = after
        .split_once("active: this instance applies")
        .map(|(before, _)| before)
        .unwrap_or(after);
    assert!(
        !until_active_again.contains("claimed"),
        "a batch ran after the lead was lost:\n{first_log}"
    );
    assert_converged(&env).await;
}
