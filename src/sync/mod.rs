//! The pipeline that keeps both sides in step: one loop per direction, each running
//! batches (see [`batch`]), polling adaptively, backing off while a database is away.

pub mod batch;
pub mod drift;
pub mod metrics;
pub mod order;
pub mod policy;
pub mod retry;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Config, Side};
use crate::endpoint::{Endpoint, EndpointError, ErrorKind, Outcome};
use crate::model::Key;
use policy::{Decision, Job, Policy};

pub use batch::{run_batch, BatchReport, Staged};

/// The two databases.
#[derive(Clone)]
pub struct Sides {
    pub a: Arc<dyn Endpoint>,
    pub b: Arc<dyn Endpoint>,
}

impl Sides {
    /// The endpoint of `side`.
    pub fn get(&self, side: Side) -> &Arc<dyn Endpoint> {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// Directions that carry at least one entity.
fn directions(config: &Config) -> Vec<Side> {
    [Side::A, Side::B]
        .into_iter()
        .filter(|s| config.entities.iter().any(|e| e.direction.flows(*s)))
        .collect()
}

/// Applies every eligible pending change in both directions until none is left (changes
/// that failed wait for their retry time and are not eligible). For `run --once`.
pub async fn drain(config: &Config, sides: &Sides) -> Result<BatchReport, EndpointError> {
    drain_except(config, sides, &[]).await
}

/// [`drain`], leaving the changes of the `paused` entities pending (schema drift).
pub async fn drain_except(
    config: &Config,
    sides: &Sides,
    paused: &[String],
) -> Result<BatchReport, EndpointError> {
    let mut total = BatchReport::default();
    loop {
        let mut progressed = false;
        for from in directions(config) {
            let source = sides.get(from).as_ref();
            let target = sides.get(from.other()).as_ref();
            let log = |r: &BatchReport| log_batch(from, r);
            loop {
                let r = retrying(config, || {
                    run_burst(config, source, target, None, paused, &|| true, &log)
                })
                .await?;
                total.add(&r);
                if r.claimed == 0 {
                    break;
                }
                progressed = true;
            }
        }
        // Changes applied in one direction can cause captured changes in the other (the
        // target's own triggers and cascades): go round until both are quiet.
        if !progressed {
            return Ok(total);
        }
    }
}

async fn retrying<F, Fut>(config: &Config, mut f: F) -> Result<BatchReport, EndpointError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<BatchReport, EndpointError>>,
{
    let policy = Policy::new(&config.sync);
    let mut failures = 0;
    loop {
        let e = match f().await {
            Ok(r) => return Ok(r),
            Err(e) => e,
        };
        match policy.on_batch_error(Job::Once, e.kind(), failures) {
            Decision::RetryBatch { delay } => {
                warn!("{e}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
                failures += 1;
            }
            _ => return Err(e),
        }
    }
}

fn log_batch(from: Side, r: &BatchReport) {
    info!(
        "{from}→{}: {} claimed, {} written, {} unchanged, {} stale, {} after delete, {} failed, {} suspended",
        from.other(),
        r.claimed,
        r.written,
        r.unchanged,
        r.stale,
        r.deleted,
        r.failed,
        r.suspended
    );
}

/// How long one direction may keep its pipeline of batches going while the other waits for
/// its turn: long enough that filling and draining the pipeline costs little, short enough
/// that a busy direction delays the other by at most this much.
const BURST: Duration = Duration::from_millis(500);

/// Runs batches from `from` to `to` back to back while there is work (for at most `budget`
/// when given), pipelined: while the target applies one batch, the source settles the one
/// before and claims the next, all at once. The target still applies the batches one after
/// another, in order, so a record's changes reach it in sequence. `each` sees every batch's
/// report; the sum is returned. `go_on` is asked before each batch is applied (shutdown, lost lead): when
/// it says no, the burst settles what was applied and returns. An endpoint that cannot claim
/// ahead runs one batch. Changes of `paused` entities are not claimed.
pub async fn run_burst(
    config: &Config,
    from: &dyn Endpoint,
    to: &dyn Endpoint,
    budget: Option<Duration>,
    paused: &[String],
    go_on: &(dyn Fn() -> bool + Sync),
    each: &(dyn Fn(&BatchReport) + Sync),
) -> Result<BatchReport, EndpointError> {
    let started = std::time::Instant::now();
    let mut total = BatchReport::default();
    let mut in_flight: HashSet<i64> = HashSet::new();
    let mut held = batch::Held::new();
    let first = batch::stage(config, from, 0, &in_flight, paused).await?;
    if !first.pipelined {
        let report = batch::complete(config, from, to, first).await?;
        each(&report);
        return Ok(report);
    }
    let mut next = Some(first);
    let mut applied: Option<(Staged, Vec<Outcome>, DateTime<Utc>)> = None;
    // A claim that failed ends the burst, after what the target committed is settled.
    let mut failed: Option<EndpointError> = None;
    loop {
        let Some(mut current) = next.take().filter(|s| s.head_rows > 0 && go_on()) else {
            if let Some((s, o, at)) = applied.take() {
                let r = batch::finish(config, from, s, o, at).await?;
                each(&r);
                total.add(&r);
            }
            return failed.map_or(Ok(total), Err);
        };
        in_flight.extend(&current.seqs);
        let more = budget.is_none_or(|b| started.elapsed() < b);
        let (after, skip) = (current.head_max, in_flight.clone());
        let settle = applied.take();
        let settled_seqs: Vec<i64> = settle.as_ref().map_or(Vec::new(), |(s, ..)| s.seqs.clone());
        let untrusted: HashSet<(String, Key)> = settle
            .iter()
            .map(|(s, ..)| s)
            .chain([&current])
            .flat_map(|s| s.changes().iter())
            .map(|c| (c.entity.clone(), c.source_key.clone()))
            .collect();
        // Settling N-1 and claiming N+1 run side by side too (two connections): the claim
        // skips N-1's rows, and its link hints may not show what N-1 and N write back yet,
        // which is why only updates trust them (see LinkWrite::known).
        let settled = async {
            match settle {
                Some((s, o, at)) => Some(batch::finish(config, from, s, o, at).await),
                None => None,
            }
        };
        let claimed = async {
            if more {
                Some(batch::stage(config, from, after, &skip, paused).await)
            } else {
                None
            }
        };
        let source = async { tokio::join!(settled, claimed) };
        let target = async {
            let r = batch::apply_staged(config, to, &mut current, &mut held).await;
            (r, Utc::now())
        };
        let ((outcomes, at), (finished, staged)) = tokio::join!(target, source);
        if let Some(r) = finished {
            let r = r?;
            each(&r);
            total.add(&r);
            for s in &settled_seqs {
                in_flight.remove(s);
            }
        }
        let outcomes = outcomes?;
        // A batch whose rows all belonged to an earlier batch of the burst has nothing to settle.
        if current.claimed() > 0 {
            applied = Some((current, outcomes, at));
        }
        match staged {
            Some(Ok(mut s)) => {
                s.distrust(untrusted);
                next = Some(s);
            }
            Some(Err(e)) => failed = Some(e),
            None => {}
        }
    }
}

/// Runs both directions until `shutdown` turns true; returns once the batch in flight is
/// finished (a batch is never cut in the middle: it commits or rolls back whole).
///
/// The two directions take turns in one loop rather than running side by side: conflict
/// resolution at one side may discard that side's pending changes of a record, which must not
/// be in flight to the other side at that moment.
pub async fn run(config: Arc<Config>, sides: Sides, shutdown: watch::Receiver<bool>) {
    run_gated(config, sides, shutdown, None, Arc::default()).await
}

/// Decides before every batch whether this instance may apply now: with several instances,
/// only the one holding the lead may (see `service::leader`).
pub trait Gate: Send + Sync {
    /// May a batch start now?
    fn open(&self) -> bool;
}

/// How long the loop pauses while the gate is closed before asking again.
const GATE_PAUSE: Duration = Duration::from_millis(50);

/// [`run`], starting a batch only while `gate` (if any) is open, and claiming nothing of the
/// entities `paused` names at the time (schema drift, see [`drift`]).
pub async fn run_gated(
    config: Arc<Config>,
    sides: Sides,
    mut shutdown: watch::Receiver<bool>,
    gate: Option<Arc<dyn Gate>>,
    paused: Arc<drift::Paused>,
) {
    let closed = || gate.as_ref().is_some_and(|g| !g.open());
    let dirs = directions(&config);
    let max_idle = Duration::from_millis(config.sync.poll_interval_ms.max(1));
    let mut idle = MIN_IDLE;
    let policy = Policy::new(&config.sync);
    let mut failures: u32 = 0;
    // The kind of the latest batch error of this round, for the policy.
    let mut failed_kind: Option<ErrorKind> = None;
    info!("sync started");
    while !*shutdown.borrow() {
        let mut busy = false;
        if closed() {
            tokio::select! {
                _ = tokio::time::sleep(GATE_PAUSE) => {}
                _ = shutdown.changed() => {}
            }
            continue;
        }
        for &from in &dirs {
            if *shutdown.borrow() || closed() {
                break;
            }
            let (source, target) = (sides.get(from), sides.get(from.other()));
            let each = |r: &BatchReport| {
                metrics::record_batch(from, r);
                if r.claimed > 0 {
                    log_batch(from, r);
                }
            };
            let go_on = || !*shutdown.borrow() && !closed();
            let skip = paused.entities();
            let result = run_burst(
                &config,
                source.as_ref(),
                target.as_ref(),
                Some(BURST),
                &skip,
                &go_on,
                &each,
            )
            .await;
            if let Err(e) = &result {
                metrics::record_error(from, e);
            }
            match result {
                Ok(r) => {
                    if r.claimed > 0 {
                        busy = true;
                    }
                }
                Err(e) => {
                    failed_kind = Some(e.kind());
                    warn!("{from}→{}: {e}{}", from.other(), Policy::hint(e.kind()));
                }
            }
        }
        let retry = failed_kind
            .take()
            .map(|kind| policy.on_batch_error(Job::Service, kind, failures));
        let wait = if let Some(decision) = retry {
            // The service never stops on its own: the policy retries every batch error.
            let wait = decision
                .delay()
                .unwrap_or(Duration::from_millis(config.sync.retry_max_ms));
            info!("retrying in {:.1} s", wait.as_secs_f64());
            failures = failures.saturating_add(1);
            wait
        } else {
            if failures > 0 {
                info!("working again");
                failures = 0;
            }
            if busy {
                idle = MIN_IDLE;
                Duration::ZERO
            } else {
                let w = idle;
                idle = (idle * 2).min(max_idle);
                w
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    info!("sync stopped");
}

/// The shortest pause between polls: changes arriving right after one batch are picked up
/// quickly, while an idle outbox is polled less and less often, up to `poll_interval_ms`.
const MIN_IDLE: Duration = Duration::from_millis(10);
