//! `sync` for PostgreSQL → PostgreSQL: change capture through a logical replication slot while
//! chunks are copied, against real throwaway servers and concurrent writers.

use cutover_connector::PositionOrderExt;
use cutover_postgres::lsn::LSNS;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cutover_connector::{ErrorKind, Phase, Progress, Source, SourceFactory};
use cutover_model::Position;
use cutover_pipeline::{Control, SyncError, SyncOptions, SyncReport};
use cutover_postgres::schema::Selection;
use cutover_postgres::{CaptureNames, PgConnect, PgEndpoint};
use cutover_testkit::Postgres;

use super::{awkward_source, dump};

/// Both sides of a migration from `src` to `dst` on the shared test server.
fn pair(pg: &Postgres, src: &str, dst: &str, exclude: &[&str]) -> (PgConnect, PgConnect) {
    let s = PgEndpoint::from_url(&pg.url(src)).unwrap();
    let t = PgEndpoint::from_url(&pg.url(dst)).unwrap();
    let selection = Selection {
        tables: Vec::new(),
        exclude: exclude.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let names = CaptureNames::for_migration(dst);
    let side = |e: &PgEndpoint, peer: &PgEndpoint| PgConnect {
        endpoint: e.clone(),
        peer: Some(peer.clone()),
        selection: selection.clone(),
        names: names.clone(),
        truncate: false,
        jobs: 2,
    };
    (side(&s, &t), side(&t, &s))
}

/// A fresh source (with `ddl` run) and target, and both sides of their migration.
pub(crate) fn migration(
    pg: &Postgres,
    name: &str,
    ddl: &str,
) -> (String, String, PgConnect, PgConnect) {
    let src = pg.fresh_database(&format!("{name}_s")).unwrap();
    pg.psql(&src, ddl).unwrap();
    let dst = pg.fresh_database(&format!("{name}_t")).unwrap();
    let (s, t) = pair(pg, &src, &dst, &[]);
    (src, dst, s, t)
}

pub(crate) fn small_chunks() -> SyncOptions {
    SyncOptions {
        jobs: 2,
        chunk_bytes: 32 << 10,
        min_chunk_rows: 50,
        max_chunk_rows: 300,
        ..SyncOptions::default()
    }
}

pub(crate) struct Running {
    pub(crate) handle: JoinHandle<Result<SyncReport, SyncError>>,
    pub(crate) control: Arc<Control>,
    pub(crate) progress: Arc<Progress>,
    /// How the sync ended, if it did with an error (for failure messages).
    pub(crate) error: Arc<std::sync::Mutex<Option<String>>>,
    /// Stops the sync when the test ends without joining it (a panic), so that it does not
    /// go on in the background.
    _stop: cutover_testkit::OnDrop<Box<dyn FnOnce()>>,
}

pub(crate) fn start(s: &PgConnect, t: &PgConnect, opts: SyncOptions) -> Running {
    let control = Arc::new(Control::default());
    let progress = Arc::new(Progress::default());
    let (s, t) = (s.clone(), t.clone());
    let (c, p) = (Arc::clone(&control), Arc::clone(&progress));
    let error = Arc::new(std::sync::Mutex::new(None));
    let e = Arc::clone(&error);
    let stop = Arc::clone(&control);
    let handle = std::thread::spawn(move || {
        let r = cutover_pipeline::run(&s, &t, &opts, &c, &p);
        if let Err(err) = &r {
            *e.lock().unwrap() = Some(err.to_string());
        }
        r
    });
    Running {
        handle,
        control,
        progress,
        error,
        _stop: cutover_testkit::on_drop(Box::new(move || stop.stop())),
    }
}

pub(crate) fn wal_position(pg: &Postgres, db: &str) -> Position {
    let text = pg
        .psql(db, cutover_postgres::COMMITTED_POSITION_SQL)
        .unwrap();
    format!("lsn:{text}").parse().unwrap()
}

/// Asks a running sync to finish once it has applied everything the source has now.
pub(crate) fn drain(pg: &Postgres, src: &str, r: Running) -> SyncReport {
    r.control.drain_to(wal_position(pg, src));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !r.handle.is_finished() {
        assert!(Instant::now() < deadline, "sync did not drain in 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    r.handle.join().unwrap().unwrap()
}

pub(crate) fn wait_for(what: &str, r: &Running, cond: impl Fn(&Progress) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond(&r.progress) {
        assert!(
            !r.handle.is_finished(),
            "sync ended while waiting for {what}: {:?}",
            r.error.lock().unwrap()
        );
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: phase {:?}, {} rows copied, {} changes applied, at {:?} of {:?}, chunks {:?}",
            r.progress.phase(),
            r.progress.rows_copied.load(Ordering::Relaxed),
            r.progress.changes_applied.load(Ordering::Relaxed),
            r.progress.applied_position(),
            r.progress.source_position(),
            r.progress
                .table_snapshot()
                .iter()
                .map(|t| (t.chunks_done.load(Ordering::Relaxed), t.chunks_total.load(Ordering::Relaxed)))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub(crate) fn cleanup(s: &PgConnect) {
    s.source().unwrap().stop_capture(&[]).unwrap();
}

pub(crate) fn assert_same(pg: &Postgres, a: &str, b: &str, table: &str, order: &str) {
    let (x, y) = (dump(pg, a, table, order), dump(pg, b, table, order));
    if x != y {
        let first = x.lines().zip(y.lines()).find(|(p, q)| p != q);
        panic!(
            "{table} differs: source {} rows, target {} rows; first difference {:?}",
            x.lines().count(),
            y.lines().count(),
            first.map(|(p, q)| (
                p.chars().take(120).collect::<String>(),
                q.chars().take(120).collect::<String>()
            ))
        );
    }
}

#[test]
fn awkward_types_are_copied_and_their_changes_follow_identically() {
    let pg = Postgres::shared().unwrap();
    let src = awkward_source(pg);
    let dst = pg.fresh_database("sync_awk_t").unwrap();
    let (s, t) = pair(pg, &src, &dst, &["public.nopk"]);
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    // Changes to every kind of value, after the copy: they travel through the change stream.
    pg.psql(
        &src,
        r#"
        UPDATE "Mixed Case"."Order" SET n = 'NaN', f8 = '-0', f4 = 'Infinity', d = '0044-03-15 BC',
               ts = 'infinity', tz = '2026-06-01 01:02:03.456789+02', iv = '-1 year 2 days 00:00:00.5',
               j = '{"z": 1,   "a": 2}', jb = '{"new": [1, null]}', b = '\x00ff', ia = '{NULL}',
               ta = '{{"x y",NULL}}', m = 'sad', ma = '{happy}', p = 99.99, pt = ROW(1, 2, 3), t = '24:00',
               ttz = '23:59:59-12'
         WHERE "select" % 10 = 3;
        UPDATE "Mixed Case"."Order" SET "from" = 'there' WHERE "select" % 1000 = 17;
        DELETE FROM "Mixed Case"."Order" WHERE "select" % 10 = 4 AND "select" > 100;
        INSERT INTO "Mixed Case"."Order" ("select", n, huge, b) VALUES (100001, 1.50, repeat('€', 300000), decode(repeat('ab', 200000), 'hex'));
        UPDATE public.pairs SET a = a + 1000 WHERE a = 5;
        DELETE FROM public.words WHERE w LIKE 'w1%';
        INSERT INTO public.ident (note) VALUES ('after');
        UPDATE public.events SET at = '2026-03-01' WHERE id % 50 = 0;
        TRUNCATE public.refs;
        INSERT INTO public.refs VALUES (7, 7);
        "#,
    )
    .unwrap();
    let report = drain(pg, &src, r);
    assert!(report.changes_applied > 1000, "{report:?}");
    super::assert_identical_except(pg, &src, &dst, &["public.nopk"]);
    // The rest of the schema exists once the copy finished.
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('order_from', 'order_jb')"
        )
        .unwrap(),
        "2"
    );
    assert!(
        pg.psql(&dst, "INSERT INTO public.refs VALUES (1000, 999999)")
            .is_err(),
        "FK built"
    );
    cleanup(&s);
}

/// A table whose rows carry a large out-of-line (TOASTed) value, written to while it is copied.
const BUSY: &str = "
CREATE TABLE busy (id bigint PRIMARY KEY, grp int NOT NULL, v text, counter int NOT NULL DEFAULT 0, doc text);
INSERT INTO busy SELECT i, i % 17, 'v' || i, 0,
       CASE WHEN i % 3 = 0 THEN (SELECT string_agg(md5(i::text || g::text), '') FROM generate_series(1, 120) g) END
  FROM generate_series(1, 20000) i;
ANALYZE busy;
";

/// Random inserts, updates (most leaving the TOASTed `doc` unchanged, some moving the key),
/// and deletes, until `stop`.
fn writer(url: String, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let e = PgEndpoint::from_url(&url).unwrap();
        let mut c = e.connect().unwrap();
        let mut next = 1_000_000i64;
        while !stop.load(Ordering::Relaxed) {
            let id = fastrand::i64(1..20_000);
            let sql = match fastrand::u8(0..10) {
                0..=3 => format!("UPDATE busy SET counter = counter + 1, v = 'u{id}' WHERE id = {id}"),
                4 => format!(
                    "UPDATE busy SET doc = (SELECT string_agg(md5(random()::text), '') FROM generate_series(1, 110)) WHERE id = {id}"
                ),
                5 => {
                    next += 1;
                    format!("INSERT INTO busy VALUES ({next}, 1, 'new', 0, repeat('n', 5000)) ON CONFLICT DO NOTHING")
                }
                6 => format!("DELETE FROM busy WHERE id = {id}"),
                7 => {
                    next += 1;
                    format!("UPDATE busy SET id = {next} WHERE id = {id}")
                }
                _ => format!(
                    "BEGIN; UPDATE busy SET counter = counter + 10 WHERE grp = {} AND id % 100 = {}; DELETE FROM busy WHERE id = {}; COMMIT",
                    id % 17,
                    id % 100,
                    id + 1
                ),
            };
            // Deadlocks between the writer's own statements are the workload's business.
            if c.batch_execute(&sql).is_err() {
                let _ = c.batch_execute("ROLLBACK");
            }
            done.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(500));
        }
    })
}

#[test]
fn rows_written_while_their_chunks_are_copied_end_equal_row_by_row() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "busy", BUSY);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writer = cutover_testkit::stop_on_drop(&stop);
    let writes = Arc::new(AtomicU64::new(0));
    let w = writer(pg.url(&src), Arc::clone(&stop), Arc::clone(&writes));
    let deadline = Instant::now() + Duration::from_secs(60);
    while writes.load(Ordering::Relaxed) < 100 {
        assert!(!w.is_finished(), "the writer ended early");
        assert!(Instant::now() < deadline, "no 100 writes within a minute");
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    let during_copy = writes.load(Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let report = drain(pg, &src, r);
    assert_same(pg, &src, &dst, "busy", "id");
    assert!(
        during_copy > 200,
        "the writer wrote during the copy ({during_copy} statements)"
    );
    assert!(
        report.rows_superseded > 0,
        "some copied rows were superseded by newer changes: {report:?}"
    );
    cleanup(&s);
}

#[test]
fn with_ddl_stop_a_column_added_on_the_source_stops_sync_naming_table_and_column() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "ddl", "CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items SELECT i, 'i' || i FROM generate_series(1, 500) i;");
    let stop_at_ddl = || SyncOptions {
        ddl: cutover_pipeline::DdlPolicy::Stop,
        ..small_chunks()
    };
    let r = start(&s, &t, stop_at_ddl());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    pg.psql(&src, "INSERT INTO items VALUES (501, 'before')")
        .unwrap();
    pg.psql(&src, "ALTER TABLE items ADD COLUMN price numeric")
        .unwrap();
    pg.psql(&src, "INSERT INTO items VALUES (502, 'after', 9.5)")
        .unwrap();
    let err = r.handle.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("public.items") && msg.contains("price") && msg.contains("added"),
        "{msg}"
    );
    // Everything before the change is there; nothing from it on.
    assert_eq!(
        pg.psql(&dst, "SELECT name FROM items WHERE id = 501")
            .unwrap(),
        "before"
    );
    assert_eq!(
        pg.psql(&dst, "SELECT count(*) FROM items WHERE id = 502")
            .unwrap(),
        "0"
    );

    // Running again without changing the target is refused the same way, before applying.
    let again = cutover_pipeline::run(
        &s,
        &t,
        &stop_at_ddl(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::SchemaMismatch, "{again}");
    assert!(again.to_string().contains("price"), "{again}");

    // Once the target has the column too, sync continues and ends equal.
    // The target is read-only for everyone but cutover until the switch.
    assert!(pg
        .psql(&dst, "ALTER TABLE items ADD COLUMN price numeric")
        .is_err());
    pg.psql(
        &dst,
        "SET default_transaction_read_only = off; ALTER TABLE items ADD COLUMN price numeric",
    )
    .unwrap();
    let r = start(&s, &t, stop_at_ddl());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    drain(pg, &src, r);
    assert_same(pg, &src, &dst, "items", "id");
    assert_eq!(
        pg.psql(&dst, "SELECT price FROM items WHERE id = 502")
            .unwrap(),
        "9.5"
    );
    cleanup(&s);
}

#[test]
fn tables_that_cannot_be_captured_are_refused_before_anything_is_created() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(
        pg,
        "refuse",
        "CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE loose (x int);
         CREATE TABLE mute (id int PRIMARY KEY); ALTER TABLE mute REPLICA IDENTITY NOTHING;",
    );
    let err = cutover_pipeline::run(
        &s,
        &t,
        &small_chunks(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{msg}");
    assert!(
        msg.contains("public.loose") && msg.contains("no primary key"),
        "{msg}"
    );
    assert!(
        msg.contains("public.mute") && msg.contains("REPLICA IDENTITY"),
        "{msg}"
    );
    assert!(msg.contains("--exclude-tables"), "{msg}");
    assert_eq!(
        pg.psql(&src, "SELECT count(*) FROM pg_publication")
            .unwrap(),
        "0"
    );
    assert_eq!(
        pg.psql(
            &src,
            "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
        )
        .unwrap(),
        "0"
    );
    // The source still takes updates on the table that would have broken.
    pg.psql(&src, "INSERT INTO mute VALUES (1); UPDATE mute SET id = 2")
        .unwrap();
    // Leaving them out works.
    let (s, t) = pair(pg, &src, &dst, &["loose", "mute"]);
    let report = cutover_pipeline::run(
        &s,
        &t,
        &SyncOptions {
            stop_when_caught_up: true,
            ..small_chunks()
        },
        &Control::default(),
        &Progress::default(),
    )
    .unwrap();
    assert_eq!(report.tables, 1);
    cleanup(&s);
}

#[test]
fn a_dropped_slot_is_history_lost_not_a_silent_gap() {
    let pg = Postgres::shared().unwrap();
    let (src, _dst, s, t) = migration(
        pg,
        "lost",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let caught_up = SyncOptions {
        stop_when_caught_up: true,
        ..small_chunks()
    };
    cutover_pipeline::run(
        &s,
        &t,
        &caught_up,
        &Control::default(),
        &Progress::default(),
    )
    .unwrap();
    // Dropped behind cutover's back (once the stopped sync's WAL sender has gone).
    let drop = format!("SELECT pg_drop_replication_slot('{}')", s.names.slot);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = pg.psql(&src, &drop) {
        assert!(Instant::now() < deadline, "{e}");
        std::thread::sleep(Duration::from_millis(100));
    }
    pg.psql(&src, "INSERT INTO t VALUES (101)").unwrap();
    let err = cutover_pipeline::run(
        &s,
        &t,
        &caught_up,
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    assert!(err.to_string().contains("cutover cleanup"), "{err}");
    cleanup(&s);
}

#[test]
fn a_restarted_sync_applies_nothing_twice_and_skips_nothing() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "restart", "CREATE TABLE c (id int PRIMARY KEY, n bigint NOT NULL); INSERT INTO c SELECT i, 0 FROM generate_series(1, 50) i;");
    // Increments are not idempotent: a change applied twice would show as a wrong sum.
    for round in 0..4 {
        let r = start(&s, &t, small_chunks());
        wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
        for i in 0..200 {
            pg.psql(
                &src,
                &format!("UPDATE c SET n = n + 1 WHERE id = {}", 1 + (i + round) % 50),
            )
            .unwrap();
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..100)));
        r.control.stop();
        r.handle.join().unwrap().unwrap();
    }
    let confirmed = || {
        pg.psql(
            &src,
            &format!(
                "SELECT confirmed_flush_lsn - '0/0' FROM pg_replication_slots WHERE slot_name = '{}'",
                s.names.slot
            ),
        )
        .unwrap()
        .parse::<u64>()
        .unwrap()
    };
    let before = confirmed();
    let r = start(&s, &t, small_chunks());
    std::thread::sleep(Duration::from_millis(2_500));
    drain(pg, &src, r);
    assert_eq!(pg.psql(&dst, "SELECT sum(n) FROM c").unwrap(), "800");
    // The source was told what the target made durable, and freed it.
    assert!(
        confirmed() > before,
        "the slot's confirmed position moved on"
    );
    assert_same(pg, &src, &dst, "c", "id");
    cleanup(&s);
}

#[test]
fn a_copy_with_capture_is_followed_by_sync_without_copying_it_again() {
    use cutover_postgres::copy::{copy, CopyOptions};
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "capcopy", BUSY);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writer = cutover_testkit::stop_on_drop(&stop);
    let writes = Arc::new(AtomicU64::new(0));
    let w = writer(pg.url(&src), Arc::clone(&stop), Arc::clone(&writes));
    // The application writes all along: before, during and after the copy.
    let opts = CopyOptions {
        jobs: 2,
        chunk_bytes: 256 << 10,
        capture: Some(s.names.clone()),
        ..CopyOptions::default()
    };
    let report = copy(
        &s.endpoint,
        &t.endpoint,
        &opts,
        &Progress::default(),
        &cutover_connector::CancellationToken::new(),
    )
    .unwrap();
    assert!(report.rows > 0);
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FILTER (WHERE NOT in_snapshot) FROM _cutover.chunks"
        )
        .unwrap(),
        "0",
        "every chunk was read in the slot's snapshot"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    let r = start(&s, &t, small_chunks());
    let report = drain(pg, &src, r);
    assert_eq!(report.rows_copied, 0, "nothing copied again: {report:?}");
    assert!(report.changes_applied > 0, "{report:?}");
    assert_same(pg, &src, &dst, "busy", "id");
    cleanup(&s);
}

#[test]
fn chunks_of_a_resumed_capture_copy_are_copied_again_by_sync_and_the_rest_are_not() {
    use cutover_postgres::copy::{copy, CopyOptions};
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "capres", BUSY);
    let opts = CopyOptions {
        jobs: 1,
        chunk_bytes: 128 << 10,
        max_rows_per_sec: std::num::NonZeroU32::new(8_000),
        capture: Some(s.names.clone()),
        ..CopyOptions::default()
    };
    // Interrupted once chunks are copied; resumed outside the slot's snapshot.
    let stop = cutover_connector::CancellationToken::new();
    let progress = Progress::default();
    std::thread::scope(|sc| {
        // Before the copy: a panic below stops it, and the scope can join it.
        let _stop_copy = stop.clone().drop_guard();
        let h = sc.spawn(|| copy(&s.endpoint, &t.endpoint, &opts, &progress, &stop));
        while progress.rows_copied.load(Ordering::Relaxed) < 4_000 {
            assert!(
                !h.is_finished(),
                "copy finished before it could be interrupted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        stop.cancel();
        assert!(h.join().unwrap().unwrap().interrupted);
    });
    pg.psql(&src, "UPDATE busy SET counter = counter + 1000 WHERE id % 7 = 0; DELETE FROM busy WHERE id % 11 = 0")
        .unwrap();
    let resumed = CopyOptions {
        max_rows_per_sec: None,
        ..opts.clone()
    };
    copy(
        &s.endpoint,
        &t.endpoint,
        &resumed,
        &Progress::default(),
        &cutover_connector::CancellationToken::new(),
    )
    .unwrap();
    let count = |sql: &str| pg.psql(&dst, sql).unwrap().parse::<i64>().unwrap();
    let outside = count("SELECT count(*) FROM _cutover.chunks WHERE NOT in_snapshot");
    let inside = count("SELECT count(*) FROM _cutover.chunks WHERE in_snapshot");
    assert!(
        outside > 0 && inside > 0,
        "{inside} chunks in the snapshot, {outside} outside"
    );
    let outside_rows = count("SELECT sum(rows) FROM _cutover.chunks WHERE NOT in_snapshot");
    let all_rows = count("SELECT count(*) FROM busy");
    assert!(
        outside_rows < all_rows,
        "{outside_rows} of {all_rows} rows outside the snapshot"
    );

    let r = start(&s, &t, small_chunks());
    let report = drain(pg, &src, r);
    // Nothing changed the source since the resumed copy, so exactly the rows of the chunks read
    // outside the snapshot come again; copying the others too would exceed that.
    assert_eq!(
        report.rows_copied as i64, outside_rows,
        "only the chunks read outside the snapshot are copied again: {report:?}"
    );
    assert_same(pg, &src, &dst, "busy", "id");
    cleanup(&s);
}

#[test]
fn a_transaction_larger_than_memory_allows_arrives_in_pieces_and_whole() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(
        pg,
        "bigtx",
        "CREATE TABLE wide (id int PRIMARY KEY, v text, n int NOT NULL DEFAULT 0);
         INSERT INTO wide SELECT i, 'v' || i FROM generate_series(1, 30000) i;",
    );
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    // One transaction of 75,000 changes: more than a piece (20,000) holds.
    pg.psql(
        &src,
        "BEGIN; UPDATE wide SET n = n + 1; INSERT INTO wide SELECT i, 'new' FROM generate_series(30001, 50000) i;
         DELETE FROM wide WHERE id % 4 = 0; UPDATE wide SET v = 'last' WHERE id % 3 = 0; COMMIT;",
    )
    .unwrap();
    let report = drain(pg, &src, r);
    assert!(report.changes_applied >= 75_000, "{report:?}");
    assert_same(pg, &src, &dst, "wide", "id");
    cleanup(&s);
}

/// Issue 9, finding 1. A transaction's commit record reaches the change stream before the
/// transaction is visible to new snapshots: for the whole wait on a synchronous standby (and a
/// moment on every server). A chunk read in that window must not overwrite what the stream
/// already applied, however early the commit was logged.
#[test]
fn a_chunk_read_before_a_logged_commit_is_visible_does_not_overwrite_it() {
    // synchronous_standby_names is server-wide: a server of this test's own.
    let pg = Postgres::dedicated().unwrap();
    pg.psql(
        "",
        "ALTER SYSTEM SET synchronous_standby_names = 'ghost'; SELECT pg_reload_conf()",
    )
    .unwrap();
    let (src, dst, s, t) = migration(
        &pg,
        "visible",
        "CREATE TABLE big (id int PRIMARY KEY, pad text);
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 60000) g;
         CREATE TABLE t (id int PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'original ' || g FROM generate_series(1, 1000) g;
         ANALYZE;",
    );
    // One reader: `big` (larger) is copied first, `t` last.
    let r = start(
        &s,
        &t,
        SyncOptions {
            jobs: 1,
            ..small_chunks()
        },
    );
    wait_for("the copy to start", &r, |p| {
        p.phase() == Phase::Copying && p.rows_copied.load(Ordering::Relaxed) > 0
    });
    // The reader waits at `big` (its chunk reads lock it first) until the stream passed txX:
    // `t` is certainly copied after that, however slow the machine. More of `big` is left
    // than the pipeline reads ahead (2 × jobs chunks).
    let mut hold = PgEndpoint::from_url(&pg.url(&src))
        .unwrap()
        .connect()
        .unwrap();
    hold.batch_execute("BEGIN; LOCK TABLE big IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let big_left = r
        .progress
        .table_snapshot()
        .iter()
        .find(|tp| tp.name.name == "big")
        .map(|tp| tp.chunks_total.load(Ordering::Relaxed) - tp.chunks_done.load(Ordering::Relaxed));
    assert!(
        big_left.is_some_and(|n| n > 3),
        "the premise: big still being copied when locked ({big_left:?} chunks left)"
    );

    // txX: its COMMIT waits for the standby that never comes; it is in the WAL, not visible.
    let url = pg.url(&src);
    let tx_x = std::thread::spawn(move || {
        let mut c = PgEndpoint::from_url(&url).unwrap().connect().unwrap();
        c.batch_execute(
            "SET application_name = 'txX'; SET synchronous_commit = on; BEGIN;
             DELETE FROM t WHERE id = 500; UPDATE t SET v = 'updated by X' WHERE id = 501;
             INSERT INTO t VALUES (5000, 'inserted by X'); COMMIT",
        )
    });
    let waiting = || {
        pg.psql(
            &src,
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'txX' AND wait_event = 'SyncRep'",
        )
        .unwrap()
            == "1"
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiting() {
        assert!(
            Instant::now() < deadline,
            "txX never waited for the standby"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its commit record is before the position now; wait until the applier passed it.
    let logged = wal_position(&pg, &src);
    wait_for("the stream to pass txX", &r, |p| {
        p.applied_position()
            .is_some_and(|a| LSNS.reached(&a, &logged))
    });
    let t_done = |p: &Progress| {
        p.table_snapshot()
            .iter()
            .find(|tp| tp.name.name == "t")
            .map(|tp| tp.chunks_done.load(Ordering::Relaxed))
    };
    assert_eq!(
        t_done(&r.progress),
        Some(0),
        "the premise: t is copied after the stream applied txX"
    );
    // Let the reader go on (a rollback: the lock's transaction would wait for the standby too).
    hold.batch_execute("ROLLBACK").unwrap();
    // t is copied while txX is still invisible.
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    assert_eq!(
        pg.psql(&src, "SELECT v FROM t WHERE id = 501").unwrap(),
        "original 501",
        "txX was still invisible when t was copied"
    );
    // Cancelling the wait makes txX visible (it is committed locally).
    pg.psql(
        &src,
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'txX'",
    )
    .unwrap();
    tx_x.join().unwrap().unwrap();
    assert_eq!(
        pg.psql(&src, "SELECT v FROM t WHERE id = 501").unwrap(),
        "updated by X"
    );
    drain(&pg, &src, r);
    assert_same(&pg, &src, &dst, "t", "id");
    assert_same(&pg, &src, &dst, "big", "id");
    cleanup(&s);
}

/// The two tables of issue 9, finding 2.
const SCHOOL: &str = "
CREATE TABLE ledger (id bigint PRIMARY KEY, student int NOT NULL, amount numeric(10,2), note varchar(20));
CREATE TABLE students (id int PRIMARY KEY, name text NOT NULL, visits int NOT NULL DEFAULT 0, legacy text);
INSERT INTO students SELECT i, 'student ' || i, 0, 'old' FROM generate_series(1, 2000) i;
INSERT INTO ledger SELECT i, 1 + i % 2000, i, 'n' || i FROM generate_series(1, 4000) i;
";

/// Writes to both tables until `stop`, with statements that work before and after every
/// column change the tests make.
fn school_writer(url: String, stop: Arc<AtomicBool>) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut c = PgEndpoint::from_url(&url).unwrap().connect().unwrap();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let id = 1 + n % 2000;
            c.batch_execute(&format!(
                "BEGIN; UPDATE students SET visits = visits + 1 WHERE id = {id};
                 INSERT INTO ledger (id, student, amount) VALUES ({}, {id}, {n}.5); COMMIT",
                100_000 + n
            ))
            .unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        n
    })
}

/// Issue 9, finding 2: columns added to two tables a moment apart while sync runs. Carried to
/// the target where the stream passes them (no stop, no loop), as are a dropped column and
/// widened types; rows written before, between and after end equal.
#[test]
fn columns_changed_on_two_tables_during_sync_are_carried_and_sync_goes_on() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "ddl2", SCHOOL);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writer = cutover_testkit::stop_on_drop(&stop);
    let w = school_writer(pg.url(&src), Arc::clone(&stop));
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    pg.psql(
        &src,
        "ALTER TABLE ledger ADD COLUMN nickname text DEFAULT 'none'",
    )
    .unwrap();
    pg.psql(
        &src,
        "UPDATE ledger SET nickname = 'L' || id WHERE id % 10 = 0",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    pg.psql(&src, "ALTER TABLE students ADD COLUMN nickname text")
        .unwrap();
    pg.psql(
        &src,
        "UPDATE students SET nickname = 'S' || id WHERE id % 7 = 0",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    pg.psql(
        &src,
        "ALTER TABLE students DROP COLUMN legacy; ALTER TABLE ledger ALTER COLUMN amount TYPE numeric(14,2);
         ALTER TABLE ledger ALTER COLUMN note TYPE varchar(40); ALTER TABLE students ALTER COLUMN visits TYPE bigint",
    )
    .unwrap();
    pg.psql(
        &src,
        "UPDATE ledger SET note = repeat('x', 35), amount = 123456789.25 WHERE id = 7",
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    assert!(w.join().unwrap() > 100, "the writer wrote throughout");
    let report = drain(pg, &src, r);
    assert!(report.changes_applied > 100, "{report:?}");
    for table in ["ledger", "students"] {
        assert_same(pg, &src, &dst, table, "id");
    }
    let columns = |db: &str| {
        pg.psql(
            db,
            "SELECT string_agg(table_name || '.' || column_name || ':' || format_type(atttypid, atttypmod), ',' ORDER BY table_name, column_name)
               FROM information_schema.columns c JOIN pg_attribute a ON a.attrelid = (c.table_schema || '.' || c.table_name)::regclass AND a.attname = c.column_name
              WHERE c.table_schema = 'public' AND c.table_name IN ('ledger', 'students')",
        )
        .unwrap()
    };
    assert_eq!(columns(&src), columns(&dst), "the same columns and types");
    cleanup(&s);
}

/// Issue 9, finding 2, with --ddl stop: each table's change stops sync once, naming it as
/// added (never "dropped"); once the target has it, sync goes on to the next. No loop.
#[test]
fn with_ddl_stop_two_tables_changed_stop_once_each_and_then_resume() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "ddl3", SCHOOL);
    let opts = || SyncOptions {
        ddl: cutover_pipeline::DdlPolicy::Stop,
        ..small_chunks()
    };
    let r = start(&s, &t, opts());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    pg.psql(
        &src,
        "ALTER TABLE ledger ADD COLUMN nickname text; INSERT INTO ledger VALUES (900001, 1, 1, 'a', 'x');
         UPDATE students SET visits = 5 WHERE id = 1;",
    )
    .unwrap();
    pg.psql(
        &src,
        "ALTER TABLE students ADD COLUMN nickname text; UPDATE students SET nickname = 'nick' WHERE id = 2;
         UPDATE students SET visits = 6 WHERE id = 3;",
    )
    .unwrap();
    let first = r.handle.join().unwrap().unwrap_err().to_string();
    assert!(
        first.contains("nickname")
            && first.contains("added to public.ledger")
            && !first.contains("dropped"),
        "{first}"
    );
    assert!(
        first.contains("ALTER TABLE public.ledger ADD COLUMN nickname text"),
        "{first}"
    );
    pg.psql(
        &dst,
        "SET default_transaction_read_only = off; ALTER TABLE ledger ADD COLUMN nickname text",
    )
    .unwrap();
    let second = cutover_pipeline::run(&s, &t, &opts(), &Control::default(), &Progress::default())
        .unwrap_err()
        .to_string();
    assert!(
        second.contains("added to public.students") && !second.contains("dropped"),
        "{second}"
    );
    // Everything before the students change is on the target already.
    assert_eq!(
        pg.psql(&dst, "SELECT visits FROM students WHERE id = 1")
            .unwrap(),
        "5"
    );
    pg.psql(
        &dst,
        "SET default_transaction_read_only = off; ALTER TABLE students ADD COLUMN nickname text",
    )
    .unwrap();
    let r = start(&s, &t, opts());
    drain(pg, &src, r);
    for table in ["ledger", "students"] {
        assert_same(pg, &src, &dst, table, "id");
    }
    cleanup(&s);
}

/// A type change the target's column cannot hold exactly stops sync whatever --ddl says,
/// naming table, column and both types.
#[test]
fn a_type_change_that_would_lose_values_stops_sync_naming_both_types() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "ddl4", SCHOOL);
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    pg.psql(
        &src,
        "UPDATE ledger SET amount = 1 WHERE id = 1;
         ALTER TABLE ledger ALTER COLUMN amount TYPE numeric(10,1); UPDATE ledger SET amount = 2 WHERE id = 2;",
    )
    .unwrap();
    let err = r.handle.join().unwrap().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("column amount of public.ledger")
            && msg.contains("numeric(10,2)")
            && msg.contains("numeric(10,1)"),
        "{msg}"
    );
    assert_eq!(
        pg.psql(&dst, "SELECT amount FROM ledger WHERE id = 1")
            .unwrap(),
        "1.00",
        "what came before was applied"
    );
    cleanup(&s);
}

/// A column added while its table is being copied: chunks read before and after it, and the
/// stream, all end on the target with the source's values.
#[test]
fn a_column_added_while_its_table_is_copied_arrives_with_its_values() {
    let pg = Postgres::shared().unwrap();
    let (src, dst, s, t) = migration(pg, "ddl5", SCHOOL);
    let r = start(
        &s,
        &t,
        SyncOptions {
            jobs: 1,
            min_chunk_rows: 20,
            max_chunk_rows: 40,
            ..small_chunks()
        },
    );
    wait_for("some chunks", &r, |p| {
        p.rows_copied.load(Ordering::Relaxed) > 200
    });
    // Both tables locked: their chunk reads (the only ones left) wait for this transaction, so
    // the copy cannot end before the columns are added. More chunks left than the pipeline
    // holds read (2 × jobs): some are certainly read after the change.
    let mut ddl = PgEndpoint::from_url(&pg.url(&src))
        .unwrap()
        .connect()
        .unwrap();
    ddl.batch_execute("BEGIN; LOCK TABLE students, ledger IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let left: u64 = r
        .progress
        .table_snapshot()
        .iter()
        .map(|t| t.chunks_total.load(Ordering::Relaxed) - t.chunks_done.load(Ordering::Relaxed))
        .sum();
    assert!(
        r.progress.phase() == Phase::Copying && left > 3,
        "the premise: still copying when the tables were locked ({left} chunks left)"
    );
    ddl.batch_execute(
        "ALTER TABLE students ADD COLUMN house text DEFAULT 'blue';
         UPDATE students SET house = 'red' WHERE id % 3 = 0;
         ALTER TABLE ledger ADD COLUMN memo text DEFAULT 'none';
         COMMIT",
    )
    .unwrap();
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    drain(pg, &src, r);
    for table in ["ledger", "students"] {
        assert_same(pg, &src, &dst, table, "id");
    }
    cleanup(&s);
}
