//! Loading and validating `tandem.toml`.
//!
//! The file is first deserialized into spanned "raw" structures (module
//! `raw`) so that every problem can point at the line and column of the
//! offending TOML item. A `Builder` then interpolates `${ENV}` references,
//! checks everything it can, and converts the raw structures into the public,
//! validated [`Config`]. Problems are collected rather than returned early so
//! that a user fixes a broken file in one round trip.
//!
//! The parts: `raw` (the file as written, with spans), `build` (the `Builder` that validates
//! and converts, and `${ENV}` expansion), `render` (line index, problem rendering).
//! [`Side`] and [`Secret`] live in their own modules and are re-exported here.

mod build;
mod raw;
mod render;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;

pub use crate::secret::{redact, Secret, SecretFile, SecretFileError, Token};
pub use crate::side::Side;
pub use render::{ConfigError, Problem};

use build::Builder;
use render::{parse_error_message, LineIndex};

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// The database engine of one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    /// PostgreSQL (`kind = "postgres"`).
    Postgres,
    /// Microsoft SQL Server (`kind = "mssql"`).
    Mssql,
}

/// Which way changes of an entity travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// A → B and B → A (`"both"`, the default).
    Both,
    /// A → B only (`"a_to_b"`).
    AToB,
    /// B → A only (`"b_to_a"`).
    BToA,
}

impl Direction {
    /// Does a change captured at `from` travel to the other side?
    pub fn flows(self, from: Side) -> bool {
        match self {
            Direction::Both => true,
            Direction::AToB => from == Side::A,
            Direction::BToA => from == Side::B,
        }
    }
}

/// Who wins when both sides changed the same row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Side A's version is kept (`"a_wins"`).
    AWins,
    /// Side B's version is kept (`"b_wins"`).
    BWins,
    /// The most recent change is kept (`"newest_wins"`, the default).
    NewestWins,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from (for messages).
    pub path: PathBuf,
    /// The old system.
    pub a: SideConfig,
    /// The new system.
    pub b: SideConfig,
    /// Tuning of the sync loop.
    pub sync: SyncConfig,
    /// The status page of `run --listen` (`[service]`).
    pub service: ServiceConfig,
    /// What to sync, in config order.
    pub entities: Vec<Entity>,
}

impl Config {
    /// The database settings of `side`.
    pub fn side(&self, side: Side) -> &SideConfig {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// The entity called `name`, if any.
    pub fn entity(&self, name: &str) -> Option<&Entity> {
        self.entities.iter().find(|e| e.name == name)
    }

    /// Whether an entity refers to `name` (a `ref` column): its records may have children.
    pub fn is_referenced(&self, name: &str) -> bool {
        self.entities
            .iter()
            .any(|e| e.columns.iter().any(|c| c.parent.as_deref() == Some(name)))
    }

    /// Where records of entity `name` are referred to at `side`: each child entity's table
    /// there with the column holding the parent's key (a ref, so the parent's key is one
    /// column).
    pub fn references_to(&self, name: &str, side: Side) -> Vec<(&TableName, &str)> {
        self.entities
            .iter()
            .flat_map(|e| {
                e.columns
                    .iter()
                    .filter(|c| c.parent.as_deref() == Some(name))
                    .map(move |c| (&e.side(side).table, c.name(side)))
            })
            .collect()
    }

    /// The tables of `side` whose changes travel, each with the entities that read it and
    /// flow from `side` (config order): one capture trigger per table, whatever the number of
    /// entities on it (several entities may share a table).
    pub fn captured_tables(&self, side: Side) -> Vec<(&TableName, Vec<&Entity>)> {
        let mut out: Vec<(&TableName, Vec<&Entity>)> = Vec::new();
        for e in self.entities.iter().filter(|e| e.direction.flows(side)) {
            let t = &e.side(side).table;
            match out.iter_mut().find(|(u, _)| *u == t) {
                Some((_, es)) => es.push(e),
                None => out.push((t, vec![e])),
            }
        }
        out
    }

    /// The entities whose table on `side` is `table` (any direction): tandem writes the table
    /// for each of them.
    pub fn entities_on(&self, side: Side, table: &TableName) -> Vec<&Entity> {
        self.entities
            .iter()
            .filter(|e| e.side(side).table == *table)
            .collect()
    }

    /// Entities ordered so that every parent (target of a `ref`) comes before
    /// its children; otherwise config order is kept.
    pub fn entities_parents_first(&self) -> Vec<&Entity> {
        let mut placed = vec![false; self.entities.len()];
        let mut order = Vec::with_capacity(self.entities.len());
        for index in 0..self.entities.len() {
            self.place_after_parents(index, &mut placed, &mut order);
        }
        order
    }

    fn place_after_parents<'c>(
        &'c self,
        index: usize,
        placed: &mut [bool],
        order: &mut Vec<&'c Entity>,
    ) {
        if placed[index] {
            return;
        }
        // Marked before recursing so that a cycle (impossible in a validated
        // config, but `Config` is constructible by hand) cannot recurse forever.
        placed[index] = true;
        let entity = &self.entities[index];
        for parent in entity.parents() {
            if let Some(p) = self.entities.iter().position(|e| e.name == parent) {
                self.place_after_parents(p, placed, order);
            }
        }
        order.push(entity);
    }
}

/// Connection settings of one database (`[a]` or `[b]`).
#[derive(Debug, Clone)]
pub struct SideConfig {
    /// The database engine.
    pub kind: DbKind,
    /// The connection string, `${ENV}` already expanded (with `url_file`: the file's content
    /// when the config was loaded; connections read the file again, see [`Self::current_url`]).
    pub url: Secret,
    /// `url_file`: the connection string is kept in this file.
    pub url_file: Option<SecretFile>,
    /// `password_file`: the password is kept in this file; it wins over one in the url.
    pub password_file: Option<SecretFile>,
    /// Maximum number of pooled connections (default 8).
    pub pool_size: u32,
    /// Schema holding tandem's own objects (default `"tandem"`).
    pub schema: String,
}

impl SideConfig {
    /// The connection string as it is now: `url_file` is read again, so a connection opened
    /// after a rotation uses the new one.
    pub fn current_url(&self) -> Result<Secret, SecretFileError> {
        match &self.url_file {
            Some(file) => file.read(),
            None => Ok(self.url.clone()),
        }
    }

    /// The password from `password_file` as it is now (`None` without one).
    pub fn current_password(&self) -> Result<Option<Secret>, SecretFileError> {
        self.password_file
            .as_ref()
            .map(SecretFile::read)
            .transpose()
    }
}

/// `[service]`: who may act on the status page of `run --listen`.
#[derive(Debug, Clone, Default)]
pub struct ServiceConfig {
    /// The operator token, written in the config (usually as `${ENV}`).
    pub token: Option<Token>,
    /// The operator token kept in a file, read again at every login (rotation).
    pub token_file: Option<SecretFile>,
}

impl ServiceConfig {
    /// The token now, if one is configured (`token_file` read anew).
    pub fn current_token(&self) -> Result<Option<Token>, SecretFileError> {
        match (&self.token, &self.token_file) {
            (Some(t), _) => Ok(Some(t.clone())),
            (None, Some(f)) => f.read().map(|s| Some(Token::new(s.expose().to_string()))),
            (None, None) => Ok(None),
        }
    }
}

/// Tuning of the sync loop (`[sync]`).
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Outbox rows claimed per batch (default 1000; later updates of the same records are
    /// folded in on top, up to 4 times as many).
    pub batch_size: usize,
    /// Longest wait between polls when idle (default 1000 ms).
    pub poll_interval_ms: u64,
    /// Attempts before a change is suspended (default 10).
    pub max_attempts: u32,
    /// First retry delay (default 200 ms).
    pub retry_min_ms: u64,
    /// Longest retry delay (default 60000 ms).
    pub retry_max_ms: u64,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            batch_size: 1000,
            poll_interval_ms: 1000,
            max_attempts: 10,
            retry_min_ms: 200,
            retry_max_ms: 60_000,
        }
    }
}

/// One synced thing: a table on A mapped to a table on B (`[[entities]]`).
#[derive(Debug, Clone)]
pub struct Entity {
    /// Unique name, used by `ref` and in tandem's own bookkeeping.
    pub name: String,
    /// Which way changes travel.
    pub direction: Direction,
    /// Who wins when both sides changed the same row.
    pub on_conflict: ConflictPolicy,
    /// The table on side A.
    pub a: TableSide,
    /// The table on side B.
    pub b: TableSide,
    /// Mapped columns, in config order.
    pub columns: Vec<ColumnMap>,
    /// Columns of one side that records tandem creates there get a fixed value (`const`).
    pub constants: Vec<Constant>,
    /// `soft_delete`: on one side a record is deleted by marking a column, not by a DELETE.
    pub soft_delete: Option<SoftDelete>,
    /// `filter`: on one side only the rows whose column holds one of these values are synced.
    pub filter: Option<RowFilter>,
}

/// `soft_delete = { b = "deleted_at" }` (a timestamp: NULL is live, set is deleted) or
/// `soft_delete = { a = "DELETED", value = "Y", live = "N" }` (a flag: the row is deleted when
/// the column holds `value`; tandem writes `live` in the records it creates or brings back).
/// A delete arriving at that side sets the mark; a change there that sets it travels as a
/// delete, one that clears it as an insert (the record is created again at the other side).
#[derive(Debug, Clone, PartialEq)]
pub struct SoftDelete {
    pub side: Side,
    pub column: String,
    /// The flag form: (deleted, live) values; None for the timestamp form.
    pub flag: Option<(Value, Value)>,
}

impl SoftDelete {
    /// Whether a row image of its side is soft-deleted. A column missing from the image (an
    /// older capture) is read as live.
    pub fn deleted(&self, image: &crate::model::Image) -> bool {
        let v = image.get(&self.column).unwrap_or(&Value::Null);
        match &self.flag {
            None => !v.is_null(),
            Some((deleted, _)) => same_text(v, deleted),
        }
    }

    /// The value written in records tandem creates or updates at its side (NULL, or `live`).
    pub fn live_value(&self) -> Value {
        self.flag
            .as_ref()
            .map_or(Value::Null, |(_, live)| live.clone())
    }
}

/// `filter = { a = "SITE_ID", equals = 3 }` or `{ a = "SITE_ID", in = [3, 4] }`: on that side
/// only rows whose column holds one of `values` (compared by their text) are synchronised;
/// records tandem creates there get the first value.
#[derive(Debug, Clone, PartialEq)]
pub struct RowFilter {
    pub side: Side,
    pub column: String,
    /// At least one; JSON scalars (string, integer or boolean).
    pub values: Vec<Value>,
    /// The constant records created at `side` get (`column` = the first value).
    pub constant: Constant,
}

impl RowFilter {
    /// Whether a row image of its side is inside the filter.
    pub fn admits(&self, image: &crate::model::Image) -> bool {
        let v = image.get(&self.column).unwrap_or(&Value::Null);
        self.values.iter().any(|f| same_text(v, f))
    }
}

/// Whether a captured value is a soft delete's or filter's value: compared by text, trailing
/// spaces aside (a padded `char(n)`, which both dialects' `=` and PostgreSQL's `::text` ignore
/// as well, so the mapping and the SQL of backfill and verify agree). NULL is no value.
fn same_text(v: &Value, configured: &Value) -> bool {
    match (
        crate::model::value_text(v),
        crate::model::value_text(configured),
    ) {
        (Some(a), Some(b)) => a.trim_end_matches(' ') == b.trim_end_matches(' '),
        _ => false,
    }
}

/// A column of one side that every record tandem inserts there gets `value` (`{ a = "ORIGIN",
/// const = "NEW" }`); updates leave it, and it never travels to the other side.
#[derive(Debug, Clone, PartialEq)]
pub struct Constant {
    pub side: Side,
    pub column: String,
    /// A JSON scalar (string, integer, float or boolean).
    pub value: Value,
}

impl Entity {
    /// Whether a `ref` column names this entity itself (employees.reports_to → employee): its
    /// records are ordered parent first within a batch, and cycles are broken (see
    /// `sync::order`).
    pub fn refers_to_itself(&self) -> bool {
        self.columns
            .iter()
            .any(|c| c.parent.as_deref() == Some(self.name.as_str()))
    }

    /// The columns tandem writes at `side`: mapped columns that travel there, in config order.
    pub fn written_columns(&self, side: Side) -> impl Iterator<Item = &ColumnMap> {
        self.columns.iter().filter(move |c| c.written_at(side))
    }

    /// The constants of `side` (written on insert only), the row filter's value among them.
    pub fn constants_at(&self, side: Side) -> impl Iterator<Item = &Constant> {
        self.constants
            .iter()
            .chain(self.filter.as_ref().map(|f| &f.constant))
            .filter(move |c| c.side == side)
    }

    /// Whether a row image captured at `side` is outside what the entity synchronises there:
    /// soft-deleted, or outside the row filter. Such a record is absent for tandem.
    pub fn hidden(&self, side: Side, image: &crate::model::Image) -> bool {
        self.soft_delete
            .as_ref()
            .is_some_and(|s| s.side == side && s.deleted(image))
            || self
                .filter
                .as_ref()
                .is_some_and(|f| f.side == side && !f.admits(image))
    }

    /// The soft delete of `side`, if that side has one.
    pub fn soft_delete_at(&self, side: Side) -> Option<&SoftDelete> {
        self.soft_delete.as_ref().filter(|s| s.side == side)
    }

    /// Whether `side` shows only some rows of its table (soft delete or filter there).
    pub fn restricted_at(&self, side: Side) -> bool {
        self.soft_delete_at(side).is_some() || self.filter.as_ref().is_some_and(|f| f.side == side)
    }

    /// The columns of `side` a change of this entity is made of: the key, the mapped columns,
    /// the soft delete's mark and the filter's column (the capture trigger compares these).
    pub fn read_columns(&self, side: Side) -> Vec<&str> {
        let mut read: Vec<&str> = self.side(side).key.iter().map(String::as_str).collect();
        let extra = self
            .soft_delete_at(side)
            .map(|s| s.column.as_str())
            .into_iter()
            .chain(
                self.filter
                    .as_ref()
                    .filter(|f| f.side == side)
                    .map(|f| f.column.as_str()),
            );
        for c in self.columns.iter().map(|c| c.name(side)).chain(extra) {
            if !read.contains(&c) {
                read.push(c);
            }
        }
        read
    }

    /// The table of `side`.
    pub fn side(&self, side: Side) -> &TableSide {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }

    /// True when every key column of `side` is the target of a mapped column
    /// (the key comes from the other side); false when `side` generates its key.
    pub fn key_is_given(&self, side: Side) -> bool {
        let key = &self.side(side).key;
        !key.is_empty()
            && key
                .iter()
                .all(|k| self.columns.iter().any(|c| c.name(side) == k))
    }

    /// Other entity names referenced by `ref`, deduplicated, in column order (a reference to
    /// the entity itself is not among them: see [`Entity::refers_to_itself`]).
    pub fn parents(&self) -> Vec<&str> {
        let mut parents: Vec<&str> = Vec::new();
        for parent in self.columns.iter().filter_map(|c| c.parent.as_deref()) {
            if parent != self.name && !parents.contains(&parent) {
                parents.push(parent);
            }
        }
        parents
    }
}

/// The table of one side of an entity.
#[derive(Debug, Clone)]
pub struct TableSide {
    /// The table, as written in the config.
    pub table: TableName,
    /// Primary key columns (at least one).
    pub key: Vec<String>,
    /// A column of this table that tandem fills with the OTHER side's key.
    pub peer_id_column: Option<String>,
    /// How tandem numbers the records it creates here, for a key without a default that the
    /// legacy application numbers itself (`key_from`); None: the key's default.
    pub key_from: Option<KeyFrom>,
}

/// Where tandem takes the key of a record it creates on a side (`key_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFrom {
    /// `"sequence NAME"`: the next value of that sequence (`schema.name` or `name`).
    Sequence(TableName),
    /// `"max+1"`: one more than the largest key, with the table locked against other writers
    /// until the batch commits (so the legacy application's own max+1 waits, never collides).
    MaxPlusOne,
}

/// A table name, `schema.table` or `table`, case kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    /// The part before the first dot, if there is a dot.
    pub schema: Option<String>,
    /// The rest.
    pub name: String,
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(schema) => write!(f, "{schema}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One mapped column: A's column `a` corresponds to B's column `b`.
#[derive(Debug, Clone)]
pub struct ColumnMap {
    /// The column on side A.
    pub a: String,
    /// The column on side B.
    pub b: String,
    /// Code translation, if the two sides encode values differently.
    pub values: Option<ValueMap>,
    /// The `ref` key: the parent entity whose id map translates this column.
    pub parent: Option<String>,
    /// A built-in converter (`convert`), applied A → B and inverted B → A (see
    /// `mapping::convert`).
    pub convert: Option<Converter>,
    /// The column's own way (`direction`; default both): a column that does not travel into
    /// a side is never written there (left as it is, its default on insert).
    pub direction: Direction,
    /// A look-up through a reference table tandem does not sync (`lookup`): one side's column
    /// holds the reference row's `key` (a surrogate id), the other side's its `value` (a
    /// natural key); resolved per batch at the side holding the table.
    pub lookup: Option<Lookup>,
}

/// `lookup = { b_table = "countries", key = "id", value = "iso_code" }`: the reference table
/// lives on `side` (`a_table` or `b_table`); that side's column holds the table's `key`
/// column, the other side's column holds its `value` column. A → B and B → A each replace one
/// by the other, through one read of the table per batch (values as parameters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The side whose database holds the reference table (and whose column holds `key`).
    pub side: Side,
    /// The reference table, `schema.table` or `table`.
    pub table: TableName,
    /// Its column the `side` column holds (usually its id).
    pub key: String,
    /// Its column the other side's column holds (the natural key: a code, a name).
    pub value: String,
}

impl Lookup {
    /// For a change travelling into `to`: the reference column a value is found by, and the
    /// one it is replaced with.
    pub fn by_and_out(&self, to: Side) -> (&str, &str) {
        if to == self.side {
            (&self.value, &self.key)
        } else {
            (&self.key, &self.value)
        }
    }
}

impl ColumnMap {
    /// Whether values of this column are compared after conversion (a converter, or a
    /// `values` map several A codes share a B value in): such columns follow the lossy rule at
    /// apply and are compared by tandem at verify (`mapping::convert::equal`).
    pub fn converted(&self) -> bool {
        self.convert.is_some() || self.values.as_ref().is_some_and(|m| !m.prefer.is_empty())
    }

    /// Whether tandem writes this column at `side` (it travels from the other side).
    pub fn written_at(&self, side: Side) -> bool {
        self.direction.flows(side.other())
    }

    /// The column name on `side` of a mapping.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// Code map. `pairs` are (A value, B value); A values are JSON strings (TOML keys), B values
/// JSON scalars. The B → A direction uses the inverse; where several A codes share a B value
/// (many-to-one), the one listed in `prefer` is written back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ValueMap {
    /// (A value, B value), in config order.
    pub pairs: Vec<(Value, Value)>,
    /// A codes written back for B values that several A codes share (`prefer`); empty for a
    /// one-to-one map.
    pub prefer: Vec<String>,
}

/// A built-in converter of a column (`convert`): a function A → B and its inverse B → A.
/// The functions are in `mapping::convert`; this is what the config says.
#[derive(Debug, Clone, PartialEq)]
pub enum Converter {
    /// `"trim"`: trailing spaces (a padded `char(n)`) are dropped A → B; B → A as is. Lossy.
    Trim,
    /// `"bool"` (A `1`/`0`) or `{ flag = [ON, OFF] }`: A's two codes ↔ B's boolean.
    Flag { on: Value, off: Value },
    /// `{ scale = N }`: B's value is A's × 10^N (cents ↔ euros: `scale = -2`), exact decimals.
    Scale(i32),
    /// `{ round = N }`: A's number rounded to N decimals A → B (half away from zero); B → A as
    /// is. Lossy.
    Round(u32),
    /// `{ timezone = "Europe/Paris", ambiguous = "earlier" | "later" }`: A's local date-time in
    /// the zone ↔ B's instant. Lossy (a repeated hour, a skipped hour).
    Timezone { zone: chrono_tz::Tz, later: bool },
}

// ---------------------------------------------------------------------------
// Entry points
// ---------------------------------------------------------------------------

/// Reads, interpolates `${ENV}`, parses and validates. Reports ALL problems at
/// once.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| ConfigError {
        path: path.to_path_buf(),
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: redact(&format!("cannot read the config file: {err}")),
        }],
    })?;
    parse(&text, path, &|name| std::env::var(name).ok())
}

/// Same as [`load`] from text (`path` is used in messages, and relative `url_file` and
/// `password_file` paths start from its folder); `env` looks up variables.
pub fn parse(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let lines = LineIndex::new(text);
    let document: raw::Document = match toml::from_str(text) {
        Ok(document) => document,
        Err(err) => {
            return Err(ConfigError {
                path: path.to_path_buf(),
                problems: vec![lines.problem(err.span(), &parse_error_message(&err, text))],
            })
        }
    };
    let mut builder = Builder {
        env,
        lines: &lines,
        dir: path.parent().filter(|d| !d.as_os_str().is_empty()),
        problems: Vec::new(),
    };
    let config = builder.document(document, path);
    if builder.problems.is_empty() {
        Ok(config)
    } else {
        let mut problems: Vec<Problem> = builder
            .problems
            .iter()
            .map(|(at, message)| lines.problem(at.clone(), message))
            .collect();
        problems.sort_by_key(|p| (p.line, p.column));
        Err(ConfigError {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// Where to find the config: `--config` if given, else `$TANDEM_CONFIG`, else
/// `./tandem.toml`.
pub fn resolve_path(cli: Option<&Path>) -> PathBuf {
    resolve_path_from(cli, std::env::var_os("TANDEM_CONFIG"))
}

fn resolve_path_from(cli: Option<&Path>, from_env: Option<std::ffi::OsString>) -> PathBuf {
    match (cli, from_env) {
        (Some(path), _) => path.to_path_buf(),
        // An exported-but-empty variable is treated as unset rather than as
        // the current directory, which could never be a config file.
        (None, Some(path)) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from("tandem.toml"),
    }
}
