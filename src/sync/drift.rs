//! Schema drift while running: which entities must pause because a table they use no longer
//! is what `install` recorded (`endpoint::fingerprint`), and a watcher that keeps the set
//! current for the service loop.
//!
//! Pausing an entity means its changes are not claimed (both directions): they stay pending in
//! the outboxes, untried, so nothing is lost, suspended or retried in vain, while the other
//! entities keep flowing. It resumes by itself as soon as its tables match what was recorded
//! again: the column restored, or `tandem install` run to record the tables as they are now
//! (with the mapping fixed in tandem.toml first, and `run` restarted to read it).
//! `run`, `check` and `status` all decide through [`assess`], so they agree.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::Sides;
use crate::config::{Config, Side};
use crate::endpoint::fingerprint::{compare, Fingerprint};
use crate::endpoint::EndpointError;

/// How often the service compares the live tables with what `install` recorded (each round
/// reads every entity's table description on both sides).
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// The entities paused now, each with why; shared by the watcher, the sync loop and the
/// status page.
#[derive(Debug, Default)]
pub struct Paused {
    by_entity: RwLock<BTreeMap<String, Vec<String>>>,
}

impl Paused {
    /// The paused entities' names.
    pub fn entities(&self) -> Vec<String> {
        self.by_entity
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Each paused entity with its reasons.
    pub fn reasons(&self) -> BTreeMap<String, Vec<String>> {
        self.by_entity.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Replaces the set; returns the entities newly paused and those resumed.
    fn replace(&self, now: BTreeMap<String, Vec<String>>) -> (Vec<String>, Vec<String>) {
        let Ok(mut m) = self.by_entity.write() else {
            return (Vec::new(), Vec::new());
        };
        let paused = now
            .keys()
            .filter(|e| !m.contains_key(*e))
            .cloned()
            .collect();
        let resumed = m
            .keys()
            .filter(|e| !now.contains_key(*e))
            .cloned()
            .collect();
        *m = now;
        (paused, resumed)
    }
}

/// What the comparison found across both sides.
#[derive(Debug, Default, Clone)]
pub struct Assessment {
    /// Entities that must pause, with every reason (side, table, column, what to do).
    pub paused: BTreeMap<String, Vec<String>>,
    /// Changes that need no pause (a new unmapped column, no fingerprint recorded yet).
    pub warnings: Vec<String>,
}

/// Compares every entity's tables on both sides with what `install` recorded there.
pub async fn assess(config: &Config, sides: &Sides) -> Result<Assessment, EndpointError> {
    let mut out = Assessment::default();
    for side in [Side::A, Side::B] {
        let ep = sides.get(side);
        let recorded: HashMap<String, Option<Fingerprint>> = ep
            .fingerprints()
            .await?
            .into_iter()
            .map(|r| (r.entity, r.fingerprint))
            .collect();
        for e in &config.entities {
            let Some(Some(fp)) = recorded.get(&e.name) else {
                out.warnings.push(format!(
                    "entity {}: side {side}: no fingerprint of table {} recorded, so schema \
                     changes there go unnoticed: run `tandem install`",
                    e.name,
                    e.side(side).table
                ));
                continue;
            };
            let live = ep.describe(&e.name).await?.map(|d| Fingerprint::of(&d));
            for d in compare(e, side, fp, live.as_ref()) {
                if d.pause {
                    out.paused
                        .entry(e.name.clone())
                        .or_default()
                        .push(d.message);
                } else {
                    out.warnings.push(d.message);
                }
            }
        }
    }
    Ok(out)
}

/// Keeps `paused` current until `shutdown`: logs each pause and resume, each warning once.
/// A side that cannot be asked leaves the set as it was (the sync loop reports the outage).
pub async fn watch(
    config: Arc<Config>,
    sides: Sides,
    paused: Arc<Paused>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut warned: BTreeSet<String> = BTreeSet::new();
    while !*shutdown.borrow() {
        if let Ok(a) = assess(&config, &sides).await {
            for w in a.warnings {
                if warned.insert(w.clone()) {
                    warn!("schema drift: {w}");
                }
            }
            // Every round, so the series exist once a recorder is installed.
            for e in &config.entities {
                super::metrics::set_paused(&e.name, a.paused.contains_key(&e.name));
            }
            let reasons = a.paused.clone();
            let (now_paused, resumed) = paused.replace(a.paused);
            for e in now_paused {
                let at = format!("entity {e}: ");
                for r in reasons.get(&e).into_iter().flatten() {
                    warn!("entity {e} paused: {}", r.strip_prefix(&at).unwrap_or(r));
                }
            }
            for e in resumed {
                info!(
                    "entity {e} resumed: its tables match what `tandem install` recorded; its \
                     pending changes flow again"
                );
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = shutdown.changed() => {}
        }
    }
}
