//! Schema drift: what `install` recorded of each synchronised table (its columns, types and
//! unique keys: a [`Fingerprint`], built from the same [`TableDesc`] `check` reads) against
//! the table as the catalog has it now ([`compare`]).
//!
//! A mapped column dropped, renamed or retyped, or the key's unique index gone, pauses the
//! entity ([`Drift::pause`]): applying its changes would fail or change their meaning, and
//! failing would burn attempts and end suspended. Anything else (a new column tandem does not
//! map, an unmapped column dropped) is a warning: tandem never touches such columns.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::desc::TableDesc;
use super::{Admin, EndpointError};
use crate::config::{Config, Entity, Side};

/// A table as `install` saw it, stored as JSON in `tandem.fingerprint`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprint {
    pub columns: Vec<FpColumn>,
    /// Each unique key (primary key or unique index) as its sorted column names.
    pub keys: Vec<Vec<String>>,
    /// The server compares names case-insensitively.
    #[serde(default)]
    pub case_insensitive: bool,
}

/// One column of a [`Fingerprint`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpColumn {
    pub name: String,
    #[serde(rename = "type")]
    pub type_name: String,
    pub not_null: bool,
}

impl Fingerprint {
    /// The fingerprint of a described table.
    pub fn of(desc: &TableDesc) -> Fingerprint {
        let mut keys: Vec<Vec<String>> = desc
            .unique_keys
            .iter()
            .map(|k| k.iter().cloned().collect())
            .collect();
        keys.sort();
        Fingerprint {
            columns: desc
                .columns
                .iter()
                .map(|c| FpColumn {
                    name: c.name.clone(),
                    type_name: c.type_name.clone(),
                    not_null: c.not_null,
                })
                .collect(),
            keys,
            case_insensitive: desc.case_insensitive,
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }

    /// Reads the stored form; None when it is not one (written by hand, or a later version).
    pub fn from_json(text: &str) -> Option<Fingerprint> {
        serde_json::from_str(text).ok()
    }

    fn column(&self, name: &str) -> Option<&FpColumn> {
        self.columns.iter().find(|c| self.same(&c.name, name))
    }

    fn same(&self, x: &str, y: &str) -> bool {
        if self.case_insensitive {
            x.eq_ignore_ascii_case(y)
        } else {
            x == y
        }
    }

    fn has_key(&self, cols: &[String]) -> bool {
        let want: BTreeSet<String> = cols.iter().map(|c| self.fold(c)).collect();
        self.keys
            .iter()
            .any(|k| k.iter().map(|c| self.fold(c)).collect::<BTreeSet<_>>() == want)
    }

    fn fold(&self, name: &str) -> String {
        if self.case_insensitive {
            name.to_lowercase()
        } else {
            name.to_string()
        }
    }
}

/// What `install` recorded for one entity at one side.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub entity: String,
    /// The table as the config named it at install time.
    pub table: String,
    /// None when the stored text cannot be read.
    pub fingerprint: Option<Fingerprint>,
}

/// One difference between the recorded and the live table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The entity must pause: its mapped columns or key no longer are what was recorded.
    pub pause: bool,
    /// What changed, naming entity, side, table and column.
    pub message: String,
}

/// What an operator does about a paused entity (ends every pause message).
pub const RESUME_HINT: &str = "its changes wait in the outboxes (nothing is lost or suspended) \
     and other entities keep flowing; to resume, restore the table as it was, or fix the \
     mapping in tandem.toml and run `tandem install` (restart `tandem run` after changing \
     tandem.toml)";

/// The columns `entity` reads and writes at `side`: mapped, key and peer id columns, and a
/// soft delete's mark and a row filter's column there.
pub fn used_columns(entity: &Entity, side: Side) -> Vec<String> {
    let ts = entity.side(side);
    let mut out: Vec<String> = Vec::new();
    let names = entity
        .read_columns(side)
        .into_iter()
        .chain(ts.peer_id_column.as_deref());
    for n in names {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    }
    out
}

/// Compares what `install` recorded of `entity`'s table at `side` with the live table (None:
/// the table is gone). Pauses come first.
pub fn compare(
    entity: &Entity,
    side: Side,
    recorded: &Fingerprint,
    live: Option<&Fingerprint>,
) -> Vec<Drift> {
    let table = entity.side(side).table.to_string();
    let at = format!("entity {}: side {side}, table {table}", entity.name);
    let pause = |what: String| Drift {
        pause: true,
        message: format!("{at}: {what}"),
    };
    let warn = |what: String| Drift {
        pause: false,
        message: format!("{at}: {what}"),
    };
    let Some(live) = live else {
        return vec![pause(
            "the table is gone since `tandem install` recorded it".to_string(),
        )];
    };
    let used = used_columns(entity, side);
    let is_used = |name: &str| used.iter().any(|u| live.same(u, name));
    let mut out = Vec::new();
    // Columns that appeared since `install`: a vanished mapped column of the same type was
    // probably renamed to one of them.
    let new_columns: Vec<&FpColumn> = live
        .columns
        .iter()
        .filter(|l| recorded.column(&l.name).is_none())
        .collect();
    for c in &used {
        match (recorded.column(c), live.column(c)) {
            (Some(r), None) => {
                let renamed: Vec<&str> = new_columns
                    .iter()
                    .filter(|l| l.type_name == r.type_name)
                    .map(|l| l.name.as_str())
                    .collect();
                let guess = match renamed.as_slice() {
                    [one] => format!(" (renamed to {one}? then map {one} instead of {c})"),
                    _ => String::new(),
                };
                out.push(pause(format!(
                    "mapped column {c} ({}) was dropped or renamed since `tandem install` recorded the table{guess}",
                    r.type_name
                )))
            }
            (None, None) => out.push(pause(format!("mapped column {c} is not in the table"))),
            (Some(r), Some(l)) if r.type_name != l.type_name => out.push(pause(format!(
                "mapped column {c} changed type from {} to {} since `tandem install` recorded the table",
                r.type_name, l.type_name
            ))),
            (Some(r), Some(l)) if r.not_null != l.not_null => out.push(warn(format!(
                "mapped column {c} {} since `tandem install` (run `tandem check`, then `tandem install` to record it)",
                if l.not_null { "is now NOT NULL" } else { "now allows NULL" }
            ))),
            _ => {}
        }
    }
    let key = &entity.side(side).key;
    if recorded.has_key(key) && !live.has_key(key) {
        out.push(pause(format!(
            "the unique key on ({}) is gone since `tandem install` recorded the table",
            key.join(", ")
        )));
    }
    for l in &live.columns {
        if !is_used(&l.name) && recorded.column(&l.name).is_none() {
            out.push(warn(format!(
                "new column {} ({}) is not mapped: tandem leaves it alone (to sync it, map it \
                 in tandem.toml, run `tandem install` and restart `tandem run`)",
                l.name, l.type_name
            )));
        }
    }
    for r in &recorded.columns {
        if !is_used(&r.name) && live.column(&r.name).is_none() {
            out.push(warn(format!(
                "column {}, which is not mapped, was dropped: no effect on tandem (run \
                 `tandem install` to record the table as it is)",
                r.name
            )));
        }
    }
    for d in out.iter_mut().filter(|d| d.pause) {
        d.message = format!("{}; {RESUME_HINT}", d.message);
    }
    out.sort_by_key(|d| !d.pause);
    out
}

/// Records the fingerprint of every entity's table at `ep`'s side (after `install`'s script).
pub async fn record_all(ep: &dyn Admin, config: &Config) -> Result<(), EndpointError> {
    let side = ep.side();
    for e in &config.entities {
        if let Some(desc) = ep.describe(&e.name).await? {
            let fp = Fingerprint::of(&desc);
            ep.record_fingerprint(&e.name, &e.side(side).table.to_string(), &fp.to_json())
                .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity() -> Entity {
        let text = r#"
[a]
kind = "postgres"
url = "postgres://x@localhost/a"
[b]
kind = "postgres"
url = "postgres://x@localhost/b"
[[entities]]
name = "cust"
a = { table = "a_cust", key = ["id"] }
b = { table = "b_cust", key = ["id"] }
columns = [ { a = "id", b = "id" }, { a = "name", b = "name" } ]
"#;
        let c =
            crate::config::parse(text, std::path::Path::new("t.toml"), &|_| None).expect("config");
        c.entities[0].clone()
    }

    fn fp(cols: &[(&str, &str)]) -> Fingerprint {
        Fingerprint {
            columns: cols
                .iter()
                .map(|(n, t)| FpColumn {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    not_null: false,
                })
                .collect(),
            keys: vec![vec!["id".into()]],
            case_insensitive: false,
        }
    }

    /// A soft delete's mark and a filter's column are read by tandem: dropping one pauses.
    #[test]
    fn a_dropped_soft_delete_or_filter_column_pauses() {
        let mut e = entity();
        e.soft_delete = Some(crate::config::SoftDelete {
            side: Side::B,
            column: "deleted_at".into(),
            flag: None,
        });
        assert_eq!(used_columns(&e, Side::B), vec!["id", "name", "deleted_at"]);
        assert_eq!(used_columns(&e, Side::A), vec!["id", "name"]);
        let r = fp(&[
            ("id", "integer"),
            ("name", "text"),
            ("deleted_at", "timestamp"),
        ]);
        let dropped = fp(&[("id", "integer"), ("name", "text")]);
        let d = compare(&e, Side::B, &r, Some(&dropped));
        assert!(d.first().is_some_and(|d| d.pause), "{d:?}");
    }

    #[test]
    fn the_same_table_is_no_drift() {
        let r = fp(&[("id", "integer"), ("name", "text")]);
        assert_eq!(compare(&entity(), Side::B, &r, Some(&r.clone())), vec![]);
    }

    #[test]
    fn a_mapped_column_renamed_or_retyped_pauses_with_what_to_do() {
        let r = fp(&[("id", "integer"), ("name", "text")]);
        let renamed = fp(&[("id", "integer"), ("full_name", "text")]);
        let d = compare(&entity(), Side::B, &r, Some(&renamed));
        assert!(d[0].pause, "{d:?}");
        assert!(
            d[0].message.starts_with(
                "entity cust: side B, table b_cust: mapped column name (text) was dropped or renamed"
            ),
            "{}",
            d[0].message
        );
        assert!(
            d[0].message.contains("run `tandem install`"),
            "{}",
            d[0].message
        );
        assert!(
            d[0].message
                .contains("(renamed to full_name? then map full_name instead of name)"),
            "{}",
            d[0].message
        );
        // The new name is an unmapped new column: a warning, not a second pause.
        assert!(d[1..].iter().all(|x| !x.pause), "{d:?}");
        let retyped = fp(&[("id", "integer"), ("name", "character varying(10)")]);
        let d = compare(&entity(), Side::B, &r, Some(&retyped));
        assert!(d[0].pause);
        assert!(d[0]
            .message
            .contains("changed type from text to character varying(10)"));
    }

    #[test]
    fn a_new_unmapped_column_only_warns_and_a_missing_table_pauses() {
        let r = fp(&[("id", "integer"), ("name", "text")]);
        let more = fp(&[("id", "integer"), ("name", "text"), ("note", "text")]);
        let d = compare(&entity(), Side::A, &r, Some(&more));
        assert_eq!(d.len(), 1);
        assert!(!d[0].pause);
        assert!(d[0]
            .message
            .contains("new column note (text) is not mapped"));
        let d = compare(&entity(), Side::A, &r, None);
        assert!(d[0].pause && d[0].message.contains("the table is gone"));
    }

    #[test]
    fn the_stored_form_reads_back() {
        let r = fp(&[("id", "integer"), ("name", "text")]);
        assert_eq!(Fingerprint::from_json(&r.to_json()), Some(r));
        assert_eq!(Fingerprint::from_json("not json"), None);
    }
}
