//! The PostgreSQL SQL tandem runs, from the reviewable templates in `sql/postgres/`, filled
//! only with identifiers quoted here (values always travel as parameters).

use std::collections::HashMap;

use crate::config::{Config, Entity, KeyFrom, Side, TableName};
use crate::endpoint::template::{self, fill};
use crate::endpoint::EndpointError;

const INSTALL: &str = include_str!("../../../sql/postgres/install.sql");
const INSTALL_END: &str = include_str!("../../../sql/postgres/install_end.sql");
const TRIGGER: &str = include_str!("../../../sql/postgres/trigger.sql");
const UNINSTALL: &str = include_str!("../../../sql/postgres/uninstall.sql");
const STATEMENTS: &str = include_str!("../../../sql/postgres/statements.sql");

/// `name` as a PostgreSQL identifier: always quoted, so case, spaces and quotes survive.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as a string literal (standard_conforming_strings, the default since 9.1).
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A table name, schema-qualified when the config gives a schema.
pub fn table(t: &TableName) -> String {
    match &t.schema {
        Some(s) => format!("{}.{}", ident(s), ident(&t.name)),
        None => ident(&t.name),
    }
}

fn list(cols: &[String], prefix: &str, suffix: &str) -> String {
    cols.iter()
        .map(|c| format!("{prefix}{}{suffix}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `-- name: X` sections of statements.sql.
fn sections() -> HashMap<&'static str, &'static str> {
    template::sections(STATEMENTS)
}

/// The look-up through reference table `t`: rows whose `by` is one of `$1` (text), with `out`
/// (see `endpoint::Reference`).
pub fn look_up(t: &TableName, by: &str, out: &str) -> Result<String, EndpointError> {
    let s = sections();
    let text = s
        .get("look_up")
        .ok_or_else(|| EndpointError::Config("internal: statement look_up missing".into()))?;
    fill(
        text,
        &[("table", table(t)), ("by", ident(by)), ("out", ident(out))],
    )
}

/// Statements shared by all entities, for one side.
#[derive(Debug, Clone)]
pub struct Common {
    pub mark_table: String,
    pub claim: String,
    pub claim_batch: String,
    pub fingerprint_save: String,
    pub fingerprint_list: String,
    pub record_lock: String,
    pub link_by_peer: String,
    pub ref_by_peer: String,
    pub unlink_own: String,
    pub link_applied: String,
    pub links_by_own: String,
    pub unlink_peer: String,
    pub link_written_back: String,
    pub repoint_link: String,
    pub retire_unpeered: String,
    pub peer_tombstone: String,
    pub born_again: String,
    pub done: String,
    pub settled_now: String,
    pub failed: String,
    pub status_outbox: String,
    pub status_links: String,
    pub install_state: String,
    pub table_columns: String,
    pub table_unique_keys: String,
    pub table_exists: String,
    pub sequence_exists: String,
    pub local_pending: String,
    pub settle_moot: String,
    pub local_reinsert: String,
    pub local_redelete: String,
    pub conflict_log: String,
    pub link_seen: String,
    pub supersede: String,
    pub in_flight: String,
    pub mark_sent: String,
    pub own_pending_sent: String,
    pub suspended_list: String,
    pub resubmit: String,
    pub discard: String,
    pub status_conflicts: String,
    pub backfill_get: String,
    pub backfill_reset: String,
    pub backfill_progress: String,
    pub pending_between: String,
    pub link_mark_deleted: String,
    pub wave_record_locks: String,
    pub wave_links: String,
    pub wave_parent_links: String,
    pub wave_local_pending: String,
    pub wave_link_applied: String,
    pub wave_link_written_back: String,
}

/// Statements for one entity's table on one side.
#[derive(Debug, Clone)]
pub struct EntitySql {
    /// The table as the config names it (for messages).
    pub table: String,
    /// The table quoted for SQL.
    pub table_sql: String,
    /// This side's key columns.
    pub key: Vec<String>,
    /// Whether this side's key comes from the other side.
    pub key_given: bool,
    /// No entity refers to this one and deletes here are real ones (no `soft_delete`): a row
    /// tandem removes takes nothing else with it.
    pub leaf: bool,
    pub row_lock: String,
    /// None when no column besides the key is mapped.
    pub row_update: Option<String>,
    pub row_insert: String,
    /// A delete: a DELETE, or with `soft_delete` here, the UPDATE that marks the row.
    pub row_delete: String,
    /// With a flag `soft_delete` here: its column and deleted value, added to a delete's
    /// payload (values travel as parameters).
    pub soft_mark: Option<(String, serde_json::Value)>,
    /// With `soft_delete` or `filter` here: the parameter of `{{visible}}` (JSON text: the
    /// flag's deleted value and the filter's values), passed last to backfill_chunk,
    /// row_count, verify_buckets, verify_records and verify_values. None: they take none.
    pub visible_param: Option<String>,
    /// When the side has a `peer_id_column`.
    pub peer_update: Option<String>,
    pub wave_row_locks: String,
    /// None when no column besides the key is mapped.
    pub wave_update: Option<String>,
    pub wave_insert: String,
    /// As `row_delete`, set-based.
    pub wave_delete: String,
    pub key_default: String,
    /// `key_from`: (a lock to take first, the statement drawing $1 keys).
    pub key_from: Option<(Option<String>, String)>,
    /// When the side has a `peer_id_column`.
    pub wave_peer_update: Option<String>,
    pub row_count: String,
    pub backfill_chunk: String,
    pub requeue: String,
    /// One per ref column: (the parent entity, the statement queueing again this entity's
    /// rows under one parent record, marked derived).
    pub children_resend: Vec<(String, String)>,
    /// A second copy of a record left by a lost reply goes (`drop_duplicate`), unless rows here
    /// refer to it: None with a soft delete here (they stay).
    pub drop_duplicate: Option<String>,
    /// The local row holding the incoming values of the other side's key (`natural_holder`):
    /// only where that key is given by values there and keys are drawn here.
    pub natural_holder: Option<String>,
    /// Whether the record's row holds the incoming values of the other side's key
    /// (`holds_natural`): where that key is given by values there and keys are drawn here.
    pub holds_natural: Option<String>,
    pub fetch_image: String,
    pub fetch_images: String,
    pub verify_buckets: String,
    pub verify_records: String,
    pub verify_in_flight: String,
    /// verify across dialects: keys and one value text per column, hashed by tandem.
    pub verify_values: String,
}

/// Every statement one side needs.
#[derive(Debug, Clone)]
pub struct Sql {
    pub common: Common,
    pub entities: HashMap<String, EntitySql>,
}

fn schema_vars(schema: &str, side: Side) -> Vec<(&'static str, String)> {
    let (own, peer) = match side {
        Side::A => ("a_key", "b_key"),
        Side::B => ("b_key", "a_key"),
    };
    vec![
        ("schema", ident(schema)),
        ("schema_ident_lit", literal(&ident(schema))),
        ("schema_name_lit", literal(schema)),
        ("own", own.to_string()),
        ("peer", peer.to_string()),
        (
            "install_format",
            crate::endpoint::INSTALL_FORMAT.to_string(),
        ),
    ]
}

impl Sql {
    /// Builds every statement for `side` of `config`.
    pub fn build(config: &Config, side: Side) -> Result<Sql, EndpointError> {
        let schema = &config.side(side).schema;
        if schema.contains('$') {
            // Function bodies are dollar-quoted.
            return Err(EndpointError::Config(format!(
                "side {side}: schema name {schema:?} must not contain '$'"
            )));
        }
        let vars = schema_vars(schema, side);
        let s = sections();
        let get = |name: &str| -> Result<String, EndpointError> {
            let t = s.get(name).ok_or_else(|| {
                EndpointError::Config(format!("internal: statement {name} missing"))
            })?;
            fill(t, &vars)
        };
        let common = Common {
            mark_table: get("mark_table")?,
            claim: get("claim")?,
            claim_batch: get("claim_batch")?,
            fingerprint_save: get("fingerprint_save")?,
            fingerprint_list: get("fingerprint_list")?,
            record_lock: get("record_lock")?,
            link_by_peer: get("link_by_peer")?,
            ref_by_peer: get("ref_by_peer")?,
            unlink_own: get("unlink_own")?,
            link_applied: get("link_applied")?,
            links_by_own: get("links_by_own")?,
            unlink_peer: get("unlink_peer")?,
            link_written_back: get("link_written_back")?,
            repoint_link: get("repoint_link")?,
            retire_unpeered: get("retire_unpeered")?,
            peer_tombstone: get("peer_tombstone")?,
            born_again: get("born_again")?,
            done: get("done")?,
            settled_now: get("settled_now")?,
            failed: get("failed")?,
            status_outbox: get("status_outbox")?,
            status_links: get("status_links")?,
            install_state: get("install_state")?,
            table_columns: get("table_columns")?,
            table_unique_keys: get("table_unique_keys")?,
            table_exists: get("table_exists")?,
            sequence_exists: get("sequence_exists")?,
            local_pending: get("local_pending")?,
            settle_moot: get("settle_moot")?,
            local_reinsert: get("local_reinsert")?,
            local_redelete: get("local_redelete")?,
            conflict_log: get("conflict_log")?,
            link_seen: get("link_seen")?,
            supersede: get("supersede")?,
            in_flight: get("in_flight")?,
            mark_sent: get("mark_sent")?,
            own_pending_sent: get("own_pending_sent")?,
            suspended_list: get("suspended_list")?,
            resubmit: get("resubmit")?,
            discard: get("discard")?,
            status_conflicts: get("status_conflicts")?,
            backfill_get: get("backfill_get")?,
            backfill_reset: get("backfill_reset")?,
            backfill_progress: get("backfill_progress")?,
            pending_between: get("pending_between")?,
            link_mark_deleted: get("link_mark_deleted")?,
            wave_record_locks: get("wave_record_locks")?,
            wave_links: get("wave_links")?,
            wave_parent_links: get("wave_parent_links")?,
            wave_local_pending: get("wave_local_pending")?,
            wave_link_applied: get("wave_link_applied")?,
            wave_link_written_back: get("wave_link_written_back")?,
        };
        let mut entities = HashMap::new();
        for e in &config.entities {
            let leaf = !config.is_referenced(&e.name);
            // A row of this entity that child rows here refer to is not a second copy to drop.
            let no_children =
                crate::endpoint::template::no_children(config, &e.name, side, ident, table);
            let mut v = vars.clone();
            v.push(("no_children", no_children));
            entities.insert(e.name.clone(), entity_sql(e, side, leaf, &s, &v)?);
        }
        Ok(Sql { common, entities })
    }
}

fn entity_sql(
    e: &Entity,
    side: Side,
    leaf: bool,
    s: &HashMap<&'static str, &'static str>,
    base: &[(&'static str, String)],
) -> Result<EntitySql, EndpointError> {
    let ts = e.side(side);
    let key = ts.key.clone();
    let key_given = e.key_is_given(side);
    // Written here: the columns that travel here, the peer id column, the constants (on
    // insert only).
    let mut cols: Vec<String> = e
        .written_columns(side)
        .map(|c| c.name(side).to_string())
        .collect();
    if let Some(p) = &ts.peer_id_column {
        cols.push(p.clone());
    }
    // A soft delete's mark is written live (NULL, or the flag's `live`) on insert and update:
    // a record the other side has is not deleted here.
    if let Some(sd) = e.soft_delete_at(side) {
        cols.push(sd.column.clone());
    }
    let set_cols: Vec<String> = cols.iter().filter(|c| !key.contains(c)).cloned().collect();
    cols.extend(
        e.constants_at(side)
            .map(|k| k.column.clone())
            .filter(|k| !cols.contains(k))
            .collect::<Vec<_>>(),
    );
    let mut insert_cols = cols.clone();
    insert_cols.extend(key.iter().filter(|k| !cols.contains(k)).cloned());
    // Where the other side's key is given by values, the columns here it maps to: a natural
    // unique key here (tandem finds records by it).
    let natural: Vec<String> = if e.key_is_given(side.other()) {
        e.side(side.other())
            .key
            .iter()
            .filter_map(|k| e.columns.iter().find(|c| c.name(side.other()) == k))
            .map(|c| c.name(side).to_string())
            .collect()
    } else {
        Vec::new()
    };
    let mut vars = base.to_vec();
    vars.extend([
        ("t_natural", list(&natural, "t.", "")),
        ("r_natural", list(&natural, "r.", "")),
        ("table", table(&ts.table)),
        ("t_key", list(&key, "t.", "")),
        ("r_key", list(&key, "r.", "")),
        ("key", list(&key, "", "")),
        ("cols", list(&cols, "", "")),
        ("insert_cols", list(&insert_cols, "", "")),
        ("r_insert_cols", list(&insert_cols, "r.", "")),
        ("table_lit", literal(&table(&ts.table))),
        (
            "key_lit",
            literal(key.first().map(String::as_str).unwrap_or("")),
        ),
        ("r_cols", list(&cols, "r.", "")),
        (
            "set_list",
            set_cols
                .iter()
                .map(|c| format!("{} = r.{}", ident(c), ident(c)))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        ("t_cols_text", list(&set_cols, "t.", "::text")),
        ("r_cols_text", list(&set_cols, "r.", "::text")),
        (
            "peer_col",
            ts.peer_id_column.as_deref().map(ident).unwrap_or_default(),
        ),
    ]);
    for (name, expr) in verify_vars(e, side) {
        vars.push((name, fill(&expr, base)?));
    }
    let soft = e.soft_delete_at(side);
    if let Some(sd) = soft {
        let m = ident(&sd.column);
        let (set, live) = match &sd.flag {
            None => (format!("{m} = CURRENT_TIMESTAMP"), format!("t.{m} IS NULL")),
            Some(_) => (
                format!("{m} = r.{m}"),
                format!("t.{m} IS DISTINCT FROM r.{m}"),
            ),
        };
        vars.push(("soft_set", set));
        vars.push(("soft_live", live));
    }
    let (visible, visible_param) = visible(e, side);
    // `{{visible}}` refers to parameter $n: the statement's last.
    let get_n = |name: &str, n: Option<usize>| -> Result<String, EndpointError> {
        let t = s
            .get(name)
            .ok_or_else(|| EndpointError::Config(format!("internal: statement {name} missing")))?;
        let mut v = vars.clone();
        v.push(("visible", visible(n.unwrap_or(0))));
        fill(t, &v)
    };
    let get = |name: &str| get_n(name, None);
    let rows_at = |n: usize| get_n("verify_rows", Some(n));
    let with_rows = |name: &str, n: usize| -> Result<String, EndpointError> {
        let t = s
            .get(name)
            .ok_or_else(|| EndpointError::Config(format!("internal: statement {name} missing")))?;
        let mut v = vars.clone();
        v.push(("verify_rows", rows_at(n)?));
        fill(t, &v)
    };
    let delete = if soft.is_some() {
        "row_soft_delete"
    } else {
        "row_delete"
    };
    let wave_delete = if soft.is_some() {
        "wave_soft_delete"
    } else {
        "wave_delete"
    };
    Ok(EntitySql {
        wave_row_locks: get("wave_row_locks")?,
        wave_update: if set_cols.is_empty() {
            None
        } else {
            Some(get("wave_update")?)
        },
        wave_insert: get("wave_insert")?,
        wave_delete: get(wave_delete)?,
        key_default: get("key_default")?,
        key_from: match &ts.key_from {
            None => None,
            Some(KeyFrom::Sequence(seq)) => {
                let mut v = vars.clone();
                v.push(("sequence_lit", literal(&table(seq))));
                let t = s.get("key_from_sequence").ok_or_else(|| {
                    EndpointError::Config("internal: statement key_from_sequence missing".into())
                })?;
                Some((None, fill(t, &v)?))
            }
            Some(KeyFrom::MaxPlusOne) => {
                Some((Some(get("key_from_max_lock")?), get("key_from_max")?))
            }
        },
        wave_peer_update: match &ts.peer_id_column {
            Some(_) => Some(get("wave_peer_update")?),
            None => None,
        },
        row_count: get_n("row_count", Some(1))?,
        backfill_chunk: get_n("backfill_chunk", Some(4))?,
        requeue: get("requeue")?,
        children_resend: e
            .columns
            .iter()
            .filter(|_| e.direction.flows(side))
            .filter_map(|c| c.parent.as_ref().map(|p| (p, c.name(side))))
            .map(|(parent, col)| {
                let t = s.get("children_resend").ok_or_else(|| {
                    EndpointError::Config("internal: statement children_resend missing".into())
                })?;
                let mut v = vars.clone();
                v.push(("ref", ident(col)));
                v.push(("ref_lit", literal(col)));
                v.push(("visible", visible(3)));
                v.push(("key_given", key_given.to_string()));
                Ok((parent.clone(), fill(t, &v)?))
            })
            .collect::<Result<_, EndpointError>>()?,
        leaf: leaf && soft.is_none(),
        drop_duplicate: if soft.is_none() {
            Some(get("drop_duplicate")?)
        } else {
            None
        },
        natural_holder: if !key_given && !natural.is_empty() {
            Some(get("natural_holder")?)
        } else {
            None
        },
        holds_natural: if !key_given && !natural.is_empty() {
            Some(get("holds_natural")?)
        } else {
            None
        },
        fetch_image: get("fetch_image")?,
        fetch_images: get("fetch_images")?,
        verify_buckets: with_rows("verify_buckets", 2)?,
        verify_records: with_rows("verify_records", 3)?,
        verify_in_flight: get("verify_in_flight")?,
        verify_values: get_n("verify_values", Some(1))?,
        table: ts.table.to_string(),
        table_sql: table(&ts.table),
        key,
        key_given,
        row_lock: get("row_lock")?,
        row_update: if set_cols.is_empty() {
            None
        } else {
            Some(get("row_update")?)
        },
        row_insert: get("row_insert")?,
        row_delete: get(delete)?,
        soft_mark: soft.and_then(|sd| {
            sd.flag
                .as_ref()
                .map(|(deleted, _)| (sd.column.clone(), deleted.clone()))
        }),
        visible_param,
        peer_update: match &ts.peer_id_column {
            Some(_) => Some(get("peer_update")?),
            None => None,
        },
    })
}

/// The rows of `side` the entity shows (`{{visible}}`, over table alias `t`): with a soft
/// delete there, those not marked; with a filter there, those whose column holds one of its
/// values (compared as text, as the mapping compares them). The values travel in one
/// parameter, a JSON text ({"deleted": flag value, "in": [filter values]}): returned with a
/// function giving the predicate for parameter number n. Without either, the predicate is
/// TRUE and there is no parameter.
#[allow(clippy::type_complexity)]
fn visible(e: &Entity, side: Side) -> (Box<dyn Fn(usize) -> String + '_>, Option<String>) {
    let soft = e.soft_delete_at(side);
    let filter = e.filter.as_ref().filter(|f| f.side == side);
    if soft.is_none() && filter.is_none() {
        return (Box::new(|_| "TRUE".to_string()), None);
    }
    let text = |v: &serde_json::Value| crate::model::value_text(v);
    let param = serde_json::json!({
        "deleted": soft.and_then(|s| s.flag.as_ref()).and_then(|(d, _)| text(d)),
        "in": filter.map(|f| f.values.iter().filter_map(text).collect::<Vec<_>>()).unwrap_or_default(),
    });
    let predicate = move |n: usize| {
        let mut parts = vec![format!("${n}::text IS NOT NULL")];
        if let Some(sd) = soft {
            let m = ident(&sd.column);
            parts.push(match &sd.flag {
                None => format!("t.{m} IS NULL"),
                Some(_) => {
                    format!("t.{m}::text IS DISTINCT FROM (${n}::text::jsonb ->> 'deleted')")
                }
            });
        }
        if let Some(f) = filter {
            parts.push(format!(
                "t.{}::text IN (SELECT jsonb_array_elements_text(${n}::text::jsonb -> 'in'))",
                ident(&f.column)
            ));
        }
        format!("({})", parts.join(" AND "))
    };
    (Box::new(predicate), Some(param.to_string()))
}

impl EntitySql {
    /// The payload of `row_delete` / `wave_delete` for the record `k`: its key columns, and
    /// with a flag soft delete here the flag's deleted value.
    pub fn delete_object(&self, k: &crate::model::Key) -> crate::model::Image {
        let mut obj = k.to_object(&self.key);
        if let Some((column, value)) = &self.soft_mark {
            obj.insert(column.clone(), value.clone());
        }
        obj
    }
}

/// A key as id_map stores it (a compact JSON array), computed from columns of `t`.
fn compact_key(cols: &[String]) -> String {
    let parts: Vec<String> = cols
        .iter()
        .map(|c| format!("to_jsonb(t.{})::text", ident(c)))
        .collect();
    format!("('[' || concat_ws(',', {}) || ']')", parts.join(", "))
}

/// The compact form of a JSON array column (the outbox's `key`).
fn compact_json(expr: &str) -> String {
    format!(
        "('[' || (SELECT string_agg(x.e::text, ',' ORDER BY x.n) \
         FROM jsonb_array_elements({expr}) WITH ORDINALITY AS x(e, n)) || ']')"
    )
}

/// A column's value as verify compares it, the way apply finds a target already holding it:
/// its JSON text, a number by its value (`31`, `31.00` and a real's `31` alike: apply writes
/// nothing when a numeric(10,2) holds 31.00 and 31 arrives, so verify must not report it);
/// the same form `verify_hash::normalize` gives across dialects. (Instants are rendered in
/// UTC by the verify session.)
fn comparable_json(col: &str) -> String {
    format!(
        "CASE WHEN jsonb_typeof(to_jsonb({col})) = 'number' \
         THEN regexp_replace(regexp_replace((to_jsonb({col})::text)::numeric::text, \
         '(\\.[0-9]*[1-9])0+$', '\\1'), '\\.0+$', '') \
         ELSE to_jsonb({col})::text END"
    )
}

/// Expressions that put a record of `side` into one comparable shape (A's): keys as id_map
/// texts, codes as A's codes, parents by A's key.
fn verify_vars(e: &Entity, side: Side) -> Vec<(&'static str, String)> {
    let ts = e.side(side);
    let own_key = compact_key(&ts.key);
    let entity = literal(&e.name);
    let lookup = |own_expr: &str, entity: &str| {
        format!(
            "(SELECT m.{{{{peer}}}} FROM {{{{schema}}}}.id_map AS m \
             WHERE m.entity = {entity} AND m.{{{{own}}}} = {own_expr} AND NOT m.deleted)"
        )
    };
    let (a_key, b_key, jk) = match side {
        Side::A => (own_key.clone(), lookup(&own_key, &entity), own_key.clone()),
        Side::B => (
            lookup(&own_key, &entity),
            own_key.clone(),
            format!("coalesce({}, 'B:' || {own_key})", lookup(&own_key, &entity)),
        ),
    };
    let mut values = Vec::new();
    // The same texts, one per column, for verify across dialects (hashed by tandem).
    let mut raw: Vec<String> = Vec::new();
    for c in &e.columns {
        let col = format!("t.{}", ident(c.name(side)));
        let expr = if c.converted() {
            // Its JSON as it is: tandem converts and compares it (`verify_hash::comparable`).
            format!("to_jsonb({col})::text")
        } else if let Some(l) = c.lookup.as_ref().filter(|l| l.side == side) {
            // The reference row's value (what the other side holds), found by this side's key;
            // a key the table does not have stays apart from every value.
            format!(
                "coalesce((SELECT {} FROM {} AS r WHERE r.{} = {col} LIMIT 1), '?' || to_jsonb({col})::text)",
                comparable_json(&format!("r.{}", ident(&l.value))),
                table(&l.table),
                ident(&l.key)
            )
        } else if let Some(parent) = &c.parent {
            let wrapped = format!("('[' || to_jsonb({col})::text || ']')");
            match side {
                Side::A => wrapped,
                Side::B => format!(
                    "coalesce({}, '?' || to_jsonb({col})::text)",
                    lookup(&wrapped, &literal(parent))
                ),
            }
        } else if let Some(map) = &c.values {
            match side {
                Side::A => format!("to_jsonb({col}::text)::text"),
                Side::B => {
                    let arms: Vec<String> = map
                        .pairs
                        .iter()
                        .filter_map(|(a, b)| {
                            Some(format!(
                                "WHEN {} THEN {}",
                                literal(&crate::model::value_text(b)?),
                                literal(&crate::model::value_text(a)?)
                            ))
                        })
                        .collect();
                    format!(
                        "to_jsonb(CASE {col}::text {} ELSE chr(1) || {col}::text END)::text",
                        arms.join(" ")
                    )
                }
            }
        } else {
            comparable_json(&col)
        };
        values.push(format!("coalesce({expr}, '~')"));
        raw.push(expr);
    }
    let values_expr = if values.is_empty() {
        "''".to_string()
    } else {
        values.join(" || '|' || ")
    };
    let values_array = if raw.is_empty() {
        "'[]'".to_string()
    } else {
        format!("array_to_json(ARRAY[{}]::text[])::text", raw.join(", "))
    };
    let ok = compact_json("o.key");
    let outbox_jk = match side {
        Side::A => ok,
        Side::B => format!(
            "coalesce((SELECT m.{{{{peer}}}} FROM {{{{schema}}}}.id_map AS m \
             WHERE m.entity = o.entity AND m.{{{{own}}}} = {ok} AND NOT m.deleted), 'B:' || {ok})"
        ),
    };
    let image_key = format!(
        "jsonb_build_array({})",
        ts.key
            .iter()
            .map(|k| format!("image -> {}", literal(k)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let image_order_desc = ts
        .key
        .iter()
        .map(|k| {
            format!(
                "(jsonb_populate_record(NULL::{}, image)).{} DESC",
                table(&ts.table),
                ident(k)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    vec![
        ("a_key_expr", a_key),
        ("b_key_expr", b_key),
        ("join_key_expr", jk),
        ("values_expr", values_expr),
        ("values_array", values_array),
        ("outbox_jk", outbox_jk),
        ("image_key", image_key),
        ("image_order_desc", image_order_desc),
    ]
}

/// The name of the capture function generated for `t`, unique per table and the same on every
/// install: `capture_` and the table as the config names it (schema never holds a dot, so the
/// text is unambiguous), cut with a hash of the whole when longer than PostgreSQL's 63 bytes.
pub fn capture_function_name(t: &TableName) -> String {
    const MAX: usize = 63;
    let full = format!("capture_{t}");
    if full.len() <= MAX {
        return full;
    }
    // FNV-1a (64 bits): fixed, so the name stays the same across versions and hosts.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = MAX - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hash:016x}", &full[..cut])
}

/// `text` as a string literal inside a function body, which is parsed again in each session:
/// an escape string when it holds a backslash, so `standard_conforming_strings` cannot change it.
fn body_literal(text: &str) -> String {
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
    } else {
        literal(text)
    }
}

/// A dollar-quote tag that does not occur in `body`.
fn dollar_tag(body: &str) -> String {
    let mut tag = "$fn$".to_string();
    let mut n = 0;
    while body.contains(&tag) {
        n += 1;
        tag = format!("$fn{n}$");
    }
    tag
}

/// The capture function and trigger of one table (sql/postgres/trigger.sql): a block per
/// entity of `captured` (those of `side` that read `t` and whose changes travel).
fn trigger_script(
    config: &Config,
    vars: &[(&'static str, String)],
    t: &TableName,
    captured: &[&Entity],
    side: Side,
) -> Result<String, EndpointError> {
    let schema = &config.side(side).schema;
    let s = template::sections(TRIGGER);
    let section = |name: &str| {
        s.get(name).copied().ok_or_else(|| {
            EndpointError::Config(format!("internal: trigger section {name} missing"))
        })
    };
    // Every entity on this table (whatever its direction): tandem writes the table for each.
    let on_table = config.entities_on(side, t);
    let shared = on_table.len() > 1;
    let mut blocks = Vec::new();
    for e in captured {
        let ts = e.side(side);
        let key = |row: &str| list(&ts.key, &format!("{row}."), "");
        // Tandem's write for another entity of this table is a change for this one.
        let others: Vec<String> = on_table
            .iter()
            .filter(|o| o.name != e.name)
            .map(|o| body_literal(&o.name))
            .collect();
        let others_write = if others.is_empty() {
            String::new()
        } else {
            format!(
                "\n       AND coalesce(current_setting('tandem.entity', true), '') NOT IN ({})",
                others.join(", ")
            )
        };
        // Alone on its table, an entity captures any change of the row; sharing it, only
        // changes of what it reads (the key, its mapped columns, its soft delete's mark and
        // filter column), so tandem's write of
        // another entity's columns is no change of this one.
        let unchanged = if shared {
            // The key, the mapped columns, and a soft delete's mark or a filter's column.
            let read = e.read_columns(side);
            let row = |r: &str| {
                read.iter()
                    .map(|c| format!("{r}.{}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            format!(
                "(ROW({})::record) OPERATOR(pg_catalog.*=) (ROW({})::record)",
                row("NEW"),
                row("OLD")
            )
        } else {
            "NEW OPERATOR(pg_catalog.*=) OLD".to_string()
        };
        let mut v = vars.to_vec();
        v.extend([
            ("entity_comment", e.name.replace(['\n', '\r'], " ")),
            ("entity", body_literal(&e.name)),
            ("new_key", key("NEW")),
            ("old_key", key("OLD")),
            ("others_write", others_write),
            ("unchanged", unchanged),
        ]);
        blocks.push(fill(section("entity")?, &v)?);
    }
    let fname = capture_function_name(t);
    let names: Vec<&str> = captured.iter().map(|e| e.name.as_str()).collect();
    let mut v = vars.to_vec();
    v.push(("function", format!("{}.{}", ident(schema), ident(&fname))));
    v.push((
        "function_comment",
        literal(&format!(
            "tandem: captures changes of {} {} on table {t}",
            if names.len() == 1 {
                "entity"
            } else {
                "entities"
            },
            names.join(", ")
        )),
    ));
    v.push(("table", table(t)));
    v.push(("entities", blocks.join("\n")));
    // The body is dollar-quoted: its tag must not occur in the names written into it.
    let function = section("function")?;
    let unquoted = fill(function, &[v.as_slice(), &[("q", String::new())]].concat())?;
    v.push(("q", dollar_tag(&unquoted)));
    fill(function, &v)
}

/// The complete install script for one side.
pub fn install_script(config: &Config, side: Side) -> Result<String, EndpointError> {
    let schema = &config.side(side).schema;
    let vars = schema_vars(schema, side);
    let mut out = fill(INSTALL, &vars)?;
    for (t, entities) in config.captured_tables(side) {
        out.push('\n');
        out.push_str(&trigger_script(config, &vars, t, &entities, side)?);
    }
    out.push_str(&fill(INSTALL_END, &vars)?);
    Ok(out)
}

/// The uninstall script for one side.
pub fn uninstall_script(config: &Config, side: Side) -> Result<String, EndpointError> {
    fill(UNINSTALL, &schema_vars(&config.side(side).schema, side))
}

/// The statements `run` prepares, for review next to the install script.
pub fn runtime_listing(sql: &Sql) -> String {
    let c = &sql.common;
    let mut out = String::from(
        "\n-- Statements tandem prepares at run time on this side (for review; not run by install):\n",
    );
    let mut add = |name: &str, text: &str| {
        out.push_str(&format!("\n-- {name}\n-- "));
        out.push_str(&text.replace('\n', "\n-- "));
        out.push('\n');
    };
    for (n, t) in [
        ("claim", &c.claim),
        ("mark_sent", &c.mark_sent),
        ("record_lock", &c.record_lock),
        ("link_by_peer", &c.link_by_peer),
        ("link_applied", &c.link_applied),
        ("link_written_back", &c.link_written_back),
        ("local_pending", &c.local_pending),
        ("own_pending_sent", &c.own_pending_sent),
        ("conflict_log", &c.conflict_log),
        ("supersede", &c.supersede),
        ("settled_now", &c.settled_now),
        ("done", &c.done),
        ("failed", &c.failed),
    ] {
        add(n, t);
    }
    add(
        "leadership (side A only, on a connection of its own; see sql/postgres/lease.sql)",
        include_str!("../../../sql/postgres/lease.sql").trim(),
    );
    let mut names: Vec<&String> = sql.entities.keys().collect();
    names.sort();
    for name in names {
        let e = &sql.entities[name];
        add(&format!("{name}: lock"), &e.row_lock);
        if let Some(u) = &e.row_update {
            add(&format!("{name}: update"), u);
        }
        add(&format!("{name}: insert"), &e.row_insert);
        add(&format!("{name}: delete"), &e.row_delete);
        if let Some(p) = &e.peer_update {
            add(&format!("{name}: peer id"), p);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(ident("ORDER_NO"), "\"ORDER_NO\"");
        assert_eq!(ident("a\"b; drop"), "\"a\"\"b; drop\"");
        assert_eq!(literal("it's"), "'it''s'");
        let t = TableName {
            schema: Some("dbo".into()),
            name: "My Table".into(),
        };
        assert_eq!(table(&t), "\"dbo\".\"My Table\"");
    }

    #[test]
    fn every_statement_section_is_found() {
        let s = sections();
        for n in [
            "claim",
            "link_by_peer",
            "row_lock",
            "row_update",
            "row_insert",
            "row_delete",
            "peer_update",
            "table_unique_keys",
        ] {
            assert!(s.contains_key(n), "{n}");
            assert!(!s[n].contains("-- name:"), "{n}");
        }
    }
}
