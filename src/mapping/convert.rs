//! The built-in converters (`convert` in a column entry) and the one notion of equal for
//! converted columns.
//!
//! Each converter is a function A → B ([`forward`]) with an inverse B → A ([`backward`]).
//! Some lose detail (trimming, rounding, a local time in a repeated hour): a value that went
//! A → B → A may not come back as it was. So converted columns are compared in B's terms
//! ([`canonical`]): A's value as it arrives at B, and B's value as it arrives at B after a
//! trip to A and back. Two values are equal when those agree ([`equal`]). The same test is
//! the lossy rule at apply (an incoming value equal to the target's current one leaves the
//! target as it is: the side holding more detail keeps it), and what verify compares.
//! It is sound because a value that travelled once is stable:
//! `forward(backward(forward(a))) == forward(a)` for every converter (property-tested below).

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, SecondsFormat, TimeZone};
use serde_json::Value;

use crate::config::{ColumnMap, Converter, Side};
use crate::model::{normalize, value_text};

impl Converter {
    /// Whether a value can come back different after a round trip (the lossy rule matters).
    pub fn lossy(&self) -> bool {
        matches!(
            self,
            Converter::Trim | Converter::Round(_) | Converter::Timezone { .. }
        )
    }
}

/// `value` converted for the side it travels to, from side `from`. NULL stays NULL.
pub fn convert(c: &Converter, from: Side, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match from {
        Side::A => forward(c, value),
        Side::B => backward(c, value),
    }
}

/// A → B.
pub fn forward(c: &Converter, v: &Value) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match c {
        Converter::Trim => Ok(match v {
            Value::String(s) => Value::String(s.trim_end_matches(' ').to_string()),
            other => other.clone(),
        }),
        Converter::Flag { on, off } => {
            let t = value_text(v);
            if t == value_text(on) {
                Ok(Value::Bool(true))
            } else if t == value_text(off) {
                Ok(Value::Bool(false))
            } else {
                Err(format!(
                    "value {v} is neither the flag's on code {on} nor its off code {off}"
                ))
            }
        }
        Converter::Scale(n) => Ok(Decimal::parse(v)?.shift(*n).to_value()),
        Converter::Round(n) => Ok(Decimal::parse(v)?.round(*n).to_value()),
        Converter::Timezone { zone, later } => {
            let local = naive(v)?;
            let instant = match zone.from_local_datetime(&local) {
                LocalResult::Single(t) => t,
                LocalResult::Ambiguous(early, late) => {
                    if *later {
                        late
                    } else {
                        early
                    }
                }
                // A local time the clocks skipped: read with the offset before the change (as
                // PostgreSQL does), so 02:30 on a spring-forward night is 03:30 after it.
                LocalResult::None => {
                    let before = zone
                        .offset_from_utc_datetime(&(local - Duration::hours(24)))
                        .fix();
                    let utc = local - Duration::seconds(i64::from(before.local_minus_utc()));
                    zone.from_utc_datetime(&utc)
                }
            };
            Ok(Value::String(
                instant
                    .with_timezone(&chrono::Utc)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true),
            ))
        }
    }
}

/// B → A.
pub fn backward(c: &Converter, v: &Value) -> Result<Value, String> {
    if v.is_null() {
        return Ok(Value::Null);
    }
    match c {
        Converter::Trim | Converter::Round(_) => Ok(v.clone()),
        Converter::Flag { on, off } => match v {
            Value::Bool(true) => Ok(on.clone()),
            Value::Bool(false) => Ok(off.clone()),
            other => match value_text(other).as_deref() {
                Some("true" | "t" | "1") => Ok(on.clone()),
                Some("false" | "f" | "0") => Ok(off.clone()),
                _ => Err(format!("value {other} is not a boolean")),
            },
        },
        Converter::Scale(n) => Ok(Decimal::parse(v)?.shift(-*n).to_value()),
        Converter::Timezone { zone, .. } => {
            let text = value_text(v).unwrap_or_default().replacen(' ', "T", 1);
            let t = DateTime::parse_from_rfc3339(&text)
                .or_else(|_| DateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f%#z"))
                .map_err(|e| format!("value {v} is not a date and time with an offset ({e})"))?;
            let local = t.with_timezone(zone).naive_local();
            Ok(Value::String(
                local.format("%Y-%m-%dT%H:%M:%S%.f").to_string(),
            ))
        }
    }
}

/// A column's value of `side` in B's terms, the form in which both sides are compared: A's
/// converted A → B; B's after a trip B → A → B (a value B holds in more detail than A can
/// keep compares as what A keeps of it). `values` maps with `prefer` are compared the same
/// way. A value that cannot convert stays itself, marked, so it equals nothing valid.
pub fn canonical(col: &ColumnMap, side: Side, v: &Value) -> Value {
    let result = match (&col.convert, &col.values, side) {
        (Some(c), _, Side::A) => forward(c, v),
        (Some(c), _, Side::B) => backward(c, v).and_then(|a| forward(c, &a)),
        (None, Some(map), Side::A) => super::translate(map, Side::A, v),
        (None, Some(map), Side::B) => {
            super::translate(map, Side::B, v).and_then(|a| super::translate(map, Side::A, &a))
        }
        (None, None, _) => Ok(v.clone()),
    };
    result.unwrap_or_else(|_| Value::String(format!("\u{1}{}", value_text(v).unwrap_or_default())))
}

/// The one notion of equal for a mapped column: A's value `a` and B's value `b` are equal
/// when they agree in B's terms ([`canonical`]), numbers by value and times at microseconds
/// (`verify_hash::normalize`).
pub fn equal(col: &ColumnMap, a: &Value, b: &Value) -> bool {
    normalize(&canonical(col, Side::A, a)) == normalize(&canonical(col, Side::B, b))
}

/// A date and time without a zone, from its ISO text (`T` or a space between).
fn naive(v: &Value) -> Result<NaiveDateTime, String> {
    let text = value_text(v).unwrap_or_default().replacen(' ', "T", 1);
    NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(&text, "%Y-%m-%dT%H:%M"))
        .map_err(|e| format!("value {v} is not a local date and time ({e})"))
}

/// An exact decimal: `digits` × 10^`exp`, so scaling and rounding never go through floats.
#[derive(Debug, Clone, PartialEq)]
struct Decimal {
    negative: bool,
    /// Without leading zeros; empty for zero.
    digits: String,
    exp: i64,
}

impl Decimal {
    /// From a JSON number or a numeric string (`-12.50`, `1e-3`).
    fn parse(v: &Value) -> Result<Decimal, String> {
        let text = match v {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.trim().to_string(),
            other => return Err(format!("value {other} is not a number")),
        };
        let bad = || format!("value {v} is not a number");
        let (negative, body) = match text.strip_prefix('-') {
            Some(b) => (true, b),
            None => (false, text.strip_prefix('+').unwrap_or(&text)),
        };
        let (mantissa, e) = match body.find(['e', 'E']) {
            Some(i) => (&body[..i], body[i + 1..].parse::<i64>().map_err(|_| bad())?),
            None => (body, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let all = format!("{int}{frac}");
        let digits = all.trim_start_matches('0').to_string();
        let frac_len = i64::try_from(frac.len()).map_err(|_| bad())?;
        Ok(Decimal {
            negative: negative && !digits.is_empty(),
            digits,
            exp: e - frac_len,
        }
        .tidy())
    }

    /// Trailing zeros of the digits moved into the exponent.
    fn tidy(mut self) -> Decimal {
        while self.digits.ends_with('0') {
            self.digits.pop();
            self.exp += 1;
        }
        if self.digits.is_empty() {
            self.exp = 0;
            self.negative = false;
        }
        self
    }

    /// × 10^n.
    fn shift(mut self, n: i32) -> Decimal {
        self.exp += i64::from(n);
        self.tidy()
    }

    /// Rounded to `n` decimals, half away from zero.
    fn round(self, n: u32) -> Decimal {
        let keep = -i64::from(n);
        if self.exp >= keep {
            return self;
        }
        let drop = usize::try_from(keep - self.exp).unwrap_or(usize::MAX);
        if drop > self.digits.len() {
            return Decimal {
                negative: false,
                digits: String::new(),
                exp: 0,
            };
        }
        let (head, tail) = self.digits.split_at(self.digits.len() - drop);
        let mut digits: Vec<u8> = head.bytes().collect();
        if tail.as_bytes().first().is_some_and(|d| *d >= b'5') {
            let mut i = digits.len();
            loop {
                if i == 0 {
                    digits.insert(0, b'1');
                    break;
                }
                i -= 1;
                if digits[i] == b'9' {
                    digits[i] = b'0';
                } else {
                    digits[i] += 1;
                    break;
                }
            }
        }
        let digits = String::from_utf8(digits).unwrap_or_default();
        Decimal {
            negative: self.negative,
            digits: digits.trim_start_matches('0').to_string(),
            exp: keep,
        }
        .tidy()
    }

    /// Plain decimal text (no exponent).
    fn text(&self) -> String {
        if self.digits.is_empty() {
            return "0".into();
        }
        let mut out = String::new();
        if self.negative {
            out.push('-');
        }
        if self.exp >= 0 {
            out.push_str(&self.digits);
            out.extend(std::iter::repeat_n(
                '0',
                usize::try_from(self.exp).unwrap_or(0),
            ));
        } else {
            let frac = usize::try_from(-self.exp).unwrap_or(0);
            if frac >= self.digits.len() {
                out.push_str("0.");
                out.extend(std::iter::repeat_n('0', frac - self.digits.len()));
                out.push_str(&self.digits);
            } else {
                let (i, f) = self.digits.split_at(self.digits.len() - frac);
                out.push_str(i);
                out.push('.');
                out.push_str(f);
            }
        }
        out
    }

    /// As a JSON number with exactly these digits (serde_json keeps them).
    fn to_value(&self) -> Value {
        serde_json::from_str(&self.text()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn col(c: Converter) -> ColumnMap {
        ColumnMap {
            a: "A".into(),
            b: "b".into(),
            values: None,
            parent: None,
            convert: Some(c),
            direction: crate::config::Direction::Both,
            lookup: None,
        }
    }

    fn paris(later: bool) -> Converter {
        Converter::Timezone {
            zone: chrono_tz::Europe::Paris,
            later,
        }
    }

    #[test]
    fn decimals_scale_and_round_exactly() {
        let s = Converter::Scale(-2);
        assert_eq!(forward(&s, &json!(1234)).unwrap().to_string(), "12.34");
        assert_eq!(backward(&s, &json!(12.34)).unwrap().to_string(), "1234");
        assert_eq!(forward(&s, &json!(-5)).unwrap().to_string(), "-0.05");
        assert_eq!(forward(&s, &json!("1e3")).unwrap().to_string(), "10");
        let r = Converter::Round(2);
        assert_eq!(forward(&r, &json!(31.456)).unwrap().to_string(), "31.46");
        assert_eq!(forward(&r, &json!(-0.005)).unwrap().to_string(), "-0.01");
        assert_eq!(forward(&r, &json!(9.995)).unwrap().to_string(), "10");
        assert_eq!(forward(&r, &json!(0.004)).unwrap().to_string(), "0");
        assert!(forward(&r, &json!("abc")).is_err());
    }

    #[test]
    fn trim_and_flags() {
        assert_eq!(
            forward(&Converter::Trim, &json!("ab  ")).unwrap(),
            json!("ab")
        );
        assert_eq!(
            backward(&Converter::Trim, &json!("ab")).unwrap(),
            json!("ab")
        );
        let f = Converter::Flag {
            on: json!("Y"),
            off: json!("N"),
        };
        assert_eq!(forward(&f, &json!("N")).unwrap(), json!(false));
        assert_eq!(backward(&f, &json!(true)).unwrap(), json!("Y"));
        assert!(forward(&f, &json!("y")).unwrap_err().contains("\"y\""));
        let b = Converter::Flag {
            on: json!(1),
            off: json!(0),
        };
        assert_eq!(forward(&b, &json!("1")).unwrap(), json!(true));
        assert_eq!(backward(&b, &json!(false)).unwrap(), json!(0));
        assert_eq!(forward(&b, &Value::Null).unwrap(), Value::Null);
    }

    #[test]
    fn local_times_in_a_zone() {
        let (early, late) = (paris(false), paris(true));
        // Summer: UTC+2.
        assert_eq!(
            forward(&early, &json!("2024-07-01T12:00:00")).unwrap(),
            json!("2024-07-01T10:00:00Z")
        );
        // 02:30 on 27 October 2024 happened twice (UTC+2, then UTC+1).
        let twice = json!("2024-10-27T02:30:00");
        assert_eq!(
            forward(&early, &twice).unwrap(),
            json!("2024-10-27T00:30:00Z")
        );
        assert_eq!(
            forward(&late, &twice).unwrap(),
            json!("2024-10-27T01:30:00Z")
        );
        // 02:30 on 31 March 2024 never happened: read as 03:30 summer time.
        assert_eq!(
            forward(&early, &json!("2024-03-31T02:30:00")).unwrap(),
            json!("2024-03-31T01:30:00Z")
        );
        assert_eq!(
            backward(&early, &json!("2024-10-27T01:30:00+00:00")).unwrap(),
            json!("2024-10-27T02:30:00")
        );
        // Both instants of the repeated hour are the one local time A can hold: equal.
        let c = col(early);
        assert!(equal(&c, &twice, &json!("2024-10-27T01:30:00Z")));
        assert!(equal(&c, &twice, &json!("2024-10-27T02:30:00+02:00")));
        assert!(!equal(&c, &twice, &json!("2024-10-27T02:30:00Z")));
    }

    #[test]
    fn equal_follows_the_side_with_less_detail() {
        let t = col(Converter::Trim);
        assert!(equal(&t, &json!("ab   "), &json!("ab")));
        assert!(equal(&t, &json!("ab"), &json!("ab  ")));
        assert!(!equal(&t, &json!("ab"), &json!("abc")));
        let r = col(Converter::Round(2));
        assert!(equal(&r, &json!(31.456), &json!(31.46)));
        assert!(!equal(&r, &json!(31.456), &json!(31.45)));
        assert!(equal(&t, &Value::Null, &Value::Null));
        assert!(!equal(&t, &Value::Null, &json!("")));
    }
}

/// A property per converter: a random value travels A → B → A unchanged, or (lossy) what
/// arrives is equal to what was sent, and so apply leaves the side with more detail alone.
#[cfg(test)]
mod round_trip {
    use chrono::NaiveDate;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn col(c: Converter) -> ColumnMap {
        ColumnMap {
            a: "A".into(),
            b: "b".into(),
            values: None,
            parent: None,
            convert: Some(c),
            direction: crate::config::Direction::Both,
            lookup: None,
        }
    }

    /// The laws every converter keeps, for A's value `a`.
    fn laws(c: &Converter, a: &Value) -> Result<(), TestCaseError> {
        let b = forward(c, a).map_err(TestCaseError::fail)?;
        let back = backward(c, &b).map_err(TestCaseError::fail)?;
        let column = col(c.clone());
        // What travelled is equal to where it came from, both ways (apply writes nothing).
        prop_assert!(equal(&column, a, &b), "{a} → {b}");
        prop_assert!(equal(&column, &back, &b), "{back} ← {b}");
        // Stable after one trip.
        let again = forward(c, &back).map_err(TestCaseError::fail)?;
        prop_assert_eq!(normalize(&again), normalize(&b));
        if !c.lossy() {
            prop_assert_eq!(
                normalize(&back),
                normalize(a),
                "lossless: A → B → A unchanged"
            );
        }
        Ok(())
    }

    fn decimal() -> impl Strategy<Value = Value> {
        (any::<bool>(), 0u64..10_000_000_000, 0u32..8).prop_map(|(neg, n, scale)| {
            let d = Decimal {
                negative: neg,
                digits: n.to_string(),
                exp: -i64::from(scale),
            }
            .tidy();
            d.to_value()
        })
    }

    fn local_time() -> impl Strategy<Value = Value> {
        // Minutes across 2023–2025, clock changes included.
        (0i64..(3 * 366 * 24 * 60)).prop_map(|m| {
            let start = NaiveDate::from_ymd_opt(2023, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .unwrap_or_default();
            json!((start + Duration::minutes(m))
                .format("%Y-%m-%dT%H:%M:%S")
                .to_string())
        })
    }

    proptest! {
        #[test]
        fn trim(s in "[a-z ]{0,8}") {
            laws(&Converter::Trim, &json!(s))?;
        }

        #[test]
        fn flag(on in any::<bool>()) {
            let c = Converter::Flag { on: json!("Y"), off: json!("N") };
            laws(&c, &json!(if on { "Y" } else { "N" }))?;
            let c = Converter::Flag { on: json!(1), off: json!(0) };
            laws(&c, &json!(i32::from(on)))?;
        }

        #[test]
        fn scale(v in decimal(), n in -6i32..6) {
            laws(&Converter::Scale(n), &v)?;
        }

        #[test]
        fn round(v in decimal(), n in 0u32..5) {
            laws(&Converter::Round(n), &v)?;
        }

        #[test]
        fn timezone(v in local_time(), later in any::<bool>(), z in 0usize..3) {
            let zone = [chrono_tz::Europe::Paris, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe][z];
            laws(&Converter::Timezone { zone, later }, &v)?;
        }

        /// B → A → B: an instant comes back as itself unless it is the other instant of a
        /// repeated local hour, and then it is equal (the same local time).
        #[test]
        fn timezone_from_b(m in 0i64..(3 * 366 * 24 * 60), later in any::<bool>()) {
            let c = Converter::Timezone { zone: chrono_tz::Europe::Paris, later };
            let utc = NaiveDate::from_ymd_opt(2023, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0)).unwrap_or_default() + Duration::minutes(m);
            let b = json!(format!("{}Z", utc.format("%Y-%m-%dT%H:%M:%S")));
            let a = backward(&c, &b).map_err(TestCaseError::fail)?;
            prop_assert!(equal(&col(c), &a, &b));
        }
    }

    /// Many-to-one codes: every A code travels to its B value, the way back writes the
    /// preferred code, and an A code that is not preferred is still equal to its B value.
    #[test]
    fn values_with_prefer() {
        use crate::config::ValueMap;
        let map = ValueMap {
            pairs: vec![
                (json!("Y"), json!(true)),
                (json!("J"), json!(true)),
                (json!("N"), json!(false)),
            ],
            prefer: vec!["Y".into()],
        };
        let c = ColumnMap {
            a: "A".into(),
            b: "b".into(),
            values: Some(map.clone()),
            parent: None,
            convert: None,
            direction: crate::config::Direction::Both,
            lookup: None,
        };
        assert_eq!(
            super::super::translate(&map, Side::B, &json!(true)).unwrap(),
            json!("Y")
        );
        assert!(equal(&c, &json!("J"), &json!(true)));
        assert!(equal(&c, &json!("Y"), &json!(true)));
        assert!(!equal(&c, &json!("N"), &json!(true)));
    }
}
