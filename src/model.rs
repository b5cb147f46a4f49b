//! The data that flows through tandem: captured changes, row images and keys.
//!
//! Images are JSON objects (column name → value) so that NULL (`null`), empty (`""`) and
//! absent (no such member) stay three different things, and numerics keep their exact
//! digits (serde_json's `arbitrary_precision`).

use std::fmt;

use chrono::{DateTime, NaiveDateTime, NaiveTime, SubsecRound, Utc};
use serde_json::Value;

/// A full row: column name → value.
pub type Image = serde_json::Map<String, Value>;

/// What happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// The one-letter code stored in the outbox.
    pub fn code(self) -> char {
        match self {
            Op::Insert => 'I',
            Op::Update => 'U',
            Op::Delete => 'D',
        }
    }

    /// Parses the outbox code.
    pub fn from_code(code: &str) -> Option<Op> {
        match code {
            "I" => Some(Op::Insert),
            "U" => Some(Op::Update),
            "D" => Some(Op::Delete),
            _ => None,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        })
    }
}

/// A record's key on one side: the key column values in key order.
///
/// Its text form — a compact JSON array such as `[17]` or `["X",2]` — is what `tandem.id_map`
/// stores, so two keys are equal exactly when their text forms are.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Builds a key from its column values.
    pub fn from_values(values: &[Value]) -> Key {
        // Serialising a Value cannot fail: it has no non-string map keys.
        Key(serde_json::to_string(values).unwrap_or_default())
    }

    /// Parses a stored key (any JSON array; re-serialised compactly).
    pub fn parse(text: &str) -> Result<Key, String> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(values)) => Ok(Key::from_values(&values)),
            Ok(_) => Err(format!("key {text} is not a JSON array")),
            Err(e) => Err(format!("key {text} is not valid JSON: {e}")),
        }
    }

    /// The key column values.
    pub fn values(&self) -> Vec<Value> {
        match serde_json::from_str::<Value>(&self.0) {
            Ok(Value::Array(values)) => values,
            _ => Vec::new(),
        }
    }

    /// The canonical text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Reads the key columns out of an image; names the first missing column.
    pub fn from_image(image: &Image, columns: &[String]) -> Result<Key, String> {
        let mut values = Vec::with_capacity(columns.len());
        for c in columns {
            match image.get(c) {
                Some(Value::Null) => return Err(format!("key column {c} is NULL")),
                Some(v) => values.push(v.clone()),
                None => return Err(format!("key column {c} is missing from the row")),
            }
        }
        Ok(Key::from_values(&values))
    }

    /// Pairs the key's values with column names, as a JSON object.
    pub fn to_object(&self, columns: &[String]) -> Image {
        columns.iter().cloned().zip(self.values()).collect()
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One captured change, decoded from a source outbox row.
#[derive(Debug, Clone)]
pub struct Change {
    /// The outbox sequence number (per source database, increasing).
    pub seq: i64,
    pub entity: String,
    pub op: Op,
    /// The record's key at the source.
    pub key: Key,
    /// The full row (after the change; before it for deletes).
    pub image: Image,
    pub captured_at: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Captured while tandem applied a change at this side (a cascade, another trigger's
    /// effect): the consequence of a change already decided, so it loses every conflict
    /// against a change a user made (see `Target`'s contract).
    pub derived: bool,
    /// The record's changes claimed with this one begin with its insert (set when a run is
    /// coalesced): nothing of the record that reached the target before can be among them.
    pub born: bool,
}

/// An outbox row as an endpoint reads it, before decoding.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub entity: String,
    pub op: String,
    /// The row image as JSON text; an endpoint may leave it out (`None`) for a row that a
    /// newer row of the same record (same `key`) in the same claim supersedes.
    pub image: Option<String>,
    pub captured_at: DateTime<Utc>,
    pub attempts: i32,
    /// Folded into a batch as a later change of a record the batch claimed (see `claim_batch`),
    /// not one of the batch's oldest pending changes.
    pub pulled: bool,
    /// The record's key as the outbox holds it (JSON text), when the endpoint sends it: rows
    /// with the same entity and key are changes of one record.
    pub key: Option<String>,
    /// Captured while tandem applied a change here (see [`Change::derived`]).
    pub derived: bool,
}

/// A change mapped into the target's shape, ready for an endpoint to apply.
#[derive(Debug, Clone)]
pub struct TargetChange {
    pub entity: String,
    pub op: Op,
    /// The newest source sequence this change carries (the guard compares it).
    pub seq: i64,
    /// Every source outbox sequence coalesced into this change.
    pub seqs: Vec<i64>,
    /// The record's key at the source.
    pub source_key: Key,
    /// The target key the source's own id map already knows (links whose write-back is
    /// still pending at the target), if any.
    pub peer_hint: Option<Key>,
    /// The source's link that gave `peer_hint` was last written before this change was
    /// captured: the hint names the record this change is of, unless the target has applied
    /// one of the changes this one carries already (`seqs`: their replies, which would have
    /// rewritten the source's link, are not back). A link written since may name a record
    /// that took the key after the change (a line deleted and added again under its number),
    /// so a target must not trust such a hint over its own link. Set for deletes only.
    pub hint_predates: bool,
    /// The newest change captured at the target that the source has applied already, for
    /// this record (from the source's id map; 0 when none): target changes newer than this
    /// and still pending mean the record changed on both sides — a conflict.
    pub peer_applied_seq: i64,
    /// Target column → value. Ref columns are filled by the endpoint from `refs`.
    pub row: Image,
    /// Target column → the value the source holds, for converted columns
    /// ([`crate::config::ColumnMap::converted`]): a target whose current value is equal to it
    /// keeps that value (the lossy rule: `mapping::keep_detail`).
    pub incoming: Image,
    /// Columns whose value is a parent's source key, to translate through the parent's links.
    pub refs: Vec<RefValue>,
    /// Columns to look up in a reference table (`lookup`), resolved by the sync before the
    /// change is applied (their `row` value is NULL until then); a change is applied only with
    /// this empty.
    pub lookups: Vec<LookupValue>,
    pub captured_at: DateTime<Utc>,
    /// Every coalesced change was a consequence of tandem's own apply at the source (see
    /// [`Change::derived`]).
    pub derived: bool,
    /// The record's changes carried here begin with its insert ([`Change::born`]): a delete
    /// of a record the target has no link of deletes nothing there.
    pub born: bool,
}

impl TargetChange {
    /// Whether `peer_hint` names the record a delete is of, over a link at the target whose
    /// guard is `applied` (the newest source sequence of this key applied there): the hint
    /// predates the delete and the target has applied none of the changes it carries.
    pub fn delete_hint_holds(&self, applied: i64) -> bool {
        self.op == Op::Delete
            && self.hint_predates
            && self.peer_hint.is_some()
            && self.seqs.iter().all(|s| *s > applied)
            && self.seq > applied
    }
}

/// A column whose value is found in a reference table (`lookup`): the source's value, to be
/// replaced by the reference row's other column before the change is applied.
#[derive(Debug, Clone)]
pub struct LookupValue {
    /// Target column name.
    pub column: String,
    /// The source column it comes from (for messages).
    pub source_column: String,
    /// The value at the source (never NULL: NULL travels as NULL).
    pub value: Value,
}

/// A column holding a parent's key, to be translated at the target.
#[derive(Debug, Clone)]
pub struct RefValue {
    /// Target column name.
    pub column: String,
    /// Parent entity name.
    pub parent: String,
    /// The parent's key at the source.
    pub source_key: Key,
    /// The parent's target key as the source's id map knows it.
    pub hint: Option<Key>,
}

/// Renders a JSON scalar the way a user would type it (strings without quotes).
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

// ---------------------------------------------------------------------------
// One comparable form of a value (apply's lossy rule and verify compare in it; see
// `endpoint::verify_hash` for why it is needed across dialects)
// ---------------------------------------------------------------------------

/// A number as its decimal value: `31.00`, `031` and `3.1e1` are all `31`.
fn number(text: &str) -> String {
    let plain = |t: &str| -> Option<String> {
        let (neg, body) = match t.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, t),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let int = int.trim_start_matches('0');
        let frac = frac.trim_end_matches('0');
        let int = if int.is_empty() { "0" } else { int };
        let mut out = String::new();
        if neg && !(int == "0" && frac.is_empty()) {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        Some(out)
    };
    if let Some(p) = plain(text) {
        return p;
    }
    // Exponent notation (floats): through f64 and back to plain digits.
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => plain(&format!("{f}")).unwrap_or_else(|| format!("{f}")),
        _ => text.to_string(),
    }
}

fn fraction(t: &str) -> String {
    let t = t.trim_end_matches('0');
    t.strip_suffix('.').unwrap_or(t).to_string()
}

/// A date/time text in one form, or None when `s` is not one: instants (with an offset) in
/// UTC, everything rounded to microseconds, trailing zeros of the fraction dropped.
fn datetime(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let looks = |at: usize, c: u8| b.get(at) == Some(&c);
    if b.len() >= 19 && looks(4, b'-') && looks(7, b'-') && (looks(10, b'T') || looks(10, b' ')) {
        let s = s.replacen(' ', "T", 1);
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            let u = t.with_timezone(&Utc).round_subsecs(6);
            return Some(fraction(&u.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()) + "Z");
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f") {
            let t = t.round_subsecs(6);
            return Some(fraction(&t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()));
        }
        return None;
    }
    if b.len() >= 8 && looks(2, b':') && looks(5, b':') {
        if let Ok(t) = NaiveTime::parse_from_str(s, "%H:%M:%S%.f") {
            let t = t.round_subsecs(6);
            return Some(fraction(&t.format("%H:%M:%S%.6f").to_string()));
        }
    }
    None
}

/// One value in its comparable form (see the module comment); strings stay distinct from
/// numbers and from NULL.
pub fn normalize(v: &Value) -> String {
    match v {
        Value::Null => "~".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("#{}", number(&n.to_string())),
        Value::String(s) => match datetime(s) {
            Some(d) => format!("@{d}"),
            None => Value::String(s.clone()).to_string(),
        },
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(normalize).collect::<Vec<_>>().join(",")
        ),
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            let parts: Vec<String> = members
                .into_iter()
                .map(|(k, v)| format!("{}:{}", Value::String(k.clone()), normalize(v)))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_text_is_compact_and_canonical() {
        let k = Key::from_values(&[json!("X"), json!(2)]);
        assert_eq!(k.as_str(), r#"["X",2]"#);
        assert_eq!(Key::parse(r#"["X", 2]"#).unwrap(), k);
        assert!(Key::parse("17").is_err());
    }

    #[test]
    fn key_keeps_exact_numeric_digits() {
        let k = Key::parse("[12.500]").unwrap();
        assert_eq!(k.as_str(), "[12.500]");
    }

    #[test]
    fn key_from_image_names_missing_and_null_columns() {
        let img: Image = serde_json::from_str(r#"{"a":1,"b":null}"#).unwrap();
        assert_eq!(
            Key::from_image(&img, &["a".into()]).unwrap().as_str(),
            "[1]"
        );
        assert!(Key::from_image(&img, &["b".into()])
            .unwrap_err()
            .contains("NULL"));
        assert!(Key::from_image(&img, &["c".into()])
            .unwrap_err()
            .contains("missing"));
    }

    #[test]
    fn op_codes_round_trip() {
        for op in [Op::Insert, Op::Update, Op::Delete] {
            assert_eq!(Op::from_code(&op.code().to_string()), Some(op));
        }
        assert_eq!(Op::from_code("X"), None);
    }
}
