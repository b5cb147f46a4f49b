//! `tandem install` and `tandem uninstall`.

use std::sync::Arc;

use super::{CliError, SideArg};
use crate::config::Config;
use crate::endpoint;

/// Creates or upgrades tandem's objects, or prints the SQL with `--dry-run`.
pub async fn install(config: &Arc<Config>, side: SideArg, dry_run: bool) -> Result<(), CliError> {
    for s in side.sides() {
        let ep = endpoint::open(config.clone(), s)?;
        if dry_run {
            println!("-- ===== side {s} ({:?}) =====", config.side(s).kind);
            println!("{}", ep.install_script());
            println!(
                "-- Then install records each synchronised table's columns, types and keys in \
                 tandem.fingerprint (schema drift: `run` pauses an entity whose mapped columns change)."
            );
            continue;
        }
        ep.install().await?;
        println!(
            "side {s}: tandem objects and capture triggers installed, tables' fingerprints recorded"
        );
    }
    Ok(())
}

/// Removes tandem's objects, or prints the SQL with `--dry-run`.
pub async fn uninstall(config: &Arc<Config>, side: SideArg, dry_run: bool) -> Result<(), CliError> {
    for s in side.sides() {
        let ep = endpoint::open(config.clone(), s)?;
        if dry_run {
            println!("-- ===== side {s} ({:?}) =====", config.side(s).kind);
            println!("{}", ep.uninstall_script());
            continue;
        }
        ep.uninstall().await?;
        println!("side {s}: tandem objects and capture triggers removed");
    }
    Ok(())
}
