//! What the fixtures of targets without transactions (NATS, Kafka, Parquet) share: their state
//! in a SQLite file of the test's own, and their rows folded by key and ordered here.

use std::path::Path;

use cutover_connector::{OpenOptions, TargetFactory};
use std::collections::BTreeMap;

use cutover_model::{ColumnType, Row, TableSchema, Value};

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

/// Folds change events in Debezium's envelope (of one stream, or one partition) into `fold`,
/// by key: the events of `table` only; copied rows (`r`), inserts and updates set the row,
/// deletes remove it, a truncate empties `fold`. Values are decoded by `schema`'s column types.
pub(crate) fn fold_events<'a>(
    events: impl IntoIterator<Item = &'a serde_json::Value>,
    schema: &TableSchema,
    table: &str,
    fold: &mut BTreeMap<String, Row>,
) {
    for e in events {
        if e["source"]["table"].as_str() != Some(table) {
            continue;
        }
        let op = e["op"].as_str().unwrap_or_default();
        let image = if op == "d" { &e["before"] } else { &e["after"] };
        let row: Row = schema
            .columns
            .iter()
            .map(|c| decode(&c.ty, &image[&c.name]))
            .collect();
        let key = format!("{:?}", schema.key_of(&row));
        match op {
            "d" => {
                fold.remove(&key);
            }
            "t" => fold.clear(),
            _ => {
                fold.insert(key, row);
            }
        }
    }
}

/// A value of the suite's tables as the envelope carries it, typed by its column.
fn decode(ty: &ColumnType, v: &serde_json::Value) -> Value {
    match (ty, v) {
        (_, serde_json::Value::Null) => Value::Null,
        (ColumnType::Int { .. }, serde_json::Value::Number(n)) => {
            Value::Int(n.as_i64().expect("an integer"))
        }
        (_, serde_json::Value::String(s)) => Value::Text(s.clone()),
        (ty, v) => panic!("a {ty:?} column holds {v} in the stream"),
    }
}

/// The targets of a stateful fixture's tests: target name → the source database (whose column
/// types decode what the target holds) and the SQLite state file.
pub(crate) type Targets = std::sync::Mutex<
    std::collections::HashMap<String, (cutover_postgres::PgConnect, std::path::PathBuf)>,
>;

/// Records `version` in the state file of target `db` (see [`plant_state_version`]).
pub(crate) fn plant_target_version(
    targets: &Targets,
    db: &str,
    version: u32,
) -> Result<(), String> {
    let state = targets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(db)
        .map(|t| t.1.clone());
    let state = state.ok_or_else(|| format!("{db} is not a target of this suite"))?;
    plant_state_version(&state, version)
}
