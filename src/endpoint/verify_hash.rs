//! Verify across dialects: one notion of equal, computed by tandem.
//!
//! PostgreSQL ↔ PostgreSQL verify hashes a canonical text of each record inside both databases
//! (`verify_rows` in `sql/postgres/statements.sql`): nothing crosses the wire when the sides
//! agree. Across dialects that cannot work: SQL Server 2016 hashes only bytes (`HASHBYTES` of
//! an nvarchar hashes its UTF-16, PostgreSQL's `md5` hashes UTF-8, and neither can produce the
//! other's encoding), and the two render the same value differently (`31.00` in a
//! `decimal(10,2)` is `31` in a `numeric`; a `datetime2(7)` has a digit more than a
//! `timestamp`; a `datetimeoffset` keeps its offset where `timestamptz` prints the session's).
//! So when a pair is mixed, each side streams its records (keys as id_map texts, values in A's
//! shape: A's codes, parents by A's key, one JSON text per column) and tandem hashes them here,
//! after putting every value into one comparable form ([`normalize`]): numbers by their
//! decimal value, date/times rounded to microseconds (PostgreSQL's precision) and instants in
//! UTC, everything else as its canonical JSON. That is the comparison apply makes when it
//! writes nothing because the target already holds the value (it compares after converting to
//! the target's type: 31 into a `decimal(10,2)` is 31.00). Memory stays bounded: rows are
//! streamed and only folded into per-bucket sums, and a drill-down keeps only the records of the
//! buckets asked for.

use std::collections::HashMap;

use chrono::{DateTime, NaiveDateTime, NaiveTime, SubsecRound, Utc};
use md5::{Digest, Md5};
use serde_json::Value;

use super::{BucketHash, RecordHash};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bucket of a join key among `n`.
pub fn bucket(join_key: &str, n: i32) -> i32 {
    let d = Md5::digest(join_key.as_bytes());
    let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    i32::try_from(u64::from(v) % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
}

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

/// A column's value as a side renders it in A's shape: the JSON text of the value, or a text
/// that is not JSON (a parent not linked, `?` and its key) taken as a string.
pub fn normalize_text(text: Option<&str>) -> String {
    match text {
        None => "~".into(),
        Some(t) => match serde_json::from_str::<Value>(t) {
            Ok(v) => normalize(&v),
            Err(_) => normalize(&Value::String(t.to_string())),
        },
    }
}

/// The hash of one record: its keys on both sides and its values in comparable form.
pub fn record_hash(a_key: Option<&str>, b_key: Option<&str>, values: &[String]) -> String {
    let mut h = Md5::new();
    h.update(a_key.unwrap_or("-").as_bytes());
    h.update(b"|");
    h.update(b_key.unwrap_or("-").as_bytes());
    for v in values {
        h.update(b"|");
        h.update(v.as_bytes());
    }
    hex(&h.finalize())
}

/// Folds records into per-bucket counts and sums, or keeps those of chosen buckets.
pub struct Fold {
    n: i32,
    which: Option<Vec<i32>>,
    sums: HashMap<i32, (i64, u128)>,
    records: Vec<RecordHash>,
}

impl Fold {
    /// Sums of all buckets (`which` None) or the records of `which`.
    pub fn new(n: i32, which: Option<&[i32]>) -> Fold {
        Fold {
            n: n.max(1),
            which: which.map(<[i32]>::to_vec),
            sums: HashMap::new(),
            records: Vec::new(),
        }
    }

    /// Adds one record.
    pub fn add(
        &mut self,
        a_key: Option<String>,
        b_key: Option<String>,
        join_key: String,
        values: &[String],
    ) {
        let b = bucket(&join_key, self.n);
        if let Some(w) = &self.which {
            if !w.contains(&b) {
                return;
            }
        }
        let hash = record_hash(a_key.as_deref(), b_key.as_deref(), values);
        match &self.which {
            Some(_) => self.records.push(RecordHash {
                a_key,
                b_key,
                join_key,
                hash,
            }),
            None => {
                let top = u128::from(u64::from_str_radix(&hash[..15], 16).unwrap_or(0));
                let e = self.sums.entry(b).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.wrapping_add(top);
            }
        }
    }

    /// The bucket sums.
    pub fn buckets(self) -> Vec<BucketHash> {
        self.sums
            .into_iter()
            .map(|(bucket, (count, sum))| BucketHash {
                bucket,
                count,
                sum: sum.to_string(),
            })
            .collect()
    }

    /// The records kept.
    pub fn records(self) -> Vec<RecordHash> {
        self.records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn equal_values_of_different_types_compare_equal() {
        assert_eq!(normalize(&json!(31)), normalize_text(Some("31.00")));
        assert_eq!(normalize_text(Some("-0.000")), normalize(&json!(0)));
        assert_eq!(normalize_text(Some("1e2")), normalize_text(Some("100.0")));
        assert_ne!(normalize(&json!("31")), normalize(&json!(31)));
        assert_ne!(normalize(&json!(null)), normalize(&json!("")));
        assert_eq!(
            normalize(&json!("2024-05-06T07:08:09.1234567")),
            normalize(&json!("2024-05-06T07:08:09.123457"))
        );
        assert_eq!(
            normalize(&json!("2024-05-06T07:08:09.5+02:00")),
            normalize(&json!("2024-05-06T05:08:09.500000+00:00"))
        );
        assert_eq!(
            normalize(&json!("10:00:00.0000000")),
            normalize(&json!("10:00:00"))
        );
        assert_ne!(normalize(&json!("A")), normalize(&json!("a")));
        assert_eq!(normalize_text(Some("?17")), normalize(&json!("?17")));
        assert_eq!(normalize_text(Some("[17]")), normalize(&json!([17.0])));
    }

    #[test]
    fn buckets_sum_what_records_hash() {
        let mut all = Fold::new(16, None);
        let mut some = Fold::new(16, Some(&[bucket("[1]", 16)]));
        for f in [&mut all, &mut some] {
            f.add(Some("[1]".into()), None, "[1]".into(), &["#1".into()]);
        }
        let b = all.buckets();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].count, 1);
        assert_eq!(some.records().len(), 1);
    }
}
