//! Loading and validating `tandem.toml`.
//!
//! The file is first deserialized into spanned "raw" structures (module
//! `raw`) so that every problem can point at the line and column of the
//! offending TOML item. A `Builder` then interpolates `${ENV}` references,
//! checks everything it can, and converts the raw structures into the public,
//! validated [`Config`]. Problems are collected rather than returned early so
//! that a user fixes a broken file in one round trip.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::Value;
use toml::Spanned;

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// Which database: A (the old system) or B (the new one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Side {
    /// The old system.
    A,
    /// The new system.
    B,
}

/// Both sides, for code that treats them alike.
const SIDES: [Side; 2] = [Side::A, Side::B];

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }

    /// Lower-case name, as used for keys in the config file: `"a"` or `"b"`.
    pub fn name(self) -> &'static str {
        match self {
            Side::A => "a",
            Side::B => "b",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::A => "A",
            Side::B => "B",
        })
    }
}

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

/// A connection string. Debug and Display print it with any password
/// replaced by `***` (postgres URL `postgres://user:pw@host/db` →
/// `postgres://user:***@host/db`; ADO.NET `password=...;`/`pwd=...;` →
/// `password=***;`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a connection string.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The real connection string, for handing to a driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The connection string with credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        // The whole value is one URL: its password ends at the authority's last '@', whatever
        // it contains (quotes and spaces end a URL in free text, not here).
        let s = &self.0;
        if let Some(i) = s.find("://") {
            let rest = &s[i + 3..];
            // The last '@' of all: a password may hold an unescaped '/', '?' or '#' (at worst
            // an '@' in the path or query hides a little more than the password).
            let at = rest.rfind('@');
            if let Some((colon, at)) = at.and_then(|at| rest[..at].find(':').map(|c| (c, at))) {
                return format!(
                    "{}{}***{}",
                    &s[..i + 3],
                    &rest[..=colon],
                    redact(&rest[at..])
                );
            }
        }
        redact(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Secret").field(&self.redacted()).finish()
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Redacts credentials in any text (URLs with `user:password@` and ADO.NET
/// `password=`/`pwd=` pairs). Used on error messages too.
pub fn redact(text: &str) -> String {
    redact_password_pairs(&redact_url_passwords(text))
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
    /// The connection string, `${ENV}` already expanded.
    pub url: Secret,
    /// Maximum number of pooled connections (default 8).
    pub pool_size: u32,
    /// Schema holding tandem's own objects (default `"tandem"`).
    pub schema: String,
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
}

impl Entity {
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

    /// Entity names referenced by `ref`, deduplicated, in column order.
    pub fn parents(&self) -> Vec<&str> {
        let mut parents: Vec<&str> = Vec::new();
        for parent in self.columns.iter().filter_map(|c| c.parent.as_deref()) {
            if !parents.contains(&parent) {
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
}

impl ColumnMap {
    /// The column name on `side` of a mapping.
    pub fn name(&self, side: Side) -> &str {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

/// One-to-one code map. `pairs` are (A value, B value); A values are JSON
/// strings (TOML keys), B values JSON scalars. The B → A direction uses the
/// inverse.
#[derive(Debug, Clone, PartialEq)]
pub struct ValueMap {
    /// (A value, B value), in config order.
    pub pairs: Vec<(Value, Value)>,
}

/// Every problem found in one config file; Display prints one per line as
/// `path:line:col: message`.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_problems(.path, .problems))]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// The problems, in file order.
    pub problems: Vec<Problem>,
}

/// One problem in a config file.
#[derive(Debug, Clone)]
pub struct Problem {
    /// 1-based line, 0 when unknown.
    pub line: usize,
    /// 1-based column (in characters), 0 when unknown.
    pub column: usize,
    /// What is wrong, in user terms, credentials redacted.
    pub message: String,
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    if problems.is_empty() {
        return format!("{}: invalid configuration", path.display());
    }
    problems
        .iter()
        .map(|p| {
            if p.line == 0 {
                format!("{}: {}", path.display(), p.message)
            } else {
                format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
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

/// Same as [`load`] from text (`path` is used in messages only); `env` looks
/// up variables.
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

/// The message of a `toml` error, in the file's terms rather than serde's
/// (keys, tables and arrays instead of fields, structs, maps and sequences).
fn parse_error_message(err: &toml::de::Error, text: &str) -> String {
    if err.message().trim().is_empty() {
        // Some syntax errors come without words (a stray character, a carriage return
        // without a line feed): say what is at the spot rather than nothing.
        let found = err
            .span()
            .and_then(|s| text.get(s.start..))
            .and_then(|t| t.chars().next());
        return match found {
            Some(c) => format!(
                "invalid TOML: unexpected character {c:?} here (a stray character, a missing \
                 quote, or a carriage return without a line feed?)"
            ),
            None => "invalid TOML: the file ends too early (an unclosed quote, bracket or \
                     table?)"
                .to_string(),
        };
    }
    let mut message = err
        .message()
        .trim_end()
        .replacen("unknown field", "unknown key", 1)
        .replace("invalid type: map,", "invalid type: table,")
        .replace("invalid type: sequence,", "invalid type: array,")
        .replace("expected a sequence", "expected an array")
        .replace("expected i64", "expected an integer");
    // "expected struct Database" names one of our private types.
    if let Some(start) = message.find("expected struct ") {
        let name_start = start + "expected struct ".len();
        let name_end = message[name_start..]
            .find(|c: char| !c.is_alphanumeric() && c != '_')
            .map_or(message.len(), |i| name_start + i);
        message.replace_range(start..name_end, "expected a table");
    }
    message
}

// ---------------------------------------------------------------------------
// Raw, spanned form of the file
// ---------------------------------------------------------------------------

/// The file as written. Every field is optional so that a missing key becomes
/// one collected problem instead of aborting deserialization.
mod raw {
    use std::fmt;
    use std::marker::PhantomData;
    use std::ops::Range;

    use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
    use serde::Deserialize;
    use toml::Spanned;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Document {
        pub a: Option<Located<Database>>,
        pub b: Option<Located<Database>>,
        pub sync: Option<Located<Sync>>,
        pub entities: Option<Vec<Located<Entity>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Database {
        pub kind: Option<Spanned<String>>,
        pub url: Option<Spanned<String>>,
        // Signed so that negative numbers get our message, not serde's.
        pub pool_size: Option<Spanned<i64>>,
        pub schema: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sync {
        pub batch_size: Option<Spanned<i64>>,
        pub poll_interval_ms: Option<Spanned<i64>>,
        pub max_attempts: Option<Spanned<i64>>,
        pub retry_min_ms: Option<Spanned<i64>>,
        pub retry_max_ms: Option<Spanned<i64>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Entity {
        pub name: Option<Spanned<String>>,
        pub direction: Option<Spanned<String>>,
        pub on_conflict: Option<Spanned<String>>,
        pub a: Option<Located<TableSide>>,
        pub b: Option<Located<TableSide>>,
        pub columns: Option<Vec<Located<Column>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct TableSide {
        pub table: Option<Spanned<String>>,
        pub key: Option<Spanned<Vec<Spanned<String>>>>,
        pub peer_id_column: Option<Spanned<String>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Column {
        pub a: Option<Spanned<String>>,
        pub b: Option<Spanned<String>>,
        pub values: Option<Located<Values>>,
        #[serde(rename = "ref")]
        pub parent: Option<Spanned<String>>,
    }

    /// A `values` table with its entries in file order (`toml::Table` would
    /// sort them, and messages should follow the file). Keys are plain
    /// strings because a key replayed by [`Located`] has no span.
    pub struct Values(pub Vec<(String, Spanned<toml::Value>)>);

    impl<'de> Deserialize<'de> for Values {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct ValuesVisitor;

            impl<'de> Visitor<'de> for ValuesVisitor {
                type Value = Values;

                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a table of codes")
                }

                fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Values, M::Error> {
                    let mut entries = Vec::new();
                    while let Some(key) = map.next_key::<String>()? {
                        entries.push((key, map.next_value()?));
                    }
                    Ok(Values(entries))
                }
            }

            deserializer.deserialize_map(ValuesVisitor)
        }
    }

    // The private protocol of `serde_spanned`, which `toml` speaks to hand a
    // span to `toml::Spanned`. Should it ever change, `Located` still works,
    // only without spans.
    const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
    const SPANNED_START: &str = "$__serde_spanned_private_start";
    const SPANNED_END: &str = "$__serde_spanned_private_end";
    const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
    const SPANNED_FIELDS: [&str; 3] = [SPANNED_START, SPANNED_END, SPANNED_VALUE];

    /// A table with its span when `toml` knows it.
    ///
    /// `toml::Spanned<T>` fails outright on tables that have no span of their
    /// own (those made by dotted keys such as `a.table = "x"`, or implicit
    /// parents of `[x.y]`), which are valid TOML users may well write. This
    /// accepts both and leaves `at` empty for the latter.
    pub struct Located<T> {
        pub at: Option<Range<usize>>,
        pub value: T,
    }

    impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_struct(
                SPANNED_NAME,
                &SPANNED_FIELDS,
                LocatedVisitor(PhantomData),
            )
        }
    }

    struct LocatedVisitor<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
        type Value = Located<T>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Located<T>, M::Error> {
            let first = match map.next_key::<String>()? {
                Some(first) => first,
                None => {
                    let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                    return Ok(Located { at: None, value });
                }
            };
            if first != SPANNED_START {
                // A plain table: hand T the key we already consumed, then the rest.
                let replay = Replay {
                    first: Some(first),
                    map,
                };
                let value = T::deserialize(de::value::MapAccessDeserializer::new(replay))?;
                return Ok(Located { at: None, value });
            }
            let start: usize = map.next_value()?;
            let mut end = None;
            let mut value = None;
            while let Some(key) = map.next_key::<String>()? {
                match key.as_str() {
                    SPANNED_END => end = Some(map.next_value::<usize>()?),
                    SPANNED_VALUE => value = Some(map.next_value::<T>()?),
                    other => return Err(de::Error::unknown_field(other, &SPANNED_FIELDS)),
                }
            }
            match (end, value) {
                (Some(end), Some(value)) => Ok(Located {
                    at: Some(start..end),
                    value,
                }),
                (None, _) => Err(de::Error::missing_field(SPANNED_END)),
                (_, None) => Err(de::Error::missing_field(SPANNED_VALUE)),
            }
        }
    }

    /// A map whose first key was already read.
    struct Replay<M> {
        first: Option<String>,
        map: M,
    }

    impl<'de, M: MapAccess<'de>> MapAccess<'de> for Replay<M> {
        type Error = M::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, M::Error> {
            match self.first.take() {
                Some(key) => seed
                    .deserialize(de::value::StringDeserializer::<M::Error>::new(key))
                    .map(Some),
                None => self.map.next_key_seed(seed),
            }
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, M::Error> {
            self.map.next_value_seed(seed)
        }
    }
}

// ---------------------------------------------------------------------------
// Validation and conversion
// ---------------------------------------------------------------------------

/// Byte range in the config text.
type Span = Range<usize>;
/// Where a problem is, if known.
type Loc = Option<Span>;

/// A string value after `${ENV}` expansion, with its position.
struct Text {
    value: String,
    at: Span,
}

/// Positions kept per entity for the checks that span several entities.
struct EntityLoc {
    name: Loc,
    /// (column index, position of its `ref`), in column order.
    refs: Vec<(usize, Loc)>,
}

/// Positions kept per entity side for the checks across an entity's columns.
#[derive(Default)]
struct TableSideLoc {
    peer_id_column: Loc,
}

/// Positions kept per column for the checks across an entity's columns.
struct ColumnLoc {
    /// Position of the column name on side A and on side B.
    names: [Loc; 2],
    parent: Loc,
}

/// Converts the raw document into a [`Config`], collecting problems.
struct Builder<'b> {
    env: &'b dyn Fn(&str) -> Option<String>,
    lines: &'b LineIndex<'b>,
    problems: Vec<(Loc, String)>,
}

impl Builder<'_> {
    fn report(&mut self, at: Loc, message: impl Into<String>) {
        self.problems.push((at, message.into()));
    }

    fn missing(&mut self, ctx: &str, key: &str, at: &Loc) {
        self.report(at.clone(), format!("{ctx}: missing required key \"{key}\""));
    }

    /// " (first at line N)", or nothing when the position is unknown.
    fn first_at(&self, at: &Loc) -> String {
        match at {
            Some(span) => format!(" (first at line {})", self.lines.position(span.start).0),
            None => String::new(),
        }
    }

    /// Expands `${ENV}` in a string value; `None` (with problems reported)
    /// when a variable is missing, so that no check runs on a half-expanded
    /// value.
    fn text(&mut self, what: &str, raw: Spanned<String>) -> Option<Text> {
        let at = raw.span();
        match interpolate(raw.get_ref(), self.env) {
            Ok(value) => Some(Text { value, at }),
            Err(errors) => {
                for error in errors {
                    self.report(Some(at.clone()), format!("{what}: {error}"));
                }
                None
            }
        }
    }

    fn required_text(
        &mut self,
        ctx: &str,
        key: &str,
        raw: Option<Spanned<String>>,
        table_at: &Loc,
    ) -> Option<Text> {
        match raw {
            Some(raw) => self.text(&format!("{ctx}: {key}"), raw),
            None => {
                self.missing(ctx, key, table_at);
                None
            }
        }
    }

    fn non_empty(&mut self, ctx: &str, key: &str, text: Option<Text>) -> Option<Text> {
        let text = text?;
        if text.value.is_empty() {
            self.report(Some(text.at), format!("{ctx}: {key} must not be empty"));
            return None;
        }
        Some(text)
    }

    /// A string that must be one of `options`; `default` when absent or wrong.
    fn choice<T: Copy>(
        &mut self,
        ctx: &str,
        key: &str,
        text: Option<Text>,
        options: &[(&str, T)],
        default: T,
    ) -> T {
        let Some(text) = text else { return default };
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == text.value) {
            return *value;
        }
        let allowed = options
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.report(
            Some(text.at),
            format!(
                "{ctx}: {key} {:?} is not valid; expected one of {allowed}",
                text.value
            ),
        );
        default
    }

    /// An integer of at least `min` that fits in `T`; `default` when absent or
    /// wrong.
    fn number<T: TryFrom<i64>>(
        &mut self,
        ctx: &str,
        key: &str,
        raw: Option<Spanned<i64>>,
        min: i64,
        default: T,
    ) -> T {
        let Some(raw) = raw else { return default };
        let at = Some(raw.span());
        let value = raw.into_inner();
        if value < min {
            self.report(
                at,
                format!("{ctx}: {key} must be at least {min}, got {value}"),
            );
            return default;
        }
        match T::try_from(value) {
            Ok(value) => value,
            Err(_) => {
                self.report(at, format!("{ctx}: {key} is too large ({value})"));
                default
            }
        }
    }

    // -- document -----------------------------------------------------------

    fn document(&mut self, raw: raw::Document, path: &Path) -> Config {
        let a = self.database(Side::A, raw.a);
        let b = self.database(Side::B, raw.b);
        let sync = self.sync(raw.sync);
        let mut entities = Vec::new();
        let mut locs = Vec::new();
        for (index, raw) in raw.entities.unwrap_or_default().into_iter().enumerate() {
            let (entity, loc) = self.entity(index, raw);
            entities.push(entity);
            locs.push(loc);
        }
        self.check_entities(&entities, &locs);
        Config {
            path: path.to_path_buf(),
            a,
            b,
            sync,
            entities,
        }
    }

    fn database(&mut self, side: Side, raw: Option<raw::Located<raw::Database>>) -> SideConfig {
        let ctx = format!("[{}]", side.name());
        let mut config = SideConfig {
            kind: DbKind::Postgres,
            url: Secret::new(String::new()),
            pool_size: 8,
            schema: "tandem".to_owned(),
        };
        let Some(raw) = raw else {
            self.report(
                None,
                format!("missing required table {ctx} (the database of side {side})"),
            );
            return config;
        };
        let (at, raw) = (raw.at, raw.value);

        let kind = self.required_text(&ctx, "kind", raw.kind, &at);
        config.kind = self.choice(
            &ctx,
            "kind",
            kind,
            &[("postgres", DbKind::Postgres), ("mssql", DbKind::Mssql)],
            DbKind::Postgres,
        );
        let url = self.required_text(&ctx, "url", raw.url, &at);
        if let Some(url) = url {
            // The value may hold a password: say where, never what.
            if url.value.trim().is_empty() {
                self.report(Some(url.at), format!("{ctx}: url is empty"));
            }
            config.url = Secret::new(url.value);
        }
        config.pool_size = self.number(&ctx, "pool_size", raw.pool_size, 1, 8);
        if let Some(raw_schema) = raw.schema {
            let schema = self.text(&format!("{ctx}: schema"), raw_schema);
            if let Some(schema) = self.non_empty(&ctx, "schema", schema) {
                config.schema = schema.value;
            }
        }
        config
    }

    fn sync(&mut self, raw: Option<raw::Located<raw::Sync>>) -> SyncConfig {
        let defaults = SyncConfig::default();
        let Some(raw) = raw else { return defaults };
        let raw = raw.value;
        let ctx = "[sync]";
        let min_at = raw.retry_min_ms.as_ref().map(Spanned::span);
        let max_at = raw.retry_max_ms.as_ref().map(Spanned::span);
        let sync = SyncConfig {
            batch_size: self.number(ctx, "batch_size", raw.batch_size, 1, defaults.batch_size),
            poll_interval_ms: self.number(
                ctx,
                "poll_interval_ms",
                raw.poll_interval_ms,
                1,
                defaults.poll_interval_ms,
            ),
            max_attempts: self.number(
                ctx,
                "max_attempts",
                raw.max_attempts,
                1,
                defaults.max_attempts,
            ),
            retry_min_ms: self.number(
                ctx,
                "retry_min_ms",
                raw.retry_min_ms,
                1,
                defaults.retry_min_ms,
            ),
            retry_max_ms: self.number(
                ctx,
                "retry_max_ms",
                raw.retry_max_ms,
                1,
                defaults.retry_max_ms,
            ),
        };
        if sync.retry_min_ms > sync.retry_max_ms {
            // Point at whichever of the two the user actually wrote.
            self.report(
                min_at.or(max_at),
                format!(
                    "{ctx}: retry_min_ms ({}) must not exceed retry_max_ms ({})",
                    sync.retry_min_ms, sync.retry_max_ms
                ),
            );
        }
        sync
    }

    // -- one entity ---------------------------------------------------------

    fn entity(&mut self, index: usize, raw: raw::Located<raw::Entity>) -> (Entity, EntityLoc) {
        let (at, raw) = (raw.at, raw.value);
        let unnamed = entity_label("", index);
        let name = self.required_text(&unnamed, "name", raw.name, &at);
        let name = self.non_empty(&unnamed, "name", name);
        let ctx = match &name {
            Some(name) => entity_label(&name.value, index),
            None => unnamed,
        };
        let name_at = name.as_ref().map(|n| n.at.clone());

        let direction = raw
            .direction
            .and_then(|d| self.text(&format!("{ctx}: direction"), d));
        let direction = self.choice(
            &ctx,
            "direction",
            direction,
            &[
                ("both", Direction::Both),
                ("a_to_b", Direction::AToB),
                ("b_to_a", Direction::BToA),
            ],
            Direction::Both,
        );
        let on_conflict = raw
            .on_conflict
            .and_then(|c| self.text(&format!("{ctx}: on_conflict"), c));
        let on_conflict = self.choice(
            &ctx,
            "on_conflict",
            on_conflict,
            &[
                ("a_wins", ConflictPolicy::AWins),
                ("b_wins", ConflictPolicy::BWins),
                ("newest_wins", ConflictPolicy::NewestWins),
            ],
            ConflictPolicy::NewestWins,
        );

        let (a, a_loc) = self.table_side(&ctx, Side::A, raw.a, &at);
        let (b, b_loc) = self.table_side(&ctx, Side::B, raw.b, &at);

        let mut columns = Vec::new();
        let mut column_locs = Vec::new();
        for (index, raw) in raw.columns.unwrap_or_default().into_iter().enumerate() {
            let (column, loc) = self.column(&ctx, index, raw, &at);
            columns.push(column);
            column_locs.push(loc);
        }

        let entity = Entity {
            name: name.map(|n| n.value).unwrap_or_default(),
            direction,
            on_conflict,
            a,
            b,
            columns,
        };
        self.check_columns(&ctx, &entity, [&a_loc, &b_loc], &column_locs);
        let refs = column_locs
            .iter()
            .enumerate()
            .filter(|(i, _)| entity.columns[*i].parent.is_some())
            .map(|(i, loc)| (i, loc.parent.clone()))
            .collect();
        let loc = EntityLoc {
            name: name_at,
            refs,
        };
        (entity, loc)
    }

    fn table_side(
        &mut self,
        ctx: &str,
        side: Side,
        raw: Option<raw::Located<raw::TableSide>>,
        entity_at: &Loc,
    ) -> (TableSide, TableSideLoc) {
        let s = side.name();
        let mut table_side = TableSide {
            table: TableName {
                schema: None,
                name: String::new(),
            },
            key: Vec::new(),
            peer_id_column: None,
        };
        let Some(raw) = raw else {
            self.missing(ctx, s, entity_at);
            return (table_side, TableSideLoc::default());
        };
        let at = raw.at.or_else(|| entity_at.clone());
        let raw = raw.value;

        let table_key = format!("{s}.table");
        let table = self.required_text(ctx, &table_key, raw.table, &at);
        if let Some(table) = self.non_empty(ctx, &table_key, table) {
            table_side.table = self.table_name(ctx, &table_key, table);
        }

        let key_key = format!("{s}.key");
        match raw.key {
            None => self.missing(ctx, &key_key, &at),
            Some(key) => table_side.key = self.key_columns(ctx, &key_key, key),
        }

        let mut loc = TableSideLoc::default();
        if let Some(peer) = raw.peer_id_column {
            let peer_key = format!("{s}.peer_id_column");
            let peer = self.text(&format!("{ctx}: {peer_key}"), peer);
            if let Some(peer) = self.non_empty(ctx, &peer_key, peer) {
                loc.peer_id_column = Some(peer.at);
                table_side.peer_id_column = Some(peer.value);
            }
        }
        (table_side, loc)
    }

    fn table_name(&mut self, ctx: &str, key: &str, text: Text) -> TableName {
        // Split on the FIRST dot: the schema never contains one, the table
        // name might (it is taken exactly as written).
        let (schema, name) = match text.value.split_once('.') {
            Some((schema, name)) => (Some(schema), name),
            None => (None, text.value.as_str()),
        };
        if schema == Some("") {
            self.report(
                Some(text.at.clone()),
                format!(
                    "{ctx}: {key} {:?} has an empty schema name (write \"schema.table\" or \"table\")",
                    text.value
                ),
            );
        }
        if name.is_empty() {
            self.report(
                Some(text.at.clone()),
                format!("{ctx}: {key} {:?} has an empty table name", text.value),
            );
        }
        TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    fn key_columns(
        &mut self,
        ctx: &str,
        key: &str,
        raw: Spanned<Vec<Spanned<String>>>,
    ) -> Vec<String> {
        let at = raw.span();
        let items = raw.into_inner();
        if items.is_empty() {
            self.report(
                Some(at),
                format!("{ctx}: {key} must list at least one column"),
            );
            return Vec::new();
        }
        let mut columns: Vec<String> = Vec::new();
        for item in items {
            let Some(column) = self.text(&format!("{ctx}: {key}"), item) else {
                continue;
            };
            if column.value.is_empty() {
                self.report(
                    Some(column.at),
                    format!("{ctx}: {key} has an empty column name"),
                );
            } else if columns.contains(&column.value) {
                self.report(
                    Some(column.at),
                    format!("{ctx}: {key} lists column {} twice", column.value),
                );
            } else {
                columns.push(column.value);
            }
        }
        columns
    }

    fn column(
        &mut self,
        ctx: &str,
        index: usize,
        raw: raw::Located<raw::Column>,
        entity_at: &Loc,
    ) -> (ColumnMap, ColumnLoc) {
        let at = raw.at.or_else(|| entity_at.clone());
        let raw = raw.value;
        let unnamed = format!("{ctx}: column #{}", index + 1);
        let a = self.required_text(&unnamed, "a", raw.a, &at);
        let a = self.non_empty(&unnamed, "a", a);
        let what = column_label(a.as_ref().map_or("", |a| &a.value), index);
        let label = format!("{ctx}: {what}");
        let b = self.required_text(&label, "b", raw.b, &at);
        let b = self.non_empty(&label, "b", b);
        let (a_at, a) = a.map_or((None, String::new()), |t| (Some(t.at), t.value));
        let (b_at, b) = b.map_or((None, String::new()), |t| (Some(t.at), t.value));

        let has_values = raw.values.is_some();
        let value_map = raw.values.and_then(|v| self.value_map(ctx, &what, v, &at));

        let mut parent = None;
        let mut parent_at = None;
        if let Some(raw_parent) = raw.parent {
            let text = self.text(&format!("{label}: ref"), raw_parent);
            if let Some(text) = self.non_empty(&label, "ref", text) {
                if has_values {
                    self.report(
                        Some(text.at.clone()),
                        format!(
                            "{label}: values and ref cannot be combined; a ref column is translated through the id map of its parent"
                        ),
                    );
                }
                parent_at = Some(text.at);
                parent = Some(text.value);
            }
        }

        let column = ColumnMap {
            a,
            b,
            values: value_map,
            parent,
        };
        let loc = ColumnLoc {
            names: [a_at, b_at],
            parent: parent_at,
        };
        (column, loc)
    }

    /// Converts one `values` table; `column_at` is where the column entry is,
    /// used for problems about the map as a whole.
    fn value_map(
        &mut self,
        ctx: &str,
        column: &str,
        raw: raw::Located<raw::Values>,
        column_at: &Loc,
    ) -> Option<ValueMap> {
        let at = raw.at.or_else(|| column_at.clone());
        let entries = raw.value.0;
        if entries.is_empty() {
            self.report(
                at,
                format!(
                    "{ctx}: values of {column} must not be empty (remove it for no translation)"
                ),
            );
            return None;
        }
        // B value text form → (A code, B value), to find codes that collide.
        let mut seen: HashMap<String, (String, Value)> = HashMap::new();
        let mut pairs = Vec::with_capacity(entries.len());
        let mut ok = true;
        for (code, raw_value) in entries {
            let Some(value) = self.b_value(ctx, column, &code, raw_value) else {
                ok = false;
                continue;
            };
            let text = text_form(&value);
            if let Some((first_code, first_value)) = seen.get(&text) {
                let target = if *first_value == value {
                    format!("both map to {value}")
                } else {
                    format!("map to {first_value} and {value}, which are equal as text")
                };
                self.report(
                    column_at.clone(),
                    format!(
                        "{ctx}: values of {column} are not one-to-one: A codes {first_code:?} and {code:?} {target}"
                    ),
                );
                ok = false;
            } else {
                seen.insert(text, (code.clone(), value.clone()));
            }
            pairs.push((Value::String(code), value));
        }
        ok.then_some(ValueMap { pairs })
    }

    fn b_value(
        &mut self,
        ctx: &str,
        column: &str,
        code: &str,
        raw: Spanned<toml::Value>,
    ) -> Option<Value> {
        let at = raw.span();
        let found = match raw.into_inner() {
            toml::Value::String(s) => {
                let what = format!("{ctx}: values of {column}, code {code:?}");
                return self
                    .text(&what, Spanned::new(at, s))
                    .map(|t| Value::String(t.value));
            }
            toml::Value::Integer(i) => return Some(Value::from(i)),
            toml::Value::Boolean(b) => return Some(Value::Bool(b)),
            toml::Value::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => return Some(Value::Number(n)),
                None => "a non-finite float",
            },
            toml::Value::Datetime(_) => "a date/time",
            toml::Value::Array(_) => "an array",
            toml::Value::Table(_) => "a table",
        };
        self.report(
            Some(at),
            format!(
                "{ctx}: values of {column}: code {code:?} maps to {found}; B values must be a string, integer, float or boolean"
            ),
        );
        None
    }

    /// Checks across the columns and key settings of one entity.
    fn check_columns(
        &mut self,
        ctx: &str,
        entity: &Entity,
        side_locs: [&TableSideLoc; 2],
        column_locs: &[ColumnLoc],
    ) {
        for (i, side) in SIDES.into_iter().enumerate() {
            let table_side = entity.side(side);
            let peer = table_side.peer_id_column.as_deref();
            let mut seen: HashMap<&str, &Loc> = HashMap::new();
            for (column, loc) in entity.columns.iter().zip(column_locs) {
                let name = column.name(side);
                if name.is_empty() {
                    continue;
                }
                let at = &loc.names[i];
                if let Some(first) = seen.get(name) {
                    let first = self.first_at(first);
                    self.report(
                        at.clone(),
                        format!("{ctx}: column {name} is mapped twice on side {side}{first}"),
                    );
                } else {
                    seen.insert(name, at);
                }
                if peer == Some(name) {
                    self.report(
                        at.clone(),
                        format!(
                            "{ctx}: column {name} is mapped but is also {}.peer_id_column, which tandem fills itself",
                            side.name()
                        ),
                    );
                }
            }

            let other = entity.side(side.other());
            if peer.is_some() && other.key.len() > 1 {
                self.report(
                    side_locs[i].peer_id_column.clone(),
                    format!(
                        "{ctx}: {}.peer_id_column needs a single-column key on side {}, but {}.key has {} columns",
                        side.name(),
                        side.other(),
                        side.other().name(),
                        other.key.len()
                    ),
                );
            }
        }
    }

    // -- across entities ----------------------------------------------------

    fn check_entities(&mut self, entities: &[Entity], locs: &[EntityLoc]) {
        if entities.is_empty() {
            self.report(
                None,
                "no entities defined; add at least one [[entities]] table",
            );
            return;
        }

        let mut by_name: HashMap<&str, usize> = HashMap::new();
        for (index, entity) in entities.iter().enumerate() {
            if entity.name.is_empty() {
                continue;
            }
            match by_name.get(entity.name.as_str()) {
                Some(&first) => {
                    let first = self.first_at(&locs[first].name);
                    self.report(
                        locs[index].name.clone(),
                        format!(
                            "entity {:?}: the name is already used by another entity{first}",
                            entity.name
                        ),
                    );
                }
                None => {
                    by_name.insert(&entity.name, index);
                }
            }
        }

        for (index, (entity, loc)) in entities.iter().zip(locs).enumerate() {
            let ctx = entity_label(&entity.name, index);
            for (column_index, at) in &loc.refs {
                let column = &entity.columns[*column_index];
                let Some(parent) = column.parent.as_deref() else {
                    continue;
                };
                let label = column_label(&column.a, *column_index);
                if parent == entity.name {
                    self.report(
                        at.clone(),
                        format!("{ctx}: {label} refers to the entity itself; an entity cannot reference itself"),
                    );
                    continue;
                }
                let Some(&p) = by_name.get(parent) else {
                    self.report(
                        at.clone(),
                        format!("{ctx}: {label} refers to unknown entity {parent:?}"),
                    );
                    continue;
                };
                for side in SIDES {
                    let len = entities[p].side(side).key.len();
                    if len > 1 {
                        self.report(
                            at.clone(),
                            format!(
                                "{ctx}: {label} refers to entity {parent:?}, whose key on side {side} has {len} columns; a ref needs a single-column key"
                            ),
                        );
                    }
                }
            }
        }

        self.check_cycles(entities, locs, &by_name);
    }

    fn check_cycles(
        &mut self,
        entities: &[Entity],
        locs: &[EntityLoc],
        by_name: &HashMap<&str, usize>,
    ) {
        // Edges child → parent, one per parent (the first ref to it), self
        // and unknown refs left out (reported already).
        let edges: Vec<Vec<(usize, Loc)>> = entities
            .iter()
            .zip(locs)
            .enumerate()
            .map(|(index, (entity, loc))| {
                let mut out: Vec<(usize, Loc)> = Vec::new();
                for (column_index, at) in &loc.refs {
                    let parent = entity.columns[*column_index].parent.as_deref();
                    if let Some(&p) = parent.and_then(|name| by_name.get(name)) {
                        if p != index && out.iter().all(|(q, _)| *q != p) {
                            out.push((p, at.clone()));
                        }
                    }
                }
                out
            })
            .collect();
        let mut state = vec![Visit::New; entities.len()];
        let mut stack = Vec::new();
        for index in 0..entities.len() {
            if state[index] == Visit::New {
                self.visit(index, entities, &edges, &mut state, &mut stack);
            }
        }
    }

    /// Depth-first search reporting every back edge as a cycle.
    fn visit(
        &mut self,
        index: usize,
        entities: &[Entity],
        edges: &[Vec<(usize, Loc)>],
        state: &mut [Visit],
        stack: &mut Vec<usize>,
    ) {
        state[index] = Visit::OnStack;
        stack.push(index);
        for (parent, at) in &edges[index] {
            match state[*parent] {
                Visit::New => self.visit(*parent, entities, edges, state, stack),
                Visit::OnStack => {
                    // stack ends with [parent, …, index]; the edge index → parent
                    // closes it. Start the listing at `index`, where it is reported.
                    let start = stack.iter().position(|i| i == parent).unwrap_or(0);
                    let names: Vec<&str> = std::iter::once(index)
                        .chain(stack[start..].iter().copied())
                        .map(|i| entities[i].name.as_str())
                        .collect();
                    self.report(
                        at.clone(),
                        format!(
                            "entity {:?}: refs form a cycle: {}",
                            entities[index].name,
                            names.join(" -> ")
                        ),
                    );
                }
                Visit::Done => {}
            }
        }
        stack.pop();
        state[index] = Visit::Done;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Visit {
    New,
    OnStack,
    Done,
}

/// How messages name an entity: by name, or by position when it has none.
fn entity_label(name: &str, index: usize) -> String {
    if name.is_empty() {
        format!("entity #{}", index + 1)
    } else {
        format!("entity {name:?}")
    }
}

/// How messages name a column: by its A name, or by position when it has none.
fn column_label(a: &str, index: usize) -> String {
    if a.is_empty() {
        format!("column #{}", index + 1)
    } else {
        format!("column {a}")
    }
}

/// The form in which B values are compared for one-to-one-ness: a value read
/// back from a text column cannot tell `1` from `"1"`.
fn text_form(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// ${ENV} interpolation
// ---------------------------------------------------------------------------

/// Expands every `${NAME}` in `s`. On failure, returns one message per bad
/// reference; messages never include the text itself, which may be a secret.
fn interpolate(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            errors.push("\"${\" without a closing \"}\"".to_owned());
            rest = "";
            break;
        };
        let name = &after[..end];
        if !is_env_name(name) {
            errors.push(
                "\"${...}\" must contain an environment variable name (letters, digits and _)"
                    .to_owned(),
            );
        } else {
            match env(name) {
                Some(value) => out.push_str(&value),
                None => errors.push(format!("environment variable {name} is not set")),
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

// ---------------------------------------------------------------------------
// Redaction
// ---------------------------------------------------------------------------

/// Replaces the password of every `scheme://user:password@host` with `***`.
fn redact_url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // "//", not "://": a URL that lost its scheme ("//user:pw@host/db") still hides it.
    while let Some(i) = rest.find("//") {
        let (head, tail) = rest.split_at(i + 2);
        out.push_str(head);
        let token_end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let token = &tail[..token_end];
        let host_end = token.find(['/', '?', '#']).unwrap_or(token.len());
        // A password with an unescaped '/', '?' or '#' ends the authority
        // early; then fall back to the last '@' rather than leak it.
        let at_sign = token[..host_end].rfind('@').or_else(|| token.rfind('@'));
        match at_sign.and_then(|at| token[..at].find(':').map(|colon| (colon, at))) {
            Some((colon, at)) if colon + 1 < at => {
                out.push_str(&token[..=colon]);
                out.push_str("***");
                rest = &tail[at..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Replaces the value of every `password=`/`pwd=` pair (ADO.NET, JDBC, URL
/// query) with `***`.
fn redact_password_pairs(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < text.len() {
        match password_value_at(text, i) {
            Some(value) => {
                out.push_str(&text[copied..value.start]);
                out.push_str("***");
                copied = value.end;
                i = value.end;
            }
            None => i += 1,
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// If a `password=` or `pwd=` pair (any case) starts at byte `i`, the byte
/// range of its value.
fn password_value_at(text: &str, i: usize) -> Option<Range<usize>> {
    let bytes = text.as_bytes();
    let before = i.checked_sub(1).map(|j| bytes[j]);
    let at_boundary = match before {
        None => true,
        Some(b) => b.is_ascii_whitespace() || b";?&\"'{(,".contains(&b),
    };
    if !at_boundary {
        return None;
    }
    let key = ["password", "pwd"].into_iter().find(|key| {
        bytes
            .get(i..i + key.len())
            .is_some_and(|k| k.eq_ignore_ascii_case(key.as_bytes()))
    })?;
    let skip_blanks = |mut j: usize| {
        while bytes.get(j).is_some_and(|b| *b == b' ' || *b == b'\t') {
            j += 1;
        }
        j
    };
    let j = skip_blanks(i + key.len());
    if bytes.get(j) != Some(&b'=') {
        return None;
    }
    let start = skip_blanks(j + 1);
    // In a URL query the value ends at '&'; in ADO.NET it ends at ';' and may
    // be quoted (a doubled quote escapes itself).
    let in_query = matches!(before, Some(b'?' | b'&'));
    let end = match bytes.get(start) {
        Some(&quote @ (b'"' | b'\'')) if !in_query => closing_quote(bytes, start, quote),
        _ => {
            let stops: &[u8] = if in_query { b"&# \t\r\n" } else { b";\r\n" };
            bytes[start..]
                .iter()
                .position(|b| stops.contains(b))
                .map_or(bytes.len(), |p| start + p)
        }
    };
    (end > start).then_some(start..end)
}

/// The byte just past the quote closing the one at `open`.
fn closing_quote(bytes: &[u8], open: usize, quote: u8) -> usize {
    let mut k = open + 1;
    while k < bytes.len() {
        if bytes[k] == quote {
            if bytes.get(k + 1) == Some(&quote) {
                k += 2;
                continue;
            }
            return k + 1;
        }
        k += 1;
    }
    bytes.len()
}

// ---------------------------------------------------------------------------
// Positions
// ---------------------------------------------------------------------------

/// Turns byte offsets into 1-based line and column (in characters).
struct LineIndex<'t> {
    text: &'t str,
    line_starts: Vec<usize>,
}

impl<'t> LineIndex<'t> {
    fn new(text: &'t str) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, line_starts }
    }

    fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        // line_starts[0] == 0 <= offset, so line >= 1.
        let line = self.line_starts.partition_point(|&start| start <= offset);
        let start = self.line_starts[line - 1];
        let column = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        (line, column + 1)
    }

    fn problem(&self, at: Loc, message: &str) -> Problem {
        let (line, column) = at.map_or((0, 0), |span| self.position(span.start));
        Problem {
            line,
            column,
            message: redact(message),
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the config contract, verbatim.
    const EXAMPLE: &str = r#"[a]                                  # the old system
kind = "postgres"                    # "postgres" | "mssql"
url  = "${TANDEM_A_URL}"             # postgres://user:pw@host:port/db  or an ADO.NET string for mssql
# pool_size = 8                      # optional
# schema = "tandem"                  # optional: where tandem's own objects live

[b]
kind = "postgres"
url  = "${TANDEM_B_URL}"

[sync]                               # all optional
# batch_size = 1000
# poll_interval_ms = 1000            # longest wait between polls when idle
# max_attempts = 10                  # then the change is suspended
# retry_min_ms = 200
# retry_max_ms = 60000

[[entities]]
name = "order"
direction = "both"                   # "both" | "a_to_b" | "b_to_a"      (default both)
on_conflict = "newest_wins"          # "a_wins" | "b_wins" | "newest_wins" (default newest_wins)
a = { table = "dbo.ORDERS", key = ["ORDER_NO"], peer_id_column = "NEW_ID" }
b = { table = "public.orders", key = ["id"], peer_id_column = "legacy_no" }
columns = [
  { a = "CUST_NAME", b = "customer" },
  { a = "STATUS", b = "status", values = { O = "open", C = "closed" } },
  { a = "AMOUNT", b = "amount" },
]

[[entities]]
name = "order_item"
a = { table = "dbo.ORDER_ITEMS", key = ["ORDER_NO", "LINE_NO"] }
b = { table = "public.order_items", key = ["id"] }
columns = [
  { a = "ORDER_NO", b = "order_id", ref = "order" },   # translated through the id map of "order"
  { a = "LINE_NO", b = "line_no" },
  { a = "QTY", b = "quantity" },
]
"#;

    /// Seven lines of valid `[a]` and `[b]`; entity snippets start on line 8.
    const HEAD: &str = r#"[a]
kind = "mssql"
url = "Server=db;User Id=sa;Password=hunter2;"

[b]
kind = "postgres"
url = "postgres://tandem:hunter2@db/app"
"#;

    /// A valid entity, to which tests append keys.
    const ORDER: &str = r#"[[entities]]
name = "order"
a = { table = "dbo.ORDERS", key = ["ORDER_NO"] }
b = { table = "public.orders", key = ["id"] }
"#;

    fn test_env(name: &str) -> Option<String> {
        match name {
            "TANDEM_A_URL" => Some("postgres://old:s3cret@old-host:5432/erp".to_owned()),
            "TANDEM_B_URL" => Some("postgres://new:t0psecret@new-host/app".to_owned()),
            "SCHEMA" => Some("sync".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn try_parse(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("tandem.toml"), &test_env)
    }

    fn ok(text: &str) -> Config {
        match try_parse(text) {
            Ok(config) => config,
            Err(err) => panic!("expected a valid config, got:\n{err}"),
        }
    }

    fn problems(text: &str) -> Vec<Problem> {
        match try_parse(text) {
            Ok(_) => panic!("expected problems, config was accepted:\n{text}"),
            Err(err) => err.problems,
        }
    }

    fn only_problem(text: &str) -> Problem {
        let mut all = problems(text);
        assert_eq!(all.len(), 1, "expected exactly one problem, got {all:#?}");
        all.remove(0)
    }

    /// 1-based (line, column) of the first occurrence of `needle`.
    fn pos(text: &str, needle: &str) -> (usize, usize) {
        let offset = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in text"));
        LineIndex::new(text).position(offset)
    }

    /// 1-based (line, column) of the `n`th (0-based) occurrence of `needle`.
    fn pos_nth(text: &str, needle: &str, n: usize) -> (usize, usize) {
        let (offset, _) = text
            .match_indices(needle)
            .nth(n)
            .unwrap_or_else(|| panic!("{needle:?} #{n} not in text"));
        LineIndex::new(text).position(offset)
    }

    fn at(problem: &Problem) -> (usize, usize) {
        (problem.line, problem.column)
    }

    fn assert_one(text: &str, needle: &str, message: &str) {
        let problem = only_problem(text);
        assert_eq!(problem.message, message);
        assert_eq!(at(&problem), pos(text, needle), "position of {message:?}");
    }

    fn with_order(extra: &str) -> String {
        format!("{HEAD}{ORDER}{extra}")
    }

    // -- the example and defaults --------------------------------------------

    #[test]
    fn example_parses_with_expected_values() {
        let config = ok(EXAMPLE);
        assert_eq!(config.path, Path::new("tandem.toml"));
        assert_eq!(config.a.kind, DbKind::Postgres);
        assert_eq!(
            config.a.url.expose(),
            "postgres://old:s3cret@old-host:5432/erp"
        );
        assert_eq!(
            config.b.url.expose(),
            "postgres://new:t0psecret@new-host/app"
        );
        assert_eq!(config.entities.len(), 2);

        let order = config.entity("order").expect("order");
        assert_eq!(order.direction, Direction::Both);
        assert_eq!(order.on_conflict, ConflictPolicy::NewestWins);
        assert_eq!(
            order.a.table,
            TableName {
                schema: Some("dbo".into()),
                name: "ORDERS".into()
            }
        );
        assert_eq!(order.a.key, ["ORDER_NO"]);
        assert_eq!(order.a.peer_id_column.as_deref(), Some("NEW_ID"));
        assert_eq!(order.b.table.to_string(), "public.orders");
        assert_eq!(order.b.key, ["id"]);
        assert_eq!(order.b.peer_id_column.as_deref(), Some("legacy_no"));
        let names: Vec<(&str, &str)> = order
            .columns
            .iter()
            .map(|c| (c.name(Side::A), c.name(Side::B)))
            .collect();
        assert_eq!(
            names,
            [
                ("CUST_NAME", "customer"),
                ("STATUS", "status"),
                ("AMOUNT", "amount")
            ]
        );
        let status = &order.columns[1];
        assert_eq!(
            status.values,
            Some(ValueMap {
                pairs: vec![
                    (Value::from("O"), Value::from("open")),
                    (Value::from("C"), Value::from("closed")),
                ]
            })
        );
        assert!(order.columns[0].values.is_none());
        assert!(order.columns.iter().all(|c| c.parent.is_none()));
        assert!(order.parents().is_empty());

        let item = config.entity("order_item").expect("order_item");
        assert_eq!(item.a.key, ["ORDER_NO", "LINE_NO"]);
        assert_eq!(item.a.peer_id_column, None);
        assert_eq!(item.columns[0].parent.as_deref(), Some("order"));
        assert_eq!(item.parents(), ["order"]);
        assert!(config.entity("missing").is_none());
    }

    #[test]
    fn defaults_apply_when_keys_are_omitted() {
        let config = ok(EXAMPLE);
        for side in [Side::A, Side::B] {
            assert_eq!(config.side(side).pool_size, 8);
            assert_eq!(config.side(side).schema, "tandem");
        }
        let sync = &config.sync;
        assert_eq!(sync.batch_size, 1000);
        assert_eq!(sync.poll_interval_ms, 1000);
        assert_eq!(sync.max_attempts, 10);
        assert_eq!(sync.retry_min_ms, 200);
        assert_eq!(sync.retry_max_ms, 60_000);
        let item = config.entity("order_item").expect("order_item");
        assert_eq!(item.direction, Direction::Both);
        assert_eq!(item.on_conflict, ConflictPolicy::NewestWins);

        // No [sync] table at all gives the same defaults.
        let config = ok(&with_order(""));
        assert_eq!(config.sync.batch_size, SyncConfig::default().batch_size);
        assert!(config.entities[0].columns.is_empty());
    }

    #[test]
    fn explicit_settings_are_read() {
        let text = format!(
            r#"[a]
kind = "mssql"
url = "Server=db;Password=x;"
pool_size = 3
schema = "${{SCHEMA}}"

[b]
kind = "postgres"
url = "postgres://db/app"

[sync]
batch_size = 50
poll_interval_ms = 250
max_attempts = 4
retry_min_ms = 10
retry_max_ms = 10

{ORDER}direction = "a_to_b"
on_conflict = "b_wins"
"#
        );
        let config = ok(&text);
        assert_eq!(config.a.kind, DbKind::Mssql);
        assert_eq!(config.a.pool_size, 3);
        assert_eq!(config.a.schema, "sync");
        assert_eq!(config.b.kind, DbKind::Postgres);
        let sync = &config.sync;
        assert_eq!(
            (
                sync.batch_size,
                sync.poll_interval_ms,
                sync.max_attempts,
                sync.retry_min_ms,
                sync.retry_max_ms
            ),
            (50, 250, 4, 10, 10)
        );
        assert_eq!(config.entities[0].direction, Direction::AToB);
        assert_eq!(config.entities[0].on_conflict, ConflictPolicy::BWins);
        let text = text
            .replace("\"b_wins\"", "\"a_wins\"")
            .replace("a_to_b", "b_to_a");
        let config = ok(&text);
        assert_eq!(config.entities[0].direction, Direction::BToA);
        assert_eq!(config.entities[0].on_conflict, ConflictPolicy::AWins);
    }

    #[test]
    fn dotted_keys_and_header_tables_are_accepted() {
        let text = format!(
            r#"{HEAD}[[entities]]
name = "order"
a.table = "ORDERS"
a.key = ["ORDER_NO"]

[entities.b]
table = "orders"
key = ["id"]

[[entities.columns]]
a = "STATUS"
b = "status"
values.O = "open"
values.C = "closed"
"#
        );
        let config = ok(&text);
        let order = &config.entities[0];
        assert_eq!(
            order.a.table,
            TableName {
                schema: None,
                name: "ORDERS".into()
            }
        );
        assert_eq!(order.b.key, ["id"]);
        let values = order.columns[0].values.as_ref().expect("values");
        assert_eq!(values.pairs[0], (Value::from("O"), Value::from("open")));
        assert_eq!(values.pairs[1], (Value::from("C"), Value::from("closed")));

        // A table without a span of its own: problems fall back to the entity.
        let text = format!("{HEAD}[[entities]]\nname = \"order\"\na.table = \"ORDERS\"\nb = {{ table = \"o\", key = [\"id\"] }}\n");
        assert_one(
            &text,
            "[[entities]]",
            r#"entity "order": missing required key "a.key""#,
        );
    }

    // -- parse-level problems ---------------------------------------------------

    #[test]
    fn syntax_error_has_position() {
        let text = format!("{HEAD}[[entities]]\nname = \"order\n");
        let problem = only_problem(&text);
        assert_eq!(problem.line, 9);
        assert!(
            problem.message.contains("invalid basic string"),
            "{}",
            problem.message
        );
    }

    #[test]
    fn unknown_keys_are_named_with_position() {
        let text = format!("{HEAD}pool = 3\n{ORDER}");
        let problem = only_problem(&text);
        assert_eq!(at(&problem), (8, 1));
        assert_eq!(
            problem.message,
            "unknown key `pool`, expected one of `kind`, `url`, `pool_size`, `schema`"
        );

        let text = format!("{HEAD}{ORDER}colums = []\n");
        let problem = only_problem(&text);
        assert_eq!(at(&problem), (12, 1));
        assert!(problem.message.starts_with("unknown key `colums`"));

        let text = format!(
            "{HEAD}[[entities]]\nname = \"o\"\na = {{ table = \"t\", key = [\"k\"], peer = \"x\" }}\n"
        );
        let problem = only_problem(&text);
        assert_eq!(at(&problem), pos(&text, "peer ="));
        assert_eq!(
            problem.message,
            "unknown key `peer`, expected one of `table`, `key`, `peer_id_column`"
        );

        let text = with_order("columns = [{ a = \"X\", b = \"x\", reference = \"y\" }]\n");
        let problem = only_problem(&text);
        assert_eq!(at(&problem), pos(&text, "reference"));
        assert!(problem.message.starts_with("unknown key `reference`"));

        let text = format!("{HEAD}[sync]\nbatch_size = \"10\"\n{ORDER}");
        assert_one(
            &text,
            "\"10\"",
            "invalid type: string \"10\", expected an integer",
        );

        let text = format!("{HEAD}[sink]\n");
        assert_eq!(at(&only_problem(&text)), (8, 2));
    }

    #[test]
    fn wrong_types_have_position() {
        let text = format!("{HEAD}{ORDER}direction = 1\n");
        let problem = only_problem(&text);
        assert_eq!(at(&problem), (12, 13));
        assert_eq!(
            problem.message,
            "invalid type: integer `1`, expected a string"
        );

        let text = format!("{HEAD}{ORDER}columns = {{ a = \"X\" }}\n");
        let problem = only_problem(&text);
        assert_eq!(problem.line, 12);
        assert_eq!(problem.message, "invalid type: table, expected an array");

        let text = format!("{HEAD}[[entities]]\nname = \"o\"\na = \"dbo.T\"\n");
        let problem = only_problem(&text);
        assert_eq!(at(&problem), pos(&text, "\"dbo.T\""));
        assert_eq!(
            problem.message,
            "invalid type: string \"dbo.T\", expected a table"
        );
    }

    #[test]
    fn parse_errors_are_redacted() {
        let text = format!("{HEAD}[sync]\nbatch_size = \"postgres://u:hunter2@h/db\"\n{ORDER}");
        let err = try_parse(&text).expect_err("wrong type");
        let shown = err.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://u:***@h/db"), "{shown}");
    }

    // -- missing keys -------------------------------------------------------------

    #[test]
    fn missing_sides_and_entities_are_reported_without_position() {
        let all = problems("");
        let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "missing required table [a] (the database of side A)",
                "missing required table [b] (the database of side B)",
                "no entities defined; add at least one [[entities]] table",
            ]
        );
        assert!(all.iter().all(|p| p.line == 0 && p.column == 0));
        let err = try_parse("").expect_err("empty");
        assert!(err
            .to_string()
            .starts_with("tandem.toml: missing required table [a]"));
    }

    #[test]
    fn missing_database_keys_point_at_the_table() {
        let text = format!("[a]\nkind = \"mssql\"\n\n[b]\nurl = \"x\"\n{ORDER}");
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(all[0].message, r#"[a]: missing required key "url""#);
        assert_eq!(at(&all[0]), (1, 1));
        assert_eq!(all[1].message, r#"[b]: missing required key "kind""#);
        assert_eq!(at(&all[1]), (4, 1));
    }

    #[test]
    fn missing_entity_keys_point_at_the_entity_or_side() {
        let text = format!("{HEAD}[[entities]]\na = {{ table = \"t\", key = [\"k\"] }}\n");
        let all = problems(&text);
        let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"entity #1: missing required key "name""#,
                r#"entity #1: missing required key "b""#,
            ]
        );
        assert!(all.iter().all(|p| at(p) == (8, 1)));

        let text = format!(
            "{HEAD}[[entities]]\nname = \"o\"\na = {{ key = [\"k\"] }}\nb = {{ table = \"t\" }}\n"
        );
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0].message,
            r#"entity "o": missing required key "a.table""#
        );
        assert_eq!(at(&all[0]), pos(&text, "{ key"));
        assert_eq!(
            all[1].message,
            r#"entity "o": missing required key "b.key""#
        );
        assert_eq!(at(&all[1]), pos(&text, "{ table = \"t\" }"));
    }

    #[test]
    fn missing_column_keys_point_at_the_column() {
        let text = with_order(
            "columns = [\n  { a = \"X\", b = \"x\" },\n  { b = \"y\" },\n  { a = \"Z\" },\n]\n",
        );
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0].message,
            r#"entity "order": column #2: missing required key "a""#
        );
        assert_eq!(at(&all[0]), pos(&text, "{ b = \"y\""));
        assert_eq!(
            all[1].message,
            r#"entity "order": column Z: missing required key "b""#
        );
        assert_eq!(at(&all[1]), pos(&text, "{ a = \"Z\""));
    }

    // -- enumerations ---------------------------------------------------------------

    #[test]
    fn invalid_kind_lists_allowed_values() {
        let text = HEAD.replace("\"mssql\"", "\"oracle\"") + ORDER;
        assert_one(
            &text,
            "\"oracle\"",
            r#"[a]: kind "oracle" is not valid; expected one of "postgres", "mssql""#,
        );
    }

    #[test]
    fn invalid_direction_and_on_conflict_list_allowed_values() {
        let text = with_order("direction = \"both_ways\"\non_conflict = \"a\"\n");
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0].message,
            r#"entity "order": direction "both_ways" is not valid; expected one of "both", "a_to_b", "b_to_a""#
        );
        assert_eq!(at(&all[0]), (12, 13));
        assert_eq!(
            all[1].message,
            r#"entity "order": on_conflict "a" is not valid; expected one of "a_wins", "b_wins", "newest_wins""#
        );
        assert_eq!(at(&all[1]), (13, 15));
    }

    // -- ${ENV} ---------------------------------------------------------------------

    #[test]
    fn env_references_are_expanded_in_any_string() {
        let text = format!(
            "{HEAD}[[entities]]\nname = \"order\"\na = {{ table = \"${{SCHEMA}}.ORDERS\", key = [\"NO\"] }}\nb = {{ table = \"x${{EMPTY}}y\", key = [\"id\"] }}\ncolumns = [{{ a = \"S\", b = \"s\", values = {{ O = \"${{SCHEMA}}-open\" }} }}]\n"
        );
        let config = ok(&text);
        let order = &config.entities[0];
        assert_eq!(order.a.table.to_string(), "sync.ORDERS");
        assert_eq!(order.b.table.name, "xy");
        let values = order.columns[0].values.as_ref().expect("values");
        assert_eq!(values.pairs[0].1, Value::from("sync-open"));
        // '$' alone is kept as is.
        assert_eq!(interpolate("a$b$", &test_env), Ok("a$b$".to_owned()));
    }

    #[test]
    fn undefined_env_variables_are_reported_at_the_string() {
        let text = format!(
            "[a]\nkind = \"postgres\"\nurl  = \"${{TANDEM_OLD_URL}}\"\n\n[b]\nkind = \"postgres\"\nurl = \"${{TANDEM_B_URL}}\"\n{ORDER}"
        );
        let problem = only_problem(&text);
        assert_eq!(
            problem.message,
            "[a]: url: environment variable TANDEM_OLD_URL is not set"
        );
        assert_eq!(at(&problem), (3, 8));

        let text = with_order("columns = [{ a = \"${X1}\", b = \"${X2}_${X3}\" }]\n");
        let all = problems(&text);
        let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"entity "order": column #1: a: environment variable X1 is not set"#,
                r#"entity "order": column #1: b: environment variable X2 is not set"#,
                r#"entity "order": column #1: b: environment variable X3 is not set"#,
            ]
        );
        assert_eq!(at(&all[0]), pos(&text, "\"${X1}"));
        assert_eq!(at(&all[2]), pos(&text, "\"${X2}"));
    }

    #[test]
    fn malformed_env_references_are_reported_without_the_value() {
        let text = HEAD.replace(
            "postgres://tandem:hunter2@db/app",
            "postgres://u:${pw@db/app",
        ) + ORDER;
        let problem = only_problem(&text);
        assert_eq!(problem.message, r#"[b]: url: "${" without a closing "}""#);
        assert_eq!(problem.line, 7);

        let text = HEAD.replace("hunter2@db", "${1x}@db") + ORDER;
        let problem = only_problem(&text);
        assert_eq!(
            problem.message,
            r#"[b]: url: "${...}" must contain an environment variable name (letters, digits and _)"#
        );
    }

    #[test]
    fn expanded_urls_never_appear_in_messages() {
        // Breaking the file elsewhere must not leak the expanded URLs.
        let text = EXAMPLE.replace("kind = \"postgres\"", "kind = \"pg\"");
        let err = try_parse(&text).expect_err("bad kind");
        let shown = format!("{err}\n{err:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0psecret"),
            "{shown}"
        );
        assert_eq!(err.problems.len(), 2);

        let text = HEAD.replace(
            "url = \"postgres://tandem:hunter2@db/app\"",
            "url = \"${EMPTY}\"",
        ) + ORDER;
        assert_one(&text, "\"${EMPTY}\"", "[b]: url is empty");
    }

    // -- entities -------------------------------------------------------------------

    #[test]
    fn entity_names_must_be_present_unique_and_non_empty() {
        let text = format!("{HEAD}{ORDER}{ORDER}");
        let problem = only_problem(&text);
        assert_eq!(
            problem.message,
            r#"entity "order": the name is already used by another entity (first at line 9)"#
        );
        assert_eq!(at(&problem), pos_nth(&text, "\"order\"", 1));
        assert_eq!(problem.line, 13);

        let text = format!("{HEAD}{}", ORDER.replace("\"order\"", "\"\""));
        assert_one(&text, "\"\"", "entity #1: name must not be empty");
    }

    #[test]
    fn at_least_one_entity_is_required() {
        let problem = only_problem(HEAD);
        assert_eq!(
            problem.message,
            "no entities defined; add at least one [[entities]] table"
        );
        assert_eq!(problem.line, 0);
        assert_eq!(only_problem(&format!("entities = []\n{HEAD}")).line, 0);
    }

    #[test]
    fn keys_must_be_non_empty_and_without_duplicates() {
        let text = format!(
            "{HEAD}[[entities]]\nname = \"order\"\na = {{ table = \"T\", key = [] }}\nb = {{ table = \"t\", key = [\"id\", \"no\", \"id\"] }}\n"
        );
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0].message,
            r#"entity "order": a.key must list at least one column"#
        );
        assert_eq!(at(&all[0]), pos(&text, "[]"));
        assert_eq!(
            all[1].message,
            r#"entity "order": b.key lists column id twice"#
        );
        assert_eq!(at(&all[1]), pos_nth(&text, "\"id\"", 1));

        let text = ORDER.replace("[\"ORDER_NO\"]", "[\"\"]");
        assert_one(
            &format!("{HEAD}{text}"),
            "\"\"",
            r#"entity "order": a.key has an empty column name"#,
        );
    }

    #[test]
    fn table_names_split_on_the_first_dot_and_keep_case() {
        let text = format!("{HEAD}{}", ORDER.replace("dbo.ORDERS", "Db.Sales.ORDERS"));
        let config = ok(&text);
        assert_eq!(
            config.entities[0].a.table,
            TableName {
                schema: Some("Db".into()),
                name: "Sales.ORDERS".into()
            }
        );
        assert_eq!(config.entities[0].a.table.to_string(), "Db.Sales.ORDERS");
    }

    #[test]
    fn table_names_need_non_empty_parts() {
        for (table, message) in [
            (
                ".ORDERS",
                r#"entity "order": a.table ".ORDERS" has an empty schema name (write "schema.table" or "table")"#,
            ),
            (
                "dbo.",
                r#"entity "order": a.table "dbo." has an empty table name"#,
            ),
            ("", r#"entity "order": a.table must not be empty"#),
        ] {
            let text = format!("{HEAD}{}", ORDER.replace("dbo.ORDERS", table));
            assert_one(&text, &format!("\"{table}\""), message);
        }
    }

    #[test]
    fn a_column_mapped_twice_on_one_side_is_reported() {
        let text = with_order(
            "columns = [\n  { a = \"X\", b = \"x\" },\n  { a = \"Y\", b = \"x\" },\n  { a = \"X\", b = \"z\" },\n]\n",
        );
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(
            all[0].message,
            r#"entity "order": column x is mapped twice on side B (first at line 13)"#
        );
        assert_eq!(at(&all[0]), pos_nth(&text, "\"x\"", 1));
        assert_eq!(
            all[1].message,
            r#"entity "order": column X is mapped twice on side A (first at line 13)"#
        );
        assert_eq!(at(&all[1]), pos_nth(&text, "\"X\"", 1));
    }

    #[test]
    fn a_mapped_peer_id_column_is_reported() {
        let text = format!(
            "{HEAD}{}columns = [{{ a = \"NEW_ID\", b = \"id2\" }}]\n",
            ORDER.replace(
                "key = [\"ORDER_NO\"]",
                "key = [\"ORDER_NO\"], peer_id_column = \"NEW_ID\""
            )
        );
        let problem = only_problem(&text);
        assert_eq!(
            problem.message,
            r#"entity "order": column NEW_ID is mapped but is also a.peer_id_column, which tandem fills itself"#
        );
        assert_eq!(at(&problem), pos_nth(&text, "\"NEW_ID\"", 1));
    }

    #[test]
    fn peer_id_column_needs_a_single_column_key_on_the_other_side() {
        let text = format!(
            "{HEAD}[[entities]]\nname = \"item\"\na = {{ table = \"ITEMS\", key = [\"NO\", \"LINE\"] }}\nb = {{ table = \"items\", key = [\"id\"], peer_id_column = \"legacy\" }}\n"
        );
        assert_one(
            &text,
            "\"legacy\"",
            r#"entity "item": b.peer_id_column needs a single-column key on side A, but a.key has 2 columns"#,
        );
        // The reverse is fine: A's peer column holds B's single-column key.
        ok(&text
            .replace(
                "key = [\"NO\", \"LINE\"] }",
                "key = [\"NO\", \"LINE\"], peer_id_column = \"NEW_ID\" }",
            )
            .replace(", peer_id_column = \"legacy\"", ""));
    }

    // -- values ---------------------------------------------------------------------

    #[test]
    fn values_must_be_one_to_one() {
        let text = format!(
            "{HEAD}{ORDER}columns = [\n  {{ a = \"CUST_NAME\", b = \"customer\" }},\n  {{ a = \"STATUS\", b = \"status\", values = {{ O = \"open\", C = \"closed\", X = \"open\" }} }},\n]\n"
        );
        let err = try_parse(&text).expect_err("not one-to-one");
        assert_eq!(err.problems.len(), 1);
        assert_eq!(
            err.to_string(),
            r#"tandem.toml:14:3: entity "order": values of column STATUS are not one-to-one: A codes "O" and "X" both map to "open""#
        );
    }

    #[test]
    fn values_are_compared_by_text_form() {
        let text =
            with_order("columns = [{ a = \"F\", b = \"f\", values = { Y = 1, N = \"1\" } }]\n");
        assert_one(
            &text,
            "{ a = \"F\"",
            r#"entity "order": values of column F are not one-to-one: A codes "Y" and "N" map to 1 and "1", which are equal as text"#,
        );
    }

    #[test]
    fn values_accept_scalars_of_any_type() {
        let text = with_order(
            "columns = [{ a = \"F\", b = \"f\", values = { Y = true, N = false, H = 0.5, T = 10, S = \"s\" } }]\n",
        );
        let config = ok(&text);
        let values = config.entities[0].columns[0]
            .values
            .clone()
            .expect("values");
        let expected = [
            ("Y", Value::Bool(true)),
            ("N", Value::Bool(false)),
            ("H", Value::from(0.5)),
            ("T", Value::from(10)),
            ("S", Value::from("s")),
        ];
        let expected: Vec<(Value, Value)> = expected
            .into_iter()
            .map(|(a, b)| (Value::from(a), b))
            .collect();
        assert_eq!(values.pairs, expected);
    }

    #[test]
    fn values_must_not_be_empty_or_hold_arrays_and_tables() {
        let text = with_order("columns = [{ a = \"F\", b = \"f\", values = {} }]\n");
        assert_one(
            &text,
            "{}",
            r#"entity "order": values of column F must not be empty (remove it for no translation)"#,
        );

        let text = with_order(
            "columns = [{ a = \"F\", b = \"f\", values = { A = [1], B = { x = 1 }, C = 1979-05-27 } }]\n",
        );
        let all = problems(&text);
        let messages: Vec<&str> = all.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                r#"entity "order": values of column F: code "A" maps to an array; B values must be a string, integer, float or boolean"#,
                r#"entity "order": values of column F: code "B" maps to a table; B values must be a string, integer, float or boolean"#,
                r#"entity "order": values of column F: code "C" maps to a date/time; B values must be a string, integer, float or boolean"#,
            ]
        );
        assert_eq!(at(&all[0]), pos(&text, "[1]"));
        assert_eq!(at(&all[1]), pos(&text, "{ x = 1 }"));
        assert_eq!(at(&all[2]), pos(&text, "1979"));

        let text = with_order("columns = [{ a = \"F\", b = \"f\", values = { A = nan } }]\n");
        assert_one(
            &text,
            "nan",
            r#"entity "order": values of column F: code "A" maps to a non-finite float; B values must be a string, integer, float or boolean"#,
        );
    }

    // -- refs -----------------------------------------------------------------------

    fn item(columns: &str) -> String {
        format!(
            "[[entities]]\nname = \"item\"\na = {{ table = \"ITEMS\", key = [\"ITEM_NO\"] }}\nb = {{ table = \"items\", key = [\"id\"] }}\ncolumns = [{columns}]\n"
        )
    }

    #[test]
    fn ref_must_name_a_known_other_entity() {
        let text = format!(
            "{HEAD}{ORDER}{}",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"ordr\" }")
        );
        assert_one(
            &text,
            "\"ordr\"",
            r#"entity "item": column ORDER_NO refers to unknown entity "ordr""#,
        );

        let text = format!(
            "{HEAD}{ORDER}{}",
            item("{ a = \"PARENT_NO\", b = \"parent_id\", ref = \"item\" }")
        );
        assert_one(
            &text,
            "\"item\" }",
            r#"entity "item": column PARENT_NO refers to the entity itself; an entity cannot reference itself"#,
        );
    }

    #[test]
    fn ref_needs_a_parent_with_a_single_column_key() {
        let parent = ORDER.replace("[\"ORDER_NO\"]", "[\"ORDER_NO\", \"YEAR\"]");
        let text = format!(
            "{HEAD}{parent}{}",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }")
        );
        assert_one(
            &text,
            "\"order\" }",
            r#"entity "item": column ORDER_NO refers to entity "order", whose key on side A has 2 columns; a ref needs a single-column key"#,
        );
    }

    #[test]
    fn ref_cannot_be_combined_with_values() {
        let text = format!(
            "{HEAD}{ORDER}{}",
            item("{ a = \"ORDER_NO\", b = \"order_id\", values = { A = \"a\" }, ref = \"order\" }")
        );
        assert_one(
            &text,
            "\"order\" }",
            r#"entity "item": column ORDER_NO: values and ref cannot be combined; a ref column is translated through the id map of its parent"#,
        );
    }

    #[test]
    fn ref_cycles_are_named() {
        let text = format!(
            "{HEAD}{}{}[[entities]]\nname = \"line\"\na = {{ table = \"L\", key = [\"L\"] }}\nb = {{ table = \"l\", key = [\"l\"] }}\ncolumns = [{{ a = \"I\", b = \"i\", ref = \"item\" }}]\n",
            ORDER.to_owned() + "columns = [{ a = \"LAST_LINE\", b = \"last_line\", ref = \"line\" }]\n",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }"),
        );
        // order -> line -> item -> order, found (and reported) where the
        // search from "order" closes it: at item's ref.
        assert_one(
            &text,
            "\"order\" }",
            r#"entity "item": refs form a cycle: item -> order -> line -> item"#,
        );

        let text = format!(
            "{HEAD}{}{}",
            ORDER.to_owned() + "columns = [{ a = \"ITEM\", b = \"item\", ref = \"item\" }]\n",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }"),
        );
        assert_one(
            &text,
            "\"order\" }",
            r#"entity "item": refs form a cycle: item -> order -> item"#,
        );
    }

    // -- sync and pool --------------------------------------------------------------

    #[test]
    fn sync_values_must_be_positive() {
        for key in [
            "batch_size",
            "poll_interval_ms",
            "max_attempts",
            "retry_min_ms",
            "retry_max_ms",
        ] {
            let text = format!("{HEAD}[sync]\n{key} = 0\n{ORDER}");
            let problem = only_problem(&text);
            assert_eq!(
                problem.message,
                format!("[sync]: {key} must be at least 1, got 0")
            );
            assert_eq!(at(&problem), (9, key.len() + 4));
        }
        let text = format!("{HEAD}[sync]\nbatch_size = -5\n{ORDER}");
        assert_one(&text, "-5", "[sync]: batch_size must be at least 1, got -5");
        let text = format!("{HEAD}[sync]\nmax_attempts = 5000000000\n{ORDER}");
        assert_one(
            &text,
            "5000000000",
            "[sync]: max_attempts is too large (5000000000)",
        );
    }

    #[test]
    fn retry_min_must_not_exceed_retry_max() {
        let text = format!("{HEAD}[sync]\nretry_min_ms = 500\nretry_max_ms = 100\n{ORDER}");
        assert_one(
            &text,
            "500",
            "[sync]: retry_min_ms (500) must not exceed retry_max_ms (100)",
        );
        // Only the maximum written: it clashes with the default minimum.
        let text = format!("{HEAD}[sync]\nretry_max_ms = 100\n{ORDER}");
        assert_one(
            &text,
            "100",
            "[sync]: retry_min_ms (200) must not exceed retry_max_ms (100)",
        );
    }

    #[test]
    fn pool_size_and_schema_are_checked() {
        let text = format!("{}pool_size = 0\nschema = \"\"\n{ORDER}", HEAD);
        let all = problems(&text);
        assert_eq!(all.len(), 2, "{all:#?}");
        assert_eq!(all[0].message, "[b]: pool_size must be at least 1, got 0");
        assert_eq!(at(&all[0]), (8, 13));
        assert_eq!(all[1].message, "[b]: schema must not be empty");
        assert_eq!(at(&all[1]), (9, 10));
    }

    // -- reporting ------------------------------------------------------------------

    #[test]
    fn all_problems_are_reported_in_file_order() {
        let text = r#"[a]
kind = "db2"
url = "${NOPE}"
pool_size = 0

[b]
kind = "postgres"
url = "x"

[sync]
retry_min_ms = 0

[[entities]]
name = "order"
direction = "up"
a = { table = "ORDERS", key = [] }
b = { table = ".orders", key = ["id"], peer_id_column = "" }
columns = [{ a = "S", b = "s", values = { X = "x", Y = "x" }, ref = "nobody" }]
"#;
        let all = problems(text);
        let lines: Vec<usize> = all.iter().map(|p| p.line).collect();
        assert_eq!(lines, [2, 3, 4, 11, 15, 16, 17, 17, 18, 18, 18], "{all:#?}");
        let shown = try_parse(text).expect_err("broken").to_string();
        assert_eq!(shown.lines().count(), all.len());
        assert!(shown.starts_with(
            "tandem.toml:2:8: [a]: kind \"db2\" is not valid; expected one of \"postgres\", \"mssql\"\ntandem.toml:3:7: [a]: url: environment variable NOPE is not set\n"
        ), "{shown}");
    }

    #[test]
    fn problem_positions_count_characters() {
        let index = LineIndex::new("ab\nçé = 1\n");
        assert_eq!(index.position(0), (1, 1));
        assert_eq!(index.position(3), (2, 1));
        assert_eq!(index.position(3 + "çé ".len()), (2, 4));
        assert_eq!(index.position(1000), (3, 1));
    }

    // -- redaction ------------------------------------------------------------------

    #[test]
    fn redacts_url_passwords() {
        for (text, expected) in [
            ("postgres://user:pw@host/db", "postgres://user:***@host/db"),
            (
                "postgresql://u:p%40ss@h:5432/db?sslmode=require",
                "postgresql://u:***@h:5432/db?sslmode=require",
            ),
            ("postgres://user@host/db", "postgres://user@host/db"),
            ("postgres://host:5432/db", "postgres://host:5432/db"),
            ("postgres://u:pa/ss@h/db", "postgres://u:***@h/db"),
            (
                "failed: postgres://a:1@h/x and postgres://b:2@h/y.",
                "failed: postgres://a:***@h/x and postgres://b:***@h/y.",
            ),
            (
                "postgres://u@h/db?password=secret&sslmode=require",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn redacts_ado_net_passwords() {
        for (text, expected) in [
            (
                "Server=tcp:db,1433;Database=erp;User Id=sa;Password=S3cret!;Encrypt=true",
                "Server=tcp:db,1433;Database=erp;User Id=sa;Password=***;Encrypt=true",
            ),
            ("server=db;uid=sa;pwd=abc", "server=db;uid=sa;pwd=***"),
            ("PWD = abc ; x=1", "PWD = ***; x=1"),
            (
                "Server=db;Password=\"a;b\"\"c\";Database=x",
                "Server=db;Password=***;Database=x",
            ),
            ("Server=db;Password='x;y';", "Server=db;Password=***;"),
            ("Server=db;Password=;", "Server=db;Password=;"),
            ("Server=db;OldPassword=x;", "Server=db;OldPassword=x;"),
            ("no credentials here", "no credentials here"),
            ("Passwort=é;password=ü", "Passwort=é;password=***"),
        ] {
            assert_eq!(redact(text), expected, "{text}");
        }
    }

    #[test]
    fn secret_prints_redacted() {
        let url = Secret::new("postgres://user:pw@host/db".to_owned());
        assert_eq!(url.to_string(), "postgres://user:***@host/db");
        assert_eq!(url.redacted(), "postgres://user:***@host/db");
        assert_eq!(
            format!("{url:?}"),
            "Secret(\"postgres://user:***@host/db\")"
        );
        assert_eq!(url.expose(), "postgres://user:pw@host/db");

        let config = ok(EXAMPLE);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("t0psecret"));
        let ado = Secret::new("Server=db;Password=pw;".to_owned());
        assert_eq!(ado.to_string(), "Server=db;Password=***;");
    }

    // -- derived facts ----------------------------------------------------------------

    #[test]
    fn key_is_given_when_every_key_column_is_mapped() {
        let config = ok(EXAMPLE);
        let item = config.entity("order_item").expect("order_item");
        assert!(item.key_is_given(Side::A));
        assert!(!item.key_is_given(Side::B));
        let order = config.entity("order").expect("order");
        assert!(!order.key_is_given(Side::A));
        assert!(!order.key_is_given(Side::B));
    }

    #[test]
    fn parents_come_first() {
        let text = format!(
            "{HEAD}{}{}{}",
            item("{ a = \"ORDER_NO\", b = \"order_id\", ref = \"order\" }, { a = \"O2\", b = \"o2\", ref = \"order\" }, { a = \"C\", b = \"c\", ref = \"customer\" }"),
            ORDER.to_owned() + "columns = [{ a = \"CUST\", b = \"cust\", ref = \"customer\" }]\n",
            ORDER.replace("order", "customer"),
        );
        let config = ok(&text);
        assert_eq!(
            config.entity("item").expect("item").parents(),
            ["order", "customer"]
        );
        let order: Vec<&str> = config
            .entities_parents_first()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(order, ["customer", "order", "item"]);

        let config = ok(EXAMPLE);
        let order: Vec<&str> = config
            .entities_parents_first()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(order, ["order", "order_item"]);
    }

    #[test]
    fn direction_flows() {
        assert!(Direction::Both.flows(Side::A));
        assert!(Direction::Both.flows(Side::B));
        assert!(Direction::AToB.flows(Side::A));
        assert!(!Direction::AToB.flows(Side::B));
        assert!(!Direction::BToA.flows(Side::A));
        assert!(Direction::BToA.flows(Side::B));
    }

    #[test]
    fn sides_name_themselves() {
        assert_eq!(Side::A.other(), Side::B);
        assert_eq!(Side::B.other(), Side::A);
        assert_eq!((Side::A.name(), Side::B.name()), ("a", "b"));
        assert_eq!(format!("{} {}", Side::A, Side::B), "A B");
        let table = TableName {
            schema: None,
            name: "orders".into(),
        };
        assert_eq!(table.to_string(), "orders");
    }

    // -- finding and reading the file ---------------------------------------------

    #[test]
    fn resolve_path_prefers_cli_then_env() {
        let cli = Path::new("/etc/tandem/prod.toml");
        assert_eq!(
            resolve_path_from(Some(cli), Some("/x.toml".into())),
            PathBuf::from(cli)
        );
        assert_eq!(
            resolve_path_from(None, Some("/x.toml".into())),
            PathBuf::from("/x.toml")
        );
        assert_eq!(
            resolve_path_from(None, Some("".into())),
            PathBuf::from("tandem.toml")
        );
        assert_eq!(resolve_path_from(None, None), PathBuf::from("tandem.toml"));
        assert_eq!(resolve_path(Some(cli)), PathBuf::from(cli));
    }

    #[test]
    fn load_reads_the_file() {
        let dir = std::env::temp_dir().join(format!("tandem-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("tandem.toml");
        std::fs::write(&path, with_order("")).expect("write");
        let config = load(&path).expect("valid");
        assert_eq!(config.path, path);
        assert_eq!(config.a.kind, DbKind::Mssql);

        let missing = dir.join("missing.toml");
        let err = load(&missing).expect_err("missing file");
        assert_eq!(err.problems.len(), 1);
        assert!(err.to_string().starts_with(&format!(
            "{}: cannot read the config file:",
            missing.display()
        )));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
