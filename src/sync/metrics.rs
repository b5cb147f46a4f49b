//! The pipeline's own series (changes applied, failures, batch sizes, latency), recorded
//! through the `metrics` facade: the pipeline does not know the exporter, which
//! `service::metrics` installs (without one, recording is a no-op). `service::metrics`
//! re-exports these and describes the series.

use ::metrics::{counter, gauge, histogram};

use crate::config::Side;
use crate::endpoint::EndpointError;
use crate::sync::BatchReport;

/// Label of a direction, e.g. `a_to_b`.
pub fn direction(from: Side) -> &'static str {
    match from {
        Side::A => "a_to_b",
        Side::B => "b_to_a",
    }
}

/// Records what one batch did.
pub fn record_batch(from: Side, r: &BatchReport) {
    if r.claimed == 0 {
        // Idle polls are not batches: counting them would drown the size histogram in zeros.
        return;
    }
    if let Ok(mut totals) = WRITTEN.lock() {
        for (e, n) in &r.written_by_entity {
            *totals.entry((e.clone(), from)).or_default() += *n as u64;
        }
    }
    let d = direction(from);
    counter!("tandem_changes_applied_total", "direction" => d).increment(r.written as u64);
    counter!("tandem_changes_unchanged_total", "direction" => d).increment(r.unchanged as u64);
    counter!("tandem_changes_stale_total", "direction" => d).increment(r.stale as u64);
    counter!("tandem_changes_after_delete_total", "direction" => d).increment(r.deleted as u64);
    counter!("tandem_changes_suspended_total", "direction" => d).increment(r.suspended as u64);
    counter!("tandem_failures_total", "direction" => d, "kind" => "change")
        .increment(r.failed as u64);
    histogram!("tandem_batch_claimed", "direction" => d).record(r.claimed as f64);
    let latency = histogram!("tandem_apply_latency_seconds", "direction" => d);
    for s in &r.latencies_s {
        latency.record(*s);
    }
}

/// Records a batch that failed as a whole.
pub fn record_error(from: Side, e: &EndpointError) {
    let kind = match e {
        EndpointError::Unreachable { .. } => "unreachable",
        EndpointError::Database { .. } => "database",
        EndpointError::Config(_) => "config",
    };
    counter!("tandem_failures_total", "direction" => direction(from), "kind" => kind).increment(1);
}

/// Changes written per (entity, side they came from) since the process started, for the
/// status page's rates (the Prometheus series count per direction only).
static WRITTEN: std::sync::Mutex<std::collections::BTreeMap<(String, Side), u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The totals [`record_batch`] kept, per (entity, side the changes came from).
pub fn written_totals() -> std::collections::BTreeMap<(String, Side), u64> {
    WRITTEN.lock().map(|m| m.clone()).unwrap_or_default()
}

/// Sets `tandem_entity_paused{entity}` (1 while schema drift pauses the entity).
pub fn set_paused(entity: &str, paused: bool) {
    gauge!("tandem_entity_paused", "entity" => entity.to_string()).set(if paused {
        1.0
    } else {
        0.0
    });
}
