//! A bulk copy between two particular engines (PostgreSQL → PostgreSQL: binary `COPY` in one
//! exported snapshot): a capability the target's factory offers for a source it knows
//! ([`crate::TargetFactory::bulk_copy`]). `cutover copy` runs it; `cutover sync` runs it first,
//! with change capture started in the copy's snapshot, whenever the pair offers one and the
//! target holds no migration yet (or one such copy that did not finish), then follows the
//! changes from where the copy's snapshot stood. Pairs without one copy through the change
//! applier, chunk by chunk, as any source and target can.

use std::num::NonZeroU32;
use std::time::Duration;

use cutover_model::TableName;

use crate::{CancellationToken, ConnectorError, Progress};

/// How a bulk copy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkCopyOptions {
    /// Parallel workers across all tables.
    pub jobs: usize,
    /// Aim for chunks of about this many bytes of table data; `None`: the engine's default.
    pub chunk_bytes: Option<u64>,
    /// Cap on rows per second across all workers.
    pub max_rows_per_sec: Option<NonZeroU32>,
    /// Empty target tables that already exist (and start a finished or foreign copy over).
    pub truncate: bool,
    /// Read every chunk in one snapshot of the source, so the copy is one instant of it.
    pub consistent_snapshot: bool,
    /// Start the source's change capture first and copy in its snapshot, so that a sync
    /// follows on from the copy without copying again.
    pub capture: bool,
}

impl Default for BulkCopyOptions {
    fn default() -> Self {
        BulkCopyOptions {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_bytes: None,
            max_rows_per_sec: None,
            truncate: false,
            consistent_snapshot: true,
            capture: false,
        }
    }
}

/// One table of a bulk copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkTable {
    pub name: TableName,
    pub rows: u64,
    /// Bytes moved (what crossed the network, in the engines' bulk format).
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks found done from an earlier, interrupted run.
    pub resumed_chunks: u64,
}

/// What a bulk copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkCopyReport {
    pub tables: Vec<BulkTable>,
    pub rows: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// It went on from an earlier, interrupted run.
    pub resumed: bool,
    /// It was stopped before the end (what was copied is kept; the same command resumes).
    pub interrupted: bool,
    /// Objects of the source the copy does not carry (`kind name`).
    pub not_copied: Vec<String>,
    /// Index and constraint steps run after (or beside) the data.
    pub post_data_steps: usize,
    /// With change capture: the chunks (and their rows) read outside the capture's snapshot
    /// (before an interruption, or resumed), which the following sync copies again.
    pub outside_snapshot: Option<(u64, u64)>,
    /// With change capture: what the source keeps for it until a sync follows or `cutover
    /// cleanup` removes it, as a sentence for the user (PostgreSQL: `replication slot
    /// cutover_x (publication cutover_x) keeps WAL`).
    pub capture: Option<String>,
}

/// A bulk copy two engines share. Contract:
/// - [`BulkCopy::run`] is resumable: run again after an interruption (a stop, a crash, a kill)
///   it copies only the chunks not recorded as copied, and leaves every row exactly once on
///   the target (chunks are committed with their mark of being done).
/// - With [`BulkCopyOptions::capture`], the rows copied are exactly those before the source's
///   change stream begins, except the chunks it reports in
///   [`BulkCopyReport::outside_snapshot`]; a sync of the same migration afterwards copies those
///   again and follows the changes without copying anything else.
/// - [`BulkCopy::pending_for_sync`] is true when a sync should run this copy (with capture)
///   before following changes: the target holds no migration of this name yet, or a copy with
///   capture that has not finished.
pub trait BulkCopy: Send + Sync {
    /// How it copies, for messages (`binary COPY`).
    fn describe(&self) -> String;
    fn pending_for_sync(&self) -> Result<bool, ConnectorError>;
    fn run(
        &self,
        opts: &BulkCopyOptions,
        progress: &Progress,
        stop: &CancellationToken,
    ) -> Result<BulkCopyReport, ConnectorError>;
}
