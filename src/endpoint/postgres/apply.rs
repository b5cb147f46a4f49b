//! Guarded apply at the target and write-back at the source, for PostgreSQL.
//!
//! Per change, inside one transaction per batch: the link row is locked, the sequence guard
//! checked, then the row is written and the link updated — so data and guard always commit
//! together. The changes of a batch run concurrently on the one connection, so their
//! statements are pipelined (a batch costs a few round trips, not a few per change); records
//! of one entity are independent, and entities go in waves, parents first. Should any change
//! hit an error, the transaction is rolled back and the batch runs again one change at a time,
//! each in a savepoint, so a change the target refuses is rolled back alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::{Statement, Transaction};

use super::error::{aborted_by_sibling, caused_by_row, is_transient, Stop};
use super::pool::{describe, prepared, PgConn, Prepared};
use super::row::cell;
use super::sql::{Common, EntitySql};
use super::PgEndpoint;
use crate::config::{ConflictPolicy, Side};
use crate::endpoint::{
    done, guard_at, stale, with_moot, won, ApplyError, Done, EndpointError, Outcome, ParentState,
    WriteBack,
};
use crate::model::{Image, Key, Op, TargetChange};

/// Tells the capture trigger that tandem is about to write `entity`'s table here, so that its
/// own writes are not captured for `entity` (other entities reading the same table capture
/// them: see sql/postgres/trigger.sql).
async fn mark(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    entity: &str,
) -> Result<(), tokio_postgres::Error> {
    let (Some(es), Some(st)) = (
        ep.sql.entities.get(entity),
        stmts.get(&ep.sql.common.mark_table),
    ) else {
        return Ok(());
    };
    tx.query_one(st, &[&es.table_sql, &entity])
        .await
        .map(|_| ())
}

/// Applies a batch in one transaction; see the module comment.
pub async fn apply_batch(
    ep: &PgEndpoint,
    batch: &[TargetChange],
) -> Result<Vec<Outcome>, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("apply", e);
    let prepared = prepare_for(ep, &*client, stmts, batch).await.map_err(err)?;
    if let Some(outcomes) = apply_pipelined(ep, client, &prepared, batch).await? {
        return Ok(outcomes);
    }
    apply_carefully(ep, client, &prepared, batch).await
}

/// Every statement a batch may run, prepared (once per connection).
async fn prepare_for(
    ep: &PgEndpoint,
    client: &tokio_postgres::Client,
    cache: &mut HashMap<String, Statement>,
    batch: &[TargetChange],
) -> Result<Prepared, tokio_postgres::Error> {
    let c = &ep.sql.common;
    let mut wanted: Vec<&str> = vec![
        &c.mark_table,
        &c.record_lock,
        &c.link_by_peer,
        &c.ref_by_peer,
        &c.unlink_own,
        &c.link_applied,
        &c.local_pending,
        &c.own_pending_sent,
        &c.settle_moot,
        &c.local_reinsert,
        &c.local_redelete,
        &c.conflict_log,
        &c.link_seen,
        &c.links_by_own,
        &c.done,
        &c.wave_record_locks,
        &c.wave_links,
        &c.wave_parent_links,
        &c.wave_local_pending,
        &c.wave_link_applied,
    ];
    let mut entities: Vec<&str> = batch.iter().map(|c| c.entity.as_str()).collect();
    entities.sort_unstable();
    entities.dedup();
    for name in entities {
        if let Some(es) = ep.sql.entities.get(name) {
            wanted.extend([
                es.row_lock.as_str(),
                es.row_insert.as_str(),
                es.row_delete.as_str(),
                es.wave_row_locks.as_str(),
                es.wave_insert.as_str(),
                es.wave_delete.as_str(),
                es.requeue.as_str(),
            ]);
            wanted.extend(es.row_update.as_deref());
            wanted.extend(es.natural_holder.as_deref());
            wanted.extend(es.holds_natural.as_deref());
            wanted.extend(ep.sql.entities.values().flat_map(|child| {
                child
                    .children_resend
                    .iter()
                    .filter(|(parent, _)| parent == name)
                    .map(|(_, q)| q.as_str())
            }));
            wanted.extend(es.wave_update.as_deref());
        }
    }
    let mut out = Prepared::new();
    for sql in wanted {
        let st = prepared(client, cache, sql).await?;
        out.insert(sql.to_string(), st);
    }
    Ok(out)
}

/// The fast path: every change of a wave at once, pipelined. `None`: some change hit a
/// database error; nothing was committed, and the batch must go the careful way.
async fn apply_pipelined(
    ep: &PgEndpoint,
    client: &mut tokio_postgres::Client,
    stmts: &Prepared,
    batch: &[TargetChange],
) -> Result<Option<Vec<Outcome>>, EndpointError> {
    let err = |e| ep.pool.error("apply", e);
    let tx = client.transaction().await.map_err(err)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for wave in waves(batch) {
        mark(ep, &tx, stmts, &wave[0].entity).await.map_err(err)?;
        // The common case, set-based; it steps back (having written nothing) otherwise.
        match super::wave::apply_wave(ep, &tx, stmts, wave).await {
            Ok(Some(done)) => {
                outcomes.extend(done);
                continue;
            }
            Ok(None) => {}
            Err(Stop::Db(e)) if !caused_by_row(&e) => return Err(err(e)),
            Err(_) => return Ok(None),
        }
        // Where keys are given by values, two records of one wave can land on one row here
        // (one deleted and another created with the same values): those run in order.
        let given = ep
            .sql
            .entities
            .get(&wave[0].entity)
            .is_some_and(|es| es.key_given);
        let results = if given {
            let mut rs = Vec::with_capacity(wave.len());
            for c in wave {
                rs.push(apply_one(ep, &tx, stmts, c, false).await);
            }
            rs
        } else {
            futures_util::future::join_all(wave.iter().map(|c| apply_one(ep, &tx, stmts, c, false)))
                .await
        };
        for r in results {
            match r {
                Ok(o) => outcomes.push(o),
                Err(Stop::Apply(a)) => outcomes.push(Outcome::Failed(a)),
                // A sibling's row error aborts the shared transaction: the others then fail
                // with 25P02 ("current transaction is aborted"), which is no fault of theirs.
                Err(Stop::Db(e)) if !caused_by_row(&e) && !aborted_by_sibling(&e) => {
                    return Err(err(e))
                }
                // Rolled back when `tx` drops.
                Err(Stop::Db(_) | Stop::AfterWrite(_)) => return Ok(None),
            }
        }
    }
    tx.commit().await.map_err(err)?;
    Ok(Some(outcomes))
}

/// Runs of changes of one entity and kind (upserts, deletes), in batch order: the batch is
/// sorted parents first for upserts and children first for deletes, so each wave only needs
/// what earlier waves wrote.
fn waves(batch: &[TargetChange]) -> Vec<&[TargetChange]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=batch.len() {
        let boundary = i == batch.len()
            || batch[i].entity != batch[start].entity
            || (batch[i].op == Op::Delete) != (batch[start].op == Op::Delete)
            || depends_on_wave(&batch[i], &batch[start..i]);
        if boundary && start < i {
            out.push(&batch[start..i]);
            start = i;
        }
    }
    out
}

/// Whether `c` must wait for a change of `wave` (applied concurrently, so it cannot see their
/// writes): the same record again (a self-reference's pre-step and its change), or a record
/// of its own entity that it references (see `sync::order`).
fn depends_on_wave(c: &TargetChange, wave: &[TargetChange]) -> bool {
    let self_refs: Vec<&Key> = c
        .refs
        .iter()
        .filter(|r| r.parent == c.entity)
        .map(|r| &r.source_key)
        .collect();
    // Only a change referencing its own entity can (a pre-step's change does too).
    if self_refs.is_empty() {
        return false;
    }
    wave.iter()
        .any(|w| w.source_key == c.source_key || self_refs.contains(&&w.source_key))
}

/// The careful path: one change at a time, each in a savepoint.
async fn apply_carefully(
    ep: &PgEndpoint,
    client: &mut tokio_postgres::Client,
    stmts: &Prepared,
    batch: &[TargetChange],
) -> Result<Vec<Outcome>, EndpointError> {
    let err = |e| ep.pool.error("apply", e);
    let mut tx = client.transaction().await.map_err(err)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut marked: Option<&str> = None;
    for change in batch {
        if marked != Some(change.entity.as_str()) {
            mark(ep, &tx, stmts, &change.entity).await.map_err(err)?;
            marked = Some(change.entity.as_str());
        }
        let sp = tx.savepoint("tandem_change").await.map_err(err)?;
        match apply_one(ep, &sp, stmts, change, true).await {
            Ok(outcome) => {
                sp.commit().await.map_err(err)?;
                outcomes.push(outcome);
            }
            Err(Stop::Db(e)) if !caused_by_row(&e) => return Err(err(e)),
            Err(Stop::Db(e)) => {
                sp.rollback().await.map_err(err)?;
                if has_sqlstate(&e, FOREIGN_KEY_VIOLATION) {
                    match parent_gone(ep, &tx, stmts, change).await {
                        Ok(None) => {}
                        Ok(Some(waiting)) => {
                            outcomes.push(Outcome::Failed(waiting));
                            continue;
                        }
                        Err(Stop::Db(e2)) => return Err(err(e2)),
                        Err(Stop::Apply(a) | Stop::AfterWrite(a)) => {
                            outcomes.push(Outcome::Failed(a));
                            continue;
                        }
                    }
                }
                if has_sqlstate(&e, UNIQUE_VIOLATION) {
                    match held_by_coming(ep, &tx, stmts, change).await {
                        Ok(None) | Err(Stop::Apply(_) | Stop::AfterWrite(_)) => {}
                        Ok(Some(holder)) => {
                            outcomes.push(Outcome::Failed(ApplyError::KeyHeld {
                                context: context(ep, change),
                                message: describe(&e),
                                holder: holder.to_string(),
                            }));
                            continue;
                        }
                        Err(Stop::Db(e2)) => return Err(err(e2)),
                    }
                }
                let column = match guilty_column(ep, &mut tx, change, &e).await {
                    Ok(c) => c,
                    Err(e2) => return Err(err(e2)),
                };
                outcomes.push(Outcome::Failed(rejected(ep, change, &e, column)));
            }
            Err(Stop::Apply(a) | Stop::AfterWrite(a)) => {
                sp.rollback().await.map_err(err)?;
                outcomes.push(Outcome::Failed(a));
            }
        }
    }
    tx.commit().await.map_err(err)?;
    Ok(outcomes)
}

fn context(ep: &PgEndpoint, change: &TargetChange) -> String {
    let table = ep
        .sql
        .entities
        .get(&change.entity)
        .map(|e| e.table.clone())
        .unwrap_or_default();
    format!(
        "entity {}, side {} table {}, {} of source key {}",
        change.entity, ep.side, table, change.op, change.source_key
    )
}

fn rejected(
    ep: &PgEndpoint,
    change: &TargetChange,
    e: &tokio_postgres::Error,
    column: Option<String>,
) -> ApplyError {
    let db = e.as_db_error();
    let column = column.or_else(|| db.and_then(|d| d.column()).map(str::to_string));
    let mut message = describe(e);
    if let Some(c) = column {
        message = format!("column {c}: {message}");
    }
    ApplyError::Rejected {
        context: context(ep, change),
        message,
        code: db.map(|d| d.code().code().to_string()),
    }
}

/// PostgreSQL does not name the column of a value that does not fit its type (class 22):
/// find it by typing each value alone, in savepoints, so the error can say where.
async fn guilty_column(
    ep: &PgEndpoint,
    tx: &mut Transaction<'_>,
    change: &TargetChange,
    e: &tokio_postgres::Error,
) -> Result<Option<String>, tokio_postgres::Error> {
    let Some(db) = e.as_db_error() else {
        return Ok(None);
    };
    if !db.code().code().starts_with("22") {
        return Ok(None);
    }
    let Some(es) = ep.sql.entities.get(&change.entity) else {
        return Ok(None);
    };
    let probe = format!(
        "SELECT jsonb_populate_record(NULL::{}, $1::text::jsonb) IS NULL",
        es.table_sql
    );
    for (col, value) in &change.row {
        let one: Image = [(col.clone(), value.clone())].into_iter().collect();
        let json = serde_json::to_string(&one).unwrap_or_default();
        let sp = tx.savepoint("tandem_probe").await?;
        let failed = sp.query(probe.as_str(), &[&json]).await.is_err();
        sp.rollback().await?;
        if failed {
            return Ok(Some(col.clone()));
        }
    }
    Ok(None)
}

async fn st(_tx: &Transaction<'_>, stmts: &Prepared, sql: &str) -> Result<Statement, Stop> {
    stmts.get(sql).cloned().ok_or_else(|| {
        Stop::AfterWrite(ApplyError::Rejected {
            context: "internal".into(),
            message: "a statement was not prepared for this batch".into(),
            code: None,
        })
    })
}

fn json(obj: &Image) -> String {
    serde_json::to_string(obj).unwrap_or_else(|_| "{}".into())
}

fn parse_key(text: Option<String>) -> Option<Key> {
    text.and_then(|s| Key::parse(&s).ok())
}

/// One change. `careful`: alone in its savepoint (the careful path), where the rare cases that
/// cost a statement more are looked for; the fast path steps back to it on any row error.
async fn apply_one(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
    careful: bool,
) -> Result<Outcome, Stop> {
    let common = &ep.sql.common;
    let es = ep.sql.entities.get(&c.entity).ok_or_else(|| {
        Stop::Apply(ApplyError::Rejected {
            context: context(ep, c),
            message: "entity is not in the config".into(),
            code: None,
        })
    })?;
    let source_key = c.source_key.as_str();
    let lock_st = st(tx, stmts, &common.record_lock).await?;
    let link_st = st(tx, stmts, &common.link_by_peer).await?;
    // Sent together (pipelined, in this order): the lock, then the locked link.
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&c.entity, &source_key];
    let (locked, link) = tokio::join!(
        tx.execute(&lock_st, &params),
        tx.query_opt(&link_st, &params)
    );
    locked?;
    let link = link?;
    let link: Option<(i64, Option<Key>, bool)> = match link {
        Some(r) => Some((
            cell(&r, 0, "applied_seq")?,
            parse_key(cell(&r, 1, "own key")?),
            cell(&r, 2, "deleted")?,
        )),
        None => None,
    };

    let reused = ep
        .config
        .entity(&c.entity)
        .is_some_and(|e| e.key_is_given(ep.side.other()));
    let exists = |k: &Key| {
        let obj = json(&k.to_object(&es.key));
        async move {
            let lock = st(tx, stmts, &es.row_lock).await?;
            Ok::<bool, Stop>(tx.query_opt(&lock, &[&obj]).await?.is_some())
        }
    };
    if let Some((applied, own, deleted)) = &link {
        // The guard protects the record this link names. Where the source already links this
        // key to another live record here (keys given by values, reused) and the named one is
        // gone, that record has not seen this delete yet (only a delete: an older update must
        // not overwrite the newer record) (found by the simulation: a winning
        // delete, applied to the old record before its reply was lost, never reached the
        // record that lost the conflict to it).
        let moved_on = match (&c.peer_hint, own) {
            (Some(h), own)
                if c.op == Op::Delete && reused && *applied >= c.seq && Some(h) != own.as_ref() =>
            {
                exists(h).await?
                    && match own {
                        Some(o) if !deleted => !exists(o).await?,
                        _ => true,
                    }
            }
            _ => false,
        };
        if *applied >= c.seq && !moved_on {
            return Ok(stale(own.clone(), *deleted));
        }
    }
    // What the target knows of the record: its own link, else the source's (write-back of
    // a link the source made may still be on its way here).
    // A delete whose hint predates it, of which this side has applied nothing yet
    // (`TargetChange::delete_hint_holds`), names the record the source deleted, against a link
    // here that names another: this side's link is the stale one (a move of its record reached
    // the source, whose reply was lost, and a record this side created under the freed key
    // took the key there; found by the simulation's full workload, seed 52926: the delete
    // removed the moved record here, whose copy stayed at the source). A hint written after
    // the delete may name a record that took the key since (seed 90048 of the variant without
    // key changes at A); one this side has applied a change of since, with its reply lost, may
    // be the stale one (seed 37843: the source's update had landed on another record here).
    // A tombstone here of another record than the one the source now links this key to is
    // older than that link when the source's keys are given by values (the key was taken by a
    // new record): the source's link wins (found by the simulation: a delete of the new
    // record was settled on the old one's tombstone, and the new record was left behind).
    // The same holds for a live link whose row is gone here: that record was deleted here
    // and its delete has not reached the source yet, while the source already linked its key
    // to the record that replaced it (found by the simulation: the winning delete of a
    // conflict settled on the gone row and left the new record behind).
    let dead_own = match &link {
        Some((_, Some(own), false))
            if reused && c.peer_hint.is_some() && c.peer_hint.as_ref() != Some(own) =>
        {
            let lock = st(tx, stmts, &es.row_lock).await?;
            tx.query_opt(&lock, &[&json(&own.to_object(&es.key))])
                .await?
                .is_none()
        }
        // A link that names no record here (its record was taken by another) keeps only
        // the guard: the source's link says which record this is (found by the simulation's
        // full workload, seed 1381: a delete settled on such a link deleted nothing, and the
        // record it meant was left at this side only).
        Some((_, None, false)) => true,
        _ => false,
    };
    // The same where that delete's reply was lost, so the link here still names the number:
    // the record under it is this side's new one (its insert the oldest change of it pending
    // here after all that the source has applied of this side's changes of the record; found
    // by the simulation's full workload, seed 11171). Likewise a delete arriving at a
    // tombstone here: the record it names was deleted here already, and a row under the
    // number now, whose insert is the oldest change of it pending here after all the source
    // has applied, is this side's new record, which that delete must not remove (found by the
    // simulation's full workload, seed 50143: it removed the new record here, whose copy lived
    // on at the source).
    let replaced = match &link {
        Some((_, Some(own), deleted))
            if !es.key_given
                && ((c.op == Op::Insert && c.born && !deleted)
                    || (c.op == Op::Delete && *deleted)) =>
        {
            new_since(tx, stmts, common, c, own).await?
        }
        // A creation at the source arriving at a live link whose key given here a new record
        // of this side holds now (its insert the oldest change of the key pending here after
        // all the source has applied of this side's changes of the record): this side deleted
        // the record the link names, its delete lost at the source, which sent the record
        // again as a creation. It is created again here under its own key, and the new record
        // stays (found by the simulation's variant without key changes at A, seed 110294: it
        // moved the new record's row away as the old record's, and the new record's copy at
        // the source stayed linked to a key with no record). Not an update: a creation at both
        // sides at once that landed here as one record has this side's insert pending too.
        Some((_, Some(own), false)) if es.key_given && c.op == Op::Insert => {
            new_since(tx, stmts, common, c, own).await?
        }
        _ => false,
    };
    // A delete arriving at a live link whose record this side deleted and created anew under
    // the same number (an insert pending after its last pending delete; the reply of that
    // delete lost, so the link still names the number): both sides deleted the record the link
    // names, and the new record must stay (found by the fault suite's full workload, seed
    // 6655: the delete met the new record's insert as a conflict, won, and removed it, while
    // its copy lived on at the source).
    let anew = match &link {
        Some((_, Some(own), false)) if c.op == Op::Delete && !es.key_given => {
            created_anew_here(tx, stmts, common, c, own).await?
        }
        _ => false,
    };
    let mut row = c.row.clone();
    let refs = resolve_refs(ep, tx, stmts, c, &mut row).await;
    // A creation at the source under a key given by values, which the source links to nothing,
    // where the link here names a live record that no longer holds those values: the link was
    // written back before this side's move of the record reached the source (whose reply was
    // lost), so the source's record under that key is another, new one. Taking the linked
    // record would undo the move here and leave the moved copy at the source unlinked (found by
    // the simulation's full workload, seed 12653).
    let moved_away = match (&link, &es.holds_natural) {
        (Some((_, Some(own), false)), Some(q))
            if ((c.op == Op::Insert && c.born) || c.op == Op::Delete)
                && reused
                && c.peer_hint.is_none()
                && refs.is_ok() =>
        {
            let mut obj = row.clone();
            obj.extend(own.to_object(&es.key));
            let q = st(tx, stmts, q).await?;
            match tx.query_opt(&q, &[&json(&obj)]).await? {
                Some(r) => !cell::<bool>(&r, 0, "holds")?,
                None => false,
            }
        }
        _ => false,
    };
    // A delete of such a key, where the linked record has changes pending here captured before
    // the delete: either this side moved it and the move reached the source, whose reply was
    // lost (the delete is then of another record, created there under the freed key), or the
    // source's record is this one and the two sides changed it at once. Those changes' replies
    // tell which: the delete waits until they have settled (found by the simulation's full
    // workload, seed 68782: it deleted the moved record here, whose copy stayed at the source).
    // A move here newer than the delete cannot have freed the key at the source before it: the
    // delete is of this record, and meets those changes as a conflict.
    if let (true, Op::Delete, Some((_, Some(own), _))) = (moved_away, c.op, &link) {
        let q = st(tx, stmts, &common.local_pending).await?;
        let mut older = false;
        for r in tx.query(&q, &[&c.entity, &own.as_str(), &0i64]).await? {
            older |= cell::<DateTime<Utc>>(&r, 1, "captured_at")? < c.captured_at;
        }
        if older {
            return Err(Stop::Apply(ApplyError::KeyHeld {
                context: context(ep, c),
                message: crate::endpoint::moved_with_changes_pending(own, ep.side),
                holder: own.to_string(),
            }));
        }
    }
    // An update of a record the source links to another record here than this live link
    // does, where the record this link names no longer holds the key's values here, and the
    // hinted one is here with a change pending, none a delete, that the source has applied
    // (`endpoint::hint_newer_than_link`): this side moved the linked record, its move reached
    // the source, and the hinted record took the freed key there; both replies were lost. The
    // hint is the newer link, and the update is of the hinted record (found by the
    // simulation's variant without key changes at A, seed 52926: it landed on the moved
    // record, beat its pending move and removed its row as a copy of the hinted one). Only an
    // update: a creation may carry a delete of the linked record (seed 90048); and only a
    // hinted row still here (full workload, seed 78932: the hint, read before the write-back
    // of the delete of that record, named its gone row).
    let hint_newer = match (&link, &es.holds_natural, &c.peer_hint) {
        (Some((_, Some(own), false)), Some(q), Some(h))
            if c.op == Op::Update && reused && h != own && !dead_own && refs.is_ok() =>
        {
            let mut obj = row.clone();
            obj.extend(own.to_object(&es.key));
            let q = st(tx, stmts, q).await?;
            let moved = match tx.query_opt(&q, &[&json(&obj)]).await? {
                Some(r) => !cell::<bool>(&r, 0, "holds")?,
                None => false,
            };
            let lock = st(tx, stmts, &es.row_lock).await?;
            moved
                && tx
                    .query_opt(&lock, &[&json(&h.to_object(&es.key))])
                    .await?
                    .is_some()
                && hint_newer_here(tx, stmts, common, c).await?
        }
        _ => false,
    };
    // No link here, and the source's hint names a key here that a live link gives another
    // record of the source: the hint is older than that link (the key went to another record
    // here since: the record's row here was deleted and a new record from the source took its
    // key, before the write-back of the hinted link arrived), so this side knows nothing of
    // this record. Taking the hint moved the other record's row (found by the simulation's
    // full workload, seed 76215). Only where the source draws its keys: a key given by values
    // changes with the record, so there the other link may be this very record under its old
    // key, moved at the source with its reply still on its way, and the hint is right.
    // The hint is newer than that link where the source has applied a change of this side's
    // record under the key that is still pending here, and none of its pending changes is a
    // delete: that change reached the source and linked it there, and its reply, which would
    // have moved the link here, was lost (`endpoint::hint_newer_than_link`; found by the fault
    // suite's full workload, seed 1002: this side's update won over the source's delete there,
    // which created the record again under a new number; the source then deleted that one, and
    // its delete, taken for a record unknown here, left the record at this side only).
    let hint_taken = match (&link, &c.peer_hint) {
        (None, Some(h)) if !reused => {
            let q = st(tx, stmts, &common.links_by_own).await?;
            let other = match tx.query_opt(&q, &[&c.entity, &vec![h.as_str()]]).await? {
                Some(r) => {
                    !cell::<bool>(&r, 2, "deleted")?
                        && cell::<Option<String>>(&r, 1, "peer key")?
                            .is_some_and(|p| p != source_key)
                }
                None => false,
            };
            other && !hint_newer_here(tx, stmts, common, c).await?
        }
        _ => false,
    };
    let (known, linked_live, tombstone) = match &link {
        _ if (moved_away && c.op != Op::Delete) || hint_taken => (None, false, false),
        Some((applied, own, deleted))
            if reused
                && c.peer_hint.is_some()
                && c.peer_hint != *own
                && (*deleted || dead_own || hint_newer || c.delete_hint_holds(*applied)) =>
        {
            (c.peer_hint.clone(), true, false)
        }
        // A record the source created after its delete of the one this tombstone names (a
        // number its application reused): another record, created anew here, whatever this
        // side still has pending of the old one (its delete lost its conflict here, and the
        // winner's creation again at the source is still on its way, where it draws a new
        // key). It met that pending change as a conflict and lost, its children could never
        // join it, and it stayed at the source only (found by the simulation's full workload,
        // seed 342).
        Some((_, _, true)) if c.op == Op::Insert && c.born && !es.key_given => (None, false, false),
        _ if replaced || anew => (None, false, false),
        Some((_, own, deleted)) => (own.clone(), own.is_some() && !deleted, *deleted),
        None => (c.peer_hint.clone(), c.peer_hint.is_some(), false),
    };

    let given = if es.key_given && refs.is_ok() {
        match Key::from_image(&row, &es.key) {
            Ok(k) => Some(k),
            Err(m) if c.op != Op::Delete => {
                return Err(Stop::Apply(reject(ep, c, format!("target key: {m}"))))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if c.op != Op::Delete {
        refs?;
    }
    // A key given by the record's values changes when those values change at the source (an
    // item moved to another line at B changes its key at A). The live link still knows where
    // the record is here: a delete removes that row, an upsert moves it to the new key.
    let moved_from = match (&given, &known) {
        (Some(g), Some(k)) if linked_live && g != k => Some(k.clone()),
        _ => None,
    };
    // The record's key here, as far as it is known before writing.
    let here = if es.key_given && !(c.op == Op::Delete && moved_from.is_some()) {
        given.clone().or_else(|| known.clone())
    } else {
        known.clone()
    };
    // A delete of a record this side has no link of, nor the source: nothing of it reached
    // here (its insert never came, or waits below for this side's own one). A row under its key
    // given here that is a new record of this side (its insert pending here) is another record,
    // and stays (found by the simulation's full workload, seed 2673: it was deleted here, while
    // the other side kept its copy; and seed 6044, its insert waiting).
    if let (Op::Delete, None, None, true, Some(k)) =
        (c.op, &link, &c.peer_hint, es.key_given, &here)
    {
        let q = st(tx, stmts, &common.local_pending).await?;
        let mut new_here = false;
        for r in tx.query(&q, &[&c.entity, &k.as_str(), &0i64]).await? {
            new_here |= cell::<String>(&r, 2, "op")? == "I";
        }
        if new_here {
            put_link(ep, tx, stmts, c, None, true).await?;
            return Ok(done(None, Done::Unchanged, false));
        }
    }
    // A delete arriving at a tombstone here, under a key given here by values that a new
    // record of this side holds now (its insert the oldest change of it pending here after all
    // that the source has applied of this side's changes of the record): the record it names
    // was deleted here already, and the new one under the reused key stays (as `replaced` above
    // for keys drawn here, seed 50143; found by the simulation's million-seed run of the
    // default workload, seed 484427: it removed the new record here, whose copy lived on at the
    // other side).
    if let (Op::Delete, true, Some((_, Some(own), true)), Some(k)) =
        (c.op, es.key_given, &link, &here)
    {
        if own == k && new_since(tx, stmts, common, c, k).await? {
            put_link(ep, tx, stmts, c, None, true).await?;
            return Ok(done(None, Done::Unchanged, false));
        }
    }
    // A key given by values that another live record holds here is not this record's, nor
    // are that record's row and pending changes (found by the simulation: taking the row over
    // relinked it and lost the other record; a delete's conflict check discarded the other
    // record's pending cascade). An upsert's image is then older than that record's (the
    // other side's unique key keeps two live records apart): it waits, retried, until that
    // record moves or is deleted, or a newer change of its own supersedes it. A delete
    // settles without touching the row (one record deleted and another created with the
    // same values).
    let probe = if c.op == Op::Delete { &here } else { &given };
    let mut held = false;
    if let (Some(k), true) = (probe, es.key_given) {
        let q = st(tx, stmts, &common.links_by_own).await?;
        let holder = match tx.query_opt(&q, &[&c.entity, &vec![k.as_str()]]).await? {
            Some(r) if !cell::<bool>(&r, 2, "deleted")? => parse_key(cell(&r, 1, "peer key")?),
            _ => None,
        }
        .filter(|p| *p != c.source_key);
        if let Some(p) = holder {
            if c.op == Op::Delete {
                put_link(ep, tx, stmts, c, None, true).await?;
                return Ok(done(None, Done::Unchanged, false));
            }
            // A record this side deleted and created anew under the key (an insert after its
            // last pending delete, the new record's updates after it: `created_anew`) does not
            // hold it: the link names the deleted record, whose delete has not come back
            // confirmed (its reply was lost), and the new record is not linked yet. The upsert
            // meets it as a conflict below instead of waiting for that delete, whose retries
            // may run out first (found by the simulation's full workload, seed 13671 and 2
            // more). Not only where the insert is the newest change: an update of the new
            // record after it left the upsert refused, and the delete, sent again with the new
            // record as one creation, waited at the other side for the upsert's record, until
            // both were suspended (variant without key changes at A, seeds 83823 and 92172).
            let q = st(tx, stmts, &common.local_pending).await?;
            let (mut newest, mut ops, mut derived) = (None, Vec::new(), true);
            for r in tx.query(&q, &[&c.entity, &k.as_str(), &0i64]).await? {
                let op = cell::<String>(&r, 2, "op")?;
                derived &= cell::<bool>(&r, 4, "derived")?;
                ops.push((
                    cell::<i64>(&r, 0, "seq")?,
                    Op::from_code(&op).unwrap_or(Op::Update),
                ));
                if newest.is_none() {
                    newest = Some((op, cell::<DateTime<Utc>>(&r, 1, "captured_at")?));
                }
            }
            if !crate::endpoint::created_anew(ops, 0) {
                // A record moving onto a key held by a record that stays there whatever its
                // peer's changes say does not wait for it to move. It stays where its changes
                // pending here (its row here, the newest not a delete) beat a user's change
                // captured at the source when this one was: then they beat any move of its
                // peer away from the key, which the source made before this change took it.
                // The move meets it as a conflict below, loses, and is put back under its old
                // key at its side (found by the simulation's full workload, seed 87994 and 8
                // more: the move waited, and the holder's change was refused at the other side
                // by the natural unique key, both until their retries ran out).
                let wins_here = newest.as_ref().is_some_and(|(op, at)| {
                    let policy = ep
                        .config
                        .entity(&c.entity)
                        .map(|e| e.on_conflict)
                        .unwrap_or(ConflictPolicy::NewestWins);
                    op != "D"
                        && crate::endpoint::conflict_winner(
                            policy,
                            ep.side,
                            (c.captured_at, false),
                            (*at, derived),
                        ) == ep.side
                });
                if moved_from.is_some() && wins_here {
                    let mut obj = row.clone();
                    obj.extend(k.to_object(&es.key));
                    let lock = st(tx, stmts, &es.row_lock).await?;
                    held = tx.query_opt(&lock, &[&json(&obj)]).await?.is_some();
                }
                if !held {
                    return Err(Stop::Apply(reject(ep, c, key_held(k, ep.side, &p))));
                }
            }
        }
    }

    // Lock the record's row here before looking for its pending changes here: a writer that
    // changed it and has not committed yet holds that lock, so once it is ours, the writer's
    // captured change is visible to the look-up (READ COMMITTED reads anew per statement).
    let mut locked: Vec<(Key, Option<String>)> = Vec::new();
    for k in moved_from.iter().chain(here.iter()) {
        let mut obj = row.clone();
        obj.extend(k.to_object(&es.key));
        let lock = st(tx, stmts, &es.row_lock).await?;
        let found = match tx.query_opt(&lock, &[&json(&obj)]).await? {
            Some(r) => cell(&r, 0, "row")?,
            None => None,
        };
        locked.push((k.clone(), found));
    }

    // A creation at the source under a key given here by values, where this side's own new
    // record under that key, linked to nothing, was sent to the source already (its insert at
    // or below the sent mark, never failed): the reply may have been lost, its copy may be
    // there, and then the source's record is another one. Merging the two here would leave that
    // copy linked to nothing at the source. The change waits until this side's insert is confirmed
    // (linked) or failed (found by the simulation's full workload, seeds 8082 and 21577). So it
    // does where that record was deleted here since, that delete not sent yet: meeting it as a
    // conflict and winning would discard it, and the copy would stay there (seed 91390). A
    // linked record moving onto that key waits the same: winning there would take the new
    // record over, and its copy there would stay linked to nothing (the simulation's variant
    // without key changes at A, seed 57548: an item B moved onto the line A had just added).
    let creates = c.op == Op::Insert && c.born && link.is_none() && c.peer_hint.is_none();
    let moves_in = c.op != Op::Delete && moved_from.is_some();
    if let (true, true, Some(k)) = (creates || moves_in, es.key_given, &here) {
        let row_here = locked.iter().any(|(lk, found)| lk == k && found.is_some());
        if own_insert_unconfirmed(tx, stmts, common, &c.entity, k, row_here).await? {
            let message = if row_here {
                crate::endpoint::sent_unconfirmed(k, ep.side)
            } else {
                crate::endpoint::sent_then_deleted(k, ep.side)
            };
            return Err(Stop::Apply(ApplyError::KeyHeld {
                context: context(ep, c),
                message,
                holder: k.to_string(),
            }));
        }
    }

    // Changes pending here of the record under its old key conflict as much as under its new.
    let mut conflict = Resolution::None;
    let mut superseded: Option<i64> = None;
    let mut lost_at: Option<&Key> = None;
    let mut beaten: Vec<i64> = Vec::new();
    let old_key = moved_from.as_ref().filter(|_| c.op != Op::Delete);
    let exists = |k: &Key| locked.iter().any(|(lk, found)| lk == k && found.is_some());
    for k in old_key.into_iter().chain(here.as_ref()) {
        let after = guard_at(c, known.as_ref(), k);
        let at = At {
            key: k,
            after,
            exists: exists(k),
            linked: link
                .as_ref()
                .is_some_and(|(_, own, deleted)| own.as_ref() == Some(k) && !deleted),
        };
        match resolve_conflict(ep, tx, stmts, c, &at, &row).await? {
            Resolution::None => {}
            Resolution::IncomingWins(seqs) => {
                superseded = superseded.max(seqs.iter().copied().max());
                beaten.extend(seqs);
                conflict = Resolution::IncomingWins(Vec::new());
            }
            Resolution::LocalWins => {
                conflict = Resolution::LocalWins;
                lost_at = Some(k);
                break;
            }
        }
    }
    // The local changes a change beat go only if it wins throughout: a move that beat this
    // side's changes under its old key and lost under its new one is not applied, so they
    // still travel (found by the simulation's full workload, seed 12476: a local delete was
    // discarded, and the record stayed at the other side only).
    if !beaten.is_empty() && !matches!(conflict, Resolution::LocalWins) {
        let del = st(tx, stmts, &common.done).await?;
        tx.execute(&del, &[&beaten]).await?;
    }
    let force = match conflict {
        Resolution::None => false,
        Resolution::IncomingWins(_) => true,
        Resolution::LocalWins => {
            // Where the record stays: a move that lost to the local record holding its new
            // key lands on it, as a new record with that key does: two records claimed one
            // key at once, so one record now, the winner's values, linked both ways. Its old
            // row here goes (the record moved; not captured, as every write of an apply),
            // unless this side changed it meanwhile or rows refer to it. Putting the record
            // back under its old key instead kept both, but the other side may have given that
            // key to a third record meanwhile: three changes were then refused by the natural
            // unique key at both sides until their retries ran out (found by the simulation's
            // full workload, 18 of 20,000 seeds).
            let lands =
                c.op != Op::Delete && lost_at == here.as_ref() && here.as_ref().is_some_and(exists);
            let old_row = moved_from.as_ref().filter(|k| exists(k));
            let leaves = old_row.is_some() && superseded.is_none() && es.leaf;
            // Not onto a record linked to another one (`held`): that is two records.
            let merged = lands && moved_from.is_some() && (old_row.is_none() || leaves) && !held;
            if let (true, Some(k)) = (merged, old_row) {
                let del = st(tx, stmts, &es.row_delete).await?;
                tx.execute(&del, &[&json(&es.delete_object(k))]).await?;
            }
            // Otherwise it stays under its old key, and no change pending here would put it
            // back at the loser's side (the winner's insert was then refused there by the
            // natural unique key until its retries ran out: seed 62): its row travels as an
            // update, queued in this transaction.
            let put_back =
                old_row.filter(|_| !merged && c.op != Op::Delete && lost_at == here.as_ref());
            if let Some(k) = put_back {
                let q = st(tx, stmts, &es.requeue).await?;
                tx.execute(
                    &q,
                    &[
                        &json(&k.to_object(&es.key)),
                        &c.entity,
                        &Op::Update.code().to_string(),
                    ],
                )
                .await?;
            }
            let here = if merged {
                here
            } else {
                moved_from.clone().or(here)
            };
            // A link naming this key for another record is stale, as in `put_link` (found by
            // the simulation: a tombstone of a record deleted here and re-created with the
            // same given key made the link insert below violate id_map's unique key).
            if let Some(k) = &here {
                let un = st(tx, stmts, &common.unlink_own).await?;
                tx.execute(&un, &[&c.entity, &source_key, &k.as_str()])
                    .await?;
            }
            let seen = st(tx, stmts, &common.link_seen).await?;
            let here_text = here.as_ref().map(Key::as_str);
            // A lost delete deleted the record at the other side for good where keys are
            // generated there (the winner is created anew under a new key): a tombstone. Where
            // its keys are given by values, the winner comes back under the same key: the link
            // stays (found by the simulation).
            let lost_delete = c.op == Op::Delete && !reused;
            tx.execute(
                &seen,
                &[
                    &c.entity,
                    &source_key,
                    &here_text,
                    &c.seq,
                    &lost_delete,
                    &merged,
                ],
            )
            .await?;
            return Ok(done(here, Done::ConflictLost, true));
        }
    };

    if c.op == Op::Delete {
        let mut how = Done::Unchanged;
        let mut moot = Vec::new();
        if let Some(k) = &here {
            let del = st(tx, stmts, &es.row_delete).await?;
            if tx.execute(&del, &[&json(&es.delete_object(k))]).await? > 0 {
                how = Done::Written;
            }
            let settle = st(tx, stmts, &common.settle_moot).await?;
            let after = guard_at(c, known.as_ref(), k);
            for r in tx
                .query(&settle, &[&c.entity, &vec![k.as_str()], &vec![after]])
                .await?
            {
                moot.push(cell(&r, 1, "seq")?);
            }
        }
        put_link(ep, tx, stmts, c, here.as_ref(), true).await?;
        return Ok(with_moot(won(here, how, superseded), moot));
    }

    if tombstone && c.op == Op::Update && !force {
        // An update after a delete: the record is gone here, and the delete wins.
        put_link(ep, tx, stmts, c, known.as_ref(), true).await?;
        return Ok(done(known, Done::Deleted, false));
    }

    let mut moved = false;
    if let (Some(old), Op::Insert | Op::Update) = (&moved_from, c.op) {
        let del = st(tx, stmts, &es.row_delete).await?;
        moved = tx.execute(&del, &[&json(&es.delete_object(old))]).await? > 0;
    }

    // After a tombstone the record is created anew, unless the incoming change won a conflict
    // against this side's changes of the record here: then it is that record (its values
    // become the winner's; creating another left it behind unlinked: found by the fault suite).
    let candidate = if es.key_given {
        given
    } else if tombstone && !force {
        None
    } else {
        known.clone()
    };

    let (target, how) = match candidate {
        Some(k) => {
            let mut obj = row.clone();
            obj.extend(k.to_object(&es.key));
            let payload = json(&obj);
            // Locked above already when it is the key looked at for conflicts.
            let found: Option<Option<String>> = match locked.iter().find(|(l, _)| *l == k) {
                Some((_, found)) => found.clone().map(Some),
                None => {
                    let lock = st(tx, stmts, &es.row_lock).await?;
                    match tx.query_opt(&lock, &[&payload]).await? {
                        Some(r) => Some(cell(&r, 0, "row")?),
                        None => None,
                    }
                }
            };
            match found {
                Some(actual) => {
                    let actual = parse_key(actual).unwrap_or(k);
                    if careful {
                        if let Some(out) =
                            lands_on_new_local(ep, tx, stmts, c, &row, Some(&actual), superseded)
                                .await?
                        {
                            return Ok(out);
                        }
                    }
                    let mut n = 0;
                    if let Some(u) = &es.row_update {
                        let upd = st(tx, stmts, u).await?;
                        n = tx.execute(&upd, &[&payload]).await?;
                    }
                    let how = if n > 0 {
                        Done::Written
                    } else {
                        Done::Unchanged
                    };
                    (actual, how)
                }
                None if linked_live && !force && !moved && c.op == Op::Update => {
                    // Linked, yet gone here, with no delete of it pending here: it was
                    // deleted at this side and that delete reached the other side already.
                    // (An insert — a re-created record, a repair — creates it again.)
                    put_link(ep, tx, stmts, c, Some(&k), true).await?;
                    return Ok(done(Some(k), Done::Deleted, false));
                }
                // Gone here and created again: with a key given by values, under that key;
                // a record that won a conflict over its delete here comes back under its old
                // key (its other references here keep pointing at it); otherwise a generated
                // key is drawn anew, never the old one, whose delete may still be on its way
                // to the other side (reviving it made that delete tombstone a live record:
                // found by the simulation). SQL Server always draws anew: giving an IDENTITY
                // column a value needs ALTER on the table.
                None if es.key_given || force => {
                    (insert(ep, tx, stmts, es, c, &obj).await?, Done::Written)
                }
                None => (insert(ep, tx, stmts, es, c, &row).await?, Done::Written),
            }
        }
        None => {
            // Two records created under one key at once (the incoming one new here, or created
            // anew after a tombstone): one record, as at the side given the key (simulation,
            // full workload, seed 1739). The fast path hands it here on the unique violation.
            if careful && !es.key_given {
                if let Some(out) =
                    lands_on_new_local(ep, tx, stmts, c, &row, None, superseded).await?
                {
                    return Ok(out);
                }
            }
            (insert(ep, tx, stmts, es, c, &row).await?, Done::Written)
        }
    };
    put_link(ep, tx, stmts, c, Some(&target), false).await?;
    Ok(won(Some(target), how, superseded))
}

/// A record whose values a local row holds under the natural unique key (the other side's
/// key, given by values there), where that row is a new record of this side (not linked, its
/// insert pending here): two records claimed one key at once, so they end as one, as two
/// created under one key do. The change lands on that record (the policy decides against its
/// pending changes). `old`: the incoming record's row here, which goes, not captured: nothing
/// of it is pending here, so it is a copy of the incoming record (only for a leaf entity with
/// real deletes). Before, the update was refused by the unique key, and the new record's
/// insert by the other side's link of the key, until both were suspended (found by the
/// simulation's full workload, seed 471 and 17 more). `old` none: the incoming record is new
/// here, and lands only on a record with nothing pending but its insert (one moved onto the
/// key meanwhile still travels as a move; seed 1739 and 3 more, 760 for the move). `None`:
/// not this case.
async fn lands_on_new_local(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
    row: &Image,
    old: Option<&Key>,
    beaten: Option<i64>,
) -> Result<Option<Outcome>, Stop> {
    let common = &ep.sql.common;
    let Some(es) = ep.sql.entities.get(&c.entity) else {
        return Ok(None);
    };
    let Some(holder_sql) = &es.natural_holder else {
        return Ok(None);
    };
    if c.op == Op::Delete {
        return Ok(None);
    }
    let pending = st(tx, stmts, &common.local_pending).await?;
    let mut obj = row.clone();
    if let Some(old) = old {
        if !es.leaf
            || !tx
                .query(&pending, &[&c.entity, &old.as_str(), &0i64])
                .await?
                .is_empty()
        {
            return Ok(None);
        }
        obj.extend(old.to_object(&es.key));
    }
    let q = st(tx, stmts, holder_sql).await?;
    let holder = match tx.query_opt(&q, &[&json(&obj)]).await? {
        Some(r) => parse_key(cell(&r, 0, "row")?),
        None => None,
    };
    let Some(holder) = holder else {
        return Ok(None);
    };
    let by_own = st(tx, stmts, &common.links_by_own).await?;
    for l in tx
        .query(&by_own, &[&c.entity, &vec![holder.as_str()]])
        .await?
    {
        let peer: Option<String> = cell(&l, 1, "peer key")?;
        if peer.is_some() && !cell::<bool>(&l, 2, "deleted")? {
            return Ok(None);
        }
    }
    let (mut new_here, mut moved_here) = (false, false);
    for p in tx
        .query(&pending, &[&c.entity, &holder.as_str(), &0i64])
        .await?
    {
        let insert = cell::<String>(&p, 2, "op")? == "I";
        new_here |= insert;
        moved_here |= !insert && old.is_none();
    }
    if !new_here || moved_here {
        return Ok(None);
    }
    if let Some(old) = old {
        let del = st(tx, stmts, &es.row_delete).await?;
        tx.execute(&del, &[&json(&es.delete_object(old))]).await?;
    }
    let at = At {
        key: &holder,
        after: 0,
        exists: true,
        linked: false,
    };
    let source_key = c.source_key.as_str();
    let superseded = match resolve_conflict(ep, tx, stmts, c, &at, row).await? {
        Resolution::LocalWins => {
            let un = st(tx, stmts, &common.unlink_own).await?;
            tx.execute(&un, &[&c.entity, &source_key, &holder.as_str()])
                .await?;
            let seen = st(tx, stmts, &common.link_seen).await?;
            let here = Some(holder.as_str());
            tx.execute(
                &seen,
                &[&c.entity, &source_key, &here, &c.seq, &false, &true],
            )
            .await?;
            return Ok(Some(done(Some(holder), Done::ConflictLost, true)));
        }
        Resolution::IncomingWins(seqs) => {
            let del = st(tx, stmts, &common.done).await?;
            tx.execute(&del, &[&seqs]).await?;
            beaten.max(seqs.iter().copied().max())
        }
        Resolution::None => beaten,
    };
    let mut obj = row.clone();
    obj.extend(holder.to_object(&es.key));
    if let Some(u) = &es.row_update {
        let upd = st(tx, stmts, u).await?;
        tx.execute(&upd, &[&json(&obj)]).await?;
    }
    put_link(ep, tx, stmts, c, Some(&holder), false).await?;
    Ok(Some(won(Some(holder), Done::Written, superseded)))
}

/// How a conflict was settled.
enum Resolution {
    /// The record has no change pending here: no conflict.
    None,
    /// The incoming change wins over these pending changes of this side (the caller discards
    /// them once the change wins at every key the record has pending changes under).
    IncomingWins(Vec<i64>),
    /// This side's pending change wins; the incoming one is discarded.
    LocalWins,
}

/// Where a conflict is looked for: a key here, the sequence this side's changes there must
/// be newer than to count (the source's guard, where the key is the record's here), and
/// whether the key's row exists.
struct At<'a> {
    key: &'a Key,
    after: i64,
    exists: bool,
    /// The incoming record's link names this key (live) already.
    linked: bool,
}

/// Looks for changes of the record captured here and not yet applied at the other side
/// (the record is locked through its link already, so no tandem apply races this), and
/// settles the conflict by the entity's policy. Both sides end with the winner's values:
/// the loser's pending changes are removed, or the winner's travel on as they are (a local
/// change that wins over an incoming delete travels as an insert, to re-create the record).
async fn resolve_conflict(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
    at: &At<'_>,
    row: &Image,
) -> Result<Resolution, Stop> {
    let (here, after, exists) = (at.key, at.after, at.exists);
    let common = &ep.sql.common;
    let q = st(tx, stmts, &common.local_pending).await?;
    let pending = tx.query(&q, &[&c.entity, &here.as_str(), &after]).await?;
    let Some(newest) = pending.first() else {
        return Ok(Resolution::None);
    };
    let local_at: DateTime<Utc> = cell(newest, 1, "captured_at")?;
    let local_op: String = cell(newest, 2, "op")?;
    let seqs = pending
        .iter()
        .map(|r| cell(r, 0, "seq"))
        .collect::<Result<Vec<i64>, Stop>>()?;
    // Changes of a row that is gone here without a captured delete: tandem deleted it,
    // applying the other side's delete, which could pass only once they had been applied
    // there (their replies lost). They decide nothing any more (found by the simulation: such
    // a change won against a new record with the same key and overwrote it there).
    if local_op != "D" && !exists {
        let del = st(tx, stmts, &common.done).await?;
        tx.execute(&del, &[&seqs]).await?;
        return Ok(Resolution::None);
    }
    // Both sides deleted the record: they agree, nothing to decide. The local delete travels
    // and settles on nothing there; had one lost, its write-back would keep the link for the
    // winner coming back (keys given here) and revive the tombstone the other side's delete
    // wrote meanwhile (found by the fault suite's full workload, seed 5359).
    if c.op == Op::Delete && local_op == "D" {
        return Ok(Resolution::None);
    }
    let local_image: String = cell(newest, 3, "image")?;
    // Local changes that tandem's own applies caused here rank below a user's change.
    let mut local_derived = true;
    for r in &pending {
        local_derived &= cell::<bool>(r, 4, "derived")?;
    }
    let incoming = ep.side.other();
    let policy = ep
        .config
        .entity(&c.entity)
        .map(|e| e.on_conflict)
        .unwrap_or(ConflictPolicy::NewestWins);
    let winner = crate::endpoint::conflict_winner(
        policy,
        ep.side,
        (c.captured_at, c.derived),
        (local_at, local_derived),
    );
    let policy_name = match (policy, c.derived == local_derived) {
        (_, false) => "user_change_over_derived",
        (ConflictPolicy::AWins, true) => "a_wins",
        (ConflictPolicy::BWins, true) => "b_wins",
        (ConflictPolicy::NewestWins, true) => "newest_wins",
    };
    let incoming_image = (c.op != Op::Delete).then(|| json(row));
    let log = st(tx, stmts, &common.conflict_log).await?;
    tx.execute(
        &log,
        &[
            &c.entity,
            &incoming.to_string(),
            &c.source_key.as_str(),
            &here.as_str(),
            &policy_name,
            &winner.to_string(),
            &c.op.code().to_string(),
            &incoming_image,
            &local_op,
            &local_image,
        ],
    )
    .await?;
    tracing::info!(
        entity = %c.entity, key = %c.source_key, local_key = %here, policy = policy_name,
        winner = %winner, "conflict: the record changed on both sides; side {winner} wins"
    );
    if winner == incoming {
        Ok(Resolution::IncomingWins(seqs))
    } else {
        if c.op == Op::Delete && local_op != "D" {
            let re = st(tx, stmts, &common.local_reinsert).await?;
            tx.execute(&re, &[&seqs]).await?;
            // The other side creates the record again, under a new key where its keys are
            // generated; its children there that outlived the delete (no foreign key) still
            // name the old one: the children here travel again, derived, and move there
            // under it (found by the simulation's full workload).
            for (child, es) in &ep.sql.entities {
                for (_, q) in es.children_resend.iter().filter(|(p, _)| *p == c.entity) {
                    let q = st(tx, stmts, q).await?;
                    let key = here.as_str();
                    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        vec![child, &key];
                    if let Some(v) = &es.visible_param {
                        params.push(v);
                    }
                    tx.execute(&q, &params).await?;
                }
            }
        }
        // A local delete that beats the other side's change of a record not linked here (it
        // landed on this key) travels again, as a new change: a copy of it may have reached
        // the other side before that record was linked to this key there, and settled on
        // nothing, so its sequence is covered there already (found by the simulation's full
        // workload, seed 3053).
        if c.op != Op::Delete && local_op == "D" && !at.linked {
            let again = st(tx, stmts, &common.local_redelete).await?;
            tx.execute(&again, &[&seqs.iter().copied().max().unwrap_or_default()])
                .await?;
        }
        Ok(Resolution::LocalWins)
    }
}

/// Whether the row under `key` here is a new record of this side that the source has not
/// seen: its insert is the oldest change of it pending here after all the source has applied
/// of this side's changes of the record (`peer_applied_seq`).
async fn new_since(
    tx: &Transaction<'_>,
    stmts: &Prepared,
    common: &Common,
    c: &TargetChange,
    key: &Key,
) -> Result<bool, Stop> {
    let q = st(tx, stmts, &common.local_pending).await?;
    let pending = tx
        .query(&q, &[&c.entity, &key.as_str(), &c.peer_applied_seq])
        .await?;
    Ok(match pending.last() {
        Some(oldest) => cell::<String>(oldest, 2, "op")? == "I",
        None => false,
    })
}

/// `endpoint::hint_newer_than_link` on the changes pending here of the record the source's
/// hint names (false without a hint).
async fn hint_newer_here(
    tx: &Transaction<'_>,
    stmts: &Prepared,
    common: &Common,
    c: &TargetChange,
) -> Result<bool, Stop> {
    let Some(h) = &c.peer_hint else {
        return Ok(false);
    };
    let q = st(tx, stmts, &common.local_pending).await?;
    let mut pending = Vec::new();
    for r in tx.query(&q, &[&c.entity, &h.as_str(), &0i64]).await? {
        pending.push((
            cell::<i64>(&r, 0, "seq")?,
            cell::<String>(&r, 2, "op")? == "D",
        ));
    }
    Ok(crate::endpoint::hint_newer_than_link(
        pending,
        c.peer_applied_seq,
    ))
}

/// `endpoint::created_anew` on the changes of `key` pending here.
async fn created_anew_here(
    tx: &Transaction<'_>,
    stmts: &Prepared,
    common: &Common,
    c: &TargetChange,
    key: &Key,
) -> Result<bool, Stop> {
    let q = st(tx, stmts, &common.local_pending).await?;
    let mut pending = Vec::new();
    for r in tx.query(&q, &[&c.entity, &key.as_str(), &0i64]).await? {
        let op = match cell::<String>(&r, 2, "op")?.as_str() {
            "I" => Op::Insert,
            "D" => Op::Delete,
            _ => Op::Update,
        };
        pending.push((cell::<i64>(&r, 0, "seq")?, op));
    }
    Ok(crate::endpoint::created_anew(pending, c.peer_applied_seq))
}

/// Whether `key` here holds (`row_here`), or held, this side's new record, linked to nothing,
/// that a creation from the other side waits for (`endpoint::own_insert_waits`; sent: at or
/// below the sent mark, `mark_sent`, never failed or sent again since). Where the row is
/// gone, the record was deleted after its insert was sent: its copy may be at the other side,
/// and that delete still has to reach it (found by the simulation's full workload, seed
/// 91390). A delete sent as well came with the insert as one change that created nothing
/// there, or reached the copy (the conflict then decides as it did before: seed 3053).
async fn own_insert_unconfirmed(
    tx: &Transaction<'_>,
    stmts: &Prepared,
    common: &Common,
    entity: &str,
    key: &Key,
    row_here: bool,
) -> Result<bool, Stop> {
    // The pending changes first: nothing pending, the common case, needs no link look-up.
    let q = st(tx, stmts, &common.own_pending_sent).await?;
    let mut changes = Vec::new();
    for r in tx.query(&q, &[&entity, &key.as_str()]).await? {
        if let Some(op) = Op::from_code(&cell::<String>(&r, 0, "op")?) {
            changes.push((op, cell::<bool>(&r, 1, "sent")?));
        }
    }
    if !crate::endpoint::own_insert_waits(row_here, changes) {
        return Ok(false);
    }
    let q = st(tx, stmts, &common.links_by_own).await?;
    Ok(
        match tx.query_opt(&q, &[&entity, &vec![key.as_str()]]).await? {
            Some(r) => cell::<bool>(&r, 2, "deleted")?,
            None => true,
        },
    )
}

/// Why a change waits for a key given by values that another record holds.
pub(crate) fn key_held(key: &Key, here: Side, holder: &Key) -> String {
    format!(
        "key {key} at side {here} belongs to another record (side {} key {holder}); this change \
         waits until that record moves or is deleted, or a newer change of this record arrives",
        here.other()
    )
}

fn reject(ep: &PgEndpoint, c: &TargetChange, message: String) -> ApplyError {
    ApplyError::Rejected {
        context: context(ep, c),
        message,
        code: None,
    }
}

async fn insert(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    es: &EntitySql,
    c: &TargetChange,
    obj: &Image,
) -> Result<Key, Stop> {
    // key_from: a record without its key gets the next one tandem draws (sequence or max+1),
    // inserted with the key as a wave of one.
    let unkeyed = es.key.iter().any(|k| obj.get(k).is_none_or(Value::is_null));
    if es.key_from.is_some() && unkeyed {
        let drawn = super::wave::draw_keys(ep, tx, &c.entity, es, 1).await?;
        let Some(key) = drawn.and_then(|keys| keys.into_iter().next()) else {
            return Err(Stop::Apply(reject(ep, c, "key_from drew no key".into())));
        };
        let mut obj = obj.clone();
        obj.extend(key.to_object(&es.key));
        let ins = st(tx, stmts, &es.wave_insert).await?;
        tx.execute(&ins, &[&format!("[{}]", json(&obj))]).await?;
        return Ok(key);
    }
    let ins = st(tx, stmts, &es.row_insert).await?;
    let r = tx.query_one(&ins, &[&json(obj)]).await?;
    let text: String = cell(&r, 0, "key")?;
    Key::parse(&text).map_err(|m| {
        Stop::AfterWrite(ApplyError::Rejected {
            context: format!("table {}", es.table),
            message: format!("inserted row returned an unusable key: {m}"),
            code: None,
        })
    })
}

/// Fills ref columns with the parent's key at this side.
async fn resolve_refs(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
    row: &mut Image,
) -> Result<(), Stop> {
    if c.refs.is_empty() {
        return Ok(());
    }
    let q = st(tx, stmts, &ep.sql.common.ref_by_peer).await?;
    for r in &c.refs {
        let link = tx
            .query_opt(&q, &[&r.parent, &r.source_key.as_str()])
            .await?;
        // A parent deleted here makes an insert or update of its child wait like a parent
        // not linked yet: either the child's own delete is on its way (then this image is
        // stale when retried) or the parent comes back (a conflict re-creates it).
        // The source's hint stands in only where the target has no link at all: a tombstone
        // here knows better than a live link there (the parent's delete is on its way).
        // A parent whose delete here is still on its way is deleted too: a row at its key now
        // is another record (keys given by values), which the child must not join (found by
        // the simulation's full workload).
        let (found, gone) = match link {
            Some(row) => {
                let own = parse_key(cell(&row, 0, "own key")?);
                let deleted: bool = cell(&row, 1, "deleted")?;
                let deleted_here: bool = cell(&row, 3, "deleted here")?;
                let gone = (deleted || deleted_here) && c.op != Op::Delete;
                (own.filter(|_| !gone), gone)
            }
            // Where this side has no link yet, the source's hint; a delete of that key pending
            // here makes it deleted too (found by the simulation's full workload, seed 73430:
            // the child joined a new record under the number here, and stayed in the deleted
            // one there). Rare: only until the parent's creation is written back here.
            None => {
                let mut gone = false;
                if let (Some(h), true) = (&r.hint, c.op != Op::Delete) {
                    let q = st(tx, stmts, &ep.sql.common.local_pending).await?;
                    for p in tx.query(&q, &[&r.parent, &h.as_str(), &0i64]).await? {
                        gone |= cell::<String>(&p, 2, "op")? == "D";
                    }
                }
                (r.hint.clone().filter(|_| !gone), gone)
            }
        };
        let Some(parent_key) = found else {
            return Err(Stop::Apply(ApplyError::WaitingForParent {
                context: context(ep, c),
                parent: r.parent.clone(),
                key: r.source_key.to_string(),
                state: ParentState::at_target(gone),
            }));
        };
        let value = parent_key
            .values()
            .into_iter()
            .next()
            .unwrap_or(Value::Null);
        row.insert(r.column.clone(), value);
    }
    Ok(())
}

/// The row refers to a row that does not exist (or still has children).
const FOREIGN_KEY_VIOLATION: &str = "23503";
/// A unique key (or the primary key) already holds these values.
const UNIQUE_VIOLATION: &str = "23505";

/// Whether the database refused the statement with this SQLSTATE.
fn has_sqlstate(e: &tokio_postgres::Error, code: &str) -> bool {
    e.as_db_error().is_some_and(|db| db.code().code() == code)
}

/// After a foreign key refused a change: a parent that is linked here but whose row is gone
/// (deleted here by a user; its delete has not reached the source yet) makes the change wait
/// like a parent deleted here, not fail as a bad row (found by the simulation: such children
/// were suspended although the parent's delete, once at the source, settles them there).
async fn parent_gone(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
) -> Result<Option<ApplyError>, Stop> {
    let q = st(tx, stmts, &ep.sql.common.ref_by_peer).await?;
    for r in &c.refs {
        let own = match tx
            .query_opt(&q, &[&r.parent, &r.source_key.as_str()])
            .await?
        {
            Some(row) => {
                let own = parse_key(cell(&row, 0, "own key")?);
                let deleted: bool = cell(&row, 1, "deleted")?;
                own.filter(|_| !deleted)
            }
            None => r.hint.clone(),
        };
        let (Some(own), Some(ps)) = (own, ep.sql.entities.get(&r.parent)) else {
            continue;
        };
        // Not prepared for the batch when the parent's entity is not in it: a rare path.
        if tx
            .query_opt(ps.row_lock.as_str(), &[&json(&own.to_object(&ps.key))])
            .await?
            .is_none()
        {
            return Ok(Some(ApplyError::WaitingForParent {
                context: context(ep, c),
                parent: r.parent.clone(),
                key: r.source_key.to_string(),
                state: ParentState::DeletedAtTarget,
            }));
        }
    }
    Ok(None)
}

/// After a unique key refused a change: where another row here holds the incoming values of
/// the other side's key (a natural unique key here) and that record still has changes pending
/// here, on their way to the source, those changes decide the clash there (the two records
/// meet under one key at the source and are linked, or the holder moves away), so the change
/// waits for them instead of being suspended first (`ApplyError::KeyHeld`; found by the
/// simulation's full workload: an insert from the source was suspended by the unique key
/// while the other direction was held up, and the record holding the values landed on it at
/// the source a moment later). Returns the holder's key where the change waits for it.
async fn held_by_coming(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
) -> Result<Option<Key>, Stop> {
    let Some(es) = ep.sql.entities.get(&c.entity) else {
        return Ok(None);
    };
    let Some(holder_sql) = &es.natural_holder else {
        return Ok(None);
    };
    if c.op == Op::Delete {
        return Ok(None);
    }
    let mut row = c.row.clone();
    resolve_refs(ep, tx, stmts, c, &mut row).await?;
    // The record's own row (its link's key here) is not the holder.
    let link_st = st(tx, stmts, &ep.sql.common.link_by_peer).await?;
    if let Some(l) = tx
        .query_opt(&link_st, &[&c.entity, &c.source_key.as_str()])
        .await?
    {
        if let Some(own) = parse_key(cell(&l, 1, "own key")?) {
            row.extend(own.to_object(&es.key));
        }
    }
    let q = st(tx, stmts, holder_sql).await?;
    let holder = match tx.query_opt(&q, &[&json(&row)]).await? {
        Some(r) => parse_key(cell(&r, 0, "row")?),
        None => None,
    };
    let Some(holder) = holder else {
        return Ok(None);
    };
    let pending = st(tx, stmts, &ep.sql.common.local_pending).await?;
    let coming = !tx
        .query(&pending, &[&c.entity, &holder.as_str(), &0i64])
        .await?
        .is_empty();
    Ok(coming.then_some(holder))
}

async fn put_link(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    c: &TargetChange,
    target: Option<&Key>,
    deleted: bool,
) -> Result<(), Stop> {
    let common = &ep.sql.common;
    let source = c.source_key.as_str();
    let target = target.map(Key::as_str);
    if let Some(t) = target {
        let un = st(tx, stmts, &common.unlink_own).await?;
        tx.execute(&un, &[&c.entity, &source, &t]).await?;
    }
    let put = st(tx, stmts, &common.link_applied).await?;
    tx.execute(&put, &[&c.entity, &source, &target, &c.seq, &deleted])
        .await?;
    Ok(())
}

/// Records, at the side the changes came from, what became of them: id pairs in the id
/// map and the `peer_id_column`, done rows removed, failures noted — in one transaction,
/// pipelined like the apply; a peer id that does not fit its column sends it the careful way.
pub async fn write_back(ep: &PgEndpoint, wb: &WriteBack) -> Result<(), EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("write back", e);
    let c = &ep.sql.common;
    let mut wanted: Vec<&str> = vec![
        &c.mark_table,
        &c.unlink_peer,
        &c.link_written_back,
        &c.done,
        &c.settled_now,
        &c.failed,
        &c.supersede,
        &c.retire_unpeered,
    ];
    wanted.extend(
        ep.sql
            .entities
            .values()
            .filter_map(|e| e.peer_update.as_deref()),
    );
    wanted.extend(
        ep.sql
            .entities
            .values()
            .filter_map(|e| e.wave_peer_update.as_deref()),
    );
    wanted.extend(
        ep.sql
            .entities
            .values()
            .filter_map(|e| e.drop_duplicate.as_deref()),
    );
    wanted.extend(
        ep.sql
            .entities
            .values()
            .filter(|e| e.drop_duplicate.is_some())
            .map(|e| e.row_lock.as_str()),
    );
    wanted.push(c.wave_link_written_back.as_str());
    // The careful path's check of replies that would revive a tombstone (`gone_here`).
    wanted.extend(ep.sql.entities.values().map(|e| e.wave_row_locks.as_str()));
    wanted.push(c.links_by_own.as_str());
    if wb.links.iter().any(|l| l.only_if_row) {
        wanted.extend(ep.sql.entities.values().map(|e| e.fetch_image.as_str()));
        wanted.push(c.repoint_link.as_str());
        wanted.push(c.peer_tombstone.as_str());
        wanted.push(c.born_again.as_str());
    }
    let mut prepared_now = Prepared::new();
    for sql in wanted {
        let st = prepared(&*client, stmts, sql).await.map_err(err)?;
        prepared_now.insert(sql.to_string(), st);
    }
    for careful in [false, true] {
        match write_back_txn(ep, client, &prepared_now, wb, careful).await {
            Ok(true) => return Ok(()),
            // The set-based path left a link out: the careful path writes it.
            Ok(false) => continue,
            Err(e) if careful || is_transient(&e) || !caused_by_row(&e) => return Err(err(e)),
            Err(_) => continue,
        }
    }
    Ok(())
}

/// The links here that lost their peer to another record here in this write-back, whose row is
/// gone here and that have no change pending here, become tombstones (`retire_unpeered` in
/// statements.sql). Runs after the settled changes left the outbox.
async fn retire_unpeered(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    stolen: &[(&str, String)],
) -> Result<(), tokio_postgres::Error> {
    let Some(retire) = stmts.get(&ep.sql.common.retire_unpeered) else {
        return Ok(());
    };
    for (entity, own) in stolen {
        let Some(es) = ep.sql.entities.get(*entity) else {
            continue;
        };
        let Ok(key) = Key::parse(own) else {
            continue;
        };
        // Rare (a peer taken in this write-back): prepared here, not for every write-back.
        let read = match stmts.get(&es.fetch_image) {
            Some(st) => st.clone(),
            None => tx.prepare(&es.fetch_image).await?,
        };
        if tx
            .query_opt(&read, &[&json(&key.to_object(&es.key))])
            .await?
            .is_none()
        {
            tx.execute(retire, &[entity, &own.as_str()]).await?;
        }
    }
    Ok(())
}

/// The records here that lost their peer to another record here in this write-back: a second
/// copy of the peer's record, left by a lost reply, goes (`drop_duplicate` in statements.sql).
async fn drop_duplicates(
    ep: &PgEndpoint,
    tx: &mut Transaction<'_>,
    stmts: &Prepared,
    stolen: &[(&str, String)],
    why: &str,
) -> Result<(), tokio_postgres::Error> {
    for (entity, own) in stolen {
        let Some(es) = ep.sql.entities.get(*entity) else {
            continue;
        };
        let (Some(st), Some(lock), Ok(key)) = (
            es.drop_duplicate.as_deref().and_then(|sql| stmts.get(sql)),
            stmts.get(&es.row_lock),
            Key::parse(own),
        ) else {
            continue;
        };
        let key = json(&key.to_object(&es.key));
        mark(ep, tx, stmts, entity).await?;
        // In a savepoint: a row that cannot go (a foreign key of a table tandem does not map)
        // stays, and does not hold back the write-back.
        let sp = tx.savepoint("tandem_dup").await?;
        // The row is locked first, so the drop's own snapshot (a statement of its own) sees a
        // change a user committed to it meanwhile, whose capture keeps the row.
        let dropped = match sp.query_opt(lock, &[&key]).await {
            Ok(_) => sp.query_one(st, &[&key, own, entity]).await,
            Err(e) => Err(e),
        };
        match dropped {
            Ok(r) => {
                if r.try_get::<_, i64>(0)? > 0 {
                    tracing::info!(
                        side = %ep.side, %entity, key = %own,
                        "a second copy of a record, left by a lost reply, removed: {why}"
                    );
                }
                sp.commit().await?;
            }
            Err(e) if is_transient(&e) || !caused_by_row(&e) => return Err(e),
            Err(e) => {
                sp.rollback().await?;
                tracing::warn!(
                    side = %ep.side, %entity, key = %own,
                    "a second copy of a record, left by a lost reply, stays: it cannot be removed: {}",
                    describe(&e)
                );
            }
        }
    }
    Ok(())
}

/// The replies of creations and updates (`writes`) whose record is gone here while its link is
/// a tombstone: the reply comes after the record's delete, the other side's applied here or this
/// side's written back (a second instance took over while the first still wrote its batch
/// back), and must not revive the link (found by the fault suite's full workload, seed 5497).
/// The set-based path leaves such a revival to this careful path (`wave_link_written_back`).
/// The rows are locked first: a delete of the record applied here meanwhile has then either
/// committed, with its tombstone, or waits for this write-back.
async fn gone_here<'a>(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &Prepared,
    writes: &[&'a crate::endpoint::LinkWrite],
) -> Result<std::collections::HashSet<(&'a str, &'a str)>, tokio_postgres::Error> {
    let mut by_entity: HashMap<&str, Vec<&Key>> = HashMap::new();
    for l in writes.iter().filter(|l| !l.deleted && !l.only_if_row) {
        by_entity
            .entry(l.entity.as_str())
            .or_default()
            .push(&l.own_key);
    }
    let mut gone = std::collections::HashSet::new();
    for (entity, keys) in by_entity {
        let (Some(es), Some(links)) = (
            ep.sql.entities.get(entity),
            stmts.get(&ep.sql.common.links_by_own),
        ) else {
            continue;
        };
        let Some(locks) = stmts.get(&es.wave_row_locks) else {
            continue;
        };
        let objs: Vec<Image> = keys.iter().map(|k| k.to_object(&es.key)).collect();
        let payload = serde_json::to_string(&objs).unwrap_or_else(|_| "[]".into());
        let mut here = std::collections::HashSet::new();
        for r in tx.query(locks, &[&payload]).await? {
            if let Some(k) = parse_key(r.try_get(0)?) {
                here.insert(k);
            }
        }
        let absent: Vec<&str> = keys
            .iter()
            .filter(|k| !here.contains(**k))
            .map(|k| k.as_str())
            .collect();
        if absent.is_empty() {
            continue;
        }
        for r in tx.query(links, &[&entity, &absent]).await? {
            let own: Option<String> = r.try_get(0)?;
            let deleted: bool = r.try_get("deleted")?;
            let Some(own) = own.filter(|_| deleted) else {
                continue;
            };
            if let Some(k) = keys.iter().find(|k| k.as_str() == own) {
                tracing::debug!(side = %ep.side, %entity, key = %own,
                    "late reply left out: the record is gone here and its link is a tombstone");
                gone.insert((entity, k.as_str()));
            }
        }
    }
    Ok(gone)
}

async fn write_back_txn(
    ep: &PgEndpoint,
    client: &mut tokio_postgres::Client,
    stmts: &Prepared,
    wb: &WriteBack,
    careful: bool,
) -> Result<bool, tokio_postgres::Error> {
    let mut tx = client.transaction().await?;
    let get = |sql: &str| stmts.get(sql).cloned();
    let common = &ep.sql.common;
    let (Some(unlink), Some(put)) = (get(&common.unlink_peer), get(&common.link_written_back))
    else {
        return Ok(true);
    };
    // Only the replies of changes still in the outbox count: the others were settled by
    // another instance's write-back meanwhile (`settled_now`).
    let mut settled = std::collections::HashSet::new();
    if let (false, Some(st)) = (wb.done.is_empty(), get(&common.settled_now)) {
        for r in tx.query(&st, &[&wb.done]).await? {
            settled.insert(r.try_get::<_, i64>(0)?);
        }
    }
    let mut fresh: Vec<&crate::endpoint::LinkWrite> = wb
        .links
        .iter()
        .filter(|l| settled.contains(&l.seq))
        .collect();
    if fresh.len() < wb.links.len() {
        tracing::info!(
            side = %ep.side,
            late = wb.links.len() - fresh.len(),
            "late replies left out: another instance settled their changes meanwhile"
        );
    }
    // Links this side's id map already holds as they are need no write there (most changes of
    // linked records); their peer ids are still filled below.
    // A stale report leaves the link as it is when this side's row is gone, but for the peer
    // the other side holds now (`repoint_link`), and is left out where the key was created
    // again since with no delete between (`born_again`). Rare (only late copies report
    // stale). Not locked: a delete racing this read is captured, and travels.
    let mut writes: Vec<&crate::endpoint::LinkWrite> = Vec::new();
    let mut born: Vec<&crate::endpoint::LinkWrite> = Vec::new();
    for l in fresh.iter().copied().filter(|l| !l.known) {
        let read = ep
            .sql
            .entities
            .get(&l.entity)
            .filter(|_| l.only_if_row)
            .and_then(|es| Some((es, get(&es.fetch_image)?)));
        if let Some((es, read)) = read {
            if let Some(st) = get(&common.born_again) {
                let r = tx
                    .query_one(&st, &[&l.entity, &l.own_key.as_str(), &l.seq])
                    .await?;
                if r.try_get::<_, bool>(0)? {
                    born.push(l);
                    continue;
                }
            }
            let key = json(&l.own_key.to_object(&es.key));
            if tx.query_opt(&read, &[&key]).await?.is_none() {
                let statements = (get(&common.repoint_link), get(&common.peer_tombstone));
                if let (Some(p), (Some(repoint), Some(tomb))) = (&l.peer_key, statements) {
                    let was = tx
                        .query_opt(&repoint, &[&l.entity, &l.own_key.as_str(), &p.as_str()])
                        .await?;
                    if let Some(r) = was {
                        let old: String = r.try_get("old_peer")?;
                        let guard: i64 = r.try_get("applied_seq")?;
                        tx.execute(&tomb, &[&l.entity, &old, &guard]).await?;
                    }
                }
                continue;
            }
        }
        writes.push(l);
    }
    // Nor does such a report fill the peer id of the row that holds its key now.
    fresh.retain(|l| !born.iter().any(|b| std::ptr::eq(*b, *l)));
    if careful {
        let gone = gone_here(ep, &tx, stmts, &writes).await?;
        writes.retain(|l| !gone.contains(&(l.entity.as_str(), l.own_key.as_str())));
    }
    let links = writes.iter().map(|l| {
        let (unlink, put, tx) = (&unlink, &put, &tx);
        async move {
            let own = l.own_key.as_str();
            let peer = l.peer_key.as_ref().map(Key::as_str);
            let mut stolen = Vec::new();
            if let Some(p) = peer {
                for r in tx.query(unlink, &[&l.entity, &own, &p, &l.deleted]).await? {
                    let own: String = r.try_get("own")?;
                    stolen.push((l.entity.as_str(), own));
                }
            }
            let guard = l.peer_guard.unwrap_or(0);
            tx.execute(put, &[&l.entity, &own, &peer, &l.deleted, &guard])
                .await
                .map(|_| stolen)
        }
    });
    // Pipelined only when no two links name the same record on either side: otherwise one
    // link's unlink and another's put must run in order (a record deleted and re-created in
    // one batch settles several source records on one target key).
    let mut seen = std::collections::HashSet::new();
    let independent = writes.iter().all(|l| {
        seen.insert((0, l.entity.as_str(), l.own_key.as_str()))
            && l.peer_key
                .as_ref()
                .is_none_or(|p| seen.insert((1, l.entity.as_str(), p.as_str())))
    });
    // Set-based, the link rows go in without first looking for stale links naming the same
    // peer keys: such a link makes the insert fail on id_map's unique peer index (a row error),
    // and the careful path then unlinks one by one. Saves a probe per link in the common case.
    let set_based = get(&common.wave_link_written_back);
    let mut stolen = Vec::new();
    if let (true, false, Some(put_all)) = (independent, careful, set_based) {
        drop(links);
        let entities: Vec<&str> = writes.iter().map(|l| l.entity.as_str()).collect();
        let owns: Vec<&str> = writes.iter().map(|l| l.own_key.as_str()).collect();
        let peers: Vec<Option<&str>> = writes
            .iter()
            .map(|l| l.peer_key.as_ref().map(Key::as_str))
            .collect();
        let deleted: Vec<bool> = writes.iter().map(|l| l.deleted).collect();
        let guards: Vec<i64> = writes.iter().map(|l| l.peer_guard.unwrap_or(0)).collect();
        if !entities.is_empty() {
            let n = tx
                .execute(&put_all, &[&entities, &owns, &peers, &deleted, &guards])
                .await?;
            if n < entities.len() as u64 {
                // Rolled back when `tx` drops.
                return Ok(false);
            }
        }
    } else {
        if independent {
            for r in futures_util::future::join_all(links).await {
                stolen.extend(r?);
            }
        } else {
            for link in links {
                stolen.extend(link.await?);
            }
        }
        drop_duplicates(
            ep,
            &mut tx,
            stmts,
            &stolen,
            "the other side took another record here for it",
        )
        .await?;
    }
    // Peer ids: pipelined, or each in a savepoint on the careful path, where one that does
    // not fit its column is logged and skipped rather than holding back the write-back.
    let peers: Vec<(Statement, String, &str, &Key, &Key, &str)> = fresh
        .iter()
        .copied()
        .filter(|l| !l.deleted)
        .filter_map(|l| {
            let es = ep.sql.entities.get(&l.entity)?;
            let st = get(es.peer_update.as_deref()?)?;
            let col = ep
                .config
                .entity(&l.entity)?
                .side(ep.side)
                .peer_id_column
                .clone()?;
            let peer = l.peer_key.as_ref()?;
            let mut obj = l.own_key.to_object(&es.key);
            obj.insert(col, peer.values().into_iter().next().unwrap_or(Value::Null));
            Some((
                st,
                json(&obj),
                es.table.as_str(),
                &l.own_key,
                peer,
                l.entity.as_str(),
            ))
        })
        .collect();
    if careful {
        let mut marked: Option<&str> = None;
        for (st, payload, table, own, peer, entity) in &peers {
            if marked != Some(*entity) {
                mark(ep, &tx, stmts, entity).await?;
                marked = Some(entity);
            }
            let sp = tx.savepoint("tandem_peer").await?;
            match sp.execute(st, &[payload]).await {
                Ok(_) => sp.commit().await?,
                Err(e) if is_transient(&e) || !caused_by_row(&e) => return Err(e),
                Err(e) => {
                    sp.rollback().await?;
                    tracing::warn!(
                        side = %ep.side, key = %own,
                        "cannot fill the peer_id_column of {table} with {peer}: {}", describe(&e)
                    );
                }
            }
        }
    } else {
        // One statement per entity: its rows' keys and peer ids as one JSON array.
        let mut by_entity: HashMap<&str, Vec<Image>> = HashMap::new();
        for l in fresh.iter().filter(|l| !l.deleted) {
            let (Some(es), Some(peer)) = (ep.sql.entities.get(&l.entity), &l.peer_key) else {
                continue;
            };
            let Some(col) = ep
                .config
                .entity(&l.entity)
                .and_then(|e| e.side(ep.side).peer_id_column.clone())
            else {
                continue;
            };
            let mut obj = l.own_key.to_object(&es.key);
            obj.insert(col, peer.values().into_iter().next().unwrap_or(Value::Null));
            by_entity.entry(l.entity.as_str()).or_default().push(obj);
        }
        for (entity, objs) in &by_entity {
            let st = ep
                .sql
                .entities
                .get(*entity)
                .and_then(|es| es.wave_peer_update.as_deref())
                .and_then(get);
            if let Some(st) = st {
                mark(ep, &tx, stmts, entity).await?;
                let payload = serde_json::to_string(objs).unwrap_or_else(|_| "[]".into());
                tx.execute(&st, &[&payload]).await?;
            }
        }
    }
    if !wb.done.is_empty() {
        if let Some(d) = get(&common.done) {
            tx.execute(&d, &[&wb.done]).await?;
        }
    }
    // A record that lost its peer, whose own change settled here lost its conflict there
    // (`LinkWrite::lost`), goes now that the settled changes left the outbox.
    let lost: Vec<(&str, String)> = stolen
        .iter()
        .filter(|(e, own)| {
            wb.links
                .iter()
                .any(|l| l.lost && l.entity == *e && l.own_key.as_str() == own.as_str())
        })
        .cloned()
        .collect();
    drop_duplicates(
        ep,
        &mut tx,
        stmts,
        &lost,
        "the other side took another record here for it, and its own change lost there",
    )
    .await?;
    retire_unpeered(ep, &tx, stmts, &stolen).await?;
    if !fresh.is_empty() {
        if let Some(sup) = get(&common.supersede) {
            let entities: Vec<&str> = fresh.iter().map(|l| l.entity.as_str()).collect();
            let keys: Vec<&str> = fresh.iter().map(|l| l.own_key.as_str()).collect();
            let seqs: Vec<i64> = fresh.iter().map(|l| l.seq).collect();
            tx.execute(&sup, &[&entities, &keys, &seqs]).await?;
        }
    }
    // A copy of a record gone at the other side, which its delete never reaches
    // (`LinkWrite::gone_there`): it goes, as a second copy does, once the settled changes
    // left the outbox (its own pending changes keep it). Rare: only such replies.
    let gone_there: Vec<(&str, String)> = writes
        .iter()
        .filter(|l| l.gone_there)
        .map(|l| (l.entity.as_str(), l.own_key.as_str().to_string()))
        .collect();
    drop_duplicates(
        ep,
        &mut tx,
        stmts,
        &gone_there,
        "the other side deleted the record, and its delete will not reach this copy",
    )
    .await?;
    if let Some(failed) = get(&common.failed) {
        for f in &wb.failed {
            let delay = f.retry_in_ms as f64;
            tx.execute(&failed, &[&f.seqs, &delay, &f.error, &f.suspend])
                .await?;
        }
    }
    tx.commit().await.map(|()| true)
}
