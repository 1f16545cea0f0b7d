//! Where rows live in Redis, and the order of their keys.
//!
//! - A row of table `t` with key `(k1, k2)` is the Redis key `{prefix}t:k1:k2`: each part is
//!   the key value's text (decimal digits, the text itself, a UUID's 8-4-4-4-12 form, raw bytes)
//!   with `\` written `\\` and `:` written `\:`, so a `:` that separates parts is never inside
//!   one, and two different keys never name the same Redis key.
//! - Table `t`'s keys in order are the sorted set `{prefix}t` (score 0, one member per row): a
//!   member is the key's **order-preserving binary encoding** ([`member`]), so `ZRANGEBYLEX`
//!   lists rows in the order verify compares keys across engines (integers numerically, text
//!   and bytes bytewise, UUIDs bytewise, composite keys part by part).
//! - The migration's state is under `{prefix}_cutover:` (a table named `_cutover` is refused).

use cutover_connector::{ConnectorError, ErrorKind};
use cutover_model::{ColumnType, Key, TableName, TableSchema, Value};

use crate::value;

/// `\` → `\\`, `:` → `\:`.
pub(crate) fn escape(part: &[u8], out: &mut Vec<u8>) {
    for &b in part {
        if b == b'\\' || b == b':' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// The table's part of every Redis key: its name, with its schema unless it is `public`
/// (PostgreSQL's default) or none.
pub(crate) fn table_part(t: &TableName) -> String {
    match t.schema.as_deref() {
        None | Some("public") => t.name.clone(),
        Some(s) => format!("{s}.{}", t.name),
    }
}

/// The sorted set holding `table`'s keys in order: `{prefix}{table}` (escaped, no `:` after it,
/// so it is never a row's key).
pub(crate) fn index_key(prefix: &str, t: &TableName) -> Vec<u8> {
    let mut out = prefix.as_bytes().to_vec();
    escape(table_part(t).as_bytes(), &mut out);
    out
}

/// The Redis key of the row of `table` keyed `key` (see the module's documentation).
pub(crate) fn row_key(
    prefix: &str,
    t: &TableSchema,
    key: &[Value],
) -> Result<Vec<u8>, ConnectorError> {
    let mut out = index_key(prefix, &t.name);
    for (col, v) in t.key_columns().zip(key) {
        out.push(b':');
        let text = value::encode(t, col, v, key)?.ok_or_else(|| null_key(t, key))?;
        escape(&text, &mut out);
    }
    Ok(out)
}

fn null_key(t: &TableSchema, key: &[Value]) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::InvalidInput,
        format!(
            "table {}, key {}: a primary-key value is NULL; Redis rows need a whole key",
            t.name,
            cutover_connector::key_text(key)
        ),
    )
}

/// The sorted-set member of `key`: each part in an order-preserving form, concatenated.
///
/// - signed integers: 8 bytes big-endian with the sign bit flipped; unsigned 64-bit integer
///   columns: 8 bytes big-endian;
/// - booleans: one byte;
/// - UUIDs: their 16 bytes;
/// - text, bytes and every other type: the stored text (what [`value::encode`] writes) with
///   `0x00` written `0x00 0xFF`, ended by `0x00 0x01` (so a shorter part sorts before a longer
///   one that starts with it, and the next part never changes the order of this one). Dates,
///   times and decimals therefore sort as text here (as they do as SQLite text keys: see
///   ARCHITECTURE.md, "Known limits").
pub(crate) fn member(t: &TableSchema, key: &[Value]) -> Result<Vec<u8>, ConnectorError> {
    let mut out = Vec::with_capacity(16 * key.len());
    for (col, v) in t.key_columns().zip(key) {
        let v = value::normalize(t, col, v, key)?;
        match (&col.ty, &v) {
            (
                ColumnType::Int {
                    unsigned: true,
                    bits: 64,
                },
                Value::Int(i),
            ) if *i >= 0 => out.extend_from_slice(&(*i as u64).to_be_bytes()),
            (
                ColumnType::Int {
                    unsigned: true,
                    bits: 64,
                },
                Value::UInt(u),
            ) => out.extend_from_slice(&u.to_be_bytes()),
            (ColumnType::Int { .. }, Value::Int(i)) => {
                out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes())
            }
            (ColumnType::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
            (ColumnType::Uuid, Value::Uuid(u)) => out.extend_from_slice(u),
            (_, Value::Null) => return Err(null_key(t, key)),
            _ => {
                let text = value::encode(t, col, &v, key)?.ok_or_else(|| null_key(t, key))?;
                for b in text {
                    out.push(b);
                    if b == 0 {
                        out.push(0xFF);
                    }
                }
                out.extend_from_slice(&[0, 1]);
            }
        }
    }
    Ok(out)
}

/// The key a [`member`] encodes, typed by the key columns.
pub(crate) fn key_of_member(t: &TableSchema, mut m: &[u8]) -> Result<Key, ConnectorError> {
    let bad = || {
        ConnectorError::new(
            ErrorKind::Database,
            format!(
                "table {}: a member of the key index {:?} is not a key cutover wrote; remove it \
                 (ZREM) or run `cutover cleanup` and sync again",
                t.name,
                String::from_utf8_lossy(m)
            ),
        )
    };
    let mut key = Vec::with_capacity(t.primary_key.len());
    for col in t.key_columns() {
        let fixed = |m: &mut &[u8], n: usize| -> Option<Vec<u8>> {
            let (head, tail) = (m.get(..n)?, m.get(n..)?);
            *m = tail;
            Some(head.to_vec())
        };
        let v = match &col.ty {
            ColumnType::Int { unsigned, bits } => {
                let b: [u8; 8] = fixed(&mut m, 8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?;
                let u = u64::from_be_bytes(b);
                if *unsigned && *bits == 64 {
                    i64::try_from(u).map(Value::Int).unwrap_or(Value::UInt(u))
                } else {
                    Value::Int((u ^ (1 << 63)) as i64)
                }
            }
            ColumnType::Bool => Value::Bool(fixed(&mut m, 1).ok_or_else(bad)? == [1]),
            ColumnType::Uuid => Value::Uuid(
                fixed(&mut m, 16)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(bad)?,
            ),
            _ => {
                let mut text = Vec::new();
                let mut i = 0;
                loop {
                    match (m.get(i), m.get(i + 1)) {
                        (Some(0), Some(0xFF)) => {
                            text.push(0);
                            i += 2;
                        }
                        (Some(0), Some(1)) => {
                            i += 2;
                            break;
                        }
                        (Some(&b), _) if b != 0 => {
                            text.push(b);
                            i += 1;
                        }
                        _ => return Err(bad()),
                    }
                }
                m = &m[i..];
                value::decode(t, col, &text)?
            }
        };
        key.push(v);
    }
    if m.is_empty() {
        Ok(key)
    } else {
        Err(bad())
    }
}

/// The `ZRANGEBYLEX` bound of a range's start (inclusive) or end (exclusive); `-`/`+` when
/// unbounded.
pub(crate) fn lex_bound(
    t: &TableSchema,
    key: Option<&Key>,
    inclusive: bool,
    low: bool,
) -> Result<Vec<u8>, ConnectorError> {
    Ok(match key {
        None => vec![if low { b'-' } else { b'+' }],
        Some(k) => {
            let mut out = vec![if inclusive { b'[' } else { b'(' }];
            out.extend(member(t, k)?);
            out
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::Column;
    use proptest::prelude::*;

    fn col(name: &str, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
            declared_type: String::new(),
            nullable: false,
            default: None,
        }
    }

    fn table(key: Vec<ColumnType>) -> TableSchema {
        TableSchema {
            name: TableName::bare("t"),
            primary_key: (0..key.len()).collect(),
            columns: key
                .into_iter()
                .enumerate()
                .map(|(i, ty)| col(&format!("k{i}"), ty))
                .collect(),
            indexes: Vec::new(),
        }
    }

    fn int() -> ColumnType {
        ColumnType::Int {
            bits: 64,
            unsigned: false,
        }
    }
    fn text() -> ColumnType {
        ColumnType::Text { max_len: None }
    }

    /// How verify orders keys across engines: integers numerically, text and bytes bytewise,
    /// UUIDs bytewise, composites part by part.
    fn key_order(a: &[Value], b: &[Value]) -> std::cmp::Ordering {
        for (x, y) in a.iter().zip(b) {
            let o = match (x, y) {
                (Value::Int(x), Value::Int(y)) => x.cmp(y),
                (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
                (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
                (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
                _ => panic!("unexpected {x:?} {y:?}"),
            };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    }

    fn part() -> impl Strategy<Value = (ColumnType, BoxedStrategy<Value>)> {
        prop_oneof![
            Just((int(), any::<i64>().prop_map(Value::Int).boxed())),
            Just((text(), ".{0,6}".prop_map(Value::Text).boxed())),
            Just((
                text(),
                prop::collection::vec(
                    prop_oneof![Just('\0'), Just(':'), Just('\\'), Just('a')],
                    0..5
                )
                .prop_map(|c| Value::Text(c.into_iter().collect()))
                .boxed()
            )),
            Just((
                ColumnType::Bytes { max_len: None },
                prop::collection::vec(
                    prop_oneof![Just(0u8), Just(1), Just(0xFF), any::<u8>()],
                    0..6
                )
                .prop_map(Value::Bytes)
                .boxed()
            )),
            Just((
                ColumnType::Uuid,
                any::<[u8; 16]>().prop_map(Value::Uuid).boxed()
            )),
        ]
    }

    fn keys() -> impl Strategy<Value = (TableSchema, Vec<Value>, Vec<Value>)> {
        prop::collection::vec(part(), 1..4).prop_flat_map(|parts| {
            let types: Vec<ColumnType> = parts.iter().map(|(t, _)| t.clone()).collect();
            let gens: Vec<BoxedStrategy<Value>> = parts.into_iter().map(|(_, g)| g).collect();
            (Just(table(types)), gens.clone(), gens)
        })
    }

    proptest! {
        #[test]
        fn member_order_is_key_order((t, a, b) in keys()) {
            let (ma, mb) = (member(&t, &a).unwrap(), member(&t, &b).unwrap());
            prop_assert_eq!(ma.cmp(&mb), key_order(&a, &b), "{:?} {:?}", a, b);
            prop_assert_eq!(key_of_member(&t, &ma).unwrap(), a.clone());
            let (ra, rb) = (row_key("p:", &t, &a).unwrap(), row_key("p:", &t, &b).unwrap());
            prop_assert_eq!(ra == rb, a == b, "row keys are injective");
        }
    }

    #[test]
    fn row_keys_escape_colons_and_backslashes() {
        let t = table(vec![text(), text()]);
        let k = |a: &str, b: &str| row_key("", &t, &[Value::Text(a.into()), Value::Text(b.into())]);
        assert_eq!(k("a:b", "c").unwrap(), b"t:a\\:b:c".to_vec());
        assert_eq!(k("a", "b:c").unwrap(), b"t:a:b\\:c".to_vec());
        assert_ne!(k("a\\", ":b").unwrap(), k("a\\:", "b").unwrap());
        assert_eq!(k("x\\", "").unwrap(), b"t:x\\\\:".to_vec());
        let single = table(vec![int()]);
        assert_eq!(
            row_key("app:", &single, &[Value::Int(42)]).unwrap(),
            b"app:t:42".to_vec()
        );
        assert!(row_key("", &single, &[Value::Null]).is_err());
    }

    #[test]
    fn a_member_that_is_not_a_key_is_an_error_not_a_panic() {
        let t = table(vec![int(), text()]);
        for bad in [
            &b""[..],
            b"\x80",
            b"\x80\0\0\0\0\0\0\x01abc",
            b"\x80\0\0\0\0\0\0\x01a\0\x01z",
        ] {
            assert!(key_of_member(&t, bad).is_err(), "{bad:?}");
        }
    }
}
