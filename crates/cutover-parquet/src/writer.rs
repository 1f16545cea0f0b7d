//! Writing the lake: per table, the copy's rows as `copy/part-NNNNNN.parquet` and then the
//! changes as `changes/part-NNNNNN.parquet` (columns `_op`, `_position`, `_index`,
//! `_committed_at`, `_unchanged`, then the row's), and `_manifest.json`, the list readers follow.
//!
//! Rows are held in memory and written out when they reach `roll_bytes` or `roll_after`
//! ([`Writer::flush`]). A file is written to a temporary name, synced and renamed, then the
//! manifest the same way: a reader following the manifest never sees a partial file, and a
//! file a crash left outside the manifest is overwritten by the next one. The manifest keeps
//! each change file's last (position, index): a change at or before it is not written again
//! after a restart, so each change is in the lake once.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray, UInt32Array};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use cutover_connector::{
    key_text, ApplyOp, ConnectorError, ErrorKind, PositionOrder, Writer, Written,
};
use cutover_model::{Change, Position, Row, TableName, TableSchema, Value};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde_json::{json, Value as Json};

use crate::arrow::{array, data_type};
use crate::endpoint::ParquetEndpoint;

fn io(context: impl std::fmt::Display, e: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::new(ErrorKind::Database, format!("{context}: {e}"))
}

/// A row held for a change file.
struct Held {
    op: &'static str,
    origin: Option<(Position, u32, Option<SystemTime>)>,
    unchanged: Option<String>,
    row: Row,
}

struct Table {
    schema: TableSchema,
    dir: PathBuf,
    manifest: Json,
    copy: Vec<Row>,
    changes: Vec<Held>,
    /// The last change in this table's files: a change at or before it is skipped.
    last: Option<(Position, u32)>,
}

pub struct ParquetWriter {
    endpoint: ParquetEndpoint,
    tables: HashMap<TableName, Table>,
    order: Option<&'static dyn PositionOrder>,
    held_bytes: usize,
    held_since: Option<Instant>,
}

impl ParquetWriter {
    pub fn new(endpoint: &ParquetEndpoint) -> ParquetWriter {
        ParquetWriter {
            endpoint: endpoint.clone(),
            tables: HashMap::new(),
            order: None,
            held_bytes: 0,
            held_since: None,
        }
    }

    /// The directory of `table` under the lake's root: `schema.table` (or `table`), with `/`
    /// and NUL as `_`.
    pub fn table_dir(root: &Path, table: &TableName) -> PathBuf {
        let name = match &table.schema {
            Some(s) => format!("{s}.{}", table.name),
            None => table.name.clone(),
        };
        root.join(name.replace(['/', '\0'], "_"))
    }

    fn skip(&self, t: &Table, position: &Position, index: u32) -> bool {
        let (Some((last_p, last_i)), Some(order)) = (&t.last, self.order) else {
            return false;
        };
        match order.compare(position, last_p) {
            Some(std::cmp::Ordering::Less) => true,
            Some(std::cmp::Ordering::Equal) => index <= *last_i,
            _ => false,
        }
    }

    fn due(&self) -> bool {
        self.endpoint.roll_after.is_zero()
            || self.held_bytes >= self.endpoint.roll_bytes
            || self
                .held_since
                .is_some_and(|t| t.elapsed() >= self.endpoint.roll_after)
    }

    /// Writes every table's held rows out.
    fn flush_all(&mut self) -> Result<(), ConnectorError> {
        let names: Vec<TableName> = self.tables.keys().cloned().collect();
        for name in names {
            self.flush_table(&name)?;
        }
        self.held_bytes = 0;
        self.held_since = None;
        Ok(())
    }

    fn flush_table(&mut self, name: &TableName) -> Result<(), ConnectorError> {
        let Some(t) = self.tables.get_mut(name) else {
            return Ok(());
        };
        if !t.copy.is_empty() {
            let rows = std::mem::take(&mut t.copy);
            let batch = row_batch(&t.schema, &[], rows.iter().map(|r| r.as_slice()))?;
            let n = rows.len();
            write_file(t, "copy", &batch, n, None)?;
        }
        if !t.changes.is_empty() {
            let held = std::mem::take(&mut t.changes);
            let ops: Vec<Option<&str>> = held.iter().map(|h| Some(h.op)).collect();
            let positions: Vec<Option<String>> = held
                .iter()
                .map(|h| h.origin.as_ref().map(|o| o.0.to_string()))
                .collect();
            let indexes: Vec<Option<u32>> = held
                .iter()
                .map(|h| h.origin.as_ref().map(|o| o.1))
                .collect();
            let committed: Vec<Option<i64>> = held
                .iter()
                .map(|h| {
                    h.origin
                        .as_ref()
                        .and_then(|o| o.2)
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .and_then(|d| i64::try_from(d.as_micros()).ok())
                })
                .collect();
            let unchanged: Vec<Option<&str>> =
                held.iter().map(|h| h.unchanged.as_deref()).collect();
            let meta: Vec<(Field, ArrayRef)> = vec![
                (
                    Field::new("_op", DataType::Utf8, false),
                    Arc::new(StringArray::from(ops)),
                ),
                (
                    Field::new("_position", DataType::Utf8, true),
                    Arc::new(StringArray::from(positions)),
                ),
                (
                    Field::new("_index", DataType::UInt32, true),
                    Arc::new(UInt32Array::from(indexes)),
                ),
                (
                    Field::new(
                        "_committed_at",
                        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                        true,
                    ),
                    Arc::new(TimestampMicrosecondArray::from(committed).with_timezone("UTC")),
                ),
                (
                    Field::new("_unchanged", DataType::Utf8, true),
                    Arc::new(StringArray::from(unchanged)),
                ),
            ];
            let batch = row_batch(&t.schema, &meta, held.iter().map(|h| h.row.as_slice()))?;
            let last = held
                .iter()
                .rev()
                .find_map(|h| h.origin.as_ref().map(|o| (o.0.clone(), o.1)));
            write_file(t, "changes", &batch, held.len(), last.clone())?;
            if last.is_some() {
                t.last = last;
            }
        }
        Ok(())
    }
}

/// The Arrow schema of `table`'s rows (every column nullable: a delete carries only its key),
/// after the `meta` columns.
fn row_batch<'a>(
    table: &TableSchema,
    meta: &[(Field, ArrayRef)],
    rows: impl Iterator<Item = &'a [Value]> + Clone,
) -> Result<RecordBatch, ConnectorError> {
    let mut fields: Vec<Field> = meta.iter().map(|(f, _)| f.clone()).collect();
    let mut arrays: Vec<ArrayRef> = meta.iter().map(|(_, a)| a.clone()).collect();
    let all: Vec<&[Value]> = rows.collect();
    for (i, c) in table.columns.iter().enumerate() {
        let ty = data_type(&c.ty);
        let values: Vec<&Value> = all
            .iter()
            .map(|r| r.get(i).unwrap_or(&Value::Null))
            .collect();
        let a = array(&ty, &values).map_err(|(row, e)| {
            let key = all.get(row).map(|r| table.key_of(r)).unwrap_or_default();
            ConnectorError::new(
                ErrorKind::LossyConversion,
                format!(
                    "{} key {}, column {} ({}): {e}",
                    table.name,
                    key_text(&key),
                    c.name,
                    c.declared_type
                ),
            )
        })?;
        fields.push(Field::new(&c.name, ty, true));
        arrays.push(a);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| io(format!("building rows of {}", table.name), e))
}

fn sync_dir(dir: &Path) -> Result<(), ConnectorError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(format!("syncing {}", dir.display()), e))
}

/// Writes `bytes` to `path` whole: a temporary file, synced, renamed over it, the directory
/// synced.
fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), ConnectorError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).map_err(|e| io(format!("creating {}", tmp.display()), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| io(format!("renaming to {}", path.display()), e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn write_file(
    t: &mut Table,
    kind: &str,
    batch: &RecordBatch,
    rows: usize,
    last: Option<(Position, u32)>,
) -> Result<(), ConnectorError> {
    let files = t.manifest["files"].as_array().map_or(0, Vec::len);
    let rel = format!("{kind}/part-{:06}.parquet", files + 1);
    let path = t.dir.join(&rel);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props))
        .map_err(|e| io(format!("starting {}", path.display()), e))?;
    w.write(batch)
        .map_err(|e| io(format!("writing {}", path.display()), e))?;
    w.close()
        .map_err(|e| io(format!("finishing {}", path.display()), e))?;
    write_whole(&path, &buf)?;
    after_file()?;
    if let Some(files) = t.manifest["files"].as_array_mut() {
        files.push(json!({
            "path": rel,
            "kind": kind,
            "rows": rows,
            "bytes": buf.len(),
            "last_position": last.as_ref().map(|l| l.0.to_string()),
            "last_index": last.as_ref().map(|l| l.1),
        }));
    }
    let text = serde_json::to_vec_pretty(&t.manifest).map_err(|e| io("writing the manifest", e))?;
    write_whole(&t.dir.join("_manifest.json"), &text)
}

/// Crash tests' failpoint `parquet::writer::after-file`: a data file is in place, the
/// manifest does not list it yet (feature `failpoints`).
fn after_file() -> Result<(), ConnectorError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("parquet::writer::after-file", |_| {
        Err(ConnectorError::new(
            ErrorKind::Database,
            "failpoint parquet::writer::after-file",
        ))
    });
    Ok(())
}

/// The column types as the manifest lists them.
fn manifest_columns(t: &TableSchema) -> Json {
    Json::Array(
        t.columns
            .iter()
            .map(|c| {
                json!({
                    "name": c.name,
                    "type": data_type(&c.ty).to_string(),
                    "source_type": c.declared_type,
                    "key": t.primary_key.iter().position(|&k| t.columns.get(k) == Some(c)),
                })
            })
            .collect(),
    )
}

impl Writer for ParquetWriter {
    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let root = &self.endpoint.dir;
        fs::create_dir_all(root).map_err(|e| io(format!("creating {}", root.display()), e))?;
        for t in tables {
            let dir = Self::table_dir(root, &t.name);
            for sub in ["copy", "changes"] {
                fs::create_dir_all(dir.join(sub))
                    .map_err(|e| io(format!("creating {}", dir.display()), e))?;
            }
            let path = dir.join("_manifest.json");
            let manifest = match fs::read(&path) {
                Ok(bytes) => serde_json::from_slice::<Json>(&bytes)
                    .map_err(|e| io(format!("reading {} (edited by hand?)", path.display()), e))?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let m = json!({
                        "format": 1,
                        "table": {"schema": t.name.schema, "name": t.name.name},
                        "columns": manifest_columns(t),
                        "change_columns": ["_op", "_position", "_index", "_committed_at", "_unchanged"],
                        "files": [],
                    });
                    let text =
                        serde_json::to_vec_pretty(&m).map_err(|e| io("writing the manifest", e))?;
                    write_whole(&path, &text)?;
                    m
                }
                Err(e) => return Err(io(format!("reading {}", path.display()), e)),
            };
            if manifest["columns"] != manifest_columns(t) {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "{} already holds {} with other columns ({}); point the target at a new directory",
                        root.display(),
                        t.name,
                        manifest["columns"]
                    ),
                ));
            }
            let last = manifest["files"].as_array().and_then(|files| {
                files.iter().rev().find_map(|f| {
                    let p = Position::new(f["last_position"].as_str()?).ok()?;
                    Some((p, u32::try_from(f["last_index"].as_u64()?).ok()?))
                })
            });
            self.tables.insert(
                t.name.clone(),
                Table {
                    schema: t.clone(),
                    dir,
                    manifest,
                    copy: Vec::new(),
                    changes: Vec::new(),
                    last,
                },
            );
        }
        Ok(())
    }

    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        self.order = Some(order);
    }

    fn write(&mut self, ops: &[ApplyOp], _upto: &Position) -> Result<Written, ConnectorError> {
        let mut origin: Option<(Position, u32, Option<SystemTime>)> = None;
        for op in ops {
            let held = match op {
                ApplyOp::Origin {
                    position,
                    index,
                    committed_at,
                    ..
                } => {
                    origin = Some((position.clone(), *index, *committed_at));
                    continue;
                }
                ApplyOp::Upsert { table, row } => {
                    let t = table_mut(&mut self.tables, table)?;
                    let bytes = row_bytes(row);
                    t.copy.push(row.clone());
                    bytes
                }
                ApplyOp::Change(change) => {
                    let Some(o) = origin.clone() else {
                        return Err(ConnectorError::new(
                            ErrorKind::Database,
                            "a change reached the Parquet target without its origin (a bug in the applier)",
                        ));
                    };
                    let mut bytes = 0;
                    for (name, held) in change_rows(change, o, &self.tables)? {
                        let skip = match (self.tables.get(&name), &held.origin) {
                            (Some(t), Some((p, i, _))) => self.skip(t, p, *i),
                            _ => false,
                        };
                        if skip {
                            continue;
                        }
                        bytes += row_bytes(&held.row);
                        table_mut(&mut self.tables, &name)?.changes.push(held);
                    }
                    bytes
                }
                ApplyOp::Columns { table, columns } => {
                    let t = table_mut(&mut self.tables, table)?;
                    let now: Vec<&str> = t.schema.columns.iter().map(|c| c.name.as_str()).collect();
                    if now != columns.iter().map(String::as_str).collect::<Vec<_>>() {
                        return Err(ConnectorError::new(
                            ErrorKind::UnsupportedType,
                            format!(
                                "the columns of {table} changed on the source ({}); a Parquet target keeps the columns it started with ({}) for now: \
                                 write to a new directory (and `cutover cleanup`, then sync again)",
                                columns.join(", "),
                                now.join(", ")
                            ),
                        ));
                    }
                    continue;
                }
                ApplyOp::Alter { table, change } => {
                    return Err(ConnectorError::new(
                        ErrorKind::UnsupportedType,
                        format!(
                            "a Parquet target cannot take the source's column changes yet ({table}: {change:?}); \
                             write to a new directory and sync again"
                        ),
                    ))
                }
                ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. } => continue,
            };
            self.held_bytes += held;
            self.held_since.get_or_insert_with(Instant::now);
        }
        if self.due() {
            self.flush_all()?;
        }
        Ok(if self.held_since.is_none() {
            Written::Durable
        } else {
            Written::Held
        })
    }

    fn flush(&mut self, force: bool) -> Result<bool, ConnectorError> {
        if self.held_since.is_some() && (force || self.due()) {
            self.flush_all()?;
        }
        Ok(self.held_since.is_none())
    }
}

fn table_mut<'a>(
    tables: &'a mut HashMap<TableName, Table>,
    name: &TableName,
) -> Result<&'a mut Table, ConnectorError> {
    tables.get_mut(name).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::SchemaMismatch,
            format!("a row of {name}, a table the Parquet target was not prepared for"),
        )
    })
}

fn row_bytes(row: &Row) -> usize {
    row.iter().map(|v| v.payload_len() + 8).sum::<usize>() + 32
}

/// The change-file rows of one change: (table, row).
fn change_rows(
    change: &Change,
    origin: (Position, u32, Option<SystemTime>),
    tables: &HashMap<TableName, Table>,
) -> Result<Vec<(TableName, Held)>, ConnectorError> {
    let key_row = |table: &TableName, key: &[Value]| -> Result<Row, ConnectorError> {
        let t = tables.get(table).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!("a change of {table}, a table the Parquet target was not prepared for"),
            )
        })?;
        let mut row = vec![Value::Null; t.schema.columns.len()];
        for (k, &i) in t.schema.primary_key.iter().enumerate() {
            if let (Some(slot), Some(v)) = (row.get_mut(i), key.get(k)) {
                *slot = v.clone();
            }
        }
        Ok(row)
    };
    let held = |op, row: Row, unchanged: Option<String>| Held {
        op,
        origin: Some(origin.clone()),
        unchanged,
        row,
    };
    Ok(match change {
        Change::Insert { table, row } => vec![(table.clone(), held("c", row.clone(), None))],
        Change::Update {
            table,
            row,
            unchanged,
            old_key,
            ..
        } => {
            let unchanged = match tables.get(table) {
                Some(t) if !unchanged.is_empty() => Some(
                    unchanged
                        .iter()
                        .filter_map(|&i| t.schema.columns.get(i).map(|c| c.name.clone()))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                _ => None,
            };
            let key = tables.get(table).map(|t| t.schema.key_of(row));
            if key.as_ref().is_some_and(|k| k != old_key) {
                // A key that changes: a delete of the old key, then an insert of the new one.
                vec![
                    (table.clone(), held("d", key_row(table, old_key)?, None)),
                    (table.clone(), held("c", row.clone(), unchanged)),
                ]
            } else {
                vec![(table.clone(), held("u", row.clone(), unchanged))]
            }
        }
        Change::Delete { table, old_key, .. } => {
            vec![(table.clone(), held("d", key_row(table, old_key)?, None))]
        }
        Change::Truncate { tables: names } => names
            .iter()
            .filter(|n| tables.contains_key(n))
            .map(|n| {
                let width = tables.get(n).map_or(0, |t| t.schema.columns.len());
                (n.clone(), held("t", vec![Value::Null; width], None))
            })
            .collect(),
        Change::Schema { .. } => Vec::new(),
    })
}
