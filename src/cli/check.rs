//! `tandem check`: every config and schema problem at once.

use std::path::Path;
use std::sync::Arc;

use super::CliError;
use crate::config::{self, Side};
use crate::endpoint::desc::{self, Level};
use crate::endpoint::{self, InstallState};

/// Validates the config, then each side's schema; exit 2 when anything is wrong.
pub async fn run(path: &Path) -> Result<(), CliError> {
    let config = Arc::new(config::load(path)?);
    let mut problems = Vec::new();
    let mut reachable = Vec::new();
    let mut installed = 0;
    for side in [Side::A, Side::B] {
        let ep = match endpoint::open(config.clone(), side) {
            Ok(ep) => ep,
            Err(e) => {
                problems.push(crate::secret::redact(&e.to_string()));
                continue;
            }
        };
        if let Err(e) = ep.ping().await {
            problems.push(crate::secret::redact(&e.to_string()));
            continue;
        }
        match ep.check().await {
            Ok(found) => problems.extend(
                found
                    .into_iter()
                    .map(|p| format!("side {}: entity {}: {}", p.side, p.entity, p.message)),
            ),
            Err(e) => problems.push(crate::secret::redact(&e.to_string())),
        }
        match ep.install_state().await {
            Ok(InstallState::Missing) => {
                println!("side {side}: tandem is not installed yet (run `tandem install`)")
            }
            Ok(state) => match (state.unusable(side), state) {
                // Objects of another version: `run` refuses them until `install` upgrades them.
                (Some(why), _) => println!("{why}"),
                (
                    None,
                    InstallState::Installed {
                        triggers, expected, ..
                    },
                ) if triggers < expected => {
                    installed += 1;
                    println!(
                        "side {side}: tandem is installed, but {triggers} of {expected} capture triggers exist (run `tandem install`)"
                    )
                }
                (None, _) => {
                    installed += 1;
                    println!("side {side}: tandem is installed")
                }
            },
            Err(e) => problems.push(crate::secret::redact(&e.to_string())),
        }
        reachable.push(ep);
    }
    // Each mapped column pair, once both sides could be read.
    if let [a, b] = reachable.as_slice() {
        for e in &config.entities {
            let (Some(at), Some(bt)) = (
                a.describe(&e.name)
                    .await
                    .map_err(|e| CliError::Setup(crate::secret::redact(&e.to_string())))?,
                b.describe(&e.name)
                    .await
                    .map_err(|e| CliError::Setup(crate::secret::redact(&e.to_string())))?,
            ) else {
                continue;
            };
            for p in desc::compare(e, &at, &bt) {
                match p.level {
                    Level::Error => problems.push(format!("entity {}: {}", p.entity, p.message)),
                    Level::Warning => {
                        println!("warning: entity {}: {}", p.entity, p.message)
                    }
                }
            }
        }
    }
    // What changed since `install` recorded the tables (the same verdict `run` pauses on).
    if let ([a, b], 2) = (reachable.as_slice(), installed) {
        let sides = crate::sync::Sides {
            a: a.clone(),
            b: b.clone(),
        };
        match crate::sync::drift::assess(&config, &sides).await {
            Ok(found) => {
                for w in &found.warnings {
                    println!("warning: {w}");
                }
                for (entity, why) in &found.paused {
                    for w in why {
                        problems.push(format!("`tandem run` pauses entity {entity}: {w}"));
                    }
                }
            }
            Err(e) => problems.push(crate::secret::redact(&e.to_string())),
        }
    }
    if problems.is_empty() {
        println!(
            "ok: {} entities, both sides reachable, tables, columns and keys fit the config",
            config.entities.len()
        );
        Ok(())
    } else {
        Err(CliError::Setup(format!(
            "{} problem(s) found:\n  {}\nfix them (in tandem.toml or the tables), then run `tandem check` again",
            problems.len(),
            problems.join("\n  ")
        )))
    }
}
