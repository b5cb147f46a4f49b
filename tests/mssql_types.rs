//! SQL Server types ⇄ the canonical image (what PostgreSQL's `to_jsonb` emits), without a
//! server: decoding of `FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES` output and
//! encoding back for `OPENJSON ... WITH`.
//!
//! The `FOR JSON` samples below are written in the formats SQL Server documents for FOR JSON
//! (ISO 8601 date/times with all fractional digits of the type, base64 for binary, upper-case
//! uniqueidentifier, true/false for bit, `\/` for a slash); they were not captured from a live
//! server on this machine. `scenarios.rs` checks the same values end to end against a real
//! server when TANDEM_TEST_MSSQL_URL is set.

use serde_json::{json, Value};
use tandem::endpoint::mssql::canonical_image;
use tandem::endpoint::mssql::sql::EntityPlan;
use tandem::endpoint::mssql::types::{normalize_decimal, Column, Family, SqlType};

fn t(name: &str, len: i16, p: u8, s: u8) -> SqlType {
    SqlType::new(name, len, p, s)
}

/// (column, type, FOR JSON value, canonical value) for one row of every mapped type.
fn samples() -> Vec<(&'static str, SqlType, Value, Value)> {
    vec![
        ("Id", t("int", 4, 10, 0), json!(1), json!(1)),
        (
            "Big",
            t("bigint", 8, 19, 0),
            json!(9223372036854775807i64),
            json!(9223372036854775807i64),
        ),
        ("Tiny", t("tinyint", 1, 3, 0), json!(255), json!(255)),
        (
            "Name",
            t("nvarchar", 100, 0, 0),
            json!("héllo ✓ 世界 \"q\" back\\slash a/b tab\t nl\n"),
            json!("héllo ✓ 世界 \"q\" back\\slash a/b tab\t nl\n"),
        ),
        ("Code", t("char", 5, 0, 0), json!("ab   "), json!("ab   ")),
        ("Empty", t("varchar", 10, 0, 0), json!(""), json!("")),
        ("Missing", t("varchar", 10, 0, 0), Value::Null, Value::Null),
        ("Long", t("varchar", -1, 0, 0), json!("x"), json!("x")),
        (
            "Price",
            t("decimal", 13, 20, 6),
            serde_json::from_str("12345678901234.123456").unwrap(),
            serde_json::from_str("12345678901234.123456").unwrap(),
        ),
        (
            "Scaled",
            t("numeric", 9, 12, 2),
            serde_json::from_str("-0.5").unwrap(),
            serde_json::from_str("-0.50").unwrap(),
        ),
        (
            "Cash",
            t("money", 8, 19, 4),
            serde_json::from_str("12.34").unwrap(),
            serde_json::from_str("12.3400").unwrap(),
        ),
        (
            "Ratio",
            t("float", 8, 53, 0),
            serde_json::from_str("1.000000000000000e-001").unwrap(),
            serde_json::from_str("1.000000000000000e-001").unwrap(),
        ),
        ("Flag", t("bit", 1, 1, 0), json!(true), json!(true)),
        (
            "Day",
            t("date", 3, 10, 0),
            json!("0001-01-01"),
            json!("0001-01-01"),
        ),
        (
            "At",
            t("datetime2", 8, 27, 7),
            json!("2024-02-29T23:59:59.1234560"),
            json!("2024-02-29T23:59:59.123456"),
        ),
        (
            "AtWhole",
            t("datetime2", 6, 19, 0),
            json!("2024-02-29T23:59:59"),
            json!("2024-02-29T23:59:59"),
        ),
        (
            "Legacy",
            t("datetime", 8, 23, 3),
            json!("1999-12-31T23:59:59.997"),
            json!("1999-12-31T23:59:59.997"),
        ),
        (
            "AtZone",
            t("datetimeoffset", 10, 34, 7),
            json!("2024-02-29T23:59:59.1234560+05:30"),
            json!("2024-02-29T23:59:59.123456+05:30"),
        ),
        (
            "AtUtc",
            t("datetimeoffset", 10, 34, 7),
            json!("2024-02-29T18:29:59.0000000Z"),
            json!("2024-02-29T18:29:59+00:00"),
        ),
        (
            "Tm",
            t("time", 5, 16, 7),
            json!("10:11:12.5000000"),
            json!("10:11:12.5"),
        ),
        (
            "Guid",
            t("uniqueidentifier", 16, 0, 0),
            json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
            json!("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
        ),
        (
            "Blob",
            t("varbinary", -1, 0, 0),
            json!("AP8Q"),
            json!("\\x00ff10"),
        ),
        ("NoBytes", t("varbinary", 16, 0, 0), json!(""), json!("\\x")),
        (
            "Fixed",
            t("binary", 2, 0, 0),
            json!("AQI="),
            json!("\\x0102"),
        ),
        (
            "Ver",
            t("timestamp", 8, 0, 0),
            json!("AAAAAAAAB9E="),
            json!("\\x00000000000007d1"),
        ),
    ]
}

#[test]
fn every_for_json_value_decodes_to_the_canonical_form() {
    for (col, ty, native, canonical) in samples() {
        let got = ty
            .decode(&native)
            .unwrap_or_else(|e| panic!("{col} ({}): {e}", ty.sql()));
        // Compare the JSON text: numbers must keep their exact digits.
        assert_eq!(
            got.to_string(),
            canonical.to_string(),
            "{col} ({})",
            ty.sql()
        );
    }
}

#[test]
fn canonical_values_encode_to_what_openjson_reads_back() {
    for (col, ty, _, canonical) in samples() {
        let enc = ty
            .encode(&canonical)
            .unwrap_or_else(|e| panic!("{col} ({}): {e}", ty.sql()));
        let want = match ty.family() {
            // Bytes go in as 0x-hex, converted with CONVERT(varbinary(max), v, 1).
            Family::Binary { .. } | Family::RowVersion => {
                json!(canonical.as_str().unwrap().replacen("\\x", "0x", 1))
            }
            _ => canonical.clone(),
        };
        assert_eq!(enc, want, "{col} ({})", ty.sql());
    }
    // Values from PostgreSQL that land in SQL Server columns.
    assert_eq!(t("bit", 1, 1, 0).encode(&json!("f")).unwrap(), json!(false));
    assert_eq!(
        t("nvarchar", -1, 0, 0)
            .encode(&json!({"k": [1, 2.5, null]}))
            .unwrap(),
        json!(r#"{"k":[1,2.5,null]}"#),
        "a jsonb document lands in a character column as its text"
    );
    assert!(t("varbinary", -1, 0, 0).encode(&json!("not hex")).is_err());
}

/// A captured row of a table with every sample column, as the trigger writes it.
fn plan() -> EntityPlan {
    let cols: Vec<Column> = samples()
        .into_iter()
        .map(|(name, ty, _, _)| Column {
            name: name.into(),
            ty,
            nullable: true,
            identity: false,
            computed: false,
            has_default: false,
        })
        .collect();
    EntityPlan {
        name: "thing".into(),
        table: "dbo.T".into(),
        table_sql: "[dbo].[T]".into(),
        key: vec!["Id".into()],
        key_given: false,
        by_name: cols.iter().map(|c| (c.name.clone(), c.clone())).collect(),
        row_cols: cols,
        peer: None,
    }
}

#[test]
fn a_real_for_json_row_becomes_the_canonical_image() {
    // One line as FOR JSON PATH, WITHOUT_ARRAY_WRAPPER, INCLUDE_NULL_VALUES writes it: compact,
    // '/' escaped as '\/', NULL as a member, binary as base64.
    let native = r#"{"Id":1,"Name":"a\/b \"q\"","Empty":"","Missing":null,"Price":12345678901234.123456,"Cash":12.3400,"Flag":false,"Day":"2024-02-29","At":"2024-02-29T23:59:59.1234560","AtZone":"2024-02-29T23:59:59.0000000+05:30","Guid":"6F9619FF-8B86-D011-B42D-00C04FC964FF","Blob":"AP8Q","NotInCatalog":"kept"}"#;
    let canonical = canonical_image(&plan(), native);
    assert_eq!(
        canonical,
        r#"{"Id":1,"Name":"a/b \"q\"","Empty":"","Missing":null,"Price":12345678901234.123456,"Cash":12.3400,"Flag":false,"Day":"2024-02-29","At":"2024-02-29T23:59:59.123456","AtZone":"2024-02-29T23:59:59+05:30","Guid":"6f9619ff-8b86-d011-b42d-00c04fc964ff","Blob":"\\x00ff10","NotInCatalog":"kept"}"#
    );
    let img: serde_json::Map<String, Value> = serde_json::from_str(&canonical).unwrap();
    assert_eq!(
        img.get("Missing"),
        Some(&Value::Null),
        "NULL stays a member"
    );
    assert_eq!(img.get("Empty"), Some(&json!("")), "'' stays ''");
    assert!(
        !img.contains_key("Code"),
        "a column not in the image stays absent"
    );
}

#[test]
fn the_canonical_form_is_what_postgres_to_jsonb_emits() {
    // to_jsonb of a PostgreSQL row with the counterpart types (numeric(20,6), boolean, date,
    // timestamp, timestamptz in a +05:30 session, time, uuid, bytea):
    let pg: serde_json::Map<String, Value> = serde_json::from_str(
        r#"{"price": 12345678901234.123456, "flag": false, "day": "2024-02-29",
            "at": "2024-02-29T23:59:59.123456", "at_zone": "2024-02-29T23:59:59+05:30",
            "tm": "10:11:12.5", "guid": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "blob": "\\x00ff10"}"#,
    )
    .unwrap();
    let ms = [
        (
            "price",
            t("decimal", 13, 20, 6),
            Value::Null, // replaced below by the exact number text
        ),
        ("flag", t("bit", 1, 1, 0), json!(false)),
        ("day", t("date", 3, 10, 0), json!("2024-02-29")),
        (
            "at",
            t("datetime2", 8, 27, 7),
            json!("2024-02-29T23:59:59.1234560"),
        ),
        (
            "at_zone",
            t("datetimeoffset", 10, 34, 7),
            json!("2024-02-29T23:59:59.0000000+05:30"),
        ),
        ("tm", t("time", 5, 16, 7), json!("10:11:12.5000000")),
        (
            "guid",
            t("uniqueidentifier", 16, 0, 0),
            json!("6F9619FF-8B86-D011-B42D-00C04FC964FF"),
        ),
        ("blob", t("varbinary", -1, 0, 0), json!("AP8Q")),
    ];
    for (name, ty, native) in ms {
        let native = if name == "price" {
            serde_json::from_str("12345678901234.123456").unwrap()
        } else {
            native
        };
        assert_eq!(
            ty.decode(&native).unwrap().to_string(),
            pg[name].to_string(),
            "{name}"
        );
    }
}

#[test]
fn decimals_never_lose_a_digit() {
    assert_eq!(normalize_decimal("12.3", 2).as_deref(), Some("12.30"));
    assert_eq!(normalize_decimal("12.300", 2).as_deref(), Some("12.30"));
    assert_eq!(normalize_decimal("12.301", 2), None);
    let t = t("decimal", 17, 38, 10);
    let v: Value = serde_json::from_str("1234567890123456789012345678.0123456789").unwrap();
    assert_eq!(
        t.decode(&v).unwrap().to_string(),
        "1234567890123456789012345678.0123456789"
    );
}

#[test]
fn unmappable_types_are_named() {
    for name in [
        "text",
        "ntext",
        "image",
        "geography",
        "geometry",
        "hierarchyid",
        "sql_variant",
    ] {
        assert!(
            matches!(t(name, 16, 0, 0).family(), Family::Unsupported(_)),
            "{name}"
        );
    }
    for name in ["datetime2", "float", "varbinary", "xml", "time"] {
        assert!(
            t(name, 8, 0, 0).key_input_type().is_none(),
            "{name} cannot be a key"
        );
    }
    for name in [
        "int",
        "bigint",
        "decimal",
        "nvarchar",
        "uniqueidentifier",
        "date",
        "bit",
    ] {
        assert!(
            t(name, 8, 10, 0).key_input_type().is_some(),
            "{name} can be a key"
        );
    }
}

#[test]
fn canonical_key_text_in_tsql_matches_serde_json() {
    // The T-SQL that writes a key's canonical text (id_map) per type; serde_json writes the
    // same text for the decoded values: numbers as digits, strings escaped without '\/'.
    assert_eq!(
        t("int", 4, 10, 0).canonical_token("r.[K]").unwrap(),
        "CONVERT(nvarchar(40), r.[K])"
    );
    assert_eq!(
        t("nvarchar", 40, 0, 0).canonical_token("r.[K]").unwrap(),
        r#"N'"' + REPLACE(STRING_ESCAPE(r.[K], 'json'), N'\/', N'/') + N'"'"#
    );
    assert_eq!(
        t("uniqueidentifier", 16, 0, 0)
            .canonical_token("r.[K]")
            .unwrap(),
        r#"N'"' + LOWER(CONVERT(nchar(36), r.[K])) + N'"'"#
    );
    assert_eq!(
        serde_json::to_string(&json!("a/b\"c")).unwrap(),
        r#""a/b\"c""#
    );
}
