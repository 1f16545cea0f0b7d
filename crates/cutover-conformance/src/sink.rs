//! The [`Sink`] contract, sentence by sentence.

use cutover_connector::{ApplyOp, PlannedChunk, Sink, Source, SourceFactory, TargetFactory};
use cutover_model::{Change, Position, Row, TableName, TableSchema, Value};

use crate::fixture::{
    changes_until, insert_items, item, positions, ranges_between, table, CaptureGuard, DDL,
};
use crate::source::assert_same_rows;
use crate::{Migration, TargetEngine};

/// The source's tables, and a sink prepared with them.
pub(crate) fn prepared<S: SourceFactory, T: TargetFactory>(
    m: &Migration<S, T>,
) -> (Vec<TableSchema>, Box<dyn Sink + Send>) {
    let tables = m.source.source().unwrap().tables().unwrap();
    let mut sink = m.target.sink().unwrap();
    sink.prepare(&tables).unwrap();
    (tables, sink)
}

/// Applies `ops` as the pipeline hands them over: to a sink that wants them, each change after
/// its [`ApplyOp::Origin`] (here: at `checkpoint`, numbered in the batch's order, so the same
/// batch fed again names its changes the same way).
pub(crate) fn feed(
    sink: &mut (dyn Sink + Send),
    ops: &[ApplyOp],
    checkpoint: Position,
) -> Result<(), cutover_connector::ConnectorError> {
    if !sink.wants_origins() {
        return sink.apply(ops, checkpoint);
    }
    let mut fed = Vec::with_capacity(ops.len() * 2);
    let mut index = 0u32;
    for op in ops {
        if matches!(op, ApplyOp::Change(_)) {
            fed.push(ApplyOp::Origin {
                position: checkpoint.clone(),
                index,
                committed_at: None,
                tag: None,
            });
            index += 1;
        }
        fed.push(op.clone());
    }
    sink.apply(&fed, checkpoint)
}

pub(crate) fn upsert(t: &TableName, row: Row) -> ApplyOp {
    ApplyOp::Upsert {
        table: t.clone(),
        row,
    }
}

/// A captured update of the row keyed `old_key` to `row` (all columns sent).
pub(crate) fn update(t: &TableName, old_key: i64, row: Row) -> ApplyOp {
    ApplyOp::Change(Change::Update {
        table: t.clone(),
        old_key: vec![Value::Int(old_key)],
        before: None,
        row,
        unchanged: Vec::new(),
    })
}

/// A captured delete of the row keyed `old_key`.
pub(crate) fn delete(t: &TableName, old_key: i64) -> ApplyOp {
    ApplyOp::Change(Change::Delete {
        table: t.clone(),
        old_key: vec![Value::Int(old_key)],
        before: None,
    })
}

pub(crate) fn named(id: i64, name: &str) -> Row {
    vec![Value::Int(id), Value::Text(name.into()), Value::Int(id)]
}

/// `prepare` creates the tables (columns, NOT NULL, primary key), empty, and can run again.
pub fn prepare_creates_tables_from_the_schema<E: TargetEngine>(e: &E) {
    let m = e.migration("prepare", DDL);
    let (tables, mut sink) = prepared(&m);
    for t in &tables {
        let names: Vec<String> = sink
            .columns(t)
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let want: Vec<String> = t.columns.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, want, "columns of {}", t.name);
    }
    assert!(e.rows(&m.target_db, "items", "id").is_empty());
    assert!(e.rows(&m.target_db, "pairs", "a, b").is_empty());
    e.check_prepared(&m.target_db);
    drop(sink);
    m.target.sink().unwrap().prepare(&tables).unwrap();
}

/// `apply` commits all of `ops` and the checkpoint in one transaction, or nothing: a batch
/// that fails in the middle (a row breaking NOT NULL) moves neither rows nor checkpoint.
pub fn apply_commits_all_or_nothing_with_its_checkpoint<E: TargetEngine>(e: &E) {
    let m = e.migration("atomic", DDL);
    let (p, _capture) = positions(e, &m, 2);
    let (tables, mut sink) = prepared(&m);
    let items = table(&tables, "items").name;
    feed(
        &mut *sink,
        &[upsert(&items, item(1)), upsert(&items, item(2))],
        p[0].clone(),
    )
    .unwrap();
    let before = e.rows(&m.target_db, "items", "id");
    let bad = vec![Value::Int(4), Value::Null, Value::Int(4)];
    let batch = [
        upsert(&items, item(3)),
        delete(&items, 1),
        upsert(&items, named(2, "changed")),
        upsert(&items, bad),
        upsert(&items, item(5)),
    ];
    assert!(
        feed(&mut *sink, &batch, p[1].clone()).is_err(),
        "a NULL in a NOT NULL column fails the batch"
    );
    assert_eq!(e.rows(&m.target_db, "items", "id"), before, "no row moved");
    assert_eq!(
        sink.checkpoint().unwrap(),
        Some(p[0].clone()),
        "the checkpoint stayed"
    );
    drop(sink);
    let mut reopened = m.target.sink().unwrap();
    assert_eq!(reopened.checkpoint().unwrap(), Some(p[0].clone()));
    // The sink goes on after a failed batch.
    reopened.prepare(&tables).unwrap();
    feed(&mut *reopened, &batch[..3], p[1].clone()).expect("the batch without its bad row");
    assert_eq!(reopened.checkpoint().unwrap(), Some(p[1].clone()));
    assert_eq!(
        e.rows(&m.target_db, "items", "id"),
        vec![named(2, "changed"), item(3)]
    );
}

/// Replaying a batch leaves the target as applying it once: upserts overwrite, inserts of an
/// existing key overwrite, deletes of a missing key do nothing.
pub fn replaying_a_batch_leaves_the_target_as_once<E: TargetEngine>(e: &E) {
    let m = e.migration("replay", DDL);
    let (p, _capture) = positions(e, &m, 2);
    let (tables, mut sink) = prepared(&m);
    let items = table(&tables, "items").name;
    let pairs = table(&tables, "pairs").name;
    feed(
        &mut *sink,
        &[upsert(&items, item(1)), upsert(&items, item(2))],
        p[0].clone(),
    )
    .unwrap();
    let insert = |row: Row| {
        ApplyOp::Change(Change::Insert {
            table: items.clone(),
            row,
        })
    };
    let batch = [
        // Insert of an existing key: overwrites.
        insert(named(1, "inserted again")),
        // Upsert of an existing and of a new key.
        upsert(&items, named(2, "upserted")),
        upsert(&items, item(3)),
        // Update that moves a key, and one of a missing row.
        update(&items, 3, named(4, "moved")),
        // Delete of a missing key: nothing.
        delete(&items, 77),
        upsert(
            &pairs,
            vec![Value::Int(1), Value::Text("x".into()), Value::Int(1)],
        ),
    ];
    feed(&mut *sink, &batch, p[1].clone()).unwrap();
    let once = (
        e.rows(&m.target_db, "items", "id"),
        e.rows(&m.target_db, "pairs", "a, b"),
    );
    assert_eq!(
        once.0,
        vec![
            named(1, "inserted again"),
            named(2, "upserted"),
            named(4, "moved")
        ]
    );
    feed(&mut *sink, &batch, p[1].clone()).expect("the same batch again");
    drop(sink);
    let (_, mut again) = prepared(&m);
    feed(&mut *again, &batch, p[1].clone()).expect("again, after reopening");
    let twice = (
        e.rows(&m.target_db, "items", "id"),
        e.rows(&m.target_db, "pairs", "a, b"),
    );
    assert_eq!(twice, once);
    assert_eq!(again.checkpoint().unwrap(), Some(p[1].clone()));
}

/// `checkpoint` returns the position of the last committed `apply`, surviving restarts.
pub fn checkpoint_survives_reopening<E: TargetEngine>(e: &E) {
    let m = e.migration("checkpoint", DDL);
    let (p, _capture) = positions(e, &m, 3);
    let (tables, mut sink) = prepared(&m);
    assert_eq!(sink.checkpoint().unwrap(), None, "nothing applied yet");
    let items = table(&tables, "items").name;
    feed(&mut *sink, &[upsert(&items, item(1))], p[0].clone()).unwrap();
    feed(&mut *sink, &[], p[1].clone()).unwrap();
    assert_eq!(sink.checkpoint().unwrap(), Some(p[1].clone()));
    drop(sink);
    let mut reopened = m.target.sink().unwrap();
    assert_eq!(
        reopened.checkpoint().unwrap(),
        Some(p[1].clone()),
        "before prepare"
    );
    reopened.prepare(&tables).unwrap();
    assert_eq!(
        reopened.checkpoint().unwrap(),
        Some(p[1].clone()),
        "after prepare"
    );
}

/// `chunk_plan` records the plan once; later calls return the stored plan unchanged, with the
/// same typed keys (an integer key comes back as `Value::Int`).
pub fn chunk_plan_returns_the_stored_plan_unchanged<E: TargetEngine>(e: &E) {
    let m = e.migration("plan", DDL);
    let (tables, mut sink) = prepared(&m);
    let cases = [
        (
            table(&tables, "items"),
            vec![
                vec![Value::Int(-5)],
                vec![Value::Int(100)],
                vec![Value::Int(1 << 40)],
            ],
        ),
        (
            table(&tables, "pairs"),
            vec![
                vec![Value::Int(1), Value::Text("b'\"\\ é".into())],
                vec![Value::Int(2), Value::Text(String::new())],
            ],
        ),
    ];
    let mut first = Vec::new();
    for (t, bounds) in &cases {
        let ranges = ranges_between(bounds);
        let want: Vec<PlannedChunk> = ranges
            .iter()
            .enumerate()
            .map(|(i, r)| PlannedChunk {
                index: i as u32,
                range: r.clone(),
                done: false,
            })
            .collect();
        let planned = sink.chunk_plan(t, &mut || Ok(ranges.clone())).unwrap();
        assert_eq!(
            planned, want,
            "{}: the plan as given, typed keys and all",
            t.name
        );
        let again = sink
            .chunk_plan(t, &mut || panic!("planned again although a plan is stored"))
            .unwrap();
        assert_eq!(again, planned, "{}: the second call", t.name);
        first.push(planned);
    }
    drop(sink);
    let (_, mut reopened) = prepared(&m);
    for ((t, _), planned) in cases.iter().zip(&first) {
        let again = reopened
            .chunk_plan(t, &mut || panic!("planned again although a plan is stored"))
            .unwrap();
        assert_eq!(&again, planned, "{}: after reopening", t.name);
    }
}

/// Changes applied in commit order, in batches of any size, give the source's final state
/// (compared with the engine's own driver on both sides).
pub fn changes_applied_in_commit_order_give_the_source_state<E: TargetEngine>(e: &E) {
    let m = e.migration("order", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    let script = [
        insert_items(0..20),
        "UPDATE items SET name = 'a' WHERE id < 10".into(),
        "DELETE FROM items WHERE id % 3 = 0".into(),
        format!(
            "BEGIN; {} UPDATE items SET n = n + 1 WHERE id = 3; COMMIT;",
            insert_items([3])
        ),
        "UPDATE items SET id = id + 100 WHERE id BETWEEN 4 AND 8".into(),
        "UPDATE items SET name = 'b' WHERE id = 104".into(),
        "UPDATE items SET name = 'c' WHERE id = 104".into(),
        "DELETE FROM items WHERE id = 105".into(),
        format!(
            "BEGIN; {} DELETE FROM items WHERE id = 105; {} COMMIT;",
            insert_items([105]),
            insert_items([105])
        ),
        "INSERT INTO pairs (a, b, v) VALUES (1, 'x', 1), (1, 'y', 2), (2, 'x', 3)".into(),
        "UPDATE pairs SET b = 'z' WHERE a = 1 AND b = 'x'".into(),
        "DELETE FROM pairs WHERE a = 2".into(),
    ];
    for sql in &script {
        e.execute(&m.source_db, sql).unwrap();
    }
    // Row changes: 20 + 10 + 7 + 2 + 4 + 1 + 1 + 1 + 3 + 3 + 1 + 1.
    let txs = changes_until(&mut source, &tables, start.clone(), 10_000, 54);
    let mut sink = m.target.sink().unwrap();
    sink.prepare(&tables).unwrap();
    // Batches of 1, 2, 3, … transactions.
    let mut rest = &txs[..];
    let mut n = 1;
    while !rest.is_empty() {
        let (batch, after) = rest.split_at(n.min(rest.len()));
        let ops: Vec<ApplyOp> = batch
            .iter()
            .flat_map(|t| t.changes.iter().cloned().map(ApplyOp::Change))
            .filter(|o| !matches!(o, ApplyOp::Change(Change::Schema { .. })))
            .collect();
        let last = batch
            .last()
            .map(|t| t.position.clone())
            .unwrap_or_else(|| start.clone());
        feed(&mut *sink, &ops, last).unwrap();
        rest = after;
        n += 1;
    }
    for (name, order) in [("items", "id"), ("pairs", "a, b")] {
        let t = table(&tables, name);
        let want = e.rows(&m.source_db, name, order);
        assert!(!want.is_empty());
        assert_same_rows(&t, name, &e.rows(&m.target_db, name, order), &want);
    }
}

/// `Watch` operations and `record_recent` are accepted (a sink without a control store may
/// ignore them), and change no rows.
pub fn watch_and_record_recent_do_not_error<E: TargetEngine>(e: &E) {
    let m = e.migration("watch", DDL);
    let (p, _capture) = positions(e, &m, 1);
    let (tables, mut sink) = prepared(&m);
    let items = table(&tables, "items").name;
    let pairs = table(&tables, "pairs").name;
    feed(
        &mut *sink,
        &[
            upsert(&items, item(1)),
            ApplyOp::Watch {
                table: items.clone(),
                keys: vec![vec![Value::Int(1)], vec![Value::Int(2)]],
            },
            ApplyOp::Watch {
                table: pairs.clone(),
                keys: vec![vec![Value::Int(1), Value::Text("x".into())]],
            },
        ],
        p[0].clone(),
    )
    .unwrap();
    sink.record_recent(&[
        (items.clone(), vec![Value::Int(1)]),
        (pairs, vec![Value::Int(1), Value::Text("x".into())]),
    ])
    .unwrap();
    sink.record_recent(&[]).unwrap();
    assert_eq!(e.rows(&m.target_db, "items", "id"), vec![item(1)]);
}
