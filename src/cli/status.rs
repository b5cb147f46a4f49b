//! `tandem status`: pending, suspended, lag and linked counts per entity and side.

use std::sync::Arc;

use chrono::Utc;
use serde::Serialize;

use super::CliError;
use crate::config::{Config, Side};
use crate::endpoint;

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
}

/// Prints the counts, as a table or as JSON.
pub async fn run(config: &Arc<Config>, json: bool) -> Result<(), CliError> {
    let mut rows = Vec::new();
    let now = Utc::now();
    for side in [Side::A, Side::B] {
        let ep = endpoint::open(config.clone(), side)?;
        for s in ep.status().await? {
            rows.push(Row {
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
        "{:<20} {:>4} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "ENTITY", "SIDE", "PENDING", "SUSPENDED", "OLDEST", "LINKED", "CONFLICTS"
    );
    for r in &rows {
        let age = r
            .oldest_pending_s
            .map(|s| format!("{s:.1}s"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:>4} {:>9} {:>9} {:>12} {:>9} {:>9}",
            r.entity,
            r.side.to_uppercase(),
            r.pending,
            r.suspended,
            age,
            r.linked,
            r.conflicts
        );
    }
    Ok(())
}
