//! `tandem suspended list | show ID | resubmit ID|--all | discard ID`: the operator's view
//! of changes that failed `max_attempts` times and wait in an outbox.
//!
//! An id names the side whose outbox holds the change and its sequence there: `A-123`
//! (also accepted: `a123`, `A:123`, or a bare `123` when only one side has it).

use std::sync::Arc;

use tracing::warn;

use super::{open_sides, CliError, SuspendedCmd};
use crate::config::{Config, Side};
use crate::endpoint::SuspendedChange;
use crate::sync::Sides;

/// How many suspended changes `list` shows per side.
const LIST_LIMIT: i64 = 1000;

/// Runs one `suspended` subcommand.
pub async fn run(config: &Arc<Config>, cmd: SuspendedCmd) -> Result<(), CliError> {
    let sides = open_sides(config)?;
    match cmd {
        SuspendedCmd::List => list(&sides).await,
        SuspendedCmd::Show { id } => {
            let c = find(&sides, &id).await?;
            show(&c);
            Ok(())
        }
        SuspendedCmd::Resubmit { id, all } => resubmit(&sides, id.as_deref(), all).await,
        SuspendedCmd::Discard { id } => {
            let c = find(&sides, &id).await?;
            match sides.get(c.side).discard(c.seq).await? {
                Some(gone) => {
                    warn!(
                        entity = %gone.entity, side = %gone.side, key = %gone.key, seq = gone.seq,
                        image = %gone.image, "suspended change discarded by an operator"
                    );
                    println!("discarded {}:", id_of(&gone));
                    show(&gone);
                    Ok(())
                }
                None => Err(CliError::Setup(format!(
                    "{id} is no longer suspended (it was resubmitted, superseded or discarded meanwhile)"
                ))),
            }
        }
    }
}

fn id_of(c: &SuspendedChange) -> String {
    format!("{}-{}", c.side, c.seq)
}

/// Parses `A-123`, `a123`, `B:7` or `123`.
fn parse_id(id: &str) -> Result<(Option<Side>, i64), CliError> {
    let t = id.trim();
    let (side, rest) = match t.chars().next() {
        Some('a' | 'A') => (Some(Side::A), &t[1..]),
        Some('b' | 'B') => (Some(Side::B), &t[1..]),
        _ => (None, t),
    };
    let digits = rest.trim_start_matches(['-', ':']);
    digits
        .parse::<i64>()
        .map(|n| (side, n))
        .map_err(|_| {
            CliError::Setup(format!(
                "{id:?} is not a suspended-change id: use the ID column of `tandem suspended list`, e.g. A-123"
            ))
        })
}

async fn find(sides: &Sides, id: &str) -> Result<SuspendedChange, CliError> {
    let (side, seq) = parse_id(id)?;
    let candidates = match side {
        Some(s) => vec![s],
        None => vec![Side::A, Side::B],
    };
    let mut found = Vec::new();
    for s in candidates {
        found.extend(sides.get(s).suspended(Some(seq), 1).await?);
    }
    match found.len() {
        0 => Err(CliError::Setup(format!(
            "no suspended change {id} (see `tandem suspended list`)"
        ))),
        1 => Ok(found.remove(0)),
        _ => Err(CliError::Setup(format!(
            "{id} exists on both sides: say which, as A-{seq} or B-{seq}"
        ))),
    }
}

async fn list(sides: &Sides) -> Result<(), CliError> {
    let mut all = Vec::new();
    for s in [Side::A, Side::B] {
        all.extend(sides.get(s).suspended(None, LIST_LIMIT).await?);
    }
    if all.is_empty() {
        println!("no suspended changes");
        return Ok(());
    }
    println!(
        "{:<10} {:<16} {:<18} {:<6} {:>8}  {:<20} {:<20} ERROR",
        "ID", "ENTITY", "KEY", "OP", "ATTEMPTS", "FIRST ERROR", "LAST ERROR"
    );
    let fmt_t = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_else(|| "-".into())
    };
    for c in &all {
        let error: String = c
            .last_error
            .as_deref()
            .unwrap_or("")
            .chars()
            .take(120)
            .collect();
        println!(
            "{:<10} {:<16} {:<18} {:<6} {:>8}  {:<20} {:<20} {}",
            id_of(c),
            c.entity,
            c.key,
            c.op,
            c.attempts,
            fmt_t(c.first_failed_at),
            fmt_t(c.last_failed_at),
            error
        );
    }
    println!(
        "\n{} suspended. `tandem suspended show ID` for the whole change; fix the cause, then \
         `tandem suspended resubmit ID` (or --all).",
        all.len()
    );
    Ok(())
}

fn show(c: &SuspendedChange) {
    let image = serde_json::from_str::<serde_json::Value>(&c.image)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| c.image.clone());
    println!("id:           {}", id_of(c));
    println!("entity:       {}", c.entity);
    println!("captured at:  side {} ({})", c.side, c.captured_at);
    println!("key:          {}", c.key);
    println!("op:           {}", c.op);
    println!("attempts:     {}", c.attempts);
    if let Some(t) = c.first_failed_at {
        println!("first error:  {t}");
    }
    if let Some(t) = c.last_failed_at {
        println!("last error:   {t}");
    }
    println!("error:        {}", c.last_error.as_deref().unwrap_or("-"));
    println!("image:\n{image}");
}

async fn resubmit(sides: &Sides, id: Option<&str>, all: bool) -> Result<(), CliError> {
    match (id, all) {
        (Some(_), true) | (None, false) => Err(CliError::Setup(
            "say which: `tandem suspended resubmit ID` or `tandem suspended resubmit --all`".into(),
        )),
        (None, true) => {
            let mut n = 0;
            for s in [Side::A, Side::B] {
                n += sides.get(s).resubmit(None).await?;
            }
            println!("{n} suspended change(s) resubmitted: they are pending again");
            Ok(())
        }
        (Some(id), false) => {
            let c = find(sides, id).await?;
            let n = sides.get(c.side).resubmit(Some(c.seq)).await?;
            println!(
                "{} resubmitted ({n}): pending again, attempts reset",
                id_of(&c)
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_in_every_documented_form() {
        assert_eq!(parse_id("A-123").unwrap(), (Some(Side::A), 123));
        assert_eq!(parse_id("a123").unwrap(), (Some(Side::A), 123));
        assert_eq!(parse_id("B:7").unwrap(), (Some(Side::B), 7));
        assert_eq!(parse_id("42").unwrap(), (None, 42));
        assert!(parse_id("x-1").is_err());
        assert!(parse_id("A-").is_err());
    }
}
