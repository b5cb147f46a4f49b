//! The catalog on SQL Server: the column types the endpoint converts images with, and the
//! [`TableDesc`] `tandem check` compares with the config ([`desc::check`], shared with
//! PostgreSQL). The server's version and compatibility level are checked here.

use std::collections::{BTreeMap, BTreeSet};

use super::pool::run;
use super::row::get;
use super::sql::table;
use super::types::{Column, Family, SqlType};
use super::MsEndpoint;
use crate::config::{Entity, KeyFrom, Side};
use crate::endpoint::desc::{self, ColumnDesc, Kind, TableDesc, Wording};
use crate::endpoint::{EndpointError, SchemaProblem};

/// The columns `entity` names on `side`: its key, the mapped columns, the peer id column.
pub fn configured_names(e: &Entity, side: Side) -> Vec<&str> {
    let ts = e.side(side);
    let mut out: Vec<&str> = ts.key.iter().map(String::as_str).collect();
    out.extend(e.columns.iter().map(|c| c.name(side)));
    out.extend(ts.peer_id_column.as_deref());
    out.extend(e.constants_at(side).map(|k| k.column.as_str()));
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
    let what = "read the catalog";
    let err = |e| ep.pool.error(what, e);
    let rb = ep.pool.rollback_sql();
    let exists = run(&mut conn, rb, false, &ep.common.table_exists, &[&table_sql])
        .await
        .map_err(err)?;
    let found = match exists.first().and_then(|r| r.first()) {
        Some(r) => get::<bool>(r, "present", what)?.unwrap_or(false),
        None => false,
    };
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
        case_insensitive = get::<bool>(r, "case_insensitive", what)?.unwrap_or(false);
        let name = get::<&str>(r, "column_name", what)?;
        let ty = get::<&str>(r, "type_name", what)?;
        let (Some(name), Some(ty)) = (name, ty) else {
            continue;
        };
        let num = |n: &str| -> Result<i32, EndpointError> { Ok(get(r, n, what)?.unwrap_or(0)) };
        out.push(Column {
            name: name.to_string(),
            ty: SqlType::new(
                ty,
                i16::try_from(num("max_length")?).unwrap_or(-1),
                u8::try_from(num("num_precision")?).unwrap_or(0),
                u8::try_from(num("num_scale")?).unwrap_or(0),
            ),
            nullable: get::<bool>(r, "is_nullable", what)?.unwrap_or(true),
            identity: get::<bool>(r, "is_identity", what)?.unwrap_or(false),
            computed: get::<bool>(r, "is_computed", what)?.unwrap_or(false),
            has_default: get::<bool>(r, "has_default", what)?.unwrap_or(false),
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
    let what = "read the catalog";
    let rows = run(
        &mut conn,
        ep.pool.rollback_sql(),
        false,
        &ep.common.table_unique_keys,
        &[&table_sql],
    )
    .await
    .map_err(|e| ep.pool.error(what, e))?;
    let mut by_index: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
    for r in rows.iter().flatten() {
        let index = get::<i32>(r, "index_id", what)?;
        if let (Some(i), Some(c)) = (index, get::<&str>(r, "column_name", what)?) {
            by_index.entry(i).or_default().insert(c.to_string());
        }
    }
    Ok(by_index.into_values().collect())
}

/// How SQL Server's messages word what differs between dialects.
const WORDING: Wording = Wording {
    missing_table:
        "names are taken exactly; an unqualified name is looked up in the login's default schema",
    name_case: "tandem takes names exactly",
    identity: "IDENTITY",
    identity_example: "IDENTITY(1,1)",
};

/// Types the capture trigger cannot read.
const UNCAPTURABLE: &[&str] = &[
    "text",
    "ntext",
    "image",
    "geography",
    "geometry",
    "hierarchyid",
];

/// What a SQL Server column holds, in the terms [`desc::compare`] shares with PostgreSQL.
fn kind(c: &Column) -> Kind {
    let digits = |max: i128| max.to_string().len() as u32;
    match c.ty.family() {
        Family::Int { max, .. } => Kind::Integer {
            digits: digits(max),
        },
        Family::Decimal => Kind::Decimal {
            precision: Some(u32::from(c.ty.precision)),
            scale: Some(u32::from(c.ty.scale)),
        },
        Family::Money => Kind::Decimal {
            precision: Some(if c.ty.name == "smallmoney" { 10 } else { 19 }),
            scale: Some(4),
        },
        Family::Float => Kind::Float,
        Family::Bit => Kind::Bool,
        Family::Str { chars, .. } => Kind::Text {
            chars: chars.and_then(|n| u32::try_from(n).ok()),
        },
        Family::Date => Kind::Date,
        Family::Time => Kind::Time,
        Family::DateTime2 | Family::LegacyDateTime => Kind::Timestamp,
        Family::DateTimeOffset => Kind::TimestampTz,
        Family::Uuid => Kind::Uuid,
        Family::Binary { .. } | Family::RowVersion => Kind::Binary,
        Family::Xml => Kind::Xml,
        Family::Unsupported(_) => Kind::Unknown,
    }
}

/// A catalog column as [`desc::check`] sees it, with SQL Server's reasons to refuse it.
pub(super) fn column_desc(c: &Column) -> ColumnDesc {
    let family = c.ty.family();
    ColumnDesc {
        name: c.name.clone(),
        type_name: c.ty.sql(),
        defaulted: c.identity || c.has_default,
        unusable: match family {
            Family::Unsupported(why) => Some(why.to_string()),
            _ => None,
        },
        bad_name: c.name.contains('.').then(|| {
            "FOR JSON PATH reads a dot in a column name as nesting; rename the column".to_string()
        }),
        read_only: (c.computed || family == Family::RowVersion)
            .then(|| "computed or a rowversion".to_string()),
        not_a_key: c.ty.key_input_type().is_none().then(|| {
            "tandem supports integer, decimal, money, bit, char/varchar/nchar/nvarchar, \
             uniqueidentifier and date keys on SQL Server"
                .to_string()
        }),
        kind: kind(c),
        not_null: !c.nullable,
        uncapturable: UNCAPTURABLE.contains(&c.ty.name.as_str()).then(|| {
            "the capture trigger cannot read it (convert it to varchar(max), nvarchar(max) \
             or varbinary(max))"
                .to_string()
        }),
    }
}

/// The table `table_sql` (quoted) of `e` as the catalog has it, its columns named as the
/// config names them where the server resolves them so; None when it does not exist.
pub async fn describe(
    ep: &MsEndpoint,
    e: &Entity,
    table_sql: &str,
) -> Result<Option<TableDesc>, EndpointError> {
    let Some((cols, case_insensitive)) =
        columns(ep, table_sql, &configured_names(e, ep.side)).await?
    else {
        return Ok(None);
    };
    let ts = e.side(ep.side);
    let columns = cols
        .iter()
        .map(|c| {
            let mut d = column_desc(c);
            // SQL Server refuses a value for an IDENTITY: a key_from key must not be one.
            if c.identity && ts.key_from.is_some() && ts.key.contains(&c.name) {
                d.read_only = Some("an IDENTITY".into());
            }
            d
        })
        .collect();
    Ok(Some(TableDesc {
        columns,
        unique_keys: unique_keys(ep, table_sql).await?,
        case_insensitive,
    }))
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
            let what = "read the server version";
            let major = get::<i32>(r, "major_version", what)?.unwrap_or(0);
            let level = get::<i32>(r, "compat_level", what)?.unwrap_or(0);
            let babelfish = get::<bool>(r, "is_babelfish", what)?.unwrap_or(false);
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
        let found = describe(ep, e, &table(&e.side(side).table)).await?;
        problems.extend(desc::check(
            e,
            side,
            found.as_ref(),
            ep.pool.target(),
            &WORDING,
        ));
        for c in &e.columns {
            let Some(l) = c.lookup.as_ref().filter(|l| l.side == side) else {
                continue;
            };
            let table_sql = table(&l.table);
            let found = match columns(ep, &table_sql, &[l.key.as_str(), l.value.as_str()]).await? {
                Some((cols, case_insensitive)) => Some(TableDesc {
                    columns: cols.iter().map(column_desc).collect(),
                    unique_keys: unique_keys(ep, &table_sql).await?,
                    case_insensitive,
                }),
                None => None,
            };
            problems.extend(desc::check_lookup(
                e,
                c,
                l,
                found.as_ref(),
                ep.pool.target(),
            ));
        }
        if let Some(KeyFrom::Sequence(seq)) = &e.side(side).key_from {
            let mut conn = ep.pool.get().await?;
            let rows = run(
                &mut conn,
                ep.pool.rollback_sql(),
                false,
                &ep.common.sequence_exists,
                &[&table(seq)],
            )
            .await
            .map_err(|e| ep.pool.error("read the schema", e))?;
            let found = match rows.first().and_then(|r| r.first()) {
                Some(r) => get::<bool>(r, "present", "read the schema")?.unwrap_or(false),
                None => false,
            };
            if !found {
                problems.push(desc::missing_sequence(e, side, seq, ep.pool.target()));
            }
        }
    }
    Ok(problems)
}
