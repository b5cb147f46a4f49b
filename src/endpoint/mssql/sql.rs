//! The T-SQL tandem runs on SQL Server, from the reviewable templates in `sql/mssql/`, filled
//! only with identifiers quoted as `[name]` and string literals `N'...'` made here; values
//! always travel as parameters.
//!
//! Two kinds of SQL: the install/uninstall scripts and common statements depend on the config
//! only (so `install --dry-run` needs no connection); the apply and write-back batches also
//! depend on the column types, read from the catalog at run time ([`Plan::build`]).

use std::collections::{BTreeMap, HashMap};

use crate::config::{Config, Entity, KeyFrom, Side, TableName};
use crate::endpoint::EndpointError;

use super::error::{ROW_ERRORS, TRANSIENT_ERRORS};
use super::types::Column;
use crate::model::value_text;

const INSTALL: &str = include_str!("../../../sql/mssql/install.sql");
const INSTALL_END: &str = include_str!("../../../sql/mssql/install_end.sql");
const TRIGGER: &str = include_str!("../../../sql/mssql/trigger.sql");
const UNINSTALL: &str = include_str!("../../../sql/mssql/uninstall.sql");
const STATEMENTS: &str = include_str!("../../../sql/mssql/statements.sql");
const ENTITY: &str = include_str!("../../../sql/mssql/entity.sql");
const APPLY: &str = include_str!("../../../sql/mssql/apply.sql");
const WRITE_BACK: &str = include_str!("../../../sql/mssql/write_back.sql");
pub(super) const BULK: &str = include_str!("../../../sql/mssql/bulk.sql");

/// `name` as a T-SQL identifier: always bracketed, `]` doubled.
pub fn ident(name: &str) -> String {
    format!("[{}]", name.replace(']', "]]"))
}

/// `text` as a Unicode string literal.
pub fn literal(text: &str) -> String {
    format!("N'{}'", text.replace('\'', "''"))
}

/// A table name, schema-qualified when the config gives a schema.
pub fn table(t: &TableName) -> String {
    match &t.schema {
        Some(s) => format!("{}.{}", ident(s), ident(&t.name)),
        None => ident(&t.name),
    }
}

/// The capture trigger of a table. Trigger names are per schema in SQL Server, so each
/// table's carries its name; kept within 128 characters (a stable hash ends a long one).
pub fn trigger_name(t: &TableName) -> String {
    let name = format!("tandem_capture_{}", t.name);
    if name.chars().count() <= 128 {
        return name;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in t.name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let head: String = name.chars().take(111).collect();
    format!("{head}_{h:016x}")
}

pub use crate::endpoint::template::{fill, sections};

/// A script split into the batches between `GO` lines (as sqlcmd does), empty ones dropped.
pub fn batches(script: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in script.lines() {
        if line.trim().eq_ignore_ascii_case("go") {
            if !cur.trim().is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur);
    }
    out
}

pub fn schema_vars(schema: &str, side: Side) -> Vec<(&'static str, String)> {
    let (own, peer) = match side {
        Side::A => ("a_key", "b_key"),
        Side::B => ("b_key", "a_key"),
    };
    let s = ident(schema);
    vec![
        ("schema", s.clone()),
        ("schema_lit", literal(schema)),
        ("schema_ident_lit", literal(&s)),
        ("outbox_lit", literal(&format!("{s}.[outbox]"))),
        ("id_map_lit", literal(&format!("{s}.[id_map]"))),
        ("conflicts_lit", literal(&format!("{s}.[conflicts]"))),
        ("backfill_lit", literal(&format!("{s}.[backfill]"))),
        ("backfill_key_lit", literal(&format!("{s}.[backfill_key]"))),
        ("fingerprint_lit", literal(&format!("{s}.[fingerprint]"))),
        ("sent_mark_lit", literal(&format!("{s}.[sent_mark]"))),
        // The table property that marks a capture trigger as this installation's.
        ("mark_lit", literal(&format!("tandem:{schema}"))),
        ("own", ident(own)),
        ("peer", ident(peer)),
        (
            "install_format",
            crate::endpoint::INSTALL_FORMAT.to_string(),
        ),
    ]
}

fn side_lit(side: Side) -> String {
    format!("'{side}'")
}

/// The columns of a record's image as the capture trigger writes it, read from `alias`: the
/// key, then the mapped columns, each once, named as the config names it, then a soft delete's
/// mark and a filter's column (the mapping decides on them at claim).
pub fn image_columns(e: &Entity, side: Side, alias: &str) -> String {
    joined(
        e.read_columns(side)
            .iter()
            .map(|c| format!("{alias}.{} AS {}", ident(c), ident(c))),
        ", ",
    )
}

/// The image of the row `t` as JSON text, as the capture trigger writes it (bulk reads, the
/// apply's requeue).
pub fn image_of_t(e: &Entity, side: Side) -> String {
    format!(
        "CONVERT(nvarchar(max), (SELECT {} FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES))",
        image_columns(e, side, "t")
    )
}

/// The rows an entity shows at a side (`soft_delete`, `filter` there) as a predicate over
/// alias `t`, with the flag's deleted value (text) and the filter's values (a JSON array of
/// texts) given as SQL expressions (parameters in bulk statements, literals in the apply
/// batch), each converted to the column's type in the statement.
pub struct Shown<'e> {
    soft: Option<&'e crate::config::SoftDelete>,
    filter: Option<&'e crate::config::RowFilter>,
    /// The flag's deleted value as text ('' when there is none).
    pub deleted_text: String,
    /// The filter's values, a JSON array of texts ('[]' when there is none).
    pub in_json: String,
}

impl<'e> Shown<'e> {
    pub fn of(e: &'e Entity, side: Side) -> Shown<'e> {
        let soft = e.soft_delete_at(side);
        let filter = e.filter.as_ref().filter(|f| f.side == side);
        let deleted_text = soft
            .and_then(|sd| sd.flag.as_ref())
            .and_then(|(d, _)| value_text(d))
            .unwrap_or_default();
        let in_json = filter
            .and_then(|f| {
                serde_json::to_string(&f.values.iter().filter_map(value_text).collect::<Vec<_>>())
                    .ok()
            })
            .unwrap_or_else(|| "[]".into());
        Shown {
            soft,
            filter,
            deleted_text,
            in_json,
        }
    }

    pub fn predicate(
        &self,
        columns: &HashMap<String, Column>,
        ctx: &str,
        deleted: &str,
        values: &str,
    ) -> Result<String, EndpointError> {
        let col = |name: &str| {
            columns.get(name).ok_or_else(|| {
                EndpointError::Config(format!(
                    "{ctx}: column {name:?} does not exist (run `tandem check`)"
                ))
            })
        };
        let mut parts = Vec::new();
        if let Some(sd) = self.soft {
            let ty = col(&sd.column)?.ty.sql();
            let m = format!("t.{}", ident(&sd.column));
            parts.push(match sd.flag {
                None => format!("{m} IS NULL"),
                Some(_) => format!("({m} IS NULL OR {m} <> CONVERT({ty}, {deleted}))"),
            });
        }
        if let Some(f) = self.filter {
            let ty = col(&f.column)?.ty.sql();
            let m = format!("t.{}", ident(&f.column));
            parts.push(format!(
                "{m} IN (SELECT CONVERT({ty}, j.[v]) FROM OPENJSON({values}) WITH ([v] nvarchar(4000) '$') AS j)"
            ));
        }
        Ok(if parts.is_empty() {
            "1 = 1".to_string()
        } else {
            joined(parts, " AND ")
        })
    }
}

fn joined(items: impl IntoIterator<Item = String>, sep: &str) -> String {
    items.into_iter().collect::<Vec<_>>().join(sep)
}

/// The capture trigger of one table (sql/mssql/trigger.sql): a block per entity of
/// `captured` (those of `side` that read `tn` and whose changes travel).
fn trigger_script(
    config: &Config,
    tn: &TableName,
    captured: &[&Entity],
    side: Side,
    base: &[(&'static str, String)],
) -> Result<String, EndpointError> {
    let s = crate::endpoint::template::sections(TRIGGER);
    let section = |name: &str| {
        s.get(name).copied().ok_or_else(|| {
            EndpointError::Config(format!("internal: trigger section {name} missing"))
        })
    };
    let t = table(tn);
    let name = trigger_name(tn);
    let trigger = match &tn.schema {
        Some(s) => format!("{}.{}", ident(s), ident(&name)),
        None => ident(&name),
    };
    // Every entity on this table (whatever its direction): tandem writes the table for each.
    let on_table = config.entities_on(side, tn);
    let mut blocks = Vec::new();
    for e in captured {
        blocks.push(entity_block(
            e,
            side,
            &on_table,
            &t,
            base,
            section("entity")?,
        )?);
    }
    let mut v = base.to_vec();
    v.extend([
        ("table", t.clone()),
        ("table_lit", literal(&t)),
        ("trigger", trigger),
        ("trigger_name_lit", literal(&name)),
        (
            "entities_comment",
            joined(
                captured
                    .iter()
                    .map(|e| format!("entity {}", e.name.replace(['\n', '\r'], " "))),
                ", ",
            ),
        ),
        ("entities", blocks.join("\n")),
    ]);
    fill(section("trigger")?, &v)
}

/// One entity's block of a capture trigger.
fn entity_block(
    e: &Entity,
    side: Side,
    on_table: &[&Entity],
    t: &str,
    base: &[(&'static str, String)],
    template: &str,
) -> Result<String, EndpointError> {
    let ts = e.side(side);
    let key_cols = |alias: &str| {
        joined(
            ts.key
                .iter()
                .enumerate()
                .map(|(n, k)| format!("{alias}.{} AS [c{}]", ident(k), n + 1)),
            ", ",
        )
    };
    let key_json = |alias: &str| {
        joined(
            ts.key
                .iter()
                .enumerate()
                .map(|(n, k)| format!("{alias}.{} AS [k{}]", ident(k), n + 1)),
            ", ",
        )
    };
    let image_json = |alias: &str| image_columns(e, side, alias);
    // Tandem's write for another entity of this table is a change for this one.
    let others: Vec<String> = on_table
        .iter()
        .filter(|o| o.name != e.name)
        .map(|o| literal(&o.name))
        .collect();
    let others_write = if others.is_empty() {
        String::new()
    } else {
        format!(
            "\n                 AND ISNULL(CONVERT(nvarchar(128), SESSION_CONTEXT(N'tandem.entity')), N'') NOT IN ({})",
            others.join(", ")
        )
    };
    let mut v = base.to_vec();
    v.extend([
        ("i_image_cols", image_json("i")),
        ("d_image_cols", image_json("d")),
        ("table_ctx_lit", literal(t)),
        ("others_write", others_write),
        ("entity_lit", literal(&e.name)),
        ("entity_comment", e.name.replace(['\n', '\r'], " ")),
        ("i_key_cols", key_cols("i")),
        ("d_key_cols", key_cols("d")),
        ("i_key_json", key_json("i")),
        ("d_key_json", key_json("d")),
        (
            "n_o_join",
            joined(
                (1..=ts.key.len()).map(|n| format!("n.[c{n}] = o.[c{n}]")),
                " AND ",
            ),
        ),
    ]);
    fill(template, &v)
}

/// The complete install script for one side (batches separated by `GO`).
pub fn install_script(config: &Config, side: Side) -> Result<String, EndpointError> {
    let vars = schema_vars(&config.side(side).schema, side);
    let mut out = fill(INSTALL, &vars)?;
    for (t, entities) in config.captured_tables(side) {
        out.push('\n');
        out.push_str(&trigger_script(config, t, &entities, side, &vars)?);
    }
    out.push('\n');
    out.push_str(&fill(INSTALL_END, &vars)?);
    Ok(out)
}

/// The uninstall script for one side.
pub fn uninstall_script(config: &Config, side: Side) -> Result<String, EndpointError> {
    fill(UNINSTALL, &schema_vars(&config.side(side).schema, side))
}

/// Statements that depend on the config only.
#[derive(Debug, Clone)]
pub struct Common {
    pub claim: String,
    pub claim_batch: String,
    pub fingerprint_save: String,
    pub fingerprint_list: String,
    pub links_by_own: String,
    pub mark_sent: String,
    pub suspended_list: String,
    pub resubmit: String,
    pub discard: String,
    pub status_outbox: String,
    pub status_links: String,
    pub status_conflicts: String,
    pub install_state: String,
    pub server: String,
    pub table_exists: String,
    pub sequence_exists: String,
    pub table_columns: String,
    pub table_unique_keys: String,
    pub rollback: String,
    pub session: String,
}

/// The look-up through reference table `t`: rows whose `by` is one of `@P1` (a JSON array of
/// texts), with `out` as `{"v": ...}` (see `endpoint::Reference`).
pub fn look_up(t: &TableName, by: &str, out: &str) -> Result<String, EndpointError> {
    let s = sections(STATEMENTS);
    let text = s
        .get("look_up")
        .ok_or_else(|| EndpointError::Config("internal: statement look_up missing".into()))?;
    fill(
        text,
        &[("table", table(t)), ("by", ident(by)), ("out", ident(out))],
    )
}

impl Common {
    /// Fills every common statement for `side`.
    pub fn build(config: &Config, side: Side) -> Result<Common, EndpointError> {
        let vars = schema_vars(&config.side(side).schema, side);
        let s = sections(STATEMENTS);
        let get = |name: &str| -> Result<String, EndpointError> {
            let t = s.get(name).ok_or_else(|| {
                EndpointError::Config(format!("internal: statement {name} missing"))
            })?;
            fill(t, &vars)
        };
        Ok(Common {
            claim: get("claim")?,
            claim_batch: get("claim_batch")?,
            fingerprint_save: get("fingerprint_save")?,
            fingerprint_list: get("fingerprint_list")?,
            links_by_own: get("links_by_own")?,
            mark_sent: get("mark_sent")?,
            suspended_list: get("suspended_list")?,
            resubmit: get("resubmit")?,
            discard: get("discard")?,
            status_outbox: get("status_outbox")?,
            status_links: get("status_links")?,
            status_conflicts: get("status_conflicts")?,
            install_state: get("install_state")?,
            server: get("server")?,
            table_exists: get("table_exists")?,
            sequence_exists: get("sequence_exists")?,
            table_columns: get("table_columns")?,
            table_unique_keys: get("table_unique_keys")?,
            rollback: get("rollback")?,
            session: get("session")?,
        })
    }
}

/// One entity's table on this side, with the column types from the catalog.
#[derive(Debug, Clone)]
pub struct EntityPlan {
    pub name: String,
    /// The table as the config names it (for messages).
    pub table: String,
    /// The table quoted for T-SQL; also the session-context value that marks tandem's writes.
    pub table_sql: String,
    pub key: Vec<String>,
    pub key_given: bool,
    /// The columns a row carries, in the order of its JSON array: key columns first.
    pub row_cols: Vec<Column>,
    /// Every catalog column by name (to decode images).
    pub by_name: HashMap<String, Column>,
    pub peer: Option<Column>,
}

impl EntityPlan {
    /// The position of a column in the row array.
    pub fn pos(&self, col: &str) -> Option<usize> {
        self.row_cols.iter().position(|c| c.name == col)
    }
}

/// Everything that depends on the column types: per-entity plans and the batches.
#[derive(Debug, Clone)]
pub struct Plan {
    pub entities: HashMap<String, EntityPlan>,
    pub apply: String,
    pub write_back: String,
    pub in_flight: HashMap<String, String>,
}

/// Placeholder values for a template.
type Vars = Vec<(&'static str, String)>;

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn entity_plan(
    e: &Entity,
    side: Side,
    columns: &[Column],
) -> Result<(EntityPlan, Vars), EndpointError> {
    let ts = e.side(side);
    let by_name: HashMap<String, Column> = columns
        .iter()
        .map(|c| (c.name.clone(), c.clone()))
        .collect();
    let find = |name: &str, role: &str| {
        by_name.get(name).cloned().ok_or_else(|| {
            EndpointError::Config(format!(
                "entity {}, side {side} table {}: {role} column {name:?} does not exist (run `tandem check`)",
                e.name, ts.table
            ))
        })
    };
    // Written here: the columns that travel here, the peer id column, the constants (on
    // insert only).
    let mut cols: Vec<String> = Vec::new();
    for c in e.written_columns(side) {
        let n = c.name(side).to_string();
        if !cols.contains(&n) {
            cols.push(n);
        }
    }
    if let Some(p) = &ts.peer_id_column {
        if !cols.contains(p) {
            cols.push(p.clone());
        }
    }
    // A soft delete's mark is written live on insert and update (the row carries the value;
    // a delete carries the deleted value, see the soft_delete block).
    let soft = e.soft_delete_at(side);
    if let Some(sd) = soft {
        if !cols.contains(&sd.column) {
            cols.push(sd.column.clone());
        }
    }
    let constants: Vec<String> = e
        .constants_at(side)
        .map(|k| k.column.clone())
        .filter(|k| !cols.contains(k))
        .collect();
    cols.extend(constants.iter().cloned());
    let mut row_cols = Vec::new();
    for k in &ts.key {
        row_cols.push(find(k, "key")?);
    }
    for c in &cols {
        if !ts.key.contains(c) {
            row_cols.push(find(c, "mapped")?);
        }
    }
    let key_cols: Vec<&Column> = row_cols.iter().take(ts.key.len()).collect();
    for k in &key_cols {
        if k.ty.key_input_type().is_none() {
            return Err(EndpointError::Config(format!(
                "entity {}, side {side} table {}: key column {:?} is of type {}, which tandem cannot use as a key on SQL Server (integer, decimal, money, bit, char/varchar/nchar/nvarchar, uniqueidentifier or date)",
                e.name, ts.table, k.name, k.ty.sql()
            )));
        }
    }
    let set_cols: Vec<&Column> = row_cols
        .iter()
        .skip(ts.key.len())
        .filter(|c| !constants.contains(&c.name))
        .collect();
    let insert_cols: Vec<&Column> = row_cols.iter().filter(|c| cols.contains(&c.name)).collect();
    let t = table(&ts.table);
    let with_row = joined(
        row_cols
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{} {} '$[{i}]'", ident(&c.name), c.ty.input_type())),
        ", ",
    );
    let row_proj = joined(
        row_cols.iter().map(|c| {
            format!(
                "{} AS {}",
                c.ty.project(&format!("j.{}", ident(&c.name))),
                ident(&c.name)
            )
        }),
        ", ",
    );
    let with_key = joined(
        key_cols.iter().enumerate().map(|(i, c)| {
            format!(
                "{} {} '$[{i}]'",
                ident(&c.name),
                c.ty.key_input_type().unwrap_or_default()
            )
        }),
        ", ",
    );
    let canonical = |alias: &str| {
        let tokens: Vec<String> = key_cols
            .iter()
            .map(|c| {
                c.ty.canonical_token(&format!("{alias}.{}", ident(&c.name)))
                    .unwrap_or_default()
            })
            .collect();
        format!("N'[' + {} + N']'", tokens.join(" + N',' + "))
    };
    let identity_insert = insert_cols.iter().any(|c| c.identity);
    // How the apply learns the key an inserted row got. SCOPE_IDENTITY() and the given key
    // need no OUTPUT clause (which Babelfish cannot run with INSERT ... SELECT); a key from
    // another default (NEWID(), a sequence) is read with OUTPUT ... INTO, and a missing one
    // fails the change alone rather than leaving it unlinked.
    let identity_key = match key_cols.as_slice() {
        [k] if k.identity && !e.key_is_given(side) => Some(*k),
        _ => None,
    };
    let (output_key, key_back) = if e.key_is_given(side) {
        (
            String::new(),
            "INSERT INTO @ins (k) VALUES (@given);".to_string(),
        )
    } else if let Some(k) = identity_key {
        let v = format!("CONVERT({}, SCOPE_IDENTITY())", k.ty.sql());
        (
            String::new(),
            format!(
                "INSERT INTO @ins (k) VALUES (N'[' + {} + N']');",
                k.ty.canonical_token(&v).unwrap_or_default()
            ),
        )
    } else {
        (
            format!("OUTPUT {} INTO @ins (k)\n    ", canonical("inserted")),
            format!(
                "IF NOT EXISTS (SELECT 1 FROM @ins) THROW 51002, {}, 1;",
                literal(&format!(
                    "entity {}, table {}: the key the new row got could not be read back (OUTPUT ... INTO returned nothing)",
                    e.name, ts.table
                ))
            ),
        )
    };
    let peer = match &ts.peer_id_column {
        Some(p) => Some(find(p, "peer_id_column")?),
        None => None,
    };
    let vars = vec![
        ("entity_lit", literal(&e.name)),
        ("table", t.clone()),
        ("table_ctx_lit", literal(&t)),
        ("with_row", with_row),
        ("row_proj", row_proj),
        ("with_key", with_key),
        (
            "t_k_join",
            joined(
                key_cols
                    .iter()
                    .map(|c| format!("t.{0} = k.{0}", ident(&c.name))),
                " AND ",
            ),
        ),
        (
            "native_key_k",
            joined(
                key_cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("k.{} AS [k{}]", ident(&c.name), i + 1)),
                ", ",
            ),
        ),
        ("canonical_key_r", canonical("r")),
        ("canonical_key_t", canonical("t")),
        (
            "t_r_natural_join",
            joined(
                e.side(side.other())
                    .key
                    .iter()
                    .filter_map(|k| e.columns.iter().find(|c| c.name(side.other()) == k))
                    .map(|c| format!("t.{0} = r.{0}", ident(c.name(side)))),
                " AND ",
            ),
        ),
        ("output_key", output_key),
        ("key_back", key_back),
        ("image_t", image_of_t(e, side)),
        (
            "set_list",
            joined(
                set_cols
                    .iter()
                    .map(|c| format!("t.{0} = r.{0}", ident(&c.name))),
                ", ",
            ),
        ),
        (
            "t_set_cols",
            joined(
                set_cols.iter().map(|c| format!("t.{}", ident(&c.name))),
                ", ",
            ),
        ),
        (
            "r_set_cols",
            joined(
                set_cols.iter().map(|c| format!("r.{}", ident(&c.name))),
                ", ",
            ),
        ),
        (
            "cols",
            joined(insert_cols.iter().map(|c| ident(&c.name)), ", "),
        ),
        (
            "r_cols",
            joined(
                insert_cols.iter().map(|c| format!("r.{}", ident(&c.name))),
                ", ",
            ),
        ),
        (
            "identity_on",
            if identity_insert {
                format!("SET IDENTITY_INSERT {t} ON;\n    ")
            } else {
                String::new()
            },
        ),
        (
            "identity_off",
            if identity_insert {
                format!("SET IDENTITY_INSERT {t} OFF;")
            } else {
                String::new()
            },
        ),
        (
            "peer_col",
            peer.as_ref().map(|p| ident(&p.name)).unwrap_or_default(),
        ),
        (
            "peer_input",
            peer.as_ref().map(|p| p.ty.input_type()).unwrap_or_default(),
        ),
        (
            "peer_proj",
            peer.as_ref()
                .map(|p| p.ty.project("j.[v]"))
                .unwrap_or_default(),
        ),
    ];
    let mut vars = vars;
    if let Some(sd) = soft {
        let Some((at, mark)) = row_cols
            .iter()
            .enumerate()
            .find(|(_, c)| c.name == sd.column)
        else {
            return Err(EndpointError::Config(format!(
                "entity {}, side {side} table {}: soft_delete column {:?} does not exist (run `tandem check`)",
                e.name, ts.table, sd.column
            )));
        };
        let m = format!("t.{}", ident(&mark.name));
        let (deleted, live) = match &sd.flag {
            None => ("CURRENT_TIMESTAMP".to_string(), format!("{m} IS NULL")),
            Some(_) => (
                "s.[v]".to_string(),
                format!("({m} IS NULL OR {m} <> s.[v])"),
            ),
        };
        vars.extend([
            ("mark", ident(&mark.name)),
            ("mark_deleted", deleted),
            ("mark_live", live),
            ("mark_input", mark.ty.input_type()),
            ("mark_proj", mark.ty.project("j.[v]")),
            ("mark_at", at.to_string()),
        ]);
    }
    let plan = EntityPlan {
        name: e.name.clone(),
        table: ts.table.to_string(),
        table_sql: t,
        key: ts.key.clone(),
        key_given: e.key_is_given(side),
        row_cols,
        by_name,
        peer,
    };
    Ok((plan, vars))
}

impl Plan {
    /// Builds the batches of `side` from the config and the catalog (`tables`: each
    /// entity's columns on this side).
    pub fn build(
        config: &Config,
        side: Side,
        tables: &HashMap<String, Vec<Column>>,
    ) -> Result<Plan, EndpointError> {
        let base = schema_vars(&config.side(side).schema, side);
        let s = sections(ENTITY);
        let section = |name: &str| -> Result<&'static str, EndpointError> {
            s.get(name)
                .copied()
                .ok_or_else(|| EndpointError::Config(format!("internal: section {name} missing")))
        };
        let mut blocks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut entities = HashMap::new();
        let mut in_flight = HashMap::new();
        let mut identity_off = Vec::new();
        for e in &config.entities {
            let cols = tables.get(&e.name).map(Vec::as_slice).unwrap_or(&[]);
            let (plan, mut vars) = entity_plan(e, side, cols)?;
            vars.extend(base.iter().cloned());
            // A row of this entity that child rows here refer to is not a second copy to drop.
            vars.push((
                "no_children",
                crate::endpoint::template::no_children(config, &e.name, side, ident, table),
            ));
            // Blocks go into the batches without their comments (entity.sql documents them).
            let f = |name: &str| -> Result<String, EndpointError> {
                let text = fill(section(name)?, &vars)?;
                Ok(joined(
                    text.lines()
                        .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
                        .map(str::to_string),
                    "\n",
                ))
            };
            // Changes of entities that travel here are applied here; links of entities that
            // travel from here are written back here.
            if e.direction.flows(side.other()) {
                if plan.key_given {
                    blocks.entry("given").or_default().push(f("given_key")?);
                }
                blocks.entry("native").or_default().push(f("native_key")?);
                blocks.entry("lock").or_default().push(f("lock")?);
                // Where the other side's key is given by values and keys are drawn here,
                // those values are a natural unique key here.
                if !plan.key_given && e.key_is_given(side.other()) {
                    blocks
                        .entry("holds_natural")
                        .or_default()
                        .push(f("holds_natural")?);
                    // The same lookup for a record new here (two created under one key).
                    blocks
                        .entry("newcomer_holder")
                        .or_default()
                        .push(f("natural_holder")?);
                }
                blocks.entry("requeue").or_default().push(f("requeue")?);
                let delete = if e.soft_delete_at(side).is_some() {
                    "soft_delete"
                } else {
                    "delete"
                };
                blocks.entry("delete").or_default().push(f(delete)?);
                // A row tandem may remove alone: nothing refers to it, and deletes are real.
                if !config.is_referenced(&e.name) && e.soft_delete_at(side).is_none() {
                    blocks.entry("leaf_delete").or_default().push(f("delete")?);
                    // Where the other side's key is given by values and keys are drawn
                    // here, those values are a natural unique key here.
                    if !plan.key_given && e.key_is_given(side.other()) {
                        blocks
                            .entry("natural_holder")
                            .or_default()
                            .push(f("natural_holder")?);
                    }
                }
                if vars.iter().any(|(n, v)| *n == "set_list" && !v.is_empty()) {
                    blocks.entry("update").or_default().push(f("update")?);
                }
                let has_insert_cols = vars.iter().any(|(n, v)| *n == "cols" && !v.is_empty());
                let insert = match &e.side(side).key_from {
                    // Tandem numbers the records it creates (a legacy key without a default).
                    Some(from) => {
                        let var = |name: &str| {
                            vars.iter()
                                .find(|(n, _)| *n == name)
                                .map(|(_, v)| v.clone())
                                .unwrap_or_default()
                        };
                        let after = |v: String| if v.is_empty() { v } else { format!(", {v}") };
                        let mut kv = vars.clone();
                        kv.push((
                            "key_col",
                            e.side(side)
                                .key
                                .first()
                                .map(|k| ident(k))
                                .unwrap_or_default(),
                        ));
                        kv.push(("cols_after_key", after(var("cols"))));
                        kv.push(("r_cols_after_key", after(var("r_cols"))));
                        let draw = match from {
                            KeyFrom::Sequence(seq) => {
                                kv.push(("sequence", table(seq)));
                                fill(section("key_from_sequence")?, &kv)?
                            }
                            KeyFrom::MaxPlusOne => fill(section("key_from_max")?, &kv)?,
                        };
                        kv.push(("key_draw", draw.trim().to_string()));
                        let text = fill(section("insert_key_from")?, &kv)?;
                        joined(
                            text.lines()
                                .filter(|l| {
                                    !l.trim_start().starts_with("--") && !l.trim().is_empty()
                                })
                                .map(str::to_string),
                            "\n",
                        )
                    }
                    None => f(if has_insert_cols {
                        "insert"
                    } else {
                        "insert_defaults"
                    })?,
                };
                blocks.entry("insert").or_default().push(insert);
                if vars
                    .iter()
                    .any(|(n, v)| *n == "identity_off" && !v.is_empty())
                {
                    identity_off.push(format!("SET IDENTITY_INSERT {} OFF;", plan.table_sql));
                }
            }
            if e.direction.flows(side) {
                for c in e.columns.iter().filter(|c| c.parent.is_some()) {
                    let name = c.name(side);
                    let Some(col) = plan.by_name.get(name) else {
                        return Err(EndpointError::Config(format!(
                            "entity {}, side {side} table {}: ref column {name:?} does not exist (run `tandem check`)",
                            e.name, plan.table
                        )));
                    };
                    let shown = Shown::of(e, side);
                    let mut v = vars.clone();
                    v.extend([
                        (
                            "parent_lit",
                            literal(c.parent.as_deref().unwrap_or_default()),
                        ),
                        ("ref", ident(name)),
                        (
                            "key_given",
                            if e.key_is_given(side) { "1" } else { "0" }.to_string(),
                        ),
                        (
                            "ref_input",
                            col.ty
                                .key_input_type()
                                .unwrap_or_else(|| col.ty.input_type()),
                        ),
                        (
                            "t_key_json",
                            joined(
                                plan.key
                                    .iter()
                                    .enumerate()
                                    .map(|(n, k)| format!("t.{} AS [k{}]", ident(k), n + 1)),
                                ", ",
                            ),
                        ),
                        (
                            "visible",
                            shown.predicate(
                                &plan.by_name,
                                &format!("entity {}, side {side} table {}", e.name, plan.table),
                                &literal(&shown.deleted_text),
                                &literal(&shown.in_json),
                            )?,
                        ),
                    ]);
                    let text = fill(section("children_resend")?, &v)?;
                    blocks.entry("children_resend").or_default().push(joined(
                        text.lines()
                            .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
                            .map(str::to_string),
                        "\n",
                    ));
                }
                blocks
                    .entry("wb_native")
                    .or_default()
                    .push(f("native_key")?);
                blocks.entry("exists").or_default().push(f("exists")?);
                if plan.peer.is_some() {
                    blocks.entry("peer").or_default().push(f("peer_update")?);
                }
                if e.soft_delete_at(side).is_none() {
                    blocks.entry("dup").or_default().push(f("drop_duplicate")?);
                }
            }
            in_flight.insert(e.name.clone(), f("in_flight")?);
            entities.insert(e.name.clone(), plan);
        }
        let block = |name: &str, n: usize| {
            let parts = blocks.get(name).cloned().unwrap_or_default();
            if parts.is_empty() {
                // A statement, not just a comment: an empty BEGIN TRY ... END TRY (or BEGIN
                // ... END) is a syntax error. NOCOUNT is ON already, so this changes nothing.
                indent("SET NOCOUNT ON; -- (no entity)", n)
            } else {
                indent(&parts.join("\n"), n)
            }
        };
        let codes = |list: &[u32]| joined(list.iter().map(u32::to_string), ", ");
        let mut vars = base.clone();
        vars.extend([
            ("incoming_lit", side_lit(side.other())),
            ("here_lit", side_lit(side)),
            // Who wins a conflict (entity.sql), one text for both places apply.sql decides,
            // indented for them.
            (
                "winner_case",
                fill(
                    section("winner_case")?,
                    &[
                        ("here_lit", side_lit(side)),
                        ("incoming_lit", side_lit(side.other())),
                    ],
                )?
                .lines()
                .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
                .map(|l| match l.strip_prefix("    ") {
                    Some(rest) => format!("{}{rest}", " ".repeat(28)),
                    None => l.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
            ),
            ("row_errors", codes(ROW_ERRORS)),
            ("transient_errors", codes(TRANSIENT_ERRORS)),
            ("given_key_blocks", block("given", 24)),
            ("native_key_blocks", block("native", 20)),
            ("delete_blocks", block("delete", 24)),
            ("lock_blocks", block("lock", 24)),
            ("requeue_blocks", block("requeue", 36)),
            ("leaf_delete_blocks", block("leaf_delete", 40)),
            ("natural_holder_blocks", block("natural_holder", 28)),
            ("newcomer_holder_blocks", block("newcomer_holder", 28)),
            ("holds_natural_blocks", block("holds_natural", 20)),
            ("children_resend_blocks", block("children_resend", 32)),
            ("update_blocks", block("update", 24)),
            ("insert_blocks", block("insert", 24)),
            (
                "identity_off_all",
                if identity_off.is_empty() {
                    String::new()
                } else {
                    indent(&identity_off.join("\n"), 12)
                },
            ),
            ("peer_update_blocks", block("peer", 16)),
        ]);
        let apply = fill(APPLY, &vars)?;
        let mut wb_vars = vars.clone();
        wb_vars.retain(|(n, _)| *n != "native_key_blocks");
        wb_vars.push(("native_key_blocks", block("wb_native", 8)));
        wb_vars.push(("exists_blocks", block("exists", 12)));
        wb_vars.retain(|(n, _)| *n != "lock_blocks");
        wb_vars.push(("lock_blocks", block("lock", 12)));
        wb_vars.push(("drop_duplicate_blocks", block("dup", 24)));
        let write_back = fill(WRITE_BACK, &wb_vars)?;
        Ok(Plan {
            entities,
            apply,
            write_back,
            in_flight,
        })
    }
}

/// What `run` sends at run time, for review next to the install script: the common
/// statements, and the templates of the batches that are completed with the column types.
pub fn runtime_listing(common: &Common) -> String {
    let mut out = String::from(
        "\n-- Statements tandem sends at run time on this side (for review; not run by install):\n",
    );
    let mut add = |name: &str, text: &str| {
        out.push_str(&format!("\n-- {name}\n-- "));
        out.push_str(&text.trim().replace('\n', "\n-- "));
        out.push('\n');
    };
    for (n, t) in [
        ("claim", &common.claim),
        ("claim_batch", &common.claim_batch),
        ("mark_sent", &common.mark_sent),
        ("links_by_own", &common.links_by_own),
        ("session", &common.session),
        ("rollback", &common.rollback),
    ] {
        add(n, t);
    }
    add(
        "apply batch (sql/mssql/apply.sql; per-entity parts from sql/mssql/entity.sql, typed from the catalog at run time)",
        APPLY,
    );
    add("write-back batch (sql/mssql/write_back.sql)", WRITE_BACK);
    add("per-entity parts (sql/mssql/entity.sql)", ENTITY);
    add(
        "backfill and verify (sql/mssql/bulk.sql; per entity, typed from the catalog at run time)",
        BULK,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(ident("ORDER_NO"), "[ORDER_NO]");
        assert_eq!(ident("a]b; drop"), "[a]]b; drop]");
        assert_eq!(literal("it's"), "N'it''s'");
        let t = TableName {
            schema: Some("dbo".into()),
            name: "My Table".into(),
        };
        assert_eq!(table(&t), "[dbo].[My Table]");
    }

    #[test]
    fn batches_split_on_go_lines_only() {
        let b = batches("SELECT 1;\nGO\n\nSELECT 'GO';\n go \nCREATE TRIGGER x\nGO\n");
        assert_eq!(b.len(), 3);
        assert!(b[1].contains("'GO'"));
        assert!(b[2].starts_with("CREATE TRIGGER"));
    }

    #[test]
    fn trigger_names_stay_within_128_characters() {
        let long = TableName {
            schema: None,
            name: "x".repeat(200),
        };
        let n = trigger_name(&long);
        assert_eq!(n.chars().count(), 128);
        assert_eq!(n, trigger_name(&long));
        let other = TableName {
            schema: None,
            name: format!("{}y", "x".repeat(199)),
        };
        assert_ne!(n, trigger_name(&other));
    }

    #[test]
    fn every_section_is_found() {
        let s = sections(STATEMENTS);
        for n in [
            "claim",
            "links_by_own",
            "session",
            "rollback",
            "table_columns",
        ] {
            assert!(s.contains_key(n), "{n}");
        }
        let e = sections(ENTITY);
        for n in [
            "native_key",
            "given_key",
            "lock",
            "update",
            "insert",
            "insert_defaults",
            "insert_key_from",
            "key_from_sequence",
            "key_from_max",
            "delete",
            "peer_update",
            "drop_duplicate",
            "in_flight",
        ] {
            assert!(e.contains_key(n), "{n}");
            assert!(!e[n].contains("-- name:"), "{n}");
        }
    }
}
