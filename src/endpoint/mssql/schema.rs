//! The catalog on SQL Server: the column types the endpoint converts images with, and
//! `tandem check` (do the configured tables, columns and keys exist and fit?).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::pool::run;
use super::sql::table;
use super::types::{Column, Family, SqlType};
use super::MsEndpoint;
use crate::config::{Entity, Side};
use crate::endpoint::{EndpointError, SchemaProblem};

/// The columns `entity` names on `side`: its key, the mapped columns, the peer id column.
pub fn configured_names(e: &Entity, side: Side) -> Vec<&str> {
    let ts = e.side(side);
    let mut out: Vec<&str> = ts.key.iter().map(String::as_str).collect();
    out.extend(e.columns.iter().map(|c| c.name(side)));
    out.extend(ts.peer_id_column.as_deref());
    out
}

/// Gives catalog columns the spelling the config uses where the server would find them by
/// that spelling: in a case-insensitive database, `LINE_NO` names the column the catalog
/// reports as `line_no` (Babelfish's `sys.columns` reports every name in lower case). A name
/// matched exactly is left alone; an ambiguous one (two columns differing only in case) too.
pub fn adopt_config_names(cols: &mut [Column], wanted: &[&str], case_insensitive: bool) {
    if !case_insensitive {
        return;
    }
    for w in wanted {
        if cols.iter().any(|c| c.name == *w) {
            continue;
        }
        let mut matches = cols.iter_mut().filter(|c| c.name.eq_ignore_ascii_case(w));
        if let (Some(c), None) = (matches.next(), matches.next()) {
            c.name = (*w).to_string();
        }
    }
}

/// Reads the columns of `table_sql` (a quoted table name), named as `wanted` names them where
/// the server resolves them so (see [`adopt_config_names`]), and whether the database compares
/// names case-insensitively; None when the table is missing.
pub async fn columns(
    ep: &MsEndpoint,
    table_sql: &str,
    wanted: &[&str],
) -> Result<Option<(Vec<Column>, bool)>, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let err = |e| ep.pool.error("read the catalog", e);
    let rb = ep.pool.rollback_sql();
    let exists = run(&mut conn, rb, false, &ep.common.table_exists, &[&table_sql])
        .await
        .map_err(err)?;
    let found = exists
        .first()
        .and_then(|r| r.first())
        .and_then(|r| r.get::<bool, _>(0))
        .unwrap_or(false);
    if !found {
        return Ok(None);
    }
    let rows = run(
        &mut conn,
        rb,
        false,
        &ep.common.table_columns,
        &[&table_sql],
    )
    .await
    .map_err(err)?;
    let mut out = Vec::new();
    let mut case_insensitive = false;
    for r in rows.iter().flatten() {
        case_insensitive = r.get::<bool, _>(9).unwrap_or(false);
        let name: Option<&str> = r.get(0);
        let ty: Option<&str> = r.get(1);
        let (Some(name), Some(ty)) = (name, ty) else {
            continue;
        };
        let num = |i: usize| r.get::<i32, _>(i).unwrap_or(0);
        out.push(Column {
            name: name.to_string(),
            ty: SqlType::new(
                ty,
                i16::try_from(num(2)).unwrap_or(-1),
                u8::try_from(num(3)).unwrap_or(0),
                u8::try_from(num(4)).unwrap_or(0),
            ),
            nullable: r.get::<bool, _>(5).unwrap_or(true),
            identity: r.get::<bool, _>(6).unwrap_or(false),
            computed: r.get::<bool, _>(7).unwrap_or(false),
            has_default: r.get::<bool, _>(8).unwrap_or(false),
        });
    }
    adopt_config_names(&mut out, wanted, case_insensitive);
    Ok(Some((out, case_insensitive)))
}

/// The unique keys of a table, each as a set of column names.
async fn unique_keys(
    ep: &MsEndpoint,
    table_sql: &str,
) -> Result<Vec<BTreeSet<String>>, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let rows = run(
        &mut conn,
        ep.pool.rollback_sql(),
        false,
        &ep.common.table_unique_keys,
        &[&table_sql],
    )
    .await
    .map_err(|e| ep.pool.error("read the catalog", e))?;
    let mut by_index: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for r in rows.iter().flatten() {
        if let (Some(i), Some(c)) = (r.get::<i32, _>(0), r.get::<&str, _>(1)) {
            by_index.entry(i).or_default().insert(c.to_string());
        }
    }
    Ok(by_index.into_values().collect())
}

/// Every problem of this side, for every entity.
pub async fn check(ep: &MsEndpoint) -> Result<Vec<SchemaProblem>, EndpointError> {
    let mut problems = Vec::new();
    let side = ep.side;
    let mut general = |message: String| {
        problems.push(SchemaProblem {
            side,
            entity: "*".into(),
            message,
        })
    };
    {
        let mut conn = ep.pool.get().await?;
        let rows = run(
            &mut conn,
            ep.pool.rollback_sql(),
            false,
            &ep.common.server,
            &[],
        )
        .await
        .map_err(|e| ep.pool.error("read the server version", e))?;
        if let Some(r) = rows.first().and_then(|r| r.first()) {
            let major = r.get::<i32, _>(0).unwrap_or(0);
            let level = r.get::<i32, _>(1).unwrap_or(0);
            let babelfish = r.get::<bool, _>(2).unwrap_or(false);
            if major < 13 && !babelfish {
                general(format!(
                    "SQL Server major version {major}: tandem needs SQL Server 2016 (13) or later"
                ));
            }
            if level < 130 {
                general(format!(
                    "database compatibility level {level}: tandem needs 130 or more (OPENJSON); \
                     ALTER DATABASE CURRENT SET COMPATIBILITY_LEVEL = 130"
                ));
            }
        }
    }
    for e in &ep.config.entities {
        let ts = e.side(side);
        let mut problem = |message: String| {
            problems.push(SchemaProblem {
                side,
                entity: e.name.clone(),
                message,
            })
        };
        let name = table(&ts.table);
        let Some((cols, case_insensitive)) = columns(ep, &name, &configured_names(e, side)).await?
        else {
            problem(format!(
                "table {} does not exist in {} (names are taken exactly; an unqualified name is looked up in the login's default schema)",
                ts.table,
                ep.pool.target()
            ));
            continue;
        };
        let by: HashMap<&str, &Column> = cols.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut wanted: Vec<(&str, &str)> = ts.key.iter().map(|k| (k.as_str(), "key")).collect();
        wanted.extend(e.columns.iter().map(|c| (c.name(side), "mapped")));
        if let Some(p) = &ts.peer_id_column {
            wanted.push((p.as_str(), "peer_id_column"));
        }
        for (col, role) in &wanted {
            match by.get(col) {
                None => {
                    let hint = by
                        .keys()
                        .find(|c| c.eq_ignore_ascii_case(col))
                        .map(|c| format!(" (did you mean {c:?}? tandem takes names exactly)"))
                        .unwrap_or_default();
                    problem(format!(
                        "{role} column {col:?} does not exist in table {}{hint}",
                        ts.table
                    ));
                }
                Some(c) => {
                    if let Family::Unsupported(why) = c.ty.family() {
                        problem(format!(
                            "{role} column {col:?} of table {} is of type {}: {why}",
                            ts.table,
                            c.ty.sql()
                        ));
                    }
                    if col.contains('.') {
                        problem(format!(
                            "{role} column {col:?} of table {}: FOR JSON PATH reads a dot in a column name as nesting; rename the column",
                            ts.table
                        ));
                    }
                    if *role != "key" && (c.computed || c.ty.family() == Family::RowVersion) {
                        problem(format!(
                            "{role} column {col:?} of table {} is computed or a rowversion: tandem cannot write it",
                            ts.table
                        ));
                    }
                }
            }
        }
        // The capture trigger reads the key and the mapped columns: some types break it.
        if e.direction.flows(side) {
            let read = configured_names(e, side);
            for c in cols.iter().filter(|c| read.contains(&c.name.as_str())) {
                if matches!(
                    c.ty.name.as_str(),
                    "text" | "ntext" | "image" | "geography" | "geometry" | "hierarchyid"
                ) {
                    problem(format!(
                        "column {:?} of table {} is of type {}: the capture trigger cannot read it (convert it to varchar(max), nvarchar(max) or varbinary(max))",
                        c.name,
                        ts.table,
                        c.ty.sql()
                    ));
                }
            }
        }
        if !ts.key.iter().all(|k| by.contains_key(k.as_str())) {
            continue;
        }
        for k in &ts.key {
            if let Some(c) = by.get(k.as_str()) {
                if c.ty.key_input_type().is_none() {
                    problem(format!(
                        "key column {k:?} of table {} is of type {}: tandem supports integer, decimal, money, bit, char/varchar/nchar/nvarchar, uniqueidentifier and date keys on SQL Server",
                        ts.table,
                        c.ty.sql()
                    ));
                }
            }
        }
        let wanted_key: BTreeSet<String> = ts.key.iter().cloned().collect();
        let same =
            |a: &String, b: &String| a == b || (case_insensitive && a.eq_ignore_ascii_case(b));
        let unique = unique_keys(ep, &name).await?;
        let keyed = unique.iter().any(|u| {
            u.len() == wanted_key.len() && u.iter().all(|c| wanted_key.iter().any(|k| same(c, k)))
        });
        if !keyed {
            problem(format!(
                "no primary key or unique index on ({}) of table {}: tandem finds records by their key",
                ts.key.join(", "),
                ts.table
            ));
        }
        if !e.key_is_given(side) {
            for k in &ts.key {
                if let Some(c) = by.get(k.as_str()) {
                    if !c.identity && !c.has_default {
                        problem(format!(
                            "key column {k:?} of table {} has no default or IDENTITY, so tandem cannot create records here: give it one (e.g. IDENTITY(1,1)), or map it from side {}",
                            ts.table,
                            side.other()
                        ));
                    }
                }
            }
        }
    }
    Ok(problems)
}
