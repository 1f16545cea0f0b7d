//! Targets without transactions: a [`Writer`] puts the data into the target, and the
//! migration's state (checkpoint, chunk plan, status) goes to a store of the user's choosing,
//! through the [`Sink`] of an engine that hosts state (`--state URL`). [`StatefulSink`] joins
//! the two into one [`Sink`] for the pipeline.
//!
//! The order makes it safe: a batch is written to the target (and durable there) before its
//! checkpoint is committed in the state store. A crash between the two leaves the old
//! checkpoint, so the batch comes again; the writer must make that harmless — by key (an
//! upsert), or by naming each write so that the target drops what it already holds (a change
//! stream's message ids, see [`ApplyOp::Origin`]).

use cutover_model::{Column, Key, Position, TableName, TableSchema};

use crate::{ApplyOp, ConnectorError, KeyRange, PlannedChunk, PositionOrder, Progress, Sink};

/// The data half of a target that keeps no state of its own.
///
/// Contract:
/// - `write(ops, upto)` returns once every op is durable in the target (as far as the target
///   promises durability; say what it promises in the engine's documentation). Ops are row
///   upserts (chunk rows), captured changes, each after its [`ApplyOp::Origin`] when
///   [`Writer::wants_origins`], and column changes; the control ops among them (`ChunkDone`,
///   `Watch`) belong to the state store and are ignored.
/// - Writing a batch again, or a batch that overlaps one written before (after a crash the
///   pipeline resumes from the state store's checkpoint), must not leave anything twice that
///   the target promises once.
pub trait Writer {
    /// Refuses, before anything is created, what `prepare` would refuse.
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let _ = tables;
        Ok(())
    }
    /// Creates what the target needs for `tables` (streams, tables, files), idempotently.
    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError>;
    fn write(&mut self, ops: &[ApplyOp], upto: &Position) -> Result<(), ConnectorError>;
    /// Whether captured changes should come with their [`ApplyOp::Origin`].
    fn wants_origins(&self) -> bool {
        true
    }
    /// How the source orders its positions, told before `prepare`.
    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        let _ = order;
    }
    /// The copy is complete for `tables`.
    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let _ = tables;
        Ok(())
    }
}

/// A [`Sink`] made of a [`Writer`] (the data) and another engine's sink that keeps only the
/// migration's state (prepared with no tables).
pub struct StatefulSink<W> {
    writer: W,
    state: Box<dyn Sink + Send>,
}

impl<W: Writer> StatefulSink<W> {
    pub fn new(writer: W, state: Box<dyn Sink + Send>) -> StatefulSink<W> {
        StatefulSink { writer, state }
    }

    pub fn writer(&mut self) -> &mut W {
        &mut self.writer
    }
}

impl<W: Writer> Sink for StatefulSink<W> {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.state.check(&[])?;
        self.writer.check(tables)
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.state.prepare(&[])?;
        self.writer.prepare(tables)
    }

    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        self.state.chunk_plan(table, plan)
    }

    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        let control: Vec<ApplyOp> = ops
            .iter()
            .filter(|op| matches!(op, ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. }))
            .cloned()
            .collect();
        if ops.len() > control.len() {
            self.writer.write(ops, &checkpoint)?;
        }
        self.state.apply(&control, checkpoint)
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.state.checkpoint()
    }

    fn columns(&mut self, table: &TableSchema) -> Result<Vec<Column>, ConnectorError> {
        Ok(table.columns.clone())
    }

    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.writer.finish_tables(tables)
    }

    fn durable(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        self.state.durable(applied)
    }

    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        self.writer.set_order(order);
        self.state.set_order(order);
    }

    fn handover_requested(&mut self) -> Result<bool, ConnectorError> {
        self.state.handover_requested()
    }

    fn record_recent(&mut self, keys: &[(TableName, Key)]) -> Result<(), ConnectorError> {
        self.state.record_recent(keys)
    }

    fn note(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        self.state.note(progress)
    }

    /// Removes the state; what was written to the target stays (it is the migration's result).
    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        self.state.cleanup()
    }

    fn wants_origins(&self) -> bool {
        self.writer.wants_origins()
    }
}
