//! `tandem verify [--entity NAME] [--json] [--repair [--from a|b]]`.

use std::sync::Arc;

use super::{open_sides, CliError, SideArg};
use crate::config::{Config, Side};
use crate::verify::{self, Difference, EntityReport, Options};

/// Compares both sides; exit 1 when they differ.
pub async fn run(
    config: &Arc<Config>,
    entity: Option<String>,
    json: bool,
    repair: bool,
    from: Option<SideArg>,
) -> Result<(), CliError> {
    let repair_from = match (repair, from) {
        (false, Some(_)) => {
            return Err(CliError::Setup("--from goes with --repair".into()));
        }
        (false, None) => None,
        (true, None | Some(SideArg::A)) => Some(Side::A),
        (true, Some(SideArg::B)) => Some(Side::B),
        (true, Some(SideArg::Both)) => {
            return Err(CliError::Setup(
                "--from takes a or b: the side whose values are right".into(),
            ))
        }
    };
    let sides = open_sides(config)?;
    let reports = verify::run(
        config,
        &sides,
        &Options {
            entity,
            repair_from,
        },
    )
    .await?;
    if json {
        let text = serde_json::to_string_pretty(&reports)
            .map_err(|e| CliError::Setup(format!("cannot render the report: {e}")))?;
        println!("{text}");
    } else {
        for r in &reports {
            print_human(r);
        }
    }
    if let Some(from) = repair_from {
        let (q, d): (u64, u64) = reports
            .iter()
            .fold((0, 0), |(q, d), r| (q + r.queued, d + r.deleted));
        if q + d > 0 {
            println!(
                "repair: {q} record(s) queued for re-sync from side {from}, {d} record(s) that side {from} \
                 does not have deleted at side {}; `tandem run` applies them (or `tandem run --once`)",
                from.other()
            );
        }
    }
    let differing = reports.iter().filter(|r| r.differs()).count();
    if differing > 0 {
        // On stderr, so `--json` stays one JSON document on stdout.
        return Err(CliError::Found(if repair {
            "the differences are queued for re-sync: `tandem run` applies them (or `tandem run --once`); then run `tandem verify` again".into()
        } else {
            "to make the sides equal, run `tandem verify --repair --from a` (A's records win; `--from b`: B's), then `tandem run --once` if no `tandem run` is going".into()
        }));
    }
    Ok(())
}

fn print_human(r: &EntityReport) {
    let flight = if r.in_flight > 0 {
        format!(", {} in flight (changes on their way)", r.in_flight)
    } else {
        String::new()
    };
    if !r.differs() {
        println!(
            "{}: equal (A {} rows, B {} rows{flight})",
            r.entity, r.a_rows, r.b_rows
        );
        return;
    }
    println!(
        "{}: DIFFERENT — A {} rows, B {} rows: {} only in A, {} only in B, {} with different values{flight}",
        r.entity, r.a_rows, r.b_rows, r.only_in_a, r.only_in_b, r.different
    );
    let show = |title: &str, list: &[Difference]| {
        if list.is_empty() {
            return;
        }
        println!("  {title} (up to 10):");
        for d in list {
            println!(
                "    A key {:<14} B key {:<14}",
                d.a_key.as_deref().unwrap_or("-"),
                d.b_key.as_deref().unwrap_or("-")
            );
            if !d.columns.is_empty() {
                for c in &d.columns {
                    println!(
                        "      {} / {}: A {}  B {}",
                        c.a_column, c.b_column, c.a, c.b
                    );
                }
                continue;
            }
            if let Some(row) = &d.a_row {
                println!("      A: {}", serde_json::Value::Object(row.clone()));
            }
            if let Some(row) = &d.b_row {
                println!("      B: {}", serde_json::Value::Object(row.clone()));
            }
        }
    };
    show("only in A", &r.sample_only_in_a);
    show("only in B", &r.sample_only_in_b);
    show("different", &r.sample_different);
}
