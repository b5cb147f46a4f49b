//! One batch of one direction: claim → decode → coalesce → map → order parents first →
//! apply → write back. Knows no SQL; the endpoints do the database work.

use std::collections::{BTreeMap, HashMap};

use tracing::{debug, info, warn};

use crate::config::{Config, Side};
use crate::endpoint::{
    ApplyError, Done, Endpoint, EndpointError, Failure, LinkWrite, Outcome, WriteBack,
};
use crate::mapping::{coalesce, map_change};
use crate::model::{Change, Image, Key, Op, OutboxRow, TargetChange};
use crate::sync::retry::backoff_ms;

/// What one batch did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BatchReport {
    /// Outbox rows claimed.
    pub claimed: usize,
    /// Changes written at the target.
    pub written: usize,
    /// Changes whose image the target already held.
    pub unchanged: usize,
    /// Duplicates and old images discarded by the sequence guard.
    pub stale: usize,
    /// Updates of records deleted at the target, discarded.
    pub deleted: usize,
    /// Changes that failed and will be retried.
    pub failed: usize,
    /// Changes suspended for an operator.
    pub suspended: usize,
    /// Seconds from capture to commit at the target, per change written (for the latency
    /// histogram; `add` does not keep them).
    pub latencies_s: Vec<f64>,
}

impl BatchReport {
    /// Adds another report's counts.
    pub fn add(&mut self, o: &BatchReport) {
        self.claimed += o.claimed;
        self.written += o.written;
        self.unchanged += o.unchanged;
        self.stale += o.stale;
        self.deleted += o.deleted;
        self.failed += o.failed;
        self.suspended += o.suspended;
    }
}

/// A change that could not be applied, with what its report needs.
struct Failed {
    seqs: Vec<i64>,
    attempts: i32,
    error: ApplyError,
    entity: Option<String>,
    key: Option<Key>,
}

/// A change on its way, with everything needed to report on it.
struct Pending {
    change: Change,
    seqs: Vec<i64>,
}

/// Runs one batch from `from` to `to`.
pub async fn run_batch(
    config: &Config,
    from: &dyn Endpoint,
    to: &dyn Endpoint,
) -> Result<BatchReport, EndpointError> {
    let side = from.side();
    let rows = from.claim(config.sync.batch_size).await?;
    let mut report = BatchReport {
        claimed: rows.len(),
        ..Default::default()
    };
    if rows.is_empty() {
        return Ok(report);
    }
    let mut wb = WriteBack::default();
    let mut failures: Vec<Failed> = Vec::new();

    // Decode, and group the changes of each record.
    let mut runs: BTreeMap<(String, Key), Vec<Change>> = BTreeMap::new();
    for row in rows {
        let (seq, attempts) = (row.seq, row.attempts);
        match decode(config, side, row) {
            Ok(Some(c)) => runs
                .entry((c.entity.clone(), c.key.clone()))
                .or_default()
                .push(c),
            Ok(None) => wb.done.push(seq),
            Err(error) => failures.push(Failed {
                seqs: vec![seq],
                attempts,
                error,
                entity: None,
                key: None,
            }),
        }
    }
    let pending: Vec<Pending> = runs
        .values()
        .filter_map(|run| coalesce(run).map(|(change, seqs)| Pending { change, seqs }))
        .collect();

    // Links the source already knows (made by changes from the target whose write-back to
    // the target may not have happened yet): the record's own, and its parents'.
    let hints = source_links(config, from, &pending).await?;

    // Map, then order: parents before children for upserts, children before parents for deletes.
    let order: HashMap<&str, usize> = config
        .entities_parents_first()
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.as_str(), i))
        .collect();
    let mut mapped: Vec<(TargetChange, i32)> = Vec::new();
    for p in pending {
        let Some(entity) = config.entity(&p.change.entity) else {
            continue;
        };
        let hint = hints
            .get(&(p.change.entity.clone(), p.change.key.clone()))
            .cloned();
        match map_change(entity, side, &p.change, p.seqs.clone(), hint) {
            Ok(mut tc) => {
                for r in &mut tc.refs {
                    r.hint = hints
                        .get(&(r.parent.clone(), r.source_key.clone()))
                        .cloned();
                }
                mapped.push((tc, p.change.attempts));
            }
            Err(e) => failures.push(Failed {
                seqs: p.seqs,
                attempts: p.change.attempts,
                error: e.into(),
                entity: Some(p.change.entity.clone()),
                key: Some(p.change.key.clone()),
            }),
        }
    }
    mapped.sort_by_key(|(c, _)| {
        let rank = order.get(c.entity.as_str()).copied().unwrap_or(0) as i64;
        match c.op {
            Op::Delete => (1, -rank, c.seq),
            _ => (0, rank, c.seq),
        }
    });
    let (batch, attempts): (Vec<TargetChange>, Vec<i32>) = mapped.into_iter().unzip();

    let outcomes = if batch.is_empty() {
        Vec::new()
    } else {
        to.apply(&batch).await?
    };
    for ((change, attempts), outcome) in batch.iter().zip(attempts).zip(outcomes) {
        match outcome {
            Outcome::Done { target_key, how } => {
                match how {
                    Done::Written => {
                        report.written += 1;
                        let lag = chrono::Utc::now() - change.captured_at;
                        report
                            .latencies_s
                            .push(lag.num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
                    }
                    Done::Unchanged => report.unchanged += 1,
                    Done::Stale => report.stale += 1,
                    Done::Deleted => report.deleted += 1,
                }
                debug!(entity = %change.entity, from = %side, key = %change.source_key,
                       target_key = ?target_key.as_ref().map(Key::as_str), ?how, op = %change.op, "settled");
                if how == Done::Deleted {
                    info!(entity = %change.entity, from = %side, key = %change.source_key,
                          "{} discarded: the record was deleted at side {}", change.op, side.other());
                }
                wb.done.extend(&change.seqs);
                wb.links.push(LinkWrite {
                    entity: change.entity.clone(),
                    own_key: change.source_key.clone(),
                    peer_key: target_key,
                    deleted: change.op == Op::Delete || how == Done::Deleted,
                });
            }
            Outcome::Failed(error) => failures.push(Failed {
                seqs: change.seqs.clone(),
                attempts,
                error,
                entity: Some(change.entity.clone()),
                key: Some(change.source_key.clone()),
            }),
        }
    }

    let s = &config.sync;
    for Failed {
        seqs,
        attempts,
        error,
        entity,
        key,
    } in failures
    {
        let attempt = u32::try_from(attempts).unwrap_or(0);
        let suspend = attempt + 1 >= s.max_attempts;
        let retry_in_ms = backoff_ms(attempt, s.retry_min_ms, s.retry_max_ms);
        if suspend {
            report.suspended += 1;
        } else {
            report.failed += 1;
        }
        warn!(
            entity = entity.as_deref().unwrap_or("?"),
            from = %side,
            key = key.as_ref().map(Key::as_str).unwrap_or("?"),
            attempt = attempt + 1,
            suspended = suspend,
            "change not applied: {error}"
        );
        wb.failed.push(Failure {
            seqs,
            error: error.to_string(),
            retry_in_ms,
            suspend,
        });
    }
    from.write_back(&wb).await?;
    Ok(report)
}

/// Decodes an outbox row. `Ok(None)`: nothing to do (the entity does not travel this way).
fn decode(config: &Config, side: Side, row: OutboxRow) -> Result<Option<Change>, ApplyError> {
    let seq = row.seq;
    let fail = |message: String| ApplyError::Decode { seq, message };
    let entity = config.entity(&row.entity).ok_or_else(|| {
        fail(format!(
            "entity {:?} is not in the config (was it renamed or removed? restore it, or discard the change)",
            row.entity
        ))
    })?;
    if !entity.direction.flows(side) {
        warn!(entity = %entity.name, from = %side, seq,
              "change captured for a direction the config no longer syncs; removing it (run `tandem install` to drop the trigger)");
        return Ok(None);
    }
    let op = Op::from_code(&row.op).ok_or_else(|| fail(format!("unknown op {:?}", row.op)))?;
    let image: Image = serde_json::from_str(&row.image)
        .map_err(|e| fail(format!("row image is not a JSON object: {e}")))?;
    let table = &entity.side(side).table;
    let key = Key::from_image(&image, &entity.side(side).key).map_err(|m| {
        fail(format!(
            "entity {}, side {side} table {table}: {m}",
            entity.name
        ))
    })?;
    Ok(Some(Change {
        seq,
        entity: entity.name.clone(),
        op,
        key,
        image,
        captured_at: row.captured_at,
        attempts: row.attempts,
    }))
}

/// Live links the source side knows, for the records and their parents.
async fn source_links(
    config: &Config,
    from: &dyn Endpoint,
    pending: &[Pending],
) -> Result<HashMap<(String, Key), Key>, EndpointError> {
    let side = from.side();
    let mut wanted: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for p in pending {
        wanted
            .entry(p.change.entity.clone())
            .or_default()
            .push(p.change.key.clone());
        let Some(entity) = config.entity(&p.change.entity) else {
            continue;
        };
        for col in &entity.columns {
            let (Some(parent), Some(v)) = (&col.parent, p.change.image.get(col.name(side))) else {
                continue;
            };
            if !v.is_null() {
                wanted
                    .entry(parent.clone())
                    .or_default()
                    .push(Key::from_values(std::slice::from_ref(v)));
            }
        }
    }
    let mut out = HashMap::new();
    for (entity, mut keys) in wanted {
        keys.sort();
        keys.dedup();
        for (k, link) in from.links(&entity, &keys).await? {
            if let (Some(peer), false) = (link.peer_key, link.deleted) {
                out.insert((entity.clone(), k), peer);
            }
        }
    }
    Ok(out)
}
