//! Debezium's change-event envelope, as its JSON converter writes it with
//! `schemas.enable=false`: `{"before", "after", "source", "op", "ts_ms"}`. Pure; unit-tested.
//!
//! Values, as Debezium writes them with `decimal.handling.mode=string`,
//! `binary.handling.mode=base64` and `time.precision.mode=isostring`-style text:
//!
//! | value | JSON |
//! |---|---|
//! | NULL | `null` |
//! | boolean | `true`/`false` |
//! | integers (also unsigned 64-bit) | a number, exact |
//! | floats | a number; NaN and ±infinity as the strings `"NaN"`, `"Infinity"`, `"-Infinity"` |
//! | decimal | a string, exact (`"12.50"`; `"NaN"`) |
//! | text, UUID | a string |
//! | bytes | base64 (standard alphabet, padded) |
//! | date, time, timestamp, interval | their canonical text (`docs/CANONICAL.md`): ISO 8601 |
//! | timestamp with zone | ISO 8601 in UTC (`2024-05-01T10:00:00Z`) |
//! | JSON | its text, as a string (Debezium's `io.debezium.data.Json`) |
//! | arrays, other types | their canonical text, as a string |
//!
//! A column an update did not send (PostgreSQL's unchanged TOAST values) is the string
//! `__debezium_unavailable_value`, as Debezium writes it.

use std::time::SystemTime;

use cutover_connector::canonical;
use cutover_model::{Position, Row, TableName, TableSchema, Value};
use serde_json::{json, Map, Value as Json};

/// What Debezium writes for a value the source did not send.
pub const UNAVAILABLE: &str = "__debezium_unavailable_value";

/// Debezium's `op`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A row of the initial copy (`r`).
    Read,
    Create,
    Update,
    Delete,
    Truncate,
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Read => "r",
            Op::Create => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
        }
    }
}

/// Where an event comes from (Debezium's `source` block).
#[derive(Debug, Clone)]
pub struct Source<'a> {
    /// The migration's name (Debezium's logical server name).
    pub name: &'a str,
    pub table: &'a TableName,
    pub position: Option<&'a Position>,
    pub tx: Option<u64>,
    pub committed_at: Option<SystemTime>,
    pub snapshot: bool,
}

/// A value as JSON (see the module's table). `Err` names why a value has no text (invalid
/// UTF-8, JSON nested too deep).
pub fn value(v: &Value) -> Result<Json, String> {
    Ok(match v {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::UInt(u) => Json::from(*u),
        Value::Float32(f) if f.is_finite() => {
            // The shortest text that reads back as the same f32, as a JSON number.
            let text = canonical::float32_text(*f);
            serde_json::from_str(&text).unwrap_or(Json::String(text))
        }
        Value::Float64(f) if f.is_finite() => {
            serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number)
        }
        Value::Float32(f) => Json::String(non_finite(f64::from(*f))),
        Value::Float64(f) => Json::String(non_finite(*f)),
        Value::Text(s) => Json::String(s.clone()),
        Value::Bytes(b) => Json::String(base64(b)),
        Value::Uuid(u) => Json::String(canonical::uuid_text(u)),
        Value::Json(text) => Json::String(text.clone()),
        other => match canonical::value_text(other).map_err(|e| e.to_string())? {
            Some(text) => Json::String(text),
            None => Json::Null,
        },
    })
}

fn non_finite(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f > 0.0 {
        "Infinity".to_owned()
    } else {
        "-Infinity".to_owned()
    }
}

/// `row` as an object of `columns`; the columns at `unavailable` as Debezium's placeholder.
pub fn row(columns: &[String], row: &Row, unavailable: &[usize]) -> Result<Json, String> {
    let mut out = Map::with_capacity(columns.len());
    for (i, (name, v)) in columns.iter().zip(row).enumerate() {
        let j = if unavailable.contains(&i) {
            Json::String(UNAVAILABLE.to_owned())
        } else {
            value(v).map_err(|e| format!("column {name}: {e}"))?
        };
        out.insert(name.clone(), j);
    }
    Ok(Json::Object(out))
}

/// The key columns of `schema` with `key`'s values: the message's key (Debezium's record key).
pub fn key(schema: &TableSchema, key: &[Value]) -> Result<Json, String> {
    let mut out = Map::new();
    for (c, v) in schema.key_columns().zip(key) {
        out.insert(
            c.name.clone(),
            value(v).map_err(|e| format!("key column {}: {e}", c.name))?,
        );
    }
    Ok(Json::Object(out))
}

/// A row holding only `key` in the key's columns (others NULL): Debezium's `before` of a
/// delete when the source sends only the key.
pub fn key_row(schema: &TableSchema, columns: &[String], key: &[Value]) -> Result<Json, String> {
    let mut out = Map::with_capacity(columns.len());
    for name in columns {
        let v = schema
            .primary_key
            .iter()
            .position(|&i| schema.columns.get(i).is_some_and(|c| &c.name == name))
            .and_then(|k| key.get(k));
        out.insert(
            name.clone(),
            match v {
                Some(v) => value(v).map_err(|e| format!("key column {name}: {e}"))?,
                None => Json::Null,
            },
        );
    }
    Ok(Json::Object(out))
}

/// The whole event.
pub fn event(op: Op, before: Json, after: Json, source: &Source<'_>, now: SystemTime) -> Json {
    json!({
        "before": before,
        "after": after,
        "source": {
            "version": env!("CARGO_PKG_VERSION"),
            "connector": "cutover",
            "name": source.name,
            "ts_ms": source.committed_at.map(millis),
            "snapshot": if source.snapshot { "true" } else { "false" },
            "db": source.name,
            "schema": source.table.schema,
            "table": source.table.name,
            "position": source.position.map(|p| p.to_string()),
            "txId": source.tx,
        },
        "op": op.code(),
        "ts_ms": millis(now),
    })
}

fn millis(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Standard base64 with padding (RFC 4648 §4), as Debezium's `binary.handling.mode=base64`.
pub fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType};

    fn column(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.to_owned(),
            ty,
            declared_type: String::new(),
            nullable: true,
            default: None,
        }
    }

    /// `public.students (id bigint PRIMARY KEY, name text)`.
    pub(crate) fn schema() -> TableSchema {
        TableSchema {
            name: TableName::new(Some("public"), "students"),
            columns: vec![
                column(
                    "id",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                ),
                column("name", ColumnType::Text { max_len: None }),
            ],
            primary_key: vec![0],
            indexes: Vec::new(),
        }
    }

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
        assert_eq!(base64(&[0, 255, 0x10]), "AP8Q");
    }

    #[test]
    fn values_keep_their_exact_text() {
        assert_eq!(value(&Value::Int(i64::MIN)).unwrap(), json!(i64::MIN));
        assert_eq!(value(&Value::UInt(u64::MAX)).unwrap(), json!(u64::MAX));
        assert_eq!(value(&Value::Float64(0.1)).unwrap(), json!(0.1));
        assert_eq!(value(&Value::Float64(f64::NAN)).unwrap(), json!("NaN"));
        assert_eq!(
            value(&Value::Float32(f32::NEG_INFINITY)).unwrap(),
            json!("-Infinity")
        );
        assert_eq!(value(&Value::Float32(0.1)).unwrap(), json!(0.1));
        assert_eq!(value(&Value::Bytes(vec![0, 1])).unwrap(), json!("AAE="));
        assert_eq!(
            value(&Value::Json("{\"b\": 1, \"a\": [1]}".into())).unwrap(),
            json!("{\"b\": 1, \"a\": [1]}")
        );
        assert_eq!(value(&Value::Null).unwrap(), Json::Null);
        assert_eq!(
            value(&Value::Uuid([0x12; 16])).unwrap(),
            json!("12121212-1212-1212-1212-121212121212")
        );
    }

    #[test]
    fn an_update_without_toasted_values_shows_debeziums_placeholder() {
        let cols = vec!["id".to_owned(), "name".to_owned()];
        let r = row(&cols, &vec![Value::Int(1), Value::Null], &[1]).unwrap();
        assert_eq!(r, json!({"id": 1, "name": UNAVAILABLE}));
    }

    #[test]
    fn a_delete_with_only_the_key_has_the_key_and_nulls() {
        let s = schema();
        let cols = vec!["id".to_owned(), "name".to_owned()];
        assert_eq!(
            key_row(&s, &cols, &[Value::Int(7)]).unwrap(),
            json!({"id": 7, "name": null})
        );
        assert_eq!(key(&s, &[Value::Int(7)]).unwrap(), json!({"id": 7}));
    }

    #[test]
    fn the_event_has_debeziums_fields() {
        let s = schema();
        let p = Position::new("lsn:0/16B3748").unwrap();
        let e = event(
            Op::Create,
            Json::Null,
            json!({"id": 1}),
            &Source {
                name: "school",
                table: &s.name,
                position: Some(&p),
                tx: Some(42),
                committed_at: Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(5)),
                snapshot: false,
            },
            SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(9),
        );
        assert_eq!(e["op"], "c");
        assert_eq!(e["before"], Json::Null);
        assert_eq!(e["after"]["id"], 1);
        assert_eq!(e["source"]["table"], "students");
        assert_eq!(e["source"]["schema"], "public");
        assert_eq!(e["source"]["ts_ms"], 5);
        assert_eq!(e["source"]["txId"], 42);
        assert_eq!(e["source"]["snapshot"], "false");
        assert_eq!(e["source"]["position"], "lsn:0/16B3748");
        assert_eq!(e["ts_ms"], 9);
    }
}
