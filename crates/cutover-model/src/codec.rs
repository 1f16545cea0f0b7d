//! A compact, self-describing binary encoding of values and rows.
//!
//! Used wherever cutover stores values itself: chunk boundaries and keys in the control store,
//! spilled batches. `decode(encode(v)) == v` for every value (property-tested), and decoding
//! never panics on malformed bytes: it returns [`DecodeError`].

use crate::{Array, Date, Decimal, Interval, Time, TimeTz, Timestamp, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("encoded value ends early at byte {at}")]
    Truncated { at: usize },
    #[error("unknown value tag {tag} at byte {at}")]
    UnknownTag { tag: u8, at: usize },
    #[error("invalid {what} at byte {at}")]
    Invalid { what: &'static str, at: usize },
    #[error("arrays nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("{extra} bytes left over after the encoded value")]
    TrailingBytes { extra: usize },
}

const MAX_DEPTH: usize = 16;

mod tag {
    pub const NULL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    pub const INT: u8 = 3;
    pub const UINT: u8 = 4;
    pub const F32: u8 = 5;
    pub const F64: u8 = 6;
    pub const DECIMAL: u8 = 7;
    pub const TEXT: u8 = 8;
    pub const BYTES: u8 = 9;
    pub const DATE: u8 = 10;
    pub const TIME: u8 = 11;
    pub const TIMETZ: u8 = 12;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMPTZ: u8 = 14;
    pub const INTERVAL: u8 = 15;
    pub const UUID: u8 = 16;
    pub const JSON: u8 = 17;
    pub const ARRAY: u8 = 18;
    pub const RAW: u8 = 19;
}

/// Appends the encoding of `value` to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(tag::NULL),
        Value::Bool(false) => out.push(tag::FALSE),
        Value::Bool(true) => out.push(tag::TRUE),
        Value::Int(i) => {
            out.push(tag::INT);
            out.extend_from_slice(&i.to_le_bytes());
        }
        Value::UInt(u) => {
            out.push(tag::UINT);
            out.extend_from_slice(&u.to_le_bytes());
        }
        Value::Float32(f) => {
            out.push(tag::F32);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Float64(f) => {
            out.push(tag::F64);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        Value::Decimal(d) => {
            out.push(tag::DECIMAL);
            match d {
                Decimal::Finite {
                    negative,
                    digits,
                    scale,
                } => {
                    out.push(if *negative { 1 } else { 0 });
                    out.extend_from_slice(&scale.to_le_bytes());
                    put_bytes(out, digits.as_bytes());
                }
                Decimal::NaN => out.push(2),
                Decimal::Infinity => out.push(3),
                Decimal::NegInfinity => out.push(4),
            }
        }
        Value::Text(s) => {
            out.push(tag::TEXT);
            put_bytes(out, s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(tag::BYTES);
            put_bytes(out, b);
        }
        Value::Date(d) => {
            out.push(tag::DATE);
            match d {
                Date::NegInfinity => out.push(0),
                Date::Infinity => out.push(2),
                Date::Days(n) => {
                    out.push(1);
                    out.extend_from_slice(&n.to_le_bytes());
                }
            }
        }
        Value::Time(t) => {
            out.push(tag::TIME);
            out.extend_from_slice(&t.micros().to_le_bytes());
        }
        Value::TimeTz(t) => {
            out.push(tag::TIMETZ);
            out.extend_from_slice(&t.time.micros().to_le_bytes());
            out.extend_from_slice(&t.offset_seconds.to_le_bytes());
        }
        Value::Timestamp(t) => {
            out.push(tag::TIMESTAMP);
            put_timestamp(out, t);
        }
        Value::TimestampTz(t) => {
            out.push(tag::TIMESTAMPTZ);
            put_timestamp(out, t);
        }
        Value::Interval(i) => {
            out.push(tag::INTERVAL);
            out.extend_from_slice(&i.months.to_le_bytes());
            out.extend_from_slice(&i.days.to_le_bytes());
            out.extend_from_slice(&i.micros.to_le_bytes());
        }
        Value::Uuid(u) => {
            out.push(tag::UUID);
            out.extend_from_slice(u);
        }
        Value::Json(s) => {
            out.push(tag::JSON);
            put_bytes(out, s.as_bytes());
        }
        Value::Array(a) => {
            out.push(tag::ARRAY);
            put_len(out, a.dims.len());
            for (lower, len) in &a.dims {
                out.extend_from_slice(&lower.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            put_len(out, a.elements.len());
            for e in &a.elements {
                encode_value(e, out);
            }
        }
        Value::Raw { type_name, text } => {
            out.push(tag::RAW);
            put_bytes(out, type_name.as_bytes());
            put_bytes(out, text.as_bytes());
        }
    }
}

/// Encodes a row (or key) as a count followed by its values.
pub fn encode_row(row: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 * row.len() + 4);
    put_len(&mut out, row.len());
    for v in row {
        encode_value(v, &mut out);
    }
    out
}

/// Decodes one value that must fill `bytes` exactly.
pub fn decode_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let v = r.value(0)?;
    r.finish()?;
    Ok(v)
}

/// Decodes what [`encode_row`] wrote.
pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
    let n = r.len()?;
    let mut row = Vec::with_capacity(n.min(r.remaining()));
    for _ in 0..n {
        row.push(r.value(0)?);
    }
    r.finish()?;
    Ok(row)
}

fn put_len(out: &mut Vec<u8>, n: usize) {
    // Lengths above u32::MAX cannot occur in any engine's single value (PostgreSQL caps a
    // value at 1 GB); saturate rather than panic.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_len(out, b.len());
    out.extend_from_slice(b);
}

fn put_timestamp(out: &mut Vec<u8>, t: &Timestamp) {
    match t {
        Timestamp::NegInfinity => out.push(0),
        Timestamp::Infinity => out.push(2),
        Timestamp::Micros(m) => {
            out.push(1);
            out.extend_from_slice(&m.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { at: self.at });
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    fn len(&mut self) -> Result<usize, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?) as usize)
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        self.take(n)
    }
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let at = self.at;
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid { what, at })
    }
    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }

    fn timestamp(&mut self) -> Result<Timestamp, DecodeError> {
        let at = self.at;
        match self.u8()? {
            0 => Ok(Timestamp::NegInfinity),
            1 => Ok(Timestamp::Micros(self.i64()?)),
            2 => Ok(Timestamp::Infinity),
            _ => Err(DecodeError::Invalid {
                what: "timestamp",
                at,
            }),
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, DecodeError> {
        let at = self.at;
        let t = self.u8()?;
        let invalid = |what| DecodeError::Invalid { what, at };
        Ok(match t {
            tag::NULL => Value::Null,
            tag::FALSE => Value::Bool(false),
            tag::TRUE => Value::Bool(true),
            tag::INT => Value::Int(self.i64()?),
            tag::UINT => Value::UInt(u64::from_le_bytes(self.array()?)),
            tag::F32 => Value::Float32(f32::from_bits(u32::from_le_bytes(self.array()?))),
            tag::F64 => Value::Float64(f64::from_bits(u64::from_le_bytes(self.array()?))),
            tag::DECIMAL => Value::Decimal(match self.u8()? {
                n @ (0 | 1) => {
                    let scale = u32::from_le_bytes(self.array()?);
                    let digits = self.string("decimal digits")?;
                    let canonical = !digits.is_empty()
                        && digits.bytes().all(|b| b.is_ascii_digit())
                        && (digits == "0" || !digits.starts_with('0'));
                    if !canonical || (n == 1 && digits == "0") {
                        return Err(invalid("decimal"));
                    }
                    Decimal::Finite {
                        negative: n == 1,
                        digits,
                        scale,
                    }
                }
                2 => Decimal::NaN,
                3 => Decimal::Infinity,
                4 => Decimal::NegInfinity,
                _ => return Err(invalid("decimal")),
            }),
            tag::TEXT => Value::Text(self.string("text")?),
            tag::BYTES => Value::Bytes(self.bytes()?.to_vec()),
            tag::DATE => Value::Date(match self.u8()? {
                0 => Date::NegInfinity,
                1 => Date::Days(self.i32()?),
                2 => Date::Infinity,
                _ => return Err(invalid("date")),
            }),
            tag::TIME => Value::Time(Time::from_micros(self.i64()?).ok_or(invalid("time"))?),
            tag::TIMETZ => {
                let time = Time::from_micros(self.i64()?).ok_or(invalid("time"))?;
                Value::TimeTz(TimeTz {
                    time,
                    offset_seconds: self.i32()?,
                })
            }
            tag::TIMESTAMP => Value::Timestamp(self.timestamp()?),
            tag::TIMESTAMPTZ => Value::TimestampTz(self.timestamp()?),
            tag::INTERVAL => Value::Interval(Interval {
                months: self.i32()?,
                days: self.i32()?,
                micros: self.i64()?,
            }),
            tag::UUID => Value::Uuid(self.array()?),
            tag::JSON => Value::Json(self.string("json")?),
            tag::ARRAY => {
                if depth >= MAX_DEPTH {
                    return Err(DecodeError::TooDeep);
                }
                let ndims = self.len()?;
                if ndims > MAX_DEPTH {
                    return Err(invalid("array dimensions"));
                }
                let mut dims = Vec::with_capacity(ndims);
                let mut expected: usize = if ndims == 0 { 0 } else { 1 };
                for _ in 0..ndims {
                    let lower = self.i32()?;
                    let len = self.i32()?;
                    let n = usize::try_from(len).map_err(|_| invalid("array length"))?;
                    expected = expected.checked_mul(n).ok_or(invalid("array length"))?;
                    dims.push((lower, len));
                }
                let count = self.len()?;
                // Every element takes at least one byte: a count beyond what is left is corrupt.
                if count != expected || count > self.remaining() {
                    return Err(invalid("array length"));
                }
                let mut elements = Vec::with_capacity(count);
                for _ in 0..count {
                    elements.push(self.value(depth + 1)?);
                }
                Value::Array(Array { dims, elements })
            }
            tag::RAW => Value::Raw {
                type_name: self.string("type name")?,
                text: self.string("raw text")?,
            },
            other => return Err(DecodeError::UnknownTag { tag: other, at }),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn arb_decimal() -> impl Strategy<Value = Decimal> {
        prop_oneof![
            Just(Decimal::NaN),
            Just(Decimal::Infinity),
            Just(Decimal::NegInfinity),
            ("-?[0-9]{1,40}", 0u32..30).prop_map(|(digits, scale)| {
                let text = if scale == 0 {
                    digits
                } else {
                    format!("{digits}.{}", "7".repeat(scale as usize))
                };
                text.parse().expect("generated decimal parses")
            }),
        ]
    }

    pub(crate) fn arb_scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::UInt),
            any::<u32>().prop_map(|b| Value::Float32(f32::from_bits(b))),
            any::<u64>().prop_map(|b| Value::Float64(f64::from_bits(b))),
            arb_decimal().prop_map(Value::Decimal),
            any::<String>().prop_map(Value::Text),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
            prop_oneof![
                Just(Date::Infinity),
                Just(Date::NegInfinity),
                any::<i32>().prop_map(Date::Days)
            ]
            .prop_map(Value::Date),
            (0i64..=86_400_000_000)
                .prop_map(|m| Value::Time(Time::from_micros(m).expect("in range"))),
            ((0i64..=86_400_000_000), -57_599i32..=57_599).prop_map(|(m, o)| {
                Value::TimeTz(TimeTz {
                    time: Time::from_micros(m).expect("in range"),
                    offset_seconds: o,
                })
            }),
            any::<i64>().prop_map(|m| Value::Timestamp(Timestamp::Micros(m))),
            any::<i64>().prop_map(|m| Value::TimestampTz(Timestamp::Micros(m))),
            Just(Value::TimestampTz(Timestamp::Infinity)),
            (any::<i32>(), any::<i32>(), any::<i64>()).prop_map(|(months, days, micros)| {
                Value::Interval(Interval {
                    months,
                    days,
                    micros,
                })
            }),
            any::<[u8; 16]>().prop_map(Value::Uuid),
            any::<String>().prop_map(Value::Json),
            ("[a-z_.]{1,20}", any::<String>())
                .prop_map(|(type_name, text)| Value::Raw { type_name, text }),
        ]
    }

    pub(crate) fn arb_value() -> impl Strategy<Value = Value> {
        arb_scalar().prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6)
                    .prop_map(|e| Value::Array(Array::from_elements(e))),
                (proptest::collection::vec(inner, 6), -3i32..3).prop_map(|(e, lower)| {
                    Value::Array(Array {
                        dims: vec![(lower, 2), (1, 3)],
                        elements: e,
                    })
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn values_round_trip(v in arb_value()) {
            let mut buf = Vec::new();
            encode_value(&v, &mut buf);
            prop_assert_eq!(decode_value(&buf)?, v);
        }

        #[test]
        fn rows_round_trip(row in proptest::collection::vec(arb_value(), 0..8)) {
            let buf = encode_row(&row);
            prop_assert_eq!(decode_row(&buf)?, row);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_value(&bytes);
            let _ = decode_row(&bytes);
        }

        #[test]
        fn truncated_encodings_are_errors(v in arb_value(), cut in 1usize..64) {
            let mut buf = Vec::new();
            encode_value(&v, &mut buf);
            let keep = buf.len().saturating_sub(cut);
            prop_assert!(decode_value(&buf[..keep]).is_err());
        }

        #[test]
        fn decimal_text_round_trips(d in arb_decimal()) {
            prop_assert_eq!(d.to_string().parse::<Decimal>()?, d);
        }

        #[test]
        fn dates_text_round_trip(days in -2_451_545i32..=2_145_031_948) {
            let d = Date::Days(days);
            prop_assert_eq!(d.to_string().parse::<Date>()?, d);
        }

        #[test]
        fn timestamps_text_round_trip(
            m in -211_813_488_000_000_000i64..9_223_371_331_200_000_000,
            zoned in any::<bool>(),
        ) {
            let t = Timestamp::Micros(m);
            let text = t.display(zoned).to_string();
            prop_assert_eq!(Timestamp::parse(&text, zoned)?, t);
        }

        #[test]
        fn intervals_text_round_trip(months in any::<i32>(), days in any::<i32>(), micros in any::<i64>()) {
            let i = Interval { months, days, micros };
            prop_assert_eq!(i.to_string().parse::<Interval>()?, i);
        }
    }

    #[test]
    fn rejects_corrupt_input() {
        assert_eq!(
            decode_value(&[99]),
            Err(DecodeError::UnknownTag { tag: 99, at: 0 })
        );
        assert!(matches!(
            decode_value(&[tag::INT, 1, 2]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode_value(&[tag::NULL, 0]),
            Err(DecodeError::TrailingBytes { extra: 1 })
        ));
        // An array claiming four billion elements in a few bytes.
        let mut b = vec![tag::ARRAY];
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1i32.to_le_bytes());
        b.extend_from_slice(&i32::MAX.to_le_bytes());
        b.extend_from_slice(&(i32::MAX as u32).to_le_bytes());
        assert!(decode_value(&b).is_err());
    }
}
