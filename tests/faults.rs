//! Failures: kill -9 of a running tandem, a database stopped mid-run, a database absent at
//! start. Nothing may be lost or duplicated; tandem must resume by itself; logs stay free
//! of credentials. Also the latency of a change at light load.

mod common;

use std::fs::File;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::fixtures::{
    assert_converged, count, eventually, eventually_or, log, sync_met_outage, Env, A_SCHEMA,
    B_SCHEMA, DEMO_CONFIG,
};

/// Starts `tandem run` with its logs in a file of the env's directory.
fn start(env: &Env, log: &str) -> Child {
    let file = File::create(env.dir.path().join(log)).unwrap();
    env.tandem()
        .arg("run")
        .stdout(Stdio::null())
        .stderr(Stdio::from(file))
        .spawn()
        .expect("start tandem run")
}

fn terminate(child: &mut Child) -> Option<i32> {
    // SAFETY: plain signal to our own child process.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("tandem did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_any_moment_loses_and_duplicates_nothing() {
    let (a, b) = common::fresh_dbs("kill9");
    let config = DEMO_CONFIG.replace("[sync]\n", "[sync]\nbatch_size = 50\n");
    let env = Env::on(a, b, &config, A_SCHEMA, B_SCHEMA, true).await;
    env.a
        .batch_execute(
            r#"INSERT INTO dbo."ORDERS" ("CUST_NAME", "AMOUNT") SELECT 'a' || g, g FROM generate_series(1, 6000) g;
               INSERT INTO dbo."ORDER_ITEMS" SELECT "ORDER_NO", 1, 1 FROM dbo."ORDERS";"#,
        )
        .await
        .unwrap();
    env.b
        .batch_execute("INSERT INTO orders (customer, status) SELECT 'b' || g, 'open' FROM generate_series(1, 2000) g")
        .await
        .unwrap();
    // Kill it several times while it works, each time once it made some progress (and at
    // a different point of its batch: the delays after that vary).
    let mut seen = count(&env.b, "SELECT count(*) FROM orders").await;
    for (round, extra_ms) in [0u64, 7, 23, 41].into_iter().enumerate() {
        let mut child = start(&env, &format!("run{round}.log"));
        let b = &env.b;
        let before = seen;
        eventually_or(
            Duration::from_secs(60),
            "progress before the kill",
            || async { count(b, "SELECT count(*) FROM orders").await > before + 300 },
            || log(&env, &format!("run{round}.log")),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(extra_ms)).await;
        child.kill().unwrap();
        child.wait().unwrap();
        seen = count(&env.b, "SELECT count(*) FROM orders").await;
    }
    assert!(
        count(&env.a, "SELECT count(*) FROM tandem.outbox").await > 0,
        "the test must interrupt a drain in progress"
    );
    let o = env.tandem_run(&["run", "--once"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        count(&env.a, r#"SELECT count(*) FROM dbo."ORDERS""#).await,
        8000
    );
    assert_converged(&env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outages_of_either_database_are_survived_and_logs_hold_no_password() {
    let pair = common::own_pair("outage");
    pair.a.create_database("app").unwrap();
    pair.b.create_database("app").unwrap();
    // Trust authentication ignores the password, so it can be in the URL for the log check.
    let secret = "s3cret-Pa55word";
    let with_pw = |url: String| url.replacen("postgres@", &format!("postgres:{secret}@"), 1);
    let env = Env::on(
        with_pw(pair.a.url("app")),
        with_pw(pair.b.url("app")),
        DEMO_CONFIG,
        A_SCHEMA,
        B_SCHEMA,
        true,
    )
    .await;

    // B is down when tandem starts.
    pair.b.stop_immediate().unwrap();
    let mut child = start(&env, "outage.log");
    env.a
        .batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ('while B was down')"#)
        .await
        .unwrap();
    eventually_or(
        Duration::from_secs(15),
        "a log line about B",
        || async { sync_met_outage(&log(&env, "outage.log")) },
        || log(&env, "outage.log"),
    )
    .await;
    pair.b.start_again().unwrap();
    let b = common::connect(&pair.b.url("app")).await;
    eventually_or(
        Duration::from_secs(30),
        "the change to arrive after B came back",
        || async { count(&b, "SELECT count(*) FROM orders").await == 1 },
        || log(&env, "outage.log"),
    )
    .await;

    // A stops in the middle of a stream of changes on both sides.
    env.a.batch_execute(r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") SELECT 'x' || g FROM generate_series(1, 300) g"#).await.unwrap();
    b.batch_execute("INSERT INTO orders (customer, status) SELECT 'y' || g, 'open' FROM generate_series(1, 300) g").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pair.a.stop_immediate().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pair.a.start_again().unwrap();
    let a = common::connect(&pair.a.url("app")).await;
    // "working again" comes at the end of the first round without an error, which may follow
    // the one that brought both sides level: waiting for it too keeps the check off timing.
    eventually_or(
        Duration::from_secs(60),
        "both sides to converge, and the service to say it works again",
        || async {
            log(&env, "outage.log").contains("working again")
                && count(&a, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&b, "SELECT count(*) FROM tandem.outbox").await == 0
                && count(&a, r#"SELECT count(*) FROM dbo."ORDERS""#).await == 601
                && count(&b, "SELECT count(*) FROM orders").await == 601
        },
        || log(&env, "outage.log"),
    )
    .await;
    assert_eq!(terminate(&mut child), Some(0), "SIGTERM stops it cleanly");
    let env2 = Env { a, b, ..env };
    assert_converged(&env2).await;
    let logs = log(&env2, "outage.log");
    assert!(
        !logs.contains(secret),
        "a password leaked into the log:\n{logs}"
    );
    assert!(logs.contains("working again"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_arrives_within_a_second_at_light_load() {
    let (a, b) = common::fresh_dbs("latency");
    // The default poll interval (1 s), as users get it.
    let config = DEMO_CONFIG.replace("poll_interval_ms = 500\n", "");
    let env = Env::on(a, b, &config, A_SCHEMA, B_SCHEMA, true).await;
    let mut child = start(&env, "latency.log");
    let mut worst = Duration::ZERO;
    let mut all = Vec::new();
    for i in 0..6u64 {
        // Let tandem go idle for different lengths of time.
        tokio::time::sleep(Duration::from_millis(300 + i * 370)).await;
        let name = format!("latency {i}");
        env.a
            .execute(
                r#"INSERT INTO dbo."ORDERS" ("CUST_NAME") VALUES ($1)"#,
                &[&name],
            )
            .await
            .unwrap();
        let t = Instant::now();
        eventually(Duration::from_secs(5), "arrival", || async {
            env.b
                .query_opt("SELECT 1 FROM orders WHERE customer = $1", &[&name])
                .await
                .unwrap()
                .is_some()
        })
        .await;
        worst = worst.max(t.elapsed());
        all.push(t.elapsed().as_millis());
    }
    terminate(&mut child);
    eprintln!("latencies (ms): {all:?}");
    assert!(
        worst <= Duration::from_millis(1300),
        "worst latency {worst:?} (all: {all:?} ms)"
    );
}
