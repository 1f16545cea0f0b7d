//! SQLite as a source: chunked reads inside read transactions, and change capture through
//! triggers that append every row change to one log table with a global sequence number.
//!
//! The log (`_cutover_log`) has untyped columns `o_0…` (the old key) and `c_0…` (the new row),
//! so values keep their storage class exactly. Its `seq` is `AUTOINCREMENT`, so numbers are
//! never reused after `release` deletes old entries, and `sqlite_sequence` tells the newest
//! position even when the log is empty. SQLite has one writer at a time, so `seq` order is
//! commit order.

use std::path::Path;

use cutover_connector::{
    key_text, ChunkRows, ConnectorError, Counter, ErrorKind, KeyRange, PositionOrder, Source,
    TableEstimate,
};
use cutover_model::{Change, Key, Position, Row, TableName, TableSchema, Transaction};
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use crate::error::{ident, map};
use crate::schema::read_tables;
use crate::sql::{order_by_key, select_range};
use crate::types::typed_row;
use crate::value::{from_ref, Param};

pub(crate) const LOG: &str = "_cutover_log";
pub(crate) const CAPTURE: &str = "_cutover_capture";
/// The column list of each captured table when its triggers were installed.
const COLUMNS: &str = "_cutover_columns";
const TRIGGER_PREFIX: &str = "_cutover_trg_";

pub struct SqliteSource {
    conn: Connection,
    /// `PRAGMA schema_version` when the captured tables' columns were last checked.
    schema_version: Option<i64>,
}

impl SqliteSource {
    pub(crate) fn new(conn: Connection) -> SqliteSource {
        SqliteSource {
            conn,
            schema_version: None,
        }
    }

    /// Stops capture from going on with a stale column list: SQLite lets a column be added
    /// while the triggers are installed, and the triggers would not record it.
    fn check_schema(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let ctx = "checking the source schema";
        let version: i64 = self
            .conn
            .query_row("PRAGMA schema_version", [], |r| r.get(0))
            .map_err(|e| map(ctx, e))?;
        if self.schema_version == Some(version) {
            return Ok(());
        }
        let now = read_tables(&self.conn)?;
        for t in tables {
            let current = now
                .iter()
                .find(|c| c.name == t.name)
                .map(column_names)
                .unwrap_or_default();
            if let Some(msg) = column_change(t, &column_names(t), &current) {
                return Err(ConnectorError::new(ErrorKind::SchemaMismatch, msg));
            }
        }
        self.schema_version = Some(version);
        Ok(())
    }

    pub(crate) fn open(path: &Path) -> Result<SqliteSource, ConnectorError> {
        crate::open_existing(path).map(SqliteSource::new)
    }
}

fn sequence(conn: &Connection) -> Result<u64, ConnectorError> {
    let seq: Option<i64> = conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [LOG],
            |r| r.get(0),
        )
        .optional()
        .or_else(|e| match &e {
            // No AUTOINCREMENT table exists yet: nothing was ever captured.
            rusqlite::Error::SqliteFailure(_, Some(msg)) if msg.contains("no such table") => {
                Ok(None)
            }
            _ => Err(e),
        })
        .map_err(|e| map("reading the change log's position", e))?;
    Ok(seq.unwrap_or(0).max(0) as u64)
}

/// SQLite's positions: the sequence numbers of its change table, `seq:N`.
pub const POSITIONS: Counter = Counter { kind: "seq" };

fn seq_of(p: &Position) -> Result<u64, ConnectorError> {
    POSITIONS.value(p).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::InvalidInput,
            format!("position {p} is not a SQLite change-log position (seq:N)"),
        )
    })
}

/// Why a captured table's columns no longer match, naming table and column; `None` if they match.
fn column_change(table: &TableSchema, was: &[String], now: &[String]) -> Option<String> {
    if was == now {
        return None;
    }
    let what = if let Some(added) = now.iter().find(|c| !was.contains(c)) {
        format!("column {added} was added to table {}", table.name)
    } else if let Some(dropped) = was.iter().find(|c| !now.contains(c)) {
        format!("column {dropped} was dropped from table {}", table.name)
    } else {
        format!("the columns of table {} were reordered", table.name)
    };
    Some(format!(
        "{what} on the source after change capture was installed (was: {}; now: {}). \
         Changes captured before it lack the new layout, so nothing past it was applied. \
         To go on, migrate the table again: `cutover cleanup` and sync into an empty target",
        was.join(", "),
        now.join(", ")
    ))
}

fn column_names(t: &TableSchema) -> Vec<String> {
    t.columns.iter().map(|c| c.name.clone()).collect()
}

fn sql_text(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn read_row(r: &rusqlite::Row<'_>, offset: usize, n: usize) -> Option<Row> {
    (offset..offset + n)
        .map(|i| r.get_ref(i).ok().and_then(from_ref))
        .collect()
}

impl Source for SqliteSource {
    fn positions(&self) -> &'static dyn PositionOrder {
        &POSITIONS
    }

    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        read_tables(&self.conn)
    }

    fn estimate(&mut self, table: &TableSchema) -> Result<TableEstimate, ConnectorError> {
        let ctx = || format!("estimating the size of table {}", table.name);
        let name = ident(&table.name.name);
        let rows: i64 = self
            .conn
            .query_row(&format!("SELECT count(*) FROM {name}"), [], |r| r.get(0))
            .map_err(|e| map(ctx(), e))?;
        // Sample the first rows; length() is bytes for blobs and text, digits for numbers.
        let sizes: Vec<String> = table
            .columns
            .iter()
            .map(|c| format!("coalesce(length({}), 0)", ident(&c.name)))
            .collect();
        let avg: Option<f64> = self
            .conn
            .query_row(
                &format!(
                    "SELECT avg({}) FROM (SELECT * FROM {name} LIMIT 1000)",
                    sizes.join(" + ")
                ),
                [],
                |r| r.get(0),
            )
            .map_err(|e| map(ctx(), e))?;
        Ok(TableEstimate {
            rows: rows.max(0) as u64,
            avg_row_bytes: avg.unwrap_or(0.0).max(1.0) as u64,
        })
    }

    fn plan_chunks(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<KeyRange>, ConnectorError> {
        if !table.has_primary_key() {
            return Ok(vec![KeyRange::all()]);
        }
        // One ordered pass over the key index; every n-th key becomes a boundary. Cheap for
        // SQLite (no network) and exact for any key distribution.
        let ctx = || format!("planning chunks of table {}", table.name);
        let cols: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {} {}",
            cols.join(", "),
            ident(&table.name.name),
            order_by_key(table)
        );
        let mut stmt = self.conn.prepare(&sql).map_err(|e| map(ctx(), e))?;
        let mut rows = stmt.query([]).map_err(|e| map(ctx(), e))?;
        let n = rows_per_chunk.max(1);
        let mut boundaries: Vec<Key> = Vec::new();
        let mut seen: u64 = 0;
        while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
            if seen > 0 && seen.is_multiple_of(n) {
                let key = read_row(r, 0, cols.len())
                    .map(|k| typed_row(table.key_columns(), k))
                    .ok_or_else(|| {
                        ConnectorError::new(
                            ErrorKind::UnsupportedType,
                            format!("{}: a key holds text that is not valid UTF-8", ctx()),
                        )
                    })?;
                boundaries.push(key);
            }
            seen += 1;
        }
        let mut ranges = Vec::with_capacity(boundaries.len() + 1);
        let mut start = None;
        for b in boundaries {
            ranges.push(KeyRange {
                start: start.take(),
                end: Some(b.clone()),
            });
            start = Some(b);
        }
        ranges.push(KeyRange { start, end: None });
        Ok(ranges)
    }

    fn read_chunk(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<ChunkRows, ConnectorError> {
        let ctx = || {
            format!(
                "reading table {} keys {} to {}",
                table.name,
                range.start.as_deref().map_or("start".into(), key_text),
                range.end.as_deref().map_or("end".into(), key_text)
            )
        };
        // One read transaction: the rows and the log position come from the same snapshot.
        let tx = self.conn.transaction().map_err(|e| map(ctx(), e))?;
        let position = POSITIONS.position(sequence(&tx)?);
        let (sql, params) = select_range(
            table,
            range.start.as_deref().map(|k| (k, true)),
            range.end.as_deref(),
            None,
        );
        let n = table.columns.len();
        let rows = {
            let mut stmt = tx.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
            let mut rows = stmt
                .query(params_from_iter(params.into_iter().map(Param)))
                .map_err(|e| map(ctx(), e))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
                let row = read_row(r, 0, n)
                    .map(|row| typed_row(table.columns.iter(), row))
                    .ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::UnsupportedType,
                        format!("{}: a row holds text that is not valid UTF-8; SQLite allows it, cutover cannot carry it as text", ctx()),
                    )
                })?;
                out.push(row);
            }
            out
        };
        tx.commit().map_err(|e| map(ctx(), e))?;
        Ok(ChunkRows {
            rows,
            low: position.clone(),
            high: position,
            view: None,
            columns: None,
        })
    }

    fn start_capture(&mut self, tables: &[TableSchema]) -> Result<Position, ConnectorError> {
        let ctx = "installing change capture triggers";
        if let Some(t) = tables.iter().find(|t| !t.has_primary_key()) {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "table {} has no primary key: change capture cannot apply its updates and deletes. \
                     Add a PRIMARY KEY to it, or leave it out of the migration",
                    t.name
                ),
            ));
        }
        let max_key = tables
            .iter()
            .map(|t| t.primary_key.len())
            .max()
            .unwrap_or(0);
        let max_cols = tables.iter().map(|t| t.columns.len()).max().unwrap_or(0);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(ctx, e))?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CAPTURE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
             CREATE TABLE IF NOT EXISTS {LOG} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, op TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS {COLUMNS} (tbl TEXT PRIMARY KEY, columns TEXT NOT NULL);"
        ))
        .map_err(|e| map(ctx, e))?;
        for t in tables {
            // Column names joined by a separator that cannot occur in them unescaped.
            let now = column_names(t);
            let joined = now.join("\u{1f}");
            let stored: Option<String> = tx
                .query_row(
                    &format!("SELECT columns FROM {COLUMNS} WHERE tbl = ?1"),
                    [&t.name.name],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| map(ctx, e))?;
            match stored {
                None => {
                    tx.execute(
                        &format!("INSERT INTO {COLUMNS} (tbl, columns) VALUES (?1, ?2)"),
                        [&t.name.name, &joined],
                    )
                    .map_err(|e| map(ctx, e))?;
                }
                Some(was) => {
                    let was: Vec<String> = was.split('\u{1f}').map(str::to_owned).collect();
                    if let Some(msg) = column_change(t, &was, &now) {
                        return Err(ConnectorError::new(ErrorKind::SchemaMismatch, msg));
                    }
                }
            }
        }
        let existing: Vec<String> = {
            let mut stmt = tx
                .prepare(&format!("SELECT name FROM pragma_table_info('{LOG}')"))
                .map_err(|e| map(ctx, e))?;
            let names = stmt
                .query_map([], |r| r.get(0))
                .map_err(|e| map(ctx, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| map(ctx, e))?;
            names
        };
        let wanted = (0..max_key)
            .map(|i| format!("o_{i}"))
            .chain((0..max_cols).map(|i| format!("c_{i}")));
        for col in wanted {
            if !existing.contains(&col) {
                tx.execute_batch(&format!("ALTER TABLE {LOG} ADD COLUMN {col}"))
                    .map_err(|e| map(ctx, e))?;
            }
        }
        for t in tables {
            let name = &t.name.name;
            let qt = ident(name);
            let lit = sql_text(name);
            let cols = || (0..t.columns.len()).map(|i| format!("c_{i}"));
            let olds = || (0..t.primary_key.len()).map(|i| format!("o_{i}"));
            let new_vals: Vec<String> = t
                .columns
                .iter()
                .map(|c| format!("NEW.{}", ident(&c.name)))
                .collect();
            let old_key: Vec<String> = t
                .key_columns()
                .map(|c| format!("OLD.{}", ident(&c.name)))
                .collect();
            let trg = |op: &str| ident(&format!("{TRIGGER_PREFIX}{name}_{op}"));
            let ins_cols: Vec<String> = cols().collect();
            let upd_cols: Vec<String> = olds().chain(cols()).collect();
            let del_cols: Vec<String> = olds().collect();
            let upd_vals: Vec<String> = old_key.iter().chain(new_vals.iter()).cloned().collect();
            tx.execute_batch(&format!(
                "DROP TRIGGER IF EXISTS {ti};
                 DROP TRIGGER IF EXISTS {tu};
                 DROP TRIGGER IF EXISTS {td};
                 CREATE TRIGGER {ti} AFTER INSERT ON {qt} BEGIN
                   INSERT INTO {LOG} (tbl, op, {ic}) VALUES ({lit}, 'I', {iv});
                 END;
                 CREATE TRIGGER {tu} AFTER UPDATE ON {qt} BEGIN
                   INSERT INTO {LOG} (tbl, op, {uc}) VALUES ({lit}, 'U', {uv});
                 END;
                 CREATE TRIGGER {td} AFTER DELETE ON {qt} BEGIN
                   INSERT INTO {LOG} (tbl, op, {dc}) VALUES ({lit}, 'D', {dv});
                 END;",
                ti = trg("i"),
                tu = trg("u"),
                td = trg("d"),
                ic = ins_cols.join(", "),
                iv = new_vals.join(", "),
                uc = upd_cols.join(", "),
                uv = upd_vals.join(", "),
                dc = del_cols.join(", "),
                dv = old_key.join(", "),
            ))
            .map_err(|e| map(format!("{ctx} on table {name}"), e))?;
        }
        let now = sequence(&tx)?;
        tx.execute(
            &format!("INSERT OR IGNORE INTO {CAPTURE} (key, value) VALUES ('started', ?1)"),
            [now as i64],
        )
        .map_err(|e| map(ctx, e))?;
        let started: i64 = tx
            .query_row(
                &format!("SELECT value FROM {CAPTURE} WHERE key = 'started'"),
                [],
                |r| r.get(0),
            )
            .map_err(|e| map(ctx, e))?;
        tx.commit().map_err(|e| map(ctx, e))?;
        tracing::debug!(
            tables = tables.len(),
            position = started,
            "change capture installed"
        );
        Ok(POSITIONS.position(started.max(0) as u64))
    }

    fn current_position(&mut self) -> Result<Position, ConnectorError> {
        Ok(POSITIONS.position(sequence(&self.conn)?))
    }

    fn read_changes(
        &mut self,
        tables: &[TableSchema],
        after: Position,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        let after = seq_of(&after)?;
        let ctx = || format!("reading changes after seq:{after}");
        self.check_schema(tables)?;
        let released: Option<i64> = self
            .conn
            .query_row(
                &format!("SELECT value FROM {CAPTURE} WHERE key = 'released'"),
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| {
                let e = map(ctx(), e);
                ConnectorError::new(
                    ErrorKind::HistoryLost,
                    format!("{e}. The change capture tables are gone (was `cutover cleanup` run?): start the migration again with an empty target"),
                )
            })?;
        if let Some(r) = released {
            if (after as i64) < r {
                return Err(ConnectorError::new(
                    ErrorKind::HistoryLost,
                    format!(
                        "changes up to seq:{r} were already released, but the target has only applied up to seq:{after}: \
                         the change history in between is gone. Start the migration again with an empty target"
                    ),
                ));
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT * FROM {LOG} WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))
            .map_err(|e| map(ctx(), e))?;
        let width = stmt.column_count();
        let names: Vec<String> = stmt.column_names().map(str::to_owned).collect();
        let first_o = names.iter().position(|n| n == "o_0").unwrap_or(width);
        let first_c = names.iter().position(|n| n == "c_0").unwrap_or(width);
        let mut rows = stmt
            .query(rusqlite::params![after as i64, max_changes.max(1) as i64])
            .map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
            let seq: i64 = r.get(0).map_err(|e| map(ctx(), e))?;
            let tbl: String = r.get(1).map_err(|e| map(ctx(), e))?;
            let op: String = r.get(2).map_err(|e| map(ctx(), e))?;
            let position = POSITIONS.position(seq.max(0) as u64);
            let Some(t) = tables.iter().find(|t| t.name.name == tbl) else {
                // A table captured by an earlier run but no longer part of the migration: the
                // position still advances past it.
                out.push(Transaction {
                    committed_at: None,
                    position,
                    tag: None,
                    changes: Vec::new(),
                });
                continue;
            };
            let bad_text = || {
                ConnectorError::new(
                    ErrorKind::UnsupportedType,
                    format!("change seq:{seq} on table {tbl} holds text that is not valid UTF-8"),
                )
            };
            let table = TableName::bare(&tbl);
            let old_key = || {
                read_row(r, first_o, t.primary_key.len())
                    .map(|k| typed_row(t.key_columns(), k))
                    .ok_or_else(bad_text)
            };
            let new_row = || {
                read_row(r, first_c, t.columns.len())
                    .map(|row| typed_row(t.columns.iter(), row))
                    .ok_or_else(bad_text)
            };
            let change = match op.as_str() {
                "I" => Change::Insert {
                    table,
                    row: new_row()?,
                },
                "U" => Change::Update {
                    table,
                    old_key: old_key()?,
                    before: None,
                    row: new_row()?,
                    unchanged: Vec::new(),
                },
                "D" => Change::Delete {
                    table,
                    old_key: old_key()?,
                    before: None,
                },
                other => {
                    return Err(ConnectorError::new(
                        ErrorKind::Database,
                        format!("change seq:{seq} has unknown operation {other:?}"),
                    ))
                }
            };
            out.push(Transaction {
                committed_at: None,
                position,
                tag: None,
                changes: vec![change],
            });
        }
        Ok(out)
    }

    fn release(&mut self, upto: Position) -> Result<(), ConnectorError> {
        let upto = seq_of(&upto)? as i64;
        let ctx = format!("releasing the change log up to seq:{upto}");
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(&ctx, e))?;
        tx.execute(&format!("DELETE FROM {LOG} WHERE seq <= ?1"), [upto])
            .map_err(|e| map(&ctx, e))?;
        tx.execute(
            &format!(
                "INSERT INTO {CAPTURE} (key, value) VALUES ('released', ?1) \
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)"
            ),
            [upto],
        )
        .map_err(|e| map(&ctx, e))?;
        tx.commit().map_err(|e| map(&ctx, e))
    }

    fn stop_capture(&mut self, _tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let ctx = "removing change capture from the source";
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(ctx, e))?;
        let triggers: Vec<String> = {
            let mut stmt = tx
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'trigger' AND substr(name, 1, ?1) = ?2",
                )
                .map_err(|e| map(ctx, e))?;
            let names = stmt
                .query_map(
                    rusqlite::params![TRIGGER_PREFIX.len() as i64, TRIGGER_PREFIX],
                    |r| r.get(0),
                )
                .map_err(|e| map(ctx, e))?
                .collect::<Result<_, _>>()
                .map_err(|e| map(ctx, e))?;
            names
        };
        for t in &triggers {
            tx.execute_batch(&format!("DROP TRIGGER IF EXISTS {}", ident(t)))
                .map_err(|e| map(ctx, e))?;
        }
        tx.execute_batch(&format!(
            "DROP TABLE IF EXISTS {LOG}; DROP TABLE IF EXISTS {CAPTURE}; DROP TABLE IF EXISTS {COLUMNS};"
        ))
        .map_err(|e| map(ctx, e))?;
        tx.commit().map_err(|e| map(ctx, e))?;
        tracing::info!(
            triggers = triggers.len(),
            "change capture removed from the source"
        );
        Ok(())
    }
}
