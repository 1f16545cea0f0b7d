//! PostgreSQL as a replication target: creates the schema (tables with their primary keys,
//! since every write is an upsert by key), applies batches of chunk rows and changes in one
//! transaction with the checkpoint, and builds the rest of the schema once every table is copied.
//!
//! Every value is written as its text form cast to the column's type (`$1::text::type`), so
//! whatever the source held — enums, domains, ranges, extension types — arrives unchanged.
//! Consecutive writes of one kind to one table go out as one statement over `unnest` arrays.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use cutover_connector::{
    ApplyOp, CancellationToken, ColumnChange, ConnectorError, ErrorKind, KeyRange, PlannedChunk,
    PositionOrder, PositionOrderExt, Progress, Sink,
};
use cutover_model::{Change, Key, Position, Row, TableName, TableSchema, Value};

use crate::applier;
use crate::blocking::Client;
use crate::copy::{self, CopyOptions};
use crate::endpoint::PgEndpoint;
use crate::error::map;
use crate::pgtext;
use crate::pipelined::{Param, Pipelined, Stmt};
use crate::schema::{self, ident, qualified, PgColumn, PgTable, Selection, SourceSchema};
use crate::source::CaptureNames;

/// The statements of one target table, for rows of one shape.
#[derive(Clone)]
struct TableSql {
    name: TableName,
    /// The target table's columns now (not generated ones).
    target: Vec<PgColumn>,
    /// The primary key's columns.
    key_names: Vec<String>,
    /// The columns rows carry, in order.
    shape: Vec<String>,
    /// The row positions written, with the column's name and its type on the target: every
    /// column of the shape that the target has (one it lacks was dropped there).
    columns: Vec<(usize, String, String)>,
    /// Row positions of the key's columns.
    key: Vec<usize>,
    upsert: String,
    delete: String,
}

impl TableSql {
    fn new(
        name: &TableName,
        target: Vec<PgColumn>,
        shape: &[String],
        key_names: &[String],
    ) -> Result<TableSql, ConnectorError> {
        let columns: Vec<(usize, String, String)> = shape
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                target
                    .iter()
                    .find(|c| &c.name == n)
                    .map(|c| (i, n.clone(), c.type_sql.clone()))
            })
            .collect();
        let mut key = Vec::with_capacity(key_names.len());
        for k in key_names {
            let Some(i) = shape.iter().position(|n| n == k) else {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!("rows of {name} come without its key column {k}"),
                ));
            };
            if !target.iter().any(|c| &c.name == k) {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!("the target's table {name} has no column {k} (part of the source's primary key)"),
                ));
            }
            key.push(i);
        }
        let qname = qualified(name);
        let type_of = |pos: usize| {
            columns
                .iter()
                .find(|(i, _, _)| *i == pos)
                .map_or("text", |(_, _, t)| t.as_str())
        };
        let list = |idx: &[usize]| -> (String, String, String) {
            let params = (1..=idx.len())
                .map(|p| format!("${p}::text[]"))
                .collect::<Vec<_>>()
                .join(", ");
            let aliases = (0..idx.len())
                .map(|p| format!("c{p}"))
                .collect::<Vec<_>>()
                .join(", ");
            let casts = idx
                .iter()
                .enumerate()
                .map(|(p, &i)| format!("u.c{p}::{}", type_of(i)))
                .collect::<Vec<_>>()
                .join(", ");
            (params, aliases, casts)
        };
        let all: Vec<usize> = columns.iter().map(|(i, _, _)| *i).collect();
        let (params, aliases, casts) = list(&all);
        let names = columns
            .iter()
            .map(|(_, n, _)| ident(n))
            .collect::<Vec<_>>()
            .join(", ");
        let key_list = key_names
            .iter()
            .map(|n| ident(n))
            .collect::<Vec<_>>()
            .join(", ");
        let updates: Vec<String> = columns
            .iter()
            .filter(|(_, n, _)| !key_names.contains(n))
            .map(|(_, n, _)| format!("{0} = EXCLUDED.{0}", ident(n)))
            .collect();
        let on_conflict = if updates.is_empty() {
            format!("ON CONFLICT ({key_list}) DO NOTHING")
        } else {
            format!(
                "ON CONFLICT ({key_list}) DO UPDATE SET {}",
                updates.join(", ")
            )
        };
        let overriding = if target.iter().any(|c| c.identity == Some('a')) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let upsert = format!(
            "INSERT INTO {qname} ({names}){overriding} SELECT {casts} FROM unnest({params}) AS u({aliases}) {on_conflict}"
        );
        let (kparams, kaliases, kcasts) = list(&key);
        let delete = format!(
            "DELETE FROM {qname} WHERE ({key_list}) IN (SELECT {kcasts} FROM unnest({kparams}) AS u({kaliases}))"
        );
        Ok(TableSql {
            name: name.clone(),
            target,
            key_names: key_names.to_vec(),
            shape: shape.to_vec(),
            columns,
            key,
            upsert,
            delete,
        })
    }

    /// The same table for rows of another shape.
    fn reshape(&self, shape: &[String]) -> Result<TableSql, ConnectorError> {
        TableSql::new(&self.name, self.target.clone(), shape, &self.key_names)
    }

    /// The statement that makes `change`, and the table after it.
    fn alter(&self, change: &ColumnChange) -> Result<(String, TableSql), ConnectorError> {
        let qname = qualified(&self.name);
        let mut target = self.target.clone();
        let sql = match change {
            ColumnChange::Add(c) => {
                let default = c
                    .default
                    .as_deref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default();
                // NOT NULL only with a default: the rows already there need a value.
                let not_null = if !c.nullable && c.default.is_some() {
                    " NOT NULL"
                } else {
                    ""
                };
                target.retain(|t| t.name != c.name);
                target.push(PgColumn::plain(&c.name, &c.declared_type, 0));
                format!(
                    "ALTER TABLE {qname} ADD COLUMN IF NOT EXISTS {} {}{default}{not_null}",
                    ident(&c.name),
                    c.declared_type
                )
            }
            ColumnChange::Drop(name) => {
                target.retain(|t| &t.name != name);
                format!("ALTER TABLE {qname} DROP COLUMN IF EXISTS {}", ident(name))
            }
            ColumnChange::Retype(c) => {
                if let Some(t) = target.iter_mut().find(|t| t.name == c.name) {
                    t.type_sql = c.declared_type.clone();
                }
                format!(
                    "ALTER TABLE {qname} ALTER COLUMN {} TYPE {}",
                    ident(&c.name),
                    c.declared_type
                )
            }
        };
        Ok((
            sql,
            TableSql::new(&self.name, target, &self.shape, &self.key_names)?,
        ))
    }

    /// `UPDATE … SET` the written columns that came (not the `unchanged` ones) for many rows at
    /// once, from text arrays: one per column set, then one per key column (the old key).
    fn partial_update(&self, set: &[usize]) -> String {
        let n = set.len() + self.key.len();
        let params = (1..=n)
            .map(|p| format!("${p}::text[]"))
            .collect::<Vec<_>>()
            .join(", ");
        let aliases = (0..n)
            .map(|p| format!("c{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let column = |pos: usize| self.columns.iter().find(|(i, _, _)| *i == pos);
        let assignments: Vec<String> = set
            .iter()
            .enumerate()
            .filter_map(|(p, &i)| {
                column(i).map(|(_, name, ty)| format!("{} = u.c{p}::{ty}", ident(name)))
            })
            .collect();
        let conds: Vec<String> = self
            .key
            .iter()
            .enumerate()
            .filter_map(|(p, &i)| {
                column(i)
                    .map(|(_, name, ty)| format!("t.{} = u.c{}::{ty}", ident(name), set.len() + p))
            })
            .collect();
        format!(
            "UPDATE {} AS t SET {} FROM unnest({params}) AS u({aliases}) WHERE {}",
            qualified(&self.name),
            assignments.join(", "),
            conds.join(" AND ")
        )
    }

    /// The written positions not among `unchanged` (and not the key's).
    fn set_columns(&self, unchanged: &[usize]) -> Vec<usize> {
        self.columns
            .iter()
            .map(|(i, _, _)| *i)
            .filter(|i| !unchanged.contains(i))
            .collect()
    }

    fn key_of(&self, row: &[Value]) -> Key {
        self.key
            .iter()
            .filter_map(|&i| row.get(i).cloned())
            .collect()
    }
}

/// One write, after changes are broken down.
#[derive(Clone)]
enum Write<'a> {
    Upsert(&'a TableName, &'a Row),
    Delete(&'a TableName, &'a Key),
    Partial {
        table: &'a TableName,
        old_key: &'a Key,
        row: &'a Row,
        unchanged: &'a [usize],
    },
    Truncate(&'a [TableName]),
    ChunkDone(&'a TableName, u32, u64),
    Watch(&'a TableName, &'a [Key]),
}

/// Settings of both of the sink's sessions.
const SESSION: &str = "SET search_path = pg_catalog; SET synchronous_commit = off; \
                       SET default_transaction_read_only = off";

/// Writes a PostgreSQL target.
///
/// Its two connections (control and catalog work; apply batches) are replaced at the start of
/// the next call once either is known broken, with their session set up again. A batch whose
/// commit was cut off is simply applied again by the caller's retry: its writes are
/// idempotent and its checkpoint moves to the same position.
pub struct PgSink {
    /// A control session ([`PgEndpoint::connect_control`]).
    client: Client,
    /// The last call failed with a connection error: the next one reconnects first.
    broken: bool,
    /// The newest checkpoint this sink knows committed (applied, or read back): after a
    /// reconnect, a target whose checkpoint is older lost commits.
    committed: Option<Position>,
    target: PgEndpoint,
    /// The source whose schema the target gets (PostgreSQL → PostgreSQL): enums, domains,
    /// partitions, extension types, sequences. `None`: the source is another engine, and tables
    /// are created from the neutral schemas given to `prepare` ([`applier`]).
    source: Option<PgEndpoint>,
    /// Without a PostgreSQL source: each table's schema as prepared, to refuse values that its
    /// target columns would not read back unchanged (`applier::fits`). A table leaves this map
    /// once its rows change shape.
    neutral: HashMap<TableName, TableSchema>,
    selection: Selection,
    names: CaptureNames,
    truncate: bool,
    jobs: usize,
    schema: Option<SourceSchema>,
    /// The source's tables of this migration (to create those new on the source).
    source_tables: Vec<PgTable>,
    tables: HashMap<TableName, TableSql>,
    finished: HashSet<TableName>,
    /// The connection apply batches go through, each in one round trip.
    pipe: Pipelined,
    /// For the changes-per-second figure in the control store.
    last_note: Option<(Instant, u64)>,
    /// Replicated writes skip triggers and foreign-key checks (`session_replication_role`), so a
    /// batch may be applied compacted, not only in source order.
    replica_role: bool,
    /// Checkpoints committed (without waiting for the disk) and not yet known flushed, with an
    /// upper bound of their commit record's end on the target (sampled by `durable`).
    unflushed: std::collections::VecDeque<(Position, u64)>,
    /// The newest checkpoint known flushed.
    flushed: Option<Position>,
    /// How the source orders the checkpoints ([`Sink::set_order`]).
    order: &'static dyn PositionOrder,
}

impl PgSink {
    pub fn open(
        target: &PgEndpoint,
        source: Option<&PgEndpoint>,
        selection: &Selection,
        names: &CaptureNames,
        truncate: bool,
        jobs: usize,
    ) -> Result<PgSink, ConnectorError> {
        let client = control_session(target)?;
        let pipe = Pipelined::connect(target, SESSION)?;
        Ok(PgSink {
            client,
            broken: false,
            committed: None,
            target: target.clone(),
            source: source.cloned(),
            neutral: HashMap::new(),
            selection: selection.clone(),
            names: names.clone(),
            truncate,
            jobs,
            schema: None,
            source_tables: Vec::new(),
            tables: HashMap::new(),
            finished: HashSet::new(),
            pipe,
            last_note: None,
            replica_role: false,
            unflushed: std::collections::VecDeque::new(),
            flushed: None,
            order: &crate::lsn::LSNS,
        })
    }

    /// Runs one [`Sink`] call: first replaces whichever connection is known broken (closed, or
    /// the last call failed with a connection error) and sets its session up again, then notes
    /// whether this call broke one.
    fn session<T>(
        &mut self,
        call: impl FnOnce(&mut PgSink) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        self.reconnect()?;
        let result = call(self);
        if result
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Connect)
        {
            self.broken = true;
        }
        result
    }

    fn reconnect(&mut self) -> Result<(), ConnectorError> {
        let client = self.broken || self.client.is_closed();
        let pipe = self.broken || self.pipe.is_closed();
        if !client && !pipe {
            return Ok(());
        }
        // Until both are back (and checked), the next call starts over.
        self.broken = true;
        if client {
            self.client = control_session(&self.target)?;
            tracing::info!(target = %self.target.redacted(), "reconnected to the target");
            self.check_nothing_lost()?;
        }
        if pipe {
            let mut fresh = Pipelined::connect(&self.target, SESSION)?;
            if self.replica_role {
                fresh
                    .execute_simple("SET session_replication_role = replica")
                    .map_err(|e| map("preparing the target's apply session again", e))?;
            }
            self.pipe = fresh;
        }
        self.broken = false;
        Ok(())
    }

    /// After a reconnect: the target's checkpoint must not be older than the last one this sink
    /// saw committed. It is when the target crashed before flushing commits (cutover commits
    /// without waiting for the disk, and only releases the source's history up to what is
    /// flushed): the changes in between must be applied again, which this run cannot do.
    fn check_nothing_lost(&mut self) -> Result<(), ConnectorError> {
        let Some(committed) = self.committed.clone() else {
            return Ok(());
        };
        let stored: Option<String> = self
            .client
            .query_opt("SELECT position FROM _cutover.replication", &[])
            .and_then(|r| r.map(|r| r.try_get(0)).transpose())
            .map_err(|e| map("reading the checkpoint after reconnecting", e))?
            .flatten();
        let stored = stored.and_then(|t| t.parse::<Position>().ok());
        if stored
            .as_ref()
            .is_some_and(|s| self.order.reached(s, &committed))
        {
            return Ok(());
        }
        Err(ConnectorError::new(
            ErrorKind::Database,
            format!(
                "the target lost commits: its checkpoint is back at {} after the connection broke, \
                 but {committed} had been committed (it crashed before writing them to disk). \
                 Run the same command again: sync resumes from the target's checkpoint, and the \
                 source kept every change after it",
                stored.map_or_else(|| "nothing".to_owned(), |s| s.to_string())
            ),
        ))
    }

    fn mode(&mut self) -> Result<Option<String>, ConnectorError> {
        if copy::control_phase(&mut self.client)?.is_none() {
            return Ok(None);
        }
        let mode: String = self
            .client
            .query_one("SELECT mode FROM _cutover.migration", &[])
            .or_else(|_| {
                // A control store from before `mode` existed is a copy's.
                self.client.query_one("SELECT 'copy'::text", &[])
            })
            .map_err(|e| map("reading cutover's control store", e))?
            .get(0);
        Ok(Some(mode))
    }

    /// Creates tables that appeared on the source since sync last ran (with their primary keys;
    /// their rows are copied like any other table's). Secondary indexes of such tables are not
    /// built: the post-data steps were planned when the migration began.
    fn create_new_tables(&mut self) -> Result<(), ConnectorError> {
        let mut missing = Vec::new();
        for t in &self.source_tables {
            let exists: bool = self
                .client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(&t.name)])
                .and_then(|r| r.try_get(0))
                .map_err(|e| map("inspecting the target", e))?;
            if !exists {
                missing.push(t.clone());
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .client
            .transaction()
            .map_err(|e| map("creating new tables on the target", e))?;
        for t in &missing {
            let ctx = || {
                format!(
                    "creating table {} (new on the source) on the target",
                    t.name
                )
            };
            tx.batch_execute(&schema::create_table_sql(t))
                .map_err(|e| map(ctx(), e))?;
            if let Some(pk) = schema::primary_key_sql(t) {
                tx.batch_execute(&pk).map_err(|e| map(ctx(), e))?;
            }
            tracing::warn!(table = %t.name, "new table on the source: created on the target and copied (its secondary indexes are not built)");
        }
        tx.commit()
            .map_err(|e| map("creating new tables on the target", e))
    }

    /// The target's columns of `name` now (not generated ones).
    fn target_columns(&mut self, name: &TableName) -> Result<Vec<PgColumn>, ConnectorError> {
        let relid =
            schema::relation_oid(&mut self.client, name).map_err(|e| e.context("on the target"))?;
        schema::live_columns(&mut self.client, relid)
    }

    /// Writes `ops` and the checkpoint in one target transaction, sent in one go: each
    /// stretch between column changes as its rows' net effect (`compacted`) or in source
    /// order.
    fn commit_batch(
        &mut self,
        ops: &[ApplyOp],
        checkpoint: Position,
        ctx: &str,
        compacted: bool,
    ) -> Result<(), ConnectorError> {
        let reshaped = ops
            .iter()
            .any(|o| matches!(o, ApplyOp::Alter { .. } | ApplyOp::Columns { .. }));
        // The tables as this batch changes them; adopted only once it committed.
        let mut tables = if reshaped {
            Cow::Owned(self.tables.clone())
        } else {
            Cow::Borrowed(&self.tables)
        };
        let mut stmts = Vec::new();
        let mut rest = ops;
        while !rest.is_empty() {
            let n = rest
                .iter()
                .position(|o| matches!(o, ApplyOp::Alter { .. } | ApplyOp::Columns { .. }))
                .unwrap_or(rest.len());
            let (stretch, after) = rest.split_at(n);
            let w = writes(stretch, &tables);
            if compacted {
                let steps = compact(&w, &tables);
                let w: Vec<Write<'_>> = steps.iter().map(Step::write).collect();
                stmts.extend(plan(&tables, &w)?);
            } else {
                stmts.extend(plan(&tables, &w)?);
            }
            match after.first() {
                Some(ApplyOp::Alter {
                    table: name,
                    change,
                }) => {
                    let (sql, altered) = table(&tables, name)?.alter(change)?;
                    stmts.push(Stmt {
                        what: format!("changing {name} as the source did: {sql}"),
                        sql,
                        params: Vec::new(),
                    });
                    tables.to_mut().insert(name.clone(), altered);
                }
                Some(ApplyOp::Columns {
                    table: name,
                    columns,
                }) => {
                    let reshaped = table(&tables, name)?.reshape(columns)?;
                    tables.to_mut().insert(name.clone(), reshaped);
                }
                _ => {}
            }
            rest = after.get(1..).unwrap_or(&[]);
        }
        let changes = ops
            .iter()
            .filter(|o| matches!(o, ApplyOp::Change(_)))
            .count();
        stmts.push(Stmt {
            sql: "UPDATE _cutover.replication SET position = $1, changes_applied = changes_applied + $2::text::bigint, updated_at = now()".into(),
            params: vec![
                Param::Text(Some(checkpoint.to_string())),
                Param::Text(Some(changes.to_string())),
            ],
            what: "recording the checkpoint".into(),
        });
        self.pipe.transaction(&stmts, ctx)?;
        if let Cow::Owned(t) = tables {
            self.tables = t;
        }
        Ok(())
    }

    /// Remembers where the target's WAL stands after committing `checkpoint`, so that
    /// [`Sink::durable`] can tell once it is on disk.
    fn note_unflushed(&mut self, checkpoint: Position) -> Result<(), ConnectorError> {
        let lsn: String = self
            .client
            .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
            .map_err(|e| map("reading the target's WAL position", e))?
            .get(0);
        if let Some(l) = crate::lsn::parse_text(&lsn) {
            self.unflushed.push_back((checkpoint, l));
        }
        Ok(())
    }
}

/// The statements that perform `writes`: one per run of writes of one kind to one table.
fn plan(
    tables: &HashMap<TableName, TableSql>,
    writes: &[Write<'_>],
) -> Result<Vec<Stmt>, ConnectorError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        match &writes[i] {
            Write::Upsert(table, _) => {
                let mut j = i;
                let mut rows: Vec<&Row> = Vec::new();
                while let Some(Write::Upsert(t, row)) = writes.get(j) {
                    if t != table {
                        break;
                    }
                    rows.push(row);
                    j += 1;
                }
                out.push(upsert(self::table(tables, table)?, &rows));
                i = j;
            }
            Write::Delete(table, _) => {
                let mut j = i;
                let mut keys: Vec<&Key> = Vec::new();
                while let Some(Write::Delete(t, key)) = writes.get(j) {
                    if t != table {
                        break;
                    }
                    keys.push(key);
                    j += 1;
                }
                out.push(delete(self::table(tables, table)?, &keys));
                i = j;
            }
            Write::Partial {
                table, unchanged, ..
            } => {
                // Rows of one table updated in the same columns, each key once.
                let mut j = i;
                let mut seen = HashSet::new();
                let mut rows: Vec<(&Key, &Row)> = Vec::new();
                while let Some(Write::Partial {
                    table: t,
                    old_key,
                    row,
                    unchanged: u,
                }) = writes.get(j)
                {
                    if t != table || u != unchanged || !seen.insert(*old_key) {
                        break;
                    }
                    rows.push((old_key, row));
                    j += 1;
                }
                out.push(partial(self::table(tables, table)?, unchanged, &rows));
                i = j;
            }
            Write::Truncate(truncated) => {
                let names: Vec<String> = truncated
                    .iter()
                    .filter(|t| tables.contains_key(t))
                    .map(qualified)
                    .collect();
                if !names.is_empty() {
                    out.push(Stmt {
                        sql: format!("TRUNCATE {}", names.join(", ")),
                        params: Vec::new(),
                        what: "truncating".into(),
                    });
                }
                i += 1;
            }
            Write::Watch(table, keys) => {
                out.push(Stmt {
                        sql: "INSERT INTO _cutover.watch (table_schema, table_name, key)
                              SELECT $1, $2, k::bytea FROM unnest($3::text[]) k ON CONFLICT DO NOTHING"
                            .into(),
                        params: vec![
                            Param::Text(Some(table.schema.clone().unwrap_or_default())),
                            Param::Text(Some(table.name.clone())),
                            Param::Texts(keys.iter().map(key_bytes).collect()),
                        ],
                        what: format!("noting rows of {table} changed during the copy"),
                    });
                i += 1;
            }
            Write::ChunkDone(table, chunk, rows) => {
                out.push(Stmt {
                        sql: "UPDATE _cutover.chunks SET done = true, done_at = now(), rows = $4::text::bigint
                               WHERE table_schema = $1 AND table_name = $2 AND chunk = $3::text::int"
                            .into(),
                        params: vec![
                            Param::Text(Some(table.schema.clone().unwrap_or_default())),
                            Param::Text(Some(table.name.clone())),
                            Param::Text(Some(chunk.to_string())),
                            Param::Text(Some(rows.to_string())),
                        ],
                        what: format!("marking chunk {chunk} of {table} done"),
                    });
                i += 1;
            }
        }
    }
    Ok(out)
}

fn table<'t>(
    tables: &'t HashMap<TableName, TableSql>,
    name: &TableName,
) -> Result<&'t TableSql, ConnectorError> {
    tables.get(name).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::NotFound,
            format!("table {name} is not part of this migration on the target"),
        )
    })
}

fn upsert(t: &TableSql, rows: &[&Row]) -> Stmt {
    // One statement may not touch a row twice: keep each key's last row.
    let mut last: HashMap<Key, usize> = HashMap::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        last.insert(t.key_of(r), i);
    }
    let mut keep: Vec<usize> = last.into_values().collect();
    keep.sort_unstable();
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(keep.len()); t.columns.len()];
    for r in keep.iter().map(|&i| rows[i]) {
        for (c, (pos, _, _)) in t.columns.iter().enumerate() {
            cols[c].push(r.get(*pos).and_then(pgtext::encode));
        }
    }
    Stmt {
        sql: t.upsert.clone(),
        params: cols.into_iter().map(Param::Texts).collect(),
        what: format!("writing {} rows of {}", rows.len(), t.name),
    }
}

fn partial(t: &TableSql, unchanged: &[usize], rows: &[(&Key, &Row)]) -> Stmt {
    let set = t.set_columns(unchanged);
    let mut cols: Vec<Vec<Option<String>>> =
        vec![Vec::with_capacity(rows.len()); set.len() + t.key.len()];
    for (key, row) in rows {
        for (p, &c) in set.iter().enumerate() {
            cols[p].push(row.get(c).and_then(pgtext::encode));
        }
        for (p, v) in key.iter().enumerate().take(t.key.len()) {
            cols[set.len() + p].push(pgtext::encode(v));
        }
    }
    Stmt {
        sql: t.partial_update(&set),
        params: cols.into_iter().map(Param::Texts).collect(),
        what: format!("updating {} rows of {}", rows.len(), t.name),
    }
}

fn delete(t: &TableSql, keys: &[&Key]) -> Stmt {
    let mut cols: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(keys.len()); t.key.len()];
    for k in keys {
        for (c, v) in k.iter().enumerate().take(cols.len()) {
            cols[c].push(pgtext::encode(v));
        }
    }
    Stmt {
        sql: t.delete.clone(),
        params: cols.into_iter().map(Param::Texts).collect(),
        what: format!("deleting {} rows of {}", keys.len(), t.name),
    }
}

/// Breaks changes down into writes, in order.
fn writes<'a>(ops: &'a [ApplyOp], tables: &HashMap<TableName, TableSql>) -> Vec<Write<'a>> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            ApplyOp::Upsert { table, row } => out.push(Write::Upsert(table, row)),
            ApplyOp::ChunkDone { table, chunk, rows } => {
                out.push(Write::ChunkDone(table, *chunk, *rows))
            }
            ApplyOp::Watch { table, keys } => out.push(Write::Watch(table, keys)),
            // Handled between the stretches of writes (see `commit_batch`).
            ApplyOp::Alter { .. } | ApplyOp::Columns { .. } | ApplyOp::Origin { .. } => {}
            ApplyOp::Change(c) => match c {
                Change::Insert { table, row } => out.push(Write::Upsert(table, row)),
                Change::Update {
                    table,
                    old_key,
                    row,
                    unchanged,
                    ..
                } => {
                    if !unchanged.is_empty() {
                        out.push(Write::Partial {
                            table,
                            old_key,
                            row,
                            unchanged,
                        });
                        continue;
                    }
                    let key_moved = tables.get(table).is_some_and(|t| &t.key_of(row) != old_key);
                    if key_moved {
                        out.push(Write::Delete(table, old_key));
                    }
                    out.push(Write::Upsert(table, row));
                }
                Change::Delete { table, old_key, .. } => out.push(Write::Delete(table, old_key)),
                Change::Truncate { tables } => out.push(Write::Truncate(tables)),
                // The applier turns shapes into `Alter`/`Columns`.
                Change::Schema { .. } => {}
            },
        }
    }
    out
}

/// A batch's writes reduced to each row's net effect, in an order that needs one statement per
/// table and kind: deletes, then upserts, then partial updates. Writes that cannot be merged
/// (truncates, updates that move a key without all values) stay where they are, between the
/// compacted stretches before and after them.
///
/// Rows are independent, so only primary-key order is lost; a unique or foreign-key check that
/// the new order trips makes the caller apply the batch again in source order.
fn compact<'a>(writes: &[Write<'a>], tables: &HashMap<TableName, TableSql>) -> Vec<Step<'a>> {
    let mut out = Vec::new();
    let mut net: HashMap<(&'a TableName, Key), Net<'a>> = HashMap::new();
    let mut order: Vec<(&'a TableName, Key)> = Vec::new();
    let mut chunks = Vec::new();
    let flush = |net: &mut HashMap<(&'a TableName, Key), Net<'a>>,
                 order: &mut Vec<(&'a TableName, Key)>,
                 out: &mut Vec<Step<'a>>| {
        let mut deletes = Vec::new();
        let mut upserts = Vec::new();
        let mut partials = Vec::new();
        for k in order.drain(..) {
            match net.remove(&k) {
                Some(Net::Delete) => deletes.push(Step::Delete(k.0, k.1)),
                Some(Net::Upsert(row)) => upserts.push(Step::Upsert(k.0, row)),
                Some(Net::Partial(row, unchanged)) => partials.push(Step::Partial {
                    table: k.0,
                    key: k.1,
                    row,
                    unchanged,
                }),
                None => {}
            }
        }
        let by_table = |s: &Step<'a>| match s {
            Step::Delete(t, _) | Step::Upsert(t, _) | Step::Partial { table: t, .. } => {
                (*t).clone()
            }
            _ => TableName::bare(""),
        };
        deletes.sort_by_key(by_table);
        upserts.sort_by_key(by_table);
        partials.sort_by(|a, b| match (a, b) {
            (
                Step::Partial {
                    table: x,
                    unchanged: u,
                    ..
                },
                Step::Partial {
                    table: y,
                    unchanged: v,
                    ..
                },
            ) => (x, u).cmp(&(y, v)),
            _ => std::cmp::Ordering::Equal,
        });
        out.extend(deletes);
        out.extend(upserts);
        out.extend(partials);
    };
    let set = |net: &mut HashMap<(&'a TableName, Key), Net<'a>>,
               order: &mut Vec<(&'a TableName, Key)>,
               k: (&'a TableName, Key),
               v: Net<'a>| {
        if !net.contains_key(&k) {
            order.push(k.clone());
        }
        net.insert(k, v);
    };
    for w in writes {
        match w {
            Write::Upsert(t, row) => {
                let Some(sql) = tables.get(*t) else { continue };
                set(
                    &mut net,
                    &mut order,
                    (*t, sql.key_of(row)),
                    Net::Upsert(Cow::Borrowed(*row)),
                );
            }
            Write::Delete(t, key) => set(&mut net, &mut order, (*t, (*key).clone()), Net::Delete),
            Write::Partial {
                table,
                old_key,
                row,
                unchanged,
            } => {
                let Some(sql) = tables.get(*table) else {
                    continue;
                };
                if &sql.key_of(row) != *old_key {
                    flush(&mut net, &mut order, &mut out);
                    out.push(Step::Keep(Write::Partial {
                        table,
                        old_key,
                        row,
                        unchanged,
                    }));
                    continue;
                }
                let k = (*table, (*old_key).clone());
                let merged = match net.remove(&k) {
                    // A row known whole: it stays whole with the new values.
                    Some(Net::Upsert(mut prev)) => {
                        for (i, v) in row.iter().enumerate() {
                            if !unchanged.contains(&i) {
                                prev.to_mut()[i] = v.clone();
                            }
                        }
                        Net::Upsert(prev)
                    }
                    // Updating a deleted row changes nothing.
                    Some(Net::Delete) => Net::Delete,
                    Some(Net::Partial(mut prev, prev_unchanged)) => {
                        for (i, v) in row.iter().enumerate() {
                            if !unchanged.contains(&i) {
                                prev.to_mut()[i] = v.clone();
                            }
                        }
                        let still: Vec<usize> = prev_unchanged
                            .into_iter()
                            .filter(|i| unchanged.contains(i))
                            .collect();
                        Net::Partial(prev, still)
                    }
                    None => Net::Partial(Cow::Borrowed(*row), unchanged.to_vec()),
                };
                set(&mut net, &mut order, k, merged);
            }
            Write::Truncate(_) => {
                flush(&mut net, &mut order, &mut out);
                out.push(Step::Keep(w.clone()));
            }
            Write::ChunkDone(..) | Write::Watch(..) => chunks.push(Step::Keep(w.clone())),
        }
    }
    flush(&mut net, &mut order, &mut out);
    out.extend(chunks);
    out
}

/// A row's net effect within a batch; a row is copied only when writes to it are merged.
enum Net<'a> {
    Upsert(Cow<'a, Row>),
    Delete,
    /// An update of the columns not in the list, to a row the batch never saw whole.
    Partial(Cow<'a, Row>, Vec<usize>),
}

/// A compacted write, or a write kept as it was.
enum Step<'a> {
    Delete(&'a TableName, Key),
    Upsert(&'a TableName, Cow<'a, Row>),
    Partial {
        table: &'a TableName,
        key: Key,
        row: Cow<'a, Row>,
        unchanged: Vec<usize>,
    },
    Keep(Write<'a>),
}

impl<'a> Step<'a> {
    fn write(&self) -> Write<'_> {
        match self {
            Step::Delete(t, k) => Write::Delete(t, k),
            Step::Upsert(t, r) => Write::Upsert(t, r),
            Step::Partial {
                table,
                key,
                row,
                unchanged,
            } => Write::Partial {
                table,
                old_key: key,
                row,
                unchanged,
            },
            Step::Keep(w) => w.clone(),
        }
    }
}

/// A key as the control store keeps it: the model's binary encoding, as bytea text.
fn key_bytes(key: &Key) -> Option<String> {
    pgtext::encode(&Value::Bytes(cutover_model::encode_row(key)))
}

/// A stored chunk bound: typed (`*_key_enc`, control store version 2) when present, else the
/// text forms of a version-1 store or of `copy`'s plan (a PostgreSQL source casts them back to
/// the key's types).
pub(crate) fn stored_key(
    encoded: Option<Vec<u8>>,
    text: Option<Vec<String>>,
    what: impl Fn() -> String,
) -> Result<Option<Key>, ConnectorError> {
    match (encoded, text) {
        (Some(bytes), _) => cutover_model::decode_row(&bytes).map(Some).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("{}: the stored key is corrupt ({e}); run `cutover cleanup` on the target and start over", what()),
            )
        }),
        (None, Some(text)) => Ok(Some(text.into_iter().map(Value::Text).collect())),
        (None, None) => Ok(None),
    }
}

fn range_bytes(k: &Option<Key>) -> Option<Vec<u8>> {
    k.as_ref().map(|k| cutover_model::encode_row(k))
}

fn range_texts(k: &Option<Key>) -> Option<Vec<String>> {
    k.as_ref().map(|k| {
        k.iter()
            .map(|v| pgtext::encode(v).unwrap_or_default())
            .collect()
    })
}

impl Sink for PgSink {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.session(|s| {
            if s.mode()?.is_some() {
                // A migration of cutover's to resume.
                return Ok(());
            }
            match s.source.clone() {
                Some(source) => {
                    let schema = schema::read(&mut source.connect_control()?, &s.selection)?;
                    schema.check_foreign_keys(s.selection.skip_foreign_keys)?;
                    copy::existing_tables(&mut s.client, &schema, s.truncate, "sync").map(drop)
                }
                None => s.existing_neutral(tables).map(drop),
            }
        })
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.session(|s| s.prepare_now(tables))
    }

    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        self.session(|s| s.chunk_plan_now(table, plan))
    }

    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        self.session(|s| s.apply_now(ops, checkpoint))
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.session(|s| s.checkpoint_now())
    }

    fn durable(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        self.session(|s| s.durable_now(applied.clone()))
    }

    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        self.order = order;
    }

    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.session(|s| s.finish_tables_now(tables))
    }

    fn record_recent(&mut self, keys: &[(TableName, Key)]) -> Result<(), ConnectorError> {
        self.session(|s| s.record_recent_now(keys))
    }

    fn columns(
        &mut self,
        table: &TableSchema,
    ) -> Result<Vec<cutover_model::Column>, ConnectorError> {
        self.session(|s| s.columns_now(table))
    }

    fn handover_requested(&mut self) -> Result<bool, ConnectorError> {
        self.session(|s| s.handover_requested_now())
    }

    fn note(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        self.session(|s| s.note_now(progress))
    }

    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        self.session(|s| s.cleanup_now())
    }
}

impl PgSink {
    /// The later of a known checkpoint and `c`, in the source's order.
    fn later(&self, known: Option<Position>, c: Position) -> Position {
        match known {
            Some(k) => self.order.later(k, c),
            None => c,
        }
    }

    fn prepare_now(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let schema = match self.source.clone() {
            Some(source) => {
                let schema = self.prepare_native(&source, tables)?;
                Some(schema)
            }
            None => {
                self.prepare_neutral(tables)?;
                None
            }
        };
        // Only cutover writes here until the switch: the application (or a stray script) is
        // refused, so nothing written here can be missing on the source. Cutover's own
        // sessions override it; the switch lifts it.
        if let Err(e) = self.client.batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
        ) {
            tracing::warn!(error = %e, "cannot make the target read-only for others until the switch (needs the database's owner)");
        }
        // This sync takes over: an old hand-over request is done with.
        self.client
            .execute("UPDATE _cutover.replication SET handover_requested = false WHERE handover_requested", &[])
            .map_err(|e| map("reading cutover's control store", e))?;
        // Like PostgreSQL's own apply workers: no triggers or foreign-key checks on replicated
        // writes (the source already checked them, and chunks arrive in any order).
        self.replica_role = true;
        if let Err(e) = self
            .pipe
            .execute_simple("SET session_replication_role = replica")
        {
            self.replica_role = false;
            tracing::warn!(error = %e, "cannot set session_replication_role = replica on the target (needs superuser); triggers on the target will fire for replicated writes");
        }
        // Rows carry the columns of `tables` (the source's, as sync starts); they are written
        // into the target's columns of the same names.
        let mut built = HashMap::with_capacity(tables.len());
        for m in tables {
            let name = applier::target_name(&m.name);
            let target = self.target_columns(&name)?;
            let shape: Vec<String> = m.columns.iter().map(|c| c.name.clone()).collect();
            let key: Vec<String> = m.key_columns().map(|c| c.name.clone()).collect();
            built.insert(m.name.clone(), TableSql::new(&name, target, &shape, &key)?);
        }
        self.tables = built;
        self.neutral = match schema {
            Some(_) => HashMap::new(),
            None => tables.iter().map(|t| (t.name.clone(), t.clone())).collect(),
        };
        self.schema = schema;
        Ok(())
    }

    /// The tables of `tables` the target already has (by their target names). Refuses, naming
    /// them and the fix, unless `truncate`.
    fn existing_neutral(
        &mut self,
        tables: &[TableSchema],
    ) -> Result<Vec<TableName>, ConnectorError> {
        let mut existing = Vec::new();
        for t in tables {
            let name = applier::target_name(&t.name);
            let found: bool = self
                .client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(&name)])
                .and_then(|r| r.try_get(0))
                .map_err(|e| map("inspecting the target", e))?;
            if found {
                existing.push(name);
            }
        }
        if !existing.is_empty() && !self.truncate {
            let names: Vec<String> = existing.iter().take(5).map(|t| t.to_string()).collect();
            return Err(ConnectorError::new(
                ErrorKind::Conflict,
                format!(
                    "the target already has {} of the tables to sync ({}{}) and no migration of cutover's to resume there: \
                     refusing to mix data. Use an empty database, drop those tables, or pass --truncate to empty them and start over",
                    existing.len(),
                    names.join(", "),
                    if existing.len() > 5 { ", …" } else { "" }
                ),
            ));
        }
        Ok(existing)
    }

    /// Creates `tables` (those missing) from their neutral schemas, with their primary keys,
    /// inside `tx`; returns the secondary indexes to build after the data.
    fn create_neutral(
        tx: &mut crate::blocking::Transaction<'_>,
        tables: &[TableSchema],
    ) -> Result<Vec<String>, ConnectorError> {
        let mut post = Vec::new();
        for t in tables {
            let (create, no_default) = applier::create_table_sql(t)
                .map_err(|e| ConnectorError::new(ErrorKind::LossyConversion, e.to_string()))?;
            let name = applier::target_name(&t.name);
            let ctx = || format!("creating table {name} on the target");
            let exists: bool = tx
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&qualified(&name)])
                .and_then(|r| r.try_get(0))
                .map_err(|e| map(ctx(), e))?;
            if !exists {
                if let Some(schema) = &name.schema {
                    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {}", ident(schema)))
                        .map_err(|e| map(ctx(), e))?;
                }
                tx.batch_execute(&create).map_err(|e| map(ctx(), e))?;
                if let Some(pk) = applier::primary_key_sql(t) {
                    tx.batch_execute(&pk).map_err(|e| map(ctx(), e))?;
                }
                for column in no_default {
                    tracing::warn!(table = %name, column = %column, "the source's default of this column is not a portable literal: the target's column has no default");
                }
            }
            let (indexes, skipped) = applier::index_sql(t);
            for index in skipped {
                tracing::warn!(table = %name, index = %index, "index over expressions: not built on the target (its definition is the source engine's SQL)");
            }
            post.extend(indexes);
        }
        Ok(post)
    }

    /// Prepares the target from the neutral schemas of `tables` (a source of another engine).
    fn prepare_neutral(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        // Refuse lossy mappings before anything is created.
        for t in tables {
            applier::create_table_sql(t)
                .map_err(|e| ConnectorError::new(ErrorKind::LossyConversion, e.to_string()))?;
        }
        match self.mode()?.as_deref() {
            None => {
                let existing = self.existing_neutral(tables)?;
                let mut tx = self
                    .client
                    .transaction()
                    .map_err(|e| map("starting the target's schema transaction", e))?;
                tx.batch_execute("SET LOCAL statement_timeout = 0")
                    .map_err(|e| map("preparing the target", e))?;
                for name in &existing {
                    tx.batch_execute(&format!("TRUNCATE {}", qualified(name)))
                        .map_err(|e| map(format!("emptying target table {name} (--truncate)"), e))?;
                }
                let indexes = Self::create_neutral(&mut tx, tables)?;
                copy::record_migration(&mut tx, "a source of another engine", "sync")?;
                let none = SourceSchema::default();
                copy::record_steps(&mut tx, &none, indexes.iter())?;
                tx.execute(
                    "INSERT INTO _cutover.replication (id, slot, publication) VALUES (1, $1, $2)",
                    &[&self.names.slot, &self.names.publication],
                )
                .map_err(|e| map("recording the replication", e))?;
                tx.commit()
                    .map_err(|e| map("committing the target's schema", e))?;
            }
            Some("copy") => {
                return Err(ConnectorError::new(
                    ErrorKind::Conflict,
                    "the target holds a PostgreSQL → PostgreSQL copy's control store, and this source is not PostgreSQL: \
                     run `cutover cleanup` on the target (or use an empty database) and start over",
                ))
            }
            Some(_) => {
                let mut tx = self
                    .client
                    .transaction()
                    .map_err(|e| map("upgrading cutover's control store", e))?;
                crate::state::migrate(&mut tx, "the target")?;
                // Tables new to this run: created, copied; their indexes are built with the
                // others only if the copy has not finished yet.
                let indexes = Self::create_neutral(&mut tx, tables)?;
                let known: i64 = tx
                    .query_one("SELECT count(*) FROM _cutover.steps", &[])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| map("reading cutover's control store", e))?;
                let recorded: Vec<String> = tx
                    .query("SELECT sql FROM _cutover.steps", &[])
                    .map_err(|e| map("reading cutover's control store", e))?
                    .iter()
                    .filter_map(|r| r.try_get(0).ok())
                    .collect();
                for (i, sql) in indexes
                    .iter()
                    .filter(|s| !recorded.contains(s))
                    .enumerate()
                {
                    tx.execute(
                        "INSERT INTO _cutover.steps (id, phase, sql) VALUES ($1, 'index', $2)",
                        &[&(known as i32 + i as i32), sql],
                    )
                    .map_err(|e| map("recording the post-data steps", e))?;
                }
                tx.commit()
                    .map_err(|e| map("upgrading cutover's control store", e))?;
                self.check_slot_name()?;
            }
        }
        Ok(())
    }

    /// A resumed sync must be the same migration (`--name`) as the one that started.
    fn check_slot_name(&mut self) -> Result<(), ConnectorError> {
        let slot: Option<String> = self
            .client
            .query_opt("SELECT slot FROM _cutover.replication", &[])
            .map_err(|e| map("reading cutover's control store", e))?
            .and_then(|r| r.try_get(0).ok());
        if let Some(slot) = slot.filter(|s| s != &self.names.slot) {
            return Err(ConnectorError::new(
                ErrorKind::Conflict,
                format!(
                    "the target is being synced through replication slot {slot}, not {}: run sync with the same --name as before",
                    self.names.slot
                ),
            ));
        }
        Ok(())
    }

    /// Prepares the target from the PostgreSQL source's catalog (same engine: every object
    /// type carried natively). Returns the source's schema.
    fn prepare_native(
        &mut self,
        source: &PgEndpoint,
        tables: &[TableSchema],
    ) -> Result<SourceSchema, ConnectorError> {
        let mut src = source.connect_control()?;
        let schema = schema::read(&mut src, &self.selection)?;
        drop(src);
        self.source_tables = schema
            .tables
            .iter()
            .filter(|t| tables.iter().any(|m| m.name == t.name))
            .cloned()
            .collect();
        match self.mode()?.as_deref() {
            None => {
                let existing =
                    copy::existing_tables(&mut self.client, &schema, self.truncate, "sync")?;
                let mut tx = self
                    .client
                    .transaction()
                    .map_err(|e| map("starting the target's schema transaction", e))?;
                copy::create_schema(&mut tx, &schema, &existing, self.truncate)?;
                for pk in schema.primary_keys.iter().map(|s| &s.sql) {
                    let sp = "cutover_pk";
                    tx.batch_execute(&format!("SAVEPOINT {sp}"))
                        .map_err(|e| map("preparing the target", e))?;
                    if let Err(e) = tx.batch_execute(pk) {
                        // Kept by --truncate: the key is already there.
                        if self.truncate
                            && e.code()
                                .is_some_and(|c| matches!(c.code(), "42P16" | "42P07"))
                        {
                            tx.batch_execute(&format!("ROLLBACK TO SAVEPOINT {sp}"))
                                .map_err(|e| map("preparing the target", e))?;
                        } else {
                            return Err(map(
                                format!("adding a primary key on the target: {pk}"),
                                e,
                            ));
                        }
                    }
                }
                copy::record_migration(&mut tx, source.redacted(), "sync")?;
                // Triggers and rules are created disabled, so that they do not act on the rows
                // sync writes (whether or not the apply session may use
                // session_replication_role); the switch enables them.
                copy::record_steps_with(&mut tx, &schema, std::iter::empty(), true)?;
                tx.execute(
                    "INSERT INTO _cutover.replication (id, slot, publication) VALUES (1, $1, $2)",
                    &[&self.names.slot, &self.names.publication],
                )
                .map_err(|e| map("recording the replication", e))?;
                tx.commit()
                    .map_err(|e| map("committing the target's schema", e))?;
            }
            Some("copy") => {
                let mut tx = self
                    .client
                    .transaction()
                    .map_err(|e| map("converting the copy into a sync", e))?;
                // Primary keys may be built below on tables holding the copy's rows.
                tx.batch_execute("SET LOCAL statement_timeout = 0")
                    .map_err(|e| map("converting the copy into a sync", e))?;
                crate::state::migrate(&mut tx, "the target")?;
                // `copy --capture` read its chunks in the slot's snapshot: those are exactly
                // the rows before the slot's stream, and stay. Chunks copied without it (a copy
                // without capture, or one resumed after an interruption) are copied again:
                // changes made since they were read could be missing (rows are overwritten by
                // key, none duplicated).
                let captured = tx
                    .query_opt(
                        "SELECT 1 FROM _cutover.replication WHERE slot = $1 AND position IS NOT NULL",
                        &[&self.names.slot],
                    )
                    .map_err(|e| map("reading cutover's control store", e))?
                    .is_some();
                let again = tx
                    .execute(
                        &format!(
                            "UPDATE _cutover.chunks SET done = false, done_at = NULL WHERE done{}",
                            if captured { " AND NOT in_snapshot" } else { "" }
                        ),
                        &[],
                    )
                    .map_err(|e| map("converting the copy into a sync", e))?;
                if again > 0 {
                    tracing::warn!(chunks = again, "chunks copied outside change capture's snapshot are copied again (rows are overwritten by key, none duplicated)");
                }
                tx.batch_execute(
                    "UPDATE _cutover.migration SET mode = 'sync', updated_at = now(),
                            phase = CASE WHEN phase = 'copied' AND NOT EXISTS (SELECT 1 FROM _cutover.chunks WHERE NOT done)
                                         THEN 'replicating' ELSE 'copying' END",
                )
                .map_err(|e| map("converting the copy into a sync", e))?;
                tx.execute(
                    "INSERT INTO _cutover.replication (id, slot, publication) VALUES (1, $1, $2)
                     ON CONFLICT (id) DO NOTHING",
                    &[&self.names.slot, &self.names.publication],
                )
                .map_err(|e| map("recording the replication", e))?;
                // Upserts need the primary keys now, not after the data.
                for t in &self.source_tables {
                    let has_key: bool = tx
                        .query_one(
                            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'p' AND conrelid = $1::text::regclass)",
                            &[&qualified(&t.name)],
                        )
                        .and_then(|r| r.try_get(0))
                        .map_err(|e| map("inspecting the target's keys", e))?;
                    if let (false, Some(pk)) = (has_key, schema::primary_key_sql(t)) {
                        tx.batch_execute(&pk).map_err(|e| {
                            map(format!("adding a primary key on the target: {pk}"), e)
                        })?;
                    }
                }
                tx.commit()
                    .map_err(|e| map("converting the copy into a sync", e))?;
            }
            Some(_) => {
                crate::state::migrate(&mut self.client, "the target")?;
                self.create_new_tables()?;
                self.check_slot_name()?;
            }
        }
        Ok(schema)
    }

    fn chunk_plan_now(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        let name = &table.name;
        let ctx = || format!("recording the chunk plan of {name}");
        let table_schema = name.schema.clone().unwrap_or_default();
        let read = |client: &mut Client| -> Result<Vec<PlannedChunk>, ConnectorError> {
            let rows = client
                .query(
                    "SELECT chunk, lower_key, upper_key, done, lower_key_enc, upper_key_enc FROM _cutover.chunks
                      WHERE table_schema = $1 AND table_name = $2 ORDER BY chunk",
                    &[&table_schema, &name.name],
                )
                .map_err(|e| map(ctx(), e))?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let chunk: i32 = r.try_get(0).map_err(|e| map(ctx(), e))?;
                let what = || format!("{}: chunk {chunk}", ctx());
                let start = stored_key(
                    r.try_get(4).map_err(|e| map(ctx(), e))?,
                    r.try_get(1).map_err(|e| map(ctx(), e))?,
                    what,
                )?;
                let end = stored_key(
                    r.try_get(5).map_err(|e| map(ctx(), e))?,
                    r.try_get(2).map_err(|e| map(ctx(), e))?,
                    what,
                )?;
                out.push(PlannedChunk {
                    index: u32::try_from(chunk).unwrap_or(u32::MAX),
                    range: KeyRange { start, end },
                    done: r.try_get(3).map_err(|e| map(ctx(), e))?,
                });
            }
            Ok(out)
        };
        let stored = read(&mut self.client)?;
        if !stored.is_empty() {
            return Ok(stored);
        }
        let ranges = plan()?;
        let mut tx = self.client.transaction().map_err(|e| map(ctx(), e))?;
        for (i, r) in ranges.iter().enumerate() {
            tx.execute(
                "INSERT INTO _cutover.chunks (table_schema, table_name, chunk, lower_key, upper_key, lower_key_enc, upper_key_enc)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &table_schema,
                    &name.name,
                    &(i as i32),
                    &range_texts(&r.start),
                    &range_texts(&r.end),
                    &range_bytes(&r.start),
                    &range_bytes(&r.end),
                ],
            )
            .map_err(|e| map(ctx(), e))?;
        }
        tx.commit().map_err(|e| map(ctx(), e))?;
        read(&mut self.client)
    }

    /// Without a PostgreSQL source: refuses a value its target column would not read back
    /// unchanged (SQLite lets any column hold any storage class), naming table, column and key.
    /// Tables whose rows change shape are checked no further.
    fn check_values(&mut self, ops: &[ApplyOp]) -> Result<(), ConnectorError> {
        if self.neutral.is_empty() {
            return Ok(());
        }
        for op in ops {
            let (table, row) = match op {
                ApplyOp::Upsert { table, row }
                | ApplyOp::Change(Change::Insert { table, row })
                | ApplyOp::Change(Change::Update { table, row, .. }) => (table, row),
                ApplyOp::Columns { table, .. } | ApplyOp::Alter { table, .. } => {
                    self.neutral.remove(table);
                    continue;
                }
                _ => continue,
            };
            let Some(schema) = self.neutral.get(table) else {
                continue;
            };
            for (column, value) in schema.columns.iter().zip(row) {
                if !applier::fits(&column.ty, value) {
                    return Err(ConnectorError::new(
                        ErrorKind::LossyConversion,
                        format!(
                            "table {table} key {} column {}: a {} value does not fit the column's type {} ({:?} on the source) exactly; \
                             correct the value on the source, or leave the table out",
                            cutover_connector::key_text(&schema.key_of(row)),
                            column.name,
                            value.kind(),
                            applier::pg_type(table, column).unwrap_or_else(|_| "?".into()),
                            column.declared_type,
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn apply_now(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        self.check_values(ops)?;
        let ctx = format!("applying changes up to {checkpoint} on the target");
        let mut applied = None;
        if self.replica_role {
            match self.commit_batch(ops, checkpoint.clone(), &ctx, true) {
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    // A unique value moved between rows of this batch: apply it in source order.
                    tracing::debug!(error = %e, "compacted batch conflicted; applying it in source order");
                }
                other => applied = Some(other),
            }
        }
        let result = match applied {
            Some(r) => r,
            None => self.commit_batch(ops, checkpoint.clone(), &ctx, false),
        };
        if result.is_ok() {
            let known = self.committed.take();
            self.committed = Some(self.later(known, checkpoint));
        }
        result
    }

    fn checkpoint_now(&mut self) -> Result<Option<Position>, ConnectorError> {
        let exists: bool = self
            .client
            .query_one(
                "SELECT to_regclass('_cutover.replication') IS NOT NULL",
                &[],
            )
            .map_err(|e| map("reading the checkpoint", e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let text: Option<String> = self
            .client
            .query_opt("SELECT position FROM _cutover.replication", &[])
            .map_err(|e| map("reading the checkpoint", e))?
            .and_then(|r| r.get(0));
        let checkpoint = text
            .map(|t| {
                t.parse::<Position>().map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::InvalidInput,
                        format!("the target's checkpoint is unreadable ({e}); run `cutover cleanup` and start over"),
                    )
                })
            })
            .transpose()?;
        if let Some(c) = &checkpoint {
            // Committed by an earlier run, perhaps not yet on disk.
            self.note_unflushed(c.clone())?;
            let known = self.committed.take();
            self.committed = Some(self.later(known, c.clone()));
        }
        Ok(checkpoint)
    }

    fn durable_now(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        // Every batch committed so far (up to `applied`) has its commit record before the insert
        // position now; it is on disk once the flush position has passed that.
        let r = self
            .client
            .query_one(
                "SELECT pg_current_wal_insert_lsn()::text, pg_current_wal_flush_lsn()::text",
                &[],
            )
            .map_err(|e| map("reading the target's flushed WAL position", e))?;
        let lsn = |i: usize| {
            r.try_get::<_, String>(i)
                .ok()
                .and_then(|t| crate::lsn::parse_text(&t))
                .unwrap_or(0)
        };
        let (insert, flush) = (lsn(0), lsn(1));
        let order = self.order;
        if self
            .unflushed
            .back()
            .is_none_or(|(c, _)| order.after(&applied, c))
        {
            self.unflushed.push_back((applied, insert));
        }
        while let Some((_, lsn)) = self.unflushed.front() {
            if *lsn > flush {
                break;
            }
            if let Some((checkpoint, _)) = self.unflushed.pop_front() {
                self.flushed = Some(checkpoint);
            }
        }
        // Nothing known on disk yet: release nothing new.
        Ok(self.flushed.clone())
    }

    fn finish_tables_now(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.finished.extend(tables.iter().map(|t| t.name.clone()));
        if self.finished.len() < self.tables.len() {
            return Ok(());
        }
        let none = SourceSchema::default();
        let schema = match (&self.source, self.schema.as_ref()) {
            (Some(_), Some(schema)) => schema,
            (Some(_), None) => return Ok(()),
            (None, _) => &none,
        };
        let phase = copy::control_phase(&mut self.client)?;
        if phase.as_deref() == Some("replicating") {
            return Ok(());
        }
        // Every table is copied: the rest of the schema, as pg_restore orders it.
        let opts = CopyOptions {
            jobs: self.jobs,
            truncate: true,
            ..CopyOptions::default()
        };
        copy::post_data(&self.target, &opts, &CancellationToken::new())?;
        if let Some(source) = &self.source {
            let mut src = source.connect_control()?;
            copy::set_sequences(&mut src, &mut self.client, schema)?;
        }
        self.client
            .execute(
                "UPDATE _cutover.migration SET phase = 'replicating', updated_at = now()",
                &[],
            )
            .map_err(|e| map("recording the end of the copy", e))?;
        Ok(())
    }

    fn record_recent_now(&mut self, keys: &[(TableName, Key)]) -> Result<(), ConnectorError> {
        let ctx = "recording the keys changed last";
        let mut tx = self.client.transaction().map_err(|e| map(ctx, e))?;
        tx.batch_execute("DELETE FROM _cutover.recent")
            .map_err(|e| map(ctx, e))?;
        let (mut schemas, mut names, mut encoded) = (Vec::new(), Vec::new(), Vec::new());
        for (t, k) in keys {
            schemas.push(t.schema.clone().unwrap_or_default());
            names.push(t.name.clone());
            encoded.push(key_bytes(k));
        }
        tx.execute(
            "INSERT INTO _cutover.recent (n, table_schema, table_name, key)
             SELECT n, s, t, k::bytea FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(s, t, k, n)",
            &[&schemas, &names, &encoded],
        )
        .map_err(|e| map(ctx, e))?;
        tx.commit().map_err(|e| map(ctx, e))
    }

    fn columns_now(
        &mut self,
        table: &TableSchema,
    ) -> Result<Vec<cutover_model::Column>, ConnectorError> {
        let target = match self.tables.get(&table.name) {
            Some(t) => t.target.clone(),
            None => self.target_columns(&table.name)?,
        };
        Ok(target.iter().map(PgColumn::model).collect())
    }

    fn handover_requested_now(&mut self) -> Result<bool, ConnectorError> {
        Ok(self
            .client
            .query_opt("SELECT handover_requested FROM _cutover.replication", &[])
            .map_err(|e| map("reading cutover's control store", e))?
            .is_some_and(|r| r.get(0)))
    }

    fn note_now(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        let applied = progress.changes_applied.load(Ordering::Relaxed);
        let now = Instant::now();
        let rate = self.last_note.map(|(at, n)| {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            applied.saturating_sub(n) as f64 / secs
        });
        self.last_note = Some((now, applied));
        let committed_at: Option<SystemTime> = progress.committed_at();
        let source = progress.source_position().map(|p| p.to_string());
        // In the source's own units: WAL bytes (PostgreSQL), change-log entries (SQLite).
        let lag = progress.lag();
        let big = |v: Option<u64>| v.map(|v| i64::try_from(v).unwrap_or(i64::MAX));
        let lag_bytes = big(lag.and_then(|l| l.bytes));
        let lag_changes = big(lag.and_then(|l| l.changes));
        let history = progress.history_bytes().map(|b| b as i64);
        self.client
            .execute(
                "UPDATE _cutover.replication SET source_position = coalesce($1, source_position),
                        committed_at = coalesce($2, committed_at), changes_per_sec = coalesce($3, changes_per_sec),
                        lag_bytes = $4, lag_changes = $6, history_bytes = coalesce($5, history_bytes), updated_at = now()",
                &[&source, &committed_at, &rate, &lag_bytes, &history, &lag_changes],
            )
            .map_err(|e| map("recording the sync's status on the target", e))?;
        Ok(())
    }

    fn cleanup_now(&mut self) -> Result<(), ConnectorError> {
        self.client
            .batch_execute("DROP SCHEMA IF EXISTS _cutover CASCADE")
            .map_err(|e| map("removing cutover's control store from the target", e))?;
        // `prepare` kept the application's writes off the target while cutover wrote it; with
        // cutover gone, the database takes them again.
        if let Err(e) = self.client.batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$",
        ) {
            tracing::warn!(error = %e, "cannot lift the target's read-only default (needs the database's owner): ALTER DATABASE … RESET default_transaction_read_only");
        }
        Ok(())
    }
}

/// The sink's control session on `target`.
fn control_session(target: &PgEndpoint) -> Result<Client, ConnectorError> {
    let mut client = target.connect_control()?;
    client
        .batch_execute(SESSION)
        .map_err(|e| map("preparing the target session", e))?;
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::PgColumn;

    fn table() -> (TableName, HashMap<TableName, TableSql>) {
        let col = |n: &str| PgColumn::plain(n, "text", 25);
        let name = TableName::new(Some("public"), "t");
        let shape = ["id", "a", "doc"].map(String::from);
        let t = TableSql::new(
            &name,
            vec![col("id"), col("a"), col("doc")],
            &shape,
            &["id".to_owned()],
        )
        .unwrap();
        let mut m = HashMap::new();
        m.insert(name.clone(), t);
        (name, m)
    }

    fn v(s: &str) -> Value {
        Value::Text(s.into())
    }

    /// What each step does, as text: `D 1`, `U 1 a doc`, `P 1 a (unchanged [2])`, `K …`.
    fn show(steps: &[Step<'_>]) -> Vec<String> {
        let text = |r: &[Value]| {
            r.iter()
                .map(|x| match x {
                    Value::Text(s) => s.clone(),
                    _ => "∅".into(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        steps
            .iter()
            .map(|s| match s {
                Step::Delete(_, k) => format!("D {}", text(k)),
                Step::Upsert(_, r) => format!("U {}", text(r)),
                Step::Partial { row, unchanged, .. } => format!("P {} {unchanged:?}", text(row)),
                Step::Keep(Write::Truncate(_)) => "TRUNCATE".into(),
                Step::Keep(Write::ChunkDone(_, c, _)) => format!("CHUNK {c}"),
                Step::Keep(Write::Partial { row, .. }) => format!("KEEP P {}", text(row)),
                Step::Keep(_) => "KEEP".into(),
            })
            .collect()
    }

    #[test]
    fn a_batch_collapses_to_each_rows_net_effect() {
        let (t, tables) = table();
        let r = |id: &str, a: &str, doc: &str| vec![v(id), v(a), v(doc)];
        let (r1, r1b, r2, r3) = (
            r("1", "x", "d1"),
            r("1", "y", "d1"),
            r("2", "x", "d2"),
            r("3", "z", "∅"),
        );
        let (k1, k2, k3, k4) = (vec![v("1")], vec![v("2")], vec![v("3")], vec![v("4")]);
        let p3 = r("3", "p", "∅");
        let p3b = r("3", "q", "∅");
        let p4 = r("4", "w", "∅");
        let truncated = vec![t.clone()];
        let writes = vec![
            Write::Upsert(&t, &r1),
            Write::Partial {
                table: &t,
                old_key: &k1,
                row: &r1b,
                unchanged: &[2],
            },
            Write::Upsert(&t, &r2),
            Write::Delete(&t, &k2),
            Write::ChunkDone(&t, 7, 1),
            Write::Partial {
                table: &t,
                old_key: &k3,
                row: &p3,
                unchanged: &[2],
            },
            Write::Partial {
                table: &t,
                old_key: &k3,
                row: &p3b,
                unchanged: &[2],
            },
            Write::Delete(&t, &k4),
            Write::Partial {
                table: &t,
                old_key: &k4,
                row: &p4,
                unchanged: &[2],
            },
            Write::Truncate(&truncated),
            Write::Upsert(&t, &r3),
        ];
        assert_eq!(
            show(&compact(&writes, &tables)),
            [
                "D 2",
                "D 4",
                "U 1 y d1",
                "P 3 q ∅ [2]",
                "TRUNCATE",
                "U 3 z ∅",
                "CHUNK 7"
            ]
        );
    }

    #[test]
    fn an_update_that_moves_a_key_without_all_values_stays_in_place() {
        let (t, tables) = table();
        let moved = vec![v("9"), v("a"), Value::Null];
        let (k1, k2) = (vec![v("1")], vec![v("2")]);
        let r2 = vec![v("2"), v("b"), v("c")];
        let writes = vec![
            Write::Delete(&t, &k2),
            Write::Partial {
                table: &t,
                old_key: &k1,
                row: &moved,
                unchanged: &[2],
            },
            Write::Upsert(&t, &r2),
        ];
        assert_eq!(
            show(&compact(&writes, &tables)),
            ["D 2", "KEEP P 9 a ∅", "U 2 b c"]
        );
    }

    #[test]
    fn partial_updates_of_many_rows_are_one_statement() {
        let (t, tables) = table();
        let sql = tables[&t].partial_update(&tables[&t].set_columns(&[2]));
        assert_eq!(
            sql,
            "UPDATE \"public\".\"t\" AS t SET \"id\" = u.c0::text, \"a\" = u.c1::text FROM unnest($1::text[], $2::text[], $3::text[]) AS u(c0, c1, c2) WHERE t.\"id\" = u.c2::text"
        );
    }

    #[test]
    fn rows_are_written_by_column_name_through_shapes_and_column_changes() {
        let (t, tables) = table();
        let sql = &tables[&t];
        // Rows without `doc` (the stream before it was added): it is left alone.
        let older = sql.reshape(&["a".into(), "id".into()]).unwrap();
        assert_eq!(
            older.upsert,
            "INSERT INTO \"public\".\"t\" (\"a\", \"id\") SELECT u.c0::text, u.c1::text FROM unnest($1::text[], $2::text[]) AS u(c0, c1) ON CONFLICT (\"id\") DO UPDATE SET \"a\" = EXCLUDED.\"a\""
        );
        assert_eq!(older.key_of(&[v("x"), v("7")]), vec![v("7")]);
        // A column added on the source, with its default.
        let added = cutover_model::Column {
            name: "n".into(),
            ty: cutover_model::ColumnType::Int {
                bits: 64,
                unsigned: false,
            },
            declared_type: "bigint".into(),
            nullable: false,
            default: Some("0".into()),
        };
        let (ddl, with_n) = sql.alter(&ColumnChange::Add(added)).unwrap();
        assert_eq!(
            ddl,
            "ALTER TABLE \"public\".\"t\" ADD COLUMN IF NOT EXISTS \"n\" bigint DEFAULT 0 NOT NULL"
        );
        let with_n = with_n
            .reshape(&["id".into(), "a".into(), "doc".into(), "n".into()])
            .unwrap();
        assert!(with_n.upsert.contains("u.c3::bigint"), "{}", with_n.upsert);
        // Dropped: rows that still carry it are written without it.
        let (ddl, without_a) = with_n.alter(&ColumnChange::Drop("a".into())).unwrap();
        assert_eq!(
            ddl,
            "ALTER TABLE \"public\".\"t\" DROP COLUMN IF EXISTS \"a\""
        );
        assert!(!without_a.upsert.contains("\"a\""), "{}", without_a.upsert);
        // No key column: refused with the table named.
        let e = sql.reshape(&["a".into()]).err().unwrap();
        assert!(
            e.to_string().contains("public.t") && e.to_string().contains("id"),
            "{e}"
        );
    }
}
