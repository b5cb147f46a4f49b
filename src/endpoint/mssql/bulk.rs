//! Backfill and verify on SQL Server (`sql/mssql/bulk.sql`).
//!
//! Backfill works as on PostgreSQL: each chunk of existing rows is queued inside the database
//! as changes in the outbox, with the progress, in one transaction (see `backfill_chunk`), and
//! the normal sync applies them. Verify streams each record's keys and image and hashes them
//! in tandem ([`crate::endpoint::verify_hash`]): SQL Server cannot hash text the way
//! PostgreSQL does, so a pair with SQL Server on a side compares there.

use std::collections::{HashMap, HashSet};

use futures_util::TryStreamExt;
use serde_json::Value;

use super::pool::{run, TxState};
use super::sql::{
    fill, ident, image_of_t, literal, schema_vars, sections, table, EntityPlan, Shown, BULK,
};
use super::types::Family;
use super::MsEndpoint;
use crate::config::{Entity, Side};
use crate::endpoint::verify_hash::{normalize_text, Fold};
use crate::endpoint::{
    BackfillChunk, BackfillProgress, BucketHash, EndpointError, Queued, RecordHash,
};
use crate::mapping::convert::canonical;
use crate::model::{value_text, Image, Key, Op};

/// Binary comparison for keys as id_map texts (id_map's own collation).
const BIN: &str = "COLLATE Latin1_General_100_BIN2";

fn joined(items: impl IntoIterator<Item = String>, sep: &str) -> String {
    items.into_iter().collect::<Vec<_>>().join(sep)
}

fn statement(name: &str, vars: &[(&str, String)]) -> Result<String, EndpointError> {
    let s = sections(BULK);
    let t = s
        .get(name)
        .ok_or_else(|| EndpointError::Config(format!("internal: statement {name} missing")))?;
    fill(t, vars)
}

/// The statements of one entity, filled with its table, key and column types.
struct EntityBulk<'a> {
    entity: &'a Entity,
    vars: Vec<(&'static str, String)>,
    /// `{{visible_pN}}`'s parameters: a flag soft delete's deleted value (text) and a filter's
    /// values (a JSON array of texts); '' and '[]', unused, when the entity has none at this
    /// side (always sent: a NULL parameter without a type is refused by Babelfish).
    deleted_text: String,
    in_json: String,
}

impl<'a> EntityBulk<'a> {
    fn new(ep: &'a MsEndpoint, plan: &'a EntityPlan) -> Result<EntityBulk<'a>, EndpointError> {
        let side = ep.side;
        let entity = ep.config.entity(&plan.name).ok_or_else(|| {
            EndpointError::Config(format!("no entity {:?} in the config", plan.name))
        })?;
        let ts = entity.side(side);
        let col = |name: &str| {
            plan.by_name.get(name).ok_or_else(|| {
                EndpointError::Config(format!(
                    "entity {}, side {side} table {}: column {name:?} does not exist (run `tandem check`)",
                    plan.name, plan.table
                ))
            })
        };
        let mut key_types = Vec::new();
        for k in &ts.key {
            let c = col(k)?;
            let input = c.ty.key_input_type().ok_or_else(|| {
                EndpointError::Config(format!(
                    "entity {}, side {side} table {}: key column {k:?} of type {} cannot be a key here",
                    plan.name, plan.table, c.ty.sql()
                ))
            })?;
            key_types.push((k.as_str(), c, input));
        }
        // The rows this side shows (`soft_delete`, `filter` here): values in two parameters,
        // @Pn (the flag's deleted value, as text) and @Pn+1 (the filter's values, a JSON array
        // of texts), each converted to the column's type in the statement.
        let soft = entity.soft_delete_at(side);
        let shown = Shown::of(entity, side);
        let visible = |n: usize| -> Result<String, EndpointError> {
            shown.predicate(
                &plan.by_name,
                &format!("entity {}, side {side} table {}", plan.name, plan.table),
                &format!("@P{n}"),
                &format!("@P{}", n + 1),
            )
        };
        let (deleted_text, in_json) = (shown.deleted_text.clone(), shown.in_json.clone());
        let canonical = |alias: &str| -> String {
            let tokens = key_types.iter().map(|(k, c, _)| {
                c.ty.canonical_token(&format!("{alias}.{}", ident(k)))
                    .unwrap_or_default()
            });
            format!("(N'[' + {} + N']') {BIN}", joined(tokens, " + N',' + "))
        };
        let own = canonical("t");
        let t = table(&ts.table);
        let lookup = |own_expr: &str, entity_name: &str| {
            format!(
                "(SELECT m.{{{{peer}}}} FROM {{{{schema}}}}.[id_map] AS m WHERE m.entity = {} AND m.{{{{own}}}} = {own_expr} AND m.deleted = 0)",
                literal(entity_name)
            )
        };
        let (a_key, b_key, jk) = match side {
            Side::A => (own.clone(), lookup(&own, &entity.name), own.clone()),
            Side::B => (
                lookup(&own, &entity.name),
                own.clone(),
                format!("COALESCE({}, N'B:' + {own})", lookup(&own, &entity.name)),
            ),
        };
        // Parents on side B: the parent's key at A, through the parent's id map.
        let mut ref_cols = String::new();
        if side == Side::B {
            for (i, c) in entity.columns.iter().enumerate() {
                let Some(parent) = &c.parent else { continue };
                let cc = col(c.name(side))?;
                let token = cc
                    .ty
                    .canonical_token(&format!("t.{}", ident(c.name(side))))
                    .ok_or_else(|| {
                        EndpointError::Config(format!(
                            "entity {}, side {side} table {}: column {:?} refers to {parent} but its type {} cannot hold a key",
                            plan.name, plan.table, c.name(side), cc.ty.sql()
                        ))
                    })?;
                ref_cols.push_str(&format!(
                    ", {} AS [r{i}]",
                    lookup(&format!("(N'[' + {token} + N']') {BIN}"), parent)
                ));
            }
        }
        // Looked-up columns on the side of their reference table: the reference row's value
        // (what the other side holds), found by this side's key, as {"v": ...}.
        for (i, c) in entity.columns.iter().enumerate() {
            let Some(l) = c.lookup.as_ref().filter(|l| l.side == side) else {
                continue;
            };
            ref_cols.push_str(&format!(
                ", CONVERT(nvarchar(max), (SELECT TOP (1) r.{} AS [v] FROM {} AS r WHERE r.{} = t.{} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) AS [l{i}]",
                ident(&l.value),
                table(&l.table),
                ident(&l.key),
                ident(c.name(side))
            ));
        }
        let mut vars = schema_vars(&ep.config.side(side).schema, side);
        let schema = ident(&ep.config.side(side).schema);
        // The keyset position, typed as the key columns (a max-length text as the longest a
        // sql_variant holds: keys are at most 700 characters).
        let key_vars: Vec<String> = key_types
            .iter()
            .map(|(_, c, _)| match c.ty.family() {
                Family::Str {
                    unicode: true,
                    chars: None,
                } => "nvarchar(4000)".to_string(),
                Family::Str {
                    unicode: false,
                    chars: None,
                } => "varchar(8000)".to_string(),
                _ => c.ty.sql(),
            })
            .collect();
        let filled = |text: String, vars: &[(&str, String)]| fill(&text, vars);
        let (a_key, b_key, jk, ref_cols) = (
            filled(a_key, &vars)?,
            filled(b_key, &vars)?,
            filled(jk, &vars)?,
            filled(ref_cols, &vars)?,
        );
        vars.extend([
            ("table", t.clone()),
            ("table_ctx_lit", literal(&t)),
            ("entity_lit", literal(&entity.name)),
            (
                "native_key_t",
                format!(
                    "CONVERT(nvarchar(max), (SELECT {} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES)) {BIN}",
                    joined(
                        ts.key
                            .iter()
                            .enumerate()
                            .map(|(n, k)| format!("t.{} AS [k{}]", ident(k), n + 1)),
                        ", "
                    )
                ),
            ),
            ("image_t", image_of_t(entity, side)),
            ("canonical_t", own),
            (
                "with_key",
                joined(
                    key_types
                        .iter()
                        .enumerate()
                        .map(|(i, (_, _, input))| format!("[c{}] {input} '$[{i}]'", i + 1)),
                    ", ",
                ),
            ),
            (
                "t_k_join",
                joined(
                    ts.key
                        .iter()
                        .enumerate()
                        .map(|(i, k)| format!("t.{} = k.[c{}]", ident(k), i + 1)),
                    " AND ",
                ),
            ),
            (
                "key_declare",
                format!(
                    "DECLARE {};",
                    joined(
                        key_vars
                            .iter()
                            .enumerate()
                            .map(|(i, ty)| format!("@k{} {ty}", i + 1)),
                        ", "
                    )
                ),
            ),
            (
                "c_key_cols",
                joined(
                    key_vars
                        .iter()
                        .enumerate()
                        .map(|(i, ty)| format!("[c{}] {ty} NOT NULL", i + 1)),
                    ", ",
                ),
            ),
            (
                "c_key_names",
                joined((1..=ts.key.len()).map(|i| format!("[c{i}]")), ", "),
            ),
            (
                "key_assign",
                joined(
                    (1..=ts.key.len()).map(|i| format!("@k{i} = c.[c{i}]")),
                    ", ",
                ),
            ),
            (
                "key_load",
                joined(
                    key_vars.iter().enumerate().map(|(i, ty)| {
                        format!(
                            "            SELECT @k{n} = CONVERT({ty}, v) FROM {schema}.[backfill_key] WHERE entity = @P1 AND ord = {n};",
                            n = i + 1
                        )
                    }),
                    "\n",
                ),
            ),
            (
                "key_store",
                joined(
                    (1..=ts.key.len()).map(|i| format!("(@P1, {i}, CONVERT(sql_variant, @k{i}))")),
                    ", ",
                ),
            ),
            ("after_key", after_key(&ts.key)),
            (
                "t_key_order",
                joined(ts.key.iter().map(|k| format!("t.{}", ident(k))), ", "),
            ),
            ("a_key_expr", a_key),
            ("b_key_expr", b_key),
            ("jk_expr", jk),
            ("ref_cols", ref_cols),
            ("visible_p1", visible(1)?),
            ("visible_p3", visible(3)?),
        ]);
        // A repair's delete at a side with a soft delete marks the row, as an apply does.
        let delete = match soft {
            None => "DELETE t FROM {{table}} AS t".to_string(),
            Some(sd) => {
                let m = ident(&sd.column);
                let ty = col(&sd.column)?.ty.sql();
                match sd.flag {
                    None => {
                        format!("UPDATE t SET t.{m} = CURRENT_TIMESTAMP FROM {{{{table}}}} AS t")
                    }
                    Some(_) => {
                        format!("UPDATE t SET t.{m} = CONVERT({ty}, @P3) FROM {{{{table}}}} AS t")
                    }
                }
            }
        };
        let delete = fill(&delete, &vars)?;
        vars.push(("delete_from", delete));
        Ok(EntityBulk {
            entity,
            vars,
            deleted_text,
            in_json,
        })
    }

    fn sql(&self, name: &str) -> Result<String, EndpointError> {
        statement(name, &self.vars)
    }
}

/// Keyset pagination: rows whose key comes after (@k1, @k2, ...) in key order.
fn after_key(key: &[String]) -> String {
    let mut arms = Vec::new();
    for i in 0..key.len() {
        let mut parts: Vec<String> = (0..i)
            .map(|j| format!("t.{} = @k{}", ident(&key[j]), j + 1))
            .collect();
        parts.push(format!("t.{} > @k{}", ident(&key[i]), i + 1));
        arms.push(format!("({})", parts.join(" AND ")));
    }
    format!("({})", arms.join(" OR "))
}

fn common(ep: &MsEndpoint, name: &str) -> Result<String, EndpointError> {
    statement(name, &schema_vars(&ep.config.side(ep.side).schema, ep.side))
}

fn get<'r, T: tiberius::FromSql<'r>>(
    r: &'r tiberius::Row,
    i: usize,
    what: &str,
) -> Result<Option<T>, EndpointError> {
    r.try_get::<T, _>(i)
        .map_err(|e| EndpointError::Config(format!("internal: {what}, column {i}: {e}")))
}

impl MsEndpoint {
    /// Runs a statement (or a batch that may open a transaction) and returns its rows.
    async fn bulk_rows(
        &self,
        what: &str,
        transactional: bool,
        sql: &str,
        params: &[&dyn tiberius::ToSql],
    ) -> Result<Vec<tiberius::Row>, EndpointError> {
        let mut conn = self.pool.get().await?;
        let sets = run(
            &mut conn,
            self.pool.rollback_sql(),
            transactional,
            sql,
            params,
        )
        .await
        .map_err(|e| self.pool.error(what, e))?;
        Ok(sets.into_iter().flatten().collect())
    }
}

pub async fn row_count(ep: &MsEndpoint, entity: &str) -> Result<i64, EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let rows = ep
        .bulk_rows(
            &format!("count rows of {}", p.table),
            false,
            &b.sql("row_count")?,
            &[&b.deleted_text.as_str(), &b.in_json.as_str()],
        )
        .await?;
    Ok(match rows.first() {
        Some(r) => get::<i64>(r, 0, "row count")?.unwrap_or(0),
        None => 0,
    })
}

fn entity_plan<'p>(
    plan: &'p super::sql::Plan,
    entity: &str,
) -> Result<&'p EntityPlan, EndpointError> {
    plan.entities
        .get(entity)
        .ok_or_else(|| EndpointError::Config(format!("no entity {entity:?} in the config")))
}

pub async fn progress(ep: &MsEndpoint, entity: &str) -> Result<BackfillProgress, EndpointError> {
    let sql = common(ep, "backfill_get")?;
    let rows = ep
        .bulk_rows("read backfill progress", false, &sql, &[&entity])
        .await?;
    Ok(match rows.first() {
        Some(r) => BackfillProgress {
            started: true,
            rows_done: get::<i64>(r, 1, "backfill progress")?.unwrap_or(0),
            finished: get::<bool>(r, 2, "backfill progress")?.unwrap_or(false),
        },
        None => BackfillProgress::default(),
    })
}

pub async fn reset(ep: &MsEndpoint, entity: &str) -> Result<(), EndpointError> {
    let sql = common(ep, "backfill_reset")?;
    ep.bulk_rows("reset backfill progress", false, &sql, &[&entity])
        .await?;
    Ok(())
}

pub async fn chunk(
    ep: &MsEndpoint,
    entity: &str,
    size: usize,
) -> Result<BackfillChunk, EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let limit = i64::try_from(size.max(1)).unwrap_or(i64::MAX);
    let rows = ep
        .bulk_rows(
            &format!("backfill {} (entity {entity})", p.table),
            true,
            &b.sql("backfill_chunk")?,
            &[
                &entity,
                &limit,
                &b.deleted_text.as_str(),
                &b.in_json.as_str(),
            ],
        )
        .await?;
    let r = rows.last().ok_or_else(|| {
        EndpointError::Config(format!(
            "internal: backfill of {} returned no result",
            p.table
        ))
    })?;
    let n = get::<i64>(r, 0, "backfill chunk")?.unwrap_or(0);
    Ok(BackfillChunk {
        rows: u64::try_from(n).unwrap_or(0),
        min_seq: get::<i64>(r, 1, "backfill chunk")?,
        max_seq: get::<i64>(r, 2, "backfill chunk")?,
        finished: get::<bool>(r, 3, "backfill chunk")?.unwrap_or(false),
    })
}

pub async fn pending_between(ep: &MsEndpoint, min: i64, max: i64) -> Result<Queued, EndpointError> {
    let sql = common(ep, "pending_between")?;
    let rows = ep
        .bulk_rows("count queued changes", false, &sql, &[&min, &max])
        .await?;
    Ok(match rows.first() {
        Some(r) => Queued {
            eligible: get::<i64>(r, 0, "queued changes")?.unwrap_or(0),
            retrying: get::<i64>(r, 1, "queued changes")?.unwrap_or(0),
            suspended: get::<i64>(r, 2, "queued changes")?.unwrap_or(0),
        },
        None => Queued::default(),
    })
}

/// Streams every record of the entity into `fold`, in A's shape (see `verify_rows`).
async fn stream_records(
    ep: &MsEndpoint,
    entity: &str,
    fold: &mut Fold,
) -> Result<(), EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let sql = b.sql("verify_rows")?;
    let side = ep.side;
    let what = format!("verify {} (entity {entity})", p.table);
    let mut conn = ep.pool.get().await?;
    // Until the stream is read to its end the connection is mid-result: dropped half-way (an
    // error, a cancelled verify), the pool discards it.
    conn.tx = TxState::Open;
    {
        let stream = conn
            .client
            .simple_query(sql.as_str())
            .await
            .map_err(|e| ep.pool.error(&what, e))?;
        let mut rows = stream.into_row_stream();
        while let Some(r) = rows.try_next().await.map_err(|e| ep.pool.error(&what, e))? {
            let a_key = get::<&str>(&r, 0, &what)?.map(str::to_string);
            let b_key = get::<&str>(&r, 1, &what)?.map(str::to_string);
            let jk = get::<&str>(&r, 2, &what)?.unwrap_or_default().to_string();
            let img = get::<&str>(&r, 3, &what)?.unwrap_or("{}");
            let image: Image = serde_json::from_str(img).map_err(|e| {
                EndpointError::Config(format!(
                    "{what}: the image of record {} is not a JSON object ({e}): {img}",
                    a_key.as_deref().or(b_key.as_deref()).unwrap_or("?")
                ))
            })?;
            // A soft-deleted row, or one outside the filter, is absent (decided on the image
            // as the mapping decides at claim: verify_rows streams without parameters).
            if b.entity.hidden(side, &image) {
                continue;
            }
            let mut values = Vec::with_capacity(b.entity.columns.len());
            for (i, c) in b.entity.columns.iter().enumerate() {
                let name = c.name(side);
                let raw = image.get(name).cloned().unwrap_or(Value::Null);
                let v = match p.by_name.get(name) {
                    Some(col) => col.ty.decode(&raw).unwrap_or(raw),
                    None => raw,
                };
                let text: Option<String> = if v.is_null() {
                    None
                } else if c.parent.is_some() {
                    match side {
                        Side::A => Some(format!("[{v}]")),
                        Side::B => {
                            // Columns after the four fixed ones: r{i} in column order.
                            let at = 4 + b.entity.columns[..i]
                                .iter()
                                .filter(|x| x.parent.is_some())
                                .count();
                            match get::<&str>(&r, at, &what)? {
                                Some(k) => Some(k.to_string()),
                                None => Some(format!("?{v}")),
                            }
                        }
                    }
                } else if c.lookup.as_ref().is_some_and(|l| l.side == side) {
                    // After the four fixed ones and the parents (on side B): l{i} in order.
                    let refs = if side == Side::B {
                        b.entity
                            .columns
                            .iter()
                            .filter(|x| x.parent.is_some())
                            .count()
                    } else {
                        0
                    };
                    let at = 4
                        + refs
                        + b.entity.columns[..i]
                            .iter()
                            .filter(|x| x.lookup.as_ref().is_some_and(|l| l.side == side))
                            .count();
                    let found = get::<&str>(&r, at, &what)?
                        .and_then(|j| serde_json::from_str::<Value>(j).ok())
                        .and_then(|mut o| o.get_mut("v").map(Value::take));
                    match found {
                        Some(v) => Some(v.to_string()),
                        None => Some(format!("?{v}")),
                    }
                } else if c.converted() {
                    // Compared in B's terms, the way apply's lossy rule compares.
                    Some(canonical(c, side, &v).to_string())
                } else if let Some(map) = &c.values {
                    let t = value_text(&v).unwrap_or_default();
                    let mapped = match side {
                        Side::A => t,
                        Side::B => map
                            .pairs
                            .iter()
                            .find(|(_, bv)| value_text(bv).as_deref() == Some(t.as_str()))
                            .and_then(|(av, _)| value_text(av))
                            .unwrap_or_else(|| format!("\u{1}{t}")),
                    };
                    Some(Value::String(mapped).to_string())
                } else {
                    Some(v.to_string())
                };
                values.push(normalize_text(text.as_deref()));
            }
            fold.add(a_key, b_key, jk, &values);
        }
    }
    conn.tx = TxState::Idle;
    Ok(())
}

pub async fn buckets(
    ep: &MsEndpoint,
    entity: &str,
    n: i32,
) -> Result<Vec<BucketHash>, EndpointError> {
    let mut fold = Fold::new(n, None);
    stream_records(ep, entity, &mut fold).await?;
    Ok(fold.buckets())
}

pub async fn records(
    ep: &MsEndpoint,
    entity: &str,
    n: i32,
    which: &[i32],
) -> Result<Vec<RecordHash>, EndpointError> {
    let mut fold = Fold::new(n, Some(which));
    stream_records(ep, entity, &mut fold).await?;
    Ok(fold.records())
}

/// Which of these join keys have changes in this side's outbox. Join keys are A's keys; on
/// side B they are translated to B's keys through the id map first (`B:` keys are B's own).
pub async fn in_flight(
    ep: &MsEndpoint,
    entity: &str,
    join_keys: &[String],
) -> Result<HashSet<String>, EndpointError> {
    let mut out = HashSet::new();
    if join_keys.is_empty() {
        return Ok(out);
    }
    // (own key, join key)
    let mut own: Vec<(Key, String)> = Vec::new();
    match ep.side {
        Side::A => {
            for jk in join_keys {
                if let Ok(k) = Key::parse(jk) {
                    own.push((k, jk.clone()));
                }
            }
        }
        Side::B => {
            let mut peers: Vec<&str> = Vec::new();
            for jk in join_keys {
                match jk.strip_prefix("B:") {
                    Some(b) => {
                        if let Ok(k) = Key::parse(b) {
                            own.push((k, jk.clone()));
                        }
                    }
                    None => peers.push(jk),
                }
            }
            if !peers.is_empty() {
                let json = serde_json::to_string(&peers).unwrap_or_else(|_| "[]".into());
                let sql = common(ep, "links_by_peer")?;
                for r in ep
                    .bulk_rows(
                        "look for changes in flight",
                        false,
                        &sql,
                        &[&entity, &json.as_str()],
                    )
                    .await?
                {
                    let (Some(peer), Some(k)) = (
                        get::<&str>(&r, 0, "links by peer")?,
                        get::<&str>(&r, 1, "links by peer")?,
                    ) else {
                        continue;
                    };
                    if let Ok(k) = Key::parse(k) {
                        own.push((k, peer.to_string()));
                    }
                }
            }
        }
    }
    let keys: Vec<Key> = own.iter().map(|(k, _)| k.clone()).collect();
    let flying = crate::endpoint::Source::in_flight(ep, entity, &keys).await?;
    for (k, jk) in own {
        if flying.contains(&k) {
            out.insert(jk);
        }
    }
    Ok(out)
}

pub async fn fetch_image(
    ep: &MsEndpoint,
    entity: &str,
    key: &Key,
) -> Result<Option<Image>, EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let rows = ep
        .bulk_rows(
            &format!("read {} {key} (entity {entity})", p.table),
            false,
            &b.sql("fetch_image")?,
            &[&key.as_str()],
        )
        .await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let Some(native) = get::<&str>(r, 0, "fetch image")? else {
        return Ok(None);
    };
    Ok(serde_json::from_str(&super::canonical_image(p, native)).ok())
}

pub async fn fetch_images(
    ep: &MsEndpoint,
    entity: &str,
    keys: &[Key],
) -> Result<HashMap<Key, Image>, EndpointError> {
    let mut out = HashMap::new();
    if keys.is_empty() {
        return Ok(out);
    }
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let texts: Vec<&str> = keys.iter().map(Key::as_str).collect();
    let json = serde_json::to_string(&texts).unwrap_or_else(|_| "[]".into());
    let rows = ep
        .bulk_rows(
            &format!(
                "read {} records of {} (entity {entity})",
                keys.len(),
                p.table
            ),
            false,
            &b.sql("fetch_images")?,
            &[&json.as_str()],
        )
        .await?;
    for r in &rows {
        let (Some(k), Some(native)) = (
            get::<&str>(r, 0, "fetch images")?,
            get::<&str>(r, 1, "fetch images")?,
        ) else {
            continue;
        };
        if let (Ok(k), Ok(img)) = (
            Key::parse(k),
            serde_json::from_str::<Image>(&super::canonical_image(p, native)),
        ) {
            out.insert(k, img);
        }
    }
    Ok(out)
}

pub async fn requeue(
    ep: &MsEndpoint,
    entity: &str,
    key: &Key,
    op: Op,
) -> Result<u64, EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let code = op.code().to_string();
    let rows = ep
        .bulk_rows(
            &format!("queue {} {key} for re-sync (entity {entity})", p.table),
            false,
            &b.sql("requeue")?,
            &[&key.as_str(), &entity, &code.as_str()],
        )
        .await?;
    Ok(match rows.last() {
        Some(r) => u64::try_from(get::<i64>(r, 0, "requeue")?.unwrap_or(0)).unwrap_or(0),
        None => 0,
    })
}

pub async fn delete_records(
    ep: &MsEndpoint,
    entity: &str,
    keys: &[Key],
) -> Result<u64, EndpointError> {
    let plan = ep.plan().await?;
    let p = entity_plan(&plan, entity)?;
    let b = EntityBulk::new(ep, p)?;
    let sql = b.sql("delete_record")?;
    let mut n = 0;
    for k in keys {
        let rows = ep
            .bulk_rows(
                &format!("delete {k} from {} (entity {entity})", p.table),
                true,
                &sql,
                &[&k.as_str(), &entity, &b.deleted_text.as_str()],
            )
            .await?;
        if let Some(r) = rows.last() {
            n += u64::try_from(get::<i64>(r, 0, "delete")?.unwrap_or(0)).unwrap_or(0);
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_statement_is_there() {
        let s = sections(BULK);
        for n in [
            "backfill_get",
            "backfill_reset",
            "pending_between",
            "links_by_peer",
            "row_count",
            "backfill_chunk",
            "requeue",
            "fetch_image",
            "fetch_images",
            "delete_record",
            "verify_rows",
        ] {
            assert!(s.contains_key(n), "{n}");
            assert!(!s[n].contains("-- name:"), "{n}");
        }
    }

    #[test]
    fn keyset_pagination_orders_by_every_key_column() {
        assert_eq!(after_key(&["A".into()]), "((t.[A] > @k1))");
        assert_eq!(
            after_key(&["A".into(), "B]".into()]),
            "((t.[A] > @k1) OR (t.[A] = @k1 AND t.[B]]] > @k2))"
        );
    }
}
