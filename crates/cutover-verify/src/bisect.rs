//! Checksum bisection (as data-diff does it), then the live re-check and the repair.
//!
//! ```text
//! per table: source.split(all, B)  → B-1 key bounds from the key's distribution
//!            S physical slices × both sides: checksum(all, bounds, slice) → B digests each,
//!            summed per bucket                      (one sequential read per side)
//! per bucket whose digests differ (decide):
//!     small  → canonical_rows of both sides → diff_rows → differences
//!     larger → source.split(range, fanout) → checksum(range, bounds) both sides → recurse
//! ```
//! Workers (`jobs`) each hold one connection per side and run the two sides of a step at the
//! same time. Everything that decides (`plan_table`, `decide`, `diff_rows`, `plan_repair`) is
//! pure and tested without a database.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cutover_connector::{
    key_text, CanonicalRow, ConnectorError, ErrorKind, KeyRange, Mismatch, PositionOrderExt,
    RangeChecksum, RangeDigest, Slice,
};
use cutover_model::{Key, Position, TableSchema, Value};

use crate::{cmp_keys, ColumnDiff, Difference, DifferenceKind, TableDiff, VerifyReport};

/// How a verify runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Parallel workers, each with one connection to each side.
    pub jobs: usize,
    /// About this many rows per bucket of the first pass.
    pub bucket_rows: u64,
    /// A differing range is split into this many parts.
    pub fanout: usize,
    /// A differing range with at most this many rows on each side is compared row by row.
    pub leaf_rows: u64,
    /// About this many rows per physical slice of the first pass (spreads a large table over
    /// the workers).
    pub slice_rows: u64,
    /// Cap on rows hashed per second, per side (spares a busy source).
    pub max_rows_per_sec: Option<u64>,
    /// Differences kept per table (all are counted).
    pub keep: usize,
    /// Re-check differences once the sync applier has passed the source position at which
    /// they were seen, waiting at most this long; report only those that persist.
    pub live: Option<Duration>,
    /// Rewrite the differing target rows from the source and re-check them.
    pub repair: bool,
    /// Rows per repair transaction.
    pub repair_batch: usize,
    /// Store every reported difference in the target's control store.
    pub record: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: std::thread::available_parallelism().map_or(2, |n| n.get()),
            bucket_rows: 2_000,
            fanout: 16,
            leaf_rows: 256,
            slice_rows: 500_000,
            max_rows_per_sec: None,
            keep: 100_000,
            live: None,
            repair: false,
            repair_batch: 500,
            record: true,
        }
    }
}

/// Live counters for a progress display.
#[derive(Debug, Default)]
pub struct VerifyProgress {
    /// Rows the source side has hashed so far (rows are hashed again as ranges are split).
    pub rows_hashed: AtomicU64,
    /// Estimated rows of the source's selected tables.
    pub rows_estimate: AtomicU64,
    /// First-pass slices done and planned.
    pub slices_done: AtomicU64,
    pub slices_total: AtomicU64,
    /// Differing ranges being narrowed down.
    pub ranges_open: AtomicU64,
    pub differences: AtomicU64,
    /// What is happening now, when it is not hashing (waiting for the applier, repairing).
    pub stage: Mutex<String>,
}

impl VerifyProgress {
    fn stage(&self, s: impl Into<String>) {
        *self.stage.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }
}

/// The first pass over a table: how many key buckets and physical slices.
pub fn plan_table(estimated_rows: u64, has_key: bool, opts: &Options) -> (usize, u32) {
    let buckets = if has_key {
        (estimated_rows / opts.bucket_rows.max(1)).clamp(1, 8_192) as usize
    } else {
        1
    };
    let mut slices = estimated_rows.div_ceil(opts.slice_rows.max(1)).max(1);
    if estimated_rows >= 2 * opts.bucket_rows.max(1) * opts.jobs as u64 {
        slices = slices.max(opts.jobs as u64);
    }
    (buckets, slices.min(1_024) as u32)
}

/// What to do with a range once both sides' digests are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Equal,
    /// Compare the rows themselves.
    Rows,
    /// Split the range and compare the parts' digests.
    Split,
}

pub fn decide(source: RangeDigest, target: RangeDigest, has_key: bool, opts: &Options) -> Decision {
    if source == target {
        Decision::Equal
    } else if !has_key || source.rows.max(target.rows) <= opts.leaf_rows {
        Decision::Rows
    } else {
        Decision::Split
    }
}

/// A key as canonical text, for matching rows across engines (a value without one, such as
/// JSON nested too deep, by its debug form: it still matches itself).
fn canonical_key(key: &Key) -> Vec<Option<String>> {
    key.iter()
        .map(|v| {
            cutover_connector::canonical::value_text(v).unwrap_or_else(|_| Some(format!("{v:?}")))
        })
        .collect()
}

/// The differences between the canonical rows of one range on each side. With a primary key,
/// rows are matched by key; without, both sides are compared as multisets of whole rows.
pub fn diff_rows(
    table: &TableSchema,
    source: Vec<CanonicalRow>,
    target: Vec<CanonicalRow>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    if !table.has_primary_key() {
        let mut count: HashMap<Vec<Option<String>>, i64> = HashMap::new();
        for r in source {
            *count.entry(r.values).or_default() += 1;
        }
        for r in target {
            *count.entry(r.values).or_default() -= 1;
        }
        let mut rows: Vec<(Vec<Option<String>>, i64)> =
            count.into_iter().filter(|(_, n)| *n != 0).collect();
        rows.sort();
        for (values, n) in rows {
            let key: Key = values
                .iter()
                .map(|v| v.clone().map_or(Value::Null, Value::Text))
                .collect();
            let kind = if n > 0 {
                DifferenceKind::Missing
            } else {
                DifferenceKind::Extra
            };
            for _ in 0..n.unsigned_abs() {
                out.push(Difference {
                    key: key.clone(),
                    kind: kind.clone(),
                });
            }
        }
        return out;
    }
    // Matched by the keys' canonical text: two engines may hand the same key over as
    // different values (PostgreSQL reads a UUID key back as text, SQLite as 16 bytes it types).
    let mut target: HashMap<Vec<Option<String>>, CanonicalRow> = target
        .into_iter()
        .map(|r| (canonical_key(&r.key), r))
        .collect();
    for r in source {
        match target.remove(&canonical_key(&r.key)).map(|t| t.values) {
            None => out.push(Difference {
                key: r.key,
                kind: DifferenceKind::Missing,
            }),
            Some(t) => {
                let columns: Vec<ColumnDiff> = table
                    .columns
                    .iter()
                    .zip(r.values.into_iter().zip(t))
                    .filter(|(_, (a, b))| a != b)
                    .map(|(c, (a, b))| ColumnDiff {
                        column: c.name.clone(),
                        source: a,
                        target: b,
                    })
                    .collect();
                if !columns.is_empty() {
                    out.push(Difference {
                        key: r.key,
                        kind: DifferenceKind::Different { columns },
                    });
                }
            }
        }
    }
    out.extend(target.into_values().map(|t| Difference {
        key: t.key,
        kind: DifferenceKind::Extra,
    }));
    out.sort_by(|a, b| cmp_keys(&a.key, &b.key));
    out
}

/// What a repair writes: rows to copy from the source (missing or different on the target)
/// and keys to delete from the target (extra).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RepairPlan {
    pub upsert: Vec<Key>,
    pub delete: Vec<Key>,
}

pub fn plan_repair(differences: &[Difference]) -> RepairPlan {
    let mut plan = RepairPlan::default();
    for d in differences {
        match d.kind {
            DifferenceKind::Missing | DifferenceKind::Different { .. } => {
                plan.upsert.push(d.key.clone())
            }
            DifferenceKind::Extra => plan.delete.push(d.key.clone()),
        }
    }
    plan
}

/// What `--live` did.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveSummary {
    /// Differences seen on the first pass.
    pub candidates: u64,
    /// Of those, how many were gone once the applier had passed `waited_for`.
    pub resolved: u64,
    pub waited_for: Option<Position>,
}

/// What `--repair` did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RepairSummary {
    pub upserted: u64,
    pub deleted: u64,
    /// Differences left after the repair, re-checked row by row (0: the target is now equal).
    pub still_different: u64,
    /// Tables left alone because they have no primary key.
    pub skipped_tables: Vec<String>,
}

enum Task {
    /// First pass: one physical slice of a table, every bucket.
    Slice { table: usize, slice: Slice },
    /// A range whose digests differ.
    Range {
        table: usize,
        range: KeyRange,
        source: RangeDigest,
        target: RangeDigest,
    },
}

struct TableState {
    bounds: Vec<Key>,
    digests: Vec<(RangeDigest, RangeDigest)>,
    slices_left: u32,
    diff: TableDiff,
    /// Per kept difference, the source position when it was seen (for `--live`).
    seen_at: Vec<Option<Position>>,
}

struct Queue {
    tasks: VecDeque<Task>,
    busy: usize,
}

/// Keeps the hash rate under a cap: callers report rows done and sleep as told.
struct Throttle {
    per_sec: u64,
    started: Instant,
    rows: AtomicU64,
}

impl Throttle {
    fn account(&self, rows: u64) {
        let total = self.rows.fetch_add(rows, Ordering::Relaxed) + rows;
        let due = Duration::from_secs_f64(total as f64 / self.per_sec as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
}

/// Runs `a` and `b` at the same time (one on a helper thread) and returns both results.
fn both<A: Send, B: Send>(a: impl FnOnce() -> A + Send, b: impl FnOnce() -> B + Send) -> (A, B) {
    std::thread::scope(|s| {
        let hb = s.spawn(b);
        let ra = a();
        let rb = match hb.join() {
            Ok(r) => r,
            Err(p) => std::panic::resume_unwind(p),
        };
        (ra, rb)
    })
}

/// Verifies `tables` (the source's schemas) between the sides `open_source` and `open_target`
/// connect to. Differences are data in the report; an error means a side could not be read.
pub fn verify<S, T>(
    open_source: &(dyn Fn() -> Result<S, ConnectorError> + Sync),
    open_target: &(dyn Fn() -> Result<T, ConnectorError> + Sync),
    tables: &[TableSchema],
    opts: &Options,
    progress: &VerifyProgress,
) -> Result<VerifyReport, ConnectorError>
where
    S: RangeChecksum + Send,
    T: RangeChecksum + Send,
{
    let (src, tgt) = both(open_source, open_target);
    let (mut src, mut tgt) = (src?, tgt?);
    if opts.live.is_some() && tgt.applied_position()?.is_none() {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            "--live needs a running sync: the target has no applied position in _cutover.replication; \
             start `cutover sync` first, or verify without --live",
        ));
    }

    // Plan every table's first pass.
    progress.stage("planning");
    let mut states = Vec::with_capacity(tables.len());
    let mut tasks = VecDeque::new();
    for (ti, t) in tables.iter().enumerate() {
        let rows = src.estimate_rows(t)?;
        progress.rows_estimate.fetch_add(rows, Ordering::Relaxed);
        let (buckets, slices) = plan_table(rows, t.has_primary_key(), opts);
        let bounds = if buckets > 1 {
            src.split(t, &KeyRange::all(), buckets)?
        } else {
            Vec::new()
        };
        let note = (!t.has_primary_key()).then(|| {
            "no primary key: compared as a multiset of whole rows (a changed row shows as one missing and one extra)"
                .to_owned()
        });
        let key_columns = if t.has_primary_key() {
            t.key_columns().map(|c| c.name.clone()).collect()
        } else {
            t.columns.iter().map(|c| c.name.clone()).collect()
        };
        states.push(TableState {
            digests: vec![Default::default(); bounds.len() + 1],
            bounds,
            slices_left: slices,
            diff: TableDiff {
                note,
                ..TableDiff::new(t.name.clone(), key_columns)
            },
            seen_at: Vec::new(),
        });
        for i in 0..slices {
            tasks.push_back(Task::Slice {
                table: ti,
                slice: Slice {
                    index: i,
                    of: slices,
                },
            });
        }
        progress
            .slices_total
            .fetch_add(u64::from(slices), Ordering::Relaxed);
    }
    progress.stage("");
    let states = Mutex::new(states);
    let queue = Mutex::new(Queue { tasks, busy: 0 });
    let wake = Condvar::new();
    let failed: Mutex<Option<ConnectorError>> = Mutex::new(None);
    let abort = AtomicBool::new(false);
    let throttle = opts.max_rows_per_sec.map(|per_sec| Throttle {
        per_sec: per_sec.max(1),
        started: Instant::now(),
        rows: AtomicU64::new(0),
    });
    let ctx = Ctx {
        tables,
        opts,
        progress,
        states: &states,
        throttle: throttle.as_ref(),
    };
    std::thread::scope(|s| {
        for _ in 0..opts.jobs.max(1) {
            let (ctx, queue, wake, failed, abort) = (&ctx, &queue, &wake, &failed, &abort);
            s.spawn(move || {
                let run = || -> Result<(), ConnectorError> {
                    let (a, b) = both(open_source, open_target);
                    let (mut src, mut tgt) = (a?, b?);
                    loop {
                        let task = {
                            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                            loop {
                                if abort.load(Ordering::SeqCst) {
                                    return Ok(());
                                }
                                if let Some(t) = q.tasks.pop_front() {
                                    q.busy += 1;
                                    break t;
                                }
                                if q.busy == 0 {
                                    return Ok(());
                                }
                                q = wake.wait(q).unwrap_or_else(|p| p.into_inner());
                            }
                        };
                        let more = ctx.run(task, &mut src, &mut tgt);
                        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                        q.busy -= 1;
                        match more {
                            Ok(more) => q.tasks.extend(more),
                            Err(e) => {
                                abort.store(true, Ordering::SeqCst);
                                wake.notify_all();
                                return Err(e);
                            }
                        }
                        wake.notify_all();
                    }
                };
                if let Err(e) = run() {
                    abort.store(true, Ordering::SeqCst);
                    wake.notify_all();
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
    let states = states.into_inner().unwrap_or_else(|p| p.into_inner());
    let (src, tgt) = (&mut src, &mut tgt);
    let mut report = VerifyReport::default();
    let mut seen: Vec<Vec<Option<Position>>> = Vec::new();
    for st in states {
        let mut diff = st.diff;
        let mut order: Vec<usize> = (0..diff.differences.len()).collect();
        order.sort_by(|&a, &b| cmp_keys(&diff.differences[a].key, &diff.differences[b].key));
        diff.differences = order.iter().map(|&i| diff.differences[i].clone()).collect();
        seen.push(order.iter().map(|&i| st.seen_at[i].clone()).collect());
        report.tables.push(diff);
    }

    if let Some(timeout) = opts.live {
        live_recheck(src, tgt, tables, &mut report, &seen, timeout, progress)?;
    }
    if opts.record {
        progress.stage("recording mismatches");
        tgt.record_mismatches(&mismatches(&report))?;
    }
    if opts.repair {
        repair(src, tgt, tables, &mut report, opts, progress)?;
    }
    progress.stage("");
    Ok(report)
}

struct Ctx<'a> {
    tables: &'a [TableSchema],
    opts: &'a Options,
    progress: &'a VerifyProgress,
    states: &'a Mutex<Vec<TableState>>,
    throttle: Option<&'a Throttle>,
}

impl Ctx<'_> {
    fn run<S: RangeChecksum + Send, T: RangeChecksum + Send>(
        &self,
        task: Task,
        src: &mut S,
        tgt: &mut T,
    ) -> Result<Vec<Task>, ConnectorError> {
        match task {
            Task::Slice { table, slice } => self.slice(table, slice, src, tgt),
            Task::Range {
                table,
                range,
                source,
                target,
            } => {
                let r = self.range(table, range, source, target, src, tgt);
                self.progress.ranges_open.fetch_sub(1, Ordering::Relaxed);
                r
            }
        }
    }

    fn account(&self, source_rows: u64) {
        self.progress
            .rows_hashed
            .fetch_add(source_rows, Ordering::Relaxed);
        if let Some(t) = self.throttle {
            t.account(source_rows);
        }
    }

    fn slice<S: RangeChecksum + Send, T: RangeChecksum + Send>(
        &self,
        ti: usize,
        slice: Slice,
        src: &mut S,
        tgt: &mut T,
    ) -> Result<Vec<Task>, ConnectorError> {
        let t = &self.tables[ti];
        let bounds = self.states.lock().unwrap_or_else(|p| p.into_inner())[ti]
            .bounds
            .clone();
        let all = KeyRange::all();
        let (a, b) = both(
            || src.checksum(t, &all, &bounds, slice),
            || tgt.checksum(t, &all, &bounds, slice),
        );
        let (a, b) = (a?, b?);
        self.account(a.iter().map(|d| d.rows).sum());
        self.progress.slices_done.fetch_add(1, Ordering::Relaxed);
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let st = &mut states[ti];
        for (acc, (x, y)) in st.digests.iter_mut().zip(a.into_iter().zip(b)) {
            *acc = (acc.0 + x, acc.1 + y);
        }
        st.slices_left -= 1;
        if st.slices_left > 0 {
            return Ok(Vec::new());
        }
        st.diff.source_rows = st.digests.iter().map(|d| d.0.rows).sum();
        st.diff.target_rows = st.digests.iter().map(|d| d.1.rows).sum();
        let ranges = bucket_ranges(&all, &st.bounds);
        let tasks: Vec<Task> = ranges
            .into_iter()
            .zip(&st.digests)
            .filter(|(_, (x, y))| x != y)
            .map(|(range, (x, y))| Task::Range {
                table: ti,
                range,
                source: *x,
                target: *y,
            })
            .collect();
        self.progress
            .ranges_open
            .fetch_add(tasks.len() as u64, Ordering::Relaxed);
        Ok(tasks)
    }

    fn range<S: RangeChecksum + Send, T: RangeChecksum + Send>(
        &self,
        ti: usize,
        range: KeyRange,
        source: RangeDigest,
        target: RangeDigest,
        src: &mut S,
        tgt: &mut T,
    ) -> Result<Vec<Task>, ConnectorError> {
        let t = &self.tables[ti];
        let mut decision = decide(source, target, t.has_primary_key(), self.opts);
        let mut bounds = Vec::new();
        if decision == Decision::Split {
            bounds = if source.rows >= target.rows {
                src.split(t, &range, self.opts.fanout)?
            } else {
                tgt.split(t, &range, self.opts.fanout)?
            };
            if bounds.is_empty() {
                decision = Decision::Rows;
            }
        }
        match decision {
            Decision::Equal => Ok(Vec::new()),
            Decision::Rows => {
                let (a, b) = both(
                    || src.canonical_rows(t, &range),
                    || tgt.canonical_rows(t, &range),
                );
                let seen_at = if self.opts.live.is_some() {
                    src.current_position()?
                } else {
                    None
                };
                let found = diff_rows(t, a?, b?);
                self.progress
                    .differences
                    .fetch_add(found.len() as u64, Ordering::Relaxed);
                let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
                let st = &mut states[ti];
                for d in found {
                    match d.kind {
                        DifferenceKind::Missing => st.diff.missing += 1,
                        DifferenceKind::Extra => st.diff.extra += 1,
                        DifferenceKind::Different { .. } => st.diff.different += 1,
                    }
                    if st.diff.differences.len() < self.opts.keep {
                        st.diff.differences.push(d);
                        st.seen_at.push(seen_at.clone());
                    }
                }
                Ok(Vec::new())
            }
            Decision::Split => {
                let (a, b) = both(
                    || src.checksum(t, &range, &bounds, Slice::WHOLE),
                    || tgt.checksum(t, &range, &bounds, Slice::WHOLE),
                );
                let (a, b) = (a?, b?);
                self.account(a.iter().map(|d| d.rows).sum());
                let tasks: Vec<Task> = bucket_ranges(&range, &bounds)
                    .into_iter()
                    .zip(a.into_iter().zip(b))
                    .filter(|(_, (x, y))| x != y)
                    .map(|(range, (x, y))| Task::Range {
                        table: ti,
                        range,
                        source: x,
                        target: y,
                    })
                    .collect();
                self.progress
                    .ranges_open
                    .fetch_add(tasks.len() as u64, Ordering::Relaxed);
                Ok(tasks)
            }
        }
    }
}

/// The `bounds.len() + 1` buckets that `bounds` cut `range` into.
pub fn bucket_ranges(range: &KeyRange, bounds: &[Key]) -> Vec<KeyRange> {
    let mut out = Vec::with_capacity(bounds.len() + 1);
    let mut start = range.start.clone();
    for b in bounds {
        out.push(KeyRange {
            start: start.take(),
            end: Some(b.clone()),
        });
        start = Some(b.clone());
    }
    out.push(KeyRange {
        start,
        end: range.end.clone(),
    });
    out
}

/// Re-reads the rows with the keys of `differences` on both sides and compares them again.
fn recheck<S: RangeChecksum, T: RangeChecksum>(
    src: &mut S,
    tgt: &mut T,
    table: &TableSchema,
    differences: &[Difference],
) -> Result<Vec<Difference>, ConnectorError> {
    let mut out = Vec::new();
    for batch in differences.chunks(500) {
        let keys: Vec<Key> = batch.iter().map(|d| d.key.clone()).collect();
        let a = src.canonical_rows_by_key(table, &keys)?;
        let b = tgt.canonical_rows_by_key(table, &keys)?;
        out.extend(diff_rows(table, a, b));
    }
    Ok(out)
}

fn recount(diff: &mut TableDiff, differences: Vec<Difference>) {
    diff.missing = 0;
    diff.extra = 0;
    diff.different = 0;
    for d in &differences {
        match d.kind {
            DifferenceKind::Missing => diff.missing += 1,
            DifferenceKind::Extra => diff.extra += 1,
            DifferenceKind::Different { .. } => diff.different += 1,
        }
    }
    diff.differences = differences;
}

fn live_recheck<S: RangeChecksum, T: RangeChecksum>(
    src: &mut S,
    tgt: &mut T,
    tables: &[TableSchema],
    report: &mut VerifyReport,
    seen: &[Vec<Option<Position>>],
    timeout: Duration,
    progress: &VerifyProgress,
) -> Result<(), ConnectorError> {
    let candidates = report.differences();
    // Positions are the source engine's to compare; without an order, --live cannot wait.
    let order = src.positions().or_else(|| tgt.positions());
    let upto = order.and_then(|o| {
        seen.iter()
            .flatten()
            .flatten()
            .cloned()
            .reduce(|a, b| o.later(a, b))
    });
    let mut summary = LiveSummary {
        candidates,
        resolved: 0,
        waited_for: upto.clone(),
    };
    if candidates == 0 {
        report.live = Some(summary);
        return Ok(());
    }
    if let Some(upto) = upto {
        let started = Instant::now();
        loop {
            let applied = tgt.applied_position()?;
            let reached =
                order.is_some_and(|o| applied.as_ref().is_some_and(|a| o.reached(a, &upto)));
            if reached {
                break;
            }
            if started.elapsed() >= timeout {
                return Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    format!(
                        "--live: the sync applier has not reached source position {upto} within {}s (it is at {}): \
                         is `cutover sync` running and keeping up? Run verify again, or verify without --live",
                        timeout.as_secs(),
                        applied.map_or_else(|| "none".to_owned(), |p| p.to_string())
                    ),
                ));
            }
            progress.stage(format!(
                "re-checking {candidates} differences once the applier reaches {upto} (now at {}, {}s)",
                applied.map_or_else(|| "none".to_owned(), |p| p.to_string()),
                started.elapsed().as_secs()
            ));
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    progress.stage(format!("re-checking {candidates} differences"));
    for (diff, t) in report.tables.iter_mut().zip(tables) {
        if diff.differences.is_empty() {
            continue;
        }
        let still = recheck(src, tgt, t, &diff.differences)?;
        recount(diff, still);
    }
    summary.resolved = candidates - report.differences().min(candidates);
    report.live = Some(summary);
    Ok(())
}

fn repair<S: RangeChecksum, T: RangeChecksum>(
    src: &mut S,
    tgt: &mut T,
    tables: &[TableSchema],
    report: &mut VerifyReport,
    opts: &Options,
    progress: &VerifyProgress,
) -> Result<(), ConnectorError> {
    let mut summary = RepairSummary::default();
    for (diff, t) in report.tables.iter().zip(tables) {
        if diff.differences.is_empty() {
            continue;
        }
        if !t.has_primary_key() {
            summary.skipped_tables.push(t.name.to_string());
            summary.still_different += diff.missing + diff.extra + diff.different;
            continue;
        }
        progress.stage(format!("repairing table {}", t.name));
        let plan = plan_repair(&diff.differences);
        for keys in plan.upsert.chunks(opts.repair_batch.max(1)) {
            let rows = src.exact_rows(t, keys)?;
            // A key gone from the source since it was found: delete it on the target too.
            let found = rows
                .iter()
                .map(|r| key_texts(t, &t.key_of(r)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut gone: Vec<Key> = Vec::new();
            for k in keys {
                if !found.contains(&key_texts(t, k)?) {
                    gone.push(k.clone());
                }
            }
            tgt.repair(t, &rows, &gone)?;
            summary.upserted += rows.len() as u64;
            summary.deleted += gone.len() as u64;
        }
        for keys in plan.delete.chunks(opts.repair_batch.max(1)) {
            tgt.repair(t, &[], keys)?;
            summary.deleted += keys.len() as u64;
        }
        let still = recheck(src, tgt, t, &diff.differences)?;
        summary.still_different += still.len() as u64;
    }
    report.repair = Some(summary);
    Ok(())
}

/// A key's canonical texts: keys compare by them (a key read back as exact text is the same
/// key).
fn key_texts(t: &TableSchema, key: &Key) -> Result<Vec<Option<String>>, ConnectorError> {
    key.iter()
        .zip(t.key_columns())
        .map(|(v, c)| {
            cutover_connector::canonical::value_text(v).map_err(|e| e.at(&t.name, &c.name, key))
        })
        .collect()
}

/// The report's differences as the control store records them.
pub fn mismatches(report: &VerifyReport) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for t in &report.tables {
        for d in &t.differences {
            let (columns, detail) = match &d.kind {
                DifferenceKind::Different { columns } => (
                    columns.iter().map(|c| c.column.clone()).collect(),
                    columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} → {}",
                                c.column,
                                short(c.source.as_deref()),
                                short(c.target.as_deref())
                            )
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
                _ => (Vec::new(), String::new()),
            };
            out.push(Mismatch {
                table: t.table.clone(),
                key: key_text(&d.key),
                kind: d.kind.name(),
                columns,
                detail,
            });
        }
    }
    out
}

/// A value for a report: NULL, or the text, cut after 60 characters with its length and the
/// start of its MD5 so that two long values can still be told apart.
pub fn short(v: Option<&str>) -> String {
    match v {
        None => "NULL".to_owned(),
        Some(s) if s.chars().count() > 60 => format!(
            "{}… ({} bytes, hash {:016x})",
            s.chars().take(60).collect::<String>(),
            s.len(),
            cutover_connector::canonical::row_hash(s) as u64
        ),
        Some(s) => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType, TableName};

    fn table(pk: bool) -> TableSchema {
        let col = |n: &str| Column {
            name: n.to_owned(),
            ty: ColumnType::Text { max_len: None },
            declared_type: "text".to_owned(),
            nullable: true,
            default: None,
        };
        TableSchema {
            name: TableName::bare("t"),
            columns: vec![col("id"), col("a"), col("b")],
            primary_key: if pk { vec![0] } else { vec![] },
            indexes: vec![],
        }
    }

    fn row(id: i64, a: Option<&str>, b: Option<&str>) -> CanonicalRow {
        CanonicalRow {
            key: vec![Value::Int(id)],
            values: vec![
                Some(id.to_string()),
                a.map(str::to_owned),
                b.map(str::to_owned),
            ],
        }
    }

    #[test]
    fn equal_digests_end_a_range_and_small_ones_go_to_rows() {
        let o = Options::default();
        let d = |rows, sum| RangeDigest { rows, sum };
        assert_eq!(decide(d(10, 1), d(10, 1), true, &o), Decision::Equal);
        assert_eq!(decide(d(10, 1), d(10, 2), true, &o), Decision::Rows);
        assert_eq!(decide(d(10_000, 1), d(9_999, 2), true, &o), Decision::Split);
        assert_eq!(decide(d(10_000, 1), d(9_999, 2), false, &o), Decision::Rows);
    }

    #[test]
    fn first_pass_plans_buckets_and_slices_from_the_size() {
        let o = Options {
            jobs: 2,
            ..Options::default()
        };
        assert_eq!(plan_table(0, true, &o), (1, 1));
        assert_eq!(plan_table(3_000_000, true, &o), (1_500, 6));
        assert_eq!(plan_table(10_000, true, &o), (5, 2));
        assert_eq!(plan_table(3_000_000, false, &o).0, 1);
        assert_eq!(plan_table(u64::MAX / 2, true, &o), (8_192, 1_024));
    }

    #[test]
    fn buckets_cover_the_range_exactly_once() {
        let k = |i: i64| vec![Value::Int(i)];
        let r = KeyRange {
            start: Some(k(0)),
            end: None,
        };
        let b = bucket_ranges(&r, &[k(5), k(9)]);
        assert_eq!(b.len(), 3);
        assert_eq!(
            (b[0].start.clone(), b[0].end.clone()),
            (Some(k(0)), Some(k(5)))
        );
        assert_eq!(
            (b[1].start.clone(), b[1].end.clone()),
            (Some(k(5)), Some(k(9)))
        );
        assert_eq!((b[2].start.clone(), b[2].end.clone()), (Some(k(9)), None));
        assert_eq!(bucket_ranges(&KeyRange::all(), &[]), vec![KeyRange::all()]);
    }

    #[test]
    fn rows_diff_by_key_with_kinds_and_columns() {
        let t = table(true);
        let src = vec![
            row(1, Some("x"), None),
            row(2, Some("y"), Some("1.5")),
            row(3, Some("z"), None),
        ];
        let tgt = vec![
            row(2, Some("y"), Some("2")),
            row(3, Some("z"), None),
            row(4, None, None),
            row(1, Some("x"), Some("")),
        ];
        let d = diff_rows(&t, src, tgt);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].key, vec![Value::Int(1)]);
        assert_eq!(
            d[0].kind,
            DifferenceKind::Different {
                columns: vec![ColumnDiff {
                    column: "b".into(),
                    source: None,
                    target: Some(String::new())
                }]
            }
        );
        assert_eq!(d[1].key, vec![Value::Int(2)]);
        assert_eq!(d[2].kind, DifferenceKind::Extra);
        let missing = diff_rows(&t, vec![row(9, None, None)], vec![]);
        assert_eq!(missing[0].kind, DifferenceKind::Missing);
    }

    #[test]
    fn tables_without_a_key_compare_as_multisets() {
        let t = table(false);
        let r = |a: &str| CanonicalRow {
            key: vec![],
            values: vec![Some("1".into()), Some(a.into()), None],
        };
        let d = diff_rows(
            &t,
            vec![r("a"), r("a"), r("b")],
            vec![r("b"), r("a"), r("c")],
        );
        let kinds: Vec<&str> = d.iter().map(|d| d.kind.name()).collect();
        assert_eq!(kinds, ["missing", "extra"]);
        assert!(diff_rows(&t, vec![r("a"), r("b")], vec![r("b"), r("a")]).is_empty());
    }

    #[test]
    fn repairs_copy_missing_and_different_rows_and_delete_extras() {
        let d = |i: i64, kind: DifferenceKind| Difference {
            key: vec![Value::Int(i)],
            kind,
        };
        let plan = plan_repair(&[
            d(1, DifferenceKind::Missing),
            d(2, DifferenceKind::Extra),
            d(3, DifferenceKind::Different { columns: vec![] }),
        ]);
        assert_eq!(plan.upsert, vec![vec![Value::Int(1)], vec![Value::Int(3)]]);
        assert_eq!(plan.delete, vec![vec![Value::Int(2)]]);
    }

    #[test]
    fn long_values_are_cut_with_length_and_hash() {
        let long = "x".repeat(100);
        let s = short(Some(&long));
        assert!(s.starts_with(&"x".repeat(60)));
        assert!(s.contains("100 bytes, hash "), "{s}");
        assert_eq!(short(None), "NULL");
    }
}
