//! Backfill: copy the rows that exist already, through the same pipeline as live changes.
//!
//! Each chunk of existing rows (in key order, keyset pagination) is queued *inside the source
//! database* as changes in its outbox, together with the progress, in one transaction. From
//! there the normal sync applies them: mapped, parents first, linked, guarded by sequence
//! numbers. That gives every promise of live sync for free — a backfilled row never overwrites
//! a newer live change (its sequence is older, see `backfill_chunk` in the SQL), never brings
//! back a row deleted meanwhile (the tombstone wins), records already on both sides with a
//! given key are linked, not duplicated — and memory stays flat whatever the table size: rows
//! never leave the database to be queued. The next chunk is queued only once the previous one
//! is settled, so live changes never wait behind more than one chunk.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use crate::config::{Config, Side};
use crate::endpoint::{EndpointError, Lease, Queued};
use crate::progress::Progress;
use crate::sync::policy::{Decision, Job, Policy};
use crate::sync::{run_batch, Sides};

/// What to backfill.
#[derive(Debug, Clone)]
pub struct Options {
    pub entity: String,
    /// The side whose rows are copied.
    pub from: Side,
    /// Rows per chunk.
    pub chunk: usize,
    /// At most this many rows per second.
    pub rate: Option<f64>,
    /// Forget saved progress and start over.
    pub restart: bool,
}

/// What a backfill did.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Rows queued by this run, per entity (parents first).
    pub queued: Vec<(String, u64)>,
    /// Rows of this run that were suspended (could not be applied).
    pub suspended: i64,
    /// Stopped by a signal before the end (progress is saved).
    pub interrupted: bool,
}

/// The entity and the parents it needs first (parents first), for `from`.
fn plan(config: &Config, entity: &str) -> Result<Vec<String>, EndpointError> {
    let Some(target) = config.entity(entity) else {
        let known: Vec<&str> = config.entities.iter().map(|e| e.name.as_str()).collect();
        return Err(EndpointError::Config(format!(
            "no entity {entity:?} in the config (entities: {})",
            known.join(", ")
        )));
    };
    let mut needed = vec![target.name.clone()];
    let mut i = 0;
    while i < needed.len() {
        if let Some(e) = config.entity(&needed[i]) {
            for p in e.parents() {
                if !needed.iter().any(|n| n == p) {
                    needed.push(p.to_string());
                }
            }
        }
        i += 1;
    }
    Ok(config
        .entities_parents_first()
        .into_iter()
        .filter(|e| needed.contains(&e.name))
        .map(|e| e.name.clone())
        .collect())
}

/// Runs a backfill until done or `stop` turns true.
pub async fn run(
    config: &Arc<Config>,
    sides: &Sides,
    opts: &Options,
    stop: watch::Receiver<bool>,
) -> Result<Report, EndpointError> {
    let from = opts.from;
    let entities = plan(config, &opts.entity)?;
    for name in &entities {
        if let Some(e) = config.entity(name) {
            if !e.direction.flows(from) {
                return Err(EndpointError::Config(format!(
                    "entity {name} does not travel from side {from} (direction in the config)"
                )));
            }
        }
    }
    let source = sides.get(from);
    // Asked before anything starts: a side that cannot backfill says so now.
    let bulk = crate::endpoint::bulk(source.as_ref(), "backfill")?;
    // Whoever leads applies the queued rows: a running `tandem run`, or else this backfill.
    let mut lease = source.try_lead().await?;
    if lease.is_none() {
        info!("another tandem instance is active: it applies what this backfill queues");
    }
    let mut report = Report::default();
    for name in &entities {
        let is_target = name == &opts.entity;
        if is_target && opts.restart {
            bulk.backfill_reset(name).await?;
        } else if !is_target && bulk.backfill_progress(name).await?.finished {
            continue;
        }
        if !is_target {
            info!("backfilling parent entity {name} first (children need their parents linked)");
        }
        let (n, suspended, interrupted) =
            one_entity(config, sides, name, opts, &mut lease, stop.clone()).await?;
        report.queued.push((name.clone(), n));
        report.suspended += suspended;
        if interrupted {
            report.interrupted = true;
            break;
        }
    }
    Ok(report)
}

async fn one_entity(
    config: &Arc<Config>,
    sides: &Sides,
    entity: &str,
    opts: &Options,
    lease: &mut Option<Box<dyn Lease>>,
    stop: watch::Receiver<bool>,
) -> Result<(u64, i64, bool), EndpointError> {
    let source = crate::endpoint::bulk(sides.get(opts.from).as_ref(), "backfill")?;
    let saved = source.backfill_progress(entity).await?;
    if saved.finished {
        info!(
            "backfill of {entity} from side {} finished earlier; --restart copies again",
            opts.from
        );
        return Ok((0, 0, false));
    }
    let total = u64::try_from(source.row_count(entity).await?).unwrap_or(0);
    let mut progress = Progress::new(
        &format!("backfill {entity} {}→{}", opts.from, opts.from.other()),
        total,
        "rows",
    );
    let done_before = u64::try_from(saved.rows_done).unwrap_or(0);
    progress.set(done_before);
    let started = Instant::now();
    let mut queued: u64 = 0;
    let mut range: Option<(i64, i64)> = None;
    loop {
        if *stop.borrow() {
            progress.finish();
            return Ok((queued, 0, true));
        }
        let chunk = source.backfill_chunk(entity, opts.chunk).await?;
        if let (Some(min), Some(max)) = (chunk.min_seq, chunk.max_seq) {
            range = Some(range.map_or((min, max), |(lo, _)| (lo, max)));
            settle(config, sides, opts.from, min, max, lease, &stop, false).await?;
        }
        queued += chunk.rows;
        progress.set(done_before + queued);
        if chunk.finished {
            break;
        }
        if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
            // Cap the average rate: wait until the rows so far fit it.
            let due = Duration::from_secs_f64(queued as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
    progress.finish();
    // Every row of this run applied or suspended: rows still retrying are waited for.
    let suspended = match range {
        Some((min, max)) => {
            settle(config, sides, opts.from, min, max, lease, &stop, true)
                .await?
                .suspended
        }
        None => 0,
    };
    info!(
        "backfill of {entity} from side {}: {queued} rows queued and settled",
        opts.from
    );
    Ok((queued, suspended, false))
}

/// Waits until none of the queued rows `min..=max` is ready to apply, applying them itself
/// when this process leads. Rows waiting for a retry (a child whose parent is on its way) do
/// not hold the next chunk back; with `all`, they are waited for too.
#[allow(clippy::too_many_arguments)]
async fn settle(
    config: &Arc<Config>,
    sides: &Sides,
    from: Side,
    min: i64,
    max: i64,
    lease: &mut Option<Box<dyn Lease>>,
    stop: &watch::Receiver<bool>,
    all: bool,
) -> Result<Queued, EndpointError> {
    let source = crate::endpoint::bulk(sides.get(from).as_ref(), "backfill")?;
    let mut idle = Duration::from_millis(20);
    let policy = Policy::new(&config.sync);
    let mut failures = 0;
    let mut last_try = Instant::now();
    // Rows that only wait for retries that change nothing (a child of a suspended parent)
    // would hold a final wait forever: give up once nothing moved for a while.
    let patience = Duration::from_millis(config.sync.retry_max_ms.saturating_mul(2))
        .max(Duration::from_secs(10));
    let (mut last_seen, mut since) = (Queued::default(), Instant::now());
    loop {
        let q = source.pending_between(min, max).await?;
        if q != last_seen {
            (last_seen, since) = (q, Instant::now());
        }
        let stalled = q.eligible == 0 && since.elapsed() > patience;
        if (q.eligible == 0 && (!all || q.retrying == 0)) || stalled || *stop.borrow() {
            return Ok(q);
        }
        let leading = match lease.as_mut() {
            Some(l) => l.still_held().await,
            None => false,
        };
        if leading {
            // Both directions, so live changes keep flowing while this backfill leads.
            let mut progressed = false;
            for dir in [from, from.other()] {
                match run_batch(
                    config,
                    sides.get(dir).as_ref(),
                    sides.get(dir.other()).as_ref(),
                )
                .await
                {
                    Ok(r) => progressed |= r.claimed > 0,
                    Err(e) => match policy.on_batch_error(Job::Backfill, e.kind(), failures) {
                        Decision::RetryBatch { delay } => {
                            failures += 1;
                            tracing::warn!("{e}; retrying");
                            tokio::time::sleep(delay).await;
                        }
                        _ => return Err(e),
                    },
                }
            }
            if progressed {
                continue;
            }
        } else if lease.is_some() {
            *lease = None;
        } else if last_try.elapsed() >= Duration::from_secs(1) {
            // The active instance may have gone: then this backfill applies its own rows.
            last_try = Instant::now();
            *lease = sides.get(from).try_lead().await?;
        }
        // Rows waiting for a retry time, or another instance applying them.
        tokio::time::sleep(idle).await;
        idle = (idle * 2).min(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_unknown_entities_are_named() {
        let text = include_str!("../sql/demo/tandem.toml");
        let config = crate::config::parse(text, std::path::Path::new("tandem.toml"), &|_| {
            Some("postgres://x@localhost/db".into())
        })
        .unwrap();
        assert_eq!(
            plan(&config, "order_item").unwrap(),
            vec!["order", "order_item"]
        );
        assert_eq!(plan(&config, "order").unwrap(), vec!["order"]);
        let e = plan(&config, "nope").unwrap_err().to_string();
        assert!(e.contains("\"nope\"") && e.contains("order_item"), "{e}");
    }
}
