//! MySQL values → cutover's [`Value`], exactly: what the binary protocol (prepared statements),
//! the text protocol and the binlog (after [`crate::binlog`] has put its raw forms into the
//! driver's) give for a column, decoded by the column's neutral type. Decimals go from their
//! text to [`Decimal`] (never through `f64`), `BIGINT UNSIGNED` above `i64::MAX` becomes
//! [`Value::UInt`], zero dates are refused or become NULL as the endpoint says, text that is not
//! UTF-8 is refused, never replaced.

use cutover_model::{Column, ColumnType, Date, Decimal, Time, Timestamp, Value};
use mysql_async::Value as My;

use crate::endpoint::ZeroDate;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// Why a value could not be decoded. It names neither table nor key: the caller adds them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("holds a zero date ({0}), which no other engine can hold; fix the rows, or add ?zero-date=null to the source URL to carry zero dates as NULL")]
    ZeroDate(String),
    #[error("holds {0}, which is neither 0 nor 1 in a tinyint(1) column taken for a boolean; add ?tinyint1=int to the source URL to carry tinyint(1) columns as integers")]
    NotBool(String),
    #[error("holds the time {0}, outside 00:00:00–24:00:00, which other engines' time of day cannot hold; change the column to another type (or the value) on the source")]
    TimeOutOfRange(String),
    #[error("holds text that is not valid UTF-8 (cutover never replaces characters); convert the column to utf8mb4 on the source")]
    NotUtf8,
    #[error("cannot be read as {expected}: got {got}")]
    Unexpected { expected: String, got: String },
}

impl DecodeError {
    /// The portable kind of this error.
    pub fn kind(&self) -> cutover_connector::ErrorKind {
        use cutover_connector::ErrorKind;
        match self {
            DecodeError::ZeroDate(_) | DecodeError::NotBool(_) | DecodeError::TimeOutOfRange(_) => {
                ErrorKind::LossyConversion
            }
            DecodeError::NotUtf8 => ErrorKind::UnsupportedType,
            DecodeError::Unexpected { .. } => ErrorKind::Database,
        }
    }
}

fn unexpected(col: &Column, v: &My) -> DecodeError {
    let got = match v {
        My::NULL => "NULL".to_owned(),
        My::Bytes(b) => format!("{} bytes", b.len()),
        My::Int(_) => "an integer".to_owned(),
        My::UInt(_) => "an unsigned integer".to_owned(),
        My::Float(_) => "a float".to_owned(),
        My::Double(_) => "a double".to_owned(),
        My::Date(..) => "a date".to_owned(),
        My::Time(..) => "a time".to_owned(),
    };
    DecodeError::Unexpected {
        expected: col.declared_type.clone(),
        got,
    }
}

fn text(b: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8)
}

/// The value of `v` in a column of type `col`, exactly.
pub fn decode(v: &My, col: &Column, zero_date: ZeroDate) -> Result<Value, DecodeError> {
    if let My::NULL = v {
        return Ok(Value::Null);
    }
    let bad = || unexpected(col, v);
    match &col.ty {
        ColumnType::Bool => {
            let n = integer(v).ok_or_else(bad)?;
            match n {
                0 => Ok(Value::Bool(false)),
                1 => Ok(Value::Bool(true)),
                other => Err(DecodeError::NotBool(other.to_string())),
            }
        }
        ColumnType::Int { bits, unsigned } => {
            let n = integer(v).ok_or_else(bad)?;
            let n = if *unsigned && n < 0 {
                // The binlog without signedness metadata: the same bits, unsigned.
                if *bits >= 64 {
                    n as u64 as i128
                } else {
                    n + (1i128 << bits)
                }
            } else {
                n
            };
            if let Ok(i) = i64::try_from(n) {
                Ok(Value::Int(i))
            } else {
                u64::try_from(n).map(Value::UInt).map_err(|_| bad())
            }
        }
        ColumnType::Float { bits: 32 } => match v {
            My::Float(f) => Ok(Value::Float32(*f)),
            My::Double(d) => Ok(Value::Float32(*d as f32)),
            My::Bytes(b) => text(b)?.parse().map(Value::Float32).map_err(|_| bad()),
            _ => Err(bad()),
        },
        ColumnType::Float { .. } => match v {
            My::Double(d) => Ok(Value::Float64(*d)),
            My::Float(f) => Ok(Value::Float64(f64::from(*f))),
            My::Bytes(b) => text(b)?.parse().map(Value::Float64).map_err(|_| bad()),
            _ => Err(bad()),
        },
        ColumnType::Decimal { .. } => match v {
            My::Bytes(b) => text(b)?
                .parse::<Decimal>()
                .map(Value::Decimal)
                .map_err(|_| bad()),
            My::Int(i) => i.to_string().parse().map(Value::Decimal).map_err(|_| bad()),
            My::UInt(u) => u.to_string().parse().map(Value::Decimal).map_err(|_| bad()),
            _ => Err(bad()),
        },
        ColumnType::Text { .. } => match v {
            My::Bytes(b) => Ok(Value::Text(text(b)?.to_owned())),
            _ => Err(bad()),
        },
        ColumnType::Json { .. } => match v {
            My::Bytes(b) => Ok(Value::Json(text(b)?.to_owned())),
            _ => Err(bad()),
        },
        ColumnType::Bytes { .. } => match v {
            My::Bytes(b) => Ok(Value::Bytes(b.clone())),
            _ => Err(bad()),
        },
        ColumnType::Uuid => match v {
            My::Bytes(b) if b.len() == 16 => {
                let mut u = [0u8; 16];
                u.copy_from_slice(b);
                Ok(Value::Uuid(u))
            }
            My::Bytes(b) => parse_uuid(text(b)?).map(Value::Uuid).ok_or_else(bad),
            _ => Err(bad()),
        },
        ColumnType::Date => {
            let (y, m, d, _) = date_time(v).ok_or_else(bad)?;
            match Date::from_ymd(i32::from(y), u32::from(m), u32::from(d)) {
                Some(date) => Ok(Value::Date(date)),
                None if y == 0 || m == 0 || d == 0 => {
                    zero(zero_date, format!("{y:04}-{m:02}-{d:02}"))
                }
                None => Err(bad()),
            }
        }
        ColumnType::Timestamp { zoned } => {
            let (y, m, d, micros) = date_time(v).ok_or_else(bad)?;
            let Some(Date::Days(days)) = Date::from_ymd(i32::from(y), u32::from(m), u32::from(d))
            else {
                if y == 0 || m == 0 || d == 0 {
                    return zero(zero_date, format!("{y:04}-{m:02}-{d:02} 00:00:00"));
                }
                return Err(bad());
            };
            let ts = i64::from(days)
                .checked_mul(MICROS_PER_DAY)
                .and_then(|d| d.checked_add(micros))
                .map(Timestamp::Micros)
                .ok_or_else(bad)?;
            Ok(if *zoned {
                Value::TimestampTz(ts)
            } else {
                Value::Timestamp(ts)
            })
        }
        ColumnType::Time { .. } => {
            let micros = time(v).ok_or_else(bad)?;
            Time::from_micros(micros)
                .map(Value::Time)
                .ok_or_else(|| DecodeError::TimeOutOfRange(time_text(micros)))
        }
        ColumnType::Other { name } if name.starts_with("bit") => match v {
            My::Bytes(b) => Ok(Value::Raw {
                type_name: col.declared_type.clone(),
                text: bit_text(b, bit_width(&col.declared_type)),
            }),
            My::Int(_) | My::UInt(_) => {
                let n = integer(v).ok_or_else(bad)?;
                let bytes = (n as u64).to_be_bytes();
                Ok(Value::Raw {
                    type_name: col.declared_type.clone(),
                    text: bit_text(&bytes, bit_width(&col.declared_type)),
                })
            }
            _ => Err(bad()),
        },
        ColumnType::Other { .. } => match v {
            My::Bytes(b) => Ok(Value::Raw {
                type_name: col.declared_type.clone(),
                text: text(b)?.to_owned(),
            }),
            _ => Err(bad()),
        },
        ColumnType::Interval | ColumnType::Array(_) => Err(bad()),
    }
}

fn zero(zero_date: ZeroDate, shown: String) -> Result<Value, DecodeError> {
    match zero_date {
        ZeroDate::Null => Ok(Value::Null),
        ZeroDate::Error => Err(DecodeError::ZeroDate(shown)),
    }
}

/// An integer from any of the driver's forms.
fn integer(v: &My) -> Option<i128> {
    match v {
        My::Int(i) => Some(i128::from(*i)),
        My::UInt(u) => Some(i128::from(*u)),
        My::Bytes(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// (year, month, day, microseconds of the day) of a date or datetime.
fn date_time(v: &My) -> Option<(u16, u8, u8, i64)> {
    match v {
        My::Date(y, m, d, h, mi, s, us) => Some((
            *y,
            *m,
            *d,
            ((i64::from(*h) * 60 + i64::from(*mi)) * 60 + i64::from(*s)) * 1_000_000
                + i64::from(*us),
        )),
        My::Bytes(b) => {
            let t = std::str::from_utf8(b).ok()?;
            let (date, clock) = match t.split_once([' ', 'T']) {
                Some((d, c)) => (d, Some(c)),
                None => (t, None),
            };
            let mut parts = date.splitn(3, '-');
            let y = parts.next()?.parse().ok()?;
            let m = parts.next()?.parse().ok()?;
            let d = parts.next()?.parse().ok()?;
            let micros = match clock {
                Some(c) => {
                    let us = parse_clock(c)?;
                    (0..MICROS_PER_DAY).contains(&us).then_some(us)?
                }
                None => 0,
            };
            Some((y, m, d, micros))
        }
        _ => None,
    }
}

/// Signed microseconds of a `TIME` value.
fn time(v: &My) -> Option<i64> {
    match v {
        My::Time(neg, days, h, m, s, us) => {
            let micros = (((i128::from(*days) * 24 + i128::from(*h)) * 60 + i128::from(*m)) * 60
                + i128::from(*s))
                * 1_000_000
                + i128::from(*us);
            i64::try_from(if *neg { -micros } else { micros }).ok()
        }
        My::Bytes(b) => {
            let t = std::str::from_utf8(b).ok()?;
            let (neg, t) = match t.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, t),
            };
            let micros = parse_clock(t)?;
            Some(if neg { -micros } else { micros })
        }
        _ => None,
    }
}

/// `H+:MM:SS[.ffffff]` → microseconds.
fn parse_clock(t: &str) -> Option<i64> {
    let mut parts = t.splitn(3, ':');
    let h: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let sec = parts.next()?;
    let (s, frac) = match sec.split_once('.') {
        Some((s, f)) => (s, f),
        None => (sec, ""),
    };
    let s: i64 = s.parse().ok()?;
    if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let us: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().ok()?
    };
    let total =
        ((i128::from(h) * 60 + i128::from(m)) * 60 + i128::from(s)) * 1_000_000 + i128::from(us);
    i64::try_from(total).ok()
}

fn time_text(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let a = micros.unsigned_abs();
    let secs = a / 1_000_000;
    format!(
        "{sign}{}:{:02}:{:02}.{:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        a % 1_000_000
    )
}

/// `n` of `bit(n)` (1 for a bare `bit`).
pub(crate) fn bit_width(declared: &str) -> usize {
    declared
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or(1)
}

/// The `width` lowest bits of big-endian `bytes` as `0`/`1` digits, most significant first
/// (PostgreSQL's bit string text).
pub(crate) fn bit_text(bytes: &[u8], width: usize) -> String {
    let total = bytes.len() * 8;
    (0..width)
        .map(|i| {
            // Bit i of the text, counted from the left, is bit (width-1-i) of the number.
            let from_right = width - 1 - i;
            if from_right >= total {
                return '0';
            }
            let byte = bytes[bytes.len() - 1 - from_right / 8];
            if byte >> (from_right % 8) & 1 == 1 {
                '1'
            } else {
                '0'
            }
        })
        .collect()
}

fn parse_uuid(t: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = t.bytes().filter(|b| *b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The labels of `enum('a','b')` or `set('a','b')`, in definition order.
pub(crate) fn labels(declared: &str) -> Vec<String> {
    let Some(open) = declared.find('(') else {
        return Vec::new();
    };
    let body = &declared[open + 1..];
    let mut out = Vec::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\'' {
            continue;
        }
        let mut label = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\'' if chars.peek() == Some(&'\'') => {
                    chars.next();
                    label.push('\'');
                }
                '\'' => break,
                '\\' => {
                    if let Some(n) = chars.next() {
                        label.push(n);
                    }
                }
                other => label.push(other),
            }
        }
        out.push(label);
    }
    out
}

/// A key value as a statement parameter of the binary protocol, for key-range conditions.
pub(crate) fn param(v: &Value) -> My {
    match v {
        Value::Null => My::NULL,
        Value::Bool(b) => My::Int(i64::from(*b)),
        Value::Int(i) => My::Int(*i),
        Value::UInt(u) => My::UInt(*u),
        Value::Float32(f) => My::Float(*f),
        Value::Float64(f) => My::Double(*f),
        Value::Decimal(d) => My::Bytes(d.to_string().into_bytes()),
        Value::Text(s) | Value::Json(s) => My::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => My::Bytes(b.clone()),
        Value::Uuid(u) => {
            let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
            My::Bytes(
                format!(
                    "{}-{}-{}-{}-{}",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                )
                .into_bytes(),
            )
        }
        Value::Date(d) => match d.ymd() {
            Some((y, m, d)) => My::Date(y.clamp(0, 9999) as u16, m as u8, d as u8, 0, 0, 0, 0),
            None => My::NULL,
        },
        Value::Timestamp(t) | Value::TimestampTz(t) => match t {
            Timestamp::Micros(us) => {
                let days = us.div_euclid(MICROS_PER_DAY);
                let rest = us.rem_euclid(MICROS_PER_DAY);
                match i32::try_from(days)
                    .ok()
                    .map(Date::Days)
                    .and_then(|d| d.ymd())
                {
                    Some((y, m, d)) => {
                        let secs = rest / 1_000_000;
                        My::Date(
                            y.clamp(0, 9999) as u16,
                            m as u8,
                            d as u8,
                            (secs / 3600) as u8,
                            (secs / 60 % 60) as u8,
                            (secs % 60) as u8,
                            (rest % 1_000_000) as u32,
                        )
                    }
                    None => My::NULL,
                }
            }
            _ => My::NULL,
        },
        Value::Time(t) => {
            let us = t.micros();
            let secs = us / 1_000_000;
            My::Time(
                false,
                (secs / 86_400) as u32,
                (secs / 3600 % 24) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                (us % 1_000_000) as u32,
            )
        }
        Value::Raw { type_name, text } if type_name.starts_with("bit") => {
            let n = text
                .bytes()
                .fold(0u64, |acc, b| (acc << 1) | u64::from(b == b'1'));
            My::UInt(n)
        }
        Value::Raw { text, .. } => My::Bytes(text.as_bytes().to_vec()),
        other => My::Bytes(format!("{other:?}").into_bytes()),
    }
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
    fn values_decode_exactly_from_either_protocol() {
        let z = ZeroDate::Error;
        let u64c = col(
            ColumnType::Int {
                bits: 64,
                unsigned: true,
            },
            "bigint unsigned",
        );
        assert_eq!(
            decode(&My::UInt(u64::MAX), &u64c, z),
            Ok(Value::UInt(u64::MAX))
        );
        assert_eq!(decode(&My::Int(-1), &u64c, z), Ok(Value::UInt(u64::MAX)));
        assert_eq!(
            decode(&My::Bytes(b"18446744073709551615".to_vec()), &u64c, z),
            Ok(Value::UInt(u64::MAX))
        );
        let u8c = col(
            ColumnType::Int {
                bits: 8,
                unsigned: true,
            },
            "tinyint unsigned",
        );
        assert_eq!(decode(&My::Int(-1), &u8c, z), Ok(Value::Int(255)));
        let dec = col(
            ColumnType::Decimal {
                precision: Some(10),
                scale: Some(2),
            },
            "decimal(10,2)",
        );
        assert_eq!(
            decode(&My::Bytes(b"-1.50".to_vec()), &dec, z),
            Ok(Value::Decimal("-1.50".parse().unwrap()))
        );
        let b = col(ColumnType::Bool, "tinyint(1)");
        assert_eq!(decode(&My::Int(1), &b, z), Ok(Value::Bool(true)));
        assert!(matches!(
            decode(&My::Int(2), &b, z),
            Err(DecodeError::NotBool(_))
        ));
        let d = col(ColumnType::Date, "date");
        assert!(matches!(
            decode(&My::Date(0, 0, 0, 0, 0, 0, 0), &d, z),
            Err(DecodeError::ZeroDate(_))
        ));
        assert_eq!(
            decode(&My::Date(0, 0, 0, 0, 0, 0, 0), &d, ZeroDate::Null),
            Ok(Value::Null)
        );
        let ts = col(ColumnType::Timestamp { zoned: false }, "datetime(6)");
        let a = decode(&My::Date(2024, 2, 29, 23, 59, 58, 123_456), &ts, z).unwrap();
        let b = decode(&My::Bytes(b"2024-02-29 23:59:58.123456".to_vec()), &ts, z).unwrap();
        assert_eq!(a, b);
        let t = col(ColumnType::Time { zoned: false }, "time(6)");
        assert!(matches!(
            decode(&My::Time(true, 0, 1, 0, 0, 0), &t, z),
            Err(DecodeError::TimeOutOfRange(_))
        ));
        assert_eq!(
            decode(&My::Bytes(b"24:00:00".to_vec()), &t, z),
            Ok(Value::Time(Time::from_micros(MICROS_PER_DAY).unwrap()))
        );
        let txt = col(ColumnType::Text { max_len: None }, "text");
        assert_eq!(
            decode(&My::Bytes(vec![0xff]), &txt, z),
            Err(DecodeError::NotUtf8)
        );
        let bit = col(ColumnType::Other { name: "bit".into() }, "bit(10)");
        assert_eq!(
            decode(&My::Bytes(vec![0x02, 0x05]), &bit, z),
            Ok(Value::Raw {
                type_name: "bit(10)".into(),
                text: "1000000101".into()
            })
        );
        assert_eq!(
            param(&Value::Raw {
                type_name: "bit(10)".into(),
                text: "1000000101".into()
            }),
            My::UInt(0x205)
        );
        assert_eq!(
            labels("enum('a','it''s','c\\\\d')"),
            vec!["a", "it's", "c\\d"]
        );
        assert_eq!(
            parse_uuid("123e4567-e89b-12d3-a456-426614174000").map(|u| u[0]),
            Some(0x12)
        );
    }
}
