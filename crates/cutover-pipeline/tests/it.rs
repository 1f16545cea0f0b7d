//! SQLite → SQLite sync under a concurrent writer: copy, capture and apply must end with both
//! sides equal, row by row, whatever the writer did to rows while their chunks were copied.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cutover_connector::{
    ChunkRows, ConnectorError, KeyRange, Source, SourceFactory, TableEstimate, TableReader,
    TargetFactory,
};
use cutover_model::{Position, TableSchema, Transaction};
use cutover_pipeline::{run, Control, Progress, SyncOptions};
use cutover_sqlite::SqliteEndpoint;
use rusqlite::Connection;

#[path = "it/cross_engine.rs"]
mod cross_engine;

const ROWS: i64 = 20_000;

/// The real SQLite connector, with chunk reads that
///
/// * return `delay` after taking their snapshot: while a chunk is "on the wire" the applier
///   moves past the chunk's position, which is the race the watermark rule exists for. Makes
///   that race happen on every run instead of by luck;
/// * wait at a [`Gate`], if there is one.
struct SlowChunks {
    endpoint: SqliteEndpoint,
    delay: Duration,
    gate: Option<Arc<Gate>>,
}

impl SlowChunks {
    fn new(endpoint: SqliteEndpoint) -> SlowChunks {
        SlowChunks {
            endpoint,
            delay: Duration::from_millis(20),
            gate: None,
        }
    }
}

struct SlowSource {
    inner: Box<dyn Source + Send>,
    delay: Duration,
    gate: Option<Arc<Gate>>,
}

/// Lets chunk reads through until `rows` rows were read, then holds every further read until
/// opened: a run stopped while it holds them is certainly stopped in the middle of its copy.
struct Gate {
    rows: u64,
    read: AtomicU64,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Gate {
    fn after_rows(rows: u64) -> Gate {
        Gate {
            rows,
            read: AtomicU64::new(0),
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    fn pass(&self) {
        if self.read.load(Ordering::SeqCst) >= self.rows {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }
}

impl SourceFactory for SlowChunks {
    fn source(&self) -> Result<Box<dyn Source + Send>, ConnectorError> {
        Ok(Box::new(SlowSource {
            inner: self.endpoint.source()?,
            delay: self.delay,
            gate: self.gate.clone(),
        }))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        SourceFactory::reader(&self.endpoint)
    }
    fn describe(&self) -> String {
        SourceFactory::describe(&self.endpoint)
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

impl Source for SlowSource {
    fn positions(&self) -> &'static dyn cutover_connector::PositionOrder {
        self.inner.positions()
    }
    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        self.inner.tables()
    }
    fn estimate(&mut self, t: &TableSchema) -> Result<TableEstimate, ConnectorError> {
        self.inner.estimate(t)
    }
    fn plan_chunks(&mut self, t: &TableSchema, n: u64) -> Result<Vec<KeyRange>, ConnectorError> {
        self.inner.plan_chunks(t, n)
    }
    fn read_chunk(&mut self, t: &TableSchema, r: &KeyRange) -> Result<ChunkRows, ConnectorError> {
        if let Some(gate) = &self.gate {
            gate.pass();
        }
        let rows = self.inner.read_chunk(t, r)?;
        if let Some(gate) = &self.gate {
            gate.read
                .fetch_add(rows.rows.len() as u64, Ordering::SeqCst);
        }
        std::thread::sleep(self.delay);
        Ok(rows)
    }
    fn start_capture(&mut self, t: &[TableSchema]) -> Result<Position, ConnectorError> {
        self.inner.start_capture(t)
    }
    fn current_position(&mut self) -> Result<Position, ConnectorError> {
        self.inner.current_position()
    }
    fn read_changes(
        &mut self,
        t: &[TableSchema],
        after: Position,
        max: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        self.inner.read_changes(t, after, max)
    }
    fn release(&mut self, upto: Position) -> Result<(), ConnectorError> {
        self.inner.release(upto)
    }
    fn stop_capture(&mut self, t: &[TableSchema]) -> Result<(), ConnectorError> {
        self.inner.stop_capture(t)
    }
}

fn create_source(path: &Path, rows: i64) {
    // These tests start no server; they get the test binary's time limit here.
    cutover_testkit::time_limit();
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, score REAL, body BLOB);
         CREATE TABLE pairs (a INTEGER, b TEXT, v INTEGER, PRIMARY KEY (a, b));
         CREATE TABLE \"Odd Name\" (\"key\" TEXT PRIMARY KEY, \"select\" INTEGER DEFAULT 7);
         CREATE INDEX items_name ON items (name);",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..rows {
        tx.execute(
            "INSERT INTO items (id, name, score, body) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                i,
                format!("item-{i}"),
                i as f64 / 3.0,
                vec![(i % 251) as u8; (i % 700) as usize]
            ],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO pairs (a, b, v) VALUES (?1, ?2, ?3)",
            rusqlite::params![i % 50, format!("k{i}"), i],
        )
        .unwrap();
        if i % 3 == 0 {
            tx.execute(
                "INSERT INTO \"Odd Name\" (\"key\", \"select\") VALUES (?1, ?2)",
                rusqlite::params![format!("é{i}\"'"), i],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Inserts, updates (incl. key changes) and deletes random rows until told to stop.
fn write_load(path: &Path, stop: &AtomicBool, rows: i64, writes: &AtomicU64) {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut next_id = rows;
    while !stop.load(Ordering::Relaxed) {
        let tx = c.unchecked_transaction().unwrap();
        for _ in 0..rng.usize(1..20) {
            let id = rng.i64(0..next_id);
            match rng.u8(0..6) {
                0 => {
                    tx.execute(
                        "INSERT INTO items (id, name, score, body) VALUES (?1, 'new', ?2, x'00ff')",
                        rusqlite::params![next_id, rng.f64()],
                    )
                    .unwrap();
                    next_id += 1;
                }
                1 => {
                    tx.execute(
                        "UPDATE items SET name = name || '+', score = ?2, body = NULL WHERE id = ?1",
                        rusqlite::params![id, rng.f64()],
                    )
                    .unwrap();
                }
                2 => {
                    tx.execute("DELETE FROM items WHERE id = ?1", [id]).unwrap();
                }
                3 => {
                    // Moves a row to a new key.
                    tx.execute(
                        "UPDATE OR IGNORE items SET id = ?2 WHERE id = ?1",
                        rusqlite::params![id, next_id],
                    )
                    .unwrap();
                    next_id += 1;
                }
                4 => {
                    tx.execute(
                        "UPDATE pairs SET v = v + 1 WHERE a = ?1 AND b = ?2",
                        rusqlite::params![id % 50, format!("k{id}")],
                    )
                    .unwrap();
                }
                _ => {
                    tx.execute(
                        "DELETE FROM pairs WHERE a = ?1 AND b = ?2",
                        rusqlite::params![id % 50, format!("k{id}")],
                    )
                    .unwrap();
                    tx.execute(
                        "INSERT OR REPLACE INTO \"Odd Name\" (\"key\", \"select\") VALUES (?1, ?2)",
                        rusqlite::params![format!("w{}", id % 97), id],
                    )
                    .unwrap();
                }
            }
            writes.fetch_add(1, Ordering::Relaxed);
        }
        tx.commit().unwrap();
        std::thread::sleep(Duration::from_micros(50));
    }
}

type Dump = Vec<(String, Vec<Vec<rusqlite::types::Value>>)>;

/// Every user table's rows, ordered by their primary key, read with plain SQL (not with the
/// code under test).
fn dump(path: &Path) -> Dump {
    let c = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for (table, order) in [
        ("items", "id"),
        ("pairs", "a, b"),
        ("\"Odd Name\"", "\"key\""),
    ] {
        let mut stmt = c
            .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        out.push((table.to_owned(), rows));
    }
    out
}

/// Chunks of a few hundred to a couple of thousand rows: reading one takes long enough that the
/// applier moves past the chunk's snapshot while it is read, which is the race the watermark
/// rule exists for.
/// Panics with the first difference between the two databases, if any.
fn assert_same(src: &Path, dst: &Path) {
    let (a, b) = (dump(src), dump(dst));
    for ((table, ra), (_, rb)) in a.iter().zip(&b) {
        if let Some(i) = (0..ra.len().max(rb.len())).find(|&i| ra.get(i) != rb.get(i)) {
            panic!(
                "table {table} differs at row {i} (source has {} rows, target {}):\n  source: {:?}\n  target: {:?}",
                ra.len(),
                rb.len(),
                ra.get(i),
                rb.get(i)
            );
        }
    }
}

/// Polls `ready` every 2 ms for at most 2 minutes; panics naming `what`.
#[track_caller]
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !ready() {
        assert!(Instant::now() < deadline, "no {what} within 2 minutes");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn small_chunks() -> SyncOptions {
    SyncOptions {
        jobs: 2,
        chunk_bytes: 256 << 10,
        min_chunk_rows: 300,
        max_chunk_rows: 2_000,
        batch_changes: 200,
        stop_when_caught_up: true,
        ..SyncOptions::default()
    }
}

#[test]
fn sync_under_concurrent_writes_ends_equal_row_by_row() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.db"), dir.path().join("dst.db"));
    create_source(&src, ROWS);
    let (source, target) = (
        SlowChunks::new(SqliteEndpoint::new(&src)),
        SqliteEndpoint::new(&dst),
    );

    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let progress = Progress::default();
    let control = Control::default();
    // Follow changes for a while after the copy finished, then drain.
    let opts = SyncOptions {
        stop_when_caught_up: false,
        ..small_chunks()
    };
    std::thread::scope(|s| {
        // Before the threads: a panic below stops both, and the scope can join them.
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let _stop_sync = cutover_testkit::on_drop(|| control.stop());
        let writer = s.spawn(|| write_load(&src, &stop, ROWS, &writes));
        wait_until("200 writes", || {
            assert!(!writer.is_finished(), "the writer ended early");
            writes.load(Ordering::Relaxed) >= 200
        });
        let sync = s.spawn(|| run(&source, &target, &opts, &control, &progress));
        wait_until("end of the copy", || {
            progress.phase() == cutover_pipeline::Phase::Replicating || sync.is_finished()
        });
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let mut src_conn = source.source().unwrap();
        control.drain_to(src_conn.current_position().unwrap());
        let report = sync.join().unwrap().unwrap();
        assert!(!report.interrupted);
        assert!(report.rows_copied > 0);
        assert!(
            report.changes_applied > 0,
            "the writer's changes were replicated"
        );
    });
    assert!(
        progress
            .table_snapshot()
            .iter()
            .all(|t| t.chunks_total.load(Ordering::Relaxed) > 1),
        "tables were split into several chunks"
    );
    assert_same(&src, &dst);
    assert!(
        writes.load(Ordering::Relaxed) > 2_000,
        "the writer wrote during the copy"
    );
    assert!(
        progress.rows_superseded.load(Ordering::Relaxed) > 0,
        "some copied rows changed while their chunk was read (the race under test happened)"
    );

    // verify agrees, and the secondary index was built after the copy.
    let mut a = SourceFactory::reader(&source.endpoint).unwrap();
    let mut b = TargetFactory::reader(&target).unwrap();
    let tables = source.source().unwrap().tables().unwrap();
    for t in &tables {
        let diff = cutover_verify::compare_table(&mut a, &mut b, t, 500).unwrap();
        assert!(diff.is_equal(), "{diff:?}");
        assert!(diff.source_rows > 0);
    }
    let c = Connection::open(&dst).unwrap();
    let idx: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND name = 'items_name'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(idx, 1);
}

#[test]
fn interrupted_sync_resumes_without_copying_finished_chunks_again() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.db"), dir.path().join("dst.db"));
    create_source(&src, 4_000);
    // The first run's chunk reads stop at the gate once 1,500 rows are read (some may be
    // superseded by the writer's changes), so that its stop lands in the copy whatever the
    // machine's speed; the second run reads without it.
    let gate = Arc::new(Gate::after_rows(1_500));
    let gated = SlowChunks {
        endpoint: SqliteEndpoint::new(&src),
        delay: Duration::ZERO,
        gate: Some(Arc::clone(&gate)),
    };
    let (source, target) = (SqliteEndpoint::new(&src), SqliteEndpoint::new(&dst));
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let opts = small_chunks();
    let progress = Progress::default();
    let control = Control::default();
    // Rows in the source before the writer starts: items, pairs and every third "Odd Name".
    let initial_rows = 4_000 + 4_000 + 1_334;

    std::thread::scope(|s| {
        // Before the threads: a panic below stops them, and the scope can join them.
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let _stop_sync = cutover_testkit::on_drop(|| {
            control.stop();
            gate.open();
        });
        let writer = s.spawn(|| write_load(&src, &stop, 4_000, &writes));
        // First run: stopped once 1,000 rows are in, while the gate holds the other chunks.
        let first = s.spawn(|| run(&gated, &target, &opts, &control, &progress));
        wait_until("1,000 rows copied", || {
            assert!(!first.is_finished(), "the first run ended early");
            progress.rows_copied.load(Ordering::Relaxed) >= 1_000
        });
        control.stop();
        gate.open();
        let report = first.join().unwrap().unwrap();
        assert!(
            report.interrupted,
            "the first run was stopped before the copy finished"
        );
        let (done, total): (i64, i64) = Connection::open(&dst)
            .unwrap()
            .query_row(
                "SELECT coalesce(sum(done), 0), count(*) FROM _cutover_chunks",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(
            done < total,
            "the first run stopped in the copy: {done} of {total} chunks done"
        );
        let copied_first = report.rows_copied;

        // Second run: finishes the copy and catches up.
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        let progress = Progress::default();
        let report = run(&source, &target, &opts, &Control::default(), &progress).unwrap();
        assert!(!report.interrupted);
        assert!(copied_first >= 1_000);
        assert!(
            report.rows_copied < initial_rows - 500,
            "the second run copied {} rows: finished chunks were copied again",
            report.rows_copied
        );
    });
    assert_same(&src, &dst);
}

#[test]
fn cleanup_removes_capture_and_control_store() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.db"), dir.path().join("dst.db"));
    create_source(&src, 100);
    let (source, target) = (SqliteEndpoint::new(&src), SqliteEndpoint::new(&dst));
    run(
        &source,
        &target,
        &small_chunks(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap();
    let internal = |p: &Path| -> i64 {
        Connection::open(p)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name LIKE '\\_cutover%' ESCAPE '\\'",
                [],
                |r| r.get(0),
            )
            .unwrap()
    };
    assert!(internal(&src) > 0 && internal(&dst) > 0);
    let mut s = source.source().unwrap();
    let tables = cutover_connector::Source::tables(&mut s).unwrap();
    cutover_connector::Source::stop_capture(&mut s, &tables).unwrap();
    cutover_connector::Sink::cleanup(&mut target.sink().unwrap()).unwrap();
    assert_eq!(internal(&src), 0);
    assert_eq!(internal(&dst), 0);
    assert_same(&src, &dst);
}

#[test]
fn a_column_added_on_the_source_during_sync_stops_it_with_the_names() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.db"), dir.path().join("dst.db"));
    create_source(&src, 200);
    let (source, target) = (SqliteEndpoint::new(&src), SqliteEndpoint::new(&dst));
    run(
        &source,
        &target,
        &small_chunks(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap();
    let c = Connection::open(&src).unwrap();
    c.execute_batch(
        "ALTER TABLE pairs ADD COLUMN note TEXT; UPDATE pairs SET note = 'x', v = -1 WHERE a = 1;",
    )
    .unwrap();
    let before = dump(&dst);
    let err = run(
        &source,
        &target,
        &small_chunks(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.kind(),
        cutover_connector::ErrorKind::SchemaMismatch,
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("column note") && msg.contains("table pairs"),
        "{msg}"
    );
    assert_eq!(
        dump(&dst),
        before,
        "nothing after the schema change was applied"
    );
}

#[test]
fn a_column_added_while_sync_follows_stops_it_before_applying_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src.db"), dir.path().join("dst.db"));
    create_source(&src, 200);
    let (source, target) = (SqliteEndpoint::new(&src), SqliteEndpoint::new(&dst));
    let progress = Progress::default();
    let opts = SyncOptions {
        stop_when_caught_up: false,
        ..small_chunks()
    };
    let control = Control::default();
    let err = std::thread::scope(|s| {
        // Before the sync: a panic below stops it, and the scope can join it.
        let _stop_sync = cutover_testkit::on_drop(|| control.stop());
        let sync = s.spawn(|| run(&source, &target, &opts, &control, &progress));
        wait_until("end of the copy", || {
            assert!(!sync.is_finished(), "sync ended early");
            progress.phase() == cutover_pipeline::Phase::Replicating
        });
        Connection::open(&src)
            .unwrap()
            .execute_batch("ALTER TABLE items ADD COLUMN flag INTEGER; UPDATE items SET flag = 1, name = 'z' WHERE id = 3;")
            .unwrap();
        sync.join().unwrap().unwrap_err()
    });
    assert_eq!(
        err.kind(),
        cutover_connector::ErrorKind::SchemaMismatch,
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("column flag was added to table items"),
        "{err}"
    );
    let name: String = Connection::open(&dst)
        .unwrap()
        .query_row("SELECT name FROM items WHERE id = 3", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        name, "item-3",
        "the change after the schema change was not applied"
    );
}
