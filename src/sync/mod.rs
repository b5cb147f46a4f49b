//! The pipeline that keeps both sides in step: one loop per direction, each running
//! batches (see [`batch`]), polling adaptively, backing off while a database is away.

pub mod batch;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

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

/// Runs both directions until `shutdown` turns true; returns once the in-flight batches
/// are finished (a batch is never cut in the middle: it commits or rolls back whole).
pub async fn run(config: Arc<Config>, sides: Sides, shutdown: watch::Receiver<bool>) {
    let mut tasks = Vec::new();
    for from in directions(&config) {
        let (config, sides, shutdown) = (config.clone(), sides.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            direction_loop(&config, &sides, from, shutdown).await
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            error!("a sync loop ended abnormally: {e}");
        }
    }
}

/// The shortest pause between polls: changes arriving right after one batch are picked up
/// quickly, while an idle outbox is polled less and less often, up to `poll_interval_ms`.
const MIN_IDLE: Duration = Duration::from_millis(10);

async fn direction_loop(
    config: &Config,
    sides: &Sides,
    from: Side,
    mut shutdown: watch::Receiver<bool>,
) {
    let max_idle = Duration::from_millis(config.sync.poll_interval_ms.max(1));
    let mut idle = MIN_IDLE;
    let mut failures: u32 = 0;
    let (source, target) = (sides.get(from).clone(), sides.get(from.other()).clone());
    info!("{from}→{}: started", from.other());
    while !*shutdown.borrow() {
        let wait = match run_batch(config, source.as_ref(), target.as_ref()).await {
            Ok(r) => {
                if failures > 0 {
                    info!("{from}→{}: working again", from.other());
                    failures = 0;
                }
                if r.claimed == 0 {
                    let w = idle;
                    idle = (idle * 2).min(max_idle);
                    w
                } else {
                    log_batch(from, &r);
                    idle = MIN_IDLE;
                    Duration::ZERO
                }
            }
            Err(e) => {
                let wait =
                    retry::backoff(failures, config.sync.retry_min_ms, config.sync.retry_max_ms);
                let hint = if e.is_transient() {
                    ""
                } else {
                    " (not a passing fault: check the databases and run `tandem check`)"
                };
                warn!(
                    "{from}→{}: {e}{hint}; retrying in {:.1} s",
                    from.other(),
                    wait.as_secs_f64()
                );
                failures = failures.saturating_add(1);
                wait
            }
        };
        if !wait.is_zero() {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    info!("{from}→{}: stopped", from.other());
}
