//! SQL templates, for every dialect: the files in `sql/<dialect>/` are included into the
//! binary, cut into `-- name:` sections, and their `{{placeholders}}` filled with identifiers
//! quoted for the dialect (values always travel as parameters, never in SQL text).

use std::collections::HashMap;

use crate::config::{Config, Side, TableName};
use crate::endpoint::EndpointError;

/// Replaces `{{name}}` placeholders in one pass (a value is never scanned again, so an
/// identifier containing braces stays as it is); a placeholder without a value is a bug in
/// tandem, reported.
pub fn fill(template: &str, vars: &[(&str, String)]) -> Result<String, EndpointError> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find("}}") else {
            return Err(unfilled(&rest[at..]));
        };
        let name = &after[..end];
        let Some((_, value)) = vars.iter().find(|(n, _)| *n == name) else {
            return Err(unfilled(&rest[at..]));
        };
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn unfilled(at: &str) -> EndpointError {
    let near: String = at.chars().take(40).collect();
    EndpointError::Config(format!("internal: unfilled SQL placeholder near {near}"))
}

/// `{{no_children}}` of `drop_duplicate`: a condition on `t`, a row of entity `name` at
/// `side`, that no row there refers to it (" AND NOT EXISTS (…)" per child table, or empty).
/// `ident` and `table` quote for the dialect.
pub fn no_children(
    config: &Config,
    name: &str,
    side: Side,
    ident: fn(&str) -> String,
    table: fn(&TableName) -> String,
) -> String {
    let Some(key) = config.entity(name).and_then(|e| e.side(side).key.first()) else {
        return String::new();
    };
    config
        .references_to(name, side)
        .into_iter()
        .map(|(t, col)| {
            format!(
                " AND NOT EXISTS (SELECT 1 FROM {} AS c WHERE c.{} = t.{})",
                table(t),
                ident(col),
                ident(key)
            )
        })
        .collect()
}

/// The `-- name: X` sections of a statements file.
pub fn sections(text: &'static str) -> HashMap<&'static str, &'static str> {
    let mut out = HashMap::new();
    let mut rest = text;
    while let Some(start) = rest.find("-- name: ") {
        let after = &rest[start + "-- name: ".len()..];
        let name_end = after.find('\n').unwrap_or(after.len());
        let name = after[..name_end].trim();
        let body = &after[(name_end + 1).min(after.len())..];
        let end = body.find("-- name: ").unwrap_or(body.len());
        out.insert(name, body[..end].trim());
        rest = &body[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_one_pass_and_rejects_leftovers() {
        let v = [("a", "{{b}}".to_string()), ("b", "x".to_string())];
        assert_eq!(fill("{{a}} {{b}}", &v).unwrap(), "{{b}} x");
        assert!(fill("{{c}}", &v).is_err());
        assert!(fill("{{a", &v).is_err());
        assert_eq!(fill("{{x}}", &[("x", "1".into())]).unwrap(), "1");
    }

    #[test]
    fn sections_are_cut_at_their_names() {
        let s = sections("-- head\n-- name: one\nSELECT 1;\n\n-- name: two\n-- why\nSELECT 2;\n");
        assert_eq!(s.get("one"), Some(&"SELECT 1;"));
        assert_eq!(s.get("two"), Some(&"-- why\nSELECT 2;"));
        assert_eq!(s.len(), 2);
    }
}
