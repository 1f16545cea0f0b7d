//! `cutover copy` for PostgreSQL → PostgreSQL: parallel chunked binary COPY, resumable.
//!
//! Control store (`_cutover` schema on the target):
//! - `migration`: one row; `phase` moves `copying` → `post-data` → `copied`.
//! - `chunks`: every chunk's key range and whether it is done. A chunk's rows and its done mark
//!   commit in one target transaction. `lower_key`/`upper_key` hold the key values' PostgreSQL
//!   text forms (what `copy` plans and reads: both sides are PostgreSQL, the text is cast back to
//!   the key's types); since control store version 2, `lower_key_enc`/`upper_key_enc` hold the
//!   keys typed, in cutover-model's binary encoding, for plans made by `sync` from any source
//!   (read in preference to the text; a row without them is read as text, as before).
//! - `store`: the control store's version (schema and migrations: `cutover_state::postgres`).
//! - `steps`: post-data statements (indexes, constraints, foreign keys), each marked done in the
//!   transaction that ran it. A table's index and constraint steps run as soon as its chunks
//!   are all copied, while other tables still copy (`Jobs`); foreign keys and the other
//!   objects after every chunk.
//!
//! The pre-data schema, the control store and the chunk plan are created in ONE target
//! transaction (PostgreSQL's DDL is transactional), so a kill at any instant leaves either
//! nothing or a complete plan to resume.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_connector::{
    CancellationToken, ConnectorError, ErrorKind, Phase, Progress, TableProgress,
};
use cutover_model::TableName;

use crate::blocking::{Client, Transaction};
use crate::endpoint::{without_statement_timeout, PgEndpoint};
use crate::error::{io, map};
use crate::schema::{self, ident, literal, qualified, PgTable, Selection, SourceSchema, Switches};
use crate::stream::{Counting, Throttle};

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub jobs: usize,
    /// Aim for chunks of about this many bytes of table data.
    pub chunk_bytes: u64,
    /// And at most this many rows.
    pub chunk_rows: u64,
    /// Cap on rows per second across all workers.
    pub max_rows_per_sec: Option<NonZeroU32>,
    /// Empty target tables that already exist (and start a finished or foreign copy over).
    pub truncate: bool,
    pub selection: Selection,
    /// Read every chunk in one exported snapshot, so the copy is one consistent instant of the
    /// source (as pg_dump does). Engines without `pg_export_snapshot` need `false`.
    pub consistent_snapshot: bool,
    /// Start change capture first (slot and publication with these names) and copy in the
    /// slot's exported snapshot, so that a later `sync` follows on without copying again.
    pub capture: Option<crate::source::CaptureNames>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            chunk_bytes: 64 << 20,
            chunk_rows: 1_000_000,
            max_rows_per_sec: None,
            truncate: false,
            selection: Selection::default(),
            consistent_snapshot: true,
            capture: None,
        }
    }
}

/// One table of a copy (the connector's bulk-copy report).
pub type TableReport = cutover_connector::BulkTable;

/// What a copy did (the connector's bulk-copy report).
pub type CopyReport = cutover_connector::BulkCopyReport;

struct Chunk {
    table: usize,
    index: i32,
    lower: Option<Vec<String>>,
    upper: Option<Vec<String>>,
}

/// An index or constraint step (phase `index` of `_cutover.steps`) of one table: it may run as
/// soon as every chunk of the tables it builds on is copied.
struct IndexStep {
    id: i32,
    sql: String,
    /// The tables that hold its rows: the table itself, or a partitioned table's partitions.
    tables: Vec<usize>,
    /// Their bytes on the source: the larger, the longer the build, the sooner it starts.
    bytes: u64,
}

/// What the copy's workers do: the chunks not yet copied, and the index steps of the tables
/// whose chunks are all copied. A worker takes a chunk while there is one and an index step
/// when there is none; it waits while a step may still become ready by a chunk another worker
/// is copying. So a table's indexes are built while the other workers still copy, without
/// more than `--jobs` sessions.
///
/// Chunks before steps, not steps as soon as they are ready (as pgcopydb does, with index
/// workers of its own): on 2 cores the copy is CPU-bound, so starting an index early only moves
/// work, and replayed with the durations measured on the row-heavy shape, steps first left the
/// last table's two chunks to one worker after the others' index builds (10.6 s against 9.3 s;
/// BENCHMARKS.md, "Where the row-heavy time went").
struct Jobs {
    state: Mutex<JobState>,
    /// Signalled when a job ends (a step may have become ready, or nothing is left).
    wake: std::sync::Condvar,
}

struct JobState {
    /// Largest first (see [`Jobs::new`]).
    chunks: VecDeque<Chunk>,
    /// Steps whose tables are copied, longest (by bytes) first.
    ready: Vec<IndexStep>,
    /// Steps waiting for chunks.
    waiting: Vec<IndexStep>,
    /// Per table: its chunks not yet copied (queued or being copied).
    chunks_left: Vec<usize>,
    /// Chunks being copied.
    copying: usize,
    /// Steps run to the end (done).
    steps_run: usize,
}

enum Job {
    Chunk(Chunk),
    Step(IndexStep),
}

impl Jobs {
    fn new(schema: &SourceSchema, mut chunks: Vec<Chunk>, steps: Vec<IndexStep>) -> Jobs {
        let mut chunks_left = vec![0; schema.tables.len()];
        for c in &chunks {
            chunks_left[c.table] += 1;
        }
        // Largest tables first, so the long ones start early and the tail is short. (Largest
        // chunks first measured no different on the row-heavy shape: BENCHMARKS.md.)
        chunks.sort_by_key(|c| {
            (
                std::cmp::Reverse(schema.tables[c.table].bytes),
                c.table,
                c.index,
            )
        });
        let mut state = JobState {
            chunks: chunks.into(),
            ready: Vec::new(),
            waiting: steps,
            chunks_left,
            copying: 0,
            steps_run: 0,
        };
        state.release_ready();
        Jobs {
            state: Mutex::new(state),
            wake: std::sync::Condvar::new(),
        }
    }

    /// The next job, waiting while none is left but one may become ready; `None`: nothing is
    /// left for this worker (or `quit` says stop).
    fn next(&self, quit: impl Fn() -> bool) -> Option<Job> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if quit() {
                return None;
            }
            if let Some(c) = st.chunks.pop_front() {
                st.copying += 1;
                return Some(Job::Chunk(c));
            }
            if !st.ready.is_empty() {
                return Some(Job::Step(st.ready.remove(0)));
            }
            if st.copying == 0 || st.waiting.is_empty() {
                return None;
            }
            // A chunk another worker copies may make a step ready. Woken when a job ends; the
            // timeout is for `quit` (a stop is a token, not this condition variable).
            st = self
                .wake
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// A job ended: `Some(table)` a chunk of that table was copied, `None` a step (or a chunk
    /// that failed: its table's steps stay waiting).
    fn finished(&self, chunk_of: Option<usize>, copied: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match chunk_of {
            Some(t) => {
                st.copying -= 1;
                if copied {
                    st.chunks_left[t] -= 1;
                    if st.chunks_left[t] == 0 {
                        st.release_ready();
                    }
                }
            }
            None if copied => st.steps_run += 1,
            None => {}
        }
        drop(st);
        self.wake.notify_all();
    }

    fn into_inner(self) -> JobState {
        self.state.into_inner().unwrap_or_else(|p| p.into_inner())
    }
}

impl JobState {
    /// Moves the steps whose tables are all copied to `ready`.
    fn release_ready(&mut self) {
        let left = &self.chunks_left;
        let (ready, waiting): (Vec<IndexStep>, Vec<IndexStep>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|s| s.tables.iter().all(|&t| left[t] == 0));
        self.waiting = waiting;
        self.ready.extend(ready);
        self.ready
            .sort_by_key(|s| (std::cmp::Reverse(s.bytes), s.id));
    }
}

/// The index steps not yet done that build on a selected table (matched by their statement to
/// [`SourceSchema::primary_keys`] and [`SourceSchema::post_data`]), with the tables that hold
/// their rows. Steps not matched (a source changed since the plan) run after the data, in
/// [`post_data`], as every step did before.
fn index_steps(tgt: &mut Client, schema: &SourceSchema) -> Result<Vec<IndexStep>, ConnectorError> {
    let ctx = "reading the post-data steps";
    let rows = tgt
        .query(
            "SELECT id, sql FROM _cutover.steps WHERE phase = 'index' AND NOT done ORDER BY id",
            &[],
        )
        .map_err(|e| map(ctx, e))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect::<Result<Vec<(i32, String)>, tokio_postgres::Error>>()
        .map_err(|e| map(ctx, e))?;
    Ok(tables_of_steps(schema, rows))
}

/// [`index_steps`]: the steps (id, statement) matched to the tables that hold their rows.
fn tables_of_steps(schema: &SourceSchema, steps: Vec<(i32, String)>) -> Vec<IndexStep> {
    let index_of: std::collections::HashMap<&TableName, usize> = schema
        .tables
        .iter()
        .enumerate()
        .map(|(i, t)| (&t.name, i))
        .collect();
    let mut partitions: Vec<Vec<usize>> = vec![Vec::new(); schema.tables.len()];
    for (i, t) in schema.tables.iter().enumerate() {
        if let Some(&p) = t.partition_of.as_ref().and_then(|(p, _)| index_of.get(p)) {
            partitions[p].push(i);
        }
    }
    let table_of: std::collections::HashMap<&str, usize> = schema
        .primary_keys
        .iter()
        .chain(&schema.post_data)
        .filter_map(|s| Some((s.sql.as_str(), *index_of.get(&s.table)?)))
        .collect();
    let mut matched = Vec::new();
    for (id, sql) in steps {
        let Some(&t) = table_of.get(sql.as_str()) else {
            continue;
        };
        // The table and its partitions, theirs, and so on.
        let mut tables = Vec::new();
        let mut todo = vec![t];
        while let Some(i) = todo.pop() {
            if schema.tables[i].has_data() {
                tables.push(i);
            }
            todo.extend(&partitions[i]);
        }
        let bytes = tables.iter().map(|&i| schema.tables[i].bytes).sum();
        matched.push(IndexStep {
            id,
            sql,
            tables,
            bytes,
        });
    }
    matched
}

pub(crate) fn control_phase(tgt: &mut Client) -> Result<Option<String>, ConnectorError> {
    let ctx = "reading cutover's control store on the target";
    let exists: bool = tgt
        .query_one("SELECT to_regclass('_cutover.migration') IS NOT NULL", &[])
        .map_err(|e| map(ctx, e))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(tgt
        .query_opt("SELECT phase FROM _cutover.migration", &[])
        .map_err(|e| map(ctx, e))?
        .map(|r| r.get(0)))
}

/// Copies the selected tables of `source` to `target`. See the module docs for the guarantees.
pub fn copy(
    source: &PgEndpoint,
    target: &PgEndpoint,
    opts: &CopyOptions,
    progress: &Progress,
    stop: &CancellationToken,
) -> Result<CopyReport, ConnectorError> {
    let started = Instant::now();
    progress.set_phase(Phase::Preparing);
    let mut src = source.connect_control()?;
    let mut tgt = target.connect_control()?;
    let schema = schema::read(&mut src, &opts.selection)?;
    schema.check_foreign_keys(opts.selection.skip_foreign_keys)?;
    if schema.tables.is_empty() {
        return Err(ConnectorError::new(
            ErrorKind::NotFound,
            format!(
                "the source {} has no tables to copy (or --tables/--exclude-tables left none)",
                source.redacted()
            ),
        ));
    }
    for t in schema
        .tables
        .iter()
        .filter(|t| t.has_data() && t.primary_key.is_none())
    {
        tracing::warn!(table = %t.name, "no primary key: copied as one chunk; change capture will need a primary key or REPLICA IDENTITY FULL");
    }

    let mut phase = control_phase(&mut tgt)?;
    if opts.truncate && phase.is_some() {
        tgt.batch_execute("DROP SCHEMA _cutover CASCADE")
            .map_err(|e| map("resetting cutover's control store for --truncate", e))?;
        phase = None;
    }
    let resumed = phase.is_some();
    if phase.is_none() {
        if let Some(names) = &opts.capture {
            // Everything change capture will refuse is refused before the target is touched,
            // so that the fix (e.g. --exclude-tables) is a fresh start, not a resumed copy.
            crate::source::PgSource::open(source, &opts.selection, names)?.check_capture(true)?;
        }
        prepare(&mut src, &mut tgt, source, &schema, opts)?;
        phase = Some("copying".to_owned());
    }

    // Load the plan (fresh or from an interrupted run).
    let mut chunks = VecDeque::new();
    let mut reports: Vec<TableReport> = schema
        .tables
        .iter()
        .map(|t| TableReport {
            name: t.name.clone(),
            rows: 0,
            bytes: 0,
            chunks: 0,
            resumed_chunks: 0,
        })
        .collect();
    let rows = tgt
        .query(
            "SELECT table_schema, table_name, chunk, lower_key, upper_key, done, coalesce(rows, 0)
               FROM _cutover.chunks ORDER BY table_schema, table_name, chunk",
            &[],
        )
        .map_err(|e| map("reading the chunk plan", e))?;
    let table_progress: Vec<Arc<TableProgress>> = schema
        .tables
        .iter()
        .map(|t| {
            Arc::new(TableProgress {
                name: t.name.clone(),
                rows_estimate: t.rows_estimate.into(),
                rows_copied: 0.into(),
                bytes_copied: 0.into(),
                chunks_total: 0.into(),
                chunks_done: 0.into(),
            })
        })
        .collect();
    for r in &rows {
        let name = TableName::new(Some(r.get::<_, &str>(0)), r.get::<_, &str>(1));
        let Some(ti) = schema.tables.iter().position(|t| t.name == name) else {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "the interrupted copy on the target includes table {name}, which is not selected now (or no longer on the source): \
                     run it with the same --tables, or pass --truncate to start over"
                ),
            ));
        };
        reports[ti].chunks += 1;
        table_progress[ti]
            .chunks_total
            .fetch_add(1, Ordering::Relaxed);
        if r.get::<_, bool>(5) {
            reports[ti].resumed_chunks += 1;
            table_progress[ti]
                .chunks_done
                .fetch_add(1, Ordering::Relaxed);
            let done_rows = r.get::<_, i64>(6).max(0) as u64;
            table_progress[ti]
                .rows_copied
                .fetch_add(done_rows, Ordering::Relaxed);
        } else {
            chunks.push_back(Chunk {
                table: ti,
                index: r.get(2),
                lower: r.get(3),
                upper: r.get(4),
            });
        }
    }
    *progress.tables.lock().unwrap_or_else(|p| p.into_inner()) = table_progress.clone();
    let mut steps_run = 0;

    let mut interrupted = false;
    if phase.as_deref() == Some("copying") {
        progress.set_phase(Phase::Copying);
        let steps = index_steps(&mut tgt, &schema)?;
        let jobs = Jobs::new(&schema, chunks.into(), steps);
        // One snapshot for every chunk: the copy is one instant of the source.
        let mut snapshot_holder = None;
        let mut capture_holder = None;
        let snapshot = if let (Some(names), false) = (&opts.capture, resumed) {
            let mut capture = crate::source::PgSource::open(source, &opts.selection, names)?;
            let (holder, at, id) = capture.capture_with_snapshot()?;
            tgt.execute(
                "INSERT INTO _cutover.replication (id, slot, publication, position) VALUES (1, $1, $2, $3)
                 ON CONFLICT (id) DO UPDATE SET slot = EXCLUDED.slot, publication = EXCLUDED.publication, position = EXCLUDED.position",
                &[&names.slot, &names.publication, &at.to_string()],
            )
            .map_err(|e| map("recording where change capture starts", e))?;
            capture_holder = Some(holder);
            Some(id)
        } else if opts.consistent_snapshot && !resumed {
            let mut c = source.connect()?;
            c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .map_err(|e| map("opening the copy's snapshot on the source", e))?;
            let id: String = c
                .query_one("SELECT pg_export_snapshot()", &[])
                .map_err(|e| map("exporting the copy's snapshot (use --no-snapshot on engines without pg_export_snapshot)", e))?
                .get(0);
            snapshot_holder = Some(c);
            Some(id)
        } else {
            None
        };
        let throttle = opts.max_rows_per_sec.map(Throttle::per_second);
        let failed: Mutex<Option<ConnectorError>> = Mutex::new(None);
        let abort = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.max(1) {
                s.spawn(|| {
                    if let Err(e) = worker(
                        source,
                        target,
                        &schema,
                        &jobs,
                        opts.truncate,
                        snapshot.as_deref(),
                        throttle.as_ref(),
                        progress,
                        &table_progress,
                        stop,
                        &abort,
                    ) {
                        abort.store(true, Ordering::SeqCst);
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        // The others may be waiting for a chunk of this one's to finish.
                        jobs.wake.notify_all();
                    }
                });
            }
        });
        drop(snapshot_holder);
        drop(capture_holder);
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
        let jobs = jobs.into_inner();
        steps_run = jobs.steps_run;
        interrupted = stop.is_cancelled() && !jobs.chunks.is_empty();
        if !interrupted {
            tgt.execute(
                "UPDATE _cutover.migration SET phase = 'post-data', updated_at = now()",
                &[],
            )
            .map_err(|e| map("recording the end of the data copy", e))?;
            phase = Some("post-data".to_owned());
        }
    }
    let mut post_data_steps = steps_run;
    if phase.as_deref() == Some("post-data") && !stop.is_cancelled() {
        progress.set_phase(Phase::Indexing);
        post_data_steps += post_data(target, opts, stop)?;
        set_sequences(&mut src, &mut tgt, &schema)?;
        // Triggers and rules were created disabled. A copy that no sync follows is the
        // migration's end: they act on writes from now on. With --capture, sync follows and
        // the switch enables them.
        if opts.capture.is_none() {
            enable_triggers(&mut tgt)?;
        }
        tgt.execute(
            "UPDATE _cutover.migration SET phase = 'copied', updated_at = now()",
            &[],
        )
        .map_err(|e| map("recording the end of the copy", e))?;
    }
    for (r, tp) in reports.iter_mut().zip(&table_progress) {
        r.rows = tp.rows_copied.load(Ordering::Relaxed);
        r.bytes = tp.bytes_copied.load(Ordering::Relaxed);
    }
    progress.set_phase(Phase::Stopped);
    let outside_snapshot = match &opts.capture {
        None => None,
        Some(_) => {
            let r = tgt
                .query_one(
                    "SELECT count(*), coalesce(sum(rows), 0)::bigint FROM _cutover.chunks WHERE NOT in_snapshot",
                    &[],
                )
                .map_err(|e| map("reading the chunk plan", e))?;
            let n = |i: usize| -> Result<u64, ConnectorError> {
                Ok(r.try_get::<_, i64>(i)
                    .map_err(|e| map("reading the chunk plan", e))?
                    .max(0) as u64)
            };
            Some((n(0)?, n(1)?))
        }
    };
    Ok(CopyReport {
        rows: reports.iter().map(|r| r.rows).sum(),
        bytes: reports.iter().map(|r| r.bytes).sum(),
        tables: reports,
        elapsed: started.elapsed(),
        resumed,
        interrupted: interrupted || stop.is_cancelled(),
        not_copied: not_created(&mut tgt)?,
        post_data_steps,
        outside_snapshot,
        capture: opts.capture.as_ref().map(|n| {
            format!(
                "replication slot {} (publication {}) keeps WAL",
                n.slot, n.publication
            )
        }),
    })
}

/// Creates the schema, the control store and the chunk plan in one target transaction.
fn prepare(
    src: &mut Client,
    tgt: &mut Client,
    source: &PgEndpoint,
    schema: &SourceSchema,
    opts: &CopyOptions,
) -> Result<(), ConnectorError> {
    let existing = existing_tables(tgt, schema, opts.truncate, "copy")?;
    let mut tx = tgt
        .transaction()
        .map_err(|e| map("starting the target's schema transaction", e))?;
    create_schema(&mut tx, schema, &existing, opts.truncate)?;
    record_migration(&mut tx, source.redacted(), "copy")?;
    record_steps(&mut tx, schema, schema.primary_keys.iter().map(|s| &s.sql))?;
    for t in schema.tables.iter().filter(|t| t.has_data()) {
        let bounds = plan_chunks(src, t, opts)?;
        let mut lower: Option<Vec<String>> = None;
        for (i, upper) in bounds
            .into_iter()
            .map(Some)
            .chain(std::iter::once(None))
            .enumerate()
        {
            tx.execute(
                "INSERT INTO _cutover.chunks (table_schema, table_name, chunk, lower_key, upper_key) VALUES ($1, $2, $3, $4, $5)",
                &[&t.name.schema, &t.name.name, &(i as i32), &lower, &upper],
            )
            .map_err(|e| map("recording the chunk plan", e))?;
            lower = upper;
        }
    }
    tx.commit()
        .map_err(|e| map("committing the target's schema", e))?;
    Ok(())
}

/// The selected tables the target already has. Refuses (naming them and the fix) unless
/// `truncate`; also refuses early when the target cannot install an extension the source uses.
pub(crate) fn existing_tables<'a>(
    tgt: &mut Client,
    schema: &'a SourceSchema,
    truncate: bool,
    verb: &str,
) -> Result<Vec<&'a PgTable>, ConnectorError> {
    let mut existing = Vec::new();
    for t in &schema.tables {
        let q = qualified(&t.name);
        let found: bool = tgt
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&q])
            .map_err(|e| map("inspecting the target", e))?
            .get(0);
        if found {
            existing.push(t);
        }
    }
    if !existing.is_empty() && !truncate {
        let names: Vec<String> = existing
            .iter()
            .take(5)
            .map(|t| t.name.to_string())
            .collect();
        return Err(ConnectorError::new(
            ErrorKind::Conflict,
            format!(
                "the target already has {} of the tables to {verb} ({}{}) and no migration of cutover's to resume there: \
                 refusing to mix data. Use an empty database, drop those tables, or pass --truncate to empty them and start over",
                existing.len(),
                names.join(", "),
                if existing.len() > 5 { ", …" } else { "" }
            ),
        ));
    }
    for (ext, _) in &schema.extensions {
        let available: bool = tgt
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)",
                &[ext],
            )
            .map_err(|e| map("inspecting the target's extensions", e))?
            .get(0);
        if !available {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!("the source uses extension {ext}, which the target cannot install: install its package on the target server, or leave out the tables that use it"),
            ));
        }
    }
    Ok(existing)
}

/// Empties `existing` and runs the pre-data statements, inside the caller's transaction. With
/// `truncate`, objects that already exist are kept.
pub(crate) fn create_schema(
    tx: &mut Transaction<'_>,
    schema: &SourceSchema,
    existing: &[&PgTable],
    truncate: bool,
) -> Result<(), ConnectorError> {
    // Emptying tables waits for their locks, and creating extensions can take a while: the
    // schema transaction has no statement timeout.
    tx.batch_execute("SET LOCAL search_path = pg_catalog; SET LOCAL statement_timeout = 0")
        .map_err(|e| map("preparing the target", e))?;
    for t in existing {
        tx.batch_execute(&format!("TRUNCATE {}", qualified(&t.name)))
            .map_err(|e| map(format!("emptying target table {} (--truncate)", t.name), e))?;
    }
    for (i, stmt) in schema.pre_data.iter().enumerate() {
        let sp = format!("cutover_pre_{i}");
        tx.batch_execute(&format!("SAVEPOINT {sp}"))
            .map_err(|e| map("preparing the target", e))?;
        match tx.batch_execute(stmt) {
            Ok(()) => {}
            Err(e)
                if truncate
                    && e.code()
                        .is_some_and(|c| matches!(c.code(), "42P07" | "42710" | "42P06")) =>
            {
                tx.batch_execute(&format!("ROLLBACK TO SAVEPOINT {sp}"))
                    .map_err(|e| map("preparing the target", e))?;
            }
            Err(e) => {
                return Err(map(
                    format!("creating the schema on the target, at: {}", shorten(stmt)),
                    e,
                ))
            }
        }
    }
    Ok(())
}

/// Creates the control store and records the migration (`mode` copy or sync).
pub(crate) fn record_migration(
    tx: &mut Transaction<'_>,
    source: &str,
    mode: &str,
) -> Result<(), ConnectorError> {
    crate::state::migrate(tx, "the target")?;
    tx.execute(
        "INSERT INTO _cutover.migration (id, source, phase, mode) VALUES (1, $1, 'copying', $2)",
        &[&source, &mode],
    )
    .map_err(|e| map("recording the migration", e))?;
    Ok(())
}

/// Records the post-data steps: `first` (primary keys when they come after the data), the
/// indexes and constraints, then the foreign keys.
pub(crate) fn record_steps<'a>(
    tx: &mut Transaction<'_>,
    schema: &'a SourceSchema,
    first: impl Iterator<Item = &'a String>,
) -> Result<(), ConnectorError> {
    record_steps_with(tx, schema, first, true)
}

/// [`record_steps`]; `firing`: also the triggers and rules. They are created disabled (the
/// creation and the `DISABLE` in one step), so that they never act on the rows cutover writes,
/// and their `enable` steps (the source's state of each) run when the target becomes the
/// primary ([`enable_triggers`]).
pub(crate) fn record_steps_with<'a>(
    tx: &mut Transaction<'_>,
    schema: &'a SourceSchema,
    first: impl Iterator<Item = &'a String>,
    firing: bool,
) -> Result<(), ConnectorError> {
    let objects = schema.objects.iter().filter(|o| firing || !o.fires);
    let steps = first
        .chain(schema.post_data.iter().map(|s| &s.sql))
        .map(|s| ("index", s.clone(), None))
        .chain(schema.foreign_keys.iter().map(|s| ("fk", s.clone(), None)))
        .chain(objects.clone().map(|o| {
            let sql = match &o.disable {
                Some(d) => format!("{};\n{d}", o.sql.trim_end().trim_end_matches(';')),
                None => o.sql.clone(),
            };
            ("object", sql, Some(o.name.as_str()))
        }));
    let mut n = 0i32;
    for (phase, sql, name) in steps {
        tx.execute(
            "INSERT INTO _cutover.steps (id, phase, sql, name) VALUES ($1, $2, $3, $4)",
            &[&n, &phase, &sql, &name],
        )
        .map_err(|e| map("recording the post-data steps", e))?;
        n += 1;
    }
    let switches: Vec<(&str, Switches)> = objects
        .filter(|o| o.fires)
        .map(|o| {
            let s = Switches {
                disable: o.disable.clone(),
                enable: o.enable.clone(),
            };
            (o.name.as_str(), s)
        })
        .collect();
    record_trigger_steps(tx, n, &switches, false)
}

/// Records, from id `from` on, each trigger's and rule's `enable` step (done: `enabled`, the
/// state it is in now) and `disable` step.
pub(crate) fn record_trigger_steps(
    tx: &mut Transaction<'_>,
    from: i32,
    switches: &[(&str, Switches)],
    enabled: bool,
) -> Result<(), ConnectorError> {
    let mut n = from;
    for (name, Switches { disable, enable }) in switches {
        for (phase, sql, done) in [("disable", disable, true), ("enable", enable, enabled)] {
            let Some(sql) = sql else { continue };
            tx.execute(
                "INSERT INTO _cutover.steps (id, phase, sql, name, done) VALUES ($1, $2, $3, $4, $5)",
                &[&n, &phase, &sql, name, &done],
            )
            .map_err(|e| map("recording how to enable the triggers and rules", e))?;
            n += 1;
        }
    }
    Ok(())
}

/// The database becomes the primary: its triggers and rules take the state they have on the
/// source (the `enable` steps not yet done), in one transaction. Returns how many.
pub(crate) fn enable_triggers(c: &mut Client) -> Result<usize, ConnectorError> {
    trigger_steps(
        c,
        "enabling the triggers and rules on the new primary",
        "SELECT sql FROM _cutover.steps WHERE phase = 'enable' AND NOT done ORDER BY id",
        true,
    )
}

/// The database follows another from now on: its triggers and rules are disabled (so they do
/// not act on replicated rows) and their `enable` steps marked to run again when it becomes the
/// primary. Returns how many.
pub(crate) fn disable_triggers(c: &mut Client) -> Result<usize, ConnectorError> {
    trigger_steps(
        c,
        "disabling the triggers and rules on the database that now follows",
        "SELECT sql FROM _cutover.steps WHERE phase = 'disable' ORDER BY id",
        false,
    )
}

/// Runs the statements `select` lists in one transaction, and marks the `enable` steps
/// `enabled` (done or to do).
fn trigger_steps(
    c: &mut Client,
    ctx: &str,
    select: &str,
    enabled: bool,
) -> Result<usize, ConnectorError> {
    let mut tx = c.transaction().map_err(|e| map(ctx, e))?;
    let sql: Vec<String> = tx
        .query(select, &[])
        .map_err(|e| map(ctx, e))?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(|e| map(ctx, e))?;
    if sql.is_empty() {
        return Ok(0);
    }
    tx.batch_execute(&sql.join(";\n"))
        .map_err(|e| map(ctx, e))?;
    tx.execute(
        "UPDATE _cutover.steps SET done = $1 WHERE phase = 'enable'",
        &[&enabled],
    )
    .map_err(|e| map(ctx, e))?;
    tx.commit().map_err(|e| map(ctx, e))?;
    Ok(sql.len())
}

fn shorten(sql: &str) -> String {
    let s: String = sql.chars().take(160).collect();
    if s.len() < sql.len() {
        format!("{s}…")
    } else {
        s
    }
}

/// Bytes gathered into one CopyData message to the target.
const COPY_BUFFER: usize = 1 << 20;

/// Up to this many rows, chunk boundaries are exact (one ordered pass on the server); above,
/// they come from a sample of pages. The exact pass numbers every key in order: on a 2 M row
/// table it took 0.6 s before any row was copied (1.2 s of an 8.7 s copy of three such tables),
/// where a sample of pages took about 10 ms (chunk sizes from a sample are not equal; how far
/// apart they come out was not measured).
const EXACT_PLAN_ROWS: u64 = 100_000;

/// Chunk boundaries from a sample of the key's actual distribution (TABLESAMPLE), as the text
/// form of each key column. Empty: the table is one chunk.
fn plan_chunks(
    src: &mut Client,
    t: &PgTable,
    opts: &CopyOptions,
) -> Result<Vec<Vec<String>>, ConnectorError> {
    if t.primary_key.is_none() {
        return Ok(Vec::new());
    }
    let rows = row_count(src, t)?;
    let by_bytes = t.bytes.div_ceil(opts.chunk_bytes.max(1));
    let by_rows = rows.div_ceil(opts.chunk_rows.max(1));
    let mut chunks = by_bytes.max(by_rows).max(1);
    if scattered(t) {
        // Key ranges of a key that does not follow the heap (random UUIDs) are read with a
        // sequential scan each; more chunks than workers would read the table more often.
        chunks = chunks.min(opts.jobs.max(1) as u64);
    }
    chunk_bounds(src, t, rows, chunks)
}

/// Heap pages up to which a table never analyzed has its rows counted; above, they are
/// estimated from a sample of about this many pages.
const COUNTED_PAGES: i64 = 1_000;

/// The planner's row estimate; for a table never analyzed, a count of its rows, or above
/// [`COUNTED_PAGES`] an estimate from a sample of its pages. Counting every row of the
/// row-heavy shape's three tables (4 M rows, 51,000 pages) took 0.2-0.3 s, one after the
/// other, before any row moved; samples of 1,000 pages took 32 ms together and came within
/// 2.1 % of the counts (BENCHMARKS.md). The plan only needs the number to size chunks.
pub(crate) fn row_count(src: &mut Client, t: &PgTable) -> Result<u64, ConnectorError> {
    if t.rows_estimate > 0 || t.bytes == 0 {
        return Ok(t.rows_estimate);
    }
    let ctx = || format!("counting the rows of {}", t.name);
    let table = qualified(&t.name);
    let pages: i64 = src
        .query_one(
            "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::int",
            &[&table],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| map(ctx(), e))?;
    let sql = if pages <= COUNTED_PAGES {
        format!("SELECT count(*)::float8 FROM ONLY {table}")
    } else {
        let pct = COUNTED_PAGES as f64 / pages as f64 * 100.0;
        format!(
            "SELECT count(*) / {pct}::float8 * 100 FROM ONLY {table} TABLESAMPLE SYSTEM ({pct})"
        )
    };
    let n: f64 = without_statement_timeout(src, |c| {
        c.query_one(&sql, &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| map(ctx(), e))
    })?;
    Ok(n.round().max(0.0) as u64)
}

/// Boundaries that split `t` (about `rows` rows) into `chunks` key ranges from the key's actual
/// distribution, as the text form of each key column. Empty: the table is one chunk.
pub(crate) fn chunk_bounds(
    src: &mut Client,
    t: &PgTable,
    rows: u64,
    chunks: u64,
) -> Result<Vec<Vec<String>>, ConnectorError> {
    let Some((_, key)) = &t.primary_key else {
        return Ok(Vec::new());
    };
    let ctx = || format!("planning chunks of table {}", t.name);
    if chunks <= 1 || rows == 0 {
        return Ok(Vec::new());
    }
    let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
    // Aliased: `ORDER BY "id"` would otherwise bind to the text output column named "id" and
    // sort lexicographically ('10' < '2'), making overlapping chunks.
    let texts: Vec<String> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c}::text AS cutover_k{i}"))
        .collect();
    let (texts, cols) = (texts.join(", "), cols.join(", "));
    let table = qualified(&t.name);
    let to_keys = |rows: Vec<tokio_postgres::Row>| -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| (0..key.len()).map(|i| r.get::<_, String>(i)).collect())
            .collect()
    };
    if rows <= EXACT_PLAN_ROWS {
        // Exact: the server numbers the keys in order and sends back only the boundaries.
        let step = rows.div_ceil(chunks).max(1) as i64;
        let sql = format!(
            "SELECT {texts} FROM (SELECT {cols}, row_number() OVER (ORDER BY {cols}) AS cutover_rn FROM ONLY {table}) s \
              WHERE cutover_rn % $1 = 1 AND cutover_rn > 1 ORDER BY {cols}"
        );
        let bounds =
            without_statement_timeout(src, |c| c.query(&sql, &[&step]).map_err(|e| map(ctx(), e)))?;
        return Ok(to_keys(bounds));
    }
    // Large tables: sample pages, falling back to sampling rows if too few keys came back.
    let sample_rows = (chunks * 1_000).min(200_000);
    let pct = (sample_rows as f64 / rows as f64 * 100.0 * 1.5).clamp(0.0001, 100.0);
    let mut keys = Vec::new();
    for method in ["SYSTEM", "BERNOULLI"] {
        let sql = format!(
            "SELECT {texts} FROM ONLY {table} TABLESAMPLE {method} ({pct}) ORDER BY {cols}"
        );
        keys = to_keys(without_statement_timeout(src, |c| {
            c.query(&sql, &[]).map_err(|e| map(ctx(), e))
        })?);
        if keys.len() as u64 >= chunks * 8 {
            break;
        }
    }
    let mut bounds: Vec<Vec<String>> = Vec::new();
    for i in 1..chunks {
        let at = (i as usize * keys.len()) / chunks as usize;
        if let Some(k) = keys.get(at) {
            if bounds.last() != Some(k) && Some(k) != keys.first() {
                bounds.push(k.clone());
            }
        }
    }
    Ok(bounds)
}

/// Whether the table's key order is unrelated to where rows sit on disk, so that a key range is
/// best read by a sequential scan (an index range scan would read the heap at random).
fn scattered(t: &PgTable) -> bool {
    t.key_correlation.is_some_and(|c| c.abs() < 0.5)
}

/// `("a", "b") >= ('1'::bigint, 'x'::text) AND ("a", "b") < (…)`.
pub(crate) fn range_predicate(
    t: &PgTable,
    lower: Option<&[String]>,
    upper: Option<&[String]>,
) -> String {
    let Some((_, key)) = &t.primary_key else {
        return "true".to_owned();
    };
    let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let types: Vec<&str> = key
        .iter()
        .map(|k| {
            t.columns
                .iter()
                .find(|c| &c.name == k)
                .map_or("text", |c| c.type_sql.as_str())
        })
        .collect();
    let tuple = |vals: &[String]| -> String {
        let v: Vec<String> = vals
            .iter()
            .zip(&types)
            .map(|(v, ty)| format!("{}::{ty}", literal(v)))
            .collect();
        format!("({})", v.join(", "))
    };
    let lhs = format!("({})", cols.join(", "));
    let mut conds = Vec::new();
    if let Some(l) = lower {
        conds.push(format!("{lhs} >= {}", tuple(l)));
    }
    if let Some(u) = upper {
        conds.push(format!("{lhs} < {}", tuple(u)));
    }
    if conds.is_empty() {
        "true".to_owned()
    } else {
        conds.join(" AND ")
    }
}

fn describe_range(lower: Option<&[String]>, upper: Option<&[String]>) -> String {
    let f = |k: Option<&[String]>, none: &str| {
        k.map_or(none.to_owned(), |k| format!("({})", k.join(", ")))
    };
    format!("keys {} to {}", f(lower, "start"), f(upper, "end"))
}

#[allow(clippy::too_many_arguments)]
fn worker(
    source: &PgEndpoint,
    target: &PgEndpoint,
    schema: &SourceSchema,
    jobs: &Jobs,
    truncate: bool,
    snapshot: Option<&str>,
    throttle: Option<&Throttle>,
    progress: &Progress,
    table_progress: &[Arc<TableProgress>],
    stop: &CancellationToken,
    abort: &AtomicBool,
) -> Result<(), ConnectorError> {
    // The two COPY streams are driven by this thread itself (see `runtime::LocalIo`): no
    // hand-off to a runtime worker per socket event. Declared first, so it outlives them.
    let _io = cutover_connector::runtime::local_io().map_err(|e| {
        ConnectorError::new(
            ErrorKind::Database,
            format!("starting a copy worker's I/O: {e}"),
        )
    })?;
    // COPY streams of whole chunks, index builds: no statement timeout.
    let mut src = source.connect_bulk()?;
    let mut tgt = target.connect_bulk()?;
    while let Some(job) = jobs.next(|| stop.is_cancelled() || abort.load(Ordering::SeqCst)) {
        let started = Instant::now();
        match job {
            Job::Chunk(chunk) => {
                let t = &schema.tables[chunk.table];
                let tp = &table_progress[chunk.table];
                let copied = copy_chunk(
                    &mut src, &mut tgt, t, &chunk, snapshot, throttle, progress, tp,
                );
                jobs.finished(Some(chunk.table), copied.is_ok());
                let (rows, bytes) = copied?;
                tracing::debug!(table = %t.name, chunk = chunk.index, rows, bytes, seconds = started.elapsed().as_secs_f64(), "chunk copied");
            }
            Job::Step(step) => {
                let built = run_step(&mut tgt, step.id, &step.sql, truncate);
                jobs.finished(None, built.is_ok());
                built?;
                tracing::debug!(step = %shorten(&step.sql), seconds = started.elapsed().as_secs_f64(), "built while copying");
            }
        }
    }
    Ok(())
}

/// Copies one chunk: its rows and its done mark in one target transaction. Returns its rows and
/// bytes.
#[allow(clippy::too_many_arguments)]
fn copy_chunk(
    src: &mut Client,
    tgt: &mut Client,
    t: &PgTable,
    chunk: &Chunk,
    snapshot: Option<&str>,
    throttle: Option<&Throttle>,
    progress: &Progress,
    tp: &TableProgress,
) -> Result<(u64, u64), ConnectorError> {
    let range = describe_range(chunk.lower.as_deref(), chunk.upper.as_deref());
    let ctx = || format!("copying table {} chunk {} ({range})", t.name, chunk.index);
    let cols: Vec<String> = t.copied_columns().map(|c| ident(&c.name)).collect();
    let cols = cols.join(", ");
    let format = if t.binary_copy() { "binary" } else { "text" };
    let out_sql = format!(
        "COPY (SELECT {cols} FROM ONLY {} WHERE {}) TO STDOUT (FORMAT {format})",
        qualified(&t.name),
        range_predicate(t, chunk.lower.as_deref(), chunk.upper.as_deref())
    );
    let in_sql = format!(
        "COPY {} ({cols}) FROM STDIN (FORMAT {format})",
        qualified(&t.name)
    );
    let mut stx = src.transaction().map_err(|e| map(ctx(), e))?;
    stx.batch_execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .map_err(|e| map(ctx(), e))?;
    if let Some(id) = snapshot {
        stx.batch_execute(&format!("SET TRANSACTION SNAPSHOT {}", literal(id)))
            .map_err(|e| map(format!("{}: joining the copy's snapshot", ctx()), e))?;
    }
    if scattered(t) && (chunk.lower.is_some() || chunk.upper.is_some()) {
        stx.batch_execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
            .map_err(|e| map(ctx(), e))?;
    }
    let mut ttx = tgt.transaction().map_err(|e| map(ctx(), e))?;
    let reader = stx.copy_out(&out_sql).map_err(|e| map(ctx(), e))?;
    let mut counting = Counting::new(
        reader,
        format == "binary",
        throttle,
        &tp.rows_copied,
        &tp.bytes_copied,
    );
    let writer = ttx.copy_in(&in_sql).map_err(|e| map(ctx(), e))?;
    // The driver sends a CopyData message per 4 KB written; gather 1 MB per message.
    let mut writer = std::io::BufWriter::with_capacity(COPY_BUFFER, writer);
    let copied = std::io::copy(&mut counting, &mut writer);
    let (rows, bytes) = (counting.rows, counting.bytes);
    let finish = copied
        .and_then(|_| writer.into_inner().map_err(|e| e.into_error()))
        .map_err(|e| io(ctx(), e))
        .and_then(|w| w.finish().map_err(|e| map(ctx(), e)));
    if let Err(e) = finish {
        // The rows of this chunk were not committed: take them off the live counters.
        tp.rows_copied.fetch_sub(rows, Ordering::Relaxed);
        tp.bytes_copied.fetch_sub(bytes, Ordering::Relaxed);
        return Err(e.context("nothing of this chunk was committed; chunks already copied are kept, run the same command again after fixing"));
    }
    drop(counting);
    ttx.execute(
        "UPDATE _cutover.chunks SET done = true, rows = $4, bytes = $5, done_at = now(), in_snapshot = $6
          WHERE table_schema = $1 AND table_name = $2 AND chunk = $3",
        &[
            &t.name.schema,
            &t.name.name,
            &chunk.index,
            &(rows as i64),
            &(bytes as i64),
            &snapshot.is_some(),
        ],
    )
    .map_err(|e| map(ctx(), e))?;
    ttx.commit().map_err(|e| map(ctx(), e))?;
    stx.commit().map_err(|e| map(ctx(), e))?;
    tp.chunks_done.fetch_add(1, Ordering::Relaxed);
    progress.rows_copied.fetch_add(rows, Ordering::Relaxed);
    progress.bytes_copied.fetch_add(bytes, Ordering::Relaxed);
    Ok((rows, bytes))
}

/// Runs one post-data step and marks it done, in one transaction (a step interrupted half way
/// is rolled back and runs again). With `truncate`, a step whose object is already there (kept
/// by --truncate) is marked done.
fn run_step(c: &mut Client, id: i32, sql: &str, truncate: bool) -> Result<(), ConnectorError> {
    let ctx = || format!("building on the target: {}", shorten(sql));
    let mut tx = c.transaction().map_err(|e| map(ctx(), e))?;
    tx.batch_execute(
        "SET LOCAL search_path = pg_catalog; SET LOCAL maintenance_work_mem = '256MB'",
    )
    .map_err(|e| map(ctx(), e))?;
    match tx.batch_execute(sql) {
        Ok(()) => {}
        // Already there (kept by --truncate): fine.
        Err(e)
            if truncate
                && e.code()
                    .is_some_and(|c| matches!(c.code(), "42P07" | "42710" | "42P16")) =>
        {
            drop(tx);
            tx = c.transaction().map_err(|e| map(ctx(), e))?;
        }
        Err(e) => return Err(map(ctx(), e)),
    }
    tx.execute(
        "UPDATE _cutover.steps SET done = true WHERE id = $1",
        &[&id],
    )
    .map_err(|e| map(ctx(), e))?;
    tx.commit().map_err(|e| map(ctx(), e))
}

/// Runs the post-data steps not yet done: indexes and constraints in parallel, then foreign
/// keys. Returns how many ran.
pub(crate) fn post_data(
    target: &PgEndpoint,
    opts: &CopyOptions,
    stop: &CancellationToken,
) -> Result<usize, ConnectorError> {
    let mut tgt = target.connect_control()?;
    let mut ran = 0;
    for phase in ["index", "fk"] {
        let steps: Vec<(i32, String)> = tgt
            .query(
                "SELECT id, sql FROM _cutover.steps WHERE phase = $1 AND NOT done ORDER BY id",
                &[&phase],
            )
            .map_err(|e| map("reading the post-data steps", e))?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        ran += steps.len();
        let queue = Mutex::new(VecDeque::from(steps));
        let failed: Mutex<Option<ConnectorError>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..opts.jobs.max(1) {
                s.spawn(|| {
                    let run = || -> Result<(), ConnectorError> {
                        // Index builds may rightly take hours: no statement timeout.
                        let mut c = target.connect_bulk()?;
                        loop {
                            if stop.is_cancelled()
                                || failed.lock().map(|f| f.is_some()).unwrap_or(true)
                            {
                                return Ok(());
                            }
                            let Some((id, sql)) =
                                queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front()
                            else {
                                return Ok(());
                            };
                            run_step(&mut c, id, &sql, opts.truncate)?;
                        }
                    };
                    if let Err(e) = run() {
                        failed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = failed.into_inner().unwrap_or_else(|p| p.into_inner()) {
            return Err(e);
        }
    }
    ran += create_objects(&mut tgt)?;
    Ok(ran)
}

/// The objects' steps (views, functions, …), one at a time: a statement that fails because
/// something it needs is not there yet is tried again after the others, until a round creates
/// nothing new; what still fails is left undone (a later run tries again) and named in a
/// warning and by [`not_created`].
fn create_objects(tgt: &mut Client) -> Result<usize, ConnectorError> {
    let ctx = "creating views, functions, triggers and rules on the target";
    tgt.batch_execute("SET search_path = pg_catalog")
        .map_err(|e| map(ctx, e))?;
    let mut pending: Vec<(i32, String, String)> = tgt
        .query(
            "SELECT id, sql, coalesce(name, sql) FROM _cutover.steps WHERE phase = 'object' AND NOT done ORDER BY id",
            &[],
        )
        .map_err(|e| map(ctx, e))?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(|e| map(ctx, e))?;
    let total = pending.len();
    loop {
        let before = pending.len();
        let mut left = Vec::new();
        for (id, sql, name) in pending {
            let mut tx = tgt.transaction().map_err(|e| map(ctx, e))?;
            let created = match tx.batch_execute(&sql) {
                Ok(()) => true,
                // Already there (a resumed run, --truncate): done.
                Err(e)
                    if e.code()
                        .is_some_and(|c| matches!(c.code(), "42710" | "42P07" | "42723")) =>
                {
                    drop(tx);
                    tx = tgt.transaction().map_err(|e| map(ctx, e))?;
                    true
                }
                Err(e) => {
                    tracing::debug!(object = %name, error = %e, "not created yet; tried again after the others");
                    false
                }
            };
            if created {
                tx.execute(
                    "UPDATE _cutover.steps SET done = true WHERE id = $1",
                    &[&id],
                )
                .map_err(|e| map(ctx, e))?;
                tx.commit().map_err(|e| map(ctx, e))?;
            } else {
                drop(tx);
                left.push((id, sql, name));
            }
        }
        pending = left;
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    for (_, sql, name) in &pending {
        // Once more, for the error of the last try.
        let error = tgt
            .transaction()
            .and_then(|mut tx| tx.batch_execute(sql))
            .err()
            .map(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            })
            .unwrap_or_default();
        tracing::warn!(object = %name, %error, "not created on the target; create it by hand (cutover switch refuses while it is missing, unless --allow-missing-objects)");
    }
    Ok(total - pending.len())
}

/// The objects whose creation is still not done on the target (after [`post_data`]).
pub(crate) fn not_created(tgt: &mut Client) -> Result<Vec<String>, ConnectorError> {
    Ok(tgt
        .query(
            "SELECT coalesce(name, left(sql, 60)) FROM _cutover.steps WHERE phase = 'object' AND NOT done ORDER BY id",
            &[],
        )
        .map_err(|e| map("reading the post-data steps", e))?
        .iter()
        .filter_map(|r| r.try_get(0).ok())
        .collect())
}

/// Sets every sequence on the target to the source's value (plain, serial and identity).
pub(crate) fn set_sequences(
    src: &mut Client,
    tgt: &mut Client,
    schema: &SourceSchema,
) -> Result<(), ConnectorError> {
    for seq in &schema.sequences {
        let ctx = || format!("setting sequence {seq} on the target");
        let row = src
            .query_one(&format!("SELECT last_value, is_called FROM {seq}"), &[])
            .map_err(|e| map(ctx(), e))?;
        let (value, called): (i64, bool) = (row.get(0), row.get(1));
        tgt.query_one(
            "SELECT setval($1::text::regclass, $2, $3)",
            &[&seq, &value, &called],
        )
        .map_err(|e| map(ctx(), e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{PgColumn, TableStep};

    fn table() -> PgTable {
        PgTable::plain(
            TableName::new(Some("s"), "t"),
            vec![
                PgColumn::plain("A", "bigint", 20),
                PgColumn::plain("b", "text", 25),
            ],
            &["A", "b"],
        )
    }

    fn step(table: &TableName, sql: &str) -> TableStep {
        TableStep {
            table: table.clone(),
            sql: sql.into(),
        }
    }

    fn chunk(table: usize, index: i32) -> Chunk {
        Chunk {
            table,
            index,
            lower: None,
            upper: None,
        }
    }

    /// Takes the next job without waiting (the test is one thread): `None` when the next call
    /// would wait or nothing is left.
    fn take(jobs: &Jobs) -> Option<Job> {
        let st = jobs.state.lock().unwrap();
        let would_wait = st.chunks.is_empty() && st.ready.is_empty();
        drop(st);
        if would_wait {
            return None;
        }
        jobs.next(|| false)
    }

    #[test]
    fn a_tables_index_steps_become_ready_once_its_chunks_and_its_partitions_are_copied() {
        let name = |n: &str| TableName::new(Some("s"), n);
        let mut tables = vec![
            table(),
            PgTable::plain(name("p"), vec![], &["a"]),
            PgTable::plain(name("p1"), vec![], &["a"]),
            PgTable::plain(name("p2"), vec![], &["a"]),
        ];
        tables[0].bytes = 100;
        tables[1].kind = 'p';
        for (i, bytes) in [(2, 30), (3, 50)] {
            tables[i].partition_of = Some((name("p"), "FOR VALUES …".into()));
            tables[i].bytes = bytes;
        }
        let schema = SourceSchema {
            primary_keys: vec![step(&tables[0].name, "pk t"), step(&tables[1].name, "pk p")],
            post_data: vec![step(&tables[2].name, "index p1")],
            tables,
            ..SourceSchema::default()
        };
        // Step 3 is not one of this schema's (the source changed): left to post_data.
        let steps = tables_of_steps(
            &schema,
            [(0, "pk t"), (1, "pk p"), (2, "index p1"), (3, "other")]
                .map(|(id, sql)| (id, sql.to_owned()))
                .into(),
        );
        let deps: Vec<(i32, Vec<usize>, u64)> = steps
            .iter()
            .map(|s| (s.id, s.tables.clone(), s.bytes))
            .collect();
        assert_eq!(
            deps,
            vec![(0, vec![0], 100), (1, vec![3, 2], 80), (2, vec![2], 30)]
        );

        let jobs = Jobs::new(
            &schema,
            vec![chunk(2, 0), chunk(0, 0), chunk(3, 0), chunk(0, 1)],
            steps,
        );
        // Largest table first.
        let order: Vec<(usize, i32)> = jobs
            .state
            .lock()
            .unwrap()
            .chunks
            .iter()
            .map(|c| (c.table, c.index))
            .collect();
        assert_eq!(order, vec![(0, 0), (0, 1), (3, 0), (2, 0)]);
        let mut copied = Vec::new();
        let mut built = Vec::new();
        while let Some(job) = take(&jobs) {
            match job {
                Job::Chunk(c) => {
                    copied.push((c.table, c.index));
                    jobs.finished(Some(c.table), true);
                }
                Job::Step(s) => {
                    built.push((s.id, copied.len()));
                    jobs.finished(None, true);
                }
            }
        }
        // Each step after the chunks it needs: t's key after its 2 chunks, p1's index after
        // p1's chunk (the 4th), p's key after both partitions.
        assert_eq!(copied.len(), 4);
        let after = |id: i32| built.iter().find(|b| b.0 == id).map(|b| b.1);
        assert!(after(0) >= Some(2), "{built:?}");
        assert_eq!(after(1), Some(4), "{built:?}");
        assert_eq!(after(2), Some(4), "{built:?}");
        let st = jobs.into_inner();
        assert_eq!(st.steps_run, 3);
        assert!(st.waiting.is_empty() && st.ready.is_empty());
    }

    #[test]
    fn a_failed_chunk_keeps_its_tables_steps_waiting() {
        let mut t = table();
        t.bytes = 10;
        let schema = SourceSchema {
            primary_keys: vec![step(&t.name, "pk t")],
            tables: vec![t],
            ..SourceSchema::default()
        };
        let steps = tables_of_steps(&schema, vec![(0, "pk t".to_owned())]);
        let jobs = Jobs::new(&schema, vec![chunk(0, 0)], steps);
        let Some(Job::Chunk(c)) = take(&jobs) else {
            panic!("a chunk first")
        };
        jobs.finished(Some(c.table), false);
        // Nothing is being copied any more: no wait, nothing to do.
        assert!(jobs.next(|| false).is_none());
        assert_eq!(jobs.into_inner().waiting.len(), 1);
    }

    #[test]
    fn range_predicates_cast_quoted_literals() {
        let t = table();
        let l = vec!["1".to_owned(), "it's".to_owned()];
        let u = vec!["9".to_owned(), "z".to_owned()];
        assert_eq!(
            range_predicate(&t, Some(&l), Some(&u)),
            "(\"A\", \"b\") >= ('1'::bigint, 'it''s'::text) AND (\"A\", \"b\") < ('9'::bigint, 'z'::text)"
        );
        assert_eq!(range_predicate(&t, None, None), "true");
    }
}
