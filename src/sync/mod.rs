//! The pipeline that keeps both sides in step: one loop per direction, each running
//! batches (see [`batch`]), polling adaptively, backing off while a database is away.

pub mod batch;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::{Config, Side};
use crate::endpoint::{Endpoint, EndpointError};

pub use batch::{run_batch, BatchReport};

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

/// How many times `drain` retries a transient error before giving up.
const DRAIN_TRIES: u32 = 6;

/// Applies every eligible pending change in both directions until none is left (changes
/// that failed wait for their retry time and are not eligible). For `run --once`.
pub async fn drain(config: &Config, sides: &Sides) -> Result<BatchReport, EndpointError> {
    let mut total = BatchReport::default();
    loop {
        let mut progressed = false;
        for from in directions(config) {
            loop {
                let r = retrying(config, || {
                    run_batch(
                        config,
                        sides.get(from).as_ref(),
                        sides.get(from.other()).as_ref(),
                    )
                })
                .await?;
                total.add(&r);
                if r.claimed == 0 {
                    break;
                }
                progressed = true;
                log_batch(from, &r);
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
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() && attempt + 1 < DRAIN_TRIES => {
                let wait = retry::backoff(attempt, config.sync.retry_min_ms, 5_000);
                warn!("{e}; retrying in {} ms", wait.as_millis());
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
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

/// Runs both directions until `shutdown` turns true; returns once the batch in flight is
/// finished (a batch is never cut in the middle: it commits or rolls back whole).
///
/// The two directions take turns in one loop rather than running side by side: conflict
/// resolution at one side may discard that side's pending changes of a record, which must not
/// be in flight to the other side at that moment.
pub async fn run(config: Arc<Config>, sides: Sides, shutdown: watch::Receiver<bool>) {
    run_gated(config, sides, shutdown, None).await
}

/// Decides before every batch whether this instance may apply now: with several instances,
/// only the one holding the lead may (see `service::leader`).
pub trait Gate: Send + Sync {
    /// May a batch start now?
    fn open(&self) -> bool;
}

/// How long the loop pauses while the gate is closed before asking again.
const GATE_PAUSE: Duration = Duration::from_millis(50);

/// [`run`], starting a batch only while `gate` (if any) is open.
pub async fn run_gated(
    config: Arc<Config>,
    sides: Sides,
    mut shutdown: watch::Receiver<bool>,
    gate: Option<Arc<dyn Gate>>,
) {
    let closed = || gate.as_ref().is_some_and(|g| !g.open());
    let dirs = directions(&config);
    let max_idle = Duration::from_millis(config.sync.poll_interval_ms.max(1));
    let mut idle = MIN_IDLE;
    let mut failures: u32 = 0;
    info!("sync started");
    while !*shutdown.borrow() {
        let mut busy = false;
        let mut failed = false;
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
            let result = run_batch(&config, source.as_ref(), target.as_ref()).await;
            match &result {
                Ok(r) => crate::service::metrics::record_batch(from, r),
                Err(e) => crate::service::metrics::record_error(from, e),
            }
            match result {
                Ok(r) => {
                    if r.claimed > 0 {
                        log_batch(from, &r);
                        busy = true;
                    }
                }
                Err(e) => {
                    failed = true;
                    let hint = if e.is_transient() {
                        ""
                    } else {
                        " (not a passing fault: check the databases and run `tandem check`)"
                    };
                    warn!("{from}→{}: {e}{hint}", from.other());
                }
            }
        }
        let wait = if failed {
            let wait = retry::backoff(failures, config.sync.retry_min_ms, config.sync.retry_max_ms);
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
