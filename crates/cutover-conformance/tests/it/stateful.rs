//! What the fixtures of targets without transactions (NATS, Parquet) share: their state in a
//! SQLite file of the test's own, and their rows folded by key and ordered here.

use std::path::Path;

use cutover_connector::{OpenOptions, TargetFactory};
use cutover_model::{Row, TableSchema, Value};

/// Gives `target` a SQLite state store at `state`, as `--state` would.
pub(crate) fn attach_sqlite_state(target: &mut dyn TargetFactory, state: &Path) {
    let open = cutover_sqlite::engine().target.expect("a target");
    let store = open(state.to_str().unwrap(), &OpenOptions::default()).unwrap();
    target.attach_state(store).unwrap();
}

/// Records `version` as the state store's version in the SQLite file `state`, through rusqlite.
pub(crate) fn plant_state_version(state: &Path, version: u32) -> Result<(), String> {
    rusqlite::Connection::open(state)
        .and_then(|c| {
            c.execute_batch(&format!(
                "INSERT OR REPLACE INTO _cutover_state (key, value) VALUES ('store_version', '{version}')"
            ))
        })
        .map_err(|e| e.to_string())
}

/// `rows` of `schema` ordered by the columns of `order_by` (comma-separated): integers by value,
/// anything else by its debug text (the suite's tables hold integers and text).
pub(crate) fn sort_rows(rows: &mut [Row], schema: &TableSchema, order_by: &str) {
    let by: Vec<usize> = order_by
        .split(',')
        .map(|c| schema.column_index(c.trim()).expect("an order column"))
        .collect();
    rows.sort_by(|a, b| {
        for &i in &by {
            let o = match (&a[i], &b[i]) {
                (Value::Int(x), Value::Int(y)) => x.cmp(y),
                (x, y) => format!("{x:?}").cmp(&format!("{y:?}")),
            };
            if o.is_ne() {
                return o;
            }
        }
        std::cmp::Ordering::Equal
    });
}
