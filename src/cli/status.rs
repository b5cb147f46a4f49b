//! `tandem status`: pending, suspended, lag and linked counts per entity and side, entities
//! paused by schema drift, and one line saying what needs attention.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use super::{open_sides, CliError};
use crate::config::{Config, Side};
use crate::sync::drift;

#[derive(Debug, Serialize)]
struct Row {
    entity: String,
    /// Where the changes were captured.
    side: String,
    pending: i64,
    suspended: i64,
    /// Age of the oldest pending change, in seconds.
    oldest_pending_s: Option<f64>,
    linked: i64,
    /// Conflicts resolved at this side.
    conflicts: i64,
    /// Why the entity is paused by schema drift (its changes wait); absent when it is not.
    #[serde(skip_serializing_if = "Option::is_none")]
    paused: Option<String>,
}

/// Pending changes older than this need attention.
const LAG_ATTENTION_S: f64 = 60.0;

/// Prints the counts, as a table or as JSON.
pub async fn run(config: &Arc<Config>, json: bool) -> Result<(), CliError> {
    let sides = open_sides(config)?;
    let mut rows = Vec::new();
    let now = Utc::now();
    let assessment = drift::assess(config, &sides).await?;
    let paused: BTreeMap<String, String> = assessment
        .paused
        .iter()
        .map(|(e, why)| (e.clone(), why.join("; ")))
        .collect();
    for side in [Side::A, Side::B] {
        for s in sides.get(side).status().await? {
            rows.push(Row {
                paused: paused.get(&s.entity).cloned(),
                entity: s.entity,
                side: side.name().to_string(),
                pending: s.pending,
                suspended: s.suspended,
                oldest_pending_s: s
                    .oldest_pending
                    .map(|t| ((now - t).num_milliseconds().max(0) as f64) / 1000.0),
                linked: s.linked,
                conflicts: s.conflicts,
            });
        }
    }
    rows.sort_by(|x, y| (&x.entity, &x.side).cmp(&(&y.entity, &y.side)));
    if json {
        let text = serde_json::to_string_pretty(&rows)
            .map_err(|e| CliError::Setup(format!("cannot render status: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    println!(
        "{:<20} {:>4} {:>9} {:>9} {:>12} {:>9} {:>9}  STATE",
        "ENTITY", "SIDE", "PENDING", "SUSPENDED", "OLDEST", "LINKED", "CONFLICTS"
    );
    for r in &rows {
        let age = r
            .oldest_pending_s
            .map(|s| format!("{s:.1}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:>4} {:>9} {:>9} {:>12} {:>9} {:>9}  {}",
            r.entity,
            r.side.to_uppercase(),
            r.pending,
            r.suspended,
            age,
            r.linked,
            r.conflicts,
            if r.paused.is_some() {
                "paused"
            } else {
                "flowing"
            }
        );
    }
    for why in assessment.paused.values().flatten() {
        println!("paused: {why}");
    }
    println!("{}", attention(&rows, paused.keys().cloned().collect()));
    Ok(())
}

/// One line: what needs an operator now, each with the command to run; or that all is well.
fn attention(rows: &[Row], paused: Vec<String>) -> String {
    let mut needs = Vec::new();
    if !paused.is_empty() {
        needs.push(format!(
            "{} paused by schema drift ({}: see above, then `tandem check`)",
            plural(paused.len(), "entity", "entities"),
            paused.join(", ")
        ));
    }
    let suspended: i64 = rows.iter().map(|r| r.suspended).sum();
    if suspended > 0 {
        needs.push(format!(
            "{} suspended (`tandem suspended list`)",
            plural(suspended as usize, "change", "changes")
        ));
    }
    let lagging = rows
        .iter()
        .filter(|r| r.paused.is_none())
        .filter_map(|r| r.oldest_pending_s.map(|s| (s, r)))
        .filter(|(s, _)| *s > LAG_ATTENTION_S)
        .max_by(|x, y| x.0.total_cmp(&y.0));
    if let Some((s, r)) = lagging {
        needs.push(format!(
            "{} pending at {} for {s:.0} s (is `tandem run` running? `tandem run --once` drains)",
            r.entity,
            r.side.to_uppercase()
        ));
    }
    if needs.is_empty() {
        let pending: i64 = rows.iter().map(|r| r.pending).sum();
        format!(
            "ok: nothing suspended or paused, {} pending",
            plural(pending as usize, "change", "changes")
        )
    } else {
        format!("needs attention: {}", needs.join("; "))
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}
