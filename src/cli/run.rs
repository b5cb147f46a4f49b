//! `tandem run`: the service, or one drain with `--once`.

use std::sync::Arc;

use tokio::sync::watch;
use tracing::info;

use super::{open_sides, CliError};
use crate::config::Config;
use crate::sync;

/// Runs until SIGINT/SIGTERM, or drains once.
pub async fn run(config: Arc<Config>, once: bool, listen: Option<String>) -> Result<(), CliError> {
    if listen.is_some() {
        return Err(CliError::Setup(
            "--listen (metrics and health endpoints) is not available in this version yet".into(),
        ));
    }
    let sides = open_sides(&config)?;
    if once {
        let r = sync::drain(&config, &sides).await?;
        let failed = r.failed + r.suspended;
        println!(
            "drained: {} written, {} unchanged, {} stale, {} discarded after delete, {} failed, {} suspended",
            r.written, r.unchanged, r.stale, r.deleted, r.failed, r.suspended
        );
        return if failed > 0 {
            Err(CliError::Found(format!(
                "{failed} change(s) could not be applied; see the log, and `tandem status`"
            )))
        } else {
            Ok(())
        };
    }
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("stopping: finishing the batches in flight");
        let _ = stop.send(true);
    });
    sync::run(config, sides, stopped).await;
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
