//! Backfill and replicate, together: the applier loop and its reader threads.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_connector::{
    runtime, ApplyOp, CancellationToken, ChunkRows, ConnectorError, ErrorKind, KeyRange,
    PositionOrder, PositionOrderExt, Sink, Source, SourceFactory, TargetFactory,
};
use cutover_model::{Change, Column, Key, Position, TableName, TableSchema, Transaction};

use crate::ddl::{self, DdlPolicy};

use crate::retry::Retry;
use cutover_connector::{Phase, Progress, TableProgress};

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Reader threads copying chunks in parallel.
    pub jobs: usize,
    /// Aim for chunks of about this many bytes (rows × average row size).
    pub chunk_bytes: u64,
    pub min_chunk_rows: u64,
    pub max_chunk_rows: u64,
    /// Bounds on one apply batch (one target transaction).
    pub batch_changes: usize,
    pub batch_bytes: usize,
    /// How long to wait for new changes when the stream is idle.
    pub poll_interval: Duration,
    /// Stop once the copy is done and the target has applied everything the source had when
    /// last checked.
    pub stop_when_caught_up: bool,
    /// Only these tables (all when empty), minus `exclude`.
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    /// Remember the keys of up to this many of the latest changes applied (within
    /// `recent_window`), for a switch to verify; 0: none.
    pub recent_keys: usize,
    pub recent_window: Duration,
    /// What to do when the source's columns change (added, dropped, widened).
    pub ddl: DdlPolicy,
    /// How long one operation keeps being retried after a retryable error (a connection
    /// broken or refused, a server restarting, a lock or statement timeout) before sync gives
    /// up: connections are replaced and the operation tried again with backoff meanwhile.
    pub retry_budget: Duration,
    /// Cap on the rows the chunk readers read per second, together (`None`: as fast as the
    /// source gives them), to spare a busy source. Changes are never held back.
    pub max_rows_per_sec: Option<std::num::NonZeroU32>,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_bytes: 4 << 20,
            min_chunk_rows: 64,
            max_chunk_rows: 20_000,
            batch_changes: 5_000,
            batch_bytes: 16 << 20,
            poll_interval: Duration::from_millis(5),
            max_rows_per_sec: None,
            stop_when_caught_up: false,
            recent_keys: 0,
            recent_window: Duration::from_secs(120),
            tables: Vec::new(),
            exclude: Vec::new(),
            ddl: DdlPolicy::default(),
            retry_budget: Duration::from_secs(300),
        }
    }
}

/// Steers a running sync from another thread or task.
#[derive(Debug, Default)]
pub struct Control {
    stop: CancellationToken,
    drain_to: Mutex<Option<Position>>,
}

impl Control {
    /// A control that also stops when `token` is cancelled (a signal handler's, or a parent
    /// task's: pass a child token to stop this sync alone).
    pub fn with_token(token: CancellationToken) -> Control {
        Control {
            stop: token,
            drain_to: Mutex::new(None),
        }
    }

    /// Stop after the batch being applied; progress so far is kept and the next run resumes.
    /// Every wait of the sync (for changes, for a chunk, a retry's backoff) ends at once.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The token a stop cancels.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Finish once the copy is complete and everything up to `position` is applied.
    pub fn drain_to(&self, position: Position) {
        *self.drain_to.lock().unwrap_or_else(|p| p.into_inner()) = Some(position);
    }

    fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    fn drain_target(&self) -> Option<Position> {
        self.drain_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug, Clone)]
pub struct SyncReport {
    pub tables: usize,
    pub rows_copied: u64,
    pub bytes_copied: u64,
    pub rows_superseded: u64,
    pub changes_applied: u64,
    pub position: Position,
    pub elapsed: Duration,
    /// True when the run ended because it was asked to stop, not because it finished.
    pub interrupted: bool,
    /// True when it stopped because a switch asked it to hand over.
    pub handed_over: bool,
    /// Keys changed most recently (see [`SyncOptions::recent_keys`]), newest last, each once.
    pub recent_keys: Vec<(TableName, Key)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("no tables to migrate: the source has none, or --tables/--exclude-tables left none")]
    NoTables,
    #[error(
        "a chunk reader thread panicked; nothing it read was applied: run the same command again"
    )]
    ReaderPanicked,
}

impl SyncError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SyncError::Connector(e) => e.kind(),
            SyncError::NoTables => ErrorKind::InvalidInput,
            SyncError::ReaderPanicked => ErrorKind::Database,
        }
    }
}

struct Job {
    id: u64,
    table: usize,
    chunk: u32,
    range: KeyRange,
}

struct ReadChunk {
    job: u64,
    table: usize,
    chunk: u32,
    rows: ChunkRows,
}

/// What the applier knows about a chunk between dispatch and emission.
struct Outstanding {
    table: usize,
    /// The applied position when the job was dispatched: the chunk's `low` is at least this.
    floor: Position,
    /// The visibility horizon when the job was dispatched (see [`Applier::horizon`]): the
    /// chunk's read reflects every transaction tagged below it.
    horizon: u64,
}

/// Whether `list` (`name` or `schema.name`, as users write them) names `table`.
fn names_table(list: &[String], table: &TableName) -> bool {
    list.iter()
        .any(|n| match (n.split_once('.'), &table.schema) {
            (Some((schema, name)), Some(s)) => schema == s && name == table.name,
            (Some(_), None) => n == &table.name,
            (None, _) => n == &table.name,
        })
}

/// Runs backfill and replication from `source` to `target` until the copy is done and a stop
/// condition holds (see [`SyncOptions::stop_when_caught_up`], [`Control`]).
pub fn run(
    source: &dyn SourceFactory,
    target: &dyn TargetFactory,
    opts: &SyncOptions,
    control: &Control,
    progress: &Progress,
) -> Result<SyncReport, SyncError> {
    let started = Instant::now();
    progress.set_phase(Phase::Preparing);
    let retry = Retry {
        policy: cutover_connector::RetryPolicy::with_budget(opts.retry_budget),
        stop: &control.stop,
    };
    let mut src = retry.source("connecting to the source", || source.source())?;
    let mut sink = retry.target("connecting to the target", || target.sink())?;
    let order = src.positions();
    progress.set_order(order);
    sink.set_order(order);
    let tables: Vec<TableSchema> = retry
        .source("reading the source schema", || src.tables())?
        .into_iter()
        .filter(|t| opts.tables.is_empty() || names_table(&opts.tables, &t.name))
        .filter(|t| !names_table(&opts.exclude, &t.name))
        .collect();
    if tables.is_empty() {
        return Err(SyncError::NoTables);
    }
    if let Some(missing) = opts.tables.iter().find(|n| {
        !tables
            .iter()
            .any(|t| names_table(std::slice::from_ref(*n), &t.name))
    }) {
        return Err(ConnectorError::new(
            ErrorKind::NotFound,
            format!("table {missing} (from --tables) does not exist on the source"),
        )
        .into());
    }
    // Everything either side would refuse is refused before anything is created on either.
    retry.source("checking that the source can capture changes", || {
        src.check_capture(&tables)
    })?;
    retry.target("checking the target", || sink.check(&tables))?;
    let start = retry.source("installing change capture", || src.start_capture(&tables))?;
    if let Err(e) = retry.target("preparing the target", || sink.prepare(&tables)) {
        if let Err(undo) = src.abandon_capture() {
            tracing::warn!(error = %undo, "could not remove the change capture just started; `cutover cleanup` removes it");
        }
        return Err(e.into());
    }
    let mut applied = retry
        .target("reading the checkpoint", || sink.checkpoint())?
        .unwrap_or(start);
    progress.set_applied(applied.clone());

    // The source's columns now against the target's: with --ddl auto, columns added (or
    // widened) while sync was stopped are carried first, so that a table that sees no change
    // for a while has them too. Drops are only carried where the change stream passes them;
    // with --ddl stop, sync stops where the stream (or a chunk) meets the change, after
    // applying everything before it.
    let mut target_columns = Vec::with_capacity(tables.len());
    let mut altered = Vec::new();
    for t in &tables {
        let mut columns = retry.target("reading the target's columns", || sink.columns(t))?;
        if opts.ddl == DdlPolicy::Stop {
            target_columns.push(columns);
            continue;
        }
        let key: Vec<String> = t.key_columns().map(|c| c.name.clone()).collect();
        ddl::carry(
            opts.ddl,
            &t.name,
            &mut columns,
            &t.columns,
            &key,
            |_| false,
            None,
            &mut altered,
        )?;
        target_columns.push(columns);
    }
    if !altered.is_empty() {
        retry.target("changing the target's columns as the source's", || {
            sink.apply(&altered, applied.clone())
        })?;
    }

    // Plan chunks (or load the stored plan), largest tables first.
    let mut jobs: Vec<(u64, Job)> = Vec::new();
    let mut remaining = vec![0u64; tables.len()];
    let mut table_progress = Vec::with_capacity(tables.len());
    let mut next_id = 0u64;
    for (ti, t) in tables.iter().enumerate() {
        let est = retry.source("estimating table sizes", || src.estimate(t))?;
        let rows_per_chunk = (opts.chunk_bytes / est.avg_row_bytes.max(1))
            .clamp(opts.min_chunk_rows, opts.max_chunk_rows);
        let plan = retry.target("recording the chunk plan", || {
            sink.chunk_plan(t, &mut || {
                retry.source("planning chunks", || src.plan_chunks(t, rows_per_chunk))
            })
        })?;
        let tp = Arc::new(TableProgress {
            name: t.name.clone(),
            rows_estimate: est.rows.into(),
            rows_copied: 0.into(),
            bytes_copied: 0.into(),
            chunks_total: (plan.len() as u64).into(),
            chunks_done: (plan.iter().filter(|c| c.done).count() as u64).into(),
        });
        table_progress.push(tp);
        for c in plan.into_iter().filter(|c| !c.done) {
            remaining[ti] += 1;
            jobs.push((
                est.rows.saturating_mul(est.avg_row_bytes),
                Job {
                    id: next_id,
                    table: ti,
                    chunk: c.index,
                    range: c.range,
                },
            ));
            next_id += 1;
        }
    }
    *progress.tables.lock().unwrap_or_else(|p| p.into_inner()) = table_progress.clone();
    jobs.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    let mut queue: VecDeque<Job> = jobs.into_iter().map(|(_, j)| j).collect();
    let done_at_start: Vec<TableSchema> = tables
        .iter()
        .enumerate()
        .filter(|(i, _)| remaining[*i] == 0)
        .map(|(_, t)| t.clone())
        .collect();
    retry.target("building indexes", || sink.finish_tables(&done_at_start))?;
    progress.set_phase(if queue.is_empty() {
        Phase::Replicating
    } else {
        Phase::Copying
    });
    tracing::info!(tables = tables.len(), chunks = queue.len(), position = %applied, "sync starting");

    let tables = Arc::new(tables);
    let workers = opts.jobs.max(1);
    // Both channels are bounded by the chunks the applier lets out at once (`workers * 2`,
    // read or being read): readers wait to hand a chunk over, the applier waits for one, and
    // memory holds at most that many chunks.
    let (job_tx, job_rx) = tokio::sync::mpsc::channel::<Job>(workers * 2);
    let job_rx = tokio::sync::Mutex::new(job_rx);
    let (res_tx, mut res_rx) =
        tokio::sync::mpsc::channel::<Result<ReadChunk, ConnectorError>>(workers * 2);

    // Chunk readers are blocking (each owns one source connection) and borrow the factory and
    // the tables, so they are threads of this scope: the scope is their task set, joined
    // before `run` returns; a stop (the control's token) ends their waits.
    let pace = opts.max_rows_per_sec.map(Pace::new);
    std::thread::scope(|scope| -> Result<SyncReport, SyncError> {
        let mut handles = Vec::new();
        // Readers start only if there is something to copy.
        for _ in 0..if queue.is_empty() { 0 } else { workers } {
            let res_tx = res_tx.clone();
            let (tables, job_rx, pace) = (&tables, &job_rx, pace.as_ref());
            handles.push(scope.spawn(move || reader(source, tables, job_rx, &res_tx, retry, pace)));
        }
        drop(res_tx);

        let mut applier = Applier {
            retry,
            tables: &tables,
            opts,
            progress,
            table_progress: &table_progress,
            remaining,
            in_flight: HashMap::new(),
            pending: Vec::new(),
            touched: HashMap::new(),
            truncated: HashMap::new(),
            watched: Watched::default(),
            horizon: 0,
            stream_shapes: tables.to_vec(),
            write_columns: tables
                .iter()
                .map(|t| t.columns.iter().map(|c| c.name.clone()).collect())
                .collect(),
            target_columns,
            read_upto: applied.clone(),
            applied,
            order,
            backlog: VecDeque::new(),
            recent: VecDeque::new(),
            origins: sink.wants_origins(),
        };
        let result = applier.run(
            &mut src,
            &mut sink,
            &mut queue,
            &job_tx,
            &mut res_rx,
            control,
            workers,
        );
        drop(job_tx);
        // Unblock readers waiting to hand over a chunk, then wait for them.
        res_rx.close();
        while res_rx.try_recv().is_ok() {}
        drop(res_rx);
        let mut panicked = false;
        for h in handles {
            panicked |= h.join().is_err();
        }
        let ended = result?;
        // What the target held back (a file not yet rolled) is written out before the run ends.
        retry.target("writing out what the target holds", || sink.close())?;
        let interrupted = ended != Ended::Done;
        let recent_keys = applier.recent_keys();
        if opts.recent_keys > 0 {
            // For a switch that takes over from here: the rows it should verify first.
            if let Err(e) = sink.record_recent(&recent_keys) {
                tracing::warn!(error = %e, "could not record the keys changed last on the target");
            }
        }
        // The final status, for `cutover status` after this process ends.
        if let Ok(p) = src.current_position() {
            progress.set_source(p);
        }
        if let Err(e) = sink.note(progress) {
            tracing::warn!(error = %e, "could not record the sync's final status on the target");
        }
        if panicked {
            return Err(SyncError::ReaderPanicked);
        }
        applied = applier.applied;
        progress.set_phase(Phase::Stopped);
        Ok(SyncReport {
            tables: tables.len(),
            rows_copied: progress.rows_copied.load(Ordering::Relaxed),
            bytes_copied: progress.bytes_copied.load(Ordering::Relaxed),
            rows_superseded: progress.rows_superseded.load(Ordering::Relaxed),
            changes_applied: progress.changes_applied.load(Ordering::Relaxed),
            position: applied,
            elapsed: started.elapsed(),
            interrupted,
            handed_over: ended == Ended::HandedOver,
            recent_keys,
        })
    })
}

fn reader(
    source: &dyn SourceFactory,
    tables: &[TableSchema],
    jobs: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Job>>,
    results: &tokio::sync::mpsc::Sender<Result<ReadChunk, ConnectorError>>,
    retry: Retry<'_>,
    pace: Option<&Pace>,
) {
    let mut src = match retry.source("connecting a chunk reader to the source", || {
        source.source()
    }) {
        Ok(s) => s,
        Err(e) => {
            let _ = results.blocking_send(Err(e));
            return;
        }
    };
    loop {
        // The next job, or the end: the applier closed the queue or the sync was stopped.
        let job = runtime::block_on(async {
            let mut jobs = jobs.lock().await;
            tokio::select! {
                biased;
                () = retry.stop.cancelled() => None,
                job = jobs.recv() => job,
            }
        });
        let Some(job) = job else { return };
        let table = &tables[job.table];
        let read = retry
            .source("reading a chunk", || src.read_chunk(table, &job.range))
            .map(|rows| ReadChunk {
                job: job.id,
                table: job.table,
                chunk: job.chunk,
                rows,
            });
        let failed = read.is_err();
        if let (Some(pace), Ok(chunk)) = (pace, &read) {
            if !pace.hold(chunk.rows.rows.len() as u64, retry.stop) {
                return;
            }
        }
        if results.blocking_send(read).is_err() || failed {
            return;
        }
    }
}

/// `--max-rows-per-sec` across every chunk reader: after each chunk, a reader waits until the
/// rows read since the start are within the rate (the average over the whole copy, so a pause
/// of the source is not made up for by a burst above it for longer than one chunk).
struct Pace {
    start: std::time::Instant,
    rows: std::sync::atomic::AtomicU64,
    per_sec: f64,
}

impl Pace {
    fn new(per_sec: std::num::NonZeroU32) -> Pace {
        Pace {
            start: std::time::Instant::now(),
            rows: std::sync::atomic::AtomicU64::new(0),
            per_sec: f64::from(per_sec.get()),
        }
    }

    /// Counts `rows` and waits until they are due; `false`: stopped while waiting.
    fn hold(&self, rows: u64, stop: &CancellationToken) -> bool {
        let total = self
            .rows
            .fetch_add(rows, std::sync::atomic::Ordering::Relaxed)
            + rows;
        let due = self.start + Duration::from_secs_f64(total as f64 / self.per_sec);
        runtime::block_on(async {
            tokio::select! {
                () = stop.cancelled() => false,
                () = tokio::time::sleep_until(due.into()) => true,
            }
        })
    }
}

struct Applier<'a> {
    retry: Retry<'a>,
    tables: &'a [TableSchema],
    opts: &'a SyncOptions,
    progress: &'a Progress,
    table_progress: &'a [Arc<TableProgress>],
    /// Chunks per table not yet committed.
    remaining: Vec<u64>,
    in_flight: HashMap<u64, Outstanding>,
    /// Chunks read, waiting for the stream to reach their `high`.
    pending: Vec<ReadChunk>,
    /// Keys changed while their table still had chunks to copy (queued, being read or waiting
    /// for the stream): the change's position and transaction id, and whether any of those
    /// changes was an update that left out values (PostgreSQL's unchanged TOAST columns), which
    /// cannot create the row on its own. Kept until no chunk, read or still to be read, can
    /// miss the change (see [`Applier::prune`]).
    touched: HashMap<(usize, Key), Touch>,
    /// Tables truncated while they still had chunks to copy.
    truncated: HashMap<usize, Touch>,
    /// Keys changed while their table still had chunks to copy, since the last batch.
    watched: Watched,
    /// Each table as the change stream describes it now: its rows have these columns.
    stream_shapes: Vec<TableSchema>,
    /// The columns of each table's rows that the sink expects next ([`ApplyOp::Columns`]).
    write_columns: Vec<Vec<String>>,
    /// Each table's columns on the target now.
    target_columns: Vec<Vec<Column>>,
    /// The newest horizon of the chunk read views seen so far ([`ReadView::horizon`]): every
    /// transaction tagged below it is reflected in every read taken from now on. Only
    /// transactions at or above it can be missing from a chunk read later.
    horizon: u64,
    /// The source engine's order of positions.
    order: &'static dyn PositionOrder,
    applied: Position,
    /// The position of the last transaction read from the source (ahead of `applied` while
    /// `backlog` holds transactions read but not yet applied).
    read_upto: Position,
    backlog: VecDeque<Transaction>,
    /// Keys of the latest changes applied, with when.
    recent: VecDeque<(Instant, TableName, Key)>,
    /// Whether the sink wants each change's [`ApplyOp::Origin`].
    origins: bool,
}

#[derive(Debug, Clone)]
struct Touch {
    at: Position,
    /// The transaction's tag, which a chunk's [`ReadView`] decides on.
    tag: Option<u64>,
    partial: bool,
}

/// What ended the applier's wait when it had nothing to do.
enum Woke {
    Stopped,
    Chunk(Option<Result<ReadChunk, ConnectorError>>),
    Timer,
}

/// Why the applier stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Its stop condition held (caught up, or drained).
    Done,
    /// [`Control::stop`].
    Interrupted,
    /// A switch asked it to hand over.
    HandedOver,
}

/// Counters of a batch, credited to progress once the batch commits.
#[derive(Default)]
struct BatchTally {
    changes: u64,
    /// The last transaction of the batch that changed rows, and a table it changed.
    last_change: Option<(Position, TableName)>,
    superseded: u64,
    committed_at: Option<std::time::SystemTime>,
    chunks: Vec<(usize, u64, u64)>,
}

/// Keys changed while their table was still being copied, gathered for the batch
/// ([`ApplyOp::Watch`]).
#[derive(Default)]
struct Watched(HashMap<usize, std::collections::HashSet<Key>>);

impl Watched {
    fn into_ops(self, tables: &[TableSchema], ops: &mut Vec<ApplyOp>) {
        for (ti, keys) in self.0 {
            ops.push(ApplyOp::Watch {
                table: tables[ti].name.clone(),
                keys: keys.into_iter().collect(),
            });
        }
    }
}

impl Applier<'_> {
    /// Runs until a stop condition holds, [`Control::stop`], or a hand-over request.
    #[allow(clippy::too_many_arguments)]
    fn run<Src: Source, Snk: Sink>(
        &mut self,
        src: &mut Src,
        sink: &mut Snk,
        queue: &mut VecDeque<Job>,
        job_tx: &tokio::sync::mpsc::Sender<Job>,
        res_rx: &mut tokio::sync::mpsc::Receiver<Result<ReadChunk, ConnectorError>>,
        control: &Control,
        workers: usize,
    ) -> Result<Ended, SyncError> {
        let retry = self.retry;
        let mut last_release = Instant::now();
        let mut last_note = Instant::now();
        let mut last_recorded = Instant::now();
        let mut last_polled = Instant::now()
            .checked_sub(Duration::from_secs(1))
            .unwrap_or_else(Instant::now);
        let mut current: Option<Position> = None;
        let mut unrecorded: Option<Position> = None;
        let mut released = self.applied.clone();
        loop {
            // Keep the readers busy, with a bounded number of chunks in memory.
            while self.in_flight.len() + self.pending.len() < workers * 2 {
                let Some(job) = queue.pop_front() else { break };
                self.in_flight.insert(
                    job.id,
                    Outstanding {
                        table: job.table,
                        floor: self.applied.clone(),
                        horizon: self.horizon,
                    },
                );
                // Never full: the channel holds at most the jobs let out, and no more than its
                // capacity are out. Closed only when every reader has ended (an error each
                // reported, or a panic).
                if job_tx.try_send(job).is_err() {
                    break;
                }
            }
            while let Ok(r) = res_rx.try_recv() {
                self.accept(r?);
            }

            // How long the source already waited for changes (a stream blocks a little).
            let mut waited = Duration::ZERO;
            if self.backlog.is_empty() {
                let asked = Instant::now();
                let txns = retry.source("reading changes", || {
                    src.read_changes(self.tables, self.read_upto.clone(), self.opts.batch_changes)
                })?;
                if let Some(last) = txns.last() {
                    self.read_upto = last.position.clone();
                }
                self.backlog.extend(txns);
                waited = asked.elapsed();
            }
            let mut idle = self.backlog.is_empty();
            let mut ops = Vec::new();
            let mut bytes = 0usize;
            let mut tally = BatchTally::default();
            let mut position = self.applied.clone();
            self.emit_ready(src, &position, &mut ops, &mut bytes, &mut tally)?;
            // A change of columns that sync will not carry: everything before its transaction
            // is applied, then sync stops there.
            let mut refused = None;
            while let Some(txn) = self.backlog.pop_front() {
                if let Err(e) = self.check_columns(&txn) {
                    self.backlog.push_front(txn);
                    refused = Some(e);
                    break;
                }
                // The index among the transaction's row changes: a source may describe a
                // table's shape before its first row in one delivery and not in the next.
                let mut index = 0u32;
                for change in txn.changes {
                    if let Change::Schema {
                        table,
                        columns,
                        current,
                    } = change
                    {
                        self.reshape(&table, columns, current.as_deref(), &txn.position, &mut ops)?;
                        continue;
                    }
                    self.track(&change, &txn.position, txn.tag);
                    self.remember(&change);
                    if let Some(t) = change.table() {
                        tally.last_change = Some((txn.position.clone(), t.clone()));
                    } else if let Change::Truncate { tables } = &change {
                        if let Some(t) = tables.first() {
                            tally.last_change = Some((txn.position.clone(), t.clone()));
                        }
                    }
                    bytes += change_bytes(&change);
                    tally.changes += 1;
                    if let Some(ti) = change.table().and_then(|n| self.index(n)) {
                        let shape = self.stream_shapes[ti].clone();
                        self.write_as(ti, &shape.columns, &mut ops);
                    }
                    if self.origins {
                        ops.push(ApplyOp::Origin {
                            position: txn.position.clone(),
                            index,
                            committed_at: txn.committed_at,
                            tag: txn.tag,
                        });
                    }
                    ops.push(ApplyOp::Change(change));
                    index = index.saturating_add(1);
                }
                position = txn.position;
                if txn.committed_at.is_some() {
                    tally.committed_at = txn.committed_at;
                }
                self.emit_ready(src, &position, &mut ops, &mut bytes, &mut tally)?;
                if bytes >= self.opts.batch_bytes || tally.changes >= self.opts.batch_changes as u64
                {
                    // The rest stays in the backlog for the next batch.
                    break;
                }
            }
            if position != self.applied || !ops.is_empty() {
                if ops.is_empty()
                    && refused.is_none()
                    && last_recorded.elapsed() < Duration::from_secs(1)
                {
                    // Only the source's position moved (WAL of other tables, or idle): record
                    // that now and then, not on every keepalive.
                    self.progress.set_passed(position.clone());
                    unrecorded = Some(position);
                    idle = true;
                } else {
                    std::mem::take(&mut self.watched).into_ops(self.tables, &mut ops);
                    retry.target("applying a batch to the target", || {
                        sink.apply(&ops, position.clone())
                    })?;
                    self.commit(position, tally, sink)?;
                    unrecorded = None;
                    last_recorded = Instant::now();
                }
            }
            self.prune();
            if let Some(e) = refused {
                return Err(e.into());
            }

            let order = self.order;
            if order.after(&self.applied, &released)
                && last_release.elapsed() > Duration::from_secs(1)
            {
                // Only what the target has durably applied is released.
                let durable = retry.target("asking the target what is durable", || {
                    sink.durable(self.applied.clone())
                })?;
                if let Some(durable) = durable.filter(|d| order.after(d, &released)) {
                    retry.source("releasing applied changes on the source", || {
                        src.release(durable.clone())
                    })?;
                    released = durable;
                }
                last_release = Instant::now();
            }

            if last_note.elapsed() > Duration::from_secs(1) {
                if let Ok(Some(b)) = src.history_bytes() {
                    self.progress.set_history_bytes(b);
                }
                if sink.handover_requested().unwrap_or(false) {
                    tracing::info!(position = %self.applied, "handing over to a switch: stopping");
                    return Ok(Ended::HandedOver);
                }
                // Status for other processes; a failure here must not stop replication.
                if let Err(e) = sink.note(self.progress) {
                    tracing::warn!(error = %e, "could not record the sync's status on the target");
                }
                last_note = Instant::now();
            }

            if control.stopped() {
                return Ok(Ended::Interrupted);
            }
            let copy_done =
                queue.is_empty() && self.in_flight.is_empty() && self.pending.is_empty();
            if copy_done && self.progress.phase() == Phase::Copying {
                self.progress.set_phase(Phase::Replicating);
                tracing::info!(position = %self.applied, "copy complete; replicating");
            }
            if idle {
                // The source's position: at every pause while a stop condition waits on it,
                // otherwise ten times a second (for status); each read is a round trip that a
                // change arriving meanwhile would wait for.
                let waiting_on_it = self.opts.stop_when_caught_up;
                if waiting_on_it || last_polled.elapsed() >= Duration::from_millis(100) {
                    let p =
                        retry.source("reading the source position", || src.current_position())?;
                    self.progress.set_source(p.clone());
                    current = Some(p);
                    last_polled = Instant::now();
                }
                if copy_done {
                    let reached = order.later(
                        unrecorded.clone().unwrap_or_else(|| self.applied.clone()),
                        self.applied.clone(),
                    );
                    let goal = match control.drain_target() {
                        Some(target) => {
                            self.progress.set_phase(Phase::Draining);
                            Some(target)
                        }
                        None if self.opts.stop_when_caught_up => current.clone(),
                        None => None,
                    };
                    if goal.is_some_and(|g| order.reached(&reached, &g)) {
                        if order.after(&reached, &self.applied) {
                            retry.target("recording the final position on the target", || {
                                sink.apply(&[], reached.clone())
                            })?;
                            self.commit(reached, BatchTally::default(), sink)?;
                        }
                        return Ok(Ended::Done);
                    }
                }
                // Wait for a chunk, the poll interval, or a stop, whichever comes first. Sources
                // that return at once (SQLite's change table) are polled; a stream that
                // already waited for changes is asked again right away.
                let chunks = !self.in_flight.is_empty();
                let pause = if chunks {
                    self.opts.poll_interval
                } else {
                    self.opts.poll_interval.saturating_sub(waited)
                };
                if !pause.is_zero() {
                    let stop = &control.stop;
                    let woke = runtime::block_on(async {
                        tokio::select! {
                            biased;
                            () = stop.cancelled() => Woke::Stopped,
                            r = res_rx.recv(), if chunks => Woke::Chunk(r),
                            () = tokio::time::sleep(pause) => Woke::Timer,
                        }
                    });
                    match woke {
                        Woke::Chunk(Some(r)) => self.accept(r?),
                        Woke::Chunk(None) => return Err(SyncError::ReaderPanicked),
                        Woke::Stopped => return Ok(Ended::Interrupted),
                        Woke::Timer => {}
                    }
                }
            }
        }
    }

    fn index(&self, table: &TableName) -> Option<usize> {
        self.tables.iter().position(|t| &t.name == table)
    }

    /// Fails with what to do when a change of columns in `txn` is one sync must not carry
    /// (per [`SyncOptions::ddl`], or not at all), before anything of `txn` is applied.
    fn check_columns(&self, txn: &Transaction) -> Result<(), ConnectorError> {
        let mut target: HashMap<usize, Vec<Column>> = HashMap::new();
        for change in &txn.changes {
            let Change::Schema {
                table,
                columns,
                current,
            } = change
            else {
                continue;
            };
            let Some(ti) = self.index(table) else {
                continue;
            };
            let cols = target
                .entry(ti)
                .or_insert_with(|| self.target_columns[ti].clone());
            let key = self.key_names(ti);
            let changes = ddl::decide(self.opts.ddl, table, cols, columns, &key, |n| {
                gone(current.as_deref(), n)
            })
            .map_err(|r| ddl::refusal_error(table, r, Some(txn.position.clone())))?;
            for c in &changes {
                ddl::apply(cols, c);
            }
        }
        Ok(())
    }

    fn key_names(&self, ti: usize) -> Vec<String> {
        self.tables[ti]
            .key_columns()
            .map(|c| c.name.clone())
            .collect()
    }

    /// The stream says rows of `table` have `columns` from here on: carries what the target
    /// needs for them (checked by [`Applier::check_columns`] first) and follows the new shape.
    fn reshape(
        &mut self,
        table: &TableName,
        columns: Vec<Column>,
        current: Option<&[String]>,
        at: &Position,
        ops: &mut Vec<ApplyOp>,
    ) -> Result<(), SyncError> {
        let Some(ti) = self.index(table) else {
            return Ok(());
        };
        let key = self.key_names(ti);
        ddl::carry(
            self.opts.ddl,
            table,
            &mut self.target_columns[ti],
            &columns,
            &key,
            |n| gone(current, n),
            Some(at.clone()),
            ops,
        )?;
        self.stream_shapes[ti] = ddl::shape(table, columns, &key);
        Ok(())
    }

    /// Makes the sink expect rows of table `ti` with `columns` from here on.
    fn write_as(&mut self, ti: usize, columns: &[Column], ops: &mut Vec<ApplyOp>) {
        let same = self.write_columns[ti].len() == columns.len()
            && self.write_columns[ti]
                .iter()
                .zip(columns)
                .all(|(a, b)| a == &b.name);
        if !same {
            let names: Vec<String> = columns.iter().map(|c| c.name.clone()).collect();
            self.write_columns[ti] = names.clone();
            ops.push(ApplyOp::Columns {
                table: self.tables[ti].name.clone(),
                columns: names,
            });
        }
    }

    /// Notes the keys a change touched, for [`SyncReport::recent_keys`].
    fn remember(&mut self, change: &Change) {
        if self.opts.recent_keys == 0 {
            return;
        }
        let now = Instant::now();
        let mut note = |table: &TableName, key: Key| {
            self.recent.push_back((now, table.clone(), key));
        };
        let shapes = &self.stream_shapes;
        match change {
            Change::Insert { table, row } => {
                if let Some(t) = shapes.iter().find(|t| &t.name == table) {
                    note(table, t.key_of(row));
                }
            }
            Change::Update {
                table,
                old_key,
                row,
                ..
            } => {
                if let Some(t) = shapes.iter().find(|t| &t.name == table) {
                    let key = t.key_of(row);
                    if &key != old_key {
                        note(table, old_key.clone());
                    }
                    note(table, key);
                }
            }
            Change::Delete { table, old_key, .. } => note(table, old_key.clone()),
            Change::Truncate { .. } | Change::Schema { .. } => {}
        }
        let cutoff = now.checked_sub(self.opts.recent_window);
        while self.recent.len() > self.opts.recent_keys
            || self
                .recent
                .front()
                .is_some_and(|(at, _, _)| cutoff.is_some_and(|c| *at < c))
        {
            self.recent.pop_front();
        }
    }

    fn recent_keys(&self) -> Vec<(TableName, Key)> {
        let mut seen = std::collections::HashSet::new();
        let mut out: Vec<(TableName, Key)> = self
            .recent
            .iter()
            .rev()
            .filter(|(_, t, k)| seen.insert((t.clone(), k.clone())))
            .map(|(_, t, k)| (t.clone(), k.clone()))
            .collect();
        out.reverse();
        out
    }

    fn accept(&mut self, r: ReadChunk) {
        self.in_flight.remove(&r.job);
        if let Some(v) = &r.rows.view {
            self.horizon = self.horizon.max(v.horizon());
        }
        self.pending.push(r);
    }

    /// Remembers which keys a change touched, while its table still has chunks to copy.
    ///
    /// Not only while a chunk is being read: a transaction's commit can reach the stream
    /// before the transaction is visible to new snapshots (PostgreSQL writes the commit record,
    /// waits for synchronous standbys, and only then makes it visible), so a chunk read later
    /// may still miss a change the applier has already passed.
    fn track(&mut self, change: &Change, at: &Position, tag: Option<u64>) {
        let touch = |partial: bool| Touch {
            at: at.clone(),
            tag,
            partial,
        };
        let table = match change {
            Change::Truncate { tables } => {
                for name in tables {
                    if let Some(ti) = self.tables.iter().position(|t| &t.name == name) {
                        if self.remaining[ti] > 0 {
                            self.truncated.insert(ti, touch(false));
                        }
                    }
                }
                return;
            }
            other => other.table(),
        };
        let Some(ti) = table.and_then(|n| self.tables.iter().position(|t| &t.name == n)) else {
            return;
        };
        if self.remaining[ti] == 0 {
            return;
        }
        let schema = &self.stream_shapes[ti];
        let watched = self.watched.0.entry(ti).or_default();
        let mut mark = |key: Key, partial: bool| {
            watched.insert(key.clone());
            self.touched
                .entry((ti, key))
                .and_modify(|t| {
                    let was = t.partial;
                    *t = touch(was || partial);
                })
                .or_insert_with(|| touch(partial));
        };
        match change {
            Change::Insert { row, .. } => mark(schema.key_of(row), false),
            Change::Update {
                old_key,
                row,
                unchanged,
                ..
            } => {
                let partial = !unchanged.is_empty();
                mark(old_key.clone(), partial);
                mark(schema.key_of(row), partial);
            }
            Change::Delete { old_key, .. } => mark(old_key.clone(), false),
            Change::Truncate { .. } | Change::Schema { .. } => {}
        }
    }

    /// Moves every pending chunk whose `high` the stream has reached into the batch, minus rows
    /// whose keys changed after the chunk's `low`. A row whose newer state the stream could not
    /// carry whole (an update without its unchanged values, applied before the row was on the
    /// target) is re-read from the source instead; the stream brings it up to date from there.
    fn emit_ready<Src: Source>(
        &mut self,
        src: &mut Src,
        position: &Position,
        ops: &mut Vec<ApplyOp>,
        bytes: &mut usize,
        tally: &mut BatchTally,
    ) -> Result<(), SyncError> {
        let retry = self.retry;
        let mut i = 0;
        while i < self.pending.len() {
            if self.order.after(&self.pending[i].rows.high, position) {
                i += 1;
                continue;
            }
            let mut chunk = self.pending.swap_remove(i);
            let ti = chunk.table;
            // Read after the source's columns changed, the rows may carry columns the target
            // lacks: it gets them now (a column added before the read is before `high` too).
            let schema = {
                let name = self.tables[ti].name.clone();
                let columns = chunk
                    .rows
                    .columns
                    .take()
                    .unwrap_or_else(|| self.tables[ti].columns.clone());
                let key = self.key_names(ti);
                ddl::carry(
                    self.opts.ddl,
                    &name,
                    &mut self.target_columns[ti],
                    &columns,
                    &key,
                    |_| false,
                    Some(chunk.rows.high.clone()),
                    ops,
                )?;
                ddl::shape(&name, columns, &key)
            };
            self.write_as(ti, &schema.columns, ops);
            let schema = &schema;
            let low = chunk.rows.low.clone();
            let view = chunk.rows.view.clone();
            let order = self.order;
            // Whether the chunk's rows already reflect a change: the source engine's read view
            // decides where it can, else the change's position against the read's.
            let reflected = |t: &Touch| match (&view, t.tag) {
                (Some(v), Some(tag)) => v.reflects(tag),
                _ => order.reached(&low, &t.at),
            };
            let truncated_after_low = self.truncated.get(&ti).is_some_and(|t| !reflected(t));
            let (mut rows_out, mut bytes_out) = (0u64, 0u64);
            let mut refetch = Vec::new();
            let mut emit = |row: cutover_model::Row| {
                let b: usize = row.iter().map(|v| v.payload_len()).sum();
                *bytes += b;
                bytes_out += b as u64;
                rows_out += 1;
                ops.push(ApplyOp::Upsert {
                    table: schema.name.clone(),
                    row,
                });
            };
            for row in chunk.rows.rows {
                let key = schema.key_of(&row);
                let touch = self.touched.get(&(ti, key));
                let superseded = truncated_after_low || touch.is_some_and(|t| !reflected(t));
                if superseded {
                    if !truncated_after_low && touch.is_some_and(|t| t.partial) {
                        refetch.push(schema.key_of(&row));
                    }
                    tally.superseded += 1;
                    continue;
                }
                emit(row);
            }
            if !refetch.is_empty() {
                // In the chunk's columns, which the sink now expects.
                let rows = retry.source("re-reading rows from the source", || {
                    src.fetch_rows(schema, &refetch)
                })?;
                tally.superseded -= rows.len() as u64;
                rows.into_iter().for_each(&mut emit);
            }
            ops.push(ApplyOp::ChunkDone {
                table: schema.name.clone(),
                chunk: chunk.chunk,
                rows: rows_out,
            });
            tally.chunks.push((ti, rows_out, bytes_out));
        }
        Ok(())
    }

    fn commit<Snk: Sink>(
        &mut self,
        position: Position,
        tally: BatchTally,
        sink: &mut Snk,
    ) -> Result<(), SyncError> {
        let retry = self.retry;
        let p = self.progress;
        p.set_applied(position.clone());
        self.applied = position;
        if let Some(t) = tally.committed_at {
            p.set_committed_at(t);
        }
        if let Some((at, table)) = tally.last_change {
            p.set_last_change(at, table);
        }
        p.changes_applied
            .fetch_add(tally.changes, Ordering::Relaxed);
        p.rows_superseded
            .fetch_add(tally.superseded, Ordering::Relaxed);
        p.batches_applied.fetch_add(1, Ordering::Relaxed);
        let mut finished = Vec::new();
        for (ti, rows, bytes) in tally.chunks {
            let tp = &self.table_progress[ti];
            tp.rows_copied.fetch_add(rows, Ordering::Relaxed);
            tp.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
            tp.chunks_done.fetch_add(1, Ordering::Relaxed);
            p.rows_copied.fetch_add(rows, Ordering::Relaxed);
            p.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
            self.remaining[ti] = self.remaining[ti].saturating_sub(1);
            if self.remaining[ti] == 0 {
                finished.push(self.tables[ti].clone());
            }
        }
        if !finished.is_empty() {
            retry.target("building indexes", || sink.finish_tables(&finished))?;
            for t in &finished {
                tracing::info!(table = %t.name, "table copied; indexes built");
            }
        }
        Ok(())
    }

    /// Forgets touched keys that no chunk can need any more: neither a chunk already read and
    /// waiting for the stream, nor one being read, nor one still queued.
    ///
    /// A change with a transaction tag is needed while some chunk of its table may not reflect
    /// that transaction: a waiting chunk whose read view does not, a chunk being read whose
    /// dispatch horizon is not above it, or a queued chunk while the current horizon is not. A
    /// change without one (engines that read chunks at an exact stream position) is needed
    /// while it lies after some outstanding chunk's `low` (or dispatch floor).
    fn prune(&mut self) {
        #[derive(Clone)]
        struct Need {
            /// Changes after this position may be missing from an outstanding chunk.
            after: Option<Position>,
            /// Transactions with tags at or above this may be invisible to some chunk.
            from_tag: Option<u64>,
        }
        let mut need = vec![
            Need {
                after: None,
                from_tag: None,
            };
            self.tables.len()
        ];
        let mut outstanding = vec![0u64; self.tables.len()];
        let lower = |a: Option<u64>, b: u64| Some(a.map_or(b, |a| a.min(b)));
        let order = self.order;
        let lower_pos = |a: Option<Position>, b: &Position| {
            Some(a.map_or_else(|| b.clone(), |a| order.earlier(a, b.clone())))
        };
        for o in self.in_flight.values() {
            let n = &mut need[o.table];
            n.after = lower_pos(n.after.take(), &o.floor);
            n.from_tag = lower(n.from_tag, o.horizon);
            outstanding[o.table] += 1;
        }
        for p in &self.pending {
            let n = &mut need[p.table];
            n.after = lower_pos(n.after.take(), &p.rows.low);
            n.from_tag = match &p.rows.view {
                Some(v) => lower(n.from_tag, v.horizon()),
                // Decided by position only: a transaction is then never kept for its tag.
                None => n.from_tag,
            };
            outstanding[p.table] += 1;
        }
        for (ti, n) in need.iter_mut().enumerate() {
            if self.remaining[ti] > outstanding[ti] {
                // Chunks still queued are read later, in views above the current horizon.
                n.from_tag = lower(n.from_tag, self.horizon);
            }
        }
        let needed = |ti: usize, t: &Touch| {
            let n = &need[ti];
            let by_tag = t.tag.is_some_and(|x| n.from_tag.is_some_and(|h| x >= h));
            let by_position = n.after.as_ref().is_some_and(|f| order.after(&t.at, f));
            by_tag || by_position
        };
        self.touched.retain(|(ti, _), t| needed(*ti, t));
        self.truncated.retain(|ti, t| needed(*ti, t));
    }
}

/// Whether column `name` is gone from the source, given its columns now (unknown: no).
fn gone(current: Option<&[String]>, name: &str) -> bool {
    current.is_some_and(|cur| !cur.iter().any(|c| c == name))
}

fn change_bytes(c: &Change) -> usize {
    match c {
        Change::Insert { row, .. } | Change::Update { row, .. } => {
            row.iter().map(|v| v.payload_len()).sum()
        }
        Change::Delete { old_key, .. } => old_key.iter().map(|v| v.payload_len()).sum(),
        Change::Truncate { .. } | Change::Schema { .. } => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pace_holds_readers_to_the_rate_on_average() {
        let pace = Pace::new(std::num::NonZeroU32::new(1_000).unwrap_or(std::num::NonZeroU32::MIN));
        let stop = CancellationToken::new();
        let t = Instant::now();
        // 250 rows at 1,000 rows/s: due 250 ms after the start, whatever the chunking.
        for _ in 0..5 {
            assert!(pace.hold(50, &stop));
        }
        assert!(
            t.elapsed() >= Duration::from_millis(249),
            "{:?}",
            t.elapsed()
        );
        // A stop ends the wait at once.
        stop.cancel();
        let t = Instant::now();
        assert!(!pace.hold(100_000, &stop));
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
