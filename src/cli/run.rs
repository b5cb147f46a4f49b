//! `tandem run`: the service, or one drain with `--once`.
//!
//! The service takes the lead among instances sharing the config (see `service::leader`),
//! serves `/metrics`, `/healthz` and `/readyz` with `--listen`, and stops on SIGINT/SIGTERM
//! after the batch in flight, within [`service::HARD_STOP`] at most, with exit code 0.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{open_sides, CliError};
use crate::config::Config;
use crate::secret::redact;
use crate::service::{self, http::Server, leader, metrics, Role};
use crate::sync;

/// Refuses a side whose tandem objects are missing or were installed by another version of
/// tandem (exit 2, saying to run `tandem install`): every apply there would fail on an object
/// this build uses, and be retried until parked. A side that cannot be reached is not refused
/// here: the service waits for it as for any outage.
async fn require_current_install(sides: &sync::Sides) -> Result<(), CliError> {
    use crate::config::Side;
    // Both at once: a side that is down costs its pool's connection timeout once.
    let (a, b) = tokio::join!(sides.a.install_state(), sides.b.install_state());
    for (side, state) in [(Side::A, a), (Side::B, b)] {
        match state {
            Ok(state) => {
                if let Some(why) = state.unusable(side) {
                    return Err(CliError::Setup(why));
                }
            }
            Err(e) => warn!(
                "side {side}: could not read which tandem installed its objects: {}",
                redact(&e.to_string())
            ),
        }
    }
    Ok(())
}

/// Runs until SIGINT/SIGTERM, or drains once.
pub async fn run(config: Arc<Config>, once: bool, listen: Option<String>) -> Result<(), CliError> {
    if once && listen.is_some() {
        return Err(CliError::Setup(
            "--listen is for the service: use it without --once".into(),
        ));
    }
    let sides = open_sides(&config)?;
    require_current_install(&sides).await?;
    if once {
        // Held until the drain is done, so that no service instance applies next to it.
        let _lead = leader::take_for_once(&sides)
            .await
            .map_err(|e| CliError::Setup(redact(&e.to_string())))?;
        // Entities whose tables drifted from what `install` recorded stay pending.
        let drift = sync::drift::assess(&config, &sides).await?;
        for w in &drift.warnings {
            warn!("schema drift: {w}");
        }
        for r in drift.paused.values().flatten() {
            warn!("paused: {r}");
        }
        let paused: Vec<String> = drift.paused.keys().cloned().collect();
        let r = sync::drain_except(&config, &sides, &paused).await?;
        let failed = r.failed + r.suspended;
        println!(
            "drained: {} written, {} unchanged, {} stale, {} discarded after delete, {} failed, {} suspended",
            r.written, r.unchanged, r.stale, r.deleted, r.failed, r.suspended
        );
        if !paused.is_empty() {
            println!(
                "paused by schema drift, left pending: {} (see `tandem status`)",
                paused.join(", ")
            );
        }
        return if failed > 0 {
            Err(CliError::Found(format!(
                "{failed} change(s) could not be applied (each is in the log with its error): \
                 {} suspended, listed by `tandem suspended list` (fix the cause, then \
                 `tandem suspended resubmit ID`); the others are retried by the next `tandem run`",
                r.suspended
            )))
        } else {
            Ok(())
        };
    }
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!(
            "stopping: finishing the batch in flight (at most {} s)",
            service::HARD_STOP.as_secs()
        );
        service::exit_after(service::HARD_STOP);
        let _ = stop.send(true);
    });
    let role = Arc::new(Role::default());
    let mut helpers = vec![tokio::spawn(sync::drift::watch(
        config.clone(),
        sides.clone(),
        role.paused.clone(),
        stopped.clone(),
    ))];
    if let Some(addr) = listen {
        // Bind first: a taken port is a setup error (exit 2), before anything runs.
        let server = Server::bind(&addr)
            .await
            .map_err(|e| CliError::Setup(e.to_string()))?;
        let handle = metrics::install().map_err(|e| CliError::Setup(e.to_string()))?;
        metrics::init_series(&config);
        helpers.push(tokio::spawn(metrics::poll(
            sides.clone(),
            handle.clone(),
            stopped.clone(),
        )));
        let page = Arc::new(service::page::Page::new(config.clone()));
        helpers.push(tokio::spawn(service::page::sample(
            page.clone(),
            sides.clone(),
            stopped.clone(),
        )));
        helpers.push(tokio::spawn(server.serve(
            sides.clone(),
            role.clone(),
            handle,
            page,
            stopped.clone(),
        )));
    }
    leader::run(config, sides, role, stopped).await;
    // The server and the poller watch the same signal; wait for them to close.
    for h in helpers {
        let _ = h.await;
    }
    info!("stopped");
    Ok(())
}

/// SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
