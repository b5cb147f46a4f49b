//! Loading and validating `tandem.toml`.
//!
//! The file is first deserialized into spanned "raw" structures (module
//! [`raw`]) so that every problem can point at the line and column of the
//! offending TOML item. A [`Builder`] then interpolates `${ENV}` references,
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
        redact(&self.0)
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
    /// Changes handled per batch (default 500).
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
            batch_size: 500,
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
                problems: vec![lines.problem(err.span(), &parse_error_message(&err))],
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

fn parse_error_message(err: &toml::de::Error) -> String {
    // serde speaks of "fields"; the file has keys.
    err.message()
        .trim_end()
        .replacen("unknown field", "unknown key", 1)
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
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
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
