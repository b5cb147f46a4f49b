//! SQL Server column types and the canonical JSON image.
//!
//! Row images travel between the sides in one canonical form: what PostgreSQL's `to_jsonb`
//! emits (exact decimals with the column's scale, ISO date/times, `\x`-hex bytes, lower-case
//! uuids, `true`/`false`). SQL Server's `FOR JSON` differs for some types (base64 binary,
//! upper-case uniqueidentifier, every fractional digit of a datetime2), so this module converts
//! each value by the column's type, read from the catalog:
//! [`SqlType::decode`] turns a `FOR JSON` value into the canonical one (claim), and
//! [`SqlType::encode`] turns a canonical value into what `OPENJSON ... WITH` reads back into
//! the column (apply). The T-SQL side of the same mapping (input types, conversions, canonical
//! key text) is generated here too, so both directions live in one place.

use serde_json::Value;

/// A column as the catalog describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: SqlType,
    pub nullable: bool,
    pub identity: bool,
    pub computed: bool,
    pub has_default: bool,
}

/// A SQL Server system type with its size (`sys.columns` values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlType {
    /// The system type name, lower case (`TYPE_NAME(system_type_id)`).
    pub name: String,
    /// Bytes; -1 for `(max)`.
    pub max_length: i16,
    pub precision: u8,
    pub scale: u8,
}

/// How tandem treats a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Int {
        min: i128,
        max: i128,
    },
    Decimal,
    Money,
    Float,
    Bit,
    /// Character data; `chars` is the declared length (None for max).
    Str {
        unicode: bool,
        chars: Option<usize>,
    },
    Date,
    Time,
    DateTime2,
    /// datetime and smalldatetime: read through datetime2(7), rounded by SQL Server.
    LegacyDateTime,
    DateTimeOffset,
    Uuid,
    Binary {
        bytes: Option<usize>,
    },
    /// rowversion/timestamp: readable, never writable.
    RowVersion,
    Xml,
    /// FOR JSON cannot serialise it, or an AFTER trigger cannot read it.
    Unsupported(&'static str),
}

impl SqlType {
    /// A type from its name and size.
    pub fn new(name: &str, max_length: i16, precision: u8, scale: u8) -> SqlType {
        SqlType {
            name: name.to_ascii_lowercase(),
            max_length,
            precision,
            scale,
        }
    }

    /// The family this type belongs to.
    pub fn family(&self) -> Family {
        let len = |per_char: i16| {
            (self.max_length >= 0).then(|| (self.max_length / per_char.max(1)) as usize)
        };
        match self.name.as_str() {
            "tinyint" => Family::Int { min: 0, max: 255 },
            "smallint" => Family::Int {
                min: i16::MIN as i128,
                max: i16::MAX as i128,
            },
            "int" => Family::Int {
                min: i32::MIN as i128,
                max: i32::MAX as i128,
            },
            "bigint" => Family::Int {
                min: i64::MIN as i128,
                max: i64::MAX as i128,
            },
            "decimal" | "numeric" => Family::Decimal,
            "money" | "smallmoney" => Family::Money,
            "float" | "real" => Family::Float,
            "bit" => Family::Bit,
            "char" | "varchar" => Family::Str {
                unicode: false,
                chars: len(1),
            },
            "nchar" | "nvarchar" | "sysname" => Family::Str {
                unicode: true,
                chars: len(2),
            },
            "date" => Family::Date,
            "time" => Family::Time,
            "datetime2" => Family::DateTime2,
            "datetime" | "smalldatetime" => Family::LegacyDateTime,
            "datetimeoffset" => Family::DateTimeOffset,
            "uniqueidentifier" => Family::Uuid,
            "binary" | "varbinary" => Family::Binary { bytes: len(1) },
            "timestamp" | "rowversion" => Family::RowVersion,
            "xml" => Family::Xml,
            "text" | "ntext" | "image" => Family::Unsupported(
                "an AFTER trigger cannot read text, ntext or image columns; convert the column to varchar(max), nvarchar(max) or varbinary(max)",
            ),
            "geography" | "geometry" | "hierarchyid" => Family::Unsupported(
                "FOR JSON cannot serialise CLR types (geography, geometry, hierarchyid)",
            ),
            "sql_variant" => Family::Unsupported(
                "sql_variant has no fixed type to map to the other side",
            ),
            _ => Family::Unsupported("unknown type"),
        }
    }

    /// The type as it is written in T-SQL, e.g. `decimal(12,2)`, `nvarchar(60)`, `varbinary(max)`.
    pub fn sql(&self) -> String {
        let n = |per_char: i16| {
            if self.max_length < 0 {
                "max".to_string()
            } else {
                (self.max_length / per_char).to_string()
            }
        };
        match self.name.as_str() {
            "char" | "varchar" | "binary" | "varbinary" => format!("{}({})", self.name, n(1)),
            "nchar" | "nvarchar" => format!("{}({})", self.name, n(2)),
            "decimal" | "numeric" => format!("{}({},{})", self.name, self.precision, self.scale),
            "time" | "datetime2" | "datetimeoffset" => format!("{}({})", self.name, self.scale),
            "sysname" => "nvarchar(128)".into(),
            "timestamp" | "rowversion" => "binary(8)".into(),
            other => other.to_string(),
        }
    }

    /// The type `OPENJSON ... WITH` reads a value of this column as. Strings and bytes are read
    /// unbounded, so a value that does not fit fails on assignment (an error naming the row)
    /// instead of being cut short silently by the conversion.
    pub fn input_type(&self) -> String {
        match self.family() {
            Family::Str { unicode: false, .. } => "varchar(max)".into(),
            Family::Str { unicode: true, .. } | Family::Xml | Family::Unsupported(_) => {
                "nvarchar(max)".into()
            }
            Family::Binary { .. } | Family::RowVersion => "nvarchar(max)".into(),
            Family::LegacyDateTime => "datetime2(7)".into(),
            _ => self.sql(),
        }
    }

    /// The expression turning `input` (read as [`input_type`](Self::input_type)) into this
    /// column's type.
    pub fn project(&self, input: &str) -> String {
        match self.family() {
            Family::Binary { .. } | Family::RowVersion => {
                format!("CONVERT(varbinary(max), {input}, 1)")
            }
            Family::LegacyDateTime => format!("CONVERT({}, {input})", self.sql()),
            _ => input.to_string(),
        }
    }

    /// The type a key value is read as for lookups; None when the type cannot be a key here.
    pub fn key_input_type(&self) -> Option<String> {
        match self.family() {
            Family::Int { .. }
            | Family::Decimal
            | Family::Money
            | Family::Bit
            | Family::Uuid
            | Family::Date => Some(self.sql()),
            Family::Str { unicode, .. } => Some(if unicode {
                "nvarchar(max)".into()
            } else {
                "varchar(max)".into()
            }),
            _ => None,
        }
    }

    /// T-SQL turning a typed value into its canonical JSON token (NULL stays NULL), as the
    /// id map stores keys. None for types that cannot be keys (see [`key_input_type`]).
    ///
    /// [`key_input_type`]: Self::key_input_type
    pub fn canonical_token(&self, e: &str) -> Option<String> {
        Some(match self.family() {
            Family::Int { .. } => format!("CONVERT(nvarchar(40), {e})"),
            Family::Decimal => format!("CONVERT(nvarchar(60), {e})"),
            Family::Money => format!("CONVERT(nvarchar(60), CONVERT(decimal(19,4), {e}))"),
            Family::Bit => {
                format!(
                    "CASE WHEN {e} IS NULL THEN NULL WHEN {e} = 1 THEN N'true' ELSE N'false' END"
                )
            }
            // STRING_ESCAPE escapes '/' as '\/', which serde_json (and PostgreSQL) do not.
            Family::Str { .. } => {
                format!("N'\"' + REPLACE(STRING_ESCAPE({e}, 'json'), N'\\/', N'/') + N'\"'")
            }
            Family::Uuid => format!("N'\"' + LOWER(CONVERT(nchar(36), {e})) + N'\"'"),
            Family::Date => format!("N'\"' + CONVERT(nchar(10), {e}, 23) + N'\"'"),
            _ => return None,
        })
    }

    /// A `FOR JSON` value of this type → the canonical value.
    pub fn decode(&self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        let text = || -> Result<&str, String> {
            v.as_str()
                .ok_or_else(|| format!("expected a string for {}, got {v}", self.sql()))
        };
        match self.family() {
            Family::Int { .. } | Family::Float => number(v, self),
            Family::Decimal => scaled(v, self.scale, self),
            Family::Money => scaled(v, 4, self),
            Family::Bit => match v {
                Value::Bool(_) => Ok(v.clone()),
                Value::Number(n) if n.to_string() == "1" => Ok(Value::Bool(true)),
                Value::Number(n) if n.to_string() == "0" => Ok(Value::Bool(false)),
                _ => Err(format!("expected true or false for bit, got {v}")),
            },
            Family::Date => date(text()?).map(Value::String),
            Family::Time => time(text()?).map(Value::String),
            Family::DateTime2 | Family::LegacyDateTime => {
                datetime(text()?, false).map(Value::String)
            }
            Family::DateTimeOffset => datetime(text()?, true).map(Value::String),
            Family::Uuid => uuid(text()?).map(Value::String),
            Family::Binary { .. } | Family::RowVersion => {
                let bytes = base64(text()?)?;
                Ok(Value::String(format!("\\x{}", hex(&bytes))))
            }
            Family::Str { .. } | Family::Xml | Family::Unsupported(_) => Ok(v.clone()),
        }
    }

    /// A canonical value → the JSON value `OPENJSON ... WITH (col input_type)` reads back.
    pub fn encode(&self, v: &Value) -> Result<Value, String> {
        if v.is_null() {
            return Ok(Value::Null);
        }
        match self.family() {
            Family::Binary { .. } | Family::RowVersion => {
                let s = v.as_str().ok_or_else(|| {
                    format!(
                        "expected bytes as a \\x-hex string for {}, got {v}",
                        self.sql()
                    )
                })?;
                let h = s.strip_prefix("\\x").ok_or_else(|| {
                    format!(
                        "expected bytes as a \\x-hex string for {}, got {v}",
                        self.sql()
                    )
                })?;
                if h.len() % 2 != 0 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!("{v} is not valid \\x-hex bytes"));
                }
                Ok(Value::String(format!("0x{h}")))
            }
            Family::Bit => match v {
                Value::Bool(_) => Ok(v.clone()),
                Value::Number(n) if n.to_string() == "1" => Ok(Value::Bool(true)),
                Value::Number(n) if n.to_string() == "0" => Ok(Value::Bool(false)),
                Value::String(s) => match s.to_ascii_lowercase().as_str() {
                    "true" | "t" | "1" | "yes" | "y" => Ok(Value::Bool(true)),
                    "false" | "f" | "0" | "no" | "n" => Ok(Value::Bool(false)),
                    _ => Err(format!("{v} is not a boolean for bit")),
                },
                _ => Err(format!("{v} is not a boolean for bit")),
            },
            // JSON documents from the other side land in a character column as their text.
            Family::Str { .. } | Family::Xml if v.is_object() || v.is_array() => {
                Ok(Value::String(v.to_string()))
            }
            _ => Ok(v.clone()),
        }
    }

    /// Why a canonical value would not fit this column, if tandem can tell (used only to name
    /// the column in an error the database raised; never to refuse a value itself).
    pub fn suspect(&self, v: &Value, nullable: bool) -> Option<String> {
        if v.is_null() {
            return (!nullable).then(|| "NULL for a NOT NULL column".to_string());
        }
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match self.family() {
            Family::Str {
                unicode,
                chars: Some(n),
            } => {
                let len = if unicode {
                    s.encode_utf16().count()
                } else if s.is_ascii() {
                    s.len()
                } else {
                    s.chars().count()
                };
                (len > n).then(|| format!("{len} characters for {}", self.sql()))
            }
            Family::Int { min, max } => match s.parse::<i128>() {
                Ok(i) if i < min || i > max => {
                    Some(format!("{s} is out of range for {}", self.sql()))
                }
                Ok(_) => None,
                Err(_) => Some(format!("{s} is not an integer for {}", self.sql())),
            },
            Family::Decimal => {
                let digits = s
                    .trim_start_matches('-')
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .trim_start_matches('0')
                    .len();
                let room = self.precision.saturating_sub(self.scale) as usize;
                (digits > room || s.parse::<f64>().is_err())
                    .then(|| format!("{s} does not fit {}", self.sql()))
            }
            Family::Binary { bytes: Some(n) } => {
                let len = s.trim_start_matches("\\x").len() / 2;
                (len > n).then(|| format!("{len} bytes for {}", self.sql()))
            }
            Family::Uuid => uuid(&s)
                .err()
                .map(|_| format!("{s} is not a uniqueidentifier")),
            Family::Date => date(&s).err().map(|e| format!("{e} for date")),
            Family::RowVersion => Some("a rowversion column cannot be written".into()),
            _ => None,
        }
    }
}

fn number(v: &Value, t: &SqlType) -> Result<Value, String> {
    match v {
        Value::Number(_) => Ok(v.clone()),
        _ => Err(format!("expected a number for {}, got {v}", t.sql())),
    }
}

/// A decimal number with exactly `scale` fractional digits, as PostgreSQL's numeric(p,s)
/// prints it (`12.30`, `0.50`, `-3`), keeping every digit.
fn scaled(v: &Value, scale: u8, t: &SqlType) -> Result<Value, String> {
    let Value::Number(n) = v else {
        return Err(format!("expected a number for {}, got {v}", t.sql()));
    };
    let text = n.to_string();
    let fixed = normalize_decimal(&text, scale as usize)
        .ok_or_else(|| format!("{text} is not a plain decimal number for {}", t.sql()))?;
    serde_json::from_str(&fixed).map_err(|e| format!("{fixed}: {e}"))
}

/// `text` with exactly `scale` fractional digits; None when it is not `-?\d*(\.\d*)?` or would
/// lose a non-zero digit.
pub fn normalize_decimal(text: &str, scale: usize) -> Option<String> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
        return None;
    }
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut frac: String = frac.chars().take(scale).collect();
    while frac.len() < scale {
        frac.push('0');
    }
    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
    let sign = if neg && !zero { "-" } else { "" };
    Some(if scale == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{frac}")
    })
}

fn all_digits(s: &str, n: usize) -> bool {
    s.len() == n && s.bytes().all(|b| b.is_ascii_digit())
}

fn date(s: &str) -> Result<String, String> {
    let p: Vec<&str> = s.split('-').collect();
    if p.len() == 3 && all_digits(p[0], 4) && all_digits(p[1], 2) && all_digits(p[2], 2) {
        Ok(s.to_string())
    } else {
        Err(format!("{s:?} is not a date (yyyy-mm-dd)"))
    }
}

/// `hh:mm:ss[.fffffff]` with trailing zeros of the fraction removed (PostgreSQL's form).
fn time(s: &str) -> Result<String, String> {
    let (hms, frac) = s.split_once('.').unwrap_or((s, ""));
    let p: Vec<&str> = hms.split(':').collect();
    if p.len() != 3
        || !p.iter().all(|x| all_digits(x, 2))
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a time (hh:mm:ss.fffffff)"));
    }
    let frac = frac.trim_end_matches('0');
    Ok(if frac.is_empty() {
        hms.to_string()
    } else {
        format!("{hms}.{frac}")
    })
}

/// `yyyy-mm-ddThh:mm:ss[.f…]` (with an offset when `offset`), fraction trimmed as PostgreSQL
/// prints timestamps; `Z` becomes `+00:00`.
fn datetime(s: &str, offset: bool) -> Result<String, String> {
    let bad = || {
        format!(
            "{s:?} is not an ISO 8601 date and time{}",
            if offset { " with offset" } else { "" }
        )
    };
    let (d, rest) = s.split_once('T').ok_or_else(bad)?;
    let d = date(d).map_err(|_| bad())?;
    let (t, zone) = if offset {
        if let Some(t) = rest.strip_suffix('Z') {
            (t, "+00:00".to_string())
        } else {
            let at = rest.rfind(['+', '-']).ok_or_else(bad)?;
            let z = &rest[at..];
            let zp: Vec<&str> = z[1..].split(':').collect();
            if zp.len() != 2 || !zp.iter().all(|x| all_digits(x, 2)) {
                return Err(bad());
            }
            (&rest[..at], z.to_string())
        }
    } else {
        (rest, String::new())
    };
    let t = time(t).map_err(|_| bad())?;
    Ok(format!("{d}T{t}{zone}"))
}

fn uuid(s: &str) -> Result<String, String> {
    let ok = s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!("{s:?} is not a uniqueidentifier"))
    }
}

/// Standard base64 (with or without padding), as FOR JSON writes binary values.
pub fn base64(s: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let body = s.trim_end_matches('=');
    if s.len() - body.len() > 2 || body.len() % 4 == 1 {
        return Err(format!("{s:?} is not base64"));
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.as_bytes().chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = val(c).ok_or_else(|| format!("{s:?} is not base64"))?;
            acc |= v << (18 - 6 * i);
        }
        let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(name: &str, len: i16, p: u8, s: u8) -> SqlType {
        SqlType::new(name, len, p, s)
    }

    #[test]
    fn decimals_keep_exact_digits_and_scale() {
        assert_eq!(normalize_decimal("12.3", 2).unwrap(), "12.30");
        assert_eq!(normalize_decimal(".5", 2).unwrap(), "0.50");
        assert_eq!(normalize_decimal("-0.000", 2).unwrap(), "0.00");
        assert_eq!(normalize_decimal("007", 0).unwrap(), "7");
        assert_eq!(
            normalize_decimal("12345678901234.1234560000", 6).unwrap(),
            "12345678901234.123456"
        );
        assert!(
            normalize_decimal("1.234", 2).is_none(),
            "never drops a digit"
        );
        assert!(normalize_decimal("1e5", 2).is_none());
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64("AP8Q").unwrap(), vec![0, 255, 16]);
        assert_eq!(base64("").unwrap(), Vec::<u8>::new());
        assert_eq!(base64("AQ==").unwrap(), vec![1]);
        assert_eq!(base64("AQI=").unwrap(), vec![1, 2]);
        assert!(base64("A").is_err());
        assert!(base64("A*==").is_err());
    }

    #[test]
    fn sql_spelling() {
        assert_eq!(t("nvarchar", 120, 0, 0).sql(), "nvarchar(60)");
        assert_eq!(t("varbinary", -1, 0, 0).sql(), "varbinary(max)");
        assert_eq!(t("decimal", 9, 12, 2).sql(), "decimal(12,2)");
        assert_eq!(t("datetime2", 8, 27, 7).sql(), "datetime2(7)");
        assert_eq!(t("varchar", 60, 0, 0).input_type(), "varchar(max)");
        assert_eq!(t("datetime", 8, 23, 3).input_type(), "datetime2(7)");
        assert_eq!(
            t("binary", 16, 0, 0).project("j.[x]"),
            "CONVERT(varbinary(max), j.[x], 1)"
        );
    }

    #[test]
    fn encode_is_the_inverse_of_decode_for_bytes_and_bits() {
        let b = t("varbinary", -1, 0, 0);
        let canon = b.decode(&json!("AP8Q")).unwrap();
        assert_eq!(canon, json!("\\x00ff10"));
        assert_eq!(b.encode(&canon).unwrap(), json!("0x00ff10"));
        assert!(b.encode(&json!("AP8Q")).is_err());
        let bit = t("bit", 1, 1, 0);
        assert_eq!(bit.encode(&json!("t")).unwrap(), json!(true));
        assert_eq!(bit.decode(&json!(0)).unwrap(), json!(false));
    }

    #[test]
    fn suspects_name_what_does_not_fit() {
        let v = t("varchar", 3, 0, 0);
        assert!(v.suspect(&json!("abcd"), true).is_some());
        assert!(v.suspect(&json!("abc"), true).is_none());
        assert!(v.suspect(&Value::Null, false).is_some());
        assert!(t("tinyint", 1, 3, 0).suspect(&json!(256), true).is_some());
        assert!(t("decimal", 5, 5, 2)
            .suspect(&json!(1234.5), true)
            .is_some());
        assert!(t("decimal", 5, 5, 2)
            .suspect(&json!(123.45), true)
            .is_none());
    }
}
