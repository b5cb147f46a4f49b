//! `tandem check`, once for every dialect: each dialect only *describes* a configured table
//! (its catalog read into a [`TableDesc`], with the dialect's own verdicts on a column written
//! into it as reasons), and [`check`] compares the description with the config.
//!
//! Checks that are not about one table (SQL Server's version and compatibility level) stay in
//! the dialect.

use std::collections::BTreeSet;

use crate::config::{ColumnMap, Converter, Entity, Lookup, Side, TableName};
use crate::endpoint::SchemaProblem;

/// A table as the catalog has it, in the terms the check needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDesc {
    /// In the catalog's order. A dialect whose server resolves names case-insensitively names
    /// a column as the config spells it where the server would find it by that spelling.
    pub columns: Vec<ColumnDesc>,
    /// Every primary key and unique index (without a predicate), each as its column names.
    pub unique_keys: Vec<BTreeSet<String>>,
    /// The server compares names case-insensitively (a key matches an index in any case).
    pub case_insensitive: bool,
}

/// One column of a [`TableDesc`]. The `Option<String>` fields are the dialect's reasons why
/// the column cannot serve in some role; None where it can.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ColumnDesc {
    pub name: String,
    /// The type as the dialect writes it, e.g. `decimal(12,2)`.
    pub type_name: String,
    /// An insert that omits the column still gives it a value (a default or an identity).
    pub defaulted: bool,
    /// Why tandem cannot carry a value of this type at all.
    pub unusable: Option<String>,
    /// Why the column's name cannot be used (e.g. a dot that FOR JSON PATH reads as nesting).
    pub bad_name: Option<String>,
    /// What makes the column unwritable (e.g. "computed or a rowversion").
    pub read_only: Option<String>,
    /// Why the column cannot be (part of) a record's key.
    pub not_a_key: Option<String>,
    /// Why the capture trigger cannot read the column.
    pub uncapturable: Option<String>,
    /// What the column holds, in terms both dialects share (for the pair comparison).
    pub kind: Kind,
    /// The column refuses NULL.
    pub not_null: bool,
}

/// What a column holds, in terms both dialects share: enough to tell whether a value of one
/// side's column fits the other's ([`compare`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// An integer type with up to `digits` decimal digits (smallint 5, int 10, bigint 19).
    Integer {
        digits: u32,
    },
    /// numeric/decimal; None where unconstrained (PostgreSQL's bare `numeric`).
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Float,
    Bool,
    /// Character data of at most `chars` characters (None: unbounded).
    Text {
        chars: Option<u32>,
    },
    Date,
    Time,
    /// A date and time without a zone (timestamp, datetime2, datetime).
    Timestamp,
    /// An instant (timestamptz, datetimeoffset).
    TimestampTz,
    Uuid,
    Binary,
    Json,
    Xml,
    /// A type the comparison does not judge (arrays, ranges, user types…).
    #[default]
    Unknown,
}

impl Kind {
    /// The kind of a PostgreSQL type as `format_type` writes it.
    pub fn from_postgres(t: &str) -> Kind {
        let (base, args) = match t.find('(') {
            Some(i) => {
                let end = t[i..].find(')').map_or(t.len(), |j| i + j);
                (
                    format!("{}{}", &t[..i], &t[(end + 1).min(t.len())..]),
                    t[i + 1..end]
                        .split(',')
                        .filter_map(|n| n.trim().parse::<u32>().ok())
                        .collect::<Vec<u32>>(),
                )
            }
            None => (t.to_string(), Vec::new()),
        };
        match base.trim() {
            "smallint" => Kind::Integer { digits: 5 },
            "integer" => Kind::Integer { digits: 10 },
            "bigint" => Kind::Integer { digits: 19 },
            "numeric" => Kind::Decimal {
                precision: args.first().copied(),
                scale: args.first().map(|_| args.get(1).copied().unwrap_or(0)),
            },
            "real" | "double precision" => Kind::Float,
            "boolean" => Kind::Bool,
            "text" | "citext" => Kind::Text { chars: None },
            "character varying" | "character" => Kind::Text {
                chars: if base.trim() == "character" {
                    Some(args.first().copied().unwrap_or(1))
                } else {
                    args.first().copied()
                },
            },
            "date" => Kind::Date,
            "time without time zone" => Kind::Time,
            "timestamp without time zone" => Kind::Timestamp,
            "timestamp with time zone" => Kind::TimestampTz,
            "uuid" => Kind::Uuid,
            "bytea" => Kind::Binary,
            "json" | "jsonb" => Kind::Json,
            "xml" => Kind::Xml,
            _ => Kind::Unknown,
        }
    }

    /// Families whose values convert into each other as they travel.
    fn family(self) -> &'static str {
        match self {
            Kind::Integer { .. } | Kind::Decimal { .. } | Kind::Float => "number",
            Kind::Text { .. } => "text",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::Timestamp => "timestamp without time zone",
            Kind::TimestampTz => "timestamp with time zone",
            Kind::Uuid => "uuid",
            Kind::Binary => "binary",
            Kind::Json => "json",
            Kind::Xml => "xml",
            Kind::Unknown => "unknown",
        }
    }
}

/// How serious a misfit between the two sides of a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Some values cannot arrive (too long, out of range, NULL into NOT NULL): those changes
    /// will fail alone, with their column named. `check` reports it and exits 0.
    Warning,
    /// No value, or no insert, can arrive as configured, or the sides can never compare equal:
    /// `check` exits 2.
    Error,
}

/// A misfit between the two sides of an entity, found by [`compare`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairProblem {
    pub entity: String,
    pub level: Level,
    pub message: String,
}

/// The words a dialect's messages differ in.
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    /// After "table T does not exist in DB": how the dialect finds a table by its name.
    pub missing_table: &'static str,
    /// After "did you mean "X"?": how the dialect compares names.
    pub name_case: &'static str,
    /// The dialect's word for an identity column, e.g. `IDENTITY`.
    pub identity: &'static str,
    /// How to give a key column a generated value, e.g. `IDENTITY(1,1)`.
    pub identity_example: &'static str,
}

/// Why a soft delete's flag value or a filter's value cannot be held by a column of `kind`
/// (they are compared by their text: a boolean column takes true/false, a number column
/// integers, a text column anything); None when it fits or the type is not judged.
fn value_misfit(kind: Kind, v: &serde_json::Value) -> Option<String> {
    let text = crate::model::value_text(v).unwrap_or_default();
    let fits = match kind {
        Kind::Bool => v.is_boolean(),
        Kind::Integer { .. } => v.is_i64() || v.is_u64(),
        Kind::Decimal { scale, .. } => (v.is_i64() || v.is_u64()) && scale.unwrap_or(0) == 0,
        Kind::Text { chars } => chars.is_none_or(|n| text.chars().count() <= n as usize),
        Kind::Unknown => true,
        _ => false,
    };
    (!fits).then(|| {
        format!("the value {v} does not fit it (values are compared by their text: use a text, integer or boolean column, and values of its type)")
    })
}

/// Every problem of `entity` on `side`, given its table's description (None: the table does
/// not exist in `target`, the database as the operator knows it).
pub fn check(
    e: &Entity,
    side: Side,
    table: Option<&TableDesc>,
    target: &str,
    words: &Wording,
) -> Vec<SchemaProblem> {
    let ts = e.side(side);
    let mut problems = Vec::new();
    let mut problem = |message: String| {
        problems.push(SchemaProblem {
            side,
            entity: e.name.clone(),
            message,
        })
    };
    let Some(table) = table else {
        problem(format!(
            "table {} does not exist in {target} ({})",
            ts.table, words.missing_table
        ));
        return problems;
    };
    let column = |name: &str| table.columns.iter().find(|c| c.name == name);

    let mut wanted: Vec<(&str, &str)> = ts.key.iter().map(|k| (k.as_str(), "key")).collect();
    wanted.extend(e.columns.iter().map(|c| (c.name(side), "mapped")));
    if let Some(p) = &ts.peer_id_column {
        wanted.push((p.as_str(), "peer_id_column"));
    }
    wanted.extend(
        e.constants
            .iter()
            .filter(|k| k.side == side)
            .map(|k| (k.column.as_str(), "const")),
    );
    if let Some(sd) = e.soft_delete_at(side) {
        wanted.push((sd.column.as_str(), "soft_delete"));
    }
    let filter = e.filter.as_ref().filter(|f| f.side == side);
    if let Some(f) = filter {
        wanted.push((f.column.as_str(), "filter"));
    }
    for (col, role) in &wanted {
        let Some(c) = column(col) else {
            let hint = table
                .columns
                .iter()
                .find(|c| c.name.eq_ignore_ascii_case(col))
                .map(|c| format!(" (did you mean {:?}? {})", c.name, words.name_case))
                .unwrap_or_default();
            problem(format!(
                "{role} column {col:?} does not exist in table {}{hint}",
                ts.table
            ));
            continue;
        };
        if let Some(why) = &c.unusable {
            problem(format!(
                "{role} column {col:?} of table {} is of type {}: {why}",
                ts.table, c.type_name
            ));
        }
        if let Some(why) = &c.bad_name {
            problem(format!(
                "{role} column {col:?} of table {}: {why}",
                ts.table
            ));
        }
        if *role != "key" {
            if let Some(what) = &c.read_only {
                problem(format!(
                    "{role} column {col:?} of table {} is {what}: tandem cannot write it",
                    ts.table
                ));
            }
        }
    }

    // A soft delete's mark and a filter's column: a type their values fit.
    if let Some(sd) = e.soft_delete_at(side) {
        if let Some(c) = column(&sd.column) {
            let why = match &sd.flag {
                None => (!matches!(
                    c.kind,
                    Kind::Date | Kind::Timestamp | Kind::TimestampTz | Kind::Unknown
                ))
                .then(|| "a soft delete without `value` marks the time (NULL is live): it needs a date or timestamp column; for a flag column give `value` and `live`".to_string()),
                Some((deleted, live)) => [deleted, live]
                    .into_iter()
                    .find_map(|v| value_misfit(c.kind, v)),
            };
            if let Some(why) = why {
                problem(format!(
                    "soft_delete column {:?} of table {} is of type {}: {why}",
                    sd.column, ts.table, c.type_name
                ));
            }
        }
    }
    if let Some(f) = filter {
        if let Some(c) = column(&f.column) {
            if let Some(why) = f.values.iter().find_map(|v| value_misfit(c.kind, v)) {
                problem(format!(
                    "filter column {:?} of table {} is of type {}: {why}",
                    f.column, ts.table, c.type_name
                ));
            }
        }
    }

    // The capture trigger reads the key and the mapped columns: some types break it.
    if e.direction.flows(side) {
        let read: Vec<&str> = wanted
            .iter()
            .filter(|(_, role)| *role != "const")
            .map(|(c, _)| *c)
            .collect();
        for c in table
            .columns
            .iter()
            .filter(|c| read.contains(&c.name.as_str()))
        {
            if let Some(why) = &c.uncapturable {
                problem(format!(
                    "column {:?} of table {} is of type {}: {why}",
                    c.name, ts.table, c.type_name
                ));
            }
        }
    }

    let Some(key) = ts.key.iter().map(|k| column(k)).collect::<Option<Vec<_>>>() else {
        return problems;
    };
    for (k, c) in ts.key.iter().zip(&key) {
        if let Some(why) = &c.not_a_key {
            problem(format!(
                "key column {k:?} of table {} is of type {}: {why}",
                ts.table, c.type_name
            ));
        }
    }
    let same =
        |a: &String, b: &String| a == b || (table.case_insensitive && a.eq_ignore_ascii_case(b));
    let wanted_key: BTreeSet<String> = ts.key.iter().cloned().collect();
    let keyed = table.unique_keys.iter().any(|u| {
        u.len() == wanted_key.len() && u.iter().all(|c| wanted_key.iter().any(|k| same(c, k)))
    });
    if !keyed {
        problem(format!(
            "no primary key or unique index on ({}) of table {}: tandem finds records by their key",
            ts.key.join(", "),
            ts.table
        ));
    }
    // Only a side that changes flow into has records created by tandem (a reference entity
    // that travels A → B never creates one at A).
    if ts.key_from.is_some() {
        // Tandem numbers the records it creates here: the key must be a number.
        for (k, c) in ts.key.iter().zip(&key) {
            let number = matches!(c.kind, Kind::Integer { .. } | Kind::Unknown)
                || matches!(c.kind, Kind::Decimal { scale, .. } if scale.unwrap_or(0) == 0);
            if !number {
                problem(format!(
                    "key column {k:?} of table {} is of type {}: key_from numbers records, so the key must be an integer",
                    ts.table, c.type_name
                ));
            }
            if c.read_only.is_some() {
                problem(format!(
                    "key column {k:?} of table {} fills itself ({}): tandem cannot give it a key_from value; remove key_from",
                    ts.table,
                    c.read_only.as_deref().unwrap_or_default()
                ));
            }
        }
    } else if !e.key_is_given(side) && e.direction.flows(side.other()) {
        for (k, c) in ts.key.iter().zip(&key) {
            if !c.defaulted {
                problem(format!(
                    "key column {k:?} of table {} has no default or {}, so tandem cannot \
                     create records here: give it one (e.g. {}), or map it from side {}",
                    ts.table,
                    words.identity,
                    words.identity_example,
                    side.other()
                ));
            }
        }
    }
    problems
}

/// The problem of a `key_from` sequence that `target` does not have.
pub fn missing_sequence(e: &Entity, side: Side, seq: &TableName, target: &str) -> SchemaProblem {
    SchemaProblem {
        side,
        entity: e.name.clone(),
        message: format!(
            "key_from names sequence {seq}, which does not exist in {target}: create it (CREATE SEQUENCE {seq} START WITH a number above the legacy keys), or use key_from = \"max+1\""
        ),
    }
}

/// The reference table of a look-up (`lookup` of column `c`, on `l.side`), as found in
/// `target`: it exists, has the `key` and `value` columns, and the column each way of travel
/// finds rows by is unique there (a primary key or a unique index: one row per value), so a
/// look-up is a function both ways.
pub fn check_lookup(
    e: &Entity,
    c: &ColumnMap,
    l: &Lookup,
    table: Option<&TableDesc>,
    target: &str,
) -> Vec<SchemaProblem> {
    let side = l.side;
    let what = format!(
        "column {}.{} looks up {}.{} in reference table {}",
        side.other(),
        c.name(side.other()),
        side,
        c.name(side),
        l.table
    );
    let mut out = Vec::new();
    let mut problem = |message: String| {
        out.push(SchemaProblem {
            side,
            entity: e.name.clone(),
            message,
        })
    };
    let Some(table) = table else {
        problem(format!(
            "{what}, which does not exist in {target} (tandem reads it, never writes it: create it or correct lookup.{}_table)",
            side.name()
        ));
        return out;
    };
    let mut present = true;
    for (role, name) in [("key", &l.key), ("value", &l.value)] {
        if !table.columns.iter().any(|col| col.name == *name) {
            problem(format!(
                "{what}: its {role} column {name} does not exist there (correct lookup.{role})"
            ));
            present = false;
        }
    }
    if !present {
        return out;
    }
    let same = |a: &str, b: &str| {
        if table.case_insensitive {
            a.eq_ignore_ascii_case(b)
        } else {
            a == b
        }
    };
    let unique = |name: &str| {
        table
            .unique_keys
            .iter()
            .any(|k| k.len() == 1 && k.iter().all(|x| same(x, name)))
    };
    // Into `side` a value is found by `value`; out of it, by `key`.
    let mut by = Vec::new();
    if e.direction.flows(side.other()) && c.written_at(side) {
        by.push(&l.value);
    }
    if e.direction.flows(side) && c.written_at(side.other()) {
        by.push(&l.key);
    }
    for name in by {
        if !unique(name) {
            problem(format!(
                "{what}: its column {name} is not unique there (no primary key or unique index on it alone), so a value could match several rows; add a unique constraint on {name}"
            ));
        }
    }
    out
}

/// Compares each mapped column pair of `e` in each direction its changes travel, given both
/// sides' tables (issue 15: types compatible, lengths and precision that fit, NOT NULL
/// columns that an insert would leave without a value). Columns missing on a side are left
/// to [`check`].
pub fn compare(e: &Entity, a: &TableDesc, b: &TableDesc) -> Vec<PairProblem> {
    let mut out = Vec::new();
    let table = |side: Side| if side == Side::A { a } else { b };
    for from in [Side::A, Side::B] {
        if !e.direction.flows(from) {
            continue;
        }
        let to = from.other();
        let (src_t, dst_t) = (table(from), table(to));
        let col = |t: &'_ TableDesc, name: &str| t.columns.iter().find(|c| c.name == name).cloned();
        let mut say = |level: Level, message: String| {
            out.push(PairProblem {
                entity: e.name.clone(),
                level,
                message,
            })
        };
        for c in e.written_columns(to) {
            let (Some(s), Some(d)) = (col(src_t, c.name(from)), col(dst_t, c.name(to))) else {
                continue;
            };
            let what = format!(
                "column {from}.{} ({}) → {to}.{} ({})",
                c.name(from),
                s.type_name,
                c.name(to),
                d.type_name
            );
            if c.parent.is_some() || c.lookup.is_some() {
                // Holds a parent's key, translated through its links, or a value found in a
                // reference table (`check_lookup`): the parent's key types, or the reference
                // table's, matter, not this column's.
                continue;
            }
            if let Some(conv) = &c.convert {
                // The converter decides what arrives: the pair is judged through it.
                let (a_kind, b_kind) = if from == Side::A {
                    (s.kind, d.kind)
                } else {
                    (d.kind, s.kind)
                };
                if let Some((level, why)) = through(conv, from, a_kind, b_kind) {
                    say(level, format!("{what}: {why}"));
                }
            } else if let Some(map) = &c.values {
                // The codes of `to` are what arrives.
                if let Kind::Text { chars: Some(max) } = d.kind {
                    for (a_code, b_code) in &map.pairs {
                        let code = if to == Side::A { a_code } else { b_code };
                        let text = crate::model::value_text(code).unwrap_or_default();
                        let n = text.chars().count();
                        if n > max as usize {
                            say(
                                Level::Error,
                                format!("{what}: the code {text:?} ({n} characters) does not fit"),
                            );
                        }
                    }
                }
            } else if let Some((level, why)) = fits(s.kind, d.kind) {
                say(level, format!("{what}: {why}"));
            }
            if d.not_null && !s.not_null {
                say(
                    Level::Warning,
                    format!("{what}: NULL is allowed at {from} but refused at {to} (NOT NULL): such changes will fail"),
                );
            }
        }
        // An insert at `to` writes the key (unless generated), the mapped columns and the
        // peer id column; any other NOT NULL column needs a default.
        let ts = e.side(to);
        let written = |n: &str| {
            ts.key.iter().any(|k| k == n)
                || e.written_columns(to).any(|c| c.name(to) == n)
                || e.constants_at(to).any(|k| k.column == n)
                || e.soft_delete_at(to).is_some_and(|sd| sd.column == n)
                || ts.peer_id_column.as_deref() == Some(n)
        };
        for d in &dst_t.columns {
            if d.not_null && !d.defaulted && d.read_only.is_none() && !written(&d.name) {
                say(
                    Level::Error,
                    format!(
                        "column {to}.{} of table {} is NOT NULL without a default and no mapped column feeds it: tandem's inserts there would fail (map it, or give it a default)",
                        d.name, ts.table
                    ),
                );
            }
        }
    }
    out
}

/// Whether values travelling from `from` through converter `conv` fit, given the kinds of A's
/// column (`a`) and B's (`b`): None when they do. A converter needs the families it converts
/// between (an error otherwise); then sizes are judged as [`fits`] judges them, on what the
/// converter produces.
fn through(conv: &Converter, from: Side, a: Kind, b: Kind) -> Option<(Level, String)> {
    use Kind::*;
    let number = |k: Kind| matches!(k, Integer { .. } | Decimal { .. } | Float | Unknown);
    let text = |k: Kind| matches!(k, Text { .. } | Unknown);
    let error = |m: String| Some((Level::Error, m));
    let (s, d) = if from == Side::A { (a, b) } else { (b, a) };
    match conv {
        Converter::Trim => {
            if !text(a) || !text(b) {
                return error(format!(
                    "convert = \"trim\" needs text on both sides, not {} and {}",
                    a.family(),
                    b.family()
                ));
            }
            fits(s, d)
        }
        Converter::Flag { on, off } => {
            if !matches!(b, Bool | Unknown) {
                return error(format!(
                    "a flag converter needs a boolean at B, not {}",
                    b.family()
                ));
            }
            let codes = [on, off].map(|c| crate::model::value_text(c).unwrap_or_default());
            match a {
                Text { chars } => {
                    let long = codes
                        .iter()
                        .find(|c| chars.is_some_and(|n| c.chars().count() > n as usize));
                    match (long, from) {
                        (Some(c), Side::B) => error(format!("the code {c:?} does not fit")),
                        _ => None,
                    }
                }
                Integer { .. } | Decimal { .. }
                    if codes.iter().all(|c| c.parse::<i64>().is_ok()) =>
                {
                    None
                }
                Unknown => None,
                other => error(format!(
                    "a flag's codes {} and {} do not fit a {} column",
                    codes[0],
                    codes[1],
                    other.family()
                )),
            }
        }
        Converter::Scale(n) => {
            if !number(a) || !number(b) {
                return error(format!(
                    "convert = {{ scale = {n} }} needs numbers on both sides, not {} and {}",
                    a.family(),
                    b.family()
                ));
            }
            let shift = if from == Side::A { *n } else { -*n };
            fits(scaled(s, shift), d)
        }
        Converter::Round(n) => {
            if !number(a) || !number(b) {
                return error(format!(
                    "convert = {{ round = {n} }} needs numbers on both sides, not {} and {}",
                    a.family(),
                    b.family()
                ));
            }
            if from == Side::B {
                return fits(s, d);
            }
            match d {
                Decimal { scale, .. } if scale.unwrap_or(0) < *n => Some((
                    Level::Warning,
                    format!(
                        "rounded to {n} decimals, but the target keeps {}: rounded again there",
                        scale.unwrap_or(0)
                    ),
                )),
                Integer { .. } if *n > 0 => Some((
                    Level::Warning,
                    format!("rounded to {n} decimals, into an integer column: values with a fraction will be refused"),
                )),
                _ => None,
            }
        }
        Converter::Timezone { .. } => {
            if matches!(a, Timestamp | Unknown) && matches!(b, TimestampTz | Unknown) {
                None
            } else {
                error(format!(
                    "a timezone converter needs a date and time without a zone at A and an instant at B, not {} and {}",
                    a.family(),
                    b.family()
                ))
            }
        }
    }
}

/// The kind of a number × 10^`shift` (as `{ scale }` converts it).
fn scaled(k: Kind, shift: i32) -> Kind {
    let (p, sc) = match k {
        Kind::Integer { digits } => (digits, 0),
        Kind::Decimal {
            precision: Some(p),
            scale,
        } => (p, scale.unwrap_or(0)),
        other => return other,
    };
    let int = i64::from(p) - i64::from(sc) + i64::from(shift);
    let scale = (i64::from(sc) - i64::from(shift)).max(0);
    let to = |v: i64| u32::try_from(v.max(0)).unwrap_or(0);
    Kind::Decimal {
        precision: Some(to(int.max(1) + scale)),
        scale: Some(to(scale)),
    }
}

/// Whether a value of kind `s` arrives intact in a column of kind `d`: None when it does.
pub fn fits(s: Kind, d: Kind) -> Option<(Level, String)> {
    use Kind::*;
    let warn = |m: String| Some((Level::Warning, m));
    match (s, d) {
        (Unknown, _) | (_, Unknown) => None,
        (Timestamp, TimestampTz) | (TimestampTz, Timestamp) => Some((
            Level::Error,
            "a time without a zone against one with a zone: tandem does not convert between \
             them (values would shift with the session's zone and verify would never agree); \
             map like with like"
                .into(),
        )),
        (Integer { digits: sd }, Integer { digits: dd }) if sd > dd => warn(format!(
            "integers of up to {sd} digits into {dd}: larger values will be refused"
        )),
        (Integer { digits: sd }, Decimal { precision: Some(p), scale }) => {
            let int = p.saturating_sub(scale.unwrap_or(0));
            (sd > int).then(|| (Level::Warning, format!(
                "integers of up to {sd} digits into {int} integer digits: larger values will be refused"
            )))
        }
        (Decimal { precision, scale }, Integer { digits }) => {
            if scale.unwrap_or(1) > 0 {
                warn("values with a fraction will be refused by an integer column".into())
            } else if precision.is_none_or(|p| p > digits) {
                warn(format!("values beyond {digits} digits will be refused"))
            } else {
                None
            }
        }
        (Float, Integer { .. }) => {
            warn("values with a fraction will be refused by an integer column".into())
        }
        (
            Decimal {
                precision: sp,
                scale: ss,
            },
            Decimal {
                precision: Some(dp),
                scale: ds,
            },
        ) => {
            let ds = ds.unwrap_or(0);
            let dint = dp.saturating_sub(ds);
            match (sp, ss) {
                (Some(_), Some(ss)) if ss > ds => warn(format!(
                    "{ss} decimals into {ds}: values are rounded at the target, and the sides then differ"
                )),
                (Some(sp), ss) if sp.saturating_sub(ss.unwrap_or(0)) > dint => warn(format!(
                    "{} integer digits into {dint}: larger values will be refused",
                    sp.saturating_sub(ss.unwrap_or(0))
                )),
                (None, _) => warn(format!(
                    "an unconstrained numeric into numeric({dp},{ds}): values with more than {dint} integer digits are refused, more than {ds} decimals rounded"
                )),
                _ => None,
            }
        }
        (Float, Decimal { precision: Some(_), scale }) => warn(format!(
            "floating-point values are rounded to {} decimals at the target, and the sides then differ",
            scale.unwrap_or(0)
        )),
        (Text { chars: sc }, Text { chars: Some(dc) }) if sc.is_none_or(|n| n > dc) => {
            warn(format!(
                "values longer than {dc} characters will be refused (the source allows {})",
                sc.map_or("any length".to_string(), |n| n.to_string())
            ))
        }
        (Xml, Text { .. }) | (Text { .. }, Xml) => None,
        // Rendered as strings (ISO dates and times, uuids): they land as that text and parse
        // back, and verify compares the same strings.
        (Uuid | Date | Time | Timestamp, Text { .. }) => None,
        (TimestampTz, Text { .. }) => warn(
            "an instant lands as text with the offset of the writing session, while verify \
             renders instants in UTC: keep the session time zones in UTC, or map like with like"
                .into(),
        ),
        (Json, Text { .. }) | (Text { .. }, Json) => warn(
            "a JSON value lands in a text column as its text and comes back as a JSON string: \
             map json to text on both sides"
                .into(),
        ),
        (Text { .. }, Uuid | Date | Time | Timestamp | TimestampTz | Integer { .. } | Decimal { .. } | Float | Bool) => {
            warn(format!(
                "text into {}: every value must parse as one, or its change is refused",
                d.family()
            ))
        }
        (s, d) if s.family() == d.family() => None,
        (s, d) => Some((
            Level::Error,
            format!(
                "{} against {}: tandem does not convert between them (a converter is needed)",
                s.family(),
                d.family()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const WORDS: Wording = Wording {
        missing_table: "taken exactly",
        name_case: "case matters",
        identity: "IDENTITY",
        identity_example: "IDENTITY(1,1)",
    };

    fn config() -> Config {
        let text = include_str!("../../sql/demo/tandem.toml");
        crate::config::parse(text, std::path::Path::new("tandem.toml"), &|_| {
            Some("postgres://x@localhost/db".into())
        })
        .expect("the demo config parses")
    }

    fn col(name: &str) -> ColumnDesc {
        ColumnDesc {
            name: name.into(),
            type_name: "int".into(),
            defaulted: true,
            ..ColumnDesc::default()
        }
    }

    /// public.orders (side B of entity "order") as the demo creates it.
    fn orders() -> TableDesc {
        TableDesc {
            columns: ["id", "customer", "status", "amount", "legacy_no"]
                .into_iter()
                .map(col)
                .collect(),
            unique_keys: vec![BTreeSet::from(["id".to_string()])],
            case_insensitive: false,
        }
    }

    fn messages(t: Option<&TableDesc>) -> Vec<String> {
        let c = config();
        check(&c.entities[0], Side::B, t, "db", &WORDS)
            .into_iter()
            .map(|p| {
                assert_eq!((p.side, p.entity.as_str()), (Side::B, "order"));
                p.message
            })
            .collect()
    }

    #[test]
    fn a_generated_key_needs_a_default_only_where_changes_flow_in() {
        let mut t = orders();
        t.columns[0].defaulted = false;
        let wanted = r#"key column "id" of table public.orders has no default or IDENTITY, so tandem cannot create records here: give it one (e.g. IDENTITY(1,1)), or map it from side A"#;
        assert_eq!(messages(Some(&t)), vec![wanted.to_string()]);
        let mut c = config();
        let e = &mut c.entities[0];
        e.direction = crate::config::Direction::BToA;
        assert!(
            check(e, Side::B, Some(&t), "db", &WORDS).is_empty(),
            "b_to_a: tandem never creates records at B"
        );
        e.direction = crate::config::Direction::AToB;
        assert_eq!(check(e, Side::B, Some(&t), "db", &WORDS).len(), 1);
    }

    /// `check` finds a soft delete's and a filter's column and judges its type by the form.
    #[test]
    fn soft_delete_and_filter_columns_exist_and_fit_their_values() {
        use crate::config::{Constant, RowFilter, SoftDelete};
        let mut c = config();
        let e = &mut c.entities[0];
        let typed = |name: &str, kind: Kind, type_name: &str| ColumnDesc {
            kind,
            type_name: type_name.into(),
            ..col(name)
        };
        let run = |e: &Entity, extra: Vec<ColumnDesc>| {
            let mut t = orders();
            t.columns.extend(extra);
            check(e, Side::B, Some(&t), "db", &WORDS)
                .into_iter()
                .map(|p| p.message)
                .collect::<Vec<_>>()
        };
        e.soft_delete = Some(SoftDelete {
            side: Side::B,
            column: "deleted_at".into(),
            flag: None,
        });
        e.filter = Some(RowFilter {
            side: Side::B,
            column: "site".into(),
            values: vec![serde_json::json!(3)],
            constant: Constant {
                side: Side::B,
                column: "site".into(),
                value: serde_json::json!(3),
            },
        });
        let fine = vec![
            typed("deleted_at", Kind::TimestampTz, "timestamp with time zone"),
            typed("site", Kind::Integer { digits: 10 }, "integer"),
        ];
        assert_eq!(run(e, fine), Vec::<String>::new());
        assert_eq!(
            run(e, vec![]),
            vec![
                r#"soft_delete column "deleted_at" does not exist in table public.orders"#
                    .to_string(),
                r#"filter column "site" does not exist in table public.orders"#.to_string(),
            ]
        );
        let wrong = vec![
            typed("deleted_at", Kind::Text { chars: Some(1) }, "character(1)"),
            typed("site", Kind::Text { chars: None }, "text"),
        ];
        let m = run(e, wrong.clone());
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].starts_with(r#"soft_delete column "deleted_at" of table public.orders is of type character(1): a soft delete without `value` marks the time"#),
            "{m:?}"
        );
        // A flag on a char(1): "Y"/"N" fit, "YES" does not; a boolean column takes booleans.
        if let Some(sd) = e.soft_delete.as_mut() {
            sd.flag = Some((serde_json::json!("Y"), serde_json::json!("N")));
        }
        assert_eq!(run(e, wrong.clone()), Vec::<String>::new());
        if let Some(sd) = e.soft_delete.as_mut() {
            sd.flag = Some((serde_json::json!("YES"), serde_json::json!("N")));
        }
        let m = run(e, wrong);
        assert!(
            m.len() == 1 && m[0].contains("the value \"YES\" does not fit it"),
            "{m:?}"
        );
        let m = run(
            e,
            vec![
                typed("deleted_at", Kind::Bool, "boolean"),
                typed("site", Kind::Bool, "boolean"),
            ],
        );
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[1].starts_with(r#"filter column "site" of table public.orders is of type boolean: the value 3 does not fit it"#), "{m:?}");
    }

    #[test]
    fn a_fitting_table_has_no_problem() {
        assert_eq!(messages(Some(&orders())), Vec::<String>::new());
    }

    #[test]
    fn a_missing_table_is_the_only_problem() {
        assert_eq!(
            messages(None),
            vec!["table public.orders does not exist in db (taken exactly)"]
        );
    }

    #[test]
    fn each_reason_is_worded_with_role_and_table() {
        let mut t = orders();
        t.columns[1].name = "Customer".into();
        t.columns[2].unusable = Some("no way".into());
        t.columns[3].read_only = Some("computed".into());
        t.columns[0].not_a_key = Some("not as a key".into());
        t.columns[0].defaulted = false;
        t.unique_keys = vec![BTreeSet::from(["ID".to_string()])];
        let m = messages(Some(&t));
        assert_eq!(
            m,
            vec![
                r#"mapped column "customer" does not exist in table public.orders (did you mean "Customer"? case matters)"#,
                r#"mapped column "status" of table public.orders is of type int: no way"#,
                r#"mapped column "amount" of table public.orders is computed: tandem cannot write it"#,
                r#"key column "id" of table public.orders is of type int: not as a key"#,
                "no primary key or unique index on (id) of table public.orders: tandem finds records by their key",
                r#"key column "id" of table public.orders has no default or IDENTITY, so tandem cannot create records here: give it one (e.g. IDENTITY(1,1)), or map it from side A"#,
            ]
        );
        // A case-insensitive server finds the key by the index in any case.
        t.case_insensitive = true;
        assert!(!messages(Some(&t))
            .iter()
            .any(|m| m.starts_with("no primary key")));
    }

    #[test]
    fn postgres_types_are_read_into_shared_kinds() {
        use Kind::*;
        for (t, k) in [
            ("integer", Integer { digits: 10 }),
            (
                "numeric(10,2)",
                Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
            ),
            (
                "numeric(7)",
                Decimal {
                    precision: Some(7),
                    scale: Some(0),
                },
            ),
            (
                "numeric",
                Decimal {
                    precision: None,
                    scale: None,
                },
            ),
            ("character varying(40)", Text { chars: Some(40) }),
            ("character(1)", Text { chars: Some(1) }),
            ("text", Text { chars: None }),
            ("timestamp(3) without time zone", Timestamp),
            ("timestamp with time zone", TimestampTz),
            ("integer[]", Unknown),
        ] {
            assert_eq!(Kind::from_postgres(t), k, "{t}");
        }
    }

    #[test]
    fn pairs_that_fit_say_nothing_and_misfits_say_why() {
        use Kind::*;
        let dec = |p, s| Decimal {
            precision: Some(p),
            scale: Some(s),
        };
        assert_eq!(fits(Integer { digits: 10 }, Integer { digits: 19 }), None);
        assert_eq!(fits(dec(10, 2), dec(12, 2)), None);
        assert_eq!(fits(Text { chars: Some(10) }, Text { chars: None }), None);
        assert_eq!(fits(Integer { digits: 10 }, Float), None);
        let level = |s, d| fits(s, d).map(|(l, _)| l);
        assert_eq!(
            level(Text { chars: Some(40) }, Text { chars: Some(10) }),
            Some(Level::Warning)
        );
        assert_eq!(
            level(Integer { digits: 19 }, Integer { digits: 10 }),
            Some(Level::Warning)
        );
        assert_eq!(level(dec(12, 2), dec(12, 1)), Some(Level::Warning));
        assert_eq!(
            level(dec(12, 2), Integer { digits: 19 }),
            Some(Level::Warning)
        );
        assert_eq!(level(Timestamp, TimestampTz), Some(Level::Error));
        assert_eq!(level(Bool, Integer { digits: 10 }), Some(Level::Error));
        assert_eq!(
            level(Integer { digits: 10 }, Text { chars: None }),
            Some(Level::Error)
        );
        assert_eq!(level(Unknown, Bool), None);
        assert_eq!(fits(Date, Text { chars: Some(10) }), None);
        assert_eq!(level(Json, Text { chars: None }), Some(Level::Warning));
    }

    #[test]
    fn converted_pairs_are_judged_through_their_converter() {
        use crate::config::Converter as C;
        use Kind::*;
        let dec = |p, s| Decimal {
            precision: Some(p),
            scale: Some(s),
        };
        let level = |c: &C, from, a, b| through(c, from, a, b).map(|(l, _)| l);
        let paris = C::Timezone {
            zone: chrono_tz::Europe::Paris,
            later: false,
        };
        // A converter makes a pair that `fits` refuses fine, both ways.
        assert_eq!(level(&paris, Side::A, Timestamp, TimestampTz), None);
        assert_eq!(level(&paris, Side::B, Timestamp, TimestampTz), None);
        assert_eq!(
            level(&paris, Side::A, Date, TimestampTz),
            Some(Level::Error)
        );
        let yn = C::Flag {
            on: serde_json::json!("Y"),
            off: serde_json::json!("N"),
        };
        assert_eq!(level(&yn, Side::A, Text { chars: Some(1) }, Bool), None);
        assert_eq!(
            level(&yn, Side::A, Text { chars: Some(1) }, Integer { digits: 5 }),
            Some(Level::Error)
        );
        let bit = C::Flag {
            on: serde_json::json!(1),
            off: serde_json::json!(0),
        };
        assert_eq!(level(&bit, Side::B, Integer { digits: 5 }, Bool), None);
        assert_eq!(
            level(&yn, Side::B, Integer { digits: 5 }, Bool),
            Some(Level::Error)
        );
        // Cents (integer) ↔ euros: 2 decimals at B fit, 1 does not.
        let cents = C::Scale(-2);
        assert_eq!(
            level(&cents, Side::A, Integer { digits: 10 }, dec(12, 2)),
            None
        );
        assert_eq!(
            level(&cents, Side::A, Integer { digits: 10 }, dec(12, 1)),
            Some(Level::Warning)
        );
        assert_eq!(
            level(&cents, Side::B, Integer { digits: 10 }, dec(10, 2)),
            None
        );
        assert_eq!(level(&C::Round(2), Side::A, Float, dec(10, 2)), None);
        assert_eq!(
            level(&C::Round(2), Side::A, Float, dec(10, 1)),
            Some(Level::Warning)
        );
        assert_eq!(
            level(
                &C::Trim,
                Side::A,
                Text { chars: Some(10) },
                Integer { digits: 5 }
            ),
            Some(Level::Error)
        );
        assert_eq!(
            level(
                &C::Trim,
                Side::A,
                Text { chars: Some(10) },
                Text { chars: Some(10) }
            ),
            None
        );
    }

    #[test]
    fn key_from_needs_no_default_but_a_number() {
        let mut t = orders();
        t.columns[0].defaulted = false;
        let mut c = config();
        c.entities[0].b.key_from = Some(crate::config::KeyFrom::MaxPlusOne);
        assert!(check(&c.entities[0], Side::B, Some(&t), "db", &WORDS).is_empty());
        t.columns[0].kind = Kind::Text { chars: Some(10) };
        let m: Vec<String> = check(&c.entities[0], Side::B, Some(&t), "db", &WORDS)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(
            m[0].contains("key_from numbers records, so the key must be an integer"),
            "{m:?}"
        );
        // SQL Server's description marks an IDENTITY key so when key_from is set.
        t.columns[0].kind = Kind::Integer { digits: 10 };
        t.columns[0].read_only = Some("an IDENTITY".into());
        let m: Vec<String> = check(&c.entities[0], Side::B, Some(&t), "db", &WORDS)
            .into_iter()
            .map(|p| p.message)
            .collect();
        assert_eq!(
            m,
            vec![r#"key column "id" of table public.orders fills itself (an IDENTITY): tandem cannot give it a key_from value; remove key_from"#.to_string()]
        );
    }

    #[test]
    fn a_key_column_may_be_read_only() {
        let mut t = orders();
        t.columns[0].read_only = Some("computed".into());
        assert_eq!(messages(Some(&t)), Vec::<String>::new());
    }
}
