//! Live progress and status of a running migration: what `status`, progress bars and (later)
//! the metrics endpoint read. One place, shared through an `Arc`, updated with atomics.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use cutover_model::{Position, TableName};

use crate::{Distance, PositionOrder};

/// Seconds since the Unix epoch (0 before it), as the state stores keep times.
pub fn epoch_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

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
    /// A stream position past `applied` with nothing to apply up to it (WAL of other tables or
    /// databases): not recorded on the target yet, but no lag either.
    passed: Mutex<Option<Position>>,
    source: Mutex<Option<Position>>,
    committed_at: Mutex<Option<std::time::SystemTime>>,
    /// The newest applied transaction that changed rows: its position and one table it changed.
    last_change: Mutex<Option<(Position, TableName)>>,
    /// Change history the source keeps for this migration, plus one; 0 while unknown.
    history_bytes: AtomicU64,
    order: Mutex<Option<&'static dyn PositionOrder>>,
    /// Counts moves of the applied or passed position (and [`Progress::nudge`]s), so that a
    /// waiter ([`Progress::wait_for_move`]) wakes when one happens instead of polling.
    moves: Mutex<u64>,
    moved: std::sync::Condvar,
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
        self.nudge();
    }

    /// Wakes every [`Progress::wait_for_move`] (a follower that stopped says so this way).
    pub fn nudge(&self) {
        *self.moves.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.moved.notify_all();
    }

    /// How many moves there have been so far (for [`Progress::wait_for_move`]).
    pub fn moves(&self) -> u64 {
        *self.moves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the applied or passed position moved (or a [`Progress::nudge`]) after the
    /// `seen`-th move, or `timeout` passed; returns the moves counted now.
    pub fn wait_for_move(&self, seen: u64, timeout: std::time::Duration) -> u64 {
        let guard = self.moves.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .moved
            .wait_timeout_while(guard, timeout, |n| *n == seen)
            .unwrap_or_else(|p| p.into_inner());
        *guard
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

    /// The change stream has passed `p` with nothing to apply since the applied position.
    pub fn set_passed(&self, p: Position) {
        *self.passed.lock().unwrap_or_else(|p| p.into_inner()) = Some(p);
        self.nudge();
    }

    /// What a sink records for `cutover status` (`Sink::note`), as (name, text) pairs: the
    /// source's position, lag in bytes and changes, when the last applied transaction committed,
    /// changes applied and their rate since the previous call (`last`: when and how many, kept
    /// by the caller), and now. `None`: not known (the store clears it).
    pub fn status_fields(
        &self,
        last: &mut Option<(std::time::Instant, u64)>,
    ) -> [(&'static str, Option<String>); 7] {
        let now = std::time::Instant::now();
        let applied = self.changes_applied.load(Ordering::Relaxed);
        let rate = last.and_then(|(at, n)| {
            let secs = now.duration_since(at).as_secs_f64();
            (secs > 0.0).then(|| applied.saturating_sub(n) as f64 / secs)
        });
        *last = Some((now, applied));
        let lag = self.lag();
        [
            (
                "source_position",
                self.source_position().map(|p| p.to_string()),
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
                self.committed_at().map(|t| epoch_secs(t).to_string()),
            ),
            ("changes_applied", Some(applied.to_string())),
            ("changes_per_sec", rate.map(|r| format!("{r:.1}"))),
            (
                "updated_at",
                Some(epoch_secs(std::time::SystemTime::now()).to_string()),
            ),
        ]
    }

    /// How far the applier is behind the source, in the source's units (bytes of WAL for
    /// PostgreSQL, change-log entries for SQLite): from the later of the applied position and
    /// the position the stream passed with nothing to apply (an idle database on a busy
    /// cluster is not behind by the other databases' WAL).
    pub fn lag(&self) -> Option<Distance> {
        let order = (*self.order.lock().unwrap_or_else(|p| p.into_inner()))?;
        let (source, at) = (self.source_position()?, self.caught_up_to()?);
        Some(order.distance(&at, &source))
    }

    /// The stream position up to which nothing is left to apply: the later of the applied
    /// position and the one the stream passed with nothing to apply.
    pub fn caught_up_to(&self) -> Option<Position> {
        use crate::PositionOrderExt;
        let applied = self.applied_position()?;
        let passed = self
            .passed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let order = *self.order.lock().unwrap_or_else(|p| p.into_inner());
        Some(match (passed, order) {
            (Some(p), Some(order)) => order.later(applied, p),
            _ => applied,
        })
    }

    pub fn table_snapshot(&self) -> Vec<std::sync::Arc<TableProgress>> {
        self.tables
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
