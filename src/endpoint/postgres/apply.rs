//! Guarded apply at the target and write-back at the source, for PostgreSQL.
//!
//! Each change runs in a savepoint inside one transaction per batch: the link row is locked,
//! the sequence guard checked, then the row is written and the link updated — so data and
//! guard always commit together, and a change the target refuses is rolled back alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio_postgres::{Statement, Transaction};

use super::pool::{describe, prepared, PgConn};
use super::sql::EntitySql;
use super::PgEndpoint;
use crate::config::{ConflictPolicy, Side};
use crate::endpoint::error::sqlstate_is_transient;
use crate::endpoint::{ApplyError, Done, EndpointError, Outcome, WriteBack};
use crate::model::{Image, Key, Op, TargetChange};

/// Why a single change stopped.
enum Stop {
    /// A driver or database error; transient ones abort the whole batch.
    Db(tokio_postgres::Error),
    /// The change cannot be applied as it is.
    Apply(ApplyError),
}

impl From<tokio_postgres::Error> for Stop {
    fn from(e: tokio_postgres::Error) -> Self {
        Stop::Db(e)
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.as_db_error() {
        Some(db) => sqlstate_is_transient(db.code().code()),
        None => true,
    }
}

/// Errors caused by the row itself: the target refuses these values (data exception,
/// integrity constraint, a trigger raising, a view's check option). Anything else — a missing
/// table, a permission — is the environment's fault: it fails the whole batch, which is retried
/// without counting attempts, so no change is suspended for a problem it did not cause.
fn caused_by_row(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .map(|db| matches!(&db.code().code()[..2], "22" | "23" | "P0" | "44"))
        .unwrap_or(false)
}

const APPLYING: &str = "SET LOCAL tandem.applying = 'on'";

/// Applies a batch in one transaction; see the module comment.
pub async fn apply_batch(
    ep: &PgEndpoint,
    batch: &[TargetChange],
) -> Result<Vec<Outcome>, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("apply", e);
    let mut tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(APPLYING).await.map_err(err)?;
    let mut outcomes = Vec::with_capacity(batch.len());
    for change in batch {
        let sp = tx.savepoint("tandem_change").await.map_err(err)?;
        match apply_one(ep, &sp, stmts, change).await {
            Ok(outcome) => {
                sp.commit().await.map_err(err)?;
                outcomes.push(outcome);
            }
            Err(Stop::Db(e)) if !caused_by_row(&e) => return Err(err(e)),
            Err(Stop::Db(e)) => {
                sp.rollback().await.map_err(err)?;
                let column = match guilty_column(ep, &mut tx, change, &e).await {
                    Ok(c) => c,
                    Err(e2) => return Err(err(e2)),
                };
                outcomes.push(Outcome::Failed(rejected(ep, change, &e, column)));
            }
            Err(Stop::Apply(a)) => {
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
        sqlstate: db.map(|d| d.code().code().to_string()),
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

async fn st(
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
    sql: &str,
) -> Result<Statement, tokio_postgres::Error> {
    prepared(tx, stmts, sql).await
}

fn json(obj: &Image) -> String {
    serde_json::to_string(obj).unwrap_or_else(|_| "{}".into())
}

fn parse_key(text: Option<String>) -> Option<Key> {
    text.and_then(|s| Key::parse(&s).ok())
}

async fn apply_one(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
    c: &TargetChange,
) -> Result<Outcome, Stop> {
    let common = &ep.sql.common;
    let es = ep.sql.entities.get(&c.entity).ok_or_else(|| {
        Stop::Apply(ApplyError::Rejected {
            context: context(ep, c),
            message: "entity is not in the config".into(),
            sqlstate: None,
        })
    })?;
    let source_key = c.source_key.as_str();
    let link_st = st(tx, stmts, &common.link_by_peer).await?;
    let link = tx.query_opt(&link_st, &[&c.entity, &source_key]).await?;
    let link: Option<(i64, Option<Key>, bool)> =
        link.map(|r| (r.get(0), parse_key(r.get(1)), r.get(2)));

    if let Some((applied, own, _)) = &link {
        if *applied >= c.seq {
            return Ok(done(own.clone(), Done::Stale, false));
        }
    }
    // What the target knows of the record: its own link, else the source's (write-back of
    // a link the source made may still be on its way here).
    let (known, linked_live, tombstone) = match &link {
        Some((_, own, deleted)) => (own.clone(), own.is_some() && !deleted, *deleted),
        None => (c.peer_hint.clone(), c.peer_hint.is_some(), false),
    };

    let mut row = c.row.clone();
    let refs = resolve_refs(ep, tx, stmts, c, &mut row).await;
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
    // The record's key here, as far as it is known before writing.
    let here = if es.key_given {
        given.clone().or_else(|| known.clone())
    } else {
        known.clone()
    };

    let conflict = match &here {
        Some(k) => resolve_conflict(ep, tx, stmts, c, k, &row).await?,
        None => Resolution::None,
    };
    let force = match conflict {
        Resolution::None => false,
        Resolution::IncomingWins => true,
        Resolution::LocalWins => {
            let seen = st(tx, stmts, &common.link_seen).await?;
            let here_text = here.as_ref().map(Key::as_str);
            tx.execute(&seen, &[&c.entity, &source_key, &here_text, &c.seq])
                .await?;
            return Ok(done(here, Done::ConflictLost, true));
        }
    };
    let conflicted = force;

    if c.op == Op::Delete {
        let mut how = Done::Unchanged;
        if let Some(k) = &here {
            let del = st(tx, stmts, &es.row_delete).await?;
            if tx.execute(&del, &[&json(&k.to_object(&es.key))]).await? > 0 {
                how = Done::Written;
            }
        }
        put_link(ep, tx, stmts, c, here.as_ref(), true).await?;
        return Ok(done(here, how, conflicted));
    }

    if tombstone && c.op == Op::Update && !force {
        // An update after a delete: the record is gone here, and the delete wins.
        put_link(ep, tx, stmts, c, known.as_ref(), true).await?;
        return Ok(done(known, Done::Deleted, false));
    }

    let candidate = if es.key_given {
        given
    } else if tombstone {
        None
    } else {
        known.clone()
    };

    let (target, how) = match candidate {
        Some(k) => {
            let mut obj = row.clone();
            obj.extend(k.to_object(&es.key));
            let payload = json(&obj);
            let lock = st(tx, stmts, &es.row_lock).await?;
            match tx.query_opt(&lock, &[&payload]).await? {
                Some(r) => {
                    let actual = parse_key(r.get(0)).unwrap_or(k);
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
                None if linked_live && !force => {
                    // Linked, yet gone here, with no delete of it pending here: it was
                    // deleted at this side and that delete reached the other side already.
                    put_link(ep, tx, stmts, c, Some(&k), true).await?;
                    return Ok(done(Some(k), Done::Deleted, false));
                }
                None => (insert(tx, stmts, es, &obj).await?, Done::Written),
            }
        }
        None => (insert(tx, stmts, es, &row).await?, Done::Written),
    };
    put_link(ep, tx, stmts, c, Some(&target), false).await?;
    Ok(done(Some(target), how, conflicted))
}

/// How a conflict was settled.
enum Resolution {
    /// The record has no change pending here: no conflict.
    None,
    /// The incoming change wins; this side's pending changes of the record were discarded.
    IncomingWins,
    /// This side's pending change wins; the incoming one is discarded.
    LocalWins,
}

/// Looks for changes of the record captured here and not yet applied at the other side
/// (the record is locked through its link already, so no tandem apply races this), and
/// settles the conflict by the entity's policy. Both sides end with the winner's values:
/// the loser's pending changes are removed, or the winner's travel on as they are (a local
/// change that wins over an incoming delete travels as an insert, to re-create the record).
async fn resolve_conflict(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
    c: &TargetChange,
    here: &Key,
    row: &Image,
) -> Result<Resolution, Stop> {
    let common = &ep.sql.common;
    let q = st(tx, stmts, &common.local_pending).await?;
    let pending = tx
        .query(&q, &[&c.entity, &here.as_str(), &c.peer_applied_seq])
        .await?;
    let Some(newest) = pending.first() else {
        return Ok(Resolution::None);
    };
    let local_at: DateTime<Utc> = newest.get(1);
    let local_op: String = newest.get(2);
    let local_image: String = newest.get(3);
    let incoming = ep.side.other();
    let policy = ep
        .config
        .entity(&c.entity)
        .map(|e| e.on_conflict)
        .unwrap_or(ConflictPolicy::NewestWins);
    let winner = match policy {
        ConflictPolicy::AWins => Side::A,
        ConflictPolicy::BWins => Side::B,
        // Ties go to A, so both sides decide the same way.
        ConflictPolicy::NewestWins => match c.captured_at.cmp(&local_at) {
            std::cmp::Ordering::Greater => incoming,
            std::cmp::Ordering::Less => ep.side,
            std::cmp::Ordering::Equal => Side::A,
        },
    };
    let policy_name = match policy {
        ConflictPolicy::AWins => "a_wins",
        ConflictPolicy::BWins => "b_wins",
        ConflictPolicy::NewestWins => "newest_wins",
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
        let seqs: Vec<i64> = pending.iter().map(|r| r.get(0)).collect();
        let del = st(tx, stmts, &common.done).await?;
        tx.execute(&del, &[&seqs]).await?;
        Ok(Resolution::IncomingWins)
    } else {
        if c.op == Op::Delete && local_op != "D" {
            let newest_seq: i64 = newest.get(0);
            let re = st(tx, stmts, &common.local_reinsert).await?;
            tx.execute(&re, &[&newest_seq]).await?;
        }
        Ok(Resolution::LocalWins)
    }
}

fn done(target_key: Option<Key>, how: Done, conflict: bool) -> Outcome {
    Outcome::Done {
        target_key,
        how,
        conflict,
    }
}

fn reject(ep: &PgEndpoint, c: &TargetChange, message: String) -> ApplyError {
    ApplyError::Rejected {
        context: context(ep, c),
        message,
        sqlstate: None,
    }
}

async fn insert(
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
    es: &EntitySql,
    obj: &Image,
) -> Result<Key, Stop> {
    let ins = st(tx, stmts, &es.row_insert).await?;
    let r = tx.query_one(&ins, &[&json(obj)]).await?;
    let text: String = r.get(0);
    Key::parse(&text).map_err(|m| {
        Stop::Apply(ApplyError::Rejected {
            context: format!("table {}", es.table),
            message: format!("inserted row returned an unusable key: {m}"),
            sqlstate: None,
        })
    })
}

/// Fills ref columns with the parent's key at this side.
async fn resolve_refs(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
    c: &TargetChange,
    row: &mut Image,
) -> Result<(), Stop> {
    if c.refs.is_empty() {
        return Ok(());
    }
    let q = st(tx, stmts, &ep.sql.common.ref_by_peer).await?;
    for r in &c.refs {
        let found = tx
            .query_opt(&q, &[&r.parent, &r.source_key.as_str()])
            .await?
            .and_then(|row| {
                let own = parse_key(row.get(0));
                let deleted: bool = row.get(1);
                own.filter(|_| !deleted || c.op == Op::Delete)
            });
        let Some(parent_key) = found.or_else(|| r.hint.clone()) else {
            return Err(Stop::Apply(ApplyError::WaitingForParent {
                context: context(ep, c),
                parent: r.parent.clone(),
                key: r.source_key.to_string(),
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

async fn put_link(
    ep: &PgEndpoint,
    tx: &Transaction<'_>,
    stmts: &mut HashMap<String, Statement>,
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

/// Records, at the side the changes came from, what became of them.
pub async fn write_back(ep: &PgEndpoint, wb: &WriteBack) -> Result<(), EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("write back", e);
    let mut tx = client.transaction().await.map_err(err)?;
    tx.batch_execute(APPLYING).await.map_err(err)?;
    let common = &ep.sql.common;
    for l in &wb.links {
        let own = l.own_key.as_str();
        let peer = l.peer_key.as_ref().map(Key::as_str);
        if let Some(p) = peer {
            let un = st(&tx, stmts, &common.unlink_peer).await.map_err(err)?;
            tx.execute(&un, &[&l.entity, &own, &p]).await.map_err(err)?;
        }
        let put = st(&tx, stmts, &common.link_written_back)
            .await
            .map_err(err)?;
        tx.execute(&put, &[&l.entity, &own, &peer, &l.deleted])
            .await
            .map_err(err)?;
        let (Some(es), Some(p), false) = (ep.sql.entities.get(&l.entity), &l.peer_key, l.deleted)
        else {
            continue;
        };
        let (Some(sql), Some(col)) = (
            &es.peer_update,
            ep.config
                .entity(&l.entity)
                .and_then(|e| e.side(ep.side).peer_id_column.clone()),
        ) else {
            continue;
        };
        let mut obj = l.own_key.to_object(&es.key);
        obj.insert(col, p.values().into_iter().next().unwrap_or(Value::Null));
        // A peer id that does not fit the column must not block the write-back of the
        // change itself: log it and go on.
        let upd = st(&tx, stmts, sql).await.map_err(err)?;
        let sp = tx.savepoint("tandem_peer").await.map_err(err)?;
        match sp.execute(&upd, &[&json(&obj)]).await {
            Ok(_) => sp.commit().await.map_err(err)?,
            Err(e) if is_transient(&e) => return Err(err(e)),
            Err(e) => {
                sp.rollback().await.map_err(err)?;
                tracing::warn!(
                    entity = %l.entity, side = %ep.side, key = %l.own_key,
                    "cannot fill peer_id_column of {} with {p}: {}", es.table, describe(&e)
                );
            }
        }
    }
    if !wb.done.is_empty() {
        let d = st(&tx, stmts, &common.done).await.map_err(err)?;
        tx.execute(&d, &[&wb.done]).await.map_err(err)?;
    }
    if !wb.links.is_empty() {
        let entities: Vec<&str> = wb.links.iter().map(|l| l.entity.as_str()).collect();
        let keys: Vec<&str> = wb.links.iter().map(|l| l.own_key.as_str()).collect();
        let seqs: Vec<i64> = wb.links.iter().map(|l| l.seq).collect();
        let sup = st(&tx, stmts, &common.supersede).await.map_err(err)?;
        tx.execute(&sup, &[&entities, &keys, &seqs])
            .await
            .map_err(err)?;
    }
    for f in &wb.failed {
        let s = st(&tx, stmts, &common.failed).await.map_err(err)?;
        let delay = f.retry_in_ms as f64;
        tx.execute(&s, &[&f.seqs, &delay, &f.error, &f.suspend])
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}
