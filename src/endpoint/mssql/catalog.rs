//! `tandem init` on SQL Server: the whole database read into a [`Catalog`] from
//! `sql/mssql/catalog.sql`, rows read by column name; columns judged as `tandem check` judges
//! them ([`schema::column_desc`]).

use tiberius::Row;

use super::pool::run;
use super::row::get;
use super::schema;
use super::types::{Column, SqlType};
use super::MsEndpoint;
use crate::config::TableName;
use crate::endpoint::catalog::{Catalog, CatalogBuilder, CatalogColumn, ForeignKey};
use crate::endpoint::template;
use crate::endpoint::EndpointError;

const CATALOG: &str = include_str!("../../../sql/mssql/catalog.sql");

/// What a catalog row that cannot be read is reported as.
const WHAT: &str = "reading the catalog";

/// A text column that is never NULL in these statements (names).
fn text(row: &Row, name: &str) -> Result<String, EndpointError> {
    Ok(get::<&str>(row, name, WHAT)?
        .unwrap_or_default()
        .to_string())
}

/// The rows of one catalog statement (its one parameter: tandem's own schema, left out).
async fn rows(ep: &MsEndpoint, sql: &str, own_schema: &str) -> Result<Vec<Row>, EndpointError> {
    let mut conn = ep.pool.get().await?;
    let sets = run(
        &mut conn,
        ep.pool.rollback_sql(),
        false,
        sql,
        &[&own_schema],
    )
    .await
    .map_err(|e| ep.pool.error("read the catalog", e))?;
    Ok(sets.into_iter().flatten().collect())
}

/// Every user table of the database, tandem's own schema left out.
pub async fn read(ep: &MsEndpoint) -> Result<Catalog, EndpointError> {
    let sections = template::sections(CATALOG);
    let section = |name: &str| {
        sections.get(name).copied().ok_or_else(|| {
            EndpointError::Config(format!("internal: catalog.sql has no section {name}"))
        })
    };
    let own = ep.config.side(ep.side).schema.clone();
    let mut b = CatalogBuilder::default();
    for r in rows(ep, section("catalog_columns")?, &own).await? {
        b.catalog.case_insensitive = get::<bool>(&r, "case_insensitive", WHAT)?.unwrap_or(false);
        let num = |name: &str| -> Result<i32, EndpointError> {
            Ok(get::<i32>(&r, name, WHAT)?.unwrap_or(0))
        };
        let column = Column {
            name: text(&r, "column_name")?,
            ty: SqlType::new(
                &text(&r, "type_name")?,
                i16::try_from(num("max_length")?).unwrap_or(-1),
                u8::try_from(num("num_precision")?).unwrap_or(0),
                u8::try_from(num("num_scale")?).unwrap_or(0),
            ),
            nullable: get::<bool>(&r, "is_nullable", WHAT)?.unwrap_or(true),
            identity: get::<bool>(&r, "is_identity", WHAT)?.unwrap_or(false),
            computed: get::<bool>(&r, "is_computed", WHAT)?.unwrap_or(false),
            has_default: get::<&str>(&r, "default_expr", WHAT)?.is_some(),
        };
        let default = get::<&str>(&r, "default_expr", WHAT)?.map(str::to_string);
        let (schema_name, table) = (text(&r, "schema_name")?, text(&r, "table_name")?);
        b.table(&schema_name, &table).columns.push(CatalogColumn {
            desc: schema::column_desc(&column),
            identity: column.identity,
            default,
            codes: None,
        });
    }
    // One row per key column: consecutive rows of one index make one key.
    let mut last: Option<(String, String, i32)> = None;
    for r in rows(ep, section("catalog_keys")?, &own).await? {
        let (schema_name, table) = (text(&r, "schema_name")?, text(&r, "table_name")?);
        let index = get::<i32>(&r, "index_id", WHAT)?.unwrap_or(0);
        let primary = get::<bool>(&r, "is_primary", WHAT)?.unwrap_or(false);
        let column = text(&r, "column_name")?;
        let this = (schema_name.clone(), table.clone(), index);
        let same = last.as_ref() == Some(&this);
        last = Some(this);
        let t = b.table(&schema_name, &table);
        if primary {
            t.primary_key.push(column);
        } else if same {
            if let Some(u) = t.unique.last_mut() {
                u.push(column);
            }
        } else {
            t.unique.push(vec![column]);
        }
    }
    let mut last: Option<(String, String, String)> = None;
    for r in rows(ep, section("catalog_foreign_keys")?, &own).await? {
        let (schema_name, table) = (text(&r, "schema_name")?, text(&r, "table_name")?);
        let name = text(&r, "constraint_name")?;
        let (column, parent_column) = (text(&r, "column_name")?, text(&r, "parent_column")?);
        let parent = TableName {
            schema: Some(text(&r, "parent_schema")?),
            name: text(&r, "parent_table")?,
        };
        let this = (schema_name.clone(), table.clone(), name.clone());
        let same = last.as_ref() == Some(&this);
        last = Some(this);
        let t = b.table(&schema_name, &table);
        match t.foreign_keys.last_mut() {
            Some(fk) if same => {
                fk.columns.push(column);
                fk.parent_columns.push(parent_column);
            }
            _ => t.foreign_keys.push(ForeignKey {
                name,
                columns: vec![column],
                parent,
                parent_columns: vec![parent_column],
            }),
        }
    }
    for r in rows(ep, section("catalog_checks")?, &own).await? {
        let (schema_name, table) = (text(&r, "schema_name")?, text(&r, "table_name")?);
        let name = text(&r, "constraint_name")?;
        let definition = text(&r, "definition")?;
        b.check(&schema_name, &table, &name, &definition);
    }
    // Unique indexes that repeat the primary key say nothing new.
    for t in &mut b.catalog.tables {
        let pk = t.primary_key.clone();
        t.unique.retain(|u| *u != pk);
    }
    Ok(b.catalog)
}
