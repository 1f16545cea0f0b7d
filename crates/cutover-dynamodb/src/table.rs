//! How a table of the source lies in DynamoDB: its table's name, its key attributes, and rows
//! as items (and back). Pure: no I/O.

use std::collections::HashMap;
use std::io::Read;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use cutover_connector::{canonical, key_text, ConnectorError, ErrorKind};
use cutover_model::{Key, Row, TableName, TableSchema, Value};

use crate::endpoint::Oversize;
use crate::value::{self, ValueError};

/// The source position of the change an item holds (its order's sort key and the change's
/// index in its transaction), which every later write is conditioned on.
pub const POS: &str = "_cutover_pos";
/// The partition key of tables whose primary key has more than two columns: the canonical row
/// text of the key's values (`(1,abc,2)`).
pub const COMPOSITE: &str = "_cutover_key";
/// The names of the attributes stored compressed (`?oversize=compress`).
pub const COMPRESSED: &str = "_cutover_z";
/// DynamoDB's item size limit.
pub const MAX_ITEM: usize = 400 * 1024;

pub type Item = HashMap<String, AttributeValue>;

/// Where a table's primary key goes.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyLayout {
    /// One column: the partition key.
    Partition(usize),
    /// Two columns: partition key and sort key.
    PartitionSort(usize, usize),
    /// More: one text partition key, [`COMPOSITE`].
    Composite(Vec<usize>),
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub schema: TableSchema,
    /// The DynamoDB table's name.
    pub name: String,
    pub key: KeyLayout,
}

/// `prefix` + the table's name, with its schema when it is not `public`.
pub fn table_name(prefix: &str, t: &TableName) -> Result<String, ConnectorError> {
    let name = match t.schema.as_deref() {
        Some(s) if s != "public" && s != "main" => format!("{prefix}{s}.{}", t.name),
        _ => format!("{prefix}{}", t.name),
    };
    if name.len() < 3
        || name.len() > 255
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "table {t} would be the DynamoDB table {name:?}: DynamoDB names have 3 to 255 \
                 letters, digits, '_', '-' or '.'; choose a table prefix in the URL \
                 (dynamodb://PREFIX) that makes it one"
            ),
        ));
    }
    Ok(name)
}

impl Layout {
    pub fn new(prefix: &str, schema: &TableSchema) -> Result<Layout, ConnectorError> {
        let t = &schema.name;
        let key = match schema.primary_key.as_slice() {
            [] => {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "table {t} has no primary key: a DynamoDB item needs one; add a \
                         primary key on the source or leave the table out"
                    ),
                ))
            }
            [a] => KeyLayout::Partition(*a),
            [a, b] => KeyLayout::PartitionSort(*a, *b),
            more => KeyLayout::Composite(more.to_vec()),
        };
        if let Some(c) = schema
            .columns
            .iter()
            .find(|c| c.name.starts_with("_cutover_") || c.name.is_empty())
        {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "column {:?} of {t}: names starting with _cutover_ are cutover's own \
                     attributes in DynamoDB; rename the column",
                    c.name
                ),
            ));
        }
        Ok(Layout {
            schema: schema.clone(),
            name: table_name(prefix, t)?,
            key,
        })
    }

    /// The key attributes' names and types (`N`, `S`, `B`): the partition key first.
    pub fn key_schema(&self) -> Vec<(String, &'static str)> {
        let col = |i: usize| {
            let c = &self.schema.columns[i];
            (c.name.clone(), value::key_type(&c.ty))
        };
        match &self.key {
            KeyLayout::Partition(a) => vec![col(*a)],
            KeyLayout::PartitionSort(a, b) => vec![col(*a), col(*b)],
            KeyLayout::Composite(_) => vec![(COMPOSITE.to_owned(), "S")],
        }
    }

    fn error(&self, key: &[Value], e: impl std::fmt::Display) -> ConnectorError {
        ConnectorError::new(
            ErrorKind::LossyConversion,
            format!("{} key {}: {e}", self.schema.name, key_text(key)),
        )
    }

    /// The key attributes of a key (the primary key's values in key order).
    pub fn key_item(&self, key: &Key) -> Result<Item, ConnectorError> {
        let attr = |v: &Value| value::key_attribute(v).map_err(|e| self.error(key, e));
        let mut item = Item::new();
        match &self.key {
            KeyLayout::Partition(a) => {
                item.insert(self.schema.columns[*a].name.clone(), attr(first(key, 0))?);
            }
            KeyLayout::PartitionSort(a, b) => {
                item.insert(self.schema.columns[*a].name.clone(), attr(first(key, 0))?);
                item.insert(self.schema.columns[*b].name.clone(), attr(first(key, 1))?);
            }
            KeyLayout::Composite(_) => {
                let texts = key
                    .iter()
                    .map(canonical::value_text)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| self.error(key, e))?;
                let text = canonical::row_text(texts.iter().map(|t| t.as_deref()));
                item.insert(COMPOSITE.to_owned(), AttributeValue::S(text));
            }
        }
        Ok(item)
    }

    /// A text naming a key's item among the batch's writes (for ordering per key).
    pub fn key_id(&self, key: &Key) -> String {
        format!("{}\u{0}{key:?}", self.name)
    }

    /// The item of a row whose values are in `columns`' order; `skip` lists the positions of
    /// values to leave out (unchanged TOAST values). Fitted to DynamoDB's size limit.
    pub fn item(
        &self,
        columns: &[String],
        row: &Row,
        skip: &[usize],
        oversize: Oversize,
    ) -> Result<Item, ConnectorError> {
        let key = self.schema.key_of(row);
        let mut item = self.key_item(&key)?;
        for (i, (name, v)) in columns.iter().zip(row).enumerate() {
            if skip.contains(&i) || item.contains_key(name) {
                continue;
            }
            let a = value::attribute(v).map_err(|e| match e {
                ValueError::Canonical(c) => c.at(&self.schema.name, name, &key),
                other => ConnectorError::new(
                    ErrorKind::LossyConversion,
                    format!(
                        "{} column {name} key {}: {other}; change the value or the column's \
                         type on the source, or leave the table out",
                        self.schema.name,
                        key_text(&key)
                    ),
                ),
            })?;
            item.insert(name.clone(), a);
        }
        fit(&self.schema.name, &key, item, oversize)
    }

    /// A row (in the schema's column order) from an item.
    pub fn row(&self, item: &Item) -> Result<Row, ConnectorError> {
        let item = expand(item).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("an item of {}: {e}", self.name),
            )
        })?;
        self.schema
            .columns
            .iter()
            .map(|c| {
                value::value(&c.ty, &c.declared_type, item.get(&c.name)).map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!("{} column {}: {e}", self.schema.name, c.name),
                    )
                })
            })
            .collect()
    }

    /// The key and each column's canonical text of an item.
    pub fn canonical(&self, item: &Item) -> Result<(Key, Vec<Option<String>>), ConnectorError> {
        let item = expand(item).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("an item of {}: {e}", self.name),
            )
        })?;
        let key = self.key_of(&item)?;
        let texts = self
            .schema
            .columns
            .iter()
            .map(|c| {
                value::canonical_text(&c.ty, item.get(&c.name))
                    .map_err(|e| e.at(&self.schema.name, &c.name, &key))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((key, texts))
    }

    /// The primary key's values of an item.
    pub fn key_of(&self, item: &Item) -> Result<Key, ConnectorError> {
        self.schema
            .primary_key
            .iter()
            .map(|&i| {
                let c = &self.schema.columns[i];
                value::value(&c.ty, &c.declared_type, item.get(&c.name)).map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!("{} key column {}: {e}", self.schema.name, c.name),
                    )
                })
            })
            .collect()
    }
}

fn first(key: &Key, i: usize) -> &Value {
    key.get(i).unwrap_or(&Value::Null)
}

/// An item's size as DynamoDB counts it.
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| value::attribute_size(k, v)).sum()
}

const TAG_S: u8 = b'S';
const TAG_B: u8 = b'B';

/// Makes an item fit 400 KB: refused (naming table, key and size) or, with `compress`, its
/// largest text and binary attributes compressed one by one until it fits.
pub fn fit(
    table: &TableName,
    key: &Key,
    mut item: Item,
    oversize: Oversize,
) -> Result<Item, ConnectorError> {
    let size = item_size(&item);
    if size <= MAX_ITEM {
        return Ok(item);
    }
    let refuse = |size: usize, what: &str| {
        ConnectorError::new(
            ErrorKind::LossyConversion,
            format!(
                "{table} key {}: the item is {size} bytes{what}, over DynamoDB's limit of \
                 {MAX_ITEM} bytes (400 KB); add ?oversize=compress to the target URL to \
                 compress its largest attributes, or leave the table out",
                key_text(key)
            ),
        )
    };
    if oversize == Oversize::Error {
        return Err(refuse(size, ""));
    }
    let mut candidates: Vec<(String, usize)> = item
        .iter()
        .filter(|(_, v)| matches!(v, AttributeValue::S(_) | AttributeValue::B(_)))
        .map(|(k, v)| (k.clone(), value::attribute_size(k, v)))
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.1));
    let mut compressed = Vec::new();
    let mut size = size;
    for (name, _) in candidates {
        let Some(v) = item.get(&name) else { continue };
        let (tag, bytes) = match v {
            AttributeValue::S(s) => (TAG_S, s.as_bytes()),
            AttributeValue::B(b) => (TAG_B, b.as_ref()),
            _ => continue,
        };
        let mut out = vec![tag];
        let packed = zstd::bulk::compress(bytes, 3).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("{table} key {}: compressing {name}: {e}", key_text(key)),
            )
        })?;
        out.extend(packed);
        if out.len() >= bytes.len() {
            continue;
        }
        size = size - bytes.len() + out.len();
        item.insert(name.clone(), AttributeValue::B(Blob::new(out)));
        compressed.push(name);
        // The marker's own size: the names and its attribute name.
        if size + COMPRESSED.len() + compressed.iter().map(String::len).sum::<usize>() <= MAX_ITEM {
            break;
        }
    }
    if compressed.is_empty() {
        return Err(refuse(size, " and does not compress"));
    }
    item.insert(COMPRESSED.to_owned(), AttributeValue::Ss(compressed));
    let size = item_size(&item);
    if size > MAX_ITEM {
        return Err(refuse(size, " even compressed"));
    }
    Ok(item)
}

/// The item with its compressed attributes restored (a copy only if it has any).
pub fn expand(item: &Item) -> Result<std::borrow::Cow<'_, Item>, String> {
    let Some(AttributeValue::Ss(names)) = item.get(COMPRESSED) else {
        return Ok(std::borrow::Cow::Borrowed(item));
    };
    let mut out = item.clone();
    for name in names {
        let Some(AttributeValue::B(b)) = item.get(name) else {
            continue;
        };
        let bytes = b.as_ref();
        let (tag, packed) = bytes
            .split_first()
            .ok_or_else(|| format!("the compressed attribute {name} is empty"))?;
        let mut data = Vec::new();
        zstd::stream::read::Decoder::new(packed)
            .and_then(|mut d| d.read_to_end(&mut data))
            .map_err(|e| format!("the compressed attribute {name}: {e}"))?;
        let v = match *tag {
            TAG_S => AttributeValue::S(
                String::from_utf8(data)
                    .map_err(|_| format!("the compressed text {name} is not UTF-8"))?,
            ),
            TAG_B => AttributeValue::B(Blob::new(data)),
            other => return Err(format!("the compressed attribute {name} has tag {other}")),
        };
        out.insert(name.clone(), v);
    }
    out.remove(COMPRESSED);
    Ok(std::borrow::Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType};

    fn schema(key: Vec<usize>) -> TableSchema {
        let col = |n: &str, ty| Column {
            name: n.into(),
            ty,
            declared_type: "x".into(),
            nullable: true,
            default: None,
        };
        TableSchema {
            name: TableName {
                schema: Some("public".into()),
                name: "docs".into(),
            },
            columns: vec![
                col(
                    "id",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                ),
                col("k", ColumnType::Text { max_len: None }),
                col(
                    "z",
                    ColumnType::Int {
                        bits: 32,
                        unsigned: false,
                    },
                ),
                col("body", ColumnType::Text { max_len: None }),
            ],
            primary_key: key,
            indexes: vec![],
        }
    }

    #[test]
    fn keys_map_to_partition_sort_or_composite() {
        let l = Layout::new("p_", &schema(vec![0])).unwrap();
        assert_eq!(l.name, "p_docs");
        assert_eq!(l.key_schema(), vec![("id".to_owned(), "N")]);
        let l = Layout::new("p_", &schema(vec![0, 1])).unwrap();
        assert_eq!(
            l.key_schema(),
            vec![("id".to_owned(), "N"), ("k".to_owned(), "S")]
        );
        let l = Layout::new("p_", &schema(vec![0, 1, 2])).unwrap();
        let item = l
            .key_item(&vec![
                Value::Int(1),
                Value::Text("a b".into()),
                Value::Int(2),
            ])
            .unwrap();
        assert_eq!(
            item.get(COMPOSITE),
            Some(&AttributeValue::S("(1,\"a b\",2)".into()))
        );
        assert!(Layout::new("p_", &schema(vec![])).is_err());
        let other = TableName {
            schema: Some("sales".into()),
            name: "x".into(),
        };
        assert_eq!(table_name("", &other).unwrap(), "sales.x");
        assert!(table_name(
            "",
            &TableName {
                schema: None,
                name: "ab".into()
            }
        )
        .is_err());
    }

    #[test]
    fn a_value_dynamodb_cannot_hold_is_refused_naming_table_column_and_key() {
        let mut s = schema(vec![0]);
        s.columns[2].ty = ColumnType::Decimal {
            precision: None,
            scale: None,
        };
        s.columns[2].name = "amount".into();
        let l = Layout::new("p_", &s).unwrap();
        let cols: Vec<String> = l.schema.columns.iter().map(|c| c.name.clone()).collect();
        for bad in [
            "NaN",
            "Infinity",
            "1234567890123456789012345678901234567890",
        ] {
            let row = vec![
                Value::Int(42),
                Value::Null,
                Value::Decimal(bad.parse().unwrap()),
                Value::Null,
            ];
            let e = l.item(&cols, &row, &[], Oversize::Compress).unwrap_err();
            let m = e.to_string();
            assert_eq!(e.kind(), ErrorKind::LossyConversion, "{m}");
            assert!(
                m.contains("public.docs") && m.contains("amount") && m.contains("(42)"),
                "{m}"
            );
        }
    }

    #[test]
    fn oversize_items_are_refused_or_compressed_and_read_back_whole() {
        let l = Layout::new("p_", &schema(vec![0])).unwrap();
        let cols: Vec<String> = l.schema.columns.iter().map(|c| c.name.clone()).collect();
        let body = "cutover ".repeat(70_000); // 560,000 bytes
        let row = vec![
            Value::Int(7),
            Value::Text("k".into()),
            Value::Null,
            Value::Text(body.clone()),
        ];
        let e = l.item(&cols, &row, &[], Oversize::Error).unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("public.docs") && m.contains("(7)") && m.contains("560"),
            "{m}"
        );
        let item = l.item(&cols, &row, &[], Oversize::Compress).unwrap();
        assert!(item_size(&item) <= MAX_ITEM);
        assert!(matches!(item.get("body"), Some(AttributeValue::B(_))));
        let back = l.row(&item).unwrap();
        assert_eq!(back[3], Value::Text(body));
        // Random bytes do not compress: refused all the same.
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let noise: Vec<u8> = (0..500_000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        let mut s = schema(vec![0]);
        s.columns[3].ty = ColumnType::Bytes { max_len: None };
        let l = Layout::new("p_", &s).unwrap();
        let row = vec![Value::Int(8), Value::Null, Value::Null, Value::Bytes(noise)];
        assert!(l.item(&cols, &row, &[], Oversize::Compress).is_err());
    }
}
