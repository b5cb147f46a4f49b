//! `tandem init --diff`: an existing config against the live schemas. Two kinds of
//! difference: what the config names and the database no longer has (`check` fails on it),
//! and what the database has that no entity maps (new tables and columns, which are not
//! synchronised).

use std::fmt;

use crate::config::{Config, Side, TableName};
use crate::endpoint::catalog::Catalog;

/// One difference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub side: Side,
    pub kind: DiffKind,
    pub message: String,
    /// For a column no entity maps: its table and name (to look up what `init` proposes).
    pub column: Option<(TableName, String)>,
}

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiffKind {
    /// The config names a table or column the database does not have.
    Missing,
    /// The database has a table or column no entity maps.
    NotMapped,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.kind {
            DiffKind::Missing => "missing",
            DiffKind::NotMapped => "not mapped",
        };
        write!(f, "side {}: {tag}: {}", self.side, self.message)
    }
}

/// Every difference between `config` and the catalogs of its sides, missing ones first.
pub fn diff(config: &Config, a: &Catalog, b: &Catalog) -> Vec<Difference> {
    let mut out = Vec::new();
    for (side, catalog) in [(Side::A, a), (Side::B, b)] {
        let same =
            |x: &str, y: &str| x == y || (catalog.case_insensitive && x.eq_ignore_ascii_case(y));
        let mut used: Vec<(&TableName, Vec<&str>)> = Vec::new();
        for e in &config.entities {
            let ts = e.side(side);
            let Some(t) = catalog.table(&ts.table) else {
                out.push(Difference {
                    side,
                    kind: DiffKind::Missing,
                    message: format!("entity {}: table {} does not exist", e.name, ts.table),
                    column: None,
                });
                continue;
            };
            let mut named: Vec<&str> = ts.key.iter().map(String::as_str).collect();
            named.extend(e.columns.iter().map(|c| c.name(side)));
            named.extend(ts.peer_id_column.as_deref());
            for n in &named {
                if !t.columns.iter().any(|c| same(&c.desc.name, n)) {
                    out.push(Difference {
                        side,
                        kind: DiffKind::Missing,
                        message: format!(
                            "entity {}: column {n:?} does not exist in table {}",
                            e.name, ts.table
                        ),
                        column: None,
                    });
                }
            }
            match used.iter_mut().find(|(u, _)| *u == &t.name) {
                Some((_, cols)) => cols.extend(named),
                None => used.push((&t.name, named)),
            }
        }
        for t in &catalog.tables {
            match used.iter().find(|(u, _)| *u == &t.name) {
                None => out.push(Difference {
                    side,
                    kind: DiffKind::NotMapped,
                    message: format!(
                        "table {} ({} columns) is in no entity",
                        t.name,
                        t.columns.len()
                    ),
                    column: None,
                }),
                Some((_, cols)) => {
                    for c in &t.columns {
                        if !cols.iter().any(|n| same(&c.desc.name, n)) {
                            out.push(Difference {
                                side,
                                kind: DiffKind::NotMapped,
                                message: format!(
                                    "column {:?} of table {} ({}) is not mapped",
                                    c.desc.name, t.name, c.desc.type_name
                                ),
                                column: Some((t.name.clone(), c.desc.name.clone())),
                            });
                        }
                    }
                }
            }
        }
    }
    out.sort_by_key(|d| (d.kind, d.side == Side::B));
    out
}

/// Adds to each column no entity maps the line `init` would write for it, when the draft of
/// the same schemas maps it (a column added on both sides since the config was written).
pub fn suggest(found: &mut [Difference], draft: &super::Draft) {
    for d in found.iter_mut() {
        let Some((table, column)) = &d.column else {
            continue;
        };
        for e in &draft.entities {
            let own = if d.side == Side::A { &e.a } else { &e.b };
            if own.table != *table {
                continue;
            }
            let hit = e.columns.iter().find(|c| {
                let n = if d.side == Side::A { &c.a } else { &c.b };
                n == column
            });
            if let Some(c) = hit {
                d.message.push_str(&format!(
                    "; init proposes {} in the entity on {} ↔ {}",
                    super::render::column(c).trim_end_matches(','),
                    e.a.table,
                    e.b.table
                ));
            }
        }
    }
}
