//! Turns a row image in one side's shape into the other side's: column renames, code
//! translation (`values`), converters (`convert`, in [`convert`]) and parent keys to translate
//! (`ref`). Pure: no connections.

pub mod convert;

use serde_json::Value;

use crate::config::{Entity, Side, ValueMap};
use crate::model::{value_text, Change, Image, Key, LookupValue, Op, RefValue, TargetChange};

/// A row that cannot be mapped; permanent (retrying will not help until the data or the
/// config changes).
#[derive(Debug, Clone, thiserror::Error)]
#[error("entity {entity}, {side} table {table}, column {column}, key {key}: {message}")]
pub struct MappingError {
    pub entity: String,
    pub side: Side,
    pub table: String,
    pub column: String,
    pub key: String,
    pub message: String,
}

/// Maps a decoded change captured at `from` into the other side's shape.
///
/// `peer_hint` is the record's key at the target as the source's id map knows it.
pub fn map_change(
    entity: &Entity,
    from: Side,
    change: &Change,
    seqs: Vec<i64>,
    peer_hint: Option<Key>,
) -> Result<TargetChange, Box<MappingError>> {
    let to = from.other();
    let err = |column: &str, message: String| {
        Box::new(MappingError {
            entity: entity.name.clone(),
            side: from,
            table: entity.side(from).table.to_string(),
            column: column.to_string(),
            key: change.key.to_string(),
            message,
        })
    };
    let mut row = Image::new();
    let mut incoming = Image::new();
    let mut refs = Vec::new();
    let mut lookups = Vec::new();
    for col in entity.written_columns(to) {
        let src = col.name(from);
        let dst = col.name(to);
        let value = change
            .image
            .get(src)
            .ok_or_else(|| err(src, "column is missing from the captured row".into()))?;
        if let Some(parent) = &col.parent {
            if !value.is_null() {
                refs.push(RefValue {
                    column: dst.to_string(),
                    parent: parent.clone(),
                    source_key: Key::from_values(std::slice::from_ref(value)),
                    hint: None,
                });
            }
            row.insert(dst.to_string(), Value::Null);
            continue;
        }
        if col.lookup.is_some() {
            // Resolved by the sync through the reference table, for the whole batch at once.
            if !value.is_null() {
                lookups.push(LookupValue {
                    column: dst.to_string(),
                    source_column: src.to_string(),
                    value: value.clone(),
                });
            }
            row.insert(dst.to_string(), Value::Null);
            continue;
        }
        let mapped = match (&col.values, &col.convert) {
            (Some(map), _) => translate(map, from, value).map_err(|m| err(src, m))?,
            (None, Some(c)) => convert::convert(c, from, value).map_err(|m| err(src, m))?,
            (None, None) => value.clone(),
        };
        if col.converted() {
            incoming.insert(dst.to_string(), value.clone());
        }
        row.insert(dst.to_string(), mapped);
    }
    // Constants are in every row; the target writes them on insert only.
    for k in entity.constants_at(to) {
        row.insert(k.column.clone(), k.value.clone());
    }
    // A soft delete at the target: what the other side has is live there (written on insert
    // and update; a delete marks the row instead, see the endpoints' row_delete).
    // A delete carries the mark's deleted value (a flag's `value`; NULL for a time, which
    // the target takes from its clock).
    if let Some(sd) = entity.soft_delete_at(to) {
        let v = match (change.op, &sd.flag) {
            (Op::Delete, Some((deleted, _))) => deleted.clone(),
            (Op::Delete, None) => Value::Null,
            _ => sd.live_value(),
        };
        row.insert(sd.column.clone(), v);
    }
    if let Some(peer) = &entity.side(to).peer_id_column {
        // The config guarantees the source key has one column.
        let v = change
            .key
            .values()
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        row.insert(peer.clone(), v);
    }
    Ok(TargetChange {
        entity: entity.name.clone(),
        op: change.op,
        seq: change.seq,
        seqs,
        source_key: change.key.clone(),
        peer_hint,
        hint_predates: false,
        peer_applied_seq: 0,
        row,
        incoming,
        refs,
        lookups,
        captured_at: change.captured_at,
        derived: change.derived,
        born: change.born,
    })
}

/// The op a change captured at `from` travels as, for an entity that shows only some rows
/// at `from` (`soft_delete`, `filter`); `relinked` tells whether the source's link of the
/// record is a tombstone (its delete travelled already). A row that is hidden (soft-deleted,
/// outside the filter) is absent for tandem: any change of it travels as a delete (a
/// delete of a record the target never had settles as nothing there). A visible row whose
/// link is a tombstone came back (un-deleted, entered the filter): its update travels as an
/// insert, which re-creates the record where an update after a delete would be discarded.
/// Other entities keep the captured op.
pub fn visible_op(entity: &Entity, from: Side, change: &Change, tombstoned: bool) -> Op {
    if !entity.restricted_at(from) || change.op == Op::Delete {
        return change.op;
    }
    if entity.hidden(from, &change.image) {
        return Op::Delete;
    }
    if change.op == Op::Update && tombstoned {
        return Op::Insert;
    }
    change.op
}

/// The lossy rule, for a change mapped to side `to` whose record there holds `current`: each
/// converted column whose current value is equal to the incoming one ([`convert::equal`])
/// keeps its current value, so a value that lost detail on the way (trimmed, rounded, one of a
/// repeated hour's instants) never overwrites the side that holds more. Writing the value the
/// row holds is no write at all.
pub fn keep_detail(entity: &Entity, to: Side, change: &mut TargetChange, current: &Image) {
    for col in entity.columns.iter().filter(|c| c.converted()) {
        let column = col.name(to);
        let (Some(incoming), Some(now)) = (change.incoming.get(column), current.get(column)) else {
            continue;
        };
        let same = match to {
            Side::B => convert::equal(col, incoming, now),
            Side::A => convert::equal(col, now, incoming),
        };
        if same {
            change.row.insert(column.to_string(), now.clone());
        }
    }
}

/// Translates a code through a `values` map in the direction of travel. NULL passes through;
/// a code the map does not know is an error (a silently copied unknown code would be wrong
/// on the other side).
pub fn translate(map: &ValueMap, from: Side, value: &Value) -> Result<Value, String> {
    let Some(text) = value_text(value) else {
        return Ok(Value::Null);
    };
    // The way back writes a preferred code where several A codes share the B value.
    let preferred = |a: &Value| {
        a.as_str()
            .is_some_and(|a| map.prefer.iter().any(|p| p == a))
    };
    let pairs = map
        .pairs
        .iter()
        .filter(|(a, _)| from == Side::A || preferred(a))
        .chain(map.pairs.iter());
    for (a, b) in pairs {
        let (src, dst) = match from {
            Side::A => (a, b),
            Side::B => (b, a),
        };
        if value_text(src).as_deref() == Some(text.as_str()) {
            return Ok(dst.clone());
        }
    }
    let known: Vec<String> = map
        .pairs
        .iter()
        .filter_map(|(a, b)| value_text(if from == Side::A { a } else { b }))
        .collect();
    Err(format!(
        "value {value} has no entry in the column's `values` map (known: {})",
        known.join(", ")
    ))
}

/// The op of the one change that has the effect of a run of one record's changes, given their
/// ops in sequence order: the newest op, except that a re-created record (an insert since the
/// last delete) stays an insert — an update on a tombstone is discarded, an insert re-creates.
pub fn folded_op(ops: &[Op]) -> Option<Op> {
    let newest = *ops.last()?;
    if newest == Op::Delete {
        return Some(newest);
    }
    let since_delete = ops
        .iter()
        .rev()
        .take_while(|op| **op != Op::Delete)
        .any(|op| *op == Op::Insert);
    Some(if since_delete { Op::Insert } else { newest })
}

/// Combines a run of changes of one record (in any order) into the one change that has
/// the same final effect: full images make the newest one win. Returns the newest change,
/// with its op adjusted (see [`folded_op`]), and every sequence number of the run.
pub fn coalesce(run: &[Change]) -> Option<(Change, Vec<i64>)> {
    let mut sorted: Vec<&Change> = run.iter().collect();
    sorted.sort_by_key(|c| c.seq);
    let ops: Vec<Op> = sorted.iter().map(|c| c.op).collect();
    let mut newest = (*sorted.last()?).clone();
    newest.op = folded_op(&ops)?;
    newest.attempts = run.iter().map(|c| c.attempts).max().unwrap_or(0);
    newest.derived = run.iter().all(|c| c.derived);
    newest.born = sorted.first().is_some_and(|c| c.op == Op::Insert);
    let seqs: Vec<i64> = sorted.iter().map(|c| c.seq).collect();
    Some((newest, seqs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vm() -> ValueMap {
        ValueMap {
            pairs: vec![(json!("O"), json!("open")), (json!("C"), json!("closed"))],
            prefer: Vec::new(),
        }
    }

    #[test]
    fn translate_both_directions_and_null() {
        assert_eq!(
            translate(&vm(), Side::A, &json!("O")).unwrap(),
            json!("open")
        );
        assert_eq!(
            translate(&vm(), Side::B, &json!("closed")).unwrap(),
            json!("C")
        );
        assert_eq!(
            translate(&vm(), Side::A, &Value::Null).unwrap(),
            Value::Null
        );
        let e = translate(&vm(), Side::A, &json!("X")).unwrap_err();
        assert!(e.contains("\"X\"") && e.contains("O, C"), "{e}");
    }

    #[test]
    fn translate_matches_numbers_by_text() {
        let m = ValueMap {
            pairs: vec![(json!("1"), json!("yes")), (json!("0"), json!("no"))],
            prefer: Vec::new(),
        };
        assert_eq!(translate(&m, Side::A, &json!(1)).unwrap(), json!("yes"));
        assert_eq!(translate(&m, Side::B, &json!("no")).unwrap(), json!("0"));
    }

    fn ch(seq: i64, op: Op) -> Change {
        Change {
            seq,
            entity: "e".into(),
            op,
            key: Key::from_values(&[json!(1)]),
            image: Image::new(),
            captured_at: chrono::Utc::now(),
            attempts: seq as i32 % 3,
            derived: false,
            born: false,
        }
    }

    #[test]
    fn coalesce_keeps_newest_and_all_seqs() {
        let (c, seqs) =
            coalesce(&[ch(3, Op::Update), ch(1, Op::Insert), ch(2, Op::Update)]).unwrap();
        assert_eq!(c.seq, 3);
        assert_eq!(c.op, Op::Insert, "insert then updates is still an insert");
        assert_eq!(seqs, vec![1, 2, 3]);
        assert!(c.born, "the run begins with the record's insert");
        let (c, _) = coalesce(&[ch(1, Op::Update), ch(2, Op::Delete)]).unwrap();
        assert_eq!(c.op, Op::Delete);
        assert!(!c.born);
        let (c, _) = coalesce(&[ch(2, Op::Delete), ch(1, Op::Insert)]).unwrap();
        assert_eq!((c.op, c.born), (Op::Delete, true));
        let (c, _) = coalesce(&[ch(1, Op::Delete), ch(2, Op::Update)]).unwrap();
        assert_eq!(c.op, Op::Update);
        let (c, _) = coalesce(&[ch(1, Op::Delete), ch(2, Op::Insert), ch(3, Op::Update)]).unwrap();
        assert_eq!(c.op, Op::Insert);
        assert!(coalesce(&[]).is_none());
    }

    /// Soft deletes and filters at the source: a hidden row travels as a delete, a row back
    /// over a tombstone as an insert; other entities and sides keep the captured op.
    #[test]
    fn visible_op_turns_hidden_rows_into_deletes_and_returns_into_inserts() {
        use crate::config::{
            ConflictPolicy, Constant, Direction, RowFilter, SoftDelete, TableName, TableSide,
        };
        let side = |t: &str| TableSide {
            table: TableName {
                schema: None,
                name: t.into(),
            },
            key: vec!["id".into()],
            peer_id_column: None,
            key_from: None,
        };
        let mut e = Entity {
            name: "e".into(),
            direction: Direction::Both,
            on_conflict: ConflictPolicy::NewestWins,
            a: side("a"),
            b: side("b"),
            columns: Vec::new(),
            constants: Vec::new(),
            soft_delete: None,
            filter: None,
        };
        let with = |op: Op, image: Value| Change {
            image: image.as_object().cloned().unwrap_or_default(),
            ..ch(5, op)
        };
        let live = json!({"id": 1, "deleted": null, "site": 3});
        assert_eq!(
            visible_op(&e, Side::A, &with(Op::Update, live.clone()), true),
            Op::Update
        );
        e.soft_delete = Some(SoftDelete {
            side: Side::A,
            column: "deleted".into(),
            flag: None,
        });
        e.filter = Some(RowFilter {
            side: Side::A,
            column: "site".into(),
            values: vec![json!(3)],
            constant: Constant {
                side: Side::A,
                column: "site".into(),
                value: json!(3),
            },
        });
        let marked = json!({"id": 1, "deleted": "2024-01-01T00:00:00", "site": 3});
        let elsewhere = json!({"id": 1, "deleted": null, "site": 5});
        for (op, image, tombstoned, want) in [
            (Op::Update, live.clone(), false, Op::Update),
            (Op::Update, live.clone(), true, Op::Insert),
            (Op::Insert, live.clone(), false, Op::Insert),
            (Op::Update, marked.clone(), false, Op::Delete),
            (Op::Insert, marked.clone(), false, Op::Delete),
            (Op::Update, elsewhere.clone(), false, Op::Delete),
            (Op::Update, elsewhere.clone(), true, Op::Delete),
            (Op::Delete, live.clone(), false, Op::Delete),
        ] {
            assert_eq!(
                visible_op(&e, Side::A, &with(op, image.clone()), tombstoned),
                want,
                "{op} {image}"
            );
        }
        // Captured at the other side: as captured.
        assert_eq!(
            visible_op(&e, Side::B, &with(Op::Update, marked), true),
            Op::Update
        );
    }

    #[test]
    fn folded_op_keeps_deletes_and_re_creations() {
        use Op::*;
        assert_eq!(folded_op(&[Update, Update]), Some(Update));
        assert_eq!(folded_op(&[Insert, Update, Update]), Some(Insert));
        assert_eq!(folded_op(&[Update, Delete]), Some(Delete));
        assert_eq!(folded_op(&[Insert, Delete, Insert, Update]), Some(Insert));
        assert_eq!(folded_op(&[Insert, Delete, Update]), Some(Update));
        assert_eq!(folded_op(&[]), None);
    }
}

/// The `values` converter (codes, flags such as `Y`/`N` or `0`/`1` ↔ boolean) declares its
/// inverse by being one-to-one: every code travels A → B → A and B → A → B unchanged.
#[cfg(test)]
mod values_round_trip {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    /// A one-to-one map: distinct A codes (strings, as TOML keys are) to distinct B values
    /// of one kind (strings, integers, or the two booleans).
    fn one_to_one() -> impl Strategy<Value = ValueMap> {
        let codes = proptest::collection::btree_set("[A-Z0-9]{1,3}", 1..8);
        (codes, 0..3u8).prop_flat_map(|(codes, kind)| {
            let codes: Vec<String> = codes.into_iter().collect();
            let n = codes.len();
            let b: BoxedStrategy<Vec<Value>> = match kind {
                0 => proptest::collection::btree_set("[a-z ]{0,6}", n..=n)
                    .prop_map(|s: BTreeSet<String>| s.into_iter().map(Value::from).collect())
                    .boxed(),
                1 => proptest::collection::btree_set(any::<i64>(), n..=n)
                    .prop_map(|s| s.into_iter().map(|i| json!(i)).collect())
                    .boxed(),
                _ => Just(vec![json!(false), json!(true)]).boxed(),
            };
            (Just(codes), b).prop_map(|(codes, b)| ValueMap {
                pairs: codes.into_iter().map(Value::from).zip(b).collect(),
                prefer: Vec::new(),
            })
        })
    }

    proptest! {
        #[test]
        fn every_code_round_trips_both_ways(map in one_to_one()) {
            for (a, b) in &map.pairs {
                let there = translate(&map, Side::A, a).expect("A code known");
                prop_assert_eq!(&there, b);
                let back = translate(&map, Side::B, &there).expect("B value known");
                prop_assert_eq!(value_text(&back), value_text(a));
                let back = translate(&map, Side::B, b).expect("B value known");
                prop_assert_eq!(&translate(&map, Side::A, &back).expect("A code known"), b);
            }
            // An A code held as a number (an int 0/1 flag column) is found by its text.
            for (a, b) in &map.pairs {
                if let Some(n) = a.as_str().and_then(|t| t.parse::<i64>().ok()) {
                    if n.to_string() == a.as_str().unwrap_or_default() {
                        prop_assert_eq!(&translate(&map, Side::A, &json!(n)).expect("known"), b);
                    }
                }
            }
            // NULL passes through; an unknown code is an error, never copied.
            prop_assert_eq!(translate(&map, Side::A, &Value::Null).expect("null"), Value::Null);
            prop_assert!(translate(&map, Side::A, &json!("not a code!")).is_err());
        }
    }
}
