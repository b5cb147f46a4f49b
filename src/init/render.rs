//! A [`Draft`] as `tandem.toml` text. Connection strings are `${TANDEM_A_URL}` and
//! `${TANDEM_B_URL}` placeholders: credentials are never written into the file. Every TODO is
//! a comment line over the line it concerns; the line under it is the first choice, so
//! deleting the TODO lines accepts the proposal.

use std::fmt::Write;

use serde_json::Value;

use super::{Draft, DraftColumn, DraftSide};
use crate::config::{DbKind, Direction};

/// `s` as a TOML basic string.
pub fn string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A TOML key: bare when it may be, quoted otherwise.
fn key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        string(s)
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        other => string(&other.to_string()),
    }
}

/// One comment line (a message never breaks the file).
fn comment(out: &mut String, indent: &str, text: &str) {
    let one_line = text.replace(['\n', '\r'], " ");
    let _ = writeln!(out, "{indent}# {one_line}");
}

fn kind(k: DbKind) -> &'static str {
    match k {
        DbKind::Postgres => "postgres",
        DbKind::Mssql => "mssql",
    }
}

fn side(s: &DraftSide) -> String {
    let keys: Vec<String> = s.key.iter().map(|k| string(k)).collect();
    let mut out = format!(
        "{{ table = {}, key = [{}]",
        string(&s.table.to_string()),
        keys.join(", ")
    );
    if let Some(p) = &s.peer_id_column {
        let _ = write!(out, ", peer_id_column = {}", string(p));
    }
    out.push_str(" }");
    out
}

/// One column pair as a `columns` line.
pub fn column(c: &DraftColumn) -> String {
    let mut out = format!("{{ a = {}, b = {}", string(&c.a), string(&c.b));
    if !c.values.is_empty() {
        let pairs: Vec<String> = c
            .values
            .iter()
            .map(|(a, b)| format!("{} = {}", key(a), value(b)))
            .collect();
        let _ = write!(out, ", values = {{ {} }}", pairs.join(", "));
    }
    if let Some(p) = &c.parent {
        let _ = write!(out, ", ref = {}", string(p));
    }
    out.push_str(" },");
    out
}

/// The draft as a config file.
pub fn render(d: &Draft) -> String {
    let mut out = String::new();
    let counts = d.counts();
    out.push_str(
        "# Draft written by `tandem init` from the live schemas of both sides.\n\
         # Every uncertain choice has a `# TODO:` line above it with the alternatives and the\n\
         # score; the line under it is the first choice. A line that `tandem check` would refuse\n\
         # is written commented out. Resolve each TODO (delete it once you agree, or edit the\n\
         # line), then run `tandem check`. Tables and columns nothing maps are listed at the end.\n\
         # The connection strings come from the environment: no credentials are written here.\n",
    );
    let _ = writeln!(
        out,
        "# {} entities, {} column pairs ({} with a TODO, {} commented out), {} TODO lines.\n",
        counts.entities, counts.pairs, counts.uncertain, counts.commented, counts.todos
    );
    for (name, k, var) in [
        ("a", d.a_kind, "TANDEM_A_URL"),
        ("b", d.b_kind, "TANDEM_B_URL"),
    ] {
        let _ = writeln!(out, "[{name}]");
        let _ = writeln!(out, "kind = {}", string(kind(k)));
        let _ = writeln!(out, "url  = \"${{{var}}}\"\n");
    }
    for e in &d.entities {
        out.push_str("[[entities]]\n");
        for n in &e.notes {
            comment(&mut out, "", n);
        }
        for t in &e.todos {
            comment(&mut out, "", &format!("TODO: {t}"));
        }
        let _ = writeln!(out, "name = {}", string(&e.name));
        match e.direction {
            None | Some(Direction::Both) => {}
            Some(Direction::AToB) => out.push_str("direction = \"a_to_b\"\n"),
            Some(Direction::BToA) => out.push_str("direction = \"b_to_a\"\n"),
        }
        let _ = writeln!(out, "a = {}", side(&e.a));
        let _ = writeln!(out, "b = {}", side(&e.b));
        out.push_str("columns = [\n");
        for c in &e.columns {
            for t in &c.todos {
                comment(&mut out, "  ", &format!("TODO: {t}"));
            }
            if c.active {
                let _ = writeln!(out, "  {}", column(c));
            } else {
                let _ = writeln!(out, "  # {}", column(c));
            }
        }
        out.push_str("]\n");
        if !e.unmatched_a.is_empty() || !e.unmatched_b.is_empty() {
            let list = |v: &[String]| {
                if v.is_empty() {
                    "none".to_string()
                } else {
                    v.join(", ")
                }
            };
            comment(
                &mut out,
                "",
                &format!(
                    "not mapped: A {}: {}; B {}: {}",
                    e.a.table,
                    list(&e.unmatched_a),
                    e.b.table,
                    list(&e.unmatched_b)
                ),
            );
        }
        out.push('\n');
    }
    if !d.unmatched_a.is_empty() || !d.unmatched_b.is_empty() {
        out.push_str("# Tables no entity maps:\n");
        for (side, list) in [("A", &d.unmatched_a), ("B", &d.unmatched_b)] {
            for (t, why) in list {
                if why.is_empty() {
                    comment(&mut out, "", &format!("  {side} {t}"));
                } else {
                    comment(&mut out, "", &format!("  {side} {t}: {why}"));
                }
            }
        }
    }
    out
}
