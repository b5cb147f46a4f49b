//! Matching two catalogs into a [`Draft`]: tables by name (and by how many of their columns
//! match), then columns within each pair, with keys, peer id columns, `ref`s and `values`;
//! finally each entity is judged by `tandem check`'s own rules so that what stays active
//! passes `check`.

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::names::{self, similarity};
use super::{Draft, DraftColumn, DraftEntity, DraftSide};
use crate::config::{DbKind, Direction, Side, TableName};
use crate::endpoint::catalog::{Catalog, CatalogColumn, CatalogTable};
use crate::endpoint::desc::{self, Kind, Level, Wording};

/// A table pair at or above this score is matched.
const TABLE_MATCH: f64 = 0.45;
/// A column pair at or above this score is proposed.
const COLUMN_MATCH: f64 = 0.55;
/// A match at or above this score, with no rival close to it, needs no TODO.
const CERTAIN: f64 = 0.9;
/// A rival within this distance of the best makes a match uncertain.
const RIVAL: f64 = 0.1;

/// Words for `check`'s messages when they become TODO lines (no dialect in particular).
const WORDS: Wording = Wording {
    missing_table: "",
    name_case: "",
    identity: "identity",
    identity_example: "an identity",
};

/// A table with the words of its name and of each column, computed once.
struct Named<'c> {
    table: &'c CatalogTable,
    words: Vec<String>,
    /// Per column: its words without the table's name in front, and all its words.
    columns: Vec<(Vec<String>, Vec<String>)>,
    /// Each column's words, sorted and joined (both forms), to count shared columns fast.
    column_keys: HashSet<String>,
}

/// Words in any order as one string.
fn sorted_key(words: &[String]) -> String {
    let mut w = words.to_vec();
    w.sort();
    w.join(" ")
}

fn named<'c>(t: &'c CatalogTable, vocab: &dyn Fn(&str) -> bool) -> Named<'c> {
    let words = names::table_words(&t.name.name, vocab);
    let columns: Vec<(Vec<String>, Vec<String>)> = t
        .columns
        .iter()
        .map(|c| {
            let all = names::words(&c.desc.name, vocab);
            (names::column_words(&all, &words), all)
        })
        .collect();
    let column_keys = columns
        .iter()
        .flat_map(|(c, all)| [sorted_key(c), sorted_key(all)])
        .collect();
    Named {
        table: t,
        words,
        columns,
        column_keys,
    }
}

/// Words both schemas use, to cut run-together names (`CUSTNAME`) into words: short words,
/// dictionary words, and words that appear in two names or more (a long word seen once, such
/// as `orderline` in `tbl_orderline`, is itself run together).
fn vocabulary(a: &Catalog, b: &Catalog) -> HashSet<String> {
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for t in a.tables.iter().chain(&b.tables) {
        let names = std::iter::once(&t.name.name).chain(t.columns.iter().map(|c| &c.desc.name));
        for n in names {
            let parts: BTreeSet<String> =
                names::split(n).iter().map(|p| names::singular(p)).collect();
            for p in parts {
                *seen.entry(p).or_default() += 1;
            }
        }
    }
    let candidates: HashSet<String> = seen
        .into_iter()
        .filter(|(p, n)| p.len() >= 2 && (p.len() <= 7 || *n >= 2 || names::dictionary_word(p)))
        .map(|(p, _)| p)
        .collect();
    // A candidate made of other words (`prodcode`, `empname`) is itself run together.
    candidates
        .iter()
        .filter(|w| {
            names::dictionary_word(w)
                || names::cuts(w, &|p| {
                    p != w.as_str() && (candidates.contains(p) || names::dictionary_word(p))
                })
                .is_none()
        })
        .cloned()
        .collect()
}

/// The draft for catalogs `a` and `b`.
pub fn draft(a: &Catalog, b: &Catalog, a_kind: DbKind, b_kind: DbKind) -> Draft {
    let vocab = vocabulary(a, b);
    let known = |p: &str| vocab.contains(p);
    let na: Vec<Named> = a.tables.iter().map(|t| named(t, &known)).collect();
    let nb: Vec<Named> = b.tables.iter().map(|t| named(t, &known)).collect();

    // Every table pair, scored; the best pairs taken first, each table once.
    let mut scored: Vec<(f64, usize, usize)> = Vec::new();
    for (i, ta) in na.iter().enumerate() {
        for (j, tb) in nb.iter().enumerate() {
            let s = table_score(ta, tb);
            if s > 0.0 {
                scored.push((s, i, j));
            }
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_a, mut used_b) = (vec![false; na.len()], vec![false; nb.len()]);
    let mut pairs: Vec<(f64, usize, usize, Vec<String>)> = Vec::new();
    for &(s, i, j) in &scored {
        if s < TABLE_MATCH || used_a[i] || used_b[j] {
            continue;
        }
        used_a[i] = true;
        used_b[j] = true;
        let rivals: Vec<String> = scored
            .iter()
            .filter(|&&(r, ri, rj)| {
                (ri == i) != (rj == j) && r >= s - RIVAL && r >= TABLE_MATCH * 0.8
            })
            .take(3)
            .map(|&(r, ri, rj)| {
                if ri == i {
                    format!("B {} ({r:.2})", nb[rj].table.name)
                } else {
                    format!("A {} ({r:.2})", na[ri].table.name)
                }
            })
            .collect();
        pairs.push((s, i, j, rivals));
    }
    pairs.sort_by_key(|p| p.2);

    let mut draft = Draft {
        a_kind,
        b_kind,
        entities: Vec::new(),
        unmatched_a: Vec::new(),
        unmatched_b: Vec::new(),
    };
    let mut names_used: HashSet<String> = HashSet::new();
    for (score, i, j, rivals) in pairs {
        let (ta, tb) = (&na[i], &nb[j]);
        let (Some((ka, ka_note)), Some((kb, kb_note))) = (key_of(ta.table), key_of(tb.table))
        else {
            let why = "matched, but a side has no primary key or unique index: tandem finds records by their key";
            draft.unmatched_a.push((
                ta.table.name.clone(),
                format!("{why} (with B {})", tb.table.name),
            ));
            draft.unmatched_b.push((
                tb.table.name.clone(),
                format!("{why} (with A {})", ta.table.name),
            ));
            continue;
        };
        let mut name = names::entity_name(&tb.words);
        let mut n = 2;
        while !names_used.insert(name.clone()) {
            name = format!("{}_{n}", names::entity_name(&tb.words));
            n += 1;
        }
        let mut e = DraftEntity {
            name,
            a: DraftSide {
                table: ta.table.name.clone(),
                key: ka,
                peer_id_column: None,
            },
            b: DraftSide {
                table: tb.table.name.clone(),
                key: kb,
                peer_id_column: None,
            },
            direction: None,
            score,
            notes: Vec::new(),
            todos: Vec::new(),
            columns: Vec::new(),
            unmatched_a: Vec::new(),
            unmatched_b: Vec::new(),
        };
        if score < CERTAIN || !rivals.is_empty() {
            let alt = if rivals.is_empty() {
                "no other candidate".to_string()
            } else {
                format!("alternatives: {}", rivals.join(", "))
            };
            e.todos.push(format!(
                "uncertain table match (score {score:.2}): A {} ↔ B {}; {alt}",
                ta.table.name, tb.table.name
            ));
        }
        e.todos.extend(ka_note.map(|n| format!("side A: {n}")));
        e.todos.extend(kb_note.map(|n| format!("side B: {n}")));
        draft.entities.push(e);
    }
    for (i, t) in na.iter().enumerate() {
        if !draft.entities.iter().any(|e| e.a.table == t.table.name)
            && !draft.unmatched_a.iter().any(|(n, _)| *n == t.table.name)
        {
            draft
                .unmatched_a
                .push((t.table.name.clone(), best_guess(i, &nb, &scored, true)));
        }
    }
    for (j, t) in nb.iter().enumerate() {
        if !draft.entities.iter().any(|e| e.b.table == t.table.name)
            && !draft.unmatched_b.iter().any(|(n, _)| *n == t.table.name)
        {
            draft
                .unmatched_b
                .push((t.table.name.clone(), best_guess(j, &na, &scored, false)));
        }
    }

    // Columns, now that every entity (and so every possible `ref` parent) is known.
    let tables: Vec<(TableName, TableName, String)> = draft
        .entities
        .iter()
        .map(|e| (e.a.table.clone(), e.b.table.clone(), e.name.clone()))
        .collect();
    let keys: Vec<(String, Vec<String>, Vec<String>)> = draft
        .entities
        .iter()
        .map(|e| (e.name.clone(), e.a.key.clone(), e.b.key.clone()))
        .collect();
    for e in &mut draft.entities {
        let ta = na.iter().find(|t| t.table.name == e.a.table);
        let tb = nb.iter().find(|t| t.table.name == e.b.table);
        if let (Some(ta), Some(tb)) = (ta, tb) {
            columns(e, ta, tb, &tables, &keys);
            judge(
                e,
                ta.table,
                tb.table,
                a.case_insensitive,
                b.case_insensitive,
            );
        }
    }
    order_parents_first(&mut draft.entities);
    draft
}

/// A table pair's score: its name, helped by how many columns have the same words (counted
/// by set look-ups, so that schemas of hundreds of tables stay fast).
fn table_score(a: &Named, b: &Named) -> f64 {
    let name = similarity(&a.words, &b.words);
    let matched = a
        .columns
        .iter()
        .filter(|(c, all)| {
            b.column_keys.contains(&sorted_key(c)) || b.column_keys.contains(&sorted_key(all))
        })
        .count();
    let total = a.columns.len() + b.columns.len();
    let overlap = if total == 0 {
        0.0
    } else {
        2.0 * matched as f64 / total as f64
    };
    // Names decide; columns separate tables whose names are alike, and find the few whose
    // names differ entirely but whose columns agree.
    (0.75 * name + 0.25 * overlap).max(if name >= 1.0 { 0.9 } else { 0.0 })
}

/// Where an unmatched table came closest, for the list at the end.
fn best_guess(
    index: usize,
    others: &[Named],
    scored: &[(f64, usize, usize)],
    is_a: bool,
) -> String {
    let other_side = if is_a { "B" } else { "A" };
    scored
        .iter()
        .filter(|&&(s, i, j)| s >= 0.3 && (if is_a { i } else { j }) == index)
        .map(|&(s, i, j)| {
            let o = if is_a { j } else { i };
            format!(
                "closest: {other_side} {} ({s:.2}), taken by a better match or too far",
                others[o].table.name
            )
        })
        .next()
        .unwrap_or_default()
}

/// The key of a table: its primary key, else its first unique index (with a note).
fn key_of(t: &CatalogTable) -> Option<(Vec<String>, Option<String>)> {
    if !t.primary_key.is_empty() {
        return Some((t.primary_key.clone(), None));
    }
    t.unique.first().map(|u| {
        (
            u.clone(),
            Some(format!(
                "{} has no primary key; the key is its unique index ({})",
                t.name,
                u.join(", ")
            )),
        )
    })
}

/// How well values of `a` fit `b` as a pair (1 same family, 0 no way without a converter).
fn type_fit(a: &CatalogColumn, b: &CatalogColumn) -> f64 {
    use Kind::*;
    let (ka, kb) = (a.desc.kind, b.desc.kind);
    let codes = |c: &CatalogColumn| c.codes.as_ref().map_or(0, |c| c.values.len());
    match (ka, kb) {
        (Unknown, Unknown) => 0.7,
        (Unknown, Text { .. }) | (Text { .. }, Unknown) => {
            if codes(a) > 0 || codes(b) > 0 {
                0.9
            } else {
                0.6
            }
        }
        (Unknown, _) | (_, Unknown) => 0.3,
        (Bool, Text { .. }) | (Text { .. }, Bool) => {
            if codes(a) == 2 || codes(b) == 2 {
                0.9
            } else if matches!(ka, Text { chars: Some(1) }) || matches!(kb, Text { chars: Some(1) })
            {
                0.7
            } else {
                0.3
            }
        }
        (Bool, Integer { .. }) | (Integer { .. }, Bool) => 0.7,
        (Timestamp, TimestampTz) | (TimestampTz, Timestamp) => 0.5,
        (Date, Timestamp | TimestampTz) | (Timestamp | TimestampTz, Date) => 0.4,
        _ => match (desc::fits(ka, kb), desc::fits(kb, ka)) {
            (Some((Level::Error, _)), _) | (_, Some((Level::Error, _))) => 0.0,
            (None, None) => 1.0,
            _ => 0.85,
        },
    }
}

/// Is a column one that holds the OTHER side's id (`legacy_id`, `CustLegacyID`, `NEW_ID`)?
fn peer_like(words: &[String], side: Side) -> bool {
    let has = |w: &str| words.iter().any(|x| x == w);
    let idish = has("id") || has("number") || has("key") || words.len() == 1;
    match side {
        Side::B => has("legacy") || (has("old") && idish),
        Side::A => has("new") && idish,
    }
}

/// Column pairs of entity `e`, its peer id columns, refs and values proposals.
fn columns(
    e: &mut DraftEntity,
    ta: &Named,
    tb: &Named,
    tables: &[(TableName, TableName, String)],
    keys: &[(String, Vec<String>, Vec<String>)],
) {
    let (a, b) = (ta.table, tb.table);
    // Peer id columns, when the other side's key is one column.
    let mut peers: [Option<usize>; 2] = [None, None];
    let (a_key, b_key) = (e.a.key.clone(), e.b.key.clone());
    for (side, t, other_key, slot) in [(Side::A, ta, &b_key, 0usize), (Side::B, tb, &a_key, 1usize)]
    {
        let found: Vec<usize> = t
            .columns
            .iter()
            .enumerate()
            .filter(|(k, (_, all))| {
                peer_like(all, side)
                    && !e_side(e, side).key.contains(&t.table.columns[*k].desc.name)
            })
            .map(|(k, _)| k)
            .collect();
        if let Some(&k) = found.first() {
            let col = &t.table.columns[k].desc.name;
            if other_key.len() == 1 {
                peers[slot] = Some(k);
                let s = e_side_mut(e, side);
                s.peer_id_column = Some(col.clone());
                if found.len() > 1 {
                    let others: Vec<&str> = found[1..]
                        .iter()
                        .map(|&o| t.table.columns[o].desc.name.as_str())
                        .collect();
                    e.todos.push(format!(
                        "{side}.peer_id_column: {col} chosen; also named like one: {}",
                        others.join(", ")
                    ));
                }
            } else {
                e.todos.push(format!(
                    "{side}.{col} looks like a column for the other side's id, but side {}'s key has {} columns; a peer_id_column needs one",
                    side.other(),
                    other_key.len()
                ));
            }
        }
    }

    // Every column pair, scored.
    let entity_of = |pa: &TableName, pb: &TableName| {
        tables
            .iter()
            .find(|(x, y, _)| x == pa && y == pb)
            .map(|(_, _, n)| n.clone())
    };
    // Where both sides generate their keys, tandem links them: they are never a column pair
    // (nor a rival of one).
    let generates = |t: &CatalogTable, key: &[String]| {
        key.len() == 1 && t.column(&key[0]).is_some_and(|c| c.generated())
    };
    let both_generate = generates(a, &e.a.key) && generates(b, &e.b.key);
    let own_key = |_: &CatalogTable, key: &[String], col: &CatalogColumn| {
        both_generate && key[0] == col.desc.name
    };
    let mut scored: Vec<(f64, usize, usize)> = Vec::new();
    for (i, ca) in a.columns.iter().enumerate() {
        if peers[0] == Some(i) || own_key(a, &e.a.key, ca) {
            continue;
        }
        for (j, cb) in b.columns.iter().enumerate() {
            if peers[1] == Some(j) || own_key(b, &e.b.key, cb) {
                continue;
            }
            let (na, nb) = (&ca.desc.name, &cb.desc.name);
            let mut s = if na == nb {
                1.0
            } else if na.eq_ignore_ascii_case(nb) {
                0.99
            } else {
                let (wa, fa) = &ta.columns[i];
                let (wb, fb) = &tb.columns[j];
                similarity(wa, wb)
                    .max(similarity(fa, fb))
                    .max(0.98 * similarity(wa, fb))
                    .max(0.98 * similarity(fa, wb))
            };
            // Both reference the same entity: strong evidence, whatever the names.
            if let (Some(fa), Some(fb)) = (a.foreign_key(na), b.foreign_key(nb)) {
                if entity_of(&fa.parent, &fb.parent).is_some() {
                    let alone = a
                        .foreign_keys
                        .iter()
                        .filter(|f| f.parent == fa.parent)
                        .count()
                        == 1
                        && b.foreign_keys
                            .iter()
                            .filter(|f| f.parent == fb.parent)
                            .count()
                            == 1;
                    s = s.max(if alone { 0.97 } else { 0.6 + 0.35 * s });
                }
            }
            // A reference holds a parent's key, translated: its own type says nothing.
            let refers = |t: &CatalogTable, n: &str, side: usize| {
                t.foreign_key(n).is_some_and(|f| {
                    tables.iter().any(|(x, y, _)| {
                        if side == 0 {
                            *x == f.parent
                        } else {
                            *y == f.parent
                        }
                    })
                })
            };
            let fit = if refers(a, na, 0) || refers(b, nb, 1) {
                1.0
            } else {
                type_fit(ca, cb)
            };
            if s < 0.95 {
                // A fuzzy name counts only where the types fit.
                s = if fit <= 0.0 {
                    0.0
                } else {
                    s * (0.6 + 0.4 * fit)
                };
            }
            if s > 0.0 {
                scored.push((s, i, j));
            }
        }
    }
    scored.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    let (mut used_a, mut used_b) = (vec![false; a.columns.len()], vec![false; b.columns.len()]);
    let mut chosen: Vec<(f64, usize, usize, Vec<String>)> = Vec::new();
    for &(s, i, j) in &scored {
        if s < COLUMN_MATCH || used_a[i] || used_b[j] {
            continue;
        }
        used_a[i] = true;
        used_b[j] = true;
        let rivals: Vec<String> = scored
            .iter()
            .filter(|&&(r, ri, rj)| {
                (ri == i) != (rj == j) && r >= s - RIVAL && r >= COLUMN_MATCH * 0.8
            })
            .take(3)
            .map(|&(r, ri, rj)| {
                if ri == i {
                    format!("B.{} ({r:.2})", b.columns[rj].desc.name)
                } else {
                    format!("A.{} ({r:.2})", a.columns[ri].desc.name)
                }
            })
            .collect();
        chosen.push((s, i, j, rivals));
    }
    chosen.sort_by_key(|c| c.1);

    for (s, i, j, rivals) in chosen {
        let (ca, cb) = (&a.columns[i], &b.columns[j]);
        let (an, bn) = (ca.desc.name.clone(), cb.desc.name.clone());
        let mut col = DraftColumn {
            a: an.clone(),
            b: bn.clone(),
            score: s,
            values: Vec::new(),
            parent: None,
            todos: Vec::new(),
            active: true,
        };
        if s < CERTAIN || !rivals.is_empty() {
            let alt = if rivals.is_empty() {
                String::new()
            } else {
                format!("; alternatives: {}", rivals.join(", "))
            };
            col.todos.push(format!(
                "uncertain match (score {s:.2}): A.{an} ↔ B.{bn}{alt}"
            ));
        }
        reference(&mut col, a, b, tables, keys);
        // Matched on the strength of the foreign keys alone: say so.
        let names_alike = similarity(&ta.columns[i].0, &tb.columns[j].0)
            .max(similarity(&ta.columns[i].1, &tb.columns[j].1));
        if col.todos.is_empty() && names_alike < COLUMN_MATCH {
            if let Some(p) = &col.parent {
                col.todos.push(format!(
                    "matched because both reference entity {p}; the names share little (score {names_alike:.2}): confirm"
                ));
            }
        }
        if col.parent.is_none() {
            propose_values(&mut col, ca, cb);
        }
        e.columns.push(col);
    }

    let mapped = |side: Side, n: &str| {
        e.columns
            .iter()
            .any(|c| if side == Side::A { c.a == n } else { c.b == n })
    };
    let mut unmatched_a = Vec::new();
    for c in &a.columns {
        let n = &c.desc.name;
        if !mapped(Side::A, n) && !e.a.key.contains(n) && e.a.peer_id_column.as_deref() != Some(n) {
            unmatched_a.push(n.clone());
        }
    }
    let mut unmatched_b = Vec::new();
    for c in &b.columns {
        let n = &c.desc.name;
        if !mapped(Side::B, n) && !e.b.key.contains(n) && e.b.peer_id_column.as_deref() != Some(n) {
            unmatched_b.push(n.clone());
        }
    }
    e.unmatched_a = unmatched_a;
    e.unmatched_b = unmatched_b;

    // How the keys are linked, said once.
    let given = |side: Side| {
        let key = &e_side(e, side).key;
        key.iter().all(|k| mapped(side, k))
    };
    let mut notes = Vec::new();
    for side in [Side::A, Side::B] {
        let s = e_side(e, side);
        let how = if given(side) {
            format!(
                "given by side {} (every key column is mapped)",
                side.other()
            )
        } else if s.key.iter().all(|k| {
            (if side == Side::A { a } else { b })
                .column(k)
                .is_some_and(|c| c.generated())
        }) {
            "generated here on insert; tandem links it with the other side's key".to_string()
        } else {
            "neither mapped nor generated here (no default or identity)".to_string()
        };
        notes.push(format!("side {side} key ({}): {how}", s.key.join(", ")));
    }
    e.notes.extend(notes);
}

fn e_side(e: &DraftEntity, side: Side) -> &DraftSide {
    if side == Side::A {
        &e.a
    } else {
        &e.b
    }
}

fn e_side_mut(e: &mut DraftEntity, side: Side) -> &mut DraftSide {
    if side == Side::A {
        &mut e.a
    } else {
        &mut e.b
    }
}

/// `ref`: both columns reference the tables of one entity (or one side does, and the other
/// column could hold that entity's key).
fn reference(
    col: &mut DraftColumn,
    a: &CatalogTable,
    b: &CatalogTable,
    tables: &[(TableName, TableName, String)],
    keys: &[(String, Vec<String>, Vec<String>)],
) {
    let fa = a.foreign_key(&col.a);
    let fb = b.foreign_key(&col.b);
    let by_a = |p: &TableName| tables.iter().find(|(x, _, _)| x == p).map(|t| t.2.clone());
    let by_b = |p: &TableName| tables.iter().find(|(_, y, _)| y == p).map(|t| t.2.clone());
    let parent = match (fa, fb) {
        (Some(fa), Some(fb)) => {
            let (pa, pb) = (by_a(&fa.parent), by_b(&fb.parent));
            match (pa, pb) {
                (Some(x), Some(y)) if x == y => Some(x),
                _ => {
                    col.active = false;
                    col.todos.push(format!(
                        "A.{} references {} and B.{} references {}, which no one entity maps together: copying the values would link the wrong records; map the parents as one entity, then add ref",
                        col.a,
                        fa.parent,
                        col.b,
                        fb.parent
                    ));
                    return;
                }
            }
        }
        (Some(fa), None) => {
            let p = by_a(&fa.parent);
            if let Some(p) = &p {
                col.todos.push(format!(
                    "only A declares a foreign key here (A.{} → {}): B.{} taken as referencing entity {p} too",
                    col.a, fa.parent, col.b
                ));
            } else {
                col.todos.push(format!(
                    "A.{} references {}, which no entity maps: its values are copied as they are",
                    col.a, fa.parent
                ));
            }
            p
        }
        (None, Some(fb)) => {
            let p = by_b(&fb.parent);
            if let Some(p) = &p {
                col.todos.push(format!(
                    "only B declares a foreign key here (B.{} → {}): A.{} taken as referencing entity {p} too",
                    col.b, fb.parent, col.a
                ));
            } else {
                col.todos.push(format!(
                    "B.{} references {}, which no entity maps: its values are copied as they are",
                    col.b, fb.parent
                ));
            }
            p
        }
        (None, None) => None,
    };
    let Some(parent) = parent else {
        return;
    };
    let Some((_, ka, kb)) = keys.iter().find(|(n, _, _)| *n == parent) else {
        return;
    };
    if ka.len() != 1 || kb.len() != 1 {
        col.active = false;
        col.todos.push(format!(
            "references entity {parent}, whose key has {} column(s) on A and {} on B; a ref needs a single-column key on both",
            ka.len(),
            kb.len()
        ));
        return;
    }
    let points_at_key = |fk: Option<&crate::endpoint::catalog::ForeignKey>, key: &[String]| {
        fk.is_none_or(|f| f.parent_columns == key)
    };
    if !points_at_key(fa, ka) || !points_at_key(fb, kb) {
        col.active = false;
        col.todos.push(format!(
            "references entity {parent} by a column that is not its key: ref translates keys only"
        ));
        return;
    }
    col.parent = Some(parent);
}

/// Words for true and false in legacy code lists.
const TRUTHY: &[&str] = &[
    "y", "yes", "j", "ja", "t", "true", "1", "s", "si", "on", "a",
];
const FALSY: &[&str] = &["n", "no", "nein", "f", "false", "0", "off", "i"];

/// The (true code, false code) of a two-code list that reads as a flag.
fn flag_codes(codes: &[String]) -> Option<(String, String)> {
    if codes.len() != 2 {
        return None;
    }
    let t = codes
        .iter()
        .find(|c| TRUTHY.contains(&c.to_lowercase().as_str()))?;
    let f = codes
        .iter()
        .find(|c| FALSY.contains(&c.to_lowercase().as_str()))?;
    (t != f).then(|| (t.clone(), f.clone()))
}

/// A B value of `kind` written from text.
fn b_value(text: &str, kind: Kind) -> Value {
    match kind {
        Kind::Integer { .. } => text
            .parse::<i64>()
            .map_or(Value::String(text.into()), Value::from),
        _ => Value::String(text.to_string()),
    }
}

/// `values` where the two sides encode a column differently (code lists, flags).
fn propose_values(col: &mut DraftColumn, a: &CatalogColumn, b: &CatalogColumn) {
    use Kind::*;
    let (ca, cb) = (a.codes.as_ref(), b.codes.as_ref());
    let (an, bn) = (&a.desc.name, &b.desc.name);
    match (a.desc.kind, b.desc.kind) {
        (_, Bool) if !matches!(a.desc.kind, Bool) => {
            if let Some(codes) = ca {
                match flag_codes(&codes.values) {
                    Some((t, f)) => {
                        col.values = vec![(t.clone(), Value::Bool(true)), (f.clone(), Value::Bool(false))];
                        col.todos.push(format!(
                            "A.{an} codes {} ({}) read as {t} = true, {f} = false against B.{bn} boolean: confirm",
                            codes.values.join("/"),
                            codes.from
                        ));
                    }
                    None => {
                        col.active = false;
                        col.todos.push(format!(
                            "A.{an} codes {} against B.{bn} boolean: add values = {{ CODE = true, CODE = false }} or a converter",
                            codes.values.join("/")
                        ));
                    }
                }
            } else if let Integer { .. } = a.desc.kind {
                col.values = vec![("0".into(), Value::Bool(false)), ("1".into(), Value::Bool(true))];
                col.todos.push(format!(
                    "A.{an} {} vs B.{bn} boolean: values = {{ \"0\" = false, \"1\" = true }} assumed (A has no CHECK list); adjust the codes or use a converter",
                    a.desc.type_name
                ));
            } else if let Text { .. } = a.desc.kind {
                col.values = vec![("Y".into(), Value::Bool(true)), ("N".into(), Value::Bool(false))];
                col.todos.push(format!(
                    "A.{an} {} vs B.{bn} boolean: A has no CHECK list, codes Y/N are a guess; find A's codes (SELECT DISTINCT {an}) and fix values, or use a converter",
                    a.desc.type_name
                ));
            }
        }
        (Bool, kb) if !matches!(kb, Bool) => {
            if let Some((t, f)) = cb.and_then(|c| flag_codes(&c.values)) {
                col.values = vec![("true".into(), b_value(&t, kb)), ("false".into(), b_value(&f, kb))];
                col.todos.push(format!(
                    "A.{an} boolean vs B.{bn} codes {t}/{f}: read as true = {t}, false = {f}: confirm"
                ));
            } else {
                col.active = false;
                col.todos.push(format!(
                    "A.{an} boolean vs B.{bn} {}: add values = {{ \"true\" = …, \"false\" = … }} or a converter",
                    b.desc.type_name
                ));
            }
        }
        _ => match (ca, cb) {
            (Some(x), Some(y)) => {
                let same: BTreeSet<&String> = x.values.iter().collect();
                let other: BTreeSet<&String> = y.values.iter().collect();
                if same == other {
                    return;
                }
                let (paired, lost) = pair_codes(&x.values, &y.values);
                if !paired.is_empty() {
                    col.values = paired
                        .iter()
                        .map(|(p, q)| (p.clone(), b_value(q, b.desc.kind)))
                        .collect();
                    let shown: Vec<String> = paired.iter().map(|(p, q)| format!("{p} = {q}")).collect();
                    col.todos.push(format!(
                        "codes paired by spelling ({} against {}): {}: confirm",
                        x.from,
                        y.from,
                        shown.join(", ")
                    ));
                }
                if !lost.is_empty() {
                    let free: Vec<&String> = y
                        .values
                        .iter()
                        .filter(|v| !paired.iter().any(|(_, q)| q == *v))
                        .collect();
                    col.todos.push(format!(
                        "A.{an} code(s) {} have no counterpart yet among B.{bn}'s ({}): add them to values",
                        lost.join(", "),
                        free.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            (None, Some(y)) => col.todos.push(format!(
                "B.{bn} accepts only {} ({}); A.{an} has no code list: if A's codes differ, add values",
                y.values.join(", "),
                y.from
            )),
            (Some(x), None) => col.todos.push(format!(
                "A.{an} holds only {} ({}); B.{bn} has no code list: if B should use other codes, add values",
                x.values.join(", "),
                x.from
            )),
            (None, None) => {}
        },
    }
}

/// Whether an A code and a B code say the same.
type CodeTest = dyn Fn(&str, &str) -> bool;

/// A codes paired with B codes: the same ignoring case, else one a prefix of the other
/// (`O` → `open`), each used once; the A codes left over.
fn pair_codes(a: &[String], b: &[String]) -> (Vec<(String, String)>, Vec<String>) {
    let mut used = vec![false; b.len()];
    let mut out = Vec::new();
    let mut lost = Vec::new();
    let tests: [&CodeTest; 3] = [
        &|x: &str, y: &str| x.eq_ignore_ascii_case(y),
        &|x: &str, y: &str| {
            let (x, y) = (x.to_lowercase(), y.to_lowercase());
            !x.is_empty() && (y.starts_with(&x) || x.starts_with(&y))
        },
        // A one-letter code for any word of the label (`H` → `on_hold`).
        &|x: &str, y: &str| {
            x.chars().count() == 1
                && names::split(y)
                    .iter()
                    .any(|w| w.starts_with(&x.to_lowercase()))
        },
    ];
    let mut done = vec![false; a.len()];
    // Each pairing that is unique makes others unique in turn: repeat until nothing moves.
    let mut progress = true;
    while progress {
        progress = false;
        for t in tests {
            for (i, code) in a.iter().enumerate() {
                if done[i] {
                    continue;
                }
                let hits: Vec<usize> = (0..b.len())
                    .filter(|&j| !used[j] && t(code, &b[j]))
                    .collect();
                if hits.len() == 1 {
                    used[hits[0]] = true;
                    done[i] = true;
                    progress = true;
                    out.push((code.clone(), b[hits[0]].clone()));
                }
            }
        }
    }
    for (i, code) in a.iter().enumerate() {
        if !done[i] {
            lost.push(code.clone());
        }
    }
    // In A's order.
    out.sort_by_key(|(p, _)| a.iter().position(|x| x == p));
    (out, lost)
}

/// Judges the entity with `check`'s rules: what `check` refuses becomes a TODO, and the line
/// it concerns is commented out (or, for a key no side can create, the direction narrowed).
fn judge(e: &mut DraftEntity, a: &CatalogTable, b: &CatalogTable, a_ci: bool, b_ci: bool) {
    let (da, db) = (a.desc(a_ci), b.desc(b_ci));
    // A side whose key is neither given nor generated cannot take inserts: that is decided
    // here (the direction), not left as one of check's problems.
    let cfg = e.to_config();
    let mut blocked = Vec::new();
    for (side, t) in [(Side::A, a), (Side::B, b)] {
        let key = &e_side(e, side).key;
        let generated = key
            .iter()
            .all(|k| t.column(k).is_some_and(|c| c.generated()));
        if !cfg.key_is_given(side) && !generated {
            blocked.push(side);
        }
    }
    let mut both = cfg.clone();
    both.direction = Direction::Both;
    for (side, t) in [(Side::A, &da), (Side::B, &db)] {
        for p in desc::check(&both, side, Some(t), "", &WORDS) {
            if p.message.contains("has no default") {
                continue;
            }
            let named = |c: &DraftColumn| {
                let n = if side == Side::A { &c.a } else { &c.b };
                p.message.contains(&format!("mapped column {n:?}"))
            };
            if let Some(c) = e.columns.iter_mut().find(|c| named(c)) {
                c.active = false;
                c.todos
                    .push(format!("check refuses it: side {side}: {}", p.message));
            } else if !e.todos.iter().any(|t| t.contains(&p.message)) {
                e.todos.push(format!("check: side {side}: {}", p.message));
            }
        }
    }
    // A peer id column holds the other side's key: its type must take it.
    for side in [Side::A, Side::B] {
        let (own, other) = if side == Side::A { (a, b) } else { (b, a) };
        let (s, o) = (e_side(e, side), e_side(e, side.other()));
        let (Some(peer), [key]) = (&s.peer_id_column, o.key.as_slice()) else {
            continue;
        };
        let (Some(pc), Some(kc)) = (own.column(peer), other.column(key)) else {
            continue;
        };
        if let Some((Level::Error, why)) = desc::fits(kc.desc.kind, pc.desc.kind) {
            let m = format!(
                "{side}.peer_id_column {peer} ({}) cannot hold side {}'s key {key} ({}): {why}; removed",
                pc.desc.type_name,
                side.other(),
                kc.desc.type_name
            );
            e_side_mut(e, side).peer_id_column = None;
            e.todos.push(m);
        }
    }
    blocked.dedup();
    match blocked.as_slice() {
        [Side::A] => {
            e.direction = Some(Direction::AToB);
            e.todos.push(format!(
                "direction a_to_b: A's key ({}) has no default or identity and is not mapped, so tandem cannot create records at A; or give it one (then remove this line)",
                e.a.key.join(", ")
            ));
        }
        [Side::B] => {
            e.direction = Some(Direction::BToA);
            e.todos.push(format!(
                "direction b_to_a: B's key ({}) has no default or identity and is not mapped, so tandem cannot create records at B; or give it one",
                e.b.key.join(", ")
            ));
        }
        [] => {}
        _ => e.todos.push(
            "neither side's key is generated or mapped: tandem can create records on neither side; give one side's key a default or identity, or map it".to_string(),
        ),
    }
    let cfg = e.to_config();
    for p in desc::compare(&cfg, &da, &db) {
        let level = match p.level {
            Level::Error => "check refuses it",
            Level::Warning => "check warns",
        };
        let hit = e.columns.iter_mut().find(|c| {
            p.message.starts_with(&format!("column A.{} (", c.a))
                || p.message.starts_with(&format!("column B.{} (", c.b))
        });
        match hit {
            Some(c) if c.active => {
                if p.level == Level::Error {
                    c.active = false;
                }
                let m = format!("{level}: {}", p.message);
                if !c.todos.contains(&m) {
                    c.todos.push(m);
                }
            }
            Some(_) => {}
            None => {
                let m = format!("{level}: {}", p.message);
                if !e.todos.contains(&m) {
                    e.todos.push(m);
                }
            }
        }
    }
}

/// Parents before children (config order otherwise); a reference that would close a cycle
/// between entities is commented out, since the config refuses cycles.
fn order_parents_first(entities: &mut Vec<DraftEntity>) {
    let mut placed: Vec<DraftEntity> = Vec::new();
    let mut rest: Vec<DraftEntity> = std::mem::take(entities);
    while !rest.is_empty() {
        let ready = rest.iter().position(|e| {
            e.columns
                .iter()
                .filter(|c| c.active)
                .all(|c| match &c.parent {
                    Some(p) => *p == e.name || placed.iter().any(|q| q.name == *p),
                    None => true,
                })
        });
        match ready {
            Some(i) => placed.push(rest.remove(i)),
            None => {
                // A cycle: break it at the first waiting reference.
                let e = &mut rest[0];
                let name = e.name.clone();
                if let Some(c) = e
                    .columns
                    .iter_mut()
                    .find(|c| c.active && c.parent.as_ref().is_some_and(|p| *p != name))
                {
                    c.active = false;
                    c.todos.push(format!(
                        "references entity {} which references {name} in turn: the config refuses cycles between entities; map one direction only",
                        c.parent.clone().unwrap_or_default()
                    ));
                }
            }
        }
    }
    *entities = placed;
}
