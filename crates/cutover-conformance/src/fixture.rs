//! What the tests share: the tables every engine creates from the same portable DDL, and
//! helpers that read the change stream until what was written arrived.

use std::time::{Duration, Instant};

use cutover_connector::{PositionOrderExt, Source, SourceFactory};
use cutover_model::{Change, Position, Row, TableSchema, Transaction, Value};

/// Tables of the suite, in SQL every engine takes. `items` has a single-column key and a NOT
/// NULL column (what checkpoint atomicity makes a batch fail on); `pairs` a composite key;
/// `ticks` takes writes whose only use is to move the change stream (positions for the sink
/// tests).
pub const DDL: &str = "CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, n bigint);
CREATE TABLE pairs (a bigint, b text, v bigint, PRIMARY KEY (a, b));
CREATE TABLE ticks (id bigint PRIMARY KEY);";

/// `INSERT INTO items` of rows `ids`, named `name-<id>`, `n` = id × 10.
pub fn insert_items(ids: impl IntoIterator<Item = i64>) -> String {
    let values: Vec<String> = ids
        .into_iter()
        .map(|i| format!("({i}, 'name-{i}', {})", i * 10))
        .collect();
    format!(
        "INSERT INTO items (id, name, n) VALUES {};",
        values.join(", ")
    )
}

/// The row [`insert_items`] writes for `id`.
pub fn item(id: i64) -> Row {
    vec![
        Value::Int(id),
        Value::Text(format!("name-{id}")),
        Value::Int(id * 10),
    ]
}

/// The table called `name` among `tables` (whatever schema the engine puts it in).
pub fn table(tables: &[TableSchema], name: &str) -> TableSchema {
    tables
        .iter()
        .find(|t| t.name.name == name)
        .unwrap_or_else(|| panic!("table {name} is not among {tables:?}"))
        .clone()
}

/// The row changes of `txs` (not the shapes a stream may describe tables with).
pub fn row_changes(txs: &[Transaction]) -> Vec<Change> {
    txs.iter()
        .flat_map(|t| t.changes.iter())
        .filter(|c| !matches!(c, Change::Schema { .. }))
        .cloned()
        .collect()
}

/// The transactions that hold row changes, as (position, row changes).
pub fn with_rows(txs: &[Transaction]) -> Vec<(Position, Vec<Change>)> {
    txs.iter()
        .map(|t| (t.position.clone(), row_changes(std::slice::from_ref(t))))
        .filter(|(_, c)| !c.is_empty())
        .collect()
}

/// Calls `read_changes` from `after` on (each call after the last transaction returned) until
/// at least `rows` row changes arrived; then one more call must bring none. Panics after 60 s.
pub fn changes_until<S: Source>(
    source: &mut S,
    tables: &[TableSchema],
    after: Position,
    max_changes: usize,
    rows: usize,
) -> Vec<Transaction> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = after;
    let mut out: Vec<Transaction> = Vec::new();
    loop {
        let batch = source
            .read_changes(tables, after.clone(), max_changes)
            .unwrap_or_else(|e| panic!("read_changes after {after}: {e}"));
        if let Some(last) = batch.last() {
            after = last.position.clone();
        }
        let done = row_changes(&out).len() >= rows;
        if done && row_changes(&batch).is_empty() {
            return out;
        }
        let empty = batch.is_empty();
        out.extend(batch);
        assert!(
            Instant::now() < deadline,
            "waited 60 s for {rows} row changes after {after}, got {}: {out:?}",
            row_changes(&out).len()
        );
        if empty || done {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes change capture from the source when dropped, also when the test panics (a
/// replication slot left behind would hold the server's WAL and one of its few slots).
pub struct CaptureGuard<C: SourceFactory> {
    connect: C,
    tables: Vec<TableSchema>,
}

impl<C: SourceFactory> CaptureGuard<C> {
    pub fn new(connect: &C, tables: &[TableSchema]) -> CaptureGuard<C>
    where
        C: Clone,
    {
        CaptureGuard {
            connect: connect.clone(),
            tables: tables.to_vec(),
        }
    }
}

impl<C: SourceFactory> Drop for CaptureGuard<C> {
    fn drop(&mut self) {
        if let Ok(mut source) = self.connect.source() {
            if let Err(e) = source.stop_capture(&self.tables) {
                eprintln!("removing change capture after the test: {e}");
            }
        }
    }
}

/// Positions of `n` transactions committed one after the other on the source (writes to
/// `ticks`), ascending: checkpoints for the sink tests, in the engine's own kind.
pub fn positions<E: crate::TargetEngine>(
    engine: &E,
    m: &crate::Migration<E::Source, E::Target>,
    n: usize,
) -> (Vec<Position>, CaptureGuard<E::Source>) {
    let mut source = m.source.source().expect("opening the source");
    let tables = source.tables().expect("listing the source's tables");
    let guard = CaptureGuard::new(&m.source, &tables);
    let start = source.start_capture(&tables).expect("starting capture");
    for i in 0..n {
        engine
            .execute(
                &m.source_db,
                &format!("INSERT INTO ticks (id) VALUES ({i})"),
            )
            .expect("writing a tick");
    }
    let txs = changes_until(&mut source, &tables, start.clone(), 1000, n);
    let positions: Vec<Position> = with_rows(&txs).into_iter().map(|(p, _)| p).collect();
    assert_eq!(positions.len(), n, "one transaction per tick: {txs:?}");
    let order = source.positions();
    assert!(positions.windows(2).all(|w| order.after(&w[1], &w[0])));
    (positions, guard)
}

/// The key ranges that `bounds` (ascending) cut the key space into: unbounded below the first
/// and above the last.
pub fn ranges_between(bounds: &[cutover_model::Key]) -> Vec<cutover_connector::KeyRange> {
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut start = None;
    for b in bounds {
        ranges.push(cutover_connector::KeyRange {
            start: start.replace(b.clone()),
            end: Some(b.clone()),
        });
    }
    ranges.push(cutover_connector::KeyRange { start, end: None });
    ranges
}
