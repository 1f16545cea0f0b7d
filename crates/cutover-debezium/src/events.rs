//! An apply batch as change events: one event per copied row (`r`) and per row change (`c`,
//! `u`, `d`; an update that moves a key is a delete of the old key and a create of the new one,
//! as Debezium writes it; a truncate is one `t` event per table), in the batch's order.
//!
//! Each event is named ([`Name`]) the same way every time the same event is sent: a captured
//! change by its transaction's position, its index in it ([`ApplyOp::Origin`]), a hash of its
//! content (pieces of one large transaction share a position and restart their index) and its
//! part; a copied row by hashes of its key and its values. A stream uses the names to keep what
//! a replay after a crash sends again from being stored twice.

use std::collections::HashMap;
use std::time::SystemTime;

use cutover_connector::{canonical, key_text, ApplyOp, ConnectorError, ErrorKind};
use cutover_model::{Change, Key, Position, Row, TableName, TableSchema, Value};
use serde_json::Value as Json;

use crate::envelope::{self, Op, Source};

/// A table a stream was prepared for, and the columns its rows carry now
/// ([`ApplyOp::Columns`]).
#[derive(Debug, Clone)]
pub struct StreamTable {
    pub schema: TableSchema,
    pub columns: Vec<String>,
}

impl StreamTable {
    pub fn new(schema: &TableSchema) -> StreamTable {
        StreamTable {
            schema: schema.clone(),
            columns: schema.columns.iter().map(|c| c.name.clone()).collect(),
        }
    }
}

/// How an event is named, the same each time it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Name {
    /// A copied row: the canonical hashes of its key and of its values.
    Copy { key: u64, row: u64 },
    /// A captured change: its transaction's position and its index there, the hash of its
    /// content, and its part (an update that moves a key: 0 the delete, 1 the create; a
    /// truncate: the table's place among the truncated tables).
    Change {
        position: Position,
        index: u32,
        content: u64,
        part: u32,
    },
}

/// One event to send.
#[derive(Debug, Clone)]
pub struct Event {
    pub table: TableName,
    pub op: Op,
    /// The row's key values (the message's key); `None` for a truncate.
    pub key: Option<Key>,
    /// The key as Debezium's record key, `{"column": value, …}` (`null` for a truncate).
    pub key_json: Json,
    /// The whole envelope.
    pub envelope: Json,
    pub name: Name,
}

/// Where the next change comes from.
struct Origin {
    position: Position,
    index: u32,
    committed_at: Option<SystemTime>,
    tag: Option<u64>,
}

/// The events of `ops`, in order. `migration` is Debezium's logical server name; `tables` are
/// the tables the stream was prepared for; the columns the batch's [`ApplyOp::Columns`]
/// announce hold for the rest of it and, once every event is made, for the batches after it.
/// A change of another table is an error, and so is a value that has no text (named with its
/// table and key); control ops (chunk marks, watched keys, column changes a stream has no use
/// for) make no event.
pub fn events(
    migration: &str,
    tables: &mut HashMap<TableName, StreamTable>,
    ops: &[ApplyOp],
    now: SystemTime,
) -> Result<Vec<Event>, ConnectorError> {
    let mut announced: HashMap<TableName, Vec<String>> = HashMap::new();
    let out = batch_events(migration, tables, &mut announced, ops, now)?;
    for (table, columns) in announced {
        if let Some(t) = tables.get_mut(&table) {
            t.columns = columns;
        }
    }
    Ok(out)
}

fn batch_events(
    migration: &str,
    prepared: &HashMap<TableName, StreamTable>,
    announced: &mut HashMap<TableName, Vec<String>>,
    ops: &[ApplyOp],
    now: SystemTime,
) -> Result<Vec<Event>, ConnectorError> {
    let mut out = Vec::with_capacity(ops.len());
    let mut origin: Option<Origin> = None;
    for op in ops {
        match op {
            ApplyOp::Origin {
                position,
                index,
                committed_at,
                tag,
            } => {
                origin = Some(Origin {
                    position: position.clone(),
                    index: *index,
                    committed_at: *committed_at,
                    tag: *tag,
                })
            }
            ApplyOp::Columns { table, columns } => {
                announced.insert(table.clone(), columns.clone());
            }
            ApplyOp::Upsert { table, row } => {
                let t = table_of(prepared, announced, table)?;
                let key = t.schema.key_of(row);
                let after = envelope::row(t.columns, row, &[]).map_err(|e| at(table, &key, e))?;
                let name = Name::Copy {
                    key: hash_values(&key).map_err(|e| at(table, &key, e))?,
                    row: hash_values(row).map_err(|e| at(table, &key, e))?,
                };
                let e = event(migration, table, Op::Read, Json::Null, after, None, now);
                out.push(keyed(&t, key, Op::Read, e, name)?);
            }
            ApplyOp::Change(change) => {
                let Some(o) = &origin else {
                    return Err(ConnectorError::new(
                        ErrorKind::Database,
                        "a change reached a stream target without its origin (a bug in the applier)",
                    ));
                };
                let content = change_hash(change).map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::LossyConversion,
                        format!("a change at {}: {e}", o.position),
                    )
                })?;
                let name = |part: u32| Name::Change {
                    position: o.position.clone(),
                    index: o.index,
                    content,
                    part,
                };
                let ev = |table: &TableName, op: Op, before: Json, after: Json| {
                    event(migration, table, op, before, after, Some(o), now)
                };
                match change {
                    Change::Insert { table, row } => {
                        let t = table_of(prepared, announced, table)?;
                        let key = t.schema.key_of(row);
                        let after =
                            envelope::row(t.columns, row, &[]).map_err(|e| at(table, &key, e))?;
                        let e = ev(table, Op::Create, Json::Null, after);
                        out.push(keyed(&t, key, Op::Create, e, name(0))?);
                    }
                    Change::Update {
                        table,
                        old_key,
                        before,
                        row,
                        unchanged,
                    } => {
                        let t = table_of(prepared, announced, table)?;
                        let cols = t.columns;
                        let key = t.schema.key_of(row);
                        let before_json = match before {
                            Some(b) => envelope::row(cols, b, &[]),
                            None => Ok(Json::Null),
                        }
                        .map_err(|e| at(table, old_key, e))?;
                        let after =
                            envelope::row(cols, row, unchanged).map_err(|e| at(table, &key, e))?;
                        if &key != old_key {
                            // Debezium's way with a key that changes: a delete of the old key,
                            // then a create of the new one.
                            let old = match before {
                                Some(_) => before_json,
                                None => envelope::key_row(t.schema, cols, old_key)
                                    .map_err(|e| at(table, old_key, e))?,
                            };
                            let del = ev(table, Op::Delete, old, Json::Null);
                            out.push(keyed(&t, old_key.clone(), Op::Delete, del, name(0))?);
                            let ins = ev(table, Op::Create, Json::Null, after);
                            out.push(keyed(&t, key, Op::Create, ins, name(1))?);
                        } else {
                            let e = ev(table, Op::Update, before_json, after);
                            out.push(keyed(&t, key, Op::Update, e, name(0))?);
                        }
                    }
                    Change::Delete {
                        table,
                        old_key,
                        before,
                    } => {
                        let t = table_of(prepared, announced, table)?;
                        let before = match before {
                            Some(b) => envelope::row(t.columns, b, &[]),
                            None => envelope::key_row(t.schema, t.columns, old_key),
                        }
                        .map_err(|e| at(table, old_key, e))?;
                        let e = ev(table, Op::Delete, before, Json::Null);
                        out.push(keyed(&t, old_key.clone(), Op::Delete, e, name(0))?);
                    }
                    Change::Truncate { tables: truncated } => {
                        for (i, table) in truncated.iter().enumerate() {
                            if !prepared.contains_key(table) {
                                continue;
                            }
                            let part = u32::try_from(i).unwrap_or(u32::MAX);
                            out.push(Event {
                                table: table.clone(),
                                op: Op::Truncate,
                                key: None,
                                key_json: Json::Null,
                                envelope: ev(table, Op::Truncate, Json::Null, Json::Null),
                                name: name(part),
                            });
                        }
                    }
                    // Shapes are the applier's business; the events carry column names.
                    Change::Schema { .. } => {}
                }
            }
            // A stream has no columns to alter; the state store keeps the control ops.
            ApplyOp::Alter { .. } | ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. } => {}
        }
    }
    Ok(out)
}

/// A prepared table with the columns its rows carry at this point of the batch.
struct Current<'t> {
    schema: &'t TableSchema,
    columns: &'t [String],
}

fn table_of<'t>(
    prepared: &'t HashMap<TableName, StreamTable>,
    announced: &'t HashMap<TableName, Vec<String>>,
    name: &TableName,
) -> Result<Current<'t>, ConnectorError> {
    let t = prepared.get(name).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::SchemaMismatch,
            format!("a change of {name}, a table the stream was not prepared for"),
        )
    })?;
    Ok(Current {
        schema: &t.schema,
        columns: announced.get(name).map_or(&t.columns, Vec::as_slice),
    })
}

fn keyed(
    t: &Current<'_>,
    key: Key,
    op: Op,
    envelope: Json,
    name: Name,
) -> Result<Event, ConnectorError> {
    let key_json = envelope::key(t.schema, &key).map_err(|e| at(&t.schema.name, &key, e))?;
    Ok(Event {
        table: t.schema.name.clone(),
        op,
        key: Some(key),
        key_json,
        envelope,
        name,
    })
}

fn event(
    migration: &str,
    table: &TableName,
    op: Op,
    before: Json,
    after: Json,
    origin: Option<&Origin>,
    now: SystemTime,
) -> Json {
    envelope::event(
        op,
        before,
        after,
        &Source {
            name: migration,
            table,
            position: origin.map(|o| &o.position),
            tx: origin.and_then(|o| o.tag),
            committed_at: origin.and_then(|o| o.committed_at),
            snapshot: op == Op::Read,
        },
        now,
    )
}

fn at(table: &TableName, key: &[Value], e: String) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::LossyConversion,
        format!(
            "{table} key {}: {e}; the event cannot be written",
            key_text(key)
        ),
    )
}

/// The canonical row hash of `values` (`docs/CANONICAL.md`), as the name of a copied row.
pub fn hash_values(values: &Row) -> Result<u64, String> {
    let texts: Vec<Option<String>> = values
        .iter()
        .map(canonical::value_text)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let text = canonical::row_text(texts.iter().map(|t| t.as_deref()));
    Ok(canonical::row_hash(&text) as u64)
}

/// A hash of a change's canonical content: its kind, table, old key and row.
pub fn change_hash(change: &Change) -> Result<u64, String> {
    let (kind, table, key, row): (&str, String, Option<&Key>, Option<&Row>) = match change {
        Change::Insert { table, row } => ("c", table.to_string(), None, Some(row)),
        Change::Update {
            table,
            old_key,
            row,
            ..
        } => ("u", table.to_string(), Some(old_key), Some(row)),
        Change::Delete { table, old_key, .. } => ("d", table.to_string(), Some(old_key), None),
        Change::Truncate { tables } => (
            "t",
            tables
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None,
            None,
        ),
        Change::Schema { table, .. } => ("s", table.to_string(), None, None),
    };
    let mut texts: Vec<Option<String>> = vec![Some(kind.to_owned()), Some(table)];
    for v in key.into_iter().flatten().chain(row.into_iter().flatten()) {
        texts.push(canonical::value_text(v).map_err(|e| e.to_string())?);
    }
    Ok(canonical::row_hash(&canonical::row_text(texts.iter().map(|t| t.as_deref()))) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::schema;

    fn origin(p: &str, index: u32) -> ApplyOp {
        ApplyOp::Origin {
            position: Position::new(p).unwrap(),
            index,
            committed_at: None,
            tag: None,
        }
    }

    #[test]
    fn a_key_that_moves_is_a_delete_then_a_create_and_names_are_stable() {
        let s = schema();
        let mut tables = HashMap::from([(s.name.clone(), StreamTable::new(&s))]);
        let ops = vec![
            ApplyOp::Upsert {
                table: s.name.clone(),
                row: vec![Value::Int(1), Value::Text("a".into())],
            },
            origin("p1", 0),
            ApplyOp::Change(Change::Update {
                table: s.name.clone(),
                old_key: vec![Value::Int(1)],
                before: None,
                row: vec![Value::Int(2), Value::Text("a".into())],
                unchanged: Vec::new(),
            }),
        ];
        let now = SystemTime::UNIX_EPOCH;
        let a = events("m", &mut tables, &ops, now).unwrap();
        let ops_of: Vec<&str> = a.iter().map(|e| e.op.code()).collect();
        assert_eq!(ops_of, ["r", "d", "c"]);
        assert_eq!(a[1].key, Some(vec![Value::Int(1)]));
        assert_eq!(a[1].envelope["before"]["id"], 1);
        assert_eq!(a[2].key_json, serde_json::json!({"id": 2}));
        assert!(matches!(
            a[2].name,
            Name::Change {
                part: 1,
                index: 0,
                ..
            }
        ));
        let b = events("m", &mut tables, &ops, now).unwrap();
        let names = |v: &[Event]| v.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn a_change_without_its_origin_or_of_an_unknown_table_is_refused() {
        let s = schema();
        let mut tables = HashMap::from([(s.name.clone(), StreamTable::new(&s))]);
        let insert = |t: &TableName| {
            ApplyOp::Change(Change::Insert {
                table: t.clone(),
                row: vec![Value::Int(1), Value::Null],
            })
        };
        let now = SystemTime::UNIX_EPOCH;
        let e = events("m", &mut tables, &[insert(&s.name)], now).unwrap_err();
        assert!(e.to_string().contains("without its origin"), "{e}");
        let other = TableName::new(Some("public"), "u");
        let e = events("m", &mut tables, &[origin("p", 0), insert(&other)], now).unwrap_err();
        assert!(e.to_string().contains("not prepared for"), "{e}");
    }
}
