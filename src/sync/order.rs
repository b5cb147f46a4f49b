//! Order within one entity that references itself (employees.reports_to → employee;
//! categories.parent): parents before children, and cycles broken. Pure: no connections.
//!
//! The batch arrives sorted by entity (parents first) and sequence. For an entity with a
//! `ref` to itself, each run of its upserts is put in dependency order (a record after the
//! records of the run its references name), and each run of its deletes in the reverse (a
//! child before its parent). Records whose references form a cycle (a record naming itself,
//! or A → B → A) cannot all go first: the one with the oldest sequence of each cycle is
//! applied in two steps — first a *pre-step* that inserts it with its references to the
//! entity left NULL (so it exists and is linked), later in the batch the change itself, whose
//! references then all resolve. A record that already waited for a parent (a change being
//! retried) gets the same pre-step, so two records referencing each other across batches
//! never wait for each other forever. (Upserts of both ops: a backfilled or re-sent record
//! travels as an update and creates the record where it is missing.)
//!
//! Deletes have the same problem in reverse: the source may clear a reference and then delete
//! both records, and folding turns that into two deletes of records still naming each other
//! at the target. A delete that folded several changes therefore gets a pre-step too: an
//! update with its references to the entity NULL, before the run's deletes.
//!
//! A pre-step is a [`TargetChange`] with no outbox rows (`seqs` empty) and the sequence just
//! before its change's: the target applies it like any change (the guard discards it when the
//! record is there already), and the source settles nothing for it.

use std::collections::HashMap;

use crate::config::Config;
use crate::model::{Key, Op, TargetChange};

/// Whether `c` is a pre-step added by [`order_self_references`] (it stands for no outbox row).
pub fn is_pre_step(c: &TargetChange) -> bool {
    c.seqs.is_empty()
}

/// Reorders, and adds pre-steps to, the runs of self-referencing entities in `batch` (sorted
/// as `batch::stage` sorts it); `attempts` travels with each change.
pub fn order_self_references(
    config: &Config,
    batch: Vec<(TargetChange, i32)>,
) -> Vec<(TargetChange, i32)> {
    if !config.entities.iter().any(|e| e.refers_to_itself()) {
        return batch;
    }
    let mut out = Vec::with_capacity(batch.len());
    let mut rest = batch.into_iter().peekable();
    while let Some(first) = rest.next() {
        let deleting = first.0.op == Op::Delete;
        let entity = first.0.entity.clone();
        let mut run = vec![first];
        while let Some(next) = rest.peek() {
            if next.0.entity != entity || (next.0.op == Op::Delete) != deleting {
                break;
            }
            if let Some(n) = rest.next() {
                run.push(n);
            }
        }
        let self_ref = config.entity(&entity).is_some_and(|e| e.refers_to_itself());
        if !self_ref {
            out.extend(run);
        } else if deleting {
            // A delete that folded earlier changes of its record (the source cleared a
            // reference, then deleted) may still be referenced at the target by a record
            // deleted with it: first clear the references of all of them.
            for (c, attempts) in run.iter().filter(|(c, _)| c.seqs.len() > 1) {
                let mut pre = pre_step(c);
                pre.op = Op::Update;
                out.push((pre, *attempts));
            }
            let mut ordered = dependency_order(run, false);
            ordered.reverse();
            out.extend(ordered);
        } else {
            out.extend(dependency_order(run, true));
        }
    }
    out
}

/// The references of `c` to records of its own entity.
fn self_parents<'c>(c: &'c TargetChange) -> impl Iterator<Item = &'c Key> + 'c {
    c.refs
        .iter()
        .filter(move |r| r.parent == c.entity)
        .map(|r| &r.source_key)
}

/// `c` with its references to its own entity left NULL and no outbox rows.
fn pre_step(c: &TargetChange) -> TargetChange {
    let mut pre = c.clone();
    pre.seqs = Vec::new();
    pre.seq = c.seq - 1;
    let entity = c.entity.clone();
    pre.refs.retain(|r| r.parent != entity);
    pre
}

/// Kahn's algorithm over one entity's run, stable in sequence order: a change goes once every
/// change of the run it references has gone (or its pre-step has). When none can go, a cycle
/// is left: with `pre_steps`, the oldest remaining change gets a pre-step, which resolves the
/// references to it; without, the oldest remaining change simply goes next.
fn dependency_order(run: Vec<(TargetChange, i32)>, pre_steps: bool) -> Vec<(TargetChange, i32)> {
    let n = run.len();
    let index: HashMap<&Key, usize> = run
        .iter()
        .enumerate()
        .map(|(i, (c, _))| (&c.source_key, i))
        .collect();
    // For each change: the changes of the run it waits for.
    let waits: Vec<Vec<usize>> = run
        .iter()
        .map(|(c, _)| {
            let mut w: Vec<usize> = self_parents(c)
                .filter_map(|k| index.get(k).copied())
                .collect();
            w.sort_unstable();
            w.dedup();
            w
        })
        .collect();
    let mut resolved = vec![false; n];
    let mut placed = vec![false; n];
    let mut order: Vec<(usize, bool)> = Vec::with_capacity(n);
    // A retried insert whose parent is not in this run may be waiting for a record that waits
    // for it: its pre-step lets that record resolve it.
    if pre_steps {
        for (i, (c, attempts)) in run.iter().enumerate() {
            let waits_outside = self_parents(c).any(|k| !index.contains_key(k));
            if *attempts > 0 && waits_outside {
                order.push((i, true));
                resolved[i] = true;
            }
        }
    }
    while order.iter().filter(|(_, pre)| !pre).count() < n {
        let ready: Vec<usize> = (0..n)
            .filter(|&i| !placed[i] && waits[i].iter().all(|&p| resolved[p]))
            .collect();
        if ready.is_empty() {
            // A cycle: the oldest change left goes first, in two steps when it may.
            let Some(i) = (0..n).find(|&i| !placed[i]) else {
                break;
            };
            if pre_steps && !resolved[i] {
                order.push((i, true));
                resolved[i] = true;
            } else {
                order.push((i, false));
                placed[i] = true;
                resolved[i] = true;
            }
            continue;
        }
        for i in ready {
            order.push((i, false));
            placed[i] = true;
            resolved[i] = true;
        }
    }
    let pres: Vec<TargetChange> = order
        .iter()
        .filter(|(_, pre)| *pre)
        .map(|&(i, _)| pre_step(&run[i].0))
        .collect();
    let mut slots: Vec<Option<(TargetChange, i32)>> = run.into_iter().map(Some).collect();
    let mut pres = pres.into_iter();
    let mut out = Vec::with_capacity(order.len());
    for (i, pre) in order {
        if pre {
            if let Some(p) = pres.next() {
                out.push((p, slots[i].as_ref().map_or(0, |(_, a)| *a)));
            }
        } else if let Some(c) = slots[i].take() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::{Image, RefValue};

    fn config() -> Config {
        let text = r#"
[a]
kind = "postgres"
url = "postgres://x@h/a"
[b]
kind = "postgres"
url = "postgres://x@h/b"
[[entities]]
name = "employee"
a = { table = "EMP", key = ["NO"] }
b = { table = "staff", key = ["id"] }
columns = [ { a = "BOSS", b = "boss_id", ref = "employee" }, { a = "NAME", b = "name" } ]
"#;
        crate::config::parse(text, std::path::Path::new("t.toml"), &|_| None).expect("config")
    }

    /// Employee `no` (sequence `seq`) reporting to `boss`.
    fn emp(no: i64, seq: i64, op: Op, boss: Option<i64>) -> TargetChange {
        TargetChange {
            entity: "employee".into(),
            op,
            seq,
            seqs: vec![seq],
            source_key: Key::from_values(&[json!(no)]),
            peer_hint: None,
            hint_predates: false,
            peer_applied_seq: 0,
            derived: false,
            born: false,
            row: Image::new(),
            incoming: Image::new(),
            refs: boss
                .map(|b| RefValue {
                    column: "boss_id".into(),
                    parent: "employee".into(),
                    source_key: Key::from_values(&[json!(b)]),
                    hint: None,
                })
                .into_iter()
                .collect(),
            lookups: Vec::new(),
            captured_at: chrono::DateTime::default(),
        }
    }

    /// (employee number, pre-step?) in the order applied.
    fn order(batch: Vec<(TargetChange, i32)>) -> Vec<(String, bool)> {
        order_self_references(&config(), batch)
            .into_iter()
            .map(|(c, _)| (c.source_key.to_string(), is_pre_step(&c)))
            .collect()
    }

    fn keys(v: &[(i64, bool)]) -> Vec<(String, bool)> {
        v.iter().map(|(k, p)| (format!("[{k}]"), *p)).collect()
    }

    #[test]
    fn parents_go_before_their_children_and_children_are_deleted_first() {
        // Captured child first (its boss updated into the batch later): the boss goes first.
        let batch = vec![
            (emp(3, 1, Op::Insert, Some(2)), 0),
            (emp(2, 2, Op::Insert, Some(1)), 0),
            (emp(1, 3, Op::Insert, None), 0),
            (emp(9, 4, Op::Insert, Some(77)), 0),
        ];
        assert_eq!(
            order(batch),
            keys(&[(1, false), (9, false), (2, false), (3, false)])
        );
        let deletes = vec![
            (emp(1, 1, Op::Delete, None), 0),
            (emp(2, 2, Op::Delete, Some(1)), 0),
            (emp(3, 3, Op::Delete, Some(2)), 0),
        ];
        assert_eq!(order(deletes), keys(&[(3, false), (2, false), (1, false)]));
    }

    #[test]
    fn a_cycle_is_broken_by_a_pre_step_of_its_oldest_insert() {
        // 5 → 6 → 5, and 7 → 7.
        let batch = vec![
            (emp(5, 10, Op::Insert, Some(6)), 0),
            (emp(6, 11, Op::Insert, Some(5)), 0),
            (emp(7, 12, Op::Insert, Some(7)), 0),
        ];
        let out = order_self_references(&config(), batch);
        let got: Vec<(String, bool)> = out
            .iter()
            .map(|(c, _)| (c.source_key.to_string(), is_pre_step(c)))
            .collect();
        assert_eq!(
            got,
            keys(&[(5, true), (6, false), (5, false), (7, true), (7, false)])
        );
        let pre = &out[0].0;
        assert!(
            pre.refs.is_empty(),
            "the pre-step leaves the reference NULL"
        );
        assert_eq!(
            pre.seq, 9,
            "just before its change, which the guard lets through"
        );
    }

    #[test]
    fn a_retried_change_waiting_outside_the_batch_gets_a_pre_step() {
        let batch = vec![
            (emp(5, 10, Op::Insert, Some(6)), 3),
            (emp(8, 11, Op::Insert, Some(6)), 0),
            (emp(9, 12, Op::Update, Some(6)), 3),
        ];
        assert_eq!(
            order(batch),
            keys(&[(5, true), (9, true), (5, false), (8, false), (9, false)])
        );
    }

    #[test]
    fn folded_deletes_clear_their_references_first() {
        let mut x = emp(5, 13, Op::Delete, None);
        x.seqs = vec![10, 13];
        let y = emp(6, 14, Op::Delete, None);
        let out = order_self_references(&config(), vec![(x, 0), (y, 0)]);
        let got: Vec<(String, Op, bool)> = out
            .iter()
            .map(|(c, _)| (c.source_key.to_string(), c.op, is_pre_step(c)))
            .collect();
        assert_eq!(
            got,
            vec![
                ("[5]".to_string(), Op::Update, true),
                ("[6]".to_string(), Op::Delete, false),
                ("[5]".to_string(), Op::Delete, false),
            ]
        );
    }

    #[test]
    fn other_entities_are_left_as_they_are() {
        let mut c = emp(1, 1, Op::Insert, Some(1));
        c.entity = "other".into();
        c.refs[0].parent = "other".into();
        let out = order_self_references(&config(), vec![(c, 0)]);
        assert_eq!(out.len(), 1);
    }
}
