//! Backfill and verify on PostgreSQL: work done inside the database, in chunks, so neither a
//! table nor a backlog ever crosses the wire or sits in memory whole.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;

use super::pool::{prepared, PgConn};
use super::row::col;
use super::sql::EntitySql;
use super::PgEndpoint;
use crate::endpoint::verify_hash::{comparable, normalize_text, Fold};
use crate::endpoint::{
    BackfillChunk, BackfillProgress, BucketHash, EndpointError, Queued, RecordHash,
};
use crate::model::{Image, Key, Op};

fn entity_sql<'a>(ep: &'a PgEndpoint, entity: &str) -> Result<&'a EntitySql, EndpointError> {
    ep.sql
        .entities
        .get(entity)
        .ok_or_else(|| EndpointError::Config(format!("no entity {entity:?} in the config")))
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

/// `params` and, for an entity that shows only some rows here, the parameter of its
/// `{{visible}}` predicate (always the statement's last).
fn with_visible<'a>(es: &'a EntitySql, params: &[Param<'a>]) -> Vec<Param<'a>> {
    let mut out = params.to_vec();
    if let Some(v) = &es.visible_param {
        out.push(v);
    }
    out
}

/// Verify compares rendered values: both sides render timestamps in UTC.
const VERIFY_SESSION: &str = "SET LOCAL TimeZone = 'UTC'";

pub async fn row_count(ep: &PgEndpoint, entity: &str) -> Result<i64, EndpointError> {
    let es = entity_sql(ep, entity)?;
    let conn = ep.pool.get().await?;
    let row = conn
        .client
        .query_one(es.row_count.as_str(), &with_visible(es, &[]))
        .await
        .map_err(|e| ep.pool.error(&format!("count rows of {}", es.table), e))?;
    col(&row, 0, "count", "row count")
}

pub async fn progress(ep: &PgEndpoint, entity: &str) -> Result<BackfillProgress, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("read backfill progress", e);
    let st = prepared(&*client, stmts, &ep.sql.common.backfill_get)
        .await
        .map_err(err)?;
    Ok(
        match client.query_opt(&st, &[&entity]).await.map_err(err)? {
            Some(r) => BackfillProgress {
                started: true,
                rows_done: col(&r, 1, "rows_done", "backfill progress")?,
                finished: col(&r, 2, "finished", "backfill progress")?,
            },
            None => BackfillProgress::default(),
        },
    )
}

pub async fn reset(ep: &PgEndpoint, entity: &str) -> Result<(), EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("reset backfill progress", e);
    let st = prepared(&*client, stmts, &ep.sql.common.backfill_reset)
        .await
        .map_err(err)?;
    client.execute(&st, &[&entity]).await.map_err(err)?;
    Ok(())
}

pub async fn chunk(
    ep: &PgEndpoint,
    entity: &str,
    size: usize,
) -> Result<BackfillChunk, EndpointError> {
    let es = entity_sql(ep, entity)?;
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error(&format!("backfill {}", es.table), e);
    let tx = client.transaction().await.map_err(err)?;
    let get = prepared(&tx, stmts, &ep.sql.common.backfill_get)
        .await
        .map_err(err)?;
    let after: Option<String> = match tx.query_opt(&get, &[&entity]).await.map_err(err)? {
        Some(r) if col::<bool>(&r, 2, "finished", "backfill progress")? => {
            // Finished earlier: nothing left (use --restart to copy again).
            return Ok(BackfillChunk {
                finished: true,
                ..Default::default()
            });
        }
        Some(r) => col(&r, 0, "last_key", "backfill progress")?,
        None => None,
    };
    let limit = i64::try_from(size.max(1)).unwrap_or(i64::MAX);
    let q = prepared(&tx, stmts, &es.backfill_chunk)
        .await
        .map_err(err)?;
    let r = tx
        .query_one(&q, &with_visible(es, &[&after, &limit, &entity]))
        .await
        .map_err(err)?;
    let what = "backfill chunk";
    let rows: i64 = col(&r, 0, "rows", what)?;
    let last: Option<String> = col(&r, 3, "last_key", what)?;
    let finished = rows < limit;
    let save = prepared(&tx, stmts, &ep.sql.common.backfill_progress)
        .await
        .map_err(err)?;
    tx.execute(&save, &[&entity, &last, &rows, &finished])
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(BackfillChunk {
        rows: u64::try_from(rows).unwrap_or(0),
        min_seq: col(&r, 1, "min_seq", what)?,
        max_seq: col(&r, 2, "max_seq", what)?,
        finished,
    })
}

pub async fn pending_between(ep: &PgEndpoint, min: i64, max: i64) -> Result<Queued, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error("count queued changes", e);
    let st = prepared(&*client, stmts, &ep.sql.common.pending_between)
        .await
        .map_err(err)?;
    let r = client.query_one(&st, &[&min, &max]).await.map_err(err)?;
    Ok(Queued {
        eligible: col(&r, 0, "eligible", "queued changes")?,
        retrying: col(&r, 1, "retrying", "queued changes")?,
        suspended: col(&r, 2, "suspended", "queued changes")?,
    })
}

/// Is the other side another kind of database, or does the entity have converted columns?
/// Then both sides hash in tandem, from the same normalised values (see
/// `crate::endpoint::verify_hash` for why; converters are tandem's Rust, so their columns are
/// compared in tandem, in B's terms, as apply's lossy rule compares them).
fn hashed_in_tandem(ep: &PgEndpoint, entity: &str) -> bool {
    ep.config.side(ep.side.other()).kind != crate::config::DbKind::Postgres
        || ep
            .config
            .entity(entity)
            .is_some_and(|e| e.columns.iter().any(|c| c.converted()))
}

/// Streams every record of the entity into `fold` (verify across dialects).
async fn stream_records(
    ep: &PgEndpoint,
    entity: &str,
    fold: &mut Fold,
) -> Result<(), EndpointError> {
    let es = entity_sql(ep, entity)?;
    let columns = ep.config.entity(entity).map(|e| &e.columns);
    let mut conn = ep.pool.get().await?;
    let what = format!("verify {} (entity {entity})", es.table);
    let err = |e| ep.pool.error(&what, e);
    let tx = conn.client.transaction().await.map_err(err)?;
    tx.batch_execute(VERIFY_SESSION).await.map_err(err)?;
    {
        let stream = tx
            .query_raw(es.verify_values.as_str(), with_visible(es, &[]))
            .await
            .map_err(err)?;
        futures_util::pin_mut!(stream);
        while let Some(r) = stream.try_next().await.map_err(err)? {
            let bad =
                |e: tokio_postgres::Error| EndpointError::Config(format!("internal: {what}: {e}"));
            let a_key: Option<String> = r.try_get(0).map_err(bad)?;
            let b_key: Option<String> = r.try_get(1).map_err(bad)?;
            let jk: Option<String> = r.try_get(2).map_err(bad)?;
            let v: Option<String> = r.try_get(3).map_err(bad)?;
            let texts: Vec<Option<String>> = serde_json::from_str(v.as_deref().unwrap_or("[]"))
                .map_err(|e| {
                    EndpointError::Config(format!(
                        "internal: {what}: the values of record {} are not a JSON array of texts ({e})",
                        a_key.as_deref().or(b_key.as_deref()).unwrap_or("?")
                    ))
                })?;
            let values: Vec<String> = match &columns {
                Some(cols) if cols.len() == texts.len() => texts
                    .iter()
                    .zip(cols.iter())
                    .map(|(t, c)| comparable(c, ep.side, t.as_deref()))
                    .collect(),
                _ => texts.iter().map(|t| normalize_text(t.as_deref())).collect(),
            };
            fold.add(a_key, b_key, jk.unwrap_or_default(), &values);
        }
    }
    tx.commit().await.map_err(err)?;
    Ok(())
}

pub async fn buckets(
    ep: &PgEndpoint,
    entity: &str,
    n: i32,
) -> Result<Vec<BucketHash>, EndpointError> {
    if hashed_in_tandem(ep, entity) {
        let mut fold = Fold::new(n, None);
        stream_records(ep, entity, &mut fold).await?;
        return Ok(fold.buckets());
    }
    let es = entity_sql(ep, entity)?;
    let mut conn = ep.pool.get().await?;
    let err = |e| ep.pool.error(&format!("verify {}", es.table), e);
    let tx = conn.client.transaction().await.map_err(err)?;
    tx.batch_execute(VERIFY_SESSION).await.map_err(err)?;
    let rows = tx
        .query(
            es.verify_buckets.as_str(),
            &with_visible(es, &[&i64::from(n.max(1))]),
        )
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    let what = "verify buckets";
    rows.iter()
        .map(|r| {
            Ok(BucketHash {
                bucket: col(r, 0, "bucket", what)?,
                count: col(r, 1, "count", what)?,
                sum: col::<Option<String>>(r, 2, "sum", what)?.unwrap_or_default(),
            })
        })
        .collect()
}

pub async fn records(
    ep: &PgEndpoint,
    entity: &str,
    n: i32,
    which: &[i32],
) -> Result<Vec<RecordHash>, EndpointError> {
    if hashed_in_tandem(ep, entity) {
        let mut fold = Fold::new(n, Some(which));
        stream_records(ep, entity, &mut fold).await?;
        return Ok(fold.records());
    }
    let es = entity_sql(ep, entity)?;
    let mut conn = ep.pool.get().await?;
    let err = |e| ep.pool.error(&format!("verify {}", es.table), e);
    let tx = conn.client.transaction().await.map_err(err)?;
    tx.batch_execute(VERIFY_SESSION).await.map_err(err)?;
    let rows = tx
        .query(
            es.verify_records.as_str(),
            &with_visible(es, &[&i64::from(n.max(1)), &which]),
        )
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    let what = "verify records";
    rows.iter()
        .map(|r| {
            Ok(RecordHash {
                a_key: col(r, 0, "a_key", what)?,
                b_key: col(r, 1, "b_key", what)?,
                join_key: col(r, 2, "join_key", what)?,
                hash: col(r, 3, "hash", what)?,
            })
        })
        .collect()
}

pub async fn in_flight(
    ep: &PgEndpoint,
    entity: &str,
    join_keys: &[String],
) -> Result<HashSet<String>, EndpointError> {
    let es = entity_sql(ep, entity)?;
    if join_keys.is_empty() {
        return Ok(HashSet::new());
    }
    let conn = ep.pool.get().await?;
    let rows = conn
        .client
        .query(es.verify_in_flight.as_str(), &[&entity, &join_keys])
        .await
        .map_err(|e| ep.pool.error("look for changes in flight", e))?;
    let mut out = HashSet::new();
    for r in &rows {
        if let Some(k) = col::<Option<String>>(r, 0, "join_key", "verify in flight")? {
            out.insert(k);
        }
    }
    Ok(out)
}

fn key_json(es: &EntitySql, key: &Key) -> String {
    serde_json::to_string(&key.to_object(&es.key)).unwrap_or_else(|_| "{}".into())
}

pub async fn fetch_image(
    ep: &PgEndpoint,
    entity: &str,
    key: &Key,
) -> Result<Option<Image>, EndpointError> {
    let es = entity_sql(ep, entity)?;
    let conn = ep.pool.get().await?;
    let row = conn
        .client
        .query_opt(es.fetch_image.as_str(), &[&key_json(es, key)])
        .await
        .map_err(|e| ep.pool.error(&format!("read {} {key}", es.table), e))?;
    let Some(r) = row else {
        return Ok(None);
    };
    let text: String = col(&r, 0, "image", "fetch image")?;
    Ok(serde_json::from_str(&text).ok())
}

pub async fn fetch_images(
    ep: &PgEndpoint,
    entity: &str,
    keys: &[Key],
) -> Result<HashMap<Key, Image>, EndpointError> {
    let mut out = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let es = entity_sql(ep, entity)?;
    let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
    let objects: Vec<String> = keys.iter().map(|k| key_json(es, k)).collect();
    let conn = ep.pool.get().await?;
    let rows = conn
        .client
        .query(es.fetch_images.as_str(), &[&texts, &objects])
        .await
        .map_err(|e| {
            ep.pool
                .error(&format!("read {} records of {}", keys.len(), es.table), e)
        })?;
    for r in rows {
        let what = "fetch images";
        let (Some(k), Some(img)) = (
            col::<Option<String>>(&r, 0, "key", what)?,
            col::<Option<String>>(&r, 1, "image", what)?,
        ) else {
            continue;
        };
        if let (Ok(k), Ok(img)) = (Key::parse(&k), serde_json::from_str::<Image>(&img)) {
            out.insert(k, img);
        }
    }
    Ok(out)
}

pub async fn requeue(
    ep: &PgEndpoint,
    entity: &str,
    key: &Key,
    op: Op,
) -> Result<u64, EndpointError> {
    let es = entity_sql(ep, entity)?;
    let conn = ep.pool.get().await?;
    conn.client
        .execute(
            es.requeue.as_str(),
            &[&key_json(es, key), &entity, &op.code().to_string()],
        )
        .await
        .map_err(|e| {
            ep.pool
                .error(&format!("queue {} {key} for re-sync", es.table), e)
        })
}

pub async fn delete_records(
    ep: &PgEndpoint,
    entity: &str,
    keys: &[Key],
) -> Result<u64, EndpointError> {
    let es = entity_sql(ep, entity)?;
    let mut conn = ep.pool.get().await?;
    let PgConn { client, stmts } = &mut *conn;
    let err = |e| ep.pool.error(&format!("delete from {}", es.table), e);
    let tx = client.transaction().await.map_err(err)?;
    // Like an apply: a repair is tandem's own write, not a change to capture.
    // Entities sharing the table capture the delete (as they would an apply's).
    let own = prepared(&tx, stmts, &ep.sql.common.mark_table)
        .await
        .map_err(err)?;
    tx.query_one(&own, &[&es.table_sql, &entity])
        .await
        .map_err(err)?;
    let del = prepared(&tx, stmts, &es.row_delete).await.map_err(err)?;
    let mark = prepared(&tx, stmts, &ep.sql.common.link_mark_deleted)
        .await
        .map_err(err)?;
    let mut n = 0;
    for k in keys {
        let obj = serde_json::to_string(&es.delete_object(k)).unwrap_or_else(|_| "{}".into());
        n += tx.execute(&del, &[&obj]).await.map_err(err)?;
        tx.execute(&mark, &[&entity, &k.as_str()])
            .await
            .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(n)
}
