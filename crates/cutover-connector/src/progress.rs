//! Live progress and status of a running migration: what `status`, progress bars and (later)
//! the metrics endpoint read. One place, shared through an `Arc`, updated with atomics.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use cutover_model::{Position, TableName};

use crate::{Distance, PositionOrder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Preparing = 0,
    Copying = 1,
    Replicating = 2,
    Draining = 3,
    /// Building indexes and constraints after the data.
    Indexing = 5,
    Stopped = 4,
}

#[derive(Debug)]
pub struct TableProgress {
    pub name: TableName,
    pub rows_estimate: AtomicU64,
    pub rows_copied: AtomicU64,
    pub bytes_copied: AtomicU64,
    pub chunks_total: AtomicU64,
    pub chunks_done: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Progress {
    phase: AtomicU8,
    pub tables: Mutex<Vec<std::sync::Arc<TableProgress>>>,
    pub rows_copied: AtomicU64,
    pub bytes_copied: AtomicU64,
    /// Chunk rows dropped because the change stream carried a newer state of the row.
    pub rows_superseded: AtomicU64,
    pub changes_applied: AtomicU64,
    pub batches_applied: AtomicU64,
    applied: Mutex<Option<Position>>,
    source: Mutex<Option<Position>>,
    committed_at: Mutex<Option<std::time::SystemTime>>,
    /// The newest applied transaction that changed rows: its position and one table it changed.
    last_change: Mutex<Option<(Position, TableName)>>,
    /// Change history the source keeps for this migration, plus one; 0 while unknown.
    history_bytes: AtomicU64,
    order: Mutex<Option<&'static dyn PositionOrder>>,
}

impl Progress {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Relaxed) {
            0 => Phase::Preparing,
            1 => Phase::Copying,
            2 => Phase::Replicating,
            3 => Phase::Draining,
            5 => Phase::Indexing,
            _ => Phase::Stopped,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::Relaxed);
    }

    /// The last source position the target has durably applied.
    pub fn applied_position(&self) -> Option<Position> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_applied(&self, p: Position) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }

    /// The newest source position seen.
    pub fn source_position(&self) -> Option<Position> {
        self.source
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_source(&self, p: Position) {
        *self.source.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
    }

    /// When the source committed the last transaction the target has applied.
    pub fn committed_at(&self) -> Option<std::time::SystemTime> {
        *self.committed_at.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_committed_at(&self, t: std::time::SystemTime) {
        *self.committed_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
    }

    /// The newest applied transaction that changed rows (its position, and a table it changed).
    pub fn last_change(&self) -> Option<(Position, TableName)> {
        self.last_change
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_last_change(&self, at: Position, table: TableName) {
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner()) = Some((at, table));
    }

    /// Bytes of change history the source keeps for this migration, where known.
    pub fn history_bytes(&self) -> Option<u64> {
        match self.history_bytes.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n - 1),
        }
    }

    pub fn set_history_bytes(&self, bytes: u64) {
        self.history_bytes
            .store(bytes.saturating_add(1), Ordering::Relaxed);
    }

    /// The source engine's order of positions, for [`Progress::lag`]; set once a run knows
    /// its source.
    pub fn set_order(&self, order: &'static dyn PositionOrder) {
        *self.order.lock().unwrap_or_else(|p| p.into_inner()) = Some(order);
    }

    /// How far the applied position is behind the source's, in the source's units (bytes of
    /// WAL for PostgreSQL, change-log entries for SQLite).
    pub fn lag(&self) -> Option<Distance> {
        let order = (*self.order.lock().unwrap_or_else(|p| p.into_inner()))?;
        let (source, applied) = (self.source_position()?, self.applied_position()?);
        Some(order.distance(&applied, &source))
    }

    pub fn table_snapshot(&self) -> Vec<std::sync::Arc<TableProgress>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
