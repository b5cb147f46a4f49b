//! Verify: do both sides hold the same records, with the same values, linked to each other?
//!
//! Each database renders its records into one shape (A's codes, parents by A's key, keys as
//! id_map texts), hashes them, and sums the hashes per bucket of join keys. Only buckets whose
//! count or sum differ are looked at record by record, and only records that differ are read
//! in full (for a bounded sample): when the sides agree, no row crosses the wire. (Entities
//! with converted columns are hashed by tandem instead, each converted column in B's terms: see
//! `endpoint::verify_hash`.) A looked-up column (`lookup`) is compared through its reference
//! table: the side holding the table renders its id as the reference row's value, inside the
//! database, so both sides hash the value the other side holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, Entity, Side};
use crate::endpoint::{bulk, EndpointError, RecordHash};
use crate::model::{Image, Key, Op};
use crate::progress::Progress;
use crate::sync::Sides;

/// How many differences of each kind are shown in full.
const SAMPLE: usize = 10;
/// Buckets read record by record per round trip.
const BUCKETS_PER_ROUND: usize = 64;

/// Options of a verify run.
#[derive(Debug, Clone)]
pub struct Options {
    /// One entity, or all.
    pub entity: Option<String>,
    /// Queue the differences for re-sync from this side.
    pub repair_from: Option<Side>,
}

/// One differing record, with its keys on both sides.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub a_key: Option<String>,
    pub b_key: Option<String>,
    /// The rows as they are (only for the sample).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a_row: Option<Image>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b_row: Option<Image>,
    /// For a record in both with different values (in the sample): the mapped columns that
    /// differ, each with both values.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<ColumnDiff>,
}

/// One mapped column that differs in a sampled record, with both values as JSON texts cut
/// to [`VALUE_CHARS`] characters (codes in each side's own terms; a `ref` as the parent's key
/// on each side).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ColumnDiff {
    pub a_column: String,
    pub b_column: String,
    pub a: String,
    pub b: String,
}

/// How much of a value a [`ColumnDiff`] shows.
pub const VALUE_CHARS: usize = 60;

/// The comparison of one entity.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EntityReport {
    pub entity: String,
    pub a_rows: i64,
    pub b_rows: i64,
    pub only_in_a: usize,
    pub only_in_b: usize,
    pub different: usize,
    /// Records with changes still on their way (not counted as differences).
    pub in_flight: usize,
    pub sample_only_in_a: Vec<Difference>,
    pub sample_only_in_b: Vec<Difference>,
    pub sample_different: Vec<Difference>,
    /// With `--repair`: records queued for re-sync, and records deleted on the other side.
    pub queued: u64,
    pub deleted: u64,
}

impl EntityReport {
    /// Any difference at all?
    pub fn differs(&self) -> bool {
        self.only_in_a + self.only_in_b + self.different > 0
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    OnlyA,
    OnlyB,
    Different,
}

/// Compares the entities; see the module comment.
pub async fn run(
    config: &Arc<Config>,
    sides: &Sides,
    opts: &Options,
) -> Result<Vec<EntityReport>, EndpointError> {
    let entities: Vec<&Entity> = match &opts.entity {
        Some(name) => vec![config
            .entity(name)
            .ok_or_else(|| EndpointError::Config(format!("no entity {name:?} in the config")))?],
        None => config.entities_parents_first(),
    };
    // Asked before anything starts: a side that cannot verify (or repair) says so now.
    let what = if opts.repair_from.is_some() {
        "verify --repair"
    } else {
        "verify"
    };
    for side in [Side::A, Side::B] {
        bulk(sides.get(side).as_ref(), what)?;
    }
    let mut out = Vec::new();
    for e in entities {
        out.push(one(sides, e, opts).await?);
    }
    Ok(out)
}

async fn one(sides: &Sides, e: &Entity, opts: &Options) -> Result<EntityReport, EndpointError> {
    let name = e.name.as_str();
    let (a, b) = (
        bulk(sides.get(Side::A).as_ref(), "verify")?,
        bulk(sides.get(Side::B).as_ref(), "verify")?,
    );
    let mut report = EntityReport {
        entity: name.to_string(),
        a_rows: a.row_count(name).await?,
        b_rows: b.row_count(name).await?,
        ..Default::default()
    };
    // About 256 records per bucket: small enough to drill into, few enough to compare.
    let biggest = report.a_rows.max(report.b_rows).max(1);
    let wanted = u64::try_from(biggest / 256 + 1).unwrap_or(1);
    let n = i32::try_from(wanted.next_power_of_two().clamp(16, 1 << 20)).unwrap_or(16);
    let ha: HashMap<i32, (i64, String)> = a
        .verify_buckets(name, n)
        .await?
        .into_iter()
        .map(|h| (h.bucket, (h.count, h.sum)))
        .collect();
    let hb: HashMap<i32, (i64, String)> = b
        .verify_buckets(name, n)
        .await?
        .into_iter()
        .map(|h| (h.bucket, (h.count, h.sum)))
        .collect();
    let mut differing: Vec<i32> = ha
        .keys()
        .chain(hb.keys())
        .copied()
        .collect::<HashSet<_>>()
        .into_iter()
        .filter(|k| ha.get(k) != hb.get(k))
        .collect();
    differing.sort_unstable();
    let mut progress = Progress::new(
        &format!("verify {name}"),
        differing.len() as u64,
        "differing buckets",
    );
    for group in differing.chunks(BUCKETS_PER_ROUND) {
        let ra = by_join_key(a.verify_records(name, n, group).await?);
        let rb = by_join_key(b.verify_records(name, n, group).await?);
        let mut found: Vec<(Kind, RecordHash)> = Vec::new();
        for (jk, ra) in &ra {
            match rb.get(jk) {
                None => found.push((Kind::OnlyA, ra.clone())),
                Some(rb) if rb.hash != ra.hash => found.push((
                    Kind::Different,
                    RecordHash {
                        b_key: rb.b_key.clone(),
                        ..ra.clone()
                    },
                )),
                Some(_) => {}
            }
        }
        for (jk, rb) in &rb {
            if !ra.contains_key(jk) {
                found.push((Kind::OnlyB, rb.clone()));
            }
        }
        let jks: Vec<String> = found.iter().map(|(_, r)| r.join_key.clone()).collect();
        let mut flying = a.verify_in_flight(name, &jks).await?;
        flying.extend(b.verify_in_flight(name, &jks).await?);
        for (kind, r) in found {
            if flying.contains(&r.join_key) {
                report.in_flight += 1;
                continue;
            }
            record(sides, e, &mut report, kind, r, opts.repair_from).await?;
        }
        progress.add(group.len() as u64);
    }
    progress.finish();
    Ok(report)
}

fn by_join_key(records: Vec<RecordHash>) -> BTreeMap<String, RecordHash> {
    records
        .into_iter()
        .map(|r| (r.join_key.clone(), r))
        .collect()
}

fn parse(k: &Option<String>) -> Option<Key> {
    k.as_deref().and_then(|t| Key::parse(t).ok())
}

/// The mapped columns of `e` whose values differ between A's row `a` and B's row `b`,
/// compared as verify compares them: B's codes in A's terms, a parent through A's links,
/// values in their comparable form (`verify_hash::normalize`: numbers by value, date/times
/// at microseconds, instants in UTC).
async fn differing_columns(
    sides: &Sides,
    e: &Entity,
    a: &Image,
    b: &Image,
) -> Result<Vec<ColumnDiff>, EndpointError> {
    use crate::endpoint::verify_hash::normalize;
    use serde_json::Value;
    let mut out = Vec::new();
    for c in &e.columns {
        let av = a.get(&c.a).cloned().unwrap_or(Value::Null);
        let bv = b.get(&c.b).cloned().unwrap_or(Value::Null);
        let equal = if let Some(parent) = &c.parent {
            // A's parent key, through A's links, against B's parent key.
            if av.is_null() || bv.is_null() {
                av.is_null() && bv.is_null()
            } else {
                let ak = Key::from_values(std::slice::from_ref(&av));
                let links = sides
                    .get(Side::A)
                    .links(parent, std::slice::from_ref(&ak))
                    .await?;
                let peer = links
                    .get(&ak)
                    .filter(|l| !l.deleted)
                    .and_then(|l| l.peer_key.clone());
                peer.is_some_and(|p| p.values().first().map(normalize) == Some(normalize(&bv)))
            }
        } else if let Some(l) = &c.lookup {
            // The reference row's value for the id its side holds, against the other side's.
            let (id, other) = match l.side {
                Side::A => (&av, &bv),
                Side::B => (&bv, &av),
            };
            match crate::model::value_text(id) {
                None => other.is_null(),
                Some(text) => {
                    let ep = sides.get(l.side);
                    let found = crate::endpoint::reference(ep.as_ref())?
                        .look_up(&l.table, &l.key, &l.value, &[text])
                        .await?;
                    matches!(found.as_slice(), [(_, v)] if normalize(v) == normalize(other))
                }
            }
        } else if c.converted() {
            crate::mapping::convert::equal(c, &av, &bv)
        } else if let Some(map) = &c.values {
            match crate::mapping::translate(map, Side::B, &bv) {
                Ok(in_a) => normalize(&in_a) == normalize(&av),
                Err(_) => false,
            }
        } else {
            normalize(&av) == normalize(&bv)
        };
        if !equal {
            out.push(ColumnDiff {
                a_column: c.a.clone(),
                b_column: c.b.clone(),
                a: cut(&av.to_string()),
                b: cut(&bv.to_string()),
            });
        }
    }
    Ok(out)
}

/// `text` cut to [`VALUE_CHARS`] characters, marked with `…` when cut.
fn cut(text: &str) -> String {
    match text.char_indices().nth(VALUE_CHARS) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Counts one difference, keeps it in the sample, and repairs it when asked.
async fn record(
    sides: &Sides,
    e: &Entity,
    report: &mut EntityReport,
    kind: Kind,
    r: RecordHash,
    repair_from: Option<Side>,
) -> Result<(), EndpointError> {
    let name = e.name.as_str();
    let (count, sample) = match kind {
        Kind::OnlyA => (&mut report.only_in_a, &mut report.sample_only_in_a),
        Kind::OnlyB => (&mut report.only_in_b, &mut report.sample_only_in_b),
        Kind::Different => (&mut report.different, &mut report.sample_different),
    };
    *count += 1;
    let (a_key, b_key) = (parse(&r.a_key), parse(&r.b_key));
    // A B-only record's a_key is its link's, when B has one; its own row is what counts.
    let a_here = kind != Kind::OnlyB;
    let b_here = kind != Kind::OnlyA;
    if sample.len() < SAMPLE {
        let a_row = match (&a_key, a_here) {
            (Some(k), true) => {
                bulk(sides.get(Side::A).as_ref(), "verify")?
                    .fetch_image(name, k)
                    .await?
            }
            _ => None,
        };
        let b_row = match (&b_key, b_here) {
            (Some(k), true) => {
                bulk(sides.get(Side::B).as_ref(), "verify")?
                    .fetch_image(name, k)
                    .await?
            }
            _ => None,
        };
        let columns = match (&a_row, &b_row) {
            (Some(ar), Some(br)) if kind == Kind::Different => {
                differing_columns(sides, e, ar, br).await?
            }
            _ => Vec::new(),
        };
        sample.push(Difference {
            a_key: r.a_key.clone(),
            b_key: r.b_key.clone(),
            a_row,
            b_row,
            columns,
        });
    }
    let Some(from) = repair_from else {
        return Ok(());
    };
    let (has_it, key) = match from {
        Side::A => (a_here, a_key),
        Side::B => (b_here, b_key),
    };
    let other_key = match from {
        Side::A => parse(&r.b_key),
        Side::B => parse(&r.a_key),
    };
    match (has_it, key, other_key) {
        // Send the authoritative side's current row again, as an insert: it re-creates the
        // record where it is missing and overwrites it where it differs.
        (true, Some(k), _) => {
            report.queued += bulk(sides.get(from).as_ref(), "verify --repair")?
                .requeue(name, &k, Op::Insert)
                .await?
        }
        // Only on the other side: the authoritative side does not have it, so it goes.
        (false, _, Some(k)) => {
            report.deleted += bulk(sides.get(from.other()).as_ref(), "verify --repair")?
                .delete_records(name, std::slice::from_ref(&k))
                .await?
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_at_a_character_boundary() {
        assert_eq!(cut("\"short\""), "\"short\"");
        let long = format!("\"{}\"", "é".repeat(100));
        let c = cut(&long);
        assert_eq!(c.chars().count(), VALUE_CHARS + 1);
        assert!(c.ends_with('…'));
    }
}
