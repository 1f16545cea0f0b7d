//! The contracts between engines and the pipeline.
//!
//! An engine crate (SQLite, PostgreSQL, …) implements [`Source`], [`Sink`], [`TableReader`] and
//! [`RangeChecksum`] for its database, opened through the object-safe factories of
//! [`engine`](Engine) and registered as one [`Engine`]; the pipeline, verify and the binary
//! only ever see these traits. The traits are synchronous: each value owns one connection and
//! is used from one thread; parallel work opens more of them through the factories.

mod bulk;
pub mod canonical;
mod checksum;
mod engine;
mod error;
mod positions;
mod progress;
mod retry;
pub mod runtime;
mod state;
mod stateful;
mod switch;

pub use bulk::{BulkCopy, BulkCopyOptions, BulkCopyReport, BulkTable};
pub use checksum::{CanonicalRow, Mismatch, RangeChecksum, RangeDigest, Slice};
pub use engine::{
    percent_decode, scheme_of, Connect, Engine, Engines, EnvPrefixes, OpenOptions, Role, Sides,
    SourceFactory, TargetFactory, VerifyFactory,
};
pub use error::{ConnectorError, ErrorKind};
pub use positions::{Counter, Distance, PositionOrder, PositionOrderExt};
pub use progress::{epoch_secs, Phase, Progress, TableProgress};
pub use retry::{RetryPolicy, Side};
pub use state::{StateStore, StoredChunk, StoredMismatch, StoredStatus};
pub use stateful::{ordinal, AttachedState, StatefulSink, Writer, Written};
pub use switch::{
    Direction, Fence, Journal, Observation, Orientation, SwitchControl, SwitchSides, SwitchStep,
    Switchover,
};
/// How every long operation is asked to stop: cancelled once, seen by every task at once.
pub use tokio_util::sync::CancellationToken;

use std::cmp::Ordering;
use std::sync::Arc;

use cutover_model::{Change, Column, Key, Position, Row, TableName, TableSchema, Transaction};

/// A half-open range of primary-key values, `[start, end)`; `None` is unbounded on that side.
/// Keys compare as the engine orders them (tuples compared column by column).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KeyRange {
    pub start: Option<Key>,
    pub end: Option<Key>,
}

impl KeyRange {
    pub fn all() -> KeyRange {
        KeyRange::default()
    }
}

/// The rows of one chunk and the stretch of the change stream during which they were read.
///
/// Every row reflects the table's state at some instant between `low` and `high`. An engine that
/// reads inside a snapshot whose exact stream position it knows sets `low == high`. The applier
/// emits the rows once it has applied everything up to `high`, minus the rows whose keys changed
/// after `low` (the stream carries their newer state): DBLog's watermark rule.
#[derive(Debug, Clone)]
pub struct ChunkRows {
    pub rows: Vec<Row>,
    pub low: Position,
    pub high: Position,
    /// What the read saw, where the engine can tell exactly (PostgreSQL: the snapshot's
    /// visible transactions). Then a row is dropped only if its key was changed by a
    /// transaction this view does not reflect, instead of by any change after `low`: a
    /// transaction's commit can reach the stream before new reads see it.
    pub view: Option<Arc<dyn ReadView>>,
    /// The columns of `rows`, in order, when they differ from the table's schema as the
    /// source described it at the start (its columns changed since); `None`: the same.
    pub columns: Option<Vec<Column>>,
}

/// The transactions a chunk's read reflects, as its source engine knows them; the applier's
/// watermark rule asks it instead of comparing positions. Transactions are named by the
/// engine's tag ([`Transaction::tag`]). Contract:
/// - `reflects(tag)`: whether the rows read include the effects of the transaction tagged
///   `tag` (committed and visible to the read).
/// - `horizon()`: every transaction tagged below it is reflected by this read **and by every
///   read the engine takes later**; horizons of successive reads never decrease.
pub trait ReadView: Send + Sync + std::fmt::Debug {
    fn reflects(&self, tag: u64) -> bool;
    fn horizon(&self) -> u64;
}

/// Reads tables and the changes made to them.
///
/// Contract:
/// - `read_chunk` returns rows ordered by primary key, with the positions described on
///   [`ChunkRows`]; it holds no transaction open after it returns.
/// - `start_capture` is idempotent: calling it again for the same tables keeps what was
///   captured since the first call and returns the position capture started at.
/// - `read_changes` returns committed changes with positions strictly after `after`, in commit
///   order, whole transactions (an engine whose capture cannot see transaction boundaries —
///   SQLite's triggers — returns each change as its own transaction and says so; the
///   conformance suite lists it as a known failure), at most about `max_changes` changes (a single larger transaction
///   is returned whole). The same call after a restart returns the same changes
///   (at-least-once); nothing is lost as long as `release` was only called with positions the
///   sink has durably applied.
/// - `release(upto)` lets the source discard change history up to and including `upto`.
pub trait Source {
    /// How this engine orders and measures its positions: the only way the pipeline compares
    /// them.
    fn positions(&self) -> &'static dyn PositionOrder;
    /// The tables capture and copy can handle, with their schemas.
    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError>;
    /// Boundaries that split `table` into chunks of about `rows_per_chunk` rows each, from the
    /// key's actual distribution. Returns ranges that together cover every key exactly once.
    /// A cheap estimate of the table's size, for chunk sizing and progress.
    fn estimate(&mut self, table: &TableSchema) -> Result<TableEstimate, ConnectorError>;
    fn plan_chunks(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<KeyRange>, ConnectorError>;
    fn read_chunk(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<ChunkRows, ConnectorError>;
    /// Refuses, before anything is created, what change capture of `tables` cannot do (naming
    /// the table and the fix). By default everything is accepted.
    fn check_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let _ = tables;
        Ok(())
    }
    fn start_capture(&mut self, tables: &[TableSchema]) -> Result<Position, ConnectorError>;
    /// Removes change capture if this value's `start_capture` created it (not if it found it
    /// there): when the migration is refused right after starting it. A no-op by default.
    fn abandon_capture(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
    /// The position of the newest committed change (what a drain must reach).
    fn current_position(&mut self) -> Result<Position, ConnectorError>;
    fn read_changes(
        &mut self,
        tables: &[TableSchema],
        after: Position,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError>;
    fn release(&mut self, upto: Position) -> Result<(), ConnectorError>;
    /// The current committed state of the rows with these keys (those that exist), read now.
    ///
    /// Needed only by engines whose updates can arrive without some column values (PostgreSQL
    /// leaves unchanged TOASTed values out): when such an update meets a row whose chunk is not
    /// on the target yet, the applier writes the row's current state instead, and the stream
    /// brings it up to date from there. Engines that always send whole rows keep this default.
    fn fetch_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let _ = keys;
        Err(ConnectorError::new(
            ErrorKind::UnsupportedType,
            format!("this source cannot re-read rows of {} by key", table.name),
        ))
    }
    /// Bytes of change history the source keeps for this migration (PostgreSQL: WAL held by the
    /// replication slot), for status and warnings; `None` where the engine cannot tell.
    fn history_bytes(&mut self) -> Result<Option<u64>, ConnectorError> {
        Ok(None)
    }
    /// Removes everything capture installed on the source (triggers, change tables, slots).
    fn stop_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError>;
}

/// Roughly how big a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableEstimate {
    pub rows: u64,
    /// Average bytes of a row's values.
    pub avg_row_bytes: u64,
}

/// A change to one column of a target table, carried from the source.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnChange {
    Add(Column),
    Drop(String),
    /// The column's type becomes this column's (one that holds every value of the old one).
    Retype(Column),
}

/// One step of an apply batch, applied in order.
#[derive(Debug, Clone)]
pub enum ApplyOp {
    /// Insert or overwrite a whole row (chunk rows).
    Upsert { table: TableName, row: Row },
    /// A captured change.
    Change(Change),
    /// Marks chunk `chunk` of `table` copied, with the number of its rows written.
    ChunkDone {
        table: TableName,
        chunk: u32,
        rows: u64,
    },
    /// Keys changed while their table was still being copied: where chunks and the change
    /// stream met. A sink with a control store keeps them (in the same transaction) so that a
    /// switch verifies exactly these rows on both sides before it fences writes; a sink
    /// without one may ignore them.
    Watch { table: TableName, keys: Vec<Key> },
    /// Changes a column of a target table (in the same transaction as the rest of the batch).
    Alter {
        table: TableName,
        change: ColumnChange,
    },
    /// From here on (in this batch and later ones), rows of `table` carry these columns, in
    /// this order; a target column not among them keeps its value (or gets its default).
    Columns {
        table: TableName,
        columns: Vec<String>,
    },
    /// Where the next [`ApplyOp::Change`] comes from: its transaction's position, its index
    /// among the row changes of the [`Transaction`] as the source handed it over (descriptions
    /// of a table's shape, which one delivery may carry and the next not, are not counted), the
    /// commit time and the source's
    /// tag. The same each time the source delivers that transaction again (at least once), so
    /// a target that is not idempotent by key (a change stream) can name each change the same
    /// way every time it is sent. A source that hands a large transaction over in pieces at one
    /// position starts each piece at index 0: such a target adds the change's content to the
    /// name. Only sent to a sink whose [`Sink::wants_origins`] says so.
    Origin {
        position: Position,
        index: u32,
        committed_at: Option<std::time::SystemTime>,
        tag: Option<u64>,
    },
}

/// Writes a target idempotently, with its progress in the same transaction.
///
/// Contract:
/// - `apply` commits all of `ops` and the `checkpoint` in one target transaction, or nothing.
///   Replaying a batch (after a crash between the commit and the caller learning of it) leaves
///   the target unchanged: upserts overwrite, inserts of an existing key overwrite, deletes of a
///   missing key do nothing.
/// - `checkpoint` returns the position of the last committed `apply`, surviving restarts.
/// - `prepare` creates missing tables (columns, types, NOT NULL, defaults, primary key) and the
///   control store; secondary indexes wait for `finish_tables`. Rows of each table then carry
///   the columns of the schema given to `prepare`, until an [`ApplyOp::Columns`] says
///   otherwise.
pub trait Sink {
    /// Refuses, before anything is created on either side, what `prepare` would refuse (a
    /// target that already holds the tables and no migration to resume). Accepts by default.
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let _ = tables;
        Ok(())
    }
    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError>;
    /// Records the chunk plan once; later calls return the stored plan unchanged, so a resumed
    /// run copies the same ranges.
    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError>;
    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError>;
    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError>;
    /// The columns `table` has on the target now (after `prepare`), with their types: what a
    /// change of the source's columns is compared with. By default, the schema's own.
    fn columns(&mut self, table: &TableSchema) -> Result<Vec<Column>, ConnectorError> {
        Ok(table.columns.clone())
    }
    /// Builds secondary indexes once the copy is complete.
    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError>;
    /// The newest checkpoint that survives a crash of the target, given that everything up to
    /// `applied` is committed (`None`: none known yet). Only this much of the source's change
    /// history is released. A target that commits without waiting for its disk (PostgreSQL
    /// with `synchronous_commit = off`) answers with what it has flushed; the default is that
    /// commits are durable.
    fn durable(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        Ok(Some(applied))
    }
    /// Told once, before `prepare`, how the source orders its positions: a sink that compares
    /// checkpoints uses it (they are the source's positions, whatever the target's engine).
    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        let _ = order;
    }
    /// Whether someone (a switch about to take over) asked the running sync to stop. Checked
    /// about once a second; `false` by default.
    fn handover_requested(&mut self) -> Result<bool, ConnectorError> {
        Ok(false)
    }
    /// Keeps the keys changed last (newest last) where a switch can find them after this
    /// process stopped: called when a sync stops or hands over. A no-op by default.
    fn record_recent(&mut self, keys: &[(TableName, Key)]) -> Result<(), ConnectorError> {
        let _ = keys;
        Ok(())
    }
    /// Records the migration's live status (positions, lag, rates) where `cutover status` can
    /// read it from another process. Called now and then by the applier; a no-op by default.
    fn note(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        let _ = progress;
        Ok(())
    }
    /// Removes the control store.
    fn cleanup(&mut self) -> Result<(), ConnectorError>;
    /// Whether each captured change should come with its [`ApplyOp::Origin`]. `false` by
    /// default: a target idempotent by key needs no more than the batch's checkpoint.
    fn wants_origins(&self) -> bool {
        false
    }
    /// Called once when a run ends without an error (done, or stopped): a sink that holds
    /// applied batches back (a file that rolls by size and time) writes them out and records
    /// their checkpoint. Nothing to do by default.
    fn close(&mut self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

/// A chunk as the control store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedChunk {
    pub index: u32,
    pub range: KeyRange,
    pub done: bool,
}

/// Reads a table in key order, for verify.
pub trait TableReader {
    /// Up to `limit` rows with keys after `after` (exclusive) and before `before` (exclusive),
    /// ordered by key: keyset pagination, never `OFFSET`.
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError>;
}

/// A key as messages show it: `(42, 'abc')`, long values cut.
pub fn key_text(key: &[cutover_model::Value]) -> String {
    use cutover_model::Value;
    let parts: Vec<String> = key
        .iter()
        .map(|v| match v {
            Value::Text(s) if s.chars().count() > 40 => {
                format!(
                    "'{}…' ({} bytes)",
                    s.chars().take(40).collect::<String>(),
                    s.len()
                )
            }
            Value::Text(s) => format!("'{s}'"),
            Value::Int(i) => i.to_string(),
            Value::UInt(u) => u.to_string(),
            Value::Bytes(b) => format!("<{} bytes>", b.len()),
            Value::Null => "NULL".to_owned(),
            Value::Uuid(u) => u.iter().map(|b| format!("{b:02x}")).collect(),
            other => format!("{other:?}").chars().take(60).collect(),
        })
        .collect();
    format!("({})", parts.join(", "))
}

/// Orders two values of one key column as SQLite and PostgreSQL order them within a type:
/// NULL first, numbers numerically, text by bytes (binary collation), blobs by bytes.
pub fn cmp_values(a: &cutover_model::Value, b: &cutover_model::Value) -> Ordering {
    use cutover_model::Value;
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Null => 0,
            Value::Int(_) | Value::UInt(_) | Value::Float32(_) | Value::Float64(_) => 1,
            Value::Text(_) => 2,
            Value::Bytes(_) => 3,
            _ => 4,
        }
    }
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::UInt(x), Value::UInt(y)) => x.cmp(y),
        (Value::Int(x), Value::UInt(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (Value::UInt(x), Value::Int(y)) => i128::from(*x).cmp(&i128::from(*y)),
        (Value::Text(x), Value::Text(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Bytes(x), Value::Bytes(y)) => x.cmp(y),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y))
        | (Value::TimestampTz(x), Value::TimestampTz(y)) => x.cmp(y),
        _ if rank(a) == 1 && rank(b) == 1 => {
            let f = |v: &Value| match v {
                Value::Int(i) => *i as f64,
                Value::UInt(u) => *u as f64,
                Value::Float32(x) => f64::from(*x),
                Value::Float64(x) => *x,
                _ => 0.0,
            };
            f(a).total_cmp(&f(b))
        }
        _ => rank(a)
            .cmp(&rank(b))
            .then_with(|| format!("{a:?}").cmp(&format!("{b:?}"))),
    }
}

/// Orders two keys column by column ([`cmp_values`]).
pub fn cmp_keys(a: &[cutover_model::Value], b: &[cutover_model::Value]) -> Ordering {
    a.iter()
        .zip(b)
        .map(|(x, y)| cmp_values(x, y))
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}
