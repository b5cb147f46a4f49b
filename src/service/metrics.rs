//! Prometheus metrics: one global recorder (installed once, only by `run --listen`), the
//! series the sync loop and the leader record, and a background poller for the numbers that
//! live in the databases (pending, suspended, oldest-pending age) and in the pools.
//!
//! Recording without an installed recorder is a no-op, so `run --once`, the demo and the tests
//! that drive the pipeline in-process pay nothing.

use std::sync::OnceLock;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::watch;
use tracing::debug;

use super::ServiceError;
use crate::config::{Config, Side};
pub use crate::sync::metrics::{direction, record_batch, record_error};
use crate::sync::Sides;

/// Capture → applied, in seconds. Wide on purpose: a change that waits for a retry or a
/// database outage is still counted when it lands.
const LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];
/// Outbox rows claimed per (non-empty) batch.
const BATCH_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
];
/// How often the poller reads `status()` and the pools.
pub const POLL_EVERY: Duration = Duration::from_secs(5);
/// A status query slower than this counts as the database being away.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder the first time; later calls return the same handle.
pub fn install() -> Result<PrometheusHandle, ServiceError> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("tandem_apply_latency_seconds".into()),
            LATENCY_BUCKETS,
        )
        .and_then(|b| {
            b.set_buckets_for_metric(Matcher::Full("tandem_batch_claimed".into()), BATCH_BUCKETS)
        })
        .map_err(|e| ServiceError::Metrics(e.to_string()))?;
    let handle = builder
        .install_recorder()
        .map_err(|e| ServiceError::Metrics(e.to_string()))?;
    describe();
    // A concurrent first call would have failed in install_recorder (one global recorder),
    // so the slot is still empty here.
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

/// HELP lines, and series that exist from the start (so dashboards and alerts see zeros,
/// not gaps, before the first change).
fn describe() {
    describe_counter!(
        "tandem_changes_applied_total",
        "Changes written at the target"
    );
    describe_counter!(
        "tandem_changes_unchanged_total",
        "Changes whose image the target already held (nothing written)"
    );
    describe_counter!(
        "tandem_changes_stale_total",
        "Duplicates and old images discarded by the sequence guard"
    );
    describe_counter!(
        "tandem_changes_after_delete_total",
        "Updates discarded because the record was deleted at the target"
    );
    describe_counter!(
        "tandem_changes_suspended_total",
        "Changes suspended for an operator after max_attempts"
    );
    describe_counter!(
        "tandem_failures_total",
        "Failures by kind: change (one change refused, retried later), unreachable, database, config (a whole batch)"
    );
    describe_histogram!(
        "tandem_batch_claimed",
        "Outbox rows claimed per non-empty batch"
    );
    describe_histogram!(
        "tandem_apply_latency_seconds",
        Unit::Seconds,
        "Time from capture at the source to commit at the target, per change written"
    );
    describe_gauge!(
        "tandem_pending",
        "Changes captured on this side waiting to travel (not suspended)"
    );
    describe_gauge!("tandem_suspended", "Suspended changes on this side");
    describe_gauge!(
        "tandem_oldest_pending_age_seconds",
        Unit::Seconds,
        "Age of the oldest pending change on this side (0 when none)"
    );
    describe_gauge!("tandem_linked", "Records linked in this side's id map");
    describe_gauge!(
        "tandem_database_up",
        "1 when the last status poll of this side succeeded"
    );
    describe_gauge!(
        "tandem_pool_connections",
        "Open connections in this side's pool"
    );
    describe_gauge!(
        "tandem_pool_idle_connections",
        "Idle connections in this side's pool"
    );
    describe_gauge!(
        "tandem_pool_max_connections",
        "Size limit of this side's pool"
    );
    describe_gauge!(
        "tandem_active",
        "1 when this instance holds the lead and applies changes"
    );
    describe_gauge!(
        "tandem_entity_paused",
        "1 while the entity is paused by schema drift (its changes wait in the outboxes)"
    );
    describe_gauge!("tandem_build_info", "Always 1; labels carry the version");
    gauge!("tandem_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    gauge!("tandem_active").set(0.0);
}

/// Zero series for the directions and sides of this config.
pub fn init_series(config: &Config) {
    for from in [Side::A, Side::B] {
        if config.entities.iter().any(|e| e.direction.flows(from)) {
            let d = direction(from);
            for name in [
                "tandem_changes_applied_total",
                "tandem_changes_unchanged_total",
                "tandem_changes_stale_total",
                "tandem_changes_after_delete_total",
                "tandem_changes_suspended_total",
            ] {
                counter!(name, "direction" => d).increment(0);
            }
            for kind in ["change", "unreachable", "database", "config"] {
                counter!("tandem_failures_total", "direction" => d, "kind" => kind).increment(0);
            }
        }
    }
}

/// Sets `tandem_active`.
pub fn set_active(on: bool) {
    gauge!("tandem_active").set(if on { 1.0 } else { 0.0 });
}

/// Reads the pools' state into their gauges (cheap: no database round trip).
pub fn record_pools(sides: &Sides) {
    for side in [Side::A, Side::B] {
        let p = sides.get(side).pool_state();
        let s = side.name();
        gauge!("tandem_pool_connections", "side" => s).set(p.connections as f64);
        gauge!("tandem_pool_idle_connections", "side" => s).set(p.idle as f64);
        gauge!("tandem_pool_max_connections", "side" => s).set(p.max as f64);
    }
}

/// Reads `status()` of both sides into the per-entity gauges.
async fn poll_status(sides: &Sides) {
    for side in [Side::A, Side::B] {
        let s = side.name();
        match tokio::time::timeout(POLL_TIMEOUT, sides.get(side).status()).await {
            Ok(Ok(list)) => {
                gauge!("tandem_database_up", "side" => s).set(1.0);
                let now = chrono::Utc::now();
                for st in list {
                    let e = st.entity;
                    let age = st
                        .oldest_pending
                        .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
                        .unwrap_or(0.0);
                    gauge!("tandem_pending", "entity" => e.clone(), "side" => s)
                        .set(st.pending as f64);
                    gauge!("tandem_suspended", "entity" => e.clone(), "side" => s)
                        .set(st.suspended as f64);
                    gauge!("tandem_oldest_pending_age_seconds", "entity" => e.clone(), "side" => s)
                        .set(age);
                    gauge!("tandem_linked", "entity" => e, "side" => s).set(st.linked as f64);
                }
            }
            Ok(Err(e)) => {
                // The sync loop and /readyz report outages; here it would only repeat them.
                debug!("metrics: status of side {side}: {e}");
                gauge!("tandem_database_up", "side" => s).set(0.0);
            }
            Err(_) => {
                debug!("metrics: status of side {side} timed out");
                gauge!("tandem_database_up", "side" => s).set(0.0);
            }
        }
    }
}

/// Polls status and pools every [`POLL_EVERY`] until `shutdown` turns true. Runs on standby
/// instances too: what waits in the outboxes is worth seeing from any of them.
pub async fn poll(sides: Sides, handle: PrometheusHandle, mut shutdown: watch::Receiver<bool>) {
    while !*shutdown.borrow() {
        poll_status(&sides).await;
        record_pools(&sides);
        // Histograms keep raw samples until upkeep folds them into buckets.
        handle.run_upkeep();
        tokio::select! {
            _ = tokio::time::sleep(POLL_EVERY) => {}
            r = shutdown.changed() => if r.is_err() { return },
        }
    }
}
