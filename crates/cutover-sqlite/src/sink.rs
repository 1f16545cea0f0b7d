//! SQLite as a target: tables created from the source's schema, rows and changes applied with
//! their checkpoint in one transaction, and a small control store beside the data.
//!
//! Control store (in the target database; schema and versions: `cutover_state::sqlite`, read by
//! [`crate::SqliteState`]):
//! - `_cutover_state(key, value)`: `checkpoint` = the source position applied so far, `phase`
//!   (`copying` until every chunk is done, then `replicating`), `store_version`, and the status
//!   the sync notes about once a second.
//! - `_cutover_tables(name, phase)`: the tables this migration created or adopted.
//! - `_cutover_chunks(table_name, chunk, start_key, end_key, done)`: the chunk plan, keys in
//!   cutover-model's binary encoding.

use std::collections::HashMap;
use std::path::Path;

use cutover_connector::{
    key_text, ApplyOp, ConnectorError, ErrorKind, KeyRange, PlannedChunk, Sink,
};
use cutover_model::{
    decode_row, encode_row, Change, Column, Position, TableName, TableSchema, Value,
};
use rusqlite::{params_from_iter, Connection, OptionalExtension, Transaction as SqlTx};

use crate::error::{ident, map};
use crate::sql::{column_list, key_match};
use crate::value::Param;

const STATE: &str = "_cutover_state";
const TABLES: &str = "_cutover_tables";
const CHUNKS: &str = "_cutover_chunks";
const WATCH: &str = "_cutover_watch";

/// SQL text for one table, built once.
struct TableSql {
    schema: TableSchema,
    upsert: String,
    delete: String,
    truncate: String,
}

impl TableSql {
    fn new(t: &TableSchema) -> TableSql {
        let name = ident(&t.name.name);
        let cols = column_list(t);
        let placeholders = vec!["?"; t.columns.len()].join(", ");
        let key_cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        let updates: Vec<String> = t
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !t.primary_key.contains(i))
            .map(|(_, c)| format!("{0} = excluded.{0}", ident(&c.name)))
            .collect();
        let on_conflict = if key_cols.is_empty() {
            String::new()
        } else if updates.is_empty() {
            format!(" ON CONFLICT ({}) DO NOTHING", key_cols.join(", "))
        } else {
            format!(
                " ON CONFLICT ({}) DO UPDATE SET {}",
                key_cols.join(", "),
                updates.join(", ")
            )
        };
        TableSql {
            schema: t.clone(),
            upsert: format!("INSERT INTO {name} ({cols}) VALUES ({placeholders}){on_conflict}"),
            delete: format!("DELETE FROM {name} WHERE {}", key_match(t)),
            truncate: format!("DELETE FROM {name}"),
        }
    }
}

pub struct SqliteSink {
    conn: Connection,
    /// The file, for messages.
    describe: String,
    tables: HashMap<TableName, TableSql>,
    /// When the last status was noted, with the changes applied then (for the rate).
    last_note: Option<(std::time::Instant, u64)>,
}

impl SqliteSink {
    pub(crate) fn open(path: &Path) -> Result<SqliteSink, ConnectorError> {
        let conn = crate::open_target(path)?;
        Ok(SqliteSink {
            conn,
            describe: path.display().to_string(),
            tables: HashMap::new(),
            last_note: None,
        })
    }
}

/// Seconds since the Unix epoch, as `_cutover_state` keeps times.
fn epoch_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `CREATE TABLE` with each column's type from the type map (`types`): the source's own
/// declared type when it reads back as the same neutral type (SQLite → SQLite), else the map's.
/// Defaults are the source engine's SQL, so only a SQLite source's are carried.
fn create_table_sql(t: &TableSchema) -> Result<String, ConnectorError> {
    let mut parts = Vec::with_capacity(t.columns.len() + 1);
    for c in &t.columns {
        let declared = crate::types::declared_type(c).map_err(|r| {
            ConnectorError::new(
                ErrorKind::LossyConversion,
                format!(
                    "table {} column {}: the source's type {} cannot be mapped to SQLite {} without loss ({}); \
                     leave the table out or change the column's type on the source",
                    t.name, c.name, c.declared_type, r.target, r.why
                ),
            )
        })?;
        let mut s = ident(&c.name);
        if !declared.is_empty() {
            s.push(' ');
            s.push_str(&declared);
        }
        if !c.nullable {
            s.push_str(" NOT NULL");
        }
        if let Some(d) = &c.default {
            if declared == c.declared_type {
                s.push_str(&format!(" DEFAULT ({d})"));
            } else {
                tracing::warn!(table = %t.name, column = %c.name, "the source's default is another engine's SQL: the target's column has no default");
            }
        }
        parts.push(s);
    }
    if t.has_primary_key() {
        let keys: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({})",
        ident(&t.name.name),
        parts.join(", ")
    ))
}

pub(crate) fn table_exists(tx: &Connection, name: &str) -> Result<bool, ConnectorError> {
    tx.query_row(
        "SELECT 1 FROM sqlite_schema WHERE type IN ('table', 'index') AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|o| o.is_some())
    .map_err(|e| map(format!("checking whether {name} exists on the target"), e))
}

fn encode_key(k: &Option<Vec<Value>>) -> Option<Vec<u8>> {
    k.as_ref().map(|k| encode_row(k))
}

fn lookup<'a>(
    tables: &'a HashMap<TableName, TableSql>,
    name: &TableName,
) -> Result<&'a TableSql, ConnectorError> {
    tables.get(name).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::NotFound,
            format!("table {name} was not prepared on the target"),
        )
    })
}

impl SqliteSink {
    fn apply_change(tx: &SqlTx<'_>, t: &TableSql, change: &Change) -> Result<(), ConnectorError> {
        let name = &t.schema.name;
        match change {
            Change::Insert { row, .. } => exec(
                tx,
                &t.upsert,
                t.schema.columns.iter().zip(row.iter()),
                || format!("inserting into {name}"),
                row,
                t,
            ),
            Change::Update {
                old_key,
                row,
                unchanged,
                ..
            } => {
                let new_key = t.schema.key_of(row);
                if unchanged.is_empty() {
                    if &new_key != old_key {
                        exec(
                            tx,
                            &t.delete,
                            t.schema.key_columns().zip(old_key.iter()),
                            || format!("moving a row of {name} to a new key"),
                            row,
                            t,
                        )?;
                    }
                    exec(
                        tx,
                        &t.upsert,
                        t.schema.columns.iter().zip(row.iter()),
                        || format!("updating {name}"),
                        row,
                        t,
                    )
                } else {
                    // Columns the source did not send keep their target value.
                    let sets: Vec<String> = t
                        .schema
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !unchanged.contains(i))
                        .map(|(_, c)| format!("{} = ?", ident(&c.name)))
                        .collect();
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {}",
                        ident(&name.name),
                        sets.join(", "),
                        key_match(&t.schema)
                    );
                    let params = t
                        .schema
                        .columns
                        .iter()
                        .zip(row.iter())
                        .enumerate()
                        .filter(|(i, _)| !unchanged.contains(i))
                        .map(|(_, cv)| cv)
                        .chain(t.schema.key_columns().zip(old_key.iter()));
                    exec(tx, &sql, params, || format!("updating {name}"), row, t)
                }
            }
            Change::Delete { old_key, .. } => exec(
                tx,
                &t.delete,
                t.schema.key_columns().zip(old_key.iter()),
                || format!("deleting from {name}"),
                old_key,
                t,
            ),
            Change::Truncate { .. } => tx
                .execute(&t.truncate, [])
                .map(drop)
                .map_err(|e| map(format!("truncating {name}"), e)),
            // The applier turns shapes into column changes (see `apply`).
            Change::Schema { .. } => Ok(()),
        }
    }
}

/// Runs one cached statement over `params` (each value with its column), each stored as the
/// type map says (`types::stored`); errors name the table, the row's key and the column.
fn exec<'v>(
    tx: &SqlTx<'_>,
    sql: &str,
    params: impl Iterator<Item = (&'v Column, &'v Value)>,
    what: impl Fn() -> String,
    row_or_key: &[Value],
    t: &TableSql,
) -> Result<(), ConnectorError> {
    let key_desc = || {
        if row_or_key.len() == t.schema.columns.len() {
            key_text(&t.schema.key_of(row_or_key))
        } else {
            key_text(row_or_key)
        }
    };
    let mut values = Vec::new();
    for (column, value) in params {
        let (_, storage) = crate::types::stored(&column.ty, value).map_err(|why| {
            ConnectorError::new(
                ErrorKind::LossyConversion,
                format!(
                    "{} key {} column {}: {why} (column type {})",
                    what(),
                    key_desc(),
                    column.name,
                    column.declared_type
                ),
            )
        })?;
        values.push(storage);
    }
    let mut stmt = tx.prepare_cached(sql).map_err(|e| map(what(), e))?;
    stmt.execute(params_from_iter(values.iter().map(Param)))
        .map(drop)
        .map_err(|e| map(format!("{} key {}", what(), key_desc()), e))
}

impl Sink for SqliteSink {
    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let ctx = "preparing the target";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(ctx, e))?;
        crate::state::migrate(&tx, &self.describe)?;
        // The migration's phase: `copying` until every chunk is done (see `apply`).
        tx.execute(
            &format!("INSERT OR IGNORE INTO {STATE} (key, value) VALUES ('phase', 'copying')"),
            [],
        )
        .map_err(|e| map(ctx, e))?;
        for t in tables {
            let name = &t.name.name;
            let ours = tx
                .query_row(
                    &format!("SELECT 1 FROM {TABLES} WHERE name = ?1"),
                    [name],
                    |_| Ok(()),
                )
                .optional()
                .map_err(|e| map(ctx, e))?
                .is_some();
            if !ours && table_exists(&tx, name)? {
                let rows: i64 = tx
                    .query_row(&format!("SELECT count(*) FROM {}", ident(name)), [], |r| {
                        r.get(0)
                    })
                    .map_err(|e| map(format!("counting rows of {name} on the target"), e))?;
                if rows > 0 {
                    return Err(ConnectorError::new(
                        ErrorKind::Conflict,
                        format!(
                            "target table {name} already holds {rows} rows that cutover did not write. \
                             Empty or drop it on the target (or point --target at a new database), then run again"
                        ),
                    ));
                }
            }
            tx.execute_batch(&create_table_sql(t)?)
                .map_err(|e| map(format!("creating table {name} on the target"), e))?;
            tx.execute(
                &format!("INSERT OR IGNORE INTO {TABLES} (name, phase) VALUES (?1, 'copying')"),
                [name],
            )
            .map_err(|e| map(ctx, e))?;
            self.tables.insert(t.name.clone(), TableSql::new(t));
        }
        tx.commit().map_err(|e| map(ctx, e))
    }

    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        let ctx = || format!("recording the chunk plan of {}", table.name);
        let name = &table.name.name;
        let read = |conn: &Connection| -> Result<Vec<PlannedChunk>, ConnectorError> {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT chunk, start_key, end_key, done FROM {CHUNKS} WHERE table_name = ?1 ORDER BY chunk"
                ))
                .map_err(|e| map(ctx(), e))?;
            let rows = stmt
                .query_map([name], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Option<Vec<u8>>>(1)?,
                        r.get::<_, Option<Vec<u8>>>(2)?,
                        r.get::<_, bool>(3)?,
                    ))
                })
                .map_err(|e| map(ctx(), e))?;
            let mut out = Vec::new();
            for row in rows {
                let (chunk, start, end, done) = row.map_err(|e| map(ctx(), e))?;
                let decode = |b: Option<Vec<u8>>| {
                    b.map(|b| decode_row(&b)).transpose().map_err(|e| {
                        ConnectorError::new(
                            ErrorKind::Database,
                            format!("{}: stored chunk {chunk} has a corrupt key: {e}", ctx()),
                        )
                    })
                };
                out.push(PlannedChunk {
                    index: u32::try_from(chunk).unwrap_or(u32::MAX),
                    range: KeyRange {
                        start: decode(start)?,
                        end: decode(end)?,
                    },
                    done,
                });
            }
            Ok(out)
        };
        let existing = read(&self.conn)?;
        if !existing.is_empty() {
            return Ok(existing);
        }
        let ranges = plan()?;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(ctx(), e))?;
        for (i, r) in ranges.iter().enumerate() {
            tx.execute(
                &format!(
                    "INSERT INTO {CHUNKS} (table_name, chunk, start_key, end_key, done) VALUES (?1, ?2, ?3, ?4, 0)"
                ),
                rusqlite::params![name, i as i64, encode_key(&r.start), encode_key(&r.end)],
            )
            .map_err(|e| map(ctx(), e))?;
        }
        tx.commit().map_err(|e| map(ctx(), e))?;
        read(&self.conn)
    }

    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        let ctx = format!("applying a batch up to {checkpoint} on the target");
        let tables = &self.tables;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(&ctx, e))?;
        for op in ops {
            match op {
                ApplyOp::Upsert { table, row } => {
                    let t = lookup(tables, table)?;
                    exec(
                        &tx,
                        &t.upsert,
                        t.schema.columns.iter().zip(row.iter()),
                        || format!("copying a row into {table}"),
                        row,
                        t,
                    )?;
                }
                ApplyOp::Change(change) => match change {
                    Change::Truncate { tables: truncated } => {
                        for name in truncated {
                            if let Ok(t) = lookup(tables, name) {
                                Self::apply_change(&tx, t, change)?;
                            }
                        }
                    }
                    _ => {
                        if let Some(name) = change.table() {
                            let t = lookup(tables, name)?;
                            Self::apply_change(&tx, t, change)?;
                        }
                    }
                },
                ApplyOp::Alter { table, change } => {
                    return Err(ConnectorError::new(
                        ErrorKind::UnsupportedType,
                        format!(
                            "a SQLite target cannot take the source's column changes yet ({table}: {change:?}); \
                             make the same change on the target and run again"
                        ),
                    ))
                }
                ApplyOp::Columns { table, columns } => {
                    let t = lookup(tables, table)?;
                    let expected: Vec<&str> =
                        t.schema.columns.iter().map(|c| c.name.as_str()).collect();
                    if expected != columns.iter().map(String::as_str).collect::<Vec<_>>() {
                        return Err(ConnectorError::new(
                            ErrorKind::UnsupportedType,
                            format!(
                                "a SQLite target takes rows of {table} only with the columns it was prepared with ({}), not {}",
                                expected.join(", "),
                                columns.join(", ")
                            ),
                        ));
                    }
                }
                ApplyOp::Watch { table, keys } => {
                    let mut stmt = tx
                        .prepare_cached(&format!(
                            "INSERT OR IGNORE INTO {WATCH} (table_name, key) VALUES (?1, ?2)"
                        ))
                        .map_err(|e| map(&ctx, e))?;
                    for k in keys {
                        stmt.execute(rusqlite::params![table.name, encode_row(k)])
                            .map_err(|e| map(&ctx, e))?;
                    }
                }
                // Only for sinks that ask (`wants_origins`).
                ApplyOp::Origin { .. } => {}
                ApplyOp::ChunkDone { table, chunk, .. } => {
                    tx.prepare_cached(&format!(
                        "UPDATE {CHUNKS} SET done = 1 WHERE table_name = ?1 AND chunk = ?2"
                    ))
                    .and_then(|mut s| s.execute(rusqlite::params![table.name, *chunk as i64]))
                    .map_err(|e| map(&ctx, e))?;
                }
            }
        }
        tx.prepare_cached(&format!(
            "INSERT INTO {STATE} (key, value) VALUES ('checkpoint', ?1) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        ))
        .and_then(|mut s| s.execute([checkpoint.to_string()]))
        .map_err(|e| map(&ctx, e))?;
        if ops.iter().any(|op| matches!(op, ApplyOp::ChunkDone { .. })) {
            // The last chunk done ends the copy: the phase moves on with it.
            tx.prepare_cached(&format!(
                "UPDATE {STATE} SET value = 'replicating' WHERE key = 'phase' AND value = 'copying' \
                 AND NOT EXISTS (SELECT 1 FROM {CHUNKS} WHERE done = 0)"
            ))
            .and_then(|mut s| s.execute([]))
            .map_err(|e| map(&ctx, e))?;
        }
        before_commit()?;
        tx.commit().map_err(|e| map(&ctx, e))
    }

    /// The sync's status in `_cutover_state`, for `cutover status` in another process.
    fn note(&mut self, progress: &cutover_connector::Progress) -> Result<(), ConnectorError> {
        let now = std::time::Instant::now();
        let applied = progress
            .changes_applied
            .load(std::sync::atomic::Ordering::Relaxed);
        let rate = self.last_note.and_then(|(at, n)| {
            let secs = now.duration_since(at).as_secs_f64();
            (secs > 0.0).then(|| applied.saturating_sub(n) as f64 / secs)
        });
        self.last_note = Some((now, applied));
        let lag = progress.lag();
        let values: [(&str, Option<String>); 7] = [
            (
                "source_position",
                progress.source_position().map(|p| p.to_string()),
            ),
            (
                "lag_bytes",
                lag.and_then(|l| l.bytes).map(|b| b.to_string()),
            ),
            (
                "lag_changes",
                lag.and_then(|l| l.changes).map(|c| c.to_string()),
            ),
            (
                "committed_at",
                progress.committed_at().map(|t| epoch_secs(t).to_string()),
            ),
            ("changes_applied", Some(applied.to_string())),
            ("changes_per_sec", rate.map(|r| format!("{r:.1}"))),
            (
                "updated_at",
                Some(epoch_secs(std::time::SystemTime::now()).to_string()),
            ),
        ];
        let ctx = "recording the sync's status on the target";
        let tx = self.conn.transaction().map_err(|e| map(ctx, e))?;
        for (k, v) in values {
            match v {
                Some(v) => tx.execute(
                    &format!("INSERT INTO {STATE} (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value"),
                    [k, v.as_str()],
                ),
                None => tx.execute(&format!("DELETE FROM {STATE} WHERE key = ?1"), [k]),
            }
            .map_err(|e| map(ctx, e))?;
        }
        tx.commit().map_err(|e| map(ctx, e))
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        let ctx = "reading the checkpoint from the target";
        if !table_exists(&self.conn, STATE)? {
            return Ok(None);
        }
        let text: Option<String> = self
            .conn
            .query_row(
                &format!("SELECT value FROM {STATE} WHERE key = 'checkpoint'"),
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| map(ctx, e))?;
        text.map(|t| {
            t.parse()
                .map_err(|e| ConnectorError::new(ErrorKind::Database, format!("{ctx}: {e}")))
        })
        .transpose()
    }

    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        for t in tables {
            let name = &t.name.name;
            for index in &t.indexes {
                if table_exists(&self.conn, &index.name)? {
                    continue;
                }
                let sql = match &index.definition {
                    Some(def) => def.clone(),
                    None => format!(
                        "CREATE {}INDEX {} ON {} ({})",
                        if index.unique { "UNIQUE " } else { "" },
                        ident(&index.name),
                        ident(name),
                        index
                            .columns
                            .iter()
                            .map(|c| ident(c))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                self.conn.execute_batch(&sql).map_err(|e| {
                    map(format!("building index {} of table {name}", index.name), e)
                })?;
            }
            self.conn
                .execute(
                    &format!("UPDATE {TABLES} SET phase = 'copied' WHERE name = ?1"),
                    [name],
                )
                .map_err(|e| map(format!("marking {name} copied"), e))?;
        }
        // A sync that resumes with every chunk done (or had none to copy) is past the copy.
        self.conn
            .execute(
                &format!(
                    "UPDATE {STATE} SET value = 'replicating' WHERE key = 'phase' AND value = 'copying' \
                     AND NOT EXISTS (SELECT 1 FROM {CHUNKS} WHERE done = 0)"
                ),
                [],
            )
            .map_err(|e| map("recording the end of the copy", e))?;
        Ok(())
    }

    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        self.conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS {WATCH}; DROP TABLE IF EXISTS {CHUNKS}; DROP TABLE IF EXISTS {TABLES}; DROP TABLE IF EXISTS {STATE}; \
                 DROP TABLE IF EXISTS {};",
                crate::checksum::MISMATCHES
            ))
            .map_err(|e| map("removing the control store from the target", e))
    }
}

/// Crash tests' failpoint `sqlite::sink::before-commit`, between a batch's writes and its
/// commit (feature `failpoints`): `panic` ends the apply as a crash would (the transaction is
/// rolled back when the connection goes), `return` fails it.
fn before_commit() -> Result<(), ConnectorError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("sqlite::sink::before-commit", |_| {
        Err(ConnectorError::new(
            ErrorKind::Database,
            "failpoint sqlite::sink::before-commit",
        ))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType};

    #[test]
    fn create_table_keeps_types_defaults_and_key() {
        let t = TableSchema {
            name: TableName::bare("select"),
            columns: vec![
                Column {
                    name: "id".into(),
                    ty: ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                    declared_type: "INTEGER".into(),
                    nullable: false,
                    default: None,
                },
                Column {
                    name: "Name".into(),
                    ty: ColumnType::Text { max_len: None },
                    declared_type: "TEXT".into(),
                    nullable: true,
                    default: Some("'x'".into()),
                },
            ],
            primary_key: vec![0],
            indexes: vec![],
        };
        assert_eq!(
            create_table_sql(&t).unwrap(),
            "CREATE TABLE IF NOT EXISTS \"select\" (\"id\" INTEGER NOT NULL, \"Name\" TEXT DEFAULT ('x'), PRIMARY KEY (\"id\"))"
        );
        let sql = TableSql::new(&t);
        assert_eq!(
            sql.upsert,
            "INSERT INTO \"select\" (\"id\", \"Name\") VALUES (?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"Name\" = excluded.\"Name\""
        );
    }
}
