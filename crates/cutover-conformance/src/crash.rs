//! Resume after a crash: a sink stopped at its named failpoint between writing a batch and
//! committing it, and a whole sync stopped by it in the middle and run again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_connector::{Sink, Source, SourceFactory, TargetFactory};
use cutover_pipeline::{Control, Progress, SyncOptions};

use crate::fixture::{insert_items, item, positions, table, CaptureGuard, DDL};
use crate::sink::{delete, named, prepared, update, upsert};
use crate::source::assert_same_rows;
use crate::TargetEngine;

/// Configures failpoint `name` for as long as the guard lives.
fn failpoint(name: &'static str, actions: &str) -> cutover_testkit::OnDrop<impl FnOnce()> {
    fail::cfg(name, actions).unwrap_or_else(|e| panic!("configuring failpoint {name}: {e}"));
    cutover_testkit::on_drop(move || fail::remove(name))
}

/// A sink that fails (panics, as a crash would, or returns an error) between writing a batch
/// and committing it: reopened, it shows the old checkpoint and none of the batch; applying the
/// batch again gives exactly one copy of it.
pub fn a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch<E: TargetEngine>(
    e: &E,
) {
    let m = e.migration("crash", DDL);
    let (p, _capture) = positions(e, &m, 2);
    let (tables, mut sink) = prepared(&m);
    let items = table(&tables, "items").name;
    crate::sink::feed(
        &mut *sink,
        &[upsert(&items, item(1)), upsert(&items, item(2))],
        p[0].clone(),
    )
    .unwrap();
    let before = e.rows(&m.target_db, "items", "id");
    let batch = [
        upsert(&items, item(3)),
        update(&items, 1, named(1, "changed")),
        delete(&items, 2),
    ];
    let name = e.sink_before_commit();
    for action in ["panic", "return"] {
        let result = {
            let _fail = failpoint(name, action);
            catch_unwind(AssertUnwindSafe(|| {
                crate::sink::feed(&mut *sink, &batch, p[1].clone())
            }))
        };
        match (action, &result) {
            ("panic", Err(_)) | ("return", Ok(Err(_))) => {}
            _ => panic!(
                "failpoint {name}={action} did not stop apply ({:?}): is the engine built with its `failpoints` feature?",
                result.as_ref().map(|r| r.as_ref().map_err(ToString::to_string))
            ),
        }
        // The crashed process's connections go with it.
        drop(sink);
        let mut reopened = m.target.sink().unwrap();
        assert_eq!(
            reopened.checkpoint().unwrap(),
            Some(p[0].clone()),
            "{action}: the old checkpoint"
        );
        assert_eq!(
            e.rows(&m.target_db, "items", "id"),
            before,
            "{action}: none of the batch"
        );
        reopened.prepare(&tables).unwrap();
        sink = reopened;
    }
    crate::sink::feed(&mut *sink, &batch, p[1].clone()).unwrap();
    let once = vec![named(1, "changed"), item(3)];
    assert_eq!(e.rows(&m.target_db, "items", "id"), once);
    assert_eq!(sink.checkpoint().unwrap(), Some(p[1].clone()));
}

/// `cutover_pipeline::run` stopped by the sink's failpoint in the middle of a sync, with a
/// writer busy on the source, then run again: the target ends equal to the source.
pub fn sync_resumes_after_a_failure_mid_sync_and_ends_equal<E: TargetEngine>(e: &E) {
    let m = e.migration("resume", DDL);
    e.execute(&m.source_db, &insert_items(0..3000)).unwrap();
    e.execute(
        &m.source_db,
        &format!(
            "INSERT INTO pairs (a, b, v) VALUES {}",
            (0..500)
                .map(|i| format!("({}, 'k{i}', {i})", i % 7))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
    .unwrap();
    let tables = m.source.source().unwrap().tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let opts = SyncOptions {
        jobs: 2,
        chunk_bytes: 16 << 10,
        min_chunk_rows: 50,
        max_chunk_rows: 200,
        batch_changes: 100,
        retry_budget: Duration::from_secs(5),
        ..SyncOptions::default()
    };
    let stop = AtomicBool::new(false);
    let (first_control, control) = (Control::default(), Control::default());
    std::thread::scope(|s| {
        let _stop = cutover_testkit::stop_on_drop(&stop);
        let writer = s.spawn(|| {
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let sql = match i % 4 {
                    0 => insert_items([3000 + i]),
                    1 => format!(
                        "UPDATE items SET n = n + 1, name = 'w{i}' WHERE id = {}",
                        (i * 7) % 3000
                    ),
                    2 => format!("DELETE FROM items WHERE id = {}", (i * 13) % 3000),
                    _ => format!(
                        "BEGIN; UPDATE items SET id = id + 100000 WHERE id = {}; \
                         UPDATE pairs SET v = v + 1 WHERE a = {}; COMMIT;",
                        (i * 31) % 3000,
                        i % 7
                    ),
                };
                e.execute(&m.source_db, &sql)
                    .expect("the writer's statement");
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            i
        });
        let _stop_first = cutover_testkit::on_drop(|| first_control.stop());
        let first = {
            let _fail = failpoint(e.sink_before_commit(), "5*off->return");
            let run = s.spawn(|| {
                cutover_pipeline::run(
                    &m.source,
                    &m.target,
                    &opts,
                    &first_control,
                    &Progress::default(),
                )
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while !run.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "failpoint {} did not stop the sync in 60 s: is the engine built with its `failpoints` feature?",
                    e.sink_before_commit()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            run.join().expect("the first run")
        };
        assert!(first.is_err(), "the failpoint stopped the first run");
        let checkpoint = m.target.sink().unwrap().checkpoint().unwrap();
        assert!(checkpoint.is_some(), "the first run committed batches");
        let _stop_second = cutover_testkit::on_drop(|| control.stop());
        let second = s.spawn(|| {
            cutover_pipeline::run(&m.source, &m.target, &opts, &control, &Progress::default())
        });
        std::thread::sleep(Duration::from_millis(700));
        stop.store(true, Ordering::SeqCst);
        let writes = writer.join().expect("the writer");
        assert!(writes > 10, "the writer wrote during the sync ({writes})");
        let end = m.source.source().unwrap().current_position().unwrap();
        control.drain_to(end);
        second
            .join()
            .expect("the second run")
            .expect("the second run ends once drained");
    });
    for (name, order) in [("items", "id"), ("pairs", "a, b")] {
        let t = table(&tables, name);
        let want = e.rows(&m.source_db, name, order);
        assert_same_rows(&t, name, &e.rows(&m.target_db, name, order), &want);
    }
}

/// Delivery counts, for targets that are not idempotent by key (streams, files): a sync under
/// a concurrent writer, stopped three times by the target's failpoint between writing a batch
/// and storing its checkpoint (so each restart sends a batch the target already holds), run
/// again and drained: every row change the source committed is in the target exactly once, as
/// the target itself reports its deliveries ([`crate::Deliveries`]), and the target folded by
/// key is the source.
pub fn each_change_is_delivered_once_across_crashes<E: crate::Deliveries>(e: &E) {
    let m = e.migration("deliveries", DDL);
    e.execute(&m.source_db, &insert_items(0..500)).unwrap();
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    // Capture starts before the writer: each of its statements is one captured row change.
    source.start_capture(&tables).unwrap();
    drop(source);
    let opts = SyncOptions {
        jobs: 2,
        chunk_bytes: 4 << 10,
        min_chunk_rows: 20,
        max_chunk_rows: 100,
        batch_changes: 20,
        retry_budget: Duration::from_secs(5),
        ..SyncOptions::default()
    };
    let controls = [Control::default(), Control::default(), Control::default()];
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let _stop = cutover_testkit::stop_on_drop(&stop);
        let writer = s.spawn(|| {
            let mut i: i64 = 0;
            while !stop.load(Ordering::SeqCst) {
                let sql = match i % 3 {
                    0 => insert_items([1000 + i]),
                    1 => format!("UPDATE items SET n = n + 1 WHERE id = {}", (i * 7) % 500),
                    _ => format!("DELETE FROM items WHERE id = {}", 1000 + i - 2),
                };
                e.execute(&m.source_db, &sql)
                    .expect("the writer's statement");
                i += 1;
                std::thread::sleep(Duration::from_millis(3));
            }
            i
        });
        for (round, control) in controls.iter().enumerate() {
            let _fail = failpoint(e.sink_before_commit(), "3*off->return");
            let _stop_run = cutover_testkit::on_drop(|| control.stop());
            let (m, opts) = (&m, &opts);
            let run = s.spawn(move || {
                cutover_pipeline::run(&m.source, &m.target, opts, control, &Progress::default())
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            while !run.is_finished() {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: failpoint {} did not stop the sync in 60 s",
                    e.sink_before_commit()
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(
                run.join().expect("the run").is_err(),
                "round {round}: the failpoint stopped the run"
            );
        }
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        let statements = writer.join().expect("the writer");
        assert!(
            statements > 30,
            "the writer wrote during the sync ({statements})"
        );
        let control = Control::default();
        let end = m.source.source().unwrap().current_position().unwrap();
        control.drain_to(end);
        cutover_pipeline::run(&m.source, &m.target, &opts, &control, &Progress::default())
            .expect("the last run ends once drained");
        let delivered = e.deliveries(&m.target_db);
        let mut seen = std::collections::HashSet::new();
        for d in &delivered {
            assert!(seen.insert(d.clone()), "change {d:?} was delivered twice");
        }
        // Every statement changes one row: inserts of new ids, updates of ids 0..500 (never
        // deleted), deletes of the id inserted two statements before.
        assert_eq!(
            delivered.len() as i64,
            statements,
            "deliveries in the target for the writer's {statements} row changes"
        );
    });
    let t = table(&tables, "items");
    let want = e.rows(&m.source_db, "items", "id");
    assert_same_rows(&t, "items", &e.rows(&m.target_db, "items", "id"), &want);
}
