//! The [`Source`] contract, sentence by sentence.

use cutover_connector::{KeyRange, PositionOrderExt, Source, SourceFactory};
use cutover_model::{Change, Row, TableSchema, Value};

use crate::fixture::{
    changes_until, insert_items, item, row_changes, table, with_rows, CaptureGuard, DDL,
};
use crate::Engine;

/// Every row of `t`, read chunk by chunk over `plan_chunks(t, rows_per_chunk)`; checks that
/// each chunk's positions are `low <= high` and that the ranges follow one another.
fn read_by_chunks<S: Source>(source: &mut S, t: &TableSchema, rows_per_chunk: u64) -> Vec<Row> {
    let ranges = source.plan_chunks(t, rows_per_chunk).expect("plan_chunks");
    assert!(!ranges.is_empty(), "a plan has at least one range");
    assert_eq!(ranges[0].start, None, "the first range starts unbounded");
    assert_eq!(
        ranges.last().and_then(|r| r.end.clone()),
        None,
        "the last range ends unbounded"
    );
    for w in ranges.windows(2) {
        assert_eq!(w[0].end, w[1].start, "ranges meet without gap or overlap");
    }
    let mut rows = Vec::new();
    for r in &ranges {
        let chunk = source.read_chunk(t, r).expect("read_chunk");
        assert!(
            source.positions().reached(&chunk.high, &chunk.low),
            "chunk {r:?}: low {} after high {}",
            chunk.low,
            chunk.high
        );
        rows.extend(chunk.rows);
    }
    rows
}

/// `tables` lists the schema: names, columns in order, NOT NULL, primary keys.
pub fn tables_lists_the_schema<E: Engine>(e: &E) {
    let m = e.migration("tables", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let mut names: Vec<&str> = tables.iter().map(|t| t.name.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["items", "pairs", "ticks"]);
    let items = table(&tables, "items");
    let cols: Vec<&str> = items.columns.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(cols, ["id", "name", "n"]);
    // (A key column's own NOT NULL is the engine's: SQLite lets a non-INTEGER key hold NULL.)
    let nullable: Vec<bool> = items.columns[1..].iter().map(|c| c.nullable).collect();
    assert_eq!(nullable, [false, true], "name is NOT NULL, n is not");
    assert_eq!(items.primary_key, [0]);
    let pairs = table(&tables, "pairs");
    let key: Vec<&str> = pairs.key_columns().map(|c| c.name.as_str()).collect();
    assert_eq!(key, ["a", "b"]);
}

/// `plan_chunks` returns ranges that together cover every key exactly once (read back chunk by
/// chunk and compared with the engine's own driver).
pub fn plan_chunks_ranges_cover_every_key_exactly_once<E: Engine>(e: &E) {
    let m = e.migration("plan", DDL);
    // Gaps, negative keys, and composite keys whose second part orders within the first.
    let ids = (-300..700).filter(|i| i % 7 != 3);
    e.execute(&m.source_db, &insert_items(ids)).unwrap();
    let pairs: Vec<String> = (0..600)
        .map(|i| format!("({}, 'k{:03}', {i})", i % 13, (i * 37) % 600))
        .collect();
    e.execute(
        &m.source_db,
        &format!("INSERT INTO pairs (a, b, v) VALUES {};", pairs.join(", ")),
    )
    .unwrap();
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    for (name, order) in [("items", "id"), ("pairs", "a, b")] {
        let t = table(&tables, name);
        let direct = e.rows(&m.source_db, name, order);
        for per_chunk in [1_000_000, 97, 10] {
            let keys: Vec<_> = read_by_chunks(&mut source, &t, per_chunk)
                .iter()
                .map(|r| t.key_of(r))
                .collect();
            let want: Vec<_> = direct.iter().map(|r| t.key_of(r)).collect();
            assert_eq!(
                keys.len(),
                want.len(),
                "{name}, {per_chunk} rows per chunk: every key once"
            );
            assert!(keys == want, "{name}, {per_chunk} rows per chunk: the keys");
        }
        let ranges = source.plan_chunks(&t, 10).unwrap();
        assert!(
            ranges.len() > 10,
            "{name}: 10 rows per chunk make many chunks"
        );
    }
}

/// `read_chunk` returns rows ordered by primary key (the engine's order), whole, with
/// `low <= high`.
pub fn read_chunk_rows_are_ordered_by_key_with_low_not_after_high<E: Engine>(e: &E) {
    let m = e.migration("order", DDL);
    // Inserted out of key order.
    e.execute(
        &m.source_db,
        &insert_items((0..500).map(|i| (i * 211) % 500 - 250)),
    )
    .unwrap();
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let t = table(&tables, "items");
    let rows = read_by_chunks(&mut source, &t, 64);
    assert!(rows == e.rows(&m.source_db, "items", "id"));
    // A range read alone holds exactly its keys.
    let range = KeyRange {
        start: Some(vec![Value::Int(-10)]),
        end: Some(vec![Value::Int(10)]),
    };
    let chunk = source.read_chunk(&t, &range).unwrap();
    let want: Vec<Row> = (-10..10).map(item).collect();
    assert!(chunk.rows == want, "[-10, 10): {:?}", chunk.rows);
}

/// `start_capture` is idempotent: calling it again keeps what was captured since the first call
/// and returns the position capture started at.
pub fn start_capture_is_idempotent_and_keeps_changes_captured_since_the_first_call<E: Engine>(
    e: &E,
) {
    let m = e.migration("capture", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let first = source.start_capture(&tables).unwrap();
    e.execute(&m.source_db, &insert_items([1])).unwrap();
    let again = source.start_capture(&tables).unwrap();
    assert_eq!(
        again, first,
        "the second call returns where capture started"
    );
    let mut other = m.source.source().unwrap();
    assert_eq!(
        other.start_capture(&tables).unwrap(),
        first,
        "from a new source too"
    );
    e.execute(&m.source_db, &insert_items([2])).unwrap();
    let txs = changes_until(&mut other, &tables, first, 100, 2);
    let inserted: Vec<Row> = row_changes(&txs)
        .into_iter()
        .map(|c| match c {
            Change::Insert { row, .. } => row,
            other => panic!("only inserts were made: {other:?}"),
        })
        .collect();
    assert!(inserted == [item(1), item(2)], "{inserted:?}");
}

/// `read_changes` returns committed changes with positions strictly after `after`, in commit
/// order.
pub fn read_changes_returns_committed_changes_strictly_after_after_in_commit_order<E: Engine>(
    e: &E,
) {
    let m = e.migration("after", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    // Commit order differs from key order.
    for id in [5, 3, 9, 1, 7] {
        e.execute(&m.source_db, &insert_items([id])).unwrap();
    }
    e.execute(&m.source_db, "UPDATE items SET name = 'x' WHERE id = 3")
        .unwrap();
    e.execute(&m.source_db, "DELETE FROM items WHERE id = 9")
        .unwrap();
    let txs = changes_until(&mut source, &tables, start.clone(), 100, 7);
    let order = source.positions();
    assert!(
        txs.iter().all(|t| order.after(&t.position, &start)),
        "after {start}: {txs:?}"
    );
    assert!(
        txs.windows(2)
            .all(|w| order.after(&w[1].position, &w[0].position)),
        "positions ascend strictly: {txs:?}"
    );
    let seen: Vec<(char, i64)> = row_changes(&txs)
        .iter()
        .map(|c| match c {
            Change::Insert { row, .. } => ('I', int(&row[0])),
            Change::Update { row, .. } => ('U', int(&row[0])),
            Change::Delete { old_key, .. } => ('D', int(&old_key[0])),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        seen,
        [
            ('I', 5),
            ('I', 3),
            ('I', 9),
            ('I', 1),
            ('I', 7),
            ('U', 3),
            ('D', 9)
        ]
    );
    // From the middle: exactly the transactions after it.
    let committed = with_rows(&txs);
    let middle = committed[2].0.clone();
    let rest = changes_until(&mut source, &tables, middle.clone(), 100, 4);
    assert!(rest.iter().all(|t| order.after(&t.position, &middle)));
    assert_eq!(with_rows(&rest), committed[3..].to_vec());
}

fn int(v: &Value) -> i64 {
    match v {
        Value::Int(i) => *i,
        other => panic!("not an integer: {other:?}"),
    }
}

/// `read_changes` returns whole transactions: a multi-statement transaction is never split
/// across calls, even with `max_changes` = 1.
pub fn read_changes_never_splits_a_transaction<E: Engine>(e: &E) {
    let m = e.migration("whole", DDL);
    e.execute(&m.source_db, &insert_items([1, 2])).unwrap();
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    e.execute(
        &m.source_db,
        &format!(
            "BEGIN; {} UPDATE items SET n = 0 WHERE id = 1; DELETE FROM items WHERE id = 2; \
             INSERT INTO pairs (a, b, v) VALUES (1, 'x', 1); COMMIT;",
            insert_items([10, 11])
        ),
    )
    .unwrap();
    let txs = changes_until(&mut source, &tables, start.clone(), 1, 5);
    let committed = with_rows(&txs);
    assert_eq!(
        committed.len(),
        1,
        "one source transaction, one transaction with all 5 changes: {committed:?}"
    );
    assert_eq!(committed[0].1.len(), 5);
}

/// The same `read_changes` call after a restart (a new source) returns the same changes
/// (at-least-once).
pub fn read_changes_returns_the_same_changes_after_reopening<E: Engine>(e: &E) {
    let m = e.migration("again", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    for i in 0..5 {
        e.execute(
            &m.source_db,
            &format!(
                "BEGIN; {} UPDATE items SET n = -1 WHERE id = {i}; COMMIT;",
                insert_items([i])
            ),
        )
        .unwrap();
    }
    let first = changes_until(&mut source, &tables, start.clone(), 3, 10);
    drop(source);
    let mut reopened = m.source.source().unwrap();
    let second = changes_until(&mut reopened, &tables, start.clone(), 3, 10);
    assert_eq!(with_rows(&second), with_rows(&first));
}

/// Rolled-back transactions never appear in the change stream.
pub fn rollbacks_never_appear<E: Engine>(e: &E) {
    let m = e.migration("rollback", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    e.execute(
        &m.source_db,
        &format!("BEGIN; {} ROLLBACK;", insert_items([999])),
    )
    .unwrap();
    e.execute(&m.source_db, &insert_items([1])).unwrap();
    e.execute(
        &m.source_db,
        &format!(
            "BEGIN; {} UPDATE items SET name = 'gone' WHERE id = 1; ROLLBACK;",
            insert_items([998])
        ),
    )
    .unwrap();
    e.execute(&m.source_db, &insert_items([2])).unwrap();
    let txs = changes_until(&mut source, &tables, start.clone(), 100, 2);
    let changes = row_changes(&txs);
    assert_eq!(changes.len(), 2, "only the committed inserts: {changes:?}");
    assert!(
        matches!(&changes[..], [Change::Insert { row: a, .. }, Change::Insert { row: b, .. }] if *a == item(1) && *b == item(2))
    );
}

/// After `release(upto)` and a restart, every change after `upto` still comes.
pub fn release_then_restart_loses_nothing_not_released<E: Engine>(e: &E) {
    let m = e.migration("release", DDL);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    for i in 0..6 {
        e.execute(&m.source_db, &insert_items([i])).unwrap();
    }
    let txs = with_rows(&changes_until(&mut source, &tables, start.clone(), 100, 6));
    assert_eq!(txs.len(), 6);
    let released = txs[2].0.clone();
    source.release(released.clone()).unwrap();
    drop(source);
    for i in 6..8 {
        e.execute(&m.source_db, &insert_items([i])).unwrap();
    }
    let mut reopened = m.source.source().unwrap();
    let rest = with_rows(&changes_until(&mut reopened, &tables, released, 100, 5));
    assert_eq!(
        rest[..3],
        txs[3..],
        "the unreleased transactions, as before"
    );
    let later: Vec<Change> = rest[3..].iter().flat_map(|(_, c)| c.clone()).collect();
    assert!(
        matches!(&later[..], [Change::Insert { row: a, .. }, Change::Insert { row: b, .. }] if *a == item(6) && *b == item(7)),
        "{later:?}"
    );
}

/// A table holding every type the engine supports: values read by chunk and by change capture
/// equal the values the engine's own driver reads.
pub fn types_round_trip_through_chunks_and_change_capture<E: Engine>(e: &E) {
    let types = e.type_table();
    let m = e.migration("types", &types.ddl);
    let mut source = m.source.source().unwrap();
    let tables = source.tables().unwrap();
    let t = table(&tables, "types");
    let _capture = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).unwrap();
    e.execute(&m.source_db, &types.insert).unwrap();
    let direct = e.rows(&m.source_db, "types", "id");
    assert!(direct.len() > 1, "the type table has rows");
    let chunked = read_by_chunks(&mut source, &t, 1_000_000);
    assert_same_rows(&t, "read by chunk", &chunked, &direct);
    let txs = changes_until(&mut source, &tables, start.clone(), 10_000, direct.len());
    let mut captured: Vec<Row> = row_changes(&txs)
        .into_iter()
        .map(|c| match c {
            Change::Insert { row, .. } => row,
            other => panic!("only inserts were made: {other:?}"),
        })
        .collect();
    let id = |r: &Row| int(&r[0]);
    captured.sort_by_key(id);
    assert_same_rows(&t, "read by change capture", &captured, &direct);
}

/// Rows equal value for value (floats bitwise; an engine type cutover keeps as raw text by its
/// text alone, the type's name being cutover's spelling), naming column and key.
pub fn assert_same_rows(t: &TableSchema, what: &str, got: &[Row], want: &[Row]) {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len(), "{what}: width of row {:?}", t.key_of(w));
        for ((a, b), c) in g.iter().zip(w).zip(&t.columns) {
            let same = match (a, b) {
                (Value::Raw { text: x, .. }, Value::Raw { text: y, .. }) => x == y,
                _ => a == b,
            };
            assert!(
                same,
                "{what}: column {} ({}) of row {:?}: cutover read {a:?}, the driver {b:?}",
                c.name,
                c.declared_type,
                t.key_of(w)
            );
        }
    }
}
