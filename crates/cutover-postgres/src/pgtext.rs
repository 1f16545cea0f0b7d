//! PostgreSQL's text forms ↔ the model's values.
//!
//! Change capture (`pgoutput`) and chunk reads (the simple query protocol) both deliver every
//! value in its type's text output, printed with cutover's session settings (UTC, ISO dates,
//! shortest exact floats, hex bytea). Common types become typed values; every other type travels
//! as [`Value::Raw`] with its exact text, and is written back as that text cast to the column's
//! type — so no value is ever bent, whatever its type (enums, ranges, domains, extension types).

use cutover_connector::canonical;
use cutover_model::{Decimal, Value};

/// Built-in type OIDs decoded into typed values.
mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// The value of a column of type `type_oid` (spelled `type_name`) from its text form. Text that
/// does not parse as the typed value (never seen from a real server) is kept as `Raw`.
pub fn decode(type_oid: u32, type_name: &str, text: &str) -> Value {
    let typed = match type_oid {
        oid::BOOL => match text {
            "t" => Some(Value::Bool(true)),
            "f" => Some(Value::Bool(false)),
            _ => None,
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => text.parse().ok().map(Value::Int),
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME => Some(Value::Text(text.to_owned())),
        oid::JSON | oid::JSONB => Some(Value::Json(text.to_owned())),
        oid::FLOAT8 => float(text).map(Value::Float64),
        oid::FLOAT4 => float(text).map(|f| Value::Float32(f as f32)),
        oid::NUMERIC => text.parse::<Decimal>().ok().map(Value::Decimal),
        oid::BYTEA => hex(text).map(Value::Bytes),
        oid::UUID => uuid(text).map(Value::Uuid),
        _ => None,
    };
    typed.unwrap_or_else(|| Value::Raw {
        type_name: type_name.to_owned(),
        text: text.to_owned(),
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

fn hex(text: &str) -> Option<Vec<u8>> {
    let h = text.strip_prefix("\\x")?.as_bytes();
    if h.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    h.chunks_exact(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect()
}

fn uuid(text: &str) -> Option<[u8; 16]> {
    let digits: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let bytes = hex(&format!("\\x{}", std::str::from_utf8(&digits).ok()?))?;
    bytes.try_into().ok()
}

/// The text form PostgreSQL's input function reads back as exactly `value`; `None` for NULL.
pub fn encode(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => if *b { "t" } else { "f" }.to_owned(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float64(f) => float_text(*f, |f| format!("{f:?}")),
        Value::Float32(f) => float_text(f64::from(*f), |_| format!("{f:?}")),
        Value::Decimal(d) => d.to_string(),
        Value::Text(s) | Value::Json(s) => s.clone(),
        Value::Raw { text, .. } => text.clone(),
        Value::Bytes(b) => canonical::bytes_text(b),
        Value::Uuid(u) => canonical::uuid_text(u),
        Value::Date(d) => d.to_string(),
        Value::Time(t) => t.to_string(),
        Value::TimeTz(t) => t.to_string(),
        Value::Timestamp(t) => t.display(false).to_string(),
        Value::TimestampTz(t) => t.display(true).to_string(),
        Value::Interval(i) => i.to_string(),
        Value::Array(a) => array_text(a),
    })
}

fn float_text(f: f64, finite: impl Fn(f64) -> String) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f == f64::INFINITY {
        "Infinity".to_owned()
    } else if f == f64::NEG_INFINITY {
        "-Infinity".to_owned()
    } else {
        finite(f)
    }
}

/// PostgreSQL's array literal: `[2:3]={a,"b c",NULL}`, nested per dimension.
fn array_text(a: &cutover_model::Array) -> String {
    let text = cutover_connector::canonical::array_literal(a, |v| {
        Ok::<_, std::convert::Infallible>(encode(v))
    });
    match text {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_round_trip_through_their_text() {
        let cases: &[(u32, &str)] = &[
            (oid::BOOL, "t"),
            (oid::INT8, "-9223372036854775808"),
            (oid::FLOAT8, "NaN"),
            (oid::FLOAT8, "-Infinity"),
            (oid::FLOAT8, "-0"),
            (oid::FLOAT8, "0.1"),
            (oid::FLOAT8, "1e+300"),
            (oid::FLOAT4, "3.4028235e+38"),
            (oid::NUMERIC, "-12.3400"),
            (oid::NUMERIC, "NaN"),
            (oid::BYTEA, "\\x00ff10"),
            (oid::UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            (oid::JSONB, "{\"b\": 1, \"a\": [1, 2]}"),
            (oid::TEXT, "it's \"quoted\"\n"),
            (1184, "2024-02-29 23:59:59.999999+00"),
        ];
        for &(ty, text) in cases {
            let v = decode(ty, "t", text);
            let back = encode(&v).unwrap();
            assert_eq!(
                decode(ty, "t", &back),
                v,
                "{text} → {v:?} → {back} does not read back"
            );
        }
        assert!(matches!(
            decode(1184, "timestamptz", "x"),
            Value::Raw { .. }
        ));
        assert_eq!(decode(oid::FLOAT8, "f", "-0"), Value::Float64(-0.0));
        assert_eq!(encode(&Value::Float64(-0.0)).unwrap(), "-0.0");
        assert_eq!(encode(&Value::Null), None);
    }

    #[test]
    fn arrays_print_as_postgres_literals() {
        let a = cutover_model::Array::from_elements(vec![
            Value::Int(1),
            Value::Null,
            Value::Text("a \"b\"".into()),
        ]);
        // Quoted where array_out quotes (what PostgreSQL reads back the same).
        assert_eq!(array_text(&a), "{1,NULL,\"a \\\"b\\\"\"}");
        let shifted = cutover_model::Array {
            dims: vec![(0, 2)],
            elements: vec![Value::Int(1), Value::Int(2)],
        };
        assert_eq!(array_text(&shifted), "[0:1]={1,2}");
        assert_eq!(
            array_text(&cutover_model::Array::from_elements(vec![])),
            "{}"
        );
    }

    #[test]
    fn malformed_hex_and_uuids_stay_raw() {
        assert!(matches!(
            decode(oid::BYTEA, "bytea", "\\x0"),
            Value::Raw { .. }
        ));
        assert!(matches!(
            decode(oid::UUID, "uuid", "nope"),
            Value::Raw { .. }
        ));
    }
}
