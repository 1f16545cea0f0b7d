//! SQLite storage classes ↔ [`Value`].
//!
//! SQLite holds five storage classes; reading gives back exactly those (`Int`, `Float64`,
//! `Text`, `Bytes`, `Null`), so a SQLite → SQLite copy is exact. Richer values from other
//! engines are written in the forms SQLite applications conventionally use (ISO-8601 text for
//! times, text for decimals and JSON, 0/1 for booleans); a value SQLite cannot hold exactly is an
//! error, never a silent change.

use cutover_model::Value;
use rusqlite::types::{ToSql, ToSqlOutput, ValueRef};

/// Borrows a [`Value`] as a statement parameter.
pub(crate) struct Param<'a>(pub(crate) &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as Owned;
        let owned = |v: Owned| Ok(ToSqlOutput::Owned(v));
        match self.0 {
            Value::Null => Ok(ToSqlOutput::Borrowed(ValueRef::Null)),
            Value::Int(i) => Ok(ToSqlOutput::Borrowed(ValueRef::Integer(*i))),
            Value::Float64(f) => Ok(ToSqlOutput::Borrowed(ValueRef::Real(*f))),
            Value::Text(s) => Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
            Value::Bytes(b) => Ok(ToSqlOutput::Borrowed(ValueRef::Blob(b))),
            Value::Json(s) => Ok(ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))),
            Value::Bool(b) => owned(Owned::Integer(i64::from(*b))),
            Value::UInt(u) => match i64::try_from(*u) {
                Ok(i) => owned(Owned::Integer(i)),
                Err(_) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                    ConversionError(format!(
                        "unsigned integer {u} does not fit SQLite's 64-bit signed INTEGER"
                    )),
                ))),
            },
            Value::Float32(f) => owned(Owned::Real(f64::from(*f))),
            Value::Decimal(d) => owned(Owned::Text(d.to_string())),
            Value::Date(d) => owned(Owned::Text(d.to_string())),
            Value::Time(t) => owned(Owned::Text(t.to_string())),
            Value::TimeTz(t) => owned(Owned::Text(t.to_string())),
            Value::Timestamp(t) => owned(Owned::Text(t.display(false).to_string())),
            Value::TimestampTz(t) => owned(Owned::Text(t.display(true).to_string())),
            Value::Interval(i) => owned(Owned::Text(i.to_string())),
            Value::Uuid(u) => owned(Owned::Blob(u.to_vec())),
            Value::Raw { text, .. } => Ok(ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes()))),
            Value::Array(_) => Err(rusqlite::Error::ToSqlConversionFailure(Box::new(
                ConversionError("arrays have no SQLite form yet".to_owned()),
            ))),
        }
    }
}

/// Reads a column value; `None` when SQLite text is not valid UTF-8 (the caller names the row).
pub(crate) fn from_ref(v: ValueRef<'_>) -> Option<Value> {
    Some(match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(f) => Value::Float64(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8(t.to_vec()).ok()?),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    })
}

/// Why a value could not be bound as a SQLite parameter.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConversionError(String);
