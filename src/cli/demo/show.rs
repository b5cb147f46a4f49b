//! Reading and printing the demo tables: one-line rows, aligned tables, and the change feed
//! of the live phase; and [`Db`], a session on either kind of demo database.
//!
//! Every value is read as JSON, so one code path renders any type faithfully: numerics keep
//! their scale, strings are quoted and `NULL` is not confused with `''`. PostgreSQL gives it
//! with `to_jsonb(col)`, SQL Server with `FOR JSON PATH, INCLUDE_NULL_VALUES`.
//!
//! SQL shared by both dialects is written in one spelling: identifiers that need quoting as
//! T-SQL writes them, `dbo.[ORDERS]`; [`Db::spell`] turns them into `dbo."ORDERS"` on
//! PostgreSQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::Value;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::mssql::{self, Ms};

/// Most rows read from one table at a time; the demo tables are small, and a user who fills
/// one with psql should not make each poll slow.
pub const ROW_LIMIT: usize = 200;

/// A table of the demo schema, as the demo shows it.
pub struct Table {
    /// Which side it lives on: "A" or "B".
    pub side: &'static str,
    /// Name as printed, e.g. `dbo.ORDERS`.
    pub label: &'static str,
    /// Name in SQL, quoted where needed, in the shared spelling (`dbo.[ORDERS]`).
    pub sql: &'static str,
    /// Columns shown; the first `key_len` are the primary key.
    pub columns: &'static [&'static str],
    pub key_len: usize,
}

pub const A_ORDERS: Table = Table {
    side: "A",
    label: "dbo.ORDERS",
    sql: "dbo.[ORDERS]",
    columns: &["ORDER_NO", "CUST_NAME", "STATUS", "AMOUNT", "NEW_ID"],
    key_len: 1,
};

pub const A_ITEMS: Table = Table {
    side: "A",
    label: "dbo.ORDER_ITEMS",
    sql: "dbo.[ORDER_ITEMS]",
    columns: &["ORDER_NO", "LINE_NO", "QTY"],
    key_len: 2,
};

pub const B_ORDERS: Table = Table {
    side: "B",
    label: "public.orders",
    sql: "public.orders",
    columns: &["id", "customer", "status", "amount", "legacy_no"],
    key_len: 1,
};

pub const B_ITEMS: Table = Table {
    side: "B",
    label: "public.order_items",
    sql: "public.order_items",
    columns: &["id", "order_id", "line_no", "quantity"],
    key_len: 1,
};

/// One row: the values of [`Table::columns`], in order (`Value::Null` for SQL NULL).
pub type Row = Vec<Value>;

impl Table {
    /// Reads up to [`ROW_LIMIT`] rows in key order; `filter` is a `WHERE …` clause (in the
    /// shared spelling) or empty.
    pub async fn rows(&self, db: &Db, filter: &str) -> Result<Vec<Row>, String> {
        db.select(
            self.columns,
            &db.spell(self.sql),
            &db.spell(filter),
            &self.columns[..self.key_len],
        )
        .await
        .map_err(|e| format!("reading {} {}: {e}", self.side, self.label))
    }

    /// `col=value …` for a whole row.
    pub fn line(&self, row: &Row) -> String {
        self.columns
            .iter()
            .zip(row)
            .map(|(c, v)| format!("{c}={}", quoted(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// `col=value …` for the key columns only.
    fn key_line(&self, row: &Row) -> String {
        self.columns[..self.key_len]
            .iter()
            .zip(row)
            .map(|(c, v)| format!("{c}={}", quoted(v)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Prints the rows as an aligned table under a `A dbo.ORDERS` title.
    pub fn print(&self, rows: &[Row]) {
        println!("  {} {}", self.side, self.label);
        let header: Vec<String> = self.columns.iter().map(|c| c.to_string()).collect();
        let body: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(plain).collect()).collect();
        print_aligned(&header, &body);
        if rows.is_empty() {
            println!("    (no rows)");
        }
    }
}

/// Prints `header` and `body` as left-aligned columns, indented.
pub fn print_aligned(header: &[String], body: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in body {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let render = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("    {}", parts.join("  ").trim_end())
    };
    println!("{}", render(header));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    println!("{}", render(&rule));
    for row in body {
        println!("{}", render(row));
    }
}

/// A value as SQL would write it: `NULL`, `'text'`, `12.50`.
pub fn quoted(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        other => other.to_string(),
    }
}

/// A value as psql shows it in a table: strings bare, `NULL` spelled out.
pub fn plain(v: &Value) -> String {
    match v {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// An integer column of a row (ids and keys), if it is one.
pub fn int(row: &Row, i: usize) -> Option<i64> {
    row.get(i).and_then(Value::as_i64)
}

/// The lines describing how `new` differs from `old` (two reads of `table`):
/// `+` inserted, `~` updated (only the columns that changed), `-` deleted.
pub fn diff(table: &Table, old: &[Row], new: &[Row]) -> Vec<String> {
    let key = |r: &Row| table.key_line(r);
    let before: HashMap<String, &Row> = old.iter().map(|r| (key(r), r)).collect();
    let after: HashMap<String, &Row> = new.iter().map(|r| (key(r), r)).collect();
    let mut lines = Vec::new();
    for row in new {
        match before.get(&key(row)) {
            None => lines.push(format!("+ {}", table.line(row))),
            Some(prev) if *prev != row => {
                let changed: Vec<String> = table
                    .columns
                    .iter()
                    .zip(prev.iter().zip(row))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| format!("{c}: {} → {}", quoted(a), quoted(b)))
                    .collect();
                lines.push(format!("~ {}  {}", key(row), changed.join(", ")));
            }
            Some(_) => {}
        }
    }
    for row in old {
        if !after.contains_key(&key(row)) {
            lines.push(format!("- {}", table.line(row)));
        }
    }
    lines
}

/// The dialect of a demo database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Pg,
    Ms,
}

/// How to reach a demo database (the SQL Server string holds a password: never print it).
#[derive(Clone)]
pub enum Target {
    Pg(String),
    Ms(String),
}

impl Target {
    /// Opens a session; `side` ("A" or "B") names it in errors.
    pub async fn connect(&self, side: &str) -> Result<Db, String> {
        match self {
            Target::Pg(url) => {
                let (client, connection) = tokio_postgres::connect(url, NoTls)
                    .await
                    .map_err(|e| format!("connecting to {side} ({url}): {}", pg_error(&e)))?;
                tokio::spawn(async move {
                    // Ends when the client is dropped or the server goes away; either is
                    // reported by the next query.
                    let _ = connection.await;
                });
                Ok(Db::Pg(client))
            }
            Target::Ms(url) => Ok(Db::Ms {
                client: Box::new(Mutex::new(mssql::connect(url, side).await?)),
                broken: AtomicBool::new(false),
            }),
        }
    }
}

/// A session on a demo database, PostgreSQL or SQL Server.
pub enum Db {
    Pg(Client),
    Ms {
        client: Box<Mutex<Ms>>,
        /// Set when the connection failed (not when a statement did).
        broken: AtomicBool,
    },
}

impl Db {
    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Pg(_) => Dialect::Pg,
            Db::Ms { .. } => Dialect::Ms,
        }
    }

    /// Shared spelling to this dialect: `[Name]` becomes `"Name"` on PostgreSQL.
    pub fn spell(&self, sql: &str) -> String {
        match self.dialect() {
            Dialect::Pg => brackets_to_quotes(sql),
            Dialect::Ms => sql.to_string(),
        }
    }

    /// An identifier, quoted for this dialect.
    pub fn quote(&self, name: &str) -> String {
        match self.dialect() {
            Dialect::Pg => quote_ident(name),
            Dialect::Ms => format!("[{}]", name.replace(']', "]]")),
        }
    }

    /// Has the connection gone (so that a new one is needed)?
    pub fn is_closed(&self) -> bool {
        match self {
            Db::Pg(c) => c.is_closed(),
            Db::Ms { broken, .. } => broken.load(Ordering::Relaxed),
        }
    }

    /// Runs `sql` (in this dialect; on SQL Server one batch, which may hold several
    /// statements); returns the first column of the first row of the last result that has
    /// rows, as an integer (what `RETURNING id` or `SELECT SCOPE_IDENTITY()` gives).
    pub async fn exec(&self, sql: &str) -> Result<Option<i64>, String> {
        match self {
            Db::Pg(c) => {
                let rows = c.query(sql, &[]).await.map_err(|e| pg_error(&e))?;
                let Some(row) = rows.first() else {
                    return Ok(None);
                };
                // ORDER_NO is an integer, id a bigint.
                row.try_get::<_, i64>(0)
                    .or_else(|_| row.try_get::<_, i32>(0).map(i64::from))
                    .map(Some)
                    .map_err(|e| format!("reading the returned value: {e}"))
            }
            Db::Ms { client, broken } => {
                let sets = mssql::batch(&mut *client.lock().await, sql)
                    .await
                    .map_err(|e| self.ms_error(broken, &e))?;
                let Some(row) = sets.iter().rev().find_map(|rows| rows.first()) else {
                    return Ok(None);
                };
                let value = match row.cells().next() {
                    Some((_, cell)) => mssql::int(cell)
                        .map(Some)
                        .ok_or_else(|| format!("the returned value {cell:?} is not an integer")),
                    None => Ok(None),
                };
                value
            }
        }
    }

    /// Runs a script (on SQL Server: the batches between `GO` lines).
    pub async fn script(&self, text: &str) -> Result<(), String> {
        match self {
            Db::Pg(c) => c.batch_execute(text).await.map_err(|e| pg_error(&e)),
            Db::Ms { client, .. } => mssql::script(&mut *client.lock().await, text).await,
        }
    }

    fn ms_error(&self, broken: &AtomicBool, e: &tiberius::error::Error) -> String {
        if !matches!(e, tiberius::error::Error::Server(_)) {
            broken.store(true, Ordering::Relaxed);
        }
        mssql::describe(e)
    }

    /// Reads `columns` of up to [`ROW_LIMIT`] rows of `from` (both in this dialect) ordered
    /// by `order`, as JSON values.
    pub async fn select(
        &self,
        columns: &[&str],
        from: &str,
        filter: &str,
        order: &[&str],
    ) -> Result<Vec<Row>, String> {
        let order: Vec<String> = order.iter().map(|c| self.quote(c)).collect();
        let order = order.join(", ");
        match self {
            Db::Pg(client) => {
                let list: Vec<String> = columns
                    .iter()
                    .map(|c| format!("to_jsonb({})", quote_ident(c)))
                    .collect();
                let sql = format!(
                    "SELECT {} FROM {from} {filter} ORDER BY {order} LIMIT {ROW_LIMIT}",
                    list.join(", ")
                );
                let rows = client
                    .query(sql.as_str(), &[])
                    .await
                    .map_err(|e| pg_error(&e))?;
                rows.iter()
                    .map(|row| {
                        (0..columns.len())
                            .map(|i| {
                                row.try_get::<_, Option<Value>>(i)
                                    .map(|v| v.unwrap_or(Value::Null))
                                    .map_err(|e| e.to_string())
                            })
                            .collect()
                    })
                    .collect()
            }
            Db::Ms { client, broken } => {
                let list: Vec<String> = columns.iter().map(|c| self.quote(c)).collect();
                let sql = format!(
                    "SELECT TOP ({ROW_LIMIT}) {} FROM {from} {filter} ORDER BY {order} \
                     FOR JSON PATH, INCLUDE_NULL_VALUES",
                    list.join(", ")
                );
                let sets = mssql::batch(&mut *client.lock().await, &sql)
                    .await
                    .map_err(|e| self.ms_error(broken, &e))?;
                // FOR JSON returns its text in pieces, one per row.
                let mut text = String::new();
                for row in sets.iter().flatten() {
                    if let Some(piece) = row.get::<&str, _>(0) {
                        text.push_str(piece);
                    }
                }
                rows_from_json(&text, columns)
            }
        }
    }
}

/// The rows of a `FOR JSON PATH, INCLUDE_NULL_VALUES` result: `columns` of each object, in
/// order. Names are matched without regard to case, as SQL Server resolves them (Babelfish
/// reports them in lower case).
fn rows_from_json(text: &str, columns: &[&str]) -> Result<Vec<Row>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let objects: Vec<serde_json::Map<String, Value>> = serde_json::from_str(text)
        .map_err(|e| format!("the server's FOR JSON result is not an array of objects: {e}"))?;
    Ok(objects
        .into_iter()
        .map(|object| {
            columns
                .iter()
                .map(|c| {
                    object
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(c))
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null)
                })
                .collect()
        })
        .collect())
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `[Name]` to `"Name"`: only `[` + identifier characters + `]`, so that JSON text such as
/// `'[1000,1]'` stays as it is.
fn brackets_to_quotes(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(']') {
            Some(close)
                if close > 0
                    && after[..close]
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_')
                    && !after[..close].starts_with(|c: char| c.is_ascii_digit()) =>
            {
                out.push('"');
                out.push_str(&after[..close]);
                out.push('"');
                rest = &after[close + 1..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A PostgreSQL error with the server's message when there is one (tokio-postgres's own
/// Display says only "db error").
pub fn pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_values() {
        assert_eq!(quoted(&json!(null)), "NULL");
        assert_eq!(quoted(&json!("it's")), "'it''s'");
        assert_eq!(quoted(&json!("")), "''");
        assert_eq!(plain(&json!("Ada")), "Ada");
        assert_eq!(quoted(&json!(7)), "7");
    }

    #[test]
    fn spells_brackets_as_quotes() {
        assert_eq!(
            brackets_to_quotes(r#"UPDATE dbo.[ORDERS] SET [STATUS] = 'C' WHERE k = '[1000,1]'"#),
            r#"UPDATE dbo."ORDERS" SET "STATUS" = 'C' WHERE k = '[1000,1]'"#
        );
        assert_eq!(brackets_to_quotes("a[] [x"), "a[] [x");
    }

    #[test]
    fn reads_for_json_rows() {
        let rows = rows_from_json(
            r#"[{"order_no": 1000, "CUST_NAME": "Ada", "AMOUNT": 120.50, "NEW_ID": null}]"#,
            &["ORDER_NO", "CUST_NAME", "AMOUNT", "NEW_ID", "MISSING"],
        )
        .unwrap();
        assert_eq!(rows.len(), 1);
        let shown: Vec<String> = rows[0].iter().map(quoted).collect();
        assert_eq!(shown, ["1000", "'Ada'", "120.50", "NULL", "NULL"]);
        assert!(rows_from_json("", &["x"]).unwrap().is_empty());
        assert!(rows_from_json("{", &["x"]).is_err());
    }

    #[test]
    fn diffs_rows() {
        let old = vec![
            vec![json!(1), json!("a"), json!("O"), json!(null), json!(null)],
            vec![json!(2), json!("b"), json!("O"), json!(null), json!(null)],
        ];
        let new = vec![
            vec![json!(1), json!("a"), json!("C"), json!(null), json!(null)],
            vec![json!(3), json!("c"), json!("O"), json!(null), json!(null)],
        ];
        let lines = diff(&A_ORDERS, &old, &new);
        assert_eq!(
            lines,
            vec![
                "~ ORDER_NO=1  STATUS: 'O' → 'C'".to_string(),
                "+ ORDER_NO=3 CUST_NAME='c' STATUS='O' AMOUNT=NULL NEW_ID=NULL".to_string(),
                "- ORDER_NO=2 CUST_NAME='b' STATUS='O' AMOUNT=NULL NEW_ID=NULL".to_string(),
            ]
        );
    }
}
