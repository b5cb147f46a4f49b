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
