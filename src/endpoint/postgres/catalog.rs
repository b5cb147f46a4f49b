//! `tandem init` on PostgreSQL: the whole database read into a [`Catalog`] from
//! `sql/postgres/catalog.sql`, rows read by column name.

use tokio_postgres::types::FromSql;
use tokio_postgres::Row;

use super::pool::{prepared, PgConn};
use super::PgEndpoint;
use crate::config::TableName;
use crate::endpoint::catalog::{Catalog, CatalogBuilder, CatalogColumn, Codes, ForeignKey};
use crate::endpoint::desc::{ColumnDesc, Kind};
use crate::endpoint::template;
use crate::endpoint::EndpointError;

const CATALOG: &str = include_str!("../../../sql/postgres/catalog.sql");

/// Column `name` of a catalog row, or an error naming it (never a panic).
fn get<'a, T: FromSql<'a>>(row: &'a Row, name: &str) -> Result<T, EndpointError> {
    row.try_get(name).map_err(|e| {
        EndpointError::Config(format!(
            "internal: reading the catalog: column {name} cannot be read: {e}"
        ))
    })
}

/// The rows of one catalog statement (its one parameter: tandem's own schema, left out).
async fn rows(
    ep: &PgEndpoint,
    conn: &mut PgConn,
    own_schema: &str,
    sql: &str,
) -> Result<Vec<Row>, EndpointError> {
    let err = |e| ep.pool.error("read the catalog", e);
    let PgConn { client, stmts } = conn;
    let st = prepared(&*client, stmts, sql).await.map_err(err)?;
    client.query(&st, &[&own_schema]).await.map_err(err)
}

/// Every user table of the database, tandem's own schema left out.
pub async fn read(ep: &PgEndpoint) -> Result<Catalog, EndpointError> {
    let sections = template::sections(CATALOG);
    let section = |name: &str| {
        sections.get(name).copied().ok_or_else(|| {
            EndpointError::Config(format!("internal: catalog.sql has no section {name}"))
        })
    };
    let own_schema = ep.config.side(ep.side).schema.clone();
    let mut conn = ep.pool.get().await?;
    let conn = &mut *conn;
    let mut b = CatalogBuilder::default();
    for r in rows(ep, conn, &own_schema, section("catalog_columns")?).await? {
        let schema: String = get(&r, "schema_name")?;
        let table: String = get(&r, "table_name")?;
        let type_name: String = get::<Option<String>>(&r, "type_name")?.unwrap_or_default();
        let identity: bool = get(&r, "is_identity")?;
        let generated: bool = get(&r, "is_generated")?;
        let default: Option<String> = get(&r, "default_expr")?;
        let labels: Option<Vec<String>> = get(&r, "enum_labels")?;
        let desc = ColumnDesc {
            name: get(&r, "column_name")?,
            kind: Kind::from_postgres(&type_name),
            defaulted: identity || generated || default.is_some(),
            not_null: get(&r, "not_null")?,
            read_only: generated.then(|| "a generated column".to_string()),
            type_name: type_name.clone(),
            ..ColumnDesc::default()
        };
        b.table(&schema, &table).columns.push(CatalogColumn {
            desc,
            identity,
            default,
            codes: labels.map(|values| Codes {
                from: format!("enum {type_name}"),
                values,
            }),
        });
    }
    for r in rows(ep, conn, &own_schema, section("catalog_keys")?).await? {
        let schema: String = get(&r, "schema_name")?;
        let table: String = get(&r, "table_name")?;
        let primary: bool = get(&r, "is_primary")?;
        let cols: Vec<String> = get(&r, "column_names")?;
        let t = b.table(&schema, &table);
        if primary {
            t.primary_key = cols;
        } else if !t.unique.contains(&cols) {
            t.unique.push(cols);
        }
    }
    for r in rows(ep, conn, &own_schema, section("catalog_foreign_keys")?).await? {
        let schema: String = get(&r, "schema_name")?;
        let table: String = get(&r, "table_name")?;
        let fk = ForeignKey {
            name: get(&r, "constraint_name")?,
            columns: get(&r, "column_names")?,
            parent: TableName {
                schema: Some(get(&r, "parent_schema")?),
                name: get(&r, "parent_table")?,
            },
            parent_columns: get(&r, "parent_columns")?,
        };
        b.table(&schema, &table).foreign_keys.push(fk);
    }
    for r in rows(ep, conn, &own_schema, section("catalog_checks")?).await? {
        let schema: String = get(&r, "schema_name")?;
        let table: String = get(&r, "table_name")?;
        let name: String = get(&r, "constraint_name")?;
        let definition: String = get(&r, "definition")?;
        b.check(&schema, &table, &name, &definition);
    }
    Ok(b.catalog)
}
