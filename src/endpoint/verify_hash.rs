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
//!
//! Entities with converted columns (`convert`, `values` with `prefer`) take this path on every
//! pairing, PostgreSQL ↔ PostgreSQL too: the converters are tandem's Rust, so such a column is
//! compared in B's terms ([`comparable`], `mapping::convert::canonical`), the same test apply's
//! lossy rule makes. Their other columns, and every other entity, are unchanged.

use std::collections::HashMap;

use md5::{Digest, Md5};
use serde_json::Value;

use super::{BucketHash, RecordHash};
use crate::config::{ColumnMap, Side};
use crate::mapping::convert::canonical;
pub use crate::model::normalize;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bucket of a join key among `n`.
pub fn bucket(join_key: &str, n: i32) -> i32 {
    let d = Md5::digest(join_key.as_bytes());
    let v = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
    i32::try_from(u64::from(v) % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
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

/// A column's value as a side renders it (its JSON text), in the comparable form: a converted
/// column ([`ColumnMap::converted`]) in B's terms (`mapping::convert::canonical`: the one
/// notion of equal apply's lossy rule uses), any other as [`normalize_text`].
pub fn comparable(col: &ColumnMap, side: Side, text: Option<&str>) -> String {
    match text {
        Some(t) if col.converted() => {
            let v = serde_json::from_str::<Value>(t).unwrap_or_else(|_| Value::String(t.into()));
            normalize(&canonical(col, side, &v))
        }
        _ => normalize_text(text),
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
