//! `tandem backfill --entity NAME [--from a|b] [--chunk N] [--rate R] [--restart]`.

use std::sync::Arc;

use tokio::sync::watch;

use super::{open_sides, CliError, SideArg};
use crate::backfill::{self, Options};
use crate::config::{Config, Side};

/// Runs a backfill; exit 1 when some rows could not be applied (they are suspended).
pub async fn run(
    config: &Arc<Config>,
    entity: String,
    from: Option<SideArg>,
    chunk: Option<usize>,
    rate: Option<f64>,
    restart: bool,
) -> Result<(), CliError> {
    let from = match from {
        None | Some(SideArg::A) => Side::A,
        Some(SideArg::B) => Side::B,
        Some(SideArg::Both) => {
            return Err(CliError::Setup(
                "--from takes a or b: the side whose rows are copied".into(),
            ))
        }
    };
    if chunk == Some(0) || rate.is_some_and(|r| r.is_nan() || r <= 0.0) {
        return Err(CliError::Setup(
            "--chunk and --rate must be greater than 0".into(),
        ));
    }
    let sides = open_sides(config)?;
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(async move {
        super::run::wait_for_signal().await;
        let _ = stop.send(true);
    });
    let opts = Options {
        entity,
        from,
        chunk: chunk.unwrap_or(1000),
        rate,
        restart,
    };
    let report = backfill::run(config, &sides, &opts, stopped).await?;
    for (entity, n) in &report.queued {
        println!(
            "{entity}: {n} rows copied from side {from} to side {}",
            from.other()
        );
    }
    if report.interrupted {
        println!("interrupted: progress is saved; run the same command again to continue");
    }
    if report.suspended > 0 {
        return Err(CliError::Found(format!(
            "{} row(s) could not be applied and are suspended: see `tandem suspended list`",
            report.suspended
        )));
    }
    Ok(())
}
