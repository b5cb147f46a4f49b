//! Reading and printing the demo tables: one-line rows, aligned tables, and the change feed
//! of the live phase.
//!
//! Every column is read as `to_jsonb(col)`, so one code path renders any type faithfully:
//! numerics keep their scale, strings are quoted and `NULL` is not confused with `''`.

use std::collections::HashMap;

use serde_json::Value;
use tokio_postgres::Client;

/// Most rows read from one table at a time; the demo tables are small, and a user who fills
/// one with psql should not make each poll slow.
pub const ROW_LIMIT: usize = 200;

/// A table of the demo schema, as the demo shows it.
pub struct Table {
    /// Which side it lives on: "A" or "B".
    pub side: &'static str,
    /// Name as printed, e.g. `dbo.ORDERS`.
    pub label: &'static str,
    /// Name in SQL, quoted where needed.
    pub sql: &'static str,
    /// Columns shown; the first `key_len` are the primary key.
    pub columns: &'static [&'static str],
    pub key_len: usize,
}

pub const A_ORDERS: Table = Table {
    side: "A",
    label: "dbo.ORDERS",
    sql: r#"dbo."ORDERS""#,
    columns: &["ORDER_NO", "CUST_NAME", "STATUS", "AMOUNT", "NEW_ID"],
    key_len: 1,
};

pub const A_ITEMS: Table = Table {
    side: "A",
    label: "dbo.ORDER_ITEMS",
    sql: r#"dbo."ORDER_ITEMS""#,
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

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Table {
    /// Reads up to [`ROW_LIMIT`] rows in key order; `filter` is a `WHERE …` clause or empty.
    pub async fn rows(&self, client: &Client, filter: &str) -> Result<Vec<Row>, String> {
        let columns: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("to_jsonb({})", quote_ident(c)))
            .collect();
        let order: Vec<String> = self.columns[..self.key_len]
            .iter()
            .map(|c| quote_ident(c))
            .collect();
        let sql = format!(
            "SELECT {} FROM {} {filter} ORDER BY {} LIMIT {ROW_LIMIT}",
            columns.join(", "),
            self.sql,
            order.join(", ")
        );
        let rows = client
            .query(sql.as_str(), &[])
            .await
            .map_err(|e| format!("reading {} {}: {}", self.side, self.label, pg_error(&e)))?;
        rows.iter()
            .map(|row| {
                (0..self.columns.len())
                    .map(|i| {
                        row.try_get::<_, Option<Value>>(i)
                            .map(|v| v.unwrap_or(Value::Null))
                            .map_err(|e| format!("reading {} {}: {e}", self.side, self.label))
                    })
                    .collect()
            })
            .collect()
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
