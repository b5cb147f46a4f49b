//! The file as written. Every field is optional so that a missing key becomes
//! one collected problem instead of aborting deserialization.

use std::fmt;
use std::marker::PhantomData;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub a: Option<Located<Database>>,
    pub b: Option<Located<Database>>,
    pub sync: Option<Located<Sync>>,
    pub service: Option<Located<Service>>,
    pub entities: Option<Vec<Located<Entity>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub kind: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub url_file: Option<Spanned<String>>,
    pub password_file: Option<Spanned<String>>,
    // Signed so that negative numbers get our message, not serde's.
    pub pool_size: Option<Spanned<i64>>,
    pub schema: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sync {
    pub batch_size: Option<Spanned<i64>>,
    pub poll_interval_ms: Option<Spanned<i64>>,
    pub max_attempts: Option<Spanned<i64>>,
    pub retry_min_ms: Option<Spanned<i64>>,
    pub retry_max_ms: Option<Spanned<i64>>,
}

/// `[service]`: the status page of `run --listen`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entity {
    pub name: Option<Spanned<String>>,
    pub direction: Option<Spanned<String>>,
    pub on_conflict: Option<Spanned<String>>,
    pub a: Option<Located<TableSide>>,
    pub b: Option<Located<TableSide>>,
    pub columns: Option<Vec<Located<Column>>>,
    /// `{ b = "deleted_at" }` or `{ a = "DELETED", value = "Y", live = "N" }` (the builder
    /// reads it).
    pub soft_delete: Option<Spanned<toml::Value>>,
    /// `{ a = "SITE_ID", equals = 3 }` or `{ a = "SITE_ID", in = [3, 4] }` (the builder reads it).
    pub filter: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSide {
    pub table: Option<Spanned<String>>,
    pub key: Option<Spanned<Vec<Spanned<String>>>>,
    pub peer_id_column: Option<Spanned<String>>,
    /// How tandem numbers records it creates on this side: `"sequence NAME"` or `"max+1"`.
    pub key_from: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Column {
    pub a: Option<Spanned<String>>,
    pub b: Option<Spanned<String>>,
    pub values: Option<Located<Values>>,
    #[serde(rename = "ref")]
    pub parent: Option<Spanned<String>>,
    /// A built-in converter: a name (`"trim"`) or a table (`{ scale = 2 }`); read by the
    /// builder, which names what it does not know.
    pub convert: Option<Spanned<toml::Value>>,
    /// With a many-to-one `values`: the A codes written back for B values several codes share.
    pub prefer: Option<Spanned<Vec<Spanned<String>>>>,
    /// The column's own way (`"a_to_b"`, `"b_to_a"`), within the entity's.
    pub direction: Option<Spanned<String>>,
    /// A value written on one side only (the entry names `a` or `b`, not both).
    #[serde(rename = "const")]
    pub constant: Option<Spanned<toml::Value>>,
    /// Not in this version: read only to refuse it with the reason (see the builder).
    pub lookup: Option<Spanned<toml::Value>>,
    /// Not in this version: read only to refuse it with the reason (see the builder).
    #[serde(alias = "expression")]
    pub expr: Option<Spanned<toml::Value>>,
}

/// A `values` table with its entries in file order (`toml::Table` would
/// sort them, and messages should follow the file). Keys are plain
/// strings because a key replayed by [`Located`] has no span.
pub struct Values(pub Vec<(String, Spanned<toml::Value>)>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ValuesVisitor;

        impl<'de> Visitor<'de> for ValuesVisitor {
            type Value = Values;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of codes")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Values, M::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(Values(entries))
            }
        }

        deserializer.deserialize_map(ValuesVisitor)
    }
}

// The private protocol of `serde_spanned`, which `toml` speaks to hand a
// span to `toml::Spanned`. Should it ever change, `Located` still works,
// only without spans.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: [&str; 3] = [SPANNED_START, SPANNED_END, SPANNED_VALUE];

/// A table with its span when `toml` knows it.
///
/// `toml::Spanned<T>` fails outright on tables that have no span of their
/// own (those made by dotted keys such as `a.table = "x"`, or implicit
/// parents of `[x.y]`), which are valid TOML users may well write. This
/// accepts both and leaves `at` empty for the latter.
pub struct Located<T> {
    pub at: Option<Range<usize>>,
    pub value: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, &SPANNED_FIELDS, LocatedVisitor(PhantomData))
    }
}

struct LocatedVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for LocatedVisitor<T> {
    type Value = Located<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Located<T>, M::Error> {
        let first = match map.next_key::<String>()? {
            Some(first) => first,
            None => {
                let value = T::deserialize(de::value::MapAccessDeserializer::new(map))?;
                return Ok(Located { at: None, value });
            }
        };
        if first != SPANNED_START {
            // A plain table: hand T the key we already consumed, then the rest.
            let replay = Replay {
                first: Some(first),
                map,
            };
            let value = T::deserialize(de::value::MapAccessDeserializer::new(replay))?;
            return Ok(Located { at: None, value });
        }
        let start: usize = map.next_value()?;
        let mut end = None;
        let mut value = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                SPANNED_END => end = Some(map.next_value::<usize>()?),
                SPANNED_VALUE => value = Some(map.next_value::<T>()?),
                other => return Err(de::Error::unknown_field(other, &SPANNED_FIELDS)),
            }
        }
        match (end, value) {
            (Some(end), Some(value)) => Ok(Located {
                at: Some(start..end),
                value,
            }),
            (None, _) => Err(de::Error::missing_field(SPANNED_END)),
            (_, None) => Err(de::Error::missing_field(SPANNED_VALUE)),
        }
    }
}

/// A map whose first key was already read.
struct Replay<M> {
    first: Option<String>,
    map: M,
}

impl<'de, M: MapAccess<'de>> MapAccess<'de> for Replay<M> {
    type Error = M::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, M::Error> {
        match self.first.take() {
            Some(key) => seed
                .deserialize(de::value::StringDeserializer::<M::Error>::new(key))
                .map(Some),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, M::Error> {
        self.map.next_value_seed(seed)
    }
}
