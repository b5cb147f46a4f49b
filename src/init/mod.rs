//! `tandem init`: a draft `tandem.toml` from two live schemas. Pure: it works on two
//! [`Catalog`]s (each dialect reads its own, `endpoint::*::catalog`), so every rule here is
//! unit-tested without a database.
//!
//! - [`names`]: identifiers as canonical words, and how alike two names are;
//! - [`matcher`]: tables, then columns within each table pair, keys, peer id columns, `ref`s,
//!   `values` proposals, and the draft compared with `tandem check`'s own rules
//!   (`desc::check`, `desc::compare`) so that what is left active passes `check`;
//! - [`render`]: the draft as TOML, with a commented `TODO` over every uncertain choice;
//! - [`diff`]: an existing config against the live schemas (`init --diff`).
//!
//! The draft never decides silently: a choice that is not certain is written with a `# TODO:`
//! comment naming the alternatives and the score; the line under it is the first choice. A
//! line that `check` would refuse is written commented out.

pub mod diff;
pub mod matcher;
pub mod names;
pub mod render;
#[cfg(test)]
mod tests;

use crate::config::{DbKind, Direction, TableName};

pub use matcher::draft;

/// A proposed config.
#[derive(Debug, Clone)]
pub struct Draft {
    pub a_kind: DbKind,
    pub b_kind: DbKind,
    /// Parents first.
    pub entities: Vec<DraftEntity>,
    /// Tables no entity maps, with a reason when there is one (e.g. no key).
    pub unmatched_a: Vec<(TableName, String)>,
    pub unmatched_b: Vec<(TableName, String)>,
}

/// One proposed `[[entities]]`.
#[derive(Debug, Clone)]
pub struct DraftEntity {
    pub name: String,
    pub a: DraftSide,
    pub b: DraftSide,
    /// None: the default (`both`).
    pub direction: Option<Direction>,
    /// How sure the table match is (0..=1).
    pub score: f64,
    /// Comments that are facts, not choices (how the keys are linked).
    pub notes: Vec<String>,
    /// Choices the user must confirm.
    pub todos: Vec<String>,
    pub columns: Vec<DraftColumn>,
    /// Columns of each table that nothing maps (keys and peer id columns left out).
    pub unmatched_a: Vec<String>,
    pub unmatched_b: Vec<String>,
}

/// One side of a proposed entity.
#[derive(Debug, Clone)]
pub struct DraftSide {
    pub table: TableName,
    pub key: Vec<String>,
    pub peer_id_column: Option<String>,
}

/// One proposed column pair.
#[derive(Debug, Clone)]
pub struct DraftColumn {
    pub a: String,
    pub b: String,
    /// How sure the match is (0..=1).
    pub score: f64,
    /// A proposed `values` map (A code, B value); empty: none.
    pub values: Vec<(String, serde_json::Value)>,
    /// `ref`: the parent entity.
    pub parent: Option<String>,
    pub todos: Vec<String>,
    /// False: written commented out (as it stands, `check` would refuse it).
    pub active: bool,
}

impl DraftEntity {
    /// The entity as tandem's config has it (active columns only), to judge it with `check`'s
    /// rules.
    pub fn to_config(&self) -> crate::config::Entity {
        use crate::config::{ColumnMap, ConflictPolicy, Entity, TableSide, ValueMap};
        let side = |s: &DraftSide| TableSide {
            table: s.table.clone(),
            key: s.key.clone(),
            peer_id_column: s.peer_id_column.clone(),
            key_from: None,
        };
        Entity {
            name: self.name.clone(),
            direction: self.direction.unwrap_or(Direction::Both),
            on_conflict: ConflictPolicy::NewestWins,
            a: side(&self.a),
            b: side(&self.b),
            columns: self
                .columns
                .iter()
                .filter(|c| c.active)
                .map(|c| ColumnMap {
                    a: c.a.clone(),
                    b: c.b.clone(),
                    values: (!c.values.is_empty()).then(|| ValueMap {
                        pairs: c
                            .values
                            .iter()
                            .map(|(a, b)| (serde_json::Value::String(a.clone()), b.clone()))
                            .collect(),
                        prefer: Vec::new(),
                    }),
                    parent: c.parent.clone(),
                    convert: None,
                    direction: Direction::Both,
                    lookup: None,
                })
                .collect(),
            constants: Vec::new(),
            soft_delete: None,
            filter: None,
        }
    }
}

impl Draft {
    /// Column pairs proposed (active or commented out), and how many carry a TODO.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for e in &self.entities {
            c.entities += 1;
            c.todos += e.todos.len();
            for col in &e.columns {
                c.pairs += 1;
                c.todos += col.todos.len();
                if !col.todos.is_empty() {
                    c.uncertain += 1;
                }
                if !col.active {
                    c.commented += 1;
                }
            }
            c.unmatched_columns += e.unmatched_a.len() + e.unmatched_b.len();
        }
        c.unmatched_tables = self.unmatched_a.len() + self.unmatched_b.len();
        c
    }
}

/// What a draft holds, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub entities: usize,
    pub pairs: usize,
    /// Column pairs with at least one TODO.
    pub uncertain: usize,
    /// Column pairs written commented out.
    pub commented: usize,
    /// TODO lines in all (entities and columns).
    pub todos: usize,
    pub unmatched_tables: usize,
    pub unmatched_columns: usize,
}
