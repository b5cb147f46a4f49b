//! `tandem demo`: two throwaway local PostgreSQL clusters, the sample legacy schema on A and
//! the new one on B, tandem installed on both and syncing live; a scripted scene, then a live
//! feed of every change until Ctrl-C, then everything is removed.
//!
//! `tandem demo --a mssql`: the same with A on SQL Server (or Babelfish): a fresh database on
//! the server named by `--mssql-url` / `$TANDEM_DEMO_MSSQL_URL` gets `sql/mssql/demo_a.sql`,
//! and is dropped at the end; B is a throwaway PostgreSQL cluster as before.
//!
//! Environment (for tests and CI):
//! - `TANDEM_DEMO_SECONDS=N`: end the live phase after N seconds, as Ctrl-C would.
//! - `TANDEM_DEMO_PAUSE_MS=N`: pause between scene steps (default 1500).

mod mssql;
mod scene;
mod show;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::{CliError, DemoEngine};
use crate::cluster::Cluster;
use crate::config::{self, Config, Secret, Side};
use crate::endpoint;
use show::{Db, Dialect, Row, Table, Target, A_ITEMS, A_ORDERS, B_ITEMS, B_ORDERS};

const A_SCHEMA: &str = include_str!("../../sql/demo/a_legacy.sql");
const MS_A_SCHEMA: &str = include_str!("../../sql/mssql/demo_a.sql");
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

/// Where A runs.
enum APlace {
    /// A throwaway cluster (dropping it stops and removes it).
    Cluster(Cluster),
    /// The demo's own database on a SQL Server (dropped by [`teardown`]).
    Mssql(mssql::Database),
}

/// Where both sides run.
struct Places {
    a: APlace,
    b: Cluster,
}

impl Places {
    fn a_target(&self) -> Target {
        match &self.a {
            APlace::Cluster(c) => Target::Pg(c.url(DB)),
            APlace::Mssql(d) => Target::Ms(d.url.clone()),
        }
    }

    fn b_target(&self) -> Target {
        Target::Pg(self.b.url(DB))
    }

    fn on_mssql(&self) -> bool {
        matches!(self.a, APlace::Mssql(_))
    }

    /// Where the config is written: a cluster directory, so that it goes away with the
    /// clusters (also after a kill: the next cluster start sweeps dead runs' directories).
    fn config_dir(&self) -> &Path {
        match &self.a {
            APlace::Cluster(a) => a.dir(),
            APlace::Mssql(_) => self.b.dir(),
        }
    }
}

/// The SQL Server for `--a mssql`, from `--mssql-url` or `$TANDEM_DEMO_MSSQL_URL`.
fn server(url: Option<Secret>) -> Result<mssql::Server, CliError> {
    let Some(url) = url else {
        return Err(CliError::Setup(
            "tandem demo --a mssql needs a SQL Server to create its database A on: give \
             --mssql-url 'server=tcp:HOST,1433;user=USER;password=PASSWORD;TrustServerCertificate=true' \
             or set TANDEM_DEMO_MSSQL_URL to that string (bash deploy/demo.sh --a mssql starts \
             Babelfish when ../shared/babelfish or $TANDEM_BABELFISH_HOME is there)"
                .into(),
        ));
    };
    // clap takes the option over the variable: equal to the variable, it came from there.
    let source = if std::env::var("TANDEM_DEMO_MSSQL_URL").ok().as_deref() == Some(url.expose()) {
        "$TANDEM_DEMO_MSSQL_URL"
    } else {
        "--mssql-url"
    };
    mssql::Server::new(url.expose().to_string(), source)
}

/// Runs the demo; A on a PostgreSQL cluster, or on SQL Server (`engine` `Mssql`, at `mssql_url`).
pub async fn run(engine: DemoEngine, mssql_url: Option<Secret>) -> Result<(), CliError> {
    let server = match engine {
        DemoEngine::Postgres => None,
        DemoEngine::Mssql => Some(server(mssql_url)?),
    };
    crate::cluster::stop_all_at_exit();
    let options = Options::from_env()?;

    // Listening from the start means Ctrl-C during setup no longer kills the process (which
    // would leave the clusters behind) but leads to the normal teardown below.
    let (stop_tx, stop) = watch::channel(false);
    let signals = tokio::spawn(async move {
        super::run::wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let places = match server {
        None => {
            println!("tandem demo: starting two throwaway PostgreSQL clusters …");
            start_clusters(stop.clone()).await.map(|(a, b)| Places {
                a: APlace::Cluster(a),
                b,
            })
        }
        Some(server) => {
            println!(
                "tandem demo: A on SQL Server {} (connection string from {}): creating a database \
                 there; B: starting a throwaway PostgreSQL cluster …",
                server.target, server.source
            );
            start_on_mssql(&server).await
        }
    };
    let result = match places {
        Ok(places) => {
            let result = demo(&places, &options, stop).await;
            teardown(places).await;
            result
        }
        Err(e) => Err(e),
    };
    signals.abort();
    result
}

/// Creates A's database on SQL Server while B's cluster starts. Neither is cut short by
/// Ctrl-C (both take seconds at most): what was made is removed before returning.
async fn start_on_mssql(server: &mssql::Server) -> Result<Places, CliError> {
    let b = tokio::task::spawn_blocking(|| Cluster::start("demo-b"));
    let a = mssql::create_database(server).await;
    let b = cluster_started("B", b.await);
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(Places {
            a: APlace::Mssql(a),
            b,
        }),
        (Ok(a), Err(e)) => {
            drop_ms_database(&a).await;
            Err(e)
        }
        (Err(e), b) => {
            if let Ok(b) = b {
                drop_blocking(b).await;
            }
            Err(e)
        }
    }
}

/// A cluster start's outcome; the message says how to install PostgreSQL when that is what
/// is missing.
fn cluster_started(
    side: &str,
    joined: Result<crate::cluster::Result<Cluster>, tokio::task::JoinError>,
) -> Result<Cluster, CliError> {
    match joined {
        Ok(Ok(cluster)) => Ok(cluster),
        Ok(Err(e)) => Err(CliError::Setup(format!(
            "cannot start the demo's PostgreSQL cluster {side}: {e}"
        ))),
        Err(e) => Err(CliError::Setup(format!(
            "starting the demo's PostgreSQL cluster {side}: {e}"
        ))),
    }
}

/// Starts both clusters in parallel (each takes a second or two: `initdb`, then start).
async fn start_clusters(mut stop: watch::Receiver<bool>) -> Result<(Cluster, Cluster), CliError> {
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
        match cluster_started(side, joined) {
            Ok(cluster) => started.push(cluster),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        if let (Some(b), Some(a)) = (started.pop(), started.pop()) {
            return Ok((a, b));
        }
    }
    // Whichever cluster did start is stopped and removed before reporting.
    drop_blocking(started).await;
    Err(errors
        .into_iter()
        .next()
        .unwrap_or_else(|| CliError::Setup("the demo's clusters did not start".into())))
}

/// Stops and removes the clusters, off the async threads (their Drop waits for `pg_ctl`),
/// and drops A's database on SQL Server.
async fn teardown(places: Places) {
    let Places { a, b } = places;
    let a = match a {
        APlace::Cluster(a) => a,
        APlace::Mssql(db) => {
            drop_ms_database(&db).await;
            let dir = b.dir().to_path_buf();
            drop_blocking(b).await;
            if dir.exists() {
                println!(
                    "cleaned up, but could not remove {}; delete it by hand",
                    dir.display()
                );
            } else {
                println!(
                    "cleaned up: cluster B stopped and removed ({})",
                    dir.display()
                );
            }
            return;
        }
    };
    let dirs = [a.dir().to_path_buf(), b.dir().to_path_buf()];
    drop_blocking((a, b)).await;
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

/// Drops A's database on SQL Server, saying so (or how to do it by hand).
async fn drop_ms_database(db: &mssql::Database) {
    match mssql::drop_database(db).await {
        Ok(()) => println!(
            "cleaned up: database {} dropped on SQL Server {}",
            db.name,
            db.target()
        ),
        Err(e) => println!(
            "could not drop the demo's database {} on SQL Server {}: {e}; drop it by hand: DROP DATABASE [{}]",
            db.name,
            db.target(),
            db.name
        ),
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
    places: &Places,
    options: &Options,
    stop: watch::Receiver<bool>,
) -> Result<(), CliError> {
    let Some((config, config_path, a, b)) = until_stopped(stop.clone(), setup(places)).await?
    else {
        return Ok(());
    };
    intro(places, &config, &config_path);

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
    // The scene's sessions end here: on SQL Server, A's database can only be dropped once
    // nobody uses it.
    drop((a, b));
    if let Ok(Some(())) = outcome {
        live(places, options.live_for, stop).await;
    }

    println!("Stopping the sync: finishing the batches in flight …");
    let _ = sync_stop.send(true);
    match tokio::time::timeout(SYNC_STOP_TIMEOUT, sync_task).await {
        Ok(_) => println!("sync stopped"),
        Err(_) => println!(
            "the sync did not stop within {} s; removing the {} anyway",
            SYNC_STOP_TIMEOUT.as_secs(),
            if places.on_mssql() {
                "cluster and A's database"
            } else {
                "clusters"
            }
        ),
    }
    outcome.map(|_| ())
}

/// Creates the databases, loads the sample schemas, writes the config and installs tandem.
async fn setup(places: &Places) -> Result<(Arc<Config>, PathBuf, Db, Db), CliError> {
    let a_target = places.a_target();
    let b_target = places.b_target();
    let (a_url, a_kind, a_schema, a_file) = match &places.a {
        APlace::Cluster(a) => {
            create_database(&a.url("postgres"), "A").await?;
            (a.url(DB), "postgres", A_SCHEMA, "sql/demo/a_legacy.sql")
        }
        // Created when the demo started (so that teardown drops it whatever happens next).
        APlace::Mssql(d) => (d.url.clone(), "mssql", MS_A_SCHEMA, "sql/mssql/demo_a.sql"),
    };
    let b_url = places.b.url(DB);
    create_database(&places.b.url("postgres"), "B").await?;
    let a = a_target.connect("A").await.map_err(CliError::Setup)?;
    let b = b_target.connect("B").await.map_err(CliError::Setup)?;
    a.script(a_schema)
        .await
        .map_err(|e| CliError::Setup(format!("loading {a_file} into A: {e}")))?;
    b.script(B_SCHEMA)
        .await
        .map_err(|e| CliError::Setup(format!("loading sql/demo/b_new.sql into B: {e}")))?;

    let config_path = places.config_dir().join("tandem.toml");
    let text = config_text(&a_url, a_kind, &b_url)?;
    write_private(&config_path, &text)
        .map_err(|e| CliError::Setup(format!("writing {}: {e}", config_path.display())))?;
    let config = Arc::new(config::load(&config_path)?);
    for side in [Side::A, Side::B] {
        endpoint::open(config.clone(), side)?.install().await?;
    }
    Ok((config, config_path, a, b))
}

/// sql/demo/tandem.toml for these databases: A's `kind` and both URLs filled in (as TOML
/// strings, so that an ADO.NET string's quotes and backslashes survive).
fn config_text(a_url: &str, a_kind: &str, b_url: &str) -> Result<String, CliError> {
    let mut text = CONFIG.to_string();
    if a_kind != "postgres" {
        let from = "[a]\nkind = \"postgres\"";
        if !text.contains(from) {
            return Err(CliError::Setup(
                "sql/demo/tandem.toml: [a] does not start with kind = \"postgres\"".into(),
            ));
        }
        text = text.replacen(from, &format!("[a]\nkind = \"{a_kind}\""), 1);
    }
    for (name, url) in [("TANDEM_A_URL", a_url), ("TANDEM_B_URL", b_url)] {
        if url.contains("${") {
            return Err(CliError::Setup(format!(
                "the connection string for {} holds \"${{\", which tandem.toml would read as a variable",
                &name[7..8]
            )));
        }
        let quoted = toml::Value::String(url.to_string()).to_string();
        text = text.replace(&format!("\"${{{name}}}\""), &quoted);
    }
    Ok(text)
}

/// Writes `text` to `path`, readable by this user only (an ADO.NET string holds a password).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

async fn create_database(admin_url: &str, side: &str) -> Result<(), CliError> {
    Target::Pg(admin_url.to_string())
        .connect(side)
        .await
        .map_err(CliError::Setup)?
        .script(&format!("CREATE DATABASE {DB}"))
        .await
        .map_err(|e| CliError::Setup(format!("creating database {DB} on {side}: {e}")))
}

/// Where everything is, what is mapped to what, and how to play along.
fn intro(places: &Places, config: &Config, config_path: &Path) {
    let exe = std::env::args().next().unwrap_or_else(|| "tandem".into());
    let b_url = places.b.url(DB);
    println!();
    match &places.a {
        APlace::Cluster(a) => {
            println!("Two PostgreSQL clusters are running, each with a database `{DB}`:");
            println!(
                "  A (the legacy system)  {}   tables dbo.\"ORDERS\", dbo.\"ORDER_ITEMS\"",
                a.url(DB)
            );
        }
        APlace::Mssql(d) => {
            println!(
                "A is a new database `{}` on SQL Server {}; B a PostgreSQL cluster with a database `{DB}`:",
                d.name,
                d.target()
            );
            println!(
                "  A (the legacy system)  {}   tables dbo.ORDERS, dbo.ORDER_ITEMS",
                d.shown_url()
            );
            println!(
                "                         (the connection string from {}, password hidden, with database={})",
                d.source, d.name
            );
            if !d.version.is_empty() {
                println!("                         engine: {}", d.version);
            }
        }
    }
    println!("  B (the new system)     {b_url}   tables public.orders, public.order_items");
    let note = if places.on_mssql() {
        "(sql/demo/tandem.toml with these URLs and A's kind = \"mssql\"; only you can read it)"
    } else {
        "(sql/demo/tandem.toml with these URLs)"
    };
    println!(
        "  config                 {}   {note}",
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
    match &places.a {
        APlace::Cluster(a) => println!("  psql {}      # A", a.url(DB)),
        APlace::Mssql(d) => println!(
            "  {}      # A (it asks for the password of the connection string from {})",
            d.sqlcmd(),
            d.source
        ),
    }
    println!("  psql {b_url}      # B");
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
async fn summary(a: &Db, b: &Db, config: &Config) {
    println!();
    println!("Both sides now:");
    for (db, table) in [(a, &A_ORDERS), (b, &B_ORDERS), (a, &A_ITEMS), (b, &B_ITEMS)] {
        match table.rows(db, "").await {
            Ok(rows) => table.print(&rows),
            Err(e) => println!("  ({e})"),
        }
    }
    let schema = &config.a.schema;
    let live = match a.dialect() {
        Dialect::Pg => "WHERE NOT deleted",
        Dialect::Ms => "WHERE deleted = 0",
    };
    println!("  id links ({schema}.id_map on A; B holds the same)");
    let read = a
        .select(
            &["entity", "a_key", "b_key"],
            &format!("{}.id_map", a.quote(schema)),
            live,
            &["entity", "a_key"],
        )
        .await;
    match read {
        Ok(rows) => {
            let body: Vec<Vec<String>> = rows
                .iter()
                .map(|r| r.iter().map(show::plain).collect())
                .collect();
            let header = ["entity", "key in A", "key in B"].map(String::from);
            show::print_aligned(&header, &body);
        }
        Err(e) => println!("    (could not read the id links: {e})"),
    }
}

/// One side's tables in the live phase, with what was last read.
struct Watch {
    target: Target,
    side: &'static str,
    client: Option<Db>,
    tables: Vec<(&'static Table, Vec<Row>)>,
    last_error: Option<String>,
    truncated: bool,
}

impl Watch {
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
            self.client = Some(self.target.connect(self.side).await?);
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
async fn live(places: &Places, live_for: Option<Duration>, mut stop: watch::Receiver<bool>) {
    println!();
    if places.on_mssql() {
        println!(
            "Sync is live: change A with sqlcmd or B with psql and watch the changes arrive here."
        );
        println!("Ctrl-C stops the sync, removes the cluster and drops A's database.");
    } else {
        println!(
            "Sync is live: change either database with psql and watch the changes arrive here."
        );
        println!("Ctrl-C stops the sync and removes both clusters.");
    }
    if let Some(d) = live_for {
        println!(
            "(TANDEM_DEMO_SECONDS is set: stopping after {:.1} s)",
            d.as_secs_f64()
        );
    }
    let mut watches = [
        Watch {
            target: places.a_target(),
            side: "A",
            client: None,
            tables: vec![(&A_ORDERS, Vec::new()), (&A_ITEMS, Vec::new())],
            last_error: None,
            truncated: false,
        },
        Watch {
            target: places.b_target(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DbKind;

    #[test]
    fn config_puts_a_on_sql_server() {
        let a = r#"server=tcp:h,1433;user=u;password="p;w\'x";database=tandem_demo_1"#;
        let b = "postgres://postgres@127.0.0.1:5432/demo";
        let text = config_text(a, "mssql", b).unwrap();
        let config = config::parse(&text, Path::new("tandem.toml"), &|_| None).unwrap();
        assert_eq!(config.a.kind, DbKind::Mssql);
        assert_eq!(config.a.url.expose(), a);
        assert_eq!(config.b.kind, DbKind::Postgres);
        assert_eq!(config.b.url.expose(), b);
        assert!(config_text("password=${X}", "mssql", b).is_err());
    }

    #[test]
    fn config_keeps_both_on_postgres() {
        let text = config_text("postgres://a/demo", "postgres", "postgres://b/demo").unwrap();
        assert_eq!(
            text,
            CONFIG
                .replace("${TANDEM_A_URL}", "postgres://a/demo")
                .replace("${TANDEM_B_URL}", "postgres://b/demo")
        );
    }
}
