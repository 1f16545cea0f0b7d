//! Values as Redis stores them: one hash field (or JSON member) per column, its bytes decided by
//! the column's neutral type, read back by the same type (the table's schema is kept beside the
//! data, `{prefix}_cutover:schema:{table}`). NULL is a field that is absent. The type map
//! (README, "Redis type map"):
//!
//! | neutral type | stored bytes |
//! |---|---|
//! | `Bool` | `t` / `f` |
//! | `Int` | decimal digits, `-` if negative |
//! | `Float` | the shortest text that reads back to the same bits; `NaN`, `Infinity`, `-Infinity`, `-0` |
//! | `Decimal` | its exact text, scale kept (`1.50`); `NaN`, `Infinity`, `-Infinity` |
//! | `Text` | the UTF-8 bytes |
//! | `Bytes` | the bytes themselves (Redis strings are binary-safe) |
//! | `Uuid` | 8-4-4-4-12 lower-case hex |
//! | `Date`, `Time`, `Timestamp`, `Interval` | ISO text as `docs/CANONICAL.md` writes it |
//! | `Json` | the document's text, as given |
//! | `Array`, `Other` | the array's canonical text / the engine's exact text, read back as `Raw` |

use std::str::FromStr;

use cutover_connector::canonical;
use cutover_connector::{key_text, ConnectorError, ErrorKind};
use cutover_model::{
    Column, ColumnType, Date, Decimal, Interval, TableSchema, Time, TimeTz, Timestamp, Value,
};

fn lossy(
    t: &TableSchema,
    c: &Column,
    key: &[Value],
    what: impl std::fmt::Display,
) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::LossyConversion,
        format!(
            "table {}, column {} ({}), key {}: {what}",
            t.name,
            c.name,
            c.declared_type,
            key_text(key)
        ),
    )
}

/// The bytes stored for `v` in column `c` (`None`: NULL, the field is left out). A value that
/// the column's type cannot read back as the same value is refused, naming table, column and
/// key; text from engines that hand typed values over as text (`Value::Raw`, e.g. PostgreSQL's
/// timestamps) is parsed by the column's type first.
pub(crate) fn encode(
    t: &TableSchema,
    c: &Column,
    v: &Value,
    key: &[Value],
) -> Result<Option<Vec<u8>>, ConnectorError> {
    let text = |s: &str| Ok(Some(s.as_bytes().to_vec()));
    let refuse = || {
        Err(lossy(
            t,
            c,
            key,
            format_args!(
                "a {} value cannot be stored exactly in a column of type {:?}",
                v.kind(),
                c.ty
            ),
        ))
    };
    match (&c.ty, v) {
        (_, Value::Null) => Ok(None),
        (ColumnType::Bool, Value::Bool(b)) => text(if *b { "t" } else { "f" }),
        (ColumnType::Bool, Value::Int(i @ (0 | 1))) => text(if *i == 1 { "t" } else { "f" }),
        (ColumnType::Int { .. }, Value::Int(i)) => text(&i.to_string()),
        (ColumnType::Int { .. }, Value::UInt(u)) => text(&u.to_string()),
        (ColumnType::Float { .. }, Value::Float64(f)) => text(&canonical::float64_text(*f)),
        (ColumnType::Float { bits: 32 }, Value::Float32(f)) => text(&canonical::float32_text(*f)),
        (ColumnType::Float { .. }, Value::Float32(f)) => {
            text(&canonical::float64_text(f64::from(*f)))
        }
        (ColumnType::Decimal { .. }, Value::Decimal(d)) => text(&d.to_string()),
        (ColumnType::Decimal { .. }, Value::Int(i)) => text(&i.to_string()),
        (ColumnType::Text { .. }, Value::Text(s)) => text(s),
        (ColumnType::Bytes { .. }, Value::Bytes(b)) => Ok(Some(b.clone())),
        (ColumnType::Uuid, Value::Uuid(u)) => text(&canonical::uuid_text(u)),
        (ColumnType::Date, Value::Date(d)) => text(&d.to_string()),
        (ColumnType::Time { zoned: false }, Value::Time(x)) => text(&x.to_string()),
        (ColumnType::Time { zoned: true }, Value::TimeTz(x)) => text(&x.to_string()),
        (ColumnType::Timestamp { zoned: false }, Value::Timestamp(x)) => {
            text(&x.display(false).to_string())
        }
        (ColumnType::Timestamp { zoned: true }, Value::TimestampTz(x)) => {
            text(&x.display(true).to_string())
        }
        (ColumnType::Interval, Value::Interval(x)) => text(&x.to_string()),
        (ColumnType::Json { .. }, Value::Json(s) | Value::Text(s)) => text(s),
        (ColumnType::Array(_), Value::Array(a)) => {
            let s = canonical::array_text(a).map_err(|e| e.at(&t.name, &c.name, key))?;
            text(&s)
        }
        (ColumnType::Array(_) | ColumnType::Other { .. }, Value::Raw { text: s, .. }) => text(s),
        (ColumnType::Other { .. }, v) => match canonical::value_text(v) {
            Ok(Some(s)) if !matches!(v, Value::Bytes(_)) => text(&s),
            _ => refuse(),
        },
        // Typed values handed over as text: parsed by the column's type, stored in its form.
        (ty, Value::Raw { text: s, .. } | Value::Text(s))
            if !matches!(ty, ColumnType::Text { .. }) =>
        {
            match decode_text(t, c, s) {
                Ok(typed) if !matches!(typed, Value::Raw { .. } | Value::Text(_)) => {
                    encode(t, c, &typed, key)
                }
                _ => Err(lossy(
                    t,
                    c,
                    key,
                    format_args!("the text {s:?} is not a value of type {:?}", c.ty),
                )),
            }
        }
        _ => refuse(),
    }
}

/// The value stored bytes `b` of column `c` stand for.
pub(crate) fn decode(t: &TableSchema, c: &Column, b: &[u8]) -> Result<Value, ConnectorError> {
    match &c.ty {
        ColumnType::Bytes { .. } => Ok(Value::Bytes(b.to_vec())),
        _ => {
            let s = std::str::from_utf8(b).map_err(|e| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!(
                        "table {}, column {}: the stored value is not UTF-8 (byte {}); cutover \
                         writes this column as text: correct the value in Redis or sync again",
                        t.name,
                        c.name,
                        e.valid_up_to()
                    ),
                )
            })?;
            decode_text(t, c, s)
        }
    }
}

fn decode_text(t: &TableSchema, c: &Column, s: &str) -> Result<Value, ConnectorError> {
    let bad = |e: &dyn std::fmt::Display| {
        ConnectorError::new(
            ErrorKind::Database,
            format!(
                "table {}, column {} ({:?}): the stored value {s:?} is not one cutover writes for \
                 this type ({e}); correct it in Redis, or repair the row with `cutover verify \
                 --repair`",
                t.name, c.name, c.ty
            ),
        )
    };
    Ok(match &c.ty {
        ColumnType::Bool => match s {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return Err(bad(&"not t or f")),
        },
        ColumnType::Int { .. } => match s.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(e) => Value::UInt(s.parse::<u64>().map_err(|_| bad(&e))?),
        },
        ColumnType::Float { bits: 32 } => Value::Float32(parse_float(s).map_err(|e| bad(&e))?),
        ColumnType::Float { .. } => Value::Float64(parse_float(s).map_err(|e| bad(&e))?),
        ColumnType::Decimal { .. } => Value::Decimal(Decimal::from_str(s).map_err(|e| bad(&e))?),
        ColumnType::Text { .. } => Value::Text(s.to_owned()),
        ColumnType::Bytes { .. } => Value::Bytes(s.as_bytes().to_vec()),
        ColumnType::Uuid => Value::Uuid(parse_uuid(s).ok_or_else(|| bad(&"not 8-4-4-4-12 hex"))?),
        ColumnType::Date => Value::Date(Date::from_str(s).map_err(|e| bad(&e))?),
        ColumnType::Time { zoned: false } => Value::Time(Time::from_str(s).map_err(|e| bad(&e))?),
        ColumnType::Time { zoned: true } => {
            Value::TimeTz(TimeTz::from_str(s).map_err(|e| bad(&e))?)
        }
        ColumnType::Timestamp { zoned: false } => {
            Value::Timestamp(Timestamp::parse(s, false).map_err(|e| bad(&e))?)
        }
        ColumnType::Timestamp { zoned: true } => {
            Value::TimestampTz(Timestamp::parse(s, true).map_err(|e| bad(&e))?)
        }
        ColumnType::Interval => Value::Interval(Interval::from_str(s).map_err(|e| bad(&e))?),
        ColumnType::Json { .. } => Value::Json(s.to_owned()),
        ColumnType::Array(_) => Value::Raw {
            type_name: c.declared_type.clone(),
            text: s.to_owned(),
        },
        ColumnType::Other { name } => Value::Raw {
            type_name: name.clone(),
            text: s.to_owned(),
        },
    })
}

/// Floats as [`canonical`] writes them (`NaN`, `Infinity`, `-Infinity` included).
fn parse_float<F: FromStr>(s: &str) -> Result<F, F::Err> {
    match s {
        "Infinity" => "inf".parse(),
        "-Infinity" => "-inf".parse(),
        _ => s.parse(),
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// `v` as it reads back from Redis (a key given as text or `Raw` becomes the column's typed
/// value), so keys compare and encode alike whoever typed them.
pub(crate) fn normalize(
    t: &TableSchema,
    c: &Column,
    v: &Value,
    key: &[Value],
) -> Result<Value, ConnectorError> {
    match encode(t, c, v, key)? {
        None => Ok(Value::Null),
        Some(b) => decode(t, c, &b),
    }
}

/// A column type in a short text of its own (`int:64:s`, `decimal:10:2`, `array:text:-`), for
/// the stored schema.
pub(crate) fn type_spec(ty: &ColumnType) -> String {
    let opt = |o: &Option<u32>| o.map_or("-".to_owned(), |n| n.to_string());
    match ty {
        ColumnType::Bool => "bool".into(),
        ColumnType::Int { bits, unsigned } => {
            format!("int:{bits}:{}", if *unsigned { "u" } else { "s" })
        }
        ColumnType::Float { bits } => format!("float:{bits}"),
        ColumnType::Decimal { precision, scale } => {
            format!("decimal:{}:{}", opt(precision), opt(scale))
        }
        ColumnType::Text { max_len } => format!("text:{}", opt(max_len)),
        ColumnType::Bytes { max_len } => format!("bytes:{}", opt(max_len)),
        ColumnType::Date => "date".into(),
        ColumnType::Time { zoned } => format!("time:{}", u8::from(*zoned)),
        ColumnType::Timestamp { zoned } => format!("timestamp:{}", u8::from(*zoned)),
        ColumnType::Interval => "interval".into(),
        ColumnType::Uuid => "uuid".into(),
        ColumnType::Json { binary } => format!("json:{}", u8::from(*binary)),
        ColumnType::Array(e) => format!("array:{}", type_spec(e)),
        ColumnType::Other { name } => format!("other:{name}"),
    }
}

/// The inverse of [`type_spec`].
pub(crate) fn parse_type_spec(s: &str) -> Option<ColumnType> {
    let (head, rest) = s.split_once(':').unwrap_or((s, ""));
    let opt = |p: &str| -> Option<Option<u32>> {
        if p == "-" {
            Some(None)
        } else {
            p.parse().ok().map(Some)
        }
    };
    let flag = |p: &str| match p {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    };
    Some(match head {
        "bool" => ColumnType::Bool,
        "int" => {
            let (bits, sign) = rest.split_once(':')?;
            ColumnType::Int {
                bits: bits.parse().ok()?,
                unsigned: sign == "u",
            }
        }
        "float" => ColumnType::Float {
            bits: rest.parse().ok()?,
        },
        "decimal" => {
            let (p, s) = rest.split_once(':')?;
            ColumnType::Decimal {
                precision: opt(p)?,
                scale: opt(s)?,
            }
        }
        "text" => ColumnType::Text {
            max_len: opt(rest)?,
        },
        "bytes" => ColumnType::Bytes {
            max_len: opt(rest)?,
        },
        "date" => ColumnType::Date,
        "time" => ColumnType::Time { zoned: flag(rest)? },
        "timestamp" => ColumnType::Timestamp { zoned: flag(rest)? },
        "interval" => ColumnType::Interval,
        "uuid" => ColumnType::Uuid,
        "json" => ColumnType::Json {
            binary: flag(rest)?,
        },
        "array" => ColumnType::Array(Box::new(parse_type_spec(rest)?)),
        "other" => ColumnType::Other { name: rest.into() },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Array, TableName};

    fn schema(ty: ColumnType) -> (TableSchema, Column) {
        let c = Column {
            name: "c".into(),
            ty,
            declared_type: "decl".into(),
            nullable: true,
            default: None,
        };
        let t = TableSchema {
            name: TableName::bare("t"),
            columns: vec![c.clone()],
            primary_key: Vec::new(),
            indexes: Vec::new(),
        };
        (t, c)
    }

    fn round_trip(ty: ColumnType, v: Value) -> Value {
        let (t, c) = schema(ty);
        match encode(&t, &c, &v, &[]).unwrap() {
            None => Value::Null,
            Some(b) => decode(&t, &c, &b).unwrap(),
        }
    }

    #[test]
    fn every_neutral_type_round_trips_exactly() {
        let dec = |s: &str| Value::Decimal(Decimal::from_str(s).unwrap());
        let cases = [
            (ColumnType::Bool, Value::Bool(true)),
            (ColumnType::Bool, Value::Bool(false)),
            (
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                Value::Int(i64::MIN),
            ),
            (
                ColumnType::Int {
                    bits: 64,
                    unsigned: true,
                },
                Value::UInt(u64::MAX),
            ),
            (ColumnType::Float { bits: 64 }, Value::Float64(0.1)),
            (ColumnType::Float { bits: 64 }, Value::Float64(-0.0)),
            (
                ColumnType::Float { bits: 64 },
                Value::Float64(f64::INFINITY),
            ),
            (
                ColumnType::Float { bits: 64 },
                Value::Float64(f64::NEG_INFINITY),
            ),
            (
                ColumnType::Float { bits: 64 },
                Value::Float64(f64::MIN_POSITIVE),
            ),
            (ColumnType::Float { bits: 32 }, Value::Float32(1.234_567e6)),
            (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                dec("1.50"),
            ),
            (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                dec("-123456789012345678901234567890.000000000000000000001"),
            ),
            (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                dec("NaN"),
            ),
            (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                dec("-Infinity"),
            ),
            (
                ColumnType::Text { max_len: None },
                Value::Text(String::new()),
            ),
            (
                ColumnType::Text { max_len: None },
                Value::Text("a:b\\c é \0".into()),
            ),
            (
                ColumnType::Bytes { max_len: None },
                Value::Bytes(vec![0, 0xFF, 0, 1]),
            ),
            (
                ColumnType::Bytes { max_len: None },
                Value::Bytes(Vec::new()),
            ),
            (ColumnType::Uuid, Value::Uuid([0xAB; 16])),
            (
                ColumnType::Date,
                Value::Date(Date::from_str("0044-03-15 BC").unwrap()),
            ),
            (ColumnType::Date, Value::Date(Date::Infinity)),
            (
                ColumnType::Time { zoned: false },
                Value::Time(Time::from_str("24:00:00").unwrap()),
            ),
            (
                ColumnType::Time { zoned: true },
                Value::TimeTz(TimeTz::from_str("12:00:00.5+05:30").unwrap()),
            ),
            (
                ColumnType::Timestamp { zoned: false },
                Value::Timestamp(Timestamp::parse("1999-12-31 23:59:59.999999", false).unwrap()),
            ),
            (
                ColumnType::Timestamp { zoned: true },
                Value::TimestampTz(Timestamp::parse("2026-01-01 06:30:00.5+00", true).unwrap()),
            ),
            (
                ColumnType::Interval,
                Value::Interval(Interval::from_str("P1Y2M3DT4H5M6.5S").unwrap()),
            ),
            (
                ColumnType::Json { binary: true },
                Value::Json("{\"b\":1, \"a\": [1.50]}".into()),
            ),
            (
                ColumnType::Other {
                    name: "mood".into(),
                },
                Value::Raw {
                    type_name: "mood".into(),
                    text: "happy".into(),
                },
            ),
        ];
        for (ty, v) in cases {
            assert_eq!(round_trip(ty.clone(), v.clone()), v, "{ty:?}");
            assert_eq!(round_trip(ty, Value::Null), Value::Null);
        }
        let nan = round_trip(ColumnType::Float { bits: 64 }, Value::Float64(f64::NAN));
        assert!(matches!(nan, Value::Float64(f) if f.is_nan()));
    }

    #[test]
    fn empty_text_is_not_null_and_bytes_keep_zeros() {
        let (t, c) = schema(ColumnType::Text { max_len: None });
        assert_eq!(
            encode(&t, &c, &Value::Text(String::new()), &[]).unwrap(),
            Some(Vec::new())
        );
        assert_eq!(encode(&t, &c, &Value::Null, &[]).unwrap(), None);
        let (t, c) = schema(ColumnType::Bytes { max_len: None });
        assert_eq!(
            encode(&t, &c, &Value::Bytes(vec![0, 0]), &[]).unwrap(),
            Some(vec![0, 0])
        );
    }

    #[test]
    fn arrays_are_stored_as_canonical_text_and_read_back_as_raw() {
        let a = Array::from_elements(vec![Value::Int(1), Value::Null, Value::Int(3)]);
        let got = round_trip(
            ColumnType::Array(Box::new(ColumnType::Int {
                bits: 32,
                unsigned: false,
            })),
            Value::Array(a),
        );
        assert_eq!(
            got,
            Value::Raw {
                type_name: "decl".into(),
                text: "{1,NULL,3}".into()
            }
        );
    }

    #[test]
    fn text_of_typed_values_is_parsed_by_the_column_and_nonsense_refused() {
        let raw = |s: &str| Value::Raw {
            type_name: "timestamp".into(),
            text: s.into(),
        };
        assert_eq!(
            round_trip(
                ColumnType::Timestamp { zoned: false },
                raw("2024-02-29 12:00:00")
            ),
            Value::Timestamp(Timestamp::parse("2024-02-29 12:00:00", false).unwrap())
        );
        let (t, c) = schema(ColumnType::Timestamp { zoned: false });
        let err = encode(&t, &c, &raw("yesterday"), &[Value::Int(7)]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::LossyConversion);
        assert!(err.to_string().contains("table t, column c"), "{err}");
        let (t, c) = schema(ColumnType::Int {
            bits: 32,
            unsigned: false,
        });
        assert!(encode(&t, &c, &Value::Float64(1.5), &[]).is_err());
    }

    #[test]
    fn type_specs_round_trip() {
        for ty in [
            ColumnType::Bool,
            ColumnType::Int {
                bits: 16,
                unsigned: true,
            },
            ColumnType::Decimal {
                precision: Some(10),
                scale: None,
            },
            ColumnType::Text { max_len: Some(40) },
            ColumnType::Array(Box::new(ColumnType::Array(Box::new(ColumnType::Uuid)))),
            ColumnType::Other { name: "a:b".into() },
            ColumnType::Json { binary: false },
            ColumnType::Timestamp { zoned: true },
        ] {
            assert_eq!(parse_type_spec(&type_spec(&ty)), Some(ty));
        }
    }
}
