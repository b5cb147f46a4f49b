//! The `Builder`: converts the raw document into a [`Config`], checking everything it can and
//! collecting problems with their positions; and `${ENV}` expansion of string values.

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use toml::Spanned;

use super::raw;
use super::render::{LineIndex, Loc, Span};
use super::*;
use crate::side::SIDES;

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
    key_from: Loc,
}

/// Positions kept per column for the checks across an entity's columns.
struct ColumnLoc {
    /// Position of the column name on side A and on side B.
    names: [Loc; 2],
    parent: Loc,
    direction: Loc,
}

/// Converts the raw document into a [`Config`], collecting problems.
pub(super) struct Builder<'b> {
    pub(super) env: &'b dyn Fn(&str) -> Option<String>,
    pub(super) lines: &'b LineIndex<'b>,
    /// The config file's folder: relative `*_file` paths start there.
    pub(super) dir: Option<&'b Path>,
    pub(super) problems: Vec<(Loc, String)>,
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

    /// A `*_file` key: `${ENV}` expanded, relative to the config file's folder, and readable
    /// now (the problem names the file and the line, never what the file holds).
    fn secret_file(&mut self, ctx: &str, key: &str, raw: Spanned<String>) -> Option<SecretFile> {
        let text = self.text(&format!("{ctx}: {key}"), raw)?;
        if text.value.trim().is_empty() {
            self.report(Some(text.at), format!("{ctx}: {key} is empty"));
            return None;
        }
        let path = Path::new(&text.value);
        let path = match self.dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        let file = SecretFile::new(path);
        if let Err(e) = file.read() {
            self.report(Some(text.at), format!("{ctx}: {key}: {e}"));
        }
        Some(file)
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

    pub(super) fn document(&mut self, raw: raw::Document, path: &Path) -> Config {
        let a = self.database(Side::A, raw.a);
        let b = self.database(Side::B, raw.b);
        let sync = self.sync(raw.sync);
        let service = self.service(raw.service);
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
            service,
            entities,
        }
    }

    /// `[service]`: the operator token of the status page, inline or in a file (not both).
    fn service(&mut self, raw: Option<raw::Located<raw::Service>>) -> ServiceConfig {
        let mut out = ServiceConfig::default();
        let Some(raw) = raw else { return out };
        let ctx = "[service]";
        match (raw.value.token, raw.value.token_file) {
            (Some(_), Some(file)) => self.report(
                Some(file.span()),
                format!("{ctx}: give token or token_file, not both"),
            ),
            (Some(token), None) => {
                if let Some(t) = self.text(&format!("{ctx}: token"), token) {
                    if t.value.trim().is_empty() {
                        self.report(Some(t.at), format!("{ctx}: token is empty"));
                    } else {
                        out.token = Some(Token::new(t.value));
                    }
                }
            }
            (None, Some(file)) => out.token_file = self.secret_file(ctx, "token_file", file),
            (None, None) => {}
        }
        out
    }

    fn database(&mut self, side: Side, raw: Option<raw::Located<raw::Database>>) -> SideConfig {
        let ctx = format!("[{}]", side.name());
        let mut config = SideConfig {
            kind: DbKind::Postgres,
            url: Secret::new(String::new()),
            url_file: None,
            password_file: None,
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
        match (raw.url, raw.url_file) {
            (Some(_), Some(file)) => self.report(
                Some(file.span()),
                format!("{ctx}: give url or url_file, not both"),
            ),
            (None, Some(file)) => {
                if let Some(file) = self.secret_file(&ctx, "url_file", file) {
                    // Read now so that a missing file is a config error; connections read it
                    // again (rotation).
                    if let Ok(url) = file.read() {
                        config.url = url;
                    }
                    config.url_file = Some(file);
                }
            }
            (url, None) => {
                let url = self.required_text(&ctx, "url", url, &at);
                if let Some(url) = url {
                    // The value may hold a password: say where, never what.
                    if url.value.trim().is_empty() {
                        self.report(Some(url.at), format!("{ctx}: url is empty"));
                    }
                    config.url = Secret::new(url.value);
                }
            }
        }
        if let Some(file) = raw.password_file {
            config.password_file = self.secret_file(&ctx, "password_file", file);
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

        let mut restricted: Vec<(Side, Loc, &'static str)> = Vec::new();
        let soft_delete = raw.soft_delete.and_then(|r| {
            let at = Some(r.span());
            let s = self.soft_delete(&ctx, r)?;
            restricted.push((s.side, at, "soft_delete"));
            Some(s)
        });
        let filter = raw.filter.and_then(|r| {
            let at = Some(r.span());
            let f = self.row_filter(&ctx, r)?;
            restricted.push((f.side, at, "filter"));
            Some(f)
        });
        let (a, a_loc) = self.table_side(&ctx, Side::A, raw.a, &at);
        let (b, b_loc) = self.table_side(&ctx, Side::B, raw.b, &at);

        let mut columns = Vec::new();
        let mut column_locs = Vec::new();
        let mut constants = Vec::new();
        let mut constant_locs: Vec<Loc> = Vec::new();
        for (index, raw) in raw.columns.unwrap_or_default().into_iter().enumerate() {
            if raw.value.constant.is_some() {
                let loc = raw.at.clone().or_else(|| at.clone());
                if let Some(k) = self.constant(&ctx, index, raw, &at) {
                    constants.push(k);
                    constant_locs.push(loc);
                }
                continue;
            }
            let (mut column, loc) = self.column(&ctx, index, raw, &at);
            if column.direction != Direction::Both
                && direction != Direction::Both
                && column.direction != direction
            {
                self.report(
                    loc.direction.clone(),
                    format!("{ctx}: column {}: its direction is the opposite of the entity's: it would never travel", column.a),
                );
                column.direction = direction;
            }
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
            constants,
            soft_delete,
            filter,
        };
        self.check_restrictions(&ctx, &entity, &restricted);
        self.check_columns(
            &ctx,
            &entity,
            [&a_loc, &b_loc],
            &column_locs,
            &constant_locs,
        );
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

    /// Whether every key of an inline table (`soft_delete`, `filter`) is one of `allowed`;
    /// each other key is reported.
    fn known_keys(&mut self, what: &str, t: &toml::Table, at: &Loc, allowed: &[&str]) -> bool {
        let expected = allowed
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut ok = true;
        for k in t.keys().filter(|k| !allowed.contains(&k.as_str())) {
            self.report(
                at.clone(),
                format!("{what}: unknown key `{k}`, expected one of {expected}"),
            );
            ok = false;
        }
        ok
    }

    /// `soft_delete = { b = "deleted_at" }` or `{ a = "DELETED", value = "Y", live = "N" }`.
    fn soft_delete(&mut self, ctx: &str, raw: Spanned<toml::Value>) -> Option<SoftDelete> {
        let at = Some(raw.span());
        let what = format!("{ctx}: `soft_delete`");
        let usage = "write { b = \"deleted_at\" } (a timestamp: NULL is live) or { a = \"DELETED\", value = \"Y\", live = \"N\" } (a flag)";
        let toml::Value::Table(t) = raw.into_inner() else {
            self.report(at, format!("{what}: expected a table: {usage}"));
            return None;
        };
        let (side, column) = self.restricted_column(&what, &t, &at, usage)?;
        let ok = self.known_keys(&what, &t, &at, &["a", "b", "value", "live"]);
        let value = t
            .get("value")
            .map(|v| self.restricted_value(&what, "value", v, &at));
        let live = t
            .get("live")
            .map(|v| self.restricted_value(&what, "live", v, &at));
        let flag = match (value, live) {
            (None, None) => None,
            (Some(Some(v)), Some(Some(l))) => {
                if crate::model::value_text(&v) == crate::model::value_text(&l) {
                    self.report(
                        at.clone(),
                        format!("{what}: `value` and `live` are the same ({v}): a deleted row could not be told from a live one"),
                    );
                    return None;
                }
                Some((v, l))
            }
            (Some(_), Some(_)) => return None,
            _ => {
                self.report(
                    at.clone(),
                    format!("{what}: a flag needs both `value` (deleted) and `live` (what tandem writes in the records it creates or brings back): {usage}"),
                );
                return None;
            }
        };
        ok.then_some(SoftDelete { side, column, flag })
    }

    /// `filter = { a = "SITE_ID", equals = 3 }` or `{ a = "SITE_ID", in = [3, 4] }`.
    fn row_filter(&mut self, ctx: &str, raw: Spanned<toml::Value>) -> Option<RowFilter> {
        let at = Some(raw.span());
        let what = format!("{ctx}: `filter`");
        let usage = "write { a = \"SITE_ID\", equals = 3 } or { a = \"SITE_ID\", in = [3, 4] } (conditions in SQL text are not accepted: values travel as parameters)";
        let toml::Value::Table(t) = raw.into_inner() else {
            self.report(at, format!("{what}: expected a table: {usage}"));
            return None;
        };
        let (side, column) = self.restricted_column(&what, &t, &at, usage)?;
        let ok = self.known_keys(&what, &t, &at, &["a", "b", "equals", "in"]);
        let raw_values: Vec<&toml::Value> = match (t.get("equals"), t.get("in")) {
            (Some(v), None) => vec![v],
            (None, Some(toml::Value::Array(list))) if !list.is_empty() => list.iter().collect(),
            (None, Some(_)) => {
                self.report(
                    at,
                    format!("{what}: `in` must be a non-empty list of values"),
                );
                return None;
            }
            _ => {
                self.report(
                    at,
                    format!("{what}: give exactly one of `equals` and `in`: {usage}"),
                );
                return None;
            }
        };
        let mut values = Vec::new();
        for v in raw_values {
            values.push(self.restricted_value(&what, "value", v, &at)?);
        }
        let constant = Constant {
            side,
            column: column.clone(),
            value: values.first().cloned()?,
        };
        ok.then_some(RowFilter {
            side,
            column,
            values,
            constant,
        })
    }

    /// The `a = "COL"` or `b = "col"` of a soft delete or filter (one side only).
    fn restricted_column(
        &mut self,
        what: &str,
        t: &toml::Table,
        at: &Loc,
        usage: &str,
    ) -> Option<(Side, String)> {
        let (side, v) = match (t.get("a"), t.get("b")) {
            (Some(v), None) => (Side::A, v),
            (None, Some(v)) => (Side::B, v),
            _ => {
                self.report(
                    at.clone(),
                    format!("{what}: name the column of one side, `a` or `b` (not both): {usage}"),
                );
                return None;
            }
        };
        match v {
            toml::Value::String(s) if !s.trim().is_empty() => Some((side, s.clone())),
            _ => {
                self.report(
                    at.clone(),
                    format!("{what}: `{}` must be a column name", side.name()),
                );
                None
            }
        }
    }

    /// A value of a soft delete flag or a filter: a string, an integer or a boolean.
    fn restricted_value(
        &mut self,
        what: &str,
        key: &str,
        v: &toml::Value,
        at: &Loc,
    ) -> Option<Value> {
        match v {
            toml::Value::String(s) => Some(Value::String(s.clone())),
            toml::Value::Integer(i) => Some(Value::from(*i)),
            toml::Value::Boolean(b) => Some(Value::Bool(*b)),
            _ => {
                self.report(
                    at.clone(),
                    format!("{what}: `{key}` must be a string, an integer or a boolean (got {v})"),
                );
                None
            }
        }
    }

    /// A soft delete's or filter's column is one tandem reads on its own: not a key column,
    /// the peer id column, a mapped column or a constant, and not both of them at once.
    fn check_restrictions(
        &mut self,
        ctx: &str,
        entity: &Entity,
        restricted: &[(Side, Loc, &'static str)],
    ) {
        let columns = [
            entity
                .soft_delete
                .as_ref()
                .map(|s| (s.side, s.column.as_str())),
            entity.filter.as_ref().map(|f| (f.side, f.column.as_str())),
        ];
        for ((side, column), (_, at, key)) in columns.into_iter().flatten().zip(restricted) {
            let ts = entity.side(side);
            let clash = if ts.key.iter().any(|k| k == column) {
                Some("a key column")
            } else if ts.peer_id_column.as_deref() == Some(column) {
                Some("the peer_id_column")
            } else if entity.columns.iter().any(|c| c.name(side) == column) {
                Some("a mapped column")
            } else if entity
                .constants
                .iter()
                .any(|k| k.side == side && k.column == column)
            {
                Some("a const column")
            } else {
                None
            };
            if let Some(what) = clash {
                self.report(
                    at.clone(),
                    format!("{ctx}: `{key}`: column {column} of side {side} is also {what}: tandem reads and writes it on its own (remove it from the other place)"),
                );
            }
        }
        if let (Some(s), Some(f)) = (&entity.soft_delete, &entity.filter) {
            if s.side == f.side && s.column == f.column {
                let at = restricted.get(1).and_then(|r| r.1.clone());
                self.report(
                    at,
                    format!(
                        "{ctx}: `filter`: column {} is also the soft delete's column",
                        f.column
                    ),
                );
            }
        }
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
            key_from: None,
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
        if let Some(raw) = raw.key_from {
            let what = format!("{s}.key_from");
            let at = raw.span();
            if let Some(text) = self.text(&format!("{ctx}: {what}"), raw) {
                let v = text.value.trim();
                if v == "max+1" {
                    table_side.key_from = Some(KeyFrom::MaxPlusOne);
                } else if let Some(name) = v.strip_prefix("sequence ") {
                    let name = Text {
                        value: name.trim().to_string(),
                        at: text.at.clone(),
                    };
                    table_side.key_from =
                        Some(KeyFrom::Sequence(self.table_name(ctx, &what, name)));
                } else {
                    self.report(
                        Some(at),
                        format!("{ctx}: {what} {:?} is not valid; expected \"sequence NAME\" or \"max+1\"", text.value),
                    );
                }
                loc.key_from = Some(text.at);
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
        let prefer = raw.prefer.map(|p| self.prefer(&label, has_values, p));
        let value_map = raw
            .values
            .and_then(|v| self.value_map(ctx, &what, v, &at, prefer.unwrap_or_default()));
        let has_convert = raw.convert.is_some();
        let convert = raw.convert.and_then(|c| self.converter(&label, c));
        if has_convert && has_values {
            self.report(
                at.clone(),
                format!("{label}: values and convert cannot be combined; use one of them"),
            );
        }
        if let Some(setting) = raw.expr {
            self.report(
                Some(setting.span()),
                format!(
                    "{label}: `expr`: expressions are not supported: tandem never runs SQL (or any code) written in the config, because a value must travel as a parameter and every mapping must be invertible for changes to travel back; use a built-in converter (`convert`: trim, bool, flag, scale, round, timezone), `values` for codes, `lookup` for an id found in a reference table, or `direction` for a column computed on one side only"
                ),
            );
        }
        let has_lookup = raw.lookup.is_some();
        let lookup = raw.lookup.and_then(|l| self.lookup(&label, l));
        if has_lookup {
            for (has, what) in [
                (has_values, "values"),
                (has_convert, "convert"),
                (raw.parent.is_some(), "ref"),
            ] {
                if has {
                    self.report(
                        at.clone(),
                        format!(
                            "{label}: lookup and {what} cannot be combined; a looked-up column is translated through its reference table only"
                        ),
                    );
                }
            }
        }
        let mut direction_at = None;
        let direction = match raw.direction {
            Some(d) => {
                direction_at = Some(d.span());
                let d = self.text(&format!("{label}: direction"), d);
                self.choice(
                    &label,
                    "direction",
                    d,
                    &[
                        ("both", Direction::Both),
                        ("a_to_b", Direction::AToB),
                        ("b_to_a", Direction::BToA),
                    ],
                    Direction::Both,
                )
            }
            None => Direction::Both,
        };

        let mut parent = None;
        let mut parent_at = None;
        if let Some(raw_parent) = raw.parent {
            let text = self.text(&format!("{label}: ref"), raw_parent);
            if let Some(text) = self.non_empty(&label, "ref", text) {
                for (has, what) in [(has_values, "values"), (has_convert, "convert")] {
                    if has {
                        self.report(
                            Some(text.at.clone()),
                            format!(
                                "{label}: {what} and ref cannot be combined; a ref column is translated through the id map of its parent"
                            ),
                        );
                    }
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
            convert,
            direction,
            lookup,
        };
        let loc = ColumnLoc {
            names: [a_at, b_at],
            parent: parent_at,
            direction: direction_at,
        };
        (column, loc)
    }

    /// A `const` entry: one side's column (`a` or `b`, not both) and its value, nothing else.
    fn constant(
        &mut self,
        ctx: &str,
        index: usize,
        raw: raw::Located<raw::Column>,
        entity_at: &Loc,
    ) -> Option<Constant> {
        let at = raw.at.or_else(|| entity_at.clone());
        let raw = raw.value;
        let label = format!("{ctx}: column #{}", index + 1);
        let value = raw.constant?;
        let others = [
            ("values", raw.values.is_some()),
            ("ref", raw.parent.is_some()),
            ("convert", raw.convert.is_some()),
            ("prefer", raw.prefer.is_some()),
            ("direction", raw.direction.is_some()),
            ("lookup", raw.lookup.is_some()),
        ];
        let mut ok = true;
        for (key, present) in others {
            if present {
                self.report(
                    at.clone(),
                    format!("{label}: const and {key} cannot be combined: a constant is written on one side only"),
                );
                ok = false;
            }
        }
        let (side, name) = match (raw.a, raw.b) {
            (Some(a), None) => (Side::A, a),
            (None, Some(b)) => (Side::B, b),
            _ => {
                self.report(
                    at,
                    format!("{label}: a const names the column of one side: `a` or `b`, not both"),
                );
                return None;
            }
        };
        let column = self.text(&format!("{label}: {}", side.name()), name);
        let column = self.non_empty(&label, side.name(), column)?;
        let value_at = value.span();
        let value = match value.into_inner() {
            toml::Value::String(s) => self
                .text(
                    &format!("{label}: const"),
                    Spanned::new(value_at.clone(), s),
                )
                .map(|t| Value::String(t.value)),
            toml::Value::Integer(i) => Some(Value::from(i)),
            toml::Value::Boolean(b) => Some(Value::Bool(b)),
            toml::Value::Float(f) => serde_json::Number::from_f64(f).map(Value::Number),
            _ => None,
        };
        let Some(value) = value else {
            self.report(
                Some(value_at),
                format!("{label}: const must be a string, integer, float or boolean"),
            );
            return None;
        };
        ok.then_some(Constant {
            side,
            column: column.value,
            value,
        })
    }

    /// Converts one `values` table; `column_at` is where the column entry is,
    /// used for problems about the map as a whole.
    fn value_map(
        &mut self,
        ctx: &str,
        column: &str,
        raw: raw::Located<raw::Values>,
        column_at: &Loc,
        prefer: Vec<String>,
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
                // Many-to-one: fine when exactly one of the codes is preferred for the way back.
                let chosen = [first_code, &code]
                    .iter()
                    .filter(|c| prefer.contains(c))
                    .count();
                if chosen == 1 {
                    if prefer.contains(&code) {
                        seen.insert(text, (code.clone(), value.clone()));
                    }
                    pairs.push((Value::String(code), value));
                    continue;
                }
                let target = if *first_value == value {
                    format!("both map to {value}")
                } else {
                    format!("map to {first_value} and {value}, which are equal as text")
                };
                let hint = if chosen == 0 {
                    format!("; name the code written back with prefer = [{first_code:?}]")
                } else {
                    "; prefer names both: name one".to_string()
                };
                self.report(
                    column_at.clone(),
                    format!(
                        "{ctx}: values of {column} are not one-to-one: A codes {first_code:?} and {code:?} {target}{hint}"
                    ),
                );
                ok = false;
            } else {
                seen.insert(text, (code.clone(), value.clone()));
            }
            pairs.push((Value::String(code), value));
        }
        for p in &prefer {
            if !pairs.iter().any(|(a, _)| a.as_str() == Some(p.as_str())) {
                self.report(
                    column_at.clone(),
                    format!("{ctx}: values of {column}: prefer names {p:?}, which is not one of its A codes"),
                );
                ok = false;
            }
        }
        ok.then_some(ValueMap { pairs, prefer })
    }

    /// The `prefer` list (A codes); it needs a `values` map.
    fn prefer(
        &mut self,
        label: &str,
        has_values: bool,
        raw: Spanned<Vec<Spanned<String>>>,
    ) -> Vec<String> {
        if !has_values {
            self.report(
                Some(raw.span()),
                format!("{label}: prefer needs a values map (it names A codes of it)"),
            );
        }
        raw.into_inner()
            .into_iter()
            .filter_map(|p| self.text(&format!("{label}: prefer"), p))
            .map(|t| t.value)
            .collect()
    }

    /// Reads `convert`: a converter's name or a table naming one; anything else is refused
    /// with the list of what there is.
    /// `lookup = { a_table | b_table = "schema.table", key = "id", value = "code" }`.
    fn lookup(&mut self, label: &str, raw: Spanned<toml::Value>) -> Option<Lookup> {
        const FORM: &str = "expected lookup = { b_table = \"schema.table\", key = \"id\", value = \"code\" } (or a_table when the reference table is on side A): the side of the table holds its key, the other side its value";
        let at = raw.span();
        let toml::Value::Table(t) = raw.into_inner() else {
            self.report(Some(at), format!("{label}: lookup: {FORM}"));
            return None;
        };
        let mut ok = true;
        for k in t.keys() {
            if !["a_table", "b_table", "key", "value"].contains(&k.as_str()) {
                self.report(
                    Some(at.clone()),
                    format!("{label}: lookup: unknown key {k:?}; {FORM}"),
                );
                ok = false;
            }
        }
        let text = |me: &mut Self, key: &str| -> Option<String> {
            match t.get(key) {
                None => None,
                Some(toml::Value::String(v)) if !v.trim().is_empty() => {
                    match interpolate(v, me.env) {
                        Ok(v) => Some(v),
                        Err(errors) => {
                            for e in errors {
                                me.report(Some(at.clone()), format!("{label}: lookup.{key}: {e}"));
                            }
                            None
                        }
                    }
                }
                Some(_) => {
                    me.report(
                        Some(at.clone()),
                        format!("{label}: lookup.{key} must be a non-empty string"),
                    );
                    None
                }
            }
        };
        let a_table = text(self, "a_table");
        let b_table = text(self, "b_table");
        let key = text(self, "key");
        let value = text(self, "value");
        let (side, table) = match (a_table, b_table) {
            (Some(t), None) => (Side::A, t),
            (None, Some(t)) => (Side::B, t),
            (Some(_), Some(_)) => {
                self.report(
                    Some(at),
                    format!("{label}: lookup names a_table and b_table: the reference table is on one side; {FORM}"),
                );
                return None;
            }
            (None, None) => {
                self.report(
                    Some(at),
                    format!("{label}: lookup needs a_table or b_table; {FORM}"),
                );
                return None;
            }
        };
        let (Some(key), Some(value)) = (key, value) else {
            if t.contains_key("key") && t.contains_key("value") {
                return None; // reported above
            }
            self.report(
                Some(at),
                format!("{label}: lookup needs key and value; {FORM}"),
            );
            return None;
        };
        if key == value {
            self.report(
                Some(at),
                format!("{label}: lookup: key and value are both {key:?}: they are two columns of the reference table (an id and what the other side holds)"),
            );
            return None;
        }
        let table = self.table_name(
            &format!("{label}: lookup"),
            &format!("{}_table", side.name()),
            Text {
                value: table,
                at: at.clone(),
            },
        );
        ok.then_some(Lookup {
            side,
            table,
            key,
            value,
        })
    }

    fn converter(&mut self, label: &str, raw: Spanned<toml::Value>) -> Option<Converter> {
        const KNOWN: &str = "\"trim\", \"bool\", { flag = [ON, OFF] }, { scale = N }, { round = N }, { timezone = \"Zone/Name\", ambiguous = \"earlier\" | \"later\" }";
        let at = raw.span();
        let bad = |me: &mut Self, why: String| {
            me.report(
                Some(at.clone()),
                format!("{label}: convert: {why}; expected one of {KNOWN}"),
            );
            None
        };
        let scalar = |v: &toml::Value| -> Option<Value> {
            match v {
                toml::Value::String(s) => Some(Value::String(s.clone())),
                toml::Value::Integer(i) => Some(Value::from(*i)),
                _ => None,
            }
        };
        match raw.into_inner() {
            toml::Value::String(name) => match name.as_str() {
                "trim" => Some(Converter::Trim),
                "bool" => Some(Converter::Flag {
                    on: Value::from(1),
                    off: Value::from(0),
                }),
                other => bad(self, format!("unknown converter {other:?}")),
            },
            toml::Value::Table(t) => {
                let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
                keys.sort_unstable();
                match keys.as_slice() {
                    ["flag"] => match t.get("flag") {
                        Some(toml::Value::Array(codes)) if codes.len() == 2 => {
                            match (scalar(&codes[0]), scalar(&codes[1])) {
                                (Some(on), Some(off)) if text_form(&on) != text_form(&off) => {
                                    Some(Converter::Flag { on, off })
                                }
                                _ => bad(self, "flag needs two different codes (strings or integers): [ON, OFF]".into()),
                            }
                        }
                        _ => bad(self, "flag needs two codes: [ON, OFF]".into()),
                    },
                    ["scale"] => match t.get("scale").and_then(toml::Value::as_integer) {
                        Some(n) if (-30..=30).contains(&n) => {
                            Some(Converter::Scale(i32::try_from(n).unwrap_or(0)))
                        }
                        _ => bad(self, "scale needs an integer from -30 to 30".into()),
                    },
                    ["round"] => match t.get("round").and_then(toml::Value::as_integer) {
                        Some(n) if (0..=30).contains(&n) => {
                            Some(Converter::Round(u32::try_from(n).unwrap_or(0)))
                        }
                        _ => bad(
                            self,
                            "round needs an integer from 0 to 30 (decimals kept)".into(),
                        ),
                    },
                    ["ambiguous", "timezone"] | ["timezone"] => {
                        let later = match t.get("ambiguous").map(toml::Value::as_str) {
                            None | Some(Some("earlier")) => false,
                            Some(Some("later")) => true,
                            _ => {
                                return bad(
                                    self,
                                    "ambiguous is \"earlier\" or \"later\" (which of a repeated hour's two instants a local time means)".into(),
                                )
                            }
                        };
                        match t.get("timezone").and_then(toml::Value::as_str) {
                            Some(name) => match name.parse::<chrono_tz::Tz>() {
                                Ok(zone) => Some(Converter::Timezone { zone, later }),
                                Err(_) => bad(
                                    self,
                                    format!("unknown time zone {name:?} (an IANA name such as \"Europe/Paris\")"),
                                ),
                            },
                            None => bad(self, "timezone needs a zone name".into()),
                        }
                    }
                    _ => bad(
                        self,
                        format!("unknown converter table with keys {}", keys.join(", ")),
                    ),
                }
            }
            _ => bad(self, "a converter is a name or a table".into()),
        }
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
        constant_locs: &[Loc],
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

            // A key column is not looked up: a record's key is its identity on each side (and
            // the id map's), not a value found in a table that may change.
            for (column, loc) in entity.columns.iter().zip(column_locs) {
                if column.lookup.is_some() && table_side.key.iter().any(|k| k == column.name(side))
                {
                    self.report(
                        loc.names[i].clone(),
                        format!(
                            "{ctx}: column {} is part of {}.key and has a lookup: a key column cannot be looked up (map the key as it is, and look up a non-key column)",
                            column.name(side),
                            side.name()
                        ),
                    );
                }
            }
            // A key column travels both ways: a record's key must reach each side.
            for (column, loc) in entity.columns.iter().zip(column_locs) {
                if column.direction != Direction::Both
                    && table_side.key.iter().any(|k| k == column.name(side))
                {
                    self.report(
                        loc.direction.clone(),
                        format!(
                            "{ctx}: column {} is part of {}.key: a key column travels both ways (remove its direction)",
                            column.name(side),
                            side.name()
                        ),
                    );
                }
            }
            for (k, at) in entity.constants.iter().zip(constant_locs) {
                if k.side != side {
                    continue;
                }
                let clash = if table_side.key.contains(&k.column) {
                    Some("a key column")
                } else if peer == Some(k.column.as_str()) {
                    Some("the peer_id_column")
                } else if entity.columns.iter().any(|c| c.name(side) == k.column) {
                    Some("a mapped column")
                } else {
                    None
                };
                if let Some(what) = clash {
                    self.report(
                        at.clone(),
                        format!(
                            "{ctx}: const column {} of side {side} is also {what}: a constant is a column tandem fills on its own",
                            k.column
                        ),
                    );
                }
            }

            if table_side.key_from.is_some() {
                let why = if table_side.key.len() != 1 {
                    Some(format!(
                        "needs a single-column key, but {}.key has {} columns",
                        side.name(),
                        table_side.key.len()
                    ))
                } else if entity.key_is_given(side) {
                    Some(
                        "the key is given by mapped columns: tandem does not number these records"
                            .to_string(),
                    )
                } else if !entity.direction.flows(side.other()) {
                    Some(format!(
                        "changes never flow to side {side}: tandem creates no records there"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    self.report(
                        side_locs[i].key_from.clone(),
                        format!("{ctx}: {}.key_from {why}", side.name()),
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
pub(super) fn interpolate(
    s: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
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
