//! The two clusters (A and B) every tool runs on, connections to them, and `pgbench`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use tandem::cluster::{self, Cluster};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use super::procs::{run_ok, Res};

/// The runtime that drives the connections; the benchmark itself is plain blocking code.
pub fn rt() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"))
    })
}

/// Longest any single statement may take (a 100,000-row load, a big UPDATE).
pub const STATEMENT_LIMIT: Duration = Duration::from_secs(1800);

/// One connection to one database.
pub struct Db {
    pub url: String,
    client: Client,
}

impl Db {
    /// Connects (10 s limit).
    pub fn connect(url: &str) -> Res<Db> {
        let url_owned = url.to_string();
        let client = rt().block_on(async move {
            let (client, conn) = tokio::time::timeout(
                Duration::from_secs(10),
                tokio_postgres::connect(&url_owned, NoTls),
            )
            .await
            .map_err(|_| format!("connecting to {url_owned}: timed out"))?
            .map_err(|e| format!("connecting to {url_owned}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, String>(client)
        })?;
        Ok(Db {
            url: url.to_string(),
            client,
        })
    }

    /// Runs statements (simple protocol), within `limit`.
    pub fn exec_within(&self, sql: &str, limit: Duration) -> Res<()> {
        rt().block_on(async {
            tokio::time::timeout(limit, self.client.batch_execute(sql))
                .await
                .map_err(|_| format!("{}: timed out after {limit:?}", short(sql)))?
                .map_err(|e| format!("{}: {}", short(sql), describe(&e)))
        })
    }

    /// Runs statements (simple protocol).
    pub fn exec(&self, sql: &str) -> Res<()> {
        self.exec_within(sql, STATEMENT_LIMIT)
    }

    /// Rows in text form (NULL as `None`).
    pub fn rows_within(&self, sql: &str, limit: Duration) -> Res<Vec<Vec<Option<String>>>> {
        let msgs = rt().block_on(async {
            tokio::time::timeout(limit, self.client.simple_query(sql))
                .await
                .map_err(|_| format!("{}: timed out after {limit:?}", short(sql)))?
                .map_err(|e| format!("{}: {}", short(sql), describe(&e)))
        })?;
        Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// Rows in text form.
    pub fn rows(&self, sql: &str) -> Res<Vec<Vec<Option<String>>>> {
        self.rows_within(sql, STATEMENT_LIMIT)
    }

    /// The first column of the first row (`None` for no row or NULL).
    pub fn one(&self, sql: &str) -> Res<Option<String>> {
        Ok(self
            .rows(sql)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// [`Db::one`] with a short limit, for polling.
    pub fn poll_one(&self, sql: &str) -> Res<Option<String>> {
        Ok(self
            .rows_within(sql, Duration::from_secs(10))?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

fn short(sql: &str) -> String {
    let one_line = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 100 {
        format!("{}…", one_line.chars().take(100).collect::<String>())
    } else {
        one_line
    }
}

/// Quotes an SQL string literal.
pub fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// What the clusters offer, found once they run.
#[derive(Debug, Clone, Default)]
pub struct Offers {
    pub pglogical: bool,
    pub plperl: bool,
    pub server_version: String,
}

/// Clusters A and B, set up for every tool: logical decoding, commit timestamps (latency),
/// `pg_stat_statements` (off unless a database turns it on) and pglogical when installed.
pub struct Clusters {
    pub a: Cluster,
    pub b: Cluster,
    pub bindir: PathBuf,
    pub offers: Offers,
}

/// Settings for both clusters on top of `tandem::cluster`'s (fsync off, synchronous_commit
/// on, full_page_writes off). Same for every tool.
fn settings(offers: &Offers, has_plugin_list: bool) -> String {
    let mut preload = vec!["pg_stat_statements"];
    if offers.pglogical {
        preload.push("pglogical");
    }
    let mut s = String::new();
    let _ = writeln!(s, "ALTER SYSTEM SET wal_level = logical;");
    let _ = writeln!(s, "ALTER SYSTEM SET max_replication_slots = 32;");
    let _ = writeln!(s, "ALTER SYSTEM SET max_wal_senders = 32;");
    let _ = writeln!(s, "ALTER SYSTEM SET max_worker_processes = 32;");
    let _ = writeln!(s, "ALTER SYSTEM SET max_logical_replication_workers = 16;");
    let _ = writeln!(s, "ALTER SYSTEM SET track_commit_timestamp = on;");
    let _ = writeln!(s, "ALTER SYSTEM SET shared_buffers = '256MB';");
    let _ = writeln!(s, "ALTER SYSTEM SET max_wal_size = '4GB';");
    let _ = writeln!(s, "ALTER SYSTEM SET max_connections = 200;");
    let _ = writeln!(
        s,
        "ALTER SYSTEM SET shared_preload_libraries = {};",
        preload.join(", ")
    );
    if has_plugin_list && offers.pglogical {
        // Debian's PostgreSQL 15.19+ only lets replication users pick listed output plugins.
        let _ = writeln!(
            s,
            "ALTER SYSTEM SET output_plugin_libraries = pgoutput, test_decoding, pglogical_output;"
        );
    }
    s
}

impl Clusters {
    /// Starts both clusters, applies [`settings`], restarts them.
    pub fn start() -> Res<Clusters> {
        cluster::stop_all_at_exit();
        let bindir = cluster::find_bindir().map_err(|e| e.to_string())?;
        let (a, b) = std::thread::scope(|s| {
            let a = s.spawn(|| Cluster::start("bench-a"));
            let b = Cluster::start("bench-b");
            (a.join(), b)
        });
        let a = a
            .map_err(|_| "starting cluster A panicked".to_string())?
            .map_err(|e| format!("cluster A: {e}"))?;
        let b = b.map_err(|e| format!("cluster B: {e}"))?;
        let probe = Db::connect(&a.url("postgres"))?;
        let has = |name: &str| -> Res<bool> {
            Ok(probe.one(&format!(
                "SELECT count(*) FROM pg_available_extensions WHERE name = {}",
                lit(name)
            ))? == Some("1".to_string()))
        };
        let offers = Offers {
            pglogical: has("pglogical")?,
            plperl: has("plperlu")?,
            server_version: probe.one("SHOW server_version")?.unwrap_or_default(),
        };
        let has_plugin_list = probe
            .one("SELECT count(*) FROM pg_settings WHERE name = 'output_plugin_libraries'")?
            == Some("1".to_string());
        drop(probe);
        let sql = settings(&offers, has_plugin_list);
        for (name, c) in [("A", &a), ("B", &b)] {
            let db = Db::connect(&c.url("postgres"))?;
            // One at a time: ALTER SYSTEM refuses to run inside a (multi-statement) transaction.
            for stmt in sql.lines().filter(|l| !l.trim().is_empty()) {
                db.exec(stmt)
                    .map_err(|e| format!("settings on {name}: {e}"))?;
            }
            drop(db);
            c.stop().map_err(|e| format!("restarting {name}: {e}"))?;
            c.start_again()
                .map_err(|e| format!("restarting {name}: {e}"))?;
            // Known only once the library is loaded. Off, unless a database turns it on (the
            // tandem W1 run, to see where its time goes).
            let db = Db::connect(&c.url("postgres"))?;
            db.exec("ALTER SYSTEM SET pg_stat_statements.track = none")?;
            db.exec("SELECT pg_reload_conf()")?;
        }
        let check = Db::connect(&a.url("postgres"))?;
        let wal = check.one("SHOW wal_level")?.unwrap_or_default();
        if wal != "logical" {
            return Err(format!("cluster A runs with wal_level {wal}, not logical"));
        }
        Ok(Clusters {
            a,
            b,
            bindir,
            offers,
        })
    }

    /// A pair of new databases of this name (unique within a run).
    pub fn fresh_pair(&self, name: &str) -> Res<Pair> {
        for (side, c) in [("A", &self.a), ("B", &self.b)] {
            c.create_database(name)
                .map_err(|e| format!("creating {name} on {side}: {e}"))?;
        }
        Ok(Pair {
            name: name.to_string(),
            a: Db::connect(&self.a.url(name))?,
            b: Db::connect(&self.b.url(name))?,
            a_port: self.a.port(),
            b_port: self.b.port(),
        })
    }

    /// Empties a pair's databases and drops any replication slot left for it on A.
    ///
    /// The databases themselves stay until the clusters go: with pglogical loaded, `DROP
    /// DATABASE` waits forever for pglogical's supervisor to accept a ProcSignalBarrier
    /// (pglogical 2.4.2 on PostgreSQL 15), so nothing here drops a database.
    pub fn retire_pair(&self, pair: Pair) -> Res<()> {
        let name = pair.name.clone();
        for db in [&pair.a, &pair.b] {
            // Whatever a tool left running there (a Bucardo query that outlived its daemon)
            // must not hold locks or burn CPU into the next measurement.
            db.exec(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND backend_type = 'client backend'",
            )?;
            db.exec(
                "DROP SCHEMA public CASCADE; CREATE SCHEMA public; \
                 DROP SCHEMA IF EXISTS tandem CASCADE; DROP SCHEMA IF EXISTS bucardo CASCADE;",
            )?;
        }
        drop(pair);
        let admin = Db::connect(&self.a.url("postgres"))?;
        admin.exec(&format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE database = {} AND NOT active",
            lit(&name)
        ))
    }

    /// `pgbench` against database `db` of cluster A.
    pub fn pgbench(&self, db: &str, run: &Pgbench) -> Res<PgbenchResult> {
        pgbench(&self.bindir, self.a.port(), db, run)
    }
}

/// A database of the same name on A and on B.
pub struct Pair {
    pub name: String,
    pub a: Db,
    pub b: Db,
    pub a_port: u16,
    pub b_port: u16,
}

impl Pair {
    /// A libpq connection string for side A's database.
    pub fn a_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user=postgres",
            self.a_port, self.name
        )
    }

    /// A libpq connection string for side B's database.
    pub fn b_dsn(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user=postgres",
            self.b_port, self.name
        )
    }
}

/// One pgbench run.
pub struct Pgbench {
    pub script: String,
    pub clients: u32,
    /// Transactions in total (split over the clients), or
    pub transactions: Option<u64>,
    /// seconds.
    pub seconds: Option<u64>,
    /// Target transactions per second (`-R`).
    pub rate: Option<u64>,
    /// `-D name=value`.
    pub vars: Vec<(String, String)>,
}

/// What pgbench reported.
#[derive(Debug, Clone)]
pub struct PgbenchResult {
    pub tps: f64,
    pub transactions: u64,
}

fn pgbench(bindir: &std::path::Path, port: u16, db: &str, run: &Pgbench) -> Res<PgbenchResult> {
    let dir = std::env::temp_dir();
    let script = dir.join(format!(
        "tandem-bench-{}-{}.sql",
        std::process::id(),
        db.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    std::fs::write(&script, &run.script)
        .map_err(|e| format!("writing {}: {e}", script.display()))?;
    let mut cmd = Command::new(bindir.join("pgbench"));
    cmd.args([
        "-n",
        "-h",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-U",
        "postgres",
    ])
    .arg("-f")
    .arg(&script)
    .args(["-c", &run.clients.to_string()])
    .args(["-j", &run.clients.clamp(1, 2).to_string()])
    .arg("--random-seed=20261121");
    let limit = match (run.transactions, run.seconds) {
        (Some(n), _) => {
            let per_client = n.div_ceil(u64::from(run.clients.max(1)));
            cmd.args(["-t", &per_client.to_string()]);
            Duration::from_secs(3600)
        }
        (None, Some(s)) => {
            cmd.args(["-T", &s.to_string()]);
            Duration::from_secs(s + 120)
        }
        (None, None) => return Err("pgbench needs -t or -T".into()),
    };
    if let Some(r) = run.rate {
        cmd.args(["-R", &r.to_string()]);
    }
    for (k, v) in &run.vars {
        cmd.args(["-D", &format!("{k}={v}")]);
    }
    cmd.arg(db);
    for var in ["PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGOPTIONS"] {
        cmd.env_remove(var);
    }
    let out = run_ok(cmd, "pgbench", limit);
    let _ = std::fs::remove_file(&script);
    let out = out?;
    let field = |prefix: &str| -> Option<String> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix).map(|r| r.trim().to_string()))
    };
    let tps = field("tps =")
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("pgbench printed no tps:\n{out}"))?;
    let transactions = field("number of transactions actually processed:")
        .and_then(|v| v.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    Ok(PgbenchResult { tps, transactions })
}
