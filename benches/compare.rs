//! Side-by-side benchmark (issue 7): tandem against PostgreSQL's logical replication,
//! pglogical and Bucardo (each when installed), on the same two local clusters, in one run.
//!
//!     cargo bench --bench compare          # or: bash deploy/bench.sh (installs the peers first)
//!
//! Prints a Markdown table of absolute figures, tandem's ratio to the best peer and the issue's
//! targets, then notes on where tandem's time goes; also writes it to
//! `target/bench/compare-<time>.md` (logs and configs of the run are kept beside it).
//!
//! Sizes come from the environment (defaults are the sizes):
//!
//! | variable | default | what |
//! |---|---|---|
//! | `TANDEM_BENCH_ROWS` | 100000 | rows of `items`, identical on both sides |
//! | `TANDEM_BENCH_W1_CHANGES` | 200000 | W1: random single-row UPDATEs made while paused |
//! | `TANDEM_BENCH_W2_SECONDS` | 30 | W2: pgbench seconds while syncing |
//! | `TANDEM_BENCH_W3_ROWS` | 100000 | W3: INSERTs made while paused |
//! | `TANDEM_BENCH_LATENCY_RATE` / `_SECONDS` | 1000 / 30 | latency run: steady UPDATEs per second, for how long |
//! | `TANDEM_BENCH_RSS_CHANGES` | 1000000 | backlog drained while tandem's peak RSS is read |
//! | `TANDEM_BENCH_CLIENTS` | 4 | pgbench clients |
//! | `TANDEM_BENCH_TOOLS` | all | e.g. `tandem,native` (others: `pglogical`, `bucardo`) |
//! | `TANDEM_BENCH_WORKLOADS` | all | of `w1,profile,w2,w3,mapped,latency,rss` (`profile`: W1 for tandem again, with pg_stat_statements and auto_explain); `soak` is extra, opt-in |
//! | `TANDEM_BENCH_SOAK_SECONDS` | 600 | `soak` (not in the default set): tandem running under steady UPDATEs at `TANDEM_BENCH_LATENCY_RATE`; sizes of its tables every minute |
//! | `TANDEM_BENCH_TIMEOUT` | 1200 | seconds any one drain may take |
//! | `TANDEM_BENCH_CATCHUP_TIMEOUT` | 120 | W2: seconds to wait for catch-up before reporting "> N" |
//! | `TANDEM_BENCH_BATCH_SIZE` | tandem's default | tandem `[sync] batch_size` |
//! | `TANDEM_BENCH_DIRECTION` | both | tandem entities' `direction` (`a_to_b` = one-way like the peers) |
//! | `TANDEM_BENCH_LOG` | tandem=info | tandem's `RUST_LOG` |
//!
//! Under `cargo test` (no `--bench` argument) it only says how to run it.

mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use support::peers::{self, BucardoHome, Env, Replicator, Schema, Tool};
use support::pg::{lit, rt, Clusters, Pair, Pgbench};
use support::procs::{self, postmaster_pid, status_kb, CpuSnapshot, Res};
use support::report::{fmt_num, Better, Cell, Column, Report, Row, Target};

struct Cfg {
    rows: u64,
    w1_changes: u64,
    w2_seconds: u64,
    w3_rows: u64,
    latency_rate: u64,
    latency_seconds: u64,
    rss_changes: u64,
    clients: u32,
    tools: Vec<Tool>,
    workloads: Vec<String>,
    timeout: Duration,
    catchup_limit: Duration,
    soak_seconds: u64,
}

fn env_num(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().unwrap_or_else(|_| {
            eprintln!("compare: {name}={v:?} is not a number; using {default}");
            default
        }),
        Err(_) => default,
    }
}

fn env_list(name: &str) -> Option<Vec<String>> {
    std::env::var(name).ok().map(|v| {
        v.split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    })
}

impl Cfg {
    fn from_env() -> Cfg {
        let tools = match env_list("TANDEM_BENCH_TOOLS") {
            Some(names) => Tool::ALL
                .into_iter()
                .filter(|t| names.iter().any(|n| n == t.key()))
                .collect(),
            None => Tool::ALL.to_vec(),
        };
        Cfg {
            rows: env_num("TANDEM_BENCH_ROWS", 100_000).max(1),
            w1_changes: env_num("TANDEM_BENCH_W1_CHANGES", 200_000).max(1),
            w2_seconds: env_num("TANDEM_BENCH_W2_SECONDS", 30).max(1),
            w3_rows: env_num("TANDEM_BENCH_W3_ROWS", 100_000).max(1),
            latency_rate: env_num("TANDEM_BENCH_LATENCY_RATE", 1000).max(1),
            latency_seconds: env_num("TANDEM_BENCH_LATENCY_SECONDS", 30).max(1),
            rss_changes: env_num("TANDEM_BENCH_RSS_CHANGES", 1_000_000).max(1),
            clients: env_num("TANDEM_BENCH_CLIENTS", 4).clamp(1, 64) as u32,
            tools,
            workloads: env_list("TANDEM_BENCH_WORKLOADS").unwrap_or_else(|| {
                ["w1", "profile", "w2", "w3", "mapped", "latency", "rss"]
                    .map(String::from)
                    .to_vec()
            }),
            timeout: Duration::from_secs(env_num("TANDEM_BENCH_TIMEOUT", 1200).max(10)),
            soak_seconds: env_num("TANDEM_BENCH_SOAK_SECONDS", 600).max(1),
            catchup_limit: Duration::from_secs(env_num("TANDEM_BENCH_CATCHUP_TIMEOUT", 120).max(1)),
        }
    }

    fn wants(&self, workload: &str) -> bool {
        self.workloads.iter().any(|w| w == workload)
    }
}

fn main() -> ExitCode {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "compare: the side-by-side benchmark; run it with `cargo bench --bench compare` \
             or `bash deploy/bench.sh`"
        );
        return ExitCode::SUCCESS;
    }
    install_signal_handler();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C / SIGTERM: stop tandem, pgbench and Bucardo, then exit through `exit`, whose hook
/// stops and removes the clusters.
fn install_signal_handler() {
    rt().spawn(async {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("compare: interrupted; stopping the tools and removing the clusters");
        INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        procs::kill_all_children();
        if let Some(dir) = BUCARDO_PIDDIR.get() {
            peers::kill_pid_files(dir);
        }
        std::process::exit(130);
    });
}

static BUCARDO_PIDDIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Set by the signal handler: the run is being torn down, its figures mean nothing.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

struct Bench<'a> {
    cfg: Cfg,
    env: Env<'a>,
    report: Report,
    /// Why a tool cannot run here (not installed).
    missing: HashMap<Tool, String>,
    /// Findings about tandem, printed under the table.
    findings: Vec<String>,
    /// Which source tree was built (taken when the run starts).
    fingerprint: String,
}

fn run() -> Res<()> {
    let cfg = Cfg::from_env();
    let started = Instant::now();
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let work_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("bench")
        .join(&stamp);
    std::fs::create_dir_all(&work_dir).map_err(|e| format!("mkdir {}: {e}", work_dir.display()))?;
    let tandem_bin = PathBuf::from(env!("CARGO_BIN_EXE_tandem"));
    eprintln!(
        "compare: tandem {} ; work dir {}",
        tandem_bin.display(),
        work_dir.display()
    );
    if cfg!(debug_assertions) {
        eprintln!("compare: WARNING: built without optimisations; use `cargo bench`");
    }
    let clusters = Clusters::start()?;
    eprintln!(
        "compare: clusters A (port {}) and B (port {}), PostgreSQL {}",
        clusters.a.port(),
        clusters.b.port(),
        clusters.offers.server_version
    );

    let mut missing = HashMap::new();
    if !clusters.offers.pglogical {
        missing.insert(
            Tool::Pglogical,
            "not installed (apt-get install postgresql-<major>-pglogical)".to_string(),
        );
    }
    let bucardo = BucardoHome::find(&work_dir);
    if bucardo.is_none() {
        missing.insert(
            Tool::Bucardo,
            "not installed (apt-get install bucardo)".to_string(),
        );
    } else if !clusters.offers.plperl {
        missing.insert(
            Tool::Bucardo,
            "not installed: Bucardo needs PL/Perl (apt-get install postgresql-<major>-plperl)"
                .to_string(),
        );
    }
    if let Some(b) = &bucardo {
        let _ = BUCARDO_PIDDIR.set(b.piddir.clone());
    }
    let env = Env {
        clusters: &clusters,
        tandem_bin,
        work_dir: work_dir.clone(),
        tandem_batch: std::env::var("TANDEM_BENCH_BATCH_SIZE")
            .ok()
            .and_then(|v| v.parse().ok()),
        tandem_direction: std::env::var("TANDEM_BENCH_DIRECTION").unwrap_or_else(|_| "both".into()),
        tandem_log: std::env::var("TANDEM_BENCH_LOG").unwrap_or_else(|_| "tandem=info".into()),
        bucardo,
    };
    let mut b = Bench {
        cfg,
        env,
        report: Report::default(),
        missing,
        findings: Vec::new(),
        fingerprint: tree_fingerprint(),
    };
    if b.cfg.wants("w1") {
        b.w1();
    }
    if b.cfg.wants("w2") {
        b.w2();
    }
    if b.cfg.wants("w3") {
        b.w3();
    }
    if b.cfg.wants("mapped") {
        b.mapped();
    }
    if b.cfg.wants("latency") {
        b.latency();
    }
    if b.cfg.wants("rss") {
        b.rss();
    }
    if b.cfg.wants("soak") {
        b.soak();
    }

    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err("interrupted".into());
    }
    let text = b.render(started.elapsed());
    for (side, c) in [("A", &clusters.a), ("B", &clusters.b)] {
        let _ = std::fs::copy(c.log_path(), work_dir.join(format!("postgres-{side}.log")));
    }
    println!("{text}");
    let out = work_dir.with_extension("md");
    let out = out
        .parent()
        .map(|p| p.join(format!("compare-{stamp}.md")))
        .unwrap_or(out);
    std::fs::write(&out, &text).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!("compare: written to {}", out.display());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workload building blocks
// ---------------------------------------------------------------------------------------------

const UPDATE_SCRIPT: &str = "\\set id random(1, :rows)\n\
UPDATE items SET qty = qty + 1, ts = clock_timestamp() WHERE id = :id;\n";

const INSERT_SCRIPT: &str = "\\set q random(1, 1000)\n\
INSERT INTO items (qty, status, note, ts) VALUES (:q, 'O', 'new item ' || :q, clock_timestamp());\n";

const MAPPED_INSERT_SCRIPT: &str = "\\set q random(1, 1000)\n\
INSERT INTO \"ITEMS\" (\"QTY\", \"STATUS\", \"NOTE\", \"TS\") \
VALUES (:q, (ARRAY['O','C','X'])[1 + :q % 3], 'new item ' || :q, clock_timestamp());\n";

const MAPPED_UPDATE_SCRIPT: &str = "\\set id random(1, :rows)\n\
UPDATE \"ITEMS\" SET \"QTY\" = \"QTY\" + 1, \"STATUS\" = (ARRAY['O','C','X'])[1 + (\"QTY\" + 1) % 3], \
\"TS\" = clock_timestamp() WHERE \"ITEM_NO\" = :id;\n";

fn load_same(pair: &Pair, rows: u64) -> Res<()> {
    for db in [&pair.a, &pair.b] {
        db.exec(peers::SAME_SCHEMA)?;
        db.exec(&format!(
            "INSERT INTO items (id, qty, status, note, ts) \
             SELECT g, 0, 'O', 'item ' || g, '2026-01-01 00:00:00+00' FROM generate_series(1, {rows}) g;
             SELECT setval(pg_get_serial_sequence('items', 'id'), {rows});"
        ))?;
        db.exec("VACUUM ANALYZE items")?;
    }
    Ok(())
}

fn same_digest(pair: &Pair) -> Res<(Option<String>, Option<String>)> {
    let q =
        "SELECT md5(string_agg(concat_ws('|', id, qty, status, note, ts), E'\\n' ORDER BY id)) \
             FROM items";
    Ok((pair.a.one(q)?, pair.b.one(q)?))
}

fn mapped_digest(pair: &Pair) -> Res<(Option<String>, Option<String>)> {
    let a = pair.a.one(
        "SELECT md5(string_agg(concat_ws('|', \"ITEM_NO\", \"QTY\", \
         CASE \"STATUS\" WHEN 'O' THEN 'open' WHEN 'C' THEN 'closed' WHEN 'X' THEN 'cancelled' END, \
         \"NOTE\", \"TS\"), E'\\n' ORDER BY \"ITEM_NO\")) FROM \"ITEMS\"",
    )?;
    let b = pair.b.one(
        "SELECT md5(string_agg(concat_ws('|', legacy_no, quantity, status, note, ts), E'\\n' \
         ORDER BY legacy_no)) FROM items",
    )?;
    Ok((a, b))
}

/// Writes a new token into the marker row at A; returns it.
fn mark(pair: &Pair) -> Res<i64> {
    let token = chrono::Utc::now().timestamp_micros();
    pair.a.exec(&format!(
        "UPDATE bench_marker SET token = {token} WHERE id = 1"
    ))?;
    Ok(token)
}

/// Peak memory seen while waiting.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    max_rss_kb: u64,
    hwm_kb: u64,
}

/// [`wait_for_marker`], failing when `limit` passes.
fn wait_marker(
    pair: &Pair,
    token: i64,
    rep: &mut dyn Replicator,
    t0: Instant,
    limit: Duration,
    mem: &mut Memory,
) -> Res<f64> {
    wait_for_marker(pair, token, rep, t0, limit, mem)?
        .ok_or_else(|| format!("B did not catch up within {limit:?} (TANDEM_BENCH_TIMEOUT)"))
}

/// Waits until the marker token is visible at B; returns seconds since `t0`, or `None` when
/// `limit` passed first. Every tool applies the marker (written last) after everything before
/// it, so this is "B equals A"; the digests are compared afterwards.
fn wait_for_marker(
    pair: &Pair,
    token: i64,
    rep: &mut dyn Replicator,
    t0: Instant,
    limit: Duration,
    mem: &mut Memory,
) -> Res<Option<f64>> {
    let want = token.to_string();
    let mut last_rss = Instant::now() - Duration::from_secs(1);
    loop {
        let v = pair
            .b
            .poll_one("SELECT token FROM bench_marker WHERE id = 1")?;
        let elapsed = t0.elapsed();
        if let Some(pid) = rep.pid() {
            if last_rss.elapsed() >= Duration::from_millis(100) || v.as_deref() == Some(&want) {
                last_rss = Instant::now();
                if let Some(kb) = status_kb(pid, "VmRSS") {
                    mem.max_rss_kb = mem.max_rss_kb.max(kb);
                }
                if let Some(kb) = status_kb(pid, "VmHWM") {
                    mem.hwm_kb = mem.hwm_kb.max(kb);
                }
            }
        }
        if v.as_deref() == Some(&want) {
            return Ok(Some(elapsed.as_secs_f64()));
        }
        rep.check()?;
        if elapsed > limit {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// After the marker: B must equal A. Tools that apply in commit order are equal already;
/// should B differ, keep comparing (and say so) until it is equal or `limit` passes.
fn check_equal(pair: &Pair, schema: Schema, t0: Instant, limit: Duration) -> Res<Option<f64>> {
    let deadline = Instant::now() + limit;
    let mut first = true;
    loop {
        let (a, b) = match schema {
            Schema::Same => same_digest(pair)?,
            Schema::Mapped => mapped_digest(pair)?,
        };
        if a == b && a.is_some() {
            return Ok(if first {
                None
            } else {
                Some(t0.elapsed().as_secs_f64())
            });
        }
        first = false;
        if Instant::now() > deadline {
            return Err(format!(
                "B still differs from A {limit:?} after the marker arrived ({a:?} ≠ {b:?})"
            ));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until tandem's outbox at A is empty (every change applied and its link written back).
fn wait_outbox_empty(pair: &Pair, limit: Duration) -> Res<()> {
    let deadline = Instant::now() + limit;
    while pair.a.poll_one("SELECT count(*) FROM tandem.outbox")? != Some("0".into()) {
        if Instant::now() > deadline {
            return Err(format!("tandem's outbox at A not empty after {limit:?}"));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

impl Bench<'_> {
    fn missing_reason(&self, tool: Tool) -> Option<Cell> {
        if self.missing.contains_key(&tool) {
            return Some(Cell::NotInstalled);
        }
        if !self.cfg.tools.contains(&tool) {
            return Some(Cell::Skipped);
        }
        None
    }

    /// Tools to run, in order (peers first), recording "not installed" / "skipped" cells for
    /// the others in `rows`.
    fn lineup(&mut self, rows: &[&str]) -> Vec<Tool> {
        let mut out = Vec::new();
        for tool in [Tool::Native, Tool::Pglogical, Tool::Bucardo, Tool::Tandem] {
            match self.missing_reason(tool) {
                Some(cell) => {
                    for r in rows {
                        if let Some(row) = self.report.rows.iter_mut().find(|x| x.name == *r) {
                            row.cells.insert(Column::Tool(tool), cell.clone());
                        }
                    }
                }
                None => out.push(tool),
            }
        }
        out
    }

    fn put(&mut self, row: &str, col: Column, cell: Cell) {
        if let Some(r) = self.report.rows.iter_mut().find(|x| x.name == row) {
            r.cells.insert(col, cell);
        }
    }

    fn add_row(&mut self, row: Row) {
        let name = row.name.clone();
        self.report.row(&name, || row);
    }

    fn pgbench_update(
        &self,
        db: &str,
        transactions: Option<u64>,
        seconds: Option<u64>,
        rate: Option<u64>,
    ) -> Res<support::pg::PgbenchResult> {
        self.env.clusters.pgbench(
            db,
            &Pgbench {
                script: UPDATE_SCRIPT.into(),
                clients: self.cfg.clients,
                transactions,
                seconds,
                rate,
                vars: vec![("rows".into(), self.cfg.rows.to_string())],
            },
        )
    }

    fn postmasters(&self) -> Vec<i32> {
        [&self.env.clusters.a, &self.env.clusters.b]
            .iter()
            .filter_map(|c| postmaster_pid(c.dir()))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // W1: backlog of random single-row UPDATEs
    // -----------------------------------------------------------------------------------------

    fn w1(&mut self) {
        let n = self.cfg.w1_changes;
        let row = format!("W1 backlog drain: {} random UPDATEs", fmt_num(n as f64));
        self.add_row(Row::new(
            &row,
            "changes/s",
            Better::Higher,
            Some(Target::TimesBestPeer(1.5)),
        ));
        self.put(&row, Column::NoCapture, Cell::NotApplicable);
        for tool in self.lineup(&[&row]) {
            let cell = match self.w1_one(tool, n, false) {
                Ok(v) => Cell::Value(v),
                Err(e) => {
                    eprintln!("W1 {}: FAILED: {e}", tool.label());
                    Cell::Failed(e)
                }
            };
            self.put(&row, Column::Tool(tool), cell);
        }
        if self.cfg.wants("profile") && self.missing_reason(Tool::Tandem).is_none() {
            // Once more for tandem, with pg_stat_statements and auto_explain on, to see where
            // its time goes (kept out of the figure in the table).
            match self.w1_one(Tool::Tandem, n, true) {
                Ok(v) => self.findings.insert(
                    0,
                    format!(
                        "- Profiled W1 tandem run (pg_stat_statements track=all, auto_explain of \
                         statements ≥ 20 ms, in both databases): {} changes/s.",
                        fmt_num(v)
                    ),
                ),
                Err(e) => self
                    .findings
                    .push(format!("- Profiled W1 tandem run failed: {e}")),
            }
        }
    }

    fn w1_one(&mut self, tool: Tool, n: u64, profile: bool) -> Res<f64> {
        let name = format!("w1_{}{}", tool.key(), if profile { "_profile" } else { "" });
        let pair = self.env.clusters.fresh_pair(&name)?;
        load_same(&pair, self.cfg.rows)?;
        let mut rep = peers::setup(&self.env, tool, &pair, Schema::Same, false)?;
        let result = self.w1_measure(tool, &pair, rep.as_mut(), n, profile);
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    fn w1_measure(
        &mut self,
        tool: Tool,
        pair: &Pair,
        rep: &mut dyn Replicator,
        n: u64,
        profile: bool,
    ) -> Res<f64> {
        if profile {
            for db in [&pair.a, &pair.b] {
                db.exec(&format!(
                    "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
                     ALTER DATABASE {0} SET pg_stat_statements.track = 'all';
                     ALTER DATABASE {0} SET session_preload_libraries = 'auto_explain';
                     ALTER DATABASE {0} SET auto_explain.log_min_duration = 20;",
                    pair.name
                ))?;
            }
        }
        let logs = [
            self.env.clusters.a.log_path(),
            self.env.clusters.b.log_path(),
        ];
        let log_start: Vec<u64> = logs
            .iter()
            .map(|p| std::fs::metadata(p).map_or(0, |m| m.len()))
            .collect();
        let gen = self.pgbench_update(&pair.name, Some(n), None, None)?;
        eprintln!(
            "W1 {}: {} UPDATEs queued at {} tps (capture on)",
            tool.label(),
            fmt_num(gen.transactions as f64),
            fmt_num(gen.tps)
        );
        let token = mark(pair)?;
        if profile {
            for db in [&pair.a, &pair.b] {
                db.exec("SELECT pg_stat_statements_reset()")?;
            }
        }
        let roots = self.postmasters();
        let cpu0 = CpuSnapshot::take(&roots);
        let t0 = Instant::now();
        rep.resume()?;
        let mut mem = Memory::default();
        let secs = wait_marker(pair, token, rep, t0, self.cfg.timeout, &mut mem)?;
        let mut roots_after = roots.clone();
        roots_after.extend(rep.pid());
        let cpu1 = CpuSnapshot::take(&roots_after);
        let late = check_equal(pair, Schema::Same, t0, self.cfg.timeout)?;
        let rate = n as f64 / late.unwrap_or(secs);
        eprintln!(
            "W1 {}: drained in {secs:.2} s → {} changes/s{}",
            tool.label(),
            fmt_num(rate),
            late.map(|l| format!(" (B equal to A only after {l:.2} s)"))
                .unwrap_or_default()
        );
        if profile {
            let tandem_cpu = rep.pid().map_or(0.0, |p| cpu1.seconds_since(&cpu0, p));
            let (pa, pb) = (roots.first().copied(), roots.get(1).copied());
            let a_cpu = pa.map_or(0.0, |p| cpu1.seconds_since(&cpu0, p));
            let b_cpu = pb.map_or(0.0, |p| cpu1.seconds_since(&cpu0, p));
            let wall = cpu1.wall_since(&cpu0);
            let machine = cpu1.machine_seconds_since(&cpu0);
            self.findings.push(format!(
                "- W1 tandem drain: {secs:.1} s wall; CPU seconds: tandem {tandem_cpu:.1}, \
                 PostgreSQL A {a_cpu:.1}, PostgreSQL B {b_cpu:.1}; whole machine {machine:.1} of \
                 {:.1} available (2 cores) — {:.0}% busy, so other work on the machine counts too. \
                 Peak RSS {:.0} MB.",
                wall * 2.0,
                100.0 * machine / (wall * 2.0).max(0.001),
                mb(mem.hwm_kb)
            ));
            if let Some(log) = rep.log() {
                self.findings.push(batch_stats(&log, n));
            }
            for (i, (side, db)) in [("A", &pair.a), ("B", &pair.b)].into_iter().enumerate() {
                self.findings.push(top_statements(side, db, secs)?);
                self.findings.push(slow_plans(side, &logs[i], log_start[i]));
            }
        }
        Ok(rate)
    }

    // -----------------------------------------------------------------------------------------
    // W2: live pgbench while syncing; capture-only cost
    // -----------------------------------------------------------------------------------------

    fn w2(&mut self) {
        let s = self.cfg.w2_seconds;
        let tps_row = format!("W2 live: pgbench UPDATE tps on A while syncing ({s} s)");
        let catch_row = "W2 catch-up after the load stops".to_string();
        let cap_row = format!("Capture only (tandem stopped): pgbench UPDATE tps ({s} s)");
        self.add_row(Row::new(
            &tps_row,
            "tps",
            Better::Higher,
            Some(Target::TimesColumn(Column::Tool(Tool::Native), 0.9)),
        ));
        self.add_row(Row::new(
            &catch_row,
            "s",
            Better::Lower,
            Some(Target::AtMost(0.5)),
        ));
        self.add_row(Row::new(
            &cap_row,
            "tps",
            Better::Higher,
            Some(Target::TimesColumn(Column::NoCapture, 0.8)),
        ));
        self.put(&catch_row, Column::NoCapture, Cell::NotApplicable);
        for t in Tool::PEERS {
            self.put(&cap_row, Column::Tool(t), Cell::NotApplicable);
        }
        // Baseline: no capture at all (same clusters, same settings).
        let base = self.w2_baseline(false);
        match base {
            Ok(tps) => {
                self.put(&tps_row, Column::NoCapture, Cell::Value(tps));
                self.put(&cap_row, Column::NoCapture, Cell::Value(tps));
            }
            Err(e) => {
                eprintln!("W2 no capture: FAILED: {e}");
                self.put(&tps_row, Column::NoCapture, Cell::Failed(e.clone()));
                self.put(&cap_row, Column::NoCapture, Cell::Failed(e));
            }
        }
        if self.missing_reason(Tool::Tandem).is_none() {
            let cell = match self.w2_baseline(true) {
                Ok(v) => Cell::Value(v),
                Err(e) => Cell::Failed(e),
            };
            self.put(&cap_row, Column::Tool(Tool::Tandem), cell);
        }
        for tool in self.lineup(&[&tps_row, &catch_row]) {
            match self.w2_one(tool, s) {
                Ok((tps, catch)) => {
                    self.put(&tps_row, Column::Tool(tool), Cell::Value(tps));
                    let cell = match catch {
                        Some(c) => Cell::Value(c),
                        None => Cell::Over(self.cfg.catchup_limit.as_secs_f64()),
                    };
                    self.put(&catch_row, Column::Tool(tool), cell);
                }
                Err(e) => {
                    eprintln!("W2 {}: FAILED: {e}", tool.label());
                    self.put(&tps_row, Column::Tool(tool), Cell::Failed(e.clone()));
                    self.put(&catch_row, Column::Tool(tool), Cell::Failed(e));
                }
            }
        }
    }

    /// pgbench tps with no capture, or with tandem's triggers installed but tandem stopped.
    fn w2_baseline(&mut self, capture: bool) -> Res<f64> {
        let name = if capture { "w2_capture" } else { "w2_plain" };
        let pair = self.env.clusters.fresh_pair(name)?;
        load_same(&pair, self.cfg.rows)?;
        let result = (|| {
            let mut rep = if capture {
                Some(peers::setup(
                    &self.env,
                    Tool::Tandem,
                    &pair,
                    Schema::Same,
                    false,
                )?)
            } else {
                None
            };
            let r = self.pgbench_update(&pair.name, None, Some(self.cfg.w2_seconds), None)?;
            if let Some(rep) = rep.as_mut() {
                rep.teardown()?;
            }
            Ok::<_, String>(r.tps)
        })();
        self.env.clusters.retire_pair(pair)?;
        let tps = result?;
        eprintln!(
            "W2 {}: {} tps",
            if capture {
                "capture only (tandem's trigger, tandem stopped)"
            } else {
                "no capture"
            },
            fmt_num(tps)
        );
        Ok(tps)
    }

    /// (tps, catch-up seconds or `None` when longer than the catch-up limit).
    fn w2_one(&mut self, tool: Tool, seconds: u64) -> Res<(f64, Option<f64>)> {
        let name = format!("w2_{}", tool.key());
        let pair = self.env.clusters.fresh_pair(&name)?;
        load_same(&pair, self.cfg.rows)?;
        let mut rep = peers::setup(&self.env, tool, &pair, Schema::Same, true)?;
        let result = (|| {
            let r = self.pgbench_update(&pair.name, None, Some(seconds), None)?;
            rep.check()?;
            let token = mark(&pair)?;
            let t0 = Instant::now();
            let mut mem = Memory::default();
            let limit = self.cfg.catchup_limit;
            let Some(catch) = wait_for_marker(&pair, token, rep.as_mut(), t0, limit, &mut mem)?
            else {
                return Ok((r.tps, None));
            };
            let late = check_equal(&pair, Schema::Same, t0, self.cfg.timeout)?;
            let catch = late.unwrap_or(catch);
            if tool == Tool::Tandem {
                wait_outbox_empty(&pair, self.cfg.timeout)?;
                self.findings.push(format!(
                    "- W2 tandem: after {seconds} s of live load, tandem's tables at A: {}; at B: {}.",
                    table_sizes(&pair.a)?,
                    table_sizes(&pair.b)?
                ));
            }
            Ok::<_, String>((r.tps, Some(catch)))
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let (tps, catch) = result?;
        down?;
        dropped?;
        eprintln!(
            "W2 {}: {} tps while syncing; {}",
            tool.label(),
            fmt_num(tps),
            match catch {
                Some(c) => format!("caught up {c:.3} s after the load stopped"),
                None => format!(
                    "not caught up {} s after the load stopped (gave up: TANDEM_BENCH_CATCHUP_TIMEOUT)",
                    self.cfg.catchup_limit.as_secs()
                ),
            }
        );
        Ok((tps, catch))
    }

    // -----------------------------------------------------------------------------------------
    // W3: backlog of INSERTs
    // -----------------------------------------------------------------------------------------

    fn w3(&mut self) {
        let n = self.cfg.w3_rows;
        let row = format!("W3 backlog drain: {} INSERTs", fmt_num(n as f64));
        self.add_row(Row::new(
            &row,
            "rows/s",
            Better::Higher,
            Some(Target::TimesColumn(Column::Tool(Tool::Native), 0.75)),
        ));
        self.put(&row, Column::NoCapture, Cell::NotApplicable);
        for tool in self.lineup(&[&row]) {
            let cell = match self.w3_one(tool, n) {
                Ok(v) => Cell::Value(v),
                Err(e) => {
                    eprintln!("W3 {}: FAILED: {e}", tool.label());
                    Cell::Failed(e)
                }
            };
            self.put(&row, Column::Tool(tool), cell);
        }
    }

    fn w3_one(&mut self, tool: Tool, n: u64) -> Res<f64> {
        let name = format!("w3_{}", tool.key());
        let pair = self.env.clusters.fresh_pair(&name)?;
        for db in [&pair.a, &pair.b] {
            db.exec(peers::SAME_SCHEMA)?;
        }
        let mut rep = peers::setup(&self.env, tool, &pair, Schema::Same, false)?;
        let result = (|| {
            let gen = self.env.clusters.pgbench(
                &pair.name,
                &Pgbench {
                    script: INSERT_SCRIPT.into(),
                    clients: self.cfg.clients,
                    transactions: Some(n),
                    seconds: None,
                    rate: None,
                    vars: vec![],
                },
            )?;
            let n = gen.transactions.max(1);
            let token = mark(&pair)?;
            let t0 = Instant::now();
            rep.resume()?;
            let mut mem = Memory::default();
            let secs = wait_marker(&pair, token, rep.as_mut(), t0, self.cfg.timeout, &mut mem)?;
            let late = check_equal(&pair, Schema::Same, t0, self.cfg.timeout)?;
            let secs = late.unwrap_or(secs);
            if tool == Tool::Tandem {
                let linked = pair
                    .b
                    .one("SELECT count(*) FROM tandem.id_map WHERE entity = 'item'")?
                    .unwrap_or_default();
                let linked_done = Instant::now();
                wait_outbox_empty(&pair, self.cfg.timeout)?;
                self.findings.push(format!(
                    "- W3 tandem: {linked} id pairs linked at B when B equalled A ({secs:.2} s); \
                     write-back at A finished {:.2} s later.",
                    linked_done.elapsed().as_secs_f64()
                ));
            }
            eprintln!(
                "W3 {}: {} INSERTs (queued at {} tps) drained in {secs:.2} s → {} rows/s",
                tool.label(),
                fmt_num(n as f64),
                fmt_num(gen.tps),
                fmt_num(n as f64 / secs)
            );
            Ok::<_, String>(n as f64 / secs)
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------
    // Mapped schema (tandem only)
    // -----------------------------------------------------------------------------------------

    fn mapped(&mut self) {
        let n3 = self.cfg.w3_rows;
        let n1 = self.cfg.w1_changes;
        let r3 = format!(
            "Mapped W3: {} INSERTs, keys generated on each side",
            fmt_num(n3 as f64)
        );
        let r1 = format!(
            "Mapped W1: {} random UPDATEs (renames, value map)",
            fmt_num(n1 as f64)
        );
        for r in [&r3, &r1] {
            let unit = if r == &r3 { "rows/s" } else { "changes/s" };
            self.add_row(Row::new(r, unit, Better::Higher, None));
            self.put(r, Column::NoCapture, Cell::NotApplicable);
            for t in Tool::PEERS {
                // Peers replicate identical tables only: no renames, no value maps, no own keys.
                let cell = if self.missing.contains_key(&t) {
                    Cell::NotInstalled
                } else {
                    Cell::NotApplicable
                };
                self.put(r, Column::Tool(t), cell);
            }
        }
        if let Some(cell) = self.missing_reason(Tool::Tandem) {
            self.put(&r3, Column::Tool(Tool::Tandem), cell.clone());
            self.put(&r1, Column::Tool(Tool::Tandem), cell);
            return;
        }
        match self.mapped_run(n3, n1) {
            Ok((v3, v1)) => {
                self.put(&r3, Column::Tool(Tool::Tandem), Cell::Value(v3));
                self.put(&r1, Column::Tool(Tool::Tandem), Cell::Value(v1));
            }
            Err(e) => {
                eprintln!("mapped: FAILED: {e}");
                self.put(&r3, Column::Tool(Tool::Tandem), Cell::Failed(e.clone()));
                self.put(&r1, Column::Tool(Tool::Tandem), Cell::Failed(e));
            }
        }
    }

    fn mapped_run(&mut self, n3: u64, n1: u64) -> Res<(f64, f64)> {
        let pair = self.env.clusters.fresh_pair("mapped_tandem")?;
        pair.a.exec(peers::MAPPED_A)?;
        pair.b.exec(peers::MAPPED_B)?;
        let mut rep = peers::setup(&self.env, Tool::Tandem, &pair, Schema::Mapped, false)?;
        let result = (|| {
            let gen = self.env.clusters.pgbench(
                &pair.name,
                &Pgbench {
                    script: MAPPED_INSERT_SCRIPT.into(),
                    clients: self.cfg.clients,
                    transactions: Some(n3),
                    seconds: None,
                    rate: None,
                    vars: vec![],
                },
            )?;
            let rows = gen.transactions.max(1);
            let token = mark(&pair)?;
            let t0 = Instant::now();
            rep.resume()?;
            let mut mem = Memory::default();
            let s3 = wait_marker(&pair, token, rep.as_mut(), t0, self.cfg.timeout, &mut mem)?;
            wait_outbox_empty(&pair, self.cfg.timeout)?;
            let s3_links = t0.elapsed().as_secs_f64();
            let late = check_equal(&pair, Schema::Mapped, t0, self.cfg.timeout)?;
            let s3 = late.unwrap_or(s3);
            let unlinked = pair
                .a
                .one("SELECT count(*) FROM \"ITEMS\" WHERE \"NEW_ID\" IS NULL")?
                .unwrap_or_default();
            eprintln!(
                "mapped W3 tandem: {} INSERTs drained in {s3:.2} s → {} rows/s (ids written back at A after {s3_links:.2} s; {unlinked} rows without NEW_ID)",
                fmt_num(rows as f64),
                fmt_num(rows as f64 / s3)
            );
            self.findings.push(format!(
                "- Mapped W3 tandem: B equal to A after {s3:.2} s, every B id written back into A's NEW_ID after {s3_links:.2} s ({unlinked} left without)."
            ));
            rep.pause()?;
            let gen = self.env.clusters.pgbench(
                &pair.name,
                &Pgbench {
                    script: MAPPED_UPDATE_SCRIPT.into(),
                    clients: self.cfg.clients,
                    transactions: Some(n1),
                    seconds: None,
                    rate: None,
                    vars: vec![("rows".into(), rows.to_string())],
                },
            )?;
            let token = mark(&pair)?;
            let t0 = Instant::now();
            rep.resume()?;
            let s1 = wait_marker(&pair, token, rep.as_mut(), t0, self.cfg.timeout, &mut mem)?;
            let late = check_equal(&pair, Schema::Mapped, t0, self.cfg.timeout)?;
            let s1 = late.unwrap_or(s1);
            eprintln!(
                "mapped W1 tandem: {} UPDATEs (queued at {} tps) drained in {s1:.2} s → {} changes/s",
                fmt_num(gen.transactions as f64),
                fmt_num(gen.tps),
                fmt_num(n1 as f64 / s1)
            );
            Ok::<_, String>((rows as f64 / s3, n1 as f64 / s1))
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------
    // Latency at a steady rate
    // -----------------------------------------------------------------------------------------

    fn latency(&mut self) {
        let rate = self.cfg.latency_rate;
        let names: Vec<String> = ["p50", "p95", "p99"]
            .iter()
            .map(|p| {
                format!(
                    "Latency {p}, commit on A → visible on B, at {} changes/s",
                    fmt_num(rate as f64)
                )
            })
            .collect();
        for (i, n) in names.iter().enumerate() {
            let target = (i == 2).then_some(Target::AtMost(100.0));
            self.add_row(Row::new(n, "ms", Better::Lower, target));
            self.put(n, Column::NoCapture, Cell::NotApplicable);
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        for tool in self.lineup(&refs) {
            match self.latency_one(tool) {
                Ok(ps) => {
                    for (n, v) in names.iter().zip(ps) {
                        self.put(n, Column::Tool(tool), Cell::Value(v));
                    }
                }
                Err(e) => {
                    eprintln!("latency {}: FAILED: {e}", tool.label());
                    for n in &names {
                        self.put(n, Column::Tool(tool), Cell::Failed(e.clone()));
                    }
                }
            }
        }
    }

    fn latency_one(&mut self, tool: Tool) -> Res<[f64; 3]> {
        let name = format!("lat_{}", tool.key());
        let pair = self.env.clusters.fresh_pair(&name)?;
        load_same(&pair, self.cfg.rows)?;
        // When a row version becomes visible at B: a deferred constraint trigger runs as its
        // transaction commits (ALWAYS: also under session_replication_role = replica, as the
        // peers apply). Commit timestamps at B would not do: logical replication records the
        // origin's commit time there. (Names are qualified: replication workers run with an
        // empty search_path.)
        pair.b.exec(
            "CREATE TABLE public.lat_log (id integer, qty integer, seen timestamptz);
             CREATE FUNCTION lat_seen() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO public.lat_log VALUES (NEW.id, NEW.qty, clock_timestamp()); RETURN NULL; END $$;
             CREATE CONSTRAINT TRIGGER lat_seen AFTER INSERT OR UPDATE ON items
                 DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION lat_seen();
             ALTER TABLE items ENABLE ALWAYS TRIGGER lat_seen;",
        )?;
        let mut rep = peers::setup(&self.env, tool, &pair, Schema::Same, true)?;
        let result = (|| {
            let since = pair.a.one("SELECT clock_timestamp()")?.unwrap_or_default();
            let r = self.pgbench_update(
                &pair.name,
                None,
                Some(self.cfg.latency_seconds),
                Some(self.cfg.latency_rate),
            )?;
            let token = mark(&pair)?;
            let mut mem = Memory::default();
            wait_marker(
                &pair,
                token,
                rep.as_mut(),
                Instant::now(),
                self.cfg.timeout,
                &mut mem,
            )?;
            // Commit time at A of each row's last version (A's own commits: exact).
            let qa = format!(
                "SELECT id, qty, (extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint \
                 FROM items WHERE ts >= {}",
                lit(&since)
            );
            let qb = "SELECT id, qty, (extract(epoch FROM min(seen)) * 1000000)::bigint \
                      FROM lat_log GROUP BY id, qty";
            let parse = |rows: Vec<Vec<Option<String>>>| -> HashMap<(i64, i64), i64> {
                rows.into_iter()
                    .filter_map(|r| {
                        let n = |i: usize| r.get(i)?.as_deref()?.parse::<i64>().ok();
                        Some(((n(0)?, n(1)?), n(2)?))
                    })
                    .collect()
            };
            let at_a = parse(pair.a.rows(&qa)?);
            let at_b = parse(pair.b.rows(qb)?);
            let mut lat: Vec<f64> = at_a
                .iter()
                .filter_map(|(k, ta)| at_b.get(k).map(|tb| (tb - ta) as f64 / 1000.0))
                .collect();
            if lat.is_empty() {
                return Err("no row version matched between A and B".to_string());
            }
            lat.sort_by(|x, y| x.total_cmp(y));
            let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
            let out = [pct(0.50), pct(0.95), pct(0.99)];
            eprintln!(
                "latency {}: {} tps for {} s; {} row versions matched; p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                tool.label(),
                fmt_num(r.tps),
                self.cfg.latency_seconds,
                lat.len(),
                out[0],
                out[1],
                out[2],
                lat[lat.len() - 1]
            );
            if tool == Tool::Tandem {
                wait_outbox_empty(&pair, self.cfg.timeout)?;
                self.findings.push(format!(
                    "- Latency run tandem ({} s at {}/s): tandem's tables at A: {}; at B: {}.",
                    self.cfg.latency_seconds,
                    fmt_num(self.cfg.latency_rate as f64),
                    table_sizes(&pair.a)?,
                    table_sizes(&pair.b)?
                ));
            }
            Ok::<_, String>(out)
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------
    // Peak RSS during a large backlog drain (tandem)
    // -----------------------------------------------------------------------------------------

    fn rss(&mut self) {
        let n = self.cfg.rss_changes;
        let rss_row = format!("Peak RSS of tandem draining {} changes", fmt_num(n as f64));
        let rate_row = format!(
            "Drain of that backlog ({} changes, whole-table UPDATEs)",
            fmt_num(n as f64)
        );
        self.add_row(Row::new(
            &rss_row,
            "MB",
            Better::Lower,
            Some(Target::AtMost(100.0)),
        ));
        self.add_row(Row::new(&rate_row, "changes/s", Better::Higher, None));
        for r in [&rss_row, &rate_row] {
            self.put(r, Column::NoCapture, Cell::NotApplicable);
            for t in Tool::PEERS {
                let cell = if self.missing.contains_key(&t) {
                    Cell::NotInstalled
                } else {
                    Cell::NotApplicable
                };
                self.put(r, Column::Tool(t), cell);
            }
        }
        if let Some(cell) = self.missing_reason(Tool::Tandem) {
            self.put(&rss_row, Column::Tool(Tool::Tandem), cell.clone());
            self.put(&rate_row, Column::Tool(Tool::Tandem), cell);
            return;
        }
        match self.rss_run(n) {
            Ok((mbytes, rate)) => {
                self.put(&rss_row, Column::Tool(Tool::Tandem), Cell::Value(mbytes));
                self.put(&rate_row, Column::Tool(Tool::Tandem), Cell::Value(rate));
            }
            Err(e) => {
                eprintln!("rss: FAILED: {e}");
                self.put(
                    &rss_row,
                    Column::Tool(Tool::Tandem),
                    Cell::Failed(e.clone()),
                );
                self.put(&rate_row, Column::Tool(Tool::Tandem), Cell::Failed(e));
            }
        }
    }

    fn rss_run(&mut self, n: u64) -> Res<(f64, f64)> {
        let pair = self.env.clusters.fresh_pair("rss_tandem")?;
        load_same(&pair, self.cfg.rows)?;
        let mut rep = peers::setup(&self.env, Tool::Tandem, &pair, Schema::Same, false)?;
        let result = (|| {
            let rows = self.cfg.rows;
            let t = Instant::now();
            let mut queued = 0u64;
            while queued < n {
                let k = (n - queued).min(rows);
                pair.a.exec(&format!(
                    "UPDATE items SET qty = qty + 1, ts = clock_timestamp() WHERE id <= {k}"
                ))?;
                queued += k;
            }
            eprintln!(
                "rss: {} changes queued in {:.1} s",
                fmt_num(queued as f64),
                t.elapsed().as_secs_f64()
            );
            let outbox_before = table_sizes(&pair.a)?;
            let token = mark(&pair)?;
            let t0 = Instant::now();
            rep.resume()?;
            let mut mem = Memory::default();
            let secs = wait_marker(&pair, token, rep.as_mut(), t0, self.cfg.timeout, &mut mem)?;
            let late = check_equal(&pair, Schema::Same, t0, self.cfg.timeout)?;
            let secs = late.unwrap_or(secs);
            wait_outbox_empty(&pair, self.cfg.timeout)?;
            if let Some(pid) = rep.pid() {
                if let Some(kb) = status_kb(pid, "VmHWM") {
                    mem.hwm_kb = mem.hwm_kb.max(kb);
                }
            }
            let peak = mb(mem.hwm_kb.max(mem.max_rss_kb));
            eprintln!(
                "rss: drained {} changes in {secs:.1} s ({} changes/s); tandem peak RSS {peak:.1} MB",
                fmt_num(queued as f64),
                fmt_num(queued as f64 / secs)
            );
            self.findings.push(format!(
                "- {} -change backlog: tandem's tables at A before the drain: {outbox_before}; after: {}.",
                fmt_num(queued as f64),
                table_sizes(&pair.a)?
            ));
            Ok::<_, String>((peak, queued as f64 / secs))
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------
    // Outbox upkeep under a steady load (opt-in: TANDEM_BENCH_WORKLOADS=...,soak)
    // -----------------------------------------------------------------------------------------

    fn soak(&mut self) {
        let secs = self.cfg.soak_seconds;
        let row = format!(
            "Soak: tandem's tables at A after {} s at {}/s (outbox + id_map)",
            secs,
            fmt_num(self.cfg.latency_rate as f64)
        );
        self.add_row(Row::new(&row, "MB", Better::Lower, None));
        self.put(&row, Column::NoCapture, Cell::NotApplicable);
        for t in Tool::PEERS {
            self.put(&row, Column::Tool(t), Cell::NotApplicable);
        }
        if let Some(cell) = self.missing_reason(Tool::Tandem) {
            self.put(&row, Column::Tool(Tool::Tandem), cell);
            return;
        }
        let cell = match self.soak_run(secs) {
            Ok(mb) => Cell::Value(mb),
            Err(e) => {
                eprintln!("soak: FAILED: {e}");
                Cell::Failed(e)
            }
        };
        self.put(&row, Column::Tool(Tool::Tandem), cell);
    }

    fn soak_run(&mut self, secs: u64) -> Res<f64> {
        let pair = self.env.clusters.fresh_pair("soak_tandem")?;
        load_same(&pair, self.cfg.rows)?;
        let mut rep = peers::setup(&self.env, Tool::Tandem, &pair, Schema::Same, true)?;
        let size_mb = |db: &support::pg::Db| -> Res<f64> {
            let bytes = db.one(
                "SELECT pg_total_relation_size('tandem.outbox') + pg_total_relation_size('tandem.id_map')",
            )?;
            Ok(bytes.and_then(|b| b.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0 / 1024.0)
        };
        let result = (|| {
            let mut samples = vec![format!("0 s: {:.1} MB", size_mb(&pair.a)?)];
            let mut done = 0;
            while done < secs {
                let chunk = (secs - done).min(60);
                self.pgbench_update(&pair.name, None, Some(chunk), Some(self.cfg.latency_rate))?;
                rep.check()?;
                done += chunk;
                samples.push(format!("{done} s: {:.1} MB", size_mb(&pair.a)?));
            }
            let token = mark(&pair)?;
            let mut mem = Memory::default();
            wait_marker(
                &pair,
                token,
                rep.as_mut(),
                Instant::now(),
                self.cfg.timeout,
                &mut mem,
            )?;
            wait_outbox_empty(&pair, self.cfg.timeout)?;
            let end = size_mb(&pair.a)?;
            self.findings.push(format!(
                "- Soak ({secs} s at {}/s): tandem's tables at A (outbox + id_map): {}; at the end: {}; at B: {}.",
                fmt_num(self.cfg.latency_rate as f64),
                samples.join(", "),
                table_sizes(&pair.a)?,
                table_sizes(&pair.b)?
            ));
            eprintln!("soak: {}", samples.join(", "));
            Ok::<_, String>(end)
        })();
        let down = rep.teardown();
        if let Err(e) = &down {
            eprintln!("teardown {}: {e}", pair.name);
        }
        drop(rep);
        let dropped = self.env.clusters.retire_pair(pair);
        let v = result?;
        down?;
        dropped?;
        Ok(v)
    }

    // -----------------------------------------------------------------------------------------

    fn render(&mut self, took: Duration) -> String {
        let mut s = String::new();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("model name")
                        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
                })
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let cores = thread::available_parallelism().map_or(0, |n| n.get());
        let mem_gb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            })
            .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
        let _ = writeln!(
            s,
            "## tandem vs. peers — {} UTC\n\nMachine: {cores} cores ({cpu}), {mem_gb:.0} GB; both \
             clusters and every tool on it. PostgreSQL {} (fsync off, synchronous_commit on, \
             wal_level logical, shared_buffers 256MB). pgbench with {} clients. {} rows in `items`. \
             tandem: release build, entities `{}`, batch size {}. Run took {:.0} min.\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M"),
            self.env.clusters.offers.server_version,
            self.cfg.clients,
            fmt_num(self.cfg.rows as f64),
            self.env.tandem_direction,
            self.env
                .tandem_batch
                .map_or("default (1000)".to_string(), |b| b.to_string()),
            took.as_secs_f64() / 60.0
        );
        let _ = writeln!(
            s,
            "tandem measured: the working tree as built for this run (fingerprint of src/ and \
             sql/: `{}`).\n",
            self.fingerprint
        );
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        let _ = writeln!(
            s,
            "Load average at the end (1, 5, 15 min): {} — other work on the machine shares the \
             2 cores, so compare figures within one run, not across runs.\n",
            load.join(", ")
        );
        self.report.notes.clear();
        for (t, why) in &self.missing {
            self.report.notes.push(format!("- {}: {why}", t.label()));
        }
        self.report.notes.push(
            "- ↑ higher is better, ↓ lower is better. Ratio: tandem's figure ÷ the best peer's \
             (for ↓ rows, below 1 is better). Drains are timed from resume until a marker row \
             written last on A is visible on B; B's rows are then compared with A's (md5)."
                .into(),
        );
        self.report.notes.extend(self.findings.iter().cloned());
        s.push_str(&self.report.markdown());
        s
    }
}

/// FNV-1a over the paths and contents of src/ and sql/ (sorted): tells which tree a table
/// measured, without git.
fn tree_fingerprint() -> String {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    walk(&root.join("src"), &mut files);
    walk(&root.join("sql"), &mut files);
    files.sort();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in &files {
        let rel = f
            .strip_prefix(&root)
            .unwrap_or(f)
            .to_string_lossy()
            .into_owned();
        for b in rel.bytes().chain(std::fs::read(f).unwrap_or_default()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}, {} files", files.len())
}

/// Sizes of tandem's tables in a database.
fn table_sizes(db: &support::pg::Db) -> Res<String> {
    let rows = db.rows(
        "SELECT c.relname, pg_size_pretty(pg_total_relation_size(c.oid)), \
                (SELECT count(*) FROM tandem.outbox), (SELECT count(*) FROM tandem.id_map) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'tandem' AND c.relname IN ('outbox', 'id_map') ORDER BY c.relname",
    )?;
    let mut parts = Vec::new();
    for r in rows {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let count = if get(0) == "outbox" { get(2) } else { get(3) };
        parts.push(format!("{} {} ({count} rows)", get(0), get(1)));
    }
    Ok(parts.join(", "))
}

/// The statements that took the most time in a database during the drain.
fn top_statements(side: &str, db: &support::pg::Db, wall: f64) -> Res<String> {
    let rows = db.rows(
        "SELECT calls, round(total_exec_time::numeric, 0), round(mean_exec_time::numeric, 3), \
                regexp_replace(query, '\\s+', ' ', 'g') \
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT 8",
    )?;
    let mut s = format!(
        "- pg_stat_statements at {side} during the W1 tandem drain ({wall:.1} s wall), top by total time:"
    );
    for r in rows {
        let get = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
        let q: String = get(3).chars().take(110).collect();
        let _ = write!(
            s,
            "\n  - {} ms total, {} calls, {} ms each: `{}`",
            get(1),
            get(0),
            get(2),
            q.replace('`', "'")
        );
    }
    Ok(s)
}

/// What auto_explain logged (statements of 20 ms or more) since `from`: how many, and the
/// scan nodes they used, most frequent first.
fn slow_plans(side: &str, log: &std::path::Path, from: u64) -> String {
    let text = std::fs::read(log)
        .map(|b| String::from_utf8_lossy(&b[(from as usize).min(b.len())..]).into_owned())
        .unwrap_or_default();
    let plans = text.matches("  plan:").count();
    let mut nodes: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let t = line.trim_start_matches(['\t', ' ', '-', '>']);
        if t.contains("Scan") && !t.starts_with("Query Text") {
            let node = t.split("  (").next().unwrap_or(t).trim().to_string();
            *nodes.entry(node).or_default() += 1;
        }
    }
    let mut nodes: Vec<(String, usize)> = nodes.into_iter().collect();
    nodes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let top: Vec<String> = nodes
        .iter()
        .take(6)
        .map(|(n, c)| format!("`{n}` ×{c}"))
        .collect();
    format!(
        "- auto_explain at {side}: {plans} statement(s) took ≥ 20 ms; their scans: {}",
        if top.is_empty() {
            "—".to_string()
        } else {
            top.join(", ")
        }
    )
}

/// Batch sizes and times from tandem's JSON log (one line per non-empty batch).
fn batch_stats(log: &std::path::Path, n: u64) -> String {
    let Ok(text) = std::fs::read_to_string(log) else {
        return format!("- (no tandem log at {})", log.display());
    };
    let mut times = Vec::new();
    let mut claimed = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let msg = v["fields"]["message"].as_str().unwrap_or_default();
        let Some((_, rest)) = msg.split_once(": ") else {
            continue;
        };
        let Some(c) = rest
            .strip_suffix("")
            .and_then(|r| r.split(" claimed").next())
        else {
            continue;
        };
        let Ok(c) = c.trim().parse::<u64>() else {
            continue;
        };
        let Some(ts) = v["timestamp"]
            .as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        times.push(ts);
        claimed.push(c);
    }
    if times.len() < 2 {
        return format!(
            "- tandem log {}: {} batch lines",
            log.display(),
            times.len()
        );
    }
    let mut gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).num_microseconds().unwrap_or(0) as f64 / 1000.0)
        .collect();
    gaps.sort_by(|a, b| a.total_cmp(b));
    let total: u64 = claimed.iter().sum();
    let mean = total as f64 / claimed.len() as f64;
    let med = gaps[gaps.len() / 2];
    let p90 = gaps[(gaps.len() * 9) / 10];
    format!(
        "- tandem's log (W1): {} batches claimed {} outbox rows (of {} queued) — {mean:.0} per batch; \
         time between consecutive batches: median {med:.1} ms, p90 {p90:.1} ms → {:.0} µs per change.",
        claimed.len(),
        fmt_num(total as f64),
        fmt_num(n as f64),
        1000.0 * med / mean.max(1.0)
    )
}
