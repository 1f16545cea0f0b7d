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

use cutover_model::{Key, Position, TableName, TableSchema};

use crate::{
    ApplyOp, ConnectorError, ErrorKind, KeyRange, PlannedChunk, PositionOrder, Progress, Sink,
    StateStore, TargetFactory,
};

/// What [`Writer::write`] did with a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Everything written so far is durable in the target.
    Durable,
    /// The batch is held (a file that rolls by size and time), to be written out by a later
    /// `write` or `flush`: its checkpoint waits until then.
    Held,
}

/// The data half of a target that keeps no state of its own.
///
/// Contract:
/// - `write(ops, upto)` returns [`Written::Durable`] once every op so far is durable in the
///   target (as far as the target promises durability; say what it promises in the engine's
///   documentation), or [`Written::Held`] if it keeps them to write out later, all together
///   and in order (then a crash loses what is held, and the batches come again). Ops are row
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
    fn write(&mut self, ops: &[ApplyOp], upto: &Position) -> Result<Written, ConnectorError>;
    /// Writes out what is held if `force`, or if the writer's own rule (size, age) says it is
    /// time; returns whether nothing is held any more. Called about once a second while
    /// batches are held, and with `force` when the run ends.
    fn flush(&mut self, force: bool) -> Result<bool, ConnectorError> {
        let _ = force;
        Ok(true)
    }
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

/// A change's ordinal in its transaction: its index, plus an offset when the source hands a
/// large transaction over in pieces at one position, each piece restarting its index at 0
/// (`last` remembers the previous origin), for targets that name or order changes by it
/// (DynamoDB, Kafka). Within one process a transaction is only sent
/// again after a failed write, which forgets `last`; a new process starts without it, and the
/// source then sends a pieced transaction again from its first piece.
pub fn ordinal(last: &mut Option<(Position, u32, u64)>, position: &Position, index: u32) -> u64 {
    let offset = match last {
        Some((p, prev, offset)) if p == position => {
            if index <= *prev {
                *offset + u64::from(*prev) + 1
            } else {
                *offset
            }
        }
        _ => 0,
    };
    *last = Some((position.clone(), index, offset));
    offset + u64::from(index)
}

/// A [`Sink`] made of a [`Writer`] (the data) and another engine's sink that keeps only the
/// migration's state (prepared with no tables).
pub struct StatefulSink<W> {
    writer: W,
    state: Box<dyn Sink + Send>,
    /// Control ops and the checkpoint of batches the writer holds: committed to the state
    /// store once the writer has written them out.
    held: Vec<ApplyOp>,
    held_checkpoint: Option<Position>,
}

impl<W: Writer> StatefulSink<W> {
    pub fn new(writer: W, state: Box<dyn Sink + Send>) -> StatefulSink<W> {
        StatefulSink {
            writer,
            state,
            held: Vec::new(),
            held_checkpoint: None,
        }
    }

    /// Commits the checkpoint of what the writer held and has now written out.
    fn commit_held(&mut self) -> Result<(), ConnectorError> {
        if let Some(checkpoint) = self.held_checkpoint.take() {
            let control = std::mem::take(&mut self.held);
            self.state.apply(&control, checkpoint)?;
        }
        Ok(())
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
        let control = ops
            .iter()
            .filter(|op| matches!(op, ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. }))
            .cloned();
        let before = self.held.len();
        self.held.extend(control);
        let data = ops.len() - (self.held.len() - before);
        let written = if data > 0 {
            self.writer.write(ops, &checkpoint)?
        } else if self.held_checkpoint.is_some() {
            // Only control ops, behind batches still held: they wait with them.
            Written::Held
        } else {
            Written::Durable
        };
        self.held_checkpoint = Some(checkpoint);
        match written {
            Written::Durable => self.commit_held(),
            Written::Held => Ok(()),
        }
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.state.checkpoint()
    }

    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.writer.finish_tables(tables)
    }

    /// While the writer holds batches, only the state store's last checkpoint is durable.
    fn durable(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        if self.held_checkpoint.is_some() && self.writer.flush(false)? {
            self.commit_held()?;
        }
        if self.held_checkpoint.is_some() {
            return self.state.checkpoint();
        }
        self.state.durable(applied)
    }

    fn close(&mut self) -> Result<(), ConnectorError> {
        if self.held_checkpoint.is_some() {
            self.writer.flush(true)?;
            self.commit_held()?;
        }
        Ok(())
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

/// The state store a target without transactions was given ([`TargetFactory::attach_state`]),
/// for its factory to hold: it opens the [`StatefulSink`] and answers `state`.
#[derive(Clone, Default)]
pub struct AttachedState(Option<std::sync::Arc<dyn TargetFactory>>);

impl AttachedState {
    pub fn attach(&mut self, state: Box<dyn TargetFactory>) {
        self.0 = Some(std::sync::Arc::from(state));
    }

    fn factory(&self, target: &str) -> Result<&dyn TargetFactory, ConnectorError> {
        self.0.as_deref().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!("{target} needs a state store (--state URL); none was given"),
            )
        })
    }

    /// `writer` joined with a sink of the state store.
    pub fn sink<W: Writer + Send + 'static>(
        &self,
        target: &str,
        writer: impl FnOnce() -> Result<W, ConnectorError>,
    ) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        let state = self.factory(target)?.sink()?;
        Ok(Box::new(StatefulSink::new(writer()?, state)))
    }

    /// The state store, for `cutover status`.
    pub fn state(&self, target: &str) -> Result<Option<Box<dyn StateStore>>, ConnectorError> {
        self.factory(target)?.state()
    }
}
