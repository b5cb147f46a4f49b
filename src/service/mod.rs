//! Running tandem as a service: metrics, health endpoints, leadership among several
//! instances, and a bounded stop.
//!
//! - [`metrics`]: the Prometheus recorder and the series tandem records;
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the status page for `run --listen`;
//! - [`page`]: the status page `/` (lag, suspended changes, buttons behind a token);
//! - [`leader`]: several `tandem run` with one config, exactly one applying changes.

pub mod http;
pub mod leader;
pub mod metrics;
pub mod page;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::warn;

use crate::sync::drift::Paused;

/// Errors of the service parts (all are setup errors: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {message} (pass --listen HOST:PORT, e.g. 127.0.0.1:9187)")]
    Listen { addr: String, message: String },
    /// The metrics recorder cannot be installed.
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    /// Another instance holds the lead (for `run --once`, which does not wait for it).
    #[error(
        "another `tandem run` is active (it holds the lead in database A); stop it before \
         `run --once`, which must not apply changes next to it"
    )]
    LeadHeldElsewhere,
    /// The lead could not be asked for.
    #[error("cannot take the lead: {0}")]
    Lead(#[from] crate::endpoint::EndpointError),
}

/// What the health endpoints need to know about this instance, shared with the leader loop.
#[derive(Debug)]
pub struct Role {
    active: AtomicBool,
    /// Why this instance is not active (for `/readyz`).
    why_not: Mutex<String>,
    /// Entities paused by schema drift (kept current by `sync::drift::watch`).
    pub paused: Arc<Paused>,
}

impl Default for Role {
    fn default() -> Self {
        Role {
            active: AtomicBool::new(false),
            why_not: Mutex::new("starting".into()),
            paused: Arc::default(),
        }
    }
}

impl Role {
    /// Does this instance apply changes now?
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Marks this instance active (also sets `tandem_active`).
    pub fn set_active(&self) {
        self.active.store(true, Ordering::SeqCst);
        metrics::set_active(true);
    }

    /// Marks this instance inactive, with a short reason for `/readyz`.
    pub fn set_inactive(&self, why: impl Into<String>) {
        self.active.store(false, Ordering::SeqCst);
        metrics::set_active(false);
        if let Ok(mut w) = self.why_not.lock() {
            *w = why.into();
        }
    }

    /// Why this instance is not active.
    pub fn why_not(&self) -> String {
        self.why_not
            .lock()
            .map(|w| w.clone())
            .unwrap_or_else(|_| "unknown".into())
    }
}

/// The longest a stop may take once SIGTERM/SIGINT arrived.
pub const HARD_STOP: Duration = Duration::from_secs(30);

/// Ends the process with exit code 0 after `after`, whatever is still running. Stopping is
/// safe at any instant (a batch cut short rolls back and is applied again later), so the
/// bound matters more than waiting for a database that does not answer. A plain thread, so
/// that it fires even when the async runtime is stuck or shutting down.
pub fn exit_after(after: Duration) {
    let spawned = std::thread::Builder::new()
        .name("tandem-hard-stop".into())
        .spawn(move || {
            std::thread::sleep(after);
            warn!(
                "stop took longer than {} s; exiting now (the batch in flight rolls back and is applied again later)",
                after.as_secs()
            );
            std::process::exit(0);
        });
    if let Err(e) = spawned {
        warn!("cannot arm the stop timer: {e}");
    }
}
