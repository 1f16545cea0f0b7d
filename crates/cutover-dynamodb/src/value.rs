//! Values ↔ DynamoDB attributes (the type map of the README), and back to the canonical text
//! verify compares. Pure: no I/O.
//!
//! | value | attribute |
//! |---|---|
//! | NULL | `NULL` |
//! | booleans | `BOOL` |
//! | integers, decimals, floats | `N`, exact: at most 38 significant digits, a magnitude in DynamoDB's range; NaN, ±Infinity and floats' `-0` are refused ([`ValueError`]) |
//! | text | `S` |
//! | bytes | `B` |
//! | JSON | `S`: the document's text exactly as the source wrote it |
//! | everything else (UUID, dates, times, intervals, arrays, engine types) | `S`: the value's canonical text (`docs/CANONICAL.md`) |
//!
//! Key attributes: numbers as `N`, bytes as `B`, everything else as `S` of its canonical text.

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use cutover_connector::canonical::{self, CanonicalError};
use cutover_model::{ColumnType, Decimal, Value};

/// DynamoDB numbers: up to 38 significant digits.
pub const MAX_DIGITS: usize = 38;
/// The largest decimal exponent of a number's first significant digit (9.99…E+125).
pub const MAX_EXPONENT: i64 = 125;
/// The smallest (1E-130).
pub const MIN_EXPONENT: i64 = -130;

/// Why a value has no exact attribute.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    #[error("{0} is not a number DynamoDB can hold (it has no NaN, Infinity or -0)")]
    NotFinite(String),
    #[error("{value} has {digits} significant digits; DynamoDB numbers hold at most 38")]
    TooPrecise { value: String, digits: usize },
    #[error("{0} is outside DynamoDB's number range (1E-130 to 9.99…E+125 in magnitude)")]
    OutOfRange(String),
    #[error("{0}")]
    Canonical(#[from] CanonicalError),
    #[error("an empty {0} cannot be a DynamoDB key attribute")]
    EmptyKey(&'static str),
}

/// A number split into sign, significant digits (no leading or trailing zeros; empty for zero)
/// and the decimal exponent of the first of them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Number {
    negative: bool,
    digits: String,
    exponent: i64,
}

/// Reads plain (`-12.50`) or scientific (`1.5e-07`, `1E+100`) decimal text.
fn parse_number(text: &str) -> Option<Number> {
    let t = text.trim();
    let (negative, body) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i64>().ok()?),
        None => (body, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all: String = format!("{int}{frac}");
    let lead = all.bytes().take_while(|&b| b == b'0').count();
    let digits = all[lead..].trim_end_matches('0').to_owned();
    if digits.is_empty() {
        return Some(Number {
            negative: false,
            digits,
            exponent: 0,
        });
    }
    // The first significant digit's place: int.len() - 1 - lead, shifted by the exponent.
    let exponent = i64::try_from(int.len()).ok()? - 1 - i64::try_from(lead).ok()? + exp;
    Some(Number {
        negative,
        digits,
        exponent,
    })
}

impl Number {
    /// Plain decimal text, no exponent, no trailing fractional zeros.
    fn plain(&self) -> String {
        if self.digits.is_empty() {
            return "0".to_owned();
        }
        let mut s = String::new();
        if self.negative {
            s.push('-');
        }
        let n = self.digits.len() as i64;
        if self.exponent < 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-self.exponent - 1) as usize));
            s.push_str(&self.digits);
        } else if self.exponent + 1 >= n {
            s.push_str(&self.digits);
            s.extend(std::iter::repeat_n('0', (self.exponent + 1 - n) as usize));
        } else {
            let (a, b) = self.digits.split_at((self.exponent + 1) as usize);
            s.push_str(a);
            s.push('.');
            s.push_str(b);
        }
        s
    }

    /// What DynamoDB is sent: plain text for modest exponents, `d.dddE±x` otherwise.
    fn wire(&self) -> String {
        if self.exponent.abs() <= 40 {
            return self.plain();
        }
        let (first, rest) = self.digits.split_at(1);
        let sign = if self.negative { "-" } else { "" };
        let dot = if rest.is_empty() { "" } else { "." };
        format!("{sign}{first}{dot}{rest}E{:+}", self.exponent)
    }
}

/// A number's text as DynamoDB's `N`, or why it cannot be one exactly.
pub fn number(text: &str) -> Result<String, ValueError> {
    let n = parse_number(text).ok_or_else(|| ValueError::NotFinite(text.to_owned()))?;
    if n.digits.len() > MAX_DIGITS {
        return Err(ValueError::TooPrecise {
            value: short(text),
            digits: n.digits.len(),
        });
    }
    if !n.digits.is_empty() && !(MIN_EXPONENT..=MAX_EXPONENT).contains(&n.exponent) {
        return Err(ValueError::OutOfRange(short(text)));
    }
    Ok(n.wire())
}

fn short(text: &str) -> String {
    if text.len() > 60 {
        format!("{}… ({} characters)", &text[..40], text.len())
    } else {
        text.to_owned()
    }
}

fn float_number(f: f64, text: String) -> Result<AttributeValue, ValueError> {
    if !f.is_finite() || (f == 0.0 && f.is_sign_negative()) {
        return Err(ValueError::NotFinite(text));
    }
    Ok(AttributeValue::N(number(&text)?))
}

/// The attribute of a value in a non-key column.
pub fn attribute(v: &Value) -> Result<AttributeValue, ValueError> {
    Ok(match v {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Int(i) => AttributeValue::N(i.to_string()),
        Value::UInt(u) => AttributeValue::N(u.to_string()),
        Value::Float64(f) => float_number(*f, canonical::float64_text(*f))?,
        Value::Float32(f) => float_number(f64::from(*f), canonical::float32_text(*f))?,
        Value::Decimal(d) => match d {
            Decimal::Finite { .. } => AttributeValue::N(number(&d.to_string())?),
            other => return Err(ValueError::NotFinite(other.to_string())),
        },
        Value::Text(s) => AttributeValue::S(s.clone()),
        Value::Bytes(b) => AttributeValue::B(Blob::new(b.clone())),
        Value::Json(j) => AttributeValue::S(j.clone()),
        other => AttributeValue::S(canonical::value_text(other)?.unwrap_or_default()),
    })
}

/// The DynamoDB attribute type (`N`, `S`, `B`) a key column of this type is stored as.
pub fn key_type(ty: &ColumnType) -> &'static str {
    match ty {
        ColumnType::Int { .. } | ColumnType::Decimal { .. } | ColumnType::Float { .. } => "N",
        ColumnType::Bytes { .. } => "B",
        _ => "S",
    }
}

/// The attribute of a key value.
pub fn key_attribute(v: &Value) -> Result<AttributeValue, ValueError> {
    Ok(match v {
        Value::Int(_)
        | Value::UInt(_)
        | Value::Float32(_)
        | Value::Float64(_)
        | Value::Decimal(_) => attribute(v)?,
        Value::Bytes(b) if b.is_empty() => return Err(ValueError::EmptyKey("byte string")),
        Value::Bytes(_) => attribute(v)?,
        Value::Text(s) if s.is_empty() => return Err(ValueError::EmptyKey("text")),
        Value::Json(j) => AttributeValue::S(j.clone()),
        other => match canonical::value_text(other)? {
            Some(t) if !t.is_empty() => AttributeValue::S(t),
            _ => return Err(ValueError::EmptyKey(other.kind())),
        },
    })
}

/// The canonical text (`docs/CANONICAL.md`) of an attribute read back from a column of type
/// `ty`; `None` for NULL (or a missing attribute).
pub fn canonical_text(
    ty: &ColumnType,
    a: Option<&AttributeValue>,
) -> Result<Option<String>, CanonicalError> {
    let Some(a) = a else { return Ok(None) };
    Ok(match a {
        AttributeValue::Null(_) => None,
        AttributeValue::Bool(b) => Some(if *b { "t" } else { "f" }.to_owned()),
        AttributeValue::B(b) => Some(canonical::bytes_text(b.as_ref())),
        AttributeValue::N(n) => Some(number_text(ty, n)),
        AttributeValue::S(s) => match ty {
            ColumnType::Json { .. } => canonical::json_text(s)?,
            _ => Some(s.clone()),
        },
        // Not written by cutover (an item edited by hand): shown as the SDK prints it, which
        // never equals a value's canonical text.
        other => Some(format!("{other:?}")),
    })
}

/// An `N`'s canonical text for a column of type `ty`.
fn number_text(ty: &ColumnType, n: &str) -> String {
    match ty {
        ColumnType::Float { bits: 32 } => match n.trim().parse::<f32>() {
            Ok(f) => canonical::float32_text(f),
            Err(_) => n.to_owned(),
        },
        ColumnType::Float { .. } => match n.trim().parse::<f64>() {
            Ok(f) => canonical::float64_text(f),
            Err(_) => n.to_owned(),
        },
        _ => parse_number(n).map_or_else(|| n.to_owned(), |x| x.plain()),
    }
}

/// The value of an attribute read back from a column of type `ty` (for reads through cutover
/// and repairs on the other side): typed where the type map is reversible, the canonical text
/// as the engine's own text (`Raw`) otherwise.
pub fn value(
    ty: &ColumnType,
    declared: &str,
    a: Option<&AttributeValue>,
) -> Result<Value, CanonicalError> {
    let Some(a) = a else {
        return Ok(Value::Null);
    };
    Ok(match (a, ty) {
        (AttributeValue::Null(_), _) => Value::Null,
        (AttributeValue::Bool(b), _) => Value::Bool(*b),
        (AttributeValue::B(b), _) => Value::Bytes(b.as_ref().to_vec()),
        (AttributeValue::N(n), ColumnType::Int { .. }) => match n.trim().parse::<i64>() {
            Ok(i) => Value::Int(i),
            Err(_) => match n.trim().parse::<u64>() {
                Ok(u) => Value::UInt(u),
                Err(_) => decimal(n),
            },
        },
        (AttributeValue::N(n), ColumnType::Float { bits: 32 }) => match n.trim().parse() {
            Ok(f) => Value::Float32(f),
            Err(_) => decimal(n),
        },
        (AttributeValue::N(n), ColumnType::Float { .. }) => match n.trim().parse() {
            Ok(f) => Value::Float64(f),
            Err(_) => decimal(n),
        },
        (AttributeValue::N(n), _) => decimal(n),
        (AttributeValue::S(s), ColumnType::Text { .. } | ColumnType::Other { .. }) => {
            Value::Text(s.clone())
        }
        (AttributeValue::S(s), ColumnType::Json { .. }) => Value::Json(s.clone()),
        (AttributeValue::S(s), ColumnType::Bool) if s == "t" || s == "f" => Value::Bool(s == "t"),
        (AttributeValue::S(s), ColumnType::Uuid) => match parse_uuid(s) {
            Some(u) => Value::Uuid(u),
            None => Value::Text(s.clone()),
        },
        (AttributeValue::S(s), _) => Value::Raw {
            type_name: declared.to_owned(),
            text: s.clone(),
        },
        (other, _) => Value::Text(format!("{other:?}")),
    })
}

fn decimal(n: &str) -> Value {
    let plain = parse_number(n).map_or_else(|| n.to_owned(), |x| x.plain());
    match plain.parse::<Decimal>() {
        Ok(d) => Value::Decimal(d),
        Err(_) => Value::Text(n.to_owned()),
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = s.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let t = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(t, 16).ok()?;
    }
    Some(out)
}

/// The size DynamoDB counts for an attribute (its name and value), in bytes: strings and
/// binaries by length, numbers about one byte per two significant digits plus one, booleans
/// and NULL one byte, lists and maps three bytes plus their elements.
pub fn attribute_size(name: &str, a: &AttributeValue) -> usize {
    name.len() + value_size(a)
}

fn value_size(a: &AttributeValue) -> usize {
    match a {
        AttributeValue::S(s) => s.len(),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::N(n) => n.len().div_ceil(2) + 1,
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::L(v) => 3 + v.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Array, Date, Interval, Time, TimeTz};

    fn round_trip(ty: ColumnType, v: Value) {
        let a = attribute(&v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        let want = canonical::value_text(&v).unwrap();
        let got = canonical_text(&ty, Some(&a)).unwrap();
        assert_eq!(got, want, "{v:?} stored as {a:?}");
        let back = value(&ty, "t", Some(&a)).unwrap();
        assert_eq!(
            canonical::value_text(&back).unwrap(),
            want,
            "{v:?} read back as {back:?}"
        );
    }

    #[test]
    fn every_neutral_type_round_trips_to_its_canonical_text() {
        let int = ColumnType::Int {
            bits: 64,
            unsigned: false,
        };
        round_trip(int.clone(), Value::Int(i64::MIN));
        round_trip(int.clone(), Value::Int(0));
        round_trip(
            ColumnType::Int {
                bits: 64,
                unsigned: true,
            },
            Value::UInt(u64::MAX),
        );
        round_trip(ColumnType::Bool, Value::Bool(true));
        round_trip(ColumnType::Bool, Value::Bool(false));
        let dec = ColumnType::Decimal {
            precision: None,
            scale: None,
        };
        for d in [
            "0",
            "1.50",
            "-0.001",
            "12345678901234567890123456789012345678",
            "0.00000000000000000000000000000000000000000000001",
            "-98765432109876543210.123456789012345678",
            "100000000000000000000000000000000000000000000000000000000000",
        ] {
            round_trip(dec.clone(), Value::Decimal(d.parse().unwrap()));
        }
        let f64t = ColumnType::Float { bits: 64 };
        for f in [
            0.1,
            1e100,
            -1.5e-7,
            f64::MAX / 1e200,
            123_456_789.123,
            0.0,
            5e-130,
        ] {
            round_trip(f64t.clone(), Value::Float64(f));
        }
        round_trip(ColumnType::Float { bits: 32 }, Value::Float32(1.234_567e6));
        round_trip(ColumnType::Float { bits: 32 }, Value::Float32(0.1));
        round_trip(
            ColumnType::Text { max_len: None },
            Value::Text(String::new()),
        );
        round_trip(
            ColumnType::Text { max_len: None },
            Value::Text("a b \"c\" ☃".into()),
        );
        round_trip(ColumnType::Bytes { max_len: None }, Value::Bytes(vec![]));
        round_trip(
            ColumnType::Bytes { max_len: None },
            Value::Bytes(vec![0, 255, 7]),
        );
        round_trip(ColumnType::Uuid, Value::Uuid([0xab; 16]));
        round_trip(
            ColumnType::Date,
            Value::Date("2024-02-29".parse::<Date>().unwrap()),
        );
        round_trip(
            ColumnType::Time { zoned: false },
            Value::Time("23:59:59.5".parse::<Time>().unwrap()),
        );
        round_trip(
            ColumnType::Time { zoned: true },
            Value::TimeTz("12:00:00+05:30".parse::<TimeTz>().unwrap()),
        );
        let ts = Value::Raw {
            type_name: "timestamptz".into(),
            text: "2026-01-01 06:30:00.5+00".into(),
        };
        round_trip(ColumnType::Timestamp { zoned: true }, ts);
        round_trip(
            ColumnType::Interval,
            Value::Interval("P1Y2M3DT4H5M6.5S".parse::<Interval>().unwrap()),
        );
        round_trip(
            ColumnType::Json { binary: true },
            Value::Json(r#"{"b": 1, "a": [1.50, "x"]}"#.into()),
        );
        round_trip(
            ColumnType::Array(Box::new(ColumnType::Text { max_len: None })),
            Value::Array(Array::from_elements(vec![
                Value::Text("a b".into()),
                Value::Null,
            ])),
        );
        round_trip(
            ColumnType::Other {
                name: "point".into(),
            },
            Value::Raw {
                type_name: "point".into(),
                text: "(1,2)".into(),
            },
        );
        // NULL is a NULL attribute, and reads back as NULL.
        assert_eq!(attribute(&Value::Null).unwrap(), AttributeValue::Null(true));
        assert_eq!(
            canonical_text(&ColumnType::Bool, Some(&AttributeValue::Null(true))).unwrap(),
            None
        );
        assert_eq!(canonical_text(&ColumnType::Bool, None).unwrap(), None);
    }

    #[test]
    fn values_dynamodb_cannot_hold_are_refused() {
        for d in ["NaN", "Infinity", "-Infinity"] {
            let e = attribute(&Value::Decimal(d.parse().unwrap())).unwrap_err();
            assert!(matches!(e, ValueError::NotFinite(_)), "{d}: {e}");
        }
        for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.0] {
            assert!(matches!(
                attribute(&Value::Float64(f)),
                Err(ValueError::NotFinite(_))
            ));
        }
        let e = attribute(&Value::Decimal(
            "123456789012345678901234567890123456789".parse().unwrap(),
        ))
        .unwrap_err();
        assert_eq!(
            e,
            ValueError::TooPrecise {
                value: "123456789012345678901234567890123456789".into(),
                digits: 39
            }
        );
        assert!(matches!(
            attribute(&Value::Float64(1e200)),
            Err(ValueError::OutOfRange(_))
        ));
        assert!(matches!(
            attribute(&Value::Float64(1e-200)),
            Err(ValueError::OutOfRange(_))
        ));
        let mut big = "1".to_owned();
        big.extend(std::iter::repeat_n('0', 126));
        assert!(matches!(
            attribute(&Value::Decimal(big.parse().unwrap())),
            Err(ValueError::OutOfRange(_))
        ));
        assert!(matches!(
            key_attribute(&Value::Text(String::new())),
            Err(ValueError::EmptyKey(_))
        ));
    }

    #[test]
    fn numbers_go_to_the_wire_plain_or_scientific() {
        assert_eq!(number("1.50").unwrap(), "1.5");
        assert_eq!(number("-0.0").unwrap(), "0");
        assert_eq!(number("1e+100").unwrap(), "1E+100");
        assert_eq!(number("1.5e-07").unwrap(), "0.00000015");
        assert_eq!(number("-12.5E-60").unwrap(), "-1.25E-59");
        assert_eq!(
            parse_number("1.25E-59").unwrap().plain(),
            format!("0.{}125", "0".repeat(58))
        );
    }
}
