//! The SQLite type map: which declared type and storage each neutral column type gets on a
//! SQLite target, and how values of those columns are read back as the same [`Value`].
//!
//! | neutral type          | declared type            | storage                                  |
//! |-----------------------|--------------------------|------------------------------------------|
//! | `Bool`                | `BOOLEAN`                | INTEGER 0 / 1                            |
//! | `Int` (≤ 64-bit signed, ≤ 32-bit unsigned) | `INTEGER` | INTEGER                        |
//! | `Int` unsigned 64     | refused                  | (2^63 and above do not fit)              |
//! | `Float` 32 / 64       | `FLOAT32` / `REAL`       | REAL (NaN refused: SQLite stores NULL)   |
//! | `Decimal(p, s)`       | `DECIMAL_TEXT(p,s)`      | TEXT, the exact digits and scale         |
//! | `Text`                | `TEXT`                   | TEXT                                     |
//! | `Bytes`               | `BLOB`                   | BLOB                                     |
//! | `Date`, `Time`, `Time` zoned | `DATE_TEXT`, `TIME_TEXT`, `TIMETZ_TEXT` | TEXT, ISO 8601        |
//! | `Timestamp` / zoned   | `TIMESTAMP_TEXT` / `TIMESTAMPTZ_TEXT` | TEXT `2024-02-29 23:59:59.5(+00)` |
//! | `Interval`            | `INTERVAL_TEXT`          | TEXT, ISO 8601 (`P1DT2H`)                |
//! | `Uuid`                | `UUID`                   | BLOB, 16 bytes                           |
//! | `Json` / binary       | `JSON_TEXT` / `JSONB_TEXT` | TEXT, exactly as the source wrote it   |
//! | `Array(t)`            | `<t's type>_ARRAY`       | TEXT, PostgreSQL's array literal         |
//! | `Other`               | `TEXT`                   | TEXT, the value's exact text             |
//!
//! The `_TEXT` names give the column TEXT affinity, so SQLite never turns `12.30` into the real
//! 12.3 (a NUMERIC column would). A column whose declared type already reads back as its neutral
//! type (SQLite → SQLite, or `bigint`, `boolean`, `uuid`, `text` from PostgreSQL) keeps it.
//! Reading converts a stored value to the column's type only when the value is exactly the form
//! written here (`typed`), so values of any other shape come back as stored.

use cutover_model::{
    Array, Column, ColumnType, Date, Decimal, Interval, Time, TimeTz, Timestamp, Value,
};

/// A column whose values SQLite cannot hold exactly, with the declared type it would get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) target: &'static str,
    pub(crate) why: String,
}

/// The declared type a SQLite target gives `column`.
pub(crate) fn declared_type(column: &Column) -> Result<String, Refused> {
    if valid_type_name(&column.declared_type)
        && crate::schema::column_type(&column.declared_type) == column.ty
    {
        return Ok(column.declared_type.clone());
    }
    sqlite_type(&column.ty)
}

/// SQLite's grammar for a type name: words, then at most `(n)` or `(n, m)`.
fn valid_type_name(t: &str) -> bool {
    let (words, args) = match t.split_once('(') {
        Some((w, rest)) => (w, Some(rest)),
        None => (t, None),
    };
    let words_ok = words
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ');
    let args_ok = args.is_none_or(|a| {
        a.strip_suffix(')').is_some_and(|a| {
            a.chars()
                .all(|c| c.is_ascii_digit() || c == ',' || c == ' ' || c == '-' || c == '+')
        })
    });
    words_ok && args_ok
}

fn sqlite_type(ty: &ColumnType) -> Result<String, Refused> {
    Ok(match ty {
        ColumnType::Bool => "BOOLEAN".to_owned(),
        ColumnType::Int {
            bits,
            unsigned: false,
        } if *bits <= 64 => "INTEGER".to_owned(),
        ColumnType::Int {
            bits,
            unsigned: true,
        } if *bits <= 32 => "INTEGER".to_owned(),
        ColumnType::Int { bits, unsigned } => {
            return Err(Refused {
                target: "INTEGER",
                why: format!(
                "SQLite's INTEGER is a signed 64-bit integer: an {}{bits}-bit integer does not fit",
                if *unsigned { "unsigned " } else { "" }
            ),
            })
        }
        ColumnType::Float { bits: 32 } => "FLOAT32".to_owned(),
        ColumnType::Float { bits: 64 } => "REAL".to_owned(),
        ColumnType::Float { bits } => {
            return Err(Refused {
                target: "REAL",
                why: format!("a {bits}-bit float is not a 32- or 64-bit IEEE float"),
            })
        }
        ColumnType::Decimal { precision, scale } => match (precision, scale) {
            (Some(p), Some(s)) => format!("DECIMAL_TEXT({p},{s})"),
            (Some(p), None) => format!("DECIMAL_TEXT({p})"),
            _ => "DECIMAL_TEXT".to_owned(),
        },
        ColumnType::Text { .. } | ColumnType::Other { .. } => "TEXT".to_owned(),
        ColumnType::Bytes { .. } => "BLOB".to_owned(),
        ColumnType::Date => "DATE_TEXT".to_owned(),
        ColumnType::Time { zoned: false } => "TIME_TEXT".to_owned(),
        ColumnType::Time { zoned: true } => "TIMETZ_TEXT".to_owned(),
        ColumnType::Timestamp { zoned: false } => "TIMESTAMP_TEXT".to_owned(),
        ColumnType::Timestamp { zoned: true } => "TIMESTAMPTZ_TEXT".to_owned(),
        ColumnType::Interval => "INTERVAL_TEXT".to_owned(),
        ColumnType::Uuid => "UUID".to_owned(),
        ColumnType::Json { binary: false } => "JSON_TEXT".to_owned(),
        ColumnType::Json { binary: true } => "JSONB_TEXT".to_owned(),
        ColumnType::Array(inner) => {
            if matches!(**inner, ColumnType::Array(_)) {
                return Err(Refused {
                    target: "TEXT",
                    why: "arrays of arrays have no SQLite form".to_owned(),
                });
            }
            let elem = sqlite_type(inner)?;
            let elem = elem.split('(').next().unwrap_or("TEXT");
            format!("{elem}_ARRAY")
        }
    })
}

/// The neutral type of one of this map's declared types, `None` for any other.
pub(crate) fn mapped_type(upper: &str) -> Option<ColumnType> {
    if let Some(elem) = upper.strip_suffix("_ARRAY") {
        let inner = crate::schema::column_type(elem);
        return (!matches!(inner, ColumnType::Array(_)))
            .then(|| ColumnType::Array(Box::new(inner)));
    }
    let (name, args) = match upper.split_once('(') {
        Some((n, a)) => (n.trim(), Some(a.trim_end_matches(')'))),
        None => (upper.trim(), None),
    };
    Some(match name {
        "BOOLEAN" | "BOOL" => ColumnType::Bool,
        "FLOAT32" => ColumnType::Float { bits: 32 },
        "DECIMAL_TEXT" => {
            let mut nums = args
                .unwrap_or("")
                .split(',')
                .map(|n| n.trim().parse::<u32>().ok());
            ColumnType::Decimal {
                precision: nums.next().flatten(),
                scale: nums.next().flatten(),
            }
        }
        "DATE_TEXT" => ColumnType::Date,
        "TIME_TEXT" => ColumnType::Time { zoned: false },
        "TIMETZ_TEXT" => ColumnType::Time { zoned: true },
        "TIMESTAMP_TEXT" => ColumnType::Timestamp { zoned: false },
        "TIMESTAMPTZ_TEXT" => ColumnType::Timestamp { zoned: true },
        "INTERVAL_TEXT" => ColumnType::Interval,
        "UUID" => ColumnType::Uuid,
        "JSON_TEXT" => ColumnType::Json { binary: false },
        "JSONB_TEXT" => ColumnType::Json { binary: true },
        _ => return None,
    })
}

/// A value read from a column of type `ty`, as its typed value when it is stored exactly in
/// the form [`stored`] writes; as stored otherwise.
pub(crate) fn typed(ty: &ColumnType, v: Value) -> Value {
    let converted = match (ty, &v) {
        (ColumnType::Bool, Value::Int(0)) => Some(Value::Bool(false)),
        (ColumnType::Bool, Value::Int(1)) => Some(Value::Bool(true)),
        (ColumnType::Float { bits: 32 }, Value::Float64(f)) => {
            let narrow = *f as f32;
            (f64::from(narrow).to_bits() == f.to_bits()).then_some(Value::Float32(narrow))
        }
        (ColumnType::Uuid, Value::Bytes(b)) => {
            <[u8; 16]>::try_from(b.as_slice()).ok().map(Value::Uuid)
        }
        (ColumnType::Json { .. }, Value::Text(s)) => Some(Value::Json(s.clone())),
        (
            ColumnType::Decimal { .. }
            | ColumnType::Date
            | ColumnType::Time { .. }
            | ColumnType::Timestamp { .. }
            | ColumnType::Interval
            | ColumnType::Array(_),
            Value::Text(s),
        ) => from_text(ty, s).filter(|t| text_of(t).as_deref() == Some(s.as_str())),
        _ => None,
    };
    converted.unwrap_or(v)
}

/// A row (or key) as read, each value typed by its column ([`typed`]).
pub(crate) fn typed_row<'c>(
    columns: impl Iterator<Item = &'c Column>,
    row: Vec<Value>,
) -> Vec<Value> {
    let mut columns = columns;
    row.into_iter()
        .map(|v| match columns.next() {
            Some(c) => typed(&c.ty, v),
            None => v,
        })
        .collect()
}

/// What a SQLite target stores for `v` in a column of type `ty` (one of SQLite's storage
/// classes), such that [`typed`] reads back `v` — or, for a value in another engine's text
/// form ([`Value::Raw`]), the typed value that text means. Refuses what would come back
/// different.
pub(crate) fn stored(ty: &ColumnType, v: &Value) -> Result<(Value, Value), String> {
    let value = match v {
        Value::Raw { text, type_name } => match ty {
            ColumnType::Text { .. } | ColumnType::Other { .. } => Value::Text(text.clone()),
            _ => from_text(ty, text).ok_or_else(|| {
                format!("the source's {type_name} text is not a value of this column's type")
            })?,
        },
        other => other.clone(),
    };
    let storage = match &value {
        Value::Null | Value::Int(_) | Value::Float64(_) | Value::Text(_) | Value::Bytes(_) => {
            value.clone()
        }
        Value::Bool(b) => Value::Int(i64::from(*b)),
        Value::UInt(u) => Value::Int(i64::try_from(*u).map_err(|_| {
            format!("the unsigned integer {u} does not fit SQLite's signed 64-bit INTEGER")
        })?),
        Value::Float32(f) => Value::Float64(f64::from(*f)),
        Value::Uuid(u) => Value::Bytes(u.to_vec()),
        other => Value::Text(text_of(other).unwrap_or_default()),
    };
    if let Value::Float64(f) = storage {
        if f.is_nan() {
            return Err("SQLite stores a NaN float as NULL".to_owned());
        }
    }
    let back = typed(ty, storage.clone());
    if back != value {
        return Err(format!(
            "a {} value would be read back from SQLite as a {} value",
            value.kind(),
            back.kind()
        ));
    }
    Ok((value, storage))
}

/// The text this map stores for a value held as TEXT (also an array's elements).
fn text_of(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => (if *b { "t" } else { "f" }).to_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float32(f) => cutover_connector::canonical::float32_text(*f),
        Value::Float64(f) => cutover_connector::canonical::float64_text(*f),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) | Value::Json(s) => s.clone(),
        Value::Bytes(b) => cutover_connector::canonical::bytes_text(b),
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::TimeTz(t) => t.to_string(),
        Value::Timestamp(t) => t.display(false).to_string(),
        Value::TimestampTz(t) => t.display(true).to_string(),
        Value::Interval(i) => i.to_string(),
        Value::Uuid(u) => cutover_connector::canonical::uuid_text(u),
        Value::Array(a) => array_text(a),
        Value::Raw { text, .. } => text.clone(),
    })
}

/// The value of type `ty` that `text` (its canonical / PostgreSQL text form) means.
fn from_text(ty: &ColumnType, text: &str) -> Option<Value> {
    Some(match ty {
        ColumnType::Bool => match text {
            "t" | "true" => Value::Bool(true),
            "f" | "false" => Value::Bool(false),
            _ => return None,
        },
        ColumnType::Int { .. } => match text.parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => Value::UInt(text.parse().ok()?),
        },
        ColumnType::Float { bits: 32 } => Value::Float32(float(text)? as f32),
        ColumnType::Float { .. } => Value::Float64(float(text)?),
        ColumnType::Decimal { .. } => Value::Decimal(text.parse::<Decimal>().ok()?),
        ColumnType::Text { .. } => Value::Text(text.to_owned()),
        ColumnType::Bytes { .. } => Value::Bytes(hex(text.strip_prefix("\\x")?)?),
        ColumnType::Date => Value::Date(text.parse::<Date>().ok()?),
        ColumnType::Time { zoned: false } => Value::Time(text.parse::<Time>().ok()?),
        ColumnType::Time { zoned: true } => Value::TimeTz(text.parse::<TimeTz>().ok()?),
        ColumnType::Timestamp { zoned: false } => {
            Value::Timestamp(Timestamp::parse(text, false).ok()?)
        }
        ColumnType::Timestamp { zoned: true } => {
            Value::TimestampTz(Timestamp::parse(text, true).ok()?)
        }
        ColumnType::Interval => Value::Interval(text.parse::<Interval>().ok()?),
        ColumnType::Uuid => {
            let digits: String = text.chars().filter(|c| *c != '-').collect();
            Value::Uuid(hex(&digits)?.try_into().ok()?)
        }
        ColumnType::Json { .. } => Value::Json(text.to_owned()),
        ColumnType::Array(inner) => Value::Array(parse_array(text, inner)?),
        ColumnType::Other { .. } => return None,
    })
}

fn float(text: &str) -> Option<f64> {
    match text {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

fn hex(h: &str) -> Option<Vec<u8>> {
    let h = h.as_bytes();
    if !h.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    h.chunks_exact(2)
        .map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?))
        .collect()
}

/// PostgreSQL's array literal: `{1,NULL}`, `[0:1]={a,b}`, nested per dimension.
fn array_text(a: &Array) -> String {
    let text = cutover_connector::canonical::array_literal(a, |v| {
        Ok::<_, std::convert::Infallible>(text_of(v))
    });
    match text {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

/// Parses PostgreSQL's array literal (as [`array_text`] and PostgreSQL's output write it), its
/// elements as values of `elem`.
fn parse_array(text: &str, elem: &ColumnType) -> Option<Array> {
    let (bounds, body) = match text.split_once('=') {
        Some((b, rest)) if b.starts_with('[') => (Some(b), rest),
        _ => (None, text),
    };
    let bytes: Vec<char> = body.chars().collect();
    let mut pos = 0;
    let mut elements = Vec::new();
    // Lengths per depth, checked rectangular.
    let mut lengths: Vec<Option<i32>> = Vec::new();
    fn parse_level(
        s: &[char],
        pos: &mut usize,
        depth: usize,
        elem: &ColumnType,
        out: &mut Vec<Value>,
        lengths: &mut Vec<Option<i32>>,
    ) -> Option<()> {
        if s.get(*pos) != Some(&'{') {
            return None;
        }
        *pos += 1;
        if lengths.len() <= depth {
            lengths.push(None);
        }
        let mut count = 0i32;
        if s.get(*pos) == Some(&'}') {
            *pos += 1;
            return (depth == 0).then_some(());
        }
        loop {
            match s.get(*pos)? {
                '{' => parse_level(s, pos, depth + 1, elem, out, lengths)?,
                '"' => {
                    *pos += 1;
                    let mut t = String::new();
                    loop {
                        match s.get(*pos)? {
                            '\\' => {
                                t.push(*s.get(*pos + 1)?);
                                *pos += 2;
                            }
                            '"' => {
                                *pos += 1;
                                break;
                            }
                            c => {
                                t.push(*c);
                                *pos += 1;
                            }
                        }
                    }
                    out.push(from_text(elem, &t)?);
                }
                _ => {
                    let start = *pos;
                    while !matches!(s.get(*pos)?, ',' | '}') {
                        *pos += 1;
                    }
                    let t: String = s[start..*pos].iter().collect();
                    let t = t.trim();
                    if t.eq_ignore_ascii_case("NULL") {
                        out.push(Value::Null);
                    } else {
                        out.push(from_text(elem, t)?);
                    }
                }
            }
            count += 1;
            match s.get(*pos)? {
                ',' => *pos += 1,
                '}' => {
                    *pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        match lengths[depth] {
            Some(n) if n != count => None,
            _ => {
                lengths[depth] = Some(count);
                Some(())
            }
        }
    }
    parse_level(&bytes, &mut pos, 0, elem, &mut elements, &mut lengths)?;
    if pos != bytes.len() {
        return None;
    }
    if elements.is_empty() {
        return Some(Array {
            dims: Vec::new(),
            elements,
        });
    }
    let lens: Vec<i32> = lengths.into_iter().collect::<Option<Vec<i32>>>()?;
    let lowers: Vec<i32> = match bounds {
        None => vec![1; lens.len()],
        Some(b) => {
            let mut l = Vec::new();
            for part in b.split(']').filter(|p| !p.is_empty()) {
                let (lo, hi) = part.strip_prefix('[')?.split_once(':')?;
                let (lo, hi): (i32, i32) = (lo.parse().ok()?, hi.parse().ok()?);
                l.push(lo);
                if hi - lo + 1 != *lens.get(l.len() - 1)? {
                    return None;
                }
            }
            l
        }
    };
    if lowers.len() != lens.len() {
        return None;
    }
    Some(Array {
        dims: lowers.into_iter().zip(lens).collect(),
        elements,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(ty: ColumnType, declared: &str) -> Column {
        Column {
            name: "c".into(),
            ty,
            declared_type: declared.into(),
            nullable: true,
            default: None,
        }
    }

    #[test]
    fn postgres_types_get_sqlite_types_that_read_back_as_themselves() {
        let int32 = ColumnType::Int {
            bits: 32,
            unsigned: false,
        };
        let cases: Vec<(ColumnType, &str, &str)> = vec![
            (ColumnType::Bool, "boolean", "boolean"),
            (int32.clone(), "integer", "INTEGER"),
            (
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: Some(2),
                },
                "numeric(12,2)",
                "DECIMAL_TEXT(12,2)",
            ),
            (
                ColumnType::Timestamp { zoned: true },
                "timestamp with time zone",
                "TIMESTAMPTZ_TEXT",
            ),
            (ColumnType::Interval, "interval", "INTERVAL_TEXT"),
            (ColumnType::Uuid, "uuid", "uuid"),
            (ColumnType::Json { binary: true }, "jsonb", "JSONB_TEXT"),
            (ColumnType::Bytes { max_len: None }, "bytea", "BLOB"),
            (
                ColumnType::Array(Box::new(int32)),
                "integer[]",
                "INTEGER_ARRAY",
            ),
            (
                ColumnType::Other {
                    name: "public.mood".into(),
                },
                "public.mood",
                "TEXT",
            ),
        ];
        for (ty, pg, want) in cases {
            let declared = declared_type(&col(ty.clone(), pg)).unwrap();
            assert_eq!(declared, want, "{pg}");
            let back = crate::schema::column_type(&declared);
            if !matches!(ty, ColumnType::Other { .. } | ColumnType::Int { .. }) {
                match (&ty, &back) {
                    (ColumnType::Array(_), ColumnType::Array(_)) => {}
                    _ => assert_eq!(back, ty, "{declared}"),
                }
            }
        }
        assert!(declared_type(&col(
            ColumnType::Int {
                bits: 64,
                unsigned: true
            },
            "BIGINT UNSIGNED"
        ))
        .is_err());
    }

    #[test]
    fn values_are_stored_so_that_they_read_back_unchanged() {
        let ts = ColumnType::Timestamp { zoned: true };
        let raw = Value::Raw {
            type_name: "timestamp with time zone".into(),
            text: "2024-02-29 23:59:59.5+00".into(),
        };
        let (value, storage) = stored(&ts, &raw).unwrap();
        assert!(matches!(value, Value::TimestampTz(_)));
        assert_eq!(typed(&ts, storage), value);

        let dec = ColumnType::Decimal {
            precision: None,
            scale: None,
        };
        let d = Value::Decimal("12.30".parse().unwrap());
        let (_, storage) = stored(&dec, &d).unwrap();
        assert_eq!(storage, Value::Text("12.30".into()));
        assert_eq!(typed(&dec, storage), d);

        let arr = ColumnType::Array(Box::new(ColumnType::Text { max_len: None }));
        let raw = Value::Raw {
            type_name: "text[]".into(),
            text: r#"[0:1]={"a \"b\"",NULL}"#.into(),
        };
        let (value, storage) = stored(&arr, &raw).unwrap();
        assert_eq!(
            value,
            Value::Array(Array {
                dims: vec![(0, 2)],
                elements: vec![Value::Text("a \"b\"".into()), Value::Null]
            })
        );
        assert_eq!(typed(&arr, storage), value);
        let ints = ColumnType::Array(Box::new(ColumnType::Int {
            bits: 32,
            unsigned: false,
        }));
        let (v, _) = stored(
            &ints,
            &Value::Raw {
                type_name: "integer[]".into(),
                text: "{{1,2},{3,NULL}}".into(),
            },
        )
        .unwrap();
        assert_eq!(
            v,
            Value::Array(Array {
                dims: vec![(1, 2), (1, 2)],
                elements: vec![Value::Int(1), Value::Int(2), Value::Int(3), Value::Null]
            })
        );

        let f = ColumnType::Float { bits: 64 };
        assert!(stored(&f, &Value::Float64(f64::NAN)).is_err());
        let b = ColumnType::Bool;
        assert_eq!(stored(&b, &Value::Bool(true)).unwrap().1, Value::Int(1));
        // Text that is not exactly the typed form stays text when read.
        assert_eq!(
            typed(&ts, Value::Text("2024-02-29T23:59:59Z".into())),
            Value::Text("2024-02-29T23:59:59Z".into())
        );
    }
}
