//! `tandem demo` end to end: the real binary starts two real clusters, plays the whole scene,
//! runs the live phase for a second, stops and removes everything. `tandem demo --a mssql`
//! the same with A on a fresh database of the SQL Server in `TANDEM_TEST_MSSQL_URL`.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Far more than the demo needs (about 10 s); a hung demo fails instead of hanging CI.
const TIMEOUT: Duration = Duration::from_secs(180);

fn read_all(mut r: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits for the child, killing it after [`TIMEOUT`].
fn wait(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What a finished demo run left: its process id, stdout, and both outputs for messages.
struct Run {
    pid: u32,
    stdout: String,
    stderr: String,
    shown: String,
}

/// Runs `tandem demo` with `args` and `envs`, one second of live phase; asserts exit 0.
fn run_demo(args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tandem"));
    cmd.arg("demo")
        .args(args)
        .env("TANDEM_DEMO_SECONDS", "1")
        .env("TANDEM_DEMO_PAUSE_MS", "100")
        .env_remove("TANDEM_CONFIG")
        .env_remove("TANDEM_DEMO_MSSQL_URL");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tandem demo");
    let pid = child.id();
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let status = wait(&mut child);
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    let shown = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    let status = status.unwrap_or_else(|| panic!("demo did not end within {TIMEOUT:?}\n{shown}"));
    assert!(status.success(), "demo exited with {status}\n{shown}");
    Run {
        pid,
        stdout,
        stderr,
        shown,
    }
}

/// The scene's output, whichever engine A runs on.
const SCENE: &[&str] = &[
    // Step 1: A's code 'O' arrives in B as 'open', linked both ways.
    "arrived in B public.orders after",
    "status='open' amount=120.50 legacy_no=1000",
    "id written back in A dbo.ORDERS after",
    // Step 2: children follow, with B's id of the parent.
    "arrived in B public.order_items after",
    // Steps 3 and 5: B → A, 'closed' arrives as 'C'.
    "arrived in A dbo.ORDERS after",
    "STATUS='C'",
    // Steps 6 and 7: deletes, with A's cascade.
    "gone from B public.order_items after",
    "gone from A dbo.ORDERS and its item from dbo.ORDER_ITEMS after",
    // The summary tables and links.
    "B public.orders",
    "closed",
    "order_item  [1000,1]",
    "Sync is live",
    "sync stopped",
];

fn assert_markers(run: &Run, markers: &[&str]) {
    for marker in markers {
        assert!(
            run.stdout.contains(marker),
            "stdout lacks {marker:?}\n{}",
            run.shown
        );
    }
}

/// Nothing of the process `pid` is left under tandem-clusters (cluster directories, config).
fn assert_no_clusters_left(pid: u32) {
    let root = std::env::temp_dir().join(tandem::cluster::CLUSTERS_DIR);
    let mine = format!("-{pid}-");
    let left: Vec<String> = std::fs::read_dir(&root)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("demo") && n.contains(&mine))
        .collect();
    assert!(
        left.is_empty(),
        "left behind in {}: {left:?}",
        root.display()
    );
}

#[test]
fn demo_plays_the_scene_and_cleans_up() {
    let run = run_demo(&[], &[]);
    assert_markers(&run, &["psql postgres://postgres@127.0.0.1:"]);
    assert_markers(&run, SCENE);
    assert_markers(&run, &["cleaned up: both clusters stopped and removed"]);
    assert_no_clusters_left(run.pid);
}

#[test]
#[cfg_attr(
    not(tandem_mssql),
    ignore = "needs TANDEM_TEST_MSSQL_URL (deploy/test.sh starts Babelfish)"
)]
fn demo_with_a_on_sql_server_plays_the_scene_and_cleans_up() {
    let url = common::mssql::mssql_url();
    let run = run_demo(&["--a", "mssql"], &[("TANDEM_DEMO_MSSQL_URL", &url)]);
    assert_markers(
        &run,
        &[
            "connection string from $TANDEM_DEMO_MSSQL_URL",
            "password=***",
            "sqlcmd -S ",
            // A's statements in T-SQL, exactly as run; the key comes from SCOPE_IDENTITY().
            "A> INSERT INTO dbo.[ORDERS] ([CUST_NAME], [STATUS], [AMOUNT]) VALUES ('Ada Lovelace', 'O', 120.50); SELECT SCOPE_IDENTITY() AS [ORDER_NO];",
            "→ ORDER_NO 1000",
            "A> DELETE FROM dbo.[ORDER_ITEMS] WHERE [ORDER_NO] = 1000 AND [LINE_NO] = 2;",
        ],
    );
    assert_markers(&run, SCENE);
    assert_markers(&run, &["cleaned up: cluster B stopped and removed"]);

    // The password is never shown.
    let pairs = tandem::endpoint::mssql::ado::pairs(&url).expect("TANDEM_TEST_MSSQL_URL");
    for (key, value) in pairs {
        if matches!(key.as_str(), "password" | "pwd") && !value.is_empty() {
            assert!(
                !run.stdout.contains(&value) && !run.stderr.contains(&value),
                "the password is shown\n{}",
                run.shown
            );
        }
    }

    // The demo's database is dropped.
    let name = run
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("cleaned up: database "))
        .and_then(|l| l.split(' ').next())
        .unwrap_or_else(|| panic!("no \"cleaned up: database …\" line\n{}", run.shown))
        .to_string();
    assert!(name.starts_with("tandem_demo_"), "{name}\n{}", run.shown);
    let left = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(async {
            let mut c = common::mssql::ms_connect(&url).await;
            common::mssql::ms_count(
                &mut c,
                &format!("SELECT count(*) FROM sys.databases WHERE name = '{name}'"),
            )
            .await
        });
    assert_eq!(left, 0, "database {name} is still there\n{}", run.shown);
    assert_no_clusters_left(run.pid);
}
