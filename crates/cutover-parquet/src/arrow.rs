//! The type map: neutral column types → Arrow types (Parquet logical types), and values into
//! Arrow arrays. Pure; unit-tested.
//!
//! | neutral type | Arrow / Parquet |
//! |---|---|
//! | `Bool` | Boolean |
//! | `Int { bits, unsigned }` | Int8/16/32/64, UInt8/16/32/64 (24-bit: Int32/UInt32) |
//! | `Float` 32, 64 | Float32, Float64 (NaN and ±Infinity kept) |
//! | `Decimal(p, s)`, p ≤ 38 | Decimal128(p, s), exact; a value with more digits refused |
//! | `Decimal` unconstrained or p > 38 | Utf8, the exact text (`12.50`, `NaN`) |
//! | `Text`, `Json`, enums and other types | Utf8 (JSON as its text) |
//! | `Bytes` | Binary |
//! | `Date` | Date32 (±infinity refused) |
//! | `Time` | Time64(µs) |
//! | `Timestamp` | Timestamp(µs), no zone; zoned: Timestamp(µs, "UTC") (±infinity refused) |
//! | `Uuid` | FixedSizeBinary(16) |
//! | `TimeTz`, `Interval`, `Array` | Utf8, their canonical text (`docs/CANONICAL.md`) |

use std::sync::Arc;

use arrow_array::{
    ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array, StringArray,
    Time64MicrosecondArray, TimestampMicrosecondArray, UInt16Array, UInt32Array, UInt64Array,
    UInt8Array,
};
use arrow_schema::{DataType, TimeUnit};
use cutover_connector::canonical;
use cutover_model::{ColumnType, Date, Decimal, Time, Timestamp, Value};

/// Days from 1970-01-01 to 2000-01-01 (the model counts from 2000).
const DAYS_1970_TO_2000: i32 = 10_957;

/// The Arrow type of a column of `ty`.
pub fn data_type(ty: &ColumnType) -> DataType {
    match ty {
        ColumnType::Bool => DataType::Boolean,
        ColumnType::Int { bits, unsigned } => match (bits, unsigned) {
            (0..=8, false) => DataType::Int8,
            (0..=8, true) => DataType::UInt8,
            (9..=16, false) => DataType::Int16,
            (9..=16, true) => DataType::UInt16,
            (17..=32, false) => DataType::Int32,
            (17..=32, true) => DataType::UInt32,
            (_, false) => DataType::Int64,
            (_, true) => DataType::UInt64,
        },
        ColumnType::Float { bits } if *bits <= 32 => DataType::Float32,
        ColumnType::Float { .. } => DataType::Float64,
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } if (1..=38).contains(p) => {
            DataType::Decimal128(*p as u8, scale.unwrap_or(0).min(*p) as i8)
        }
        ColumnType::Bytes { .. } => DataType::Binary,
        ColumnType::Date => DataType::Date32,
        ColumnType::Time { zoned: false } => DataType::Time64(TimeUnit::Microsecond),
        ColumnType::Timestamp { zoned: false } => DataType::Timestamp(TimeUnit::Microsecond, None),
        ColumnType::Timestamp { zoned: true } => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        ColumnType::Uuid => DataType::FixedSizeBinary(16),
        _ => DataType::Utf8,
    }
}

/// The text of a value for a Utf8 column: text and JSON as they are, anything else canonical.
fn text_of(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::Null => Ok(None),
        Value::Text(s) | Value::Json(s) => Ok(Some(s.clone())),
        Value::Raw { text, .. } => Ok(Some(text.clone())),
        other => canonical::value_text(other).map_err(|e| e.to_string()),
    }
}

fn mismatch(v: &Value, ty: &DataType) -> String {
    format!("a {} value cannot be written as Parquet {ty}", v.kind())
}

fn int(v: &Value) -> Result<Option<i128>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Int(i) => Some(i128::from(*i)),
        Value::UInt(u) => Some(i128::from(*u)),
        Value::Bool(b) => Some(i128::from(*b)),
        Value::Text(t) | Value::Raw { text: t, .. } => Some(
            t.trim()
                .parse::<i128>()
                .map_err(|_| format!("{t:?} is not an integer"))?,
        ),
        other => return Err(format!("a {} value is not an integer", other.kind())),
    })
}

/// `v` as an integer of the column's width, if it fits.
fn int_of<T: TryFrom<i128>>(v: &Value) -> Result<Option<T>, String> {
    int(v)?
        .map(|i| T::try_from(i).map_err(|_| format!("{i} is out of the column's range")))
        .transpose()
}

fn float(v: &Value) -> Result<Option<f64>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Float64(f) => Some(*f),
        Value::Float32(f) => Some(f64::from(*f)),
        Value::Int(i) if i.unsigned_abs() <= 1 << 53 => Some(*i as f64),
        Value::Text(t) | Value::Raw { text: t, .. } => Some(
            t.trim()
                .parse::<f64>()
                .map_err(|_| format!("{t:?} is not a number"))?,
        ),
        other => return Err(format!("a {} value is not a float exactly", other.kind())),
    })
}

/// `d` as the unscaled integer of a Decimal128 with `scale`, if it fits `precision` exactly.
fn decimal128(d: &Decimal, precision: u8, scale: i8) -> Result<i128, String> {
    let Decimal::Finite {
        negative,
        digits,
        scale: s,
    } = d.normalized()
    else {
        return Err(format!("{d} has no Parquet decimal"));
    };
    let target = u32::try_from(scale).unwrap_or(0);
    if s > target {
        return Err(format!(
            "{d} has more than {target} decimal places: it would be rounded"
        ));
    }
    let mut m: i128 = digits
        .parse()
        .map_err(|_| format!("{d} has more than 38 digits"))?;
    for _ in s..target {
        m = m
            .checked_mul(10)
            .ok_or_else(|| format!("{d} has more than 38 digits"))?;
    }
    if m.unsigned_abs() >= 10u128.pow(u32::from(precision)) {
        return Err(format!("{d} has more than {precision} digits"));
    }
    Ok(if negative { -m } else { m })
}

fn parse_decimal(text: &str) -> Result<Decimal, String> {
    text.parse::<Decimal>().map_err(|e| e.to_string())
}

fn date(v: &Value) -> Result<Option<i32>, String> {
    let d = match v {
        Value::Null => return Ok(None),
        Value::Date(d) => *d,
        Value::Text(t) | Value::Raw { text: t, .. } => {
            t.parse::<Date>().map_err(|e| format!("{t:?}: {e}"))?
        }
        other => return Err(format!("a {} value is not a date", other.kind())),
    };
    match d {
        Date::Days(days) => days
            .checked_add(DAYS_1970_TO_2000)
            .map(Some)
            .ok_or_else(|| format!("{d} is out of Parquet's date range")),
        _ => Err(format!("{d}: Parquet has no infinite dates")),
    }
}

fn time(v: &Value) -> Result<Option<i64>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Time(t) => Some(t.micros()),
        Value::Text(t) | Value::Raw { text: t, .. } => Some(
            t.parse::<Time>()
                .map_err(|e| format!("{t:?}: {e}"))?
                .micros(),
        ),
        other => return Err(format!("a {} value is not a time", other.kind())),
    })
}

fn timestamp(v: &Value, zoned: bool) -> Result<Option<i64>, String> {
    let ts = match v {
        Value::Null => return Ok(None),
        Value::Timestamp(t) | Value::TimestampTz(t) => *t,
        Value::Text(t) | Value::Raw { text: t, .. } => {
            Timestamp::parse(t, zoned).map_err(|e| format!("{t:?}: {e}"))?
        }
        other => return Err(format!("a {} value is not a timestamp", other.kind())),
    };
    ts.unix_micros()
        .map(Some)
        .ok_or_else(|| format!("{}: Parquet has no infinite timestamps", ts.display(zoned)))
}

fn uuid(v: &Value) -> Result<Option<[u8; 16]>, String> {
    Ok(match v {
        Value::Null => None,
        Value::Uuid(u) => Some(*u),
        Value::Bytes(b) if b.len() == 16 => {
            let mut u = [0u8; 16];
            u.copy_from_slice(b);
            Some(u)
        }
        Value::Text(t) | Value::Raw { text: t, .. } => {
            let hex: String = t.chars().filter(|c| *c != '-').collect();
            if hex.len() != 32 {
                return Err(format!("{t:?} is not a UUID"));
            }
            let mut u = [0u8; 16];
            for (i, b) in u.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| format!("{t:?} is not a UUID"))?;
            }
            Some(u)
        }
        other => return Err(format!("a {} value is not a UUID", other.kind())),
    })
}

/// `values` (one column of many rows) as an Arrow array of `ty`. `Err` names what is wrong and
/// the index of the row it is in.
pub fn array(ty: &DataType, values: &[&Value]) -> Result<ArrayRef, (usize, String)> {
    // The first value that fails, with its row.
    fn each<T>(
        values: &[&Value],
        f: impl Fn(&Value) -> Result<Option<T>, String>,
    ) -> Result<Vec<Option<T>>, (usize, String)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| f(v).map_err(|e| (i, e)))
            .collect()
    }
    let whole = |r: Result<ArrayRef, String>| r.map_err(|e| (0, e));
    Ok(match ty {
        DataType::Boolean => Arc::new(BooleanArray::from(each(values, |v| match v {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::Int(0) => Ok(Some(false)),
            Value::Int(1) => Ok(Some(true)),
            other => Err(mismatch(other, ty)),
        })?)),
        DataType::Int8 => Arc::new(Int8Array::from(each(values, int_of::<i8>)?)),
        DataType::Int16 => Arc::new(Int16Array::from(each(values, int_of::<i16>)?)),
        DataType::Int32 => Arc::new(Int32Array::from(each(values, int_of::<i32>)?)),
        DataType::Int64 => Arc::new(Int64Array::from(each(values, int_of::<i64>)?)),
        DataType::UInt8 => Arc::new(UInt8Array::from(each(values, int_of::<u8>)?)),
        DataType::UInt16 => Arc::new(UInt16Array::from(each(values, int_of::<u16>)?)),
        DataType::UInt32 => Arc::new(UInt32Array::from(each(values, int_of::<u32>)?)),
        DataType::UInt64 => Arc::new(UInt64Array::from(each(values, int_of::<u64>)?)),
        DataType::Float32 => Arc::new(Float32Array::from(each(values, |v| match v {
            Value::Float32(f) => Ok(Some(*f)),
            other => float(other).and_then(|f| match f {
                Some(f) if f.is_finite() && f64::from(f as f32) != f => {
                    Err(format!("{f} is not exactly a 32-bit float"))
                }
                f => Ok(f.map(|f| f as f32)),
            }),
        })?)),
        DataType::Float64 => Arc::new(Float64Array::from(each(values, float)?)),
        DataType::Decimal128(p, s) => {
            let (p, s) = (*p, *s);
            let v = each(values, |v| match v {
                Value::Null => Ok(None),
                Value::Decimal(d) => decimal128(d, p, s).map(Some),
                Value::Int(i) => decimal128(&parse_decimal(&i.to_string())?, p, s).map(Some),
                Value::Text(t) | Value::Raw { text: t, .. } => {
                    decimal128(&parse_decimal(t)?, p, s).map(Some)
                }
                other => Err(mismatch(other, ty)),
            })?;
            whole(
                Decimal128Array::from(v)
                    .with_precision_and_scale(p, s)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| e.to_string()),
            )?
        }
        DataType::Binary => {
            let v = each(values, |v| match v {
                Value::Null => Ok(None),
                Value::Bytes(b) => Ok(Some(b.clone())),
                other => Err(mismatch(other, ty)),
            })?;
            Arc::new(BinaryArray::from_iter(v))
        }
        DataType::Date32 => Arc::new(Date32Array::from(each(values, date)?)),
        DataType::Time64(_) => Arc::new(Time64MicrosecondArray::from(each(values, time)?)),
        DataType::Timestamp(_, zone) => {
            let zoned = zone.is_some();
            let a = TimestampMicrosecondArray::from(each(values, |v| timestamp(v, zoned))?);
            match zone {
                Some(z) => Arc::new(a.with_timezone(z.clone())),
                None => Arc::new(a),
            }
        }
        DataType::FixedSizeBinary(16) => {
            let v = each(values, uuid)?;
            whole(
                FixedSizeBinaryArray::try_from_sparse_iter_with_size(v.into_iter(), 16)
                    .map(|a| Arc::new(a) as ArrayRef)
                    .map_err(|e| e.to_string()),
            )?
        }
        _ => Arc::new(StringArray::from(each(values, text_of)?)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Array;

    #[test]
    fn decimals_are_exact_or_refused() {
        let d = |t: &str| t.parse::<Decimal>().unwrap();
        assert_eq!(decimal128(&d("12.5"), 6, 2).unwrap(), 1250);
        assert_eq!(decimal128(&d("-0.01"), 6, 2).unwrap(), -1);
        assert_eq!(decimal128(&d("12.500"), 6, 2).unwrap(), 1250);
        assert!(decimal128(&d("12.345"), 6, 2)
            .unwrap_err()
            .contains("rounded"));
        assert!(decimal128(&d("12345.6"), 6, 2)
            .unwrap_err()
            .contains("6 digits"));
        assert!(decimal128(&d("NaN"), 6, 2).is_err());
    }

    #[test]
    fn dates_and_timestamps_count_from_1970() {
        let a = array(
            &DataType::Date32,
            &[&Value::Raw {
                type_name: "date".into(),
                text: "1970-01-02".into(),
            }],
        )
        .unwrap();
        let a = a.as_any().downcast_ref::<Date32Array>().unwrap();
        assert_eq!(a.value(0), 1);
        let t = Value::Raw {
            type_name: "timestamptz".into(),
            text: "1970-01-01 00:00:01.5+01".into(),
        };
        let ty = data_type(&ColumnType::Timestamp { zoned: true });
        let a = array(&ty, &[&t, &Value::Null]).unwrap();
        let a = a
            .as_any()
            .downcast_ref::<TimestampMicrosecondArray>()
            .unwrap();
        assert_eq!(a.value(0), 1_500_000 - 3_600_000_000);
        assert!(a.is_null(1));
        let inf = Value::Raw {
            type_name: "date".into(),
            text: "infinity".into(),
        };
        let (row, e) = array(&DataType::Date32, &[&Value::Null, &inf]).unwrap_err();
        assert_eq!(row, 1);
        assert!(e.contains("infinite"), "{e}");
    }

    #[test]
    fn integers_out_of_range_name_the_row() {
        let (row, e) = array(&DataType::Int8, &[&Value::Int(1), &Value::Int(300)]).unwrap_err();
        assert_eq!(row, 1);
        assert!(e.contains("300"), "{e}");
    }

    #[test]
    fn uuids_are_16_bytes_and_other_types_their_text() {
        let u = Value::Raw {
            type_name: "uuid".into(),
            text: "00112233-4455-6677-8899-aabbccddeeff".into(),
        };
        let a = array(&DataType::FixedSizeBinary(16), &[&u]).unwrap();
        let a = a.as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
        assert_eq!(a.value(0)[15], 0xff);
        let j = Value::Json("{\"b\": 1}".into());
        let a = array(&DataType::Utf8, &[&j]).unwrap();
        assert_eq!(
            a.as_any().downcast_ref::<StringArray>().unwrap().value(0),
            "{\"b\": 1}"
        );
    }
}
