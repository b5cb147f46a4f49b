//! `tandem demo`: two throwaway local PostgreSQL clusters, the sample legacy schema on A and
//! the new one on B, tandem installed on both and syncing live; a scripted scene, then a live
//! feed of every change until Ctrl-C, then everything is removed.
//!
//! Environment (for tests and CI):
//! - `TANDEM_DEMO_SECONDS=N`: end the live phase after N seconds, as Ctrl-C would.
//! - `TANDEM_DEMO_PAUSE_MS=N`: pause between scene steps (default 1500).

mod scene;
mod show;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio_postgres::{Client, NoTls};

use super::CliError;
use crate::cluster::Cluster;
use crate::config::{self, Config, Side};
use crate::endpoint;
use show::{pg_error, Row, Table, A_ITEMS, A_ORDERS, B_ITEMS, B_ORDERS};

const A_SCHEMA: &str = include_str!("../../sql/demo/a_legacy.sql");
const B_SCHEMA: &str = include_str!("../../sql/demo/b_new.sql");
const CONFIG: &str = include_str!("../../sql/demo/tandem.toml");

/// The database created in each cluster.
const DB: &str = "demo";

/// How often the live phase reads the tables.
const LIVE_POLL: Duration = Duration::from_millis(250);

/// How long stopping the sync may take before its task is abandoned.
const SYNC_STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Settings read from the environment.
struct Options {
    /// End the live phase after this long (`TANDEM_DEMO_SECONDS`).
    live_for: Option<Duration>,
    /// Pause between scene steps (`TANDEM_DEMO_PAUSE_MS`).
    pause: Duration,
}

impl Options {
    fn from_env() -> Result<Options, CliError> {
        let live_for = match std::env::var("TANDEM_DEMO_SECONDS") {
            Ok(v) => match v.trim().parse::<f64>() {
                Ok(s) if s.is_finite() && s >= 0.0 => Some(Duration::from_secs_f64(s)),
                _ => {
                    return Err(CliError::Setup(format!(
                        "TANDEM_DEMO_SECONDS must be a number of seconds, got {v:?}"
                    )))
                }
            },
            Err(_) => None,
        };
        let pause = match std::env::var("TANDEM_DEMO_PAUSE_MS") {
            Ok(v) => Duration::from_millis(v.trim().parse::<u64>().map_err(|_| {
                CliError::Setup(format!(
                    "TANDEM_DEMO_PAUSE_MS must be a number of milliseconds, got {v:?}"
                ))
            })?),
            Err(_) => Duration::from_millis(1500),
        };
        Ok(Options { live_for, pause })
    }
}

/// The two clusters; dropping them stops and removes them.
struct Clusters {
    a: Cluster,
    b: Cluster,
}

/// Runs the demo.
pub async fn run() -> Result<(), CliError> {
    crate::cluster::stop_all_at_exit();
    let options = Options::from_env()?;

    // Listening from the start means Ctrl-C during setup no longer kills the process (which
    // would leave the clusters behind) but leads to the normal teardown below.
    let (stop_tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        super::run::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    println!("tandem demo: starting two throwaway PostgreSQL clusters …");
    let clusters = start_clusters(stop.clone()).await;
    let result = match clusters {
        Ok(clusters) => {
            let result = demo(&clusters, &options, stop).await;
            teardown(clusters).await;
            result
        }
        Err(e) => Err(e),
    };
    signals.abort();
    result
}

/// Starts both clusters in parallel (each takes a second or two: `initdb`, then start).
async fn start_clusters(mut stop: watch::Receiver<bool>) -> Result<Clusters, CliError> {
    let a = tokio::task::spawn_blocking(|| Cluster::start("demo-a"));
    let b = tokio::task::spawn_blocking(|| Cluster::start("demo-b"));
    let both = async { (a.await, b.await) };
    tokio::pin!(both);
    let (a, b) = tokio::select! {
        r = &mut both => r,
        _ = stopped(&mut stop) => {
            // A started cluster can only be removed once its start has finished.
            println!("stopping: waiting for the clusters to finish starting, to remove them …");
            both.await
        }
    };
    let mut started = Vec::new();
    let mut errors = Vec::new();
    for (side, joined) in [("A", a), ("B", b)] {
        match joined {
            Ok(Ok(cluster)) => started.push(cluster),
            // The message says how to install PostgreSQL when that is what is missing.
            Ok(Err(e)) => errors.push(CliError::Setup(format!(
                "cannot start the demo's PostgreSQL cluster {side}: {e}"
            ))),
            Err(e) => errors.push(CliError::Setup(format!(
                "starting the demo's PostgreSQL cluster {side}: {e}"
            ))),
        }
    }
    if errors.is_empty() {
        if let (Some(b), Some(a)) = (started.pop(), started.pop()) {
            return Ok(Clusters { a, b });
        }
    }
    // Whichever cluster did start is stopped and removed before reporting.
    drop_blocking(started).await;
    Err(errors
        .into_iter()
        .next()
        .unwrap_or_else(|| CliError::Setup("the demo's clusters did not start".into())))
}

/// Stops and removes the clusters, off the async threads (their Drop waits for `pg_ctl`).
async fn teardown(clusters: Clusters) {
    let dirs = [
        clusters.a.dir().to_path_buf(),
        clusters.b.dir().to_path_buf(),
    ];
    drop_blocking(clusters).await;
    let left: Vec<&PathBuf> = dirs.iter().filter(|d| d.exists()).collect();
    if left.is_empty() {
        println!(
            "cleaned up: both clusters stopped and removed ({}, {})",
            dirs[0].display(),
            dirs[1].display()
        );
    } else {
        println!(
            "cleaned up, but could not remove {}; delete it by hand",
            left.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" and ")
        );
    }
}

async fn drop_blocking<T: Send + 'static>(value: T) {
    let _ = tokio::task::spawn_blocking(move || drop(value)).await;
}

/// Resolves once `stop` turns true (never if its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Runs `work` unless `stop` turns true first; `Ok(None)` when stopped.
async fn until_stopped<T>(
    mut stop: watch::Receiver<bool>,
    work: impl Future<Output = Result<T, CliError>>,
) -> Result<Option<T>, CliError> {
    if *stop.borrow() {
        return Ok(None);
    }
    tokio::select! {
        r = work => r.map(Some),
        _ = stopped(&mut stop) => {
            println!();
            println!("stopping …");
            Ok(None)
        }
    }
}

/// Everything between starting and removing the clusters; Ctrl-C ends it early, and the
/// sync, once started, is always stopped before returning.
async fn demo(
    clusters: &Clusters,
    options: &Options,
    stop: watch::Receiver<bool>,
) -> Result<(), CliError> {
    let Some((config, config_path, a, b)) = until_stopped(stop.clone(), setup(clusters)).await?
    else {
        return Ok(());
    };
    intro(clusters, &config, &config_path);

    let sides = super::open_sides(&config)?;
    let (sync_stop, sync_stopped) = watch::channel(false);
    let sync_task = tokio::spawn(crate::sync::run(config.clone(), sides, sync_stopped));
    println!();
    println!("Sync service started (its log goes to stderr).");

    let scene = async {
        scene::Scene {
            a: &a,
            b: &b,
            pause: options.pause,
        }
        .play()
        .await?;
        tokio::time::sleep(options.pause).await;
        summary(&a, &b, &config).await;
        Ok(())
    };
    let outcome = until_stopped(stop.clone(), scene).await;
    if let Ok(Some(())) = outcome {
        live(
            &clusters.a.url(DB),
            &clusters.b.url(DB),
            options.live_for,
            stop,
        )
        .await;
    }

    println!("Stopping the sync: finishing the batches in flight …");
    let _ = sync_stop.send(true);
    match tokio::time::timeout(SYNC_STOP_TIMEOUT, sync_task).await {
        Ok(_) => println!("sync stopped"),
        Err(_) => println!(
            "the sync did not stop within {} s; removing the clusters anyway",
            SYNC_STOP_TIMEOUT.as_secs()
        ),
    }
    outcome.map(|_| ())
}

/// Creates the databases, loads the sample schemas, writes the config and installs tandem.
async fn setup(clusters: &Clusters) -> Result<(Arc<Config>, PathBuf, Client, Client), CliError> {
    let a_url = clusters.a.url(DB);
    let b_url = clusters.b.url(DB);
    create_database(&clusters.a.url("postgres"), "A").await?;
    create_database(&clusters.b.url("postgres"), "B").await?;
    let a = connect(&a_url, "A").await?;
    let b = connect(&b_url, "B").await?;
    a.batch_execute(A_SCHEMA).await.map_err(|e| {
        CliError::Setup(format!(
            "loading sql/demo/a_legacy.sql into A: {}",
            pg_error(&e)
        ))
    })?;
    b.batch_execute(B_SCHEMA).await.map_err(|e| {
        CliError::Setup(format!(
            "loading sql/demo/b_new.sql into B: {}",
            pg_error(&e)
        ))
    })?;

    // The config lives in cluster A's directory, so it goes away with the clusters (also
    // after a kill: the next cluster start sweeps dead runs' directories).
    let config_path = clusters.a.dir().join("tandem.toml");
    let text = CONFIG
        .replace("${TANDEM_A_URL}", &a_url)
        .replace("${TANDEM_B_URL}", &b_url);
    std::fs::write(&config_path, text)
        .map_err(|e| CliError::Setup(format!("writing {}: {e}", config_path.display())))?;
    let config = Arc::new(config::load(&config_path)?);
    for side in [Side::A, Side::B] {
        endpoint::open(config.clone(), side)?.install().await?;
    }
    Ok((config, config_path, a, b))
}

async fn connect(url: &str, side: &str) -> Result<Client, CliError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| CliError::Setup(format!("connecting to {side} ({url}): {}", pg_error(&e))))?;
    tokio::spawn(async move {
        // Ends when the client is dropped or the server goes away; either is reported by the
        // next query.
        let _ = connection.await;
    });
    Ok(client)
}

async fn create_database(admin_url: &str, side: &str) -> Result<(), CliError> {
    connect(admin_url, side)
        .await?
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .await
        .map_err(|e| {
            CliError::Setup(format!(
                "creating database {DB} on {side}: {}",
                pg_error(&e)
            ))
        })
}

/// Where everything is, what is mapped to what, and how to play along.
fn intro(clusters: &Clusters, config: &Config, config_path: &Path) {
    let exe = std::env::args().next().unwrap_or_else(|| "tandem".into());
    println!();
    println!("Two PostgreSQL clusters are running, each with a database `{DB}`:");
    println!(
        "  A (the legacy system)  {}   tables dbo.\"ORDERS\", dbo.\"ORDER_ITEMS\"",
        clusters.a.url(DB)
    );
    println!(
        "  B (the new system)     {}   tables public.orders, public.order_items",
        clusters.b.url(DB)
    );
    println!(
        "  config                 {}   (sql/demo/tandem.toml with these URLs)",
        config_path.display()
    );
    println!("tandem is installed on both: its schema `tandem` (outbox, id_map) and a capture trigger per table.");
    println!();
    println!("What is synchronised (from the config):");
    for entity in &config.entities {
        print_entity(entity);
    }
    println!();
    println!("Play along from another terminal; your changes are synchronised too:");
    println!("  psql {}      # A", clusters.a.url(DB));
    println!("  psql {}      # B", clusters.b.url(DB));
    println!("  {exe} status --config {}", config_path.display());
}

fn print_entity(entity: &config::Entity) {
    let keys = |side: Side| entity.side(side).key.join(", ");
    println!(
        "  {:<11} A {} ({}) ⇄ B {} ({})",
        entity.name,
        entity.a.table,
        keys(Side::A),
        entity.b.table,
        keys(Side::B)
    );
    let columns: Vec<String> = entity
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} ⇄ {}", c.a, c.b);
            if let Some(values) = &c.values {
                let pairs: Vec<String> = values
                    .pairs
                    .iter()
                    .map(|(a, b)| format!("{}={}", bare(a), bare(b)))
                    .collect();
                s.push_str(&format!(" [{}]", pairs.join(" ")));
            }
            if let Some(parent) = &c.parent {
                s.push_str(&format!(" (via the id links of {parent})"));
            }
            s
        })
        .collect();
    println!("  {:<11} {}", "", columns.join(", "));
    for side in [Side::A, Side::B] {
        if !entity.key_is_given(side) {
            let mut s = format!("{side} generates its own key");
            if let Some(peer) = &entity.side(side).peer_id_column {
                s.push_str(&format!("; its {peer} shows the key in {}", side.other()));
            }
            println!("  {:<11} {s}", "");
        }
    }
}

fn bare(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Both sides after the scene, and the id links that join them.
async fn summary(a: &Client, b: &Client, config: &Config) {
    println!();
    println!("Both sides now:");
    for (client, table) in [(a, &A_ORDERS), (b, &B_ORDERS), (a, &A_ITEMS), (b, &B_ITEMS)] {
        match table.rows(client, "").await {
            Ok(rows) => table.print(&rows),
            Err(e) => println!("  ({e})"),
        }
    }
    let schema = &config.a.schema;
    let sql = format!(
        "SELECT entity, a_key, b_key FROM \"{}\".id_map WHERE NOT deleted ORDER BY entity, a_key",
        schema.replace('"', "\"\"")
    );
    println!("  id links ({schema}.id_map on A; B holds the same)");
    match a.query(sql.as_str(), &[]).await {
        Ok(rows) => {
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    (0..3)
                        .map(|i| {
                            r.try_get::<_, Option<String>>(i)
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect()
                })
                .collect();
            let header = ["entity", "key in A", "key in B"].map(String::from);
            show::print_aligned(&header, &body);
        }
        Err(e) => println!("    (could not read the id links: {})", pg_error(&e)),
    }
}

/// One side's tables in the live phase, with what was last read.
struct Watch<'a> {
    url: &'a str,
    side: &'static str,
    client: Option<Client>,
    tables: Vec<(&'static Table, Vec<Row>)>,
    last_error: Option<String>,
    truncated: bool,
}

impl Watch<'_> {
    /// Reads every table; returns the changes since the last read (none on the first).
    async fn poll(&mut self, first: bool) -> Vec<String> {
        match self.read().await {
            Ok(now) => {
                self.last_error = None;
                let mut lines = Vec::new();
                for ((table, before), rows) in self.tables.iter_mut().zip(now) {
                    if !first {
                        for change in show::diff(table, before, &rows) {
                            lines.push(format!("{} {:<18} {change}", table.side, table.label));
                        }
                    }
                    if rows.len() >= show::ROW_LIMIT && !self.truncated {
                        self.truncated = true;
                        lines.push(format!(
                            "{} {:<18} has {} rows or more: only changes among the first {} are shown",
                            table.side,
                            table.label,
                            show::ROW_LIMIT,
                            show::ROW_LIMIT
                        ));
                    }
                    *before = rows;
                }
                lines
            }
            Err(e) => {
                // Once per distinct error: a table dropped with psql should not flood the
                // screen twice a second.
                let repeated = self.last_error.as_deref() == Some(e.as_str());
                self.last_error = Some(e.clone());
                if repeated {
                    Vec::new()
                } else {
                    vec![format!("{} (cannot read: {e})", self.side)]
                }
            }
        }
    }

    async fn read(&mut self) -> Result<Vec<Vec<Row>>, String> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(
                connect(self.url, self.side)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        let Some(client) = self.client.as_ref() else {
            return Err("not connected".into());
        };
        let mut all = Vec::with_capacity(self.tables.len());
        for (table, _) in &self.tables {
            all.push(table.rows(client, "").await?);
        }
        Ok(all)
    }
}

/// Prints every change to the four tables until stopped (or for `live_for`).
async fn live(
    a_url: &str,
    b_url: &str,
    live_for: Option<Duration>,
    mut stop: watch::Receiver<bool>,
) {
    println!();
    println!("Sync is live: change either database with psql and watch the changes arrive here.");
    println!("Ctrl-C stops the sync and removes both clusters.");
    if let Some(d) = live_for {
        println!(
            "(TANDEM_DEMO_SECONDS is set: stopping after {:.1} s)",
            d.as_secs_f64()
        );
    }
    let mut watches = [
        Watch {
            url: a_url,
            side: "A",
            client: None,
            tables: vec![(&A_ORDERS, Vec::new()), (&A_ITEMS, Vec::new())],
            last_error: None,
            truncated: false,
        },
        Watch {
            url: b_url,
            side: "B",
            client: None,
            tables: vec![(&B_ORDERS, Vec::new()), (&B_ITEMS, Vec::new())],
            last_error: None,
            truncated: false,
        },
    ];
    let deadline = live_for.map(|d| Instant::now() + d);
    let mut first = true;
    loop {
        for w in &mut watches {
            for line in w.poll(first).await {
                println!("  {}  {line}", chrono::Local::now().format("%H:%M:%S%.3f"));
            }
        }
        first = false;
        let wait = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    println!();
                    println!("TANDEM_DEMO_SECONDS reached: stopping …");
                    return;
                }
                left.min(LIVE_POLL)
            }
            None => LIVE_POLL,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(&mut stop) => {
                println!();
                println!("stopping …");
                return;
            }
        }
    }
}
