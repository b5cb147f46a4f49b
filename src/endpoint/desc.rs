//! `tandem check`, once for every dialect: each dialect only *describes* a configured table
//! (its catalog read into a [`TableDesc`], with the dialect's own verdicts on a column written
//! into it as reasons), and [`check`] compares the description with the config.
//!
//! Checks that are not about one table (SQL Server's version and compatibility level) stay in
//! the dialect.

use std::collections::BTreeSet;

use crate::config::{Entity, Side};
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

    // The capture trigger reads the key and the mapped columns: some types break it.
    if e.direction.flows(side) {
        let read: Vec<&str> = wanted.iter().map(|(c, _)| *c).collect();
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
    if !e.key_is_given(side) && e.direction.flows(side.other()) {
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
    fn a_key_column_may_be_read_only() {
        let mut t = orders();
        t.columns[0].read_only = Some("computed".into());
        assert_eq!(messages(Some(&t)), Vec::<String>::new());
    }
}
