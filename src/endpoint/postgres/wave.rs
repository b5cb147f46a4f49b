//! The set-based apply of a wave: the changes of one entity (all upserts, or all deletes) in
//! a handful of statements instead of several per change.
//!
//! It covers the common case — new records, updates of linked records, deletes, duplicates
//! and old images — with exactly the semantics of the per-change path (`apply_one`): the
//! same record locks, sequence guard, links, no write when equal. Anything less common (a
//! tombstone, a conflict, a parent not linked, a record whose given key moved, a row gone at
//! the target) makes it step back *before it writes anything*, and the wave goes through
//! the per-change path instead.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use tokio_postgres::Transaction;

use super::error::Stop;
use super::pool::Prepared;
use super::row::cell;
use super::sql::EntitySql;
use super::PgEndpoint;
use crate::endpoint::{guard_at, Done, Outcome};
use crate::model::{Image, Key, Op, TargetChange};

fn parse_key(text: Option<String>) -> Option<Key> {
    text.and_then(|s| Key::parse(&s).ok())
}

fn stmt(stmts: &Prepared, sql: &str) -> Option<tokio_postgres::Statement> {
    stmts.get(sql).cloned()
}

fn json_array(objs: &[Image]) -> String {
    serde_json::to_string(objs).unwrap_or_else(|_| "[]".into())
}

/// A record's link at this side.
struct Link {
    applied: i64,
    own: Option<Key>,
    deleted: bool,
}

/// What to do with one change of the wave.
enum Plan {
    Stale(Option<Key>),
    /// Write: the record's key here when known, its row with parents filled in, and whether
    /// it is linked (then a row missing here means it was deleted here).
    Write {
        here: Option<Key>,
        row: Image,
        linked_live: bool,
    },
}

/// Applies `wave`; `Ok(None)` when it must go the per-change way (nothing was written).
pub(super) async fn apply_wave(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    wave: &[TargetChange],
) -> Result<Option<Vec<Outcome>>, Stop> {
    let Some(first) = wave.first() else {
        return Ok(Some(Vec::new()));
    };
    let entity = first.entity.as_str();
    let Some(es) = ep.sql.entities.get(entity) else {
        return Ok(None);
    };
    let deletes = first.op == Op::Delete;
    let c = &ep.sql.common;
    let (Some(locks), Some(links_st), Some(pending_st), Some(put)) = (
        stmt(stmts, &c.wave_record_locks),
        stmt(stmts, &c.wave_links),
        stmt(stmts, &c.wave_local_pending),
        stmt(stmts, &c.wave_link_applied),
    ) else {
        return Ok(None);
    };
    let sources: Vec<&str> = wave.iter().map(|c| c.source_key.as_str()).collect();
    tx.query(&locks, &[&entity, &sources]).await?;
    let mut links: HashMap<String, Link> = HashMap::new();
    for r in tx.query(&links_st, &[&entity, &sources]).await? {
        links.insert(
            cell(&r, 0, "source key")?,
            Link {
                applied: cell(&r, 1, "applied_seq")?,
                own: parse_key(cell(&r, 2, "own key")?),
                deleted: cell(&r, 3, "deleted")?,
            },
        );
    }
    let Some(parents) = parent_keys(ep, tx, stmts, wave, deletes).await? else {
        return Ok(None);
    };

    // Keys given by values at the source (`reused` in `apply_one`).
    let source_gives_keys = ep
        .config
        .entity(entity)
        .is_some_and(|e| e.key_is_given(ep.side.other()));
    // Plan each change; step back on anything uncommon.
    let mut plans = Vec::with_capacity(wave.len());
    for ch in wave {
        let link = links.get(ch.source_key.as_str());
        if let Some(l) = link {
            // A source that links this key to another record here than this link does
            // (keys given by values, reused): `apply_one` decides which, guard included.
            if ch.peer_hint.is_some() && ch.peer_hint != l.own {
                return Ok(None);
            }
            // A tombstone: the per-change way reports its key (`endpoint::stale`).
            if l.deleted {
                return Ok(None);
            }
            if l.applied >= ch.seq {
                plans.push(Plan::Stale(l.own.clone()));
                continue;
            }
            // A creation at the source that finds a live link here, or a delete the source
            // links to nothing: `apply_one` checks the linked row still holds the source's key
            // values (`moved_away`).
            let unlinked_delete = ch.op == Op::Delete && ch.peer_hint.is_none();
            if ((ch.op == Op::Insert && ch.born) || unlinked_delete) && es.holds_natural.is_some() {
                return Ok(None);
            }
        }
        // No link here, only the source's, where the source draws its keys: `apply_one` checks
        // no live link here gives its key to another record (`hint_taken`). Rare: the
        // write-back of a link the source made is on its way.
        if link.is_none() && ch.peer_hint.is_some() && !source_gives_keys {
            return Ok(None);
        }
        let (known, linked_live) = match link {
            Some(l) => (l.own.clone(), l.own.is_some()),
            None => (ch.peer_hint.clone(), ch.peer_hint.is_some()),
        };
        let mut row = ch.row.clone();
        for r in &ch.refs {
            let Some(v) = parents.get(&(r.parent.clone(), r.source_key.to_string())) else {
                return Ok(None);
            };
            row.insert(r.column.clone(), v.clone());
        }
        let given = if es.key_given {
            match Key::from_image(&row, &es.key) {
                Ok(k) => Some(k),
                Err(_) => return Ok(None),
            }
        } else {
            None
        };
        if let (Some(g), Some(k)) = (&given, &known) {
            if g != k {
                return Ok(None);
            }
        }
        plans.push(Plan::Write {
            here: given.or(known),
            row,
            linked_live,
        });
    }

    // Two records landing on one row here (keys given by values) go one at a time.
    let mut seen = HashSet::new();
    for p in &plans {
        if let Plan::Write { here: Some(k), .. } = p {
            if !seen.insert(k.as_str()) {
                return Ok(None);
            }
        }
    }

    // Lock the rows that exist, then look for changes of them pending here (conflicts).
    let heres: Vec<(usize, &Key)> = plans
        .iter()
        .enumerate()
        .filter_map(|(i, p)| match p {
            Plan::Write { here: Some(k), .. } => Some((i, k)),
            _ => None,
        })
        .collect();
    let mut existing: HashSet<String> = HashSet::new();
    if !heres.is_empty() {
        let Some(row_locks) = stmt(stmts, &es.wave_row_locks) else {
            return Ok(None);
        };
        let objs: Vec<Image> = heres.iter().map(|(_, k)| k.to_object(&es.key)).collect();
        for r in tx.query(&row_locks, &[&json_array(&objs)]).await? {
            if let Some(k) = parse_key(cell(&r, 0, "key")?) {
                existing.insert(k.to_string());
            }
        }
        let keys: Vec<&str> = heres.iter().map(|(_, k)| k.as_str()).collect();
        // The source's guard at each key (a plan's key here is its link's).
        let after: Vec<i64> = heres
            .iter()
            .map(|(i, k)| guard_at(&wave[*i], None, k))
            .collect();
        if !tx
            .query(&pending_st, &[&entity, &keys, &after])
            .await?
            .is_empty()
        {
            return Ok(None);
        }
    }
    // A key another live record holds: the per-change path decides (a delete leaves it, an
    // upsert waits).
    if given_key_owned_elsewhere(ep, tx, stmts, es, wave, &plans).await? {
        return Ok(None);
    }
    if deletes {
        let settle = ep.sql.common.settle_moot.as_str();
        return apply_deletes(tx, stmts, es, wave, plans, &existing, &put, entity, settle)
            .await
            .map(Some);
    }

    // Upserts: rows that exist are updated; the others inserted, generated keys drawn first.
    let mut updates: Vec<(usize, Key, Image)> = Vec::new();
    let mut inserts: Vec<(usize, Option<Key>, Image)> = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let Plan::Write {
            here,
            row,
            linked_live,
        } = p
        else {
            continue;
        };
        match here {
            Some(k) if existing.contains(k.as_str()) => updates.push((i, k.clone(), row.clone())),
            // Linked, yet gone here: the per-change path decides (deleted here, re-created).
            Some(_) if !es.key_given || *linked_live => return Ok(None),
            Some(k) => inserts.push((i, Some(k.clone()), row.clone())),
            None => inserts.push((i, None, row.clone())),
        }
    }
    let need_keys = inserts.iter().filter(|(_, k, _)| k.is_none()).count();
    let mut drawn = if need_keys > 0 {
        match draw_keys(ep, tx, entity, es, need_keys).await? {
            Some(keys) => keys.into_iter(),
            None => return Ok(None),
        }
    } else {
        Vec::new().into_iter()
    };
    for (_, k, _) in &mut inserts {
        if k.is_none() {
            *k = drawn.next();
        }
    }

    let mut outcomes: Vec<Option<Outcome>> = (0..wave.len()).map(|_| None).collect();
    for (i, p) in plans.iter().enumerate() {
        if let Plan::Stale(own) = p {
            outcomes[i] = Some(done(own.clone(), Done::Stale));
        }
    }
    if !updates.is_empty() {
        let changed: HashSet<String> = match &es.wave_update {
            Some(sql) => {
                let Some(upd) = stmt(stmts, sql) else {
                    return Ok(None);
                };
                let objs: Vec<Image> = updates
                    .iter()
                    .map(|(_, k, row)| with_key(row, k, es))
                    .collect();
                let mut updated = HashSet::new();
                for r in tx.query(&upd, &[&json_array(&objs)]).await? {
                    if let Some(k) = parse_key(cell(&r, 0, "key")?) {
                        updated.insert(k.to_string());
                    }
                }
                updated
            }
            None => HashSet::new(),
        };
        for (i, k, _) in &updates {
            let how = if changed.contains(k.as_str()) {
                Done::Written
            } else {
                Done::Unchanged
            };
            outcomes[*i] = Some(done(Some(k.clone()), how));
        }
    }
    if !inserts.is_empty() {
        let Some(ins) = stmt(stmts, &es.wave_insert) else {
            return Err(internal("wave insert not prepared"));
        };
        let objs: Vec<Image> = inserts
            .iter()
            .filter_map(|(_, k, row)| k.as_ref().map(|k| with_key(row, k, es)))
            .collect();
        let n = tx.query(&ins, &[&json_array(&objs)]).await?.len();
        if n != inserts.len() {
            return Err(internal(
                "a wave insert returned fewer rows than it was given",
            ));
        }
        for (i, k, _) in &inserts {
            outcomes[*i] = Some(done(k.clone(), Done::Written));
        }
    }
    write_links(tx, &put, entity, wave, &outcomes, false).await?;
    Ok(Some(outcomes.into_iter().flatten().collect()))
}

fn internal(message: &str) -> Stop {
    Stop::AfterWrite(crate::endpoint::ApplyError::Rejected {
        context: "internal".into(),
        message: message.into(),
        code: None,
    })
}

fn done(target_key: Option<Key>, how: Done) -> Outcome {
    Outcome::Done {
        target_key,
        how,
        conflict: false,
        superseded: None,
        moot: Vec::new(),
    }
}

fn with_key(row: &Image, k: &Key, es: &EntitySql) -> Image {
    let mut obj = row.clone();
    obj.extend(k.to_object(&es.key));
    obj
}

/// The target key value of every parent the wave references, from this side's links (or
/// the source's, as hints); None when one is missing or deleted (the per-change path then
/// reports the child as waiting, or as gone with its parent).
async fn parent_keys(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    wave: &[TargetChange],
    deletes: bool,
) -> Result<Option<HashMap<(String, String), Value>>, Stop> {
    let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
    for ch in wave {
        for r in &ch.refs {
            wanted
                .entry(r.parent.clone())
                .or_default()
                .push(r.source_key.to_string());
        }
    }
    let mut out = HashMap::new();
    if wanted.is_empty() {
        return Ok(Some(out));
    }
    let Some(q) = stmt(stmts, &ep.sql.common.wave_parent_links) else {
        return Ok(None);
    };
    for (parent, keys) in &wanted {
        for r in tx.query(&q, &[parent, keys]).await? {
            let (src, own, deleted): (String, Option<String>, bool) = (
                cell(&r, 0, "source key")?,
                cell(&r, 1, "own key")?,
                cell(&r, 2, "deleted")?,
            );
            // The parent's delete here is on its way: the per-change path makes the child wait.
            let deleted_here: bool = cell(&r, 4, "deleted here")?;
            if deleted_here && !deletes {
                return Ok(None);
            }
            // A delete still finds its row through a deleted parent's last key.
            if let (Some(own), true) = (parse_key(own), !deleted || deletes) {
                let v = own.values().into_iter().next().unwrap_or(Value::Null);
                out.insert((parent.clone(), src), v);
            }
        }
    }
    for ch in wave {
        for r in &ch.refs {
            let k = (r.parent.clone(), r.source_key.to_string());
            if out.contains_key(&k) {
                continue;
            }
            // A hint (no link here yet) may name a key whose delete is pending here: the
            // per-change path looks (`resolve_refs`); a delete finds its row through it.
            match &r.hint {
                Some(h) if deletes => {
                    let v = h.values().into_iter().next().unwrap_or(Value::Null);
                    out.insert(k, v);
                }
                _ => return Ok(None),
            }
        }
    }
    Ok(Some(out))
}

/// With keys given by values, a row here may belong to another source record (one deleted
/// and another created with the same values): the per-change path sorts that out.
async fn given_key_owned_elsewhere(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    es: &EntitySql,
    wave: &[TargetChange],
    plans: &[Plan],
) -> Result<bool, Stop> {
    if !es.key_given {
        return Ok(false);
    }
    let mut by_here: HashMap<String, &str> = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        if let Plan::Write { here: Some(k), .. } = p {
            by_here.insert(k.to_string(), wave[i].source_key.as_str());
        }
    }
    if by_here.is_empty() {
        return Ok(false);
    }
    let Some(q) = stmt(stmts, &ep.sql.common.links_by_own) else {
        return Ok(true);
    };
    let keys: Vec<&str> = by_here.keys().map(String::as_str).collect();
    let entity = wave[0].entity.as_str();
    for r in tx.query(&q, &[&entity, &keys]).await? {
        let (own, peer, deleted): (Option<String>, Option<String>, bool) = (
            cell(&r, 0, "own key")?,
            cell(&r, 1, "peer key")?,
            cell(&r, 2, "deleted")?,
        );
        let (Some(own), Some(peer)) = (parse_key(own), parse_key(peer)) else {
            continue;
        };
        if !deleted && by_here.get(own.as_str()) != Some(&peer.as_str()) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[allow(clippy::too_many_arguments)]
async fn apply_deletes(
    tx: &Transaction<'_>,
    stmts: &Prepared,
    es: &EntitySql,
    wave: &[TargetChange],
    plans: Vec<Plan>,
    existing: &HashSet<String>,
    put: &tokio_postgres::Statement,
    entity: &str,
    settle_moot: &str,
) -> Result<Vec<Outcome>, Stop> {
    let mut outcomes: Vec<Option<Outcome>> = (0..wave.len()).map(|_| None).collect();
    let mut objs = Vec::new();
    let mut heres: HashMap<String, usize> = HashMap::new();
    for (i, p) in plans.iter().enumerate() {
        if let Plan::Write { here: Some(k), .. } = p {
            heres.insert(k.to_string(), i);
        }
        match p {
            Plan::Stale(own) => outcomes[i] = Some(done(own.clone(), Done::Stale)),
            Plan::Write { here: Some(k), .. } if existing.contains(k.as_str()) => {
                objs.push(es.delete_object(k));
                outcomes[i] = Some(done(Some(k.clone()), Done::Written));
            }
            Plan::Write { here, .. } => outcomes[i] = Some(done(here.clone(), Done::Unchanged)),
        }
    }
    if !objs.is_empty() {
        let Some(del) = stmt(stmts, &es.wave_delete) else {
            return Err(internal("wave delete not prepared"));
        };
        tx.query(&del, &[&json_array(&objs)]).await?;
    }
    // Changes of the records these deletes removed are moot (as in `apply_one`).
    if !heres.is_empty() {
        let Some(settle) = stmt(stmts, settle_moot) else {
            return Err(internal("settle_moot not prepared"));
        };
        // Each key with the source's guard there (a plan's key here is its link's; a wave
        // holds a key once).
        let (keys, afters): (Vec<&str>, Vec<i64>) = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| match p {
                Plan::Write { here: Some(k), .. } => {
                    Some((k.as_str(), guard_at(&wave[i], None, k)))
                }
                _ => None,
            })
            .unzip();
        for r in tx.query(&settle, &[&entity, &keys, &afters]).await? {
            let key: Option<String> = cell(&r, 0, "key")?;
            let seq: i64 = cell(&r, 1, "seq")?;
            let i = parse_key(key).and_then(|k| heres.get(k.as_str()).copied());
            if let Some(Some(Outcome::Done { moot, .. })) = i.map(|i| &mut outcomes[i]) {
                moot.push(seq);
            }
        }
    }
    write_links(tx, put, entity, wave, &outcomes, true).await?;
    Ok(outcomes.into_iter().flatten().collect())
}

/// The id pairs and sequences of the settled changes (stale ones are left as they are).
///
/// No look-up for stale links naming the same keys here first: such a link makes the insert
/// fail on id_map's unique index (a row error), and the batch goes the per-change way, which
/// unlinks them. Saves a probe per change in the common case.
async fn write_links(
    tx: &Transaction<'_>,
    put: &tokio_postgres::Statement,
    entity: &str,
    wave: &[TargetChange],
    outcomes: &[Option<Outcome>],
    deleted: bool,
) -> Result<(), Stop> {
    let mut src = Vec::new();
    let mut own: Vec<Option<&str>> = Vec::new();
    let mut seq = Vec::new();
    for (ch, o) in wave.iter().zip(outcomes) {
        let Some(Outcome::Done {
            target_key, how, ..
        }) = o
        else {
            continue;
        };
        if *how == Done::Stale {
            continue;
        }
        src.push(ch.source_key.as_str());
        own.push(target_key.as_ref().map(Key::as_str));
        seq.push(ch.seq);
    }
    if src.is_empty() {
        return Ok(());
    }
    let flags = vec![deleted; src.len()];
    tx.execute(put, &[&entity, &src, &own, &seq, &flags])
        .await?;
    Ok(())
}

/// New keys for a side that generates them: drawn from the key column's sequence (identity
/// or serial) or computed by its default expression, `n` at a time. None: neither exists
/// (or the key has several columns), and inserts go one at a time.
pub(super) async fn draw_keys(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    entity: &str,
    es: &EntitySql,
    n: usize,
) -> Result<Option<Vec<Key>>, Stop> {
    if es.key.len() != 1 {
        return Ok(None);
    }
    // key_from: tandem numbers the records itself (a legacy key without a default).
    if let Some((lock, draw)) = &es.key_from {
        if let Some(lock) = lock {
            tx.batch_execute(lock).await?;
        }
        let n = i32::try_from(n).unwrap_or(i32::MAX);
        let keys = tx
            .query(draw.as_str(), &[&n])
            .await?
            .into_iter()
            .filter_map(|r| {
                let v: String = r.try_get(0).ok()?;
                serde_json::from_str::<Value>(&v)
                    .ok()
                    .map(|v| Key::from_values(&[v]))
            })
            .collect();
        return Ok(Some(keys));
    }
    let cached = ep.key_gen.lock().ok().and_then(|m| m.get(entity).cloned());
    let draw = match cached {
        Some(d) => d,
        None => {
            let r = tx.query_one(es.key_default.as_str(), &[]).await?;
            let (seq, default): (Option<String>, Option<String>) =
                (cell(&r, 0, "sequence")?, cell(&r, 1, "default")?);
            let d = match (seq, default) {
                (Some(seq), _) => Some(format!(
                    "SELECT to_jsonb(nextval({}::regclass))::text FROM generate_series(1, $1::int)",
                    super::sql::literal(&seq)
                )),
                // The database's own default expression, as its catalog prints it.
                (None, Some(expr)) => Some(format!(
                    "SELECT to_jsonb(({expr}))::text FROM generate_series(1, $1::int)"
                )),
                (None, None) => None,
            };
            if let Ok(mut m) = ep.key_gen.lock() {
                m.insert(entity.to_string(), d.clone());
            }
            d
        }
    };
    let Some(draw) = draw else {
        return Ok(None);
    };
    let n = i32::try_from(n).unwrap_or(i32::MAX);
    let keys = tx
        .query(draw.as_str(), &[&n])
        .await?
        .into_iter()
        .filter_map(|r| {
            let v: String = r.try_get(0).ok()?;
            serde_json::from_str::<Value>(&v)
                .ok()
                .map(|v| Key::from_values(&[v]))
        })
        .collect();
    Ok(Some(keys))
}
