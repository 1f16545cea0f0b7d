//! MySQL/MariaDB as a target: tables created from the neutral schema (the type map in
//! [`crate::ddl`]), rows and changes applied with their checkpoint in one InnoDB transaction,
//! the migration's state in `_cutover_*` tables beside the data ([`crate::MySqlState`]).
//!
//! - Chunk rows go in as multi-row `INSERT … ON DUPLICATE KEY UPDATE` (up to
//!   [`ROWS_PER_INSERT`] rows a statement): replaying a batch overwrites what it wrote.
//! - Changes: inserts upsert, updates upsert (a moved key deletes the old row first), deletes
//!   delete by key, truncates `DELETE` (`TRUNCATE` would commit the transaction).
//! - The apply session runs with `foreign_key_checks = 0` (rows arrive in the source's commit
//!   order, not in the order constraints would want; PostgreSQL's `session_replication_role =
//!   replica` does the same) and READ COMMITTED.

use std::collections::HashMap;
use std::time::Instant;

use cutover_connector::{
    key_text, ApplyOp, ConnectorError, ErrorKind, KeyRange, PlannedChunk, Progress, Sink,
};
use cutover_model::{
    decode_row, encode_row, Change, Column, Position, TableName, TableSchema, Value,
};
use mysql_async::{Params, Value as My};

use crate::client::{ident, Client};
use crate::ddl::{self, Flavor};
use crate::encode::encode;
use crate::endpoint::MySqlEndpoint;
use crate::state::{self, table_exists};

/// Rows per multi-row `INSERT` (fewer for wide tables: at most 65,535 parameters).
pub const ROWS_PER_INSERT: usize = 500;

/// Bytes of values per multi-row statement, about (a single larger row goes alone).
pub const BYTES_PER_INSERT: usize = 4 << 20;

const APPLY_SESSION: &[&str] = &[
    "SET SESSION foreign_key_checks = 0",
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
];

/// SQL text for one table, built once.
struct TableSql {
    schema: TableSchema,
    /// `INSERT INTO t (cols) VALUES ` (rows appended) and its `ON DUPLICATE KEY UPDATE …` tail.
    insert_head: String,
    upsert_tail: String,
    delete: String,
    truncate: String,
    rows_per_insert: usize,
}

impl TableSql {
    fn new(t: &TableSchema) -> TableSql {
        let name = ident(&t.name.name);
        let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
        let updates: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("{0} = VALUES({0})", ident(&c.name)))
            .collect();
        let key_match: Vec<String> = t
            .key_columns()
            .map(|c| format!("{} = ?", ident(&c.name)))
            .collect();
        TableSql {
            schema: t.clone(),
            insert_head: format!("INSERT INTO {name} ({}) VALUES ", cols.join(", ")),
            upsert_tail: if t.has_primary_key() {
                format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
            } else {
                String::new()
            },
            delete: format!("DELETE FROM {name} WHERE {}", key_match.join(" AND ")),
            truncate: format!("DELETE FROM {name}"),
            rows_per_insert: (65_535 / t.columns.len().max(1)).clamp(1, ROWS_PER_INSERT),
        }
    }

    fn upsert_sql(&self, rows: usize) -> String {
        let one = format!("({})", vec!["?"; self.schema.columns.len()].join(", "));
        let mut sql = self.insert_head.clone();
        sql.push_str(&vec![one; rows].join(", "));
        sql.push_str(&self.upsert_tail);
        sql
    }

    fn key_desc(&self, row_or_key: &[Value]) -> String {
        if row_or_key.len() == self.schema.columns.len() {
            key_text(&self.schema.key_of(row_or_key))
        } else {
            key_text(row_or_key)
        }
    }
}

/// Each value of `values` for its column, refused with table, key and column named when the
/// column cannot hold it exactly.
fn params<'v>(
    t: &TableSql,
    what: &str,
    row_or_key: &[Value],
    values: impl Iterator<Item = (&'v Column, &'v Value)>,
    out: &mut Vec<My>,
) -> Result<(), ConnectorError> {
    for (column, value) in values {
        let v = encode(value, &column.ty).map_err(|why| {
            ConnectorError::new(
                ErrorKind::LossyConversion,
                format!(
                    "{what} {} key {} column {}: {why} (source type {})",
                    t.schema.name,
                    t.key_desc(row_or_key),
                    column.name,
                    column.declared_type
                ),
            )
        })?;
        out.push(v);
    }
    Ok(())
}

pub struct MySqlSink {
    ep: MySqlEndpoint,
    client: Client,
    flavor: Flavor,
    /// The source is MySQL too: its declared types and defaults are kept.
    native: bool,
    tables: HashMap<TableName, TableSql>,
    last_note: Option<(Instant, u64)>,
}

/// The target server's flavor, asked once per session.
pub(crate) fn flavor(c: &mut Client) -> Flavor {
    Flavor {
        mariadb: c.is_mariadb(),
        version: c.server_version(),
    }
}

impl MySqlSink {
    pub(crate) fn open(ep: &MySqlEndpoint, native: bool) -> Result<MySqlSink, ConnectorError> {
        let mut client = Self::connect(ep)?;
        let flavor = flavor(&mut client);
        Ok(MySqlSink {
            ep: ep.clone(),
            client,
            flavor,
            native,
            tables: HashMap::new(),
            last_note: None,
        })
    }

    fn connect(ep: &MySqlEndpoint) -> Result<Client, ConnectorError> {
        let mut c = Client::connect(ep, Some(&ep.database))?;
        for s in APPLY_SESSION {
            c.query_drop(s)?;
        }
        Ok(c)
    }

    /// A new session if the last call broke this one.
    fn live(&mut self) -> Result<&mut Client, ConnectorError> {
        if self.client.is_broken() {
            tracing::info!(target = %self.ep.describe(), "reconnecting to the target");
            self.client = Self::connect(&self.ep)?;
        }
        Ok(&mut self.client)
    }

    fn exec(
        &mut self,
        sql: &str,
        params: Vec<My>,
        what: impl Fn() -> String,
    ) -> Result<(), ConnectorError> {
        self.client
            .exec_drop(sql, Params::Positional(params))
            .map_err(|e| e.context(what()))
    }

    /// Upserts `rows` in multi-row statements of at most [`ROWS_PER_INSERT`] rows (fewer for
    /// wide tables) and about [`BYTES_PER_INSERT`] of values, each sent before the next is
    /// built: one statement's copy of the values is in memory at a time, and statements stay
    /// under the server's `max_allowed_packet` (16 MB by default on MariaDB).
    fn upsert_rows(&mut self, table: &TableName, rows: &[&[Value]]) -> Result<(), ConnectorError> {
        let mut at = 0;
        while at < rows.len() {
            let t = lookup(&self.tables, table)?;
            let mut end = at;
            let mut bytes = 0;
            while end < rows.len() && end - at < t.rows_per_insert {
                let size: usize = rows[end].iter().map(|v| 8 + v.payload_len()).sum();
                if end > at && bytes + size > BYTES_PER_INSERT {
                    break;
                }
                bytes += size;
                end += 1;
            }
            let group = &rows[at..end];
            let mut values = Vec::with_capacity(group.len() * t.schema.columns.len());
            for row in group {
                params(
                    t,
                    "writing a row of",
                    row,
                    t.schema.columns.iter().zip(row.iter()),
                    &mut values,
                )?;
            }
            let sql = t.upsert_sql(group.len());
            let first = t.key_desc(group[0]);
            self.exec(&sql, values, || {
                format!("writing rows of {table} from key {first}")
            })?;
            at = end;
        }
        Ok(())
    }

    fn apply_change(&mut self, change: &Change) -> Result<(), ConnectorError> {
        match change {
            Change::Insert { table, row } => self.upsert_rows(table, &[row.as_slice()]),
            Change::Update {
                table,
                old_key,
                row,
                unchanged,
                ..
            } => {
                let t = lookup(&self.tables, table)?;
                if !unchanged.is_empty() {
                    // Columns the source did not send keep their target value.
                    let sets: Vec<String> = t
                        .schema
                        .columns
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !unchanged.contains(i))
                        .map(|(_, c)| format!("{} = ?", ident(&c.name)))
                        .collect();
                    let key_match: Vec<String> = t
                        .schema
                        .key_columns()
                        .map(|c| format!("{} = ?", ident(&c.name)))
                        .collect();
                    let sql = format!(
                        "UPDATE {} SET {} WHERE {}",
                        ident(&table.name),
                        sets.join(", "),
                        key_match.join(" AND ")
                    );
                    let mut values = Vec::new();
                    let sent = t
                        .schema
                        .columns
                        .iter()
                        .zip(row.iter())
                        .enumerate()
                        .filter(|(i, _)| !unchanged.contains(i))
                        .map(|(_, cv)| cv);
                    params(t, "updating", row, sent, &mut values)?;
                    params(
                        t,
                        "updating",
                        old_key,
                        t.schema.key_columns().zip(old_key.iter()),
                        &mut values,
                    )?;
                    let key = t.key_desc(old_key);
                    return self.exec(&sql, values, || format!("updating {table} key {key}"));
                }
                if &t.schema.key_of(row) != old_key {
                    self.delete(table, old_key)?;
                }
                self.upsert_rows(table, &[row.as_slice()])
            }
            Change::Delete { table, old_key, .. } => self.delete(table, old_key),
            Change::Truncate { tables } => {
                for name in tables {
                    if let Ok(t) = lookup(&self.tables, name) {
                        let sql = t.truncate.clone();
                        self.exec(&sql, Vec::new(), || {
                            format!("emptying {name} (truncated on the source)")
                        })?;
                    }
                }
                Ok(())
            }
            // The applier turns shapes into column changes (see `apply`).
            Change::Schema { .. } => Ok(()),
        }
    }

    /// Deletes rows by key, up to [`ROWS_PER_INSERT`] keys a statement.
    fn delete_keys(&mut self, table: &TableName, keys: &[&[Value]]) -> Result<(), ConnectorError> {
        let t = lookup(&self.tables, table)?;
        if keys.len() == 1 || t.schema.primary_key.len() != 1 {
            for k in keys {
                self.delete(table, k)?;
            }
            return Ok(());
        }
        let key_col = t
            .schema
            .key_columns()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join("");
        let mut statements = Vec::new();
        for group in keys.chunks(ROWS_PER_INSERT) {
            let mut values = Vec::with_capacity(group.len());
            for k in group {
                params(
                    t,
                    "deleting from",
                    k,
                    t.schema.key_columns().zip(k.iter()),
                    &mut values,
                )?;
            }
            let sql = format!(
                "DELETE FROM {} WHERE {key_col} IN ({})",
                ident(&table.name),
                vec!["?"; group.len()].join(", ")
            );
            statements.push((sql, values, t.key_desc(group[0])));
        }
        for (sql, values, first) in statements {
            self.exec(&sql, values, || {
                format!("deleting rows of {table} from key {first}")
            })?;
        }
        Ok(())
    }

    fn delete(&mut self, table: &TableName, key: &[Value]) -> Result<(), ConnectorError> {
        let t = lookup(&self.tables, table)?;
        if !t.schema.has_primary_key() {
            return Err(ConnectorError::new(
                ErrorKind::UnsupportedType,
                format!(
                    "a MySQL target cannot delete rows of {table}: it has no primary key; \
                     add one on the source"
                ),
            ));
        }
        let mut values = Vec::new();
        params(
            t,
            "deleting from",
            key,
            t.schema.key_columns().zip(key.iter()),
            &mut values,
        )?;
        let sql = t.delete.clone();
        let k = t.key_desc(key);
        self.exec(&sql, values, || format!("deleting from {table} key {k}"))
    }

    fn apply_in_tx(
        &mut self,
        ops: &[ApplyOp],
        checkpoint: &Position,
    ) -> Result<(), ConnectorError> {
        let mut i = 0;
        while i < ops.len() {
            match &ops[i] {
                op if whole_row(&self.tables, op).is_some() => {
                    // Consecutive whole rows of one table (chunk rows, inserts, updates that
                    // keep their key) go in multi-row upserts: MySQL applies a statement's rows
                    // in order, so a key written twice ends as its last row.
                    let Some((table, _)) = whole_row(&self.tables, op) else {
                        unreachable!("matched above")
                    };
                    let mut rows = Vec::new();
                    while let Some((t2, row)) =
                        ops.get(i).and_then(|op| whole_row(&self.tables, op))
                    {
                        if t2 != table {
                            break;
                        }
                        rows.push(row);
                        i += 1;
                    }
                    self.upsert_rows(table, &rows)?;
                    continue;
                }
                ApplyOp::Change(Change::Delete { table, .. }) => {
                    let mut keys = Vec::new();
                    while let Some(ApplyOp::Change(Change::Delete {
                        table: t2, old_key, ..
                    })) = ops.get(i)
                    {
                        if t2 != table {
                            break;
                        }
                        keys.push(old_key.as_slice());
                        i += 1;
                    }
                    self.delete_keys(table, &keys)?;
                    continue;
                }
                ApplyOp::Change(change) => self.apply_change(change)?,
                // Matched by the whole-row arm above.
                ApplyOp::Upsert { table, row } => self.upsert_rows(table, &[row.as_slice()])?,
                ApplyOp::Alter { table, change } => {
                    return Err(ConnectorError::new(
                        ErrorKind::UnsupportedType,
                        format!(
                            "a MySQL target cannot take the source's column changes yet ({table}: \
                             {change:?}); make the same change on the target and run again"
                        ),
                    ))
                }
                ApplyOp::Columns { table, columns } => {
                    let t = lookup(&self.tables, table)?;
                    let expected: Vec<&str> =
                        t.schema.columns.iter().map(|c| c.name.as_str()).collect();
                    if expected != columns.iter().map(String::as_str).collect::<Vec<_>>() {
                        return Err(ConnectorError::new(
                            ErrorKind::UnsupportedType,
                            format!(
                                "a MySQL target takes rows of {table} only with the columns it \
                                 was prepared with ({}), not {}",
                                expected.join(", "),
                                columns.join(", ")
                            ),
                        ));
                    }
                }
                // Only for sinks that ask (`wants_origins`).
                ApplyOp::Origin { .. } => {}
                ApplyOp::Watch { table, keys } => {
                    for k in keys {
                        let bytes = encode_row(k);
                        self.exec(
                            "INSERT IGNORE INTO `_cutover_watch` (`table_name`, `key_md5`, \
                             `key_bytes`) VALUES (?, UNHEX(MD5(?)), ?)",
                            vec![
                                table.name.clone().into(),
                                bytes.clone().into(),
                                bytes.into(),
                            ],
                            || format!("recording keys of {table} changed during the copy"),
                        )?;
                    }
                }
                ApplyOp::ChunkDone { table, chunk, rows } => {
                    self.exec(
                        "UPDATE `_cutover_chunks` SET `done` = 1, `rows_copied` = ? \
                         WHERE `table_name` = ? AND `chunk` = ?",
                        vec![(*rows).into(), table.name.clone().into(), (*chunk).into()],
                        || format!("marking chunk {chunk} of {table} copied"),
                    )?;
                }
            }
            i += 1;
        }
        let ctx = || format!("recording the checkpoint {checkpoint}");
        self.exec(
            "INSERT INTO `_cutover_state` (`key`, `value`) VALUES ('checkpoint', ?) \
             ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)",
            vec![checkpoint.to_string().into()],
            ctx,
        )?;
        if ops.iter().any(|op| matches!(op, ApplyOp::ChunkDone { .. })) {
            // The last chunk done ends the copy: the phase moves on with it.
            self.exec(END_OF_COPY, Vec::new(), || {
                "recording the end of the copy".to_owned()
            })?;
        }
        before_commit()
    }
}

/// The table and whole row an op writes, if it is an upsert by key: chunk rows, inserts, and
/// updates that send every column and keep their key (a moved key deletes the old row first:
/// `apply_change`).
fn whole_row<'a>(
    tables: &HashMap<TableName, TableSql>,
    op: &'a ApplyOp,
) -> Option<(&'a TableName, &'a [Value])> {
    match op {
        ApplyOp::Upsert { table, row } => Some((table, row)),
        ApplyOp::Change(Change::Insert { table, row }) => Some((table, row)),
        ApplyOp::Change(Change::Update {
            table,
            old_key,
            row,
            unchanged,
            ..
        }) if unchanged.is_empty()
            && tables.get(table).is_some_and(|t| {
                t.schema.has_primary_key() && &t.schema.key_of(row) == old_key
            }) =>
        {
            Some((table, row))
        }
        _ => None,
    }
}

/// `chunk`, `start_key`, `end_key`, `done` of `_cutover_chunks`.
type StoredChunkRow = (i64, Option<Vec<u8>>, Option<Vec<u8>>, i64);

const END_OF_COPY: &str = "UPDATE `_cutover_state` SET `value` = 'replicating' \
    WHERE `key` = 'phase' AND `value` = 'copying' \
    AND NOT EXISTS (SELECT 1 FROM `_cutover_chunks` WHERE `done` = 0)";

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

impl Sink for MySqlSink {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.live()?;
        let truncate = self.ep.truncate;
        let c = &mut self.client;
        let has_store = table_exists(c, "_cutover_tables")?;
        let mut names: HashMap<&str, &TableName> = HashMap::new();
        for t in tables {
            if let Some(other) = names.insert(&t.name.name, &t.name) {
                return Err(ConnectorError::new(
                    ErrorKind::Conflict,
                    format!(
                        "{other} and {} would both be table {} in MySQL database {} (a MySQL \
                         database has no schemas): migrate them to two target databases, or \
                         leave one out with --exclude",
                        t.name, t.name.name, self.ep.database
                    ),
                ));
            }
            for c in &t.columns {
                if !self.native {
                    ddl::column_type(t, c, false, self.flavor)?;
                }
            }
            let ours = has_store && {
                let found: Vec<u8> = c.exec(
                    "SELECT 1 FROM `_cutover_tables` WHERE `name` = ?",
                    Params::Positional(vec![t.name.name.clone().into()]),
                )?;
                !found.is_empty()
            };
            if ours || truncate || !table_exists(c, &t.name.name)? {
                continue;
            }
            let rows: Option<u8> =
                c.query_first(&format!("SELECT 1 FROM {} LIMIT 1", ident(&t.name.name)))?;
            if rows.is_some() {
                return Err(ConnectorError::new(
                    ErrorKind::Conflict,
                    format!(
                        "target table {} in {} already holds rows that cutover did not write. \
                         Empty or drop it (or pass --truncate, or point --target at a new \
                         database), then run again",
                        t.name.name,
                        self.ep.describe()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.check(tables)?;
        let store = self.ep.describe();
        let flavor = self.flavor;
        let native = self.native;
        let truncate = self.ep.truncate;
        self.live()?;
        let c = &mut self.client;
        state::migrate(c, &store)?;
        c.query_drop(
            "INSERT IGNORE INTO `_cutover_state` (`key`, `value`) VALUES ('phase', 'copying')",
        )?;
        for t in tables {
            let name = &t.name.name;
            let ours: Vec<u8> = c.exec(
                "SELECT 1 FROM `_cutover_tables` WHERE `name` = ?",
                Params::Positional(vec![name.clone().into()]),
            )?;
            if ours.is_empty() && truncate && table_exists(c, name)? {
                c.query_drop(&format!("DELETE FROM {}", ident(name)))
                    .map_err(|e| {
                        e.context(format!("emptying {name} on the target (--truncate)"))
                    })?;
            }
            let sql = ddl::create_table(t, flavor, native)?;
            c.query_drop(&sql)
                .map_err(|e| e.context(format!("creating table {name} on the target")))?;
            c.exec_drop(
                "INSERT IGNORE INTO `_cutover_tables` (`name`, `phase`) VALUES (?, 'copying')",
                Params::Positional(vec![name.clone().into()]),
            )?;
            self.tables.insert(t.name.clone(), TableSql::new(t));
        }
        Ok(())
    }

    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        let name = table.name.name.clone();
        let ctx = format!("recording the chunk plan of {}", table.name);
        let read = |c: &mut Client| -> Result<Vec<PlannedChunk>, ConnectorError> {
            let rows: Vec<StoredChunkRow> = c.exec(
                "SELECT `chunk`, `start_key`, `end_key`, `done` FROM `_cutover_chunks` \
                 WHERE `table_name` = ? ORDER BY `chunk`",
                Params::Positional(vec![name.clone().into()]),
            )?;
            rows.into_iter()
                .map(|(chunk, start, end, done)| {
                    let decode = |b: Option<Vec<u8>>| {
                        b.map(|b| decode_row(&b)).transpose().map_err(|e| {
                            ConnectorError::new(
                                ErrorKind::Database,
                                format!("{ctx}: stored chunk {chunk} has a corrupt key: {e}"),
                            )
                        })
                    };
                    Ok(PlannedChunk {
                        index: u32::try_from(chunk).unwrap_or(u32::MAX),
                        range: KeyRange {
                            start: decode(start)?,
                            end: decode(end)?,
                        },
                        done: done != 0,
                    })
                })
                .collect()
        };
        let c = self.live()?;
        let existing = read(c)?;
        if !existing.is_empty() {
            return Ok(existing);
        }
        let ranges = plan()?;
        let c = self.live()?;
        c.query_drop("START TRANSACTION")?;
        for (i, r) in ranges.iter().enumerate() {
            c.exec_drop(
                "INSERT INTO `_cutover_chunks` (`table_name`, `chunk`, `start_key`, `end_key`, \
                 `done`) VALUES (?, ?, ?, ?, 0)",
                Params::Positional(vec![
                    name.clone().into(),
                    (i as u64).into(),
                    r.start.as_ref().map(|k| encode_row(k)).into(),
                    r.end.as_ref().map(|k| encode_row(k)).into(),
                ]),
            )?;
        }
        c.query_drop("COMMIT")?;
        read(c)
    }

    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        self.live()?.query_drop("START TRANSACTION")?;
        match self.apply_in_tx(ops, &checkpoint) {
            Ok(()) => self
                .client
                .query_drop("COMMIT")
                .map_err(|e| e.context(format!("committing a batch up to {checkpoint}"))),
            Err(e) => {
                // The batch never happened; a broken session rolls back on its own.
                let _ = self.client.query_drop("ROLLBACK");
                Err(e)
            }
        }
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        let c = self.live()?;
        if !table_exists(c, "_cutover_state")? {
            return Ok(None);
        }
        let text: Option<String> =
            c.query_first("SELECT `value` FROM `_cutover_state` WHERE `key` = 'checkpoint'")?;
        text.map(|t| {
            t.parse().map_err(|e| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!("reading the checkpoint from the target: {e}"),
                )
            })
        })
        .transpose()
    }

    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let c = self.live()?;
        for t in tables {
            let name = &t.name.name;
            let existing: Vec<String> = c.exec(
                "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                Params::Positional(vec![name.clone().into()]),
            )?;
            for (index, sql) in ddl::indexes(t) {
                if existing.contains(&index) {
                    continue;
                }
                c.query_drop(&sql)
                    .map_err(|e| e.context(format!("building index {index} of table {name}")))?;
            }
            c.exec_drop(
                "UPDATE `_cutover_tables` SET `phase` = 'copied' WHERE `name` = ?",
                Params::Positional(vec![name.clone().into()]),
            )?;
        }
        // A sync that resumes with every chunk done (or had none to copy) is past the copy.
        c.query_drop(END_OF_COPY)
    }

    fn note(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        let values = progress.status_fields(&mut self.last_note);
        let c = self.live()?;
        for (k, v) in values {
            match v {
                Some(v) => c.exec_drop(
                    "INSERT INTO `_cutover_state` (`key`, `value`) VALUES (?, ?) \
                     ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)",
                    Params::Positional(vec![k.into(), v.into()]),
                ),
                None => c.exec_drop(
                    "DELETE FROM `_cutover_state` WHERE `key` = ?",
                    Params::Positional(vec![k.into()]),
                ),
            }
            .map_err(|e| e.context("recording the sync's status on the target"))?;
        }
        Ok(())
    }

    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        let c = self.live()?;
        for t in [
            "_cutover_watch",
            "_cutover_chunks",
            "_cutover_tables",
            "_cutover_state",
            "_cutover_mismatches",
        ] {
            c.query_drop(&format!("DROP TABLE IF EXISTS {}", ident(t)))
                .map_err(|e| e.context("removing the control store from the target"))?;
        }
        Ok(())
    }
}

/// Crash tests' failpoint `mysql::sink::before-commit`, between a batch's writes and its
/// commit (feature `failpoints`): `panic` ends the apply as a crash would (the server rolls the
/// transaction back when the session goes), `return` fails it.
fn before_commit() -> Result<(), ConnectorError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("mysql::sink::before-commit", |_| {
        Err(ConnectorError::new(
            ErrorKind::Database,
            "failpoint mysql::sink::before-commit",
        ))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::ColumnType;

    #[test]
    fn upserts_overwrite_every_column_and_wide_tables_take_fewer_rows() {
        let col = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Int {
                bits: 64,
                unsigned: false,
            },
            declared_type: "bigint".into(),
            nullable: false,
            default: None,
        };
        let t = TableSchema {
            name: TableName::bare("t"),
            columns: vec![col("id"), col("v")],
            primary_key: vec![0],
            indexes: vec![],
        };
        let sql = TableSql::new(&t);
        assert_eq!(
            sql.upsert_sql(2),
            "INSERT INTO `t` (`id`, `v`) VALUES (?, ?), (?, ?) ON DUPLICATE KEY UPDATE \
             `id` = VALUES(`id`), `v` = VALUES(`v`)"
        );
        assert_eq!(sql.delete, "DELETE FROM `t` WHERE `id` = ?");
        let wide = TableSchema {
            columns: (0..1000).map(|i| col(&format!("c{i}"))).collect(),
            ..t
        };
        assert_eq!(TableSql::new(&wide).rows_per_insert, 65);
    }
}
