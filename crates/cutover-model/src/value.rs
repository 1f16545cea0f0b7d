//! The value every engine converts into and out of.

use crate::{Date, Decimal, Interval, Time, TimeTz, Timestamp};

/// One column's value in one row, typed, carrying what PostgreSQL, MySQL and SQLite hold
/// without loss.
///
/// Equality is exact: floats compare by their bits (so `NaN == NaN` and `0.0 != -0.0`),
/// decimals by digits and scale (`1.5 != 1.50`). Comparing values as numbers is verify's job,
/// which normalizes first.
#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    /// Signed integers of any width up to 64 bits; the width is the column's type.
    Int(i64),
    /// Unsigned 64-bit integers that do not fit `Int` (MySQL `BIGINT UNSIGNED`).
    UInt(u64),
    Float32(f32),
    Float64(f64),
    Decimal(Decimal),
    Text(String),
    Bytes(Vec<u8>),
    Date(Date),
    Time(Time),
    TimeTz(TimeTz),
    /// Wall-clock date and time, no zone.
    Timestamp(Timestamp),
    /// An instant, in UTC.
    TimestampTz(Timestamp),
    Interval(Interval),
    Uuid([u8; 16]),
    /// JSON document as text, exactly as the source wrote it.
    Json(String),
    Array(Array),
    /// The escape hatch: a value of a type cutover does not model, as the engine's exact text
    /// for it and the engine's name of its type. Written back as text cast to that type.
    Raw {
        type_name: String,
        text: String,
    },
}

/// A possibly multi-dimensional array with PostgreSQL's per-dimension lower bounds.
/// `elements` are in row-major order; their count is the product of `dims`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Array {
    /// One entry per dimension: (lower bound, length). Empty for an empty array.
    pub dims: Vec<(i32, i32)>,
    pub elements: Vec<Value>,
}

impl Array {
    /// A one-dimensional array with lower bound 1, as most arrays are.
    pub fn from_elements(elements: Vec<Value>) -> Array {
        if elements.is_empty() {
            return Array {
                dims: Vec::new(),
                elements,
            };
        }
        let len = i32::try_from(elements.len()).unwrap_or(i32::MAX);
        Array {
            dims: vec![(1, len)],
            elements,
        }
    }
}

/// A row: one value per column, in the table's column order.
pub type Row = Vec<Value>;
/// A primary key: one value per key column, in key order.
pub type Key = Vec<Value>;

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for messages ("text", "bytes", …).
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float32(_) => "float32",
            Value::Float64(_) => "float64",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Date(_) => "date",
            Value::Time(_) => "time",
            Value::TimeTz(_) => "timetz",
            Value::Timestamp(_) => "timestamp",
            Value::TimestampTz(_) => "timestamptz",
            Value::Interval(_) => "interval",
            Value::Uuid(_) => "uuid",
            Value::Json(_) => "json",
            Value::Array(_) => "array",
            Value::Raw { .. } => "raw",
        }
    }

    /// Bytes this value occupies in memory beyond its enum slot, roughly: for progress and
    /// batch sizing.
    pub fn payload_len(&self) -> usize {
        match self {
            Value::Text(s) | Value::Json(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::Raw { type_name, text } => type_name.len() + text.len(),
            Value::Array(a) => a.elements.iter().map(|e| 8 + e.payload_len()).sum(),
            Value::Decimal(_) => 16,
            Value::Null => 1,
            _ => 8,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float32(a), Float32(b)) => a.to_bits() == b.to_bits(),
            (Float64(a), Float64(b)) => a.to_bits() == b.to_bits(),
            (Decimal(a), Decimal(b)) => a == b,
            (Text(a), Text(b)) => a == b,
            (Bytes(a), Bytes(b)) => a == b,
            (Date(a), Date(b)) => a == b,
            (Time(a), Time(b)) => a == b,
            (TimeTz(a), TimeTz(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (TimestampTz(a), TimestampTz(b)) => a == b,
            (Interval(a), Interval(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            (Json(a), Json(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (
                Raw {
                    type_name: ta,
                    text: a,
                },
                Raw {
                    type_name: tb,
                    text: b,
                },
            ) => ta == tb && a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    /// Consistent with `==`: floats hash by their bits.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::UInt(u) => u.hash(state),
            Value::Float32(f) => f.to_bits().hash(state),
            Value::Float64(f) => f.to_bits().hash(state),
            Value::Decimal(d) => d.hash(state),
            Value::Text(s) | Value::Json(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
            Value::Date(d) => d.hash(state),
            Value::Time(t) => t.hash(state),
            Value::TimeTz(t) => t.hash(state),
            Value::Timestamp(t) | Value::TimestampTz(t) => t.hash(state),
            Value::Interval(i) => i.hash(state),
            Value::Uuid(u) => u.hash(state),
            Value::Array(a) => a.hash(state),
            Value::Raw { type_name, text } => {
                type_name.hash(state);
                text.hash(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_equality_is_bitwise() {
        assert_eq!(Value::Float64(f64::NAN), Value::Float64(f64::NAN));
        assert_ne!(Value::Float64(0.0), Value::Float64(-0.0));
        assert_ne!(Value::Int(1), Value::UInt(1));
    }
}
