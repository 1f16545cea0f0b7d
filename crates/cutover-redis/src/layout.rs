//! The keys cutover writes in Redis and how rows are written to and read from them; shared by
//! the sink, the reader, verify and the state store.
//!
//! ```text
//! {prefix}{table}:{key}              a row: hash (format=hash) or JSON string (format=json)
//! {prefix}{table}                    sorted set: the table's keys, ordered (keys::member)
//! {prefix}_cutover:store_version     the state's layout version (cutover_state::redis)
//! {prefix}_cutover:migration         hash: phase, started_at
//! {prefix}_cutover:checkpoint        the source position of the last committed batch
//! {prefix}_cutover:tables            set: the tables' key parts
//! {prefix}_cutover:schema:{table}    the table's schema (kept by `cleanup`: verify reads it)
//! {prefix}_cutover:chunks:{table}    hash: chunk index → bounds (cutover_model::encode_row)
//! {prefix}_cutover:done:{table}      hash: chunk index → rows copied
//! {prefix}_cutover:status            hash: what the running sync last reported
//! {prefix}_cutover:watch:{table}     set: keys where chunks and the change stream met
//! {prefix}_cutover:recent            list: the keys changed last
//! {prefix}_cutover:mismatches        list: verify's findings, newest first
//! ```

use std::collections::HashMap;

use cutover_connector::{key_text, ConnectorError, ErrorKind};
use cutover_model::{
    decode_row, encode_row, Column, ColumnType, Key, Row, TableName, TableSchema, Value,
};

use crate::endpoint::{Conn, Format, RedisEndpoint};
use crate::keys;
use crate::value;

/// Rows read per round trip when scanning a table.
pub(crate) const PAGE: usize = 1_000;

#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub(crate) prefix: String,
    pub(crate) format: Format,
}

impl Layout {
    pub(crate) fn of(e: &RedisEndpoint) -> Layout {
        Layout {
            prefix: e.prefix.clone(),
            format: e.format,
        }
    }

    /// `{prefix}_cutover:{name}`.
    pub(crate) fn control(&self, name: &str) -> Vec<u8> {
        format!("{}_cutover:{name}", self.prefix).into_bytes()
    }

    /// `{prefix}_cutover:{what}:{table}`.
    pub(crate) fn per_table(&self, what: &str, t: &TableName) -> Vec<u8> {
        let mut k = self.control(what);
        k.push(b':');
        keys::escape(keys::table_part(t).as_bytes(), &mut k);
        k
    }

    /// A glob that matches every control key (the prefix's own glob characters escaped).
    pub(crate) fn control_pattern(&self) -> String {
        let mut p = String::new();
        for ch in self.prefix.chars() {
            if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
                p.push('\\');
            }
            p.push(ch);
        }
        p.push_str("_cutover:*");
        p
    }

    /// The commands that write `row` (in the schema's column order) as a whole row: the old
    /// row's fields go first, so dropped columns and NULLs do not linger.
    pub(crate) fn put_row(
        &self,
        pipe: &mut redis::Pipeline,
        t: &TableSchema,
        row: &[Value],
        carried: Option<&[bool]>,
    ) -> Result<(), ConnectorError> {
        let key = t.key_of(row);
        let rk = keys::row_key(&self.prefix, t, &key)?;
        let mut fields: Vec<(&str, Vec<u8>)> = Vec::with_capacity(row.len());
        let mut nulls: Vec<&str> = Vec::new();
        for (i, (c, v)) in t.columns.iter().zip(row).enumerate() {
            if carried.is_some_and(|m| !m.get(i).copied().unwrap_or(false)) {
                continue;
            }
            match value::encode(t, c, v, &key)? {
                Some(b) => fields.push((c.name.as_str(), b)),
                None if !c.nullable => {
                    return Err(ConnectorError::new(
                        ErrorKind::InvalidInput,
                        format!(
                            "table {}, column {}, key {}: NULL in a NOT NULL column; the batch \
                             is not written",
                            t.name,
                            c.name,
                            key_text(&key)
                        ),
                    ))
                }
                None => nulls.push(c.name.as_str()),
            }
        }
        match (self.format, carried) {
            (Format::Hash, None) => {
                pipe.cmd("DEL").arg(&rk).ignore();
                hset(pipe, &rk, &fields);
            }
            (Format::Hash, Some(_)) => {
                if !nulls.is_empty() {
                    pipe.cmd("HDEL").arg(&rk).arg(&nulls).ignore();
                }
                hset(pipe, &rk, &fields);
            }
            (Format::Json, None) => {
                pipe.cmd("SET").arg(&rk).arg(json_row(t, &fields)).ignore();
            }
            (Format::Json, Some(_)) => {
                return Err(ConnectorError::new(
                    ErrorKind::UnsupportedType,
                    format!(
                        "table {}, key {}: a change that leaves some columns out cannot be \
                         written to format=json rows; use format=hash",
                        t.name,
                        key_text(&key)
                    ),
                ))
            }
        }
        pipe.cmd("ZADD")
            .arg(keys::index_key(&self.prefix, &t.name))
            .arg(0)
            .arg(keys::member(t, &key)?)
            .ignore();
        Ok(())
    }

    /// The commands that delete the row keyed `key` (nothing if it is missing).
    pub(crate) fn delete_row(
        &self,
        pipe: &mut redis::Pipeline,
        t: &TableSchema,
        key: &[Value],
    ) -> Result<(), ConnectorError> {
        pipe.cmd("DEL")
            .arg(keys::row_key(&self.prefix, t, key)?)
            .ignore();
        pipe.cmd("ZREM")
            .arg(keys::index_key(&self.prefix, &t.name))
            .arg(keys::member(t, key)?)
            .ignore();
        Ok(())
    }

    /// Up to `limit` members of `table`'s key index between the `ZRANGEBYLEX` bounds.
    pub(crate) fn members(
        &self,
        c: &mut Conn,
        t: &TableSchema,
        min: &[u8],
        max: &[u8],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, ConnectorError> {
        c.query(
            redis::cmd("ZRANGEBYLEX")
                .arg(keys::index_key(&self.prefix, &t.name))
                .arg(min)
                .arg(max)
                .arg("LIMIT")
                .arg(offset)
                .arg(limit),
        )
    }

    /// The rows of these keys (`None` where a key has no row), read in one round trip.
    pub(crate) fn read_rows(
        &self,
        c: &mut Conn,
        t: &TableSchema,
        keys_: &[Key],
    ) -> Result<Vec<Option<Row>>, ConnectorError> {
        if keys_.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for k in keys_ {
            let rk = keys::row_key(&self.prefix, t, k)?;
            match self.format {
                Format::Hash => pipe.cmd("HGETALL").arg(rk),
                Format::Json => pipe.cmd("GET").arg(rk),
            };
        }
        let mut out = Vec::with_capacity(keys_.len());
        match self.format {
            Format::Hash => {
                let maps: Vec<HashMap<String, Vec<u8>>> = c.pipe(&pipe)?;
                for (k, m) in keys_.iter().zip(maps) {
                    out.push(if m.is_empty() {
                        None
                    } else {
                        Some(row_of(t, k, |name| m.get(name).cloned())?)
                    });
                }
            }
            Format::Json => {
                let docs: Vec<Option<String>> = c.pipe(&pipe)?;
                for (k, d) in keys_.iter().zip(docs) {
                    out.push(match d {
                        None => None,
                        Some(d) => {
                            let m = parse_json_row(t, k, &d)?;
                            Some(row_of(t, k, |name| m.get(name).cloned())?)
                        }
                    });
                }
            }
        }
        Ok(out)
    }

    /// Rows of `table` in key order between two `ZRANGEBYLEX` bounds, at most `limit` (all:
    /// `usize::MAX`), read a page at a time; `each` gets every row with its key.
    pub(crate) fn scan(
        &self,
        c: &mut Conn,
        t: &TableSchema,
        min: &[u8],
        max: &[u8],
        limit: usize,
        mut each: impl FnMut(Key, Row) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        let mut min = min.to_vec();
        let mut left = limit;
        while left > 0 {
            let members = self.members(c, t, &min, max, 0, left.min(PAGE))?;
            let Some(last) = members.last() else { break };
            min = [b"(".as_slice(), last].concat();
            let page: Vec<Key> = members
                .iter()
                .map(|m| keys::key_of_member(t, m))
                .collect::<Result<_, _>>()?;
            let rows = self.read_rows(c, t, &page)?;
            left -= members.len();
            for (k, r) in page.into_iter().zip(rows) {
                match r {
                    Some(r) => each(k, r)?,
                    None => {
                        return Err(ConnectorError::new(
                            ErrorKind::Database,
                            format!(
                                "table {}, key {}: the key index lists a row that is not there; \
                                 run `cutover verify --repair` or sync again",
                                t.name,
                                key_text(&k)
                            ),
                        ))
                    }
                }
            }
            if members.len() < PAGE {
                break;
            }
        }
        Ok(())
    }

    /// Every table whose schema is stored, in name order.
    pub(crate) fn tables(&self, c: &mut Conn) -> Result<Vec<TableSchema>, ConnectorError> {
        let parts: Vec<Vec<u8>> = c.query(redis::cmd("SMEMBERS").arg(self.control("tables")))?;
        let mut out = Vec::new();
        for p in parts {
            let mut k = self.control("schema");
            k.push(b':');
            k.extend(p);
            let bytes: Option<Vec<u8>> = c.query(redis::cmd("GET").arg(&k))?;
            if let Some(b) = bytes {
                out.push(decode_schema(&b).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "{} is not a table schema cutover wrote; remove it or run `cutover \
                             cleanup`",
                            String::from_utf8_lossy(&k)
                        ),
                    )
                })?);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}

/// `HSET key field value …` of `fields` (nothing when there are none).
fn hset(pipe: &mut redis::Pipeline, key: &[u8], fields: &[(&str, Vec<u8>)]) {
    if fields.is_empty() {
        return;
    }
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (f, v) in fields {
        cmd.arg(*f).arg(v);
    }
    pipe.add_command(cmd).ignore();
}

/// A row in the schema's column order from its stored fields.
fn row_of(
    t: &TableSchema,
    key: &[Value],
    mut field: impl FnMut(&str) -> Option<Vec<u8>>,
) -> Result<Row, ConnectorError> {
    t.columns
        .iter()
        .map(|c| match field(&c.name) {
            None => Ok(Value::Null),
            Some(b) => value::decode(t, c, &b)
                .map_err(|e| e.context(format_args!("key {}", key_text(key)))),
        })
        .collect()
}

/// A row as a JSON object of its fields' texts (bytes columns as `\x` hex).
fn json_row(t: &TableSchema, fields: &[(&str, Vec<u8>)]) -> String {
    let mut m = serde_json::Map::new();
    for (name, b) in fields {
        let is_bytes = t
            .columns
            .iter()
            .any(|c| c.name == *name && matches!(c.ty, ColumnType::Bytes { .. }));
        let text = if is_bytes {
            cutover_connector::canonical::bytes_text(b)
        } else {
            String::from_utf8_lossy(b).into_owned()
        };
        m.insert((*name).to_owned(), serde_json::Value::String(text));
    }
    serde_json::Value::Object(m).to_string()
}

fn parse_json_row(
    t: &TableSchema,
    key: &[Value],
    doc: &str,
) -> Result<HashMap<String, Vec<u8>>, ConnectorError> {
    let bad = || {
        ConnectorError::new(
            ErrorKind::Database,
            format!(
                "table {}, key {}: the stored row is not a JSON object of strings cutover \
                 wrote; correct it or run `cutover verify --repair`",
                t.name,
                key_text(key)
            ),
        )
    };
    let v: serde_json::Value = serde_json::from_str(doc).map_err(|_| bad())?;
    let obj = v.as_object().ok_or_else(bad)?;
    let mut out = HashMap::with_capacity(obj.len());
    for (k, v) in obj {
        let s = v.as_str().ok_or_else(bad)?;
        let is_bytes = t
            .columns
            .iter()
            .any(|c| c.name == *k && matches!(c.ty, ColumnType::Bytes { .. }));
        let b = if is_bytes {
            hex_bytes(s).ok_or_else(bad)?
        } else {
            s.as_bytes().to_vec()
        };
        out.insert(k.clone(), b);
    }
    Ok(out)
}

fn hex_bytes(s: &str) -> Option<Vec<u8>> {
    let h = s.strip_prefix("\\x")?;
    if h.len() % 2 != 0 {
        return None;
    }
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(h.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A table's schema as stored: cutover-model's row codec over its parts.
pub(crate) fn encode_schema(t: &TableSchema) -> Vec<u8> {
    let text = |s: &str| Value::Text(s.to_owned());
    let mut v = vec![
        t.name.schema.as_deref().map_or(Value::Null, text),
        text(&t.name.name),
        Value::Int(t.columns.len() as i64),
    ];
    for c in &t.columns {
        v.push(text(&c.name));
        v.push(text(&value::type_spec(&c.ty)));
        v.push(text(&c.declared_type));
        v.push(Value::Bool(c.nullable));
        v.push(c.default.as_deref().map_or(Value::Null, text));
    }
    v.extend(t.primary_key.iter().map(|&i| Value::Int(i as i64)));
    encode_row(&v)
}

pub(crate) fn decode_schema(b: &[u8]) -> Option<TableSchema> {
    let v = decode_row(b).ok()?;
    let text = |v: &Value| match v {
        Value::Text(s) => Some(s.clone()),
        _ => None,
    };
    let opt = |v: &Value| match v {
        Value::Null => Some(None),
        other => text(other).map(Some),
    };
    let n = match v.get(2)? {
        Value::Int(n) => usize::try_from(*n).ok()?,
        _ => return None,
    };
    let mut columns = Vec::with_capacity(n);
    for i in 0..n {
        let f = v.get(3 + 5 * i..3 + 5 * (i + 1))?;
        columns.push(Column {
            name: text(&f[0])?,
            ty: value::parse_type_spec(&text(&f[1])?)?,
            declared_type: text(&f[2])?,
            nullable: matches!(f[3], Value::Bool(true)),
            default: opt(&f[4])?,
        });
    }
    let primary_key = v
        .get(3 + 5 * n..)?
        .iter()
        .map(|p| match p {
            Value::Int(i) => usize::try_from(*i).ok().filter(|i| *i < n),
            _ => None,
        })
        .collect::<Option<Vec<usize>>>()?;
    Some(TableSchema {
        name: TableName {
            schema: opt(v.first()?)?,
            name: text(v.get(1)?)?,
        },
        columns,
        primary_key,
        indexes: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_round_trip_and_garbage_is_none() {
        let t = TableSchema {
            name: TableName::new(Some("public"), "a:b"),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                    declared_type: "bigint".into(),
                    nullable: false,
                    default: None,
                },
                Column {
                    name: "v".into(),
                    ty: ColumnType::Array(Box::new(ColumnType::Text { max_len: Some(3) })),
                    declared_type: "varchar(3)[]".into(),
                    nullable: true,
                    default: Some("'{}'".into()),
                },
            ],
            primary_key: vec![0],
            indexes: Vec::new(),
        };
        assert_eq!(decode_schema(&encode_schema(&t)), Some(t));
        assert_eq!(decode_schema(b"\x01\x02"), None);
        assert_eq!(decode_schema(&encode_row(&[Value::Int(1)])), None);
    }

    #[test]
    fn bytes_in_json_rows_are_hex() {
        assert_eq!(hex_bytes("\\x00ff"), Some(vec![0, 255]));
        assert_eq!(hex_bytes("\\x0"), None);
        assert_eq!(hex_bytes("00"), None);
    }
}
