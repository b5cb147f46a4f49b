//! Deterministic simulation of the whole pipeline (issue 14): the real `sync` code between two
//! in-memory databases (`tandem::endpoint::memory`), with users writing to both sides at once,
//! while a seeded scheduler interleaves their transactions with tandem's claims, applies and
//! write-backs, crashes tandem between any two of them, takes a side away and loses replies
//! after commit. At the end, faults and users stop, the real `sync::drain` runs until both
//! outboxes are quiet, and the invariants are checked:
//! - both sides equal through the mapping (values, codes, parents, peer id columns);
//! - every record linked on both sides, the same pairs in both id maps;
//! - both outboxes empty: nothing pending, nothing suspended (no change here is a real row
//!   error an operator must fix, so any suspended change is a defect);
//! - the id maps' unique keys hold at every step (the model asserts them).
//!
//! Everything is single-threaded and seeded (ChaCha8), so a seed replays exactly:
//! `SIM_SEED=n cargo test --release --test simulation -- --nocapture` prints its trace;
//! with `SIM_DUMP=order_item` also that entity's rows, links and outbox after every step.
//! `SIM_SEEDS=N` (default 2000 in `cargo test`) seeds from `SIM_FIRST_SEED` (default 1);
//! `SIM_STEPS` (default 60) steps of workload per seed. `deploy/soak.sh sim` runs millions.
//! `SIM_WORKLOAD=full` adds key moves, reused legacy numbers and sides without foreign keys;
//! `SIM_WORKLOAD=full_fixed_keys` is that without key changes at A (other histories).
//! `SIM_RACING=1`: a crash may be an instance that lost its lease and writes its last batch
//! back later, while the instance that took over already works (`lost_leases_keep_…` runs
//! 2000 such seeds in `cargo test`).

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use tandem::config::{self, Config, Side};
use tandem::endpoint::memory::{Call, Clock, Fk, MemDb, MemEndpoint};
use tandem::endpoint::{Endpoint, Outcome};
use tandem::mapping::translate;
use tandem::model::{Image, Key};
use tandem::sync::{self, batch, Sides, Staged};

const CONFIG: &str = r#"
[a]
kind = "postgres"
url = "postgres://sim@memory/a"
[b]
kind = "postgres"
url = "postgres://sim@memory/b"
[sync]
batch_size = BATCH
max_attempts = 5
retry_min_ms = 100
retry_max_ms = 2000

[[entities]]
name = "order"
on_conflict = "ORDER_POLICY"
a = { table = "dbo.ORDERS", key = ["ORDER_NO"], peer_id_column = "NEW_ID" }
b = { table = "public.orders", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "CUST_NAME", b = "customer" },
  { a = "STATUS", b = "status", values = { O = "open", C = "closed", X = "cancelled" } },
  { a = "AMOUNT", b = "amount" },
]

[[entities]]
name = "order_item"
on_conflict = "ITEM_POLICY"
a = { table = "dbo.ORDER_ITEMS", key = ["ORDER_NO", "LINE_NO"] }
b = { table = "public.order_items", key = ["id"] }
columns = [
  { a = "ORDER_NO", b = "order_id", ref = "order" },
  { a = "LINE_NO", b = "line_no" },
  { a = "QTY", b = "quantity" },
]
"#;

struct Knobs {
    seeds: Vec<u64>,
    steps: usize,
    verbose: bool,
    /// The full workload (`SIM_WORKLOAD=full`).
    full: bool,
    /// The full workload without key changes at A (`SIM_WORKLOAD=full_fixed_keys`).
    fixed_keys: bool,
    /// Lost leases (`SIM_RACING=1`).
    racing: bool,
}

fn env_num(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seeds that found a bug in a long run (each fixed; see the commits): `cargo test` replays
/// them after its own range, so each fix stays proven.
const FOUND: [u64; 11] = [
    9_114, 135_631, 146_855, 292_141, 353_185, 484_427, 557_833, 559_307, 635_583, 728_216, 901_486,
];

/// Seeds of the full workload that found a bug (each fixed): `cargo test` replays them too
/// (`full_workload_seeds_that_found_a_bug_pass`), while the full workload as a whole still
/// fails some seeds (README: race table, open row).
const FOUND_FULL: [u64; 104] = [
    7, 44, 62, 118, 342, 363, 471, 653, 760, 786, 846, 867, 1_044, 1_219, 1_365, 1_381, 1_394,
    1_739, 2_131, 2_673, 3_053, 3_736, 3_877, 4_828, 5_236, 5_374, 5_930, 6_044, 6_069, 7_804,
    8_082, 8_567, 8_748, 9_411, 9_670, 9_816, 11_171, 11_384, 11_775, 11_896, 12_476, 12_653,
    13_671, 13_709, 14_677, 15_346, 16_032, 18_559, 19_515, 19_521, 21_068, 21_577, 23_829, 24_827,
    35_062, 35_169, 36_158, 37_843, 37_896, 38_559, 38_572, 40_964, 44_713, 46_368, 48_615, 49_094,
    49_644, 50_143, 51_379, 51_466, 52_434, 52_926, 53_039, 54_448, 57_232, 58_221, 63_427, 64_491,
    64_838, 68_782, 71_633, 73_430, 74_963, 76_215, 76_362, 78_373, 81_788, 83_823, 87_238, 87_994,
    91_043, 91_390, 95_587, 104_033, 104_090, 104_588, 107_996, 108_101, 109_545, 110_174, 110_280,
    110_685, 117_946, 118_949,
];

/// Seeds of the full workload without key changes at A that found a bug (each fixed; 4866
/// found one in a rule tried and left out, a form of which stop 55 took):
/// replayed by `full_workload_with_fixed_keys_seeds_that_found_a_bug_pass`.
const FOUND_FIXED_KEYS: [u64; 30] = [
    1_264, 2_496, 2_959, 4_629, 4_866, 15_517, 20_745, 23_585, 27_090, 33_719, 42_553, 44_365,
    47_018, 52_926, 55_315, 57_341, 57_548, 60_922, 62_166, 83_823, 86_612, 92_172, 97_642,
    102_860, 105_392, 110_214, 110_294, 111_365, 115_253, 115_474,
];

fn knobs() -> Knobs {
    let steps = env_num("SIM_STEPS").unwrap_or(60) as usize;
    let workload = std::env::var("SIM_WORKLOAD").unwrap_or_default();
    let fixed_keys = workload == "full_fixed_keys";
    let full = workload == "full" || fixed_keys;
    let racing = std::env::var("SIM_RACING").as_deref() == Ok("1");
    match env_num("SIM_SEED") {
        Some(s) => Knobs {
            seeds: vec![s],
            steps,
            verbose: true,
            full,
            fixed_keys,
            racing,
        },
        None => {
            let n = env_num("SIM_SEEDS").unwrap_or(2000);
            let first = env_num("SIM_FIRST_SEED").unwrap_or(1);
            let mut seeds: Vec<u64> = (first..first + n).collect();
            if env_num("SIM_SEEDS").is_none() && env_num("SIM_FIRST_SEED").is_none() {
                seeds.extend(FOUND);
            }
            Knobs {
                seeds,
                steps,
                verbose: false,
                full,
                fixed_keys,
                racing,
            }
        }
    }
}

#[test]
fn seeded_simulation_keeps_every_invariant() {
    simulate(knobs());
}

/// Instances that lose their lease and write their last batch back late, while the one that
/// took over works (`SIM_RACING=1` for other ranges).
#[test]
fn lost_leases_keep_every_invariant() {
    let n = env_num("SIM_SEEDS").unwrap_or(2000);
    let first = env_num("SIM_FIRST_SEED").unwrap_or(1);
    simulate(Knobs {
        seeds: (first..first + n).collect(),
        steps: env_num("SIM_STEPS").unwrap_or(60) as usize,
        verbose: false,
        full: false,
        fixed_keys: false,
        racing: true,
    });
}

#[test]
fn full_workload_seeds_that_found_a_bug_pass() {
    simulate(Knobs {
        seeds: FOUND_FULL.to_vec(),
        steps: 60,
        verbose: false,
        full: true,
        fixed_keys: false,
        racing: false,
    });
}

#[test]
fn full_workload_with_fixed_keys_seeds_that_found_a_bug_pass() {
    simulate(Knobs {
        seeds: FOUND_FIXED_KEYS.to_vec(),
        steps: 60,
        verbose: false,
        full: true,
        fixed_keys: true,
        racing: false,
    });
}

/// Runs every seed of `knobs` and fails with the first problems found.
fn simulate(knobs: Knobs) {
    if knobs.verbose {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("SIM_LOG").unwrap_or_else(|_| "tandem=debug".into()))
            .with_test_writer()
            .without_time()
            .try_init();
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut failed = 0;
    for &seed in &knobs.seeds {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(run_seed(seed, &knobs))
        }));
        let problems = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(p)) => p,
            Err(panic) => panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panic".into()),
        };
        failed += 1;
        if std::env::var("SIM_LIST").is_ok() {
            let first = problems.lines().nth(1).unwrap_or(&problems).to_string();
            eprintln!(
                "seed {seed}: {}",
                first.chars().take(200).collect::<String>()
            );
        }
        if failures.len() < 5 {
            failures.push(format!("seed {seed}: {problems}"));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "simulation: {} seed(s) in {secs:.1} s ({:.0} seeds/s), {failed} failed",
        knobs.seeds.len(),
        knobs.seeds.len() as f64 / secs.max(1e-9),
    );
    assert!(
        failures.is_empty(),
        "{failed} seed(s) failed; the first ones below. Replay one with \
         SIM_SEED=n cargo test --test simulation -- --nocapture\n{}",
        failures.join("\n\n")
    );
}

/// One seed's world.
struct World {
    rng: ChaCha8Rng,
    config: Arc<Config>,
    clock: Clock,
    a: MemEndpoint,
    b: MemEndpoint,
    /// Keys ever used by users for an entity's generated key here (to re-create records
    /// with the same key, as legacy applications do).
    used: BTreeMap<(Side, String), Vec<Key>>,
    worker: Worker,
    trace: String,
    verbose: bool,
    /// The full workload (`SIM_WORKLOAD=full`): users also change key columns (keys given by
    /// values move; legacy numbers are renumbered), reuse legacy numbers of deleted records,
    /// and a side may have no foreign keys (children outlive their parent there).
    full: bool,
    /// Without key changes at A (`SIM_WORKLOAD=full_fixed_keys`): the full workload, but A's
    /// users never change the key columns A gives by values (no renumbering, no line or order
    /// changes of an item at A). The seeded generator then draws other histories, so this
    /// variant reaches races the full workload's seeds do not.
    fixed_keys: bool,
    /// Lost leases (`SIM_RACING=1`): a crash is an instance that lost its lease while its
    /// oldest batch was applied; it writes that batch back later, while the instance that took
    /// over already works (the fault suite's instances do so). Off by default: it draws from
    /// the seeded generator, so the seeds found without it would replay something else.
    racing: bool,
    /// Batches of instances that lost their lease, not yet written back.
    late: Vec<(Side, Staged, Applied)>,
}

/// A batch's outcomes and when the target committed them.
type Applied = (Vec<Outcome>, chrono::DateTime<chrono::Utc>);

/// Tandem's one running instance: a burst of one direction at a time, as `run_burst` drives
/// it (claim N+1 and settle N-1 while N is applied), each stage a step of its own.
struct Worker {
    from: Side,
    batches: VecDeque<(Staged, Option<Applied>)>,
    /// The last claim found nothing new: the burst ends once the rest is settled.
    exhausted: bool,
    /// Records whose change failed in this burst (see `batch::apply_staged`).
    held: batch::Held,
}

impl World {
    fn ep(&self, side: Side) -> &MemEndpoint {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    fn note(&mut self, line: String) {
        if self.verbose {
            eprintln!("{line}");
        }
        let _ = writeln!(self.trace, "{line}");
    }
}

async fn run_seed(seed: u64, knobs: &Knobs) -> Result<(), String> {
    let (steps, verbose, full) = (knobs.steps, knobs.verbose, knobs.full);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // Retries are due after a jittered delay: seeded too, so a seed replays exactly.
    sync::retry::seed_jitter(seed);
    let policies = ["a_wins", "b_wins", "newest_wins"];
    let batch = [1, 2, 3, 5, 100][rng.gen_range(0..5)];
    let text = CONFIG
        .replace("BATCH", &batch.to_string())
        .replace("ORDER_POLICY", policies[rng.gen_range(0..3)])
        .replace("ITEM_POLICY", policies[rng.gen_range(0..3)]);
    let config = Arc::new(
        config::parse(&text, Path::new("sim.toml"), &|_| None).map_err(|e| e.to_string())?,
    );
    let fk = |r: &mut ChaCha8Rng| {
        if r.gen_bool(0.8) || !full {
            Fk::Cascade
        } else {
            Fk::None
        }
    };
    let (fk_a, fk_b) = (fk(&mut rng), fk(&mut rng));
    let clock = Clock::default();
    let mut w = World {
        a: MemEndpoint::new(config.clone(), Side::A, fk_a, clock.clone()),
        b: MemEndpoint::new(config.clone(), Side::B, fk_b, clock.clone()),
        rng,
        config,
        clock,
        used: BTreeMap::new(),
        worker: Worker {
            from: Side::A,
            batches: VecDeque::new(),
            exhausted: false,
            held: batch::Held::new(),
        },
        trace: String::new(),
        verbose,
        full,
        fixed_keys: knobs.fixed_keys,
        racing: knobs.racing,
        late: Vec::new(),
    };
    w.note(format!(
        "seed {seed}: batch {batch}, fk A {fk_a:?} B {fk_b:?}, policies order {:?} item {:?}",
        w.config.entities[0].on_conflict, w.config.entities[1].on_conflict
    ));
    let watch = std::env::var("SIM_DUMP").ok().filter(|_| w.verbose);
    for _ in 0..steps {
        step(&mut w).await;
        if let Some(entity) = &watch {
            let state = dump_entity(&w, entity);
            w.note(state);
        }
    }
    for side in [Side::A, Side::B] {
        *w.ep(side).faults.lock().unwrap_or_else(|e| e.into_inner()) = Default::default();
    }
    w.worker.batches.clear();
    while !w.late.is_empty() {
        settle_late(&mut w).await;
    }
    let sides = Sides {
        a: Arc::new(w.a.clone()) as Arc<dyn Endpoint>,
        b: Arc::new(w.b.clone()) as Arc<dyn Endpoint>,
    };
    settle(&w, &sides).await?;
    // What an operator does with a record left at a side without foreign keys while its
    // parent was deleted at the other side (suspended, with a message that says so): delete
    // the orphan there (or create the parent again), then resubmit.
    let orphans = orphans(&w);
    if !orphans.is_empty() {
        for (side, entity, key) in &orphans {
            w.note(format!(
                "operator: delete orphan {entity} {key} at side {side}, resubmit"
            ));
            let now = w.clock.now();
            w.ep(*side)
                .db
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .delete(entity, key, now);
        }
        for side in [Side::A, Side::B] {
            let _ = tandem::endpoint::Admin::resubmit(w.ep(side), None).await;
        }
        settle(&w, &sides).await?;
    }
    let problems = check(&w);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} problem(s):\n- {}\ntrace:\n{}\nfinal state:\n{}",
            problems.len(),
            problems.join("\n- "),
            w.trace,
            dump(&w)
        ))
    }
}

/// Drains both directions (the real `sync::drain`) until nothing is pending, moving time past
/// the retry delays; gives up after a while (a change that never settles is then reported).
async fn settle(w: &World, sides: &Sides) -> Result<(), String> {
    for _ in 0..60 {
        sync::drain(&w.config, sides)
            .await
            .map_err(|e| format!("final drain: {e}\n{}", w.trace))?;
        let waiting = [&w.a, &w.b].iter().any(|ep| {
            ep.db
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .outbox
                .values()
                .any(|o| !o.suspended)
        });
        if !waiting {
            break;
        }
        w.clock.advance(2500);
    }
    Ok(())
}

/// Records at a side without foreign keys whose parent is gone there, and whose change is
/// suspended because the parent was deleted at the other side: (side, entity, key).
fn orphans(w: &World) -> Vec<(Side, String, Key)> {
    let mut out = Vec::new();
    for ep in [&w.a, &w.b] {
        let db = ep.db.lock().unwrap_or_else(|e| e.into_inner());
        for o in db.outbox.values() {
            let gone_parent = o.last_error.as_deref().is_some_and(|e| {
                e.contains("was deleted at the target")
                    || e.contains("is not at the source (deleted there, or never created")
            });
            if !o.suspended || !gone_parent || db.fk.get(&o.entity) != Some(&Fk::None) {
                continue;
            }
            let Some(row) = db.rows.get(&o.entity).and_then(|t| t.get(&o.key)) else {
                continue;
            };
            let Some(e) = w.config.entity(&o.entity) else {
                continue;
            };
            let orphan = e.columns.iter().any(|c| {
                c.parent.as_ref().is_some_and(|p| {
                    row.get(c.name(db.side)).is_some_and(|v| {
                        !v.is_null()
                            && !db.rows[p].contains_key(&Key::from_values(std::slice::from_ref(v)))
                    })
                })
            });
            if orphan {
                out.push((db.side, o.entity.clone(), o.key.clone()));
            }
        }
    }
    out
}

// --- the steps ------------------------------------------------------------------------

async fn step(w: &mut World) {
    w.clock.advance(w.rng.gen_range(0..300));
    if !w.late.is_empty() && w.rng.gen_bool(0.2) {
        settle_late(w).await;
        return;
    }
    let roll = w.rng.gen_range(0..100);
    match roll {
        0..=39 => {
            let side = if w.rng.gen_bool(0.5) {
                Side::A
            } else {
                Side::B
            };
            user_tx(w, side);
        }
        40..=89 => worker_step(w).await,
        90..=93 => {
            w.note("crash: tandem restarts".into());
            // With lost leases, the old instance still writes its oldest applied batch back.
            if w.racing && w.worker.batches.front().is_some_and(|(_, o)| o.is_some()) {
                if let Some((s, Some(applied))) = w.worker.batches.pop_front() {
                    w.note(format!(
                        "{}→: lost its lease, writes back later",
                        w.worker.from
                    ));
                    w.late.push((w.worker.from, s, applied));
                }
            }
            w.worker.batches.clear();
            w.worker.exhausted = false;
            w.worker.held.clear();
        }
        94..=96 => {
            let side = if w.rng.gen_bool(0.5) {
                Side::A
            } else {
                Side::B
            };
            let down = w.rng.gen_bool(0.5);
            w.note(format!("side {side} {}", if down { "down" } else { "up" }));
            w.ep(side)
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .down = down;
        }
        _ => {
            let side = if w.rng.gen_bool(0.5) {
                Side::A
            } else {
                Side::B
            };
            let call = [Call::Claim, Call::Apply, Call::WriteBack][w.rng.gen_range(0..3)];
            let after = w.rng.gen_bool(0.7) && std::env::var("SIM_LOST").as_deref() != Ok("0");
            w.note(format!(
                "side {side}: next {call:?} fails (after commit: {after})"
            ));
            w.ep(side)
                .faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .fail = Some((call, after));
        }
    }
}

/// The oldest batch of an instance that lost its lease is written back now (or, if that
/// fails, never: its changes are still pending, and claimed again).
async fn settle_late(w: &mut World) {
    let (from, s, (outcomes, at)) = w.late.remove(0);
    let source = w.ep(from).clone();
    let config = w.config.clone();
    match batch::finish(&config, &source, s, outcomes, at).await {
        Ok(r) => w.note(format!(
            "{from}→ (lost lease): settled: {} written, {} stale, {} deleted, {} failed",
            r.written, r.stale, r.deleted, r.failed
        )),
        Err(e) => w.note(format!("{from}→ (lost lease): write-back fails: {e}")),
    }
}

async fn worker_step(w: &mut World) {
    let from = w.worker.from;
    let source = w.ep(from).clone();
    let target = w.ep(from.other()).clone();
    let config = w.config.clone();
    let claimed = w.worker.batches.iter().filter(|(_, o)| o.is_none()).count();
    let applied = w.worker.batches.iter().filter(|(_, o)| o.is_some()).count();
    let mut can = Vec::new();
    if !w.worker.exhausted && claimed == 0 || (claimed == 1 && !w.worker.exhausted && applied == 0)
    {
        can.push(0); // claim
    }
    if claimed > 0 && applied <= 1 {
        can.push(1); // apply the oldest claimed
    }
    if w.worker.batches.front().is_some_and(|(_, o)| o.is_some()) {
        can.push(2); // settle the oldest applied
    }
    let Some(&what) = can.choose(&mut w.rng) else {
        // The burst is over: the other direction's turn.
        w.worker.from = from.other();
        w.worker.exhausted = false;
        w.worker.held.clear();
        return;
    };
    let result: Result<(), String> = match what {
        0 => {
            let after = w.worker.batches.back().map_or(0, |(s, _)| s.head_max);
            let skip: HashSet<i64> = w
                .worker
                .batches
                .iter()
                .flat_map(|(s, _)| s.seqs.iter().copied())
                .collect();
            match batch::stage(&config, &source, after, &skip, &[]).await {
                Ok(mut s) => {
                    // As `sync::run_burst`: link hints read while earlier batches of the burst
                    // are still to be settled are not trusted at write-back for their records.
                    s.distrust(
                        w.worker
                            .batches
                            .iter()
                            .flat_map(|(b, _)| b.changes().iter())
                            .map(|c| (c.entity.clone(), c.source_key.clone()))
                            .collect(),
                    );
                    w.note(format!(
                        "{from}→: claimed {} (head {})",
                        s.claimed(),
                        s.head_rows
                    ));
                    if s.head_rows == 0 {
                        w.worker.exhausted = true;
                    }
                    if s.claimed() > 0 {
                        w.worker.batches.push_back((s, None));
                    }
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        1 => {
            let Some(i) = w.worker.batches.iter().position(|(_, o)| o.is_none()) else {
                return;
            };
            let mut held = std::mem::take(&mut w.worker.held);
            let applied =
                batch::apply_staged(&config, &target, &mut w.worker.batches[i].0, &mut held).await;
            w.worker.held = held;
            match applied {
                Ok(outcomes) => {
                    let text = summary(&w.worker.batches[i].0, &outcomes);
                    w.note(format!(
                        "{from}→: applied {} change(s): {text}",
                        outcomes.len()
                    ));
                    w.worker.batches[i].1 = Some((outcomes, w.clock.now()));
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        _ => {
            let Some((s, Some((outcomes, at)))) = w.worker.batches.pop_front() else {
                return;
            };
            match batch::finish(&config, &source, s, outcomes, at).await {
                Ok(r) => {
                    w.note(format!(
                        "{from}→: settled: {} written, {} stale, {} deleted, {} failed, {} suspended",
                        r.written, r.stale, r.deleted, r.failed, r.suspended
                    ));
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
    };
    if let Err(e) = result {
        // A failed call ends the burst; what was not settled is claimed again later.
        w.note(format!("{from}→: burst ends: {e}"));
        w.worker.batches.clear();
        w.worker.exhausted = false;
        w.worker.held.clear();
        w.worker.from = from.other();
    }
}

fn summary(staged: &Staged, outcomes: &[Outcome]) -> String {
    staged
        .changes()
        .iter()
        .zip(outcomes)
        .map(|(c, o)| {
            let what = match o {
                Outcome::Done {
                    how, target_key, ..
                } => format!(
                    "{how:?} {}",
                    target_key.as_ref().map(Key::as_str).unwrap_or("-")
                ),
                Outcome::Failed(e) => format!("failed ({e})"),
            };
            format!("{} {} {} → {what}", c.entity, c.op, c.source_key)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

// --- the users --------------------------------------------------------------------------

/// One user transaction of 1–3 statements at `side`; refused as a whole when a statement is.
fn user_tx(w: &mut World, side: Side) {
    let n = if w.rng.gen_bool(0.2) {
        w.rng.gen_range(2..4)
    } else {
        1
    };
    let ep = w.ep(side).clone();
    let mut db = ep.db.lock().unwrap_or_else(|e| e.into_inner());
    let before = db.clone();
    let now = w.clock.now();
    let mut did = Vec::new();
    for _ in 0..n {
        match user_statement(w, &mut db, side, now) {
            Ok(what) => did.push(what),
            Err(why) => {
                db.rollback_to(before);
                drop(db);
                w.note(format!("user {side}: rolled back ({why})"));
                return;
            }
        }
    }
    drop(db);
    w.note(format!("user {side}: {}", did.join("; ")));
}

fn pick_row(rng: &mut ChaCha8Rng, db: &MemDb, entity: &str) -> Option<(Key, Image)> {
    let rows: Vec<(&Key, &Image)> = db.rows.get(entity)?.iter().collect();
    rows.choose(rng).map(|(k, r)| ((*k).clone(), (*r).clone()))
}

fn value_for(
    w: &mut World,
    db: &MemDb,
    side: Side,
    entity: &str,
    column: usize,
) -> Result<Value, String> {
    let e = w.config.entity(entity).ok_or("no entity")?.clone();
    let c = &e.columns[column];
    if let Some(parent) = &c.parent {
        let (k, _) = pick_row(&mut w.rng, db, parent).ok_or("no parent row")?;
        return Ok(k.values().into_iter().next().unwrap_or(Value::Null));
    }
    if let Some(map) = &c.values {
        let (a, b) = map.pairs[w.rng.gen_range(0..map.pairs.len())].clone();
        return Ok(if side == Side::A { a } else { b });
    }
    let name = c.name(side).to_lowercase();
    Ok(if name.contains("line") {
        // Keys given by values: in the safe workload each side numbers its own lines, so the
        // two sides never create one line at once (records created on both sides with the
        // same key are matched only where that key is given: see the README's race table).
        match (w.full, side) {
            (false, Side::B) => json!(w.rng.gen_range(4..7)),
            _ => json!(w.rng.gen_range(1..4)),
        }
    } else if name.contains("cust") {
        match w.rng.gen_range(0..5) {
            0 => Value::Null,
            1 => json!(""),
            2 => json!("Zoë"),
            _ => json!(format!("c{}", w.rng.gen_range(0..4))),
        }
    } else if w.rng.gen_bool(0.1) && !name.contains("qty") && !name.contains("quantity") {
        Value::Null
    } else {
        json!(w.rng.gen_range(1..5))
    })
}

fn user_statement(
    w: &mut World,
    db: &mut MemDb,
    side: Side,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, String> {
    let entity = w.config.entities[w.rng.gen_range(0..w.config.entities.len())].clone();
    let ts = entity.side(side).clone();
    let roll = w.rng.gen_range(0..100);
    let existing = pick_row(&mut w.rng, db, &entity.name);
    match (roll, existing) {
        (0..=39, _) | (_, None) => {
            let mut img = Image::new();
            for i in 0..entity.columns.len() {
                let v = value_for(w, db, side, &entity.name, i)?;
                img.insert(entity.columns[i].name(side).to_string(), v);
            }
            if let Some(p) = &ts.peer_id_column {
                img.insert(p.clone(), Value::Null);
            }
            if !entity.key_is_given(side) {
                let used = w.used.entry((side, entity.name.clone())).or_default();
                // A number still referenced by children left without their parent (no
                // foreign key) would adopt them: not reused.
                let referenced: BTreeSet<String> = w
                    .config
                    .entities
                    .iter()
                    .flat_map(|e| {
                        e.columns
                            .iter()
                            .filter(|c| c.parent.as_deref() == Some(entity.name.as_str()))
                            .flat_map(|c| {
                                db.rows[&e.name]
                                    .values()
                                    .filter_map(|r| r.get(c.name(side)).map(Value::to_string))
                            })
                    })
                    .collect();
                let reuse = used
                    .iter()
                    .filter(|k| !db.rows[&entity.name].contains_key(*k))
                    .filter(|k| {
                        k.values()
                            .first()
                            .is_none_or(|v| !referenced.contains(&v.to_string()))
                    })
                    .cloned()
                    .collect::<Vec<_>>();
                let key = match reuse.choose(&mut w.rng) {
                    // Legacy applications number their own records and reuse numbers.
                    Some(k) if w.full && side == Side::A && w.rng.gen_bool(0.3) => k.clone(),
                    _ => Key::from_values(&[json!(db.next_id(&entity.name))]),
                };
                used.push(key.clone());
                img.extend(key.to_object(&ts.key));
            }
            let k = db.insert(&entity.name, img, now).map_err(|r| r.0)?;
            Ok(format!("insert {} {k}", entity.name))
        }
        (40..=79, Some((k, _))) => {
            // Without key moves, columns that give a side its key stay as they are.
            let movable: Vec<usize> = (0..entity.columns.len())
                .filter(|&i| {
                    let c = &entity.columns[i];
                    if w.fixed_keys
                        && side == Side::A
                        && entity.side(side).key.iter().any(|k| k == c.name(side))
                    {
                        return false;
                    }
                    w.full
                        || [Side::A, Side::B]
                            .iter()
                            .all(|&s| !entity.side(s).key.iter().any(|k| k == c.name(s)))
                })
                .collect();
            let Some(&i) = movable.choose(&mut w.rng) else {
                return Err("nothing to update".into());
            };
            let mut set = Image::new();
            set.insert(
                entity.columns[i].name(side).to_string(),
                value_for(w, db, side, &entity.name, i)?,
            );
            if w.rng.gen_bool(0.3) {
                let j = *movable.choose(&mut w.rng).unwrap_or(&i);
                set.insert(
                    entity.columns[j].name(side).to_string(),
                    value_for(w, db, side, &entity.name, j)?,
                );
            }
            let text = serde_json::to_string(&set).unwrap_or_default();
            db.update(&entity.name, &k, &set, now).map_err(|r| r.0)?;
            Ok(format!("update {} {k} set {text}", entity.name))
        }
        (80..=84, Some((k, _)))
            if w.full && !entity.key_is_given(side) && side == Side::A && !w.fixed_keys =>
        {
            // A legacy key renumbered by a user.
            let to = db.next_id(&entity.name);
            let mut set = Image::new();
            set.extend(Key::from_values(&[json!(to)]).to_object(&ts.key));
            db.update(&entity.name, &k, &set, now).map_err(|r| r.0)?;
            Ok(format!("renumber {} {k} to {to}", entity.name))
        }
        (_, Some((k, _))) => {
            db.delete(&entity.name, &k, now);
            Ok(format!("delete {} {k}", entity.name))
        }
    }
}

/// One entity's rows, links and outbox rows at both sides, after every step of a replayed seed
/// (`SIM_DUMP=order_item`): where a record's link went wrong.
fn dump_entity(w: &World, entity: &str) -> String {
    dump(w)
        .lines()
        .filter(|l| l.starts_with("side ") || l.split_whitespace().any(|t| t == entity))
        .map(|l| format!("    | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Both databases as text, for a failing seed's report.
fn dump(w: &World) -> String {
    let mut out = String::new();
    for ep in [&w.a, &w.b] {
        let db = ep.db.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "side {}:", db.side);
        for (entity, rows) in &db.rows {
            for (k, r) in rows {
                let _ = writeln!(
                    out,
                    "  {entity} {k}: {}",
                    serde_json::to_string(r).unwrap_or_default()
                );
            }
        }
        for m in &db.id_map {
            let _ = writeln!(
                out,
                "  id_map {} own {:?} peer {:?} applied {} deleted {}",
                m.entity,
                m.own.as_ref().map(Key::as_str),
                m.peer.as_ref().map(Key::as_str),
                m.applied_seq,
                m.deleted
            );
        }
        for o in db.outbox.values() {
            let _ = writeln!(
                out,
                "  outbox {} {} {} {} suspended {} {:?}",
                o.seq, o.entity, o.op, o.key, o.suspended, o.last_error
            );
        }
    }
    out
}

// --- the end ----------------------------------------------------------------------------

/// The invariants, once both sides are quiet.
fn check(w: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let a = w.a.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let b = w.b.db.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for db in [&a, &b] {
        for o in db.outbox.values() {
            problems.push(format!(
                "side {}: outbox not empty: seq {} {} {} {} attempts {} suspended {}: {}",
                db.side,
                o.seq,
                o.entity,
                o.op,
                o.key,
                o.attempts,
                o.suspended,
                o.last_error.as_deref().unwrap_or("")
            ));
        }
    }
    for e in &w.config.entities {
        // Live links, as (A key, B key), as each side holds them.
        let live = |db: &MemDb| -> BTreeSet<(Key, Key)> {
            db.id_map
                .iter()
                .filter(|m| m.entity == e.name && !m.deleted)
                .filter_map(|m| Some((m.own.clone()?, m.peer.clone()?)))
                .map(|(own, peer)| {
                    if db.side == Side::A {
                        (own, peer)
                    } else {
                        (peer, own)
                    }
                })
                .filter(|(ka, kb)| {
                    a.rows[&e.name].contains_key(ka) && b.rows[&e.name].contains_key(kb)
                })
                .collect()
        };
        // A link not marked deleted names a live record at both sides (as the fault suite
        // checks): one left to a gone record keeps its keys from new records.
        for db in [&a, &b] {
            for m in db
                .id_map
                .iter()
                .filter(|m| m.entity == e.name && !m.deleted)
            {
                let (ka, kb) = if db.side == Side::A {
                    (&m.own, &m.peer)
                } else {
                    (&m.peer, &m.own)
                };
                let here = |k: &Option<Key>, d: &MemDb| {
                    k.as_ref().is_some_and(|k| d.rows[&e.name].contains_key(k))
                };
                if !(here(ka, &a) && here(kb, &b)) {
                    problems.push(format!(
                        "side {}: {} link A {} / B {} is live, but its records are not",
                        db.side,
                        e.name,
                        ka.as_ref().map_or("NULL".into(), |k| k.to_string()),
                        kb.as_ref().map_or("NULL".into(), |k| k.to_string()),
                    ));
                }
            }
        }
        let (la, lb) = (live(&a), live(&b));
        if la != lb {
            problems.push(format!(
                "{}: id maps differ: only at A {:?}, only at B {:?}",
                e.name,
                la.difference(&lb).collect::<Vec<_>>(),
                lb.difference(&la).collect::<Vec<_>>()
            ));
        }
        let a_of: BTreeMap<&Key, &Key> = la.iter().map(|(x, y)| (x, y)).collect();
        let b_of: BTreeMap<&Key, &Key> = la.iter().map(|(x, y)| (y, x)).collect();
        for ka in a.rows[&e.name].keys() {
            if !a_of.contains_key(ka) {
                problems.push(format!(
                    "{} A {ka}: not linked (or its peer is gone)",
                    e.name
                ));
            }
        }
        for kb in b.rows[&e.name].keys() {
            if !b_of.contains_key(kb) {
                problems.push(format!(
                    "{} B {kb}: not linked (or its peer is gone)",
                    e.name
                ));
            }
        }
        for (ka, kb) in &la {
            let (ra, rb) = (&a.rows[&e.name][ka], &b.rows[&e.name][kb]);
            for c in &e.columns {
                let va = ra.get(&c.a).cloned().unwrap_or(Value::Null);
                let vb = rb.get(&c.b).cloned().unwrap_or(Value::Null);
                let expect = match (&c.parent, &c.values) {
                    (Some(parent), _) => {
                        if va.is_null() {
                            Value::Null
                        } else {
                            let pk = Key::from_values(std::slice::from_ref(&va));
                            // A tombstone still maps keys: children left without
                            // their parent (no foreign key) point to its old key.
                            let link = a
                                .id_map
                                .iter()
                                .find(|m| m.entity == *parent && m.own.as_ref() == Some(&pk));
                            match link.and_then(|m| m.peer.clone()) {
                                Some(p) => p.values().into_iter().next().unwrap_or(Value::Null),
                                None => json!(format!("unlinked parent {pk}")),
                            }
                        }
                    }
                    (None, Some(map)) => translate(map, Side::A, &va).unwrap_or(Value::Null),
                    (None, None) => va.clone(),
                };
                if expect != vb {
                    problems.push(format!(
                        "{} A {ka} / B {kb}: column {}/{}: A {va} (expected at B: {expect}), B {vb}",
                        e.name, c.a, c.b
                    ));
                }
            }
            for (side, row, peer) in [(Side::A, ra, kb), (Side::B, rb, ka)] {
                if let Some(col) = &e.side(side).peer_id_column {
                    let want = peer.values().into_iter().next().unwrap_or(Value::Null);
                    if row.get(col) != Some(&want) {
                        problems.push(format!(
                            "{} {side} row of A {ka} / B {kb}: peer id column {col} is {:?}, not {want}",
                            e.name,
                            row.get(col)
                        ));
                    }
                }
            }
        }
    }
    problems
}
