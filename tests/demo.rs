//! `tandem demo` end to end: the real binary starts two real clusters, plays the whole scene,
//! runs the live phase for a second, stops and removes everything.

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

#[test]
fn demo_plays_the_scene_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tandem"))
        .arg("demo")
        .env("TANDEM_DEMO_SECONDS", "1")
        .env("TANDEM_DEMO_PAUSE_MS", "100")
        .env_remove("TANDEM_CONFIG")
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

    for marker in [
        "psql postgres://postgres@127.0.0.1:",
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
        "cleaned up: both clusters stopped and removed",
    ] {
        assert!(stdout.contains(marker), "stdout lacks {marker:?}\n{shown}");
    }

    // Nothing of this process is left under tandem-clusters (cluster directories, config).
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
