//! SQL Server ↔ PostgreSQL next to PostgreSQL ↔ PostgreSQL, measured in the same run, so the
//! ratios (not the absolutes) compare across machines:
//!
//! - insert drain: N new rows at A travel to B (each gets linked);
//! - update drain A→B and B→A: one UPDATE of all N rows at one side, then the drain.
//!
//! The pipeline is the library's `sync::drain` (what `tandem run --once` runs) for every
//! pairing, with the same config and batch size. SQL Server is `TANDEM_TEST_MSSQL_URL`, or
//! Babelfish started by `deploy/bench.sh`; Babelfish runs T-SQL on PostgreSQL and is much
//! slower than SQL Server, so its ratios are a floor for SQL Server, not an estimate.
//!
//! `cargo bench --bench mssql` (rows: `TANDEM_BENCH_MSSQL_ROWS`, default 20000).

use std::sync::Arc;
use std::time::Instant;

use tandem::cluster::Cluster;
use tandem::config::{self, Side};
use tandem::endpoint::mssql::ado;
use tandem::sync::{self, Sides};
use tokio::net::TcpStream;
use tokio_util::compat::{Compat, TokioAsyncWriteCompatExt};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
type Ms = tiberius::Client<Compat<TcpStream>>;

const PG_TABLE: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, \
                        qty integer NOT NULL, price numeric(12,2))";
const MS_TABLE: &str =
    "CREATE TABLE dbo.ITEMS (ID bigint PRIMARY KEY, NAME nvarchar(100) NOT NULL, \
                        QTY int NOT NULL, PRICE decimal(12,2))";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Pg,
    Ms,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Pg => "PostgreSQL",
            Kind::Ms => "SQL Server",
        }
    }
}

/// One side of a pairing, to write to directly.
enum Db {
    Pg(tokio_postgres::Client),
    Ms(Box<Ms>),
}

impl Db {
    async fn exec(&mut self, pg: &str, ms: &str) -> Res<()> {
        match self {
            Db::Pg(c) => c.batch_execute(pg).await?,
            Db::Ms(c) => {
                c.simple_query(ms).await?.into_results().await?;
            }
        }
        Ok(())
    }
}

async fn ms_connect(url: &str) -> Res<Ms> {
    let a = ado::parse(url, Side::A)?;
    let tcp = TcpStream::connect(a.config.get_addr()).await?;
    tcp.set_nodelay(true)?;
    Ok(tiberius::Client::connect(a.config, tcp.compat_write()).await?)
}

async fn pg_connect(url: &str) -> Res<tokio_postgres::Client> {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(c)
}

struct Servers {
    a: Cluster,
    b: Cluster,
    ms: Option<String>,
}

/// A fresh, empty database of `kind` for side `side`; its URL and a connection.
async fn fresh(servers: &Servers, kind: Kind, side: Side, name: &str) -> Res<(String, Db)> {
    match kind {
        Kind::Pg => {
            let cluster = if side == Side::A {
                &servers.a
            } else {
                &servers.b
            };
            cluster.create_database(name)?;
            let url = cluster.url(name);
            let mut db = Db::Pg(pg_connect(&url).await?);
            db.exec(PG_TABLE, "").await?;
            Ok((url, db))
        }
        Kind::Ms => {
            let base = servers.ms.as_deref().ok_or("no SQL Server")?;
            let mut admin = ms_connect(base).await?;
            admin
                .simple_query(format!("CREATE DATABASE [{name}]"))
                .await?
                .into_results()
                .await?;
            let url = ado::with_database(base, name)?;
            let mut db = Db::Ms(Box::new(ms_connect(&url).await?));
            db.exec("", MS_TABLE).await?;
            Ok((url, db))
        }
    }
}

fn config_text(a: Kind, b: Kind) -> String {
    let side = |k: Kind, letter: &str| -> String {
        let kind = if k == Kind::Pg { "postgres" } else { "mssql" };
        format!("[{letter}]\nkind = \"{kind}\"\nurl = \"${{URL_{letter}}}\"\n")
    };
    let (ta, ca) = if a == Kind::Ms {
        ("dbo.ITEMS", ["ID", "NAME", "QTY", "PRICE"])
    } else {
        ("items", ["id", "name", "qty", "price"])
    };
    let (tb, cb) = if b == Kind::Ms {
        ("dbo.ITEMS", ["ID", "NAME", "QTY", "PRICE"])
    } else {
        ("items", ["id", "name", "qty", "price"])
    };
    format!(
        "{}{}[sync]\nbatch_size = 1000\n\n[[entities]]\nname = \"item\"\n\
         a = {{ table = \"{ta}\", key = [\"{}\"] }}\nb = {{ table = \"{tb}\", key = [\"{}\"] }}\n\
         columns = [{{ a = \"{}\", b = \"{}\" }}, {{ a = \"{}\", b = \"{}\" }}, \
         {{ a = \"{}\", b = \"{}\" }}, {{ a = \"{}\", b = \"{}\" }}]\n",
        side(a, "a"),
        side(b, "b"),
        ca[0],
        cb[0],
        ca[0],
        cb[0],
        ca[1],
        cb[1],
        ca[2],
        cb[2],
        ca[3],
        cb[3]
    )
}

/// Rates of one pairing: insert drain rows/s, update drain A→B and B→A changes/s.
async fn pairing(servers: &Servers, a: Kind, b: Kind, n: u64, tag: &str) -> Res<[f64; 3]> {
    let name = format!("bench_{tag}_{}", std::process::id());
    let (a_url, mut a_db) = fresh(servers, a, Side::A, &name).await?;
    let (b_url, mut b_db) = fresh(servers, b, Side::B, &name).await?;
    let text = config_text(a, b);
    let dir = std::env::temp_dir().join(format!("{name}.toml"));
    std::fs::write(&dir, &text)?;
    let env = |v: &str| match v {
        "URL_a" => Some(a_url.clone()),
        "URL_b" => Some(b_url.clone()),
        _ => None,
    };
    let config = Arc::new(config::parse(&text, &dir, &env)?);
    let sides = Sides {
        a: tandem::endpoint::open(config.clone(), Side::A)?,
        b: tandem::endpoint::open(config.clone(), Side::B)?,
    };
    sides.a.install().await?;
    sides.b.install().await?;

    let ids: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let json = format!("[{}]", ids.join(","));
    a_db.exec(
        &format!(
            "INSERT INTO items (id, name, qty, price) \
             SELECT i, 'item ' || i, (i % 100)::int, (i % 1000) / 10.0 FROM generate_series(1, {n}) AS i"
        ),
        &format!(
            "INSERT INTO dbo.ITEMS (ID, NAME, QTY, PRICE) \
             SELECT CONVERT(bigint, value), N'item ' + value, CONVERT(bigint, value) % 100, \
                    (CONVERT(bigint, value) % 1000) / 10.0 FROM OPENJSON(N'{json}')"
        ),
    )
    .await?;
    let timed = |label: &'static str| {
        let config = config.clone();
        let sides = &sides;
        async move {
            let t = Instant::now();
            let r = sync::drain(&config, sides).await?;
            let secs = t.elapsed().as_secs_f64();
            if r.failed > 0 || r.suspended > 0 {
                return Err(format!("{tag} {label}: {} changes failed", r.failed).into());
            }
            eprintln!(
                "{tag} {label}: {} changes in {secs:.2} s ({} written)",
                r.claimed, r.written
            );
            Ok::<f64, Box<dyn std::error::Error>>(r.claimed as f64 / secs)
        }
    };
    let insert = timed("insert drain").await?;
    a_db.exec(
        "UPDATE items SET qty = qty + 1",
        "UPDATE dbo.ITEMS SET QTY = QTY + 1",
    )
    .await?;
    let a_to_b = timed("update drain A→B").await?;
    b_db.exec(
        "UPDATE items SET qty = qty + 1",
        "UPDATE dbo.ITEMS SET QTY = QTY + 1",
    )
    .await?;
    let b_to_a = timed("update drain B→A").await?;
    let _ = std::fs::remove_file(&dir);
    // The SQL Server database goes (best effort; PostgreSQL's go with their clusters).
    drop((sides, a_db, b_db));
    if a == Kind::Ms || b == Kind::Ms {
        if let Some(base) = servers.ms.as_deref() {
            if let Ok(mut admin) = ms_connect(base).await {
                if let Ok(s) = admin.simple_query(format!("DROP DATABASE [{name}]")).await {
                    let _ = s.into_results().await;
                }
            }
        }
    }
    Ok([insert, a_to_b, b_to_a])
}

async fn run() -> Res<()> {
    let n: u64 = std::env::var("TANDEM_BENCH_MSSQL_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    tandem::cluster::stop_all_at_exit();
    let servers = Servers {
        a: Cluster::start("bench-ms-a")?,
        b: Cluster::start("bench-ms-b")?,
        ms: std::env::var("TANDEM_TEST_MSSQL_URL")
            .ok()
            .filter(|u| !u.trim().is_empty()),
    };
    let engine = match &servers.ms {
        Some(url) => {
            let mut c = ms_connect(url).await?;
            let v = c
                .simple_query("SELECT @@VERSION")
                .await?
                .into_row()
                .await?
                .and_then(|r| r.get::<&str, _>(0).map(str::to_string))
                .unwrap_or_default();
            v.lines().next().unwrap_or_default().to_string()
        }
        None => {
            println!(
                "mssql: no SQL Server (set TANDEM_TEST_MSSQL_URL, or run deploy/bench.sh): skipped"
            );
            return Ok(());
        }
    };
    let base = pairing(&servers, Kind::Pg, Kind::Pg, n, "pgpg").await?;
    let mut lines = vec![
        format!("SQL Server: {engine}"),
        format!("{n} rows; the same run; ratios to PostgreSQL ↔ PostgreSQL"),
        String::new(),
        "| pairing (A ↔ B) | insert drain rows/s | update drain A→B /s | update drain B→A /s |"
            .to_string(),
        "|---|---|---|---|".to_string(),
        format!(
            "| PostgreSQL ↔ PostgreSQL | {:.0} | {:.0} | {:.0} |",
            base[0], base[1], base[2]
        ),
    ];
    for (a, b, tag) in [(Kind::Ms, Kind::Pg, "mspg"), (Kind::Pg, Kind::Ms, "pgms")] {
        let r = pairing(&servers, a, b, n, tag).await?;
        lines.push(format!(
            "| {} ↔ {} | {:.0} ({:.2}×) | {:.0} ({:.2}×) | {:.0} ({:.2}×) |",
            a.name(),
            b.name(),
            r[0],
            r[0] / base[0],
            r[1],
            r[1] / base[1],
            r[2],
            r[2] / base[2]
        ));
    }
    let table = lines.join("\n");
    println!("{table}");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S");
    std::fs::write(dir.join(format!("mssql-{stamp}.md")), format!("{table}\n"))?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "mssql: SQL Server ↔ PostgreSQL throughput; run it with `cargo bench --bench mssql` \
             or `bash deploy/bench.sh`"
        );
        return std::process::ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mssql: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mssql: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
