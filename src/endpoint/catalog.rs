//! A whole database as `tandem init` reads it: every user table with its columns, keys,
//! foreign keys and code lists (CHECK lists, enums). Each dialect fills a [`Catalog`] from its
//! own catalog (`sql/<dialect>/catalog.sql`); the columns are the same [`ColumnDesc`] that
//! `tandem check` judges, so a draft is compared with the rules `check` applies later.

use std::collections::BTreeSet;

use crate::config::TableName;
use crate::endpoint::desc::{ColumnDesc, TableDesc};

/// Every user table of one database, in catalog order (schema, then name).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub tables: Vec<CatalogTable>,
    /// The server resolves names case-insensitively (a SQL Server collation `_CI_`).
    pub case_insensitive: bool,
}

impl Catalog {
    /// The table `name`, compared as the server compares names; a name without a schema is
    /// found in any schema (the first in catalog order).
    pub fn table(&self, name: &TableName) -> Option<&CatalogTable> {
        let same =
            |a: &str, b: &str| a == b || (self.case_insensitive && a.eq_ignore_ascii_case(b));
        self.tables.iter().find(|t| {
            same(&t.name.name, &name.name)
                && match (&t.name.schema, &name.schema) {
                    (Some(x), Some(y)) => same(x, y),
                    _ => true,
                }
        })
    }
}

/// One table.
#[derive(Debug, Clone)]
pub struct CatalogTable {
    /// Always schema-qualified.
    pub name: TableName,
    pub columns: Vec<CatalogColumn>,
    /// Primary key columns in key order (empty: no primary key).
    pub primary_key: Vec<String>,
    /// Other unique indexes without a predicate, each in index order.
    pub unique: Vec<Vec<String>>,
    pub foreign_keys: Vec<ForeignKey>,
}

impl CatalogTable {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&CatalogColumn> {
        self.columns.iter().find(|c| c.desc.name == name)
    }

    /// The table as `tandem check` describes it.
    pub fn desc(&self, case_insensitive: bool) -> TableDesc {
        let mut unique_keys: Vec<BTreeSet<String>> = Vec::new();
        if !self.primary_key.is_empty() {
            unique_keys.push(self.primary_key.iter().cloned().collect());
        }
        unique_keys.extend(self.unique.iter().map(|u| u.iter().cloned().collect()));
        TableDesc {
            columns: self.columns.iter().map(|c| c.desc.clone()).collect(),
            unique_keys,
            case_insensitive,
        }
    }

    /// The single-column foreign key on `column`, if any.
    pub fn foreign_key(&self, column: &str) -> Option<&ForeignKey> {
        self.foreign_keys
            .iter()
            .find(|f| f.columns.len() == 1 && f.columns[0] == column)
    }
}

/// One column: what `check` judges, and what `init` reads besides.
#[derive(Debug, Clone, Default)]
pub struct CatalogColumn {
    pub desc: ColumnDesc,
    /// An identity column (PostgreSQL identity or SQL Server IDENTITY).
    pub identity: bool,
    /// The default expression as the catalog prints it.
    pub default: Option<String>,
    /// The values the column may hold, when a CHECK list or an enum type says so.
    pub codes: Option<Codes>,
}

impl CatalogColumn {
    /// The column gets a value on insert by itself (identity, serial, default).
    pub fn generated(&self) -> bool {
        self.identity || self.desc.defaulted
    }
}

/// A closed list of values for a column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Codes {
    /// Where the list comes from, for messages (`CHECK CK_Status`, `enum order_status`).
    pub from: String,
    /// In declaration order, as text.
    pub values: Vec<String>,
}

/// A foreign key: `columns` of this table reference `parent_columns` of `parent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub name: String,
    pub columns: Vec<String>,
    pub parent: TableName,
    pub parent_columns: Vec<String>,
}

/// Tables as catalog rows arrive (one row per column, key or constraint), collected in order.
#[derive(Debug, Default)]
pub struct CatalogBuilder {
    pub catalog: Catalog,
}

impl CatalogBuilder {
    /// The table `schema.name`, created (empty) when first seen.
    pub fn table(&mut self, schema: &str, name: &str) -> &mut CatalogTable {
        let at = self
            .catalog
            .tables
            .iter()
            .position(|t| t.name.schema.as_deref() == Some(schema) && t.name.name == name);
        let at = match at {
            Some(i) => i,
            None => {
                self.catalog.tables.push(CatalogTable {
                    name: TableName {
                        schema: Some(schema.to_string()),
                        name: name.to_string(),
                    },
                    columns: Vec::new(),
                    primary_key: Vec::new(),
                    unique: Vec::new(),
                    foreign_keys: Vec::new(),
                });
                self.catalog.tables.len() - 1
            }
        };
        &mut self.catalog.tables[at]
    }

    /// A CHECK constraint of a known table: a code list when it is one (see [`check_codes`]).
    pub fn check(&mut self, schema: &str, table: &str, constraint: &str, definition: &str) {
        let Some((column, values)) = check_codes(definition) else {
            return;
        };
        let ci = self.catalog.case_insensitive;
        let t = self.table(schema, table);
        let found = t
            .columns
            .iter_mut()
            .find(|c| c.desc.name == column || (ci && c.desc.name.eq_ignore_ascii_case(&column)));
        if let Some(c) = found {
            if c.codes.is_none() {
                c.codes = Some(Codes {
                    from: format!("CHECK {constraint}"),
                    values,
                });
            }
        }
    }
}

/// The column and its allowed values when a CHECK constraint is a plain list of codes for one
/// column (`status IN ('O','C')`, `status = ANY (ARRAY['O'::bpchar, …])`, `([Status]='C' OR
/// [Status]='O')`, `[Kind]=(1) OR [Kind]=(2)`); None for anything else (ranges, several
/// columns, NOT, LIKE…), which `init` leaves alone.
pub fn check_codes(definition: &str) -> Option<(String, Vec<String>)> {
    let tokens = tokenize(definition)?;
    let mut column: Option<String> = None;
    let mut values = Vec::new();
    let mut compared = false;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Cast => {
                // `::type` or `::character varying[]`: skip the type's words and brackets.
                i += 1;
                while i < tokens.len()
                    && matches!(
                        &tokens[i],
                        Token::Word(_) | Token::Open('[') | Token::Close(']')
                    )
                {
                    i += 1;
                }
                continue;
            }
            Token::Word(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "CHECK" | "OR" | "ANY" | "ARRAY" => {}
                    "IN" => compared = true,
                    "NOT" | "AND" | "LIKE" | "BETWEEN" | "IS" | "NULL" | "ALL" | "SOME" => {
                        return None
                    }
                    _ => match &column {
                        None => column = Some(w.clone()),
                        Some(c) if c.eq_ignore_ascii_case(w) => {}
                        Some(_) => return None,
                    },
                }
            }
            Token::Ident(w) => match &column {
                None => column = Some(w.clone()),
                Some(c) if c == w => {}
                Some(_) => return None,
            },
            Token::Str(s) | Token::Num(s) => values.push(s.clone()),
            Token::Eq => compared = true,
            Token::Other => return None,
            Token::Open(_) | Token::Close(_) | Token::Comma => {}
        }
        i += 1;
    }
    let column = column?;
    let mut seen = BTreeSet::new();
    values.retain(|v| seen.insert(v.clone()));
    (compared && values.len() >= 2).then_some((column, values))
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word (keyword, column or type name).
    Word(String),
    /// A quoted identifier (`"x"`, `[x]`).
    Ident(String),
    Str(String),
    Num(String),
    Cast,
    Eq,
    Open(char),
    Close(char),
    Comma,
    /// Any other operator (`<`, `>`, `<>`, `+`…): not a code list.
    Other,
}

fn tokenize(text: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return None,
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(s));
            }
            'N' if chars.get(i + 1) == Some(&'\'') => i += 1,
            '"' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return None,
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            s.push('"');
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Ident(s));
            }
            // `[name]` after a word or at the start is a quoted name; after `::type` or
            // `ARRAY` it is a bracket.
            '[' if !matches!(out.last(), Some(Token::Word(w)) if w.eq_ignore_ascii_case("array"))
                && !matches!(out.last(), Some(Token::Word(_))) =>
            {
                let end = chars[i + 1..].iter().position(|&ch| ch == ']')? + i + 1;
                out.push(Token::Ident(chars[i + 1..end].iter().collect()));
                i = end + 1;
            }
            '(' | '[' => {
                out.push(Token::Open(c));
                i += 1;
            }
            ')' | ']' => {
                out.push(Token::Close(c));
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push(Token::Cast);
                i += 2;
            }
            '=' => {
                out.push(Token::Eq);
                i += 1;
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Num(chars[start..i].iter().collect()));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(d: &str) -> Option<(String, Vec<String>)> {
        check_codes(d)
    }

    #[test]
    fn code_lists_are_read_from_each_dialects_check_text() {
        let want =
            |c: &str, v: &[&str]| Some((c.to_string(), v.iter().map(|s| s.to_string()).collect()));
        assert_eq!(
            codes("CHECK ((status = ANY (ARRAY['O'::bpchar, 'C'::bpchar, 'X'::bpchar])))"),
            want("status", &["O", "C", "X"])
        );
        assert_eq!(
            codes("CHECK (((status)::text = ANY ((ARRAY['open'::character varying, 'closed'::character varying])::text[])))"),
            want("status", &["open", "closed"])
        );
        assert_eq!(
            codes(r#"CHECK (("IsActive" = ANY (ARRAY['Y'::bpchar, 'N'::bpchar])))"#),
            want("IsActive", &["Y", "N"])
        );
        assert_eq!(
            codes("([Status]='C' OR [Status]='O' OR [Status]='X')"),
            want("Status", &["C", "O", "X"])
        );
        assert_eq!(
            codes("([Kind]=(1) OR [Kind]=(2))"),
            want("Kind", &["1", "2"])
        );
        assert_eq!(
            codes("([kind] IN (N'a', N'b''c'))"),
            want("kind", &["a", "b'c"])
        );
        assert_eq!(
            codes("CHECK ((kind = ANY (ARRAY[1, 2, 3])))"),
            want("kind", &["1", "2", "3"])
        );
    }

    #[test]
    fn other_checks_are_not_code_lists() {
        for d in [
            "CHECK ((qty > 0))",
            "CHECK ((a = 'x'::text) OR (b = 'y'::text))",
            "CHECK ((status <> 'X'::bpchar))",
            "CHECK ((NOT (status = ANY (ARRAY['a'::text, 'b'::text]))))",
            "CHECK ((status = 'O'::bpchar))",
            "([Price]>=(0))",
            "CHECK ((name ~~ 'A%'::text))",
        ] {
            assert_eq!(codes(d), None, "{d}");
        }
    }
}
